//! The security flags of the client commands (`ship`, `load`): TLS towards
//! the receiver and the HELLO token. See `xdr_ship::tls` for what each
//! flag means on either end.
use std::path::PathBuf;

use anyhow::Context;
use xdr_ship::{ship::ShipConfig, tls};

/// TLS towards a server: the receiver, or a Redis destination (`verify`).
#[derive(clap::Args, Debug, Default)]
pub struct ClientTlsArgs {
    /// Use TLS 1.3; the server's certificate must chain to this CA (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host of the
    /// address).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The TLS the flags ask for (`None`: plain TCP).
    pub fn client_tls(&self) -> anyhow::Result<Option<tls::ClientTls>> {
        tls::client_from_flags(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_server_name.clone(),
        )
        .context("setting up TLS")
    }
}

/// TLS and authentication towards the receiver.
#[derive(clap::Args, Debug, Default)]
pub struct ClientSecurity {
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// File holding the receiver's pre-shared token, sent in HELLO (at
    /// least 16 bytes); towards Redis, its password (`PASSWORD`, or `USER
    /// PASSWORD` for an ACL user), sent in AUTH.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl ClientSecurity {
    /// Sets `cfg.tls` and `cfg.token` from the flags.
    pub fn apply(&self, cfg: &mut ShipConfig) -> anyhow::Result<()> {
        cfg.tls = self.tls.client_tls()?;
        let redis = xdr_ship::ship::redis::is_redis(&cfg.to);
        cfg.token = match &self.token_file {
            Some(path) if redis => Some(tls::read_password_file("--token-file", path)?.into()),
            Some(path) => Some(tls::read_token_file(path)?.into()),
            None => None,
        };
        Ok(())
    }
}
