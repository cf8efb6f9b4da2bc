//! TLS 1.3 (rustls) for the links between nodes, and the pre-shared token
//! that HELLO carries.
//!
//! Why: records cross datacenters over links that others share. TLS keeps
//! them private and unaltered on the way; the receiver's certificate tells
//! the shipper it reached the right node; and either a client certificate
//! (mutual TLS) or a token tells the receiver who is writing. Only TLS 1.3
//! is offered: both ends are ours, so there is no old peer to keep talking
//! to, and 1.3 has one round trip less and no weak suites to configure.
//! The ring provider is chosen explicitly (no process-wide default to
//! install), so a library user cannot end up with a different one.
//!
//! The same three flag names serve both ends, each meaning "mine" and "the
//! CA I trust for the other end":
//!
//! | flag         | `recv` (server)                     | `ship` / `load` (client)                 |
//! |--------------|-------------------------------------|------------------------------------------|
//! | `--tls-cert` | its certificate chain (turns TLS on) | its client certificate (mutual TLS)      |
//! | `--tls-key`  | the key of `--tls-cert`             | the key of `--tls-cert`                  |
//! | `--tls-ca`   | CA that client certificates must chain to: mutual TLS required | CA the receiver's certificate must chain to (turns TLS on) |
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use subtle::ConstantTimeEq;

/// Why a TLS or token set-up failed; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{flag} {}: no certificate found (expected PEM `-----BEGIN CERTIFICATE-----` blocks)", path.display())]
    NoCertificate {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key.
    #[error("{flag} {}: no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    NoKey {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The token or password file is empty, or a token too short or too
    /// long for HELLO.
    #[error("{flag} {}: {reason}", path.display())]
    BadToken {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The flags do not make a configuration.
    #[error("{0}")]
    Flags(String),
    /// rustls refused the certificates or keys.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// A CA file could not be made into a verifier.
    #[error("--tls-ca {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server name for certificate verification is not valid.
    #[error("`{name}` is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName {
        /// The name.
        name: String,
    },
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file `path`.
pub fn load_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            flag,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`.
pub fn load_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(flag, path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|source| TlsError::Read {
            flag,
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            flag,
            path: path.to_owned(),
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_err(context: impl Into<String>) -> impl FnOnce(rustls::Error) -> TlsError {
    let context = context.into();
    move |source| TlsError::Rustls { context, source }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs("--tls-ca", ca)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The receiver's side: its certificate and key, and when `client_ca` is
/// given, mutual TLS: every client must present a certificate chaining to
/// it, or the handshake fails.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs("--tls-cert", cert)?;
    let key = load_key("--tls-key", key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err("TLS 1.3"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Ca {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(rustls_err("--tls-cert/--tls-key"))?;
    Ok(Arc::new(config))
}

/// The receiver's side of TLS.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// rustls' configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate from the configured CA
    /// (which then authenticates them).
    pub client_auth: bool,
}

/// The server flags as given: TLS on with `--tls-cert` and `--tls-key`;
/// `--tls-ca` (mutual TLS) only with them.
pub fn server_from_flags(
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Option<ServerTls>, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls {
            config: server_config(cert, key, ca)?,
            client_auth: ca.is_some(),
        })),
        (None, None) if ca.is_some() => Err(TlsError::Flags(
            "--tls-ca (require client certificates) needs TLS: give --tls-cert and --tls-key too"
                .into(),
        )),
        (None, None) => Ok(None),
        _ => Err(TlsError::Flags(
            "--tls-cert and --tls-key go together: give both or neither".into(),
        )),
    }
}

/// The shipper's side of TLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// rustls' configuration: trusted roots, optional client certificate.
    pub config: Arc<rustls::ClientConfig>,
    /// Name the receiver's certificate must carry; `None`: the host of the
    /// destination address.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The name to verify for destination `to` (`host:port`).
    pub fn server_name_for(&self, to: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.expected_name(to);
        ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName { name })
    }

    /// The name the certificate of destination `to` (`host:port`) must
    /// carry: `--tls-server-name`, else the host of `to`.
    pub fn expected_name(&self, to: &str) -> String {
        match &self.server_name {
            Some(n) => n.clone(),
            None => host_of(to).to_owned(),
        }
    }
}

/// Whether a failed TLS handshake failed on a certificate (ours refused,
/// theirs not trusted, or not for the name): every retry would fail the
/// same way.
pub fn is_certificate_problem(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::InvalidMessage(_)
            )
        })
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(to: &str) -> &str {
    if let Some(rest) = to.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match to.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => to,
    }
}

/// The client flags as given: TLS on with `--tls-ca`; `--tls-cert` and
/// `--tls-key` (a client certificate for mutual TLS) only with it.
pub fn client_from_flags(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    server_name: Option<String>,
) -> Result<Option<ClientTls>, TlsError> {
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() || server_name.is_some() {
            return Err(TlsError::Flags(
                "--tls-cert, --tls-key and --tls-server-name need TLS: give --tls-ca, \
                 the CA that signed the receiver's certificate"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err("TLS 1.3"))?
        .with_root_certificates(roots(ca)?);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs("--tls-cert", cert)?, load_key("--tls-key", key)?)
            .map_err(rustls_err("--tls-cert/--tls-key"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Flags(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ))
        }
    };
    Ok(Some(ClientTls {
        config: Arc::new(config),
        server_name,
    }))
}

/// A pre-shared token, as the receiver keeps it: only its SHA-256, so
/// that [`Token::verify`] compares two fixed-size digests in constant time
/// and a wrong guess learns neither the content nor the length.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its bytes.
    pub fn new(token: &[u8]) -> Self {
        Token {
            digest: sha256(token),
        }
    }

    /// Whether `presented` is this token, in time independent of where
    /// (or whether) they differ.
    pub fn verify(&self, presented: &[u8]) -> bool {
        bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Reads `--token-file`: the token is the file's content less one trailing
/// newline (`\n` or `\r\n`), at least 16 and at most 65 535 bytes (HELLO's
/// credentials field).
pub fn read_token_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let token = read_secret("--token-file", path)?;
    let bad = |reason: String| TlsError::BadToken {
        flag: "--token-file",
        path: path.to_owned(),
        reason,
    };
    if token.len() < 16 {
        return Err(bad(format!(
            "the token is {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom | base64`)",
            token.len()
        )));
    }
    if token.len() > crate::wire::MAX_SHORT_FIELD {
        return Err(bad(format!(
            "the token is {} bytes; HELLO carries at most {}",
            token.len(),
            crate::wire::MAX_SHORT_FIELD
        )));
    }
    Ok(token)
}

/// Reads a Redis password file (`--token-file` towards `redis://`,
/// `verify --password-file`): `PASSWORD` or `USER PASSWORD`, less one
/// trailing newline. Any non-empty length: the password is whatever the
/// Redis operator set (`requirepass`, an ACL user), not a token of ours.
pub fn read_password_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let password = read_secret(flag, path)?;
    if password.trim_ascii().is_empty() {
        return Err(TlsError::BadToken {
            flag,
            path: path.to_owned(),
            reason: "the file is empty; it holds PASSWORD or USER PASSWORD".into(),
        });
    }
    Ok(password)
}

/// A secret file's content less one trailing newline (`\n` or `\r\n`).
fn read_secret(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let mut secret = read(flag, path)?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_accepts_itself_only() {
        let t = Token::new(b"0123456789abcdef");
        assert!(t.verify(b"0123456789abcdef"));
        assert!(!t.verify(b"0123456789abcdeF"));
        assert!(!t.verify(b"0123456789abcde"));
        assert!(!t.verify(b""));
    }

    #[test]
    fn token_debug_does_not_print_the_token() {
        assert_eq!(
            format!("{:?}", Token::new(b"secret-secret-secret")),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn host_is_taken_from_the_destination() {
        assert_eq!(host_of("10.0.0.2:3000"), "10.0.0.2");
        assert_eq!(host_of("node-b.example:3000"), "node-b.example");
        assert_eq!(host_of("[::1]:3000"), "::1");
        assert_eq!(host_of("node-b"), "node-b");
    }

    #[test]
    fn tls_flags_that_do_not_go_together_are_refused_naming_them() {
        let p = Path::new("/nonexistent");
        let e = server_from_flags(Some(p), None, None).unwrap_err();
        assert!(e.to_string().contains("--tls-cert and --tls-key"), "{e}");
        let e = server_from_flags(None, None, Some(p)).unwrap_err();
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        let e = client_from_flags(None, Some(p), Some(p), None).unwrap_err();
        assert!(e.to_string().contains("give --tls-ca"), "{e}");
    }

    #[test]
    fn missing_certificate_file_names_the_flag_and_the_path() {
        let e = load_certs("--tls-cert", Path::new("/nonexistent/cert.pem")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("--tls-cert /nonexistent/cert.pem:"), "{s}");
    }

    #[test]
    fn short_token_file_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("xdr-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("short");
        std::fs::write(&f, "abc\n").unwrap();
        let e = read_token_file(&f).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("the token is 3 bytes; use at least 16"), "{e}");
    }

    #[test]
    fn a_short_redis_password_is_taken_and_an_empty_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("xdr-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (short, empty) = (dir.join("short"), dir.join("empty"));
        std::fs::write(&short, "abc\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let taken = read_password_file("--token-file", &short);
        let refused = read_password_file("--password-file", &empty);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(taken.unwrap(), b"abc");
        let e = refused.unwrap_err().to_string();
        assert!(e.starts_with("--password-file "), "{e}");
        assert!(e.contains("the file is empty"), "{e}");
    }
}
