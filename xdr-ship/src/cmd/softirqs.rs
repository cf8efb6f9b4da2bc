//! `xdr-ship softirqs`.
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
    args.sampling
        .run(|| {
            let after = sampler.read().context("reading softirq counters")?;
            let mut report = SoftirqReport::between(&before, &after);
            report.fallback_reason = fallback_reason.clone();
            before = after;
            Ok(report)
        })
        .await
}
