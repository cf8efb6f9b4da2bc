//! The shipper across the WAN lab at reduced scale (40 ms RTT, 20 MB/s):
//! stop-and-wait is bound by the round trip, pipelining by the line.
//! Root only (namespaces); every lab, process and namespace is removed even
//! when a test fails.
use std::{process::Stdio, time::Duration};

use serde_json::Value;
use xdr_ship::lab::{Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard};

const RTT: Duration = Duration::from_millis(40);
const RATE: u64 = 20_000_000;

/// Brings a link up, runs `recv --memory` far and `ship ARGS --json` near;
/// returns the shipper's per-second snapshots and its summary.
fn ship_across(tag: &str, ship_args: &[&str], secs: u64) -> (Vec<Value>, Value) {
    let name = format!("t{}-{tag}", std::process::id());
    let lab = Lab::up(&name, LinkConfig::new(RTT, RATE), LabOptions::default()).expect("lab up");
    let far = lab.addr(Side::Far);
    let _recv = ChildGuard(
        lab.command(Side::Far, xdr_ship_bin())
            .args(["recv", "--memory", "--listen", &format!("{far}:3000")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recv in the far namespace"),
    );
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
    let values: Vec<Value> = out
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

/// Median of `key` over the snapshots after the first `skip`.
fn steady_median(snaps: &[Value], key: &str, skip: usize) -> f64 {
    let mut v: Vec<f64> = snaps
        .iter()
        .skip(skip)
        .filter_map(|s| s[key].as_f64())
        .collect();
    assert!(!v.is_empty(), "no steady snapshots");
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn stop_and_wait_across_the_link_delivers_connections_over_rtt() {
    require_root();
    let (snaps, summary) = ship_across(
        "saw",
        &[
            "--stop-and-wait",
            "--connections",
            "10",
            "--generate",
            "max,1000,100000",
        ],
        8,
    );
    let expected = 10.0 / RTT.as_secs_f64();
    let measured = steady_median(&snaps, "throughput", 2);
    println!("stop-and-wait x 10 over {RTT:?}: {measured:.0} records/s, expected {expected:.0}; {summary}");
    assert!(
        (measured / expected - 1.0).abs() <= 0.15,
        "{measured:.0} records/s is not within 15% of {expected:.0}"
    );
    for s in &snaps {
        assert!(
            s["inflight"].as_u64().unwrap() <= 10,
            "more than one in flight per connection: {s}"
        );
    }
}

#[test]
fn pipelined_goodput_reaches_80_percent_of_the_line() {
    require_root();
    let (snaps, summary) = ship_across("pipe", &["--generate", "max,1000,1000000"], 12);
    let goodput = steady_median(&snaps, "bytes_per_s", 5);
    let inflight = steady_median(&snaps, "inflight", 5);
    let throughput = steady_median(&snaps, "throughput", 5);
    println!(
        "pipelined over {RTT:?} at {} MB/s: {:.2} MB/s acknowledged, {throughput:.0} records/s, \
         {inflight:.0} in flight ({:.2} x throughput x RTT); {summary}",
        RATE / 1_000_000,
        goodput / 1e6,
        inflight / (throughput * RTT.as_secs_f64())
    );
    assert!(
        goodput >= 0.8 * RATE as f64,
        "goodput {:.2} MB/s is below 80% of {} MB/s",
        goodput / 1e6,
        RATE / 1_000_000
    );
    assert_eq!(summary["summary"]["counters"]["abandoned"], 0);
}
