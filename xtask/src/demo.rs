//! `cargo xtask demo`: the seed's experiment on an emulated transatlantic
//! link (156 ms RTT, 100 MB/s, 1 KB records).
//!
//! Why these phases: the link's own goodput (iperf3) is the ceiling; the
//! stop-and-wait phase shows the pre-3.8 scheme, bound by RTT (10
//! connections ÷ 0.156 s ≈ 64 records/s); the pipelined phase shows the same
//! records reaching the link's rate, with `throughput × RTT` records in
//! flight (Little's law). Each phase streams the shipper's live line; the
//! table at the end puts the numbers side by side.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// The link and workload of the demo.
pub struct Plan {
    pub rtt_ms: f64,
    pub bandwidth: &'static str,
    pub phase_secs: u64,
}

impl Plan {
    /// The seed's link: 156 ms, 100 MB/s, `phase_secs` per phase.
    pub fn seed(phase_secs: u64) -> Self {
        Self {
            rtt_ms: 156.0,
            bandwidth: "100MB/s",
            phase_secs,
        }
    }
}

/// What one shipping phase measured: medians over its steady seconds, and
/// the shipper's final verdict (else its last live verdict line).
#[derive(Debug, Default)]
pub struct Phase {
    pub throughput: f64,
    pub inflight: f64,
    pub mb_per_s: f64,
    /// Seconds from the phase's start to its first interval at 90% of the
    /// steady records/s (`None`: it never got there).
    pub t90_s: Option<f64>,
    pub verdict: Option<String>,
}

/// Runs `lab run` with the given far and near commands, echoing the lines
/// it streams (`filter` decides which), and returns the near side's lines.
pub fn lab_run(
    bin: &Path,
    plan: &Plan,
    name: &str,
    far: &str,
    near: &str,
    echo: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut child = Command::new(bin)
        .args(["lab", "run", "--name", name, "--rtt"])
        .arg(format!("{}ms", plan.rtt_ms))
        .args(["--bandwidth", plan.bandwidth, "--far", far, "--near", near])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting xdr-ship lab run")?;
    let stdout = child.stdout.take().context("lab run stdout")?;
    let mut near_lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if echo(&line) {
            println!("  {line}");
        }
        if let Some(rest) = line.strip_prefix("[near] ") {
            near_lines.push(rest.to_owned());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("lab run `{near}` failed: {status}");
    }
    Ok(near_lines)
}

/// `recv --memory` on the far side and `ship ARGS` (1 KB records, for
/// `secs`) on the near side of a `lab run`; returns the near side's lines.
pub fn ship_phase(
    bin: &Path,
    plan: &Plan,
    name: &str,
    args: &str,
    secs: u64,
    echo: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    ship_phase_with(bin, plan, name, "", args, secs, echo)
}

/// [`ship_phase`] with extra `recv_args` for the receiver. The lab's far
/// address is not loopback, and the lab is a namespace of its own: the
/// receiver runs `--insecure` unless `recv_args` authenticate.
pub fn ship_phase_with(
    bin: &Path,
    plan: &Plan,
    name: &str,
    recv_args: &str,
    args: &str,
    secs: u64,
    echo: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let bin_s = bin.display();
    lab_run(
        bin,
        plan,
        name,
        &format!("{bin_s} recv --listen 198.18.0.2:3000 --memory --insecure {recv_args}"),
        &format!(
            "{bin_s} ship --to 198.18.0.2:3000 --generate max,1000,1000000 --duration {secs}s {args}"
        ),
        echo,
    )
}

/// A number after `key ` in a seed-style line (`throughput 103798 : …`).
fn field(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(&format!("{key} "))? + key.len() + 1..];
    rest.split_whitespace().next()?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// The acknowledged MB/s of a seed line (`… : 96.3 MB/s : …`).
fn mb_per_s(line: &str) -> Option<f64> {
    let end = line.find(" MB/s")?;
    line[..end].rsplit(' ').next()?.parse().ok()
}

/// Medians of the seed lines after the first `warmup` of them.
pub fn phase_from_lines(lines: &[String], warmup: usize) -> Phase {
    let seed: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("throughput "))
        .collect();
    let steady = if seed.len() > warmup + 2 {
        &seed[warmup..]
    } else {
        &seed[..]
    };
    let throughput = median(
        steady
            .iter()
            .filter_map(|l| field(l, "throughput"))
            .collect(),
    );
    Phase {
        throughput,
        inflight: median(steady.iter().filter_map(|l| field(l, "inflight")).collect()),
        mb_per_s: median(steady.iter().filter_map(|l| mb_per_s(l)).collect()),
        t90_s: seed
            .iter()
            .position(|l| field(l, "throughput").is_some_and(|t| t >= 0.9 * throughput))
            .filter(|_| throughput > 0.0)
            .map(|i| (i + 1) as f64 * LINE_INTERVAL_S),
        // The final report's verdict over the last window ("shipper: …")
        // where the run printed one; the live "verdict: " lines are said
        // only when the limit changes, so the last of them may be seconds
        // old (the first bandwidth verdict, while the window still opened).
        verdict: lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("shipper: "))
            .or_else(|| lines.iter().rev().find_map(|l| l.strip_prefix("verdict: ")))
            .map(str::to_owned),
    }
}

/// The shipper's default interval between two seed lines.
const LINE_INTERVAL_S: f64 = 1.0;

/// iperf3's receiver goodput in MB/s from its JSON report.
pub fn iperf3_goodput(lines: &[String]) -> Result<f64> {
    let json = lines.join("\n");
    let start = json.find('{').context("no JSON from iperf3")?;
    let v: serde_json::Value = serde_json::from_str(&json[start..]).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received")?;
    Ok(bps / 8e6)
}

pub fn demo(bin: &Path, plan: &Plan) -> Result<()> {
    let t0 = Instant::now();
    let rtt_s = plan.rtt_ms / 1e3;
    let secs = plan.phase_secs;
    println!(
        "xdr-ship demo: the seed's experiment on an emulated link ({} ms RTT, {}), 1 KB records\n",
        plan.rtt_ms, plan.bandwidth
    );

    println!("1/3  the link itself: iperf3 for {secs} s (first 5 s omitted)");
    let lines = lab_run(
        bin,
        plan,
        "demo",
        "iperf3 -s -1",
        &format!("iperf3 -c 198.18.0.2 -t {secs} -O 5 -J"),
        |l| l.starts_with("[line]"),
    )?;
    let iperf = iperf3_goodput(&lines)?;
    println!("  => iperf3 goodput {iperf:.1} MB/s\n");

    println!("2/3  stop-and-wait, 10 connections (the pre-3.8 scheme), {secs} s");
    let lines = ship_phase(
        bin,
        plan,
        "demo",
        "--stop-and-wait --connections 10",
        secs,
        |l| l.starts_with("[near]"),
    )?;
    let saw = phase_from_lines(&lines, 2);
    println!();

    let secs_pipe = secs * 2;
    println!("3/3  pipelined, 64 connections, window auto (the 3.8 scheme), {secs_pipe} s");
    let lines = ship_phase(bin, plan, "demo", "", secs_pipe, |l| {
        l.starts_with("[near]") || l.starts_with("[line]")
    })?;
    let pipe = phase_from_lines(&lines, 8);

    print_summary(t0.elapsed().as_secs_f64(), rtt_s, iperf, &saw, &pipe);
    Ok(())
}

/// The demo's closing table: both phases against the link, the
/// stop-and-wait rate against 10 / RTT, and each phase's verdict.
fn print_summary(elapsed_s: f64, rtt_s: f64, iperf: f64, saw: &Phase, pipe: &Phase) {
    let expected_saw = 10.0 / rtt_s;
    println!(
        "\nsummary ({:.0} s in all; medians of steady seconds)",
        elapsed_s
    );
    println!(
        "{:<26} {:>12} {:>10} {:>22} {:>9} {:>10}",
        "phase", "records/s", "inflight", "inflight/(thr x RTT)", "MB/s", "vs iperf3"
    );
    for (name, p) in [("stop-and-wait x 10", saw), ("pipelined x 64, auto", pipe)] {
        println!(
            "{:<26} {:>12.0} {:>10.0} {:>22.2} {:>9.1} {:>9.1}%",
            name,
            p.throughput,
            p.inflight,
            p.inflight / (p.throughput * rtt_s).max(1e-9),
            p.mb_per_s,
            100.0 * p.mb_per_s / iperf.max(1e-9)
        );
    }
    println!(
        "{:<26} {:>12} {:>10} {:>22} {:>9.1} {:>10}",
        "iperf3 (the link)", "", "", "", iperf, "100%"
    );
    println!(
        "\nstop-and-wait: expected 10 / {rtt_s:.3} s = {expected_saw:.0} records/s, measured {:.0} ({:+.1}%)",
        saw.throughput,
        100.0 * (saw.throughput / expected_saw - 1.0)
    );
    println!(
        "pipelined: {:.0}x the stop-and-wait rate (seed: 62 -> 103,798 records/s)",
        pipe.throughput / saw.throughput.max(1e-9)
    );
    println!(
        "pipelined, no tuning flags: 90% of its steady rate after {} (target: within 3 s)",
        pipe.t90_s
            .map_or_else(|| "never".to_owned(), |t| format!("{t:.0} s"))
    );
    println!("\nwhat limits each phase (the shipper's own verdict):");
    for (name, p) in [("stop-and-wait x 10", saw), ("pipelined x 64", pipe)] {
        println!(
            "  {name}: {}",
            p.verdict
                .as_deref()
                .unwrap_or("no verdict (phase too short)")
        );
    }
}

/// Asks on the terminal whether to watch a pipelined run on the live
/// screen; only when both stdin and stdout are terminals.
fn offer_tui() -> bool {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return false;
    }
    print!("\nwatch a pipelined run live on the TUI (q quits)? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y")
}

/// Kills and reaps a child on drop.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pipelined phase on the live screen: `lab up` in the background,
/// `recv` in the far namespace, `xdr-ship tui` in the near one on this
/// terminal. The lab is torn down when the screen is quit.
pub fn tui_phase(bin: &Path, plan: &Plan, secs: u64) -> Result<()> {
    let name = "demo-tui";
    let mut up = Child(
        Command::new(bin)
            .args(["lab", "up", "--name", name, "--rtt"])
            .arg(format!("{}ms", plan.rtt_ms))
            .args(["--bandwidth", plan.bandwidth])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting xdr-ship lab up")?,
    );
    let stdout = up.0.stdout.take().context("lab up stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(" up: ") => break,
            Some(Ok(_)) => {}
            _ => bail!("lab up ended before the link was up"),
        }
    }
    let ns = |side: &str| format!("xdr-{name}-{side}");
    let _recv = Child(
        Command::new("ip")
            .args(["netns", "exec", &ns("far")])
            .arg(bin)
            .args([
                "recv",
                "--insecure",
                "--listen",
                "198.18.0.2:3000",
                "--memory",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting recv in the far namespace")?,
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &ns("near")])
        .arg(bin)
        .args([
            "tui",
            "--to",
            "198.18.0.2:3000",
            "--generate",
            "max,1000,1000000",
            "--duration",
        ])
        .arg(format!("{secs}s"))
        .status()
        .context("starting the TUI in the near namespace")?;
    // SIGINT lets `lab up` tear its namespaces down itself.
    // SAFETY: `kill` with a pid we own and a valid signal number.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGINT) };
    let _ = up.0.wait();
    if !status.success() {
        bail!("the TUI exited with {status}");
    }
    Ok(())
}

/// Runs the demo with the defaults of the seed.
pub fn run(bin: &Path, phase_secs: u64) -> Result<()> {
    let plan = Plan::seed(phase_secs);
    let mut r = demo(bin, &plan);
    if r.is_ok() && offer_tui() {
        r = tui_phase(bin, &plan, 120);
    }
    if r.is_err() {
        // `lab run` tears the link down itself; make sure, even after a
        // failure half-way.
        for name in ["demo", "demo-tui"] {
            let _ = Command::new(bin)
                .args(["lab", "down", "--name", name])
                .output();
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_line_fields_are_read() {
        let l = "throughput 103798 : inflight 16817 : outstanding 0 (delta 0/s) : lat p50 156.2ms";
        assert_eq!(field(l, "throughput"), Some(103798.0));
        assert_eq!(field(l, "inflight"), Some(16817.0));
        assert_eq!(field(l, "lag"), None);
    }

    #[test]
    fn phase_takes_medians_after_the_warmup() {
        let lines: Vec<String> = [1.0, 2.0, 100.0, 110.0, 90.0, 105.0]
            .iter()
            .map(|t| {
                format!(
                    "throughput {t} : inflight {} : outstanding 0 (delta 0/s) : {:.1} MB/s : lat",
                    t * 2.0,
                    t / 10.0
                )
            })
            .chain(std::iter::once("done: delivered 5".to_owned()))
            .collect();
        let p = phase_from_lines(&lines, 2);
        assert_eq!(p.throughput, 105.0);
        assert_eq!(p.inflight, 210.0);
        assert_eq!(p.mb_per_s, 10.5);
    }

    #[test]
    fn a_phase_reaches_ninety_percent_at_its_first_line_that_high() {
        // Steady median 105: the third line (100 ≥ 94.5) is the first at 90%.
        let lines: Vec<String> = [1.0, 2.0, 100.0, 110.0, 90.0, 105.0]
            .iter()
            .map(|t| format!("throughput {t} : inflight 1 : outstanding 0 (delta 0/s) : 1.0 MB/s"))
            .collect();
        assert_eq!(phase_from_lines(&lines, 2).t90_s, Some(3.0));
        assert_eq!(phase_from_lines(&[], 2).t90_s, None);
    }

    #[test]
    fn a_phase_keeps_the_last_verdict_the_shipper_printed() {
        let lines: Vec<String> = [
            "throughput 1 : inflight 1 : outstanding 0 (delta 0/s) : 0.1 MB/s : lat",
            "verdict: limit: application (100%) — window full → raise --window",
            "throughput 2 : inflight 1 : outstanding 0 (delta 0/s) : 0.1 MB/s : lat",
            "verdict: limit: bandwidth (97%) — link full → more bandwidth",
            "done: delivered 3",
        ]
        .map(str::to_owned)
        .to_vec();
        let p = phase_from_lines(&lines, 0);
        assert_eq!(
            p.verdict.as_deref(),
            Some("limit: bandwidth (97%) — link full → more bandwidth")
        );
    }

    #[test]
    fn a_phase_prefers_the_final_reports_verdict_to_the_last_live_one() {
        let lines: Vec<String> = [
            "verdict: limit: bandwidth (43%) — 70.4 MB/s → more bandwidth",
            "done: delivered 3",
            "last verdict, window 11.00s (12 samples)",
            "shipper: limit: bandwidth (79%) — 91.6 MB/s → more bandwidth",
            "  shares: bandwidth 79% · application 21%",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            phase_from_lines(&lines, 0).verdict.as_deref(),
            Some("limit: bandwidth (79%) — 91.6 MB/s → more bandwidth")
        );
    }
}
