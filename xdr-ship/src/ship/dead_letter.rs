//! Records the destination refused for good, kept with the reason.
//!
//! Why a file and not a counter only: a permanent refusal (record too large
//! for the destination, a bad request) will fail again however often it is
//! sent, so the shipper moves on, but the record must not vanish: it is
//! written here, synced, and counted as `abandoned`. Each line is a JSON
//! object whose `key`, `value`, `version` and `source_id` follow the
//! `ship --from` format, so a fixed-up file can be fed back in:
//!
//! ```text
//! {"destination":"dc2","seq":41,"code":"RecordTooLarge","reason":"…","unix_ms":…,
//!  "key":"user:1","value":"…","version":7,"source_id":1}
//! ```
//!
//! Keys and values that are not UTF-8 are written as `key_hex`/`value_hex`.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use super::SourceRecord;
use crate::wire::ResultCode;

/// An append-only dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<File>,
}

fn text_or_hex(map: &mut serde_json::Map<String, serde_json::Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            map.insert(field.to_owned(), s.into());
        }
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            map.insert(format!("{field}_hex"), hex.into());
        }
    }
}

impl DeadLetter {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` with why `destination` refused it, and syncs.
    pub fn record(
        &self,
        destination: &str,
        record: &SourceRecord,
        code: ResultCode,
        reason: &str,
    ) -> std::io::Result<()> {
        let mut m = serde_json::Map::new();
        m.insert("destination".into(), destination.into());
        m.insert("seq".into(), record.seq.into());
        m.insert("code".into(), code.to_string().into());
        m.insert("reason".into(), reason.into());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        m.insert("unix_ms".into(), now.into());
        text_or_hex(&mut m, "key", &record.write.key);
        match &record.write.value {
            Some(v) => text_or_hex(&mut m, "value", v),
            None => {
                m.insert("value".into(), serde_json::Value::Null);
            }
        }
        m.insert("version".into(), record.write.version.into());
        m.insert("source_id".into(), record.write.source_id.into());
        let mut line = serde_json::Value::Object(m).to_string();
        line.push('\n');
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (&*file).write_all(line.as_bytes())?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Write;

    #[test]
    fn a_dead_letter_line_carries_the_record_and_the_reason() {
        let path =
            std::env::temp_dir().join(format!("xdr-dead-letter-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let dl = DeadLetter::open(&path).unwrap();
        let rec = SourceRecord {
            seq: 41,
            write: Write::put(&b"user:1"[..], &[0xff, 0x00][..], 7, 2),
        };
        dl.record("dc2", &rec, ResultCode::RecordTooLarge, "write 0: too big")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["destination"], "dc2");
        assert_eq!(v["seq"], 41);
        assert_eq!(v["code"], "RecordTooLarge");
        assert_eq!(v["reason"], "write 0: too big");
        assert_eq!(v["key"], "user:1");
        assert_eq!(v["value_hex"], "ff00");
        assert_eq!(v["version"], 7);
    }
}
