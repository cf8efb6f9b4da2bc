//! Where the shipper's records come from.
//!
//! Why a trait: today records come from an in-process generator (the seed's
//! benchmark client writing 1 KB records at a fixed rate); the durable
//! source log with checkpoints comes next and slots in here. So a record
//! carries its position (`seq`) in the source, and the source hears back
//! which positions were delivered ([`Source::acked`]) so a log can advance
//! its checkpoint. The shipper pulls: a source produces a record only when a
//! connection has room in its window, so a slow destination backs up into
//! the source, never into memory.
use std::{
    future::Future,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::wire::Write;

/// One record and its position in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// Position in the source, increasing in the order records are handed out.
    pub seq: u64,
    /// The write to ship.
    pub write: Write,
}

/// A stream of records to ship.
pub trait Source: Send + 'static {
    /// The next record, waiting until one is due; `None` once the source is
    /// exhausted.
    fn next(&mut self) -> impl Future<Output = Option<SourceRecord>> + Send;
    /// Records the source holds (or is due to have produced) that have not
    /// been handed out yet: the backlog, reported as `outstanding`.
    fn backlog(&self) -> u64;
    /// The destination acknowledged the record at `seq`.
    fn acked(&mut self, _seq: u64) {}
    /// Whether [`Source::acked`] matters (a log advances a checkpoint); the
    /// connections report delivered positions only if so.
    fn wants_acks(&self) -> bool {
        false
    }
    /// Age of the oldest record not yet acknowledged, when the source knows
    /// it (a log does, from append times); `None`: the shipper's own view.
    fn lag(&self) -> Option<Duration> {
        None
    }
    /// A short description for the operator (`generate 1000/s x 1000 B over 1000 keys`).
    fn describe(&self) -> String;
}

/// `--generate RATE,SIZE,KEYS`: what the in-process load produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateSpec {
    /// Records per second; `None` as fast as the shipper takes them.
    pub rate: Option<u64>,
    /// Bytes per value.
    pub value_size: usize,
    /// Size of the key space; record `n` writes key `n % keys`.
    pub keys: u64,
}

impl std::str::FromStr for GenerateSpec {
    type Err = String;

    /// `RATE,SIZE,KEYS`, e.g. `100000,1000,1000000`; RATE `0` or `max` means
    /// unpaced.
    fn from_str(s: &str) -> Result<Self, String> {
        const FORM: &str = "expected RATE,SIZE,KEYS such as 100000,1000,1000000 \
                            (records/s or `max`, value bytes, key space)";
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [rate, size, keys] = parts[..] else {
            return Err(format!("`{s}`: {FORM}"));
        };
        let rate = match rate {
            "max" | "0" => None,
            r => Some(
                r.parse::<u64>()
                    .map_err(|_| format!("bad RATE `{r}`: {FORM}"))?,
            ),
        };
        let value_size = size
            .parse::<usize>()
            .map_err(|_| format!("bad SIZE `{size}`: {FORM}"))?;
        let keys = keys
            .parse::<u64>()
            .ok()
            .filter(|k| *k > 0)
            .ok_or_else(|| format!("bad KEYS `{keys}` (must be at least 1): {FORM}"))?;
        Ok(Self {
            rate,
            value_size,
            keys,
        })
    }
}

/// Produces records deterministically, so that a test can recompute what
/// every key must hold at the destination.
///
/// Record `n` (from 0) writes key [`Generator::key`]`(n % keys)` with version
/// `n + 1` and value [`Generator::value`]`(n, size)`: the last record for a
/// key carries its highest version, which is what last-writer-wins keeps.
#[derive(Debug)]
pub struct Generator {
    spec: GenerateSpec,
    source_id: u64,
    limit: Option<u64>,
    produced: u64,
    started: Option<Instant>,
}

impl Generator {
    /// A generator that stops after `limit` records (`None`: never).
    pub fn new(spec: GenerateSpec, source_id: u64, limit: Option<u64>) -> Self {
        Self {
            spec,
            source_id,
            limit,
            produced: 0,
            started: None,
        }
    }

    /// The key record number `k` of the key space writes.
    pub fn key(k: u64) -> Bytes {
        // `format!("key:{k:012}")` without the formatting machinery, which
        // was a tenth of the shipper's instructions at full rate.
        const PREFIX: &[u8] = b"key:";
        const MIN_DIGITS: usize = 12;
        let mut digits = [b'0'; 20]; // u64::MAX has 20 digits
        let mut at = digits.len();
        let mut rest = k;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let start = at.min(digits.len() - MIN_DIGITS);
        let mut key = Vec::with_capacity(PREFIX.len() + digits.len() - start);
        key.extend_from_slice(PREFIX);
        key.extend_from_slice(&digits[start..]);
        Bytes::from(key)
    }

    /// The value of record `n`: `size` bytes of pseudo-random data chosen
    /// by `n`: a slice of a shared 4 MiB pool at an offset hashed from `n`
    /// (no copy, no allocation: the generator must not be what limits a
    /// benchmark), or for values larger than half the pool a stream seeded
    /// by `n`. Either way the same `n` gives the same bytes.
    ///
    /// The pool is allocated once and never freed, so that its slices are
    /// `Bytes::from_static`: cloning and dropping one touches no reference
    /// count. A count shared by every record in flight was bumped by both
    /// cores at once, two or three times per record (profiled: 3–5% of the
    /// shipper's CPU at 1 KB).
    pub fn value(n: u64, size: usize) -> Bytes {
        static POOL: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
        const POOL_LEN: usize = 4 << 20;
        if size > POOL_LEN / 2 {
            return Bytes::from(pseudo_random(n, size));
        }
        let pool = POOL.get_or_init(|| pseudo_random(0x5eed, POOL_LEN).leak());
        let offset = (splitmix64(n) % (POOL_LEN - size + 1) as u64) as usize;
        Bytes::from_static(&pool[offset..offset + size])
    }

    /// The write record number `n` carries.
    pub fn record(&self, n: u64) -> Write {
        Write::put(
            Self::key(n % self.spec.keys),
            Self::value(n, self.spec.value_size),
            n + 1,
            self.source_id,
        )
    }

    /// Records produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    fn due_by(&self, now: Instant) -> u64 {
        match (self.spec.rate, self.started) {
            (Some(rate), Some(t0)) => {
                let due = (now.duration_since(t0).as_secs_f64() * rate as f64) as u64;
                self.limit.map_or(due, |l| due.min(l))
            }
            _ => 0,
        }
    }
}

impl Source for Generator {
    async fn next(&mut self) -> Option<SourceRecord> {
        if self.limit.is_some_and(|l| self.produced >= l) {
            return None;
        }
        let t0 = *self.started.get_or_insert_with(Instant::now);
        if let Some(rate) = self.spec.rate.filter(|r| *r > 0) {
            // Record n is due at t0 + n/rate; sleep only when more than a
            // millisecond ahead (timer granularity), then catch up in a burst.
            let due = t0 + Duration::from_secs_f64(self.produced as f64 / rate as f64);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let n = self.produced;
        self.produced += 1;
        Some(SourceRecord {
            seq: n,
            write: self.record(n),
        })
    }

    fn backlog(&self) -> u64 {
        // Unpaced, nothing is ever due ahead of what was taken: no clock
        // read (this runs once per record).
        if self.spec.rate.is_none() {
            return 0;
        }
        self.due_by(Instant::now()).saturating_sub(self.produced)
    }

    fn describe(&self) -> String {
        let rate = self
            .spec
            .rate
            .map_or_else(|| "max".to_owned(), |r| format!("{r}/s"));
        format!(
            "generate {rate} x {} B over {} keys",
            self.spec.value_size, self.spec.keys
        )
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` bytes of the splitmix64 stream seeded by `seed`.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out.extend_from_slice(&splitmix64(state).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_spec_parses_rate_size_keys() {
        let s: GenerateSpec = "100000,1000,5000".parse().unwrap();
        assert_eq!(
            s,
            GenerateSpec {
                rate: Some(100_000),
                value_size: 1000,
                keys: 5000
            }
        );
        assert_eq!("max,10,1".parse::<GenerateSpec>().unwrap().rate, None);
    }

    #[test]
    fn a_bad_generate_spec_names_the_accepted_form() {
        let err = "100000,1000".parse::<GenerateSpec>().unwrap_err();
        assert!(err.contains("RATE,SIZE,KEYS"), "{err}");
        let err = "1,2,0".parse::<GenerateSpec>().unwrap_err();
        assert!(err.contains("KEYS"), "{err}");
    }

    #[test]
    fn keys_are_the_zero_padded_record_number() {
        for k in [0, 7, 123_456, 999_999_999_999, 1_000_000_000_000, u64::MAX] {
            assert_eq!(Generator::key(k), Bytes::from(format!("key:{k:012}")));
        }
    }

    #[test]
    fn values_are_deterministic_sized_and_differ_between_records() {
        assert_eq!(Generator::value(7, 1000), Generator::value(7, 1000));
        assert_eq!(Generator::value(7, 1000).len(), 1000);
        assert_ne!(Generator::value(7, 1000), Generator::value(8, 1000));
        assert_eq!(Generator::value(3, 0).len(), 0);
        let big = Generator::value(5, 3 << 20);
        assert_eq!(big.len(), 3 << 20);
        assert_eq!(big, Generator::value(5, 3 << 20));
    }

    #[tokio::test]
    async fn generator_stops_at_its_limit_with_increasing_versions() {
        let spec = GenerateSpec {
            rate: None,
            value_size: 16,
            keys: 3,
        };
        let mut g = Generator::new(spec, 9, Some(5));
        let mut got = Vec::new();
        while let Some(r) = g.next().await {
            got.push(r);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].seq, 4);
        assert_eq!(got[4].write.version, 5);
        assert_eq!(got[4].write.key, Generator::key(1));
        assert_eq!(got[4].write.source_id, 9);
    }

    #[tokio::test]
    async fn a_paced_generator_does_not_run_ahead_of_its_rate() {
        let spec = GenerateSpec {
            rate: Some(1000),
            value_size: 1,
            keys: 1,
        };
        let mut g = Generator::new(spec, 1, Some(60));
        let t0 = Instant::now();
        while g.next().await.is_some() {}
        // 60 records at 1000/s: record 59 is due at 59 ms.
        assert!(
            t0.elapsed() >= Duration::from_millis(55),
            "{:?}",
            t0.elapsed()
        );
    }
}
