//! Opening the log after a crash: find the segments, check their order,
//! cut the last one at its first entry that does not check out (a write
//! torn by the crash), or start the first segment of a new log.
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    path::PathBuf,
};

use super::{
    io_err,
    segment::{self, parse_segment_name, segment_name},
    sync_dir, LogConfig, LogError, SegmentInfo,
};

/// What is on disk, ready to append to.
pub(super) struct Recovered {
    pub segments: VecDeque<SegmentInfo>,
    /// The last segment, open for appending.
    pub active: File,
    /// The position the next append gets.
    pub next_seq: u64,
    /// Whether the last segment was cut.
    pub torn: bool,
}

/// Finds the log's segments in `cfg.dir` (creating the directory and the
/// first segment if needed) and cuts a torn tail.
pub(super) fn recover(cfg: &LogConfig) -> Result<Recovered, LogError> {
    segment::create_dir_durable(&cfg.dir)
        .map_err(io_err(format!("create {}", cfg.dir.display())))?;
    let mut found = list_segments(cfg)?;
    let mut torn = false;
    let next_seq = if let Some(last) = found.last_mut() {
        let (next_seq, cut) = cut_torn_tail(last)?;
        torn = cut;
        next_seq
    } else {
        let path = cfg.dir.join(segment_name(0));
        File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
        sync_dir(&cfg.dir)?;
        found.push((0, path, 0));
        0
    };
    let last = found.last().expect("at least one segment");
    let active = OpenOptions::new()
        .append(true)
        .open(&last.1)
        .map_err(io_err(format!("open {}", last.1.display())))?;
    let segments: VecDeque<SegmentInfo> = found
        .into_iter()
        .map(|(first_seq, path, bytes)| SegmentInfo {
            first_seq,
            path,
            bytes,
        })
        .collect();
    Ok(Recovered {
        segments,
        active,
        next_seq,
        torn,
    })
}

/// The segments in `cfg.dir` as (first position, path, length), in order;
/// removes checkpoint writes that never got renamed.
fn list_segments(cfg: &LogConfig) -> Result<Vec<(u64, PathBuf, u64)>, LogError> {
    let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
    for entry in fs::read_dir(&cfg.dir).map_err(io_err(format!("list {}", cfg.dir.display())))? {
        let entry = entry.map_err(io_err(format!("list {}", cfg.dir.display())))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_segment_name) {
            let len = entry
                .metadata()
                .map_err(io_err(format!("stat {}", entry.path().display())))?
                .len();
            found.push((first, entry.path(), len));
        } else if name.to_str().is_some_and(|n| n.ends_with(".tmp")) {
            // A checkpoint write that never got renamed.
            let _ = fs::remove_file(entry.path());
        }
    }
    found.sort_by_key(|s| s.0);
    for pair in found.windows(2) {
        if pair[0].0 >= pair[1].0 {
            return Err(LogError::Corrupt {
                path: pair[1].1.clone(),
                offset: 0,
                reason: "segments out of order".into(),
            });
        }
    }
    Ok(found)
}

/// Scans the last segment and cuts it at its first invalid entry; returns
/// the next position and whether it cut.
fn cut_torn_tail(last: &mut (u64, PathBuf, u64)) -> Result<(u64, bool), LogError> {
    let scan = segment::scan(&last.1, last.0)?;
    let mut torn = false;
    if let Some(why) = &scan.torn {
        tracing::warn!(
            "source log: cutting {} at byte {} (was {}): {why}",
            last.1.display(),
            scan.valid_len,
            last.2
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&last.1)
            .map_err(io_err(format!("open {}", last.1.display())))?;
        f.set_len(scan.valid_len)
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("truncate {}", last.1.display())))?;
        last.2 = scan.valid_len;
        torn = true;
    }
    Ok((scan.next_seq, torn))
}
