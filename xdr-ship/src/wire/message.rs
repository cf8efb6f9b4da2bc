//! The typed messages carried by wire frames, and their encoded sizes.
//!
//! Keys, values and credentials are [`Bytes`]: on decode they are slices of
//! the frame's payload (itself split off the connection's read buffer), so a
//! 1 KiB value costs a reference count increment, not an allocation and a
//! copy. Strings (client name, NACK/GOODBYE messages) are owned `String`s:
//! they are rare, short, and operators want them as text.
//!
//! Why one file of ~630 lines: each message type sits beside its encoded
//! size and its validation, which must change together with the layout in
//! docs/protocol.md; split by message, a layout change would touch as many
//! files as it touches messages.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::{HEADER_LEN, PROTOCOL_VERSION};

/// Bytes of a write record before its key and value (see
/// [`write_record_len`]).
pub const WRITE_RECORD_FIXED_LEN: usize = 8 + 8 + 1 + 4 + 4;

/// Longest string or credential the u16 length prefix can carry.
pub const MAX_SHORT_FIELD: usize = u16::MAX as usize;

/// Frame type byte (header offset 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client opens the session: versions, ordering mode, identity.
    Hello = 0x01,
    /// Server accepts the session: negotiated version, mode and limits.
    HelloOk = 0x02,
    /// One record write.
    Write = 0x10,
    /// Many record writes, optionally zstd-compressed.
    Batch = 0x11,
    /// The request was processed; result per request or per write.
    Ack = 0x20,
    /// The request as a whole failed.
    Nack = 0x21,
    /// The sender is closing the connection, and why.
    Goodbye = 0x30,
    /// Liveness / RTT probe.
    Ping = 0x31,
    /// Answer to PING, same request id.
    Pong = 0x32,
}

impl FrameType {
    /// Every frame type of protocol version 1.
    pub const ALL: [FrameType; 9] = [
        FrameType::Hello,
        FrameType::HelloOk,
        FrameType::Write,
        FrameType::Batch,
        FrameType::Ack,
        FrameType::Nack,
        FrameType::Goodbye,
        FrameType::Ping,
        FrameType::Pong,
    ];

    /// Parse the header's type byte.
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::HelloOk,
            0x10 => FrameType::Write,
            0x11 => FrameType::Batch,
            0x20 => FrameType::Ack,
            0x21 => FrameType::Nack,
            0x30 => FrameType::Goodbye,
            0x31 => FrameType::Ping,
            0x32 => FrameType::Pong,
            _ => return None,
        })
    }

    /// The header's type byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Upper-case name used in the spec and in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "HELLO",
            FrameType::HelloOk => "HELLO_OK",
            FrameType::Write => "WRITE",
            FrameType::Batch => "BATCH",
            FrameType::Ack => "ACK",
            FrameType::Nack => "NACK",
            FrameType::Goodbye => "GOODBYE",
            FrameType::Ping => "PING",
            FrameType::Pong => "PONG",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the receiver schedules writes and acks on one connection (also the
/// `--mode` flag: `ordered` | `unordered`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum OrderingMode {
    /// Requests are applied and answered in the order they were received:
    /// the sender matches replies with a FIFO and any mismatch is a bug.
    #[default]
    Ordered = 0,
    /// Requests may be applied concurrently and answered in any order: the
    /// sender matches replies by request id. One slow key no longer stalls
    /// the whole pipe (no head-of-line blocking).
    Unordered = 1,
}

impl OrderingMode {
    /// Parse the wire byte.
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(OrderingMode::Ordered),
            1 => Some(OrderingMode::Unordered),
            _ => None,
        }
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name the flag, the TOML and every output use.
    pub const fn name(self) -> &'static str {
        match self {
            OrderingMode::Ordered => "ordered",
            OrderingMode::Unordered => "unordered",
        }
    }
}

impl std::fmt::Display for OrderingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a [`ResultCode`] must be treated by the sender. Derived from the code's
/// numeric range, so codes added later are classified correctly by old peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultClass {
    /// `0x00..=0x3F`: the write is settled at the destination.
    Success,
    /// `0x40..=0x7F`: the write was not (known to be) applied; send it again.
    Retryable,
    /// `0x80..=0xFF`: sending it again will fail again; drop or park it.
    Permanent,
}

/// Outcome of a request or of one write in a BATCH; also the reason code of
/// NACK and GOODBYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// `0x00` Applied.
    Ok,
    /// `0x01` Not applied because the destination holds the same or a newer
    /// version of the record. Counts as success: the destination already has
    /// data at least as new, and retrying can never change that.
    LostConflict,
    /// `0x40` Receiver overloaded (queue full, in-flight limit exceeded).
    Busy,
    /// `0x41` The write did not complete in time at the destination store.
    Timeout,
    /// `0x42` Destination store (or a partition of it) unavailable.
    Unavailable,
    /// `0x43` The receiver is shutting down; reconnect later or elsewhere.
    ShuttingDown,
    /// `0x44` A frame failed its checksum; the connection is being closed.
    Corrupt,
    /// `0x80` The request is semantically invalid (e.g. empty key).
    BadRequest,
    /// `0x81` The record (or frame) exceeds a size limit.
    RecordTooLarge,
    /// `0x82` HELLO credentials were rejected.
    AuthFailed,
    /// `0x83` Version, ordering mode or frame type not supported.
    Unsupported,
    /// `0x84` The peer broke the protocol (bad framing, frame out of state).
    ProtocolViolation,
    /// A code this build does not know, classified by its range. Never
    /// construct this with a known code: use [`ResultCode::from_u8`].
    Other(u8),
}

impl ResultCode {
    /// Parse a wire byte; unknown values become [`ResultCode::Other`].
    pub const fn from_u8(b: u8) -> Self {
        match b {
            0x00 => ResultCode::Ok,
            0x01 => ResultCode::LostConflict,
            0x40 => ResultCode::Busy,
            0x41 => ResultCode::Timeout,
            0x42 => ResultCode::Unavailable,
            0x43 => ResultCode::ShuttingDown,
            0x44 => ResultCode::Corrupt,
            0x80 => ResultCode::BadRequest,
            0x81 => ResultCode::RecordTooLarge,
            0x82 => ResultCode::AuthFailed,
            0x83 => ResultCode::Unsupported,
            0x84 => ResultCode::ProtocolViolation,
            other => ResultCode::Other(other),
        }
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        match self {
            ResultCode::Ok => 0x00,
            ResultCode::LostConflict => 0x01,
            ResultCode::Busy => 0x40,
            ResultCode::Timeout => 0x41,
            ResultCode::Unavailable => 0x42,
            ResultCode::ShuttingDown => 0x43,
            ResultCode::Corrupt => 0x44,
            ResultCode::BadRequest => 0x80,
            ResultCode::RecordTooLarge => 0x81,
            ResultCode::AuthFailed => 0x82,
            ResultCode::Unsupported => 0x83,
            ResultCode::ProtocolViolation => 0x84,
            ResultCode::Other(b) => b,
        }
    }

    /// Success, retryable or permanent, from the code's range.
    pub const fn class(self) -> ResultClass {
        match self.as_u8() {
            0x00..=0x3F => ResultClass::Success,
            0x40..=0x7F => ResultClass::Retryable,
            _ => ResultClass::Permanent,
        }
    }

    /// Ok or LostConflict (or an unknown success-range code): the write is
    /// done as far as the sender is concerned.
    pub const fn is_success(self) -> bool {
        matches!(self.class(), ResultClass::Success)
    }

    /// Busy, Timeout, Unavailable, ...: send the write again later.
    pub const fn is_retryable(self) -> bool {
        matches!(self.class(), ResultClass::Retryable)
    }

    /// RecordTooLarge, BadRequest, AuthFailed, ...: retrying cannot help.
    pub const fn is_permanent(self) -> bool {
        matches!(self.class(), ResultClass::Permanent)
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultCode::Other(b) => write!(f, "Other({b:#04x})"),
            known => write!(f, "{known:?}"),
        }
    }
}

/// One record write: the unit the shipper replicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Write {
    /// Record key (opaque bytes).
    pub key: Bytes,
    /// Record value; `None` is a tombstone (delete).
    pub value: Option<Bytes>,
    /// Record version (generation / last-update time). The receiver keeps the
    /// highest version; a write that is not newer gets `LostConflict`.
    pub version: u64,
    /// Cluster/node the write originated from (relevant when writes are
    /// relayed, so it is per write and not only in HELLO).
    pub source_id: u64,
}

impl Write {
    /// A write that stores `value` under `key`.
    pub fn put(
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        version: u64,
        source_id: u64,
    ) -> Self {
        Write {
            key: key.into(),
            value: Some(value.into()),
            version,
            source_id,
        }
    }

    /// A write that deletes `key`.
    pub fn tombstone(key: impl Into<Bytes>, version: u64, source_id: u64) -> Self {
        Write {
            key: key.into(),
            value: None,
            version,
            source_id,
        }
    }

    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Bytes this write occupies inside a WRITE or BATCH payload.
    pub fn record_len(&self) -> usize {
        write_record_len(self.key.len(), self.value.as_ref().map_or(0, Bytes::len))
    }

    /// Bytes of a standalone WRITE frame carrying this write, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.record_len()
    }
}

/// Bytes a write with these key/value lengths occupies inside a WRITE or
/// BATCH payload (`value_len` = 0 for a tombstone).
pub const fn write_record_len(key_len: usize, value_len: usize) -> usize {
    WRITE_RECORD_FIXED_LEN + key_len + value_len
}

/// Bytes of a standalone WRITE frame, header included: what one write costs
/// in a byte-based in-flight window.
pub const fn write_frame_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + write_record_len(key_len, value_len)
}

/// Bytes of an uncompressed BATCH frame carrying `writes`, header included.
/// When the codec compresses the batch the frame is smaller, never larger.
pub fn batch_frame_len(writes: &[Write]) -> usize {
    HEADER_LEN + batch_payload_len(writes)
}

pub(crate) fn batch_payload_len(writes: &[Write]) -> usize {
    4 + writes.iter().map(Write::record_len).sum::<usize>()
}

/// Client → server, first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u8,
    /// Highest protocol version the client speaks.
    pub max_version: u8,
    /// Requested ordering mode.
    pub mode: OrderingMode,
    /// Identity of the shipping cluster/node.
    pub source_id: u64,
    /// Free-form client name for logs; empty when not given.
    pub client_name: String,
    /// Opaque credentials (e.g. a pre-shared token); empty when none.
    pub credentials: Bytes,
}

impl Hello {
    /// A HELLO for this build's protocol version, no name, no credentials.
    pub fn new(mode: OrderingMode, source_id: u64) -> Self {
        Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            mode,
            source_id,
            client_name: String::new(),
            credentials: Bytes::new(),
        }
    }

    /// The version a server speaking only [`PROTOCOL_VERSION`] must answer
    /// with, or `None` if the client does not speak it (answer GOODBYE
    /// `Unsupported`).
    pub fn negotiate_version(&self) -> Option<u8> {
        (self.min_version..=self.max_version)
            .contains(&PROTOCOL_VERSION)
            .then_some(PROTOCOL_VERSION)
    }

    pub(crate) fn payload_len(&self) -> usize {
        1 + 1 + 1 + 8 + 2 + self.client_name.len() + 2 + self.credentials.len()
    }
}

/// Server → client, accepts the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloOk {
    /// Negotiated protocol version, used by both sides from now on.
    pub version: u8,
    /// Ordering mode the server will apply (Ordered may answer an Unordered
    /// request; never the reverse).
    pub mode: OrderingMode,
    /// Largest payload the server accepts (clients must not send more).
    pub max_frame: u32,
    /// Largest number of requests (WRITE + BATCH) the client may have
    /// unanswered on this connection.
    pub max_in_flight: u32,
}

impl HelloOk {
    pub(crate) const PAYLOAD_LEN: usize = 1 + 1 + 4 + 4;
}

/// Result of a processed WRITE or BATCH.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ack {
    /// One code for the whole request: the WRITE, or every write of the
    /// BATCH. Must be a success code (failures of a whole request are NACKs).
    All(ResultCode),
    /// One code per write of a BATCH, in batch order; any codes allowed. The
    /// sender retries the retryable ones and drops the permanent ones.
    PerWrite(Vec<ResultCode>),
}

impl Ack {
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Ack::All(_) => 2,
            Ack::PerWrite(codes) => 1 + 4 + codes.len(),
        }
    }

    /// The result of write `index` of the request (index 0 for a WRITE).
    pub fn result_for(&self, index: usize) -> Option<ResultCode> {
        match self {
            Ack::All(code) => Some(*code),
            Ack::PerWrite(codes) => codes.get(index).copied(),
        }
    }
}

/// The request as a whole failed (nothing in it should be considered applied).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nack {
    /// A non-success code.
    pub code: ResultCode,
    /// Human-readable detail; may be empty.
    pub message: String,
}

impl Nack {
    /// Build a NACK, truncating `message` to the wire limit at a char boundary.
    pub fn new(code: ResultCode, message: impl Into<String>) -> Self {
        Nack {
            code,
            message: truncate_to_limit(message.into()),
        }
    }
}

/// The sender of this frame is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Goodbye {
    /// `Ok` for a normal close; otherwise why. Retryable = reconnect later.
    pub code: ResultCode,
    /// Human-readable detail for the peer's log.
    pub message: String,
}

impl Goodbye {
    /// Build a GOODBYE, truncating `message` to the wire limit at a char
    /// boundary.
    pub fn new(code: ResultCode, message: impl Into<String>) -> Self {
        Goodbye {
            code,
            message: truncate_to_limit(message.into()),
        }
    }
}

fn truncate_to_limit(mut s: String) -> String {
    if s.len() > MAX_SHORT_FIELD {
        let mut cut = MAX_SHORT_FIELD;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The body of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`HelloOk`].
    HelloOk(HelloOk),
    /// One write.
    Write(Write),
    /// Many writes; compressed on the wire when the codec decides to.
    Batch(Vec<Write>),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Goodbye`].
    Goodbye(Goodbye),
    /// Liveness / RTT probe; the peer answers PONG with the same request id.
    Ping,
    /// Answer to PING.
    Pong,
}

impl Message {
    /// The frame type this message is sent as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Hello(_) => FrameType::Hello,
            Message::HelloOk(_) => FrameType::HelloOk,
            Message::Write(_) => FrameType::Write,
            Message::Batch(_) => FrameType::Batch,
            Message::Ack(_) => FrameType::Ack,
            Message::Nack(_) => FrameType::Nack,
            Message::Goodbye(_) => FrameType::Goodbye,
            Message::Ping => FrameType::Ping,
            Message::Pong => FrameType::Pong,
        }
    }

    /// Uncompressed payload length.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Message::Hello(h) => h.payload_len(),
            Message::HelloOk(_) => HelloOk::PAYLOAD_LEN,
            Message::Write(w) => w.record_len(),
            Message::Batch(ws) => batch_payload_len(ws),
            Message::Ack(a) => a.payload_len(),
            Message::Nack(n) => 1 + 2 + n.message.len(),
            Message::Goodbye(g) => 1 + 2 + g.message.len(),
            Message::Ping | Message::Pong => 0,
        }
    }
}

/// One frame: a request id and a message.
///
/// Request ids are chosen by the side that sends a request (WRITE, BATCH,
/// PING) and echoed in its reply (ACK/NACK, PONG). Connection-level frames
/// (HELLO, HELLO_OK, GOODBYE) use 0 unless a GOODBYE points at an offending
/// request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Request id (header offset 8).
    pub request_id: u64,
    /// The message.
    pub body: Message,
}

impl Frame {
    /// Any frame.
    pub fn new(request_id: u64, body: Message) -> Self {
        Frame { request_id, body }
    }

    /// HELLO (request id 0).
    pub fn hello(hello: Hello) -> Self {
        Frame::new(0, Message::Hello(hello))
    }

    /// HELLO_OK (request id 0).
    pub fn hello_ok(hello_ok: HelloOk) -> Self {
        Frame::new(0, Message::HelloOk(hello_ok))
    }

    /// WRITE.
    pub fn write(request_id: u64, write: Write) -> Self {
        Frame::new(request_id, Message::Write(write))
    }

    /// BATCH.
    pub fn batch(request_id: u64, writes: Vec<Write>) -> Self {
        Frame::new(request_id, Message::Batch(writes))
    }

    /// ACK with one success code for the whole request.
    pub fn ack(request_id: u64, code: ResultCode) -> Self {
        Frame::new(request_id, Message::Ack(Ack::All(code)))
    }

    /// ACK with one code per write of a BATCH.
    pub fn ack_per_write(request_id: u64, codes: Vec<ResultCode>) -> Self {
        Frame::new(request_id, Message::Ack(Ack::PerWrite(codes)))
    }

    /// NACK (message truncated to the wire limit).
    pub fn nack(request_id: u64, code: ResultCode, message: impl Into<String>) -> Self {
        Frame::new(request_id, Message::Nack(Nack::new(code, message)))
    }

    /// GOODBYE (request id 0; message truncated to the wire limit).
    pub fn goodbye(code: ResultCode, message: impl Into<String>) -> Self {
        Frame::new(0, Message::Goodbye(Goodbye::new(code, message)))
    }

    /// The GOODBYE to send before closing a connection because of `err`:
    /// code from [`WireError::close_code`], the error's text as message, and
    /// the offending request id when known.
    pub fn goodbye_for(err: &WireError) -> Self {
        Frame::new(
            err.request_id().unwrap_or(0),
            Message::Goodbye(Goodbye::new(err.close_code(), err.to_string())),
        )
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        self.body.frame_type()
    }

    /// Encoded size, header included. Exact for every frame, except that a
    /// BATCH the codec compresses comes out smaller.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.payload_len()
    }
}
