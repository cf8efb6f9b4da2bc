//! `recv --config FILE`: the destination node's settings in TOML, so a
//! service unit runs `xdr-ship recv --config /etc/xdr-ship/recv.toml` and
//! the operator edits one file. Flags given on the command line override
//! the file's values; what neither sets takes the flag's default.
//!
//! Why in the library, with typed errors: like the source node's
//! destinations file, this file is an interface of the product; a mistake
//! in it comes back as a [`ConfigError`] (the one the destinations file
//! uses too) naming the file, the line and the key, not as a parser's dump.
//!
//! ```toml
//! listen = "0.0.0.0:3000"
//! store = "/var/lib/xdr-ship/store"   # or: memory = true
//! durability = "sync"                 # or "os"
//! metrics = "127.0.0.1:9465"
//! token-file = "/etc/xdr-ship/token"
//!
//! [limits]
//! rcvbuf = "15MiB"
//! max-connections = 1024
//! max-in-flight = 65536
//! handshake-timeout = "10s"
//! idle-timeout = "5m"
//!
//! [tls]
//! cert = "/etc/xdr-ship/recv.crt"
//! key = "/etc/xdr-ship/recv.key"
//! ca = "/etc/xdr-ship/clients-ca.crt" # mutual TLS
//! ```
use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use toml::Spanned;

pub use crate::config_file::ConfigError;
use crate::store::Durability;

/// What the file may hold, as the errors say it.
pub const ACCEPTED: &str =
    "the recv config takes listen, store, memory, durability, metrics, listen-resp, \
     token-file, insecure, interval, json, [limits] rcvbuf, max-connections, max-in-flight, \
     handshake-timeout, idle-timeout, and [tls] cert, key, ca";

/// The file's settings; `None` where it says nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecvFileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Directory of the durable store.
    pub store: Option<PathBuf>,
    /// Keep records in memory only.
    pub memory: Option<bool>,
    /// When to acknowledge.
    pub durability: Option<Durability>,
    /// Prometheus exporter address.
    pub metrics: Option<SocketAddr>,
    /// Read-only RESP port (`recv --listen-resp`).
    pub listen_resp: Option<SocketAddr>,
    /// Pre-shared token file.
    pub token_file: Option<PathBuf>,
    /// Allow a non-loopback listen without authentication.
    pub insecure: Option<bool>,
    /// Time between status lines.
    pub interval: Option<Duration>,
    /// Status lines as JSON.
    pub json: Option<bool>,
    /// SO_RCVBUF of every connection, bytes.
    pub rcvbuf: Option<usize>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Requests one connection may have unanswered.
    pub max_in_flight: Option<u32>,
    /// Time a new connection has to say HELLO.
    pub handshake_timeout: Option<Duration>,
    /// Idle connections are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA of the client certificates (mutual TLS).
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    listen: Option<Spanned<String>>,
    store: Option<PathBuf>,
    memory: Option<Spanned<bool>>,
    durability: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    listen_resp: Option<Spanned<String>>,
    token_file: Option<PathBuf>,
    insecure: Option<bool>,
    interval: Option<Spanned<String>>,
    json: Option<bool>,
    limits: Option<Limits>,
    tls: Option<Tls>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Limits {
    rcvbuf: Option<Spanned<SizeValue>>,
    max_connections: Option<Spanned<usize>>,
    max_in_flight: Option<Spanned<u32>>,
    handshake_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    ca: Option<PathBuf>,
}

/// `rcvbuf = 65536` or `rcvbuf = "15MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<RecvFileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))?;
    parse(&text, path)
}

/// The settings of a file's `text` (`path` labels errors).
pub fn parse(text: &str, path: &Path) -> Result<RecvFileConfig, ConfigError> {
    let file: File =
        toml::from_str(text).map_err(|e| ConfigError::syntax(text, path, ACCEPTED, &e))?;
    let at = Values { text, path };
    let mut out = at.top_level(&file)?;
    out.store = file.store;
    out.token_file = file.token_file;
    if let Some(m) = file.memory.filter(|m| *m.get_ref() && out.store.is_some()) {
        return Err(at.bad(
            "memory",
            m.span(),
            "the file sets both store and memory = true: choose one".to_owned(),
        ));
    }
    if let Some(l) = file.limits {
        at.limits(&l, &mut out)?;
    }
    if let Some(t) = file.tls {
        tls(&at, t, &mut out)?;
    }
    Ok(out)
}

/// Checks the values of one file's `text`, naming `path` and the line.
struct Values<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Values<'_> {
    /// The value of `key` at `span` is wrong for `reason`.
    fn bad(&self, key: &'static str, span: Range<usize>, reason: String) -> ConfigError {
        ConfigError::value(self.text, self.path, (key, span), None, reason)
    }

    /// The settings outside the tables (but the paths, taken as they are).
    fn top_level(&self, file: &File) -> Result<RecvFileConfig, ConfigError> {
        Ok(RecvFileConfig {
            listen: self.addr("listen", &file.listen)?,
            memory: file.memory.as_ref().map(|m| *m.get_ref()),
            durability: file
                .durability
                .as_ref()
                .map(|s| {
                    s.get_ref()
                        .parse::<Durability>()
                        .map_err(|e| self.bad("durability", s.span(), e.to_string()))
                })
                .transpose()?,
            metrics: self.addr("metrics", &file.metrics)?,
            listen_resp: self.addr("listen-resp", &file.listen_resp)?,
            insecure: file.insecure,
            interval: self.duration("interval", &file.interval)?,
            json: file.json,
            ..RecvFileConfig::default()
        })
    }

    /// The `[limits]` table into `out`.
    fn limits(&self, l: &Limits, out: &mut RecvFileConfig) -> Result<(), ConfigError> {
        out.rcvbuf = l
            .rcvbuf
            .as_ref()
            .map(|s| size(s.get_ref()).map_err(|reason| self.bad("rcvbuf", s.span(), reason)))
            .transpose()?;
        out.max_connections = self.at_least_one("max-connections", &l.max_connections)?;
        out.max_in_flight = self.at_least_one("max-in-flight", &l.max_in_flight)?;
        out.handshake_timeout = self.duration("handshake-timeout", &l.handshake_timeout)?;
        out.idle_timeout = self.duration("idle-timeout", &l.idle_timeout)?;
        Ok(())
    }

    fn addr(
        &self,
        key: &'static str,
        v: &Option<Spanned<String>>,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        v.as_ref()
            .map(|s| {
                s.get_ref().parse::<SocketAddr>().map_err(|e| {
                    self.bad(
                        key,
                        s.span(),
                        format!("{e}; expected HOST:PORT such as 0.0.0.0:3000"),
                    )
                })
            })
            .transpose()
    }

    fn duration(
        &self,
        key: &'static str,
        v: &Option<Spanned<String>>,
    ) -> Result<Option<Duration>, ConfigError> {
        v.as_ref()
            .map(|s| parse_duration(s.get_ref()).map_err(|reason| self.bad(key, s.span(), reason)))
            .transpose()
    }

    fn at_least_one<T: Copy + PartialEq + From<u8>>(
        &self,
        key: &'static str,
        v: &Option<Spanned<T>>,
    ) -> Result<Option<T>, ConfigError> {
        match v {
            Some(s) if *s.get_ref() == T::from(0) => {
                Err(self.bad(key, s.span(), "must be ≥ 1".to_owned()))
            }
            Some(s) => Ok(Some(*s.get_ref())),
            None => Ok(None),
        }
    }
}

/// The `[tls]` table into `out`: cert and key come together.
fn tls(at: &Values<'_>, t: Tls, out: &mut RecvFileConfig) -> Result<(), ConfigError> {
    match (&t.cert, &t.key) {
        (Some(c), None) => {
            return Err(at.bad("cert", c.span(), "[tls] needs key beside cert".to_owned()))
        }
        (None, Some(k)) => {
            return Err(at.bad("key", k.span(), "[tls] needs cert beside key".to_owned()))
        }
        _ => {}
    }
    out.tls_cert = t.cert.map(Spanned::into_inner);
    out.tls_key = t.key.map(Spanned::into_inner);
    out.tls_ca = t.ca;
    Ok(())
}

/// A duration such as `10s` or `5m`, longer than zero (the flags' rule).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 1s, 250ms or 2m"))?;
    if d.is_zero() {
        return Err("must be longer than zero, e.g. 1s or 250ms".to_owned());
    }
    Ok(d)
}

/// A size in bytes, a number or text with units (the flags' rule).
fn size(v: &SizeValue) -> Result<usize, String> {
    let bytes = match v {
        SizeValue::Bytes(n) => *n,
        SizeValue::Text(s) => byte_unit::Byte::parse_str(s, true)
            .map_err(|e| format!("{e}; expected a size such as 5MiB, 15MB or 65536"))?
            .as_u64(),
    };
    usize::try_from(bytes).map_err(|_| "too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<RecvFileConfig, ConfigError> {
        parse(text, Path::new("recv.toml"))
    }

    #[test]
    fn every_setting_is_read_from_its_key() {
        let c = parse_str(
            "listen = \"0.0.0.0:3001\"\nstore = \"/var/lib/x\"\ndurability = \"os\"\n\
             metrics = \"127.0.0.1:9465\"\nlisten-resp = \"127.0.0.1:6380\"\ntoken-file = \"/etc/t\"\ninterval = \"2s\"\n\
             [limits]\nrcvbuf = \"1MiB\"\nmax-connections = 8\nmax-in-flight = 16\n\
             handshake-timeout = \"3s\"\nidle-timeout = \"1m\"\n\
             [tls]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:3001".parse().unwrap()));
        assert_eq!(c.store.as_deref(), Some(Path::new("/var/lib/x")));
        assert_eq!(c.durability, Some(Durability::Os));
        assert_eq!(c.metrics, Some("127.0.0.1:9465".parse().unwrap()));
        assert_eq!(c.listen_resp, Some("127.0.0.1:6380".parse().unwrap()));
        assert_eq!(c.token_file.as_deref(), Some(Path::new("/etc/t")));
        assert_eq!(c.interval, Some(Duration::from_secs(2)));
        assert_eq!(c.rcvbuf, Some(1 << 20));
        assert_eq!((c.max_connections, c.max_in_flight), (Some(8), Some(16)));
        assert_eq!(c.handshake_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.tls_ca.as_deref(), Some(Path::new("/a")));
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(parse_str("").unwrap(), RecvFileConfig::default());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse_str("listen = \"127.0.0.1:3000\"\n\nspeed = 3\n").unwrap_err();
        match &err {
            ConfigError::Syntax { line, key, .. } => {
                assert_eq!((*line, key.as_deref()), (3, Some("speed")));
            }
            e => panic!("not a syntax error: {e}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("recv.toml: line 3, key `speed`"), "{text}");
    }

    #[test]
    fn an_unknown_key_in_a_section_is_named_with_its_line() {
        let err = parse_str("[limits]\nmax-connections = 4\nmax-conns = 5\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("recv.toml: line 3, key `max-conns`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_line_and_key() {
        let err = parse_str("store = \"/s\"\ndurability = \"sometimes\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 2,
                    key: "durability",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_str("[limits]\n\nidle-timeout = \"soon\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 3,
                    key: "idle-timeout",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_str("listen = \"nowhere\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 1,
                    key: "listen",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_limits_are_out_of_range() {
        let err = parse_str("[limits]\nmax-in-flight = 0\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 2,
                    key: "max-in-flight",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let err = parse_str("memory = \"yes\"\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("recv.toml: line 1, key `memory`"),
            "{err}"
        );
    }

    #[test]
    fn store_and_memory_together_are_refused() {
        let err = parse_str("store = \"/s\"\nmemory = true\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 2,
                    key: "memory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("choose one"), "{err}");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let err = parse_str("[tls]\ncert = \"/c\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Value {
                    line: 2,
                    key: "cert",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_names_it() {
        let path = Path::new("/nonexistent/recv.toml");
        let err = load(path).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/recv.toml"), "{err}");
    }
}
