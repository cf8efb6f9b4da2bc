//! Two sites writing at once (XDR's active-active, #15 item 3): sites A and
//! B each take local writes for the same keys, with deliberately crossing
//! and tied versions, and ship their logs to each other; B's receiving port
//! is killed mid-run (every connection to it cut mid-stream) and restarted.
//! Once the writers stop and both logs drain, both stores must hold the
//! same winner for every key, the greatest `(version, source id)` written,
//! and with `forward` off nothing that arrived by shipping is shipped again.
//! Loopback in one process, durable stores and logs, bounded in time.
mod common;

use common::{ship_quietly, TempDir, LIMIT};

use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    server::{self, Applied, ServerConfig, ServerStats, Sink},
    ship::{ShipConfig, WindowSetting},
    srclog::{
        site::{LocalSink, ShippedSink, SiteStats},
        Log, LogConfig, LogSource,
    },
    store::{Store, StoreConfig},
    wire::Write,
};

/// Keys both sites write.
const KEYS: u64 = 200;
/// Rounds of writes per site, one request of `KEYS` writes each.
const ROUNDS: u64 = 20;
/// Pause between a site's rounds, so that shipping interleaves with them.
const ROUND_PAUSE: Duration = Duration::from_millis(25);
/// How long B's receiving port stays down.
const OUTAGE: Duration = Duration::from_millis(500);

/// A site: its log, its store, and its doors' counters.
struct Site {
    source_id: u64,
    log: Log,
    store: Store,
    stats: Arc<SiteStats>,
    _dir: TempDir,
}

impl Site {
    fn open(tag: &str, source_id: u64) -> Self {
        let dir = TempDir::new(tag);
        Self {
            source_id,
            log: Log::open(LogConfig::new(dir.0.join("log"))).expect("open the log"),
            store: Store::open(StoreConfig::durable(dir.0.join("store"))).expect("open the store"),
            stats: Arc::new(SiteStats::default()),
            _dir: dir,
        }
    }

    /// The other sites' door, forwarding if asked.
    fn shipped_sink(&self, forward: bool) -> Arc<dyn Sink> {
        Arc::new(ShippedSink::new(
            self.store.clone(),
            forward.then(|| self.log.clone()),
            self.stats.clone(),
        ))
    }

    /// Site `source_id`'s write of `key` in `round`: versions cross the
    /// other site's (A leads on some keys, B on others, they tie on the
    /// rest, where the source id decides).
    fn write(&self, round: u64, key: u64) -> Write {
        let lead = if self.source_id == 1 {
            key % 2
        } else {
            (key / 2) % 2
        };
        Write::put(
            format!("key:{key:04}"),
            format!("site{}-round{round}-key{key}", self.source_id),
            round * 4 + lead,
            self.source_id,
        )
    }
}

/// A receiving port in this process that can be killed and restarted at
/// the same address.
struct Port {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    task: JoinHandle<()>,
}

impl Port {
    fn start(sink: Arc<dyn Sink>, at: Option<SocketAddr>) -> Self {
        let cfg = ServerConfig {
            rcvbuf: None,
            ..ServerConfig::default()
        };
        let at = at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let (listener, _) = server::bind(at, &cfg).expect("bind the receiving port");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ServerStats::default());
        let served = stats.clone();
        let task = tokio::spawn(async move {
            server::serve(listener, sink, cfg, served, CancellationToken::new())
                .await
                .expect("serve");
        });
        Self { addr, stats, task }
    }

    /// Drops every connection mid-stream, and the listener.
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.addr
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ship_config(to: SocketAddr) -> ShipConfig {
    let mut cfg = ShipConfig::new(to.to_string());
    cfg.connections = 2;
    cfg.window = WindowSetting::Fixed(64);
    cfg.sndbuf = None;
    cfg.drain_timeout = Duration::from_secs(20);
    cfg
}

/// Ships `from`'s log to `to` until the log is sealed and drained;
/// returns how many records were delivered.
fn ship(from: &Site, name: &str, to: SocketAddr) -> JoinHandle<u64> {
    let source = LogSource::open(&from.log, name).expect("a log source");
    tokio::spawn(async move {
        let s = ship_quietly(ship_config(to), source, CancellationToken::new())
            .await
            .expect("shipping succeeded");
        assert_eq!(s.counters.abandoned, 0, "{:?}", s.counters);
        s.counters.delivered()
    })
}

/// Every round of `site`'s local writes, through its local door.
fn write_locally(site: &Site) -> JoinHandle<()> {
    let sink = LocalSink::new(site.log.clone(), site.store.clone(), site.stats.clone());
    let writes: Vec<Vec<Write>> = (0..ROUNDS)
        .map(|r| (0..KEYS).map(|k| site.write(r, k)).collect())
        .collect();
    tokio::spawn(async move {
        for round in writes {
            let answer = sink.apply(round).await;
            assert!(matches!(answer, Applied::PerWrite(_)), "{answer:?}");
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_converge_on_the_greatest_version_with_the_link_cut_midway() {
    let (a, b) = (Site::open("site-a", 1), Site::open("site-b", 2));
    let port_a = Port::start(a.shipped_sink(false), None);
    let port_b = Port::start(b.shipped_sink(false), None);
    let a_to_b = ship(&a, "b", port_b.addr);
    let b_to_a = ship(&b, "a", port_a.addr);
    let writers = [write_locally(&a), write_locally(&b)];

    // Midway through the writes, B's port goes down and comes back.
    tokio::time::sleep(ROUND_PAUSE * (ROUNDS as u32) / 2).await;
    let at = port_b.kill().await;
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "the cut falls while both sites write"
    );
    tokio::time::sleep(OUTAGE).await;
    let port_b = Port::start(b.shipped_sink(false), Some(at));

    for w in writers {
        tokio::time::timeout(LIMIT, w)
            .await
            .expect("writers done")
            .unwrap();
    }
    a.log.seal();
    b.log.seal();
    let local = ROUNDS * KEYS;
    assert_eq!(a_to_b.await.unwrap(), local, "A's log drained to B");
    assert_eq!(b_to_a.await.unwrap(), local, "B's log drained to A");
    assert!(
        port_b.stats.accepted.load(Ordering::Relaxed) >= 1,
        "A reconnected to B after the cut"
    );

    // Nothing that arrived by shipping went into a log (so none shipped back).
    for site in [&a, &b] {
        assert_eq!(site.log.stats().next_seq, local, "only local writes logged");
        assert_eq!(site.stats.forwarded.load(Ordering::Relaxed), 0);
        assert_eq!(site.stats.local.load(Ordering::Relaxed), local);
        assert!(site.stats.shipped_in.load(Ordering::Relaxed) >= local);
    }
    assert_same_winner_everywhere(&a, &b);
}

/// Both stores equal (digest), and every key holds the greatest
/// `(version, source id)` either site wrote, with that write's value.
fn assert_same_winner_everywhere(a: &Site, b: &Site) {
    assert_eq!(a.store.digest().unwrap(), b.store.digest().unwrap());
    for key in 0..KEYS {
        let winner = (0..ROUNDS)
            .flat_map(|r| [a.write(r, key), b.write(r, key)])
            .max_by_key(|w| (w.version, w.source_id))
            .unwrap();
        for site in [a, b] {
            let got = site.store.get(&winner.key).unwrap().expect("key present");
            assert_eq!(
                (got.version, got.source_id, got.value.as_ref()),
                (winner.version, winner.source_id, winner.value.as_ref()),
                "key {key} at site {}",
                site.source_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_forward_on_an_applied_shipped_write_ships_on_once() {
    let site = Site::open("forward", 1);
    let sink = site.shipped_sink(true);
    let from_b = Write::put("k", "from b", 7, 2);
    assert!(matches!(
        sink.apply(vec![from_b.clone()]).await,
        Applied::PerWrite(_)
    ));
    assert_eq!(
        site.log.stats().next_seq,
        1,
        "applied, so logged to ship on"
    );
    // The same write again (a resend, or it came back round a ring): the
    // store already holds it, so it goes no further.
    sink.apply(vec![from_b]).await;
    assert_eq!(site.log.stats().next_seq, 1);
    assert_eq!(site.stats.forwarded.load(Ordering::Relaxed), 1);
}
