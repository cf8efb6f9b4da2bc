//! The Redis protocol (RESP2, and RESP3 after `HELLO 3`) at the source
//! node's front door: any Redis client or tool (`redis-cli`,
//! `redis-benchmark`, every language's client) can write into the source
//! log without learning xdr-ship's own protocol.
//!
//! Why Redis's protocol: its pipelining with in-order replies is the same
//! scheme the shipper uses on the long link, and its clients and tools are
//! real peers that no one here wrote. Requests are decoded by the
//! `redis-protocol` crate (not a parser of our own); [`command`] turns them
//! into typed commands, [`conn`] runs one connection (limits, the commands
//! every door shares), [`ingest`] serves the writes against the log, with
//! `+OK` sent only once a write is durable (group commit, as the native
//! ingest port), and [`read`] serves the destination's store read-only
//! (`recv --listen-resp`).
pub mod command;
pub mod conn;
pub mod ingest;
pub mod read;

use std::{sync::atomic::AtomicU64, time::Duration};

/// Live counters of the RESP door.
#[derive(Debug, Default)]
pub struct RespStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused past the limit.
    pub refused: AtomicU64,
    /// Writes made durable and acknowledged.
    pub acknowledged: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
}

/// Limits of a RESP door: every buffer and wait is bounded.
#[derive(Clone, Debug)]
pub struct RespConfig {
    /// Connections served at once; more get `-ERR max number of clients
    /// reached` and are closed.
    pub max_connections: usize,
    /// Largest bulk string a request may declare.
    pub max_bulk_bytes: usize,
    /// Most arguments one request may declare.
    pub max_args: usize,
    /// Most bytes buffered for one connection's unanswered requests.
    pub max_buffered_bytes: usize,
    /// Time a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Time a started request has to arrive whole (the slowloris bound).
    pub request_timeout: Duration,
    /// The token `AUTH` (or `HELLO … AUTH`) must present (`None`: none asked).
    pub token: Option<crate::tls::Token>,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_bulk_bytes: 16 << 20,
            max_args: 1 << 20,
            max_buffered_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            token: None,
        }
    }
}

/// The limits an operator may change on the command line (both doors:
/// `ship --listen-resp` and `recv --listen-resp`).
#[derive(clap::Args, Clone, Debug)]
pub struct RespLimitArgs {
    /// Redis clients served at once on the RESP port; more are answered
    /// `-ERR max number of clients reached` and closed (Redis's maxclients).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub resp_max_clients: usize,
    /// Time a started RESP request has to arrive whole before the
    /// connection is closed with `-ERR timeout` (the slowloris bound).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub resp_request_timeout: Duration,
}

impl RespLimitArgs {
    /// `cfg` with these limits.
    pub fn apply(&self, cfg: RespConfig) -> RespConfig {
        RespConfig {
            max_connections: self.resp_max_clients.max(1),
            request_timeout: self.resp_request_timeout,
            ..cfg
        }
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be above zero".into()),
        Err(e) => Err(format!("{e} (a duration such as 10s or 500ms)")),
    }
}

/// Why a RESP door could not run.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Binding the address failed.
    #[error("--listen-resp {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An unauthenticated port beyond loopback.
    #[error("--listen-resp {addr} is not a loopback address and no --ingest-token-file is given: anyone who reaches it could write (add --ingest-insecure to allow it)")]
    Unauthenticated {
        /// The address.
        addr: std::net::SocketAddr,
    },
}
