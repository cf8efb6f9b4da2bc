//! `xdr-ship lab`: a long, fat link on one machine.
//!
//! Why: the shipper's whole point is what happens at 156 ms and 100 MB/s,
//! and neither loopback (no delay) nor a real WAN (not in CI) shows it. The
//! lab puts two network namespaces, "near" and "far", on either end of a
//! user-space delay line, so a sender and a receiver on this machine see the
//! RTT, rate, loss and buffer of a real path, and nothing else changes: same
//! kernel TCP, same congestion control, same socket buffers.
//!
//! ```text
//!  near netns                   this process                    far netns
//!  198.18.0.1 ── xdr0 (TUN) ══ delay line near→far ══▶ xdr0 (TUN) ── 198.18.0.2
//!                          ◀══ delay line far→near ══
//! ```
//!
//! Why not netem: these machines have no `sch_netem` (nor `fq`); see
//! DESIGN.md, "The WAN lab on these machines (measured)". The addresses
//! come from the RFC 2544 benchmarking range and the namespaces have no
//! other interface and no default route: lab traffic cannot leave them.
//!
//! Layout:
//! - [`config`]: the link's shape and the human-unit flag parsers;
//! - [`sched`]: the per-direction release-time scheduler (pure, fake clock);
//! - [`gso`]: virtio-net headers, segment layout, splitting super-packets;
//! - [`tun`]: opening a TUN device in GSO mode;
//! - [`line`](mod@line): the two delay-line threads and their counters;
//! - [`netns`]: named namespaces, entering them, finding their processes;
//! - [`reaper`]: the process that cleans up after a controller that died;
//! - [`status`]: the status file a running lab writes for `lab status`;
//! - [`steer`]: receive work steered to one CPU, a firewall and a flood.
//!
//! The `lab up | run | status | down` subcommands are the binary's
//! (`cmd/lab.rs`): the library keeps the [`Lab`] API.
//!
//! Teardown, the lab's one promise ("nothing is left behind, ever"):
//! - normal return and panic: [`Lab`]'s `Drop` stops the line, kills every
//!   process in both namespaces, closes the TUN devices (they are not
//!   persistent, so they vanish), deletes the namespaces, restores host
//!   sysctls it raised, removes the status file, and disarms the reaper;
//! - Ctrl-C / SIGTERM: the CLI turns them into a normal return;
//! - SIGKILL (or any death that skips `Drop`): the kernel closes the TUN fds,
//!   children die by `PR_SET_PDEATHSIG`, and the [`reaper`] deletes the rest.
pub mod config;
mod error;
pub mod gso;
mod host;
pub mod line;
pub mod netns;
pub mod reaper;
pub mod sched;
pub mod status;
pub mod steer;
pub mod tun;

use std::{
    ffi::{CString, OsStr},
    net::Ipv4Addr,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::PathBuf,
    process::Command,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use config::{LinkConfig, UnitError};
pub use error::LabError;
pub use host::HostTune;
pub use line::{DirectionStats, LineStats};

use line::DelayLine;
use reaper::Reaper;

/// The TUN device's name inside each namespace.
pub const TUN_NAME: &str = "xdr0";
/// Near end's address (RFC 2544 benchmarking range: never routed anywhere).
pub const NEAR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Far end's address.
pub const FAR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Prefix length of the lab's subnet.
pub const PREFIX_LEN: u8 = 24;
/// TUN transmit queue: the default 500 drops silently under GSO bursts and looks like loss.
pub const TXQUEUELEN: u32 = 20_000;

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The sending end (the shipper, the iperf3 client).
    Near,
    /// The receiving end (the receiver, the iperf3 server).
    Far,
}

impl Side {
    /// Both sides, near first.
    pub const BOTH: [Side; 2] = [Side::Near, Side::Far];

    /// `near` or `far`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Near => "near",
            Side::Far => "far",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Choices beyond the link's shape.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Raise `net.core.rmem_max`/`wmem_max` in the root namespace (global!)
    /// when they cap the buffers the link needs; restored on teardown.
    pub tune_host: bool,
}

/// Namespace name of `side` for lab `name`.
pub fn namespace_name(name: &str, side: Side) -> String {
    format!("xdr-{name}-{side}")
}

fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidName(name.to_owned()))
    }
}

/// A running lab. A guard: dropping it removes everything it created.
pub struct Lab {
    name: String,
    config: LinkConfig,
    near_ns: String,
    far_ns: String,
    created_ns: Vec<String>,
    line: Option<DelayLine>,
    status: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    reaper: Option<Reaper>,
    host_tune: Option<HostTune>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Brings up lab `name`: namespaces `xdr-<name>-near` and `xdr-<name>-far`,
    /// a GSO TUN device `xdr0` in each (198.18.0.1/24 and 198.18.0.2/24),
    /// per-namespace TCP buffer maxima sized for the link, and the delay line.
    pub fn up(name: &str, config: LinkConfig, opts: LabOptions) -> Result<Lab, LabError> {
        check_name(name)?;
        config.validate()?;
        // SAFETY: `geteuid` has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::NotRoot);
        }
        let near_ns = namespace_name(name, Side::Near);
        let far_ns = namespace_name(name, Side::Far);
        for ns in [&near_ns, &far_ns] {
            if netns::exists(ns) {
                return Err(LabError::Exists {
                    name: name.to_owned(),
                    ns: ns.clone(),
                });
            }
        }

        // Decide host tuning first: the reaper must know what to restore.
        let need = buffer_need_bytes(&config);
        let (host_tune, warnings) = host::plan(need, opts.tune_host)?;

        let status_path = status::path(name);
        let reaper = Reaper::spawn(&near_ns, &far_ns, &status_path, host_tune.as_ref())?;
        let mut lab = Lab {
            name: name.to_owned(),
            config,
            near_ns,
            far_ns,
            created_ns: Vec::new(),
            line: None,
            status: None,
            reaper: Some(reaper),
            host_tune: None,
            warnings,
        };
        // From here on, an error drops `lab`, which removes what exists.
        let near = lab.bring_up_side(Side::Near, need)?;
        let far = lab.bring_up_side(Side::Far, need)?;

        if let Some(t) = host_tune {
            netns::write_sysctl("net.core.rmem_max", &t.rmem_max_new.to_string())?;
            netns::write_sysctl("net.core.wmem_max", &t.wmem_max_new.to_string())?;
            lab.warnings.push(format!(
                "raised net.core.rmem_max {} -> {} and net.core.wmem_max {} -> {} (global); \
                 restored on teardown, or by hand: `{}`",
                t.rmem_max_old,
                t.rmem_max_new,
                t.wmem_max_old,
                t.wmem_max_new,
                t.restore_commands()
            ));
            lab.host_tune = Some(t);
        }
        for w in &lab.warnings {
            tracing::debug!("lab {name}: {w}");
        }

        let line = DelayLine::start(near, far, &lab.config)?;
        lab.line = Some(line);
        lab.start_status_writer()?;
        Ok(lab)
    }

    /// Creates one namespace, its sysctls, its TUN device and addresses.
    fn bring_up_side(&mut self, side: Side, need: u64) -> Result<std::os::fd::OwnedFd, LabError> {
        let ns = self.namespace(side).to_owned();
        netns::create(&ns)?;
        self.created_ns.push(ns.clone());
        let fd = netns::in_netns(&ns, || {
            // No IPv6 on the link: router solicitations would be noise in the counters.
            for key in [
                "net.ipv6.conf.all.disable_ipv6",
                "net.ipv6.conf.default.disable_ipv6",
            ] {
                if let Err(e) = netns::write_sysctl(key, "1") {
                    tracing::debug!("{e} (IPv6 may be off already)");
                }
            }
            // Copied from the root namespace at creation; raise the maxima
            // so autotuning can reach the bandwidth-delay product.
            for key in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
                let cur = netns::read_sysctl(key)?;
                let mut v: Vec<u64> = cur
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if v.len() != 3 {
                    return Err(LabError::Sysctl {
                        key: key.to_owned(),
                        source: std::io::Error::other(format!("unexpected value '{cur}'")),
                    });
                }
                v[2] = v[2].max(need);
                netns::write_sysctl(key, &format!("{} {} {}", v[0], v[1], v[2]))?;
            }
            tun::open_gso(TUN_NAME).map_err(|source| LabError::Tun {
                dev: TUN_NAME.to_owned(),
                ns: ns.clone(),
                source,
            })
        })?;
        let addr = format!("{}/{PREFIX_LEN}", self.addr(side));
        let mtu = self.config.mtu.to_string();
        let qlen = TXQUEUELEN.to_string();
        netns::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", &ns, "addr", "add", &addr, "dev", TUN_NAME])?;
        netns::ip(&[
            "-n",
            &ns,
            "link",
            "set",
            TUN_NAME,
            "mtu",
            &mtu,
            "txqueuelen",
            &qlen,
            "up",
        ])?;
        Ok(fd)
    }

    fn start_status_writer(&mut self) -> Result<(), LabError> {
        let Some(line) = &self.line else {
            return Ok(());
        };
        let stats = line.stats_fn();
        let mut file = status::StatusFile::new(self);
        let path = status::path(&self.name);
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("lab-status".to_owned())
            .spawn(move || {
                let mut prev: Option<LineStats> = None;
                loop {
                    let now = stats();
                    file.update(&now, prev.as_ref());
                    if let Err(e) = file.write(&path) {
                        tracing::warn!("writing {}: {e}", path.display());
                    }
                    prev = Some(now);
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })
            .map_err(|source| LabError::Io {
                what: "starting the status writer".to_owned(),
                source,
            })?;
        self.status = Some((tx, handle));
        Ok(())
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link's shape.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The namespace of `side` (usable with `ip netns exec`).
    pub fn namespace(&self, side: Side) -> &str {
        match side {
            Side::Near => &self.near_ns,
            Side::Far => &self.far_ns,
        }
    }

    /// The address of `side` on the link.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::Near => NEAR_ADDR,
            Side::Far => FAR_ADDR,
        }
    }

    /// Warnings from bringing the lab up: host buffer caps that limit
    /// programs setting `SO_SNDBUF`/`SO_RCVBUF`, and host changes made with
    /// `tune_host`. The library does not print them; show them to your user.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The host sysctl change this lab made, if any.
    pub fn host_tune(&self) -> Option<&HostTune> {
        self.host_tune.as_ref()
    }

    /// The status file `lab status` reads.
    pub fn status_path(&self) -> PathBuf {
        status::path(&self.name)
    }

    /// The reaper's pid.
    pub fn reaper_pid(&self) -> Option<u32> {
        self.reaper.as_ref().map(Reaper::pid)
    }

    /// Cuts the link (`false`) or restores it (`true`): while down, every
    /// frame is dropped both ways, silently, like a failed WAN circuit.
    pub fn set_link_up(&self, up: bool) {
        if let Some(line) = &self.line {
            line.set_up(up);
        }
    }

    /// Changes the line rate of both directions from now on, as when a
    /// path's capacity changes mid-run (the shipper must follow it).
    pub fn set_rate(&self, bytes_per_s: u64) {
        if let Some(line) = &self.line {
            line.set_rate(bytes_per_s);
        }
    }

    /// A snapshot of the line's counters.
    pub fn stats(&self) -> LineStats {
        self.line.as_ref().map(DelayLine::stats).unwrap_or_default()
    }

    /// A command that runs `program` inside `side`'s namespace.
    ///
    /// The child gets `PR_SET_PDEATHSIG(SIGKILL)`: it dies when the *thread*
    /// that spawns it exits (that is how the kernel defines "parent"), so
    /// spawn from a thread that lives as long as the child should, such as
    /// the main thread or a test's thread. Teardown kills whatever still runs
    /// in the namespace anyway; reap your `Child` to avoid a zombie.
    ///
    /// Only the network namespace changes (not the mount namespace as with
    /// `ip netns exec`): the program sees the lab's interfaces and sockets,
    /// and the host's files.
    pub fn command(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = netns::ns_path(self.namespace(side));
        // A path with NUL cannot come from our names; fall back to one that fails.
        let path = CString::new(path.as_os_str().as_bytes())
            .unwrap_or_else(|_| c"/nonexistent".to_owned());
        // SAFETY: `getpid` has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, open, setns, close),
        // allocating nothing; `path` is moved in and outlives the call.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the lab controller exited"));
                }
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::setns(fd, libc::CLONE_NEWNET);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if r != 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Tears the lab down now and reports what could not be removed.
    pub fn down(mut self) -> Result<(), LabError> {
        let problems = self.teardown();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown(problems.join("; "), self.name.clone()))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some((tx, handle)) = self.status.take() {
            drop(tx);
            let _ = handle.join();
        }
        if let Some(mut line) = self.line.take() {
            line.stop();
        }
        for ns in std::mem::take(&mut self.created_ns).iter().rev() {
            if let Err(e) = netns::destroy(ns) {
                problems.push(e.to_string());
            }
        }
        if let Some(t) = self.host_tune.take() {
            host::restore(&t, &mut problems);
        }
        let path = status::path(&self.name);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("removing {}: {e}", path.display()));
            }
        }
        if let Some(r) = self.reaper.take() {
            if problems.is_empty() {
                r.disarm();
            } else {
                // Let the reaper try again on its own.
                r.fire();
            }
        }
        problems
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.teardown() {
            tracing::warn!("lab {} teardown: {p}", self.name);
        }
    }
}

/// Socket buffer maximum the link needs: twice the bandwidth-delay product
/// with a full buffer (the kernel counts overhead against the buffer),
/// rounded up to a MiB.
pub fn buffer_need_bytes(c: &LinkConfig) -> u64 {
    (c.bdp_bytes() * 2).div_ceil(1 << 20) * (1 << 20)
}

/// What `down_by_name` found and removed.
#[derive(Debug, Default)]
pub struct DownReport {
    /// One line per action taken.
    pub actions: Vec<String>,
}

/// Removes lab `name` whether it runs or crashed: stops its controller
/// (SIGTERM, then SIGKILL after 5 s), kills what runs in its namespaces,
/// deletes them, restores host sysctls it raised, removes its status file.
pub fn down_by_name(name: &str) -> Result<DownReport, LabError> {
    check_name(name)?;
    let mut report = DownReport::default();
    let path = status::path(name);
    let file = status::StatusFile::read(&path).ok();
    if let Some(f) = &file {
        let pid = f.pid;
        if pid != std::process::id() && status::pid_alive(pid) {
            // SAFETY: `kill` has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            report
                .actions
                .push(format!("sent SIGTERM to controller pid {pid}"));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while status::pid_alive(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if status::pid_alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                report
                    .actions
                    .push(format!("sent SIGKILL to controller pid {pid}"));
            }
        }
    }
    for side in Side::BOTH {
        let ns = namespace_name(name, side);
        if netns::exists(&ns) {
            netns::destroy(&ns)?;
            report.actions.push(format!("deleted namespace {ns}"));
        }
    }
    if let Some(t) = file.as_ref().and_then(|f| f.host_tune.clone()) {
        let mut problems = Vec::new();
        host::restore(&t, &mut problems);
        if let Some(p) = problems.first() {
            return Err(LabError::Teardown(p.clone(), name.to_owned()));
        }
        report
            .actions
            .push("restored net.core.rmem_max/wmem_max where still at the lab's value".to_owned());
    }
    if path.exists() {
        std::fs::remove_file(&path).map_err(|source| LabError::Io {
            what: format!("removing {}", path.display()),
            source,
        })?;
        report.actions.push(format!("removed {}", path.display()));
    }
    Ok(report)
}
