//! The host's global socket buffer maxima (`net.core.rmem_max`/`wmem_max`):
//! what a link needs of them, the change the lab makes with `--tune-host`,
//! and putting them back.
//!
//! Why apart from the namespaces: these two sysctls are the only state the
//! lab touches outside its own namespaces (they are global and read-only
//! inside one), so what is raised here must also be restored here, by the
//! lab's teardown or by its reaper if the lab's process dies.
use serde::{Deserialize, Serialize};

use super::{netns, LabError};

/// A change the lab made to the host's global sysctls, and how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTune {
    /// `net.core.rmem_max` before.
    pub rmem_max_old: u64,
    /// `net.core.rmem_max` as set by the lab.
    pub rmem_max_new: u64,
    /// `net.core.wmem_max` before.
    pub wmem_max_old: u64,
    /// `net.core.wmem_max` as set by the lab.
    pub wmem_max_new: u64,
}

impl HostTune {
    /// The commands that undo this change.
    pub fn restore_commands(&self) -> String {
        format!(
            "sysctl -w net.core.rmem_max={} net.core.wmem_max={}",
            self.rmem_max_old, self.wmem_max_old
        )
    }
}

/// Whether the host's global socket buffer maxima must be raised for a link
/// that needs `need` bytes: the change to make (when `tune_host` allows it),
/// or a warning saying what stays capped and how to raise them by hand.
pub(super) fn plan(
    need: u64,
    tune_host: bool,
) -> Result<(Option<HostTune>, Vec<String>), LabError> {
    let rmem_max = read_u64_sysctl("net.core.rmem_max")?;
    let wmem_max = read_u64_sysctl("net.core.wmem_max")?;
    let mut warnings = Vec::new();
    let host_tune = if rmem_max >= need && wmem_max >= need {
        None
    } else if tune_host {
        Some(HostTune {
            rmem_max_old: rmem_max,
            rmem_max_new: rmem_max.max(need),
            wmem_max_old: wmem_max,
            wmem_max_new: wmem_max.max(need),
        })
    } else {
        warnings.push(format!(
            "net.core.rmem_max={rmem_max} / net.core.wmem_max={wmem_max} are below the {need} \
             bytes this link needs: TCP autotuning in the lab is not affected (the lab raised \
             the namespaces' tcp_rmem/tcp_wmem), but programs that set SO_RCVBUF/SO_SNDBUF \
             themselves (iperf3 -w, a fixed socket buffer) are capped. These are global and \
             read-only inside a namespace; raise them with `--tune-host`, or by hand: \
             `sysctl -w net.core.rmem_max={need} net.core.wmem_max={need}` (restore: \
             `sysctl -w net.core.rmem_max={rmem_max} net.core.wmem_max={wmem_max}`)"
        ));
        None
    };
    Ok((host_tune, warnings))
}

/// Puts the host's sysctls back, if they still hold the lab's values.
pub(super) fn restore(t: &HostTune, problems: &mut Vec<String>) {
    for (key, new, old) in [
        ("net.core.rmem_max", t.rmem_max_new, t.rmem_max_old),
        ("net.core.wmem_max", t.wmem_max_new, t.wmem_max_old),
    ] {
        match read_u64_sysctl(key) {
            Ok(cur) if cur == new => {
                if let Err(e) = netns::write_sysctl(key, &old.to_string()) {
                    problems.push(format!("{e}; restore with `{}`", t.restore_commands()));
                }
            }
            Ok(_) => {} // someone changed it since: theirs now
            Err(e) => problems.push(e.to_string()),
        }
    }
}

pub(super) fn read_u64_sysctl(key: &str) -> Result<u64, LabError> {
    let v = netns::read_sysctl(key)?;
    v.parse().map_err(|_| LabError::Sysctl {
        key: key.to_owned(),
        source: std::io::Error::other(format!("unexpected value '{v}'")),
    })
}
