//! The delay line: two threads, one per direction, each reading one TUN
//! device and writing the other when a packet's release time comes.
//!
//! Why threads and not tokio: each direction is a tight loop around one fd
//! and one FIFO, sleeping in `ppoll` until the next read or release with
//! sub-millisecond precision; a runtime's timer wheel (1 ms) would add
//! jitter and buys nothing here.
//!
//! Why it stays bounded: the scheduler admits a segment only while the
//! backlog fits the configured buffer, so the FIFO never holds more than
//! `rate × (buffer + RTT/2 + jitter)`; a hard cap on bytes and packets on top
//! of that turns any accounting bug into counted drops, never into memory growth.
//!
//! Why one file of ~650 lines: the two directions' loops, their FIFO, the
//! drop and delay counters and the stats `lab status` reads share private
//! state (the admission under the buffer bound is the invariant above);
//! split, that state would become an interface.
use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    config::LinkConfig,
    gso::{self, VNET_HDR_LEN},
    sched::{Admission, Nanos, Scheduler},
    LabError,
};

/// Upper bound on packets held per direction, whatever the byte accounting says.
const MAX_HELD_PACKETS: usize = 1 << 18;
/// Longest sleep between checks of the stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Reads per wake-up before the loop looks at the release side again.
const READ_BATCH: usize = 64;
/// A TUN read buffer that fits the largest GSO frame (64 KiB IP + vnet header).
const FRAME_BUF: usize = 65_536 + VNET_HDR_LEN + 1024;
/// A timestamp echo sample is kept in the stats this long.
const ECHO_FRESH_NS: Nanos = 5_000_000_000;

/// Counters and gauges of one direction, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Frames read from the sending TUN (a GSO super-packet counts once).
    pub packets_in: u64,
    /// MSS segments those frames carry.
    pub segments_in: u64,
    /// IP bytes those segments carry on the wire.
    pub bytes_in: u64,
    /// Frames written to the receiving TUN.
    pub packets_out: u64,
    /// Segments delivered.
    pub segments_out: u64,
    /// IP bytes delivered.
    pub bytes_out: u64,
    /// Segments tail-dropped because the buffer was full.
    pub drops_queue: u64,
    /// Segments dropped at random (`--loss`).
    pub drops_loss: u64,
    /// Segments dropped while the link was down ([`DelayLine::set_up`]).
    #[serde(default)]
    pub drops_down: u64,
    /// Super-packets split in user space because some of their segments were dropped.
    pub splits: u64,
    /// Frames the receiving TUN refused.
    pub write_errors: u64,
    /// Bytes waiting for the wire now (the router's buffer).
    pub queue_bytes: u64,
    /// Delay the buffer adds now.
    pub queue_delay: Duration,
    /// Bytes held by the line now, buffer and propagation together.
    pub held_bytes: u64,
    /// Frames held by the line now.
    pub held_packets: u64,
    /// CPU time this direction's thread has used.
    pub cpu_time: Duration,
    /// Time from the line seeing a TCP packet in this direction to seeing
    /// the peer echo its timestamp: this direction's delay plus the peer's
    /// reaction (latest sample).
    pub echo_delay: Option<Duration>,
}

/// Both directions of the line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineStats {
    /// Since the line started.
    pub elapsed: Duration,
    /// Near to far (the shipper's data direction).
    pub near_to_far: DirectionStats,
    /// Far to near (acknowledgements).
    pub far_to_near: DirectionStats,
    /// Configured RTT plus the current queue delay of both directions.
    pub path_rtt: Duration,
    /// RTT measured from TCP timestamps crossing the line, when a TCP
    /// connection with timestamps has been seen in both directions lately:
    /// the sum of both directions' `echo_delay`. Like TCP's own samples it
    /// includes queueing and the ends' ACK delay, so it reads a little above
    /// `path_rtt` under light traffic (delayed ACKs) and tracks it under load.
    pub measured_rtt: Option<Duration>,
}

impl LineStats {
    /// CPU time of both directions.
    pub fn cpu_time(&self) -> Duration {
        self.near_to_far.cpu_time + self.far_to_near.cpu_time
    }
}

#[derive(Default)]
struct Counters {
    packets_in: AtomicU64,
    segments_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    segments_out: AtomicU64,
    bytes_out: AtomicU64,
    drops_queue: AtomicU64,
    drops_loss: AtomicU64,
    drops_down: AtomicU64,
    splits: AtomicU64,
    write_errors: AtomicU64,
    queue_bytes: AtomicU64,
    queue_delay_ns: AtomicU64,
    held_bytes: AtomicU64,
    held_packets: AtomicU64,
    cpu_ns: AtomicU64,
    echo_ns: AtomicU64,
    echo_at_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self, now: Nanos) -> DirectionStats {
        let echo_at = self.echo_at_ns.load(Relaxed);
        DirectionStats {
            packets_in: self.packets_in.load(Relaxed),
            segments_in: self.segments_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            segments_out: self.segments_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            drops_queue: self.drops_queue.load(Relaxed),
            drops_loss: self.drops_loss.load(Relaxed),
            drops_down: self.drops_down.load(Relaxed),
            splits: self.splits.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            queue_bytes: self.queue_bytes.load(Relaxed),
            queue_delay: Duration::from_nanos(self.queue_delay_ns.load(Relaxed)),
            held_bytes: self.held_bytes.load(Relaxed),
            held_packets: self.held_packets.load(Relaxed),
            cpu_time: Duration::from_nanos(self.cpu_ns.load(Relaxed)),
            echo_delay: (echo_at > 0 && now.saturating_sub(echo_at) < ECHO_FRESH_NS)
                .then(|| Duration::from_nanos(self.echo_ns.load(Relaxed))),
        }
    }
}

fn stats_of(shared: &Shared, rtt: Duration) -> LineStats {
    let now = shared.now();
    let a = shared.counters[0].snapshot(now);
    let b = shared.counters[1].snapshot(now);
    let measured_rtt = match (a.echo_delay, b.echo_delay) {
        (Some(x), Some(y)) => Some(x + y),
        _ => None,
    };
    LineStats {
        elapsed: Duration::from_nanos(now),
        path_rtt: rtt + a.queue_delay + b.queue_delay,
        near_to_far: a,
        far_to_near: b,
        measured_rtt,
    }
}

/// A TCP packet whose timestamp echo the line waits for.
#[derive(Clone, Copy)]
struct Probe {
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    tsval: u32,
    seen: Nanos,
}

struct Shared {
    stop: AtomicBool,
    /// The link is cut: every frame is dropped in both directions (an
    /// outage, as when a WAN circuit goes down), until it is back up.
    down: AtomicBool,
    /// The line rate both directions apply now, bytes/s.
    rate_bytes_per_s: AtomicU64,
    /// A probe without an echo after this long is stale: the receiver held
    /// its echo back (a hole in loss recovery), and a sample would measure
    /// recovery, not the path. Twice the worst legitimate delay.
    probe_timeout_ns: Nanos,
    start: Instant,
    counters: [Counters; 2],
    probes: [Mutex<Option<Probe>>; 2],
}

impl Shared {
    fn now(&self) -> Nanos {
        self.start.elapsed().as_nanos() as Nanos
    }
}

/// The running line. Dropping it stops both threads (within ~50 ms) and
/// closes the TUN devices.
pub struct DelayLine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    rtt: Duration,
}

impl DelayLine {
    /// Starts both directions between the near and far TUN fds.
    pub fn start(near: OwnedFd, far: OwnedFd, config: &LinkConfig) -> Result<Self, LabError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            down: AtomicBool::new(false),
            rate_bytes_per_s: AtomicU64::new(config.bandwidth_bytes_per_s),
            probe_timeout_ns: 2
                * (config.rtt + config.queue * 2 + config.jitter * 2).as_nanos() as Nanos
                + 100_000_000,
            start: Instant::now(),
            counters: Default::default(),
            probes: Default::default(),
        });
        let near = Arc::new(near);
        let far = Arc::new(far);
        let mut line = Self {
            shared: shared.clone(),
            threads: Vec::new(),
            rtt: config.rtt,
        };
        for (dir, from, to, name) in [
            (0, near.clone(), far.clone(), "lab-near>far"),
            (1, far, near, "lab-far>near"),
        ] {
            let d = Direction::new(dir, from, to, config, shared.clone());
            let handle = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || d.run())
                .map_err(|source| LabError::Io {
                    what: "starting a delay-line thread".to_owned(),
                    source,
                })?;
            line.threads.push(handle);
        }
        Ok(line)
    }

    /// A snapshot of both directions.
    pub fn stats(&self) -> LineStats {
        stats_of(&self.shared, self.rtt)
    }

    /// A function that takes snapshots, for a thread that outlives this borrow.
    pub fn stats_fn(&self) -> impl Fn() -> LineStats + Send + 'static {
        let shared = self.shared.clone();
        let rtt = self.rtt;
        move || stats_of(&shared, rtt)
    }

    /// Cuts the link (`false`: every frame dropped both ways, silently, as
    /// on a failed circuit) or restores it (`true`).
    pub fn set_up(&self, up: bool) {
        self.shared.down.store(!up, Relaxed);
    }

    /// Changes the line rate of both directions from now on (a path whose
    /// capacity changes: a competing flow, a reroute).
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.shared
            .rate_bytes_per_s
            .store(bytes_per_s.max(1), Relaxed);
    }

    /// Whether the link carries frames.
    pub fn is_up(&self) -> bool {
        !self.shared.down.load(Relaxed)
    }

    /// Stops both threads and waits for them (each wakes within 50 ms).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::warn!("a delay-line thread panicked");
            }
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Pending {
    release: Nanos,
    frame: Vec<u8>,
    segments: u64,
    wire_bytes: u64,
}

struct Direction {
    dir: usize,
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
    sched: Scheduler,
    loss: f64,
    loss_ports: Vec<u16>,
    rng: fastrand::Rng,
    shared: Arc<Shared>,
    queue: VecDeque<Pending>,
    held_bytes: u64,
    held_cap_bytes: u64,
    /// Buffer + one-way delay + jitter: what the line holds at line rate.
    span_ns: u64,
    keep: Vec<bool>,
    releases: Vec<Nanos>,
}

impl Direction {
    fn new(
        dir: usize,
        from: Arc<OwnedFd>,
        to: Arc<OwnedFd>,
        c: &LinkConfig,
        shared: Arc<Shared>,
    ) -> Self {
        let one_way = c.rtt / 2;
        let rate = c.bandwidth_bytes_per_s;
        let span = c.queue + one_way + c.jitter;
        let natural = (u128::from(rate) * span.as_nanos() / 1_000_000_000) as u64;
        Self {
            dir,
            from,
            to,
            sched: Scheduler::new(
                rate,
                one_way.as_nanos() as Nanos,
                c.jitter.as_nanos() as Nanos,
                c.queue.as_nanos() as Nanos,
            ),
            loss: c.loss,
            loss_ports: c.loss_ports.clone(),
            rng: fastrand::Rng::new(),
            shared,
            queue: VecDeque::new(),
            held_bytes: 0,
            held_cap_bytes: held_cap(natural),
            span_ns: span.as_nanos() as u64,
            keep: Vec::new(),
            releases: Vec::new(),
        }
    }

    /// Applies a new line rate; the hard cap on held bytes grows with it
    /// (and never shrinks below what the configured rate needed).
    fn set_rate(&mut self, rate: u64) {
        let natural = (u128::from(rate) * u128::from(self.span_ns) / 1_000_000_000) as u64;
        self.held_cap_bytes = self.held_cap_bytes.max(held_cap(natural));
        self.sched.set_rate(rate);
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters[self.dir]
    }

    fn run(mut self) {
        let mut buf = vec![0u8; FRAME_BUF];
        let mut last_cpu = Instant::now();
        let mut reported_write_error = false;
        while !self.shared.stop.load(Relaxed) {
            let now = self.shared.now();
            let rate = self.shared.rate_bytes_per_s.load(Relaxed);
            if rate != self.sched.rate() {
                self.set_rate(rate);
            }
            self.release_due(now, &mut reported_write_error);
            if last_cpu.elapsed() >= Duration::from_millis(100) {
                self.counters().cpu_ns.store(thread_cpu_ns(), Relaxed);
                last_cpu = Instant::now();
            }
            let c = self.counters();
            c.queue_delay_ns.store(self.sched.backlog_ns(now), Relaxed);
            c.queue_bytes.store(self.sched.backlog_bytes(now), Relaxed);
            c.held_bytes.store(self.held_bytes, Relaxed);
            c.held_packets.store(self.queue.len() as u64, Relaxed);

            let sleep = self
                .queue
                .front()
                .map_or(MAX_SLEEP, |p| {
                    Duration::from_nanos(p.release.saturating_sub(now))
                })
                .min(MAX_SLEEP);
            match wait_readable(&self.from, sleep) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!("delay line: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            for _ in 0..READ_BATCH {
                // SAFETY: `buf` is a valid writable buffer of `buf.len()`
                // bytes and `from` an open fd owned by this line.
                let n = unsafe {
                    libc::read(self.from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        tracing::warn!("delay line: reading the TUN device failed: {e}");
                    }
                    break;
                }
                if n as usize <= VNET_HDR_LEN {
                    continue;
                }
                let now = self.shared.now();
                self.accept(&buf[..n as usize], now);
            }
        }
        self.counters().cpu_ns.store(thread_cpu_ns(), Relaxed);
    }

    fn release_due(&mut self, now: Nanos, reported: &mut bool) {
        while self.queue.front().is_some_and(|p| p.release <= now) {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            self.held_bytes -= p.frame.len() as u64;
            // SAFETY: `p.frame` is a valid buffer of its length; `to` is an
            // open fd owned by this line.
            let n =
                unsafe { libc::write(self.to.as_raw_fd(), p.frame.as_ptr().cast(), p.frame.len()) };
            let c = &self.shared.counters[self.dir];
            if n < 0 {
                c.write_errors.fetch_add(1, Relaxed);
                if !*reported {
                    *reported = true;
                    tracing::warn!(
                        "delay line: the TUN device refused a frame: {} (counted in write_errors)",
                        io::Error::last_os_error()
                    );
                }
                continue;
            }
            c.packets_out.fetch_add(1, Relaxed);
            c.segments_out.fetch_add(p.segments, Relaxed);
            c.bytes_out.fetch_add(p.wire_bytes, Relaxed);
        }
    }

    /// Admits one frame: per-segment tail-drop and loss, then whole or split.
    fn accept(&mut self, frame: &[u8], now: Nanos) {
        let layout = gso::layout(frame);
        let c = &self.shared.counters[self.dir];
        c.packets_in.fetch_add(1, Relaxed);
        c.segments_in.fetch_add(layout.segments as u64, Relaxed);
        c.bytes_in.fetch_add(layout.wire_len(), Relaxed);
        if self.shared.down.load(Relaxed) {
            c.drops_down.fetch_add(layout.segments as u64, Relaxed);
            return;
        }
        self.probe_rtt(&frame[VNET_HDR_LEN..], now);

        // Loss may be confined to some ports: decided once per frame, since
        // every segment of a super-packet belongs to the same flow.
        let lossy = self.loss > 0.0
            && (self.loss_ports.is_empty()
                || gso::tcp_meta(&frame[VNET_HDR_LEN..]).is_some_and(|m| {
                    self.loss_ports.contains(&m.src.1) || self.loss_ports.contains(&m.dst.1)
                }));
        self.keep.clear();
        self.releases.clear();
        let mut dropped_queue = 0;
        let mut dropped_loss = 0;
        for i in 0..layout.segments {
            let len = layout.segment_len(i);
            let hard_full = self.held_bytes + frame.len() as u64 > self.held_cap_bytes
                || self.queue.len() >= MAX_HELD_PACKETS;
            let admitted = if hard_full {
                Admission::TailDrop
            } else {
                self.sched.admit(now, len)
            };
            match admitted {
                Admission::TailDrop => {
                    dropped_queue += 1;
                    self.keep.push(false);
                    self.releases.push(0);
                }
                Admission::Accepted { release } => {
                    // Loss strikes on the wire, after the segment took its slot.
                    let lost = lossy && self.rng.f64() < self.loss;
                    dropped_loss += u64::from(lost);
                    self.keep.push(!lost);
                    self.releases.push(release);
                }
            }
        }
        c.drops_queue.fetch_add(dropped_queue, Relaxed);
        c.drops_loss.fetch_add(dropped_loss, Relaxed);

        if dropped_queue + dropped_loss == 0 {
            let release = self.releases.last().copied().unwrap_or(now);
            let frame = frame.to_vec();
            self.enqueue(frame, release, layout.segments as u64, layout.wire_len());
            return;
        }
        if dropped_queue + dropped_loss == layout.segments as u64 {
            return;
        }
        c.splits.fetch_add(1, Relaxed);
        let pieces = gso::split(frame, &layout, &self.keep);
        // Pair each piece with the release of the last segment of its run.
        let mut runs = Vec::with_capacity(pieces.len());
        let mut i = 0;
        while i < layout.segments {
            if !self.keep[i] {
                i += 1;
                continue;
            }
            let first = i;
            while i < layout.segments && self.keep[i] {
                i += 1;
            }
            let bytes: u64 = (first..i).map(|s| layout.segment_len(s)).sum();
            runs.push((self.releases[i - 1], (i - first) as u64, bytes));
        }
        for (piece, (release, segments, bytes)) in pieces.into_iter().zip(runs) {
            self.enqueue(piece, release, segments, bytes);
        }
    }

    fn enqueue(&mut self, frame: Vec<u8>, release: Nanos, segments: u64, wire_bytes: u64) {
        let unit = if self.sched_has_jitter() {
            self.rng.f64() * 2.0 - 1.0
        } else {
            0.0
        };
        let release = self.sched.release_with_jitter(release, unit);
        self.held_bytes += frame.len() as u64;
        self.queue.push_back(Pending {
            release,
            frame,
            segments,
            wire_bytes,
        });
    }

    fn sched_has_jitter(&self) -> bool {
        // Jitter draws cost a random number per piece; skip them when off.
        self.sched.release_with_jitter_enabled()
    }

    /// Timestamp echoes: a packet in this direction answers the other
    /// direction's probe; this direction keeps one probe of its own.
    fn probe_rtt(&self, packet: &[u8], now: Nanos) {
        let Some(meta) = gso::tcp_meta(packet) else {
            return;
        };
        let Some((tsval, tsecr)) = meta.ts else {
            return;
        };
        let other = 1 - self.dir;
        if tsecr != 0 {
            if let Ok(mut slot) = self.shared.probes[other].lock() {
                if let Some(p) = *slot {
                    if p.src == meta.dst
                        && p.dst == meta.src
                        && tsecr.wrapping_sub(p.tsval) as i32 >= 0
                    {
                        let c = &self.shared.counters[other];
                        c.echo_ns.store(now.saturating_sub(p.seen), Relaxed);
                        c.echo_at_ns.store(now.max(1), Relaxed);
                        *slot = None;
                    }
                }
            }
        }
        if let Ok(mut slot) = self.shared.probes[self.dir].lock() {
            if slot.is_none_or(|p| now.saturating_sub(p.seen) > self.shared.probe_timeout_ns) {
                *slot = Some(Probe {
                    src: meta.src,
                    dst: meta.dst,
                    tsval,
                    seen: now,
                });
            }
        }
    }
}

/// The hard cap on bytes held for `natural` bytes at line rate: frames
/// carry headers and vnet bytes the wire accounting does not, so leave room.
fn held_cap(natural: u64) -> u64 {
    natural + natural / 2 + (4 << 20)
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}

/// CPU time of the calling thread.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
