//! Per-connection TCP state: `tcp:tcp_probe`, `tcp:tcp_retransmit_skb` and
//! `sock:inet_sock_set_state`.
//!
//! Why these three: `tcp_probe` fires for every segment a socket receives in
//! ESTABLISHED and carries what limits a sender (cwnd, ssthresh, the peer's
//! window, our window, srtt, snd_nxt/snd_una) plus the socket cookie, the
//! key user space joins on (`SO_COOKIE` of the shipper's own sockets). The
//! other two carry no cookie, only the socket's kernel address, so
//! `tcp_probe` keeps an `skaddr → cookie` map for them to attribute
//! retransmits and closes.
//!
//! Why two `tcp_probe` programs: the classic tracepoint makes the kernel
//! build its whole record (addresses, the cookie, `tcp_current_ssthresh()`)
//! for every received segment of every TCP socket before our program runs,
//! filtered or not, through the perf-event path. `tcp_probe_btf` attaches
//! to the same tracepoint raw (`tp_btf`: it needs BTF, not the trampolines
//! fentry needs), is handed `sk` and `skb`, filters on the two ports first
//! and reads only the fields it keeps, at offsets user space took from the
//! kernel's BTF; being BTF-typed it may also call `bpf_get_socket_cookie`,
//! which generates the cookie as the classic record does. User space uses
//! the classic program only where the raw one does not load.
//!
//! Why LRU maps: a busy machine has more sockets than any bound we pick;
//! an LRU map evicts the least recently updated connection instead of
//! refusing the newest, and a socket freed without our seeing its close
//! (attached late, lost event) ages out instead of leaking a slot forever.
//!
//! Why the port filter lives here: `tcp_probe` fires per received segment on
//! every TCP socket of the machine. Filtering before anything else costs
//! unrelated traffic one load and two bitmap tests (both ports; see
//! [`xdr_common::MAP_FILTER_PORTS`] for why a bitmap),
//! instead of two map updates per segment, entries evicting the ones we
//! want, and a full map for user space to scan.
//!
//! Concurrency: `tcp_probe` and `inet_sock_set_state` run under the socket
//! lock, so one socket's fields have one writer at a time; the retransmit
//! counter is added to atomically because that is cheap and needs no
//! argument about which locks the retransmit paths hold. User space may read
//! an entry while it is written: each field is whole, but fields may come
//! from two consecutive samples.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skc_to_tcp_sock},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use xdr_common::{
    filter_port_bit, InetSockSetStateOffsets, TcpConnStat, TcpProbeOffsets, TcpProbeTail,
    TcpRetransmitOffsets, TcpSockOffsets, CONN_FLAG_CLOSED, FILTER_MODE_ALL, FILTER_PORT_WORDS,
    NR_TCP_COUNTERS, OFFSET_ABSENT, TCP_CA_CWR, TCP_CA_RECOVERY, TCP_CONN_CAPACITY,
    TCP_COUNTER_CLOSES, TCP_COUNTER_NO_COOKIE, TCP_COUNTER_OPENS, TCP_COUNTER_RETRANS_FAILED,
    TCP_COUNTER_RETRANS_UNATTRIBUTED, TCP_PROBE_TAIL_BASE,
};

/// `IPPROTO_TCP`.
const IPPROTO_TCP: u16 = 6;
/// `TCP_ESTABLISHED` (include/net/tcp_states.h).
const TCP_ESTABLISHED: i32 = 1;
/// `TCP_SYN_SENT`.
const TCP_SYN_SENT: i32 = 2;
/// `TCP_SYN_RECV`.
const TCP_SYN_RECV: i32 = 3;
/// `TCP_CLOSE`.
const TCP_CLOSE: i32 = 7;
/// `TCP_LISTEN`.
const TCP_LISTEN: i32 = 10;

/// How often (in samples of one connection) `tcp_probe` re-checks the
/// connection's `skaddr → cookie` entry.
const SOCKS_REFRESH_SAMPLES: u64 = 64;

/// Which sockets to look at (see [`xdr_common::GLOBAL_FILTER_MODE`]).
#[no_mangle]
static FILTER_MODE: u32 = FILTER_MODE_ALL;

/// Field offsets of `tcp:tcp_probe`, patched at load time from tracefs.
#[no_mangle]
static TCP_PROBE_OFFSETS: TcpProbeOffsets = TcpProbeOffsets::DEFAULT;

/// 1 when the offsets above are the compiled [`TcpProbeTail`] layout
/// (user space compares them with tracefs): one read per event.
#[no_mangle]
static TCP_PROBE_FAST: u32 = 0;

/// Field offsets in `struct tcp_sock`, patched at load time from the
/// kernel's BTF (for `tcp_probe_btf`).
#[no_mangle]
static TCP_SOCK_OFFSETS: TcpSockOffsets = TcpSockOffsets::DEFAULT;

/// Field offsets of `tcp:tcp_retransmit_skb`, patched at load time.
#[no_mangle]
static TCP_RETRANSMIT_OFFSETS: TcpRetransmitOffsets = TcpRetransmitOffsets::DEFAULT;

/// Field offsets of `sock:inet_sock_set_state`, patched at load time.
#[no_mangle]
static INET_SOCK_SET_STATE_OFFSETS: InetSockSetStateOffsets = InetSockSetStateOffsets::DEFAULT;

#[map]
static TCP_CONNS: LruHashMap<u64, TcpConnStat> = LruHashMap::with_max_entries(TCP_CONN_CAPACITY, 0);

#[map]
static TCP_SOCKS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(TCP_CONN_CAPACITY, 0);

#[map]
static TCP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_TCP_COUNTERS, 0);

#[map]
static FILTER_PORTS: Array<u64> = Array::with_max_entries(FILTER_PORT_WORDS, 0);

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    match try_tcp_probe(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// `tcp_probe` as a BTF-typed raw tracepoint: `(struct sock *sk, struct
/// sk_buff *skb)` and no record (see [`TcpSockOffsets`] for why).
#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe_btf(ctx: BtfTracePointContext) -> i32 {
    match try_tcp_probe_btf(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    match try_tcp_retransmit_skb(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// `tcp_retransmit_skb` as a BTF-typed raw tracepoint: `(const struct
/// sock *sk, const struct sk_buff *skb, int err)`; loads only where the
/// tracepoint has `err` (the verifier refuses a third argument elsewhere,
/// and user space attaches the classic program instead).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> i32 {
    match try_tcp_retransmit_skb_btf(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// `inet_sock_set_state` as a BTF-typed raw tracepoint: `(const struct
/// sock *sk, const int oldstate, const int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    match try_inet_sock_set_state_btf(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Reads a `T` at `offset` in the tracepoint record.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ()> {
    // SAFETY: `read_at` uses `bpf_probe_read_kernel` on the tracepoint
    // record; the offset comes from the record's own tracefs `format`, and a
    // bad one makes the helper fail, not the kernel.
    unsafe { ctx.read_at(offset as usize) }.map_err(|_| ())
}

/// `*dst += n` as one atomic instruction (`lock xadd`), for a value other
/// CPUs may add to at the same time.
///
/// Why an intrinsic: the BPF target declares no compare-and-swap, so `core`
/// offers `AtomicU64` without `fetch_add`, although BPF has had an atomic add
/// since the beginning; LLVM lowers this (result unused) to exactly that.
/// Host builds (clippy) use the stable API.
///
/// # Safety
/// `dst` must be valid for reads and writes and aligned to 8.
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller guarantees `dst` is valid and aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, n,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller guarantees `dst` is valid and aligned, and all
    // concurrent accesses go through atomics.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(dst)
            .fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the socket with these ports is one we watch.
#[inline(always)]
fn wanted(sport: u16, dport: u16) -> bool {
    // SAFETY: a plain `u32` in `.rodata`; the volatile read stops the
    // compiler from folding in the default before user space patches it.
    let mode = unsafe { core::ptr::read_volatile(&FILTER_MODE) };
    mode == FILTER_MODE_ALL || port_wanted(sport) || port_wanted(dport)
}

/// Whether `port`'s bit is set in the filter's bitmap.
#[inline(always)]
fn port_wanted(port: u16) -> bool {
    let (word, bit) = filter_port_bit(port);
    FILTER_PORTS.get(word).is_some_and(|w| w & bit != 0)
}

/// Adds one to this CPU's counter `index`.
#[inline(always)]
fn count(index: u32) {
    if let Some(c) = TCP_COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot, valid during the program;
        // per-CPU slots are written only from this CPU and a tracepoint
        // program does not preempt itself on one CPU.
        unsafe { *c += 1 };
    }
}

fn try_tcp_probe(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: a plain `u32` in `.rodata`; see `wanted`.
    let fast = unsafe { core::ptr::read_volatile(&TCP_PROBE_FAST) };
    let t = if fast != 0 {
        // SAFETY: user space set the flag only after checking that this
        // kernel's tracefs offsets are the compiled `TcpProbeTail` layout;
        // `read_at` uses `bpf_probe_read_kernel`, so a bad read fails the
        // helper, not the kernel.
        unsafe { ctx.read_at::<TcpProbeTail>(TCP_PROBE_TAIL_BASE) }.map_err(|_| ())?
    } else {
        // SAFETY: a plain `repr(C)` struct of `u32`s in `.rodata`; see `wanted`.
        let off = unsafe { core::ptr::read_volatile(&TCP_PROBE_OFFSETS) };
        let sport: u16 = field(ctx, off.sport)?;
        let dport: u16 = field(ctx, off.dport)?;
        if !wanted(sport, dport) {
            return Ok(());
        }
        TcpProbeTail {
            sport,
            dport,
            family: field(ctx, off.family)?,
            snd_nxt: field(ctx, off.snd_nxt)?,
            snd_una: field(ctx, off.snd_una)?,
            snd_cwnd: field(ctx, off.snd_cwnd)?,
            ssthresh: field(ctx, off.ssthresh)?,
            snd_wnd: field(ctx, off.snd_wnd)?,
            srtt: field(ctx, off.srtt)?,
            rcv_wnd: field(ctx, off.rcv_wnd)?,
            sock_cookie: field(ctx, off.sock_cookie)?,
            skaddr: field(ctx, off.skaddr)?,
            ..TcpProbeTail::default()
        }
    };
    if fast != 0 && !wanted(t.sport, t.dport) {
        return Ok(());
    }
    record(&t);
    Ok(())
}

/// Loads a `T` at `base + offset` of a BTF-typed kernel pointer.
///
/// Why a plain load and not `bpf_probe_read_kernel`: a helper call per
/// field made the raw program slower than the classic one (~860 ns against
/// ~650 ns per event under `bpf_stats`). A `tp_btf` program may dereference
/// its BTF-typed arguments directly: the verifier checks each load against
/// the kernel's BTF (the offset, a constant from `.rodata`, must land on a
/// member of that size) and turns it into a load that cannot fault.
#[inline(always)]
fn load<T>(base: *const u8, offset: u32) -> T {
    // SAFETY: see above: the verifier rejects the program unless `base` is
    // a BTF-typed pointer and `base + offset` a member of type size `T`,
    // and the load it emits is fault-handled (a freed socket reads zeros).
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) }
}

/// This kernel's `struct sock`/`struct tcp_sock` offsets (from BTF).
#[inline(always)]
fn sock_offsets() -> TcpSockOffsets {
    // SAFETY: a plain `repr(C)` struct of `u32`s in `.rodata`; see `wanted`.
    unsafe { core::ptr::read_volatile(&TCP_SOCK_OFFSETS) }
}

/// (local, remote) port of a BTF-typed `struct sock *` of an established
/// connection: `skc_dport` then `skc_num`, the two halves of
/// `skc_portpair`, in one load (user space checked they are adjacent).
#[inline(always)]
fn ports(sk: *const u8, off: &TcpSockOffsets) -> (u16, u16) {
    let portpair: u32 = load(sk, off.dport);
    ((portpair >> 16) as u16, u16::from_be(portpair as u16))
}

/// (local, remote) port of a TCP socket in any state: the local one from
/// `inet_sport`, which a close leaves in place (`skc_num` is zeroed when
/// the bound port is released, before the state change is traced). `None`
/// for a socket that is not TCP.
#[inline(always)]
fn ports_any_state(sk: *const u8, off: &TcpSockOffsets) -> Option<(u16, u16)> {
    // `struct tcp_sock *` for the verifier: `inet_sport` lies beyond
    // `struct sock`.
    // SAFETY: `sk` is the tracepoint's own BTF-typed `struct sock *`.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut _) } as *const u8;
    if tp.is_null() {
        return None;
    }
    let sport: u16 = load(tp, off.inet_sport);
    let dport: u16 = load(tp, off.dport);
    Some((u16::from_be(sport), u16::from_be(dport)))
}

/// The socket's cookie (generated if it has none yet, as `SO_COOKIE`
/// does), or `None` (counted) when the helper gives none.
#[inline(always)]
fn cookie_of(sk: *const u8) -> Option<u64> {
    // SAFETY: `sk` is a tracepoint's own BTF-typed `struct sock *`, which
    // the verifier checks against the helper's argument type.
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    if cookie == 0 {
        count(TCP_COUNTER_NO_COOKIE);
        return None;
    }
    Some(cookie)
}

fn try_tcp_probe_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let sk: *const u8 = ctx.arg(0);
    let off = sock_offsets();
    let (sport, dport) = ports(sk, &off);
    if !wanted(sport, dport) {
        return Ok(());
    }
    // `struct tcp_sock *` for the verifier: the fields below lie beyond
    // `struct sock`.
    // SAFETY: `sk` is the tracepoint's own BTF-typed `struct sock *`.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut _) } as *const u8;
    if tp.is_null() {
        return Ok(());
    }
    // The classic tracepoint generates the cookie (`sock_gen_cookie`); a
    // plain raw tracepoint could only read it, a BTF-typed program may call
    // the helper, which generates it the same way.
    let Some(cookie) = cookie_of(sk) else {
        return Ok(());
    };
    let snd_cwnd: u32 = load(tp, off.snd_cwnd);
    let snd_ssthresh: u32 = load(tp, off.snd_ssthresh);
    // `tcp_current_ssthresh()`, as the classic record carries it.
    let ca_byte: u8 = load(tp, off.ca_state_byte);
    let ca_state = (u32::from(ca_byte) >> off.ca_state_shift) & ((1u32 << off.ca_state_bits) - 1);
    let in_cwnd_reduction = ca_state == TCP_CA_CWR || ca_state == TCP_CA_RECOVERY;
    let ssthresh = if in_cwnd_reduction {
        snd_ssthresh
    } else {
        let three_quarters = (snd_cwnd >> 1) + (snd_cwnd >> 2);
        if snd_ssthresh > three_quarters {
            snd_ssthresh
        } else {
            three_quarters
        }
    };
    let srtt_us: u32 = load(tp, off.srtt_us);
    let t = TcpProbeTail {
        sport,
        dport,
        family: load(tp, off.family),
        snd_nxt: load(tp, off.snd_nxt),
        snd_una: load(tp, off.snd_una),
        snd_cwnd,
        ssthresh,
        snd_wnd: load(tp, off.snd_wnd),
        srtt: srtt_us >> 3,
        rcv_wnd: load(tp, off.rcv_wnd),
        sock_cookie: cookie,
        skaddr: sk as u64,
        ..TcpProbeTail::default()
    };
    record(&t);
    Ok(())
}

/// Stores one `tcp_probe` sample of a watched socket.
#[inline(always)]
fn record(t: &TcpProbeTail) {
    let TcpProbeTail {
        sport,
        dport,
        family,
        snd_nxt,
        snd_una,
        snd_cwnd,
        ssthresh,
        snd_wnd,
        srtt: srtt_us,
        rcv_wnd,
        sock_cookie: cookie,
        skaddr,
        ..
    } = *t;
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let bytes_in_flight = snd_nxt.wrapping_sub(snd_una);

    let mut samples = 1;
    match TCP_CONNS.get_ptr_mut(cookie) {
        Some(conn) => {
            // SAFETY: the pointer comes from the map and stays valid for the
            // program's run (RCU); this socket's `tcp_probe` runs under its
            // socket lock, so no other writer of these fields runs meanwhile.
            // `retransmits` is left alone: the retransmit program owns it.
            unsafe {
                (*conn).last_update_ns = now;
                (*conn).samples += 1;
                samples = (*conn).samples;
                (*conn).snd_cwnd = snd_cwnd;
                (*conn).ssthresh = ssthresh;
                (*conn).snd_wnd = snd_wnd;
                (*conn).rcv_wnd = rcv_wnd;
                (*conn).srtt_us = srtt_us;
                (*conn).bytes_in_flight = bytes_in_flight;
                // A socket that receives in ESTABLISHED is open again
                // (`connect(AF_UNSPEC)` then a new connect keeps the cookie).
                (*conn).flags &= !CONN_FLAG_CLOSED;
            }
        }
        None => {
            let stat = TcpConnStat {
                last_update_ns: now,
                samples: 1,
                retransmits: 0,
                snd_cwnd,
                ssthresh,
                snd_wnd,
                rcv_wnd,
                srtt_us,
                bytes_in_flight,
                sport,
                dport,
                family,
                flags: 0,
            };
            // NOEXIST: should another CPU have inserted it meanwhile, its
            // entry wins; this one sample is lost, nothing else.
            let _ = TCP_CONNS.insert(cookie, stat, BPF_NOEXIST as u64);
        }
    }

    // Keep skaddr → cookie current: a freed socket's address is reused by
    // the next (whose first sample lands here with `samples == 1`), and an
    // LRU map may have evicted the mapping (checked every
    // `SOCKS_REFRESH_SAMPLES`-th sample: a hash lookup per segment was a
    // sizeable part of the program's run time).
    if samples % SOCKS_REFRESH_SAMPLES != 1 {
        return;
    }
    // SAFETY: map pointer valid for the program's run; a `u64` read.
    let known = TCP_SOCKS.get_ptr(skaddr).map(|c| unsafe { *c });
    if known != Some(cookie) {
        let _ = TCP_SOCKS.insert(skaddr, cookie, 0);
    }
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: see `try_tcp_probe`.
    let off = unsafe { core::ptr::read_volatile(&TCP_RETRANSMIT_OFFSETS) };
    let sport: u16 = field(ctx, off.sport)?;
    let dport: u16 = field(ctx, off.dport)?;
    if !wanted(sport, dport) {
        return Ok(());
    }
    if off.err != OFFSET_ABSENT {
        let err: i32 = field(ctx, off.err)?;
        if err != 0 {
            count(TCP_COUNTER_RETRANS_FAILED);
            return Ok(());
        }
    }
    let skaddr: u64 = field(ctx, off.skaddr)?;
    // SAFETY: map pointer valid for the program's run; a `u64` read.
    let cookie = TCP_SOCKS.get_ptr(skaddr).map(|c| unsafe { *c });
    count_retransmit(cookie);
    Ok(())
}

fn try_tcp_retransmit_skb_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let sk: *const u8 = ctx.arg(0);
    let Some((sport, dport)) = ports_any_state(sk, &sock_offsets()) else {
        return Ok(());
    };
    if !wanted(sport, dport) {
        return Ok(());
    }
    let err: i32 = ctx.arg(2);
    if err != 0 {
        count(TCP_COUNTER_RETRANS_FAILED);
        return Ok(());
    }
    count_retransmit(cookie_of(sk));
    Ok(())
}

/// One retransmitted segment, charged to its connection if known.
#[inline(always)]
fn count_retransmit(cookie: Option<u64>) {
    match cookie.and_then(|c| TCP_CONNS.get_ptr_mut(c)) {
        Some(conn) => {
            // SAFETY: the pointer comes from the map, is valid for the
            // program's run and 8-byte aligned (map values are aligned to 8,
            // `retransmits` sits at offset 16).
            unsafe { atomic_add(&raw mut (*conn).retransmits, 1) };
        }
        None => count(TCP_COUNTER_RETRANS_UNATTRIBUTED),
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: see `try_tcp_probe`.
    let off = unsafe { core::ptr::read_volatile(&INET_SOCK_SET_STATE_OFFSETS) };
    let protocol: u16 = field(ctx, off.protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let newstate: i32 = field(ctx, off.newstate)?;
    if newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE {
        return Ok(());
    }
    let sport: u16 = field(ctx, off.sport)?;
    let dport: u16 = field(ctx, off.dport)?;
    if !wanted(sport, dport) {
        return Ok(());
    }
    let oldstate: i32 = field(ctx, off.oldstate)?;
    let skaddr: u64 = field(ctx, off.skaddr)?;
    note_state(oldstate, newstate, skaddr, || {
        // SAFETY: map pointer valid for the program's run; a `u64` read.
        TCP_SOCKS.get_ptr(skaddr).map(|c| unsafe { *c })
    });
    Ok(())
}

fn try_inet_sock_set_state_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let sk: *const u8 = ctx.arg(0);
    let off = sock_offsets();
    let protocol: u16 = load(sk, off.protocol);
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let newstate: i32 = ctx.arg(2);
    if newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE {
        return Ok(());
    }
    let Some((sport, dport)) = ports_any_state(sk, &off) else {
        return Ok(());
    };
    if !wanted(sport, dport) {
        return Ok(());
    }
    let oldstate: i32 = ctx.arg(1);
    note_state(oldstate, newstate, sk as u64, || cookie_of(sk));
    Ok(())
}

/// A watched TCP socket went to `newstate` (ESTABLISHED or CLOSE): an open
/// is counted; a close of an established connection is counted, and its
/// entry is marked closed (found by `cookie`, called only for a close).
#[inline(always)]
fn note_state(oldstate: i32, newstate: i32, skaddr: u64, cookie: impl FnOnce() -> Option<u64>) {
    if newstate == TCP_ESTABLISHED {
        count(TCP_COUNTER_OPENS);
        return;
    }
    if oldstate != TCP_LISTEN && oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV {
        count(TCP_COUNTER_CLOSES);
    }
    let Some(cookie) = cookie() else {
        return;
    };
    if let Some(conn) = TCP_CONNS.get_ptr_mut(cookie) {
        // SAFETY: map pointer valid for the program's run; the state change
        // runs under the socket lock and no `tcp_probe` follows a close;
        // `bpf_ktime_get_ns` has no preconditions.
        unsafe {
            (*conn).flags |= CONN_FLAG_CLOSED;
            (*conn).last_update_ns = bpf_ktime_get_ns();
        }
    }
    // The address will belong to another socket soon.
    let _ = TCP_SOCKS.remove(skaddr);
}
