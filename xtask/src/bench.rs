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
pub(crate) struct Guard(pub(crate) Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);
impl Scratch {
    pub(crate) fn new(tag: &str) -> Result<Self> {
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

/// Waits until something accepts connections on `addr`, for `within`.
pub(crate) fn wait_listening(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {within:?}")
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
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
pub(crate) struct ShipRun {
    pub(crate) records_per_s: f64,
    /// User + system CPU time of `ship` and `recv` (the kernel's TCP work
    /// on loopback runs mostly in their context) per delivered record.
    pub(crate) cpu_us_per_record: f64,
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
pub(crate) fn ship_run_on(
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

/// iperf3 on loopback with its default write size for `secs`: the
/// kernel's own loopback TCP goodput, bytes/s (the ceiling of any TCP
/// shipper on this box).
fn iperf3_loopback_run(port: u16, secs: u64) -> Result<f64> {
    let _server = Guard(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (cargo xtask setup installs it)")?,
    );
    // Not `wait_listening`: `-s -1` serves the first connection only, and
    // a probing connect would be it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening_per_ss(port)? {
        if Instant::now() >= deadline {
            bail!("iperf3 -s not listening on 127.0.0.1:{port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("timeout")
        .arg((secs + 30).to_string())
        .args(["iperf3", "-c", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-J"])
        .output()
        .context("running iperf3 -c")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    Ok(crate::demo::iperf3_goodput(&lines)? * 1e6)
}

/// Whether `ss` lists a TCP socket listening on `port`.
fn listening_per_ss(port: u16) -> Result<bool> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .context("running ss (iproute2)")?;
    Ok(!out.stdout.is_empty())
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
    let plan = Plan::seed(secs);
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
    let e2e = durable_end_to_end(bin, &plan, secs)?;
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
        "{:<46} {:>14.0} {:>10.1}  {:.1}% of the memory row (>= 90%)",
        "load -> log -> ship -> recv --store (sync)",
        e2e.throughput,
        e2e.mb_per_s,
        100.0 * e2e.mb_per_s / default.mb_per_s,
    );
    println!(
        "{:<46} {:>14.0} {:>10.3}  {:+.1}% vs 10/RTT = 64 (within 15%)",
        "xdr-ship --stop-and-wait --connections 10",
        saw.throughput,
        saw.mb_per_s,
        100.0 * (saw.throughput / (10.0 / 0.156) - 1.0)
    );
    crate::redis_lab::rows(bin, &plan, secs, &default)
}

/// The default lab run with TLS 1.3 on every connection.
/// The durable path end to end across the lab: `xdr-ship load` (64
/// writers, 64 writes outstanding each) into a source node's ingest port,
/// acknowledged once in its log (group commit), shipped from the log with
/// the defaults to `recv --store` (durability sync) on the far side. Both
/// ends' data directories are scratch directories under `/tmp`, removed
/// afterwards.
fn durable_end_to_end(
    bin: &Path,
    plan: &crate::demo::Plan,
    secs: u64,
) -> Result<crate::demo::Phase> {
    let scratch = Scratch::new("bench-e2e")?;
    let (log, store) = (scratch.0.join("log"), scratch.0.join("store"));
    let b = bin.display();
    // The source node outlives the writers by the drain; `wait` keeps the
    // near side up until it has shipped what the log holds.
    let near = format!(
        "{b} ship --log {log} --listen 127.0.0.1:4100 --to 198.18.0.2:3000 \
         --duration {ship_s}s & \
         sleep 1; {b} load --to 127.0.0.1:4100 --threads 64 --window 64 --duration {secs}s \
         > /dev/null; wait",
        log = log.display(),
        ship_s = secs + 1,
    );
    let far = format!(
        "{b} recv --listen 198.18.0.2:3000 --store {} --durability sync --insecure",
        store.display()
    );
    let lines = crate::demo::lab_run(bin, plan, "bench", &far, &near, |_| false)?;
    Ok(crate::demo::phase_from_lines(&lines, 10))
}

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
    let plan = Plan::seed(secs);
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

pub fn bench(repeats: usize, secs: u64, lab_secs: u64) -> Result<()> {
    let bin = crate::build(true)?;
    let scratch = Scratch::new("bench")?;
    let mut rows = LoopbackRows::new();
    println!("xdr-ship bench: loopback, 1 KB records, {repeats} runs of {secs} s per row, rows interleaved\n");
    for i in 0..repeats {
        rows.run_round(i, &bin, &scratch.0, secs)?;
    }
    rows.print_table();
    if crate::is_root() {
        crate::probe_bench::probe_overhead(&bin, repeats.max(5), secs)?;
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

/// The loopback rows, measured in interleaved rounds.
struct LoopbackRows {
    mem: Row,
    fresh: Row,
    durable: Row,
    redis: Row,
    saw: Row,
    disk: Row,
    iperf: Row,
}

impl LoopbackRows {
    fn new() -> Self {
        Self {
            mem: Row::new("ship -> recv --memory (64 conns, auto window)"),
            fresh: Row::new("the same, every key new (a fresh store)"),
            durable: Row::new("ship -> recv --store (durability sync)"),
            redis: Row::new("redis-benchmark -t set -d 1000 -P 64"),
            saw: Row::new("ship --stop-and-wait --connections 10"),
            disk: Row::new("disk: 1 MiB writes + fdatasync (records/s)"),
            iperf: Row::new("iperf3 on loopback (records/s of its bytes)"),
        }
    }

    /// Round `i`: one run of every row, each with a fresh store in `scratch`.
    fn run_round(&mut self, i: usize, bin: &Path, scratch: &Path, secs: u64) -> Result<()> {
        let store = scratch.join(format!("store-{i}"));
        let store_arg = store.to_string_lossy().into_owned();
        let steps: [(&mut Row, Measure); 7] = [
            (
                &mut self.mem,
                Box::new(|| {
                    ship_run(
                        bin,
                        &["--memory"],
                        &["--generate", "max,1000,100000"],
                        3401,
                        secs,
                    )
                }),
            ),
            // Why a row of its own: an insert writes memory the receiver
            // has never touched, which the kernel zeroes first (the link
            // grid keeps its key space small for that reason, see
            // `links::Link::keys`); 4M keys are not all written in a run.
            (
                &mut self.fresh,
                Box::new(|| {
                    ship_run(
                        bin,
                        &["--memory"],
                        &["--generate", "max,1000,4000000"],
                        3404,
                        secs,
                    )
                }),
            ),
            (&mut self.redis, Box::new(|| redis_run(6401))),
            (
                &mut self.iperf,
                Box::new(|| iperf3_loopback_run(5301, secs).map(|bps| bps / RECORD_BYTES)),
            ),
            (
                &mut self.durable,
                Box::new(|| {
                    ship_run(
                        bin,
                        &["--store", &store_arg],
                        &["--generate", "max,1000,100000"],
                        3402,
                        secs,
                    )
                }),
            ),
            (
                &mut self.saw,
                Box::new(|| {
                    ship_run(
                        bin,
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
                &mut self.disk,
                Box::new(|| disk_run(scratch).map(|bps| bps / RECORD_BYTES)),
            ),
        ];
        for (row, f) in steps {
            let v = f().with_context(|| format!("bench row `{}`", row.name))?;
            eprintln!("  run {}: {:<46} {:>12.0}", i + 1, row.name, v);
            row.runs.push(v);
        }
        let _ = std::fs::remove_dir_all(&store);
        Ok(())
    }

    fn print_table(&self) {
        print_loopback_table(self);
    }
}

/// The loopback rows' medians, their throughput and their ratios to the
/// peers measured in the same run.
fn print_loopback_table(rows: &LoopbackRows) {
    let LoopbackRows {
        mem,
        fresh,
        durable,
        redis,
        saw,
        disk,
        iperf,
    } = rows;
    let (m, f, r, d, s, k, i) = (
        mem.median(),
        fresh.median(),
        redis.median(),
        durable.median(),
        saw.median(),
        disk.median(),
        iperf.median(),
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
    line(
        mem,
        m,
        format!(
            "{:.2}x redis (>= 2x); {:.2}x iperf3 (>= 0.6x)",
            m / r,
            m / i
        ),
    );
    line(
        fresh,
        f,
        format!("{:.2}x overwrites (the kernel zeroing fresh memory)", f / m),
    );
    line(redis, r, "peer".into());
    line(iperf, i, "peer: the kernel's loopback TCP".into());
    line(
        durable,
        d,
        format!(
            "{:.2}x disk (>= 0.5x); {:.2}x of 100K/s (>= 1x)",
            d / k,
            d / 100_000.0
        ),
    );
    line(disk, k, "physical limit of the durable row".into());
    line(saw, s, format!("{:.3}x pipelined --memory", s / m));
}
