//! `xdr-ship tune`: this host against the link's BDP.
//!
//! Exit codes: 0 when every check passes, 2 when changes are advised (after
//! `--apply`: when some are still advised), 1 on errors — so a provisioning
//! script can run `xdr-ship tune … || …`.
use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context;
use xdr_ship::{
    lab::config,
    tune::{apply, HostState, Link, Report, Role, TuneError},
};

/// Checks this host against a link's bandwidth-delay product.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 when every check passes, 2 when changes are advised \
                        (after --apply: still advised), 1 on error."
)]
pub struct Args {
    /// Round-trip time of the link.
    #[arg(long, value_name = "DURATION", value_parser = rtt_arg)]
    rtt: Duration,
    /// Bandwidth of the link: 100MB/s, 12.5MiB/s, 800Mbit/s, 1Gbit/s.
    #[arg(long, value_name = "RATE", value_parser = bandwidth_arg)]
    bandwidth: u64,
    /// Which end of the link this host is.
    #[arg(long, value_enum, default_value_t = Role::Both)]
    role: Role,
    /// Raise the sysctls that need raising (root; never lowers a value),
    /// in the current network namespace, and print how to revert each.
    #[arg(long)]
    apply: bool,
    /// With --apply: also write the revert commands as a shell script.
    #[arg(long, value_name = "FILE", requires = "apply")]
    revert_script: Option<PathBuf>,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn rtt_arg(s: &str) -> Result<Duration, String> {
    let d = config::parse_rtt(s).map_err(|e| format!("expected {}", e.expected))?;
    if d.is_zero() {
        return Err(format!("expected {}", config::RTT_FORM));
    }
    Ok(d)
}

fn bandwidth_arg(s: &str) -> Result<u64, String> {
    config::parse_bandwidth(s).map_err(|e| format!("expected {}", e.expected))
}

#[derive(serde::Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    apply: Option<&'a apply::Outcome>,
    /// What is still advised after --apply (absent without --apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    still_advised: Option<Vec<&'a str>>,
    exit_code: i32,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.apply && !apply::is_root() {
        return Err(TuneError::NotRoot.into());
    }
    let root = std::path::Path::new("/");
    let link = Link::new(args.rtt, args.bandwidth);
    let report = Report::new(&HostState::read(root), link, args.role);
    let (outcome, after) = if args.apply {
        let outcome = apply::apply(root, &report);
        if let Some(path) = &args.revert_script {
            apply::write_revert_script(path, &outcome)?;
        }
        let after = Report::new(&HostState::read(root), link, args.role);
        (Some(outcome), Some(after))
    } else {
        (None, None)
    };
    let code = after.as_ref().unwrap_or(&report).exit_code();
    let mut out = std::io::stdout().lock();
    if args.json {
        let still = after.as_ref().map(|a| {
            a.checks
                .iter()
                .filter(|c| c.status == xdr_ship::tune::Status::Change)
                .map(|c| c.setting.as_str())
                .collect()
        });
        let json = JsonOut {
            report: &report,
            apply: outcome.as_ref(),
            still_advised: still,
            exit_code: code,
        };
        writeln!(out, "{}", serde_json::to_string(&json)?)?;
    } else {
        write!(out, "{}", report.render_table())?;
        if let Some(o) = &outcome {
            writeln!(out)?;
            write!(out, "{}", o.render())?;
            if let Some(path) = &args.revert_script {
                writeln!(out, "Revert script: {}", path.display())?;
            }
            writeln!(
                out,
                "After applying: {} (exit code {code})",
                if code == 0 {
                    "every check passes"
                } else {
                    "changes are still advised"
                }
            )?;
        }
    }
    out.flush().context("writing the report")?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
