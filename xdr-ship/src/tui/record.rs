//! `r`: starts and stops recordings of the samples the screen shows,
//! written by the live pipeline's one recording writer
//! ([`crate::live::record`]).
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

pub use crate::live::record::RecordError;
use crate::{diagnose::Sample, live::record::RecordingWriter};

/// Starts and stops recordings to one place.
#[derive(Debug)]
pub struct Recorder {
    to: PathBuf,
    open: Option<RecordingWriter>,
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
        self.open.as_ref().map(RecordingWriter::path)
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
        let writer = RecordingWriter::append(&path)?;
        if !self.written.contains(&path) {
            self.written.push(path.clone());
        }
        self.open = Some(writer);
        Ok(Some(path))
    }

    /// Stops recording, flushing what is buffered.
    pub fn stop(&mut self) -> Result<(), RecordError> {
        match self.open.take() {
            Some(w) => w.finish(),
            None => Ok(()),
        }
    }

    /// Appends `sample` if recording (flushed at once: a crash keeps every
    /// line written before it). On error the recording stops.
    pub fn write(&mut self, sample: &Sample) -> Result<(), RecordError> {
        let Some(w) = &mut self.open else {
            return Ok(());
        };
        let result = w.write(sample);
        if result.is_err() {
            self.open = None;
        }
        result
    }
}
