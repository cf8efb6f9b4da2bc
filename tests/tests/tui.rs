//! The real binary in a real terminal: `xdr-ship replay FILE` inside a
//! detached tmux session of 100×30, read back with `capture-pane`. Not
//! root; needs tmux (`cargo xtask setup` installs it). Each test runs its
//! own tmux server (socket named for the test and the process), killed on
//! drop even when the test panics.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use xdr_ship::{
    diagnose::{LinkHints, Sample},
    metrics::{ConnSnapshot, Counters, Latency, ShipSnapshot, TcpSample},
};
use xdr_tests::{xdr_ship_bin, TempDir};

const MSS: u32 = 1448;
const RTT_US: u32 = 156_000;
const RECORD_BYTES: u64 = 1024;
/// The verdict banner names one of the limits, in capitals.
const LIMITS: [&str; 9] = [
    "APPLICATION",
    "BANDWIDTH",
    "DESTINATION",
    "RECEIVER WINDOW",
    "SENDER BUFFER",
    "LOSS",
    "INTERRUPTS",
    "IDLE",
    "UNKNOWN",
];

/// Sample `k` of a shipper whose four connections spend 60% of their time
/// held back by a 3 MB peer window, on a 100 MB/s link of 156 ms.
fn sample(k: u64) -> Sample {
    let mut ship = ShipSnapshot {
        elapsed_s: k as f64,
        destination: "frankfurt:3000".into(),
        mode: "ordered".into(),
        outstanding: 50_000,
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
    for id in 0..4 {
        let bytes_per_s = 20_000_000 + 1_000_000 * id as u64;
        let records_per_s = bytes_per_s / RECORD_BYTES;
        let delivered = records_per_s * k;
        let us = k * 1_000_000;
        let c = ConnSnapshot {
            id,
            node: None,
            cookie: 1000 + id as u64,
            connected: true,
            inflight: 1500,
            inflight_bytes: 1500 * RECORD_BYTES,
            window: 4096,
            acks_per_s: records_per_s as f64,
            bytes_per_s: (records_per_s * RECORD_BYTES) as f64,
            window_limited: false,
            counters: Counters {
                shipped: delivered + 1500,
                success: delivered,
                acked_bytes: delivered * RECORD_BYTES,
                ..Counters::default()
            },
            tcp: Some(TcpSample {
                cwnd_segments: 1000,
                ssthresh_segments: 0,
                mss_bytes: MSS,
                srtt_us: RTT_US,
                min_rtt_us: RTT_US,
                unacked_segments: 1000,
                snd_wnd_bytes: 3_000_000,
                rcv_wnd_bytes: 65_535,
                notsent_bytes: 1_000_000,
                delivery_rate_bytes_per_s: bytes_per_s,
                app_limited: false,
                busy_us: us,
                rwnd_limited_us: us * 6 / 10,
                sndbuf_limited_us: 0,
                total_retrans: 0,
                bytes_acked: bytes_per_s * k,
            }),
        };
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
        softirq: None,
        link: LinkHints {
            rtt: None,
            bandwidth_bytes_per_s: Some(100_000_000),
        },
        kernel: Vec::new(),
        owners: Vec::new(),
        device: None,
    }
}

fn write_recording(path: &Path, samples: u64) {
    let lines: Vec<String> = (0..samples)
        .map(|k| sample(k).to_json_line().expect("encode"))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write the recording");
}

/// A tmux server of our own with one detached session; killed on drop.
struct Tmux {
    socket: String,
    session: String,
    /// The server's socket file (tmux leaves it behind when killed).
    socket_path: Option<std::path::PathBuf>,
}

impl Tmux {
    /// Starts `command` (run by `sh -c`) in a `width`×`height` session.
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Self {
        let id = format!("xdr-{tag}-{}", std::process::id());
        let mut tmux = Self {
            socket: id.clone(),
            session: id,
            socket_path: None,
        };
        let ok = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d"])
            .args([
                "-s",
                &tmux.session,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .args(["sh", "-c", command])
            .status()
            .expect("tmux runs (install it: cargo xtask setup)")
            .success();
        assert!(ok, "tmux new-session failed");
        let path = tmux.cmd(&["display", "-p", "-t", &tmux.session, "#{socket_path}"]);
        tmux.socket_path = Some(path.trim().into());
        tmux
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's screen as text.
    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", &self.session, keys]);
    }

    /// Waits until the screen satisfies `done` (described by `what`);
    /// panics with the screen after `timeout`.
    fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "after {timeout:?} the screen still does not show {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen contains every one of `needles`.
    fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        self.wait_until(&format!("{needles:?}"), timeout, |s| {
            needles.iter().all(|n| s.contains(n))
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn replay_in_a_real_terminal_shows_the_verdict_help_and_restores_the_terminal_on_q() {
    let dir = TempDir::new("tui-replay");
    let file = dir.0.join("run.jsonl");
    write_recording(&file, 11);
    // The shell reports how replay exited and whether the tty is as before.
    let command = format!(
        "before=$(stty -g); '{bin}' replay '{file}' --speed 10; rc=$?; \
         if [ \"$(stty -g)\" = \"$before\" ]; then echo 'tty restored'; else echo 'tty NOT restored'; fi; \
         echo \"replay exited $rc\"; sleep 600",
        bin = xdr_ship_bin().display(),
        file = file.display(),
    );
    let tmux = Tmux::start("tui", 100, 30, &command);

    let screen = tmux.wait_for(
        &[
            "RECEIVER WINDOW 60%",
            "raise the receiver's SO_RCVBUF",
            "net.core.rmem_max",
            "end of the recording",
        ],
        Duration::from_secs(20),
    );
    eprintln!("{screen}");
    assert!(screen.contains("→ frankfurt:3000"), "{screen}");
    assert!(screen.contains("⏸ 11/11 ×10"), "{screen}");
    assert!(screen.contains("limited by"), "{screen}");
    assert_eq!(
        tmux.cmd(&["display", "-p", "-t", &tmux.session, "#{alternate_on}"])
            .trim(),
        "1"
    );

    tmux.keys("?");
    let help = tmux.wait_for(&["help — keys", "sort the table"], Duration::from_secs(5));
    eprintln!("{help}");
    tmux.keys("Escape");
    let closed = tmux.wait_until("the help closed", Duration::from_secs(5), |s| {
        !s.contains("help — keys")
    });
    assert!(closed.contains("RECEIVER WINDOW 60%"), "{closed}");

    // Smaller terminal: redrawn to fit, the verdict and remedy still there.
    tmux.cmd(&["resize-window", "-t", &tmux.session, "-x", "80", "-y", "24"]);
    let small = tmux.wait_until("a redraw at 80 columns", Duration::from_secs(5), |s| {
        s.contains("RECEIVER WINDOW 60%")
            && s.contains("→ raise the receiver's SO_RCVBUF")
            && s.lines().all(|l| l.chars().count() <= 80)
            && s.lines()
                .any(|l| l.contains("conn ") && l.ends_with("limited by"))
    });
    eprintln!("{small}");

    tmux.keys("q");
    let after = tmux.wait_for(&["replay exited 0"], Duration::from_secs(10));
    assert!(after.contains("tty restored"), "{after}");
    assert!(
        !after.contains("RECEIVER WINDOW"),
        "the TUI is still on screen:\n{after}"
    );
    assert_eq!(
        tmux.cmd(&["display", "-p", "-t", &tmux.session, "#{alternate_on}"])
            .trim(),
        "0"
    );
}

/// CPU the replay may use over [`IDLE`] at rest at the end of a recording.
const IDLE_CPU_BUDGET: Duration = Duration::from_millis(100);
/// How long the replay is watched at rest.
const IDLE: Duration = Duration::from_secs(5);

/// The CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name's closing parenthesis start at field 3
    // (state); utime and stime are fields 14 and 15, in clock ticks.
    let rest: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        rest[11].parse::<u64>().expect("utime") + rest[12].parse::<u64>().expect("stime");
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let per_s: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_secs_f64(ticks as f64 / per_s as f64)
}

#[test]
fn replay_at_rest_at_the_end_of_a_recording_costs_almost_no_cpu() {
    let dir = TempDir::new("tui-idle");
    let file = dir.0.join("run.jsonl");
    write_recording(&file, 11);
    // `exec`: the pane's process is the replay itself.
    let command = format!(
        "exec '{bin}' replay '{file}' --speed 10",
        bin = xdr_ship_bin().display(),
        file = file.display(),
    );
    let tmux = Tmux::start("tui-idle", 100, 30, &command);
    tmux.wait_for(&["end of the recording"], Duration::from_secs(20));
    let pid: u32 = tmux
        .cmd(&["display", "-p", "-t", &tmux.session, "#{pane_pid}"])
        .trim()
        .parse()
        .expect("the pane's pid");
    let before = cpu_time(pid);
    std::thread::sleep(IDLE);
    let used = cpu_time(pid).saturating_sub(before);
    eprintln!("replay at rest used {used:?} of CPU in {IDLE:?}");
    assert!(
        used < IDLE_CPU_BUDGET,
        "replay at rest used {used:?} of CPU in {IDLE:?} (budget {IDLE_CPU_BUDGET:?})"
    );
}

#[test]
fn replay_of_a_foreign_recording_names_the_line() {
    let dir = TempDir::new("tui-foreign");
    let file = dir.0.join("run.jsonl");
    let good = sample(0).to_json_line().expect("encode");
    let foreign = good.replacen("\"v\":1", "\"v\":9", 1);
    std::fs::write(&file, format!("{good}\n{foreign}\n")).expect("write");
    let (ok, _, err) = xdr_tests::run_xdr_ship(
        &["replay", file.to_str().expect("utf-8 path"), "--text"],
        Duration::from_secs(20),
    );
    assert!(!ok);
    assert!(
        err.contains("line 2: recording line is version 9; this build reads version 1"),
        "{err}"
    );
}

#[test]
fn replay_without_a_terminal_prints_text_and_the_final_verdict() {
    let dir = TempDir::new("tui-text");
    let file = dir.0.join("run.jsonl");
    write_recording(&file, 11);
    // stdout is a pipe here: text mode without asking.
    let (ok, out, err) = xdr_tests::run_xdr_ship(
        &["replay", file.to_str().expect("utf-8 path")],
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" rec/s ")).count(),
        11,
        "{out}"
    );
    assert!(
        out.contains("final verdict, window 10.00s (11 samples)"),
        "{out}"
    );
    assert!(
        out.contains("remedy: raise the receiver's SO_RCVBUF"),
        "{out}"
    );
}

#[test]
fn r_records_the_samples_a_replay_plays_and_q_leaves_the_file_complete() {
    let dir = TempDir::new("tui-record");
    let file = dir.0.join("run.jsonl");
    let excerpts = dir.0.join("excerpts");
    std::fs::create_dir(&excerpts).expect("mkdir");
    write_recording(&file, 11);
    let command = format!(
        "'{bin}' replay '{file}' --speed 10 --record-to '{excerpts}'; echo \"replay exited $?\"; sleep 600",
        bin = xdr_ship_bin().display(),
        file = file.display(),
        excerpts = excerpts.display(),
    );
    let tmux = Tmux::start("tui-rec", 100, 30, &command);
    tmux.wait_for(&["end of the recording"], Duration::from_secs(20));

    // Start recording, play the recording again from the start.
    tmux.keys("r");
    let screen = tmux.wait_for(&["● REC", "REC → "], Duration::from_secs(5));
    assert!(screen.contains(&excerpts.display().to_string()), "{screen}");
    tmux.keys("Space");
    let written = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&excerpts)
            .expect("read the directory")
            .map(|e| e.expect("entry").path())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = written().first().map_or(0, |p| {
            std::fs::read_to_string(p).expect("read").lines().count()
        });
        if lines == 11 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lines} of 11 lines recorded:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys("r");
    tmux.wait_until("REC gone", Duration::from_secs(5), |s| !s.contains("● REC"));
    tmux.keys("q");
    tmux.wait_for(&["replay exited 0"], Duration::from_secs(10));

    let files = written();
    assert_eq!(files.len(), 1, "{files:?}");
    let recorded: Vec<Sample> = std::fs::read_to_string(&files[0])
        .expect("read")
        .lines()
        .map(|l| Sample::from_json_line(l).expect("a sample line"))
        .collect();
    let played: Vec<Sample> = (0..11).map(sample).collect();
    assert_eq!(recorded, played);
}

#[test]
fn the_live_screen_of_a_real_shipper_shows_its_connections_and_a_verdict_and_q_stops_it() {
    // A receiver on loopback, and `xdr-ship tui` shipping to it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _recv = xdr_tests::ChildGuard(
        Command::new(xdr_ship_bin())
            .args(["recv", "--memory", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start recv"),
    );
    let command = format!(
        "'{bin}' tui --to 127.0.0.1:{port} --connections 4 --window 16 \
         --generate 2000,1000,1000 --duration 60s --no-ebpf; echo \"tui exited $?\"; sleep 600",
        bin = xdr_ship_bin().display(),
    );
    let tmux = Tmux::start("tui-live", 100, 30, &command);
    // The verdict banner names one of the limits, in capitals, once the
    // engine has two samples.
    let screen = tmux.wait_until("a verdict", Duration::from_secs(30), |s| {
        s.contains("connections (4)") && LIMITS.iter().any(|l| s.contains(l))
    });
    println!("{screen}");
    assert!(screen.contains("127.0.0.1:"), "{screen}");
    tmux.keys("q");
    let screen = tmux.wait_for(&["tui exited 0"], Duration::from_secs(40));
    assert!(screen.contains("done: delivered"), "{screen}");
}

#[test]
fn observe_on_the_live_screen_judges_a_flow_xdr_ship_did_not_make_and_q_stops_it() {
    // iperf3 on loopback, rate-capped: a flow of a process we did not write.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _server = xdr_tests::ChildGuard(
        Command::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start iperf3 -s (install it: cargo xtask setup)"),
    );
    xdr_tests::wait_listening_ss(|| Command::new("ss"), port, Duration::from_secs(10));
    let _client = xdr_tests::ChildGuard(
        Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "60", "-b", "20M"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start iperf3 -c"),
    );
    let command = format!(
        "'{bin}' observe --tui --port {port} --no-ebpf; echo \"observe exited $?\"; sleep 600",
        bin = xdr_ship_bin().display(),
    );
    let tmux = Tmux::start("observe-live", 100, 30, &command);
    // Rate-capped well below what loopback carries: the sending process is
    // the limit, and the verdict names it.
    let screen = tmux.wait_until(
        "a verdict for the iperf3 flow",
        Duration::from_secs(30),
        |s| s.contains(&format!("observe: port {port}")) && LIMITS.iter().any(|l| s.contains(l)),
    );
    println!("{screen}");
    assert!(screen.contains("APPLICATION"), "{screen}");
    assert!(
        screen.contains("iperf3 (pid"),
        "the process is named: {screen}"
    );
    tmux.keys("q");
    tmux.wait_for(&["observe exited 0"], Duration::from_secs(20));
}
