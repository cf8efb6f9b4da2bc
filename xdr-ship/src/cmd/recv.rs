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
    server::{self, metrics::RecvMetrics, ServerConfig, ServerStats},
    store::{Durability, Store, StoreConfig},
    tls,
};

/// Receive writes and apply them, last-writer-wins, to a store.
///
/// Every setting may come from `--config FILE` (TOML); a flag given on the
/// command line overrides the file, and what neither sets takes the
/// default shown here.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("where").args(["store", "memory"])))]
pub struct Args {
    /// Read the settings from this TOML file (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (loopback unless told otherwise) [default: 127.0.0.1:3000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of the durable store.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Keep records in memory only.
    #[arg(long)]
    memory: bool,
    /// When to acknowledge: after an fdatasync (group commit) or once in
    /// the OS [default: sync].
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// SO_RCVBUF of every connection (the seed's receiver used 15 MiB) [default: 15MiB].
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    rcvbuf: Option<usize>,
    /// Connections served at once [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Requests one connection may have unanswered [default: 65536].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// Time a new connection has to say HELLO (TLS handshake included) [default: 10s].
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    handshake_timeout: Option<Duration>,
    /// Close a connection that sends no complete frame for this long while
    /// none of its requests is being processed (also ends half-sent frames)
    /// [default: 5m].
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,
    /// Wait this long before applying each request (makes the destination
    /// the bottleneck on purpose).
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    apply_delay: Option<Duration>,
    /// Time between status lines [default: 1s].
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    interval: Option<Duration>,
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
    #[arg(long, value_name = "FILE")]
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
    /// Serve Prometheus text at `http://ADDR/metrics` (updated every
    /// --interval).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
const DEFAULT_RCVBUF: usize = 15 << 20;
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const DEFAULT_MAX_IN_FLIGHT: u32 = 65_536;
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The settings in force: each flag, else the file's value, else the default.
#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    store: Option<PathBuf>,
    durability: Durability,
    rcvbuf: usize,
    max_connections: usize,
    max_in_flight: u32,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    apply_delay: Option<Duration>,
    interval: Duration,
    json: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
    insecure: bool,
    metrics: Option<SocketAddr>,
    listen_resp: Option<SocketAddr>,
}

impl Args {
    /// Flags over the `--config` file over the defaults.
    fn settings(self) -> anyhow::Result<Settings> {
        let f = match &self.config {
            Some(path) => server::config::load(path)?,
            None => server::config::RecvFileConfig::default(),
        };
        // A flag for the store or memory overrides both of the file's.
        let (store, memory) = if self.store.is_some() || self.memory {
            (self.store, self.memory)
        } else {
            (f.store, f.memory.unwrap_or(false))
        };
        anyhow::ensure!(
            store.is_some() || memory,
            "recv needs a store: give --store PATH or --memory (or store/memory in --config)"
        );
        // TLS files come as a set: flags replace the file's set.
        let (tls_cert, tls_key, tls_ca) = if self.tls_cert.is_some() {
            (self.tls_cert, self.tls_key, self.tls_ca.or(f.tls_ca))
        } else {
            (f.tls_cert, f.tls_key, self.tls_ca.or(f.tls_ca))
        };
        anyhow::ensure!(
            tls_ca.is_none() || tls_cert.is_some(),
            "a client CA (--tls-ca) needs a certificate and key (--tls-cert, --tls-key)"
        );
        Ok(Settings {
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default")),
            store,
            durability: self.durability.or(f.durability).unwrap_or_default(),
            rcvbuf: self.rcvbuf.or(f.rcvbuf).unwrap_or(DEFAULT_RCVBUF),
            max_connections: self
                .max_connections
                .or(f.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_in_flight: self
                .max_in_flight
                .or(f.max_in_flight)
                .unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            handshake_timeout: self
                .handshake_timeout
                .or(f.handshake_timeout)
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            idle_timeout: self
                .idle_timeout
                .or(f.idle_timeout)
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
            apply_delay: self.apply_delay,
            interval: self.interval.or(f.interval).unwrap_or(DEFAULT_INTERVAL),
            json: self.json || f.json.unwrap_or(false),
            tls_cert,
            tls_key,
            tls_ca,
            token_file: self.token_file.or(f.token_file),
            insecure: self.insecure || f.insecure.unwrap_or(false),
            metrics: self.metrics.or(f.metrics),
            listen_resp: self.listen_resp.or(f.listen_resp),
        })
    }
}

impl Settings {
    /// The durable store at `store`, or one in memory.
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

    /// The server's limits, TLS and token.
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
    let resp_limits = args.resp_limits.clone();
    let args = args.settings()?;
    let listen_resp = args.listen_resp;
    let store = args.open_store()?;
    let cfg = args.server_config()?;
    let (listener, rcvbuf) = server::bind(args.listen, &cfg)?;
    print_listening(&args, &listener, rcvbuf, &cfg)?;

    let stats = Arc::new(ServerStats::default());
    let shutdown = CancellationToken::new();
    let metrics = serve_metrics(args.metrics, &shutdown).await?;
    let server = tokio::spawn(server::serve(
        listener,
        store.clone(),
        cfg,
        stats.clone(),
        shutdown.clone(),
    ));
    let resp = match listen_resp {
        Some(addr) => Some(start_resp(addr, &args, resp_limits, &store, &shutdown)?),
        None => None,
    };
    let watched = Watched {
        stats: &stats,
        store: &store,
        metrics: metrics.as_ref(),
    };
    print_status_until_ctrl_c(&watched, args.interval, args.json).await?;
    shutdown.cancel();
    server.await.context("server task")??;
    if let Some(task) = resp {
        task.await.context("RESP task")??;
    }
    store.close().await.context("closing the store")?;
    outln!("recv: stopped");
    Ok(())
}

/// The listening line (address, who may write, the store, the receive
/// buffer) and the buffer's warning, if any.
fn print_listening(
    args: &Settings,
    listener: &tokio::net::TcpListener,
    rcvbuf: Option<xdr_ship::net::BufferReport>,
    cfg: &ServerConfig,
) -> anyhow::Result<()> {
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
    outln!(
        "recv: listening on {} ({}), {kind}{buf}",
        listener.local_addr()?,
        security(cfg)
    );
    if let Some(w) = rcvbuf.and_then(|r| r.warning) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `--metrics ADDR`: the exporter, serving until `shutdown`.
async fn serve_metrics(
    addr: Option<SocketAddr>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<RecvMetrics>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let m = RecvMetrics::new();
    let (local, _task) =
        xdr_ship::live::prometheus::serve(addr, m.clone(), shutdown.clone()).await?;
    eprintln!("metrics: http://{local}/metrics");
    Ok(Some(m))
}

/// `--listen-resp ADDR`: the store's read-only RESP door, until `shutdown`.
fn start_resp(
    addr: SocketAddr,
    args: &Settings,
    limits: xdr_ship::resp::RespLimitArgs,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let cfg = limits.apply(xdr_ship::resp::RespConfig {
        token: match &args.token_file {
            Some(path) => Some(tls::Token::new(&tls::read_token_file(path)?)),
            None => None,
        },
        ..Default::default()
    });
    let (bound, task) =
        xdr_ship::resp::read::start(addr, store.clone(), cfg, args.insecure, shutdown.clone())?;
    outln!("recv: RESP read-only on {bound}");
    Ok(task)
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

/// What the status loop reads, and the exporter it feeds.
struct Watched<'a> {
    stats: &'a ServerStats,
    store: &'a Store,
    metrics: Option<&'a RecvMetrics>,
}

/// A status line (or JSON object) every `interval` until Ctrl-C; the
/// exporter's series advance at the same tick.
async fn print_status_until_ctrl_c(
    watched: &Watched<'_>,
    interval: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let stats = watched.stats;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let (mut last_applied, mut last_lost, mut last_at) = (0u64, 0u64, Instant::now());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if let Some(m) = watched.metrics {
            m.update(stats, watched.store);
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
            outln!("{}", serde_json::to_string(&line)?);
        } else {
            outln!(
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
