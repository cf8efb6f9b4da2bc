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
//! so one `write` carries several of them. An answer wakes the writer only
//! through the permits it returns (and `wait_drained` once the table
//! empties), not with a notification per answer.
use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, Notify, Semaphore},
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

use super::{source::SourceRecord, ShipError};
use crate::{
    metrics::{new_latency_histogram, ConnSnapshot, Counters, TcpSample},
    net::{request_buffer, socket_cookie, Buffer},
    wire::{Frame, Hello, Message, OrderingMode, ResultClass, ResultCode, WireCodec, WireError},
};

/// How one connection behaves; shared by the pool.
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    pub addr: SocketAddr,
    pub mode: OrderingMode,
    pub source_id: u64,
    pub sndbuf: Option<usize>,
    pub congestion: Option<String>,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Whether the source wants to hear about delivered positions.
    pub report_acks: bool,
    /// zstd-compress BATCH payloads above the codec's threshold.
    pub compress: bool,
    /// Where permanently refused records are kept.
    pub dead_letter: Option<Arc<super::dead_letter::DeadLetter>>,
    /// TLS towards the receiver (`None`: plain TCP).
    pub tls: Option<crate::tls::ClientTls>,
    /// The destination as given (`host:port`): the TLS server name, and
    /// the destination a dead letter names.
    pub to: String,
    /// HELLO credentials (the pre-shared token); empty for none.
    pub credentials: bytes::Bytes,
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
    window_limited: AtomicBool,
    table: Mutex<BTreeMap<u64, Pending>>,
    resend: Mutex<VecDeque<SourceRecord>>,
    /// Wakes the writer: a resend was queued, or the table shrank.
    wake_writer: Notify,
    inflight: AtomicU64,
    inflight_bytes: AtomicU64,
    counters: Mutex<Counters>,
    latency: Mutex<Histogram<u64>>,
    /// Retryable answers back off: the writer sends nothing before this.
    retry_pause: Mutex<RetryPause>,
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
            permits: Semaphore::new(window as usize),
            window: AtomicU64::new(window),
            shrink_debt: AtomicU64::new(0),
            cookie: AtomicU64::new(0),
            fd: std::sync::atomic::AtomicI32::new(-1),
            connected: AtomicBool::new(false),
            window_limited: AtomicBool::new(false),
            table: Mutex::new(BTreeMap::new()),
            resend: Mutex::new(VecDeque::new()),
            wake_writer: Notify::new(),
            inflight: AtomicU64::new(0),
            inflight_bytes: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            latency: Mutex::new(new_latency_histogram()),
            retry_pause: Mutex::new(RetryPause::default()),
        }
    }

    pub fn window(&self) -> u64 {
        self.window.load(Ordering::Relaxed)
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

    fn push_resend(&self, records: impl IntoIterator<Item = SourceRecord>) {
        lock(&self.resend).extend(records);
        self.wake_writer.notify_one();
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
/// answered, or until `cancel`. Reconnects with exponential backoff.
pub(crate) async fn run(
    state: Arc<ConnState>,
    cfg: Arc<ConnConfig>,
    queue: async_channel::Receiver<SourceRecord>,
    acked: mpsc::Sender<Vec<u64>>,
    cancel: CancellationToken,
) {
    let mut backoff = cfg.backoff_min;
    loop {
        let connected = tokio::select! {
            c = connect(&cfg, &state) => c,
            _ = cancel.cancelled() => return,
        };
        let (stream, fd, codec_max) = match connected {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(
                    conn = state.id,
                    "connect to {} failed: {e}; retrying in {backoff:?}",
                    cfg.addr
                );
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
            }
        }
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

/// Connects, sizes the send buffer, sets up TLS if configured, says HELLO;
/// returns the stream, its socket's fd (for `TCP_INFO`) and the frame limit
/// agreed with the server.
async fn connect(
    cfg: &ConnConfig,
    state: &ConnState,
) -> Result<(BoxIo, std::os::fd::RawFd, usize), ShipError> {
    let socket = Socket::new(
        Domain::for_address(cfg.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(ShipError::Io)?;
    if let Some(bytes) = cfg.sndbuf {
        let report = request_buffer(&socket, Buffer::Send, bytes).map_err(ShipError::Io)?;
        if let Some(w) = report.warning {
            if state.id == 0 {
                tracing::warn!("{w}");
            }
        }
    }
    if let Some(cc) = &cfg.congestion {
        socket.set_tcp_congestion(cc.as_bytes()).map_err(|e| {
            ShipError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "congestion control `{cc}`: {e} (available: net.ipv4.tcp_available_congestion_control; \
                     unprivileged processes only: net.ipv4.tcp_allowed_congestion_control)"
                ),
            ))
        })?;
    }
    socket.set_tcp_nodelay(true).map_err(ShipError::Io)?;
    socket.set_nonblocking(true).map_err(ShipError::Io)?;
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = tokio::time::timeout(cfg.connect_timeout, socket.connect(cfg.addr))
        .await
        .map_err(|_| ShipError::Timeout("connect", cfg.connect_timeout))?
        .map_err(ShipError::Io)?;
    state
        .cookie
        .store(socket_cookie(&stream).unwrap_or(0), Ordering::Relaxed);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let stream: BoxIo = match &cfg.tls {
        None => Box::new(stream),
        Some(tls) => {
            let name = tls
                .server_name_for(&cfg.to)
                .map_err(|e| ShipError::Rejected(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let tls_stream =
                tokio::time::timeout(cfg.handshake_timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| ShipError::Timeout("TLS handshake", cfg.handshake_timeout))?
                    .map_err(|e| tls_failure(cfg, e))?;
            Box::new(tls_stream)
        }
    };

    let mut framed = tokio_util::codec::Framed::new(stream, WireCodec::new());
    let mut hello = Hello::new(cfg.mode, cfg.source_id);
    hello.client_name = format!("xdr-ship/{}", env!("CARGO_PKG_VERSION"));
    hello.credentials = cfg.credentials.clone();
    let handshake = async {
        framed.send(Frame::hello(hello)).await?;
        framed.next().await.transpose()
    };
    let reply = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| ShipError::Timeout("handshake", cfg.handshake_timeout))?
        .map_err(|e| match e {
            // TLS 1.3: a client certificate the receiver refuses shows up
            // only here, as an alert on the first read.
            WireError::Io(io) if cfg.tls.is_some() => tls_failure(cfg, io),
            e => ShipError::Wire(e),
        })?;
    match reply.map(|f| f.body) {
        Some(Message::HelloOk(ok)) => {
            if ok.mode != cfg.mode {
                return Err(ShipError::Refused(format!(
                    "asked for {:?} mode, the receiver answers {:?}",
                    cfg.mode, ok.mode
                )));
            }
            let parts = framed.into_parts();
            if !parts.read_buf.is_empty() {
                return Err(ShipError::Refused(
                    "receiver sent data after HELLO_OK".into(),
                ));
            }
            Ok((
                parts.io,
                fd,
                (ok.max_frame as usize).min(crate::wire::DEFAULT_MAX_FRAME),
            ))
        }
        Some(Message::Goodbye(g)) if g.code.is_permanent() => Err(ShipError::Rejected(format!(
            "{}: {}{}",
            g.code,
            g.message,
            if g.code == ResultCode::AuthFailed {
                " (check --token-file, or the client certificate)"
            } else {
                ""
            }
        ))),
        Some(Message::Goodbye(g)) => Err(ShipError::Refused(format!("{}: {}", g.code, g.message))),
        Some(other) => Err(ShipError::Refused(format!(
            "expected HELLO_OK, got {}",
            other.frame_type()
        ))),
        None => Err(ShipError::Refused(
            "receiver closed the connection during the handshake".into(),
        )),
    }
}

/// A failed TLS handshake: certificate problems are permanent (and say
/// which flag to look at), the rest is a lost connection.
fn tls_failure(cfg: &ConnConfig, e: std::io::Error) -> ShipError {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::InvalidMessage(_)
            )
        });
    if certificate {
        ShipError::Rejected(format!(
            "TLS handshake with {} failed: {e} (is --tls-ca the CA that signed the receiver's \
             certificate, does it name `{}`, and does the receiver want a client certificate?)",
            cfg.addr,
            cfg.tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| cfg.to.clone())
        ))
    } else {
        ShipError::Io(e)
    }
}

async fn session(
    stream: BoxIo,
    max_frame: usize,
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &async_channel::Receiver<SourceRecord>,
    acked: &mpsc::Sender<Vec<u64>>,
    cancel: &CancellationToken,
) -> SessionEnd {
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, WireCodec::new().with_max_frame(max_frame));
    let codec = WireCodec::new().with_max_frame(max_frame);
    let codec = if cfg.compress {
        codec
    } else {
        codec.without_compression()
    };
    let mut writer = FramedWrite::new(wr, codec);
    let write = write_loop(&mut writer, state, cfg, queue, cancel);
    let read = read_loop(&mut reader, state, cfg, acked);
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

async fn flush(writer: &mut FramedWrite<Wr, WireCodec>) -> Result<(), ShipError> {
    SinkExt::<Frame>::flush(writer)
        .await
        .map_err(ShipError::Wire)
}

/// Returns `Ok(true)` once the source is exhausted and every record has
/// been answered, `Ok(false)` when cancelled.
async fn write_loop(
    writer: &mut FramedWrite<Wr, WireCodec>,
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &async_channel::Receiver<SourceRecord>,
    cancel: &CancellationToken,
) -> Result<bool, ShipError> {
    let mut next_id: u64 = 1;
    let mut encoder = writer.encoder().clone();
    let mut batch: Vec<SourceRecord> = Vec::with_capacity(cfg.batch_max_records);
    let mut last_window_check = Instant::now();
    loop {
        // The destination answered "retry": wait out the backoff before
        // sending anything (resends first, then new records).
        let pause = lock(&state.retry_pause).until.take();
        if let Some(until) = pause.filter(|u| *u > Instant::now()) {
            flush(writer).await?;
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = cancel.cancelled() => return Ok(false),
            }
        }
        // One permit per record, taken before the record: a full window
        // leaves records in the queue (and the source) rather than here.
        if state.permits.available_permits() == 0 {
            flush(writer).await?;
            note_window_full(state, cfg, &mut last_window_check);
        }
        let permit = tokio::select! {
            p = state.permits.acquire() => p.map_err(|_| ShipError::Closed)?,
            _ = cancel.cancelled() => return Ok(false),
        };
        let first = lock(&state.resend).pop_front();
        let (first, fresh) = match first {
            Some(r) => (r, false),
            None => match queue.try_recv() {
                Ok(r) => (r, true),
                Err(_) => {
                    // Nothing ready: push out what is buffered, then wait.
                    flush(writer).await?;
                    tokio::select! {
                        r = queue.recv() => match r {
                            Ok(r) => (r, true),
                            Err(_) => {
                                drop(permit);
                                if wait_drained(state, cancel).await? {
                                    if cancel.is_cancelled() {
                                        return Ok(false);
                                    }
                                    // Everything answered: say goodbye politely.
                                    let _ = writer.send(Frame::goodbye(ResultCode::Ok, "source drained")).await;
                                    let _ = tokio::io::AsyncWriteExt::shutdown(writer.get_mut()).await;
                                    return Ok(true);
                                }
                                continue;
                            }
                        },
                        _ = state.wake_writer.notified() => { drop(permit); continue; }
                        _ = cancel.cancelled() => return Ok(false),
                    }
                }
            },
        };
        permit.forget();
        let mut fresh_count = u64::from(fresh);
        let mut bytes = first.write.frame_len();
        batch.push(first);
        while batch.len() < cfg.batch_max_records && bytes < cfg.batch_max_bytes {
            let Ok(p) = state.permits.try_acquire() else {
                note_window_full(state, cfg, &mut last_window_check);
                break;
            };
            let next = match lock(&state.resend).pop_front() {
                Some(r) => Some((r, false)),
                None => queue.try_recv().ok().map(|r| (r, true)),
            };
            let Some((r, f)) = next else { break };
            p.forget();
            fresh_count += u64::from(f);
            bytes += r.write.frame_len();
            batch.push(r);
        }
        let id = next_id;
        next_id += 1;
        let n = batch.len() as u64;
        let frame_bytes = encode_request(writer, &mut encoder, id, &batch)? as u64;
        lock(&state.table).insert(
            id,
            Pending {
                records: std::mem::replace(&mut batch, Vec::with_capacity(cfg.batch_max_records)),
                bytes: frame_bytes,
                sent_at: Instant::now(),
            },
        );
        state.inflight.fetch_add(n, Ordering::Relaxed);
        state
            .inflight_bytes
            .fetch_add(frame_bytes, Ordering::Relaxed);
        lock(&state.counters).shipped += fresh_count;
        if writer.write_buffer().len() >= WRITE_COALESCE_BYTES {
            flush(writer).await?;
        }
    }
}

/// Bytes of requests gathered before one `write`, while more records are
/// ready at once: iperf3's default write size. Nothing waits in this
/// buffer: every path that would wait (window full, source empty, retry
/// pause) flushes first.
const WRITE_COALESCE_BYTES: usize = 128 * 1024;

/// Encodes one request (a WRITE for one record, a BATCH for more) straight
/// from the records into the writer's buffer, nothing cloned; returns its
/// uncompressed size (what the in-flight and acked byte counters have
/// always counted, compressed or not). The encoder is the session's own (its compression
/// settings and zstd context), the buffer the writer's, so `flush` sends it.
fn encode_request(
    writer: &mut FramedWrite<Wr, WireCodec>,
    encoder: &mut WireCodec,
    id: u64,
    batch: &[SourceRecord],
) -> Result<usize, ShipError> {
    let dst = writer.write_buffer_mut();
    match batch {
        [one] => encoder
            .encode_write(id, &one.write, dst)
            .map_err(ShipError::Wire),
        many => {
            encoder
                .encode_batch(id, many.iter().map(|r| &r.write), dst)
                .map_err(ShipError::Wire)?;
            Ok(crate::wire::HEADER_LEN
                + BATCH_COUNT_LEN
                + many.iter().map(|r| r.write.record_len()).sum::<usize>())
        }
    }
}

/// The record count that opens a BATCH payload (protocol §5.4).
const BATCH_COUNT_LEN: usize = 4;

/// The window is full: note whether it is what limits this connection
/// (`window::socket_drained` decides). Checked at most every 10 ms (one
/// `getsockopt`).
fn note_window_full(state: &ConnState, cfg: &ConnConfig, last_check: &mut Instant) {
    if last_check.elapsed() < super::window::WINDOW_FULL_CHECK_EVERY {
        return;
    }
    *last_check = Instant::now();
    let notsent = crate::net::tcp_info_if_cookie(
        state.fd.load(Ordering::Relaxed),
        state.cookie.load(Ordering::Relaxed),
    )
    .map_or(0, |i| i.notsent_bytes as usize);
    if super::window::socket_drained(notsent, cfg.batch_max_bytes) {
        state.window_limited.store(true, Ordering::Relaxed);
    }
}

/// The queue is closed: wait until every request is answered (`true`), or
/// until something needs re-sending (`false`).
async fn wait_drained(state: &ConnState, cancel: &CancellationToken) -> Result<bool, ShipError> {
    loop {
        let woken = state.wake_writer.notified();
        if state.has_resend() {
            return Ok(false);
        }
        if lock(&state.table).is_empty() {
            return Ok(true);
        }
        tokio::select! {
            _ = woken => {}
            _ = cancel.cancelled() => return Ok(true),
        }
    }
}

/// Reads answers until the connection fails; never returns success (the
/// writer decides when the session is done).
async fn read_loop(
    reader: &mut FramedRead<Rd, WireCodec>,
    state: &ConnState,
    cfg: &ConnConfig,
    acked: &mpsc::Sender<Vec<u64>>,
) -> ShipError {
    loop {
        let frame = match reader.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return ShipError::Wire(e),
            None => return ShipError::Closed,
        };
        let id = frame.request_id;
        let result = match frame.body {
            Message::Ack(ack) => settle(state, cfg, id, |i| ack.result_for(i), ""),
            Message::Nack(nack) => {
                if nack.code.is_permanent() {
                    tracing::warn!(
                        conn = state.id,
                        "request {id} refused: {} {}",
                        nack.code,
                        nack.message
                    );
                }
                settle(state, cfg, id, |_| Some(nack.code), &nack.message)
            }
            Message::Goodbye(g) => {
                return ShipError::Refused(format!("receiver closed: {} {}", g.code, g.message))
            }
            Message::Pong | Message::Ping => continue,
            other => Err(ShipError::Protocol(format!(
                "unexpected {} from the receiver",
                other.frame_type()
            ))),
        };
        match result {
            Ok(seqs) => {
                if cfg.report_acks && !seqs.is_empty() && acked.send(seqs).await.is_err() {
                    return ShipError::Closed;
                }
            }
            Err(e) => return e,
        }
    }
}

/// Applies the answer to request `id`: counts outcomes, queues retryable
/// records for a resend, returns the window permits; returns the delivered
/// positions.
fn settle(
    state: &ConnState,
    cfg: &ConnConfig,
    id: u64,
    code_of: impl Fn(usize) -> Option<ResultCode>,
    reason: &str,
) -> Result<Vec<u64>, ShipError> {
    let (pending, drained) = {
        let mut table = lock(&state.table);
        if cfg.mode == OrderingMode::Ordered {
            match table.first_key_value() {
                Some((&oldest, _)) if oldest == id => {}
                Some((&oldest, _)) => {
                    return Err(ShipError::Protocol(format!(
                    "ordered mode: answer for request {id} while {oldest} is the oldest in flight"
                )))
                }
                None => {
                    return Err(ShipError::Protocol(format!(
                        "answer for request {id} with nothing in flight"
                    )))
                }
            }
        }
        let pending = table.remove(&id).ok_or_else(|| {
            ShipError::Protocol(format!("answer for request {id}, which is not in flight"))
        })?;
        (pending, table.is_empty())
    };
    let n = pending.records.len() as u64;
    let latency_us = pending.sent_at.elapsed().as_micros() as u64;
    let _ = lock(&state.latency).record(latency_us.max(1));
    // Positions go back to the source only if it asked (a log's checkpoint):
    // no vector per answer otherwise.
    let mut delivered = Vec::with_capacity(if cfg.report_acks {
        pending.records.len()
    } else {
        0
    });
    let mut retry = Vec::new();
    {
        let mut c = lock(&state.counters);
        for (i, rec) in pending.records.into_iter().enumerate() {
            let code = code_of(i).unwrap_or(ResultCode::ProtocolViolation);
            match (code, code.class()) {
                (ResultCode::LostConflict, _) => c.lost_conflict += 1,
                (_, ResultClass::Success) => c.success += 1,
                (_, ResultClass::Retryable) => {
                    c.retry_dest += 1;
                    retry.push(rec);
                    continue;
                }
                (_, ResultClass::Permanent) => {
                    c.abandoned += 1;
                    if let Some(dl) = &cfg.dead_letter {
                        if let Err(e) = dl.record(&cfg.to, &rec, code, reason) {
                            tracing::error!(
                                "cannot write record {} to the dead-letter file {}: {e}",
                                rec.seq,
                                dl.path().display()
                            );
                        }
                    }
                }
            }
            if cfg.report_acks {
                delivered.push(rec.seq);
            }
        }
        if retry.is_empty() {
            c.acked_bytes += pending.bytes;
        }
    }
    state.inflight.fetch_sub(n, Ordering::Relaxed);
    state
        .inflight_bytes
        .fetch_sub(pending.bytes, Ordering::Relaxed);
    state.return_permits(n);
    if retry.is_empty() {
        lock(&state.retry_pause).backoff = Duration::ZERO;
        // The writer waits for the table to empty only once the source is
        // drained (`wait_drained`); while shipping, returned permits are
        // what wake it. One wake-up per answer would cost a task hop each.
        if drained {
            state.wake_writer.notify_one();
        }
    } else {
        {
            let mut p = lock(&state.retry_pause);
            p.backoff = (p.backoff * 2).clamp(cfg.backoff_min, cfg.backoff_max);
            p.until = Some(Instant::now() + p.backoff);
        }
        state.push_resend(retry);
    }
    Ok(delivered)
}

impl From<WireError> for ShipError {
    fn from(e: WireError) -> Self {
        ShipError::Wire(e)
    }
}
