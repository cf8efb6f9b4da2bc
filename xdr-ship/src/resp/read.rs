//! The read-only RESP door of the destination (`recv --listen-resp
//! ADDR`): GET, MGET, EXISTS, SCAN, DBSIZE and INFO answered from the
//! store the receiver applies into (memory or durable), so any Redis client
//! can read what arrived. Writes are refused with `-READONLY`: the store's
//! only writer is the shipper, under last-writer-wins.
//!
//! Why SCAN's cursor looks like this: the store keeps its keys in lock
//! stripes of hash maps, whose iteration order changes when a map grows.
//! The cursor names a stripe (high 16 bits) and a 48-bit key hash within it
//! (the low bits): each call returns the stripe's keys in hash order from
//! that hash on, so a key present for the whole scan is returned exactly
//! once, whatever is written meanwhile (Redis's own guarantee is "at
//! least once").
use std::sync::Arc;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use super::{
    command::{Command, Reply},
    conn::{self, Door, Pending},
    RespConfig, RespError, RespStats,
};
use crate::{srclog::Log, store::Store};

/// Bits of a SCAN cursor that hold the key hash.
const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;
/// Most stripes a cursor can name.
const MAX_STRIPES: usize = 1 << (64 - HASH_BITS);

/// A read-only door into `store`.
#[derive(Clone, Debug)]
pub struct StoreDoor {
    store: Store,
    /// Counters.
    pub stats: Arc<RespStats>,
}

impl StoreDoor {
    /// A door into `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            stats: Arc::default(),
        }
    }

    fn value(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
        match self.store.get(key) {
            Ok(found) => Ok(found.and_then(|r| r.value)),
            Err(e) => Err(format!("ERR reading the store: {e}")),
        }
    }

    fn get(&self, keys: &[Bytes]) -> Result<Vec<Reply>, String> {
        keys.iter()
            .map(|k| Ok(self.value(k)?.map_or(Reply::Null, Reply::Bulk)))
            .collect()
    }

    fn exists(&self, keys: &[Bytes]) -> Result<Reply, String> {
        let mut n = 0;
        for k in keys {
            n += i64::from(self.value(k)?.is_some());
        }
        Ok(Reply::Int(n))
    }

    fn dbsize(&self) -> Result<Reply, String> {
        let mut n = 0;
        for stripe in 0..self.store.stripe_count() {
            n += self.live_keys(stripe)?.len();
        }
        Ok(Reply::Int(n as i64))
    }

    fn live_keys(&self, stripe: usize) -> Result<Vec<Box<[u8]>>, String> {
        self.store
            .live_keys(stripe)
            .map_err(|e| format!("ERR reading the store: {e}"))
    }

    /// One SCAN step: `count` keys at least (unless the scan ends), from
    /// `cursor` on.
    fn scan(&self, cursor: u64, count: usize, pattern: Option<&[u8]>) -> Result<Reply, String> {
        let stripes = self.store.stripe_count().min(MAX_STRIPES);
        let (mut stripe, mut from) = ((cursor >> HASH_BITS) as usize, cursor & HASH_MASK);
        let mut found = Vec::new();
        while stripe < stripes && found.len() < count {
            let mut keys: Vec<(u64, Box<[u8]>)> = self
                .live_keys(stripe)?
                .into_iter()
                .map(|k| (key_hash(&k), k))
                .filter(|(h, _)| *h >= from)
                .collect();
            keys.sort_unstable();
            let want = count - found.len();
            if keys.len() <= want {
                found.extend(keys.into_iter().map(|(_, k)| k));
                (stripe, from) = (stripe + 1, 0);
                continue;
            }
            // Keys sharing the last hash are taken together, so the next
            // cursor (that hash + 1) skips none.
            let last = keys[want - 1].0;
            let cut = keys.partition_point(|(h, _)| *h <= last);
            found.extend(keys.into_iter().take(cut).map(|(_, k)| k));
            (stripe, from) = if last == HASH_MASK {
                (stripe + 1, 0)
            } else {
                (stripe, last + 1)
            };
        }
        let next = if stripe >= stripes {
            0
        } else {
            ((stripe as u64) << HASH_BITS) | from
        };
        let keys = found
            .into_iter()
            .filter(|k| pattern.is_none_or(|p| glob_match(p, k)))
            .map(|k| Reply::Bulk(Bytes::from(k.into_vec())))
            .collect();
        Ok(Reply::Array(vec![
            Reply::text(next.to_string()),
            Reply::Array(keys),
        ]))
    }

    fn info(&self) -> String {
        let s = self.store.stats();
        format!(
            "# Server\r\nredis_version:7.0.0\r\nxdr_ship_version:{}\r\nredis_mode:standalone\r\n\r\n\
             # Replication\r\nrole:replica\r\n\r\n# xdr\r\nstore_applied:{}\r\nstore_lost_conflict:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            s.applied,
            s.lost_conflict,
        )
    }
}

/// A key's place within its stripe, in the cursor's 48 bits.
fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key) & HASH_MASK
}

/// Redis's glob (`*`, `?`, `[a-z]`, `[^…]`, `\x`) over bytes, as its
/// `stringmatchlen`. Hand-written because Redis keys are bytes, not paths:
/// the glob crates match paths or text and add syntax Redis lacks (`{a,b}`,
/// `**`), which would answer a `SCAN MATCH` differently from Redis.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_match(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (matched, after) = class_match(rest, c);
            matched && glob_match(after, tail)
        }
        Some((b'\\', [lit, rest @ ..])) | Some((lit, rest)) => {
            s.first() == Some(lit) && glob_match(rest, &s[1..])
        }
    }
}

/// Whether `c` is in the class starting after `[`; and the pattern after
/// its `]`.
fn class_match(mut p: &[u8], c: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut hit = false;
    loop {
        match p {
            [] => return (hit != negate, p),
            [b']', rest @ ..] => return (hit != negate, rest),
            [b'\\', x, rest @ ..] => {
                hit |= *x == c;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                hit |= (lo..=hi).contains(&c);
                p = rest;
            }
            [x, rest @ ..] => {
                hit |= *x == c;
                p = rest;
            }
        }
    }
}

impl Door for StoreDoor {
    fn stats(&self) -> &RespStats {
        &self.stats
    }

    fn log(&self) -> Option<&Log> {
        None
    }

    fn run(&self, cmd: Command) -> Pending {
        let answer = match cmd {
            Command::Get(key) => self.get(&[key]).map(|mut r| r.remove(0)),
            Command::MGet(keys) => self.get(&keys).map(Reply::Array),
            Command::Exists(keys) => self.exists(&keys),
            Command::Scan {
                cursor,
                count,
                pattern,
            } => self.scan(cursor, count, pattern.as_deref()),
            Command::DbSize => self.dbsize(),
            Command::Info => Ok(Reply::text(self.info())),
            Command::Set(..) | Command::MSet(_) | Command::Del(_) => Err(
                "READONLY You can't write against a read only replica (xdr-ship recv: the destination is written only by the shipper)".into(),
            ),
            other => Err(format!("ERR '{other:?}' is not served by a read-only door")),
        };
        match answer {
            Ok(reply) => Pending::now(reply),
            Err(text) => Pending::error(&self.stats, text),
        }
    }
}

/// Serves `listener` read-only from `door` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    door: StoreDoor,
    cfg: RespConfig,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    conn::serve(listener, door, cfg, stop).await
}

/// Binds `addr` and serves it read-only from `store` until `stop` (what
/// `recv --listen-resp` runs); the bound address and the task.
pub fn start(
    addr: std::net::SocketAddr,
    store: Store,
    cfg: RespConfig,
    insecure: bool,
    stop: tokio_util::sync::CancellationToken,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ),
    RespError,
> {
    let listener = super::ingest::bind(addr, &cfg, insecure)?;
    let bound = listener
        .local_addr()
        .map_err(|source| RespError::Bind { addr, source })?;
    let task = tokio::spawn(serve(listener, StoreDoor::new(store), cfg, stop));
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Write;

    fn store_with(keys: usize) -> Store {
        let store = Store::memory();
        let writes = (0..keys)
            .map(|i| Write {
                key: Bytes::from(format!("k:{i}")),
                value: Some(Bytes::from(format!("v{i}"))),
                version: 1,
                source_id: 1,
            })
            .collect();
        block_on(store.apply(writes)).unwrap();
        store
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn scan_all(door: &StoreDoor, count: usize) -> Vec<Bytes> {
        let (mut cursor, mut keys) = (0, Vec::new());
        loop {
            let Ok(Reply::Array(parts)) = door.scan(cursor, count, None) else {
                panic!("SCAN did not answer an array");
            };
            let [Reply::Bulk(next), Reply::Array(batch)] = &parts[..] else {
                panic!("SCAN answered {parts:?}");
            };
            keys.extend(batch.iter().map(|r| match r {
                Reply::Bulk(k) => k.clone(),
                other => panic!("a key as {other:?}"),
            }));
            cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
            if cursor == 0 {
                return keys;
            }
        }
    }

    #[test]
    fn a_full_scan_returns_every_key_once() {
        let door = StoreDoor::new(store_with(1000));
        for count in [1, 7, 10, 5000] {
            let mut keys = scan_all(&door, count);
            keys.sort();
            let before = keys.len();
            keys.dedup();
            assert_eq!((before, keys.len()), (1000, 1000), "COUNT {count}");
        }
    }

    #[test]
    fn writes_are_refused_readonly() {
        let door = StoreDoor::new(store_with(1));
        let p = door.run(Command::Set("k:0".into(), "x".into()));
        assert!(matches!(p.reply, Reply::Error(ref e) if e.starts_with("READONLY")));
        let p = door.run(Command::Get("k:0".into()));
        assert_eq!(p.reply, Reply::Bulk("v0".into()));
    }

    #[test]
    fn glob_follows_redis() {
        assert!(glob_match(b"user:*", b"user:1"));
        assert!(!glob_match(b"user:*", b"users"));
        assert!(glob_match(b"k?y", b"key"));
        assert!(glob_match(b"k[a-c]", b"kb"));
        assert!(!glob_match(b"k[^a-c]", b"kb"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
        assert!(glob_match(b"*", b""));
    }
}
