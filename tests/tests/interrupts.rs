//! The "interrupts" verdict on a real run: the receiving namespace's
//! receive work steered to CPU 0 with RPS behind a 3,000-rule firewall
//! (`xdr_ship::lab::steer`), the receiver, the delay line and the shipper
//! kept on the other CPU, and a 64-byte UDP flood into the receiving
//! namespace from the other CPU. With the flood, CPU 0 drowns in NET_RX
//! and the shipper must say so, naming CPU 0 and the RPS remedy; with the
//! same steering and firewall but no flood, it must not.
//!
//! The assertions are about the class and the CPU named, never about
//! figures: the machine is shared, and the NET_RX share is printed, not
//! asserted. Root only (namespaces, nftables, eBPF); every lab, process,
//! table and mask is undone even when a test fails.
use std::{
    io::{BufRead, BufReader},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_ship::lab::{
    steer::{self, FloodConfig, SteerConfig, Steering},
    Lab, LabOptions, LinkConfig, Side,
};
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard};

const RTT: Duration = Duration::from_millis(20);
const RATE: u64 = 5_000_000;
/// The CPU every received packet of the far side is steered to.
const STEERED_CPU: usize = 0;
/// The flood's rate: measured here, 20K/s kept CPU 0 at ~12% softirq
/// behind 3,000 rules and 50K/s at 100%, while the sender's CPU stayed
/// near 0% softirq (200K/s from the start drops even the SYNs).
const FLOOD_PACKETS_PER_S: u64 = 50_000;
/// How long the shipper runs; the verdict is read at `DEADLINE_S`.
const RUN_S: u64 = 12;
const DEADLINE_S: f64 = 10.5;

/// What one run showed.
struct Run {
    /// The shipper's verdict (JSON) at the deadline.
    verdict: Value,
    /// Every snapshot's limit, for failure messages.
    history: String,
    /// CPU `STEERED_CPU`'s softirq share of wall time over the run, from
    /// `/proc/stat`.
    softirq_share: f64,
}

/// Ships across a 20 ms / 5 MB/s lab whose far side is steered to
/// `STEERED_CPU`, with or without the flood.
fn steered_run(tag: &str, flood: bool) -> Run {
    require_root();
    // Everything started from here (the delay line, recv, ship) inherits
    // the CPU set: nothing but the steered receive work runs on CPU 0.
    let _pinned = steer::pin_current_thread(&steer::cpus_except(STEERED_CPU))
        .expect("pin the test thread off the steered CPU");
    let name = format!("irq{}-{tag}", std::process::id());
    let lab = Lab::up(&name, LinkConfig::new(RTT, RATE), LabOptions::default()).expect("lab up");
    // Declared after the lab: dropped (undone) before it.
    let mut steering = Steering::apply(lab.namespace(Side::Far), SteerConfig::to_cpu(STEERED_CPU))
        .expect("steer the far side to one CPU behind the firewall");
    let far = lab.addr(Side::Far);
    let _recv = ChildGuard(
        lab.command(Side::Far, xdr_ship_bin())
            .args([
                "recv",
                "--memory",
                "--insecure",
                "--listen",
                &format!("{far}:3000"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start recv in the far namespace"),
    );
    let mut ship = ChildGuard(
        lab.command(Side::Near, xdr_ship_bin())
            .args([
                "ship",
                "--to",
                &format!("{far}:3000"),
                "--json",
                "--duration",
                &format!("{RUN_S}s"),
                "--verdict-window",
                "5s",
                "--generate",
                "max,1000,1000000",
                "--connections",
                "8",
                "--window",
                "512",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ship in the near namespace"),
    );
    let lines = json_lines(ship.0.stdout.take().expect("ship's stdout"));
    let mut out = Vec::new();
    // The flood starts once records flow: the wall is met under load, by
    // connections that are up (a flood from the start drops the SYNs).
    let deadline = Instant::now() + Duration::from_secs(RUN_S + 60);
    while let Ok(v) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let flowing = v["throughput"].as_f64().is_some_and(|t| t > 0.0);
        out.push(v);
        if flowing {
            break;
        }
    }
    if flood {
        steering
            .start_flood(FloodConfig {
                sender_cpu: steer::cpus_except(STEERED_CPU)[0],
                packets_per_s: FLOOD_PACKETS_PER_S,
                duration: Duration::from_secs(RUN_S + 20),
            })
            .expect("start the flood");
    }
    let before = proc_stat_softirq(STEERED_CPU);
    while let Ok(v) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(v);
    }
    let after = proc_stat_softirq(STEERED_CPU);
    let stats = steering.stop_flood();
    let status = ship.0.wait().expect("wait for ship");
    assert!(status.success(), "ship failed: {status}");
    let softirq_share = (after.0 - before.0) / (after.1 - before.1).max(1.0);
    let snaps: Vec<Value> = out
        .into_iter()
        .filter(|v| v.get("throughput").is_some())
        .collect();
    let history: Vec<String> = snaps
        .iter()
        .map(|s| {
            format!(
                "{:.0}s {:.0} rec/s {}",
                s["elapsed_s"].as_f64().unwrap_or(-1.0),
                s["throughput"].as_f64().unwrap_or(-1.0),
                s["verdict"]["limit"].as_str().unwrap_or("-")
            )
        })
        .collect();
    let history = format!("{history:?}");
    let verdict = snaps
        .iter()
        .filter(|s| s["elapsed_s"].as_f64().is_some_and(|t| t <= DEADLINE_S))
        .rfind(|s| !s["verdict"].is_null())
        .unwrap_or_else(|| panic!("no verdict by {DEADLINE_S} s: {history}"))["verdict"]
        .clone();
    println!(
        "{tag}: flood {stats:?}; CPU {STEERED_CPU} softirq {:.0}% of wall time (/proc/stat); \
         load {}\nhistory: {history}\nverdict: {}",
        softirq_share * 100.0,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        printed(&verdict)
    );
    Run {
        verdict,
        history,
        softirq_share,
    }
}

/// The verdict as `ship` prints it: `limit: L (share) — headline → remedy`.
fn printed(v: &Value) -> String {
    format!(
        "limit: {} — {} → {}",
        v["limit"].as_str().unwrap_or("-"),
        v["headline"].as_str().unwrap_or("-"),
        v["remedy"].as_str().unwrap_or("-")
    )
}

/// The JSON lines of `stdout`, read on another thread; the channel closes
/// when the process ends.
fn json_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    rx
}

/// The RPS mask that spreads receive work over every CPU.
fn all_cpus_mask() -> String {
    steer::cpu_mask(&(0..steer::online_cpus()).collect::<Vec<_>>())
}

/// (softirq ticks, all ticks) of `cpu` in `/proc/stat`.
fn proc_stat_softirq(cpu: usize) -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let label = format!("cpu{cpu}");
    let fields: Vec<f64> = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))
        .expect("the CPU's line in /proc/stat")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    (fields[6], fields.iter().take(8).sum())
}

#[test]
fn a_flood_on_the_steered_cpu_is_judged_interrupts_on_cpu_0_with_the_rps_remedy() {
    let run = steered_run("flood", true);
    let v = &run.verdict;
    let context = format!("{}\nhistory: {}", printed(v), run.history);
    assert_eq!(v["limit"], "interrupts", "{context}");
    let headline = v["headline"].as_str().unwrap_or_default();
    assert!(
        headline.starts_with(&format!("CPU {STEERED_CPU} in softirq")),
        "the headline names another CPU: {context}"
    );
    let remedy = v["remedy"].as_str().unwrap_or_default();
    assert!(
        remedy.contains(&format!("(CPU {STEERED_CPU})"))
            && remedy.contains(&format!(
                "for q in /sys/class/net/{}/queues/rx-*; do echo {} > $q/rps_cpus; done",
                xdr_ship::lab::TUN_NAME,
                all_cpus_mask()
            )),
        "the remedy lacks the RPS line: {context}"
    );
    assert!(
        run.softirq_share > 0.0,
        "/proc/stat saw no softirq time on CPU {STEERED_CPU}"
    );
}

#[test]
fn the_same_steering_without_the_flood_is_not_judged_interrupts() {
    let run = steered_run("quiet", false);
    let v = &run.verdict;
    assert_ne!(
        v["limit"],
        "interrupts",
        "{}\nhistory: {}",
        printed(v),
        run.history
    );
    assert!(
        !run.history.contains("interrupts"),
        "some snapshot said interrupts: {}",
        run.history
    );
}
