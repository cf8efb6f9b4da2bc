//! `xdr-ship observe`: the per-connection and per-CPU view for any
//! process's TCP flows (iperf3, redis, a real XDR link).
use anyhow::Context;
use xdr_ship::probe::observe::{ObserveOptions, Observer};

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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut observer = Observer::open(ObserveOptions {
        ports: args.ports.clone(),
        pid: args.pid,
        no_ebpf: args.sampling.no_ebpf,
    });
    // The first reading is the baseline of the interval rates.
    observer.sample().context("reading the first sample")?;
    args.sampling
        .run(|| observer.sample().context("sampling"))
        .await
}
