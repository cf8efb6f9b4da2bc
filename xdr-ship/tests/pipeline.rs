//! The shipper and the receiver over loopback: what arrives, in what order,
//! how many are in flight, and what happens when the receiver goes away.
//! No root needed. Every test is bounded in time and cleans up after itself.
mod common;

use common::{ship_quietly, Recv, TempDir, LIMIT};

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{codec::Framed, sync::CancellationToken};
use xdr_ship::{
    server::{sink::SinkFuture, ServerConfig, Sink},
    ship::{
        self, GenerateSpec, Generator, ShipConfig, ShipSummary, Source, SourceRecord, WindowSetting,
    },
    store::{Store, StoreConfig},
    wire::{Ack, Frame, Hello, HelloOk, Message, OrderingMode, ResultCode, WireCodec, Write},
};

fn spec(keys: u64, size: usize) -> GenerateSpec {
    GenerateSpec {
        rate: None,
        value_size: size,
        keys,
    }
}

async fn ship_all(cfg: ShipConfig, source: impl Source) -> ShipSummary {
    ship_quietly(cfg, source, CancellationToken::new())
        .await
        .expect("shipping succeeded")
}

/// What key `k` must hold after records `0..n` of a generator were shipped.
fn expected(n: u64, keys: u64, size: usize, k: u64) -> Option<(u64, bytes::Bytes)> {
    let last = (0..n).rev().find(|i| i % keys == k)?;
    Some((last + 1, Generator::value(last, size)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_record_arrives_with_identical_bytes() {
    let dir = TempDir::new("bytes");
    let store = Store::open(StoreConfig::durable(dir.0.join("store"))).unwrap();
    let recv = Recv::with_store(store.clone(), None);
    let (n, keys, size) = (20_000, 2_000, 1000);
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = 4;
    cfg.sndbuf = None;
    let summary = ship_all(cfg, Generator::new(spec(keys, size), 7, Some(n))).await;
    assert_eq!(summary.counters.delivered(), n);
    assert_eq!(summary.counters.abandoned, 0);
    for k in 0..keys {
        let (version, value) = expected(n, keys, size, k).unwrap();
        let got = store
            .get(&Generator::key(k))
            .unwrap()
            .unwrap_or_else(|| panic!("key {k} missing"));
        assert_eq!(got.version, version, "key {k}");
        assert_eq!(got.source_id, 7, "key {k}");
        assert_eq!(
            got.value.as_deref(),
            Some(&value[..]),
            "key {k}: bytes differ"
        );
    }
}

/// A raw protocol client: HELLO in `mode`, then the framed stream.
async fn client(addr: SocketAddr, mode: OrderingMode) -> (Framed<TcpStream, WireCodec>, HelloOk) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut framed = Framed::new(stream, WireCodec::new());
    framed
        .send(Frame::hello(Hello::new(mode, 1)))
        .await
        .unwrap();
    match framed.next().await.unwrap().unwrap().body {
        Message::HelloOk(ok) => (framed, ok),
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_answers_in_request_order_under_load() {
    let dir = TempDir::new("ordered");
    let store = Store::open(StoreConfig::durable(dir.0.join("store"))).unwrap();
    let recv = Recv::with_store(store, None);
    let (framed, _) = client(recv.addr, OrderingMode::Ordered).await;
    let (mut tx, mut rx) = framed.split();
    const N: u64 = 5_000;
    let writer = tokio::spawn(async move {
        for id in 1..=N {
            let w = Write::put(Generator::key(id % 97), Generator::value(id, 200), id, 1);
            tx.feed(Frame::write(id, w)).await.unwrap();
        }
        SinkExt::<Frame>::flush(&mut tx).await.unwrap();
        tx
    });
    let mut ids = Vec::with_capacity(N as usize);
    tokio::time::timeout(LIMIT, async {
        while ids.len() < N as usize {
            let f = rx.next().await.unwrap().unwrap();
            assert!(matches!(f.body, Message::Ack(_)), "{f:?}");
            ids.push(f.request_id);
        }
    })
    .await
    .expect("all answers in time");
    let _tx = writer.await.unwrap();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_answers_stay_in_request_order_when_many_requests_arrive_in_one_write() {
    // The memory store answers at once, so the receiver takes every request
    // already read before answering and sends the answers together: they
    // must still come one per request, in request order.
    let recv = Recv::start(ServerConfig::default());
    let (mut framed, _) = client(recv.addr, OrderingMode::Ordered).await;
    const N: u64 = 500;
    let mut codec = WireCodec::new();
    let mut wire = bytes::BytesMut::new();
    for id in 1..=N {
        let w = Write::put(Generator::key(id % 13), Generator::value(id, 100), id, 1);
        if id % 2 == 0 {
            codec.encode_write(id, &w, &mut wire).unwrap();
        } else {
            let other = Write::put(Generator::key(id % 7), Generator::value(id, 50), id, 1);
            codec.encode_batch(id, &[w, other], &mut wire).unwrap();
        }
    }
    tokio::io::AsyncWriteExt::write_all(framed.get_mut(), &wire)
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(N as usize);
    tokio::time::timeout(LIMIT, async {
        while ids.len() < N as usize {
            let f = framed.next().await.unwrap().unwrap();
            assert!(matches!(f.body, Message::Ack(_)), "{f:?}");
            ids.push(f.request_id);
        }
    })
    .await
    .expect("all answers in time");
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
    assert_eq!(
        recv.stats.applied.load(Ordering::SeqCst) + recv.stats.lost_conflict.load(Ordering::SeqCst),
        N + N / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_mode_answers_every_request_once_and_keeps_the_newest_version_of_every_key() {
    let dir = TempDir::new("unordered");
    let store = Store::open(StoreConfig::durable(dir.0.join("store"))).unwrap();
    let recv = Recv::with_store(store.clone(), None);
    let (framed, _) = client(recv.addr, OrderingMode::Unordered).await;
    let (mut tx, mut rx) = framed.split();
    // 50 versions of 100 keys, newest first for odd keys and oldest first
    // for even ones: parallel apply must still keep the newest of each.
    let mut writes = Vec::new();
    for k in 0..100u64 {
        let mut versions: Vec<u64> = (1..=50).collect();
        if k % 2 == 1 {
            versions.reverse();
        }
        for v in versions {
            writes.push(Write::put(
                Generator::key(k),
                Generator::value(k * 1000 + v, 64),
                v,
                3,
            ));
        }
    }
    let n = writes.len() as u64;
    let writer = tokio::spawn(async move {
        for (i, w) in writes.into_iter().enumerate() {
            tx.feed(Frame::write(i as u64 + 1, w)).await.unwrap();
        }
        SinkExt::<Frame>::flush(&mut tx).await.unwrap();
        tx
    });
    let mut seen = HashMap::new();
    tokio::time::timeout(LIMIT, async {
        while (seen.len() as u64) < n {
            let f = rx.next().await.unwrap().unwrap();
            let Message::Ack(Ack::All(code)) = f.body else {
                panic!("{f:?}")
            };
            assert!(code.is_success(), "{code}");
            assert!(
                seen.insert(f.request_id, code).is_none(),
                "request {} answered twice",
                f.request_id
            );
        }
    })
    .await
    .expect("all answers in time");
    let _tx = writer.await.unwrap();
    for k in 0..100u64 {
        let got = store.get(&Generator::key(k)).unwrap().unwrap();
        assert_eq!(got.version, 50, "key {k}");
        assert_eq!(
            got.value.as_deref(),
            Some(&Generator::value(k * 1000 + 50, 64)[..])
        );
    }
}

/// A receiver that answers each request after `delay`, recording the most
/// requests it ever held unanswered at once.
async fn slow_fake_receiver(delay: Duration) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let max_unanswered = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (m, r) = (max_unanswered.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (m, r) = (m.clone(), r.clone());
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, WireCodec::new());
                let Some(Ok(Frame {
                    body: Message::Hello(h),
                    ..
                })) = framed.next().await
                else {
                    return;
                };
                let ok = HelloOk {
                    version: 1,
                    mode: h.mode,
                    max_frame: 1 << 24,
                    max_in_flight: 1 << 16,
                };
                framed.send(Frame::hello_ok(ok)).await.unwrap();
                let (mut tx, mut rx) = framed.split();
                let unanswered = Arc::new(AtomicU64::new(0));
                let (atx, mut arx) = tokio::sync::mpsc::channel::<u64>(1 << 16);
                let u = unanswered.clone();
                tokio::spawn(async move {
                    while let Some(id) = arx.recv().await {
                        tokio::time::sleep(delay).await;
                        u.fetch_sub(1, Ordering::SeqCst);
                        if tx.send(Frame::ack(id, ResultCode::Ok)).await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(f)) = rx.next().await {
                    if let Message::Write(_) | Message::Batch(_) = f.body {
                        let now = unanswered.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        r.fetch_add(1, Ordering::SeqCst);
                        if atx.send(f.request_id).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, max_unanswered, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_wait_never_has_more_than_one_request_in_flight() {
    let (addr, max_unanswered, received) = slow_fake_receiver(Duration::from_millis(2)).await;
    let cfg = ShipConfig::new(addr.to_string()).stop_and_wait();
    let mut cfg = cfg;
    cfg.connections = 1;
    cfg.sndbuf = None;
    let summary = ship_all(cfg, Generator::new(spec(10, 100), 1, Some(200))).await;
    assert_eq!(summary.counters.delivered(), 200);
    assert_eq!(received.load(Ordering::SeqCst), 200);
    assert_eq!(max_unanswered.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_connections_keep_many_requests_in_flight() {
    let (addr, max_unanswered, _) = slow_fake_receiver(Duration::from_millis(2)).await;
    let mut cfg = ShipConfig::new(addr.to_string());
    cfg.connections = 1;
    cfg.window = WindowSetting::Fixed(100);
    cfg.batch_max_records = 1;
    cfg.sndbuf = None;
    let summary = ship_all(cfg, Generator::new(spec(10, 100), 1, Some(2_000))).await;
    assert_eq!(summary.counters.delivered(), 2_000);
    let max = max_unanswered.load(Ordering::SeqCst);
    assert!((50..=100).contains(&max), "max in flight {max}, window 100");
}

/// A store that answers each request [`SLOW_ANSWER`] after taking it.
struct Slow(Store);

const SLOW_ANSWER: Duration = Duration::from_millis(20);

impl Sink for Slow {
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let inner = Sink::apply(&self.0, writes);
        Box::pin(async move {
            tokio::time::sleep(SLOW_ANSWER).await;
            inner.await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipper_resends_after_the_receiver_restarts_and_the_store_gets_everything() {
    let dir = TempDir::new("restart");
    let path = dir.0.join("store");
    let store = Store::open(StoreConfig::durable(path.clone())).unwrap();
    // Answers held back a little, so that requests are surely in flight
    // when the receiver dies (on an idle loopback they are answered in
    // microseconds, and a kill could fall between two of them).
    let recv = Recv::with_sink_at(Arc::new(Slow(store.clone())), None);
    let addr = recv.addr;
    let (n, keys, size) = (60_000u64, 5_000u64, 200usize);
    let mut cfg = ShipConfig::new(addr.to_string());
    cfg.connections = 4;
    cfg.window = WindowSetting::Fixed(256);
    cfg.max_throughput = Some(20_000);
    cfg.sndbuf = None;
    let shipping = tokio::spawn(ship_all(cfg, Generator::new(spec(keys, size), 2, Some(n))));

    // Let it run, then kill the receiver mid-stream and bring it back on
    // the same port with the same store.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let applied_before = recv.stats.applied.load(Ordering::Relaxed);
    recv.kill().await;
    store.clone().close().await.unwrap();
    drop(store);
    assert!(
        applied_before > 0 && applied_before < n,
        "applied {applied_before} before the kill"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = Store::open(StoreConfig::durable(path)).unwrap();
    let _recv = Recv::with_store(store.clone(), Some(addr));

    let summary = shipping.await.unwrap();
    assert_eq!(
        summary.counters.delivered(),
        n,
        "{:?}; unanswered {} after {:?}",
        summary.counters,
        summary.unanswered,
        summary.elapsed
    );
    assert!(
        summary.counters.retry_conn_reset > 0,
        "{:?}",
        summary.counters
    );
    for k in 0..keys {
        let (version, value) = expected(n, keys, size, k).unwrap();
        let got = store
            .get(&Generator::key(k))
            .unwrap()
            .unwrap_or_else(|| panic!("key {k} missing"));
        assert_eq!(
            (got.version, got.value.as_deref()),
            (version, Some(&value[..])),
            "key {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_is_answered_lost_conflict_and_counted_as_success() {
    let store = Store::memory();
    let newer = Write::put(Generator::key(0), "newer", 100, 1);
    store.apply(vec![newer]).await.unwrap();
    let recv = Recv::with_store(store.clone(), None);
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = 1;
    cfg.sndbuf = None;
    // Generator record 0 writes key 0 at version 1: stale.
    let summary = ship_all(cfg, Generator::new(spec(1, 8), 1, Some(1))).await;
    assert_eq!(summary.counters.lost_conflict, 1);
    assert_eq!(summary.counters.success, 0);
    assert_eq!(summary.counters.delivered(), 1);
    assert_eq!(summary.counters.abandoned, 0);
    assert_eq!(store.get(&Generator::key(0)).unwrap().unwrap().version, 100);
}

/// Counts the records a source hands out.
struct Counting(Generator, Arc<AtomicU64>);
impl Source for Counting {
    async fn next(&mut self) -> Option<SourceRecord> {
        let r = self.0.next().await;
        self.1.fetch_add(1, Ordering::SeqCst);
        r
    }
    fn backlog(&self) -> u64 {
        0
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_blocks_the_source_instead_of_growing_memory() {
    // A receiver that accepts and never answers.
    let (addr, _, received) = slow_fake_receiver(Duration::from_secs(3600)).await;
    let pulled = Arc::new(AtomicU64::new(0));
    let mut cfg = ShipConfig::new(addr.to_string());
    cfg.connections = 2;
    cfg.window = WindowSetting::Fixed(10);
    cfg.batch_max_records = 1;
    cfg.sndbuf = None;
    let stop = CancellationToken::new();
    let cancel = CancellationToken::new();
    let source = Counting(Generator::new(spec(10, 1000), 1, None), pulled.clone());
    let run = tokio::spawn(ship::run(cfg, source, |_| {}, stop.clone(), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_1s = pulled.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let at_2s = pulled.load(Ordering::SeqCst);
    cancel.cancel();
    let summary = tokio::time::timeout(LIMIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // 2 windows of 10 in flight, a hand-over queue of 1024 and one burst
    // (64) held by the dispatcher while the queue is full: nothing more is
    // ever taken from the source.
    assert_eq!(received.load(Ordering::SeqCst), 20);
    assert!(at_2s <= 20 + 1024 + 64, "source handed out {at_2s} records");
    assert_eq!(
        at_1s, at_2s,
        "the source kept producing while every window was full"
    );
    assert_eq!(summary.unanswered, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_that_connection_with_a_reason() {
    let store = Store::memory();
    let recv = Recv::with_store(store.clone(), None);
    let (mut good, _) = client(recv.addr, OrderingMode::Ordered).await;

    let mut bad = TcpStream::connect(recv.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut bad, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut bad = Framed::new(bad, WireCodec::new());
    let reply = tokio::time::timeout(LIMIT, bad.next()).await.unwrap();
    match reply {
        Some(Ok(Frame {
            body: Message::Goodbye(g),
            ..
        })) => {
            assert_eq!(g.code, ResultCode::ProtocolViolation);
            assert!(!g.message.is_empty());
        }
        other => panic!("expected a GOODBYE with a reason, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(LIMIT, bad.next())
            .await
            .unwrap()
            .is_none(),
        "bad connection still open"
    );

    good.send(Frame::write(1, Write::put("k", "v", 1, 1)))
        .await
        .unwrap();
    let f = tokio::time::timeout(LIMIT, good.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(f.body, Message::Ack(Ack::All(ResultCode::Ok)));
    assert_eq!(
        store.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_store_can_never_take_is_refused_as_permanent_and_others_still_apply() {
    let store = Store::memory();
    let recv = Recv::with_store(store.clone(), None);
    let (mut c, _) = client(recv.addr, OrderingMode::Ordered).await;
    c.send(Frame::write(1, Write::put("", "no key", 1, 1)))
        .await
        .unwrap();
    c.send(Frame::write(2, Write::put("k", "v", 1, 1)))
        .await
        .unwrap();
    let first = tokio::time::timeout(LIMIT, c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first.body {
        Message::Nack(n) => {
            assert_eq!(first.request_id, 1);
            assert_eq!(n.code, ResultCode::BadRequest);
            assert!(n.code.is_permanent());
            assert!(n.message.contains("empty"), "{}", n.message);
        }
        other => panic!("expected a NACK, got {other:?}"),
    }
    let second = tokio::time::timeout(LIMIT, c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.body, Message::Ack(Ack::All(ResultCode::Ok)));
    assert!(store.get(b"k").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connected_connection_carries_its_sockets_tcp_info_under_a_unique_cookie() {
    let recv = Recv::with_store(Store::memory(), None);
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = 4;
    cfg.sndbuf = None;
    cfg.interval = Duration::from_millis(200);
    cfg.max_throughput = Some(20_000);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let run = ship::run(
        cfg,
        Generator::new(spec(1000, 100), 1, Some(20_000)),
        move |snap| s.lock().unwrap().push(snap.clone()),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
    let snaps = seen.lock().unwrap();
    let full = snaps
        .iter()
        .find(|s| s.connected == 4)
        .expect("a snapshot with all four connections up");
    let mut cookies: Vec<u64> = full.connections.iter().map(|c| c.cookie).collect();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), 4, "cookies not unique: {cookies:?}");
    assert!(!cookies.contains(&0));
    for c in &full.connections {
        let tcp = c
            .tcp
            .unwrap_or_else(|| panic!("connection {} has no TCP_INFO", c.id));
        assert!(tcp.cwnd_segments > 0 && tcp.srtt_us > 0, "{tcp:?}");
        assert!(tcp.snd_wnd_bytes > 0 && tcp.bytes_acked > 0, "{tcp:?}");
    }
}
