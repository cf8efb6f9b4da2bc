//! The auto window on a real link whose capacity changes mid-run: the
//! shipper, with its defaults, must bring its window down when the link
//! slows and back up when it recovers, within seconds — read from its own
//! `--json` snapshots (per connection: `window`, `inflight`), as an
//! operator's scraper would.
//!
//! Why 20 → 5 → 20 MB/s at 60 ms: a 4× change is far outside the noise of
//! a shared 2-core machine, and 20 MB/s leaves both ends and the delay line
//! room to spare, so the link, not the box, sets the rate.
//!
//! Root only (namespaces). The lab, the receiver and the shipper are removed
//! even when the test fails.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_ship::lab::{Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard};

const RTT: Duration = Duration::from_millis(60);
const FAST: u64 = 20_000_000;
const SLOW: u64 = 5_000_000;
/// When the link slows, and when it recovers (from the shipper's start).
const SLOW_AT_S: f64 = 10.0;
const FAST_AGAIN_AT_S: f64 = 20.0;
const RUN_S: u64 = 30;
/// "Within seconds": the window is judged this long after each change.
const SETTLE_S: f64 = 5.0;
/// The slow link's settled window: the mean of its last seconds.
const SETTLED_SLOW_S: f64 = 3.0;
/// Back at 4× the rate, the window is at least this multiple of the slow
/// link's settled window (Little's law asks for ~4× at the same RTT).
const RECOVERED_RATIO: f64 = 2.0;

/// One snapshot: (elapsed s, window of all connections, records in flight, bytes/s).
type Point = (f64, f64, f64, f64);

fn point(v: &Value) -> Option<Point> {
    let conns = v["connections"].as_array()?;
    let window: f64 = conns.iter().filter_map(|c| c["window"].as_f64()).sum();
    Some((
        v["elapsed_s"].as_f64()?,
        window,
        v["inflight"].as_f64()?,
        v["bytes_per_s"].as_f64()?,
    ))
}

fn mean_window(points: &[Point], from_s: f64, to_s: f64) -> f64 {
    let w: Vec<f64> = points
        .iter()
        .filter(|p| p.0 >= from_s && p.0 < to_s)
        .map(|p| p.1)
        .collect();
    assert!(!w.is_empty(), "no snapshot between {from_s} and {to_s} s");
    w.iter().sum::<f64>() / w.len() as f64
}

#[test]
fn the_auto_window_follows_the_link_down_and_back_up() {
    require_root();
    let name = format!("t{}-window", std::process::id());
    let lab = Lab::up(&name, LinkConfig::new(RTT, FAST), LabOptions::default()).expect("lab up");
    let far = lab.addr(Side::Far);
    let _recv = ChildGuard(
        lab.command(Side::Far, xdr_ship_bin())
            .args(["recv", "--memory", "--insecure", "--listen"])
            .arg(format!("{far}:3000"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recv in the far namespace"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut ship = ChildGuard(
        lab.command(Side::Near, xdr_ship_bin())
            .args(["ship", "--json", "--generate", "max,1000,100000000"])
            .arg("--to")
            .arg(format!("{far}:3000"))
            .arg("--duration")
            .arg(format!("{RUN_S}s"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ship in the near namespace"),
    );
    let started = Instant::now();
    let out = ship.0.stdout.take().expect("ship's stdout");
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    for (at_s, rate) in [(SLOW_AT_S, SLOW), (FAST_AGAIN_AT_S, FAST)] {
        let at = Duration::from_secs_f64(at_s);
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        lab.set_rate(rate);
    }
    let deadline = started + Duration::from_secs(RUN_S + 60);
    while ship.0.try_wait().expect("wait for ship").is_none() {
        assert!(Instant::now() < deadline, "ship outlived its deadline");
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().expect("reader thread");
    let points: Vec<Point> = rx.try_iter().filter_map(|v| point(&v)).collect();
    let history: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:.0}s w {:.0} in {:.0} {:.1} MB/s",
                p.0,
                p.1,
                p.2,
                p.3 / 1e6
            )
        })
        .collect();
    println!("{history:#?}");

    let fast = mean_window(&points, SLOW_AT_S - SETTLE_S, SLOW_AT_S);
    let slow = mean_window(&points, SLOW_AT_S + SETTLE_S, FAST_AGAIN_AT_S);
    let again = mean_window(&points, FAST_AGAIN_AT_S + SETTLE_S, RUN_S as f64);
    // A quarter of the rate needs a quarter of the window; half is the
    // bound a window that follows it meets, one that holds on does not.
    assert!(
        slow <= 0.5 * fast,
        "window {slow:.0} at 5 MB/s vs {fast:.0} at 20 MB/s: {history:?}"
    );
    // Back up: four times the rate needs a window well above the one the
    // slow link settled at (its last seconds). Compared with that, not with
    // the first fast phase, whose window still held startup's queue: once
    // it drained, the same rate needs less.
    let settled_slow = mean_window(&points, FAST_AGAIN_AT_S - SETTLED_SLOW_S, FAST_AGAIN_AT_S);
    assert!(
        again >= RECOVERED_RATIO * settled_slow,
        "window {again:.0} back at 20 MB/s vs {settled_slow:.0} settled at 5 MB/s: {history:?}"
    );
    // And the window is what carries the rate: back at 20 MB/s, the link fills again.
    let rate_again: Vec<f64> = points
        .iter()
        .filter(|p| p.0 >= FAST_AGAIN_AT_S + SETTLE_S)
        .map(|p| p.3)
        .collect();
    let best = rate_again.iter().copied().fold(0.0, f64::max);
    assert!(
        best >= 0.6 * FAST as f64,
        "at most {:.1} MB/s back at 20 MB/s: {history:?}",
        best / 1e6
    );
}
