//! Shipping to a Redis Cluster (`--to redis-cluster://SEED`), against a
//! real 3-primary, 3-replica cluster of `redis-server`s on loopback,
//! started by each test and killed on drop (even when a test panics):
//! every key lands on the primary that owns its slot, a slot migrated
//! mid-run loses nothing, and a primary killed mid-run (its replica
//! promoted) loses no acknowledged record.
mod common;

use std::{
    collections::HashMap,
    io::{Read, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::TempDir;
use redis_protocol::resp2::{self, types::BytesFrame};
use tokio_util::sync::CancellationToken;
use xdr_ship::{
    ship::{self, ShipConfig, ShipSummary, Source, SourceRecord, WindowSetting},
    wire::Write,
};

/// Longest wait for the cluster to form, fail over or migrate.
const CLUSTER_WAIT: Duration = Duration::from_secs(40);

/// Six `redis-server`s in cluster mode (3 primaries, 3 replicas), killed
/// on drop.
struct Cluster {
    nodes: Vec<Option<Child>>,
    ports: Vec<u16>,
    _dir: TempDir,
}

/// A loopback port whose cluster bus port (+10000) is free as well.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p PORT ARGS…`, its trimmed output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools package) must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `ok` holds, for at most [`CLUSTER_WAIT`].
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    fn start() -> Self {
        let dir = TempDir::new("redis-cluster");
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let nodes = ports
            .iter()
            .map(|p| {
                let conf = format!("nodes-{p}.conf");
                Some(
                    Command::new("redis-server")
                        .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                        .args(["--cluster-enabled", "yes", "--cluster-config-file", &conf])
                        .args(["--cluster-node-timeout", "2000"])
                        .args(["--dir", dir.0.to_str().unwrap()])
                        .args(["--save", "", "--appendonly", "no"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server (Debian's redis-server package) must be installed"),
                )
            })
            .collect();
        let cluster = Self {
            nodes,
            ports,
            _dir: dir,
        };
        for p in &cluster.ports {
            wait_for("redis-server to answer PING", || {
                cli(*p, &["PING"]) == "PONG"
            });
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok(&cluster.ports);
        wait_for("three primaries with a synced replica each", || {
            cluster.primaries().len() == 3
                && cluster
                    .ports
                    .iter()
                    .filter(|p| {
                        cli(**p, &["INFO", "replication"]).contains("master_link_status:up")
                    })
                    .count()
                    == 3
        });
        cluster
    }

    /// Waits until every node of `ports` says `cluster_state:ok`.
    fn wait_ok(&self, ports: &[u16]) {
        wait_for("cluster_state:ok on every node", || {
            ports
                .iter()
                .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    fn seed(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.ports[0])
    }

    /// The ports of the nodes that say they are primaries (alive ones).
    fn primaries(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .filter(|p| cli(*p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Kills the node at `port` (`kill -9`).
    fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn alive(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `total` puts over `keys` keys (`key:N`, value `vSEQ`, version SEQ+1),
/// remembering what the shipper acknowledged.
struct Writes {
    next: u64,
    total: u64,
    keys: u64,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<u64>>>,
}

impl Writes {
    fn new(total: u64, keys: u64) -> (Self, Arc<Mutex<Vec<u64>>>) {
        Self::with_prefix(total, keys, "key:")
    }

    /// Keys `PREFIXn` (a `{tag}` prefix puts them all in one slot).
    fn with_prefix(total: u64, keys: u64, prefix: &'static str) -> (Self, Arc<Mutex<Vec<u64>>>) {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let w = Self {
            next: 0,
            total,
            keys,
            prefix,
            acked: acked.clone(),
        };
        (w, acked)
    }
}

impl Source for Writes {
    async fn next(&mut self) -> Option<SourceRecord> {
        if self.next == self.total {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let key = format!("{}{}", self.prefix, seq % self.keys);
        Some(SourceRecord {
            seq,
            write: Write::put(key, format!("v{seq}"), seq + 1, 1),
        })
    }
    fn backlog(&self) -> u64 {
        self.total - self.next
    }
    fn acked(&mut self, seq: u64) {
        self.acked.lock().unwrap().push(seq);
    }
    fn wants_acks(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        format!("{} puts over {} keys", self.total, self.keys)
    }
}

fn config(cluster: &Cluster, rate: Option<u64>) -> ShipConfig {
    let mut cfg = ShipConfig::new(cluster.seed());
    cfg.connections = 2;
    cfg.window = WindowSetting::Fixed(256);
    cfg.batch_max_records = 16;
    cfg.sndbuf = None;
    cfg.max_throughput = rate;
    cfg.drain_timeout = Duration::from_secs(30);
    cfg
}

async fn ship(cfg: ShipConfig, source: Writes) -> ShipSummary {
    tokio::time::timeout(
        Duration::from_secs(90),
        ship::run(
            cfg,
            source,
            |_| {},
            CancellationToken::new(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("shipping finished in time")
    .expect("shipping succeeded")
}

/// GET of every key on the node at `port`, pipelined, without following
/// redirects: `Ok(value)` (or `Ok(None)`) where the node owns the key's
/// slot, `Err(text)` for its `MOVED`.
fn get_all(port: u16, keys: &[String]) -> Vec<Result<Option<Bytes>, String>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = BytesMut::new();
    for k in keys {
        let frame = BytesFrame::Array(vec![
            BytesFrame::BulkString("GET".into()),
            BytesFrame::BulkString(Bytes::copy_from_slice(k.as_bytes())),
        ]);
        resp2::encode::extend_encode(&mut out, &frame, false).unwrap();
    }
    stream.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    let mut replies = Vec::with_capacity(keys.len());
    while replies.len() < keys.len() {
        if let Some((frame, _, _)) = resp2::decode::decode_bytes_mut(&mut buf).unwrap() {
            replies.push(match frame {
                BytesFrame::BulkString(v) => Ok(Some(v)),
                BytesFrame::Null => Ok(None),
                BytesFrame::Error(e) => Err(e.to_string()),
                other => panic!("GET answered {other:?}"),
            });
            continue;
        }
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "node {port} closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    replies
}

/// Every key's value as its owner holds it; panics if a key is answered
/// by no primary or by two.
fn values_on_owners(primaries: &[u16], keys: &[String]) -> HashMap<String, (u16, Option<Bytes>)> {
    let mut found: HashMap<String, (u16, Option<Bytes>)> = HashMap::new();
    for p in primaries {
        for (k, r) in keys.iter().zip(get_all(*p, keys)) {
            match r {
                Ok(v) => {
                    let before = found.insert(k.clone(), (*p, v));
                    assert!(before.is_none(), "{k} is answered by two primaries");
                }
                Err(e) => assert!(e.starts_with("MOVED"), "{k} on {p}: {e}"),
            }
        }
    }
    assert_eq!(found.len(), keys.len(), "every key has one owner");
    found
}

/// The sequence number in a `vSEQ` value.
fn seq_of(v: &Option<Bytes>) -> Option<u64> {
    std::str::from_utf8(v.as_ref()?)
        .ok()?
        .strip_prefix('v')?
        .parse()
        .ok()
}

fn keys(n: u64) -> Vec<String> {
    keys_with(n, "key:")
}

fn keys_with(n: u64, prefix: &str) -> Vec<String> {
    (0..n).map(|k| format!("{prefix}{k}")).collect()
}

/// Moves `slot` from the primary at `src` to the one at `dst` by hand
/// (`SETSLOT IMPORTING/MIGRATING`, `MIGRATE` a few keys at a time, then
/// `SETSLOT NODE` everywhere), slowly enough that writes meet `ASK`.
fn migrate_slot(slot: u16, src: u16, dst: u16, primaries: &[u16]) {
    let slot = slot.to_string();
    let (src_id, dst_id) = (
        cli(src, &["CLUSTER", "MYID"]),
        cli(dst, &["CLUSTER", "MYID"]),
    );
    assert_eq!(
        cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]),
        "OK"
    );
    assert_eq!(
        cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]),
        "OK"
    );
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "migrating slot {slot} took too long"
        );
        let listed = cli(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "20"]);
        let keys: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut args = vec!["MIGRATE", "127.0.0.1"];
        let dst_port = dst.to_string();
        args.extend([dst_port.as_str(), "", "0", "5000", "REPLACE", "KEYS"]);
        args.extend(keys);
        let answer = cli(src, &args);
        assert!(answer == "OK" || answer == "NOKEY", "MIGRATE: {answer}");
        std::thread::sleep(Duration::from_millis(30));
    }
    for p in primaries {
        assert_eq!(
            cli(*p, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]),
            "OK"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_lands_on_the_primary_that_owns_its_slot() {
    let cluster = Cluster::start();
    let (source, _) = Writes::new(6000, 2000);
    let summary = ship(config(&cluster, None), source).await;
    assert_eq!(summary.counters.delivered(), 6000);
    assert_eq!(summary.counters.abandoned, 0);
    let primaries = cluster.primaries();
    let found = values_on_owners(&primaries, &keys(2000));
    let mut per_node: HashMap<u16, usize> = HashMap::new();
    for (k, (port, v)) in &found {
        let n: u64 = k.trim_start_matches("key:").parse().unwrap();
        assert_eq!(seq_of(v), Some(4000 + n), "{k}: the last write");
        *per_node.entry(*port).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "keys spread over the three primaries");
    // The owner is the one CLUSTER KEYSLOT and CLUSTER SLOTS name.
    let slot: u16 = cli(primaries[0], &["CLUSTER", "KEYSLOT", "key:7"])
        .parse()
        .unwrap();
    let owner = found["key:7"].0;
    let counted = cli(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert!(
        counted.parse::<u64>().unwrap() >= 2,
        "key:7 and its stamp on {owner}"
    );
    let by_cli = cli(primaries[0], &["-c", "GET", "key:7"]);
    assert_eq!(by_cli, "v4007");
    // The snapshots name each connection's node.
    assert!(summary.last.connections.iter().all(|c| c.node.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_range_migrated_mid_run_loses_nothing() {
    let cluster = Cluster::start();
    let primaries = cluster.primaries();
    let (from, to) = (
        cli(primaries[0], &["CLUSTER", "MYID"]),
        cli(primaries[1], &["CLUSTER", "MYID"]),
    );
    // 12 s of writes: the reshard (3–7 s of redis-cli, longer on a busy
    // machine) starts at 2 s and must end while records still flow.
    const WRITES: u64 = 48000;
    let (source, _) = Writes::new(WRITES, 3000);
    let run = tokio::spawn(ship(config(&cluster, Some(4000)), source));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seed = format!("127.0.0.1:{}", primaries[0]);
    let resharded = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &seed])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "1500", "--cluster-yes"])
            .args(["--cluster-pipeline", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(resharded.success(), "redis-cli --cluster reshard failed");
    assert!(!run.is_finished(), "the migration ended before the run");
    let summary = run.await.unwrap();
    assert_eq!(summary.counters.abandoned, 0);
    assert_eq!(summary.unanswered, 0);
    let found = values_on_owners(&cluster.primaries(), &keys(3000));
    for (k, (_, v)) in &found {
        let n: u64 = k.trim_start_matches("key:").parse().unwrap();
        assert_eq!(seq_of(v), Some(WRITES - 3000 + n), "{k}: the last write");
    }
    let moved_to = found.values().filter(|(p, _)| *p == primaries[1]).count();
    assert!(
        moved_to > 1000,
        "the migrated slots' keys are on the new owner ({moved_to})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_run_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start();
    let (source, acked) = Writes::new(24000, 3000);
    let run = tokio::spawn(ship(config(&cluster, Some(4000)), source));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = cluster.primaries()[0];
    cluster.kill(victim);
    assert!(!run.is_finished(), "the primary died before the run ended");
    let alive = cluster.alive();
    tokio::task::spawn_blocking(move || {
        wait_for("a replica to take over", || {
            alive
                .iter()
                .filter(|p| cli(**p, &["ROLE"]).starts_with("master"))
                .count()
                == 3
        });
    })
    .await
    .unwrap();
    cluster.wait_ok(&cluster.alive());
    let summary = run.await.unwrap();
    assert_eq!(summary.unanswered, 0);
    assert_eq!(summary.counters.abandoned, 0);
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), 24000, "every record acknowledged in the end");
    let mut newest_acked: HashMap<String, u64> = HashMap::new();
    for seq in acked {
        let e = newest_acked
            .entry(format!("key:{}", seq % 3000))
            .or_default();
        *e = (*e).max(seq);
    }
    let found = values_on_owners(&cluster.primaries(), &keys(3000));
    for (k, (_, v)) in &found {
        let held = seq_of(v).unwrap_or(0);
        assert!(
            held >= newest_acked[k],
            "{k}: holds v{held}, v{} was acknowledged",
            newest_acked[k]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_key_by_key_mid_run_goes_through_ask_and_loses_nothing() {
    let cluster = Cluster::start();
    let primaries = cluster.primaries();
    let slot: u16 = cli(primaries[0], &["CLUSTER", "KEYSLOT", "{hot}"])
        .parse()
        .unwrap();
    let src = *primaries
        .iter()
        .find(|p| !cli(**p, &["GET", "{hot}0"]).starts_with("MOVED"))
        .unwrap();
    let dst = *primaries.iter().find(|p| **p != src).unwrap();
    let (source, acked) = Writes::with_prefix(20000, 400, "{hot}");
    let run = tokio::spawn(ship(config(&cluster, Some(4000)), source));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = primaries.clone();
    tokio::task::spawn_blocking(move || migrate_slot(slot, src, dst, &all))
        .await
        .unwrap();
    assert!(!run.is_finished(), "the migration ended before the run");
    let summary = run.await.unwrap();
    assert_eq!(summary.counters.abandoned, 0);
    assert_eq!(summary.unanswered, 0);
    assert_eq!(acked.lock().unwrap().len(), 20000);
    let found = values_on_owners(&primaries, &keys_with(400, "{hot}"));
    for (k, (owner, v)) in &found {
        let n: u64 = k.trim_start_matches("{hot}").parse().unwrap();
        assert_eq!(*owner, dst, "{k} moved with its slot");
        assert_eq!(seq_of(v), Some(19600 + n), "{k}: the last write");
    }
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `xdr-ship verify --json` of `log` against the cluster: exit status and
/// the counts.
fn verify(log: &TempDir, against: &str) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["verify", "--json", "--log"])
        .arg(&log.0)
        .args(["--against", against])
        .output()
        .unwrap();
    let counts = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), counts)
}

#[test]
fn the_cli_ships_a_log_to_the_cluster_and_verify_follows_the_slot_map() {
    let cluster = Cluster::start();
    let log = TempDir::new("cluster-log");
    let door = free_port();
    let _ship = Guard(
        Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
            .args(["ship", "--log"])
            .arg(&log.0)
            .args(["--listen-resp", &format!("127.0.0.1:{door}")])
            .args(["--to", &cluster.seed(), "--connections", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the source node's Redis door", || {
        TcpStream::connect(("127.0.0.1", door)).is_ok()
    });
    let mut mset = vec!["MSET".to_owned()];
    for k in 0..300 {
        mset.extend([format!("user:{k}"), format!("v{k}")]);
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(cli(door, &mset), "OK");
    wait_for("verify to find the copy whole", || {
        verify(&log, &cluster.seed()).0
    });
    let (_, counts) = verify(&log, &cluster.seed());
    assert_eq!(counts["matching"], 300, "{counts}");
    assert_eq!(
        counts["extra"], 0,
        "the stamp keys are not extras: {counts}"
    );
    // Behind its back, on whichever primary holds it.
    assert_eq!(cli(cluster.ports[0], &["-c", "DEL", "user:7"]), "1");
    let (ok, counts) = verify(&log, &cluster.seed());
    assert!(!ok, "verify exited 0 with a key missing: {counts}");
    assert_eq!(counts["missing"], 1, "{counts}");
}
