//! Loading the kernel programs: the one loader every reader reads from.
//!
//! Why the object is embedded: the binary must be self-contained on a source
//! node (no separate `.o` to ship or find). `cargo xtask build` builds the
//! object and points the build script at it; a plain `cargo build` embeds an
//! empty placeholder, which [`KernelPrograms::load`] reports as
//! [`ProbeError::NotBuilt`] so the caller can fall back and say why.
//!
//! Why the loader reads no map: each program kind has its reader beside its
//! types ([`super::softirq`] for the softirq maps, [`super::tcp`] for the
//! TCP maps), which reach the maps through [`KernelPrograms::map`]. The
//! loader knows the programs and their patched offsets ([`super::layout`]),
//! not what their maps mean, so the arrows point one way: readers → loader.
//!
//! What is loaded: the softirq programs always; the TCP programs
//! (`tcp:tcp_probe`, `tcp:tcp_retransmit_skb`, `sock:inet_sock_set_state`)
//! when [`ProbeOptions::tcp`] asks for them, with the port filter filled in
//! before they are attached, so no event of an unwanted socket is recorded.
//!
//! Why raw (`tp_btf`) first: a BTF-typed program is handed the
//! tracepoint's arguments and reads fields at offsets from the kernel's
//! BTF (`/sys/kernel/btf/vmlinux`, world-readable); a classic one needs
//! tracefs's `format` and `id` files, which many kernels keep root-only. So
//! a service user holding only `CAP_BPF` and `CAP_PERFMON` loads the raw
//! programs; each classic one stands in only where its raw twin is refused.
use std::path::Path;

use aya::{
    maps::{Array, Map, MapData},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use xdr_common::{
    filter_port_bit, TcpSockOffsets, FILTER_MODE_ALL, FILTER_MODE_PORTS, FILTER_PORT_WORDS,
    GLOBAL_FILTER_MODE, GLOBAL_INET_SOCK_SET_STATE_OFFSETS, GLOBAL_SOFTIRQ_VEC_OFFSET,
    GLOBAL_TCP_PROBE_OFFSETS, GLOBAL_TCP_RETRANSMIT_OFFSETS, GLOBAL_TCP_SOCK_OFFSETS,
    MAP_FILTER_PORTS, PROG_INET_SOCK_SET_STATE, PROG_INET_SOCK_SET_STATE_BTF, PROG_SOFTIRQ_ENTRY,
    PROG_SOFTIRQ_ENTRY_BTF, PROG_SOFTIRQ_EXIT, PROG_SOFTIRQ_EXIT_BTF, PROG_TCP_PROBE,
    PROG_TCP_PROBE_BTF, PROG_TCP_RETRANSMIT_SKB, PROG_TCP_RETRANSMIT_SKB_BTF,
};

use super::{
    btf::{self, VMLINUX_BTF},
    layout::TcpLayouts,
    tracefs, ProbeError,
};

/// The kernel object, or an empty slice when built without it.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdr-ebpf.o"));

/// Whether this binary carries the kernel programs.
pub fn built_with_kernel_programs() -> bool {
    !KERNEL_OBJECT.is_empty()
}

/// What to load besides the softirq programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Attach the per-connection TCP programs.
    pub tcp: bool,
    /// With `tcp`: only sockets whose local or remote port is one of these;
    /// empty means every TCP socket on the machine.
    pub ports: Vec<u16>,
    /// Attach every program to its classic tracepoint even where the raw
    /// one works (also `XDR_SHIP_TRACEPOINTS=classic`): to compare the two
    /// and to test the fallback.
    pub classic_tracepoints: bool,
}

impl ProbeOptions {
    /// TCP programs for sockets on any of `ports` (every socket if empty).
    pub fn tcp(ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            tcp: true,
            ports: ports.into_iter().collect(),
            classic_tracepoints: false,
        }
    }
}
/// Which program samples `tcp_probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpProbePath {
    /// The BTF-typed raw tracepoint (`tp_btf`), reading `struct tcp_sock`
    /// at offsets from the kernel's BTF: no record is built per segment.
    RawBtf,
    /// The classic tracepoint (`tcp:tcp_probe`), offsets from tracefs; the
    /// kernel fills the whole record per segment before the program runs.
    Tracepoint {
        /// Why the raw path is not in use.
        why: String,
    },
}

impl std::fmt::Display for TcpProbePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RawBtf => f.write_str("tp_btf/tcp_probe (raw, BTF offsets)"),
            Self::Tracepoint { why } => write!(f, "tracepoint tcp:tcp_probe ({why})"),
        }
    }
}

/// The loaded and attached kernel programs. Dropping it detaches them.
pub struct KernelPrograms {
    bpf: Ebpf,
    online_cpus: Vec<u32>,
    /// The port filter in force, sorted; `None` when the TCP programs are
    /// not attached, empty when they watch every socket.
    tcp_ports: Option<Vec<u16>>,
    /// How `tcp_probe` is sampled, when the TCP programs are attached.
    tcp_probe_path: Option<TcpProbePath>,
    /// The programs attached to their classic tracepoint because the raw
    /// one did not load (empty where every program is raw).
    classic_programs: Vec<&'static str>,
}

impl std::fmt::Debug for KernelPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrograms")
            .field("online_cpus", &self.online_cpus)
            .field("tcp_ports", &self.tcp_ports)
            .field("tcp_probe_path", &self.tcp_probe_path)
            .field("classic_programs", &self.classic_programs)
            .finish_non_exhaustive()
    }
}

impl KernelPrograms {
    /// Loads the embedded object and attaches the softirq programs.
    pub fn load() -> Result<Self, ProbeError> {
        Self::load_with(ProbeOptions::default())
    }

    /// Like [`load`](Self::load), and with `opts.tcp` also attaches the TCP
    /// programs, watching the sockets on `opts.ports` (all if empty).
    ///
    /// Every program is attached raw (`tp_btf`) where it loads: its
    /// arguments typed by the kernel's BTF, offsets from
    /// `/sys/kernel/btf/vmlinux` (world-readable), nothing from tracefs
    /// (root-only on many kernels), so `CAP_BPF` + `CAP_PERFMON` suffice.
    /// A program the kernel refuses raw falls back to its classic
    /// tracepoint, whose offsets and id come from tracefs.
    pub fn load_with(opts: ProbeOptions) -> Result<Self, ProbeError> {
        if !built_with_kernel_programs() {
            return Err(ProbeError::NotBuilt);
        }
        let ports = filter_ports(&opts.ports);
        raise_memlock_limit();
        // Parsed once: the loader relocates against it and the raw
        // programs are loaded against it (a parse costs ~0.2 s).
        let kernel_btf = Btf::from_sys_fs().ok();
        let sock_offsets = tcp_sock_offsets(&opts);
        // Read before the object is loaded (its globals are fixed then),
        // but needed only by a program that falls back: an unreadable
        // tracefs is an error only then.
        let classic = ClassicLayouts::read(opts.tcp);
        let mut loader = EbpfLoader::new();
        loader.btf(kernel_btf.as_ref());
        if let Ok(c) = &classic {
            loader.override_global(GLOBAL_SOFTIRQ_VEC_OFFSET, &c.softirq_vec, true);
        }
        let filter_mode = if ports.is_empty() {
            FILTER_MODE_ALL
        } else {
            FILTER_MODE_PORTS
        };
        let classic_tcp = classic.as_ref().ok().and_then(|c| c.tcp.as_ref());
        // When tracefs describes exactly the compiled tail layout, the
        // classic program reads the record in one helper call.
        let fast = classic_tcp.map_or(0, |l| {
            u32::from(l.probe == xdr_common::TcpProbeOffsets::DEFAULT)
        });
        if opts.tcp {
            loader
                .override_global(GLOBAL_FILTER_MODE, &filter_mode, true)
                .override_global(
                    GLOBAL_TCP_SOCK_OFFSETS,
                    sock_offsets.as_ref().unwrap_or(&TcpSockOffsets::DEFAULT),
                    true,
                );
            if let Some(layouts) = classic_tcp {
                loader
                    .override_global(xdr_common::GLOBAL_TCP_PROBE_FAST, &fast, true)
                    .override_global(GLOBAL_TCP_PROBE_OFFSETS, &layouts.probe, true)
                    .override_global(GLOBAL_TCP_RETRANSMIT_OFFSETS, &layouts.retransmit, true)
                    .override_global(GLOBAL_INET_SOCK_SET_STATE_OFFSETS, &layouts.set_state, true);
            }
        }
        let mut bpf = loader
            .load(KERNEL_OBJECT)
            .map_err(|source| ProbeError::Load { source })?;
        init_kernel_log(&mut bpf);
        let mut attach = Attach {
            bpf: &mut bpf,
            btf: kernel_btf
                .as_ref()
                .filter(|_| !opts.classic_tracepoints && !force_classic_tracepoints()),
            classic: classic.as_ref().map(|_| ()).map_err(ToString::to_string),
            fell_back: Vec::new(),
        };
        for (raw, classic, event) in SOFTIRQ_PROGRAMS {
            attach.either(raw, classic, event)?;
        }
        let tcp_probe_path = if opts.tcp {
            Some(attach.tcp(&ports, sock_offsets)?)
        } else {
            None
        };
        let classic_programs = attach.fell_back;
        let online_cpus = aya::util::online_cpus().map_err(|(_, e)| ProbeError::Proc {
            path: "/sys/devices/system/cpu/online".to_owned(),
            source: e,
        })?;
        Ok(Self {
            bpf,
            online_cpus,
            tcp_ports: opts.tcp.then_some(ports),
            tcp_probe_path,
            classic_programs,
        })
    }

    /// The programs of `opts` unless `no_ebpf`, or why not, in the words
    /// every output prints beside the fallback it reads instead
    /// (`--no-ebpf given`, `eBPF unavailable: …`).
    pub fn load_or_explain(no_ebpf: bool, opts: ProbeOptions) -> Result<Self, String> {
        if no_ebpf {
            return Err("--no-ebpf given".to_owned());
        }
        Self::load_with(opts).map_err(|e| format!("eBPF unavailable: {e}"))
    }

    /// How `tcp_probe` is sampled; `None` when the TCP programs are not
    /// attached.
    pub fn tcp_probe_path(&self) -> Option<&TcpProbePath> {
        self.tcp_probe_path.as_ref()
    }

    /// The programs on their classic tracepoint (the raw one did not
    /// load): these need tracefs, the others only BTF.
    pub fn classic_programs(&self) -> &[&'static str] {
        &self.classic_programs
    }

    /// Whether the TCP programs are attached.
    pub fn tcp_attached(&self) -> bool {
        self.tcp_ports.is_some()
    }

    /// The ports the TCP programs watch, sorted (empty: every socket);
    /// `None` when they are not attached.
    pub fn tcp_ports(&self) -> Option<&[u16]> {
        self.tcp_ports.as_deref()
    }

    /// The CPUs online when the programs were loaded, for per-CPU maps.
    pub(super) fn online_cpus(&self) -> &[u32] {
        &self.online_cpus
    }

    /// The map `name`, for its reader.
    pub(super) fn map(&self, name: &'static str) -> Result<&Map, ProbeError> {
        self.bpf.map(name).ok_or(ProbeError::MissingMap(name))
    }

    /// The map `name`, writable, for a reader that deletes what it reported.
    pub(super) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, ProbeError> {
        self.bpf.map_mut(name).ok_or(ProbeError::MissingMap(name))
    }
}

/// The `tcp_probe` path loading the TCP programs would take on this kernel,
/// judged without loading them (no privilege needed): raw where the
/// kernel's BTF gives `struct tcp_sock`'s layout, else the classic
/// tracepoint and why. Attaching may still fall back (`--version` says so).
pub fn expected_tcp_probe_path() -> TcpProbePath {
    match tcp_sock_offsets(&ProbeOptions::tcp([])) {
        Ok(_) => TcpProbePath::RawBtf,
        Err(why) => TcpProbePath::Tracepoint { why },
    }
}

/// This kernel's `struct tcp_sock` layout for the raw `tcp_probe` path, or
/// why the classic tracepoint samples the same fields from its record.
fn tcp_sock_offsets(opts: &ProbeOptions) -> Result<TcpSockOffsets, String> {
    if opts.classic_tracepoints {
        Err("asked for".to_owned())
    } else if force_classic_tracepoints() {
        Err(format!("{CLASSIC_ENV}=classic"))
    } else if opts.tcp {
        btf::tcp_sock_offsets(Path::new(VMLINUX_BTF)).map_err(|e| e.to_string())
    } else {
        Err("TCP programs not attached".to_owned())
    }
}

/// The object's log buffer, if it has one.
fn init_kernel_log(bpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(bpf) {
        // Kept alive by leaking nothing: the logger owns a ring buffer fd
        // that user space would have to poll; the programs log nothing
        // (a log call per received segment would cost more than the
        // sample), so there is nothing to drain.
        Ok(_logger) => tracing::debug!("kernel log buffer present"),
        Err(e) => tracing::debug!("no kernel log statements in the object: {e}"),
    }
}

/// The softirq programs: (raw, classic, event of `irq`).
const SOFTIRQ_PROGRAMS: [(&str, &str, (&str, &str)); 2] = [
    (
        PROG_SOFTIRQ_ENTRY_BTF,
        PROG_SOFTIRQ_ENTRY,
        ("irq", "softirq_entry"),
    ),
    (
        PROG_SOFTIRQ_EXIT_BTF,
        PROG_SOFTIRQ_EXIT,
        ("irq", "softirq_exit"),
    ),
];

/// The TCP programs besides `tcp_probe`: (raw, classic, event).
const TCP_EVENT_PROGRAMS: [(&str, &str, (&str, &str)); 2] = [
    (
        PROG_INET_SOCK_SET_STATE_BTF,
        PROG_INET_SOCK_SET_STATE,
        ("sock", "inet_sock_set_state"),
    ),
    (
        PROG_TCP_RETRANSMIT_SKB_BTF,
        PROG_TCP_RETRANSMIT_SKB,
        ("tcp", "tcp_retransmit_skb"),
    ),
];

/// The classic tracepoints' offsets, from tracefs: the vector's in the
/// softirq records, and with the TCP programs their three layouts.
struct ClassicLayouts {
    softirq_vec: u32,
    tcp: Option<TcpLayouts>,
}

impl ClassicLayouts {
    fn read(tcp: bool) -> Result<Self, ProbeError> {
        let root = tracefs::ensure_mounted()?;
        let entry = tracefs::field_offset(&root, "irq", "softirq_entry", "vec")?;
        let exit = tracefs::field_offset(&root, "irq", "softirq_exit", "vec")?;
        if entry != exit {
            return Err(ProbeError::Layout(format!(
                "irq:softirq_entry has `vec` at offset {entry} but irq:softirq_exit at {exit}"
            )));
        }
        Ok(Self {
            softirq_vec: entry,
            tcp: tcp.then(|| TcpLayouts::read(&root)).transpose()?,
        })
    }
}

/// Attaching the loaded object's programs, each raw where it loads.
struct Attach<'a> {
    bpf: &'a mut Ebpf,
    /// The kernel's BTF (`None`: none, or the classic path was asked for).
    btf: Option<&'a Btf>,
    /// Whether the classic tracepoints can be used, or why not (tracefs).
    classic: Result<(), String>,
    /// The programs that fell back to their classic tracepoint.
    fell_back: Vec<&'static str>,
}

impl Attach<'_> {
    /// The raw program `raw` where it loads, else the classic `classic` on
    /// `event`; an error naming both reasons when neither can.
    fn either(
        &mut self,
        raw: &'static str,
        classic: &'static str,
        (category, event): (&str, &str),
    ) -> Result<(), ProbeError> {
        let why = match self.btf {
            Some(btf) => match attach_btf(self.bpf, raw, event, btf) {
                Ok(()) => return Ok(()),
                Err(e) => format!("tp_btf/{event}: {e}"),
            },
            None => "no kernel BTF, or the classic tracepoints asked for".to_owned(),
        };
        self.classic_fallback(classic, category, event, &why)
    }

    fn classic_fallback(
        &mut self,
        classic: &'static str,
        category: &str,
        event: &str,
        why: &str,
    ) -> Result<(), ProbeError> {
        if let Err(tracefs) = &self.classic {
            return Err(ProbeError::Layout(format!(
                "{category}:{event}: the raw program did not load ({why}) and the classic \
                 tracepoint needs tracefs: {tracefs}"
            )));
        }
        tracing::info!("{category}:{event} sampled by the classic tracepoint: {why}");
        attach_tracepoint(self.bpf, classic, category, event)?;
        self.fell_back.push(classic);
        Ok(())
    }

    /// Fills the port filter, then attaches the TCP programs: raw where
    /// `sock_offsets` (this kernel's `struct sock` layout) allows it.
    fn tcp(
        &mut self,
        ports: &[u16],
        sock_offsets: Result<TcpSockOffsets, String>,
    ) -> Result<TcpProbePath, ProbeError> {
        // The filter first: from the moment a program is attached it must
        // already ignore the sockets it should.
        fill_port_filter(self.bpf, ports)?;
        let btf = self.btf;
        if sock_offsets.is_err() {
            self.btf = None;
        }
        for (raw, classic, event) in TCP_EVENT_PROGRAMS {
            match &sock_offsets {
                Ok(_) => self.either(raw, classic, event)?,
                Err(why) => self.classic_fallback(classic, event.0, event.1, why)?,
            }
        }
        self.btf = btf;
        let path = match (&sock_offsets, self.btf) {
            (Ok(_), Some(btf)) => {
                match attach_btf(self.bpf, PROG_TCP_PROBE_BTF, "tcp_probe", btf) {
                    Ok(()) => TcpProbePath::RawBtf,
                    Err(e) => TcpProbePath::Tracepoint {
                        why: format!("tp_btf unavailable: {e}"),
                    },
                }
            }
            (Ok(_), None) => TcpProbePath::Tracepoint {
                why: "asked for".to_owned(),
            },
            (Err(why), _) => TcpProbePath::Tracepoint { why: why.clone() },
        };
        if let TcpProbePath::Tracepoint { why } = &path {
            let why = why.clone();
            self.classic_fallback(PROG_TCP_PROBE, "tcp", "tcp_probe", &why)?;
        }
        Ok(path)
    }
}

/// The ports to filter on, de-duplicated and sorted.
fn filter_ports(ports: &[u16]) -> Vec<u16> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The filter's bitmap for `ports`: the non-zero words, by index.
fn port_filter_words(ports: &[u16]) -> Vec<(u32, u64)> {
    let mut words = vec![0u64; FILTER_PORT_WORDS as usize];
    for &port in ports {
        let (word, bit) = filter_port_bit(port);
        words[word as usize] |= bit;
    }
    (0..FILTER_PORT_WORDS)
        .zip(words)
        .filter(|&(_, w)| w != 0)
        .collect()
}

fn fill_port_filter(bpf: &mut Ebpf, ports: &[u16]) -> Result<(), ProbeError> {
    let map_err = |source| ProbeError::Map {
        name: MAP_FILTER_PORTS,
        source,
    };
    let map = bpf
        .map_mut(MAP_FILTER_PORTS)
        .ok_or(ProbeError::MissingMap(MAP_FILTER_PORTS))?;
    let mut filter: Array<&mut MapData, u64> = Array::try_from(map).map_err(map_err)?;
    for (index, word) in port_filter_words(ports) {
        filter.set(index, word, 0).map_err(map_err)?;
    }
    Ok(())
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

/// Loads and attaches the BTF-typed program `prog` to the raw tracepoint
/// `event`.
fn attach_btf(
    bpf: &mut Ebpf,
    prog: &'static str,
    event: &str,
    btf: &Btf,
) -> Result<(), ProbeError> {
    let program: &mut BtfTracePoint = bpf
        .program_mut(prog)
        .ok_or(ProbeError::MissingProgram(prog))?
        .try_into()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .load(event, btf)
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .attach()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    Ok(())
}

/// The variable that, set to `classic`, keeps every program on its classic
/// tracepoint even where the raw one works.
pub const CLASSIC_ENV: &str = "XDR_SHIP_TRACEPOINTS";

/// Whether [`CLASSIC_ENV`] asks for the classic tracepoints.
fn force_classic_tracepoints() -> bool {
    std::env::var(CLASSIC_ENV).is_ok_and(|v| v == "classic")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_ports_are_deduplicated_and_sorted() {
        assert_eq!(filter_ports(&[3003, 3000, 3003]), [3000, 3003]);
    }

    #[test]
    fn the_port_bitmap_sets_exactly_the_given_ports_bits() {
        let ports = [0, 63, 64, 3000, 3003, 65535];
        let words = port_filter_words(&ports);
        // 0 and 63 share word 0; 3000 and 3003 share word 46.
        assert_eq!(
            words,
            [
                (0, 1 | 1 << 63),
                (1, 1),
                (46, 1 << (3000 - 46 * 64) | 1 << (3003 - 46 * 64)),
                (1023, 1 << 63),
            ]
        );
        let set: Vec<u16> = (0..=u16::MAX)
            .filter(|&p| {
                let (word, bit) = filter_port_bit(p);
                words.iter().any(|&(i, w)| i == word && w & bit != 0)
            })
            .collect();
        assert_eq!(set, ports);
    }

    #[test]
    fn any_number_of_ports_fits_the_bitmap() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let words = port_filter_words(&filter_ports(&all));
        assert_eq!(words.len(), FILTER_PORT_WORDS as usize);
        assert!(words.iter().all(|&(_, w)| w == u64::MAX));
    }
}
