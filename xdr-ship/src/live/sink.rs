//! The outputs as sinks of one snapshot stream: each interval the
//! pipeline's [`Frame`] (the shipper's snapshot, the joined sample, the
//! verdict, the sources) goes to every sink the operator asked for.
//!
//! Why sinks: the headless line, `--json`, Prometheus, a recording and the
//! TUI show the same frame. As sinks of one stream they cannot disagree, a
//! new output is one new `impl Sink`, and each is testable on its own (the
//! text sinks write to any `Write`).
use std::io::Write;

use crate::{
    diagnose::{Diagnosis, Limit, Sample},
    metrics::ShipSnapshot,
};

use super::{kernel::Sources, record::RecordingWriter};

/// One interval as every output sees it.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The shipper's own numbers.
    pub snap: &'a ShipSnapshot,
    /// The snapshot joined with the kernel's view.
    pub sample: &'a Sample,
    /// The verdict over the window, once there is one.
    pub diagnosis: Option<&'a Diagnosis>,
    /// Where the kernel half came from.
    pub sources: &'a Sources,
}

/// An output of the live pipeline. It must not block the shipper: a slow
/// consumer drops or fails, it never waits.
pub trait Sink: Send {
    /// Shows, exports or stores one frame.
    fn emit(&mut self, frame: &Frame<'_>);

    /// A new judging window starts (a new phase of a measurement): forget
    /// what was said about the old one.
    fn restart(&mut self) {}
}

/// The sinks of one run, fed in order.
#[derive(Default)]
pub struct Sinks(Vec<Box<dyn Sink>>);

impl Sinks {
    /// No sink yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `sink`.
    pub fn push(&mut self, sink: impl Sink + 'static) {
        self.0.push(Box::new(sink));
    }

    /// Hands `frame` to every sink.
    pub fn emit(&mut self, frame: &Frame<'_>) {
        for s in &mut self.0 {
            s.emit(frame);
        }
    }

    /// Tells every sink a new judging window starts.
    pub fn restart(&mut self) {
        for s in &mut self.0 {
            s.restart();
        }
    }
}

/// The seed's headless line each interval, and the verdict whenever its
/// limit changes; prefixed (`[name] `) when several destinations share the
/// terminal.
pub struct LineSink<W> {
    out: W,
    prefix: String,
    last_limit: Option<Limit>,
}

impl<W: Write + Send> LineSink<W> {
    /// Lines to `out`, each starting with `prefix`.
    pub fn new(out: W, prefix: impl Into<String>) -> Self {
        Self {
            out,
            prefix: prefix.into(),
            last_limit: None,
        }
    }
}

impl<W: Write + Send> Sink for LineSink<W> {
    fn emit(&mut self, frame: &Frame<'_>) {
        let _ = writeln!(self.out, "{}{}", self.prefix, frame.snap.headless_line());
        if let Some(d) = frame.diagnosis {
            if self.last_limit != Some(d.shipper.limit) {
                let _ = writeln!(self.out, "{}verdict: {}", self.prefix, d.shipper);
                self.last_limit = Some(d.shipper.limit);
            }
        }
    }

    /// The next verdict is printed whatever its limit.
    fn restart(&mut self) {
        self.last_limit = None;
    }
}

/// One JSON object per interval: [`json_line`].
pub struct JsonSink<W>(pub W);

impl<W: Write + Send> Sink for JsonSink<W> {
    fn emit(&mut self, frame: &Frame<'_>) {
        let line = json_line(frame.snap, frame.diagnosis, frame.sources);
        let _ = writeln!(self.0, "{line}");
    }
}

/// The `--json` line: the snapshot's fields, per connection included, plus
/// `verdict` (the shipper's, with shares and remedy), each connection's
/// limit in `connection_limits`, and `sources`.
pub fn json_line(snap: &ShipSnapshot, diagnosis: Option<&Diagnosis>, sources: &Sources) -> String {
    let mut v = match serde_json::to_value(snap) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\":\"snapshot does not serialise: {e}\"}}"),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "verdict".into(),
            diagnosis.map_or(serde_json::Value::Null, |d| {
                serde_json::to_value(&d.shipper).unwrap_or_default()
            }),
        );
        if let Some(d) = diagnosis {
            let limits: Vec<serde_json::Value> = d
                .connections
                .iter()
                .map(
                    |c| serde_json::json!({"scope": c.scope, "limit": c.limit, "shares": c.shares}),
                )
                .collect();
            obj.insert("connection_limits".into(), limits.into());
            obj.insert("rtt_us".into(), d.rtt.map(|r| r.as_micros() as u64).into());
            obj.insert("bdp_bytes".into(), d.bdp_bytes.into());
        }
        obj.insert(
            "sources".into(),
            serde_json::to_value(sources).unwrap_or_default(),
        );
    }
    v.to_string()
}

/// `--record FILE`: every joined sample, until a write fails (then it says
/// so once on stderr and stops; shipping goes on).
pub struct RecordSink(Option<RecordingWriter>);

impl RecordSink {
    /// Records to `writer`.
    pub fn new(writer: RecordingWriter) -> Self {
        Self(Some(writer))
    }
}

impl Sink for RecordSink {
    fn emit(&mut self, frame: &Frame<'_>) {
        if let Some(w) = &mut self.0 {
            if let Err(e) = w.write(frame.sample) {
                eprintln!("--record: {e}; recording stopped");
                self.0 = None;
            }
        }
    }
}

/// Hands each sample and verdict to a consumer that must not block, such
/// as the TUI's bounded channel (`try_send`: a full screen drops a frame).
pub struct FeedSink<F>(pub F);

impl<F: FnMut(&Sample, Option<&Diagnosis>) + Send> Sink for FeedSink<F> {
    fn emit(&mut self, frame: &Frame<'_>) {
        (self.0)(frame.sample, frame.diagnosis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose::LinkHints, probe::softirq::SoftirqSource};

    fn sources() -> Sources {
        Sources {
            connections: "tcp_info",
            softirq: SoftirqSource::Proc,
            fallback_reason: Some("--no-ebpf given".into()),
        }
    }

    fn emit_one(sink: &mut dyn Sink, snap: &ShipSnapshot) {
        let sample = Sample::from_snapshot(snap.clone(), None, LinkHints::default());
        let sources = sources();
        sink.emit(&Frame {
            snap,
            sample: &sample,
            diagnosis: None,
            sources: &sources,
        });
    }

    #[test]
    fn the_line_sink_prints_the_headless_line_with_its_prefix() {
        let snap = ShipSnapshot::default();
        let mut out = Vec::new();
        emit_one(&mut LineSink::new(&mut out, "[dc2] "), &snap);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, format!("[dc2] {}\n", snap.headless_line()));
    }

    #[test]
    fn the_json_sink_names_its_sources_and_a_missing_verdict() {
        let mut out = Vec::new();
        emit_one(&mut JsonSink(&mut out), &ShipSnapshot::default());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["verdict"].is_null());
        assert_eq!(v["sources"]["connections"], "tcp_info");
        assert_eq!(v["sources"]["fallback_reason"], "--no-ebpf given");
    }

    #[test]
    fn the_feed_sink_hands_over_every_sample() {
        let mut seen = Vec::new();
        let mut snap = ShipSnapshot::default();
        {
            let mut feed = FeedSink(|s: &Sample, _: Option<&Diagnosis>| seen.push(s.at));
            emit_one(&mut feed, &snap);
            snap.elapsed_s = 1.0;
            emit_one(&mut feed, &snap);
        }
        assert_eq!(seen.len(), 2);
        assert!(seen[1] > seen[0]);
    }
}
