//! `xdr-ship observe`: the per-connection and per-CPU view for any
//! process's TCP flows (iperf3, redis, a real XDR link).
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
    args.sampling
        .run(|| {
            let mut report = flows.sample().context("sampling")?;
            let sample = report.to_sample(started.elapsed(), &label);
            if let Some(out) = &mut record {
                out.write(&sample).context("--record")?;
            }
            diagnoser.push(sample);
            report.verdict = diagnoser.judge();
            Ok(report)
        })
        .await
}
