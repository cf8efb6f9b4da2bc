//! Opening the durable store: the directory made and locked, its
//! segments recovered into the index, the shared state built and the
//! writer, committer and compactor threads started.
//!
//! Why a file of its own: opening is done once and reads like a recipe;
//! the state it builds is what the rest of `durable` works on.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::mpsc;

use super::super::committer::Committer;
use super::super::compact::Compactor;
use super::super::recover::{lock_dir, recover};
use super::super::writer::{Msg, Writer};
use super::super::{StoreConfig, StoreError};
use super::{DurableStore, Segment, Shared, Threads, Tuning, VersionIndex};

/// Highest latency the histograms resolve: one hour, in microseconds.
const LATENCY_MAX_US: u64 = 3_600_000_000;

impl DurableStore {
    pub(crate) fn open(cfg: &StoreConfig, tuning: Tuning) -> Result<Self, StoreError> {
        let path = cfg
            .path
            .clone()
            .ok_or_else(|| StoreError::Config("a durable store needs a path".into()))?;
        if cfg.shards == 0 {
            return Err(StoreError::Config("shards must be at least 1".into()));
        }
        crate::srclog::segment::create_dir_durable(&path).map_err(|source| {
            StoreError::CreateDir {
                path: path.clone(),
                source,
            }
        })?;
        let lock = lock_dir(&path)?;
        let recovered = recover(&path, cfg.shards)?;
        let active = Arc::clone(recovered.segments.values().next_back().expect("a segment"));
        let shared = shared_state(path.clone(), recovered.stripes, recovered.segments, &active)?;
        let inflight = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel(tuning.queue_depth.max(1));
        let threads = start_threads(cfg, &tuning, &shared, rx, &tx, active, &inflight)?;
        Ok(DurableStore {
            path,
            durability: cfg.durability,
            shared,
            tx,
            inflight,
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            threads: tokio::sync::Mutex::new(Some(threads)),
        })
    }
}

/// The state every thread shares, from the recovered index and segments;
/// `active` is the segment appends go to.
fn shared_state(
    path: std::path::PathBuf,
    stripes: Vec<VersionIndex>,
    segments: BTreeMap<u32, Arc<Segment>>,
    active: &Arc<Segment>,
) -> Result<Arc<Shared>, StoreError> {
    Ok(Arc::new(Shared {
        path,
        stripes: stripes.into_iter().map(Mutex::new).collect(),
        segments: RwLock::new(segments),
        active: Mutex::new((Arc::clone(active), 0)),
        failed: Mutex::new(None),
        applied: AtomicU64::new(0),
        lost_conflict: AtomicU64::new(0),
        commits: AtomicU64::new(0),
        committed_writes: AtomicU64::new(0),
        compactions: AtomicU64::new(0),
        apply_latency: Mutex::new(latency_histogram()?),
        commit_latency: Mutex::new(latency_histogram()?),
        commit_writes: Mutex::new(latency_histogram()?),
        compactor_stop: Mutex::new(false),
        compactor_wake: Condvar::new(),
    }))
}

/// Starts the committer, the writer (reading `rx`, appending to `active`)
/// and the compactor (sending through `tx`).
fn start_threads(
    cfg: &StoreConfig,
    tuning: &Tuning,
    shared: &Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    tx: &mpsc::Sender<Msg>,
    active: Arc<Segment>,
    inflight: &Arc<AtomicUsize>,
) -> Result<Threads, StoreError> {
    let (commit_tx, commit_rx) = std_mpsc::sync_channel(tuning.commit_queue_depth.max(1));
    let committer = Committer {
        rx: commit_rx,
        shared: Arc::clone(shared),
        delay: cfg.group_commit_delay,
        max_group: tuning.max_group_jobs.max(1),
        inflight: Arc::clone(inflight),
    };
    let writer = Writer {
        shared: Arc::clone(shared),
        rx,
        commit_tx,
        durability: cfg.durability,
        active,
        written: 0,
        segment_bytes: tuning.segment_bytes.max(1),
        max_batch_writes: tuning.max_batch_writes.max(1),
        inflight: Arc::clone(inflight),
        buf: Vec::new(),
        full: false,
        #[cfg(test)]
        gate: tuning.gate.clone(),
    };
    let compactor = Compactor {
        shared: Arc::clone(shared),
        tx: tx.clone(),
        interval: tuning.compact_interval,
        live_ratio: tuning.compact_live_ratio,
    };
    Ok(Threads {
        committer: spawn("store-commit".into(), move || committer.run())?,
        writer: spawn("store-write".into(), move || writer.run())?,
        compactor: spawn("store-compact".into(), move || compactor.run())?,
    })
}

fn latency_histogram() -> Result<Histogram<u64>, StoreError> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
        .map_err(|e| StoreError::Config(format!("latency histogram: {e}")))
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| StoreError::Thread { name, source })
}
