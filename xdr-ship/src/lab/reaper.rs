//! The reaper: a tiny shell process that removes a lab when its controller
//! dies, however it dies.
//!
//! Why a separate process: `Drop` runs on normal return and on panic, and
//! the CLI turns Ctrl-C into a normal return, but nothing of ours runs after
//! SIGKILL (or an abort, or the OOM killer). The TUN devices go with the
//! controller's fds, and children go by `PR_SET_PDEATHSIG`, but the named
//! namespaces are bind mounts and would stay forever. So before creating
//! anything, `Lab::up` starts `sh` in its own session (immune to the
//! terminal's Ctrl-C and hang-up) reading a pipe whose only writer is the
//! controller. When the pipe closes without the word `disarm` (the
//! controller died), the reaper kills whatever runs in the namespaces,
//! deletes them, restores host sysctls it was told about (only if still at
//! the lab's value) and removes the status file. A clean teardown writes
//! `disarm` and the reaper exits without touching anything, so it can never
//! remove a newer lab of the same name.
use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use super::{HostTune, LabError};

const SCRIPT: &str = r#"
trap '' HUP INT PIPE
read -r word
[ "$word" = disarm ] && exit 0
for ns in "$1" "$2"; do
  [ -e "/run/netns/$ns" ] || continue
  for i in 1 2 3 4 5; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null
    sleep 0.1
  done
  ip netns delete "$ns" 2>/dev/null
done
if [ -n "$4" ] && [ "$(cat /proc/sys/net/core/rmem_max)" = "$4" ]; then echo "$5" > /proc/sys/net/core/rmem_max; fi
if [ -n "$6" ] && [ "$(cat /proc/sys/net/core/wmem_max)" = "$6" ]; then echo "$7" > /proc/sys/net/core/wmem_max; fi
rm -f "$3"
"#;

/// The armed reaper of one lab.
pub struct Reaper {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts the reaper for namespaces `near` and `far`, status file
    /// `status`, and the host change `tune` (if any).
    pub fn spawn(
        near: &str,
        far: &str,
        status: &Path,
        tune: Option<&HostTune>,
    ) -> Result<Self, LabError> {
        let num = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("xdr-ship-lab-reaper")
            .arg(near)
            .arg(far)
            .arg(status)
            .arg(num(tune.map(|t| t.rmem_max_new)))
            .arg(num(tune.map(|t| t.rmem_max_old)))
            .arg(num(tune.map(|t| t.wmem_max_new)))
            .arg(num(tune.map(|t| t.wmem_max_old)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure calls only `setsid`, which is async-signal-safe,
        // and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: "/bin/sh -c <reaper script>".to_owned(),
            source,
        })?;
        let pipe = child.stdin.take();
        Ok(Self { child, pipe })
    }

    /// The reaper's pid (for tests and `lab status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the reaper the lab is gone and waits (up to 2 s) for it to exit.
    pub fn disarm(mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"disarm\n");
        }
        self.wait(Duration::from_secs(2));
    }

    /// Closes the pipe without disarming: the reaper cleans up now. Waits up
    /// to 10 s for it.
    pub fn fire(mut self) {
        self.pipe.take();
        self.wait(Duration::from_secs(10));
    }

    fn wait(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    tracing::warn!("the lab's reaper did not exit within {timeout:?}; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Reached only if neither disarm nor fire ran (a bug path): let it
        // clean up, but do not block a panicking thread for long.
        if self.pipe.take().is_some() {
            self.wait(Duration::from_secs(10));
        }
    }
}
