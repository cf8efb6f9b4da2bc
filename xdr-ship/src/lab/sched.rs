//! The release-time scheduler of one direction of the line: a pure function
//! of the clock it is handed, so tests drive it with a fake one.
//!
//! Why release times instead of a timer per packet: the line is a FIFO. Each
//! segment occupies the wire for `len / rate` after the previous one leaves
//! (`start = max(now, link_free); link_free = start + len/rate`), then flies
//! for half the RTT (`release = link_free + RTT/2`). The head of the FIFO
//! always has the earliest release, so one sleep until the head's time serves
//! every packet, and the backlog `link_free - now` *is* the queue delay a
//! router's buffer would add. Tail-drop happens when that backlog would
//! exceed the configured buffer.

/// Nanoseconds on the line's clock (monotonic, from the line's start).
pub type Nanos = u64;

/// One direction's schedule.
#[derive(Debug, Clone)]
pub struct Scheduler {
    rate_bytes_per_s: u64,
    one_way_ns: Nanos,
    jitter_ns: Nanos,
    buffer_ns: Nanos,
    link_free: Nanos,
    last_release: Nanos,
}

/// What happened to one segment offered to the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// On the wire: leaves the far end at `release`.
    Accepted {
        /// When the segment's last byte arrives at the other end (before jitter).
        release: Nanos,
    },
    /// The buffer in front of the line was full.
    TailDrop,
}

impl Scheduler {
    /// A line of `rate_bytes_per_s`, one-way delay `one_way_ns`, jitter
    /// `±jitter_ns`, and a buffer of `buffer_ns` at line rate.
    pub fn new(
        rate_bytes_per_s: u64,
        one_way_ns: Nanos,
        jitter_ns: Nanos,
        buffer_ns: Nanos,
    ) -> Self {
        Self {
            rate_bytes_per_s: rate_bytes_per_s.max(1),
            one_way_ns,
            jitter_ns,
            buffer_ns,
            link_free: 0,
            last_release: 0,
        }
    }

    /// The line rate now.
    pub fn rate(&self) -> u64 {
        self.rate_bytes_per_s
    }

    /// Changes the line rate from now on (segments already admitted keep
    /// their release times; the buffer stays the same time at line rate).
    pub fn set_rate(&mut self, rate_bytes_per_s: u64) {
        self.rate_bytes_per_s = rate_bytes_per_s.max(1);
    }

    /// Time the wire needs for `len` bytes, rounded up.
    pub fn tx_ns(&self, len: u64) -> Nanos {
        let r = u128::from(self.rate_bytes_per_s);
        ((u128::from(len) * 1_000_000_000).div_ceil(r)).min(u128::from(u64::MAX)) as u64
    }

    /// The queue delay a segment offered at `now` would wait before its first
    /// byte goes on the wire.
    pub fn backlog_ns(&self, now: Nanos) -> Nanos {
        self.link_free.saturating_sub(now)
    }

    /// The backlog expressed in bytes at line rate.
    pub fn backlog_bytes(&self, now: Nanos) -> u64 {
        (u128::from(self.backlog_ns(now)) * u128::from(self.rate_bytes_per_s) / 1_000_000_000)
            as u64
    }

    /// Offers one segment of `len` IP bytes at `now`. An empty line always
    /// accepts (a buffer smaller than one packet must still pass traffic).
    pub fn admit(&mut self, now: Nanos, len: u64) -> Admission {
        let backlog = self.backlog_ns(now);
        let tx = self.tx_ns(len);
        if backlog > 0 && backlog.saturating_add(tx) > self.buffer_ns {
            return Admission::TailDrop;
        }
        let start = now.max(self.link_free);
        self.link_free = start.saturating_add(tx);
        Admission::Accepted {
            release: self.link_free.saturating_add(self.one_way_ns),
        }
    }

    /// Whether jitter is configured (callers skip drawing samples otherwise).
    pub fn release_with_jitter_enabled(&self) -> bool {
        self.jitter_ns > 0
    }

    /// The release time of a piece whose last segment was admitted with
    /// `release`, moved by a jitter sample in `[-1, 1]` (scaled by the
    /// configured jitter) but never before the previous piece: the line keeps
    /// FIFO order, as a single path does.
    pub fn release_with_jitter(&mut self, release: Nanos, unit_sample: f64) -> Nanos {
        let j = (unit_sample.clamp(-1.0, 1.0) * self.jitter_ns as f64) as i64;
        let t = if j >= 0 {
            release.saturating_add(j as u64)
        } else {
            release.saturating_sub(j.unsigned_abs())
        };
        let t = t.max(self.last_release);
        self.last_release = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn idle_line_releases_after_serialization_plus_half_rtt() {
        // 10 MB/s: 1500 bytes take 150 us; RTT 40 ms -> 20 ms one way.
        let mut s = Scheduler::new(10_000_000, 20 * MS, 0, 40 * MS);
        assert_eq!(s.tx_ns(1500), 150_000);
        let now = 5 * MS;
        assert_eq!(
            s.admit(now, 1500),
            Admission::Accepted {
                release: now + 150_000 + 20 * MS
            }
        );
        // Much later the line is idle again: no memory of the old packet.
        let later = 100 * MS;
        assert_eq!(s.backlog_ns(later), 0);
        assert_eq!(
            s.admit(later, 1500),
            Admission::Accepted {
                release: later + 150_000 + 20 * MS
            }
        );
    }

    #[test]
    fn a_new_rate_applies_to_segments_admitted_after_the_change() {
        let mut s = Scheduler::new(10_000_000, 20 * MS, 0, 40 * MS);
        s.set_rate(2_500_000);
        assert_eq!(s.rate(), 2_500_000);
        // A quarter of the rate: 1500 bytes take 600 us instead of 150.
        assert_eq!(
            s.admit(MS, 1500),
            Admission::Accepted {
                release: MS + 600_000 + 20 * MS
            }
        );
    }

    #[test]
    fn back_to_back_segments_queue_behind_each_other() {
        let mut s = Scheduler::new(10_000_000, 20 * MS, 0, 40 * MS);
        let now = MS;
        let mut releases = Vec::new();
        for _ in 0..4 {
            match s.admit(now, 1500) {
                Admission::Accepted { release } => releases.push(release),
                Admission::TailDrop => panic!("no drop expected"),
            }
        }
        for (i, r) in releases.iter().enumerate() {
            assert_eq!(*r, now + (i as u64 + 1) * 150_000 + 20 * MS);
        }
        assert_eq!(s.backlog_ns(now), 600_000);
        assert_eq!(s.backlog_bytes(now), 6000);
        // Half-way through the second packet, 2.5 packets remain.
        assert_eq!(s.backlog_ns(now + 225_000), 375_000);
    }

    #[test]
    fn tail_drop_when_the_buffer_is_full_and_recovers_as_it_drains() {
        // Buffer 1 ms at 10 MB/s = 10_000 bytes = 6.67 packets of 1500.
        let mut s = Scheduler::new(10_000_000, 20 * MS, 0, MS);
        let now = 0;
        let accepted = (0..10)
            .filter(|_| matches!(s.admit(now, 1500), Admission::Accepted { .. }))
            .count();
        assert_eq!(accepted, 6, "6 x 150 us fit in 1 ms, the 7th does not");
        // After one packet time drains, exactly one more fits.
        let t = 150_000;
        assert!(matches!(s.admit(t, 1500), Admission::Accepted { .. }));
        assert_eq!(s.admit(t, 1500), Admission::TailDrop);
    }

    #[test]
    fn empty_line_accepts_a_packet_larger_than_the_buffer() {
        let mut s = Scheduler::new(1_000_000, 0, 0, 1000);
        assert!(matches!(s.admit(0, 65_000), Admission::Accepted { .. }));
        assert_eq!(s.admit(0, 100), Admission::TailDrop);
    }

    #[test]
    fn jitter_never_reorders() {
        let mut s = Scheduler::new(10_000_000, 20 * MS, 2 * MS, 40 * MS);
        let a = s.release_with_jitter(30 * MS, 1.0);
        assert_eq!(a, 32 * MS);
        // The next piece would leave 1 ms later but draws -1: held behind `a`.
        let b = s.release_with_jitter(31 * MS, -1.0);
        assert_eq!(b, a);
        let c = s.release_with_jitter(40 * MS, -0.5);
        assert_eq!(c, 39 * MS);
    }
}
