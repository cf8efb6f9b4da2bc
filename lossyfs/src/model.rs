//! The durable-state bookkeeping, without FUSE: what a power cut would
//! keep of every file and directory written through [`Disk`].
//!
//! The backing directory always holds the *live* state (what the page
//! cache would show). Beside it the model keeps just enough to go back to
//! the *durable* state:
//!
//! - per file (keyed by the backing file's inode number, so renames do not
//!   matter): the length made durable by the last `fsync`/`fdatasync`, and
//!   an undo record of every durable byte overwritten since (the old bytes);
//! - per namespace change (create, mkdir, unlink, rename) not yet covered by
//!   an `fsync` of a directory it touched: how to undo it. An unlinked or
//!   displaced file is moved to a hidden trash directory until that `fsync`,
//!   so a power cut can bring it back.
//!
//! A power cut ([`Disk::power_cut`]) cuts every file back to its durable
//! length, writes the undo records back newest first, then undoes the
//! namespace changes newest first. With a tear seed, the newest write not
//! yet durable survives in part: the file keeps its live bytes up to a
//! random byte inside that write (a sector-less model of a torn append).
//!
//! What it does not model (and why that is fine for these tests): metadata
//! other than names and lengths (modes, times), reordering of the durable
//! writes themselves (once synced, bytes stay), and cross-directory
//! histories whose directories were synced in an order that makes the undo
//! ambiguous (the stores under test keep their files in one directory).
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The hidden directory (under the backing root) of unlinked files kept
/// for a power cut to restore.
pub const TRASH_DIR: &str = ".lossyfs-trash";

/// What is not durable in one file.
#[derive(Debug)]
struct FileState {
    /// A handle on the backing file (valid through renames and trash moves).
    file: File,
    /// Length after the last sync.
    durable_len: u64,
    /// `(offset, old bytes)` of durable bytes overwritten since the sync,
    /// oldest first.
    undo: Vec<(u64, Vec<u8>)>,
}

/// One namespace change not yet durable, with what undoes it.
#[derive(Debug)]
enum NsOp {
    /// `path` appeared (a file or directory): undo removes it.
    Created { path: PathBuf },
    /// `path` was unlinked; its file waits in `trash`.
    Removed { path: PathBuf, trash: PathBuf },
    /// `from` was renamed to `to`; what `to` was before waits in `displaced`.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        displaced: Option<PathBuf>,
    },
}

impl NsOp {
    /// The directories whose fsync makes this change durable.
    fn touches(&self, dir: &Path) -> bool {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        match self {
            NsOp::Created { path } | NsOp::Removed { path, .. } => parent(path) == dir,
            NsOp::Renamed { from, to, .. } => parent(from) == dir || parent(to) == dir,
        }
    }
}

impl NsOp {
    /// The name this change leaves behind.
    fn name(&self) -> &Path {
        match self {
            NsOp::Created { path } | NsOp::Removed { path, .. } => path,
            NsOp::Renamed { to, .. } => to,
        }
    }
}

/// The newest write, kept for a torn power cut.
#[derive(Debug, Clone, Copy)]
struct LastWrite {
    ino: u64,
    offset: u64,
    len: u64,
}

/// What a power cut dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Files cut back to their durable state.
    pub files: usize,
    /// Bytes past the durable lengths that were dropped.
    pub bytes_dropped: u64,
    /// Namespace changes undone.
    pub names_undone: usize,
    /// Bytes of the newest write that survived a tear (`None`: no tear).
    pub torn_kept: Option<u64>,
}

/// The model over one backing directory. Paths are relative to its root.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    files: HashMap<u64, FileState>,
    names: Vec<NsOp>,
    last_write: Option<LastWrite>,
    trash_seq: u64,
}

fn ino_of(file: &File) -> io::Result<u64> {
    Ok(file.metadata()?.ino())
}

/// A small xorshift: the tear point from a seed, reproducible.
fn xorshift(mut x: u64) -> u64 {
    x |= 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

impl Disk {
    /// Everything already in `root` counts as durable.
    pub fn new(root: PathBuf) -> io::Result<Disk> {
        let trash = root.join(TRASH_DIR);
        if trash.exists() {
            // Left by a process that died without a power cut: its unlinks
            // count as done.
            fs::remove_dir_all(&trash)?;
        }
        fs::create_dir_all(&trash)?;
        Ok(Disk {
            root,
            files: HashMap::new(),
            names: Vec::new(),
            last_write: None,
            trash_seq: 0,
        })
    }

    /// The backing path of `rel`.
    pub fn backing(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn state(&mut self, file: &File) -> io::Result<(u64, &mut FileState)> {
        let ino = ino_of(file)?;
        let state = match self.files.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(FileState {
                file: file.try_clone()?,
                durable_len: file.metadata()?.len(),
                undo: Vec::new(),
            }),
        };
        Ok((ino, state))
    }

    /// Saves the durable bytes in `offset..offset + len` before they change.
    fn save_overlap(state: &mut FileState, offset: u64, len: u64) -> io::Result<()> {
        let end = (offset + len).min(state.durable_len);
        if offset >= end {
            return Ok(());
        }
        let mut old = vec![0; (end - offset) as usize];
        state.file.read_exact_at(&mut old, offset)?;
        state.undo.push((offset, old));
        Ok(())
    }

    /// `pwrite` of `data` at `offset` to `file` (open on a backing file).
    pub fn write(&mut self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let (ino, state) = self.state(file)?;
        Self::save_overlap(state, offset, data.len() as u64)?;
        file.write_all_at(data, offset)?;
        self.last_write = Some(LastWrite {
            ino,
            offset,
            len: data.len() as u64,
        });
        Ok(())
    }

    /// Truncates or extends `file` to `len`.
    pub fn set_len(&mut self, file: &File, len: u64) -> io::Result<()> {
        let (_, state) = self.state(file)?;
        let cur = file.metadata()?.len();
        if len < cur {
            Self::save_overlap(state, len, cur - len)?;
        }
        file.set_len(len)
    }

    /// `fsync`/`fdatasync` of `file`: its bytes become durable (not its name).
    pub fn sync(&mut self, file: &File) -> io::Result<()> {
        let ino = ino_of(file)?;
        if let Some(mut state) = self.files.remove(&ino) {
            state.durable_len = file.metadata()?.len();
            state.undo.clear();
            // Nothing left to undo: forget the file until its next write.
        }
        Ok(())
    }

    /// `fsync` of directory `dir`: the changes of its entries become
    /// durable. Returns the names they left (created, removed, or renamed
    /// to), oldest first: what a test may wait for.
    pub fn sync_dir(&mut self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut kept = Vec::with_capacity(self.names.len());
        let mut durable = Vec::new();
        for op in self.names.drain(..) {
            if !op.touches(dir) {
                kept.push(op);
                continue;
            }
            durable.push(op.name().to_path_buf());
            let trash = match &op {
                NsOp::Removed { trash, .. } => Some(trash.clone()),
                NsOp::Renamed { displaced, .. } => displaced.clone(),
                NsOp::Created { .. } => None,
            };
            if let Some(t) = trash {
                let path = self.root.join(&t);
                if let Ok(f) = File::open(&path) {
                    if let Ok(ino) = ino_of(&f) {
                        self.files.remove(&ino);
                    }
                }
                let _ = fs::remove_file(path);
            }
        }
        self.names = kept;
        Ok(durable)
    }

    /// Records that `rel` (a new file or directory) was just created.
    pub fn created(&mut self, rel: &Path) {
        self.names.push(NsOp::Created {
            path: rel.to_path_buf(),
        });
    }

    fn move_to_trash(&mut self, rel: &Path) -> io::Result<PathBuf> {
        self.trash_seq += 1;
        let trash = Path::new(TRASH_DIR).join(self.trash_seq.to_string());
        fs::rename(self.root.join(rel), self.root.join(&trash))?;
        Ok(trash)
    }

    /// Unlinks file `rel` (kept in the trash until its directory is synced).
    pub fn unlink(&mut self, rel: &Path) -> io::Result<()> {
        let trash = self.move_to_trash(rel)?;
        self.names.push(NsOp::Removed {
            path: rel.to_path_buf(),
            trash,
        });
        Ok(())
    }

    /// Removes the empty directory `rel`.
    pub fn rmdir(&mut self, rel: &Path) -> io::Result<()> {
        fs::remove_dir(self.root.join(rel))?;
        // Undo recreates it empty: a directory has no bytes to keep.
        self.names.push(NsOp::Removed {
            path: rel.to_path_buf(),
            trash: PathBuf::new(),
        });
        Ok(())
    }

    /// Renames `from` to `to`, replacing a file at `to`.
    pub fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let target = self.root.join(to);
        let displaced = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => Some(self.move_to_trash(to)?),
            _ => None,
        };
        fs::rename(self.root.join(from), &target)?;
        self.names.push(NsOp::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            displaced,
        });
        Ok(())
    }

    /// Loses power: the backing directory goes back to the durable state.
    /// `tear`: a seed for keeping part of the newest unsynced write.
    pub fn power_cut(&mut self, tear: Option<u64>) -> io::Result<CutReport> {
        let mut report = CutReport::default();
        let torn = match (tear, self.last_write) {
            (Some(seed), Some(w)) => self.torn_bytes(seed, w)?,
            _ => None,
        };
        for (ino, state) in self.files.drain() {
            let live = state.file.metadata()?.len();
            report.files += 1;
            report.bytes_dropped += live.saturating_sub(state.durable_len);
            state.file.set_len(state.durable_len)?;
            for (offset, old) in state.undo.iter().rev() {
                state.file.write_all_at(old, *offset)?;
            }
            if let Some((t_ino, bytes)) = &torn {
                if *t_ino == ino {
                    state.file.write_all_at(bytes, state.durable_len)?;
                    report.torn_kept = Some(bytes.len() as u64);
                    report.bytes_dropped -= bytes.len() as u64;
                }
            }
        }
        for op in self.names.drain(..).rev() {
            report.names_undone += 1;
            // Best effort: a path a later (durable) change moved is gone.
            let _ = undo(&self.root, op);
        }
        self.last_write = None;
        Ok(report)
    }

    /// The live bytes past the durable length up to a random byte inside
    /// the newest write `w`, if that write is not durable.
    fn torn_bytes(&self, seed: u64, w: LastWrite) -> io::Result<Option<(u64, Vec<u8>)>> {
        let Some(state) = self.files.get(&w.ino) else {
            return Ok(None);
        };
        if w.len == 0 || w.offset + w.len <= state.durable_len {
            return Ok(None);
        }
        let cut = w.offset + xorshift(seed) % w.len;
        if cut <= state.durable_len {
            return Ok(Some((w.ino, Vec::new())));
        }
        let mut kept = vec![0; (cut - state.durable_len) as usize];
        state.file.read_exact_at(&mut kept, state.durable_len)?;
        Ok(Some((w.ino, kept)))
    }
}

fn undo(root: &Path, op: NsOp) -> io::Result<()> {
    match op {
        NsOp::Created { path } => {
            let p = root.join(path);
            if p.is_dir() {
                fs::remove_dir_all(p)
            } else {
                fs::remove_file(p)
            }
        }
        NsOp::Removed { path, trash } if trash.as_os_str().is_empty() => {
            fs::create_dir(root.join(path))
        }
        NsOp::Removed { path, trash } => fs::rename(root.join(trash), root.join(path)),
        NsOp::Renamed {
            from,
            to,
            displaced,
        } => {
            fs::rename(root.join(&to), root.join(from))?;
            match displaced {
                Some(d) => fs::rename(root.join(d), root.join(to)),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
