//! The shipper's numbers: one snapshot type, rendered as the seed's headless
//! line, as JSON lines, by the TUI and by `/metrics`
//! ([`crate::live::prometheus`]).
//!
//! Why one type: an operator comparing the TUI with a log line or a
//! Prometheus graph must see the same figure computed the same way. Every
//! output renders a [`ShipSnapshot`]; none computes its own numbers.
//!
//! Counter names follow Aerospike XDR where they mean the same thing
//! (`success`, `lost_conflict`, `retry_conn_reset`, `retry_dest`,
//! `abandoned`, `lag`), so an operator who knows XDR reads them at once.

use crate::units;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Cumulative outcome counters of a shipper (or of one connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Records handed to a connection for the first time.
    pub shipped: u64,
    /// Records applied by the destination.
    pub success: u64,
    /// Records the destination already had in a newer version: counted as
    /// delivered (last-writer-wins makes resends harmless).
    pub lost_conflict: u64,
    /// Records re-sent because their connection was lost with them in flight.
    pub retry_conn_reset: u64,
    /// Records re-sent because the destination answered a retryable error.
    pub retry_dest: u64,
    /// Records given up on: the destination answered a permanent error.
    pub abandoned: u64,
    /// Bytes of records acknowledged (frame payload, both outcomes).
    pub acked_bytes: u64,
}

impl Counters {
    /// Records the destination acknowledged as delivered.
    pub fn delivered(&self) -> u64 {
        self.success + self.lost_conflict
    }

    /// Element-wise sum.
    pub fn add(&mut self, other: &Counters) {
        self.shipped += other.shipped;
        self.success += other.success;
        self.lost_conflict += other.lost_conflict;
        self.retry_conn_reset += other.retry_conn_reset;
        self.retry_dest += other.retry_dest;
        self.abandoned += other.abandoned;
        self.acked_bytes += other.acked_bytes;
    }
}

/// Acknowledgement latency percentiles over one interval, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples in the interval.
    pub samples: u64,
    /// Smallest.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of `h` (values in µs); all zero when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            samples: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A latency histogram in µs from 1 µs to 1 hour, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// The kernel's view of one of the shipper's own sockets (`TCP_INFO`), in
/// units. The chrono timers are cumulative; diagnosis works on their
/// differences between snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSample {
    /// Congestion window, segments.
    pub cwnd_segments: u32,
    /// Slow-start threshold, segments.
    pub ssthresh_segments: u32,
    /// Sender MSS, bytes.
    pub mss_bytes: u32,
    /// Smoothed RTT.
    pub srtt_us: u32,
    /// Smallest RTT seen.
    pub min_rtt_us: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked_segments: u32,
    /// The peer's advertised window.
    pub snd_wnd_bytes: u32,
    /// Our advertised window.
    pub rcv_wnd_bytes: u32,
    /// Written by us, not yet sent by TCP.
    pub notsent_bytes: u32,
    /// Latest delivery-rate sample.
    pub delivery_rate_bytes_per_s: u64,
    /// Whether that sample was limited by the application.
    pub app_limited: bool,
    /// Time with data in flight (cumulative).
    pub busy_us: u64,
    /// Time limited by the peer's receive window (cumulative).
    pub rwnd_limited_us: u64,
    /// Time limited by our send buffer (cumulative).
    pub sndbuf_limited_us: u64,
    /// Segments retransmitted (cumulative).
    pub total_retrans: u32,
    /// Bytes acknowledged by the peer (cumulative).
    pub bytes_acked: u64,
}

impl From<&crate::net::TcpInfo> for TcpSample {
    fn from(i: &crate::net::TcpInfo) -> Self {
        Self {
            cwnd_segments: i.snd_cwnd,
            ssthresh_segments: i.snd_ssthresh,
            mss_bytes: i.snd_mss,
            srtt_us: i.rtt_us,
            min_rtt_us: i.min_rtt_us,
            unacked_segments: i.unacked,
            snd_wnd_bytes: i.snd_wnd,
            rcv_wnd_bytes: i.rcv_wnd,
            notsent_bytes: i.notsent_bytes,
            delivery_rate_bytes_per_s: i.delivery_rate,
            app_limited: i.delivery_rate_app_limited(),
            busy_us: i.busy_time_us,
            rwnd_limited_us: i.rwnd_limited_us,
            sndbuf_limited_us: i.sndbuf_limited_us,
            total_retrans: i.total_retrans,
            bytes_acked: i.bytes_acked,
        }
    }
}

/// One connection's state at a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnSnapshot {
    /// Index of the connection in its pool.
    pub id: usize,
    /// The node it ships to, where a destination has several (a Redis
    /// Cluster's primary, `host:port`); `None`: the one destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Kernel socket cookie of the current socket (0 while disconnected):
    /// the join key with the kernel probes.
    pub cookie: u64,
    /// Whether the connection is up.
    pub connected: bool,
    /// Records in flight (sent, not yet acknowledged).
    pub inflight: u64,
    /// Bytes in flight (encoded frames).
    pub inflight_bytes: u64,
    /// The window (max records in flight) now.
    pub window: u64,
    /// Records acknowledged per second over the interval.
    pub acks_per_s: f64,
    /// Acknowledged bytes per second over the interval.
    pub bytes_per_s: f64,
    /// Whether the window was full at some point in the interval.
    pub window_limited: bool,
    /// Cumulative counters.
    pub counters: Counters,
    /// The kernel's view of the socket (`TCP_INFO`), while connected.
    pub tcp: Option<TcpSample>,
}

/// Everything the shipper knows about itself at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipSnapshot {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Seconds since the shipper started.
    pub elapsed_s: f64,
    /// Where records go.
    pub destination: String,
    /// `ordered` or `unordered`.
    pub mode: String,
    /// Records delivered per second over the last interval (the seed's
    /// `throughput`).
    pub throughput: f64,
    /// Delivered bytes per second over the last interval.
    pub bytes_per_s: f64,
    /// Records sent and not yet acknowledged, all connections.
    pub inflight: u64,
    /// Bytes in flight, all connections.
    pub inflight_bytes: u64,
    /// Records the source has that the shipper has not yet sent.
    pub outstanding: u64,
    /// Change of `outstanding` per second over the interval (positive:
    /// falling behind).
    pub delta_per_s: f64,
    /// Age of the oldest record sent and not yet acknowledged, in ms
    /// (XDR's `lag`).
    pub lag_ms: u64,
    /// Acknowledgement latency over the interval.
    pub latency: Latency,
    /// Cumulative counters, all connections.
    pub counters: Counters,
    /// Connections up now.
    pub connected: usize,
    /// One entry per connection.
    pub connections: Vec<ConnSnapshot>,
    /// Seconds since intake ended (`--duration` over, the source done or
    /// stopped) and the run's drain began: the shipper sends nothing new
    /// and waits for the answers to what is in flight. Absent before. The
    /// verdict leaves the drain out of its shares: the run's own ending,
    /// not a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
}

impl ShipSnapshot {
    /// The seed's headless line, then acknowledged MB/s, ack latency and
    /// XDR's counters:
    /// `throughput N : inflight N : outstanding N (delta N/s) : X MB/s : lat p50 … p99 … p99.9 …`.
    pub fn headless_line(&self) -> String {
        format!(
            "throughput {:.0} : inflight {} : outstanding {} (delta {:.0}/s) : {:.1} MB/s : \
             lat p50 {} p99 {} p99.9 {} : conns {}/{} : success {} lost_conflict {} \
             retry_conn_reset {} retry_dest {} abandoned {} : lag {}",
            self.throughput,
            self.inflight,
            self.outstanding,
            self.delta_per_s,
            self.bytes_per_s / 1e6,
            units::micros(self.latency.p50_us),
            units::micros(self.latency.p99_us),
            units::micros(self.latency.p999_us),
            self.connected,
            self.connections.len(),
            self.counters.success,
            self.counters.lost_conflict,
            self.counters.retry_conn_reset,
            self.counters.retry_dest,
            self.counters.abandoned,
            units::micros(self.lag_ms * 1000),
        )
    }

    /// One JSON object (the `--json` line), without per-connection detail
    /// unless `per_connection`.
    pub fn json_line(&self, per_connection: bool) -> String {
        if per_connection {
            serde_json::to_string(self)
        } else {
            let mut lean = self.clone();
            lean.connections.clear();
            serde_json::to_string(&lean)
        }
        .unwrap_or_else(|e| format!("{{\"error\":\"snapshot does not serialise: {e}\"}}"))
    }
}

/// The exporter's old path, kept only so that wiring written against it in
/// parallel (`cmd/ingest.rs`) still builds after the merge: the
/// Prometheus sink lives in [`crate::live::prometheus`]. Delete once the
/// callers say `live::prometheus`.
pub mod prometheus {
    pub use crate::live::prometheus::{serve, MetricsError, PromMetrics};
}

/// The old name of [`crate::units::micros`], for callers outside the live
/// pipeline (`cmd/load.rs`, `cmd/diagnose.rs`) until they switch.
pub use crate::units::micros as fmt_us;

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> ShipSnapshot {
        ShipSnapshot {
            throughput: 103_798.4,
            bytes_per_s: 108.0e6,
            inflight: 16_817,
            outstanding: 0,
            delta_per_s: 0.0,
            latency: Latency {
                samples: 10,
                min_us: 156_000,
                p50_us: 158_200,
                p99_us: 171_000,
                p999_us: 1_200_000,
                max_us: 1_300_000,
            },
            counters: Counters {
                success: 100,
                lost_conflict: 2,
                ..Counters::default()
            },
            connections: vec![ConnSnapshot::default(); 64],
            connected: 64,
            ..ShipSnapshot::default()
        }
    }

    #[test]
    fn headless_line_starts_with_the_seed_format() {
        let line = snapshot().headless_line();
        assert!(
            line.starts_with(
                "throughput 103798 : inflight 16817 : outstanding 0 (delta 0/s) : 108.0 MB/s : "
            ),
            "{line}"
        );
        assert!(
            line.contains("lat p50 158.2ms p99 171.0ms p99.9 1.20s"),
            "{line}"
        );
        assert!(line.contains("conns 64/64"), "{line}");
        assert!(line.contains("lost_conflict 2"), "{line}");
        assert!(line.ends_with(" : lag 0us"), "{line}");
    }

    #[test]
    fn json_line_carries_xdr_counter_names_and_omits_connections_unless_asked() {
        let s = snapshot();
        let lean = s.json_line(false);
        assert!(lean.contains(r#""lost_conflict":2"#), "{lean}");
        assert!(lean.contains(r#""connections":[]"#), "{lean}");
        let full = s.json_line(true);
        assert_eq!(full.matches(r#""cookie":"#).count(), 64);
    }

    #[test]
    fn latency_of_an_empty_interval_is_zero() {
        assert_eq!(
            Latency::from_histogram(&new_latency_histogram()),
            Latency::default()
        );
    }

    #[test]
    fn delivered_counts_lost_conflict_as_success() {
        let c = Counters {
            success: 5,
            lost_conflict: 3,
            ..Counters::default()
        };
        assert_eq!(c.delivered(), 8);
    }
}
