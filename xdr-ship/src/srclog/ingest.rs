//! Getting writes into the log: the ingest port's sink, JSON-lines input,
//! and the in-process generator.
//!
//! Why all three append through [`Log::append`]: an application's write is
//! acknowledged only once it is on disk, whatever door it came in by, and a
//! full log answers Busy (the ingest port's clients retry with backoff; the
//! feeders here wait and retry) instead of dropping anything.
//!
//! JSON-lines format (`ship --from FILE|-`), one write per line:
//!
//! ```text
//! {"key": "user:42", "value": "hello", "version": 7}
//! {"key": "user:43", "value": null, "version": 8, "source_id": 2}
//! ```
//!
//! `key` (non-empty string) and `version` (unsigned integer) are required;
//! `value` is a string, or `null`/absent for a delete (tombstone);
//! `source_id` defaults to the shipper's `--source-id`. Blank lines are
//! skipped; anything else stops the input with an error naming the line
//! (the lines before it are appended).
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio_util::sync::CancellationToken;

use super::{Log, LogError};
use crate::{
    server::{sink::SinkFuture, Applied, Sink},
    ship::{Generator, Source},
    wire::{ResultCode, Write},
};

/// Writes per append when feeding from a file or the generator.
const FEED_BATCH: usize = 256;
/// Longest wait between retries of a Busy append.
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The ingest port's sink: appends each request's writes to the log and
/// answers once they are durable.
#[derive(Clone, Debug)]
pub struct LogSink(pub Log);

impl Sink for LogSink {
    fn apply(&self, writes: Vec<Write>) -> SinkFuture {
        let log = self.0.clone();
        Box::pin(async move {
            if let Some(i) = writes.iter().position(|w| w.key.is_empty()) {
                return Applied::Refused(ResultCode::BadRequest, format!("write {i}: empty key"));
            }
            let n = writes.len();
            match log.append(&writes).await {
                Ok(_) => Applied::PerWrite(vec![ResultCode::Ok; n]),
                Err(e @ (LogError::Busy { .. } | LogError::DiskFull { .. })) => {
                    Applied::Refused(ResultCode::Busy, e.to_string())
                }
                Err(e @ LogError::TooLarge { .. }) => {
                    Applied::Refused(ResultCode::RecordTooLarge, e.to_string())
                }
                Err(e @ LogError::Closed) => {
                    Applied::Refused(ResultCode::ShuttingDown, e.to_string())
                }
                Err(e) => Applied::Refused(ResultCode::Unavailable, e.to_string()),
            }
        })
    }
}

impl From<LogSink> for std::sync::Arc<dyn Sink> {
    fn from(sink: LogSink) -> Self {
        std::sync::Arc::new(sink)
    }
}

/// Why feeding the log stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A line is not a write.
    #[error("--from line {line}: {reason}; expected {{\"key\": STRING, \"value\": STRING|null, \"version\": INTEGER}}")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the input failed.
    #[error("--from: {0}")]
    Read(std::io::Error),
    /// The log refused for good.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Parses one JSON line into a write (`None` for a blank line).
pub fn parse_line(line: &str, default_source_id: u64) -> Result<Option<Write>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let key = obj
        .get("key")
        .and_then(serde_json::Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or("`key` must be a non-empty string")?;
    let version = obj
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or("`version` must be an unsigned integer")?;
    let source_id = match obj.get("source_id") {
        None => default_source_id,
        Some(s) => s
            .as_u64()
            .ok_or("`source_id` must be an unsigned integer")?,
    };
    let value = match obj.get("value") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(Bytes::from(s.clone())),
        Some(_) => return Err("`value` must be a string or null".into()),
    };
    Ok(Some(Write {
        key: Bytes::from(key.to_owned()),
        value,
        version,
        source_id,
    }))
}

/// Appends `writes`, waiting and retrying while the log is full.
pub async fn append_retrying(
    log: &Log,
    writes: &[Write],
    cancel: &CancellationToken,
) -> Result<(), FeedError> {
    let mut backoff = Duration::from_millis(10);
    loop {
        match log.append(writes).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Err(FeedError::Log(LogError::Closed)),
                }
                backoff = (backoff * 2).min(BUSY_BACKOFF_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends every line of `input` (JSON lines, see the module doc); returns
/// the writes appended.
pub async fn feed_json_lines(
    log: &Log,
    input: impl AsyncBufRead + Unpin,
    default_source_id: u64,
    cancel: &CancellationToken,
) -> Result<u64, FeedError> {
    let mut lines = input.lines();
    let mut batch = Vec::with_capacity(FEED_BATCH);
    let (mut line_no, mut total) = (0u64, 0u64);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.map_err(FeedError::Read)?,
            _ = cancel.cancelled() => None,
        };
        let Some(line) = line else { break };
        line_no += 1;
        match parse_line(&line, default_source_id) {
            Ok(Some(w)) => batch.push(w),
            Ok(None) => {}
            Err(reason) => {
                // The lines before it go in; the run stops at this one.
                append_retrying(log, &batch, cancel).await?;
                return Err(FeedError::BadLine {
                    line: line_no,
                    reason,
                });
            }
        }
        if batch.len() >= FEED_BATCH {
            append_retrying(log, &batch, cancel).await?;
            total += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        append_retrying(log, &batch, cancel).await?;
        total += batch.len() as u64;
    }
    Ok(total)
}

/// Appends what `generator` produces (at its own pace) until it ends or
/// `stop`; returns the writes appended.
pub async fn feed_generator(
    log: &Log,
    mut generator: Generator,
    stop: &CancellationToken,
) -> Result<u64, FeedError> {
    let mut total = 0u64;
    let mut batch = Vec::with_capacity(FEED_BATCH);
    loop {
        let next = tokio::select! {
            r = generator.next() => r,
            _ = stop.cancelled() => None,
        };
        let done = next.is_none();
        if let Some(r) = next {
            batch.push(r.write);
        }
        // Append when the batch is full, the input ends, or nothing more is
        // due right now (a paced generator must not sit on written records).
        if !batch.is_empty() && (done || batch.len() >= FEED_BATCH || generator.backlog() == 0) {
            append_retrying(log, &batch, stop).await?;
            total += batch.len() as u64;
            batch.clear();
        }
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_becomes_a_put_or_a_delete() {
        let w = parse_line(r#"{"key":"k","value":"v","version":7}"#, 3)
            .unwrap()
            .unwrap();
        assert_eq!(w, Write::put(&b"k"[..], &b"v"[..], 7, 3));
        let d = parse_line(r#"{"key":"k","value":null,"version":8,"source_id":2}"#, 3)
            .unwrap()
            .unwrap();
        assert_eq!(d, Write::tombstone(&b"k"[..], 8, 2));
        assert_eq!(parse_line("   ", 1).unwrap(), None);
    }

    #[test]
    fn a_bad_json_line_says_what_is_wrong() {
        assert!(parse_line(r#"{"key":"k"}"#, 1)
            .unwrap_err()
            .contains("version"));
        assert!(parse_line(r#"{"key":"","version":1}"#, 1)
            .unwrap_err()
            .contains("key"));
        assert!(parse_line(r#"{"key":"k","version":1,"value":5}"#, 1)
            .unwrap_err()
            .contains("value"));
        assert!(parse_line("nope", 1).unwrap_err().contains("JSON"));
    }
}
