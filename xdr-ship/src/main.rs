//! The `xdr-ship` command line.
//!
//! Every subcommand is a thin edge over the library: parse flags (a bad flag
//! names itself and the accepted form), run, report errors with `anyhow`.
use std::{io::Write, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use xdr_ship::probe::softirq::{SoftirqReport, SoftirqSampler};

#[derive(Parser, Debug)]
#[command(name = "xdr-ship", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-CPU softirq load, split by vector: the `si` column of `top`.
    Softirqs(SoftirqsArgs),
}

#[derive(clap::Args, Debug)]
struct SoftirqsArgs {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this many samples (default: run until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// One JSON object per sample instead of a table.
    #[arg(long)]
    json: bool,
    /// Read `/proc` even when the eBPF programs could load.
    #[arg(long)]
    no_ebpf: bool,
}

/// A duration in human units; the error names the accepted form.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 1s, 250ms or 2m"))?;
    if d.is_zero() {
        return Err("must be longer than zero, e.g. 1s or 250ms".to_owned());
    }
    Ok(d)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XDR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Softirqs(args) => rt.block_on(softirqs(args)),
    }
}

async fn softirqs(args: SoftirqsArgs) -> anyhow::Result<()> {
    let (sampler, fallback_reason) = SoftirqSampler::open(args.no_ebpf);
    if let Some(why) = &fallback_reason {
        tracing::info!("softirqs from /proc: {why}");
    }
    let mut before = sampler.read().context("reading softirq counters")?;
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    let mut printed = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let after = sampler.read().context("reading softirq counters")?;
        let mut report = SoftirqReport::between(&before, &after);
        report.fallback_reason = fallback_reason.clone();
        if args.json {
            writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
        } else {
            if printed > 0 {
                writeln!(stdout)?;
            }
            write!(stdout, "{}", report.render_table())?;
        }
        stdout.flush()?;
        before = after;
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
    }
}
