//! `cargo xtask`: the only place that knows about nightly features,
//! bpf-linker, the kernel target, Debian packages and sudo.
//!
//! Why a Rust xtask and not a Makefile: it runs wherever cargo runs, it can
//! check what is already there and do only what is missing (so a second
//! `setup` takes seconds), and it reports every failed step of `test`
//! rather than stopping at the first.
//!
//! The kernel crate is built on the stable toolchain with
//! `RUSTC_BOOTSTRAP=1 -Z build-std=core` (DESIGN.md: measured on these
//! machines), in a target directory of its own so its host-side build
//! scripts never invalidate the user-space build.
mod bench;
mod demo;
mod disk;
mod dist;
mod fuzz;
mod links;
mod probe_bench;
mod redis_lab;
mod resp_bench;
mod setup;
mod soak;
mod tee;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and demo xdr-ship")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need: rust-src, bpf-linker, Debian packages.
    Setup,
    /// Build the kernel programs and the `xdr-ship` binary that embeds them.
    Build {
        /// Build the user-space binary with optimisations.
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests, then the integration tests as root.
    Test,
    /// The Debian package: release binary, systemd units, configs,
    /// completions, man pages (`target/dist/*.deb`).
    Dist(dist::Args),
    /// rustfmt and clippy, for the host crates and the kernel crate.
    Lint,
    /// Throughput against its peers (redis, the disk), medians of repeated runs.
    Bench {
        /// Runs per row.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Seconds per shipping run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds per phase of the lab rows (0 skips them).
        #[arg(long, default_value_t = 40)]
        lab_seconds: u64,
        /// Only the probe-overhead row.
        #[arg(long)]
        probe_only: bool,
        /// Only the TLS rows: the lab run without and with TLS (root).
        #[arg(long)]
        tls_only: bool,
        /// Only the disk rows: the durable store and the source log against
        /// the disk's own fdatasync'd bandwidth.
        #[arg(long)]
        disk_only: bool,
        /// Records per engine in each disk run.
        #[arg(long, default_value_t = 200_000, value_name = "N")]
        disk_records: u64,
        /// Only the Redis destination rows on the lab (root): ship into a
        /// far redis-server, against recv --memory and redis-benchmark.
        #[arg(long)]
        redis_only: bool,
        /// Only the link grid: iperf3 -P 8 / -P 1 and xdr-ship with its
        /// defaults on each link of issue #17's grid, back to back (root).
        #[arg(long)]
        links: bool,
        /// Seconds per run of the link grid.
        #[arg(long, default_value_t = 20, value_name = "S")]
        link_seconds: u64,
        /// Only the grid rows whose name contains this (e.g. `156 ms / 100 MB/s / 0% / 1 KB`).
        #[arg(long, value_name = "TEXT", requires = "links")]
        only: Option<String>,
    },
    /// Runs a command and prints its CPU time when it exits (the link
    /// grid's getrusage of each end); passes SIGTERM/SIGINT on.
    #[command(hide = true)]
    Rusage {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// Long libFuzzer runs of the wire codec (frame decoder, HELLO parser).
    Fuzz {
        /// Only this target (`frame_decoder` or `hello`).
        #[arg(long, value_name = "T")]
        target: Option<String>,
        /// Executions in total, split evenly between the targets.
        #[arg(long, default_value_t = 10_000_000, value_name = "N")]
        runs: u64,
    },
    /// The fault tests, longer: kill -9 of shipper and receiver N times
    /// each, a long link outage; prints runs, records written, acked,
    /// found at the destination, lost (root).
    Soak {
        /// Kills per kill test (at least 20 for the note).
        #[arg(long, default_value_t = 20)]
        kills: u64,
        /// Seconds of link outage.
        #[arg(long, default_value_t = 90)]
        outage: u64,
    },
    /// The main job: the seed's experiment across an emulated 156 ms,
    /// 100 MB/s link (iperf3, stop-and-wait x 10, pipelined).
    Demo {
        /// Seconds per phase (the pipelined phase runs twice as long).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => build(release).map(|bin| {
            println!("built {}", bin.display());
        }),
        Cmd::Test => test(),
        Cmd::Dist(args) => dist::dist(args),
        Cmd::Lint => lint(),
        Cmd::Bench {
            repeats,
            seconds,
            lab_seconds,
            probe_only,
            tls_only,
            disk_only,
            disk_records,
            redis_only,
            links,
            link_seconds,
            only,
        } => {
            if links {
                if !is_root() {
                    bail!("the link grid runs on the WAN lab (network namespaces): run as root");
                }
                let bin = build(true)?;
                return links::links(&bin, link_seconds.max(6), only.as_deref());
            }
            if probe_only {
                return probe_bench::probe_only(repeats.max(5), seconds.max(1));
            }
            if tls_only {
                if !is_root() {
                    bail!("the TLS rows run on the WAN lab (network namespaces): run as root");
                }
                let bin = build(true)?;
                return bench::tls_only(&bin, lab_seconds.max(15));
            }
            if disk_only {
                return disk::rows(&build(true)?, repeats.max(1), disk_records);
            }
            if redis_only {
                if !is_root() {
                    bail!("the Redis rows run on the WAN lab (network namespaces): run as root");
                }
                setup::ensure_packages(&["redis-server", "redis-tools"])?;
                return redis_lab::only(&build(true)?, lab_seconds.max(15));
            }
            setup::ensure_packages(&["redis-server", "redis-tools"])?;
            bench::bench(repeats.max(1), seconds.max(1), lab_seconds)?;
            resp_bench::rows(&build(true)?, repeats.max(1))?;
            disk::rows(&build(true)?, repeats.max(1), disk_records)
        }
        Cmd::Rusage { argv } => links::rusage(&argv),
        Cmd::Fuzz { target, runs } => fuzz::fuzz(target, runs.max(1)),
        Cmd::Demo { seconds } => demo(seconds),
        Cmd::Soak { kills, outage } => build(false).and_then(|bin| soak::soak(&bin, kills, outage)),
    }
}

/// The workspace root (this crate lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// A `cargo` command run at the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it first.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", show(cmd));
    }
    Ok(())
}

fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", show(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))
}

pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

const BPF_TARGET: &str = "bpfel-unknown-none";

fn bpf_target_dir() -> PathBuf {
    root().join("target").join("bpf")
}

/// The kernel object `build_ebpf` produces.
fn ebpf_object() -> PathBuf {
    bpf_target_dir()
        .join(BPF_TARGET)
        .join("release")
        .join("xdr-ebpf")
}

/// A cargo command for the kernel crate (`build`, `clippy`).
fn cargo_bpf(subcommand: &str) -> Command {
    let mut cmd = cargo();
    // Stable rustc with unstable `build-std`: DESIGN.md's measured recipe.
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .args([
            subcommand,
            "-p",
            "xdr-ebpf",
            "--release",
            "--target",
            BPF_TARGET,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(bpf_target_dir());
    cmd
}

/// Builds the kernel object (always optimised: the verifier needs it).
fn build_ebpf() -> Result<PathBuf> {
    setup::ensure()?;
    run(&mut cargo_bpf("build")).context("building the kernel programs")?;
    let obj = ebpf_object();
    if !obj.is_file() {
        bail!(
            "the kernel build succeeded but {} is missing",
            obj.display()
        );
    }
    Ok(obj)
}

/// Builds the kernel object and the binary that embeds it; returns the binary.
fn build(release: bool) -> Result<PathBuf> {
    let obj = build_ebpf()?;
    let mut cmd = cargo();
    cmd.env("XDR_EBPF_OBJ", &obj)
        .args(["build", "-p", "xdr-ship"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd).context("building xdr-ship")?;
    let profile = if release { "release" } else { "debug" };
    Ok(root().join("target").join(profile).join("xdr-ship"))
}

fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A step of `test`: its name and whether it passed.
struct Step {
    name: &'static str,
    outcome: Result<()>,
    secs: f64,
}

fn step(steps: &mut Vec<Step>, name: &'static str, f: impl FnOnce() -> Result<()>) {
    eprintln!("\n=== {name}");
    let t0 = Instant::now();
    let outcome = f();
    if let Err(e) = &outcome {
        eprintln!("=== {name}: FAILED: {e:#}");
    }
    steps.push(Step {
        name,
        outcome,
        secs: t0.elapsed().as_secs_f64(),
    });
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 60;

fn test() -> Result<()> {
    let obj = build_ebpf()?;
    let bin = build(false)?;
    let mut steps = Vec::new();
    step(&mut steps, "unit tests", || {
        // Every test binary runs even after one fails: CI's one run shows
        // every failure, not only the first.
        tee::run(cargo().env("XDR_EBPF_OBJ", &obj).args([
            "test",
            "--no-fail-fast",
            "-p",
            "xdr-common",
            "-p",
            "xdr-ship",
            "-p",
            "xtask",
            "-p",
            "lossyfs",
        ]))
    });
    step(
        &mut steps,
        "integration tests (root, one at a time)",
        || integration_tests(&obj, &bin),
    );
    step(&mut steps, "fuzz, 60 s per target", || {
        fuzz::bounded(FUZZ_SECONDS_IN_TEST)
    });
    eprintln!("\n=== summary");
    let mut failed = 0;
    for s in &steps {
        let verdict = if s.outcome.is_ok() { "ok" } else { "FAILED" };
        eprintln!("{verdict:>7}  {:<42} {:>6.1} s", s.name, s.secs);
        failed += usize::from(s.outcome.is_err());
    }
    // Why each failed, again here: CI shows the tail of the run.
    for s in &steps {
        if let Err(e) = &s.outcome {
            eprintln!("\n{} failed: {e:#}", s.name);
        }
    }
    eprintln!("\n{}", tee::free_space_line(&root()));
    if failed > 0 {
        bail!("{failed} of {} test steps failed", steps.len());
    }
    Ok(())
}

/// The integration tests load eBPF and create namespaces: they run as root,
/// one at a time. Not root: build them, then run each binary under sudo.
fn integration_tests(obj: &Path, bin: &Path) -> Result<()> {
    // The package test (tests/tests/dist.rs) unpacks a package of `bin`.
    // A packaging failure fails that test (it finds no XDR_SHIP_DEB and
    // says so), not every other integration test with it.
    let deb = dist::package(
        bin,
        &root().join("target").join("dist-test"),
        dist::Compression::Fast,
    )
    .map_err(|e| {
        eprintln!(
            "packaging {} for the package test failed: {e:#}",
            bin.display()
        )
    })
    .ok();
    let mut cmd = cargo();
    cmd.env("XDR_EBPF_OBJ", obj).env("XDR_SHIP_BIN", bin);
    if let Some(deb) = &deb {
        cmd.env("XDR_SHIP_DEB", deb);
    }
    cmd.args(["test", "--no-fail-fast", "-p", "xdr-tests"]);
    if is_root() {
        return tee::run(cmd.args(["--", "--test-threads=1", "--nocapture"]));
    }
    eprintln!("not root: building the integration tests, then running them with sudo");
    let out = cmd
        .args(["--no-run", "--message-format=json"])
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        bail!(
            "building the integration tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut failures = Vec::new();
    for exe in test_executables(&String::from_utf8_lossy(&out.stdout)) {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E")
            .arg(&exe)
            .args(["--test-threads=1", "--nocapture"])
            .env("XDR_SHIP_BIN", bin);
        if let Some(deb) = &deb {
            sudo.env("XDR_SHIP_DEB", deb);
        }
        if let Err(e) = run(&mut sudo) {
            failures.push(format!("{e:#}"));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Test executables named in cargo's JSON messages.
fn test_executables(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"test\":true"))
        .filter_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect()
}

fn lint() -> Result<()> {
    setup::ensure()?;
    let mut failures = Vec::new();
    let mut check = |name: &str, cmd: &mut Command| {
        if let Err(e) = run(cmd) {
            failures.push(format!("{name}: {e:#}"));
        }
    };
    check("rustfmt", cargo().args(["fmt", "--all", "--check"]));
    check(
        "clippy (host)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    check(
        "clippy (kernel crate, bpfel-unknown-none)",
        cargo_bpf("clippy").args(["--", "-D", "warnings"]),
    );
    if !failures.is_empty() {
        bail!("lint failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The seed's experiment on the WAN lab (see `demo.rs`). The lab creates
/// network namespaces: root only.
fn demo(seconds: u64) -> Result<()> {
    if !is_root() {
        bail!(
            "the demo builds a WAN link out of network namespaces and needs root: \
             run `sudo -E cargo xtask demo` (or as root)"
        );
    }
    let bin = build(true)?;
    demo::run(&bin, seconds.max(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_are_read_from_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/softirq-abc"}
{"reason":"compiler-artifact","profile":{"test":false},"executable":"/t/lib"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(test_executables(json), vec!["/t/softirq-abc".to_owned()]);
    }
}
