//! The last-writer-wins function the Redis destination loads, against a
//! real `redis-server` on loopback (started and stopped by each test):
//! what each `(version, source id)` stamp order does to the key a plain
//! `GET` reads.
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xdr_ship::ship::redis::{meta_key, stamp, LWW_FUNCTION, LWW_LIBRARY, LWW_MANY_FUNCTION};

/// A `redis-server` on a free loopback port, without persistence, killed
/// on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        let redis = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            redis.cli(&["FUNCTION", "LOAD", "REPLACE", LWW_LIBRARY]),
            "xdrship"
        );
        redis
    }

    /// `redis-cli` with `args` (raw byte-safe enough: keys and values here
    /// are ASCII); its trimmed output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (Debian's redis-tools package) must be installed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What the shipper sends for one write: `FCALL xdr_lww 2 KEY META
    /// STAMP [VALUE]`; Redis's answer (1 written, 0 lost the conflict).
    fn write(&self, key: &str, value: Option<&str>, version: u64, source: u64) -> String {
        let meta = String::from_utf8(meta_key(key.as_bytes())).unwrap();
        let stamp = String::from_utf8(stamp(version, source).to_vec()).unwrap();
        let mut args = vec!["FCALL", LWW_FUNCTION, "2", key, &meta, &stamp];
        args.extend(value);
        self.cli(&args)
    }
}

impl Redis {
    /// What the shipper sends for several writes to one Redis: `FCALL
    /// xdr_lww_many 2N (KEY META)… DELETES STAMP… VALUE…`, DELETES the
    /// 1-based positions of the deletes; Redis's answers, one line each.
    fn write_many(&self, writes: &[(&str, Option<&str>, u64, u64)]) -> Vec<String> {
        let metas: Vec<String> = writes
            .iter()
            .map(|(k, ..)| String::from_utf8(meta_key(k.as_bytes())).unwrap())
            .collect();
        let stamps: Vec<String> = writes
            .iter()
            .map(|(_, _, v, s)| String::from_utf8(stamp(*v, *s).to_vec()).unwrap())
            .collect();
        let deletes: Vec<String> = writes
            .iter()
            .enumerate()
            .filter(|(_, w)| w.1.is_none())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        let deletes = deletes.join(" ");
        let numkeys = (2 * writes.len()).to_string();
        let mut args = vec!["FCALL", LWW_MANY_FUNCTION, &numkeys];
        for ((k, ..), meta) in writes.iter().zip(&metas) {
            args.extend([*k, meta.as_str()]);
        }
        args.push(&deletes);
        args.extend(stamps.iter().map(String::as_str));
        args.extend(writes.iter().map(|w| w.1.unwrap_or("")));
        // redis-cli ends an error element with an empty line.
        self.cli(&args)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_newer_version_overwrites_and_an_older_one_loses() {
    let r = Redis::start();
    assert_eq!(r.write("k", Some("v2"), 2, 1), "1");
    assert_eq!(r.write("k", Some("v1"), 1, 1), "0");
    assert_eq!(r.cli(&["GET", "k"]), "v2");
    assert_eq!(r.write("k", Some("v3"), 3, 1), "1");
    assert_eq!(r.cli(&["GET", "k"]), "v3");
}

#[test]
fn a_resend_of_the_same_write_changes_nothing() {
    let r = Redis::start();
    assert_eq!(r.write("k", Some("v"), 5, 1), "1");
    assert_eq!(r.write("k", Some("other bytes"), 5, 1), "0");
    assert_eq!(r.cli(&["GET", "k"]), "v");
}

#[test]
fn at_the_same_version_the_higher_source_id_wins_whatever_the_order() {
    let r = Redis::start();
    assert_eq!(r.write("a", Some("from 1"), 7, 1), "1");
    assert_eq!(r.write("a", Some("from 2"), 7, 2), "1");
    assert_eq!(r.write("b", Some("from 2"), 7, 2), "1");
    assert_eq!(r.write("b", Some("from 1"), 7, 1), "0");
    assert_eq!(r.cli(&["GET", "a"]), "from 2");
    assert_eq!(r.cli(&["GET", "b"]), "from 2");
}

#[test]
fn a_delete_keeps_its_stamp_so_an_older_put_cannot_bring_the_key_back() {
    let r = Redis::start();
    assert_eq!(r.write("k", Some("v1"), 1, 1), "1");
    assert_eq!(r.write("k", None, 3, 1), "1");
    assert_eq!(r.cli(&["EXISTS", "k"]), "0");
    assert_eq!(r.write("k", Some("v2"), 2, 1), "0");
    assert_eq!(r.cli(&["EXISTS", "k"]), "0");
    assert_eq!(r.write("k", Some("v4"), 4, 1), "1");
    assert_eq!(r.cli(&["GET", "k"]), "v4");
}

#[test]
fn a_stamp_key_of_another_type_is_replaced_as_set_replaces_any_type() {
    let r = Redis::start();
    let meta = String::from_utf8(meta_key(b"k")).unwrap();
    assert_eq!(r.cli(&["HSET", &meta, "f", "v"]), "1");
    assert_eq!(r.write("k", Some("v"), 1, 1), "1");
    assert_eq!(r.cli(&["GET", "k"]), "v");
    assert_eq!(r.cli(&["TYPE", &meta]), "string");
    assert_eq!(
        r.write("k", Some("older"), 0, 1),
        "0",
        "the new stamp holds"
    );
}

#[test]
fn many_writes_in_one_call_each_get_their_own_answer_in_record_order() {
    let r = Redis::start();
    assert_eq!(r.write("old", Some("newer"), 9, 1), "1");
    assert_eq!(r.write("gone", Some("v"), 1, 1), "1");
    let answers = r.write_many(&[
        ("fresh", Some("v1"), 1, 1),
        ("old", Some("stale"), 2, 1),
        ("gone", None, 2, 1),
        ("fresh", Some("v3"), 3, 1),
        ("fresh", Some("v2"), 2, 1),
        ("back", None, 1, 1),
        ("back", Some("again"), 2, 1),
    ]);
    assert_eq!(answers, ["1", "0", "1", "1", "0", "1", "1"]);
    assert_eq!(
        r.cli(&["GET", "fresh"]),
        "v3",
        "the newer of one call's two"
    );
    assert_eq!(r.cli(&["GET", "old"]), "newer");
    assert_eq!(r.cli(&["EXISTS", "gone"]), "0");
    assert_eq!(
        r.cli(&["GET", "back"]),
        "again",
        "a put after a delete in one call"
    );
    assert_eq!(
        r.write("gone", Some("older"), 1, 5),
        "0",
        "the delete kept its stamp"
    );
    assert_eq!(r.write("fresh", Some("v2 again"), 2, 9), "0");
}

#[test]
fn a_call_of_more_records_than_one_lua_unpack_holds_writes_them_all() {
    let r = Redis::start();
    let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
    let writes: Vec<(&str, Option<&str>, u64, u64)> = keys
        .iter()
        .map(|k| (k.as_str(), Some(k.as_str()), 1, 1))
        .collect();
    let answers = r.write_many(&writes);
    assert_eq!(answers.len(), 3000);
    assert!(answers.iter().all(|a| a == "1"), "{:?}", &answers[..5]);
    assert_eq!(r.cli(&["DBSIZE"]), "6000", "3000 keys and their stamps");
    assert_eq!(r.cli(&["GET", "k2999"]), "k2999");
}

#[test]
fn a_key_written_twice_in_a_call_without_deletes_keeps_the_newer() {
    let r = Redis::start();
    let answers = r.write_many(&[
        ("x", Some("v1"), 1, 1),
        ("y", Some("w"), 1, 1),
        ("x", Some("v3"), 3, 1),
        ("x", Some("v2"), 2, 1),
    ]);
    assert_eq!(answers, ["1", "1", "1", "0"]);
    assert_eq!(r.cli(&["GET", "x"]), "v3");
    assert_eq!(r.write("x", Some("v2"), 2, 7), "0", "the stamp is v3's");
}
