//! `cargo xtask soak`: the fault tests of `tests/tests/faults.rs`, longer:
//! 20 kills per kill test (or `--kills`) and a longer link outage, the
//! power-cut tests (`tests/tests/power.rs`) with [`SOAK_POWER_CUTS`] cuts,
//! and the full-disk and EIO tests (`tests/tests/disk_full.rs`), then the
//! figures every test printed, gathered in one table for the note.
//!
//! Why the same tests and not a separate harness: the soak then proves
//! exactly what CI proves, only more times over; the tests read their sizes
//! from `XDR_FAULT_KILLS` and `XDR_FAULT_OUTAGE_S`.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{bail, Context, Result};

/// Power cuts of the power-cut test in a soak (`tests/tests/power.rs`).
const SOAK_POWER_CUTS: u64 = 50;

/// Runs the fault tests with `kills` kills and an outage of `outage_s`,
/// then the power-cut tests with [`SOAK_POWER_CUTS`] cuts (or
/// `XDR_POWER_CUTS`), then the disk tests.
pub fn soak(bin: &std::path::Path, kills: u64, outage_s: u64) -> Result<()> {
    if !super::is_root() {
        bail!("the soak kills processes in network namespaces and needs root: run it as root");
    }
    let mut figures = Vec::new();
    let faults = run_test(bin, "faults", kills, outage_s, &mut figures);
    let power = run_test(bin, "power", kills, outage_s, &mut figures);
    let sites = two_sites(&mut figures);
    let disk = run_test(bin, "disk_full", kills, outage_s, &mut figures);
    println!(
        "\n=== soak figures ({kills} kills per kill test, {outage_s} s outage, {} power cuts)",
        power_cuts()
    );
    for f in &figures {
        println!("{f}");
    }
    faults?;
    power?;
    sites?;
    disk?;
    if figures.is_empty() {
        bail!("the fault tests printed no figures");
    }
    Ok(())
}

/// The power cuts of a soak: `XDR_POWER_CUTS` if set (a shorter rehearsal),
/// else [`SOAK_POWER_CUTS`].
fn power_cuts() -> u64 {
    std::env::var("XDR_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SOAK_POWER_CUTS)
}

/// Runs one test file, gathering its `figures` lines.
fn run_test(
    bin: &std::path::Path,
    test: &str,
    kills: u64,
    outage_s: u64,
    figures: &mut Vec<String>,
) -> Result<()> {
    let mut cmd = super::cargo();
    cmd.env("XDR_SHIP_BIN", bin)
        .env("XDR_FAULT_KILLS", kills.to_string())
        .env("XDR_FAULT_OUTAGE_S", outage_s.to_string())
        .env("XDR_POWER_CUTS", power_cuts().to_string())
        .args([
            "test",
            "-p",
            "xdr-tests",
            "--test",
            test,
            "--",
            "--test-threads=1",
            "--nocapture",
        ])
        .stdout(Stdio::piped());
    eprintln!(
        "+ XDR_FAULT_KILLS={kills} XDR_FAULT_OUTAGE_S={outage_s} {}",
        super::show(&cmd)
    );
    let mut child = cmd.spawn().context("starting the fault tests")?;
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading the tests' output")?;
        println!("{line}");
        // libtest prints `test NAME ... ` without a newline before a test's own output.
        if let Some(at) = line.find("figures ") {
            figures.push(line[at..].to_owned());
        }
    }
    let status = child.wait().context("waiting for the fault tests")?;
    if !status.success() {
        bail!("the {test} tests failed: {status}");
    }
    Ok(())
}

/// Runs of the two-site convergence test in a soak.
const SOAK_TWO_SITE_RUNS: u64 = 10;

/// The two-site convergence test (`xdr-ship/tests/two_sites.rs`, loopback,
/// one link cut per run) [`SOAK_TWO_SITE_RUNS`] times, gathering its
/// `figures` lines.
fn two_sites(figures: &mut Vec<String>) -> Result<()> {
    for run in 1..=SOAK_TWO_SITE_RUNS {
        let mut cmd = super::cargo();
        cmd.args([
            "test",
            "-p",
            "xdr-ship",
            "--test",
            "two_sites",
            "converge_on_the_greatest_version",
            "--",
            "--nocapture",
        ]);
        eprintln!("+ [two sites run {run}] {}", super::show(&cmd));
        let out = cmd.output().context("starting the two-site test")?;
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            if let Some(at) = line.find("figures ") {
                figures.push(format!("{} (run {run})", &line[at..]));
            }
        }
        if !out.status.success() {
            bail!("the two-site test failed in run {run}:\n{text}");
        }
    }
    Ok(())
}
