//! The status file a running lab rewrites every second, and the one-line
//! rendering of the line's counters.
//!
//! Why a file: `lab status` runs in another process (often another
//! terminal) than the lab's controller, and a JSON file under `/run` needs
//! no socket, survives nothing across reboots, and tells a crashed lab (file
//! present, pid gone) from a running one.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    config::{format_rate, LinkConfig},
    HostTune, Lab, LabError, LineStats, Side,
};

/// Where status files live.
pub const STATUS_DIR: &str = "/run/xdr-ship";

/// The status file of lab `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(STATUS_DIR).join(format!("lab-{name}.json"))
}

/// What a running lab tells `lab status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    /// Lab name.
    pub name: String,
    /// The controller's pid.
    pub pid: u32,
    /// The reaper's pid.
    pub reaper_pid: Option<u32>,
    /// Near namespace.
    pub near_ns: String,
    /// Far namespace.
    pub far_ns: String,
    /// Near address.
    pub near_addr: String,
    /// Far address.
    pub far_addr: String,
    /// The link's shape.
    pub config: LinkConfig,
    /// Host sysctls the lab raised.
    pub host_tune: Option<HostTune>,
    /// When the file was last written (ms since the epoch).
    pub updated_unix_ms: u64,
    /// Counters at that time.
    pub stats: LineStats,
    /// Delivered IP bytes per second over the last interval, near→far then far→near.
    pub rate_bytes_per_s: [f64; 2],
}

impl StatusFile {
    /// The static part, from a running lab.
    pub fn new(lab: &Lab) -> Self {
        Self {
            name: lab.name().to_owned(),
            pid: std::process::id(),
            reaper_pid: lab.reaper_pid(),
            near_ns: lab.namespace(Side::Near).to_owned(),
            far_ns: lab.namespace(Side::Far).to_owned(),
            near_addr: lab.addr(Side::Near).to_string(),
            far_addr: lab.addr(Side::Far).to_string(),
            config: lab.config().clone(),
            host_tune: lab.host_tune().cloned(),
            updated_unix_ms: 0,
            stats: LineStats::default(),
            rate_bytes_per_s: [0.0; 2],
        }
    }

    /// Takes in a new snapshot (and the previous one, for rates).
    pub fn update(&mut self, now: &LineStats, prev: Option<&LineStats>) {
        self.rate_bytes_per_s = prev.map_or([0.0; 2], |p| rates(now, p));
        self.stats = now.clone();
        self.updated_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> Result<Self, LabError> {
        let body = std::fs::read(path).map_err(|e| LabError::Status {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&body).map_err(|e| LabError::Status {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Delivered IP bytes per second between two snapshots, near→far then far→near.
pub fn rates(now: &LineStats, prev: &LineStats) -> [f64; 2] {
    let dt = now.elapsed.saturating_sub(prev.elapsed).as_secs_f64();
    if dt <= 0.0 {
        return [0.0; 2];
    }
    [
        now.near_to_far
            .bytes_out
            .saturating_sub(prev.near_to_far.bytes_out) as f64
            / dt,
        now.far_to_near
            .bytes_out
            .saturating_sub(prev.far_to_near.bytes_out) as f64
            / dt,
    ]
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// One line of line stats: what `lab up` prints every second.
pub fn render_line(now: &LineStats, prev: &LineStats, config: &LinkConfig) -> String {
    let [r_nf, r_fn] = rates(now, prev);
    let dt = now
        .elapsed
        .saturating_sub(prev.elapsed)
        .as_secs_f64()
        .max(1e-9);
    let cpu = now.cpu_time().saturating_sub(prev.cpu_time()).as_secs_f64() / dt;
    let a = &now.near_to_far;
    let b = &now.far_to_near;
    let pa = &prev.near_to_far;
    format!(
        "near→far {} ({:.0}% of line) · queue {:.1} MB / {} · drops +{} queue +{} loss · \
         far→near {} · rtt set {} path {} measured {} · line cpu {:.0}%",
        format_rate(r_nf),
        r_nf / config.bandwidth_bytes_per_s as f64 * 100.0,
        a.queue_bytes as f64 / 1e6,
        ms(a.queue_delay),
        a.drops_queue.saturating_sub(pa.drops_queue),
        a.drops_loss.saturating_sub(pa.drops_loss),
        format_rate(r_fn),
        ms(config.rtt),
        ms(now.path_rtt),
        now.measured_rtt.map_or_else(|| "–".to_owned(), ms),
        cpu * 100.0,
    ) + &if b.drops_queue + b.drops_loss
        > prev.far_to_near.drops_queue + prev.far_to_near.drops_loss
    {
        format!(
            " · far→near drops +{} queue +{} loss",
            b.drops_queue.saturating_sub(prev.far_to_near.drops_queue),
            b.drops_loss.saturating_sub(prev.far_to_near.drops_loss)
        )
    } else {
        String::new()
    }
}

/// The report `lab status` prints.
pub fn render_status(f: &StatusFile) -> String {
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(f.updated_unix_ms);
    let alive = pid_alive(f.pid);
    let mut out = String::new();
    let state = if alive {
        format!("running (controller pid {}, updated {age} ms ago)", f.pid)
    } else {
        format!(
            "STALE: controller pid {} is gone; remove leftovers with `xdr-ship lab down --name {}`",
            f.pid, f.name
        )
    };
    out += &format!("lab {}: {state}\n", f.name);
    out += &format!("  link     {}\n", f.config);
    out += &format!(
        "  near     {} in {} (ip netns exec {} …)\n  far      {} in {} (ip netns exec {} …)\n",
        f.near_addr, f.near_ns, f.near_ns, f.far_addr, f.far_ns, f.far_ns
    );
    out += &format!(
        "  rtt      configured {} · path now {} (with queues) · measured {}\n",
        ms(f.config.rtt),
        ms(f.stats.path_rtt),
        f.stats
            .measured_rtt
            .map_or_else(|| "– (no TCP timestamps seen lately)".to_owned(), ms)
    );
    for (label, d, rate) in [
        ("near→far", &f.stats.near_to_far, f.rate_bytes_per_s[0]),
        ("far→near", &f.stats.far_to_near, f.rate_bytes_per_s[1]),
    ] {
        out += &format!(
            "  {label} {} now · {} packets / {} segments / {:.1} MB delivered · drops {} queue, \
             {} loss · {} splits · queue {:.2} MB / {} · held {} frames · cpu {:.2} s\n",
            format_rate(rate),
            d.packets_out,
            d.segments_out,
            d.bytes_out as f64 / 1e6,
            d.drops_queue,
            d.drops_loss,
            d.splits,
            d.queue_bytes as f64 / 1e6,
            ms(d.queue_delay),
            d.held_packets,
            d.cpu_time.as_secs_f64(),
        );
    }
    if let Some(t) = &f.host_tune {
        out += &format!(
            "  host     raised net.core.rmem_max/wmem_max; restored on teardown (by hand: `{}`)\n",
            t.restore_commands()
        );
    }
    out
}
