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
/// Prints the soak's `figures` line first (`cargo xtask soak`).
fn assert_same_winner_everywhere(a: &Site, b: &Site) {
    let winner_of = |key: u64| {
        (0..ROUNDS)
            .flat_map(|r| [a.write(r, key), b.write(r, key)])
            .max_by_key(|w| (w.version, w.source_id))
            .unwrap()
    };
    let found = (0..KEYS)
        .filter(|&k| {
            let w = winner_of(k);
            [a, b].iter().all(|s| {
                s.store.get(&w.key).unwrap().is_some_and(|g| {
                    (g.version, g.source_id, g.value) == (w.version, w.source_id, w.value.clone())
                })
            })
        })
        .count() as u64;
    let acked = a.stats.local.load(Ordering::Relaxed) + b.stats.local.load(Ordering::Relaxed);
    println!(
        "figures two sites: runs: link cuts 1 : records written {} : acked {acked} : keys {KEYS} : found at both sites {found} : lost {}",
        2 * ROUNDS * KEYS,
        KEYS - found
    );
    assert_eq!(a.store.digest().unwrap(), b.store.digest().unwrap());
    for key in 0..KEYS {
        let winner = winner_of(key);
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

/// A child process killed (and reaped) when dropped, even on a panic.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn xdr_ship(args: &[String], out: &std::path::Path) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
            .args(args)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .expect("spawn xdr-ship"),
    )
}

/// Waits until something listens on `addr`.
fn wait_listening(addr: SocketAddr) {
    let until = std::time::Instant::now() + LIMIT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < until, "nothing on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ctrl-C to every child, then their exit statuses within [`LIMIT`]
/// (with what each printed on stderr, if one does not stop).
fn interrupt_all(mut children: Vec<(Child, std::path::PathBuf)>) -> Vec<std::process::ExitStatus> {
    for (child, _) in &children {
        let pid = child.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        assert!(sent.unwrap().success());
    }
    let until = std::time::Instant::now() + LIMIT;
    children
        .iter_mut()
        .map(|(child, out)| loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > until {
                let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
                let tail: String = err.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!(
                    "{} did not stop; stderr (last lines, newest first):\n{tail}",
                    out.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        })
        .collect()
}

/// The most records any status line of `out` says were delivered.
fn delivered_so_far(out: &std::path::Path) -> u64 {
    fn find(v: &serde_json::Value) -> u64 {
        let here = v.get("counters").map_or(0, |c| {
            c["success"].as_u64().unwrap_or(0) + c["lost_conflict"].as_u64().unwrap_or(0)
        });
        let below = match v {
            serde_json::Value::Object(m) => m.values().map(find).max().unwrap_or(0),
            serde_json::Value::Array(a) => a.iter().map(find).max().unwrap_or(0),
            _ => 0,
        };
        here.max(below)
    }
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| find(&v))
        .max()
        .unwrap_or(0)
}

/// The `{"site": …}` line a site prints when it stops.
fn site_line(out: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("site").cloned())
        .unwrap_or_else(|| panic!("no site line in {}: {text}", out.display()))
}

#[test]
fn two_site_processes_converge_and_ship_nothing_back() {
    const WRITES: u64 = 2_000;
    const LOAD_KEYS: u64 = 100;
    let dir = TempDir::new("site-procs");
    let (ingest, receive) = ([free_addr(), free_addr()], [free_addr(), free_addr()]);
    let sites: Vec<(Child, std::path::PathBuf)> = (0..2)
        .map(|i| {
            let d = |what: &str| dir.0.join(format!("{what}{i}")).display().to_string();
            let args = [
                "ship",
                "--json",
                "--connections",
                "2",
                "--log",
                &d("log"),
                "--store",
                &d("store"),
                "--listen",
                &ingest[i].to_string(),
                "--receive",
                &receive[i].to_string(),
                "--to",
                &receive[1 - i].to_string(),
                "--source-id",
                &(i + 1).to_string(),
            ]
            .map(str::to_owned);
            let out = dir.0.join(format!("site{i}.out"));
            (xdr_ship(&args, &out), out)
        })
        .collect();
    for addr in ingest.iter().chain(&receive) {
        wait_listening(*addr);
    }
    let loads: Vec<Child> = (0..2)
        .map(|i| {
            let args = [
                "load",
                "--to",
                &ingest[i].to_string(),
                "--count",
                &WRITES.to_string(),
                "--keys",
                &LOAD_KEYS.to_string(),
                "--threads",
                "2",
                "--window",
                "32",
                "--source-id",
                &(i + 1).to_string(),
            ]
            .map(str::to_owned);
            xdr_ship(&args, &dir.0.join(format!("load{i}.out")))
        })
        .collect();
    for mut load in loads {
        assert!(load.0.wait().unwrap().success(), "load failed");
    }
    // The backlogs drain (each site's status lines count its log delivered
    // to the other), then Ctrl-C stops both.
    let until = std::time::Instant::now() + LIMIT;
    while sites.iter().any(|(_, out)| delivered_so_far(out) < WRITES) {
        assert!(
            std::time::Instant::now() < until,
            "the backlogs did not drain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, status) in interrupt_all(sites).into_iter().enumerate() {
        assert!(status.success(), "site {i} failed: {status}");
    }
    let lines: Vec<_> = (0..2)
        .map(|i| site_line(&dir.0.join(format!("site{i}.out"))))
        .collect();
    for line in &lines {
        assert_eq!(line["local"], WRITES, "{line}");
        assert_eq!(line["forwarded"], 0, "{line}");
        assert!(line["shipped_in"].as_u64().unwrap() >= WRITES, "{line}");
    }
    let digest = |i: usize| {
        Store::open(StoreConfig::durable(dir.0.join(format!("store{i}"))))
            .unwrap()
            .digest()
            .unwrap()
    };
    let (a, b) = (digest(0), digest(1));
    assert_eq!(a, b);
    assert_eq!(a.records, LOAD_KEYS);
}
