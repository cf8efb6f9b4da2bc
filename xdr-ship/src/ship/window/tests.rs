//! `AutoWindow` as a pure state machine, driven by a simulated path: a FIFO
//! bottleneck, a propagation delay, answers in batches.

use super::*;

const TICK: Duration = CONTROL_TICK;
const RECORD_BYTES: u64 = 1000;
const BATCH_RECORDS: u64 = 64;

/// A path for the controller to drive: a FIFO bottleneck of `rate`
/// records/s, then `rtt` of propagation; every answer takes `extra`
/// longer than the fastest (the receiver, socket buffers). With `loss`,
/// it is one TCP connection: a batch with a lost record arrives a round
/// trip and a quarter late (the resend), and every batch behind it waits
/// for it (answers in order).
struct Path {
    rate: f64,
    rtt: Duration,
    extra: Duration,
    /// Records/s the source can give (`None`: as many as the window takes).
    source_rate: Option<f64>,
    /// A TCP in front of the bottleneck, still opening: its congestion
    /// window in records (`None`: no TCP limit) and its growth per round
    /// trip; what the window admits beyond it waits unsent in the socket.
    tcp_cwnd: Option<f64>,
    tcp_growth: f64,
    unsent: u64,
    now: Duration,
    link_free: f64,
    /// (answered at, sent at, records), in send order.
    flying: VecDeque<(Duration, Duration, u64)>,
    inflight: u64,
    delivered: u64,
    source_credit: f64,
    /// Probability that a record is lost (and resent).
    loss: f64,
    /// Batches resent so far (TCP's retransmissions).
    retrans: u64,
    /// The latest answer time handed out (answers come in order).
    last_answer: Duration,
    /// State of the loss draws (xorshift64).
    seed: u64,
}

impl Path {
    fn new(rate: f64, rtt_ms: u64) -> Self {
        Self {
            rate,
            rtt: Duration::from_millis(rtt_ms),
            extra: Duration::ZERO,
            source_rate: None,
            tcp_cwnd: None,
            tcp_growth: 2.0,
            unsent: 0,
            now: Duration::ZERO,
            link_free: 0.0,
            flying: VecDeque::new(),
            inflight: 0,
            delivered: 0,
            source_credit: 0.0,
            loss: 0.0,
            retrans: 0,
            last_answer: Duration::ZERO,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// A uniform draw in [0, 1), from a fixed seed: runs repeat exactly.
    fn draw(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Records the path needs in flight to be full.
    fn bdp(&self) -> f64 {
        self.rate * self.rtt.as_secs_f64()
    }

    /// One tick: answers what is due, sends what the window allows,
    /// shows the controller, applies its answer.
    fn tick(&mut self, w: &mut AutoWindow) {
        self.now += TICK;
        let mut min_latency: Option<Duration> = None;
        while self.flying.front().is_some_and(|f| f.0 <= self.now) {
            let (at, sent, n) = self.flying.pop_front().unwrap();
            self.delivered += n;
            self.inflight -= n;
            if let Some(c) = &mut self.tcp_cwnd {
                // Per answered record, cwnd grows by (growth − 1): × growth
                // per round trip, as slow start's doubling at 2.
                *c += n as f64 * (self.tcp_growth - 1.0);
            }
            let fastest = at - sent - self.extra;
            min_latency = Some(min_latency.map_or(fastest, |m| m.min(fastest)));
        }
        let mut room = w.window().saturating_sub(self.inflight);
        if let Some(r) = self.source_rate {
            let per_tick = r * TICK.as_secs_f64();
            self.source_credit = (self.source_credit + per_tick).min(2.0 * per_tick);
            room = room.min(self.source_credit as u64);
            self.source_credit -= room as f64;
        }
        // Admitted records wait in the socket until TCP's window has room.
        self.inflight += room;
        self.unsent += room;
        let mut room = match self.tcp_cwnd {
            Some(c) => {
                let flying = self.inflight - self.unsent;
                self.unsent.min((c as u64).saturating_sub(flying))
            }
            None => self.unsent,
        };
        self.unsent -= room;
        // Sent in batches, each answered when its last record is through.
        let now = self.now.as_secs_f64();
        while room > 0 {
            let n = room.min(BATCH_RECORDS);
            room -= n;
            self.link_free = self.link_free.max(now) + n as f64 / self.rate;
            let mut at = Duration::from_secs_f64(self.link_free) + self.rtt + self.extra;
            if self.loss > 0.0 {
                if self.draw() < 1.0 - (1.0 - self.loss).powf(n as f64) {
                    self.retrans += 1;
                    at += self.rtt + self.rtt / 4;
                }
                at = at.max(self.last_answer);
                self.last_answer = at;
            }
            self.flying.push_back((at, self.now, n));
        }
        w.on_sample(&Sample {
            at: self.now,
            delivered_records: self.delivered,
            delivered_bytes: self.delivered * RECORD_BYTES,
            inflight_records: self.inflight,
            inflight_bytes: self.inflight * RECORD_BYTES,
            min_latency,
            window_full: self.inflight as f64 >= WINDOW_FULL_FRACTION * w.window() as f64,
            path_rtt: Some(self.rtt),
            tcp_held: self.unsent >= BATCH_RECORDS,
            // TCP's RTT sees the bottleneck's queue, not the waits behind
            // a lost record (out-of-order data is acknowledged at once).
            tcp_srtt: Some(self.rtt + Duration::from_secs_f64((self.link_free - now).max(0.0))),
            tcp_retrans: self.retrans,
        });
    }

    /// Runs until `until`; returns the largest window seen.
    fn run_until(&mut self, w: &mut AutoWindow, until: Duration) -> u64 {
        let mut largest = w.window();
        while self.now < until {
            self.tick(w);
            largest = largest.max(w.window());
        }
        largest
    }

    /// Records answered per second over the next `span`.
    fn rate_over(&mut self, w: &mut AutoWindow, span: Duration) -> f64 {
        let d0 = self.delivered;
        let until = self.now + span;
        self.run_until(w, until);
        (self.delivered - d0) as f64 / span.as_secs_f64()
    }

    /// Time until the delivery rate over 100 ms first reaches `fraction` of the path's.
    fn time_to(&mut self, w: &mut AutoWindow, fraction: f64, give_up: Duration) -> Duration {
        let span = Duration::from_millis(100);
        while self.now < give_up {
            let start = self.now;
            if self.rate_over(w, span) >= fraction * self.rate {
                return start;
            }
        }
        panic!("the delivery rate never reached {fraction} of the path's by {give_up:?}");
    }
}

fn limits() -> Limits {
    Limits {
        start_records: 64,
        start_bytes: 0,
        min_records: 4,
        floor_records: 0,
        floor_bytes: 0,
        max_records: 1 << 22,
        max_inflight_bytes: u64::MAX,
    }
}

/// [`limits`] with the floor of 64 connections: one batch of 64 records,
/// at most 256 KB, each.
fn floored() -> Limits {
    Limits {
        floor_records: 64 * BATCH_RECORDS,
        floor_bytes: 64 * 256 * 1024,
        ..limits()
    }
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

#[test]
fn startup_doubles_the_window_every_round_trip_while_the_rate_grows() {
    // 100 ms, 100K records/s: 10K in flight needed, 64 at the start.
    let mut path = Path::new(100_000.0, 100);
    let mut w = AutoWindow::new(limits());
    path.run_until(&mut w, s(0.55));
    assert_eq!(w.phase(), Phase::Startup);
    // Five round trips (each a little over 100 ms): five doublings, ±1.
    assert!(
        (64 * 16..=64 * 64).contains(&w.window()),
        "window {} after 5 round trips",
        w.window()
    );
    let t = path.time_to(&mut w, 0.9, s(5.0));
    // ~7.3 doublings from 64 to 10K, one round to notice: ≤ 12 round trips.
    assert!(t <= s(1.2), "90% of the path's rate after {t:?}");
}

#[test]
fn the_window_stops_growing_once_the_rate_does() {
    let mut path = Path::new(100_000.0, 100);
    let mut w = AutoWindow::new(limits());
    let largest = path.run_until(&mut w, s(3.0));
    assert!(matches!(w.phase(), Phase::Cruise { .. }), "{:?}", w.phase());
    assert!(
        largest as f64 <= 4.0 * path.bdp(),
        "startup overshot to {largest} for a BDP of {}",
        path.bdp()
    );
    // Steady: within the cycle's gains of what the path needs, full rate,
    // once the first probe cycles have measured the answer time without
    // the queue Startup left (by ~3.7 s: Startup ends at ~1.2 s).
    path.run_until(&mut w, s(4.0));
    let mut seen = (u64::MAX, 0);
    for _ in 0..700 {
        path.tick(&mut w);
        seen = (seen.0.min(w.window()), seen.1.max(w.window()));
    }
    let (lo, hi) = (seen.0 as f64 / path.bdp(), seen.1 as f64 / path.bdp());
    assert!(
        lo >= 0.95 * DRAIN_GAIN && hi <= 1.05 * PROBE_GAIN,
        "steady window between {lo:.2} and {hi:.2} × BDP"
    );
    let rate = path.rate_over(&mut w, s(2.0));
    assert!(rate >= 0.95 * path.rate, "steady rate {rate:.0}");
}

#[test]
fn answers_slower_than_the_fastest_do_not_stall_startup() {
    // Every answer takes 60% longer than the fastest one: the old
    // controller's target (1.5 × acks/s × min latency) fell below the
    // window and growth stopped short of the line.
    let mut path = Path::new(50_000.0, 90);
    path.extra = Duration::from_millis(54);
    let mut w = AutoWindow::new(limits());
    let t = path.time_to(&mut w, 0.9, s(10.0));
    assert!(t <= s(2.5), "90% of the path's rate after {t:?}");
    path.run_until(&mut w, s(8.0));
    let rate = path.rate_over(&mut w, s(2.0));
    assert!(rate >= 0.9 * path.rate, "steady rate {rate:.0}");
}

#[test]
fn the_window_never_exceeds_its_configured_maximum() {
    let mut path = Path::new(100_000.0, 100);
    let mut w = AutoWindow::new(Limits {
        max_records: 2_000,
        ..limits()
    });
    let largest = path.run_until(&mut w, s(5.0));
    assert_eq!(largest, 2_000, "the cap binds (BDP 10K) and holds");
    assert_eq!(w.window(), 2_000);
}

#[test]
fn the_window_never_holds_more_bytes_than_configured() {
    let mut path = Path::new(100_000.0, 100);
    let max_bytes = 3_000 * RECORD_BYTES;
    let mut w = AutoWindow::new(Limits {
        max_inflight_bytes: max_bytes,
        ..limits()
    });
    let largest = path.run_until(&mut w, s(5.0));
    assert!(largest * RECORD_BYTES <= max_bytes, "{largest} records");
    assert!(
        largest * RECORD_BYTES >= max_bytes * 9 / 10,
        "{largest} records"
    );
}

#[test]
fn the_window_follows_a_rate_drop_down_and_a_rise_back_up() {
    let mut path = Path::new(20_000.0, 60);
    let mut w = AutoWindow::new(limits());
    path.run_until(&mut w, s(5.0));
    let before = path.bdp();
    path.rate = 5_000.0;
    path.run_until(&mut w, s(9.0));
    let low = w.window() as f64;
    assert!(
        low <= 0.5 * before,
        "window {low} 4 s after the rate fell to a quarter (BDP was {before})"
    );
    path.rate = 20_000.0;
    let t = path.time_to(&mut w, 0.9, s(15.0)) - s(9.0);
    assert!(t <= s(2.0), "back to 90% of the rate {t:?} after it rose");
    path.run_until(&mut w, s(14.0));
    let high = w.window() as f64;
    assert!(
        high >= 0.95 * DRAIN_GAIN * before,
        "window {high} 5 s after the rate rose back (BDP {before})"
    );
}

#[test]
fn a_source_slower_than_the_path_keeps_the_window_near_its_need() {
    let mut path = Path::new(100_000.0, 100);
    path.source_rate = Some(10_000.0);
    let mut w = AutoWindow::new(limits());
    let largest = path.run_until(&mut w, s(6.0));
    let need = 10_000.0 * 0.1;
    assert!(
        (largest as f64) <= 4.0 * need,
        "window grew to {largest} for a source needing {need}"
    );
    assert!(
        (w.window() as f64) <= 1.05 * PROBE_GAIN * need,
        "window {} for a need of {need}",
        w.window()
    );
    let rate = path.rate_over(&mut w, s(2.0));
    assert!(
        rate >= 0.95 * 10_000.0,
        "the source's rate is carried: {rate:.0}"
    );
}

#[test]
fn nothing_answered_leaves_the_window_where_it_is() {
    let mut w = AutoWindow::new(limits());
    for i in 1..100 {
        w.on_sample(&Sample {
            at: TICK * i,
            inflight_records: 64,
            window_full: true,
            ..Sample::default()
        });
    }
    assert_eq!(w.window(), 64);
    assert_eq!(w.phase(), Phase::Startup);
}

/// The first look of a pool of 64 connections that took `start` records
/// of `record_bytes` (encoded) each, nothing answered yet.
fn first_look(w: &mut AutoWindow, start: u64, record_bytes: u64) -> u64 {
    w.on_sample(&Sample {
        at: TICK,
        inflight_records: start,
        inflight_bytes: start * record_bytes,
        window_full: true,
        ..Sample::default()
    })
}

fn started_in_bytes() -> Limits {
    Limits {
        start_records: 64 * 64,
        start_bytes: 64 * 64 * 1024,
        ..limits()
    }
}

#[test]
fn large_records_start_with_the_same_bytes_in_flight_not_the_same_records() {
    let mut w = AutoWindow::new(started_in_bytes());
    assert_eq!(w.window(), 4096);
    // 64 KB records: 4 MiB is 64 of them, one per connection.
    assert_eq!(first_look(&mut w, 4096, 65_536), 64);
    assert_eq!(w.phase(), Phase::Startup);
}

#[test]
fn small_records_start_with_the_same_bytes_in_flight_not_the_same_records() {
    let mut w = AutoWindow::new(started_in_bytes());
    // 100-byte values, 128 bytes encoded: 4 MiB is 32,768 of them.
    assert_eq!(first_look(&mut w, 4096, 128), 32_768);
}

#[test]
fn the_start_in_bytes_stays_within_the_configured_maxima() {
    let mut w = AutoWindow::new(Limits {
        max_records: 10_000,
        ..started_in_bytes()
    });
    assert_eq!(first_look(&mut w, 4096, 128), 10_000);
    let mut w = AutoWindow::new(Limits {
        start_bytes: 0,
        max_inflight_bytes: 128 << 20,
        ..started_in_bytes()
    });
    // No byte start, but the byte cap binds before any answer: 128 MiB of
    // 64 KB records is 2,048, not the 4,096 of the start.
    assert_eq!(first_look(&mut w, 4096, 65_536), 2_048);
}

#[test]
fn once_answered_the_start_in_bytes_no_longer_resizes_the_window() {
    let mut w = AutoWindow::new(started_in_bytes());
    first_look(&mut w, 4096, 128);
    let after = w.on_sample(&Sample {
        at: TICK * 2,
        delivered_records: 100,
        delivered_bytes: 100 * 128,
        inflight_records: 40_000,
        inflight_bytes: 40_000 * 1_000,
        window_full: true,
        ..Sample::default()
    });
    assert_eq!(
        after, 32_768,
        "sized by the first look, not by later in-flight bytes"
    );
}

#[test]
fn a_full_window_is_the_limit_only_with_a_drained_socket() {
    assert!(socket_drained(0, 256 * 1024));
    assert!(!socket_drained(1 << 20, 256 * 1024));
}

#[test]
fn a_short_path_keeps_one_batch_per_connection_in_flight() {
    // 1 ms, 200K records/s: Little's law needs 200 records, the 64
    // connections' floor is 64 × 64 = 4096.
    let mut path = Path::new(200_000.0, 1);
    let mut w = AutoWindow::new(floored());
    path.run_until(&mut w, s(3.0));
    assert!(path.bdp() < 300.0, "the path needs {}", path.bdp());
    assert_eq!(w.window(), 64 * BATCH_RECORDS);
}

#[test]
fn a_long_path_needing_less_than_the_floor_gets_what_it_needs() {
    // 60 ms, 20K records/s: 1,200 records; a floor of 4,096 would queue
    // 140 ms behind every answer.
    let mut path = Path::new(20_000.0, 60);
    let mut w = AutoWindow::new(floored());
    path.run_until(&mut w, s(8.0));
    let window = w.window() as f64;
    assert!(
        window <= 2.0 * path.bdp(),
        "window {window} for a BDP of {}",
        path.bdp()
    );
}

#[test]
fn the_floor_counts_bytes_so_large_records_keep_a_small_one() {
    // Records of 64 KB: one 256 KB batch is 4 of them per connection.
    let mut w = AutoWindow::new(floored());
    for i in 1..200u64 {
        w.on_sample(&Sample {
            at: TICK * i as u32,
            delivered_records: i * 10,
            delivered_bytes: i * 10 * 65_536,
            inflight_records: 1,
            min_latency: Some(Duration::from_micros(100)),
            window_full: false,
            path_rtt: Some(Duration::from_micros(50)),
            ..Sample::default()
        });
    }
    assert_eq!(w.window(), 64 * 4);
}

#[test]
fn the_configured_maximum_wins_over_the_floor() {
    let mut path = Path::new(200_000.0, 1);
    let mut w = AutoWindow::new(Limits {
        floor_bytes: u64::MAX,
        max_records: 1_000,
        ..floored()
    });
    let largest = path.run_until(&mut w, s(2.0));
    assert_eq!(largest, 1_000);
}

#[test]
fn tcp_still_opening_does_not_end_startup() {
    // 250 ms, 80K records/s: 20K in flight needed. TCP opens from 1,000
    // records and grows 1.3× a round trip: in the first rounds it, not the
    // window, holds the records back (they wait unsent in the socket), and
    // the delivery rate grows by less than FULL_PIPE_GROWTH a round.
    let mut path = Path::new(80_000.0, 250);
    path.tcp_cwnd = Some(1000.0);
    path.tcp_growth = 1.3;
    let mut w = AutoWindow::new(limits());
    path.run_until(&mut w, s(3.0));
    assert_eq!(
        w.phase(),
        Phase::Startup,
        "Startup ended at {:.2} × BDP while TCP was still opening",
        w.window() as f64 / path.bdp()
    );
    let t = path.time_to(&mut w, 0.9, s(10.0));
    assert!(t <= s(4.5), "90% of the path's rate after {t:?}");
}

#[test]
fn a_tcp_holding_records_on_a_full_link_still_ends_startup() {
    // TCP's window stays at 1.5 BDP (BBR holds 2×): the link is full, and
    // the records beyond it wait in the socket for good.
    let mut path = Path::new(80_000.0, 250);
    path.tcp_cwnd = Some(1.5 * path.bdp());
    path.tcp_growth = 1.0;
    let mut w = AutoWindow::new(limits());
    let largest = path.run_until(&mut w, s(8.0));
    assert!(matches!(w.phase(), Phase::Cruise { .. }), "{:?}", w.phase());
    assert!(
        largest as f64 <= 4.0 * path.bdp(),
        "startup grew to {largest} for a BDP of {}",
        path.bdp()
    );
}

#[test]
fn one_lossy_connection_fills_the_path_despite_head_of_line_waits() {
    // The seed's link at 0.1% loss on one connection: a hole every ~10 ms
    // holds every answer behind it for a round trip and a quarter, so
    // answers take about twice the fastest one, and a window sized on the
    // drained round's answer time carries about half the line.
    let mut path = Path::new(100_000.0, 156);
    path.loss = 0.001;
    let mut w = AutoWindow::new(limits());
    path.run_until(&mut w, s(10.0));
    let rate = path.rate_over(&mut w, s(6.0));
    assert!(
        rate >= 0.9 * path.rate,
        "{rate:.0} records/s of {:.0} with answers behind lost records ({} resent)",
        path.rate,
        path.retrans
    );
}

#[test]
fn retransmissions_with_a_queue_in_the_network_are_not_head_of_line_waits() {
    let ms = Duration::from_millis;
    let round = Some(ms(320));
    let path = Some(ms(156));
    // TCP's RTT near its minimum: the extra answer time is waiting behind holes.
    assert_eq!(head_of_line_waits(round, Some(ms(170)), path, true), round);
    // TCP's RTT well above it: the network queues, as does the window.
    assert_eq!(head_of_line_waits(round, Some(ms(250)), path, true), None);
    // No loss in the round (or a queue in the sockets): nothing to believe.
    assert_eq!(head_of_line_waits(round, Some(ms(170)), path, false), None);
}

#[test]
fn a_queue_filling_in_the_network_ends_startup_before_it_overshoots() {
    // 250 ms, 80K records/s (the lab's 80 MB/s): 20K in flight needed.
    // Waiting for three flat rounds doubled on to 3.3 × that.
    let mut path = Path::new(80_000.0, 250);
    let mut w = AutoWindow::new(limits());
    let largest = path.run_until(&mut w, s(3.0));
    assert!(matches!(w.phase(), Phase::Cruise { .. }), "{:?}", w.phase());
    assert!(
        largest as f64 <= 2.0 * path.bdp(),
        "startup overshot to {largest} for a BDP of {}",
        path.bdp()
    );
    let rate = path.rate_over(&mut w, s(2.0));
    assert!(rate >= 0.95 * path.rate, "rate after startup {rate:.0}");
}

#[test]
fn a_few_ms_of_rtt_on_a_short_path_are_not_a_queue() {
    let ms = Duration::from_millis;
    // 10 ms path: 3 ms more is 30%, but scheduling, not a queue.
    assert!(!network_queue(Some(ms(13)), Some(ms(10))));
    assert!(network_queue(Some(ms(16)), Some(ms(10))));
    // 156 ms path: 10 ms more is 6%; 40 ms more is a queue.
    assert!(!network_queue(Some(ms(166)), Some(ms(156))));
    assert!(network_queue(Some(ms(196)), Some(ms(156))));
    // Nothing read yet: no verdict.
    assert!(!network_queue(None, Some(ms(156))));
    assert!(!network_queue(Some(ms(196)), None));
}

#[test]
fn the_answer_time_leaves_out_the_queue_tcp_sees_in_the_network() {
    let ms = Duration::from_millis;
    let path = Some(ms(156));
    // TCP's RTT 120 ms above its min: that much of the answers' 300 ms is
    // the line's queue, which the window must not keep.
    assert_eq!(beyond_network_queue(ms(300), Some(ms(276)), path), ms(180));
    // No queue by TCP's reckoning: the answers' own excess stays covered.
    assert_eq!(beyond_network_queue(ms(300), Some(ms(166)), path), ms(300));
    // Nothing read yet: the answer time as measured.
    assert_eq!(beyond_network_queue(ms(300), None, path), ms(300));
}
