//! `xdr-ship observe`: the per-connection and per-CPU view for any
//! process's TCP flows (iperf3, redis, a real XDR link).
//!
//! Why the same engine and screen as `ship`: a troubleshooting session
//! compares a flow xdr-ship did not make with one it did; both are judged
//! by one [`Diagnoser`] and shown by one screen (`--tui`), with the
//! kernel half only here.
use anyhow::Context;
use xdr_ship::{
    diagnose::Diagnoser,
    live::{FlowOptions, FlowSampler, RecordingWriter},
};

/// Watch any process's TCP connections: windows, RTT, retransmits, and
/// softirq load per CPU.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Local or remote port to watch (repeat for more; default: every TCP
    /// connection).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Only this process's sockets.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    #[command(flatten)]
    sampling: super::Sampling,
    /// Also write every sample to FILE as versioned JSON lines, in the
    /// format `xdr-ship replay FILE` plays (the kernel half only).
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
    /// The window the verdict judges over.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = super::parse_duration)]
    window: std::time::Duration,
    /// Show the live screen `ship --tui` uses (the kernel half only)
    /// instead of printing rows; `q` quits.
    #[arg(long, conflicts_with = "json")]
    tui: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut flows = FlowSampler::open(FlowOptions {
        ports: args.ports.clone(),
        pid: args.pid,
        no_ebpf: args.sampling.no_ebpf,
    });
    // The first reading is the baseline of the interval rates.
    flows.sample().context("reading the first sample")?;
    let mut record = match &args.record {
        Some(path) => Some(RecordingWriter::create(path).context("--record")?),
        None => None,
    };
    let label = if args.ports.is_empty() {
        "observe: every TCP connection".to_owned()
    } else {
        let ports: Vec<String> = args.ports.iter().map(u16::to_string).collect();
        format!("observe: port {}", ports.join(","))
    };
    let started = std::time::Instant::now();
    // The same engine `replay` runs over the recording, so both judge alike.
    let mut diagnoser = Diagnoser::new(args.window);
    let mut judged = move || -> anyhow::Result<_> {
        let mut report = flows.sample().context("sampling")?;
        let sample = report.to_sample(started.elapsed(), &label);
        if let Some(out) = &mut record {
            out.write(&sample).context("--record")?;
        }
        diagnoser.push(sample.clone());
        report.verdict = diagnoser.judge();
        Ok((report, sample))
    };
    if args.tui {
        return on_screen(&args.sampling, judged).await;
    }
    args.sampling
        .run(|| judged().map(|(report, _)| report))
        .await
}

/// `--tui`: every interval's sample and verdict to the live screen, until
/// it is quit (`q`), `--count` samples, or Ctrl-C. The screen's feed is
/// bounded and never waited on: a busy screen skips an update.
async fn on_screen(
    sampling: &super::Sampling,
    mut next: impl FnMut() -> anyhow::Result<(xdr_ship::live::FlowReport, xdr_ship::diagnose::Sample)>,
) -> anyhow::Result<()> {
    let (stop, _cancel) = super::ctrl_c_tokens();
    let screen = super::live::Screen::open(true, stop.clone()).context("opening the screen")?;
    let feed = screen.sender();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + sampling.interval,
        sampling.interval,
    );
    let mut sent = 0u64;
    while sampling.count.is_none_or(|n| sent < n) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let (report, sample) = next()?;
        let _ = feed.try_send(xdr_ship::tui::Update {
            sample,
            diagnosis: report.verdict,
        });
        sent += 1;
    }
    drop(feed);
    screen.finish().await
}
