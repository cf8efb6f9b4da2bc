//! The durable engines against the disk they write to: `cargo xtask bench`'s
//! disk rows (also `--disk-only`).
//!
//! Each run is one `xdr-ship measure-disk` on a scratch directory of this
//! disk: the disk's own fdatasync'd bandwidth (1 MiB writes, as
//! `dd bs=1M conv=fdatasync`), then the destination store under
//! `durability sync` and the source log under group commit, 1000-byte
//! values from 64 writers, 64 per call. Runs repeat; the table shows
//! medians and each engine's ratio to the disk measured in the same run
//! (issue #17's targets: store ≥ 0.5×, log ≥ 0.7×).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What one `measure-disk` run printed.
#[derive(Debug)]
struct Run {
    disk_bytes_per_s: f64,
    value_bytes: f64,
    store_records_per_s: f64,
    store_bytes_written_per_value_byte: f64,
    store_writes_per_commit: f64,
    log_records_per_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn measure(bin: &Path, dir: &Path, records: u64) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.arg("measure-disk")
        .arg("--dir")
        .arg(dir)
        .args(["--records", &records.to_string()]);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", crate::show(&cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            crate::show(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim())
        .with_context(|| format!("reading measure-disk's JSON: {text}"))?;
    let field = |name: &str| {
        json[name]
            .as_f64()
            .with_context(|| format!("measure-disk printed no `{name}`: {text}"))
    };
    Ok(Run {
        disk_bytes_per_s: field("disk_bytes_per_s")?,
        value_bytes: field("value_bytes")?,
        store_records_per_s: field("store_records_per_s")?,
        store_bytes_written_per_value_byte: field("store_bytes_written_per_value_byte")?,
        store_writes_per_commit: field("store_writes_per_commit")?,
        log_records_per_s: field("log_records_per_s")?,
    })
}

/// The disk rows: `repeats` runs of `records` records per engine.
pub fn rows(bin: &Path, repeats: usize, records: u64) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("xdr-bench-disk-{}", std::process::id()));
    let mut runs = Vec::new();
    for i in 0..repeats {
        let run = measure(bin, &scratch, records);
        let _ = std::fs::remove_dir_all(&scratch);
        let run = run?;
        eprintln!(
            "  disk run {}: disk {:.0} MB/s, store {:.0} rec/s, log {:.0} rec/s",
            i + 1,
            run.disk_bytes_per_s / 1e6,
            run.store_records_per_s,
            run.log_records_per_s
        );
        runs.push(run);
    }
    let disk = median(runs.iter().map(|r| r.disk_bytes_per_s).collect());
    let value = runs.first().map_or(1000.0, |r| r.value_bytes);
    let store = median(runs.iter().map(|r| r.store_records_per_s).collect());
    let log = median(runs.iter().map(|r| r.log_records_per_s).collect());
    let amp = median(
        runs.iter()
            .map(|r| r.store_bytes_written_per_value_byte)
            .collect(),
    );
    let per_commit = median(runs.iter().map(|r| r.store_writes_per_commit).collect());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\ndurable engines vs the disk: {repeats} runs, {records} records of {value:.0} B, \
         64 writers x 64 per call (load average {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<46} {:>14} {:>10}  ratio (target)",
        "row", "median rec/s", "MB/s"
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  peer",
        "disk: 1 MiB writes + fdatasync",
        disk / value,
        disk / 1e6
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.2}x disk (>= 0.5x); {amp:.2} B written per value B; {per_commit:.0} writes per fdatasync",
        "store: durability sync (value log)",
        store,
        store * value / 1e6,
        store * value / disk
    );
    println!(
        "{:<46} {:>14.0} {:>10.1}  {:.2}x disk (>= 0.7x)",
        "source log: group commit",
        log,
        log * value / 1e6,
        log * value / disk
    );
    Ok(())
}
