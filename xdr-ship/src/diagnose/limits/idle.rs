//! The "idle" limit: nothing to ship.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// Nothing to ship.
pub(super) const CLASS: Class = Class::new("idle", "idle", explain);

fn explain(_: &Inputs<'_>) -> Explained {
    Explained {
        headline: "nothing shipped, in flight or outstanding".to_owned(),
        evidence: "idle".to_owned(),
        remedy: "nothing to do: the source has nothing to ship".to_owned(),
    }
}
