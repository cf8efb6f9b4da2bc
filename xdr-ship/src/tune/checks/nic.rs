//! The receive side of the NIC: the per-CPU input backlog, how interrupts
//! spread over the CPUs, and RPS/RFS where queues are fewer than CPUs.
use super::{
    cpu_mask, mask_is_empty, rate, sysctl_cmd, unreadable, Check, HostState, Link, Nic, NicIrq,
    Role, Status, SysctlWrite, IRQ_MIN_TO_JUDGE, IRQ_ONE_CPU_SHARE, RFS_FLOW_ENTRIES,
};

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

/// Each CPU's share of `totals`, as `irq_spread` shows it.
fn spread_line(host: &HostState, totals: &[u64]) -> String {
    let total: u64 = totals.iter().sum();
    if total == 0 {
        return "no interrupts counted".to_owned();
    }
    let parts: Vec<String> = host
        .cpus
        .iter()
        .zip(totals)
        .map(|(cpu, n)| format!("cpu{cpu} {:.0}%", 100.0 * *n as f64 / total as f64))
        .collect();
    format!("{} of {total}", parts.join(" · "))
}

/// One line per interrupt of `busy`: its count and the CPU taking most.
fn irq_details(host: &HostState, busy: &[&NicIrq]) -> Vec<String> {
    busy.iter()
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
        .collect()
}

/// How a NIC's interrupts spread over the CPUs.
pub fn irq_spread(host: &HostState, nic: &Nic) -> Check {
    let totals = per_cpu_totals(host, nic);
    let total: u64 = totals.iter().sum();
    let share = |n: u64| n as f64 / total.max(1) as f64;
    let current = spread_line(host, &totals);
    let busy: Vec<_> = nic
        .irqs
        .iter()
        .filter(|i| i.counts.iter().sum::<u64>() > 0)
        .collect();
    let detail = irq_details(host, &busy);
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
