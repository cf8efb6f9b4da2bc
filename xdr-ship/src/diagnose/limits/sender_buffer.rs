//! The "sender buffer" limit: our send buffer holds less than the path needs.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// Our send buffer holds less than the path needs.
pub(super) const CLASS: Class = Class::new("sender buffer", "sndbuf", explain);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs { acc, ctx, .. } = *i;
    let share = units::pct(i.pct);
    let unacked = acc.per_tcp_conn(acc.unacked_bytes);
    let unsent = acc.per_tcp_conn(acc.notsent_bytes);
    let used = unacked + unsent;
    let vs = ctx
        .bdp_phrase()
        .map_or(String::new(), |p| format!(" vs {p}"));
    let (need, how) = match ctx.bdp_share() {
        Some(need) => (need, String::new()),
        None => (
            (2.0 * used).ceil() as u64,
            " (double what it holds; --link-rate gives the exact BDP)".to_owned(),
        ),
    };
    let knob = if ctx.kernel_only {
        "the sending process's SO_SNDBUF"
    } else {
        "the shipper's SO_SNDBUF (ship --sndbuf)"
    };
    let remedy = if need == 0 {
        format!(
            "raise {knob} / net.core.wmem_max (it holds nothing measurable now; \
             --link-rate gives the exact BDP)"
        )
    } else {
        format!(
            "raise {knob} / net.core.wmem_max to ≥ {}{how}: \
             sysctl -w net.core.wmem_max={need} (and the third field of net.ipv4.tcp_wmem \
             to at least {need})",
            units::bytes(need as f64)
        )
    };
    Explained {
        headline: format!("send buffer full at {}{vs}", units::bytes(used)),
        evidence: format!(
            "sndbuf-limited {share} of the time; in flight {} + unsent {} per connection{vs}",
            units::bytes(unacked),
            units::bytes(unsent)
        ),
        remedy,
    }
}
