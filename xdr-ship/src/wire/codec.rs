//! [`WireCodec`]: the `tokio_util::codec` Decoder/Encoder for protocol v1.
//!
//! Why one file of ~780 lines: the decoder and the encoder of every frame
//! type sit side by side, so a change to a frame's layout is made in one
//! place for both directions (the round-trip tests in `wire/tests.rs` and
//! the fuzz target pin them together).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::WireError;
use super::gather::GatherBuf;
use super::message::{
    Ack, FrameType, Goodbye, Hello, HelloOk, Message, Nack, OrderingMode, ResultCode, Write,
    MAX_SHORT_FIELD, WRITE_RECORD_FIXED_LEN,
};
use super::{
    Frame, DEFAULT_COMPRESS_LEVEL, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAX_FRAME, FLAG_COMPRESSED,
    HEADER_LEN, MAGIC, MIN_MAX_FRAME, PROTOCOL_VERSION,
};

/// Header byte offsets (see docs/protocol.md §2).
const OFF_FLAGS: usize = 4;
const OFF_LEN: usize = 16;
const OFF_CRC: usize = 20;

const WRITE_KIND_PUT: u8 = 0;
const WRITE_KIND_TOMBSTONE: u8 = 1;
const ACK_FORM_ALL: u8 = 0;
const ACK_FORM_PER_WRITE: u8 = 1;

/// Frame codec for the xdr-ship wire protocol v1.
///
/// One codec per connection (it caches zstd contexts and a scratch buffer).
/// Wrap a stream with `tokio_util::codec::Framed::new(stream, WireCodec::new())`.
///
/// * `max_frame` bounds the payload of every frame decoded *and* encoded, and
///   the inflated size of a compressed BATCH. After the handshake, set it to
///   the smaller of the local limit and the peer's `HelloOk::max_frame`.
/// * Compression applies to outgoing BATCH frames whose uncompressed payload
///   is at least the threshold, and only when it actually saves bytes.
pub struct WireCodec {
    max_frame: usize,
    compress: Option<CompressConfig>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// Reused output buffer for compression (one allocation per connection,
    /// not per batch).
    scratch: Vec<u8>,
    /// Reused list of where values queued by reference go (see
    /// [`WireCodec::encode_batch_gather`]).
    splices: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct CompressConfig {
    threshold: usize,
    level: i32,
}

impl Default for WireCodec {
    fn default() -> Self {
        WireCodec::new()
    }
}

impl Clone for WireCodec {
    /// Copies the configuration; zstd contexts and buffers are per instance.
    fn clone(&self) -> Self {
        WireCodec {
            max_frame: self.max_frame,
            compress: self.compress,
            compressor: None,
            decompressor: None,
            scratch: Vec::new(),
            splices: Vec::new(),
        }
    }
}

impl fmt::Debug for WireCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireCodec")
            .field("max_frame", &self.max_frame)
            .field("compress_threshold", &self.compress.map(|c| c.threshold))
            .field("compress_level", &self.compress.map(|c| c.level))
            .finish_non_exhaustive()
    }
}

impl WireCodec {
    /// Default limits: [`DEFAULT_MAX_FRAME`], BATCH compression at
    /// [`DEFAULT_COMPRESS_THRESHOLD`] bytes with zstd level
    /// [`DEFAULT_COMPRESS_LEVEL`].
    pub fn new() -> Self {
        WireCodec {
            max_frame: DEFAULT_MAX_FRAME,
            compress: Some(CompressConfig {
                threshold: DEFAULT_COMPRESS_THRESHOLD,
                level: DEFAULT_COMPRESS_LEVEL,
            }),
            compressor: None,
            decompressor: None,
            scratch: Vec::new(),
            splices: Vec::new(),
        }
    }

    /// Set the frame limit (builder form of [`WireCodec::set_max_frame`]).
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.set_max_frame(max_frame);
        self
    }

    /// Compress outgoing BATCH payloads of at least `threshold` bytes with
    /// zstd `level` (1 is fast and a good default for >100 MB/s per core).
    pub fn with_compression(mut self, threshold: usize, level: i32) -> Self {
        self.compress = Some(CompressConfig { threshold, level });
        self.compressor = None;
        self
    }

    /// Never compress outgoing frames (incoming compressed BATCHes are still
    /// accepted).
    pub fn without_compression(mut self) -> Self {
        self.compress = None;
        self.compressor = None;
        self
    }

    /// Current payload limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Change the payload limit, clamped to
    /// `[MIN_MAX_FRAME, u32::MAX]`: the length field is a u32, and every peer
    /// must at least accept handshake-sized frames.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.clamp(MIN_MAX_FRAME, u32::MAX as usize);
    }

    /// Encode `frame` at the end of `dst`, returning the bytes appended
    /// (after compression). On error `dst` is left exactly as it was.
    pub fn encode_frame(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<usize, WireError> {
        match &frame.body {
            Message::Batch(writes) => self.encode_batch(frame.request_id, writes, dst),
            body => {
                let start = dst.len();
                let res = self.encode_plain(frame.request_id, body, dst);
                if res.is_err() {
                    dst.truncate(start);
                }
                res.map(|()| dst.len() - start)
            }
        }
    }

    /// Encode a BATCH straight from the writes (a slice, or any cloneable
    /// iterator over borrowed writes, such as the shipper's records in
    /// flight: no `Vec` to build, no key or value cloned), compressing it
    /// if configured and worthwhile. Returns the bytes appended; on error
    /// `dst` is left exactly as it was.
    pub fn encode_batch<'a, I>(
        &mut self,
        request_id: u64,
        writes: I,
        dst: &mut BytesMut,
    ) -> Result<usize, WireError>
    where
        I: IntoIterator<Item = &'a Write>,
        I::IntoIter: Clone + ExactSizeIterator,
    {
        let start = dst.len();
        let res = self.encode_batch_inner(request_id, writes.into_iter(), dst, start);
        if res.is_err() {
            dst.truncate(start);
        }
        res.map(|()| dst.len() - start)
    }

    /// Like [`WireCodec::encode_batch`], into a [`GatherBuf`]: a value
    /// long enough ([`GatherBuf::takes_by_ref`]) is queued by reference, not
    /// copied. A batch that compresses is encoded in place as before (the
    /// compressor reads one contiguous payload). Returns the bytes
    /// appended; on error nothing was.
    pub fn encode_batch_gather<'a, I>(
        &mut self,
        request_id: u64,
        writes: I,
        dst: &mut GatherBuf,
    ) -> Result<usize, WireError>
    where
        I: IntoIterator<Item = &'a Write>,
        I::IntoIter: Clone + ExactSizeIterator,
    {
        let writes = writes.into_iter();
        let raw_len = 4 + writes.clone().map(Write::record_len).sum::<usize>();
        let compresses = self.compress.is_some_and(|c| raw_len >= c.threshold);
        let by_ref = |w: &Write| w.value.as_ref().is_some_and(|v| dst.takes_by_ref(v.len()));
        if compresses || !writes.clone().any(by_ref) {
            return self.encode_batch(request_id, writes, dst.tail_mut());
        }
        self.check_len(raw_len)?;
        let count = (writes.len() as u32).to_le_bytes();
        self.encode_gather(FrameType::Batch, request_id, Some(count), writes, dst);
        Ok(HEADER_LEN + raw_len)
    }

    /// Like [`WireCodec::encode_write`], into a [`GatherBuf`] (see
    /// [`WireCodec::encode_batch_gather`]).
    pub fn encode_write_gather(
        &mut self,
        request_id: u64,
        write: &Write,
        dst: &mut GatherBuf,
    ) -> Result<usize, WireError> {
        let by_ref = write
            .value
            .as_ref()
            .is_some_and(|v| dst.takes_by_ref(v.len()));
        if !by_ref {
            return self.encode_write(request_id, write, dst.tail_mut());
        }
        let payload_len = write.record_len();
        self.check_len(payload_len)?;
        self.encode_gather(
            FrameType::Write,
            request_id,
            None,
            std::iter::once(write),
            dst,
        );
        Ok(HEADER_LEN + payload_len)
    }

    /// Two passes, because the header's CRC covers values that are not
    /// copied: the first writes everything but the values queued by
    /// reference into the tail and checksums the payload piece by piece
    /// (the in-place run before a value, then the value), noting where each
    /// value goes; the header is patched; the second cuts the tail at those
    /// places and queues each value there. Lengths were checked by the
    /// callers.
    fn encode_gather<'a>(
        &mut self,
        frame_type: FrameType,
        request_id: u64,
        count: Option<[u8; 4]>,
        writes: impl Iterator<Item = &'a Write> + Clone,
        dst: &mut GatherBuf,
    ) {
        let min = dst.by_ref_min();
        let by_ref = |v: &Bytes| v.len() >= min;
        self.splices.clear();
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        // Pass 1.
        let tail = dst.tail_mut();
        let start = tail.len();
        put_header(tail, frame_type, request_id);
        if let Some(count) = count {
            tail.put_slice(&count);
        }
        let mut run_start = start + HEADER_LEN;
        let mut by_ref_bytes = 0;
        for w in writes.clone() {
            put_write_fixed(tail, w);
            match &w.value {
                Some(v) if by_ref(v) => {
                    crc.update(&tail[run_start..]);
                    crc.update(v);
                    by_ref_bytes += v.len();
                    run_start = tail.len();
                    self.splices.push(run_start);
                }
                Some(v) => tail.extend_from_slice(v),
                None => {}
            }
        }
        crc.update(&tail[run_start..]);
        let payload_len = tail.len() - start - HEADER_LEN + by_ref_bytes;
        // Lengths fit in u32: the callers checked them against max_frame.
        patch_header(tail, start, 0, payload_len as u32, crc.finalize() as u32);
        // Pass 2.
        let mut cut = 0;
        let values = writes.filter_map(|w| w.value.as_ref().filter(|v| by_ref(v)));
        for (&at, v) in self.splices.iter().zip(values) {
            dst.insert_by_ref(at - cut, v);
            cut = at;
        }
    }

    /// Encode a WRITE frame carrying `write` (borrowed: nothing cloned).
    /// Returns the bytes appended; on error `dst` is left as it was.
    pub fn encode_write(
        &mut self,
        request_id: u64,
        write: &Write,
        dst: &mut BytesMut,
    ) -> Result<usize, WireError> {
        let payload_len = write.record_len();
        self.check_len(payload_len)?;
        let start = dst.len();
        dst.reserve(HEADER_LEN + payload_len);
        put_header(dst, FrameType::Write, request_id);
        put_write(dst, write);
        finish_header(dst, start, 0);
        Ok(dst.len() - start)
    }

    fn check_len(&self, len: usize) -> Result<(), WireError> {
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }

    fn encode_plain(
        &mut self,
        request_id: u64,
        body: &Message,
        dst: &mut BytesMut,
    ) -> Result<(), WireError> {
        let frame_type = body.frame_type();
        validate(body)?;
        let payload_len = body.payload_len();
        self.check_len(payload_len)?;

        let start = dst.len();
        dst.reserve(HEADER_LEN + payload_len);
        put_header(dst, frame_type, request_id);
        match body {
            Message::Hello(h) => {
                dst.put_u8(h.min_version);
                dst.put_u8(h.max_version);
                dst.put_u8(h.mode.as_u8());
                dst.put_u64_le(h.source_id);
                put_short(dst, h.client_name.as_bytes());
                put_short(dst, &h.credentials);
            }
            Message::HelloOk(h) => {
                dst.put_u8(h.version);
                dst.put_u8(h.mode.as_u8());
                dst.put_u32_le(h.max_frame);
                dst.put_u32_le(h.max_in_flight);
            }
            Message::Write(w) => put_write(dst, w),
            Message::Ack(Ack::All(code)) => {
                dst.put_u8(ACK_FORM_ALL);
                dst.put_u8(code.as_u8());
            }
            Message::Ack(Ack::PerWrite(codes)) => {
                dst.put_u8(ACK_FORM_PER_WRITE);
                // Fits: payload_len <= max_frame <= u32::MAX.
                dst.put_u32_le(codes.len() as u32);
                dst.extend(codes.iter().map(|c| c.as_u8()));
            }
            Message::Nack(Nack { code, message }) | Message::Goodbye(Goodbye { code, message }) => {
                dst.put_u8(code.as_u8());
                put_short(dst, message.as_bytes());
            }
            Message::Ping | Message::Pong => {}
            // Routed to encode_batch by encode_frame; kept total for safety.
            Message::Batch(writes) => put_batch_body(dst, writes.iter()),
        }
        debug_assert_eq!(dst.len() - start, HEADER_LEN + payload_len);
        finish_header(dst, start, 0);
        Ok(())
    }

    fn encode_batch_inner<'a>(
        &mut self,
        request_id: u64,
        writes: impl ExactSizeIterator<Item = &'a Write> + Clone,
        dst: &mut BytesMut,
        start: usize,
    ) -> Result<(), WireError> {
        let raw_len = 4 + writes.clone().map(Write::record_len).sum::<usize>();
        // The raw size is bounded too, not only the compressed one: the
        // receiver refuses to inflate anything above its max_frame.
        self.check_len(raw_len)?;

        dst.reserve(HEADER_LEN + raw_len);
        put_header(dst, FrameType::Batch, request_id);
        put_batch_body(dst, writes);
        let body_start = start + HEADER_LEN;
        debug_assert_eq!(dst.len() - body_start, raw_len);

        let mut flags = 0;
        if let Some(cfg) = self.compress.filter(|c| raw_len >= c.threshold) {
            let compressor = match &mut self.compressor {
                Some(c) => c,
                slot => slot
                    .insert(zstd::bulk::Compressor::new(cfg.level).map_err(WireError::Compress)?),
            };
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(raw_len));
            compressor
                .compress_to_buffer(&dst[body_start..], &mut self.scratch)
                .map_err(WireError::Compress)?;
            // Only worth it if it saves bytes after the 4-byte size prefix.
            if 4 + self.scratch.len() < raw_len {
                dst.truncate(body_start);
                dst.put_u32_le(raw_len as u32);
                dst.extend_from_slice(&self.scratch);
                flags = FLAG_COMPRESSED;
            }
        }
        finish_header(dst, start, flags);
        Ok(())
    }

    /// Inflate a compressed BATCH payload, never producing more than
    /// `max_frame` bytes whatever the input claims or contains.
    fn inflate(&mut self, request_id: u64, mut payload: Bytes) -> Result<Bytes, WireError> {
        if payload.len() < 4 {
            return Err(malformed(
                FrameType::Batch,
                request_id,
                format!(
                    "compressed payload is {} bytes, shorter than its 4-byte size prefix",
                    payload.len()
                ),
            ));
        }
        let declared = payload.get_u32_le() as usize;
        if declared > self.max_frame {
            return Err(WireError::DecompressTooLarge {
                request_id,
                declared,
                max: self.max_frame,
            });
        }
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            slot => slot.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|source| WireError::Decompress { request_id, source })?,
            ),
        };
        // The output capacity is exactly `declared` (<= max_frame); zstd
        // fails instead of writing past it, so a bomb cannot inflate further.
        let raw = decompressor
            .decompress(&payload, declared)
            .map_err(|source| WireError::Decompress { request_id, source })?;
        if raw.len() != declared {
            return Err(malformed(
                FrameType::Batch,
                request_id,
                format!(
                    "compressed payload inflated to {} bytes but declared {declared}",
                    raw.len()
                ),
            ));
        }
        Ok(Bytes::from(raw))
    }

    fn decode_body(&mut self, h: &Header, payload: Bytes) -> Result<Frame, WireError> {
        let payload = if h.flags & FLAG_COMPRESSED != 0 {
            self.inflate(h.request_id, payload)?
        } else {
            payload
        };
        let mut r = Reader {
            buf: payload,
            frame_type: h.frame_type,
            request_id: h.request_id,
        };
        let body = match h.frame_type {
            FrameType::Hello => Message::Hello(r.hello()?),
            FrameType::HelloOk => Message::HelloOk(r.hello_ok()?),
            FrameType::Write => {
                let w = r.write()?;
                r.finish()?;
                Message::Write(w)
            }
            FrameType::Batch => Message::Batch(r.batch()?),
            FrameType::Ack => Message::Ack(r.ack()?),
            FrameType::Nack => Message::Nack(r.nack()?),
            FrameType::Goodbye => Message::Goodbye(r.goodbye()?),
            FrameType::Ping => {
                r.finish()?;
                Message::Ping
            }
            FrameType::Pong => {
                r.finish()?;
                Message::Pong
            }
        };
        Ok(Frame::new(h.request_id, body))
    }
}

/// Parsed and validated fixed header.
struct Header {
    frame_type: FrameType,
    flags: u8,
    request_id: u64,
    payload_len: usize,
    crc: u32,
}

impl Header {
    /// Validate the 24 header bytes. Everything that can be rejected from the
    /// header alone is, so that no buffer grows on behalf of a bad frame.
    fn parse(bytes: &[u8], max_frame: usize) -> Result<Header, WireError> {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&bytes[..HEADER_LEN]);
        let mut b = &h[..];
        let magic = [b.get_u8(), b.get_u8()];
        if magic != MAGIC {
            return Err(WireError::BadMagic { got: magic });
        }
        let version = b.get_u8();
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { got: version });
        }
        let type_byte = b.get_u8();
        let frame_type =
            FrameType::from_u8(type_byte).ok_or(WireError::UnknownFrameType { got: type_byte })?;
        let flags = b.get_u8();
        let reserved = [b.get_u8(), b.get_u8(), b.get_u8()];
        let request_id = b.get_u64_le();
        let payload_len = b.get_u32_le() as usize;
        let crc = b.get_u32_le();

        if payload_len > max_frame {
            return Err(WireError::FrameTooLarge {
                len: payload_len,
                max: max_frame,
            });
        }
        let allowed = if frame_type == FrameType::Batch {
            FLAG_COMPRESSED
        } else {
            0
        };
        if flags & !allowed != 0 {
            return Err(WireError::InvalidFlags {
                frame_type,
                flags,
                request_id,
            });
        }
        if reserved != [0; 3] {
            return Err(WireError::ReservedNotZero {
                got: reserved,
                request_id,
            });
        }
        Ok(Header {
            frame_type,
            flags,
            request_id,
            payload_len,
            crc,
        })
    }
}

impl WireCodec {
    /// Bytes the first frame in `buf` still needs before it can be decoded
    /// (0 when it is whole). From the header's length field alone, before
    /// any check: a bad header is refused by `decode` as soon as it is whole.
    /// The receiver sets its socket's low-water mark from it
    /// ([`crate::net::lowat`]).
    pub fn still_needed(buf: &[u8]) -> usize {
        if buf.len() < HEADER_LEN {
            return HEADER_LEN - buf.len();
        }
        let mut field = [0u8; 4];
        field.copy_from_slice(&buf[OFF_LEN..OFF_LEN + 4]);
        let len = u32::from_le_bytes(field) as usize;
        (HEADER_LEN + len).saturating_sub(buf.len())
    }
}

impl Decoder for WireCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let header = Header::parse(src, self.max_frame)?;
        // payload_len <= max_frame <= u32::MAX; checked for 32-bit targets.
        let total = HEADER_LEN
            .checked_add(header.payload_len)
            .ok_or(WireError::FrameTooLarge {
                len: header.payload_len,
                max: self.max_frame,
            })?;
        if src.len() < total {
            // Exactly what this frame still needs; the limit was checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        // Zero-copy: the payload (and every key/value sliced from it) shares
        // the read buffer's allocation.
        let payload = src.split_to(header.payload_len).freeze();
        let actual = super::crc32c(&payload);
        if actual != header.crc {
            return Err(WireError::BadChecksum {
                frame_type: header.frame_type,
                request_id: header.request_id,
                expected: header.crc,
                actual,
            });
        }
        self.decode_body(&header, payload).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::UnexpectedEof {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<&Frame> for WireCodec {
    type Error = WireError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_frame(frame, dst).map(|_| ())
    }
}

impl Encoder<Frame> for WireCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_frame(&frame, dst).map(|_| ())
    }
}

/// Protocol rules a Rust value can break; checked before anything is written.
fn validate(body: &Message) -> Result<(), WireError> {
    let frame_type = body.frame_type();
    let short = |field: &'static str, len: usize| {
        if len > MAX_SHORT_FIELD {
            Err(WireError::FieldTooLong {
                field,
                len,
                max: MAX_SHORT_FIELD,
            })
        } else {
            Ok(())
        }
    };
    match body {
        Message::Hello(h) => {
            short("client_name", h.client_name.len())?;
            short("credentials", h.credentials.len())?;
        }
        Message::Ack(Ack::All(code)) if !code.is_success() => {
            return Err(WireError::InvalidMessage {
                frame_type,
                reason: "a uniform ACK must carry a success code; send a NACK for failures",
            });
        }
        Message::Nack(n) => {
            if n.code.is_success() {
                return Err(WireError::InvalidMessage {
                    frame_type,
                    reason: "a NACK must carry a failure code; send an ACK for success",
                });
            }
            short("message", n.message.len())?;
        }
        Message::Goodbye(g) => short("message", g.message.len())?,
        _ => {}
    }
    Ok(())
}

/// Header with payload_len and crc left zero; [`finish_header`] patches them.
fn put_header(dst: &mut BytesMut, frame_type: FrameType, request_id: u64) {
    dst.put_slice(&MAGIC);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(frame_type.as_u8());
    dst.put_u8(0); // flags
    dst.put_slice(&[0; 3]); // reserved
    dst.put_u64_le(request_id);
    dst.put_u32_le(0); // payload_len
    dst.put_u32_le(0); // crc32c
}

/// Patch flags, payload length and CRC32C once the payload is in place. The
/// CRC is computed over the bytes already in `dst` (one pass, hardware CRC)
/// instead of being accumulated field by field.
fn finish_header(dst: &mut BytesMut, start: usize, flags: u8) {
    let payload_len = dst.len() - start - HEADER_LEN;
    let crc = super::crc32c(&dst[start + HEADER_LEN..]);
    // payload_len <= max_frame <= u32::MAX (checked by the callers).
    patch_header(dst, start, flags, payload_len as u32, crc);
}

/// Fill in the header at `start` of `dst` (see [`put_header`]).
fn patch_header(dst: &mut BytesMut, start: usize, flags: u8, payload_len: u32, crc: u32) {
    dst[start + OFF_FLAGS] = flags;
    dst[start + OFF_LEN..start + OFF_LEN + 4].copy_from_slice(&payload_len.to_le_bytes());
    dst[start + OFF_CRC..start + OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

fn put_short(dst: &mut BytesMut, bytes: &[u8]) {
    // Length validated <= u16::MAX by `validate`.
    dst.put_u16_le(bytes.len() as u16);
    dst.put_slice(bytes);
}

fn put_write(dst: &mut BytesMut, w: &Write) {
    put_write_fixed(dst, w);
    if let Some(v) = &w.value {
        dst.extend_from_slice(v);
    }
}

/// A write's fixed fields and key: all of it but the value.
fn put_write_fixed(dst: &mut BytesMut, w: &Write) {
    // The fixed fields are laid out on the stack and copied with the key
    // in two copies, not six (this runs once per record).
    let (kind, value) = match &w.value {
        Some(v) => (WRITE_KIND_PUT, &v[..]),
        None => (WRITE_KIND_TOMBSTONE, &[][..]),
    };
    let mut fixed = [0u8; WRITE_RECORD_FIXED_LEN];
    fixed[0..8].copy_from_slice(&w.version.to_le_bytes());
    fixed[8..16].copy_from_slice(&w.source_id.to_le_bytes());
    fixed[16] = kind;
    // Lengths fit in u32: the whole payload was checked against max_frame.
    fixed[17..21].copy_from_slice(&(w.key.len() as u32).to_le_bytes());
    fixed[21..25].copy_from_slice(&(value.len() as u32).to_le_bytes());
    dst.extend_from_slice(&fixed);
    dst.extend_from_slice(&w.key);
}

fn put_batch_body<'a>(dst: &mut BytesMut, writes: impl ExactSizeIterator<Item = &'a Write>) {
    // Fits: the payload, count included, was checked against max_frame.
    dst.put_u32_le(writes.len() as u32);
    for w in writes {
        put_write(dst, w);
    }
}

fn malformed(frame_type: FrameType, request_id: u64, reason: String) -> WireError {
    WireError::Malformed {
        frame_type,
        request_id,
        reason,
    }
}

/// Bounds-checked reader over a payload. `Buf::get_*` panic on short input;
/// every read here checks first and reports which field ran out.
struct Reader {
    buf: Bytes,
    frame_type: FrameType,
    request_id: u64,
}

impl Reader {
    fn malformed(&self, reason: String) -> WireError {
        malformed(self.frame_type, self.request_id, reason)
    }

    fn need(&self, n: usize, field: &str) -> Result<(), WireError> {
        if self.buf.len() < n {
            return Err(self.malformed(format!(
                "{field} needs {n} bytes but only {} remain in the payload",
                self.buf.len()
            )));
        }
        Ok(())
    }

    fn u8(&mut self, field: &str) -> Result<u8, WireError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self, field: &str) -> Result<u16, WireError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16_le())
    }

    fn u32(&mut self, field: &str) -> Result<u32, WireError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32_le())
    }

    fn u64(&mut self, field: &str) -> Result<u64, WireError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64_le())
    }

    fn bytes(&mut self, n: usize, field: &str) -> Result<Bytes, WireError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    fn short_bytes(&mut self, field: &str) -> Result<Bytes, WireError> {
        let n = self.u16(field)? as usize;
        self.bytes(n, field)
    }

    fn short_str(&mut self, field: &str) -> Result<String, WireError> {
        let raw = self.short_bytes(field)?;
        match std::str::from_utf8(&raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.malformed(format!("{field} is not valid UTF-8: {e}"))),
        }
    }

    fn mode(&mut self) -> Result<OrderingMode, WireError> {
        let b = self.u8("mode")?;
        OrderingMode::from_u8(b).ok_or_else(|| self.malformed(format!("unknown ordering mode {b}")))
    }

    fn write(&mut self) -> Result<Write, WireError> {
        let version = self.u64("version")?;
        let source_id = self.u64("source_id")?;
        let kind = self.u8("kind")?;
        let key_len = self.u32("key_len")? as usize;
        let value_len = self.u32("value_len")? as usize;
        let key = self.bytes(key_len, "key")?;
        let value = match kind {
            WRITE_KIND_PUT => Some(self.bytes(value_len, "value")?),
            WRITE_KIND_TOMBSTONE if value_len == 0 => None,
            WRITE_KIND_TOMBSTONE => {
                return Err(self.malformed(format!(
                    "tombstone carries value_len {value_len}, must be 0"
                )))
            }
            other => return Err(self.malformed(format!("unknown write kind {other}"))),
        };
        Ok(Write {
            key,
            value,
            version,
            source_id,
        })
    }

    /// Reject trailing bytes: in v1 every payload has an exact length
    /// (except HELLO/HELLO_OK, which never call this).
    /// A HELLO body. Bytes after the v1 fields are extension room for
    /// later versions and are ignored (docs/protocol.md §6).
    fn hello(&mut self) -> Result<Hello, WireError> {
        Ok(Hello {
            min_version: self.u8("min_version")?,
            max_version: self.u8("max_version")?,
            mode: self.mode()?,
            source_id: self.u64("source_id")?,
            client_name: self.short_str("client_name")?,
            credentials: self.short_bytes("credentials")?,
        })
    }

    /// A HELLO_OK body.
    fn hello_ok(&mut self) -> Result<HelloOk, WireError> {
        Ok(HelloOk {
            version: self.u8("version")?,
            mode: self.mode()?,
            max_frame: self.u32("max_frame")?,
            max_in_flight: self.u32("max_in_flight")?,
        })
    }

    /// A BATCH body: the count, then that many writes, nothing after.
    fn batch(mut self) -> Result<Vec<Write>, WireError> {
        let count = self.u32("count")? as usize;
        // Never trust `count` for the allocation: each write takes at
        // least WRITE_RECORD_FIXED_LEN bytes of what is actually here.
        let mut writes = Vec::with_capacity(count.min(self.buf.len() / WRITE_RECORD_FIXED_LEN));
        for _ in 0..count {
            writes.push(self.write()?);
        }
        self.finish()?;
        Ok(writes)
    }

    /// An ACK body: uniform (success codes only) or one code per write.
    fn ack(mut self) -> Result<Ack, WireError> {
        let ack = match self.u8("form")? {
            ACK_FORM_ALL => {
                let code = ResultCode::from_u8(self.u8("code")?);
                if !code.is_success() {
                    return Err(self.malformed(format!(
                        "uniform ACK carries non-success code {code} (must be a NACK)"
                    )));
                }
                Ack::All(code)
            }
            ACK_FORM_PER_WRITE => {
                let n = self.u32("count")? as usize;
                let codes = self.bytes(n, "codes")?;
                Ack::PerWrite(codes.iter().map(|&b| ResultCode::from_u8(b)).collect())
            }
            other => return Err(self.malformed(format!("unknown ACK form {other}"))),
        };
        self.finish()?;
        Ok(ack)
    }

    /// A NACK body (its code must not be a success).
    fn nack(mut self) -> Result<Nack, WireError> {
        let code = ResultCode::from_u8(self.u8("code")?);
        if code.is_success() {
            return Err(self.malformed(format!("NACK carries success code {code}")));
        }
        let message = self.short_str("message")?;
        self.finish()?;
        Ok(Nack { code, message })
    }

    /// A GOODBYE body.
    fn goodbye(mut self) -> Result<Goodbye, WireError> {
        let code = ResultCode::from_u8(self.u8("code")?);
        let message = self.short_str("message")?;
        self.finish()?;
        Ok(Goodbye { code, message })
    }

    fn finish(self) -> Result<(), WireError> {
        if !self.buf.is_empty() {
            return Err(self.malformed(format!(
                "{} unexpected trailing bytes after the last field",
                self.buf.len()
            )));
        }
        Ok(())
    }
}
