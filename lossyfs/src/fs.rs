//! The FUSE side: a pass-through filesystem over a backing directory whose
//! every write, sync and name change goes through the [`Disk`] model.
//!
//! Inode numbers are the backing files' own (the root is inode 1), so a
//! file keeps its number through renames. One thread serves the mount: the
//! model is one lock anyway, and the tests' stores group their syncs.
//!
//! Layout: this file is the public side (faults, the tests' [`Control`],
//! mount and unmount); `fs/state.rs` holds the state behind the lock and
//! its steps, `fs/fuse.rs` the FUSE handlers.
mod fuse;
mod state;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{BackgroundSession, Config, INodeNo, MountOption};

use crate::model::{CutReport, Disk};
use fuse::LossyFs;
use state::{CutWhen, Inner};

/// No attribute or entry caching: after a power cut the kernel must ask.
const TTL: Duration = Duration::ZERO;

/// Which operations fail with `EIO` (a dying disk), and on which files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `write` and `truncate` fail.
    pub writes: bool,
    /// `fsync`, `fdatasync` and directory syncs fail.
    pub syncs: bool,
    /// Only on paths (relative to the root) containing this; `None`: on
    /// every file.
    pub matching: Option<String>,
}

/// The kinds of operation a [`Fault`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `write` or `truncate`.
    Write,
    /// `fsync`, `fdatasync`, or the `fsync` of a directory.
    Sync,
}

impl Fault {
    /// Whether `op` on `rel` (a path relative to the root) fails.
    pub fn hits(&self, op: Op, rel: &Path) -> bool {
        let kind = match op {
            Op::Write => self.writes,
            Op::Sync => self.syncs,
        };
        kind && self
            .matching
            .as_deref()
            .is_none_or(|m| rel.to_string_lossy().contains(m))
    }
}

/// The handle the tests keep: cut the power, inject faults.
#[derive(Debug, Clone)]
pub struct Control(Arc<Mutex<Inner>>);

impl Control {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loses power now: the backing directory goes back to its durable
    /// state and every later operation on this mount fails with `EIO`.
    pub fn power_cut(&self, tear_seed: Option<u64>) -> io::Result<CutReport> {
        self.lock().cut(tear_seed)
    }

    /// Arms a power cut that falls right after the `fsync` of a directory
    /// that makes a name containing `name_contains` durable (created,
    /// renamed to, or removed), before any other operation: a test can
    /// then cut at "just after X was persisted" instead of at a lucky
    /// instant. [`Control::wait_cut`] tells when it fell.
    pub fn cut_when_durable(&self, name_contains: &str, tear_seed: Option<u64>) {
        self.lock().cut_when = Some(CutWhen {
            name_contains: name_contains.to_owned(),
            tear_seed,
        });
    }

    /// Waits up to `limit` for the cut armed by
    /// [`Control::cut_when_durable`]; `None` if it has not fallen.
    pub fn wait_cut(&self, limit: Duration) -> Option<io::Result<CutReport>> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(r) = self.lock().armed_cut.take() {
                return Some(r);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(CUT_POLL);
        }
    }

    /// Sets which operations fail with `EIO` from now on.
    pub fn inject(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// How many operations the injected faults failed since mount.
    pub fn faults_hit(&self) -> u64 {
        self.lock().faults_hit
    }
}

/// How often [`Control::wait_cut`] looks.
const CUT_POLL: Duration = Duration::from_millis(5);

/// A mounted lossyfs; unmounted on [`Mounted::unmount`] or drop.
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    control: Control,
}

impl Mounted {
    /// The control handle.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Detaches the mount and waits for its thread (call after every
    /// process using it is gone).
    pub fn unmount(mut self) -> io::Result<()> {
        self.detach();
        match self.session.take() {
            Some(s) => s.join(),
            None => Ok(()),
        }
    }

    fn detach(&self) {
        let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.session.is_some() {
            self.detach();
        }
    }
}

/// Mounts lossyfs over `backing` at `mountpoint` (both existing
/// directories); everything in `backing` counts as durable.
pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    let root = fs::canonicalize(backing)?;
    let mut paths = HashMap::new();
    paths.insert(INodeNo::ROOT.0, PathBuf::new());
    let inner = Arc::new(Mutex::new(Inner {
        disk: Disk::new(root)?,
        paths,
        handles: HashMap::new(),
        next_fh: 1,
        off: false,
        fault: Fault::default(),
        faults_hit: 0,
        cut_when: None,
        armed_cut: None,
    }));
    let control = Control(Arc::clone(&inner));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("lossyfs".into()),
        MountOption::Subtype("lossyfs".into()),
    ];
    let session = fuser::spawn_mount(LossyFs(inner), mountpoint, &config)?;
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(writes: bool, syncs: bool, matching: Option<&str>) -> Fault {
        Fault {
            writes,
            syncs,
            matching: matching.map(str::to_owned),
        }
    }

    #[test]
    fn a_fault_without_a_pattern_fails_its_kind_of_operation_on_every_file() {
        let f = fault(true, false, None);
        assert!(f.hits(Op::Write, Path::new("store/seg-1")));
        assert!(f.hits(Op::Write, Path::new("log/00001.seg")));
        assert!(!f.hits(Op::Sync, Path::new("store/seg-1")));
    }

    #[test]
    fn a_fault_with_a_pattern_fails_only_paths_containing_it() {
        let f = fault(true, true, Some("store/"));
        assert!(f.hits(Op::Write, Path::new("store/seg-1")));
        assert!(f.hits(Op::Sync, Path::new("store/seg-1")));
        assert!(!f.hits(Op::Write, Path::new("log/00001.seg")));
        assert!(!f.hits(Op::Sync, Path::new("log")));
    }

    #[test]
    fn no_fault_fails_nothing() {
        let f = Fault::default();
        assert!(!f.hits(Op::Write, Path::new("store/seg-1")));
        assert!(!f.hits(Op::Sync, Path::new("")));
    }
}
