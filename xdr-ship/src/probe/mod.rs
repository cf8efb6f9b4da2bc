//! Kernel-side eyes: eBPF programs when we may load them, `/proc` when not.
//!
//! Why two sources: the operator must never be blind. eBPF sees more (time
//! per softirq vector, later per-connection TCP state), but needs root (or
//! CAP_BPF + CAP_PERFMON) and a binary built with the kernel programs. When
//! it cannot load, the same views come from `/proc`, and every output names
//! the source it read ("source: eBPF" / "source: /proc").
//!
//! Layout:
//! - [`ebpf`]: the one loader: the embedded object, the tracepoint layouts
//!   patched in (`layout`), attaching; readers reach its maps through it;
//! - [`tracefs`]: mounting tracefs, tracepoint field offsets;
//! - [`procfs`]: `/proc/softirqs` and `/proc/stat` parsers;
//! - [`inet_diag`]: any process's TCP flows with their `tcp_info`, through
//!   netlink `sock_diag`, as `ss -ti` sees them;
//! - [`softirq`]: the softirq map's reader, one sampler over either source,
//!   rates, and their rendering;
//! - [`tcp`]: the TCP maps' reader: the per-connection view of the eBPF
//!   programs, keyed by socket cookie, and the machine-wide counters.
//!
//! Arrows point one way: `softirq` and `tcp` read through `ebpf`, which
//! imports neither. Joining these rows with the shipper's numbers, judging
//! them and showing them is [`crate::live`]'s work, not this module's.
pub mod btf;
pub mod ebpf;
pub mod inet_diag;
mod layout;
pub mod procfs;
pub mod softirq;
pub mod tcp;
pub mod tracefs;

/// Why a probe could not load or read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The binary carries the empty placeholder object.
    #[error(
        "this binary was built without kernel programs; build them with \
         `cargo xtask build` (needs bpf-linker: `cargo xtask setup` installs it)"
    )]
    NotBuilt,
    /// tracefs is missing or a tracepoint layout could not be read.
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// Two tracepoint layouts disagree in a way the programs cannot handle.
    #[error("unsupported tracepoint layout: {0}")]
    Layout(String),
    /// The kernel refused the object.
    #[error(
        "loading the kernel programs failed: {source} \
         (needs root, or CAP_BPF + CAP_PERFMON, and a kernel with BTF)"
    )]
    Load {
        /// aya's reason.
        source: aya::EbpfError,
    },
    /// The TCP maps were asked for but the TCP programs were not attached.
    #[error(
        "the TCP programs are not attached: load them with \
         `KernelPrograms::load_with(ProbeOptions {{ tcp: true, .. }})`"
    )]
    TcpNotAttached,
    /// The object lacks a program this binary expects.
    #[error("the kernel object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The object lacks a map this binary expects.
    #[error("the kernel object has no map `{0}`")]
    MissingMap(&'static str),
    /// Loading or attaching a program failed.
    #[error("kernel program `{name}`: {source} (needs root, or CAP_BPF + CAP_PERFMON)")]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's reason.
        source: aya::programs::ProgramError,
    },
    /// Reading a map failed.
    #[error("reading map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's reason.
        source: aya::maps::MapError,
    },
    /// The netlink socket dump failed.
    #[error(transparent)]
    Netlink(#[from] inet_diag::DiagError),
    /// A `/proc` or `/sys` file could not be read.
    #[error("reading {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
    /// A `/proc` file did not look as expected.
    #[error("unexpected format in {path}: {reason}")]
    ProcFormat {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}
