//! `xdr-ship ship`: the pipelined shipper.
use std::time::Duration;

use super::live::{Live, Print, Screen};
use xdr_ship::tui::Update;
use xdr_ship::{
    ship::{self, GenerateSpec, Generator, ShipConfig, ShipSummary, WindowSetting},
    wire::OrderingMode,
};

/// `ordered` | `unordered`.
pub fn parse_mode(s: &str) -> Result<OrderingMode, String> {
    match s {
        "ordered" => Ok(OrderingMode::Ordered),
        "unordered" => Ok(OrderingMode::Unordered),
        _ => Err(format!("`{s}`: expected `ordered` or `unordered`")),
    }
}

/// Ship records to a destination, many in flight per connection.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Destination `host:port`; repeat for several (they need --log).
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    to: Vec<String>,
    /// TCP connections to the destination.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Records in flight per connection, or `auto` (grown from throughput × RTT).
    #[arg(long, default_value = "auto", value_name = "W|auto")]
    window: WindowSetting,
    /// `ordered`: answers in request order (XDR 3.8); `unordered`: as writes complete.
    #[arg(long, default_value = "ordered", value_parser = parse_mode, value_name = "MODE")]
    mode: OrderingMode,
    /// One record in flight per connection: the pre-3.8 baseline.
    #[arg(long)]
    stop_and_wait: bool,
    /// Cap on records per second.
    #[arg(long, value_name = "R")]
    max_throughput: Option<u64>,
    /// SO_SNDBUF of every connection (the seed's sender used 5 MiB).
    #[arg(long, default_value = "5MiB", value_parser = super::parse_size, value_name = "SIZE")]
    sndbuf: usize,
    /// In-process load: RATE,SIZE,KEYS (records/s or `max`, value bytes,
    /// key space); with --log it goes through the log.
    #[arg(long, value_name = "RATE,SIZE,KEYS")]
    generate: Option<GenerateSpec>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop taking new records after this long.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Identity of this source node, carried by every write.
    #[arg(long, default_value_t = 1, value_name = "ID")]
    source_id: u64,
    /// Most records in one BATCH request.
    #[arg(long, default_value_t = 64, value_name = "N")]
    batch: usize,
    /// Time between status lines.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration, value_name = "DURATION")]
    interval: Duration,
    /// How long to wait for answers once intake stops.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
    /// zstd-compress BATCH requests (pays when the link is the limit and
    /// values compress; costs CPU on every record).
    #[arg(long)]
    compress: bool,
    /// TCP congestion control of every connection (`cubic`, `bbr`, …;
    /// default: the host's `net.ipv4.tcp_congestion_control`).
    #[arg(long, value_name = "NAME")]
    congestion: Option<String>,
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
    source: super::ingest::LogArgs,
    #[command(flatten)]
    security: super::tls_args::ClientSecurity,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ShipConfig::new(args.to.first().map_or("", String::as_str));
    cfg.connections = args.connections as usize;
    cfg.window = args.window;
    cfg.mode = args.mode;
    cfg.max_throughput = args.max_throughput;
    cfg.sndbuf = Some(args.sndbuf);
    cfg.source_id = args.source_id;
    cfg.batch_max_records = args.batch;
    cfg.duration = args.duration;
    cfg.drain_timeout = args.drain_timeout;
    cfg.interval = args.interval;
    cfg.compress = args.compress;
    cfg.congestion = args.congestion;
    args.security.apply(&mut cfg)?;
    if args.stop_and_wait {
        cfg = cfg.stop_and_wait();
    }
    cfg.dead_letter = args.source.dead_letter.clone();
    if args.source.wanted(args.to.len()) {
        let to = args.to.clone();
        return super::ingest::run(
            cfg,
            &to,
            args.generate,
            args.count,
            args.source,
            super::ingest::Shown {
                json: args.json,
                tui: args.tui,
                live: &args.live,
            },
        )
        .await;
    }
    let Some(generate) = args.generate else {
        anyhow::bail!(
            "nothing to ship: give --generate RATE,SIZE,KEYS, or --log DIR with --listen ADDR or --from FILE"
        );
    };
    let source = Generator::new(generate, args.source_id, args.count);
    if !args.json {
        println!(
            "ship: to {} : {} connections : window {} : {:?} : {}",
            cfg.to,
            cfg.connections,
            match cfg.window {
                WindowSetting::Auto => "auto".to_owned(),
                WindowSetting::Fixed(w) => w.to_string(),
            },
            cfg.mode,
            xdr_ship::ship::Source::describe(&source),
        );
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
        println!(
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
            println!("last verdict, {}", d.report());
        }
    }
    Ok(())
}

/// The closing line (or JSON object) of a run.
pub fn print_summary(s: &ShipSummary, json: bool) {
    if json {
        let v = serde_json::json!({
            "summary": {
                "elapsed_s": s.elapsed.as_secs_f64(),
                "records_per_s": s.records_per_s(),
                "counters": s.counters,
                "unanswered": s.unanswered,
            }
        });
        println!("{v}");
    } else {
        println!(
            "done: delivered {} (success {}, lost_conflict {}) abandoned {} unanswered {} in {:.2} s = {:.0} records/s",
            s.counters.delivered(),
            s.counters.success,
            s.counters.lost_conflict,
            s.counters.abandoned,
            s.unanswered,
            s.elapsed.as_secs_f64(),
            s.records_per_s()
        );
    }
}
