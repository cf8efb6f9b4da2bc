//! Shipping to Redis over TLS (`--to rediss://`, `rediss-cluster://`) and
//! verifying over TLS (`verify --against rediss://…`), against real
//! `redis-server`s that listen on a TLS port only, on loopback, with
//! certificates made by the tests (rcgen). Every server is killed on drop,
//! even when a test panics; every `xdr-ship` run is bounded.
mod common;

use std::{
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::TempDir;

/// Longest wait for a server to answer, a cluster to form, a run to end.
const WAIT: Duration = Duration::from_secs(30);
/// Records each shipping test writes (each its own key).
const RECORDS: u64 = 200;

/// PEM files of a CA, of a server certificate for 127.0.0.1 and of a
/// client certificate, both signed by it; `other_ca` is a CA that signed
/// nothing here.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &TempDir) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("xdr-ship redis test CA");
        let (other, _) = ca("a CA that signed nothing here");
        let leaf = |names: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca_cert, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf(&["127.0.0.1", "localhost"]);
        let (client_cert, client_key) = leaf(&["shipper.test"]);
        Self {
            ca: dir.write("ca.pem", ca_cert.pem()),
            other_ca: dir.write("other-ca.pem", other.pem()),
            cert: dir.write("redis.pem", cert),
            key: dir.write("redis.key", key),
            client_cert: dir.write("client.pem", client_cert),
            client_key: dir.write("client.key", client_key),
        }
    }
}

/// A loopback port whose cluster bus port (+10000) is free as well.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// Waits until `ok` holds, for at most [`WAIT`].
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `redis-cli --tls` towards `port`, with `login` (`[--user U] --pass P`)
/// and `args`, feeding `stdin` (one command a line); its output.
fn cli_with(pki: &Pki, port: u16, login: &[&str], args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&pki.ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(login)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli (Debian's redis-tools package) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli(pki: &Pki, port: u16, args: &[&str]) -> String {
    cli_with(pki, port, &[], args, "").trim().to_owned()
}

/// `redis-server`s with only a TLS port each (`--port 0`), killed on drop.
struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: TempDir,
}

impl Servers {
    /// `n` servers with `extra` arguments each (`{port}` in one is
    /// replaced by the server's port); waits until each answers PING
    /// (with `login`).
    fn start(pki: &Pki, n: usize, extra: &[&str], login: &[&str]) -> Self {
        let dir = TempDir::new("redis-tls");
        let mut servers = Self {
            children: Vec::new(),
            ports: Vec::new(),
            _dir: dir,
        };
        while servers.ports.len() < n {
            let p = free_port();
            if !servers.ports.contains(&p) {
                servers.ports.push(p);
            }
        }
        for p in servers.ports.clone() {
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &p.to_string()])
                .args(["--bind", "127.0.0.1"])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", "no"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&servers._dir.0)
                .args(extra.iter().map(|a| a.replace("{port}", &p.to_string())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (Debian's redis-server package) must be installed");
            servers.children.push(child);
        }
        for p in &servers.ports {
            wait_for("redis-server to answer PING over TLS", || {
                cli_with(pki, *p, login, &["PING"], "").trim() == "PONG"
            });
        }
        servers
    }

    /// A 3-primary cluster (`tls-cluster yes`: the bus and the ports it
    /// announces are TLS), every slot covered.
    fn cluster(pki: &Pki) -> Self {
        let servers = Self::start(
            pki,
            3,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ],
            &[],
        );
        let addrs: Vec<String> = servers
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&pki.ca)
            .args(["--cluster", "create"])
            .args(&addrs)
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --tls --cluster create failed");
        for p in &servers.ports {
            wait_for("cluster_state:ok on every node", || {
                cli(pki, *p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        servers
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads all of `pipe` on a thread of its own (a full pipe must not
/// stall the child while the test waits for it).
fn drain(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// Runs `xdr-ship ARGS…` to its end (killed after [`WAIT`]); its output
/// and how long it took.
fn xdr_ship(args: &[&str], dir: &TempDir) -> (Output, Duration) {
    let started = Instant::now();
    let mut guard = Guard(
        Command::new(env!("CARGO_BIN_EXE_xdr-ship"))
            .args(args)
            .current_dir(&dir.0)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = drain(guard.0.stdout.take().unwrap());
    let stderr = drain(guard.0.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < WAIT,
            "xdr-ship {args:?} did not end within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (out, took)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn key(n: u64) -> String {
    format!("user:{n}")
}

fn value(n: u64) -> String {
    format!("value of record {n}")
}

/// A log of [`RECORDS`] puts written from JSON lines, shipped to `to`
/// with `extra` flags; panics unless the run ends well.
fn ship_log(dir: &TempDir, to: &str, extra: &[&str]) -> PathBuf {
    let lines: String = (0..RECORDS)
        .map(|n| {
            format!(
                "{{\"key\":\"{}\",\"value\":\"{}\",\"version\":{}}}\n",
                key(n),
                value(n),
                n + 1
            )
        })
        .collect();
    let from = dir.write("writes.jsonl", lines);
    let log = dir.0.join("log");
    let mut args = vec![
        "ship",
        "--log",
        log.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
        "--to",
        to,
        "--connections",
        "2",
    ];
    args.extend(extra);
    let (out, _) = xdr_ship(&args, dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("delivered {RECORDS} ")),
        "{}",
        text(&out)
    );
    log
}

/// Every record's value as `redis-cli --tls` (with `args`, e.g. `-c`)
/// reads it from `port`, in record order (`-c`'s notes of the redirects
/// it followed left out).
fn read_back(pki: &Pki, port: u16, login: &[&str], args: &[&str]) -> Vec<String> {
    let gets: String = (0..RECORDS).map(|n| format!("GET {}\n", key(n))).collect();
    cli_with(pki, port, login, args, &gets)
        .lines()
        .filter(|l| !l.starts_with("-> Redirected to slot"))
        .map(str::to_owned)
        .collect()
}

fn expected() -> Vec<String> {
    (0..RECORDS).map(value).collect()
}

/// `xdr-ship verify --json` of `log` against `against` with `extra`
/// flags: exit status and the counts.
fn verify(dir: &TempDir, log: &Path, against: &str, extra: &[&str]) -> (bool, serde_json::Value) {
    let mut args = vec![
        "verify",
        "--json",
        "--log",
        log.to_str().unwrap(),
        "--against",
        against,
    ];
    args.extend(extra);
    let (out, _) = xdr_ship(&args, dir);
    let counts = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(counts.is_object(), "{}", text(&out));
    (out.status.success(), counts)
}

#[test]
fn shipping_to_rediss_delivers_every_record_readable_with_redis_cli_tls() {
    let dir = TempDir::new("rediss-ship");
    let pki = Pki::new(&dir);
    let redis = Servers::start(&pki, 1, &[], &[]);
    let port = redis.ports[0];
    let ca = pki.ca.to_str().unwrap();
    ship_log(
        &dir,
        &format!("rediss://127.0.0.1:{port}"),
        &["--tls-ca", ca],
    );
    assert_eq!(read_back(&pki, port, &[], &[]), expected());
}

#[test]
fn verify_against_rediss_finds_the_copy_whole_then_a_key_deleted_behind_its_back() {
    let dir = TempDir::new("rediss-verify");
    let pki = Pki::new(&dir);
    let redis = Servers::start(&pki, 1, &[], &[]);
    let port = redis.ports[0];
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = pki.ca.to_str().unwrap();
    let log = ship_log(&dir, &url, &["--tls-ca", ca]);
    let (ok, counts) = verify(&dir, &log, &url, &["--tls-ca", ca]);
    assert!(ok, "{counts}");
    assert_eq!(counts["matching"], RECORDS, "{counts}");
    assert_eq!(counts["extra"], 0, "{counts}");
    assert_eq!(cli(&pki, port, &["DEL", &key(7)]), "1");
    let (ok, counts) = verify(&dir, &log, &url, &["--tls-ca", ca]);
    assert!(!ok, "verify exited 0 with a key missing: {counts}");
    assert_eq!(counts["missing"], 1, "{counts}");
}

#[test]
fn an_acl_user_from_a_file_ships_and_verifies_over_tls() {
    let dir = TempDir::new("rediss-acl");
    let pki = Pki::new(&dir);
    let password = "a-password-for-the-shipper-0123";
    let secret = format!(">{password}");
    let login = ["--user", "shipper", "--pass", password];
    // No default user: only the ACL user gets in.
    let redis = Servers::start(
        &pki,
        1,
        &[
            "--user", "default", "off", "--user", "shipper", "on", &secret, "~*", "&*", "+@all",
        ],
        &login,
    );
    let port = redis.ports[0];
    assert!(
        cli(&pki, port, &["SET", "k", "v"]).starts_with("NOAUTH"),
        "the default user is off"
    );
    ships_and_verifies_with_login_file(&dir, &pki, port, &login, &format!("shipper {password}\n"));
}

/// Ships to the TLS Redis on `port` with `--token-file` holding `login`,
/// reads every record back as `cli_login`, and verifies the log against
/// it with `--password-file` (the same file).
fn ships_and_verifies_with_login_file(
    dir: &TempDir,
    pki: &Pki,
    port: u16,
    cli_login: &[&str],
    login: &str,
) {
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = pki.ca.to_str().unwrap();
    let file = dir.write("redis-login", login);
    let file = file.to_str().unwrap();
    let log = ship_log(dir, &url, &["--tls-ca", ca, "--token-file", file]);
    assert_eq!(read_back(pki, port, cli_login, &[]), expected());
    let (ok, counts) = verify(dir, &log, &url, &["--tls-ca", ca, "--password-file", file]);
    assert!(ok, "{counts}");
    assert_eq!(counts["matching"], RECORDS, "{counts}");
}

#[test]
fn a_short_redis_password_from_a_file_ships_and_verifies() {
    let dir = TempDir::new("rediss-short-password");
    let pki = Pki::new(&dir);
    // Redis's own rules, not a token's: six bytes is a password it takes.
    let password = "s3cret";
    let login = ["--pass", password];
    let redis = Servers::start(&pki, 1, &["--requirepass", password], &login);
    let port = redis.ports[0];
    ships_and_verifies_with_login_file(&dir, &pki, port, &login, &format!("{password}\n"));
}

#[test]
fn a_certificate_the_ca_did_not_sign_ends_the_run_with_one_line_naming_it() {
    let dir = TempDir::new("rediss-untrusted");
    let pki = Pki::new(&dir);
    let redis = Servers::start(&pki, 1, &[], &[]);
    let bound = Duration::from_secs(20);
    let (out, took) = xdr_ship(
        &[
            "ship",
            "--to",
            &format!("rediss://127.0.0.1:{}", redis.ports[0]),
            "--tls-ca",
            pki.other_ca.to_str().unwrap(),
            "--generate",
            "max,100,100",
            "--duration",
            &format!("{}s", bound.as_secs()),
            "--connections",
            "2",
        ],
        &dir,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(took < bound, "it retried until --duration: {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("certificate") || l.contains("TLS"))
        .collect();
    assert_eq!(lines.len(), 1, "one line, not a retry loop: {}", text(&out));
    assert!(
        lines[0].contains("UnknownIssuer")
            && lines[0].contains("--tls-ca")
            && lines[0].contains("name `127.0.0.1`"),
        "{}",
        lines[0]
    );
    assert_eq!(cli(&pki, redis.ports[0], &["DBSIZE"]), "0");
}

#[test]
fn a_redis_that_wants_a_client_certificate_refuses_none_in_one_line_and_takes_ours() {
    let dir = TempDir::new("rediss-mutual");
    let pki = Pki::new(&dir);
    let login = [
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
    ];
    // The last value of a repeated option is the one Redis keeps.
    let redis = Servers::start(&pki, 1, &["--tls-auth-clients", "yes"], &login);
    let to = format!("rediss://127.0.0.1:{}", redis.ports[0]);
    let ca = pki.ca.to_str().unwrap();
    let bound = Duration::from_secs(20);
    let (out, took) = xdr_ship(
        &[
            "ship",
            "--to",
            &to,
            "--tls-ca",
            ca,
            "--generate",
            "max,100,100",
            "--duration",
            &format!("{}s", bound.as_secs()),
            "--connections",
            "2",
        ],
        &dir,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(took < bound, "it retried until --duration: {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("TLS")).collect();
    assert_eq!(lines.len(), 1, "one line, not a retry loop: {}", text(&out));
    assert!(
        lines[0].contains("CertificateRequired") && lines[0].contains("client certificate"),
        "{}",
        lines[0]
    );
    ship_log(
        &dir,
        &to,
        &[
            "--tls-ca",
            ca,
            "--tls-cert",
            pki.client_cert.to_str().unwrap(),
            "--tls-key",
            pki.client_key.to_str().unwrap(),
        ],
    );
    assert_eq!(read_back(&pki, redis.ports[0], &login, &[]), expected());
}

#[test]
fn a_tls_cluster_gets_every_record_on_its_slot_owner_and_verify_finds_none_missing() {
    let dir = TempDir::new("rediss-cluster");
    let pki = Pki::new(&dir);
    let cluster = Servers::cluster(&pki);
    let url = format!("rediss-cluster://127.0.0.1:{}", cluster.ports[0]);
    let ca = pki.ca.to_str().unwrap();
    let log = ship_log(&dir, &url, &["--tls-ca", ca]);
    // A node holds only keys of its own slots (it refuses the others with
    // MOVED): every key on exactly one primary, each primary some.
    let mut held: Vec<String> = Vec::new();
    for p in &cluster.ports {
        let keys = cli(&pki, *p, &["--scan", "--pattern", "user:*"]);
        let keys: Vec<&str> = keys.lines().collect();
        assert!(!keys.is_empty(), "no key landed on {p}");
        held.extend(keys.into_iter().map(str::to_owned));
    }
    held.sort();
    let mut all: Vec<String> = (0..RECORDS).map(key).collect();
    all.sort();
    assert_eq!(held, all, "every key on one primary");
    assert_eq!(
        read_back(&pki, cluster.ports[0], &[], &["-c"]),
        expected(),
        "redis-cli --tls -c follows the cluster's TLS ports"
    );
    let (ok, counts) = verify(&dir, &log, &url, &["--tls-ca", ca]);
    assert!(ok, "{counts}");
    assert_eq!(counts["missing"], 0, "{counts}");
    assert_eq!(counts["matching"], RECORDS, "{counts}");
}

#[test]
fn a_tls_cluster_whose_certificates_the_ca_did_not_sign_ends_the_run_in_one_line() {
    let dir = TempDir::new("rediss-cluster-untrusted");
    let pki = Pki::new(&dir);
    let cluster = Servers::cluster(&pki);
    let bound = Duration::from_secs(20);
    let (out, took) = xdr_ship(
        &[
            "ship",
            "--to",
            &format!("rediss-cluster://127.0.0.1:{}", cluster.ports[0]),
            "--tls-ca",
            pki.other_ca.to_str().unwrap(),
            "--generate",
            "max,100,100",
            "--duration",
            &format!("{}s", bound.as_secs()),
        ],
        &dir,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(took < bound, "it retried until --duration: {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("TLS")).collect();
    assert_eq!(lines.len(), 1, "one line, not a retry loop: {}", text(&out));
    assert!(
        lines[0].contains("UnknownIssuer") && lines[0].contains("name `127.0.0.1`"),
        "{}",
        lines[0]
    );
}
