//! Behaviour of both engines through the public handle. Every LWW test runs
//! on the memory store and on a durable store of each durability.
//!
//! Over 600 lines because it is one specification of one handle: the LWW
//! rules for both engines, then the durable engine's recovery, compaction,
//! locking and bounds, then the throughput measurement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::durable::Tuning;
use super::*;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "xdr-store-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable(dir: &TempDir, durability: Durability) -> Store {
    Store::open(StoreConfig {
        durability,
        shards: 2,
        ..StoreConfig::durable(dir.path())
    })
    .expect("open durable store")
}

/// The memory store and a durable store of each durability, each with the
/// directory that must outlive it.
fn every_engine(name: &str) -> Vec<(String, Store, Option<TempDir>)> {
    let sync_dir = TempDir::new(&format!("{name}-sync"));
    let os_dir = TempDir::new(&format!("{name}-os"));
    vec![
        ("memory".into(), Store::memory(), None),
        (
            "vlog sync".into(),
            durable(&sync_dir, Durability::Sync),
            Some(sync_dir),
        ),
        (
            "vlog os".into(),
            durable(&os_dir, Durability::Os),
            Some(os_dir),
        ),
    ]
}

fn put(key: &str, value: &str, version: u64, source_id: u64) -> Write {
    Write::put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
        version,
        source_id,
    )
}

fn del(key: &str, version: u64, source_id: u64) -> Write {
    Write::tombstone(Bytes::copy_from_slice(key.as_bytes()), version, source_id)
}

async fn apply1(store: &Store, w: Write) -> ApplyOutcome {
    let out = store.apply(vec![w]).await.expect("apply");
    assert_eq!(out.len(), 1);
    out[0]
}

fn value_of(store: &Store, key: &str) -> Option<StoredRecord> {
    store.get(key.as_bytes()).expect("get")
}

#[tokio::test]
async fn newer_version_applies() {
    for (name, store, _dir) in every_engine("newer") {
        assert_eq!(
            apply1(&store, put("k", "v1", 1, 1)).await,
            ApplyOutcome::Applied,
            "{name}"
        );
        assert_eq!(
            apply1(&store, put("k", "v2", 2, 1)).await,
            ApplyOutcome::Applied,
            "{name}"
        );
        let r = value_of(&store, "k").expect("stored");
        assert_eq!(r.value.as_deref(), Some(&b"v2"[..]), "{name}");
        assert_eq!((r.version, r.source_id), (2, 1), "{name}");
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn older_or_equal_version_is_lost_conflict() {
    for (name, store, _dir) in every_engine("older") {
        assert_eq!(
            apply1(&store, put("k", "v5", 5, 1)).await,
            ApplyOutcome::Applied
        );
        assert_eq!(
            apply1(&store, put("k", "v4", 4, 1)).await,
            ApplyOutcome::LostConflict,
            "{name}: older"
        );
        assert_eq!(
            apply1(&store, put("k", "other", 5, 1)).await,
            ApplyOutcome::LostConflict,
            "{name}: equal stamp (a resend)"
        );
        let r = value_of(&store, "k").expect("stored");
        assert_eq!(r.value.as_deref(), Some(&b"v5"[..]), "{name}");
        let stats = store.stats();
        assert_eq!((stats.applied, stats.lost_conflict), (1, 2), "{name}");
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn equal_version_with_higher_source_id_wins() {
    for (name, store, _dir) in every_engine("source") {
        assert_eq!(
            apply1(&store, put("k", "a", 7, 2)).await,
            ApplyOutcome::Applied
        );
        assert_eq!(
            apply1(&store, put("k", "b", 7, 1)).await,
            ApplyOutcome::LostConflict,
            "{name}: lower source id"
        );
        assert_eq!(
            apply1(&store, put("k", "c", 7, 3)).await,
            ApplyOutcome::Applied,
            "{name}: higher source id"
        );
        let r = value_of(&store, "k").expect("stored");
        assert_eq!(
            (r.value.as_deref(), r.source_id),
            (Some(&b"c"[..]), 3),
            "{name}"
        );
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn tombstone_hides_the_key_and_keeps_its_version() {
    for (name, store, _dir) in every_engine("tombstone") {
        assert_eq!(
            apply1(&store, put("k", "v", 3, 1)).await,
            ApplyOutcome::Applied
        );
        assert_eq!(
            apply1(&store, del("k", 4, 1)).await,
            ApplyOutcome::Applied,
            "{name}"
        );
        let r = value_of(&store, "k").expect("the tombstone is a record");
        assert!(r.is_tombstone(), "{name}: value hidden");
        assert_eq!((r.version, r.source_id), (4, 1), "{name}: version kept");
        assert_eq!(
            apply1(&store, put("k", "stale", 3, 9)).await,
            ApplyOutcome::LostConflict,
            "{name}: a stale put must not resurrect the key"
        );
        assert!(value_of(&store, "k").expect("still there").is_tombstone());
        assert_eq!(
            apply1(&store, put("k", "again", 5, 1)).await,
            ApplyOutcome::Applied,
            "{name}: a newer put recreates it"
        );
        let d = store.digest().expect("digest");
        assert_eq!((d.records, d.tombstones), (1, 0), "{name}");
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn outcomes_follow_write_order_across_shards() {
    for (name, store, _dir) in every_engine("order") {
        assert_eq!(
            apply1(&store, put("k7", "x", 10, 1)).await,
            ApplyOutcome::Applied
        );
        // Many keys so that the batch spans every shard; k7 loses, k3 wins
        // twice in the same batch order (first applies, second loses).
        let mut batch: Vec<Write> = (0..40).map(|i| put(&format!("k{i}"), "v", 5, 1)).collect();
        batch.push(put("k3", "older", 4, 1));
        let out = store.apply(batch).await.expect("apply");
        assert_eq!(out.len(), 41);
        for (i, o) in out.iter().enumerate() {
            let expect = if i == 7 || i == 40 {
                ApplyOutcome::LostConflict
            } else {
                ApplyOutcome::Applied
            };
            assert_eq!(*o, expect, "{name}: outcome {i}");
        }
        assert!(store
            .apply(Vec::new())
            .await
            .expect("empty batch")
            .is_empty());
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn invalid_writes_are_rejected_before_anything_is_applied() {
    for (name, store, _dir) in every_engine("invalid") {
        let long = Bytes::from(vec![b'k'; MAX_KEY_LEN + 1]);
        let batch = vec![
            put("fine", "v", 1, 1),
            Write::put(long, Bytes::from_static(b"v"), 1, 1),
        ];
        match store.apply(batch).await {
            Err(e @ StoreError::InvalidWrite { index: 1, .. }) => assert!(!e.is_retryable()),
            other => panic!("{name}: expected InvalidWrite at 1, got {other:?}"),
        }
        assert!(
            matches!(
                store.apply(vec![put("", "v", 1, 1)]).await,
                Err(StoreError::InvalidWrite { index: 0, .. })
            ),
            "{name}: empty key"
        );
        assert_eq!(value_of(&store, "fine"), None, "{name}: nothing applied");
        store.close().await.expect("close");
    }
}

/// Records of every shape: empty, small and large values, tombstones.
fn assorted_writes(n: usize) -> Vec<Write> {
    (0..n)
        .map(|i| {
            let key = format!("key-{i:05}");
            match i % 5 {
                0 => del(&key, i as u64 + 1, 2),
                1 => put(&key, "", 1, 1),
                _ => Write::put(
                    Bytes::copy_from_slice(key.as_bytes()),
                    Bytes::from(
                        (0..(i * 37) % 5000)
                            .map(|b| (b * 7 + i) as u8)
                            .collect::<Vec<u8>>(),
                    ),
                    i as u64,
                    3,
                ),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_store_reopened_after_close_returns_every_record() {
    let dir = TempDir::new("reopen");
    let writes = assorted_writes(600);
    let store = durable(&dir, Durability::Sync);
    for chunk in writes.chunks(64) {
        store.apply(chunk.to_vec()).await.expect("apply");
    }
    let before = store.digest().expect("digest");
    store.clone().close().await.expect("close");
    store.close().await.expect("close is idempotent");

    // A different shard count: the index must be rebuilt per new shard.
    let reopened = Store::open(StoreConfig {
        shards: 3,
        ..StoreConfig::durable(dir.path())
    })
    .expect("reopen");
    for w in &writes {
        let r = reopened.get(&w.key).expect("get").expect("record survived");
        assert_eq!(r.value, w.value, "value of {:?}", w.key);
        assert_eq!((r.version, r.source_id), (w.version, w.source_id));
    }
    assert_eq!(reopened.digest().expect("digest"), before);
    assert_eq!(before.records, 600);
    assert_eq!(before.tombstones, 120);
    // The rebuilt version index still refuses stale writes and resends.
    let resend = writes[17].clone();
    assert_eq!(apply1(&reopened, resend).await, ApplyOutcome::LostConflict);
    assert_eq!(
        apply1(&reopened, put("key-00000", "x", 1, 1)).await,
        ApplyOutcome::LostConflict
    );
    reopened.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_apply_on_overlapping_keys_keeps_the_max_version() {
    const KEYS: u64 = 16;
    const TASKS: u64 = 32;
    const ROUNDS: u64 = 20;
    // Task t writes every key in rounds with versions in a scrambled order;
    // ties on version are broken by source id (= task).
    let version = |t: u64, r: u64, k: u64| (t * 7919 + r * 104_729 + k * 31) % 97 + 1;
    for (name, store, _dir) in every_engine("concurrent") {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.spawn(async move {
                for r in 0..ROUNDS {
                    let batch: Vec<Write> = (0..KEYS)
                        .map(|k| {
                            let v = version(t, r, k);
                            put(&format!("k{k}"), &format!("{v}/{t}"), v, t)
                        })
                        .collect();
                    store.apply(batch).await.expect("apply");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        for k in 0..KEYS {
            let (v, t) = (0..TASKS)
                .flat_map(|t| (0..ROUNDS).map(move |r| (version(t, r, k), t)))
                .max()
                .expect("writes");
            let r = value_of(&store, &format!("k{k}")).expect("stored");
            assert_eq!((r.version, r.source_id), (v, t), "{name}: key k{k}");
            assert_eq!(
                r.value.as_deref(),
                Some(format!("{v}/{t}").as_bytes()),
                "{name}"
            );
        }
        let s = store.stats();
        assert_eq!(s.applied + s.lost_conflict, KEYS * TASKS * ROUNDS, "{name}");
        store.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_is_equal_for_the_same_writes_in_different_orders() {
    // Several versions per key, so the order decides which write applies
    // first but never what is left at the end.
    let mut writes = assorted_writes(300);
    writes.extend(assorted_writes(300).into_iter().map(|mut w| {
        w.version += 1000;
        w
    }));
    let mut reversed = writes.clone();
    reversed.reverse();

    let forward = Store::memory();
    forward.apply(writes.clone()).await.expect("apply");
    let backward = Store::memory();
    for w in reversed.iter().cloned() {
        backward.apply(vec![w]).await.expect("apply");
    }
    let dir = TempDir::new("digest");
    let disk = durable(&dir, Durability::Os);
    for chunk in reversed.chunks(50) {
        disk.apply(chunk.to_vec()).await.expect("apply");
    }

    let d = forward.digest().expect("digest");
    assert_eq!(d.records, 300);
    assert_eq!(backward.digest().expect("digest"), d);
    assert_eq!(
        disk.digest().expect("digest"),
        d,
        "durable and memory agree"
    );
    assert_ne!(Store::memory().digest().expect("digest"), d);
    disk.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pipeline_makes_apply_wait_instead_of_queueing_more() {
    const DEPTH: usize = 4;
    const CALLS: usize = 20;
    let dir = TempDir::new("backpressure");
    let gate = Arc::new(parking_lot::RwLock::new(()));
    let store = Store::open_tuned(
        StoreConfig {
            durability: Durability::Os,
            shards: 1,
            ..StoreConfig::durable(dir.path())
        },
        Tuning {
            queue_depth: DEPTH,
            max_batch_writes: 1,
            gate: Some(Arc::clone(&gate)),
            ..Tuning::default()
        },
    )
    .expect("open");

    // A thread holds the gate (a lock guard must not live across awaits).
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            let _stall = gate.write();
            held_tx.send(()).expect("signal held");
            let _ = release_rx.recv();
        })
    };
    held_rx.recv().expect("gate held");
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tasks.spawn(async move {
            let out = store
                .apply(vec![put(&format!("k{i}"), "v", 1, 1)])
                .await
                .expect("apply");
            done.fetch_add(1, Ordering::SeqCst);
            out
        });
    }
    // The worker holds one job at the gate; the queue fills to its depth.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().queued_jobs < DEPTH {
        assert!(Instant::now() < deadline, "queue never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.stats().queued_jobs,
        DEPTH,
        "the queue stays at its bound"
    );
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "nothing completes while stalled"
    );
    assert_eq!(tasks.len(), CALLS, "the other calls wait in apply");

    release_tx.send(()).expect("release the gate");
    holder.join().expect("gate holder");
    while let Some(out) = tasks.join_next().await {
        assert_eq!(out.expect("task"), vec![ApplyOutcome::Applied]);
    }
    assert_eq!(done.load(Ordering::SeqCst), CALLS);
    assert_eq!(store.stats().queued_jobs, 0);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_fsyncs_and_groups_commits() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 10;
    let dir = TempDir::new("group");
    let store = durable(&dir, Durability::Sync);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                store
                    .apply(vec![put(&format!("t{t}-{i}"), "v", 1, 1)])
                    .await
                    .expect("apply");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let s = store.stats();
    let writes = (TASKS * PER_TASK) as u64;
    assert!(s.commits > 0, "acks came from fdatasync: {s:?}");
    assert_eq!(
        s.committed_writes, writes,
        "every ack was covered by a commit"
    );
    assert!(
        s.commits < writes,
        "commits were shared (group commit): {s:?}"
    );
    assert!(s.writes_per_commit > 1.0, "{s:?}");
    assert!(s.commit_latency_p50_us.is_some() && s.apply_latency_p99_us.is_some());

    // Os acks without any fdatasync.
    let os_dir = TempDir::new("group-os");
    let os = durable(&os_dir, Durability::Os);
    os.apply(vec![put("k", "v", 1, 1)]).await.expect("apply");
    assert_eq!(os.stats().commits, 0);
    os.close().await.expect("close");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_can_be_reopened_while_a_clone_still_lives() {
    let dir = TempDir::new("lingering");
    let store = durable(&dir, Durability::Sync);
    store.apply(vec![put("k", "v", 1, 1)]).await.expect("apply");
    let lingering = store.clone(); // e.g. held by a connection task
    store.close().await.expect("close");
    let reopened = durable(&dir, Durability::Sync);
    assert_eq!(
        value_of(&reopened, "k").and_then(|r| r.value),
        Some(Bytes::from_static(b"v"))
    );
    assert!(matches!(lingering.get(b"k"), Err(StoreError::Closed)));
    drop(lingering);
    reopened.close().await.expect("close");
}

#[tokio::test]
async fn apply_after_close_is_refused() {
    for (name, store, _dir) in every_engine("closed") {
        let other = store.clone();
        store.close().await.expect("close");
        assert!(
            matches!(
                other.apply(vec![put("k", "v", 1, 1)]).await,
                Err(StoreError::Closed)
            ),
            "{name}"
        );
        other.close().await.expect("second close is fine");
    }
}

#[test]
fn durability_parses_and_prints_its_cli_names() {
    for d in [Durability::Sync, Durability::Os] {
        assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
        assert_eq!(
            <Durability as clap::ValueEnum>::from_str(d.as_str(), false),
            Ok(d)
        );
    }
    assert_eq!("SYNC".parse::<Durability>(), Ok(Durability::Sync));
    assert!("fsync".parse::<Durability>().is_err());
    assert_eq!(Durability::default(), Durability::Sync);
}

#[test]
fn memory_store_counts_match_a_model() {
    // Cross-check the memory engine against a plain map of stamps.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = Store::memory();
    let mut model: HashMap<String, (u64, u64)> = HashMap::new();
    let (mut applied, mut lost) = (0, 0);
    for i in 0u64..2000 {
        let key = format!("k{}", (i * 7) % 50);
        let stamp = ((i * 13) % 29, i % 3);
        let wins = model.get(&key).is_none_or(|old| stamp > *old);
        if wins {
            model.insert(key.clone(), stamp);
            applied += 1;
        } else {
            lost += 1;
        }
        let out = rt
            .block_on(store.apply(vec![put(&key, "v", stamp.0, stamp.1)]))
            .expect("apply");
        assert_eq!(out[0] == ApplyOutcome::Applied, wins, "write {i}");
    }
    let s = store.stats();
    assert_eq!((s.applied, s.lost_conflict), (applied, lost));
}

/// The value-log segments of a store directory, in id order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "vlog"))
        .collect();
    files.sort();
    files
}

/// Small segments and an eager compactor, so both are observable.
fn small_segments() -> Tuning {
    Tuning {
        segment_bytes: 4096,
        compact_interval: Duration::from_millis(10),
        ..Tuning::default()
    }
}

fn open_small(dir: &TempDir, durability: Durability) -> Result<Store, StoreError> {
    Store::open_tuned(
        StoreConfig {
            durability,
            shards: 2,
            ..StoreConfig::durable(dir.path())
        },
        small_segments(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_every_acknowledged_record_survives() {
    let dir = TempDir::new("torn");
    let writes = assorted_writes(200);
    let store = durable(&dir, Durability::Sync);
    for chunk in writes.chunks(16) {
        store.apply(chunk.to_vec()).await.expect("apply");
    }
    let before = store.digest().expect("digest");
    store.close().await.expect("close");

    // A crash mid-append: half of one more entry at the end of the file.
    let last = segment_files(dir.path()).pop().expect("a segment");
    let whole = std::fs::metadata(&last).expect("stat").len();
    let mut torn = Vec::new();
    super::vlog::encode_entry(&mut torn, &put("late", "never acknowledged", 9, 9));
    torn.truncate(torn.len() / 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("open segment");
    std::io::Write::write_all(&mut f, &torn).expect("tear");
    drop(f);

    let reopened = durable(&dir, Durability::Sync);
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), whole, "cut");
    assert_eq!(reopened.digest().expect("digest"), before);
    assert_eq!(value_of(&reopened, "late"), None);
    // Appends continue after the cut and survive the next reopen.
    assert_eq!(
        apply1(&reopened, put("late", "now", 10, 1)).await,
        ApplyOutcome::Applied
    );
    reopened.close().await.expect("close");
    let again = durable(&dir, Durability::Sync);
    assert_eq!(
        value_of(&again, "late").and_then(|r| r.value),
        Some(Bytes::from_static(b"now"))
    );
    assert_eq!(again.digest().expect("digest").records, before.records + 1);
    again.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_sealed_segment_refuses_to_open() {
    let dir = TempDir::new("damaged");
    let store = open_small(&dir, Durability::Sync).expect("open");
    // Distinct keys only: every segment stays live, none is compacted.
    for chunk in assorted_writes(300).chunks(10) {
        store.apply(chunk.to_vec()).await.expect("apply");
    }
    store.close().await.expect("close");
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "small segments roll: {files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&files[0], bytes).expect("damage");
    match open_small(&dir, Durability::Sync) {
        Err(e @ StoreError::CorruptSegment { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected CorruptSegment, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_reclaims_overwritten_segments_and_keeps_the_newest_records() {
    const KEYS: u64 = 20;
    const ROUNDS: u64 = 60;
    for durability in [Durability::Sync, Durability::Os] {
        let dir = TempDir::new("compact");
        let store = open_small(&dir, durability).expect("open");
        let value = "v".repeat(200);
        for r in 1..=ROUNDS {
            let batch: Vec<Write> = (0..KEYS)
                .map(|k| {
                    if k % 5 == 0 && r == ROUNDS {
                        del(&format!("k{k}"), r, 1)
                    } else {
                        put(&format!("k{k}"), &format!("{r}{value}"), r, 1)
                    }
                })
                .collect();
            store.apply(batch).await.expect("apply");
        }
        let written = KEYS * ROUNDS * 250;
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().compactions == 0 || store.stats().disk_bytes * 4 > written {
            assert!(
                Instant::now() < deadline,
                "{durability}: never compacted: {:?}",
                store.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let check = |store: &Store| {
            for k in 0..KEYS {
                let r = value_of(store, &format!("k{k}")).expect("stored");
                assert_eq!(r.version, ROUNDS, "{durability}: k{k}");
                assert_eq!(r.is_tombstone(), k % 5 == 0, "{durability}: k{k}");
            }
        };
        check(&store);
        let before = store.digest().expect("digest");
        store.close().await.expect("close");
        let reopened = open_small(&dir, durability).expect("reopen");
        check(&reopened);
        assert_eq!(reopened.digest().expect("digest"), before, "{durability}");
        assert_eq!(
            apply1(&reopened, put("k1", "stale", ROUNDS - 1, 1)).await,
            ApplyOutcome::LostConflict
        );
        reopened.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_open_in_one_handle_cannot_be_opened_again() {
    let dir = TempDir::new("locked");
    let store = durable(&dir, Durability::Sync);
    let second = Store::open(StoreConfig::durable(dir.path()));
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    store.close().await.expect("close");
    durable(&dir, Durability::Sync)
        .close()
        .await
        .expect("opens once closed");
}

#[test]
fn a_directory_of_the_former_fjall_engine_is_refused() {
    let dir = TempDir::new("fjall");
    std::fs::create_dir_all(dir.path().join("keyspaces")).expect("mkdir");
    let opened = Store::open(StoreConfig::durable(dir.path()));
    assert!(
        matches!(&opened, Err(StoreError::Config(m)) if m.contains("fjall")),
        "{opened:?}"
    );
}
