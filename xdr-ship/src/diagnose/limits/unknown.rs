//! The "unknown" limit: no kernel view of the socket.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// No kernel view of the socket.
pub(super) struct Unknown;

impl Class for Unknown {
    fn name(&self) -> &'static str {
        "unknown"
    }

    fn short_name(&self) -> &'static str {
        "?"
    }

    fn explain(&self, i: &Inputs<'_>) -> Explained {
        let share = i.share.as_str();
        let acc = i.acc;
        Explained {
            headline: "no kernel view of the socket".to_owned(),
            evidence: format!(
                "unattributed {share} of the time: no TCP_INFO in {} of {} intervals \
                 (disconnected, reconnecting, or not Linux)",
                acc.no_tcp, acc.intervals
            ),
            remedy:
                "nothing to judge yet: wait for the connections to stay up (TCP_INFO needs Linux)"
                    .to_owned(),
        }
    }
}
