//! [`GatherBuf`]: a connection's outgoing bytes as a queue of pieces for
//! one vectored `write`, so that a record's value goes from where the
//! source holds it straight to the kernel.
//!
//! Why: with one contiguous write buffer every value was copied into it
//! and then again by the kernel into the socket. Profiled on loopback (1 KB
//! records, 64 connections), that first copy (`put_write`'s memcpy into
//! 64 connections' 128 KB buffers, cold in cache) was 14% of the shipper's
//! CPU. Here the encoder writes what it must (headers, fixed fields, keys,
//! small values) into one `BytesMut` as before, and a value of at least
//! [`BY_REF_MIN`] bytes is queued as a reference-counted `Bytes` (a count
//! bumped, nothing copied); `writev` hands the kernel the pieces in order.
//! Small values are still copied: below a few hundred bytes a copy costs
//! less than an I/O vector entry and the reference count.
//!
//! The pieces are a `bytes_utils::SegmentedBuf<Bytes>`; the in-place part
//! is frozen into it (`BytesMut::split().freeze()`, no copy) whenever a
//! value is queued by reference, so the order on the wire is the order of
//! encoding.
use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use bytes_utils::SegmentedBuf;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Values at least this long are queued by reference rather than copied.
pub const BY_REF_MIN: usize = 512;

/// I/O vector entries handed to one `writev` (Linux takes up to 1024):
/// at two pieces per 1 KB record, about 128 KB per call, the size of one
/// contiguous write before.
const IOV_PER_WRITE: usize = 256;

/// Outgoing bytes: frozen pieces ready for the socket, then the part still
/// being encoded in place. See the module doc.
#[derive(Debug)]
pub struct GatherBuf {
    ready: SegmentedBuf<Bytes>,
    tail: BytesMut,
    by_ref_min: usize,
}

impl Default for GatherBuf {
    fn default() -> Self {
        GatherBuf::new()
    }
}

impl GatherBuf {
    /// Queues values of at least [`BY_REF_MIN`] bytes by reference.
    pub fn new() -> Self {
        GatherBuf::with_by_ref_min(BY_REF_MIN)
    }

    /// Copies every value: one contiguous run of bytes, as a plain write
    /// buffer would hold (what a test comparing encodings wants).
    pub fn contiguous() -> Self {
        GatherBuf::with_by_ref_min(usize::MAX)
    }

    fn with_by_ref_min(by_ref_min: usize) -> Self {
        GatherBuf {
            ready: SegmentedBuf::new(),
            tail: BytesMut::with_capacity(8 * 1024),
            by_ref_min,
        }
    }

    /// Whether a value of `len` bytes would be queued by reference.
    pub fn takes_by_ref(&self, len: usize) -> bool {
        len >= self.by_ref_min
    }

    /// The shortest value queued by reference.
    pub fn by_ref_min(&self) -> usize {
        self.by_ref_min
    }

    /// The part encoded in place: whatever is appended here goes on the
    /// wire after everything queued before.
    pub fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Appends `value`: by reference if it is long enough, else copied.
    pub fn put_value(&mut self, value: &Bytes) {
        if self.takes_by_ref(value.len()) {
            if !self.tail.is_empty() {
                self.ready.push(self.tail.split().freeze());
            }
            self.ready.push(value.clone());
        } else {
            self.tail.extend_from_slice(value);
        }
    }

    /// Queues `value` by reference after the tail's first `at` bytes, which
    /// are frozen first: for an encoder that had to write past the value's
    /// place (a checksum in a header before it) before queueing it.
    pub fn insert_by_ref(&mut self, at: usize, value: &Bytes) {
        if at > 0 {
            self.ready.push(self.tail.split_to(at).freeze());
        }
        self.ready.push(value.clone());
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.ready.remaining() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything queued, copied into one buffer (for tests).
    pub fn to_contiguous(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len());
        for piece in self.ready.clone().into_inner() {
            out.extend_from_slice(&piece);
        }
        out.extend_from_slice(&self.tail);
        out
    }

    /// One vectored write of what is queued; returns the bytes written.
    pub fn poll_write_to<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: Pin<&mut W>,
    ) -> Poll<io::Result<usize>> {
        if !self.tail.is_empty() {
            self.ready.push(self.tail.split().freeze());
        }
        if !self.ready.has_remaining() {
            return Poll::Ready(Ok(0));
        }
        let mut iov = [IoSlice::new(&[]); IOV_PER_WRITE];
        let n = self.ready.chunks_vectored(&mut iov);
        let written = std::task::ready!(io.poll_write_vectored(cx, &iov[..n]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.ready.advance(written);
        Poll::Ready(Ok(written))
    }

    /// Writes everything queued to `io` and flushes it.
    pub async fn write_all_to<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut W,
    ) -> io::Result<()> {
        while !self.is_empty() {
            std::future::poll_fn(|cx| self.poll_write_to(cx, Pin::new(&mut *io))).await?;
        }
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_queued_by_reference_and_short_ones_copied() {
        let mut buf = GatherBuf::new();
        let long = Bytes::from(vec![7u8; BY_REF_MIN]);
        buf.tail_mut().extend_from_slice(b"head");
        buf.put_value(&long);
        buf.tail_mut().extend_from_slice(b"mid");
        buf.put_value(&Bytes::from_static(b"short"));
        // head, the long value itself, then "midshort" still in place.
        let pieces = buf.ready.clone().into_inner();
        assert_eq!(pieces.len(), 2);
        assert_eq!(&pieces[0][..], b"head");
        assert_eq!(pieces[1].as_ptr(), long.as_ptr(), "the value was copied");
        assert_eq!(&buf.tail[..], b"midshort");
        assert_eq!(buf.len(), 4 + BY_REF_MIN + 8);
    }

    #[test]
    fn contiguous_copies_every_value() {
        let mut buf = GatherBuf::contiguous();
        buf.put_value(&Bytes::from(vec![1u8; 64 * 1024]));
        assert_eq!(buf.ready.segments(), 0);
        assert_eq!(buf.tail.len(), 64 * 1024);
    }

    #[tokio::test]
    async fn writes_every_piece_in_order_through_short_writes() {
        // A duplex pipe of 1 KB forces many partial vectored writes.
        let (mut near, mut far) = tokio::io::duplex(1024);
        let mut buf = GatherBuf::new();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let header = i.to_le_bytes();
            buf.tail_mut().extend_from_slice(&header);
            expected.extend_from_slice(&header);
            let value = Bytes::from(vec![i as u8; 300 + (i as usize * 7) % 900]);
            buf.put_value(&value);
            expected.extend_from_slice(&value);
        }
        let total = expected.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
                .await
                .unwrap();
            got
        });
        buf.write_all_to(&mut near).await.unwrap();
        assert!(buf.is_empty());
        assert_eq!(reader.await.unwrap(), expected);
    }
}
