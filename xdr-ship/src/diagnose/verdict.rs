//! From attributed time to a verdict: the limit with the largest share,
//! the figures behind each share, the ceiling each limit implies, and the
//! one change that moves the top limit, with its exact figure.
use std::time::Duration;

use crate::{
    metrics::Latency,
    units::{self, mathis_bytes_per_s},
};

use super::{
    rules::{
        ratio, saturation, Acc, Saturation, EVIDENCE_MIN_SHARE, LINK_FULL_RATIO, N_LIMITS,
        QUEUE_RTT_RATIO, WINDOW_FULL_MAJORITY,
    },
    Ceiling, Evidence, Limit, Rate, Sample, Scope, Verdict,
};

/// Shipper-wide facts every verdict in one diagnosis shares.
#[derive(Clone, Debug)]
pub(super) struct Context {
    /// Wall time the window covers.
    pub span: Duration,
    /// The path's round trip (µs) and where it came from.
    pub rtt_us: Option<u64>,
    pub rtt_source: &'static str,
    /// The operator's link rate, bytes/s.
    pub link_bps: Option<u64>,
    /// Bandwidth-delay product, bytes, and whether from the link rate.
    pub bdp_bytes: Option<u64>,
    pub bdp_from_link: bool,
    /// Payload bytes per delivered record in the window.
    pub bytes_per_record: Option<f64>,
    /// The newest answer latency with samples.
    pub latency: Latency,
    /// Records the source has that are not yet sent, and their trend.
    pub outstanding: u64,
    pub delta_per_s: f64,
    /// Connections up at the end (at least 1, for divisions).
    pub connected: usize,
    /// Ordered answers (one connection uses one receiver core).
    pub ordered: bool,
    /// The worst softirq saturation of the window, and how many intervals
    /// had one.
    pub saturation: Option<Saturation>,
    pub saturated_intervals: usize,
    pub intervals: usize,
    /// The shipper's delivered rate over the window.
    pub observed: Rate,
    /// Nothing delivered, nothing in flight, nothing outstanding.
    pub idle: bool,
    /// The largest window the shipper grows to by itself, if known.
    pub window_cap: Option<u64>,
}

impl Context {
    /// Facts of `samples` (at least two, oldest first) of a shipper whose
    /// auto window stops at `window_cap`.
    pub fn new(samples: &[&Sample], window_cap: Option<u64>) -> Option<Self> {
        let (first, last) = (samples.first()?, samples.last()?);
        let span = last.at.saturating_sub(first.at);
        let span_s = span.as_secs_f64();
        let kernel_rtt = samples
            .iter()
            .flat_map(|s| &s.ship.connections)
            .filter_map(|c| c.tcp.as_ref())
            .map(|t| u64::from(t.min_rtt_us))
            .filter(|r| *r > 0)
            .min();
        let hint_rtt = last
            .link
            .rtt
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .filter(|r| *r > 0);
        let answer_rtt = samples
            .iter()
            .filter(|s| s.ship.latency.samples > 0)
            .map(|s| s.ship.latency.min_us)
            .filter(|r| *r > 0)
            .min();
        let (rtt_us, rtt_source) = match (kernel_rtt, hint_rtt, answer_rtt) {
            (Some(r), _, _) => (Some(r), "min_rtt of the connections"),
            (None, Some(r), _) => (Some(r), "the operator's --rtt"),
            (None, None, Some(r)) => (Some(r), "the fastest answer"),
            _ => (None, "unknown"),
        };
        let delivered = last
            .ship
            .counters
            .delivered()
            .saturating_sub(first.ship.counters.delivered());
        let acked = last
            .ship
            .counters
            .acked_bytes
            .saturating_sub(first.ship.counters.acked_bytes);
        let observed = Rate {
            bytes_per_s: ratio(acked as f64, span_s),
            records_per_s: ratio(delivered as f64, span_s),
        };
        let link_bps = last.link.bandwidth_bytes_per_s.filter(|b| *b > 0);
        let (bdp_bytes, bdp_from_link) = match (link_bps, rtt_us) {
            (Some(l), Some(r)) => (Some(units::bdp_bytes(l, r)), true),
            (None, Some(r)) if observed.bytes_per_s > 0.0 => {
                (Some(units::bdp_bytes_f64(observed.bytes_per_s, r)), false)
            }
            _ => (None, false),
        };
        let saturations: Vec<Saturation> = samples[1..]
            .iter()
            .filter_map(|s| s.softirq.as_ref().and_then(saturation))
            .collect();
        let saturated_intervals = saturations.len();
        let worst = saturations
            .into_iter()
            .max_by(|a, b| a.si_pct.total_cmp(&b.si_pct));
        let latency = samples
            .iter()
            .rev()
            .map(|s| s.ship.latency)
            .find(|l| l.samples > 0)
            .unwrap_or_default();
        Some(Self {
            span,
            rtt_us,
            rtt_source,
            link_bps,
            bdp_bytes,
            bdp_from_link,
            bytes_per_record: (delivered > 0).then(|| acked as f64 / delivered as f64),
            latency,
            outstanding: last.ship.outstanding,
            delta_per_s: last.ship.delta_per_s,
            connected: last.ship.connected.max(1),
            ordered: last.ship.mode == "ordered",
            saturation: worst,
            saturated_intervals,
            intervals: samples.len() - 1,
            observed,
            idle: delivered == 0 && last.ship.inflight == 0 && last.ship.outstanding == 0,
            window_cap,
        })
    }

    fn rtt_s(&self) -> Option<f64> {
        self.rtt_us.map(|r| r as f64 / 1e6)
    }

    /// What each connection needs of the BDP: the link is shared, so each
    /// of `connected` connections must carry its part. Only from the
    /// operator's link rate: a BDP from the observed rate is the limited
    /// rate's and would only confirm the current window.
    fn bdp_share(&self) -> Option<u64> {
        self.bdp_bytes
            .filter(|_| self.bdp_from_link)
            .map(|b| b.div_ceil(self.connected as u64))
    }

    /// `1 connection`, `4 connections`.
    fn connections(&self) -> String {
        plural(self.connected, "connection")
    }

    /// `BDP 15.6 MB` or `BDP 15.6 MB ÷ 4 connections = 3.9 MB`.
    fn bdp_phrase(&self) -> Option<String> {
        let bdp = self.bdp_bytes?;
        Some(if self.connected == 1 {
            format!("BDP {}", units::bytes(bdp as f64))
        } else {
            format!(
                "BDP {} ÷ {} = {}",
                units::bytes(bdp as f64),
                self.connections(),
                units::bytes(bdp as f64 / self.connected as f64)
            )
        })
    }

    /// The shipper-wide line every verdict starts its evidence with.
    fn rtt_line(&self) -> String {
        let rtt = self.rtt_s().map_or("unknown".to_owned(), units::secs);
        match (self.bdp_bytes, self.link_bps) {
            (Some(bdp), Some(l)) => format!(
                "RTT {rtt} ({}); BDP {} = link {} × RTT",
                self.rtt_source,
                units::bytes(bdp as f64),
                units::rate(l as f64)
            ),
            (Some(bdp), None) => format!(
                "RTT {rtt} ({}); BDP {} = observed rate × RTT (give --link-rate for the link's)",
                self.rtt_source,
                units::bytes(bdp as f64)
            ),
            _ => format!("RTT {rtt} ({})", self.rtt_source),
        }
    }
}

/// `1 connection`, `2 connections`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The verdict for one scope from its attributed time.
pub(super) fn build(scope: Scope, acc: &Acc, ctx: &Context, observed: Rate) -> Verdict {
    let scope_idle = match scope {
        Scope::Shipper => ctx.idle,
        Scope::Connection { .. } => {
            acc.delivered == 0 && acc.inflight == 0.0 && ctx.outstanding == 0
        }
    };
    if ctx.idle || scope_idle {
        return Verdict {
            scope,
            limit: Limit::Idle,
            shares: vec![(Limit::Idle, 100.0)],
            headline: "nothing shipped, in flight or outstanding".to_owned(),
            evidence: vec![Evidence {
                limit: Some(Limit::Idle),
                text: format!(
                    "no record delivered in {}; none in flight; none outstanding",
                    units::secs(ctx.span.as_secs_f64())
                ),
            }],
            remedy: "nothing to do: the source has nothing to ship".to_owned(),
            observed,
            ceilings: Vec::new(),
        };
    }
    let shares = shares(&acc.time_us);
    let (limit, _) = shares.first().copied().unwrap_or((Limit::Unknown, 100.0));
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
    for &(l, pct) in &shares {
        if l == limit || pct >= EVIDENCE_MIN_SHARE {
            evidence.push(Evidence {
                limit: Some(l),
                text: explain(l, pct, acc, ctx, &observed).evidence,
            });
        }
    }
    let top = explain(
        limit,
        shares.first().map_or(100.0, |s| s.1),
        acc,
        ctx,
        &observed,
    );
    Verdict {
        scope,
        limit,
        shares,
        headline: top.headline,
        evidence,
        remedy: top.remedy,
        ceilings: ceilings(acc, ctx),
        observed,
    }
}

/// Percent per limit, largest first, zeros left out; `[(Unknown, 100)]`
/// when no time was accounted for at all.
fn shares(time_us: &[f64; N_LIMITS]) -> Vec<(Limit, f64)> {
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

/// What one limit's share means, in figures.
struct Explained {
    headline: String,
    evidence: String,
    remedy: String,
}

fn explain(limit: Limit, pct: f64, acc: &Acc, ctx: &Context, observed: &Rate) -> Explained {
    let share = units::pct(pct);
    let srtt_s = Some(acc.srtt_s())
        .filter(|s| *s > 0.0)
        .or(ctx.rtt_s())
        .unwrap_or(0.0);
    match limit {
        Limit::ReceiverWindow => {
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
                    "raise the receiver's SO_RCVBUF (recv --rcvbuf) / net.core.rmem_max to ≥ {}: \
                     sysctl -w net.core.rmem_max={need}",
                    units::bytes(need as f64)
                ),
                None => {
                    let need = (2.0 * peer_max).ceil() as u64;
                    format!(
                        "raise the receiver's SO_RCVBUF (recv --rcvbuf) / net.core.rmem_max to ≥ {} \
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
        Limit::SenderBuffer => {
            let unacked = acc.per_tcp_conn(acc.unacked_bytes);
            let unsent = acc.per_tcp_conn(acc.notsent_bytes);
            let used = unacked + unsent;
            let vs = ctx
                .bdp_phrase()
                .map_or(String::new(), |p| format!(" vs {p}"));
            let (need, how) = match ctx.bdp_share() {
                Some(need) => (need, String::new()),
                None => (
                    (2.0 * used).ceil() as u64,
                    " (double what it holds; --link-rate gives the exact BDP)".to_owned(),
                ),
            };
            let remedy = if need == 0 {
                "raise the shipper's SO_SNDBUF (ship --sndbuf) / net.core.wmem_max (it holds \
                 nothing measurable now; --link-rate gives the exact BDP)"
                    .to_owned()
            } else {
                format!(
                    "raise the shipper's SO_SNDBUF (ship --sndbuf) / net.core.wmem_max to ≥ {}{how}: \
                     sysctl -w net.core.wmem_max={need} (and the third field of net.ipv4.tcp_wmem \
                     to at least {need})",
                    units::bytes(need as f64)
                )
            };
            Explained {
                headline: format!("send buffer full at {}{vs}", units::bytes(used)),
                evidence: format!(
                    "sndbuf-limited {share} of the time; in flight {} + unsent {} per connection{vs}",
                    units::bytes(unacked),
                    units::bytes(unsent)
                ),
                remedy,
            }
        }
        Limit::Loss => {
            let p = acc.loss_rate();
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
                    "loss-limited {share} of the time: {} of segments retransmitted ({} of {:.0}); \
                     cwnd {cwnd_peak:.0} → {cwnd:.0} segments; {bound}",
                    units::pct(p * 100.0),
                    acc.retrans,
                    acc.segs
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
        Limit::Interrupts => {
            let (what, remedy) = match &ctx.saturation {
                Some(s) => {
                    let net_rx = s
                        .net_rx_pct
                        .map_or(String::new(), |n| format!(" (NET_RX {})", units::pct(n)));
                    let mask: u64 = s
                        .cpus
                        .iter()
                        .filter(|c| **c < 64)
                        .fold(0, |m, c| m | 1 << c);
                    (
                        format!(
                            "CPU{} in softirq {}{net_rx} while the other CPUs' median is {}",
                            s.cpu,
                            units::pct(s.si_pct),
                            units::pct(s.others_median_pct)
                        ),
                        format!(
                            "one core drowns in softirq (CPU{}): spread IRQs (irqbalance, or \
                             /proc/irq/<n>/smp_affinity), enable RPS/RFS (echo {mask:x} > \
                             /sys/class/net/<dev>/queues/rx-<n>/rps_cpus; sysctl -w \
                             net.core.rps_sock_flow_entries=32768), and use more connections so \
                             the flows hash onto more queues",
                            s.cpu
                        ),
                    )
                }
                None => (
                    "one CPU saturated in softirq".to_owned(),
                    "spread IRQs (irqbalance / smp_affinity), enable RPS/RFS, more connections"
                        .to_owned(),
                ),
            };
            Explained {
                headline: what.clone(),
                evidence: format!(
                    "interrupt-limited {share} of the time: {what}, in {} of {} intervals",
                    ctx.saturated_intervals, ctx.intervals
                ),
                remedy,
            }
        }
        Limit::Bandwidth => {
            let min_rtt_s = acc.min_rtt_us.map_or(0.0, |r| f64::from(r) / 1e6);
            let queued = min_rtt_s > 0.0 && srtt_s >= QUEUE_RTT_RATIO * min_rtt_s;
            let queue = if min_rtt_s > 0.0 && srtt_s > min_rtt_s {
                format!(
                    "srtt {} > min_rtt {} (+{} queued at the bottleneck)",
                    units::secs(srtt_s),
                    units::secs(min_rtt_s),
                    units::secs(srtt_s - min_rtt_s)
                )
            } else {
                format!("srtt {} (no queue building)", units::secs(srtt_s))
            };
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
            let remedy = match link {
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
            };
            Explained {
                headline: format!("{}{of_link}; {queue}", units::rate(rate)),
                evidence: format!(
                    "TCP sent at its congestion window {share} of the time; delivered {}{of_link}; \
                     largest delivery-rate sample {}; {queue}{retrans}",
                    units::rate(observed.bytes_per_s),
                    units::rate(acc.delivery_max)
                ),
                remedy,
            }
        }
        Limit::Application => explain_application(&share, acc, ctx),
        Limit::Destination => {
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
        Limit::Unknown => Explained {
            headline: "no kernel view of the socket".to_owned(),
            evidence: format!(
                "unattributed {share} of the time: no TCP_INFO in {} of {} intervals \
                 (disconnected, reconnecting, or not Linux)",
                acc.no_tcp, acc.intervals
            ),
            remedy:
                "nothing to judge yet: wait for the connections to stay up (TCP_INFO needs Linux)"
                    .to_owned(),
        },
        Limit::Idle => Explained {
            headline: "nothing shipped, in flight or outstanding".to_owned(),
            evidence: "idle".to_owned(),
            remedy: "nothing to do: the source has nothing to ship".to_owned(),
        },
    }
}

fn explain_application(share: &str, acc: &Acc, ctx: &Context) -> Explained {
    let conns = acc.conns.max(1) as f64;
    let window = acc.window / conns;
    let inflight = acc.inflight / conns;
    let inflight_bytes = acc.inflight_bytes / conns;
    let vs = ctx
        .bdp_phrase()
        .map_or(String::new(), |p| format!(" vs {p}"));
    let evidence = format!(
        "waiting for the application {share} of the time (TCP app-limited in {} of {} intervals, \
         unsent {}); in flight {inflight:.0} records ({}) per connection{vs}; window {window:.0}, \
         full in {} of intervals",
        acc.app_limited,
        acc.intervals,
        units::bytes(acc.per_tcp_conn(acc.notsent_bytes)),
        units::bytes(inflight_bytes),
        units::pct(acc.window_full_fraction() * 100.0)
    );
    if acc.window_full_fraction() >= WINDOW_FULL_MAJORITY {
        let headline = format!(
            "window full: {inflight:.0} records ({}) in flight per connection{}",
            units::bytes(inflight_bytes),
            ctx.bdp_phrase()
                .map_or(String::new(), |p| format!(" ≪ {p}"))
        );
        let remedy = window_remedy(window, ctx).unwrap_or_else(|| {
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

/// The rate each limit would allow, tightest first.
fn ceilings(acc: &Acc, ctx: &Context) -> Vec<Ceiling> {
    let bpr = ctx.bytes_per_record.filter(|b| *b > 0.0);
    let srtt_s = Some(acc.srtt_s())
        .filter(|s| *s > 0.0)
        .or(ctx.rtt_s())
        .unwrap_or(0.0);
    let mut out = Vec::new();
    let mut push = |limit, what: String, bytes_per_s: f64| {
        if bytes_per_s > 0.0 && bytes_per_s.is_finite() {
            out.push(Ceiling {
                limit,
                what,
                bytes_per_s,
                records_per_s: bpr.map(|b| bytes_per_s / b),
            });
        }
    };
    // Little's law for the app window: it turns over once per answer.
    let (answer_s, answer_what) = if ctx.latency.samples > 0 && ctx.latency.p50_us > 0 {
        (ctx.latency.p50_us as f64 / 1e6, "answer p50")
    } else {
        (srtt_s, "srtt")
    };
    if let Some(b) = bpr {
        push(
            Limit::Application,
            format!(
                "app window {:.0} records ÷ {answer_what} {}",
                acc.window,
                units::secs(answer_s)
            ),
            ratio(acc.window * b, answer_s),
        );
    }
    if acc.tcp_conns > 0 {
        push(
            Limit::ReceiverWindow,
            format!(
                "peer window {} ÷ srtt {}",
                units::bytes(acc.snd_wnd),
                units::secs(srtt_s)
            ),
            ratio(acc.snd_wnd, srtt_s),
        );
        push(
            Limit::Bandwidth,
            format!(
                "cwnd {:.0} × MSS {:.0} B ÷ srtt {}",
                acc.cwnd,
                acc.mss,
                units::secs(srtt_s)
            ),
            ratio(acc.cwnd * acc.mss, srtt_s),
        );
    }
    match ctx.link_bps {
        Some(l) => push(Limit::Bandwidth, "link (--link-rate)".to_owned(), l as f64),
        None if acc.conns == 1 => push(
            Limit::Bandwidth,
            "largest delivery-rate sample".to_owned(),
            acc.delivery_max,
        ),
        None => {}
    }
    if acc.retrans > 0 {
        let p = acc.loss_rate();
        push(
            Limit::Loss,
            format!(
                "Mathis MSS/(RTT·√p)·1.22 at p = {} × {}",
                units::pct(p * 100.0),
                plural(acc.tcp_conns, "connection")
            ),
            mathis_bytes_per_s(acc.mss, srtt_s, p) * acc.tcp_conns as f64,
        );
    }
    out.sort_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s));
    out
}
