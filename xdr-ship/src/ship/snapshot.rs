//! The once-an-interval [`ShipSnapshot`]: the connections' cumulative
//! counters turned into rates, their latencies merged.
use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{conn::ConnState, ShipConfig};
use crate::metrics::{new_latency_histogram, Latency, ShipSnapshot};

/// Turns the connections' cumulative counters into interval rates.
pub(super) struct Snapshotter {
    destination: String,
    mode: &'static str,
    started: Instant,
    last_at: Instant,
    last_delivered: Vec<u64>,
    last_bytes: Vec<u64>,
    last_outstanding: u64,
}

impl Snapshotter {
    pub fn new(cfg: &ShipConfig, states: &[Arc<ConnState>], started: Instant) -> Self {
        Self {
            destination: cfg.to.clone(),
            mode: cfg.mode.name(),
            started,
            last_at: started,
            last_delivered: vec![0; states.len()],
            last_bytes: vec![0; states.len()],
            last_outstanding: 0,
        }
    }

    pub fn take(&mut self, states: &[Arc<ConnState>], outstanding: u64) -> ShipSnapshot {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let mut hist = new_latency_histogram();
        let mut snap = ShipSnapshot {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            elapsed_s: now.duration_since(self.started).as_secs_f64(),
            destination: self.destination.clone(),
            mode: self.mode.into(),
            outstanding,
            delta_per_s: (outstanding as f64 - self.last_outstanding as f64) / dt,
            ..ShipSnapshot::default()
        };
        let mut oldest: Option<Instant> = None;
        for (i, s) in states.iter().enumerate() {
            let mut c = s.snapshot();
            let delivered = c.counters.delivered();
            c.acks_per_s = delivered.saturating_sub(self.last_delivered[i]) as f64 / dt;
            c.bytes_per_s = c.counters.acked_bytes.saturating_sub(self.last_bytes[i]) as f64 / dt;
            self.last_delivered[i] = delivered;
            self.last_bytes[i] = c.counters.acked_bytes;
            s.take_latency(&mut hist);
            if let Some(t) = s.oldest_sent() {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
            snap.throughput += c.acks_per_s;
            snap.bytes_per_s += c.bytes_per_s;
            snap.inflight += c.inflight;
            snap.inflight_bytes += c.inflight_bytes;
            snap.connected += usize::from(c.connected);
            snap.counters.add(&c.counters);
            // A Redis Cluster replica's pool that never had a record to
            // send (no failover made it a primary) is no connection yet.
            if s.node.is_none() || s.ever_connected.load(std::sync::atomic::Ordering::Relaxed) {
                snap.connections.push(c);
            }
        }
        snap.latency = Latency::from_histogram(&hist);
        snap.lag_ms = oldest.map_or(0, |t| now.duration_since(t).as_millis() as u64);
        self.last_at = now;
        self.last_outstanding = outstanding;
        snap
    }
}
