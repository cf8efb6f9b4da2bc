//! The compactor: gives the disk back from segments whose records were
//! mostly overwritten.
//!
//! Why through the writer: only the writer moves index entries, so a copy
//! and a concurrent overwrite of the same key are serialized there, and the
//! copy is kept only if the index still places the key where the compactor
//! found it. Why delete only after an fdatasync of the copies: a dead entry
//! of the segment may be dead only because of a newer write still in the
//! page cache; the same sync covers that write (it was written before the
//! copies), so after it the segment holds nothing the disk still needs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::durable::{corrupt, sync_dir, Loc, Segment, Shared};
use super::record::shard_of;
use super::vlog::{entry_key_stamp, Scanned, Scanner};
use super::writer::{MoveJob, Moved, Msg};
use super::StoreError;

/// Bytes of copies handed to the writer at once.
const MOVE_BATCH_BYTES: usize = 1 << 20;

pub(super) struct Compactor {
    pub shared: Arc<Shared>,
    pub tx: mpsc::Sender<Msg>,
    pub interval: Duration,
    pub live_ratio: f64,
}

impl Compactor {
    pub(super) fn run(self) {
        loop {
            if self.shared.compactor_wait(self.interval) {
                return;
            }
            while let Some(seg) = self.candidate() {
                match self.compact(&seg) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("store compaction of {}: {e}", seg.path.display());
                        break;
                    }
                }
            }
        }
    }

    /// The sealed segment with the smallest live share, if one is below
    /// the ratio.
    fn candidate(&self) -> Option<Arc<Segment>> {
        let active = self.shared.active.lock().0.id;
        let segments = self.shared.segments.read();
        segments
            .values()
            .filter(|s| s.id < active)
            .map(|s| {
                let len = s.len.load(Ordering::Relaxed);
                let live = s.live.load(Ordering::Relaxed);
                let share = if len == 0 {
                    0.0
                } else {
                    live as f64 / len as f64
                };
                (share, s)
            })
            .filter(|(share, _)| *share < self.live_ratio)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, s)| Arc::clone(s))
    }

    /// Copies `seg`'s live entries and deletes it. `Ok(false)`: stopped (or
    /// the segment could not be emptied) before deleting it.
    fn compact(&self, seg: &Arc<Segment>) -> Result<bool, StoreError> {
        let read_err = |source| StoreError::Read {
            path: seg.path.clone(),
            source,
        };
        let file = std::fs::File::open(&seg.path).map_err(read_err)?;
        let mut scanner = Scanner::new(file, seg.len.load(Ordering::Acquire)).map_err(read_err)?;
        let (mut batch, mut bytes) = (Vec::new(), 0usize);
        loop {
            if self.shared.compactor_stopping() {
                return Ok(false);
            }
            let offset = match scanner.next().map_err(read_err)? {
                Scanned::Entry { offset } => offset,
                Scanned::End => break,
                Scanned::Bad { offset, reason } => {
                    return Err(StoreError::CorruptSegment {
                        path: seg.path.clone(),
                        offset,
                        reason,
                    })
                }
            };
            let raw = scanner.entry();
            let (key, _) = entry_key_stamp(raw).map_err(|e| corrupt(&seg.path, &[], e))?;
            let from = Loc {
                segment: seg.id,
                offset,
                len: raw.len() as u64,
            };
            let stripes = &self.shared.stripes;
            let live = stripes[shard_of(key, stripes.len())]
                .lock()
                .get(key)
                .is_some_and(|slot| slot.loc == from);
            if !live {
                continue;
            }
            bytes += raw.len();
            batch.push(Moved {
                key: Box::from(key),
                from,
                raw: raw.to_vec(),
            });
            if bytes >= MOVE_BATCH_BYTES {
                self.move_durably(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.move_durably(batch)?;
        }
        // Only the writer places entries, and only in the active segment:
        // nothing can have become live here since the scan.
        let left = seg.live.load(Ordering::Acquire);
        if left != 0 {
            tracing::warn!(
                "store compaction: {} still has {left} live bytes; kept",
                seg.path.display()
            );
            return Ok(false);
        }
        self.shared.segments.write().remove(&seg.id);
        let gone = std::fs::remove_file(&seg.path).and_then(|()| sync_dir(&self.shared.path));
        gone.map_err(|source| StoreError::Commit {
            path: seg.path.clone(),
            source,
        })?;
        self.shared.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Hands `moves` to the writer and waits until an fdatasync covers them.
    fn move_durably(&self, moves: Vec<Moved>) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Move(MoveJob { moves, reply }))
            .map_err(|_| StoreError::Closed)?;
        // The writer (or the committer) drops the reply if it exits first.
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}
