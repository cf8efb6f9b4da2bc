//! One connection: the HELLO handshake, then requests read, applied
//! (in order, or each on its own task) and answered, within the limits.
use std::{
    net::SocketAddr,
    os::fd::RawFd,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::{
    stream::{FuturesOrdered, FuturesUnordered},
    FutureExt, SinkExt, Stream, StreamExt,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

use super::{
    close::{close_with, Closed, Reader, Writer},
    Applied, ServerConfig, ServerStats, Sink,
};
use crate::net::lowat::RcvLowat;
use crate::wire::{
    Ack, Frame, Hello, HelloOk, Message, OrderingMode, ResultCode, WireCodec, WireError, Write,
};

/// The next frame from `reader`; each time the read has to wait, the
/// socket's low-water mark (`lowat`, when there is one) is set to what the
/// frame in hand still needs. Why here and not only where the session loop
/// starts over: the loop sets it from the buffer it finds, and a buffer
/// found empty asks for a header's worth. The frame's first segment then
/// wakes the reader, and the mark stayed at a header while the read waited,
/// so every later segment of the frame woke it again (seen on the seed's
/// lab link: ~8 reads per 50 KB frame, 14,000 `recvfrom` a second). Raising
/// the mark after the read found the socket empty loses no wake-up: setting
/// it signals `EPOLLIN` at once when enough is already queued
/// ([`crate::net::lowat`]).
fn next_frame<'a, S: AsyncRead>(
    reader: &'a mut Reader<S>,
    lowat: &'a mut Option<RcvLowat>,
) -> impl std::future::Future<Output = Option<Result<Frame, WireError>>> + 'a {
    std::future::poll_fn(move |cx| {
        let polled = reader.poll_next_unpin(cx);
        if polled.is_pending() {
            if let Some(lowat) = lowat.as_mut() {
                lowat.want(WireCodec::still_needed(reader.read_buffer()));
            }
        }
        polled
    })
}

/// Serves one connection over any byte stream (plain TCP, TLS, ...): the
/// handshake, then requests until the peer is done, a frame is bad, a limit
/// is broken, or shutdown. `Err` carries the reason it was closed early;
/// the peer has been told with a GOODBYE. `tcp_fd`, the plain TCP socket
/// under `stream` when there is one, gets its low-water mark set from each
/// partial frame ([`crate::net::lowat`]); it must stay open while this runs.
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &ServerConfig,
    stats: &ServerStats,
    shutdown: CancellationToken,
    tcp_fd: Option<RawFd>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, WireCodec::new().with_max_frame(cfg.max_frame));
    let mut writer = FramedWrite::new(wr, WireCodec::new().with_max_frame(cfg.max_frame));
    let session = Session {
        peer,
        store,
        cfg,
        stats,
        shutdown,
        tcp_fd,
    };
    let outcome = session.run(&mut reader, &mut writer).await;
    match outcome {
        Ok(()) => Ok(()),
        Err(Closed { reason, goodbye }) => {
            if let Some(goodbye) = goodbye {
                close_with(&mut reader, &mut writer, goodbye).await;
            }
            Err(reason)
        }
    }
}

/// One connection's context, shared by its handshake and its request loop
/// (after mini-redis' `Handler`): who the peer is, where its writes go, the
/// limits it is held to, the counters it adds to and the shutdown it
/// watches.
struct Session<'a> {
    peer: SocketAddr,
    store: Arc<dyn Sink>,
    cfg: &'a ServerConfig,
    stats: &'a ServerStats,
    shutdown: CancellationToken,
    tcp_fd: Option<RawFd>,
}

impl Session<'_> {
    /// The handshake, then requests until the peer is done.
    async fn run<S: AsyncRead + AsyncWrite>(
        &self,
        reader: &mut Reader<S>,
        writer: &mut Writer<S>,
    ) -> Result<(), Closed> {
        let Some(hello) = self.read_hello(reader).await? else {
            return Ok(());
        };
        let version = self.admit_hello(&hello)?;
        writer
            .send(Frame::hello_ok(HelloOk {
                version,
                mode: hello.mode,
                max_frame: self.cfg.max_frame as u32,
                max_in_flight: self.cfg.max_in_flight,
            }))
            .await
            .map_err(Closed::transport)?;
        tracing::debug!(
            "{}: session: {:?} mode, source {}, client `{}`",
            self.peer,
            hello.mode,
            hello.source_id,
            hello.client_name
        );
        match hello.mode {
            OrderingMode::Ordered => {
                let pending = FuturesOrdered::new();
                self.pump(reader, writer, pending, false).await
            }
            OrderingMode::Unordered => {
                let pending = FuturesUnordered::new();
                self.pump(reader, writer, pending, true).await
            }
        }
    }

    /// The peer's HELLO, within the handshake timeout (`None`: it closed
    /// without one).
    async fn read_hello<S: AsyncRead + AsyncWrite>(
        &self,
        reader: &mut Reader<S>,
    ) -> Result<Option<Hello>, Closed> {
        match tokio::time::timeout(self.cfg.handshake_timeout, reader.next()).await {
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(Closed::with(
                    ResultCode::Timeout,
                    format!(
                        "no HELLO in time: none within {:?}",
                        self.cfg.handshake_timeout
                    ),
                ))
            }
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(Closed::wire(self.stats, &e)),
            Ok(Some(Ok(Frame {
                body: Message::Hello(h),
                ..
            }))) => Ok(Some(h)),
            Ok(Some(Ok(other))) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Closed::with(
                    ResultCode::ProtocolViolation,
                    format!("expected HELLO, got {}", other.frame_type()),
                ))
            }
        }
    }

    /// Checks the HELLO: a version both speak, and the pre-shared token if
    /// this receiver wants one; returns the version.
    fn admit_hello(&self, hello: &Hello) -> Result<u8, Closed> {
        let Some(version) = hello.negotiate_version() else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Closed::with(
                ResultCode::Unsupported,
                format!(
                    "client speaks versions {}..={}, this server {}",
                    hello.min_version,
                    hello.max_version,
                    crate::wire::PROTOCOL_VERSION
                ),
            ));
        };
        if let Some(token) = &self.cfg.token {
            if !token.verify(&hello.credentials) {
                self.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
                let why = if hello.credentials.is_empty() {
                    "HELLO carries no credentials; this receiver requires its pre-shared token \
                     (give the shipper --token-file)"
                } else {
                    "HELLO credentials rejected: not this receiver's pre-shared token (--token-file)"
                };
                return Err(Closed::with(ResultCode::AuthFailed, why.to_owned()));
            }
        }
        Ok(version)
    }

    /// Reads requests and writes answers until the peer is done, a frame
    /// is bad, a limit is broken, or shutdown.
    async fn pump<S: AsyncRead + AsyncWrite>(
        &self,
        reader: &mut Reader<S>,
        writer: &mut Writer<S>,
        mut pending: impl Pending<ApplyFuture>,
        parallel: bool,
    ) -> Result<(), Closed> {
        let max_in_flight = self.cfg.max_in_flight as usize;
        // Past the limit requests are answered Busy; past twice the limit the
        // server stops reading, so even a peer that ignores every NACK cannot
        // make it hold more.
        let read_cap = max_in_flight.saturating_mul(2).max(1);
        let idle = tokio::time::sleep(self.cfg.idle_timeout);
        tokio::pin!(idle);
        let mut reading = true;
        let mut shutting_down = false;
        let mut lowat = self.tcp_fd.map(RcvLowat::new);
        loop {
            if let Some(lowat) = &mut lowat {
                // Woken when the frame in hand is whole, not per segment.
                lowat.want(WireCodec::still_needed(reader.read_buffer()));
            }
            if !reading && pending.in_flight() == 0 {
                if shutting_down {
                    return Err(Closed::with(
                        ResultCode::ShuttingDown,
                        "the receiver is shutting down; reconnect later".to_owned(),
                    ));
                }
                return Ok(());
            }
            tokio::select! {
                frame = next_frame(reader, &mut lowat), if reading && pending.in_flight() < read_cap => {
                    idle.as_mut().reset(Instant::now() + self.cfg.idle_timeout);
                    reading = self.admit(frame, writer, &mut pending, parallel).await?;
                    // Take every request already read before answering, so
                    // that their answers leave in one write.
                    for _ in 1..REQUESTS_PER_ROUND {
                        if !reading || pending.in_flight() >= read_cap {
                            break;
                        }
                        let Some(frame) = reader.next().now_or_never() else { break };
                        reading = self.admit(frame, writer, &mut pending, parallel).await?;
                    }
                }
                Some((answer, writes)) = pending.next(), if pending.in_flight() > 0 => {
                    count(self.stats, &answer, writes);
                    writer.feed(answer).await.map_err(Closed::transport)?;
                    // Batch the answers that are already done into one write.
                    while let Some(Some((answer, writes))) = pending.next().now_or_never() {
                        count(self.stats, &answer, writes);
                        writer.feed(answer).await.map_err(Closed::transport)?;
                    }
                    SinkExt::<Frame>::flush(writer).await.map_err(Closed::transport)?;
                    idle.as_mut().reset(Instant::now() + self.cfg.idle_timeout);
                }
                _ = &mut idle, if reading && pending.in_flight() == 0 => {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    // Bytes below the low-water mark are still the kernel's.
                    let partial = reader.read_buffer().len()
                        + lowat.as_ref().map_or(0, RcvLowat::queued);
                    let reason = if partial > 0 {
                        format!(
                            "idle for {:?} with an unfinished frame ({partial} bytes of it received)",
                            self.cfg.idle_timeout
                        )
                    } else {
                        format!("idle for {:?}: no request received", self.cfg.idle_timeout)
                    };
                    return Err(Closed::with(ResultCode::Timeout, reason));
                }
                _ = self.shutdown.cancelled(), if reading => {
                    // Stop taking requests; answer those in hand, then close.
                    reading = false;
                    shutting_down = true;
                }
            }
        }
    }

    /// Takes one frame read from the peer: a request goes into `pending`
    /// (answered Busy past `max_in_flight`, protocol §6.4), a PING is
    /// answered, a GOODBYE or the end of input ends reading (`Ok(false)`).
    async fn admit<S: AsyncRead + AsyncWrite>(
        &self,
        frame: Option<Result<Frame, WireError>>,
        writer: &mut Writer<S>,
        pending: &mut impl Pending<ApplyFuture>,
        parallel: bool,
    ) -> Result<bool, Closed> {
        let frame = match frame {
            None => return Ok(false),
            Some(Err(e)) => return Err(Closed::wire(self.stats, &e)),
            Some(Ok(f)) => f,
        };
        let id = frame.request_id;
        let writes = match frame.body {
            Message::Write(w) => vec![w],
            Message::Batch(ws) => ws,
            Message::Ping => {
                writer
                    .send(Frame::new(id, Message::Pong))
                    .await
                    .map_err(Closed::transport)?;
                return Ok(true);
            }
            Message::Pong => return Ok(true),
            Message::Goodbye(_) => return Ok(false),
            other => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Closed::with(
                    ResultCode::ProtocolViolation,
                    format!("unexpected {} after the handshake", other.frame_type()),
                ));
            }
        };
        let max_in_flight = self.cfg.max_in_flight as usize;
        if pending.in_flight() >= max_in_flight {
            self.stats.over_in_flight.fetch_add(1, Ordering::Relaxed);
            let n = writes.len();
            let why = format!(
                "more than max_in_flight = {max_in_flight} requests unanswered; \
                 wait for answers before sending more"
            );
            pending.add(Box::pin(std::future::ready((
                Frame::nack(id, ResultCode::Busy, why),
                n,
            ))));
            return Ok(true);
        }
        let fut = apply(self.store.clone(), id, writes, self.cfg.apply_delay);
        if parallel {
            let handle = tokio::spawn(fut);
            pending.add(Box::pin(async move {
                handle.await.unwrap_or_else(|e| {
                    let why = format!("apply task failed: {e}");
                    (Frame::nack(id, ResultCode::Unavailable, why), 0)
                })
            }));
        } else {
            pending.add(fut);
        }
        Ok(true)
    }
}

/// Most requests taken from what is already read before answering: bounds
/// how long answers wait while a fast peer keeps the read buffer full.
const REQUESTS_PER_ROUND: usize = 64;

/// Answers a request with a future: pushed in order (ordered) or as a set.
trait Pending<F>: Stream<Item = Answer> + Unpin {
    fn add(&mut self, f: F);
    fn in_flight(&self) -> usize;
}

impl<F: std::future::Future<Output = Answer>> Pending<F> for FuturesOrdered<F> {
    fn add(&mut self, f: F) {
        self.push_back(f);
    }
    fn in_flight(&self) -> usize {
        self.len()
    }
}

impl<F: std::future::Future<Output = Answer>> Pending<F> for FuturesUnordered<F> {
    fn add(&mut self, f: F) {
        self.push(f);
    }
    fn in_flight(&self) -> usize {
        self.len()
    }
}

/// The answer to a request, and how many writes the request carried.
type Answer = (Frame, usize);

type ApplyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

fn count(stats: &ServerStats, answer: &Frame, writes: usize) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let writes = writes as u64;
    match &answer.body {
        Message::Ack(Ack::All(ResultCode::LostConflict)) => {
            stats.lost_conflict.fetch_add(writes, Ordering::Relaxed);
        }
        Message::Ack(Ack::All(_)) => {
            stats.applied.fetch_add(writes, Ordering::Relaxed);
        }
        Message::Ack(Ack::PerWrite(codes)) => {
            for c in codes {
                match c {
                    ResultCode::Ok => stats.applied.fetch_add(1, Ordering::Relaxed),
                    ResultCode::LostConflict => stats.lost_conflict.fetch_add(1, Ordering::Relaxed),
                    _ => stats.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        _ => {
            stats.failed.fetch_add(writes, Ordering::Relaxed);
        }
    }
}

/// Applies one request and builds its answer.
fn apply(
    store: Arc<dyn Sink>,
    id: u64,
    writes: Vec<Write>,
    delay: Option<Duration>,
) -> ApplyFuture {
    Box::pin(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let n = writes.len();
        let frame = match store.apply(writes).await {
            Applied::PerWrite(codes) => {
                let uniform = codes
                    .first()
                    .copied()
                    .filter(|c| codes.iter().all(|x| x == c));
                match uniform {
                    Some(code) if codes.len() == n => Frame::ack(id, code),
                    None if n == 0 => Frame::ack(id, ResultCode::Ok),
                    _ => Frame::ack_per_write(id, codes),
                }
            }
            Applied::Refused(code, why) => Frame::nack(id, code, why),
        };
        (frame, n)
    })
}

#[cfg(test)]
mod tests {
    use std::{os::fd::AsRawFd, time::Duration};

    use bytes::{Bytes, BytesMut};
    use tokio::{
        io::{AsyncWriteExt, WriteHalf},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::net::lowat::MAX_LOWAT;

    /// A BATCH of `records` records of 1 KB, encoded as the shipper sends it.
    fn batch_bytes(records: u64) -> (Frame, Bytes) {
        let writes = (0..records)
            .map(|i| {
                Write::put(
                    Bytes::from(format!("k{i}")),
                    Bytes::from(vec![7u8; 1000]),
                    i + 1,
                    9,
                )
            })
            .collect();
        let frame = Frame::batch(42, writes);
        let mut dst = BytesMut::new();
        WireCodec::new()
            .without_compression()
            .encode_frame(&frame, &mut dst)
            .unwrap();
        (frame, dst.freeze())
    }

    /// A loopback connection: the sending end, and the receiving end as the
    /// session reads it, with its low-water mark tracked.
    struct Receiving {
        tx: TcpStream,
        reader: Reader<TcpStream>,
        _wr: WriteHalf<TcpStream>,
        lowat: Option<RcvLowat>,
    }

    impl Receiving {
        async fn new() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tx = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (rx, _) = listener.accept().await.unwrap();
            let lowat = Some(RcvLowat::new(rx.as_raw_fd()));
            let (rd, wr) = tokio::io::split(rx);
            Receiving {
                tx,
                reader: FramedRead::new(rd, WireCodec::new()),
                _wr: wr,
                lowat,
            }
        }

        /// `next_frame` given `wait`: `None` if it was still waiting then.
        async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
            let polled =
                tokio::time::timeout(wait, next_frame(&mut self.reader, &mut self.lowat)).await;
            polled
                .ok()
                .map(|f| f.expect("a frame, not the end of input").unwrap())
        }

        fn mark(&self) -> usize {
            self.lowat.as_ref().unwrap().current()
        }
    }

    #[tokio::test]
    async fn a_read_that_waits_on_a_partial_frame_raises_the_mark_to_the_rest_of_it() {
        let mut r = Receiving::new().await;
        let (frame, bytes) = batch_bytes(8);
        let cut = 3000;

        // The read starts waiting before any byte is there, as between frames.
        assert_eq!(r.next_within(Duration::from_millis(100)).await, None);
        r.tx.write_all(&bytes[..cut]).await.unwrap();
        assert_eq!(r.next_within(Duration::from_millis(300)).await, None);
        assert_eq!(r.reader.read_buffer().len(), cut);
        assert_eq!(r.mark(), bytes.len() - cut);

        r.tx.write_all(&bytes[cut..]).await.unwrap();
        let got = r.next_within(Duration::from_secs(2)).await;
        assert_eq!(got, Some(frame), "the whole frame woke the reader");
    }

    #[tokio::test]
    async fn the_mark_a_waiting_read_sets_is_at_most_the_cap() {
        let mut r = Receiving::new().await;
        let (_, bytes) = batch_bytes(64);
        r.tx.write_all(&bytes[..100]).await.unwrap();
        assert_eq!(r.next_within(Duration::from_millis(300)).await, None);
        assert!(bytes.len() - 100 > MAX_LOWAT);
        assert_eq!(r.mark(), MAX_LOWAT);
    }
}
