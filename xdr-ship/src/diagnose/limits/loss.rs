//! The "loss" limit: retransmits with a collapsing congestion window.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// Retransmits with a collapsing congestion window.
pub(super) const CLASS: Class = Class::new("loss", "loss", explain).with_ceilings(ceilings);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs {
        srtt_s, acc, ctx, ..
    } = *i;
    let share = units::pct(i.pct);
    let (retrans, segs) = acc.path_loss();
    let p = acc.path_loss_rate();
    let mathis = mathis_bytes_per_s(acc.mss, srtt_s, p);
    let cwnd_peak = acc.per_tcp_conn(acc.cwnd_peak);
    let cwnd = acc.per_tcp_conn(acc.cwnd);
    let more_conns = match ctx.link_bps {
        Some(l) if mathis > 0.0 && mathis.is_finite() => format!(
            ", or spread it over --connections ≥ {}",
            (l as f64 / mathis).ceil() as u64
        ),
        _ => String::new(),
    };
    let bound = format!(
        "Mathis bound MSS/(RTT·√p)·1.22 = {:.0} B/({}·√{p:.4})·1.22 = {} per connection",
        acc.mss,
        units::secs(srtt_s),
        units::rate(mathis)
    );
    Explained {
        headline: format!(
            "{} retransmitted, cwnd {cwnd_peak:.0} → {cwnd:.0} segments: Mathis bound {} per connection",
            units::pct(p * 100.0),
            units::rate(mathis)
        ),
        evidence: format!(
            "loss-limited {share} of the time: {} of segments retransmitted ({retrans} of \
             {segs:.0}{}); cwnd {cwnd_peak:.0} → {cwnd:.0} segments; {bound}",
            units::pct(p * 100.0),
            queue_drops(acc)
        ),
        remedy: format!(
            "the path is lossy: {} loss caps a loss-based TCP at {} per connection (Mathis); \
             find the loss (link errors, queue drops, txqueuelen), use BBR (per-socket \
             TCP_CONGESTION){more_conns}",
            units::pct(p * 100.0),
            units::rate(mathis)
        ),
    }
}

/// `, besides 12 as the queue overflowed` when some retransmits were the
/// bottleneck's tail drops (left out of `p`), empty otherwise.
fn queue_drops(acc: &Acc) -> String {
    if acc.queue_retrans > 0 {
        format!(", besides {} as the queue overflowed", acc.queue_retrans)
    } else {
        String::new()
    }
}

/// The Mathis bound at the path's own loss rate ([`Acc::path_loss`]: the
/// retransmits of intervals whose queue overflowed are the full link's,
/// not the random loss the bound models). It models steady loss, so it is
/// a ceiling only while it is one: a bound under the measured rate (one
/// burst of loss, then a clean run) is disproved by that rate and left out.
fn ceilings(i: &Inputs<'_>, out: &mut Ceilings) {
    let acc = i.acc;
    let p = acc.path_loss_rate();
    if p > 0.0 {
        let bound = mathis_bytes_per_s(acc.mss, i.srtt_s, p) * acc.tcp_conns as f64;
        if i.observed.bytes_per_s > bound {
            return;
        }
        out.push(
            Limit::Loss,
            format!(
                "Mathis MSS/(RTT·√p)·1.22 at p = {} × {}",
                units::pct(p * 100.0),
                plural(acc.tcp_conns, "connection")
            ),
            bound,
        );
    }
}
