//! What `ship` and `diagnose` do with every snapshot: join it with the
//! kernel's view, judge it, and hand it to each output the operator asked
//! for (headless line, JSON, Prometheus, a recording).
use std::{
    io::{BufWriter, Write},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use xdr_ship::{
    diagnose::{Diagnosis, Limit, LinkHints, Sample},
    metrics::{prometheus::PromMetrics, ShipSnapshot},
    monitor::{Monitor, MonitorOptions, Sources},
};

/// The flags of the live view, shared by `ship` and `diagnose`.
#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// Read `/proc` and `TCP_INFO` only, even where eBPF could load.
    #[arg(long)]
    pub no_ebpf: bool,
    /// The path's round trip without queueing, if known (sharpens the
    /// verdict's BDP; default: the lowest RTT the sockets saw).
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    pub rtt: Option<Duration>,
    /// The link's payload rate, if known (`100MB`, per second): lets the
    /// verdict say "the link is full" with certainty.
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    pub link_rate: Option<usize>,
    /// The verdict is judged over this much recent time.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub verdict_window: Duration,
    /// Serve Prometheus text at `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Write every joined sample to FILE as versioned JSON lines (`xdr-ship
    /// replay FILE` plays it back).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

impl LiveArgs {
    /// The link hints the flags give.
    pub fn link(&self) -> LinkHints {
        LinkHints {
            rtt: self.rtt,
            bandwidth_bytes_per_s: self.link_rate.map(|b| b as u64),
        }
    }
}

/// How each interval is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Print {
    /// The seed's line, and the verdict whenever its limit changes.
    Lines,
    /// One JSON object per interval, with the verdict.
    Json,
    /// Nothing (the TUI or a report owns the screen).
    Quiet,
}

impl Print {
    /// The screen owns the terminal if asked for; else JSON or lines.
    pub fn choose(tui: bool, json: bool) -> Self {
        match (tui, json) {
            (true, _) => Print::Quiet,
            (false, true) => Print::Json,
            (false, false) => Print::Lines,
        }
    }
}

/// The live screen on a thread of its own, fed through a bounded channel:
/// the shipper drops an update rather than wait for it. Quitting it (`q`)
/// cancels `stop`: intake ends, records in flight still get their answers.
pub struct Screen {
    tx: tokio::sync::mpsc::Sender<xdr_ship::tui::Update>,
    task: tokio::task::JoinHandle<Result<xdr_ship::tui::TuiExit, xdr_ship::tui::TuiError>>,
}

impl Screen {
    /// Starts the screen if `on`.
    pub fn open(on: bool, stop: tokio_util::sync::CancellationToken) -> Option<Self> {
        on.then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let task = tokio::task::spawn_blocking(move || {
                let exit = xdr_ship::tui::run(rx, xdr_ship::tui::TuiOptions::default());
                stop.cancel();
                exit
            });
            Self { tx, task }
        })
    }

    /// A producer's handle: `try_send` only.
    pub fn sender(&self) -> tokio::sync::mpsc::Sender<xdr_ship::tui::Update> {
        self.tx.clone()
    }

    /// Closes the feed and waits until the screen is quit (the terminal is
    /// restored then); names the recordings it wrote.
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.tx);
        let exit = self.task.await??;
        for path in exit.recordings {
            println!("recorded: {}", path.display());
        }
        Ok(())
    }
}

/// The outputs of one run.
pub struct Live {
    monitor: Monitor,
    print: Print,
    prom: Option<PromMetrics>,
    record: Option<(PathBuf, BufWriter<std::fs::File>)>,
    prefix: String,
    last_limit: Option<Limit>,
    last: Option<Diagnosis>,
}

impl Live {
    /// Opens the monitor (eBPF for `port` when it loads), the recording
    /// file and the metrics listener.
    pub async fn open(
        args: &LiveArgs,
        port: Option<u16>,
        print: Print,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let prom = start_metrics(args, cancel).await?;
        Self::with(args, port, print, prom, None)
    }

    /// One destination's outputs among several: lines prefixed with
    /// `[name]`, the recording named after it, the metrics exporter shared
    /// (its series are labelled by destination).
    pub fn with(
        args: &LiveArgs,
        port: Option<u16>,
        print: Print,
        prom: Option<PromMetrics>,
        name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let record = match &args.record {
            Some(path) => {
                let path = match name {
                    Some(n) => {
                        let mut p = path.clone().into_os_string();
                        p.push(format!(".{n}"));
                        PathBuf::from(p)
                    }
                    None => path.clone(),
                };
                let f = std::fs::File::create(&path)
                    .with_context(|| format!("--record {}: cannot create", path.display()))?;
                Some((path, BufWriter::new(f)))
            }
            None => None,
        };
        let monitor = Monitor::open(&MonitorOptions {
            no_ebpf: args.no_ebpf,
            port,
            window: args.verdict_window,
            link: args.link(),
        });
        Ok(Self {
            monitor,
            print,
            prom,
            record,
            prefix: name.map(|n| format!("[{n}] ")).unwrap_or_default(),
            last_limit: None,
            last: None,
        })
    }

    /// Where the kernel half comes from.
    pub fn sources(&self) -> Sources {
        self.monitor.sources()
    }

    /// One interval: join, judge, print, export, record. Returns the
    /// sample and verdict for a caller that shows more (the TUI).
    pub fn on_snapshot(&mut self, snap: &ShipSnapshot) -> (Sample, Option<Diagnosis>) {
        let (sample, diagnosis) = self.monitor.observe(snap);
        match self.print {
            Print::Lines => {
                println!("{}{}", self.prefix, snap.headless_line());
                if let Some(d) = &diagnosis {
                    if self.last_limit != Some(d.shipper.limit) {
                        println!("{}verdict: {}", self.prefix, d.shipper);
                        self.last_limit = Some(d.shipper.limit);
                    }
                }
            }
            Print::Json => println!("{}", json_line(snap, diagnosis.as_ref(), &self.sources())),
            Print::Quiet => {}
        }
        if let Some(prom) = &self.prom {
            prom.update(snap, diagnosis.as_ref(), sample.softirq.as_ref());
        }
        if let Some((path, out)) = &mut self.record {
            let line = sample.to_json_line().map_err(anyhow::Error::from);
            let written = line.and_then(|l| {
                writeln!(out, "{l}")?;
                out.flush()?;
                Ok(())
            });
            if let Err(e) = written {
                eprintln!("--record {}: {e:#}; recording stopped", path.display());
                self.record = None;
            }
        }
        if diagnosis.is_some() {
            self.last.clone_from(&diagnosis);
        }
        (sample, diagnosis)
    }

    /// The newest verdict of the run.
    pub fn last_diagnosis(&self) -> Option<&Diagnosis> {
        self.last.as_ref()
    }

    /// Starts a new judging window (a new phase of a measurement).
    pub fn restart_window(&mut self) {
        self.monitor.diagnoser_mut().clear();
        self.last = None;
        self.last_limit = None;
    }
}

/// Starts the `--metrics` exporter, if asked for: one per process, shared
/// by every destination.
pub async fn start_metrics(
    args: &LiveArgs,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<PromMetrics>> {
    let Some(addr) = args.metrics else {
        return Ok(None);
    };
    let m = PromMetrics::new();
    let (local, _task) = xdr_ship::metrics::prometheus::serve(addr, m.clone(), cancel).await?;
    eprintln!("metrics: http://{local}/metrics");
    Ok(Some(m))
}

/// The `--json` line: the snapshot's fields, per connection included, plus
/// `verdict` (the shipper's, with shares and remedy), each connection's
/// limit in `connection_limits`, and `sources`.
pub fn json_line(snap: &ShipSnapshot, diagnosis: Option<&Diagnosis>, sources: &Sources) -> String {
    let mut v = match serde_json::to_value(snap) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\":\"snapshot does not serialise: {e}\"}}"),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "verdict".into(),
            diagnosis.map_or(serde_json::Value::Null, |d| {
                serde_json::to_value(&d.shipper).unwrap_or_default()
            }),
        );
        if let Some(d) = diagnosis {
            let limits: Vec<serde_json::Value> = d
                .connections
                .iter()
                .map(
                    |c| serde_json::json!({"scope": c.scope, "limit": c.limit, "shares": c.shares}),
                )
                .collect();
            obj.insert("connection_limits".into(), limits.into());
            obj.insert("rtt_us".into(), d.rtt.map(|r| r.as_micros() as u64).into());
            obj.insert("bdp_bytes".into(), d.bdp_bytes.into());
        }
        obj.insert(
            "sources".into(),
            serde_json::to_value(sources).unwrap_or_default(),
        );
    }
    v.to_string()
}
