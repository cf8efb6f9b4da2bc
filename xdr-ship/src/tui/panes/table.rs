//! The connection table: one row per connection, the shipper's half (in
//! flight, acks, rate) beside the kernel's (eBPF, else `TCP_INFO`), and
//! that connection's verdict shares. Narrow terminals drop the least
//! telling columns first. Keys: `s` sorts by the next column (whatever has
//! the focus); the scroll keys move it when it has the focus.
use crate::units;
use std::cell::Cell;

use ratatui::{
    crossterm::event::{KeyCode, KeyEvent},
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{KeyContext, Scroll};
use crate::{
    diagnose::Verdict,
    metrics::{fmt_us, ConnSnapshot},
    probe::tcp::KernelConn,
    tui::{
        render::{bytes, count, fit, limit_color, pane_block},
        Update,
    },
};

/// Rows one PgUp/PgDn moves before the first draw has measured the table.
const PAGE: usize = 10;

/// The column the connection table is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Connection index, ascending.
    Id,
    /// Records the app has in flight, largest first.
    AppInflight,
    /// The app's acknowledged bytes per second, largest first.
    AppRate,
    /// The kernel's delivery rate, largest first.
    Delivery,
    /// Smoothed RTT, largest first.
    Srtt,
    /// Retransmits, most first.
    Retrans,
}

impl SortKey {
    /// The order `s` cycles through.
    pub const ALL: [SortKey; 6] = [
        SortKey::Id,
        SortKey::AppInflight,
        SortKey::AppRate,
        SortKey::Delivery,
        SortKey::Srtt,
        SortKey::Retrans,
    ];

    /// Its name on screen.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Id => "conn",
            SortKey::AppInflight => "app inflight",
            SortKey::AppRate => "app rate",
            SortKey::Delivery => "kernel delivery",
            SortKey::Srtt => "srtt",
            SortKey::Retrans => "retransmits",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
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
        width: RATE_WIDTH,
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
        width: RATE_WIDTH,
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

/// A rate column's width: the longest compact rate, `999.9K/s`, whole.
const RATE_WIDTH: usize = "999.9K/s".len();

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

/// The table's state: its order, its first row, and how many rows the
/// last draw showed (for PgUp/PgDn and clamping).
#[derive(Debug)]
pub(crate) struct TablePane {
    sort: SortKey,
    scroll: Scroll,
    rows_shown: Cell<usize>,
}

impl Default for TablePane {
    fn default() -> Self {
        Self {
            sort: SortKey::Id,
            scroll: Scroll::default(),
            rows_shown: Cell::new(PAGE),
        }
    }
}

/// The separator before a column of `half` after one of `prev`: a rule
/// where the kernel's half (or the verdict) begins.
fn sep(prev: Option<Half>, half: Half) -> &'static str {
    if prev.is_some_and(|p| p != half) && half != Half::App {
        "│"
    } else {
        " "
    }
}

/// Total width of `cols`, separators included.
fn total(cols: &[Col]) -> usize {
    cols.iter().map(|c| c.width + 1).sum::<usize>()
}

/// The columns that fit in `width`: drops the least telling ones until
/// the rest and "limited by" fit.
fn columns(width: usize) -> Vec<Col> {
    let mut cols: Vec<Col> = COLS.to_vec();
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
    cols
}

impl TablePane {
    /// The column the rows are sorted by.
    pub(crate) fn sort(&self) -> SortKey {
        self.sort
    }

    /// The first row shown.
    pub(crate) fn scroll(&self) -> usize {
        self.scroll.0
    }

    /// Rows one PgUp/PgDn moves: those the last draw showed.
    pub(crate) fn page(&self) -> usize {
        self.rows_shown.get().max(1)
    }

    /// `s` sorts by the next column and goes back to the top; the scroll
    /// keys move the rows when the table has the focus. Whether the key
    /// was the table's.
    pub(crate) fn handle_key(&mut self, key: &KeyEvent, cx: &KeyContext<'_>) -> bool {
        if key.code == KeyCode::Char('s') {
            self.sort = self.sort.next();
            self.scroll = Scroll::default();
            return true;
        }
        self.scroll
            .handle_focused_key(key, cx, |u| u.sample.ship.connections.len())
    }

    /// Draws the table of `update` into `area`.
    pub(crate) fn render(
        &self,
        frame: &mut Frame,
        area: Rect,
        update: Option<&Update>,
        focused: bool,
    ) {
        let n = update.map_or(0, |u| u.sample.ship.connections.len());
        let title = format!(" connections ({n}) · sort: {} ▼ ", self.sort.name());
        let block = pane_block(title, focused);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let Some(u) = update else {
            return;
        };
        let width = usize::from(inner.width);
        let cols = columns(width);
        let limited_w = width.saturating_sub(total(&cols));
        let mut lines = self.title_lines(&cols, limited_w);
        let visible = usize::from(inner.height.saturating_sub(2));
        self.rows_shown.set(visible);
        let all = rows(u, self.sort);
        if all.is_empty() {
            lines.push(Line::styled(
                "no connections in this sample",
                Style::new().fg(Color::DarkGray),
            ));
        }
        for r in all.iter().skip(self.scroll.0).take(visible) {
            lines.push(row_line(r, &cols, limited_w.saturating_sub(1)));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }

    /// The group line (app / kernel / verdict) and the column titles, the
    /// sort column underlined.
    fn title_lines(&self, cols: &[Col], limited_w: usize) -> Vec<Line<'static>> {
        let mut group = String::new();
        let mut titles = Vec::new();
        let mut prev = None;
        for c in cols {
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
        vec![
            Line::styled(group, Style::new().fg(Color::DarkGray)),
            Line::from(titles),
        ]
    }
}

/// One connection's line: its columns, then its verdict shares in
/// `limited_w` characters.
fn row_line(r: &Row<'_>, cols: &[Col], limited_w: usize) -> Line<'static> {
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
        let text = match (col.half, r.kernel) {
            (Half::Id, _) => c.id.to_string(),
            (Half::App, _) => app_cell(c, col.title),
            (Half::Kernel, Some(k)) => kernel_cell(&k, col.title),
            (Half::Kernel, None) => {
                // One note across the kernel's half instead of its columns.
                if col.title == "bytes" {
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
        };
        spans.push(Span::raw(fit(&text, col.width, true)));
    }
    spans.push(Span::raw("│"));
    match r.verdict {
        Some(v) => {
            let mut left = limited_w;
            for (l, p) in &v.shares {
                let t = format!("{} {} ", l.short_name(), units::pct(*p));
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

/// The shipper's figure in the column titled `title`.
fn app_cell(c: &ConnSnapshot, title: &str) -> String {
    match title {
        "infl" => count(c.inflight as f64),
        "acks/s" => count(c.acks_per_s),
        "bytes" => bytes(c.inflight_bytes as f64),
        "rate" => format!("{}/s", bytes(c.bytes_per_s)),
        _ => String::new(),
    }
}

/// The kernel's figure in the column titled `title`.
fn kernel_cell(k: &KernelView, title: &str) -> String {
    match title {
        "bytes" => bytes(k.bytes_in_flight as f64),
        "deliv" => k
            .delivery
            .map_or("—".to_owned(), |d| format!("{}/s", bytes(d as f64))),
        "cwnd" => count(f64::from(k.cwnd)),
        "snd_wnd" => bytes(f64::from(k.snd_wnd)),
        "rcv_wnd" => bytes(f64::from(k.rcv_wnd)),
        "srtt" => fmt_us(u64::from(k.srtt_us)),
        _ => count(k.retrans as f64),
    }
}
