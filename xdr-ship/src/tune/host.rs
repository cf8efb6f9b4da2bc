//! Reading the host: sysctls, `/proc/interrupts`, IRQ affinities, NICs and
//! their RPS masks, softnet drops, whether `fq` exists.
//!
//! Why a root path everywhere: the checks are only as good as their tests,
//! and a test cannot choose this machine's `/proc/interrupts`. Every reader
//! resolves `proc/…` and `sys/…` under `root` (`/` in production), so unit
//! tests build fixture trees in a temp dir: a NIC whose interrupts all land
//! on one CPU, or spread, RPS on or off, any sysctl value. Nothing here
//! fails: what cannot be read is `None` and its check says so.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// The sysctls the checks read.
pub const SYSCTLS: &[&str] = &[
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_adv_win_scale",
    "net.ipv4.tcp_window_scaling",
    "net.ipv4.tcp_moderate_rcvbuf",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_available_congestion_control",
    "net.ipv4.tcp_allowed_congestion_control",
    "net.core.default_qdisc",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.core.netdev_max_backlog",
    "net.core.rps_sock_flow_entries",
];

/// One sysctl as this network namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlValue {
    /// The value with runs of whitespace made single spaces; `None` when the
    /// file is missing here (host-wide sysctls are absent from child
    /// network namespaces) or unreadable.
    pub value: Option<String>,
    /// Whether its file is writable (host-wide sysctls such as `rmem_max`
    /// are read-only inside a child network namespace).
    pub writable: bool,
}

/// The path of sysctl `key` under `root`.
pub fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    root.join("proc/sys").join(key.replace('.', "/"))
}

/// Reads sysctl `key` under `root`.
pub fn read_sysctl(root: &Path, key: &str) -> SysctlValue {
    let path = sysctl_path(root, key);
    let value = fs::read_to_string(&path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
    let writable = fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o222 != 0);
    SysctlValue { value, writable }
}

/// One line of `/proc/interrupts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqLine {
    /// The label before the colon: a number, or `NMI`, `LOC`, …
    pub label: String,
    /// Count per CPU, in the header's order.
    pub counts: Vec<u64>,
    /// The rest: chip, hardware IRQ and type, then the action names.
    pub desc: String,
}

/// `/proc/interrupts`: the CPUs of the header and every line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Interrupts {
    /// CPU numbers of the header (`CPU0 CPU1 …`): the online CPUs.
    pub cpus: Vec<u32>,
    /// The lines.
    pub lines: Vec<IrqLine>,
}

/// Parses `/proc/interrupts`.
pub fn parse_interrupts(text: &str) -> Result<Interrupts, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty /proc/interrupts")?;
    let cpus = header
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CPU")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| format!("unexpected header field '{c}' in /proc/interrupts"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cpus.is_empty() {
        return Err("no CPUs in the /proc/interrupts header".into());
    }
    let mut out = Vec::new();
    for line in lines {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let mut fields = rest.split_whitespace().peekable();
        let mut counts = Vec::with_capacity(cpus.len());
        while counts.len() < cpus.len() {
            match fields.peek().and_then(|f| f.parse::<u64>().ok()) {
                Some(n) => {
                    counts.push(n);
                    fields.next();
                }
                None => break,
            }
        }
        out.push(IrqLine {
            label: label.trim().to_owned(),
            counts,
            desc: fields.collect::<Vec<_>>().join(" "),
        });
    }
    Ok(Interrupts { cpus, lines: out })
}

/// One of a NIC's interrupts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicIrq {
    /// IRQ number.
    pub irq: u32,
    /// The action name(s) from `/proc/interrupts` (`virtio2-input.0`, `eth0-TxRx-3`).
    pub name: String,
    /// Count per CPU, in [`Interrupts::cpus`] order.
    pub counts: Vec<u64>,
    /// `/proc/irq/N/smp_affinity_list`: where it may go.
    pub affinity: Option<String>,
    /// `/proc/irq/N/effective_affinity_list`: where it goes.
    pub effective: Option<String>,
}

/// One receive queue of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RxQueue {
    /// `rx-0`, …
    pub name: String,
    /// `rps_cpus`: a hex CPU mask, comma-separated in 32-bit groups.
    pub rps_cpus: Option<String>,
    /// `rps_flow_cnt`: the queue's RFS flow table size.
    pub rps_flow_cnt: Option<u64>,
}

/// A network device backed by hardware (not `lo`, not virtual).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Its interrupts.
    pub irqs: Vec<NicIrq>,
    /// Its receive queues.
    pub rx_queues: Vec<RxQueue>,
    /// How many transmit queues it has.
    pub tx_queues: usize,
}

/// Totals of `/proc/net/softnet_stat` over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Softnet {
    /// Packets dropped because a CPU's input backlog (`netdev_max_backlog`) was full.
    pub dropped: u64,
    /// Times NET_RX ran out of budget with work left.
    pub time_squeeze: u64,
}

/// Everything the checks look at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostState {
    /// `proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// The [`SYSCTLS`].
    pub sysctls: BTreeMap<String, SysctlValue>,
    /// Online CPUs (the `/proc/interrupts` header).
    pub cpus: Vec<u32>,
    /// Hardware NICs.
    pub nics: Vec<Nic>,
    /// Softnet totals, when readable.
    pub softnet: Option<Softnet>,
    /// Whether the `fq` qdisc exists (loaded, built in, or installed as a
    /// module); `None` when that cannot be told from here.
    pub fq_available: Option<bool>,
}

impl HostState {
    /// Reads the host under `root` (`/` in production).
    pub fn read(root: &Path) -> Self {
        let sysctls = SYSCTLS
            .iter()
            .map(|k| ((*k).to_owned(), read_sysctl(root, k)))
            .collect();
        let kernel_release = read_trimmed(&root.join("proc/sys/kernel/osrelease"));
        let interrupts = fs::read_to_string(root.join("proc/interrupts"))
            .ok()
            .and_then(|t| parse_interrupts(&t).ok())
            .unwrap_or_default();
        let nics = read_nics(root, &interrupts);
        let softnet = fs::read_to_string(root.join("proc/net/softnet_stat"))
            .ok()
            .map(|t| parse_softnet(&t));
        let fq_available = fq_available(root, kernel_release.as_deref());
        Self {
            kernel_release,
            sysctls,
            cpus: interrupts.cpus,
            nics,
            softnet,
            fq_available,
        }
    }

    /// The value of sysctl `key`, if readable.
    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key)?.value.as_deref()
    }

    /// Whether sysctl `key` is writable here.
    pub fn writable(&self, key: &str) -> bool {
        self.sysctls.get(key).is_some_and(|s| s.writable)
    }

    /// Sysctl `key` as one number.
    pub fn sysctl_u64(&self, key: &str) -> Option<u64> {
        self.sysctl(key)?.trim().parse().ok()
    }

    /// Sysctl `key` as a list of numbers (`tcp_rmem`: min, default, max).
    pub fn sysctl_fields(&self, key: &str) -> Option<Vec<u64>> {
        self.sysctl(key)?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect()
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Sums the dropped (2nd) and time_squeeze (3rd) columns, which are hex.
pub fn parse_softnet(text: &str) -> Softnet {
    let mut s = Softnet::default();
    for line in text.lines() {
        let cols: Vec<u64> = line
            .split_whitespace()
            .map(|c| u64::from_str_radix(c, 16).unwrap_or(0))
            .collect();
        s.dropped += cols.get(1).copied().unwrap_or(0);
        s.time_squeeze += cols.get(2).copied().unwrap_or(0);
    }
    s
}

/// Hardware NICs under `root/sys/class/net`: every interface with a
/// `device` link (virtual ones — `lo`, veth, tun, ifb, bridges — have none).
fn read_nics(root: &Path, interrupts: &Interrupts) -> Vec<Nic> {
    let Ok(dir) = fs::read_dir(root.join("sys/class/net")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let class = root.join("sys/class/net").join(&name);
            let device = class.join("device");
            if !device.exists() {
                return None;
            }
            Some(Nic {
                irqs: nic_irqs(root, &name, &device, interrupts),
                rx_queues: rx_queues(&class),
                tx_queues: fs::read_dir(class.join("queues")).map_or(0, |d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
                        .count()
                }),
                name,
            })
        })
        .collect()
}

/// A NIC's interrupts. Two ways in, because neither alone finds them all:
/// the MSI vectors the PCI function lists in `msi_irqs` (for a virtio NIC,
/// the PCI function is the parent of the `virtioN` device), and
/// `/proc/interrupts` action names that carry the interface name
/// (`eth0-TxRx-0`) or the virtio device's (`virtio2-input.0`).
fn nic_irqs(root: &Path, name: &str, device: &Path, interrupts: &Interrupts) -> Vec<NicIrq> {
    let mut numbers = BTreeSet::new();
    let real = fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    let virtio = real
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|f| f.starts_with("virtio"));
    let mut msi_dirs = vec![real.join("msi_irqs")];
    if virtio.is_some() {
        if let Some(parent) = real.parent() {
            msi_dirs.push(parent.join("msi_irqs"));
        }
    }
    for dir in msi_dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            numbers.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
            );
        }
    }
    let named = |desc: &str| {
        desc.split(|c: char| c.is_whitespace() || c == ',')
            .any(|t| {
                t == name
                    || t.starts_with(&format!("{name}-"))
                    || t.starts_with(&format!("{name}@"))
                    || virtio
                        .as_deref()
                        .is_some_and(|v| t.starts_with(&format!("{v}-")))
            })
    };
    interrupts
        .lines
        .iter()
        .filter_map(|l| {
            let irq = l.label.parse::<u32>().ok()?;
            (numbers.contains(&irq) || named(&l.desc)).then(|| {
                let dir = root.join("proc/irq").join(irq.to_string());
                NicIrq {
                    irq,
                    name: action_name(&l.desc),
                    counts: l.counts.clone(),
                    affinity: read_trimmed(&dir.join("smp_affinity_list")),
                    effective: read_trimmed(&dir.join("effective_affinity_list")),
                }
            })
        })
        .collect()
}

/// The action name(s): what follows the `N-edge` / `-level` trigger field
/// (the chip name before it may itself contain spaces).
fn action_name(desc: &str) -> String {
    let fields: Vec<&str> = desc.split_whitespace().collect();
    match fields.iter().position(|f| {
        f.ends_with("-edge") || f.ends_with("-level") || *f == "edge" || *f == "level"
    }) {
        Some(i) if i + 1 < fields.len() => fields[i + 1..].join(" "),
        _ => fields.last().map_or_else(String::new, |f| (*f).to_owned()),
    }
}

fn rx_queues(class: &Path) -> Vec<RxQueue> {
    let Ok(dir) = fs::read_dir(class.join("queues")) else {
        return Vec::new();
    };
    let mut queues: Vec<RxQueue> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("rx-").then(|| RxQueue {
                rps_cpus: read_trimmed(&e.path().join("rps_cpus")),
                rps_flow_cnt: read_trimmed(&e.path().join("rps_flow_cnt"))
                    .and_then(|v| v.parse().ok()),
                name,
            })
        })
        .collect();
    queues.sort_by_key(|q| {
        q.name
            .trim_start_matches("rx-")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    queues
}

/// Whether the `fq` qdisc is there: loaded or built in with parameters
/// (`/sys/module/sch_fq`), listed in `modules.builtin`, or installed as a
/// module. `None` when there is no module tree to look in.
fn fq_available(root: &Path, release: Option<&str>) -> Option<bool> {
    if root.join("sys/module/sch_fq").exists() {
        return Some(true);
    }
    let modules = root.join("lib/modules").join(release?);
    if !modules.is_dir() {
        return None;
    }
    let listed = |file: &str| {
        fs::read_to_string(modules.join(file))
            .is_ok_and(|t| t.lines().any(|l| l.contains("/sch_fq.ko")))
    };
    Some(listed("modules.builtin") || listed("modules.dep"))
}

/// Whether a hex CPU mask (`rps_cpus`) selects no CPU.
pub fn mask_is_empty(mask: &str) -> bool {
    mask.trim().chars().all(|c| c == '0' || c == ',')
}

/// The hex mask, in the kernel's comma-separated 32-bit groups, that
/// selects `cpus`.
pub fn cpu_mask(cpus: &[u32]) -> String {
    let top = cpus.iter().copied().max().unwrap_or(0);
    let mut words = vec![0u32; top as usize / 32 + 1];
    for &c in cpus {
        words[c as usize / 32] |= 1 << (c % 32);
    }
    let mut groups = words.iter().rev().map(|w| format!("{w:08x}"));
    let first = groups.next().unwrap_or_default();
    let first = first.trim_start_matches('0');
    let first = if first.is_empty() { "0" } else { first };
    std::iter::once(first.to_owned())
        .chain(groups)
        .collect::<Vec<_>>()
        .join(",")
}
