//! One line per distinct problem, with the count of connections it
//! affects, repeated at most every [`REPEAT_EVERY`] while it lasts.
//!
//! Why: a pool of 64 connections to an address where nothing listens
//! printed 64 identical `connect … failed` lines per retry round, which
//! buried whatever else the operator needed to see. The connections still
//! retry on their own; only what they say is gathered here.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

/// A problem already reported is said again at most this often.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(5);
/// Distinct problems remembered; beyond this the oldest are forgotten (a
/// problem's text may carry changing details, and the map must not grow).
const KEPT: usize = 64;

#[derive(Debug, Default)]
struct Seen {
    /// Connections that hit it since it was last said.
    conns: BTreeSet<usize>,
    said_at: Option<Instant>,
}

/// The pool's repeated warnings.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Warnings {
    /// Connection `conn` ran into `problem` at `now`: the line to print now
    /// (`problem` and how many connections hit it since it was last said),
    /// or `None` while it was said less than [`REPEAT_EVERY`] ago.
    pub(crate) fn note(&self, conn: usize, problem: &str, now: Instant) -> Option<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains_key(problem) && seen.len() >= KEPT {
            seen.clear();
        }
        let s = seen.entry(problem.to_owned()).or_default();
        s.conns.insert(conn);
        if s.said_at
            .is_some_and(|at| now.duration_since(at) < REPEAT_EVERY)
        {
            return None;
        }
        let n = std::mem::take(&mut s.conns).len();
        s.said_at = Some(now);
        let plural = if n == 1 { "" } else { "s" };
        Some(format!("{problem} ({n} connection{plural})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_said_at_once() {
        let w = Warnings::default();
        let now = Instant::now();
        assert_eq!(
            w.note(3, "connect failed", now).as_deref(),
            Some("connect failed (1 connection)")
        );
    }

    #[test]
    fn repeats_within_the_span_are_counted_and_said_once_after_it() {
        let w = Warnings::default();
        let t0 = Instant::now();
        w.note(0, "connect failed", t0);
        for conn in 0..64 {
            assert_eq!(
                w.note(conn, "connect failed", t0 + Duration::from_secs(1)),
                None
            );
        }
        assert_eq!(
            w.note(7, "connect failed", t0 + REPEAT_EVERY).as_deref(),
            Some("connect failed (64 connections)")
        );
    }

    #[test]
    fn a_different_problem_is_said_at_once() {
        let w = Warnings::default();
        let t0 = Instant::now();
        w.note(0, "connect failed", t0);
        assert!(w.note(1, "connection lost", t0).is_some());
    }
}
