//! The durable engine: fjall underneath, shard workers in front, a
//! committer behind.
//!
//! ```text
//!  apply (tokio task) ──split by xxh3(key) % N──▶ shard k: bounded mpsc ──▶ worker thread k
//!        ▲                                                                  │ LWW check in its own
//!        │ oneshot reply                                                    │ version index, one fjall
//!        │                                                                  │ write batch per drain
//!        │                                       Os:   reply right away ◀───┤
//!        └──── committer thread: gather, one fdatasync, reply to all ◀──────┘ Sync: bounded sync_channel
//! ```
//!
//! # Why shard workers (and not a sharded lock)
//!
//! A write is a journal append and a memtable insert: real I/O syscalls that
//! must stay off the tokio runtime's threads. Each key belongs to exactly one
//! shard (xxh3 of the key, fixed seed), so two writes to the same key are
//! serialized by that shard's single thread and no lock is needed for the
//! read-compare-write of last-writer-wins. A worker drains everything queued
//! for it into one fjall write batch, which takes fjall's journal lock once
//! per drain instead of once per write.
//!
//! # The version index
//!
//! Each worker owns a `HashMap<Box<[u8]>, Stamp>` (xxh3-hashed, see
//! `record::key_hasher`): the `(version, source_id)` of
//! every key of its shard, rebuilt on `open` by one scan. The LWW check then
//! never reads the LSM tree (a point read of a key that left the memtable
//! walks bloom filters and maybe a block per level). Cost: the key's bytes
//! plus about 60 bytes per key (16-byte box, 16-byte stamp, hash-table slot
//! and control byte at up to 7/8 load, allocator header): ~80 MB per million
//! 16-byte keys. The rebuild reads every record once (values too: the stamp
//! lives in the value): 0.4–0.6 s for 100K records of 1 KiB here.
//!
//! # Group commit
//!
//! With `Durability::Sync`, a worker hands each finished job (with its
//! outcomes and reply sender) to the committer only after its batch is in
//! fjall's journal. The committer takes the first job, then keeps gathering
//! until one of: nothing is left between `apply` and itself (the `inflight`
//! counter is zero, so waiting cannot grow the group), the group holds
//! `max_group_jobs`, or `group_commit_delay` has passed since the first job.
//! It then calls `persist(SyncData)` (flush the journal's buffer and
//! fdatasync it) and completes every job of the group: each was in the
//! journal before the persist started. Jobs that arrive during the fdatasync
//! form the next group, so the group size follows the load by itself.
//!
//! # Bounds (backpressure by awaiting, never by buffering)
//!
//! - each shard channel holds `shard_queue_depth` jobs; `apply` awaits a
//!   free slot (`reserve`) before it counts a job in flight;
//! - the committer channel holds `commit_queue_depth` jobs; a worker blocks
//!   on it, which stops it draining its shard channel, which makes `apply`
//!   wait;
//! - a worker batch stops growing at `max_batch_writes`, a commit group at
//!   `max_group_jobs`.
//!
//! # Failure
//!
//! fjall poisons the database after a failed journal write or fsync; every
//! later write fails. The workers mirror that: after a failed batch they
//! answer every job with [`StoreError::Poisoned`] until the store is
//! reopened. Nothing that failed was acked, so the shipper resends it.
//!
//! # Measurements (this machine: 2 cores shared with other builds, ext4 on
//! a virtio disk; release build; 1 KiB incompressible values, 100K keys,
//! 64 concurrent tasks; five runs each, median and range)
//!
//! The disk: `dd bs=1M count=1024 conv=fdatasync` writes 339–371 MB/s; a
//! journal fdatasync took 0.35 ms (50 KB) to 1 ms (400 KB) to 3.7 ms (1.3 MB).
//!
//! | store | writes per `apply` | writes/s |
//! |---|---|---|
//! | memory, first fill | 1 | 450K (310K–700K) |
//! | memory, overwrite | 1 | 2.0M (1.3M–3.1M) |
//! | fjall, `Os` | 1 | 134K (114K–169K) |
//! | fjall, `Os` | 16 | 192K (157K–214K) |
//! | fjall, `Sync` | 1 | 54K (50K–80K), ~54 writes per fdatasync |
//! | fjall, `Sync` | 16 | 167K (137K–189K), ~400 writes per fdatasync |
//! | fjall, `Sync` | 64 | 152K (140K–186K), ~1300 writes per fdatasync |
//!
//! Single-write calls under `Sync` are bounded by Little's law, not by the
//! engine: 64 calls in flight / ~1 ms per commit cycle. The receiver has far
//! more in flight (BATCH frames, deep pipelines), which the batched rows
//! model. At ~170 MB/s of values the disk already writes ~1.9× that (the
//! process's `write_bytes`: journal, then blob file at memtable flush), about
//! the `dd` bandwidth: an LSM with a journal tops out near half the disk.
//!
//! Engine choice, same disk, one thread, no LWW, one commit per group of N
//! 1 KiB records: fjall (batch + `persist(SyncData)`) 106–116K/s at N=64,
//! 216–253K/s at N=400; redb 4 (one write transaction per group,
//! `Durability::Immediate`) 57–59K/s at N=64, 125–146K/s at N=400, and a
//! 269 MB file for 100 MB of records. Point reads of the LWW check: fjall
//! 3.9 µs (memtable) to 6.3 µs (flushed, blob values), a `HashMap` lookup
//! 0.4 µs: hence the version index.
//!
//! Known limit: fjall holds its journal lock during the fdatasync, so the
//! workers cannot append while a commit syncs (`Os`, which never syncs, is
//! the ceiling that overlapping would approach: ~10–15% here). Syncing
//! outside the lock would need fjall's journal file, which it does not
//! expose.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::wire::Write;

use super::record::{
    decode, decode_parts, decode_stamp, encode_into, key_hasher, shard_of, DigestAcc, Stamp,
};
use super::{
    key_hex, ApplyOutcome, Durability, StoreConfig, StoreDigest, StoreError, StoreStats,
    StoredRecord,
};

/// A shard's `(version, source_id)` of every key it owns.
type VersionIndex = HashMap<Box<[u8]>, Stamp, Xxh3Builder>;

/// fjall keyspace holding the records.
const KEYSPACE: &str = "records";

/// Highest latency the histograms resolve: one hour, in microseconds.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Internal knobs: queue depths and batch limits. Not part of
/// [`StoreConfig`] because nobody should need to turn them; tests shrink
/// them to make bounds observable.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Jobs (one per `apply` call and shard) queued per shard.
    pub shard_queue_depth: usize,
    /// Jobs waiting for the committer.
    pub commit_queue_depth: usize,
    /// Most jobs one fdatasync completes.
    pub max_group_jobs: usize,
    /// A worker stops draining its queue into one write batch here.
    pub max_batch_writes: usize,
    /// Store values of at least 1 KiB in fjall's blob files (key-value
    /// separation) so compaction does not rewrite them.
    pub kv_separation: bool,
    /// Test hook: a worker holds this read lock while it handles a batch, so
    /// a test holding the write lock stalls every shard.
    #[cfg(test)]
    pub gate: Option<Arc<parking_lot::RwLock<()>>>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            shard_queue_depth: 256,
            commit_queue_depth: 4096,
            max_group_jobs: 8192,
            max_batch_writes: 4096,
            kv_separation: true,
            #[cfg(test)]
            gate: None,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<ApplyOutcome>, StoreError>>;

/// One `apply` call's writes for one shard.
struct Job {
    writes: Vec<Write>,
    reply: Reply,
    started: Instant,
}

enum ShardMsg {
    Job(Job),
    /// Sent by `close`: finish what is queued before this, then exit.
    Stop,
}

/// A job whose writes are in the journal, waiting for an fdatasync.
struct Pending {
    reply: Reply,
    outcomes: Vec<ApplyOutcome>,
    started: Instant,
}

/// Counters a worker publishes.
struct ShardShared {
    applied: AtomicU64,
    lost_conflict: AtomicU64,
    /// Apply latency of jobs this worker answered itself (`Durability::Os`).
    latency: Mutex<Histogram<u64>>,
}

/// Counters the committer publishes.
struct CommitShared {
    commits: AtomicU64,
    committed_writes: AtomicU64,
    apply_latency: Mutex<Histogram<u64>>,
    commit_latency: Mutex<Histogram<u64>>,
}

struct ShardHandle {
    tx: mpsc::Sender<ShardMsg>,
    shared: Arc<ShardShared>,
}

struct Threads {
    shards: Vec<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
}

/// The fjall handles the store itself keeps (workers and committer hold
/// their own clones). `close` drops them: fjall locks its directory while
/// any handle lives, and a restarted receiver must be able to reopen the
/// path even if a clone of the closed [`super::Store`] is still around.
struct Fjall {
    db: Database,
    ks: Keyspace,
}

pub(crate) struct DurableStore {
    path: PathBuf,
    durability: Durability,
    /// `None` once closed.
    fjall: Arc<RwLock<Option<Fjall>>>,
    shards: Vec<ShardHandle>,
    /// Jobs handed to a shard and not yet answered or handed to the
    /// committer.
    inflight: Arc<AtomicUsize>,
    commit: Arc<CommitShared>,
    closed: AtomicBool,
    threads: tokio::sync::Mutex<Option<Threads>>,
}

fn latency_histogram() -> Result<Histogram<u64>, StoreError> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
        .map_err(|e| StoreError::Config(format!("latency histogram: {e}")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| StoreError::Thread { name, source })
}

impl DurableStore {
    pub(crate) fn open(cfg: &StoreConfig, tuning: Tuning) -> Result<Self, StoreError> {
        let path = cfg
            .path
            .clone()
            .ok_or_else(|| StoreError::Config("a durable store needs a path".into()))?;
        let n = cfg.shards;
        if n == 0 {
            return Err(StoreError::Config("shards must be at least 1".into()));
        }
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = Database::builder(&path).open().map_err(open_err)?;
        let kv_separation = tuning.kv_separation;
        let ks = db
            .keyspace(KEYSPACE, || {
                let opts = KeyspaceCreateOptions::default();
                if kv_separation {
                    opts.with_kv_separation(Some(KvSeparationOptions::default()))
                } else {
                    opts
                }
            })
            .map_err(open_err)?;

        let indexes = rebuild_indexes(&path, &ks, n)?;

        let inflight = Arc::new(AtomicUsize::new(0));
        let commit = Arc::new(CommitShared {
            commits: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
            apply_latency: Mutex::new(latency_histogram()?),
            commit_latency: Mutex::new(latency_histogram()?),
        });

        let (commit_tx, committer) = match cfg.durability {
            Durability::Sync => {
                let (tx, rx) = std_mpsc::sync_channel(tuning.commit_queue_depth.max(1));
                let committer = Committer {
                    rx,
                    db: db.clone(),
                    path: path.clone(),
                    delay: cfg.group_commit_delay,
                    max_group: tuning.max_group_jobs.max(1),
                    inflight: Arc::clone(&inflight),
                    shared: Arc::clone(&commit),
                };
                (
                    Some(tx),
                    Some(spawn("store-commit".into(), move || committer.run())?),
                )
            }
            Durability::Os => (None, None),
        };

        let mut shards = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (id, index) in indexes.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(tuning.shard_queue_depth.max(1));
            let shared = Arc::new(ShardShared {
                applied: AtomicU64::new(0),
                lost_conflict: AtomicU64::new(0),
                latency: Mutex::new(latency_histogram()?),
            });
            let worker = ShardWorker {
                path: path.clone(),
                rx,
                index,
                db: db.clone(),
                ks: ks.clone(),
                commit_tx: commit_tx.clone(),
                inflight: Arc::clone(&inflight),
                shared: Arc::clone(&shared),
                max_batch_writes: tuning.max_batch_writes.max(1),
                poisoned: None,
                scratch: Vec::new(),
                #[cfg(test)]
                gate: tuning.gate.clone(),
            };
            handles.push(spawn(format!("store-shard-{id}"), move || worker.run())?);
            shards.push(ShardHandle { tx, shared });
        }

        Ok(DurableStore {
            path,
            durability: cfg.durability,
            fjall: Arc::new(RwLock::new(Some(Fjall { db, ks }))),
            shards,
            inflight,
            commit,
            closed: AtomicBool::new(false),
            threads: tokio::sync::Mutex::new(Some(Threads {
                shards: handles,
                committer,
            })),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn apply(&self, writes: Vec<Write>) -> Result<Vec<ApplyOutcome>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let n = self.shards.len();
        let Some(first) = writes.first() else {
            return Ok(Vec::new());
        };
        let first_shard = shard_of(&first.key, n);
        let shard_ids: Vec<usize> = writes.iter().map(|w| shard_of(&w.key, n)).collect();
        if shard_ids.iter().all(|&s| s == first_shard) {
            let rx = self.submit(first_shard, writes).await?;
            return receive(rx).await;
        }

        let mut buckets: Vec<Vec<Write>> = (0..n).map(|_| Vec::new()).collect();
        for (w, &s) in writes.into_iter().zip(&shard_ids) {
            buckets[s].push(w);
        }
        let mut receivers = Vec::new();
        for (s, bucket) in buckets.into_iter().enumerate() {
            if !bucket.is_empty() {
                receivers.push((s, self.submit(s, bucket).await?));
            }
        }
        let mut per_shard: Vec<std::vec::IntoIter<ApplyOutcome>> =
            (0..n).map(|_| Vec::new().into_iter()).collect();
        for (s, rx) in receivers {
            per_shard[s] = receive(rx).await?.into_iter();
        }
        shard_ids
            .iter()
            .map(|&s| {
                per_shard[s]
                    .next()
                    .ok_or(StoreError::ThreadPanicked(format!(
                        "store-shard-{s} (short reply)"
                    )))
            })
            .collect()
    }

    /// Queue `writes` on shard `s`; waits while the shard's queue is full.
    async fn submit(
        &self,
        s: usize,
        writes: Vec<Write>,
    ) -> Result<oneshot::Receiver<Result<Vec<ApplyOutcome>, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        // Reserve first, count second, send third, with no await between the
        // last two: a cancelled `apply` never leaves `inflight` raised.
        let permit = self.shards[s]
            .tx
            .reserve()
            .await
            .map_err(|_| StoreError::Closed)?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        permit.send(ShardMsg::Job(Job {
            writes,
            reply,
            started: Instant::now(),
        }));
        Ok(rx)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        let fjall = self.fjall.read();
        let fjall = fjall.as_ref().ok_or(StoreError::Closed)?;
        let Some(raw) = fjall.ks.get(key).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?
        else {
            return Ok(None);
        };
        decode(&raw)
            .map(Some)
            .map_err(|e| corrupt(&self.path, key, e))
    }

    pub(crate) fn digest(&self) -> Result<StoreDigest, StoreError> {
        let fjall = self.fjall.read();
        let fjall = fjall.as_ref().ok_or(StoreError::Closed)?;
        let mut acc = DigestAcc::default();
        for guard in fjall.ks.iter() {
            let (k, v) = guard.into_inner().map_err(|source| StoreError::Read {
                path: self.path.clone(),
                source,
            })?;
            let (stamp, value) = decode_parts(&v).map_err(|e| corrupt(&self.path, &k, e))?;
            acc.add(&k, value, stamp);
        }
        Ok(acc.finish())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let commits = self.commit.commits.load(Ordering::Relaxed);
        let committed_writes = self.commit.committed_writes.load(Ordering::Relaxed);
        let mut stats = StoreStats {
            engine: "fjall",
            durability: Some(self.durability),
            shards: self.shards.len(),
            commits,
            committed_writes,
            writes_per_commit: if commits == 0 {
                0.0
            } else {
                committed_writes as f64 / commits as f64
            },
            ..StoreStats::default()
        };
        let mut latency = self.commit.apply_latency.lock().clone();
        for s in &self.shards {
            stats.applied += s.shared.applied.load(Ordering::Relaxed);
            stats.lost_conflict += s.shared.lost_conflict.load(Ordering::Relaxed);
            stats.queued_jobs += s.tx.max_capacity() - s.tx.capacity();
            // Same bounds everywhere, so adding cannot fail.
            let _ = latency.add(&*s.shared.latency.lock());
        }
        if !latency.is_empty() {
            stats.apply_latency_p50_us = Some(latency.value_at_quantile(0.5));
            stats.apply_latency_p99_us = Some(latency.value_at_quantile(0.99));
        }
        let commit_latency = self.commit.commit_latency.lock();
        if !commit_latency.is_empty() {
            stats.commit_latency_p50_us = Some(commit_latency.value_at_quantile(0.5));
            stats.commit_latency_p99_us = Some(commit_latency.value_at_quantile(0.99));
        }
        stats
    }

    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let mut threads = self.threads.lock().await;
        let Some(Threads { shards, committer }) = threads.take() else {
            return Ok(());
        };
        self.closed.store(true, Ordering::Release);
        for s in &self.shards {
            // Fails only if that worker is already gone; joining says why.
            let _ = s.tx.send(ShardMsg::Stop).await;
        }
        let fjall = Arc::clone(&self.fjall);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut panicked = None;
            for (id, h) in shards.into_iter().enumerate() {
                if h.join().is_err() {
                    panicked = Some(format!("store-shard-{id}"));
                }
            }
            // The workers held the committer's only senders: it drains what
            // they sent, commits it, and exits.
            if let Some(h) = committer {
                if h.join().is_err() {
                    panicked = Some("store-commit".into());
                }
            }
            // Waits for a running `get`/`digest`; dropping the last handles
            // stops fjall's own threads and unlocks the directory.
            if let Some(Fjall { db, ks }) = fjall.write().take() {
                let persisted = db.persist(PersistMode::SyncAll);
                drop(ks);
                drop(db);
                persisted.map_err(|source| StoreError::Commit {
                    path,
                    source: Arc::new(source),
                })?;
            }
            match panicked {
                Some(name) => Err(StoreError::ThreadPanicked(name)),
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| StoreError::ThreadPanicked("store close".into()))?
    }
}

async fn receive(
    rx: oneshot::Receiver<Result<Vec<ApplyOutcome>, StoreError>>,
) -> Result<Vec<ApplyOutcome>, StoreError> {
    // A dropped reply means the worker exited before answering: the store
    // was closed (or a thread died, which `close` reports).
    rx.await.map_err(|_| StoreError::Closed)?
}

fn corrupt(path: &Path, key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        key: key_hex(key),
        reason: e.to_string(),
    }
}

/// One scan of the keyspace: the stamp of every key, split by shard.
fn rebuild_indexes(
    path: &Path,
    ks: &Keyspace,
    shards: usize,
) -> Result<Vec<VersionIndex>, StoreError> {
    let mut indexes: Vec<VersionIndex> = (0..shards)
        .map(|_| HashMap::with_hasher(key_hasher()))
        .collect();
    for guard in ks.iter() {
        let (k, v) = guard.into_inner().map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        let stamp = decode_stamp(&v).map_err(|e| corrupt(path, &k, e))?;
        indexes[shard_of(&k, shards)].insert(Box::from(&*k), stamp);
    }
    Ok(indexes)
}

/// Why a worker could not write a batch; turned into one error per job.
enum Failure {
    Write(Arc<fjall::Error>),
    Poisoned(String),
}

struct ShardWorker {
    path: PathBuf,
    rx: mpsc::Receiver<ShardMsg>,
    index: VersionIndex,
    db: Database,
    ks: Keyspace,
    /// `None` with `Durability::Os`: the worker answers itself.
    commit_tx: Option<std_mpsc::SyncSender<Pending>>,
    inflight: Arc<AtomicUsize>,
    shared: Arc<ShardShared>,
    max_batch_writes: usize,
    poisoned: Option<String>,
    /// Reused buffer for encoding one record.
    scratch: Vec<u8>,
    #[cfg(test)]
    gate: Option<Arc<parking_lot::RwLock<()>>>,
}

impl ShardWorker {
    fn run(mut self) {
        let mut jobs: Vec<Job> = Vec::new();
        loop {
            match self.rx.blocking_recv() {
                Some(ShardMsg::Job(job)) => jobs.push(job),
                Some(ShardMsg::Stop) | None => return,
            }
            let mut writes = jobs[0].writes.len();
            let mut stop = false;
            while writes < self.max_batch_writes {
                match self.rx.try_recv() {
                    Ok(ShardMsg::Job(job)) => {
                        writes += job.writes.len();
                        jobs.push(job);
                    }
                    Ok(ShardMsg::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut jobs);
            if stop {
                return;
            }
        }
    }

    fn process(&mut self, jobs: &mut Vec<Job>) {
        #[cfg(test)]
        let gate = self.gate.clone();
        #[cfg(test)]
        let _stalled = gate.as_ref().map(|g| g.read());

        let n_jobs = jobs.len();
        match self.write_batch(jobs) {
            Ok(outcomes) => {
                for (job, outcomes) in jobs.drain(..).zip(outcomes) {
                    self.finish(job, outcomes);
                }
            }
            Err(failure) => {
                let path = &self.path;
                for job in jobs.drain(..) {
                    let err = match &failure {
                        Failure::Write(e) => StoreError::Write {
                            path: path.clone(),
                            source: Arc::clone(e),
                        },
                        Failure::Poisoned(reason) => StoreError::Poisoned {
                            path: path.clone(),
                            reason: reason.clone(),
                        },
                    };
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        // After the hand-off to the committer, so that a committer reading
        // zero knows every pending job is already in its channel.
        self.inflight.fetch_sub(n_jobs, Ordering::AcqRel);
    }

    /// LWW-check every write against the index and write the winners as one
    /// fjall batch (journal append + memtable insert, flushed to the OS).
    fn write_batch(&mut self, jobs: &[Job]) -> Result<Vec<Vec<ApplyOutcome>>, Failure> {
        if let Some(reason) = &self.poisoned {
            return Err(Failure::Poisoned(reason.clone()));
        }
        let mut batch = self.db.batch();
        let mut all = Vec::with_capacity(jobs.len());
        let (mut applied, mut lost) = (0u64, 0u64);
        for job in jobs {
            let mut outcomes = Vec::with_capacity(job.writes.len());
            for w in &job.writes {
                let incoming = Stamp::of(w);
                let wins = match self.index.get_mut(&w.key[..]) {
                    Some(stored) if incoming > *stored => {
                        *stored = incoming;
                        true
                    }
                    Some(_) => false,
                    None => {
                        self.index.insert(Box::from(&w.key[..]), incoming);
                        true
                    }
                };
                if wins {
                    encode_into(w, &mut self.scratch);
                    batch.insert(&self.ks, &w.key[..], &self.scratch[..]);
                    applied += 1;
                    outcomes.push(ApplyOutcome::Applied);
                } else {
                    lost += 1;
                    outcomes.push(ApplyOutcome::LostConflict);
                }
            }
            all.push(outcomes);
        }
        if let Err(e) = batch.commit() {
            // The index is now ahead of the journal; harmless, because a
            // poisoned worker writes nothing more until the store is reopened
            // (and reopening rebuilds the index from disk).
            let e = Arc::new(e);
            self.poisoned = Some(e.to_string());
            return Err(Failure::Write(e));
        }
        self.shared.applied.fetch_add(applied, Ordering::Relaxed);
        self.shared.lost_conflict.fetch_add(lost, Ordering::Relaxed);
        Ok(all)
    }

    fn finish(&self, job: Job, outcomes: Vec<ApplyOutcome>) {
        match &self.commit_tx {
            Some(tx) => {
                let pending = Pending {
                    reply: job.reply,
                    outcomes,
                    started: job.started,
                };
                // Blocks while the committer's queue is full (backpressure).
                // Fails only if the committer died; the dropped reply then
                // tells `apply` the store is gone.
                let _ = tx.send(pending);
            }
            None => {
                let us = micros(job.started.elapsed());
                self.shared.latency.lock().saturating_record(us.max(1));
                let _ = job.reply.send(Ok(outcomes));
            }
        }
    }
}

struct Committer {
    rx: std_mpsc::Receiver<Pending>,
    db: Database,
    path: PathBuf,
    delay: Duration,
    max_group: usize,
    inflight: Arc<AtomicUsize>,
    shared: Arc<CommitShared>,
}

impl Committer {
    fn run(self) {
        let mut group = Vec::new();
        // Ends when every worker has exited (their senders are dropped) and
        // the channel is drained.
        while let Ok(first) = self.rx.recv() {
            group.push(first);
            self.gather(&mut group);
            self.commit(&mut group);
        }
    }

    /// Add jobs to `group` until waiting cannot grow it, it is full, or the
    /// delay since the first job has passed.
    fn gather(&self, group: &mut Vec<Pending>) {
        let deadline = Instant::now() + self.delay;
        loop {
            self.drain(group);
            if group.len() >= self.max_group {
                return;
            }
            if self.inflight.load(Ordering::Acquire) == 0 {
                // Every job counted in flight was handed over before the
                // count dropped: one more drain collects them all.
                self.drain(group);
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(p) => group.push(p),
                Err(_) => return,
            }
        }
    }

    fn drain(&self, group: &mut Vec<Pending>) {
        while group.len() < self.max_group {
            match self.rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => return,
            }
        }
    }

    fn commit(&self, group: &mut Vec<Pending>) {
        let started = Instant::now();
        let result = self.db.persist(PersistMode::SyncData);
        let took = micros(started.elapsed());
        self.shared
            .commit_latency
            .lock()
            .saturating_record(took.max(1));
        let writes: usize = group.iter().map(|p| p.outcomes.len()).sum();
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.shared
            .committed_writes
            .fetch_add(writes as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                let mut latency = self.shared.apply_latency.lock();
                for p in group.drain(..) {
                    latency.saturating_record(micros(p.started.elapsed()).max(1));
                    let _ = p.reply.send(Ok(p.outcomes));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for p in group.drain(..) {
                    let _ = p.reply.send(Err(StoreError::Commit {
                        path: self.path.clone(),
                        source: Arc::clone(&e),
                    }));
                }
            }
        }
    }
}
