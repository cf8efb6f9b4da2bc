//! The mount's state behind its one lock: the disk model, which inode is
//! which path, the open handles, and the power and fault switches the
//! tests hold through [`super::Control`].
//!
//! Why a file of its own: this is what both sides share, the tests'
//! control and the FUSE handlers (`fuse.rs`); each handler is then a few
//! lines over these steps.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo};

use super::{Fault, Op};
use crate::model::{CutReport, Disk, TRASH_DIR};

/// A power cut armed to fall the moment a matching name becomes durable.
#[derive(Debug)]
pub(super) struct CutWhen {
    pub(super) name_contains: String,
    pub(super) tear_seed: Option<u64>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) disk: Disk,
    /// Inode → path relative to the root.
    pub(super) paths: HashMap<u64, PathBuf>,
    pub(super) handles: HashMap<u64, File>,
    pub(super) next_fh: u64,
    /// After a power cut: every operation fails until the next mount.
    pub(super) off: bool,
    pub(super) fault: Fault,
    /// Operations failed by `fault` since mount.
    pub(super) faults_hit: u64,
    pub(super) cut_when: Option<CutWhen>,
    /// What the armed cut dropped, once it fell (taken by `wait_cut`).
    pub(super) armed_cut: Option<io::Result<CutReport>>,
}

pub(super) fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

pub(super) fn attr(ino: u64, m: &fs::Metadata) -> FileAttr {
    let time = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: if m.is_dir() {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: (m.permissions().mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Inner {
    /// Loses power: the backing directory goes back to its durable state
    /// and every later operation fails with `EIO`.
    pub(super) fn cut(&mut self, tear_seed: Option<u64>) -> io::Result<CutReport> {
        self.off = true;
        self.handles.clear();
        self.cut_when = None;
        self.disk.power_cut(tear_seed)
    }

    /// `Err(EIO)` when the injected fault fails `op` on inode `ino`.
    pub(super) fn fault_on(&mut self, op: Op, ino: INodeNo) -> Result<(), Errno> {
        let rel = self.paths.get(&ino.0).cloned().unwrap_or_default();
        if self.fault.hits(op, &rel) {
            self.faults_hit += 1;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    pub(super) fn check(&self) -> Result<(), Errno> {
        if self.off {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    pub(super) fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.check()?;
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    pub(super) fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let p = self.path(parent)?;
        if p.as_os_str().is_empty() && name == TRASH_DIR {
            return Err(Errno::EACCES);
        }
        Ok(p.join(name))
    }

    /// Stats `rel`, remembers its inode's path, returns its attributes.
    pub(super) fn stat(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let m = fs::symlink_metadata(self.disk.backing(rel)).map_err(errno)?;
        let ino = if rel.as_os_str().is_empty() {
            INodeNo::ROOT.0
        } else {
            m.ino()
        };
        self.paths.insert(ino, rel.to_path_buf());
        Ok(attr(ino, &m))
    }

    pub(super) fn open(&mut self, rel: &Path, flags: i32, create: bool) -> Result<u64, Errno> {
        let acc = flags & libc::O_ACCMODE;
        let file = OpenOptions::new()
            // Always readable: the model reads old bytes back for its undo.
            .read(true)
            .write(acc != libc::O_RDONLY || create)
            .create_new(create)
            .mode(0o644)
            .open(self.disk.backing(rel))
            .map_err(errno)?;
        if create {
            self.disk.created(rel);
        } else if flags & libc::O_TRUNC != 0 {
            self.disk.set_len(&file, 0).map_err(errno)?;
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, file);
        Ok(fh)
    }

    pub(super) fn handle(&self, fh: FileHandle) -> Result<&File, Errno> {
        self.check()?;
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    /// Re-points the paths of `from` and everything under it to `to`.
    pub(super) fn moved(&mut self, from: &Path, to: &Path) {
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        }
    }

    pub(super) fn forget_path(&mut self, rel: &Path) {
        self.paths.retain(|_, p| p != rel);
    }
}
