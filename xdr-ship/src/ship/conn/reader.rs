//! The reading half of a session: decodes the receiver's answers
//! ([`read_loop`], the one place that knows their wire form) and settles
//! each against the table of requests in flight ([`settle`], which knows
//! only result codes).
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::{lock, ConnConfig, ConnState, Pending, Rd};
use crate::{
    ship::{redis::cluster::Redirect, source::SourceRecord, ShipError},
    wire::{Message, OrderingMode, ResultClass, ResultCode, WireCodec},
};

/// Reads answers until the connection fails; never returns success (the
/// writer decides when the session is done).
pub(super) async fn read_loop(
    reader: &mut FramedRead<Rd, WireCodec>,
    state: &ConnState,
    cfg: &ConnConfig,
    acked: &mpsc::Sender<Vec<u64>>,
) -> ShipError {
    loop {
        let frame = match reader.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return ShipError::Wire(e),
            None => return ShipError::Closed,
        };
        let id = frame.request_id;
        let result = match frame.body {
            Message::Ack(ack) => settle(state, cfg, id, |i| ack.result_for(i), no_redirect, ""),
            Message::Nack(nack) => {
                if nack.code.is_permanent() {
                    tracing::warn!(
                        conn = state.id,
                        "request {id} refused: {} {}",
                        nack.code,
                        nack.message
                    );
                }
                settle(
                    state,
                    cfg,
                    id,
                    |_| Some(nack.code),
                    no_redirect,
                    &nack.message,
                )
            }
            Message::Goodbye(g) => {
                return ShipError::Refused(format!("receiver closed: {} {}", g.code, g.message))
            }
            Message::Pong | Message::Ping => continue,
            other => Err(ShipError::Protocol(format!(
                "unexpected {} from the receiver",
                other.frame_type()
            ))),
        };
        match result.map(|s| s.delivered) {
            Ok(seqs) => {
                if cfg.report_acks && !seqs.is_empty() && acked.send(seqs).await.is_err() {
                    return ShipError::Closed;
                }
            }
            Err(e) => return e,
        }
    }
}

/// What an answer settled.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// Positions delivered (only if the source asked for them).
    pub delivered: Vec<u64>,
    /// Records another node must take (a Redis Cluster's `MOVED`, `ASK`):
    /// they left this connection, uncounted, for the router.
    pub redirected: Vec<(SourceRecord, Redirect)>,
}

/// For a destination that never redirects.
pub(super) fn no_redirect(_: usize) -> Option<Redirect> {
    None
}

/// Applies the answer to request `id`: counts outcomes, queues retryable
/// records for a resend, returns the window permits; returns the delivered
/// positions and the redirected records. Knows nothing of the wire:
/// `code_of` gives each record's result, however the destination protocol
/// spelled it, `redirect_of` whether it belongs to another node.
pub(super) fn settle(
    state: &ConnState,
    cfg: &ConnConfig,
    id: u64,
    code_of: impl Fn(usize) -> Option<ResultCode>,
    redirect_of: impl Fn(usize) -> Option<Redirect>,
    reason: &str,
) -> Result<Settled, ShipError> {
    let (pending, drained) = take_answered(state, cfg, id)?;
    let _settling = Settling { state, drained };
    let n = pending.records.len() as u64;
    let latency_us = pending.sent_at.elapsed().as_micros() as u64;
    let _ = lock(&state.latency).record(latency_us.max(1));
    let bytes = pending.bytes;
    let outcomes = Outcomes {
        code_of,
        redirect_of,
        reason,
    };
    let (settled, retry) = count_outcomes(state, cfg, pending.records, &outcomes);
    if retry.is_empty() {
        lock(&state.counters).acked_bytes += bytes;
    }
    state.inflight.fetch_sub(n, Ordering::Relaxed);
    state.inflight_bytes.fetch_sub(bytes, Ordering::Relaxed);
    state.return_permits(n);
    if retry.is_empty() {
        lock(&state.retry_pause).backoff = Duration::ZERO;
    } else {
        {
            let mut p = lock(&state.retry_pause);
            p.backoff = (p.backoff * 2).clamp(cfg.backoff_min, cfg.backoff_max);
            p.until = Some(Instant::now() + p.backoff);
        }
        state.push_resend(retry);
    }
    Ok(settled)
}

/// How to read one answer's records.
struct Outcomes<'a, C, R> {
    code_of: C,
    redirect_of: R,
    reason: &'a str,
}

/// Takes request `id` out of the table (in ordered mode it must be the
/// oldest); returns it and whether the table is now empty.
fn take_answered(
    state: &ConnState,
    cfg: &ConnConfig,
    id: u64,
) -> Result<(Pending, bool), ShipError> {
    let mut table = lock(&state.table);
    if cfg.ship.mode == OrderingMode::Ordered {
        match table.first_key_value() {
            Some((&oldest, _)) if oldest == id => {}
            Some((&oldest, _)) => {
                return Err(ShipError::Protocol(format!(
                    "ordered mode: answer for request {id} while {oldest} is the oldest in flight"
                )))
            }
            None => {
                return Err(ShipError::Protocol(format!(
                    "answer for request {id} with nothing in flight"
                )))
            }
        }
    }
    let pending = table.remove(&id).ok_or_else(|| {
        ShipError::Protocol(format!("answer for request {id}, which is not in flight"))
    })?;
    // Raised under the table's lock: see `ConnState::settling`.
    state.settling.fetch_add(1, Ordering::AcqRel);
    Ok((pending, table.is_empty()))
}

/// One answer being settled (`take_answered` raised the count), lowered
/// once its records are counted or queued again. If it was the last in
/// flight, the writer is told then, so a writer waiting to say goodbye
/// (`wait_drained`) looks again. While shipping, returned permits are what
/// wake the writer: one wake-up per answer would cost a task hop each.
struct Settling<'a> {
    state: &'a ConnState,
    /// The table was empty once this answer left it.
    drained: bool,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.state.settling.fetch_sub(1, Ordering::AcqRel);
        if self.drained {
            self.state.wake_writer.notify_one();
        }
    }
}

/// Counts each record's outcome, writes permanent refusals to the dead
/// letter; returns the delivered positions (only if the source asked for
/// them) with the redirected records, and the records to resend.
fn count_outcomes<C, R>(
    state: &ConnState,
    cfg: &ConnConfig,
    records: Vec<SourceRecord>,
    how: &Outcomes<'_, C, R>,
) -> (Settled, Vec<SourceRecord>)
where
    C: Fn(usize) -> Option<ResultCode>,
    R: Fn(usize) -> Option<Redirect>,
{
    // Positions go back to the source only if it asked (a log's checkpoint):
    // no vector per answer otherwise.
    let mut delivered = Vec::with_capacity(if cfg.report_acks { records.len() } else { 0 });
    let mut redirected = Vec::new();
    let mut retry = Vec::new();
    let mut c = lock(&state.counters);
    let mut settled_for_good = 0;
    for (i, rec) in records.into_iter().enumerate() {
        if let Some(r) = (how.redirect_of)(i) {
            redirected.push((rec, r));
            continue;
        }
        let code = (how.code_of)(i).unwrap_or(ResultCode::ProtocolViolation);
        let reason = how.reason;
        match (code, code.class()) {
            (ResultCode::LostConflict, _) => c.lost_conflict += 1,
            (_, ResultClass::Success) => c.success += 1,
            (_, ResultClass::Retryable) => {
                c.retry_dest += 1;
                retry.push(rec);
                continue;
            }
            (_, ResultClass::Permanent) => {
                c.abandoned += 1;
                dead_letter(cfg, &rec, code, reason);
            }
        }
        settled_for_good += 1;
        if cfg.report_acks {
            delivered.push(rec.seq);
        }
    }
    if let Some(cluster) = &cfg.cluster {
        cluster
            .unsettled
            .fetch_sub(settled_for_good, Ordering::Relaxed);
    }
    let settled = Settled {
        delivered,
        redirected,
    };
    (settled, retry)
}

/// Keeps a permanently refused record in the dead-letter file, if any.
fn dead_letter(cfg: &ConnConfig, rec: &SourceRecord, code: ResultCode, reason: &str) {
    if let Some(dl) = &cfg.dead_letter {
        if let Err(e) = dl.record(&cfg.ship.to, rec, code, reason) {
            tracing::error!(
                "cannot write record {} to the dead-letter file {}: {e}",
                rec.seq,
                dl.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{ship::ShipConfig, wire::Write};

    fn one_request_in_flight(state: &ConnState, id: u64) {
        let records = vec![SourceRecord {
            seq: 0,
            write: Write::put("k", "v", 1, 1),
        }];
        lock(&state.table).insert(
            id,
            Pending {
                records,
                bytes: 1,
                sent_at: Instant::now(),
            },
        );
    }

    /// The reader takes an answered request out of the table before it
    /// knows whether its records come back for resending (a Busy answer):
    /// a writer looking in between must not take the empty table for "all
    /// answered" and say goodbye, stranding them.
    #[test]
    fn a_writer_waits_for_an_answer_still_being_settled() {
        let cfg = ConnConfig::new(
            &ShipConfig::new("127.0.0.1:1"),
            "127.0.0.1:1".parse().unwrap(),
            false,
            None,
        );
        let state = ConnState::new(0, 4);
        let cancel = CancellationToken::new();
        one_request_in_flight(&state, 7);
        let (pending, drained) = take_answered(&state, &cfg, 7).unwrap();
        assert!(drained, "the table is empty now");
        let settling = Settling {
            state: &state,
            drained,
        };
        let looked = super::super::writer::wait_drained(&state, &cancel).now_or_never();
        assert!(looked.is_none(), "said drained: {looked:?}");
        state.push_resend(pending.records);
        drop(settling);
        let looked = super::super::writer::wait_drained(&state, &cancel).now_or_never();
        assert!(
            matches!(looked, Some(Ok(false))),
            "the resend is sent first: {looked:?}"
        );
    }
}
