//! The "ramping up" moment: TCP slow start and the receive window's
//! autotuning opening, named for what they are instead of being blamed on
//! the application or the link.
//!
//! Its name, explanation and (no) ceiling live here; when its time is
//! charged is in the attribution tables (`kernel_rules.rs` for observed
//! flows, `rules.rs` for the shipper's own, whose auto window opens too).
use super::prelude::*;

/// TCP is still opening its windows (slow start, window autotuning).
pub(super) const CLASS: Class = Class::new("ramping up", "ramp", explain);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs { acc, ctx, .. } = *i;
    let ramp_s = acc.time_us[Limit::Ramp as usize] / 1e6 / acc.conns.max(1) as f64;
    let cwnd = acc.per_tcp_conn(acc.cwnd);
    let peer = acc.per_tcp_conn(acc.snd_wnd);
    Explained {
        headline: format!(
            "ramping up (slow start / window opening) for {} of {}",
            units::secs(ramp_s),
            units::secs(ctx.span.as_secs_f64())
        ),
        evidence: format!(
            "ramping up (slow start / window opening) {} of the time ({} per flow): cwnd \
             grows to {cwnd:.0} segments, peer window to {}, the delivery rate still \
             climbing",
            units::pct(i.pct),
            units::secs(ramp_s),
            units::bytes(peer)
        ),
        remedy: if ctx.kernel_only {
            "nothing to change yet: TCP is still opening its windows; the steady limit \
             shows once the ramp ends"
                .to_owned()
        } else {
            format!(
                "nothing to change yet: the auto window (now {:.0} records per connection) \
                 and TCP are still opening; the steady limit shows once the ramp ends",
                acc.window / acc.conns.max(1) as f64
            )
        },
    }
}
