//! One destination's view of the log: a [`Source`] that reads from the
//! destination's checkpoint on and advances it as acknowledgements come in.
//!
//! Why the checkpoint is "the first position not yet acknowledged": acks
//! arrive out of order (unordered mode, many connections), so the
//! checkpoint can only move up to the oldest record still unanswered. The
//! records handed out and not answered yet are kept as positions only (a
//! map of position → append time, bounded by the connections' windows);
//! their smallest position is the checkpoint, and its age is `lag`. Records
//! are read ahead in small batches off the async threads, so a backlog of
//! any size costs a bounded amount of memory.
//!
//! Hot-key coalescing (off by default): among the records read ahead and
//! not yet handed out, only the highest version of each key is shipped;
//! the others are counted as `hot_keys`. Skipping them is safe for the
//! checkpoint: the record kept is handed out and unanswered until it is
//! acknowledged, so the checkpoint cannot pass it.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{now_unix_ms, Destination, Durable, Entry, Log, LogError, Reader};
use crate::ship::{Source, SourceRecord};

/// Entries read ahead at most (and about this many bytes).
const READ_AHEAD_ENTRIES: usize = 512;
const READ_AHEAD_BYTES: usize = 1 << 20;

type ReadTask = JoinHandle<(Reader, Result<Vec<Entry>, LogError>)>;

/// Reads the log for one destination; see the module doc.
#[derive(Debug)]
pub struct LogSource {
    log: Log,
    dest: Arc<Destination>,
    /// `None` while a read is in progress (the reader is in `reading`).
    reader: Option<Reader>,
    reading: Option<ReadTask>,
    /// The position after the last entry read.
    read_pos: u64,
    ahead: VecDeque<Entry>,
    /// Every position below this was handed out (or skipped by coalescing).
    cursor: u64,
    /// Handed out and not acknowledged: position → append time (ms).
    pending: BTreeMap<u64, u64>,
    durable: watch::Receiver<Durable>,
    failed: Option<String>,
    /// Records skipped by hot-key coalescing, when it is on.
    hot_keys: Option<Arc<AtomicU64>>,
}

impl LogSource {
    /// Opens destination `name` on `log`, positioned at its checkpoint.
    pub fn open(log: &Log, name: &str) -> Result<Self, LogError> {
        let dest = log.destination(name)?;
        let start = dest.acked_next();
        let reader = log.reader_at(start)?;
        let read_pos = reader.position();
        Ok(Self {
            log: log.clone(),
            dest,
            reader: Some(reader),
            reading: None,
            read_pos,
            ahead: VecDeque::new(),
            cursor: read_pos,
            pending: BTreeMap::new(),
            durable: log.subscribe(),
            failed: None,
            hot_keys: None,
        })
    }

    /// Turns hot-key coalescing on; skipped records are counted in `hot_keys`.
    pub fn with_coalescing(mut self, hot_keys: Arc<AtomicU64>) -> Self {
        self.hot_keys = Some(hot_keys);
        self
    }

    /// Keeps, among the records read ahead, only the highest version of each key.
    fn coalesce(&mut self) {
        let Some(counter) = &self.hot_keys else {
            return;
        };
        let mut best: HashMap<&[u8], (u64, u64)> = HashMap::with_capacity(self.ahead.len());
        for e in &self.ahead {
            let v = (e.write.version, e.seq);
            let slot = best.entry(&e.write.key[..]).or_insert(v);
            *slot = (*slot).max(v);
        }
        let keep: std::collections::HashSet<u64> = best.values().map(|(_, seq)| *seq).collect();
        let before = self.ahead.len();
        self.ahead.retain(|e| keep.contains(&e.seq));
        counter.fetch_add((before - self.ahead.len()) as u64, Ordering::Relaxed);
    }

    /// The destination's name (its checkpoint file is `ckpt-NAME.json`).
    pub fn name(&self) -> &str {
        &self.dest.name
    }

    /// First position not yet acknowledged (in memory; the file follows
    /// within the log's checkpoint interval).
    pub fn checkpoint(&self) -> u64 {
        self.dest.acked_next()
    }

    /// Records handed out and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// Records read ahead and not handed out yet (bounded by the read-ahead).
    pub fn buffered(&self) -> usize {
        self.ahead.len()
    }

    /// Why reading stopped early, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The log this reads.
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn fail(&mut self, why: String) -> Option<SourceRecord> {
        tracing::error!("destination {}: {why}; stops reading", self.dest.name);
        self.failed = Some(why);
        None
    }
}

impl Source for LogSource {
    async fn next(&mut self) -> Option<SourceRecord> {
        loop {
            if let Some(e) = self.ahead.pop_front() {
                // Past this record and any skipped (coalesced) after it.
                self.cursor = self.ahead.front().map_or(self.read_pos, |n| n.seq);
                self.pending.insert(e.seq, e.appended_unix_ms);
                return Some(SourceRecord {
                    seq: e.seq,
                    write: e.write,
                });
            }
            if self.failed.is_some() {
                return None;
            }
            // Awaited by reference: dropping this future (the shipper
            // selects between records and acks) leaves the read in place.
            if let Some(task) = self.reading.as_mut() {
                let done = task.await;
                self.reading = None;
                match done {
                    Ok((reader, got)) => {
                        self.read_pos = reader.position();
                        self.reader = Some(reader);
                        match got {
                            Ok(entries) => {
                                self.ahead.extend(entries);
                                self.coalesce();
                            }
                            Err(e) => return self.fail(e.to_string()),
                        }
                    }
                    Err(e) => return self.fail(format!("read task failed: {e}")),
                }
                continue;
            }
            let d = *self.durable.borrow_and_update();
            if self.read_pos < d.next {
                let Some(mut reader) = self.reader.take() else {
                    return self.fail("no reader".into());
                };
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let got = reader.read_batch(READ_AHEAD_ENTRIES, READ_AHEAD_BYTES);
                    (reader, got)
                }));
                continue;
            }
            if d.sealed {
                return None;
            }
            if self.durable.changed().await.is_err() {
                return None;
            }
        }
    }

    fn backlog(&self) -> u64 {
        self.durable.borrow().next.saturating_sub(self.cursor)
    }

    fn acked(&mut self, seq: u64) {
        if self.pending.remove(&seq).is_some() {
            let next = self
                .pending
                .first_key_value()
                .map_or(self.cursor, |(k, _)| *k);
            self.dest.advance(next);
        }
    }

    fn wants_acks(&self) -> bool {
        true
    }

    fn lag(&self) -> Option<Duration> {
        let oldest = self
            .pending
            .first_key_value()
            .map(|(_, t)| *t)
            .or_else(|| self.ahead.front().map(|e| e.appended_unix_ms))?;
        Some(Duration::from_millis(now_unix_ms().saturating_sub(oldest)))
    }

    fn describe(&self) -> String {
        format!(
            "log {} to {} from position {}",
            self.log.config().dir.display(),
            self.dest.name,
            self.cursor
        )
    }
}
