//! `--metrics ADDR`: the shipper's numbers and its verdict as Prometheus
//! text, for the services that ship headless and are watched by a scraper.
//!
//! Why bounded labels: a time-series database pays for every distinct label
//! set forever. Series here are per destination, per destination × limit
//! (nine limits), per destination × outcome and per CPU × vector — never
//! per connection, whose cookies change on every reconnect. Per-connection
//! detail belongs to the TUI and to recordings.
//!
//! Why gauges are set once per interval rather than computed at scrape:
//! the scrape must never wait on the shipper, and the shipper must never
//! wait on a scrape. [`PromMetrics::update`] writes atomics; the HTTP
//! handler encodes them. Counters advance by the difference between two
//! snapshots of cumulative counts, so a restart of the exporter never
//! makes them go backwards.
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    sink::{Frame, Sink},
    text_format::TextFormat,
};
use crate::{
    diagnose::{Diagnosis, Limit},
    metrics::{Counters, ShipSnapshot},
    probe::softirq::SoftirqReport,
};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

type GaugeF = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dest {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLimit {
    destination: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestOutcome {
    destination: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CpuVector {
    cpu: String,
    vector: String,
}

/// Softirq vectors exported per CPU; the rest are summed in `other`.
const VECTORS: [&str; 2] = ["NET_RX", "NET_TX"];

/// The exported series. Cheap to clone: every handle shares the same
/// atomics.
#[derive(Clone)]
pub struct PromMetrics {
    registry: Arc<Registry>,
    records_per_s: Family<Dest, GaugeF>,
    bytes_per_s: Family<Dest, GaugeF>,
    inflight: Family<Dest, GaugeF>,
    inflight_bytes: Family<Dest, GaugeF>,
    outstanding: Family<Dest, GaugeF>,
    lag: Family<Dest, GaugeF>,
    connected: Family<Dest, GaugeF>,
    latency_p50: Family<Dest, GaugeF>,
    latency_p99: Family<Dest, GaugeF>,
    rtt: Family<Dest, GaugeF>,
    bdp: Family<Dest, GaugeF>,
    share: Family<DestLimit, GaugeF>,
    limit: Family<DestLimit, GaugeF>,
    records: Family<DestOutcome, Counter>,
    softirq: Family<CpuVector, GaugeF>,
    last_counters: Arc<Mutex<std::collections::HashMap<String, Counters>>>,
}

impl Default for PromMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PromMetrics {
    /// Registers every series.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("xdr_ship");
        let m = Self {
            registry: Arc::new(Registry::default()),
            records_per_s: Family::default(),
            bytes_per_s: Family::default(),
            inflight: Family::default(),
            inflight_bytes: Family::default(),
            outstanding: Family::default(),
            lag: Family::default(),
            connected: Family::default(),
            latency_p50: Family::default(),
            latency_p99: Family::default(),
            rtt: Family::default(),
            bdp: Family::default(),
            share: Family::default(),
            limit: Family::default(),
            records: Family::default(),
            softirq: Family::default(),
            last_counters: Arc::default(),
        };
        m.register_gauges(&mut r);
        r.register(
            "limit_share_ratio",
            "Share of connection-time held back by each limit over the verdict window (sums to 1)",
            m.share.clone(),
        );
        r.register(
            "limit",
            "1 for the limit with the largest share, 0 for the others",
            m.limit.clone(),
        );
        r.register("records", "Records answered, by outcome", m.records.clone());
        r.register(
            "softirq_cpu_ratio",
            "Share of each CPU's wall time in softirq, by vector (other: the rest)",
            m.softirq.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Registers the per-destination gauges: name, help, series.
    fn register_gauges(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Family<Dest, GaugeF>); 11] = [
            (
                "throughput_records_per_second",
                "Records acknowledged per second over the last interval",
                &self.records_per_s,
            ),
            (
                "throughput_bytes_per_second",
                "Payload bytes acknowledged per second over the last interval",
                &self.bytes_per_s,
            ),
            (
                "inflight_records",
                "Records sent and not yet answered",
                &self.inflight,
            ),
            (
                "inflight_bytes",
                "Payload bytes sent and not yet answered",
                &self.inflight_bytes,
            ),
            (
                "outstanding_records",
                "Records waiting at the source, not yet sent",
                &self.outstanding,
            ),
            (
                "lag_seconds",
                "Age of the oldest unanswered record",
                &self.lag,
            ),
            (
                "connections_connected",
                "Connections of the pool that are up",
                &self.connected,
            ),
            (
                "ack_latency_p50_seconds",
                "Median time from send to answer over the last interval",
                &self.latency_p50,
            ),
            (
                "ack_latency_p99_seconds",
                "99th percentile time from send to answer over the last interval",
                &self.latency_p99,
            ),
            ("rtt_seconds", "Round trip the verdict uses", &self.rtt),
            (
                "bdp_bytes",
                "Bandwidth-delay product the verdict uses",
                &self.bdp,
            ),
        ];
        for (name, help, family) in gauges {
            r.register(name, help, family.clone());
        }
    }

    /// Records one interval: the snapshot, the verdict over the window if
    /// there is one yet, and the softirq load.
    pub fn update(
        &self,
        snap: &ShipSnapshot,
        diagnosis: Option<&Diagnosis>,
        softirq: Option<&SoftirqReport>,
    ) {
        let d = Dest {
            destination: snap.destination.clone(),
        };
        let set = |f: &Family<Dest, GaugeF>, v: f64| {
            f.get_or_create(&d).set(v);
        };
        set(&self.records_per_s, snap.throughput);
        set(&self.bytes_per_s, snap.bytes_per_s);
        set(&self.inflight, snap.inflight as f64);
        set(&self.inflight_bytes, snap.inflight_bytes as f64);
        set(&self.outstanding, snap.outstanding as f64);
        set(&self.lag, snap.lag_ms as f64 / 1e3);
        set(&self.connected, snap.connected as f64);
        set(&self.latency_p50, snap.latency.p50_us as f64 / 1e6);
        set(&self.latency_p99, snap.latency.p99_us as f64 / 1e6);
        self.advance_counters(&snap.destination, &snap.counters);
        if let Some(diag) = diagnosis {
            if let Some(rtt) = diag.rtt {
                set(&self.rtt, rtt.as_secs_f64());
            }
            if let Some(bdp) = diag.bdp_bytes {
                set(&self.bdp, bdp as f64);
            }
            for l in Limit::ALL {
                let labels = DestLimit {
                    destination: snap.destination.clone(),
                    limit: l.label(),
                };
                self.share
                    .get_or_create(&labels)
                    .set(diag.shipper.share(l) / 100.0);
                self.limit
                    .get_or_create(&labels)
                    .set(if diag.shipper.limit == l { 1.0 } else { 0.0 });
            }
        }
        if let Some(report) = softirq {
            for cpu in &report.cpus {
                let mut named = 0.0;
                for v in VECTORS {
                    let pct = cpu.vector(v).and_then(|r| r.time_pct);
                    if let Some(p) = pct {
                        named += p;
                        self.softirq
                            .get_or_create(&CpuVector {
                                cpu: cpu.cpu.to_string(),
                                vector: v.to_owned(),
                            })
                            .set(p / 100.0);
                    }
                }
                self.softirq
                    .get_or_create(&CpuVector {
                        cpu: cpu.cpu.to_string(),
                        vector: "other".to_owned(),
                    })
                    .set(((cpu.total_pct - named).max(0.0)) / 100.0);
            }
        }
    }

    fn advance_counters(&self, destination: &str, now: &Counters) {
        let mut last = self.last_counters.lock();
        let before = last.get(destination).copied().unwrap_or_default();
        let outcomes: [(&'static str, u64, u64); 5] = [
            ("success", before.success, now.success),
            ("lost_conflict", before.lost_conflict, now.lost_conflict),
            ("abandoned", before.abandoned, now.abandoned),
            (
                "retry_conn_reset",
                before.retry_conn_reset,
                now.retry_conn_reset,
            ),
            ("retry_dest", before.retry_dest, now.retry_dest),
        ];
        for (outcome, b, n) in outcomes {
            let c = self.records.get_or_create(&DestOutcome {
                destination: destination.to_owned(),
                outcome,
            });
            c.inc_by(n.saturating_sub(b));
        }
        last.insert(destination.to_owned(), *now);
    }

    /// The OpenMetrics text exposition ([`TextFormat`] renders a scrape's).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics do not encode: {e}");
        }
        out
    }
}

/// Most scrapes served at once; more wait in the listen queue.
const MAX_SCRAPERS: usize = 16;

/// A scraper has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The Prometheus sink: each frame sets the gauges a scrape reads.
impl Sink for PromMetrics {
    fn emit(&mut self, frame: &Frame<'_>) {
        self.update(frame.snap, frame.diagnosis, frame.sample.softirq.as_ref());
    }
}

/// What a scrape gets: the shipper's [`PromMetrics`] or the receiver's
/// [`crate::server::metrics::RecvMetrics`], served by the same [`serve`].
pub trait Exposition: Clone + Send + Sync + 'static {
    /// The OpenMetrics text exposition (a scrape gets it in the format it
    /// negotiates, [`TextFormat`]).
    fn encode(&self) -> String;
}

impl Exposition for PromMetrics {
    fn encode(&self) -> String {
        PromMetrics::encode(self)
    }
}

/// Binds `addr` now (so a bad address fails before shipping starts) and
/// serves `GET /metrics` from `metrics` until `cancel`, as Prometheus text
/// 0.0.4 unless the scraper's `Accept` asks for OpenMetrics.
pub async fn serve<E: Exposition>(
    addr: SocketAddr,
    metrics: E,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("metrics accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r { tracing::debug!("metrics connection: {e}") },
                    _ = cancel.cancelled() => {}
                }
            });
        }
    });
    Ok((local, task))
}

fn respond<E: Exposition>(
    req: &Request<hyper::body::Incoming>,
    metrics: &E,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = TextFormat::negotiate(accept);
            (
                StatusCode::OK,
                format.content_type(),
                format.render(metrics.encode()),
            )
        }
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(success: u64) -> ShipSnapshot {
        ShipSnapshot {
            destination: "198.18.0.2:3000".into(),
            throughput: 1234.0,
            inflight: 77,
            counters: Counters {
                success,
                ..Counters::default()
            },
            ..ShipSnapshot::default()
        }
    }

    #[test]
    fn the_exposition_carries_throughput_and_inflight_per_destination() {
        let m = PromMetrics::new();
        m.update(&snapshot(10), None, None);
        let text = m.encode();
        assert!(
            text.contains(
                "xdr_ship_throughput_records_per_second{destination=\"198.18.0.2:3000\"} 1234.0"
            ),
            "{text}"
        );
        assert!(
            text.contains("xdr_ship_inflight_records{destination=\"198.18.0.2:3000\"} 77.0"),
            "{text}"
        );
    }

    #[test]
    fn record_counters_advance_by_the_difference_between_snapshots() {
        let m = PromMetrics::new();
        m.update(&snapshot(10), None, None);
        m.update(&snapshot(25), None, None);
        let text = m.encode();
        assert!(
            text.contains(
                "xdr_ship_records_total{destination=\"198.18.0.2:3000\",outcome=\"success\"} 25"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_classic_exposition_names_the_records_counter_by_its_sample() {
        let m = PromMetrics::new();
        m.update(&snapshot(5), None, None);
        let text = TextFormat::Classic.render(m.encode());
        assert!(
            text.contains("# HELP xdr_ship_records_total Records answered, by outcome.\n")
                && text.contains("# TYPE xdr_ship_records_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn no_series_is_labelled_by_connection() {
        let m = PromMetrics::new();
        let mut s = snapshot(1);
        s.connections = (0..64)
            .map(|id| crate::metrics::ConnSnapshot {
                id,
                cookie: 1000 + id as u64,
                ..Default::default()
            })
            .collect();
        m.update(&s, None, None);
        let text = m.encode();
        assert!(
            !text.contains("cookie") && !text.contains("connection="),
            "{text}"
        );
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series < 30, "{series} series for one destination:\n{text}");
    }
}
