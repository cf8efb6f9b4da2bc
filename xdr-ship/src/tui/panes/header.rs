//! The header: destination, mode, records/s and MB/s, lag and the kernel
//! view's source on the first line; in flight against the BDP,
//! outstanding and latency on the second. What does not fit is dropped,
//! least telling first. No state, no keys.
use crate::units;
use ratatui::{
    style::{Color, Modifier, Style},
    text::{Line, Span},
};

use crate::{
    diagnose::Diagnosis,
    metrics::{fmt_us, ShipSnapshot},
    tui::{render::count, App, Update},
};

/// One piece of the header: (line, priority: 0 is kept longest, spans).
type Item = (usize, u8, Vec<Span<'static>>);

/// The header's two lines at `width`.
pub(crate) fn lines(
    app: &App,
    update: Option<&Update>,
    d: Option<&Diagnosis>,
    width: usize,
) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let Some(u) = update else {
        return vec![
            Line::from(vec![
                Span::styled("xdr-ship", bold),
                Span::raw("  waiting for the first sample…"),
            ]),
            Line::raw(""),
        ];
    };
    let mut items = first_line(app, u);
    items.extend(second_line(&u.sample.ship, d));
    flow(items, width, 2)
}

/// Destination, mode, rates, lag, the kernel view's source, and the
/// recording, pause and replay marks, in display order.
fn first_line(app: &App, u: &Update) -> Vec<Item> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let s = &u.sample.ship;
    let mut items: Vec<Item> = vec![
        (
            0,
            1,
            vec![Span::styled(format!("→ {}", s.destination), bold)],
        ),
        (0, 7, vec![Span::raw(s.mode.clone())]),
        (
            0,
            0,
            vec![Span::styled(
                format!(
                    "{} rec/s {}",
                    count(s.throughput),
                    units::rate(s.bytes_per_s)
                ),
                bold,
            )],
        ),
        (
            0,
            4,
            vec![Span::raw(format!(
                "lag {}",
                fmt_us(s.lag_ms.saturating_mul(1000))
            ))],
        ),
        (
            0,
            6,
            vec![Span::raw(format!("kernel: {}", kernel_source(u)))],
        ),
    ];
    if app.recording.is_some() {
        items.push((
            0,
            0,
            vec![Span::styled(
                "● REC",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )],
        ));
    }
    if app.paused() {
        items.push((
            0,
            0,
            vec![Span::styled(
                "PAUSED",
                Style::new().fg(Color::Black).bg(Color::Yellow),
            )],
        ));
    }
    if let Some(r) = &app.replay {
        let state = if r.playing { "▶" } else { "⏸" };
        items.push((
            0,
            0,
            vec![Span::styled(
                format!("{state} {}/{} ×{}", r.shown, r.total, r.speed),
                Style::new().fg(Color::Cyan),
            )],
        ));
    }
    items
}

/// Below one full-size segment the BDP says nothing (loopback's RTT of a
/// few microseconds gives "1 B"): no share of it is shown.
const MIN_BDP_BYTES: u64 = 1448;

/// In flight, its share of the BDP, outstanding and latency.
fn second_line(s: &ShipSnapshot, d: Option<&Diagnosis>) -> Vec<Item> {
    vec![
        (
            1,
            2,
            vec![Span::raw(format!(
                "inflight {} rec/{}",
                s.inflight,
                units::bytes(s.inflight_bytes as f64)
            ))],
        ),
        (
            1,
            3,
            vec![Span::raw(match d.and_then(|d| d.bdp_bytes) {
                Some(b) if b < MIN_BDP_BYTES => "RTT too short for a BDP".to_owned(),
                Some(b) => format!(
                    "{} of BDP {}",
                    units::pct(100.0 * s.inflight_bytes as f64 / b as f64),
                    units::bytes(b as f64)
                ),
                _ => "BDP not known yet".to_owned(),
            })],
        ),
        (
            1,
            5,
            vec![Span::raw(format!(
                "outstanding {} Δ{:+.0}/s",
                s.outstanding, s.delta_per_s
            ))],
        ),
        (
            1,
            8,
            vec![Span::raw(format!("p50 {}", fmt_us(s.latency.p50_us)))],
        ),
    ]
}

/// Where the kernel's numbers come from in this sample.
fn kernel_source(update: &Update) -> &'static str {
    let s = &update.sample;
    if !s.kernel.is_empty() {
        "eBPF"
    } else if s.ship.connections.iter().any(|c| c.tcp.is_some()) {
        "TCP_INFO"
    } else {
        "no kernel view"
    }
}

/// Lays out `items` (line, priority, spans) on their lines, two spaces
/// apart, dropping the least important (highest priority number; 0 is
/// never dropped) until every line fits in `width`.
fn flow(mut items: Vec<Item>, width: usize, lines: usize) -> Vec<Line<'static>> {
    let len = |spans: &[Span<'_>]| {
        spans
            .iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
    };
    loop {
        let used = |line: usize, items: &[Item]| {
            let on: Vec<usize> = items
                .iter()
                .filter(|i| i.0 == line)
                .map(|i| len(&i.2))
                .collect();
            on.iter().sum::<usize>() + 2 * on.len().saturating_sub(1)
        };
        let over = (0..lines).find(|l| used(*l, &items) > width);
        let worst = over.and_then(|l| {
            items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.0 == l && i.1 > 0)
                .max_by_key(|(i, it)| (it.1, *i))
                .map(|(i, _)| i)
        });
        match worst {
            Some(i) => {
                items.remove(i);
            }
            None => break,
        }
    }
    (0..lines)
        .map(|l| {
            let mut spans = Vec::new();
            for (_, _, s) in items.iter().filter(|i| i.0 == l) {
                if !spans.is_empty() {
                    spans.push(Span::raw("  "));
                }
                spans.extend(s.iter().cloned());
            }
            Line::from(spans)
        })
        .collect()
}
