//! The RESP front door against real Redis tools: `redis-cli` and
//! `redis-benchmark` write into the source log through `ship --log DIR
//! --listen-resp`, and the log is read back to check every acknowledged
//! write is in it.
use std::{
    collections::HashMap,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdr_ship::srclog::segment::{parse_segment_name, SegmentReader};
use xdr_tests::{run_bounded, xdr_ship_bin, ChildGuard, TempDir};

#[path = "resp/bad_input.rs"]
mod bad_input;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A source node with a RESP port and an unreachable destination (the
/// log keeps everything).
fn source_node(dir: &TempDir) -> (ChildGuard, u16) {
    source_node_on(dir, free_port(), &[])
}

/// [`source_node`] on `port`, with `extra` flags.
fn source_node_on(dir: &TempDir, port: u16, extra: &[&str]) -> (ChildGuard, u16) {
    let child = Command::new(xdr_ship_bin())
        .args(["ship", "--log"])
        .arg(&dir.0)
        .args(["--listen-resp", &format!("127.0.0.1:{port}")])
        .args(["--to", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the source node");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "RESP port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (ChildGuard(child), port)
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

/// The newest value of every key in the log (`None`: deleted).
fn read_log(dir: &TempDir) -> HashMap<Vec<u8>, Option<Vec<u8>>> {
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some((parse_segment_name(p.file_name()?.to_str()?)?, p))
        })
        .collect();
    segments.sort();
    let mut keys = HashMap::new();
    for (first, path) in segments {
        let mut r = SegmentReader::open(path, first).unwrap();
        while let Some(e) = r.next_entry().unwrap() {
            keys.insert(e.write.key.to_vec(), e.write.value.map(|v| v.to_vec()));
        }
    }
    keys
}

#[test]
fn redis_cli_writes_land_in_the_log() {
    let dir = TempDir::new("resp-cli");
    let (mut node, port) = source_node(&dir);
    assert_eq!(redis_cli(port, &["SET", "user:1", "alice"]), "OK");
    assert_eq!(
        redis_cli(port, &["MSET", "user:2", "bob", "user:3", "carol"]),
        "OK"
    );
    assert_eq!(redis_cli(port, &["DEL", "user:3"]), "1");
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    let log = read_log(&dir);
    assert_eq!(log[&b"user:1"[..]], Some(b"alice".to_vec()));
    assert_eq!(log[&b"user:2"[..]], Some(b"bob".to_vec()));
    assert_eq!(log[&b"user:3"[..]], None);
}

#[test]
fn an_unknown_command_gets_an_error_and_the_connection_goes_on() {
    let dir = TempDir::new("resp-unknown");
    let (_node, port) = source_node(&dir);
    let mut cli = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    cli.stdin
        .take()
        .unwrap()
        .write_all(b"SET a 1\nFLUSHALL\nSET b 2\n")
        .unwrap();
    let out = cli.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // redis-cli prints a blank line after an error when not on a terminal.
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "OK");
    assert!(lines[1].contains("unknown command"), "{text}");
    assert_eq!(lines[2], "OK");
    drop(_node);
    let log = read_log(&dir);
    assert_eq!(log[&b"a"[..]], Some(b"1".to_vec()));
    assert_eq!(log[&b"b"[..]], Some(b"2".to_vec()));
}

#[test]
fn every_acknowledged_benchmark_set_is_in_the_log_after_kill_9() {
    let dir = TempDir::new("resp-bench");
    let (mut node, port) = source_node(&dir);
    let requests = 20_000;
    let (ok, out, err) = run_bounded(
        Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "set",
                "-P",
                "64",
                "-r",
                "1000",
            ])
            .args(["-n", &requests.to_string(), "-q"]),
        Duration::from_secs(60),
    );
    assert!(ok, "redis-benchmark: {out}{err}");
    let acked: u64 = redis_cli(port, &["INFO"])
        .lines()
        .find_map(|l| l.strip_prefix("resp_acknowledged:"))
        .expect("INFO has resp_acknowledged")
        .trim()
        .parse()
        .unwrap();
    assert!(acked >= requests, "acknowledged {acked} of {requests}");
    node.0.kill().unwrap(); // SIGKILL: nothing flushed on the way out.
    node.0.wait().unwrap();
    let log = read_log(&dir);
    // -r 1000: keys key:000000000000 … key:000000000999, all written.
    assert!(!log.is_empty() && log.len() <= 1000, "{} keys", log.len());
    assert!(log.values().all(Option::is_some));
}

/// A client of the test's own, pipelining `SET own:N N` in batches and
/// recording every key the node answered `+OK` for, until the node dies.
fn acknowledging_writer(port: u16) -> std::thread::JoinHandle<Vec<u64>> {
    use std::io::{BufRead, BufReader, Write as _};
    const BATCH: u64 = 64;
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let Ok(tx) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return acked;
        };
        tx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rx = BufReader::new(tx.try_clone().unwrap());
        let mut tx = tx;
        for batch in 0.. {
            let keys = batch * BATCH..(batch + 1) * BATCH;
            let mut out = Vec::new();
            for n in keys.clone() {
                let (k, v) = (format!("own:{n}"), n.to_string());
                out.extend_from_slice(
                    format!(
                        "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                        k.len(),
                        v.len()
                    )
                    .as_bytes(),
                );
            }
            if tx.write_all(&out).is_err() {
                return acked;
            }
            for n in keys {
                let mut line = String::new();
                match rx.read_line(&mut line) {
                    Ok(_) if line == "+OK\r\n" => acked.push(n),
                    _ => return acked,
                }
            }
        }
        acked
    })
}

#[test]
fn a_kill_9_mid_benchmark_loses_no_acknowledged_set() {
    let dir = TempDir::new("resp-kill9");
    let port = free_port();
    let (mut node, _) = source_node_on(&dir, port, &[]);
    let mut bench = ChildGuard(
        Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-t", "set", "-P", "64"])
            .args(["-r", "100000", "-n", "100000000", "-d", "100", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-benchmark"),
    );
    let writer = acknowledging_writer(port);
    std::thread::sleep(Duration::from_secs(2));
    node.0.kill().unwrap(); // SIGKILL mid-run: nothing flushed on the way out.
    node.0.wait().unwrap();
    let acked = writer.join().unwrap();
    let _ = bench.0.kill();
    let _ = bench.0.wait();
    assert!(!acked.is_empty(), "the node acknowledged nothing in 2 s");
    // Restarted on the same log, it recovers and takes writes again.
    let (node, _) = source_node_on(&dir, port, &[]);
    assert_eq!(redis_cli(port, &["SET", "after-restart", "1"]), "OK");
    drop(node);
    let log = read_log(&dir);
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| {
            log.get(format!("own:{n}").as_bytes()) != Some(&Some(n.to_string().into_bytes()))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged SETs lost, first {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        log.keys().any(|k| k.starts_with(b"key:")),
        "no benchmark key"
    );
    assert_eq!(log[&b"after-restart"[..]], Some(b"1".to_vec()));
}
