//! A Redis session: the handshake (AUTH, `FUNCTION LOAD` of the
//! last-writer-wins library, a PING that proves the peer speaks RESP) and
//! the reading half, which matches replies to requests by count: Redis
//! answers a connection's commands in order, one reply each, so the
//! oldest request in flight owns the next `records.len()` replies.
//!
//! Why the function is loaded at every connect: a Redis restarted without
//! persistence, or a `FUNCTION FLUSH`, loses it; loading it again is what
//! a reconnect after a `NOSCRIPT`-like reply does, and a second miss on
//! the fresh session sends the record to the dead letter with the reason.
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use redis_protocol::resp2::types::BytesFrame;
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_util::codec::FramedRead;

use super::{
    lock,
    reader::{settle, Settled},
    BoxIo, ConnConfig, ConnState, Rd,
};
use crate::{
    ship::{
        redis::{
            cluster::{Redirect, Reroute},
            codec::{encode_command, outcome, Outcome, RedisCodec, Replies},
            credentials, RedisTarget, LWW_LIBRARY,
        },
        ShipError,
    },
    wire::ResultCode,
};

/// Authenticates, loads the function (with last-writer-wins) and pings;
/// returns the stream once every reply is in and nothing else was sent.
pub(super) async fn handshake(
    cfg: &ConnConfig,
    target: &RedisTarget,
    mut stream: BoxIo,
) -> Result<BoxIo, ShipError> {
    let mut out = BytesMut::new();
    let mut steps: Vec<&'static str> = Vec::new();
    let mut encode = |args: &[&[u8]], step: &'static str| {
        steps.push(step);
        encode_command(&mut out, args)
            .map(drop)
            .map_err(|e| ShipError::Protocol(format!("encoding {step}: {e}")))
    };
    if let Some(token) = &cfg.ship.token {
        let (user, password): (Option<Bytes>, Bytes) = credentials(token);
        match &user {
            Some(u) => encode(&[b"AUTH", u, &password], "AUTH")?,
            None => encode(&[b"AUTH", &password], "AUTH")?,
        }
    }
    if target.lww {
        encode(
            &[b"FUNCTION", b"LOAD", b"REPLACE", LWW_LIBRARY.as_bytes()],
            "FUNCTION LOAD",
        )?;
    }
    encode(&[b"PING"], "PING")?;
    let exchange = async {
        stream.write_all(&out).await.map_err(ShipError::Io)?;
        stream.flush().await.map_err(ShipError::Io)?;
        let mut replies = FramedRead::new(stream, Replies);
        for step in &steps {
            match replies.next().await {
                Some(Ok(reply)) => check_step(step, &reply)?,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ShipError::Closed),
            }
        }
        Ok(replies.into_parts())
    };
    let parts = tokio::time::timeout(cfg.handshake_timeout, exchange)
        .await
        .map_err(|_| ShipError::Timeout("Redis handshake", cfg.handshake_timeout))??;
    if !parts.read_buf.is_empty() {
        return Err(ShipError::Refused(
            "Redis sent more than the handshake's replies".into(),
        ));
    }
    Ok(parts.io)
}

/// One handshake reply: an error that every retry would repeat ends the
/// run with its remedy; a passing state (LOADING) is retried.
fn check_step(step: &str, reply: &BytesFrame) -> Result<(), ShipError> {
    let BytesFrame::Error(e) = reply else {
        return Ok(());
    };
    let text = e.to_string();
    let remedy = match text.split_whitespace().next().unwrap_or("") {
        "LOADING" | "BUSY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" => {
            return Err(ShipError::Refused(format!("Redis {step}: {text}")))
        }
        "WRONGPASS" | "NOAUTH" | "NOPERM" => {
            " (--token-file holds PASSWORD, or USER PASSWORD for an ACL user)"
        }
        _ if step == "FUNCTION LOAD" => {
            " (last-writer-wins needs Redis 7 functions; --redis-lww off ships plain SET/DEL)"
        }
        _ => "",
    };
    Err(ShipError::Rejected(format!(
        "Redis refused {step}: {text}{remedy}"
    )))
}

/// Reads replies until the connection fails; never returns success (the
/// writer decides when the session is done). Towards a cluster, a
/// redirect (`MOVED`, `ASK`, `READONLY`) takes its record out of this
/// connection to the router.
pub(super) async fn read_loop(
    reader: &mut FramedRead<Rd, Replies>,
    state: &ConnState,
    cfg: &ConnConfig,
    acked: &mpsc::Sender<Vec<u64>>,
    codec: RedisCodec,
) -> ShipError {
    let mut codes: Vec<ResultCode> = Vec::new();
    let mut redirects: Vec<(usize, Redirect)> = Vec::new();
    let mut reason: Option<String> = None;
    loop {
        let reply = match reader.next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => return e.into(),
            None => return ShipError::Closed,
        };
        let oldest = lock(&state.table)
            .first_key_value()
            .map(|(id, p)| (*id, p.records.len()));
        let Some((id, records)) = oldest else {
            return ShipError::Protocol("a Redis reply with nothing in flight".into());
        };
        // One reply per record unless the request was one call: no
        // allocation on the per-record path (a cluster, `--redis-lww off`).
        let spread;
        let replies = if codec.answers_as_one(records) {
            spread = per_record(reply, records);
            spread.as_slice()
        } else {
            std::slice::from_ref(&reply)
        };
        for reply in replies {
            match redirect(cfg, reply) {
                Some(r) => {
                    redirects.push((codes.len(), r));
                    codes.push(ResultCode::Ok);
                }
                None => match reply_code(state, reply) {
                    Ok((code, why)) => {
                        if reason.is_none() {
                            reason = why;
                        }
                        codes.push(code);
                    }
                    Err(e) => return e,
                },
            }
        }
        if codes.len() < records {
            continue;
        }
        let why = reason.take().unwrap_or_default();
        if codes.iter().any(|c| c.is_permanent()) {
            tracing::warn!(conn = state.id, "request {id} refused by Redis: {why}");
        }
        let redirect_of = |i: usize| {
            redirects
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, r)| r.clone())
        };
        let settled = settle(state, cfg, id, |i| codes.get(i).copied(), redirect_of, &why);
        codes.clear();
        redirects.clear();
        match settled {
            Ok(s) => {
                if let Err(e) = hand_over(cfg, acked, s).await {
                    return e;
                }
            }
            Err(e) => return e,
        }
    }
}

/// The replies of a request's records from the one reply to its `FCALL
/// xdr_lww_many`: its array, or its error (Redis refused the whole call:
/// `OOM`, `LOADING`, a missing function) for every record. Any other
/// answer is every record's, which [`outcome`] calls a protocol violation.
fn per_record(reply: BytesFrame, records: usize) -> Vec<BytesFrame> {
    match reply {
        BytesFrame::Array(items) if items.len() == records => items,
        other => vec![other; records],
    }
}

/// The redirect a cluster node's error reply asks for, if any.
fn redirect(cfg: &ConnConfig, reply: &BytesFrame) -> Option<Redirect> {
    match reply {
        BytesFrame::Error(e) if cfg.cluster.is_some() => Redirect::parse(e),
        _ => None,
    }
}

/// Gives the delivered positions to the dispatcher and the redirected
/// records to the cluster's router.
async fn hand_over(
    cfg: &ConnConfig,
    acked: &mpsc::Sender<Vec<u64>>,
    settled: Settled,
) -> Result<(), ShipError> {
    let Settled {
        delivered,
        redirected,
    } = settled;
    if cfg.report_acks && !delivered.is_empty() && acked.send(delivered).await.is_err() {
        return Err(ShipError::Closed);
    }
    if let Some(cluster) = &cfg.cluster {
        for (rec, r) in redirected {
            if cluster
                .reroute
                .send(Reroute::Redirected(rec, r))
                .await
                .is_err()
            {
                return Err(ShipError::Closed);
            }
        }
    }
    Ok(())
}

/// One reply's result code (and Redis's text for an error); `Err` ends the
/// session (a reconnect loads the function again, or authenticates again).
fn reply_code(
    state: &ConnState,
    reply: &BytesFrame,
) -> Result<(ResultCode, Option<String>), ShipError> {
    match outcome(reply) {
        Outcome::Code(code, why) => {
            if !code.is_permanent() {
                state.redis_reloaded.store(false, Ordering::Relaxed);
            }
            Ok((code, why))
        }
        Outcome::FunctionMissing(text) if state.redis_reloaded.load(Ordering::Relaxed) => Ok((
            ResultCode::Unsupported,
            Some(format!("{text} (still missing after loading it again)")),
        )),
        Outcome::FunctionMissing(text) => {
            state.redis_reloaded.store(true, Ordering::Relaxed);
            Err(ShipError::Refused(format!(
                "Redis lost the last-writer-wins function ({text}): reconnecting loads it again"
            )))
        }
        Outcome::Reconnect(text) => Err(ShipError::Refused(format!(
            "Redis forgot this connection's login ({text}): reconnecting"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_password_ends_the_run_with_the_remedy() {
        let e = check_step(
            "AUTH",
            &BytesFrame::Error("WRONGPASS invalid username-password pair".into()),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ShipError::Rejected(m) if m.contains("--token-file")),
            "{e}"
        );
    }

    #[test]
    fn a_loading_redis_is_retried_at_connect() {
        let e = check_step(
            "FUNCTION LOAD",
            &BytesFrame::Error("LOADING Redis is loading the dataset in memory".into()),
        )
        .unwrap_err();
        assert!(matches!(e, ShipError::Refused(_)), "{e}");
    }

    #[test]
    fn a_calls_array_is_each_records_reply_and_its_error_every_records() {
        let answers = BytesFrame::Array(vec![
            BytesFrame::Integer(1),
            BytesFrame::Integer(0),
            BytesFrame::Error("WRONGTYPE Operation against a key".into()),
        ]);
        let codes: Vec<_> = per_record(answers, 3).iter().map(outcome).collect();
        assert_eq!(codes[0], Outcome::Code(ResultCode::Ok, None));
        assert_eq!(codes[1], Outcome::Code(ResultCode::LostConflict, None));
        assert!(matches!(
            &codes[2],
            Outcome::Code(ResultCode::BadRequest, Some(_))
        ));
        let oom = BytesFrame::Error("OOM command not allowed".into());
        let codes: Vec<_> = per_record(oom, 2).iter().map(outcome).collect();
        assert!(codes
            .iter()
            .all(|c| matches!(c, Outcome::Code(ResultCode::Busy, Some(_)))));
        let short = BytesFrame::Array(vec![BytesFrame::Integer(1)]);
        let codes: Vec<_> = per_record(short, 2).iter().map(outcome).collect();
        assert!(codes
            .iter()
            .all(|c| matches!(c, Outcome::Code(ResultCode::ProtocolViolation, Some(_)))));
    }

    #[test]
    fn a_second_missing_function_on_a_fresh_session_is_a_dead_letter() {
        let state = ConnState::new(0, 1);
        let missing = BytesFrame::Error("ERR Function not found".into());
        assert!(reply_code(&state, &missing).is_err(), "first: reconnect");
        let (code, why) = reply_code(&state, &missing).unwrap();
        assert_eq!(code, ResultCode::Unsupported);
        assert!(why.unwrap().contains("still missing"));
        let _ = reply_code(&state, &BytesFrame::Integer(1)).unwrap();
        assert!(
            reply_code(&state, &missing).is_err(),
            "after a success: reconnect again"
        );
    }
}
