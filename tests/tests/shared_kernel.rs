//! The log path loads the kernel programs once, whatever the number of
//! destinations: one port filter set and one reader feed one diagnoser per
//! destination (`ship --log` with two `--to`).
//!
//! How it is counted: every eBPF program a process holds is an open file
//! whose `/proc/<pid>/fdinfo` names its `prog_id`; the distinct ids held by
//! the source node with two destinations must be as many as with one (a
//! second set of programs would double them). Root only (eBPF); the
//! receivers listen on loopback and every process is reaped even when the
//! test fails.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard, TempDir};

/// Records per second the generator writes into the log.
const RATE: &str = "2000";
/// Records in all: a few seconds of shipping.
const COUNT: &str = "8000";
/// Bound on one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// Two loopback ports of this test process (unlikely to collide with a
/// parallel run of another process).
fn ports() -> [u16; 2] {
    let base = 21_000 + (std::process::id() % 10_000) as u16 * 2;
    [base, base + 1]
}

fn start_recv(port: u16) -> ChildGuard {
    ChildGuard(
        std::process::Command::new(xdr_ship_bin())
            .args(["recv", "--memory", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recv on loopback"),
    )
}

/// The distinct eBPF program ids process `pid` holds open.
fn bpf_programs_of(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read fdinfo").flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        ids.extend(info.lines().filter_map(|l| {
            l.strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse::<u64>().ok())
        }));
    }
    ids
}

/// What one source-node run showed: the programs it held while shipping,
/// and every destination's JSON lines.
struct Run {
    programs: BTreeSet<u64>,
    lines: Vec<Value>,
}

/// `ship --log` to the receivers on `to`; the programs are counted once
/// every destination has reported a verdict (all loaded by then).
fn source_node(tag: &str, to: &[u16]) -> Run {
    let dir = TempDir::new(&format!("shared-kernel-{tag}"));
    let mut cmd = std::process::Command::new(xdr_ship_bin());
    cmd.arg("ship").arg("--log").arg(dir.0.join("log"));
    for port in to {
        cmd.args(["--to", &format!("127.0.0.1:{port}")]);
    }
    let mut ship = ChildGuard(
        cmd.args(["--generate", &format!("{RATE},100,1000"), "--count", COUNT])
            .args(["--connections", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the source node"),
    );
    let pid = ship.0.id();
    let (tx, rx) = mpsc::sync_channel::<Value>(1024);
    let stdout = ship.0.stdout.take().expect("ship's stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut lines = Vec::new();
    let mut programs = None;
    while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        lines.push(v);
        if programs.is_none() && judged(&lines).len() == to.len() {
            programs = Some(bpf_programs_of(pid));
        }
    }
    let status = ship.0.wait().expect("wait for the source node");
    assert!(status.success(), "the source node failed: {status}");
    Run {
        programs: programs
            .unwrap_or_else(|| panic!("not every destination got a verdict: {lines:?}")),
        lines,
    }
}

/// The destinations that have had a verdict.
fn judged(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|v| !v["verdict"].is_null())
        .filter_map(|v| v["destination"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn two_destinations_share_one_set_of_kernel_programs_each_with_its_own_verdict() {
    require_root();
    let [a, b] = ports();
    let _recv_a = start_recv(a);
    let _recv_b = start_recv(b);
    std::thread::sleep(Duration::from_millis(300));
    let one = source_node("one", &[a]);
    let two = source_node("two", &[a, b]);
    println!(
        "programs held: one destination {:?}, two destinations {:?}; verdicts for {:?}",
        one.programs,
        two.programs,
        judged(&two.lines)
    );
    assert!(
        !one.programs.is_empty(),
        "the source node holds no eBPF program: is eBPF loading here?"
    );
    assert_eq!(
        two.programs.len(),
        one.programs.len(),
        "two destinations loaded another set of programs"
    );
    let expected: BTreeSet<String> = [a, b].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let verdicts = judged(&two.lines);
    assert_eq!(
        verdicts.len(),
        2,
        "each destination has its own verdict: {verdicts:?} (expected {expected:?})"
    );
}
