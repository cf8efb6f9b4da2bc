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
    let mut failing: Option<String> = None;
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
            match checkpoint_news(&mut failing, persist_and_reclaim(sh)) {
                Some(News::Failing(text)) => tracing::warn!("{text}"),
                Some(News::Recovered(text)) => tracing::info!("{text}"),
                None => {}
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

/// What a checkpoint attempt has to tell the operator.
#[derive(Debug, PartialEq, Eq)]
enum News {
    /// A new failure, or a different one.
    Failing(String),
    /// Checkpoints are written again after failing.
    Recovered(String),
}

/// Each failure said once, not every attempt (every
/// `checkpoint_interval`, 500 ms, while a disk is full), and its end
/// said when it ends; `failing` holds the failure being repeated.
fn checkpoint_news(failing: &mut Option<String>, attempt: Result<(), LogError>) -> Option<News> {
    match attempt {
        Ok(()) => failing.take().map(|was| {
            News::Recovered(format!(
                "source log: checkpoints are written again (they failed: {was})"
            ))
        }),
        Err(e) => {
            let text = e.to_string();
            if failing.as_deref() == Some(text.as_str()) {
                return None;
            }
            *failing = Some(text.clone());
            Some(News::Failing(format!(
                "{text} (said once while it lasts; the log keeps appending)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Result<(), LogError> {
        Err(LogError::DiskFull {
            reason: "write checkpoint: No space left on device".into(),
        })
    }

    #[test]
    fn a_checkpoint_failure_is_said_once_while_it_lasts_and_its_end_once() {
        let mut failing = None;
        let first = checkpoint_news(&mut failing, full());
        assert!(
            matches!(&first, Some(News::Failing(t)) if t.contains("No space left")),
            "{first:?}"
        );
        for _ in 0..10 {
            assert_eq!(checkpoint_news(&mut failing, full()), None);
        }
        let end = checkpoint_news(&mut failing, Ok(()));
        assert!(
            matches!(&end, Some(News::Recovered(t)) if t.contains("written again")),
            "{end:?}"
        );
        assert_eq!(checkpoint_news(&mut failing, Ok(())), None);
        assert!(
            checkpoint_news(&mut failing, full()).is_some(),
            "a new failure is said again"
        );
    }
}
