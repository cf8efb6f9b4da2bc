//! The commands' bodies: the edge between flags and the library.

/// `println!` for the commands' output: a closed stdout (`xdr-ship … |
/// head`) ends the process quietly instead of panicking (see
/// [`print_line`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::print_line(format_args!($($arg)*))
    };
}

pub mod diagnose;
pub mod generate;
pub mod ingest;
pub mod lab;
pub mod live;
pub mod load;
pub mod measure;
pub mod observe;
pub mod recv;
pub mod replay;
pub mod ship;
pub mod shipping;
pub mod softirqs;
pub mod tls_args;
pub mod tune;
pub mod verify;

use std::time::Duration;

/// Writes one line to stdout. Why not `println!`: it panics (exit 101) on a
/// closed pipe, and the default SIGPIPE action cannot be restored for the
/// commands that hold sockets (a `writev` to a killed peer would end them
/// silently). The reader has gone (`| head`), so what was asked for is
/// delivered: exit 0, as `cat` would end; any other write error is said
/// once on stderr and the run goes on.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("xdr-ship: writing to stdout: {e}");
    }
}

/// Whether `e` is a write to a stdout whose reader has gone (`| head`):
/// then the command ends quietly with success. A broken pipe of a socket
/// is not one of these (stdout is checked itself, with `poll`).
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    let broken = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    broken && stdout_reader_gone()
}

/// `poll` on stdout: a pipe whose read end is closed reports `POLLERR`.
fn stdout_reader_gone() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `fds` is one valid, initialised `pollfd` that outlives the
    // call; a zero timeout returns at once.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n == 1 && fds.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// The flags every sampling view shares.
#[derive(clap::Args, Debug)]
pub struct Sampling {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Stop after this many samples (default: run until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// One JSON object per sample instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the non-eBPF sources even when the eBPF programs could load.
    #[arg(long)]
    pub no_ebpf: bool,
}

/// A report a sampling view prints: as a table or as one JSON object.
pub trait Report: serde::Serialize {
    /// The human table.
    fn table(&self) -> String;
}

impl Report for xdr_ship::probe::softirq::SoftirqReport {
    fn table(&self) -> String {
        self.render_table()
    }
}

impl Report for xdr_ship::live::FlowReport {
    fn table(&self) -> String {
        self.render_table()
    }
}

impl Sampling {
    /// Every `interval`, takes a report from `next` and prints it, until
    /// `count` reports or Ctrl-C.
    pub async fn run<R: Report>(
        &self,
        mut next: impl FnMut() -> anyhow::Result<R>,
    ) -> anyhow::Result<()> {
        use std::io::Write;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        let mut stdout = std::io::stdout();
        let mut printed = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            let report = next()?;
            if self.json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                if printed > 0 {
                    writeln!(stdout)?;
                }
                write!(stdout, "{}", report.table())?;
            }
            stdout.flush()?;
            printed += 1;
            if self.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
}

/// A duration in human units; the error names the accepted form.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 1s, 250ms or 2m"))?;
    if d.is_zero() {
        return Err("must be longer than zero, e.g. 1s or 250ms".to_owned());
    }
    Ok(d)
}

/// A size in bytes with optional units (`5MiB`, `15MB`, `65536`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    byte_unit::Byte::parse_str(s, true)
        .map_err(|e| format!("{e}; expected a size such as 5MiB, 15MB or 65536"))
        .and_then(|b| usize::try_from(b.as_u64()).map_err(|_| "too large".to_owned()))
}

/// Waits for Ctrl-C: the first stops intake (`stop`), the second cancels.
pub fn ctrl_c_tokens() -> (
    tokio_util::sync::CancellationToken,
    tokio_util::sync::CancellationToken,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (s, c) = (stop.clone(), cancel.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: finishing records in flight (Ctrl-C again to quit now)");
            s.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        }
    });
    (stop, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("5MiB"), Ok(5 << 20));
        assert_eq!(parse_size("15MB"), Ok(15_000_000));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("lots").unwrap_err().contains("such as 5MiB"));
    }

    #[test]
    fn durations_name_the_accepted_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("such as 1s"));
        assert!(parse_duration("0s").is_err());
    }
}
