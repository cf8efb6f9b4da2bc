//! The checks against fixture trees: a stock host, a tuned one, NICs whose
//! interrupts land on one CPU or spread, RPS on or off.
//!
//! Why one long file: every test writes its host into a fixture tree with
//! the same few builders at the top; one check's behaviour per test.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::{
    apply,
    checks::{self, round_up_mib},
    host::{self, HostState},
    Check, Link, Report, Role, Status,
};

/// A fixture tree in a fresh temp dir, removed on drop.
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn empty() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "xdr-tune-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn sysctl(&self, key: &str, value: &str) -> &Self {
        self.file(
            &format!("proc/sys/{}", key.replace('.', "/")),
            &format!("{value}\n"),
        )
    }

    fn read_only(&self, key: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = host::sysctl_path(&self.root, key);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444)).unwrap();
        self
    }

    fn read_sysctl(&self, key: &str) -> String {
        host::read_sysctl(&self.root, key).value.unwrap()
    }

    /// A virtio NIC like this machine's: `device` points at `virtioN`,
    /// whose parent PCI function lists the MSI vectors.
    fn virtio_nic(&self, name: &str, virtio: &str, msi: &[u32], rps_cpus: &str) -> &Self {
        let pci = "sys/devices/pci0000:00/0000:00:03.0";
        for irq in msi {
            self.file(&format!("{pci}/msi_irqs/{irq}"), "msix\n");
        }
        std::fs::create_dir_all(self.root.join(format!("{pci}/{virtio}"))).unwrap();
        let class = self.root.join("sys/class/net").join(name);
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(
            self.root.join(format!("{pci}/{virtio}")),
            class.join("device"),
        )
        .unwrap();
        self.file(
            &format!("sys/class/net/{name}/queues/rx-0/rps_cpus"),
            rps_cpus,
        )
        .file(
            &format!("sys/class/net/{name}/queues/rx-0/rps_flow_cnt"),
            "0",
        )
        .file(&format!("sys/class/net/{name}/queues/tx-0/xps_cpus"), "0")
    }

    /// A NIC with `queues` rx queues, a plain `device` directory, and
    /// IRQs named after it (`eth0-TxRx-N`).
    fn multiqueue_nic(&self, name: &str, queues: u32) -> &Self {
        std::fs::create_dir_all(self.root.join(format!("sys/class/net/{name}/device"))).unwrap();
        for q in 0..queues {
            self.file(&format!("sys/class/net/{name}/queues/rx-{q}/rps_cpus"), "0")
                .file(&format!("sys/class/net/{name}/queues/tx-{q}/xps_cpus"), "0");
        }
        self
    }

    fn virtual_dev(&self, name: &str) -> &Self {
        self.file(&format!("sys/class/net/{name}/queues/rx-0/rps_cpus"), "0")
    }

    fn irq_affinity(&self, irq: u32, list: &str) -> &Self {
        self.file(&format!("proc/irq/{irq}/smp_affinity_list"), list)
            .file(&format!("proc/irq/{irq}/effective_affinity_list"), list)
    }

    fn host(&self) -> HostState {
        HostState::read(&self.root)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `/proc/interrupts` of two CPUs with this machine's virtio NIC
/// (`virtio2`: IRQs 37 config, 38 input, 39 output) and the given counts
/// for 38 and 39.
fn interrupts_2cpu(input: [u64; 2], output: [u64; 2]) -> String {
    format!(
        "           CPU0       CPU1       \n\
         \x20 26:          0          7  IO-APIC   4-edge      ttyS0\n\
         \x20 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n\
         \x20 38: {:>10} {:>10} PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
         \x20 39: {:>10} {:>10} PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
         \x20 41:       1316          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx\n\
         NMI:          0          0   Non-maskable interrupts\n\
         LOC:      39882      41549   Local timer interrupts\n\
         ERR:          0\n\
         MIS:          0\n",
        input[0], input[1], output[0], output[1]
    )
}

/// A stock host: kernel defaults, cubic, RPS off, one virtio NIC whose
/// receive interrupts all land on CPU1.
fn stock() -> Fixture {
    let f = Fixture::empty();
    f.file("proc/sys/kernel/osrelease", "6.18.44-fc-v782\n")
        .sysctl("net.core.rmem_max", "212992")
        .sysctl("net.core.wmem_max", "212992")
        .sysctl("net.ipv4.tcp_rmem", "4096\t131072\t6291456")
        .sysctl("net.ipv4.tcp_wmem", "4096\t16384\t4194304")
        .sysctl("net.ipv4.tcp_adv_win_scale", "1")
        .sysctl("net.ipv4.tcp_window_scaling", "1")
        .sysctl("net.ipv4.tcp_moderate_rcvbuf", "1")
        .sysctl("net.ipv4.tcp_congestion_control", "cubic")
        .sysctl(
            "net.ipv4.tcp_available_congestion_control",
            "reno cubic bbr",
        )
        .sysctl("net.ipv4.tcp_allowed_congestion_control", "reno cubic")
        .sysctl("net.core.default_qdisc", "fq_codel")
        .sysctl("net.ipv4.tcp_slow_start_after_idle", "1")
        .sysctl("net.core.netdev_max_backlog", "1000")
        .sysctl("net.core.rps_sock_flow_entries", "0")
        .file(
            "proc/interrupts",
            &interrupts_2cpu([0, 90_000], [85_000, 0]),
        )
        .file(
            "proc/net/softnet_stat",
            "00000014 00000000 00000000 00000000\n0000277a 00000000 00000001 00000000\n",
        )
        .virtio_nic("eth0", "virtio2", &[37, 38, 39], "0")
        .virtual_dev("ifb0")
        .virtual_dev("lo")
        .irq_affinity(38, "1")
        .irq_affinity(39, "0");
    f
}

/// The stock host after the advice: every check should pass.
fn tuned() -> Fixture {
    let f = stock();
    f.sysctl("net.core.rmem_max", "15728640")
        .sysctl("net.core.wmem_max", "15728640")
        .sysctl("net.ipv4.tcp_rmem", "4096 131072 31457280")
        .sysctl("net.ipv4.tcp_wmem", "4096 16384 31457280")
        .sysctl("net.ipv4.tcp_congestion_control", "bbr")
        .sysctl("net.core.default_qdisc", "fq")
        .sysctl("net.ipv4.tcp_slow_start_after_idle", "0")
        .sysctl("net.core.rps_sock_flow_entries", "32768")
        .file("sys/class/net/eth0/queues/rx-0/rps_cpus", "3")
        .file("sys/class/net/eth0/queues/rx-0/rps_flow_cnt", "32768")
        .file(
            "proc/interrupts",
            &interrupts_2cpu([40_000, 50_000], [45_000, 40_000]),
        );
    f
}

fn link_156ms_100mb() -> Link {
    Link::new(Duration::from_millis(156), 100_000_000)
}

fn check(r: &Report, setting: &str) -> Check {
    r.checks
        .iter()
        .find(|c| c.setting == setting)
        .unwrap_or_else(|| panic!("no check {setting} in {:#?}", r.checks))
        .clone()
}

fn report(f: &Fixture) -> Report {
    Report::new(&f.host(), link_156ms_100mb(), Role::Both)
}

#[test]
fn bdp_is_bandwidth_times_rtt() {
    assert_eq!(link_156ms_100mb().bdp_bytes(), 15_600_000);
    let bits = crate::lab::config::parse_bandwidth("800Mbit/s").unwrap();
    assert_eq!(
        Link::new(Duration::from_millis(156), bits).bdp_bytes(),
        15_600_000
    );
    assert_eq!(
        Link::new(Duration::from_micros(1500), 1_000_000_000).bdp_bytes(),
        1_500_000
    );
}

#[test]
fn figures_round_up_to_whole_mib() {
    assert_eq!(round_up_mib(15_600_000), 15 << 20);
    assert_eq!(round_up_mib(31_200_000), 30 << 20);
    assert_eq!(round_up_mib(1 << 20), 1 << 20);
    assert_eq!(round_up_mib((1 << 20) + 1), 2 << 20);
}

#[test]
fn from_linux_6_6_the_window_is_half_the_buffer_whatever_adv_win_scale_says() {
    let f = stock();
    f.sysctl("net.ipv4.tcp_adv_win_scale", "2");
    let rule = checks::window_rule(&f.host());
    assert!(rule.per_socket);
    assert_eq!(rule.percent(), 50.0);
    assert_eq!(rule.buffer_for(15_600_000), 31_200_000);
    assert_eq!(
        check(&report(&f), "net.ipv4.tcp_adv_win_scale").status,
        Status::Info
    );
}

#[test]
fn before_linux_6_6_the_window_follows_adv_win_scale() {
    let f = stock();
    f.file("proc/sys/kernel/osrelease", "5.15.0-91-generic\n")
        .sysctl("net.ipv4.tcp_adv_win_scale", "2");
    let rule = checks::window_rule(&f.host());
    assert!(!rule.per_socket);
    assert_eq!(rule.percent(), 75.0);
    assert_eq!(rule.buffer_for(15_600_000), 20_800_000);
    f.sysctl("net.ipv4.tcp_adv_win_scale", "-2");
    assert_eq!(checks::window_rule(&f.host()).percent(), 25.0);
    // With a 75% window, tcp_rmem needs 20.8 MB → 20 MiB.
    f.sysctl("net.ipv4.tcp_adv_win_scale", "2");
    let c = check(&report(&f), "net.ipv4.tcp_rmem");
    assert_eq!(c.write.unwrap().value, format!("4096 131072 {}", 20 << 20));
}

#[test]
fn rmem_max_must_reach_the_bdp_because_the_kernel_doubles_an_so_rcvbuf_request() {
    let f = stock();
    let c = check(&report(&f), "net.core.rmem_max");
    assert_eq!(c.status, Status::Change);
    // 15.6 MB request × 2 (doubling) × 50% (window) = BDP; the seed's 15 MiB.
    assert_eq!(c.write.as_ref().unwrap().value, "15728640");
    assert_eq!(c.commands, ["sysctl -w net.core.rmem_max=15728640"]);
    assert!(c.why.contains("2 × 212992"), "{}", c.why);
    // 2 × 212992 × 50% = 212992 bytes of window → 1.4 MB/s at 156 ms.
    assert!(c.why.contains("1.4 MB/s"), "{}", c.why);
    f.sysctl("net.core.rmem_max", "15728640");
    assert_eq!(check(&report(&f), "net.core.rmem_max").status, Status::Ok);
    f.sysctl("net.core.rmem_max", "15000000");
    assert_eq!(
        check(&report(&f), "net.core.rmem_max").status,
        Status::Change
    );
}

#[test]
fn wmem_max_at_the_seeds_5_mib_is_short_of_a_15_6_mb_bdp() {
    let f = stock();
    f.sysctl("net.core.wmem_max", &(5u64 << 20).to_string());
    let c = check(&report(&f), "net.core.wmem_max");
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.write.unwrap().value, (15u64 << 20).to_string());
    // 5 MiB in flight / 156 ms.
    assert!(c.why.contains("33.6 MB/s"), "{}", c.why);
}

#[test]
fn tcp_rmem_max_must_be_twice_the_bdp_and_the_write_keeps_min_and_default() {
    let f = stock();
    let c = check(&report(&f), "net.ipv4.tcp_rmem");
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.write.as_ref().unwrap().value, "4096 131072 31457280");
    assert_eq!(
        c.commands,
        ["sysctl -w net.ipv4.tcp_rmem='4096 131072 31457280'"]
    );
    assert_eq!(c.current, "4096 131072 6291456");
    f.sysctl("net.ipv4.tcp_rmem", "4096 131072 33554432");
    assert_eq!(check(&report(&f), "net.ipv4.tcp_rmem").status, Status::Ok);
}

#[test]
fn tcp_wmem_max_must_be_twice_the_bdp() {
    let f = stock();
    let c = check(&report(&f), "net.ipv4.tcp_wmem");
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.write.unwrap().value, "4096 16384 31457280");
    // 4 MiB max → about 2 MiB in flight → 13.4 MB/s.
    assert!(c.why.contains("13.4 MB/s"), "{}", c.why);
}

#[test]
fn window_scaling_and_receive_autotuning_must_be_on() {
    let f = stock();
    assert_eq!(
        check(&report(&f), "net.ipv4.tcp_window_scaling").status,
        Status::Ok
    );
    f.sysctl("net.ipv4.tcp_window_scaling", "0")
        .sysctl("net.ipv4.tcp_moderate_rcvbuf", "0");
    let r = report(&f);
    let ws = check(&r, "net.ipv4.tcp_window_scaling");
    assert_eq!(ws.status, Status::Change);
    assert_eq!(ws.write.unwrap().value, "1");
    assert!(ws.why.contains("0.42 MB/s"), "{}", ws.why);
    assert_eq!(
        check(&r, "net.ipv4.tcp_moderate_rcvbuf").status,
        Status::Change
    );
}

#[test]
fn cubic_with_bbr_available_is_advised_bbr_with_the_mathis_bound_but_not_applied() {
    let f = stock();
    let c = check(&report(&f), "net.ipv4.tcp_congestion_control");
    assert_eq!(c.status, Status::Change);
    assert_eq!(
        c.commands,
        ["sysctl -w net.ipv4.tcp_congestion_control=bbr"]
    );
    assert!(c.write.is_none() && c.not_applied.is_some());
    // 1448 B / 156 ms × √1.5 / √0.001 = 0.36 MB/s.
    assert!(c.why.contains("0.36 MB/s"), "{}", c.why);
    assert!(
        c.why.contains("tcp_allowed_congestion_control"),
        "{}",
        c.why
    );
    let mathis = checks::mathis_bytes_per_s(&link_156ms_100mb(), 0.001);
    assert!((mathis - 359_480.0).abs() < 100.0, "{mathis}");

    f.sysctl("net.ipv4.tcp_available_congestion_control", "reno cubic");
    let c = check(&report(&f), "net.ipv4.tcp_congestion_control");
    assert_eq!(c.status, Status::Info);
    assert!(c.why.contains("modprobe tcp_bbr"), "{}", c.why);

    f.sysctl("net.ipv4.tcp_congestion_control", "bbr");
    assert_eq!(
        check(&report(&f), "net.ipv4.tcp_congestion_control").status,
        Status::Ok
    );
}

#[test]
fn fq_is_advised_with_bbr_only_where_the_fq_qdisc_exists() {
    let f = stock();
    // No module tree in the fixture: cannot tell → info, never a change.
    let c = check(&report(&f), "net.core.default_qdisc");
    assert_eq!(c.status, Status::Info);
    assert!(c.why.contains("cannot be told"), "{}", c.why);

    std::fs::create_dir_all(f.root.join("sys/module/sch_fq")).unwrap();
    let c = check(&report(&f), "net.core.default_qdisc");
    assert_eq!(c.status, Status::Change);
    assert_eq!(
        c.commands,
        [
            "sysctl -w net.core.default_qdisc=fq",
            "tc qdisc replace dev eth0 root fq"
        ]
    );

    f.sysctl("net.core.default_qdisc", "fq");
    assert_eq!(
        check(&report(&f), "net.core.default_qdisc").status,
        Status::Ok
    );
}

#[test]
fn fq_is_missing_when_the_module_tree_does_not_list_it() {
    let f = stock();
    f.file(
        "lib/modules/6.18.44-fc-v782/modules.dep",
        "kernel/net/sched/sch_htb.ko:\n",
    )
    .file(
        "lib/modules/6.18.44-fc-v782/modules.builtin",
        "kernel/net/ipv4/tcp_bbr.ko\n",
    );
    assert_eq!(f.host().fq_available, Some(false));
    f.file(
        "lib/modules/6.18.44-fc-v782/modules.builtin",
        "kernel/net/sched/sch_fq.ko\n",
    );
    assert_eq!(f.host().fq_available, Some(true));
}

#[test]
fn slow_start_after_idle_on_is_a_change_that_apply_leaves_to_the_operator() {
    let f = stock();
    let c = check(&report(&f), "net.ipv4.tcp_slow_start_after_idle");
    assert_eq!(c.status, Status::Change);
    assert!(c.write.is_none());
    assert!(c.not_applied.as_deref().unwrap().contains("never lowers"));
    // 15.6 MB / (10 × 1448 B) = 1077 → 11 doublings → 1.7 s at 156 ms.
    assert!(c.why.contains("11 RTTs (1.7 s)"), "{}", c.why);
}

#[test]
fn netdev_max_backlog_covers_10_ms_of_packets_and_doubles_after_drops() {
    let f = stock();
    assert_eq!(
        check(&report(&f), "net.core.netdev_max_backlog").status,
        Status::Ok
    );
    let fast = Link::new(Duration::from_millis(156), 1_000_000_000);
    let c = check(
        &Report::new(&f.host(), fast, Role::Both),
        "net.core.netdev_max_backlog",
    );
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.write.unwrap().value, "7000");
    f.file(
        "proc/net/softnet_stat",
        "0000277a 00000005 00000001 00000000\n",
    );
    let c = check(&report(&f), "net.core.netdev_max_backlog");
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.write.unwrap().value, "2000");
    assert!(c.why.contains("5 so far"), "{}", c.why);
}

#[test]
fn a_virtio_nic_is_found_with_its_msi_irqs_and_virtual_devices_are_skipped() {
    let f = stock();
    let h = f.host();
    assert_eq!(h.cpus, [0, 1]);
    assert_eq!(h.nics.len(), 1, "{:#?}", h.nics);
    let nic = &h.nics[0];
    assert_eq!(nic.name, "eth0");
    let irqs: Vec<(u32, &str)> = nic.irqs.iter().map(|i| (i.irq, i.name.as_str())).collect();
    assert_eq!(
        irqs,
        [
            (37, "virtio2-config"),
            (38, "virtio2-input.0"),
            (39, "virtio2-output.0")
        ]
    );
    assert_eq!(nic.irqs[1].counts, [0, 90_000]);
    assert_eq!(nic.irqs[1].affinity.as_deref(), Some("1"));
    assert_eq!(nic.rx_queues.len(), 1);
    assert_eq!(nic.tx_queues, 1);
}

#[test]
fn a_single_queue_nic_spread_over_both_cpus_is_ok() {
    // Input on CPU1, output on CPU0: 51% / 49% of the NIC's interrupts.
    let c = check(&report(&stock()), "eth0 interrupts");
    assert_eq!(c.status, Status::Ok, "{c:#?}");
    assert_eq!(c.current, "cpu0 49% · cpu1 51% of 175000");
    assert!(
        c.why
            .contains("IRQ 38 virtio2-input.0: 90000, 100% on cpu1"),
        "{}",
        c.why
    );
}

#[test]
fn a_nic_with_its_interrupts_on_one_cpu_is_a_finding_and_rps_is_the_remedy() {
    let f = stock();
    f.file(
        "proc/interrupts",
        &interrupts_2cpu([0, 90_000], [0, 85_000]),
    );
    let c = check(&report(&f), "eth0 interrupts");
    assert_eq!(c.status, Status::Change);
    assert_eq!(c.current, "cpu0 0% · cpu1 100% of 175000");
    // Two busy IRQs: one per CPU.
    assert_eq!(
        c.commands,
        [
            "echo 0 > /proc/irq/38/smp_affinity_list",
            "echo 1 > /proc/irq/39/smp_affinity_list"
        ]
    );
    f.file("proc/interrupts", &interrupts_2cpu([0, 90_000], [0, 0]));
    let c = check(&report(&f), "eth0 interrupts");
    assert_eq!(c.status, Status::Change);
    assert!(c.why.contains("cannot be split"), "{}", c.why);
    assert_eq!(
        c.commands[0],
        "echo 3 > /sys/class/net/eth0/queues/rx-0/rps_cpus"
    );
}

#[test]
fn a_multiqueue_nic_named_in_proc_interrupts_all_on_cpu0_gets_its_queues_spread() {
    let f = stock();
    std::fs::remove_dir_all(f.root.join("sys/class/net/eth0")).unwrap();
    f.multiqueue_nic("ens5", 4).file(
        "proc/interrupts",
        "      CPU0  CPU1  CPU2  CPU3\n\
         \x2050: 5000 0 0 0 IR-PCI-MSI 524288-edge ens5-TxRx-0\n\
         \x2051: 5000 0 0 0 IR-PCI-MSI 524289-edge ens5-TxRx-1\n\
         \x2052: 5000 0 0 0 IR-PCI-MSI 524290-edge ens5-TxRx-2\n\
         \x2053: 5000 10 0 0 IR-PCI-MSI 524291-edge ens5-TxRx-3\n\
         \x2054: 7 0 0 0 IR-PCI-MSI 524292-edge ens5\n\
         \x2060: 0 999 0 0 IR-PCI-MSI 1-edge ens50-TxRx-0\n",
    );
    let r = report(&f);
    let c = check(&r, "ens5 interrupts");
    assert_eq!(c.status, Status::Change);
    assert_eq!(
        c.commands,
        [
            "echo 0 > /proc/irq/50/smp_affinity_list",
            "echo 1 > /proc/irq/51/smp_affinity_list",
            "echo 2 > /proc/irq/52/smp_affinity_list",
            "echo 3 > /proc/irq/53/smp_affinity_list",
            "echo 0 > /proc/irq/54/smp_affinity_list",
        ]
    );
    // A queue per CPU: RSS spreads flows, RPS is not needed.
    assert_eq!(check(&r, "ens5 RPS/RFS").status, Status::Ok);
}

#[test]
fn too_few_interrupts_to_judge_is_info() {
    let f = stock();
    f.file("proc/interrupts", &interrupts_2cpu([0, 300], [0, 200]));
    assert_eq!(check(&report(&f), "eth0 interrupts").status, Status::Info);
}

#[test]
fn one_rx_queue_for_two_cpus_with_rps_off_gets_the_exact_rps_and_rfs_lines() {
    let f = stock();
    let c = check(&report(&f), "eth0 RPS/RFS");
    assert_eq!(c.status, Status::Change);
    assert_eq!(
        c.commands,
        [
            "echo 3 > /sys/class/net/eth0/queues/rx-0/rps_cpus",
            "sysctl -w net.core.rps_sock_flow_entries=32768",
            "echo 32768 > /sys/class/net/eth0/queues/rx-0/rps_flow_cnt",
        ]
    );
    // A mask written in 32-bit groups, all zero, is still off.
    f.file(
        "sys/class/net/eth0/queues/rx-0/rps_cpus",
        "00000000,00000000",
    );
    assert_eq!(check(&report(&f), "eth0 RPS/RFS").status, Status::Change);
    f.file("sys/class/net/eth0/queues/rx-0/rps_cpus", "3");
    let c = check(&report(&f), "eth0 RPS/RFS");
    assert_eq!(c.status, Status::Info, "RPS on, RFS off: {c:#?}");
    f.sysctl("net.core.rps_sock_flow_entries", "32768")
        .file("sys/class/net/eth0/queues/rx-0/rps_flow_cnt", "32768");
    assert_eq!(check(&report(&f), "eth0 RPS/RFS").status, Status::Ok);
}

#[test]
fn cpu_masks_are_hex_in_32_bit_groups() {
    assert_eq!(host::cpu_mask(&[0, 1]), "3");
    assert_eq!(host::cpu_mask(&[0, 1, 2, 3]), "f");
    assert_eq!(host::cpu_mask(&(0..40).collect::<Vec<_>>()), "ff,ffffffff");
    assert_eq!(host::cpu_mask(&[33]), "2,00000000");
    assert!(host::mask_is_empty("00000000,00000000"));
    assert!(!host::mask_is_empty("00000001,00000000"));
}

#[test]
fn proc_interrupts_lines_with_fewer_counts_than_cpus_parse() {
    let t = host::parse_interrupts(&interrupts_2cpu([1, 2], [3, 4])).unwrap();
    assert_eq!(t.cpus, [0, 1]);
    let err = t.lines.iter().find(|l| l.label == "ERR").unwrap();
    assert_eq!(err.counts, [0]);
    let loc = t.lines.iter().find(|l| l.label == "LOC").unwrap();
    assert_eq!(loc.desc, "Local timer interrupts");
    assert!(host::parse_interrupts("").is_err());
}

#[test]
fn a_child_namespace_without_host_wide_sysctls_gets_info_not_change() {
    let f = stock();
    for k in [
        "net.core.netdev_max_backlog",
        "net.core.default_qdisc",
        "net.core.rps_sock_flow_entries",
    ] {
        std::fs::remove_file(host::sysctl_path(&f.root, k)).unwrap();
    }
    std::fs::remove_dir_all(f.root.join("sys/class/net/eth0")).unwrap();
    let r = report(&f);
    assert_eq!(
        check(&r, "net.core.netdev_max_backlog").status,
        Status::Info
    );
    assert_eq!(check(&r, "net.core.default_qdisc").status, Status::Info);
    assert_eq!(check(&r, "network devices").status, Status::Info);
    // rmem_max read-only: still a change, but --apply will not write it.
    f.read_only("net.core.rmem_max");
    let c = check(&report(&f), "net.core.rmem_max");
    assert_eq!(c.status, Status::Change);
    assert!(c.not_applied.unwrap().contains("initial namespace"));
}

#[test]
fn a_stock_host_exits_2_and_a_tuned_one_0() {
    let r = report(&stock());
    assert_eq!(r.exit_code(), 2);
    let t = report(&tuned());
    let changes: Vec<_> = t
        .checks
        .iter()
        .filter(|c| c.status == Status::Change)
        .collect();
    assert!(changes.is_empty(), "{changes:#?}");
    assert_eq!(t.exit_code(), 0);
    assert!(t.render_table().contains("Every check passes"));
}

#[test]
fn the_role_picks_the_side_of_the_link_checked() {
    let f = stock();
    let sender = Report::new(&f.host(), link_156ms_100mb(), Role::Sender);
    let names: Vec<&str> = sender.checks.iter().map(|c| c.setting.as_str()).collect();
    assert!(names.contains(&"net.core.wmem_max") && names.contains(&"net.ipv4.tcp_wmem"));
    assert!(!names.contains(&"net.core.rmem_max") && !names.contains(&"eth0 RPS/RFS"));
    assert!(
        names.contains(&"net.ipv4.tcp_window_scaling"),
        "both ends negotiate it"
    );
    let receiver = Report::new(&f.host(), link_156ms_100mb(), Role::Receiver);
    let names: Vec<&str> = receiver.checks.iter().map(|c| c.setting.as_str()).collect();
    assert!(names.contains(&"net.ipv4.tcp_rmem") && names.contains(&"eth0 RPS/RFS"));
    assert!(!names.contains(&"net.ipv4.tcp_congestion_control"));
}

#[test]
fn the_table_lists_every_check_and_the_commands() {
    let t = report(&stock()).render_table();
    assert!(t.contains("BDP 15.6 MB (15600000 bytes)"), "{t}");
    assert!(t.contains("SETTING"), "{t}");
    assert!(t.contains("exit code 2"), "{t}");
    assert!(t.contains("  sysctl -w net.core.rmem_max=15728640"), "{t}");
    assert!(t.contains("# net.core.rmem_max — --apply does this"), "{t}");
    assert!(t.contains("not done by --apply"), "{t}");
}

#[test]
fn only_raises_count_as_raises() {
    assert!(apply::raises("212992", "15728640"));
    assert!(apply::raises("4096 131072 6291456", "4096 131072 31457280"));
    assert!(!apply::raises("15728640", "212992"));
    assert!(!apply::raises("4096 131072 6291456", "4096 65536 31457280"));
    assert!(!apply::raises("1000", "1000"));
    assert!(!apply::raises("cubic", "bbr"));
    assert!(!apply::raises("1 2", "1 2 3"));
}

#[test]
fn apply_raises_writable_sysctls_reports_reverts_and_skips_read_only_ones() {
    let f = stock();
    f.read_only("net.core.wmem_max");
    let r = report(&f);
    let out = apply::apply(&f.root, &r);
    let keys: Vec<&str> = out.applied.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "net.core.rmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem"
        ]
    );
    assert_eq!(f.read_sysctl("net.core.rmem_max"), "15728640");
    assert_eq!(f.read_sysctl("net.ipv4.tcp_rmem"), "4096 131072 31457280");
    assert_eq!(
        f.read_sysctl("net.core.wmem_max"),
        "212992",
        "read-only: untouched"
    );
    assert_eq!(f.read_sysctl("net.ipv4.tcp_slow_start_after_idle"), "1");
    assert_eq!(f.read_sysctl("net.ipv4.tcp_congestion_control"), "cubic");
    let rmem = &out.applied[1];
    assert_eq!(rmem.old, "4096 131072 6291456");
    assert_eq!(rmem.new, "4096 131072 31457280");
    assert_eq!(
        rmem.revert,
        "sysctl -w net.ipv4.tcp_rmem='4096 131072 6291456'"
    );
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].key, "net.core.wmem_max");
    assert!(out.skipped[0].reason.contains("read-only"));
    let text = out.render();
    assert!(
        text.contains("revert: sysctl -w net.core.rmem_max=212992"),
        "{text}"
    );
}

#[test]
fn apply_never_lowers_a_value_raised_since_the_check() {
    let f = stock();
    let r = report(&f);
    f.sysctl("net.ipv4.tcp_rmem", "4096 131072 67108864");
    let out = apply::apply(&f.root, &r);
    assert_eq!(f.read_sysctl("net.ipv4.tcp_rmem"), "4096 131072 67108864");
    let s = out
        .skipped
        .iter()
        .find(|s| s.key == "net.ipv4.tcp_rmem")
        .unwrap();
    assert!(s.reason.contains("never lowered"), "{}", s.reason);
}

#[test]
fn the_revert_script_undoes_the_changes_last_first() {
    let f = stock();
    let out = apply::apply(&f.root, &report(&f));
    let path = f.root.join("revert.sh");
    apply::write_revert_script(&path, &out).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("sysctl")).collect();
    assert_eq!(lines.len(), out.applied.len());
    assert!(
        lines[0].starts_with(&out.applied.last().unwrap().revert),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable");
}

#[test]
fn fixture_roots_are_honoured_not_the_real_proc() {
    // An empty tree reads as nothing, whatever this machine has.
    let f = Fixture::empty();
    let h = f.host();
    assert!(h.cpus.is_empty() && h.nics.is_empty() && h.kernel_release.is_none());
    assert!(h.sysctls.values().all(|s| s.value.is_none()));
}
