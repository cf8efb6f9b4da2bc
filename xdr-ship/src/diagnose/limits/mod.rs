//! One file per limit class: its name, its explanation (headline, evidence
//! line, remedy with the exact figure to set) and the ceiling it implies.
//!
//! Why one room per class: a verdict's text, its remedy, its ceiling and
//! its name in every output belong to the same judgement; spread over
//! several matches they drifted apart. A new class ("ramping up", a
//! kernel-only judgement) is one new file defining its `CLASS`, one
//! [`Limit`] variant and its line in [`Limit::class`]; the attribution table
//! in `rules.rs` says when its time is charged (the order in which rules
//! claim an interval is one decision across classes, so it stays one
//! table).
mod application;
mod bandwidth;
mod destination;
mod idle;
mod interrupts;
mod loss;
mod ramp;
mod receiver_window;
mod sender_buffer;
mod unknown;

use super::{acc::Acc, context::Context, Ceiling, Limit, Rate};

/// What each class file needs in scope.
mod prelude {
    pub(super) use super::super::{
        acc::Acc,
        context::{plural, Context},
        rules::{ratio, LINK_FULL_RATIO, QUEUE_RTT_RATIO, WINDOW_FULL_MAJORITY},
        Limit,
    };
    pub(super) use super::{Ceilings, Class, Explained, Inputs};
    pub(super) use crate::units::{self, mathis_bytes_per_s};
}

/// What one limit's share means, in figures.
pub(super) struct Explained {
    /// The key figure, short.
    pub headline: String,
    /// One evidence line.
    pub evidence: String,
    /// The change that moves this limit.
    pub remedy: String,
}

/// What a class explains from: one scope's attributed time and figures.
#[derive(Clone, Copy)]
pub(super) struct Inputs<'a> {
    /// The class's share of the scope's time, percent.
    pub pct: f64,
    /// The scope's smoothed RTT, else the path's, in seconds (0: unknown).
    pub srtt_s: f64,
    /// The scope's attributed time and figures.
    pub acc: &'a Acc,
    /// The shipper-wide facts.
    pub ctx: &'a Context,
    /// What the scope delivered.
    pub observed: &'a Rate,
}

impl<'a> Inputs<'a> {
    /// The inputs of a class holding `pct` of `acc`'s time.
    pub fn new(pct: f64, acc: &'a Acc, ctx: &'a Context, observed: &'a Rate) -> Self {
        Self {
            pct,
            srtt_s: Some(acc.srtt_s())
                .filter(|s| *s > 0.0)
                .or(ctx.rtt_s())
                .unwrap_or(0.0),
            acc,
            ctx,
            observed,
        }
    }
}

/// The ceilings of one scope, as the classes add them.
pub(super) struct Ceilings {
    bytes_per_record: Option<f64>,
    out: Vec<Ceiling>,
}

impl Ceilings {
    /// Records per second are quoted at `ctx`'s bytes per record.
    fn new(ctx: &Context) -> Self {
        Self {
            bytes_per_record: ctx.bytes_per_record.filter(|b| *b > 0.0),
            out: Vec::new(),
        }
    }

    /// Payload bytes per delivered record, if known.
    pub fn bytes_per_record(&self) -> Option<f64> {
        self.bytes_per_record
    }

    /// Adds the ceiling of a window of `window_bytes` turning over once per
    /// `srtt_s`, described as `window` (`peer window 3.1 MB`).
    pub fn window_per_srtt(
        &mut self,
        limit: Limit,
        window: String,
        window_bytes: f64,
        srtt_s: f64,
    ) {
        let what = format!("{window} ÷ srtt {}", crate::units::secs(srtt_s));
        self.push(limit, what, super::rules::ratio(window_bytes, srtt_s));
    }

    /// Adds the ceiling `limit` implies, if it is a positive finite rate.
    pub fn push(&mut self, limit: Limit, what: String, bytes_per_s: f64) {
        if bytes_per_s > 0.0 && bytes_per_s.is_finite() {
            self.out.push(Ceiling {
                limit,
                what,
                bytes_per_s,
                records_per_s: self.bytes_per_record.map(|b| bytes_per_s / b),
            });
        }
    }
}

/// What explains a limit's share.
type ExplainFn = fn(&Inputs<'_>) -> Explained;

/// What adds a limit's ceilings.
type CeilingsFn = fn(&Inputs<'_>, &mut Ceilings);

/// One limit class: what its file defines as its `CLASS`.
pub(super) struct Class {
    /// Its name in text output: `receiver window`.
    name: &'static str,
    /// Its name where a column is narrow: `rwnd`.
    short_name: &'static str,
    /// What its share means: headline, evidence, remedy.
    explain: ExplainFn,
    /// The rate it would allow, if it implies one.
    ceilings: Option<CeilingsFn>,
}

impl Class {
    /// A class named `name` (`short_name` in narrow columns) that implies
    /// no ceiling.
    pub const fn new(name: &'static str, short_name: &'static str, explain: ExplainFn) -> Self {
        Self {
            name,
            short_name,
            explain,
            ceilings: None,
        }
    }

    /// The same class, adding its ceilings with `ceilings`.
    pub const fn with_ceilings(mut self, ceilings: CeilingsFn) -> Self {
        self.ceilings = Some(ceilings);
        self
    }
}

/// The order ceilings are computed in (ties keep it after sorting).
const CEILING_ORDER: [Limit; 4] = [
    Limit::Application,
    Limit::ReceiverWindow,
    Limit::Bandwidth,
    Limit::Loss,
];

impl Limit {
    /// The file that holds this limit's judgement.
    pub(super) fn class(self) -> &'static Class {
        match self {
            Limit::Bandwidth => &bandwidth::CLASS,
            Limit::ReceiverWindow => &receiver_window::CLASS,
            Limit::SenderBuffer => &sender_buffer::CLASS,
            Limit::Loss => &loss::CLASS,
            Limit::Interrupts => &interrupts::CLASS,
            Limit::Application => &application::CLASS,
            Limit::Destination => &destination::CLASS,
            Limit::Unknown => &unknown::CLASS,
            Limit::Ramp => &ramp::CLASS,
            Limit::Idle => &idle::CLASS,
        }
    }

    /// Its name in text output: `receiver window`.
    pub fn name(self) -> &'static str {
        self.class().name
    }

    /// Its name where a column is narrow: `rwnd`.
    pub fn short_name(self) -> &'static str {
        self.class().short_name
    }

    /// Its name as a metric label: `receiver_window`.
    pub fn label(self) -> String {
        self.name().replace(' ', "_")
    }
}

/// What `limit`'s share `pct` of `acc`'s time means.
pub(super) fn explain(
    limit: Limit,
    pct: f64,
    acc: &Acc,
    ctx: &Context,
    observed: &Rate,
) -> Explained {
    (limit.class().explain)(&Inputs::new(pct, acc, ctx, observed))
}

/// The rate each limit would allow, tightest first, for a scope that
/// delivered `observed` (a class may leave out a model bound the measured
/// rate already exceeds: that bound did not hold, so it is no ceiling).
pub(super) fn ceilings(acc: &Acc, ctx: &Context, observed: &Rate) -> Vec<Ceiling> {
    let inputs = Inputs::new(0.0, acc, ctx, observed);
    let mut out = Ceilings::new(ctx);
    for ceilings in CEILING_ORDER.iter().filter_map(|l| l.class().ceilings) {
        ceilings(&inputs, &mut out);
    }
    let mut out = out.out;
    out.sort_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_has_its_own_name_short_name_and_label() {
        let mut names: Vec<&str> = Limit::ALL.iter().map(|l| l.name()).collect();
        let mut shorts: Vec<&str> = Limit::ALL.iter().map(|l| l.short_name()).collect();
        names.sort_unstable();
        names.dedup();
        shorts.sort_unstable();
        shorts.dedup();
        assert_eq!(names.len(), Limit::ALL.len());
        assert_eq!(shorts.len(), Limit::ALL.len());
        assert_eq!(Limit::ReceiverWindow.label(), "receiver_window");
        assert!(Limit::ALL.iter().all(|l| !l.label().contains(' ')));
    }
}
