//! The durable engine's committer: one fdatasync per group of appended
//! writes, then every waiter of the group answered.
//!
//! Why a thread of its own: an fdatasync takes 0.3–4 ms; while it runs the
//! writer ([`super::writer`]) keeps appending the next group. A group grows
//! while writes are still in flight towards it, up to `max_group` or the
//! delay since its first write, so one sync covers as many as are coming.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use super::durable::{micros, Shared};
use super::writer::{Pending, Waiter};

pub(super) struct Committer {
    pub rx: std_mpsc::Receiver<Pending>,
    pub shared: Arc<Shared>,
    pub delay: Duration,
    pub max_group: usize,
    pub inflight: Arc<AtomicUsize>,
}

impl Committer {
    pub(super) fn run(self) {
        let mut group = Vec::new();
        // Ends when the writer has exited (its sender is dropped) and the
        // channel is drained.
        while let Ok(first) = self.rx.recv() {
            group.push(first);
            self.gather(&mut group);
            self.commit(&mut group);
        }
    }

    /// Add jobs to `group` until waiting cannot grow it, it is full, or the
    /// delay since the first job has passed.
    fn gather(&self, group: &mut Vec<Pending>) {
        let deadline = Instant::now() + self.delay;
        loop {
            self.drain(group);
            if group.len() >= self.max_group {
                return;
            }
            if self.inflight.load(Ordering::Acquire) == 0 {
                // Every job counted in flight was handed over before the
                // count dropped: one more drain collects them all.
                self.drain(group);
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(p) => group.push(p),
                Err(_) => return,
            }
        }
    }

    fn drain(&self, group: &mut Vec<Pending>) {
        while group.len() < self.max_group {
            match self.rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => return,
            }
        }
    }

    /// One fdatasync of the active segment, then every waiter of the group
    /// is answered: each was written before the sync started.
    fn commit(&self, group: &mut Vec<Pending>) {
        let (seg, upto) = {
            let active = self.shared.active.lock();
            (Arc::clone(&active.0), active.1)
        };
        let result = match self.shared.check_failed() {
            Err(failed) => Err(failed),
            Ok(()) => {
                let started = Instant::now();
                let synced = seg.file.sync_data();
                let took = micros(started.elapsed());
                self.shared
                    .commit_latency
                    .lock()
                    .saturating_record(took.max(1));
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                synced.map_err(|e| {
                    // After a failed fdatasync a retried one proves nothing
                    // (the kernel may have dropped the dirty pages).
                    self.shared
                        .fail(format!("fdatasync of {}: {e}", seg.path.display()))
                })
            }
        };
        // Counted before anyone is answered: a caller that reads the stats
        // after its answer sees its writes committed.
        let writes: u64 = group
            .iter()
            .map(|p| match &p.waiter {
                Waiter::Apply { outcomes, .. } => outcomes.len() as u64,
                Waiter::Move(_) => 0,
            })
            .sum();
        if result.is_ok() {
            self.shared
                .committed_writes
                .fetch_add(writes, Ordering::Relaxed);
            if writes > 0 {
                self.shared.commit_writes.lock().saturating_record(writes);
            }
        }
        let mut latency = self.shared.apply_latency.lock();
        for p in group.drain(..) {
            debug_assert!(p.end <= upto, "a waiter past what the sync covers");
            match p.waiter {
                Waiter::Apply {
                    reply,
                    outcomes,
                    started,
                } => {
                    let answer = match &result {
                        Ok(()) => {
                            latency.saturating_record(micros(started.elapsed()).max(1));
                            Ok(outcomes)
                        }
                        Err(failed) => Err(failed.to_error(&self.shared.path)),
                    };
                    let _ = reply.send(answer);
                }
                Waiter::Move(reply) => {
                    let _ = reply.send(
                        result
                            .as_ref()
                            .map_err(|failed| failed.to_error(&self.shared.path))
                            .copied(),
                    );
                }
            }
        }
        drop(latency);
    }
}
