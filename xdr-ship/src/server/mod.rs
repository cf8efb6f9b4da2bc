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
//!
//! Layout: [`listen`] binds and accepts (TLS first where configured),
//! [`session`] serves one connection (handshake, requests, answers),
//! [`close`] says GOODBYE and closes without an RST, [`sink`] is where
//! writes go.
use std::{net::SocketAddr, sync::atomic::AtomicU64, time::Duration};

use crate::wire::DEFAULT_MAX_FRAME;

mod close;
pub mod config;
mod listen;
pub mod metrics;
mod session;
pub mod sink;

pub use listen::{bind, serve};
pub use session::serve_stream;
pub use sink::{Applied, Sink};

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
