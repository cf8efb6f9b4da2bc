//! One pipelined connection: a writer that keeps up to `window` records in
//! flight without waiting for answers, a reader that matches answers to
//! requests, and a supervisor that reconnects and resends.
//!
//! Why this shape (after tokio-postgres' `Connection`): the writer and the
//! reader run concurrently on the two halves of the socket, so sending never
//! waits for an answer: that is the whole point on a 156 ms link, where a
//! stop-and-wait connection manages 6 requests per second. The window is a
//! semaphore of record permits: the writer takes one per record before it
//! takes the record from the shared queue, and the reader gives them back as
//! answers arrive. A full window therefore stops the writer, which stops
//! pulling from the queue, which stops the source: memory stays bounded by
//! `window × record size` per connection whatever the backlog.
//!
//! Requests in flight are kept with their records in a table keyed by
//! request id. In ordered mode the answer must be for the oldest one; in
//! unordered mode any one. When the connection is lost, everything in the
//! table is moved to the resend queue, sent first on the next connection
//! (counted as `retry_conn_reset`); last-writer-wins at the destination
//! makes a duplicate harmless.
//!
//! Why the writer encodes requests itself: on loopback the shipper, not the
//! link, was the limit, and per record it cloned key and value into a
//! `Frame` (two reference counts bumped and dropped, on a value pool both
//! cores share) and grew a fresh `Vec` per batch. Now a request is encoded
//! straight from the records it keeps for a resend, and requests gather in
//! one buffer up to [`WRITE_COALESCE_BYTES`] while more records are ready,
//! so one `write` carries several of them. That buffer is a
//! [`crate::wire::GatherBuf`]: a value of half a kilobyte or more is not
//! copied into it but handed to `writev` where the source holds it (at
//! 1 KB that copy was 14% of the shipper's CPU). An answer wakes the writer only
//! through the permits it returns (and `wait_drained` once the table
//! empties), not with a notification per answer.
//!
//! Layout: [`connect`] opens a session (socket, TLS, HELLO), [`writer`]
//! gathers records into requests under the window, [`request`] encodes a
//! request, [`reader`] decodes answers and settles them. The encoding and
//! the decoding are the only parts that know the destination's protocol:
//! a [`RequestCodec`] per protocol (the native one, `ship::redis`'s Redis
//! commands), and a read loop per protocol ([`reader`], [`redis_session`]) that
//! hands each answer's result codes to the same `settle`. Everything else
//! (pool, window, retries, dead letter, checkpoint, cookies) is shared.
mod connect;
mod reader;
mod redis_session;
mod request;
mod warnings;
mod writer;

pub(crate) use request::RequestCodec;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, Notify, Semaphore},
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

use super::{handover, source::SourceRecord, ShipConfig, ShipError};
use crate::{
    metrics::{new_latency_histogram, ConnSnapshot, Counters, TcpSample},
    wire::{Frame, ResultCode, WireCodec, WireError},
};
use connect::connect;
use reader::read_loop;
use writer::write_loop;

/// How one connection behaves; shared by the pool: the run's
/// [`ShipConfig`] and what the pool derived from it once.
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    /// The run's settings (`batch_max_records` already at least 1).
    pub ship: ShipConfig,
    /// The destination, resolved.
    pub addr: SocketAddr,
    pub batch_max_bytes: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Whether the source wants to hear about delivered positions.
    pub report_acks: bool,
    /// Where permanently refused records are kept.
    pub dead_letter: Option<Arc<super::dead_letter::DeadLetter>>,
    /// `--to redis://…`: the session speaks Redis instead of the native
    /// protocol.
    pub redis: Option<super::redis::RedisTarget>,
    /// What the connections say about their failures, gathered (one line
    /// per distinct problem).
    pub warnings: Arc<warnings::Warnings>,
    /// `--to redis-cluster://…`: this pool is one primary's, and hands
    /// records that belong elsewhere back to the router.
    pub cluster: Option<ClusterLink>,
}

/// How a pool of one Redis Cluster primary talks to the router
/// (`ship::cluster`).
#[derive(Clone, Debug)]
pub(crate) struct ClusterLink {
    /// Records the pool cannot deliver where it is (`MOVED`, `ASK`, a
    /// node that is gone) go back here to be routed again.
    pub reroute: mpsc::Sender<super::redis::cluster::Reroute>,
    /// Records routed and not yet settled for good, all pools together:
    /// the router closes the pools' queues only once it is 0.
    pub unsettled: Arc<AtomicU64>,
}

/// Most bytes of records packed into one BATCH request.
pub(crate) const BATCH_MAX_BYTES: usize = 256 * 1024;
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TLS and HELLO handshakes may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause before a reconnect (and after a retryable answer).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause the backoff doubles to.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl ConnConfig {
    /// The connections' settings for a run of `ship` to `addr`.
    pub fn new(
        ship: &ShipConfig,
        addr: SocketAddr,
        report_acks: bool,
        dead_letter: Option<Arc<super::dead_letter::DeadLetter>>,
    ) -> Self {
        let mut ship = ship.clone();
        ship.batch_max_records = ship.batch_max_records.max(1);
        let redis = super::redis::RedisTarget::parse(&ship.to, ship.redis_lww);
        Self {
            ship,
            addr,
            batch_max_bytes: BATCH_MAX_BYTES,
            connect_timeout: CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            warnings: Arc::default(),
            report_acks,
            dead_letter,
            redis,
            cluster: None,
        }
    }
}

/// The byte stream of a session: plain TCP, or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;
type Rd = tokio::io::ReadHalf<BoxIo>;
type Wr = tokio::io::WriteHalf<BoxIo>;

/// A request in flight: its records (kept for a resend) and when it left.
#[derive(Debug)]
struct Pending {
    records: Vec<SourceRecord>,
    bytes: u64,
    sent_at: Instant,
}

/// State one connection shares with the pool's snapshotter.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub id: usize,
    /// The node this connection ships to, where there are several.
    pub node: Option<Arc<str>>,
    /// Record permits: available = window − in flight.
    permits: Semaphore,
    /// The window now: permits handed out + available − `shrink_debt`.
    window: AtomicU64,
    /// Permits still to withdraw after a shrink, taken from answers as they
    /// return them (the writer would otherwise take them back first).
    shrink_debt: AtomicU64,
    pub cookie: AtomicU64,
    /// The current socket's fd (-1 while disconnected), for `TCP_INFO`
    /// reads by the snapshotter; always checked against `cookie`.
    fd: std::sync::atomic::AtomicI32,
    pub connected: AtomicBool,
    /// A session was opened at least once in this run.
    pub ever_connected: AtomicBool,
    window_limited: AtomicBool,
    /// TCP's own min RTT of the current socket, µs (0: not read yet), as
    /// the writer last read it: the path's round trip without any queue of
    /// the shipper's making (the auto window's floor asks it).
    tcp_min_rtt_us: std::sync::atomic::AtomicU32,
    /// The writer's last look at its socket with the window full found at
    /// least a batch TCP had not sent yet, beyond the write it had just
    /// made (the auto window asks it: `Sample::tcp_held`).
    tcp_held: AtomicBool,
    /// TCP's smoothed RTT (µs, 0: not read yet) and its retransmitted
    /// segments so far on the current socket, both from the same look: the
    /// auto window tells a lossy path's head-of-line waits from a queue by
    /// them (`Sample::tcp_srtt`, `Sample::tcp_retrans`).
    tcp_srtt_us: std::sync::atomic::AtomicU32,
    tcp_retrans: std::sync::atomic::AtomicU32,
    table: Mutex<BTreeMap<u64, Pending>>,
    /// Answers taken out of `table` whose records are not yet counted or
    /// queued for resending: raised under the table's lock, so a writer that
    /// finds the table empty and this zero knows nothing is on its way back
    /// to the resend queue.
    settling: AtomicU64,
    resend: Mutex<VecDeque<SourceRecord>>,
    /// Wakes the writer: a resend was queued, or the table shrank.
    wake_writer: Notify,
    inflight: AtomicU64,
    inflight_bytes: AtomicU64,
    counters: Mutex<Counters>,
    latency: Mutex<Histogram<u64>>,
    /// Retryable answers back off: the writer sends nothing before this.
    retry_pause: Mutex<RetryPause>,
    /// Redis: this session follows one ended for a missing function (so a
    /// second miss is the record's, not the connection's).
    redis_reloaded: AtomicBool,
}

/// The writer's pause after retryable answers (Busy, Timeout, ...):
/// doubling from `backoff_min` to `backoff_max`, reset by a success.
#[derive(Debug, Default)]
struct RetryPause {
    until: Option<Instant>,
    backoff: Duration,
}

/// Locks `m`, recovering the data if a panicking holder poisoned it: every
/// critical section here leaves the data consistent at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConnState {
    pub fn new(id: usize, window: u64) -> Self {
        Self {
            id,
            node: None,
            permits: Semaphore::new(window as usize),
            window: AtomicU64::new(window),
            shrink_debt: AtomicU64::new(0),
            cookie: AtomicU64::new(0),
            fd: std::sync::atomic::AtomicI32::new(-1),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            window_limited: AtomicBool::new(false),
            tcp_min_rtt_us: std::sync::atomic::AtomicU32::new(0),
            tcp_held: AtomicBool::new(false),
            tcp_srtt_us: std::sync::atomic::AtomicU32::new(0),
            tcp_retrans: std::sync::atomic::AtomicU32::new(0),
            table: Mutex::new(BTreeMap::new()),
            settling: AtomicU64::new(0),
            resend: Mutex::new(VecDeque::new()),
            wake_writer: Notify::new(),
            inflight: AtomicU64::new(0),
            inflight_bytes: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            latency: Mutex::new(new_latency_histogram()),
            retry_pause: Mutex::new(RetryPause::default()),
            redis_reloaded: AtomicBool::new(false),
        }
    }

    /// The same state, shipping to `node` (named in its snapshots).
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    pub fn window(&self) -> u64 {
        self.window.load(Ordering::Relaxed)
    }

    /// TCP's min RTT as last read on this connection (`None`: not yet).
    pub fn tcp_min_rtt(&self) -> Option<Duration> {
        match self.tcp_min_rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }

    /// Whether TCP held records back at the writer's last look (see the
    /// field).
    pub fn tcp_held(&self) -> bool {
        self.tcp_held.load(Ordering::Relaxed)
    }

    /// TCP's smoothed RTT at the writer's last look (`None`: not read yet).
    pub fn tcp_srtt(&self) -> Option<Duration> {
        match self.tcp_srtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }

    /// Segments TCP had retransmitted on the current socket at the writer's
    /// last look.
    pub fn tcp_retrans(&self) -> u64 {
        u64::from(self.tcp_retrans.load(Ordering::Relaxed))
    }

    /// Notes what the writer's look at the current socket read: TCP's min
    /// and smoothed RTT and its retransmissions.
    pub fn note_tcp_look(&self, info: &crate::net::TcpInfo) {
        self.tcp_min_rtt_us
            .store(info.min_rtt_us, Ordering::Relaxed);
        self.tcp_srtt_us.store(info.rtt_us, Ordering::Relaxed);
        self.tcp_retrans
            .store(info.total_retrans, Ordering::Relaxed);
    }

    /// Grows the window to `to` (never shrinks): first cancels what a
    /// shrink still owed, then adds permits.
    pub fn grow_window(&self, to: u64) {
        let now = self.window.load(Ordering::Relaxed);
        if to > now {
            let cancelled = take_up_to(&self.shrink_debt, to - now);
            self.window.store(to, Ordering::Relaxed);
            self.permits.add_permits((to - now - cancelled) as usize);
        }
    }

    /// Shrinks the window to `to`: withdraws the permits that are free now,
    /// and the rest from answers as they return them.
    pub fn shrink_window(&self, to: u64) {
        let now = self.window.load(Ordering::Relaxed);
        if to < now {
            let taken = self.permits.forget_permits((now - to) as usize) as u64;
            self.shrink_debt
                .fetch_add(now - to - taken, Ordering::Relaxed);
            self.window.store(to, Ordering::Relaxed);
        }
    }

    /// Gives back the permits of `n` answered (or requeued) records, less
    /// what a shrink still owes.
    fn return_permits(&self, n: u64) {
        let owed = take_up_to(&self.shrink_debt, n);
        self.permits.add_permits((n - owed) as usize);
    }

    /// Sets the window to `to` (the auto window calls this every tick).
    pub fn set_window(&self, to: u64) {
        self.grow_window(to);
        self.shrink_window(to);
    }

    /// Records in flight now.
    pub fn inflight_records(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Encoded bytes of the requests in flight.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes.load(Ordering::Relaxed)
    }

    /// The smallest answer latency since the snapshotter last took the
    /// latencies (`None`: no answer since): a peek, it takes nothing.
    pub fn min_latency(&self) -> Option<Duration> {
        let h = lock(&self.latency);
        (!h.is_empty()).then(|| Duration::from_micros(h.min_nz()))
    }

    pub fn counters(&self) -> Counters {
        *lock(&self.counters)
    }

    /// Sent time of the oldest request in flight.
    pub fn oldest_sent(&self) -> Option<Instant> {
        // Request ids are handed out in send order: the first entry is the
        // oldest, no scan (the writer and reader contend for this lock).
        lock(&self.table).first_key_value().map(|(_, p)| p.sent_at)
    }

    /// Takes the latency samples gathered since the last call.
    pub fn take_latency(&self, into: &mut Histogram<u64>) {
        let mut h = lock(&self.latency);
        let _ = into.add(&*h);
        h.reset();
    }

    /// This connection's part of a snapshot (rates are filled in by the pool).
    pub fn snapshot(&self) -> ConnSnapshot {
        let cookie = self.cookie.load(Ordering::Relaxed);
        let fd = self.fd.load(Ordering::Relaxed);
        ConnSnapshot {
            id: self.id,
            node: self.node.as_deref().map(str::to_owned),
            cookie,
            tcp: crate::net::tcp_info_if_cookie(fd, cookie).map(|i| TcpSample::from(&i)),
            connected: self.connected.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Relaxed),
            inflight_bytes: self.inflight_bytes.load(Ordering::Relaxed),
            window: self.window(),
            window_limited: self.window_limited.swap(false, Ordering::Relaxed),
            counters: self.counters(),
            ..ConnSnapshot::default()
        }
    }

    /// A record this connection's node took on another path (a Redis
    /// Cluster's `ASK`): counted as delivered here.
    pub fn count_delivered(&self, lost_conflict: bool, bytes: u64) {
        let mut c = lock(&self.counters);
        if lost_conflict {
            c.lost_conflict += 1;
        } else {
            c.success += 1;
        }
        c.acked_bytes += bytes;
    }

    fn push_resend(&self, records: impl IntoIterator<Item = SourceRecord>) {
        lock(&self.resend).extend(records);
        self.wake_writer.notify_one();
    }

    /// Everything sent is settled: nothing in the table, no answer being
    /// settled (whose records may yet come back as resends).
    fn all_settled(&self) -> bool {
        let table = lock(&self.table);
        table.is_empty() && self.settling.load(Ordering::Acquire) == 0
    }

    fn has_resend(&self) -> bool {
        !lock(&self.resend).is_empty()
    }

    /// After a lost connection: every request in flight goes back to the
    /// front of the resend queue, oldest first, and its permits are returned.
    fn requeue_inflight(&self) -> u64 {
        let drained: Vec<Pending> = std::mem::take(&mut *lock(&self.table))
            .into_values()
            .collect();
        let mut records: Vec<SourceRecord> = drained.into_iter().flat_map(|p| p.records).collect();
        records.sort_by_key(|r| r.seq);
        let n = records.len() as u64;
        {
            let mut resend = lock(&self.resend);
            for r in records.into_iter().rev() {
                resend.push_front(r);
            }
        }
        self.return_permits(n);
        self.inflight.store(0, Ordering::Relaxed);
        self.inflight_bytes.store(0, Ordering::Relaxed);
        lock(&self.counters).retry_conn_reset += n;
        n
    }
}

/// Takes up to `n` from `counter` (never below zero); returns what it took.
fn take_up_to(counter: &AtomicU64, n: u64) -> u64 {
    let before = counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
            Some(d.saturating_sub(n))
        })
        .unwrap_or(0);
    before.min(n)
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// Source exhausted and every record answered.
    Drained,
    /// Asked to stop.
    Cancelled,
    /// Connection lost or broken; reconnect and resend.
    Lost(ShipError),
}

/// Runs one connection until the source is drained and every record is
/// answered, or until `cancel`. Reconnects with exponential backoff. A
/// Redis Cluster primary's connection connects only once it has a record
/// (a replica's pool waits for a failover to make it a primary), and a
/// lost node's records go back to the router ([`strand`]).
pub(crate) async fn run(
    state: Arc<ConnState>,
    cfg: Arc<ConnConfig>,
    queue: handover::Receiver<SourceRecord>,
    acked: mpsc::Sender<Vec<u64>>,
    cancel: CancellationToken,
) {
    let mut backoff = cfg.backoff_min;
    loop {
        if cfg.cluster.is_some()
            && !state.has_resend()
            && !wait_for_work(&state, &queue, &cancel).await
        {
            return;
        }
        let connected = tokio::select! {
            c = connect(&cfg, &state) => c,
            _ = cancel.cancelled() => return,
        };
        let (stream, fd, codec_max) = match connected {
            Ok(ok) => ok,
            Err(e) => {
                let problem = format!("connect to {} failed: {e}", cfg.addr);
                if let Some(line) = cfg.warnings.note(state.id, &problem, Instant::now()) {
                    tracing::warn!("{line}; retrying");
                }
                strand(&state, &cfg, &queue).await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        backoff = cfg.backoff_min;
        state.fd.store(fd, Ordering::Relaxed);
        state.connected.store(true, Ordering::Relaxed);
        state.ever_connected.store(true, Ordering::Relaxed);
        let end = session(stream, codec_max, &state, &cfg, &queue, &acked, &cancel).await;
        state.connected.store(false, Ordering::Relaxed);
        state.fd.store(-1, Ordering::Relaxed);
        state.cookie.store(0, Ordering::Relaxed);
        match end {
            SessionEnd::Drained | SessionEnd::Cancelled => return,
            SessionEnd::Lost(e) => {
                let n = state.requeue_inflight();
                tracing::warn!(
                    conn = state.id,
                    "connection to {} lost: {e}; {n} records in flight will be re-sent",
                    cfg.addr
                );
                strand(&state, &cfg, &queue).await;
            }
        }
    }
}

/// A cluster pool's connection without a session waits for a record
/// before it connects (kept as its first resend); `false`: the queue is
/// closed (nothing more will come) or the run is cancelled.
async fn wait_for_work(
    state: &ConnState,
    queue: &handover::Receiver<SourceRecord>,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        r = queue.recv() => match r {
            Ok(r) => {
                lock(&state.counters).shipped += 1;
                state.push_resend([r]);
                true
            }
            Err(_) => false,
        },
        _ = cancel.cancelled() => false,
    }
}

/// Towards a Redis Cluster, a connection that lost its node (or cannot
/// reach it) gives its resends and its pool's queued records back to the
/// router, which asks the cluster where their slots went (a failover
/// promotes a replica at another address) and routes them again: waiting
/// here for a dead primary would hold them for good.
async fn strand(state: &ConnState, cfg: &ConnConfig, queue: &handover::Receiver<SourceRecord>) {
    let Some(cluster) = &cfg.cluster else {
        return;
    };
    let mut records: Vec<SourceRecord> = lock(&state.resend).drain(..).collect();
    while let Ok(r) = queue.try_recv() {
        records.push(r);
    }
    if !records.is_empty() {
        let _ = cluster
            .reroute
            .send(super::redis::cluster::Reroute::Stranded(records))
            .await;
    }
}

/// Opens one session and closes it again, to find out early what every
/// connection would run into: a certificate the receiver does not trust
/// (or that we do not), rejected credentials, a receiver that wants TLS.
/// Those fail the same way on every retry, so they end the run with the
/// reason; anything else (receiver not up yet, timeouts) is left to the
/// connections' own reconnect loop.
pub(crate) async fn preflight(cfg: &ConnConfig) -> Result<(), ShipError> {
    let state = ConnState::new(0, 1);
    match connect(cfg, &state).await {
        Ok(_) if cfg.redis.is_some() => Ok(()),
        Ok((stream, _, _)) => {
            let mut framed = FramedWrite::new(stream, WireCodec::new());
            let _ = tokio::time::timeout(
                cfg.handshake_timeout,
                framed.send(Frame::goodbye(ResultCode::Ok, "preflight")),
            )
            .await;
            Ok(())
        }
        Err(e @ ShipError::Rejected(_)) => Err(e),
        Err(_) => Ok(()),
    }
}

async fn session(
    stream: BoxIo,
    max_frame: usize,
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &handover::Receiver<SourceRecord>,
    acked: &mpsc::Sender<Vec<u64>>,
    cancel: &CancellationToken,
) -> SessionEnd {
    let (rd, wr) = tokio::io::split(stream);
    if let Some(target) = &cfg.redis {
        let mut reader = FramedRead::new(rd, super::redis::codec::Replies);
        let codec =
            super::redis::codec::RedisCodec::new(target.lww).with_many(cfg.cluster.is_none());
        let mut writer = writer::SessionWriter::new(wr, codec);
        let write = write_loop(&mut writer, state, cfg, queue, cancel);
        let read = redis_session::read_loop(&mut reader, state, cfg, acked, codec);
        return session_end(write, read).await;
    }
    let mut reader = FramedRead::new(rd, WireCodec::new().with_max_frame(max_frame));
    let codec = WireCodec::new().with_max_frame(max_frame);
    let codec = if cfg.ship.compress {
        codec
    } else {
        codec.without_compression()
    };
    let mut writer = writer::SessionWriter::new(wr, codec);
    let write = write_loop(&mut writer, state, cfg, queue, cancel);
    let read = read_loop(&mut reader, state, cfg, acked);
    session_end(write, read).await
}

/// Runs a session's two halves until one ends: the writer when drained or
/// cancelled, either on a lost connection.
async fn session_end(
    write: impl std::future::Future<Output = Result<bool, ShipError>>,
    read: impl std::future::Future<Output = ShipError>,
) -> SessionEnd {
    tokio::pin!(write, read);
    tokio::select! {
        w = &mut write => match w {
            Ok(true) => SessionEnd::Drained,
            Ok(false) => SessionEnd::Cancelled,
            Err(e) => SessionEnd::Lost(e),
        },
        r = &mut read => SessionEnd::Lost(r),
    }
}

impl From<WireError> for ShipError {
    fn from(e: WireError) -> Self {
        ShipError::Wire(e)
    }
}
