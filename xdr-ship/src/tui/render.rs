//! The screen's layout: which pane gets which rows and columns, decided
//! from the frame's size alone (the same state draws the same screen), and
//! the text helpers the panes share. Each pane draws itself (`panes/`).
//!
//! Where there is room: the header (2 lines), the verdict banner (as tall
//! as its lines), the connection table (as many rows as connections), then
//! the softirq bars and the charts in what is left, and the footer.
use crate::units;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Span,
    widgets::{Block, Borders, Paragraph},
    Frame,
};

use super::{
    app::{App, Focus, View},
    panes::{charts, footer, header},
    Update,
};
use crate::diagnose::{Diagnosis, Limit};

/// Rows at or above which the verdict gets more evidence, and the charts a
/// guaranteed share of the screen.
const TALL: u16 = 40;
/// Lines below which the charts and bars are not worth drawing.
const MIN_EXTRAS: u16 = 5;
/// Columns from which the charts and the softirq bars sit side by side.
const WIDE: u16 = 100;
/// Share of a tall screen's rows below the banner kept for the extras.
const TALL_EXTRAS: (u16, u16) = (2, 5);
/// Rows the table needs beyond one per connection: its rule and titles.
const TABLE_CHROME: u16 = 3;
/// Rows below which the charts are not drawn under narrow bars.
const MIN_CHARTS: u16 = 4;

/// Color of a limit wherever it appears (shares bar, legend, table).
pub(crate) fn limit_color(limit: Limit) -> Color {
    match limit {
        Limit::Bandwidth => Color::Cyan,
        Limit::ReceiverWindow => Color::Magenta,
        Limit::SenderBuffer => Color::Yellow,
        Limit::Loss => Color::Red,
        Limit::Interrupts => Color::LightRed,
        Limit::Application => Color::Green,
        Limit::Destination => Color::Blue,
        Limit::Ramp => Color::LightCyan,
        Limit::Unknown => Color::DarkGray,
        Limit::Idle => Color::Gray,
    }
}

/// A count in at most six characters: `1500`, `97.7K`, `1.2M`.
pub(crate) fn count(n: f64) -> String {
    let n = if n.is_finite() { n.max(0.0) } else { 0.0 };
    if n < 1e4 {
        format!("{n:.0}")
    } else if n < 1e6 {
        format!("{:.1}K", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1}M", n / 1e6)
    } else {
        format!("{:.1}G", n / 1e9)
    }
}

/// Bytes in at most six characters: `512B`, `80.1K`, `15.6M`.
pub(crate) fn bytes(b: f64) -> String {
    units::bytes(b)
        .replace(" B", "B")
        .replace(" KB", "K")
        .replace(" MB", "M")
        .replace(" GB", "G")
}

/// Splits `text` into lines of at most `width` characters at spaces.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let (l, w) = (line.chars().count(), word.chars().count());
        if l > 0 && l + 1 + w > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            let tail: String = line.chars().skip(width).collect();
            lines.push(head);
            line = tail;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// At most `max` lines, the last ending in `…` when some were cut.
pub(crate) fn clip(mut lines: Vec<String>, max: usize) -> Vec<String> {
    if lines.len() > max {
        lines.truncate(max);
        if let Some(last) = lines.last_mut() {
            last.push('…');
        }
    }
    lines
}

/// Pads or cuts `s` to exactly `width` characters.
pub(crate) fn fit(s: &str, width: usize, right: bool) -> String {
    let n = s.chars().count();
    if n > width {
        s.chars().take(width).collect()
    } else if right {
        format!("{}{s}", " ".repeat(width - n))
    } else {
        format!("{s}{}", " ".repeat(width - n))
    }
}

/// A pane's frame: a rule on top with its title, bright when focused.
pub(crate) fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::new()
        .borders(Borders::TOP)
        .border_style(style)
        .title(Span::styled(title, style))
}

impl App {
    /// Draws the whole screen into `frame`.
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        let view = self.view();
        let update = view.latest.as_ref();
        let diagnosis = update.and_then(|u| u.diagnosis.as_ref());
        let width = usize::from(area.width);
        let tall = area.height >= TALL;

        let verdict_lines = self.verdict.lines(update, diagnosis, width, tall);
        let verdict_h = verdict_lines.len() as u16 + 1;
        let [header_area, verdict_area, rest, footer_area] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(verdict_h),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);

        frame.render_widget(
            Paragraph::new(header::lines(self, update, diagnosis, width)),
            header_area,
        );
        self.verdict.render(
            frame,
            verdict_area,
            verdict_lines,
            diagnosis,
            self.focus == Focus::Verdict,
        );

        // The table takes what it needs; what is left draws the extras.
        let n = update.map_or(0, |u| u.sample.ship.connections.len()).max(1) as u16;
        let table_need = TABLE_CHROME + n;
        let mut extras_h = rest.height.saturating_sub(table_need);
        if tall {
            extras_h = extras_h.max(rest.height * TALL_EXTRAS.0 / TALL_EXTRAS.1);
        }
        if extras_h < MIN_EXTRAS {
            extras_h = 0;
        }
        let [table, extras] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(extras_h)]).areas(rest);
        self.table
            .render(frame, table, update, self.focus == Focus::Table);
        if extras_h > 0 {
            self.render_extras(frame, extras, view, update, diagnosis);
        }
        frame.render_widget(Paragraph::new(footer::line(self)), footer_area);
        if self.help.shown() {
            self.help.render(frame, area, self.replay.is_some());
        }
    }

    /// The softirq bars and the charts: side by side when wide, else the
    /// bars first (they say more per line) and the charts below if the
    /// rows are there.
    fn render_extras(
        &self,
        frame: &mut Frame,
        area: Rect,
        view: &View,
        update: Option<&Update>,
        d: Option<&Diagnosis>,
    ) {
        let softirq = update.and_then(|u| u.sample.softirq.as_ref());
        let cpus_focused = self.focus == Focus::Cpus;
        match softirq {
            Some(si) if area.width >= WIDE => {
                let [charts_area, bars] =
                    Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                        .areas(area);
                charts::render(frame, charts_area, view, d);
                self.cpus.render(frame, bars, si, cpus_focused);
            }
            Some(si) => {
                let bars_h = (si.cpus.len() as u16 + 2).min(area.height);
                let [bars, charts_area] =
                    Layout::vertical([Constraint::Length(bars_h), Constraint::Min(0)]).areas(area);
                self.cpus.render(frame, bars, si, cpus_focused);
                if charts_area.height >= MIN_CHARTS {
                    charts::render(frame, charts_area, view, d);
                }
            }
            None => charts::render(frame, area, view, d),
        }
    }
}
