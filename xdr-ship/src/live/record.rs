//! The one recording writer: each sample as a versioned JSON line, the
//! format `replay` plays and the diagnoser's tests read.
//!
//! Why one: `--record` on `ship`/`diagnose`, `observe --record` and the
//! screen's `r` all write recordings. Written here, they are the same
//! format, flushed the same way (every line at once: a crash keeps every
//! line written before it) and fail with the same error.
//!
//! A path ending in `.zst` is written zstd-compressed, one zstd frame per
//! line: concatenated frames are one valid zstd stream, so a kill (or an
//! `append` to an old recording) leaves every line before it readable,
//! which one long frame would not (its end would be missing). The cost is
//! a worse ratio than one frame, still several times smaller than plain.
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::diagnose::{DiagnoseError, Sample};

/// Why a recording could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Opening or writing the file failed.
    #[error("recording to {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The sample did not serialize.
    #[error("recording to {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// What the encoder said.
        source: DiagnoseError,
    },
}

/// zstd's level for recordings: a line a second, so speed hardly matters.
const ZSTD_LEVEL: i32 = 9;

/// An open recording.
#[derive(Debug)]
pub struct RecordingWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// Each line as its own zstd frame (the path ends in `.zst`).
    zstd: bool,
}

impl RecordingWriter {
    /// A new recording at `path`, replacing what was there.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, RecordError> {
        Self::open(
            path.into(),
            OpenOptions::new().write(true).create(true).truncate(true),
        )
    }

    /// A recording appended to `path` (created if missing).
    pub fn append(path: impl Into<PathBuf>) -> Result<Self, RecordError> {
        Self::open(path.into(), OpenOptions::new().create(true).append(true))
    }

    fn open(path: PathBuf, how: &OpenOptions) -> Result<Self, RecordError> {
        match how.open(&path) {
            Ok(f) => Ok(Self {
                zstd: path.extension().is_some_and(|e| e == "zst"),
                path,
                out: BufWriter::new(f),
            }),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `sample` as one line and flushes it.
    pub fn write(&mut self, sample: &Sample) -> Result<(), RecordError> {
        let line = sample
            .to_json_line()
            .map_err(|source| RecordError::Encode {
                path: self.path.clone(),
                source,
            })?;
        let line = line + "\n";
        let framed;
        let bytes = if self.zstd {
            framed = zstd::bulk::compress(line.as_bytes(), ZSTD_LEVEL).map_err(|source| {
                RecordError::Io {
                    path: self.path.clone(),
                    source,
                }
            })?;
            &framed[..]
        } else {
            line.as_bytes()
        };
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(|source| RecordError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes what is buffered and closes the file.
    pub fn finish(mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|source| RecordError::Io {
            path: self.path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose::LinkHints, metrics::ShipSnapshot};

    fn sample(at_s: f64) -> Sample {
        let ship = ShipSnapshot {
            elapsed_s: at_s,
            ..ShipSnapshot::default()
        };
        Sample::from_snapshot(ship, None, LinkHints::default())
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xdr-ship-record-{}-{name}", std::process::id()))
    }

    fn read_back(path: &Path) -> Vec<Sample> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| Sample::from_json_line(l).unwrap())
            .collect()
    }

    #[test]
    fn each_sample_is_one_line_that_replays_to_the_same_sample() {
        let path = scratch("lines");
        let mut w = RecordingWriter::create(&path).unwrap();
        w.write(&sample(1.0)).unwrap();
        w.write(&sample(2.0)).unwrap();
        assert_eq!(read_back(&path), [sample(1.0), sample(2.0)]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn create_replaces_and_append_keeps_what_was_there() {
        let path = scratch("modes");
        RecordingWriter::create(&path)
            .unwrap()
            .write(&sample(1.0))
            .unwrap();
        RecordingWriter::append(&path)
            .unwrap()
            .write(&sample(2.0))
            .unwrap();
        assert_eq!(read_back(&path).len(), 2);
        RecordingWriter::create(&path)
            .unwrap()
            .write(&sample(3.0))
            .unwrap();
        assert_eq!(read_back(&path), [sample(3.0)]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_zst_path_is_written_compressed_and_replays_to_the_same_samples() {
        let path = scratch("compressed.jsonl.zst");
        let mut w = RecordingWriter::create(&path).unwrap();
        w.write(&sample(1.0)).unwrap();
        w.write(&sample(2.0)).unwrap();
        // Not finished (as after a kill): every written line still reads.
        let raw = std::fs::read(&path).unwrap();
        let plain = zstd::stream::decode_all(&raw[..]).expect("valid zstd");
        let read = crate::tui::replay::read_recording(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read, [sample(1.0), sample(2.0)]);
        assert_eq!(String::from_utf8(plain).unwrap().lines().count(), 2);
    }

    #[test]
    fn appending_to_a_zst_recording_keeps_it_one_readable_stream() {
        let path = scratch("appended.jsonl.zst");
        RecordingWriter::create(&path)
            .unwrap()
            .write(&sample(1.0))
            .unwrap();
        RecordingWriter::append(&path)
            .unwrap()
            .write(&sample(2.0))
            .unwrap();
        let read = crate::tui::replay::read_recording(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read, [sample(1.0), sample(2.0)]);
    }

    #[test]
    fn a_file_that_cannot_be_created_is_an_error_naming_it() {
        let e = RecordingWriter::create("/nonexistent-dir/x.jsonl").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x.jsonl"), "{e}");
    }
}
