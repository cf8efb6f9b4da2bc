//! One core drowning in softirq, induced honestly: all receive processing
//! of a namespace steered to one CPU, a busy firewall on its input path,
//! and a bounded 64-byte UDP flood that competes for that CPU.
//!
//! Why: the seed's wall at ~100K TPS per node was one core in softirq
//! ("si" in `top`) while the others idled, and the verdict's "interrupts"
//! class must be shown firing on a real run, not only on recorded samples.
//! On these 2-core virtual machines there is one NIC-less path, so the
//! pattern is built from parts the kernel offers (measured here):
//! - RPS (`/sys/class/net/<dev>/queues/rx-0/rps_cpus`) on the namespace's
//!   devices (the lab's TUN device and its loopback) moves every received
//!   packet's protocol work into NET_RX on the chosen CPU;
//! - a few thousand nftables rules in the namespace's input chain give
//!   each packet a busy firewall's cost (without them a 64-byte flood from
//!   the other CPU reached only ~16% NET_RX);
//! - the flood is sent from a thread pinned to another CPU, into the
//!   namespace's loopback, to a port the chain's last rule drops: the
//!   receive work lands on the steered CPU, the sending costs the other.
//!
//! Everything is undone by [`Steering`]'s `Drop` (normal return or panic):
//! the flood stops, the nftables table is deleted, `rps_cpus` is restored.
//! The namespaces themselves belong to the [`super::Lab`], which deletes
//! them (and with them anything this module left, should it be killed).
use std::{
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{netns, LabError, TUN_NAME};

/// The nftables table this module creates (and deletes) in the namespace.
pub const TABLE: &str = "xdr_steer";
/// The port the flood goes to; the chain's last rule drops it, so no
/// socket and no ICMP answer is involved.
pub const FLOOD_PORT: u16 = 9;
/// The flood's payload: minimum-size packets cost the most per byte.
pub const FLOOD_PAYLOAD_BYTES: usize = 64;
/// The firewall's size that, measured here, makes a 64-byte flood from
/// the other CPU saturate the steered CPU's NET_RX.
pub const DEFAULT_RULES: usize = 3_000;
/// How often the flood's pacing catches up with its rate.
const FLOOD_TICK: Duration = Duration::from_millis(1);
/// Most ticks' worth of datagrams one catch-up sends.
const MAX_CATCH_UP_TICKS: u64 = 10;
/// Bound on any `ip netns exec` / `nft` call.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// What can go wrong steering, firewalling or flooding.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// `nft` is not installed.
    #[error(
        "`nft` not found: the firewall load needs nftables (`apt-get install nftables`, or \
         `cargo xtask setup`)"
    )]
    NoNft,
    /// A CPU that this machine does not have.
    #[error("CPU {cpu} is not usable here ({online} CPUs online)")]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: usize,
        /// CPUs online.
        online: usize,
    },
    /// A lab helper (`ip`, `nft`, namespace entry) failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
}

/// Where the receive work goes and what it costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SteerConfig {
    /// The CPU that gets every received packet's protocol work.
    pub cpu: usize,
    /// The namespace's devices whose `rx-0/rps_cpus` is set.
    pub devices: Vec<String>,
    /// Rules in the namespace's input chain before the flood's drop rule.
    pub rules: usize,
}

impl SteerConfig {
    /// Everything received in the namespace (the lab's TUN device and
    /// loopback) to `cpu`, behind [`DEFAULT_RULES`] rules.
    pub fn to_cpu(cpu: usize) -> Self {
        Self {
            cpu,
            devices: vec![TUN_NAME.to_owned(), "lo".to_owned()],
            rules: DEFAULT_RULES,
        }
    }

    /// The RPS mask of [`Self::cpu`], as `rps_cpus` takes it (hex).
    pub fn mask(&self) -> String {
        cpu_mask(&[self.cpu])
    }
}

/// The competing receive load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodConfig {
    /// The CPU the sending thread is pinned to (not the steered one).
    pub sender_cpu: usize,
    /// Datagrams per second, paced every millisecond.
    pub packets_per_s: u64,
    /// The flood stops by itself after this long, whatever happens.
    pub duration: Duration,
}

/// What the flood did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodStats {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Sends the kernel refused (full buffers).
    pub failed: u64,
}

/// A namespace's receive path steered to one CPU behind a firewall, with
/// an optional flood; a guard: dropping it undoes all of it.
#[derive(Debug)]
pub struct Steering {
    ns: String,
    config: SteerConfig,
    /// `(device, rps_cpus before)` for every device changed.
    restore: Vec<(String, String)>,
    table: bool,
    flood: Option<Flood>,
}

impl Steering {
    /// Steers namespace `ns`'s receive work to `config.cpu` and loads the
    /// firewall into its input chain.
    pub fn apply(ns: &str, config: SteerConfig) -> Result<Self, SteerError> {
        check_cpu(config.cpu)?;
        which_nft()?;
        let mut s = Self {
            ns: ns.to_owned(),
            config,
            restore: Vec::new(),
            table: false,
            flood: None,
        };
        // From here on, an error drops `s`, which undoes what was done.
        for dev in s.config.devices.clone() {
            let before = read_rps(&s.ns, &dev)?;
            write_rps(&s.ns, &dev, &s.config.mask())?;
            s.restore.push((dev, before));
        }
        s.load_rules()?;
        Ok(s)
    }

    /// The steering in force.
    pub fn config(&self) -> &SteerConfig {
        &self.config
    }

    /// The command that steers `dev` as this guard did, for messages.
    pub fn rps_command(&self, dev: &str) -> String {
        format!("echo {} > {}", self.config.mask(), rps_path(dev).display())
    }

    /// Starts the flood (stopping a previous one first).
    pub fn start_flood(&mut self, config: FloodConfig) -> Result<(), SteerError> {
        check_cpu(config.sender_cpu)?;
        self.stop_flood();
        self.flood = Some(Flood::start(&self.ns, config)?);
        Ok(())
    }

    /// Stops the flood, if one runs, and says what it sent.
    pub fn stop_flood(&mut self) -> Option<FloodStats> {
        self.flood.take().map(Flood::stop)
    }

    fn load_rules(&mut self) -> Result<(), SteerError> {
        let script = ruleset(self.config.rules);
        let path =
            std::env::temp_dir().join(format!("xdr-steer-{}-{}.nft", std::process::id(), self.ns));
        std::fs::write(&path, script).map_err(|source| SteerError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        let path_s = path.to_string_lossy().into_owned();
        let loaded = in_ns(&self.ns, &["nft", "-f", &path_s]);
        let _ = std::fs::remove_file(&path);
        loaded?;
        self.table = true;
        Ok(())
    }

    fn undo(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        self.stop_flood();
        if !netns::exists(&self.ns) {
            // The namespace (and so its table and devices) is gone already.
            self.restore.clear();
            self.table = false;
            return problems;
        }
        if std::mem::take(&mut self.table) {
            if let Err(e) = in_ns(&self.ns, &["nft", "delete", "table", "inet", TABLE]) {
                problems.push(e.to_string());
            }
        }
        for (dev, before) in std::mem::take(&mut self.restore) {
            if let Err(e) = write_rps(&self.ns, &dev, &before) {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        for p in self.undo() {
            tracing::warn!("steering in {}: {p}", self.ns);
        }
    }
}

/// The nftables script: a table with an input chain holding `rules`
/// source-address rules that match nothing on the lab (10.0.0.0/8 is not
/// on it) and, last, the drop of the flood's port.
pub fn ruleset(rules: usize) -> String {
    let mut s = format!(
        "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority filter; \
         policy accept;\n"
    );
    for i in 0..rules {
        let [_, a, b, c] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        s.push_str(&format!("    ip saddr 10.{a}.{b}.{c} drop\n"));
    }
    s.push_str(&format!("    udp dport {FLOOD_PORT} drop\n  }}\n}}\n"));
    s
}

/// The hex mask `rps_cpus` takes for `cpus`.
pub fn cpu_mask(cpus: &[usize]) -> String {
    let mask = cpus
        .iter()
        .filter(|c| **c < 64)
        .fold(0u64, |m, c| m | 1 << c);
    format!("{mask:x}")
}

/// `rx-0`'s RPS mask of `dev`, as seen from inside its namespace.
pub fn rps_path(dev: &str) -> PathBuf {
    PathBuf::from(format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus"))
}

/// CPUs online (at least 1), whatever this thread's CPU set (which
/// `available_parallelism` would count instead).
pub fn online_cpus() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Every online CPU but `cpu`.
pub fn cpus_except(cpu: usize) -> Vec<usize> {
    (0..online_cpus()).filter(|c| *c != cpu).collect()
}

fn check_cpu(cpu: usize) -> Result<(), SteerError> {
    let online = online_cpus();
    if cpu < online && online >= 2 {
        Ok(())
    } else {
        Err(SteerError::NoSuchCpu { cpu, online })
    }
}

fn which_nft() -> Result<(), SteerError> {
    match netns::run("nft", &["--version"], COMMAND_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(LabError::Spawn { .. }) => Err(SteerError::NoNft),
        Err(e) => Err(e.into()),
    }
}

/// Runs `args` inside `ns` with its own sysfs (`ip netns exec` mounts the
/// namespace's view of `/sys`, which `/sys/class/net` needs).
fn in_ns(ns: &str, args: &[&str]) -> Result<String, SteerError> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    Ok(netns::run("ip", &all, COMMAND_TIMEOUT)?)
}

fn read_rps(ns: &str, dev: &str) -> Result<String, SteerError> {
    let path = rps_path(dev);
    Ok(in_ns(ns, &["cat", &path.to_string_lossy()])?
        .trim()
        .to_owned())
}

fn write_rps(ns: &str, dev: &str, mask: &str) -> Result<(), SteerError> {
    let cmd = format!("echo {mask} > {}", rps_path(dev).display());
    in_ns(ns, &["sh", "-c", &cmd]).map(drop)
}

/// The calling thread's CPU set before [`pin_current_thread`] changed it;
/// dropping it restores the set.
pub struct Pinned {
    before: libc::cpu_set_t,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: `before` is a valid cpu_set_t read by sched_getaffinity;
        // pid 0 is the calling thread.
        let r = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before)
        };
        if r != 0 {
            tracing::warn!(
                "restoring the thread's CPU set: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Pins the calling thread to `cpus`; threads and processes it starts
/// from now on inherit the set (so a lab's delay line and the programs
/// run in it stay off a steered CPU). Restored when the guard drops.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<Pinned> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `before` is a writable cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) }
        != 0
    {
        return Err(io::Error::last_os_error());
    }
    set_affinity(cpus)?;
    Ok(Pinned { before })
}

fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes one bit of `set`; it bounds-checks `c`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The flood's thread: in the namespace, pinned, paced, bounded.
#[derive(Debug)]
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(ns: &str, config: FloodConfig) -> Result<Self, SteerError> {
        let file = std::fs::File::open(netns::ns_path(ns)).map_err(|source| SteerError::Io {
            what: format!("opening namespace {ns}"),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let (st, se, fa) = (stop.clone(), sent.clone(), failed.clone());
        let handle = std::thread::Builder::new()
            .name("lab-flood".to_owned())
            .spawn(move || {
                let socket = enter_and_bind(&file, config.sender_cpu);
                drop(file);
                match socket {
                    Ok(sock) => {
                        let _ = ready_tx.send(Ok(()));
                        flood(&sock, &config, &st, &se, &fa);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| SteerError::Io {
                what: "starting the flood thread".to_owned(),
                source,
            })?;
        let flood = Self {
            stop,
            sent,
            failed,
            handle: Some(handle),
        };
        match ready_rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Ok(())) => Ok(flood),
            Ok(Err(source)) => Err(SteerError::Io {
                what: format!("starting the flood in {ns}"),
                source,
            }),
            Err(_) => Err(SteerError::Io {
                what: format!("starting the flood in {ns}"),
                source: io::Error::other("the flood thread did not start"),
            }),
        }
    }

    fn stop(mut self) -> FloodStats {
        self.halt();
        FloodStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Moves this thread into the namespace of `file`, onto `cpu`, and opens
/// the flood's socket there.
fn enter_and_bind(file: &std::fs::File, cpu: usize) -> io::Result<UdpSocket> {
    // SAFETY: `file` is an open namespace file; setns changes only this
    // thread's network namespace (the thread ends with the flood).
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_affinity(&[cpu])?;
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.connect((Ipv4Addr::LOCALHOST, FLOOD_PORT))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sends at `config.packets_per_s`, catching up every [`FLOOD_TICK`],
/// until `stop` or `config.duration`.
fn flood(
    sock: &UdpSocket,
    config: &FloodConfig,
    stop: &AtomicBool,
    sent: &AtomicU64,
    failed: &AtomicU64,
) {
    let payload = [0x5au8; FLOOD_PAYLOAD_BYTES];
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut done: u64 = 0;
    let max_batch = (config.packets_per_s / 1000).max(1) * MAX_CATCH_UP_TICKS;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let target = ((now - start).as_secs_f64() * config.packets_per_s as f64) as u64;
        // A sender that falls behind drops the backlog rather than
        // sending without end: the rate is a ceiling.
        for _ in 0..target.saturating_sub(done).min(max_batch) {
            match sock.send(&payload) {
                Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        done = target;
        std::thread::sleep(FLOOD_TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_holds_the_rules_asked_for_then_drops_the_flood_port() {
        let s = ruleset(300);
        assert_eq!(s.matches(" drop\n").count(), 301);
        assert!(s.contains("ip saddr 10.0.1.43 drop"), "{s}");
        let last_rule = s.lines().rev().nth(2).unwrap();
        assert_eq!(last_rule.trim(), format!("udp dport {FLOOD_PORT} drop"));
    }

    #[test]
    fn the_mask_is_hex_of_the_cpus() {
        assert_eq!(cpu_mask(&[0]), "1");
        assert_eq!(cpu_mask(&[0, 1]), "3");
        assert_eq!(cpu_mask(&[4]), "10");
        assert_eq!(SteerConfig::to_cpu(1).mask(), "2");
    }

    #[test]
    fn a_cpu_the_machine_lacks_is_refused() {
        let err = check_cpu(online_cpus()).unwrap_err();
        assert!(matches!(err, SteerError::NoSuchCpu { .. }), "{err}");
    }
}
