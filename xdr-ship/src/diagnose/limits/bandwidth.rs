//! The "bandwidth" limit: the link (or the congestion window) is full.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// The link (or the congestion window) is full.
pub(super) const CLASS: Class = Class::new("bandwidth", "bw", explain).with_ceilings(ceilings);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs {
        srtt_s,
        acc,
        ctx,
        observed,
        ..
    } = *i;
    let share = units::pct(i.pct);
    let min_rtt_s = acc.min_rtt_us.map_or(0.0, |r| f64::from(r) / 1e6);
    let queued = min_rtt_s > 0.0 && srtt_s >= QUEUE_RTT_RATIO * min_rtt_s;
    let queue = queue_text(srtt_s, min_rtt_s);
    let rate = ctx.observed.bytes_per_s;
    let link = ctx.link_bps.map(|l| l as f64);
    let of_link = link.map_or(String::new(), |l| {
        format!(
            " of a {} link ({})",
            units::rate(l),
            units::pct(ratio(rate, l) * 100.0)
        )
    });
    let retrans = if acc.retrans > 0 {
        format!(
            "; {} retransmitted without a collapsing cwnd",
            units::pct(acc.loss_rate() * 100.0)
        )
    } else {
        "; no retransmits".to_owned()
    };
    let remedy = remedy(rate, link, queued, &queue);
    // A connection or a peer group quotes its own rate beside the whole's:
    // the link is shared, so "full" is judged on the whole.
    let carried = if (observed.bytes_per_s - rate).abs() > 0.005 * rate {
        format!(
            "{}; all {} {}{of_link}",
            units::rate(observed.bytes_per_s),
            if ctx.kernel_only {
                "flows"
            } else {
                "connections"
            },
            units::rate(rate)
        )
    } else {
        format!("{}{of_link}", units::rate(rate))
    };
    Explained {
        headline: format!("{carried}; {queue}"),
        evidence: format!(
            "TCP sent at its congestion window {share} of the time; delivered {}{of_link}; \
             largest delivery-rate sample {}; {queue}{retrans}",
            units::rate(observed.bytes_per_s),
            units::rate(acc.delivery_max)
        ),
        remedy,
    }
}

/// The RTT evidence: the queue at the bottleneck, if one builds.
fn queue_text(srtt_s: f64, min_rtt_s: f64) -> String {
    if min_rtt_s > 0.0 && srtt_s > min_rtt_s {
        format!(
            "srtt {} > min_rtt {} (+{} queued at the bottleneck)",
            units::secs(srtt_s),
            units::secs(min_rtt_s),
            units::secs(srtt_s - min_rtt_s)
        )
    } else {
        format!("srtt {} (no queue building)", units::secs(srtt_s))
    }
}

/// What to do at `rate`: a full link, a narrower bottleneck (`queued`),
/// or a congestion window still opening; `link` when the operator gave it.
fn remedy(rate: f64, link: Option<f64>, queued: bool, queue: &str) -> String {
    match link {
        Some(l) if rate >= LINK_FULL_RATIO * l => format!(
            "the link is full at {} (of {}): more bandwidth, or --compress if values compress",
            units::rate(rate),
            units::rate(l)
        ),
        Some(l) if queued => format!(
            "a queue builds at {}, {} of the {} link: the path's bottleneck is narrower \
             than --link-rate (a shaper, competing traffic): more bandwidth there, or \
             --compress if values compress",
            units::rate(rate),
            units::pct(ratio(rate, l) * 100.0),
            units::rate(l)
        ),
        Some(l) => format!(
            "TCP's congestion window holds the rate at {}, {} of the {} link, with no \
             queue and no loss to blame: congestion control is still opening the window \
             (slow start, CUBIC growth); give it time, or more --connections to open more \
             windows at once",
            units::rate(rate),
            units::pct(ratio(rate, l) * 100.0),
            units::rate(l)
        ),
        None if queued => format!(
            "the link looks full at {} (TCP at its congestion window, {queue}): more \
             bandwidth, or --compress if values compress; --link-rate lets this be checked",
            units::rate(rate)
        ),
        None => format!(
            "TCP's congestion window holds the rate at {} with no queue and no loss to \
             blame: congestion control is still opening the window; give it time, or more \
             --connections; --link-rate tells a full link from this",
            units::rate(rate)
        ),
    }
}

fn ceilings(i: &Inputs<'_>, out: &mut Ceilings) {
    let acc = i.acc;
    // The congestion window's peak over the window, not its latest value:
    // right after a loss cut the latest is below what the window carried
    // (a lossy CUBIC flow listed "cwnd 12 ÷ srtt" = 373 KB/s as its
    // tightest ceiling while 427 KB/s flowed).
    if acc.tcp_conns > 0 {
        let window = format!("cwnd peak {:.0} × MSS {:.0} B", acc.cwnd_peak, acc.mss);
        out.window_per_srtt(Limit::Bandwidth, window, acc.cwnd_peak * acc.mss, i.srtt_s);
    }
    match i.ctx.link_bps {
        Some(l) => out.push(Limit::Bandwidth, "link (--link-rate)".to_owned(), l as f64),
        None if acc.conns == 1 => out.push(
            Limit::Bandwidth,
            "largest delivery-rate sample".to_owned(),
            acc.delivery_max,
        ),
        None => {}
    }
}
