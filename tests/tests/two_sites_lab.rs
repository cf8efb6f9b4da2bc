//! Two sites across the WAN lab (XDR's active-active, #15 item 3): site A
//! in the near namespace, site B in the far one, each a source node
//! (`ship --log --listen --store --receive`) taking local writes for the
//! same keys from `xdr-ship load` and shipping its log to the other across
//! the delayed line. The line is cut for a few seconds while both write,
//! then restored. Once the writers stop and both backlogs drain, both
//! stores must hold the same winner for every key (equal digests), nothing
//! that arrived by shipping is shipped again (`forward` off), and every
//! local write was shipped. Root; the lab, its processes and directories
//! are removed on drop even when the test panics.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use xdr_ship::{
    lab::{Lab, LabOptions, LinkConfig, Side},
    store::{Store, StoreConfig},
};
use xdr_tests::{require_root, xdr_ship_bin, ChildGuard, TempDir};

/// Writes each site takes, over [`WRITE_SPAN`].
const WRITES: u64 = 3_000;
/// How long the writers write (`load --rate` = WRITES / this).
const WRITE_SPAN: Duration = Duration::from_secs(8);
/// Keys both sites write.
const KEYS: u64 = 200;
/// When the line is cut, after the writers start, and for how long.
const CUT_AFTER: Duration = Duration::from_secs(2);
const CUT_FOR: Duration = Duration::from_secs(3);
/// The ingest port of each site, on its namespace's loopback.
const INGEST: &str = "127.0.0.1:7400";
/// The port each site receives the other's shipping on.
const RECEIVE_PORT: u16 = 3000;
/// Longest wait for any step.
const LIMIT: Duration = Duration::from_secs(90);

const SIDES: [Side; 2] = [Side::Near, Side::Far];

/// Starts site `i` in its namespace, writing its status lines to `out`.
fn start_site(lab: &Lab, dir: &Path, i: usize, out: &Path) -> ChildGuard {
    let d = |what: &str| dir.join(format!("{what}{i}")).display().to_string();
    let own = format!("{}:{RECEIVE_PORT}", lab.addr(SIDES[i]));
    let other = format!("{}:{RECEIVE_PORT}", lab.addr(SIDES[1 - i]));
    ChildGuard(
        lab.command(SIDES[i], xdr_ship_bin())
            .args(["ship", "--json", "--connections", "4"])
            .args(["--log", &d("log"), "--store", &d("store")])
            .args(["--listen", INGEST, "--receive", &own, "--to", &other])
            .args(["--ingest-insecure", "--source-id", &(i + 1).to_string()])
            .stdout(std::fs::File::create(out).expect("site stdout"))
            .stderr(std::fs::File::create(out.with_extension("err")).expect("site stderr"))
            .spawn()
            .expect("start a site"),
    )
}

/// Waits until something listens on `port` in `side`'s namespace.
fn wait_listening(lab: &Lab, side: Side, port: u16) {
    xdr_tests::wait_listening_ss(|| lab.command(side, "ss"), port, LIMIT);
}

/// The most records any JSON status line of `out` says were delivered.
fn delivered_so_far(out: &Path) -> u64 {
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
fn site_line(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("site").cloned())
        .unwrap_or_else(|| panic!("no site line in {}: {text}", out.display()))
}

/// Ctrl-C to a site, then its exit status within [`LIMIT`].
fn interrupt(site: &mut ChildGuard, out: &Path) -> std::process::ExitStatus {
    // SAFETY: `kill` with the pid of a child we own and a valid signal.
    unsafe { libc::kill(site.0.id() as i32, libc::SIGINT) };
    let until = Instant::now() + LIMIT;
    loop {
        if let Some(status) = site.0.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < until,
            "{} did not stop: {}",
            out.display(),
            std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_sites_across_the_lab_converge_after_the_line_is_cut_while_both_write() {
    require_root();
    let lab = Lab::up(
        &format!("t{}-sites", std::process::id()),
        LinkConfig::new(Duration::from_millis(40), 20_000_000),
        LabOptions::default(),
    )
    .expect("lab up");
    let dir = TempDir::new("sites-lab");
    let outs: Vec<PathBuf> = (0..2).map(|i| dir.0.join(format!("site{i}.out"))).collect();
    let mut sites: Vec<ChildGuard> = (0..2)
        .map(|i| start_site(&lab, &dir.0, i, &outs[i]))
        .collect();
    for side in SIDES {
        wait_listening(&lab, side, 7400);
        wait_listening(&lab, side, RECEIVE_PORT);
    }
    let rate = WRITES / WRITE_SPAN.as_secs();
    let mut loads: Vec<ChildGuard> = (0..2)
        .map(|i| {
            ChildGuard(
                lab.command(SIDES[i], xdr_ship_bin())
                    .args(["load", "--to", INGEST, "--count", &WRITES.to_string()])
                    .args(["--rate", &rate.to_string(), "--keys", &KEYS.to_string()])
                    .args(["--threads", "2", "--window", "8"])
                    .args(["--source-id", &(i + 1).to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start load"),
            )
        })
        .collect();
    std::thread::sleep(CUT_AFTER);
    let before_cut = [delivered_so_far(&outs[0]), delivered_so_far(&outs[1])];
    lab.set_link_up(false);
    std::thread::sleep(CUT_FOR);
    lab.set_link_up(true);
    for load in &mut loads {
        let until = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = load.0.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < until, "a load did not finish");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "load failed: {status}");
    }
    let until = Instant::now() + LIMIT;
    while outs.iter().any(|o| delivered_so_far(o) < WRITES) {
        assert!(
            Instant::now() < until,
            "the backlogs did not drain: delivered {} and {} of {WRITES}",
            delivered_so_far(&outs[0]),
            delivered_so_far(&outs[1])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, site) in sites.iter_mut().enumerate() {
        let status = interrupt(site, &outs[i]);
        assert!(status.success(), "site {i} failed: {status}");
    }
    for out in &outs {
        let line = site_line(out);
        assert_eq!(line["local"], WRITES, "{line}");
        assert_eq!(
            line["forwarded"], 0,
            "nothing shipped in is shipped on: {line}"
        );
        assert!(line["shipped_in"].as_u64().unwrap_or(0) >= WRITES, "{line}");
    }
    let digest = |i: usize| {
        Store::open(StoreConfig::durable(dir.0.join(format!("store{i}"))))
            .expect("open a store after its site stopped")
            .digest()
            .expect("digest")
    };
    let (a, b) = (digest(0), digest(1));
    println!(
        "figures two sites across the lab: {WRITES} writes per site, line cut {CUT_FOR:?} \
         with {} and {} delivered : {} keys, digests equal : lost 0",
        before_cut[0], before_cut[1], a.records
    );
    assert_eq!(a, b, "the two stores differ");
    assert_eq!(a.records, KEYS);
}
