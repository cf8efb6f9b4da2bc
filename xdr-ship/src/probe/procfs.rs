//! `/proc/softirqs` and `/proc/stat`: the no-eBPF view of softirq work.
//!
//! Why both files: `/proc/softirqs` counts runs per vector per CPU but says
//! nothing about time; `/proc/stat` has the time per CPU (the `si` column of
//! `top`) but not per vector. Together they are what an unprivileged process
//! can know, and the eBPF programs are checked against the first.
use std::path::Path;

use xdr_common::{NR_SOFTIRQS, SOFTIRQ_NAMES};

use super::ProbeError;

/// Path of the per-vector run counters.
pub const PROC_SOFTIRQS: &str = "/proc/softirqs";
/// Path of the per-CPU time counters.
pub const PROC_STAT: &str = "/proc/stat";

/// Cumulative softirq runs of one CPU, by vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuRuns {
    /// CPU number (`CPU3` → 3).
    pub cpu: usize,
    /// Runs since boot, indexed by vector number.
    pub runs: [u64; NR_SOFTIRQS],
}

/// Parses `/proc/softirqs`: a header of `CPUn` columns (online CPUs only),
/// then one `NAME: n n …` line per vector.
pub fn parse_softirqs(text: &str) -> Result<Vec<CpuRuns>, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty file")?;
    let mut cpus = Vec::new();
    for col in header.split_whitespace() {
        let n = col
            .strip_prefix("CPU")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected header column `{col}`"))?;
        cpus.push(CpuRuns {
            cpu: n,
            runs: [0; NR_SOFTIRQS],
        });
    }
    for line in lines {
        let Some((name, counts)) = line.split_once(':') else {
            continue;
        };
        // Vectors this build does not know about are ignored, not an error:
        // a newer kernel may add one.
        let Some(vec) = SOFTIRQ_NAMES.iter().position(|n| *n == name.trim()) else {
            continue;
        };
        for (i, count) in counts.split_whitespace().enumerate() {
            let cpu = cpus
                .get_mut(i)
                .ok_or_else(|| format!("more counts than CPUs on line `{line}`"))?;
            cpu.runs[vec] = count
                .parse()
                .map_err(|_| format!("bad count `{count}` on line `{line}`"))?;
        }
    }
    Ok(cpus)
}

/// Cumulative softirq time of one CPU from `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSoftirqTicks {
    /// CPU number.
    pub cpu: usize,
    /// The `softirq` column (7th after the name), in `USER_HZ` ticks.
    pub ticks: u64,
}

/// Parses the `cpuN …` lines of `/proc/stat` (not the aggregate `cpu` line).
pub fn parse_stat(text: &str) -> Result<Vec<CpuSoftirqTicks>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(n) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
            continue;
        };
        let cpu = n.parse().map_err(|_| format!("bad cpu name `{name}`"))?;
        let ticks = fields
            .nth(6)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("no softirq column on line `{line}`"))?;
        out.push(CpuSoftirqTicks { cpu, ticks });
    }
    Ok(out)
}

/// Nanoseconds per `USER_HZ` tick, the unit of `/proc/stat`.
pub fn ns_per_tick() -> u64 {
    // SAFETY: `sysconf` has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    1_000_000_000 / hz
}

fn read(path: &str) -> Result<String, ProbeError> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| ProbeError::Proc {
        path: path.to_owned(),
        source,
    })
}

/// Reads and parses `/proc/softirqs`.
pub fn read_softirqs() -> Result<Vec<CpuRuns>, ProbeError> {
    parse_softirqs(&read(PROC_SOFTIRQS)?).map_err(|reason| ProbeError::ProcFormat {
        path: PROC_SOFTIRQS.to_owned(),
        reason,
    })
}

/// Reads and parses `/proc/stat`.
pub fn read_stat() -> Result<Vec<CpuSoftirqTicks>, ProbeError> {
    parse_stat(&read(PROC_STAT)?).map_err(|reason| ProbeError::ProcFormat {
        path: PROC_STAT.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdr_common::{SOFTIRQ_NET_RX, SOFTIRQ_NET_TX};

    const SOFTIRQS: &str = "                    CPU0       CPU1       \n\
          HI:          1          0\n\
       TIMER:       1495       1097\n\
      NET_TX:          7          2\n\
      NET_RX:        120        300\n\
       BLOCK:          0          0\n\
    IRQ_POLL:          0          0\n\
     TASKLET:          3          4\n\
       SCHED:         10         11\n\
     HRTIMER:          0          0\n\
         RCU:         50         60\n";

    #[test]
    fn softirqs_are_read_per_cpu_and_vector() {
        let cpus = parse_softirqs(SOFTIRQS).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].cpu, 0);
        assert_eq!(cpus[1].runs[SOFTIRQ_NET_RX], 300);
        assert_eq!(cpus[0].runs[SOFTIRQ_NET_TX], 7);
        assert_eq!(cpus[1].runs[9], 60);
    }

    #[test]
    fn softirqs_header_keeps_the_numbers_of_online_cpus() {
        let text = "   CPU0   CPU2\nNET_RX:   5   9\n";
        let cpus = parse_softirqs(text).unwrap();
        assert_eq!(cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(cpus[1].runs[SOFTIRQ_NET_RX], 9);
    }

    #[test]
    fn softirqs_with_a_bad_count_is_an_error_naming_the_line() {
        let err = parse_softirqs("CPU0\nNET_RX: x\n").unwrap_err();
        assert!(err.contains("NET_RX: x"), "{err}");
    }

    #[test]
    fn stat_gives_softirq_ticks_per_cpu_without_the_aggregate() {
        let text = "cpu  10 0 20 300 4 5 66 0 0 0\n\
                    cpu0 5 0 10 150 2 2 30 0 0 0\n\
                    cpu1 5 0 10 150 2 3 36 0 0 0\n\
                    intr 12345\n";
        let cpus = parse_stat(text).unwrap();
        assert_eq!(
            cpus,
            vec![
                CpuSoftirqTicks { cpu: 0, ticks: 30 },
                CpuSoftirqTicks { cpu: 1, ticks: 36 }
            ]
        );
    }
}
