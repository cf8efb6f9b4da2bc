//! `xdr-ship ship --log DIR …`: the source node. Writes come in (the ingest
//! port `--listen`, JSON lines `--from`, or `--generate`), are appended to
//! the durable source log and acknowledged once on disk; every destination
//! (`--to`, repeatable, or `--config FILE`: the TOML format and its rules
//! are in `xdr_ship::destinations`) ships from the log with its own
//! connections, window, checkpoint and status lines.
//!
//! Why one `ship::run` per destination over its own `LogSource`: a slow or
//! unreachable destination then backs up only into the log (up to its disk
//! budget), never into the others' pipelines.
//!
//! With `--generate`, generated records go through the log too (so a
//! `--log` run measures the whole source node). The run ends when its input
//! ends and every destination has shipped it all; with `--listen` it runs
//! until Ctrl-C.
//!
//! The source node's flags and how they become the ingest server and the
//! destinations are in `ingest/flags.rs`; this file is the run.
mod flags;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    destinations::Destination,
    live::{KernelOptions, KernelSampler, SharedKernel},
    metrics::prometheus::PromMetrics,
    resp::ingest as resp_ingest,
    server::{self, ServerStats},
    ship::{self, GenerateSpec, Generator, ShipConfig, ShipError, ShipSummary, Source},
    srclog::{
        ingest,
        site::{LocalSink, ShippedSink, SiteStats},
        Log, LogConfig, LogSource,
    },
    store::{Store, StoreConfig},
    tui::Update,
};

use flags::destinations;
pub use flags::LogArgs;

use super::{
    live::{self, LiveArgs, Print, Screen},
    shipping::{print_banner, print_summary as print_run_summary},
};

/// How the run is shown: status lines or JSON, the live screen, and the
/// live view's flags (verdict, metrics, recording).
pub struct Shown<'a> {
    /// JSON lines instead of text.
    pub json: bool,
    /// The live screen (one destination only).
    pub tui: bool,
    /// Verdict, metrics and recording flags.
    pub live: &'a LiveArgs,
}

/// What `ship` hands the source node.
pub struct SourceNode<'a> {
    /// Every destination's configuration before `--config` overrides it.
    pub base: ShipConfig,
    /// The `--to` addresses.
    pub to: &'a [String],
    /// In-process load, appended to the log.
    pub generate: Option<GenerateSpec>,
    /// Records `generate` stops after.
    pub count: Option<u64>,
    /// The log's flags.
    pub log: &'a LogArgs,
    /// How the run is shown.
    pub shown: Shown<'a>,
}

/// Runs the source node; see the module doc.
pub async fn run(node: SourceNode<'_>) -> anyhow::Result<()> {
    let SourceNode {
        base,
        to,
        generate,
        count,
        log: args,
        shown,
    } = node;
    let dests = destinations(&base, to, args.config.as_deref())?;
    if shown.tui && dests.len() > 1 {
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
    let store = match &args.store {
        Some(path) => Some(
            Store::open(StoreConfig::durable(path.clone()))
                .with_context(|| format!("--store {}", path.display()))?,
        ),
        None => None,
    };
    let (stop, cancel) = super::ctrl_c_tokens();
    let node = Node {
        names: dests.iter().map(|d| d.name.clone()).collect(),
        args,
        dir,
        log,
        store,
        site: Arc::default(),
        stop,
        cancel,
        json: shown.json,
    };
    let prom = live::start_metrics(shown.live, node.cancel.clone()).await?;
    // The live screen, for a single destination.
    let screen = Screen::open(shown.tui, node.stop.clone());
    let outputs = Outputs {
        live: shown.live,
        print: Print::choose(shown.tui, shown.json),
        prom,
        screen: screen.as_ref().map(Screen::sender),
    };
    // Destinations first: their checkpoints hold the log from now on.
    let shipping = node.spawn_destinations(dests, outputs).await?;
    let inputs = node.spawn_inputs(base.source_id, generate, count)?;
    // The screen (if any) owns the terminal until it is quit; summaries
    // are printed after it has restored the terminal.
    if let Some(screen) = screen {
        screen.finish().await?;
    }
    node.finish(shipping, inputs).await
}

/// Where every destination's intervals go.
struct Outputs<'a> {
    live: &'a LiveArgs,
    print: Print,
    prom: Option<PromMetrics>,
    screen: Option<tokio::sync::mpsc::Sender<Update>>,
}

/// The destinations' tasks, and the hot-key counters their summaries read.
struct Shipping {
    tasks: JoinSet<(String, Result<ShipSummary, ShipError>)>,
    hot_keys: Vec<(String, Arc<AtomicU64>)>,
}

/// The inputs' task (it seals the log once they are all done) and the
/// ingest port's counters.
struct Inputs {
    sealer: JoinHandle<anyhow::Result<()>>,
    ingest: Option<Arc<ServerStats>>,
}

/// One source-node run: the log and the tokens its tasks share.
struct Node<'a> {
    /// The destinations' names (the RESP port's INFO shows them).
    names: Vec<String>,
    args: &'a LogArgs,
    dir: &'a Path,
    log: Log,
    /// `--store`: this node is a site (`srclog::site`).
    store: Option<Store>,
    site: Arc<SiteStats>,
    stop: CancellationToken,
    cancel: CancellationToken,
    json: bool,
}

impl Node<'_> {
    /// One `ship::run` per destination over its own `LogSource`.
    async fn spawn_destinations(
        &self,
        dests: Vec<Destination>,
        outputs: Outputs<'_>,
    ) -> anyhow::Result<Shipping> {
        let mut tasks = JoinSet::new();
        let mut hot_keys = Vec::new();
        let mut ports = Vec::new();
        for d in &dests {
            ports.push(ship::resolve(&d.config.to).await.ok().map(|a| a.port()));
        }
        let kernel = shared_kernel(outputs.live, &ports);
        for (Destination { name, config: cfg }, port) in dests.into_iter().zip(ports) {
            let mut source = LogSource::open(&self.log, &name)
                .with_context(|| format!("destination `{name}` on --log {}", self.dir.display()))?;
            let hot = Arc::new(AtomicU64::new(0));
            if self.args.coalesce_hot_keys {
                source = source.with_coalescing(hot.clone());
            }
            hot_keys.push((name.clone(), hot));
            if !self.json {
                print_banner(Some(&name), &cfg, &source.describe());
            }
            let (stop, cancel) = (self.stop.clone(), self.cancel.clone());
            let mut out = live::Live::with(
                outputs.live,
                port,
                Some(kernel.clone()),
                outputs.print,
                outputs.prom.clone(),
                Some(&name),
            )?;
            let screen = outputs.screen.clone();
            tasks.spawn(async move {
                let on_snapshot = move |snap: &_| {
                    let (sample, diagnosis) = out.on_snapshot(snap);
                    if let Some(tx) = &screen {
                        let _ = tx.try_send(Update { sample, diagnosis });
                    }
                };
                let summary = ship::run(cfg, source, on_snapshot, stop, cancel).await;
                (name, summary)
            });
        }
        Ok(Shipping { tasks, hot_keys })
    }

    /// Starts the inputs. The log is sealed once they are all done (and,
    /// with --listen, once Ctrl-C stops the port), so the destinations end
    /// after shipping everything.
    fn spawn_inputs(
        &self,
        source_id: u64,
        generate: Option<GenerateSpec>,
        count: Option<u64>,
    ) -> anyhow::Result<Inputs> {
        let mut feeders: JoinSet<anyhow::Result<(&'static str, u64)>> = JoinSet::new();
        let ingest = match self.args.listen {
            Some(addr) => {
                let sink: Arc<dyn server::Sink> = match &self.store {
                    Some(store) => Arc::new(LocalSink::new(
                        self.log.clone(),
                        store.clone(),
                        self.site.clone(),
                    )),
                    None => Arc::new(ingest::LogSink(self.log.clone())),
                };
                Some(self.spawn_port(addr, "ingest", sink, &mut feeders)?)
            }
            None => None,
        };
        if let (Some(addr), Some(store)) = (self.args.receive, &self.store) {
            let forward = self.args.forward.then(|| self.log.clone());
            let sink = ShippedSink::new(store.clone(), forward, self.site.clone());
            self.spawn_port(addr, "receive", sink.into_sink(), &mut feeders)?;
        }
        if let Some(addr) = self.args.listen_resp {
            self.spawn_resp_port(addr, source_id, &mut feeders)?;
        }
        if let Some(from) = self.args.from.clone() {
            let (log, stop) = (self.log.clone(), self.stop.clone());
            feeders.spawn(async move {
                let n = feed_json_lines(&log, &from, source_id, &stop).await?;
                Ok(("from", n))
            });
        }
        if let Some(spec) = generate {
            let (log, stop) = (self.log.clone(), self.stop.clone());
            let generator = Generator::new(spec, source_id, count);
            feeders.spawn(async move {
                let n = ingest::feed_generator(&log, generator, &stop).await?;
                Ok(("generate", n))
            });
        }
        let log = self.log.clone();
        let sealer = tokio::spawn(async move {
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
        });
        Ok(Inputs { sealer, ingest })
    }

    /// The ingest port (`--listen`): applications' writes into the log
    /// (and a site's store); or a site's receiving port (`--receive`).
    fn spawn_port(
        &self,
        addr: SocketAddr,
        what: &'static str,
        sink: Arc<dyn server::Sink>,
        feeders: &mut JoinSet<anyhow::Result<(&'static str, u64)>>,
    ) -> anyhow::Result<Arc<ServerStats>> {
        let cfg = self.args.ingest_server()?;
        let (listener, _) = server::bind(addr, &cfg).map_err(|e| match e {
            server::ServerError::Unauthenticated { .. } => anyhow::anyhow!(
                "{e}\n(on the ingest port the flags are --ingest-token-file, --ingest-tls-ca or --ingest-insecure)"
            ),
            e => e.into(),
        })?;
        if !self.json {
            outln!(
                "ship: {what} listening on {} into log {}{}",
                listener.local_addr()?,
                self.dir.display(),
                self.args
                    .store
                    .as_ref()
                    .map(|s| format!(" and store {}", s.display()))
                    .unwrap_or_default()
            );
        }
        let stats = Arc::new(ServerStats::default());
        let stop = self.stop.clone();
        let served = stats.clone();
        feeders.spawn(async move {
            server::serve(listener, sink, cfg, served.clone(), stop).await?;
            Ok((what, served.applied.load(Ordering::Relaxed)))
        });
        Ok(stats)
    }

    /// The RESP port (`--listen-resp`): any Redis client's writes into the
    /// log. It runs until Ctrl-C (the log is sealed once the inputs end).
    fn spawn_resp_port(
        &self,
        addr: SocketAddr,
        source_id: u64,
        feeders: &mut JoinSet<anyhow::Result<(&'static str, u64)>>,
    ) -> anyhow::Result<()> {
        let cfg = self.args.resp_limits.apply(xdr_ship::resp::RespConfig {
            token: match &self.args.ingest_token_file {
                Some(path) => Some(xdr_ship::tls::Token::new(&xdr_ship::tls::read_token_file(
                    path,
                )?)),
                None => None,
            },
            ..Default::default()
        });
        let listener = resp_ingest::bind(addr, &cfg, self.args.ingest_insecure)?;
        if !self.json {
            outln!(
                "ship: RESP listening on {} into log {}",
                listener.local_addr()?,
                self.dir.display()
            );
        }
        let door = resp_ingest::LogDoor::new(self.log.clone(), source_id, self.names.clone());
        let (stop, stats) = (self.stop.clone(), door.stats.clone());
        feeders.spawn(async move {
            resp_ingest::serve(listener, door, cfg, stop).await?;
            Ok(("resp", stats.acknowledged.load(Ordering::Relaxed)))
        });
        Ok(())
    }

    /// Waits for every destination, then the inputs; prints the summaries
    /// and the log's state.
    async fn finish(mut self, mut shipping: Shipping, inputs: Inputs) -> anyhow::Result<()> {
        let mut failed = None;
        while let Some(done) = shipping.tasks.join_next().await {
            let (name, summary) = done.context("destination task")?;
            match summary {
                Ok(s) => print_summary(&name, &s, &shipping.hot_keys, self.json),
                Err(e) => {
                    eprintln!("[{name}] failed: {e}");
                    failed = Some(anyhow::anyhow!("destination `{name}`: {e}"));
                }
            }
        }
        // Every destination has ended: stop the inputs if they still run.
        self.stop.cancel();
        let fed = inputs.sealer.await.context("input task")?;
        self.log.flush_checkpoints()?;
        let stats = self.log.stats();
        self.log.close();
        if let Some(store) = self.store.take() {
            store.close().await.context("closing --store")?;
            let site = &self.site;
            outln!(
                "{}",
                serde_json::json!({ "site": {
                    "local": site.local.load(Ordering::Relaxed),
                    "shipped_in": site.shipped_in.load(Ordering::Relaxed),
                    "forwarded": site.forwarded.load(Ordering::Relaxed),
                }})
            );
        }
        if self.json {
            outln!("{}", serde_json::json!({ "log": stats }));
        } else {
            outln!(
                "log: positions {}..{} : {} segments, {} of {} bytes : busy {} : ingest applied {}",
                stats.first_seq,
                stats.next_seq,
                stats.segments,
                stats.used_bytes,
                stats.budget_bytes,
                stats.busy,
                inputs
                    .ingest
                    .map_or(0, |s| s.applied.load(Ordering::Relaxed)),
            );
        }
        fed?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The kernel programs every destination's pipeline reads: loaded once,
/// their port filter covering every destination's port (softirq only when
/// no destination's port is known), so N destinations cost one set of
/// programs and one reader, not N.
fn shared_kernel(live: &LiveArgs, ports: &[Option<u16>]) -> SharedKernel {
    let mut tcp_ports: Vec<u16> = ports.iter().flatten().copied().collect();
    tcp_ports.sort_unstable();
    tcp_ports.dedup();
    KernelSampler::open(&KernelOptions {
        no_ebpf: live.no_ebpf,
        tcp_ports: (!tcp_ports.is_empty()).then_some(tcp_ports),
    })
    .shared()
}

/// Appends the JSON lines of `from` (`-`: standard input) to the log.
async fn feed_json_lines(
    log: &Log,
    from: &str,
    source_id: u64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    Ok(if from == "-" {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        ingest::feed_json_lines(log, input, source_id, stop).await?
    } else {
        let file = tokio::fs::File::open(from)
            .await
            .with_context(|| format!("--from {from}"))?;
        let input = tokio::io::BufReader::new(file);
        ingest::feed_json_lines(log, input, source_id, stop).await?
    })
}

fn print_summary(name: &str, s: &ShipSummary, hot: &[(String, Arc<AtomicU64>)], json: bool) {
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
        outln!("{v}");
    } else {
        print!("[{name}] ");
        print_run_summary(s, false);
        if hot_keys > 0 {
            outln!("[{name}] hot_keys {hot_keys}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use xdr_ship::{ship::WindowSetting, wire::OrderingMode};

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
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1_3000", "dc2", "10.0.0.3_3000"]);
        let dc2 = &d[1].config;
        assert_eq!(dc2.to, "10.0.0.2:3000");
        assert_eq!(dc2.connections, 4);
        assert_eq!(dc2.window, WindowSetting::Fixed(128));
        assert_eq!(dc2.mode, OrderingMode::Unordered);
        assert_eq!(dc2.max_throughput, Some(500));
        assert_eq!(d[2].config.connections, base.connections);
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
