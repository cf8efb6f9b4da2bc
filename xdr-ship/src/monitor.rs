//! The shipper's eyes at run time: each snapshot interval, the kernel's view
//! (eBPF rows of the shipper's own sockets, per-CPU softirq time) joined to
//! the shipper's own numbers into one [`Sample`], and the verdict over the
//! last window.
//!
//! Why one place: the headless line, `--json`, Prometheus, the TUI, a
//! recording and `xdr-ship diagnose` all show the same joined sample and
//! the same verdict. Built once per interval here, they cannot disagree.
//!
//! Why eBPF is optional: the verdict reads `TCP_INFO` (carried in every
//! [`crate::metrics::ConnSnapshot`]) because it holds the kernel's chrono
//! timers, which eBPF cannot see; eBPF adds the per-socket rows that `ss`
//! would show and per-vector softirq time. Without root or BTF the monitor
//! falls back to `/proc` for softirq and says so in [`Monitor::sources`].
//!
//! Cost: one map walk and two small `/proc` reads per interval (about a
//! millisecond), on the caller's thread.
use std::{collections::HashSet, time::Duration};

use serde::Serialize;

use crate::{
    diagnose::{Diagnoser, Diagnosis, LinkHints, Sample},
    metrics::ShipSnapshot,
    probe::{
        ebpf::{KernelPrograms, ProbeOptions},
        softirq::{SoftirqCounters, SoftirqReport, SoftirqSampler, SoftirqSource},
    },
};

/// How the monitor is set up.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// Use `/proc` even where eBPF could load.
    pub no_ebpf: bool,
    /// The destination's port: the TCP programs watch only sockets on it.
    pub port: Option<u16>,
    /// The window the verdict is judged over.
    pub window: Duration,
    /// What the operator told us about the link.
    pub link: LinkHints,
}

impl Default for MonitorOptions {
    /// eBPF if it loads, a 10 s window, no link hints.
    fn default() -> Self {
        Self {
            no_ebpf: false,
            port: None,
            window: Duration::from_secs(10),
            link: LinkHints::default(),
        }
    }
}

/// Where each half of a sample comes from, for every output to name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// `ebpf` or `tcp_info`: who fills the per-connection kernel columns.
    pub connections: &'static str,
    /// `ebpf` or `proc`.
    pub softirq: SoftirqSource,
    /// Why eBPF is not in use, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// Joins each interval's snapshot with the kernel's view and judges it.
pub struct Monitor {
    sampler: SoftirqSampler,
    tcp: bool,
    fallback_reason: Option<String>,
    last_softirq: Option<SoftirqCounters>,
    diagnoser: Diagnoser,
    link: LinkHints,
}

impl Monitor {
    /// Loads the kernel programs (softirq, and TCP for `opts.port`) unless
    /// `opts.no_ebpf`; falls back to `/proc` when they cannot load.
    pub fn open(opts: &MonitorOptions) -> Self {
        let (sampler, tcp, fallback_reason) = if opts.no_ebpf {
            (SoftirqSampler::Proc, false, Some("--no-ebpf given".into()))
        } else {
            let probe = match opts.port {
                Some(p) => ProbeOptions::tcp([p]),
                None => ProbeOptions::default(),
            };
            let tcp = probe.tcp;
            match KernelPrograms::load_with(probe) {
                Ok(p) => (SoftirqSampler::Ebpf(p), tcp, None),
                Err(e) => (
                    SoftirqSampler::Proc,
                    false,
                    Some(format!("eBPF unavailable: {e}")),
                ),
            }
        };
        let last_softirq = sampler.read().ok();
        Self {
            sampler,
            tcp,
            fallback_reason,
            last_softirq,
            diagnoser: Diagnoser::new(opts.window),
            link: opts.link,
        }
    }

    /// Where the data comes from.
    pub fn sources(&self) -> Sources {
        Sources {
            connections: if self.tcp { "ebpf" } else { "tcp_info" },
            softirq: self.sampler.source(),
            fallback_reason: self.fallback_reason.clone(),
        }
    }

    /// The engine, for callers that judge more than one run.
    pub fn diagnoser_mut(&mut self) -> &mut Diagnoser {
        &mut self.diagnoser
    }

    /// The sample of the interval that `snap` closes, and the verdict over
    /// the window that ends with it (`None` until two samples exist).
    /// A failed kernel read leaves that half out of the sample; it never
    /// fails the interval.
    pub fn observe(&mut self, snap: &ShipSnapshot) -> (Sample, Option<Diagnosis>) {
        let softirq = match self.sampler.read() {
            Ok(now) => {
                let report = self
                    .last_softirq
                    .as_ref()
                    .map(|before| SoftirqReport::between(before, &now));
                self.last_softirq = Some(now);
                report
            }
            Err(e) => {
                tracing::debug!("softirq read failed: {e}");
                None
            }
        };
        let mut sample = Sample::from_snapshot(snap.clone(), softirq, self.link);
        if let (SoftirqSampler::Ebpf(progs), true) = (&mut self.sampler, self.tcp) {
            match progs.tcp_connections() {
                Ok(conns) => {
                    let ours: HashSet<u64> = snap
                        .connections
                        .iter()
                        .map(|c| c.cookie)
                        .filter(|c| *c != 0)
                        .collect();
                    sample.kernel = conns
                        .into_iter()
                        .filter(|k| ours.contains(&k.cookie))
                        .collect();
                }
                Err(e) => tracing::debug!("eBPF TCP read failed: {e}"),
            }
        }
        self.diagnoser.push(sample.clone());
        let diagnosis = self.diagnoser.verdict();
        (sample, diagnosis)
    }

    /// The programs, if loaded (for callers that read more of them).
    pub fn programs(&self) -> Option<&KernelPrograms> {
        match &self.sampler {
            SoftirqSampler::Ebpf(p) => Some(p),
            SoftirqSampler::Proc => None,
        }
    }
}
