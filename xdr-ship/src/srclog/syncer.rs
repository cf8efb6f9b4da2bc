//! Group commit: the syncer thread syncs whatever was written since its
//! last sync (one sync for many appends) and persists checkpoints when
//! due; and the roll to a new segment.
use std::{
    fs::OpenOptions,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use super::{
    checkpoint::persist_and_reclaim, io_err, lock, segment::segment_name, sync_dir, Inner,
    LogConfig, LogError, SegmentInfo, Shared,
};

/// Closes the active segment (synced: the syncer only ever syncs the
/// active one) and starts the next one.
pub(super) fn roll(cfg: &LogConfig, inner: &mut Inner) -> Result<(), LogError> {
    inner
        .active
        .sync_data()
        .map_err(io_err("sync the closing segment"))?;
    let path = cfg.dir.join(segment_name(inner.next_seq));
    let file = match OpenOptions::new().create_new(true).append(true).open(&path) {
        Ok(f) => f,
        // Nothing changed yet: the same append may roll once space returns.
        Err(e) if super::is_full(&e) => {
            return Err(LogError::DiskFull {
                reason: format!("create {}: {e}", path.display()),
            })
        }
        Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
    };
    sync_dir(&cfg.dir)?;
    inner.active = Arc::new(file);
    inner.segments.push_back(SegmentInfo {
        first_seq: inner.next_seq,
        path,
        bytes: 0,
    });
    Ok(())
}

/// The syncer: syncs whatever was written since the last sync (one sync
/// for many appends), then persists checkpoints when due.
pub(super) fn syncer(sh: &Shared) {
    let mut last_checkpoint = Instant::now();
    let mut inner = lock(&sh.inner);
    loop {
        let synced = sh.durable.borrow().next;
        if inner.next_seq > synced && inner.failed.is_none() {
            let (file, upto) = (inner.active.clone(), inner.next_seq);
            let path = inner.segments.back().map(|s| s.path.clone());
            drop(inner);
            let r = file.sync_data();
            sh.syncs.fetch_add(1, Ordering::Relaxed);
            inner = lock(&sh.inner);
            match r {
                Ok(()) => sh.durable.send_modify(|d| d.next = d.next.max(upto)),
                Err(e) => {
                    let path = path.unwrap_or_default();
                    let why = format!("fdatasync of {}: {e}", path.display());
                    tracing::error!("source log: {why}; no more appends");
                    inner.failed = Some(why);
                    sh.durable.send_modify(|d| d.failed = true);
                }
            }
            continue;
        }
        let due = last_checkpoint.elapsed() >= sh.cfg.checkpoint_interval;
        if due || inner.shutdown {
            drop(inner);
            if let Err(e) = persist_and_reclaim(sh) {
                tracing::warn!("{e}");
            }
            last_checkpoint = Instant::now();
            inner = lock(&sh.inner);
            if inner.shutdown && inner.next_seq <= sh.durable.borrow().next {
                return;
            }
            if inner.shutdown && inner.failed.is_some() {
                return;
            }
            continue;
        }
        let wait = sh
            .cfg
            .checkpoint_interval
            .saturating_sub(last_checkpoint.elapsed());
        inner = sh
            .wake_syncer
            .wait_timeout(inner, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
