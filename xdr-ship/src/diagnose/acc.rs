//! The accumulator of one connection's window: time per limit and the
//! figures behind the evidence, filled by the shipper's rules
//! (`rules.rs`) and the kernel-only rules (`kernel_rules.rs`) alike.
//!
//! Why a file of its own: both walks feed the same figures the same way
//! (a kernel sample's extremes, an interval's delivery, the app window's
//! medians); one home keeps the two verdicts' evidence in step.
use crate::metrics::TcpSample;

use super::rules::{ratio, LOSS_QUEUE_RTT_RATIO, N_LIMITS};

/// What the window's samples say about one connection (or, merged, about
/// several): time per limit, and the figures behind the evidence. Figures
/// named "latest" are sums over connections of each one's newest value;
/// divide by `tcp_conns` (or `conns`) for a per-connection mean.
#[derive(Clone, Debug, Default)]
pub(super) struct Acc {
    /// Microseconds of connection time per limit, indexed by `Limit as usize`.
    pub time_us: [f64; N_LIMITS],
    /// Microseconds of connection time in the run's drain (left out of
    /// `time_us`).
    pub drain_us: f64,
    /// Connections merged in.
    pub conns: usize,
    /// Of which with `TCP_INFO` in at least one interval.
    pub tcp_conns: usize,
    /// Latest peer window (bytes).
    pub snd_wnd: f64,
    /// Largest peer window seen (bytes).
    pub snd_wnd_max: f64,
    /// Latest congestion window (segments).
    pub cwnd: f64,
    /// Largest congestion window seen (segments).
    pub cwnd_peak: f64,
    /// Latest slow-start threshold (segments; summed like `cwnd`).
    pub ssthresh: f64,
    /// Intervals that carried data (kernel-only flows).
    pub carried: u64,
    /// The process that owns the flow(s), kernel-only: `iperf3 (pid 42)`.
    pub process: Option<String>,
    /// Largest MSS (bytes).
    pub mss: f64,
    /// Latest smoothed RTT (µs).
    pub srtt_us: f64,
    /// Smallest `min_rtt` seen (µs), if any.
    pub min_rtt_us: Option<u32>,
    /// Latest unacknowledged bytes (segments × MSS).
    pub unacked_bytes: f64,
    /// Latest unsent bytes in the socket.
    pub notsent_bytes: f64,
    /// Largest delivery-rate sample (bytes/s).
    pub delivery_max: f64,
    /// App window (records): the median over the intervals the
    /// connection was up (summed over connections when merged).
    pub window: f64,
    /// Connections whose app window never moved in the window (a fixed
    /// `--window`, or the auto window at its cap).
    pub fixed_windows: usize,
    /// Records in flight: the median over the intervals it was up.
    pub inflight: f64,
    /// Bytes in flight (frames): the median over the intervals it was up.
    pub inflight_bytes: f64,
    /// Segments retransmitted in the window.
    pub retrans: u64,
    /// Segments sent in the window (acknowledged + retransmitted).
    pub segs: f64,
    /// Of `retrans` and `segs`, those of intervals whose queue overflowed
    /// ([`Delivery::overflowing`]).
    pub queue_retrans: u64,
    pub queue_segs: f64,
    /// Bytes TCP saw acknowledged in the window.
    pub tcp_acked_bytes: u64,
    /// Intervals seen.
    pub intervals: u64,
    /// Intervals that ended with the app window full.
    pub window_full: u64,
    /// Intervals that ended with TCP waiting for the application.
    pub app_limited: u64,
    /// Intervals that ended with the app window full and TCP waiting for
    /// it (nothing unsent to speak of, its windows with room) while its
    /// app-limited flag was clear.
    pub held_by_window: u64,
    /// Intervals without `TCP_INFO` at both ends (same socket).
    pub no_tcp: u64,
    /// Intervals whose network time went to loss.
    pub lossy: u64,
    /// Intervals whose network time went to interrupts.
    pub interrupted: u64,
    /// Records delivered in the window.
    pub delivered: u64,
    /// Payload bytes acknowledged in the window.
    pub acked_bytes: u64,
}

/// What one interval of a socket delivered, from its samples `ta` → `tb`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Delivery {
    /// Bytes acknowledged.
    pub acked: u64,
    /// Segments retransmitted.
    pub retrans: u32,
    /// The segment size (at least 1), bytes.
    pub mss: f64,
    /// Segments sent: acknowledged bytes in segments plus retransmits.
    pub segs: f64,
    /// The bottleneck's queue overflowed at its end (srtt ≥
    /// [`LOSS_QUEUE_RTT_RATIO`] × min_rtt): its retransmits are the full
    /// link's tail drops, not the path's own loss.
    pub overflowing: bool,
}

impl Delivery {
    pub(super) fn between(ta: &TcpSample, tb: &TcpSample) -> Self {
        let acked = tb.bytes_acked.saturating_sub(ta.bytes_acked);
        let retrans = tb.total_retrans.saturating_sub(ta.total_retrans);
        let mss = f64::from(tb.mss_bytes.max(1));
        Self {
            acked,
            retrans,
            mss,
            segs: acked as f64 / mss + f64::from(retrans),
            overflowing: tb.min_rtt_us > 0
                && f64::from(tb.srtt_us) >= LOSS_QUEUE_RTT_RATIO * f64::from(tb.min_rtt_us),
        }
    }
}

impl Acc {
    /// Keeps the path-wide extremes one kernel sample shows: the largest
    /// peer window and delivery rate, the smallest (non-zero) min RTT.
    pub fn note_tcp(&mut self, t: &TcpSample) {
        self.snd_wnd_max = self.snd_wnd_max.max(f64::from(t.snd_wnd_bytes));
        self.delivery_max = self.delivery_max.max(t.delivery_rate_bytes_per_s as f64);
        self.min_rtt_us = [self.min_rtt_us, Some(t.min_rtt_us).filter(|r| *r > 0)]
            .into_iter()
            .flatten()
            .min();
    }

    /// Adds what one interval of a socket delivered.
    pub fn note_delivery(&mut self, d: &Delivery) {
        self.retrans += u64::from(d.retrans);
        self.segs += d.segs;
        self.tcp_acked_bytes += d.acked;
        if d.overflowing {
            self.queue_retrans += u64::from(d.retrans);
            self.queue_segs += d.segs;
        }
    }

    /// Takes the connection's window figures from its last kernel sample
    /// `t` (the one connection with TCP figures), with the cwnd's peak over
    /// the window.
    pub fn note_last_tcp(&mut self, t: &TcpSample, cwnd_peak: u32) {
        self.tcp_conns = 1;
        self.snd_wnd = f64::from(t.snd_wnd_bytes);
        self.cwnd = f64::from(t.cwnd_segments);
        self.cwnd_peak = f64::from(cwnd_peak);
        self.mss = f64::from(t.mss_bytes);
        self.srtt_us = f64::from(t.srtt_us);
        self.unacked_bytes = f64::from(t.unacked_segments) * f64::from(t.mss_bytes);
        self.notsent_bytes = f64::from(t.notsent_bytes);
    }

    /// Adds another connection's figures.
    pub fn merge(&mut self, o: &Acc) {
        for (t, ot) in self.time_us.iter_mut().zip(o.time_us) {
            *t += ot;
        }
        self.drain_us += o.drain_us;
        self.conns += o.conns;
        self.tcp_conns += o.tcp_conns;
        self.snd_wnd += o.snd_wnd;
        self.snd_wnd_max += o.snd_wnd_max;
        self.cwnd += o.cwnd;
        self.cwnd_peak += o.cwnd_peak;
        self.ssthresh += o.ssthresh;
        self.carried += o.carried;
        self.process = match (self.process.take(), &o.process) {
            (Some(a), Some(b)) if a != *b && !a.split(", ").any(|p| p == b) => {
                Some(format!("{a}, {b}"))
            }
            (a, b) => a.or_else(|| b.clone()),
        };
        self.mss = self.mss.max(o.mss);
        self.srtt_us += o.srtt_us;
        self.min_rtt_us = match (self.min_rtt_us, o.min_rtt_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.unacked_bytes += o.unacked_bytes;
        self.notsent_bytes += o.notsent_bytes;
        self.delivery_max += o.delivery_max;
        self.window += o.window;
        self.fixed_windows += o.fixed_windows;
        self.inflight += o.inflight;
        self.inflight_bytes += o.inflight_bytes;
        self.retrans += o.retrans;
        self.segs += o.segs;
        self.queue_retrans += o.queue_retrans;
        self.queue_segs += o.queue_segs;
        self.tcp_acked_bytes += o.tcp_acked_bytes;
        self.intervals += o.intervals;
        self.window_full += o.window_full;
        self.app_limited += o.app_limited;
        self.held_by_window += o.held_by_window;
        self.no_tcp += o.no_tcp;
        self.lossy += o.lossy;
        self.interrupted += o.interrupted;
        self.delivered += o.delivered;
        self.acked_bytes += o.acked_bytes;
    }

    /// Per-connection mean of a "latest" sum over connections with TCP data.
    pub fn per_tcp_conn(&self, sum: f64) -> f64 {
        ratio(sum, self.tcp_conns as f64)
    }

    /// Retransmitted ÷ sent segments in the window.
    pub fn loss_rate(&self) -> f64 {
        ratio(self.retrans as f64, self.segs)
    }

    /// Segments retransmitted and sent outside the intervals whose queue
    /// overflowed: the path's own loss, the `p` of the Mathis bound. Tail
    /// drops of a full bottleneck (a window overshooting, a slow start
    /// overfilling the queue) are the link's answer to a sender faster
    /// than it, not the random loss the bound models: counted in, 277 drops
    /// of one overshoot put the bound at a fifth of what 64 connections
    /// carried.
    pub fn path_loss(&self) -> (u64, f64) {
        (
            self.retrans.saturating_sub(self.queue_retrans),
            (self.segs - self.queue_segs).max(0.0),
        )
    }

    /// [`Acc::path_loss`] as a rate.
    pub fn path_loss_rate(&self) -> f64 {
        let (retrans, segs) = self.path_loss();
        ratio(retrans as f64, segs)
    }

    /// Mean smoothed RTT of the connections, seconds.
    pub fn srtt_s(&self) -> f64 {
        self.per_tcp_conn(self.srtt_us) / 1e6
    }

    /// Fraction of intervals that ended with the app window full.
    pub fn window_full_fraction(&self) -> f64 {
        ratio(self.window_full as f64, self.intervals as f64)
    }
}
