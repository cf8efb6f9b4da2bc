//! The `xdr-ship` command line.
//!
//! Every subcommand is a thin edge over the library (bodies in `cmd/`):
//! parse flags (a bad flag names itself and the accepted form), run, report
//! errors with `anyhow`.
mod cmd;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the hot paths allocate per batch on
/// several runtime threads, and glibc's per-thread arenas grew and shrank
/// the heap with an `mprotect` per few records (67K of them for 300K
/// records on the receiver, `strace -c`), and its free lists cost the
/// shipper ~7% of its CPU in `_int_malloc`/`_int_free` (`perf record`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "xdr-ship", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Receive writes and apply them to a store (the destination).
    Recv(cmd::recv::Args),
    /// Ship records to a destination, many in flight per connection.
    Ship(cmd::ship::Args),
    /// `ship` on the live screen: the verdict, each connection's app and
    /// kernel numbers, softirq per CPU, charts.
    Tui(cmd::ship::Args),
    /// A client load generator: synchronous (or windowed) writers.
    Load(cmd::load::Args),
    /// Per-CPU softirq load, split by vector: the `si` column of `top`.
    Softirqs(cmd::softirqs::Args),
    /// Any process's TCP flows: windows, RTT, retransmits, softirq per CPU.
    Observe(cmd::observe::Args),
    /// Measure the link to a receiver (stop-and-wait, then pipelined) and
    /// say what limits it, with the fix.
    Diagnose(cmd::diagnose::Args),
    /// Play a recording back: on the screen (pause, seek) or as text.
    Replay(cmd::replay::Args),
    /// A long, fat link on this machine: two namespaces and a delay line.
    Lab(cmd::lab::LabArgs),
    /// Check this host against a link's BDP; --apply raises what limits it.
    Tune(cmd::tune::Args),
    /// Compare a source log with a destination over RESP, key by key:
    /// missing, stale and extra counts (exit 1 when they differ).
    Verify(cmd::verify::Args),
    /// The durable engines' rates beside the disk's (for `cargo xtask bench`).
    #[command(hide = true)]
    MeasureDisk(cmd::measure::Args),
    /// Shell completions and man pages (for the package).
    #[command(hide = true)]
    Generate(cmd::generate::Args),
}

/// Restores the default action of SIGPIPE (terminate, quietly).
///
/// Why: Rust ignores SIGPIPE at start, so a write to a closed pipe
/// (`xdr-ship replay F --text | head -1`) returns EPIPE and `println!`
/// panics (exit 101). Handling EPIPE at every print site would miss some;
/// the default action ends the process silently the way `cat` or `grep`
/// end. Only for the commands that hold no network connection: a vectored
/// write (`writev`, which has no `MSG_NOSIGNAL`) to a socket whose peer was
/// killed would raise SIGPIPE too, and `recv` died silently of it when a
/// shipper was killed with answers in flight (the faults test).
fn default_sigpipe() {
    // SAFETY: called in `main` before any thread exists; setting a
    // signal's disposition to SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--version`'s text: the version, whether the kernel programs are in
/// this binary, and which `tcp_probe` path this kernel would use.
fn version_text() -> String {
    use xdr_ship::probe::ebpf;
    let programs = if ebpf::built_with_kernel_programs() {
        "embedded"
    } else {
        "not embedded (built without them: softirq and TCP views fall back)"
    };
    format!(
        "{}\nkernel programs: {programs}\ntcp_probe on this kernel: {}",
        env!("CARGO_PKG_VERSION"),
        ebpf::expected_tcp_probe_path()
    )
}

/// The command line; `--version` is the long text, worked out (a read of
/// the kernel's BTF) only when asked for.
fn parse_cli() -> Cli {
    let mut command = Cli::command();
    if std::env::args_os().any(|a| a == "--version" || a == "-V") {
        // Leaked once: clap keeps a `&'static str` and the process ends next.
        command = command.version(&*Box::leak(version_text().into_boxed_str()));
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli();
    if let Command::Generate(args) = cli.command {
        return cmd::generate::run(args, Cli::command());
    }
    if matches!(
        cli.command,
        Command::Replay(_) | Command::Softirqs(_) | Command::Tune(_)
    ) {
        default_sigpipe();
    }
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("XDR_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    let on_screen = match &cli.command {
        Command::Tui(_) => true,
        Command::Ship(a) => a.tui,
        _ => false,
    };
    if on_screen {
        // Log lines on stderr would draw over the screen: they go to a file.
        let path = std::env::temp_dir().join(format!("xdr-ship-{}.log", std::process::id()));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("creating the log file {}", path.display()))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init();
        eprintln!("logs: {}", path.display());
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let ran = rt.block_on(async {
        match cli.command {
            Command::Recv(args) => cmd::recv::run(args).await,
            Command::Ship(args) => cmd::ship::run(args).await,
            Command::Tui(mut args) => {
                args.tui = true;
                cmd::ship::run(args).await
            }
            Command::Load(args) => cmd::load::run(args).await,
            Command::Softirqs(args) => cmd::softirqs::run(args).await,
            Command::Observe(args) => cmd::observe::run(args).await,
            Command::Diagnose(args) => cmd::diagnose::run(args).await,
            Command::Replay(args) => cmd::replay::run(args).await,
            Command::Lab(args) => cmd::lab::run(args).await,
            Command::Tune(args) => cmd::tune::run(args).await,
            Command::MeasureDisk(args) => cmd::measure::run(args).await,
            Command::Generate(_) => unreachable!("handled before the runtime starts"),
            Command::Verify(args) => cmd::verify::run(args).await,
        }
    });
    match ran {
        // The reader of stdout has gone (`| head`): what it asked for was
        // delivered; end quietly, as `cat` does.
        Err(e) if cmd::is_closed_stdout(&e) => Ok(()),
        other => other,
    }
}
