//! The Debian package as an operator gets it: `dpkg-deb -x` into a scratch
//! root, `systemd-analyze verify` on its units, and each unit's `ExecStart`
//! run as an unprivileged user holding only the unit's capabilities
//! (`setpriv`), the way systemd would start it. Root (to create the user and
//! hand it the capabilities); loopback only; the user, the processes and
//! the scratch root are removed on drop, even on panic.
//!
//! The package comes from `XDR_SHIP_DEB`: `cargo xtask test` packages the
//! binary under test with the same code as `cargo xtask dist` (a few
//! seconds, no second build).
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_tests::{require_root, run_bounded, ChildGuard, TempDir};

/// The units the package ships, as `cargo xtask dist` names them.
const UNITS: [&str; 2] = ["xdr-ship-recv.service", "xdr-ship-source.service"];

/// How long a service has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The package under test.
fn deb() -> PathBuf {
    let deb = std::env::var_os("XDR_SHIP_DEB").map(PathBuf::from).expect(
        "XDR_SHIP_DEB is not set: run this test with `cargo xtask test` \
         (or `cargo xtask dist` and point XDR_SHIP_DEB at the .deb)",
    );
    assert!(deb.is_file(), "{} does not exist", deb.display());
    deb
}

/// The package unpacked (`dpkg-deb -x`) into a fresh scratch root.
fn unpack(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    let (ok, _, err) = run_bounded(
        Command::new("dpkg-deb").arg("-x").arg(deb()).arg(&root.0),
        Duration::from_secs(60),
    );
    assert!(ok, "dpkg-deb -x failed: {err}");
    root
}

/// A system user of its own for one test, removed on drop.
struct ServiceUser {
    name: String,
}

impl ServiceUser {
    fn new() -> Self {
        let name = format!("xdrtest{}", std::process::id());
        let _ = quiet("userdel", &name);
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {name} failed");
        Self { name }
    }

    /// `argv` as this user, with `caps` (ambient, inheritable, bounding)
    /// and no others, and no way to gain more: what the unit's `User=`,
    /// `AmbientCapabilities=`, `CapabilityBoundingSet=` and
    /// `NoNewPrivileges=` give the service.
    fn command(&self, caps: &[String], argv: &[String]) -> Command {
        as_service(&self.name, caps, argv)
    }

    /// Gives `dir` (created if missing) to this user, as systemd's
    /// `StateDirectory=` does.
    fn own(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("create the state directory");
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.name))
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {} failed", dir.display());
    }
}

impl Drop for ServiceUser {
    fn drop(&mut self) {
        // userdel takes the user's own group with it; groupdel is for a
        // useradd that made the group and failed after.
        let _ = quiet("userdel", &self.name);
        let _ = quiet("groupdel", &self.name);
    }
}

/// `argv` as user `name` with `caps` only (see [`ServiceUser::command`]).
fn as_service(name: &str, caps: &[String], argv: &[String]) -> Command {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={name}"))
        .arg(format!("--regid={name}"))
        .arg("--init-groups")
        .arg(format!("--inh-caps=-all{set}"))
        .arg(format!("--ambient-caps=-all{set}"))
        .arg(format!("--bounding-set=-all{set}"))
        .arg("--no-new-privs")
        .arg("--")
        .args(argv);
    cmd
}

/// `tool name`, its output discarded (a cleanup that may find nothing).
fn quiet(tool: &str, name: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new(tool)
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The settings of a unit file the test runs by.
struct Unit {
    exec_start: Vec<String>,
    user: String,
    capabilities: Vec<String>,
    bounding: Vec<String>,
}

impl Unit {
    fn read(root: &Path, name: &str) -> Self {
        let path = root.join("usr/lib/systemd/system").join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value = |key: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{name} has no {key}="))
                .trim()
                .to_owned()
        };
        // `CAP_BPF CAP_PERFMON` → setpriv's `bpf`, `perfmon`.
        let caps = |key: &str| -> Vec<String> {
            value(key)
                .split_whitespace()
                .map(|c| c.trim_start_matches("CAP_").to_lowercase())
                .collect()
        };
        Self {
            exec_start: value("ExecStart")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            user: value("User"),
            capabilities: caps("AmbientCapabilities"),
            bounding: caps("CapabilityBoundingSet"),
        }
    }

    /// `ExecStart` with the package's absolute paths moved into `root`.
    fn exec_start_in(&self, root: &Path) -> Vec<String> {
        self.exec_start.iter().map(|a| in_root(root, a)).collect()
    }
}

/// `/etc/xdr-ship/…`, `/usr/bin/…`, `/var/lib/xdr-ship/…` inside `root`.
fn in_root(root: &Path, arg: &str) -> String {
    if ["/usr/bin/", "/etc/xdr-ship", "/var/lib/xdr-ship"]
        .iter()
        .any(|p| arg.starts_with(p))
    {
        root.join(&arg[1..]).to_string_lossy().into_owned()
    } else {
        arg.to_owned()
    }
}

/// Replaces `from` by `to` in `text`, which must hold it.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected `{from}` in:\n{text}");
    text.replace(from, to)
}

/// A loopback address no one listens on now.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
}

/// Waits until `addr` accepts a connection while `child` runs.
fn wait_listening(child: &mut ChildGuard, addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.0.try_wait().expect("poll the service") {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("{what} exited ({status}) before listening on {addr}:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(mut cmd: Command) -> ChildGuard {
    ChildGuard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the service's ExecStart"),
    )
}

#[test]
fn the_package_holds_the_binary_units_configs_completions_and_man_pages() {
    require_root();
    let root = unpack("dist-files");
    for path in [
        "usr/bin/xdr-ship",
        "usr/lib/systemd/system/xdr-ship-recv.service",
        "usr/lib/systemd/system/xdr-ship-source.service",
        "etc/xdr-ship/recv.toml",
        "etc/xdr-ship/source.toml",
        "usr/share/bash-completion/completions/xdr-ship",
        "usr/share/zsh/vendor-completions/_xdr-ship",
        "usr/share/fish/vendor_completions.d/xdr-ship.fish",
        "usr/share/man/man1/xdr-ship.1.gz",
        "usr/share/man/man1/xdr-ship-recv.1.gz",
        "usr/share/man/man1/xdr-ship-observe.1.gz",
    ] {
        assert!(root.0.join(path).is_file(), "the package lacks /{path}");
    }
    // The completions are the real command line's: they know its flags.
    let bash = std::fs::read_to_string(
        root.0
            .join("usr/share/bash-completion/completions/xdr-ship"),
    )
    .expect("read the bash completions");
    assert!(
        bash.contains("--durability"),
        "bash completions lack recv's flags"
    );
    // The configs are conffiles: an upgrade keeps the operator's edits.
    let (ok, conffiles, err) = run_bounded(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb())
            .arg("conffiles"),
        Duration::from_secs(30),
    );
    assert!(ok, "dpkg-deb --info failed: {err}");
    for c in ["/etc/xdr-ship/recv.toml", "/etc/xdr-ship/source.toml"] {
        assert!(
            conffiles.lines().any(|l| l == c),
            "{c} is not a conffile:\n{conffiles}"
        );
    }
    // The packaged binary carries its kernel programs.
    let (ok, version, err) = run_bounded(
        Command::new(root.0.join("usr/bin/xdr-ship")).arg("--version"),
        Duration::from_secs(30),
    );
    assert!(ok, "xdr-ship --version failed: {err}");
    assert!(version.contains("kernel programs: embedded"), "{version}");
}

#[test]
fn systemd_analyze_verify_accepts_both_units_unprivileged_and_hardened() {
    require_root();
    let root = unpack("dist-verify");
    for name in UNITS {
        let unit = Unit::read(&root.0, name);
        assert_eq!(unit.user, "xdr-ship", "{name} must not run as root");
        assert_eq!(unit.capabilities, ["bpf", "perfmon", "net_admin"], "{name}");
        assert_eq!(
            unit.bounding, unit.capabilities,
            "{name}: no capability beyond these"
        );
        let text = std::fs::read_to_string(root.0.join("usr/lib/systemd/system").join(name))
            .expect("read the unit");
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/xdr-ship",
            "StateDirectory=xdr-ship",
        ] {
            assert!(text.lines().any(|l| l == line), "{name} lacks {line}");
        }
    }
    // `--root`: the units' ExecStart binary is looked up in the scratch
    // root, so the targets they depend on must be there too (the host's,
    // none of them overwriting the package's); `man` finds the package's
    // pages for the units' `Documentation=`.
    let units_dir = root.0.join("usr/lib/systemd/system");
    let (ok, _, err) = run_bounded(
        Command::new("cp")
            .arg("-an")
            .arg("/usr/lib/systemd/system/.")
            .arg(&units_dir),
        Duration::from_secs(30),
    );
    assert!(
        ok,
        "copying the host's units into the scratch root failed: {err}"
    );
    let (ok, out, err) = run_bounded(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.0.display()))
            .args(UNITS.map(|u| format!("/usr/lib/systemd/system/{u}")))
            .env("MANPATH", root.0.join("usr/share/man")),
        Duration::from_secs(60),
    );
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
    assert!(
        !err.contains("xdr-ship"),
        "systemd-analyze verify warned about the units:\n{err}"
    );
}

/// The recv unit's `ExecStart`, in `root`, listening on `listen`, with the
/// package's own `recv.toml` (its address and store moved into the test).
fn recv_exec_start(root: &Path, listen: SocketAddr) -> Vec<String> {
    let unit = Unit::read(root, "xdr-ship-recv.service");
    let config = root.join("etc/xdr-ship/recv.toml");
    let shipped = std::fs::read_to_string(&config).expect("read recv.toml");
    let store = root.join("var/lib/xdr-ship/store");
    let ours = replaced(
        &replaced(&shipped, "127.0.0.1:3000", &listen.to_string()),
        "/var/lib/xdr-ship/store",
        &store.to_string_lossy(),
    );
    std::fs::write(&config, ours).expect("write recv.toml");
    let argv = unit.exec_start_in(root);
    assert!(
        argv.iter().any(|a| a == "--config"),
        "the recv unit passes --config: {argv:?}"
    );
    argv
}

/// The source unit's `ExecStart`, in `root`, its ingest port on `listen`,
/// with the package's own `source.toml` pointing at `destination`.
fn source_exec_start(root: &Path, listen: SocketAddr, destination: SocketAddr) -> Vec<String> {
    let unit = Unit::read(root, "xdr-ship-source.service");
    let config = root.join("etc/xdr-ship/source.toml");
    let shipped = std::fs::read_to_string(&config).expect("read source.toml");
    std::fs::write(
        &config,
        replaced(&shipped, "127.0.0.1:3000", &destination.to_string()),
    )
    .expect("write source.toml");
    let at = unit
        .exec_start
        .iter()
        .position(|a| a == "--listen")
        .expect("the source unit passes --listen");
    let mut argv = unit.exec_start_in(root);
    argv[at + 1] = listen.to_string();
    argv
}

#[test]
fn both_units_run_as_an_unprivileged_user_and_ship_a_write_end_to_end() {
    require_root();
    let root = unpack("dist-run");
    let user = ServiceUser::new();
    user.own(&root.0.join("var/lib/xdr-ship"));
    let caps = Unit::read(&root.0, "xdr-ship-recv.service").capabilities;

    let recv_addr = free_addr();
    let mut recv = spawn(user.command(&caps, &recv_exec_start(&root.0, recv_addr)));
    wait_listening(&mut recv, recv_addr, "the recv unit");

    let source_addr = free_addr();
    let caps = Unit::read(&root.0, "xdr-ship-source.service").capabilities;
    let mut source =
        spawn(user.command(&caps, &source_exec_start(&root.0, source_addr, recv_addr)));
    wait_listening(&mut source, source_addr, "the source unit");

    // An application's writes: acknowledged by the source node only once
    // they are in its log, which the unprivileged user writes.
    let bin = root.0.join("usr/bin/xdr-ship");
    let (ok, out, err) = run_bounded(
        Command::new(&bin)
            .args(["load", "--to", &source_addr.to_string()])
            .args([
                "--count",
                "200",
                "--size",
                "100",
                "--threads",
                "2",
                "--json",
            ]),
        Duration::from_secs(60),
    );
    assert!(ok, "load through the source unit failed:\n{out}{err}");
    assert!(
        root.0.join("var/lib/xdr-ship/log").is_dir(),
        "the source node wrote no log under its state directory"
    );
    assert!(
        root.0.join("var/lib/xdr-ship/store").is_dir(),
        "recv made no store under its state directory"
    );
    for (child, what) in [(&mut recv, "recv"), (&mut source, "source")] {
        assert!(
            child.0.try_wait().expect("poll").is_none(),
            "the {what} unit exited while serving"
        );
    }
}

/// A loopback flow that sends for about `secs`: the listener's side and the
/// sender's local port.
fn loopback_flow(secs: u64) -> (std::thread::JoinHandle<()>, u16, u16) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let local = client.local_addr().expect("addr").port();
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let handle = std::thread::spawn(move || {
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while matches!(server.read(&mut buf), Ok(n) if n > 0) {}
        });
        let chunk = vec![7u8; 16 << 10];
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if client.write_all(&chunk).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(client);
        let _ = reader.join();
    });
    (handle, port, local)
}

/// `observe --json` as the service user with the units' capabilities.
fn observe_unprivileged(root: &Path, port: u16) -> Vec<Value> {
    let user = ServiceUser::new();
    let caps = Unit::read(root, "xdr-ship-recv.service").capabilities;
    let bin = root.join("usr/bin/xdr-ship").to_string_lossy().into_owned();
    let argv: Vec<String> = [
        bin.as_str(),
        "observe",
        "--json",
        "--port",
        &port.to_string(),
        "--interval",
        "500ms",
        "--count",
        "3",
    ]
    .map(str::to_owned)
    .to_vec();
    let (ok, out, err) = run_bounded(&mut user.command(&caps, &argv), Duration::from_secs(60));
    assert!(ok, "observe as {} failed:\n{err}", user.name);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn observe_shows_a_loopback_flow_without_root() {
    require_root();
    let root = unpack("dist-observe");
    let (flow, port, local) = loopback_flow(6);
    let reports = observe_unprivileged(&root.0, port);
    flow.join().expect("the flow's thread");
    let last = reports.last().expect("observe printed a report");
    let conns = last["conns"].as_array().expect("conns");
    assert!(
        conns
            .iter()
            .any(|c| c["ports"][0] == local && c["ports"][1] == port),
        "no row for 127.0.0.1:{local} → :{port}: {last}"
    );
}

/// The kernel programs load as the service user: observe's source is eBPF,
/// not its netlink fallback, with only `CAP_BPF`, `CAP_PERFMON` and
/// `CAP_NET_ADMIN`: every program is a BTF-typed raw tracepoint, so the
/// root-only tracefs (mode 0700 on this kernel) is never read.
#[test]
fn the_kernel_programs_load_without_root() {
    require_root();
    let root = unpack("dist-ebpf");
    let (flow, port, _) = loopback_flow(6);
    let reports = observe_unprivileged(&root.0, port);
    flow.join().expect("the flow's thread");
    let last = reports.last().expect("observe printed a report");
    let source = last["source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with("eBPF"),
        "observe did not load the kernel programs without root: source `{source}`"
    );
}

/// The package installed on this host with `dpkg -i` (maintainer scripts
/// and all), purged on drop even when the test panics.
struct Installed;

impl Installed {
    fn new() -> Self {
        assert!(
            !installed_on_host(),
            "xdr-ship is already installed on this host: this test would replace and purge it"
        );
        let guard = Installed;
        let (ok, out, err) = run_bounded(
            Command::new("dpkg").arg("-i").arg(deb()),
            Duration::from_secs(120),
        );
        assert!(ok, "dpkg -i failed:\n{out}{err}");
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("dpkg").args(["--purge", "xdr-ship"]),
            Duration::from_secs(120),
        );
    }
}

/// Whether dpkg counts the package as installed here.
fn installed_on_host() -> bool {
    let (_, status, _) = run_bounded(
        Command::new("dpkg-query").args(["-W", "-f=${Status}", "xdr-ship"]),
        Duration::from_secs(30),
    );
    status.contains("ok installed")
}

/// `stat -c FORMAT path`.
fn stat(format: &str, path: &str) -> String {
    let (ok, out, err) = run_bounded(
        Command::new("stat").args(["-c", format, path]),
        Duration::from_secs(10),
    );
    assert!(ok, "stat {path}: {err}");
    out.trim().to_owned()
}

/// What a fresh machine gets from `dpkg -i`: the service user and its
/// state directory, the binary with its kernel programs, the units and the
/// configs as conffiles; the recv unit's `ExecStart`, as installed, run as
/// that user with the unit's capabilities, listens and writes its store;
/// `dpkg --purge` takes user, data and files away again. (No systemd runs
/// as PID 1 here, so `systemctl start` itself is not exercised.)
#[test]
fn dpkg_installs_the_service_user_binary_and_units_and_purge_removes_them() {
    require_root();
    let installed = Installed::new();
    let (ok, passwd, _) = run_bounded(
        Command::new("getent").args(["passwd", "xdr-ship"]),
        Duration::from_secs(10),
    );
    assert!(ok, "postinst made no xdr-ship user");
    assert!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/xdr-ship:/usr/sbin/nologin"),
        "{passwd}"
    );
    assert_eq!(
        stat("%U:%G %a", "/var/lib/xdr-ship"),
        "xdr-ship:xdr-ship 750"
    );
    let (ok, version, err) = run_bounded(
        Command::new("/usr/bin/xdr-ship").arg("--version"),
        Duration::from_secs(10),
    );
    assert!(ok, "{err}");
    assert!(version.contains("kernel programs: embedded"), "{version}");
    let (_, conffiles, _) = run_bounded(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "xdr-ship"]),
        Duration::from_secs(10),
    );
    for conf in ["/etc/xdr-ship/recv.toml", "/etc/xdr-ship/source.toml"] {
        assert!(
            conffiles.contains(conf),
            "{conf} is not a conffile:\n{conffiles}"
        );
    }

    let unit = Unit::read(Path::new("/"), "xdr-ship-recv.service");
    let listen: SocketAddr = "127.0.0.1:3000".parse().expect("address");
    let mut recv = spawn(as_service(&unit.user, &unit.capabilities, &unit.exec_start));
    wait_listening(&mut recv, listen, "the installed recv unit");
    assert_eq!(stat("%U", "/var/lib/xdr-ship/store"), "xdr-ship");
    drop(recv);

    drop(installed);
    assert!(
        !installed_on_host(),
        "dpkg --purge left the package installed"
    );
    let (user_left, _, _) = run_bounded(
        Command::new("getent").args(["passwd", "xdr-ship"]),
        Duration::from_secs(10),
    );
    assert!(!user_left, "purge left the xdr-ship user");
    for gone in [
        "/var/lib/xdr-ship",
        "/usr/bin/xdr-ship",
        "/etc/xdr-ship/recv.toml",
    ] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
}
