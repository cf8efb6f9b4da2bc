//! Shipping to a Redis Cluster: one pipelined pool per node, a router in
//! front of their hand-over queues.
//!
//! Why a router and not one pool: a cluster node refuses a key of a slot
//! it does not own (`MOVED`), so a record must go to the one primary that
//! owns its slot, and a pool per primary keeps each primary's window,
//! round trip and verdict its own (one slow primary shows as that node's
//! connections, not as the whole cluster). The dispatcher feeds the
//! router's queue as it feeds a single pool's; the router computes each
//! key's slot, looks it up in the slot map and hands the record to that
//! node's queue. Every queue is bounded: a full node queue stops the
//! router, which stops the dispatcher, which stops the source. Acks from
//! every pool go to the one dispatcher, so a log's checkpoint stays right.
//!
//! What moves records between pools: a `MOVED` reply (the slot is another
//! node's now) updates the map and routes the record again; `ASK` (the
//! slot is being migrated) sends that one record to the named node after
//! `ASKING`, on a short connection of its own; a lost node (a primary
//! killed, its replica promoted elsewhere) or `READONLY` (a demoted
//! primary) strands the pool's records, which wait for a fresh
//! `CLUSTER SLOTS` and go where it says. Last-writer-wins in the function
//! makes every resend harmless. Pools exist for replicas too, idle (they
//! connect on their first record): a failover makes one a primary.
//!
//! Nodes that join the cluster after the start get no pool: records of
//! slots moved to them wait, and the run says so.
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    conn::{ClusterLink, ConnConfig, ConnState},
    handover,
    redis::{
        self,
        cluster::{
            connect_node, encode_command, exchange, fetch_map, ClusterError, Redirect, Reroute,
            SlotMap,
        },
        codec::{outcome, Outcome, RedisCodec},
    },
    source::SourceRecord,
    ShipConfig, ShipError,
};
use crate::{tls::ClientTls, wire::ResultCode};

/// Records the router's queue of redirects holds.
const REROUTE_QUEUE: usize = 1024;
/// The slot map is asked again at most this often.
const REFRESH_GAP: Duration = Duration::from_millis(250);
/// How long `CLUSTER SLOTS` or one `ASK` exchange may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(5);
/// `ASK` exchanges in flight at once.
const ASKS_IN_FLIGHT: usize = 16;
/// Longest reconnect backoff of a cluster pool: a failover takes seconds,
/// and a pool must notice its node is back (or gone) soon after.
const CLUSTER_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One node's pool, as the router and the run see it.
pub(super) struct NodePool {
    pub addr: String,
    pub cfg: Arc<ConnConfig>,
    pub queue: handover::Sender<SourceRecord>,
    pub queue_rx: handover::Receiver<SourceRecord>,
    pub states: Vec<Arc<ConnState>>,
}

/// `AUTH` arguments from `--token-file`, if any.
pub(super) fn auth_args(cfg: &ShipConfig) -> Option<Vec<Bytes>> {
    cfg.token.as_ref().map(|t| {
        let (user, password) = redis::credentials(t);
        let mut args = vec![Bytes::from_static(b"AUTH")];
        args.extend(user);
        args.push(password);
        args
    })
}

/// The slot map, from the first of `nodes` that gives one (over TLS
/// when `tls` is given). A certificate problem is returned as it is: the
/// other nodes' certificates come from the same CA.
pub(super) async fn discover(
    nodes: &[String],
    auth: Option<&[Bytes]>,
    tls: Option<&ClientTls>,
) -> Result<SlotMap, ClusterError> {
    let auth: Option<Vec<&[u8]>> = auth.map(|a| a.iter().map(|b| &b[..]).collect());
    let mut last = ClusterError::Refused("no seed given".into());
    for node in nodes {
        match fetch_map(node, auth.as_deref(), tls, CLUSTER_TIMEOUT).await {
            Ok(map) => return Ok(map),
            Err(e @ ClusterError::Certificate(_)) => return Err(e),
            Err(e) => last = ClusterError::Refused(format!("{node}: {e}")),
        }
    }
    Err(last)
}

/// Builds a pool for every node of `map` (`connections` each, ids
/// counted on from `first_id`), linked to the router through `link`;
/// each node is reached as `target` says (TLS or not).
pub(super) async fn node_pools(
    cfg: &ShipConfig,
    target: &redis::cluster::ClusterTarget,
    map: &SlotMap,
    window: u64,
    base: &ConnConfig,
    link: &ClusterLink,
) -> Result<Vec<NodePool>, ShipError> {
    let mut pools = Vec::with_capacity(map.nodes.len());
    let mut id = 0;
    for addr in &map.nodes {
        let mut node_cfg = base.clone();
        node_cfg.ship.to = target.node_url(addr);
        node_cfg.addr = super::resolve(&node_cfg.ship.to).await?;
        node_cfg.redis = redis::RedisTarget::parse(&node_cfg.ship.to, cfg.redis_lww);
        node_cfg.cluster = Some(link.clone());
        node_cfg.backoff_max = CLUSTER_BACKOFF_MAX;
        let (queue, queue_rx) = handover::bounded(super::HANDOVER_QUEUE_RECORDS);
        let states = (0..cfg.connections.max(1))
            .map(|_| {
                id += 1;
                Arc::new(ConnState::new(id - 1, window).with_node(addr))
            })
            .collect();
        pools.push(NodePool {
            addr: addr.clone(),
            cfg: Arc::new(node_cfg),
            queue,
            queue_rx,
            states,
        });
    }
    Ok(pools)
}

/// What a redirected record's `ASK` exchange needs.
#[derive(Clone)]
struct AskCtx {
    auth: Option<Vec<Bytes>>,
    /// TLS towards every node (`rediss-cluster://`).
    tls: Option<ClientTls>,
    lww: bool,
    reroute: mpsc::Sender<Reroute>,
    acked: mpsc::Sender<Vec<u64>>,
    report_acks: bool,
    unsettled: Arc<AtomicU64>,
    /// Whose counters an `ASK` delivery adds to: the node's first connection.
    credit: Arc<HashMap<String, Arc<ConnState>>>,
    slots: Arc<Semaphore>,
}

/// Routes records to the node pools by slot; see the module docs.
pub(super) struct Router {
    map: SlotMap,
    seeds: Vec<String>,
    queues: HashMap<String, handover::Sender<SourceRecord>>,
    main: handover::Receiver<SourceRecord>,
    reroute: mpsc::Receiver<Reroute>,
    unsettled: Arc<AtomicU64>,
    ask: AskCtx,
    cancel: CancellationToken,
}

/// The router's channel of records coming back from the pools.
pub(super) fn reroute_channel() -> (mpsc::Sender<Reroute>, mpsc::Receiver<Reroute>) {
    mpsc::channel(REROUTE_QUEUE)
}

/// What the router is given at the start.
pub(super) struct RouterParts {
    pub map: SlotMap,
    pub seeds: Vec<String>,
    pub main: handover::Receiver<SourceRecord>,
    pub reroute: (mpsc::Sender<Reroute>, mpsc::Receiver<Reroute>),
    pub unsettled: Arc<AtomicU64>,
    pub acked: mpsc::Sender<Vec<u64>>,
    pub cancel: CancellationToken,
}

impl Router {
    pub fn new(
        parts: RouterParts,
        pools: &[NodePool],
        cfg: &ShipConfig,
        report_acks: bool,
    ) -> Self {
        let queues = pools
            .iter()
            .map(|p| (p.addr.clone(), p.queue.clone()))
            .collect();
        let credit = pools
            .iter()
            .filter_map(|p| Some((p.addr.clone(), p.states.first()?.clone())))
            .collect();
        Self {
            map: parts.map,
            seeds: parts.seeds,
            queues,
            main: parts.main,
            reroute: parts.reroute.1,
            unsettled: parts.unsettled.clone(),
            ask: AskCtx {
                auth: auth_args(cfg),
                tls: cfg.tls.clone(),
                lww: cfg.redis_lww,
                reroute: parts.reroute.0,
                acked: parts.acked,
                report_acks,
                unsettled: parts.unsettled,
                credit: Arc::new(credit),
                slots: Arc::new(Semaphore::new(ASKS_IN_FLIGHT)),
            },
            cancel: parts.cancel,
        }
    }

    /// Routes until the source is done and every record settled (then
    /// closes the pools' queues, which ends their connections), or until
    /// cancelled.
    pub async fn run(mut self) {
        let mut pending: VecDeque<SourceRecord> = VecDeque::new();
        let mut held: Vec<SourceRecord> = Vec::new();
        let mut main_done = false;
        let mut refresh_at: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        loop {
            if refresh_at.is_some_and(|t| t <= Instant::now()) {
                self.refresh().await;
                last_refresh = Instant::now();
                refresh_at = None;
                pending.extend(held.drain(..));
            }
            let blocked = self.flush(&mut pending, &mut held);
            if !held.is_empty() && refresh_at.is_none() {
                refresh_at = Some(last_refresh + REFRESH_GAP);
            }
            if main_done && pending.is_empty() && held.is_empty() && self.settled() {
                break;
            }
            let front = pending.front().cloned();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(r) = self.reroute.recv() => {
                    if self.take_back(r, &mut pending, &mut held) && refresh_at.is_none() {
                        refresh_at = Some(last_refresh + REFRESH_GAP);
                    }
                }
                sent = send_blocked(blocked, front) => {
                    if sent {
                        pending.pop_front();
                    }
                }
                r = self.main.recv(), if !main_done && pending.is_empty() => match r {
                    Ok(rec) => {
                        self.unsettled.fetch_add(1, Ordering::Relaxed);
                        pending.push_back(rec);
                    }
                    Err(_) => main_done = true,
                },
                _ = sleep_until(refresh_at), if refresh_at.is_some() => {}
                _ = tokio::time::sleep(SETTLED_POLL), if main_done && pending.is_empty() => {}
            }
        }
        for q in self.queues.values() {
            q.close();
        }
    }

    fn settled(&self) -> bool {
        self.unsettled.load(Ordering::Relaxed) == 0
    }

    /// Hands `pending` records to their owners' queues until one is full
    /// (returned, to wait on); records of a node without a pool are held
    /// for the next map.
    fn flush(
        &self,
        pending: &mut VecDeque<SourceRecord>,
        held: &mut Vec<SourceRecord>,
    ) -> Option<handover::Sender<SourceRecord>> {
        let mut unknown: Option<&str> = None;
        let blocked = loop {
            let Some(rec) = pending.pop_front() else {
                break None;
            };
            let owner = self.map.owner_of_key(&rec.write.key);
            let Some(queue) = self.queues.get(owner) else {
                unknown = Some(owner);
                held.push(rec);
                continue;
            };
            match queue.try_send(rec) {
                Ok(()) => {}
                Err(handover::TrySendError::Full(r)) => {
                    pending.push_front(r);
                    break Some(queue.clone());
                }
                Err(handover::TrySendError::Closed(r)) => held.push(r),
            }
        };
        if let Some(owner) = unknown {
            tracing::warn!(
                "slots are on {owner}, a node that joined after the start: their records wait"
            );
        }
        blocked
    }

    /// A record back from a pool; `true` if it waits for a fresh map.
    fn take_back(
        &mut self,
        r: Reroute,
        pending: &mut VecDeque<SourceRecord>,
        held: &mut Vec<SourceRecord>,
    ) -> bool {
        match r {
            Reroute::Redirected(rec, Redirect::Moved { slot, addr }) => {
                self.map.moved(slot, &addr);
                pending.push_back(rec);
                false
            }
            Reroute::Redirected(rec, Redirect::Ask { addr, .. }) => {
                let ctx = self.ask.clone();
                tokio::spawn(async move { ask(ctx, rec, addr).await });
                false
            }
            Reroute::Redirected(rec, Redirect::Demoted) => {
                held.push(rec);
                true
            }
            Reroute::Stranded(recs) => {
                held.extend(recs);
                true
            }
        }
    }

    /// Asks the known nodes (then the seeds) for the slot map again; keeps
    /// the old one if none answers with a whole map.
    async fn refresh(&mut self) {
        let mut ask: Vec<String> = self.map.primaries().iter().map(|s| s.to_string()).collect();
        ask.extend(self.map.nodes.iter().cloned());
        ask.extend(self.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        ask.retain(|a| seen.insert(a.clone()));
        match discover(&ask, self.ask.auth.as_deref(), self.ask.tls.as_ref()).await {
            Ok(map) => {
                if map.primaries() != self.map.primaries() {
                    tracing::info!("cluster primaries now: {}", map.primaries().join(", "));
                }
                self.map = map;
            }
            Err(e) => tracing::warn!("cannot refresh the cluster's slot map: {e}"),
        }
    }
}

/// How often a router with nothing to route checks whether every record
/// is settled.
const SETTLED_POLL: Duration = Duration::from_millis(5);

/// Waits until `front` fits in the full queue; `false` if the queue closed
/// (the record stays pending). Pending forever without a blocked queue.
async fn send_blocked(
    blocked: Option<handover::Sender<SourceRecord>>,
    front: Option<SourceRecord>,
) -> bool {
    match (blocked, front) {
        (Some(q), Some(rec)) => q.send(rec).await.is_ok(),
        _ => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// `ASK`: sends the one record to `addr` after `ASKING` and settles it;
/// a refusal sends it back to the router (a `MOVED` once the migration is
/// over), after a pause.
async fn ask(ctx: AskCtx, rec: SourceRecord, addr: String) {
    let Ok(_slot) = ctx.slots.clone().acquire_owned().await else {
        return;
    };
    let back = match tokio::time::timeout(CLUSTER_TIMEOUT, ask_once(&ctx, &rec, &addr)).await {
        Ok(Ok(Outcome::Code(code, _))) if code.is_success() => {
            settle_asked(&ctx, &rec, &addr, code).await;
            return;
        }
        Ok(Ok(Outcome::Code(_, Some(text)))) => match Redirect::parse(&text) {
            Some(r @ Redirect::Moved { .. }) => Reroute::Redirected(rec, r),
            _ => Reroute::Stranded(vec![rec]),
        },
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => Reroute::Stranded(vec![rec]),
    };
    tokio::time::sleep(REFRESH_GAP).await;
    let _ = ctx.reroute.send(back).await;
}

/// One `ASK` exchange: AUTH, the function (only if no pool has had a
/// session with the node), `ASKING`, the write; the write's outcome. A
/// short connection per record: `ASK` lasts only while a slot migrates.
async fn ask_once(ctx: &AskCtx, rec: &SourceRecord, addr: &str) -> Result<Outcome, ClusterError> {
    let stream = connect_node(addr, ctx.tls.as_ref()).await?;
    let mut out = BytesMut::new();
    let mut n = 2;
    if let Some(auth) = &ctx.auth {
        let args: Vec<&[u8]> = auth.iter().map(|b| &b[..]).collect();
        encode_command(&mut out, &args)?;
        n += 1;
    }
    // A node one of the pools has had a session with holds the function
    // (loaded at connect, kept across restarts with persistence).
    let loaded = ctx
        .credit
        .get(addr)
        .is_some_and(|s| s.ever_connected.load(Ordering::Relaxed));
    if ctx.lww && !loaded {
        encode_command(
            &mut out,
            &[
                b"FUNCTION",
                b"LOAD",
                b"REPLACE",
                redis::LWW_LIBRARY.as_bytes(),
            ],
        )?;
        n += 1;
    }
    encode_command(&mut out, &[b"ASKING"])?;
    RedisCodec::new(ctx.lww)
        .encode_write(&mut out, &rec.write)
        .map_err(|e| ClusterError::Shape(e.to_string()))?;
    let replies = exchange(stream, &out, n).await?;
    replies
        .last()
        .map(outcome)
        .ok_or_else(|| ClusterError::Shape("no reply".into()))
}

/// An `ASK` delivery: counted on the node's first connection, its
/// position acknowledged to the source.
async fn settle_asked(ctx: &AskCtx, rec: &SourceRecord, addr: &str, code: ResultCode) {
    let state = ctx.credit.get(addr).or_else(|| ctx.credit.values().next());
    if let Some(state) = state {
        state.count_delivered(
            code == ResultCode::LostConflict,
            rec.write.frame_len() as u64,
        );
    }
    ctx.unsettled.fetch_sub(1, Ordering::Relaxed);
    if ctx.report_acks {
        let _ = ctx.acked.send(vec![rec.seq]).await;
    }
}

/// Ships everything `source` yields to the Redis Cluster `target`: the
/// same run as [`super::run`]'s, with a pool per node behind a router.
pub(super) async fn run<S: super::Source>(
    cfg: ShipConfig,
    target: redis::cluster::ClusterTarget,
    source: S,
    report: impl FnMut(&crate::metrics::ShipSnapshot),
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Result<super::ShipSummary, ShipError> {
    let (map, base) = open_cluster(&cfg, &target, source.wants_acks()).await?;
    let started = Instant::now();
    let window = super::initial_window(&cfg);
    let reroute = reroute_channel();
    let link = ClusterLink {
        reroute: reroute.0.clone(),
        unsettled: Arc::default(),
    };
    let pools = node_pools(&cfg, &target, &map, window, &base, &link).await?;
    let (tx, rx) = handover::bounded::<SourceRecord>(super::HANDOVER_QUEUE_RECORDS);
    let (ack_tx, ack_rx) = mpsc::channel::<Vec<u64>>(super::ACK_QUEUE_ANSWERS);
    let shared = super::Shared::default();
    let conn_cancel = cancel.child_token();
    let report_acks = source.wants_acks();
    let dispatcher =
        super::spawn_dispatcher(&cfg, started, source, tx, ack_rx, &shared, &stop, &cancel);
    let parts = RouterParts {
        map,
        seeds: target.seeds.clone(),
        main: rx.clone(),
        reroute,
        unsettled: link.unsettled.clone(),
        acked: ack_tx.clone(),
        cancel: conn_cancel.clone(),
    };
    let router = tokio::spawn(Router::new(parts, &pools, &cfg, report_acks).run());
    drop(link);

    let tasks = spawn_pools(&pools, ack_tx, &conn_cancel);
    let states: Vec<Arc<ConnState>> = pools
        .iter()
        .flat_map(|p| p.states.iter().cloned())
        .collect();
    drop(pools);
    let stop_router = async {
        router.abort();
        let _ = router.await;
    };
    let tokens = super::Tokens {
        stop: &stop,
        conns: &conn_cancel,
    };
    super::Pool::new(&cfg, &states, &rx, &shared, tokens)
        .run_to_end(tasks, started, window, report, dispatcher, stop_router)
        .await
}

/// The cluster's slot map from a seed, and the connection settings every
/// pool starts from, checked once against the primary of slot 0 (a
/// password Redis refuses, or a certificate not trusted, ends the run
/// here). Towards `rediss-cluster://` every connection is TLS: the map is
/// asked over TLS, so it names the nodes' TLS ports.
async fn open_cluster(
    cfg: &ShipConfig,
    target: &redis::cluster::ClusterTarget,
    report_acks: bool,
) -> Result<(SlotMap, ConnConfig), ShipError> {
    if target.tls && cfg.tls.is_none() {
        return Err(ShipError::Rejected(
            "rediss-cluster:// is Redis Cluster over TLS: give --tls-ca, the CA that signed \
             the nodes' certificates"
                .into(),
        ));
    }
    let auth = auth_args(cfg);
    let map = discover(&target.seeds, auth.as_deref(), cfg.tls.as_ref())
        .await
        .map_err(|e| match e {
            ClusterError::Certificate(why) => ShipError::Rejected(why),
            e => ShipError::Refused(format!("no slot map from {}: {e}", cfg.to)),
        })?;
    tracing::info!(
        "Redis Cluster: {} primaries ({}), {} nodes{}",
        map.primaries().len(),
        map.primaries().join(", "),
        map.nodes.len(),
        if cfg.tls.is_some() { ", over TLS" } else { "" }
    );
    let to = target.node_url(map.owner(0));
    let first = super::resolve(&to).await?;
    let mut base = ConnConfig::new(cfg, first, report_acks, super::open_dead_letter(cfg)?);
    base.ship.to = to;
    base.redis = redis::RedisTarget::parse(&base.ship.to, cfg.redis_lww);
    super::conn::preflight(&base).await?;
    Ok((map, base))
}

/// One task per connection of every pool, each on its pool's queue.
fn spawn_pools(
    pools: &[NodePool],
    acked: mpsc::Sender<Vec<u64>>,
    cancel: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for p in pools {
        for state in &p.states {
            tasks.spawn(super::conn::run(
                state.clone(),
                p.cfg.clone(),
                p.queue_rx.clone(),
                acked.clone(),
                cancel.clone(),
            ));
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Write;
    use redis_protocol::resp2::types::BytesFrame;

    /// Slots 0–8191 on `a:1`, 8192–16383 on `b:2`.
    fn two_node_map() -> SlotMap {
        let node = |h: &str, p| {
            BytesFrame::Array(vec![
                BytesFrame::BulkString(h.as_bytes().to_vec().into()),
                BytesFrame::Integer(p),
            ])
        };
        let reply = BytesFrame::Array(vec![
            BytesFrame::Array(vec![
                BytesFrame::Integer(0),
                BytesFrame::Integer(8191),
                node("a", 1),
            ]),
            BytesFrame::Array(vec![
                BytesFrame::Integer(8192),
                BytesFrame::Integer(16383),
                node("b", 2),
            ]),
        ]);
        SlotMap::from_cluster_slots(&reply, "a").unwrap()
    }

    fn router(
        queues: Vec<(&str, handover::Sender<SourceRecord>)>,
    ) -> (Router, mpsc::Sender<Reroute>) {
        let (reroute_tx, reroute) = reroute_channel();
        let (acked, _) = mpsc::channel(1);
        let (_, main) = handover::bounded(1);
        let unsettled = Arc::new(AtomicU64::new(0));
        let router = Router {
            map: two_node_map(),
            seeds: Vec::new(),
            queues: queues.into_iter().map(|(a, q)| (a.to_owned(), q)).collect(),
            main,
            reroute,
            unsettled: unsettled.clone(),
            ask: AskCtx {
                auth: None,
                tls: None,
                lww: true,
                reroute: reroute_tx.clone(),
                acked,
                report_acks: false,
                unsettled,
                credit: Arc::default(),
                slots: Arc::new(Semaphore::new(1)),
            },
            cancel: CancellationToken::new(),
        };
        (router, reroute_tx)
    }

    fn rec(seq: u64, key: &'static str) -> SourceRecord {
        SourceRecord {
            seq,
            write: Write::put(key, "v", seq, 1),
        }
    }

    #[test]
    fn records_go_to_their_slots_owner_and_follow_moved() {
        let (a, a_rx) = handover::bounded(4);
        let (b, b_rx) = handover::bounded(4);
        let (mut router, _) = router(vec![("a:1", a), ("b:2", b)]);
        let mut pending: VecDeque<SourceRecord> = [rec(0, "foo"), rec(1, "bar")].into();
        let mut held = Vec::new();
        assert!(router.flush(&mut pending, &mut held).is_none());
        // foo is slot 12182, bar slot 5061.
        assert_eq!(b_rx.try_recv().unwrap().seq, 0);
        assert_eq!(a_rx.try_recv().unwrap().seq, 1);
        let moved = Redirect::Moved {
            slot: 12182,
            addr: "a:1".into(),
        };
        let waits = router.take_back(
            Reroute::Redirected(rec(0, "foo"), moved),
            &mut pending,
            &mut held,
        );
        assert!(!waits, "MOVED needs no fresh map");
        router.flush(&mut pending, &mut held);
        assert_eq!(a_rx.try_recv().unwrap().seq, 0, "foo follows MOVED");
        assert!(b_rx.is_empty() && held.is_empty());
    }

    #[test]
    fn a_full_queue_blocks_and_a_lost_nodes_records_wait_for_a_new_map() {
        let (a, _a_rx) = handover::bounded(1);
        let (mut router, _) = router(vec![("a:1", a)]);
        let mut pending: VecDeque<SourceRecord> =
            [rec(0, "bar"), rec(1, "bar"), rec(2, "foo")].into();
        let mut held = Vec::new();
        assert!(
            router.flush(&mut pending, &mut held).is_some(),
            "a:1 is full"
        );
        assert_eq!(pending.len(), 2, "the rest stays pending, in order");
        assert_eq!(pending[0].seq, 1);
        let waits = router.take_back(
            Reroute::Stranded(vec![rec(3, "foo")]),
            &mut pending,
            &mut held,
        );
        assert!(waits, "a stranded record waits for a fresh map");
        assert_eq!(held.len(), 1);
    }
}
