//! `xdr-ship verify`: the operator's proof that the copy is whole. The
//! source log's newest write of every key (optionally only keys under a
//! prefix) is compared with what a destination reached over RESP holds
//! (`recv --listen-resp`, or a real redis-server), key by key, and the
//! differences are counted: missing (the log has a value, the destination
//! none), stale (the destination's value is not the log's newest, or it
//! still holds a key the log deleted), extra (the destination has a key the
//! log never wrote).
//!
//! Why pipelined GETs and not MGET: GETs in flight on one connection cost
//! one round trip per batch like MGET, and they also work against a Redis
//! Cluster node (an MGET across slots is refused). Against
//! `redis-cluster://SEED` each primary is asked for the keys its slots
//! hold, and SCANned for extras, by the cluster's `CLUSTER SLOTS` map. Only keys still in the
//! log are known: segments the log has already trimmed are not verified.
//! `rediss://` and `rediss-cluster://` (or any of them with `--tls-ca`)
//! ask over TLS 1.3, with the same TLS flags as `ship`.
use std::{
    collections::HashMap,
    io::{Read, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::{self, types::BytesFrame};
use xdr_ship::{
    ship::redis::{
        cluster::{ClusterTarget, SlotMap},
        credentials, RedisTarget,
    },
    srclog::segment::{parse_segment_name, SegmentReader},
    tls::{self, ClientTls},
};

/// GETs written before their replies are read.
const PIPELINE_DEPTH: usize = 1024;
/// Keys asked per SCAN call when listing the destination.
const SCAN_COUNT: usize = 1000;
/// Longest wait for any reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Compare a source log with a destination, key by key.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source log (`ship --log DIR`).
    #[arg(long, value_name = "DIR")]
    log: PathBuf,
    /// The destination: `redis://HOST:PORT` (`recv --listen-resp`, or any
    /// Redis server), or `redis-cluster://SEED` (every primary, by the
    /// cluster's slot map); `rediss://…` and `rediss-cluster://…` over TLS.
    #[arg(long, value_name = "URL")]
    against: String,
    #[command(flatten)]
    tls: super::tls_args::ClientTlsArgs,
    /// Only keys starting with PREFIX (on both sides).
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// `AUTH` with this file's content (a token, a Redis password, or
    /// `USER PASSWORD` for an ACL user, as `ship --token-file`).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The counts as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What the comparison found.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Differences {
    /// Keys the log holds (values and deletions).
    pub log_keys: u64,
    /// Keys that agree.
    pub matching: u64,
    /// The log has a value, the destination none.
    pub missing: u64,
    /// The destination's value is not the log's newest.
    pub stale: u64,
    /// The destination has a key the log never wrote.
    pub extra: u64,
}

impl Differences {
    fn any(&self) -> bool {
        self.missing + self.stale + self.extra > 0
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let found = tokio::task::spawn_blocking(move || verify(&args).map(|d| (d, args.json)))
        .await
        .context("verify task")??;
    let (d, json) = found;
    if json {
        outln!("{}", serde_json::to_string(&d)?);
    } else {
        outln!(
            "verify: {} keys in the log: {} match, {} missing, {} stale, {} extra",
            d.log_keys,
            d.matching,
            d.missing,
            d.stale,
            d.extra
        );
    }
    if d.any() {
        std::process::exit(1);
    }
    Ok(())
}

fn verify(args: &Args) -> anyhow::Result<Differences> {
    let prefix = args.prefix.as_deref().unwrap_or("").as_bytes();
    let log = newest_writes(&args.log, prefix)?;
    let password = match &args.password_file {
        Some(path) => Some(xdr_ship::tls::read_password_file("--password-file", path)?),
        None => None,
    };
    let tls = args.tls.client_tls()?;
    let mut dest = Destination::open(&args.against, password.as_deref(), tls.as_ref())?;
    let mut d = Differences {
        log_keys: log.len() as u64,
        ..Differences::default()
    };
    let mut by_node: Vec<Vec<&Vec<u8>>> = vec![Vec::new(); dest.nodes.len()];
    for key in log.keys() {
        by_node[dest.node_of(key)].push(key);
    }
    for (node, keys) in dest.nodes.iter_mut().zip(&by_node) {
        for batch in keys.chunks(PIPELINE_DEPTH) {
            let values = node.get_pipelined(batch)?;
            for (key, held) in batch.iter().zip(values) {
                match (&log[*key], held) {
                    (Some(v), Some(h)) if v[..] == h[..] => d.matching += 1,
                    (None, None) => d.matching += 1,
                    (Some(_), None) => d.missing += 1,
                    (_, Some(_)) => d.stale += 1,
                }
            }
        }
    }
    let mut pattern = glob_escape(prefix);
    pattern.push(b'*');
    for node in &mut dest.nodes {
        node.scan(&pattern, |key| {
            // The last-writer-wins stamps are the shipper's, not the log's.
            let stamp = key.starts_with(xdr_ship::ship::redis::META_PREFIX);
            if key.starts_with(prefix) && !stamp && !log.contains_key(key) {
                d.extra += 1;
            }
        })?;
    }
    Ok(d)
}

/// The destination's nodes: one Redis, or every primary of a Redis
/// Cluster (`redis-cluster://SEED`) with the slot map that says which
/// node holds a key. SCAN and GET go to each primary for its own keys.
struct Destination {
    nodes: Vec<Resp>,
    /// The cluster's map and its primaries in `nodes` order.
    cluster: Option<(SlotMap, Vec<String>)>,
}

impl Destination {
    fn open(url: &str, password: Option<&[u8]>, tls: Option<&ClientTls>) -> anyhow::Result<Self> {
        let connect = |addr: &str, wants_tls: bool| -> anyhow::Result<Resp> {
            if wants_tls && tls.is_none() {
                bail!("--against {url} is over TLS: give --tls-ca, the CA that signed its certificate");
            }
            let mut node = Resp::connect(addr, tls).with_context(|| format!("--against {url}"))?;
            node.auth(password)?;
            Ok(node)
        };
        let Some(target) = ClusterTarget::parse(url) else {
            let Some(target) = RedisTarget::parse(url, true) else {
                bail!(
                    "--against {url}: expected redis://HOST:PORT, rediss://HOST:PORT, \
                     redis-cluster://SEED or rediss-cluster://SEED"
                );
            };
            return Ok(Self {
                nodes: vec![connect(&target.addr, target.tls)?],
                cluster: None,
            });
        };
        let seed = &target.seeds[0];
        let mut first = connect(seed, target.tls)?;
        let slots = first.call(&[&b"CLUSTER"[..], &b"SLOTS"[..]])?;
        let host = seed.rsplit_once(':').map_or(seed.as_str(), |(h, _)| h);
        let map = SlotMap::from_cluster_slots(&slots, host)
            .with_context(|| format!("the slot map of {url}"))?;
        let primaries: Vec<String> = map.primaries().iter().map(|p| p.to_string()).collect();
        let nodes = primaries
            .iter()
            .map(|p| connect(p, target.tls))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            nodes,
            cluster: Some((map, primaries)),
        })
    }

    /// Index in `nodes` of the node holding `key`.
    fn node_of(&self, key: &[u8]) -> usize {
        self.cluster.as_ref().map_or(0, |(map, primaries)| {
            let owner = map.owner_of_key(key);
            primaries.iter().position(|p| p == owner).unwrap_or(0)
        })
    }
}

/// `s` with Redis's glob characters escaped.
fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The newest write of every key under `prefix` in the log at `dir`
/// (`None`: deleted), by (version, source id).
fn newest_writes(dir: &Path, prefix: &[u8]) -> anyhow::Result<HashMap<Vec<u8>, Option<Bytes>>> {
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the log {}", dir.display()))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some((parse_segment_name(p.file_name()?.to_str()?)?, p))
        })
        .collect();
    if segments.is_empty() {
        bail!(
            "{}: no log segment (is it a `ship --log` directory?)",
            dir.display()
        );
    }
    segments.sort();
    let last = segments.len() - 1;
    let mut newest: HashMap<Vec<u8>, (u64, u64, Option<Bytes>)> = HashMap::new();
    for (i, (first, path)) in segments.into_iter().enumerate() {
        let mut reader = SegmentReader::open(path.clone(), first)?;
        loop {
            let entry = match reader.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                // A torn tail of the newest segment was never acknowledged.
                Err(_) if i == last => break,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let w = entry.write;
            if !w.key.starts_with(prefix) {
                continue;
            }
            let stamp = (w.version, w.source_id);
            let slot = newest.entry(w.key.to_vec()).or_insert((0, 0, None));
            if stamp >= (slot.0, slot.1) {
                *slot = (w.version, w.source_id, w.value);
            }
        }
    }
    Ok(newest.into_iter().map(|(k, (_, _, v))| (k, v)).collect())
}

/// The byte stream to one node: TCP, or TLS over it.
trait Stream: Read + std::io::Write + Send {}
impl<T: Read + std::io::Write + Send> Stream for T {}

/// A blocking RESP2 client: just what verify asks.
struct Resp {
    stream: Box<dyn Stream>,
    buf: BytesMut,
}

impl Resp {
    /// Connects to `addr` (`host:port`), over TLS when `tls` is given
    /// (the handshake is finished here, so a certificate problem is said
    /// as one).
    fn connect(addr: &str, tls: Option<&ClientTls>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = tls.server_name_for(addr)?;
                let conn = rustls::ClientConnection::new(tls.config.clone(), name)
                    .context("starting TLS")?;
                let mut s = rustls::StreamOwned::new(conn, stream);
                while s.conn.is_handshaking() {
                    if let Err(e) = s.conn.complete_io(&mut s.sock) {
                        if tls::is_certificate_problem(&e) {
                            bail!(
                                "TLS handshake with {addr} failed: {e} (is --tls-ca the CA that \
                                 signed its certificate, and does it name `{}`?)",
                                tls.expected_name(addr)
                            );
                        }
                        return Err(e).with_context(|| format!("TLS handshake with {addr}"));
                    }
                }
                Box::new(s)
            }
        };
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(1 << 16),
        })
    }

    fn send(&mut self, requests: &[Vec<&[u8]>]) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        for words in requests {
            let frame = BytesFrame::Array(
                words
                    .iter()
                    .map(|w| BytesFrame::BulkString(Bytes::copy_from_slice(w)))
                    .collect(),
            );
            resp2::encode::extend_encode(&mut out, &frame, false).context("encoding a request")?;
        }
        self.stream
            .write_all(&out)
            .context("sending to the destination")
    }

    fn reply(&mut self) -> anyhow::Result<BytesFrame> {
        loop {
            if let Some((frame, _, _)) =
                resp2::decode::decode_bytes_mut(&mut self.buf).context("decoding a reply")?
            {
                if let BytesFrame::Error(e) = &frame {
                    bail!("the destination answered: {e}");
                }
                return Ok(frame);
            }
            let mut chunk = [0u8; 1 << 16];
            let n = self.stream.read(&mut chunk).context("reading a reply")?;
            if n == 0 {
                bail!("the destination closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn auth(&mut self, password: Option<&[u8]>) -> anyhow::Result<()> {
        if let Some(token) = password {
            match credentials(token) {
                (Some(user), password) => self.call(&[&b"AUTH"[..], &user, &password])?,
                (None, password) => self.call(&[&b"AUTH"[..], &password])?,
            };
        }
        Ok(())
    }

    fn call(&mut self, words: &[&[u8]]) -> anyhow::Result<BytesFrame> {
        self.send(&[words.to_vec()])?;
        self.reply()
    }

    /// GET of every key, all sent before any reply is read.
    fn get_pipelined(&mut self, keys: &[&Vec<u8>]) -> anyhow::Result<Vec<Option<Bytes>>> {
        let requests: Vec<Vec<&[u8]>> = keys.iter().map(|k| vec![&b"GET"[..], &k[..]]).collect();
        self.send(&requests)?;
        keys.iter()
            .map(|_| match self.reply()? {
                BytesFrame::BulkString(v) => Ok(Some(v)),
                BytesFrame::Null => Ok(None),
                other => bail!("GET answered {other:?}"),
            })
            .collect()
    }

    /// Every key matching `pattern`, through SCAN.
    fn scan(&mut self, pattern: &[u8], mut each: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let count = SCAN_COUNT.to_string();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self.call(&[
                &b"SCAN"[..],
                &cursor[..],
                &b"MATCH"[..],
                pattern,
                &b"COUNT"[..],
                count.as_bytes(),
            ])?;
            let BytesFrame::Array(parts) = reply else {
                bail!("SCAN answered {reply:?}");
            };
            let [BytesFrame::BulkString(next), BytesFrame::Array(keys)] = &parts[..] else {
                bail!("SCAN answered {parts:?}");
            };
            for k in keys {
                if let BytesFrame::BulkString(k) = k {
                    each(k);
                }
            }
            if &next[..] == b"0" {
                return Ok(());
            }
            cursor = next.to_vec();
        }
    }
}
