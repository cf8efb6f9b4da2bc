//! The help overlay: every key of this mode and what the columns mean.
//! Keys: `?` opens it; while it is up it takes every key, and any key
//! closes it (`q` still quits).
use ratatui::{
    crossterm::event::{KeyCode, KeyEvent},
    layout::Rect,
    style::{Color, Style},
    text::Line,
    widgets::{Block, Clear, Paragraph},
    Frame,
};

use crate::tui::Action;

/// The overlay's width: its longest line and the border.
const WIDTH: u16 = 62;

/// Whether the overlay is up.
#[derive(Debug, Default)]
pub(crate) struct HelpPane {
    shown: bool,
}

impl HelpPane {
    /// Whether the overlay is up.
    pub(crate) fn shown(&self) -> bool {
        self.shown
    }

    /// `?` opens the overlay; while it is up every key closes it (`q`
    /// quits too). `None`: the key is not the overlay's.
    pub(crate) fn handle_key(&mut self, key: &KeyEvent) -> Option<Action> {
        if self.shown {
            self.shown = false;
            return Some(match key.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::None,
            });
        }
        if key.code == KeyCode::Char('?') {
            self.shown = true;
            return Some(Action::None);
        }
        None
    }

    /// Draws the overlay in the middle of `area` (`replay`: with the
    /// player's keys).
    pub(crate) fn render(&self, frame: &mut Frame, area: Rect, replay: bool) {
        let pause = if replay {
            "p, space   play / pause the replay"
        } else {
            "p          pause: freeze the view (samples keep coming)"
        };
        let mut text = vec![
            "q, Ctrl-C  quit".to_owned(),
            "?          this help (any key closes it)".to_owned(),
            pause.to_owned(),
            "s          sort the table by the next column".to_owned(),
            "Tab        focus: table → verdict → CPUs".to_owned(),
            "↑ ↓ PgUp PgDn Home End   scroll the focused pane".to_owned(),
            "r          start / stop recording samples".to_owned(),
        ];
        if replay {
            text.push("← →        seek one sample (Shift: ten)".to_owned());
        }
        text.push(String::new());
        text.push("app: the shipper's numbers; kernel: eBPF, else TCP_INFO".to_owned());
        text.push("limited by: that connection's verdict shares".to_owned());
        let h = (text.len() as u16 + 2).min(area.height);
        let w = WIDTH.min(area.width);
        let rect = Rect {
            x: area.x + (area.width - w) / 2,
            y: area.y + (area.height - h) / 2,
            width: w,
            height: h,
        };
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(text.into_iter().map(Line::raw).collect::<Vec<_>>()).block(
                Block::bordered()
                    .title(" help — keys ")
                    .border_style(Style::new().fg(Color::Yellow)),
            ),
            rect,
        );
    }
}
