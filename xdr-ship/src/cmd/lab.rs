//! The `xdr-ship lab` subcommands: `up`, `run`, `status`, `down`.
//!
//! A thin edge over [`xdr_ship::lab::Lab`]: parse flags (a bad value names its flag
//! and the accepted form), bring the lab up, and turn Ctrl-C and SIGTERM into
//! a normal return so the lab's `Drop` tears everything down.
use std::{future::Future, pin::Pin, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    signal::unix::{signal, SignalKind},
};

use xdr_ship::lab::{
    config::{self, LinkConfig},
    down_by_name,
    line::LineStats,
    status, Lab, LabError, LabOptions, Side,
};

/// `xdr-ship lab …`
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand, Debug)]
enum LabCommand {
    /// Bring the link up and keep it up (one line of stats per second) until Ctrl-C.
    Up(UpArgs),
    /// Bring the link up, run a far command then a near command across it,
    /// tear down when the near command exits.
    ///
    /// Example: lab run --far 'iperf3 -s -1' --near 'iperf3 -c 198.18.0.2 -t 10'
    Run(RunArgs),
    /// Show a running lab's counters, configured vs measured RTT.
    Status(StatusArgs),
    /// Remove a lab, running or crashed: namespaces, processes in them, status file.
    Down(NameArgs),
}

/// The link's shape, in human units.
#[derive(clap::Args, Debug, Clone)]
pub struct LinkArgs {
    /// Round-trip time of the empty link.
    #[arg(long, default_value = "156ms", value_name = "DURATION", value_parser = rtt_arg)]
    pub rtt: Duration,
    /// Line rate: 100MB/s, 12.5MiB/s, 800Mbit/s, 1Gbit/s.
    #[arg(long, default_value = "100MB/s", value_name = "RATE", value_parser = bandwidth_arg)]
    pub bandwidth: u64,
    /// Random loss per MSS segment, each direction: 0.1% or 0.001.
    #[arg(long, default_value = "0", value_name = "FRACTION", value_parser = loss_arg)]
    pub loss: f64,
    /// One-way delay variation, ±; never reorders.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = jitter_arg)]
    pub jitter: Duration,
    /// Apply `--loss` only to TCP segments from or to this port (repeat for
    /// more ports; default: every segment).
    #[arg(long = "loss-port", value_name = "PORT")]
    pub loss_ports: Vec<u16>,
    /// MTU of the link.
    #[arg(long, default_value = "1500", value_name = "BYTES", value_parser = mtu_arg)]
    pub mtu: u32,
    /// Tail-drop buffer as time at line rate (default: one RTT).
    #[arg(long, value_name = "DURATION", value_parser = queue_arg)]
    pub queue: Option<Duration>,
}

impl LinkArgs {
    /// The link these flags describe.
    pub fn to_config(&self) -> LinkConfig {
        LinkConfig {
            rtt: self.rtt,
            bandwidth_bytes_per_s: self.bandwidth,
            loss: self.loss,
            loss_ports: self.loss_ports.clone(),
            jitter: self.jitter,
            mtu: self.mtu,
            queue: self.queue.unwrap_or(self.rtt),
        }
    }
}

fn rtt_arg(s: &str) -> Result<Duration, String> {
    config::parse_rtt(s).map_err(|e| format!("expected {}", e.expected))
}
fn bandwidth_arg(s: &str) -> Result<u64, String> {
    config::parse_bandwidth(s).map_err(|e| format!("expected {}", e.expected))
}
fn loss_arg(s: &str) -> Result<f64, String> {
    config::parse_loss(s).map_err(|e| format!("expected {}", e.expected))
}
fn jitter_arg(s: &str) -> Result<Duration, String> {
    config::parse_jitter(s).map_err(|e| format!("expected {}", e.expected))
}
fn delay_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| "expected a duration such as 500ms or 2s".to_owned())
}
fn mtu_arg(s: &str) -> Result<u32, String> {
    config::parse_mtu(s).map_err(|e| format!("expected {}", e.expected))
}
fn queue_arg(s: &str) -> Result<Duration, String> {
    config::parse_queue(s).map_err(|e| format!("expected {}", e.expected))
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    link: LinkArgs,
    /// Lab name: namespaces are xdr-NAME-near and xdr-NAME-far.
    #[arg(long, default_value = "lab")]
    name: String,
    /// Raise the host's global net.core.rmem_max/wmem_max if they cap the
    /// link (restored on teardown).
    #[arg(long)]
    tune_host: bool,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    link: LinkArgs,
    /// Lab name (default: run-PID, so parallel runs do not collide).
    #[arg(long)]
    name: Option<String>,
    /// Raise the host's global net.core.rmem_max/wmem_max if they cap the link.
    #[arg(long)]
    tune_host: bool,
    /// Shell command for the far side (started first), e.g. 'iperf3 -s -1'.
    #[arg(long, value_name = "CMD")]
    far: Option<String>,
    /// Shell command for the near side; or give the program and its
    /// arguments after `--`.
    #[arg(long, value_name = "CMD")]
    near: Option<String>,
    /// Time between starting the far command and the near command.
    #[arg(long, default_value = "500ms", value_name = "DURATION", value_parser = delay_arg)]
    far_delay: Duration,
    /// Do not print a line of stats per second.
    #[arg(long)]
    quiet: bool,
    /// The near command as a program and arguments (after `--`).
    #[arg(last = true, value_name = "NEAR_CMD")]
    near_argv: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Print the status file's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct NameArgs {
    /// Lab name.
    #[arg(long, default_value = "lab")]
    name: String,
}

/// Runs a `lab` subcommand. `lab run` exits the process with the near
/// command's exit code (after teardown) when it is not zero.
pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up(a) => up(a).await,
        LabCommand::Run(a) => {
            let code = run_commands(a).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        LabCommand::Status(a) => {
            let path = status::path(&a.name.name);
            if !path.exists() {
                return Err(LabError::NotRunning(a.name.name, path.display().to_string()).into());
            }
            let f = status::StatusFile::read(&path)?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                print!("{}", status::render_status(&f));
            }
            Ok(())
        }
        LabCommand::Down(a) => {
            let report = down_by_name(&a.name)?;
            if report.actions.is_empty() {
                outln!("lab {}: nothing to remove", a.name);
            }
            for line in report.actions {
                outln!("lab {}: {line}", a.name);
            }
            Ok(())
        }
    }
}

fn print_intro(lab: &Lab) {
    let near = lab.namespace(Side::Near);
    let far = lab.namespace(Side::Far);
    outln!("lab {} up: {}", lab.name(), lab.config());
    outln!(
        "  near {} in netns {near}: ip netns exec {near} <command>",
        lab.addr(Side::Near)
    );
    outln!(
        "  far  {} in netns {far}: ip netns exec {far} <command>",
        lab.addr(Side::Far)
    );
    outln!(
        "  e.g. ip netns exec {far} iperf3 -s -1 & ip netns exec {near} iperf3 -c {} -t 10",
        lab.addr(Side::Far)
    );
    outln!(
        "  status: xdr-ship lab status --name {} ({})",
        lab.name(),
        lab.status_path().display()
    );
    for w in lab.warnings() {
        eprintln!("warning: {w}");
    }
}

/// Resolves when Ctrl-C or SIGTERM arrives.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("installing the Ctrl-C handler")?; Ok("Ctrl-C") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    let lab = Lab::up(
        &a.name,
        a.link.to_config(),
        LabOptions {
            tune_host: a.tune_host,
        },
    )?;
    print_intro(&lab);
    outln!("  Ctrl-C to tear down");
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut prev = lab.stats();
    let why = loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = lab.stats();
                outln!("{}", status::render_line(&now, &prev, lab.config()));
                prev = now;
            }
            r = &mut stop => break r?,
        }
    };
    let name = lab.name().to_owned();
    lab.down()?;
    outln!("lab {name} down ({why}): namespaces, TUN devices and processes removed");
    Ok(())
}

/// Copies a child's output to ours, line by line, with a prefix.
async fn forward(prefix: &'static str, stream: impl AsyncRead + Unpin, to_stderr: bool) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if to_stderr {
                    eprintln!("{prefix} {line}");
                } else {
                    outln!("{prefix} {line}");
                }
            }
        }
    }
}

fn spawn_side(
    lab: &Lab,
    side: Side,
    shell: Option<&str>,
    argv: &[String],
    forwards: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<tokio::process::Child> {
    let mut std_cmd = match (shell, argv.split_first()) {
        (Some(cmd), _) => {
            let mut c = lab.command(side, "/bin/sh");
            c.arg("-c").arg(cmd);
            c
        }
        (None, Some((prog, args))) => {
            let mut c = lab.command(side, prog);
            c.args(args);
            c
        }
        (None, None) => anyhow::bail!("no {side} command"),
    };
    std_cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {side} command"))?;
    let prefix: &'static str = match side {
        Side::Near => "[near]",
        Side::Far => "[far]",
    };
    if let Some(out) = child.stdout.take() {
        forwards.push(tokio::spawn(forward(prefix, out, false)));
    }
    if let Some(err) = child.stderr.take() {
        forwards.push(tokio::spawn(forward(prefix, err, true)));
    }
    Ok(child)
}

/// Waits for `child`, or forever when there is none.
async fn wait_opt(
    child: Option<&mut tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`.
async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: `kill` has no memory-safety preconditions; the child is ours and not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn run_commands(a: RunArgs) -> anyhow::Result<i32> {
    if a.near.is_none() && a.near_argv.is_empty() {
        anyhow::bail!(
            "lab run needs a near command: --near 'CMD' or a program after `--`, e.g. \
             lab run --far 'iperf3 -s -1' --near 'iperf3 -c 198.18.0.2 -t 10'"
        );
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let lab = Lab::up(
        &name,
        a.link.to_config(),
        LabOptions {
            tune_host: a.tune_host,
        },
    )?;
    print_intro(&lab);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut forwards = Vec::new();

    let mut far = match &a.far {
        Some(cmd) => Some(spawn_side(&lab, Side::Far, Some(cmd), &[], &mut forwards)?),
        None => None,
    };
    if far.is_some() {
        tokio::select! {
            _ = tokio::time::sleep(a.far_delay) => {}
            r = &mut stop => {
                eprintln!("[lab] {} before the near command started: tearing down", r?);
                if let Some(f) = far.as_mut() { stop_child(f, STOP_GRACE).await; }
                lab.down()?;
                return Ok(INTERRUPTED);
            }
        }
    }
    let mut near = spawn_side(
        &lab,
        Side::Near,
        a.near.as_deref(),
        &a.near_argv,
        &mut forwards,
    )?;
    let first = lab.stats();
    let code = supervise(&lab, &mut near, far.as_mut(), a.quiet, stop.as_mut()).await?;
    if let Some(f) = far.as_mut() {
        stop_child(f, STOP_GRACE).await;
    }
    for f in forwards {
        let _ = tokio::time::timeout(FORWARD_DRAIN, f).await;
    }
    print_totals(&lab, &first);
    lab.down()?;
    eprintln!("[lab] {name} down");
    Ok(code)
}

/// Exit code of a run ended by Ctrl-C or SIGTERM (128 + SIGINT, as a shell says).
const INTERRUPTED: i32 = 130;
/// How long a command has to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long the last output of the commands may take to be copied.
const FORWARD_DRAIN: Duration = Duration::from_secs(1);

/// Until the near command exits (its exit code) or a signal stops both
/// (`INTERRUPTED`): the line's counters each second unless `quiet`.
async fn supervise(
    lab: &Lab,
    near: &mut tokio::process::Child,
    mut far: Option<&mut tokio::process::Child>,
    quiet: bool,
    mut stop: Pin<&mut impl Future<Output = anyhow::Result<&'static str>>>,
) -> anyhow::Result<i32> {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut prev = lab.stats();
    let mut far_done = far.is_none();
    let code = loop {
        tokio::select! {
            status = near.wait() => {
                let status = status.context("waiting for the near command")?;
                eprintln!("[lab] near command exited: {status}");
                break status.code().unwrap_or(1);
            }
            status = wait_opt(far.as_deref_mut()), if !far_done => {
                far_done = true;
                match status {
                    Ok(s) => eprintln!("[lab] far command exited: {s}"),
                    Err(e) => eprintln!("[lab] waiting for the far command: {e}"),
                }
            }
            _ = tick.tick(), if !quiet => {
                let now = lab.stats();
                eprintln!("[line] {}", status::render_line(&now, &prev, lab.config()));
                prev = now;
            }
            r = stop.as_mut() => {
                eprintln!("[lab] {}: stopping the commands", r?);
                stop_child(near, STOP_GRACE).await;
                break INTERRUPTED;
            }
        }
    };
    Ok(code)
}

/// What the line carried near→far since `first`.
fn print_totals(lab: &Lab, first: &LineStats) {
    let last = lab.stats();
    let d = &last.near_to_far;
    let secs = last
        .elapsed
        .saturating_sub(first.elapsed)
        .as_secs_f64()
        .max(1e-9);
    let bytes = d.bytes_out.saturating_sub(first.near_to_far.bytes_out) as f64;
    eprintln!(
        "[lab] near→far delivered {:.1} MB in {:.1} s ({}), drops {} queue / {} loss, \
         measured rtt {}, line cpu {:.2} s",
        bytes / 1e6,
        secs,
        config::format_rate(bytes / secs),
        d.drops_queue,
        d.drops_loss,
        last.measured_rtt.map_or_else(
            || "–".to_owned(),
            |r| format!("{:.1} ms", r.as_secs_f64() * 1e3)
        ),
        last.cpu_time().as_secs_f64(),
    );
}
