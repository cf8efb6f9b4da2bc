//! The RESP front door as an attack surface, against the live port with
//! raw TCP (bytes no Redis client would send): each bad input gets its
//! error, every write acknowledged before it is in the log, and the other
//! clients carry on.
use std::{
    io::{BufRead, BufReader, Read, Write as _},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use super::{read_log, source_node, source_node_on, TempDir};

/// Longest wait for any reply: the port answers at once or not at all.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Share of the slowloris bound during which the slow client trickles.
const TRICKLE_SHARE: f64 = 0.8;
/// Time between two trickled bytes.
const TRICKLE_GAP: Duration = Duration::from_millis(100);

/// A raw connection with a line reader over the same socket.
struct Raw {
    tx: TcpStream,
    rx: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Self {
        let tx = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RESP port");
        tx.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let rx = BufReader::new(tx.try_clone().unwrap());
        Self { tx, rx }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tx.write_all(bytes).expect("send to the RESP port");
    }

    /// One reply line (without its CRLF); empty once the server has closed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.rx.read_line(&mut line).expect("read a reply line");
        line.trim_end().to_owned()
    }

    /// `SET key value` as a RESP array, answered.
    fn set(&mut self, key: &str, value: &str) -> String {
        self.send(&request(&["SET", key, value]));
        self.line()
    }

    /// Everything the server still sends until it closes the connection.
    fn rest_until_closed(&mut self) -> String {
        let mut rest = String::new();
        self.rx
            .read_to_string(&mut rest)
            .expect("the server closes the connection");
        rest
    }
}

/// A client the server serves (answers PING), retried while a place held
/// by a client that just left (the port probe, a dropped client) is freed.
fn served_client(port: u16) -> Raw {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut c = Raw::connect(port);
        // A refused connection may be reset under the PING: not served.
        let _ = c.tx.write_all(b"*1\r\n$4\r\nPING\r\n");
        let mut line = String::new();
        if c.rx.read_line(&mut line).is_ok() && line == "+PONG\r\n" {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no place freed within {REPLY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server has neither answered nor closed `s` yet.
fn nothing_to_read(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let idle =
        matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    idle
}

/// `words` as a RESP array of bulk strings.
fn request(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// The newest value of `key` in the log (read once the node is stopped).
fn logged(dir: &TempDir, key: &str) -> Option<Option<Vec<u8>>> {
    read_log(dir).get(key.as_bytes()).cloned()
}

#[test]
fn garbage_gets_a_protocol_error_and_the_writes_before_it_stay() {
    let dir = TempDir::new("resp-garbage");
    let (node, port) = source_node(&dir);
    let mut other = Raw::connect(port);
    let mut bad = Raw::connect(port);
    assert_eq!(bad.set("before", "1"), "+OK");
    bad.send(b"\x00\xff\x13 not redis at all \xfe\r\n");
    let reply = bad.rest_until_closed();
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");
    assert_eq!(other.set("other", "2"), "+OK");
    drop(node);
    assert_eq!(logged(&dir, "before"), Some(Some(b"1".to_vec())));
    assert_eq!(logged(&dir, "other"), Some(Some(b"2".to_vec())));
}

#[test]
fn a_bulk_length_of_2_pow_40_is_refused_as_soon_as_it_is_declared() {
    let dir = TempDir::new("resp-huge-bulk");
    let (node, port) = source_node(&dir);
    let mut bad = Raw::connect(port);
    assert_eq!(bad.set("before", "1"), "+OK");
    let t0 = Instant::now();
    bad.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1099511627776\r\n");
    let reply = bad.rest_until_closed();
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(
        t0.elapsed() < REPLY_TIMEOUT / 2,
        "refused only after {:?}",
        t0.elapsed()
    );
    assert_eq!(Raw::connect(port).set("after", "2"), "+OK");
    drop(node);
    assert_eq!(logged(&dir, "before"), Some(Some(b"1".to_vec())));
    assert_eq!(logged(&dir, "k"), None);
}

#[test]
fn an_unterminated_array_is_never_applied() {
    let dir = TempDir::new("resp-unterminated");
    let (node, port) = source_node(&dir);
    let mut bad = Raw::connect(port);
    assert_eq!(bad.set("before", "1"), "+OK");
    // Three elements declared, two sent, then the client stops writing.
    bad.send(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n");
    bad.tx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(bad.rest_until_closed(), "", "no reply to half a request");
    assert_eq!(Raw::connect(port).set("after", "2"), "+OK");
    drop(node);
    assert_eq!(logged(&dir, "before"), Some(Some(b"1".to_vec())));
    assert_eq!(logged(&dir, "half"), None);
}

#[test]
fn a_slowloris_is_cut_off_at_the_request_timeout_while_others_are_served() {
    let dir = TempDir::new("resp-slowloris");
    let timeout = Duration::from_secs(1);
    let (node, port) = source_node_on(&dir, super::free_port(), &["--resp-request-timeout", "1s"]);
    let mut slow = Raw::connect(port);
    assert_eq!(slow.set("before", "1"), "+OK");
    let t0 = Instant::now();
    slow.send(b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$100\r\n");
    let mut other = Raw::connect(port);
    let mut served = 0;
    let mut open_while_trickling = false;
    while t0.elapsed() < timeout * 2 {
        // One byte at a time, never finishing; it stops short of the
        // deadline so that the server has read all of it when it closes.
        if t0.elapsed() < timeout.mul_f64(TRICKLE_SHARE) {
            slow.send(b"x");
            open_while_trickling = nothing_to_read(&slow.tx);
        }
        assert_eq!(other.set(&format!("other:{served}"), "v"), "+OK");
        served += 1;
        std::thread::sleep(TRICKLE_GAP);
    }
    assert!(open_while_trickling, "cut before the request timeout");
    // Cut by now: what is left arrives at once.
    slow.tx.set_read_timeout(Some(TRICKLE_GAP)).unwrap();
    let reply = slow.rest_until_closed();
    assert_eq!(reply, "-ERR timeout: request not completed in time\r\n");
    assert!(served > 0, "the other client was never served");
    drop(node);
    assert_eq!(logged(&dir, "before"), Some(Some(b"1".to_vec())));
    assert_eq!(logged(&dir, "slow"), None);
    assert_eq!(logged(&dir, "other:0"), Some(Some(b"v".to_vec())));
}

#[test]
fn a_flood_past_the_client_limit_is_refused_and_the_clients_in_carry_on() {
    let dir = TempDir::new("resp-flood");
    let limit = 4;
    let (node, port) = source_node_on(
        &dir,
        super::free_port(),
        &["--resp-max-clients", &limit.to_string()],
    );
    let mut inside: Vec<Raw> = (0..limit).map(|_| served_client(port)).collect();
    for (i, c) in inside.iter_mut().enumerate() {
        assert_eq!(c.set(&format!("in:{i}"), "1"), "+OK");
    }
    for _ in 0..limit * 4 {
        let mut refused = Raw::connect(port);
        assert_eq!(
            refused.rest_until_closed(),
            "-ERR max number of clients reached\r\n"
        );
    }
    for (i, c) in inside.iter_mut().enumerate() {
        assert_eq!(c.set(&format!("in:{i}"), "2"), "+OK");
    }
    // A client that leaves frees its place.
    drop(inside.pop());
    let mut late = served_client(port);
    assert_eq!(late.set("late", "1"), "+OK");
    drop(node);
    for i in 0..limit {
        assert_eq!(logged(&dir, &format!("in:{i}")), Some(Some(b"2".to_vec())));
    }
    assert_eq!(logged(&dir, "late"), Some(Some(b"1".to_vec())));
}

#[test]
fn a_malformed_frame_mid_pipeline_answers_the_writes_before_it() {
    let dir = TempDir::new("resp-mid-pipeline");
    let (node, port) = source_node(&dir);
    let mut other = Raw::connect(port);
    let mut bad = Raw::connect(port);
    let mut pipeline = request(&["SET", "p:1", "a"]);
    pipeline.extend(request(&["SET", "p:2", "b"]));
    pipeline.extend(request(&["NOSUCHCOMMAND", "x"]));
    pipeline.extend(request(&["SET", "p:3", "c"]));
    pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$x\r\n");
    pipeline.extend(request(&["SET", "p:4", "d"]));
    bad.send(&pipeline);
    let replies = bad.rest_until_closed();
    let lines: Vec<&str> = replies.lines().collect();
    assert_eq!(lines.len(), 5, "{replies:?}");
    assert_eq!(lines[..2], ["+OK", "+OK"]);
    assert!(lines[2].starts_with("-ERR unknown command"), "{replies:?}");
    assert_eq!(lines[3], "+OK");
    assert_eq!(lines[4], "-ERR Protocol error: invalid bulk length");
    assert_eq!(other.set("other", "1"), "+OK");
    drop(node);
    let log = read_log(&dir);
    for (key, value) in [("p:1", "a"), ("p:2", "b"), ("p:3", "c")] {
        assert_eq!(
            log[key.as_bytes()],
            Some(value.as_bytes().to_vec()),
            "{key}"
        );
    }
    assert!(
        !log.contains_key(&b"p:4"[..]),
        "a write after the broken frame ran"
    );
}
