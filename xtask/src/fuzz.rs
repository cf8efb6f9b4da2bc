//! `cargo xtask fuzz`: long libFuzzer runs of the wire codec's targets
//! (`fuzz/fuzz_targets`), and the bounded run `cargo xtask test` does.
//!
//! cargo-fuzz passes nightly flags (`-Z sanitizer`, coverage passes); like
//! the kernel build, it runs on the stable toolchain with
//! `RUSTC_BOOTSTRAP=1`. The sanitizer is off (`-s none`): the code under
//! test is safe Rust, so AddressSanitizer would find nothing the bounds
//! checks do not, at a third of the speed; debug assertions are on (`-a`),
//! so arithmetic overflow is caught. Each target keeps a corpus in
//! `fuzz/corpus/TARGET` (not committed), so later runs start where earlier
//! ones stopped.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{root, show};

/// Every fuzz target.
pub const TARGETS: &[&str] = &["frame_decoder", "hello", "resp_request"];

/// How long one target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// Exactly this many executions.
    Runs(u64),
    /// This many seconds.
    Seconds(u64),
}

/// What one run did, from libFuzzer's closing line.
#[derive(Debug)]
pub struct Outcome {
    pub target: String,
    pub runs: u64,
    pub secs: f64,
}

fn cargo_fuzz() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    cmd
}

/// Builds the targets (release, instrumented).
pub fn build() -> Result<()> {
    crate::setup::ensure_cargo_fuzz()?;
    crate::tee::run(cargo_fuzz().args(["build", "-O", "-a", "-s", "none"]))
        .context("building the fuzz targets")
}

/// Runs `target` for `budget`; fails on a crash (the input is saved under
/// `fuzz/artifacts/TARGET`).
pub fn run_target(target: &str, budget: Budget) -> Result<Outcome> {
    let corpus = root().join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = cargo_fuzz();
    cmd.args(["run", "-O", "-a", "-s", "none", target])
        .arg(&corpus)
        .args(["--", "-print_final_stats=1", "-rss_limit_mb=2048"]);
    match budget {
        Budget::Runs(n) => cmd.arg(format!("-runs={n}")),
        Budget::Seconds(s) => cmd.arg(format!("-max_total_time={s}")),
    };
    eprintln!("+ {}", show(&cmd));
    let t0 = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    let stderr = child.stderr.take().context("piped stderr")?;
    let mut runs = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        // Progress lines go by; keep the user informed without flooding.
        if !line.starts_with('#') || line.contains("DONE") || line.contains("INITED") {
            eprintln!("{line}");
        }
        if let Some(n) = final_runs(&line) {
            runs = Some(n);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "fuzz target `{target}` failed ({status}): the crashing input is in fuzz/artifacts/{target}; \
             reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} fuzz/artifacts/{target}/<file>`"
        );
    }
    let runs = runs.with_context(|| {
        format!("fuzz target `{target}` ended without libFuzzer's final statistics")
    })?;
    Ok(Outcome {
        target: target.to_owned(),
        runs,
        secs,
    })
}

/// `stat::number_of_executed_units: N` (from `-print_final_stats=1`).
fn final_runs(line: &str) -> Option<u64> {
    line.strip_prefix("stat::number_of_executed_units:")?
        .trim()
        .parse()
        .ok()
}

/// `cargo xtask fuzz`: every target (or one), `runs` executions in total
/// split evenly, then a table of executions and executions/s.
pub fn fuzz(target: Option<String>, runs: u64) -> Result<()> {
    let targets: Vec<&str> = match &target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "--target {t}: no such fuzz target; expected one of {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    build()?;
    let each = runs.div_ceil(targets.len() as u64);
    let mut outcomes = Vec::new();
    for t in targets {
        outcomes.push(run_target(t, Budget::Runs(each))?);
    }
    println!(
        "\n{:<16} {:>14} {:>10} {:>12}",
        "target", "executions", "seconds", "exec/s"
    );
    let (mut total, mut secs) = (0u64, 0f64);
    for o in &outcomes {
        println!(
            "{:<16} {:>14} {:>10.1} {:>12.0}",
            o.target,
            o.runs,
            o.secs,
            o.runs as f64 / o.secs
        );
        total += o.runs;
        secs += o.secs;
    }
    println!(
        "{:<16} {:>14} {:>10.1} {:>12.0}",
        "total",
        total,
        secs,
        total as f64 / secs
    );
    Ok(())
}

/// The bounded run of `cargo xtask test`: every target for `seconds`.
pub fn bounded(seconds: u64) -> Result<()> {
    build()?;
    for t in TARGETS {
        let o = run_target(t, Budget::Seconds(seconds))?;
        eprintln!(
            "fuzz {}: {} executions in {:.1} s, no crash",
            o.target, o.runs, o.secs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statistics_line_gives_the_executions() {
        assert_eq!(
            final_runs("stat::number_of_executed_units: 1234567"),
            Some(1_234_567)
        );
        assert_eq!(final_runs("#1024  pulse  cov: 10 ft: 12"), None);
    }

    #[test]
    fn every_target_is_a_binary_of_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(root().join("fuzz").join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "fuzz/Cargo.toml has no [[bin]] {t}"
            );
        }
    }
}
