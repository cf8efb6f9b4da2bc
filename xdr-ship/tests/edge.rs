//! Bad input against the real receiver (in process, on loopback): every
//! attack gets the error the protocol specifies, only the attacker's
//! connection is closed, a good shipper running at the same time delivers
//! everything, and every write that was acknowledged is in the store.
//! No root needed; every test is bounded in time.
mod common;

use common::{ship_quietly, Recv, LIMIT};

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::{codec::Framed, sync::CancellationToken};
use xdr_ship::{
    server::ServerConfig,
    ship::{GenerateSpec, Generator, ShipConfig, ShipSummary},
    wire::{
        Frame, Goodbye, Hello, Message, OrderingMode, ResultCode, WireCodec, Write, HEADER_LEN,
    },
};

/// Records the good shipper sends: one key each, so every record must be
/// in the store afterwards with its own version.
const GOOD_RECORDS: u64 = 4_000;

/// A well-behaved shipper, paced to still be running while the attack
/// happens (about 2 s).
fn good_shipper(addr: SocketAddr) -> JoinHandle<ShipSummary> {
    let mut cfg = ShipConfig::new(addr.to_string());
    cfg.connections = 2;
    cfg.sndbuf = None;
    let spec = GenerateSpec {
        rate: Some(2_000),
        value_size: 100,
        keys: GOOD_RECORDS,
    };
    let source = Generator::new(spec, 3, Some(GOOD_RECORDS));
    tokio::spawn(async move {
        ship_quietly(cfg, source, CancellationToken::new())
            .await
            .expect("the good shipper succeeded")
    })
}

/// Waits until the good shipper has its connections up.
async fn wait_connections(recv: &Recv, n: u64) {
    tokio::time::timeout(LIMIT, async {
        while recv
            .stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            < n
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connections up in time");
}

/// The good shipper delivered every record, and each is in the store.
async fn assert_good_shipper_unharmed(recv: &Recv, shipper: JoinHandle<ShipSummary>) {
    let summary = shipper.await.unwrap();
    assert_eq!(summary.counters.delivered(), GOOD_RECORDS, "{summary:?}");
    assert_eq!(summary.counters.abandoned, 0);
    for n in 0..GOOD_RECORDS {
        let got = recv
            .store()
            .get(&Generator::key(n))
            .unwrap()
            .unwrap_or_else(|| panic!("acked record {n} is missing from the store"));
        assert_eq!(got.version, n + 1, "record {n}");
    }
}

/// Reads frames until a GOODBYE, then checks that the server closed.
async fn expect_goodbye(framed: &mut Framed<TcpStream, WireCodec>) -> Goodbye {
    let goodbye = tokio::time::timeout(LIMIT, async {
        loop {
            match framed.next().await {
                Some(Ok(Frame {
                    body: Message::Goodbye(g),
                    ..
                })) => return g,
                Some(Ok(_)) => continue,
                other => panic!("expected a GOODBYE, got {other:?}"),
            }
        }
    })
    .await
    .expect("GOODBYE in time");
    let eof = tokio::time::timeout(LIMIT, framed.next())
        .await
        .expect("closed in time");
    assert!(
        eof.is_none() || matches!(eof, Some(Err(_))),
        "server kept talking after GOODBYE: {eof:?}"
    );
    goodbye
}

async fn raw(addr: SocketAddr) -> Framed<TcpStream, WireCodec> {
    Framed::new(TcpStream::connect(addr).await.unwrap(), WireCodec::new())
}

/// A connection that said HELLO and got HELLO_OK.
async fn session(addr: SocketAddr) -> Framed<TcpStream, WireCodec> {
    let mut framed = raw(addr).await;
    framed
        .send(Frame::hello(Hello::new(OrderingMode::Ordered, 9)))
        .await
        .unwrap();
    match framed.next().await {
        Some(Ok(Frame {
            body: Message::HelloOk(_),
            ..
        })) => framed,
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
}

fn encoded(frame: Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut WireCodec::new(), frame, &mut buf).unwrap();
    buf.to_vec()
}

fn attacker_write(n: u64) -> Write {
    Write::put(format!("attacker:{n}"), "v", 1, 9)
}

/// Sends `n` good writes and waits for their ACKs: these must survive
/// whatever the connection does next.
async fn acked_writes(framed: &mut Framed<TcpStream, WireCodec>, n: u64) {
    for i in 1..=n {
        framed
            .send(Frame::write(i, attacker_write(i)))
            .await
            .unwrap();
        match framed.next().await {
            Some(Ok(Frame {
                body: Message::Ack(_),
                request_id,
            })) => assert_eq!(request_id, i),
            other => panic!("expected ACK {i}, got {other:?}"),
        }
    }
}

fn assert_in_store(recv: &Recv, n: u64) {
    for i in 1..=n {
        assert!(
            recv.store()
                .get(format!("attacker:{i}").as_bytes())
                .unwrap()
                .is_some(),
            "acked attacker write {i} is missing"
        );
    }
}

fn assert_goodbye(g: &Goodbye, code: ResultCode, needle: &str) {
    assert_eq!(g.code, code, "{g:?}");
    assert!(
        g.message.contains(needle),
        "GOODBYE message `{}` does not mention `{needle}`",
        g.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_get_protocol_violation_and_the_shipper_carries_on() {
    let recv = Recv::start(ServerConfig::default());
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = raw(recv.addr).await;
    framed
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .await
        .unwrap();
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(&g, ResultCode::ProtocolViolation, "bad magic");
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_close_is_unexpected_eof_and_acked_writes_stay() {
    let recv = Recv::start(ServerConfig::default());
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = session(recv.addr).await;
    acked_writes(&mut framed, 5).await;
    let whole = encoded(Frame::write(6, attacker_write(6)));
    let stream = framed.get_mut();
    stream.write_all(&whole[..whole.len() - 3]).await.unwrap();
    stream.shutdown().await.unwrap();
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(&g, ResultCode::Unavailable, "closed mid-frame");
    assert_in_store(&recv, 5);
    assert!(
        recv.store().get(b"attacker:6").unwrap().is_none(),
        "the truncated write was applied"
    );
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_gets_unsupported() {
    let recv = Recv::start(ServerConfig::default());
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = session(recv.addr).await;
    acked_writes(&mut framed, 3).await;
    let mut frame = encoded(Frame::write(4, attacker_write(4)));
    frame[2] = 2;
    framed.get_mut().write_all(&frame).await.unwrap();
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(
        &g,
        ResultCode::Unsupported,
        "unsupported protocol version 2",
    );
    assert_in_store(&recv, 3);
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_checksum_gets_corrupt_and_the_write_is_not_applied() {
    let recv = Recv::start(ServerConfig::default());
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = session(recv.addr).await;
    acked_writes(&mut framed, 3).await;
    let mut frame = encoded(Frame::write(4, attacker_write(4)));
    let last = frame.len() - 1;
    frame[last] ^= 0x55;
    framed.get_mut().write_all(&frame).await.unwrap();
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(&g, ResultCode::Corrupt, "checksum mismatch");
    assert_in_store(&recv, 3);
    assert!(recv.store().get(b"attacker:4").unwrap().is_none());
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_gets_record_too_large_without_waiting_for_the_payload() {
    let recv = Recv::start(ServerConfig::default());
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = session(recv.addr).await;
    let mut header = encoded(Frame::write(1, attacker_write(1)));
    header.truncate(HEADER_LEN);
    header[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    framed.get_mut().write_all(&header).await.unwrap();
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(&g, ResultCode::RecordTooLarge, "frame too large");
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_that_never_finishes_its_frame_is_closed_by_the_idle_timeout() {
    let recv = Recv::start(ServerConfig {
        idle_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut framed = session(recv.addr).await;
    acked_writes(&mut framed, 2).await;
    let frame = encoded(Frame::write(3, attacker_write(3)));
    let started = tokio::time::Instant::now();
    let (mut rd, mut wr) = framed.into_inner().into_split();
    // One byte every 200 ms: never a whole frame before the timeout.
    let trickle = tokio::spawn(async move {
        for b in &frame[..frame.len() - 1] {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wr
    });
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, rd.read_to_end(&mut got))
        .await
        .expect("the server closed the slowloris")
        .ok();
    let elapsed = started.elapsed();
    trickle.abort();
    let goodbye = {
        let mut buf = bytes::BytesMut::from(&got[..]);
        let frame = tokio_util::codec::Decoder::decode(&mut WireCodec::new(), &mut buf)
            .unwrap()
            .expect("a whole GOODBYE frame");
        match frame.body {
            Message::Goodbye(g) => g,
            other => panic!("expected GOODBYE, got {other:?}"),
        }
    };
    assert_goodbye(&goodbye, ResultCode::Timeout, "unfinished frame");
    assert!(
        elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, idle timeout is 1 s"
    );
    assert_in_store(&recv, 2);
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_by_the_handshake_timeout() {
    let recv = Recv::start(ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    let mut framed = raw(recv.addr).await;
    let g = expect_goodbye(&mut framed).await;
    assert_goodbye(&g, ResultCode::Timeout, "no HELLO in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_beyond_max_connections_gets_busy_and_the_shipper_carries_on() {
    const FLOOD: usize = 12;
    let recv = Recv::start(ServerConfig {
        max_connections: 4,
        handshake_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let shipper = good_shipper(recv.addr);
    wait_connections(&recv, 2).await;
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(raw(recv.addr).await);
    }
    let (mut busy, mut timed_out) = (0, 0);
    for framed in &mut flood {
        let g = expect_goodbye(framed).await;
        match g.code {
            ResultCode::Busy => {
                assert_goodbye(&g, ResultCode::Busy, "too many connections");
                busy += 1;
            }
            // The two that got in never say HELLO.
            ResultCode::Timeout => timed_out += 1,
            other => panic!("unexpected GOODBYE {other}: {}", g.message),
        }
    }
    assert_eq!((busy, timed_out), (FLOOD - 2, 2));
    assert_good_shipper_unharmed(&recv, shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_get_busy_and_the_connection_stays_up() {
    let recv = Recv::start(ServerConfig {
        max_in_flight: 4,
        apply_delay: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    });
    let mut framed = session(recv.addr).await;
    const N: u64 = 16;
    for i in 1..=N {
        framed
            .feed(Frame::write(i, attacker_write(i)))
            .await
            .unwrap();
    }
    SinkExt::<Frame>::flush(&mut framed).await.unwrap();
    let (mut acked, mut busy) = (Vec::new(), Vec::new());
    tokio::time::timeout(LIMIT, async {
        while acked.len() + busy.len() < N as usize {
            let f = framed.next().await.unwrap().unwrap();
            match f.body {
                Message::Ack(_) => acked.push(f.request_id),
                Message::Nack(n) => {
                    assert_eq!(n.code, ResultCode::Busy, "{n:?}");
                    assert!(n.message.contains("max_in_flight = 4"), "{}", n.message);
                    busy.push(f.request_id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("every request answered in time");
    assert!(!busy.is_empty(), "no request was refused: {acked:?}");
    assert!(acked.len() >= 4, "acked {acked:?}");
    // Still up: a PING is answered.
    framed.send(Frame::new(99, Message::Ping)).await.unwrap();
    let pong = tokio::time::timeout(LIMIT, framed.next()).await.unwrap();
    assert!(matches!(
        pong,
        Some(Ok(Frame {
            body: Message::Pong,
            request_id: 99
        }))
    ));
    for id in acked {
        assert!(recv
            .store()
            .get(format!("attacker:{id}").as_bytes())
            .unwrap()
            .is_some());
    }
    for id in busy {
        assert!(
            recv.store()
                .get(format!("attacker:{id}").as_bytes())
                .unwrap()
                .is_none(),
            "write {id} was refused Busy but applied"
        );
    }
}
