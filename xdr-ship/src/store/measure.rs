//! Throughput of [`Store::apply`], for `cargo xtask bench` and for runs by
//! hand. Not a test: a number, not a verdict.
//!
//! `concurrency` tasks claim keys from a shared counter and apply them,
//! `batch` writes per call, until `n` distinct keys are written once. Each
//! call waits for its own durability, so the numbers obey Little's law:
//! `rate ≤ concurrency × batch / apply latency`. With `Durability::Sync` the
//! latency is at least one fdatasync, so single-write calls from 64 tasks
//! cannot beat `64 / fdatasync time` whatever the engine; the receiver gets
//! its rate from many writes in flight (BATCH frames and deep pipelines),
//! which is what `batch` models.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::wire::Write;

use super::{Store, StoreError};

/// Writes per second applying `n` keys with `value_size`-byte values from
/// `concurrency` tasks, one write per `apply` call.
pub async fn measure_apply_rate(
    store: &Store,
    n: usize,
    value_size: usize,
    concurrency: usize,
) -> Result<f64, StoreError> {
    measure_apply_rate_batched(store, n, value_size, concurrency, 1).await
}

/// As [`measure_apply_rate`], with `batch` writes per `apply` call.
///
/// Versions are the wall clock in microseconds at the start of the run, so a
/// second run over the same store applies again instead of losing every
/// conflict.
pub async fn measure_apply_rate_batched(
    store: &Store,
    n: usize,
    value_size: usize,
    concurrency: usize,
    batch: usize,
) -> Result<f64, StoreError> {
    let batch = batch.max(1);
    // Incompressible values (fjall compresses blocks with lz4; a constant
    // value would measure the compressor, not the disk), each a different
    // window of one random pool so that no two records are equal.
    let pool = random_pool(value_size + POOL_SLACK);
    let version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let keys: Arc<Vec<Bytes>> = Arc::new(
        (0..n)
            .map(|i| Bytes::from(format!("key-{i:010}")))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (store, pool, keys, next) = (
            store.clone(),
            pool.clone(),
            Arc::clone(&keys),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= keys.len() {
                    return Ok::<(), StoreError>(());
                }
                let last = (first + batch).min(keys.len());
                let writes = keys[first..last]
                    .iter()
                    .zip(first..last)
                    .map(|(k, i)| {
                        let at = (i * 4099) % (POOL_SLACK + 1);
                        Write::put(k.clone(), pool.slice(at..at + value_size), version, 1)
                    })
                    .collect();
                store.apply(writes).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| StoreError::ThreadPanicked(format!("measure task: {e}")))??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Extra random bytes past one value: how many different value windows the
/// pool offers.
const POOL_SLACK: usize = 1 << 20;

/// `len` pseudo-random bytes (xorshift64*; fast, and random enough to defeat
/// lz4).
fn random_pool(len: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}
