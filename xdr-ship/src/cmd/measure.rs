//! `xdr-ship measure-disk` (hidden): the durable engines' own rates beside
//! the disk's, measured in one run on one directory, as one JSON object on
//! stdout for `cargo xtask bench`.
//!
//! Why a hidden command and not a test: these are numbers, not verdicts; a
//! test that only prints would be an ignored test, and the bench is where a
//! speed target is judged (against its peer, `dd bs=1M conv=fdatasync`'s
//! pattern, in the same run).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use xdr_ship::srclog::{measure_append_rate, Log, LogConfig};
use xdr_ship::store::{measure_apply_rate_batched, Store, StoreConfig};

/// 1000-byte values: the seed's record size.
const VALUE_BYTES: usize = 1000;
/// Concurrent writers, as the receiver's 64 connections.
const TASKS: usize = 64;
/// Writes per call: what one BATCH frame (or one ingest request) carries.
const BATCH: usize = 64;
/// The disk row: this many 1 MiB writes, each followed by fdatasync.
const DISK_BLOCKS: usize = 256;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scratch directory on the disk to measure (created; what this run
    /// writes there is removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Records per engine run.
    #[arg(long, default_value_t = 200_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(TASKS as u64 * BATCH as u64..))]
    pub records: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.clone();
    let disk = tokio::task::spawn_blocking(move || disk_rate(&dir))
        .await
        .context("the disk measurement panicked")??;

    let store_dir = args.dir.join("measure-store");
    let store = Store::open(StoreConfig::durable(&store_dir)).context("opening the store")?;
    let before = process_write_bytes();
    let n = usize::try_from(args.records).context("--records")?;
    let store_rate = measure_apply_rate_batched(&store, n, VALUE_BYTES, TASKS, BATCH)
        .await
        .context("measuring the store")?;
    let written = process_write_bytes().saturating_sub(before);
    let stats = store.stats();
    anyhow::ensure!(
        stats.applied == args.records,
        "the store applied {} of {} records",
        stats.applied,
        args.records
    );
    store.close().await.context("closing the store")?;

    let log_dir = args.dir.join("measure-log");
    let log = Log::open(LogConfig::new(&log_dir)).context("opening the log")?;
    let per_task = args.records / (TASKS as u64 * BATCH as u64);
    let log_rate = measure_append_rate(&log, TASKS as u64, BATCH as u64, per_task, VALUE_BYTES)
        .await
        .context("measuring the log")?;
    log.close();

    for d in [&store_dir, &log_dir] {
        std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    let out = serde_json::json!({
        "disk_bytes_per_s": disk,
        "value_bytes": VALUE_BYTES,
        "store_records_per_s": store_rate,
        "store_engine": stats.engine,
        "store_bytes_written_per_value_byte": written as f64 / (args.records as f64 * VALUE_BYTES as f64),
        "store_writes_per_commit": stats.writes_per_commit,
        "log_records_per_s": log_rate.records_per_s,
        "log_syncs": log_rate.syncs,
    });
    outln!("{out}");
    Ok(())
}

/// Sequential 1 MiB writes, each followed by fdatasync, in bytes/s.
fn disk_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("measure-disk");
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    for _ in 0..DISK_BLOCKS {
        f.write_all(&block).context("writing the disk row")?;
        f.sync_data().context("fdatasync of the disk row")?;
    }
    let rate = (DISK_BLOCKS << 20) as f64 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(rate)
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`; 0 where the kernel does not say).
fn process_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}
