//! A real Prometheus (Debian's `prometheus` server) scrapes `ship
//! --metrics` and `recv --metrics` on loopback every second; its HTTP API
//! then answers for the series, the shipped alert rules load healthy, and
//! every expression of the shipped Grafana dashboard parses and names
//! metrics Prometheus really holds.
//!
//! `promtool check metrics` reads the Prometheus text format 0.0.4 and
//! lints it: a scrape that does not ask for OpenMetrics gets 0.0.4, and
//! promtool must exit 0 with nothing to say on either exposition. A
//! scraper that asks for OpenMetrics (Prometheus itself does) gets it.
use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdr_tests::{require_root, run_bounded, xdr_ship_bin, ChildGuard, TempDir};

/// How long the shipper runs; Prometheus must have scraped well before.
const SHIP_FOR: &str = "40s";
/// Scrapes each target must have had before the series are read.
const MIN_SCRAPES: f64 = 2.0;
/// Bound of every wait of the test.
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A GET on loopback; returns the body (panics on a non-200 answer).
fn http_get(port: u16, path_and_query: &str) -> String {
    match try_get(port, path_and_query) {
        Ok(body) => body,
        Err(e) => panic!("GET {path_and_query}: {e}"),
    }
}

/// A GET on loopback: the body of a 200 answer, else the answer's head.
fn try_get(port: u16, path_and_query: &str) -> Result<String, String> {
    get_accepting(port, path_and_query, "*/*").map(|(_, body)| body)
}

/// A GET on loopback with `Accept: accept`: the head and body of a 200
/// answer, else the answer's head and body as the error.
fn get_accepting(
    port: u16,
    path_and_query: &str,
    accept: &str,
) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok((head.to_owned(), body.to_owned()))
    } else {
        Err(format!("{head}\n{body}"))
    }
}

/// The `Content-Type` of an answer's head (lowercase).
fn content_type(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/query`: the vector result (panics unless the query succeeded).
fn query(prom: u16, expr: &str) -> Vec<serde_json::Value> {
    let body = http_get(prom, &format!("/api/v1/query?query={}", url_encode(expr)));
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a one-series instant query.
fn scalar(prom: u16, expr: &str) -> Option<f64> {
    let r = query(prom, expr);
    let v = r.first()?["value"][1].as_str()?.to_owned();
    v.parse().ok()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(cmd: &mut Command) -> ChildGuard {
    ChildGuard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

/// The receiver with a durable store, the shipper generating writes to
/// it, each with an exporter; returns their metrics ports.
fn ship_and_recv(dir: &TempDir) -> (ChildGuard, ChildGuard, u16, u16) {
    let (listen, recv_metrics, ship_metrics) = (free_port(), free_port(), free_port());
    let recv = spawn(
        Command::new(xdr_ship_bin())
            .arg("recv")
            .arg("--store")
            .arg(dir.0.join("store"))
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--metrics", &format!("127.0.0.1:{recv_metrics}")]),
    );
    wait_port(listen, "recv");
    let ship = spawn(Command::new(xdr_ship_bin()).args([
        "ship",
        "--to",
        &format!("127.0.0.1:{listen}"),
        "--generate",
        "5000,200,10000",
        "--duration",
        SHIP_FOR,
        "--metrics",
        &format!("127.0.0.1:{ship_metrics}"),
    ]));
    wait_port(ship_metrics, "ship --metrics");
    wait_port(recv_metrics, "recv --metrics");
    (recv, ship, recv_metrics, ship_metrics)
}

/// Debian's Prometheus scraping both exporters every second, with the
/// shipped alert rules loaded.
fn prometheus(dir: &TempDir, recv_metrics: u16, ship_metrics: u16) -> (ChildGuard, u16) {
    let port = free_port();
    let rules = repo_file("docs/prometheus/xdr-ship-alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{}']\n\
         scrape_configs:\n\
         \x20 - job_name: recv\n    static_configs: [{{targets: ['127.0.0.1:{recv_metrics}']}}]\n\
         \x20 - job_name: ship\n    static_configs: [{{targets: ['127.0.0.1:{ship_metrics}']}}]\n",
        rules.display()
    );
    let path = dir.0.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let child = spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
    );
    // It listens before its storage is open; /-/ready says when it serves.
    let deadline = Instant::now() + WAIT;
    while let Err(e) = try_get(port, "/-/ready") {
        assert!(Instant::now() < deadline, "prometheus never got ready: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    (child, port)
}

/// Waits until Prometheus holds `MIN_SCRAPES` successful scrapes of `job`.
fn wait_scraped(prom: u16, job: &str) {
    let deadline = Instant::now() + WAIT;
    let expr = format!("sum_over_time(up{{job=\"{job}\"}}[1m])");
    loop {
        if scalar(prom, &expr).is_some_and(|n| n >= MIN_SCRAPES) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped {job} {MIN_SCRAPES} times"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_ship_and_recv_and_the_series_are_real() {
    require_root();
    let dir = TempDir::new("prometheus");
    let (_recv, _ship, recv_metrics, ship_metrics) = ship_and_recv(&dir);
    let (_prom, prom) = prometheus(&dir, recv_metrics, ship_metrics);
    wait_scraped(prom, "recv");
    wait_scraped(prom, "ship");

    let positive = [
        "xdr_ship_recv_records_applied_total",
        "xdr_ship_recv_connections",
        "xdr_ship_recv_connections_accepted_total",
        "xdr_ship_recv_store_apply_latency_seconds_count",
        "xdr_ship_recv_store_fsync_latency_seconds_count",
        "xdr_ship_recv_store_fsync_batch_records_count",
        "xdr_ship_recv_store_commits_total",
        "sum(xdr_ship_records_total{outcome=\"success\"})",
        "sum(xdr_ship_connections_connected)",
        "sum(xdr_ship_throughput_records_per_second)",
    ];
    for expr in positive {
        let v = scalar(prom, expr).unwrap_or_else(|| panic!("no series for {expr}"));
        assert!(v > 0.0, "{expr} = {v}");
    }
    // Nothing was refused: each reason's series exists and reads zero.
    for reason in [
        "max_connections",
        "auth",
        "timeout",
        "protocol",
        "over_in_flight",
    ] {
        let expr = format!("xdr_ship_recv_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(scalar(prom, &expr), Some(0.0), "{expr}");
    }
}

#[test]
fn promtool_check_metrics_is_clean_on_both_expositions_and_openmetrics_is_negotiated() {
    require_root();
    let dir = TempDir::new("promtool");
    let (_recv, _ship, recv_metrics, ship_metrics) = ship_and_recv(&dir);
    for (who, port) in [("recv", recv_metrics), ("ship", ship_metrics)] {
        // Wait for the first update of the exporter (its interval is 1 s):
        // the series appear with it.
        let deadline = Instant::now() + WAIT;
        let (head, text) = loop {
            let (head, text) = get_accepting(port, "/metrics", "*/*").expect("scrape");
            if text.lines().filter(|l| !l.starts_with('#')).count() > 5 {
                break (head, text);
            }
            assert!(Instant::now() < deadline, "{who}: no series: {text}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            content_type(&head).starts_with("text/plain; version=0.0.4"),
            "{who}: {head}"
        );
        let path = dir.0.join(format!("{who}.prom"));
        std::fs::write(&path, &text).unwrap();
        let (ok, out, err) = run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg(format!("promtool check metrics < {}", path.display())),
            Duration::from_secs(20),
        );
        assert!(
            ok && out.trim().is_empty() && err.trim().is_empty(),
            "{who}: promtool check metrics (ok: {ok}):\n{out}{err}\n{text}"
        );

        let (head, om) = get_accepting(
            port,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .expect("scrape asking for OpenMetrics");
        assert!(
            content_type(&head).starts_with("application/openmetrics-text"),
            "{who}: {head}"
        );
        assert!(om.trim_end().ends_with("# EOF"), "{who}: {om}");
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_load_healthy_and_the_dashboard_names_real_metrics() {
    require_root();
    let rules = repo_file("docs/prometheus/xdr-ship-alerts.yml");
    let (ok, out, err) = run_bounded(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&rules),
        Duration::from_secs(20),
    );
    assert!(ok, "promtool check rules: {out}{err}");

    let dir = TempDir::new("dashboard");
    let (_recv, _ship, recv_metrics, ship_metrics) = ship_and_recv(&dir);
    let (_prom, prom) = prometheus(&dir, recv_metrics, ship_metrics);
    wait_scraped(prom, "recv");
    wait_scraped(prom, "ship");

    let body = http_get(prom, "/api/v1/rules");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let loaded: Vec<serde_json::Value> = v["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(loaded.len() >= 3, "{body}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }

    let names: HashSet<String> = {
        let body = http_get(prom, "/api/v1/label/__name__/values");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("docs/grafana/xdr-ship.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(|e| e.replace("$destination", ".*")))
        .collect();
    assert!(exprs.len() >= 4, "{exprs:?}");
    for expr in &exprs {
        // Parses and evaluates (query() asserts status success).
        query(prom, expr);
        for name in metric_names(expr) {
            assert!(
                names.contains(&name),
                "{expr} names {name}, which Prometheus does not hold; it holds {names:?}"
            );
        }
    }
}

/// The `xdr_ship_…` names an expression reads (series suffixes included).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("xdr_ship_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}
