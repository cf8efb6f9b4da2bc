//! lossyfs: a FUSE filesystem for tests that forgets, on command, what a
//! power cut would forget.
//!
//! Why: a `kill -9` keeps the page cache, so a program that acknowledges a
//! write *before* its `fdatasync` looks exactly like one that waits for it.
//! Only losing the page cache tells them apart. This machine has no
//! device-mapper (no dm-flakey, no dm-log-writes) but has FUSE, so, like
//! Jepsen's LazyFS, lossyfs passes every operation through to a backing
//! directory and keeps beside it what is not durable yet (see [`model`]):
//! bytes written since the file's last `fsync`/`fdatasync`, and names
//! created, removed or renamed since the last `fsync` of their directory.
//! [`Control::power_cut`] drops all of that (optionally tearing the newest
//! write at a seeded random byte) and fails every later operation with
//! `EIO` until the filesystem is mounted again, as a machine that lost
//! power does; [`Control::cut_when_durable`] arms a cut that falls right
//! after a named file becomes durable (a cut at a known point, not a lucky
//! one); [`Control::inject`] makes writes or syncs fail with `EIO`, on every
//! file or on those whose path matches.
//!
//! The mount is served by threads of the calling process ([`mount`]), or by
//! the `lossyfs` binary with a control socket. Every file is opened with
//! direct I/O and no attribute caching, so the kernel's own page cache never
//! answers for bytes the model dropped.
pub mod fs;
pub mod model;

pub use fs::{mount, Control, Fault, Mounted, Op};
pub use model::{CutReport, Disk};
