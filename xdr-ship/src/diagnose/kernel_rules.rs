//! The attribution rules for a flow with the kernel's half only (`observe`
//! of iperf3, redis, a backup): every microsecond of each connection's wall
//! time goes to one [`Limit`], from `TCP_INFO` alone.
//!
//! Why a table of its own: the shipper's rules lean on its app window and
//! its answers; a process we did not write has neither. What is left is
//! RFC 4898's sender-limit triage (SndLimTime Rwin / Cwnd / Snd, which Linux
//! keeps as the chrono timers) completed the way M-Lab NDT does it, with
//! the delivery-rate sample's app-limited flag, the unsent bytes, the
//! queue (srtt vs min_rtt), retransmits and the peer window:
//!
//! | time of an interval | goes to |
//! |---|---|
//! | nothing acknowledged, nothing busy | [`Limit::Idle`] |
//! | the flow was born in it, or TCP is still opening to a new high since it was born or idle (see [`ramping`]; BBR's ProbeRTT regrowth is not) | [`Limit::Ramp`] (all of it) |
//! | Δrwnd_limited | [`Limit::ReceiverWindow`] |
//! | Δsndbuf_limited | [`Limit::SenderBuffer`] |
//! | wall − Δbusy (nothing in flight) | [`Limit::Application`] |
//! | the rest, app-limited (or delivering under [`CWND_UNUSED_RATIO`] of what cwnd allows, no loss) with little unsent and no standing queue | [`Limit::Application`] |
//! | the rest, in flight ≥ 90% of the peer window | [`Limit::ReceiverWindow`] |
//! | the rest, otherwise | [`Limit::Interrupts`] / [`Limit::Loss`] / [`Limit::Bandwidth`] as in [`super::rules`] |
use crate::metrics::TcpSample;

use super::{
    acc::{Acc, Delivery},
    rules::{
        network_class, peer_window_limits, ratio, NOTSENT_APP_LIMITED_MAX, QUEUE_FULL_RTT_RATIO,
    },
    Limit, Sample,
};

/// Growth by at least this factor over one interval is TCP still opening
/// up, not a steady limit: slow start doubles cwnd per RTT, receive-buffer
/// autotuning doubles the advertised window, and while either opens the
/// delivery rate climbs to heights the flow never reached before. A steady
/// CUBIC or BBR flow moves its cwnd and rate by far less than 25% per
/// second-long interval, and never to a new high by that much for long.
pub const RAMP_GROWTH_RATIO: f64 = 1.25;

/// In flight below this fraction of the congestion window means cwnd had
/// room: time TCP counted as "busy" then was not spent at the window.
pub const CWND_ROOM_RATIO: f64 = 0.8;

/// A flow that delivers less than this fraction of what its congestion
/// window allows per round trip (cwnd × MSS ÷ srtt), with nothing unsent,
/// no queue and no loss, is held by its writer even when TCP's app-limited
/// flag, which marks only the delivery-rate sample of the last ACK, missed
/// it: a paced sender writing in bursts (`iperf3 -b`) leaves data in
/// flight at every sample. Low enough that BBR's cwnd (about twice what it
/// sends per round trip) is not taken for a slow writer.
pub const CWND_UNUSED_RATIO: f64 = 0.25;

/// The `TCP_INFO` of the connection with `cookie` in `sample`.
fn tcp_of(sample: &Sample, cookie: u64) -> Option<&TcpSample> {
    sample
        .ship
        .connections
        .iter()
        .find(|c| c.cookie == cookie)
        .and_then(|c| c.tcp.as_ref())
}

/// Whether the interval `ta` → `tb` is TCP still opening its windows:
/// slow start proper (cwnd below ssthresh and growing, with no retransmit
/// in the interval: after a loss, growth below ssthresh is recovery, and
/// the loss is what binds) to a new high, [`RAMP_GROWTH_RATIO`] ×
/// `cwnd_peak_before` (the largest cwnd since the flow was born or last
/// idle), or the interval's delivery rate reaching a new high of at least
/// [`RAMP_GROWTH_RATIO`] × `rate_peak_before`, the best the flow had shown.
/// The early retransmit iperf3 takes on the lab in its first second ends
/// slow start but not the ramp: the window is still opening, and the rate
/// says so.
///
/// Why a new high: a ramp is the flow's start, the first seconds after it
/// was born or sat idle. BBR (no ssthresh, so always "below" it) drops
/// cwnd to 4 segments for ~200 ms every ~10 s (ProbeRTT) and regrows it at
/// once to where it was; that regrowth is growth below ssthresh too, and
/// was named "ramping up" mid-run.
fn ramping(
    ta: &TcpSample,
    tb: &TcpSample,
    (rate_bytes_per_s, rate_peak_before): (f64, f64),
    cwnd_peak_before: u32,
) -> bool {
    let grew = |a: f64, b: f64| a > 0.0 && b >= RAMP_GROWTH_RATIO * a;
    let new_cwnd_high =
        f64::from(tb.cwnd_segments) >= RAMP_GROWTH_RATIO * f64::from(cwnd_peak_before);
    (slow_start(ta, tb) && new_cwnd_high) || grew(rate_peak_before, rate_bytes_per_s)
}

/// Slow start proper over `ta` → `tb`: cwnd below ssthresh and grown by
/// [`RAMP_GROWTH_RATIO`], with no retransmit in the interval.
pub(super) fn slow_start(ta: &TcpSample, tb: &TcpSample) -> bool {
    let (a, b) = (f64::from(ta.cwnd_segments), f64::from(tb.cwnd_segments));
    tb.cwnd_segments < tb.ssthresh_segments
        && tb.total_retrans == ta.total_retrans
        && a > 0.0
        && b >= RAMP_GROWTH_RATIO * a
}

/// Walks the window for the flow with `cookie` and attributes its time.
pub(super) fn collect(samples: &[&Sample], cookie: u64) -> Acc {
    let mut acc = Acc {
        conns: 1,
        ..Acc::default()
    };
    let mut cwnd_peak: u32 = 0;
    // The best interval rate so far; a flow already there when the window
    // starts is credited with the kernel's last delivery-rate sample.
    let mut rate_peak: Option<f64> = None;
    let mut last: Option<&TcpSample> = None;
    for pair in samples.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let dt_us = b.at.saturating_sub(a.at).as_secs_f64() * 1e6;
        let tb = tcp_of(b, cookie);
        if let Some(t) = tb {
            last = Some(t);
            acc.note_tcp(t);
        }
        if dt_us <= 0.0 {
            continue;
        }
        acc.intervals += 1;
        let tb = match (tcp_of(a, cookie), tb) {
            (Some(ta), Some(tb)) => {
                let peak_before = cwnd_peak.max(ta.cwnd_segments);
                cwnd_peak = peak_before.max(tb.cwnd_segments);
                let rate_before = *rate_peak.get_or_insert(ta.delivery_rate_bytes_per_s as f64);
                let rate = charge(&mut acc, b, (ta, tb), dt_us, (peak_before, rate_before));
                rate_peak = Some(rate_before.max(rate));
                if tb.bytes_acked == ta.bytes_acked && tb.busy_us == ta.busy_us {
                    // Idle: what it opens to next is a new start.
                    cwnd_peak = 0;
                    rate_peak = None;
                }
                continue;
            }
            (None, Some(tb)) => tb,
            _ => {
                acc.time_us[Limit::Unknown as usize] += dt_us;
                acc.no_tcp += 1;
                continue;
            }
        };
        born(&mut acc, tb, dt_us);
        cwnd_peak = tb.cwnd_segments;
        rate_peak = Some(tb.bytes_acked as f64 / (dt_us / 1e6));
    }
    if let Some(t) = last {
        acc.note_last_tcp(t, cwnd_peak);
        acc.ssthresh = f64::from(t.ssthresh_segments);
    }
    acc.acked_bytes = acc.tcp_acked_bytes;
    acc
}

/// Charges the interval in which a flow was born (absent from the sample
/// before, so every counter of `tb` is the interval's own): its handshake
/// and first round trips are the ramp, if it carried anything.
fn born(acc: &mut Acc, tb: &TcpSample, dt_us: f64) {
    acc.retrans += u64::from(tb.total_retrans);
    acc.segs += tb.bytes_acked as f64 / f64::from(tb.mss_bytes.max(1));
    acc.tcp_acked_bytes += tb.bytes_acked;
    if tb.bytes_acked == 0 && tb.busy_us == 0 {
        acc.time_us[Limit::Idle as usize] += dt_us;
        return;
    }
    acc.carried += 1;
    acc.time_us[Limit::Ramp as usize] += dt_us;
}

/// Charges one interval of a flow seen at both ends, given the cwnd and
/// delivery-rate peaks before it; returns the interval's delivery rate.
fn charge(
    acc: &mut Acc,
    b: &Sample,
    (ta, tb): (&TcpSample, &TcpSample),
    dt_us: f64,
    (peak_before, rate_peak_before): (u32, f64),
) -> f64 {
    let busy = (tb.busy_us.saturating_sub(ta.busy_us) as f64).min(dt_us);
    let delivery = Delivery::between(ta, tb);
    acc.note_delivery(&delivery);
    let Delivery {
        acked: d_acked,
        retrans: d_retrans,
        mss,
        ..
    } = delivery;
    let rate = ratio(d_acked as f64, dt_us / 1e6);
    if d_acked == 0 && busy <= 0.0 {
        acc.time_us[Limit::Idle as usize] += dt_us;
        return rate;
    }
    acc.carried += 1;
    if ramping(ta, tb, (rate, rate_peak_before), peak_before) {
        acc.time_us[Limit::Ramp as usize] += dt_us;
        return rate;
    }
    let rwnd = (tb.rwnd_limited_us.saturating_sub(ta.rwnd_limited_us) as f64).min(busy);
    let sndbuf =
        (tb.sndbuf_limited_us.saturating_sub(ta.sndbuf_limited_us) as f64).min(busy - rwnd);
    let sending = busy - rwnd - sndbuf;
    acc.time_us[Limit::ReceiverWindow as usize] += rwnd;
    acc.time_us[Limit::SenderBuffer as usize] += sndbuf;
    acc.time_us[Limit::Application as usize] += dt_us - busy;

    let srtt_us = f64::from(tb.srtt_us);
    let link_full = b
        .link
        .bandwidth_bytes_per_s
        .is_some_and(|l| l > 0 && rate >= super::rules::LINK_FULL_RATIO * l as f64);
    let standing_queue =
        tb.min_rtt_us > 0 && srtt_us >= QUEUE_FULL_RTT_RATIO * f64::from(tb.min_rtt_us);
    let cwnd_allows = f64::from(ta.cwnd_segments) * mss / (srtt_us / 1e6);
    let cwnd_unused =
        d_retrans == 0 && sndbuf <= 0.0 && srtt_us > 0.0 && rate < CWND_UNUSED_RATIO * cwnd_allows;
    if (tb.app_limited || cwnd_unused)
        && tb.notsent_bytes < NOTSENT_APP_LIMITED_MAX
        && !link_full
        && !standing_queue
    {
        acc.app_limited += 1;
        acc.time_us[Limit::Application as usize] += sending;
        return rate;
    }
    let in_flight = f64::from(tb.unacked_segments) * f64::from(tb.mss_bytes);
    let cwnd_bytes = f64::from(tb.cwnd_segments) * mss;
    let class = if peer_window_limits(tb, in_flight) {
        Limit::ReceiverWindow
    } else if sndbuf > 0.0
        && d_retrans == 0
        && !standing_queue
        && in_flight < CWND_ROOM_RATIO * cwnd_bytes
    {
        // The sender buffer bound part of the interval, and for the rest
        // cwnd had room, the peer's window too, and no queue or loss says
        // the link was full: what TCP had to send was what the buffer held
        // (the kernel's sndbuf_limited timer counts only the moments the
        // writer was blocked, not the whole time a small buffer holds it).
        Limit::SenderBuffer
    } else {
        network_class(acc, b, (ta, tb), dt_us, peak_before, link_full)
    };
    acc.time_us[class as usize] += sending;
    rate
}
