//! The screen on ratatui's `TestBackend`: samples built by hand (as in the
//! diagnoser's tests), run through the real engine, drawn, and read back
//! as text.
//!
//! Why one long file: every test builds its samples from the same few
//! helpers (flows, kernel rows, softirq) at the top; one behaviour per
//! test, read top to bottom like the screen's specification.
use crate::units;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ratatui::{
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    Terminal,
};

use super::{
    app::HISTORY,
    replay::{read_samples, text_line, write_text, Player, ReplayError},
    term::{Feed, FeedState},
    *,
};
use crate::{
    diagnose::{Diagnoser, Limit, LinkHints, Sample},
    metrics::{ConnSnapshot, Counters, Latency, ShipSnapshot, TcpSample},
    probe::{
        softirq::{CpuRate, SoftirqReport, SoftirqSource, VectorRate},
        tcp::KernelConn,
    },
};

const MSS: u32 = 1448;
const RTT_US: u32 = 156_000;
const RECORD_BYTES: u64 = 1024;
/// 100 MB/s.
const LINK: u64 = 100_000_000;

/// One connection's steady behaviour, per second.
#[derive(Clone, Copy, Debug)]
struct Flow {
    bytes_per_s: u64,
    /// Fraction of the time the peer's window held it back.
    rwnd: f64,
    snd_wnd: u32,
    srtt_us: u32,
    retrans_per_s: u32,
    inflight: u64,
    /// Whether `TCP_INFO` was read.
    tcp: bool,
}

impl Flow {
    /// Held back 60% of the time by a 3 MB peer window on a 15.6 MB BDP.
    fn rwnd_limited(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s,
            rwnd: 0.6,
            snd_wnd: 3_000_000,
            srtt_us: RTT_US,
            retrans_per_s: 0,
            inflight: 1500,
            tcp: true,
        }
    }

    fn at(&self, id: usize, k: u64) -> ConnSnapshot {
        let records_per_s = self.bytes_per_s / RECORD_BYTES;
        let delivered = records_per_s * k;
        let us = k * 1_000_000;
        ConnSnapshot {
            id,
            node: None,
            cookie: 1000 + id as u64,
            connected: true,
            inflight: self.inflight,
            inflight_bytes: self.inflight * RECORD_BYTES,
            window: 4096,
            acks_per_s: records_per_s as f64,
            bytes_per_s: (records_per_s * RECORD_BYTES) as f64,
            window_limited: false,
            counters: Counters {
                shipped: delivered + self.inflight,
                success: delivered,
                acked_bytes: delivered * RECORD_BYTES,
                ..Counters::default()
            },
            tcp: self.tcp.then(|| TcpSample {
                cwnd_segments: 1000,
                ssthresh_segments: 0,
                mss_bytes: MSS,
                srtt_us: self.srtt_us,
                min_rtt_us: RTT_US,
                unacked_segments: 1000,
                snd_wnd_bytes: self.snd_wnd,
                rcv_wnd_bytes: 65_535,
                notsent_bytes: 1_000_000,
                delivery_rate_bytes_per_s: self.bytes_per_s,
                app_limited: false,
                busy_us: us,
                rwnd_limited_us: (self.rwnd * us as f64) as u64,
                sndbuf_limited_us: 0,
                total_retrans: self.retrans_per_s * k as u32,
                bytes_acked: self.bytes_per_s * k,
            }),
        }
    }
}

fn softirq() -> SoftirqReport {
    let cpu = |cpu: usize, total: f64, rx: f64, tx: f64| CpuRate {
        cpu,
        total_pct: total,
        vectors: vec![
            VectorRate {
                name: "NET_TX".into(),
                runs_per_s: 100.0,
                time_pct: Some(tx),
            },
            VectorRate {
                name: "NET_RX".into(),
                runs_per_s: 10_000.0,
                time_pct: Some(rx),
            },
        ],
    };
    SoftirqReport {
        unix_time_s: 0.0,
        source: SoftirqSource::Ebpf,
        fallback_reason: None,
        interval_ms: 1000.0,
        cpus: vec![cpu(0, 30.0, 20.0, 5.0), cpu(1, 4.0, 2.0, 1.0)],
    }
}

/// Sample `k` (taken `k` seconds in) of a shipper running `flows`.
fn sample(flows: &[Flow], k: u64) -> Sample {
    let mut ship = ShipSnapshot {
        elapsed_s: k as f64,
        destination: "frankfurt:3000".into(),
        mode: "ordered".into(),
        outstanding: 50_000,
        lag_ms: 12,
        latency: Latency {
            samples: 1000,
            min_us: u64::from(RTT_US),
            p50_us: u64::from(RTT_US) + 1000,
            p99_us: u64::from(RTT_US) + 5000,
            p999_us: u64::from(RTT_US) + 5000,
            max_us: u64::from(RTT_US) + 5000,
        },
        ..ShipSnapshot::default()
    };
    for (id, f) in flows.iter().enumerate() {
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
        softirq: (k > 0).then(softirq),
        link: LinkHints {
            rtt: None,
            bandwidth_bytes_per_s: Some(LINK),
        },
        kernel: Vec::new(),
        owners: Vec::new(),
        device: None,
    }
}

/// Eleven samples a second apart through the real engine.
fn updates(flows: &[Flow]) -> Vec<Update> {
    let mut d = Diagnoser::new(Duration::from_secs(10));
    (0..11)
        .map(|k| {
            let s = sample(flows, k);
            d.push(s.clone());
            Update {
                sample: s,
                diagnosis: d.verdict(),
            }
        })
        .collect()
}

fn app_with(flows: &[Flow]) -> App {
    let mut app = App::new();
    for u in updates(flows) {
        app.push(u);
    }
    app
}

/// The screen as lines of text.
fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|f| app.render(f)).expect("draw");
    let buf = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buf[(x, y)].symbol().to_owned())
                .collect::<String>()
        })
        .collect()
}

fn text(lines: &[String]) -> String {
    lines.join("\n")
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Connection ids in the order the table shows them.
fn row_ids(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .filter(|l| l.contains('│') && l.len() > 5)
        .filter_map(|l| {
            let head: String = l.chars().take(5).collect();
            (head.ends_with(' ') && !head.trim().is_empty())
                .then(|| head.trim().parse().ok())
                .flatten()
        })
        .collect()
}

fn four_flows() -> Vec<Flow> {
    [19_000_000, 25_000_000, 12_000_000, 30_000_000]
        .map(Flow::rwnd_limited)
        .to_vec()
}

#[test]
fn at_80x24_the_verdict_remedy_and_numbers_show() {
    let app = app_with(&four_flows());
    let u = app.shown().expect("an update");
    let d = u.diagnosis.as_ref().expect("a verdict");
    assert_eq!(d.shipper.limit, Limit::ReceiverWindow);
    let lines = screen(&app, 80, 24);
    let s = text(&lines);
    assert!(s.contains("RECEIVER WINDOW 60%"), "{s}");
    assert!(s.contains(&d.shipper.headline), "{s}");
    // The remedy's start and its figure (the figure may wrap).
    let first_words: String = d.shipper.remedy.chars().take(30).collect();
    assert!(s.contains(&format!("→ {first_words}")), "{s}");
    assert!(s.contains("rmem_max"), "{s}");
    assert!(s.contains("frankfurt:3000"), "{s}");
    assert!(s.contains(&units::rate(u.sample.ship.bytes_per_s)), "{s}");
    assert!(s.contains("kernel: TCP_INFO"), "{s}");
    assert_eq!(row_ids(&lines), vec![0, 1, 2, 3], "{s}");
    // Each connection's verdict share is beside it.
    assert!(
        lines.iter().filter(|l| l.contains("rwnd 60%")).count() >= 4,
        "{s}"
    );
    assert!(lines.iter().all(|l| l.chars().count() == 80));
}

#[test]
fn at_160x48_the_screen_adds_columns_bars_and_charts() {
    let app = app_with(&four_flows());
    let small = text(&screen(&app, 80, 24));
    let s = text(&screen(&app, 160, 48));
    assert!(s.contains("RECEIVER WINDOW 60%"), "{s}");
    assert!(s.contains("raise the receiver's SO_RCVBUF"), "{s}");
    // Columns dropped at 80 come back.
    assert!(!small.contains("rcv_wnd") && s.contains("rcv_wnd"), "{s}");
    assert!(
        s.contains("softirq per CPU (eBPF)") && s.contains("cpu0"),
        "{s}"
    );
    assert!(
        s.contains(" throughput ") && s.contains(" inflight "),
        "{s}"
    );
    assert!(s.contains("ceilings:"), "{s}");
}

#[test]
fn a_sample_without_tcp_info_or_ebpf_says_no_kernel_view() {
    let mut flow = Flow::rwnd_limited(20_000_000);
    flow.tcp = false;
    let app = app_with(&[flow, flow]);
    let lines = screen(&app, 80, 24);
    let s = text(&lines);
    assert!(s.contains("kernel: no kernel view"), "{s}");
    let rows: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("0 ") || l.trim_start().starts_with("1 "))
        .collect();
    assert_eq!(rows.len(), 2, "{s}");
    for r in rows {
        assert!(r.contains("│no kernel view"), "{r}");
        // No zeros standing in for what was not measured.
        let kernel_half = r.split('│').nth(1).expect("kernel half");
        assert!(!kernel_half.contains('0'), "{r}");
    }
}

#[test]
fn an_ebpf_row_is_the_kernel_half_when_there_is_one() {
    let flows = [Flow::rwnd_limited(20_000_000)];
    let mut app = App::new();
    for mut u in updates(&flows) {
        u.sample.kernel.push(KernelConn {
            cookie: 1000,
            ipv6: false,
            sport: 40000,
            dport: 3000,
            cwnd_segments: 777,
            ssthresh_segments: None,
            snd_wnd_bytes: 3_000_000,
            rcv_wnd_bytes: 65_535,
            srtt_us: 157_000,
            bytes_in_flight: 2_345_000,
            retransmits: 3,
            samples: 10,
            closed: false,
            last_update_age: Duration::from_millis(5),
        });
        app.push(u);
    }
    let s = text(&screen(&app, 100, 30));
    assert!(s.contains("kernel: eBPF"), "{s}");
    let row = s.lines().find(|l| l.starts_with("   0 ")).expect("row 0");
    assert!(
        row.contains("2.3M") && row.contains(" 777 ") && row.contains("157.0ms"),
        "{row}"
    );
}

#[test]
fn s_cycles_the_sort_column_and_reorders_the_rows() {
    let mut app = app_with(&four_flows());
    assert_eq!(row_ids(&screen(&app, 100, 30)), vec![0, 1, 2, 3]);
    assert_eq!(app.handle_key(key(KeyCode::Char('s'))), Action::None);
    assert_eq!(app.sort_key(), SortKey::AppInflight);
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::AppRate);
    let lines = screen(&app, 100, 30);
    assert!(text(&lines).contains("sort: app rate"));
    // 30, 25, 19 and 12 MB/s.
    assert_eq!(row_ids(&lines), vec![3, 1, 0, 2], "{}", text(&lines));
    for _ in 0..SortKey::ALL.len() - 2 {
        app.handle_key(key(KeyCode::Char('s')));
    }
    assert_eq!(app.sort_key(), SortKey::Id);
}

#[test]
fn p_freezes_the_view_while_updates_keep_arriving() {
    let mut app = App::new();
    let before = updates(&[Flow::rwnd_limited(20_000_000)]);
    let after = updates(&[Flow::rwnd_limited(40_000_000)]);
    app.push(before[10].clone());
    app.handle_key(key(KeyCode::Char('p')));
    assert!(app.paused());
    app.push(after[10].clone());
    let s = text(&screen(&app, 100, 30));
    assert!(s.contains("PAUSED"), "{s}");
    assert!(
        s.contains(&units::rate(before[10].sample.ship.bytes_per_s)),
        "{s}"
    );
    assert!(
        !s.contains(&units::rate(after[10].sample.ship.bytes_per_s)),
        "{s}"
    );
    app.handle_key(key(KeyCode::Char('p')));
    let s = text(&screen(&app, 100, 30));
    assert!(!s.contains("PAUSED"), "{s}");
    assert!(
        s.contains(&units::rate(after[10].sample.ship.bytes_per_s)),
        "{s}"
    );
}

#[test]
fn question_mark_shows_the_help_overlay_and_any_key_closes_it() {
    let mut app = app_with(&four_flows());
    assert!(!text(&screen(&app, 80, 24)).contains("help — keys"));
    app.handle_key(key(KeyCode::Char('?')));
    let s = text(&screen(&app, 80, 24));
    assert!(
        s.contains("help — keys") && s.contains("sort the table"),
        "{s}"
    );
    // A key that closes the overlay does nothing else.
    assert_eq!(app.handle_key(key(KeyCode::Char('s'))), Action::None);
    assert_eq!(app.sort_key(), SortKey::Id);
    assert!(!text(&screen(&app, 80, 24)).contains("help — keys"));
}

#[test]
fn arrows_and_pages_scroll_the_table() {
    let flows = vec![Flow::rwnd_limited(1_000_000); 30];
    let mut app = app_with(&flows);
    let first = |app: &App| row_ids(&screen(app, 80, 24))[0];
    assert_eq!(first(&app), 0);
    app.handle_key(key(KeyCode::Down));
    assert_eq!(first(&app), 1);
    let page = row_ids(&screen(&app, 80, 24)).len();
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!(first(&app), 1 + page);
    app.handle_key(key(KeyCode::End));
    assert_eq!(first(&app), 29);
    app.handle_key(key(KeyCode::Down));
    assert_eq!(first(&app), 29, "scrolling stops at the last row");
    app.handle_key(key(KeyCode::Up));
    assert_eq!(first(&app), 28);
    app.handle_key(key(KeyCode::Home));
    assert_eq!(first(&app), 0);
}

#[test]
fn tab_moves_the_focus_and_the_arrows_follow_it() {
    let mut app = app_with(&four_flows());
    assert_eq!(app.focus(), Focus::Table);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Verdict);
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.table_scroll(), 0, "the table did not move");
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Cpus);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Table);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.focus(), Focus::Cpus);
}

#[test]
fn q_quits_r_records_and_ctrl_c_quits() {
    let mut app = App::new();
    assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(
        app.handle_key(key(KeyCode::Char('r'))),
        Action::ToggleRecord
    );
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
    // Seeking is the replay's: live, the arrows sideways do nothing.
    assert_eq!(app.handle_key(key(KeyCode::Left)), Action::None);
}

#[test]
fn recording_shows_rec_and_its_path() {
    let mut app = app_with(&four_flows());
    app.set_recording(Some(PathBuf::from("/tmp/run.jsonl")));
    let s = text(&screen(&app, 100, 30));
    assert!(
        s.contains("● REC") && s.contains("REC → /tmp/run.jsonl"),
        "{s}"
    );
}

#[test]
fn before_any_verdict_the_banner_says_why() {
    let mut app = App::new();
    assert!(text(&screen(&app, 80, 24)).contains("waiting for the first sample"));
    app.push(updates(&four_flows())[0].clone());
    let s = text(&screen(&app, 80, 24));
    assert!(
        s.contains("no verdict yet: the engine needs two samples"),
        "{s}"
    );
}

#[test]
fn chart_history_is_bounded() {
    let mut app = App::new();
    let flows = [Flow::rwnd_limited(1_000_000)];
    for k in 0..(HISTORY as u64 + 50) {
        app.push(Update {
            sample: sample(&flows, k),
            diagnosis: None,
        });
    }
    assert_eq!(app.view().history.len(), HISTORY);
    // A sample older than the newest starts a new run.
    app.push(Update {
        sample: sample(&flows, 0),
        diagnosis: None,
    });
    assert_eq!(app.view().history.len(), 1);
}

#[test]
fn tiny_terminals_do_not_panic() {
    let app = app_with(&four_flows());
    let mut help = app_with(&four_flows());
    help.handle_key(key(KeyCode::Char('?')));
    for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 8)] {
        screen(&app, w, h);
        screen(&help, w, h);
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "xdr-tui-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_recording_reads_back_as_the_same_samples() {
    let dir = TempDir::new("rec");
    let mut rec = Recorder::new(&dir.0);
    let path = rec.toggle().expect("start").expect("a file");
    assert!(path.starts_with(&dir.0));
    let samples: Vec<Sample> = updates(&four_flows())
        .into_iter()
        .map(|u| u.sample)
        .collect();
    for s in &samples {
        rec.write(s).expect("write");
    }
    assert_eq!(rec.toggle().expect("stop"), None);
    // Not recording: nothing written.
    rec.write(&samples[0]).expect("no-op");
    let read = replay::read_recording(&path).expect("read");
    assert_eq!(read, samples);
    assert_eq!(rec.files(), &[path]);
}

#[test]
fn the_reader_names_the_line_of_a_bad_or_foreign_version_line() {
    let good = sample(&four_flows(), 1).to_json_line().expect("encode");
    let name = PathBuf::from("run.jsonl");
    let bad = format!("{good}\n\n{{not json\n");
    let err = read_samples(bad.as_bytes(), &name).unwrap_err();
    assert!(matches!(err, ReplayError::Line { line: 3, .. }), "{err}");
    assert!(err.to_string().starts_with("run.jsonl: line 3: "), "{err}");
    let foreign = format!("{good}\n{}\n", good.replacen("\"v\":1", "\"v\":7", 1));
    let err = read_samples(foreign.as_bytes(), &name).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 2: recording line is version 7; this build reads version 1"),
        "{err}"
    );
    let err = read_samples("\n\n".as_bytes(), &name).unwrap_err();
    assert!(matches!(err, ReplayError::Empty { .. }), "{err}");
    assert_eq!(
        read_samples(format!("{good}\n\n{good}\n").as_bytes(), &name)
            .expect("blank lines are skipped")
            .len(),
        2
    );
}

#[test]
fn text_mode_prints_a_line_per_sample_and_the_final_verdict() {
    let samples: Vec<Sample> = updates(&four_flows())
        .into_iter()
        .map(|u| u.sample)
        .collect();
    let mut out = Vec::new();
    write_text(&samples, Duration::from_secs(10), &mut out).expect("write");
    let out = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("no verdict yet"), "{out}");
    assert!(lines[0].trim_start().starts_with("0.0s"), "{out}");
    for l in &lines[1..samples.len()] {
        assert!(l.contains("limit: receiver window (60%)"), "{out}");
    }
    assert!(
        lines[10].contains(&units::rate(samples[10].ship.bytes_per_s)),
        "{out}"
    );
    let mut d = Diagnoser::new(Duration::from_secs(10));
    for s in &samples {
        d.push(s.clone());
    }
    let report = d.verdict().expect("a verdict").report();
    assert!(out.ends_with(&format!("final verdict, {report}")), "{out}");
    assert!(
        out.contains("remedy: raise the receiver's SO_RCVBUF"),
        "{out}"
    );
}

#[test]
fn a_line_for_a_sample_has_time_throughput_and_verdict() {
    let u = &updates(&four_flows())[10];
    let line = text_line(&u.sample, u.diagnosis.as_ref());
    assert!(line.starts_with("    10.0s "), "{line}");
    assert!(
        line.contains(&format!("{:.0} rec/s", u.sample.ship.throughput)),
        "{line}"
    );
    assert!(
        line.contains("limit: receiver window (60%) — peer window"),
        "{line}"
    );
}

#[test]
fn seeking_replays_from_the_start_to_the_same_verdict() {
    let mut flows = four_flows();
    let mut samples: Vec<Sample> = updates(&flows).into_iter().map(|u| u.sample).collect();
    // The second half of the run loses 2% and its window collapses: the
    // verdict at sample 5 differs from the one at the end.
    flows[0].retrans_per_s = 300;
    samples.extend((11..22).map(|k| sample(&flows, k)));
    let window = Duration::from_secs(10);

    let mut played = App::for_replay(Player::new(samples.clone(), window, 1.0).status());
    let mut player = Player::new(samples.clone(), window, 1.0);
    for _ in 0..6 {
        played.push(player.step().expect("a sample"));
    }

    let mut sought = App::for_replay(player.status());
    let mut other = Player::new(samples.clone(), window, 1.0);
    while let Some(u) = other.step() {
        sought.push(u);
    }
    // Back from the end to sample 6, in steps.
    other.act(Action::Seek(-10), std::time::Instant::now(), &mut sought);
    other.act(Action::Seek(-6), std::time::Instant::now(), &mut sought);
    assert_eq!(other.status().shown, 6);
    assert_eq!(sought.shown(), played.shown());
    played.set_replay(other.status());
    assert_eq!(
        text(&screen(&sought, 100, 30)),
        text(&screen(&played, 100, 30))
    );
    // Seeking stops at the ends.
    other.act(Action::Seek(-100), std::time::Instant::now(), &mut sought);
    assert_eq!(other.status().shown, 1);
    other.act(Action::Seek(100), std::time::Instant::now(), &mut sought);
    assert_eq!(other.status().shown, samples.len());
}

#[test]
fn the_player_keeps_the_recorded_pace_times_the_speed() {
    let samples: Vec<Sample> = updates(&four_flows())
        .into_iter()
        .map(|u| u.sample)
        .collect();
    let mut player = Player::new(samples, Duration::from_secs(10), 4.0);
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    assert_eq!(player.poll(t0, &mut out), FeedState::Open);
    assert_eq!(out.len(), 1, "the first sample at once");
    // Samples are 1 s apart: at ×4, the next is due 250 ms later.
    assert_eq!(player.next_due(), Some(t0 + Duration::from_millis(250)));
    player.poll(t0 + Duration::from_millis(249), &mut out);
    assert_eq!(out.len(), 1);
    player.poll(t0 + Duration::from_millis(250), &mut out);
    assert_eq!(out.len(), 2);
    // Paused, nothing is due and nothing comes.
    let mut app = App::for_replay(player.status());
    player.act(Action::TogglePlay, t0, &mut app);
    assert!(!player.status().playing);
    assert_eq!(player.next_due(), None);
    player.poll(t0 + Duration::from_secs(60), &mut out);
    assert_eq!(out.len(), 2);
    // At the end the feed says so.
    player.act(Action::TogglePlay, t0, &mut app);
    let mut t = t0;
    let mut state = FeedState::Open;
    for _ in 0..20 {
        t += Duration::from_secs(1);
        state = player.poll(t, &mut out);
    }
    assert_eq!(state, FeedState::Ended);
    assert_eq!(out.len(), 11);
}

#[test]
fn a_replay_played_to_its_end_has_nothing_due_so_the_loop_rests() {
    let samples: Vec<Sample> = updates(&four_flows())
        .into_iter()
        .map(|u| u.sample)
        .collect();
    let total = samples.len();
    let mut player = Player::new(samples, Duration::from_secs(10), 1.0);
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    let mut t = t0;
    while player.poll(t, &mut out) == FeedState::Open {
        t += Duration::from_secs(1);
    }
    assert_eq!(out.len(), total);
    // Still "playing" at its last sample: a due time in the past would
    // make the screen's loop wait zero and spin.
    assert_eq!(player.next_due(), None);
}

#[test]
fn replay_keys_drive_the_player_not_the_view() {
    let samples: Vec<Sample> = updates(&four_flows())
        .into_iter()
        .map(|u| u.sample)
        .collect();
    let mut app = App::for_replay(Player::new(samples, Duration::from_secs(10), 1.0).status());
    assert_eq!(app.handle_key(key(KeyCode::Char(' '))), Action::TogglePlay);
    assert_eq!(app.handle_key(key(KeyCode::Char('p'))), Action::TogglePlay);
    assert!(!app.paused());
    assert_eq!(app.handle_key(key(KeyCode::Left)), Action::Seek(-1));
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Right, KeyModifiers::SHIFT)),
        Action::Seek(10)
    );
}

#[test]
fn in_the_verdict_pane_the_arrows_scroll_the_evidence() {
    let mut app = app_with(&four_flows());
    let evidence = |app: &App| {
        screen(app, 80, 24)
            .into_iter()
            .find(|l| l.starts_with("  · "))
            .expect("an evidence line")
    };
    let first = evidence(&app);
    assert!(
        first.contains("rwnd-limited 60%"),
        "the top limit's evidence first: {first}"
    );
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Down));
    let second = evidence(&app);
    assert_ne!(first, second);
    app.handle_key(key(KeyCode::Up));
    assert_eq!(evidence(&app), first);
}

#[test]
fn text_cut_to_fit_ends_in_an_ellipsis() {
    let lines = super::render::wrap("one two three four five six", 9);
    assert_eq!(lines, ["one two", "three", "four five", "six"]);
    let app = app_with(&four_flows());
    let s = text(&screen(&app, 80, 24));
    // The top evidence is longer than a line at 80 columns.
    assert!(
        s.lines()
            .any(|l| l.starts_with("  · ") && l.trim_end().ends_with('…')),
        "{s}"
    );
}

#[test]
fn the_live_feed_takes_what_is_queued_without_waiting_and_sees_the_end() {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let mut feed = super::term::Live(rx);
    let now = std::time::Instant::now();
    let mut out = Vec::new();
    assert_eq!(feed.poll(now, &mut out), FeedState::Open);
    assert!(out.is_empty(), "an empty channel does not block");
    let u = updates(&four_flows()).pop().expect("an update");
    for _ in 0..300 {
        tx.try_send(u.clone()).expect("room");
    }
    assert_eq!(feed.poll(now, &mut out), FeedState::Open);
    assert_eq!(out.len(), 256, "a burst is taken in bounded turns");
    drop(tx);
    // The rest still arrives, with the news that nothing more will.
    assert_eq!(feed.poll(now, &mut out), FeedState::Ended);
    assert_eq!(out.len(), 300);
}

/// The whole screen, for a person to read in review: `snapshots/`.
#[test]
fn snapshot_of_a_receiver_window_limited_shipper_at_80x24_and_160x48() {
    let app = app_with(&four_flows());
    insta::assert_snapshot!("rwnd_80x24", text(&screen(&app, 80, 24)));
    insta::assert_snapshot!("rwnd_160x48", text(&screen(&app, 160, 48)));
}

#[test]
fn snapshot_of_the_help_overlay_at_80x24() {
    let mut app = app_with(&four_flows());
    app.handle_key(key(KeyCode::Char('?')));
    insta::assert_snapshot!("help_80x24", text(&screen(&app, 80, 24)));
}

#[test]
fn a_sample_without_connections_says_so() {
    let app = app_with(&[]);
    let s = text(&screen(&app, 80, 24));
    assert!(
        s.contains("connections (0)") && s.contains("no connections in this sample"),
        "{s}"
    );
}

/// The README's replay example: a shipped recording is zstd.
fn shipped_recording() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/diagnose/recordings/lab-rwnd.jsonl.zst")
}

#[test]
fn a_zstd_recording_reads_the_same_samples_as_its_plain_lines() {
    let compressed = std::fs::read(shipped_recording()).expect("the shipped recording");
    let plain = zstd::stream::decode_all(&compressed[..]).expect("zstd");
    let plain_samples = read_samples(&plain[..], Path::new("plain")).expect("the plain lines read");
    let read = replay::read_recording(&shipped_recording()).expect("the .zst reads");
    assert!(!read.is_empty());
    assert_eq!(read, plain_samples);
}

#[test]
fn a_zstd_recording_is_recognised_by_content_not_name() {
    let compressed = std::fs::read(shipped_recording()).expect("the shipped recording");
    let path = std::env::temp_dir().join(format!("xdr-ship-renamed-{}.jsonl", std::process::id()));
    std::fs::write(&path, &compressed).expect("write");
    let read = replay::read_recording(&path);
    let _ = std::fs::remove_file(&path);
    assert!(!read.expect("a renamed .zst still reads").is_empty());
}

#[test]
fn the_ceilings_name_the_congestion_window_and_the_link_apart() {
    let s = text(&screen(&app_with(&four_flows()), 160, 48));
    let line = s
        .lines()
        .find(|l| l.contains("ceilings:"))
        .unwrap_or_else(|| panic!("no ceilings line:\n{s}"));
    assert!(line.contains("congestion window "), "{line}");
    assert!(line.contains("link "), "{line}");
    assert_eq!(line.matches("bandwidth").count(), 0, "{line}");
}

#[test]
fn a_rate_in_the_hundreds_of_kilobytes_shows_whole_in_both_rate_columns() {
    // ~832 KB/s: the longest compact rate, "NNN.NK/s".
    let flows = vec![Flow::rwnd_limited(832_600); 4];
    let app = app_with(&flows);
    let u = updates(&flows).pop().expect("an update");
    let c = &u.sample.ship.connections[0];
    let rate = format!("{}/s", render::bytes(c.bytes_per_s));
    let tcp = c.tcp.as_ref().expect("TCP_INFO");
    let deliv = format!("{}/s", render::bytes(tcp.delivery_rate_bytes_per_s as f64));
    assert_eq!(rate.len(), "999.9K/s".len(), "{rate}");
    assert_eq!(deliv.len(), "999.9K/s".len(), "{deliv}");
    for (w, h) in [(80, 24), (160, 48)] {
        let s = text(&screen(&app, w, h));
        let row = s
            .lines()
            .find(|l| l.trim_start().starts_with("0 "))
            .unwrap_or_else(|| panic!("no row for conn 0:\n{s}"));
        assert!(row.contains(&format!(" {rate}│")), "{w}x{h}: {row}");
        assert!(row.contains(&format!(" {deliv} ")), "{w}x{h}: {row}");
    }
}

#[test]
fn on_loopback_the_header_shows_no_share_of_a_meaningless_bdp() {
    let mut app = App::new();
    for mut u in updates(&four_flows()) {
        if let Some(d) = u.diagnosis.as_mut() {
            // A loopback RTT of a few microseconds: "BDP 1 B".
            d.bdp_bytes = Some(1);
        }
        app.push(u);
    }
    let s = text(&screen(&app, 160, 48));
    assert!(!s.contains("of BDP"), "{s}");
    assert!(s.contains("RTT too short for a BDP"), "{s}");
}
