//! The receiver: one accept loop, one task per connection, writes applied
//! to a [`Store`](crate::store::Store).
//!
//! Why two modes: in ordered mode (the XDR 3.8 scheme) a connection applies
//! its requests one after the other and answers strictly in request order,
//! so the receiver's parallelism comes only from having many connections.
//! In unordered mode each request is applied on its own task, answers leave
//! as writes complete, and ONE connection can keep every core of the
//! receiver busy. Either way a connection holds at most `max_in_flight`
//! requests: a request past that is answered NACK `Busy` (protocol §6.4),
//! and at twice the limit the server stops reading, so TCP's window pushes
//! back on a shipper that ignores the limit and memory stays bounded.
//!
//! # Trust at the edges
//!
//! The port faces links that others share, so every resource a peer can
//! make the receiver hold has a limit, and going over it gets that peer a
//! clear answer and closes only that connection:
//!
//! | limit                | over it                                           |
//! |----------------------|---------------------------------------------------|
//! | `max_connections`    | GOODBYE `Busy` "too many connections", closed      |
//! | `handshake_timeout`  | GOODBYE `Timeout` "no HELLO in time", closed       |
//! | `idle_timeout`       | GOODBYE `Timeout` "idle for ...", closed: a peer that sends nothing, or never finishes a frame (slowloris) |
//! | `max_frame`          | GOODBYE `RecordTooLarge`, decided from the header before any buffer grows |
//! | `max_in_flight`      | NACK `Busy` for each excess request; reading pauses at twice the limit |
//!
//! Bad input never takes the server down: a frame that fails to decode gets
//! a GOODBYE with the reason, that connection is closed, and every other
//! connection carries on. Closing after an error is a *lingering* close: the
//! write side is shut down first and what the peer still sends is read and
//! dropped for a moment, because closing a socket with unread input makes
//! the kernel send RST, which can destroy the GOODBYE before the peer reads
//! it. (After mini-redis' `server::run`: a semaphore caps connections, and
//! shutdown is a token every task watches.)
//!
//! Who may write: with `tls` every connection first completes a TLS 1.3
//! handshake (and with client authentication, presents a certificate from
//! the configured CA); with `token` its HELLO must carry the pre-shared
//! token, checked in constant time. A peer that fails either gets GOODBYE
//! `AuthFailed` (or, talking plaintext to a TLS port, a plaintext GOODBYE
//! `Unsupported` saying so) before any of its frames is read as a request:
//! nothing it sent is applied. [`bind`] refuses a non-loopback address
//! without either, unless `insecure` says so explicitly.
//!
//! Answers leave together: after a request is read, every request already
//! in the read buffer (up to `REQUESTS_PER_ROUND`) is taken too, and the
//! answers that are ready are written in one flush, so a shipper that sends
//! many requests per `write` gets its ACKs in few writes, one frame each
//! (the protocol is unchanged).
//!
//! Connection handling ([`serve_stream`]) is generic over the byte stream
//! (`AsyncRead + AsyncWrite`), so plain TCP, TLS and other listeners share
//! it.
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
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
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
    /// A listener reachable from other hosts, with nothing to tell who may
    /// write to it.
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach it could \
         write records. Give --token-file FILE (a pre-shared token) or --tls-cert/--tls-key with \
         --tls-ca (client certificates), or --insecure to accept unauthenticated peers anyway"
    )]
    Unauthenticated {
        /// The address.
        addr: SocketAddr,
    },
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
    /// Time a connection may stay without a complete frame while no request
    /// of it is being processed; then it is closed (GOODBYE `Timeout`). Also
    /// what ends a peer that starts a frame and never finishes it.
    pub idle_timeout: Duration,
    /// TLS 1.3 on every connection (`None`: plain TCP).
    pub tls: Option<crate::tls::ServerTls>,
    /// The pre-shared token every HELLO must carry (`None`: not asked).
    pub token: Option<crate::tls::Token>,
    /// Listen on a non-loopback address without any authentication.
    pub insecure: bool,
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
            idle_timeout: Duration::from_secs(300),
            apply_delay: None,
            tls: None,
            token: None,
            insecure: false,
        }
    }
}

impl ServerConfig {
    /// Whether peers must prove who they are (token or client certificate).
    pub fn authenticates(&self) -> bool {
        self.token.is_some() || self.tls.as_ref().is_some_and(|t| t.client_auth)
    }

    /// Refuses to expose an unauthenticated receiver beyond this host.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), ServerError> {
        if addr.ip().is_loopback() || self.authenticates() || self.insecure {
            Ok(())
        } else {
            Err(ServerError::Unauthenticated { addr })
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
    /// Connections closed for a protocol error or a broken limit.
    pub rejected: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused_busy: AtomicU64,
    /// Connections closed by the handshake or idle timeout.
    pub timed_out: AtomicU64,
    /// Requests answered NACK `Busy` for exceeding `max_in_flight`.
    pub over_in_flight: AtomicU64,
    /// Connections refused for missing or wrong credentials, a failed TLS
    /// handshake, or plaintext on a TLS port.
    pub auth_failed: AtomicU64,
}

/// Binds `addr` with SO_RCVBUF set before `listen`, so that accepted
/// connections inherit it and negotiate a window scale large enough for it.
pub fn bind(
    addr: SocketAddr,
    cfg: &ServerConfig,
) -> Result<(TcpListener, Option<BufferReport>), ServerError> {
    cfg.check_exposure(addr)?;
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
            stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(refuse(
                stream,
                ResultCode::Busy,
                format!(
                    "too many connections: this receiver serves at most {} at once; retry later",
                    cfg.max_connections
                ),
            ));
            continue;
        };
        let (store, cfg, stats, shutdown) =
            (store.clone(), cfg.clone(), stats.clone(), shutdown.clone());
        tasks.spawn(async move {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            if let Err(reason) = serve_tcp(stream, peer, store, &cfg, &stats, shutdown).await {
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

async fn refuse(stream: TcpStream, code: ResultCode, why: String) {
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, WireCodec::new());
    let mut writer = FramedWrite::new(wr, WireCodec::new());
    close_with(&mut reader, &mut writer, Frame::goodbye(code, why)).await;
}

/// One accepted TCP connection: TLS first if configured, then the session.
async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &ServerConfig,
    stats: &ServerStats,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let Some(tls) = &cfg.tls else {
        return serve_stream(stream, peer, store, cfg, stats, shutdown).await;
    };
    // A plaintext shipper on a TLS port: tell it so in its own protocol
    // (a TLS ClientHello starts with 0x16, a frame with "XS").
    let mut first = [0u8; 1];
    match tokio::time::timeout(cfg.handshake_timeout, stream.peek(&mut first)).await {
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "no TLS handshake within {:?}",
                cfg.handshake_timeout
            ));
        }
        Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
        Ok(Ok(_)) if first[0] == crate::wire::MAGIC[0] => {
            stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            let why = "this receiver requires TLS and the peer speaks plaintext: \
                       start the shipper with --tls-ca (the CA of the receiver's certificate)";
            refuse(stream, ResultCode::Unsupported, why.to_owned()).await;
            return Err(why.to_owned());
        }
        Ok(Ok(_)) => {}
    }
    // A second handle on the socket: when the handshake fails, rustls has
    // queued an alert saying why, and the close must linger so that the
    // peer reads it rather than an RST.
    let twin = stream
        .into_std()
        .and_then(|s| Ok((s.try_clone()?, s)))
        .and_then(|(twin, s)| Ok((twin, TcpStream::from_std(s)?)));
    let (twin, stream) = match twin {
        Ok(pair) => pair,
        Err(e) => return Err(format!("cannot set up the connection for TLS: {e}")),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let accepted = tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(stream)).await;
    if !matches!(accepted, Ok(Ok(_))) {
        if let Ok(twin) = TcpStream::from_std(twin) {
            let (rd, wr) = tokio::io::split(twin);
            let (mut reader, mut writer) = (
                FramedRead::new(rd, WireCodec::new()),
                FramedWrite::new(wr, WireCodec::new()),
            );
            linger(&mut reader, &mut writer).await;
        }
    }
    let stream = match accepted {
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "TLS handshake not finished within {:?}",
                cfg.handshake_timeout
            ));
        }
        Ok(Err(e)) => {
            stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            return Err(format!("TLS handshake failed: {e}"));
        }
        Ok(Ok(s)) => s,
    };
    serve_stream(stream, peer, store, cfg, stats, shutdown).await
}

type Reader<S> = FramedRead<ReadHalf<S>, WireCodec>;
type Writer<S> = FramedWrite<WriteHalf<S>, WireCodec>;

/// Why a connection was closed early: the reason for the log, and the
/// GOODBYE that tells the peer (none when the transport itself failed).
struct Closed {
    reason: String,
    goodbye: Option<Frame>,
}

impl Closed {
    fn with(code: ResultCode, reason: String) -> Self {
        Closed {
            goodbye: Some(Frame::goodbye(code, reason.clone())),
            reason,
        }
    }

    fn transport(e: impl std::fmt::Display) -> Self {
        Closed {
            reason: e.to_string(),
            goodbye: None,
        }
    }

    fn wire(stats: &ServerStats, e: &WireError) -> Self {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        Closed {
            reason: e.to_string(),
            goodbye: Some(Frame::goodbye_for(e)),
        }
    }
}

/// Sends `goodbye`, shuts the write side, and reads (and drops) what the
/// peer still sends for a moment, so that the kernel does not answer unread
/// input with an RST that could destroy the GOODBYE in flight.
async fn close_with<S: AsyncRead + AsyncWrite>(
    reader: &mut Reader<S>,
    writer: &mut Writer<S>,
    goodbye: Frame,
) {
    let sent = tokio::time::timeout(Duration::from_secs(1), writer.send(goodbye)).await;
    if matches!(sent, Ok(Ok(()))) {
        linger(reader, writer).await;
    }
}

/// Shuts the write side and drops what the peer still sends, for at most
/// a second and a MiB.
async fn linger<S: AsyncRead + AsyncWrite>(reader: &mut Reader<S>, writer: &mut Writer<S>) {
    let linger = async {
        let _ = writer.get_mut().shutdown().await;
        let rd = reader.get_mut();
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// Serves one connection over any byte stream (plain TCP, TLS, ...): the
/// handshake, then requests until the peer is done, a frame is bad, a limit
/// is broken, or shutdown. `Err` carries the reason it was closed early;
/// the peer has been told with a GOODBYE.
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &ServerConfig,
    stats: &ServerStats,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, WireCodec::new().with_max_frame(cfg.max_frame));
    let mut writer = FramedWrite::new(wr, WireCodec::new().with_max_frame(cfg.max_frame));
    let session = Session {
        peer,
        store,
        cfg,
        stats,
        shutdown,
    };
    let outcome = session.run(&mut reader, &mut writer).await;
    match outcome {
        Ok(()) => Ok(()),
        Err(Closed { reason, goodbye }) => {
            if let Some(goodbye) = goodbye {
                close_with(&mut reader, &mut writer, goodbye).await;
            }
            Err(reason)
        }
    }
}

/// One connection's context, shared by its handshake and its request loop
/// (after mini-redis' `Handler`): who the peer is, where its writes go, the
/// limits it is held to, the counters it adds to and the shutdown it
/// watches.
struct Session<'a> {
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &'a ServerConfig,
    stats: &'a ServerStats,
    shutdown: CancellationToken,
}

impl Session<'_> {
    /// The handshake, then requests until the peer is done.
    async fn run<S: AsyncRead + AsyncWrite>(
        &self,
        reader: &mut Reader<S>,
        writer: &mut Writer<S>,
    ) -> Result<(), Closed> {
        let hello = match tokio::time::timeout(self.cfg.handshake_timeout, reader.next()).await {
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(Closed::with(
                    ResultCode::Timeout,
                    format!(
                        "no HELLO in time: none within {:?}",
                        self.cfg.handshake_timeout
                    ),
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(Closed::wire(self.stats, &e)),
            Ok(Some(Ok(Frame {
                body: Message::Hello(h),
                ..
            }))) => h,
            Ok(Some(Ok(other))) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Closed::with(
                    ResultCode::ProtocolViolation,
                    format!("expected HELLO, got {}", other.frame_type()),
                ));
            }
        };
        let Some(version) = hello.negotiate_version() else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Closed::with(
                ResultCode::Unsupported,
                format!(
                    "client speaks versions {}..={}, this server {}",
                    hello.min_version,
                    hello.max_version,
                    crate::wire::PROTOCOL_VERSION
                ),
            ));
        };
        if let Some(token) = &self.cfg.token {
            if !token.verify(&hello.credentials) {
                self.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
                let why = if hello.credentials.is_empty() {
                    "HELLO carries no credentials; this receiver requires its pre-shared token \
                     (give the shipper --token-file)"
                } else {
                    "HELLO credentials rejected: not this receiver's pre-shared token (--token-file)"
                };
                return Err(Closed::with(ResultCode::AuthFailed, why.to_owned()));
            }
        }
        writer
            .send(Frame::hello_ok(HelloOk {
                version,
                mode: hello.mode,
                max_frame: self.cfg.max_frame as u32,
                max_in_flight: self.cfg.max_in_flight,
            }))
            .await
            .map_err(Closed::transport)?;
        tracing::debug!(
            "{}: session: {:?} mode, source {}, client `{}`",
            self.peer,
            hello.mode,
            hello.source_id,
            hello.client_name
        );
        match hello.mode {
            OrderingMode::Ordered => {
                let pending = FuturesOrdered::new();
                self.pump(reader, writer, pending, false).await
            }
            OrderingMode::Unordered => {
                let pending = FuturesUnordered::new();
                self.pump(reader, writer, pending, true).await
            }
        }
    }

    /// Reads requests and writes answers until the peer is done, a frame
    /// is bad, a limit is broken, or shutdown.
    async fn pump<S: AsyncRead + AsyncWrite>(
        &self,
        reader: &mut Reader<S>,
        writer: &mut Writer<S>,
        mut pending: impl Pending<ApplyFuture>,
        parallel: bool,
    ) -> Result<(), Closed> {
        let max_in_flight = self.cfg.max_in_flight as usize;
        // Past the limit requests are answered Busy; past twice the limit the
        // server stops reading, so even a peer that ignores every NACK cannot
        // make it hold more.
        let read_cap = max_in_flight.saturating_mul(2).max(1);
        let idle = tokio::time::sleep(self.cfg.idle_timeout);
        tokio::pin!(idle);
        let mut reading = true;
        let mut shutting_down = false;
        loop {
            if !reading && pending.in_flight() == 0 {
                if shutting_down {
                    return Err(Closed::with(
                        ResultCode::ShuttingDown,
                        "the receiver is shutting down; reconnect later".to_owned(),
                    ));
                }
                return Ok(());
            }
            tokio::select! {
                frame = reader.next(), if reading && pending.in_flight() < read_cap => {
                    idle.as_mut().reset(Instant::now() + self.cfg.idle_timeout);
                    reading = self.admit(frame, writer, &mut pending, parallel).await?;
                    // Take every request already read before answering, so
                    // that their answers leave in one write.
                    for _ in 1..REQUESTS_PER_ROUND {
                        if !reading || pending.in_flight() >= read_cap {
                            break;
                        }
                        let Some(frame) = reader.next().now_or_never() else { break };
                        reading = self.admit(frame, writer, &mut pending, parallel).await?;
                    }
                }
                Some((answer, writes)) = pending.next(), if pending.in_flight() > 0 => {
                    count(self.stats, &answer, writes);
                    writer.feed(answer).await.map_err(Closed::transport)?;
                    // Batch the answers that are already done into one write.
                    while let Some(Some((answer, writes))) = pending.next().now_or_never() {
                        count(self.stats, &answer, writes);
                        writer.feed(answer).await.map_err(Closed::transport)?;
                    }
                    SinkExt::<Frame>::flush(writer).await.map_err(Closed::transport)?;
                    idle.as_mut().reset(Instant::now() + self.cfg.idle_timeout);
                }
                _ = &mut idle, if reading && pending.in_flight() == 0 => {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    let partial = reader.read_buffer().len();
                    let reason = if partial > 0 {
                        format!(
                            "idle for {:?} with an unfinished frame ({partial} bytes of it received)",
                            self.cfg.idle_timeout
                        )
                    } else {
                        format!("idle for {:?}: no request received", self.cfg.idle_timeout)
                    };
                    return Err(Closed::with(ResultCode::Timeout, reason));
                }
                _ = self.shutdown.cancelled(), if reading => {
                    // Stop taking requests; answer those in hand, then close.
                    reading = false;
                    shutting_down = true;
                }
            }
        }
    }

    /// Takes one frame read from the peer: a request goes into `pending`
    /// (answered Busy past `max_in_flight`, protocol §6.4), a PING is
    /// answered, a GOODBYE or the end of input ends reading (`Ok(false)`).
    async fn admit<S: AsyncRead + AsyncWrite>(
        &self,
        frame: Option<Result<Frame, WireError>>,
        writer: &mut Writer<S>,
        pending: &mut impl Pending<ApplyFuture>,
        parallel: bool,
    ) -> Result<bool, Closed> {
        let frame = match frame {
            None => return Ok(false),
            Some(Err(e)) => return Err(Closed::wire(self.stats, &e)),
            Some(Ok(f)) => f,
        };
        let id = frame.request_id;
        let writes = match frame.body {
            Message::Write(w) => vec![w],
            Message::Batch(ws) => ws,
            Message::Ping => {
                writer
                    .send(Frame::new(id, Message::Pong))
                    .await
                    .map_err(Closed::transport)?;
                return Ok(true);
            }
            Message::Pong => return Ok(true),
            Message::Goodbye(_) => return Ok(false),
            other => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Closed::with(
                    ResultCode::ProtocolViolation,
                    format!("unexpected {} after the handshake", other.frame_type()),
                ));
            }
        };
        let max_in_flight = self.cfg.max_in_flight as usize;
        if pending.in_flight() >= max_in_flight {
            self.stats.over_in_flight.fetch_add(1, Ordering::Relaxed);
            let n = writes.len();
            let why = format!(
                "more than max_in_flight = {max_in_flight} requests unanswered; \
                 wait for answers before sending more"
            );
            pending.add(Box::pin(std::future::ready((
                Frame::nack(id, ResultCode::Busy, why),
                n,
            ))));
            return Ok(true);
        }
        let fut = apply(self.store.clone(), id, writes, self.cfg.apply_delay);
        if parallel {
            let handle = tokio::spawn(fut);
            pending.add(Box::pin(async move {
                handle.await.unwrap_or_else(|e| {
                    let why = format!("apply task failed: {e}");
                    (Frame::nack(id, ResultCode::Unavailable, why), 0)
                })
            }));
        } else {
            pending.add(fut);
        }
        Ok(true)
    }
}

/// Most requests taken from what is already read before answering: bounds
/// how long answers wait while a fast peer keeps the read buffer full.
const REQUESTS_PER_ROUND: usize = 64;

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
