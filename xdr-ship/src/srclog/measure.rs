//! Throughput of [`Log::append`], for `cargo xtask bench` (through the
//! hidden `xdr-ship measure-disk`). Not a test: a number, not a verdict.
//!
//! `tasks` tasks each append `appends_per_task` batches of `batch` writes
//! and wait for each to be durable, which is what the ingest port does with
//! the requests of `xdr-ship load --window 64`: group commit gets its rate
//! from many appends waiting on one fdatasync.

use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::wire::Write;

use super::{Log, LogError};

/// How one append-rate run went.
#[derive(Debug, Clone, Copy)]
pub struct AppendRate {
    /// Durable appends of `value_size`-byte writes per second.
    pub records_per_s: f64,
    /// fdatasyncs the log issued during the run.
    pub syncs: u64,
}

/// Durable writes per second appending `tasks × appends_per_task × batch`
/// distinct keys with `value_size`-byte values.
pub async fn measure_append_rate(
    log: &Log,
    tasks: u64,
    batch: u64,
    appends_per_task: u64,
    value_size: usize,
) -> Result<AppendRate, LogError> {
    let value = Bytes::from(vec![0xa5u8; value_size]);
    let syncs_before = log.stats().syncs;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let (log, value) = (log.clone(), value.clone());
        set.spawn(async move {
            for a in 0..appends_per_task {
                let writes: Vec<Write> = (0..batch)
                    .map(|i| {
                        let n = (t * appends_per_task + a) * batch + i;
                        Write::put(format!("key-{n:010}"), value.clone(), n + 1, 1)
                    })
                    .collect();
                log.append(&writes).await?;
            }
            Ok::<(), LogError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(r) => r?,
            // A panicking task is a bug, not a measurement: pass it on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(AppendRate {
        records_per_s: (tasks * appends_per_task * batch) as f64 / secs,
        syncs: log.stats().syncs - syncs_before,
    })
}
