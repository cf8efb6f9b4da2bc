//! Redis Cluster as a destination: `--to redis-cluster://SEED[,SEED…]`,
//! or `rediss-cluster://SEED[,SEED…]` over TLS (every node's TLS port:
//! asked over TLS, a cluster with `tls-cluster yes` announces its TLS
//! ports in `CLUSTER SLOTS`/`NODES` and in its redirects).
//!
//! Why the shipper follows the slot map itself rather than letting one
//! node redirect every write: a cluster node answers a key of another
//! node's slot with `MOVED`, so each record would cost a refused round
//! trip (156 ms on the long link) before it lands. Instead the shipper
//! asks a seed for the map (`CLUSTER SLOTS`), computes each key's slot
//! (CRC16-XMODEM of the key or its `{hash tag}`, mod 16384, through the
//! `redis-protocol` crate's [`redis_keyslot`], the same function that
//! keeps a record's stamp key in its slot), and sends each record straight
//! to the primary that owns it, over one pipelined pool per primary.
//! `MOVED` (a slot that moved) and `ASK` (a slot being migrated) are
//! still answered, record by record: see `ship::cluster`.
//!
//! This file knows the cluster's words: the URL, the slot map as
//! `CLUSTER SLOTS` gives it, and the redirect errors.
use bytes::BytesMut;
use redis_protocol::{
    redis_keyslot,
    resp2::types::{BytesFrame, Resp2Frame},
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{Replies, ReplyError};
use crate::{ship::source::SourceRecord, tls::ClientTls};

/// Why a record comes back to the cluster's router (`ship::cluster`) from
/// a node's connection. Here, beside [`Redirect`], so the connections
/// (`ship::conn`) hand records back without depending on the router.
#[derive(Debug)]
pub(crate) enum Reroute {
    /// A node answered with a redirect.
    Redirected(SourceRecord, Redirect),
    /// A pool lost its node (or cannot reach it): these need a fresh map.
    Stranded(Vec<SourceRecord>),
}

/// URL scheme of a Redis Cluster destination.
pub const SCHEME_CLUSTER: &str = "redis-cluster://";
/// URL scheme of a Redis Cluster destination over TLS.
pub const SCHEME_CLUSTER_TLS: &str = "rediss-cluster://";

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The cluster slot of `key`: CRC16-XMODEM of its hash tag (the part
/// between the first `{` and the next `}`, when not empty) or of the whole
/// key, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    redis_keyslot(key)
}

/// A Redis Cluster destination as `--to` gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The seeds' `host:port`, in the order given.
    pub seeds: Vec<String>,
    /// `rediss-cluster://`: TLS is required.
    pub tls: bool,
}

impl ClusterTarget {
    /// The cluster in `to`, if it names one (`redis-cluster://A:P,B:P`,
    /// or `rediss-cluster://` for TLS); a seed without a port is Redis's
    /// 6379.
    pub fn parse(to: &str) -> Option<Self> {
        let (rest, tls) = match to.strip_prefix(SCHEME_CLUSTER) {
            Some(r) => (r, false),
            None => (to.strip_prefix(SCHEME_CLUSTER_TLS)?, true),
        };
        let rest = rest.trim_end_matches('/');
        let seeds: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| super::host_port(&format!("{}{s}", super::SCHEME)))
            .collect();
        (!seeds.is_empty()).then_some(Self { seeds, tls })
    }

    /// The single-node URL of the node at `addr` (`host:port`), with
    /// this cluster's scheme: `redis://` or `rediss://`.
    pub fn node_url(&self, addr: &str) -> String {
        let scheme = if self.tls {
            super::SCHEME_TLS
        } else {
            super::SCHEME
        };
        format!("{scheme}{addr}")
    }
}

/// Why the cluster's map cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The reply to `CLUSTER SLOTS` is not the shape Redis gives.
    #[error("unexpected CLUSTER SLOTS reply: {0}")]
    Shape(String),
    /// Some slots have no primary (the cluster is not whole).
    #[error("{0} of {SLOTS} slots have no primary (is the cluster fully set up?)")]
    Uncovered(usize),
    /// The node answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The socket failed or the reply was not RESP.
    #[error("{0}")]
    Reply(String),
    /// The node did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The TLS handshake failed on a certificate (every retry would).
    #[error("{0}")]
    Certificate(String),
}

impl From<ReplyError> for ClusterError {
    fn from(e: ReplyError) -> Self {
        Self::Reply(e.to_string())
    }
}

/// Which node owns every slot, and every node the map names (primaries
/// and their replicas: a replica is where a failover moves its slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    /// For every slot, the index of its primary in `nodes`.
    owner: Vec<u16>,
    /// `host:port` of every node, primaries first in map order.
    pub nodes: Vec<String>,
}

/// An `owner` entry with no primary.
const NO_OWNER: u16 = u16::MAX;

impl SlotMap {
    /// The map in a `CLUSTER SLOTS` reply; a node announced without a host
    /// is at `default_host` (the one asked).
    pub fn from_cluster_slots(
        reply: &BytesFrame,
        default_host: &str,
    ) -> Result<Self, ClusterError> {
        let BytesFrame::Array(ranges) = reply else {
            return Err(ClusterError::Shape(format!("{:?}", reply.kind())));
        };
        let mut map = Self {
            owner: vec![NO_OWNER; SLOTS],
            nodes: Vec::new(),
        };
        let mut replicas = Vec::new();
        for range in ranges {
            let BytesFrame::Array(parts) = range else {
                return Err(ClusterError::Shape("a range that is not an array".into()));
            };
            let (start, end) = match parts.as_slice() {
                [BytesFrame::Integer(s), BytesFrame::Integer(e), _, ..] => (*s, *e),
                _ => {
                    return Err(ClusterError::Shape(
                        "a range without start, end, primary".into(),
                    ))
                }
            };
            if start < 0 || end < start || end >= SLOTS as i64 {
                return Err(ClusterError::Shape(format!("slot range {start}-{end}")));
            }
            let primary = map.index_of(node_addr(&parts[2], default_host)?);
            map.owner[start as usize..=end as usize].fill(primary);
            for r in &parts[3..] {
                replicas.push(node_addr(r, default_host)?);
            }
        }
        for r in replicas {
            map.index_of(r);
        }
        match map.owner.iter().filter(|o| **o == NO_OWNER).count() {
            0 => Ok(map),
            n => Err(ClusterError::Uncovered(n)),
        }
    }

    fn index_of(&mut self, addr: String) -> u16 {
        match self.nodes.iter().position(|n| *n == addr) {
            Some(i) => i as u16,
            None => {
                self.nodes.push(addr);
                (self.nodes.len() - 1) as u16
            }
        }
    }

    /// Adds the nodes a `CLUSTER NODES` reply names (`CLUSTER SLOTS`
    /// leaves out a replica that has not replicated anything yet, and a
    /// failover may make it a primary).
    pub fn add_nodes(&mut self, cluster_nodes: &str, default_host: &str) {
        for line in cluster_nodes.lines() {
            let Some(addr) = line.split_whitespace().nth(1) else {
                continue;
            };
            let addr = addr.split(['@', ',']).next().unwrap_or("");
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                continue;
            }
            let host = if host.is_empty() { default_host } else { host };
            self.index_of(format!("{host}:{port}"));
        }
    }

    /// `host:port` of the primary owning `slot`.
    pub fn owner(&self, slot: u16) -> &str {
        let i = self.owner[slot as usize % SLOTS] as usize;
        self.nodes.get(i).map_or("", String::as_str)
    }

    /// `host:port` of the primary owning `key`'s slot.
    pub fn owner_of_key(&self, key: &[u8]) -> &str {
        self.owner(key_slot(key))
    }

    /// The primaries: nodes that own at least one slot, in map order.
    pub fn primaries(&self) -> Vec<&str> {
        let mut owns = vec![false; self.nodes.len()];
        for o in &self.owner {
            if let Some(x) = owns.get_mut(*o as usize) {
                *x = true;
            }
        }
        self.nodes
            .iter()
            .zip(owns)
            .filter(|(_, o)| *o)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// After `MOVED slot addr`: `slot` is `addr`'s now (until the next
    /// full refresh says otherwise).
    pub fn moved(&mut self, slot: u16, addr: &str) {
        let i = self.index_of(addr.to_owned());
        self.owner[slot as usize % SLOTS] = i;
    }
}

/// `host:port` of one node entry `[host, port, id, …]`.
fn node_addr(entry: &BytesFrame, default_host: &str) -> Result<String, ClusterError> {
    let BytesFrame::Array(fields) = entry else {
        return Err(ClusterError::Shape("a node that is not an array".into()));
    };
    let (host, port) = match fields.as_slice() {
        [BytesFrame::BulkString(h), BytesFrame::Integer(p), ..] => (h, *p),
        _ => return Err(ClusterError::Shape("a node without host and port".into())),
    };
    let host = std::str::from_utf8(host)
        .map_err(|_| ClusterError::Shape("a host that is not UTF-8".into()))?;
    let host = if host.is_empty() || host == "?" {
        default_host
    } else {
        host
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ClusterError::Shape(format!("port {port}")))?;
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// What a cluster node's error reply says about where a record goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED slot host:port`: the slot is that node's now; update the map.
    Moved { slot: u16, addr: String },
    /// `ASK slot host:port`: the slot is being migrated and this key is
    /// already there: send this one command there, after `ASKING`.
    Ask { slot: u16, addr: String },
    /// `READONLY`: the node became a replica (a failover): refresh the map.
    Demoted,
}

impl Redirect {
    /// The redirect in a Redis error text, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let kind = words.next()?;
        if kind == "READONLY" {
            return Some(Self::Demoted);
        }
        let slot = words
            .next()?
            .parse::<u16>()
            .ok()
            .filter(|s| (*s as usize) < SLOTS)?;
        let addr = words.next()?.to_owned();
        match kind {
            "MOVED" => Some(Self::Moved { slot, addr }),
            "ASK" => Some(Self::Ask { slot, addr }),
            _ => None,
        }
    }
}

/// Encodes one command.
pub(crate) fn encode_command(out: &mut BytesMut, args: &[&[u8]]) -> Result<(), ClusterError> {
    super::codec::encode_command(out, args)
        .map(drop)
        .map_err(|e| ClusterError::Shape(format!("encoding a command: {e}")))
}

/// Sends the commands in `out` on `stream` and reads `n` replies.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    out: &[u8],
    n: usize,
) -> Result<Vec<BytesFrame>, ClusterError> {
    let mut stream = stream;
    stream.write_all(out).await.map_err(ReplyError::Io)?;
    stream.flush().await.map_err(ReplyError::Io)?;
    let mut replies = tokio_util::codec::FramedRead::new(stream, Replies);
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match futures_util::StreamExt::next(&mut replies).await {
            Some(r) => got.push(r?),
            None => {
                return Err(ReplyError::Io(std::io::ErrorKind::UnexpectedEof.into()).into());
            }
        }
    }
    Ok(got)
}

/// A short connection to one node (the slot map, an `ASK`).
pub(crate) trait NodeIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> NodeIo for T {}

/// Connects to the node at `addr` (`host:port`), over TLS when `tls` is
/// given (the node's certificate must name its host, or
/// `--tls-server-name`). A certificate problem says so.
pub(crate) async fn connect_node(
    addr: &str,
    tls: Option<&ClientTls>,
) -> Result<Box<dyn NodeIo>, ClusterError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ClusterError::Reply(format!("connecting to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = tls
        .server_name_for(addr)
        .map_err(|e| ClusterError::Refused(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector.connect(name, stream).await.map_err(|e| {
        if crate::tls::is_certificate_problem(&e) {
            ClusterError::Certificate(format!(
                "TLS handshake with {addr} failed: {e} (is --tls-ca the CA that signed the \
                 node's certificate, does it name `{}`, and does Redis want a client \
                 certificate?)",
                tls.expected_name(addr)
            ))
        } else {
            ClusterError::Reply(format!("TLS handshake with {addr}: {e}"))
        }
    })?;
    Ok(Box::new(stream))
}

/// Asks the node at `addr` for the slot map (`AUTH` first when given),
/// over TLS when `tls` is given.
pub async fn fetch_map(
    addr: &str,
    auth: Option<&[&[u8]]>,
    tls: Option<&ClientTls>,
    timeout: std::time::Duration,
) -> Result<SlotMap, ClusterError> {
    let ask = async {
        let stream = connect_node(addr, tls).await?;
        let mut out = BytesMut::new();
        if let Some(auth) = auth {
            encode_command(&mut out, auth)?;
        }
        encode_command(&mut out, &[b"CLUSTER", b"SLOTS"])?;
        encode_command(&mut out, &[b"CLUSTER", b"NODES"])?;
        let n = 2 + usize::from(auth.is_some());
        let replies = exchange(stream, &out, n).await?;
        for r in &replies {
            if let BytesFrame::Error(e) = r {
                return Err(ClusterError::Refused(e.to_string()));
            }
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut map = SlotMap::from_cluster_slots(&replies[n - 2], host)?;
        if let BytesFrame::BulkString(nodes) = &replies[n - 1] {
            map.add_nodes(&String::from_utf8_lossy(nodes), host);
        }
        Ok(map)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ClusterError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_crc16_of_the_key_or_its_hash_tag() {
        // `redis-cli CLUSTER KEYSLOT …` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"key:000000000001"), key_slot(b"key:000000000001"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"{}foo"), redis_protocol::redis_keyslot(b"{}foo"));
        assert_ne!(key_slot(b"{}foo"), key_slot(b""));
        assert!((key_slot(b"anything") as usize) < SLOTS);
    }

    #[test]
    fn a_cluster_url_gives_its_seeds() {
        let t =
            ClusterTarget::parse("redis-cluster://127.0.0.1:7000,10.0.0.2,[::1]:7002/").unwrap();
        assert_eq!(t.seeds, ["127.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"]);
        assert!(!t.tls);
        assert_eq!(t.node_url("127.0.0.1:7000"), "redis://127.0.0.1:7000");
        let t = ClusterTarget::parse("rediss-cluster://10.0.0.2:7000").unwrap();
        assert_eq!(t.seeds, ["10.0.0.2:7000"]);
        assert!(t.tls);
        assert_eq!(t.node_url("10.0.0.3:7001"), "rediss://10.0.0.3:7001");
        assert_eq!(ClusterTarget::parse("redis://127.0.0.1:7000"), None);
        assert_eq!(ClusterTarget::parse("redis-cluster://"), None);
    }

    fn node(host: &str, port: i64) -> BytesFrame {
        BytesFrame::Array(vec![
            BytesFrame::BulkString(host.as_bytes().to_vec().into()),
            BytesFrame::Integer(port),
            BytesFrame::BulkString("id".into()),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<BytesFrame>) -> BytesFrame {
        let mut parts = vec![BytesFrame::Integer(start), BytesFrame::Integer(end)];
        parts.extend(nodes);
        BytesFrame::Array(parts)
    }

    #[test]
    fn the_slot_map_names_each_slots_primary_and_keeps_the_replicas() {
        let reply = BytesFrame::Array(vec![
            range(
                0,
                8191,
                vec![node("127.0.0.1", 7000), node("127.0.0.1", 7003)],
            ),
            range(8192, 16383, vec![node("", 7001)]),
        ]);
        let mut map = SlotMap::from_cluster_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(map.owner(0), "127.0.0.1:7000");
        assert_eq!(map.owner(8191), "127.0.0.1:7000");
        assert_eq!(map.owner(8192), "10.0.0.9:7001");
        assert_eq!(map.owner_of_key(b"foo"), "10.0.0.9:7001");
        assert_eq!(map.primaries(), ["127.0.0.1:7000", "10.0.0.9:7001"]);
        assert_eq!(map.nodes.len(), 3, "the replica is known");
        map.moved(12182, "127.0.0.1:7003");
        assert_eq!(map.owner_of_key(b"foo"), "127.0.0.1:7003");
    }

    #[test]
    fn cluster_nodes_adds_the_replicas_cluster_slots_leaves_out() {
        let reply = BytesFrame::Array(vec![range(0, 16383, vec![node("127.0.0.1", 7000)])]);
        let mut map = SlotMap::from_cluster_slots(&reply, "127.0.0.1").unwrap();
        map.add_nodes(
            "a1 127.0.0.1:7003@17003 slave b2 0 1 3 connected\n\
             b2 127.0.0.1:7000@17000 myself,master - 0 1 1 connected 0-16383\n\
             c3 :0@0 master,noaddr - 0 1 0 disconnected\n",
            "127.0.0.1",
        );
        assert_eq!(map.nodes, ["127.0.0.1:7000", "127.0.0.1:7003"]);
        assert_eq!(map.primaries(), ["127.0.0.1:7000"]);
    }

    #[test]
    fn a_map_with_uncovered_slots_is_refused() {
        let reply = BytesFrame::Array(vec![range(0, 100, vec![node("h", 1)])]);
        assert!(matches!(
            SlotMap::from_cluster_slots(&reply, "h"),
            Err(ClusterError::Uncovered(16283))
        ));
        let bad = BytesFrame::Array(vec![range(5, 70000, vec![node("h", 1)])]);
        assert!(SlotMap::from_cluster_slots(&bad, "h").is_err());
    }

    #[test]
    fn moved_ask_and_readonly_are_redirects() {
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::parse("ASK 12182 127.0.0.1:7002"),
            Some(Redirect::Ask {
                slot: 12182,
                addr: "127.0.0.1:7002".into()
            })
        );
        assert_eq!(
            Redirect::parse("READONLY You can't write against a read only replica."),
            Some(Redirect::Demoted)
        );
        assert_eq!(Redirect::parse("MOVED 99999 h:1"), None);
        assert_eq!(Redirect::parse("ERR syntax error"), None);
    }
}
