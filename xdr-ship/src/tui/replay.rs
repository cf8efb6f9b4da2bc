//! Playing a recording back: on the screen at the recorded pace (with
//! pause and seek), or as text, one line per sample.
//!
//! Why replays re-run the engine instead of reading stored verdicts: a
//! recording stores what was measured, not what was concluded, so the
//! rules can change and old runs still replay to today's verdict. Seeking
//! re-runs the diagnoser from the first sample to the target, so a given
//! position always shows the same verdict however it was reached.
use crate::units;
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    app::{Action, App, ReplayStatus, HISTORY},
    term::{run_feed, Feed, FeedState},
    TuiError, TuiExit, TuiOptions, Update,
};
use crate::diagnose::{DiagnoseError, Diagnoser, Diagnosis, Sample};

/// Samples a recording may hold (a day at one a second is 86 400): the
/// whole recording is held in memory for seeking.
pub const MAX_SAMPLES: usize = 1_000_000;

/// Longest pause between two samples on screen, whatever the recording
/// says (a recording resumed after an hour should not freeze the replay).
pub const MAX_GAP: Duration = Duration::from_secs(5);

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is not a sample of this version.
    #[error("{path}: line {line}: {source}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why the line was refused.
        source: DiagnoseError,
    },
    /// No sample at all.
    #[error("{path}: no samples (an empty recording)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// More than [`MAX_SAMPLES`].
    #[error("{path}: more than {MAX_SAMPLES} samples; replay a part (head/tail -n)")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
}

/// The four bytes every zstd frame starts with (RFC 8878, 3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Reads the recording at `path`: JSON lines, plain or zstd-compressed
/// (told apart by the zstd magic, not the file's name, so a renamed file
/// still reads).
pub fn read_recording(path: &Path) -> Result<Vec<Sample>, ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    if file.fill_buf().map_err(io)?.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(file).map_err(io)?;
        read_samples(BufReader::new(decoder), path)
    } else {
        read_samples(file, path)
    }
}

/// Reads recording lines from `reader` (`name` labels errors). Blank lines
/// are skipped; any other line must be a sample of this version.
pub fn read_samples(reader: impl BufRead, name: &Path) -> Result<Vec<Sample>, ReplayError> {
    let mut samples = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ReplayError::Io {
            path: name.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        if samples.len() == MAX_SAMPLES {
            return Err(ReplayError::TooLong {
                path: name.to_owned(),
            });
        }
        let sample = Sample::from_json_line(&line).map_err(|source| ReplayError::Line {
            path: name.to_owned(),
            line: i + 1,
            source,
        })?;
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(ReplayError::Empty {
            path: name.to_owned(),
        });
    }
    Ok(samples)
}

/// One line for one sample: time, throughput, inflight and the verdict.
pub fn text_line(sample: &Sample, diagnosis: Option<&Diagnosis>) -> String {
    let s = &sample.ship;
    let verdict = match diagnosis {
        Some(d) => format!(
            "limit: {} ({}) — {}",
            d.shipper.limit,
            units::pct(d.shipper.share(d.shipper.limit)),
            d.shipper.headline
        ),
        None => "no verdict yet".to_owned(),
    };
    format!(
        "{:>8.1}s {:>9.0} rec/s {:>12} inflight {:>7} │ {verdict}",
        sample.at.as_secs_f64(),
        s.throughput,
        units::rate(s.bytes_per_s),
        s.inflight
    )
}

/// The verdict engine a replay judges with: the same auto-window cap as
/// the live shipper's, so the advice reads the same as it did live.
fn diagnoser(window: Duration) -> Diagnoser {
    Diagnoser::new(window).with_window_cap(crate::ship::AUTO_WINDOW_MAX)
}

/// Text mode: one [`text_line`] per sample, then the final diagnosis in
/// full. Not paced: it is for scripts and for reading.
pub fn write_text(
    samples: &[Sample],
    window: Duration,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut d = diagnoser(window);
    for s in samples {
        d.push(s.clone());
        writeln!(out, "{}", text_line(s, d.verdict().as_ref()))?;
    }
    writeln!(out)?;
    match d.verdict() {
        Some(v) => write!(out, "final verdict, {}", v.report()),
        None => writeln!(
            out,
            "final verdict: none (the recording needs two samples that span some time)"
        ),
    }
}

/// Plays samples into the screen at their recorded pace × speed.
#[derive(Debug)]
pub struct Player {
    samples: Vec<Sample>,
    window: Duration,
    speed: f64,
    diagnoser: Diagnoser,
    /// Samples shown so far.
    shown: usize,
    playing: bool,
    next_due: Option<Instant>,
}

impl Player {
    /// A player at the start of `samples`, playing.
    pub fn new(samples: Vec<Sample>, window: Duration, speed: f64) -> Self {
        Self {
            samples,
            window,
            speed,
            diagnoser: diagnoser(window),
            shown: 0,
            playing: true,
            next_due: None,
        }
    }

    /// Where it stands.
    pub fn status(&self) -> ReplayStatus {
        ReplayStatus {
            shown: self.shown,
            total: self.samples.len(),
            speed: self.speed,
            playing: self.playing && self.shown < self.samples.len(),
        }
    }

    /// Wall time between showing sample `i - 1` and sample `i`.
    fn gap(&self, i: usize) -> Duration {
        let (Some(a), Some(b)) = (self.samples.get(i.wrapping_sub(1)), self.samples.get(i)) else {
            return Duration::ZERO;
        };
        b.at.saturating_sub(a.at).min(MAX_GAP).div_f64(self.speed)
    }

    /// Shows the next sample; `None` at the end.
    pub fn step(&mut self) -> Option<Update> {
        let sample = self.samples.get(self.shown)?.clone();
        self.diagnoser.push(sample.clone());
        self.shown += 1;
        Some(Update {
            diagnosis: self.diagnoser.verdict(),
            sample,
        })
    }

    /// Re-plays from the first sample until `target` samples are shown
    /// (clamped to 1..=len), into a cleared `app`.
    pub fn seek_to(&mut self, target: usize, app: &mut App) {
        let target = target.clamp(1, self.samples.len());
        self.diagnoser = diagnoser(self.window);
        app.clear();
        for i in 0..target {
            let sample = &self.samples[i];
            self.diagnoser.push(sample.clone());
            // Only what the charts can hold goes to the screen.
            if i + HISTORY >= target {
                app.push(Update {
                    sample: sample.clone(),
                    diagnosis: (i + 1 == target)
                        .then(|| self.diagnoser.verdict())
                        .flatten(),
                });
            }
        }
        self.shown = target;
    }
}

impl Feed for Player {
    fn poll(&mut self, now: Instant, out: &mut Vec<Update>) -> FeedState {
        if self.playing {
            for _ in 0..64 {
                if self.shown >= self.samples.len() || self.next_due.is_some_and(|d| d > now) {
                    break;
                }
                let Some(u) = self.step() else { break };
                out.push(u);
                // Keep the recorded pace from the previous due time; after
                // a stall (pause, slow terminal) start again from now.
                let base = self.next_due.filter(|d| now < *d + MAX_GAP).unwrap_or(now);
                self.next_due = Some(base + self.gap(self.shown));
            }
        }
        if self.shown >= self.samples.len() {
            FeedState::Ended
        } else {
            FeedState::Open
        }
    }

    fn next_due(&self) -> Option<Instant> {
        // Played to the end, nothing is due: a due time left in the past
        // would make the loop wait zero and spin a core while at rest.
        let more = self.playing && self.shown < self.samples.len();
        more.then_some(self.next_due).flatten()
    }

    fn act(&mut self, action: Action, now: Instant, app: &mut App) {
        match action {
            Action::TogglePlay => {
                if self.shown >= self.samples.len() {
                    // Play again from the start: every sample comes in
                    // again (and is recorded again when recording).
                    self.diagnoser = diagnoser(self.window);
                    self.shown = 0;
                    app.clear();
                    self.playing = true;
                } else {
                    self.playing = !self.playing;
                }
                self.next_due = Some(now + self.gap(self.shown));
            }
            Action::Seek(by) => {
                let target = (self.shown as i64).saturating_add(by).max(1) as usize;
                self.seek_to(target, app);
                self.next_due = Some(now + self.gap(self.shown));
            }
            _ => {}
        }
        app.set_replay(self.status());
    }

    fn sync(&self, app: &mut App) {
        if app.replay.as_ref() != Some(&self.status()) {
            app.set_replay(self.status());
        }
    }

    fn end_message(&self) -> &'static str {
        "end of the recording (space plays it again, ← seeks)"
    }
}

/// Plays `samples` on the screen until `q`, judging over `window`, at
/// recorded pace × `speed`.
pub fn play(
    samples: Vec<Sample>,
    window: Duration,
    speed: f64,
    opts: &TuiOptions,
) -> Result<TuiExit, TuiError> {
    let player = Player::new(samples, window, speed);
    let app = App::for_replay(player.status());
    run_feed(player, app, opts)
}
