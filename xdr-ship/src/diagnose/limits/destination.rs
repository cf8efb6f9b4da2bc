//! The "destination" limit: the window is full and answers come back slowly: the receiver.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// The window is full and answers come back slowly: the receiver.
pub(super) const CLASS: Class = Class::new("destination", "dest", explain);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs {
        srtt_s, acc, ctx, ..
    } = *i;
    let share = units::pct(i.pct);
    let lat = ctx.latency;
    let p50 = lat.p50_us as f64 / 1e6;
    let p99 = lat.p99_us as f64 / 1e6;
    let unordered = if ctx.ordered {
        ", or --mode unordered so one connection can use every core of it"
    } else {
        ""
    };
    Explained {
        headline: format!(
            "window full; answers p50 {} ≫ srtt {}",
            units::secs(p50),
            units::secs(srtt_s)
        ),
        evidence: format!(
            "waiting on the receiver {share} of the time: window full in {} of intervals; \
             answers p50 {} / p99 {} vs srtt {}: ≈ {} per write at the receiver",
            units::pct(acc.window_full_fraction() * 100.0),
            units::secs(p50),
            units::secs(p99),
            units::secs(srtt_s),
            units::secs((p50 - srtt_s).max(0.0))
        ),
        remedy: format!(
            "the receiver is the limit: it answers at p50 {} / p99 {} against a {} round \
             trip (≈ {} at p99 spent there); make it faster (its store's durability, its \
             CPU){unordered}; a larger window only queues there",
            units::secs(p50),
            units::secs(p99),
            units::secs(srtt_s),
            units::secs((p99 - srtt_s).max(0.0))
        ),
    }
}
