//! Request encoding, apart from the writer's flow control: the one place
//! that knows how records become bytes on the wire for this destination
//! protocol (answers are read in [`super::reader`]).
use bytes::BytesMut;

use tokio_util::codec::Encoder;

use crate::{
    ship::{source::SourceRecord, ShipError},
    wire::{Frame, Message, WireCodec},
};

/// Encodes one request (a WRITE for one record, a BATCH for more) straight
/// from the records into the writer's buffer, nothing cloned; returns its
/// uncompressed size (what the in-flight and acked byte counters have
/// always counted, compressed or not). The encoder is the session's own (its compression
/// settings and zstd context), the buffer the writer's, so `flush` sends it.
pub(super) fn encode_request(
    dst: &mut BytesMut,
    encoder: &mut WireCodec,
    id: u64,
    batch: &[SourceRecord],
) -> Result<usize, ShipError> {
    match batch {
        [one] => encoder
            .encode_write(id, &one.write, dst)
            .map_err(ShipError::Wire),
        many => {
            encoder
                .encode_batch(id, many.iter().map(|r| &r.write), dst)
                .map_err(ShipError::Wire)?;
            Ok(crate::wire::HEADER_LEN
                + BATCH_COUNT_LEN
                + many.iter().map(|r| r.write.record_len()).sum::<usize>())
        }
    }
}

/// Encodes a PING (request `id`) into the writer's buffer: what an idle
/// connection sends so the receiver's idle timeout does not close it. The
/// PONG is read and dropped by [`super::reader`]; nothing waits for it.
pub(super) fn encode_ping(
    dst: &mut BytesMut,
    encoder: &mut WireCodec,
    id: u64,
) -> Result<(), ShipError> {
    encoder
        .encode(Frame::new(id, Message::Ping), dst)
        .map_err(ShipError::Wire)
}

/// The record count that opens a BATCH payload (protocol §5.4).
const BATCH_COUNT_LEN: usize = 4;
