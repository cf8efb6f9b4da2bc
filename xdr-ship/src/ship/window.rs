//! The auto window (`--window auto`): how many records the pool keeps in
//! flight, converging like TCP/BBR rather than like a slow controller.
//!
//! # What it computes
//!
//! Little's law with *measured* numbers: the path needs
//! `delivery rate × round trip` records in flight. [`AutoWindow`] measures
//! both itself, once per round trip, and sizes the window from them:
//!
//! - **Rounds are packet-timed**, as in BBR: a round ends when everything
//!   that was in flight at its start has been answered, so one round is one
//!   round trip whatever the RTT (10 ms or 250 ms) and whatever queue has
//!   built up. A round's delivery-rate sample is `records answered ÷ time`.
//! - **Startup** grows the window ×[`STARTUP_GROWTH`] per round while the
//!   last doubling paid (the round's rate rose ×[`DOUBLING_PAID`]) — the
//!   multiplicative increase of TCP's slow start — and never below BBR's
//!   startup window
//!   `STARTUP_GAIN × max rate × min RTT`. The pipe is full when the rate
//!   stops growing for [`FULL_PIPE_ROUNDS`] rounds (BBR's STARTUP exit), or
//!   at once when it stopped growing while the window already held
//!   [`FULL_PIPE_QUEUE`] × what the path needs (a whole BDP queued), unless
//!   that queue was in the sockets (TCP held records back) rather than the
//!   path; or at once when TCP's smoothed RTT rose a quarter above its
//!   minimum ([`NETWORK_QUEUE_SRTT_RATIO`]): the line's queue is filling,
//!   whatever the rate says yet. A round in which TCP held the records
//!   back (most sockets with a batch unsent) measured TCP's own opening,
//!   not the path, and does not count as flat either, in the first
//!   [`STARTUP_TCP_GRACE_RTTS`] round trips.
//! - **Cruise** then sets the window every round to
//!   `gain × max rate × answer time`: [`CRUISE_GAIN`] most rounds, one round
//!   at [`PROBE_GAIN`] every [`PROBE_CYCLE_ROUNDS`] (BBR's ProbeBW: if the
//!   link has more to give, the rate sample rises and the window with it),
//!   then two at [`DRAIN_GAIN`] × what the *last round delivered* × answer
//!   time, a little under what the path carries: the probe's queue drains,
//!   and the second of them measures the answer time with no queue of our
//!   own. Why the delivered rate and not the max filter: a max above what
//!   the path carries now (a burst of answers, a busy CPU) times a gain
//!   under 1 can still exceed 1; then the drain keeps the queue it should
//!   empty, the answer time measured through it keeps the queue's delay,
//!   and the window rides [`ANSWER_TIME_MAX_RATIO`] (measured on the seed's
//!   link: 2.0–2.9 × throughput × RTT in flight before, 1.6–1.75 × after,
//!   at the same goodput).
//! - **The filters**: the rate is the max of the last [`BW_FILTER_ROUNDS`]
//!   rounds' samples no older than [`BW_FILTER_MAX_AGE`], so a drop of capacity takes the window down within
//!   that many rounds, and a probe's gain is kept. A sample is BBR's
//!   delivery rate (records answered while the newest answered one was in
//!   flight, over the longer of its send and answer spans), not a round's
//!   average, which mixes in the previous window. The fastest answer over
//!   [`MIN_RTT_WINDOW`] is the path's round trip, as BBR's min RTT.
//! - **Head-of-line waits.** On a lossy path every lost segment holds all
//!   the records behind it on its connection in the receiver's reassembly
//!   queue until the resend arrives, a round trip later. On one connection
//!   at 0.1% loss and 100 MB/s that is a hole every ~14 ms: answers take
//!   about two round trips at full rate, fewer at the drained round's
//!   smaller window, and a window sized on the drained round's answer time
//!   carried half the line (47–54 MB/s of iperf3's 88 on the lab). So when
//!   a round saw TCP retransmit while TCP's own smoothed RTT stayed near
//!   its minimum ([`NETWORK_QUEUE_SRTT_RATIO`]: no queue in the network) and no
//!   queue stood in the sockets all round, the round's answer time is
//!   head-of-line waiting: its moving average ([`HOL_EWMA`], at most
//!   [`HOL_ANSWER_MAX_RATIO`] × the fastest answer) sizes the window
//!   instead, in Startup's floor and in Cruise. TCP's RTT is the test
//!   because it sees the network's queue but not the reassembly queue (TCP
//!   acknowledges out-of-order data at once); a round without loss forgets
//!   the average. The averaging matters: a round's own figure swings with
//!   the holes it happened to hit, and used raw it swung the window
//!   between 9K and 55K records.
//! - **The answer time** is Little's law read backwards in the measuring
//!   round (mean in flight ÷ delivery rate), less the queueing delay TCP
//!   saw in the network that round (its smoothed RTT above its min RTT,
//!   when `network_queue` says there was a queue: the window's own, which
//!   it must not keep; see `beyond_network_queue`), never below the fastest
//!   answer, and believed only within [`ANSWER_TIME_MAX_RATIO`] of it
//!   (beyond, the drain did not empty a queue: the capacity fell). Why not
//!   the fastest answer alone: when *every* answer takes longer than the
//!   fastest (batched acknowledgements, the receiver's work), a window sized
//!   on the fastest holds too little, the rate falls with it, and the two
//!   shrink each other round after round — the old controller's stall.
//!
//! Why this and not what came before: the old controller aimed at
//! `1.5 × acks/s × min latency` once a second, per connection. Acks/s is
//! itself `window ÷ answer latency`, so as soon as answers took 1.5 × the
//! minimum (bytes waiting in socket buffers, the receiver, the line's queue)
//! the target equalled the window and growth stopped, at 60% of a 50 MB/s
//! line. Here, growth in Startup does not depend on that ratio, only on
//! whether the delivery rate still rises; Cruise sizes on the measured
//! answer time; and a round is a round trip, not a second (at 156 ms, six
//! doublings where the old one made one).
//!
//! Shrinking: a window that shrinks withdraws its free permits at once and
//! the rest from answers as they return them (`ConnState::shrink_window`):
//! a hungry writer would otherwise take every returned permit first, and
//! the in-flight would never come down.
//!
//! # One window for the pool, split over the connections
//!
//! The controller sizes the *pool's* in-flight and splits it evenly over
//! the connections that are up, rather than running one controller per
//! connection. Why:
//! - the signal: with 64 connections each carries 1/64 of the flow, and a
//!   round's worth of its answers is a handful of batched ACKs: per
//!   connection the rate samples are noisy and their max filter biased; the
//!   pool's sum is smooth;
//! - the quantity: the link's capacity and round trip belong to the path
//!   all connections share, not to any one of them;
//! - the split is fair by construction: every connection takes records from
//!   the same queue whenever its window has room, so equal windows give
//!   equal shares, and a connection that is down holds none;
//! - it is the same code for `--connections 1 --mode unordered` (where the
//!   one window is the pool's) as for 64.
//!
//! The cost: a connection whose own TCP is slower than the others' (a lossy
//! flow) gets the same window; its excess waits in its own socket buffer,
//! which TCP's verdict then names.
//!
//! # Records and bytes
//!
//! The window counts records (the permits connections take), and Little's
//! law in records needs no record size: `records/s × RTT`. 100-byte records
//! at 156 ms and 100 MB/s need ~156K in flight, 64 KB ones ~240. What does
//! need the size is memory: the window is also capped at
//! `max_inflight_bytes ÷ bytes per record` (the mean encoded size of
//! answered records), so the shipper's memory stays within its base plus the
//! configured in-flight bytes whatever the record size.
//!
//! The start is in bytes for the same reason (`Limits::start_bytes`):
//! until the first answer, the size of what is in flight sets both the cap
//! and the starting window. A start in records put 256 MB of 64 KB records
//! in flight at once on the 156 ms / 100 MB/s lab (16 BDP; 0.8–2K records
//! stood in flight in the first seconds, which read 51–72 MB/s) and 400 KB
//! of 100-byte ones (a tenth of what 1 KB records started with), for the
//! same 64 per connection.
//!
//! # Short paths
//!
//! On loopback or a LAN, Little's law asks for a few records per
//! connection, and then the cost of each write and answer, not the path,
//! sets the rate (a third of what the same pool carries with one batch per
//! connection in flight). There, and only there (TCP's own min RTT under
//! [`FLOOR_MAX_RTT`]), the window keeps at least one batch per connection:
//! see [`Limits`].
//!
//! Why one file of ~600 lines, most of it this doc and the constants' own:
//! the state machine, its gains and the pool's adapter are one design read
//! together; the simulated path that tests it is in `window/tests.rs`.
use std::{collections::VecDeque, sync::Arc, time::Duration, time::Instant};

use super::conn::ConnState;

/// Time between two looks of the controller at the pool (a few per round
/// trip even on a 10 ms path; each look is a few atomics and two uncontended
/// locks per connection).
pub const CONTROL_TICK: Duration = Duration::from_millis(5);
/// Startup: window multiplier per round while the delivery rate still grows
/// (slow start's doubling).
pub const STARTUP_GROWTH: f64 = 2.0;
/// Startup: the window is at least this multiple of max rate × min RTT
/// (BBR's STARTUP cwnd gain).
pub const STARTUP_GAIN: f64 = 2.0;
/// The delivery rate "still grows" when its max rose by at least this
/// factor since the last round that grew (BBR: 25%).
pub const FULL_PIPE_GROWTH: f64 = 1.25;
/// Startup doubles again only while the last doubling paid: the round's
/// rate rose by at least this factor over the previous round's (half of
/// the doubling or more). Less means the knee is near, and BBR's startup
/// window takes over (another blind doubling would queue several BDPs).
pub const DOUBLING_PAID: f64 = 1.5;
/// Rounds in a row without such growth that mean the pipe is full (BBR: 3).
pub const FULL_PIPE_ROUNDS: u32 = 3;
/// Startup: rounds in which TCP held the records back (unsent bytes in
/// most sockets, [`Sample::tcp_held`]) are not counted towards a full pipe
/// during Startup's first this many round trips (TCP's min RTT). Why: every connection's TCP opens from its
/// own initial window, and while its slow start lags the window's
/// doublings, the delivery rate grows by less than [`FULL_PIPE_GROWTH`] a
/// round because of TCP, not the path. Counted, those rounds ended Startup
/// at 0.85 BDP on the 250 ms lab link, with 5.3 MB unsent in the sockets at
/// 1.5 s, and the window then took seconds to reach the line. Bounded,
/// because a TCP that holds records on a full link (BBR's cwnd is 2× its
/// BDP) holds them for good, and then each round stretches by the queue in
/// the sockets: a bound in rounds would last seconds there, one in round
/// trips does not. Twelve round trips outlast the slowest opening measured:
/// on that link the 64 connections' cwnds summed to one BDP only after
/// ~10 round trips (2.5 s). On the lab (five pairs of runs) it did not
/// measurably move the openings: there Startup's overshoot into a line
/// queue of one BDP is the larger effect (see the README).
pub const STARTUP_TCP_GRACE_RTTS: u32 = 12;
/// A round without growth whose window held this multiple of max rate × min
/// RTT means the pipe is full at once: a whole BDP is queued already.
pub const FULL_PIPE_QUEUE: f64 = 2.0;
/// Cruise: window = this × max rate × answer time in most rounds. The
/// margin absorbs answers that arrive in bursts (batched ACKs) and lets the
/// delivery rate, and so the window, rise with the link.
pub const CRUISE_GAIN: f64 = 1.2;
/// Cruise: the gain of the one probing round per cycle.
pub const PROBE_GAIN: f64 = 1.5;
/// Cruise: the gain of the two rounds after a probe (and after Startup):
/// a little under what the path needs, so that any queue drains (the first
/// round shrinks the window, the second measures the answer time without a
/// queue).
pub const DRAIN_GAIN: f64 = 0.9;
/// Cruise: rounds per probe cycle (probe, drain, drain, then cruise).
pub const PROBE_CYCLE_ROUNDS: u32 = 8;
/// Cruise: a drained round's answer time is believed only up to this
/// multiple of the fastest answer: more means a queue the drain did not
/// empty (the link's capacity fell), not a slower path.
pub const ANSWER_TIME_MAX_RATIO: f64 = 2.0;
/// TCP's smoothed RTT at this multiple of its min RTT means a queue in the
/// network; within it, none. One threshold for both questions that ask it:
/// whether a lossy round's slow answers were head-of-line waits
/// (`head_of_line_waits`: no queue), and whether Startup's window has
/// filled the line's queue (`network_queue`).
pub const NETWORK_QUEUE_SRTT_RATIO: f64 = 1.25;
/// Head-of-line waits are believed up to this multiple of the fastest
/// answer: a resend arrives a round trip and its detection (a quarter of
/// one) late; measured on the lab's one lossy connection, rounds read
/// 1.4–2.5 × the fastest answer.
pub const HOL_ANSWER_MAX_RATIO: f64 = 2.5;
/// Weight of a round's head-of-line answer time in their moving average
/// (a round's figure varies with the holes it hit).
pub const HOL_EWMA: f64 = 0.25;
/// Startup: a round whose TCP smoothed RTT (mean over the connections)
/// stood at [`NETWORK_QUEUE_SRTT_RATIO`] × TCP's min RTT or more, and at
/// least this much above it, with the window full, means the line's queue
/// is filling: the pipe is full at once (the delay signal of HyStart,
/// which Linux's CUBIC uses to leave slow start). The floor: on a short
/// path a few ms of scheduling (the delay line's own CPU) is a quarter of
/// the RTT, and no queue. Why the rule:
/// the rate says the pipe is full only after [`FULL_PIPE_ROUNDS`] flat
/// rounds, and each of them may double a window already past the line. On
/// the simulated 250 ms / 80K records/s path Startup peaked at 3.3× what
/// the path needs without this, 1.6× with it; on the lab's seed link (four
/// runs) the largest window fell from 65,536 records (4.3×) to 32,768–43,072.
/// What it does not remove: the dip in the fourth second on the 250 ms
/// link, which is TCP's own: 64 BBR flows leaving their Startup together
/// overflow the line's queue (iperf3 `-P 64` on that link dips the same
/// second). TCP's RTT is the test because it sees the network's queue and
/// nothing else: not the sockets', not the receiver's.
pub const STARTUP_QUEUE_MIN: Duration = Duration::from_millis(5);
/// Rounds the max-rate filter remembers.
pub const BW_FILTER_ROUNDS: usize = 8;
/// ... and for no longer than this: when the link slows under a full
/// window, each round stretches to the time the queue takes to drain (a
/// second and more), and eight of them would hold the old rate for many
/// seconds. A full link's rounds all sample its rate, so forgetting a probe
/// round early costs nothing there.
pub const BW_FILTER_MAX_AGE: Duration = Duration::from_secs(2);
/// Span of the min-RTT filter (BBR: 10 s).
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// The min-RTT filter keeps one minimum per bucket of this length.
const MIN_RTT_BUCKET: Duration = Duration::from_secs(1);
/// The pool's window counts as full when this fraction of it is in flight
/// (acknowledgements return permits in batches; the writers refill them
/// within microseconds, a sample may fall in between).
pub const WINDOW_FULL_FRACTION: f64 = 0.9;
/// A connection checks whether its full window is the limit at most this
/// often (one `getsockopt(TCP_INFO)` each).
pub(crate) const WINDOW_FULL_CHECK_EVERY: Duration = Duration::from_millis(10);
/// Looks the rate sampler keeps to date sends: 20 s at [`CONTROL_TICK`],
/// longer than any answer takes on a working path.
const LOOKS_KEPT: usize = 4096;
/// The one-batch-per-connection floor ([`Limits`]) applies only on a path
/// whose round trip (TCP's min RTT) is shorter than this: loopback, a LAN,
/// where the processes' own work, not the distance, makes the round trip.
pub const FLOOR_MAX_RTT: Duration = Duration::from_millis(2);
/// No connection's share of the window falls below this many records.
pub const MIN_WINDOW_PER_CONN: u64 = 4;

/// The bounds of an auto window.
///
/// # The floor: one batch per connection
///
/// Little's law sizes the window for the *path*; on a short one (loopback,
/// a LAN) it asks for a handful of records per connection, and then every
/// write carries a record or two and every answer frees as few: the cost
/// per record of writes, wake-ups and answers, not the path, sets the rate.
/// Measured on loopback (2 cores, `ship --generate max,1000,… --window N`
/// into `recv --memory`, 64 connections, 2026-12-03): 8 per connection
/// 135K records/s, 32 223K, 64 324K, 128 347K, 512 337K; the auto window
/// without a floor sat at its 4-record minimum and carried 113–135K (with
/// the bench's 100,000 keys, three interleaved runs each: 173–176K without
/// the floor, 567–569K with it).
///
/// So the window never aims below one full batch per connection (64 KB of
/// 1 KB records each: 4 MB over 64 connections), but only on a path whose
/// round trip (TCP's min RTT) is under [`FLOOR_MAX_RTT`]: there the round
/// trip is the processes' own work, and what Little's law did not ask for
/// waits in local socket buffers for a few ms. On a WAN path the floor
/// would be a standing queue the window itself made: at 60 ms and 20 MB/s
/// the path needs 1,200 records, and 4,096 would add 140 ms to every
/// answer (and hold the window up when the link slows); the seed's link
/// needs ~240 per connection anyway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Records in flight at the first look, before the records' size is
    /// known.
    pub start_records: u64,
    /// Bytes in flight until the first answer, once what is in flight says
    /// how large the records are (0: `start_records` stands). Why bytes:
    /// the path carries bytes, and a start sized in records is 256 MB of
    /// 64 KB records and 400 KB of 100-byte ones for the same 64 × 64.
    pub start_bytes: u64,
    /// Never fewer than this many in flight.
    pub min_records: u64,
    /// Aim for no fewer than this many in flight (one batch per
    /// connection) whatever Little's law says, as long as they hold no more
    /// than `floor_bytes`, the path is short and the maxima allow (see the
    /// floor above).
    pub floor_records: u64,
    /// The floor's bound in encoded bytes (one batch's bytes per
    /// connection), so that large records keep a small floor.
    pub floor_bytes: u64,
    /// Never more than this many records in flight.
    pub max_records: u64,
    /// Never more than this many bytes in flight (encoded frames).
    pub max_inflight_bytes: u64,
}

/// What the controller sees at one look at the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Time since the controller started.
    pub at: Duration,
    /// Records answered so far (cumulative).
    pub delivered_records: u64,
    /// Encoded bytes of the records answered so far (cumulative).
    pub delivered_bytes: u64,
    /// Records in flight now.
    pub inflight_records: u64,
    /// Encoded bytes of the records in flight now.
    pub inflight_bytes: u64,
    /// The smallest answer latency seen recently (`None`: no answer yet).
    pub min_latency: Option<Duration>,
    /// Whether the window was (nearly) all in flight: the window, not the
    /// source, limited what was sent.
    pub window_full: bool,
    /// TCP's own min RTT, the smallest over the connections (`None`: not
    /// read yet): the path's round trip with no queue of the shipper's
    /// making, unlike the answers' latency.
    pub path_rtt: Option<Duration>,
    /// Most connections' sockets held at least a batch that TCP had not
    /// sent yet beyond the write just made, at their last look with a full
    /// window: TCP (its own slow start, or a full link), not the window,
    /// held the records back.
    pub tcp_held: bool,
    /// TCP's smoothed RTT, the mean over the connections that have read one
    /// (`None`: none yet): above [`Sample::path_rtt`] by the queue in the
    /// network, but not by what waits in the receiver's reassembly queue
    /// behind a lost segment (TCP acknowledges out-of-order data at once).
    pub tcp_srtt: Option<Duration>,
    /// Segments TCP retransmitted so far, summed over the connections'
    /// sockets (a reconnect starts its socket's count again).
    pub tcp_retrans: u64,
}

/// Where the controller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Growing multiplicatively until the pipe is full.
    Startup,
    /// Following max rate × min RTT; `round` is the position in the probe cycle.
    Cruise {
        /// Round within the cycle, `0..PROBE_CYCLE_ROUNDS` (0 probes, 1 drains).
        round: u32,
    },
}

/// A round in progress: it ends once `end_delivered` records are answered.
#[derive(Clone, Copy, Debug)]
struct Round {
    start: Duration,
    start_delivered: u64,
    /// Sum and count of the looks' in-flight records (for the mean).
    inflight_sum: f64,
    looks: u32,
    end_delivered: u64,
    /// Looks at which the window was full and TCP held records back
    /// ([`Sample::tcp_held`]).
    held_looks: u32,
    /// Looks at which the window was (nearly) all in flight.
    full_looks: u32,
    /// [`Sample::tcp_retrans`] at the round's first look.
    start_retrans: u64,
    /// Sum and count of the looks' TCP smoothed RTTs, seconds.
    srtt_sum: f64,
    srtt_looks: u32,
    /// The best delivery-rate sample of the round, records/s.
    max_rate: f64,
}

/// One look, kept to date the records it saw sent: (time, records sent so
/// far, records answered so far).
#[derive(Clone, Copy, Debug)]
struct Look {
    at: Duration,
    sent: u64,
    delivered: u64,
}

/// The auto window: a pure state machine fed [`Sample`]s, answering the
/// window in records. See the module doc.
#[derive(Clone, Debug)]
pub struct AutoWindow {
    limits: Limits,
    window: f64,
    phase: Phase,
    round: Option<Round>,
    /// The last looks, oldest first (bounded by [`LOOKS_KEPT`]).
    looks: VecDeque<Look>,
    /// Records sent so far (never decreasing: a requeue does not unsend).
    sent: u64,
    /// Delivery-rate samples of the last rounds (when the round ended,
    /// records/s), newest last.
    rates: VecDeque<(Duration, f64)>,
    /// Cruise: the answer time measured in the last drained round (`None`:
    /// none yet, the fastest answer stands in).
    answer: Option<Duration>,
    /// Min answer latency per [`MIN_RTT_BUCKET`]: (bucket index, min).
    rtts: VecDeque<(u64, Duration)>,
    /// Startup: the rate the last growth reached, and rounds since.
    full_rate: f64,
    /// The previous round's rate sample (Startup doubles while it rises).
    last_rate: f64,
    flat_rounds: u32,
    /// Mean encoded bytes per answered record (0: none answered yet).
    bytes_per_record: f64,
    /// TCP's min RTT as last sampled (see [`Sample::path_rtt`]).
    path_rtt: Option<Duration>,
    /// The moving average of head-of-line answer times (`None`: the last
    /// round saw no loss). A lossy round that did not qualify (a queue in
    /// the network or the sockets) leaves it as it was.
    hol_answer: Option<Duration>,
}

impl AutoWindow {
    /// A window at `limits.start_records`, in Startup.
    pub fn new(limits: Limits) -> Self {
        let mut w = Self {
            limits,
            window: limits.start_records as f64,
            phase: Phase::Startup,
            round: None,
            looks: VecDeque::new(),
            sent: 0,
            rates: VecDeque::with_capacity(BW_FILTER_ROUNDS),
            rtts: VecDeque::new(),
            answer: None,
            full_rate: 0.0,
            last_rate: 0.0,
            flat_rounds: 0,
            bytes_per_record: 0.0,
            path_rtt: None,
            hol_answer: None,
        };
        w.window = w.clamp(w.window);
        w
    }

    /// The window now, in records.
    pub fn window(&self) -> u64 {
        self.window.round() as u64
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The max delivery rate of the last rounds, records/s (0: none yet).
    pub fn max_rate(&self) -> f64 {
        self.rates.iter().map(|(_, r)| *r).fold(0.0, f64::max)
    }

    /// The min answer latency of the filter's span (`None`: no answer yet).
    pub fn min_rtt(&self) -> Option<Duration> {
        let newest = self.rtts.back()?.0;
        let span = (MIN_RTT_WINDOW.as_nanos() / MIN_RTT_BUCKET.as_nanos()) as u64;
        self.rtts
            .iter()
            .filter(|(b, _)| newest - b < span)
            .map(|(_, r)| *r)
            .min()
    }

    /// Takes one look at the pool; returns the window to use, in records.
    pub fn on_sample(&mut self, s: &Sample) -> u64 {
        if let Some(rtt) = s.min_latency.filter(|r| !r.is_zero()) {
            self.note_rtt(s.at, rtt);
        }
        if s.delivered_records > 0 {
            self.bytes_per_record = s.delivered_bytes as f64 / s.delivered_records as f64;
        } else if s.inflight_records > 0 && s.inflight_bytes > 0 {
            // Nothing answered yet: what is in flight tells the records'
            // size; the start is set in bytes (see `Limits`), and the byte
            // cap binds from here on.
            self.bytes_per_record = s.inflight_bytes as f64 / s.inflight_records as f64;
            let start = match self.limits.start_bytes {
                0 => self.window,
                bytes => bytes as f64 / self.bytes_per_record,
            };
            self.window = self.clamp(start);
        }
        if s.path_rtt.is_some() {
            self.path_rtt = s.path_rtt;
        }
        let rate = self.rate_sample(s);
        let Some(mut round) = self.round else {
            // A round starts at the look after the window changed, so the
            // writers have filled it: the round then measures this window.
            self.round = Some(Round {
                start: s.at,
                start_delivered: s.delivered_records,
                inflight_sum: s.inflight_records as f64,
                looks: 1,
                end_delivered: s.delivered_records + s.inflight_records.max(1),
                held_looks: u32::from(s.window_full && s.tcp_held),
                full_looks: u32::from(s.window_full),
                start_retrans: s.tcp_retrans,
                srtt_sum: s.tcp_srtt.map_or(0.0, |r| r.as_secs_f64()),
                srtt_looks: u32::from(s.tcp_srtt.is_some()),
                max_rate: 0.0,
            });
            return self.window();
        };
        round.held_looks += u32::from(s.window_full && s.tcp_held);
        round.full_looks += u32::from(s.window_full);
        round.max_rate = round.max_rate.max(rate);
        if let Some(r) = s.tcp_srtt {
            round.srtt_sum += r.as_secs_f64();
            round.srtt_looks += 1;
        }
        round.inflight_sum += s.inflight_records as f64;
        round.looks += 1;
        self.round = Some(round);
        if s.delivered_records < round.end_delivered {
            return self.window();
        }
        self.round = None;
        let elapsed = s.at.saturating_sub(round.start).as_secs_f64();
        let mean_rate = (s.delivered_records - round.start_delivered) as f64 / elapsed.max(1e-9);
        // Little's law over the round: mean in flight ÷ delivery rate.
        let answer = (mean_rate > 0.0).then(|| {
            Duration::from_secs_f64(round.inflight_sum / f64::from(round.looks) / mean_rate)
        });
        if self.rates.len() == BW_FILTER_ROUNDS {
            self.rates.pop_front();
        }
        while self
            .rates
            .front()
            .is_some_and(|(at, _)| *at + BW_FILTER_MAX_AGE < s.at)
        {
            self.rates.pop_front();
        }
        self.rates.push_back((s.at, round.max_rate));
        self.end_round(
            RoundEnd {
                window_full: round.full_looks > 0,
                tcp_held: round.held_looks > 0,
                socket_queue: round.held_looks > 0 && round.held_looks == round.full_looks,
                retransmitted: s.tcp_retrans > round.start_retrans,
                srtt: (round.srtt_looks > 0)
                    .then(|| Duration::from_secs_f64(round.srtt_sum / f64::from(round.srtt_looks))),
                at: s.at,
                rate_sample: round.max_rate,
                delivered_rate: mean_rate,
            },
            answer,
        );
        self.window()
    }

    /// The time an answer takes with no queue of the shipper's own making:
    /// in Cruise, Little's-law answer time (mean in flight ÷ delivery rate)
    /// of the last drained round; never below the fastest answer, which is
    /// all Startup uses. Not the fastest answer alone: when every answer
    /// takes longer than the fastest one (batched acknowledgements, the
    /// receiver's work), a window sized on the fastest holds too little,
    /// and the rate and the window shrink each other round after round.
    pub fn answer_time(&self) -> Option<Duration> {
        let fastest = self.min_rtt()?;
        Some(self.answer.map_or(fastest, |a| a.max(fastest)))
    }

    /// BBR's delivery-rate sample: the records answered while the newest
    /// answered one was in flight, over that time. Unlike a round's average
    /// it does not mix in the previous window's records (a window that just
    /// doubled sends its new half as a burst behind the old one).
    fn rate_sample(&mut self, s: &Sample) -> f64 {
        self.sent = self.sent.max(s.delivered_records + s.inflight_records);
        if self.looks.len() == LOOKS_KEPT {
            self.looks.pop_front();
        }
        self.looks.push_back(Look {
            at: s.at,
            sent: self.sent,
            delivered: s.delivered_records,
        });
        // The look by which the newest answered record had been sent.
        let i = self.looks.partition_point(|l| l.sent < s.delivered_records);
        let Some(sent_at) = self.looks.get(i) else {
            return 0.0;
        };
        // As BBR: over the longer of the time they took to be answered and
        // the time they took to be sent, so that answers released in a
        // burst (after a retransmission, say) do not read as a fast link.
        let first = self
            .looks
            .partition_point(|l| l.sent < sent_at.delivered + 1);
        let send_elapsed = self
            .looks
            .get(first)
            .map_or(Duration::ZERO, |f| sent_at.at.saturating_sub(f.at));
        let elapsed = s.at.saturating_sub(sent_at.at).max(send_elapsed);
        if elapsed.is_zero() {
            return 0.0;
        }
        s.delivered_records.saturating_sub(sent_at.delivered) as f64 / elapsed.as_secs_f64()
    }

    fn note_rtt(&mut self, at: Duration, rtt: Duration) {
        let bucket = (at.as_nanos() / MIN_RTT_BUCKET.as_nanos()) as u64;
        match self.rtts.back_mut() {
            Some((b, min)) if *b == bucket => *min = (*min).min(rtt),
            _ => self.rtts.push_back((bucket, rtt)),
        }
        let span = (MIN_RTT_WINDOW.as_nanos() / MIN_RTT_BUCKET.as_nanos()) as u64;
        while self.rtts.front().is_some_and(|(b, _)| bucket - b >= span) {
            self.rtts.pop_front();
        }
    }

    /// A round ended: decide the next window.
    fn end_round(&mut self, end: RoundEnd, measured: Option<Duration>) {
        let RoundEnd {
            window_full,
            tcp_held,
            socket_queue,
            retransmitted,
            srtt,
            at,
            rate_sample: round_rate,
            delivered_rate,
        } = end;
        if let (
            Phase::Cruise {
                round: MEASURING_ROUND,
            },
            Some(m),
            Some(fastest),
        ) = (self.phase, measured, self.min_rtt())
        {
            let m = beyond_network_queue(m, srtt, self.path_rtt).max(fastest);
            if m.as_secs_f64() <= ANSWER_TIME_MAX_RATIO * fastest.as_secs_f64() {
                self.answer = Some(m);
            }
        }
        let Some(answer) = self.answer_time() else {
            return;
        };
        let max_rate = self.max_rate();
        let bdp = max_rate * answer.as_secs_f64();
        // What the path needs when the round's answers waited behind lost
        // segments, not in a queue (see `head_of_line_waits`).
        let lossy = retransmitted && !socket_queue;
        if let (Some(m), Some(fastest)) = (
            head_of_line_waits(measured, srtt, self.path_rtt, lossy),
            self.min_rtt(),
        ) {
            let m = m.min(fastest.mul_f64(HOL_ANSWER_MAX_RATIO)).as_secs_f64();
            let prev = self.hol_answer.map_or(m, |h| h.as_secs_f64());
            self.hol_answer = Some(Duration::from_secs_f64(prev + HOL_EWMA * (m - prev)));
        } else if !retransmitted {
            self.hol_answer = None;
        }
        let hol_answer = self.hol_answer.map_or(answer, |h| h.max(answer));
        let hol_bdp = max_rate * hol_answer.as_secs_f64();
        let doubling_paid = round_rate >= DOUBLING_PAID * self.last_rate;
        self.last_rate = round_rate;
        let next = match self.phase {
            Phase::Startup => {
                let grew = max_rate >= self.full_rate * FULL_PIPE_GROWTH && max_rate > 0.0;
                // Early on, a round whose records waited in the sockets
                // measured TCP's opening, not the path: not flat.
                let in_grace = self.path_rtt.is_some_and(|r| {
                    at.as_secs_f64() < f64::from(STARTUP_TCP_GRACE_RTTS) * r.as_secs_f64()
                });
                let tcp_opening = tcp_held && in_grace;
                if grew {
                    self.full_rate = max_rate;
                    self.flat_rounds = 0;
                } else if !tcp_opening {
                    self.flat_rounds += 1;
                }
                // Queued in the sockets (TCP held records) is not queued in
                // the path: only flat rounds end Startup then.
                let queued =
                    !tcp_held && !grew && window_full && self.window >= FULL_PIPE_QUEUE * bdp;
                let line_queue = window_full && network_queue(srtt, self.path_rtt);
                if self.flat_rounds >= FULL_PIPE_ROUNDS || queued || line_queue {
                    self.phase = Phase::Cruise { round: 1 };
                    self.answer = None;
                    DRAIN_GAIN * bdp
                } else if window_full {
                    // Double while the last doubling paid; otherwise hold
                    // at least BBR's startup window.
                    let grown = if doubling_paid {
                        self.window * STARTUP_GROWTH
                    } else {
                        self.window
                    };
                    grown.max(STARTUP_GAIN * hol_bdp)
                } else {
                    self.window
                }
            }
            Phase::Cruise { round } => {
                let round = (round + 1) % PROBE_CYCLE_ROUNDS;
                self.phase = Phase::Cruise { round };
                if cruise_gain(round) < 1.0 {
                    // Drains on what the last round delivered, not on the
                    // max filter: a max above what the path now carries
                    // (a burst of answers, a busy CPU) times a gain under 1
                    // can still exceed 1, and then the queue the drain
                    // should empty keeps itself, and with it the answer
                    // time measured through it.
                    cruise_gain(round) * delivered_rate.min(max_rate) * hol_answer.as_secs_f64()
                } else {
                    cruise_gain(round) * hol_bdp
                }
            }
        };
        self.window = self.clamp(next);
        tracing::debug!(
            "auto window: round rate {round_rate:.0}/s, max {max_rate:.0}/s, answer time \
             {answer:?} (the round's {measured:?}, head-of-line {:?}), full {window_full}, \
             TCP held {tcp_held}, socket queue {socket_queue}, retransmitted {retransmitted}, \
             TCP srtt {srtt:?}, {:?}: window {:.0}",
            self.hol_answer,
            self.phase,
            self.window
        );
    }

    fn clamp(&self, records: f64) -> f64 {
        let mut max = self.limits.max_records as f64;
        let mut floor = self.limits.floor_records as f64;
        if self.bytes_per_record > 0.0 {
            max = max.min(self.limits.max_inflight_bytes as f64 / self.bytes_per_record);
            floor = floor.min(self.limits.floor_bytes as f64 / self.bytes_per_record);
        }
        // TCP's RTT, not the answers': with the floor on, a short path's
        // answers wait behind the floor's own records (4,096 at 500K/s is
        // 8 ms), and gating on them would turn the floor off and on.
        if self.path_rtt.is_none_or(|r| r >= FLOOR_MAX_RTT) {
            floor = 0.0;
        }
        records
            .max(floor)
            .min(max)
            .max(self.limits.min_records.max(1) as f64)
    }
}

/// What a round that just ended measured.
#[derive(Clone, Copy, Debug)]
struct RoundEnd {
    /// The window was (nearly) all in flight at some look of the round.
    window_full: bool,
    /// TCP held records back at some look with the window full.
    tcp_held: bool,
    /// ... at every look with the window full: a queue in the sockets stood
    /// all round (not the burst a batch of answers lets out), and the
    /// round's answers waited in it.
    socket_queue: bool,
    /// TCP retransmitted during the round.
    retransmitted: bool,
    /// TCP's mean smoothed RTT over the round's looks.
    srtt: Option<Duration>,
    /// When the round ended (since the controller started).
    at: Duration,
    /// The round's best delivery-rate sample, records/s.
    rate_sample: f64,
    /// Records the round delivered ÷ its length: what the path carried.
    delivered_rate: f64,
}

/// The answer time a round measured, if its excess over the fastest answer
/// was head-of-line waiting rather than a queue: TCP retransmitted in the
/// round (`lossy`, which also says the sockets held no queue), while its
/// smoothed RTT stayed within [`NETWORK_QUEUE_SRTT_RATIO`] of its min RTT (the
/// network held none either). Then more in flight costs the path nothing:
/// it covers the waits (see the module doc).
fn head_of_line_waits(
    measured: Option<Duration>,
    srtt: Option<Duration>,
    path_rtt: Option<Duration>,
    lossy: bool,
) -> Option<Duration> {
    let (m, srtt, path) = (measured?, srtt?, path_rtt?);
    (lossy && srtt.as_secs_f64() <= NETWORK_QUEUE_SRTT_RATIO * path.as_secs_f64()).then_some(m)
}

/// The round of the probe cycle whose answer time is measured: the second
/// drained one (the first shrinks the window).
const MEASURING_ROUND: u32 = 2;

/// Whether TCP's smoothed RTT over a round says the network held a queue:
/// [`NETWORK_QUEUE_SRTT_RATIO`] × its min RTT, and [`STARTUP_QUEUE_MIN`]
/// more at least.
fn network_queue(srtt: Option<Duration>, path_rtt: Option<Duration>) -> bool {
    let (Some(srtt), Some(min)) = (srtt, path_rtt) else {
        return false;
    };
    srtt.as_secs_f64() >= NETWORK_QUEUE_SRTT_RATIO * min.as_secs_f64()
        && srtt.saturating_sub(min) >= STARTUP_QUEUE_MIN
}

/// The measuring round's answer time less the queueing delay TCP saw in
/// the network (smoothed RTT above its min RTT), when
/// [`network_queue`] says there was one. Why: two drained rounds at
/// [`DRAIN_GAIN`] take a tenth of a path's worth out of a queue, and on the
/// lab's seed link (a 156 ms line queue) the queue the window had built
/// stood through them: answers measured 1.4–2× the round trip, Cruise
/// sized the window on that (2 BDP in flight), the line's queue
/// overflowed, and the rate dipped with every probe. The delay beyond
/// TCP's RTT (the receiver's work, batching) is still covered.
fn beyond_network_queue(
    measured: Duration,
    srtt: Option<Duration>,
    path_rtt: Option<Duration>,
) -> Duration {
    match (srtt, path_rtt) {
        (Some(srtt), Some(path)) if network_queue(Some(srtt), Some(path)) => {
            measured.saturating_sub(srtt - path)
        }
        _ => measured,
    }
}

/// The gain of round `round` of the probe cycle.
fn cruise_gain(round: u32) -> f64 {
    match round {
        0 => PROBE_GAIN,
        1 | MEASURING_ROUND => DRAIN_GAIN,
        _ => CRUISE_GAIN,
    }
}

/// Whether a connection whose window is full is limited by that window:
/// only if its socket has (almost) nothing left to send. Otherwise TCP (the
/// congestion window, the peer's window, the link) is the limit, and a
/// larger window would only park records in the send buffer, adding latency.
pub(crate) fn socket_drained(notsent_bytes: usize, batch_max_bytes: usize) -> bool {
    notsent_bytes < batch_max_bytes
}

/// What one request carries at most: the window's floor per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Records (`--batch`).
    pub records: u64,
    /// Encoded bytes.
    pub bytes: u64,
}

/// The auto window applied to a pool of connections: looks at them every
/// [`CONTROL_TICK`], feeds [`AutoWindow`], and splits its window evenly over
/// the connections that are up, each share capped at `per_conn_max`.
pub(crate) struct PoolWindow {
    auto: AutoWindow,
    started: Instant,
    per_conn_max: u64,
}

impl PoolWindow {
    /// An auto window over `connections` connections, each starting at
    /// `start_per_conn` records, then at `start_bytes_per_conn` once the
    /// records' size is known, never above `per_conn_max` records, the
    /// pool never above `max_inflight_bytes`; on a short path each
    /// connection aims for at least one `batch` (see [`Limits`]).
    pub fn new(
        connections: usize,
        start_per_conn: u64,
        start_bytes_per_conn: u64,
        per_conn_max: u64,
        max_inflight_bytes: u64,
        batch: Batch,
    ) -> Self {
        let n = connections.max(1) as u64;
        let min_per_conn = MIN_WINDOW_PER_CONN.min(per_conn_max);
        Self {
            auto: AutoWindow::new(Limits {
                start_records: start_per_conn.min(per_conn_max) * n,
                start_bytes: start_bytes_per_conn * n,
                min_records: min_per_conn * n,
                floor_records: batch.records.min(per_conn_max) * n,
                floor_bytes: batch.bytes * n,
                max_records: per_conn_max * n,
                max_inflight_bytes,
            }),
            started: Instant::now(),
            per_conn_max,
        }
    }

    /// One look at the pool; resizes the connections' windows.
    pub fn tick(&mut self, states: &[Arc<ConnState>]) {
        let mut s = Sample {
            at: self.started.elapsed(),
            ..Sample::default()
        };
        let (mut connected, mut window_sum, mut held) = (0u64, 0u64, 0u64);
        let (mut srtt_sum, mut srtts) = (Duration::ZERO, 0u32);
        for st in states {
            let c = st.counters();
            s.delivered_records += c.delivered();
            s.delivered_bytes += c.acked_bytes;
            s.inflight_records += st.inflight_records();
            s.inflight_bytes += st.inflight_bytes();
            if let Some(l) = st.min_latency() {
                s.min_latency = Some(s.min_latency.map_or(l, |m: Duration| m.min(l)));
            }
            if let Some(r) = st.tcp_min_rtt() {
                s.path_rtt = Some(s.path_rtt.map_or(r, |m: Duration| m.min(r)));
            }
            if st.connected.load(std::sync::atomic::Ordering::Relaxed) {
                connected += 1;
                window_sum += st.window();
                held += u64::from(st.tcp_held());
                s.tcp_retrans += st.tcp_retrans();
                if let Some(r) = st.tcp_srtt() {
                    srtt_sum += r;
                    srtts += 1;
                }
            }
        }
        s.window_full =
            connected > 0 && s.inflight_records as f64 >= WINDOW_FULL_FRACTION * window_sum as f64;
        s.tcp_held = connected > 0 && 2 * held >= connected;
        s.tcp_srtt = (srtts > 0).then(|| srtt_sum / srtts);
        let total = self.auto.on_sample(&s);
        let share = total.div_ceil(connected.max(1)).clamp(1, self.per_conn_max);
        for st in states {
            st.set_window(share);
        }
    }
}

#[cfg(test)]
mod tests;
