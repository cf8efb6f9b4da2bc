//! Redis as a destination: `--to redis://HOST:PORT` (or `rediss://` for
//! TLS) ships the same records, over the same pool, window, retries, dead
//! letter and checkpoint as the native receiver, as Redis commands a plain
//! `GET key` reads back.
//!
//! Why a function inside Redis: a resend after a lost connection, or a
//! second source writing the same key, must not let an older write win.
//! Only Redis can compare and write in one step, so a small Lua function
//! (`FUNCTION LOAD` at every connect, Redis 7) keeps each key's
//! `(version, source id)` stamp in a companion key of the same cluster
//! slot ([`meta_key`]) and writes only when the incoming stamp is newer.
//! `--redis-lww off` ships plain `SET`/`DEL` instead, for speed.
//!
//! Layout: this file parses the destination and builds the keys and
//! stamps; [`codec`] encodes requests and decodes replies (through the
//! `redis-protocol` crate) and maps Redis errors to result codes; the
//! connection's `conn/redis_session.rs` opens a session (AUTH, FUNCTION LOAD) and
//! reads the replies.
pub mod cluster;
pub(crate) mod codec;

use std::sync::OnceLock;

use bytes::Bytes;

/// URL scheme of a plain Redis destination.
pub const SCHEME: &str = "redis://";
/// URL scheme of a Redis destination over TLS.
pub const SCHEME_TLS: &str = "rediss://";

/// Name of the function library loaded at connect.
pub const LIBRARY: &str = "xdrship";
/// Name of the last-writer-wins function.
pub const LWW_FUNCTION: &str = "xdr_lww";
/// Name of the last-writer-wins function for many records in one call.
pub const LWW_MANY_FUNCTION: &str = "xdr_lww_many";

/// The library `FUNCTION LOAD REPLACE` installs. `xdr_lww`: `KEYS[1]` is
/// the record's key, `KEYS[2]` its stamp key; `ARGV[1]` the stamp (fixed
/// width decimal, so string order is `(version, source)` order), `ARGV[2]`
/// the value (absent: a delete, whose stamp stays so that an older put
/// cannot bring the key back). Returns 1 when written, 0 when the key
/// already holds a stamp at least as new (a resend or an older write:
/// `LostConflict`).
///
/// `xdr_lww_many` does the same for N records in one call: `KEYS` are N
/// pairs `(key, stamp key)`; `ARGV` is the deletes' positions (1-based,
/// space-separated, usually empty), the N stamps, then the N values (a
/// delete's empty); it answers an array of N 1s and 0s. A key written
/// twice in one call keeps the newer record, as two calls would (with no
/// delete in the call, by `MSET`'s last-wins over records that each beat
/// the one before; with one, in record order).
///
/// Why the stamps are read with one `MGET` and written with one `MSET`:
/// a `redis.call` from Lua costs Redis microseconds of its one thread
/// whatever it does, and with three calls per record (GET, SET, SET)
/// Redis, not the link, capped a 156 ms / 100 MB/s lab run at ~63K
/// records/s (redis-server at 100% of a core). A call now makes two or
/// three however many records it carries, and passes four strings per
/// record, not five: on loopback, a call of 43 records spends ~107 µs
/// only taking its arguments into Lua and ~100 µs handing `MSET` its
/// own, against 88 µs in `MGET` and `MSET` themselves. `MGET` reads a
/// stamp key of another type as absent and `MSET` replaces it, as `SET`
/// replaces a value of another type, so no record waits on a key nobody
/// but this library writes. A cluster's call would
/// need all its keys in one slot, so cluster connections send one
/// `xdr_lww` per record.
pub const LWW_LIBRARY: &str = r#"#!lua name=xdrship
local function chunked(cmd, list, step)
  local out = {}
  for i = 1, #list, step do
    local part = redis.call(cmd, unpack(list, i, math.min(i + step - 1, #list)))
    if type(part) == 'table' then
      for _, v in ipairs(part) do
        out[#out + 1] = v
      end
    end
  end
  return out
end
redis.register_function('xdr_lww', function(keys, args)
  local cur = redis.call('MGET', keys[2])[1]
  if cur and cur >= args[1] then
    return 0
  end
  if args[2] then
    redis.call('MSET', keys[1], args[2], keys[2], args[1])
  else
    redis.call('DEL', keys[1])
    redis.call('MSET', keys[2], args[1])
  end
  return 1
end)
redis.register_function('xdr_lww_many', function(keys, args)
  local n = #keys / 2
  local dels = {}
  for d in string.gmatch(args[1], '%d+') do
    dels[tonumber(d)] = true
  end
  local any_del = next(dels) ~= nil
  local metas = {}
  for i = 1, n do
    metas[i] = keys[2 * i]
  end
  local cur = chunked('MGET', metas, 1000)
  local newest, out, sets, m = {}, {}, {}, 0
  local final, order = {}, {}
  for i = 1, n do
    local meta, stamp = metas[i], args[1 + i]
    local have = newest[meta] or cur[i]
    if have and have >= stamp then
      out[i] = 0
    else
      newest[meta] = stamp
      out[i] = 1
      local key = keys[2 * i - 1]
      if any_del then
        if final[key] == nil then
          order[#order + 1] = key
        end
        final[key] = { meta, stamp, not dels[i] and args[1 + n + i] }
      else
        sets[m + 1], sets[m + 2], sets[m + 3], sets[m + 4] = key, args[1 + n + i], meta, stamp
        m = m + 4
      end
    end
  end
  local gone = {}
  for _, key in ipairs(order) do
    local f = final[key]
    if f[3] then
      sets[m + 1], sets[m + 2] = key, f[3]
      m = m + 2
    else
      gone[#gone + 1] = key
    end
    sets[m + 1], sets[m + 2] = f[1], f[2]
    m = m + 2
  end
  if #gone > 0 then
    chunked('DEL', gone, 1000)
  end
  if m > 0 then
    chunked('MSET', sets, 1000)
  end
  return out
end)
"#;

/// Prefix of every stamp key.
pub const META_PREFIX: &[u8] = b"xdr:v:";

/// Digits of a `u64` in decimal, the stamp's fixed width per part.
const U64_DIGITS: usize = 20;

/// A Redis destination as `--to` gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`.
    pub addr: String,
    /// `rediss://`: TLS is required.
    pub tls: bool,
    /// Whether writes go through the last-writer-wins function.
    pub lww: bool,
}

impl RedisTarget {
    /// The Redis destination in `to`, if it names one (`redis://` or
    /// `rediss://`); a missing port is Redis's 6379.
    pub fn parse(to: &str, lww: bool) -> Option<Self> {
        let (rest, tls) = if let Some(r) = to.strip_prefix(SCHEME) {
            (r, false)
        } else {
            (to.strip_prefix(SCHEME_TLS)?, true)
        };
        let rest = rest.trim_end_matches('/');
        let has_port = match rest.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        };
        let addr = if has_port {
            rest.to_owned()
        } else {
            format!("{rest}:6379")
        };
        Some(Self { addr, tls, lww })
    }
}

/// Whether `to` names a Redis or Redis Cluster destination (any scheme).
pub fn is_redis(to: &str) -> bool {
    RedisTarget::parse(to, true).is_some() || cluster::ClusterTarget::parse(to).is_some()
}

/// `host:port` of a destination, without a `redis://`/`rediss://` scheme
/// (of a Redis Cluster's URL: its first seed).
pub fn host_port(to: &str) -> String {
    if let Some(c) = cluster::ClusterTarget::parse(to) {
        return c.seeds[0].clone();
    }
    RedisTarget::parse(to, true).map_or_else(|| to.to_owned(), |t| t.addr)
}

/// Credentials from `--token-file`: `PASSWORD`, or `USER PASSWORD` for an
/// ACL user (Redis user names hold no spaces).
pub fn credentials(token: &[u8]) -> (Option<Bytes>, Bytes) {
    let token = token.trim_ascii();
    match token.iter().position(|b| *b == b' ') {
        Some(i) => (
            Some(Bytes::copy_from_slice(&token[..i])),
            Bytes::copy_from_slice(token[i + 1..].trim_ascii()),
        ),
        None => (None, Bytes::copy_from_slice(token)),
    }
}

/// The stamp of a write: version then source id, each as 20 decimal
/// digits, so Redis's string comparison orders stamps as numbers.
pub fn stamp(version: u64, source_id: u64) -> [u8; 2 * U64_DIGITS] {
    let mut out = [b'0'; 2 * U64_DIGITS];
    let text = format!("{version:0w$}{source_id:0w$}", w = U64_DIGITS);
    out.copy_from_slice(text.as_bytes());
    out
}

/// The key holding `key`'s stamp, in the same cluster slot as `key` (so
/// the function may touch both on a cluster): `xdr:v:{KEY}` for a key
/// without braces, else `xdr:v:{TAG}KEY` where `TAG` is a short tag that
/// hashes to `key`'s slot.
pub fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_PREFIX.len() + key.len() + 8);
    out.extend_from_slice(META_PREFIX);
    if !key.is_empty() && !key.iter().any(|b| matches!(b, b'{' | b'}')) {
        out.push(b'{');
        out.extend_from_slice(key);
        out.push(b'}');
    } else {
        let slot = redis_protocol::redis_keyslot(key);
        out.push(b'{');
        out.extend_from_slice(slot_tags()[slot as usize].as_bytes());
        out.push(b'}');
        out.extend_from_slice(key);
    }
    out
}

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// For every slot, a short tag (base-36 digits) whose CRC16 is that slot:
/// found once by counting up until every slot has one.
fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS];
        let mut missing = SLOTS;
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = base36(n);
            let slot = redis_protocol::redis_keyslot(tag.as_bytes()) as usize;
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    })
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::redis_keyslot;

    #[test]
    fn a_redis_url_gives_its_address_and_tls() {
        let t = RedisTarget::parse("redis://10.0.0.2:6380", true).unwrap();
        assert_eq!(t.addr, "10.0.0.2:6380");
        assert!(!t.tls && t.lww);
        let t = RedisTarget::parse("rediss://cache.example", false).unwrap();
        assert_eq!(t.addr, "cache.example:6379");
        assert!(t.tls && !t.lww);
        assert_eq!(
            RedisTarget::parse("redis://[::1]:7000", true).unwrap().addr,
            "[::1]:7000"
        );
        assert_eq!(RedisTarget::parse("10.0.0.2:3000", true), None);
        assert_eq!(host_port("10.0.0.2:3000"), "10.0.0.2:3000");
        assert_eq!(host_port("rediss://10.0.0.2:6390"), "10.0.0.2:6390");
        assert_eq!(
            host_port("rediss-cluster://10.0.0.2:7000,b:7001"),
            "10.0.0.2:7000"
        );
    }

    #[test]
    fn credentials_are_a_password_or_a_user_and_a_password() {
        assert_eq!(credentials(b"s3cret\n"), (None, Bytes::from("s3cret")));
        assert_eq!(
            credentials(b"shipper s3cret\n"),
            (Some(Bytes::from("shipper")), Bytes::from("s3cret"))
        );
    }

    #[test]
    fn stamps_order_as_version_then_source() {
        assert!(stamp(2, 1) > stamp(1, 9));
        assert!(stamp(1, 2) > stamp(1, 1));
        assert!(stamp(u64::MAX, u64::MAX) > stamp(u64::MAX - 1, u64::MAX));
        assert_eq!(stamp(7, 3).len(), 40);
    }

    #[test]
    fn the_stamp_key_shares_the_keys_slot() {
        for key in [
            &b"user:1"[..],
            b"{tag}rest",
            b"a}b",
            b"{}x",
            b"x{",
            b"",
            b"{unterminated",
        ] {
            let meta = meta_key(key);
            assert!(meta.starts_with(META_PREFIX));
            assert_eq!(
                redis_keyslot(&meta),
                redis_keyslot(key),
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(meta_key(b"user:1"), b"xdr:v:{user:1}");
    }

    #[test]
    fn every_slot_has_a_tag() {
        let tags = slot_tags();
        assert_eq!(tags.len(), SLOTS);
        for (slot, tag) in tags.iter().enumerate() {
            assert_eq!(redis_keyslot(tag.as_bytes()) as usize, slot);
        }
    }
}
