//! Nothing acknowledged is lost: the source node (`ship --log --listen`)
//! takes writes from `xdr-ship load`, ships them to `recv --store`, and
//! every test breaks something on the way: kill -9 of the shipper, kill -9
//! of the receiver (each time a new process on the same store), a link
//! outage in the WAN lab, 5% loss in the lab.
//!
//! Each test ends the same way: the load client must have had every write
//! acknowledged, the shipper must have drained by itself (killed shippers
//! are restarted with the same command line, nothing else), and the
//! destination store must equal the last acknowledged version of every key
//! (a digest over all keys, plus a per-key count of what is missing).
//!
//! Sizes come from the environment so that `cargo xtask soak` runs the same
//! tests longer: `XDR_FAULT_KILLS` (kills per test, default 5) and
//! `XDR_FAULT_OUTAGE_S` (outage length, default 30). Each test prints a
//! `figures` line. Root only (namespaces); every process, namespace and
//! directory is removed even when a test fails.
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use xdr_ship::{
    lab::{Lab, LabOptions, LinkConfig, Side},
    ship::Generator,
    store::{Store, StoreConfig, StoreDigest},
    wire::Write,
};
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard, TempDir};

const SOURCE_ID: u64 = 1;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: expected a number"))
        })
        .unwrap_or(default)
}

fn kills() -> u64 {
    env_u64("XDR_FAULT_KILLS", 5).max(5)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A small xorshift, seeded from the clock (printed, for a rerun by hand).
struct Rng(u64);
impl Rng {
    fn new(tag: &str) -> Self {
        let seed = (now_ms() ^ 0x9E37_79B9_7F4A_7C15) | 1;
        println!("{tag}: random seed {seed}");
        Self(seed)
    }
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + Duration::from_nanos(self.0 % (hi - lo).as_nanos().max(1) as u64)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: `kill` on a pid we spawned and have not reaped; no memory is shared.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Sends SIGKILL and reaps.
fn kill_9(mut guard: ChildGuard) {
    signal(&guard.0, libc::SIGKILL);
    guard.0.wait().expect("reap");
}

/// Asks for a graceful stop (SIGINT) and waits for the exit, bounded.
fn stop(mut guard: ChildGuard, what: &str) {
    signal(&guard.0, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while guard.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "{what} did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Where the processes of one test run: on loopback, or across a lab.
enum Net<'a> {
    Loopback,
    Lab(&'a Lab),
}

impl Net<'_> {
    fn command(&self, side: Side) -> Command {
        match self {
            Net::Loopback => Command::new(xdr_ship_bin()),
            Net::Lab(lab) => lab.command(side, xdr_ship_bin()),
        }
    }
}

/// One source node, one destination, one load client, and what they wrote.
struct Rig<'a> {
    net: Net<'a>,
    dir: TempDir,
    ingest: SocketAddr,
    dest: SocketAddr,
    n: u64,
    keys: u64,
    size: usize,
    rate: u64,
    /// `recv --apply-delay`: a slower destination keeps many records in flight.
    apply_delay: Option<&'static str>,
    ship_starts: u64,
    recv_starts: u64,
}

impl<'a> Rig<'a> {
    fn new(tag: &str, net: Net<'a>, ingest: SocketAddr, dest: SocketAddr) -> Self {
        Self {
            net,
            dir: TempDir::new(&format!("faults-{tag}")),
            ingest,
            dest,
            n: 10_000,
            keys: 2_000,
            size: 200,
            rate: 2_000,
            apply_delay: None,
            ship_starts: 0,
            recv_starts: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn log_file(&self, name: &str) -> File {
        File::options()
            .create(true)
            .append(true)
            .open(self.path(name))
            .expect("open a log file")
    }

    fn recv(&mut self) -> ChildGuard {
        self.recv_starts += 1;
        let mut cmd = self.net.command(Side::Far);
        cmd.args([
            "recv",
            "--insecure",
            "--listen",
            &self.dest.to_string(),
            "--store",
        ])
        .arg(self.path("store"))
        .args(["--rcvbuf", "4MiB", "--interval", "60s"])
        .args(
            self.apply_delay
                .map(|d| ["--apply-delay", d])
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::null())
        .stderr(self.log_file("recv.err"));
        ChildGuard(cmd.spawn().expect("start recv"))
    }

    /// The source node, always with the same command line.
    fn ship(&mut self) -> ChildGuard {
        self.ship_starts += 1;
        let mut cmd = self.net.command(Side::Near);
        cmd.args(["ship", "--log"])
            .arg(self.path("log"))
            .args(["--listen", &self.ingest.to_string()])
            // The ingest port is on the lab's address, not loopback, and
            // the test's load client has no token.
            .arg("--ingest-insecure")
            .args(["--to", &self.dest.to_string()])
            .args([
                "--connections",
                "4",
                "--sndbuf",
                "4MiB",
                "--log-segment",
                "4MiB",
                "--json",
                "--interval",
                "200ms",
            ])
            .stdout(self.log_file("ship.jsonl"))
            .stderr(self.log_file("ship.err"));
        ChildGuard(cmd.spawn().expect("start ship"))
    }

    fn load(&self) -> ChildGuard {
        let mut cmd = self.net.command(Side::Near);
        cmd.args(["load", "--to", &self.ingest.to_string()])
            .args(["--count", &self.n.to_string()])
            .args(["--keys", &self.keys.to_string()])
            .args(["--size", &self.size.to_string()])
            .args(["--rate", &self.rate.to_string()])
            .args([
                "--threads",
                "8",
                "--window",
                "16",
                "--json",
                "--interval",
                "1s",
            ])
            .stdout(self.log_file("load.jsonl"))
            .stderr(self.log_file("load.err"));
        ChildGuard(cmd.spawn().expect("start load"))
    }

    fn tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for the load client to end; returns how many writes the
    /// source node acknowledged.
    fn wait_load(&self, mut load: ChildGuard, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = load.0.try_wait().expect("wait load") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "load did not finish within {limit:?}\n{}\n{}",
                self.tail("load.jsonl"),
                self.tail("ship.err")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "load failed: {}", self.tail("load.err"));
        let text = std::fs::read_to_string(self.path("load.jsonl")).unwrap();
        let summary: serde_json::Value = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("summary").is_some())
            .expect("a load summary")["summary"]
            .clone();
        assert_eq!(summary["unanswered"], 0, "{summary}");
        assert_eq!(summary["counters"]["abandoned"], 0, "{summary}");
        summary["counters"]["success"].as_u64().unwrap()
            + summary["counters"]["lost_conflict"].as_u64().unwrap()
    }

    /// Waits until the shipper reports, three snapshots running, every
    /// connection up, nothing outstanding and nothing in flight, after `since_ms`.
    fn wait_drained(&self, since_ms: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(self.path("ship.jsonl")).unwrap_or_default();
            let idle = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["unix_ms"].as_u64().is_some_and(|t| t > since_ms))
                .map(|v| {
                    v["outstanding"] == 0
                        && v["inflight"] == 0
                        && v["connected"].as_u64()
                            == v["connections"].as_array().map(|c| c.len() as u64)
                })
                .collect::<Vec<bool>>();
            if idle.len() >= 3 && idle[idle.len() - 3..].iter().all(|b| *b) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the shipper did not drain within {limit:?}:\n{}\n{}\nrecv.err:\n{}",
                self.tail("ship.jsonl"),
                self.tail("ship.err"),
                self.tail("recv.err")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Compares the destination store with the last version of every key
    /// the load wrote (all of it acknowledged); returns keys found right.
    fn verify(&self, tag: &str, acked: u64) -> u64 {
        assert_eq!(acked, self.n, "every write must have been acknowledged");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (want, got, found) = rt.block_on(async {
            let want = expected_digest(self.n, self.keys, self.size).await;
            let store = Store::open(StoreConfig::durable(self.path("store"))).expect("open store");
            let got = store.digest().unwrap();
            let mut found = 0u64;
            for k in 0..self.keys.min(self.n) {
                // The last record that wrote key k.
                let last = k + self.keys * ((self.n - 1 - k) / self.keys);
                let rec = store.get(&Generator::key(k)).unwrap();
                if rec.is_some_and(|r| {
                    r.version == last + 1
                        && r.value.as_deref() == Some(&Generator::value(last, self.size)[..])
                }) {
                    found += 1;
                }
            }
            store.close().await.unwrap();
            (want, got, found)
        });
        let lost = self.keys.min(self.n) - found;
        println!(
            "figures {tag}: runs: shipper {} receiver {} : records written {} : acked {} : keys {} : found at the destination {found} : lost {lost}",
            self.ship_starts,
            self.recv_starts,
            self.n,
            acked,
            self.keys.min(self.n),
        );
        assert_eq!(lost, 0, "{lost} keys miss their last acknowledged version");
        assert_eq!(
            got, want,
            "the destination's digest differs from the source's"
        );
        found
    }
}

/// The digest of a store holding the last version of every key of records `0..n`.
async fn expected_digest(n: u64, keys: u64, size: usize) -> StoreDigest {
    let store = Store::memory();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let writes: Vec<Write> = (i..end)
            .map(|j| {
                Write::put(
                    Generator::key(j % keys),
                    Generator::value(j, size),
                    j + 1,
                    SOURCE_ID,
                )
            })
            .collect();
        store.apply(writes).await.unwrap();
        i = end;
    }
    store.digest().unwrap()
}

fn loopback() -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    )
}

#[test]
fn kill_9_of_the_shipper_at_random_points_loses_nothing_acknowledged() {
    require_root();
    let k = kills();
    let (ingest, dest) = loopback();
    let mut rig = Rig::new("ship9", Net::Loopback, ingest, dest);
    rig.n = rig.rate * (k * 3 / 2 + 4);
    // Every record its own key: a lost record cannot hide behind a later
    // write of the same key. A slower destination keeps thousands of records
    // in flight and queued at every kill: the checkpoint must not pass them.
    rig.keys = rig.n;
    rig.apply_delay = Some("150ms");
    let recv = rig.recv();
    let mut ship = rig.ship();
    std::thread::sleep(Duration::from_millis(300));
    let load = rig.load();
    let mut rng = Rng::new("ship9");
    for _ in 0..k {
        std::thread::sleep(rng.between(Duration::from_millis(300), Duration::from_millis(1500)));
        kill_9(ship);
        ship = rig.ship();
    }
    let acked = rig.wait_load(load, Duration::from_secs(120 + 10 * k));
    rig.wait_drained(now_ms(), Duration::from_secs(60));
    stop(ship, "ship");
    stop(recv, "recv");
    rig.verify("shipper kill -9", acked);
}

#[test]
fn kill_9_of_the_receiver_loses_nothing_and_the_shipper_resumes_by_itself() {
    require_root();
    let k = kills();
    let (ingest, dest) = loopback();
    let mut rig = Rig::new("recv9", Net::Loopback, ingest, dest);
    rig.n = rig.rate * (k * 3 / 2 + 4);
    rig.keys = rig.n;
    let mut recv = rig.recv();
    let ship = rig.ship();
    std::thread::sleep(Duration::from_millis(300));
    let load = rig.load();
    let mut rng = Rng::new("recv9");
    for _ in 0..k {
        std::thread::sleep(rng.between(Duration::from_millis(300), Duration::from_millis(1500)));
        kill_9(recv);
        // A new process on the same store, after a random pause.
        std::thread::sleep(rng.between(Duration::from_millis(0), Duration::from_millis(500)));
        recv = rig.recv();
    }
    let acked = rig.wait_load(load, Duration::from_secs(120 + 10 * k));
    rig.wait_drained(now_ms(), Duration::from_secs(60));
    assert_eq!(rig.ship_starts, 1, "the shipper was never restarted");
    stop(ship, "ship");
    stop(recv, "recv");
    rig.verify("receiver kill -9", acked);
}

#[test]
fn a_receiver_restarted_gracefully_as_a_new_process_misses_nothing() {
    require_root();
    let (ingest, dest) = loopback();
    let mut rig = Rig::new("recvnew", Net::Loopback, ingest, dest);
    rig.n = 6_000;
    let recv = rig.recv();
    let ship = rig.ship();
    std::thread::sleep(Duration::from_millis(300));
    let load = rig.load();
    std::thread::sleep(Duration::from_millis(1200));
    stop(recv, "recv");
    std::thread::sleep(Duration::from_millis(500));
    let recv = rig.recv();
    let acked = rig.wait_load(load, Duration::from_secs(120));
    rig.wait_drained(now_ms(), Duration::from_secs(60));
    stop(ship, "ship");
    stop(recv, "recv");
    rig.verify("receiver restart", acked);
}

/// A lab named for this test: 20 ms RTT, 20 MB/s, plus `tweak`.
fn lab(tag: &str, tweak: impl FnOnce(&mut LinkConfig)) -> Lab {
    let mut link = LinkConfig::new(Duration::from_millis(20), 20_000_000);
    tweak(&mut link);
    Lab::up(
        &format!("t{}-{tag}", std::process::id()),
        link,
        LabOptions::default(),
    )
    .expect("lab up")
}

fn lab_addrs(lab: &Lab) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::from((lab.addr(Side::Near), 3100)),
        SocketAddr::from((lab.addr(Side::Far), 3000)),
    )
}

#[test]
fn a_link_outage_in_the_lab_loses_nothing_and_memory_stays_flat_while_the_backlog_builds() {
    require_root();
    let outage = Duration::from_secs(env_u64("XDR_FAULT_OUTAGE_S", 30));
    let lab = lab("outage", |_| {});
    let (ingest, dest) = lab_addrs(&lab);
    let mut rig = Rig::new("outage", Net::Lab(&lab), ingest, dest);
    rig.size = 1000;
    rig.rate = 1_500;
    rig.keys = 20_000;
    rig.n = rig.rate * (outage.as_secs() + 10);
    let recv = rig.recv();
    let ship = rig.ship();
    std::thread::sleep(Duration::from_millis(500));
    let load = rig.load();
    std::thread::sleep(Duration::from_secs(3));

    lab.set_link_up(false);
    let down_at = Instant::now();
    // Let the windows fill and the shipper settle before the baseline.
    std::thread::sleep(Duration::from_secs(3));
    let (rss0, log0) = (rss_bytes(ship.0.id()), dir_bytes(&rig.path("log")));
    let mut rss_max = rss0;
    while down_at.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(rss_bytes(ship.0.id()));
    }
    let log1 = dir_bytes(&rig.path("log"));
    lab.set_link_up(true);
    let backlog = log1.saturating_sub(log0);
    let growth = rss_max.saturating_sub(rss0);
    println!(
        "figures outage: {:?} down : log grew {:.1} MB : shipper RSS {:.1} MB -> max {:.1} MB (+{:.1} MB) : line dropped {} segments",
        outage,
        backlog as f64 / 1e6,
        rss0 as f64 / 1e6,
        rss_max as f64 / 1e6,
        growth as f64 / 1e6,
        lab.stats().near_to_far.drops_down
    );
    assert!(
        lab.stats().near_to_far.drops_down > 0,
        "the outage dropped nothing"
    );
    assert!(
        backlog >= 10 << 20,
        "the backlog grew only {backlog} bytes: the outage did not hold writes back"
    );
    assert!(
        growth < 24 << 20 && growth < backlog / 2,
        "shipper RSS grew {growth} bytes while the log grew {backlog}: memory follows the backlog"
    );

    let acked = rig.wait_load(load, Duration::from_secs(180 + outage.as_secs()));
    rig.wait_drained(now_ms(), Duration::from_secs(120));
    assert_eq!(rig.ship_starts, 1);
    stop(ship, "ship");
    stop(recv, "recv");
    rig.verify("link outage", acked);
    drop(lab);
}

#[test]
fn five_percent_loss_in_the_lab_loses_nothing() {
    require_root();
    let lab = lab("loss5", |l| l.loss = 0.05);
    let (ingest, dest) = lab_addrs(&lab);
    let mut rig = Rig::new("loss5", Net::Lab(&lab), ingest, dest);
    rig.n = 8_000;
    rig.rate = 1_000;
    let recv = rig.recv();
    let ship = rig.ship();
    std::thread::sleep(Duration::from_millis(500));
    let load = rig.load();
    let acked = rig.wait_load(load, Duration::from_secs(120));
    rig.wait_drained(now_ms(), Duration::from_secs(120));
    let drops = lab.stats().near_to_far.drops_loss + lab.stats().far_to_near.drops_loss;
    assert!(drops > 0, "the line dropped nothing");
    println!("loss5: the line dropped {drops} segments");
    stop(ship, "ship");
    stop(recv, "recv");
    rig.verify("5% loss", acked);
    drop(lab);
}
