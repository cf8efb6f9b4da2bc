//! Kernel eyes end to end: `observe` on a real iperf3 flow with and without
//! eBPF, the shipper's connections joined to the kernel's rows by cookie,
//! and on the WAN lab the eBPF RTT against the configured one and
//! retransmits charged to the lossy connection only. Root; loopback or
//! namespaces this test creates; everything bounded and cleaned up.
use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    lab::{Lab, LabOptions, LinkConfig},
    live::join,
    probe::{
        ebpf::{KernelPrograms, ProbeOptions},
        tcp::KernelSnapshot,
    },
    server::{self, ServerConfig, ServerStats},
    ship::{self, GenerateSpec, Generator, ShipConfig},
    store::Store,
};
use xdr_tests::{
    connect_near, drain_one, listen_far_on, require_root, run_bounded, ship_across_lab,
    xdr_ship_bin, ChildGuard,
};

/// An iperf3 server on 127.0.0.1:`port` and a client pushing to it for
/// `secs`; both killed on drop.
fn iperf3_flow(port: u16, secs: u64) -> (ChildGuard, ChildGuard) {
    let server = ChildGuard(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s (cargo xtask setup installs it)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let client = ChildGuard(
        Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-b", "1G", "-t"])
            .arg(secs.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -c"),
    );
    std::thread::sleep(Duration::from_millis(500));
    (server, client)
}

/// The last JSON report of `observe ARGS --json`.
fn observe(args: &[&str]) -> Value {
    let (ok, out, err) = run_bounded(
        Command::new(xdr_ship_bin())
            .args(["observe", "--json"])
            .args(args),
        Duration::from_secs(30),
    );
    assert!(ok, "observe failed: {err}");
    let last = out.lines().last().expect("one report");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

/// The data connection of an iperf3 flow to `port`: the busiest sender.
fn data_conn(report: &Value, port: u16) -> Value {
    report["conns"]
        .as_array()
        .expect("conns")
        .iter()
        .filter(|c| c["ports"][1] == port)
        .max_by_key(|c| c["tcp"]["bytes_acked"].as_u64().unwrap_or(0))
        .cloned()
        .expect("a connection to the iperf3 port")
}

#[test]
fn observe_sees_an_iperf3_flows_cwnd_and_windows_from_ebpf() {
    require_root();
    let port = 5311;
    let _flow = iperf3_flow(port, 5);
    let report = observe(&[
        "--port",
        &port.to_string(),
        "--count",
        "2",
        "--interval",
        "1s",
    ]);
    assert_eq!(report["source"], "eBPF + netlink", "{report}");
    let c = data_conn(&report, port);
    println!("iperf3 data connection: {c}");
    let k = &c["kernel"];
    assert!(k["cwnd_segments"].as_u64().unwrap() > 0, "{c}");
    assert!(k["snd_wnd_bytes"].as_u64().unwrap() > 0, "{c}");
    assert!(k["rcv_wnd_bytes"].as_u64().unwrap() > 0, "{c}");
    assert!(k["samples"].as_u64().unwrap() > 0, "{c}");
    assert!(
        c["interval"]["acked_bytes_per_s"].as_f64().unwrap() > 1e6,
        "{c}"
    );
    assert!(report["softirq"]["cpus"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
}

#[test]
fn observe_without_ebpf_reports_the_same_connections_minus_the_kernel_half() {
    require_root();
    let port = 5312;
    let _flow = iperf3_flow(port, 5);
    let cookies = |r: &Value| -> BTreeSet<u64> {
        r["conns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "Established")
            .map(|c| c["cookie"].as_u64().unwrap())
            .collect()
    };
    let with = observe(&[
        "--port",
        &port.to_string(),
        "--count",
        "1",
        "--interval",
        "500ms",
    ]);
    let without = observe(&[
        "--port",
        &port.to_string(),
        "--count",
        "1",
        "--interval",
        "500ms",
        "--no-ebpf",
    ]);
    assert_eq!(without["source"], "netlink + /proc", "{without}");
    assert!(without["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("--no-ebpf"));
    assert_eq!(cookies(&with), cookies(&without));
    assert!(cookies(&with).len() >= 2, "{with}");
    for c in without["conns"].as_array().unwrap() {
        assert!(c["kernel"].is_null(), "the fallback has no eBPF half: {c}");
        assert!(c["tcp"]["cwnd_segments"].as_u64().unwrap() > 0, "{c}");
    }
}

#[test]
fn the_cookie_join_matches_each_shipper_connection_to_exactly_one_kernel_row() {
    require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = ServerConfig {
            rcvbuf: None,
            ..ServerConfig::default()
        };
        let (listener, _) = server::bind("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop_recv = CancellationToken::new();
        let recv = tokio::spawn(server::serve(
            listener,
            Store::memory(),
            cfg,
            Arc::new(ServerStats::default()),
            stop_recv.clone(),
        ));
        let mut progs = KernelPrograms::load_with(ProbeOptions {
            tcp: true,
            ports: vec![addr.port()],
            ..ProbeOptions::default()
        })
        .expect("load the kernel programs");

        let mut sc = ShipConfig::new(addr.to_string());
        sc.connections = 6;
        sc.sndbuf = None;
        sc.max_throughput = Some(30_000);
        sc.interval = Duration::from_millis(250);
        let snaps = Arc::new(Mutex::new(Vec::new()));
        let s = snaps.clone();
        let spec = GenerateSpec {
            rate: None,
            value_size: 200,
            keys: 1000,
        };
        let stop = CancellationToken::new();
        let shipping = tokio::spawn(ship::run(
            sc,
            Generator::new(spec, 1, None),
            move |snap| s.lock().unwrap().push(snap.clone()),
            stop.clone(),
            CancellationToken::new(),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        let (app, kernel) = loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let app = snaps.lock().unwrap().last().cloned();
            let kernel = KernelSnapshot::read(&mut progs).expect("read the kernel maps");
            if let Some(app) = app.filter(|a| a.connected == 6) {
                break (app, kernel);
            }
            assert!(
                Instant::now() < deadline,
                "the shipper never had 6 connections up"
            );
        };
        stop.cancel();
        let _ = shipping.await;
        stop_recv.cancel();
        let _ = recv.await;

        let joined = join(&app, &kernel.conns);
        assert_eq!(joined.len(), 6);
        for j in &joined {
            let matches = kernel
                .conns
                .iter()
                .filter(|k| k.cookie == j.app.cookie)
                .count();
            assert_eq!(
                matches, 1,
                "connection {} (cookie {}) matched {matches} kernel rows",
                j.app.id, j.app.cookie
            );
            let k = j.kernel.as_ref().unwrap();
            assert_eq!(k.dport, addr.port(), "the shipper's side of the socket");
            println!(
                "conn {}: cookie {} cwnd {} srtt {} us (TCP_INFO {} us)",
                j.app.id,
                k.cookie,
                k.cwnd_segments,
                k.srtt_us,
                j.app.tcp.map_or(0, |t| t.srtt_us)
            );
        }
    });
}

const LAB_RTT: Duration = Duration::from_millis(40);

#[test]
fn on_the_lab_ebpf_srtt_is_the_set_rtt_and_agrees_with_tcp_info() {
    require_root();
    let mut progs = KernelPrograms::load_with(ProbeOptions {
        tcp: true,
        ports: vec![3000],
        ..ProbeOptions::default()
    })
    .expect("load the kernel programs");
    // Far below the line rate: no queue, so the RTT is the link's.
    let (snaps, _) = ship_across_lab(
        "srtt",
        LinkConfig::new(LAB_RTT, 20_000_000),
        &[
            "--connections",
            "4",
            "--max-throughput",
            "2000",
            "--generate",
            "max,1000,1000",
        ],
        5,
    );
    let kernel = KernelSnapshot::read(&mut progs).expect("read the kernel maps");
    // The shipper's last snapshot with every connection up: cookies, TCP_INFO.
    let snap = snaps
        .iter()
        .rfind(|v| v["connected"] == 4)
        .expect("a snapshot with 4 connections");
    let set_us = LAB_RTT.as_micros() as f64;
    let mut compared = 0;
    for c in snap["connections"].as_array().unwrap() {
        let cookie = c["cookie"].as_u64().unwrap();
        let k = kernel
            .conn(cookie)
            .unwrap_or_else(|| panic!("cookie {cookie} not in the kernel map"));
        let tcp_info_us = c["tcp"]["srtt_us"].as_f64().unwrap();
        let ebpf_us = f64::from(k.srtt_us);
        println!(
            "cookie {cookie}: eBPF srtt {ebpf_us} us, TCP_INFO {tcp_info_us} us, set {set_us} us"
        );
        assert!(
            (ebpf_us / set_us - 1.0).abs() <= 0.10,
            "eBPF srtt {ebpf_us} us vs set {set_us} us"
        );
        assert!(
            (ebpf_us / tcp_info_us - 1.0).abs() <= 0.10,
            "eBPF srtt {ebpf_us} us vs TCP_INFO {tcp_info_us} us"
        );
        compared += 1;
    }
    assert_eq!(compared, 4);
}

#[test]
fn on_the_lab_retransmits_are_charged_to_the_lossy_connection_only() {
    require_root();
    let name = format!("t{}-retx", std::process::id());
    let (lossy_port, clean_port) = (15011, 15012);
    let mut link = LinkConfig::new(LAB_RTT, 20_000_000);
    link.loss = 0.02;
    link.loss_ports = vec![lossy_port];
    let lab = Lab::up(&name, link, LabOptions::default()).expect("lab up");
    let mut progs = KernelPrograms::load_with(ProbeOptions {
        tcp: true,
        ports: vec![lossy_port, clean_port],
        ..ProbeOptions::default()
    })
    .expect("load the kernel programs");
    let mut flows = Vec::new();
    for port in [lossy_port, clean_port] {
        let listener = listen_far_on(&lab, port);
        let to = listener.local_addr().unwrap();
        let reader = drain_one(listener, Duration::from_secs(20));
        let sock = connect_near(&lab, to);
        let cookie = xdr_ship::net::socket_cookie(&sock).unwrap();
        flows.push((port, cookie, sock, reader));
    }
    // Paced far below the line: only the configured loss drops segments.
    let chunk = vec![0x5au8; 64 << 10];
    for _ in 0..(4 << 20) / chunk.len() {
        for (_, _, sock, _) in flows.iter_mut() {
            sock.write_all(&chunk).expect("write");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kernel = KernelSnapshot::read(&mut progs).expect("read the kernel maps");
    let retx = |cookie: u64| {
        kernel
            .conn(cookie)
            .map(|k| k.retransmits)
            .expect("a kernel row")
    };
    let (lossy, clean) = (retx(flows[0].1), retx(flows[1].1));
    let tcp_info_lossy = xdr_ship::net::tcp_info(&flows[0].2).unwrap().total_retrans;
    println!("retransmits: lossy {lossy} (TCP_INFO {tcp_info_lossy}), clean {clean}");
    assert!(lossy > 0, "no retransmits charged to the lossy connection");
    assert_eq!(clean, 0, "retransmits charged to the clean connection");
    assert!(
        lossy <= u64::from(tcp_info_lossy) + 2,
        "eBPF counted more than TCP did"
    );
    for (_, _, sock, reader) in flows {
        drop(sock);
        reader.join().expect("reader");
    }
    drop(progs);
    lab.down().expect("teardown");
}

#[test]
fn an_observe_recording_replays_with_the_flows_kernel_half_and_a_verdict() {
    require_root();
    let port = 5313;
    let _flow = iperf3_flow(port, 5);
    let dir = xdr_tests::TempDir::new("observe-record");
    let file = dir.0.join("observe.jsonl");
    let file_s = file.display().to_string();
    observe(&[
        "--port",
        &port.to_string(),
        "--count",
        "3",
        "--interval",
        "500ms",
        "--record",
        &file_s,
    ]);
    let text = std::fs::read_to_string(&file).expect("the recording exists");
    assert_eq!(text.lines().count(), 3, "one line per sample:\n{text}");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["v"], 1, "{first}");
    let conns = first["ship"]["connections"]
        .as_array()
        .expect("connections");
    assert!(
        conns
            .iter()
            .any(|c| c["tcp"]["cwnd_segments"].as_u64().unwrap_or(0) > 0),
        "the flows' TCP_INFO is recorded: {first}"
    );
    assert!(
        first["kernel"].as_array().is_some_and(|k| !k.is_empty()),
        "the eBPF rows are recorded: {first}"
    );
    let (ok, out, err) = run_bounded(
        Command::new(xdr_ship_bin()).args(["replay", &file_s, "--text"]),
        Duration::from_secs(30),
    );
    assert!(ok, "replay failed: {err}");
    assert!(out.contains("final verdict"), "{out}");
    assert!(out.contains("limit: "), "{out}");
}
