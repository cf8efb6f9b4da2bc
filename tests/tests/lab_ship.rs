//! The shipper across the WAN lab at reduced scale (40 ms RTT, 20 MB/s):
//! stop-and-wait is bound by the round trip, pipelining by the line.
//! Root only (namespaces); every lab, process and namespace is removed even
//! when a test fails.
use std::time::Duration;

use serde_json::Value;
use xdr_ship::lab::LinkConfig;
use xdr_tests::{require_root, ship_across_lab};

const RTT: Duration = Duration::from_millis(40);
const RATE: u64 = 20_000_000;

/// Brings a 40 ms / 20 MB/s link up and ships across it.
fn ship_across(tag: &str, ship_args: &[&str], secs: u64) -> (Vec<Value>, Value) {
    ship_across_lab(tag, LinkConfig::new(RTT, RATE), ship_args, secs)
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
