//! The verdict: what limits the throughput now, by how much, why, and what
//! to change — for the shipper and for each connection.
//!
//! Why this exists: on a long, fat link many things can cap a pipelined
//! shipper, and each needs a different fix in a different place (the
//! receiver's `rmem_max`, the shipper's `--window`, the NIC's IRQ affinity,
//! the link itself). Guessing costs hours; the kernel already keeps the
//! answer for TCP. Linux's `TCP_INFO` carries *chrono timers*: cumulative
//! time each socket was busy, and of that, limited by the peer's receive
//! window or by its own send buffer. Over a window of samples their
//! differences split each connection's wall time into who held it back.
//! This module does that split, completes it with what the kernel cannot
//! see (the app window, answer latency, per-CPU softirq load, the
//! operator's link rate) and turns the largest share into a remedy with
//! the exact figure to set.
//!
//! Why shares rather than one label: a connection is rarely limited by one
//! thing all the time. "Receiver window 62%, bandwidth 30%, application 8%"
//! says both what to fix first and how much fixing it can gain.
//!
//! How: [`Diagnoser`] keeps a sliding window of [`Sample`]s (bounded by
//! time and by [`MAX_SAMPLES`]); [`Diagnoser::verdict`] walks it interval by
//! interval and attributes every microsecond of every connection to one
//! [`Limit`] (the table is in [`rules`]; each threshold is a constant there
//! with its reason). What each limit says (name, headline, evidence,
//! remedy, ceiling) lives in one file per class under `limits/`; the
//! figures both walks accumulate per connection, in `acc.rs`. The shipper's
//! shares are the connections' summed:
//! shares of connection-time. Pure logic: no I/O, no clock; samples carry
//! their own time, so a recording replays to the same verdict.
//!
//! Rules are deliberately plain, per interval and free of hysteresis: the
//! same samples always give the same verdict, and every share can be
//! recomputed by hand from the evidence lines.
//!
//! Known blind spots: softirq load is per CPU, not per flow, so a
//! saturated CPU is assumed to be the one serving the flows; answer latency
//! is per shipper, not per connection; a BBR flow in ProbeRTT (cwnd 4 for
//! 200 ms every 10 s) that retransmits in the same interval can read as a
//! collapsing cwnd.
mod acc;
mod context;
mod kernel_rules;
mod limits;
mod render;
pub mod rules;
mod sample;
mod verdict;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};

pub use rules::MAX_SAMPLES;
pub use sample::{DiagnoseError, FlowOwner, LinkHints, Sample, OBSERVE_MODE, SAMPLE_VERSION};

/// What holds the throughput back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The link is full: TCP sends at its congestion window, no loss to
    /// blame, a queue builds.
    Bandwidth,
    /// The peer's advertised window is below what the path needs.
    ReceiverWindow,
    /// Our send buffer is full: it holds less than the path needs.
    SenderBuffer,
    /// Retransmits with a collapsing congestion window.
    Loss,
    /// One CPU saturated by softirq work while the others idle.
    Interrupts,
    /// TCP waits for data: the app window (or the connection count) is too
    /// small, or the source is slow.
    Application,
    /// TCP is not the limit and the window is full, but answers come back
    /// slowly: the receiver.
    Destination,
    /// TCP is still opening its windows (slow start, the receive window's
    /// autotuning): a moment, not a steady limit.
    Ramp,
    /// No kernel view (disconnected, reconnecting, no `TCP_INFO`).
    Unknown,
    /// Nothing to ship.
    Idle,
}

impl Limit {
    /// Every limit, in the order ties are broken.
    pub const ALL: [Limit; 10] = [
        Limit::Bandwidth,
        Limit::ReceiverWindow,
        Limit::SenderBuffer,
        Limit::Loss,
        Limit::Interrupts,
        Limit::Application,
        Limit::Destination,
        Limit::Ramp,
        Limit::Unknown,
        Limit::Idle,
    ];
}

/// Whom a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// All connections together.
    Shipper,
    /// One connection of the pool.
    Connection {
        /// Its index in the pool.
        id: usize,
        /// Its socket cookie at the end of the window (0: disconnected).
        cookie: u64,
    },
    /// The observed flows to one peer (kernel-only: `observe`), together;
    /// the peer is named by the [`PeerVerdict`] that holds it.
    Peer {
        /// How many flows.
        flows: usize,
    },
}

/// The verdict of the observed flows that go to one peer (remote address
/// and port): `iperf3 -P 4` is four flows with one limit, judged as one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerVerdict {
    /// `198.18.0.2:5201`, or `unknown peer` for flows the kernel's half
    /// alone listed.
    pub peer: String,
    /// The cookies of its flows (those that carried data), in order.
    pub cookies: Vec<u64>,
    /// Their time and figures together.
    pub verdict: Verdict,
}

/// What a flow without a known remote address is grouped under.
pub const UNKNOWN_PEER: &str = "unknown peer";

/// One figure behind a verdict, in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The limit it supports (`None`: context such as RTT and BDP).
    pub limit: Option<Limit>,
    /// `rwnd-limited 62% of the time; peer window 3.1 MB vs BDP 15.6 MB`.
    pub text: String,
}

/// The rate one limit would allow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// The limit it belongs to.
    pub limit: Limit,
    /// How it is computed, with its inputs: `peer window 3.0 MB ÷ srtt 156.0ms`.
    pub what: String,
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// Records per second at the observed bytes per record.
    pub records_per_s: Option<f64>,
}

/// A throughput.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Payload bytes per second.
    pub bytes_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
}

/// What limits one scope, with the figures and the fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The shipper or one connection.
    pub scope: Scope,
    /// The limit with the largest share.
    pub limit: Limit,
    /// Percent of (connection-)time per limit, largest first, adding up to
    /// 100; limits with no time are left out.
    pub shares: Vec<(Limit, f64)>,
    /// The key figure, short: `peer window 3.0 MB < BDP 15.6 MB`.
    pub headline: String,
    /// Context first, then one line per limit with a notable share.
    pub evidence: Vec<Evidence>,
    /// The change that moves the top limit, with its figure.
    pub remedy: String,
    /// Delivered over the window.
    pub observed: Rate,
    /// The rate each limit would allow, tightest first.
    pub ceilings: Vec<Ceiling>,
}

impl Verdict {
    /// The share of `limit` in percent (0 if it has none).
    pub fn share(&self, limit: Limit) -> f64 {
        self.shares
            .iter()
            .find(|(l, _)| *l == limit)
            .map_or(0.0, |(_, p)| *p)
    }
}

/// The verdicts over one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Wall time between the oldest and newest sample used.
    #[serde(rename = "span_s", with = "sample::duration_s")]
    pub span: Duration,
    /// Samples used.
    pub samples: usize,
    /// The round trip the figures use.
    #[serde(rename = "rtt_us", with = "sample::opt_duration_us")]
    pub rtt: Option<Duration>,
    /// Bandwidth-delay product, bytes (link rate × RTT, or observed rate ×
    /// RTT without a link rate).
    pub bdp_bytes: Option<u64>,
    /// All connections together.
    pub shipper: Verdict,
    /// One per connection in the newest sample, in its order.
    pub connections: Vec<Verdict>,
    /// The node each connection ships to, by connection id, where the
    /// destination has several (a Redis Cluster's primaries): the report
    /// names the node of each group, so a slow primary is named.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nodes: std::collections::BTreeMap<usize, String>,
    /// Kernel-only (`observe`): the flows that carried data, one verdict
    /// per peer, in the order their first flow appears.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerVerdict>,
}

impl Diagnosis {
    /// The verdict of connection `id`.
    pub fn connection(&self, id: usize) -> Option<&Verdict> {
        self.connections
            .iter()
            .find(|v| matches!(v.scope, Scope::Connection { id: i, .. } if i == id))
    }
}

/// The engine: a sliding window of samples in, verdicts out.
#[derive(Clone, Debug)]
pub struct Diagnoser {
    window: Duration,
    window_cap: Option<u64>,
    samples: VecDeque<Sample>,
    holds: std::collections::HashMap<u64, Hold>,
}

impl Diagnoser {
    /// Judges over the last `window` of samples (at least the last two
    /// samples, whatever the window).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            window_cap: None,
            samples: VecDeque::new(),
            holds: std::collections::HashMap::new(),
        }
    }

    /// Knows the largest window the shipper grows to by itself
    /// (`ship::AUTO_WINDOW_MAX`), so that a remedy past it says to prefer
    /// more connections. Without it the remedy names no cap.
    pub fn with_window_cap(mut self, records: u64) -> Self {
        self.window_cap = Some(records);
        self
    }

    /// The window it judges over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Samples held now.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.holds.clear();
    }

    /// Adds the newest sample and forgets what fell out of the window. A
    /// sample older than the newest held means a new run (a restart, another
    /// recording): the window starts over from it. One at the same time
    /// replaces the newest.
    pub fn push(&mut self, sample: Sample) {
        match self.samples.back() {
            Some(last) if sample.at < last.at => self.samples.clear(),
            Some(last) if sample.at == last.at => {
                self.samples.pop_back();
            }
            _ => {}
        }
        let newest = sample.at;
        self.samples.push_back(sample);
        // Keep the newest sample at or before the window's start, so that
        // differences span the whole window.
        let start = newest.saturating_sub(self.window);
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|s| s.at <= start) {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The verdicts over the window; `None` until two samples span some
    /// time (the kernel's timers are cumulative: one sample says nothing).
    /// Plain: each call judges the window afresh (see [`Diagnoser::judge`]
    /// for the live view with hysteresis).
    pub fn verdict(&self) -> Option<Diagnosis> {
        self.verdict_holding(&|_| None)
    }

    /// The verdicts as a live view shows them: a scope's top limit changes
    /// only once the new one has been on top for [`MIN_CHANGE_SPAN`] of
    /// sample time, so one odd interval does not flip it. The shares stay
    /// the window's own.
    pub fn judge(&mut self) -> Option<Diagnosis> {
        let raw = self.verdict()?;
        let at = self.samples.back().map_or(Duration::ZERO, |s| s.at);
        let mut changed = false;
        let keyed: Vec<(u64, Limit)> = std::iter::once(&raw.shipper)
            .chain(&raw.connections)
            .map(|v| (scope_key(&v.scope), v.limit))
            .chain(
                raw.peers
                    .iter()
                    .map(|p| (peer_key(&p.peer), p.verdict.limit)),
            )
            .collect();
        for &(key, limit) in &keyed {
            let hold = self.holds.entry(key).or_insert(Hold {
                limit,
                candidate: None,
            });
            changed |= hold.update(limit, at);
        }
        // Forget scopes that are gone, so the map stays bounded.
        self.holds
            .retain(|k, _| keyed.iter().any(|(key, _)| key == k));
        if !changed {
            return Some(raw);
        }
        let holds = self.holds.clone();
        self.verdict_holding(&|key| holds.get(&key).map(|h| h.limit))
    }

    /// The verdicts over the window, with `held(key)` the limit the live
    /// view keeps on top for the scope of that key ([`scope_key`],
    /// [`peer_key`]), if any.
    fn verdict_holding(&self, held: &dyn Fn(u64) -> Option<Limit>) -> Option<Diagnosis> {
        let samples: Vec<&Sample> = self.samples.iter().collect();
        if samples.len() < 2 {
            return None;
        }
        let ctx = context::Context::new(&samples, self.window_cap)?;
        if ctx.span.is_zero() {
            return None;
        }
        let last = samples.last()?;
        let span_s = ctx.span.as_secs_f64();
        let mut all = acc::Acc::default();
        let mut peers = PeerGroups::default();
        let mut connections = Vec::with_capacity(last.ship.connections.len());
        for c in &last.ship.connections {
            let acc = if ctx.kernel_only {
                let mut acc = kernel_rules::collect(&samples, c.cookie);
                acc.process = last.owner(c.cookie).map(sample::FlowOwner::process);
                acc
            } else {
                rules::collect(&samples, c.id, ctx.rtt_us)
            };
            // A kernel-only flow that carried nothing (a listener, the
            // receiving end, an idle control connection) says nothing
            // about the path: it stays out of the whole's shares.
            if !ctx.kernel_only || acc.carried > 0 {
                all.merge(&acc);
            }
            if ctx.kernel_only && acc.carried > 0 {
                let peer = last
                    .owner(c.cookie)
                    .and_then(|o| o.peer.clone())
                    .unwrap_or_else(|| UNKNOWN_PEER.to_owned());
                peers.add(peer, c.cookie, &acc);
            }
            let observed = Rate {
                bytes_per_s: rules::ratio(acc.acked_bytes as f64, span_s),
                records_per_s: rules::ratio(acc.delivered as f64, span_s),
            };
            let scope = Scope::Connection {
                id: c.id,
                cookie: c.cookie,
            };
            connections.push(verdict::build(
                scope,
                &acc,
                &ctx,
                observed,
                held(scope_key(&scope)),
            ));
        }
        let shipper = verdict::build(
            Scope::Shipper,
            &all,
            &ctx,
            ctx.observed,
            held(scope_key(&Scope::Shipper)),
        );
        let peers = peers.judge(&ctx, held);
        Some(Diagnosis {
            span: ctx.span,
            samples: samples.len(),
            rtt: ctx.rtt_us.map(Duration::from_micros),
            bdp_bytes: ctx.bdp_bytes,
            shipper,
            connections,
            nodes: last
                .ship
                .connections
                .iter()
                .filter_map(|c| Some((c.id, c.node.clone()?)))
                .collect(),
            peers,
        })
    }
}

/// The observed flows that carried data, grouped by peer in the order
/// their first flow appears: (peer, its flows' cookies, their figures).
#[derive(Default)]
struct PeerGroups(Vec<(String, Vec<u64>, acc::Acc)>);

impl PeerGroups {
    fn add(&mut self, peer: String, cookie: u64, acc: &acc::Acc) {
        match self.0.iter_mut().find(|(p, ..)| *p == peer) {
            Some((_, cookies, group)) => {
                cookies.push(cookie);
                group.merge(acc);
            }
            None => self.0.push((peer, vec![cookie], acc.clone())),
        }
    }

    /// One verdict per group, `held` as for the other scopes.
    fn judge(
        self,
        ctx: &context::Context,
        held: &dyn Fn(u64) -> Option<Limit>,
    ) -> Vec<PeerVerdict> {
        let span_s = ctx.span.as_secs_f64();
        self.0
            .into_iter()
            .map(|(peer, cookies, acc)| {
                let observed = Rate {
                    bytes_per_s: rules::ratio(acc.acked_bytes as f64, span_s),
                    records_per_s: 0.0,
                };
                let scope = Scope::Peer {
                    flows: cookies.len(),
                };
                let verdict = verdict::build(scope, &acc, ctx, observed, held(peer_key(&peer)));
                PeerVerdict {
                    peer,
                    cookies,
                    verdict,
                }
            })
            .collect()
    }
}

/// A live verdict changes its top limit only after the new one has been
/// on top for this long (sample time): two or more one-second intervals,
/// so that one odd interval (a burst of retransmits, a stalled reader)
/// does not flip what an operator reads.
pub const MIN_CHANGE_SPAN: Duration = Duration::from_secs(2);

/// The key of a scope in the hysteresis table.
fn scope_key(scope: &Scope) -> u64 {
    match scope {
        Scope::Shipper => u64::MAX,
        Scope::Connection { id, cookie } => cookie ^ ((*id as u64) << 48),
        // Peer groups are keyed by their peer ([`peer_key`]), not by scope.
        Scope::Peer { .. } => u64::MAX - 1,
    }
}

/// The key of a peer group in the hysteresis table: a hash of the peer
/// (`DefaultHasher::new` has fixed keys, so it is the same every run).
fn peer_key(peer: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ("peer", peer).hash(&mut h);
    h.finish()
}

/// The limit a live view shows for one scope, and the one that may
/// replace it.
#[derive(Clone, Copy, Debug)]
struct Hold {
    limit: Limit,
    /// A different top limit and when it first came on top.
    candidate: Option<(Limit, Duration)>,
}

impl Hold {
    /// Takes the window's top limit `top` at sample time `at`; true if the
    /// held limit differs from `top` afterwards.
    fn update(&mut self, top: Limit, at: Duration) -> bool {
        // Idle to carrying is a fact, not a noisy interval: a flow that
        // starts shows its ramp at once instead of "idle" for two seconds.
        if top == self.limit || self.limit == Limit::Idle {
            self.limit = top;
            self.candidate = None;
            return false;
        }
        match self.candidate {
            Some((c, since)) if c == top => {
                if at.saturating_sub(since) >= MIN_CHANGE_SPAN {
                    self.limit = top;
                    self.candidate = None;
                    return false;
                }
            }
            _ => self.candidate = Some((top, at)),
        }
        true
    }
}
