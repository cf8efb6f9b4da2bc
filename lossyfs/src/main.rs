//! `lossyfs BACKING MOUNTPOINT CONTROL_SOCKET`: mounts lossyfs and takes
//! commands, one line each, on a unix socket (for tests in other languages
//! or by hand; the Rust tests use the library in-process):
//!
//! - `cut` / `cut SEED`: lose power (with `SEED`: tear the newest write);
//!   answers what was dropped, then unmounts and exits.
//! - `eio writes` / `eio syncs` / `eio both` / `eio off`, each optionally
//!   followed by `MATCHING`: inject `EIO` (only on paths containing it).
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use lossyfs::Fault;

fn main() -> std::io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint, socket] = &args[..] else {
        eprintln!("usage: lossyfs BACKING MOUNTPOINT CONTROL_SOCKET");
        std::process::exit(2);
    };
    let mounted = lossyfs::mount(backing, mountpoint)?;
    let control = mounted.control();
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["cut", rest @ ..] => {
                let seed = rest.first().and_then(|s| s.parse().ok());
                let report = control.power_cut(seed)?;
                writeln!(conn, "ok {report:?}")?;
                break;
            }
            ["eio", what, rest @ ..] => {
                let (writes, syncs) = match *what {
                    "writes" => (true, false),
                    "syncs" => (false, true),
                    "both" => (true, true),
                    _ => (false, false),
                };
                let fault = Fault {
                    writes,
                    syncs,
                    matching: rest.first().map(|m| (*m).to_owned()),
                };
                let answer = format!("ok {fault:?}");
                control.inject(fault);
                answer
            }
            _ => format!("error: unknown command {line:?}"),
        };
        writeln!(conn, "{answer}")?;
    }
    let _ = std::fs::remove_file(socket);
    mounted.unmount()
}
