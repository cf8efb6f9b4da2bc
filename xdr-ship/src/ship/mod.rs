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
//!
//! Towards `redis-cluster://SEED`, `cluster` runs one such pool per
//! cluster node behind a router that sends each record to the primary
//! owning its key's slot (and follows `MOVED`, `ASK` and failovers); the
//! dispatcher, the snapshots and the auto window see all the pools' connections as
//! one pool.
mod cluster;
pub(crate) mod conn;
pub mod dead_letter;
mod dispatch;
mod handover;
pub mod redis;
mod snapshot;
pub mod source;
pub mod window;

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use source::{GenerateSpec, Generator, Source, SourceRecord};

use crate::{
    metrics::{Counters, ShipSnapshot},
    wire::{OrderingMode, WireError},
};
use conn::{ConnConfig, ConnState};
use dispatch::{dispatch, Pacing, Shared};
use snapshot::Snapshotter;

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
    /// No connection to the destination could be opened for the whole run
    /// (its `--duration` and drain), so nothing was shipped.
    #[error(
        "no connection to {addr} could be opened in {after:.1?} (the warnings above say why); \
         nothing was shipped"
    )]
    Unreachable {
        /// The destination.
        addr: String,
        /// How long the run tried.
        after: Duration,
    },
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
    /// Pre-shared token sent in HELLO (`None`: no credentials); towards
    /// Redis, its password (or `USER PASSWORD`).
    pub token: Option<bytes::Bytes>,
    /// A connection with nothing to send for this long sends a PING, so
    /// that the receiver's idle timeout (5 min by default) does not close
    /// it on a quiet night; `Duration::ZERO`: never.
    pub ping_interval: Duration,
    /// `--to redis://…`: enforce last-writer-wins inside Redis (`false`:
    /// plain `SET`/`DEL`, `--redis-lww off`).
    pub redis_lww: bool,
}

impl ShipConfig {
    /// Defaults: [`DEFAULT_CONNECTIONS`] connections, auto window, ordered,
    /// SO_SNDBUF 5 MiB (where `net.core.wmem_max` is lower, as on these
    /// machines, the kernel's autotuning stays on instead).
    pub fn new(to: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            connections: DEFAULT_CONNECTIONS,
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
            ping_interval: PING_INTERVAL,
            redis_lww: true,
        }
    }

    /// The pre-3.8 baseline: one record in flight per connection.
    pub fn stop_and_wait(mut self) -> Self {
        self.window = WindowSetting::Fixed(1);
        self.batch_max_records = 1;
        self
    }
}

/// Default [`ShipConfig::ping_interval`]: a tenth of the receiver's default
/// idle timeout (5 min), so a lost PING or two still keeps the link up.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// TCP connections per destination unless `--connections` says: the
/// seed's 64. Each connection's writer and reader wake for their own
/// share of the traffic, so fewer connections mean larger writes and
/// fewer wake-ups per MB; but each connection opens from its own TCP
/// initial window, so more connections fill a long link sooner. Measured
/// on the 156 ms / 100 MB/s lab (`ship --generate max,1000,536870
/// --duration 20s` against `recv --memory`, getrusage of both ends,
/// 2026-12-03): 64 connections 7.4–8.1 ms of CPU per MB; 32: 6.1; 16:
/// 5.3–5.8; 8: 4.8 (and the second second at 30K records/s against
/// 62–73K with 64). The whole grid with 16 (`cargo xtask bench --links
/// --link-seconds 16`, same day) cut CPU per MB on every row (e.g. 64 KB
/// records 8.0× → 3.3× iperf3's) but took 4.3–5.5 s to reach 90% on the
/// 156 ms and 250 ms rows against 3.3–3.4 s with 64, over the 3 s + 4
/// RTTs bound: the opening is the promise kept first, so 64 stays.
pub const DEFAULT_CONNECTIONS: usize = 64;

/// Window a connection starts with under `--window auto`, in records, at
/// the first look.
pub const AUTO_WINDOW_START: u64 = 64;
/// ... and in bytes from then on until the first answer, once what is in
/// flight tells the records' size: 64 records of 1 KB, 1 of 64 KB, ~450 of
/// 100 B (encoded). Why: see `window::Limits::start_bytes`. Measured on the
/// 156 ms / 100 MB/s lab with 64 KB records (`lab run`, 10 s, two runs
/// each, per-second MB/s): a start of 64 records per connection read `0 53
/// 129 93…` and `0 70 51 155…` (772–2,048 records in flight, 3–9 BDP),
/// one record per connection `0 67 106 95…` and `0 68 100 97…`.
pub const AUTO_WINDOW_START_BYTES: u64 = 64 << 10;
/// Largest window auto sizing grows to, per connection, in records. Why
/// this high: one connection of 100-byte records at 156 ms and 100 MB/s
/// needs ~156K in flight (65,536, the cap before, held it at 58% of the
/// line); memory is bounded by [`AUTO_WINDOW_MAX_INFLIGHT_BYTES`], not by
/// this. The receiver's `max_in_flight` (65,536) counts requests, and a
/// full window's records travel many to a request.
pub const AUTO_WINDOW_MAX: u64 = 1 << 20;
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

/// Resolves `host:port` (or `redis://host:port`, `rediss://host:port`).
pub async fn resolve(to: &str) -> Result<SocketAddr, ShipError> {
    let mut addrs = tokio::net::lookup_host(redis::host_port(to))
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
    report: impl FnMut(&ShipSnapshot),
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Result<ShipSummary, ShipError> {
    if let Some(target) = redis::cluster::ClusterTarget::parse(&cfg.to) {
        return cluster::run(cfg, target, source, report, stop, cancel).await;
    }
    let addr = resolve(&cfg.to).await?;
    let dead_letter = open_dead_letter(&cfg)?;
    let started = Instant::now();
    let window = initial_window(&cfg);
    let conn_cfg = Arc::new(ConnConfig::new(
        &cfg,
        addr,
        source.wants_acks(),
        dead_letter,
    ));
    // A certificate or token the receiver refuses fails every retry the
    // same way: report it now rather than reconnect forever.
    conn::preflight(&conn_cfg).await?;

    // A small hand-over queue: the windows, not this queue, hold the
    // records in flight.
    let (tx, rx) = handover::bounded::<SourceRecord>(HANDOVER_QUEUE_RECORDS);
    let (ack_tx, ack_rx) = mpsc::channel::<Vec<u64>>(ACK_QUEUE_ANSWERS);
    let shared = Shared::default();
    let conn_cancel = cancel.child_token();
    let dispatcher = spawn_dispatcher(&cfg, started, source, tx, ack_rx, &shared, &stop, &cancel);

    let states: Vec<Arc<ConnState>> = (0..cfg.connections.max(1))
        .map(|id| Arc::new(ConnState::new(id, window)))
        .collect();
    let tasks = spawn_connections(&states, &conn_cfg, &rx, ack_tx, &conn_cancel);

    let tokens = Tokens {
        stop: &stop,
        conns: &conn_cancel,
    };
    Pool::new(&cfg, &states, &rx, &shared, tokens)
        .run_to_end(tasks, started, window, report, dispatcher, async {})
        .await
}

/// How a pool's run ended. Bounded by --duration and never connected with
/// records waiting: a failure (a run without a bound keeps retrying, as a
/// source node must through a destination's outage); else the summary.
fn outcome(
    cfg: &ShipConfig,
    states: &[Arc<ConnState>],
    queue: &handover::Receiver<SourceRecord>,
    started: Instant,
    last: ShipSnapshot,
) -> Result<ShipSummary, ShipError> {
    let never_connected = !states
        .iter()
        .any(|s| s.ever_connected.load(Ordering::Relaxed));
    if cfg.duration.is_some() && never_connected && !queue.is_empty() {
        return Err(ShipError::Unreachable {
            addr: cfg.to.clone(),
            after: started.elapsed(),
        });
    }
    Ok(summary(states, started, last))
}

/// The dead-letter file of `cfg`, opened.
fn open_dead_letter(cfg: &ShipConfig) -> Result<Option<Arc<dead_letter::DeadLetter>>, ShipError> {
    match &cfg.dead_letter {
        Some(path) => Ok(Some(Arc::new(
            dead_letter::DeadLetter::open(path).map_err(ShipError::Io)?,
        ))),
        None => Ok(None),
    }
}

/// The window every connection starts with.
fn initial_window(cfg: &ShipConfig) -> u64 {
    match cfg.window {
        WindowSetting::Fixed(w) => w,
        WindowSetting::Auto => AUTO_WINDOW_START.min(cfg.auto_window_max),
    }
}

/// Starts the dispatcher: the source into `tx`, acknowledgements back.
#[allow(clippy::too_many_arguments)]
fn spawn_dispatcher<S: Source>(
    cfg: &ShipConfig,
    started: Instant,
    source: S,
    tx: handover::Sender<SourceRecord>,
    ack_rx: mpsc::Receiver<Vec<u64>>,
    shared: &Shared,
    stop: &CancellationToken,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(dispatch(
        source,
        tx,
        ack_rx,
        shared.clone(),
        Pacing {
            max_throughput: cfg.max_throughput,
            deadline: cfg.duration.map(|d| started + d),
        },
        stop.clone(),
        cancel.clone(),
    ))
}

/// The connections are done and have dropped their ack senders: the
/// dispatcher hands the last acknowledgements to the source (a log's
/// checkpoint must see them) and ends. Bounded, in case it is stuck.
async fn finish_dispatcher(mut dispatcher: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(DISPATCHER_FINISH_TIMEOUT, &mut dispatcher)
        .await
        .is_err()
    {
        dispatcher.abort();
    }
}

/// One task per connection, each taking records from `queue`.
fn spawn_connections(
    states: &[Arc<ConnState>],
    conn_cfg: &Arc<ConnConfig>,
    queue: &handover::Receiver<SourceRecord>,
    acked: mpsc::Sender<Vec<u64>>,
    cancel: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for state in states {
        tasks.spawn(conn::run(
            state.clone(),
            conn_cfg.clone(),
            queue.clone(),
            acked.clone(),
            cancel.clone(),
        ));
    }
    tasks
}

/// How the run ended: every connection's counters and the last snapshot.
fn summary(states: &[Arc<ConnState>], started: Instant, last: ShipSnapshot) -> ShipSummary {
    let mut counters = Counters::default();
    for s in states {
        counters.add(&s.counters());
    }
    ShipSummary {
        elapsed: started.elapsed(),
        counters,
        unanswered: last.inflight,
        last,
    }
}

/// Records the hand-over queue between the dispatcher and the connections holds.
const HANDOVER_QUEUE_RECORDS: usize = 1024;
/// Answers' delivered positions queued for the dispatcher to hand the source.
const ACK_QUEUE_ANSWERS: usize = 1024;
/// How long the dispatcher may take to hand the last acknowledgements over.
const DISPATCHER_FINISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The running pool, as its supervisor sees it.
struct Pool<'a> {
    cfg: &'a ShipConfig,
    states: &'a [Arc<ConnState>],
    queue: &'a handover::Receiver<SourceRecord>,
    shared: &'a Shared,
    tokens: Tokens<'a>,
}

/// The two ways a pool's run is ended: intake stopped (the records in
/// flight still get `drain_timeout`), and the connections cancelled.
#[derive(Clone, Copy)]
struct Tokens<'a> {
    stop: &'a CancellationToken,
    conns: &'a CancellationToken,
}

impl<'a> Pool<'a> {
    fn new(
        cfg: &'a ShipConfig,
        states: &'a [Arc<ConnState>],
        queue: &'a handover::Receiver<SourceRecord>,
        shared: &'a Shared,
        tokens: Tokens<'a>,
    ) -> Self {
        Pool {
            cfg,
            states,
            queue,
            shared,
            tokens,
        }
    }

    /// The pool's run from its connections' start to its outcome:
    /// supervised until every connection is done, then `upstream` (what
    /// stands between the dispatcher and the connections, such as the
    /// cluster's router) stopped, the dispatcher finished, the last
    /// snapshot taken and the ending judged. One ending for a single pool
    /// and for a cluster's pools.
    async fn run_to_end(
        &self,
        mut tasks: JoinSet<()>,
        started: Instant,
        window: u64,
        report: impl FnMut(&ShipSnapshot),
        dispatcher: tokio::task::JoinHandle<()>,
        upstream: impl std::future::Future<Output = ()>,
    ) -> Result<ShipSummary, ShipError> {
        let mut snapper = Snapshotter::new(self.cfg, self.states, started);
        self.supervise(&mut tasks, &mut snapper, window, report)
            .await;
        upstream.await;
        finish_dispatcher(dispatcher).await;
        let last = snapper.take(self.states, self.shared.backlog.load(Ordering::Relaxed));
        outcome(self.cfg, self.states, self.queue, started, last)
    }

    /// Until every connection is done: reports a snapshot every interval,
    /// runs the auto window, and once intake is over gives the records in
    /// flight `drain_timeout` to be answered. With `--duration`, intake is
    /// over when it has passed even if records are still waiting for a
    /// connection (the destination unreachable): the run is bounded from
    /// its start by `duration + drain_timeout`.
    async fn supervise(
        &self,
        tasks: &mut JoinSet<()>,
        snapper: &mut Snapshotter,
        window: u64,
        mut report: impl FnMut(&ShipSnapshot),
    ) {
        let cfg = self.cfg;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut intake_ended: Option<tokio::time::Instant> = None;
        let mut drain_timed_out = false;
        let intake_until = cfg.duration.map(|d| tokio::time::Instant::now() + d);
        let mut auto = (cfg.window == WindowSetting::Auto).then(|| {
            window::PoolWindow::new(
                self.states.len(),
                window,
                AUTO_WINDOW_START_BYTES,
                cfg.auto_window_max,
                cfg.max_inflight_bytes,
                window::Batch {
                    records: cfg.batch_max_records.max(1) as u64,
                    bytes: conn::BATCH_MAX_BYTES as u64,
                },
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
                    // The drain is timed from --duration's end when that
                    // is what ended intake (noticed only at a wake-up).
                    let now = tokio::time::Instant::now();
                    let since = [intake_until.filter(|t| now >= *t), intake_ended]
                        .into_iter()
                        .flatten()
                        .min();
                    let mut snap = self.snapshot(snapper);
                    snap.drain_s = since.map(|t| now.duration_since(t).as_secs_f64());
                    report(&snap);
                }
                _ = control.tick(), if auto.is_some() => {
                    if let Some(auto) = auto.as_mut() {
                        auto.tick(self.states);
                    }
                }
                _ = async { match drain_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !drain_timed_out => {
                    // Once: the connections take a moment to see the cancel,
                    // and a deadline in the past would fire on every pass.
                    drain_timed_out = true;
                    tracing::warn!("drain timed out after {:?}; giving up on records still in flight", cfg.drain_timeout);
                    self.tokens.conns.cancel();
                }
            }
            let intake_over = (self.queue.is_closed() || self.tokens.stop.is_cancelled())
                && self.queue.is_empty()
                || intake_until.is_some_and(|t| tokio::time::Instant::now() >= t);
            if drain_deadline.is_none() && intake_over {
                intake_ended = Some(tokio::time::Instant::now());
                drain_deadline = Some(tokio::time::Instant::now() + cfg.drain_timeout);
            }
            let duration_over = intake_until.is_some_and(|t| tokio::time::Instant::now() >= t);
            if duration_over && !self.ever_connected() && !self.tokens.conns.is_cancelled() {
                // `--duration` is over and no connection was ever up:
                // nothing was sent, so nothing waits for an answer, and
                // `--duration 3s` towards a destination that never
                // answered ends at 3 s, not 3 s + the drain timeout.
                // (Before the duration, records handed to connections
                // still connecting are in flight: a log read to its end
                // is not a reason to stop.)
                self.tokens.conns.cancel();
            }
        }
    }

    /// Whether any connection of the pool has ever been up.
    fn ever_connected(&self) -> bool {
        self.states
            .iter()
            .any(|s| s.ever_connected.load(Ordering::Relaxed))
    }

    /// The interval's snapshot, with the source's backlog and lag.
    fn snapshot(&self, snapper: &mut Snapshotter) -> ShipSnapshot {
        let outstanding = self.shared.backlog.load(Ordering::Relaxed) + self.queue.len() as u64;
        let mut snap = snapper.take(self.states, outstanding);
        if let oldest @ 1.. = self.shared.oldest_ms.load(Ordering::Relaxed) {
            snap.lag_ms = snap.lag_ms.max(snap.unix_ms.saturating_sub(oldest));
        }
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
