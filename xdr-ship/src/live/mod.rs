//! The live pipeline: sample the kernel → join by cookie → judge → fan out
//! to sinks, once per snapshot interval.
//!
//! Why a module of its own: the shipping path has a room per stage, and so
//! does the observability path. `ship`, `diagnose`, the log path, `observe`
//! and `replay` all run the same stages; written once here, the headless
//! line, `--json`, `/metrics`, a recording and the TUI cannot disagree, and
//! the binary's `cmd/` only parses flags and wires sinks.
//!
//! Layout, in the order of the flow (arrows point down only):
//! - [`kernel`]: the one sampler that loads the kernel programs (or falls
//!   back to `/proc`) and reads them each interval; shareable, so N
//!   destinations load the programs once.
//! - [`join`]: the one join by socket cookie of the shipper's (or netlink's)
//!   rows with the kernel's.
//! - [`pipeline`]: one destination's stream: a snapshot in, the joined
//!   [`crate::diagnose::Sample`] and the verdict out.
//! - [`flows`]: any process's flows (netlink + eBPF), what `observe` prints
//!   and records.
//! - [`sink`]: the outputs as sinks of one [`sink::Frame`] stream (line,
//!   JSON, recording, TUI feed); [`prometheus`] is the `/metrics` sink,
//!   [`text_format`] the format a scrape negotiates.
//! - [`record`]: the one recording writer.
//!
//! Below it: [`crate::probe`] (kernel readers, no judgement) and
//! [`crate::diagnose`] (pure judgement, no I/O). Above it: `cmd/` and the
//! TUI, which read frames and never reach past them.
pub mod flows;
pub mod join;
pub mod kernel;
pub mod pipeline;
pub mod prometheus;
pub mod record;
pub mod sink;
pub mod text_format;

pub use flows::{FlowOptions, FlowReport, FlowSampler};
pub use join::{join, JoinedConn};
pub use kernel::{KernelOptions, KernelSampler, SharedKernel, Sources};
pub use pipeline::{Pipeline, PipelineOptions};
pub use record::{RecordError, RecordingWriter};
pub use sink::{Frame, Sink, Sinks};
