//! One view of TCP flows and CPUs, whatever the source: what `observe` prints
//! for any process's connections, and the join of the shipper's own numbers
//! with the kernel's.
//!
//! Why both sources at once: the eBPF programs see what `TCP_INFO` cannot
//! (every ACK's cwnd and windows, retransmits as they happen, short-lived
//! connections), while netlink `inet_diag` sees what the tracepoints do not
//! carry (the kernel's own chrono timers: busy, rwnd-limited,
//! sndbuf-limited; delivery rate; the owner). Both are keyed by the socket
//! cookie, so a connection is one row with two halves. Without eBPF the
//! netlink half and `/proc` remain, and every output says which it read.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    ebpf::{KernelPrograms, ProbeOptions},
    inet_diag::{self, DiagFilter},
    softirq::{SoftirqCounters, SoftirqReport, SoftirqSampler},
    tcp::{KernelConn, KernelSnapshot},
    ProbeError,
};
use crate::{
    metrics::{fmt_us, ConnSnapshot, ShipSnapshot, TcpSample},
    net::TcpInfo,
};

/// One of the shipper's connections with the kernel programs' row for the
/// same socket (by cookie), if they have one.
#[derive(Clone, Debug, Serialize)]
pub struct JoinedConn {
    /// The shipper's half: in flight, acks/s, window, its `TCP_INFO`.
    pub app: ConnSnapshot,
    /// The eBPF half.
    pub kernel: Option<KernelConn>,
}

/// Joins the shipper's connections with the kernel's rows by socket cookie:
/// one row per shipper connection, in pool order.
pub fn join(app: &ShipSnapshot, kernel: &[KernelConn]) -> Vec<JoinedConn> {
    let by_cookie: HashMap<u64, &KernelConn> = kernel.iter().map(|k| (k.cookie, k)).collect();
    app.connections
        .iter()
        .map(|c| JoinedConn {
            app: c.clone(),
            kernel: (c.cookie != 0)
                .then(|| by_cookie.get(&c.cookie).map(|k| (*k).clone()))
                .flatten(),
        })
        .collect()
}

/// Which connections to watch.
#[derive(Clone, Debug, Default)]
pub struct ObserveOptions {
    /// Local or remote ports (empty: every TCP connection).
    pub ports: Vec<u16>,
    /// Only this process's sockets.
    pub pid: Option<u32>,
    /// Do not load eBPF even if possible.
    pub no_ebpf: bool,
}

/// Shares of one interval of the kernel's chrono timers for a connection,
/// from two `TCP_INFO` readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct IntervalShares {
    /// Percent of the interval with data in flight.
    pub busy_pct: f64,
    /// Percent limited by the peer's receive window.
    pub rwnd_limited_pct: f64,
    /// Percent limited by the local send buffer.
    pub sndbuf_limited_pct: f64,
    /// Bytes acknowledged per second.
    pub acked_bytes_per_s: f64,
    /// Segments retransmitted in the interval.
    pub retransmits: u64,
}

impl IntervalShares {
    fn between(before: &TcpInfo, after: &TcpInfo, wall_s: f64) -> Self {
        let pct = |a: u64, b: u64| (a.saturating_sub(b) as f64 / (wall_s * 1e4)).clamp(0.0, 100.0);
        Self {
            busy_pct: pct(after.busy_time_us, before.busy_time_us),
            rwnd_limited_pct: pct(after.rwnd_limited_us, before.rwnd_limited_us),
            sndbuf_limited_pct: pct(after.sndbuf_limited_us, before.sndbuf_limited_us),
            acked_bytes_per_s: after.bytes_acked.saturating_sub(before.bytes_acked) as f64 / wall_s,
            retransmits: u64::from(after.total_retrans.saturating_sub(before.total_retrans)),
        }
    }
}

/// One observed connection.
#[derive(Clone, Debug, Serialize)]
pub struct ObservedConn {
    /// Socket cookie.
    pub cookie: u64,
    /// Local address (from netlink; the kernel half knows only ports).
    pub local: Option<SocketAddr>,
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// Local and remote ports.
    pub ports: (u16, u16),
    /// TCP state (netlink), e.g. `Established`.
    pub state: Option<String>,
    /// Owning process, when asked for with `--pid`.
    pub pid: Option<u32>,
    /// Congestion control.
    pub congestion: Option<String>,
    /// `TCP_INFO` through netlink.
    pub tcp: Option<TcpSample>,
    /// Chrono-timer shares over the last interval (netlink, second sample on).
    pub interval: Option<IntervalShares>,
    /// The eBPF half.
    pub kernel: Option<KernelConn>,
}

/// What `observe` prints once per interval.
#[derive(Clone, Debug, Serialize)]
pub struct ObserveReport {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The sources read, e.g. `eBPF + netlink`.
    pub source: String,
    /// Why eBPF is not among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// With eBPF: which program samples `tcp_probe` (the raw BTF-typed
    /// tracepoint, or the classic one and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_probe: Option<String>,
    /// Connections, by cookie.
    pub conns: Vec<ObservedConn>,
    /// Per-CPU softirq load over the interval (from the second sample on).
    pub softirq: Option<SoftirqReport>,
}

impl ObserveReport {
    /// This report as a recording sample (what `xdr-ship replay` plays and
    /// the verdict engine judges): each connection becomes a pool entry with
    /// only its kernel half (`TCP_INFO` from netlink, the eBPF row beside
    /// it); the application half is unknown, so it stays zero. `at` is the
    /// time since observing started; `label` names what was watched.
    pub fn to_sample(&self, at: std::time::Duration, label: &str) -> crate::diagnose::Sample {
        let connections: Vec<ConnSnapshot> = self
            .conns
            .iter()
            .enumerate()
            .map(|(id, c)| ConnSnapshot {
                id,
                cookie: c.cookie,
                connected: c.tcp.is_some(),
                tcp: c.tcp,
                ..ConnSnapshot::default()
            })
            .collect();
        let ship = ShipSnapshot {
            unix_ms: self.unix_ms,
            elapsed_s: at.as_secs_f64(),
            destination: label.to_owned(),
            mode: "observe".to_owned(),
            connected: connections.iter().filter(|c| c.connected).count(),
            connections,
            ..ShipSnapshot::default()
        };
        let mut sample = crate::diagnose::Sample::from_snapshot(
            ship,
            self.softirq.clone(),
            crate::diagnose::LinkHints::default(),
        );
        sample.kernel = self.conns.iter().filter_map(|c| c.kernel.clone()).collect();
        sample
    }
}

/// Samples the watched connections and CPUs, from eBPF when it loads.
pub struct Observer {
    opts: ObserveOptions,
    progs: Option<KernelPrograms>,
    fallback_reason: Option<String>,
    prev_info: HashMap<u64, TcpInfo>,
    prev_softirq: Option<SoftirqCounters>,
    prev_at: Option<Instant>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("opts", &self.opts)
            .field("ebpf", &self.progs.is_some())
            .field("fallback_reason", &self.fallback_reason)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// Loads the TCP and softirq programs filtered to `opts.ports`, or falls
    /// back to netlink and `/proc` (and remembers why).
    pub fn open(opts: ObserveOptions) -> Self {
        let (progs, fallback_reason) = if opts.no_ebpf {
            (None, Some("--no-ebpf given".to_owned()))
        } else {
            match KernelPrograms::load_with(ProbeOptions {
                tcp: true,
                ports: opts.ports.clone(),
                ..ProbeOptions::default()
            }) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(format!("eBPF unavailable: {e}"))),
            }
        };
        Self {
            opts,
            progs,
            fallback_reason,
            prev_info: HashMap::new(),
            prev_softirq: None,
            prev_at: None,
        }
    }

    /// Whether the eBPF programs are attached.
    pub fn ebpf(&self) -> bool {
        self.progs.is_some()
    }

    /// Reads every source once.
    pub fn sample(&mut self) -> Result<ObserveReport, ProbeError> {
        let now = Instant::now();
        let filter = DiagFilter {
            ports: self.opts.ports.clone(),
            pid: self.opts.pid,
            ..DiagFilter::default()
        };
        let diag = inet_diag::tcp_sockets(&filter)?;
        let (kernel, softirq_now) = match self.progs.as_mut() {
            Some(p) => {
                let k = KernelSnapshot::read(p)?;
                let s = k.softirq.clone();
                (Some(k), s)
            }
            None => (None, SoftirqSampler::Proc.read()?),
        };
        let wall_s = self.prev_at.map(|t| now.duration_since(t).as_secs_f64());

        let mut rows: BTreeMap<u64, ObservedConn> = BTreeMap::new();
        let mut infos = HashMap::new();
        for s in &diag {
            let interval = match (s.info.as_ref(), self.prev_info.get(&s.cookie), wall_s) {
                (Some(now_i), Some(prev_i), Some(w)) if w > 0.0 => {
                    Some(IntervalShares::between(prev_i, now_i, w))
                }
                _ => None,
            };
            if let Some(i) = s.info {
                infos.insert(s.cookie, i);
            }
            rows.insert(
                s.cookie,
                ObservedConn {
                    cookie: s.cookie,
                    local: Some(s.src),
                    remote: Some(s.dst),
                    ports: (s.src.port(), s.dst.port()),
                    state: Some(format!("{:?}", s.state)),
                    pid: s.pid,
                    congestion: s.congestion.clone(),
                    tcp: s.info.as_ref().map(TcpSample::from),
                    interval,
                    kernel: None,
                },
            );
        }
        if let Some(k) = &kernel {
            for kc in &k.conns {
                match rows.get_mut(&kc.cookie) {
                    Some(row) => row.kernel = Some(kc.clone()),
                    // With --pid, netlink decides which sockets are the
                    // process's: kernel rows outside that set are not shown.
                    None if self.opts.pid.is_none() => {
                        rows.insert(
                            kc.cookie,
                            ObservedConn {
                                cookie: kc.cookie,
                                local: None,
                                remote: None,
                                ports: (kc.sport, kc.dport),
                                state: kc.closed.then(|| "Closed".to_owned()),
                                pid: None,
                                congestion: None,
                                tcp: None,
                                interval: None,
                                kernel: Some(kc.clone()),
                            },
                        );
                    }
                    None => {}
                }
            }
        }
        let softirq = self.prev_softirq.as_ref().map(|before| {
            let mut r = SoftirqReport::between(before, &softirq_now);
            r.fallback_reason = self.fallback_reason.clone();
            r
        });
        self.prev_info = infos;
        self.prev_softirq = Some(softirq_now);
        self.prev_at = Some(now);
        Ok(ObserveReport {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            source: if self.progs.is_some() {
                "eBPF + netlink".to_owned()
            } else {
                "netlink + /proc".to_owned()
            },
            fallback_reason: self.fallback_reason.clone(),
            tcp_probe: self
                .progs
                .as_ref()
                .and_then(|p| p.tcp_probe_path())
                .map(ToString::to_string),
            conns: rows.into_values().collect(),
            softirq,
        })
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.1}M", bytes / 1e6)
}

impl ObserveReport {
    /// One row per connection, then the per-CPU softirq table.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = write!(out, "source: {}", self.source);
        if let Some(why) = &self.fallback_reason {
            let _ = write!(out, " ({why})");
        }
        if let Some(path) = &self.tcp_probe {
            let _ = write!(out, "; tcp_probe: {path}");
        }
        let _ = writeln!(out, "; {} connection(s)", self.conns.len());
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>5} {:>5}",
            "cookie",
            "lport",
            "rport",
            "cwnd",
            "srtt",
            "snd_wnd",
            "rcv_wnd",
            "inflt",
            "acked/s",
            "retx",
            "busy%",
            "rwnd%"
        );
        for c in &self.conns {
            let k = c.kernel.as_ref();
            let t = c.tcp.as_ref();
            let cwnd = k.map(|k| k.cwnd_segments).or(t.map(|t| t.cwnd_segments));
            let srtt = k.map(|k| k.srtt_us).or(t.map(|t| t.srtt_us));
            let snd = k.map(|k| k.snd_wnd_bytes).or(t.map(|t| t.snd_wnd_bytes));
            let rcv = k.map(|k| k.rcv_wnd_bytes).or(t.map(|t| t.rcv_wnd_bytes));
            let inflight = k.map(|k| k.bytes_in_flight);
            let retx = k
                .map(|k| k.retransmits)
                .or(t.map(|t| u64::from(t.total_retrans)));
            let dash = || "-".to_owned();
            let _ = writeln!(
                out,
                "{:<12x} {:>5} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>5} {:>5}",
                c.cookie & 0xffff_ffff_ffff,
                c.ports.0,
                c.ports.1,
                cwnd.map_or_else(dash, |v| v.to_string()),
                srtt.map_or_else(dash, |v| fmt_us(u64::from(v))),
                snd.map_or_else(dash, |v| mb(f64::from(v))),
                rcv.map_or_else(dash, |v| mb(f64::from(v))),
                inflight.map_or_else(dash, |v| mb(f64::from(v))),
                c.interval.map_or_else(dash, |i| mb(i.acked_bytes_per_s)),
                retx.map_or_else(dash, |v| v.to_string()),
                c.interval
                    .map_or_else(dash, |i| format!("{:.0}", i.busy_pct)),
                c.interval
                    .map_or_else(dash, |i| format!("{:.0}", i.rwnd_limited_pct)),
            );
        }
        if let Some(s) = &self.softirq {
            out.push_str(&s.render_table());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kconn(cookie: u64) -> KernelConn {
        KernelConn::from_stat(cookie, &xdr_common::TcpConnStat::default(), 0)
    }

    #[test]
    fn join_matches_each_shipper_connection_to_its_own_kernel_row() {
        let mut app = ShipSnapshot::default();
        for (id, cookie) in [(0, 7), (1, 9), (2, 0)] {
            app.connections.push(ConnSnapshot {
                id,
                cookie,
                ..ConnSnapshot::default()
            });
        }
        let joined = join(&app, &[kconn(9), kconn(7), kconn(11)]);
        assert_eq!(joined.len(), 3);
        assert_eq!(joined[0].kernel.as_ref().map(|k| k.cookie), Some(7));
        assert_eq!(joined[1].kernel.as_ref().map(|k| k.cookie), Some(9));
        assert!(
            joined[2].kernel.is_none(),
            "a disconnected connection joins nothing"
        );
    }

    #[test]
    fn interval_shares_come_from_the_chrono_timer_differences() {
        let before = TcpInfo {
            busy_time_us: 1_000_000,
            rwnd_limited_us: 0,
            bytes_acked: 0,
            ..TcpInfo::default()
        };
        let after = TcpInfo {
            busy_time_us: 1_900_000,
            rwnd_limited_us: 600_000,
            bytes_acked: 5_000_000,
            total_retrans: 3,
            ..TcpInfo::default()
        };
        let s = IntervalShares::between(&before, &after, 1.0);
        assert!((s.busy_pct - 90.0).abs() < 1e-9);
        assert!((s.rwnd_limited_pct - 60.0).abs() < 1e-9);
        assert_eq!(s.acked_bytes_per_s, 5_000_000.0);
        assert_eq!(s.retransmits, 3);
    }
}
