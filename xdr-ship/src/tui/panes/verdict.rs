//! The verdict banner: the limit and its share, a bar of every limit's
//! share, the headline, the evidence (the top limit's first), the remedy
//! and, on tall terminals, the ceilings. Keys: the scroll keys move the
//! evidence when the banner has the focus.
use crate::units;
use ratatui::{
    crossterm::event::KeyEvent,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{KeyContext, Scroll};
use crate::{
    diagnose::{Ceiling, Diagnosis, Limit, Verdict},
    tui::{
        render::{clip, limit_color, pane_block, wrap},
        Update,
    },
};

/// The banner's state: the first evidence line shown.
#[derive(Debug, Default)]
pub(crate) struct VerdictPane {
    scroll: Scroll,
}

impl VerdictPane {
    /// The scroll keys move the evidence when the pane has the focus.
    /// Whether the key was the banner's.
    pub(crate) fn handle_key(&mut self, key: &KeyEvent, cx: &KeyContext<'_>) -> bool {
        self.scroll.handle_focused_key(key, cx, |u| {
            u.diagnosis.as_ref().map_or(0, |d| d.shipper.evidence.len())
        })
    }

    /// Draws `lines` (from [`Self::lines`]) under the title of `d`.
    pub(crate) fn render(
        &self,
        frame: &mut Frame,
        area: Rect,
        lines: Vec<Line<'static>>,
        d: Option<&Diagnosis>,
        focused: bool,
    ) {
        let title = match d {
            Some(d) => format!(
                " verdict · window {} ({} samples) ",
                units::secs(d.span.as_secs_f64()),
                d.samples
            ),
            None => " verdict ".to_owned(),
        };
        frame.render_widget(
            Paragraph::new(lines).block(pane_block(title, focused)),
            area,
        );
    }

    /// The banner's lines at `width` (more evidence when `tall`): the
    /// screen sizes the banner from them before it lays out the rest.
    pub(crate) fn lines(
        &self,
        update: Option<&Update>,
        d: Option<&Diagnosis>,
        width: usize,
        tall: bool,
    ) -> Vec<Line<'static>> {
        let Some(d) = d else {
            let why = if update.is_some() {
                "no verdict yet: the engine needs two samples that span some time"
            } else {
                "no verdict yet: no sample"
            };
            return vec![Line::styled(why, Style::new().fg(Color::DarkGray))];
        };
        let v = &d.shipper;
        let mut lines = vec![
            shares_line(v, width),
            Line::styled(
                v.headline.clone(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ];
        self.push_evidence(&mut lines, v, width, tall);
        let remedy_max = if tall { 5 } else { 3 };
        for (i, l) in clip(wrap(&v.remedy, width.saturating_sub(3)), remedy_max)
            .into_iter()
            .enumerate()
        {
            let lead = if i == 0 { "→ " } else { "  " };
            lines.push(Line::styled(
                format!("{lead}{l}"),
                Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
            ));
        }
        if tall && !v.ceilings.is_empty() {
            lines.push(ceilings_line(v));
        }
        lines
    }

    /// The evidence from the scroll position on: the top limit's first,
    /// then the other limits', then context.
    fn push_evidence(&self, lines: &mut Vec<Line<'static>>, v: &Verdict, width: usize, tall: bool) {
        let mut evidence: Vec<&str> = Vec::new();
        for pass in 0..3 {
            for e in &v.evidence {
                let rank = match e.limit {
                    Some(l) if l == v.limit => 0,
                    Some(_) => 1,
                    None => 2,
                };
                if rank == pass {
                    evidence.push(&e.text);
                }
            }
        }
        let shown = if tall { 4 } else { 1 };
        let evidence_max = if tall { 3 } else { 1 };
        for e in evidence.iter().skip(self.scroll.0).take(shown) {
            for (i, l) in clip(wrap(e, width.saturating_sub(5)), evidence_max)
                .into_iter()
                .enumerate()
            {
                let lead = if i == 0 { "  · " } else { "    " };
                lines.push(Line::raw(format!("{lead}{l}")));
            }
        }
    }
}

/// The limit and its share, a bar of every share, and their legend.
fn shares_line(v: &Verdict, width: usize) -> Line<'static> {
    let top = v.share(v.limit);
    let mut spans = vec![Span::styled(
        format!("{} {} ", v.limit.name().to_uppercase(), units::pct(top)),
        Style::new()
            .fg(limit_color(v.limit))
            .add_modifier(Modifier::BOLD),
    )];
    let bar_w = (width / 4).clamp(10, 30);
    let mut used = 0;
    for (i, (l, p)) in v.shares.iter().enumerate() {
        let cells = if i + 1 == v.shares.len() {
            bar_w - used
        } else {
            ((p / 100.0) * bar_w as f64).round() as usize
        }
        .min(bar_w - used);
        used += cells;
        spans.push(Span::styled(
            "█".repeat(cells),
            Style::new().fg(limit_color(*l)),
        ));
    }
    spans.push(Span::raw(" "));
    for (i, (l, p)) in v.shares.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" · "));
        }
        spans.push(Span::styled(
            format!("{} {}", l.name(), units::pct(*p)),
            Style::new().fg(limit_color(*l)),
        ));
    }
    Line::from(spans)
}

/// A ceiling's name on screen: the bandwidth limit has two (the congestion
/// window's rate and the link's), told apart by what they are computed from.
fn ceiling_name(c: &Ceiling) -> &'static str {
    match c.limit {
        Limit::Bandwidth if c.what.starts_with("cwnd") => "congestion window",
        Limit::Bandwidth if c.what.starts_with("link") => "link",
        Limit::Bandwidth => "delivery rate",
        l => l.name(),
    }
}

/// What was observed against each limit's ceiling.
fn ceilings_line(v: &Verdict) -> Line<'static> {
    let ceilings: Vec<String> = v
        .ceilings
        .iter()
        .map(|c| format!("{} {}", ceiling_name(c), units::rate(c.bytes_per_s)))
        .collect();
    Line::styled(
        format!(
            "observed {} · ceilings: {}",
            units::rate(v.observed.bytes_per_s),
            ceilings.join(" · ")
        ),
        Style::new().fg(Color::DarkGray),
    )
}
