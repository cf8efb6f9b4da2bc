//! Reading back what arrived: `recv --listen-resp` answers `redis-cli`
//! after a ship run, and `xdr-ship verify` compares the source log with a
//! destination over RESP (the read-only door, or a real redis-server)
//! and counts exactly what differs.
use std::{
    io::{BufRead, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdr_tests::{run_bounded, run_xdr_ship, xdr_ship_bin, ChildGuard, TempDir};

/// Keys each test writes.
const KEYS: usize = 200;
/// Longest wait for a port to open or the records to arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> ChildGuard {
    ChildGuard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process"),
    )
}

/// A source node with a RESP port shipping to `recv --memory
/// --listen-resp`: (source's RESP port, destination's RESP port, guards).
struct Run {
    log: TempDir,
    source_resp: u16,
    dest_resp: u16,
    _guards: [ChildGuard; 2],
}

fn ship_run(tag: &str) -> Run {
    let log = TempDir::new(tag);
    let (recv_port, dest_resp, source_resp) = (free_port(), free_port(), free_port());
    let recv = spawn(
        Command::new(xdr_ship_bin())
            .args([
                "recv",
                "--memory",
                "--listen",
                &format!("127.0.0.1:{recv_port}"),
            ])
            .args(["--listen-resp", &format!("127.0.0.1:{dest_resp}")]),
    );
    wait_for_port(dest_resp);
    let ship = spawn(
        Command::new(xdr_ship_bin())
            .args(["ship", "--log"])
            .arg(&log.0)
            .args(["--listen-resp", &format!("127.0.0.1:{source_resp}")])
            .args(["--to", &format!("127.0.0.1:{recv_port}")]),
    );
    wait_for_port(source_resp);
    Run {
        log,
        source_resp,
        dest_resp,
        _guards: [recv, ship],
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let (ok, out, err) = run_bounded(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
        Duration::from_secs(10),
    );
    assert!(ok, "redis-cli {args:?}: {err}");
    out.trim().to_owned()
}

/// `SET key value` for every pair, pipelined on one connection; every
/// reply must be `+OK`.
fn set_all(port: u16, pairs: &[(String, String)]) {
    let mut tx = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tx.set_read_timeout(Some(ARRIVAL_TIMEOUT)).unwrap();
    let mut rx = BufReader::new(tx.try_clone().unwrap());
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    tx.write_all(&out).unwrap();
    for (k, _) in pairs {
        let mut line = String::new();
        rx.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n", "SET {k}");
    }
}

fn pairs(prefix: &str) -> Vec<(String, String)> {
    (0..KEYS)
        .map(|i| (format!("{prefix}:{i}"), format!("value-{i}")))
        .collect()
}

/// Waits until the destination's DBSIZE reaches `n`.
fn wait_for_dbsize(port: u16, n: usize) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let size = redis_cli(port, &["DBSIZE"]);
        if size == n.to_string() {
            return;
        }
        assert!(Instant::now() < deadline, "DBSIZE stayed {size}, not {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `verify --json` against `port`: (exit ok, the counts).
fn verify(log: &TempDir, port: u16) -> (bool, serde_json::Value) {
    let dir = log.0.to_str().unwrap();
    let against = format!("redis://127.0.0.1:{port}");
    let (ok, out, err) = run_xdr_ship(
        &["verify", "--log", dir, "--against", &against, "--json"],
        ARRIVAL_TIMEOUT,
    );
    let counts = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("verify printed {out:?} ({e}); stderr {err}"));
    (ok, counts)
}

#[test]
fn recv_answers_redis_cli_get_and_scan_after_a_ship_run() {
    let run = ship_run("readback");
    set_all(run.source_resp, &pairs("user"));
    wait_for_dbsize(run.dest_resp, KEYS);
    assert_eq!(redis_cli(run.dest_resp, &["GET", "user:7"]), "value-7");
    assert_eq!(redis_cli(run.dest_resp, &["GET", "nobody"]), "");
    assert_eq!(
        redis_cli(run.dest_resp, &["EXISTS", "user:1", "user:2", "x"]),
        "2"
    );
    let scanned = redis_cli(run.dest_resp, &["--scan", "--pattern", "user:1*"]);
    let mut keys: Vec<&str> = scanned.lines().collect();
    keys.sort_unstable();
    let mut expected: Vec<String> = (0..KEYS)
        .map(|i| format!("user:{i}"))
        .filter(|k| k.starts_with("user:1"))
        .collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let refused = redis_cli(run.dest_resp, &["SET", "user:7", "changed"]);
    assert!(refused.starts_with("READONLY"), "{refused}");
    assert_eq!(redis_cli(run.dest_resp, &["GET", "user:7"]), "value-7");
}

#[test]
fn verify_finds_no_difference_after_a_run() {
    let run = ship_run("verify-clean");
    set_all(run.source_resp, &pairs("k"));
    assert_eq!(redis_cli(run.source_resp, &["DEL", "k:0"]), "1");
    wait_for_dbsize(run.dest_resp, KEYS - 1);
    let (ok, counts) = verify(&run.log, run.dest_resp);
    assert!(ok, "verify found differences: {counts}");
    assert_eq!(counts["log_keys"], KEYS);
    assert_eq!(counts["matching"], KEYS);
    for field in ["missing", "stale", "extra"] {
        assert_eq!(counts[field], 0, "{field}: {counts}");
    }
}

#[test]
fn verify_counts_exactly_what_was_changed_behind_its_back() {
    let run = ship_run("verify-diff");
    let redis_port = free_port();
    let _redis = spawn(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--save", ""])
            .args(["--appendonly", "no", "--bind", "127.0.0.1"]),
    );
    wait_for_port(redis_port);
    // The same writes into the source log and into a real redis-server.
    let written = pairs("k");
    set_all(run.source_resp, &written);
    set_all(redis_port, &written);
    assert_eq!(redis_cli(run.source_resp, &["DEL", "k:199"]), "1");
    assert_eq!(redis_cli(redis_port, &["DEL", "k:199"]), "1");
    let (same, counts) = verify(&run.log, redis_port);
    assert!(same, "a copy made equal differs: {counts}");
    // Behind its back: 3 deleted, 2 overwritten, 1 deleted key revived, 4 added.
    redis_cli(redis_port, &["DEL", "k:1", "k:2", "k:3"]);
    redis_cli(redis_port, &["SET", "k:10", "other"]);
    redis_cli(redis_port, &["SET", "k:11", "other"]);
    redis_cli(redis_port, &["SET", "k:199", "revived"]);
    redis_cli(
        redis_port,
        &["MSET", "new:1", "a", "new:2", "b", "k:x", "c", "k:y", "d"],
    );
    let (ok, counts) = verify(&run.log, redis_port);
    assert!(!ok, "verify exited 0 with differences: {counts}");
    assert_eq!(counts["log_keys"], KEYS);
    assert_eq!(counts["missing"], 3, "{counts}");
    assert_eq!(counts["stale"], 3, "{counts}");
    assert_eq!(counts["extra"], 4, "{counts}");
    assert_eq!(counts["matching"], KEYS - 6, "{counts}");
}
