//! Runs a command with its output passed through and its telling lines
//! kept, so a failed step of `cargo xtask test` can say *why* in the
//! summary at the end.
//!
//! Why: CI shows the tail of a run. A compile error, a full disk or a
//! failed download printed minutes before the summary is out of sight
//! there, and a summary reading only "FAILED … exit status: 1" is a
//! failure nobody can act on.
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    thread,
};

use anyhow::{bail, Context, Result};

/// Telling lines kept per command (the first ones: the first error is the
/// cause, later ones its consequences).
const KEEP_TELLING: usize = 24;
/// Last lines of standard error kept per command.
const KEEP_LAST: usize = 12;

/// What a command's output said, for its failure message.
#[derive(Default)]
struct Notes {
    telling: Vec<String>,
    last: VecDeque<String>,
}

impl Notes {
    fn take(&mut self, line: &str, is_stderr: bool) {
        if self.telling.len() < KEEP_TELLING && is_telling(line) {
            self.telling.push(line.to_owned());
        }
        if is_stderr {
            if self.last.len() == KEEP_LAST {
                self.last.pop_front();
            }
            self.last.push_back(line.to_owned());
        }
    }
}

/// Whether a line of cargo's, a test's or a tool's output says what went
/// wrong.
fn is_telling(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("error")
        || l.starts_with("---- ")
        || l.starts_with("failures:")
        || l.contains("panicked at")
        || l.contains("test result: FAILED")
        || l.ends_with("... FAILED")
        || l.contains("No space left")
        || l.contains("could not compile")
        || l.contains("failed to download")
        || l.contains("failed to fetch")
        || l.contains("Killed")
}

/// Runs `cmd` with its standard output and error passed through line by
/// line; on failure the error names the command, its status and the lines
/// that said why.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = crate::show(cmd);
    eprintln!("+ {shown}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let out = child.stdout.take().context("piped stdout")?;
    let err = child.stderr.take().context("piped stderr")?;
    let out = thread::spawn(move || pass(out, false));
    let err = thread::spawn(move || pass(err, true));
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let notes = Notes {
        telling: out
            .telling
            .into_iter()
            .chain(err.telling)
            .take(KEEP_TELLING)
            .collect(),
        last: err.last,
    };
    if status.success() {
        return Ok(());
    }
    bail!("`{shown}` failed: {status}{}", said(&notes))
}

/// Copies `from` to this process's own stdout or stderr, line by line;
/// returns what it said (bounded: the first telling lines, and of stderr
/// the last few).
fn pass(from: impl Read, is_stderr: bool) -> Notes {
    let mut notes = Notes::default();
    for line in BufReader::new(from).split(b'\n') {
        let Ok(bytes) = line else { break };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if is_stderr {
            let _ = writeln!(std::io::stderr(), "{text}");
        } else {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
        notes.take(&text, is_stderr);
    }
    notes
}

/// The part of a failure message that quotes the output.
fn said(notes: &Notes) -> String {
    let mut s = String::new();
    if !notes.telling.is_empty() {
        s.push_str("\n  it said:");
        for l in &notes.telling {
            s.push_str("\n    ");
            s.push_str(l);
        }
    }
    if !notes.last.is_empty() {
        s.push_str("\n  its last lines:");
        for l in &notes.last {
            s.push_str("\n    ");
            s.push_str(l);
        }
    }
    s
}

/// `disk: 70.1 GB free of 252.0 GB at PATH`: a full disk fails builds and
/// tests in ways that name other things.
pub fn free_space_line(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return format!("disk: {} is not a C path", path.display());
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and
    // `st` is a plain C struct statvfs fills (zeroed is a valid value).
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st), st)
    };
    if rc != 0 {
        return format!(
            "disk: statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let gb = |blocks: u64| blocks as f64 * st.f_frsize as f64 / 1e9;
    format!(
        "disk: {:.1} GB free of {:.1} GB at {}",
        gb(st.f_bavail),
        gb(st.f_blocks),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_names_its_errors_and_its_last_lines() {
        let e = run(Command::new("sh").args([
            "-c",
            "echo '---- a_test stdout ----'; \
             echo 'error: could not compile `x`' >&2; \
             echo 'the end' >&2; exit 3",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("it said:\n    ---- a_test stdout ----"), "{e}");
        assert!(e.contains("error: could not compile"), "{e}");
        assert!(
            e.contains("its last lines:\n    error: could not compile `x`\n    the end"),
            "{e}"
        );
    }

    #[test]
    fn the_free_space_line_gives_free_and_total() {
        let l = free_space_line(std::path::Path::new("/"));
        assert!(l.starts_with("disk: ") && l.contains(" GB free of "), "{l}");
    }

    #[test]
    fn a_command_that_succeeds_is_ok() {
        run(Command::new("sh").args(["-c", "echo error: not really; exit 0"])).unwrap();
    }
}
