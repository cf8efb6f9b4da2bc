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
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use super::{
    command::{self, Command, Reply},
    RespConfig, RespError,
};
use crate::{
    srclog::{Log, LogError},
    wire::Write,
};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// Live counters of the RESP door.
#[derive(Debug, Default)]
pub struct RespStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused past the limit.
    pub refused: AtomicU64,
    /// Writes made durable and acknowledged.
    pub acknowledged: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
}

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
    let listener = TcpListener::from_std(listener)?;
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let cfg = Arc::new(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("resp accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stop.cancelled() => break,
        };
        door.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            door.stats.refused.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(refuse(stream));
            continue;
        };
        let (door, cfg, stop) = (door.clone(), cfg.clone(), stop.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(why) = Conn::new(&door, &cfg).run(stream, stop).await {
                tracing::info!("resp {peer}: closed: {why}");
            }
            drop(permit);
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    Ok(())
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// One reply, possibly waiting for the log to make position `durable_end`
/// durable first.
struct Pending {
    reply: Reply,
    durable_end: Option<u64>,
}

/// One connection's state.
struct Conn<'a> {
    door: &'a LogDoor,
    cfg: &'a RespConfig,
    proto: u8,
    authenticated: bool,
    quit: bool,
}

impl<'a> Conn<'a> {
    fn new(door: &'a LogDoor, cfg: &'a RespConfig) -> Self {
        Self {
            door,
            cfg,
            proto: 2,
            authenticated: cfg.token.is_none(),
            quit: false,
        }
    }

    /// Reads, decodes, appends, waits for durability, answers; until the
    /// peer leaves, breaks a limit, or `stop`.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut stream: S,
        stop: CancellationToken,
    ) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut started: Option<Instant> = None;
        let mut out = BytesMut::new();
        while !self.quit {
            let deadline = match started {
                Some(t) => t + self.cfg.request_timeout,
                None => Instant::now() + self.cfg.idle_timeout,
            };
            buf.reserve(READ_CHUNK);
            let n = tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut buf)) => match r {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => {
                        let _ = stream.write_all(b"-ERR timeout: request not completed in time\r\n").await;
                        return Err("timed out".into());
                    }
                },
                _ = stop.cancelled() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            let (pending, fatal) = self.decode_all(&mut buf);
            started = if buf.is_empty() {
                None
            } else {
                started.or(Some(Instant::now()))
            };
            self.answer(pending, &mut out).await;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
            if let Some(why) = fatal {
                let _ = stream.shutdown().await;
                return Err(why);
            }
        }
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Decodes and runs every whole request in `buf`; a protocol error
    /// ends the connection after the replies before it.
    fn decode_all(&mut self, buf: &mut BytesMut) -> (Vec<Pending>, Option<String>) {
        let mut pending = Vec::new();
        while !buf.is_empty() && !self.quit {
            if let Err(r) =
                command::check_declared_lengths(buf, self.cfg.max_args, self.cfg.max_bulk_bytes)
            {
                pending.push(self.error(r.0.clone()));
                return (pending, Some(r.0));
            }
            match resp2::decode::decode_bytes_mut(buf) {
                Ok(Some((frame, _, _))) => {
                    let reply =
                        match command::arguments(frame).and_then(|args| command::parse(&args)) {
                            Ok(cmd) => self.run_command(cmd),
                            Err(r) => self.error(r.0),
                        };
                    pending.push(reply);
                }
                Ok(None) if buf.len() > self.cfg.max_buffered_bytes => {
                    let why = "ERR Protocol error: request too large".to_owned();
                    pending.push(self.error(why.clone()));
                    return (pending, Some(why));
                }
                Ok(None) => break,
                Err(e) => {
                    let why = format!("ERR Protocol error: {e}");
                    pending.push(self.error(why.clone()));
                    return (pending, Some(why));
                }
            }
        }
        (pending, None)
    }

    fn error(&self, text: String) -> Pending {
        self.door.stats.errors.fetch_add(1, Ordering::Relaxed);
        Pending {
            reply: Reply::Error(text),
            durable_end: None,
        }
    }

    fn now(reply: Reply) -> Pending {
        Pending {
            reply,
            durable_end: None,
        }
    }

    fn run_command(&mut self, cmd: Command) -> Pending {
        if !self.authenticated && !command::allowed_unauthenticated(&cmd) {
            return self.error("NOAUTH Authentication required.".into());
        }
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
            Command::Get(_)
            | Command::MGet(_)
            | Command::Exists(_)
            | Command::Scan { .. }
            | Command::DbSize => self.error(
                "ERR the source node's RESP port takes writes; read from the destination (recv --listen-resp)".into(),
            ),
            Command::Ping(None) => Self::now(Reply::Status("PONG")),
            Command::Ping(Some(m)) | Command::Echo(m) => Self::now(Reply::Bulk(m)),
            Command::Hello { proto, auth } => self.hello(proto, auth),
            Command::Auth(password) => self.auth(&password),
            Command::Select(0) => Self::now(Reply::OK),
            Command::Select(_) => self.error("ERR DB index is out of range".into()),
            Command::ClientNoop => Self::now(Reply::OK),
            Command::CommandInfo(Some(sub)) if &sub[..] == b"COUNT" => Self::now(Reply::Int(0)),
            Command::CommandInfo(Some(sub)) if &sub[..] == b"DOCS" => Self::now(Reply::Map(vec![])),
            Command::CommandInfo(_) => Self::now(Reply::Array(vec![])),
            Command::ConfigGet(params) => Self::now(config_get(&params)),
            Command::Info => Self::now(Reply::text(self.door.info())),
            Command::Quit => {
                self.quit = true;
                Self::now(Reply::OK)
            }
        }
    }

    fn auth(&mut self, password: &[u8]) -> Pending {
        match &self.cfg.token {
            None => self.error(
                "ERR AUTH <password> called without any password configured for the default user"
                    .into(),
            ),
            Some(t) if t.verify(password) => {
                self.authenticated = true;
                Self::now(Reply::OK)
            }
            Some(_) => {
                self.error("WRONGPASS invalid username-password pair or user is disabled.".into())
            }
        }
    }

    fn hello(&mut self, proto: Option<u8>, auth: Option<(Bytes, Bytes)>) -> Pending {
        if let Some((_, password)) = auth {
            let done = self.auth(&password);
            if matches!(done.reply, Reply::Error(_)) {
                return done;
            }
        }
        if !self.authenticated {
            return self.error("NOAUTH HELLO must be called with the client's AUTH".into());
        }
        if let Some(p) = proto {
            self.proto = p;
        }
        Self::now(Reply::Map(vec![
            (Reply::text("server"), Reply::text("xdr-ship")),
            (
                Reply::text("version"),
                Reply::text(env!("CARGO_PKG_VERSION")),
            ),
            (Reply::text("proto"), Reply::Int(i64::from(self.proto))),
            (Reply::text("id"), Reply::Int(0)),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text("master")),
            (Reply::text("modules"), Reply::Array(vec![])),
        ]))
    }

    /// Appends the writes (without waiting); the reply waits for them.
    fn append(&self, kvs: Vec<(Bytes, Option<Bytes>)>, ok: Reply) -> Pending {
        if kvs.iter().any(|(k, _)| k.is_empty()) {
            return self.error("ERR empty key: the source log needs a non-empty key".into());
        }
        let writes: Vec<Write> = kvs
            .into_iter()
            .map(|(key, value)| Write {
                key,
                value,
                version: self.door.next_version(),
                source_id: self.door.source_id,
            })
            .collect();
        match self.door.log.append_unsynced(&writes) {
            Ok(range) => Pending {
                reply: ok,
                durable_end: Some(range.end),
            },
            Err(e @ LogError::Busy { .. }) => self.error(format!("BUSY {e}; retry later")),
            Err(e) => self.error(format!("ERR {e}")),
        }
    }

    /// Waits once for the highest position among `pending`, then encodes
    /// every reply in order.
    async fn answer(&self, pending: Vec<Pending>, out: &mut BytesMut) {
        let end = pending.iter().filter_map(|p| p.durable_end).max();
        let durable = match end {
            Some(end) => self
                .door
                .log
                .wait_durable(end)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        for p in pending {
            let reply = match (&durable, p.durable_end) {
                (Err(why), Some(_)) => Reply::Error(format!("ERR not durable: {why}")),
                (Ok(()), Some(_)) => {
                    self.door.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    p.reply
                }
                (_, None) => p.reply,
            };
            reply.encode(self.proto, out);
        }
    }
}

/// `CONFIG GET`: what `redis-benchmark` asks at start (`save`,
/// `appendonly`); the log is always durable, so `appendonly` is `yes`.
fn config_get(params: &[Bytes]) -> Reply {
    let mut pairs = Vec::new();
    for p in params {
        let name = String::from_utf8_lossy(p).to_ascii_lowercase();
        let value = match name.as_str() {
            "save" => "",
            "appendonly" => "yes",
            "appendfsync" => "always",
            "databases" => "1",
            _ => continue,
        };
        pairs.push((Reply::text(name), Reply::text(value)));
    }
    Reply::Map(pairs)
}
