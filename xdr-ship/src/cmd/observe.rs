//! `xdr-ship observe`: the per-connection and per-CPU view for any
//! process's TCP flows (iperf3, redis, a real XDR link).
use anyhow::Context;
use xdr_ship::live::{FlowOptions, FlowSampler, RecordingWriter};

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
    args.sampling
        .run(|| {
            let report = flows.sample().context("sampling")?;
            if let Some(out) = &mut record {
                out.write(&report.to_sample(started.elapsed(), &label))
                    .context("--record")?;
            }
            Ok(report)
        })
        .await
}
