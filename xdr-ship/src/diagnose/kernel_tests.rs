//! The kernel-only verdict as a specification: flows of a process we did
//! not write (only `TCP_INFO`), one binding limit each, and hysteresis.
use std::time::Duration;

use super::{Diagnoser, FlowOwner, Limit, LinkHints, Sample, OBSERVE_MODE};
use crate::metrics::{ConnSnapshot, ShipSnapshot, TcpSample};

const MSS: u32 = 1448;
const RTT_US: u32 = 80_000;
const COOKIE: u64 = 42;

/// How one flow's counters move per one-second interval.
#[derive(Clone, Copy, Default)]
struct Step {
    acked: u64,
    busy_us: u64,
    rwnd_us: u64,
    sndbuf_us: u64,
    retrans: u32,
    cwnd: u32,
    snd_wnd: u32,
    unacked: u32,
    app_limited: bool,
    srtt_us: u32,
}

fn steady() -> Step {
    Step {
        acked: 10_000_000,
        busy_us: 1_000_000,
        cwnd: 600,
        snd_wnd: 4 << 20,
        unacked: 500,
        srtt_us: RTT_US,
        ..Step::default()
    }
}

/// `steps[k]` moves the counters from sample `k` to `k + 1`.
fn samples(steps: &[Step]) -> Vec<Sample> {
    let mut t = TcpSample {
        mss_bytes: MSS,
        min_rtt_us: RTT_US,
        ssthresh_segments: u32::MAX >> 1,
        ..TcpSample::default()
    };
    let mut out = Vec::new();
    for k in 0..=steps.len() {
        if k > 0 {
            let s = steps[k - 1];
            t.bytes_acked += s.acked;
            t.busy_us += s.busy_us;
            t.rwnd_limited_us += s.rwnd_us;
            t.sndbuf_limited_us += s.sndbuf_us;
            t.total_retrans += s.retrans;
            t.cwnd_segments = s.cwnd;
            t.snd_wnd_bytes = s.snd_wnd;
            t.unacked_segments = s.unacked;
            t.app_limited = s.app_limited;
            t.srtt_us = s.srtt_us;
            t.delivery_rate_bytes_per_s = s.acked;
        } else {
            let s = steps[0];
            t.cwnd_segments = s.cwnd;
            t.snd_wnd_bytes = s.snd_wnd;
            t.srtt_us = s.srtt_us;
            // A flow seen mid-stream: the kernel's last rate sample is its
            // steady rate.
            t.delivery_rate_bytes_per_s = s.acked;
        }
        let ship = ShipSnapshot {
            elapsed_s: k as f64,
            mode: OBSERVE_MODE.to_owned(),
            connected: 1,
            connections: vec![ConnSnapshot {
                id: 0,
                cookie: COOKIE,
                connected: true,
                tcp: Some(t),
                ..ConnSnapshot::default()
            }],
            ..ShipSnapshot::default()
        };
        let mut sample = Sample::from_snapshot(ship, None, LinkHints::default());
        sample.owners = vec![FlowOwner {
            cookie: COOKIE,
            pid: Some(4242),
            comm: Some("iperf3".to_owned()),
            peer: None,
        }];
        out.push(sample);
    }
    out
}

fn judge(steps: &[Step]) -> super::Diagnosis {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in samples(steps) {
        d.push(s);
    }
    d.verdict().expect("a verdict")
}

#[test]
fn a_busy_flow_of_another_process_is_not_idle() {
    let v = judge(&[steady(); 6]).shipper;
    assert_ne!(v.limit, Limit::Idle, "{v:?}");
    assert!(v.observed.bytes_per_s > 0.0);
    let total: f64 = v.shares.iter().map(|(_, p)| p).sum();
    assert!((total - 100.0).abs() < 1e-6, "{:?}", v.shares);
}

#[test]
fn the_rwnd_limited_timer_makes_it_receiver_window() {
    let s = Step {
        rwnd_us: 700_000,
        ..steady()
    };
    let v = judge(&[s; 6]).shipper;
    assert_eq!(v.limit, Limit::ReceiverWindow, "{v:?}");
    assert!(v.remedy.contains("receiving process"), "{}", v.remedy);
}

#[test]
fn the_sndbuf_limited_timer_makes_it_sender_buffer() {
    let s = Step {
        sndbuf_us: 800_000,
        ..steady()
    };
    assert_eq!(judge(&[s; 6]).shipper.limit, Limit::SenderBuffer);
}

#[test]
fn a_small_send_buffer_with_cwnd_room_is_the_sender_buffer_all_along() {
    // As the lab's python3 sender with a 64 KiB SO_SNDBUF showed: the
    // kernel's sndbuf_limited timer ran 42% of the time, cwnd (154) held
    // three times what was in flight (47), and there was no queue or loss.
    let s = Step {
        sndbuf_us: 420_000,
        cwnd: 154,
        unacked: 47,
        acked: 880_000,
        ..steady()
    };
    let v = judge(&[s; 6]).shipper;
    assert_eq!(v.limit, Limit::SenderBuffer, "{v:?}");
    let share = |l: Limit| {
        v.shares
            .iter()
            .find(|(k, _)| *k == l)
            .map_or(0.0, |(_, p)| *p)
    };
    assert!(share(Limit::SenderBuffer) > 90.0, "{:?}", v.shares);
}

#[test]
fn an_app_limited_flow_names_the_process() {
    let s = Step {
        app_limited: true,
        busy_us: 600_000,
        acked: 1_000_000,
        ..steady()
    };
    let v = judge(&[s; 6]).shipper;
    assert_eq!(v.limit, Limit::Application, "{v:?}");
    assert!(v.headline.contains("iperf3 (pid 4242)"), "{}", v.headline);
}

#[test]
fn a_paced_writer_far_below_its_cwnd_is_the_application_without_the_app_limited_flag() {
    // `iperf3 -b 16M` on an 80 ms path: always something in flight (busy
    // all the time), the app-limited flag missed at every sample, and
    // 2 MB/s where cwnd 1200 allows ~21.7 MB/s.
    let s = Step {
        acked: 2_000_000,
        cwnd: 1200,
        unacked: 100,
        ..steady()
    };
    let v = judge(&[s; 6]).shipper;
    assert_eq!(v.limit, Limit::Application, "{v:?}");
    assert!(v.headline.contains("iperf3 (pid 4242)"), "{}", v.headline);
}

#[test]
fn a_flow_at_its_cwnd_without_loss_is_bandwidth() {
    assert_eq!(judge(&[steady(); 6]).shipper.limit, Limit::Bandwidth);
}

#[test]
fn retransmits_with_a_collapsing_cwnd_are_loss() {
    let steps: Vec<Step> = (0..6)
        .map(|k| Step {
            // 2% of ~210 segments a second, at about the Mathis rate.
            retrans: 4,
            cwnd: if k % 2 == 0 { 30 } else { 20 },
            unacked: 20,
            acked: 300_000,
            ..steady()
        })
        .collect();
    assert_eq!(judge(&steps).shipper.limit, Limit::Loss);
}

#[test]
fn a_growing_cwnd_before_any_loss_is_ramping_up() {
    let steps: Vec<Step> = (0..4)
        .map(|k| Step {
            cwnd: 10 << (2 * k),
            ..steady()
        })
        .collect();
    let v = judge(&steps).shipper;
    assert_eq!(v.limit, Limit::Ramp, "{v:?}");
    assert!(v
        .headline
        .contains("ramping up (slow start / window opening)"));
}

#[test]
fn a_delivery_rate_still_climbing_after_an_early_retransmit_is_ramping_up() {
    // iperf3 on the lab: one retransmit in the first second ends slow
    // start (cwnd at ssthresh), but the rate keeps doubling.
    let steps: Vec<Step> = (0..4)
        .map(|k| Step {
            acked: 1_000_000 << (k + 1),
            retrans: u32::from(k == 0),
            cwnd: 100 << k,
            ..steady()
        })
        .collect();
    let mut all = samples(&steps);
    for s in &mut all {
        let t = s.ship.connections[0].tcp.as_mut().unwrap();
        t.ssthresh_segments = 100;
    }
    all[0].ship.connections[0]
        .tcp
        .as_mut()
        .unwrap()
        .delivery_rate_bytes_per_s = 1_000_000;
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in all {
        d.push(s);
    }
    assert_eq!(d.verdict().unwrap().shipper.limit, Limit::Ramp);
}

#[test]
fn cwnd_regrowing_after_losses_is_loss_not_ramping() {
    let steps: Vec<Step> = (0..6)
        .map(|k| Step {
            retrans: 4,
            cwnd: if k % 2 == 0 { 30 } else { 20 },
            unacked: 20,
            acked: 300_000,
            ..steady()
        })
        .collect();
    let v = judge(&steps).shipper;
    assert_eq!(v.share(Limit::Ramp), 0.0, "{:?}", v.shares);
}

/// A BBR flow (no ssthresh) at its cwnd for `secs` one-second intervals,
/// in ProbeRTT at the sample `dip_at`: cwnd at 4 segments, the interval
/// ending there short of the 200 ms it spent so.
fn bbr_with_probe_rtt(secs: usize, dip_at: usize) -> Vec<Step> {
    (0..secs)
        .map(|k| {
            let mut s = steady();
            if k + 1 == dip_at {
                s.cwnd = 4;
                s.unacked = 4;
                s.acked = s.acked * 4 / 5;
            }
            s
        })
        .collect()
}

fn judge_over(steps: &[Step], window: Duration) -> super::Diagnosis {
    let mut d = Diagnoser::new(window);
    for s in samples(steps) {
        d.push(s);
    }
    d.verdict().expect("a verdict")
}

#[test]
fn bbr_regrowing_its_cwnd_after_probe_rtt_mid_run_is_not_ramping_up() {
    // iperf3 with BBR on a long link: every ~10 s cwnd drops to 4 segments
    // for ~200 ms and then regrows at once to where it was.
    let secs = 20;
    let steps = bbr_with_probe_rtt(secs, secs / 2);
    let v = judge_over(&steps, Duration::from_secs(secs as u64)).shipper;
    assert_eq!(v.share(Limit::Ramp), 0.0, "{:?}", v.shares);
    assert_eq!(v.limit, Limit::Bandwidth, "{v:?}");
}

#[test]
fn slow_start_after_an_idle_spell_is_ramping_up_again() {
    // The flow sends, idles (cwnd restarts), then opens its window anew.
    let mut steps = vec![steady(); 4];
    steps.extend(
        [Step {
            cwnd: 10,
            ..Step::default()
        }; 2],
    );
    steps.extend((0..3).map(|k| Step {
        cwnd: 10 << (2 * (k + 1)),
        acked: 1_000_000 << k,
        ..steady()
    }));
    let v = judge_over(&steps, Duration::from_secs(steps.len() as u64)).shipper;
    assert!(v.share(Limit::Ramp) > 0.0, "{:?}", v.shares);
}

#[test]
fn a_flow_born_in_the_window_starts_ramping_up() {
    let mut all = samples(&[steady(); 3]);
    all[0].ship.connections.clear();
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in all {
        d.push(s);
    }
    let v = d.verdict().unwrap().shipper;
    assert!(v.share(Limit::Ramp) > 0.0, "{:?}", v.shares);
}

#[test]
fn a_flow_that_carried_nothing_is_idle() {
    let v = judge(&[Step::default(); 4]).shipper;
    assert_eq!(v.limit, Limit::Idle);
}

#[test]
fn a_live_verdict_does_not_flip_on_one_interval() {
    let rwnd = Step {
        rwnd_us: 900_000,
        ..steady()
    };
    let mut steps = vec![steady(); 3];
    steps.push(rwnd);
    let mut d = Diagnoser::new(Duration::from_secs(1));
    let mut last = None;
    for s in samples(&steps) {
        d.push(s);
        last = d.judge().map(|x| x.shipper.limit);
    }
    assert_eq!(d.verdict().unwrap().shipper.limit, Limit::ReceiverWindow);
    assert_eq!(last, Some(Limit::Bandwidth), "held for MIN_CHANGE_SPAN");
}

#[test]
fn a_mathis_bound_below_the_measured_rate_is_no_ceiling() {
    // One burst of retransmits (a slow-start overshoot), then a clean run
    // at 10 MB/s: p over the window puts Mathis near 0.2 MB/s.
    let mut steps = vec![steady(); 6];
    steps[0].retrans = 500;
    let v = judge(&steps).shipper;
    assert!(
        v.ceilings
            .iter()
            .all(|c| c.limit != Limit::Loss || c.bytes_per_s >= v.observed.bytes_per_s),
        "{:?} at {}",
        v.ceilings,
        v.observed.bytes_per_s
    );
}

#[test]
fn a_live_verdict_leaves_idle_at_once() {
    let mut steps = vec![Step::default(); 3];
    steps.push(steady());
    let mut d = Diagnoser::new(Duration::from_secs(1));
    let mut last = None;
    for s in samples(&steps) {
        d.push(s);
        last = d.judge().map(|x| x.shipper.limit);
    }
    assert_ne!(last, Some(Limit::Idle));
}

/// Samples of several flows, each `(cookie, peer, steps)`, side by side.
fn flows(flows: &[(u64, Option<&str>, &[Step])]) -> Vec<Sample> {
    let per_flow: Vec<Vec<Sample>> = flows.iter().map(|(_, _, s)| samples(s)).collect();
    let mut out = per_flow[0].clone();
    for (k, sample) in out.iter_mut().enumerate() {
        sample.ship.connections.clear();
        sample.owners.clear();
        for (id, ((cookie, peer, _), one)) in flows.iter().zip(&per_flow).enumerate() {
            let mut c = one[k].ship.connections[0].clone();
            c.id = id;
            c.cookie = *cookie;
            sample.ship.connections.push(c);
            sample.owners.push(FlowOwner {
                cookie: *cookie,
                pid: Some(4242),
                comm: Some("iperf3".to_owned()),
                peer: peer.map(str::to_owned),
            });
        }
        sample.ship.connected = flows.len();
    }
    out
}

fn judge_flows(f: &[(u64, Option<&str>, &[Step])]) -> super::Diagnosis {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in flows(f) {
        d.push(s);
    }
    d.verdict().expect("a verdict")
}

#[test]
fn flows_to_one_peer_are_judged_as_one_group() {
    let carrying = [steady(); 6];
    let peer = Some("198.18.0.2:5201");
    let d = judge_flows(&[
        (1, peer, &carrying),
        (2, peer, &carrying),
        (3, peer, &carrying),
        (4, peer, &carrying),
    ]);
    assert_eq!(d.peers.len(), 1, "{d:?}");
    let group = &d.peers[0];
    assert_eq!(group.peer, "198.18.0.2:5201");
    assert_eq!(group.cookies, vec![1, 2, 3, 4]);
    assert_eq!(group.verdict.scope, super::Scope::Peer { flows: 4 });
    // Four flows of 10 MB/s each.
    assert!(
        (group.verdict.observed.bytes_per_s - 40e6).abs() < 1.0,
        "{:?}",
        group.verdict.observed
    );
    assert!(
        d.report().contains("4 flows to 198.18.0.2:5201: limit: "),
        "{}",
        d.report()
    );
}

#[test]
fn flows_to_other_peers_get_a_verdict_each_and_idle_flows_none() {
    let carrying = [steady(); 6];
    let rwnd = [Step {
        rwnd_us: 700_000,
        ..steady()
    }; 6];
    let idle = [Step::default(); 6];
    let d = judge_flows(&[
        (1, Some("10.0.0.2:5201"), &carrying),
        (2, Some("10.0.0.3:6379"), &rwnd),
        (3, Some("10.0.0.2:5201"), &carrying),
        (4, Some("10.0.0.4:22"), &idle),
        (5, None, &carrying),
    ]);
    let groups: Vec<(&str, &[u64])> = d
        .peers
        .iter()
        .map(|p| (p.peer.as_str(), p.cookies.as_slice()))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("10.0.0.2:5201", &[1, 3][..]),
            ("10.0.0.3:6379", &[2][..]),
            (super::UNKNOWN_PEER, &[5][..]),
        ]
    );
    assert_eq!(d.peers[1].verdict.limit, Limit::ReceiverWindow);
    let text = d.peers_report("");
    assert!(text.contains("2 flows to 10.0.0.2:5201: limit: "), "{text}");
    assert!(
        text.contains("1 flow to 10.0.0.3:6379: limit: receiver window"),
        "{text}"
    );
}

#[test]
fn a_peer_groups_live_verdict_holds_like_any_other() {
    let peer = Some("198.18.0.2:5201");
    let mut steps = vec![steady(); 3];
    steps.push(Step {
        rwnd_us: 900_000,
        ..steady()
    });
    let mut d = Diagnoser::new(Duration::from_secs(1));
    let mut last = None;
    for s in flows(&[(1, peer, &steps), (2, peer, &steps)]) {
        d.push(s);
        last = d.judge().map(|x| x.peers[0].verdict.limit);
    }
    assert_eq!(
        d.verdict().unwrap().peers[0].verdict.limit,
        Limit::ReceiverWindow
    );
    assert_eq!(last, Some(Limit::Bandwidth), "held for MIN_CHANGE_SPAN");
}

#[test]
fn the_peer_groups_are_in_the_json_of_a_diagnosis() {
    let carrying = [steady(); 3];
    let peer = Some("198.18.0.2:5201");
    let d = judge_flows(&[(1, peer, &carrying), (2, peer, &carrying)]);
    let json = serde_json::to_value(&d).expect("a diagnosis serializes");
    assert_eq!(json["peers"][0]["peer"], "198.18.0.2:5201");
    assert_eq!(json["peers"][0]["cookies"], serde_json::json!([1, 2]));
    assert_eq!(json["peers"][0]["verdict"]["scope"]["peer"]["flows"], 2);
    let back: super::Diagnosis = serde_json::from_value(json).expect("and reads back");
    assert_eq!(back.peers, d.peers);
}
