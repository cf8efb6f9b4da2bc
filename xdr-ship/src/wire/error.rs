//! Errors raised while framing, parsing or building wire frames.
//!
//! Every decode error is fatal for the connection: once a frame cannot be
//! parsed, the reader no longer knows where the next frame starts, so the only
//! safe reaction is to send a GOODBYE carrying [`WireError::close_code`] and
//! close (see [`Frame::goodbye_for`](super::Frame::goodbye_for)). The messages
//! are written for the operator reading a log line: they say what was wrong,
//! with the numbers, and usually what that hints at.

use std::io;

use super::message::{FrameType, ResultCode};
use super::PROTOCOL_VERSION;

/// Everything that can go wrong in [`WireCodec`](super::WireCodec).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame (or a BATCH once inflated) is larger than the configured limit.
    /// Raised from the header alone, before any buffer is grown.
    #[error(
        "frame too large: payload of {len} bytes exceeds the limit of {max} bytes \
         (max_frame differs between the two ends, or the peer is not speaking this protocol)"
    )]
    FrameTooLarge {
        /// Declared (decode) or computed (encode) payload length.
        len: usize,
        /// The codec's `max_frame`.
        max: usize,
    },

    /// The first two bytes are not `"XS"`: the peer speaks something else
    /// (TLS, HTTP, ...) or the stream lost framing.
    #[error(
        "bad magic {got:02x?}: peer is not speaking the xdr-ship wire protocol \
         (expected {expected:02x?} = \"XS\"; a TLS client on a plaintext port starts with [16, 03])",
        expected = super::MAGIC
    )]
    BadMagic {
        /// The two bytes found where the magic should be.
        got: [u8; 2],
    },

    /// The header's protocol version is not one this build speaks.
    #[error(
        "unsupported protocol version {got} (this build speaks version {PROTOCOL_VERSION} only)"
    )]
    UnsupportedVersion {
        /// Version byte found in the header.
        got: u8,
    },

    /// The header's frame type byte is not defined in this protocol version.
    #[error("unknown frame type {got:#04x}")]
    UnknownFrameType {
        /// Frame type byte found in the header.
        got: u8,
    },

    /// Flag bits that are undefined, or defined but not allowed on this frame
    /// type (COMPRESSED is only valid on BATCH).
    #[error("invalid flags {flags:#04x} on {frame_type} frame (request {request_id})")]
    InvalidFlags {
        /// Frame type from the header.
        frame_type: FrameType,
        /// The flags byte as received (or as requested when encoding).
        flags: u8,
        /// Request id from the header.
        request_id: u64,
    },

    /// Header bytes 5..8 must be zero in version 1.
    #[error("reserved header bytes are not zero: {got:02x?} (request {request_id})")]
    ReservedNotZero {
        /// The three reserved bytes as received.
        got: [u8; 3],
        /// Request id from the header.
        request_id: u64,
    },

    /// The payload does not hash to the CRC32C in the header.
    #[error(
        "checksum mismatch on {frame_type} frame (request {request_id}): header says {expected:#010x}, \
         payload hashes to {actual:#010x} (data corrupted in transit, or a buggy sender)"
    )]
    BadChecksum {
        /// Frame type from the header.
        frame_type: FrameType,
        /// Request id from the header.
        request_id: u64,
        /// CRC32C carried in the header.
        expected: u32,
        /// CRC32C computed over the received payload.
        actual: u32,
    },

    /// The payload is structurally wrong: shorter than its fields say,
    /// trailing bytes, an undefined enum value, invalid UTF-8, ...
    #[error("malformed {frame_type} payload (request {request_id}): {reason}")]
    Malformed {
        /// Frame type from the header.
        frame_type: FrameType,
        /// Request id from the header.
        request_id: u64,
        /// What exactly was wrong, with the numbers.
        reason: String,
    },

    /// A compressed BATCH declares an inflated size above `max_frame`.
    /// Raised before anything is decompressed.
    #[error(
        "compressed BATCH (request {request_id}) would inflate to {declared} bytes, \
         above the limit of {max} bytes; refusing to decompress"
    )]
    DecompressTooLarge {
        /// Request id from the header.
        request_id: u64,
        /// Inflated size declared in the BATCH payload.
        declared: usize,
        /// The codec's `max_frame`.
        max: usize,
    },

    /// zstd failed, including when the data inflates past its declared size
    /// (the output buffer is exactly the declared size, so a zip bomb ends
    /// here, not in an allocation).
    #[error("zstd decompression of BATCH (request {request_id}) failed: {source}")]
    Decompress {
        /// Request id from the header.
        request_id: u64,
        /// zstd's own error.
        source: io::Error,
    },

    /// zstd failed while compressing an outgoing BATCH (out of memory, or a
    /// bad compression level).
    #[error("zstd compression failed: {0}")]
    Compress(#[source] io::Error),

    /// A field is too long for its length prefix (encode side only), e.g. a
    /// client name over 65535 bytes.
    #[error("{field} is {len} bytes, the wire format allows at most {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The largest length its prefix can carry.
        max: usize,
    },

    /// A message that is well-typed in Rust but not allowed by the protocol
    /// (encode side only), e.g. an ACK carrying a failure code.
    #[error("invalid {frame_type} message: {reason}")]
    InvalidMessage {
        /// Frame type being encoded.
        frame_type: FrameType,
        /// Which rule was broken.
        reason: &'static str,
    },

    /// The connection closed in the middle of a frame.
    #[error("connection closed mid-frame with {buffered} bytes of an incomplete frame buffered")]
    UnexpectedEof {
        /// Bytes of the incomplete frame that were received.
        buffered: usize,
    },

    /// Transport error (required by the `tokio_util::codec` traits).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// The code to put in the GOODBYE frame sent before closing a connection
    /// because of this error. Retryable codes tell the peer to reconnect
    /// (possibly after a backoff); permanent ones tell it that doing the same
    /// thing again will fail again.
    pub fn close_code(&self) -> ResultCode {
        match self {
            WireError::FrameTooLarge { .. } | WireError::DecompressTooLarge { .. } => {
                ResultCode::RecordTooLarge
            }
            WireError::UnsupportedVersion { .. } | WireError::UnknownFrameType { .. } => {
                ResultCode::Unsupported
            }
            WireError::BadChecksum { .. } => ResultCode::Corrupt,
            WireError::BadMagic { .. }
            | WireError::InvalidFlags { .. }
            | WireError::ReservedNotZero { .. }
            | WireError::Malformed { .. }
            | WireError::Decompress { .. } => ResultCode::ProtocolViolation,
            WireError::FieldTooLong { .. } | WireError::InvalidMessage { .. } => {
                ResultCode::BadRequest
            }
            WireError::Compress(_) | WireError::UnexpectedEof { .. } | WireError::Io(_) => {
                ResultCode::Unavailable
            }
        }
    }

    /// The request id of the offending frame, when the header was readable.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            WireError::InvalidFlags { request_id, .. }
            | WireError::ReservedNotZero { request_id, .. }
            | WireError::BadChecksum { request_id, .. }
            | WireError::Malformed { request_id, .. }
            | WireError::DecompressTooLarge { request_id, .. }
            | WireError::Decompress { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }
}
