//! `xdr-ship softirqs`.
use std::io::Write;

use anyhow::Context;
use xdr_ship::probe::softirq::{SoftirqReport, SoftirqSampler};

/// Per-CPU softirq load, split by vector: the `si` column of `top`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    sampling: super::Sampling,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (sampler, fallback_reason) = SoftirqSampler::open(args.sampling.no_ebpf);
    if let Some(why) = &fallback_reason {
        tracing::info!("softirqs from /proc: {why}");
    }
    let mut before = sampler.read().context("reading softirq counters")?;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + args.sampling.interval,
        args.sampling.interval,
    );
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
        if args.sampling.json {
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
        if args.sampling.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
    }
}
