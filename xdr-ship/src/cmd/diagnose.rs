//! `xdr-ship diagnose`: a troubleshooting session's first command. Measures
//! the link to a destination the way the seed did (stop-and-wait, then
//! pipelined) and prints what limits it, with the fix.
//!
//! Why both phases: stop-and-wait gives the round trip per request as the
//! application sees it (network RTT plus the receiver's apply time), which
//! is the number that makes pipelining necessary; the pipelined phase shows
//! what the link delivers once RTT is out of the equation, and the verdict
//! over it says what holds it back now.
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    diagnose::Diagnosis,
    metrics::ShipSnapshot,
    ship::{self, GenerateSpec, Generator, ShipConfig},
};

use super::{
    live::{Live, LiveArgs, Print},
    shipping::ShippingArgs,
};

/// How long each phase waits for its last answers: a receiver that holds
/// them longer is itself the finding.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest stop-and-wait phase: enough round trips for a median.
const MIN_STOP_AND_WAIT: Duration = Duration::from_secs(3);

/// Measure the link to a receiver and say what limits it.
///
/// It ships test records (keys `key:…`, from `--source-id`) to the
/// destination: point it at a receiver that may take them, e.g. `xdr-ship
/// recv --memory` started for the session. The shipping flags shape the
/// pipelined phase; the stop-and-wait phase uses one connection, one
/// record in flight.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Destination `host:port` (an `xdr-ship recv`).
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Length of the pipelined phase (the stop-and-wait phase adds a
    /// quarter of it, at least 3 s).
    #[arg(long, default_value = "20s", value_parser = super::parse_duration, value_name = "DURATION")]
    duration: Duration,
    #[command(flatten)]
    shipping: ShippingArgs,
    /// The test load: RATE,SIZE,KEYS.
    #[arg(long, default_value = "max,1000,100000", value_name = "RATE,SIZE,KEYS")]
    generate: GenerateSpec,
    /// Source id the test records carry.
    #[arg(long, default_value_t = 999, value_name = "ID")]
    source_id: u64,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    live: LiveArgs,
}

/// What one phase measured.
#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    connections: usize,
    records_per_s: f64,
    bytes_per_s: f64,
    /// Median in-flight records over the phase's intervals.
    inflight: u64,
    ack_latency_p50_us: u64,
    delivered: u64,
}

impl Phase {
    fn from_run(name: &str, connections: usize, snaps: &[ShipSnapshot], delivered: u64) -> Self {
        // Skip the first interval (connecting, slow start) when there are
        // enough to spare, and the drain (intake over, the last answers
        // awaited): the verdict leaves it out too, so both quote the same
        // intervals.
        let running: Vec<&ShipSnapshot> = snaps.iter().filter(|s| s.drain_s.is_none()).collect();
        let steady: &[&ShipSnapshot] = if running.len() > 2 {
            &running[1..]
        } else {
            &running
        };
        let mean = |f: &dyn Fn(&ShipSnapshot) -> f64| {
            if steady.is_empty() {
                0.0
            } else {
                steady.iter().map(|s| f(s)).sum::<f64>() / steady.len() as f64
            }
        };
        let mut inflight: Vec<u64> = steady.iter().map(|s| s.inflight).collect();
        inflight.sort_unstable();
        let mut lat: Vec<u64> = steady.iter().map(|s| s.latency.p50_us).collect();
        lat.sort_unstable();
        Self {
            name: name.to_owned(),
            connections,
            records_per_s: mean(&|s| s.throughput),
            bytes_per_s: mean(&|s| s.bytes_per_s),
            inflight: inflight.get(inflight.len() / 2).copied().unwrap_or(0),
            ack_latency_p50_us: lat.get(lat.len() / 2).copied().unwrap_or(0),
            delivered,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    to: &'a str,
    stop_and_wait: &'a Phase,
    pipelined: &'a Phase,
    speedup: f64,
    diagnosis: Option<&'a Diagnosis>,
    sources: xdr_ship::live::Sources,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let port = ship::resolve(&args.to).await?.port();
    let (stop, cancel) = super::ctrl_c_tokens();
    let mut live = Live::open(&args.live, Some(port), Print::Quiet, cancel.clone()).await?;
    let saw_duration = (args.duration / 4).max(MIN_STOP_AND_WAIT);

    let mut base = args.shipping.to_config(&args.to)?;
    base.source_id = args.source_id;
    base.drain_timeout = DRAIN_TIMEOUT;
    let generator = || Generator::new(args.generate, args.source_id, None);
    let tokens = (stop, cancel);

    // Phase 1: one request at a time on one connection.
    let mut cfg = base.clone().stop_and_wait();
    cfg.connections = 1;
    cfg.duration = Some(saw_duration);
    eprintln!(
        "diagnose: {} — stop-and-wait for {}…",
        args.to,
        humantime::format_duration(saw_duration)
    );
    let saw = measure("stop-and-wait", cfg, generator(), &mut live, &tokens, false).await?;

    // Phase 2: pipelined; the verdict is judged over this phase only.
    live.restart_window();
    let mut cfg = base;
    cfg.duration = Some(args.duration);
    eprintln!(
        "diagnose: pipelined over {} connections for {}…",
        cfg.connections,
        humantime::format_duration(args.duration)
    );
    let piped = measure("pipelined", cfg, generator(), &mut live, &tokens, true).await?;
    let speedup = if saw.records_per_s > 0.0 {
        piped.records_per_s / saw.records_per_s
    } else {
        0.0
    };
    let report = Report {
        to: &args.to,
        stop_and_wait: &saw,
        pipelined: &piped,
        speedup,
        diagnosis: live.last_diagnosis(),
        sources: live.sources(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Ships one phase, every interval through `live` (and a progress line on
/// stderr if `progress`), and sums it up.
async fn measure(
    name: &str,
    cfg: ShipConfig,
    source: Generator,
    live: &mut Live,
    (stop, cancel): &(CancellationToken, CancellationToken),
    progress: bool,
) -> anyhow::Result<Phase> {
    let connections = cfg.connections;
    let mut snaps = Vec::new();
    let summary = ship::run(
        cfg,
        source,
        |s| {
            let (_, d) = live.on_snapshot(s);
            if progress {
                eprintln!(
                    "  {:>5.1} s  {:>9.0} records/s  {:>7.1} MB/s  inflight {:>6}{}",
                    s.elapsed_s,
                    s.throughput,
                    s.bytes_per_s / 1e6,
                    s.inflight,
                    d.map(|d| format!("  now: {}", d.shipper.limit))
                        .unwrap_or_default()
                );
            }
            snaps.push(s.clone());
        },
        stop.clone(),
        cancel.clone(),
    )
    .await?;
    Ok(Phase::from_run(
        name,
        connections,
        &snaps,
        summary.counters.delivered(),
    ))
}

fn render(r: &Report<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "link to {}", r.to);
    let rtt_per_request = xdr_ship::metrics::fmt_us(r.stop_and_wait.ack_latency_p50_us);
    let _ = writeln!(
        out,
        "  stop-and-wait, 1 connection : {:>10.1} records/s   (one request per round trip: {rtt_per_request} each)",
        r.stop_and_wait.records_per_s
    );
    let _ = writeln!(
        out,
        "  pipelined, {:>3} connections : {:>10.0} records/s   {:.1} MB/s, {} in flight, {:.0}x stop-and-wait",
        r.pipelined.connections,
        r.pipelined.records_per_s,
        r.pipelined.bytes_per_s / 1e6,
        r.pipelined.inflight,
        r.speedup
    );
    let _ = writeln!(
        out,
        "  kernel view: connections from {}, softirq from {}{}",
        r.sources.connections,
        r.sources.softirq,
        r.sources
            .fallback_reason
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    match r.diagnosis {
        Some(d) => {
            let _ = write!(out, "verdict over the pipelined phase, {}", d.report());
        }
        None => {
            let _ = writeln!(
                out,
                "no verdict: the pipelined phase gave fewer than two samples (give a longer --duration)"
            );
        }
    }
    out
}
