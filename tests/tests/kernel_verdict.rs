//! The kernel-only verdict on real processes we did not write (iperf3),
//! across the WAN lab: `observe` prints the binding limit live, and
//! `replay` of its recording agrees. Root; namespaces this test creates,
//! each lab with a unique name; every process bounded and killed on drop.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use xdr_ship::lab::{Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard, TempDir};

const RTT: Duration = Duration::from_millis(80);
const LINK_BYTES_PER_S: u64 = 50_000_000;

/// A lab named for this test and process.
fn lab(tag: &str) -> Lab {
    let name = format!("kv{}-{tag}", std::process::id());
    Lab::up(
        &name,
        LinkConfig::new(RTT, LINK_BYTES_PER_S),
        LabOptions::default(),
    )
    .expect("lab up")
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
    let c = ChildGuard(
        lab.command(Side::Near, "iperf3")
            .args(["-c", &far, "-p", &port.to_string(), "-t", &secs.to_string()])
            .args(client)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -c"),
    );
    (s, c)
}

/// `observe` on the near side for `count` one-second samples, recording
/// to a file; returns its text output and `replay --text` of the recording.
fn observe_and_replay(lab: &Lab, port: u16, count: u32) -> (String, String) {
    let dir = TempDir::new("kernel-verdict");
    let file = dir.0.join("observe.jsonl").display().to_string();
    let (ok, live, err) = run_bounded(
        lab.command(Side::Near, xdr_ship_bin()).args([
            "observe",
            "--port",
            &port.to_string(),
            "--interval",
            "1s",
            "--count",
            &count.to_string(),
            "--record",
            &file,
        ]),
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

/// The limit named on the "all flows:" line of a verdict block.
fn all_flows_limit(block: &str) -> String {
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("all flows: limit: "))
        .unwrap_or_else(|| panic!("no all-flows line:\n{block}"))
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
    lab.down().expect("teardown");
    let block = last_verdict(&live);
    println!("observe printed:\n{block}\nreplay:\n{replay}");
    assert!(all_flows_limit(block).starts_with("bandwidth"), "{block}");
    assert!(replay.contains("limit: bandwidth"), "{replay}");
}
