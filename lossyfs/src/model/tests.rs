use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::*;

/// A fresh backing directory, removed on drop.
struct Backing(PathBuf);
impl Backing {
    fn new(tag: &str) -> Backing {
        let p = std::env::temp_dir().join(format!("lossyfs-model-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Backing(p)
    }
}
impl Drop for Backing {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn create(disk: &mut Disk, rel: &str) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(disk.backing(Path::new(rel)))
        .unwrap();
    disk.created(Path::new(rel));
    f
}

fn read(b: &Backing, rel: &str) -> Option<Vec<u8>> {
    fs::read(b.0.join(rel)).ok()
}

#[test]
fn a_cut_keeps_synced_bytes_and_drops_the_rest() {
    let b = Backing::new("bytes");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "log");
    disk.sync_dir(Path::new("")).unwrap();
    disk.write(&f, 0, b"durable.").unwrap();
    disk.sync(&f).unwrap();
    disk.write(&f, 8, b"volatile").unwrap();
    let report = disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "log").as_deref(), Some(&b"durable."[..]));
    assert_eq!(report.bytes_dropped, 8);
}

#[test]
fn a_cut_restores_durable_bytes_overwritten_since_the_sync() {
    let b = Backing::new("overwrite");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "f");
    disk.sync_dir(Path::new("")).unwrap();
    disk.write(&f, 0, b"aaaa").unwrap();
    disk.sync(&f).unwrap();
    disk.write(&f, 1, b"bb").unwrap();
    disk.write(&f, 2, b"cccc").unwrap();
    disk.set_len(&f, 1).unwrap();
    disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "f").as_deref(), Some(&b"aaaa"[..]));
}

#[test]
fn a_file_whose_directory_was_never_synced_disappears() {
    let b = Backing::new("newfile");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "seg");
    disk.write(&f, 0, b"synced but unnamed").unwrap();
    disk.sync(&f).unwrap();
    disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "seg"), None);
}

#[test]
fn an_unsynced_rename_goes_back_and_the_replaced_file_returns() {
    let b = Backing::new("rename");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let old = create(&mut disk, "ckpt");
    disk.write(&old, 0, b"old").unwrap();
    disk.sync(&old).unwrap();
    let tmp = create(&mut disk, "ckpt.tmp");
    disk.sync_dir(Path::new("")).unwrap();
    disk.write(&tmp, 0, b"new").unwrap();
    disk.sync(&tmp).unwrap();
    disk.rename(Path::new("ckpt.tmp"), Path::new("ckpt"))
        .unwrap();
    assert_eq!(read(&b, "ckpt").as_deref(), Some(&b"new"[..]));
    disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "ckpt").as_deref(), Some(&b"old"[..]));
    assert_eq!(read(&b, "ckpt.tmp").as_deref(), Some(&b"new"[..]));
}

#[test]
fn a_rename_followed_by_a_directory_sync_survives() {
    let b = Backing::new("renamesync");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let old = create(&mut disk, "ckpt");
    disk.write(&old, 0, b"old").unwrap();
    disk.sync(&old).unwrap();
    let tmp = create(&mut disk, "ckpt.tmp");
    disk.write(&tmp, 0, b"new").unwrap();
    disk.sync(&tmp).unwrap();
    disk.rename(Path::new("ckpt.tmp"), Path::new("ckpt"))
        .unwrap();
    disk.sync_dir(Path::new("")).unwrap();
    disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "ckpt").as_deref(), Some(&b"new"[..]));
    assert_eq!(read(&b, "ckpt.tmp"), None);
    assert_eq!(fs::read_dir(b.0.join(TRASH_DIR)).unwrap().count(), 0);
}

#[test]
fn an_unsynced_unlink_comes_back_with_its_durable_bytes() {
    let b = Backing::new("unlink");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "seg");
    disk.write(&f, 0, b"kept").unwrap();
    disk.sync(&f).unwrap();
    disk.sync_dir(Path::new("")).unwrap();
    disk.unlink(Path::new("seg")).unwrap();
    assert_eq!(read(&b, "seg"), None);
    disk.power_cut(None).unwrap();
    assert_eq!(read(&b, "seg").as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_torn_cut_keeps_a_prefix_of_the_newest_write_only() {
    let b = Backing::new("tear");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "log");
    disk.sync_dir(Path::new("")).unwrap();
    disk.write(&f, 0, b"0123").unwrap();
    disk.sync(&f).unwrap();
    disk.write(&f, 4, b"4567").unwrap();
    disk.write(&f, 8, b"89abcdef").unwrap();
    let mut kept_lengths = std::collections::BTreeSet::new();
    for seed in 1..40u64 {
        // Redo the same unsynced tail each round.
        disk.write(&f, 4, b"4567").unwrap();
        disk.write(&f, 8, b"89abcdef").unwrap();
        let report = disk.power_cut(Some(seed)).unwrap();
        let got = read(&b, "log").unwrap();
        assert!(got.len() >= 8 && got.len() < 16, "{} bytes", got.len());
        assert_eq!(&got[..], &b"0123456789abcdef"[..got.len()]);
        assert_eq!(report.torn_kept, Some(got.len() as u64 - 4));
        kept_lengths.insert(got.len());
        // Back to the durable state for the next round.
        disk.set_len(&f, 4).unwrap();
        disk.sync(&f).unwrap();
    }
    assert!(
        kept_lengths.len() > 3,
        "the tear point varies: {kept_lengths:?}"
    );
}

#[test]
fn a_new_directory_never_synced_into_its_parent_disappears_with_its_files() {
    let b = Backing::new("mkdir");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    fs::create_dir(b.0.join("store")).unwrap();
    disk.created(Path::new("store"));
    let f = create(&mut disk, "store/seg");
    disk.sync_dir(Path::new("store")).unwrap();
    disk.write(&f, 0, b"x").unwrap();
    disk.sync(&f).unwrap();
    disk.power_cut(None).unwrap();
    assert!(!b.0.join("store").exists());
}

#[test]
fn a_directory_sync_names_what_it_made_durable() {
    let b = Backing::new("durable-names");
    let mut disk = Disk::new(b.0.clone()).unwrap();
    let f = create(&mut disk, "ckpt.json.tmp");
    disk.sync(&f).unwrap();
    disk.rename(Path::new("ckpt.json.tmp"), Path::new("ckpt.json"))
        .unwrap();
    assert_eq!(
        disk.sync_dir(Path::new("")).unwrap(),
        vec![PathBuf::from("ckpt.json.tmp"), PathBuf::from("ckpt.json")]
    );
    assert!(disk.sync_dir(Path::new("")).unwrap().is_empty());
}
