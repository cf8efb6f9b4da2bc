//! Sampling the kernel: the one place the live pipeline loads the kernel
//! programs, and the fallback it reads when they cannot load.
//!
//! Why one sampler: `ship`, `diagnose`, the log path and `observe` all need
//! the same two halves (per-CPU softirq time, per-socket TCP rows) and the
//! same fallback story ("source: /proc (eBPF unavailable: …)"). Built here
//! once, a [`KernelSampler`] can also be shared: the log path with N
//! destinations loads the programs once ([`SharedKernel`]) and feeds one
//! diagnoser per destination.
//!
//! What it does not do: join the rows with the shipper's (that is
//! [`super::join`]) or judge them (that is [`crate::diagnose`]).
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::probe::{
    ebpf::{KernelPrograms, ProbeOptions, TcpProbePath},
    softirq::{SoftirqCounters, SoftirqReport, SoftirqSampler, SoftirqSource},
    tcp::{KernelConn, KernelSnapshot},
    ProbeError,
};

/// What to load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOptions {
    /// Read `/proc` even where eBPF could load.
    pub no_ebpf: bool,
    /// Attach the per-connection TCP programs for sockets on these ports
    /// (empty: every TCP socket); `None`: softirq programs only.
    pub tcp_ports: Option<Vec<u16>>,
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

/// The kernel programs when they load, `/proc` when they do not.
#[derive(Debug)]
pub struct KernelSampler {
    progs: Option<KernelPrograms>,
    fallback_reason: Option<String>,
}

/// One sampler read by several pipelines (one per destination).
pub type SharedKernel = Arc<Mutex<KernelSampler>>;

impl KernelSampler {
    /// Loads the programs `opts` asks for, or remembers why it could not.
    pub fn open(opts: &KernelOptions) -> Self {
        let probe = match &opts.tcp_ports {
            Some(ports) => ProbeOptions::tcp(ports.iter().copied()),
            None => ProbeOptions::default(),
        };
        match KernelPrograms::load_or_explain(opts.no_ebpf, probe) {
            Ok(p) => Self {
                progs: Some(p),
                fallback_reason: None,
            },
            Err(why) => Self {
                progs: None,
                fallback_reason: Some(why),
            },
        }
    }

    /// This sampler behind a lock, for several pipelines to share.
    pub fn shared(self) -> SharedKernel {
        Arc::new(Mutex::new(self))
    }

    /// The programs, if loaded.
    pub fn programs(&self) -> Option<&KernelPrograms> {
        self.progs.as_ref()
    }

    /// Whether the per-connection TCP programs are attached.
    pub fn tcp(&self) -> bool {
        self.progs
            .as_ref()
            .is_some_and(KernelPrograms::tcp_attached)
    }

    /// Why eBPF is not in use, if it is not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// How `tcp_probe` is sampled, when the TCP programs are attached.
    pub fn tcp_probe_path(&self) -> Option<&TcpProbePath> {
        self.progs.as_ref().and_then(KernelPrograms::tcp_probe_path)
    }

    /// Where each half comes from.
    pub fn sources(&self) -> Sources {
        Sources {
            connections: if self.tcp() { "ebpf" } else { "tcp_info" },
            softirq: if self.progs.is_some() {
                SoftirqSource::Ebpf
            } else {
                SoftirqSource::Proc
            },
            fallback_reason: self.fallback_reason.clone(),
        }
    }

    /// The cumulative softirq counters now, from eBPF or `/proc`.
    pub fn softirq(&self) -> Result<SoftirqCounters, ProbeError> {
        match &self.progs {
            Some(p) => p.softirq_counters(),
            None => SoftirqSampler::Proc.read(),
        }
    }

    /// Every row the TCP programs hold (closed ones reported once);
    /// `None` when they are not attached.
    pub fn tcp_rows(&mut self) -> Option<Result<Vec<KernelConn>, ProbeError>> {
        let progs = self.progs.as_mut().filter(|p| p.tcp_attached())?;
        Some(progs.tcp_connections())
    }

    /// Everything the TCP programs know now; `None` when they are not
    /// attached.
    pub fn snapshot(&mut self) -> Option<Result<KernelSnapshot, ProbeError>> {
        let progs = self.progs.as_mut().filter(|p| p.tcp_attached())?;
        Some(KernelSnapshot::read(progs))
    }
}

/// Softirq rates between consecutive readings: each reading closes the
/// interval the previous one opened.
#[derive(Debug, Default)]
pub struct SoftirqRates {
    last: Option<SoftirqCounters>,
}

impl SoftirqRates {
    /// Starting from `baseline` (the first interval ends at the next reading).
    pub fn from(baseline: Option<SoftirqCounters>) -> Self {
        Self { last: baseline }
    }

    /// The rates since the previous reading (`None` for the first), and
    /// `now` kept as the start of the next interval.
    pub fn next(&mut self, now: SoftirqCounters) -> Option<SoftirqReport> {
        let report = self
            .last
            .as_ref()
            .map(|before| SoftirqReport::between(before, &now));
        self.last = Some(now);
        report
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn counters(at: Instant) -> SoftirqCounters {
        SoftirqCounters {
            source: SoftirqSource::Proc,
            at,
            cpus: Vec::new(),
        }
    }

    #[test]
    fn the_first_reading_only_opens_an_interval() {
        let t0 = Instant::now();
        let mut rates = SoftirqRates::default();
        assert!(rates.next(counters(t0)).is_none());
        let report = rates.next(counters(t0 + Duration::from_secs(1))).unwrap();
        assert!((report.interval_ms - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn no_ebpf_reads_proc_and_says_why() {
        let k = KernelSampler::open(&KernelOptions {
            no_ebpf: true,
            tcp_ports: Some(vec![3000]),
        });
        let s = k.sources();
        assert_eq!(s.connections, "tcp_info");
        assert_eq!(s.softirq, SoftirqSource::Proc);
        assert_eq!(s.fallback_reason.as_deref(), Some("--no-ebpf given"));
        assert!(!k.tcp());
    }
}
