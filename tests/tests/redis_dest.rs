//! Redis as a destination, across the WAN lab (156 ms, 100 MB/s): a real
//! `redis-server` in the far namespace, the source node (`ship --log DIR
//! --from FILE --to redis://FAR:6379`) in the near one, and every record
//! checked afterwards with `redis-cli GET` (our code never reads back).
//! Root only (namespaces); every lab and process is removed even when a
//! test fails.
use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdr_ship::lab::{Lab, LabOptions, LinkConfig, Side};
use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard, TempDir};

const RTT: Duration = Duration::from_millis(156);
const RATE: u64 = 100_000_000;
const REDIS_PORT: u16 = 6379;
/// How long a shipper may take, start to finish.
const SHIP_TIMEOUT: Duration = Duration::from_secs(40);

fn lab(tag: &str) -> Lab {
    let name = format!("t{}-rd{tag}", std::process::id());
    Lab::up(&name, LinkConfig::new(RTT, RATE), LabOptions::default()).expect("lab up")
}

/// A `redis-server` in the far namespace, with an fsync-always AOF in
/// `dir` (so a restart finds every write it acknowledged).
struct FarRedis<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl<'a> FarRedis<'a> {
    fn start(lab: &'a Lab, dir: &Path) -> Self {
        let mut r = Self {
            lab,
            dir: dir.to_path_buf(),
            child: None,
        };
        r.spawn();
        r
    }

    fn far(&self) -> Ipv4Addr {
        self.lab.addr(Side::Far)
    }

    fn spawn(&mut self) {
        let child = self
            .lab
            .command(Side::Far, "redis-server")
            .args(["--bind", &self.far().to_string()])
            .args(["--port", &REDIS_PORT.to_string(), "--protected-mode", "no"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`, then the same server again on the same AOF.
    fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.0.kill().expect("kill -9 redis-server");
            c.0.wait().expect("reap redis-server");
        }
        self.spawn();
    }

    /// `redis-cli` in the far namespace (one round trip per command would
    /// be 156 ms across the link); its trimmed output.
    fn cli(&self, args: &[&str]) -> String {
        let (_, out, _) = run_bounded(
            self.lab
                .command(Side::Far, "redis-cli")
                .args(["-h", &self.far().to_string(), "-p", &REDIS_PORT.to_string()])
                .args(args),
            Duration::from_secs(10),
        );
        out.trim().to_owned()
    }

    /// `GET` of every key, through one `redis-cli` reading the commands
    /// from its standard input: one output line per key (empty for nil).
    fn get_all(&self, keys: &[String]) -> Vec<String> {
        let mut child = ChildGuard(
            self.lab
                .command(Side::Far, "redis-cli")
                .args(["-h", &self.far().to_string(), "-p", &REDIS_PORT.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-cli (Debian's redis-tools package) must be installed"),
        );
        let mut stdin = child.0.stdin.take().expect("redis-cli's stdin");
        let commands: String = keys.iter().map(|k| format!("GET {k}\n")).collect();
        let writer = std::thread::spawn(move || stdin.write_all(commands.as_bytes()));
        let out = child.0.wait_with_output_bounded(Duration::from_secs(30));
        writer.join().expect("stdin writer").expect("write GETs");
        out.lines().map(str::to_owned).collect()
    }
}

/// `wait_with_output` with a deadline (the guard kills it past it).
trait WaitBounded {
    fn wait_with_output_bounded(&mut self, timeout: Duration) -> String;
}

impl WaitBounded for std::process::Child {
    fn wait_with_output_bounded(&mut self, timeout: Duration) -> String {
        use std::io::Read;
        let mut stdout = self.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        while self.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "redis-cli outlived {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.join().expect("stdout reader")
    }
}

/// One write of the JSON-lines input.
#[derive(Clone, Debug)]
struct W {
    key: String,
    value: Option<String>,
    version: u64,
    source: u64,
}

fn write_input(dir: &TempDir, name: &str, writes: &[W]) -> PathBuf {
    let path = dir.0.join(name);
    let mut text = String::new();
    for w in writes {
        let line = serde_json::json!({
            "key": w.key, "value": w.value, "version": w.version, "source_id": w.source,
        });
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&path, text).expect("write the input");
    path
}

/// The shipper of one source node in the near namespace: `ship --log
/// --from INPUT --to redis://FAR:6379`, until the input is shipped.
fn shipper(lab: &Lab, log: &Path, input: &Path, source: u64, extra: &[&str]) -> Command {
    let mut cmd = lab.command(Side::Near, xdr_ship_bin());
    cmd.args(["ship", "--json", "--connections", "4", "--log"])
        .arg(log)
        .arg("--from")
        .arg(input)
        .args(["--source-id", &source.to_string()])
        .arg("--to")
        .arg(format!("redis://{}:{REDIS_PORT}", lab.addr(Side::Far)))
        .args(extra);
    cmd
}

/// The summary line's counters of a finished shipper's output.
fn counters(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").map(|s| s["counters"].clone()))
        .unwrap_or_else(|| panic!("no summary line in: {out}"))
}

/// The value `GET` must return for each key once `writes` are all
/// applied under last-writer-wins on (version, source): "" for a delete.
fn expected(writes: &[W]) -> std::collections::BTreeMap<String, String> {
    let mut best: std::collections::BTreeMap<String, &W> = Default::default();
    for w in writes {
        let e = best.entry(w.key.clone()).or_insert(w);
        if (w.version, w.source) > (e.version, e.source) {
            *e = w;
        }
    }
    best.into_iter()
        .map(|(k, w)| (k, w.value.clone().unwrap_or_default()))
        .collect()
}

fn assert_every_key(redis: &FarRedis<'_>, want: &std::collections::BTreeMap<String, String>) {
    let keys: Vec<String> = want.keys().cloned().collect();
    let got = redis.get_all(&keys);
    assert_eq!(got.len(), keys.len(), "one GET answer per key");
    let wrong: Vec<String> = keys
        .iter()
        .zip(&got)
        .filter(|(k, g)| want[*k] != **g)
        .map(|(k, g)| format!("{k}: GET {g:?}, want {:?}", want[k]))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} keys wrong, e.g. {:?}",
        wrong.len(),
        keys.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn every_record_shipped_across_the_lab_is_readable_with_redis_cli_get() {
    require_root();
    let dir = TempDir::new("rd-every");
    let lab = lab("all");
    let redis = FarRedis::start(&lab, &dir.0);
    // 2,000 keys, each written three times, every seventh deleted at last.
    let mut writes = Vec::new();
    for round in 1..=3u64 {
        for k in 0..2000u64 {
            let value = (round < 3 || k % 7 != 0).then(|| format!("v{k}-r{round}"));
            writes.push(W {
                key: format!("user:{k}"),
                value,
                version: round,
                source: 1,
            });
        }
    }
    let input = write_input(&dir, "in.jsonl", &writes);
    let (ok, out, err) = run_bounded(
        &mut shipper(&lab, &dir.0.join("log"), &input, 1, &[]),
        SHIP_TIMEOUT,
    );
    assert!(ok, "ship failed: {err}");
    let c = counters(&out);
    assert_eq!(c["abandoned"], 0, "{c}");
    assert_every_key(&redis, &expected(&writes));
}

#[test]
fn last_writer_wins_with_two_sources_writing_the_same_keys_in_different_orders() {
    require_root();
    let dir = TempDir::new("rd-lww");
    let lab = lab("lww");
    let redis = FarRedis::start(&lab, &dir.0);
    // Source 1 writes versions upwards (to 4 on even keys, 3 on odd ones),
    // source 2 downwards from 3: even keys are source 1's version 4, odd
    // ones source 2's version 3 (same version, higher source id).
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in 0..1500u64 {
        let top_a = if k % 2 == 0 { 4 } else { 3 };
        for v in 1..=top_a {
            a.push(W {
                key: format!("k{k}"),
                value: Some(format!("a{k}-v{v}")),
                version: v,
                source: 1,
            });
        }
        for v in (1..=3).rev() {
            b.push(W {
                key: format!("k{k}"),
                value: Some(format!("b{k}-v{v}")),
                version: v,
                source: 2,
            });
        }
    }
    let in_a = write_input(&dir, "a.jsonl", &a);
    let in_b = write_input(&dir, "b.jsonl", &b);
    let mut cmd_b = shipper(&lab, &dir.0.join("log-b"), &in_b, 2, &[]);
    let second = std::thread::spawn(move || run_bounded(&mut cmd_b, SHIP_TIMEOUT));
    let (ok, out, err) = run_bounded(
        &mut shipper(&lab, &dir.0.join("log-a"), &in_a, 1, &[]),
        SHIP_TIMEOUT,
    );
    assert!(ok, "ship (source 1) failed: {err}");
    let (ok_b, out_b, err_b) = second.join().expect("second shipper");
    assert!(ok_b, "ship (source 2) failed: {err_b}");
    let lost = counters(&out)["lost_conflict"].as_u64().unwrap()
        + counters(&out_b)["lost_conflict"].as_u64().unwrap();
    assert!(
        lost > 0,
        "no write lost a conflict: the orders never crossed"
    );
    let all: Vec<W> = a.into_iter().chain(b).collect();
    let want = expected(&all);
    assert!(
        want.iter().any(|(_, v)| v.starts_with('a'))
            && want.iter().any(|(_, v)| v.starts_with('b'))
    );
    assert_every_key(&redis, &want);
}

#[test]
fn resends_after_a_redis_restart_lose_nothing() {
    require_root();
    let dir = TempDir::new("rd-restart");
    let lab = lab("rst");
    let mut redis = FarRedis::start(&lab, &dir.0);
    let writes: Vec<W> = (0..20_000u64)
        .map(|k| W {
            key: format!("r{k}"),
            value: Some(format!("value-{k}")),
            version: 1,
            source: 1,
        })
        .collect();
    let input = write_input(&dir, "in.jsonl", &writes);
    // Paced so that the restart falls mid-run: 20,000 records at 2,500/s.
    let mut cmd = shipper(
        &lab,
        &dir.0.join("log"),
        &input,
        1,
        &["--max-throughput", "2500"],
    );
    let run = std::thread::spawn(move || run_bounded(&mut cmd, SHIP_TIMEOUT));
    std::thread::sleep(Duration::from_secs(3));
    let before = redis.cli(&["DBSIZE"]);
    redis.kill_and_restart();
    let (ok, out, err) = run.join().expect("shipper");
    assert!(ok, "ship failed: {err}");
    let c = counters(&out);
    assert!(
        before.parse::<u64>().unwrap() > 0,
        "nothing had arrived before the restart"
    );
    assert!(
        c["retry_conn_reset"].as_u64().unwrap() > 0,
        "the restart did not fall mid-run: {c}"
    );
    assert_eq!(c["abandoned"], 0, "{c}");
    assert_every_key(&redis, &expected(&writes));
}
