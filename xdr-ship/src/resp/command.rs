//! Requests as typed commands, and replies as typed values encoded in the
//! connection's protocol version (RESP2, or RESP3 after `HELLO 3`).
//!
//! Why typed: every command a client may send is matched once, here, with
//! its arity and options checked, so the front doors only act on values
//! and a refusal always carries the reason Redis itself would give.
use bytes::{Bytes, BytesMut};
use redis_protocol::{bytes_utils::Str, resp2, resp3};

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `SET key value` (no options).
    Set(Bytes, Bytes),
    /// `MSET key value [key value …]`.
    MSet(Vec<(Bytes, Bytes)>),
    /// `DEL key …` and `UNLINK key …`.
    Del(Vec<Bytes>),
    /// `GET key`.
    Get(Bytes),
    /// `MGET key …`.
    MGet(Vec<Bytes>),
    /// `EXISTS key …`.
    Exists(Vec<Bytes>),
    /// `SCAN cursor [MATCH pattern] [COUNT n]`.
    Scan {
        /// Where the previous call stopped (0: the start).
        cursor: u64,
        /// Keys to return at most.
        count: usize,
        /// Glob the keys must match.
        pattern: Option<Bytes>,
    },
    /// `DBSIZE`.
    DbSize,
    /// `PING [message]`.
    Ping(Option<Bytes>),
    /// `ECHO message`.
    Echo(Bytes),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello {
        /// Protocol version asked for (`None`: keep the current one).
        proto: Option<u8>,
        /// `AUTH username password`.
        auth: Option<(Bytes, Bytes)>,
    },
    /// `AUTH [username] password`.
    Auth(Bytes),
    /// `SELECT db`.
    Select(i64),
    /// `CLIENT SETNAME/SETINFO/…` accepted without effect.
    ClientNoop,
    /// `CLIENT ID`: this connection's number (a client can tell it is
    /// still on the same connection, e.g. after an error reply).
    ClientId,
    /// `COMMAND`, `COMMAND DOCS`, `COMMAND COUNT`, …
    CommandInfo(Option<Bytes>),
    /// `CONFIG GET parameter …`.
    ConfigGet(Vec<Bytes>),
    /// `INFO [section]`.
    Info,
    /// `QUIT`.
    Quit,
}

/// Keys `SCAN` returns per call when `COUNT` is not given (Redis's own).
pub const DEFAULT_SCAN_COUNT: usize = 10;

/// Why a request is refused: the `-…` error line to answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(text: impl Into<String>) -> Refusal {
    Refusal(text.into())
}

fn wrong_args(name: &str) -> Refusal {
    refuse(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn int(b: &[u8]) -> Result<i64, Refusal> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| refuse("ERR value is not an integer or out of range"))
}

/// Turns a decoded frame (an array of bulk strings) into its arguments.
pub fn arguments(frame: resp2::types::BytesFrame) -> Result<Vec<Bytes>, Refusal> {
    use resp2::types::BytesFrame as F;
    let F::Array(items) = frame else {
        return Err(refuse(
            "ERR Protocol error: expected an array of bulk strings",
        ));
    };
    items
        .into_iter()
        .map(|f| match f {
            F::BulkString(b) | F::SimpleString(b) => Ok(b),
            _ => Err(refuse(
                "ERR Protocol error: expected an array of bulk strings",
            )),
        })
        .collect()
}

/// Parses one request's arguments into a [`Command`].
pub fn parse(args: &[Bytes]) -> Result<Command, Refusal> {
    let Some((name, rest)) = args.split_first() else {
        return Err(refuse("ERR Protocol error: empty command"));
    };
    let name = upper(name);
    let exact = |n: usize| {
        if rest.len() == n {
            Ok(())
        } else {
            Err(wrong_args(&name))
        }
    };
    let some = || {
        if rest.is_empty() {
            Err(wrong_args(&name))
        } else {
            Ok(rest.to_vec())
        }
    };
    Ok(match name.as_str() {
        "SET" => parse_set(rest)?,
        "MSET" => {
            if rest.is_empty() || rest.len() % 2 != 0 {
                return Err(wrong_args(&name));
            }
            Command::MSet(
                rest.chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            )
        }
        "DEL" | "UNLINK" => Command::Del(some()?),
        "GET" => {
            exact(1)?;
            Command::Get(rest[0].clone())
        }
        "MGET" => Command::MGet(some()?),
        "EXISTS" => Command::Exists(some()?),
        "SCAN" => parse_scan(rest)?,
        "DBSIZE" => Command::DbSize,
        "PING" if rest.len() <= 1 => Command::Ping(rest.first().cloned()),
        "ECHO" => {
            exact(1)?;
            Command::Echo(rest[0].clone())
        }
        "HELLO" => parse_hello(rest)?,
        "AUTH" => match rest {
            [password] | [_, password] => Command::Auth(password.clone()),
            _ => return Err(wrong_args(&name)),
        },
        "SELECT" => {
            exact(1)?;
            Command::Select(int(&rest[0])?)
        }
        "CLIENT" => parse_client(rest)?,
        "COMMAND" => Command::CommandInfo(rest.first().map(|s| Bytes::from(upper(s)))),
        "CONFIG" => match rest.split_first() {
            Some((sub, params)) if upper(sub) == "GET" && !params.is_empty() => {
                Command::ConfigGet(params.to_vec())
            }
            _ => return Err(refuse(
                "ERR xdr-ship answers only CONFIG GET (its settings are its command-line flags)",
            )),
        },
        "INFO" => Command::Info,
        "QUIT" => Command::Quit,
        "PING" => return Err(wrong_args(&name)),
        _ => {
            return Err(refuse(format!(
                "ERR unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(&args[0]),
                rest.iter()
                    .take(3)
                    .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                    .collect::<String>()
            )))
        }
    })
}

fn parse_set(rest: &[Bytes]) -> Result<Command, Refusal> {
    match rest {
        [key, value] => Ok(Command::Set(key.clone(), value.clone())),
        [_, _, option, ..] => Err(refuse(format!(
            "ERR SET option '{}' is not supported: writes into the source log carry no expiry or condition (plain SET key value only)",
            String::from_utf8_lossy(option)
        ))),
        _ => Err(wrong_args("set")),
    }
}

fn parse_scan(rest: &[Bytes]) -> Result<Command, Refusal> {
    let Some((cursor, mut opts)) = rest.split_first() else {
        return Err(wrong_args("scan"));
    };
    let cursor = u64::try_from(int(cursor)?).map_err(|_| refuse("ERR invalid cursor"))?;
    let (mut count, mut pattern) = (DEFAULT_SCAN_COUNT, None);
    while let [opt, value, more @ ..] = opts {
        match upper(opt).as_str() {
            "COUNT" => {
                count = usize::try_from(int(value)?)
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or_else(|| refuse("ERR syntax error"))?;
            }
            "MATCH" => pattern = Some(value.clone()),
            _ => return Err(refuse("ERR syntax error")),
        }
        opts = more;
    }
    if !opts.is_empty() {
        return Err(refuse("ERR syntax error"));
    }
    Ok(Command::Scan {
        cursor,
        count,
        pattern,
    })
}

fn parse_hello(rest: &[Bytes]) -> Result<Command, Refusal> {
    let Some((proto, mut opts)) = rest.split_first() else {
        return Ok(Command::Hello {
            proto: None,
            auth: None,
        });
    };
    let proto = match int(proto) {
        Ok(2) => 2,
        Ok(3) => 3,
        _ => return Err(refuse("NOPROTO unsupported protocol version")),
    };
    let mut auth = None;
    loop {
        match opts {
            [] => break,
            [opt, user, pass, more @ ..] if upper(opt) == "AUTH" => {
                auth = Some((user.clone(), pass.clone()));
                opts = more;
            }
            [opt, _name, more @ ..] if upper(opt) == "SETNAME" => opts = more,
            _ => return Err(refuse("ERR syntax error in HELLO option")),
        }
    }
    Ok(Command::Hello {
        proto: Some(proto),
        auth,
    })
}

fn parse_client(rest: &[Bytes]) -> Result<Command, Refusal> {
    match rest.first().map(|s| upper(s)).as_deref() {
        Some("SETNAME" | "SETINFO") => Ok(Command::ClientNoop),
        Some("ID") => Ok(Command::ClientId),
        _ => Err(refuse(
            "ERR xdr-ship answers only CLIENT SETNAME, CLIENT SETINFO and CLIENT ID",
        )),
    }
}

/// Whether a command changes data (refused `-READONLY` by a read-only door).
pub fn is_write(cmd: &Command) -> bool {
    matches!(cmd, Command::Set(..) | Command::MSet(_) | Command::Del(_))
}

/// Whether a command may run before `AUTH` on a door that asks for one.
pub fn allowed_unauthenticated(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Auth(_) | Command::Hello { .. } | Command::Quit
    )
}

/// One reply, independent of the protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+text`.
    Status(&'static str),
    /// `-text` (the text starts with its code: `ERR`, `READONLY`, …).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` bulk string.
    Bulk(Bytes),
    /// Null (`$-1` in RESP2, `_` in RESP3).
    Null,
    /// `*n`.
    Array(Vec<Reply>),
    /// A map in RESP3, a flat key-value array in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Status("OK");

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(s.into()))
    }

    fn resp2(self) -> resp2::types::BytesFrame {
        use resp2::types::BytesFrame as F;
        match self {
            Reply::Status(s) => F::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => F::Error(Str::from(e)),
            Reply::Int(n) => F::Integer(n),
            Reply::Bulk(b) => F::BulkString(b),
            Reply::Null => F::Null,
            Reply::Array(items) => F::Array(items.into_iter().map(Reply::resp2).collect()),
            Reply::Map(pairs) => F::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
        }
    }

    fn resp3(self) -> resp3::types::BytesFrame {
        use resp3::types::BytesFrame as F;
        let attributes = None;
        match self {
            Reply::Status(s) => F::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes,
            },
            Reply::Error(e) => F::SimpleError {
                data: Str::from(e),
                attributes,
            },
            Reply::Int(data) => F::Number { data, attributes },
            Reply::Bulk(data) => F::BlobString { data, attributes },
            Reply::Null => F::Null,
            Reply::Array(items) => F::Array {
                data: items.into_iter().map(Reply::resp3).collect(),
                attributes,
            },
            Reply::Map(pairs) => F::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.resp3(), v.resp3()))
                    .collect(),
                attributes,
            },
        }
    }

    /// Appends the reply to `out` in protocol `proto` (2 or 3).
    pub fn encode(self, proto: u8, out: &mut BytesMut) {
        // Encoding into a buffer the encoder extends itself cannot fail.
        let done = if proto >= 3 {
            resp3::encode::complete::extend_encode(out, &self.resp3(), false).map(drop)
        } else {
            resp2::encode::extend_encode(out, &self.resp2(), false).map(drop)
        };
        debug_assert!(done.is_ok(), "encoding a reply: {done:?}");
    }
}

/// Checks the lengths a partial request declares before its bytes arrive,
/// so that a `$1099511627776` is refused at once instead of being waited
/// for. Only the `*N` and `$L` prefixes are read (the decoding itself is
/// the codec's); a request that is not an array is left to the codec.
pub fn check_declared_lengths(buf: &[u8], max_args: usize, max_bulk: usize) -> Result<(), Refusal> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..at + end], at + end + 2))
    }
    fn number(digits: &[u8]) -> Option<i64> {
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
    if buf.first() != Some(&b'*') {
        return Ok(());
    }
    let Some((head, mut at)) = line(buf, 1) else {
        return Ok(());
    };
    let n = number(head).ok_or_else(|| refuse("ERR Protocol error: invalid multibulk length"))?;
    if n > max_args as i64 {
        return Err(refuse("ERR Protocol error: invalid multibulk length"));
    }
    for _ in 0..n.max(0) {
        if buf.get(at) != Some(&b'$') {
            return Ok(());
        }
        let Some((len, next)) = line(buf, at + 1) else {
            return Ok(());
        };
        let len = number(len).ok_or_else(|| refuse("ERR Protocol error: invalid bulk length"))?;
        if len > max_bulk as i64 {
            return Err(refuse("ERR Protocol error: invalid bulk length"));
        }
        at = next + len.max(0) as usize + 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    fn encoded(reply: Reply, proto: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(proto, &mut out);
        out.to_vec()
    }

    #[test]
    fn set_with_key_and_value_is_a_write() {
        let cmd = parse(&args(&["set", "k", "v"])).unwrap();
        assert_eq!(cmd, Command::Set("k".into(), "v".into()));
        assert!(is_write(&cmd));
    }

    #[test]
    fn set_options_are_refused_by_name() {
        let err = parse(&args(&["SET", "k", "v", "EX", "10"])).unwrap_err();
        assert!(err.0.starts_with("ERR") && err.0.contains("'EX'"), "{err}");
    }

    #[test]
    fn mset_needs_pairs() {
        assert_eq!(
            parse(&args(&["MSET", "a", "1", "b", "2"])).unwrap(),
            Command::MSet(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert!(parse(&args(&["MSET", "a"]))
            .unwrap_err()
            .0
            .contains("wrong number"));
    }

    #[test]
    fn an_unknown_command_is_named_in_its_error() {
        let err = parse(&args(&["FLUSHALL"])).unwrap_err();
        assert!(err.0.starts_with("ERR unknown command 'FLUSHALL'"), "{err}");
    }

    #[test]
    fn hello_takes_a_version_and_auth() {
        assert_eq!(
            parse(&args(&["HELLO", "3", "AUTH", "default", "tok"])).unwrap(),
            Command::Hello {
                proto: Some(3),
                auth: Some(("default".into(), "tok".into()))
            }
        );
        assert!(parse(&args(&["HELLO", "4"]))
            .unwrap_err()
            .0
            .starts_with("NOPROTO"));
    }

    #[test]
    fn scan_reads_its_options() {
        assert_eq!(
            parse(&args(&["SCAN", "5", "MATCH", "a*", "COUNT", "100"])).unwrap(),
            Command::Scan {
                cursor: 5,
                count: 100,
                pattern: Some("a*".into())
            }
        );
        assert!(parse(&args(&["SCAN", "0", "COUNT"])).is_err());
    }

    #[test]
    fn a_null_differs_between_resp2_and_resp3() {
        assert_eq!(encoded(Reply::Null, 2), b"$-1\r\n");
        assert_eq!(encoded(Reply::Null, 3), b"_\r\n");
    }

    #[test]
    fn a_map_is_flat_in_resp2() {
        let map = Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]);
        assert_eq!(encoded(map.clone(), 2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(map, 3), b"%1\r\n$1\r\na\r\n:1\r\n");
    }

    #[test]
    fn a_huge_declared_bulk_is_refused_before_it_arrives() {
        let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1099511627776\r\n";
        let err = check_declared_lengths(head, 1024, 1 << 20).unwrap_err();
        assert!(err.0.contains("invalid bulk length"), "{err}");
        assert!(
            check_declared_lengths(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab", 1024, 1 << 20)
                .is_ok()
        );
        assert!(check_declared_lengths(b"*99999\r\n", 1024, 1 << 20).is_err());
    }
}
