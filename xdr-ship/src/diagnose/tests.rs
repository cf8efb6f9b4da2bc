//! One scenario per verdict class, built by hand: each connection behaves
//! the same way every second (a [`Flow`]), eleven samples a second apart
//! make a ten-second window.
use std::time::Duration;

use super::*;
use crate::{
    metrics::{ConnSnapshot, Counters, Latency, ShipSnapshot, TcpSample},
    probe::softirq::{CpuRate, SoftirqReport, SoftirqSource, VectorRate},
};

const MSS: u32 = 1448;
const RTT_US: u32 = 156_000;
/// 100 MB/s.
const LINK: u64 = 100_000_000;
const RECORD_BYTES: u64 = 1024;
const SAMPLES: u64 = 11;

/// One connection's steady behaviour, per second of wall time.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// Fractions of wall time (the chrono timers' rates).
    busy: f64,
    rwnd: f64,
    sndbuf: f64,
    acked_segs_per_s: u64,
    retrans_per_s: u32,
    /// Congestion window at the first and at the last sample.
    cwnd_from: u32,
    cwnd_to: u32,
    snd_wnd: u32,
    srtt_us: u32,
    min_rtt_us: u32,
    app_limited: bool,
    notsent: u32,
    unacked: u32,
    delivery_rate: u64,
    records_per_s: u64,
    window: u64,
    inflight: u64,
    window_limited: bool,
}

impl Flow {
    /// A healthy, network-limited connection at 10 MB/s.
    fn new() -> Self {
        Self {
            busy: 1.0,
            rwnd: 0.0,
            sndbuf: 0.0,
            acked_segs_per_s: 10_000_000 / u64::from(MSS),
            retrans_per_s: 0,
            cwnd_from: 1000,
            cwnd_to: 1000,
            snd_wnd: 16_000_000,
            srtt_us: RTT_US,
            min_rtt_us: RTT_US,
            app_limited: false,
            notsent: 1_000_000,
            unacked: 1000,
            delivery_rate: 10_000_000,
            records_per_s: 10_000_000 / RECORD_BYTES,
            window: 4096,
            inflight: 1500,
            window_limited: false,
        }
    }

    /// Carries `bytes_per_s` of records (and as many TCP segments).
    fn rate(mut self, bytes_per_s: u64) -> Self {
        self.records_per_s = bytes_per_s / RECORD_BYTES;
        self.acked_segs_per_s = bytes_per_s / u64::from(MSS);
        self.delivery_rate = bytes_per_s;
        self
    }

    fn at(&self, id: usize, k: u64) -> ConnSnapshot {
        let s = k as f64 * 1e6;
        let cwnd = i64::from(self.cwnd_from)
            + (i64::from(self.cwnd_to) - i64::from(self.cwnd_from)) * k as i64
                / (SAMPLES - 1) as i64;
        let delivered = self.records_per_s * k;
        ConnSnapshot {
            id,
            node: None,
            cookie: 1000 + id as u64,
            connected: true,
            inflight: self.inflight,
            inflight_bytes: self.inflight * RECORD_BYTES,
            window: self.window,
            acks_per_s: self.records_per_s as f64,
            bytes_per_s: (self.records_per_s * RECORD_BYTES) as f64,
            window_limited: self.window_limited,
            counters: Counters {
                shipped: delivered + self.inflight,
                success: delivered,
                acked_bytes: delivered * RECORD_BYTES,
                ..Counters::default()
            },
            tcp: Some(TcpSample {
                cwnd_segments: u32::try_from(cwnd).unwrap_or(0),
                ssthresh_segments: 0,
                mss_bytes: MSS,
                srtt_us: self.srtt_us,
                min_rtt_us: self.min_rtt_us,
                unacked_segments: self.unacked,
                snd_wnd_bytes: self.snd_wnd,
                rcv_wnd_bytes: 65_535,
                notsent_bytes: self.notsent,
                delivery_rate_bytes_per_s: self.delivery_rate,
                app_limited: self.app_limited,
                busy_us: (self.busy * s) as u64,
                rwnd_limited_us: (self.rwnd * s) as u64,
                sndbuf_limited_us: (self.sndbuf * s) as u64,
                total_retrans: self.retrans_per_s * k as u32,
                bytes_acked: self.acked_segs_per_s * u64::from(MSS) * k,
            }),
        }
    }
}

/// The shipper around the flows.
#[derive(Clone, Debug)]
struct World {
    flows: Vec<Flow>,
    p50_us: u64,
    p99_us: u64,
    outstanding: u64,
    link: LinkHints,
    softirq: Option<SoftirqReport>,
    device: Option<String>,
}

impl World {
    fn new(flows: Vec<Flow>) -> Self {
        Self {
            flows,
            p50_us: u64::from(RTT_US) + 1000,
            p99_us: u64::from(RTT_US) + 5000,
            outstanding: 50_000,
            link: LinkHints {
                rtt: None,
                bandwidth_bytes_per_s: Some(LINK),
            },
            softirq: None,
            device: None,
        }
    }

    fn sample(&self, k: u64) -> Sample {
        let mut ship = ShipSnapshot {
            elapsed_s: k as f64,
            destination: "frankfurt:3000".into(),
            mode: "ordered".into(),
            outstanding: self.outstanding,
            latency: Latency {
                samples: 1000,
                min_us: u64::from(RTT_US),
                p50_us: self.p50_us,
                p99_us: self.p99_us,
                p999_us: self.p99_us,
                max_us: self.p99_us,
            },
            ..ShipSnapshot::default()
        };
        for (id, f) in self.flows.iter().enumerate() {
            let c = f.at(id, k);
            ship.throughput += c.acks_per_s;
            ship.bytes_per_s += c.bytes_per_s;
            ship.inflight += c.inflight;
            ship.inflight_bytes += c.inflight_bytes;
            ship.connected += 1;
            ship.counters.add(&c.counters);
            ship.connections.push(c);
        }
        Sample {
            at: Duration::from_secs(k),
            ship,
            softirq: (k > 0).then(|| self.softirq.clone()).flatten(),
            link: self.link,
            kernel: Vec::new(),
            owners: Vec::new(),
            device: self.device.clone(),
        }
    }

    fn diagnose(&self) -> Diagnosis {
        let mut d = Diagnoser::new(Duration::from_secs(10));
        for k in 0..SAMPLES {
            d.push(self.sample(k));
        }
        let diagnosis = d.verdict().expect("eleven samples give a verdict");
        assert_sane(&diagnosis);
        diagnosis
    }
}

/// Shares add up to 100% (±0.1) and no figure is NaN or infinite.
fn assert_sane(d: &Diagnosis) {
    for v in std::iter::once(&d.shipper).chain(&d.connections) {
        let sum: f64 = v.shares.iter().map(|(_, p)| p).sum();
        assert!((sum - 100.0).abs() <= 0.1, "shares add up to {sum}: {v:?}");
        assert!(
            v.shares.iter().all(|(_, p)| p.is_finite() && *p > 0.0),
            "{v:?}"
        );
        assert!(v.observed.bytes_per_s.is_finite() && v.observed.records_per_s.is_finite());
        for c in &v.ceilings {
            assert!(c.bytes_per_s.is_finite() && c.bytes_per_s > 0.0, "{c:?}");
            assert!(c.records_per_s.is_none_or(f64::is_finite), "{c:?}");
        }
        assert!(
            !v.remedy.contains("NaN") && !v.remedy.contains("inf"),
            "{}",
            v.remedy
        );
    }
}

fn softirq(loads: &[(f64, f64)]) -> SoftirqReport {
    SoftirqReport {
        unix_time_s: 0.0,
        source: SoftirqSource::Ebpf,
        fallback_reason: None,
        interval_ms: 1000.0,
        cpus: loads
            .iter()
            .enumerate()
            .map(|(cpu, (total, net_rx))| CpuRate {
                cpu,
                total_pct: *total,
                vectors: vec![VectorRate {
                    name: "NET_RX".into(),
                    runs_per_s: 10_000.0,
                    time_pct: Some(*net_rx),
                }],
            })
            .collect(),
    }
}

/// The shipper's verdict is `limit`, with (all but rounding of) the whole
/// window's time.
fn assert_all_of_the_time(d: &Diagnosis, limit: Limit) {
    assert_eq!(d.shipper.limit, limit, "{}", d.report());
    assert!(d.shipper.share(limit) > 99.9, "{:?}", d.shipper.shares);
}

fn has_evidence(v: &Verdict, needle: &str) -> bool {
    v.evidence.iter().any(|e| e.text.contains(needle))
}

#[test]
fn a_full_link_is_bandwidth() {
    let mut flow = Flow::new().rate(99_328_000);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    let d = World::new(vec![flow]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Bandwidth, "{}", d.report());
    assert!(v.share(Limit::Bandwidth) > 99.9, "{:?}", v.shares);
    assert!(
        v.remedy.contains(
            "the link is full at 99.3 MB/s (of 100.0 MB/s): more bandwidth, or --compress"
        ),
        "{}",
        v.remedy
    );
    assert!(has_evidence(v, "+24.0ms queued"), "{}", d.report());
}

#[test]
fn a_peer_window_below_the_bdp_is_the_receiver_window() {
    let mut flow = Flow::new().rate(19_230_000);
    flow.rwnd = 0.6;
    flow.snd_wnd = 3_000_000;
    let d = World::new(vec![flow]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::ReceiverWindow, "{}", d.report());
    assert!((v.share(Limit::ReceiverWindow) - 60.0).abs() < 0.01);
    assert_eq!(d.bdp_bytes, Some(15_600_000));
    assert!(v.remedy.contains("≥ 15.6 MB"), "{}", v.remedy);
    assert!(
        v.remedy.contains("sysctl -w net.core.rmem_max=15600000"),
        "{}",
        v.remedy
    );
    assert!(
        has_evidence(v, "rwnd-limited 60% of the time; peer window 3.0 MB"),
        "{}",
        d.report()
    );
}

#[test]
fn in_flight_pinned_at_the_peer_window_is_the_receiver_window_even_when_the_timer_undercounts() {
    let mut flow = Flow::new().rate(1_000_000);
    flow.rwnd = 0.4;
    flow.snd_wnd = 41_000;
    flow.unacked = 28; // 28 × 1448 B = 40.5 KB in flight
    let d = World::new(vec![flow]).diagnose();
    assert_all_of_the_time(&d, Limit::ReceiverWindow);
}

#[test]
fn a_peer_window_far_under_the_cwnd_is_the_receiver_window_though_in_flight_is_below_it() {
    // The lab's 32 KiB receive buffer: the kernel's timer saw 48%, and at
    // the samples in flight sat under 90% of a peer window a fifth of cwnd.
    let mut flow = Flow::new().rate(1_500_000);
    flow.rwnd = 0.48;
    flow.snd_wnd = 36_000;
    flow.cwnd_from = 120;
    flow.cwnd_to = 120;
    flow.unacked = 20; // 29 KB in flight, 80% of the peer's window
    let d = World::new(vec![flow]).diagnose();
    assert_all_of_the_time(&d, Limit::ReceiverWindow);
}

#[test]
fn a_peer_window_near_the_cwnd_leaves_the_sending_time_to_the_network() {
    // A full link: BBR's cwnd and the peer's window close, either a little
    // the smaller; in flight under 90% of the peer's window.
    let mut flow = Flow::new().rate(99_328_000);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    flow.snd_wnd = 1_300_000; // cwnd 1000 × 1448 B = 1.45 MB
    flow.unacked = 600; // 869 KB in flight, 67% of the peer's window
    let d = World::new(vec![flow]).diagnose();
    assert_all_of_the_time(&d, Limit::Bandwidth);
}

#[test]
fn a_full_send_buffer_is_the_sender_buffer() {
    let mut flow = Flow::new().rate(20_000_000);
    flow.sndbuf = 0.7;
    flow.unacked = 2000;
    flow.notsent = 2_000_000;
    let d = World::new(vec![flow]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::SenderBuffer, "{}", d.report());
    assert!((v.share(Limit::SenderBuffer) - 70.0).abs() < 0.01);
    assert!(
        v.remedy.contains("≥ 15.6 MB") && v.remedy.contains("sysctl -w net.core.wmem_max=15600000"),
        "{}",
        v.remedy
    );
}

#[test]
fn retransmits_with_a_collapsing_cwnd_are_loss_with_the_mathis_bound() {
    let mut flow = Flow::new();
    flow.acked_segs_per_s = 98;
    flow.retrans_per_s = 2; // 2 of 100 segments: p = 2%
    flow.cwnd_from = 40;
    flow.cwnd_to = 10;
    flow.records_per_s = 138;
    flow.delivery_rate = 142_000;
    let d = World::new(vec![flow]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Loss, "{}", d.report());
    assert!(v.share(Limit::Loss) > 99.9, "{:?}", v.shares);
    // 1448 B / (0.156 s · √0.02) · √1.5 = 80.4 KB/s.
    assert!(
        has_evidence(
            v,
            "Mathis bound MSS/(RTT·√p)·1.22 = 1448 B/(156.0ms·√0.0200)·1.22 = 80.4 KB/s"
        ),
        "{}",
        d.report()
    );
    assert!(
        v.remedy
            .contains("the path is lossy: 2.0% loss caps a loss-based TCP at 80.4 KB/s"),
        "{}",
        v.remedy
    );
    // 100 MB/s ÷ 80.38 KB/s per connection.
    assert!(v.remedy.contains("--connections ≥ 1245"), "{}", v.remedy);
}

#[test]
fn retransmits_without_a_cwnd_cut_stay_bandwidth() {
    // BBR: 2% loss, window steady, rate far above what loss would allow.
    let mut flow = Flow::new().rate(90_000_000);
    flow.retrans_per_s = (flow.acked_segs_per_s / 49) as u32;
    let d = World::new(vec![flow]).diagnose();
    assert_eq!(d.shipper.limit, Limit::Bandwidth, "{}", d.report());
    assert_eq!(d.shipper.share(Limit::Loss), 0.0);
}

#[test]
fn drops_from_an_overflowing_queue_are_bandwidth_not_loss() {
    // Cut windows and retransmits, but srtt is twice min_rtt: a full
    // tail-drop queue at the bottleneck, not a lossy path.
    let mut flow = Flow::new();
    flow.acked_segs_per_s = 98;
    flow.retrans_per_s = 2;
    flow.cwnd_from = 40;
    flow.cwnd_to = 10;
    flow.records_per_s = 138;
    flow.srtt_us = 2 * RTT_US;
    let d = World::new(vec![flow]).diagnose();
    assert_eq!(d.shipper.limit, Limit::Bandwidth, "{}", d.report());
    assert_eq!(d.shipper.share(Limit::Loss), 0.0, "{}", d.report());
}

#[test]
fn one_cpu_drowning_in_net_rx_is_interrupts() {
    let mut w = World::new(vec![Flow::new().rate(20_000_000); 2]);
    w.softirq = Some(softirq(&[(92.0, 92.0), (5.0, 1.0)]));
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Interrupts, "{}", d.report());
    assert!(v.share(Limit::Interrupts) > 99.9, "{:?}", v.shares);
    assert!(
        v.headline
            .contains("CPU 0 in softirq 92% (NET_RX 92%) while the other CPUs' median is 5.0%"),
        "{}",
        v.headline
    );
    assert!(
        v.remedy.contains("echo 3 > /sys/class/net/"),
        "{}",
        v.remedy
    );
    assert!(v.remedy.contains("irqbalance"), "{}", v.remedy);
}

#[test]
fn the_interrupts_remedy_names_the_device_the_flows_use() {
    let mut w = World::new(vec![Flow::new().rate(20_000_000); 2]);
    w.softirq = Some(softirq(&[(92.0, 92.0), (5.0, 1.0)]));
    w.device = Some("eth1".to_owned());
    let v = w.diagnose().shipper;
    assert!(
        v.remedy
            .contains("for q in /sys/class/net/eth1/queues/rx-*; do echo 3 > $q/rps_cpus; done"),
        "{}",
        v.remedy
    );
}

#[test]
fn a_link_far_from_full_without_a_queue_is_not_called_full() {
    let d = World::new(vec![Flow::new().rate(30_000_000)]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Bandwidth, "{}", d.report());
    assert!(!v.remedy.contains("the link is full"), "{}", v.remedy);
    assert!(
        v.remedy
            .contains("holds the rate at 30.0 MB/s, 30% of the 100.0 MB/s link, with no queue"),
        "{}",
        v.remedy
    );
}

#[test]
fn a_busy_cpu_does_not_take_the_blame_from_a_full_link() {
    let mut w = World::new(vec![Flow::new().rate(95_000_000)]);
    w.softirq = Some(softirq(&[(92.0, 92.0), (5.0, 1.0)]));
    let d = w.diagnose();
    assert_eq!(d.shipper.limit, Limit::Bandwidth, "{}", d.report());
}

#[test]
fn every_cpu_busy_is_not_interrupts() {
    let mut w = World::new(vec![Flow::new().rate(20_000_000)]);
    w.softirq = Some(softirq(&[(92.0, 92.0), (60.0, 50.0), (70.0, 60.0)]));
    let d = w.diagnose();
    assert_eq!(d.shipper.share(Limit::Interrupts), 0.0, "{}", d.report());
}

#[test]
fn a_small_window_is_application_with_the_littles_law_window() {
    let mut flow = Flow::new();
    flow.window = 16;
    flow.inflight = 16;
    flow.window_limited = true;
    flow.app_limited = true;
    flow.notsent = 0;
    flow.unacked = 12;
    flow.records_per_s = 103; // 16 records per 156 ms
    flow.acked_segs_per_s = 103 * RECORD_BYTES / u64::from(MSS);
    flow.delivery_rate = 105_000;
    let d = World::new(vec![flow; 4]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    assert!(v.share(Limit::Application) > 99.9, "{:?}", v.shares);
    // 100 MB/s ÷ 1024 B = 97656 records/s; × 0.156 s = 15234 in flight;
    // ÷ 4 connections = 3809 each, or 953 connections of 16.
    assert!(
        v.remedy.contains(
            "raise --window to ≥ 3809 per connection (97656 records/s × 156.0ms ÷ 4 connections, Little's law)"
        ),
        "{}",
        v.remedy
    );
    assert!(
        v.remedy
            .contains("--connections to ≥ 953 at a window of 16"),
        "{}",
        v.remedy
    );
}

/// A connection of a pool whose fixed window of 16 records is full.
fn small_window_flow() -> Flow {
    let mut flow = Flow::new();
    flow.window = 16;
    flow.inflight = 16;
    flow.window_limited = true;
    flow.app_limited = true;
    flow.notsent = 0;
    flow.unacked = 12;
    flow.records_per_s = 103; // 16 records per 156 ms
    flow.acked_segs_per_s = 103 * RECORD_BYTES / u64::from(MSS);
    flow.delivery_rate = 105_000;
    flow
}

/// The world's samples, the last one the pool closing at the end of a run:
/// only `up` connections still up, nothing in flight.
fn ending_in_the_pools_drain(w: &World, up: usize) -> Diagnosis {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..SAMPLES - 1 {
        d.push(w.sample(k));
    }
    let mut last = w.sample(SAMPLES - 1);
    for c in &mut last.ship.connections {
        c.inflight = 0;
        c.inflight_bytes = 0;
    }
    for c in last.ship.connections.iter_mut().skip(up) {
        c.connected = false;
        c.cookie = 0;
        c.tcp = None;
    }
    last.ship.connected = up;
    last.ship.inflight = 0;
    last.ship.inflight_bytes = 0;
    d.push(last);
    let diagnosis = d.verdict().expect("eleven samples give a verdict");
    assert_sane(&diagnosis);
    diagnosis
}

#[test]
fn the_in_flight_figures_are_the_runs_not_the_pools_drain_at_the_end() {
    let w = World::new(vec![small_window_flow(); 64]);
    let d = ending_in_the_pools_drain(&w, 5);
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    // 16 records of 1024 B on each of 64 connections, as in every sample
    // but the drain; the BDP (100 MB/s × 156 ms) shared by the same 64.
    assert!(
        v.headline.contains(
            "in flight 16 records (16.4 KB) per connection × 64 connections = 1024 records \
             ≪ BDP 15.6 MB ÷ 64 connections = 243.8 KB"
        ),
        "{}",
        v.headline
    );
    assert!(
        has_evidence(v, "per connection × 64 connections = 1024 records"),
        "{}",
        d.report()
    );
    assert!(v.remedy.contains("÷ 64 connections"), "{}", v.remedy);
    let conn = d.connection(3).expect("connection 3");
    assert!(
        conn.headline
            .contains("in flight 16 records (16.4 KB) on this connection"),
        "{}",
        conn.headline
    );
}

#[test]
fn per_connection_in_flight_times_connections_is_the_pools_in_flight() {
    let mut flows = vec![small_window_flow(); 8];
    for (i, f) in flows.iter_mut().enumerate() {
        f.inflight = 10 + 2 * i as u64; // 10, 12, … 24: 136 in all
        f.window = f.inflight;
    }
    let w = World::new(flows);
    let pool_inflight = w.sample(1).ship.inflight;
    let d = ending_in_the_pools_drain(&w, 2);
    let v = &d.shipper;
    // 136 ÷ 8 = 17 per connection.
    assert_eq!(pool_inflight, 136);
    assert!(
        v.headline.contains(
            "in flight 17 records (17.4 KB) per connection × 8 connections = 136 records"
        ),
        "{}",
        v.headline
    );
}

/// A connection of a pool whose fixed window of 16 records is full while
/// TCP's app-limited flag is clear, as in half the intervals of the lab's
/// `--window 16` run across 90 ms: the flag marks only the last ACK's
/// rate sample, and only if the last write left under a segment unsent
/// (here a record or two wait for a full segment). TCP's cwnd has room
/// and no queue builds.
fn full_fixed_window_unflagged() -> Flow {
    let mut flow = small_window_flow();
    flow.app_limited = false;
    flow.notsent = 2 * RECORD_BYTES as u32;
    flow.cwnd_from = 4 * flow.unacked;
    flow.cwnd_to = flow.cwnd_from;
    flow.srtt_us = RTT_US + RTT_US / 16;
    flow
}

#[test]
fn a_full_fixed_window_is_the_application_even_when_tcp_does_not_flag_it() {
    let flows = 64;
    let mut w = World::new(vec![full_fixed_window_unflagged(); flows]);
    w.link.bandwidth_bytes_per_s = None;
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    assert!(v.share(Limit::Application) > 99.9, "{:?}", v.shares);
    let f = full_fixed_window_unflagged();
    let pool = f.inflight * flows as u64;
    assert!(
        v.headline.starts_with(&format!(
            "window full: in flight {} records ({}) per connection × {flows} connections = \
             {pool} records",
            f.inflight,
            crate::units::bytes((f.inflight * RECORD_BYTES) as f64)
        )),
        "{}",
        v.headline
    );
    assert!(
        v.remedy.contains(&format!(
            "raise --window to ≥ {} per connection",
            2 * f.window
        )),
        "{}",
        v.remedy
    );
    assert!(
        v.remedy.contains("or leave --window out"),
        "a fixed window is the operator's: {}",
        v.remedy
    );
    assert!(
        d.connections.iter().all(|c| c.limit == Limit::Application),
        "{}",
        d.report()
    );
}

#[test]
fn a_full_window_that_moves_is_not_called_fixed() {
    // The auto window resizes every round: its remedy does not tell the
    // operator to leave out a --window they never gave.
    let mut w = World::new(vec![full_fixed_window_unflagged(); 4]);
    w.link.bandwidth_bytes_per_s = None;
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..SAMPLES {
        let mut s = w.sample(k);
        for c in &mut s.ship.connections {
            c.window += k % 2;
            c.inflight = c.window;
        }
        d.push(s);
    }
    let v = d.verdict().expect("a verdict").shipper;
    assert_eq!(v.limit, Limit::Application, "{v:?}");
    assert!(!v.remedy.contains("leave --window out"), "{}", v.remedy);
}

#[test]
fn a_full_window_with_bytes_waiting_in_the_socket_is_not_blamed_on_the_window() {
    // The same full window, but TCP holds a megabyte it has not sent:
    // TCP, not the application, is what waits.
    let mut flow = full_fixed_window_unflagged();
    flow.notsent = 1_000_000;
    let mut w = World::new(vec![flow; 4]);
    w.link.bandwidth_bytes_per_s = None;
    let d = w.diagnose();
    assert_eq!(d.shipper.share(Limit::Application), 0.0, "{}", d.report());
}

/// When intake ends in [`ending_in_the_runs_drain`]: this long before the
/// first sample of the drain.
const INTAKE_ENDS_BEFORE_S: f64 = 0.8;

/// The world's samples, the run's intake ending [`INTAKE_ENDS_BEFORE_S`]
/// before the `drained`-th sample from the end: from then on the shipper
/// sends nothing new and waits for its last answers, TCP idle (the window
/// not full, nothing unsent); at the last sample every connection has
/// closed.
fn ending_in_the_runs_drain(w: &World, drained: usize) -> Vec<Sample> {
    let mut samples: Vec<Sample> = (0..SAMPLES).map(|k| w.sample(k)).collect();
    let n = samples.len();
    let before = samples[n - drained - 1].clone();
    for (i, s) in samples[n - drained..].iter_mut().enumerate() {
        let last = i + 1 == drained;
        s.ship.drain_s = Some(INTAKE_ENDS_BEFORE_S + i as f64);
        s.ship.inflight = 0;
        s.ship.inflight_bytes = 0;
        s.ship.counters = before.ship.counters;
        for (c, was) in s.ship.connections.iter_mut().zip(&before.ship.connections) {
            c.inflight = 0;
            c.inflight_bytes = 0;
            c.window_limited = false;
            c.counters = was.counters;
            c.tcp = was.tcp.map(|mut t| {
                t.app_limited = true;
                t.notsent_bytes = 0;
                t
            });
            if last {
                c.connected = false;
                c.cookie = 0;
                c.tcp = None;
            }
        }
        if last {
            s.ship.connected = 0;
        }
    }
    samples
}

fn judged(samples: impl IntoIterator<Item = Sample>) -> Diagnosis {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in samples {
        d.push(s);
    }
    let diagnosis = d.verdict().expect("samples spanning time give a verdict");
    assert_sane(&diagnosis);
    diagnosis
}

#[test]
fn the_runs_drain_is_left_out_of_the_shares_and_named() {
    let flows = 4;
    let mut flow = Flow::new().rate(LINK * 99 / 100 / flows);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    let drained = 2;
    let d = judged(ending_in_the_runs_drain(
        &World::new(vec![flow; flows as usize]),
        drained,
    ));
    for v in std::iter::once(&d.shipper).chain(&d.connections) {
        assert_eq!(v.limit, Limit::Bandwidth, "{}", d.report());
        assert_eq!(v.shares, vec![(Limit::Bandwidth, 100.0)], "{}", d.report());
    }
    let drain = crate::units::secs(INTAKE_ENDS_BEFORE_S + (drained - 1) as f64);
    assert!(
        has_evidence(
            &d.shipper,
            &format!("the run's end: intake ended {drain} before the last sample")
        ),
        "{}",
        d.report()
    );
}

#[test]
fn the_runs_drain_does_not_dilute_the_in_flight_figures() {
    let flows = 8;
    // Most of the window is the drain: medians over all of it would be
    // the drain's (nothing in flight, connections closing).
    let w = World::new(vec![small_window_flow(); flows]);
    let d = judged(ending_in_the_runs_drain(&w, SAMPLES as usize / 2 + 1));
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    let f = small_window_flow();
    assert!(
        v.headline.contains(&format!(
            "in flight {} records ({}) per connection × {flows} connections = {} records",
            f.inflight,
            crate::units::bytes((f.inflight * RECORD_BYTES) as f64),
            f.inflight * flows as u64
        )),
        "{}",
        v.headline
    );
}

#[test]
fn a_window_of_nothing_but_the_drain_says_the_run_is_ending() {
    let drained = 2;
    let samples = ending_in_the_runs_drain(&World::new(vec![Flow::new(); 2]), drained);
    let n = samples.len();
    let d = judged(samples.into_iter().skip(n - drained));
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Idle, "{}", d.report());
    assert!(
        v.headline.starts_with(&format!(
            "the run is ending: intake ended {} ago",
            crate::units::secs(INTAKE_ENDS_BEFORE_S + (drained - 1) as f64)
        )),
        "{}",
        v.headline
    );
    assert_eq!(v.share(Limit::Unknown), 0.0, "{}", d.report());
}

#[test]
fn a_slow_source_is_application_with_nothing_to_change() {
    let mut flow = Flow::new().rate(1_024_000);
    flow.busy = 0.2;
    flow.app_limited = true;
    flow.notsent = 0;
    let mut w = World::new(vec![flow]);
    w.outstanding = 0;
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    assert!(
        v.remedy
            .contains("the source is the limit: it offers 1000 records/s"),
        "{}",
        v.remedy
    );
}

#[test]
fn a_full_window_with_slow_answers_is_the_destination() {
    let mut flow = Flow::new().rate(1_000_000);
    flow.busy = 0.1;
    flow.window = 512;
    flow.inflight = 512;
    flow.window_limited = true;
    flow.app_limited = true;
    flow.notsent = 0;
    let mut w = World::new(vec![flow; 2]);
    w.p50_us = 2_000_000;
    w.p99_us = 2_500_000;
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Destination, "{}", d.report());
    assert!(v.share(Limit::Destination) > 99.9, "{:?}", v.shares);
    assert!(
        v.remedy.contains(
            "the receiver is the limit: it answers at p50 2.00s / p99 2.50s against a 156.0ms round trip"
        ),
        "{}",
        v.remedy
    );
    assert!(v.remedy.contains("--mode unordered"), "{}", v.remedy);
}

#[test]
fn slow_answers_explained_by_our_own_unsent_bytes_are_not_the_destination() {
    // Answers take 2 s, but 2 MB wait unsent in our socket at 1 MB/s: the
    // time is spent on this side of the link, not at the receiver.
    let mut flow = Flow::new().rate(1_000_000);
    flow.busy = 0.1;
    flow.window = 512;
    flow.inflight = 512;
    flow.window_limited = true;
    flow.app_limited = true;
    flow.notsent = 2_000_000;
    let mut w = World::new(vec![flow; 2]);
    w.p50_us = 2_000_000;
    w.p99_us = 2_500_000;
    let d = w.diagnose();
    assert_eq!(d.shipper.share(Limit::Destination), 0.0, "{}", d.report());
}

#[test]
fn no_samples_give_no_verdict() {
    assert!(Diagnoser::new(Duration::from_secs(10)).verdict().is_none());
}

#[test]
fn one_sample_gives_no_verdict() {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    d.push(World::new(vec![Flow::new()]).sample(3));
    assert!(d.verdict().is_none());
}

#[test]
fn an_idle_shipper_is_idle_without_nan() {
    let mut flow = Flow::new().rate(0);
    flow.busy = 0.0;
    flow.inflight = 0;
    flow.unacked = 0;
    flow.notsent = 0;
    let mut w = World::new(vec![flow; 2]);
    w.outstanding = 0;
    let d = w.diagnose();
    assert_eq!(d.shipper.limit, Limit::Idle);
    assert_eq!(d.shipper.shares, vec![(Limit::Idle, 100.0)]);
    assert!(d.connections.iter().all(|c| c.limit == Limit::Idle));
    let json = serde_json::to_string(&d).expect("serialises");
    assert!(!json.contains("NaN"), "{json}");
    assert!(!d.report().contains("NaN"), "{}", d.report());
}

#[test]
fn an_empty_pool_is_unknown_not_a_panic() {
    let mut w = World::new(Vec::new());
    w.outstanding = 10;
    let d = w.diagnose();
    assert_eq!(d.shipper.limit, Limit::Unknown);
    assert!(d.connections.is_empty());
}

#[test]
fn per_connection_verdicts_differ_when_one_connection_is_rwnd_limited() {
    let mut limited = Flow::new().rate(6_000_000);
    limited.rwnd = 0.6;
    limited.snd_wnd = 1_000_000;
    limited.unacked = 300; // 434 KB in flight: the peer window is not pinned
    let d = World::new(vec![limited, Flow::new(), Flow::new()]).diagnose();
    let conn = |id| d.connection(id).expect("connection present");
    assert_eq!(conn(0).limit, Limit::ReceiverWindow, "{}", d.report());
    assert_eq!(conn(1).limit, Limit::Bandwidth, "{}", d.report());
    assert_eq!(conn(2).limit, Limit::Bandwidth, "{}", d.report());
    // Three connections share the 15.6 MB BDP: 5.2 MB each.
    assert!(
        conn(0)
            .remedy
            .contains("sysctl -w net.core.rmem_max=5200000"),
        "{}",
        conn(0).remedy
    );
    // The shipper's shares are connection-time: 60% of one of three.
    assert!((d.shipper.share(Limit::ReceiverWindow) - 20.0).abs() < 0.01);
}

#[test]
fn a_reconnect_in_the_window_is_unknown_time_not_garbage() {
    let w = World::new(vec![Flow::new()]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..SAMPLES {
        let mut s = w.sample(k);
        if k >= 6 {
            // A new socket: new cookie, its timers start again from zero.
            let c = &mut s.ship.connections[0];
            c.cookie = 77;
            let fresh = Flow::new().at(0, k - 6);
            c.tcp = fresh.tcp;
        }
        d.push(s);
    }
    let diagnosis = d.verdict().expect("verdict");
    assert_sane(&diagnosis);
    assert!((diagnosis.shipper.share(Limit::Unknown) - 10.0).abs() < 0.01);
    assert_eq!(diagnosis.shipper.limit, Limit::Bandwidth);
}

#[test]
fn memory_stays_bounded_by_the_window() {
    let w = World::new(vec![Flow::new()]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..100 {
        d.push(w.sample(k));
    }
    // The window's ten seconds plus the sample at its start.
    assert_eq!(d.len(), 11);
}

#[test]
fn memory_stays_bounded_by_max_samples_however_fast_samples_come() {
    let template = World::new(vec![Flow::new()]).sample(0);
    let mut d = Diagnoser::new(Duration::from_secs(3600));
    for k in 0..(MAX_SAMPLES as u64 + 500) {
        let mut s = template.clone();
        s.at = Duration::from_millis(k);
        d.push(s);
    }
    assert_eq!(d.len(), MAX_SAMPLES);
}

#[test]
fn time_going_backwards_starts_a_new_window() {
    let w = World::new(vec![Flow::new()]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 5..10 {
        d.push(w.sample(k));
    }
    d.push(w.sample(1));
    assert_eq!(d.len(), 1);
    assert!(d.verdict().is_none());
}

#[test]
fn a_sample_round_trips_through_a_versioned_json_line() {
    let mut w = World::new(vec![Flow::new(); 2]);
    w.softirq = Some(softirq(&[(92.0, 92.0), (5.0, 1.0)]));
    w.link.rtt = Some(Duration::from_millis(156));
    let sample = w.sample(4);
    let line = sample.to_json_line().expect("serialises");
    assert!(line.starts_with(r#"{"v":1,"#), "{line}");
    assert!(line.contains(r#""at_s":4.0"#), "{line}");
    assert!(line.contains(r#""rtt_us":156000"#), "{line}");
    assert!(!line.contains('\n'));
    assert_eq!(Sample::from_json_line(&line).expect("parses"), sample);
}

#[test]
fn a_json_line_of_another_version_is_refused() {
    let line = World::new(vec![Flow::new()])
        .sample(1)
        .to_json_line()
        .expect("serialises")
        .replacen(r#""v":1"#, r#""v":2"#, 1);
    match Sample::from_json_line(&line) {
        Err(DiagnoseError::Version { found: 2, .. }) => {}
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(matches!(
        Sample::from_json_line(r#"{"at_s":1.0}"#),
        Err(DiagnoseError::NoVersion)
    ));
}

#[test]
fn the_one_line_verdict_names_limit_share_figure_and_fix() {
    let mut flow = Flow::new().rate(19_230_000);
    flow.rwnd = 0.6;
    flow.snd_wnd = 3_000_000;
    let d = World::new(vec![flow]).diagnose();
    let line = d.shipper.to_string();
    assert!(
        line.starts_with(
            "limit: receiver window (60%) — peer window 3.0 MB < BDP 15.6 MB → raise the receiver's"
        ),
        "{line}"
    );
    assert!(
        line.ends_with("sysctl -w net.core.rmem_max=15600000"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn the_report_lists_shares_evidence_ceilings_and_each_connection() {
    let mut limited = Flow::new().rate(6_000_000);
    limited.rwnd = 0.6;
    limited.snd_wnd = 1_000_000;
    limited.unacked = 300; // 434 KB in flight: the peer window is not pinned
    let report = World::new(vec![limited, Flow::new(), Flow::new()])
        .diagnose()
        .report();
    assert!(
        report.starts_with("window 10.00s (11 samples)\nshipper: limit: "),
        "{report}"
    );
    assert!(
        report.contains("  shares: bandwidth 80% · receiver window 20%"),
        "{report}"
    );
    assert!(
        report.contains("RTT 156.0ms (min_rtt of the connections); BDP 15.6 MB"),
        "{report}"
    );
    assert!(report.contains("ceilings (tightest first):"), "{report}");
    assert!(report.contains("link (--link-rate)"), "{report}");
    // Connections are grouped by their limit, the largest group first.
    assert!(
        report.contains("\n  bandwidth (100%): conns 1–2 — e.g. "),
        "{report}"
    );
    assert!(
        report.contains("\n  receiver window (60%): conn 0 — e.g. "),
        "{report}"
    );
}

#[test]
fn ceilings_are_tightest_first_in_bytes_and_records() {
    let mut flow = Flow::new().rate(19_230_000);
    flow.rwnd = 0.6;
    flow.snd_wnd = 3_000_000;
    let d = World::new(vec![flow]).diagnose();
    let c = &d.shipper.ceilings;
    assert!(
        c.windows(2).all(|w| w[0].bytes_per_s <= w[1].bytes_per_s),
        "{c:?}"
    );
    let peer = c
        .iter()
        .find(|c| c.limit == Limit::ReceiverWindow)
        .expect("peer window ceiling");
    // 3 MB ÷ 0.156 s = 19.2 MB/s = 18780 records of 1024 B.
    assert!((peer.bytes_per_s - 3e6 / 0.156).abs() < 1.0, "{peer:?}");
    let records = peer.records_per_s.expect("records per second");
    assert!((records - 3e6 / 0.156 / 1024.0).abs() < 1.0, "{peer:?}");
}

#[test]
fn without_a_link_rate_the_window_remedies_double_and_say_why() {
    let mut flow = Flow::new().rate(19_230_000);
    flow.rwnd = 0.6;
    flow.snd_wnd = 3_000_000;
    let mut w = World::new(vec![flow]);
    w.link.bandwidth_bytes_per_s = None;
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::ReceiverWindow);
    assert!(
        v.remedy.contains("sysctl -w net.core.rmem_max=6000000"),
        "{}",
        v.remedy
    );
    assert!(
        v.remedy.contains("--link-rate gives the exact BDP"),
        "{}",
        v.remedy
    );
}

#[test]
fn a_zero_peer_window_blames_the_reader_not_the_buffer_size() {
    let mut flow = Flow::new().rate(1_000_000);
    flow.rwnd = 0.9;
    flow.snd_wnd = 0;
    let d = World::new(vec![flow]).diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::ReceiverWindow, "{}", d.report());
    assert!(v.remedy.contains("zero window"), "{}", v.remedy);
    assert!(!v.remedy.contains("rmem_max=0"), "{}", v.remedy);
}

#[test]
fn a_window_covering_the_round_trip_but_not_the_answer_time_is_sized_by_the_answer_time() {
    let mut flow = Flow::new();
    flow.window = 16_000;
    flow.inflight = 16_000;
    flow.window_limited = true;
    flow.app_limited = true;
    flow.notsent = 0;
    flow.records_per_s = 53_333; // 16000 records per 300 ms
    let mut w = World::new(vec![flow]);
    w.p50_us = 300_000; // slower than the round trip, not yet 2×: still the window
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Application, "{}", d.report());
    // 97656.25 records/s × 0.156 s = 15235 ≤ 16000; × 0.300 s = 29297.
    assert!(
        v.remedy.contains(
            "raise --window to ≥ 29297 per connection (97656 records/s × answer p50 300.0ms ÷ 1 connection"
        ),
        "{}",
        v.remedy
    );
}

/// Replays a recorded lab run (see `recordings/README.md`) through a 5 s
/// window up to 10.5 s, as the lab tests judge it, and returns the verdict.
fn replay_recording(zst: &[u8]) -> Diagnosis {
    replay_recording_with(zst, Duration::from_secs(5), 10.5)
}

/// Replays a recording through a `window` up to `until_s` seconds.
fn replay_recording_with(zst: &[u8], window: Duration, until_s: f64) -> Diagnosis {
    let text = zstd::decode_all(zst).expect("recording decompresses");
    let text = String::from_utf8(text).expect("recording is UTF-8");
    let mut d = Diagnoser::new(window);
    let mut last = None;
    for (n, line) in text.lines().enumerate() {
        let s = Sample::from_json_line(line)
            .unwrap_or_else(|e| panic!("recording line {}: {e}", n + 1));
        if s.at.as_secs_f64() > until_s {
            break;
        }
        d.push(s);
        last = d.verdict().or(last);
    }
    last.expect("the recording gives a verdict")
}

macro_rules! recorded {
    ($name:ident, $file:literal, $limit:expr) => {
        #[test]
        fn $name() {
            let d = replay_recording(include_bytes!(concat!("recordings/", $file)));
            assert_sane(&d);
            assert_eq!(d.shipper.limit, $limit, "{}", d.report());
        }
    };
}

recorded!(
    a_recorded_full_line_is_bandwidth,
    "lab-bw.jsonl.zst",
    Limit::Bandwidth
);
recorded!(
    a_recorded_small_receiver_buffer_is_receiver_window,
    "lab-rwnd.jsonl.zst",
    Limit::ReceiverWindow
);
recorded!(
    a_recorded_small_send_buffer_is_sender_buffer,
    "lab-sndbuf.jsonl.zst",
    Limit::SenderBuffer
);
recorded!(
    a_recorded_small_window_is_application,
    "lab-app.jsonl.zst",
    Limit::Application
);
recorded!(
    a_recorded_lossy_path_under_cubic_is_loss,
    "lab-loss.jsonl.zst",
    Limit::Loss
);
recorded!(
    a_recorded_slow_receiver_is_destination,
    "lab-dest.jsonl.zst",
    Limit::Destination
);

#[test]
fn the_recorded_156ms_demo_at_the_link_rate_is_bandwidth_not_application() {
    // 64 connections with the auto window at 156 ms and 100 MB/s: TCP
    // flags the flows app-limited (little unsent per socket) while 80 ms
    // queue at the bottleneck; the link, given by --link-rate, is full.
    let d = replay_recording_with(
        include_bytes!("recordings/lab-156ms-demo.jsonl.zst"),
        Duration::from_secs(10),
        f64::INFINITY,
    );
    assert_sane(&d);
    assert_eq!(d.shipper.limit, Limit::Bandwidth, "{}", d.report());
    assert!(
        d.shipper.share(Limit::Bandwidth) > 90.0,
        "{:?}",
        d.shipper.shares
    );
}

#[test]
fn the_report_names_the_node_of_each_connection_group() {
    let mut flow = Flow::new().rate(99_328_000);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    let world = World::new(vec![flow, flow]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..SAMPLES {
        let mut s = world.sample(k);
        for c in &mut s.ship.connections {
            c.node = Some(format!("127.0.0.1:{}", 7000 + c.id));
        }
        d.push(s);
    }
    let d = d.verdict().expect("a verdict");
    assert_eq!(d.nodes.len(), 2);
    let report = d.report();
    assert!(
        report.contains("conns 0–1 on 127.0.0.1:7000, 127.0.0.1:7001"),
        "{report}"
    );
    let plain = World::new(vec![Flow::new().rate(99_328_000)]).diagnose();
    assert!(plain.nodes.is_empty(), "{:?}", plain.nodes);
}

/// Every recording of the lab, by name.
const RECORDINGS: [(&str, &[u8]); 7] = [
    ("lab-bw", include_bytes!("recordings/lab-bw.jsonl.zst")),
    ("lab-rwnd", include_bytes!("recordings/lab-rwnd.jsonl.zst")),
    (
        "lab-sndbuf",
        include_bytes!("recordings/lab-sndbuf.jsonl.zst"),
    ),
    ("lab-app", include_bytes!("recordings/lab-app.jsonl.zst")),
    ("lab-loss", include_bytes!("recordings/lab-loss.jsonl.zst")),
    ("lab-dest", include_bytes!("recordings/lab-dest.jsonl.zst")),
    (
        "lab-156ms-demo",
        include_bytes!("recordings/lab-156ms-demo.jsonl.zst"),
    ),
];

/// A measured rate may sit a little above the ceiling that binds it (the
/// srtt a ceiling divides by is the window's mean): 5%.
const CEILING_SLACK: f64 = 0.95;

#[test]
fn no_recorded_run_lists_a_ceiling_below_what_it_carried() {
    for (name, zst) in RECORDINGS {
        let d = replay_recording_with(zst, Duration::from_secs(10), f64::INFINITY);
        for v in std::iter::once(&d.shipper).chain(&d.connections) {
            for c in &v.ceilings {
                assert!(
                    c.bytes_per_s >= CEILING_SLACK * v.observed.bytes_per_s,
                    "{name}, {}: ceiling {c} below the {} it carried\n{}",
                    v.scope,
                    crate::units::rate(v.observed.bytes_per_s),
                    d.report()
                );
            }
        }
    }
}

#[test]
fn tail_drops_of_an_overflowing_queue_set_no_mathis_bound() {
    // A narrow bottleneck whose queue overflows (srtt 1.6 × min_rtt) drops
    // 1% of the segments: the link's answer to a faster sender, not the
    // random loss Mathis models (at 1% it would say 70 KB/s).
    let mut flow = Flow::new().rate(50_000);
    flow.acked_segs_per_s = 99;
    flow.retrans_per_s = 1;
    flow.srtt_us = RTT_US * 8 / 5;
    flow.notsent = 1_000_000;
    let mut w = World::new(vec![flow]);
    w.link.bandwidth_bytes_per_s = None;
    let d = w.diagnose();
    let v = &d.shipper;
    assert_eq!(v.limit, Limit::Bandwidth, "{}", d.report());
    assert!(
        v.ceilings.iter().all(|c| c.limit != Limit::Loss),
        "{}",
        d.report()
    );
}

#[test]
fn random_loss_without_a_queue_keeps_its_mathis_bound() {
    let mut flow = Flow::new().rate(50_000);
    flow.acked_segs_per_s = 99;
    flow.retrans_per_s = 1;
    flow.notsent = 1_000_000;
    let mut w = World::new(vec![flow]);
    w.link.bandwidth_bytes_per_s = None;
    let d = w.diagnose();
    let mathis = d
        .shipper
        .ceilings
        .iter()
        .find(|c| c.limit == Limit::Loss)
        .unwrap_or_else(|| panic!("a Mathis ceiling: {}", d.report()));
    // 1448 B ÷ (0.156 s × √0.01) × 1.22 = 113.7 KB/s.
    let expected = crate::units::mathis_bytes_per_s(f64::from(MSS), 0.156, 0.01);
    assert!(
        (mathis.bytes_per_s - expected).abs() < 0.01 * expected,
        "{mathis:?}"
    );
}

#[test]
fn a_connections_bandwidth_headline_quotes_its_own_rate_beside_the_whole() {
    let mut flow = Flow::new().rate(49_664_000);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    let d = World::new(vec![flow, flow]).diagnose();
    let conn = d.connection(1).expect("connection 1");
    assert_eq!(conn.limit, Limit::Bandwidth, "{}", d.report());
    assert!(
        conn.headline
            .starts_with("49.7 MB/s; all connections 99.3 MB/s of a 100.0 MB/s link (99%); srtt"),
        "{}",
        conn.headline
    );
    assert!(
        d.shipper
            .headline
            .starts_with("99.3 MB/s of a 100.0 MB/s link"),
        "{}",
        d.shipper.headline
    );
}

/// `World`'s samples with the auto window opening: every second the app
/// window, the congestion window and the rate double (TCP in slow start,
/// ssthresh not yet set).
fn opening_samples(w: &World) -> Vec<Sample> {
    (0..SAMPLES)
        .map(|k| {
            let mut s = w.sample(k);
            for c in &mut s.ship.connections {
                c.window = 256 << k;
                c.inflight = c.window;
                c.window_limited = true;
                let t = c.tcp.as_mut().expect("TCP_INFO");
                t.cwnd_segments = 10 << k;
                t.ssthresh_segments = u32::MAX >> 1;
                // 100 KB/s doubling: acked so far = 100 KB × (2^k − 1).
                t.bytes_acked = 100_000 * ((1u64 << k) - 1);
                t.delivery_rate_bytes_per_s = 100_000 << k.saturating_sub(1);
            }
            s
        })
        .collect()
}

#[test]
fn the_auto_window_opening_is_ramping_up_not_a_limit() {
    let w = World::new(vec![small_window_flow(); 4]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in opening_samples(&w) {
        d.push(s);
    }
    let v = d.verdict().expect("a verdict").shipper;
    assert_eq!(v.limit, Limit::Ramp, "{v:?}");
    assert!(v.share(Limit::Ramp) > 99.9, "{:?}", v.shares);
    assert!(
        v.headline
            .starts_with("ramping up (slow start / window opening) for 10.00s of 10.00s"),
        "{}",
        v.headline
    );
    assert!(v.remedy.contains("the auto window"), "{}", v.remedy);
}

#[test]
fn a_fixed_window_whose_rate_jumps_is_not_ramping() {
    // The rate doubles each second but the window stays at 16 records:
    // noise (or a path clearing up), not the window opening.
    let w = World::new(vec![small_window_flow(); 4]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for mut s in opening_samples(&w) {
        for c in &mut s.ship.connections {
            c.window = 16;
            c.inflight = 16;
            let t = c.tcp.as_mut().expect("TCP_INFO");
            t.cwnd_segments = 1000;
        }
        d.push(s);
    }
    let v = d.verdict().expect("a verdict").shipper;
    assert_eq!(v.share(Limit::Ramp), 0.0, "{:?}", v.shares);
}

#[test]
fn bbr_regrowing_its_cwnd_after_probe_rtt_is_not_ramping() {
    // ssthresh unset (BBR), cwnd 1000 → 4 (ProbeRTT) → 1000 again.
    let mut flow = Flow::new().rate(99_328_000);
    flow.srtt_us = 180_000;
    flow.notsent = 4_000_000;
    let w = World::new(vec![flow]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for k in 0..SAMPLES {
        let mut s = w.sample(k);
        let t = s.ship.connections[0].tcp.as_mut().expect("TCP_INFO");
        t.ssthresh_segments = u32::MAX >> 1;
        if k == 5 {
            t.cwnd_segments = 4;
        }
        d.push(s);
    }
    let v = d.verdict().expect("a verdict").shipper;
    assert_eq!(v.share(Limit::Ramp), 0.0, "{:?}", v.shares);
}

#[test]
fn the_auto_window_opening_behind_an_autotuning_receiver_is_ramping_up() {
    // The window doubles while the rate barely moves: the receiver's
    // autotuned window (peer window) opens behind it, with rwnd-limited
    // time the kernel counts meanwhile.
    let mut flow = small_window_flow();
    flow.rwnd = 0.6;
    let w = World::new(vec![flow; 4]);
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for (k, mut s) in opening_samples(&w).into_iter().enumerate() {
        for c in &mut s.ship.connections {
            let t = c.tcp.as_mut().expect("TCP_INFO");
            t.cwnd_segments = 1000;
            t.bytes_acked = 100_000 * k as u64;
            t.delivery_rate_bytes_per_s = 100_000;
            t.snd_wnd_bytes = 64_000 << k;
        }
        d.push(s);
    }
    let v = d.verdict().expect("a verdict").shipper;
    assert_eq!(v.limit, Limit::Ramp, "{v:?}");
}
