//! Types shared by the kernel programs (`xdr-ebpf`) and user space (`xdr-ship`).
//!
//! Why a crate of its own: the kernel writes these structs into BPF maps and
//! user space reads the same bytes back, so both sides must agree on layout to
//! the byte. Everything here is `#[repr(C)]` with explicit padding and a size
//! assertion, compiles under `no_std` for `bpfel-unknown-none`, and gains
//! `aya::Pod` impls only with the `user` feature (the kernel side never links
//! aya).
//!
//! Map and global names live here too, so a rename on one side cannot silently
//! break the other.
#![no_std]

/// Number of softirq vectors the kernel defines (`NR_SOFTIRQS`). The order of
/// [`SOFTIRQ_NAMES`] is the kernel's `enum softirq` order, which is also the
/// `vec` field of `irq:softirq_entry` / `irq:softirq_exit`.
pub const NR_SOFTIRQS: usize = 10;

/// Kernel names of the softirq vectors, indexed by vector number, as printed
/// in `/proc/softirqs`.
pub const SOFTIRQ_NAMES: [&str; NR_SOFTIRQS] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// Vector number of `NET_TX_SOFTIRQ`.
pub const SOFTIRQ_NET_TX: usize = 2;
/// Vector number of `NET_RX_SOFTIRQ`.
pub const SOFTIRQ_NET_RX: usize = 3;

/// Per-CPU array map, `NR_SOFTIRQS` entries of [`SoftirqStat`], index = vector.
pub const MAP_SOFTIRQ_STATS: &str = "SOFTIRQ_STATS";
/// Per-CPU array map, one [`SoftirqStart`]: the vector running on this CPU and
/// when it entered.
pub const MAP_SOFTIRQ_START: &str = "SOFTIRQ_START";

/// Global (`.rodata`) holding the byte offset of the `vec` field in the
/// `irq:softirq_entry`/`irq:softirq_exit` records, read from tracefs `format`
/// at load time because tracepoint layouts are not a stable ABI.
pub const GLOBAL_SOFTIRQ_VEC_OFFSET: &str = "SOFTIRQ_VEC_OFFSET";

/// Names of the kernel programs in the object, and the tracepoints they attach to.
pub const PROG_SOFTIRQ_ENTRY: &str = "softirq_entry";
/// See [`PROG_SOFTIRQ_ENTRY`].
pub const PROG_SOFTIRQ_EXIT: &str = "softirq_exit";

/// Time spent in, and number of runs of, one softirq vector on one CPU since
/// the programs were attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftirqStat {
    /// Nanoseconds between `softirq_entry` and `softirq_exit`, summed.
    pub time_ns: u64,
    /// Completed runs (entry followed by a matching exit).
    pub count: u64,
}

/// The softirq currently running on a CPU. Softirqs do not nest on one CPU,
/// so one slot per CPU is enough.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftirqStart {
    /// `bpf_ktime_get_ns()` at entry; 0 when no softirq is running.
    pub entered_ns: u64,
    /// Vector that entered.
    pub vec: u32,
    /// Explicit padding so both sides agree on the size.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SoftirqStat>() == 16);
const _: () = assert!(core::mem::size_of::<SoftirqStart>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `SoftirqStat` is `repr(C)`, `Copy`, made only of `u64`s with no
    // padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SoftirqStat {}
    // SAFETY: `SoftirqStart` is `repr(C)`, `Copy`, two `u32` after one `u64`
    // with the padding made explicit, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SoftirqStart {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_names_follow_the_kernel_vector_order() {
        assert_eq!(SOFTIRQ_NAMES[SOFTIRQ_NET_RX], "NET_RX");
        assert_eq!(SOFTIRQ_NAMES[SOFTIRQ_NET_TX], "NET_TX");
        assert_eq!(SOFTIRQ_NAMES.len(), NR_SOFTIRQS);
    }
}
