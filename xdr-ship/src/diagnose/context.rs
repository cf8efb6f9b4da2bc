//! The shipper-wide facts every verdict of one diagnosis shares (span,
//! RTT and where it came from, BDP, answer latency, softirq saturation),
//! and the phrases every limit class quotes them in.
use std::time::Duration;

use crate::{metrics::Latency, units};

use super::{
    rules::{in_drain, ratio, saturation, Saturation},
    Rate, Sample,
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
    /// Connections up over the window: the median of the intervals' ends
    /// (at least 1, for divisions). Not the last sample's: at the end of a
    /// run that is the pool closing.
    pub connected: usize,
    /// Ordered answers (one connection uses one receiver core).
    pub ordered: bool,
    /// The worst softirq saturation of the window, and how many intervals
    /// had one.
    pub saturation: Option<Saturation>,
    pub saturated_intervals: usize,
    /// How long the run had been draining at the window's end (intake
    /// over, the last answers awaited), if the window holds its drain.
    pub drain: Option<Duration>,
    /// The network device the flows use, if the samples say.
    pub device: Option<String>,
    pub intervals: usize,
    /// The shipper's delivered rate over the window.
    pub observed: Rate,
    /// Nothing delivered, nothing in flight, nothing outstanding.
    pub idle: bool,
    /// The largest window the shipper grows to by itself, if known.
    pub window_cap: Option<u64>,
    /// Only the kernel's half is known (an `observe` of a process we did
    /// not write): the texts name the process, not the shipper's flags.
    pub kernel_only: bool,
    /// Where a BDP without `--link-rate` came from.
    pub bdp_source: &'static str,
}

impl Context {
    /// Facts of `samples` (at least two, oldest first) of a shipper whose
    /// auto window stops at `window_cap`.
    pub fn new(samples: &[&Sample], window_cap: Option<u64>) -> Option<Self> {
        let (first, last) = (samples.first()?, samples.last()?);
        let span = last.at.saturating_sub(first.at);
        let span_s = span.as_secs_f64();
        let (rtt_us, rtt_source) = path_rtt(samples);
        let (delivered, acked) = delivered_and_acked(first, last);
        let kernel_only = last.kernel_only();
        let observed = observed_rate(first, last, span_s, kernel_only);
        let link_bps = last.link.bandwidth_bytes_per_s.filter(|b| *b > 0);
        let (bdp_bytes, bdp_from_link, bdp_source) =
            bdp_estimate(link_bps, rtt_us, largest_delivery_rate(samples), observed);
        let (worst, saturated_intervals) = worst_saturation(samples);
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
            connected: connections_up(samples),
            ordered: last.ship.mode == crate::wire::OrderingMode::Ordered.name(),
            saturation: worst,
            saturated_intervals,
            drain: drain(samples),
            device: samples.iter().rev().find_map(|s| s.device.clone()),
            intervals: samples.len() - 1,
            observed,
            idle: if kernel_only {
                observed.bytes_per_s <= 0.0
            } else {
                delivered == 0 && last.ship.inflight == 0 && last.ship.outstanding == 0
            },
            window_cap,
            kernel_only,
            bdp_source,
        })
    }

    pub(super) fn rtt_s(&self) -> Option<f64> {
        self.rtt_us.map(|r| r as f64 / 1e6)
    }

    /// What each connection needs of the BDP: the link is shared, so each
    /// of `connected` connections must carry its part. Only from the
    /// operator's link rate: a BDP from the observed rate is the limited
    /// rate's and would only confirm the current window.
    pub(super) fn bdp_share(&self) -> Option<u64> {
        self.bdp_bytes
            .filter(|_| self.bdp_from_link)
            .map(|b| b.div_ceil(self.connected as u64))
    }

    /// `1 connection`, `4 connections`.
    pub(super) fn connections(&self) -> String {
        plural(self.connected, "connection")
    }

    /// `BDP 15.6 MB` or `BDP 15.6 MB ÷ 4 connections = 3.9 MB`.
    pub(super) fn bdp_phrase(&self) -> Option<String> {
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

    /// `the run's end: intake ended 1.80s before the last sample; …` when
    /// the window holds the drain.
    pub(super) fn drain_line(&self) -> Option<String> {
        self.drain.map(|d| {
            format!(
                "the run's end: intake ended {} before the last sample; since then the \
                 shipper has sent nothing new and waited for its last answers, time left out \
                 of the shares (the run's own ending, not a limit)",
                units::secs(d.as_secs_f64())
            )
        })
    }

    /// The shipper-wide line every verdict starts its evidence with.
    pub(super) fn rtt_line(&self) -> String {
        let rtt = self.rtt_s().map_or("unknown".to_owned(), units::secs);
        match (self.bdp_bytes, self.link_bps) {
            (Some(bdp), Some(l)) => format!(
                "RTT {rtt} ({}); BDP {} = link {} × RTT",
                self.rtt_source,
                units::bytes(bdp as f64),
                units::rate(l as f64)
            ),
            (Some(bdp), None) => format!(
                "RTT {rtt} ({}); BDP {} = {} × RTT (give --link-rate for the link's)",
                self.rtt_source,
                units::bytes(bdp as f64),
                self.bdp_source
            ),
            _ => format!("RTT {rtt} ({})", self.rtt_source),
        }
    }
}

/// Connections up over the window: the median over the ends of its
/// intervals, the drain's left out (the pool closing), at least 1.
fn connections_up(samples: &[&Sample]) -> usize {
    let mut up: Vec<u64> = samples
        .windows(2)
        .filter(|p| !in_drain(p[0], p[1]))
        .map(|p| p[1].ship.connected as u64)
        .collect();
    (super::rules::median_u64(&mut up).round() as usize).max(1)
}

/// How long the run had drained by the last sample (it may have begun
/// before the window), if any interval of `samples` is its drain.
fn drain(samples: &[&Sample]) -> Option<Duration> {
    if !samples.windows(2).any(|p| in_drain(p[0], p[1])) {
        return None;
    }
    Duration::try_from_secs_f64(samples.last()?.ship.drain_s?).ok()
}

/// Records delivered and bytes acknowledged between `first` and `last`.
fn delivered_and_acked(first: &Sample, last: &Sample) -> (u64, u64) {
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
    (delivered, acked)
}

/// The rate between `first` and `last`: the shipper's acknowledgements,
/// or the kernel's acked bytes when only the kernel is read.
fn observed_rate(first: &Sample, last: &Sample, span_s: f64, kernel_only: bool) -> Rate {
    if kernel_only {
        return Rate {
            bytes_per_s: ratio(kernel_acked(first, last) as f64, span_s),
            records_per_s: 0.0,
        };
    }
    let (delivered, acked) = delivered_and_acked(first, last);
    Rate {
        bytes_per_s: ratio(acked as f64, span_s),
        records_per_s: ratio(delivered as f64, span_s),
    }
}

/// The BDP, whether it is from the operator's link rate, and its source:
/// the link, else the largest delivery rate the path has shown, else the
/// observed rate.
fn bdp_estimate(
    link_bps: Option<u64>,
    rtt_us: Option<u64>,
    path_max: f64,
    observed: Rate,
) -> (Option<u64>, bool, &'static str) {
    match (link_bps, rtt_us) {
        (Some(l), Some(r)) => (Some(units::bdp_bytes(l, r)), true, "link"),
        (None, Some(r)) if path_max > 0.0 => (
            Some(units::bdp_bytes_f64(path_max, r)),
            false,
            "largest delivery rate the path has shown",
        ),
        (None, Some(r)) if observed.bytes_per_s > 0.0 => (
            Some(units::bdp_bytes_f64(observed.bytes_per_s, r)),
            false,
            "observed rate",
        ),
        _ => (None, false, "unknown"),
    }
}

/// The worst softirq saturation of the intervals, and how many were
/// saturated.
fn worst_saturation(samples: &[&Sample]) -> (Option<Saturation>, usize) {
    let saturations: Vec<Saturation> = samples[1..]
        .iter()
        .filter_map(|s| s.softirq.as_ref().and_then(saturation))
        .collect();
    let n = saturations.len();
    let worst = saturations
        .into_iter()
        .max_by(|a, b| a.si_pct.total_cmp(&b.si_pct));
    (worst, n)
}

/// Bytes the kernel saw acknowledged between `first` and `last`, summed
/// over the flows of `last` (by cookie); a flow absent from `first` was
/// born in between, so all it carried counts.
fn kernel_acked(first: &Sample, last: &Sample) -> u64 {
    last.ship
        .connections
        .iter()
        .filter_map(|c| {
            let now = c.tcp.as_ref()?.bytes_acked;
            let then = first
                .ship
                .connections
                .iter()
                .find(|f| f.cookie == c.cookie)
                .and_then(|f| f.tcp.as_ref())
                .map_or(0, |t| t.bytes_acked);
            Some(now.saturating_sub(then))
        })
        .sum()
}

/// The largest delivery rate the path has shown in `samples`: per sample,
/// the flows' latest delivery-rate samples summed (they share the path),
/// then the largest of those.
fn largest_delivery_rate(samples: &[&Sample]) -> f64 {
    samples
        .iter()
        .map(|s| {
            s.ship
                .connections
                .iter()
                .filter_map(|c| c.tcp.as_ref())
                .map(|t| t.delivery_rate_bytes_per_s as f64)
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// `1 connection`, `2 connections`.
pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The path's round trip (µs) and where it came from: the connections'
/// lowest `min_rtt`, else the operator's `--rtt`, else the fastest answer.
fn path_rtt(samples: &[&Sample]) -> (Option<u64>, &'static str) {
    let last = samples.last();
    let kernel_rtt = samples
        .iter()
        .flat_map(|s| &s.ship.connections)
        .filter_map(|c| c.tcp.as_ref())
        .map(|t| u64::from(t.min_rtt_us))
        .filter(|r| *r > 0)
        .min();
    let hint_rtt = last
        .and_then(|s| s.link.rtt)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .filter(|r| *r > 0);
    let answer_rtt = samples
        .iter()
        .filter(|s| s.ship.latency.samples > 0)
        .map(|s| s.ship.latency.min_us)
        .filter(|r| *r > 0)
        .min();
    match (kernel_rtt, hint_rtt, answer_rtt) {
        (Some(r), _, _) => (Some(r), "min_rtt of the connections"),
        (None, Some(r), _) => (Some(r), "the operator's --rtt"),
        (None, None, Some(r)) => (Some(r), "the fastest answer"),
        _ => (None, "unknown"),
    }
}
