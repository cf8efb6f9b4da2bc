//! One RESP connection, the same for every door: reads, decodes (with
//! the declared-length check first), runs the commands every door shares
//! (PING, HELLO, AUTH, SELECT, COMMAND, CONFIG GET, QUIT, …), hands the
//! rest to its [`Door`], and answers in order.
//!
//! Why one loop for both doors: the limits (connection count, buffered
//! bytes, idle and slowloris deadlines) and the protocol handling are the
//! attack surface; written once, they are fuzzed and tested once.
use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
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
    RespConfig, RespStats,
};
use crate::srclog::Log;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;
/// Pause after a failed `accept` (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// How long a stopping door waits for its connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a door does with the commands that touch data.
pub trait Door: Clone + Send + Sync + 'static {
    /// The door's counters.
    fn stats(&self) -> &RespStats;
    /// Runs a data command (writes, reads, INFO): every command the shared
    /// loop does not answer itself.
    fn run(&self, cmd: Command) -> Pending;
    /// The log whose durability write replies wait for (`None`: a door
    /// that never writes).
    fn log(&self) -> Option<&Log>;
}

/// One reply, possibly waiting for the log to make position `durable_end`
/// durable first.
pub struct Pending {
    /// What to answer.
    pub reply: Reply,
    /// The log position the answer waits for.
    pub durable_end: Option<u64>,
}

impl Pending {
    /// A reply sent at once.
    pub fn now(reply: Reply) -> Self {
        Self {
            reply,
            durable_end: None,
        }
    }

    /// An error reply (counted by the caller).
    pub fn error(stats: &RespStats, text: String) -> Self {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        Self::now(Reply::Error(text))
    }
}

/// Serves `listener` with `door` until `stop`.
pub async fn serve<D: Door>(
    listener: std::net::TcpListener,
    door: D,
    cfg: RespConfig,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let cfg = Arc::new(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("resp accept: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stop.cancelled() => break,
        };
        let id = door.stats().accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            door.stats().refused.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(refuse(stream));
            continue;
        };
        let (door, cfg, stop) = (door.clone(), cfg.clone(), stop.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(why) = Conn::new(&door, &cfg, id).run(stream, stop).await {
                tracing::info!("resp {peer}: closed: {why}");
            }
            drop(permit);
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    Ok(())
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// One connection's state.
struct Conn<'a, D> {
    door: &'a D,
    cfg: &'a RespConfig,
    /// `CLIENT ID`: the connection's number since the door opened (from 1).
    id: u64,
    proto: u8,
    authenticated: bool,
    quit: bool,
}

impl<'a, D: Door> Conn<'a, D> {
    fn new(door: &'a D, cfg: &'a RespConfig, id: u64) -> Self {
        Self {
            door,
            cfg,
            id,
            proto: 2,
            authenticated: cfg.token.is_none(),
            quit: false,
        }
    }

    /// Reads, decodes, runs, waits for durability, answers; until the
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
        Pending::error(self.door.stats(), text)
    }

    fn run_command(&mut self, cmd: Command) -> Pending {
        if !self.authenticated && !command::allowed_unauthenticated(&cmd) {
            return self.error("NOAUTH Authentication required.".into());
        }
        match cmd {
            Command::Ping(None) => Pending::now(Reply::Status("PONG")),
            Command::Ping(Some(m)) | Command::Echo(m) => Pending::now(Reply::Bulk(m)),
            Command::Hello { proto, auth } => self.hello(proto, auth),
            Command::Auth(password) => self.auth(&password),
            Command::Select(0) => Pending::now(Reply::OK),
            Command::Select(_) => self.error("ERR DB index is out of range".into()),
            Command::ClientNoop => Pending::now(Reply::OK),
            Command::ClientId => Pending::now(Reply::Int(self.id as i64)),
            Command::CommandInfo(Some(sub)) if &sub[..] == b"COUNT" => Pending::now(Reply::Int(0)),
            Command::CommandInfo(Some(sub)) if &sub[..] == b"DOCS" => {
                Pending::now(Reply::Map(vec![]))
            }
            Command::CommandInfo(_) => Pending::now(Reply::Array(vec![])),
            Command::ConfigGet(params) => Pending::now(config_get(&params)),
            Command::Quit => {
                self.quit = true;
                Pending::now(Reply::OK)
            }
            data => self.door.run(data),
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
                Pending::now(Reply::OK)
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
        let role = if self.door.log().is_some() {
            "master"
        } else {
            "replica"
        };
        Pending::now(Reply::Map(vec![
            (Reply::text("server"), Reply::text("xdr-ship")),
            (
                Reply::text("version"),
                Reply::text(env!("CARGO_PKG_VERSION")),
            ),
            (Reply::text("proto"), Reply::Int(i64::from(self.proto))),
            (Reply::text("id"), Reply::Int(self.id as i64)),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text(role)),
            (Reply::text("modules"), Reply::Array(vec![])),
        ]))
    }

    /// Waits once for the highest position among `pending`, then encodes
    /// every reply in order.
    async fn answer(&self, pending: Vec<Pending>, out: &mut BytesMut) {
        let end = pending.iter().filter_map(|p| p.durable_end).max();
        let durable = match (end, self.door.log()) {
            (Some(end), Some(log)) => log.wait_durable(end).await.map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        let stats = self.door.stats();
        for p in pending {
            let reply = match (&durable, p.durable_end) {
                (Err(why), Some(_)) => Reply::Error(format!("ERR not durable: {why}")),
                (Ok(()), Some(_)) => {
                    stats.acknowledged.fetch_add(1, Ordering::Relaxed);
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
