//! The kernel-only verdict on real processes we did not write (iperf3,
//! python3's sockets, redis-server),
//! across the WAN lab: `observe` prints the binding limit live, and
//! `replay` of its recording agrees. Root; namespaces this test creates,
//! each lab with a unique name; every process bounded and killed on drop.
use std::{
    io::BufRead,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use xdr_ship::lab::{Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard, TempDir};

const RTT: Duration = Duration::from_millis(80);
const LINK_BYTES_PER_S: u64 = 50_000_000;

/// A lab named for this test and process.
fn lab(tag: &str) -> Lab {
    lab_with(tag, LinkConfig::new(RTT, LINK_BYTES_PER_S))
}

/// A lab named for this test and process, on `link`.
fn lab_with(tag: &str, link: LinkConfig) -> Lab {
    let name = format!("kv{}-{tag}", std::process::id());
    Lab::up(&name, link, LabOptions::default()).expect("lab up")
}

/// An iperf3 server on the far side (port `port`, extra `server` args) and
/// a client on the near side sending for `secs` with extra `client` args.
fn iperf3(
    lab: &Lab,
    port: u16,
    server: &[&str],
    client: &[&str],
    secs: u64,
) -> (ChildGuard, ChildGuard) {
    let far = lab.addr(Side::Far).to_string();
    let s = ChildGuard(
        lab.command(Side::Far, "iperf3")
            .args(["-s", "-1", "-p", &port.to_string()])
            .args(server)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s (cargo xtask setup installs it)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    (s, iperf3_client(lab, &far, port, client, secs))
}

/// An iperf3 client on the near side to `far`:`port` for `secs`.
fn iperf3_client(lab: &Lab, far: &str, port: u16, client: &[&str], secs: u64) -> ChildGuard {
    ChildGuard(
        lab.command(Side::Near, "iperf3")
            .args(["-c", far, "-p", &port.to_string(), "-t", &secs.to_string()])
            .args(client)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -c"),
    )
}

/// `observe` on the near side for `count` one-second samples, recording
/// to a file; returns its text output and `replay --text` of the recording.
fn observe_and_replay(lab: &Lab, port: u16, count: u32) -> (String, String) {
    observe_and_replay_with(lab, port, count, &[])
}

/// [`observe_and_replay`] with `extra` arguments to `observe`.
fn observe_and_replay_with(lab: &Lab, port: u16, count: u32, extra: &[&str]) -> (String, String) {
    let dir = TempDir::new("kernel-verdict");
    let file = dir.0.join("observe.jsonl").display().to_string();
    let (ok, live, err) = run_bounded(
        lab.command(Side::Near, xdr_ship_bin())
            .args([
                "observe",
                "--port",
                &port.to_string(),
                "--interval",
                "1s",
                "--count",
                &count.to_string(),
                "--record",
                &file,
            ])
            .args(extra),
        Duration::from_secs(u64::from(count) + 20),
    );
    assert!(ok, "observe failed: {err}");
    let (ok, replay, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["replay", &file, "--text"]),
        Duration::from_secs(30),
    );
    assert!(ok, "replay failed: {err}");
    (live, replay)
}

/// The last verdict block `observe` printed.
fn last_verdict(live: &str) -> &str {
    let at = live
        .rfind("verdict (the flows that carried data")
        .unwrap_or_else(|| panic!("no verdict printed:\n{live}"));
    &live[at..]
}

/// The lines of a verdict block that head a peer group's verdict:
/// `4 flows to 198.18.0.2:5404: limit: bandwidth (97%) — …`, trimmed.
fn group_lines(block: &str) -> Vec<&str> {
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" to ") && l.contains(": limit: ") && !l.starts_with("flow "))
        .collect()
}

/// The limit named by the first peer group of a verdict block (or, when
/// no flow carried data, its "all flows:" line).
fn all_flows_limit(block: &str) -> String {
    group_lines(block)
        .first()
        .and_then(|l| l.split_once(": limit: ").map(|(_, rest)| rest))
        .or_else(|| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix("all flows: limit: "))
        })
        .unwrap_or_else(|| panic!("no verdict line:\n{block}"))
        .to_owned()
}

#[test]
fn a_rate_capped_iperf3_sender_is_named_as_the_application() {
    require_root();
    let lab = lab("app");
    let port = 5401;
    // 2 MB/s, well below the 50 MB/s link.
    let flow = iperf3(&lab, port, &[], &["-b", "16M"], 16);
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 8);
    drop(flow);
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(all_flows_limit(block).starts_with("application"), "{block}");
    assert!(block.contains("iperf3 (pid "), "names the process: {block}");
    assert!(replay.contains("application"), "{replay}");
}

#[test]
fn a_small_receive_buffer_on_the_far_side_is_the_receiver_window() {
    require_root();
    let lab = lab("rwnd");
    let port = 5402;
    // The receiving namespace only (iperf3's -w would set both ends): its
    // autotuned receive buffer stops at 128 KiB, ~1.6 MB/s over 80 ms.
    let (ok, _, err) = run_bounded(
        lab.command(Side::Far, "sysctl")
            .args(["-w", "net.ipv4.tcp_rmem=4096 65536 131072"]),
        Duration::from_secs(5),
    );
    assert!(ok, "sysctl in the far namespace: {err}");
    let flow = iperf3(&lab, port, &[], &[], 16);
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 8);
    drop(flow);
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(
        all_flows_limit(block).starts_with("receiver window"),
        "{block}"
    );
    assert!(replay.contains("receiver window"), "{replay}");
}

#[test]
fn several_iperf3_streams_on_the_capped_link_are_bandwidth() {
    require_root();
    let lab = lab("bw");
    let port = 5404;
    let flow = iperf3(&lab, port, &[], &["-P", "4"], 14);
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 6);
    drop(flow);
    let peer = format!("{}:{port}", lab.addr(Side::Far));
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(all_flows_limit(block).starts_with("bandwidth"), "{block}");
    assert!(replay.contains("limit: bandwidth"), "{replay}");
    // The four streams go to one peer: one verdict block covers them.
    let groups = group_lines(block);
    assert_eq!(groups.len(), 1, "one verdict block:\n{block}");
    assert!(
        groups[0].starts_with(&format!("4 flows to {peer}: limit: bandwidth")),
        "the block covers the 4 flows to {peer}:\n{block}"
    );
    assert!(
        replay.contains(&format!("4 flows to {peer}: limit: bandwidth")),
        "replay groups the same way: {replay}"
    );
}

/// A python3 sender on the near side (a process we did not write, with
/// only its own `SO_SNDBUF` set: nothing else on either end is tuned) to
/// a python3 sink on the far side's `port`, for `secs`.
fn python_flow(lab: &Lab, port: u16, sndbuf_bytes: u32, secs: u64) -> (ChildGuard, ChildGuard) {
    const SINK: &str = "import socket,sys\n\
        l=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        l.bind(('0.0.0.0', int(sys.argv[1]))); l.listen(1); c,_=l.accept()\n\
        while c.recv(1 << 20): pass\n";
    const SENDER: &str = "import socket,sys,time\n\
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(sys.argv[3]))\n\
        s.connect((sys.argv[1], int(sys.argv[2]))); b=bytes(1 << 16); end=time.time()+float(sys.argv[4])\n\
        while time.time() < end: s.sendall(b)\n";
    let far = lab.addr(Side::Far).to_string();
    let sink = ChildGuard(
        lab.command(Side::Far, "python3")
            .args(["-c", SINK, &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the python3 sink"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let sender = ChildGuard(
        lab.command(Side::Near, "python3")
            .args(["-c", SENDER, &far, &port.to_string()])
            .args([sndbuf_bytes.to_string(), secs.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the python3 sender"),
    );
    (sink, sender)
}

#[test]
fn a_small_send_buffer_on_the_sending_process_is_the_sender_buffer() {
    require_root();
    let lab = lab("sndbuf");
    let port = 5405;
    // 64 KiB asked (the kernel doubles it): ~1.6 MB/s over 80 ms, while
    // the far side autotunes its receive window to megabytes.
    let flow = python_flow(&lab, port, 64 << 10, 16);
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 8);
    drop(flow);
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(
        all_flows_limit(block).starts_with("sender buffer"),
        "{block}"
    );
    assert!(replay.contains("sender buffer"), "{replay}");
}

#[test]
fn cubic_over_two_percent_loss_is_loss() {
    require_root();
    let link = LinkConfig {
        loss: 0.02,
        ..LinkConfig::new(RTT, LINK_BYTES_PER_S)
    };
    let lab = lab_with("loss", link);
    let port = 5406;
    let flow = iperf3(&lab, port, &[], &["-C", "cubic"], 16);
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 8);
    drop(flow);
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(all_flows_limit(block).starts_with("loss"), "{block}");
    assert!(replay.contains("limit: loss"), "{replay}");
}

#[test]
fn the_first_seconds_of_a_flow_are_ramping_up_not_a_limit() {
    require_root();
    let lab = lab("ramp");
    let port = 5407;
    let far = lab.addr(Side::Far).to_string();
    let _server = ChildGuard(
        lab.command(Side::Far, "iperf3")
            .args(["-s", "-1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s"),
    );
    // Quarter-second samples: slow start to the 4 MB BDP of this link
    // takes ~8 round trips, well under one second.
    let dir = TempDir::new("kernel-verdict-ramp");
    let file = dir.0.join("observe.jsonl").display().to_string();
    let mut observe = ChildGuard(
        lab.command(Side::Near, xdr_ship_bin())
            .args([
                "observe",
                "--port",
                &port.to_string(),
                "--interval",
                "250ms",
            ])
            .args(["--count", "32", "--window", "2s", "--record", &file])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start observe"),
    );
    let (tx, rx) = mpsc::channel();
    let out = observe.0.stdout.take().expect("observe's stdout");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The client starts once observe samples (its first table is out).
    let mut live = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live.contains("source:") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("observe printed no table");
        live.push_str(&line);
        live.push('\n');
    }
    let client = iperf3_client(&lab, &far, port, &[], 8);
    let deadline = Instant::now() + Duration::from_secs(40);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        live.push_str(&line);
        live.push('\n');
    }
    reader.join().expect("reader");
    drop((client, observe));
    let (ok, replay, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["replay", &file, "--text", "--window", "2s"]),
        Duration::from_secs(30),
    );
    lab.down().expect("teardown");
    assert!(ok, "replay failed: {err}");
    let limits: Vec<String> = live
        .split("verdict (the flows that carried data")
        .skip(1)
        .map(|b| all_flows_limit(b).chars().take(60).collect())
        .collect();
    println!("observe's verdicts, four a second:\n{}", limits.join("\n"));
    println!("replay:\n{replay}");
    let first = limits
        .iter()
        .position(|l| !l.starts_with("idle"))
        .unwrap_or_else(|| panic!("the flow never showed:\n{live}"));
    assert!(
        limits[first].starts_with("ramping up (")
            && limits[first].contains("(slow start / window opening)"),
        "the flow's first verdict: {limits:?}"
    );
    let last = limits.last().expect("a verdict");
    assert!(
        !last.starts_with("ramping up"),
        "once ramped, a steady limit: {limits:?}"
    );
    assert!(replay.contains("ramping up"), "{replay}");
}

/// `redis-server` with `args` in `dir`, quiet, no persistence.
fn redis_server(lab: &Lab, side: Side, port: u16, dir: &TempDir, args: &[&str]) -> ChildGuard {
    ChildGuard(
        lab.command(side, "redis-server")
            .args(["--port", &port.to_string(), "--bind", "0.0.0.0"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (cargo xtask setup installs it)"),
    )
}

#[test]
fn redis_replication_across_the_link_gets_a_verdict() {
    require_root();
    let lab = lab("redis");
    let port = 6390;
    let (near_dir, far_dir) = (TempDir::new("kv-primary"), TempDir::new("kv-replica"));
    let near = lab.addr(Side::Near).to_string();
    let primary = redis_server(&lab, Side::Near, port, &near_dir, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let port_arg = port.to_string();
    let replica = redis_server(
        &lab,
        Side::Far,
        port + 1,
        &far_dir,
        &["--replicaof", &near, &port_arg],
    );
    std::thread::sleep(Duration::from_secs(1));
    // Writes to the primary on its own side; the replication stream is
    // what crosses the link.
    let bench = ChildGuard(
        lab.command(Side::Near, "redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port_arg, "-t", "set", "-q"])
            .args(["-n", "5000000", "-d", "512", "-P", "16", "-r", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-benchmark"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (live, replay) = observe_and_replay(&lab, port, 6);
    drop((bench, replica, primary));
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    let limit = all_flows_limit(block);
    assert!(
        !limit.starts_with("idle"),
        "the stream carried data: {block}"
    );
    assert!(live.contains("redis-server/"), "names the process: {live}");
    assert!(replay.contains("limit: "), "{replay}");
}
