//! Which text a scrape of `/metrics` gets: the Prometheus text format 0.0.4
//! unless the scraper's `Accept` asks for OpenMetrics.
//!
//! Why two formats from one encoder: `prometheus_client` writes OpenMetrics
//! only, where a counter's HELP and TYPE name the family `x` and its sample
//! `x_total`. Tools that read the classic format (`promtool check metrics`,
//! `curl | grep`, older agents) then see a `x_total` without HELP. A real
//! exporter negotiates: Prometheus itself asks for OpenMetrics first and
//! gets it; anyone else gets 0.0.4. [`to_classic`] rewrites the OpenMetrics
//! text line by line (HELP/TYPE of counters and infos renamed to the sample
//! name, `# UNIT` and `# EOF` dropped), so both formats carry the same
//! samples from the same registry.
use std::collections::HashMap;

/// The media type that selects OpenMetrics.
const OPENMETRICS: &str = "application/openmetrics-text";

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// Prometheus text format 0.0.4 (the default).
    Classic,
    /// OpenMetrics 1.0.0, as `prometheus_client` encodes it.
    OpenMetrics,
}

impl TextFormat {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality at least that of
    /// `text/plain` (or of a wildcard standing for it); 0.0.4 otherwise,
    /// and when there is no header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Classic;
        };
        let (mut openmetrics, mut plain) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                OPENMETRICS => &mut openmetrics,
                "text/plain" | "text/*" | "*/*" => &mut plain,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |s| s.max(q)));
        }
        match openmetrics {
            Some(om) if om > 0.0 && om >= plain.unwrap_or(0.0) => Self::OpenMetrics,
            _ => Self::Classic,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// `openmetrics` (the encoder's text) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Self::Classic => to_classic(&openmetrics),
            Self::OpenMetrics => openmetrics,
        }
    }
}

/// The name a family's HELP and TYPE carry in 0.0.4, and its 0.0.4 type,
/// for the OpenMetrics types whose sample name differs from the family's.
fn classic_family(name: &str, om_type: &str) -> Option<(String, &'static str)> {
    match om_type {
        "counter" => Some((format!("{name}_total"), "counter")),
        "info" => Some((format!("{name}_info"), "gauge")),
        "unknown" => Some((name.to_owned(), "untyped")),
        _ => None,
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub fn to_classic(openmetrics: &str) -> String {
    // HELP precedes TYPE, so the renames are known before the rewrite.
    let renamed: HashMap<&str, (String, &str)> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter_map(|(name, t)| classic_family(name, t).map(|c| (name, c)))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = renamed.get(name).map_or(name, |(n, _)| n.as_str());
            // 0.0.4 escapes only `\` and newlines in HELP; OpenMetrics also `"`.
            out.push_str(&format!("# HELP {name} {}\n", help.replace("\\\"", "\"")));
        } else if let Some((classic, t)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(name, _)| renamed.get(name))
        {
            out.push_str(&format!("# TYPE {classic} {t}\n"));
        } else if !is_counter_created(line, &renamed) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A counter's `_created` sample, which 0.0.4 has no place for.
fn is_counter_created(line: &str, renamed: &HashMap<&str, (String, &str)>) -> bool {
    let name = line.split(['{', ' ']).next().unwrap_or("");
    name.strip_suffix("_created")
        .is_some_and(|family| renamed.get(family).is_some_and(|(_, t)| *t == "counter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.x sends.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_gets_0_0_4() {
        assert_eq!(
            TextFormat::negotiate(Some(PROMETHEUS_ACCEPT)),
            TextFormat::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0.2, text/plain;q=0.9"),
            Some("application/openmetrics-text;q=0"),
            Some("application/json"),
        ] {
            assert_eq!(
                TextFormat::negotiate(accept),
                TextFormat::Classic,
                "{accept:?}"
            );
        }
        assert_eq!(
            TextFormat::negotiate(Some("Application/OpenMetrics-Text; version=1.0.0")),
            TextFormat::OpenMetrics
        );
    }

    #[test]
    fn classic_text_names_counters_by_their_sample_and_drops_unit_and_eof() {
        let om = "# HELP x_requests Requests \\\"answered\\\".\n\
                  # TYPE x_requests counter\n\
                  x_requests_total{reason=\"a\"} 3\n\
                  x_requests_created 1.0\n\
                  # HELP x_latency_seconds Latency.\n\
                  # TYPE x_latency_seconds histogram\n\
                  # UNIT x_latency_seconds seconds\n\
                  x_latency_seconds_bucket{le=\"+Inf\"} 0\n\
                  # HELP x_open Open now.\n\
                  # TYPE x_open gauge\n\
                  x_open 2\n\
                  # EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP x_requests_total Requests \"answered\".\n\
             # TYPE x_requests_total counter\n\
             x_requests_total{reason=\"a\"} 3\n\
             # HELP x_latency_seconds Latency.\n\
             # TYPE x_latency_seconds histogram\n\
             x_latency_seconds_bucket{le=\"+Inf\"} 0\n\
             # HELP x_open Open now.\n\
             # TYPE x_open gauge\n\
             x_open 2\n"
        );
    }
}
