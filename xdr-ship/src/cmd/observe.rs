//! `xdr-ship observe`: the per-connection and per-CPU view for any
//! process's TCP flows (iperf3, redis, a real XDR link).
use std::io::Write;

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
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + args.sampling.interval,
        args.sampling.interval,
    );
    let mut stdout = std::io::stdout();
    let mut printed = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let report = observer.sample().context("sampling")?;
        if args.sampling.json {
            writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
        } else {
            if printed > 0 {
                writeln!(stdout)?;
            }
            write!(stdout, "{}", report.render_table())?;
        }
        stdout.flush()?;
        printed += 1;
        if args.sampling.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
    }
}
