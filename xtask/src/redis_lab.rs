//! The Redis-destination rows of `cargo xtask bench` (#12's targets): on
//! the 156 ms / 100 MB/s lab, `ship --to redis://` with its defaults into a
//! redis-server on the far side, against the same run's `recv --memory`
//! row (the target: ≥ 90%), and against `redis-benchmark -t set -d 1000
//! -P 64 -c 64` from the near side straight at the same far Redis — the
//! peer a user would try first (the target: ≥ 5×).
//!
//! Why a Redis that neither saves nor appends: the rows measure what the
//! link and the pipelining carry; Redis's own disk is the RESP ingest
//! rows' business. Why 200,000 keys: the far Redis holds every value
//! (~250 MB), well within the box's memory.
use std::path::Path;

use anyhow::{Context, Result};

use crate::demo::{lab_run, phase_from_lines, Phase, Plan};

/// Distinct keys both runs write.
const KEYS: u64 = 200_000;
/// The far Redis: no RDB snapshots, no AOF, reachable from the near side.
const FAR_REDIS: &str = "redis-server --bind 198.18.0.2 --port 6379 --protected-mode no \
                         --save '' --appendonly no";

/// `ship --to redis://` with its defaults across the lab for `secs`.
fn ship_into_redis(bin: &Path, plan: &Plan, secs: u64) -> Result<Phase> {
    let near = format!(
        "{} ship --to redis://198.18.0.2:6379 --generate max,1000,{KEYS} --duration {secs}s",
        bin.display()
    );
    let lines = lab_run(bin, plan, "bench-redis", FAR_REDIS, &near, |_| false)?;
    if let Some(l) = lines.iter().find(|l| l.starts_with("done:")) {
        eprintln!("  {:<40} {l}", "--to redis://");
    }
    Ok(phase_from_lines(&lines, 10))
}

/// `redis-benchmark -t set -d 1000 -P 64 -c 64` from the near side at the
/// far Redis, about `secs` long at the rate it was measured at (16K SET/s):
/// SET/s.
fn redis_benchmark_across(bin: &Path, plan: &Plan, secs: u64) -> Result<f64> {
    let requests = 16_000 * secs;
    let near = format!(
        "redis-benchmark -h 198.18.0.2 -p 6379 -t set -d 1000 -P 64 -c 64 -n {requests} \
         -r {KEYS} -q"
    );
    let lines = lab_run(bin, plan, "bench-redis", FAR_REDIS, &near, |_| false)?;
    let text = lines.join("\n");
    crate::resp_bench::set_rate(&text)
        .with_context(|| format!("no SET figure in redis-benchmark's output: {text}"))
}

/// Prints the two rows; `memory` is the same run's `recv --memory` row.
pub fn rows(bin: &Path, plan: &Plan, secs: u64, memory: &Phase) -> Result<()> {
    let shipped = ship_into_redis(bin, plan, secs)?;
    let benchmark = redis_benchmark_across(bin, plan, secs)?;
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of the memory row (>= 90%); {:.1}x redis-benchmark (>= 5x)",
        "xdr-ship --to redis:// (far redis-server)",
        shipped.throughput,
        shipped.mb_per_s,
        100.0 * shipped.throughput / memory.throughput.max(1e-9),
        shipped.throughput / benchmark.max(1e-9),
    );
    println!(
        "{:<46} {:>14.0} {:>10}  peer",
        "redis-benchmark -t set -d 1000 -P 64 -c 64", benchmark, ""
    );
    Ok(())
}

/// `bench --redis-only`: the same run's memory row, then the two Redis rows.
pub fn only(bin: &Path, secs: u64) -> Result<()> {
    let plan = Plan::seed(secs);
    println!("\nRedis rows: 156 ms RTT, 100 MB/s line, 1 KB records, {secs} s per run");
    let memory = phase_from_lines(
        &crate::demo::ship_phase(bin, &plan, "bench", "", secs, |_| false)?,
        10,
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  the memory row",
        "xdr-ship, recv --memory", memory.throughput, memory.mb_per_s
    );
    rows(bin, &plan, secs, &memory)
}
