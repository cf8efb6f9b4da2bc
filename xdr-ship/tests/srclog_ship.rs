//! Shipping from the durable source log over loopback: retry classes
//! (Busy backs off and is resent, a permanent refusal goes to the dead-letter
//! file), and destinations that do not hold each other up. No root needed;
//! every test is bounded in time and cleans up after itself.
mod common;

use common::{ship_quietly, Recv, TempDir};

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::{sink::SinkFuture, Applied, Sink},
    ship::{ShipConfig, ShipSummary, WindowSetting},
    srclog::{Log, LogConfig, LogSource},
    store::Store,
    wire::{ResultCode, Write},
};

/// Answers Busy to the first `busy` requests, then applies to the store.
struct BusyFirst {
    store: Store,
    busy: AtomicU64,
}
impl Sink for BusyFirst {
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let left = self.busy.load(Ordering::Relaxed);
        if left > 0 {
            self.busy.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(async { Applied::Refused(ResultCode::Busy, "busy".into()) });
        }
        Sink::apply(&self.store, writes)
    }
}

fn write(n: u64) -> Write {
    Write::put(format!("key:{n:06}"), format!("value-{n}"), n + 1, 1)
}

fn config(addr: SocketAddr) -> ShipConfig {
    let mut cfg = ShipConfig::new(addr.to_string());
    cfg.connections = 2;
    cfg.window = WindowSetting::Fixed(32);
    cfg.sndbuf = None;
    cfg.drain_timeout = Duration::from_secs(10);
    cfg
}

async fn ship_log(cfg: ShipConfig, source: LogSource, cancel: CancellationToken) -> ShipSummary {
    ship_quietly(cfg, source, cancel)
        .await
        .expect("shipping succeeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_retried_with_backoff_until_delivered() {
    let dir = TempDir::new("busy");
    let store = Store::memory();
    let recv = Recv::with_sink(Arc::new(BusyFirst {
        store: store.clone(),
        busy: AtomicU64::new(5),
    }));
    let log = Log::open(LogConfig::new(&dir.0)).unwrap();
    log.append(&(0..500).map(write).collect::<Vec<_>>())
        .await
        .unwrap();
    log.seal();
    let src = LogSource::open(&log, "dest").unwrap();
    let started = std::time::Instant::now();
    let s = ship_log(config(recv.addr), src, CancellationToken::new()).await;
    assert_eq!(s.counters.delivered(), 500);
    assert!(s.counters.retry_dest > 0, "{:?}", s.counters);
    assert_eq!(s.counters.abandoned, 0);
    // Five Busy answers: at least the first backoff (100 ms) was waited.
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(store.digest().unwrap().records, 500);
    log.flush_checkpoints().unwrap();
    assert_eq!(log.checkpoint("dest"), Some(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_goes_to_the_dead_letter_file_and_shipping_moves_on() {
    let dir = TempDir::new("dead");
    let store = Store::memory();
    let recv = Recv::with_sink(Arc::new(store.clone()));
    let log = Log::open(LogConfig::new(dir.0.join("log"))).unwrap();
    let mut writes: Vec<Write> = (0..100).map(write).collect();
    // The destination store refuses an empty key for good.
    writes[40] = Write::put(&b""[..], &b"orphan"[..], 41, 1);
    log.append(&writes).await.unwrap();
    log.seal();
    let src = LogSource::open(&log, "dest").unwrap();
    let mut cfg = config(recv.addr);
    cfg.batch_max_records = 1;
    cfg.dead_letter = Some(dir.0.join("dead.jsonl"));
    let s = ship_log(cfg, src, CancellationToken::new()).await;
    assert_eq!(s.counters.abandoned, 1);
    assert_eq!(s.counters.success, 99);
    let text = std::fs::read_to_string(dir.0.join("dead.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["seq"], 40);
    assert_eq!(lines[0]["code"], "BadRequest");
    assert_eq!(lines[0]["value"], "orphan");
    assert!(lines[0]["reason"].as_str().unwrap().contains("empty"));
    log.flush_checkpoints().unwrap();
    assert_eq!(
        log.checkpoint("dest"),
        Some(100),
        "the checkpoint moves past it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_destination_does_not_hold_up_another() {
    let dir = TempDir::new("two");
    let store = Store::memory();
    let recv = Recv::with_sink(Arc::new(store.clone()));
    // A port nobody listens on: bind, note, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = Log::open(LogConfig::new(&dir.0)).unwrap();
    let up = LogSource::open(&log, "up").unwrap();
    let down = LogSource::open(&log, "down").unwrap();
    let cancel_down = CancellationToken::new();
    let down_task = tokio::spawn(ship_log(config(dead), down, cancel_down.clone()));
    let up_task = tokio::spawn(ship_log(config(recv.addr), up, CancellationToken::new()));
    for i in 0..10 {
        log.append(&(i * 100..(i + 1) * 100).map(write).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    log.seal();
    let s = up_task.await.unwrap();
    assert_eq!(s.counters.delivered(), 1000);
    assert_eq!(store.digest().unwrap().records, 1000);
    cancel_down.cancel();
    let d = down_task.await.unwrap();
    assert_eq!(d.counters.delivered(), 0);
    log.flush_checkpoints().unwrap();
    assert_eq!(log.checkpoint("up"), Some(1000));
    assert_eq!(log.checkpoint("down"), Some(0), "down keeps the whole log");
    assert_eq!(log.stats().first_seq, 0);
}
