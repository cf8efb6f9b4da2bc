//! The "receiver window" limit: the peer's advertised window is below what the path needs.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// The peer's advertised window is below what the path needs.
pub(super) const CLASS: Class =
    Class::new("receiver window", "rwnd", explain).with_ceilings(ceilings);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs { acc, ctx, .. } = *i;
    let knob = if ctx.kernel_only {
        "the receiving process's SO_RCVBUF (or net.ipv4.tcp_rmem's third field)"
    } else {
        "the receiver's SO_RCVBUF (recv --rcvbuf)"
    };
    let share = units::pct(i.pct);
    let peer = acc.per_tcp_conn(acc.snd_wnd);
    let peer_max = acc.per_tcp_conn(acc.snd_wnd_max);
    let vs = ctx
        .bdp_phrase()
        .map_or(String::new(), |p| format!(" vs {p}"));
    let headline = match ctx.bdp_share() {
        Some(need) if peer < need as f64 => format!(
            "peer window {} < {}",
            units::bytes(peer),
            ctx.bdp_phrase().unwrap_or_default()
        ),
        _ => format!("peer window {} fills", units::bytes(peer)),
    };
    let remedy = match ctx.bdp_share() {
        _ if peer_max <= 0.0 => "the peer advertises a zero window: the receiving \
                                 application does not read; look at the receiver (its \
                                 CPU, its store)"
            .to_owned(),
        Some(need) if peer_max >= need as f64 => format!(
            "the peer's window opens to {} (≥ {} needed) but fills: the receiving \
             application does not read fast enough; look at the receiver (its CPU, its store)",
            units::bytes(peer_max),
            units::bytes(need as f64)
        ),
        Some(need) => format!(
            "raise {knob} / net.core.rmem_max to ≥ {}: \
             sysctl -w net.core.rmem_max={need}",
            units::bytes(need as f64)
        ),
        None => {
            let need = (2.0 * peer_max).ceil() as u64;
            format!(
                "raise {knob} / net.core.rmem_max to ≥ {} \
                 (double the peer window; --link-rate gives the exact BDP): \
                 sysctl -w net.core.rmem_max={need}",
                units::bytes(need as f64)
            )
        }
    };
    Explained {
        headline,
        evidence: format!(
            "rwnd-limited {share} of the time; peer window {} (largest {}){vs}",
            units::bytes(peer),
            units::bytes(peer_max)
        ),
        remedy,
    }
}

fn ceilings(i: &Inputs<'_>, out: &mut Ceilings) {
    let acc = i.acc;
    if acc.tcp_conns > 0 {
        let window = format!("peer window {}", units::bytes(acc.snd_wnd));
        out.window_per_srtt(Limit::ReceiverWindow, window, acc.snd_wnd, i.srtt_s);
    }
}
