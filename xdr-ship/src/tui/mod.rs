//! The live screen: what the shipper does, what the kernel sees of it, and
//! the verdict on what limits it, in one terminal.
//!
//! Why a TUI beside the headless line: the verdict says *what* limits the
//! throughput; the operator still wants to see *why* with their own eyes —
//! one connection with a collapsing window among sixty-four healthy ones, a
//! CPU drowning in NET_RX, inflight stuck far below the BDP. Those are
//! per-connection and per-CPU facts that do not fit one line (and must not
//! go to Prometheus: unbounded cardinality), so they live here and in
//! recordings.
//!
//! How: [`App`] is pure state — [`App::push`] an [`Update`],
//! [`App::handle_key`], [`App::render`] into any ratatui frame; each pane
//! (header, verdict, table, CPUs, charts, footer, help) is a file of
//! `panes/` with its own state, drawing and keys — so every
//! key and every layout is tested on ratatui's `TestBackend`. [`run`] owns
//! the real terminal: it drains the producer's bounded channel without ever
//! waiting on it, redraws on updates, keys and resizes, writes a recording
//! on `r`, and restores the terminal on exit, on error and on panic.
//! [`replay`] plays a recording through the same screen.
//!
//! From a producer (the shipper's snapshot loop):
//!
//! ```no_run
//! # async fn demo(mut next: impl FnMut() -> xdr_ship::tui::Update) {
//! use xdr_ship::tui::{self, TuiOptions};
//! let (tx, rx) = tokio::sync::mpsc::channel(64);
//! let screen = tokio::task::spawn_blocking(move || tui::run(rx, TuiOptions::default()));
//! while !screen.is_finished() {
//!     // Never wait for the screen: drop an update it has no room for.
//!     let _ = tx.try_send(next());
//!     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//! }
//! # }
//! ```
//!
//! The screen degrades with the terminal: at 80×24 it keeps the header,
//! the verdict and the connection table (dropping the least telling
//! columns), and adds the softirq bars and the charts only when the rows
//! are there.
mod app;
mod panes;
mod record;
mod render;
pub mod replay;
mod term;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use app::{Action, App, Focus};
pub use panes::table::SortKey;
pub use record::Recorder;
pub use term::run;

use crate::diagnose::{Diagnosis, Sample};

/// One interval for the screen: the sample and the verdict over the
/// window that ends with it (`None` until the engine has one).
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// What was measured.
    pub sample: Sample,
    /// What the engine concluded.
    pub diagnosis: Option<Diagnosis>,
}

/// How [`run`] behaves.
#[derive(Clone, Debug)]
pub struct TuiOptions {
    /// Where `r` records: a directory (a new `xdr-ship-<unix seconds>.jsonl`
    /// in it per recording) or a file (appended to).
    pub record_to: PathBuf,
    /// Start recording at once, as if `r` had been pressed.
    pub record_now: bool,
    /// Return as soon as the producer closes the channel, instead of saying
    /// so on screen and waiting for `q` (so the last verdict can be read).
    pub exit_when_closed: bool,
}

impl Default for TuiOptions {
    fn default() -> Self {
        Self {
            record_to: PathBuf::from("."),
            record_now: false,
            exit_when_closed: false,
        }
    }
}

/// How the screen ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuiExit {
    /// The operator pressed `q` (or Ctrl-C); otherwise the stream ended and
    /// [`TuiOptions::exit_when_closed`] was set.
    pub quit_by_user: bool,
    /// Every file a recording was written to, in order.
    pub recordings: Vec<PathBuf>,
}

/// Why the screen could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// Setting up, drawing on or restoring the terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}
