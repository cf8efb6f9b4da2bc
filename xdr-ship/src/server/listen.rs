//! Binding the port and accepting connections: the connection cap, TLS
//! (and a plaintext peer on a TLS port), and the bounded drain at shutdown.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{atomic::Ordering, Arc},
    time::Duration,
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

use super::{
    close::{close_with, linger},
    serve_stream, ServerConfig, ServerError, ServerStats, Sink,
};
use crate::{
    net::{request_buffer, Buffer, BufferReport},
    wire::{Frame, ResultCode, WireCodec},
};

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

pub(super) async fn refuse(stream: TcpStream, code: ResultCode, why: String) {
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
        let fd = stream.as_raw_fd();
        return serve_stream(stream, peer, store, cfg, stats, shutdown, Some(fd)).await;
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
    serve_stream(stream, peer, store, cfg, stats, shutdown, None).await
}
