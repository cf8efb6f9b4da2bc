//! The checks: from what was read to a verdict, with the arithmetic shown.
//!
//! Every function here is pure: it takes the [`HostState`] and the [`Link`]
//! and returns a [`Check`]. Figures are planned for one connection filling
//! the link alone (a pool of N connections needs BDP/N each, but one
//! connection must be able to carry the link when the others idle).
//!
//! Layout: the shared arithmetic and the list of checks are here; the
//! checks themselves by what they look at:
//! - `buffers`: socket buffer caps and autotuning (`rmem`/`wmem`, window
//!   scaling);
//! - `path`: congestion control, qdisc, slow start after idle;
//! - `nic`: the input backlog, interrupt spread, RPS/RFS.
mod buffers;
mod nic;
mod path;

use super::{
    host::{cpu_mask, mask_is_empty, HostState, Nic, NicIrq},
    Check, Link, Role, Status, SysctlWrite, WindowRule,
};
pub use buffers::*;
pub use nic::*;
pub use path::*;

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

/// Byte counts and rates as `tune` prints them: one home for them all.
pub(crate) use crate::units::{bytes_exact as bytes, mb_or_kb as mb, rate_mb as rate};

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
