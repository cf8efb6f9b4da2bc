//! What the store keeps per key, how it is compared and how it is encoded on
//! disk.
//!
//! One encoding serves the durable engine's values and the digest, so the
//! digest of a memory store and of a durable store fed the same writes are
//! equal.

use bytes::Bytes;
use std::hash::{BuildHasher, RandomState};

use xxhash_rust::xxh3::{xxh3_64, Xxh3, Xxh3Builder};

use crate::wire::Write;

use super::StoredRecord;

/// The last-writer-wins order of a record: `(version, source_id)`,
/// compared lexicographically (the derived `Ord` follows field order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp {
    pub version: u64,
    pub source_id: u64,
}

impl Stamp {
    pub(crate) fn of(w: &Write) -> Self {
        Stamp {
            version: w.version,
            source_id: w.source_id,
        }
    }
}

/// Bytes before the value in an encoded record: tag, version, source id.
pub(crate) const HEADER_LEN: usize = 1 + 8 + 8;

const TAG_TOMBSTONE: u8 = 0;
const TAG_VALUE: u8 = 1;

/// Encode `w` as the durable engine's value into `buf` (cleared first):
/// `tag u8 | version u64 LE | source_id u64 LE | value bytes`.
///
/// A tombstone is a record with tag 0 and no value bytes: it is stored like
/// any other record so that its stamp outlives the delete.
pub(crate) fn encode_into(w: &Write, buf: &mut Vec<u8>) {
    buf.clear();
    let value = w.value.as_deref().unwrap_or(&[]);
    buf.reserve(HEADER_LEN + value.len());
    buf.push(if w.value.is_some() {
        TAG_VALUE
    } else {
        TAG_TOMBSTONE
    });
    buf.extend_from_slice(&w.version.to_le_bytes());
    buf.extend_from_slice(&w.source_id.to_le_bytes());
    buf.extend_from_slice(value);
}

/// Why an encoded record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Short(usize),
    Tag(u8),
    TombstoneWithValue(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short(n) => {
                write!(f, "{n} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            DecodeError::Tag(t) => write!(f, "unknown record tag {t:#04x}"),
            DecodeError::TombstoneWithValue(n) => write!(f, "tombstone carries {n} value bytes"),
        }
    }
}

/// The stamp of an encoded record, without touching its value.
pub(crate) fn decode_stamp(raw: &[u8]) -> Result<Stamp, DecodeError> {
    let header = raw.get(..HEADER_LEN).ok_or(DecodeError::Short(raw.len()))?;
    let mut version = [0u8; 8];
    let mut source_id = [0u8; 8];
    version.copy_from_slice(&header[1..9]);
    source_id.copy_from_slice(&header[9..17]);
    Ok(Stamp {
        version: u64::from_le_bytes(version),
        source_id: u64::from_le_bytes(source_id),
    })
}

/// The stamp and the value (`None` for a tombstone) of an encoded record,
/// borrowed.
pub(crate) fn decode_parts(raw: &[u8]) -> Result<(Stamp, Option<&[u8]>), DecodeError> {
    let stamp = decode_stamp(raw)?;
    let rest = &raw[HEADER_LEN..];
    let value = match raw[0] {
        TAG_VALUE => Some(rest),
        TAG_TOMBSTONE if rest.is_empty() => None,
        TAG_TOMBSTONE => return Err(DecodeError::TombstoneWithValue(rest.len())),
        t => return Err(DecodeError::Tag(t)),
    };
    Ok((stamp, value))
}

/// Decode an encoded record, copying its value out.
pub(crate) fn decode(raw: &[u8]) -> Result<StoredRecord, DecodeError> {
    let (stamp, value) = decode_parts(raw)?;
    Ok(StoredRecord {
        value: value.map(Bytes::copy_from_slice),
        version: stamp.version,
        source_id: stamp.source_id,
    })
}

/// Which shard owns `key`. xxh3 with its fixed default seed: the same key
/// lands in the same shard in every process, which keeps the durable
/// engine's per-shard version index consistent with what `open` rebuilds.
pub(crate) fn shard_of(key: &[u8], shards: usize) -> usize {
    // The modulo keeps the result below `shards`, which is a usize.
    (xxh3_64(key) % shards.max(1) as u64) as usize
}

/// Hasher of the in-memory maps keyed by record key (the memory store, the
/// durable engine's version index).
///
/// Why not std's SipHash: profiling the durable engine showed SipHash as the
/// single largest cost of a shard worker (~28% of its time with 16-byte
/// keys). xxh3 is several times faster; a seed drawn per map from std's
/// random source keeps keys that collide on purpose hard to craft (weaker
/// than SipHash's guarantee, acceptable for keys from an authenticated
/// shipper).
pub(crate) fn key_hasher() -> Xxh3Builder {
    Xxh3Builder::new().with_seed(RandomState::new().hash_one(0x5eed_u64))
}

/// Hash of one record for [`super::StoreDigest`]: xxh3 (a fixed, specified
/// algorithm, so two builds or machines agree) over length-prefixed fields,
/// so that `("ab", "c")` and `("a", "bc")` differ.
pub(crate) fn record_hash(key: &[u8], value: Option<&[u8]>, stamp: Stamp) -> u64 {
    let mut h = Xxh3::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    match value {
        Some(v) => {
            h.update(&[TAG_VALUE]);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        None => h.update(&[TAG_TOMBSTONE]),
    }
    h.update(&stamp.version.to_le_bytes());
    h.update(&stamp.source_id.to_le_bytes());
    h.digest()
}

/// Order-independent accumulator behind [`super::StoreDigest`]: the record
/// hashes are added (wrapping), so any iteration order gives the same sum.
#[derive(Debug, Default)]
pub(crate) struct DigestAcc {
    records: u64,
    tombstones: u64,
    hash: u64,
}

impl DigestAcc {
    pub(crate) fn add(&mut self, key: &[u8], value: Option<&[u8]>, stamp: Stamp) {
        self.records += 1;
        if value.is_none() {
            self.tombstones += 1;
        }
        self.hash = self.hash.wrapping_add(record_hash(key, value, stamp));
    }

    pub(crate) fn finish(self) -> super::StoreDigest {
        super::StoreDigest {
            records: self.records,
            tombstones: self.tombstones,
            hash: self.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_orders_version_before_source_id() {
        let a = Stamp {
            version: 2,
            source_id: 0,
        };
        let b = Stamp {
            version: 1,
            source_id: u64::MAX,
        };
        assert!(a > b);
        let c = Stamp {
            version: 2,
            source_id: 1,
        };
        assert!(c > a);
    }

    #[test]
    fn encoded_records_round_trip() {
        let mut buf = Vec::new();
        for w in [
            Write::put(&b"k"[..], &b"value"[..], 7, 3),
            Write::put(&b"k"[..], &b""[..], 1, 1),
            Write::tombstone(&b"k"[..], u64::MAX, 9),
        ] {
            encode_into(&w, &mut buf);
            let r = decode(&buf).expect("decodes");
            assert_eq!(r.value, w.value);
            assert_eq!((r.version, r.source_id), (w.version, w.source_id));
            assert_eq!(decode_stamp(&buf), Ok(Stamp::of(&w)));
        }
    }

    #[test]
    fn damaged_records_are_rejected() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut buf = vec![7u8; HEADER_LEN];
        assert_eq!(decode(&buf), Err(DecodeError::Tag(7)));
        buf[0] = TAG_TOMBSTONE;
        buf.push(1);
        assert_eq!(decode(&buf), Err(DecodeError::TombstoneWithValue(1)));
    }

    #[test]
    fn record_hash_separates_key_and_value() {
        let s = Stamp {
            version: 1,
            source_id: 1,
        };
        assert_ne!(
            record_hash(b"ab", Some(b"c"), s),
            record_hash(b"a", Some(b"bc"), s)
        );
        assert_ne!(record_hash(b"a", Some(b""), s), record_hash(b"a", None, s));
    }
}
