//! The shipping flags: how records go to a destination, one flattened set
//! shared by `ship`, `tui`, `diagnose` and the source node's log path (whose
//! `--config` destinations start from them), and what every shipping
//! command prints about a run (its opening and closing lines).
//!
//! Why one struct: a new shipping flag is one field here and one line in
//! [`ShippingArgs::to_config`], whichever command ships. [`RunBounds`] is
//! the same for what bounds a run (count, duration, drain), shared by
//! `ship` and `load`.
use std::time::Duration;

use xdr_ship::{
    ship::{ShipConfig, ShipSummary, WindowSetting},
    wire::OrderingMode,
};

/// What bounds a run and paces its status lines: the flags `ship`, `tui`
/// and `load` share.
#[derive(clap::Args, Debug)]
pub struct RunBounds {
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop taking new records after this long.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// How long to wait for answers once intake stops.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// Identity of this source, carried by every write.
    #[arg(long, default_value_t = 1, value_name = "ID")]
    pub source_id: u64,
    /// Time between status lines.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub interval: Duration,
}

impl RunBounds {
    /// Sets the run's duration, drain timeout and status interval.
    pub fn apply(&self, cfg: &mut ShipConfig) {
        cfg.duration = self.duration;
        cfg.drain_timeout = self.drain_timeout;
        cfg.interval = self.interval;
    }
}

/// How records are shipped to a destination.
#[derive(clap::Args, Debug)]
pub struct ShippingArgs {
    /// TCP connections to the destination.
    #[arg(long, default_value_t = xdr_ship::ship::DEFAULT_CONNECTIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Records in flight per connection, or `auto` (grown from throughput × RTT).
    #[arg(long, default_value = "auto", value_name = "W|auto")]
    pub window: WindowSetting,
    /// `ordered`: answers in request order (XDR 3.8); `unordered`: as writes complete.
    #[arg(long, value_enum, default_value_t = OrderingMode::Ordered, value_name = "MODE")]
    pub mode: OrderingMode,
    /// Cap on records per second.
    #[arg(long, value_name = "R")]
    pub max_throughput: Option<u64>,
    /// SO_SNDBUF of every connection (the seed's sender used 5 MiB).
    #[arg(long, default_value = "5MiB", value_parser = super::parse_size, value_name = "SIZE")]
    pub sndbuf: usize,
    /// Most records in one BATCH request.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,
    /// zstd-compress BATCH requests (pays when the link is the limit and
    /// values compress; costs CPU on every record).
    #[arg(long)]
    pub compress: bool,
    /// TCP congestion control of every connection (`cubic`, `bbr`, …;
    /// default: the host's `net.ipv4.tcp_congestion_control`).
    #[arg(long, value_name = "NAME")]
    pub congestion: Option<String>,
    /// Send a PING on a connection idle this long (keep it below the
    /// receiver's --idle-timeout); `0s`: never.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub ping_interval: std::time::Duration,
    #[command(flatten)]
    pub security: super::tls_args::ClientSecurity,
    /// Towards `redis://`: `on` keeps last-writer-wins on (version, source)
    /// inside Redis (a function loaded at connect); `off` ships plain SET/DEL.
    #[arg(long, default_value = "on", value_name = "on|off", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_lww: bool,
}

impl ShippingArgs {
    /// The configuration these flags give for shipping to `to` (the run's
    /// own settings, such as its duration, keep their defaults).
    pub fn to_config(&self, to: &str) -> anyhow::Result<ShipConfig> {
        let mut cfg = ShipConfig::new(to);
        cfg.connections = self.connections as usize;
        cfg.window = self.window;
        cfg.mode = self.mode;
        cfg.max_throughput = self.max_throughput;
        cfg.sndbuf = Some(self.sndbuf);
        cfg.batch_max_records = self.batch;
        cfg.compress = self.compress;
        cfg.congestion.clone_from(&self.congestion);
        cfg.ping_interval = self.ping_interval;
        cfg.redis_lww = self.redis_lww;
        self.security.apply(&mut cfg)?;
        Ok(cfg)
    }
}

/// The opening line of a run to one destination (`[name] ` prefixed
/// where there are several): address, connections, window, mode, source.
pub fn print_banner(name: Option<&str>, cfg: &ShipConfig, source: &str) {
    outln!(
        "ship: {}to {} : {} connections : window {} : {:?} : {source}",
        name.map(|n| format!("[{n}] ")).unwrap_or_default(),
        cfg.to,
        cfg.connections,
        match cfg.window {
            WindowSetting::Auto => "auto".to_owned(),
            WindowSetting::Fixed(w) => w.to_string(),
        },
        cfg.mode,
    );
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
        outln!("{v}");
    } else {
        outln!(
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shipping: ShippingArgs,
    }

    fn config(args: &[&str]) -> ShipConfig {
        let cli = Cli::try_parse_from(std::iter::once("ship").chain(args.iter().copied()))
            .expect("flags parse");
        cli.shipping.to_config("127.0.0.1:3000").expect("a config")
    }

    #[test]
    fn the_defaults_are_the_seeds_setup() {
        let (flags, new) = (config(&[]), ShipConfig::new("127.0.0.1:3000"));
        assert_eq!(flags.connections, new.connections);
        assert_eq!(flags.window, new.window);
        assert_eq!(flags.mode, new.mode);
        assert_eq!(flags.sndbuf, new.sndbuf);
        assert_eq!(flags.batch_max_records, new.batch_max_records);
        assert_eq!(flags.ping_interval, new.ping_interval);
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let c = config(&[
            "--connections=3",
            "--window=9",
            "--mode=unordered",
            "--max-throughput=100",
            "--sndbuf=1MiB",
            "--batch=2",
            "--compress",
            "--congestion=bbr",
            "--ping-interval=2s",
        ]);
        assert_eq!(c.to, "127.0.0.1:3000");
        assert_eq!(c.connections, 3);
        assert_eq!(c.window, WindowSetting::Fixed(9));
        assert_eq!(c.mode, OrderingMode::Unordered);
        assert_eq!(c.max_throughput, Some(100));
        assert_eq!(c.sndbuf, Some(1 << 20));
        assert_eq!(c.batch_max_records, 2);
        assert!(c.compress);
        assert_eq!(c.congestion.as_deref(), Some("bbr"));
        assert_eq!(c.ping_interval, std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_bad_mode_names_the_accepted_ones() {
        let err = Cli::try_parse_from(["ship", "--mode", "sideways"])
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("ordered") && text.contains("unordered"),
            "{text}"
        );
    }
}
