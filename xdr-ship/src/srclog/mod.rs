//! The durable source log: what the source node has accepted and not yet
//! delivered everywhere.
//!
//! Why: a shipper that holds writes only in memory loses them when its
//! process dies or a link stays down longer than its buffers last. Ingest
//! appends every write here and acknowledges it only once it is on disk;
//! each destination reads the log from its own checkpoint; a restart
//! resumes from the checkpoint and sends again what follows (duplicates are
//! harmless: the destination keeps the highest version of each key).
//!
//! - **Segments** (`segment`): files of CRC-checked entries, each named by
//!   its first position. Recovery cuts the last segment at the first entry
//!   that does not check out (a write torn by a crash); a bad entry in an
//!   earlier segment is corruption and refuses to open.
//! - **Group commit**: an append writes its entries to the active segment
//!   and waits; one syncer thread `fdatasync`s whatever has been written
//!   since its last sync, so concurrent appenders share one sync. An append
//!   returns only when a sync covering it has completed. A failed sync
//!   fails the log for good (after `fsyncgate`, a retried sync proves
//!   nothing): appends are refused until a restart recovers from disk.
//! - **Checkpoints**: per destination, the first position not yet
//!   acknowledged (every position below it was delivered). The syncer
//!   persists changed checkpoints every `checkpoint_interval`: write a temp
//!   file, fsync, rename over, fsync the directory.
//! - **Reclaim**: a segment is deleted once every destination's persisted
//!   checkpoint has passed its last entry. Only destinations opened in this
//!   process hold segments back.
//! - **Budget**: segments on disk may use at most `budget_bytes`; an append
//!   that does not fit answers [`LogError::Busy`] (retryable) and writes
//!   nothing. Nothing acknowledged is ever dropped to make room.
//! - **Full disk**: an append that finds the filesystem full (`ENOSPC`,
//!   `EDQUOT`) is cut off the file and answers [`LogError::DiskFull`]
//!   (retryable, `Busy` on the ingest port); the log carries on once space
//!   returns. Any other write or sync error fails the log for good and the
//!   error log names the file.
//!
//! [`LogSource`] is the per-destination reader that implements
//! [`crate::ship::Source`].
//!
//! Measured (`source_log_append_rate_against_the_disk` in `tests.rs`,
//! release, 64 tasks appending 64 writes of 1000 bytes each, load average
//! 7–8 from other builds): 360K durable records/s = 360 MB/s of values,
//! 3.1× the same minute's 1 MiB-write + fdatasync rate (117 MB/s) in 56
//! fdatasyncs: group commit makes the log's syncs large, so the log is not
//! what bounds a source node. End to end, `xdr-ship load --threads 16
//! --window 64` → ingest → log → ship → `recv --memory` on loopback gave
//! 54K records/s with `dd bs=1M conv=fdatasync` at 181 MB/s, but the same
//! `load` straight into `recv --memory` (no log, no disk) gave 60K/s: the
//! client and the ingest server's CPU on the shared 2 cores set that rate,
//! not the log.
mod checkpoint;
pub mod ingest;
mod measure;
mod reader;
mod recover;
pub mod segment;
pub mod site;
mod source;
mod syncer;
pub use measure::{measure_append_rate, AppendRate};
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    fs::File,
    io::Write as _,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use tokio::sync::watch;

use crate::wire::Write;
pub use checkpoint::destination_name;
use checkpoint::persist_and_reclaim;
pub(crate) use reader::Reader;
pub use segment::Entry;
pub use source::LogSource;
use syncer::roll;

/// Why the log refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("source log: cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Data on disk is damaged where no crash could have torn it.
    #[error("source log: {} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The disk budget is full until destinations catch up: retry later.
    #[error("source log is full ({used} of {budget} bytes): retry once destinations catch up")]
    Busy {
        /// Bytes on disk.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// The filesystem under the log has no room: nothing of the append was
    /// kept; retry once space is freed (answered `Busy`).
    #[error("the disk under the source log is full ({reason}): retry once space is freed")]
    DiskFull {
        /// The failed operation, with its file.
        reason: String,
    },
    /// The append can never fit the budget.
    #[error("append of {bytes} bytes exceeds the source log's whole budget of {budget} bytes")]
    TooLarge {
        /// Bytes of the append.
        bytes: u64,
        /// The budget.
        budget: u64,
    },
    /// A previous write or sync failed; the log takes no more appends until
    /// it is reopened (recovery then keeps what is provably on disk).
    #[error("source log failed earlier and takes no more appends: {0}")]
    Failed(String),
    /// The log was sealed (no more appends) or closed.
    #[error("source log is closed")]
    Closed,
    /// A destination name that cannot name a checkpoint file.
    #[error("destination name `{0}`: expected letters, digits, `.`, `_`, `-` (at most 100)")]
    BadName(String),
    /// A checkpoint file that does not parse.
    #[error("checkpoint {}: {reason}", path.display())]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl LogError {
    /// Whether the same append may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Busy { .. } | LogError::DiskFull { .. })
    }
}

/// How the log is laid out and paced.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The directory holding segments and checkpoints.
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Most bytes of segments on disk.
    pub budget_bytes: u64,
    /// How often changed checkpoints are persisted (and segments reclaimed).
    pub checkpoint_interval: Duration,
}

impl LogConfig {
    /// 64 MiB segments, a 4 GiB budget, checkpoints every 500 ms.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            budget_bytes: 4 << 30,
            checkpoint_interval: Duration::from_millis(500),
        }
    }
}

/// What the syncer has made durable, broadcast to appenders and readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every position below this is on disk.
    pub next: u64,
    /// A write or sync failed.
    pub failed: bool,
    /// No more appends will come (readers end once they reach `next`).
    pub sealed: bool,
}

/// A figure-only view of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// Oldest position still on disk.
    pub first_seq: u64,
    /// Next position to be appended.
    pub next_seq: u64,
    /// Every position below this is durable.
    pub durable_seq: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of segments on disk.
    pub used_bytes: u64,
    /// The disk budget.
    pub budget_bytes: u64,
    /// Appends refused as Busy since open.
    pub busy: u64,
    /// fdatasync calls since open (group commit: far fewer than appends).
    pub syncs: u64,
    /// Whether open cut a torn write off the last segment.
    pub recovered_torn: bool,
}

/// One destination's reading position.
#[derive(Debug)]
pub(crate) struct Destination {
    name: String,
    path: PathBuf,
    /// First position not yet acknowledged (in memory).
    acked_next: AtomicU64,
    /// What the checkpoint file says.
    persisted_next: AtomicU64,
}

impl Destination {
    pub(crate) fn advance(&self, next: u64) {
        self.acked_next.fetch_max(next, Ordering::Relaxed);
    }
    pub(crate) fn acked_next(&self) -> u64 {
        self.acked_next.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct SegmentInfo {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug)]
struct Inner {
    segments: VecDeque<SegmentInfo>,
    active: Arc<File>,
    next_seq: u64,
    used_bytes: u64,
    failed: Option<String>,
    /// The last append found the disk full (logged once per episode).
    full: bool,
    sealed: bool,
    shutdown: bool,
    destinations: Vec<Arc<Destination>>,
}

#[derive(Debug)]
struct Shared {
    cfg: LogConfig,
    inner: Mutex<Inner>,
    wake_syncer: Condvar,
    durable: watch::Sender<Durable>,
    busy: AtomicU64,
    syncs: AtomicU64,
    recovered_torn: AtomicBool,
    /// One checkpoint writer at a time (the syncer and `flush_checkpoints`).
    persisting: Mutex<()>,
}

/// Whether the log takes `bytes` more: not failed or closed, within the
/// disk budget (a busy answer is counted).
fn admit(sh: &Shared, inner: &Inner, bytes: u64) -> Result<(), LogError> {
    if let Some(why) = &inner.failed {
        return Err(LogError::Failed(why.clone()));
    }
    if inner.sealed || inner.shutdown {
        return Err(LogError::Closed);
    }
    if bytes > sh.cfg.budget_bytes {
        return Err(LogError::TooLarge {
            bytes,
            budget: sh.cfg.budget_bytes,
        });
    }
    if inner.used_bytes + bytes > sh.cfg.budget_bytes {
        sh.busy.fetch_add(1, Ordering::Relaxed);
        return Err(LogError::Busy {
            used: inner.used_bytes,
            budget: sh.cfg.budget_bytes,
        });
    }
    Ok(())
}

/// A write to the active segment failed with `e`. A full disk cuts what
/// part got in and answers DiskFull (the same append may succeed once
/// space returns); anything else fails the log.
fn write_failed(sh: &Shared, inner: &mut Inner, e: &std::io::Error) -> LogError {
    let path = inner.segments.back().map(|s| s.path.clone());
    let path = path.unwrap_or_default();
    if is_full(e) {
        // Cut what part got in (appends go to the end): the file
        // ends at its last whole entry, and the same append may
        // succeed once space returns.
        let before = inner.segments.back().map_or(0, |s| s.bytes);
        if inner.active.set_len(before).is_ok() {
            if !std::mem::replace(&mut inner.full, true) {
                tracing::warn!(
                    "source log: write to {}: {e}; answering Busy until space returns",
                    path.display()
                );
            }
            sh.busy.fetch_add(1, Ordering::Relaxed);
            return LogError::DiskFull {
                reason: format!("write to {}: {e}", path.display()),
            };
        }
    }
    // Part of it may be in the file: only a reopen (which cuts the
    // torn tail) can say what the log holds now.
    let why = format!("write to {}: {e}", path.display());
    tracing::error!("source log: {why}; no more appends");
    inner.failed = Some(why.clone());
    sh.durable.send_modify(|d| d.failed = true);
    LogError::Failed(why)
}

/// Locks `m`, recovering the data if a panicking holder poisoned it: every
/// critical section leaves `Inner` consistent at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The source log; clones share it. The syncer thread stops (after a last
/// sync and checkpoint) when the last clone is dropped or on [`Log::close`].
#[derive(Clone, Debug)]
pub struct Log(Arc<Handle>);

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

impl Handle {
    fn stop_syncer(&self) {
        lock(&self.shared.inner).shutdown = true;
        self.shared.wake_syncer.notify_all();
        if let Some(t) = lock(&self.syncer).take() {
            let _ = t.join();
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let what = what.into();
    move |source| LogError::Io { what, source }
}

/// Whether `e` says the filesystem (or the quota) has no room.
fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("sync directory {}", dir.display())))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Log {
    /// Opens (creating if needed) the log in `cfg.dir`, recovering from a
    /// crash: the last segment is cut at its first invalid entry.
    pub fn open(cfg: LogConfig) -> Result<Log, LogError> {
        let recover::Recovered {
            segments,
            active,
            next_seq,
            torn,
        } = recover::recover(&cfg)?;
        let used_bytes = segments.iter().map(|s| s.bytes).sum();
        let (durable, _) = watch::channel(Durable {
            next: next_seq,
            failed: false,
            sealed: false,
        });
        let shared = Arc::new(Shared {
            cfg,
            inner: Mutex::new(Inner {
                segments,
                active: Arc::new(active),
                next_seq,
                used_bytes,
                failed: None,
                full: false,
                sealed: false,
                shutdown: false,
                destinations: Vec::new(),
            }),
            wake_syncer: Condvar::new(),
            durable,
            busy: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            recovered_torn: AtomicBool::new(torn),
            persisting: Mutex::new(()),
        });
        let s = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("srclog-sync".into())
            .spawn(move || syncer::syncer(&s))
            .map_err(io_err("start the syncer thread"))?;
        Ok(Log(Arc::new(Handle {
            shared,
            syncer: Mutex::new(Some(syncer)),
        })))
    }

    fn shared(&self) -> &Shared {
        &self.0.shared
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared().cfg
    }

    /// Appends `writes` and returns their positions once a sync covers
    /// them. [`LogError::Busy`] when the budget is full (nothing written).
    pub async fn append(&self, writes: &[Write]) -> Result<Range<u64>, LogError> {
        let range = self.append_unsynced(writes)?;
        self.wait_durable(range.end).await?;
        Ok(range)
    }

    /// Writes `writes` to the active segment without waiting for the sync;
    /// the caller must [`Log::wait_durable`] before acknowledging them.
    /// The write goes to the page cache (the slow part, the sync, is the
    /// syncer thread's), so it is done inline under the lock, which also
    /// keeps positions in file order.
    pub fn append_unsynced(&self, writes: &[Write]) -> Result<Range<u64>, LogError> {
        let sh = self.shared();
        let mut inner = lock(&sh.inner);
        let bytes: u64 = writes.iter().map(|w| segment::entry_len(w) as u64).sum();
        admit(sh, &inner, bytes)?;
        if writes.is_empty() {
            return Ok(inner.next_seq..inner.next_seq);
        }
        let active_bytes = inner.segments.back().map_or(0, |s| s.bytes);
        if active_bytes > 0 && active_bytes + bytes > sh.cfg.segment_bytes {
            if let Err(e) = roll(&sh.cfg, &mut inner) {
                if let LogError::DiskFull { reason } = &e {
                    if !std::mem::replace(&mut inner.full, true) {
                        tracing::warn!("source log: {reason}; answering Busy until space returns");
                    }
                    sh.busy.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                inner.failed = Some(e.to_string());
                sh.durable.send_modify(|d| d.failed = true);
                return Err(e);
            }
        }
        let start = inner.next_seq;
        let now = now_unix_ms();
        let mut buf = BytesMut::with_capacity(bytes as usize);
        for (i, w) in writes.iter().enumerate() {
            segment::encode(&mut buf, start + i as u64, now, w);
        }
        if let Err(e) = (&*inner.active).write_all(&buf) {
            return Err(write_failed(sh, &mut inner, &e));
        }
        inner.full = false;
        inner.next_seq = start + writes.len() as u64;
        inner.used_bytes += bytes;
        if let Some(s) = inner.segments.back_mut() {
            s.bytes += bytes;
        }
        drop(inner);
        sh.wake_syncer.notify_all();
        Ok(start..start + writes.len() as u64)
    }

    /// Waits until every position below `end` is durable.
    pub async fn wait_durable(&self, end: u64) -> Result<(), LogError> {
        let mut rx = self.shared().durable.subscribe();
        let d = rx
            .wait_for(|d| d.next >= end || d.failed)
            .await
            .map_err(|_| LogError::Closed)?;
        if d.next >= end {
            Ok(())
        } else {
            Err(LogError::Failed(
                lock(&self.shared().inner)
                    .failed
                    .clone()
                    .unwrap_or_default(),
            ))
        }
    }

    /// Watches what is durable.
    pub fn subscribe(&self) -> watch::Receiver<Durable> {
        self.shared().durable.subscribe()
    }

    /// No more appends: readers end once they have read everything.
    pub fn seal(&self) {
        lock(&self.shared().inner).sealed = true;
        self.shared().wake_syncer.notify_all();
        self.shared().durable.send_modify(|d| d.sealed = true);
    }

    /// Figures.
    pub fn stats(&self) -> LogStats {
        let sh = self.shared();
        let inner = lock(&sh.inner);
        LogStats {
            first_seq: inner.segments.front().map_or(0, |s| s.first_seq),
            next_seq: inner.next_seq,
            durable_seq: sh.durable.borrow().next,
            segments: inner.segments.len(),
            used_bytes: inner.used_bytes,
            budget_bytes: sh.cfg.budget_bytes,
            busy: sh.busy.load(Ordering::Relaxed),
            syncs: sh.syncs.load(Ordering::Relaxed),
            recovered_torn: sh.recovered_torn.load(Ordering::Relaxed),
        }
    }

    /// The persisted checkpoint of destination `name` (first position not
    /// known delivered), if that destination is open.
    pub fn checkpoint(&self, name: &str) -> Option<u64> {
        let inner = lock(&self.shared().inner);
        inner
            .destinations
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.persisted_next.load(Ordering::Relaxed))
    }

    /// Persists every changed checkpoint and reclaims what all have passed,
    /// now rather than at the next interval.
    pub fn flush_checkpoints(&self) -> Result<(), LogError> {
        persist_and_reclaim(self.shared())
    }

    /// Stops the syncer after a last sync and checkpoint.
    pub fn close(&self) {
        self.0.stop_syncer();
    }
}
