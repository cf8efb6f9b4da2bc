//! The footer: the recording's file, a notice (a failed recording), the
//! end of the feed, and the keys of this mode (live or replay). No state,
//! no keys.
use ratatui::{
    style::{Color, Modifier, Style},
    text::{Line, Span},
};

use crate::tui::App;

/// The footer line of `app`.
pub(crate) fn line(app: &App) -> Line<'static> {
    let mut spans = Vec::new();
    if let Some(p) = &app.recording {
        spans.push(Span::styled(
            format!("REC → {}  ", p.display()),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(n) = &app.notice {
        spans.push(Span::styled(format!("{n}  "), Style::new().fg(Color::Red)));
    }
    if let Some(e) = &app.ended {
        spans.push(Span::styled(
            format!("{e} — q to quit  "),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let keys = if app.replay.is_some() {
        "q quit ? help space play/pause ←→ seek s sort Tab focus ↑↓ scroll r rec"
    } else {
        "q quit ? help p pause s sort Tab focus ↑↓ scroll r rec"
    };
    spans.push(Span::styled(keys, Style::new().fg(Color::DarkGray)));
    Line::from(spans)
}
