//! TLS and authentication at the receiver, on loopback, with certificates
//! made by the tests (rcgen): who gets in, what the others are told, and
//! that nothing an unauthenticated peer sends is ever applied.
mod common;

use common::{ship_quietly, Recv, TempDir, LIMIT};

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::{codec::Framed, sync::CancellationToken};
use xdr_ship::{
    server::{self, ServerConfig, ServerError},
    ship::{GenerateSpec, Generator, ShipConfig, ShipError, ShipSummary},
    tls::{self, Token},
    wire::{Frame, Hello, Message, OrderingMode, ResultCode, WireCodec, Write},
};

const TOKEN: &[u8] = b"a-pre-shared-token-for-tests-0123";

/// PEM files of a CA, a server certificate for 127.0.0.1 signed by it,
/// and a client certificate signed by it.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &TempDir, tag: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("xdr-ship test CA {tag}"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["shipper.test".into()]);
        Pki {
            ca: dir.write(&format!("{tag}-ca.pem"), ca.pem()),
            server_cert: dir.write(&format!("{tag}-server.pem"), server_cert),
            server_key: dir.write(&format!("{tag}-server.key"), server_key),
            client_cert: dir.write(&format!("{tag}-client.pem"), client_cert),
            client_key: dir.write(&format!("{tag}-client.key"), client_key),
        }
    }

    fn server(&self, mutual: bool) -> tls::ServerTls {
        tls::server_from_flags(
            Some(&self.server_cert),
            Some(&self.server_key),
            mutual.then_some(self.ca.as_path()),
        )
        .unwrap()
        .unwrap()
    }

    fn client(&self, with_cert: bool) -> tls::ClientTls {
        tls::client_from_flags(
            Some(&self.ca),
            with_cert.then_some(self.client_cert.as_path()),
            with_cert.then_some(self.client_key.as_path()),
            None,
        )
        .unwrap()
        .unwrap()
    }
}

const RECORDS: u64 = 3_000;

fn shipper(recv: &Recv, tls: Option<tls::ClientTls>, token: Option<&[u8]>) -> ShipConfig {
    let mut cfg = ShipConfig::new(recv.addr.to_string());
    cfg.connections = 2;
    cfg.sndbuf = None;
    cfg.tls = tls;
    cfg.token = token.map(bytes::Bytes::copy_from_slice);
    cfg
}

async fn ship(cfg: ShipConfig) -> Result<ShipSummary, ShipError> {
    let spec = GenerateSpec {
        rate: None,
        value_size: 200,
        keys: RECORDS,
    };
    ship_quietly(
        cfg,
        Generator::new(spec, 5, Some(RECORDS)),
        CancellationToken::new(),
    )
    .await
}

fn assert_everything_delivered(recv: &Recv, summary: &ShipSummary) {
    assert_eq!(summary.counters.delivered(), RECORDS, "{summary:?}");
    for n in 0..RECORDS {
        let got = recv.store().get(&Generator::key(n)).unwrap();
        assert_eq!(got.map(|r| r.version), Some(n + 1), "record {n}");
    }
}

fn refusal(result: Result<ShipSummary, ShipError>) -> String {
    match result {
        Err(ShipError::Rejected(msg)) => msg,
        other => panic!("expected the run to stop as rejected, got {other:?}"),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "`{msg}` does not mention `{n}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_over_tls_delivers_everything() {
    let dir = TempDir::new("tls");
    let pki = Pki::new(&dir, "a");
    let recv = Recv::start(ServerConfig {
        tls: Some(pki.server(false)),
        ..ServerConfig::default()
    });
    let summary = ship(shipper(&recv, Some(pki.client(false)), None))
        .await
        .expect("shipping over TLS succeeded");
    assert_everything_delivered(&recv, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_trust_the_ca_fails_naming_the_certificate() {
    let dir = TempDir::new("untrusted");
    let (pki, other) = (Pki::new(&dir, "a"), Pki::new(&dir, "b"));
    let recv = Recv::start(ServerConfig {
        tls: Some(pki.server(false)),
        ..ServerConfig::default()
    });
    let msg = refusal(ship(shipper(&recv, Some(other.client(false)), None)).await);
    assert_mentions(
        &msg,
        &["TLS handshake", "invalid peer certificate", "--tls-ca"],
    );
    assert_eq!(recv.records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_against_a_tls_server_is_told_and_applies_nothing() {
    let dir = TempDir::new("plain");
    let pki = Pki::new(&dir, "a");
    let recv = Recv::start(ServerConfig {
        tls: Some(pki.server(false)),
        ..ServerConfig::default()
    });
    let msg = refusal(ship(shipper(&recv, None, None)).await);
    assert_mentions(&msg, &["Unsupported", "requires TLS", "--tls-ca"]);
    assert_eq!(recv.records(), 0);
    assert!(
        recv.stats
            .auth_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_a_client_certificate_from_the_ca() {
    let dir = TempDir::new("mtls-ok");
    let pki = Pki::new(&dir, "a");
    let recv = Recv::start(ServerConfig {
        tls: Some(pki.server(true)),
        ..ServerConfig::default()
    });
    let summary = ship(shipper(&recv, Some(pki.client(true)), None))
        .await
        .expect("shipping with a client certificate succeeded");
    assert_everything_delivered(&recv, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_applies_nothing() {
    let dir = TempDir::new("mtls-no");
    let pki = Pki::new(&dir, "a");
    let recv = Recv::start(ServerConfig {
        tls: Some(pki.server(true)),
        ..ServerConfig::default()
    });
    let msg = refusal(ship(shipper(&recv, Some(pki.client(false)), None)).await);
    assert_mentions(&msg, &["TLS handshake", "client certificate"]);
    assert_eq!(recv.records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_with_the_token_delivers_everything() {
    let recv = Recv::start(ServerConfig {
        token: Some(Token::new(TOKEN)),
        ..ServerConfig::default()
    });
    let summary = ship(shipper(&recv, None, Some(TOKEN)))
        .await
        .expect("shipping with the token succeeded");
    assert_everything_delivered(&recv, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_without_the_token_is_refused_auth_failed() {
    let recv = Recv::start(ServerConfig {
        token: Some(Token::new(TOKEN)),
        ..ServerConfig::default()
    });
    let msg = refusal(ship(shipper(&recv, None, None)).await);
    assert_mentions(&msg, &["AuthFailed", "no credentials", "--token-file"]);
    let msg = refusal(ship(shipper(&recv, None, Some(b"a-wrong-token-of-some-length"))).await);
    assert_mentions(&msg, &["AuthFailed", "credentials rejected"]);
    assert_eq!(recv.records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_pipelined_behind_a_rejected_hello_are_never_applied() {
    let recv = Recv::start(ServerConfig {
        token: Some(Token::new(TOKEN)),
        ..ServerConfig::default()
    });
    let stream = TcpStream::connect(recv.addr).await.unwrap();
    let mut framed = Framed::new(stream, WireCodec::new());
    let mut hello = Hello::new(OrderingMode::Unordered, 9);
    hello.credentials = bytes::Bytes::from_static(b"guessing-the-token-0000");
    framed.feed(Frame::hello(hello)).await.unwrap();
    // Without waiting for HELLO_OK: a BATCH and WRITEs right behind it.
    framed
        .feed(Frame::batch(
            1,
            (0..100)
                .map(|i| Write::put(format!("intruder:{i}"), "x", 1, 9))
                .collect(),
        ))
        .await
        .unwrap();
    for i in 2..50 {
        framed
            .feed(Frame::write(
                i,
                Write::put(format!("intruder:w{i}"), "x", 1, 9),
            ))
            .await
            .unwrap();
    }
    SinkExt::<Frame>::flush(&mut framed).await.unwrap();
    let first = tokio::time::timeout(LIMIT, framed.next())
        .await
        .expect("an answer in time");
    match first {
        Some(Ok(Frame {
            body: Message::Goodbye(g),
            ..
        })) => {
            assert_eq!(g.code, ResultCode::AuthFailed, "{g:?}");
            assert!(g.message.contains("credentials rejected"), "{}", g.message);
        }
        other => panic!("expected GOODBYE AuthFailed, got {other:?}"),
    }
    let rest = tokio::time::timeout(LIMIT, framed.next()).await.unwrap();
    assert!(rest.is_none() || matches!(rest, Some(Err(_))), "{rest:?}");
    assert_eq!(
        recv.records(),
        0,
        "an unauthenticated peer's writes were applied"
    );
}

#[test]
fn non_loopback_listener_without_authentication_refuses_to_start() {
    let cfg = ServerConfig {
        rcvbuf: None,
        ..ServerConfig::default()
    };
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = cfg.check_exposure(any).unwrap_err();
    assert!(matches!(err, ServerError::Unauthenticated { .. }));
    let msg = err.to_string();
    assert_mentions(
        &msg,
        &["0.0.0.0:0", "--token-file", "--tls-ca", "--insecure"],
    );
    // Any one of: a token, client certificates, or an explicit --insecure.
    let with_token = ServerConfig {
        token: Some(Token::new(TOKEN)),
        ..cfg.clone()
    };
    assert!(with_token.check_exposure(any).is_ok());
    let insecure = ServerConfig {
        insecure: true,
        ..cfg.clone()
    };
    assert!(insecure.check_exposure(any).is_ok());
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert!(cfg.check_exposure(loopback).is_ok());
}

#[test]
fn bind_enforces_the_exposure_rule() {
    let cfg = ServerConfig {
        rcvbuf: None,
        ..ServerConfig::default()
    };
    let err = server::bind("0.0.0.0:0".parse().unwrap(), &cfg).unwrap_err();
    assert!(matches!(err, ServerError::Unauthenticated { .. }), "{err}");
}

// ------------------------------------------------------- the binary, end to end

/// A child process killed on drop.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
}

/// Waits (bounded) for `child` to exit; its status, stdout and stderr.
fn wait_bounded(mut child: Child, within: Duration) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

fn piped(cmd: &mut std::process::Command) -> Child {
    Child(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn recv_on_a_non_loopback_address_without_authentication_refuses_to_start() {
    let child = piped(bin().args(["recv", "--memory", "--listen", "0.0.0.0:0"]));
    let (status, _, err) = wait_bounded(child, Duration::from_secs(20));
    assert!(!status.success());
    assert_mentions(
        &err,
        &[
            "refusing to listen on 0.0.0.0:0",
            "--token-file",
            "--insecure",
        ],
    );
}

#[test]
fn secured_link_end_to_end_with_the_commands_of_the_readme() {
    let dir = TempDir::new("cli");
    let pki = Pki::new(&dir, "a");
    let token = dir.write("token", [TOKEN, b"\n"].concat());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let _recv = Child(
        bin()
            .args(["recv", "--memory", "--listen", &addr])
            .arg("--tls-cert")
            .arg(&pki.server_cert)
            .arg("--tls-key")
            .arg(&pki.server_key)
            .arg("--token-file")
            .arg(&token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "recv did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ship = |with_token: bool| {
        let mut cmd = bin();
        cmd.args(["ship", "--to", &addr, "--generate", "max,100,1000"])
            .args(["--count", "1000", "--connections", "2"])
            .arg("--tls-ca")
            .arg(&pki.ca);
        if with_token {
            cmd.arg("--token-file").arg(&token);
        }
        wait_bounded(piped(&mut cmd), Duration::from_secs(60))
    };
    let (status, out, err) = ship(true);
    assert!(status.success(), "ship failed: {err}");
    assert!(out.contains("done: delivered 1000 "), "{out}");
    let (status, _, err) = ship(false);
    assert!(!status.success(), "ship without the token succeeded");
    assert_mentions(&err, &["AuthFailed", "--token-file"]);
}

#[test]
fn load_to_the_ingest_port_over_tls_with_the_token_is_acked_and_without_it_refused() {
    let dir = TempDir::new("ingest-tls");
    let pki = Pki::new(&dir, "i");
    let token = dir.write("token", [TOKEN, b"\n"].concat());
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let recv_addr = format!("127.0.0.1:{}", free_port());
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let _recv = Child(
        bin()
            .args(["recv", "--memory", "--listen", &recv_addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _source_node = Child(
        bin()
            .args(["ship", "--to", &recv_addr, "--listen", &ingest_addr])
            .arg("--log")
            .arg(dir.0.join("log"))
            .arg("--ingest-tls-cert")
            .arg(&pki.server_cert)
            .arg("--ingest-tls-key")
            .arg(&pki.server_key)
            .arg("--ingest-token-file")
            .arg(&token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&ingest_addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ingest port did not open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let load = |with_token: bool| {
        let mut cmd = bin();
        cmd.args(["load", "--to", &ingest_addr, "--count", "300"])
            .arg("--tls-ca")
            .arg(&pki.ca);
        if with_token {
            cmd.arg("--token-file").arg(&token);
        }
        wait_bounded(piped(&mut cmd), Duration::from_secs(60))
    };
    let (status, out, err) = load(true);
    assert!(status.success(), "load failed: {err}");
    assert!(out.contains("done: delivered 300 "), "{out}");
    let (status, _, err) = load(false);
    assert!(!status.success(), "load without the token succeeded");
    assert_mentions(&err, &["AuthFailed"]);
}
