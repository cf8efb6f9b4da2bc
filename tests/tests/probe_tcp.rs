//! The TCP programs (`tcp:tcp_probe`, `tcp:tcp_retransmit_skb`,
//! `sock:inet_sock_set_state`), loaded for real, against connections the
//! tests open on 127.0.0.1 and the kernel's own `TCP_INFO` for the same
//! sockets. Root, one test at a time (`cargo xtask test`).
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use xdr_ship::{
    lab::netns,
    net::{socket_cookie, tcp_info},
    probe::{
        ebpf::{KernelPrograms, ProbeOptions, TcpProbePath},
        tcp::{KernelConn, KernelSnapshot},
    },
};
use xdr_tests::require_root;

/// Every blocking read or write of these tests gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Both ends of one loopback connection.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

impl Pair {
    /// Connects to `listener` and accepts.
    fn connect(listener: &TcpListener) -> Self {
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        }
        Self { client, server }
    }

    fn cookies(&self) -> (u64, u64) {
        (
            socket_cookie(&self.client).unwrap(),
            socket_cookie(&self.server).unwrap(),
        )
    }

    /// Pushes `bytes` each way at the same time and reads them all.
    fn bulk_both_ways(&self, bytes: usize) {
        std::thread::scope(|s| {
            for (from, to) in [(&self.client, &self.server), (&self.server, &self.client)] {
                s.spawn(move || write_n(from, bytes));
                s.spawn(move || read_n(to, bytes));
            }
        });
    }

    /// Waits until nothing the client sent is unacknowledged.
    fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while tcp_info(&self.client).unwrap().unacked != 0
            || tcp_info(&self.server).unwrap().unacked != 0
        {
            assert!(Instant::now() < deadline, "data unacknowledged after 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn write_n(mut sock: &TcpStream, bytes: usize) {
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        sock.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
}

fn read_n(mut sock: &TcpStream, bytes: usize) {
    let mut buf = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = sock.read(&mut buf[..left.min(1 << 16)]).expect("read");
        assert!(n > 0, "peer closed with {left} bytes to go");
        left -= n;
    }
}

fn find(conns: &[KernelConn], cookie: u64) -> Option<&KernelConn> {
    conns.iter().find(|c| c.cookie == cookie)
}

#[test]
fn a_loopback_connection_appears_under_its_cookie_with_what_tcp_info_says() {
    require_root();
    // Every TCP socket: the unfiltered mode must work too.
    let progs = KernelPrograms::load_with(ProbeOptions::tcp([])).expect("load");
    // These machines have BTF and tp_btf (DESIGN.md): the raw path is the
    // one in use, and it must see what the classic one sees.
    assert_eq!(progs.tcp_probe_path(), Some(&TcpProbePath::RawBtf));
    // ... and so is every other program's: none needs tracefs.
    assert_eq!(progs.classic_programs(), [] as [&str; 0]);
    a_loopback_connection_matches_tcp_info(progs);
}

#[test]
fn the_classic_tracepoint_fallback_sees_the_same_as_the_raw_path() {
    require_root();
    let progs = KernelPrograms::load_with(ProbeOptions {
        classic_tracepoints: true,
        ..ProbeOptions::tcp([])
    })
    .expect("load");
    assert!(
        matches!(
            progs.tcp_probe_path(),
            Some(TcpProbePath::Tracepoint { .. })
        ),
        "{:?}",
        progs.tcp_probe_path()
    );
    let mut classic = progs.classic_programs().to_vec();
    classic.sort_unstable();
    assert_eq!(
        classic,
        [
            "inet_sock_set_state",
            "softirq_entry",
            "softirq_exit",
            "tcp_probe",
            "tcp_retransmit_skb"
        ]
    );
    a_loopback_connection_matches_tcp_info(progs);
}

fn a_loopback_connection_matches_tcp_info(mut progs: KernelPrograms) {
    assert_eq!(progs.tcp_ports(), Some(&[][..]));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pair = Pair::connect(&listener);
    pair.bulk_both_ways(32 << 20);
    pair.wait_quiet();
    // One byte to the client, with everything it sent already acknowledged:
    // `tcp_probe` fires before the segment is processed, and a segment that
    // acknowledges nothing new leaves srtt and cwnd as they were, so the
    // client's sample now equals its TCP_INFO.
    write_n(&pair.server, 1);
    read_n(&pair.client, 1);
    let info = tcp_info(&pair.client).unwrap();
    let conns = progs.tcp_connections().expect("read TCP_CONNS");

    let (client_cookie, server_cookie) = pair.cookies();
    let client = find(&conns, client_cookie).unwrap_or_else(|| {
        panic!(
            "client cookie {client_cookie:#x} not among {} connections",
            conns.len()
        )
    });
    let server = find(&conns, server_cookie).expect("server side under its cookie");
    println!("client (cookie {client_cookie:#x} from SO_COOKIE): {client:?}");
    println!("server (cookie {server_cookie:#x} from SO_COOKIE): {server:?}");
    println!(
        "TCP_INFO of the client: rtt_us {} cwnd {} ssthresh {} snd_wnd {} rcv_wnd {} unacked {} \
         total_retrans {}",
        info.rtt_us,
        info.snd_cwnd,
        info.snd_ssthresh,
        info.snd_wnd,
        info.rcv_wnd,
        info.unacked,
        info.total_retrans
    );
    let client_port = pair.client.local_addr().unwrap().port();
    assert_eq!((client.sport, client.dport), (client_port, port));
    assert_eq!((server.sport, server.dport), (port, client_port));
    assert!(!client.ipv6 && !client.closed && !server.closed);
    assert!(client.samples > 100 && server.samples > 100, "few samples");
    assert!(client.cwnd_segments > 0 && server.cwnd_segments > 0);
    assert_eq!(client.cwnd_segments, info.snd_cwnd, "cwnd vs TCP_INFO");
    assert!(client.snd_wnd_bytes > 0 && client.rcv_wnd_bytes > 0);
    assert!(server.snd_wnd_bytes > 0 && server.rcv_wnd_bytes > 0);
    assert_eq!(client.bytes_in_flight, 0, "quiet connection");
    let gap = client.srtt_us.abs_diff(info.rtt_us);
    println!(
        "srtt: eBPF {} µs, TCP_INFO {} µs, gap {gap} µs",
        client.srtt_us, info.rtt_us
    );
    assert!(
        client.srtt_us > 0 && gap <= (info.rtt_us / 10).max(3),
        "srtt {} µs by eBPF, {} µs by TCP_INFO",
        client.srtt_us,
        info.rtt_us
    );
    assert!(client.last_update_age < Duration::from_secs(5));
    // One event per retransmitted skb, which carries one or more segments.
    assert!(client.retransmits <= u64::from(info.total_retrans));

    let snap = KernelSnapshot::read(&mut progs).expect("snapshot");
    assert_eq!(
        snap.conn(client_cookie).map(|c| (c.sport, c.dport)),
        Some((client_port, port))
    );
    assert!(!snap.softirq.cpus.is_empty());
    assert!(snap.counters.opens >= 2, "{:?}", snap.counters);
}

#[test]
fn with_a_port_filter_connections_on_other_ports_stay_out_of_the_map() {
    require_root();
    let watched = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = watched.local_addr().unwrap().port();
    let mut progs = KernelPrograms::load_with(ProbeOptions::tcp([port])).expect("load");
    let a = Pair::connect(&watched);
    let b = Pair::connect(&other);
    a.bulk_both_ways(8 << 20);
    b.bulk_both_ways(8 << 20);
    let conns = progs.tcp_connections().expect("read TCP_CONNS");
    println!(
        "port {port} watched; {} entries: {:?}",
        conns.len(),
        conns
            .iter()
            .map(|c| (c.cookie, c.sport, c.dport))
            .collect::<Vec<_>>()
    );
    let (ac, as_) = a.cookies();
    let (bc, bs) = b.cookies();
    assert!(find(&conns, ac).is_some() && find(&conns, as_).is_some());
    assert!(find(&conns, bc).is_none() && find(&conns, bs).is_none());
    for c in &conns {
        assert!(c.sport == port || c.dport == port, "unfiltered entry {c:?}");
    }
}

#[test]
fn a_closed_connection_is_reported_closed_once_then_forgotten() {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut progs = KernelPrograms::load_with(ProbeOptions::tcp([port])).expect("load");
    let pair = Pair::connect(&listener);
    pair.bulk_both_ways(1 << 20);
    let (client_cookie, server_cookie) = pair.cookies();
    let open = progs.tcp_connections().unwrap();
    assert!(find(&open, client_cookie).is_some_and(|c| !c.closed));
    assert!(find(&open, server_cookie).is_some_and(|c| !c.closed));

    drop(pair);
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reads = 0;
    while reported.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "closed entries seen after 5 s: {reported:?}"
        );
        let conns = progs.tcp_connections().unwrap();
        reads += 1;
        for cookie in [client_cookie, server_cookie] {
            if let Some(c) = find(&conns, cookie) {
                assert!(!reported.contains(&cookie), "reported twice: {c:?}");
                if c.closed {
                    println!("read {reads}: closed {c:?}");
                    reported.push(cookie);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = progs.tcp_connections().unwrap();
    assert!(find(&after, client_cookie).is_none(), "client still there");
    assert!(find(&after, server_cookie).is_none(), "server still there");
    let counters = progs.tcp_counters().unwrap();
    println!("counters: {counters:?}");
    assert!(counters.opens >= 2 && counters.closes >= 2, "{counters:?}");
}

/// A network namespace of this test's own, deleted on drop (panics too).
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Self {
        let name = format!("xdr-{tag}-{}", std::process::id());
        let _ = netns::destroy(&name);
        netns::create(&name).expect("ip netns add");
        Self(name)
    }

    /// Runs `program args…` inside the namespace (`ip netns exec`).
    fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.0, program];
        all.extend_from_slice(args);
        netns::ip(&all).unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes live there.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::in_netns(&self.0, move || Ok(f())).expect("enter the namespace")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = netns::destroy(&self.0);
    }
}

#[test]
fn retransmits_are_charged_to_the_lossy_connection_and_not_to_its_neighbour() {
    require_root();
    // Loss on loopback, honestly: in a namespace of its own, segments *to*
    // the lossy port are redirected at lo's ingress through an IFB device
    // whose tbf qdisc drops what exceeds a small queue. The drop happens on
    // the receive path, after the sender's qdisc accepted the segment, so
    // the sender sees real loss and retransmits (netem is not available).
    let ns = NetNs::new("probe-tcp");
    let (lossy_l, clean_l) = ns.enter(|| {
        (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        )
    });
    let lossy_port = lossy_l.local_addr().unwrap().port();
    let clean_port = clean_l.local_addr().unwrap().port();
    let lossy_port_s = lossy_port.to_string();
    // MTU 1500: at lo's 64 KiB a GSO segment is larger than any tbf burst,
    // and tbf would drop every data segment instead of some.
    ns.exec("ip", &["link", "set", "lo", "mtu", "1500", "up"]);
    ns.exec("ip", &["link", "add", "ifb0", "type", "ifb"]);
    ns.exec("ip", &["link", "set", "ifb0", "up"]);
    ns.exec(
        "tc",
        &["qdisc", "add", "dev", "lo", "handle", "ffff:", "ingress"],
    );
    ns.exec(
        "tc",
        &[
            "filter",
            "add",
            "dev",
            "lo",
            "parent",
            "ffff:",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dport",
            &lossy_port_s,
            "0xffff",
            "action",
            "mirred",
            "egress",
            "redirect",
            "dev",
            "ifb0",
        ],
    );
    ns.exec(
        "tc",
        &[
            "qdisc", "add", "dev", "ifb0", "root", "tbf", "rate", "50mbit", "burst", "32kb",
            "limit", "64kb",
        ],
    );

    let mut progs =
        KernelPrograms::load_with(ProbeOptions::tcp([lossy_port, clean_port])).expect("load");
    let before = progs.tcp_counters().unwrap();
    let (lossy, clean) = ns.enter(|| (Pair::connect(&lossy_l), Pair::connect(&clean_l)));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            write_n(&lossy.client, 8 << 20);
        });
        s.spawn(|| read_n(&lossy.server, 8 << 20));
        s.spawn(|| clean.bulk_both_ways(8 << 20));
    });
    let wall = t0.elapsed();
    let lossy_info = tcp_info(&lossy.client).unwrap();
    let clean_info = tcp_info(&clean.client).unwrap();
    let conns = progs.tcp_connections().unwrap();
    let after = progs.tcp_counters().unwrap();

    let (lc, _) = lossy.cookies();
    let (cc, cs) = clean.cookies();
    let l = find(&conns, lc).expect("lossy client under its cookie");
    let c = find(&conns, cc).expect("clean client under its cookie");
    let c_srv = find(&conns, cs).expect("clean server under its cookie");
    println!(
        "8 MiB through the lossy port in {:.2} s",
        wall.as_secs_f64()
    );
    println!(
        "lossy client {lc:#x}: eBPF retransmits {} (skbs), TCP_INFO total_retrans {} (segments)",
        l.retransmits, lossy_info.total_retrans
    );
    println!(
        "clean client {cc:#x}: eBPF retransmits {}, TCP_INFO total_retrans {}; clean server {}",
        c.retransmits, clean_info.total_retrans, c_srv.retransmits
    );
    println!("counters before {before:?}, after {after:?}");
    assert!(
        lossy_info.total_retrans > 0,
        "the tbf queue dropped nothing: the test induced no loss"
    );
    assert!(l.retransmits > 0, "lossy connection shows no retransmits");
    assert!(
        l.retransmits <= u64::from(lossy_info.total_retrans),
        "more retransmitted skbs than segments"
    );
    // The clean connection loses nothing; should the busy machine make it
    // retransmit anyway (a tail-loss probe after a late ACK), eBPF may show
    // no more than the kernel did: none of the lossy connection's leak in.
    let clean_srv_info = tcp_info(&clean.server).unwrap();
    assert!(
        c.retransmits <= u64::from(clean_info.total_retrans)
            && c_srv.retransmits <= u64::from(clean_srv_info.total_retrans),
        "clean connection charged with retransmits the kernel did not make"
    );
    if clean_info.total_retrans == 0 {
        assert_eq!(c.retransmits, 0);
    }
}
