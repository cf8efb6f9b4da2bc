//! The source node's flags (`ship --log …`): the log, its ingest port and
//! its security, the destinations file, and how they become the ingest
//! server's configuration and the list of destinations.
//!
//! Why a file of its own: the flags are the source node's interface and
//! change on their own; `ingest.rs` then holds only the run.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use xdr_ship::{
    destinations::{self, Destination, DestinationsError},
    server::ServerConfig,
    ship::ShipConfig,
};

/// The source node's flags (with `ship`).
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Durable source log: writes are appended here, acknowledged once on
    /// disk, and shipped from here to every destination.
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// Accept writes from applications on ADDR (the protocol `xdr-ship load`
    /// speaks); needs --log.
    #[arg(long, value_name = "ADDR", requires = "log")]
    pub listen: Option<SocketAddr>,
    /// Accept writes from any Redis client on ADDR (RESP2/RESP3: SET,
    /// MSET, DEL, …; `AUTH` carries --ingest-token-file's token); needs --log.
    #[arg(long, value_name = "ADDR", requires = "log")]
    pub listen_resp: Option<SocketAddr>,
    /// Limits of the RESP port.
    #[command(flatten)]
    pub resp_limits: xdr_ship::resp::RespLimitArgs,
    /// Append JSON-lines writes from FILE (`-`: standard input), one
    /// `{"key": "k", "value": "v" | null, "version": N}` per line; needs --log.
    #[arg(long, value_name = "FILE|-", requires = "log")]
    pub from: Option<String>,
    /// Destinations from a TOML file (`[[destination]]` tables with
    /// address, name, connections, window, mode, max-throughput).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most disk the log may use; ingest answers Busy beyond it.
    #[arg(long, default_value = "4GiB", value_parser = super::super::parse_size, value_name = "SIZE")]
    pub log_budget: usize,
    /// Size at which a log segment is closed and a new one started.
    #[arg(long, default_value = "64MiB", value_parser = super::super::parse_size, value_name = "SIZE")]
    pub log_segment: usize,
    /// Keep records a destination refuses for good (too large, bad
    /// request) in FILE, one JSON object per line with the reason; they
    /// count as `abandoned`.
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,
    /// Ship only the newest version of a key among the records queued
    /// (the others count as hot_keys).
    #[arg(long)]
    pub coalesce_hot_keys: bool,
    /// Serve the ingest port with TLS 1.3, this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "ingest_tls_key")]
    pub ingest_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --ingest-tls-cert.
    #[arg(long, value_name = "FILE", requires = "ingest_tls_cert")]
    pub ingest_tls_key: Option<PathBuf>,
    /// Require application certificates chaining to this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "ingest_tls_cert")]
    pub ingest_tls_ca: Option<PathBuf>,
    /// Require this pre-shared token (the file's content) in every HELLO
    /// on the ingest port.
    #[arg(long, value_name = "FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Allow a non-loopback --listen without --ingest-token-file or
    /// --ingest-tls-ca: anyone who reaches the port can write.
    #[arg(long)]
    pub ingest_insecure: bool,
    /// Run as a site of an active-active pair (`srclog::site`): the
    /// site's readable store; --listen's writes go into the log and here.
    #[arg(long, value_name = "DIR", requires = "listen", conflicts_with_all = ["from", "listen_resp"])]
    pub store: Option<PathBuf>,
    /// With --store: take the other sites' shipped writes on ADDR (same
    /// security flags as --listen) and apply them to --store only.
    #[arg(long, value_name = "ADDR", requires = "store")]
    pub receive: Option<SocketAddr>,
    /// With --receive: append the shipped writes the store applied to the
    /// log, so they ship on (a chain A → B → C). Off, as in XDR: writes
    /// that arrived by shipping are not shipped again.
    #[arg(long, requires = "receive")]
    pub forward: bool,
}

impl LogArgs {
    /// Whether the run goes through the log.
    pub fn wanted(&self, destinations: usize) -> bool {
        self.log.is_some() || self.config.is_some() || destinations > 1
    }

    /// The ingest port's server: the same rules as `recv` (TLS and a token
    /// if asked for, and no unauthenticated port beyond loopback unless
    /// --ingest-insecure).
    pub(super) fn ingest_server(&self) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            rcvbuf: None,
            tls: xdr_ship::tls::server_from_flags(
                self.ingest_tls_cert.as_deref(),
                self.ingest_tls_key.as_deref(),
                self.ingest_tls_ca.as_deref(),
            )
            .context("setting up TLS on the ingest port")?,
            token: match &self.ingest_token_file {
                Some(path) => Some(xdr_ship::tls::Token::new(&xdr_ship::tls::read_token_file(
                    path,
                )?)),
                None => None,
            },
            insecure: self.ingest_insecure,
            ..ServerConfig::default()
        })
    }
}

/// The destinations: `--to` addresses, then those of `--config`.
pub(super) fn destinations(
    base: &ShipConfig,
    to: &[String],
    config: Option<&Path>,
) -> anyhow::Result<Vec<Destination>> {
    destinations::resolve(base, to, config).map_err(|e| match e {
        DestinationsError::File(_) => anyhow::anyhow!("--config {e}"),
        e => e.into(),
    })
}
