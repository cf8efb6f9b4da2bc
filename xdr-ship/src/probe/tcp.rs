//! The kernel's view of each TCP connection, as the eBPF programs sampled it.
//!
//! Why per connection and keyed by cookie: what limits one shipper
//! connection (its congestion window, the peer's window, its own receive
//! window, loss) is a property of that socket, not of the machine. The
//! programs sample `tcp:tcp_probe` for every received segment and key the
//! result by the socket cookie, the same number the shipper reads with
//! `SO_COOKIE` for each of its sockets (`metrics::ConnSnapshot::cookie`), so
//! diagnosis joins the two views connection by connection with no guessing
//! from addresses and ports.
//!
//! Why closed connections are reported once: a connection that lives for
//! less than one sampling interval would otherwise never be seen. The kernel
//! keeps its entry, marked closed; [`KernelPrograms::tcp_connections`]
//! returns it and then deletes it.
//!
//! Timing: `tcp:tcp_probe` fires as a segment arrives, before the kernel
//! processes it, so each sample is the socket one segment ago: what an ACK
//! changes (srtt, cwnd, the peer's window, in-flight) shows up with the next
//! received segment. On a busy connection that is microseconds; on a quiet
//! one, `last_update_age` says how old the picture is.
//!
//! Units: windows and in-flight in bytes, the congestion window and
//! ssthresh in segments (as the kernel keeps them), RTT in µs.
use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xdr_common::{
    TcpConnStat, CONN_FLAG_CLOSED, MAP_TCP_CONNS, MAP_TCP_COUNTERS, NR_SOFTIRQS, TCP_CONN_CAPACITY,
    TCP_COUNTER_CLOSES, TCP_COUNTER_NO_COOKIE, TCP_COUNTER_OPENS, TCP_COUNTER_RETRANS_FAILED,
    TCP_COUNTER_RETRANS_UNATTRIBUTED, TCP_INFINITE_SSTHRESH,
};

use super::{
    ebpf::KernelPrograms,
    softirq::{SoftirqCounters, SoftirqSource},
    ProbeError,
};

/// `AF_INET6`.
const AF_INET6: u16 = 10;

/// One TCP connection as the kernel programs last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConn {
    /// Socket cookie (`SO_COOKIE`): the join key with the shipper's numbers.
    pub cookie: u64,
    /// Whether the socket is IPv6 (IPv4-mapped addresses included).
    pub ipv6: bool,
    /// Local port.
    pub sport: u16,
    /// Remote port.
    pub dport: u16,
    /// Congestion window.
    pub cwnd_segments: u32,
    /// Slow-start threshold as `tcp_current_ssthresh()` gives it: outside
    /// loss recovery that is `max(ssthresh, 3/4 cwnd)`, so it can be above
    /// `TCP_INFO`'s `snd_ssthresh`. `None` while the connection has never
    /// left slow start (the kernel's "infinite" threshold).
    pub ssthresh_segments: Option<u32>,
    /// The peer's advertised window: what it lets us have in flight.
    pub snd_wnd_bytes: u32,
    /// Our advertised window.
    pub rcv_wnd_bytes: u32,
    /// Smoothed RTT.
    pub srtt_us: u32,
    /// Sent and not yet acknowledged (`snd_nxt - snd_una`).
    pub bytes_in_flight: u32,
    /// Retransmitted skbs since the programs first saw the connection (an
    /// skb may carry several segments, so this can be lower than
    /// `TCP_INFO`'s `total_retrans`).
    pub retransmits: u64,
    /// `tcp:tcp_probe` samples (segments received in ESTABLISHED).
    pub samples: u64,
    /// Whether the socket has closed (reported once, then forgotten).
    pub closed: bool,
    /// How long ago the kernel last updated the entry.
    #[serde(
        rename = "last_update_age_ms",
        serialize_with = "duration_ms",
        deserialize_with = "duration_from_ms"
    )]
    pub last_update_age: Duration,
}

impl KernelConn {
    /// The connection of map entry `cookie → stat`, aged against
    /// `now_ns` (`CLOCK_MONOTONIC`, see [`monotonic_ns`]).
    pub fn from_stat(cookie: u64, stat: &TcpConnStat, now_ns: u64) -> Self {
        Self {
            cookie,
            ipv6: stat.family == AF_INET6,
            sport: stat.sport,
            dport: stat.dport,
            cwnd_segments: stat.snd_cwnd,
            ssthresh_segments: (stat.ssthresh < TCP_INFINITE_SSTHRESH).then_some(stat.ssthresh),
            snd_wnd_bytes: stat.snd_wnd,
            rcv_wnd_bytes: stat.rcv_wnd,
            srtt_us: stat.srtt_us,
            bytes_in_flight: stat.bytes_in_flight,
            retransmits: stat.retransmits,
            samples: stat.samples,
            closed: stat.flags & CONN_FLAG_CLOSED != 0,
            last_update_age: Duration::from_nanos(now_ns.saturating_sub(stat.last_update_ns)),
        }
    }
}

/// Machine-wide TCP counters of the programs, for the sockets the port
/// filter lets through, since they were attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpCounters {
    /// Connections that reached ESTABLISHED (either side).
    pub opens: u64,
    /// Established connections that reached CLOSE.
    pub closes: u64,
    /// Retransmits of sockets `tcp_probe` had not sampled yet (no cookie
    /// to charge them to): typically losses in a connection's first flight.
    pub retransmits_unattributed: u64,
    /// Retransmits the kernel tried but could not send (e.g. the original
    /// was still in a host queue); not counted anywhere else.
    pub retransmits_failed: u64,
    /// Segments of watched sockets the raw `tcp_probe` program skipped
    /// because the socket had no cookie yet (always 0 on the classic path,
    /// which generates one).
    pub no_cookie: u64,
}

/// Everything the kernel programs know at one instant: per connection, the
/// TCP counters, and per CPU, softirq time. What the TUI and diagnosis join
/// with the shipper's [`crate::metrics::ShipSnapshot`] by cookie.
#[derive(Clone, Debug, Serialize)]
pub struct KernelSnapshot {
    /// When it was read (for rates between two snapshots).
    #[serde(skip)]
    pub at: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Always eBPF: without the programs there is no per-connection kernel
    /// view (the `TCP_INFO` fallback lives with the shipper).
    pub source: SoftirqSource,
    /// Connections, sorted by cookie; closed ones appear in one snapshot.
    pub conns: Vec<KernelConn>,
    /// Machine-wide counters.
    pub counters: TcpCounters,
    /// Cumulative softirq counters per CPU.
    #[serde(serialize_with = "softirq_cpus")]
    pub softirq: SoftirqCounters,
}

impl KernelSnapshot {
    /// Reads every map of `progs` (which must have the TCP programs
    /// attached). Deletes the closed connections it reports.
    pub fn read(progs: &mut KernelPrograms) -> Result<Self, ProbeError> {
        let conns = progs.tcp_connections()?;
        let counters = progs.tcp_counters()?;
        let softirq = progs.softirq_counters()?;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Self {
            at: softirq.at,
            unix_ms,
            source: SoftirqSource::Ebpf,
            conns,
            counters,
            softirq,
        })
    }

    /// The connection with socket cookie `cookie`, if the kernel saw it.
    pub fn conn(&self, cookie: u64) -> Option<&KernelConn> {
        self.conns
            .binary_search_by_key(&cookie, |c| c.cookie)
            .ok()
            .map(|i| &self.conns[i])
    }
}

/// The reader of the TCP programs' maps.
impl KernelPrograms {
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
            let map = self.map(MAP_TCP_CONNS)?;
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
            let map = self.map_mut(MAP_TCP_CONNS)?;
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
        let map = self.map(MAP_TCP_COUNTERS)?;
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

fn duration_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Reads what [`duration_ms`] wrote (a recording played back).
fn duration_from_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = f64::deserialize(d)?;
    Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)
}

/// One CPU's softirq counters as JSON.
#[derive(Serialize)]
struct CpuCountersJson<'a> {
    cpu: usize,
    runs: &'a [u64; NR_SOFTIRQS],
    vector_ns: Option<&'a [u64; NR_SOFTIRQS]>,
    total_ns: u64,
}

fn softirq_cpus<S: Serializer>(c: &SoftirqCounters, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.cpus.iter().map(|c| CpuCountersJson {
        cpu: c.cpu,
        runs: &c.runs,
        vector_ns: c.vector_ns.as_ref(),
        total_ns: c.total_ns,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::softirq::CpuCounters;

    fn stat() -> TcpConnStat {
        TcpConnStat {
            last_update_ns: 1_000_000_000,
            samples: 42,
            retransmits: 3,
            snd_cwnd: 10,
            ssthresh: TCP_INFINITE_SSTHRESH,
            snd_wnd: 65_536,
            rcv_wnd: 131_072,
            srtt_us: 156_000,
            bytes_in_flight: 14_480,
            sport: 40_000,
            dport: 3000,
            family: 2,
            flags: 0,
        }
    }

    #[test]
    fn a_map_entry_becomes_a_connection_in_units() {
        let c = KernelConn::from_stat(7, &stat(), 1_250_000_000);
        assert_eq!(c.cookie, 7);
        assert!(!c.ipv6 && !c.closed);
        assert_eq!((c.sport, c.dport), (40_000, 3000));
        assert_eq!(
            c.ssthresh_segments, None,
            "infinite ssthresh is no threshold"
        );
        assert_eq!(c.last_update_age, Duration::from_millis(250));
        let closed = TcpConnStat {
            flags: CONN_FLAG_CLOSED,
            ssthresh: 20,
            family: AF_INET6,
            ..stat()
        };
        let c = KernelConn::from_stat(7, &closed, 0);
        assert!(c.closed && c.ipv6);
        assert_eq!(c.ssthresh_segments, Some(20));
        assert_eq!(c.last_update_age, Duration::ZERO, "clock skew gives zero");
    }

    #[test]
    fn a_snapshot_serialises_with_units_and_finds_connections_by_cookie() {
        let conns = vec![
            KernelConn::from_stat(3, &stat(), 1_000_000_000),
            KernelConn::from_stat(9, &stat(), 1_000_000_000),
        ];
        let snap = KernelSnapshot {
            at: Instant::now(),
            unix_ms: 1,
            source: SoftirqSource::Ebpf,
            conns,
            counters: TcpCounters::default(),
            softirq: SoftirqCounters {
                source: SoftirqSource::Ebpf,
                at: Instant::now(),
                cpus: vec![CpuCounters {
                    cpu: 0,
                    runs: [1; NR_SOFTIRQS],
                    vector_ns: Some([2; NR_SOFTIRQS]),
                    total_ns: 20,
                }],
            },
        };
        assert_eq!(snap.conn(9).map(|c| c.cookie), Some(9));
        assert!(snap.conn(4).is_none());
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains(r#""source":"ebpf""#), "{json}");
        assert!(json.contains(r#""last_update_age_ms":0.0"#), "{json}");
        assert!(json.contains(r#""srtt_us":156000"#), "{json}");
        assert!(json.contains(r#""softirq":[{"cpu":0,"runs":[1,"#), "{json}");
    }

    #[test]
    fn an_empty_snapshot_has_no_connections() {
        let snap = KernelSnapshot {
            at: Instant::now(),
            unix_ms: 0,
            source: SoftirqSource::Ebpf,
            conns: Vec::new(),
            counters: TcpCounters::default(),
            softirq: SoftirqCounters {
                source: SoftirqSource::Ebpf,
                at: Instant::now(),
                cpus: Vec::new(),
            },
        };
        assert!(snap.conn(1).is_none());
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains(r#""conns":[]"#), "{json}");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
