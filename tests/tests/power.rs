//! Nothing acknowledged is lost when the power goes: the source log
//! (`ship --log`) and the destination store (`recv --store`) live on
//! lossyfs, a FUSE filesystem that, on a power cut, drops every byte and
//! name not made durable by an fsync (and tears the newest write at a
//! random byte). A `kill -9` cannot test this: it keeps the page cache, so
//! an acknowledgement sent before the fdatasync looks like one sent after.
//!
//! Each cut: power off (the filesystem now fails everything), `kill -9` of
//! the shipper and the receiver, unmount, mount again over what survived,
//! start both again with the same command lines. The load client keeps
//! sending throughout (it resends what was not acknowledged). At the end a
//! last cut after a graceful stop, then the store is read from the backing
//! directory: the last acknowledged version of every key must be there
//! with its bytes (every record its own key, so nothing hides behind a
//! later write).
//!
//! `XDR_POWER_CUTS` sets the number of cuts (default 4; `cargo xtask soak`
//! runs 50). A variant with a store that acknowledges before fdatasync
//! (a hidden test switch) must lose writes: proof that the test can fail.
//! Root only (FUSE mounts); every process and mount is gone even when a
//! test fails.
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lossyfs::Mounted;
use xdr_ship::{
    ship::Generator,
    store::{Store, StoreConfig},
};
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard, TempDir};

/// The store's hidden switch that acknowledges before fdatasync.
const BROKEN_ENV: &str = "XDR_SHIP_TEST_BROKEN_ACK_BEFORE_FSYNC";

fn cuts() -> u64 {
    std::env::var("XDR_POWER_CUTS")
        .ok()
        .map(|v| v.parse().expect("XDR_POWER_CUTS: a number"))
        .unwrap_or(4)
        .max(1)
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
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + Duration::from_nanos(self.next() % (hi - lo).as_nanos().max(1) as u64)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kill_9(guard: Option<ChildGuard>) {
    if let Some(mut g) = guard {
        let _ = g.0.kill();
        let _ = g.0.wait();
    }
}

/// Asks for a graceful stop (SIGINT) and waits for the exit, bounded.
fn stop(guard: Option<ChildGuard>, what: &str) {
    let Some(mut guard) = guard else { return };
    // SAFETY: `kill` on a pid we spawned and have not reaped.
    unsafe { libc::kill(guard.0.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while guard.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "{what} did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The source node and the destination on one lossyfs mount. Fields drop
/// in order: processes, then the mount, then the directories.
struct Rig {
    ship: Option<ChildGuard>,
    recv: Option<ChildGuard>,
    mounted: Option<Mounted>,
    dir: TempDir,
    ingest: SocketAddr,
    dest: SocketAddr,
    n: u64,
    size: usize,
    rate: u64,
    broken: bool,
    starts: u64,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = TempDir::new(&format!("power-{tag}"));
        std::fs::create_dir_all(dir.0.join("backing")).unwrap();
        std::fs::create_dir_all(dir.0.join("mnt")).unwrap();
        let mut rig = Rig {
            ship: None,
            recv: None,
            mounted: None,
            dir,
            ingest: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dest: SocketAddr::from(([127, 0, 0, 1], free_port())),
            n: 10_000,
            size: 200,
            rate: 2_000,
            broken: false,
            starts: 0,
        };
        rig.mount();
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn mount(&mut self) {
        let m = lossyfs::mount(&self.path("backing"), &self.path("mnt")).expect("mount lossyfs");
        self.mounted = Some(m);
    }

    fn log_file(&self, name: &str) -> File {
        File::options()
            .create(true)
            .append(true)
            .open(self.path(name))
            .expect("open a log file")
    }

    fn start(&mut self) {
        self.starts += 1;
        let mut recv = Command::new(xdr_ship_bin());
        recv.args(["recv", "--insecure", "--listen", &self.dest.to_string()])
            .arg("--store")
            .arg(self.path("mnt/store"))
            .args(["--interval", "60s"])
            .stdout(Stdio::null())
            .stderr(self.log_file("recv.err"));
        if self.broken {
            recv.env(BROKEN_ENV, "1");
        }
        self.recv = Some(ChildGuard(recv.spawn().expect("start recv")));
        let mut ship = Command::new(xdr_ship_bin());
        ship.args(["ship", "--log"])
            .arg(self.path("mnt/log"))
            .args(["--listen", &self.ingest.to_string(), "--ingest-insecure"])
            .args(["--to", &self.dest.to_string()])
            .args(["--connections", "2", "--log-segment", "1MiB"])
            .args(["--json", "--interval", "200ms"])
            .stdout(self.log_file("ship.jsonl"))
            .stderr(self.log_file("ship.err"));
        self.ship = Some(ChildGuard(ship.spawn().expect("start ship")));
    }

    /// Power off at this instant, then what follows: both processes die,
    /// the mount goes, and comes back over what was durable.
    fn power_cut(&mut self, tear_seed: Option<u64>) -> lossyfs::CutReport {
        let control = self.mounted.as_ref().expect("mounted").control();
        let report = control.power_cut(tear_seed).expect("power cut");
        self.after_cut();
        report
    }

    /// What follows a power cut that already fell: both processes die, the
    /// mount goes and comes back over what was durable.
    fn after_cut(&mut self) {
        let m = self.mounted.take().expect("mounted");
        kill_9(self.ship.take());
        kill_9(self.recv.take());
        m.unmount().expect("unmount");
        self.mount();
    }

    /// The shipper's checkpoint for the destination as the page cache holds
    /// it now (the first position not yet acknowledged), 0 before it exists.
    fn live_checkpoint(&self) -> u64 {
        let Ok(dir) = std::fs::read_dir(self.path("backing/log")) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("ckpt-") && name.ends_with(".json")
            })
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["next"].as_u64())
            .max()
            .unwrap_or(0)
    }

    fn load(&self) -> ChildGuard {
        let mut cmd = Command::new(xdr_ship_bin());
        cmd.args(["load", "--to", &self.ingest.to_string()])
            .args(["--count", &self.n.to_string()])
            .args(["--keys", &self.n.to_string()])
            .args(["--size", &self.size.to_string()])
            .args(["--rate", &self.rate.to_string()])
            .args(["--threads", "4", "--window", "16"])
            .args(["--json", "--interval", "1s"])
            .stdout(self.log_file("load.jsonl"))
            .stderr(self.log_file("load.err"));
        ChildGuard(cmd.spawn().expect("start load"))
    }

    fn tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for the load client; returns how many writes were acknowledged.
    fn wait_load(&self, mut load: ChildGuard, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = load.0.try_wait().expect("wait load") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "load did not finish within {limit:?}\n{}\n{}\n{}",
                self.tail("load.jsonl"),
                self.tail("ship.err"),
                self.tail("recv.err")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "load failed: {}", self.tail("load.err"));
        let text = std::fs::read_to_string(self.path("load.jsonl")).unwrap();
        let summary = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("summary").cloned())
            .expect("a load summary");
        assert_eq!(summary["unanswered"], 0, "{summary}");
        summary["counters"]["success"].as_u64().unwrap()
            + summary["counters"]["lost_conflict"].as_u64().unwrap()
    }

    /// Waits until the shipper reports, three snapshots running, nothing
    /// outstanding and nothing in flight, after `since_ms`.
    fn wait_drained(&self, since_ms: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(self.path("ship.jsonl")).unwrap_or_default();
            let idle: Vec<bool> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["unix_ms"].as_u64().is_some_and(|t| t > since_ms))
                .map(|v| v["outstanding"] == 0 && v["inflight"] == 0)
                .collect();
            if idle.len() >= 3 && idle[idle.len() - 3..].iter().all(|b| *b) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the shipper did not drain within {limit:?}:\n{}\n{}",
                self.tail("ship.err"),
                self.tail("recv.err")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many times a restarted process cut a torn tail off its files.
    fn torn_tails_cut(&self) -> usize {
        ["ship.err", "recv.err"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(self.path(f))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("cutting"))
                    .count()
            })
            .sum()
    }

    /// Keys whose last acknowledged version (with its bytes) is in the
    /// store as the backing directory holds it now.
    fn found(&self, store: &Path) -> u64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::open(StoreConfig::durable(store.to_path_buf())).expect("open store");
            let mut found = 0u64;
            for k in 0..self.n {
                let rec = store.get(&Generator::key(k)).unwrap();
                if rec.is_some_and(|r| {
                    r.version == k + 1
                        && r.value.as_deref() == Some(&Generator::value(k, self.size)[..])
                }) {
                    found += 1;
                }
            }
            store.close().await.unwrap();
            found
        })
    }
}

/// Runs `cuts` power cuts under load, drains, stops, cuts once more and
/// counts what the destination holds. Returns (acknowledged, found).
fn run_with_cuts(rig: &mut Rig, tag: &str, cuts: u64) -> (u64, u64) {
    rig.start();
    std::thread::sleep(Duration::from_millis(300));
    let load = rig.load();
    let mut rng = Rng::new(tag);
    let mut dropped = 0u64;
    for _ in 0..cuts {
        std::thread::sleep(rng.between(Duration::from_millis(600), Duration::from_millis(1500)));
        let seed = rng.next();
        dropped += rig.power_cut(Some(seed)).bytes_dropped;
        rig.start();
    }
    finish(rig, load, tag, cuts, dropped)
}

/// After the cuts: waits for the load and the drain, stops gracefully,
/// cuts once more and counts what the destination holds. Prints the
/// figures; returns (acknowledged, found).
fn finish(rig: &mut Rig, load: ChildGuard, tag: &str, cuts: u64, dropped: u64) -> (u64, u64) {
    let mut dropped = dropped;
    let acked = rig.wait_load(load, Duration::from_secs(90 + 10 * cuts));
    rig.wait_drained(now_ms(), Duration::from_secs(60));
    stop(rig.ship.take(), "ship");
    stop(rig.recv.take(), "recv");
    // Whatever a graceful stop did not make durable goes too.
    dropped += rig.power_cut(None).bytes_dropped;
    let found = rig.found(&rig.path("backing/store"));
    println!(
        "figures power cuts {tag}: runs: cuts {cuts} starts {} : records written {} : acked {acked} : found at the destination {found} : lost {} : bytes dropped by cuts {dropped} : torn tails cut {}",
        rig.starts,
        rig.n,
        acked.saturating_sub(found),
        rig.torn_tails_cut(),
    );
    (acked, found)
}

#[test]
fn power_cuts_under_load_lose_nothing_acknowledged() {
    require_root();
    let k = cuts();
    let mut rig = Rig::new("cuts");
    rig.n = rig.rate * (k + 3);
    let (acked, found) = run_with_cuts(&mut rig, "store+log", k);
    assert_eq!(acked, rig.n, "every write must have been acknowledged");
    assert_eq!(found, acked, "acknowledged writes missing after power cuts");
}

/// Acknowledged by the destination (the shipper's live checkpoint past it)
/// before the broken variant's cut is armed.
const BROKEN_ACKED_BEFORE_ARM: u64 = 1_000;

/// The broken store acknowledges before any fdatasync, so none of its
/// records is durable (its 64 MiB segment never fills here). The cut falls
/// the moment the shipper's checkpoint file becomes durable (lossyfs fires
/// it inside the directory fsync that persists the rename) after the
/// destination acknowledged [`BROKEN_ACKED_BEFORE_ARM`] records: the
/// restarted shipper resumes past records the store no longer holds. No
/// lucky timing: the window in which a cut found the store's data synced
/// anyway (a random instant before any checkpoint past them was durable,
/// so the shipper resent) is gone.
#[test]
fn a_store_that_acknowledges_before_fdatasync_is_caught_losing_writes() {
    require_root();
    let mut rig = Rig::new("broken");
    rig.broken = true;
    rig.n = rig.rate * 4;
    rig.start();
    std::thread::sleep(Duration::from_millis(300));
    let load = rig.load();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.live_checkpoint() < BROKEN_ACKED_BEFORE_ARM {
        assert!(
            Instant::now() < deadline,
            "the destination did not acknowledge {BROKEN_ACKED_BEFORE_ARM} records within 30 s:\n{}\n{}",
            rig.tail("ship.err"),
            rig.tail("recv.err")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let control = rig.mounted.as_ref().expect("mounted").control();
    control.cut_when_durable("ckpt-", None);
    let report = control
        .wait_cut(Duration::from_secs(10))
        .expect("no checkpoint became durable within 10 s")
        .expect("power cut");
    rig.after_cut();
    let past = rig.live_checkpoint();
    println!("the cut fell with the checkpoint durable at {past}: {report:?}");
    assert!(
        past >= BROKEN_ACKED_BEFORE_ARM,
        "the durable checkpoint is at {past}, before the arming point"
    );
    rig.start();
    let (acked, found) = finish(
        &mut rig,
        load,
        "broken store (must lose)",
        1,
        report.bytes_dropped,
    );
    assert_eq!(acked, rig.n, "every write must have been acknowledged");
    // Every record before the durable checkpoint was acknowledged by the
    // store and never synced, and is never sent again.
    let lost = acked - found;
    assert!(
        lost >= past,
        "the broken store lost {lost} writes, fewer than the {past} its durable checkpoint passed: the power-cut test cannot see a missing fdatasync"
    );
    println!("the broken variant lost {lost} acknowledged writes");
}
