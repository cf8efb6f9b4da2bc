//! `cargo xtask bench --links`: the shipper with its defaults against iperf3
//! on a grid of emulated links, back to back in the same run.
//!
//! Why a grid and not the seed's one link: the promise is that round-trip
//! time leaves the throughput equation on *any* long, fat link, with no
//! tuning flag. Each row brings up the WAN lab for one link and runs, in
//! turn, iperf3 `-P 8` (the link's ceiling), iperf3 `-P 1` (one stream's
//! ceiling), `xdr-ship ship` with its defaults, and `xdr-ship ship
//! --connections 1 --mode unordered`, each for the same number of seconds.
//! It reports steady-state medians (the second half of each run), the time
//! from start to 90% of that steady rate, the per-second coefficient of
//! variation, and CPU per MB for both ends of both tools:
//!
//! - iperf3's from its own JSON (`cpu_utilization_percent` of sender and
//!   receiver over the test);
//! - xdr-ship's from `getrusage` of each process, taken by this binary's
//!   `rusage` wrapper, which runs the process, forwards SIGTERM to it and
//!   prints its user and system time when it exits;
//! - the delay line's own CPU, from `lab run`'s closing line, so a row the
//!   2-core box cannot carry (line + sender + receiver near 2 cores) says
//!   so from measured CPU instead of being misread as the shipper's limit.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{bail, Context, Result};

/// One link of the grid.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub rtt_ms: u64,
    pub mb_per_s: u64,
    /// Random loss per segment, in percent.
    pub loss_pct: f64,
    /// Value bytes of each shipped record.
    pub value_bytes: usize,
}

impl Link {
    pub fn name(&self) -> String {
        let size = match self.value_bytes {
            b if b >= 1024 && b % 1024 == 0 => format!("{} KB", b / 1024),
            1000 => "1 KB".to_owned(),
            b => format!("{b} B"),
        };
        format!(
            "{} ms / {} MB/s / {}% / {size}",
            self.rtt_ms, self.mb_per_s, self.loss_pct
        )
    }

    /// The bound on time to 90%: 3 s + 4 round trips.
    pub fn t90_target_s(&self) -> f64 {
        3.0 + 4.0 * self.rtt_ms as f64 / 1e3
    }

    /// Keys the generator cycles through: the far side's memory store
    /// keeps one value per key, so big values get fewer keys (≤ 64 MiB).
    ///
    /// Why 64 MiB and not more: until every key has been written once, each
    /// record is an insert into memory the process has never touched, and
    /// the kernel zeroes it on first touch. On these VMs that costs 2.3–4.6
    /// µs per 1 KB record against 0.42 µs for an overwrite (loopback, 4M
    /// keys against 1,000; 73% of `recv`'s CPU in `clear_page_erms`), so a
    /// 512 MiB key space made the far end's page faults, not the link or the
    /// window, set the first 3–4 seconds of the 10 ms / 200 MB/s row (124–165
    /// MB/s there; 172–188 from the first second with 1,000 keys, 150–174
    /// then 182–188 with 65,536). 64 MiB is written within the first
    /// second of every row and is still 16× a core's L2. The cost of a
    /// fresh store is the loopback bench's to show, not the link grid's.
    fn keys(&self) -> usize {
        ((64usize << 20) / self.value_bytes.max(1)).clamp(1_000, 1_000_000)
    }
}

const fn link(rtt_ms: u64, mb_per_s: u64, loss_pct: f64, value_bytes: usize) -> Link {
    Link {
        rtt_ms,
        mb_per_s,
        loss_pct,
        value_bytes,
    }
}

/// The grid of issue #17 (RTT / bandwidth / loss / record size).
pub const GRID: [Link; 9] = [
    link(10, 200, 0.0, 1000),
    link(50, 150, 0.0, 1000),
    link(100, 50, 0.0, 1000),
    link(156, 100, 0.0, 1000),
    link(156, 100, 0.0, 100),
    link(156, 100, 0.0, 65536),
    link(156, 250, 0.0, 1000),
    link(156, 100, 0.1, 1000),
    link(250, 80, 0.0, 1000),
];

/// Per-interval rates of one run, and what it cost.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// `(seconds since start, MB/s over the interval ending then)`.
    pub samples: Vec<(f64, f64)>,
    /// CPU seconds of the sending and receiving processes.
    pub cpu_s: f64,
    /// CPU seconds of the lab's delay line during the run.
    pub line_cpu_s: f64,
    /// Wall seconds of the run.
    pub secs: f64,
}

impl Run {
    /// Median MB/s over the second half of the run.
    pub fn steady(&self) -> f64 {
        let half = self.secs / 2.0;
        median(
            self.samples
                .iter()
                .filter(|(t, _)| *t > half && *t <= self.secs)
                .map(|(_, r)| *r)
                .collect(),
        )
    }

    /// Seconds from start to the end of the first interval at ≥ 90% of
    /// the steady rate (`None`: never).
    pub fn t90(&self) -> Option<f64> {
        let bar = 0.9 * self.steady();
        self.samples
            .iter()
            .find(|(_, r)| *r >= bar && bar > 0.0)
            .map(|(t, _)| *t)
    }

    /// Coefficient of variation of the per-second rate in the steady half.
    pub fn cv(&self) -> f64 {
        let half = self.secs / 2.0;
        let mut per_s: Vec<(i64, f64, f64)> = Vec::new(); // (second, MB·s, s)
        let mut prev_t = 0.0;
        for &(t, r) in &self.samples {
            let dt = t - prev_t;
            prev_t = t;
            if t <= half || t > self.secs {
                continue;
            }
            let sec = t.ceil() as i64;
            match per_s.last_mut() {
                Some(last) if last.0 == sec => {
                    last.1 += r * dt;
                    last.2 += dt;
                }
                _ => per_s.push((sec, r * dt, dt)),
            }
        }
        let rates: Vec<f64> = per_s
            .iter()
            .filter(|(_, _, d)| *d > 0.5)
            .map(|(_, mb, d)| mb / d)
            .collect();
        if rates.len() < 2 {
            return 0.0;
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        if mean > 0.0 {
            var.sqrt() / mean
        } else {
            0.0
        }
    }

    /// CPU seconds of sender + receiver per MB delivered in the run.
    pub fn cpu_ms_per_mb(&self) -> f64 {
        let mut mb = 0.0;
        let mut prev_t = 0.0;
        for &(t, r) in &self.samples {
            mb += r * (t - prev_t);
            prev_t = t;
        }
        if mb > 0.0 {
            1e3 * self.cpu_s / mb
        } else {
            f64::NAN
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The lines a `lab run` printed, by side.
#[derive(Debug, Default)]
struct LabOutput {
    near: Vec<String>,
    far: Vec<String>,
    lab: Vec<String>,
}

/// Runs `lab run` for `l` with the given far and near shell commands.
fn lab_run(bin: &Path, l: &Link, far: &str, near: &str) -> Result<LabOutput> {
    let mut cmd = Command::new(bin);
    cmd.args(["lab", "run", "--quiet", "--name", "links"])
        .arg("--rtt")
        .arg(format!("{}ms", l.rtt_ms))
        .arg("--bandwidth")
        .arg(format!("{}MB/s", l.mb_per_s));
    if l.loss_pct > 0.0 {
        cmd.arg("--loss").arg(format!("{}%", l.loss_pct));
    }
    let mut child = cmd
        .args(["--far", far, "--near", near])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting xdr-ship lab run")?;
    let stderr = child.stderr.take().context("lab run stderr")?;
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut out = LabOutput::default();
    let stdout = child.stdout.take().context("lab run stdout")?;
    for line in BufReader::new(stdout).lines() {
        sort_line(&mut out, line?);
    }
    for line in err_thread.join().unwrap_or_default() {
        sort_line(&mut out, line);
    }
    let status = child.wait()?;
    if !status.success() {
        let tail: Vec<&String> = out.lab.iter().chain(&out.near).rev().take(8).collect();
        bail!(
            "lab run `{near}` on {} failed: {status}; last lines: {tail:?}",
            l.name()
        );
    }
    Ok(out)
}

fn sort_line(out: &mut LabOutput, line: String) {
    if let Some(rest) = line.strip_prefix("[near] ") {
        out.near.push(rest.to_owned());
    } else if let Some(rest) = line.strip_prefix("[far] ") {
        out.far.push(rest.to_owned());
    } else {
        out.lab.push(line);
    }
}

/// The delay line's CPU seconds from `lab run`'s closing line
/// (`… line cpu 1.23 s`).
fn line_cpu_s(lab: &[String]) -> f64 {
    lab.iter()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find("line cpu ")? + "line cpu ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// One iperf3 run with `streams` parallel streams.
fn iperf3(bin: &Path, l: &Link, streams: u32, secs: u64) -> Result<Run> {
    let out = lab_run(
        bin,
        l,
        "iperf3 -s -1",
        &format!("iperf3 -c 198.18.0.2 -P {streams} -t {secs} -i 0.5 -J"),
    )?;
    let json = out.near.join("\n");
    let start = json.find('{').context("no JSON from iperf3")?;
    let v: serde_json::Value = serde_json::from_str(&json[start..]).context("iperf3 JSON")?;
    let samples: Vec<(f64, f64)> = v["intervals"]
        .as_array()
        .context("iperf3 JSON without intervals")?
        .iter()
        .filter_map(|i| {
            let s = &i["sum"];
            Some((s["end"].as_f64()?, s["bits_per_second"].as_f64()? / 8e6))
        })
        .collect();
    let secs_run = v["end"]["sum_received"]["seconds"]
        .as_f64()
        .unwrap_or(secs as f64);
    let cpu = &v["end"]["cpu_utilization_percent"];
    let cpu_s = (cpu["host_total"].as_f64().unwrap_or(0.0)
        + cpu["remote_total"].as_f64().unwrap_or(0.0))
        / 100.0
        * secs_run;
    Ok(Run {
        samples,
        cpu_s,
        line_cpu_s: line_cpu_s(&out.lab),
        secs: secs_run,
    })
}

/// `cargo xtask rusage -- PROG ARGS…`: runs PROG, passes SIGTERM and
/// SIGINT on to it, and prints its CPU time when it exits.
pub fn rusage(argv: &[String]) -> Result<()> {
    let (prog, args) = argv.split_first().context("rusage: no command")?;
    let mut child = Command::new(prog)
        .args(args)
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `forward` is an `extern "C"` handler that only calls
        // `kill`, which is async-signal-safe, with a pid read atomically.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let status = child.wait()?;
    // SAFETY: an all-zero `rusage` is valid, and `getrusage` only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` that outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    println!(
        "rusage: user_s={:.3} sys_s={:.3} max_rss_kib={}",
        tv(ru.ru_utime),
        tv(ru.ru_stime),
        ru.ru_maxrss
    );
    std::process::exit(status.code().unwrap_or(0))
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: `kill` is async-signal-safe and has no memory preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

/// CPU seconds from the `rusage:` line the wrapper printed.
fn rusage_s(lines: &[String]) -> f64 {
    lines
        .iter()
        .rev()
        .find_map(|l| {
            let rest = l.strip_prefix("rusage: ")?;
            let mut total = 0.0;
            for kv in rest.split_whitespace() {
                if let Some(v) = kv
                    .strip_prefix("user_s=")
                    .or_else(|| kv.strip_prefix("sys_s="))
                {
                    total += v.parse::<f64>().ok()?;
                }
            }
            Some(total)
        })
        .unwrap_or(f64::NAN)
}

/// One `xdr-ship ship` run (its defaults plus `extra`) against `recv
/// --memory` across the link.
fn ship(bin: &Path, l: &Link, extra: &str, secs: u64) -> Result<Run> {
    let me = std::env::current_exe().context("the xtask binary")?;
    let (me, bin_s) = (me.display(), bin.display());
    let out = lab_run(
        bin,
        l,
        &format!("exec {me} rusage -- {bin_s} recv --listen 198.18.0.2:3000 --memory --insecure"),
        &format!(
            "exec {me} rusage -- {bin_s} ship --to 198.18.0.2:3000 --generate max,{},{} \
             --duration {secs}s --json {extra}",
            l.value_bytes,
            l.keys()
        ),
    )?;
    let mut samples = Vec::new();
    for line in out.near.iter().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(t), Some(b)) = (v["elapsed_s"].as_f64(), v["bytes_per_s"].as_f64()) {
            samples.push((t, b / 1e6));
        }
    }
    if samples.is_empty() {
        bail!("no snapshots from xdr-ship ship {extra} on {}", l.name());
    }
    Ok(Run {
        samples,
        cpu_s: rusage_s(&out.near) + rusage_s(&out.far),
        line_cpu_s: line_cpu_s(&out.lab),
        secs: secs as f64,
    })
}

/// Everything measured on one link.
struct RowResult {
    link: Link,
    iperf8: Run,
    iperf1: Run,
    ship: Run,
    one: Run,
}

fn t90_text(r: &Run) -> String {
    r.t90()
        .map_or_else(|| "never".to_owned(), |t| format!("{t:.1}s"))
}

/// The box's two cores, as the share the busiest run used of them.
fn box_cpu_pct(r: &Run) -> f64 {
    100.0 * (r.cpu_s + r.line_cpu_s) / r.secs.max(1e-9) / 2.0
}

fn print_table(rows: &[RowResult]) {
    println!(
        "\n{:<28} {:>8} {:>6} {:>8} {:>6} {:>5} {:>7} {:>7} {:>8} {:>6} {:>8} {:>7} {:>6}",
        "link (rtt/bw/loss/record)",
        "iperf -P8",
        "t90",
        "xdr-ship",
        "t90",
        "cv",
        "ratio",
        "cpu x",
        "iperf -P1",
        "1 conn",
        "ratio",
        "t90 max",
        "box"
    );
    for r in rows {
        let (p8, s, p1, o) = (
            r.iperf8.steady(),
            r.ship.steady(),
            r.iperf1.steady(),
            r.one.steady(),
        );
        let ratio = 100.0 * s / p8.max(1e-9);
        let ratio1 = 100.0 * o / p1.max(1e-9);
        let cpu_x = r.ship.cpu_ms_per_mb() / r.iperf8.cpu_ms_per_mb();
        let t90_ok = r.ship.t90().is_some_and(|t| t <= r.link.t90_target_s());
        let ok = |b: bool| if b { " " } else { "!" };
        println!(
            "{:<28} {:>8.1} {:>6} {:>8.1} {:>5}{} {:>4.1}%{} {:>6.1}%{} {:>6.2}{} {:>8.1} {:>6.1} {:>6.1}%{} {:>6.1}s {:>5.0}%",
            r.link.name(),
            p8,
            t90_text(&r.iperf8),
            s,
            t90_text(&r.ship),
            ok(t90_ok),
            100.0 * r.ship.cv(),
            ok(r.ship.cv() <= 0.05),
            ratio,
            ok(ratio >= 95.0),
            cpu_x,
            ok(cpu_x <= 2.0),
            p1,
            o,
            ratio1,
            ok(ratio1 >= 90.0),
            r.link.t90_target_s(),
            box_cpu_pct(&r.ship).max(box_cpu_pct(&r.iperf8)),
        );
    }
    println!(
        "\nMB/s: steady medians (second half of each run) of TCP payload delivered \
         (iperf3) and of acknowledged frames (xdr-ship); t90: start to the first \
         interval at >= 90% of steady; cv: per-second goodput coefficient of \
         variation (target <= 5%); ratio: xdr-ship / iperf3 -P 8 (target >= 95%); \
         cpu x: xdr-ship's ship+recv CPU per MB over iperf3's sender+receiver CPU \
         per MB (target <= 2); 1 conn: --connections 1 --mode unordered vs iperf3 \
         -P 1 (target >= 90%); t90 max: 3 s + 4 RTTs; box: CPU of both ends plus the \
         delay line, in % of the 2 cores (near 100%: the box, not the tool, is the \
         limit); `!` marks a missed target."
    );
    print_details(rows);
}

/// Each row's four runs, one line each.
fn print_details(rows: &[RowResult]) {
    for r in rows {
        let detail = |name: &str, run: &Run| {
            println!(
                "  {:<28} {:<10} steady {:>7.1} MB/s  t90 {:>6}  cv {:>5.1}%  cpu {:>6.2} ms/MB  line cpu {:>5.1}s",
                r.link.name(),
                name,
                run.steady(),
                t90_text(run),
                100.0 * run.cv(),
                run.cpu_ms_per_mb(),
                run.line_cpu_s
            );
        };
        detail("iperf -P8", &r.iperf8);
        detail("iperf -P1", &r.iperf1);
        detail("xdr-ship", &r.ship);
        detail("1 conn", &r.one);
    }
}

/// Runs the grid (or the rows whose name contains `only`).
pub fn links(bin: &Path, secs: u64, only: Option<&str>) -> Result<()> {
    let rows: Vec<Link> = GRID
        .iter()
        .copied()
        .filter(|l| only.is_none_or(|o| l.name().contains(o)))
        .collect();
    if rows.is_empty() {
        bail!(
            "--only {:?} matches no link; the grid: {:?}",
            only,
            GRID.iter().map(Link::name).collect::<Vec<_>>()
        );
    }
    println!(
        "xdr-ship bench --links: {} links, {secs} s per run, iperf3 -P 8, iperf3 -P 1, \
         xdr-ship defaults, xdr-ship 1 connection unordered, back to back",
        rows.len()
    );
    let mut results = Vec::new();
    for l in rows {
        eprintln!("== {}", l.name());
        let iperf8 = iperf3(bin, &l, 8, secs)?;
        eprintln!("   iperf3 -P 8   {:>7.1} MB/s", iperf8.steady());
        let iperf1 = iperf3(bin, &l, 1, secs)?;
        eprintln!("   iperf3 -P 1   {:>7.1} MB/s", iperf1.steady());
        let shipped = ship(bin, &l, "", secs)?;
        eprintln!(
            "   xdr-ship      {:>7.1} MB/s  t90 {}",
            shipped.steady(),
            t90_text(&shipped)
        );
        let one = ship(bin, &l, "--connections 1 --mode unordered", secs)?;
        eprintln!("   1 connection  {:>7.1} MB/s", one.steady());
        results.push(RowResult {
            link: l,
            iperf8,
            iperf1,
            ship: shipped,
            one,
        });
    }
    print_table(&results);
    Ok(())
}

#[cfg(test)]
mod tests;
