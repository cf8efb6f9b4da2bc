//! The "application" limit: tCP waits for data: the app window, the connection count or the source.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// TCP waits for data: the app window, the connection count or the source.
pub(super) const CLASS: Class = Class::new("application", "app", explain).with_ceilings(ceilings);

fn explain(i: &Inputs<'_>) -> Explained {
    if i.ctx.kernel_only {
        return explain_process(i);
    }
    explain_application(&units::pct(i.pct), i.acc, i.ctx)
}

/// A process we did not write: TCP had room, the process did not fill it.
fn explain_process(i: &Inputs<'_>) -> Explained {
    let acc = i.acc;
    let process = acc
        .process
        .clone()
        .unwrap_or_else(|| "the process".to_owned());
    let rate = units::rate(i.observed.bytes_per_s);
    let path = units::rate(acc.delivery_max);
    Explained {
        headline: format!("{process} writes {rate}; TCP waits for it"),
        evidence: format!(
            "waiting for {process} {} of the time (TCP app-limited in {} of {} intervals, \
             unsent {} per flow); acknowledged {rate}, largest delivery-rate sample {path}",
            units::pct(i.pct),
            acc.app_limited,
            acc.intervals,
            units::bytes(acc.per_tcp_conn(acc.notsent_bytes)),
        ),
        remedy: format!(
            "the sending process {process} is the limit: it writes {rate} while TCP has room \
             (nothing unsent, the windows not full); look at the process (a rate cap, its CPU, \
             what it reads from), not at the network"
        ),
    }
}

fn ceilings(i: &Inputs<'_>, out: &mut Ceilings) {
    if i.ctx.kernel_only {
        return;
    }
    // Little's law for the app window: it turns over once per answer.
    // Answer latency is measured for the whole pool only; one connection's
    // own answer time is what it keeps in flight ÷ what it delivers (the
    // pool's median made a fast connection's ceiling half what it carried).
    let (acc, ctx) = (i.acc, i.ctx);
    let own = ratio(acc.inflight, i.observed.records_per_s);
    let (answer_s, answer_what) = if acc.conns == 1 && ctx.connected > 1 && own > 0.0 {
        (own, "its answer time (in flight ÷ records/s)")
    } else if ctx.latency.samples > 0 && ctx.latency.p50_us > 0 {
        (ctx.latency.p50_us as f64 / 1e6, "answer p50")
    } else {
        (i.srtt_s, "srtt")
    };
    if let Some(b) = out.bytes_per_record() {
        out.push(
            Limit::Application,
            format!(
                "app window {:.0} records ÷ {answer_what} {}",
                acc.window,
                units::secs(answer_s)
            ),
            ratio(acc.window * b, answer_s),
        );
    }
}

fn explain_application(share: &str, acc: &Acc, ctx: &Context) -> Explained {
    let figures = InFlight::of(acc, ctx);
    let window = figures.window;
    // Intervals the kernel did not flag but the full window explains.
    let held = if acc.held_by_window > 0 {
        format!(
            ", TCP's windows to spare behind the full app window in {} more",
            acc.held_by_window
        )
    } else {
        String::new()
    };
    let evidence = format!(
        "waiting for the application {share} of the time (TCP app-limited in {} of {} \
         intervals{held}, unsent {}); {}; window {window:.0}, full in {} of intervals",
        acc.app_limited,
        acc.intervals,
        units::bytes(acc.per_tcp_conn(acc.notsent_bytes)),
        figures.phrase(ctx, "vs"),
        units::pct(acc.window_full_fraction() * 100.0)
    );
    if acc.window_full_fraction() >= WINDOW_FULL_MAJORITY {
        let below = ctx
            .bdp_bytes
            .is_some_and(|b| 2.0 * figures.bytes < b as f64 / ctx.connected as f64);
        let headline = format!(
            "window full: {}",
            figures.phrase(ctx, if below { "≪" } else { "vs" })
        );
        let remedy = window_remedy(window, ctx)
            .map(|r| r + &auto_window_alternative(window, acc, ctx))
            .unwrap_or_else(|| {
                format!(
                    "the window of {window:.0} already covers the link rate × the answer time \
                 (p50 {}, p99 {}): check --link-rate, or whether answers stall now and then",
                    units::secs(ctx.latency.p50_us as f64 / 1e6),
                    units::secs(ctx.latency.p99_us as f64 / 1e6)
                )
            });
        return Explained {
            headline,
            evidence,
            remedy,
        };
    }
    if ctx.outstanding == 0 {
        let offered = ctx.observed.records_per_s;
        Explained {
            headline: format!("the source offers {offered:.0} records/s; nothing outstanding"),
            evidence,
            remedy: format!(
                "the source is the limit: it offers {offered:.0} records/s and the shipper keeps \
                 up (nothing outstanding); nothing to change in the shipper or the link"
            ),
        }
    } else {
        Explained {
            headline: format!(
                "{} records wait while the windows have room",
                ctx.outstanding
            ),
            evidence,
            remedy: format!(
                "records wait in the shipper (outstanding {}, {:+.0}/s) while the windows have \
                 room: the shipper itself (its CPU, the dispatcher) is the limit; check \
                 xdr-ship's threads in top",
                ctx.outstanding, ctx.delta_per_s
            ),
        }
    }
}

/// What the windows hold, per connection, from the same medians the
/// per-connection verdicts quote: for the whole pool the sums divided by
/// the connections up, so per connection × connections is the pool's
/// in flight.
struct InFlight {
    /// App window, records per connection.
    window: f64,
    /// Records in flight per connection.
    records: f64,
    /// Bytes in flight per connection.
    bytes: f64,
    /// The pool's records in flight (`None`: one connection's scope).
    total: Option<f64>,
}

impl InFlight {
    fn of(acc: &Acc, ctx: &Context) -> Self {
        let pool = acc.conns > 1;
        let n = if pool { ctx.connected as f64 } else { 1.0 };
        Self {
            window: acc.window / n,
            records: acc.inflight / n,
            bytes: acc.inflight_bytes / n,
            total: pool.then_some(acc.inflight),
        }
    }

    /// `in flight 16 records (16.4 KB) per connection × 64 connections =
    /// 1024 records vs BDP …` (`cmp` between the figures and the BDP).
    fn phrase(&self, ctx: &Context, cmp: &str) -> String {
        let each = format!("{:.0} records ({})", self.records, units::bytes(self.bytes));
        let what = match self.total {
            Some(total) => format!(
                "in flight {each} per connection × {} = {total:.0} records",
                ctx.connections()
            ),
            None => format!("in flight {each} on this connection"),
        };
        match ctx.bdp_phrase() {
            Some(bdp) => format!("{what} {cmp} {bdp}"),
            None => what,
        }
    }
}

/// `; or leave --window out: …` when every connection's window stayed
/// the same below the auto window's cap: a fixed `--window` the operator
/// set, which the auto window would size to the path instead.
fn auto_window_alternative(window: f64, acc: &Acc, ctx: &Context) -> String {
    let below_cap = ctx.window_cap.is_none_or(|cap| window < cap as f64);
    if acc.conns > 0 && acc.fixed_windows == acc.conns && below_cap {
        format!(
            "; or leave --window out: the fixed window of {window:.0} never moves, the auto \
             window sizes itself to the path"
        )
    } else {
        String::new()
    }
}

/// The window to set when the app window is full, by Little's law (in
/// flight = throughput × time in flight) at the link's rate: over the
/// round trip first, over the median answer time if the window already
/// covers the round trip. `None` when the window already covers both: then
/// the window is not what waits.
fn window_remedy(window: f64, ctx: &Context) -> Option<String> {
    let (Some(link), Some(bpr), Some(rtt)) = (ctx.link_bps, ctx.bytes_per_record, ctx.rtt_s())
    else {
        return Some(format!(
            "raise --window to ≥ {} per connection (double it: the window, not the network, \
             sets the rate; --link-rate gives the exact Little's-law figure), or --connections",
            (2.0 * window).ceil().max(2.0) as u64
        ));
    };
    if bpr <= 0.0 {
        return None;
    }
    let records_per_s = link as f64 / bpr;
    let answer = ctx.latency.p50_us as f64 / 1e6;
    let (time, what) = [(rtt, ""), (answer, "answer p50 ")]
        .into_iter()
        .find(|(t, _)| (records_per_s * t / ctx.connected as f64).ceil() > window)?;
    let total = records_per_s * time;
    let per_conn = (total / ctx.connected as f64).ceil() as u64;
    let cap = match ctx.window_cap {
        Some(cap) if per_conn > cap => {
            format!(" (past the auto window's cap of {cap}: prefer more connections)")
        }
        _ => String::new(),
    };
    let at_window = if window >= 1.0 {
        format!(
            ", or --connections to ≥ {} at a window of {window:.0}",
            (total / window).ceil() as u64
        )
    } else {
        String::new()
    };
    Some(format!(
        "raise --window to ≥ {per_conn} per connection ({records_per_s:.0} records/s × {what}{} \
         ÷ {}, Little's law){cap}{at_window}",
        units::secs(time),
        ctx.connections()
    ))
}
