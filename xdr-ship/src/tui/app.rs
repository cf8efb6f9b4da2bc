//! The screen's state and the keys that are no pane's own (quit, pause,
//! record, focus, the player's): no terminal, no clock, no I/O, so tests
//! drive it key by key and read what it draws. Each pane keeps its own
//! state and keys (`panes/`); a key no one else takes goes to them.
use std::{collections::VecDeque, path::PathBuf, time::Duration};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{
    panes::{cpus::CpuPane, help::HelpPane, table::TablePane, verdict::VerdictPane, KeyContext},
    SortKey, Update,
};

/// Points kept for the charts: ten minutes at one sample a second, wider
/// than any terminal.
pub const HISTORY: usize = 600;

/// What the event loop must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Leave the screen.
    Quit,
    /// Start or stop writing incoming samples to a file.
    ToggleRecord,
    /// Replay: stop or resume playing.
    TogglePlay,
    /// Replay: move this many samples back (negative) or forward.
    Seek(i64),
}

/// The pane the scroll keys move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The per-connection table.
    Table,
    /// The verdict's evidence lines.
    Verdict,
    /// The per-CPU softirq bars.
    Cpus,
}

impl Focus {
    fn next(self) -> Self {
        match self {
            Focus::Table => Focus::Verdict,
            Focus::Verdict => Focus::Cpus,
            Focus::Cpus => Focus::Table,
        }
    }

    fn prev(self) -> Self {
        self.next().next()
    }
}

/// One point of the charts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Point {
    pub at: Duration,
    pub bytes_per_s: f64,
    pub inflight_bytes: u64,
}

/// What is on screen: the newest update and the history behind it.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    pub latest: Option<Update>,
    pub history: VecDeque<Point>,
}

impl View {
    fn push(&mut self, update: Update) {
        let s = &update.sample;
        // A sample older than the newest is a new run (as the diagnoser
        // reads it): its chart starts over.
        if self.history.back().is_some_and(|p| s.at < p.at) {
            self.history.clear();
        }
        self.history.push_back(Point {
            at: s.at,
            bytes_per_s: s.ship.bytes_per_s,
            inflight_bytes: s.ship.inflight_bytes,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.latest = Some(update);
    }
}

/// Where a replay stands, for the header.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayStatus {
    /// Samples shown so far (the newest shown is number `shown`).
    pub shown: usize,
    /// Samples in the recording.
    pub total: usize,
    /// Playback speed.
    pub speed: f64,
    /// Whether it plays (not paused, not at the end).
    pub playing: bool,
}

/// The screen's whole state.
#[derive(Debug)]
pub struct App {
    pub(crate) live: View,
    /// The view frozen by `p` (live mode): updates keep landing in `live`.
    pub(crate) frozen: Option<View>,
    pub(crate) focus: Focus,
    pub(crate) table: TablePane,
    pub(crate) verdict: VerdictPane,
    pub(crate) cpus: CpuPane,
    pub(crate) help: HelpPane,
    pub(crate) recording: Option<PathBuf>,
    pub(crate) notice: Option<String>,
    pub(crate) ended: Option<String>,
    pub(crate) replay: Option<ReplayStatus>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// An empty live screen.
    pub fn new() -> Self {
        Self {
            live: View::default(),
            frozen: None,
            focus: Focus::Table,
            table: TablePane::default(),
            verdict: VerdictPane::default(),
            cpus: CpuPane::default(),
            help: HelpPane::default(),
            recording: None,
            notice: None,
            ended: None,
            replay: None,
        }
    }

    /// An empty screen for a replay: `p`/space and Left/Right drive the
    /// player instead of freezing the view.
    pub fn for_replay(status: ReplayStatus) -> Self {
        Self {
            replay: Some(status),
            ..Self::new()
        }
    }

    /// Takes the newest interval (kept even while paused; shown on resume).
    pub fn push(&mut self, update: Update) {
        self.live.push(update);
    }

    /// Forgets every update (a replay seeking re-plays from the start).
    pub fn clear(&mut self) {
        self.live = View::default();
        self.frozen = None;
    }

    /// What is drawn: the frozen view while paused, else the live one.
    pub(crate) fn view(&self) -> &View {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    /// The newest update shown.
    pub fn shown(&self) -> Option<&Update> {
        self.view().latest.as_ref()
    }

    /// Whether `p` froze the view.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Whether the help overlay is up.
    pub fn help_shown(&self) -> bool {
        self.help.shown()
    }

    /// The column the table is sorted by.
    pub fn sort_key(&self) -> SortKey {
        self.table.sort()
    }

    /// The pane the scroll keys move.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// The first table row shown.
    pub fn table_scroll(&self) -> usize {
        self.table.scroll()
    }

    /// Shows the file being recorded to (`None`: not recording).
    pub fn set_recording(&mut self, path: Option<PathBuf>) {
        self.recording = path;
    }

    /// A one-line message in the footer (a failed recording, say).
    pub fn set_notice(&mut self, notice: Option<String>) {
        self.notice = notice;
    }

    /// Says on screen that no more updates will come, and why.
    pub fn set_ended(&mut self, why: impl Into<String>) {
        self.ended = Some(why.into());
    }

    /// Updates the replay's position in the header.
    pub fn set_replay(&mut self, status: ReplayStatus) {
        self.replay = Some(status);
    }

    /// Acts on one key press: Ctrl-C, then the help overlay, then the
    /// keys that are no pane's own, then the panes' (each knows whether it
    /// has the focus).
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return Action::Quit;
        }
        if let Some(action) = self.help.handle_key(&key) {
            return action;
        }
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                if self.replay.is_some() {
                    Action::TogglePlay
                } else {
                    self.frozen = match self.frozen.take() {
                        Some(_) => None,
                        None => Some(self.live.clone()),
                    };
                    Action::None
                }
            }
            KeyCode::Char('r') => Action::ToggleRecord,
            KeyCode::Tab => {
                self.focus = self.focus.next();
                Action::None
            }
            KeyCode::BackTab => {
                self.focus = self.focus.prev();
                Action::None
            }
            KeyCode::Left if self.replay.is_some() => Action::Seek(if shift { -10 } else { -1 }),
            KeyCode::Right if self.replay.is_some() => Action::Seek(if shift { 10 } else { 1 }),
            _ => {
                self.pane_key(&key);
                Action::None
            }
        }
    }

    /// Offers `key` to every pane; the scroll keys move the focused one,
    /// by the table's page for PgUp/PgDn.
    fn pane_key(&mut self, key: &KeyEvent) {
        // The fields, not `self.view()`: the panes are borrowed mutably.
        let shown = self.frozen.as_ref().unwrap_or(&self.live).latest.as_ref();
        let cx = |focus| KeyContext {
            focused: self.focus == focus,
            shown,
            page: self.table.page(),
        };
        let (table, verdict, cpus) = (cx(Focus::Table), cx(Focus::Verdict), cx(Focus::Cpus));
        let _ = self.table.handle_key(key, &table)
            || self.verdict.handle_key(key, &verdict)
            || self.cpus.handle_key(key, &cpus);
    }
}
