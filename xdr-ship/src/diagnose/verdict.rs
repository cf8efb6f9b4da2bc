//! From attributed time to a verdict: the limit with the largest share,
//! the figures behind each share, the ceilings, and the one change that
//! moves the top limit. What each limit says is its class's
//! ([`super::limits`]); this file only assembles.
use crate::units;

use super::{
    acc::Acc,
    context::Context,
    limits::{ceilings, explain},
    rules::{EVIDENCE_MIN_SHARE, N_LIMITS},
    Evidence, Limit, Rate, Scope, Verdict,
};

/// The verdict for one scope from its attributed time.
/// `held`, if given, is the limit hysteresis keeps on top while a new one
/// has not yet held for the minimum span (it must have a share).
pub(super) fn build(
    scope: Scope,
    acc: &Acc,
    ctx: &Context,
    observed: Rate,
    held: Option<Limit>,
) -> Verdict {
    let scope_idle = match scope {
        Scope::Shipper => ctx.idle,
        Scope::Connection { .. } | Scope::Peer { .. } if ctx.kernel_only => acc.carried == 0,
        Scope::Peer { .. } => acc.delivered == 0 && acc.inflight == 0.0,
        Scope::Connection { .. } => {
            acc.delivered == 0 && acc.inflight == 0.0 && ctx.outstanding == 0
        }
    };
    if ctx.idle || scope_idle {
        return idle(scope, ctx, observed);
    }
    if acc.drain_us > 0.0 && acc.time_us.iter().sum::<f64>() <= 0.0 {
        return ending(scope, ctx, observed);
    }
    let shares = shares(&acc.time_us);
    let top = shares.first().copied().unwrap_or((Limit::Unknown, 100.0));
    let (limit, limit_pct) = held
        .and_then(|h| shares.iter().copied().find(|(l, _)| *l == h))
        .unwrap_or(top);
    let mut evidence = vec![
        Evidence {
            limit: None,
            text: observed_line(&observed, ctx),
        },
        Evidence {
            limit: None,
            text: ctx.rtt_line(),
        },
    ];
    evidence.extend(ctx.drain_line().map(|text| Evidence { limit: None, text }));
    for &(l, pct) in &shares {
        if l == limit || pct >= EVIDENCE_MIN_SHARE {
            evidence.push(Evidence {
                limit: Some(l),
                text: explain(l, pct, acc, ctx, &observed).evidence,
            });
        }
    }
    let top = explain(limit, limit_pct, acc, ctx, &observed);
    Verdict {
        scope,
        limit,
        shares,
        headline: top.headline,
        evidence,
        remedy: top.remedy,
        ceilings: ceilings(acc, ctx, &observed),
        observed,
    }
}

/// The verdict of a scope that carried nothing.
fn idle(scope: Scope, ctx: &Context, observed: Rate) -> Verdict {
    Verdict {
        scope,
        limit: Limit::Idle,
        shares: vec![(Limit::Idle, 100.0)],
        headline: if ctx.kernel_only {
            "the flow carried nothing".to_owned()
        } else {
            "nothing shipped, in flight or outstanding".to_owned()
        },
        evidence: vec![Evidence {
            limit: Some(Limit::Idle),
            text: if ctx.kernel_only {
                format!(
                    "nothing acknowledged and nothing in flight in {}",
                    units::secs(ctx.span.as_secs_f64())
                )
            } else {
                format!(
                    "no record delivered in {}; none in flight; none outstanding",
                    units::secs(ctx.span.as_secs_f64())
                )
            },
        }],
        remedy: if ctx.kernel_only {
            "nothing to do: the process sent nothing on this flow".to_owned()
        } else {
            "nothing to do: the source has nothing to ship".to_owned()
        },
        observed,
        ceilings: Vec::new(),
    }
}

/// The verdict of a scope whose window is nothing but the run's drain:
/// no limit to judge, the run is ending.
fn ending(scope: Scope, ctx: &Context, observed: Rate) -> Verdict {
    let drain = ctx.drain.unwrap_or_default();
    Verdict {
        scope,
        limit: Limit::Idle,
        shares: vec![(Limit::Idle, 100.0)],
        headline: format!(
            "the run is ending: intake ended {} ago; the last answers are awaited",
            units::secs(drain.as_secs_f64())
        ),
        evidence: std::iter::once(observed_line(&observed, ctx))
            .chain(ctx.drain_line())
            .map(|text| Evidence {
                limit: Some(Limit::Idle),
                text,
            })
            .collect(),
        remedy: "nothing to change: the run is ending; the verdict before the drain is the \
                 run's"
            .to_owned(),
        observed,
        ceilings: Vec::new(),
    }
}

/// Percent per limit, largest first, zeros left out; `[(Unknown, 100)]`
/// when no time was accounted for at all.
pub(super) fn shares(time_us: &[f64; N_LIMITS]) -> Vec<(Limit, f64)> {
    let total: f64 = time_us.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return vec![(Limit::Unknown, 100.0)];
    }
    let mut shares: Vec<(Limit, f64)> = Limit::ALL
        .iter()
        .zip(time_us)
        .filter(|(_, t)| **t > 0.0)
        .map(|(l, t)| (*l, t / total * 100.0))
        .collect();
    // Stable: equal shares keep the enum's order.
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

fn observed_line(o: &Rate, ctx: &Context) -> String {
    if ctx.kernel_only {
        return format!(
            "acknowledged {} over {} (TCP_INFO bytes_acked; no application half)",
            units::rate(o.bytes_per_s),
            units::secs(ctx.span.as_secs_f64())
        );
    }
    let per_record = ctx
        .bytes_per_record
        .map_or(String::new(), |b| format!(" ({b:.0} B/record)"));
    format!(
        "delivered {} = {:.0} records/s{per_record} over {}",
        units::rate(o.bytes_per_s),
        o.records_per_s,
        units::secs(ctx.span.as_secs_f64())
    )
}
