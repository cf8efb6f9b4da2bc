//! The pipelined shipper: a pool of connections to one destination, each
//! with many records in flight, fed from one [`Source`].
//!
//! Why pipelining: with stop-and-wait, each connection delivers one record
//! per round trip, so 10 connections across 156 ms manage 64 records/s (the
//! seed measured 62). Sending without waiting makes throughput
//! `bandwidth / record size` and the number in flight `throughput × RTT`
//! (Little's law): 100K records/s × 0.156 s ≈ 16K in flight (the seed saw
//! 16,817 at 103,798 records/s).
//!
//! Flow: a dispatcher task pulls from the source (paced by
//! `--max-throughput`) into a small bounded queue; every connection takes
//! records from it only when its window has room (`conn`). Once a second
//! the pool builds a [`ShipSnapshot`] (the one type every output renders).
//! With `--window auto` the [`window`] controller looks at the pool every
//! few milliseconds and sizes the pool's in-flight from the measured
//! delivery rate × round trip, split over the connections that are up.
pub(crate) mod conn;
pub mod dead_letter;
pub mod source;
pub mod window;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use source::{GenerateSpec, Generator, Source, SourceRecord};

use crate::{
    metrics::{new_latency_histogram, Counters, Latency, ShipSnapshot},
    wire::{OrderingMode, WireError},
};
use conn::{ConnConfig, ConnState};

/// Why shipping failed (per connection these are retried; they end the run
/// only where said).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Socket error.
    #[error("{0}")]
    Io(std::io::Error),
    /// The destination address did not resolve.
    #[error("cannot resolve destination `{addr}`: {reason}")]
    Resolve {
        /// What was given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A connect or handshake took too long.
    #[error("{0} timed out after {1:?}")]
    Timeout(&'static str, Duration),
    /// The receiver refused or closed the session.
    #[error("receiver refused: {0}")]
    Refused(String),
    /// A frame could not be read or written.
    #[error("{0}")]
    Wire(WireError),
    /// The receiver broke the protocol.
    #[error("protocol violation by the receiver: {0}")]
    Protocol(String),
    /// The connection closed.
    #[error("connection closed by the receiver")]
    Closed,
    /// TLS, the credentials or the handshake failed in a way every retry
    /// would repeat (untrusted certificate, AuthFailed, TLS required, no
    /// common version): the run stops with the reason.
    #[error("{0}")]
    Rejected(String),
}

/// `--window W|auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSetting {
    /// Exactly this many records in flight per connection.
    Fixed(u64),
    /// Start small and grow from measured throughput × RTT.
    Auto,
}

impl std::str::FromStr for WindowSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            n => n
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Self::Fixed)
                .ok_or_else(|| format!("`{s}`: expected `auto` or a number of records ≥ 1")),
        }
    }
}

/// How the shipper runs.
#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// Destination `host:port`.
    pub to: String,
    /// Connections in the pool.
    pub connections: usize,
    /// Records in flight per connection.
    pub window: WindowSetting,
    /// `--window auto`: no connection's window grows past this many records.
    pub auto_window_max: u64,
    /// `--window auto`: the pool never holds more than this many bytes in
    /// flight (encoded frames): the shipper's memory is its base plus this.
    pub max_inflight_bytes: u64,
    /// Ordered or unordered answers.
    pub mode: OrderingMode,
    /// Cap on records per second (`None`: uncapped).
    pub max_throughput: Option<u64>,
    /// SO_SNDBUF to request (`None`: kernel autotuning).
    pub sndbuf: Option<usize>,
    /// Identity of this source node in every write.
    pub source_id: u64,
    /// Most records packed into one BATCH request (1: one WRITE per record).
    pub batch_max_records: usize,
    /// Stop taking new records after this long (then drain).
    pub duration: Option<Duration>,
    /// How long to wait for answers to records in flight once the source
    /// stops, before giving up on them.
    pub drain_timeout: Duration,
    /// How often to snapshot.
    pub interval: Duration,
    /// zstd-compress BATCH requests. Off by default: it costs CPU on every
    /// record and pays only when the link, not the CPU, is the limit and
    /// the values compress.
    pub compress: bool,
    /// TCP congestion control of every connection (`TCP_CONGESTION`:
    /// `cubic`, `bbr`, …); `None` keeps the host's default. On a lossy
    /// long path BBR keeps its rate where a loss-based algorithm halves it.
    pub congestion: Option<String>,
    /// Where records refused for good go (with the reason); `None`: they
    /// are only counted as `abandoned` and logged.
    pub dead_letter: Option<std::path::PathBuf>,
    /// TLS towards the receiver (`None`: plain TCP).
    pub tls: Option<crate::tls::ClientTls>,
    /// Pre-shared token sent in HELLO (`None`: no credentials).
    pub token: Option<bytes::Bytes>,
}

impl ShipConfig {
    /// Defaults of the seed's setup: 64 connections, auto window, ordered,
    /// SO_SNDBUF 5 MiB (where `net.core.wmem_max` is lower, as on these
    /// machines, the kernel's autotuning stays on instead).
    pub fn new(to: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            connections: 64,
            window: WindowSetting::Auto,
            auto_window_max: AUTO_WINDOW_MAX,
            max_inflight_bytes: AUTO_WINDOW_MAX_INFLIGHT_BYTES,
            mode: OrderingMode::Ordered,
            max_throughput: None,
            sndbuf: Some(5 << 20),
            source_id: 1,
            batch_max_records: 64,
            duration: None,
            drain_timeout: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            compress: false,
            congestion: None,
            dead_letter: None,
            tls: None,
            token: None,
        }
    }

    /// The pre-3.8 baseline: one record in flight per connection.
    pub fn stop_and_wait(mut self) -> Self {
        self.window = WindowSetting::Fixed(1);
        self.batch_max_records = 1;
        self
    }
}

/// Window a connection starts with under `--window auto`.
pub const AUTO_WINDOW_START: u64 = 64;
/// Largest window auto sizing grows to, per connection (the receiver's
/// default `max_in_flight` requests: a window of records never needs more).
pub const AUTO_WINDOW_MAX: u64 = 1 << 16;
/// Most bytes the auto window keeps in flight, all connections together:
/// 3 × the 39 MB that 250 MB/s needs at 156 ms, room for Startup's overshoot.
pub const AUTO_WINDOW_MAX_INFLIGHT_BYTES: u64 = 128 << 20;

/// How a run ended.
#[derive(Clone, Debug)]
pub struct ShipSummary {
    /// Wall time from start to the last answer.
    pub elapsed: Duration,
    /// Final counters.
    pub counters: Counters,
    /// Records still unanswered when the run ended (drain timed out or cancelled).
    pub unanswered: u64,
    /// The last snapshot.
    pub last: ShipSnapshot,
}

impl ShipSummary {
    /// Delivered records per second over the whole run.
    pub fn records_per_s(&self) -> f64 {
        self.counters.delivered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Resolves `host:port`.
pub async fn resolve(to: &str) -> Result<SocketAddr, ShipError> {
    let mut addrs = tokio::net::lookup_host(to)
        .await
        .map_err(|e| ShipError::Resolve {
            addr: to.to_owned(),
            reason: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| ShipError::Resolve {
        addr: to.to_owned(),
        reason: "no address".to_owned(),
    })
}

/// Ships everything `source` yields to `cfg.to`, calling `report` with a
/// snapshot every `cfg.interval`. Returns when the source is exhausted
/// (or `cfg.duration` is over) and every record is answered, when the
/// drain times out, or when `cancel` fires. `stop` ends intake gracefully.
pub async fn run<S: Source>(
    cfg: ShipConfig,
    source: S,
    mut report: impl FnMut(&ShipSnapshot),
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Result<ShipSummary, ShipError> {
    let addr = resolve(&cfg.to).await?;
    let dead_letter = match &cfg.dead_letter {
        Some(path) => Some(Arc::new(
            dead_letter::DeadLetter::open(path).map_err(ShipError::Io)?,
        )),
        None => None,
    };
    let started = Instant::now();
    let window = match cfg.window {
        WindowSetting::Fixed(w) => w,
        WindowSetting::Auto => AUTO_WINDOW_START.min(cfg.auto_window_max),
    };
    let conn_cfg = Arc::new(ConnConfig {
        addr,
        mode: cfg.mode,
        source_id: cfg.source_id,
        sndbuf: cfg.sndbuf,
        congestion: cfg.congestion.clone(),
        batch_max_records: cfg.batch_max_records.max(1),
        batch_max_bytes: 256 * 1024,
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        report_acks: source.wants_acks(),
        compress: cfg.compress,
        dead_letter,
        tls: cfg.tls.clone(),
        to: cfg.to.clone(),
        credentials: cfg.token.clone().unwrap_or_default(),
    });
    // A certificate or token the receiver refuses fails every retry the
    // same way: report it now rather than reconnect forever.
    conn::preflight(&conn_cfg).await?;

    // A small hand-over queue: the windows, not this queue, hold the
    // records in flight.
    let (tx, rx) = async_channel::bounded::<SourceRecord>(1024);
    let (ack_tx, ack_rx) = mpsc::channel::<Vec<u64>>(1024);
    let backlog = Arc::new(AtomicU64::new(0));
    // When the source's oldest unacknowledged record was written (Unix ms,
    // 0: unknown), so the lag keeps growing while nothing is answered.
    let source_oldest_ms = Arc::new(AtomicU64::new(0));
    let conn_cancel = cancel.child_token();

    let dispatcher = tokio::spawn(dispatch(
        source,
        tx,
        ack_rx,
        backlog.clone(),
        source_oldest_ms.clone(),
        cfg.max_throughput,
        cfg.duration.map(|d| started + d),
        stop.clone(),
        cancel.clone(),
    ));

    let states: Vec<Arc<ConnState>> = (0..cfg.connections.max(1))
        .map(|id| Arc::new(ConnState::new(id, window)))
        .collect();
    let mut tasks = JoinSet::new();
    for state in &states {
        tasks.spawn(conn::run(
            state.clone(),
            conn_cfg.clone(),
            rx.clone(),
            ack_tx.clone(),
            conn_cancel.clone(),
        ));
    }
    drop((rx.clone(), ack_tx));

    let mut snapper = Snapshotter::new(&cfg, &states, started);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut auto = (cfg.window == WindowSetting::Auto).then(|| {
        window::PoolWindow::new(
            states.len(),
            window,
            cfg.auto_window_max,
            cfg.max_inflight_bytes,
        )
    });
    let mut control = tokio::time::interval(window::CONTROL_TICK);
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let mut snap = snapper.take(&states, backlog.load(Ordering::Relaxed) + rx.len() as u64);
                if let oldest @ 1.. = source_oldest_ms.load(Ordering::Relaxed) {
                    snap.lag_ms = snap.lag_ms.max(snap.unix_ms.saturating_sub(oldest));
                }
                report(&snap);
            }
            _ = control.tick(), if auto.is_some() => {
                if let Some(auto) = auto.as_mut() {
                    auto.tick(&states);
                }
            }
            _ = async { match drain_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                tracing::warn!("drain timed out after {:?}; giving up on records still in flight", cfg.drain_timeout);
                conn_cancel.cancel();
            }
        }
        if drain_deadline.is_none() && (rx.is_closed() || stop.is_cancelled()) && rx.is_empty() {
            drain_deadline = Some(tokio::time::Instant::now() + cfg.drain_timeout);
        }
    }
    // The connections are done and have dropped their ack senders: the
    // dispatcher hands the last acknowledgements to the source (a log's
    // checkpoint must see them) and ends. Bounded, in case it is stuck.
    let mut dispatcher = dispatcher;
    if tokio::time::timeout(Duration::from_secs(1), &mut dispatcher)
        .await
        .is_err()
    {
        dispatcher.abort();
    }
    let last = snapper.take(&states, backlog.load(Ordering::Relaxed));
    let mut counters = Counters::default();
    for s in &states {
        counters.add(&s.counters());
    }
    Ok(ShipSummary {
        elapsed: started.elapsed(),
        counters,
        unanswered: last.inflight,
        last,
    })
}

/// Pulls from the source into the hand-over queue, paced by
/// `max_throughput`, until the source ends, the deadline passes or `stop`.
#[allow(clippy::too_many_arguments)]
async fn dispatch<S: Source>(
    mut source: S,
    tx: async_channel::Sender<SourceRecord>,
    mut acks: mpsc::Receiver<Vec<u64>>,
    backlog: Arc<AtomicU64>,
    oldest_ms: Arc<AtomicU64>,
    max_throughput: Option<u64>,
    deadline: Option<Instant>,
    stop: CancellationToken,
    cancel: CancellationToken,
) {
    let t0 = Instant::now();
    let mut sent: u64 = 0;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(rate) = max_throughput.filter(|r| *r > 0) {
            let due = t0 + Duration::from_secs_f64(sent as f64 / rate as f64);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
        let record = tokio::select! {
            r = source.next() => r,
            Some(seqs) = acks.recv() => {
                for s in seqs { source.acked(s); }
                publish_lag(&source, &oldest_ms);
                continue;
            }
            _ = stop.cancelled() => break,
            _ = cancel.cancelled() => break,
        };
        let Some(record) = record else { break };
        backlog.store(source.backlog(), Ordering::Relaxed);
        publish_lag(&source, &oldest_ms);
        // A queue with room takes the record at once, without the select
        // below (three futures and two cancellation checks per record).
        let record = match tx.try_send(record) {
            Ok(()) => None,
            Err(async_channel::TrySendError::Full(r)) => Some(r),
            Err(async_channel::TrySendError::Closed(_)) => break,
        };
        if let Some(record) = record {
            tokio::select! {
                r = tx.send(record) => if r.is_err() { break },
                _ = stop.cancelled() => break,
                _ = cancel.cancelled() => break,
            }
        }
        sent += 1;
    }
    backlog.store(source.backlog(), Ordering::Relaxed);
    tx.close();
    // Keep delivering acknowledgements to the source until every connection
    // is done with it.
    while let Some(seqs) = acks.recv().await {
        for s in seqs {
            source.acked(s);
        }
        publish_lag(&source, &oldest_ms);
    }
}

/// Publishes when the source's oldest unacknowledged record was written.
fn publish_lag<S: Source>(source: &S, oldest_ms: &AtomicU64) {
    let oldest = source.lag().map_or(0, |lag| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.saturating_sub(lag.as_millis() as u64).max(1)
    });
    oldest_ms.store(oldest, Ordering::Relaxed);
}

/// Turns the connections' cumulative counters into interval rates.
struct Snapshotter {
    destination: String,
    mode: &'static str,
    started: Instant,
    last_at: Instant,
    last_delivered: Vec<u64>,
    last_bytes: Vec<u64>,
    last_outstanding: u64,
}

impl Snapshotter {
    fn new(cfg: &ShipConfig, states: &[Arc<ConnState>], started: Instant) -> Self {
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

    fn take(&mut self, states: &[Arc<ConnState>], outstanding: u64) -> ShipSnapshot {
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
            snap.connections.push(c);
        }
        snap.latency = Latency::from_histogram(&hist);
        snap.lag_ms = oldest.map_or(0, |t| now.duration_since(t).as_millis() as u64);
        self.last_at = now;
        self.last_outstanding = outstanding;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_setting_parses_auto_or_a_positive_count() {
        assert_eq!("auto".parse::<WindowSetting>(), Ok(WindowSetting::Auto));
        assert_eq!(
            "512".parse::<WindowSetting>(),
            Ok(WindowSetting::Fixed(512))
        );
        let err = "0".parse::<WindowSetting>().unwrap_err();
        assert!(err.contains("`auto` or a number"), "{err}");
    }

    #[test]
    fn stop_and_wait_is_one_record_in_flight_without_batching() {
        let c = ShipConfig::new("127.0.0.1:3000").stop_and_wait();
        assert_eq!(c.window, WindowSetting::Fixed(1));
        assert_eq!(c.batch_max_records, 1);
    }
}
