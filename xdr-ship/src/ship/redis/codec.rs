//! Records as Redis commands, replies as result codes: the Redis side of
//! the connection's protocol seam ([`RequestCodec`]). Towards one Redis
//! with last-writer-wins, a request of N records is one `FCALL
//! xdr_lww_many` answered by an array of N; otherwise (a cluster, whose
//! batch would need one slot, or `--redis-lww off`) it is N pipelined
//! commands, one reply each. Either way Redis answers in order, which is
//! what lets the reader settle requests oldest first.
//!
//! Why errors become result codes here: the connection's retry classes,
//! dead letter and counters know only [`ResultCode`]s, so a Redis error
//! prefix picks the code whose class says what to do with the record.
use bytes::BytesMut;
use redis_protocol::resp2::{
    decode::decode_bytes_mut,
    encode::extend_encode_borrowed,
    types::{BorrowedFrame, BytesFrame, Resp2Frame},
};
use tokio_util::codec::{Decoder, Encoder};

use super::{meta_key, stamp, LWW_FUNCTION, LWW_MANY_FUNCTION};
use crate::{
    ship::{conn::RequestCodec, source::SourceRecord, ShipError},
    wire::{Frame, GatherBuf, ResultCode, WireError, Write},
};

/// Encodes records as `FCALL xdr_lww` (last-writer-wins) or plain
/// `SET`/`DEL` commands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedisCodec {
    lww: bool,
    many: bool,
}

impl RedisCodec {
    /// One command per record.
    pub fn new(lww: bool) -> Self {
        Self { lww, many: false }
    }

    /// With `many` (one Redis, not a cluster), a request under
    /// last-writer-wins is one `FCALL xdr_lww_many`, however many records.
    pub fn with_many(self, many: bool) -> Self {
        Self { many, ..self }
    }

    /// Whether a request of `records` records is one command, answered by
    /// one array of that many replies (towards one Redis, every request:
    /// one function, one set of rules).
    pub fn answers_as_one(&self, records: usize) -> bool {
        self.lww && self.many && records > 0
    }

    /// Appends one `FCALL xdr_lww_many` for `batch` (the layout is
    /// [`super::LWW_LIBRARY`]'s); returns its length.
    fn encode_many(&self, dst: &mut BytesMut, batch: &[SourceRecord]) -> Result<usize, ShipError> {
        let metas: Vec<Vec<u8>> = batch.iter().map(|r| meta_key(&r.write.key)).collect();
        let stamps: Vec<_> = batch
            .iter()
            .map(|r| stamp(r.write.version, r.write.source_id))
            .collect();
        let numkeys = (2 * batch.len()).to_string();
        let deletes = batch
            .iter()
            .enumerate()
            .filter(|(_, r)| r.write.value.is_none())
            .map(|(i, _)| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let mut args: Vec<&[u8]> = Vec::with_capacity(4 + 4 * batch.len());
        args.extend([
            b"FCALL".as_slice(),
            LWW_MANY_FUNCTION.as_bytes(),
            numkeys.as_bytes(),
        ]);
        for (r, meta) in batch.iter().zip(&metas) {
            args.extend([r.write.key.as_ref(), meta.as_slice()]);
        }
        args.push(deletes.as_bytes());
        args.extend(stamps.iter().map(|s| s.as_slice()));
        args.extend(
            batch
                .iter()
                .map(|r| r.write.value.as_deref().unwrap_or_default()),
        );
        encode_command(dst, &args)
            .map_err(|e| ShipError::Protocol(format!("encoding a Redis command: {e}")))
    }

    /// Appends the command for one write; returns its encoded length.
    pub fn encode_write(&self, dst: &mut BytesMut, w: &Write) -> Result<usize, ShipError> {
        let encode = |dst: &mut BytesMut, args: &[&[u8]]| {
            encode_command(dst, args)
                .map_err(|e| ShipError::Protocol(format!("encoding a Redis command: {e}")))
        };
        match (self.lww, &w.value) {
            (true, value) => {
                let meta = meta_key(&w.key);
                let stamp = stamp(w.version, w.source_id);
                let head: [&[u8]; 6] = [
                    b"FCALL",
                    LWW_FUNCTION.as_bytes(),
                    b"2",
                    &w.key,
                    &meta,
                    &stamp,
                ];
                match value {
                    Some(v) => {
                        let mut all = head.to_vec();
                        all.push(v);
                        encode(dst, &all)
                    }
                    None => encode(dst, &head),
                }
            }
            (false, Some(v)) => encode(dst, &[b"SET", &w.key, v]),
            (false, None) => encode(dst, &[b"DEL", &w.key]),
        }
    }
}

/// Appends one command (an array of bulk strings) to `dst`; returns the
/// bytes it added. The one place commands are encoded: records, the
/// session's handshake and the cluster's own commands. Why the length is
/// measured here: the crate's return value is an offset into `dst`, which
/// holds the commands before this one too.
pub(crate) fn encode_command(
    dst: &mut BytesMut,
    args: &[&[u8]],
) -> Result<usize, redis_protocol::error::RedisProtocolError> {
    let before = dst.len();
    let frames: Vec<BorrowedFrame> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    extend_encode_borrowed(dst, &BorrowedFrame::Array(&frames), false)?;
    Ok(dst.len() - before)
}

impl RedisCodec {
    /// The commands for `batch`, appended to `dst`; returns their bytes.
    pub(crate) fn encode_commands(
        &mut self,
        dst: &mut BytesMut,
        batch: &[SourceRecord],
    ) -> Result<usize, ShipError> {
        if self.answers_as_one(batch.len()) {
            return self.encode_many(dst, batch);
        }
        batch.iter().map(|r| self.encode_write(dst, &r.write)).sum()
    }
}

/// Commands are encoded in place: RESP frames a value between its length
/// and a CRLF, with no checksum to compute first, so values could go by
/// reference too; not done yet.
impl RequestCodec for RedisCodec {
    fn encode_request(
        &mut self,
        dst: &mut GatherBuf,
        _id: u64,
        batch: &[SourceRecord],
    ) -> Result<usize, ShipError> {
        self.encode_commands(dst.tail_mut(), batch)
    }
}

/// The writer's control frames (goodbye, an idle ping) have no Redis
/// form that would not add a reply to the ordered stream: nothing is sent.
impl Encoder<Frame> for RedisCodec {
    type Error = WireError;
    fn encode(&mut self, _frame: Frame, _dst: &mut BytesMut) -> Result<(), WireError> {
        Ok(())
    }
}

/// Why Redis replies cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not RESP, or a reply larger than any this shipper asks for.
    #[error("bad reply from Redis: {0}")]
    Bad(String),
}

impl From<ReplyError> for ShipError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::Io(io) => ShipError::Io(io),
            ReplyError::Bad(b) => ShipError::Protocol(b),
        }
    }
}

/// Largest reply this shipper expects (its commands answer an integer, a
/// status or a short error): more is a peer that is not Redis.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Splits the byte stream into RESP2 replies (the `redis-protocol` crate's
/// decoder).
#[derive(Debug, Default)]
pub(crate) struct Replies;

impl Decoder for Replies {
    type Item = BytesFrame;
    type Error = ReplyError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesFrame>, ReplyError> {
        match decode_bytes_mut(src) {
            Ok(Some((frame, _, _))) => Ok(Some(frame)),
            Ok(None) if src.len() > MAX_REPLY_BYTES => Err(ReplyError::Bad(format!(
                "a reply of more than {MAX_REPLY_BYTES} bytes"
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(ReplyError::Bad(e.to_string())),
        }
    }
}

/// What one reply means for its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// This result code, and the error text if Redis sent one.
    Code(ResultCode, Option<String>),
    /// The function is not loaded (`FUNCTION FLUSH`, a restart without
    /// persistence): reconnect, which loads it again, and resend.
    FunctionMissing(String),
    /// The connection's state is gone (`NOAUTH` after a restart with a
    /// password): reconnect, which authenticates again, and resend.
    Reconnect(String),
}

/// The outcome of one reply to a write command.
pub(crate) fn outcome(reply: &BytesFrame) -> Outcome {
    match reply {
        BytesFrame::Integer(0) => Outcome::Code(ResultCode::LostConflict, None),
        BytesFrame::Integer(_) | BytesFrame::SimpleString(_) => Outcome::Code(ResultCode::Ok, None),
        BytesFrame::Error(e) => error_outcome(e),
        other => Outcome::Code(
            ResultCode::ProtocolViolation,
            Some(format!("unexpected reply {:?}", other.kind())),
        ),
    }
}

/// A Redis error reply, by its prefix: what to do with the record.
pub(crate) fn error_outcome(text: &str) -> Outcome {
    let prefix = text.split_whitespace().next().unwrap_or("");
    let reason = Some(text.to_owned());
    let code = match prefix {
        // Redis is starting, busy in a script, resharding or failing over:
        // the same write will succeed later.
        "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" => ResultCode::Busy,
        // A replica, or a primary that lost its replicas: retry.
        "READONLY" | "NOREPLICAS" => ResultCode::Unavailable,
        // Out of memory under `maxmemory`: eviction or an operator may free
        // some; retried (with backoff), the reason logged.
        "OOM" => ResultCode::Busy,
        "NOSCRIPT" => return Outcome::FunctionMissing(text.to_owned()),
        "ERR" if text.contains("Function not found") => {
            return Outcome::FunctionMissing(text.to_owned())
        }
        "NOAUTH" => return Outcome::Reconnect(text.to_owned()),
        // Permission denied for this user: every retry is refused too.
        "NOPERM" | "WRONGPASS" => ResultCode::AuthFailed,
        // The key holds another type: this record can never be written.
        "WRONGTYPE" => ResultCode::BadRequest,
        // A cluster answered a `redis://` destination, which cannot follow
        // (towards `redis-cluster://` the reader takes redirects first).
        "MOVED" | "ASK" => ResultCode::Unsupported,
        _ => ResultCode::BadRequest,
    };
    Outcome::Code(code, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ResultClass;

    fn class(text: &str) -> ResultClass {
        match error_outcome(text) {
            Outcome::Code(c, Some(reason)) => {
                assert_eq!(reason, text);
                c.class()
            }
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_request_counts_the_bytes_of_its_own_commands_only() {
        let records: Vec<SourceRecord> = (0..3)
            .map(|i| SourceRecord {
                seq: i,
                write: Write::put(format!("k{i}"), vec![b'v'; 1000], 1, 1),
            })
            .collect();
        for lww in [true, false] {
            let mut codec = RedisCodec::new(lww);
            let mut dst = BytesMut::new();
            let first = codec.encode_commands(&mut dst, &records).unwrap();
            assert_eq!(first, dst.len(), "lww {lww}");
            // A second request behind it in the same buffer: its own bytes.
            let second = codec.encode_commands(&mut dst, &records).unwrap();
            assert_eq!(second, first, "lww {lww}");
            assert_eq!(dst.len(), 2 * first);
            assert!(first > 3000 && first < 3600, "{first} bytes for 3 × 1 KB");
        }
    }

    #[test]
    fn transient_redis_errors_are_retried() {
        for e in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            assert_eq!(class(e), ResultClass::Retryable, "{e}");
        }
    }

    #[test]
    fn errors_every_retry_would_repeat_go_to_the_dead_letter() {
        for e in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOPERM User shipper has no permissions to run the 'fcall' command",
            "ERR syntax error",
            "MOVED 3999 127.0.0.1:6381",
        ] {
            assert_eq!(class(e), ResultClass::Permanent, "{e}");
        }
    }

    #[test]
    fn a_missing_function_reloads_and_noauth_reconnects() {
        assert!(matches!(
            error_outcome("NOSCRIPT No matching script."),
            Outcome::FunctionMissing(_)
        ));
        assert!(matches!(
            error_outcome("ERR Function not found"),
            Outcome::FunctionMissing(_)
        ));
        assert!(matches!(
            error_outcome("NOAUTH Authentication required."),
            Outcome::Reconnect(_)
        ));
    }

    #[test]
    fn the_functions_answers_are_written_or_lost_conflict() {
        assert_eq!(
            outcome(&BytesFrame::Integer(1)),
            Outcome::Code(ResultCode::Ok, None)
        );
        assert_eq!(
            outcome(&BytesFrame::Integer(0)),
            Outcome::Code(ResultCode::LostConflict, None)
        );
        assert_eq!(
            outcome(&BytesFrame::SimpleString("OK".into())),
            Outcome::Code(ResultCode::Ok, None)
        );
    }

    #[test]
    fn a_put_is_an_fcall_with_key_stamp_key_stamp_and_value() {
        let mut buf = BytesMut::new();
        let w = Write::put("k", "v", 5, 2);
        let n = RedisCodec::new(true).encode_write(&mut buf, &w).unwrap();
        assert_eq!(n, buf.len());
        let Some((BytesFrame::Array(args), _, _)) = decode_bytes_mut(&mut buf).unwrap() else {
            panic!("not an array");
        };
        let args: Vec<Vec<u8>> = args
            .into_iter()
            .map(|f| f.as_bytes().unwrap().to_vec())
            .collect();
        assert_eq!(args[0], b"FCALL");
        assert_eq!(args[1], LWW_FUNCTION.as_bytes());
        assert_eq!(args[2], b"2");
        assert_eq!(args[3], b"k");
        assert_eq!(args[4], meta_key(b"k"));
        assert_eq!(args[5], stamp(5, 2));
        assert_eq!(args[6], b"v");
    }

    #[test]
    fn towards_one_redis_a_request_is_one_fcall_of_key_pairs_deletes_stamps_and_values() {
        let records = [
            SourceRecord {
                seq: 0,
                write: Write::put("a", "va", 5, 2),
            },
            SourceRecord {
                seq: 1,
                write: Write {
                    key: "b".into(),
                    value: None,
                    version: 6,
                    source_id: 2,
                },
            },
        ];
        let mut codec = RedisCodec::new(true).with_many(true);
        assert!(codec.answers_as_one(2) && codec.answers_as_one(1));
        let mut buf = BytesMut::new();
        let n = codec.encode_commands(&mut buf, &records).unwrap();
        assert_eq!(n, buf.len());
        let Some((BytesFrame::Array(args), _, _)) = decode_bytes_mut(&mut buf).unwrap() else {
            panic!("not an array");
        };
        assert!(buf.is_empty(), "one command, nothing after it");
        let args: Vec<Vec<u8>> = args
            .into_iter()
            .map(|f| f.as_bytes().unwrap().to_vec())
            .collect();
        let want: Vec<Vec<u8>> = vec![
            b"FCALL".to_vec(),
            LWW_MANY_FUNCTION.into(),
            b"4".to_vec(),
            b"a".to_vec(),
            meta_key(b"a"),
            b"b".to_vec(),
            meta_key(b"b"),
            b"2".to_vec(),
            stamp(5, 2).to_vec(),
            stamp(6, 2).to_vec(),
            b"va".to_vec(),
            Vec::new(),
        ];
        assert_eq!(args, want);
    }

    #[test]
    fn a_cluster_or_plain_set_sends_one_command_per_record() {
        let records: Vec<SourceRecord> = (0..3)
            .map(|i| SourceRecord {
                seq: i,
                write: Write::put(format!("k{i}"), "v", 1, 1),
            })
            .collect();
        for mut codec in [
            RedisCodec::new(true).with_many(false),
            RedisCodec::new(false).with_many(true),
        ] {
            assert!(!codec.answers_as_one(3));
            let mut buf = BytesMut::new();
            codec.encode_commands(&mut buf, &records).unwrap();
            let mut commands = 0;
            while let Some((BytesFrame::Array(_), _, _)) = decode_bytes_mut(&mut buf).unwrap() {
                commands += 1;
            }
            assert_eq!(commands, 3, "{codec:?}");
        }
    }

    #[test]
    fn without_lww_a_delete_is_a_plain_del() {
        let mut buf = BytesMut::new();
        let w = Write {
            key: "k".into(),
            value: None,
            version: 1,
            source_id: 1,
        };
        RedisCodec::new(false).encode_write(&mut buf, &w).unwrap();
        assert_eq!(&buf[..], b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n");
    }
}
