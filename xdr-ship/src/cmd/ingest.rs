//! `xdr-ship ship --log DIR …`: the source node. Writes come in (the ingest
//! port `--listen`, JSON lines `--from`, or `--generate`), are appended to
//! the durable source log and acknowledged once on disk; every destination
//! (`--to`, repeatable, or `--config FILE`) ships from the log with its own
//! connections, window, checkpoint and status lines.
//!
//! Why one `ship::run` per destination over its own `LogSource`: a slow or
//! unreachable destination then backs up only into the log (up to its disk
//! budget), never into the others' pipelines.
//!
//! `--config FILE` (TOML) lists destinations with XDR-like names; any
//! setting left out takes the command-line value:
//!
//! ```toml
//! [[destination]]
//! name = "dc2"                 # checkpoint name; default: from the address
//! address = "10.0.0.2:3000"
//! connections = 16
//! window = "auto"              # or a number of records
//! mode = "unordered"           # or "ordered"
//! max-throughput = 50000       # records/s
//! ```
//!
//! With `--generate`, generated records go through the log too (so a
//! `--log` run measures the whole source node). The run ends when its input
//! ends and every destination has shipped it all; with `--listen` it runs
//! until Ctrl-C.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context};
use tokio::task::JoinSet;
use xdr_ship::{
    server::{self, ServerConfig, ServerStats},
    ship::{self, GenerateSpec, Generator, ShipConfig, Source, WindowSetting},
    srclog::{destination_name, ingest, Log, LogConfig, LogSource},
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
    /// Append JSON-lines writes from FILE (`-`: standard input), one
    /// `{"key": "k", "value": "v" | null, "version": N}` per line; needs --log.
    #[arg(long, value_name = "FILE|-", requires = "log")]
    pub from: Option<String>,
    /// Destinations from a TOML file (`[[destination]]` tables with
    /// address, name, connections, window, mode, max-throughput).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most disk the log may use; ingest answers Busy beyond it.
    #[arg(long, default_value = "4GiB", value_parser = super::parse_size, value_name = "SIZE")]
    pub log_budget: usize,
    /// Size at which a log segment is closed and a new one started.
    #[arg(long, default_value = "64MiB", value_parser = super::parse_size, value_name = "SIZE")]
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
}

impl LogArgs {
    /// Whether the run goes through the log.
    pub fn wanted(&self, destinations: usize) -> bool {
        self.log.is_some() || self.config.is_some() || destinations > 1
    }
}

/// One `[[destination]]` of `--config`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DestinationToml {
    address: String,
    name: Option<String>,
    connections: Option<usize>,
    window: Option<WindowToml>,
    mode: Option<String>,
    max_throughput: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum WindowToml {
    Records(u64),
    Word(String),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigToml {
    destination: Vec<DestinationToml>,
}

/// The destinations: `--to` addresses, then those of `--config`.
fn destinations(
    base: &ShipConfig,
    to: &[String],
    config: Option<&Path>,
) -> anyhow::Result<Vec<(String, ShipConfig)>> {
    let mut out: Vec<(String, ShipConfig)> = to
        .iter()
        .map(|addr| {
            let mut c = base.clone();
            c.to = addr.clone();
            (destination_name(addr), c)
        })
        .collect();
    if let Some(path) = config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read", path.display()))?;
        let parsed: ConfigToml = toml::from_str(&text).with_context(|| {
            format!(
                "--config {}: expected [[destination]] tables with address, and optionally \
                 name, connections, window, mode, max-throughput",
                path.display()
            )
        })?;
        for d in parsed.destination {
            let mut c = base.clone();
            c.to = d.address.clone();
            if let Some(n) = d.connections {
                if n == 0 {
                    bail!(
                        "--config {}: {}: connections must be ≥ 1",
                        path.display(),
                        d.address
                    );
                }
                c.connections = n;
            }
            match d.window {
                None => {}
                Some(WindowToml::Records(w)) => {
                    c.window = format!("{w}").parse().map_err(|e: String| {
                        anyhow::anyhow!("--config {}: {}: window {e}", path.display(), d.address)
                    })?
                }
                Some(WindowToml::Word(w)) => {
                    c.window = w.parse().map_err(|e: String| {
                        anyhow::anyhow!("--config {}: {}: window {e}", path.display(), d.address)
                    })?
                }
            }
            if let Some(m) = &d.mode {
                c.mode = super::ship::parse_mode(m).map_err(|e| {
                    anyhow::anyhow!("--config {}: {}: mode {e}", path.display(), d.address)
                })?;
            }
            if d.max_throughput.is_some() {
                c.max_throughput = d.max_throughput;
            }
            let name = d.name.unwrap_or_else(|| destination_name(&d.address));
            out.push((name, c));
        }
    }
    if out.is_empty() {
        bail!("no destination: give --to ADDR (repeatable) or --config FILE");
    }
    for (i, (name, _)) in out.iter().enumerate() {
        if out[..i].iter().any(|(n, _)| n == name) {
            bail!("destination `{name}` is given twice (each keeps its own checkpoint)");
        }
    }
    Ok(out)
}

/// Runs the source node; see the module doc.
/// How the run is shown: status lines or JSON, the live screen, and the
/// live view's flags (verdict, metrics, recording).
pub struct Shown<'a> {
    /// JSON lines instead of text.
    pub json: bool,
    /// The live screen (one destination only).
    pub tui: bool,
    /// Verdict, metrics and recording flags.
    pub live: &'a super::live::LiveArgs,
}

pub async fn run(
    base: ShipConfig,
    to: &[String],
    generate: Option<GenerateSpec>,
    count: Option<u64>,
    args: LogArgs,
    shown: Shown<'_>,
) -> anyhow::Result<()> {
    let Shown { json, tui, live } = shown;
    let dests = destinations(&base, to, args.config.as_deref())?;
    if tui && dests.len() > 1 {
        bail!(
            "--tui follows one destination and {} are configured: give one --to, or use --metrics / --json for several",
            dests.len()
        );
    }
    let Some(dir) = &args.log else {
        bail!(
            "{} destinations need --log DIR: each ships from the durable log with its own checkpoint",
            dests.len()
        );
    };
    let mut log_cfg = LogConfig::new(dir);
    log_cfg.budget_bytes = args.log_budget as u64;
    log_cfg.segment_bytes = args.log_segment as u64;
    let log = Log::open(log_cfg).with_context(|| format!("--log {}", dir.display()))?;
    let (stop, cancel) = super::ctrl_c_tokens();
    let prom = super::live::start_metrics(live, cancel.clone()).await?;
    let print = super::live::Print::choose(tui, json);
    // The live screen, for a single destination.
    let screen = super::live::Screen::open(tui, stop.clone());
    let screen_tx = screen.as_ref().map(super::live::Screen::sender);

    // Destinations first: their checkpoints hold the log from now on.
    let mut ships = JoinSet::new();
    let mut hot_counters = Vec::new();
    for (name, cfg) in dests {
        let mut source = LogSource::open(&log, &name)
            .with_context(|| format!("destination `{name}` on --log {}", dir.display()))?;
        let hot = Arc::new(AtomicU64::new(0));
        if args.coalesce_hot_keys {
            source = source.with_coalescing(hot.clone());
        }
        hot_counters.push((name.clone(), hot));
        if !json {
            println!(
                "ship: [{name}] to {} : {} connections : window {} : {:?} : {}",
                cfg.to,
                cfg.connections,
                match cfg.window {
                    WindowSetting::Auto => "auto".to_owned(),
                    WindowSetting::Fixed(w) => w.to_string(),
                },
                cfg.mode,
                source.describe(),
            );
        }
        let (stop, cancel) = (stop.clone(), cancel.clone());
        let port = ship::resolve(&cfg.to).await.ok().map(|a| a.port());
        let mut out = super::live::Live::with(live, port, print, prom.clone(), Some(&name))?;
        let screen_tx = screen_tx.clone();
        ships.spawn(async move {
            let summary = ship::run(
                cfg,
                source,
                move |snap| {
                    let (sample, diagnosis) = out.on_snapshot(snap);
                    if let Some(tx) = &screen_tx {
                        let _ = tx.try_send(xdr_ship::tui::Update { sample, diagnosis });
                    }
                },
                stop,
                cancel,
            )
            .await;
            (name, summary)
        });
    }

    // Inputs. The log is sealed once they are all done (and, with
    // --listen, once Ctrl-C stops the port), so the destinations end after
    // shipping everything.
    let mut feeders: JoinSet<anyhow::Result<(&'static str, u64)>> = JoinSet::new();
    let mut ingest_stats = None;
    if let Some(addr) = args.listen {
        // The same rules as `recv`: TLS and a token if asked for, and no
        // unauthenticated port beyond loopback unless --ingest-insecure.
        let cfg = ServerConfig {
            rcvbuf: None,
            tls: xdr_ship::tls::server_from_flags(
                args.ingest_tls_cert.as_deref(),
                args.ingest_tls_key.as_deref(),
                args.ingest_tls_ca.as_deref(),
            )
            .context("setting up TLS on the ingest port")?,
            token: match &args.ingest_token_file {
                Some(path) => Some(xdr_ship::tls::Token::new(&xdr_ship::tls::read_token_file(
                    path,
                )?)),
                None => None,
            },
            insecure: args.ingest_insecure,
            ..ServerConfig::default()
        };
        let (listener, _) = server::bind(addr, &cfg).map_err(|e| match e {
            server::ServerError::Unauthenticated { .. } => anyhow::anyhow!(
                "{e}\n(on the ingest port the flags are --ingest-token-file, --ingest-tls-ca or --ingest-insecure)"
            ),
            e => e.into(),
        })?;
        if !json {
            println!(
                "ship: ingest listening on {} into log {}",
                listener.local_addr()?,
                dir.display()
            );
        }
        let stats = Arc::new(ServerStats::default());
        ingest_stats = Some(stats.clone());
        let (sink, stop) = (ingest::LogSink(log.clone()), stop.clone());
        feeders.spawn(async move {
            server::serve(listener, sink, cfg, stats.clone(), stop).await?;
            Ok(("ingest", stats.applied.load(Ordering::Relaxed)))
        });
    }
    if let Some(from) = args.from.clone() {
        let (log, stop) = (log.clone(), stop.clone());
        let source_id = base.source_id;
        feeders.spawn(async move {
            let n = if from == "-" {
                let input = tokio::io::BufReader::new(tokio::io::stdin());
                ingest::feed_json_lines(&log, input, source_id, &stop).await?
            } else {
                let file = tokio::fs::File::open(&from)
                    .await
                    .with_context(|| format!("--from {from}"))?;
                let input = tokio::io::BufReader::new(file);
                ingest::feed_json_lines(&log, input, source_id, &stop).await?
            };
            Ok(("from", n))
        });
    }
    if let Some(spec) = generate {
        let (log, stop) = (log.clone(), stop.clone());
        let generator = Generator::new(spec, base.source_id, count);
        feeders.spawn(async move {
            let n = ingest::feed_generator(&log, generator, &stop).await?;
            Ok(("generate", n))
        });
    }
    let sealer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut result = Ok(());
            while let Some(done) = feeders.join_next().await {
                match done.context("input task")? {
                    Ok((what, n)) => tracing::info!("{what}: {n} writes appended"),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            log.seal();
            result
        })
    };

    // The screen (if any) owns the terminal until it is quit; summaries
    // are printed after it has restored the terminal.
    drop(screen_tx);
    if let Some(screen) = screen {
        screen.finish().await?;
    }
    let mut failed = None;
    while let Some(done) = ships.join_next().await {
        let (name, summary) = done.context("destination task")?;
        match summary {
            Ok(s) => print_summary(&name, &s, &hot_counters, json),
            Err(e) => {
                eprintln!("[{name}] failed: {e}");
                failed = Some(anyhow::anyhow!("destination `{name}`: {e}"));
            }
        }
    }
    // Every destination has ended: stop the inputs if they still run.
    stop.cancel();
    let fed = sealer.await.context("input task")?;
    log.flush_checkpoints()?;
    let stats = log.stats();
    log.close();
    if json {
        println!("{}", serde_json::json!({ "log": stats }));
    } else {
        println!(
            "log: positions {}..{} : {} segments, {} of {} bytes : busy {} : ingest applied {}",
            stats.first_seq,
            stats.next_seq,
            stats.segments,
            stats.used_bytes,
            stats.budget_bytes,
            stats.busy,
            ingest_stats.map_or(0, |s| s.applied.load(Ordering::Relaxed)),
        );
    }
    fed?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_summary(name: &str, s: &ship::ShipSummary, hot: &[(String, Arc<AtomicU64>)], json: bool) {
    let hot_keys = hot
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, c)| c.load(Ordering::Relaxed));
    if json {
        let v = serde_json::json!({
            "summary": {
                "destination": name,
                "elapsed_s": s.elapsed.as_secs_f64(),
                "records_per_s": s.records_per_s(),
                "counters": s.counters,
                "unanswered": s.unanswered,
                "hot_keys": hot_keys,
            }
        });
        println!("{v}");
    } else {
        print!("[{name}] ");
        super::ship::print_summary(s, false);
        if hot_keys > 0 {
            println!("[{name}] hot_keys {hot_keys}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdr_ship::wire::OrderingMode;

    fn write_config(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "xdr-ingest-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn config_destinations_override_the_command_line() {
        let p = write_config(
            "[[destination]]\naddress = \"10.0.0.2:3000\"\nname = \"dc2\"\nconnections = 4\n\
             window = 128\nmode = \"unordered\"\nmax-throughput = 500\n\n\
             [[destination]]\naddress = \"10.0.0.3:3000\"\nwindow = \"auto\"\n",
        );
        let base = ShipConfig::new("");
        let d = destinations(&base, &["127.0.0.1:3000".into()], Some(&p)).unwrap();
        std::fs::remove_file(&p).unwrap();
        let names: Vec<&str> = d.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["127.0.0.1_3000", "dc2", "10.0.0.3_3000"]);
        let dc2 = &d[1].1;
        assert_eq!(dc2.to, "10.0.0.2:3000");
        assert_eq!(dc2.connections, 4);
        assert_eq!(dc2.window, WindowSetting::Fixed(128));
        assert_eq!(dc2.mode, OrderingMode::Unordered);
        assert_eq!(dc2.max_throughput, Some(500));
        assert_eq!(d[2].1.connections, base.connections);
    }

    #[test]
    fn a_bad_config_names_the_file_and_the_accepted_form() {
        let p = write_config("[[destination]]\naddress = \"x:1\"\nspeed = 3\n");
        let err = destinations(&ShipConfig::new(""), &[], Some(&p)).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("--config") && text.contains("speed"),
            "{text}"
        );
    }

    #[test]
    fn a_destination_given_twice_is_refused() {
        let to = ["127.0.0.1:3000".to_owned(), "127.0.0.1:3000".to_owned()];
        let err = destinations(&ShipConfig::new(""), &to, None).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
