//! Text for people: the one-line verdict (TUI status line, headless line)
//! and the multi-line report. Figures are formatted by [`crate::units`].
use std::fmt::{self, Write};

use crate::units;

use super::{context::plural, Ceiling, Diagnosis, Evidence, Limit, PeerVerdict, Scope, Verdict};

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<44} {:>12}", self.what, units::rate(self.bytes_per_s))?;
        if let Some(r) = self.records_per_s {
            write!(f, " {r:>10.0} records/s")?;
        }
        Ok(())
    }
}

/// The one-line verdict:
/// `limit: receiver window (62%) — peer window 3.1 MB < BDP 15.6 MB → raise …`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit: {} ({}) — {} → {}",
            self.limit,
            units::pct(self.share(self.limit)),
            self.headline,
            self.remedy
        )
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Shipper => f.write_str("shipper"),
            Scope::Connection { id, .. } => write!(f, "conn {id}"),
            Scope::Peer { flows } => f.write_str(&plural(*flows, "flow")),
        }
    }
}

impl Verdict {
    /// Several lines: the verdict, every share, the evidence, the ceilings
    /// (tightest first) and the remedy, each indented by `indent`.
    pub fn report(&self, indent: &str) -> String {
        self.report_as(&self.scope.to_string(), indent)
    }

    /// [`Verdict::report`] under another name than its scope's.
    pub fn report_as(&self, label: &str, indent: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{indent}{label}: {self}");
        let shares: Vec<String> = self
            .shares
            .iter()
            .map(|(l, p)| format!("{l} {}", units::pct(*p)))
            .collect();
        let _ = writeln!(out, "{indent}  shares: {}", shares.join(" · "));
        let _ = writeln!(out, "{indent}  evidence:");
        for e in &self.evidence {
            let _ = writeln!(out, "{indent}    - {e}");
        }
        if !self.ceilings.is_empty() {
            let _ = writeln!(out, "{indent}  ceilings (tightest first):");
            for c in &self.ceilings {
                let _ = writeln!(out, "{indent}    {c}");
            }
        }
        let _ = writeln!(out, "{indent}  remedy: {}", self.remedy);
        out
    }
}

impl PeerVerdict {
    /// `4 flows to 198.18.0.2:5201`.
    pub fn label(&self) -> String {
        format!("{} to {}", self.verdict.scope, self.peer)
    }

    /// The group's verdict as [`Verdict::report`] writes it, under
    /// [`PeerVerdict::label`].
    pub fn report(&self, indent: &str) -> String {
        self.verdict.report_as(&self.label(), indent)
    }
}

impl Diagnosis {
    /// One block per peer (kernel-only: the flows `observe` saw that
    /// carried data, grouped by remote address and port), each followed by
    /// its flows whose own limit is another than the group's; empty when
    /// no flow carried data.
    pub fn peers_report(&self, indent: &str) -> String {
        let mut out = String::new();
        for p in &self.peers {
            out.push_str(&p.report(indent));
            for v in &self.connections {
                let Scope::Connection { cookie, .. } = v.scope else {
                    continue;
                };
                if !p.cookies.contains(&cookie) || v.limit == p.verdict.limit {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{indent}  flow {:x}: limited by {} {} — {}",
                    cookie & 0xffff_ffff_ffff,
                    v.limit,
                    units::pct(v.share(v.limit)),
                    v.headline
                );
            }
        }
        out
    }

    /// The whole diagnosis: the shipper's report (for observed flows, one
    /// report per peer instead), then the connections grouped by their
    /// limit (64 connections read as a few lines), each group with its
    /// share range and one member's headline.
    pub fn report(&self) -> String {
        let mut out = format!(
            "window {} ({} samples)\n",
            units::secs(self.span.as_secs_f64()),
            self.samples
        );
        if self.peers.is_empty() {
            out.push_str(&self.shipper.report(""));
        } else {
            out.push_str(&self.peers_report(""));
        }
        if !self.connections.is_empty() {
            out.push_str("per connection:\n");
            let mut groups: Vec<(Limit, Vec<usize>, Vec<f64>, &str)> = Vec::new();
            for c in &self.connections {
                let Scope::Connection { id, .. } = c.scope else {
                    continue;
                };
                let share = c.share(c.limit);
                match groups.iter_mut().find(|(l, ..)| *l == c.limit) {
                    Some((_, ids, shares, _)) => {
                        ids.push(id);
                        shares.push(share);
                    }
                    None => groups.push((c.limit, vec![id], vec![share], &c.headline)),
                }
            }
            groups.sort_by_key(|(_, ids, ..)| std::cmp::Reverse(ids.len()));
            for (limit, ids, shares, headline) in groups {
                let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = shares.iter().copied().fold(0.0, f64::max);
                let range = if (hi - lo).abs() < 0.5 {
                    units::pct(hi)
                } else {
                    format!("{}–{}", units::pct(lo), units::pct(hi))
                };
                let label = if ids.len() == 1 { "conn" } else { "conns" };
                let _ = writeln!(
                    out,
                    "  {limit} ({range}): {label} {}{} — e.g. {headline}",
                    id_ranges(&ids),
                    self.nodes_of(&ids)
                );
            }
        }
        out
    }
}

impl Diagnosis {
    /// ` on NODE, NODE` for connections that ship to named nodes (a Redis
    /// Cluster's primaries), empty otherwise.
    fn nodes_of(&self, ids: &[usize]) -> String {
        let mut nodes: Vec<&str> = ids
            .iter()
            .filter_map(|id| self.nodes.get(id).map(String::as_str))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() {
            String::new()
        } else {
            format!(" on {}", nodes.join(", "))
        }
    }
}

/// `0–3, 5, 7–9` for ids in ascending order.
fn id_ranges(ids: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}–{end}")
        });
        i += 1;
    }
    parts.join(", ")
}
