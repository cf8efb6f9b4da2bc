//! `xdr-ship ship` (and `xdr-ship tui`): the pipelined shipper, from an
//! in-process generator, or through the source node's log (`--log`,
//! `cmd/ingest.rs`).

use super::{
    ingest::{self, Shown, SourceNode},
    live::{Live, Print, Screen},
    shipping::{print_banner, print_summary, RunBounds, ShippingArgs},
};
use xdr_ship::ship::{self, GenerateSpec, Generator, ShipConfig};
use xdr_ship::tui::Update;

/// Ship records to a destination, many in flight per connection.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Destination `host:port` (a receiver), `redis://HOST:PORT`,
    /// `rediss://…` or `redis-cluster://SEED[,SEED…]`; repeat for several
    /// (they need --log).
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    to: Vec<String>,
    #[command(flatten)]
    shipping: ShippingArgs,
    /// One record in flight per connection: the pre-3.8 baseline.
    #[arg(long)]
    stop_and_wait: bool,
    /// In-process load: RATE,SIZE,KEYS (records/s or `max`, value bytes,
    /// key space); with --log it goes through the log.
    #[arg(long, value_name = "RATE,SIZE,KEYS")]
    generate: Option<GenerateSpec>,
    #[command(flatten)]
    bounds: RunBounds,
    /// Status lines as JSON (one object per line, per-connection detail and
    /// the verdict included).
    #[arg(long)]
    json: bool,
    /// The live screen instead of status lines (what `xdr-ship tui` runs).
    #[arg(long, conflicts_with = "json")]
    pub tui: bool,
    #[command(flatten)]
    live: super::live::LiveArgs,
    /// The source node: durable log, ingest, several destinations.
    #[command(flatten)]
    source: ingest::LogArgs,
}

impl Args {
    /// The run's configuration: the shipping flags towards the first
    /// `--to`, with this run's own settings.
    fn to_config(&self) -> anyhow::Result<ShipConfig> {
        let mut cfg = self
            .shipping
            .to_config(self.to.first().map_or("", String::as_str))?;
        cfg.source_id = self.bounds.source_id;
        self.bounds.apply(&mut cfg);
        cfg.dead_letter.clone_from(&self.source.dead_letter);
        Ok(if self.stop_and_wait {
            cfg.stop_and_wait()
        } else {
            cfg
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    if args.source.wanted(args.to.len()) {
        return ingest::run(SourceNode {
            base: cfg,
            to: &args.to,
            generate: args.generate,
            count: args.bounds.count,
            log: &args.source,
            shown: Shown {
                json: args.json,
                tui: args.tui,
                live: &args.live,
            },
        })
        .await;
    }
    let Some(generate) = args.generate else {
        anyhow::bail!(
            "nothing to ship: give --generate RATE,SIZE,KEYS, or --log DIR with --listen ADDR or --from FILE"
        );
    };
    let source = Generator::new(generate, args.bounds.source_id, args.bounds.count);
    if !args.json {
        print_banner(None, &cfg, &xdr_ship::ship::Source::describe(&source));
    }
    let (stop, cancel) = super::ctrl_c_tokens();
    let json = args.json;
    let port = ship::resolve(&cfg.to).await?.port();
    let print = Print::choose(args.tui, json);
    let mut live = Live::open(&args.live, Some(port), print, cancel.clone()).await?;
    let screen = Screen::open(args.tui, stop.clone());
    let screen_tx = screen.as_ref().map(Screen::sender);
    if !json && !args.tui {
        let src = live.sources();
        outln!(
            "kernel view: connections from {}, softirq from {}{}",
            src.connections,
            src.softirq,
            src.fallback_reason
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    let summary = ship::run(
        cfg,
        source,
        |snap| {
            let (sample, diagnosis) = live.on_snapshot(snap);
            if let Some(tx) = &screen_tx {
                let _ = tx.try_send(Update { sample, diagnosis });
            }
        },
        stop,
        cancel,
    )
    .await;
    drop(screen_tx);
    if let Some(screen) = screen {
        screen.finish().await?;
    }
    let summary = summary?;
    print_summary(&summary, json);
    if !json {
        if let Some(d) = live.last_diagnosis() {
            outln!("last verdict, {}", d.report());
        }
    }
    Ok(())
}
