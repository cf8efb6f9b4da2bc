//! The durable engine's files: segments of CRC-checked entries, appended
//! and never rewritten in place.
//!
//! Why every entry carries its own length and CRC: the tail of the active
//! segment may be torn by a crash mid-write; recovery keeps an entry only if
//! both check out and cuts the file at the first one that does not. An
//! entry is position-independent (no offset or sequence number inside), so
//! compaction can copy its bytes verbatim into the active segment.
//!
//! Entry layout (little-endian):
//!
//! ```text
//! u32 body_len | u32 crc32c(body) | body
//! body = u32 key_len | key | record (record.rs: tag u8 | version u64 | source_id u64 | value)
//! ```
//!
//! A segment is named after its id (`0000000007.vlog`); ids only grow, so
//! a later segment holds later appends.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::wire::Write;

use super::record::{self, DecodeError, Stamp};

/// Bytes before an entry's body: length and CRC.
pub(crate) const ENTRY_HEADER_LEN: usize = 8;
/// Bytes of a body before the key: the key length.
const KEY_LEN_LEN: usize = 4;
/// Read buffer of a sequential scan (recovery, compaction).
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// Bytes `w` occupies in a segment.
pub(crate) fn entry_len(w: &Write) -> usize {
    ENTRY_HEADER_LEN
        + KEY_LEN_LEN
        + w.key.len()
        + record::HEADER_LEN
        + w.value.as_ref().map_or(0, |v| v.len())
}

/// Appends `w`'s entry to `buf`.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, w: &Write) {
    let start = buf.len();
    let body_len = entry_len(w) - ENTRY_HEADER_LEN;
    buf.reserve(ENTRY_HEADER_LEN + body_len);
    // `validate` bounds key and value so that a body fits a u32.
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // CRC, filled in below
    buf.extend_from_slice(&(w.key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&w.key);
    record::append_record(w, buf);
    let crc = crate::wire::crc32c(&buf[start + ENTRY_HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryError {
    Short(usize),
    Length(u64),
    Crc,
    KeyOverrun(usize),
    Record(DecodeError),
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryError::Short(n) => write!(f, "{n} bytes, too short for an entry"),
            EntryError::Length(n) => write!(f, "entry length {n} does not fit the file"),
            EntryError::Crc => f.write_str("CRC mismatch"),
            EntryError::KeyOverrun(n) => write!(f, "key length {n} overruns the entry"),
            EntryError::Record(e) => write!(f, "{e}"),
        }
    }
}

/// Key and encoded record of one whole entry (`raw` is exactly the entry,
/// header included), after checking its CRC.
pub(crate) fn parse_entry(raw: &[u8]) -> Result<(&[u8], &[u8]), EntryError> {
    if raw.len() < ENTRY_HEADER_LEN + KEY_LEN_LEN {
        return Err(EntryError::Short(raw.len()));
    }
    let body_len = u32::from_le_bytes(raw[0..4].try_into().expect("4 bytes")) as usize;
    if ENTRY_HEADER_LEN + body_len != raw.len() {
        return Err(EntryError::Length(body_len as u64));
    }
    let crc = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes"));
    let body = &raw[ENTRY_HEADER_LEN..];
    if crate::wire::crc32c(body) != crc {
        return Err(EntryError::Crc);
    }
    let key_len = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes")) as usize;
    let rest = &body[KEY_LEN_LEN..];
    if key_len > rest.len() {
        return Err(EntryError::KeyOverrun(key_len));
    }
    let (key, rec) = rest.split_at(key_len);
    record::decode_parts(rec).map_err(EntryError::Record)?;
    Ok((key, rec))
}

/// The key and stamp of a whole entry.
pub(crate) fn entry_key_stamp(raw: &[u8]) -> Result<(&[u8], Stamp), EntryError> {
    let (key, rec) = parse_entry(raw)?;
    let stamp = record::decode_stamp(rec).map_err(EntryError::Record)?;
    Ok((key, stamp))
}

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u32) -> String {
    format!("{id:010}.vlog")
}

/// The id a segment file name stands for, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".vlog")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What one step of a scan found.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A whole, valid entry at `offset`, now in the scanner's buffer.
    Entry { offset: u64 },
    /// The end of the scanned range, exactly after the last entry.
    End,
    /// The bytes at `offset` are not an entry (torn or damaged).
    Bad { offset: u64, reason: String },
}

/// Reads a segment's entries in order, from its start to `end`.
pub(crate) struct Scanner {
    file: BufReader<File>,
    offset: u64,
    end: u64,
    entry: Vec<u8>,
}

impl Scanner {
    /// Scans `path` up to its current length.
    pub(crate) fn open(path: &Path) -> io::Result<Scanner> {
        let file = File::open(path)?;
        let end = file.metadata()?.len();
        Scanner::new(file, end)
    }

    /// Scans `file` (positioned at its start) up to `end`.
    pub(crate) fn new(file: File, end: u64) -> io::Result<Scanner> {
        Ok(Scanner {
            file: BufReader::with_capacity(SCAN_BUFFER_BYTES, file),
            offset: 0,
            end,
            entry: Vec::new(),
        })
    }

    /// The last entry [`Scanner::next`] returned, header included.
    pub(crate) fn entry(&self) -> &[u8] {
        &self.entry
    }

    /// The next entry; a `Bad` result ends the scan.
    pub(crate) fn next(&mut self) -> io::Result<Scanned> {
        let offset = self.offset;
        let left = self.end - offset;
        if left == 0 {
            return Ok(Scanned::End);
        }
        let bad = |reason: String| Ok(Scanned::Bad { offset, reason });
        if left < ENTRY_HEADER_LEN as u64 {
            return bad(format!("{left} bytes of an entry header"));
        }
        let mut header = [0u8; ENTRY_HEADER_LEN];
        self.file.read_exact(&mut header)?;
        let body_len = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4")));
        let len = ENTRY_HEADER_LEN as u64 + body_len;
        if len > left {
            // A torn length (or a torn body): never allocate what the file
            // cannot hold.
            return bad(format!("an entry of {len} bytes where {left} are left"));
        }
        self.entry.clear();
        self.entry.extend_from_slice(&header);
        self.entry.resize(len as usize, 0);
        self.file.read_exact(&mut self.entry[ENTRY_HEADER_LEN..])?;
        if let Err(e) = parse_entry(&self.entry) {
            return bad(e.to_string());
        }
        self.offset += len;
        Ok(Scanned::Entry { offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_back_to_its_key_and_record() {
        let mut buf = Vec::new();
        let w = Write::put(&b"key"[..], &b"value"[..], 7, 3);
        let t = Write::tombstone(&b"gone"[..], 9, 1);
        encode_entry(&mut buf, &w);
        let first = buf.len();
        encode_entry(&mut buf, &t);
        assert_eq!(first, entry_len(&w));
        assert_eq!(buf.len(), first + entry_len(&t));
        let (key, stamp) = entry_key_stamp(&buf[..first]).expect("first");
        assert_eq!((key, stamp), (&b"key"[..], Stamp::of(&w)));
        let (key, rec) = parse_entry(&buf[first..]).expect("second");
        assert_eq!(key, b"gone");
        assert!(record::decode(rec).expect("record").is_tombstone());
    }

    #[test]
    fn a_flipped_bit_or_a_cut_fails_the_entry() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &Write::put(&b"k"[..], &b"v"[..], 1, 1));
        assert!(matches!(
            parse_entry(&buf[..buf.len() - 1]),
            Err(EntryError::Length(_))
        ));
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert_eq!(parse_entry(&buf), Err(EntryError::Crc));
    }

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.vlog"), None);
        assert_eq!(parse_segment_name("0000000042.seg"), None);
        assert_eq!(parse_segment_name("lock"), None);
    }
}
