//! The screen's panes, one file each with its state, its drawing and its
//! keys (oryx's habit), so a change to one pane is made in one room:
//!
//! - [`header`]: destination, rates, in flight against the BDP, lag;
//! - [`verdict`]: the banner with shares, evidence and remedy; the arrows
//!   scroll its evidence when it has the focus;
//! - [`table`]: one row per connection, the app's half beside the
//!   kernel's; `s` sorts it, the arrows scroll it when it has the focus;
//! - [`cpus`]: softirq bars per CPU; the arrows scroll them when focused;
//! - [`charts`]: throughput and in flight over time;
//! - [`footer`]: recording, notices and the keys;
//! - [`help`]: the overlay; while it is up it takes every key.
//!
//! The screen's layout (which pane gets which rows) and the keys that are
//! nobody's in particular (quit, pause, record, focus) stay in
//! `render.rs` and `app.rs`.
pub(crate) mod charts;
pub(crate) mod cpus;
pub(crate) mod footer;
pub(crate) mod header;
pub(crate) mod help;
pub(crate) mod table;
pub(crate) mod verdict;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::Update;

/// What a pane is told with a key.
pub(crate) struct KeyContext<'a> {
    /// Whether the pane has the focus (the scroll keys are its then).
    pub focused: bool,
    /// The update on screen.
    pub shown: Option<&'a Update>,
    /// Rows one PgUp/PgDn moves.
    pub page: usize,
}

/// The first row a scrolling pane shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scroll(pub usize);

impl Scroll {
    /// Moves on a scroll key (arrows, `page` rows for PgUp/PgDn, Home,
    /// End), staying within `len` rows; whether `key` was one.
    pub(crate) fn handle_key(&mut self, key: &KeyEvent, page: usize, len: usize) -> bool {
        let by = match key.code {
            KeyCode::Up => -1,
            KeyCode::Down => 1,
            KeyCode::PageUp => -(page as i64),
            KeyCode::PageDown => page as i64,
            KeyCode::Home => i64::MIN / 2,
            KeyCode::End => i64::MAX / 2,
            _ => return false,
        };
        let max = len.saturating_sub(1) as i64;
        self.0 = (self.0 as i64).saturating_add(by).clamp(0, max) as usize;
        true
    }

    /// [`Self::handle_key`] for a pane that scrolls only when focused,
    /// over `len` rows of the update shown.
    pub(crate) fn handle_focused_key(
        &mut self,
        key: &KeyEvent,
        cx: &KeyContext<'_>,
        len: impl FnOnce(&Update) -> usize,
    ) -> bool {
        cx.focused && self.handle_key(key, cx.page, cx.shown.map_or(0, len))
    }
}
