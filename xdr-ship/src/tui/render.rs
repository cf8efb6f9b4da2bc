//! Drawing the state: header, verdict banner, connection table, softirq
//! bars, charts, footer and the help overlay. Layout is decided from the
//! frame's size alone: the same state draws the same screen.
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Sparkline},
    Frame,
};

use super::{
    app::{App, Focus, SortKey, View},
    Update,
};
use crate::{
    diagnose::{fmt_bytes, fmt_pct, fmt_rate, Diagnosis, Limit, Verdict},
    metrics::{fmt_us, ConnSnapshot},
    probe::{softirq::SoftirqReport, tcp::KernelConn},
};

/// Rows at or above which the verdict gets more evidence, and the charts a
/// guaranteed share of the screen.
const TALL: u16 = 40;
/// Lines below which the charts and bars are not worth drawing.
const MIN_EXTRAS: u16 = 5;
/// Columns from which the charts and the softirq bars sit side by side.
const WIDE: u16 = 100;

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
        Limit::Unknown => Color::DarkGray,
        Limit::Idle => Color::Gray,
    }
}

/// A limit's name where a column is narrow.
pub(crate) fn limit_short(limit: Limit) -> &'static str {
    match limit {
        Limit::Bandwidth => "bw",
        Limit::ReceiverWindow => "rwnd",
        Limit::SenderBuffer => "sndbuf",
        Limit::Loss => "loss",
        Limit::Interrupts => "irq",
        Limit::Application => "app",
        Limit::Destination => "dest",
        Limit::Unknown => "?",
        Limit::Idle => "idle",
    }
}

/// A count in at most six characters: `1500`, `97.7K`, `1.2M`.
fn count(n: f64) -> String {
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
fn bytes(b: f64) -> String {
    fmt_bytes(b)
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

/// Lays out `items` (line, priority, spans) on their lines, two spaces
/// apart, dropping the least important (highest priority number; 0 is
/// never dropped) until every line fits in `width`.
fn flow(
    mut items: Vec<(usize, u8, Vec<Span<'static>>)>,
    width: usize,
    lines: usize,
) -> Vec<Line<'static>> {
    let len = |spans: &[Span<'_>]| {
        spans
            .iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
    };
    loop {
        let used = |line: usize, items: &[(usize, u8, Vec<Span<'static>>)]| {
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

/// At most `max` lines, the last ending in `…` when some were cut.
fn clip(mut lines: Vec<String>, max: usize) -> Vec<String> {
    if lines.len() > max {
        lines.truncate(max);
        if let Some(last) = lines.last_mut() {
            last.push('…');
        }
    }
    lines
}

/// Pads or cuts `s` to exactly `width` characters.
fn fit(s: &str, width: usize, right: bool) -> String {
    let n = s.chars().count();
    if n > width {
        s.chars().take(width).collect()
    } else if right {
        format!("{}{s}", " ".repeat(width - n))
    } else {
        format!("{s}{}", " ".repeat(width - n))
    }
}

/// Which half of the table a column belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Id,
    App,
    Kernel,
}

/// One column of the connection table.
#[derive(Clone, Copy)]
struct Col {
    half: Half,
    title: &'static str,
    width: usize,
    sort: Option<SortKey>,
    /// Dropped first when the terminal is narrow: highest first; 0 stays.
    drop: u8,
}

const COLS: [Col; 12] = [
    Col {
        half: Half::Id,
        title: "conn",
        width: 4,
        sort: Some(SortKey::Id),
        drop: 0,
    },
    Col {
        half: Half::App,
        title: "infl",
        width: 6,
        sort: Some(SortKey::AppInflight),
        drop: 0,
    },
    Col {
        half: Half::App,
        title: "acks/s",
        width: 6,
        sort: None,
        drop: 3,
    },
    Col {
        half: Half::App,
        title: "bytes",
        width: 6,
        sort: None,
        drop: 2,
    },
    Col {
        half: Half::App,
        title: "rate",
        width: 7,
        sort: Some(SortKey::AppRate),
        drop: 0,
    },
    Col {
        half: Half::Kernel,
        title: "bytes",
        width: 6,
        sort: None,
        drop: 0,
    },
    Col {
        half: Half::Kernel,
        title: "deliv",
        width: 7,
        sort: Some(SortKey::Delivery),
        drop: 0,
    },
    Col {
        half: Half::Kernel,
        title: "cwnd",
        width: 5,
        sort: None,
        drop: 1,
    },
    Col {
        half: Half::Kernel,
        title: "snd_wnd",
        width: 7,
        sort: None,
        drop: 1,
    },
    Col {
        half: Half::Kernel,
        title: "rcv_wnd",
        width: 7,
        sort: None,
        drop: 4,
    },
    Col {
        half: Half::Kernel,
        title: "srtt",
        width: 7,
        sort: Some(SortKey::Srtt),
        drop: 1,
    },
    Col {
        half: Half::Kernel,
        title: "retr",
        width: 5,
        sort: Some(SortKey::Retrans),
        drop: 1,
    },
];

/// Narrowest "limited by" column worth keeping columns for.
const MIN_LIMITED: usize = 12;

/// What the kernel says about one connection, from eBPF or `TCP_INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct KernelView {
    pub bytes_in_flight: u64,
    pub delivery: Option<u64>,
    pub cwnd: u32,
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
    pub srtt_us: u32,
    pub retrans: u64,
}

impl KernelView {
    /// eBPF's row when there is one (its in-flight count is exact), with
    /// `TCP_INFO`'s delivery rate; else `TCP_INFO` alone.
    pub(crate) fn of(c: &ConnSnapshot, kernel: &[KernelConn]) -> Option<Self> {
        let ebpf = (c.cookie != 0)
            .then(|| kernel.iter().find(|k| k.cookie == c.cookie))
            .flatten();
        match (ebpf, &c.tcp) {
            (Some(k), tcp) => Some(Self {
                bytes_in_flight: u64::from(k.bytes_in_flight),
                delivery: tcp.as_ref().map(|t| t.delivery_rate_bytes_per_s),
                cwnd: k.cwnd_segments,
                snd_wnd: k.snd_wnd_bytes,
                rcv_wnd: k.rcv_wnd_bytes,
                srtt_us: k.srtt_us,
                retrans: k.retransmits,
            }),
            (None, Some(t)) => Some(Self {
                bytes_in_flight: u64::from(t.unacked_segments) * u64::from(t.mss_bytes),
                delivery: Some(t.delivery_rate_bytes_per_s),
                cwnd: t.cwnd_segments,
                snd_wnd: t.snd_wnd_bytes,
                rcv_wnd: t.rcv_wnd_bytes,
                srtt_us: t.srtt_us,
                retrans: u64::from(t.total_retrans),
            }),
            (None, None) => None,
        }
    }
}

/// One row of the table, before formatting.
pub(crate) struct Row<'a> {
    pub conn: &'a ConnSnapshot,
    pub kernel: Option<KernelView>,
    pub verdict: Option<&'a Verdict>,
}

/// The table's rows in `sort` order (ties by connection index).
pub(crate) fn rows(update: &Update, sort: SortKey) -> Vec<Row<'_>> {
    let s = &update.sample;
    let mut rows: Vec<Row<'_>> = s
        .ship
        .connections
        .iter()
        .map(|c| Row {
            conn: c,
            kernel: KernelView::of(c, &s.kernel),
            verdict: update.diagnosis.as_ref().and_then(|d| d.connection(c.id)),
        })
        .collect();
    // Largest first; rows without the figure last.
    let key = |r: &Row<'_>| -> Option<f64> {
        match sort {
            SortKey::Id => Some(-(r.conn.id as f64)),
            SortKey::AppInflight => Some(r.conn.inflight as f64),
            SortKey::AppRate => Some(r.conn.bytes_per_s),
            SortKey::Delivery => r.kernel.and_then(|k| k.delivery).map(|d| d as f64),
            SortKey::Srtt => r.kernel.map(|k| f64::from(k.srtt_us)),
            SortKey::Retrans => r.kernel.map(|k| k.retrans as f64),
        }
    };
    rows.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        match (ka, kb) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.conn.id.cmp(&b.conn.id))
    });
    rows
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

fn pane_block(title: String, focused: bool) -> Block<'static> {
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

        let verdict_lines = self.verdict_lines(update, diagnosis, width, tall);
        let verdict_h = verdict_lines.len() as u16 + 1;
        let [header, verdict, rest, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(verdict_h),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);

        frame.render_widget(
            Paragraph::new(self.header_lines(update, diagnosis, width)),
            header,
        );
        let title = match diagnosis {
            Some(d) => format!(
                " verdict · window {} ({} samples) ",
                crate::diagnose::fmt_dur_s(d.span.as_secs_f64()),
                d.samples
            ),
            None => " verdict ".to_owned(),
        };
        frame.render_widget(
            Paragraph::new(verdict_lines).block(pane_block(title, self.focus == Focus::Verdict)),
            verdict,
        );

        // The table takes what it needs; what is left draws the extras.
        let n = update.map_or(0, |u| u.sample.ship.connections.len()).max(1) as u16;
        let table_need = 3 + n;
        let mut extras_h = rest.height.saturating_sub(table_need);
        if tall {
            extras_h = extras_h.max(rest.height * 2 / 5);
        }
        if extras_h < MIN_EXTRAS {
            extras_h = 0;
        }
        let [table, extras] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(extras_h)]).areas(rest);
        self.render_table(frame, table, update);
        if extras_h > 0 {
            self.render_extras(frame, extras, view, update, diagnosis);
        }
        frame.render_widget(Paragraph::new(self.footer_line()), footer);
        if self.help {
            self.render_help(frame, area);
        }
    }

    fn header_lines(
        &self,
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
        let s = &u.sample.ship;
        // (line, priority: 0 is kept longest, spans), in display order.
        let mut items: Vec<(usize, u8, Vec<Span<'static>>)> = vec![
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
                    format!("{} rec/s {}", count(s.throughput), fmt_rate(s.bytes_per_s)),
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
        if self.recording.is_some() {
            items.push((
                0,
                0,
                vec![Span::styled(
                    "● REC",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                )],
            ));
        }
        if self.paused() {
            items.push((
                0,
                0,
                vec![Span::styled(
                    "PAUSED",
                    Style::new().fg(Color::Black).bg(Color::Yellow),
                )],
            ));
        }
        if let Some(r) = &self.replay {
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
        items.push((
            1,
            2,
            vec![Span::raw(format!(
                "inflight {} rec/{}",
                s.inflight,
                fmt_bytes(s.inflight_bytes as f64)
            ))],
        ));
        items.push((
            1,
            3,
            vec![Span::raw(match d.and_then(|d| d.bdp_bytes) {
                Some(b) if b > 0 => format!(
                    "{} of BDP {}",
                    fmt_pct(100.0 * s.inflight_bytes as f64 / b as f64),
                    fmt_bytes(b as f64)
                ),
                _ => "BDP not known yet".to_owned(),
            })],
        ));
        items.push((
            1,
            5,
            vec![Span::raw(format!(
                "outstanding {} Δ{:+.0}/s",
                s.outstanding, s.delta_per_s
            ))],
        ));
        items.push((
            1,
            8,
            vec![Span::raw(format!("p50 {}", fmt_us(s.latency.p50_us)))],
        ));
        flow(items, width, 2)
    }

    fn verdict_lines(
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
        let mut lines = Vec::new();
        let top = v.share(v.limit);
        let mut spans = vec![Span::styled(
            format!("{} {} ", v.limit.name().to_uppercase(), fmt_pct(top)),
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
                format!("{} {}", l.name(), fmt_pct(*p)),
                Style::new().fg(limit_color(*l)),
            ));
        }
        lines.push(Line::from(spans));
        lines.push(Line::styled(
            v.headline.clone(),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        // The top limit's evidence first, then the other limits', then context.
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
        for e in evidence.iter().skip(self.verdict_scroll).take(shown) {
            for (i, l) in clip(wrap(e, width.saturating_sub(5)), evidence_max)
                .into_iter()
                .enumerate()
            {
                let lead = if i == 0 { "  · " } else { "    " };
                lines.push(Line::raw(format!("{lead}{l}")));
            }
        }
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
            let ceilings: Vec<String> = v
                .ceilings
                .iter()
                .map(|c| format!("{} {}", c.limit.name(), fmt_rate(c.bytes_per_s)))
                .collect();
            lines.push(Line::styled(
                format!(
                    "observed {} · ceilings: {}",
                    fmt_rate(v.observed.bytes_per_s),
                    ceilings.join(" · ")
                ),
                Style::new().fg(Color::DarkGray),
            ));
        }
        lines
    }

    fn render_table(&self, frame: &mut Frame, area: Rect, update: Option<&Update>) {
        let n = update.map_or(0, |u| u.sample.ship.connections.len());
        let title = format!(" connections ({n}) · sort: {} ▼ ", self.sort.name());
        let block = pane_block(title, self.focus == Focus::Table);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let Some(u) = update else {
            return;
        };
        let width = usize::from(inner.width);
        // Drop the least telling columns until the rest and "limited by" fit.
        let mut cols: Vec<Col> = COLS.to_vec();
        let total = |cols: &[Col]| cols.iter().map(|c| c.width + 1).sum::<usize>();
        while total(&cols) + MIN_LIMITED > width {
            let Some((i, _)) = cols
                .iter()
                .enumerate()
                .filter(|(_, c)| c.drop > 0)
                .max_by_key(|(i, c)| (c.drop, *i))
            else {
                break;
            };
            cols.remove(i);
        }
        let limited_w = width.saturating_sub(total(&cols));
        let sep = |prev: Option<Half>, half: Half| {
            if prev.is_some_and(|p| p != half) && half != Half::App {
                "│"
            } else {
                " "
            }
        };

        // Group line and titles.
        let mut group = String::new();
        let mut titles = Vec::new();
        let mut prev = None;
        for c in &cols {
            let s = sep(prev, c.half);
            if prev != Some(c.half) {
                let label = match c.half {
                    Half::Id => "",
                    Half::App => "app ",
                    Half::Kernel => "kernel ",
                };
                let span: usize = cols
                    .iter()
                    .filter(|o| o.half == c.half)
                    .map(|o| o.width + 1)
                    .sum::<usize>()
                    - 1;
                let fill = if c.half == Half::Id { ' ' } else { '─' };
                let mut g = label.to_owned();
                while g.chars().count() < span {
                    g.push(fill);
                }
                if prev.is_some() {
                    group.push_str(s);
                }
                group.push_str(&g);
            }
            let style = if c.sort == Some(self.sort) {
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            } else {
                Style::new().add_modifier(Modifier::BOLD)
            };
            if prev.is_some() {
                titles.push(Span::raw(s));
            }
            titles.push(Span::styled(
                fit(c.title, c.width, c.half != Half::Id),
                style,
            ));
            prev = Some(c.half);
        }
        group.push_str(&format!(
            "│{}",
            fit("verdict", limited_w.saturating_sub(1), false)
        ));
        titles.push(Span::raw("│"));
        titles.push(Span::styled(
            fit("limited by", limited_w.saturating_sub(1), false),
            Style::new().add_modifier(Modifier::BOLD),
        ));

        let mut lines = vec![
            Line::styled(group, Style::new().fg(Color::DarkGray)),
            Line::from(titles),
        ];
        let visible = usize::from(inner.height.saturating_sub(2));
        self.table_rows.set(visible);
        let all = rows(u, self.sort);
        if all.is_empty() {
            lines.push(Line::styled(
                "no connections in this sample",
                Style::new().fg(Color::DarkGray),
            ));
        }
        for r in all.iter().skip(self.table_scroll).take(visible) {
            lines.push(self.table_row(r, &cols, limited_w.saturating_sub(1), sep));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }

    fn table_row(
        &self,
        r: &Row<'_>,
        cols: &[Col],
        limited_w: usize,
        sep: impl Fn(Option<Half>, Half) -> &'static str,
    ) -> Line<'static> {
        let c = r.conn;
        let mut spans = Vec::new();
        let mut prev = None;
        let kernel_w: usize = cols
            .iter()
            .filter(|c| c.half == Half::Kernel)
            .map(|c| c.width + 1)
            .sum::<usize>()
            .saturating_sub(1);
        for col in cols {
            let s = sep(prev, col.half);
            if prev.is_some()
                && !(col.half == Half::Kernel && r.kernel.is_none() && prev == Some(Half::Kernel))
            {
                spans.push(Span::raw(s));
            }
            prev = Some(col.half);
            let text = match (col.half, col.title) {
                (Half::Id, _) => c.id.to_string(),
                (Half::App, "infl") => count(c.inflight as f64),
                (Half::App, "acks/s") => count(c.acks_per_s),
                (Half::App, "bytes") => bytes(c.inflight_bytes as f64),
                (Half::App, "rate") => format!("{}/s", bytes(c.bytes_per_s)),
                (Half::Kernel, title) => match r.kernel {
                    None => {
                        if title == "bytes" {
                            let why = if c.connected {
                                "no kernel view"
                            } else {
                                "disconnected"
                            };
                            spans.push(Span::styled(
                                fit(why, kernel_w, false),
                                Style::new().fg(Color::DarkGray),
                            ));
                        }
                        continue;
                    }
                    Some(k) => match title {
                        "bytes" => bytes(k.bytes_in_flight as f64),
                        "deliv" => k
                            .delivery
                            .map_or("—".to_owned(), |d| format!("{}/s", bytes(d as f64))),
                        "cwnd" => count(f64::from(k.cwnd)),
                        "snd_wnd" => bytes(f64::from(k.snd_wnd)),
                        "rcv_wnd" => bytes(f64::from(k.rcv_wnd)),
                        "srtt" => fmt_us(u64::from(k.srtt_us)),
                        _ => count(k.retrans as f64),
                    },
                },
                _ => String::new(),
            };
            spans.push(Span::raw(fit(&text, col.width, true)));
        }
        spans.push(Span::raw("│"));
        match r.verdict {
            Some(v) => {
                let mut left = limited_w;
                for (l, p) in &v.shares {
                    let t = format!("{} {} ", limit_short(*l), fmt_pct(*p));
                    let n = t.chars().count();
                    if n > left {
                        break;
                    }
                    left -= n;
                    spans.push(Span::styled(t, Style::new().fg(limit_color(*l))));
                }
            }
            None => spans.push(Span::styled("—", Style::new().fg(Color::DarkGray))),
        }
        Line::from(spans)
    }

    fn render_extras(
        &self,
        frame: &mut Frame,
        area: Rect,
        view: &View,
        update: Option<&Update>,
        d: Option<&Diagnosis>,
    ) {
        let softirq = update.and_then(|u| u.sample.softirq.as_ref());
        match softirq {
            Some(si) if area.width >= WIDE => {
                let [charts, bars] =
                    Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                        .areas(area);
                self.render_charts(frame, charts, view, d);
                self.render_softirq(frame, bars, si);
            }
            // Narrow: the bars first (they say more per line), the charts
            // below if the rows are there.
            Some(si) => {
                let bars_h = (si.cpus.len() as u16 + 2).min(area.height);
                let [bars, charts] =
                    Layout::vertical([Constraint::Length(bars_h), Constraint::Min(0)]).areas(area);
                self.render_softirq(frame, bars, si);
                if charts.height >= 4 {
                    self.render_charts(frame, charts, view, d);
                }
            }
            None => self.render_charts(frame, area, view, d),
        }
    }

    fn render_charts(&self, frame: &mut Frame, area: Rect, view: &View, d: Option<&Diagnosis>) {
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
            fmt_rate(now_rate as f64),
            fmt_rate(max_rate as f64)
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
                fmt_bytes(now_inflight as f64),
                fmt_bytes(top_inflight as f64)
            )
        } else {
            format!(" inflight {} ", fmt_bytes(now_inflight as f64))
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

    fn render_softirq(&self, frame: &mut Frame, area: Rect, si: &SoftirqReport) {
        let title = format!(" softirq per CPU ({}) ", si.source);
        let block = pane_block(title, self.focus == Focus::Cpus);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let width = usize::from(inner.width);
        let label_w = 26;
        let bar_w = width.saturating_sub(label_w + 7).max(4);
        let mut lines = vec![Line::from(vec![
            Span::styled("■ NET_RX ", Style::new().fg(Color::Red)),
            Span::styled("■ NET_TX ", Style::new().fg(Color::Yellow)),
            Span::styled("■ other", Style::new().fg(Color::Blue)),
        ])];
        for cpu in si.cpus.iter().skip(self.cpu_scroll) {
            let rx = cpu.vector("NET_RX").and_then(|v| v.time_pct);
            let tx = cpu.vector("NET_TX").and_then(|v| v.time_pct);
            let total = cpu.total_pct.clamp(0.0, 100.0);
            let cells =
                |pct: f64| ((pct.clamp(0.0, 100.0) / 100.0) * bar_w as f64).round() as usize;
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
                        fmt_pct(total),
                        fmt_pct(rx),
                        fmt_pct(tx)
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
                    format!(" {:>5} (no split)", fmt_pct(total))
                }
            };
            spans.push(Span::raw(label));
            lines.push(Line::from(spans));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }

    fn footer_line(&self) -> Line<'static> {
        let mut spans = Vec::new();
        if let Some(p) = &self.recording {
            spans.push(Span::styled(
                format!("REC → {}  ", p.display()),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        if let Some(n) = &self.notice {
            spans.push(Span::styled(format!("{n}  "), Style::new().fg(Color::Red)));
        }
        if let Some(e) = &self.ended {
            spans.push(Span::styled(
                format!("{e} — q to quit  "),
                Style::new().fg(Color::Black).bg(Color::Yellow),
            ));
        }
        let keys = if self.replay.is_some() {
            "q quit ? help space play/pause ←→ seek s sort Tab focus ↑↓ scroll r rec"
        } else {
            "q quit ? help p pause s sort Tab focus ↑↓ scroll r rec"
        };
        spans.push(Span::styled(keys, Style::new().fg(Color::DarkGray)));
        Line::from(spans)
    }

    fn render_help(&self, frame: &mut Frame, area: Rect) {
        let pause = if self.replay.is_some() {
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
        if self.replay.is_some() {
            text.push("← →        seek one sample (Shift: ten)".to_owned());
        }
        text.push(String::new());
        text.push("app: the shipper's numbers; kernel: eBPF, else TCP_INFO".to_owned());
        text.push("limited by: that connection's verdict shares".to_owned());
        let h = (text.len() as u16 + 2).min(area.height);
        let w = 62.min(area.width);
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
