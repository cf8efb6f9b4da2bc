//! `cargo xtask bench --probe-only` and the probe-overhead rows of `cargo
//! xtask bench`: what the kernel eyes cost the shipping they watch.
//!
//! Why a module of its own: the rows attach eBPF through an `observe`
//! process and read the programs' own run time from `/proc/PID/fdinfo` and
//! `kernel.bpf_stats_enabled` — machinery none of the throughput rows need.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{median, ship_run_on, Guard, ShipRun};

/// How a probe-overhead run watches the shipping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probes {
    /// Nothing attached.
    Detached,
    /// `observe --port`, `tcp_probe` on the BTF-typed raw tracepoint.
    Raw,
    /// `observe --port` with `XDR_SHIP_TRACEPOINTS=classic`: the classic
    /// tracepoint, to show what the raw one saves.
    Classic,
}

impl Probes {
    fn label(self) -> &'static str {
        match self {
            Self::Detached => "probes detached",
            Self::Raw => "attached, tcp_probe via tp_btf (default)",
            Self::Classic => "attached, tcp_probe via classic tracepoint",
        }
    }
}

/// `observe --port port` running while it lives (with `bpf_stats`
/// switched on for it when asked, and back off when dropped).
struct Observer {
    guard: Guard,
    stats_restore: Option<String>,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl Observer {
    fn start(bin: &Path, port: u16, probes: Probes, stats: bool) -> Result<Self> {
        let stats_restore = stats.then(|| {
            let before = std::fs::read_to_string(BPF_STATS_SYSCTL).unwrap_or_default();
            let _ = std::fs::write(BPF_STATS_SYSCTL, "1");
            before.trim().to_owned()
        });
        let mut cmd = Command::new(bin);
        cmd.args(["observe", "--port", &port.to_string(), "--interval", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if probes == Probes::Classic {
            cmd.env("XDR_SHIP_TRACEPOINTS", "classic");
        }
        let guard = Guard(cmd.spawn().context("starting xdr-ship observe")?);
        // Loaded and attached: its BPF programs show up among its fds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while bpf_progs(guard.0.id()).len() < 5 {
            if Instant::now() > deadline {
                bail!("observe attached no programs within 10 s (eBPF unavailable?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let progs = bpf_progs(guard.0.id());
        let raw = progs.iter().any(|p| p.prog_type == BPF_PROG_TYPE_TRACING);
        if raw != (probes == Probes::Raw) {
            bail!(
                "asked for {:?} but observe attached {} tcp_probe",
                probes,
                if raw { "the raw" } else { "the classic" }
            );
        }
        Ok(Self {
            guard,
            stats_restore,
        })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
        if let Some(before) = &self.stats_restore {
            let _ = std::fs::write(BPF_STATS_SYSCTL, before);
        }
    }
}

/// `BPF_PROG_TYPE_TRACING` (tp_btf); the classic tracepoint programs are
/// `BPF_PROG_TYPE_TRACEPOINT` (5).
const BPF_PROG_TYPE_TRACING: u32 = 26;

/// One BPF program a process holds open, as its fdinfo shows it.
#[derive(Clone, Copy, Debug)]
struct ProgInfo {
    prog_id: u64,
    prog_type: u32,
    /// Counted only while `kernel.bpf_stats_enabled` is 1.
    run_time_ns: u64,
    run_cnt: u64,
}

/// The BPF programs process `pid` holds open, from `/proc/PID/fdinfo`.
fn bpf_progs(pid: u32) -> Vec<ProgInfo> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut out: Vec<ProgInfo> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            let get = |key: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some(ProgInfo {
                prog_id: get("prog_id:")?,
                prog_type: get("prog_type:")? as u32,
                run_time_ns: get("run_time_ns:").unwrap_or(0),
                run_cnt: get("run_cnt:").unwrap_or(0),
            })
        })
        .collect();
    // Links hold programs too: count each program once.
    out.sort_by_key(|p| p.prog_id);
    out.dedup_by_key(|p| p.prog_id);
    out
}

/// Quartiles and extremes of `v` (sorted in place).
fn spread(v: &mut [f64]) -> (f64, f64, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let x = p * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    (q(0.0), q(0.25), q(0.5), q(0.75), q(1.0))
}

/// Loopback shipping with the TCP probes attached (an `observe` process
/// watching the port) against the same with them detached, the raw and the
/// classic `tcp_probe` paths, `rounds` rounds of one run each, the order
/// rotated each round: the cost of the kernel eyes.
///
/// Why pinned: on 2 CPUs the scheduler moving `ship` and `recv` around
/// costs more run-to-run spread than the 2% to resolve; each gets a CPU of
/// its own. Why per-round ratios: the machine is shared, and a neighbour's
/// compile slows a whole round, both runs of a pair alike; the median of
/// the pairs' ratios cancels that drift where the ratio of medians cannot.
/// Why CPU per record beside throughput: it does not depend on how much of
/// a CPU the neighbours left us, only on what one record costs.
pub(crate) fn probe_overhead(bin: &Path, rounds: usize, secs: u64) -> Result<()> {
    let port = 3405;
    let args = ["--generate", "max,1000,100000"];
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = (cpus >= 2).then_some((0usize, 1usize));
    let variants = VARIANTS;
    println!(
        "\nprobe overhead: loopback 1 KB shipping, {rounds} rounds x {} variants x {secs} s, \
         order rotated per round; {}",
        variants.len(),
        match pin {
            Some((s, r)) => format!("ship pinned to CPU {s}, recv to CPU {r}"),
            None => "one CPU: not pinned".to_owned(),
        }
    );
    let runs = measure_rounds(bin, port, &args, rounds, secs, pin)?;
    let off_cpu = print_overhead(&runs);
    let detached_cpu_us = median(&mut off_cpu.clone());
    prog_run_time(bin, port, &args, secs, pin, detached_cpu_us)
}

/// The variants of a probe-overhead round, in their column order.
const VARIANTS: [Probes; 3] = [Probes::Detached, Probes::Raw, Probes::Classic];

/// One shipping run per variant per round, the order rotated each round.
fn measure_rounds(
    bin: &Path,
    port: u16,
    args: &[&str],
    rounds: usize,
    secs: u64,
    pin: Option<(usize, usize)>,
) -> Result<Vec<[Option<ShipRun>; 3]>> {
    let variants = VARIANTS;
    let mut runs: Vec<[Option<ShipRun>; 3]> = Vec::new();
    for round in 0..rounds {
        let mut row = [None; 3];
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let probes = variants[i];
            let observer = match probes {
                Probes::Detached => None,
                p => Some(Observer::start(bin, port, p, false)?),
            };
            if observer.is_some() {
                std::thread::sleep(Duration::from_millis(300));
            }
            row[i] = Some(ship_run_on(bin, &["--memory"], args, port, secs, pin)?);
            drop(observer);
        }
        let r = row.map(|x| x.expect("every variant ran"));
        eprintln!(
            "  round {:>2}: detached {:>8.0} rec/s {:>5.2} µs/rec | tp_btf {:>8.0} {:>5.2} | classic {:>8.0} {:>5.2}   load {}",
            round + 1,
            r[0].records_per_s,
            r[0].cpu_us_per_record,
            r[1].records_per_s,
            r[1].cpu_us_per_record,
            r[2].records_per_s,
            r[2].cpu_us_per_record,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        );
        runs.push(row);
    }
    Ok(runs)
}

/// Prints each variant's spread and its cost against the detached runs;
/// returns the detached runs' CPU per record.
fn print_overhead(runs: &[[Option<ShipRun>; 3]]) -> Vec<f64> {
    let variants = VARIANTS;
    let col = |i: usize, f: fn(&ShipRun) -> f64| -> Vec<f64> {
        runs.iter().filter_map(|r| r[i].as_ref().map(f)).collect()
    };
    let thr = |r: &ShipRun| r.records_per_s;
    let cpu = |r: &ShipRun| r.cpu_us_per_record;
    println!(
        "{:<44} {:>10} {:>21}   {:>8} {:>17}",
        "variant", "rec/s med", "IQR (min-max)", "µs/rec", "IQR"
    );
    for (i, v) in variants.iter().enumerate() {
        let (lo, q1, m, q3, hi) = spread(&mut col(i, thr));
        let (_, c1, cm, c3, _) = spread(&mut col(i, cpu));
        println!(
            "{:<44} {m:>10.0} {q1:>7.0}-{q3:<7.0}({lo:.0}-{hi:.0})   {cm:>8.3} {c1:>8.3}-{c3:<8.3}",
            v.label()
        );
    }
    let off_thr = col(0, thr);
    let off_cpu = col(0, cpu);
    for (i, v) in variants.iter().enumerate().skip(1) {
        let mut cost: Vec<f64> = col(i, thr)
            .iter()
            .zip(&off_thr)
            .map(|(on, off)| 100.0 * (1.0 - on / off))
            .collect();
        let mut cpu_cost: Vec<f64> = col(i, cpu)
            .iter()
            .zip(&off_cpu)
            .map(|(on, off)| 100.0 * (on / off - 1.0))
            .collect();
        let (lo, q1, m, q3, hi) = spread(&mut cost);
        let (_, c1, cm, c3, _) = spread(&mut cpu_cost);
        let ratio = median(&mut col(i, thr)) / median(&mut off_thr.clone());
        println!(
            "cost, {:<38} throughput {m:+.1}% (IQR {q1:+.1}..{q3:+.1}, min-max {lo:+.1}..{hi:+.1}; \
             ratio of medians {ratio:.3}); CPU per record {cm:+.1}% (IQR {c1:+.1}..{c3:+.1})  target <= 2%",
            v.label()
        );
    }
    off_cpu
}

/// The programs' own run time (`kernel.bpf_stats_enabled`, which costs two
/// clock reads per program run, so measured in runs of its own), per path:
/// share of all CPU time while shipping, and ns per run of each program.
fn prog_run_time(
    bin: &Path,
    port: u16,
    args: &[&str],
    secs: u64,
    pin: Option<(usize, usize)>,
    detached_cpu_us: f64,
) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!("the programs' own run time (kernel bpf_stats, one run per path):");
    for probes in [Probes::Raw, Probes::Classic] {
        let observer = Observer::start(bin, port, probes, true)?;
        std::thread::sleep(Duration::from_millis(300));
        let pid = observer.guard.0.id();
        let before = bpf_progs(pid);
        let t0 = Instant::now();
        let run = ship_run_on(bin, &["--memory"], args, port, secs, pin)?;
        let wall_ns = t0.elapsed().as_secs_f64() * 1e9;
        let after = bpf_progs(pid);
        drop(observer);
        let mut total_ns = 0u64;
        let mut per_prog = Vec::new();
        for a in &after {
            let b = before.iter().find(|b| b.prog_id == a.prog_id);
            let ns = a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
            let cnt = a.run_cnt - b.map_or(0, |b| b.run_cnt);
            total_ns += ns;
            if cnt > 0 {
                per_prog.push(format!(
                    "{} {:.0}/s x {:.0} ns",
                    if a.prog_type == BPF_PROG_TYPE_TRACING {
                        "tp_btf"
                    } else {
                        "tp"
                    },
                    cnt as f64 * 1e9 / wall_ns,
                    ns as f64 / cnt as f64
                ));
            }
        }
        let ns_per_record = total_ns as f64 / (run.records_per_s * wall_ns / 1e9);
        println!(
            "  {:<42} {:>5.2}% of all CPU time; {:.0} ns per record = {:.2}% of the \
             detached runs' CPU per record ({:.0} rec/s); per program: {}",
            probes.label(),
            100.0 * total_ns as f64 / (wall_ns * cpus),
            ns_per_record,
            100.0 * ns_per_record / (detached_cpu_us * 1e3),
            run.records_per_s,
            per_prog.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask bench --probe-only`.
pub fn probe_only(runs: usize, secs: u64) -> Result<()> {
    if !crate::is_root() {
        bail!("the probe-overhead row attaches eBPF programs: run as root");
    }
    let bin = crate::build(true)?;
    probe_overhead(&bin, runs, secs)
}
