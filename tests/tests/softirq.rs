//! The softirq programs, loaded for real, against the kernel's own counters;
//! and the `softirqs` command with and without eBPF.
use std::time::{Duration, Instant};

use xdr_common::{SOFTIRQ_NAMES, SOFTIRQ_NET_RX};
use xdr_ship::probe::{ebpf::KernelPrograms, procfs};
use xdr_tests::{loopback_traffic, require_root, run_bounded, run_xdr_ship, xdr_ship_bin, TempDir};

fn online_cpus() -> usize {
    procfs::read_softirqs().expect("read /proc/softirqs").len()
}

#[test]
fn ebpf_net_rx_time_grows_under_loopback_traffic_and_matches_proc_softirqs() {
    require_root();
    let progs = KernelPrograms::load().expect("load the real kernel object");

    let ebpf_before = progs.softirq_stats().expect("read eBPF map");
    let proc_before = procfs::read_softirqs().expect("read /proc/softirqs");
    let t0 = Instant::now();
    let moved = loopback_traffic(1 << 30, Duration::from_secs(20));
    let wall = t0.elapsed();
    let proc_after = procfs::read_softirqs().expect("read /proc/softirqs");
    let ebpf_after = progs.softirq_stats().expect("read eBPF map");
    assert!(moved >= 256 << 20, "loopback moved only {moved} bytes");

    let mut ebpf_runs = 0u64;
    let mut ebpf_ns = 0u64;
    let mut cpus_with_time = 0;
    for (a, b) in ebpf_after.iter().zip(&ebpf_before) {
        assert_eq!(a.cpu, b.cpu);
        let ns = a.vectors[SOFTIRQ_NET_RX].time_ns - b.vectors[SOFTIRQ_NET_RX].time_ns;
        ebpf_runs += a.vectors[SOFTIRQ_NET_RX].count - b.vectors[SOFTIRQ_NET_RX].count;
        ebpf_ns += ns;
        cpus_with_time += usize::from(ns > 0);
        println!(
            "cpu{}: NET_RX +{} runs, +{:.2} ms (eBPF)",
            a.cpu,
            a.vectors[SOFTIRQ_NET_RX].count - b.vectors[SOFTIRQ_NET_RX].count,
            ns as f64 / 1e6
        );
    }
    let proc_runs: u64 = proc_after
        .iter()
        .zip(&proc_before)
        .map(|(a, b)| a.runs[SOFTIRQ_NET_RX] - b.runs[SOFTIRQ_NET_RX])
        .sum();
    let ratio = ebpf_runs as f64 / proc_runs.max(1) as f64;
    println!(
        "{} over {:.0} MB of loopback TCP in {:.2} s: eBPF runs +{ebpf_runs}, \
         /proc/softirqs runs +{proc_runs} (ratio {ratio:.3}); eBPF time +{:.2} ms on {cpus_with_time} CPU(s)",
        SOFTIRQ_NAMES[SOFTIRQ_NET_RX],
        moved as f64 / 1e6,
        wall.as_secs_f64(),
        ebpf_ns as f64 / 1e6,
    );

    assert!(cpus_with_time >= 1, "NET_RX time grew on no CPU");
    assert!(
        proc_runs > 100,
        "/proc/softirqs saw only {proc_runs} NET_RX runs"
    );
    assert!(
        (0.67..=1.5).contains(&ratio),
        "eBPF counted {ebpf_runs} NET_RX runs, /proc/softirqs {proc_runs}"
    );
    let cpu_budget_ns = wall.as_nanos() as u64 * online_cpus() as u64;
    assert!(
        ebpf_ns < cpu_budget_ns,
        "NET_RX time {ebpf_ns} ns exceeds all CPU time {cpu_budget_ns} ns"
    );
}

/// The data rows of a `softirqs` table: lines that start with a CPU number.
fn cpu_rows(sample: &str) -> Vec<&str> {
    sample
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .collect()
}

#[test]
fn softirqs_command_prints_three_samples_with_one_row_per_cpu_from_ebpf() {
    require_root();
    let (ok, out, err) = run_xdr_ship(
        &["softirqs", "--count", "3", "--interval", "300ms"],
        Duration::from_secs(30),
    );
    assert!(ok, "softirqs failed: {err}");
    println!("{out}");
    let samples: Vec<&str> = out.split("source: ").skip(1).collect();
    assert_eq!(samples.len(), 3, "expected three samples:\n{out}");
    for sample in samples {
        assert!(sample.starts_with("eBPF\n"), "not from eBPF:\n{sample}");
        assert_eq!(cpu_rows(sample).len(), online_cpus(), "{sample}");
        assert!(
            sample.contains("NET_RX") && sample.contains("total"),
            "{sample}"
        );
    }
}

#[test]
fn softirqs_command_json_names_its_source_and_has_every_vector() {
    require_root();
    let (ok, out, err) = run_xdr_ship(
        &["softirqs", "--count", "1", "--interval", "200ms", "--json"],
        Duration::from_secs(30),
    );
    assert!(ok, "softirqs failed: {err}");
    let line = out.lines().next().expect("one JSON line");
    assert!(line.contains(r#""source":"ebpf""#), "{line}");
    for name in SOFTIRQ_NAMES {
        assert!(
            line.contains(&format!(r#""name":"{name}""#)),
            "{name} missing: {line}"
        );
    }
    assert!(line.contains(r#""time_pct":"#), "{line}");
}

#[test]
fn softirqs_command_with_no_ebpf_reads_proc_and_says_so() {
    require_root();
    let (ok, out, err) = run_xdr_ship(
        &[
            "softirqs",
            "--count",
            "2",
            "--interval",
            "200ms",
            "--no-ebpf",
        ],
        Duration::from_secs(30),
    );
    assert!(ok, "softirqs failed: {err}");
    let samples: Vec<&str> = out.split("source: ").skip(1).collect();
    assert_eq!(samples.len(), 2, "{out}");
    for sample in samples {
        assert!(sample.starts_with("/proc (--no-ebpf given)"), "{sample}");
        assert!(sample.contains("time per vector needs eBPF"), "{sample}");
        assert_eq!(cpu_rows(sample).len(), online_cpus(), "{sample}");
    }
}

#[test]
fn softirqs_command_as_an_unprivileged_user_falls_back_to_proc_and_says_why() {
    require_root();
    // A copy the unprivileged user can reach whatever the checkout's permissions.
    let dir = TempDir::new("unpriv");
    let bin = dir.0.join("xdr-ship");
    std::fs::copy(xdr_ship_bin(), &bin).expect("copy the binary");
    let (ok, out, err) = run_bounded(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["softirqs", "--count", "1", "--interval", "200ms"]),
        Duration::from_secs(30),
    );
    assert!(ok, "softirqs as nobody failed: {err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("source: /proc (eBPF unavailable: "),
        "unexpected first line: {first}"
    );
    assert!(first.contains("needs root"), "{first}");
    assert_eq!(cpu_rows(&out).len(), online_cpus(), "{out}");
}

#[test]
fn softirqs_command_rejects_a_bad_interval_naming_the_flag_and_the_form() {
    let (ok, _out, err) =
        run_xdr_ship(&["softirqs", "--interval", "soon"], Duration::from_secs(10));
    assert!(!ok);
    assert!(err.contains("--interval"), "{err}");
    assert!(err.contains("such as 1s, 250ms"), "{err}");
}
