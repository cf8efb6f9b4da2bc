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
/// The softirq programs as BTF-typed raw tracepoints (`tp_btf`): handed
/// `vec_nr` as an argument, they need neither tracefs's `format` (no
/// offset to read) nor its `id` (attached by BTF id), so an unprivileged
/// service user with `CAP_BPF`/`CAP_PERFMON` loads them where tracefs is
/// root-only. The classic ones are the fallback.
pub const PROG_SOFTIRQ_ENTRY_BTF: &str = "softirq_entry_btf";
/// See [`PROG_SOFTIRQ_ENTRY_BTF`].
pub const PROG_SOFTIRQ_EXIT_BTF: &str = "softirq_exit_btf";

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

// ---------------------------------------------------------------------------
// Per-connection TCP state (`tcp:tcp_probe`, `tcp:tcp_retransmit_skb`,
// `sock:inet_sock_set_state`).
// ---------------------------------------------------------------------------

/// LRU hash map, socket cookie (`u64`, the kernel's `SO_COOKIE`) →
/// [`TcpConnStat`]: the latest state of each TCP connection the filter lets
/// through. LRU so that a machine with more connections than
/// [`TCP_CONN_CAPACITY`] evicts the quietest ones instead of failing inserts.
pub const MAP_TCP_CONNS: &str = "TCP_CONNS";
/// LRU hash map, kernel socket address (`struct sock *` as `u64`) → socket
/// cookie. Only `tcp:tcp_probe` carries the cookie; the retransmit and
/// state-change tracepoints carry the socket address, so this map lets them
/// attribute their events to a connection of [`MAP_TCP_CONNS`].
pub const MAP_TCP_SOCKS: &str = "TCP_SOCKS";
/// Per-CPU array map, [`NR_TCP_COUNTERS`] `u64`s indexed by the
/// `TCP_COUNTER_*` constants; user space sums the CPUs.
pub const MAP_TCP_COUNTERS: &str = "TCP_COUNTERS";
/// Array map of [`FILTER_PORT_WORDS`] `u64`s, a bitmap of the 65,536 ports:
/// port `p` (host order) is of interest when bit `p % 64` of word `p / 64`
/// is set, read when [`GLOBAL_FILTER_MODE`] is [`FILTER_MODE_PORTS`].
///
/// Why a bitmap and not a hash map of ports: the filter runs for every
/// received segment of every TCP socket, twice (local and remote port). An
/// array lookup is inlined by the verifier into a bounds check and an add;
/// a hash lookup is a helper call that hashes the key and walks a bucket.
/// Four interleaved pairs of loopback shipping watched by `observe --port`
/// (`bpf_stats`): `tcp_probe_btf` 310 ns a run with the hash map, 281 with
/// the bitmap (median); 270 with no filter at all.
pub const MAP_FILTER_PORTS: &str = "FILTER_PORTS";

/// Connections [`MAP_TCP_CONNS`] (and [`MAP_TCP_SOCKS`]) hold at most.
pub const TCP_CONN_CAPACITY: u32 = 16384;
/// Words of [`MAP_FILTER_PORTS`]: one bit per port.
pub const FILTER_PORT_WORDS: u32 = 65536 / 64;

/// The word of [`MAP_FILTER_PORTS`] that holds `port`'s bit, and the bit.
#[inline(always)]
pub const fn filter_port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}

/// Global (`.rodata`, `u32`): which TCP sockets the programs look at, one of
/// [`FILTER_MODE_ALL`] or [`FILTER_MODE_PORTS`]. Being read-only, the
/// verifier knows its value and prunes the branch not taken.
pub const GLOBAL_FILTER_MODE: &str = "FILTER_MODE";
/// Every TCP socket.
pub const FILTER_MODE_ALL: u32 = 0;
/// Only sockets whose local or remote port is in [`MAP_FILTER_PORTS`].
pub const FILTER_MODE_PORTS: u32 = 1;

/// Index in [`MAP_TCP_COUNTERS`]: transitions into `TCP_ESTABLISHED`.
pub const TCP_COUNTER_OPENS: u32 = 0;
/// Index in [`MAP_TCP_COUNTERS`]: transitions into `TCP_CLOSE` from a
/// synchronised state (not from `LISTEN`, `SYN_SENT` or `SYN_RECV`).
pub const TCP_COUNTER_CLOSES: u32 = 1;
/// Index in [`MAP_TCP_COUNTERS`]: retransmits of sockets `tcp:tcp_probe` had
/// not seen yet, so with no cookie to charge them to.
pub const TCP_COUNTER_RETRANS_UNATTRIBUTED: u32 = 2;
/// Index in [`MAP_TCP_COUNTERS`]: retransmit attempts the kernel could not
/// send (`err != 0` in `tcp:tcp_retransmit_skb`, e.g. the skb was still in a
/// host queue); not counted as retransmits.
pub const TCP_COUNTER_RETRANS_FAILED: u32 = 3;
/// Index in [`MAP_TCP_COUNTERS`]: segments [`PROG_TCP_PROBE_BTF`] saw on a
/// watched socket whose cookie the kernel had not generated yet (it cannot
/// generate one itself); not recorded.
pub const TCP_COUNTER_NO_COOKIE: u32 = 4;
/// Entries of [`MAP_TCP_COUNTERS`].
pub const NR_TCP_COUNTERS: u32 = 5;

/// [`TcpConnStat::flags`]: the socket went to `TCP_CLOSE`. The entry stays
/// so that a short-lived connection is still reported once; user space
/// deletes it after reading it.
pub const CONN_FLAG_CLOSED: u16 = 1;

/// `tcp_current_ssthresh()` of a connection that has not left slow start
/// yet (`TCP_INFINITE_SSTHRESH`).
pub const TCP_INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

/// Global (`.rodata`, [`TcpProbeOffsets`]) with the field offsets of
/// `tcp:tcp_probe`.
pub const GLOBAL_TCP_PROBE_OFFSETS: &str = "TCP_PROBE_OFFSETS";
/// Global (`.rodata`, [`TcpRetransmitOffsets`]) with the field offsets of
/// `tcp:tcp_retransmit_skb`.
pub const GLOBAL_TCP_RETRANSMIT_OFFSETS: &str = "TCP_RETRANSMIT_OFFSETS";
/// Global (`.rodata`, [`InetSockSetStateOffsets`]) with the field offsets
/// of `sock:inet_sock_set_state`.
pub const GLOBAL_INET_SOCK_SET_STATE_OFFSETS: &str = "INET_SOCK_SET_STATE_OFFSETS";

/// Program attached to `tcp:tcp_probe`.
pub const PROG_TCP_PROBE: &str = "tcp_probe";
/// Program attached to `tcp:tcp_retransmit_skb`.
pub const PROG_TCP_RETRANSMIT_SKB: &str = "tcp_retransmit_skb";
/// Program attached to `sock:inet_sock_set_state`.
pub const PROG_INET_SOCK_SET_STATE: &str = "inet_sock_set_state";

/// An offset global's value for a field this kernel's record does not have
/// (only for fields the programs can do without).
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// The latest `tcp:tcp_probe` sample of one connection, plus what the other
/// two tracepoints add to it. Written by the kernel, read by user space;
/// fields may be torn between two samples while user space reads (each
/// field is whole), which a monitor can live with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpConnStat {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last update.
    pub last_update_ns: u64,
    /// `tcp:tcp_probe` events seen (received segments in ESTABLISHED).
    pub samples: u64,
    /// Retransmitted skbs (each may carry several segments); added to with
    /// an atomic add, from any CPU.
    pub retransmits: u64,
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    /// Slow-start threshold, segments, as `tcp_current_ssthresh()` reports
    /// it (outside recovery: `max(ssthresh, 3/4 cwnd)`);
    /// [`TCP_INFINITE_SSTHRESH`] until the first loss.
    pub ssthresh: u32,
    /// The peer's advertised window, bytes (already scaled).
    pub snd_wnd: u32,
    /// Our advertised window, bytes.
    pub rcv_wnd: u32,
    /// Smoothed RTT, µs.
    pub srtt_us: u32,
    /// `snd_nxt - snd_una`, wrapping: bytes sent and not yet acknowledged.
    pub bytes_in_flight: u32,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `CONN_FLAG_*` bits.
    pub flags: u16,
}

/// Byte offsets of the `tcp:tcp_probe` fields the program reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpProbeOffsets {
    /// `__u16 sport` (host order).
    pub sport: u32,
    /// `__u16 dport` (host order).
    pub dport: u32,
    /// `__u16 family`.
    pub family: u32,
    /// `__u32 snd_nxt`.
    pub snd_nxt: u32,
    /// `__u32 snd_una`.
    pub snd_una: u32,
    /// `__u32 snd_cwnd`.
    pub snd_cwnd: u32,
    /// `__u32 ssthresh`.
    pub ssthresh: u32,
    /// `__u32 snd_wnd`.
    pub snd_wnd: u32,
    /// `__u32 srtt` (µs: the kernel stores `srtt_us >> 3`).
    pub srtt: u32,
    /// `__u32 rcv_wnd`.
    pub rcv_wnd: u32,
    /// `__u64 sock_cookie`.
    pub sock_cookie: u32,
    /// `const void *skaddr`.
    pub skaddr: u32,
}

impl TcpProbeOffsets {
    /// The layout of Linux 6.18; only a fallback, user space reads the real
    /// one from tracefs.
    pub const DEFAULT: Self = Self {
        sport: 64,
        dport: 66,
        family: 68,
        snd_nxt: 80,
        snd_una: 84,
        snd_cwnd: 88,
        ssthresh: 92,
        snd_wnd: 96,
        srtt: 100,
        rcv_wnd: 104,
        sock_cookie: 112,
        skaddr: 128,
    };
}

/// Global (`.rodata`, `u32`): 1 when this kernel's `tcp:tcp_probe` offsets
/// (read from tracefs) are exactly [`TcpProbeOffsets::DEFAULT`], so the
/// program may read the whole record tail as one [`TcpProbeTail`] (one
/// helper call instead of ten per event); 0 keeps the per-field reads.
pub const GLOBAL_TCP_PROBE_FAST: &str = "TCP_PROBE_FAST";

/// Where [`TcpProbeTail`] starts in a `tcp:tcp_probe` record.
pub const TCP_PROBE_TAIL_BASE: usize = 64;

/// The `tcp:tcp_probe` record from `sport` to `skaddr` in the layout of
/// [`TcpProbeOffsets::DEFAULT`] (Linux 6.x), padding explicit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpProbeTail {
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad0: u16,
    pub mark: u32,
    pub data_len: u16,
    pub _pad1: u16,
    pub snd_nxt: u32,
    pub snd_una: u32,
    pub snd_cwnd: u32,
    pub ssthresh: u32,
    pub snd_wnd: u32,
    pub srtt: u32,
    pub rcv_wnd: u32,
    pub _pad2: u32,
    pub sock_cookie: u64,
    pub skbaddr: u64,
    pub skaddr: u64,
}

const _: () = assert!(core::mem::size_of::<TcpProbeTail>() == 72);
const _: () = {
    let d = TcpProbeOffsets::DEFAULT;
    let b = TCP_PROBE_TAIL_BASE as u32;
    assert!(core::mem::offset_of!(TcpProbeTail, sport) as u32 + b == d.sport);
    assert!(core::mem::offset_of!(TcpProbeTail, dport) as u32 + b == d.dport);
    assert!(core::mem::offset_of!(TcpProbeTail, family) as u32 + b == d.family);
    assert!(core::mem::offset_of!(TcpProbeTail, snd_nxt) as u32 + b == d.snd_nxt);
    assert!(core::mem::offset_of!(TcpProbeTail, snd_una) as u32 + b == d.snd_una);
    assert!(core::mem::offset_of!(TcpProbeTail, snd_cwnd) as u32 + b == d.snd_cwnd);
    assert!(core::mem::offset_of!(TcpProbeTail, ssthresh) as u32 + b == d.ssthresh);
    assert!(core::mem::offset_of!(TcpProbeTail, snd_wnd) as u32 + b == d.snd_wnd);
    assert!(core::mem::offset_of!(TcpProbeTail, srtt) as u32 + b == d.srtt);
    assert!(core::mem::offset_of!(TcpProbeTail, rcv_wnd) as u32 + b == d.rcv_wnd);
    assert!(core::mem::offset_of!(TcpProbeTail, sock_cookie) as u32 + b == d.sock_cookie);
    assert!(core::mem::offset_of!(TcpProbeTail, skaddr) as u32 + b == d.skaddr);
};

/// Program attached to the BTF-typed raw tracepoint `tcp_probe` (`tp_btf`):
/// the same samples as [`PROG_TCP_PROBE`] without the classic tracepoint's
/// record (see [`TcpSockOffsets`]).
pub const PROG_TCP_PROBE_BTF: &str = "tcp_probe_btf";
/// `tcp:tcp_retransmit_skb` as a BTF-typed raw tracepoint: `(sk, skb,
/// err)`, the cookie from `sk` itself, offsets from BTF, no tracefs. Loads
/// only where the tracepoint carries `err` (6.10 and later); elsewhere the
/// classic program stands in.
pub const PROG_TCP_RETRANSMIT_SKB_BTF: &str = "tcp_retransmit_skb_btf";
/// `sock:inet_sock_set_state` as a BTF-typed raw tracepoint: `(sk,
/// oldstate, newstate)`, the cookie from `sk`, no tracefs.
pub const PROG_INET_SOCK_SET_STATE_BTF: &str = "inet_sock_set_state_btf";

/// Global (`.rodata`, [`TcpSockOffsets`]): where [`PROG_TCP_PROBE_BTF`]
/// finds the fields it reads in `struct sock` / `struct tcp_sock`, taken
/// at load time from the kernel's BTF.
pub const GLOBAL_TCP_SOCK_OFFSETS: &str = "TCP_SOCK_OFFSETS";

/// Byte offsets (from the start of `struct sock`, which is also the start
/// of `struct tcp_sock`) of what [`PROG_TCP_PROBE_BTF`] reads, from the
/// kernel's BTF.
///
/// Why: the classic `tcp:tcp_probe` tracepoint makes the kernel fill its
/// whole record (addresses, the cookie, `tcp_current_ssthresh()`, ...) on
/// every received segment of every TCP socket before any program runs,
/// filtered or not. The raw tracepoint hands the program `sk` and `skb` and
/// nothing else, so an unwanted socket costs two port reads, and a wanted
/// one only the fields below.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSockOffsets {
    /// `__be16 skc_dport` (network order).
    pub dport: u32,
    /// `__u16 skc_num`: the local port, host order.
    pub num: u32,
    /// `unsigned short skc_family`.
    pub family: u32,
    /// `u32 snd_nxt`.
    pub snd_nxt: u32,
    /// `u32 snd_una`.
    pub snd_una: u32,
    /// `u32 snd_cwnd`.
    pub snd_cwnd: u32,
    /// `u32 snd_ssthresh`.
    pub snd_ssthresh: u32,
    /// `u32 snd_wnd`.
    pub snd_wnd: u32,
    /// `u32 srtt_us` (µs << 3).
    pub srtt_us: u32,
    /// `u32 rcv_wnd`.
    pub rcv_wnd: u32,
    /// The byte holding the bitfield `icsk_ca_state` of
    /// `struct inet_connection_sock`.
    pub ca_state_byte: u32,
    /// `icsk_ca_state`'s first bit within that byte.
    pub ca_state_shift: u32,
    /// `icsk_ca_state`'s width in bits.
    pub ca_state_bits: u32,
    /// `u16 sk_protocol` of `struct sock` (for `inet_sock_set_state_btf`).
    pub protocol: u32,
    /// `__be16 inet_sport` of `struct inet_sock`: the local port as the
    /// classic records give it. Why not `skc_num`: a close releases the
    /// bound port first (`inet_put_port` zeroes `skc_num`), then records
    /// the state change.
    pub inet_sport: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl TcpSockOffsets {
    /// Placeholder until user space fills in this kernel's offsets (the
    /// program is never attached with these).
    pub const DEFAULT: Self = Self {
        dport: 0,
        num: 0,
        family: 0,
        snd_nxt: 0,
        snd_una: 0,
        snd_cwnd: 0,
        snd_ssthresh: 0,
        snd_wnd: 0,
        srtt_us: 0,
        rcv_wnd: 0,
        ca_state_byte: 0,
        ca_state_shift: 0,
        ca_state_bits: 0,
        protocol: 0,
        inet_sport: 0,
        _pad: 0,
    };
}

/// `TCP_CA_CWR` (include/net/tcp.h): `tcp_current_ssthresh()` reports the
/// threshold itself in this state and in [`TCP_CA_RECOVERY`].
pub const TCP_CA_CWR: u32 = 2;
/// `TCP_CA_Recovery`.
pub const TCP_CA_RECOVERY: u32 = 3;

/// Byte offsets of the `tcp:tcp_retransmit_skb` fields the program reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRetransmitOffsets {
    /// `const void *skaddr`.
    pub skaddr: u32,
    /// `__u16 sport` (host order).
    pub sport: u32,
    /// `__u16 dport` (host order).
    pub dport: u32,
    /// `int err` (Linux 6.13+; [`OFFSET_ABSENT`] before, when the event
    /// fired only for retransmits that were sent).
    pub err: u32,
}

impl TcpRetransmitOffsets {
    /// The layout of Linux 6.18; only a fallback.
    pub const DEFAULT: Self = Self {
        skaddr: 16,
        sport: 28,
        dport: 30,
        err: 76,
    };
}

/// Byte offsets of the `sock:inet_sock_set_state` fields the program reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetSockSetStateOffsets {
    /// `const void *skaddr`.
    pub skaddr: u32,
    /// `int oldstate`.
    pub oldstate: u32,
    /// `int newstate`.
    pub newstate: u32,
    /// `__u16 sport` (host order).
    pub sport: u32,
    /// `__u16 dport` (host order).
    pub dport: u32,
    /// `__u16 protocol`.
    pub protocol: u32,
}

impl InetSockSetStateOffsets {
    /// The layout of Linux 6.18; only a fallback.
    pub const DEFAULT: Self = Self {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        protocol: 30,
    };
}

const _: () = assert!(core::mem::size_of::<TcpConnStat>() == 56);
const _: () = assert!(core::mem::align_of::<TcpConnStat>() == 8);
const _: () = assert!(core::mem::size_of::<TcpProbeOffsets>() == 48);
const _: () = assert!(core::mem::size_of::<TcpRetransmitOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<InetSockSetStateOffsets>() == 24);
const _: () = assert!(core::mem::size_of::<TcpSockOffsets>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `SoftirqStat` is `repr(C)`, `Copy`, made only of `u64`s with no
    // padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SoftirqStat {}
    // SAFETY: `SoftirqStart` is `repr(C)`, `Copy`, two `u32` after one `u64`
    // with the padding made explicit, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SoftirqStart {}
    // SAFETY: `TcpConnStat` is `repr(C)`, `Copy`: three `u64`, six `u32`,
    // four `u16` (56 bytes, asserted), so no padding and every bit pattern
    // is a valid value.
    unsafe impl aya::Pod for super::TcpConnStat {}
    // SAFETY: the offset structs are `repr(C)`, `Copy`, made only of `u32`s
    // (sizes asserted), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::TcpProbeOffsets {}
    // SAFETY: see `TcpProbeOffsets`.
    unsafe impl aya::Pod for super::TcpRetransmitOffsets {}
    // SAFETY: see `TcpProbeOffsets`.
    unsafe impl aya::Pod for super::InetSockSetStateOffsets {}
    // SAFETY: see `TcpProbeOffsets`.
    unsafe impl aya::Pod for super::TcpSockOffsets {}
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

    #[test]
    fn tcp_conn_stat_fields_sit_where_both_sides_expect_them() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(TcpConnStat, retransmits), 16);
        assert_eq!(offset_of!(TcpConnStat, snd_cwnd), 24);
        assert_eq!(offset_of!(TcpConnStat, bytes_in_flight), 44);
        assert_eq!(offset_of!(TcpConnStat, flags), 54);
    }

    #[test]
    fn tcp_counter_indices_fit_the_counter_map() {
        for i in [
            TCP_COUNTER_OPENS,
            TCP_COUNTER_CLOSES,
            TCP_COUNTER_RETRANS_UNATTRIBUTED,
            TCP_COUNTER_RETRANS_FAILED,
            TCP_COUNTER_NO_COOKIE,
        ] {
            assert!(i < NR_TCP_COUNTERS);
        }
    }
}
