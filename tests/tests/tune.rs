//! `xdr-ship tune --apply` for real, inside a network namespace the test
//! makes (and removes, even on panic): the namespace's own sysctls are
//! raised to the printed values, the printed revert commands (and the
//! revert script) put the old values back, and the host's — the initial
//! namespace's — sysctls are never touched.
//!
//! Which sysctls are per network namespace on this kernel is read, not
//! assumed: `tcp_rmem`/`tcp_wmem` are (a fresh namespace gets its own
//! copy); `net.core.rmem_max`/`wmem_max` are asserted on only if the
//! namespace lets us write them (on 6.18 they are read-only there).
use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdr_ship::lab::netns;
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard, TempDir};

/// A named network namespace, deleted on drop.
struct NetnsGuard(String);

impl NetnsGuard {
    fn new(tag: &str) -> Self {
        let name = format!("xdr-tune-{tag}-{}", std::process::id());
        netns::destroy(&name).expect("remove a leftover namespace");
        netns::create(&name).expect("create the test namespace");
        Self(name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns::destroy(&self.0);
    }
}

/// A sysctl as read inside `ns`, runs of whitespace made single spaces.
fn read_in(ns: &str, key: &str) -> String {
    let v = netns::in_netns(ns, || netns::read_sysctl(key)).expect("read a sysctl in the netns");
    normal(&v)
}

/// A sysctl of the initial namespace (this test's own thread).
fn read_host(key: &str) -> String {
    normal(&std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).unwrap())
}

fn normal(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn writable_in(ns: &str, key: &str) -> bool {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    netns::in_netns(ns, || {
        Ok(std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o222 != 0))
    })
    .unwrap()
}

/// Runs `cmd` bounded by 30 s; returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let mut child = ChildGuard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.0.stdout.take().map(|p| Box::new(p) as _));
    let err = pipe(child.0.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "command did not finish in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// `xdr-ship tune ARGS` inside `ns`.
fn tune_in(ns: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(xdr_ship_bin())
        .arg("tune")
        .args(args))
}

/// A shell command inside `ns`; panics unless it succeeds.
fn sh_in(ns: &str, script: &str) {
    let (code, out, err) = run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]));
    assert_eq!(code, Some(0), "`{script}` failed: {out}{err}");
}

/// The third field of a `tcp_rmem`-style value.
fn max_field(v: &str) -> u64 {
    v.split_whitespace().nth(2).unwrap().parse().unwrap()
}

const HOST_KEYS: &[&str] = &[
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_congestion_control",
];

fn host_values() -> Vec<String> {
    HOST_KEYS.iter().map(|k| read_host(k)).collect()
}

/// A link whose BDP exceeds both buffer maxima of `ns`, so both need
/// raising: RTT 100 ms and a bandwidth in whole MB/s. Returns (bandwidth
/// flag, BDP bytes).
fn link_beyond(ns: &str) -> (String, u64) {
    let max = max_field(&read_in(ns, "net.ipv4.tcp_rmem"))
        .max(max_field(&read_in(ns, "net.ipv4.tcp_wmem")));
    let mb_per_s = max * 10 / 1_000_000 + 1;
    (format!("{mb_per_s}MB/s"), mb_per_s * 1_000_000 / 10)
}

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(1 << 20) * (1 << 20)
}

#[test]
fn apply_in_a_namespace_raises_its_buffers_to_the_printed_values_and_the_printed_reverts_restore_them(
) {
    require_root();
    let host_before = host_values();
    let ns = NetnsGuard::new("apply");
    let old_rmem = read_in(&ns.0, "net.ipv4.tcp_rmem");
    let old_wmem = read_in(&ns.0, "net.ipv4.tcp_wmem");
    let core_per_netns = writable_in(&ns.0, "net.core.rmem_max");
    let old_core = read_in(&ns.0, "net.core.rmem_max");
    let (bandwidth, bdp) = link_beyond(&ns.0);
    println!(
        "netns {}: tcp_rmem '{old_rmem}', tcp_wmem '{old_wmem}', rmem_max {old_core} \
         ({}); link 100ms × {bandwidth} → BDP {bdp}",
        ns.0,
        if core_per_netns {
            "writable here"
        } else {
            "read-only here: host-wide"
        }
    );

    let (code, out, err) = tune_in(
        &ns.0,
        &[
            "--rtt",
            "100ms",
            "--bandwidth",
            &bandwidth,
            "--apply",
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("tune printed no JSON ({e}): {out}\n{err}"));
    assert_eq!(json["bdp_bytes"], bdp, "{out}");
    assert_eq!(
        code,
        json["exit_code"].as_i64().map(|c| c as i32),
        "{out}\n{err}"
    );
    let applied = json["apply"]["applied"].as_array().expect("applied list");
    let find = |key: &str| {
        applied
            .iter()
            .find(|a| a["key"] == key)
            .unwrap_or_else(|| panic!("{key} not applied: {out}"))
    };

    // Autotuning needs 2 × BDP of buffer (half becomes window; the send
    // side counts truesize), rounded up to whole MiB; min and default stay.
    let want_max = round_up_mib(2 * bdp);
    for (key, old) in [
        ("net.ipv4.tcp_rmem", &old_rmem),
        ("net.ipv4.tcp_wmem", &old_wmem),
    ] {
        let a = find(key);
        let printed = a["new"].as_str().unwrap();
        let fields: Vec<&str> = old.split_whitespace().collect();
        assert_eq!(
            printed,
            format!("{} {} {want_max}", fields[0], fields[1]),
            "{key}"
        );
        assert_eq!(a["old"].as_str().unwrap(), old.as_str(), "{key}");
        assert_eq!(read_in(&ns.0, key), printed, "{key} in the namespace");
        let check = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["setting"] == key)
            .unwrap();
        assert_eq!(
            check["write"]["value"], printed,
            "the row's advice was written"
        );
    }
    if core_per_netns {
        let a = find("net.core.rmem_max");
        assert_eq!(
            read_in(&ns.0, "net.core.rmem_max"),
            a["new"].as_str().unwrap()
        );
    } else {
        let skipped = json["apply"]["skipped"].as_array().unwrap();
        let s = skipped
            .iter()
            .find(|s| s["key"] == "net.core.rmem_max")
            .unwrap_or_else(|| panic!("rmem_max neither applied nor skipped: {out}"));
        assert!(s["reason"].as_str().unwrap().contains("read-only"), "{s}");
        assert_eq!(read_in(&ns.0, "net.core.rmem_max"), old_core);
        assert_eq!(
            code,
            Some(2),
            "rmem_max is still short: changes still advised"
        );
    }
    assert_eq!(host_values(), host_before, "the host's own sysctls changed");

    for a in applied {
        sh_in(&ns.0, a["revert"].as_str().unwrap());
    }
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_rmem"), old_rmem);
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_wmem"), old_wmem);
    assert_eq!(read_in(&ns.0, "net.core.rmem_max"), old_core);
    assert_eq!(host_values(), host_before, "the host's own sysctls changed");
}

#[test]
fn the_revert_script_written_by_apply_restores_the_namespace() {
    require_root();
    let host_before = host_values();
    let ns = NetnsGuard::new("script");
    let dir = TempDir::new("tune-script");
    let script = dir.0.join("revert.sh");
    let old_rmem = read_in(&ns.0, "net.ipv4.tcp_rmem");
    let old_wmem = read_in(&ns.0, "net.ipv4.tcp_wmem");
    let (bandwidth, _) = link_beyond(&ns.0);

    let (code, out, err) = tune_in(
        &ns.0,
        &[
            "--rtt",
            "100ms",
            "--bandwidth",
            &bandwidth,
            "--role",
            "receiver",
            "--apply",
            "--revert-script",
            script.to_str().unwrap(),
        ],
    );
    assert!(matches!(code, Some(0 | 2)), "{code:?}: {out}\n{err}");
    assert!(
        out.contains(&format!("revert: sysctl -w net.ipv4.tcp_rmem='{old_rmem}'")),
        "{out}"
    );
    // Receiver only: the send buffer is not its business.
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_wmem"), old_wmem);
    assert_ne!(read_in(&ns.0, "net.ipv4.tcp_rmem"), old_rmem);

    sh_in(&ns.0, &format!("sh {}", script.display()));
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_rmem"), old_rmem);
    assert_eq!(host_values(), host_before, "the host's own sysctls changed");
}

#[test]
fn apply_without_root_refuses_and_changes_nothing() {
    require_root();
    let ns = NetnsGuard::new("noroot");
    let old_rmem = read_in(&ns.0, "net.ipv4.tcp_rmem");
    let (bandwidth, _) = link_beyond(&ns.0);
    let (code, out, err) = run(Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(xdr_ship_bin())
        .args([
            "tune",
            "--rtt",
            "100ms",
            "--bandwidth",
            &bandwidth,
            "--apply",
        ]));
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert!(
        out.is_empty(),
        "nothing checked or printed before refusing: {out}"
    );
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_rmem"), old_rmem);
}

#[test]
fn without_apply_tune_reads_only_and_exits_2_when_changes_are_advised() {
    require_root();
    let ns = NetnsGuard::new("read");
    let old_rmem = read_in(&ns.0, "net.ipv4.tcp_rmem");
    let (bandwidth, _) = link_beyond(&ns.0);
    let (code, out, err) = tune_in(&ns.0, &["--rtt", "100ms", "--bandwidth", &bandwidth]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(out.contains("net.ipv4.tcp_rmem"), "{out}");
    assert!(out.contains("changes advised (exit code 2)"), "{out}");
    assert_eq!(read_in(&ns.0, "net.ipv4.tcp_rmem"), old_rmem);
}
