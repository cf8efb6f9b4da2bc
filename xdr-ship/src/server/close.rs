//! Closing a connection early: the reason, the GOODBYE that tells the
//! peer, and the lingering close that keeps the kernel from answering
//! unread input with an RST that would destroy the GOODBYE.
use std::{sync::atomic::Ordering, time::Duration};

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::ServerStats;
use crate::wire::{Frame, ResultCode, WireCodec, WireError};

pub(super) type Reader<S> = FramedRead<ReadHalf<S>, WireCodec>;
pub(super) type Writer<S> = FramedWrite<WriteHalf<S>, WireCodec>;

/// Why a connection was closed early: the reason for the log, and the
/// GOODBYE that tells the peer (none when the transport itself failed).
pub(super) struct Closed {
    pub reason: String,
    pub goodbye: Option<Frame>,
}

impl Closed {
    pub fn with(code: ResultCode, reason: String) -> Self {
        Closed {
            goodbye: Some(Frame::goodbye(code, reason.clone())),
            reason,
        }
    }

    pub fn transport(e: impl std::fmt::Display) -> Self {
        Closed {
            reason: e.to_string(),
            goodbye: None,
        }
    }

    pub fn wire(stats: &ServerStats, e: &WireError) -> Self {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        Closed {
            reason: e.to_string(),
            goodbye: Some(Frame::goodbye_for(e)),
        }
    }
}

/// Sends `goodbye`, shuts the write side, and reads (and drops) what the
/// peer still sends for a moment, so that the kernel does not answer unread
/// input with an RST that could destroy the GOODBYE in flight.
pub(super) async fn close_with<S: AsyncRead + AsyncWrite>(
    reader: &mut Reader<S>,
    writer: &mut Writer<S>,
    goodbye: Frame,
) {
    let sent = tokio::time::timeout(Duration::from_secs(1), writer.send(goodbye)).await;
    if matches!(sent, Ok(Ok(()))) {
        linger(reader, writer).await;
    }
}

/// Shuts the write side and drops what the peer still sends, for at most
/// a second and a MiB.
pub(super) async fn linger<S: AsyncRead + AsyncWrite>(
    reader: &mut Reader<S>,
    writer: &mut Writer<S>,
) {
    let linger = async {
        let _ = writer.get_mut().shutdown().await;
        let rd = reader.get_mut();
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}
