//! [`LabError`]: what can go wrong bringing a lab up or down, each variant
//! worded for the operator (what failed, and the command that fixes it).
use super::UnitError;

/// What can go wrong bringing a lab up or down.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A flag or config value is out of range.
    #[error(transparent)]
    Config(#[from] UnitError),
    /// The lab's name cannot make namespace names.
    #[error("invalid lab name '{0}': use 1 to 24 characters from a-z, 0-9 and '-'")]
    InvalidName(String),
    /// Not root.
    #[error(
        "the lab creates network namespaces and TUN devices and must run as root \
         (try `sudo xdr-ship lab …`)"
    )]
    NotRoot,
    /// The namespaces exist already.
    #[error(
        "lab '{name}' already exists (namespace {ns} is present); if no lab of that name is \
         running, remove the leftovers with `xdr-ship lab down --name {name}`"
    )]
    Exists {
        /// Lab name.
        name: String,
        /// The namespace found.
        ns: String,
    },
    /// A helper program could not start.
    #[error(
        "could not run `{command}`: {source} (is iproute2 installed? `apt-get install iproute2`)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("`{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        reason: String,
    },
    /// Entering a namespace failed.
    #[error("entering network namespace {ns}: {source}")]
    Netns {
        /// The namespace.
        ns: String,
        /// Why.
        source: std::io::Error,
    },
    /// Creating a TUN device failed.
    #[error(
        "creating TUN device {dev} in {ns}: {source} (needs /dev/net/tun and CAP_NET_ADMIN; \
         try `modprobe tun`)"
    )]
    Tun {
        /// The device name.
        dev: String,
        /// The namespace.
        ns: String,
        /// Why.
        source: std::io::Error,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The key, e.g. `net.ipv4.tcp_rmem`.
        key: String,
        /// Why.
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// No running lab of that name.
    #[error(
        "no lab named '{0}' is running (no status file {1}); start one with `xdr-ship lab up`"
    )]
    NotRunning(String, String),
    /// The status file did not parse.
    #[error("reading {path}: {reason}")]
    Status {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Teardown left something behind.
    #[error("teardown incomplete: {0}; run `xdr-ship lab down --name {1}`")]
    Teardown(String, String),
}
