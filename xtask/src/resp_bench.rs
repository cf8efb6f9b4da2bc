//! The RESP ingest rows of `cargo xtask bench` (#12's target): the source
//! node's Redis front door, durable, under `redis-benchmark -t set -d 1000
//! -P 64`, against the same command pointed at a redis-server of the same
//! durability (`--appendonly yes --appendfsync always`: the target is
//! ≥ 1×) and at one that never syncs (`--appendfsync no`: reported).
//!
//! Why the source node ships to a port nobody listens on: the row measures
//! the door and the log's group commit alone (the log keeps every write
//! until a destination takes it); shipping has its own rows.
use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::bench::{median, Scratch};

/// SETs per redis-benchmark run (1 KB each: 200 MB into each log).
const REQUESTS: u64 = 200_000;
/// Distinct keys the SETs spread over.
const KEYSPACE: u64 = 100_000;
/// Longest wait for a server's port to open.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process killed on drop.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `redis-benchmark -t set -d 1000 -P 64` against `port`: SET/s.
fn benchmark(port: u16) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set", "-d", "1000", "-P", "64", "-q"])
        .args(["-n", &REQUESTS.to_string(), "-r", &KEYSPACE.to_string()])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    set_rate(&text).with_context(|| format!("no SET figure in redis-benchmark's output: {text}"))
}

/// The figure of `SET: 61274.12 requests per second, p50=…` (the last one,
/// after the `\r` progress lines).
pub(crate) fn set_rate(text: &str) -> Option<f64> {
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("SET: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
}

/// The source node's RESP door, durable, with its log in `dir`.
fn xdr_run(bin: &Path, dir: &Path) -> Result<f64> {
    let (port, nowhere) = (free_port()?, free_port()?);
    let _node = Guard(
        Command::new(bin)
            .args(["ship", "--log"])
            .arg(dir)
            .args(["--listen-resp", &format!("127.0.0.1:{port}")])
            .args(["--to", &format!("127.0.0.1:{nowhere}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the source node")?,
    );
    crate::bench::wait_listening(([127, 0, 0, 1], port).into(), START_TIMEOUT)?;
    benchmark(port)
}

/// redis-server with its append-only file in `dir`, synced per `fsync`.
fn redis_run(dir: &Path, fsync: &str) -> Result<f64> {
    let port = free_port()?;
    let _server = Guard(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", fsync])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?,
    );
    crate::bench::wait_listening(([127, 0, 0, 1], port).into(), START_TIMEOUT)?;
    benchmark(port)
}

/// The three rows, `repeats` runs each (interleaved), medians and ratios.
pub fn rows(bin: &Path, repeats: usize) -> Result<()> {
    let (mut xdr, mut always, mut never) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeats {
        for (runs, f) in [
            (
                &mut xdr,
                &(|d: &Path| xdr_run(bin, d)) as &dyn Fn(&Path) -> Result<f64>,
            ),
            (&mut always, &|d: &Path| redis_run(d, "always")),
            (&mut never, &|d: &Path| redis_run(d, "no")),
        ] {
            let dir = Scratch::new(&format!("resp-{i}"))?;
            runs.push(f(&dir.0)?);
        }
    }
    let (x, a, n) = (median(&mut xdr), median(&mut always), median(&mut never));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nRESP ingest: redis-benchmark -t set -d 1000 -P 64 -n {REQUESTS}, median of {repeats} (load average {})",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("{:<52} {:>12}  ratio (target)", "row", "SET/s");
    println!(
        "{:<52} {x:>12.0}  {:.2}x appendfsync always (>= 1x); {:.2}x appendfsync no",
        "ship --log --listen-resp (durable, group commit)",
        x / a,
        x / n
    );
    println!(
        "{:<52} {a:>12.0}  peer (same durability)",
        "redis-server --appendonly yes --appendfsync always"
    );
    println!(
        "{:<52} {n:>12.0}  reported",
        "redis-server --appendonly yes --appendfsync no"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_rate_is_the_last_figure_after_progress_lines() {
        let text = "SET: rps=1000.0 (overall: 1.0) avg_msec=1\rSET: 61274.12 requests per second, p50=0.5 msec\n";
        assert_eq!(set_rate(text), Some(61274.12));
        assert_eq!(set_rate("nothing"), None);
    }
}
