//! One destination's live pipeline: each snapshot interval, the kernel's
//! view (eBPF rows of the shipper's own sockets, per-CPU softirq time)
//! joined to the shipper's own numbers into one [`Sample`], and the verdict
//! over the last window.
//!
//! Why one place: the headless line, `--json`, Prometheus, the TUI, a
//! recording and `xdr-ship diagnose` all show the same joined sample and
//! the same verdict. Built once per interval here, they cannot disagree.
//!
//! Why eBPF is optional: the verdict reads `TCP_INFO` (carried in every
//! [`crate::metrics::ConnSnapshot`]) because it holds the kernel's chrono
//! timers, which eBPF cannot see; eBPF adds the per-socket rows that `ss`
//! would show and per-vector softirq time. Without root or BTF the pipeline
//! falls back to `/proc` for softirq and says so in [`Pipeline::sources`].
//!
//! Cost: one map walk and two small `/proc` reads per interval (about a
//! millisecond), on the caller's thread.
use std::time::Duration;

use crate::{
    diagnose::{Diagnoser, Diagnosis, LinkHints, Sample},
    metrics::ShipSnapshot,
};

use super::{
    join::own_rows,
    kernel::{KernelOptions, KernelSampler, SharedKernel, SoftirqRates, Sources},
};

/// How a pipeline is set up.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Use `/proc` even where eBPF could load.
    pub no_ebpf: bool,
    /// The destination's port: the TCP programs watch only sockets on it.
    pub port: Option<u16>,
    /// The window the verdict is judged over.
    pub window: Duration,
    /// What the operator told us about the link.
    pub link: LinkHints,
    /// The largest window the shipper grows to by itself, for the remedy to
    /// say when more connections beat a larger window.
    pub window_cap: Option<u64>,
}

impl Default for PipelineOptions {
    /// eBPF if it loads, a 10 s window, no link hints, the shipper's own
    /// auto-window cap.
    fn default() -> Self {
        Self {
            no_ebpf: false,
            port: None,
            window: Duration::from_secs(10),
            link: LinkHints::default(),
            window_cap: Some(crate::ship::AUTO_WINDOW_MAX),
        }
    }
}

impl PipelineOptions {
    /// The kernel programs this pipeline needs on its own.
    pub fn kernel(&self) -> KernelOptions {
        KernelOptions {
            no_ebpf: self.no_ebpf,
            tcp_ports: self.port.map(|p| vec![p]),
        }
    }
}

/// Joins each interval's snapshot with the kernel's view and judges it.
pub struct Pipeline {
    kernel: SharedKernel,
    softirq: SoftirqRates,
    diagnoser: Diagnoser,
    link: LinkHints,
    /// The device the route to the destination uses, looked up once.
    device: crate::net::route::DeviceCache,
}

impl Pipeline {
    /// Loads the kernel programs (softirq, and TCP for `opts.port`) unless
    /// `opts.no_ebpf`; falls back to `/proc` when they cannot load.
    pub fn open(opts: &PipelineOptions) -> Self {
        Self::sharing(KernelSampler::open(&opts.kernel()).shared(), opts)
    }

    /// A pipeline reading `kernel`, loaded once for several destinations
    /// (its port filter must cover every destination's port); `opts`'
    /// `no_ebpf` and `port` are the sampler's business then.
    pub fn sharing(kernel: SharedKernel, opts: &PipelineOptions) -> Self {
        let baseline = kernel.lock().softirq().ok();
        let mut diagnoser = Diagnoser::new(opts.window);
        if let Some(cap) = opts.window_cap {
            diagnoser = diagnoser.with_window_cap(cap);
        }
        Self {
            kernel,
            softirq: SoftirqRates::from(baseline),
            diagnoser,
            link: opts.link,
            device: Default::default(),
        }
    }

    /// Where the data comes from.
    pub fn sources(&self) -> Sources {
        self.kernel.lock().sources()
    }

    /// The engine, for callers that judge more than one run.
    pub fn diagnoser_mut(&mut self) -> &mut Diagnoser {
        &mut self.diagnoser
    }

    /// The device the route to `destination` (`host:port`, or a
    /// `redis://` URL) uses; a name that is not an address has none.
    fn device_for(&mut self, destination: &str) -> Option<String> {
        let addr = crate::ship::redis::host_port(destination)
            .parse::<std::net::SocketAddr>()
            .ok()?;
        self.device.device_for(addr.ip())
    }

    /// The sample of the interval that `snap` closes, and the verdict over
    /// the window that ends with it (`None` until two samples exist).
    /// A failed kernel read leaves that half out of the sample; it never
    /// fails the interval.
    pub fn step(&mut self, snap: &ShipSnapshot) -> (Sample, Option<Diagnosis>) {
        let (softirq, rows) = {
            let mut kernel = self.kernel.lock();
            (kernel.softirq(), kernel.tcp_rows())
        };
        let softirq = match softirq {
            Ok(now) => self.softirq.next(now),
            Err(e) => {
                tracing::debug!("softirq read failed: {e}");
                None
            }
        };
        let mut sample = Sample::from_snapshot(snap.clone(), softirq, self.link);
        sample.device = self.device_for(&snap.destination);
        match rows {
            Some(Ok(rows)) => sample.kernel = own_rows(snap, &rows),
            Some(Err(e)) => tracing::debug!("eBPF TCP read failed: {e}"),
            None => {}
        }
        self.diagnoser.push(sample.clone());
        let diagnosis = self.diagnoser.verdict();
        (sample, diagnosis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_only() -> Pipeline {
        Pipeline::open(&PipelineOptions {
            no_ebpf: true,
            port: Some(3000),
            ..PipelineOptions::default()
        })
    }

    #[test]
    fn without_ebpf_the_sources_say_tcp_info_and_proc() {
        let s = proc_only().sources();
        assert_eq!(s.connections, "tcp_info");
        assert_eq!(s.fallback_reason.as_deref(), Some("--no-ebpf given"));
    }

    #[test]
    fn a_verdict_needs_two_samples() {
        let mut p = proc_only();
        let mut snap = ShipSnapshot::default();
        assert!(p.step(&snap).1.is_none());
        snap.elapsed_s = 1.0;
        let (sample, diagnosis) = p.step(&snap);
        assert!(sample.kernel.is_empty());
        assert!(diagnosis.is_some());
    }
}
