//! The softirq bars: per CPU, NET_RX, NET_TX and the other vectors' share
//! of the time (or the total alone from `/proc`). Keys: the scroll keys
//! move the CPUs when the pane has the focus.
use crate::units;
use ratatui::{
    crossterm::event::KeyEvent,
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{KeyContext, Scroll};
use crate::{
    probe::softirq::{CpuRate, SoftirqReport},
    tui::render::pane_block,
};

/// Columns the figures right of a bar take.
const LABEL_W: usize = 26;

/// The pane's state: the first CPU shown.
#[derive(Debug, Default)]
pub(crate) struct CpuPane {
    scroll: Scroll,
}

impl CpuPane {
    /// The scroll keys move the CPUs when the pane has the focus. Whether
    /// the key was the pane's.
    pub(crate) fn handle_key(&mut self, key: &KeyEvent, cx: &KeyContext<'_>) -> bool {
        self.scroll.handle_focused_key(key, cx, |u| {
            u.sample.softirq.as_ref().map_or(0, |s| s.cpus.len())
        })
    }

    /// Draws the bars of `si` into `area`.
    pub(crate) fn render(&self, frame: &mut Frame, area: Rect, si: &SoftirqReport, focused: bool) {
        let title = format!(" softirq per CPU ({}) ", si.source);
        let block = pane_block(title, focused);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let width = usize::from(inner.width);
        let bar_w = width.saturating_sub(LABEL_W + 7).max(4);
        let mut lines = vec![Line::from(vec![
            Span::styled("■ NET_RX ", Style::new().fg(Color::Red)),
            Span::styled("■ NET_TX ", Style::new().fg(Color::Yellow)),
            Span::styled("■ other", Style::new().fg(Color::Blue)),
        ])];
        for cpu in si.cpus.iter().skip(self.scroll.0) {
            lines.push(cpu_line(cpu, bar_w));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// One CPU's bar, `bar_w` cells, and its figures.
fn cpu_line(cpu: &CpuRate, bar_w: usize) -> Line<'static> {
    let rx = cpu.vector("NET_RX").and_then(|v| v.time_pct);
    let tx = cpu.vector("NET_TX").and_then(|v| v.time_pct);
    let total = cpu.total_pct.clamp(0.0, 100.0);
    let cells = |pct: f64| ((pct.clamp(0.0, 100.0) / 100.0) * bar_w as f64).round() as usize;
    let mut spans = vec![Span::raw(format!("cpu{:<3}", cpu.cpu))];
    let label = match (rx, tx) {
        (Some(rx), tx) => {
            let tx = tx.unwrap_or(0.0);
            let other = (total - rx - tx).max(0.0);
            let (a, b) = (cells(rx), cells(tx));
            let c = cells(other).min(bar_w.saturating_sub(a + b));
            spans.push(Span::styled("█".repeat(a), Style::new().fg(Color::Red)));
            spans.push(Span::styled("█".repeat(b), Style::new().fg(Color::Yellow)));
            spans.push(Span::styled("█".repeat(c), Style::new().fg(Color::Blue)));
            spans.push(Span::styled(
                "·".repeat(bar_w.saturating_sub(a + b + c)),
                Style::new().fg(Color::DarkGray),
            ));
            format!(
                " {:>5} rx {:>5} tx {:>5}",
                units::pct(total),
                units::pct(rx),
                units::pct(tx)
            )
        }
        (None, _) => {
            // /proc: time per CPU only.
            let a = cells(total);
            spans.push(Span::styled("█".repeat(a), Style::new().fg(Color::Blue)));
            spans.push(Span::styled(
                "·".repeat(bar_w.saturating_sub(a)),
                Style::new().fg(Color::DarkGray),
            ));
            format!(" {:>5} (no split)", units::pct(total))
        }
    };
    spans.push(Span::raw(label));
    Line::from(spans)
}
