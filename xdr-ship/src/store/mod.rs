//! The destination store: where the receiver applies shipped writes.
//!
//! # Semantics
//!
//! Last-writer-wins on `(version, source_id)`, compared lexicographically:
//! a write is applied iff its stamp is strictly greater than the stored
//! one's (or the key is absent); otherwise it is [`ApplyOutcome::LostConflict`],
//! which the shipper counts as success. That is what makes resends harmless:
//! a write applied twice loses the second time and changes nothing.
//! Tombstones are records without a value that keep their stamp, so a stale
//! put arriving after a delete loses instead of resurrecting the key.
//! Tombstones are never purged (doing so safely needs a horizon agreed with
//! the sources; not built).
//!
//! # Two engines behind one handle
//!
//! [`Store`] is an `Arc` handle, cloned into every connection task.
//!
//! - [`Store::memory`] (`--memory`): lock-striped hash maps; an apply is done
//!   when `apply` returns. See `memory.rs`.
//! - [`Store::open`] with a path: an append-only value log on disk (each
//!   record written once), the version index in memory, a writer thread in
//!   front, a committer thread (group-committed fdatasync) and a compactor
//!   behind. See `durable.rs` for the pipeline, the recovery, and the
//!   measurements that made us replace fjall with it.
//!
//! # Why not an embedded database
//!
//! The workload is write-only, small records, many writers, and the
//! durability unit we want is "one fdatasync for everything written so far"
//! (group commit). fjall 3 (an LSM tree with a journal, used before) wrote
//! every value twice (journal, then blob file) and its per-write cost and
//! journal lock bounded it far below the disk; redb 4 (a copy-on-write
//! B-tree) was slower still in the same test (its commit rewrites pages and
//! syncs per transaction, 269 MB of file for 100 MB of records). The numbers
//! are in `durable.rs`.
//!
//! # Where the I/O happens
//!
//! Never on a tokio runtime thread: the durable engine's writer, committer
//! and compactor are dedicated OS threads; `apply` only sends into a
//! bounded channel and awaits a oneshot reply, and `close` joins threads
//! through `spawn_blocking`. [`Store::get`] and [`Store::digest`] are synchronous
//! reads (the first is a point read, the second a full scan): call them from
//! `spawn_blocking` on a hot async path.

mod committer;
mod compact;
mod durable;
mod measure;
mod memory;
mod record;
mod recover;
#[cfg(test)]
mod tests;
mod vlog;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::wire::Write;

pub use measure::{measure_apply_rate, measure_apply_rate_batched};

/// When `apply` may answer: what a crash right after the ack can lose.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Ack only after an fdatasync that covers the write (shared by every
    /// write waiting at the time: group commit). A machine crash loses
    /// nothing that was acked.
    #[default]
    Sync,
    /// Ack once the write is in the operating system's page cache. A process
    /// crash loses nothing; a machine crash can lose the last few seconds.
    Os,
}

impl Durability {
    /// The command-line / JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Os => "os",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durability name that is neither `sync` nor `os`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {0:?}: expected \"sync\" or \"os\"")]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(Durability::Sync),
            "os" => Ok(Durability::Os),
            _ => Err(ParseDurabilityError(s.to_owned())),
        }
    }
}

/// What happened to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// The write was newer than what was stored and replaced it.
    Applied,
    /// The stored record's `(version, source_id)` is equal or newer; the
    /// write changed nothing. Counts as success for the shipper.
    LostConflict,
}

/// One stored record as [`Store::get`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredRecord {
    /// `None` for a tombstone.
    pub value: Option<Bytes>,
    pub version: u64,
    pub source_id: u64,
}

impl StoredRecord {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// How to open a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Directory of the durable store (created if missing); `None` gives the
    /// memory store.
    pub path: Option<PathBuf>,
    /// When `apply` answers; ignored by the memory store.
    pub durability: Durability,
    /// How long the committer may hold a group open for more writes once it
    /// has one waiter (it commits sooner when no apply is in flight). See
    /// [`DEFAULT_GROUP_COMMIT_DELAY`].
    pub group_commit_delay: Duration,
    /// Lock stripes of the durable store's version index (a key always maps
    /// to the same stripe). The memory store uses 16 lock stripes per shard.
    pub shards: usize,
}

/// Default [`StoreConfig::group_commit_delay`]: 200 µs.
///
/// Why: the committer commits at once when no apply is in flight, and jobs
/// arriving during an fdatasync form the next group by themselves, so the
/// delay only matters while applies keep trickling in. Measured with the
/// fjall engine before this one: no delay at all gave 32–48K single-write
/// syncs/s in one series against 57–79K with 200 µs; 200 µs, 500 µs and 1 ms
/// were within the noise of each other. So the smallest of them: it adds at
/// most 200 µs to an ack, a fraction of one fdatasync (0.35–1 ms here).
pub const DEFAULT_GROUP_COMMIT_DELAY: Duration = Duration::from_micros(200);

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            durability: Durability::Sync,
            group_commit_delay: DEFAULT_GROUP_COMMIT_DELAY,
            shards: default_shards(),
        }
    }
}

impl StoreConfig {
    /// A durable store at `path` with every other setting at its default.
    pub fn durable(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: Some(path.into()),
            ..StoreConfig::default()
        }
    }
}

/// One shard per core the process may use.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Order-independent fingerprint of a store's content, for tests that
/// compare a source with its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StoreDigest {
    /// Records, tombstones included.
    pub records: u64,
    /// Of which tombstones.
    pub tombstones: u64,
    /// Wrapping sum of xxh3 over each `(key, value, version, source_id)`.
    pub hash: u64,
}

/// Counters since the store was opened (not persisted).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct StoreStats {
    /// `"memory"` or `"vlog"`.
    pub engine: &'static str,
    /// `None` for the memory store.
    pub durability: Option<Durability>,
    /// Index stripes (durable) or lock stripes (memory).
    pub shards: usize,
    /// Writes that replaced the stored record.
    pub applied: u64,
    /// Writes that were not newer than the stored record.
    pub lost_conflict: u64,
    /// fdatasync calls made by the committer (group commits).
    pub commits: u64,
    /// Writes acked by those commits (applied or lost).
    pub committed_writes: u64,
    /// `committed_writes / commits`: how well group commit groups.
    pub writes_per_commit: f64,
    /// Apply jobs queued in the shard channels right now.
    pub queued_jobs: usize,
    /// Apply latency, from `apply` handing a job to its shard to the reply
    /// (durable store only; the memory store answers inline).
    pub apply_latency_p50_us: Option<u64>,
    pub apply_latency_p99_us: Option<u64>,
    /// Time one fdatasync of the active segment takes.
    pub commit_latency_p50_us: Option<u64>,
    pub commit_latency_p99_us: Option<u64>,
    /// Segment files of the durable store.
    pub segments: usize,
    /// Bytes of those segments.
    pub disk_bytes: u64,
    /// Bytes of the records the index points at (the rest awaits
    /// compaction).
    pub live_bytes: u64,
    /// Segments compacted away since open.
    pub compactions: u64,
}

/// The durable store's distributions since open, for an exporter.
#[derive(Clone, Debug)]
pub struct StoreHistograms {
    /// From `apply` handing a job to its shard to the reply, microseconds.
    pub apply_latency_us: hdrhistogram::Histogram<u64>,
    /// One fdatasync of the active segment, microseconds.
    pub commit_latency_us: hdrhistogram::Histogram<u64>,
    /// Writes acknowledged by one fdatasync (the group commit's size).
    pub commit_writes: hdrhistogram::Histogram<u64>,
}

/// Everything that can go wrong in the store. Paths say which store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the store directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another process holds the store at {} open", .0.display())]
    Locked(PathBuf),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("syncing {}: {source}", path.display())]
    Commit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store segment {} is damaged at byte {offset}: {reason}", path.display())]
    CorruptSegment {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record for key {key} in the store at {} is damaged: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        /// Hex of the key's first bytes.
        key: String,
        reason: String,
    },
    #[error(
        "the store at {} refuses writes after an earlier failure ({reason}); reopen it",
        path.display()
    )]
    Poisoned { path: PathBuf, reason: String },
    /// The filesystem has no room: nothing of the batch was kept; the same
    /// writes may succeed once space is freed (answered `Busy`).
    #[error(
        "the disk under the store at {} is full ({reason}); retry once space is freed",
        path.display()
    )]
    Full { path: PathBuf, reason: String },
    #[error("starting store thread {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store thread {0} stopped abnormally (panicked)")]
    ThreadPanicked(String),
    #[error("write {index} of the batch cannot be stored: {reason}")]
    InvalidWrite { index: usize, reason: String },
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether the same write may succeed later (after a restart or reopen):
    /// the receiver answers retryable errors with a retryable result code and
    /// the shipper resends; the others are permanent for that write.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            StoreError::InvalidWrite { .. }
                | StoreError::Config(_)
                | StoreError::Corrupt { .. }
                | StoreError::CorruptSegment { .. }
        )
    }
}

/// Longest key either engine accepts (the wire allows longer keys, so the
/// store checks): 64 KiB - 1, as before, so that both engines and earlier
/// versions accept the same input.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// Longest value either engine accepts: a value-log entry's body (key
/// length, key, 17-byte record header, value) must fit its u32 length.
pub const MAX_VALUE_LEN: usize = u32::MAX as usize - record::HEADER_LEN - 4 - MAX_KEY_LEN;

/// Reject, before anything is applied, writes no engine can store: an
/// empty or too long key, a too long value. Both engines check, so that
/// `--memory` and a durable store accept the same input.
fn validate(writes: &[Write]) -> Result<(), StoreError> {
    for (index, w) in writes.iter().enumerate() {
        let reason = if w.key.is_empty() {
            "the key is empty".to_owned()
        } else if w.key.len() > MAX_KEY_LEN {
            format!("the key is {} bytes, over {MAX_KEY_LEN}", w.key.len())
        } else if w.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_LEN) {
            format!("the value is over {MAX_VALUE_LEN} bytes")
        } else {
            continue;
        };
        return Err(StoreError::InvalidWrite { index, reason });
    }
    Ok(())
}

/// Which engine a [`Store`] handle points at.
enum Engine {
    Memory(memory::MemoryStore),
    Durable(durable::DurableStore),
}

/// Handle to the destination store. Cheap to clone (an `Arc`); every clone
/// sees the same data.
#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.engine {
            Engine::Memory(m) => f
                .debug_struct("Store")
                .field("engine", &"memory")
                .field("stripes", &m.stripes())
                .finish(),
            Engine::Durable(d) => f
                .debug_struct("Store")
                .field("engine", &"vlog")
                .field("path", &d.path())
                .finish(),
        }
    }
}

impl Store {
    /// Open the store `cfg` describes: durable at `cfg.path` (existing data
    /// is kept and readable), or in memory when the path is `None`.
    ///
    /// Opening a durable store reads it once to rebuild the in-memory
    /// version index (cutting a torn tail left by a crash); it spawns a
    /// writer, a committer and a compactor thread.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        if cfg.shards == 0 {
            return Err(StoreError::Config("shards must be at least 1".into()));
        }
        let engine = match &cfg.path {
            None => Engine::Memory(memory::MemoryStore::new(cfg.shards * 16)),
            Some(_) => Engine::Durable(durable::DurableStore::open(
                &cfg,
                durable::Tuning::default(),
            )?),
        };
        Ok(Store {
            engine: Arc::new(engine),
        })
    }

    /// The `--memory` store: nothing touches the disk; `apply` completes at
    /// once.
    pub fn memory() -> Store {
        Store {
            engine: Arc::new(Engine::Memory(memory::MemoryStore::new(
                (default_shards() * 16).next_power_of_two(),
            ))),
        }
    }

    #[cfg(test)]
    fn open_tuned(cfg: StoreConfig, tuning: durable::Tuning) -> Result<Store, StoreError> {
        Ok(Store {
            engine: Arc::new(Engine::Durable(durable::DurableStore::open(&cfg, tuning)?)),
        })
    }

    /// Apply `writes`; outcome `i` belongs to `writes[i]`. Resolves when the
    /// batch is durable per [`Durability`] (a `LostConflict` also waits, so
    /// that the record it lost to is durable before the shipper forgets the
    /// write). Waits, rather than buffers, when the shards are busy.
    ///
    /// Cancel-safe in the sense that dropping the future never corrupts the
    /// store; writes already handed to a shard are applied anyway.
    pub async fn apply(&self, writes: Vec<Write>) -> Result<Vec<ApplyOutcome>, StoreError> {
        validate(&writes)?;
        match &*self.engine {
            Engine::Memory(m) => m.apply(writes),
            Engine::Durable(d) => d.apply(writes).await,
        }
    }

    /// The record stored under `key`, tombstones included. Applied writes
    /// are visible here before they are durable. Blocking point read.
    pub fn get(&self, key: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        match &*self.engine {
            Engine::Memory(m) => Ok(m.get(key)),
            Engine::Durable(d) => d.get(key),
        }
    }

    /// How many lock stripes the keys are spread over ([`Store::live_keys`]
    /// lists one at a time).
    pub fn stripe_count(&self) -> usize {
        match &*self.engine {
            Engine::Memory(m) => m.stripe_count(),
            Engine::Durable(d) => d.stripe_count(),
        }
    }

    /// The keys of stripe `stripe` that hold a value (tombstones left
    /// out), in no particular order; empty past [`Store::stripe_count`].
    /// Blocking (a durable store reads each key's newest record). What a
    /// read-only door's `SCAN` and `DBSIZE` walk, one stripe per step.
    pub fn live_keys(&self, stripe: usize) -> Result<Vec<Box<[u8]>>, StoreError> {
        match &*self.engine {
            Engine::Memory(m) => Ok(m.live_keys(stripe)),
            Engine::Durable(d) => d.live_keys(stripe),
        }
    }

    /// Order-independent digest of every record. Blocking full scan.
    pub fn digest(&self) -> Result<StoreDigest, StoreError> {
        match &*self.engine {
            Engine::Memory(m) => Ok(m.digest()),
            Engine::Durable(d) => d.digest(),
        }
    }

    /// Counters and latency percentiles since open.
    pub fn stats(&self) -> StoreStats {
        match &*self.engine {
            Engine::Memory(m) => m.stats(),
            Engine::Durable(d) => d.stats(),
        }
    }

    /// The durable store's histograms since open (`None` for the memory
    /// store, which answers inline and never syncs).
    pub fn histograms(&self) -> Option<StoreHistograms> {
        match &*self.engine {
            Engine::Memory(_) => None,
            Engine::Durable(d) => Some(d.histograms()),
        }
    }

    /// Stop accepting writes, finish every queued one, persist everything
    /// (fsync), stop the threads and release the store's directory (so it
    /// can be reopened at once, even while other clones of this handle
    /// live). Idempotent: closing again, or through another clone, returns
    /// `Ok(())`. Other clones get [`StoreError::Closed`] from `apply`
    /// afterwards (and, for a durable store, from `get` and `digest`).
    pub async fn close(self) -> Result<(), StoreError> {
        match &*self.engine {
            Engine::Memory(m) => {
                m.close();
                Ok(())
            }
            Engine::Durable(d) => d.close().await,
        }
    }
}

/// Hex of the first bytes of `key`, for error messages.
pub(crate) fn key_hex(key: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for b in key.iter().take(32) {
        let _ = write!(s, "{b:02x}");
    }
    if key.len() > 32 {
        s.push('…');
    }
    s
}
