//! The on-disk form of the log: segment files of CRC-checked entries, and
//! a sequential reader over them.
//!
//! Why its own format rather than the wire's: the log must survive a crash
//! mid-write, so every entry carries its length, a CRC32C over its body and
//! its position; recovery trusts an entry only if all three agree, and cuts
//! the file at the first one that does not (a torn tail).
//!
//! Entry layout (little-endian):
//!
//! ```text
//! u32 body_len | u32 crc32c(body) | body
//! body = u64 seq | u64 appended_unix_ms | u64 version | u64 source_id
//!        | u8 flags (bit 0: has value) | u32 key_len | key | value
//! ```
//!
//! A segment is named after the position of its first entry
//! (`00000000000000000042.seg`), so an empty segment still says where the
//! log continues.
use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use bytes::{BufMut, Bytes, BytesMut};

use super::LogError;
use crate::wire::Write;

/// Bytes before an entry's body: length and CRC.
pub const ENTRY_HEADER_LEN: usize = 8;
/// Bytes of a body before the key.
pub const BODY_FIXED_LEN: usize = 8 + 8 + 8 + 8 + 1 + 4;
/// Largest body accepted when reading: anything longer is garbage (a torn
/// or corrupt length), not a record.
pub const MAX_BODY_LEN: usize = 64 << 20;

const FLAG_HAS_VALUE: u8 = 0x01;

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub seq: u64,
    /// When it was appended (ms since the Unix epoch): `lag` is measured from it.
    pub appended_unix_ms: u64,
    /// The write.
    pub write: Write,
}

/// Bytes `write` occupies in a segment.
pub fn entry_len(write: &Write) -> usize {
    ENTRY_HEADER_LEN + BODY_FIXED_LEN + write.key.len() + write.value.as_ref().map_or(0, Bytes::len)
}

/// Appends the encoded entry to `dst`.
pub fn encode(dst: &mut BytesMut, seq: u64, appended_unix_ms: u64, write: &Write) {
    let value = write.value.as_deref().unwrap_or(&[]);
    let body_len = BODY_FIXED_LEN + write.key.len() + value.len();
    let start = dst.len();
    dst.reserve(ENTRY_HEADER_LEN + body_len);
    dst.put_u32_le(body_len as u32);
    dst.put_u32_le(0); // CRC, filled in below
    dst.put_u64_le(seq);
    dst.put_u64_le(appended_unix_ms);
    dst.put_u64_le(write.version);
    dst.put_u64_le(write.source_id);
    dst.put_u8(if write.value.is_some() {
        FLAG_HAS_VALUE
    } else {
        0
    });
    dst.put_u32_le(write.key.len() as u32);
    dst.put_slice(&write.key);
    dst.put_slice(value);
    let crc = crate::wire::crc32c(&dst[start + ENTRY_HEADER_LEN..]);
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why an entry could not be read.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A whole, valid entry and its encoded length.
    Entry(Entry, u64),
    /// Clean end of the file.
    End,
    /// The bytes here are not a valid entry (short, bad length, bad CRC).
    Bad(String),
}

/// Reads one entry from `r`.
pub fn read_entry(r: &mut impl Read) -> io::Result<ReadOutcome> {
    let mut header = [0u8; ENTRY_HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(ReadOutcome::End),
        n if n < ENTRY_HEADER_LEN => {
            return Ok(ReadOutcome::Bad(format!("{n} bytes of an entry header")))
        }
        _ => {}
    }
    let body_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Ok(ReadOutcome::Bad(format!("entry length {body_len}")));
    }
    let mut body = vec![0u8; body_len];
    let n = read_full(r, &mut body)?;
    if n < body_len {
        return Ok(ReadOutcome::Bad(format!(
            "{n} of {body_len} bytes of an entry body"
        )));
    }
    if crate::wire::crc32c(&body) != crc {
        return Ok(ReadOutcome::Bad("CRC mismatch".to_owned()));
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let (seq, appended_unix_ms, version, source_id) =
        (u64_at(0), u64_at(8), u64_at(16), u64_at(24));
    let flags = body[32];
    let key_len = u32::from_le_bytes(body[33..37].try_into().expect("4 bytes")) as usize;
    if BODY_FIXED_LEN + key_len > body_len {
        return Ok(ReadOutcome::Bad(format!(
            "key length {key_len} overruns the entry"
        )));
    }
    let body = Bytes::from(body);
    let key = body.slice(BODY_FIXED_LEN..BODY_FIXED_LEN + key_len);
    let value = (flags & FLAG_HAS_VALUE != 0).then(|| body.slice(BODY_FIXED_LEN + key_len..));
    let write = Write {
        key,
        value,
        version,
        source_id,
    };
    Ok(ReadOutcome::Entry(
        Entry {
            seq,
            appended_unix_ms,
            write,
        },
        (ENTRY_HEADER_LEN + body_len) as u64,
    ))
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `create_dir_all` that survives a power cut: every directory it
/// creates is made durable by an fsync of its parent (a new directory's
/// name, like a file's, lives in its parent's entries; without that sync a
/// power cut can take the directory, and everything acknowledged in it,
/// away). Found by the power-cut tests (`tests/tests/power.rs`).
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another opener made it at the same time: it syncs the parent too.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The file name of the segment whose first entry is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first position a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What recovery found in the last segment.
#[derive(Debug)]
pub struct Scan {
    /// The position after the last valid entry.
    pub next_seq: u64,
    /// Bytes of valid entries (the file is cut here).
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub torn: Option<String>,
}

/// Reads every entry of the segment at `path` (first position
/// `first_seq`), stopping at the first invalid one.
pub fn scan(path: &Path, first_seq: u64) -> Result<Scan, LogError> {
    let io_err = |source| LogError::Io {
        what: format!("read {}", path.display()),
        source,
    };
    let mut r = BufReader::with_capacity(1 << 16, File::open(path).map_err(io_err)?);
    let mut next_seq = first_seq;
    let mut valid_len = 0u64;
    loop {
        match read_entry(&mut r).map_err(io_err)? {
            ReadOutcome::End => {
                return Ok(Scan {
                    next_seq,
                    valid_len,
                    torn: None,
                })
            }
            ReadOutcome::Entry(e, len) if e.seq == next_seq => {
                next_seq += 1;
                valid_len += len;
            }
            ReadOutcome::Entry(e, _) => {
                return Ok(Scan {
                    next_seq,
                    valid_len,
                    torn: Some(format!("position {} where {next_seq} was due", e.seq)),
                })
            }
            ReadOutcome::Bad(why) => {
                return Ok(Scan {
                    next_seq,
                    valid_len,
                    torn: Some(why),
                })
            }
        }
    }
}

/// Reads one segment sequentially, from a given position on.
#[derive(Debug)]
pub struct SegmentReader {
    pub path: PathBuf,
    pub first_seq: u64,
    file: BufReader<File>,
    offset: u64,
}

impl SegmentReader {
    /// Opens the segment at `path`, positioned at its first entry.
    pub fn open(path: PathBuf, first_seq: u64) -> Result<Self, LogError> {
        let file = File::open(&path).map_err(|source| LogError::Io {
            what: format!("open {}", path.display()),
            source,
        })?;
        Ok(Self {
            path,
            first_seq,
            file: BufReader::with_capacity(1 << 16, file),
            offset: 0,
        })
    }

    /// The next entry, or `None` at the current end of the file. Only
    /// called for positions known durable, so a short read is corruption.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, LogError> {
        let at = self.offset;
        let outcome = read_entry(&mut self.file).map_err(|source| LogError::Io {
            what: format!("read {}", self.path.display()),
            source,
        })?;
        match outcome {
            ReadOutcome::End => {
                // Forget the buffered EOF so a later call sees what is appended.
                self.file
                    .seek(SeekFrom::Start(at))
                    .map_err(|source| LogError::Io {
                        what: format!("seek {}", self.path.display()),
                        source,
                    })?;
                Ok(None)
            }
            ReadOutcome::Entry(e, len) => {
                self.offset += len;
                Ok(Some(e))
            }
            ReadOutcome::Bad(reason) => Err(LogError::Corrupt {
                path: self.path.clone(),
                offset: at,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let w = Write::put(&b"k1"[..], &b"value"[..], 7, 3);
        let t = Write::tombstone(&b"k2"[..], 8, 3);
        let mut buf = BytesMut::new();
        encode(&mut buf, 41, 1000, &w);
        encode(&mut buf, 42, 1001, &t);
        assert_eq!(buf.len(), entry_len(&w) + entry_len(&t));
        let mut r = &buf[..];
        let ReadOutcome::Entry(a, _) = read_entry(&mut r).unwrap() else {
            panic!("first entry")
        };
        let ReadOutcome::Entry(b, _) = read_entry(&mut r).unwrap() else {
            panic!("second entry")
        };
        assert_eq!((a.seq, a.appended_unix_ms, a.write), (41, 1000, w));
        assert_eq!((b.seq, b.write), (42, t));
        assert!(matches!(read_entry(&mut r).unwrap(), ReadOutcome::End));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut buf = BytesMut::new();
        encode(&mut buf, 1, 1, &Write::put(&b"k"[..], &b"v"[..], 1, 1));
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert!(matches!(
            read_entry(&mut &buf[..]).unwrap(),
            ReadOutcome::Bad(r) if r.contains("CRC")
        ));
    }

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("ckpt-x.json"), None);
    }
}
