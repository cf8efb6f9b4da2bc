//! The FUSE side: a pass-through filesystem over a backing directory whose
//! every write, sync and name change goes through the [`Disk`] model.
//!
//! Inode numbers are the backing files' own (the root is inode 1), so a
//! file keeps its number through renames. One thread serves the mount: the
//! model is one lock anyway, and the tests' stores group their syncs.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    WriteFlags,
};

use crate::model::{CutReport, Disk, TRASH_DIR};

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

/// A power cut armed to fall the moment a matching name becomes durable.
#[derive(Debug)]
struct CutWhen {
    name_contains: String,
    tear_seed: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    disk: Disk,
    /// Inode → path relative to the root.
    paths: HashMap<u64, PathBuf>,
    handles: HashMap<u64, File>,
    next_fh: u64,
    /// After a power cut: every operation fails until the next mount.
    off: bool,
    fault: Fault,
    /// Operations failed by `fault` since mount.
    faults_hit: u64,
    cut_when: Option<CutWhen>,
    /// What the armed cut dropped, once it fell (taken by `wait_cut`).
    armed_cut: Option<io::Result<CutReport>>,
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

struct LossyFs(Arc<Mutex<Inner>>);

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn attr(ino: u64, m: &fs::Metadata) -> FileAttr {
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
    fn cut(&mut self, tear_seed: Option<u64>) -> io::Result<CutReport> {
        self.off = true;
        self.handles.clear();
        self.cut_when = None;
        self.disk.power_cut(tear_seed)
    }

    /// `Err(EIO)` when the injected fault fails `op` on inode `ino`.
    fn fault_on(&mut self, op: Op, ino: INodeNo) -> Result<(), Errno> {
        let rel = self.paths.get(&ino.0).cloned().unwrap_or_default();
        if self.fault.hits(op, &rel) {
            self.faults_hit += 1;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), Errno> {
        if self.off {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.check()?;
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let p = self.path(parent)?;
        if p.as_os_str().is_empty() && name == TRASH_DIR {
            return Err(Errno::EACCES);
        }
        Ok(p.join(name))
    }

    /// Stats `rel`, remembers its inode's path, returns its attributes.
    fn stat(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let m = fs::symlink_metadata(self.disk.backing(rel)).map_err(errno)?;
        let ino = if rel.as_os_str().is_empty() {
            INodeNo::ROOT.0
        } else {
            m.ino()
        };
        self.paths.insert(ino, rel.to_path_buf());
        Ok(attr(ino, &m))
    }

    fn open(&mut self, rel: &Path, flags: i32, create: bool) -> Result<u64, Errno> {
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

    fn handle(&self, fh: FileHandle) -> Result<&File, Errno> {
        self.check()?;
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    /// Re-points the paths of `from` and everything under it to `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        }
    }

    fn forget_path(&mut self, rel: &Path) {
        self.paths.retain(|_, p| p != rel);
    }
}

impl LossyFs {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

macro_rules! tryr {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.child(parent, name));
        let a = tryr!(reply, s.stat(&rel));
        reply.entry(&TTL, &a, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.path(ino));
        let a = tryr!(reply, s.stat(&rel));
        reply.attr(&TTL, &a);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.path(ino));
        if let Some(len) = size {
            tryr!(reply, s.fault_on(Op::Write, ino));
            let file = match fh.and_then(|fh| s.handles.get(&fh.0)) {
                Some(f) => tryr!(reply, f.try_clone().map_err(errno)),
                None => tryr!(
                    reply,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(s.disk.backing(&rel))
                        .map_err(errno)
                ),
            };
            tryr!(reply, s.disk.set_len(&file, len).map_err(errno));
        }
        if let Some(mode) = mode {
            let perms = fs::Permissions::from_mode(mode & 0o7777);
            tryr!(
                reply,
                fs::set_permissions(s.disk.backing(&rel), perms).map_err(errno)
            );
        }
        let a = tryr!(reply, s.stat(&rel));
        reply.attr(&TTL, &a);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.child(parent, name));
        let mut b = fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, mode & 0o7777);
        tryr!(reply, b.create(s.disk.backing(&rel)).map_err(errno));
        s.disk.created(&rel);
        let a = tryr!(reply, s.stat(&rel));
        reply.entry(&TTL, &a, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.child(parent, name));
        tryr!(reply, s.disk.unlink(&rel).map_err(errno));
        s.forget_path(&rel);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.child(parent, name));
        tryr!(reply, s.disk.rmdir(&rel).map_err(errno));
        s.forget_path(&rel);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let mut s = self.lock();
        let from = tryr!(reply, s.child(parent, name));
        let to = tryr!(reply, s.child(newparent, newname));
        tryr!(reply, s.disk.rename(&from, &to).map_err(errno));
        s.forget_path(&to);
        s.moved(&from, &to);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.path(ino));
        let fh = tryr!(reply, s.open(&rel, flags.0, false));
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.child(parent, name));
        let fh = tryr!(reply, s.open(&rel, flags, true));
        let a = tryr!(reply, s.stat(&rel));
        reply.created(
            &TTL,
            &a,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        let file = tryr!(reply, s.handle(fh));
        let mut buf = vec![0; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        tryr!(reply, s.check());
        tryr!(reply, s.fault_on(Op::Write, ino));
        let file = tryr!(
            reply,
            s.handle(fh).and_then(|f| f.try_clone().map_err(errno))
        );
        tryr!(reply, s.disk.write(&file, offset, data).map_err(errno));
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        tryr!(reply, s.check());
        tryr!(reply, s.fault_on(Op::Sync, ino));
        let file = tryr!(
            reply,
            s.handle(fh).and_then(|f| f.try_clone().map_err(errno))
        );
        tryr!(reply, s.disk.sync(&file).map_err(errno));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.lock();
        tryr!(reply, s.path(ino));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.path(ino));
        let it = tryr!(reply, fs::read_dir(s.disk.backing(&rel)).map_err(errno));
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in it.flatten() {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && name == TRASH_DIR {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let kind = if m.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            s.paths.insert(m.ino(), rel.join(&name));
            entries.push((m.ino(), kind, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let rel = tryr!(reply, s.path(ino));
        tryr!(reply, s.fault_on(Op::Sync, ino));
        let durable = tryr!(reply, s.disk.sync_dir(&rel).map_err(errno));
        let fire = s.cut_when.as_ref().is_some_and(|w| {
            durable
                .iter()
                .any(|p| p.to_string_lossy().contains(&w.name_contains))
        });
        if fire {
            let tear = s.cut_when.as_ref().and_then(|w| w.tear_seed);
            // The sync itself returned before the power went.
            s.armed_cut = Some(s.cut(tear));
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.lock();
        tryr!(reply, s.check());
        let root = s.disk.backing(Path::new(""));
        let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid path and `st` a valid out-pointer, both
        // alive for the call.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return reply.error(errno(io::Error::last_os_error()));
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }
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
