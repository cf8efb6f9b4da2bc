//! Ground truth beside the verdict: what `observe --json` says of a live
//! flow is what `ss -tni` says of the same socket. They read the same
//! kernel counters, so they must agree within a sampling interval. And
//! the eBPF softirq time is bounded by what `/proc/stat` charges.
//!
//! Why bounds and not equality for softirq: this kernel has
//! `CONFIG_IRQ_TIME_ACCOUNTING` off (HZ 250, NOHZ idle), so `/proc/stat`'s
//! softirq column is tick sampling: a tick charges its whole 4 ms to the
//! context it interrupted, and the NET_RX work the tick's own irq_exit
//! runs (pending RPS backlog) goes to whatever ran before. The eBPF figure
//! is exact (entry/exit timestamps of every softirq). Measured here at
//! load 10-13 under the steered flood: eBPF 68.5%, softirq ticks 53.9% of
//! wall time, CPU 0 never idle, 0.7% of wall time in no column. On an idle
//! box a CPU woken by each RPS IPI runs its burst with the tick stopped,
//! so no tick sees it at all; that is the likely cause of CI's 79.8%
//! (eBPF) against 27.8% (the old test's softirq ticks over the columns'
//! sum), not re-measured on a quiet box yet. So: softirq ticks are a lower
//! bound of the eBPF time, and the CPU's non-idle time (NOHZ measures idle
//! exactly) is an upper bound.
//!
//! The flow is iperf3 across a 20 ms / 5 MB/s lab link, rate-limited to
//! 2 MB/s so its window and RTT stay steady; the softirq load is a 64-byte
//! flood steered to CPU 0 (`xdr_ship::lab::steer`). Root only; everything
//! is removed even when a test fails.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_ship::lab::{
    steer::{self, FloodConfig, SteerConfig, Steering},
    Lab, LabOptions, LinkConfig, Side,
};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard};

const RTT: Duration = Duration::from_millis(20);
const RATE: u64 = 5_000_000;
const IPERF_PORT: u16 = 5201;
/// observe's sampling interval: the tolerance of cumulative timers.
const INTERVAL: Duration = Duration::from_secs(1);
/// Slack beyond one interval for `ss` running after `observe` ends.
const SLACK: Duration = Duration::from_secs(1);
/// Smoothed RTTs read a moment apart differ by less than this share.
const RTT_TOLERANCE: f64 = 0.25;
/// Congestion windows read a moment apart on a steady flow: within 2x.
const CWND_TOLERANCE: f64 = 2.0;
/// Percentage points either bound of the softirq share may be off by:
/// `/proc/stat` counts in 10 ms USER_HZ units sampled by 4 ms ticks, and
/// its window (around the whole `observe` run) is a few seconds longer
/// than the eBPF intervals; the flood is steady, so 10 points covers both.
const SOFTIRQ_BOUND_PP: f64 = 10.0;

fn lab(tag: &str) -> Lab {
    let name = format!("gt{}-{tag}", std::process::id());
    Lab::up(&name, LinkConfig::new(RTT, RATE), LabOptions::default()).expect("lab up")
}

/// The last report of `observe --json ARGS` run in the near namespace.
fn observe(lab: &Lab, args: &[&str]) -> Vec<Value> {
    let (ok, out, err) = run_bounded(
        lab.command(Side::Near, xdr_ship_bin())
            .args(["observe", "--json", "--interval", "1s"])
            .args(args),
        Duration::from_secs(30),
    );
    assert!(ok, "observe failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// One field `name:` of an `ss -i` line (`cwnd:12`, `rtt:20.3/0.5`,
/// `busy:1234ms`, `retrans:0/3`): the text after the colon.
fn ss_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix(':'))
}

fn ms(v: Option<&str>) -> u64 {
    v.and_then(|s| s.split('(').next())
        .and_then(|s| s.strip_suffix("ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn observes_tcp_half_agrees_with_ss_for_the_same_socket() {
    require_root();
    let lab = lab("ss");
    let far = lab.addr(Side::Far);
    let _server = ChildGuard(
        lab.command(Side::Far, "iperf3")
            .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s (cargo xtask setup installs it)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let _client = ChildGuard(
        lab.command(Side::Near, "iperf3")
            .args(["-c", &far.to_string(), "-p", &IPERF_PORT.to_string()])
            .args(["-b", "16M", "-t", "12"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -c"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let reports = observe(&lab, &["--port", &IPERF_PORT.to_string(), "--count", "2"]);
    let (ok, ss, err) = run_bounded(
        lab.command(Side::Near, "ss").args([
            "-tni",
            "state",
            "established",
            "dport",
            &format!("= :{IPERF_PORT}"),
        ]),
        Duration::from_secs(10),
    );
    assert!(ok, "ss failed: {err}");
    let report = reports.last().expect("one report");
    let conn = report["conns"]
        .as_array()
        .expect("conns")
        .iter()
        .filter(|c| c["ports"][1] == IPERF_PORT)
        .max_by_key(|c| c["tcp"]["bytes_acked"].as_u64().unwrap_or(0))
        .cloned()
        .expect("the iperf3 data connection");
    let local = conn["local"].as_str().expect("local address").to_owned();
    // `ss -n` prints the socket's line, then its `-i` line.
    let lines: Vec<&str> = ss.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().any(|f| f == local))
        .unwrap_or_else(|| panic!("ss does not show {local}:\n{ss}"));
    let info = lines.get(at + 1).copied().unwrap_or_default();
    println!("observe: {conn}\nss: {info}");
    let (tcp, kernel) = (&conn["tcp"], &conn["kernel"]);

    let ss_cwnd: f64 = ss_field(info, "cwnd")
        .and_then(|v| v.parse().ok())
        .expect("ss cwnd");
    for (who, cwnd) in [
        ("TCP_INFO", &tcp["cwnd_segments"]),
        ("eBPF", &kernel["cwnd_segments"]),
    ] {
        let cwnd = cwnd
            .as_f64()
            .unwrap_or_else(|| panic!("{who} cwnd missing: {conn}"));
        assert!(
            cwnd / ss_cwnd <= CWND_TOLERANCE && ss_cwnd / cwnd <= CWND_TOLERANCE,
            "{who} cwnd {cwnd} vs ss {ss_cwnd}"
        );
    }
    let ss_rtt_ms: f64 = ss_field(info, "rtt")
        .and_then(|v| v.split('/').next()?.parse().ok())
        .expect("ss rtt");
    for (who, srtt) in [("TCP_INFO", &tcp["srtt_us"]), ("eBPF", &kernel["srtt_us"])] {
        let srtt_ms = srtt
            .as_f64()
            .unwrap_or_else(|| panic!("{who} srtt missing"))
            / 1e3;
        assert!(
            (srtt_ms - ss_rtt_ms).abs() <= RTT_TOLERANCE * ss_rtt_ms,
            "{who} srtt {srtt_ms} ms vs ss {ss_rtt_ms} ms"
        );
    }
    // Cumulative timers: ss reads them after observe, at most an interval
    // (and the time ss takes to start) later.
    let bound_us = (INTERVAL + SLACK).as_micros() as u64;
    for (ss_name, ours) in [
        ("busy", "busy_us"),
        ("rwnd_limited", "rwnd_limited_us"),
        ("sndbuf_limited", "sndbuf_limited_us"),
    ] {
        let ss_us = ms(ss_field(info, ss_name)) * 1000;
        let ours_us = tcp[ours]
            .as_u64()
            .unwrap_or_else(|| panic!("{ours} missing"));
        // ss rounds down to whole milliseconds.
        assert!(
            ss_us + 1000 >= ours_us && ss_us <= ours_us + bound_us,
            "{ss_name}: ss {ss_us} us vs observe {ours_us} us"
        );
    }
    let ss_retrans: u64 = ss_field(info, "retrans")
        .and_then(|v| v.split('/').nth(1)?.parse().ok())
        .unwrap_or(0);
    let ours = tcp["total_retrans"].as_u64().expect("total_retrans");
    assert!(
        ss_retrans >= ours,
        "retransmits: ss {ss_retrans} < observe {ours}"
    );
}

/// One CPU's `/proc/stat` line: (softirq, idle + iowait, all columns) in
/// USER_HZ ticks, read at an instant.
fn proc_stat(cpu: usize) -> (f64, f64, f64, Instant) {
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
    (
        fields[6],
        fields[3] + fields[4],
        fields.iter().take(8).sum(),
        Instant::now(),
    )
}

#[test]
fn ebpf_softirq_time_is_within_proc_stats_bounds() {
    require_root();
    const CPU: usize = 0;
    let _pinned = steer::pin_current_thread(&steer::cpus_except(CPU)).expect("pin off CPU 0");
    let lab = lab("si");
    let mut steering = Steering::apply(lab.namespace(Side::Far), SteerConfig::to_cpu(CPU))
        .expect("steer the far side");
    steering
        .start_flood(FloodConfig {
            sender_cpu: steer::cpus_except(CPU)[0],
            packets_per_s: 30_000,
            duration: Duration::from_secs(25),
        })
        .expect("start the flood");
    std::thread::sleep(Duration::from_millis(500));
    let before = proc_stat(CPU);
    let reports = observe(&lab, &["--count", "4"]);
    let after = proc_stat(CPU);
    steering.stop_flood();
    // SAFETY: sysconf has no preconditions.
    let user_hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let wall_ticks = after.3.duration_since(before.3).as_secs_f64() * user_hz;
    let share = |d: f64| d / wall_ticks.max(1.0) * 100.0;
    let ticks_si = share(after.0 - before.0);
    let not_idle = 100.0 - share(after.1 - before.1);
    let unaccounted = 100.0 - share(after.2 - before.2);
    let ebpf: Vec<f64> = reports
        .iter()
        .filter(|r| r["softirq"]["source"] == "ebpf")
        .filter_map(|r| {
            r["softirq"]["cpus"]
                .as_array()?
                .iter()
                .find(|c| c["cpu"] == CPU)?["total_pct"]
                .as_f64()
        })
        .collect();
    assert!(!ebpf.is_empty(), "no eBPF softirq report: {reports:?}");
    let ebpf_pct = ebpf.iter().sum::<f64>() / ebpf.len() as f64;
    println!(
        "CPU {CPU} softirq: eBPF {ebpf_pct:.1}% (per interval {ebpf:?}); /proc/stat of wall time: \
         softirq ticks {ticks_si:.1}%, not idle {not_idle:.1}%, in no column {unaccounted:.1}%; \
         load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert!(
        ticks_si <= ebpf_pct + SOFTIRQ_BOUND_PP,
        "ticks saw softirq {ticks_si:.1}% > eBPF {ebpf_pct:.1}%"
    );
    assert!(
        ebpf_pct <= not_idle + SOFTIRQ_BOUND_PP,
        "eBPF {ebpf_pct:.1}% > the CPU's non-idle time {not_idle:.1}%"
    );
}
