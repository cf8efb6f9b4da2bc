//! Kernel programs of xdr-ship, loaded by `xdr-ship`'s `probe` module.
//!
//! Why tracepoints: these kernels have no kprobes or fentry, and tracepoints
//! are the stable interface elsewhere too. Every program exists twice: a
//! BTF-typed raw tracepoint (`tp_btf`), handed the tracepoint's arguments
//! and reading fields at offsets user space took from the kernel's BTF, and
//! the classic one, reading the record at offsets from tracefs `format`.
//! User space attaches the raw one wherever it loads: it needs no tracefs
//! (root-only on many kernels, so a service user with `CAP_BPF` and
//! `CAP_PERFMON` loads it) and the kernel builds no record for it. Rust
//! cannot emit CO-RE relocations, hence the offsets in globals patched at
//! load time.
//!
//! Each program is a thin wrapper over a `try_` function; they allocate
//! nothing, use only bounded maps, and bail out quietly on a failed read: a
//! missed sample is better than a verifier-rejected or noisy program. None
//! logs (aya-log in a per-packet tracepoint is not cheap).
//!
//! Layout:
//! - this file: the softirq programs (`irq:softirq_entry/exit`, classic
//!   and BTF-typed raw), which write
//!   only per-CPU maps (no locks, no atomics: softirqs do not nest on one
//!   CPU), and what every BPF object needs (license, panic handler);
//! - [`tcp`]: per-connection TCP state (`tcp:tcp_probe`,
//!   `tcp:tcp_retransmit_skb`, `sock:inet_sock_set_state`) and the port
//!   filter.
//!
//! On any target but BPF the crate builds an empty host binary, so that
//! `cargo clippy --workspace --all-targets` can check it like the others.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `tcp::atomic_add`: the BPF target has no stable `fetch_add` (see there).
// The kernel crate is built with `RUSTC_BOOTSTRAP=1` anyway (`build-std`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use xdr_common::{SoftirqStart, SoftirqStat, NR_SOFTIRQS};

mod tcp;

/// Offset of `unsigned int vec` in the `irq:softirq_*` records. Overwritten
/// at load time (see [`xdr_common::GLOBAL_SOFTIRQ_VEC_OFFSET`]); 8 is the
/// layout of every kernel since 2.6.37, kept as the default.
#[no_mangle]
static SOFTIRQ_VEC_OFFSET: u32 = 8;

#[map]
static SOFTIRQ_STATS: PerCpuArray<SoftirqStat> =
    PerCpuArray::with_max_entries(NR_SOFTIRQS as u32, 0);

#[map]
static SOFTIRQ_START: PerCpuArray<SoftirqStart> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn softirq_entry(ctx: TracePointContext) -> u32 {
    match read_vec(&ctx).and_then(enter) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn softirq_exit(ctx: TracePointContext) -> u32 {
    match read_vec(&ctx).and_then(exit) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// `irq:softirq_entry` as a BTF-typed raw tracepoint: `(unsigned int
/// vec_nr)`, no record and no tracefs (see
/// [`xdr_common::PROG_SOFTIRQ_ENTRY_BTF`]).
#[btf_tracepoint(function = "softirq_entry")]
pub fn softirq_entry_btf(ctx: BtfTracePointContext) -> i32 {
    match btf_vec(&ctx).and_then(enter) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// `irq:softirq_exit` as a BTF-typed raw tracepoint.
#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit_btf(ctx: BtfTracePointContext) -> i32 {
    match btf_vec(&ctx).and_then(exit) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// The vector of a classic `irq:softirq_*` record.
fn read_vec(ctx: &TracePointContext) -> Result<u32, ()> {
    // SAFETY: the global is a plain `u32` in `.rodata`; a volatile read stops
    // the compiler from folding in the default before user space patches it.
    let offset = unsafe { core::ptr::read_volatile(&SOFTIRQ_VEC_OFFSET) };
    // SAFETY: `read_at` uses `bpf_probe_read` on the tracepoint record; the
    // offset comes from the record's own tracefs `format`.
    let vec: u32 = unsafe { ctx.read_at(offset as usize) }.map_err(|_| ())?;
    valid_vec(vec)
}

/// The vector a raw `softirq_*` tracepoint is handed (its one argument).
fn btf_vec(ctx: &BtfTracePointContext) -> Result<u32, ()> {
    valid_vec(ctx.arg(0))
}

fn valid_vec(vec: u32) -> Result<u32, ()> {
    if (vec as usize) < NR_SOFTIRQS {
        Ok(vec)
    } else {
        Err(())
    }
}

fn enter(vec: u32) -> Result<(), ()> {
    let start = SOFTIRQ_START.get_ptr_mut(0).ok_or(())?;
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the pointer comes from the map and is valid for this CPU's slot
    // for the duration of the program; nothing else runs on this CPU's slot
    // meanwhile (softirqs do not nest on one CPU).
    unsafe {
        (*start).entered_ns = now;
        (*start).vec = vec;
    }
    Ok(())
}

fn exit(vec: u32) -> Result<(), ()> {
    let start = SOFTIRQ_START.get_ptr_mut(0).ok_or(())?;
    // SAFETY: see `enter`.
    let (entered_ns, entered_vec) = unsafe { ((*start).entered_ns, (*start).vec) };
    if entered_ns == 0 || entered_vec != vec {
        // Attached mid-softirq, or a lost entry: nothing to pair with.
        return Ok(());
    }
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let stat = SOFTIRQ_STATS.get_ptr_mut(vec).ok_or(())?;
    // SAFETY: map pointers valid for this CPU's slots during the program;
    // per-CPU slots are written only from this CPU.
    unsafe {
        (*stat).time_ns += now.saturating_sub(entered_ns);
        (*stat).count += 1;
        (*start).entered_ns = 0;
    }
    Ok(())
}

/// The kernel lets only GPL-compatible programs call some helpers.
#[cfg(target_arch = "bpf")]
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path,
    // so a loaded program can never get here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("xdr-ebpf holds kernel programs; build them with `cargo xtask build`");
}
