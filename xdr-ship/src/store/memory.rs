//! The `--memory` store: lock-striped hash maps, same last-writer-wins rule,
//! no disk.
//!
//! Why stripes of `parking_lot::Mutex<HashMap>` and not worker threads like
//! the durable engine: there is no I/O to keep off the runtime, an apply is
//! a hash lookup and a small copy (well under a microsecond), so handing it
//! to another thread would cost more than doing it. Many more stripes than
//! cores keep two tasks from meeting on the same lock unless they write the
//! same key, which they must serialize on anyway.
//!
//! Why the hot path looks like this (profiled on loopback, 1 KB records,
//! where this store was 45% of the receiver's CPU): hashing went through
//! `Xxh3Builder`, which derives a fresh 192-byte secret from its seed for
//! every key hashed, and each apply hashed the key three times (stripe,
//! lookup, update) and allocated a new value. Now a key is hashed once per
//! map probe with the one-shot xxh3 ([`OneShotXxh3`]), an existing key is
//! found and updated in one probe, and an overwritten value reuses the
//! stored buffer when it is large enough: steady-state overwrites allocate
//! nothing.
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::wire::Write;

use super::record::{shard_of, DigestAcc, Stamp};
use super::{ApplyOutcome, StoreDigest, StoreError, StoreStats, StoredRecord};

/// Aligns a stripe to its own cache lines (128 bytes covers adjacent-line
/// prefetch on x86), so two cores taking neighbouring locks do not bounce
/// one line between them.
#[repr(align(128))]
struct Padded<T>(T);

/// A map hasher that runs the one-shot xxh3 over each `write` (a key's
/// bytes; its length prefix is folded in as a number), seeded per map from
/// std's random source so that colliding keys stay hard to craft.
#[derive(Clone, Copy)]
struct OneShotXxh3 {
    seed: u64,
}

impl OneShotXxh3 {
    fn new() -> Self {
        OneShotXxh3 {
            seed: std::hash::RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for OneShotXxh3 {
    type Hasher = OneShotHasher;
    fn build_hasher(&self) -> OneShotHasher {
        OneShotHasher { state: self.seed }
    }
}

/// See [`OneShotXxh3`].
struct OneShotHasher {
    state: u64,
}

impl Hasher for OneShotHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }
    fn write_usize(&mut self, n: usize) {
        // The length prefix `Hash for [u8]` writes first: mixed in, not hashed.
        self.state = (self.state ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.state
    }
}

/// What the store keeps per key. The value is an owned buffer (not a
/// `Bytes` slice of the network frame, which would keep the whole frame
/// alive), overwritten in place by a newer write when it fits.
struct Slot {
    /// `None`: a tombstone.
    value: Option<Vec<u8>>,
    stamp: Stamp,
}

impl Slot {
    fn set(&mut self, w: &Write) {
        self.stamp = Stamp::of(w);
        match (&mut self.value, &w.value) {
            (Some(buf), Some(v)) if buf.capacity() <= 2 * v.len().max(SLOT_MIN_CAPACITY) => {
                buf.clear();
                buf.extend_from_slice(v);
            }
            (slot, v) => *slot = v.as_deref().map(<[u8]>::to_vec),
        }
    }

    fn record(&self) -> StoredRecord {
        StoredRecord {
            value: self.value.as_deref().map(Bytes::copy_from_slice),
            version: self.stamp.version,
            source_id: self.stamp.source_id,
        }
    }
}

/// A stored buffer is reused for a smaller value only while it is at most
/// twice that size (or this small): a key that once held a large value
/// does not pin that much memory forever.
const SLOT_MIN_CAPACITY: usize = 64;

struct Stripe {
    map: HashMap<Box<[u8]>, Slot, OneShotXxh3>,
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
                        map: HashMap::with_hasher(OneShotXxh3::new()),
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
        Ok(writes.iter().map(|w| self.apply_one(w)).collect())
    }

    /// One probe for a key already stored (the steady state of a key
    /// space being overwritten), two for a new one.
    fn apply_one(&self, w: &Write) -> ApplyOutcome {
        let incoming = Stamp::of(w);
        let mut stripe = self.stripe(&w.key).lock();
        let stripe = &mut *stripe;
        match stripe.map.get_mut(&w.key[..]) {
            Some(slot) if incoming <= slot.stamp => {
                stripe.lost_conflict += 1;
                return ApplyOutcome::LostConflict;
            }
            Some(slot) => slot.set(w),
            None => {
                // Copy the key: on the receive path it is a slice of a whole
                // network frame (see `Slot`).
                let mut slot = Slot {
                    value: None,
                    stamp: incoming,
                };
                slot.set(w);
                stripe.map.insert(Box::from(&w.key[..]), slot);
            }
        }
        stripe.applied += 1;
        ApplyOutcome::Applied
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<StoredRecord> {
        self.stripe(key).lock().map.get(key).map(Slot::record)
    }

    pub(crate) fn stripe_count(&self) -> usize {
        self.stripes.len()
    }

    pub(crate) fn live_keys(&self, stripe: usize) -> Vec<Box<[u8]>> {
        let Some(stripe) = self.stripes.get(stripe) else {
            return Vec::new();
        };
        let stripe = stripe.0.lock();
        stripe
            .map
            .iter()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn digest(&self) -> StoreDigest {
        let mut acc = DigestAcc::default();
        for stripe in self.stripes.iter() {
            let stripe = stripe.0.lock();
            for (k, slot) in &stripe.map {
                acc.add(k, slot.value.as_deref(), slot.stamp);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &MemoryStore, value: &[u8], version: u64) -> ApplyOutcome {
        let w = Write::put(&b"k"[..], Bytes::copy_from_slice(value), version, 1);
        store.apply(vec![w]).expect("open store")[0]
    }

    #[test]
    fn overwrites_in_place_return_exactly_the_newest_value_whatever_its_size() {
        let store = MemoryStore::new(4);
        for (version, value) in [
            (1, vec![1u8; 1000]),
            (2, vec![2u8; 10]),
            (3, vec![3u8; 5000]),
            (4, vec![]),
            (5, vec![5u8; 999]),
        ] {
            assert_eq!(put(&store, &value, version), ApplyOutcome::Applied);
            let got = store.get(b"k").expect("stored");
            assert_eq!(got.value.as_deref(), Some(&value[..]), "version {version}");
            assert_eq!(got.version, version);
        }
    }

    #[test]
    fn a_key_that_held_a_large_value_does_not_keep_its_buffer_for_a_small_one() {
        let store = MemoryStore::new(1);
        put(&store, &[7u8; 1 << 20], 1);
        put(&store, &[8u8; 100], 2);
        let stripe = store.stripe(b"k").lock();
        let slot = stripe.map.get(&b"k"[..]).expect("stored");
        let capacity = slot.value.as_ref().expect("a value").capacity();
        assert!(capacity < 1 << 10, "kept {capacity} bytes for 100");
    }

    #[test]
    fn a_tombstone_then_a_put_on_the_same_key_stores_the_put() {
        let store = MemoryStore::new(1);
        put(&store, b"v1", 1);
        let t = Write::tombstone(&b"k"[..], 2, 1);
        assert_eq!(store.apply(vec![t]).unwrap()[0], ApplyOutcome::Applied);
        assert!(store.get(b"k").unwrap().is_tombstone());
        assert_eq!(put(&store, b"v1", 2), ApplyOutcome::LostConflict);
        assert_eq!(put(&store, b"v3", 3), ApplyOutcome::Applied);
        assert_eq!(store.get(b"k").unwrap().value.as_deref(), Some(&b"v3"[..]));
    }
}
