//! The source log's promises, one behaviour each: durable before
//! acknowledged, torn tails cut, checkpoints advance only over contiguous
//! acknowledgements, segments reclaimed only when every destination has
//! passed them, a full budget answers Busy and drops nothing.
use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::ship::Source;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("xdr-srclog-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(n: u64) -> Write {
    Write::put(
        format!("key:{:04}", n % 100),
        format!("value-{n:08}-{}", "x".repeat(40)),
        n + 1,
        1,
    )
}

fn writes(range: Range<u64>) -> Vec<Write> {
    range.map(write).collect()
}

fn small(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        checkpoint_interval: Duration::from_millis(50),
        ..LogConfig::new(dir)
    }
}

/// Every entry from `from` up to what is durable, read through a reader.
fn read_all(log: &Log, from: u64) -> Vec<Entry> {
    let mut r = log.reader_at(from).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = r.read_batch(100, 1 << 20).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn an_append_returns_only_once_durable_and_reads_back_after_reopen() {
    let dir = TempDir::new("append");
    let log = Log::open(small(dir.path())).unwrap();
    let a = log.append(&writes(0..3)).await.unwrap();
    let b = log.append(&writes(3..10)).await.unwrap();
    assert_eq!((a, b.clone()), (0..3, 3..10));
    assert!(log.stats().durable_seq >= b.end);
    drop(log);
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.stats().next_seq, 10);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 10);
    for (i, e) in got.iter().enumerate() {
        assert_eq!((e.seq, &e.write), (i as u64, &write(i as u64)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_a_sync() {
    let dir = TempDir::new("group");
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(&[write(i)]).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().start);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..64).collect::<Vec<_>>());
    let syncs = log.stats().syncs;
    assert!(
        syncs < 32,
        "64 concurrent appends took {syncs} syncs: not grouped"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_at_the_last_whole_entry() {
    let dir = TempDir::new("torn");
    let log = Log::open(small(dir.path())).unwrap();
    log.append(&writes(0..5)).await.unwrap();
    drop(log);
    // A crash in the middle of writing entry 5: half its bytes made it.
    let last = segment_files(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut buf = BytesMut::new();
    segment::encode(&mut buf, 5, 0, &write(5));
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&buf[..buf.len() / 2]).unwrap();
    drop(f);

    let log = Log::open(small(dir.path())).unwrap();
    let stats = log.stats();
    assert!(stats.recovered_torn);
    assert_eq!(stats.next_seq, 5);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole);
    // The log carries on where the whole entries end.
    assert_eq!(log.append(&writes(5..6)).await.unwrap(), 5..6);
    assert_eq!(read_all(&log, 0).len(), 6);
}

#[tokio::test]
async fn a_bad_crc_in_the_last_segment_cuts_the_log_there() {
    let dir = TempDir::new("crc");
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    log.append(&writes(0..4)).await.unwrap();
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let entry = segment::entry_len(&write(0));
    bytes[2 * entry + 20] ^= 0xff; // inside entry 2's body
    std::fs::write(&last, &bytes).unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!(log.stats().next_seq, 2);
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[tokio::test]
async fn damage_in_an_earlier_segment_refuses_to_open() {
    let dir = TempDir::new("corrupt");
    let log = Log::open(small(dir.path())).unwrap();
    for i in 0..20 {
        log.append(&writes(i * 10..i * 10 + 10)).await.unwrap();
    }
    assert!(log.stats().segments > 2);
    drop(log);
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    let log = Log::open(small(dir.path())).unwrap();
    let mut r = log.reader_at(0).unwrap();
    let err = r.read_batch(1000, 1 << 30).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn checkpoint_advances_only_over_contiguous_acknowledgements() {
    let dir = TempDir::new("ooo");
    let log = Log::open(small(dir.path())).unwrap();
    log.append(&writes(0..6)).await.unwrap();
    let mut src = LogSource::open(&log, "far").unwrap();
    for i in 0..5 {
        assert_eq!(src.next().await.unwrap().seq, i);
    }
    assert!(src.wants_acks());
    src.acked(2);
    src.acked(3);
    src.acked(1);
    assert_eq!(src.checkpoint(), 0, "0 is still unanswered");
    src.acked(0);
    assert_eq!(src.checkpoint(), 4);
    src.acked(4);
    assert_eq!(src.checkpoint(), 5, "everything handed out is answered");
    assert_eq!(src.backlog(), 1);
}

#[tokio::test]
async fn a_reopened_destination_resumes_at_its_persisted_checkpoint() {
    let dir = TempDir::new("resume");
    {
        let log = Log::open(small(dir.path())).unwrap();
        log.append(&writes(0..10)).await.unwrap();
        let mut src = LogSource::open(&log, "far").unwrap();
        for _ in 0..7 {
            src.next().await.unwrap();
        }
        for s in 0..6 {
            src.acked(s);
        }
        log.flush_checkpoints().unwrap();
        assert_eq!(log.checkpoint("far"), Some(6));
        // Record 6 was handed out but never answered: it must come again.
    }
    let log = Log::open(small(dir.path())).unwrap();
    let mut src = LogSource::open(&log, "far").unwrap();
    assert_eq!(src.backlog(), 4);
    let first = src.next().await.unwrap();
    assert_eq!((first.seq, first.write), (6, write(6)));
}

#[tokio::test]
async fn a_segment_is_reclaimed_only_once_every_destination_has_passed_it() {
    let dir = TempDir::new("reclaim");
    let log = Log::open(small(dir.path())).unwrap();
    let mut a = LogSource::open(&log, "a").unwrap();
    let mut b = LogSource::open(&log, "b").unwrap();
    for i in 0..20 {
        log.append(&writes(i * 10..i * 10 + 10)).await.unwrap();
    }
    let before = log.stats();
    assert!(before.segments >= 4, "{before:?}");
    for _ in 0..200 {
        let r = a.next().await.unwrap();
        a.acked(r.seq);
    }
    log.flush_checkpoints().unwrap();
    assert_eq!(log.stats().segments, before.segments, "b has read nothing");
    for _ in 0..150 {
        let r = b.next().await.unwrap();
        b.acked(r.seq);
    }
    log.flush_checkpoints().unwrap();
    let after = log.stats();
    assert!(after.segments < before.segments, "{after:?}");
    assert!(after.used_bytes < before.used_bytes);
    assert_eq!(segment_files(dir.path()).len(), after.segments);
    // What b has not acknowledged is all still there.
    assert!(after.first_seq <= 150, "{after:?}");
    let rest = read_all(&log, 150);
    assert_eq!(rest.first().unwrap().seq, 150);
    assert_eq!(rest.len(), 50);
}

#[tokio::test]
async fn a_full_budget_answers_busy_and_keeps_what_was_acknowledged() {
    let dir = TempDir::new("budget");
    let entry = segment::entry_len(&write(0)) as u64;
    let cfg = LogConfig {
        segment_bytes: 10 * entry,
        budget_bytes: 30 * entry,
        ..small(dir.path())
    };
    let log = Log::open(cfg).unwrap();
    let mut src = LogSource::open(&log, "far").unwrap();
    let mut acked = 0u64;
    let err = loop {
        match log.append(&writes(acked..acked + 1)).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(acked, 30);
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, LogError::Busy { .. }));
    assert_eq!(log.stats().busy, 1);
    // Every acknowledged append is still readable.
    assert_eq!(read_all(&log, 0).len(), 30);
    // Once the destination takes a segment's worth, there is room again.
    for _ in 0..15 {
        let r = src.next().await.unwrap();
        src.acked(r.seq);
    }
    log.flush_checkpoints().unwrap();
    assert_eq!(log.append(&writes(30..31)).await.unwrap(), 30..31);
    // An append larger than the whole budget can never fit, and says so.
    let err = log.append(&writes(0..40)).await.unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_sealed_log_ends_each_source_after_its_last_record() {
    let dir = TempDir::new("seal");
    let log = Log::open(small(dir.path())).unwrap();
    log.append(&writes(0..3)).await.unwrap();
    let mut src = LogSource::open(&log, "far").unwrap();
    log.seal();
    assert!(matches!(
        log.append(&writes(3..4)).await,
        Err(LogError::Closed)
    ));
    let mut n = 0;
    while tokio::time::timeout(Duration::from_secs(5), src.next())
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn a_source_waits_for_appends_and_reports_lag_of_the_oldest_unacknowledged() {
    let dir = TempDir::new("wait");
    let log = Log::open(small(dir.path())).unwrap();
    let mut src = LogSource::open(&log, "far").unwrap();
    assert_eq!(src.lag(), None);
    let l = log.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        l.append(&writes(0..2)).await.unwrap();
    });
    let r = tokio::time::timeout(Duration::from_secs(5), src.next())
        .await
        .unwrap()
        .unwrap();
    appender.await.unwrap();
    assert_eq!(r.seq, 0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let lag = src.lag().unwrap();
    assert!(lag >= Duration::from_millis(100), "{lag:?}");
    src.acked(0);
    src.next().await.unwrap();
    src.acked(1);
    assert_eq!(src.lag(), None);
}

#[tokio::test]
async fn reading_a_large_backlog_holds_only_a_bounded_read_ahead() {
    let dir = TempDir::new("bounded");
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for i in 0..20 {
        log.append(&writes(i * 500..(i + 1) * 500)).await.unwrap();
    }
    let mut src = LogSource::open(&log, "far").unwrap();
    src.next().await.unwrap();
    assert!(
        src.buffered() < 1000,
        "{} of 10000 records read ahead",
        src.buffered()
    );
    assert_eq!(src.backlog(), 9999);
}

#[test]
fn destination_names_are_checked_and_derived_from_addresses() {
    let dir = TempDir::new("names");
    let log = Log::open(small(dir.path())).unwrap();
    assert!(matches!(
        LogSource::open(&log, "../etc"),
        Err(LogError::BadName(_))
    ));
    assert_eq!(destination_name("10.0.0.2:3000"), "10.0.0.2_3000");
    assert!(LogSource::open(&log, &destination_name("[::1]:3000")).is_ok());
}

#[tokio::test]
async fn coalescing_ships_only_the_newest_version_of_a_hot_key() {
    let dir = TempDir::new("hot");
    let log = Log::open(small(dir.path())).unwrap();
    let hot = |v: u64| Write::put(&b"hot"[..], format!("v{v}"), v, 1);
    log.append(&[hot(1), write(500), hot(3), hot(2)])
        .await
        .unwrap();
    log.seal();
    let counter = Arc::new(AtomicU64::new(0));
    let mut src = LogSource::open(&log, "far")
        .unwrap()
        .with_coalescing(counter.clone());
    let mut got = Vec::new();
    while let Some(r) = src.next().await {
        got.push((r.seq, r.write.version));
        src.acked(r.seq);
    }
    assert_eq!(got, vec![(1, 501), (2, 3)]);
    assert_eq!(counter.load(Ordering::Relaxed), 2);
    assert_eq!(
        src.checkpoint(),
        4,
        "skipped records do not hold the checkpoint"
    );
}

#[tokio::test]
async fn json_lines_are_appended_and_a_bad_line_is_named() {
    let dir = TempDir::new("jsonl");
    let log = Log::open(small(dir.path())).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let input = "{\"key\":\"a\",\"value\":\"1\",\"version\":1}\n\n{\"key\":\"b\",\"version\":2}\n";
    let n = ingest::feed_json_lines(&log, input.as_bytes(), 9, &cancel)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let got = read_all(&log, 0);
    assert_eq!(got[1].write, Write::tombstone(&b"b"[..], 2, 9));
    let input = "{\"key\":\"c\",\"version\":3}\n{\"key\":\"d\"}\n";
    let err = ingest::feed_json_lines(&log, input.as_bytes(), 9, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert_eq!(
        read_all(&log, 0).len(),
        3,
        "the line before the bad one went in"
    );
}

#[tokio::test]
async fn the_ingest_sink_acknowledges_durable_writes_and_answers_busy_when_full() {
    use crate::{
        server::{Applied, Sink},
        wire::ResultCode,
    };
    let dir = TempDir::new("sink");
    let entry = segment::entry_len(&write(0)) as u64;
    let cfg = LogConfig {
        budget_bytes: 4 * entry,
        ..small(dir.path())
    };
    let log = Log::open(cfg).unwrap();
    let sink = ingest::LogSink(log.clone());
    assert_eq!(
        sink.apply(writes(0..3)).await,
        Applied::PerWrite(vec![ResultCode::Ok; 3])
    );
    assert!(log.stats().durable_seq >= 3, "answered before durable");
    assert!(matches!(
        sink.apply(writes(3..5)).await,
        Applied::Refused(ResultCode::Busy, _)
    ));
    assert!(matches!(
        sink.apply(vec![Write::put(&b""[..], &b"v"[..], 1, 1)])
            .await,
        Applied::Refused(ResultCode::BadRequest, _)
    ));
    assert_eq!(read_all(&log, 0).len(), 3);
}
