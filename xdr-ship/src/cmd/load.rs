//! `xdr-ship load`: a client load generator, like the seed's
//! `benchmarks -w I,100 -o S:1000 -k N`: `--threads` writers, each with one
//! write outstanding (or `--window` for asynchronous clients).
use xdr_ship::{
    metrics::fmt_us,
    ship::{self, GenerateSpec, Generator, ShipConfig, WindowSetting},
    wire::OrderingMode,
};

/// Drive a receiver (or a source node's ingest port) with client writes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write, `host:port`.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Writes per second, all threads together (0: as fast as possible).
    #[arg(long, default_value_t = 0, value_name = "R")]
    rate: u64,
    /// Bytes per value.
    #[arg(long, default_value = "1000", value_parser = super::parse_size, value_name = "SIZE")]
    size: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 1_000_000, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Concurrent writers (one connection each).
    #[arg(long, default_value_t = 16, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// Writes outstanding per writer (1: synchronous clients).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    #[command(flatten)]
    bounds: super::shipping::RunBounds,
    /// Status lines as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    security: super::tls_args::ClientSecurity,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ShipConfig::new(&args.to);
    cfg.connections = args.threads as usize;
    cfg.window = WindowSetting::Fixed(args.window);
    cfg.batch_max_records = 1;
    cfg.mode = OrderingMode::Ordered;
    cfg.max_throughput = (args.rate > 0).then_some(args.rate);
    cfg.sndbuf = None;
    args.bounds.apply(&mut cfg);
    args.security.apply(&mut cfg)?;
    let spec = GenerateSpec {
        rate: None,
        value_size: args.size,
        keys: args.keys,
    };
    let source = Generator::new(spec, args.bounds.source_id, args.bounds.count);
    let (stop, cancel) = super::ctrl_c_tokens();
    let json = args.json;
    let summary = ship::run(
        cfg,
        source,
        |s| {
            if json {
                outln!("{}", s.json_line(false));
            } else {
                outln!(
                    "load: {:.0} writes/s : {:.1} MB/s : lat p50 {} p99 {} p99.9 {} : errors {}",
                    s.throughput,
                    s.bytes_per_s / 1e6,
                    fmt_us(s.latency.p50_us),
                    fmt_us(s.latency.p99_us),
                    fmt_us(s.latency.p999_us),
                    s.counters.abandoned + s.counters.retry_dest,
                );
            }
        },
        stop,
        cancel,
    )
    .await?;
    super::shipping::print_summary(&summary, json);
    Ok(())
}
