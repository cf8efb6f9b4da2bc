//! Shared fixtures of the integration tests: they load real kernel programs,
//! run the real binary, and push real traffic, all as root, one at a time
//! (`cargo xtask test` arranges both).
//!
//! Why fixtures panic instead of skipping: a test that cannot run here must
//! fail loudly. CI runs as root, so nothing in CI may hit these panics.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Panics unless the test runs as root.
pub fn require_root() {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF and must run as root: use `cargo xtask test`"
    );
}

/// The `xdr-ship` binary under test: `XDR_SHIP_BIN` (set by `cargo xtask
/// test`), else the workspace's debug build.
pub fn xdr_ship_bin() -> PathBuf {
    let bin = std::env::var_os("XDR_SHIP_BIN").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug/xdr-ship")
                .to_path_buf()
        },
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "{} does not exist: run the integration tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Runs `xdr-ship` with `args`, bounded by `timeout`; returns (exit ok, stdout, stderr).
pub fn run_xdr_ship(args: &[&str], timeout: Duration) -> (bool, String, String) {
    run_bounded(Command::new(xdr_ship_bin()).args(args), timeout)
}

/// Runs `cmd` to completion, killing it if it outlives `timeout`. Output
/// is read while the command runs (a full pipe must not stall it).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> (bool, String, String) {
    let mut child = ChildGuard(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the command"),
    );
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the command") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "command did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    (status.success(), out, err)
}

/// Kills and reaps a child process on drop, so a failing test leaves none behind.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir, world-readable.
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xdr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads everything from one accepted connection on another thread;
/// returns the bytes read. Each read waits at most `timeout`.
pub fn drain_one(listener: TcpListener, timeout: Duration) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(timeout)).expect("read timeout");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = sock.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    })
}

/// Pushes `bytes` through a TCP connection on 127.0.0.1 and returns how many
/// the receiving side read. Bounded: gives up after `timeout`.
pub fn loopback_traffic(bytes: u64, timeout: Duration) -> u64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let reader = drain_one(listener, timeout);
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_write_timeout(Some(timeout))
        .expect("write timeout");
    let chunk = vec![0xa5u8; 1 << 16];
    let deadline = Instant::now() + timeout;
    let mut sent = 0u64;
    while sent < bytes && Instant::now() < deadline {
        sock.write_all(&chunk).expect("write");
        sent += chunk.len() as u64;
    }
    drop(sock);
    reader.join().expect("reader thread")
}

/// A listener on `port` (0: any) of the far side of `lab`.
pub fn listen_far_on(lab: &xdr_ship::lab::Lab, port: u16) -> TcpListener {
    use xdr_ship::lab::{netns, LabError, Side};
    let addr = std::net::SocketAddr::from((lab.addr(Side::Far), port));
    netns::in_netns(lab.namespace(Side::Far), move || {
        TcpListener::bind(addr).map_err(|source| LabError::Io {
            what: "bind in far".to_owned(),
            source,
        })
    })
    .expect("bind a listener in the far namespace")
}

/// A connection from the near side of `lab` to `to`.
pub fn connect_near(lab: &xdr_ship::lab::Lab, to: std::net::SocketAddr) -> TcpStream {
    use xdr_ship::lab::{netns, LabError, Side};
    netns::in_netns(lab.namespace(Side::Near), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|source| LabError::Io {
            what: "connect from near".to_owned(),
            source,
        })
    })
    .expect("connect across the lab")
}

/// Brings `link` up (lab named after `tag`), runs `recv --memory` on the far
/// side and `ship --to far:3000 --json --duration SECS ARGS` on the near
/// side; returns the shipper's per-second snapshots and its summary. The lab
/// and the receiver are gone when it returns, even on panic.
pub fn ship_across_lab(
    tag: &str,
    link: xdr_ship::lab::LinkConfig,
    ship_args: &[&str],
    secs: u64,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    ship_across_lab_with(tag, link, &[], ship_args, secs)
}

/// `recv --memory --insecure --listen FAR:3000 ARGS` in the far namespace
/// of `lab`, killed when the guard drops.
pub fn far_memory_receiver(lab: &xdr_ship::lab::Lab, recv_args: &[&str]) -> ChildGuard {
    use xdr_ship::lab::Side;
    let listen = format!("{}:3000", lab.addr(Side::Far));
    ChildGuard(
        lab.command(Side::Far, xdr_ship_bin())
            .args(["recv", "--memory", "--insecure", "--listen", &listen])
            .args(recv_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start recv in the far namespace"),
    )
}

/// [`ship_across_lab`] with extra flags for the receiver (`--rcvbuf 64KiB`,
/// `--apply-delay 20ms`).
pub fn ship_across_lab_with(
    tag: &str,
    link: xdr_ship::lab::LinkConfig,
    recv_args: &[&str],
    ship_args: &[&str],
    secs: u64,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    use xdr_ship::lab::{Lab, LabOptions, Side};
    let name = format!("t{}-{tag}", std::process::id());
    let lab = Lab::up(&name, link, LabOptions::default()).expect("lab up");
    let far = lab.addr(Side::Far);
    let _recv = far_memory_receiver(&lab, recv_args);
    let (ok, out, err) = run_bounded(
        lab.command(Side::Near, xdr_ship_bin())
            .args([
                "ship",
                "--to",
                &format!("{far}:3000"),
                "--json",
                "--duration",
            ])
            .arg(format!("{secs}s"))
            .args(ship_args),
        Duration::from_secs(secs + 60),
    );
    assert!(ok, "ship failed: {err}");
    let values: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = values
        .iter()
        .find(|v| v.get("summary").is_some())
        .cloned()
        .expect("a summary line");
    let snaps = values
        .into_iter()
        .filter(|v| v.get("throughput").is_some())
        .collect();
    (snaps, summary)
}

/// Waits until a TCP socket listens on `port`, as `ss` run by `ss` (a plain
/// `Command::new("ss")`, or one inside a lab namespace) sees it: a probe
/// connection would be taken as a client by servers that accept one.
pub fn wait_listening_ss(ss: impl Fn() -> Command, port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = ss()
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss runs");
        if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port}")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listened on :{port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
