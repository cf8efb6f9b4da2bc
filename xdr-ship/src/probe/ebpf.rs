//! Loading the kernel programs and reading their maps.
//!
//! Why the object is embedded: the binary must be self-contained on a source
//! node (no separate `.o` to ship or find). `cargo xtask build` builds the
//! object and points the build script at it; a plain `cargo build` embeds an
//! empty placeholder, which [`KernelPrograms::load`] reports as
//! [`ProbeError::NotBuilt`] so the caller can fall back and say why.
//!
//! Why every field offset is read here: tracepoint record layouts are not a
//! kernel ABI and Rust eBPF cannot emit CO-RE relocations, so before loading
//! we read each field the programs use (offset *and* size) from tracefs
//! `format` and patch the programs' `.rodata` globals. A missing field or a
//! size the programs cannot read is a load error naming the field, never a
//! silently wrong number.
//!
//! What is loaded: the softirq programs always; the TCP programs
//! (`tcp:tcp_probe`, `tcp:tcp_retransmit_skb`, `sock:inet_sock_set_state`)
//! when [`ProbeOptions::tcp`] asks for them, with the port filter filled in
//! before they are attached, so no event of an unwanted socket is recorded.
use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use xdr_common::{
    InetSockSetStateOffsets, SoftirqStat, TcpConnStat, TcpProbeOffsets, TcpRetransmitOffsets,
    FILTER_MODE_ALL, FILTER_MODE_PORTS, FILTER_PORTS_CAPACITY, GLOBAL_FILTER_MODE,
    GLOBAL_INET_SOCK_SET_STATE_OFFSETS, GLOBAL_SOFTIRQ_VEC_OFFSET, GLOBAL_TCP_PROBE_OFFSETS,
    GLOBAL_TCP_RETRANSMIT_OFFSETS, MAP_FILTER_PORTS, MAP_SOFTIRQ_STATS, MAP_TCP_CONNS,
    MAP_TCP_COUNTERS, NR_SOFTIRQS, OFFSET_ABSENT, PROG_INET_SOCK_SET_STATE, PROG_SOFTIRQ_ENTRY,
    PROG_SOFTIRQ_EXIT, PROG_TCP_PROBE, PROG_TCP_RETRANSMIT_SKB, TCP_CONN_CAPACITY,
    TCP_COUNTER_CLOSES, TCP_COUNTER_OPENS, TCP_COUNTER_RETRANS_FAILED,
    TCP_COUNTER_RETRANS_UNATTRIBUTED,
};
use xdr_common::{
    TcpSockOffsets, GLOBAL_TCP_SOCK_OFFSETS, PROG_TCP_PROBE_BTF, TCP_COUNTER_NO_COOKIE,
};

use super::{
    btf::{self, VMLINUX_BTF},
    softirq::{CpuCounters, SoftirqCounters, SoftirqSource},
    tcp::{KernelConn, TcpCounters},
    tracefs::{self, TracefsError},
    ProbeError,
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
    /// With `tcp`: sample `tcp_probe` with the classic tracepoint even
    /// where the raw one works (also `XDR_SHIP_TCP_PROBE=tracepoint`).
    pub classic_tcp_probe: bool,
}

impl ProbeOptions {
    /// TCP programs for sockets on any of `ports` (every socket if empty).
    pub fn tcp(ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            tcp: true,
            ports: ports.into_iter().collect(),
            classic_tcp_probe: false,
        }
    }
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
}

impl std::fmt::Debug for KernelPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrograms")
            .field("online_cpus", &self.online_cpus)
            .field("tcp_ports", &self.tcp_ports)
            .field("tcp_probe_path", &self.tcp_probe_path)
            .finish_non_exhaustive()
    }
}

impl KernelPrograms {
    /// Loads the embedded object, patches tracepoint field offsets read from
    /// tracefs, and attaches the softirq programs.
    pub fn load() -> Result<Self, ProbeError> {
        Self::load_with(ProbeOptions::default())
    }

    /// Like [`load`](Self::load), and with `opts.tcp` also attaches the TCP
    /// programs, watching the sockets on `opts.ports` (all if empty).
    pub fn load_with(opts: ProbeOptions) -> Result<Self, ProbeError> {
        if !built_with_kernel_programs() {
            return Err(ProbeError::NotBuilt);
        }
        let ports = filter_ports(&opts.ports)?;
        raise_memlock_limit();
        let root = tracefs::ensure_mounted()?;
        let entry_off = tracefs::field_offset(&root, "irq", "softirq_entry", "vec")?;
        let exit_off = tracefs::field_offset(&root, "irq", "softirq_exit", "vec")?;
        if entry_off != exit_off {
            return Err(ProbeError::Layout(format!(
                "irq:softirq_entry has `vec` at offset {entry_off} but irq:softirq_exit at {exit_off}"
            )));
        }
        let tcp_offsets = if opts.tcp {
            Some(TcpLayouts::read(&root)?)
        } else {
            None
        };
        // The raw path needs this kernel's `struct tcp_sock` layout; without
        // it the classic tracepoint samples the same fields from its record.
        let sock_offsets = if opts.classic_tcp_probe {
            Err("asked for".to_owned())
        } else if force_classic_tcp_probe() {
            Err("XDR_SHIP_TCP_PROBE=tracepoint".to_owned())
        } else if opts.tcp {
            btf::tcp_sock_offsets(Path::new(VMLINUX_BTF)).map_err(|e| e.to_string())
        } else {
            Err("TCP programs not attached".to_owned())
        };
        let filter_mode = if ports.is_empty() {
            FILTER_MODE_ALL
        } else {
            FILTER_MODE_PORTS
        };

        // Parsed once: the loader relocates against it and the raw
        // `tcp_probe` is loaded against it (a parse costs ~0.2 s).
        let kernel_btf = Btf::from_sys_fs().ok();
        let mut loader = EbpfLoader::new();
        loader.btf(kernel_btf.as_ref());
        loader.override_global(GLOBAL_SOFTIRQ_VEC_OFFSET, &entry_off, true);
        // When tracefs describes exactly the compiled tail layout, the
        // program reads the record in one helper call.
        let fast = tcp_offsets.as_ref().map_or(0u32, |l| {
            u32::from(l.probe == xdr_common::TcpProbeOffsets::DEFAULT)
        });
        if let Some(layouts) = &tcp_offsets {
            loader
                .override_global(xdr_common::GLOBAL_TCP_PROBE_FAST, &fast, true)
                .override_global(GLOBAL_TCP_PROBE_OFFSETS, &layouts.probe, true)
                .override_global(GLOBAL_TCP_RETRANSMIT_OFFSETS, &layouts.retransmit, true)
                .override_global(GLOBAL_INET_SOCK_SET_STATE_OFFSETS, &layouts.set_state, true)
                .override_global(GLOBAL_FILTER_MODE, &filter_mode, true)
                .override_global(
                    GLOBAL_TCP_SOCK_OFFSETS,
                    sock_offsets.as_ref().unwrap_or(&TcpSockOffsets::DEFAULT),
                    true,
                );
        }
        let mut tcp_probe_path = None;
        let mut bpf = loader
            .load(KERNEL_OBJECT)
            .map_err(|source| ProbeError::Load { source })?;
        match aya_log::EbpfLogger::init(&mut bpf) {
            // Kept alive by leaking nothing: the logger owns a ring buffer fd
            // that user space would have to poll; the programs log nothing
            // (a log call per received segment would cost more than the
            // sample), so there is nothing to drain.
            Ok(_logger) => tracing::debug!("kernel log buffer present"),
            Err(e) => tracing::debug!("no kernel log statements in the object: {e}"),
        }
        for (prog, event) in [
            (PROG_SOFTIRQ_ENTRY, "softirq_entry"),
            (PROG_SOFTIRQ_EXIT, "softirq_exit"),
        ] {
            attach_tracepoint(&mut bpf, prog, "irq", event)?;
        }
        if opts.tcp {
            // The filter first: from the moment a program is attached it
            // must already ignore the sockets it should.
            fill_port_filter(&mut bpf, &ports)?;
            for (prog, category, event) in [
                (PROG_INET_SOCK_SET_STATE, "sock", "inet_sock_set_state"),
                (PROG_TCP_RETRANSMIT_SKB, "tcp", "tcp_retransmit_skb"),
            ] {
                attach_tracepoint(&mut bpf, prog, category, event)?;
            }
            let path = match sock_offsets {
                Ok(_) => match attach_tcp_probe_btf(&mut bpf, kernel_btf.as_ref()) {
                    Ok(()) => TcpProbePath::RawBtf,
                    Err(e) => TcpProbePath::Tracepoint {
                        why: format!("tp_btf unavailable: {e}"),
                    },
                },
                Err(why) => TcpProbePath::Tracepoint { why },
            };
            if let TcpProbePath::Tracepoint { why } = &path {
                tracing::info!("tcp_probe sampled by the classic tracepoint: {why}");
                attach_tracepoint(&mut bpf, PROG_TCP_PROBE, "tcp", "tcp_probe")?;
            }
            tcp_probe_path = Some(path);
        }
        let online_cpus = aya::util::online_cpus().map_err(|(_, e)| ProbeError::Proc {
            path: "/sys/devices/system/cpu/online".to_owned(),
            source: e,
        })?;
        Ok(Self {
            bpf,
            online_cpus,
            tcp_ports: opts.tcp.then_some(ports),
            tcp_probe_path,
        })
    }

    /// How `tcp_probe` is sampled; `None` when the TCP programs are not
    /// attached.
    pub fn tcp_probe_path(&self) -> Option<&TcpProbePath> {
        self.tcp_probe_path.as_ref()
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

    /// Every connection the TCP programs hold, sorted by cookie; then
    /// deletes the closed ones among them, so a closed connection is
    /// reported exactly once.
    ///
    /// The map is read while the kernel writes it: an entry evicted (or
    /// deleted) between listing its key and reading it is skipped, and a
    /// listing that restarts (the kernel continues from the first key when
    /// the one it continues from is gone) is bounded and de-duplicated.
    pub fn tcp_connections(&mut self) -> Result<Vec<KernelConn>, ProbeError> {
        if !self.tcp_attached() {
            return Err(ProbeError::TcpNotAttached);
        }
        let now_ns = monotonic_ns();
        let map_err = |source| ProbeError::Map {
            name: MAP_TCP_CONNS,
            source,
        };
        let mut out = Vec::new();
        {
            let map = self
                .bpf
                .map(MAP_TCP_CONNS)
                .ok_or(ProbeError::MissingMap(MAP_TCP_CONNS))?;
            let conns: HashMap<&MapData, u64, TcpConnStat> =
                HashMap::try_from(map).map_err(map_err)?;
            let mut seen = HashSet::new();
            let max_steps = 2 * TCP_CONN_CAPACITY as usize;
            for (step, key) in conns.keys().enumerate() {
                if step >= max_steps {
                    tracing::debug!("{MAP_TCP_CONNS}: listing keeps restarting; stopped");
                    break;
                }
                let cookie = match key {
                    Ok(cookie) => cookie,
                    Err(e) => {
                        tracing::debug!("{MAP_TCP_CONNS}: listing keys stopped: {e}");
                        break;
                    }
                };
                if !seen.insert(cookie) {
                    continue;
                }
                match conns.get(&cookie, 0) {
                    Ok(stat) => out.push(KernelConn::from_stat(cookie, &stat, now_ns)),
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => tracing::debug!("{MAP_TCP_CONNS}: reading {cookie:#x}: {e}"),
                }
            }
        }
        out.sort_by_key(|c| c.cookie);

        let closed: Vec<u64> = out.iter().filter(|c| c.closed).map(|c| c.cookie).collect();
        if !closed.is_empty() {
            let map = self
                .bpf
                .map_mut(MAP_TCP_CONNS)
                .ok_or(ProbeError::MissingMap(MAP_TCP_CONNS))?;
            let mut conns: HashMap<&mut MapData, u64, TcpConnStat> =
                HashMap::try_from(map).map_err(map_err)?;
            for cookie in closed {
                match conns.remove(&cookie) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    // Left for the next read, which reports it again.
                    Err(e) => tracing::debug!("{MAP_TCP_CONNS}: deleting {cookie:#x}: {e}"),
                }
            }
        }
        Ok(out)
    }

    /// The TCP programs' global counters, summed over CPUs.
    pub fn tcp_counters(&self) -> Result<TcpCounters, ProbeError> {
        if !self.tcp_attached() {
            return Err(ProbeError::TcpNotAttached);
        }
        let map_err = |source| ProbeError::Map {
            name: MAP_TCP_COUNTERS,
            source,
        };
        let map = self
            .bpf
            .map(MAP_TCP_COUNTERS)
            .ok_or(ProbeError::MissingMap(MAP_TCP_COUNTERS))?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
        let sum = |index: u32| -> Result<u64, ProbeError> {
            Ok(counters
                .get(&index, 0)
                .map_err(map_err)?
                .iter()
                .copied()
                .fold(0u64, u64::wrapping_add))
        };
        Ok(TcpCounters {
            opens: sum(TCP_COUNTER_OPENS)?,
            closes: sum(TCP_COUNTER_CLOSES)?,
            retransmits_unattributed: sum(TCP_COUNTER_RETRANS_UNATTRIBUTED)?,
            retransmits_failed: sum(TCP_COUNTER_RETRANS_FAILED)?,
            no_cookie: sum(TCP_COUNTER_NO_COOKIE)?,
        })
    }
}

/// The ports to filter on, de-duplicated and sorted, within the map's size.
fn filter_ports(ports: &[u16]) -> Result<Vec<u16>, ProbeError> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > FILTER_PORTS_CAPACITY as usize {
        return Err(ProbeError::TooManyPorts {
            given: ports.len(),
            max: FILTER_PORTS_CAPACITY,
        });
    }
    Ok(ports)
}

fn fill_port_filter(bpf: &mut Ebpf, ports: &[u16]) -> Result<(), ProbeError> {
    let map_err = |source| ProbeError::Map {
        name: MAP_FILTER_PORTS,
        source,
    };
    let map = bpf
        .map_mut(MAP_FILTER_PORTS)
        .ok_or(ProbeError::MissingMap(MAP_FILTER_PORTS))?;
    let mut filter: HashMap<&mut MapData, u16, u8> = HashMap::try_from(map).map_err(map_err)?;
    for &port in ports {
        filter.insert(port, 1, 0).map_err(map_err)?;
    }
    Ok(())
}

/// The field offsets of the three TCP tracepoints on this kernel.
#[derive(Debug)]
struct TcpLayouts {
    probe: TcpProbeOffsets,
    retransmit: TcpRetransmitOffsets,
    set_state: InetSockSetStateOffsets,
}

impl TcpLayouts {
    fn read(root: &Path) -> Result<Self, ProbeError> {
        let p = EventFormat::read(root, "tcp", "tcp_probe")?;
        let probe = TcpProbeOffsets {
            sport: p.offset("sport", 2)?,
            dport: p.offset("dport", 2)?,
            family: p.offset("family", 2)?,
            snd_nxt: p.offset("snd_nxt", 4)?,
            snd_una: p.offset("snd_una", 4)?,
            snd_cwnd: p.offset("snd_cwnd", 4)?,
            ssthresh: p.offset("ssthresh", 4)?,
            snd_wnd: p.offset("snd_wnd", 4)?,
            srtt: p.offset("srtt", 4)?,
            rcv_wnd: p.offset("rcv_wnd", 4)?,
            sock_cookie: p.offset("sock_cookie", 8)?,
            skaddr: p.offset("skaddr", 8)?,
        };
        let r = EventFormat::read(root, "tcp", "tcp_retransmit_skb")?;
        let retransmit = TcpRetransmitOffsets {
            skaddr: r.offset("skaddr", 8)?,
            sport: r.offset("sport", 2)?,
            dport: r.offset("dport", 2)?,
            // Before Linux 6.13 the event had no `err` and fired only for
            // retransmits that went out.
            err: r.optional_offset("err", 4)?.unwrap_or(OFFSET_ABSENT),
        };
        let s = EventFormat::read(root, "sock", "inet_sock_set_state")?;
        let set_state = InetSockSetStateOffsets {
            skaddr: s.offset("skaddr", 8)?,
            oldstate: s.offset("oldstate", 4)?,
            newstate: s.offset("newstate", 4)?,
            sport: s.offset("sport", 2)?,
            dport: s.offset("dport", 2)?,
            protocol: s.offset("protocol", 2)?,
        };
        Ok(Self {
            probe,
            retransmit,
            set_state,
        })
    }
}

/// One event's tracefs `format`, read once for all its fields.
struct EventFormat {
    /// `category/name`.
    event: String,
    text: String,
}

impl EventFormat {
    fn read(root: &Path, category: &str, event: &str) -> Result<Self, TracefsError> {
        let path = root
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let event = format!("{category}/{event}");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            event: event.clone(),
            path,
            source,
        })?;
        Ok(Self { event, text })
    }

    /// Offset of `field`, which the program reads as `size` bytes.
    fn offset(&self, field: &str, size: u32) -> Result<u32, ProbeError> {
        self.optional_offset(field, size)?.ok_or_else(|| {
            TracefsError::NoField {
                event: self.event.clone(),
                field: field.to_owned(),
            }
            .into()
        })
    }

    /// Offset of `field` if the event has it; a size other than `size` is an
    /// error either way.
    fn optional_offset(&self, field: &str, size: u32) -> Result<Option<u32>, ProbeError> {
        let Some(offset) = tracefs::parse_field_offset(&self.text, field) else {
            return Ok(None);
        };
        match tracefs::parse_field_size(&self.text, field) {
            Some(s) if s == size => Ok(Some(offset)),
            found => Err(ProbeError::Layout(format!(
                "{} field `{field}` is {} bytes, the kernel program reads {size}",
                self.event,
                found.map_or_else(|| "an unknown number of".to_owned(), |s| s.to_string()),
            ))),
        }
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns()`, so ages of
/// kernel timestamps can be computed in user space.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call;
    // CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32).as_nanos() as u64
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

/// Loads and attaches the BTF-typed `tcp_probe` program.
fn attach_tcp_probe_btf(bpf: &mut Ebpf, btf: Option<&Btf>) -> Result<(), ProbeError> {
    let prog = PROG_TCP_PROBE_BTF;
    let btf = btf.ok_or_else(|| ProbeError::Layout(format!("no kernel BTF at {VMLINUX_BTF}")))?;
    let program: &mut BtfTracePoint = bpf
        .program_mut(prog)
        .ok_or(ProbeError::MissingProgram(prog))?
        .try_into()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .load("tcp_probe", btf)
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    program
        .attach()
        .map_err(|source| ProbeError::Program { name: prog, source })?;
    Ok(())
}

/// `XDR_SHIP_TCP_PROBE=tracepoint` keeps the classic tracepoint even where
/// the raw one works: to compare the two, and to test the fallback.
fn force_classic_tcp_probe() -> bool {
    std::env::var("XDR_SHIP_TCP_PROBE").is_ok_and(|v| v == "tracepoint")
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

    const TCP_PROBE_FORMAT: &str = "name: tcp_probe
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:112;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:128;\tsize:8;\tsigned:0;
";

    fn format() -> EventFormat {
        EventFormat {
            event: "tcp/tcp_probe".to_owned(),
            text: TCP_PROBE_FORMAT.to_owned(),
        }
    }

    #[test]
    fn offsets_come_with_the_size_checked() {
        let f = format();
        assert_eq!(f.offset("sport", 2).unwrap(), 64);
        assert_eq!(f.offset("skaddr", 8).unwrap(), 128);
        assert_eq!(f.optional_offset("err", 4).unwrap(), None);
    }

    #[test]
    fn a_field_of_another_size_is_a_layout_error_naming_it() {
        let e = format().offset("srtt", 8).unwrap_err().to_string();
        assert!(e.contains("tcp/tcp_probe field `srtt` is 4 bytes"), "{e}");
    }

    #[test]
    fn a_missing_field_is_an_error_naming_event_and_field() {
        let e = format().offset("snd_cwnd", 4).unwrap_err().to_string();
        assert!(
            e.contains("tcp/tcp_probe") && e.contains("`snd_cwnd`"),
            "{e}"
        );
    }

    #[test]
    fn filter_ports_are_deduplicated_and_bounded() {
        assert_eq!(filter_ports(&[3000, 3003, 3000]).unwrap(), [3000, 3003]);
        let many: Vec<u16> = (0..=FILTER_PORTS_CAPACITY as u16).collect();
        let e = filter_ports(&many).unwrap_err().to_string();
        assert!(e.contains(&FILTER_PORTS_CAPACITY.to_string()), "{e}");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
