//! `probe::inet_diag` against connections the tests open on loopback: found
//! under their `SO_COOKIE`, with the `tcp_info` their owner reads. None of
//! these needs root.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use xdr_ship::{
    net::{socket_cookie, tcp_info},
    probe::inet_diag::{tcp_sockets, DiagError, DiagFilter, DiagSocket, TcpState},
};

/// A connected pair on `ip` with `bytes` pushed client → server, read, and
/// acknowledged (nothing left in flight, so both sides' counters are still).
struct Pair {
    _listener: TcpListener,
    client: TcpStream,
    server: TcpStream,
    port: u16,
}

fn pair(ip: &str, bytes: usize) -> Pair {
    let listener = TcpListener::bind(format!("{ip}:0")).expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![7u8; bytes]).unwrap();
    let mut sink = vec![0u8; bytes];
    server.read_exact(&mut sink).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_info(&client).unwrap().unacked != 0 {
        assert!(
            Instant::now() < deadline,
            "data still unacknowledged after 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Pair {
        _listener: listener,
        client,
        server,
        port,
    }
}

fn by_cookie(sockets: &[DiagSocket], stream: &TcpStream) -> Option<DiagSocket> {
    let cookie = socket_cookie(stream).unwrap();
    sockets.iter().find(|s| s.cookie == cookie).cloned()
}

fn ports(port: u16) -> DiagFilter {
    DiagFilter {
        ports: vec![port],
        ..DiagFilter::default()
    }
}

#[test]
fn an_own_connection_is_found_under_its_cookie_with_the_owners_tcp_info() {
    let p = pair("127.0.0.1", 100_000);
    let sockets = tcp_sockets(&ports(p.port)).expect("inet_diag dump");
    let own = tcp_info(&p.client).unwrap();
    let found = by_cookie(&sockets, &p.client).unwrap_or_else(|| {
        panic!(
            "cookie {} not among {sockets:#?}",
            socket_cookie(&p.client).unwrap()
        )
    });
    println!("{found:#?}");
    assert_eq!(found.src, p.client.local_addr().unwrap());
    assert_eq!(found.dst, p.client.peer_addr().unwrap());
    assert_eq!(found.state, TcpState::Established);
    let info = found.info.expect("INET_DIAG_INFO on an established socket");
    assert_eq!(info.state, 1, "tcp_info's own state: TCP_ESTABLISHED");
    assert_eq!(
        info.bytes_acked, own.bytes_acked,
        "SYN + payload, quiescent"
    );
    assert_eq!(info.bytes_acked, 100_001);
    assert_eq!(info.snd_cwnd, own.snd_cwnd);
    let rtt_gap = info.rtt_us.abs_diff(own.rtt_us);
    assert!(
        rtt_gap <= own.rtt_us / 10 + 50,
        "rtt {} µs by netlink, {} µs by getsockopt",
        info.rtt_us,
        own.rtt_us
    );
    // Both ends of the pair are there: the accepted side mirrors the client.
    let server = by_cookie(&sockets, &p.server).expect("the accepted side");
    assert_eq!((server.src, server.dst), (found.dst, found.src));
}

#[test]
fn the_congestion_control_is_the_systems_default() {
    let p = pair("127.0.0.1", 1000);
    let sockets = tcp_sockets(&ports(p.port)).expect("inet_diag dump");
    let found = by_cookie(&sockets, &p.client).expect("own socket");
    let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    assert_eq!(found.congestion.as_deref(), Some(default.trim()));
}

#[test]
fn the_port_filter_leaves_out_a_connection_on_another_port() {
    let a = pair("127.0.0.1", 1000);
    let b = pair("127.0.0.1", 1000);
    let sockets = tcp_sockets(&ports(a.port)).expect("inet_diag dump");
    assert!(by_cookie(&sockets, &a.client).is_some());
    assert!(by_cookie(&sockets, &a.server).is_some());
    assert!(by_cookie(&sockets, &b.client).is_none(), "{sockets:#?}");
    assert!(by_cookie(&sockets, &b.server).is_none(), "{sockets:#?}");
    assert!(
        sockets
            .iter()
            .all(|s| s.src.port() == a.port || s.dst.port() == a.port),
        "{sockets:#?}"
    );
    // Without a filter both are there.
    let all = tcp_sockets(&DiagFilter::default()).expect("inet_diag dump");
    assert!(by_cookie(&all, &a.client).is_some() && by_cookie(&all, &b.client).is_some());
}

#[test]
fn listeners_are_left_out_by_default() {
    let p = pair("127.0.0.1", 1000);
    let sockets = tcp_sockets(&ports(p.port)).expect("inet_diag dump");
    assert!(sockets.iter().all(|s| s.state != TcpState::Listen));
    assert_eq!(sockets.len(), 2, "client and accepted side: {sockets:#?}");
}

#[test]
fn the_own_pid_finds_the_tests_sockets() {
    let p = pair("127.0.0.1", 1000);
    let me = std::process::id();
    let filter = DiagFilter {
        pid: Some(me),
        ..ports(p.port)
    };
    let sockets = tcp_sockets(&filter).expect("inet_diag dump");
    for stream in [&p.client, &p.server] {
        let found = by_cookie(&sockets, stream).expect("own socket by pid");
        assert_eq!(found.pid, Some(me));
        assert_ne!(found.inode, 0);
    }
}

#[test]
fn another_pid_does_not_find_the_tests_sockets() {
    let p = pair("127.0.0.1", 1000);
    let filter = DiagFilter {
        pid: Some(1),
        ..ports(p.port)
    };
    match tcp_sockets(&filter) {
        Ok(sockets) => assert!(sockets.is_empty(), "{sockets:#?}"),
        // Unprivileged, pid 1's fds cannot be listed: saying so is right too.
        Err(e @ DiagError::ProcFds { .. }) => {
            println!("as a non-root user: {e}");
            assert!(e.to_string().contains("root"), "{e}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn resolving_pids_attributes_the_tests_sockets_to_this_process() {
    let p = pair("127.0.0.1", 1000);
    let filter = DiagFilter {
        resolve_pids: true,
        ..ports(p.port)
    };
    let sockets = tcp_sockets(&filter).expect("inet_diag dump");
    let found = by_cookie(&sockets, &p.client).expect("own socket");
    assert_eq!(found.pid, Some(std::process::id()));
}

#[test]
fn an_ipv6_loopback_connection_is_found() {
    if TcpListener::bind("[::1]:0").is_err() {
        println!("skipping: no IPv6 loopback here");
        return;
    }
    let p = pair("[::1]", 10_000);
    let sockets = tcp_sockets(&ports(p.port)).expect("inet_diag dump");
    let found = by_cookie(&sockets, &p.client).expect("own IPv6 socket");
    let loopback: SocketAddr = format!("[::1]:{}", p.port).parse().unwrap();
    assert_eq!(found.dst, loopback);
    assert_eq!(found.src, p.client.local_addr().unwrap());
    assert_eq!(found.info.expect("tcp_info").bytes_acked, 10_001);
}
