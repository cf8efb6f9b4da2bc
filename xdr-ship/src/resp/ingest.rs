//! The RESP front door of the source node (`ship --log DIR --listen-resp
//! ADDR`): SET / MSET / DEL / UNLINK go into the source log, and their
//! `+OK` (or count) is sent only once the log has made them durable.
//!
//! Why one wait per read: every request decoded from one read of the
//! socket is appended at once and the replies wait on the highest
//! position among them, so a pipelined client (`redis-benchmark -P 64`)
//! shares one fdatasync per batch (group commit) and is answered in order.
//! Versions are assigned here, from the wall clock in microseconds and
//! strictly increasing within the process, so they are monotonic per key
//! across restarts as long as the clock does not step back.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub use super::RespStats;
use super::{
    command::{Command, Reply},
    conn::{self, Door, Pending},
    RespConfig, RespError,
};
use crate::{srclog::Log, wire::Write};

/// What the door writes into, and what INFO shows about it.
#[derive(Clone, Debug)]
pub struct LogDoor {
    /// The source log.
    pub log: Log,
    /// `source_id` of every write.
    pub source_id: u64,
    /// Destinations whose checkpoints INFO shows.
    pub destinations: Vec<String>,
    /// Counters.
    pub stats: Arc<RespStats>,
    last_version: Arc<AtomicU64>,
}

impl LogDoor {
    /// A door into `log`.
    pub fn new(log: Log, source_id: u64, destinations: Vec<String>) -> Self {
        Self {
            log,
            source_id,
            destinations,
            stats: Arc::default(),
            last_version: Arc::default(),
        }
    }

    /// The next version: wall-clock microseconds, strictly increasing.
    fn next_version(&self) -> u64 {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut last = self.last_version.load(Ordering::Relaxed);
        loop {
            let v = now_us.max(last + 1);
            match self.last_version.compare_exchange_weak(
                last,
                v,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return v,
                Err(seen) => last = seen,
            }
        }
    }

    fn info(&self) -> String {
        let s = self.log.stats();
        let mut text = format!(
            "# Server\r\nredis_version:7.0.0\r\nxdr_ship_version:{}\r\nredis_mode:standalone\r\n\r\n# xdr\r\n\
             log_first_seq:{}\r\nlog_next_seq:{}\r\nlog_durable_seq:{}\r\nlog_segments:{}\r\n\
             log_used_bytes:{}\r\nlog_budget_bytes:{}\r\nlog_busy:{}\r\nlog_syncs:{}\r\n\
             resp_acknowledged:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            s.first_seq,
            s.next_seq,
            s.durable_seq,
            s.segments,
            s.used_bytes,
            s.budget_bytes,
            s.busy,
            s.syncs,
            self.stats.acknowledged.load(Ordering::Relaxed),
        );
        for name in &self.destinations {
            let cp = self.log.checkpoint(name).unwrap_or(0);
            text.push_str(&format!(
                "destination_{name}:checkpoint={cp},behind={}\r\n",
                s.next_seq.saturating_sub(cp)
            ));
        }
        text
    }
}

/// Binds the door's address, refusing an unauthenticated one beyond
/// loopback unless `insecure`.
pub fn bind(
    addr: SocketAddr,
    cfg: &RespConfig,
    insecure: bool,
) -> Result<std::net::TcpListener, RespError> {
    if !addr.ip().is_loopback() && cfg.token.is_none() && !insecure {
        return Err(RespError::Unauthenticated { addr });
    }
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| RespError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| RespError::Bind { addr, source })?;
    Ok(listener)
}

/// Serves `listener` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    door: LogDoor,
    cfg: RespConfig,
    stop: CancellationToken,
) -> std::io::Result<()> {
    conn::serve(listener, door, cfg, stop).await
}

impl Door for LogDoor {
    fn stats(&self) -> &RespStats {
        &self.stats
    }

    fn log(&self) -> Option<&Log> {
        Some(&self.log)
    }

    fn run(&self, cmd: Command) -> Pending {
        match cmd {
            Command::Set(k, v) => self.append(vec![(k, Some(v))], Reply::OK),
            Command::MSet(pairs) => self.append(
                pairs.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                Reply::OK,
            ),
            Command::Del(keys) => {
                let n = keys.len() as i64;
                self.append(keys.into_iter().map(|k| (k, None)).collect(), Reply::Int(n))
            }
            Command::Info => Pending::now(Reply::text(self.info())),
            _ => Pending::error(
                &self.stats,
                "ERR the source node's RESP port takes writes; read from the destination (recv --listen-resp)".into(),
            ),
        }
    }
}

impl LogDoor {
    /// Appends the writes (without waiting); the reply waits for them.
    fn append(&self, kvs: Vec<(Bytes, Option<Bytes>)>, ok: Reply) -> Pending {
        if kvs.iter().any(|(k, _)| k.is_empty()) {
            return Pending::error(
                &self.stats,
                "ERR empty key: the source log needs a non-empty key".into(),
            );
        }
        let writes: Vec<Write> = kvs
            .into_iter()
            .map(|(key, value)| Write {
                key,
                value,
                version: self.next_version(),
                source_id: self.source_id,
            })
            .collect();
        match self.log.append_unsynced(&writes) {
            Ok(range) => Pending {
                reply: ok,
                durable_end: Some(range.end),
            },
            // Over the budget or a full disk: nothing of it was kept, and
            // the same write may succeed later (`Busy`, as the ingest port
            // answers); the connection carries on.
            Err(e) if e.is_retryable() => Pending::error(&self.stats, format!("BUSY {e}")),
            Err(e) => Pending::error(&self.stats, format!("ERR {e}")),
        }
    }
}
