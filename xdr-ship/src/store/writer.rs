//! The durable engine's two hot threads: the writer, which decides
//! last-writer-wins and appends, and the committer, which fdatasyncs and
//! answers.
//!
//! Why one writer: every append goes to the end of one file, so appends are
//! serialized anyway; doing the LWW check in the same thread, under the
//! index stripe's lock, keeps "the index points at the newest record" and
//! "that record is in the file" in one order without a second lock. Its
//! work per record is a hash lookup, a copy and a CRC (hardware crc32c):
//! well under a microsecond, against the disk's ~1 µs per KiB.
//!
//! Why a separate committer ([`super::committer`]): an fdatasync takes
//! 0.3–4 ms; while it runs the writer keeps appending the next group
//! (fjall held its journal lock during the sync, so its workers could
//! not).
//!
//! A full filesystem (`ENOSPC`, `EDQUOT`) is not a failure: the writer cuts
//! whatever part of the batch reached the file, takes back the batch's
//! index changes, and answers [`StoreError::Full`] (the receiver answers
//! `Busy`), so that the same writes succeed once space returns, with no
//! reopen. Any other I/O error (`EIO`) poisons the store: after it nothing
//! is acknowledged, and the log says which file failed and why.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::wire::Write;

use super::durable::{
    create_segment, micros, Loc, Segment, Shared, Slot, StoreFailed, VersionIndex,
};
use super::record::{shard_of, Stamp};
use super::vlog::{encode_entry, entry_len};
use super::{ApplyOutcome, Durability, StoreError};

/// A deliberately broken store for the power-cut tests
/// (`tests/tests/power.rs`), which must catch it: with this variable set to
/// `1`, a `Sync` store answers as soon as a write is in the page cache,
/// before any fdatasync, as `Os` does. Never set it anywhere else.
#[doc(hidden)]
pub const BROKEN_ACK_BEFORE_FSYNC_ENV: &str = "XDR_SHIP_TEST_BROKEN_ACK_BEFORE_FSYNC";

/// Whether [`BROKEN_ACK_BEFORE_FSYNC_ENV`] is set (read once).
fn broken_ack_before_fsync() -> bool {
    static BROKEN: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        let on = std::env::var(BROKEN_ACK_BEFORE_FSYNC_ENV).is_ok_and(|v| v == "1");
        if on {
            tracing::warn!("{BROKEN_ACK_BEFORE_FSYNC_ENV}=1: acknowledging writes before fdatasync (a test of the tests)");
        }
        on
    });
    *BROKEN
}

/// Why a batch was not appended.
pub(super) enum BatchError {
    /// The store is poisoned (by this batch or an earlier one).
    Failed(StoreFailed),
    /// The filesystem is full: the file and the index are as before the
    /// batch, whose writes may succeed once space returns.
    Full(String),
}

impl From<StoreFailed> for BatchError {
    fn from(f: StoreFailed) -> Self {
        BatchError::Failed(f)
    }
}

impl BatchError {
    fn to_error(&self, path: &Path) -> StoreError {
        match self {
            BatchError::Failed(f) => f.to_error(path),
            BatchError::Full(reason) => StoreError::Full {
                path: path.to_owned(),
                reason: reason.clone(),
            },
        }
    }
}

/// Whether `e` says the filesystem (or the quota) has no room.
pub(super) fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// One index change of a batch, taken back if its append finds the disk
/// full: the key's place in the batch, its slot before, its new place.
struct Undo {
    at: (usize, usize),
    prev: Option<Slot>,
    new: Loc,
}

pub(super) type Reply = oneshot::Sender<Result<Vec<ApplyOutcome>, StoreError>>;

/// One `apply` call.
pub(super) struct Job {
    pub writes: Vec<Write>,
    pub reply: Reply,
    pub started: Instant,
}

/// A live entry the compactor copies out of a segment it will delete.
pub(super) struct Moved {
    pub key: Box<[u8]>,
    pub from: Loc,
    /// The whole entry, header included (entries are position-independent).
    pub raw: Vec<u8>,
}

/// The compactor's copies, answered once they are durable.
pub(super) struct MoveJob {
    pub moves: Vec<Moved>,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) enum Msg {
    Apply(Job),
    Move(MoveJob),
    /// Sent by `close`: finish what is queued before this, then exit.
    Stop,
}

/// Who waits for a commit.
pub(super) enum Waiter {
    Apply {
        reply: Reply,
        outcomes: Vec<ApplyOutcome>,
        started: Instant,
    },
    Move(oneshot::Sender<Result<(), StoreError>>),
}

/// Appended (to the page cache), waiting for an fdatasync that covers
/// `end` (bytes written since open).
pub(super) struct Pending {
    pub end: u64,
    pub waiter: Waiter,
}

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Msg>,
    pub commit_tx: std_mpsc::SyncSender<Pending>,
    pub durability: Durability,
    pub active: Arc<Segment>,
    /// Bytes written since open, across segments.
    pub written: u64,
    pub segment_bytes: u64,
    pub max_batch_writes: usize,
    pub inflight: Arc<AtomicUsize>,
    /// Reused buffer of one batch's entries.
    pub buf: Vec<u8>,
    /// The last batch found the disk full (logged once per episode).
    pub full: bool,
    #[cfg(test)]
    pub gate: Option<Arc<parking_lot::RwLock<()>>>,
}

/// Releases `loc`'s bytes from its segment's live count.
fn release(segments: &BTreeMap<u32, Arc<Segment>>, loc: Loc) {
    if let Some(s) = segments.get(&loc.segment) {
        s.live.fetch_sub(loc.len, Ordering::Relaxed);
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut jobs: Vec<Job> = Vec::new();
        loop {
            let first = match self.rx.blocking_recv() {
                Some(Msg::Apply(job)) => job,
                Some(Msg::Move(m)) => {
                    self.moves(m);
                    continue;
                }
                Some(Msg::Stop) | None => return,
            };
            let mut writes = first.writes.len();
            jobs.push(first);
            let mut after = None;
            while writes < self.max_batch_writes {
                match self.rx.try_recv() {
                    Ok(Msg::Apply(job)) => {
                        writes += job.writes.len();
                        jobs.push(job);
                    }
                    Ok(other) => {
                        after = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut jobs);
            match after {
                Some(Msg::Move(m)) => self.moves(m),
                Some(Msg::Stop) => return,
                _ => {}
            }
        }
    }

    fn process(&mut self, jobs: &mut Vec<Job>) {
        #[cfg(test)]
        let gate = self.gate.clone();
        #[cfg(test)]
        let _stalled = gate.as_ref().map(|g| g.read());

        let n_jobs = jobs.len();
        match self.append_applies(jobs) {
            Ok(outcomes) => {
                for (job, outcomes) in jobs.drain(..).zip(outcomes) {
                    self.finish(job, outcomes);
                }
            }
            Err(failure) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(failure.to_error(&self.shared.path)));
                }
            }
        }
        // After the hand-off to the committer, so that a committer reading
        // zero knows every pending job is already in its channel.
        self.inflight.fetch_sub(n_jobs, Ordering::AcqRel);
    }

    /// LWW-check every write against the index, point the index at the
    /// winners' new places and append them with one `write`.
    fn append_applies(&mut self, jobs: &[Job]) -> Result<Vec<Vec<ApplyOutcome>>, BatchError> {
        let upper: u64 = jobs
            .iter()
            .flat_map(|j| &j.writes)
            .map(|w| entry_len(w) as u64)
            .sum();
        let (seg, base) = self.begin_batch(upper)?;
        let stripes = &self.shared.stripes;
        let segments = self.shared.segments.read();
        let mut all = Vec::with_capacity(jobs.len());
        let mut undo = Vec::new();
        let (mut applied, mut lost) = (0u64, 0u64);
        for (j, job) in jobs.iter().enumerate() {
            let mut outcomes = Vec::with_capacity(job.writes.len());
            for (i, w) in job.writes.iter().enumerate() {
                let loc = Loc {
                    segment: seg.id,
                    offset: base + self.buf.len() as u64,
                    len: entry_len(w) as u64,
                };
                let slot = Slot {
                    stamp: Stamp::of(w),
                    loc,
                };
                let won = {
                    let mut index = stripes[shard_of(&w.key, stripes.len())].lock();
                    wins(&mut index, &w.key, slot, &segments)
                };
                if let Some(prev) = won {
                    undo.push(Undo {
                        at: (j, i),
                        prev,
                        new: loc,
                    });
                    encode_entry(&mut self.buf, w);
                    seg.live.fetch_add(loc.len, Ordering::Relaxed);
                    applied += 1;
                    outcomes.push(ApplyOutcome::Applied);
                } else {
                    lost += 1;
                    outcomes.push(ApplyOutcome::LostConflict);
                }
            }
            all.push(outcomes);
        }
        drop(segments);
        if let Err(e) = self.write_out(&seg) {
            self.take_back(&e, &undo, |(j, i)| &jobs[j].writes[i].key[..]);
            return Err(e);
        }
        self.shared.applied.fetch_add(applied, Ordering::Relaxed);
        self.shared.lost_conflict.fetch_add(lost, Ordering::Relaxed);
        Ok(all)
    }

    /// Appends the compactor's copies whose keys the index still places
    /// where the compactor found them, and hands the job to the committer
    /// (in every durability: the compactor deletes the old segment only
    /// once the copies are on disk).
    fn moves(&mut self, job: MoveJob) {
        let end = self.append_moves(&job.moves);
        match end {
            Ok(()) => {
                let _ = self.commit_tx.send(Pending {
                    end: self.written,
                    waiter: Waiter::Move(job.reply),
                });
            }
            Err(failure) => {
                let _ = job.reply.send(Err(failure.to_error(&self.shared.path)));
            }
        }
    }

    fn append_moves(&mut self, moves: &[Moved]) -> Result<(), BatchError> {
        let upper: u64 = moves.iter().map(|m| m.raw.len() as u64).sum();
        let (seg, base) = self.begin_batch(upper)?;
        let stripes = &self.shared.stripes;
        let segments = self.shared.segments.read();
        let mut undo = Vec::new();
        for (i, m) in moves.iter().enumerate() {
            let mut index = stripes[shard_of(&m.key, stripes.len())].lock();
            let Some(slot) = index.get_mut(&m.key[..]) else {
                continue;
            };
            if slot.loc != m.from {
                continue; // overwritten since: the copy would be dead
            }
            let loc = Loc {
                segment: seg.id,
                offset: base + self.buf.len() as u64,
                len: m.raw.len() as u64,
            };
            undo.push(Undo {
                at: (i, 0),
                prev: Some(*slot),
                new: loc,
            });
            release(&segments, slot.loc);
            slot.loc = loc;
            seg.live.fetch_add(loc.len, Ordering::Relaxed);
            self.buf.extend_from_slice(&m.raw);
        }
        drop(segments);
        let written = self.write_out(&seg);
        if let Err(e) = &written {
            self.take_back(e, &undo, |(i, _)| &moves[i].key[..]);
        }
        written
    }

    /// After a batch found the disk full: points every key of `undo` (newest
    /// change first) back where it was, if nothing changed it since.
    fn take_back<'k>(
        &self,
        e: &BatchError,
        undo: &[Undo],
        key: impl Fn((usize, usize)) -> &'k [u8],
    ) {
        if !matches!(e, BatchError::Full(_)) {
            return; // poisoned: nothing will read the index again
        }
        let stripes = &self.shared.stripes;
        let segments = self.shared.segments.read();
        for u in undo.iter().rev() {
            let k = key(u.at);
            let mut index = stripes[shard_of(k, stripes.len())].lock();
            if !index.get(k).is_some_and(|s| s.loc == u.new) {
                continue;
            }
            match u.prev {
                Some(prev) => {
                    if let Some(s) = segments.get(&prev.loc.segment) {
                        s.live.fetch_add(prev.loc.len, Ordering::Relaxed);
                    }
                    index.insert(Box::from(k), prev);
                }
                None => {
                    index.remove(k);
                }
            }
            release(&segments, u.new);
        }
    }

    /// The start of every batch: refuse if the store failed, make room for
    /// `upper` bytes, empty the buffer; the active segment and its length.
    fn begin_batch(&mut self, upper: u64) -> Result<(Arc<Segment>, u64), BatchError> {
        self.shared.check_failed()?;
        self.make_room(upper)?;
        self.buf.clear();
        let seg = Arc::clone(&self.active);
        let base = seg.len.load(Ordering::Relaxed);
        Ok((seg, base))
    }

    /// Starts a new segment when `upper` more bytes would overflow the
    /// active one (a non-empty one: a record larger than a segment gets a
    /// segment of its own).
    fn make_room(&mut self, upper: u64) -> Result<(), BatchError> {
        let len = self.active.len.load(Ordering::Relaxed);
        if len == 0 || len + upper <= self.segment_bytes {
            return Ok(());
        }
        // The committer only ever syncs the active segment: this one is
        // synced whole before it stops being active.
        if let Err(e) = self.active.file.sync_data() {
            return Err(self
                .shared
                .fail(format!(
                    "fdatasync of the full segment {}: {e}",
                    self.active.path.display()
                ))
                .into());
        }
        let id = self
            .active
            .id
            .checked_add(1)
            .ok_or_else(|| self.shared.fail("segment ids exhausted".into()))?;
        let seg = match create_segment(&self.shared.path, id) {
            Ok(seg) => Arc::new(seg),
            Err(StoreError::Open { path, source }) if is_full(&source) => {
                // Half made (its directory entry not synced): gone, so that
                // the next try can create it again.
                let _ = std::fs::remove_file(&path);
                return Err(self.note_full(format!("create {}: {source}", path.display())));
            }
            Err(e) => return Err(self.shared.fail(e.to_string()).into()),
        };
        self.shared.segments.write().insert(id, Arc::clone(&seg));
        *self.shared.active.lock() = (Arc::clone(&seg), self.written);
        self.active = seg;
        self.shared.wake_compactor();
        Ok(())
    }

    /// Writes the batch buffer to `seg` (the page cache) and publishes how
    /// far the file goes.
    fn write_out(&mut self, seg: &Arc<Segment>) -> Result<(), BatchError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&seg.file).write_all(&self.buf) {
            if is_full(&e) {
                // Cut what part of the batch got in: the file ends where
                // the last acknowledged entry ends (appends go to the end).
                let base = seg.len.load(Ordering::Relaxed);
                if let Err(cut) = seg.file.set_len(base) {
                    return Err(self
                        .shared
                        .fail(format!(
                            "cutting a partial append off {} after {e}: {cut}",
                            seg.path.display()
                        ))
                        .into());
                }
                return Err(self.note_full(format!("write to {}: {e}", seg.path.display())));
            }
            // Part of it may be in the file, and the index points at all of
            // it: only a reopen (which cuts a torn tail) can say what the
            // store holds now.
            return Err(self
                .shared
                .fail(format!("write to {}: {e}", seg.path.display()))
                .into());
        }
        if std::mem::take(&mut self.full) {
            tracing::info!(
                "store at {}: space again, writing",
                self.shared.path.display()
            );
        }
        let n = self.buf.len() as u64;
        seg.len.fetch_add(n, Ordering::Release);
        self.written += n;
        *self.shared.active.lock() = (Arc::clone(seg), self.written);
        Ok(())
    }

    /// The disk is full: says so once per episode; the batch answers Busy.
    fn note_full(&mut self, reason: String) -> BatchError {
        if !std::mem::replace(&mut self.full, true) {
            tracing::warn!(
                "store at {}: {reason}; answering Busy until space returns",
                self.shared.path.display()
            );
        }
        BatchError::Full(reason)
    }

    fn finish(&self, job: Job, outcomes: Vec<ApplyOutcome>) {
        match self.durability {
            Durability::Sync if !broken_ack_before_fsync() => {
                // Blocks while the committer's queue is full (backpressure).
                // Fails only if the committer died; the dropped reply then
                // tells `apply` the store is gone.
                let _ = self.commit_tx.send(Pending {
                    end: self.written,
                    waiter: Waiter::Apply {
                        reply: job.reply,
                        outcomes,
                        started: job.started,
                    },
                });
            }
            Durability::Sync | Durability::Os => {
                let us = micros(job.started.elapsed());
                self.shared
                    .apply_latency
                    .lock()
                    .saturating_record(us.max(1));
                let _ = job.reply.send(Ok(outcomes));
            }
        }
    }
}

/// The LWW decision for one write: `Some(slot before)` (and the index
/// updated, the old place released) when `slot`'s stamp is newer than the
/// stored one or the key is new; `None` when it loses.
fn wins(
    index: &mut VersionIndex,
    key: &[u8],
    slot: Slot,
    segments: &BTreeMap<u32, Arc<Segment>>,
) -> Option<Option<Slot>> {
    match index.get_mut(key) {
        Some(stored) if slot.stamp > stored.stamp => {
            release(segments, stored.loc);
            Some(Some(std::mem::replace(stored, slot)))
        }
        Some(_) => None,
        None => {
            index.insert(Box::from(key), slot);
            Some(None)
        }
    }
}
