//! `xdr-ship tune`: this host checked against the link's bandwidth-delay
//! product, with what to change, why, and the exact commands.
//!
//! Why a command of its own: on a 156 ms, 100 MB/s path a TCP connection
//! must keep 15.6 MB in flight, and a stock Linux host caps that in half a
//! dozen places that say nothing when they bite — `net.core.rmem_max` caps an
//! explicit SO_RCVBUF, the third field of `tcp_rmem` caps autotuning, the
//! kernel keeps part of every buffer for bookkeeping, the send side has the
//! same limits again, an idle connection restarts slow start, and one CPU
//! may take every packet's softirq. The verdict (`diagnose`) says which
//! limit a running transfer hits; `tune` checks the host before there is any
//! traffic, and `--apply` raises what needs raising and says how to undo it.
//!
//! Layout:
//! - [`host`]: the readers. Every one takes a root path (`/` in production)
//!   so the tests run against fixture trees;
//! - [`checks`]: one pure function per check, from what was read to a
//!   [`Check`] with its verdict and the arithmetic behind it;
//! - [`apply`]: `--apply`: writes sysctls in the current network namespace,
//!   never lowering one, and gives the revert commands;
//! - `render`: the human table.
pub mod apply;
pub mod checks;
pub mod host;
mod render;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::Serialize;

pub use host::HostState;

/// The link the host must fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Round-trip time, µs.
    pub rtt_us: u64,
    /// Bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: u64,
}

impl Link {
    /// A link of `rtt` and `bandwidth_bytes_per_s`.
    pub fn new(rtt: Duration, bandwidth_bytes_per_s: u64) -> Self {
        Self {
            rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
            bandwidth_bytes_per_s,
        }
    }

    /// Bandwidth × RTT: the bytes a single connection must keep in flight
    /// to fill the link.
    pub fn bdp_bytes(&self) -> u64 {
        crate::units::bdp_bytes(self.bandwidth_bytes_per_s, self.rtt_us)
    }

    /// The RTT in seconds.
    pub fn rtt_s(&self) -> f64 {
        self.rtt_us as f64 / 1e6
    }

    /// The throughput a window of `bytes` allows on this link (window / RTT).
    pub fn ceiling_bytes_per_s(&self, window_bytes: u64) -> f64 {
        window_bytes as f64 / self.rtt_s().max(1e-9)
    }
}

/// Which end of the link this host is; each check belongs to one side or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ships records: the send buffer, congestion control, pacing matter.
    Sender,
    /// Receives them: the receive buffer, the window, interrupts matter.
    Receiver,
    /// Both ends (the default): every check.
    Both,
}

impl Role {
    /// Whether a host playing `self` must pass a check of `side`.
    pub fn covers(self, side: Role) -> bool {
        self == Role::Both || side == Role::Both || self == side
    }

    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
            Role::Both => "both",
        }
    }
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Good enough for this BDP.
    Ok,
    /// Change advised: this setting limits the link.
    Change,
    /// Worth knowing; nothing to change (or nothing that can be judged here).
    Info,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Change => "change",
            Status::Info => "info",
        }
    }
}

/// A sysctl write that `--apply` may make: it only ever raises a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlWrite {
    /// Dotted key, e.g. `net.ipv4.tcp_rmem`.
    pub key: String,
    /// The value to write, as `/proc/sys` takes it.
    pub value: String,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The sysctl key, or what else was checked (`eth0 interrupts`).
    pub setting: String,
    /// What the host has now.
    pub current: String,
    /// What this BDP needs.
    pub needed: String,
    /// The verdict.
    pub status: Status,
    /// The reasoning, with the numbers.
    pub why: String,
    /// Which end of the link the check is about.
    pub side: Role,
    /// The exact commands that carry out the advice (empty when `ok`).
    pub commands: Vec<String>,
    /// What `--apply` writes for this row, when it may.
    pub write: Option<SysctlWrite>,
    /// Why `--apply` leaves this row's change to the operator, if it does.
    pub not_applied: Option<String>,
}

/// How the kernel turns a receive buffer into the window it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowRule {
    /// Advertised window per buffer byte, as a fraction `num / den`.
    pub num: u64,
    /// See `num`.
    pub den: u64,
    /// Whether the kernel measures the ratio per socket (6.6 and later)
    /// rather than taking it from `tcp_adv_win_scale`.
    pub per_socket: bool,
}

impl WindowRule {
    /// Percent of a buffer that becomes window.
    pub fn percent(&self) -> f64 {
        100.0 * self.num as f64 / self.den as f64
    }

    /// Buffer bytes needed for a window of `window_bytes`.
    pub fn buffer_for(&self, window_bytes: u64) -> u64 {
        let b = (u128::from(window_bytes) * u128::from(self.den)).div_ceil(u128::from(self.num));
        u64::try_from(b).unwrap_or(u64::MAX)
    }

    /// The window a buffer of `buffer_bytes` gives.
    pub fn window_of(&self, buffer_bytes: u64) -> u64 {
        let w = u128::from(buffer_bytes) * u128::from(self.num) / u128::from(self.den);
        u64::try_from(w).unwrap_or(u64::MAX)
    }
}

/// The whole check: the link, the host's reading, and every row.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The link checked against.
    pub link: Link,
    /// Its bandwidth-delay product, bytes.
    pub bdp_bytes: u64,
    /// Which end this host is.
    pub role: Role,
    /// `uname -r` of the host read (from `proc/sys/kernel/osrelease`).
    pub kernel_release: Option<String>,
    /// The window rule the buffer figures were planned with.
    pub window_rule: WindowRule,
    /// The checks that apply to `role`, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Checks `host` against `link` for `role`.
    pub fn new(host: &HostState, link: Link, role: Role) -> Self {
        let rule = checks::window_rule(host);
        let checks = checks::all(host, &link, rule)
            .into_iter()
            .filter(|c| role.covers(c.side))
            .collect();
        Self {
            link,
            bdp_bytes: link.bdp_bytes(),
            role,
            kernel_release: host.kernel_release.clone(),
            window_rule: rule,
            checks,
        }
    }

    /// Whether any check advises a change.
    pub fn changes_advised(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Change)
    }

    /// The process exit code: 0 when every check is ok (or only informs),
    /// 2 when changes are advised. (1 is left to errors.)
    pub fn exit_code(&self) -> i32 {
        if self.changes_advised() {
            EXIT_CHANGES_ADVISED
        } else {
            0
        }
    }

    /// The writes `--apply` would make.
    pub fn writes(&self) -> impl Iterator<Item = &SysctlWrite> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Change)
            .filter_map(|c| c.write.as_ref())
    }

    /// The human table, then the commands.
    pub fn render_table(&self) -> String {
        render::table(self)
    }
}

/// Exit code when `tune` advises changes.
pub const EXIT_CHANGES_ADVISED: i32 = 2;

/// What can go wrong in `tune` outside of reading (reads degrade to
/// "not readable here" rows instead of failing).
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// `--apply` without root.
    #[error(
        "--apply writes sysctls under /proc/sys and must run as root (try `sudo xdr-ship tune … --apply`); \
         without --apply, tune only reads"
    )]
    NotRoot,
    /// A sysctl write failed.
    #[error("writing {key} = '{value}': {source}")]
    Write {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// The revert script could not be written.
    #[error("writing the revert script {path}: {source}")]
    RevertScript {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}
