//! Per-destination checkpoints (the first position not yet acknowledged),
//! persisted atomically, and the reclaim of segments every destination has
//! passed.
use std::{
    fs::{self, File},
    io::Write as _,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use super::{io_err, lock, sync_dir, Destination, Log, LogError, Shared};

impl Log {
    /// Opens destination `name`'s checkpoint (a new destination starts at
    /// the oldest position on disk) and registers it, so that reclaim
    /// waits for it.
    pub(crate) fn destination(&self, name: &str) -> Result<Arc<Destination>, LogError> {
        let ok = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(LogError::BadName(name.to_owned()));
        }
        let sh = self.shared();
        let path = sh.cfg.dir.join(format!("ckpt-{name}.json"));
        if let Some(d) = lock(&sh.inner).destinations.iter().find(|d| d.name == name) {
            return Ok(d.clone());
        }
        let saved = match fs::read(&path) {
            Ok(bytes) => Some(parse_checkpoint(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        let mut inner = lock(&sh.inner);
        let first = inner.segments.front().map_or(0, |s| s.first_seq);
        // A checkpoint behind the oldest segment (its destination was not
        // open while others reclaimed) resumes at the oldest one kept.
        let start = saved.unwrap_or(first).clamp(first, inner.next_seq);
        let d = Arc::new(Destination {
            name: name.to_owned(),
            path,
            acked_next: AtomicU64::new(start),
            persisted_next: AtomicU64::new(start),
        });
        inner.destinations.push(d.clone());
        drop(inner);
        if saved != Some(start) {
            // A new destination holds the log from now on, also across a
            // restart before its first acknowledgement.
            write_checkpoint(&sh.cfg.dir, &d, start)?;
        }
        Ok(d)
    }
}

/// Writes every changed checkpoint (temp file, fsync, rename, fsync dir),
/// then deletes segments every destination has passed.
pub(super) fn persist_and_reclaim(sh: &Shared) -> Result<(), LogError> {
    let _one = lock(&sh.persisting);
    let dests: Vec<Arc<Destination>> = lock(&sh.inner).destinations.clone();
    for d in &dests {
        let next = d.acked_next.load(Ordering::Relaxed);
        if d.persisted_next.load(Ordering::Relaxed) == next {
            continue;
        }
        write_checkpoint(&sh.cfg.dir, d, next)?;
    }
    // Reclaim: only after the checkpoints that allow it are on disk.
    let Some(min) = dests
        .iter()
        .map(|d| d.persisted_next.load(Ordering::Relaxed))
        .min()
    else {
        return Ok(());
    };
    let mut removed = Vec::new();
    {
        let mut inner = lock(&sh.inner);
        while inner.segments.len() > 1 && inner.segments[1].first_seq <= min {
            let s = inner.segments.pop_front().expect("two segments");
            inner.used_bytes -= s.bytes;
            removed.push(s.path);
        }
    }
    for p in &removed {
        fs::remove_file(p).map_err(io_err(format!("remove {}", p.display())))?;
    }
    if !removed.is_empty() {
        sync_dir(&sh.cfg.dir)?;
    }
    Ok(())
}

/// Persists `next` as `d`'s checkpoint: temp file, fsync, rename over, fsync
/// the directory; a crash leaves the old checkpoint or the new, never half.
fn write_checkpoint(dir: &Path, d: &Destination, next: u64) -> Result<(), LogError> {
    let tmp = d.path.with_extension("json.tmp");
    let body = serde_json::json!({ "destination": d.name, "next": next }).to_string();
    let mut f = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &d.path).map_err(io_err(format!("rename to {}", d.path.display())))?;
    sync_dir(dir)?;
    d.persisted_next.store(next, Ordering::Relaxed);
    Ok(())
}

fn parse_checkpoint(path: &Path, bytes: &[u8]) -> Result<u64, LogError> {
    let bad = |reason: String| LogError::BadCheckpoint {
        path: path.to_owned(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    v.get("next")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no `next` position".into()))
}

/// A destination name derived from an address: `10.0.0.2:3000` →
/// `10.0.0.2_3000`.
pub fn destination_name(addr: &str) -> String {
    addr.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
