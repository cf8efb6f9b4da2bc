//! Opening a session: the socket (send buffer, congestion control), TLS
//! when configured, and the HELLO exchange that agrees on the mode and the
//! frame limit.
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use socket2::{Domain, Protocol, Socket, Type};

use super::{BoxIo, ConnConfig, ConnState};
use crate::{
    net::{request_buffer, socket_cookie, Buffer},
    ship::ShipError,
    wire::{Frame, Hello, HelloOk, Message, ResultCode, WireCodec, WireError},
};

/// Connects, sizes the send buffer, sets up TLS if configured, says HELLO;
/// returns the stream, its socket's fd (for `TCP_INFO`) and the frame limit
/// agreed with the server.
pub(super) async fn connect(
    cfg: &ConnConfig,
    state: &ConnState,
) -> Result<(BoxIo, std::os::fd::RawFd, usize), ShipError> {
    let socket = open_socket(cfg, state)?;
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = tokio::time::timeout(cfg.connect_timeout, socket.connect(cfg.addr))
        .await
        .map_err(|_| ShipError::Timeout("connect", cfg.connect_timeout))?
        .map_err(ShipError::Io)?;
    state
        .cookie
        .store(socket_cookie(&stream).unwrap_or(0), Ordering::Relaxed);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let stream = wrap_tls(cfg, stream).await?;
    let (io, max_frame) = match &cfg.redis {
        Some(target) => {
            let io = super::redis_session::handshake(cfg, target, stream)
                .await
                .map_err(|e| match e {
                    // TLS 1.3: Redis refusing our client certificate (or
                    // its absence, `tls-auth-clients yes`) shows up only
                    // here, as an alert on the first read.
                    ShipError::Io(io) if cfg.ship.tls.is_some() => tls_failure(cfg, io),
                    e => e,
                })?;
            (io, 0)
        }
        None => handshake(cfg, stream).await?,
    };
    Ok((io, fd, max_frame))
}

/// A non-blocking TCP socket with the configured send buffer, congestion
/// control and `TCP_NODELAY`.
fn open_socket(cfg: &ConnConfig, state: &ConnState) -> Result<Socket, ShipError> {
    let socket = Socket::new(
        Domain::for_address(cfg.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(ShipError::Io)?;
    if let Some(bytes) = cfg.ship.sndbuf {
        let report = request_buffer(&socket, Buffer::Send, bytes).map_err(ShipError::Io)?;
        // The same cap holds for every connection: said once, by the first,
        // and again only if it reconnects after the repeat span.
        if let Some(w) = report.warning {
            if state.id == 0
                && cfg
                    .warnings
                    .note(0, &w, std::time::Instant::now())
                    .is_some()
            {
                tracing::warn!("{w} (every connection)");
            }
        }
    }
    if let Some(cc) = &cfg.ship.congestion {
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
    Ok(socket)
}

/// The connected stream as the session's byte stream: TLS over it when
/// configured, else as it is.
async fn wrap_tls(cfg: &ConnConfig, stream: tokio::net::TcpStream) -> Result<BoxIo, ShipError> {
    Ok(match &cfg.ship.tls {
        None if cfg.redis.as_ref().is_some_and(|r| r.tls) => return Err(ShipError::Rejected(
            "rediss:// is Redis over TLS: give --tls-ca, the CA that signed Redis's certificate"
                .into(),
        )),
        None => Box::new(stream),
        Some(tls) => {
            let name = tls
                .server_name_for(&crate::ship::redis::host_port(&cfg.ship.to))
                .map_err(|e| ShipError::Rejected(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let tls_stream =
                tokio::time::timeout(cfg.handshake_timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| ShipError::Timeout("TLS handshake", cfg.handshake_timeout))?
                    .map_err(|e| tls_failure(cfg, e))?;
            Box::new(tls_stream)
        }
    })
}

/// Says HELLO and reads the answer; returns the stream and the frame limit
/// agreed with the server.
async fn handshake(cfg: &ConnConfig, stream: BoxIo) -> Result<(BoxIo, usize), ShipError> {
    let mut framed = tokio_util::codec::Framed::new(stream, WireCodec::new());
    let mut hello = Hello::new(cfg.ship.mode, cfg.ship.source_id);
    hello.client_name = format!("xdr-ship/{}", env!("CARGO_PKG_VERSION"));
    hello.credentials = cfg.ship.token.clone().unwrap_or_default();
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
            WireError::Io(io) if cfg.ship.tls.is_some() => tls_failure(cfg, io),
            e => ShipError::Wire(e),
        })?;
    match reply.map(|f| f.body) {
        Some(Message::HelloOk(ok)) => accept_hello_ok(cfg, framed, &ok),
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
    if !crate::tls::is_certificate_problem(&e) {
        return ShipError::Io(e);
    }
    let host_port = crate::ship::redis::host_port(&cfg.ship.to);
    let name = cfg
        .ship
        .tls
        .as_ref()
        .map_or_else(|| host_port.clone(), |t| t.expected_name(&host_port));
    let (peer, wants) = if cfg.redis.is_some() {
        (
            "Redis's",
            "Redis want a client certificate (tls-auth-clients)",
        )
    } else {
        ("the receiver's", "the receiver want a client certificate")
    };
    ShipError::Rejected(format!(
        "TLS handshake with {} failed: {e} (is --tls-ca the CA that signed {peer} \
         certificate, does it name `{name}`, and does {wants}?)",
        cfg.addr
    ))
}

/// The receiver said HELLO_OK: check it agreed to our mode and sent nothing
/// after it; returns the stream and the agreed frame limit.
fn accept_hello_ok(
    cfg: &ConnConfig,
    framed: tokio_util::codec::Framed<BoxIo, WireCodec>,
    ok: &HelloOk,
) -> Result<(BoxIo, usize), ShipError> {
    if ok.mode != cfg.ship.mode {
        return Err(ShipError::Refused(format!(
            "asked for {:?} mode, the receiver answers {:?}",
            cfg.ship.mode, ok.mode
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
        (ok.max_frame as usize).min(crate::wire::DEFAULT_MAX_FRAME),
    ))
}
