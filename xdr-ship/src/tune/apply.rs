//! `tune --apply`: raise the sysctls the checks flagged, in the current
//! network namespace, and say how to undo each.
//!
//! Why so careful: these are host settings other programs live with. So
//! `--apply` only ever raises (every field of the new value ≥ the old one,
//! checked again against what is read just before writing), writes nothing
//! that is read-only here (host-wide sysctls inside a child namespace), reads
//! each value back, and prints — and can save as a script — the command that
//! puts the old value back. `/proc/sys` follows the network namespace of the
//! thread that opens it, so the writes land in the caller's namespace.
use std::{io::Write, path::Path};

use serde::Serialize;

use super::{
    host::{read_sysctl, sysctl_path},
    Report, TuneError,
};

/// One sysctl that was raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Dotted key.
    pub key: String,
    /// The value before.
    pub old: String,
    /// The value read back after writing.
    pub new: String,
    /// The command that restores `old`.
    pub revert: String,
}

/// One advised write that was not made, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Dotted key.
    pub key: String,
    /// Why it was left alone.
    pub reason: String,
}

/// What `--apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The writes made, in order.
    pub applied: Vec<Applied>,
    /// The writes refused.
    pub skipped: Vec<Skipped>,
}

/// Whether `new` raises `old`: the same number of numeric fields, none
/// lower, at least one higher. Anything else (text, a lower field) is not a
/// raise and is never written.
pub fn raises(old: &str, new: &str) -> bool {
    let parse =
        |s: &str| -> Option<Vec<u64>> { s.split_whitespace().map(|f| f.parse().ok()).collect() };
    match (parse(old), parse(new)) {
        (Some(o), Some(n)) if o.len() == n.len() && !o.is_empty() => {
            o.iter().zip(&n).all(|(a, b)| b >= a) && o.iter().zip(&n).any(|(a, b)| b > a)
        }
        _ => false,
    }
}

/// The command that sets `key` back to `value`.
pub fn revert_command(key: &str, value: &str) -> String {
    if value.contains(char::is_whitespace) {
        format!("sysctl -w {key}='{value}'")
    } else {
        format!("sysctl -w {key}={value}")
    }
}

/// Whether this process may write sysctls (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the writes `report` advises under `root` (`/` in production: the
/// current network namespace's `/proc/sys`). A refused or failed write is
/// recorded in `skipped`; the others still happen.
pub fn apply(root: &Path, report: &Report) -> Outcome {
    let mut out = Outcome::default();
    for w in report.writes() {
        let before = read_sysctl(root, &w.key);
        let Some(old) = before.value else {
            out.skipped.push(Skipped {
                key: w.key.clone(),
                reason: "not present in this network namespace (a host-wide setting)".into(),
            });
            continue;
        };
        if !before.writable {
            out.skipped.push(Skipped {
                key: w.key.clone(),
                reason: format!(
                    "read-only in this network namespace (a host-wide setting): run `{}` in \
                     the initial namespace",
                    revert_command(&w.key, &w.value)
                ),
            });
            continue;
        }
        if !raises(&old, &w.value) {
            out.skipped.push(Skipped {
                key: w.key.clone(),
                reason: format!("'{}' would not raise '{old}'; never lowered", w.value),
            });
            continue;
        }
        if let Err(e) = std::fs::write(sysctl_path(root, &w.key), &w.value) {
            out.skipped.push(Skipped {
                key: w.key.clone(),
                reason: TuneError::Write {
                    key: w.key.clone(),
                    value: w.value.clone(),
                    source: e,
                }
                .to_string(),
            });
            continue;
        }
        let new = read_sysctl(root, &w.key).value.unwrap_or_default();
        out.applied.push(Applied {
            revert: revert_command(&w.key, &old),
            key: w.key.clone(),
            old,
            new,
        });
    }
    out
}

/// Writes a shell script that undoes `outcome` (last change first).
pub fn write_revert_script(path: &Path, outcome: &Outcome) -> Result<(), TuneError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TuneError::RevertScript {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .map_err(err)?;
    let mut text = String::from(
        "#!/bin/sh\n# Written by `xdr-ship tune --apply`: puts back the sysctls it raised.\n\
         # Run it in the same network namespace tune ran in.\nset -e\n",
    );
    if outcome.applied.is_empty() {
        text.push_str("# nothing was changed\n");
    }
    for a in outcome.applied.iter().rev() {
        text.push_str(&format!("{}  # was raised to '{}'\n", a.revert, a.new));
    }
    f.write_all(text.as_bytes()).map_err(err)
}

impl Outcome {
    /// The human lines: each change with its revert command, then what was left alone.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.applied.is_empty() {
            s.push_str("Applied: nothing\n");
        } else {
            s.push_str("Applied:\n");
            for a in &self.applied {
                s.push_str(&format!(
                    "  {}: '{}' → '{}'\n    revert: {}\n",
                    a.key, a.old, a.new, a.revert
                ));
            }
        }
        if !self.skipped.is_empty() {
            s.push_str("Not applied:\n");
            for k in &self.skipped {
                s.push_str(&format!("  {}: {}\n", k.key, k.reason));
            }
        }
        s
    }
}
