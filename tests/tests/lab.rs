//! The WAN lab for real: namespaces, TUN devices in GSO mode, the delay
//! line, and the CLI, at reduced scale (40 ms, 20 MB/s) so each test is
//! short. Every test uses its own lab name, sends traffic only between the
//! namespaces it created, and ends by checking that nothing is left: no
//! namespace, no TUN device, no status file, no child process.
use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdr_ship::lab::{netns, status, Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{
    connect_near, drain_one, listen_far_on, require_root, run_bounded, xdr_ship_bin, ChildGuard,
};

const RTT: Duration = Duration::from_millis(40);
const RATE: u64 = 20_000_000;

/// A lab name unique to this test and process.
fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

fn small_link() -> LinkConfig {
    LinkConfig::new(RTT, RATE)
}

/// A listener on any port of the far side.
fn listen_far(lab: &Lab) -> TcpListener {
    listen_far_on(lab, 0)
}

/// Starts `xdr-ship lab up` (40 ms, 20 MB/s) and waits until it has
/// written its status file, i.e. the link is up.
fn start_lab_up(name: &str, stdout: Stdio) -> ChildGuard {
    let mut up = ChildGuard(
        Command::new(xdr_ship_bin())
            .args([
                "lab",
                "up",
                "--name",
                name,
                "--rtt",
                "40ms",
                "--bandwidth",
                "20MB/s",
            ])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("start xdr-ship lab up"),
    );
    let status_file = status::path(name);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !status_file.exists() {
        assert!(
            Instant::now() < deadline,
            "lab up did not write {status_file:?}"
        );
        assert!(
            up.0.try_wait().expect("try_wait").is_none(),
            "lab up exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up
}

/// Direct children of this process (the test binary), zombies included.
fn child_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                    .is_some_and(|ppid| ppid == me)
            })
        })
        .collect()
}

/// Asserts that lab `name` left nothing behind (polling up to `grace`).
fn assert_nothing_left(name: &str, grace: Duration) {
    let near = format!("xdr-{name}-near");
    let far = format!("xdr-{name}-far");
    let status = status::path(name);
    let deadline = Instant::now() + grace;
    loop {
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        let mut left = Vec::new();
        if list.contains(&near) || list.contains(&far) {
            left.push(format!("namespaces in `ip netns list`: {list}"));
        }
        for ns in [&near, &far] {
            if Path::new("/run/netns").join(ns).exists() {
                left.push(format!("/run/netns/{ns}"));
            }
        }
        if Path::new("/sys/class/net/xdr0").exists() {
            left.push("/sys/class/net/xdr0 in the root namespace".to_owned());
        }
        if status.exists() {
            left.push(status.display().to_string());
        }
        let kids = child_pids();
        if !kids.is_empty() {
            left.push(format!("child processes {kids:?}"));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lab {name} left behind: {}",
            left.join(", ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `pid` listens on TCP `port` (read from its own view of /proc/net/tcp).
fn wait_listening(pid: u32, port: u16, timeout: Duration) {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + timeout;
    loop {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        if tcp.contains(&needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} did not listen on {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcp_info_rtt_across_the_link_is_the_configured_rtt() {
    require_root();
    let name = unique("rtt");
    {
        let lab = Lab::up(&name, small_link(), LabOptions::default()).expect("lab up");
        let listener = listen_far(&lab);
        let to = listener.local_addr().expect("listener addr");
        let reader = drain_one(listener, Duration::from_secs(10));
        let mut sock = connect_near(&lab, to);
        sock.set_nodelay(true).expect("nodelay");
        // Light traffic (about 4 MB/s against a 20 MB/s line) in small
        // bursts (0.8 ms on the wire): no queue builds, so the smoothed RTT
        // is the path's own.
        let chunk = vec![0x5au8; 16 << 10];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            sock.write_all(&chunk).expect("write");
            std::thread::sleep(Duration::from_millis(4));
        }
        let info = xdr_ship::net::tcp_info(&sock).expect("TCP_INFO");
        let stats = lab.stats();
        drop(sock);
        let got = reader.join().expect("reader");
        let rtt_ms = f64::from(info.rtt_us) / 1000.0;
        println!(
            "TCP_INFO rtt {rtt_ms:.2} ms (var {:.2} ms), line measured {:?}, path {:?}, {} bytes",
            f64::from(info.rttvar_us) / 1000.0,
            stats.measured_rtt,
            stats.path_rtt,
            got
        );
        assert!(got > 5 << 20, "only {got} bytes crossed the link");
        let want = RTT.as_secs_f64() * 1000.0;
        assert!(
            (rtt_ms - want).abs() <= want * 0.10,
            "TCP_INFO rtt {rtt_ms:.2} ms is not within ±10% of {want} ms"
        );
        assert_eq!(
            stats.near_to_far.drops_queue + stats.near_to_far.drops_loss,
            0
        );
        lab.down().expect("teardown");
    }
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn iperf3_goodput_reaches_80_percent_of_the_line() {
    require_root();
    let name = unique("iperf");
    {
        let lab = Lab::up(&name, small_link(), LabOptions::default()).expect("lab up");
        let far = lab.addr(Side::Far).to_string();
        let server = ChildGuard(
            lab.command(Side::Far, "iperf3")
                .args(["-s", "-1", "-p", "5201", "-B", &far])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start iperf3 -s in far (apt-get install iperf3)"),
        );
        wait_listening(server.0.id(), 5201, Duration::from_secs(5));
        let (ok, out, err) = run_bounded(
            lab.command(Side::Near, "iperf3")
                .args(["-c", &far, "-p", "5201", "-t", "8", "-J"]),
            Duration::from_secs(30),
        );
        assert!(ok, "iperf3 client failed: {err}\n{out}");
        let json: serde_json::Value = serde_json::from_str(&out).expect("iperf3 -J output");
        let bps = json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("end.sum_received.bits_per_second");
        let retrans = json["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        let stats = lab.stats();
        let goodput = bps / 8.0;
        println!(
            "iperf3 goodput {:.2} MB/s ({:.0} Mbit/s) = {:.0}% of {} MB/s, {retrans} retransmits; \
             line: {} segments, {} queue drops, {} splits, cpu {:?}, measured rtt {:?}",
            goodput / 1e6,
            bps / 1e6,
            goodput / RATE as f64 * 100.0,
            RATE / 1_000_000,
            stats.near_to_far.segments_out,
            stats.near_to_far.drops_queue,
            stats.near_to_far.splits,
            stats.cpu_time(),
            stats.measured_rtt,
        );
        assert!(
            goodput >= 0.8 * RATE as f64,
            "goodput {:.2} MB/s is below 80% of {} MB/s",
            goodput / 1e6,
            RATE / 1_000_000
        );
        assert_eq!(
            stats.near_to_far.write_errors, 0,
            "the far TUN refused frames"
        );
        drop(server);
        lab.down().expect("teardown");
    }
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn one_percent_loss_shows_retransmits_in_tcp_info() {
    require_root();
    let name = unique("loss");
    {
        let mut link = small_link();
        link.loss = 0.01;
        let lab = Lab::up(&name, link, LabOptions::default()).expect("lab up");
        let listener = listen_far(&lab);
        let to = listener.local_addr().expect("listener addr");
        let reader = drain_one(listener, Duration::from_secs(20));
        let mut sock = connect_near(&lab, to);
        sock.set_write_timeout(Some(Duration::from_secs(20)))
            .expect("write timeout");
        let chunk = vec![0xa5u8; 256 << 10];
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < 40 << 20 && t0.elapsed() < Duration::from_secs(15) {
            sock.write_all(&chunk).expect("write");
            sent += chunk.len() as u64;
        }
        let info = xdr_ship::net::tcp_info(&sock).expect("TCP_INFO");
        let stats = lab.stats();
        drop(sock);
        let got = reader.join().expect("reader");
        println!(
            "sent {sent} bytes, received {got}; tcpi_total_retrans {}, line drops by loss {} \
             of {} segments, {} super-packets split",
            info.total_retrans,
            stats.near_to_far.drops_loss,
            stats.near_to_far.segments_in,
            stats.near_to_far.splits
        );
        assert_eq!(got, sent, "TCP must deliver everything despite loss");
        assert_eq!(
            stats.near_to_far.write_errors, 0,
            "the far TUN refused split pieces"
        );
        assert!(info.total_retrans > 0, "no retransmits at 1% loss");
        assert!(stats.near_to_far.drops_loss > 0, "the line dropped nothing");
        let rate = stats.near_to_far.drops_loss as f64 / stats.near_to_far.segments_in as f64;
        assert!(
            (0.004..0.02).contains(&rate),
            "loss rate {rate:.4} is far from 1%: drops are not per segment"
        );
        lab.down().expect("teardown");
    }
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn loss_confined_to_one_port_spares_the_other_connections() {
    require_root();
    let name = unique("lossport");
    {
        let (lossy_port, clean_port) = (15001, 15002);
        let mut link = small_link();
        link.loss = 0.02;
        link.loss_ports = vec![lossy_port];
        let lab = Lab::up(&name, link, LabOptions::default()).expect("lab up");
        let mut flows = Vec::new();
        for port in [lossy_port, clean_port] {
            let listener = listen_far_on(&lab, port);
            let to = listener.local_addr().expect("listener addr");
            let reader = drain_one(listener, Duration::from_secs(20));
            let sock = connect_near(&lab, to);
            sock.set_write_timeout(Some(Duration::from_secs(20)))
                .expect("write timeout");
            flows.push((port, sock, reader));
        }
        // Paced far below the line (about 2 MB/s per flow), so the queue
        // never tail-drops: only the configured loss can cost a segment.
        let chunk = vec![0x5au8; 64 << 10];
        for _ in 0..(4 << 20) / chunk.len() {
            for (_, sock, _) in flows.iter_mut() {
                sock.write_all(&chunk).expect("write");
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut retrans = Vec::new();
        for (port, sock, reader) in flows {
            let info = xdr_ship::net::tcp_info(&sock).expect("TCP_INFO");
            drop(sock);
            let got = reader.join().expect("reader");
            assert_eq!(got, 4 << 20, "port {port}: TCP must deliver everything");
            retrans.push((port, info.total_retrans));
        }
        let stats = lab.stats();
        println!(
            "2% loss on port {lossy_port} only: retransmits {retrans:?}; line dropped {} by loss, {} by queue",
            stats.near_to_far.drops_loss, stats.near_to_far.drops_queue
        );
        assert_eq!(
            stats.near_to_far.drops_queue, 0,
            "the queue dropped: the test congested the line"
        );
        assert!(retrans[0].1 > 0, "no retransmits on the lossy port");
        assert_eq!(retrans[1].1, 0, "the clean port saw retransmits");
        lab.down().expect("teardown");
    }
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn a_panicking_test_still_tears_the_lab_down() {
    require_root();
    let name = unique("panic");
    let n = name.clone();
    let r = std::thread::spawn(move || {
        let lab = Lab::up(&n, small_link(), LabOptions::default()).expect("lab up");
        // Not waiting on this child is the point: the lab's teardown must
        // kill and reap it.
        #[allow(clippy::zombie_processes)]
        let _sleeper = lab
            .command(Side::Far, "sleep")
            .arg("60")
            .spawn()
            .expect("start sleep in far");
        assert!(Path::new("/run/netns")
            .join(lab.namespace(Side::Far))
            .exists());
        panic!("deliberate panic with the lab up");
    })
    .join();
    assert!(r.is_err(), "the thread should have panicked");
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn sigkill_of_lab_up_leaves_nothing_behind() {
    require_root();
    let name = unique("kill");
    let mut up = start_lab_up(&name, Stdio::null());
    let (ok, out, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["lab", "status", "--name", &name]),
        Duration::from_secs(10),
    );
    println!("{out}");
    assert!(ok, "lab status failed: {err}");
    assert!(
        out.contains("running") && out.contains("configured 40.0 ms"),
        "{out}"
    );

    // An operator's process inside the lab: the reaper must kill it too.
    let mut inside = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &format!("xdr-{name}-far"), "sleep", "60"])
            .spawn()
            .expect("ip netns exec … sleep"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let reaper = status::StatusFile::read(&status::path(&name))
        .expect("status file")
        .reaper_pid
        .expect("reaper pid");

    up.0.kill().expect("SIGKILL lab up");
    up.0.wait().expect("reap lab up");
    let status = wait_exit(&mut inside.0, Duration::from_secs(5));
    println!("process inside the lab ended with {status:?}; reaper pid {reaper}");
    assert!(status.is_some(), "the process inside the lab survived");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status::pid_alive(reaper) {
        assert!(
            Instant::now() < deadline,
            "the reaper {reaper} is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_nothing_left(&name, Duration::from_secs(5));
}

fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_to_lab_up_tears_down_and_exits_zero() {
    require_root();
    let name = unique("int");
    let mut up = start_lab_up(&name, Stdio::piped());
    std::thread::sleep(Duration::from_millis(1200));
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our live child.
    unsafe { libc::kill(up.0.id() as libc::pid_t, libc::SIGINT) };
    let status =
        wait_exit(&mut up.0, Duration::from_secs(10)).expect("lab up did not exit on SIGINT");
    let mut out = String::new();
    if let Some(mut s) = up.0.stdout.take() {
        s.read_to_string(&mut out).expect("read stdout");
    }
    println!("{out}");
    assert!(status.success(), "lab up exited with {status}");
    assert!(
        out.contains("ip netns exec") && out.contains("198.18.0.2"),
        "{out}"
    );
    assert!(out.contains("near→far"), "no per-second stats line: {out}");
    assert!(out.contains("down (Ctrl-C)"), "{out}");
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn lab_run_streams_both_sides_and_returns_the_near_exit_code() {
    require_root();
    let name = unique("run");
    let mut cmd = Command::new(xdr_ship_bin());
    cmd.args([
        "lab",
        "run",
        "--name",
        &name,
        "--rtt",
        "10ms",
        "--bandwidth",
        "10MB/s",
        "--quiet",
        "--far-delay",
        "200ms",
        "--far",
        "echo far-says-hi; exec sleep 60",
        "--near",
        "echo near-says-hi; exit 3",
    ]);
    let out = {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lab run");
        let mut guard = ChildGuard(child);
        let status = wait_exit(&mut guard.0, Duration::from_secs(30)).expect("lab run did not end");
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = guard.0.stdout.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        if let Some(mut s) = guard.0.stderr.take() {
            s.read_to_string(&mut err).expect("stderr");
        }
        println!("{out}\n{err}");
        assert_eq!(
            status.code(),
            Some(3),
            "lab run must return the near command's code"
        );
        out
    };
    assert!(out.contains("[far] far-says-hi"), "{out}");
    assert!(out.contains("[near] near-says-hi"), "{out}");
    assert_nothing_left(&name, Duration::from_secs(5));
}

#[test]
fn lab_down_removes_leftovers_of_a_crashed_lab() {
    require_root();
    let name = unique("down");
    for side in ["near", "far"] {
        netns::create(&format!("xdr-{name}-{side}")).expect("ip netns add");
    }
    let (ok, out, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["lab", "down", "--name", &name]),
        Duration::from_secs(20),
    );
    println!("{out}");
    assert!(ok, "lab down failed: {err}");
    assert!(out.contains("deleted namespace"), "{out}");
    assert_nothing_left(&name, Duration::from_secs(2));
}

#[test]
fn bad_flags_name_the_flag_and_the_accepted_form() {
    let (ok, _, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["lab", "up", "--bandwidth", "100MB"]),
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(
        err.contains("--bandwidth") && err.contains("100MB/s"),
        "{err}"
    );
    let (ok, _, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["lab", "up", "--loss", "2"]),
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(err.contains("--loss") && err.contains("0.1%"), "{err}");
}
