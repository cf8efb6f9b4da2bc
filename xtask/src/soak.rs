//! `cargo xtask soak`: the fault tests of `tests/tests/faults.rs`, longer:
//! 20 kills per kill test (or `--kills`) and a longer link outage, then the
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

/// Runs the fault tests with `kills` kills and an outage of `outage_s`.
pub fn soak(bin: &std::path::Path, kills: u64, outage_s: u64) -> Result<()> {
    if !super::is_root() {
        bail!("the soak kills processes in network namespaces and needs root: run it as root");
    }
    let mut cmd = super::cargo();
    cmd.env("XDR_SHIP_BIN", bin)
        .env("XDR_FAULT_KILLS", kills.to_string())
        .env("XDR_FAULT_OUTAGE_S", outage_s.to_string())
        .args([
            "test",
            "-p",
            "xdr-tests",
            "--test",
            "faults",
            "--",
            "--test-threads=1",
            "--nocapture",
        ])
        .stdout(Stdio::piped());
    eprintln!(
        "+ XDR_FAULT_KILLS={kills} XDR_FAULT_OUTAGE_S={outage_s} {}",
        super::show(&cmd)
    );
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().context("starting the fault tests")?;
    let mut figures = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading the tests' output")?;
        println!("{line}");
        // libtest prints `test NAME ... ` without a newline before a test's own output.
        if let Some(at) = line.find("figures ") {
            figures.push(line[at..].to_owned());
        }
    }
    let status = child.wait().context("waiting for the fault tests")?;
    println!(
        "\n=== soak figures ({kills} kills per kill test, {outage_s} s outage, {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    for f in &figures {
        println!("{f}");
    }
    if !status.success() {
        bail!("the fault tests failed: {status}");
    }
    if figures.is_empty() {
        bail!("the fault tests printed no figures");
    }
    Ok(())
}
