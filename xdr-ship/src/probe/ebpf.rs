//! Loading the kernel programs and reading their maps.
//!
//! Why the object is embedded: the binary must be self-contained on a source
//! node (no separate `.o` to ship or find). `cargo xtask build` builds the
//! object and points the build script at it; a plain `cargo build` embeds an
//! empty placeholder, which [`KernelPrograms::load`] reports as
//! [`ProbeError::NotBuilt`] so the caller can fall back and say why.
use aya::{
    maps::{MapData, PerCpuArray},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use xdr_common::{
    SoftirqStat, GLOBAL_SOFTIRQ_VEC_OFFSET, MAP_SOFTIRQ_STATS, NR_SOFTIRQS, PROG_SOFTIRQ_ENTRY,
    PROG_SOFTIRQ_EXIT,
};

use super::{tracefs, ProbeError};

/// The kernel object, or an empty slice when built without it.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdr-ebpf.o"));

/// Whether this binary carries the kernel programs.
pub fn built_with_kernel_programs() -> bool {
    !KERNEL_OBJECT.is_empty()
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

/// The loaded and attached kernel programs. Dropping it detaches them.
pub struct KernelPrograms {
    bpf: Ebpf,
    online_cpus: Vec<u32>,
}

impl std::fmt::Debug for KernelPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrograms")
            .field("online_cpus", &self.online_cpus)
            .finish_non_exhaustive()
    }
}

impl KernelPrograms {
    /// Loads the embedded object, patches tracepoint field offsets read from
    /// tracefs, and attaches the softirq programs.
    pub fn load() -> Result<Self, ProbeError> {
        if !built_with_kernel_programs() {
            return Err(ProbeError::NotBuilt);
        }
        raise_memlock_limit();
        let root = tracefs::ensure_mounted()?;
        let entry_off = tracefs::field_offset(&root, "irq", "softirq_entry", "vec")?;
        let exit_off = tracefs::field_offset(&root, "irq", "softirq_exit", "vec")?;
        if entry_off != exit_off {
            return Err(ProbeError::Layout(format!(
                "irq:softirq_entry has `vec` at offset {entry_off} but irq:softirq_exit at {exit_off}"
            )));
        }
        let mut bpf = EbpfLoader::new()
            .override_global(GLOBAL_SOFTIRQ_VEC_OFFSET, &entry_off, true)
            .load(KERNEL_OBJECT)
            .map_err(|source| ProbeError::Load { source })?;
        match aya_log::EbpfLogger::init(&mut bpf) {
            // Kept alive by leaking nothing: the logger owns a ring buffer fd
            // that user space would have to poll; the programs log nothing
            // yet, so there is nothing to drain.
            Ok(_logger) => tracing::debug!("kernel log buffer present"),
            Err(e) => tracing::debug!("no kernel log statements in the object: {e}"),
        }
        for (prog, event) in [
            (PROG_SOFTIRQ_ENTRY, "softirq_entry"),
            (PROG_SOFTIRQ_EXIT, "softirq_exit"),
        ] {
            attach_tracepoint(&mut bpf, prog, "irq", event)?;
        }
        let online_cpus = aya::util::online_cpus().map_err(|(_, e)| ProbeError::Proc {
            path: "/sys/devices/system/cpu/online".to_owned(),
            source: e,
        })?;
        Ok(Self { bpf, online_cpus })
    }

    /// Reads the softirq counters of every online CPU.
    pub fn softirq_stats(&self) -> Result<Vec<CpuSoftirqStats>, ProbeError> {
        let map = self
            .bpf
            .map(MAP_SOFTIRQ_STATS)
            .ok_or(ProbeError::MissingMap(MAP_SOFTIRQ_STATS))?;
        let stats: PerCpuArray<&MapData, SoftirqStat> =
            PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
                name: MAP_SOFTIRQ_STATS,
                source,
            })?;
        let mut out: Vec<CpuSoftirqStats> = self
            .online_cpus
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
}

fn attach_tracepoint(
    bpf: &mut Ebpf,
    prog: &'static str,
    category: &str,
    event: &str,
) -> Result<(), ProbeError> {
    let program: &mut TracePoint = bpf
        .program_mut(prog)
        .ok_or(ProbeError::MissingProgram(prog))?
        .try_into()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .load()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .attach(category, event)
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; raising it is
/// harmless where memcg accounting is used instead.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid, initialised `rlimit` that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if rc != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
