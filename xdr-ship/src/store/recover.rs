//! Opening a durable store: take the directory's lock, read every segment
//! once to rebuild the version index, cut a torn tail.
//!
//! Why every segment is read whole: the stamps and places of the index are
//! only on disk inside the entries (there is no separate index file to
//! keep consistent with the log); reading ~100 MB of segments takes a
//! fraction of a second, and a crash can never leave the two disagreeing.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::durable::{corrupt, create_segment, Loc, Segment, Slot, VersionIndex};
use super::record::{key_hasher, shard_of};
use super::vlog::{entry_key_stamp, parse_segment_name, segment_name, Scanned, Scanner};
use super::StoreError;

/// The lock file of a store directory.
const LOCK_FILE: &str = "LOCK";
/// What fjall, the engine before this one, leaves in its directory.
const FJALL_MARKER: &str = "keyspaces";

/// The index and segments found on disk.
pub(super) struct Recovered {
    pub stripes: Vec<VersionIndex>,
    pub segments: BTreeMap<u32, Arc<Segment>>,
}

/// Reads every segment once, in id order, rebuilding the index; cuts a torn
/// tail off the last segment; refuses damage anywhere else.
pub(super) fn recover(dir: &Path, stripes: usize) -> Result<Recovered, StoreError> {
    let list_err = |source| StoreError::Open {
        path: dir.to_owned(),
        source,
    };
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let name = entry.map_err(list_err)?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = parse_segment_name(&name) {
            ids.push(id);
        } else if name == FJALL_MARKER {
            return Err(StoreError::Config(format!(
                "{} holds an fjall store written by an older xdr-ship; \
                 this version keeps a value log: use a new directory",
                dir.display()
            )));
        }
    }
    ids.sort_unstable();
    let mut index: Vec<VersionIndex> = (0..stripes)
        .map(|_| HashMap::with_hasher(key_hasher()))
        .collect();
    let mut live: HashMap<u32, u64> = HashMap::new();
    let mut found = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment_name(id));
        let len = replay_segment(&path, id, &mut index, &mut live, i + 1 == ids.len())?;
        found.push((id, path, len));
    }
    let mut segments = BTreeMap::new();
    for (id, path, len) in found {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let seg = Segment {
            id,
            path,
            file,
            len: AtomicU64::new(len),
            live: AtomicU64::new(live.get(&id).copied().unwrap_or(0)),
        };
        segments.insert(id, Arc::new(seg));
    }
    if segments.is_empty() {
        segments.insert(1, Arc::new(create_segment(dir, 1)?));
    }
    Ok(Recovered {
        stripes: index,
        segments,
    })
}

/// Replays one segment into the index; returns its valid length (the last
/// segment is cut there if a crash tore its tail).
fn replay_segment(
    path: &Path,
    id: u32,
    index: &mut [VersionIndex],
    live: &mut HashMap<u32, u64>,
    last: bool,
) -> Result<u64, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut scanner = Scanner::open(path).map_err(read_err)?;
    let mut valid = 0u64;
    let torn = loop {
        match scanner.next().map_err(read_err)? {
            Scanned::Entry { offset } => {
                let raw = scanner.entry();
                let (key, stamp) = entry_key_stamp(raw).map_err(|e| corrupt(path, &[], e))?;
                let loc = Loc {
                    segment: id,
                    offset,
                    len: raw.len() as u64,
                };
                valid = offset + loc.len;
                let stripe = &mut index[shard_of(key, index.len())];
                match stripe.get_mut(key) {
                    // Ties are compaction copies: the later one is kept.
                    Some(slot) if stamp >= slot.stamp => {
                        if let Some(l) = live.get_mut(&slot.loc.segment) {
                            *l -= slot.loc.len;
                        }
                        *slot = Slot { stamp, loc };
                    }
                    Some(_) => continue,
                    None => {
                        stripe.insert(Box::from(key), Slot { stamp, loc });
                    }
                }
                *live.entry(id).or_default() += loc.len;
            }
            Scanned::End => break None,
            Scanned::Bad { offset, reason } => break Some((offset, reason)),
        }
    };
    let Some((offset, reason)) = torn else {
        return Ok(valid);
    };
    if !last {
        return Err(StoreError::CorruptSegment {
            path: path.to_owned(),
            offset,
            reason,
        });
    }
    tracing::warn!(
        "store: cutting {} at byte {offset}: {reason} (a write torn by a crash)",
        path.display()
    );
    let cut = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(offset).and_then(|()| f.sync_all()));
    cut.map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(offset)
}

/// Takes the directory's lock file, so two processes never share a store.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Open { path, source }),
    }
}
