//! `xdr-ship recv`: the destination.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::{self, ServerConfig, ServerStats},
    store::{Durability, Store, StoreConfig},
    tls,
};

/// Receive writes and apply them, last-writer-wins, to a store.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["store", "memory"])))]
pub struct Args {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory of the durable store.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Keep records in memory only.
    #[arg(long)]
    memory: bool,
    /// When to acknowledge: after an fdatasync (group commit) or once in the OS.
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    durability: Durability,
    /// SO_RCVBUF of every connection (the seed's receiver used 15 MiB).
    #[arg(long, default_value = "15MiB", value_parser = super::parse_size, value_name = "SIZE")]
    rcvbuf: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Requests one connection may have unanswered.
    #[arg(long, default_value_t = 65_536, value_name = "N")]
    max_in_flight: u32,
    /// Time a new connection has to say HELLO (TLS handshake included).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    handshake_timeout: Duration,
    /// Close a connection that sends no complete frame for this long while
    /// none of its requests is being processed (also ends half-sent frames).
    #[arg(long, default_value = "5m", value_parser = super::parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,
    /// Wait this long before applying each request (makes the destination
    /// the bottleneck on purpose).
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    apply_delay: Option<Duration>,
    /// Time between status lines.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration, value_name = "DURATION")]
    interval: Duration,
    /// Status lines as JSON.
    #[arg(long)]
    json: bool,
    /// Serve TLS 1.3 with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate chaining to this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Require this pre-shared token (the file's content) in every HELLO.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Allow a non-loopback --listen without --token-file or --tls-ca:
    /// anyone who reaches the port can write.
    #[arg(long)]
    insecure: bool,
    /// Serve the store read-only to any Redis client on ADDR (GET, MGET,
    /// EXISTS, SCAN, DBSIZE, INFO; writes get -READONLY; AUTH carries
    /// --token-file's token).
    #[arg(long, value_name = "ADDR")]
    listen_resp: Option<SocketAddr>,
    /// Limits of the read-only RESP port.
    #[command(flatten)]
    resp_limits: xdr_ship::resp::RespLimitArgs,
}

impl Args {
    /// The durable store at `--store`, or one in memory.
    fn open_store(&self) -> anyhow::Result<Store> {
        Ok(match &self.store {
            Some(path) => {
                let mut cfg = StoreConfig::durable(path.clone());
                cfg.durability = self.durability;
                Store::open(cfg)
                    .with_context(|| format!("opening the store at {}", path.display()))?
            }
            None => Store::memory(),
        })
    }

    /// The server's limits, TLS and token from the flags.
    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            rcvbuf: Some(self.rcvbuf),
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            apply_delay: self.apply_delay,
            tls: tls::server_from_flags(
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
                self.tls_ca.as_deref(),
            )
            .context("setting up TLS")?,
            token: match &self.token_file {
                Some(path) => Some(tls::Token::new(&tls::read_token_file(path)?)),
                None => None,
            },
            insecure: self.insecure,
            ..ServerConfig::default()
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let store = args.open_store()?;
    let cfg = args.server_config()?;
    let (listener, rcvbuf) = server::bind(args.listen, &cfg)?;
    let kind = match &args.store {
        Some(p) => format!("store {} (durability {})", p.display(), args.durability),
        None => "memory".to_owned(),
    };
    let buf = rcvbuf.as_ref().map_or_else(String::new, |r| {
        if r.autotuned {
            format!(", SO_RCVBUF autotuned up to {}", r.effective)
        } else {
            format!(", SO_RCVBUF {}", r.effective)
        }
    });
    println!(
        "recv: listening on {} ({}), {kind}{buf}",
        listener.local_addr()?,
        security(&cfg)
    );
    if let Some(w) = rcvbuf.and_then(|r| r.warning) {
        eprintln!("warning: {w}");
    }

    let stats = Arc::new(ServerStats::default());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        store.clone(),
        cfg,
        stats.clone(),
        shutdown.clone(),
    ));
    let resp = match args.listen_resp {
        Some(addr) => {
            let cfg = args.resp_limits.apply(xdr_ship::resp::RespConfig {
                token: match &args.token_file {
                    Some(path) => Some(tls::Token::new(&tls::read_token_file(path)?)),
                    None => None,
                },
                ..Default::default()
            });
            let (bound, task) = xdr_ship::resp::read::start(
                addr,
                store.clone(),
                cfg,
                args.insecure,
                shutdown.clone(),
            )?;
            println!("recv: RESP read-only on {bound}");
            Some(task)
        }
        None => None,
    };
    print_status_until_ctrl_c(&stats, args.interval, args.json).await?;
    shutdown.cancel();
    server.await.context("server task")??;
    if let Some(task) = resp {
        task.await.context("RESP task")??;
    }
    store.close().await.context("closing the store")?;
    println!("recv: stopped");
    Ok(())
}

/// Who may write, in the listening line.
fn security(cfg: &ServerConfig) -> &'static str {
    match (&cfg.tls, &cfg.token) {
        (Some(t), Some(_)) if t.client_auth => "TLS 1.3, client certificates and token required",
        (Some(t), None) if t.client_auth => "TLS 1.3, client certificates required",
        (Some(_), Some(_)) => "TLS 1.3, token required",
        (Some(_), None) => "TLS 1.3, no authentication",
        (None, Some(_)) => "plaintext, token required",
        (None, None) => "plaintext, no authentication",
    }
}

/// A status line (or JSON object) every `interval` until Ctrl-C.
async fn print_status_until_ctrl_c(
    stats: &ServerStats,
    interval: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let (mut last_applied, mut last_lost, mut last_at) = (0u64, 0u64, Instant::now());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = Instant::now();
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let applied = stats.applied.load(Ordering::Relaxed);
        let lost = stats.lost_conflict.load(Ordering::Relaxed);
        let line = RecvLine {
            connections: stats.connections.load(Ordering::Relaxed),
            applied_per_s: (applied - last_applied) as f64 / dt,
            lost_conflict_per_s: (lost - last_lost) as f64 / dt,
            applied,
            lost_conflict: lost,
            failed: stats.failed.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
        };
        (last_applied, last_lost, last_at) = (applied, lost, now);
        if json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!(
                "recv: conns {} : applied {:.0}/s : lost_conflict {:.0}/s : total applied {} : failed {} : rejected {}",
                line.connections, line.applied_per_s, line.lost_conflict_per_s, line.applied, line.failed, line.rejected
            );
        }
    }
}

#[derive(serde::Serialize)]
struct RecvLine {
    connections: u64,
    applied_per_s: f64,
    lost_conflict_per_s: f64,
    applied: u64,
    lost_conflict: u64,
    failed: u64,
    rejected: u64,
}
