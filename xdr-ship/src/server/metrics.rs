//! `recv --metrics ADDR`: the receiver's numbers as Prometheus text, so
//! the destination node is watched by the same scraper as the source.
//!
//! Why counters advance once per interval from the server's atomics (not
//! read at scrape): like the shipper's exporter, a scrape never touches the
//! serving path; [`RecvMetrics::update`] copies what the status line
//! already reads, and the HTTP handler only encodes.
//!
//! Why the store's histograms are converted rather than observed again:
//! the durable store already keeps HdrHistograms of its apply latency, its
//! fdatasync time and its group-commit sizes. Recording a second copy on
//! the write path would cost every write; copying the three histograms
//! once a second costs nothing per write. [`HdrSeries`] turns a copy into
//! a Prometheus histogram (fixed `le` buckets, cumulative since open),
//! encoded by `prometheus_client` like any other.
//!
//! Labels are bounded: refusals carry one of five reasons, nothing is per
//! connection or per peer.
use std::sync::{atomic::Ordering, Arc};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType},
    registry::{Registry, Unit},
};

use super::ServerStats;
use crate::{live::prometheus::Exposition, store::Store};

/// Upper bounds (seconds) of the latency histograms: 50 µs to 5 s.
const LATENCY_BUCKETS_S: [f64; 12] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0, 5.0,
];

/// Upper bounds (writes) of the group-commit size histogram.
const BATCH_BUCKETS: [f64; 10] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];

/// The HdrHistograms hold microseconds; Prometheus wants seconds.
const US_PER_S: f64 = 1e6;

/// `(sum, count, per-bucket counts with +Inf last)`, as
/// `MetricEncoder::encode_histogram` takes them.
type Buckets = (f64, u64, Vec<(f64, u64)>);

/// A Prometheus histogram whose buckets are computed from a copy of an
/// HdrHistogram (cumulative since the store opened).
#[derive(Clone, Debug)]
pub struct HdrSeries {
    /// Upper bounds in the exported unit.
    bounds: &'static [f64],
    /// Exported unit per recorded unit (1e-6 for µs → s, 1 for counts).
    scale: f64,
    /// The last copy's distribution.
    last: Arc<Mutex<Option<Buckets>>>,
}

impl HdrSeries {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Self {
            bounds,
            scale,
            last: Arc::default(),
        }
    }

    /// Takes the distribution of `h` as the series' value.
    pub fn set(&self, h: &Histogram<u64>) {
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        let mut below = 0u64;
        for &bound in self.bounds {
            // Recorded values are integers: the bucket `le` holds every
            // value at or below floor(bound / scale).
            let upto = (bound / self.scale).floor() as u64;
            let cumulative = if upto == 0 {
                0
            } else {
                h.count_between(0, upto)
            };
            let cumulative = cumulative.max(below);
            buckets.push((bound, cumulative - below));
            below = cumulative;
        }
        let total = h.len();
        buckets.push((f64::INFINITY, total.saturating_sub(below)));
        let sum = h.mean() * total as f64 * self.scale;
        *self.last.lock() = Some((sum, total, buckets));
    }
}

impl EncodeMetric for HdrSeries {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let last = self.last.lock();
        let (sum, count, buckets) = match &*last {
            Some((s, c, b)) => (*s, *c, b.clone()),
            None => (
                0.0,
                0,
                self.bounds
                    .iter()
                    .chain(std::iter::once(&f64::INFINITY))
                    .map(|&b| (b, 0))
                    .collect(),
            ),
        };
        drop(last);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The cumulative counts the counters follow, as of the last update.
#[derive(Clone, Copy, Default)]
struct Seen {
    accepted: u64,
    requests: u64,
    applied: u64,
    lost_conflict: u64,
    failed: u64,
    commits: u64,
    committed_writes: u64,
    refusals: [u64; REASONS.len()],
}

/// Why a connection or a request was turned away (the `reason` label).
const REASONS: [&str; 5] = [
    "max_connections",
    "auth",
    "timeout",
    "protocol",
    "over_in_flight",
];

fn refusals(stats: &ServerStats) -> [u64; REASONS.len()] {
    [
        stats.refused_busy.load(Ordering::Relaxed),
        stats.auth_failed.load(Ordering::Relaxed),
        stats.timed_out.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        stats.over_in_flight.load(Ordering::Relaxed),
    ]
}

/// The receiver's exported series. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct RecvMetrics {
    registry: Arc<Registry>,
    connections: Gauge,
    accepted: Counter,
    requests: Counter,
    applied: Counter,
    lost_conflict: Counter,
    failed: Counter,
    refusals: Family<Reason, Counter>,
    commits: Counter,
    committed_writes: Counter,
    apply_latency: HdrSeries,
    commit_latency: HdrSeries,
    commit_writes: HdrSeries,
    seen: Arc<Mutex<Seen>>,
}

impl Default for RecvMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvMetrics {
    /// Registers every series under the `xdr_ship_recv` prefix.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Arc::new(Registry::default()),
            connections: Gauge::default(),
            accepted: Counter::default(),
            requests: Counter::default(),
            applied: Counter::default(),
            lost_conflict: Counter::default(),
            failed: Counter::default(),
            refusals: Family::default(),
            commits: Counter::default(),
            committed_writes: Counter::default(),
            apply_latency: HdrSeries::new(&LATENCY_BUCKETS_S, 1.0 / US_PER_S),
            commit_latency: HdrSeries::new(&LATENCY_BUCKETS_S, 1.0 / US_PER_S),
            commit_writes: HdrSeries::new(&BATCH_BUCKETS, 1.0),
            seen: Arc::default(),
        };
        let mut r = Registry::with_prefix("xdr_ship_recv");
        r.register("connections", "Connections open now", m.connections.clone());
        let counters = [
            (
                "connections_accepted",
                "Connections accepted since start",
                &m.accepted,
            ),
            (
                "requests",
                "Requests (WRITE or BATCH) answered",
                &m.requests,
            ),
            ("records_applied", "Writes applied to the store", &m.applied),
            (
                "records_lost_conflict",
                "Writes answered LostConflict (not newer than the stored record)",
                &m.lost_conflict,
            ),
            (
                "requests_failed",
                "Requests answered with an error",
                &m.failed,
            ),
            (
                "store_commits",
                "fdatasync calls of the store's committer (group commits)",
                &m.commits,
            ),
            (
                "store_committed_records",
                "Writes acknowledged by those fdatasync calls",
                &m.committed_writes,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "refusals",
            "Connections or requests turned away, by reason",
            m.refusals.clone(),
        );
        r.register_with_unit(
            "store_apply_latency",
            "From handing a write to the store to its durable answer",
            Unit::Seconds,
            m.apply_latency.clone(),
        );
        r.register_with_unit(
            "store_fsync_latency",
            "One fdatasync of the store's active segment",
            Unit::Seconds,
            m.commit_latency.clone(),
        );
        r.register(
            "store_fsync_batch_records",
            "Writes acknowledged by one fdatasync (group commit size)",
            m.commit_writes.clone(),
        );
        m.registry = Arc::new(r);
        m
    }

    /// Copies the server's counters and the store's histograms (called
    /// once per status interval).
    pub fn update(&self, stats: &ServerStats, store: &Store) {
        let st = store.stats();
        let now = Seen {
            accepted: stats.accepted.load(Ordering::Relaxed),
            requests: stats.requests.load(Ordering::Relaxed),
            applied: stats.applied.load(Ordering::Relaxed),
            lost_conflict: stats.lost_conflict.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            commits: st.commits,
            committed_writes: st.committed_writes,
            refusals: refusals(stats),
        };
        let mut seen = self.seen.lock();
        let advance = |c: &Counter, before: u64, after: u64| {
            c.inc_by(after.saturating_sub(before));
        };
        advance(&self.accepted, seen.accepted, now.accepted);
        advance(&self.requests, seen.requests, now.requests);
        advance(&self.applied, seen.applied, now.applied);
        advance(&self.lost_conflict, seen.lost_conflict, now.lost_conflict);
        advance(&self.failed, seen.failed, now.failed);
        advance(&self.commits, seen.commits, now.commits);
        advance(
            &self.committed_writes,
            seen.committed_writes,
            now.committed_writes,
        );
        for (i, reason) in REASONS.iter().enumerate() {
            let c = self.refusals.get_or_create(&Reason { reason });
            advance(&c, seen.refusals[i], now.refusals[i]);
        }
        *seen = now;
        drop(seen);
        self.connections
            .set(i64::try_from(stats.connections.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        if let Some(h) = store.histograms() {
            self.apply_latency.set(&h.apply_latency_us);
            self.commit_latency.set(&h.commit_latency_us);
            self.commit_writes.set(&h.commit_writes);
        }
    }
}

impl Exposition for RecvMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics do not encode: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 2).expect("bounds");
        for &v in values {
            h.record(v).expect("in bounds");
        }
        h
    }

    #[test]
    fn hdr_buckets_count_each_value_once_with_the_rest_in_inf() {
        let s = HdrSeries::new(&BATCH_BUCKETS, 1.0);
        s.set(&histogram(&[1, 3, 3, 100, 1_000_000]));
        let (sum, count, buckets) = s.last.lock().clone().expect("set");
        assert_eq!(count, 5);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert_eq!(buckets[0], (1.0, 1), "{buckets:?}");
        assert_eq!(buckets[1], (4.0, 2), "{buckets:?}");
        assert_eq!(buckets.last().copied(), Some((f64::INFINITY, 1)));
        assert!((sum - 1_000_107.0).abs() / 1_000_107.0 < 0.01, "{sum}");
    }

    #[test]
    fn latency_buckets_are_in_seconds() {
        let m = RecvMetrics::new();
        m.apply_latency.set(&histogram(&[80, 80, 3_000]));
        let text = m.encode();
        assert!(
            text.contains("xdr_ship_recv_store_apply_latency_seconds_bucket{le=\"0.0001\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("xdr_ship_recv_store_apply_latency_seconds_count 3"),
            "{text}"
        );
    }

    #[test]
    fn counters_follow_the_server_stats_and_refusals_carry_their_reason() {
        let m = RecvMetrics::new();
        let stats = ServerStats::default();
        stats.applied.store(40, Ordering::Relaxed);
        stats.auth_failed.store(2, Ordering::Relaxed);
        let store = Store::memory();
        m.update(&stats, &store);
        stats.applied.store(70, Ordering::Relaxed);
        m.update(&stats, &store);
        let text = m.encode();
        assert!(
            text.contains("xdr_ship_recv_records_applied_total 70"),
            "{text}"
        );
        assert!(
            text.contains("xdr_ship_recv_refusals_total{reason=\"auth\"} 2"),
            "{text}"
        );
    }
}
