//! The human table: one line per check, its reasoning wrapped beneath, then
//! the commands that carry out every advised change.
use std::fmt::Write;

use super::{Report, Status};

/// Width the reasoning lines are wrapped to.
const WRAP: usize = 96;
/// Widest a column may grow before its text overflows it.
const MAX_COLUMN: usize = 48;

/// The whole report: the link and the window rule, the checks, then the
/// commands.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    intro(&mut s, r);
    checks(&mut s, r);
    commands(&mut s, r);
    s
}

/// The link, its BDP, and the kernel's window rule.
fn intro(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "link: RTT {} ms × {} → BDP {:.1} MB ({} bytes); role: {}",
        r.link.rtt_us as f64 / 1000.0,
        crate::lab::config::format_rate(r.link.bandwidth_bytes_per_s as f64),
        r.bdp_bytes as f64 / 1e6,
        r.bdp_bytes,
        r.role.name(),
    );
    let _ = writeln!(
        s,
        "kernel {}: advertised window = {:.0}% of the receive buffer ({})",
        r.kernel_release.as_deref().unwrap_or("?"),
        r.window_rule.percent(),
        if r.window_rule.per_socket {
            "scaling_ratio, measured per socket since 6.6; planned at its start value"
        } else {
            "tcp_adv_win_scale"
        }
    );
    s.push('\n');
}

/// One line per check, its reasoning wrapped beneath.
fn checks(s: &mut String, r: &Report) {
    let rows: Vec<[&str; 4]> = r
        .checks
        .iter()
        .map(|c| {
            [
                c.setting.as_str(),
                c.current.as_str(),
                c.needed.as_str(),
                c.status.name(),
            ]
        })
        .collect();
    let header = ["SETTING", "CURRENT", "NEEDED", "STATUS"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
            .min(MAX_COLUMN)
    };
    let w = [width(0), width(1), width(2)];
    let line = |s: &mut String, cols: [&str; 4]| {
        let _ = writeln!(
            s,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
    };
    line(s, header);
    for (c, row) in r.checks.iter().zip(&rows) {
        line(s, *row);
        for l in wrap(&c.why, WRAP - 4) {
            let _ = writeln!(s, "    {l}");
        }
    }
}

/// The commands that carry out every advised change (each once).
fn commands(s: &mut String, r: &Report) {
    let changes: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Change)
        .collect();
    s.push('\n');
    if changes.is_empty() {
        s.push_str("Every check passes for this BDP (exit code 0).\n");
        return;
    }
    let _ = writeln!(
        s,
        "{} change{} advised (exit code 2). Commands, as root:",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    let mut seen = std::collections::HashSet::new();
    for c in changes {
        let _ = writeln!(
            s,
            "  # {}{}",
            c.setting,
            match (&c.write, &c.not_applied) {
                (_, Some(why)) => format!(" — not done by --apply: {why}"),
                (Some(_), None) => " — --apply does this".to_owned(),
                (None, None) => String::new(),
            }
        );
        for cmd in &c.commands {
            if seen.insert(cmd.clone()) {
                let _ = writeln!(s, "  {cmd}");
            } else {
                let _ = writeln!(s, "  # (above) {cmd}");
            }
        }
    }
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}
