//! Per-CPU softirq load: the `si` column of `top`, split by vector.
//!
//! Why it matters here: at ~100K records/s per node the seed's limit was "the
//! system interrupts … look at the si column per core": one CPU drowning in
//! NET_RX while the others idle. A sampler reads cumulative counters from
//! eBPF (time per vector) or `/proc` (time per CPU, runs per vector); the
//! difference of two samples over the wall time between them gives rates.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aya::maps::{MapData, PerCpuArray};
use serde::{Deserialize, Serialize};
use xdr_common::{SoftirqStat, MAP_SOFTIRQ_STATS, NR_SOFTIRQS, SOFTIRQ_NAMES};

use super::{
    ebpf::{KernelPrograms, ProbeOptions},
    procfs, ProbeError,
};

/// Where softirq numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoftirqSource {
    /// The kernel programs: time and runs per vector per CPU.
    Ebpf,
    /// `/proc/softirqs` (runs per vector) and `/proc/stat` (time per CPU).
    Proc,
}

impl std::fmt::Display for SoftirqSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SoftirqSource::Ebpf => "eBPF",
            SoftirqSource::Proc => "/proc",
        })
    }
}

/// Cumulative counters of one CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuCounters {
    /// CPU number.
    pub cpu: usize,
    /// Runs per vector.
    pub runs: [u64; NR_SOFTIRQS],
    /// Nanoseconds per vector (eBPF only).
    pub vector_ns: Option<[u64; NR_SOFTIRQS]>,
    /// Nanoseconds in softirq, all vectors.
    pub total_ns: u64,
}

/// One reading of every online CPU's counters.
#[derive(Clone, Debug)]
pub struct SoftirqCounters {
    /// Which source was read.
    pub source: SoftirqSource,
    /// When it was read.
    pub at: Instant,
    /// One entry per online CPU, in CPU order.
    pub cpus: Vec<CpuCounters>,
}

/// Cumulative softirq time and runs of one CPU, by vector, as the kernel
/// programs counted them since they were attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSoftirqStats {
    /// CPU number.
    pub cpu: usize,
    /// Per vector: time spent and runs.
    pub vectors: [SoftirqStat; NR_SOFTIRQS],
}

/// The reader of the softirq programs' map.
impl KernelPrograms {
    /// Reads the softirq counters of every online CPU.
    pub fn softirq_stats(&self) -> Result<Vec<CpuSoftirqStats>, ProbeError> {
        let map = self.map(MAP_SOFTIRQ_STATS)?;
        let stats: PerCpuArray<&MapData, SoftirqStat> =
            PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
                name: MAP_SOFTIRQ_STATS,
                source,
            })?;
        let mut out: Vec<CpuSoftirqStats> = self
            .online_cpus()
            .iter()
            .map(|&cpu| CpuSoftirqStats {
                cpu: cpu as usize,
                vectors: [SoftirqStat::default(); NR_SOFTIRQS],
            })
            .collect();
        for vec in 0..NR_SOFTIRQS {
            let values = stats
                .get(&(vec as u32), 0)
                .map_err(|source| ProbeError::Map {
                    name: MAP_SOFTIRQ_STATS,
                    source,
                })?;
            for row in out.iter_mut() {
                if let Some(v) = values.get(row.cpu) {
                    row.vectors[vec] = *v;
                }
            }
        }
        Ok(out)
    }

    /// The softirq counters as the sampler's [`SoftirqCounters`] (source
    /// eBPF), read now.
    pub fn softirq_counters(&self) -> Result<SoftirqCounters, ProbeError> {
        let cpus = self
            .softirq_stats()?
            .into_iter()
            .map(|c| {
                let vector_ns = c.vectors.map(|v| v.time_ns);
                CpuCounters {
                    cpu: c.cpu,
                    runs: c.vectors.map(|v| v.count),
                    total_ns: vector_ns.iter().sum(),
                    vector_ns: Some(vector_ns),
                }
            })
            .collect();
        Ok(SoftirqCounters {
            source: SoftirqSource::Ebpf,
            at: Instant::now(),
            cpus,
        })
    }
}

/// Reads softirq counters from eBPF, or from `/proc` when eBPF is not used.
#[derive(Debug)]
pub enum SoftirqSampler {
    /// Attached kernel programs.
    Ebpf(KernelPrograms),
    /// `/proc` fallback.
    Proc,
}

impl SoftirqSampler {
    /// Loads the kernel programs unless `no_ebpf`; on failure falls back to
    /// `/proc` and returns the reason alongside, for the output to name.
    pub fn open(no_ebpf: bool) -> (Self, Option<String>) {
        match KernelPrograms::load_or_explain(no_ebpf, ProbeOptions::default()) {
            Ok(progs) => (Self::Ebpf(progs), None),
            Err(why) => (Self::Proc, Some(why)),
        }
    }

    /// The source this sampler reads.
    pub fn source(&self) -> SoftirqSource {
        match self {
            Self::Ebpf(_) => SoftirqSource::Ebpf,
            Self::Proc => SoftirqSource::Proc,
        }
    }

    /// Reads the cumulative counters now.
    pub fn read(&self) -> Result<SoftirqCounters, ProbeError> {
        match self {
            Self::Ebpf(progs) => progs.softirq_counters(),
            Self::Proc => {
                let runs = procfs::read_softirqs()?;
                let stat = procfs::read_stat()?;
                let ns_per_tick = procfs::ns_per_tick();
                let cpus = runs
                    .into_iter()
                    .map(|r| CpuCounters {
                        cpu: r.cpu,
                        runs: r.runs,
                        vector_ns: None,
                        total_ns: stat
                            .iter()
                            .find(|s| s.cpu == r.cpu)
                            .map_or(0, |s| s.ticks * ns_per_tick),
                    })
                    .collect();
                Ok(SoftirqCounters {
                    source: SoftirqSource::Proc,
                    at: Instant::now(),
                    cpus,
                })
            }
        }
    }
}

/// One vector's rates on one CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorRate {
    /// Kernel name (`NET_RX`): borrowed when measured, owned when replayed
    /// from a recording.
    pub name: std::borrow::Cow<'static, str>,
    /// Runs per second.
    pub runs_per_s: f64,
    /// Percent of wall time spent in this vector (eBPF only).
    pub time_pct: Option<f64>,
}

/// One CPU's softirq load over an interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuRate {
    /// CPU number.
    pub cpu: usize,
    /// Percent of wall time in softirq, all vectors: `top`'s `si`.
    pub total_pct: f64,
    /// Per vector, in kernel order.
    pub vectors: Vec<VectorRate>,
}

impl CpuRate {
    /// The rate of the vector named `name`.
    pub fn vector(&self, name: &str) -> Option<&VectorRate> {
        self.vectors.iter().find(|v| v.name == name)
    }
}

/// Softirq load of every CPU over one interval: what `softirqs` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftirqReport {
    /// Seconds since the Unix epoch at the end of the interval.
    pub unix_time_s: f64,
    /// Which source was read.
    pub source: SoftirqSource,
    /// Why eBPF is not the source, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Length of the interval in milliseconds.
    pub interval_ms: f64,
    /// One entry per CPU present in both readings.
    pub cpus: Vec<CpuRate>,
}

impl SoftirqReport {
    /// Rates between two readings of the same source.
    pub fn between(before: &SoftirqCounters, after: &SoftirqCounters) -> Self {
        let wall = after.at.saturating_duration_since(before.at);
        Self::from_counters(before, after, wall)
    }

    /// Rates between two readings taken `wall` apart.
    pub fn from_counters(
        before: &SoftirqCounters,
        after: &SoftirqCounters,
        wall: Duration,
    ) -> Self {
        let wall_s = wall.as_secs_f64().max(1e-9);
        let wall_ns = wall_s * 1e9;
        let cpus = after
            .cpus
            .iter()
            .filter_map(|a| {
                let b = before.cpus.iter().find(|b| b.cpu == a.cpu)?;
                let vectors = (0..NR_SOFTIRQS)
                    .map(|v| VectorRate {
                        name: SOFTIRQ_NAMES[v].into(),
                        runs_per_s: a.runs[v].saturating_sub(b.runs[v]) as f64 / wall_s,
                        time_pct: a
                            .vector_ns
                            .zip(b.vector_ns)
                            .map(|(an, bn)| pct(an[v].saturating_sub(bn[v]) as f64, wall_ns)),
                    })
                    .collect();
                Some(CpuRate {
                    cpu: a.cpu,
                    total_pct: pct(a.total_ns.saturating_sub(b.total_ns) as f64, wall_ns),
                    vectors,
                })
            })
            .collect();
        Self {
            unix_time_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            source: after.source,
            fallback_reason: None,
            interval_ms: wall_s * 1e3,
            cpus,
        }
    }

    /// A table, one row per CPU, for a terminal 80 columns wide.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        // HRTIMER has a column of its own: with BBR pacing (the default
        // here) the TCP transmit path runs in it. 4 + 9 × 8 = 76 columns.
        const SHOWN: [&str; 7] = [
            "NET_RX", "NET_TX", "TIMER", "HRTIMER", "SCHED", "RCU", "TASKLET",
        ];
        let per_vector_time = self
            .cpus
            .iter()
            .all(|c| c.vectors.iter().all(|v| v.time_pct.is_some()));
        let mut out = String::new();
        let _ = write!(out, "source: {}", self.source);
        if let Some(why) = &self.fallback_reason {
            let _ = write!(out, " ({why})");
        }
        let unit = if per_vector_time {
            "% of wall time per vector"
        } else {
            "runs/s per vector (time per vector needs eBPF); total = % of wall time"
        };
        let _ = writeln!(out, "\ninterval {:.0} ms; {unit}", self.interval_ms);
        let _ = write!(out, "{:>4}", "CPU");
        for name in SHOWN.iter().chain(&["other", "total"]) {
            let _ = write!(out, " {name:>7}");
        }
        out.push('\n');
        for cpu in &self.cpus {
            let _ = write!(out, "{:>4}", cpu.cpu);
            let cell = |v: &VectorRate| match v.time_pct {
                Some(p) if per_vector_time => format!("{p:>6.2}%"),
                _ => format!("{:>7.0}", v.runs_per_s),
            };
            for name in SHOWN {
                let v = cpu.vector(name).map(cell).unwrap_or_default();
                let _ = write!(out, " {v:>7}");
            }
            let other: Vec<&VectorRate> = cpu
                .vectors
                .iter()
                .filter(|v| !SHOWN.contains(&&*v.name))
                .collect();
            let other_cell = if per_vector_time {
                format!(
                    "{:>6.2}%",
                    other.iter().filter_map(|v| v.time_pct).sum::<f64>()
                )
            } else {
                format!("{:>7.0}", other.iter().map(|v| v.runs_per_s).sum::<f64>())
            };
            let _ = writeln!(out, " {other_cell:>7} {:>6.2}%", cpu.total_pct);
        }
        out
    }
}

fn pct(part_ns: f64, wall_ns: f64) -> f64 {
    (part_ns / wall_ns * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdr_common::SOFTIRQ_NET_RX;

    fn counters(
        source: SoftirqSource,
        at: Instant,
        runs: u64,
        net_rx_ns: Option<u64>,
    ) -> SoftirqCounters {
        let mut r = [0; NR_SOFTIRQS];
        r[SOFTIRQ_NET_RX] = runs;
        let vector_ns = net_rx_ns.map(|ns| {
            let mut v = [0; NR_SOFTIRQS];
            v[SOFTIRQ_NET_RX] = ns;
            v
        });
        SoftirqCounters {
            source,
            at,
            cpus: vec![CpuCounters {
                cpu: 0,
                runs: r,
                vector_ns,
                total_ns: net_rx_ns.unwrap_or(250_000_000),
            }],
        }
    }

    #[test]
    fn ebpf_time_becomes_percent_of_wall_time_per_vector() {
        let t0 = Instant::now();
        let before = counters(SoftirqSource::Ebpf, t0, 100, Some(0));
        let after = counters(SoftirqSource::Ebpf, t0, 1100, Some(250_000_000));
        let report = SoftirqReport::from_counters(&before, &after, Duration::from_secs(1));
        let net_rx = report.cpus[0].vector("NET_RX").unwrap();
        assert_eq!(net_rx.time_pct, Some(25.0));
        assert_eq!(net_rx.runs_per_s, 1000.0);
        assert_eq!(report.cpus[0].total_pct, 25.0);
    }

    #[test]
    fn proc_source_has_runs_per_vector_but_no_time_per_vector() {
        let t0 = Instant::now();
        let mut before = counters(SoftirqSource::Proc, t0, 0, None);
        before.cpus[0].total_ns = 0;
        let after = counters(SoftirqSource::Proc, t0, 500, None);
        let report = SoftirqReport::from_counters(&before, &after, Duration::from_millis(500));
        let net_rx = report.cpus[0].vector("NET_RX").unwrap();
        assert_eq!(net_rx.time_pct, None);
        assert_eq!(net_rx.runs_per_s, 1000.0);
        assert_eq!(report.cpus[0].total_pct, 50.0);
    }

    #[test]
    fn table_names_its_source_and_has_one_row_per_cpu() {
        let t0 = Instant::now();
        let before = counters(SoftirqSource::Ebpf, t0, 0, Some(0));
        let after = counters(SoftirqSource::Ebpf, t0, 10, Some(12_340_000));
        let mut report = SoftirqReport::from_counters(&before, &after, Duration::from_secs(1));
        let table = report.render_table();
        assert!(table.starts_with("source: eBPF\n"), "{table}");
        let rows: Vec<&str> = table.lines().skip(3).collect();
        assert_eq!(rows.len(), 1, "{table}");
        assert!(rows[0].trim_start().starts_with("0 "), "{table}");
        assert!(rows[0].contains("1.23%"), "{table}");
        assert!(
            table
                .lines()
                .all(|l| l.len() <= 80 || l.starts_with("source")),
            "{table}"
        );

        report.source = SoftirqSource::Proc;
        report.fallback_reason = Some("--no-ebpf given".into());
        assert!(report
            .render_table()
            .starts_with("source: /proc (--no-ebpf given)\n"));
    }

    #[test]
    fn counters_that_go_backwards_give_zero_not_garbage() {
        let t0 = Instant::now();
        let before = counters(SoftirqSource::Ebpf, t0, 500, Some(900));
        let after = counters(SoftirqSource::Ebpf, t0, 100, Some(100));
        let report = SoftirqReport::from_counters(&before, &after, Duration::from_secs(1));
        assert_eq!(report.cpus[0].vector("NET_RX").unwrap().runs_per_s, 0.0);
        assert_eq!(report.cpus[0].total_pct, 0.0);
    }
}
