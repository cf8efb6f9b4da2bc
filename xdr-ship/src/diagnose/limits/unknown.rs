//! The "unknown" limit: no kernel view of the socket.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// No kernel view of the socket.
pub(super) const CLASS: Class = Class::new("unknown", "?", explain);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs { acc, .. } = *i;
    let share = units::pct(i.pct);
    Explained {
        headline: "no kernel view of the socket".to_owned(),
        evidence: format!(
            "unattributed {share} of the time: no TCP_INFO in {} of {} intervals \
             (disconnected, reconnecting, or not Linux)",
            acc.no_tcp, acc.intervals
        ),
        remedy: "nothing to judge yet: wait for the connections to stay up (TCP_INFO needs Linux)"
            .to_owned(),
    }
}
