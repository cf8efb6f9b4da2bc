//! The FUSE handlers: each kernel request checked against the power and
//! the injected faults, passed to the backing directory, and every write,
//! sync and name change told to the disk model.
//!
//! Why a file of its own: `fuser::Filesystem` is one long trait; kept
//! apart, the public side (`fs.rs`: mount, control, faults) reads alone.
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

use super::state::{errno, Inner};
use super::{Op, TTL};
use crate::model::TRASH_DIR;

/// The filesystem fuser serves: the shared state.
pub(super) struct LossyFs(pub(super) Arc<Mutex<Inner>>);

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
