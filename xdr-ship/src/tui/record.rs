//! `r`: writes each incoming sample as a versioned JSON line, the format
//! `replay` and the diagnoser's tests read.
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::diagnose::Sample;

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
        source: crate::diagnose::DiagnoseError,
    },
}

/// Starts and stops recordings to one place.
#[derive(Debug)]
pub struct Recorder {
    to: PathBuf,
    open: Option<(PathBuf, BufWriter<File>)>,
    written: Vec<PathBuf>,
}

impl Recorder {
    /// Records into `to`: a directory gets a new file per recording, any
    /// other path is appended to.
    pub fn new(to: impl Into<PathBuf>) -> Self {
        Self {
            to: to.into(),
            open: None,
            written: Vec::new(),
        }
    }

    /// The file being written, if recording.
    pub fn current(&self) -> Option<&Path> {
        self.open.as_ref().map(|(p, _)| p.as_path())
    }

    /// Every file recorded to so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.written
    }

    /// Starts a recording (or stops the one running); returns the file now
    /// written to.
    pub fn toggle(&mut self) -> Result<Option<PathBuf>, RecordError> {
        if self.open.is_some() {
            self.stop()?;
            return Ok(None);
        }
        let path = if self.to.is_dir() {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.to.join(format!("xdr-ship-{secs}.jsonl"))
        } else {
            self.to.clone()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| RecordError::Io {
                path: path.clone(),
                source,
            })?;
        if !self.written.contains(&path) {
            self.written.push(path.clone());
        }
        self.open = Some((path.clone(), BufWriter::new(file)));
        Ok(Some(path))
    }

    /// Stops recording, flushing what is buffered.
    pub fn stop(&mut self) -> Result<(), RecordError> {
        if let Some((path, mut w)) = self.open.take() {
            w.flush()
                .map_err(|source| RecordError::Io { path, source })?;
        }
        Ok(())
    }

    /// Appends `sample` if recording (flushed at once: a crash keeps every
    /// line written before it). On error the recording stops.
    pub fn write(&mut self, sample: &Sample) -> Result<(), RecordError> {
        let Some((path, w)) = &mut self.open else {
            return Ok(());
        };
        let result = match sample.to_json_line() {
            Ok(line) => writeln!(w, "{line}")
                .and_then(|()| w.flush())
                .map_err(|source| RecordError::Io {
                    path: path.clone(),
                    source,
                }),
            Err(source) => Err(RecordError::Encode {
                path: path.clone(),
                source,
            }),
        };
        if result.is_err() {
            self.open = None;
        }
        result
    }
}
