//! The charts: throughput and bytes in flight over the kept history, one
//! point per column (the newest on the right); the in-flight chart's top
//! is the BDP when the verdict knows it. No state, no keys.
use crate::units;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    widgets::Sparkline,
    Frame,
};

use crate::{
    diagnose::Diagnosis,
    tui::{app::View, render::pane_block},
};

/// Draws both charts of `view` into `area`, one above the other.
pub(crate) fn render(frame: &mut Frame, area: Rect, view: &View, d: Option<&Diagnosis>) {
    let [top, bottom] =
        Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
    let points = usize::from(area.width).max(1);
    let skip = view.history.len().saturating_sub(points);
    let rate: Vec<u64> = view
        .history
        .iter()
        .skip(skip)
        .map(|p| p.bytes_per_s.max(0.0) as u64)
        .collect();
    let inflight: Vec<u64> = view
        .history
        .iter()
        .skip(skip)
        .map(|p| p.inflight_bytes)
        .collect();
    let now_rate = rate.last().copied().unwrap_or(0);
    let max_rate = rate.iter().copied().max().unwrap_or(0);
    let title = format!(
        " throughput {} (max {}) ",
        units::rate(now_rate as f64),
        units::rate(max_rate as f64)
    );
    frame.render_widget(
        Sparkline::default()
            .block(pane_block(title, false))
            .style(Style::new().fg(Color::Cyan))
            .data(&rate),
        top,
    );
    let bdp = d.and_then(|d| d.bdp_bytes).unwrap_or(0);
    let now_inflight = inflight.last().copied().unwrap_or(0);
    let top_inflight = inflight.iter().copied().max().unwrap_or(0).max(bdp);
    let title = if bdp > 0 {
        format!(
            " inflight {} · top = BDP {} ",
            units::bytes(now_inflight as f64),
            units::bytes(top_inflight as f64)
        )
    } else {
        format!(" inflight {} ", units::bytes(now_inflight as f64))
    };
    frame.render_widget(
        Sparkline::default()
            .block(pane_block(title, false))
            .style(Style::new().fg(Color::Magenta))
            .max(top_inflight.max(1))
            .data(&inflight),
        bottom,
    );
}
