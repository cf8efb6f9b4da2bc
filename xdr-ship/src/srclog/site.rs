//! Two sites writing at once (XDR's active-active): a site is a source node
//! whose log ships to the other sites, plus a store that holds the site's
//! readable data, fed from two doors.
//!
//! * [`LocalSink`], the applications' door: a local write is appended to
//!   the site's log (so it ships, and is acknowledged only once on disk)
//!   and applied to the site's store, last-writer-wins.
//! * [`ShippedSink`], the other sites' door: a shipped write is applied to
//!   the store only. It is **not** appended to the log, so it is never
//!   shipped again: with two sites shipping to each other, a write that
//!   came back would loop. XDR calls the opposite `forward` (off by
//!   default, as here): with it on, the writes the store *applied* are
//!   appended to the log and ship on (a chain A → B → C). Only applied ones,
//!   so that even a ring with forwarding on stops: a write that comes back
//!   to a store already holding it loses its conflict and goes no further.
//!
//! Why the store decides and not an origin tag: every write already carries
//! `(version, source id)` and every store keeps the greatest, so once each
//! site's writes have reached every store (the logs drained) all stores hold
//! the same winner per key, whatever order writes arrived in, and whether or
//! not a link was cut in between (resends are harmless duplicates).
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use super::{ingest::LogSink, Log};
use crate::{
    server::{sink::SinkFuture, Applied, Sink},
    store::Store,
    wire::{ResultCode, Write},
};

/// What a site's doors have seen.
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Local writes taken (appended and applied).
    pub local: AtomicU64,
    /// Shipped writes received from other sites.
    pub shipped_in: AtomicU64,
    /// Shipped writes appended to the log to ship on (`forward` only).
    pub forwarded: AtomicU64,
}

/// The applications' door of a site: the log, then the store.
#[derive(Clone, Debug)]
pub struct LocalSink {
    log: Log,
    store: Store,
    stats: Arc<SiteStats>,
}

impl LocalSink {
    pub fn new(log: Log, store: Store, stats: Arc<SiteStats>) -> Self {
        Self { log, store, stats }
    }
}

impl Sink for LocalSink {
    /// Appended first: a write acknowledged to the application is durable
    /// and will ship even if the store then refuses it (retryable; the
    /// application's resend is a harmless duplicate). The answer is the
    /// store's, per write: `LostConflict` tells the application that a
    /// newer write (perhaps the other site's) already holds the key.
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let (log, store, stats) = (
            LogSink(self.log.clone()),
            self.store.clone(),
            self.stats.clone(),
        );
        Box::pin(async move {
            let n = writes.len() as u64;
            if let refused @ Applied::Refused(..) = log.apply(writes.clone()).await {
                return refused;
            }
            let applied = Sink::apply(&store, writes).await;
            if matches!(applied, Applied::PerWrite(_)) {
                stats.local.fetch_add(n, Ordering::Relaxed);
            }
            applied
        })
    }
}

/// The other sites' door: the store, and the log only when forwarding.
#[derive(Clone, Debug)]
pub struct ShippedSink {
    store: Store,
    /// `Some` with `forward` on.
    forward: Option<Log>,
    stats: Arc<SiteStats>,
}

impl ShippedSink {
    /// `forward`: the site's log, to ship on what the store applied.
    pub fn new(store: Store, forward: Option<Log>, stats: Arc<SiteStats>) -> Self {
        Self {
            store,
            forward,
            stats,
        }
    }
}

impl ShippedSink {
    /// As the server's sink.
    pub fn into_sink(self) -> Arc<dyn Sink> {
        Arc::new(self)
    }
}

impl Sink for ShippedSink {
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let (store, forward, stats) =
            (self.store.clone(), self.forward.clone(), self.stats.clone());
        Box::pin(async move {
            stats
                .shipped_in
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            let kept = forward.as_ref().map(|_| writes.clone());
            let applied = Sink::apply(&store, writes).await;
            let (Some(log), Some(writes), Applied::PerWrite(codes)) = (forward, kept, &applied)
            else {
                return applied;
            };
            let on: Vec<Write> = writes
                .into_iter()
                .zip(codes)
                .filter(|(_, c)| **c == ResultCode::Ok)
                .map(|(w, _)| w)
                .collect();
            if on.is_empty() {
                return applied;
            }
            match LogSink(log).apply(on.clone()).await {
                // The log is full or closed: answered as the log refused.
                // Known gap: the sender's resend then finds the store
                // already holding these writes (LostConflict) and they are
                // not forwarded; this site keeps them, the next hop does not.
                refused @ Applied::Refused(..) => refused,
                Applied::PerWrite(_) => {
                    stats
                        .forwarded
                        .fetch_add(on.len() as u64, Ordering::Relaxed);
                    applied
                }
            }
        })
    }
}
