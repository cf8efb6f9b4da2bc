//! What the engine eats: one [`Sample`] per snapshot interval, and the
//! versioned JSON line a recording stores it as.
//!
//! Why a recording format lives here: a verdict is only as good as the
//! rules behind it, and rules are tuned by replaying real runs. A sample is
//! exactly what [`super::Diagnoser::push`] takes, so a recording replays
//! into the engine without translation.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    metrics::ShipSnapshot,
    probe::{softirq::SoftirqReport, tcp::KernelConn},
};

/// The `ship.mode` of a sample that has only the kernel's half: one
/// written by `xdr-ship observe` for flows of a process we did not write.
/// Such a sample is judged from `TCP_INFO` alone ([`Sample::kernel_only`]).
pub const OBSERVE_MODE: &str = "observe";

/// Who owns one observed flow, and where it goes: what the kernel-only
/// verdict names as "the application".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowOwner {
    /// The socket's cookie (the join key with `ship.connections`).
    pub cookie: u64,
    /// The owning process, if it could be found in `/proc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its command name (`/proc/<pid>/comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The remote address, `10.0.0.2:5201`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

impl FlowOwner {
    /// `iperf3 (pid 4242)`, `pid 4242`, or `the process` when unknown.
    pub fn process(&self) -> String {
        match (&self.comm, self.pid) {
            (Some(c), Some(p)) => format!("{c} (pid {p})"),
            (None, Some(p)) => format!("pid {p}"),
            (Some(c), None) => c.clone(),
            (None, None) => "the process".to_owned(),
        }
    }
}

/// Version of the JSON line written by [`Sample::to_json_line`]. Bump it
/// when a field changes meaning; adding an optional field does not need it.
pub const SAMPLE_VERSION: u32 = 1;

/// Why a recorded line could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("recording line does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// No `v` field: not a recording line.
    #[error("recording line has no version field `v`")]
    NoVersion,
    /// Written by another version of the format.
    #[error("recording line is version {found}; this build reads version {supported}")]
    Version {
        /// The line's version.
        found: u64,
        /// [`SAMPLE_VERSION`].
        supported: u32,
    },
}

/// Facts about the link the kernel cannot measure, given by the operator
/// (`--link-rate`, `--rtt`). Both are optional: without them the engine
/// falls back to what it measures, and says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHints {
    /// The path's round-trip time without queueing.
    #[serde(
        rename = "rtt_us",
        with = "opt_duration_us",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rtt: Option<Duration>,
    /// The link's rate for payload, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_s: Option<u64>,
}

/// Everything known at the end of one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, on a clock that only has to be monotonic within one run
    /// (seconds since the shipper started will do): only differences count.
    #[serde(rename = "at_s", with = "duration_s")]
    pub at: Duration,
    /// The shipper's snapshot (with each connection's `TCP_INFO`).
    pub ship: ShipSnapshot,
    /// Per-CPU softirq load over the interval that ends here.
    #[serde(default)]
    pub softirq: Option<SoftirqReport>,
    /// What the operator told us about the link.
    #[serde(default)]
    pub link: LinkHints,
    /// The eBPF programs' rows for the shipper's sockets (joined to
    /// `ship.connections` by cookie); empty without eBPF. Context for the
    /// TUI and recordings: the verdict itself reads `TCP_INFO`, which has
    /// the kernel's chrono timers that eBPF lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel: Vec<KernelConn>,
    /// For a kernel-only sample: who owns each flow (by cookie).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<FlowOwner>,
    /// The network device the flows' packets use (the route to the peer),
    /// for remedies that name a device's files; `None`: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Sample {
    /// A sample taken at the snapshot's own `elapsed_s` (a negative or
    /// non-finite value counts as zero).
    pub fn from_snapshot(
        ship: ShipSnapshot,
        softirq: Option<SoftirqReport>,
        link: LinkHints,
    ) -> Self {
        Self {
            at: Duration::try_from_secs_f64(ship.elapsed_s).unwrap_or_default(),
            ship,
            softirq,
            link,
            kernel: Vec::new(),
            owners: Vec::new(),
            device: None,
        }
    }

    /// Whether only the kernel's half is known (an `observe` sample): no
    /// app window, no records, no answers; the verdict reads `TCP_INFO`.
    pub fn kernel_only(&self) -> bool {
        self.ship.mode == OBSERVE_MODE
    }

    /// The owner of the flow with `cookie`, if recorded.
    pub fn owner(&self, cookie: u64) -> Option<&FlowOwner> {
        self.owners.iter().find(|o| o.cookie == cookie)
    }

    /// One line of a recording: this sample as a JSON object with the
    /// format version in `v`, no trailing newline.
    pub fn to_json_line(&self) -> Result<String, DiagnoseError> {
        #[derive(Serialize)]
        struct Line<'a> {
            v: u32,
            #[serde(flatten)]
            sample: &'a Sample,
        }
        Ok(serde_json::to_string(&Line {
            v: SAMPLE_VERSION,
            sample: self,
        })?)
    }

    /// Reads a line written by [`Sample::to_json_line`], refusing other
    /// versions rather than guessing at their meaning.
    pub fn from_json_line(line: &str) -> Result<Self, DiagnoseError> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let found = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .ok_or(DiagnoseError::NoVersion)?;
        if found != u64::from(SAMPLE_VERSION) {
            return Err(DiagnoseError::Version {
                found,
                supported: SAMPLE_VERSION,
            });
        }
        Ok(serde_json::from_value(value)?)
    }
}

/// A `Duration` as fractional seconds (readable in a recording).
pub(crate) mod duration_s {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(D::Error::custom)
    }
}

/// An optional `Duration` as whole microseconds.
pub(crate) mod opt_duration_us {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}
