//! xdr-ship ships a stream of record writes from a source node to a
//! destination across a long, fat link, with many writes in flight per TCP
//! connection so that round-trip time leaves the throughput equation, and
//! shows the operator, live, what limits the throughput.
//!
//! # Layout
//!
//! The modules follow the data flow (the README's Layout table lists them
//! with their files):
//!
//! - [`wire`]: the protocol between shipper and receiver: frames, messages,
//!   the codec (`docs/protocol.md` is its specification).
//! - [`ship`]: the pipelined shipper: a [`ship::Source`], the connection
//!   pool, the auto window, the in-flight table, resend; the destination's
//!   protocol behind one request codec (native, or Redis in `ship::redis`);
//!   a Redis Cluster as a pool per node behind a slot router.
//! - [`server`]: the receiver's accept loop and connections (ordered and
//!   unordered answers), its TOML config and its Prometheus metrics.
//! - [`store`]: the destination store, last-writer-wins, group commit
//!   (`store::durable`: the engine; `writer.rs` appends, `committer.rs`
//!   fdatasyncs and answers; `durable/open.rs`, `durable/read.rs`).
//! - [`metrics`]: the one snapshot type every output renders, its
//!   headless line and JSON line.
//! - [`tls`]: TLS 1.3 (rustls) for the links and the HELLO token: who may
//!   talk to whom.
//! - [`net`]: socket buffers (with the sysctl that caps them) and cookies;
//!   `net::route`: the device a peer's route uses (for remedies that name it).
//! - [`probe`]: kernel-side eyes: the eBPF programs' loader and one map
//!   reader per program kind, netlink `inet_diag`, and the `/proc`
//!   fallback used when eBPF cannot load. Reads; never joins or judges.
//! - [`live`]: the live pipeline: sample the kernel, join by socket cookie,
//!   judge, and fan out to sinks (line, JSON, Prometheus in the classic text
//!   format or OpenMetrics as asked, recording, TUI);
//!   `observe`'s view of any process's flows.
//! - [`diagnose`]: the verdict: what limits the throughput, its share,
//!   evidence and exact fix. Pure: samples in, verdicts out; `diagnose::acc`
//!   is the one accumulator both rule walks share.
//! - [`tune`]: this host's sysctls, interrupts and RPS checked against a
//!   link's BDP, and `--apply` to raise what limits it.
//! - [`tui`]: the live screen (and `replay` of recordings): the verdict,
//!   the per-connection app and kernel numbers, softirq per CPU, charts.
//! - [`lab`]: the WAN emulator: two network namespaces joined by a
//!   user-space delay line (RTT, rate, loss, buffer, MTU) on one machine.
//! - [`units`]: bytes, rates and durations for people, and the link
//!   formulas (BDP, Mathis) every stage quotes.
//! - [`srclog`]: the durable source log: group-committed appends, segments,
//!   per-destination checkpoints, reclaim, the disk budget; a
//!   [`srclog::LogSource`] per destination; a site taking local and
//!   shipped writes (two sites writing at once).
//! - [`resp`]: Redis's protocol at both ends: the source node's front door
//!   (commands from any Redis client appended to the log, `+OK` once
//!   durable) and the destination's read-only door (GET, SCAN, …).
//! - [`destinations`]: the source node's destinations, from `--to` and the
//!   `--config` TOML, with errors naming file, line and key; the
//!   [`ConfigError`] it shares with `recv --config` lives in `config_file`.
mod config_file;
pub mod destinations;
pub mod diagnose;
pub mod lab;
pub mod live;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod resp;
pub mod server;
pub mod ship;
pub mod srclog;
pub mod store;
pub mod tls;
pub mod tui;
pub mod tune;
pub mod units;
pub mod wire;

pub use config_file::ConfigError;
