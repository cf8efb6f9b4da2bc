//! The receiver: one accept loop, one task per connection, writes applied
//! to a [`Store`].
//!
//! Why two modes: in ordered mode (the XDR 3.8 scheme) a connection applies
//! its requests one after the other and answers strictly in request order,
//! so the receiver's parallelism comes only from having many connections.
//! In unordered mode each request is applied on its own task, answers leave
//! as writes complete, and ONE connection can keep every core of the
//! receiver busy. Either way a connection holds at most `max_in_flight`
//! requests: past that it stops reading, and TCP's window pushes back on
//! the shipper.
//!
//! Bad input never takes the server down: a frame that fails to decode gets
//! a GOODBYE with the reason, that connection is closed, and every other
//! connection carries on. (After mini-redis' `server::run`: a semaphore caps
//! connections, and shutdown is a token every task watches.)
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{
    stream::{FuturesOrdered, FuturesUnordered},
    FutureExt, SinkExt, Stream, StreamExt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

pub mod sink;
pub use sink::{Applied, Sink};

use crate::{
    net::{request_buffer, Buffer, BufferReport},
    wire::{
        Ack, Frame, HelloOk, Message, OrderingMode, ResultCode, WireCodec, WireError, Write,
        DEFAULT_MAX_FRAME,
    },
};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Accepting failed for good.
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
}

/// How the receiver runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// SO_RCVBUF to request on the listener, inherited by every connection
    /// (`None`: kernel autotuning).
    pub rcvbuf: Option<usize>,
    /// Connections served at once; more are answered `Busy` and closed.
    pub max_connections: usize,
    /// Requests a connection may have unanswered before the server stops
    /// reading from it.
    pub max_in_flight: u32,
    /// Largest frame payload accepted.
    pub max_frame: usize,
    /// Time a new connection has to say HELLO.
    pub handshake_timeout: Duration,
    /// Extra time spent before applying each request: makes the
    /// destination the bottleneck on purpose (diagnosis tests, demos).
    pub apply_delay: Option<Duration>,
}

impl Default for ServerConfig {
    /// The seed's receiver: SO_RCVBUF 15 MiB.
    fn default() -> Self {
        Self {
            rcvbuf: Some(15 << 20),
            max_connections: 1024,
            max_in_flight: 65_536,
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            apply_delay: None,
        }
    }
}

/// Live counters of a receiver.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Requests (WRITE or BATCH) answered.
    pub requests: AtomicU64,
    /// Writes applied.
    pub applied: AtomicU64,
    /// Writes answered LostConflict.
    pub lost_conflict: AtomicU64,
    /// Requests answered with an error.
    pub failed: AtomicU64,
    /// Connections closed for a protocol error.
    pub rejected: AtomicU64,
}

/// Binds `addr` with SO_RCVBUF set before `listen`, so that accepted
/// connections inherit it and negotiate a window scale large enough for it.
pub fn bind(
    addr: SocketAddr,
    cfg: &ServerConfig,
) -> Result<(TcpListener, Option<BufferReport>), ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    let report = match cfg.rcvbuf {
        Some(bytes) => Some(request_buffer(&socket, Buffer::Receive, bytes).map_err(err)?),
        None => None,
    };
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    let listener = TcpListener::from_std(socket.into()).map_err(err)?;
    Ok((listener, report))
}

/// Serves connections on `listener` until `shutdown`, then waits (bounded)
/// for open connections to finish their requests. Writes go to `sink`: a
/// [`crate::store::Store`] (`recv`) or the source log (ingest).
pub async fn serve(
    listener: TcpListener,
    sink: impl Into<Arc<dyn Sink>>,
    cfg: ServerConfig,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let store: Arc<dyn Sink> = sink.into();
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let cfg = Arc::new(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) if is_transient(&e) => {
                    tracing::warn!("accept: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(ServerError::Accept(e)),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = shutdown.cancelled() => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(
                "{peer}: refused, {} connections already open",
                cfg.max_connections
            );
            tasks.spawn(refuse(stream, ResultCode::Busy, "too many connections"));
            continue;
        };
        let (store, cfg, stats, shutdown) =
            (store.clone(), cfg.clone(), stats.clone(), shutdown.clone());
        tasks.spawn(async move {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(reason) = connection(stream, peer, store, &cfg, &stats, shutdown).await {
                tracing::warn!("{peer}: closed: {reason}");
            }
            stats.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // Drain: connections see the token, finish what they hold, and close.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some connections did not finish within 10 s");
    }
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

async fn refuse(stream: TcpStream, code: ResultCode, why: &'static str) {
    let mut framed = FramedWrite::new(stream, WireCodec::new());
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        framed.send(Frame::goodbye(code, why)),
    )
    .await;
}

/// Serves one connection; `Err` carries the reason it was closed early.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &ServerConfig,
    stats: &ServerStats,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, WireCodec::new().with_max_frame(cfg.max_frame));
    let mut writer = FramedWrite::new(wr, WireCodec::new().with_max_frame(cfg.max_frame));

    let hello = match tokio::time::timeout(cfg.handshake_timeout, reader.next()).await {
        Err(_) => {
            let _ = writer
                .send(Frame::goodbye(ResultCode::Timeout, "no HELLO in time"))
                .await;
            return Err(format!("no HELLO within {:?}", cfg.handshake_timeout));
        }
        Ok(None) => return Ok(()),
        Ok(Some(Err(e))) => return Err(goodbye(&mut writer, stats, &e).await),
        Ok(Some(Ok(Frame {
            body: Message::Hello(h),
            ..
        }))) => h,
        Ok(Some(Ok(other))) => {
            let why = format!("expected HELLO, got {}", other.frame_type());
            let _ = writer
                .send(Frame::goodbye(ResultCode::ProtocolViolation, why.clone()))
                .await;
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
    };
    let Some(version) = hello.negotiate_version() else {
        let why = format!(
            "client speaks versions {}..={}, this server {}",
            hello.min_version,
            hello.max_version,
            crate::wire::PROTOCOL_VERSION
        );
        let _ = writer
            .send(Frame::goodbye(ResultCode::Unsupported, why.clone()))
            .await;
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(why);
    };
    writer
        .send(Frame::hello_ok(HelloOk {
            version,
            mode: hello.mode,
            max_frame: cfg.max_frame as u32,
            max_in_flight: cfg.max_in_flight,
        }))
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(
        "{peer}: session: {:?} mode, source {}, client `{}`",
        hello.mode,
        hello.source_id,
        hello.client_name
    );
    match hello.mode {
        OrderingMode::Ordered => {
            let pending = FuturesOrdered::new();
            pump(reader, writer, pending, store, cfg, stats, shutdown, false).await
        }
        OrderingMode::Unordered => {
            let pending = FuturesUnordered::new();
            pump(reader, writer, pending, store, cfg, stats, shutdown, true).await
        }
    }
}

/// Answers a request with a future: pushed in order (ordered) or as a set.
trait Pending<F>: Stream<Item = Answer> + Unpin {
    fn add(&mut self, f: F);
    fn in_flight(&self) -> usize;
}

impl<F: std::future::Future<Output = Answer>> Pending<F> for FuturesOrdered<F> {
    fn add(&mut self, f: F) {
        self.push_back(f);
    }
    fn in_flight(&self) -> usize {
        self.len()
    }
}

impl<F: std::future::Future<Output = Answer>> Pending<F> for FuturesUnordered<F> {
    fn add(&mut self, f: F) {
        self.push(f);
    }
    fn in_flight(&self) -> usize {
        self.len()
    }
}

/// The answer to a request, and how many writes the request carried.
type Answer = (Frame, usize);

type ApplyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

/// Reads requests and writes answers until the peer is done, a frame is
/// bad, or shutdown.
#[allow(clippy::too_many_arguments)]
async fn pump(
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, WireCodec>,
    mut writer: FramedWrite<tokio::net::tcp::OwnedWriteHalf, WireCodec>,
    mut pending: impl Pending<ApplyFuture>,
    store: Arc<dyn Sink>,
    cfg: &ServerConfig,
    stats: &ServerStats,
    shutdown: CancellationToken,
    parallel: bool,
) -> Result<(), String> {
    let mut reading = true;
    loop {
        if !reading && pending.in_flight() == 0 {
            return Ok(());
        }
        tokio::select! {
            frame = reader.next(), if reading && pending.in_flight() < cfg.max_in_flight as usize => {
                let frame = match frame {
                    None => { reading = false; continue; }
                    Some(Err(e)) => return Err(goodbye(&mut writer, stats, &e).await),
                    Some(Ok(f)) => f,
                };
                let id = frame.request_id;
                let writes = match frame.body {
                    Message::Write(w) => vec![w],
                    Message::Batch(ws) => ws,
                    Message::Ping => {
                        writer.send(Frame::new(id, Message::Pong)).await.map_err(|e| e.to_string())?;
                        continue;
                    }
                    Message::Goodbye(_) => { reading = false; continue; }
                    other => {
                        let why = format!("unexpected {} after the handshake", other.frame_type());
                        let _ = writer.send(Frame::goodbye(ResultCode::ProtocolViolation, why.clone())).await;
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(why);
                    }
                };
                let fut = apply(store.clone(), id, writes, cfg.apply_delay);
                if parallel {
                    let handle = tokio::spawn(fut);
                    pending.add(Box::pin(async move {
                        handle.await.unwrap_or_else(|e| {
                            (Frame::nack(id, ResultCode::Unavailable, format!("apply task failed: {e}")), 0)
                        })
                    }));
                } else {
                    pending.add(Box::pin(fut));
                }
            }
            Some((answer, writes)) = pending.next(), if pending.in_flight() > 0 => {
                count(stats, &answer, writes);
                writer.feed(answer).await.map_err(|e| e.to_string())?;
                // Batch the answers that are already done into one write.
                while let Some(Some((answer, writes))) = pending.next().now_or_never() {
                    count(stats, &answer, writes);
                    writer.feed(answer).await.map_err(|e| e.to_string())?;
                }
                SinkExt::<Frame>::flush(&mut writer).await.map_err(|e| e.to_string())?;
            }
            _ = shutdown.cancelled(), if reading => {
                // Stop taking requests; answer those in hand, then close.
                reading = false;
            }
        }
    }
}

fn count(stats: &ServerStats, answer: &Frame, writes: usize) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let writes = writes as u64;
    match &answer.body {
        Message::Ack(Ack::All(ResultCode::LostConflict)) => {
            stats.lost_conflict.fetch_add(writes, Ordering::Relaxed);
        }
        Message::Ack(Ack::All(_)) => {
            stats.applied.fetch_add(writes, Ordering::Relaxed);
        }
        Message::Ack(Ack::PerWrite(codes)) => {
            for c in codes {
                match c {
                    ResultCode::Ok => stats.applied.fetch_add(1, Ordering::Relaxed),
                    ResultCode::LostConflict => stats.lost_conflict.fetch_add(1, Ordering::Relaxed),
                    _ => stats.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        _ => {
            stats.failed.fetch_add(writes, Ordering::Relaxed);
        }
    }
}

/// Applies one request and builds its answer.
fn apply(
    store: Arc<dyn Sink>,
    id: u64,
    writes: Vec<Write>,
    delay: Option<Duration>,
) -> ApplyFuture {
    Box::pin(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let n = writes.len();
        let frame = match store.apply(writes).await {
            Applied::PerWrite(codes) => {
                let uniform = codes
                    .first()
                    .copied()
                    .filter(|c| codes.iter().all(|x| x == c));
                match uniform {
                    Some(code) if codes.len() == n => Frame::ack(id, code),
                    None if n == 0 => Frame::ack(id, ResultCode::Ok),
                    _ => Frame::ack_per_write(id, codes),
                }
            }
            Applied::Refused(code, why) => Frame::nack(id, code, why),
        };
        (frame, n)
    })
}

/// Tells the peer why its connection is being closed; returns the reason.
async fn goodbye(
    writer: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, WireCodec>,
    stats: &ServerStats,
    e: &WireError,
) -> String {
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.send(Frame::goodbye_for(e))).await;
    e.to_string()
}
