//! The writing half of a session: takes a permit per record, gathers
//! records into requests, encodes them ([`super::request`]) and keeps each
//! in the table of requests in flight until the reader settles it.
use std::{sync::atomic::Ordering, time::Instant};

use tokio_util::sync::CancellationToken;

use super::{lock, request::RequestCodec, ConnConfig, ConnState, Pending, Wr};
use crate::{
    ship::{handover::Receiver, source::SourceRecord, ShipError},
    wire::{Frame, GatherBuf, ResultCode, WireError},
};

/// A session's writing half: the socket, the bytes queued for it (a
/// [`GatherBuf`]: long values go to `writev` by reference, not copied),
/// and the protocol's codec.
pub(super) struct SessionWriter<C> {
    io: Wr,
    buf: GatherBuf,
    codec: C,
}

impl<C: RequestCodec> SessionWriter<C> {
    pub(super) fn new(io: Wr, codec: C) -> Self {
        SessionWriter {
            io,
            buf: GatherBuf::new(),
            codec,
        }
    }

    /// Writes out everything queued.
    async fn flush(&mut self) -> Result<(), ShipError> {
        self.buf
            .write_all_to(&mut self.io)
            .await
            .map_err(|e| ShipError::Wire(WireError::Io(e)))
    }

    /// Encodes a control frame and writes it out with everything queued.
    async fn send(&mut self, frame: Frame) -> Result<(), ShipError> {
        self.codec.encode(frame, self.buf.tail_mut())?;
        self.flush().await
    }
}

/// Returns `Ok(true)` once the source is exhausted and every record has
/// been answered, `Ok(false)` when cancelled.
pub(super) async fn write_loop<C: RequestCodec>(
    writer: &mut SessionWriter<C>,
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &Receiver<SourceRecord>,
    cancel: &CancellationToken,
) -> Result<bool, ShipError> {
    let mut next_id: u64 = 1;
    let mut batch: Vec<SourceRecord> = Vec::with_capacity(cfg.ship.batch_max_records);
    let mut last_window_check = Instant::now();
    loop {
        if !wait_retry_pause(writer, state, cancel).await? {
            return Ok(false);
        }
        // One permit per record, taken before the record: a full window
        // leaves records in the queue (and the source) rather than here.
        // Only a failed `try_acquire` waits, and it flushes first: checking
        // `available_permits()` and then waiting raced with the controller,
        // which withdraws free permits when the window shrinks. The writer
        // then waited with requests still in its buffer, no answer could
        // return a permit, and the connection stalled for good (seen in
        // `faults::five_percent_loss_in_the_lab_loses_nothing`: 18 records
        // in flight, nothing unsent or unacknowledged in TCP).
        let permit = match state.permits.try_acquire() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ShipError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                writer.flush().await?;
                note_window_full(state, cfg, &mut last_window_check);
                tokio::select! {
                    p = state.permits.acquire() => p.map_err(|_| ShipError::Closed)?,
                    _ = cancel.cancelled() => return Ok(false),
                }
            }
        };
        let (first, fresh) = match first_record(writer, state, cfg, queue, cancel, permit).await? {
            First::Record(r, fresh) => (r, fresh),
            First::Again => continue,
            First::Idle => {
                if writer.codec.encode_ping(writer.buf.tail_mut(), next_id)? {
                    next_id += 1;
                    writer.flush().await?;
                }
                continue;
            }
            First::Done(drained) => return Ok(drained),
        };
        let mut fresh_count = u64::from(fresh);
        batch.push(first);
        fresh_count += fill_batch(state, cfg, queue, &mut batch, &mut last_window_check);
        let id = next_id;
        next_id += 1;
        let records = std::mem::replace(&mut batch, Vec::with_capacity(cfg.ship.batch_max_records));
        send_request(writer, state, id, records, fresh_count)?;
        if writer.buf.len() >= WRITE_COALESCE_BYTES {
            writer.flush().await?;
        }
    }
}

/// The destination answered "retry": wait out the backoff before sending
/// anything (resends first, then new records). `Ok(false)`: cancelled.
async fn wait_retry_pause<C: RequestCodec>(
    writer: &mut SessionWriter<C>,
    state: &ConnState,
    cancel: &CancellationToken,
) -> Result<bool, ShipError> {
    let pause = lock(&state.retry_pause).until.take();
    if let Some(until) = pause.filter(|u| *u > Instant::now()) {
        writer.flush().await?;
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = cancel.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}

/// What the writer does after taking a permit.
enum First {
    /// Send this record first (`true`: fresh from the queue, not a resend).
    Record(SourceRecord, bool),
    /// Woken without a record (a resend was queued): start over.
    Again,
    /// Nothing to send for the ping interval: send a PING, start over.
    Idle,
    /// The session is over: `true` drained, `false` cancelled.
    Done(bool),
}

/// The first record of the next request: a resend, else the queue's next;
/// with nothing ready, flushes and waits (a PING is due after
/// `ping_interval` of waiting: [`First::Idle`]). Holds `permit` for the record
/// (forgotten once it has one, given back otherwise).
async fn first_record<C: RequestCodec>(
    writer: &mut SessionWriter<C>,
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &Receiver<SourceRecord>,
    cancel: &CancellationToken,
    permit: tokio::sync::SemaphorePermit<'_>,
) -> Result<First, ShipError> {
    let first = lock(&state.resend).pop_front();
    let ping_interval = cfg.ship.ping_interval;
    let (first, fresh) = match first {
        Some(r) => (r, false),
        None => match queue.try_recv() {
            Ok(r) => (r, true),
            Err(_) => {
                // Nothing ready: push out what is buffered, then wait.
                writer.flush().await?;
                tokio::select! {
                    r = queue.recv() => match r {
                        Ok(r) => (r, true),
                        Err(_) => {
                            drop(permit);
                            return source_closed(writer, state, cancel).await;
                        }
                    },
                    _ = state.wake_writer.notified() => { drop(permit); return Ok(First::Again); }
                    _ = tokio::time::sleep(ping_interval), if !ping_interval.is_zero() => {
                        drop(permit);
                        return Ok(First::Idle);
                    }
                    _ = cancel.cancelled() => return Ok(First::Done(false)),
                }
            }
        },
    };
    permit.forget();
    Ok(First::Record(first, fresh))
}

/// The queue is closed: once every request is answered, say goodbye and
/// end the session; start over if something needs re-sending.
async fn source_closed<C: RequestCodec>(
    writer: &mut SessionWriter<C>,
    state: &ConnState,
    cancel: &CancellationToken,
) -> Result<First, ShipError> {
    if !wait_drained(state, cancel).await? {
        return Ok(First::Again);
    }
    if cancel.is_cancelled() {
        return Ok(First::Done(false));
    }
    // Everything answered: say goodbye politely.
    let _ = writer
        .send(Frame::goodbye(ResultCode::Ok, "source drained"))
        .await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer.io).await;
    Ok(First::Done(true))
}

/// Adds the records that are ready at once (resends first) to `batch`,
/// one permit each, up to the batch limits; returns how many were fresh.
/// Fresh records are taken in one go, as many as the window has permits
/// for (see `handover`): the rest stay queued for the other connections.
fn fill_batch(
    state: &ConnState,
    cfg: &ConnConfig,
    queue: &Receiver<SourceRecord>,
    batch: &mut Vec<SourceRecord>,
    last_window_check: &mut Instant,
) -> u64 {
    let max = cfg.ship.batch_max_records;
    let limit = cfg.batch_max_bytes;
    let mut bytes: usize = batch.iter().map(|r| r.write.frame_len()).sum();
    // Resends (after a reconnect, or a "retry" answer) one at a time.
    while batch.len() < max && bytes < limit && state.has_resend() {
        let Ok(p) = state.permits.try_acquire() else {
            note_window_full(state, cfg, last_window_check);
            return 0;
        };
        let Some(r) = lock(&state.resend).pop_front() else {
            break;
        };
        p.forget();
        bytes += r.write.frame_len();
        batch.push(r);
    }
    if batch.len() >= max || bytes >= limit {
        return 0;
    }
    let room = max - batch.len();
    let avail = state.permits.available_permits().min(room);
    if avail == 0 {
        note_window_full(state, cfg, last_window_check);
        return 0;
    }
    // The controller may withdraw free permits meanwhile: then the batch
    // goes as it is, and the next one tries again.
    let Ok(mut permits) = state.permits.try_acquire_many(avail as u32) else {
        return 0;
    };
    let took = queue.try_recv_while(batch, avail, |r| {
        let fits = bytes < limit;
        if fits {
            bytes += r.write.frame_len();
        }
        fits
    });
    // The records' permits stay taken; the rest go back with `permits`.
    if let Some(used) = permits.split(took) {
        used.forget();
    }
    if took == avail && avail < room && bytes < limit {
        // The window, not the queue or the batch limits, ended the batch.
        note_window_full(state, cfg, last_window_check);
    }
    took as u64
}

/// Encodes request `id` into the writer's buffer and enters it in the
/// table of requests in flight.
fn send_request<C: RequestCodec>(
    writer: &mut SessionWriter<C>,
    state: &ConnState,
    id: u64,
    records: Vec<SourceRecord>,
    fresh_count: u64,
) -> Result<(), ShipError> {
    let n = records.len() as u64;
    let frame_bytes = writer.codec.encode_request(&mut writer.buf, id, &records)? as u64;
    lock(&state.table).insert(
        id,
        Pending {
            records,
            bytes: frame_bytes,
            sent_at: Instant::now(),
        },
    );
    state.inflight.fetch_add(n, Ordering::Relaxed);
    state
        .inflight_bytes
        .fetch_add(frame_bytes, Ordering::Relaxed);
    lock(&state.counters).shipped += fresh_count;
    Ok(())
}

/// Bytes of requests gathered before one `write`, while more records are
/// ready at once: iperf3's default write size. Nothing waits in this
/// buffer: every path that would wait (window full, source empty, retry
/// pause) flushes first.
const WRITE_COALESCE_BYTES: usize = 128 * 1024;

/// The window is full: note whether it is what limits this connection
/// (`window::socket_drained` decides). Checked at most every 10 ms (one
/// `getsockopt`).
fn note_window_full(state: &ConnState, cfg: &ConnConfig, last_check: &mut Instant) {
    if last_check.elapsed() < crate::ship::window::WINDOW_FULL_CHECK_EVERY {
        return;
    }
    *last_check = Instant::now();
    let info = crate::net::tcp_info_if_cookie(
        state.fd.load(Ordering::Relaxed),
        state.cookie.load(Ordering::Relaxed),
    );
    if let Some(i) = &info {
        state.note_tcp_look(i);
    }
    let notsent = info.map_or(0, |i| i.notsent_bytes as usize);
    let drained = crate::ship::window::socket_drained(notsent, cfg.batch_max_bytes);
    if drained {
        state.window_limited.store(true, Ordering::Relaxed);
    }
    // The look comes right after a flush of up to one write's worth, which
    // TCP has not had time to send: held means a batch more than that.
    let held = notsent >= cfg.batch_max_bytes + WRITE_COALESCE_BYTES;
    state.tcp_held.store(held, Ordering::Relaxed);
}

/// The queue is closed: wait until every request is answered (`true`), or
/// until something needs re-sending (`false`).
pub(super) async fn wait_drained(
    state: &ConnState,
    cancel: &CancellationToken,
) -> Result<bool, ShipError> {
    loop {
        let woken = state.wake_writer.notified();
        if state.has_resend() {
            return Ok(false);
        }
        if state.all_settled() {
            return Ok(true);
        }
        tokio::select! {
            _ = woken => {}
            _ = cancel.cancelled() => return Ok(true),
        }
    }
}
