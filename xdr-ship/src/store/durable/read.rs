//! The durable store's reads: a key's newest record from the index and
//! its segment, the live keys of a stripe, the digest, the counters and
//! histograms.
//!
//! Why a file of its own: reads take none of the write path's machinery
//! (no channel, no thread); they share only the index and the segments,
//! under the locks the compactor also takes.
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::record::{decode, shard_of, DigestAcc, Stamp};
use super::super::vlog::parse_entry;
use super::super::{key_hex, StoreDigest, StoreError, StoreStats, StoredRecord};
use super::{corrupt, DurableStore};

/// How long `get` waits for the writer to finish writing an entry the
/// index already points at (it is mid-`write`; microseconds in practice).
const GET_WAIT: Duration = Duration::from_secs(5);
/// Pause between two looks at such an entry.
const GET_RETRY: Duration = Duration::from_micros(50);

impl DurableStore {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        let deadline = Instant::now() + GET_WAIT;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            if let Some(found) = self.try_get(key)? {
                return Ok(found);
            }
            // The index points at an entry still being written.
            if let Err(failed) = self.shared.check_failed() {
                return Err(failed.to_error(&self.path));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    key: key_hex(key),
                    reason: format!("its entry was not written within {GET_WAIT:?}"),
                });
            }
            std::thread::sleep(GET_RETRY);
        }
    }

    /// `Some(answer)`, or `None` while the writer has not yet written the
    /// entry the index points at.
    fn try_get(&self, key: &[u8]) -> Result<Option<Option<StoredRecord>>, StoreError> {
        let stripes = &self.shared.stripes;
        // Held while reading: the entry cannot be moved (and its segment
        // deleted) by the compactor meanwhile.
        let index = stripes[shard_of(key, stripes.len())].lock();
        let Some(slot) = index.get(key).copied() else {
            return Ok(Some(None));
        };
        let Some(seg) = self.shared.segments.read().get(&slot.loc.segment).cloned() else {
            return Ok(None);
        };
        if seg.len.load(Ordering::Acquire) < slot.loc.offset + slot.loc.len {
            return Ok(None);
        }
        let mut raw = vec![0u8; slot.loc.len as usize];
        seg.file
            .read_exact_at(&mut raw, slot.loc.offset)
            .map_err(|source| StoreError::Read {
                path: seg.path.clone(),
                source,
            })?;
        drop(index);
        let (_, rec) = parse_entry(&raw).map_err(|e| corrupt(&seg.path, key, e))?;
        let record = decode(rec).map_err(|e| corrupt(&seg.path, key, e))?;
        Ok(Some(Some(record)))
    }

    pub(crate) fn stripe_count(&self) -> usize {
        self.shared.stripes.len()
    }

    pub(crate) fn live_keys(&self, stripe: usize) -> Result<Vec<Box<[u8]>>, StoreError> {
        let Some(stripe) = self.shared.stripes.get(stripe) else {
            return Ok(Vec::new());
        };
        let keys: Vec<Box<[u8]>> = stripe.lock().keys().cloned().collect();
        let mut live = Vec::with_capacity(keys.len());
        for key in keys {
            if matches!(self.get(&key)?, Some(r) if !r.is_tombstone()) {
                live.push(key);
            }
        }
        Ok(live)
    }

    pub(crate) fn digest(&self) -> Result<StoreDigest, StoreError> {
        let mut acc = DigestAcc::default();
        for stripe in self.shared.stripes.iter() {
            let keys: Vec<Box<[u8]>> = stripe.lock().keys().cloned().collect();
            for key in keys {
                let Some(r) = self.get(&key)? else { continue };
                let stamp = Stamp::of_record(&r);
                acc.add(&key, r.value.as_deref(), stamp);
            }
        }
        Ok(acc.finish())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let sh = &self.shared;
        let commits = sh.commits.load(Ordering::Relaxed);
        let committed_writes = sh.committed_writes.load(Ordering::Relaxed);
        let (mut segments, mut disk_bytes, mut live_bytes) = (0, 0, 0);
        for s in sh.segments.read().values() {
            segments += 1;
            disk_bytes += s.len.load(Ordering::Relaxed);
            live_bytes += s.live.load(Ordering::Relaxed);
        }
        let mut stats = StoreStats {
            engine: "vlog",
            durability: Some(self.durability),
            shards: sh.stripes.len(),
            applied: sh.applied.load(Ordering::Relaxed),
            lost_conflict: sh.lost_conflict.load(Ordering::Relaxed),
            commits,
            committed_writes,
            writes_per_commit: if commits == 0 {
                0.0
            } else {
                committed_writes as f64 / commits as f64
            },
            queued_jobs: self.tx.max_capacity() - self.tx.capacity(),
            segments,
            disk_bytes,
            live_bytes,
            compactions: sh.compactions.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        let latency = sh.apply_latency.lock();
        if !latency.is_empty() {
            stats.apply_latency_p50_us = Some(latency.value_at_quantile(0.5));
            stats.apply_latency_p99_us = Some(latency.value_at_quantile(0.99));
        }
        let commit = sh.commit_latency.lock();
        if !commit.is_empty() {
            stats.commit_latency_p50_us = Some(commit.value_at_quantile(0.5));
            stats.commit_latency_p99_us = Some(commit.value_at_quantile(0.99));
        }
        stats
    }

    /// Copies of the latency and group-commit histograms since open.
    pub(crate) fn histograms(&self) -> super::super::StoreHistograms {
        let sh = &self.shared;
        super::super::StoreHistograms {
            apply_latency_us: sh.apply_latency.lock().clone(),
            commit_latency_us: sh.commit_latency.lock().clone(),
            commit_writes: sh.commit_writes.lock().clone(),
        }
    }
}
