//! A disk that fills up or fails: the destination store (`recv --store`)
//! on a small loop-mounted ext4 answers `Busy` while it is full, keeps
//! everything it acknowledged, and carries on by itself once space is
//! freed; on lossyfs with `EIO` injected into its files it stops
//! acknowledging, says which file failed and why, and holds every record
//! it acknowledged.
//!
//! Under `load → ship --log → recv --store`, every record its own key, so
//! a key's presence with its version and bytes is that record's. What the
//! destination acknowledged is read from the shipper's checkpoint (the
//! first log position it has not acknowledged). The source node's Redis
//! door (`--listen-resp`), driven by the real `redis-cli` on one
//! connection, answers a `SET` on a full log with an error, stays usable,
//! and takes (and ships) the same `SET` once space returns. Root only
//! (loop and FUSE mounts); every process, mount and image is gone even
//! when a test fails.
use std::{
    fs::File,
    io::{BufRead as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use lossyfs::Fault;
use xdr_ship::{
    ship::Generator,
    store::{Store, StoreConfig},
};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard, TempDir};

/// The loop filesystem's size: room for the store's first records, small
/// enough to fill in a moment.
const LOOP_FS_MIB: u64 = 48;
/// Records acknowledged before the disk fills (or fails).
const ACKED_BEFORE_FAULT: u64 = 1_000;
/// Value bytes per record.
const VALUE_BYTES: usize = 200;
/// Writes per second of the load client.
const RATE: u64 = 2_000;
/// How long the tests watch that nothing more is acknowledged.
const STALL_WATCH: Duration = Duration::from_secs(2);
/// The loop filesystem's block: a full disk still takes what fits the
/// slack of a file's last block.
const BLOCK_BYTES: u64 = 4096;
/// Records that fit one block's slack.
const SLACK_RECORDS: u64 = BLOCK_BYTES / VALUE_BYTES as u64;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(what: &str, cmd: &mut Command) {
    let (ok, out, err) = run_bounded(cmd, Duration::from_secs(30));
    assert!(ok, "{what} failed:\n{out}\n{err}");
}

/// A small ext4 on a loop device, unmounted (and its image removed) on drop.
struct LoopFs {
    image: PathBuf,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(dir: &Path) -> LoopFs {
        let image = dir.join("disk.img");
        let mnt = dir.join("loop");
        std::fs::create_dir_all(&mnt).unwrap();
        File::create(&image)
            .and_then(|f| f.set_len(LOOP_FS_MIB << 20))
            .expect("create the image");
        // -m 0: no blocks reserved for root (the test runs as root).
        sh(
            "mkfs.ext4",
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image),
        );
        sh(
            "mount -o loop",
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mnt),
        );
        LoopFs { image, mnt }
    }

    /// Fills every free block with `filler` (what a full disk looks like).
    fn fill(&self) -> PathBuf {
        let path = self.mnt.join("filler");
        let mut f = File::create(&path).expect("create the filler");
        for chunk in [1 << 20, 4096, 512] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The source node (its log on the plain temp directory) and the
/// destination (its store under `store_parent`). Fields drop in order:
/// processes first.
struct Rig {
    ship: Option<ChildGuard>,
    recv: Option<ChildGuard>,
    load: Option<ChildGuard>,
    dir: TempDir,
    ingest: SocketAddr,
    dest: SocketAddr,
    n: u64,
    /// The source log's directory.
    log: PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        Rig {
            ship: None,
            recv: None,
            load: None,
            dir: TempDir::new(&format!("disk-{tag}")),
            ingest: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dest: SocketAddr::from(([127, 0, 0, 1], free_port())),
            n: RATE * 6,
            log: PathBuf::new(),
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

    fn start(&mut self, store: &Path, log: &Path) {
        let mut recv = Command::new(xdr_ship_bin());
        recv.args(["recv", "--insecure", "--listen", &self.dest.to_string()])
            .arg("--store")
            .arg(store)
            .args(["--interval", "60s"])
            .stdout(Stdio::null())
            .stderr(self.log_file("recv.err"));
        self.recv = Some(ChildGuard(recv.spawn().expect("start recv")));
        self.log = log.to_path_buf();
        let mut ship = Command::new(xdr_ship_bin());
        ship.args(["ship", "--log"])
            .arg(log)
            .args(["--listen", &self.ingest.to_string(), "--ingest-insecure"])
            .args(["--to", &self.dest.to_string()])
            .args(["--connections", "2", "--log-segment", "1MiB"])
            .args(["--json", "--interval", "200ms"])
            .stdout(self.log_file("ship.jsonl"))
            .stderr(self.log_file("ship.err"));
        self.ship = Some(ChildGuard(ship.spawn().expect("start ship")));
        std::thread::sleep(Duration::from_millis(300));
        let mut load = Command::new(xdr_ship_bin());
        load.args(["load", "--to", &self.ingest.to_string()])
            .args(["--count", &self.n.to_string()])
            .args(["--keys", &self.n.to_string()])
            .args(["--size", &VALUE_BYTES.to_string()])
            .args(["--rate", &RATE.to_string()])
            .args(["--threads", "4", "--window", "16"])
            .args(["--json", "--interval", "1s"])
            .stdout(self.log_file("load.jsonl"))
            .stderr(self.log_file("load.err"));
        self.load = Some(ChildGuard(load.spawn().expect("start load")));
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn tail(&self, name: &str) -> String {
        let text = self.read(name);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The destination's checkpoint (first log position not acknowledged).
    fn checkpoint(&self) -> u64 {
        let Ok(dir) = std::fs::read_dir(&self.log) else {
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

    fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Rig) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what} within {limit:?}:\nship:\n{}\nrecv:\n{}\nload:\n{}",
                self.tail("ship.err"),
                self.tail("recv.err"),
                self.tail("load.jsonl")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checkpoint now and after [`STALL_WATCH`].
    fn watch_checkpoint(&self) -> (u64, u64) {
        // Answers already sent when the fault began reach the checkpoint
        // within one persist period.
        std::thread::sleep(Duration::from_secs(1));
        let before = self.checkpoint();
        std::thread::sleep(STALL_WATCH);
        (before, self.checkpoint())
    }

    /// How many bytes the source log's segments grew over [`STALL_WATCH`]
    /// (nothing is acknowledged to the load client that is not in them).
    fn log_growth_bytes(&self) -> u64 {
        let bytes = |r: &Rig| -> u64 {
            std::fs::read_dir(&r.log)
                .map(|d| {
                    d.flatten()
                        .filter(|e| !e.file_name().to_string_lossy().starts_with("ckpt-"))
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)
        };
        std::thread::sleep(Duration::from_secs(1));
        let before = bytes(self);
        std::thread::sleep(STALL_WATCH);
        bytes(self).saturating_sub(before)
    }

    /// Waits for the load client to finish; returns its acknowledged count.
    fn wait_load(&mut self, limit: Duration) -> u64 {
        let mut load = self.load.take().expect("load running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = load.0.try_wait().expect("wait load") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "load did not finish within {limit:?}\n{}\n{}",
                self.tail("ship.err"),
                self.tail("recv.err")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "load failed: {}", self.tail("load.err"));
        let summary = self
            .read("load.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("summary").cloned())
            .expect("a load summary");
        summary["counters"]["success"].as_u64().unwrap()
    }

    /// Stops everything, bounded (SIGINT, then kill).
    fn stop_all(&mut self) {
        for g in [self.load.take(), self.ship.take(), self.recv.take()]
            .into_iter()
            .flatten()
        {
            let mut g = g;
            // SAFETY: `kill` on a pid we spawned and have not reaped.
            unsafe { libc::kill(g.0.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while g.0.try_wait().expect("wait").is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Keys whose version and bytes the store at `store` holds.
    fn found(&self, store: &Path) -> u64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::open(StoreConfig::durable(store.to_path_buf())).expect("open store");
            let mut found = 0u64;
            for k in 0..self.n {
                let rec = store.get(&Generator::key(k)).unwrap();
                if rec.is_some_and(|r| {
                    r.version == k + 1
                        && r.value.as_deref() == Some(&Generator::value(k, VALUE_BYTES)[..])
                }) {
                    found += 1;
                }
            }
            store.close().await.unwrap();
            found
        })
    }
}

/// Which side's disk fills.
#[derive(Clone, Copy, Debug)]
enum Side {
    Store,
    Log,
}

/// Fills `side`'s disk under load, watches, frees the space; checks that
/// it said Busy, acknowledged nothing while full and lost nothing.
fn full_disk(side: Side) {
    require_root();
    let mut rig = Rig::new(&format!("full-{side:?}"));
    let disk = LoopFs::new(&rig.dir.0);
    let (store, log, err) = match side {
        Side::Store => (disk.mnt.join("store"), rig.path("log"), "recv.err"),
        Side::Log => (rig.path("store"), disk.mnt.join("log"), "ship.err"),
    };
    rig.start(&store, &log);
    rig.wait_for(
        "the first records acknowledged",
        Duration::from_secs(30),
        |r| r.checkpoint() >= ACKED_BEFORE_FAULT,
    );
    let filler = disk.fill();
    rig.wait_for("the disk full said", Duration::from_secs(20), |r| {
        r.read(err).contains("answering Busy until space returns")
    });
    // The store side: the destination's acknowledgements stall. The log
    // side: the log's appends (what the load client is answered) stall,
    // and the destination can only acknowledge what was in the log.
    let (stalled, bound, unit) = match side {
        Side::Store => {
            let (from, to) = rig.watch_checkpoint();
            (
                to - from,
                SLACK_RECORDS,
                "records acknowledged by the destination",
            )
        }
        Side::Log => (
            rig.log_growth_bytes(),
            BLOCK_BYTES,
            "bytes appended to the log",
        ),
    };
    assert!(
        stalled <= bound,
        "{side:?}: {stalled} {unit} in {STALL_WATCH:?} on a full disk"
    );
    std::fs::remove_file(&filler).expect("remove the filler");
    let acked = rig.wait_load(Duration::from_secs(90));
    rig.wait_for(
        "every record acknowledged by the destination",
        Duration::from_secs(60),
        |r| r.checkpoint() >= r.n,
    );
    rig.stop_all();
    let found = rig.found(&store);
    let said = rig.read(err);
    println!(
        "figures disk full ({side:?}): runs: 1 : records written {} : acked {acked} : found at the destination {found} : lost {} : {unit} while full {stalled}",
        rig.n,
        acked.saturating_sub(found),
    );
    assert!(
        !said.contains("no more writes") && !said.contains("no more appends"),
        "a full disk failed the {side:?} for good:\n{said}"
    );
    assert_eq!(acked, rig.n, "every write must have been acknowledged");
    assert_eq!(
        found, rig.n,
        "acknowledged writes missing after the disk was full"
    );
}

#[test]
fn a_full_store_answers_busy_keeps_what_it_acknowledged_and_carries_on_when_space_returns() {
    full_disk(Side::Store);
}

#[test]
fn a_full_source_log_answers_busy_keeps_what_it_acknowledged_and_carries_on_when_space_returns() {
    full_disk(Side::Log);
}

#[test]
fn an_eio_stops_acknowledging_names_the_file_and_keeps_what_was_acknowledged() {
    require_root();
    let mut rig = Rig::new("eio");
    std::fs::create_dir_all(rig.path("backing")).unwrap();
    std::fs::create_dir_all(rig.path("mnt")).unwrap();
    let mounted = lossyfs::mount(&rig.path("backing"), &rig.path("mnt")).expect("mount lossyfs");
    rig.start(&rig.path("mnt/store"), &rig.path("log"));
    rig.wait_for(
        "the first records acknowledged",
        Duration::from_secs(30),
        |r| r.checkpoint() >= ACKED_BEFORE_FAULT,
    );
    let control = mounted.control();
    control.inject(Fault {
        writes: true,
        syncs: true,
        matching: Some("store".into()),
    });
    rig.wait_for(
        "the store saying which file failed",
        Duration::from_secs(20),
        |r| r.read("recv.err").contains("Input/output error"),
    );
    let (eio_from, eio_to) = rig.watch_checkpoint();
    rig.stop_all();
    let recv_err = rig.read("recv.err");
    let line = recv_err
        .lines()
        .find(|l| l.contains("Input/output error"))
        .expect("an EIO line");
    assert!(
        line.contains(&rig.path("mnt/store").display().to_string()) && line.contains(".vlog"),
        "the EIO line does not name the store's file: {line}"
    );
    assert_eq!(
        eio_from, eio_to,
        "the destination acknowledged records after its disk failed"
    );
    assert!(control.faults_hit() > 0, "no write or sync hit the fault");
    drop(mounted);
    let found = rig.found(&rig.path("backing/store"));
    println!(
        "figures disk EIO: runs: 1 : records written {} : acked {eio_to} : found at the destination {found} : lost {} : failed operations {}",
        rig.n,
        eio_to.saturating_sub(found),
        control.faults_hit()
    );
    assert!(
        found >= eio_to,
        "the store acknowledged {eio_to} records but holds {found}"
    );
}

/// Longest wait for one `redis-cli` reply: a reply that does not come is
/// a hang.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// One `redis-cli` connection, fed one command a line; its replies read
/// line by line as they come (a thread reads its output, so every wait
/// is bounded).
struct RedisCli {
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    _child: ChildGuard,
}

impl RedisCli {
    fn open(port: u16) -> Self {
        let mut child = ChildGuard(
            Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-cli (Debian's redis-tools package) must be installed"),
        );
        let stdin = child.0.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin,
            lines,
            _child: child,
        }
    }

    /// Sends `command` and returns its reply (redis-cli's blank lines
    /// after an error are skipped; the replies used here are never empty).
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.is_empty() => continue,
                Ok(line) => return line,
                Err(e) => panic!("no reply to `{command}` within {REPLY_WAIT:?}: {e}"),
            }
        }
    }
}

/// `redis-cli -p PORT ARGS…` on a connection of its own; its trimmed output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let (_, out, _) = run_bounded(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
        REPLY_WAIT,
    );
    out.trim().to_owned()
}

#[test]
fn a_set_on_a_full_source_log_gets_an_error_the_connection_lives_and_the_same_set_ships_later() {
    require_root();
    let dir = TempDir::new("disk-full-resp");
    let disk = LoopFs::new(&dir.0);
    let (dest, door) = (free_port(), free_port());
    let _redis = ChildGuard(
        Command::new("redis-server")
            .args(["--port", &dest.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed"),
    );
    let started = Instant::now();
    while redis_cli(dest, &["PING"]) != "PONG" {
        assert!(started.elapsed() < REPLY_WAIT, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ship_err = dir.0.join("ship.err");
    let _ship = ChildGuard(
        Command::new(xdr_ship_bin())
            .args(["ship", "--log"])
            .arg(disk.mnt.join("log"))
            .args(["--listen-resp", &format!("127.0.0.1:{door}")])
            .args(["--to", &format!("redis://127.0.0.1:{dest}")])
            .args(["--connections", "2", "--log-segment", "1MiB"])
            .args(["--interval", "60s"])
            .stdout(Stdio::null())
            .stderr(File::create(&ship_err).unwrap())
            .spawn()
            .expect("start ship"),
    );
    let said = || std::fs::read_to_string(&ship_err).unwrap_or_default();
    let wait = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}:\n{}", said());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(
        "the Redis door listening",
        Box::new(|| std::net::TcpStream::connect(("127.0.0.1", door)).is_ok()),
    );
    let mut cli = RedisCli::open(door);
    let id = cli.ask("CLIENT ID");
    assert_eq!(cli.ask("SET before full"), "OK");
    wait(
        "the first write shipped",
        Box::new(|| redis_cli(dest, &["GET", "before"]) == "full"),
    );

    let filler = disk.fill();
    // What the log's files still hold in their last blocks is taken;
    // a block's worth of value can only fit where space is.
    let value = "v".repeat(BLOCK_BYTES as usize);
    let mut refused = None;
    for n in 0..(2 * SLACK_RECORDS) {
        let key = format!("while-full:{n}");
        let reply = cli.ask(&format!("SET {key} {value}"));
        if reply != "OK" {
            refused = Some((key, reply));
            break;
        }
    }
    let (key, reply) = refused.expect("a SET on a full disk was acknowledged every time");
    assert!(
        reply.starts_with("BUSY the disk under the source log is full")
            && reply.contains("No space left on device")
            && reply.ends_with("retry once space is freed"),
        "a full log's reply (retryable, with the reason): {reply}"
    );
    assert_eq!(
        cli.ask("CLIENT ID"),
        id,
        "the same connection, still usable"
    );
    assert_eq!(cli.ask("PING"), "PONG");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        redis_cli(dest, &["EXISTS", &key]),
        "0",
        "a refused write was shipped"
    );

    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = cli.ask(&format!("SET {key} {value}"));
        if reply == "OK" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SET still refused after space returned: {reply}\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cli.ask("CLIENT ID"), id, "still the same connection");
    wait(
        "the once-refused write shipped",
        Box::new(|| redis_cli(dest, &["STRLEN", &key]) == value.len().to_string()),
    );
    assert_eq!(redis_cli(dest, &["GET", "before"]), "full");
}
