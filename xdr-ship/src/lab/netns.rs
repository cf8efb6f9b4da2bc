//! Named network namespaces, entering them, and finding what runs inside.
//!
//! Why named (bind-mounted under `/run/netns`) rather than anonymous: an
//! operator can `ip netns exec xdr-lab-near …` into a running lab, and a
//! crashed lab leaves something `lab down` can find. The price is that a
//! namespace outlives its creator, so every lab has a reaper (see
//! [`super::reaper`]) that deletes them when the controller dies.
use std::{
    ffi::OsStr,
    fs,
    io::{self, Read},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::LabError;

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// The bind mount of namespace `ns`.
pub fn ns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Whether namespace `ns` exists.
pub fn exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// Runs `program args…` bounded by `timeout`; fails with its stderr.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String, LabError> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: shown.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Command {
                    command: shown,
                    reason: format!("did not finish within {timeout:?}"),
                });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Spawn {
                    command: shown,
                    source,
                });
            }
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(LabError::Command {
            command: shown,
            reason: format!("{status}: {}", err.trim()),
        });
    }
    Ok(out)
}

/// Runs `ip args…` with a 10 s bound.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args, Duration::from_secs(10))
}

/// Creates namespace `ns` (fails if it exists).
pub fn create(ns: &str) -> Result<(), LabError> {
    ip(&["netns", "add", ns]).map(drop)
}

/// Kills every process inside `ns`, then deletes it. Missing is fine.
pub fn destroy(ns: &str) -> Result<(), LabError> {
    if !exists(ns) {
        return Ok(());
    }
    kill_all_in(ns);
    match ip(&["netns", "delete", ns]) {
        Ok(_) => Ok(()),
        Err(_) if !exists(ns) => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILLs every process in `ns` (never this process), waits up to 2 s for
/// them to leave it, and reaps those that were this process's own children
/// (so a `Child` the caller dropped without waiting leaves no zombie; a
/// `Child` still held then reports "no child process" on wait).
pub fn kill_all_in(ns: &str) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut killed = Vec::new();
    loop {
        let pids: Vec<u32> = pids_in(ns).into_iter().filter(|p| *p != me).collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: `kill` has no memory-safety preconditions; a pid that
            // has gone meanwhile just yields ESRCH.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in killed {
        if parent_of(pid) == Some(me) {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks;
            // `pid` is our own child, killed above.
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        }
    }
}

/// The parent pid of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Processes whose network namespace is `ns` (compared by device and inode,
/// as `ip netns pids` does).
pub fn pids_in(ns: &str) -> Vec<u32> {
    let Ok(target) = fs::metadata(ns_path(ns)) else {
        return Vec::new();
    };
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect()
}

/// Runs `f` on a short-lived thread that has entered namespace `ns`: the
/// rest of the process stays where it is. (`setns` with `CLONE_NEWNET`
/// moves only the calling thread; TUN devices, sockets and `/proc/sys/net`
/// follow the thread's namespace.)
pub fn in_netns<T: Send>(
    ns: &str,
    f: impl FnOnce() -> Result<T, LabError> + Send,
) -> Result<T, LabError> {
    let path = ns_path(ns);
    let file = fs::File::open(&path).map_err(|source| LabError::Netns {
        ns: ns.to_owned(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: `file` is an open namespace file for the duration of
            // the call; setns only changes this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(LabError::Netns {
                    ns: ns.to_owned(),
                    source: io::Error::last_os_error(),
                });
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(LabError::Netns {
                ns: ns.to_owned(),
                source: io::Error::other("the helper thread panicked"),
            })
        })
    })
}

/// Reads a sysctl (path under `/proc/sys`) in the calling thread's namespace.
pub fn read_sysctl(key: &str) -> Result<String, LabError> {
    let path = sysctl_path(key);
    fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| LabError::Sysctl {
            key: key.to_owned(),
            source,
        })
}

/// Writes a sysctl in the calling thread's namespace.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), LabError> {
    fs::write(sysctl_path(key), value).map_err(|source| LabError::Sysctl {
        key: key.to_owned(),
        source,
    })
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Converts an `OsStr` for messages.
pub fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}
