//! The checks: from what was read to a verdict, with the arithmetic shown.
//!
//! Every function here is pure: it takes the [`HostState`] and the [`Link`]
//! and returns a [`Check`]. Figures are planned for one connection filling
//! the link alone (a pool of N connections needs BDP/N each, but one
//! connection must be able to carry the link when the others idle).
use super::{
    host::{cpu_mask, mask_is_empty, HostState, Nic},
    Check, Link, Role, Status, SysctlWrite, WindowRule,
};

const MIB: u64 = 1 << 20;

/// The TCP payload of a 1500-byte packet with timestamps: the segment size
/// the figures below assume.
const MSS: u64 = 1448;
/// The initial congestion window (RFC 6928), segments.
const INITIAL_CWND: u64 = 10;
/// RFS flow table size the kernel's scaling guide suggests for a
/// moderately loaded server (Documentation/networking/scaling.rst).
const RFS_FLOW_ENTRIES: u64 = 32768;
/// One CPU taking more than this share of a NIC's interrupts is a finding.
const IRQ_ONE_CPU_SHARE: f64 = 0.8;
/// Fewer interrupts than this since boot say nothing about their spread.
const IRQ_MIN_TO_JUDGE: u64 = 1000;

/// `n` rounded up to whole MiB: the figure to set (round numbers read
/// better in a sysctl file and leave a little headroom).
pub fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(MIB).saturating_mul(MIB)
}

/// The kernel's release as (major, minor), from `6.18.44-fc-v782`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// How this kernel turns a receive buffer into the window it advertises.
///
/// The kernel's rule (`tcp_win_from_space()` in `include/net/tcp.h`):
/// - Linux 6.6 and later (commit dfa2f0483360, "tcp: get rid of
///   sysctl_tcp_adv_win_scale"): `window = space * scaling_ratio >> 8`
///   (`TCP_RMEM_TO_WIN_SCALE` is 8), where `scaling_ratio` is measured per
///   socket as `skb->len / skb->truesize` of the packets it receives and
///   starts at `TCP_DEFAULT_SCALING_RATIO`, 128 (50%) on current kernels.
///   `tcp_adv_win_scale` is still there but ignored. We plan with the 50%
///   start: a driver that gives each 1500-byte frame a whole 4 KiB page
///   measures nearer 35%, one with large frames more.
/// - Before 6.6: `window = space - (space >> tcp_adv_win_scale)` for a
///   positive scale, `space >> -tcp_adv_win_scale` otherwise (the default
///   1 gives 50%).
///
/// The same half is why the kernel doubles an explicit SO_RCVBUF: the
/// request is meant as payload, the other half is overhead.
pub fn window_rule(host: &HostState) -> WindowRule {
    let per_socket = host
        .kernel_release
        .as_deref()
        .and_then(kernel_version)
        .is_some_and(|v| v >= (6, 6));
    if per_socket {
        return WindowRule {
            num: 128,
            den: 256,
            per_socket,
        };
    }
    let scale = host
        .sysctl("net.ipv4.tcp_adv_win_scale")
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(1)
        .clamp(-31, 31);
    if scale > 0 {
        WindowRule {
            num: (1u64 << scale) - 1,
            den: 1u64 << scale,
            per_socket,
        }
    } else {
        WindowRule {
            num: 1,
            den: 1u64 << -scale,
            per_socket,
        }
    }
}

/// Every check, in the order they print.
pub fn all(host: &HostState, link: &Link, rule: WindowRule) -> Vec<Check> {
    let mut checks = vec![
        rmem_max(host, link, rule),
        wmem_max(host, link),
        tcp_rmem(host, link, rule),
        tcp_wmem(host, link),
        adv_win_scale(host, rule),
        window_scaling(host, link),
        moderate_rcvbuf(host, link, rule),
        congestion_control(host, link),
        default_qdisc(host),
        slow_start_after_idle(host, link),
        netdev_max_backlog(host, link),
    ];
    if host.nics.is_empty() {
        checks.push(Check {
            setting: "network devices".into(),
            current: "no hardware NIC visible".into(),
            needed: "-".into(),
            status: Status::Info,
            why: "no interface here has a device behind it (only lo or virtual ones); in a \
                  child network namespace the host's NICs belong to the initial one, so \
                  interrupts and RPS are checked there"
                .into(),
            side: Role::Both,
            commands: Vec::new(),
            write: None,
            not_applied: None,
        });
    }
    for nic in &host.nics {
        checks.push(irq_spread(host, nic));
        checks.push(rps(host, nic, link));
    }
    checks
}

fn bytes(b: u64) -> String {
    if b >= MIB && b.is_multiple_of(MIB) {
        format!("{b} ({} MiB)", b / MIB)
    } else {
        format!("{b} ({})", mb(b as f64))
    }
}

fn mb(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e6 {
        format!("{:.1} MB/s", bytes_per_s / 1e6)
    } else {
        format!("{:.2} MB/s", bytes_per_s / 1e6)
    }
}

fn sysctl_cmd(key: &str, value: &str) -> String {
    if value.contains(' ') {
        format!("sysctl -w {key}='{value}'")
    } else {
        format!("sysctl -w {key}={value}")
    }
}

/// A row for a sysctl this namespace does not show.
fn unreadable(key: &str, side: Role, needed: String) -> Check {
    Check {
        setting: key.into(),
        current: "not readable here".into(),
        needed,
        status: Status::Info,
        why: "this network namespace does not show it: it is a host-wide setting, \
              read it in the initial namespace"
            .into(),
        side,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    }
}

/// A row about one numeric (or last-field) sysctl that must reach `needed`.
struct Raise<'a> {
    host: &'a HostState,
    key: &'static str,
    side: Role,
    current: u64,
    needed: u64,
    /// The full value to write when raising (`tcp_rmem` keeps min and default).
    value: String,
    why: String,
}

impl Raise<'_> {
    fn check(self) -> Check {
        let ok = self.current >= self.needed;
        let writable = self.host.writable(self.key);
        Check {
            setting: self.key.into(),
            current: self.host.sysctl(self.key).unwrap_or_default().to_owned(),
            needed: format!("≥ {}", bytes(self.needed)),
            status: if ok { Status::Ok } else { Status::Change },
            why: self.why,
            side: self.side,
            commands: if ok {
                Vec::new()
            } else {
                vec![sysctl_cmd(self.key, &self.value)]
            },
            write: (!ok).then(|| SysctlWrite {
                key: self.key.into(),
                value: self.value.clone(),
            }),
            not_applied: (!ok && !writable).then(|| {
                "read-only in this network namespace: a host-wide setting; run the command \
                 in the initial namespace"
                    .into()
            }),
        }
    }
}

/// `net.core.rmem_max`: the cap on an explicit SO_RCVBUF.
pub fn rmem_max(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let key = "net.core.rmem_max";
    let bdp = link.bdp_bytes();
    // setsockopt(SO_RCVBUF, r) gives sk_rcvbuf = 2 * min(r, rmem_max); the
    // window is rule × sk_rcvbuf. So the request, and the cap, must reach
    // buffer_for(BDP) / 2.
    let request = rule.buffer_for(bdp).div_ceil(2);
    let needed = round_up_mib(request);
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Receiver, format!("≥ {}", bytes(needed)));
    };
    let window = rule.window_of(cur.saturating_mul(2));
    Raise {
        host,
        key,
        side: Role::Receiver,
        current: cur,
        needed,
        value: needed.to_string(),
        why: format!(
            "an explicit SO_RCVBUF is capped at rmem_max, then doubled by the kernel for \
             bookkeeping: buffer = 2 × min(request, rmem_max); {pct:.0}% of the buffer becomes \
             window, so a window of BDP {bdp} needs a request (and rmem_max) of ≥ {request} \
             bytes. Now the largest SO_RCVBUF gives 2 × {cur} = {buf} of buffer, a window of \
             {win}: at most {ceil} per connection. (xdr-ship keeps autotuning when this cap \
             would bite, so for it tcp_rmem matters; the seed and most programs set SO_RCVBUF.)",
            pct = rule.percent(),
            bdp = mb(bdp as f64),
            buf = mb(cur as f64 * 2.0),
            win = mb(window as f64),
            ceil = rate(link.ceiling_bytes_per_s(window)),
        ),
    }
    .check()
}

/// `net.core.wmem_max`: the cap on an explicit SO_SNDBUF.
pub fn wmem_max(host: &HostState, link: &Link) -> Check {
    let key = "net.core.wmem_max";
    let bdp = link.bdp_bytes();
    // setsockopt(SO_SNDBUF, s) gives sk_sndbuf = 2 * min(s, wmem_max), and
    // queued data is counted at its skb truesize: the kernel's doubling
    // assumes half is overhead, so the request itself is the payload that
    // fits — BDP of unacknowledged data needs a request of BDP.
    let needed = round_up_mib(bdp);
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Sender, format!("≥ {}", bytes(needed)));
    };
    Raise {
        host,
        key,
        side: Role::Sender,
        current: cur,
        needed,
        value: needed.to_string(),
        why: format!(
            "an explicit SO_SNDBUF is capped at wmem_max and doubled (buffer = 2 × min(request, \
             wmem_max)); the send buffer holds every unacknowledged byte at its skb truesize, \
             and the doubling is the kernel's allowance for that overhead, so BDP {bdp} in \
             flight needs a request (and wmem_max) of ≥ {bdp_exact} bytes. Now: at most {cur_mb} \
             in flight, {ceil} per connection (the seed asked for 5 MiB).",
            bdp = mb(bdp as f64),
            bdp_exact = bdp,
            cur_mb = mb(cur as f64),
            ceil = rate(link.ceiling_bytes_per_s(cur)),
        ),
    }
    .check()
}

/// `net.ipv4.tcp_rmem`: how far receive autotuning may grow a buffer.
pub fn tcp_rmem(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let key = "net.ipv4.tcp_rmem";
    let bdp = link.bdp_bytes();
    let exact = rule.buffer_for(bdp);
    let needed = round_up_mib(exact);
    let Some([min, def, max]) = host
        .sysctl_fields(key)
        .and_then(|f| <[u64; 3]>::try_from(f).ok())
    else {
        return unreadable(key, Role::Receiver, format!("max ≥ {}", bytes(needed)));
    };
    let window = rule.window_of(max);
    let mut c = Raise {
        host,
        key,
        side: Role::Receiver,
        current: max,
        needed,
        value: format!("{min} {def} {needed}"),
        why: format!(
            "autotuning (tcp_moderate_rcvbuf) grows a socket's receive buffer up to the third \
             field, and the advertised window is {pct:.0}% of the buffer{rule}, so a window of \
             BDP {bdp} needs max ≥ {exact} bytes. Now: a window of at most {win}, {ceil} per \
             connection.",
            pct = rule.percent(),
            rule = if rule.per_socket {
                " (scaling_ratio, measured per socket since 6.6; planned at its 50% start)"
            } else {
                " (tcp_adv_win_scale)"
            },
            bdp = mb(bdp as f64),
            win = mb(window as f64),
            ceil = rate(link.ceiling_bytes_per_s(window)),
        ),
    }
    .check();
    c.needed = format!("max ≥ {}", bytes(needed));
    c
}

/// `net.ipv4.tcp_wmem`: how far send autotuning may grow a buffer.
pub fn tcp_wmem(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_wmem";
    let bdp = link.bdp_bytes();
    let exact = bdp.saturating_mul(2);
    let needed = round_up_mib(exact);
    let Some([min, def, max]) = host
        .sysctl_fields(key)
        .and_then(|f| <[u64; 3]>::try_from(f).ok())
    else {
        return unreadable(key, Role::Sender, format!("max ≥ {}", bytes(needed)));
    };
    let mut c = Raise {
        host,
        key,
        side: Role::Sender,
        current: max,
        needed,
        value: format!("{min} {def} {needed}"),
        why: format!(
            "autotuning grows a socket's send buffer (tcp_sndbuf_expand: 2 × cwnd × a \
             segment's truesize, 3 × under BBR) up to the third field, and queued bytes count \
             at their truesize; with the kernel's own factor of 2, BDP {bdp} in flight needs \
             max ≥ {exact} bytes. Now: about {half} in flight, {ceil} per connection.",
            bdp = mb(bdp as f64),
            half = mb(max as f64 / 2.0),
            ceil = rate(link.ceiling_bytes_per_s(max / 2)),
        ),
    }
    .check();
    c.needed = format!("max ≥ {}", bytes(needed));
    c
}

/// `net.ipv4.tcp_adv_win_scale`: informs which window rule applies.
pub fn adv_win_scale(host: &HostState, rule: WindowRule) -> Check {
    let key = "net.ipv4.tcp_adv_win_scale";
    let current = host.sysctl(key).unwrap_or("not readable here").to_owned();
    let why = if rule.per_socket {
        format!(
            "obsolete on this kernel (6.6+): the window is buffer × scaling_ratio/256, measured \
             per socket from skb->len/truesize; the buffer figures above plan with its {:.0}% start",
            rule.percent()
        )
    } else {
        format!(
            "this kernel advertises buffer − buffer/2^scale (scale > 0) or buffer/2^-scale as \
             window: {:.0}% here, which the buffer figures above account for",
            rule.percent()
        )
    };
    Check {
        setting: key.into(),
        current,
        needed: format!("window = {:.0}% of buffer", rule.percent()),
        status: Status::Info,
        why,
        side: Role::Receiver,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    }
}

/// A 0/1 switch that must be on.
fn switch_on(host: &HostState, key: &'static str, side: Role, why: String) -> Check {
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, side, "1".into());
    };
    let ok = cur != 0;
    Check {
        setting: key.into(),
        current: cur.to_string(),
        needed: "1".into(),
        status: if ok { Status::Ok } else { Status::Change },
        why,
        side,
        commands: if ok {
            Vec::new()
        } else {
            vec![sysctl_cmd(key, "1")]
        },
        write: (!ok).then(|| SysctlWrite {
            key: key.into(),
            value: "1".into(),
        }),
        not_applied: (!ok && !host.writable(key))
            .then(|| "read-only in this network namespace".into()),
    }
}

/// `net.ipv4.tcp_window_scaling`: windows above 64 KiB.
pub fn window_scaling(host: &HostState, link: &Link) -> Check {
    switch_on(
        host,
        "net.ipv4.tcp_window_scaling",
        Role::Both,
        format!(
            "window scaling (RFC 7323), negotiated in the SYN by both ends, lets a window \
             exceed 64 KiB; without it a connection is capped at 65535 B / RTT = {}",
            rate(link.ceiling_bytes_per_s(65535))
        ),
    )
}

/// `net.ipv4.tcp_moderate_rcvbuf`: receive autotuning.
pub fn moderate_rcvbuf(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let def = host
        .sysctl_fields("net.ipv4.tcp_rmem")
        .and_then(|f| f.get(1).copied())
        .unwrap_or(131072);
    let window = rule.window_of(def);
    switch_on(
        host,
        "net.ipv4.tcp_moderate_rcvbuf",
        Role::Receiver,
        format!(
            "receive-buffer autotuning: without it a socket keeps tcp_rmem's default of {def} \
             bytes, a window of {} and {} per connection",
            mb(window as f64),
            rate(link.ceiling_bytes_per_s(window))
        ),
    )
}

/// The Mathis et al. bound on a loss-based TCP's rate: MSS/RTT × √(3/2)/√p.
pub fn mathis_bytes_per_s(link: &Link, loss: f64) -> f64 {
    MSS as f64 / link.rtt_s().max(1e-9) * (1.5f64).sqrt() / loss.sqrt()
}

/// `net.ipv4.tcp_congestion_control`: BBR for long, lossy paths.
pub fn congestion_control(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_congestion_control";
    let Some(cur) = host.sysctl(key) else {
        return unreadable(key, Role::Sender, "bbr".into());
    };
    let list = |k: &str| -> Vec<String> {
        host.sysctl(k)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let available = list("net.ipv4.tcp_available_congestion_control");
    let allowed = list("net.ipv4.tcp_allowed_congestion_control");
    let mathis = mathis_bytes_per_s(link, 0.001);
    let reason = format!(
        "BBR paces at the bottleneck rate it measures and does not read random loss as \
         congestion; loss-based cubic/reno are held to the Mathis bound MSS/(RTT·√p): at {} ms \
         and 0.1% loss, {} per connection",
        link.rtt_us / 1000,
        rate(mathis)
    );
    let current = format!("{cur} (available: {})", available.join(" "));
    let base = Check {
        setting: key.into(),
        current,
        needed: "bbr".into(),
        status: Status::Ok,
        why: reason.clone(),
        side: Role::Sender,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    if cur == "bbr" {
        return base;
    }
    if !available.iter().any(|a| a == "bbr") {
        return Check {
            status: Status::Info,
            why: format!(
                "{reason}. bbr is not loaded here: `modprobe tcp_bbr` if the kernel ships it"
            ),
            commands: Vec::new(),
            ..base
        };
    }
    let mut why = reason;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == "bbr") {
        why.push_str(
            ". bbr is not in tcp_allowed_congestion_control, so only the initial network \
             namespace may make it the default (a program can still ask for it per socket \
             with TCP_CONGESTION)",
        );
    }
    Check {
        status: Status::Change,
        why,
        commands: vec![sysctl_cmd(key, "bbr")],
        not_applied: Some(
            "changes the algorithm of every new connection on the host: a choice for the \
             operator, not a limit to raise"
                .into(),
        ),
        ..base
    }
}

/// `net.core.default_qdisc`: fq, for pacing.
pub fn default_qdisc(host: &HostState) -> Check {
    let key = "net.core.default_qdisc";
    let Some(cur) = host.sysctl(key) else {
        return unreadable(key, Role::Sender, "fq".into());
    };
    let bbr = host.sysctl("net.ipv4.tcp_congestion_control") == Some("bbr")
        || host
            .sysctl("net.ipv4.tcp_available_congestion_control")
            .is_some_and(|a| a.split_whitespace().any(|c| c == "bbr"));
    let base = Check {
        setting: key.into(),
        current: cur.to_owned(),
        needed: "fq".into(),
        status: Status::Ok,
        why: "fq paces each flow at the rate its congestion control sets (BBR's pacing rate), \
              cheaply, in the qdisc"
            .into(),
        side: Role::Sender,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    if cur == "fq" {
        return base;
    }
    let fallback = "BBR paces by itself without it (TCP internal pacing, Linux 4.20+), at \
                    some CPU cost";
    match (bbr, host.fq_available) {
        (true, Some(true)) => {
            let mut commands = vec![sysctl_cmd(key, "fq")];
            // default_qdisc only reaches qdiscs created afterwards.
            for nic in &host.nics {
                commands.push(if nic.tx_queues > 1 {
                    format!("tc qdisc replace dev {} root mq", nic.name)
                } else {
                    format!("tc qdisc replace dev {} root fq", nic.name)
                });
            }
            Check {
                status: Status::Change,
                why: format!(
                    "{}; default_qdisc only applies to qdiscs created afterwards, hence the tc \
                     lines (mq gives each transmit queue a default_qdisc child). {fallback}, so \
                     this is an efficiency gain, not a cap",
                    base.why
                ),
                commands,
                not_applied: Some("replaces the NICs' queueing discipline: run it yourself".into()),
                ..base
            }
        }
        (true, avail) => Check {
            status: Status::Info,
            why: format!(
                "{}; {} on this host. {fallback}",
                base.why,
                if avail == Some(false) {
                    "the fq qdisc is not installed (no sch_fq module)"
                } else {
                    "whether the fq qdisc exists cannot be told (no module tree to look in)"
                }
            ),
            ..base
        },
        (false, _) => Check {
            status: Status::Info,
            why: format!(
                "{}; it matters with BBR, which is not available here",
                base.why
            ),
            ..base
        },
    }
}

/// `net.ipv4.tcp_slow_start_after_idle`: off for bursty shippers.
pub fn slow_start_after_idle(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_slow_start_after_idle";
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Sender, "0".into());
    };
    let ok = cur == 0;
    let iw = INITIAL_CWND * MSS;
    let rounds = (link.bdp_bytes() as f64 / iw as f64).log2().ceil().max(0.0) as u64;
    Check {
        setting: key.into(),
        current: cur.to_string(),
        needed: "0".into(),
        status: if ok { Status::Ok } else { Status::Change },
        why: format!(
            "when on, a connection idle for an RTO falls back to the initial window of \
             {INITIAL_CWND} segments ({}) (RFC 5681 restart): a shipper that pauses between \
             bursts then needs {rounds} RTTs ({:.1} s) of slow start to reopen a BDP window",
            mb(iw as f64),
            rounds as f64 * link.rtt_s()
        ),
        side: Role::Sender,
        commands: if ok {
            Vec::new()
        } else {
            vec![sysctl_cmd(key, "0")]
        },
        write: None,
        not_applied: (!ok).then(|| {
            "--apply never lowers a value, and this advice is to switch one off: run it yourself"
                .into()
        }),
    }
}

/// `net.core.netdev_max_backlog`: the per-CPU input queue.
pub fn netdev_max_backlog(host: &HostState, link: &Link) -> Check {
    let key = "net.core.netdev_max_backlog";
    // Packets of 1500 bytes arriving in 10 ms at line rate: a softirq that
    // overruns its budget leaves the rest to ksoftirqd, which waits its turn
    // like any thread — a scheduler slice is a few ms.
    let pkts_10ms = (link.bandwidth_bytes_per_s / 100).div_ceil(1500);
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Receiver, format!("≥ {pkts_10ms}"));
    };
    let dropped = host.softnet.map_or(0, |s| s.dropped);
    let mut needed = pkts_10ms.div_ceil(1000).max(1) * 1000;
    if dropped > 0 {
        needed = needed.max(cur.saturating_mul(2));
    }
    let ok = cur >= needed;
    Check {
        setting: key.into(),
        current: cur.to_string(),
        needed: format!("≥ {needed}"),
        status: if ok { Status::Ok } else { Status::Change },
        why: format!(
            "the per-CPU queue packets wait in when RPS hands them to another CPU (or a \
             non-NAPI driver queues them); when full they are dropped ({dropped} so far by \
             /proc/net/softnet_stat{}). At {} of 1500-byte packets, 10 ms of traffic is \
             {pkts_10ms} packets{}",
            host.softnet.map_or(String::new(), |s| format!(
                ", {} budget squeezes",
                s.time_squeeze
            )),
            rate(link.bandwidth_bytes_per_s as f64),
            if dropped > 0 {
                "; with drops seen, double it"
            } else {
                ""
            }
        ),
        side: Role::Receiver,
        commands: if ok {
            Vec::new()
        } else {
            vec![sysctl_cmd(key, &needed.to_string())]
        },
        write: (!ok).then(|| SysctlWrite {
            key: key.into(),
            value: needed.to_string(),
        }),
        not_applied: (!ok && !host.writable(key))
            .then(|| "read-only in this network namespace".into()),
    }
}

/// Interrupt counts of `nic` summed per CPU.
fn per_cpu_totals(host: &HostState, nic: &Nic) -> Vec<u64> {
    let mut totals = vec![0u64; host.cpus.len()];
    for irq in &nic.irqs {
        for (t, c) in totals.iter_mut().zip(&irq.counts) {
            *t += c;
        }
    }
    totals
}

/// How a NIC's interrupts spread over the CPUs.
pub fn irq_spread(host: &HostState, nic: &Nic) -> Check {
    let totals = per_cpu_totals(host, nic);
    let total: u64 = totals.iter().sum();
    let share = |n: u64| n as f64 / total.max(1) as f64;
    let current = if total == 0 {
        "no interrupts counted".to_owned()
    } else {
        let parts: Vec<String> = host
            .cpus
            .iter()
            .zip(&totals)
            .map(|(cpu, n)| format!("cpu{cpu} {:.0}%", 100.0 * share(*n)))
            .collect();
        format!("{} of {total}", parts.join(" · "))
    };
    let busy: Vec<_> = nic
        .irqs
        .iter()
        .filter(|i| i.counts.iter().sum::<u64>() > 0)
        .collect();
    let detail: Vec<String> = busy
        .iter()
        .map(|i| {
            let sum: u64 = i.counts.iter().sum();
            let (top_idx, top) = i
                .counts
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map_or((0, 0), |(k, c)| (k, *c));
            format!(
                "IRQ {} {}: {sum}, {:.0}% on cpu{} (affinity {}, effective {})",
                i.irq,
                i.name,
                100.0 * top as f64 / sum.max(1) as f64,
                host.cpus.get(top_idx).copied().unwrap_or(0),
                i.affinity.as_deref().unwrap_or("?"),
                i.effective.as_deref().unwrap_or("?"),
            )
        })
        .collect();
    let mut c = Check {
        setting: format!("{} interrupts", nic.name),
        current,
        needed: format!("no CPU > {:.0}%", IRQ_ONE_CPU_SHARE * 100.0),
        status: Status::Ok,
        why: String::new(),
        side: Role::Both,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    let top = totals.iter().copied().max().unwrap_or(0);
    let top_cpu = host
        .cpus
        .get(totals.iter().position(|t| *t == top).unwrap_or(0))
        .copied()
        .unwrap_or(0);
    if host.cpus.len() <= 1 {
        c.status = Status::Info;
        c.why = "one CPU: nothing to spread".into();
    } else if nic.irqs.is_empty() {
        c.status = Status::Info;
        c.why = format!(
            "no interrupt found for {} (no MSI vector listed, no action named after it)",
            nic.name
        );
    } else if total < IRQ_MIN_TO_JUDGE {
        c.status = Status::Info;
        c.why = format!("only {total} interrupts since boot: too few to judge the spread");
    } else if share(top) > IRQ_ONE_CPU_SHARE {
        c.status = Status::Change;
        let spread_cmds: Vec<String> = busy
            .iter()
            .zip(host.cpus.iter().cycle())
            .map(|(i, cpu)| format!("echo {cpu} > /proc/irq/{}/smp_affinity_list", i.irq))
            .collect();
        if busy.len() > 1 {
            c.commands = spread_cmds;
            c.why = format!(
                "cpu{top_cpu} takes {:.0}% of {}'s interrupts, so it runs their NET_RX softirq \
                 too and saturates first (the seed's si column). Give each queue's IRQ its own \
                 CPU (stop irqbalance, or it moves them back). {}",
                100.0 * share(top),
                nic.name,
                detail.join("; ")
            );
        } else {
            c.commands = rps_commands(host, nic);
            c.why = format!(
                "cpu{top_cpu} takes {:.0}% of {}'s interrupts, and one interrupt line cannot be \
                 split: spread the protocol work with RPS/RFS instead. {}",
                100.0 * share(top),
                nic.name,
                detail.join("; ")
            );
        }
        c.not_applied = Some("IRQ affinity and RPS are not sysctls: run them yourself".into());
    } else {
        c.why = format!(
            "counts since boot. {}",
            if detail.is_empty() {
                "-".to_owned()
            } else {
                detail.join("; ")
            }
        );
    }
    c
}

fn rps_commands(host: &HostState, nic: &Nic) -> Vec<String> {
    let mask = cpu_mask(&host.cpus);
    let per_queue = RFS_FLOW_ENTRIES / nic.rx_queues.len().max(1) as u64;
    let dir = format!("/sys/class/net/{}/queues", nic.name);
    let mut cmds: Vec<String> = nic
        .rx_queues
        .iter()
        .map(|q| format!("echo {mask} > {dir}/{}/rps_cpus", q.name))
        .collect();
    cmds.push(sysctl_cmd(
        "net.core.rps_sock_flow_entries",
        &RFS_FLOW_ENTRIES.to_string(),
    ));
    cmds.extend(
        nic.rx_queues
            .iter()
            .map(|q| format!("echo {per_queue} > {dir}/{}/rps_flow_cnt", q.name)),
    );
    cmds
}

/// RPS/RFS on a NIC with fewer receive queues than CPUs.
pub fn rps(host: &HostState, nic: &Nic, link: &Link) -> Check {
    let ncpu = host.cpus.len();
    let nq = nic.rx_queues.len();
    let masks: Vec<&str> = nic
        .rx_queues
        .iter()
        .map(|q| q.rps_cpus.as_deref().unwrap_or("?"))
        .collect();
    let flow_entries = host.sysctl_u64("net.core.rps_sock_flow_entries");
    let current = format!(
        "{nq} rxq/{ncpu} CPUs, rps_cpus {}, flows {}",
        if masks.is_empty() {
            "-".to_owned()
        } else {
            masks.join(",")
        },
        flow_entries.map_or("?".to_owned(), |n| n.to_string()),
    );
    let mask = cpu_mask(&host.cpus);
    let mut c = Check {
        setting: format!("{} RPS/RFS", nic.name),
        current,
        needed: format!("rps_cpus {mask}, {RFS_FLOW_ENTRIES} flows"),
        status: Status::Ok,
        why: String::new(),
        side: Role::Receiver,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    let rps_off = nic
        .rx_queues
        .iter()
        .all(|q| q.rps_cpus.as_deref().is_some_and(mask_is_empty));
    let pps = link.bandwidth_bytes_per_s / 1500;
    if ncpu <= 1 {
        c.needed = "-".into();
        c.why = "one CPU: nothing to spread".into();
    } else if nq == 0 || nic.rx_queues.iter().any(|q| q.rps_cpus.is_none()) {
        c.status = Status::Info;
        c.needed = "-".into();
        c.why = "the receive queues' rps_cpus cannot be read here (kernel without RPS?)".into();
    } else if nq >= ncpu {
        c.needed = "-".into();
        c.why = format!(
            "{nq} receive queues for {ncpu} CPUs: the NIC spreads flows over them itself (RSS); \
             check their interrupts spread too"
        );
    } else if rps_off {
        c.status = Status::Change;
        c.commands = rps_commands(host, nic);
        c.not_applied = Some("RPS masks are not sysctls: run them yourself".into());
        c.why = format!(
            "{} has {nq} receive queue{} for {ncpu} CPUs and RPS is off: every packet's protocol \
             work (NET_RX softirq) runs on the CPU its interrupt lands on — at {} that is ~{pps} \
             packets/s of 1500 bytes on one core, the wall the seed hit at ~100K TPS per node. \
             RPS hashes flows over the CPUs in the mask ({mask} = CPUs {}); RFS \
             (rps_sock_flow_entries, and rps_flow_cnt = entries / queues) steers each flow to \
             the CPU its reader runs on. Shipping over several connections spreads the hash.",
            nic.name,
            if nq == 1 { "" } else { "s" },
            rate(link.bandwidth_bytes_per_s as f64),
            host.cpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    } else if flow_entries == Some(0) || nic.rx_queues.iter().any(|q| q.rps_flow_cnt == Some(0)) {
        c.status = Status::Info;
        c.commands = rps_commands(host, nic);
        c.not_applied = Some("RPS masks are not sysctls: run them yourself".into());
        c.why = "RPS is on; RFS is off (rps_sock_flow_entries or rps_flow_cnt is 0), so a \
                 flow's protocol work may run on another CPU than its reader"
            .into();
    } else {
        c.why = "RPS and RFS are on".into();
    }
    c
}
