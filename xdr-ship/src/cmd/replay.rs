//! `xdr-ship replay FILE`: a recording played back on the screen, or as
//! text when asked (`--text`) or when stdout is not a terminal.
use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;
use xdr_ship::tui::{replay, TuiOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A recording: JSON lines written by `--record` or the screen's `r`,
    /// plain or zstd-compressed (`--record F.zst` writes those).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Playback speed: 2 plays twice as fast as recorded, 0.5 half as fast.
    #[arg(long, default_value = "1", value_name = "FACTOR", value_parser = parse_speed)]
    pub speed: f64,
    /// The window the verdict judges over.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = super::parse_duration)]
    pub window: Duration,
    /// One line per sample and the final verdict, instead of the screen.
    #[arg(long)]
    pub text: bool,
    /// Where `r` records an excerpt: a directory or a file.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub record_to: PathBuf,
}

/// A positive playback factor; the error names the accepted form.
fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err("expected a positive factor such as 0.5, 1 or 10".to_owned()),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let samples = replay::read_recording(&args.file)?;
    if args.text || !std::io::stdout().is_terminal() {
        let mut out = std::io::stdout().lock();
        replay::write_text(&samples, args.window, &mut out).context("writing to stdout")?;
        return Ok(());
    }
    let opts = TuiOptions {
        record_to: args.record_to,
        ..TuiOptions::default()
    };
    let exit =
        tokio::task::spawn_blocking(move || replay::play(samples, args.window, args.speed, &opts))
            .await
            .context("the screen's thread")??;
    for path in exit.recordings {
        eprintln!("recorded to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_must_be_a_positive_factor() {
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        assert!(parse_speed("0").unwrap_err().contains("such as 0.5"));
        assert!(parse_speed("-2").is_err());
        assert!(parse_speed("fast").is_err());
        assert!(parse_speed("inf").is_err());
    }
}
