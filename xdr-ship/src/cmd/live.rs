//! The live view's flags and wiring for `ship`, `diagnose` and the log
//! path: which sinks of [`xdr_ship::live`] each run gets. The pipeline
//! itself (sample the kernel, join, judge, fan out) is the library's.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use xdr_ship::{
    diagnose::{Diagnosis, LinkHints, Sample},
    live::{
        prometheus::PromMetrics,
        sink::{JsonSink, LineSink, RecordSink},
        Frame, Pipeline, PipelineOptions, RecordingWriter, SharedKernel, Sinks, Sources,
    },
    metrics::ShipSnapshot,
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
            outln!("recorded: {}", path.display());
        }
        Ok(())
    }
}

/// The outputs of one run: one destination's pipeline and its sinks.
pub struct Live {
    pipeline: Pipeline,
    sinks: Sinks,
    sources: Sources,
    last: Option<Diagnosis>,
}

impl Live {
    /// Opens the pipeline (eBPF for `port` when it loads), the recording
    /// file and the metrics listener.
    pub async fn open(
        args: &LiveArgs,
        port: Option<u16>,
        print: Print,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let prom = start_metrics(args, cancel).await?;
        Self::with(args, port, None, print, prom, None)
    }

    /// One destination's outputs among several: lines prefixed with
    /// `[name]`, the recording named after it, the metrics exporter shared
    /// (its series are labelled by destination); `kernel`: programs loaded
    /// once for every destination (else this one loads its own for `port`).
    pub fn with(
        args: &LiveArgs,
        port: Option<u16>,
        kernel: Option<SharedKernel>,
        print: Print,
        prom: Option<PromMetrics>,
        name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut sinks = Sinks::new();
        match print {
            Print::Lines => {
                let prefix = name.map(|n| format!("[{n}] ")).unwrap_or_default();
                sinks.push(LineSink::new(std::io::stdout(), prefix));
            }
            Print::Json => sinks.push(JsonSink(std::io::stdout())),
            Print::Quiet => {}
        }
        if let Some(prom) = prom {
            sinks.push(prom);
        }
        if let Some(path) = &args.record {
            let path = match name {
                Some(n) => {
                    let mut p = path.clone().into_os_string();
                    p.push(format!(".{n}"));
                    PathBuf::from(p)
                }
                None => path.clone(),
            };
            sinks.push(RecordSink::new(RecordingWriter::create(path)?));
        }
        let opts = PipelineOptions {
            no_ebpf: args.no_ebpf,
            port,
            window: args.verdict_window,
            link: args.link(),
            ..PipelineOptions::default()
        };
        let pipeline = match kernel {
            Some(kernel) => Pipeline::sharing(kernel, &opts),
            None => Pipeline::open(&opts),
        };
        let sources = pipeline.sources();
        Ok(Self {
            pipeline,
            sinks,
            sources,
            last: None,
        })
    }

    /// Where the kernel half comes from.
    pub fn sources(&self) -> Sources {
        self.sources.clone()
    }

    /// One interval: join, judge, and hand the frame to every sink. Returns
    /// the sample and verdict for a caller that shows more (the TUI).
    pub fn on_snapshot(&mut self, snap: &ShipSnapshot) -> (Sample, Option<Diagnosis>) {
        let (sample, diagnosis) = self.pipeline.step(snap);
        self.sinks.emit(&Frame {
            snap,
            sample: &sample,
            diagnosis: diagnosis.as_ref(),
            sources: &self.sources,
        });
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
        self.pipeline.diagnoser_mut().clear();
        self.sinks.restart();
        self.last = None;
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
    let (local, _task) = xdr_ship::live::prometheus::serve(addr, m.clone(), cancel).await?;
    eprintln!("metrics: http://{local}/metrics");
    Ok(Some(m))
}
