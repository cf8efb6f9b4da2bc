//! Wire protocol v1: how the shipper and the receiver talk over one TCP
//! connection. The normative spec is `docs/protocol.md`; this module is its
//! reference implementation as a `tokio_util::codec` [`Decoder`]/[`Encoder`]
//! ([`WireCodec`]).
//!
//! ```text
//!  0      2    3    4     5         8            16            20         24
//!  +------+----+----+-----+---------+------------+-------------+----------+---------+
//!  | "XS" | ver|type|flags| reserved| request_id | payload_len | crc32c   | payload |
//!  |      | =1 |    |     |  = 0    |  u64 LE    |   u32 LE    | (payload)|  ...    |
//!  +------+----+----+-----+---------+------------+-------------+----------+---------+
//! ```
//!
//! # Why it looks like this
//!
//! The link this protocol is built for is long and fat: tens of milliseconds
//! of RTT and gigabits of bandwidth, so a connection only fills the pipe if it
//! keeps thousands of writes in flight (like Aerospike XDR 3.8 pipelining).
//! Most decisions follow from that, and from the codec sitting on the hot
//! path of >100K records/s per process.
//!
//! * **Request ids, chosen by the sender, echoed in every reply.** Many
//!   requests are outstanding at once; the id is how a reply finds its
//!   request. In [`OrderingMode::Ordered`] replies come back in request order
//!   (a FIFO suffices, and any mismatch is detectable); in
//!   [`OrderingMode::Unordered`] they come in any order, so one slow key does
//!   not stall everything behind it. Writes carry a version and the receiver
//!   keeps the highest, so re-sending a write whose outcome is unknown is
//!   always safe: at worst it comes back [`ResultCode::LostConflict`].
//! * **Fixed 24-byte header, little-endian.** Both ends are ours and every
//!   target (x86-64, aarch64) is little-endian, so fields are plain loads. A
//!   fixed header means one length check decides everything, and the whole
//!   header can be validated (magic, version, type, flags, reserved bytes,
//!   length against the limit) **before any buffer grows**: a peer cannot
//!   make us allocate by lying about a length. Once the header is valid the
//!   decoder reserves exactly what the frame still needs, no more.
//! * **Magic `"XS"`.** A TLS client or an HTTP probe hitting the port gets a
//!   clear "not speaking this protocol" instead of a confusing length error.
//! * **CRC32C of the payload.** TCP's 16-bit checksum lets through corruption
//!   that long paths through middleboxes and NICs do produce, and a corrupted
//!   record replicated into a database is the worst failure this system can
//!   have. CRC32C runs in hardware (SSE4.2 / ARMv8) at several GB/s, so it is
//!   nearly free next to the copy. The header is not covered: it is checked
//!   structurally, and a flipped request id shows up as an unmatched reply.
//! * **Zero-copy decode.** The payload is split off the read buffer and
//!   frozen; keys and values are [`bytes::Bytes`] slices of it. A 1 KiB record
//!   costs reference counts, not allocations. (Corollary: holding one key
//!   keeps its read chunk alive; copy it if you keep it for long.)
//! * **Encode in place.** Frames are written straight into the `BytesMut`,
//!   the length and CRC patched afterwards; one `reserve` per frame.
//! * **BATCH with optional zstd.** Batching amortises the header and the
//!   per-request bookkeeping; compressing big batches trades cheap CPU for
//!   scarce cross-region bandwidth. The compressed payload declares its
//!   inflated size, which must be within `max_frame`, and zstd inflates into
//!   a buffer of exactly that size: a zip bomb fails, it does not allocate.
//! * **ACK vs NACK.** A NACK is "this request failed as a whole" (one code, a
//!   message). An ACK is "processed": one success code for everything, or one
//!   code per write of a BATCH, so a single oversize record does not make the
//!   sender re-send a thousand good ones.
//! * **Result codes classed by range** (success `0x00..`, retryable `0x40..`,
//!   permanent `0x80..`): new codes can be added and old senders still know
//!   whether to retry.
//! * **Strict parsing.** Unknown flags, non-zero reserved bytes, trailing
//!   bytes and unknown enum values are errors, never ignored: a v1 peer can
//!   never silently misread a future feature. New features come with a new
//!   version, negotiated in HELLO.
//! * **Errors are fatal.** After a bad frame the reader no longer knows where
//!   the next one starts, so the connection is closed, after a GOODBYE
//!   ([`Frame::goodbye_for`]) telling the peer why.
//!
//! # Usage
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//! use xdr_ship::wire::{Frame, Message, WireCodec, Write};
//!
//! let mut codec = WireCodec::new();
//! let mut buf = BytesMut::new();
//! codec.encode(Frame::write(7, Write::put("key", "value", 1, 42)), &mut buf)?;
//! let frame = codec.decode(&mut buf)?.expect("one whole frame is buffered");
//! assert_eq!(frame.request_id, 7);
//! assert!(matches!(frame.body, Message::Write(w) if w.key == "key"));
//! # Ok::<(), xdr_ship::wire::WireError>(())
//! ```
//!
//! The receiver wraps its `TcpStream` in
//! `tokio_util::codec::Framed<_, WireCodec>`; the shipper encodes
//! WRITE/BATCH frames (or calls [`WireCodec::encode_batch`] on a slice of
//! [`Write`]s) and sizes its in-flight byte window with
//! [`write_frame_len`] / [`Frame::encoded_len`].
//!
//! [`Decoder`]: tokio_util::codec::Decoder
//! [`Encoder`]: tokio_util::codec::Encoder

mod codec;
mod error;
pub(crate) mod gather;
mod message;

#[cfg(test)]
mod tests;

pub use codec::WireCodec;
pub use error::WireError;
pub use gather::GatherBuf;
pub use message::{
    batch_frame_len, write_frame_len, write_record_len, Ack, Frame, FrameType, Goodbye, Hello,
    HelloOk, Message, Nack, OrderingMode, ResultClass, ResultCode, Write, MAX_SHORT_FIELD,
    WRITE_RECORD_FIXED_LEN,
};

/// CRC32C (Castagnoli) of `bytes`: the frames' checksum, and the source
/// log's and value log's. Why `crc-fast` and not the `crc32c` crate (same
/// values; the tests check one against the other): on these VMs it hashes a
/// 64 KB batch at 7.2–7.4 GB/s against 5.3, and 24 bytes in 17 ns against
/// 28, at the cost of ~6% at 1 KB. Profiled on loopback (1 KB records,
/// batches of 64), the checksum's share went from 11.5% to 8.9% of the
/// shipper's CPU and from 16.2% to 12.4% of the receiver's.
pub fn crc32c(bytes: &[u8]) -> u32 {
    // A CRC-32 fits in the low 32 bits of the u64 crc-fast returns.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"XS";

/// The protocol version this build speaks (header offset 2).
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 24;

/// Default limit on a frame's payload (and on an inflated BATCH): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Smallest `max_frame` a codec can be set to, and that a server may
/// advertise: handshake frames must always fit.
pub const MIN_MAX_FRAME: usize = 64 * 1024;

/// Default size from which an outgoing BATCH payload is compressed.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 4 * 1024;

/// Default zstd level: 1 compresses several hundred MB/s per core, which
/// keeps the codec off the critical path at >100K 1 KiB records/s.
pub const DEFAULT_COMPRESS_LEVEL: i32 = 1;

/// Header flag bit 0: the payload is zstd-compressed (BATCH only).
pub const FLAG_COMPRESSED: u8 = 0x01;
