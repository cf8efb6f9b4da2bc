//! The binary as a shell user meets it: what it does when its stdout goes
//! away (`| head`), and how `recv --config FILE` reads its settings.
use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
};

fn shipped_recording() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/diagnose/recordings/lab-rwnd.jsonl.zst")
}

/// Copies of the shipped recording's lines in one plain file: more text
/// than a pipe holds, so the writer meets the closed pipe mid-run.
const COPIES: usize = 200;

#[test]
fn a_closed_stdout_ends_replay_text_quietly_without_a_panic() {
    let plain = zstd::stream::decode_all(&std::fs::read(shipped_recording()).expect("read")[..])
        .expect("zstd");
    let long = std::env::temp_dir().join(format!("xdr-ship-cli-long-{}.jsonl", std::process::id()));
    std::fs::write(&long, plain.repeat(COPIES)).expect("write the long recording");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["replay", "--text", "--window", "5s"])
        .arg(&long)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xdr-ship");
    // `head -1`: read one line, then close the pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    let n = stdout.read(&mut first).expect("read the first bytes");
    assert!(n > 0, "replay printed nothing");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let _ = std::fs::remove_file(&long);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_ne!(out.status.code(), Some(101), "stderr: {stderr}");
    assert!(
        stderr.is_empty(),
        "a closed stdout is not an error to report: {stderr}"
    );
}

#[test]
fn the_readmes_replay_example_reads_a_zstd_recording() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["replay", "--text", "--window", "5s"])
        .arg(shipped_recording())
        .output()
        .expect("run xdr-ship");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        out.stdout.len() > 100,
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn version_says_whether_the_kernel_programs_are_embedded_and_the_tcp_probe_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .arg("--version")
        .output()
        .expect("run xdr-ship");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let embedded = xdr_ship::probe::ebpf::built_with_kernel_programs();
    let line = text
        .lines()
        .find(|l| l.starts_with("kernel programs: "))
        .unwrap_or_else(|| panic!("no kernel programs line: {text}"));
    assert_eq!(
        line.starts_with("kernel programs: embedded"),
        embedded,
        "{text}"
    );
    let path = xdr_ship::probe::ebpf::expected_tcp_probe_path().to_string();
    assert!(
        text.contains(&format!("tcp_probe on this kernel: {path}")),
        "{text}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("xdr-ship-cli-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config");
    path
}

/// The first line `recv` prints (its listening line), then it is killed.
fn recv_listening_line(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .arg("recv")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn recv");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("recv printed no listening line within 20 s")
}

#[test]
fn recv_takes_its_settings_from_the_config_file() {
    let port = free_port();
    let cfg = write_config(
        "recv-ok",
        &format!("listen = \"127.0.0.1:{port}\"\nmemory = true\n\n[limits]\nrcvbuf = \"1MiB\"\n"),
    );
    let line = recv_listening_line(&["--config", cfg.to_str().expect("utf-8")]);
    let _ = std::fs::remove_file(&cfg);
    assert!(
        line.starts_with(&format!("recv: listening on 127.0.0.1:{port} ")),
        "{line}"
    );
    assert!(line.contains("memory"), "{line}");
}

#[test]
fn a_recv_flag_overrides_the_config_file() {
    let (in_file, on_flag) = (free_port(), free_port());
    let cfg = write_config(
        "recv-override",
        &format!("listen = \"127.0.0.1:{in_file}\"\nmemory = true\n"),
    );
    let line = recv_listening_line(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "--listen",
        &format!("127.0.0.1:{on_flag}"),
    ]);
    let _ = std::fs::remove_file(&cfg);
    assert!(
        line.starts_with(&format!("recv: listening on 127.0.0.1:{on_flag} ")),
        "{line}"
    );
}

#[test]
fn a_bad_key_in_the_recv_config_is_an_error_naming_the_key_and_its_line() {
    let cfg = write_config(
        "recv-bad",
        "memory = true\n\n[limits]\nmax-conections = 4\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["recv", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run recv");
    let _ = std::fs::remove_file(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "recv accepted a bad key: {stderr}");
    assert!(
        stderr.contains(&format!("{}: line 4, key `max-conections`", cfg.display())),
        "{stderr}"
    );
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `ship --duration 3s --drain-timeout 2s` where nothing listens: the run
/// ends by itself (not minutes later), fails with a reason, and says the
/// 64 connections' identical failure once per few seconds, not 64 times a
/// round.
#[test]
fn shipping_to_nothing_ends_within_its_duration_with_one_line_per_problem() {
    let to = format!("127.0.0.1:{}", closed_port());
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["ship", "--to", &to, "--generate", "max,100,1000"])
        .args(["--duration", "3s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xdr-ship");
    // Read stderr while it runs: a child that fills an unread pipe blocks.
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    // Bounded wait: a run that does not end is killed and fails the test.
    let deadline = started + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ship --duration 3s to {to} was still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let stderr = reader.join().expect("stderr reader");
    // The default drain timeout (30 s) is for answers in flight; none
    // were ever sent.
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "took {elapsed:?}: {stderr}"
    );
    assert!(!status.success(), "exit {status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("no connection to {to} could be opened")),
        "{stderr}"
    );
    let connect_lines = stderr
        .lines()
        .filter(|l| l.contains("connect to") && l.contains("failed"))
        .count();
    assert!(
        (1..=3).contains(&connect_lines),
        "{connect_lines} connect-failure lines: {stderr}"
    );
    assert!(
        stderr.contains(" connection)") || stderr.contains(" connections)"),
        "the line says how many connections it affects: {stderr}"
    );
    let sndbuf_lines = stderr.lines().filter(|l| l.contains("SO_SNDBUF")).count();
    assert!(
        sndbuf_lines <= 3,
        "{sndbuf_lines} SO_SNDBUF lines: {stderr}"
    );
    let drain_lines = stderr
        .lines()
        .filter(|l| l.contains("drain timed out"))
        .count();
    assert!(
        drain_lines <= 1,
        "the drain timeout is said once, not {drain_lines} times: {stderr}"
    );
}

/// Kills and reaps the child on drop, even when the test panics.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_closed_stdout_ends_ship_quietly_with_success() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut recv = Reaped(
        Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
            .args(["recv", "--listen", &addr, "--memory", "--insecure"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn recv"),
    );
    // Its listening line: it accepts from here on.
    let mut line = [0u8; 1];
    recv.0
        .stdout
        .as_mut()
        .expect("recv stdout")
        .read_exact(&mut line)
        .expect("recv printed its listening line");
    let mut ship = Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
        .args(["ship", "--to", &addr, "--generate", "2000,100,100"])
        .args(["--duration", "2s", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ship");
    // `head -c 16`: a few bytes, then the pipe closes while ship runs on
    // and still has its per-interval lines and its summary to print.
    let mut stdout = ship.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout
        .read_exact(&mut first)
        .expect("ship printed its header");
    drop(stdout);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = ship.try_wait().expect("wait for ship") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ship did not end 30 s into a 2 s run"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    ship.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}
