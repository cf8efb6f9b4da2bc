//! `cargo xtask bench`: throughput against the peers that bound it, measured
//! in the same run on the same machine.
//!
//! Why peers and ratios: an absolute figure means little on a shared
//! 2-core machine; a ratio against redis (the well-known in-memory peer) or
//! against the disk's own fdatasync bandwidth (the physical limit of the
//! durable row) says whether the code, or the machine, is the limit. Every
//! row is run several times, rows interleaved, and the median is reported.
use std::{
    fs::File,
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Bytes of one shipped record: 1000-byte value, 16-byte key, 25 bytes of
/// record header (docs/protocol.md), as the bench's records are.
const RECORD_BYTES: f64 = 1041.0;

/// A child process killed on drop.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let p = crate::root()
            .join("target")
            .join("bench")
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_listening(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {within:?}")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// One `recv` + `ship` run on loopback; returns delivered records/s.
fn ship_run(
    bin: &Path,
    recv_args: &[&str],
    ship_args: &[&str],
    port: u16,
    secs: u64,
) -> Result<f64> {
    Ok(ship_run_on(bin, recv_args, ship_args, port, secs, None)?.records_per_s)
}

/// What one shipping run delivered, and what it cost in CPU.
#[derive(Clone, Copy, Debug)]
struct ShipRun {
    records_per_s: f64,
    /// User + system CPU time of `ship` and `recv` (the kernel's TCP work
    /// on loopback runs mostly in their context) per delivered record.
    cpu_us_per_record: f64,
}

/// Restricts the calling process to one CPU (before `exec`).
fn pin_to(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before `exec` and calls
    // only `CPU_ZERO`/`CPU_SET` on a local set and `sched_setaffinity`, a
    // plain system call: nothing that allocates or takes locks.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// User + system CPU seconds of every child this process has waited for.
fn children_cpu_s() -> f64 {
    // SAFETY: an all-zero `rusage` is valid, and `getrusage` only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` that outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Like [`ship_run`]; with `pin = Some((ship_cpu, recv_cpu))` each process
/// runs on its own CPU. Also returns the CPU time per record (see
/// [`ShipRun`]).
fn ship_run_on(
    bin: &Path,
    recv_args: &[&str],
    ship_args: &[&str],
    port: u16,
    secs: u64,
    pin: Option<(usize, usize)>,
) -> Result<ShipRun> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cpu_before = children_cpu_s();
    let mut recv_cmd = Command::new(bin);
    recv_cmd
        .args(["recv", "--listen", &addr.to_string()])
        .args(recv_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut ship_cmd = Command::new(bin);
    ship_cmd
        .args(["ship", "--to", &addr.to_string(), "--json", "--duration"])
        .arg(format!("{secs}s"))
        .args(ship_args)
        .stderr(Stdio::null());
    if let Some((ship_cpu, recv_cpu)) = pin {
        pin_to(&mut ship_cmd, ship_cpu);
        pin_to(&mut recv_cmd, recv_cpu);
    }
    let recv = Guard(recv_cmd.spawn().context("starting xdr-ship recv")?);
    wait_listening(addr, Duration::from_secs(10))?;
    let out = ship_cmd.output().context("running xdr-ship ship")?;
    drop(recv);
    let cpu_s = children_cpu_s() - cpu_before;
    if !out.status.success() {
        bail!("xdr-ship ship failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .context("no summary line from xdr-ship ship")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let records_per_s = v["summary"]["records_per_s"]
        .as_f64()
        .context("summary without records_per_s")?;
    let elapsed_s = v["summary"]["elapsed_s"]
        .as_f64()
        .context("summary without elapsed_s")?;
    let records = (records_per_s * elapsed_s).max(1.0);
    Ok(ShipRun {
        records_per_s,
        cpu_us_per_record: 1e6 * cpu_s / records,
    })
}

/// redis-benchmark SET with 1000-byte values, pipelined 64 deep.
fn redis_run(port: u16) -> Result<f64> {
    let _server = Guard(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?,
    );
    wait_listening(
        format!("127.0.0.1:{port}").parse()?,
        Duration::from_secs(10),
    )?;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t", "set", "-d", "1000", "-P", "64", "-n", "2000000", "-r", "100000", "-q",
        ])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 612745.12 requests per second, p50=..." (after \r progress lines)
    let rps = text
        .split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("SET: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("no SET figure in redis-benchmark output: {text}"))?;
    Ok(rps)
}

/// Sequential 1 MiB writes, each followed by fdatasync: bytes/s.
fn disk_run(dir: &Path) -> Result<f64> {
    let path = dir.join("disk-bench");
    let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 1 << 20];
    let total = 256usize;
    let t0 = Instant::now();
    for _ in 0..total {
        f.write_all(&block)?;
        f.sync_data()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((total << 20) as f64 / secs)
}

/// One measurement of a row.
type Measure<'a> = Box<dyn Fn() -> Result<f64> + 'a>;

struct Row {
    name: &'static str,
    runs: Vec<f64>,
}

impl Row {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            runs: Vec::new(),
        }
    }
    fn median(&self) -> f64 {
        median(&mut self.runs.clone())
    }
}

/// The lab rows: the seed's link (156 ms, 100 MB/s), 1 KB records, each
/// phase a median over its steady seconds (after `warmup` s).
pub fn lab_rows(bin: &Path, secs: u64) -> Result<()> {
    use crate::demo::{iperf3_goodput, lab_run, phase_from_lines, ship_phase, Plan};
    let plan = Plan {
        rtt_ms: 156.0,
        bandwidth: "100MB/s",
        phase_secs: secs,
    };
    let quiet = |_: &str| false;
    println!("\nlab rows: 156 ms RTT, 100 MB/s line, 1 KB records, {secs} s per phase (steady seconds only)");
    let iperf_lines = lab_run(
        bin,
        &plan,
        "bench",
        "iperf3 -s -1",
        &format!("iperf3 -c 198.18.0.2 -t {secs} -O 10 -J"),
        quiet,
    )?;
    let iperf = iperf3_goodput(&iperf_lines)?;
    let ship = |args: &str, secs: u64| -> Result<crate::demo::Phase> {
        let lines = ship_phase(bin, &plan, "bench", args, secs, quiet)?;
        // The line's cost, from its own closing counters.
        if let Some(l) = lines.iter().find(|l| l.starts_with("done:")) {
            eprintln!("  {args:<40} {l}");
        }
        Ok(phase_from_lines(&lines, 10))
    };
    let default = ship("", secs)?;
    let tls = tls_phase(bin, &plan, secs)?;
    let one = ship("--connections 1 --mode unordered", secs)?;
    let saw = ship("--stop-and-wait --connections 10", secs.min(20))?;
    println!(
        "{:<46} {:>14} {:>10}  ratio (target)",
        "row", "records/s", "MB/s"
    );
    println!(
        "{:<46} {:>14} {:>10.1}  peer",
        "iperf3 goodput (the link)", "", iperf
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of iperf3 (>= 95%); in flight {:.0} = {:.2} x thr x RTT",
        "xdr-ship, 64 connections, window auto",
        default.throughput,
        default.mb_per_s,
        100.0 * default.mb_per_s / iperf,
        default.inflight,
        default.inflight / (default.throughput * 0.156)
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of the same run without TLS; {:.1}% of iperf3",
        "xdr-ship, 64 connections, window auto, TLS 1.3",
        tls.throughput,
        tls.mb_per_s,
        100.0 * tls.throughput / default.throughput,
        100.0 * tls.mb_per_s / iperf,
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of iperf3 (>= 90%); in flight {:.0}",
        "xdr-ship --connections 1 --mode unordered",
        one.throughput,
        one.mb_per_s,
        100.0 * one.mb_per_s / iperf,
        one.inflight
    );
    println!(
        "{:<46} {:>14.0} {:>10.3}  {:+.1}% vs 10/RTT = 64 (within 15%)",
        "xdr-ship --stop-and-wait --connections 10",
        saw.throughput,
        saw.mb_per_s,
        100.0 * (saw.throughput / (10.0 / 0.156) - 1.0)
    );
    Ok(())
}

/// The default lab run with TLS 1.3 on every connection.
fn tls_phase(bin: &Path, plan: &crate::demo::Plan, secs: u64) -> Result<crate::demo::Phase> {
    let pki = TestPki::new("198.18.0.2")?;
    let lines = crate::demo::ship_phase_with(
        bin,
        plan,
        "bench",
        &pki.recv_args(),
        &pki.ship_args(),
        secs,
        |_| false,
    )?;
    if let Some(l) = lines.iter().find(|l| l.starts_with("done:")) {
        eprintln!("  {:<40} {l}", "(TLS 1.3)");
    }
    Ok(crate::demo::phase_from_lines(&lines, 10))
}

/// `bench --tls-only`: the lab's default run without and with TLS, and
/// the ratio (root: the lab makes network namespaces).
pub fn tls_only(bin: &Path, secs: u64) -> Result<()> {
    use crate::demo::{phase_from_lines, ship_phase, Plan};
    let plan = Plan {
        rtt_ms: 156.0,
        bandwidth: "100MB/s",
        phase_secs: secs,
    };
    println!("\nTLS cost on the lab link: 156 ms RTT, 100 MB/s, 1 KB records, {secs} s per phase");
    let plain = phase_from_lines(&ship_phase(bin, &plan, "bench", "", secs, |_| false)?, 10);
    let tls = tls_phase(bin, &plan, secs)?;
    println!("{:<46} {:>14} {:>10}  ratio", "row", "records/s", "MB/s");
    println!(
        "{:<46} {:>14.0} {:>10.1}",
        "xdr-ship, 64 connections, window auto", plain.throughput, plain.mb_per_s
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of the same run without TLS",
        "xdr-ship, 64 connections, window auto, TLS 1.3",
        tls.throughput,
        tls.mb_per_s,
        100.0 * tls.throughput / plain.throughput
    );
    Ok(())
}

/// A throw-away CA and a receiver certificate for `ip` (rcgen), as PEM
/// files in a directory removed on drop: what the TLS row needs.
struct TestPki {
    dir: Scratch,
}

impl TestPki {
    fn new(ip: &str) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = Scratch::new("tls")?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![ip.to_owned()])?.signed_by(&key, &ca, &ca_key)?;
        std::fs::write(dir.0.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.0.join("recv.pem"), cert.pem())?;
        std::fs::write(dir.0.join("recv.key"), key.serialize_pem())?;
        Ok(Self { dir })
    }

    fn recv_args(&self) -> String {
        let d = self.dir.0.display();
        format!("--tls-cert {d}/recv.pem --tls-key {d}/recv.key")
    }

    fn ship_args(&self) -> String {
        format!("--tls-ca {}/ca.pem", self.dir.0.display())
    }
}

/// How a probe-overhead run watches the shipping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probes {
    /// Nothing attached.
    Detached,
    /// `observe --port`, `tcp_probe` on the BTF-typed raw tracepoint.
    Raw,
    /// `observe --port` with `XDR_SHIP_TCP_PROBE=tracepoint`: the classic
    /// tracepoint, to show what the raw one saves.
    Classic,
}

impl Probes {
    fn label(self) -> &'static str {
        match self {
            Self::Detached => "probes detached",
            Self::Raw => "attached, tcp_probe via tp_btf (default)",
            Self::Classic => "attached, tcp_probe via classic tracepoint",
        }
    }
}

/// `observe --port port` running while it lives (with `bpf_stats`
/// switched on for it when asked, and back off when dropped).
struct Observer {
    guard: Guard,
    stats_restore: Option<String>,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl Observer {
    fn start(bin: &Path, port: u16, probes: Probes, stats: bool) -> Result<Self> {
        let stats_restore = stats.then(|| {
            let before = std::fs::read_to_string(BPF_STATS_SYSCTL).unwrap_or_default();
            let _ = std::fs::write(BPF_STATS_SYSCTL, "1");
            before.trim().to_owned()
        });
        let mut cmd = Command::new(bin);
        cmd.args(["observe", "--port", &port.to_string(), "--interval", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if probes == Probes::Classic {
            cmd.env("XDR_SHIP_TCP_PROBE", "tracepoint");
        }
        let guard = Guard(cmd.spawn().context("starting xdr-ship observe")?);
        // Loaded and attached: its BPF programs show up among its fds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while bpf_progs(guard.0.id()).len() < 5 {
            if Instant::now() > deadline {
                bail!("observe attached no programs within 10 s (eBPF unavailable?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let progs = bpf_progs(guard.0.id());
        let raw = progs.iter().any(|p| p.prog_type == BPF_PROG_TYPE_TRACING);
        if raw != (probes == Probes::Raw) {
            bail!(
                "asked for {:?} but observe attached {} tcp_probe",
                probes,
                if raw { "the raw" } else { "the classic" }
            );
        }
        Ok(Self {
            guard,
            stats_restore,
        })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
        if let Some(before) = &self.stats_restore {
            let _ = std::fs::write(BPF_STATS_SYSCTL, before);
        }
    }
}

/// `BPF_PROG_TYPE_TRACING` (tp_btf); the classic tracepoint programs are
/// `BPF_PROG_TYPE_TRACEPOINT` (5).
const BPF_PROG_TYPE_TRACING: u32 = 26;

/// One BPF program a process holds open, as its fdinfo shows it.
#[derive(Clone, Copy, Debug)]
struct ProgInfo {
    prog_id: u64,
    prog_type: u32,
    /// Counted only while `kernel.bpf_stats_enabled` is 1.
    run_time_ns: u64,
    run_cnt: u64,
}

/// The BPF programs process `pid` holds open, from `/proc/PID/fdinfo`.
fn bpf_progs(pid: u32) -> Vec<ProgInfo> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut out: Vec<ProgInfo> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            let get = |key: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some(ProgInfo {
                prog_id: get("prog_id:")?,
                prog_type: get("prog_type:")? as u32,
                run_time_ns: get("run_time_ns:").unwrap_or(0),
                run_cnt: get("run_cnt:").unwrap_or(0),
            })
        })
        .collect();
    // Links hold programs too: count each program once.
    out.sort_by_key(|p| p.prog_id);
    out.dedup_by_key(|p| p.prog_id);
    out
}

/// Quartiles and extremes of `v` (sorted in place).
fn spread(v: &mut [f64]) -> (f64, f64, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let x = p * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    (q(0.0), q(0.25), q(0.5), q(0.75), q(1.0))
}

/// Loopback shipping with the TCP probes attached (an `observe` process
/// watching the port) against the same with them detached, the raw and the
/// classic `tcp_probe` paths, `rounds` rounds of one run each, the order
/// rotated each round: the cost of the kernel eyes.
///
/// Why pinned: on 2 CPUs the scheduler moving `ship` and `recv` around
/// costs more run-to-run spread than the 2% to resolve; each gets a CPU of
/// its own. Why per-round ratios: the machine is shared, and a neighbour's
/// compile slows a whole round, both runs of a pair alike; the median of
/// the pairs' ratios cancels that drift where the ratio of medians cannot.
/// Why CPU per record beside throughput: it does not depend on how much of
/// a CPU the neighbours left us, only on what one record costs.
fn probe_overhead(bin: &Path, rounds: usize, secs: u64) -> Result<()> {
    let port = 3405;
    let args = ["--generate", "max,1000,100000"];
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = (cpus >= 2).then_some((0usize, 1usize));
    let variants = [Probes::Detached, Probes::Raw, Probes::Classic];
    let mut runs: Vec<[Option<ShipRun>; 3]> = Vec::new();
    println!(
        "\nprobe overhead: loopback 1 KB shipping, {rounds} rounds x {} variants x {secs} s, \
         order rotated per round; {}",
        variants.len(),
        match pin {
            Some((s, r)) => format!("ship pinned to CPU {s}, recv to CPU {r}"),
            None => "one CPU: not pinned".to_owned(),
        }
    );
    for round in 0..rounds {
        let mut row = [None; 3];
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let probes = variants[i];
            let observer = match probes {
                Probes::Detached => None,
                p => Some(Observer::start(bin, port, p, false)?),
            };
            if observer.is_some() {
                std::thread::sleep(Duration::from_millis(300));
            }
            row[i] = Some(ship_run_on(bin, &["--memory"], &args, port, secs, pin)?);
            drop(observer);
        }
        let r = row.map(|x| x.expect("every variant ran"));
        eprintln!(
            "  round {:>2}: detached {:>8.0} rec/s {:>5.2} µs/rec | tp_btf {:>8.0} {:>5.2} | classic {:>8.0} {:>5.2}   load {}",
            round + 1,
            r[0].records_per_s,
            r[0].cpu_us_per_record,
            r[1].records_per_s,
            r[1].cpu_us_per_record,
            r[2].records_per_s,
            r[2].cpu_us_per_record,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        );
        runs.push(row);
    }
    let col = |i: usize, f: fn(&ShipRun) -> f64| -> Vec<f64> {
        runs.iter().filter_map(|r| r[i].as_ref().map(f)).collect()
    };
    let thr = |r: &ShipRun| r.records_per_s;
    let cpu = |r: &ShipRun| r.cpu_us_per_record;
    println!(
        "{:<44} {:>10} {:>21}   {:>8} {:>17}",
        "variant", "rec/s med", "IQR (min-max)", "µs/rec", "IQR"
    );
    for (i, v) in variants.iter().enumerate() {
        let (lo, q1, m, q3, hi) = spread(&mut col(i, thr));
        let (_, c1, cm, c3, _) = spread(&mut col(i, cpu));
        println!(
            "{:<44} {m:>10.0} {q1:>7.0}-{q3:<7.0}({lo:.0}-{hi:.0})   {cm:>8.3} {c1:>8.3}-{c3:<8.3}",
            v.label()
        );
    }
    let off_thr = col(0, thr);
    let off_cpu = col(0, cpu);
    for (i, v) in variants.iter().enumerate().skip(1) {
        let mut cost: Vec<f64> = col(i, thr)
            .iter()
            .zip(&off_thr)
            .map(|(on, off)| 100.0 * (1.0 - on / off))
            .collect();
        let mut cpu_cost: Vec<f64> = col(i, cpu)
            .iter()
            .zip(&off_cpu)
            .map(|(on, off)| 100.0 * (on / off - 1.0))
            .collect();
        let (lo, q1, m, q3, hi) = spread(&mut cost);
        let (_, c1, cm, c3, _) = spread(&mut cpu_cost);
        let ratio = median(&mut col(i, thr)) / median(&mut off_thr.clone());
        println!(
            "cost, {:<38} throughput {m:+.1}% (IQR {q1:+.1}..{q3:+.1}, min-max {lo:+.1}..{hi:+.1}; \
             ratio of medians {ratio:.3}); CPU per record {cm:+.1}% (IQR {c1:+.1}..{c3:+.1})  target <= 2%",
            v.label()
        );
    }
    let detached_cpu_us = median(&mut off_cpu.clone());
    prog_run_time(bin, port, &args, secs, pin, detached_cpu_us)
}

/// The programs' own run time (`kernel.bpf_stats_enabled`, which costs two
/// clock reads per program run, so measured in runs of its own), per path:
/// share of all CPU time while shipping, and ns per run of each program.
fn prog_run_time(
    bin: &Path,
    port: u16,
    args: &[&str],
    secs: u64,
    pin: Option<(usize, usize)>,
    detached_cpu_us: f64,
) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!("the programs' own run time (kernel bpf_stats, one run per path):");
    for probes in [Probes::Raw, Probes::Classic] {
        let observer = Observer::start(bin, port, probes, true)?;
        std::thread::sleep(Duration::from_millis(300));
        let pid = observer.guard.0.id();
        let before = bpf_progs(pid);
        let t0 = Instant::now();
        let run = ship_run_on(bin, &["--memory"], args, port, secs, pin)?;
        let wall_ns = t0.elapsed().as_secs_f64() * 1e9;
        let after = bpf_progs(pid);
        drop(observer);
        let mut total_ns = 0u64;
        let mut per_prog = Vec::new();
        for a in &after {
            let b = before.iter().find(|b| b.prog_id == a.prog_id);
            let ns = a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
            let cnt = a.run_cnt - b.map_or(0, |b| b.run_cnt);
            total_ns += ns;
            if cnt > 0 {
                per_prog.push(format!(
                    "{} {:.0}/s x {:.0} ns",
                    if a.prog_type == BPF_PROG_TYPE_TRACING {
                        "tp_btf"
                    } else {
                        "tp"
                    },
                    cnt as f64 * 1e9 / wall_ns,
                    ns as f64 / cnt as f64
                ));
            }
        }
        let ns_per_record = total_ns as f64 / (run.records_per_s * wall_ns / 1e9);
        println!(
            "  {:<42} {:>5.2}% of all CPU time; {:.0} ns per record = {:.2}% of the \
             detached runs' CPU per record ({:.0} rec/s); per program: {}",
            probes.label(),
            100.0 * total_ns as f64 / (wall_ns * cpus),
            ns_per_record,
            100.0 * ns_per_record / (detached_cpu_us * 1e3),
            run.records_per_s,
            per_prog.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask bench --probe-only`.
pub fn probe_only(runs: usize, secs: u64) -> Result<()> {
    if !crate::is_root() {
        bail!("the probe-overhead row attaches eBPF programs: run as root");
    }
    let bin = crate::build(true)?;
    probe_overhead(&bin, runs, secs)
}

pub fn bench(repeats: usize, secs: u64, lab_secs: u64) -> Result<()> {
    let bin = crate::build(true)?;
    let scratch = Scratch::new("bench")?;
    let mut mem = Row::new("ship -> recv --memory (64 conns, auto window)");
    let mut durable = Row::new("ship -> recv --store (durability sync)");
    let mut redis = Row::new("redis-benchmark -t set -d 1000 -P 64");
    let mut saw = Row::new("ship --stop-and-wait --connections 10");
    let mut disk = Row::new("disk: 1 MiB writes + fdatasync (records/s)");
    println!("xdr-ship bench: loopback, 1 KB records, {repeats} runs of {secs} s per row, rows interleaved\n");
    for i in 0..repeats {
        let store = scratch.0.join(format!("store-{i}"));
        let store_arg = store.to_string_lossy().into_owned();
        let steps: [(&mut Row, Measure); 5] = [
            (
                &mut mem,
                Box::new(|| {
                    ship_run(
                        &bin,
                        &["--memory"],
                        &["--generate", "max,1000,100000"],
                        3401,
                        secs,
                    )
                }),
            ),
            (&mut redis, Box::new(|| redis_run(6401))),
            (
                &mut durable,
                Box::new(|| {
                    ship_run(
                        &bin,
                        &["--store", &store_arg],
                        &["--generate", "max,1000,100000"],
                        3402,
                        secs,
                    )
                }),
            ),
            (
                &mut saw,
                Box::new(|| {
                    ship_run(
                        &bin,
                        &["--memory"],
                        &[
                            "--generate",
                            "max,1000,100000",
                            "--stop-and-wait",
                            "--connections",
                            "10",
                        ],
                        3403,
                        secs,
                    )
                }),
            ),
            (
                &mut disk,
                Box::new(|| disk_run(&scratch.0).map(|bps| bps / RECORD_BYTES)),
            ),
        ];
        for (row, f) in steps {
            let v = f().with_context(|| format!("bench row `{}`", row.name))?;
            eprintln!("  run {}: {:<46} {:>12.0}", i + 1, row.name, v);
            row.runs.push(v);
        }
        let _ = std::fs::remove_dir_all(&store);
    }
    let (m, r, d, s, k) = (
        mem.median(),
        redis.median(),
        durable.median(),
        saw.median(),
        disk.median(),
    );
    println!(
        "\n{:<46} {:>14} {:>10}  ratio (target)",
        "row", "median rec/s", "MB/s"
    );
    let line = |row: &Row, v: f64, ratio: String| {
        println!(
            "{:<46} {:>14.0} {:>10.1}  {ratio}",
            row.name,
            v,
            v * RECORD_BYTES / 1e6
        );
    };
    line(&mem, m, format!("{:.2}x redis (>= 1.5x)", m / r));
    line(&redis, r, "peer".into());
    line(
        &durable,
        d,
        format!(
            "{:.2}x disk (>= 0.5x); {:.2}x of 100K/s (>= 1x)",
            d / k,
            d / 100_000.0
        ),
    );
    line(&disk, k, "physical limit of the durable row".into());
    line(&saw, s, format!("{:.3}x pipelined --memory", s / m));
    if crate::is_root() {
        probe_overhead(&bin, repeats.max(5), secs)?;
    } else {
        println!("\n(probe overhead row needs root to attach eBPF)");
    }
    if lab_secs == 0 {
        println!("\n(lab rows skipped: --lab-seconds 0)");
    } else if crate::is_root() {
        lab_rows(&bin, lab_secs)?;
    } else {
        println!("\n(lab rows need root for network namespaces: run as root)");
    }
    Ok(())
}
