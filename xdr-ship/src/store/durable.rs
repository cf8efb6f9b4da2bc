//! The durable engine: an append-only value log with the version index in
//! memory, group-committed fdatasync, replayed on open, compacted behind.
//!
//! ```text
//!  apply (tokio task) ──bounded mpsc──▶ writer thread: LWW check in the index stripe,
//!        ▲                              │ index → new place, one write() per batch
//!        │ oneshot reply                │
//!        │                 Os: reply ◀──┤
//!        └── committer thread: gather, one fdatasync of the active segment,
//!            reply to all ◀─────────────┘ Sync: bounded sync_channel
//!  compactor thread: copies the live entries of mostly-dead segments through
//!  the writer, waits for their fdatasync, deletes the segment
//! ```
//!
//! # Decision: our own value log, not fjall (numbers below)
//!
//! The store used to be fjall 3 (an LSM tree: journal + memtable, values of
//! ≥ 1 KiB in blob files). It could not keep up with the disk, for two
//! measured reasons:
//!
//! - **Every value is written twice.** Journal, then blob file at memtable
//!   flush: the process wrote ~1.9 bytes per byte of value (`write_bytes`).
//!   So the best fjall can do is about half the disk, and reaching the
//!   target of 150K records/s of 1 KiB (156 MB/s of values) needs ~300 MB/s
//!   of disk, more than a 202 MB/s disk has. No configuration removes the
//!   second write: without key-value separation the SST flush and compaction
//!   rewrite the values instead.
//! - **Its cost per write, not the disk, bounded it on fast disks**
//!   (0.14–0.27× of 453–1,145 MB/s): memtable inserts, journal encoding,
//!   flush and compaction threads on a 2-core machine, and a journal lock
//!   held during every fdatasync, so appends stopped while a commit synced.
//!
//! The workload needs little of what an LSM offers: writes only, point
//! reads rare (tests, digests), and the LWW check was already served by an
//! in-memory version index (a point read in fjall cost 4–6 µs against
//! 0.4 µs). So the index now also says where each key's newest record is,
//! and the disk holds only an append-only log of records (Bitcask's
//! design): each value is written once, plus a 29-byte header.
//!
//! # Measurements (this machine: 2 cores shared with other helpers' builds,
//! ext4 on a virtio disk, release build, 1000-byte incompressible values,
//! 100K keys, 64 tasks; `store_throughput_against_the_disk` in `tests.rs`,
//! same process and minute for the disk row)
//!
//! | engine | writes per `apply` | records/s | × disk | bytes written per value byte |
//! |---|---|---|---|---|
//! | disk: 1 MiB writes + fdatasync | | 365–383 MB/s | 1 | |
//! | fjall, `Sync` | 1 | 89K | 0.23 | 1.77 |
//! | fjall, `Sync` | 16 | 273K | 0.71 | 1.71 |
//! | fjall, `Sync` | 64 | 340K | 0.89 | 1.72 |
//! | value log, `Sync` | 1 | 138K–149K | 0.38 | 1.11 |
//! | value log, `Sync` | 16 | 399K–633K | 1.04–1.74 | 1.05 |
//! | value log, `Sync` | 64 | 562K–807K | 1.47–2.21 | 1.04 |
//!
//! (load average 1.1–1.3; with the machine busy, load 6, fjall gave
//! 77K / 90K / 128K.) Above 1× the disk because a group commit syncs ~2 MB
//! at once while the next group is written, against the disk row's 1 MiB
//! per fdatasync. These 100 MB runs are shorter than the point where fjall
//! must also flush and compact what it journaled, so its sustained rate is
//! lower still; its bytes written per value byte are the measure of that
//! debt. Single-write calls are bounded by Little's law (64 in flight / one
//! commit cycle), not by the engine.
//!
//! End to end, `ship --generate max,1000,100000` → `recv --store` on
//! loopback for 8 s, with `dd bs=1M count=1024 conv=fdatasync` in the same
//! run (load 7–8, other builds running): dd 186 MB/s, store 152K records/s
//! = 158 MB/s = 0.85× dd, `recv --memory` 172K; dd 323 MB/s, store 199K
//! records/s = 207 MB/s = 0.64× dd, `recv --memory` 276K. The CPU both
//! ends share is the limit there, not the disk. The store stayed at
//! 162–171 MB on disk for 1.2–1.6 GB written over 100K keys (compaction
//! running during the measurement). Before, with fjall: 0.14–0.27× of a 453–1,145 MB/s disk and
//! 0.58× = 113.6K records/s of a 202 MB/s one.
//!
//! Layout: this file holds the shared state, the apply path and close;
//! `durable/open.rs` builds the state from a recovered directory and
//! starts the threads, `durable/read.rs` answers reads, digests and
//! stats. The threads' work is in writer.rs, compact.rs, recover.rs and
//! vlog.rs beside it.
//!
//! # Files
//!
//! Segments `NNNNNNNNNN.vlog` of CRC-checked entries (`vlog.rs`), one active
//! (appended to), the others sealed; a `LOCK` file held with `flock` so two
//! processes never open one store.
//!
//! # The version index
//!
//! `stripes` hash maps (xxh3, see `record::key_hasher`), each behind a lock:
//! key → `(version, source_id)` and `(segment, offset, length)` of its
//! newest record. Cost: the key's bytes plus about 85 bytes per key (16-byte
//! box, 40-byte slot, hash-table slot and control byte at up to 7/8 load,
//! allocator header): ~100 MB per million 16-byte keys. Open rebuilds it by
//! reading every segment once (later entries win ties: they are compaction
//! copies of the same record).
//!
//! # Group commit
//!
//! With `Durability::Sync`, the writer hands each job to the committer only
//! after its entries are written (to the page cache). The committer takes
//! the first job, then keeps gathering until nothing is left between
//! `apply` and itself (the `inflight` counter is zero), the group holds
//! `max_group_jobs`, or `group_commit_delay` has passed; it reads how far
//! the active segment is written, fdatasyncs it and answers every job of
//! the group (each was written before the sync started). A sealed segment
//! was synced whole by the writer before it stopped being active, so one
//! sync of the active segment covers everything written so far. The writer
//! keeps appending the next group during the sync.
//!
//! # Compaction
//!
//! Each segment counts the bytes of entries the index points at (`live`).
//! A sealed segment whose live bytes fall below `compact_live_ratio` of its
//! length is compacted: its live entries are copied (bytes verbatim)
//! through the writer, which re-points a key only if the index still places
//! it where the compactor found it; once an fdatasync covers the copies
//! (and with them every write that made the segment's other entries dead),
//! the segment is deleted. A crash at any point leaves either the segment
//! (its records then tie with or lose to the copies) or the durable copies.
//! Tombstones are copied like values: they are never purged.
//!
//! # Bounds (backpressure by awaiting, never by buffering)
//!
//! - the writer's channel holds `queue_depth` jobs; `apply` awaits a free
//!   slot (`reserve`) before it counts a job in flight;
//! - the committer channel holds `commit_queue_depth` jobs; the writer
//!   blocks on it, which makes `apply` wait;
//! - a writer batch stops growing at `max_batch_writes`, a commit group at
//!   `max_group_jobs`, a compaction copy at `MOVE_BATCH_BYTES`.
//!
//! # Failure
//!
//! After a failed write or fdatasync the store is poisoned: every later
//! write is answered [`StoreError::Poisoned`] (retryable: the shipper
//! resends) until it is reopened, and recovery keeps what is provably on
//! disk (a retried fdatasync proves nothing). Nothing that failed was
//! acked.

mod open;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::wire::Write;

use super::record::Stamp;
use super::vlog::segment_name;
use super::writer::{Job, Msg};
use super::{key_hex, ApplyOutcome, Durability, StoreError};

/// Where an entry is: segment id, byte offset, entry length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub segment: u32,
    pub offset: u64,
    pub len: u64,
}

/// What the index knows of a key: its newest record's stamp and place.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub stamp: Stamp,
    pub loc: Loc,
}

/// One stripe of the version index.
pub(super) type VersionIndex = HashMap<Box<[u8]>, Slot, Xxh3Builder>;

/// Internal knobs. Not part of [`StoreConfig`] because nobody should need
/// to turn them; tests shrink them to make bounds and compaction
/// observable.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Jobs (one per `apply` call) queued for the writer.
    pub queue_depth: usize,
    /// Jobs waiting for the committer.
    pub commit_queue_depth: usize,
    /// Most jobs one fdatasync completes.
    pub max_group_jobs: usize,
    /// The writer stops draining its queue into one batch here.
    pub max_batch_writes: usize,
    /// A segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// A sealed segment is compacted once its live bytes fall below this
    /// share of its length.
    pub compact_live_ratio: f64,
    /// How often the compactor looks for work (it is also woken when a
    /// segment is sealed).
    pub compact_interval: Duration,
    /// Test hook: the writer holds this read lock while it handles a batch,
    /// so a test holding the write lock stalls it.
    #[cfg(test)]
    pub gate: Option<Arc<parking_lot::RwLock<()>>>,
}

/// Default [`Tuning::segment_bytes`]: 64 MiB, so a sealed segment's
/// compaction copies at most that much, and offsets stay small.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Default [`Tuning::compact_live_ratio`]: at most about twice the live
/// data on disk (plus the active segment).
const COMPACT_LIVE_RATIO: f64 = 0.5;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            queue_depth: 1024,
            commit_queue_depth: 4096,
            max_group_jobs: 8192,
            max_batch_writes: 4096,
            segment_bytes: SEGMENT_BYTES,
            compact_live_ratio: COMPACT_LIVE_RATIO,
            compact_interval: Duration::from_secs(1),
            #[cfg(test)]
            gate: None,
        }
    }
}

/// One segment file.
pub(super) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    /// Opened for append and positioned reads.
    pub file: File,
    /// Bytes written: every entry below this is wholly in the file.
    pub len: AtomicU64,
    /// Bytes of the entries the index points at.
    pub live: AtomicU64,
}

/// Why the store takes no more writes (the first failure's reason).
#[derive(Debug, Clone)]
pub(super) struct StoreFailed(pub String);

impl StoreFailed {
    pub(super) fn to_error(&self, path: &Path) -> StoreError {
        StoreError::Poisoned {
            path: path.to_owned(),
            reason: self.0.clone(),
        }
    }
}

/// What the store's threads and handles share.
pub(super) struct Shared {
    pub path: PathBuf,
    pub stripes: Box<[Mutex<VersionIndex>]>,
    pub segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// The active segment and the bytes written since open: what one
    /// fdatasync of it makes durable. Updated together by the writer.
    pub active: Mutex<(Arc<Segment>, u64)>,
    failed: Mutex<Option<String>>,
    pub applied: AtomicU64,
    pub lost_conflict: AtomicU64,
    pub commits: AtomicU64,
    pub committed_writes: AtomicU64,
    pub compactions: AtomicU64,
    pub apply_latency: Mutex<Histogram<u64>>,
    pub commit_latency: Mutex<Histogram<u64>>,
    /// Writes acknowledged by each successful fdatasync (group commit size).
    pub commit_writes: Mutex<Histogram<u64>>,
    /// The compactor's wake-up: `true` asks it to stop.
    compactor_stop: Mutex<bool>,
    compactor_wake: Condvar,
}

impl Shared {
    pub(super) fn check_failed(&self) -> Result<(), StoreFailed> {
        match &*self.failed.lock() {
            Some(why) => Err(StoreFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// Poisons the store (keeping the first reason) and returns the failure.
    pub(super) fn fail(&self, reason: String) -> StoreFailed {
        tracing::error!("store at {}: {reason}; no more writes", self.path.display());
        let mut failed = self.failed.lock();
        StoreFailed(failed.get_or_insert(reason).clone())
    }

    pub(super) fn wake_compactor(&self) {
        self.compactor_wake.notify_all();
    }

    /// Waits up to `timeout` for a wake-up; true when asked to stop.
    pub(super) fn compactor_wait(&self, timeout: Duration) -> bool {
        let mut stop = self.compactor_stop.lock();
        if !*stop {
            self.compactor_wake.wait_for(&mut stop, timeout);
        }
        *stop
    }

    pub(super) fn compactor_stopping(&self) -> bool {
        *self.compactor_stop.lock()
    }
}

struct Threads {
    writer: JoinHandle<()>,
    committer: JoinHandle<()>,
    compactor: JoinHandle<()>,
}

pub(crate) struct DurableStore {
    path: PathBuf,
    durability: Durability,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    /// Jobs handed to the writer and not yet answered or handed to the
    /// committer.
    inflight: Arc<AtomicUsize>,
    closed: AtomicBool,
    /// The held `LOCK` file; `close` drops it so the directory can be
    /// reopened at once.
    lock: Mutex<Option<File>>,
    threads: tokio::sync::Mutex<Option<Threads>>,
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `id` in `dir` (and makes its name durable).
pub(super) fn create_segment(dir: &Path, id: u32) -> Result<Segment, StoreError> {
    let path = dir.join(segment_name(id));
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(open_err)?;
    sync_dir(dir).map_err(open_err)?;
    Ok(Segment {
        id,
        path,
        file,
        len: AtomicU64::new(0),
        live: AtomicU64::new(0),
    })
}

impl DurableStore {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn apply(&self, writes: Vec<Write>) -> Result<Vec<ApplyOutcome>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        // Reserve first, count second, send third, with no await between the
        // last two: a cancelled `apply` never leaves `inflight` raised.
        let permit = self.tx.reserve().await.map_err(|_| StoreError::Closed)?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        permit.send(Msg::Apply(Job {
            writes,
            reply,
            started: Instant::now(),
        }));
        // A dropped reply means the writer exited before answering: the
        // store was closed (or a thread died, which `close` reports).
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let mut threads = self.threads.lock().await;
        let Some(t) = threads.take() else {
            return Ok(());
        };
        self.closed.store(true, Ordering::Release);
        *self.shared.compactor_stop.lock() = true;
        self.shared.wake_compactor();
        let (shared, tx) = (Arc::clone(&self.shared), self.tx.clone());
        let lock = self.lock.lock().take();
        tokio::task::spawn_blocking(move || {
            let mut panicked = None;
            // First the compactor: it may be waiting for the writer.
            if t.compactor.join().is_err() {
                panicked = Some("store-compact");
            }
            // Fails only if the writer is already gone; joining says why.
            let _ = tx.blocking_send(Msg::Stop);
            if t.writer.join().is_err() {
                panicked = Some("store-write");
            }
            // The writer held the committer's only sender: it drains what
            // it was sent, commits it, and exits.
            if t.committer.join().is_err() {
                panicked = Some("store-commit");
            }
            let active = Arc::clone(&shared.active.lock().0);
            let synced = match shared.check_failed() {
                Ok(()) => active.file.sync_all().map_err(|source| StoreError::Commit {
                    path: active.path.clone(),
                    source,
                }),
                Err(failed) => Err(failed.to_error(&shared.path)),
            };
            drop(lock);
            synced?;
            match panicked {
                Some(name) => Err(StoreError::ThreadPanicked(name.into())),
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| StoreError::ThreadPanicked("store close".into()))?
    }
}

pub(super) fn corrupt(path: &Path, key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        key: key_hex(key),
        reason: e.to_string(),
    }
}
