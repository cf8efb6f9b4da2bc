//! Request encoding, apart from the writer's flow control: the seam where
//! a destination protocol says how records become bytes on the wire
//! ([`RequestCodec`]): the native protocol here, Redis commands in
//! `ship::redis::codec` (answers are read in [`super::reader`] and
//! [`super::redis`]).
use bytes::BytesMut;
use tokio_util::codec::Encoder;

use crate::{
    ship::{source::SourceRecord, ShipError},
    wire::{Frame, GatherBuf, Message, WireCodec, WireError},
};

/// How a destination protocol encodes requests: what the writer needs,
/// whatever the destination. `Encoder<Frame>` carries the session's
/// control frames (a goodbye), which a protocol may encode as nothing.
pub(crate) trait RequestCodec: Encoder<Frame, Error = WireError> + Clone + Send {
    /// Encodes request `id` (every record of `batch`) into `dst`, the
    /// writer's buffer (a protocol that can hand values to `writev` by
    /// reference does, see [`GatherBuf`]); returns the bytes the request
    /// counts for in flight.
    fn encode_request(
        &mut self,
        dst: &mut GatherBuf,
        id: u64,
        batch: &[SourceRecord],
    ) -> Result<usize, ShipError>;

    /// Encodes a keep-alive (request `id`) into `dst`: what an idle
    /// connection sends so the destination's idle timeout does not close it;
    /// `Ok(false)`: this protocol sends none. The default is none, and the
    /// Redis codec keeps it: a Redis server's `timeout` is 0 (off) unless
    /// configured, and its `+PONG` would need settling by the Redis reader.
    fn encode_ping(&mut self, _dst: &mut BytesMut, _id: u64) -> Result<bool, ShipError> {
        Ok(false)
    }
}

impl RequestCodec for WireCodec {
    /// Values of at least [`crate::wire::gather::BY_REF_MIN`] bytes go
    /// by reference (unless the batch is compressed).
    fn encode_request(
        &mut self,
        dst: &mut GatherBuf,
        id: u64,
        batch: &[SourceRecord],
    ) -> Result<usize, ShipError> {
        encode_request(dst, self, id, batch)
    }

    /// A PING frame; the receiver's PONG is read and dropped by
    /// [`super::reader`], nothing waits for it.
    fn encode_ping(&mut self, dst: &mut BytesMut, id: u64) -> Result<bool, ShipError> {
        self.encode(Frame::new(id, Message::Ping), dst)
            .map_err(ShipError::Wire)?;
        Ok(true)
    }
}

/// Encodes one request (a WRITE for one record, a BATCH for more) straight
/// from the records into the writer's buffer, nothing cloned; returns its
/// uncompressed size (what the in-flight and acked byte counters have
/// always counted, compressed or not). The encoder is the session's own (its compression
/// settings and zstd context), the buffer the writer's, so `flush` sends it.
fn encode_request(
    dst: &mut GatherBuf,
    encoder: &mut WireCodec,
    id: u64,
    batch: &[SourceRecord],
) -> Result<usize, ShipError> {
    match batch {
        [one] => encoder
            .encode_write_gather(id, &one.write, dst)
            .map_err(ShipError::Wire),
        many => {
            encoder
                .encode_batch_gather(id, many.iter().map(|r| &r.write), dst)
                .map_err(ShipError::Wire)?;
            Ok(crate::wire::HEADER_LEN
                + BATCH_COUNT_LEN
                + many.iter().map(|r| r.write.record_len()).sum::<usize>())
        }
    }
}

/// The record count that opens a BATCH payload (protocol §5.4).
const BATCH_COUNT_LEN: usize = 4;
