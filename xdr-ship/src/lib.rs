//! xdr-ship ships a stream of record writes from a source node to a
//! destination across a long, fat link, with many writes in flight per TCP
//! connection so that round-trip time leaves the throughput equation, and
//! shows the operator, live, what limits the throughput.
//!
//! # Layout
//!
//! The modules follow the data flow (see `DESIGN.md` in the shared notes):
//!
//! - [`wire`]: the protocol between shipper and receiver: frames, messages,
//!   the codec (`docs/protocol.md` is its specification).
//! - [`probe`]: kernel-side eyes: the eBPF programs' loader and map readers,
//!   and the `/proc` fallback used when eBPF cannot load.
//!
//! Stages still to come each get a room of their own: `server` (accept loop
//! and sinks), `ship` (connections, windows, resend), `log`/`store`,
//! `diagnose` (the verdict), `tui`, `lab` (the WAN emulator) and `metrics`.
pub mod probe;
pub mod wire;
