//! Reading the log in order across segments, never past what is durable.
use std::path::PathBuf;

use super::{lock, segment, Entry, Log, LogError};

impl Log {
    /// A reader positioned at `seq` (or the oldest position kept, if later).
    pub(crate) fn reader_at(&self, seq: u64) -> Result<Reader, LogError> {
        let inner = lock(&self.shared().inner);
        let seg = inner
            .segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq)
            .or(inner.segments.front())
            .expect("at least one segment");
        let mut current = segment::SegmentReader::open(seg.path.clone(), seg.first_seq)?;
        let mut next = seg.first_seq;
        drop(inner);
        // Skip to `seq` (at most one segment's worth, read sequentially).
        while next < seq {
            match current.next_entry()? {
                Some(e) => next = e.seq + 1,
                None => break,
            }
        }
        Ok(Reader {
            log: self.clone(),
            current,
            next,
        })
    }

    /// The segment whose first position is `seq`, if there is one.
    fn segment_starting_at(&self, seq: u64) -> Option<PathBuf> {
        lock(&self.shared().inner)
            .segments
            .iter()
            .find(|s| s.first_seq == seq)
            .map(|s| s.path.clone())
    }
}

/// Reads the log in order across segments, never past what is durable.
#[derive(Debug)]
pub(crate) struct Reader {
    log: Log,
    current: segment::SegmentReader,
    next: u64,
}

impl Reader {
    /// The next position this reader returns.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// Up to `max_entries` entries (and about `max_bytes`) that are durable;
    /// empty when the reader has caught up. Blocking file reads: call off
    /// the async threads.
    pub(crate) fn read_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let durable = self.log.shared().durable.borrow().next;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while self.next < durable && out.len() < max_entries && bytes < max_bytes {
            match self.current.next_entry()? {
                Some(e) => {
                    if e.seq != self.next {
                        return Err(LogError::Corrupt {
                            path: self.current.path.clone(),
                            offset: 0,
                            reason: format!("position {} where {} was due", e.seq, self.next),
                        });
                    }
                    self.next += 1;
                    bytes += segment::entry_len(&e.write);
                    out.push(e);
                }
                None => {
                    // The end of this segment: the next one starts here.
                    let Some(path) = self.log.segment_starting_at(self.next) else {
                        return Err(LogError::Corrupt {
                            path: self.current.path.clone(),
                            offset: 0,
                            reason: format!(
                                "ends before durable position {durable} and no segment starts at {}",
                                self.next
                            ),
                        });
                    };
                    self.current = segment::SegmentReader::open(path, self.next)?;
                }
            }
        }
        Ok(out)
    }
}
