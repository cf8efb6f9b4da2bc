//! The `--memory` store: lock-striped hash maps, same last-writer-wins rule,
//! no disk.
//!
//! Why stripes of `parking_lot::Mutex<HashMap>` and not worker threads like
//! the durable engine: there is no I/O to keep off the runtime, an apply is
//! a hash lookup and a small copy (well under a microsecond), so handing it
//! to another thread would cost more than doing it. Many more stripes than
//! cores keep two tasks from meeting on the same lock unless they write the
//! same key, which they must serialize on anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use xxhash_rust::xxh3::Xxh3Builder;

use crate::wire::Write;

use super::record::{key_hasher, shard_of, DigestAcc, Stamp};
use super::{ApplyOutcome, StoreDigest, StoreError, StoreStats, StoredRecord};

/// Aligns a stripe to its own cache lines (128 bytes covers adjacent-line
/// prefetch on x86), so two cores taking neighbouring locks do not bounce
/// one line between them.
#[repr(align(128))]
struct Padded<T>(T);

struct Stripe {
    map: HashMap<Bytes, StoredRecord, Xxh3Builder>,
    applied: u64,
    lost_conflict: u64,
}

pub(crate) struct MemoryStore {
    stripes: Box<[Padded<Mutex<Stripe>>]>,
    closed: AtomicBool,
}

impl MemoryStore {
    pub(crate) fn new(stripes: usize) -> Self {
        let n = stripes.max(1);
        MemoryStore {
            stripes: (0..n)
                .map(|_| {
                    Padded(Mutex::new(Stripe {
                        map: HashMap::with_hasher(key_hasher()),
                        applied: 0,
                        lost_conflict: 0,
                    }))
                })
                .collect(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn stripes(&self) -> usize {
        self.stripes.len()
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<Stripe> {
        &self.stripes[shard_of(key, self.stripes.len())].0
    }

    pub(crate) fn apply(&self, writes: Vec<Write>) -> Result<Vec<ApplyOutcome>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(writes.into_iter().map(|w| self.apply_one(w)).collect())
    }

    fn apply_one(&self, w: Write) -> ApplyOutcome {
        let incoming = Stamp::of(&w);
        let mut stripe = self.stripe(&w.key).lock();
        let wins = stripe
            .map
            .get(&w.key[..])
            .is_none_or(|old| incoming > Stamp::of_record(old));
        if !wins {
            stripe.lost_conflict += 1;
            return ApplyOutcome::LostConflict;
        }
        // Copy key and value: on the receive path both are slices of a whole
        // network frame, and keeping one slice would keep the entire frame
        // (every other record of its batch) alive for as long as the key.
        let record = StoredRecord {
            value: w.value.as_deref().map(Bytes::copy_from_slice),
            version: w.version,
            source_id: w.source_id,
        };
        match stripe.map.get_mut(&w.key[..]) {
            Some(slot) => *slot = record,
            None => {
                stripe.map.insert(Bytes::copy_from_slice(&w.key), record);
            }
        }
        stripe.applied += 1;
        ApplyOutcome::Applied
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<StoredRecord> {
        self.stripe(key).lock().map.get(key).cloned()
    }

    pub(crate) fn digest(&self) -> StoreDigest {
        let mut acc = DigestAcc::default();
        for stripe in self.stripes.iter() {
            let stripe = stripe.0.lock();
            for (k, r) in &stripe.map {
                acc.add(k, r.value.as_deref(), Stamp::of_record(r));
            }
        }
        acc.finish()
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            engine: "memory",
            shards: self.stripes.len(),
            ..StoreStats::default()
        };
        for stripe in self.stripes.iter() {
            let stripe = stripe.0.lock();
            stats.applied += stripe.applied;
            stats.lost_conflict += stripe.lost_conflict;
        }
        stats
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
