//! The RIB task: one [`Rib`] for the node, fed by the peer tasks (sessions
//! up and down, UPDATEs, refresh requests) and by the plan (peers,
//! originations), and answering `show routes`. What the RIB emits goes back
//! to the peer tasks as encoded UPDATEs, shared between the members of an
//! update group.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgpd_proto::rib::attrs::PathAttrs;
use bgpd_proto::rib::core::{
    DeferralWait, Explanation, MaxPrefix, Output, PeerConfig, Rib, RibConfig, RibStats, SessionInfo, DEFERRAL_PEER_WAIT,
};
use bgpd_proto::rib::decision::DecisionOptions;
use bgpd_proto::rib::policy::{DefaultExport, ExportRange, PeerPolicy, PeerType};
use bgpd_proto::rib::table::PeerId;
use bgpd_proto::speaker::{LocalAddrs, Refresh};
use bgpd_proto::wire;
use bgpd_proto::wire::{AsPath, Attr, Message, Origin, PathAttribute, Update};
use bytes::Bytes;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::datastore::ConfiguredCommunity;

use super::kernel::{KernelCmd, KernelHandle};
use super::progress::{self, Progress, Tracked};
use super::spec::{NodeSpec, PeerSpec};
use super::status::{RouteView, Shared};

/// What the RIB sends a peer task.
#[derive(Debug)]
pub enum RibOut {
    /// Encoded UPDATEs to write.
    Send(Vec<Bytes>),
    /// A message to send (End-of-RIB, ROUTE-REFRESH, BoRR/EoRR).
    Message(Message),
    /// Close the session with Cease and this subcode, then start again
    /// after the restart delay.
    Teardown(u8, String),
}

/// The bytes of UPDATEs the RIB has handed one peer task that its socket has
/// not taken yet, and whether export to the peer is paused. Past
/// [`PAUSE_EXPORT_AT`] the RIB stops encoding for the peer (it leaves its
/// update group and the changes it misses collect per prefix in the RIB,
/// [`Rib::pause_export`]); once the peer has taken all but
/// [`RESUME_EXPORT_AT`], its task asks for the difference from the Loc-RIB
/// ([`RibCmd::Resume`]). So what a peer that reads slowly (or not at all, until
/// the send hold timer closes it) costs is bounded by the table, not by the
/// churn it is sent.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// In the channel to the peer task.
    channel: AtomicUsize,
    /// Taken by the peer task, not written to the socket yet.
    buffered: AtomicUsize,
    /// Set by the RIB task when it pauses export to the peer, cleared by the
    /// peer task when it asks to resume.
    paused: AtomicBool,
}

/// Queued bytes towards a peer above which export to it pauses.
pub const PAUSE_EXPORT_AT: usize = 8 << 20;
/// Queued bytes towards a paused peer below which export resumes.
pub const RESUME_EXPORT_AT: usize = 1 << 20;

impl OutQueue {
    /// Bytes queued towards the peer.
    pub fn bytes(&self) -> usize {
        self.channel.load(Ordering::Acquire) + self.buffered.load(Ordering::Acquire)
    }

    /// The peer task took `n` bytes from the channel.
    pub fn taken(&self, n: usize) {
        self.channel.fetch_sub(n, Ordering::AcqRel);
    }

    /// The peer task holds `n` bytes its socket has not taken.
    pub fn set_buffered(&self, n: usize) {
        self.buffered.store(n, Ordering::Release);
    }

    /// Whether export to the peer is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// The peer task: whether to ask the RIB to resume now (true once per pause).
    pub fn should_resume(&self) -> bool {
        self.paused() && self.bytes() <= RESUME_EXPORT_AT && self.paused.swap(false, Ordering::AcqRel)
    }

    /// The RIB task queued `n` more bytes: whether export must pause now.
    fn queued(&self, n: usize) -> bool {
        self.channel.fetch_add(n, Ordering::AcqRel);
        self.bytes() > PAUSE_EXPORT_AT && !self.paused.swap(true, Ordering::AcqRel)
    }
}

/// What the RIB task is told.
pub enum RibCmd {
    /// A peer task started.
    AddPeer {
        /// The task's key.
        key: u64,
        /// Its spec.
        spec: Box<PeerSpec>,
        /// Where its outbound data goes.
        tx: mpsc::UnboundedSender<RibOut>,
        /// How much of it waits (shared with the peer task).
        queue: Arc<OutQueue>,
    },
    /// The peer's socket took what was queued towards it: export to it resumes.
    Resume(u64),
    /// A peer's routing settings changed (no session reset).
    SetPeer(u64, Box<PeerSpec>),
    /// A peer task ended.
    RemovePeer(u64),
    /// A session came up.
    Up(u64, Box<SessionInfo>),
    /// A session went down (`true`: graceful restart applies).
    Down(u64, bool),
    /// An UPDATE (`true`: treat as withdraw, RFC 7606), in flight until applied.
    Update(u64, Box<Update>, bool, super::peer::InFlight),
    /// A ROUTE-REFRESH message from the peer.
    Refresh(u64, Refresh),
    /// The node's originations and the prefixes the default export passes.
    Node(Box<NodeSpec>),
    /// `show routes`.
    Routes(Option<IpNet>, oneshot::Sender<Vec<RouteView>>),
    /// `bgpd explain`.
    Explain(IpNet, oneshot::Sender<Explanation>),
    /// Decommissioning: send every route with GRACEFUL_SHUTDOWN (RFC 8326), or stop.
    GracefulShutdown(bool),
    /// bgpd stops for a restart: from now on nothing goes out (neither to
    /// peers nor to the kernel), so that peers stopping one after the other
    /// never see withdrawals of each other's routes; answered at once.
    Quiesce(oneshot::Sender<()>),
}

/// Handle to the RIB task.
#[derive(Clone, Debug)]
pub struct RibHandle(Tracked<RibCmd>, Arc<super::peer::Budget>);

impl RibHandle {
    /// A handle over a channel of one's own (tests answer it themselves).
    #[cfg(test)]
    pub fn new() -> (RibHandle, mpsc::UnboundedReceiver<RibCmd>) {
        let (tx, rx, _) = progress::channel("rib");
        (RibHandle(tx, Arc::default()), rx)
    }

    /// Sends a command (the task lives as long as the daemon).
    pub fn send(&self, cmd: RibCmd) {
        self.0.send(cmd);
    }

    /// The node-wide count of UPDATEs in flight to this RIB, which every
    /// peer's reading respects.
    pub fn budget(&self) -> Arc<super::peer::Budget> {
        self.1.clone()
    }

    /// `show routes`.
    pub async fn routes(&self, filter: Option<IpNet>) -> Vec<RouteView> {
        let (tx, rx) = oneshot::channel();
        self.send(RibCmd::Routes(filter, tx));
        rx.await.unwrap_or_default()
    }

    /// `bgpd explain`: why the prefix is (not) advertised and installed;
    /// `None` when the RIB task is gone.
    pub async fn explain(&self, prefix: IpNet) -> Option<Explanation> {
        let (tx, rx) = oneshot::channel();
        self.send(RibCmd::Explain(prefix, tx));
        rx.await.ok()
    }
}

/// Calico's policy for one peer, as data: its BGPFilters, then Calico's
/// defaults (import: accept; export: this node's own routes, and learned routes
/// inside an exported range). `node_as`: Calico's `peerType` compares the
/// peer's AS with the node's (not with a `localASNumber` override).
pub fn peer_policy(spec: &PeerSpec, exportable: &Arc<Vec<ExportRange>>, node_as: u32) -> PeerPolicy {
    PeerPolicy {
        filters: spec.routing.filters.clone(),
        peer_type: if node_as == spec.peer_as { PeerType::Ibgp } else { PeerType::Ebgp },
        default_export: DefaultExport::Calico(exportable.clone()),
    }
}

/// The RIB's configuration of a peer; `node_as`: the node's AS (see [`peer_policy`]).
pub fn peer_config(spec: &PeerSpec, exportable: &Arc<Vec<ExportRange>>, node_as: u32) -> PeerConfig {
    let r = &spec.routing;
    PeerConfig {
        name: spec.name.clone(),
        addr: spec.addr.ip(),
        local_as: spec.local_as,
        peer_as: spec.peer_as,
        rr_client: r.rr_client,
        next_hop_mode: r.next_hop_mode,
        allow_local_as: r.allow_local_as,
        policy: Arc::new(peer_policy(spec, exportable, node_as)),
        // Every peer has a limit, mesh peers included: its own (annotation
        // `bgpd.io/max-prefix`), else DEFAULT_MAX_PREFIX with a warning only.
        max_prefix: Some(r.max_prefix.map_or(DEFAULT_MAX_PREFIX, |(limit, teardown)| MaxPrefix { limit, teardown })),
        add_path_send: r.add_path_send_count,
        mrai: r.mrai,
        keep_received: r.keep_received,
    }
}

/// The RIB's settings for `node`; `restarted`: bgpd was running here within
/// the restart time, so selection is deferred (RFC 4724 §4.1).
pub fn rib_config(node: &NodeSpec, restarted: bool) -> RibConfig {
    // RFC 4724 §4.1: a peer whose session is not up is waited for this long only.
    RibConfig {
        router_id: node.router_id,
        local_as: node.asn,
        cluster_id: node.cluster_id,
        decision: DecisionOptions { always_compare_med: node.always_compare_med, multipath_relax: true },
        max_paths: node.max_paths.into(),
        defer: restarted.then_some(DEFERRAL),
        defer_peer_wait: DEFERRAL_PEER_WAIT,
        fib: false,
    }
}

/// How long a restarted bgpd waits for End-of-RIB from its peers.
pub const DEFERRAL: Duration = Duration::from_secs(60);

/// What the RIB task originates: each prefix with its communities.
type Originated = Vec<(IpNet, Vec<ConfiguredCommunity>)>;

/// The attributes of a route this node originates: ORIGIN IGP, an empty
/// AS_PATH, and the `prefixAdvertisements` communities (standard ones as
/// COMMUNITIES, large ones as LARGE_COMMUNITY), in the configured order.
pub fn origination_attrs(communities: &[ConfiguredCommunity]) -> PathAttrs {
    let mut attributes =
        vec![PathAttribute::new(Attr::Origin(Origin::Igp)), PathAttribute::new(Attr::AsPath(AsPath::default()))];
    let standard: Vec<wire::Community> = communities
        .iter()
        .filter_map(|c| match *c {
            ConfiguredCommunity::Standard(a, n) => Some(wire::Community::new(a, n)),
            ConfiguredCommunity::Large(..) => None,
        })
        .collect();
    let large: Vec<wire::LargeCommunity> = communities
        .iter()
        .filter_map(|c| match *c {
            ConfiguredCommunity::Large(global, local1, local2) => Some(wire::LargeCommunity { global, local1, local2 }),
            ConfiguredCommunity::Standard(..) => None,
        })
        .collect();
    if !standard.is_empty() {
        attributes.push(PathAttribute::new(Attr::Communities(standard.into_iter().collect())));
    }
    if !large.is_empty() {
        attributes.push(PathAttribute::new(Attr::LargeCommunities(large)));
    }
    PathAttrs { attributes, next_hop: None, link_local: None, priority: None }
}

struct Peer {
    id: PeerId,
    tx: mpsc::UnboundedSender<RibOut>,
    queue: Arc<OutQueue>,
    spec: PeerSpec,
}

/// Starts the RIB task; with `kernel`, its forwarding changes and the
/// node's blocks go there to be installed in the kernel.
pub fn spawn(node: &NodeSpec, restarted: bool, shared: Shared, kernel: Option<KernelHandle>) -> RibHandle {
    let (tx, rx, progress) = progress::channel("rib");
    shared.lock().tasks.push(progress.clone());
    let mut cfg = rib_config(node, restarted);
    cfg.fib = kernel.is_some();
    let rib = Rib::new(cfg, Instant::now());
    let exportable = Arc::new(node.exportable.clone());
    let originated: Originated = Vec::new();
    tokio::spawn(run(rib, rx, progress, shared, exportable, originated, kernel));
    RibHandle(tx, Arc::default())
}

async fn run(
    mut rib: Rib,
    mut rx: mpsc::UnboundedReceiver<RibCmd>,
    progress: Arc<Progress>,
    shared: Shared,
    mut exportable: Arc<Vec<ExportRange>>,
    mut originated: Originated,
    kernel: Option<KernelHandle>,
) {
    let mut peers: HashMap<u64, Peer> = HashMap::new();
    let mut by_id: HashMap<PeerId, u64> = HashMap::new();
    let mut quiet = false;
    // The status is published at most every PUBLISH_EVERY: it is O(peers),
    // and with many peers changing state (a thousand peers retrying their
    // connections) publishing after every batch was most of the RIB task's time.
    let mut published = Instant::now() - PUBLISH_EVERY;
    let mut unpublished = false;
    // How far the batches have grown (see `Batch`).
    let mut ramp = 0;
    loop {
        let publish_at = unpublished.then(|| published + PUBLISH_EVERY);
        let deadline = rib.poll_timeout().into_iter().chain(publish_at).min().map(tokio::time::Instant::from_std);
        let cmd = tokio::select! {
            c = rx.recv() => match c { Some(c) => Some(c), None => break },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => None,
        };
        let now = Instant::now();
        match cmd {
            None => rib.handle_timeout(now),
            Some(c) => {
                let mut next = Some(c);
                // Take what is queued up to a bounded batch, then export it:
                // a full table streaming in goes out batch by batch.
                let mut batch = Batch::new(now, ramp);
                let mut full = false;
                while let Some(c) = next {
                    let c = match c {
                        RibCmd::Quiesce(done) => {
                            quiet = true;
                            let _ = done.send(());
                            progress.done(1);
                            next = rx.try_recv().ok();
                            continue;
                        }
                        c => c,
                    };
                    if let (RibCmd::Node(node), Some(k), false) = (&c, &kernel, quiet) {
                        k.send(KernelCmd::Blackholes(super::kernel::blackholes(node)));
                        k.send(KernelCmd::Statics(node.statics.clone()));
                    }
                    batch.add(&c);
                    apply(&mut rib, c, &mut peers, &mut by_id, &mut exportable, &mut originated, now);
                    progress.done(1);
                    full = batch.full(Instant::now());
                    next = if full { None } else { rx.try_recv().ok() };
                }
                // Input keeps coming: the next batch may be larger (packing);
                // the queue is empty: the next starts small again (latency).
                ramp = if full { (ramp + 1).min(RAMP_STEPS) } else { 0 };
                rib.flush(now);
            }
        }
        let mut full = Vec::new();
        while let Some(o) = rib.poll_output() {
            if !quiet {
                dispatch(&rib, o, &peers, &by_id, kernel.as_ref(), &mut full);
            }
        }
        for id in full {
            if let Some(p) = by_id.get(&id).and_then(|k| peers.get(k)) {
                warn!(
                    peer = %p.spec.name,
                    "the peer does not take what it is sent ({} MiB queued): export paused, \
                     changes kept per prefix until it catches up",
                    p.queue.bytes() >> 20
                );
            }
            rib.pause_export(id);
        }
        unpublished = true;
        let now = Instant::now();
        if now >= published + PUBLISH_EVERY {
            publish(&rib, &peers, &shared);
            published = now;
            unpublished = false;
        }
        // The peer tasks woken by this batch's output write it now, not after
        // the next batch: a task that finds its channel ready again never
        // yields by itself, and one woken from it may wait on this thread.
        tokio::task::yield_now().await;
    }
}

/// The most prefixes (announced + withdrawn) the RIB task applies before it
/// exports what changed. With a full table arriving (1,000 /24s per UPDATE
/// with one attribute set), a bound in UPDATEs alone let one batch hold the
/// whole table, and nothing went out until all of it was read. 16,384 keeps
/// the batches of a table streaming in large enough that UPDATEs stay packed
/// (17 UPDATEs where 16.4 would do) and the per-batch work (export, status)
/// negligible.
pub const BATCH_ROUTES: usize = 16_384;
/// The most commands the RIB task applies before it exports (UPDATEs with few
/// prefixes, or session events).
pub const BATCH_COMMANDS: usize = 1024;
/// The longest the RIB task applies input before it exports.
pub const BATCH_TIME: Duration = Duration::from_millis(16);
/// The first batch after the RIB task found its queue empty is bounded at
/// [`BATCH_ROUTES`] and [`BATCH_TIME`] halved this many times (1,024
/// prefixes, 1 ms), so the first routes of a burst go out at once; each batch
/// the bound cuts short doubles them for the next, up to the full bounds.
pub const RAMP_STEPS: u32 = 4;

/// One batch of the RIB task's input: what it applied since the last export.
/// Full at [`BATCH_COMMANDS`] commands, or at its share of [`BATCH_ROUTES`]
/// prefixes or [`BATCH_TIME`] (see [`RAMP_STEPS`]), whichever comes first.
#[derive(Debug)]
struct Batch {
    started: Instant,
    commands: usize,
    routes: usize,
    max_routes: usize,
    max_time: Duration,
}

impl Batch {
    /// A batch `ramp` (at most [`RAMP_STEPS`]) doublings from the smallest.
    fn new(now: Instant, ramp: u32) -> Batch {
        let shift = RAMP_STEPS - ramp.min(RAMP_STEPS);
        Batch {
            started: now,
            commands: 0,
            routes: 0,
            max_routes: BATCH_ROUTES >> shift,
            max_time: BATCH_TIME / (1 << shift),
        }
    }

    /// Counts a command about to be applied.
    fn add(&mut self, cmd: &RibCmd) {
        self.commands += 1;
        if let RibCmd::Update(_, u, _, _) = cmd {
            self.routes += u.announced_count() + u.withdrawn_count();
        }
    }

    /// Whether the batch is to be exported now, before more input is taken.
    fn full(&self, now: Instant) -> bool {
        self.commands >= BATCH_COMMANDS
            || self.routes >= self.max_routes
            || now.saturating_duration_since(self.started) >= self.max_time
    }
}

/// The prefix limit of a peer without one of its own: above it, a warning
/// (logged), nothing torn down. Far above what a
/// Kubernetes fabric sends a node, below a full Internet table, which every
/// node would otherwise install into its kernel without a word.
pub const DEFAULT_MAX_PREFIX: MaxPrefix = MaxPrefix { limit: 100_000, teardown: false };

/// How often at most the RIB's status (counts, deferral) is published.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

fn apply(
    rib: &mut Rib,
    cmd: RibCmd,
    peers: &mut HashMap<u64, Peer>,
    by_id: &mut HashMap<PeerId, u64>,
    exportable: &mut Arc<Vec<ExportRange>>,
    originated: &mut Originated,
    now: Instant,
) {
    match cmd {
        RibCmd::AddPeer { key, spec, tx, queue } => {
            let id = rib.add_peer(peer_config(&spec, exportable, rib.config().local_as));
            by_id.insert(id, key);
            peers.insert(key, Peer { id, tx, queue, spec: *spec });
        }
        RibCmd::Resume(key) => {
            // Paused again since the peer task asked (it asks again once drained).
            if let Some(p) = peers.get(&key).filter(|p| !p.queue.paused()) {
                info!(peer = %p.spec.name, "the peer took what was queued: export resumes from the Loc-RIB");
                rib.resume_export(p.id, now);
            }
        }
        RibCmd::SetPeer(key, spec) => {
            if let Some(p) = peers.get_mut(&key) {
                info!(peer = %spec.name, "routing settings changed: applied without a session reset");
                let node_as = rib.config().local_as;
                rib.set_peer_config(p.id, peer_config(&spec, exportable, node_as), now);
                p.spec = *spec;
            }
        }
        RibCmd::RemovePeer(key) => {
            if let Some(p) = peers.remove(&key) {
                by_id.remove(&p.id);
                rib.remove_peer(p.id);
            }
        }
        RibCmd::Up(key, info) => {
            if let Some(p) = peers.get(&key) {
                // A new session starts with the whole table and no backlog.
                p.queue.paused.store(false, Ordering::Release);
                rib.peer_up(p.id, *info, now);
            }
        }
        RibCmd::Down(key, graceful) => {
            if let Some(p) = peers.get(&key) {
                p.queue.paused.store(false, Ordering::Release);
                rib.peer_down(p.id, graceful, now);
            }
        }
        RibCmd::Update(key, u, taw, _in_flight) => {
            if let Some(p) = peers.get(&key) {
                rib.update(p.id, &u, taw, now);
            }
        }
        RibCmd::Refresh(key, rr) => {
            if let Some(p) = peers.get(&key) {
                match rr {
                    Refresh::Begin(f) => rib.refresh_begin(p.id, f),
                    Refresh::End(f) => rib.refresh_end(p.id, f),
                    Refresh::Request(f) => rib.refresh_requested(p.id, f, now),
                }
            }
        }
        RibCmd::Node(node) => {
            // Decision settings apply to every prefix at once, with no session reset.
            let decision = DecisionOptions { always_compare_med: node.always_compare_med, multipath_relax: true };
            rib.set_decision(decision, node.max_paths.into());
            let wanted: Originated = node.originations.iter().map(|o| (o.prefix, o.communities.clone())).collect();
            for (gone, _) in originated.iter().filter(|(p, _)| !wanted.iter().any(|(w, _)| w == p)) {
                rib.originate(*gone, None);
            }
            // New prefixes, and those whose communities changed (originating again
            // replaces the route).
            for (prefix, comms) in wanted.iter().filter(|w| !originated.contains(w)) {
                rib.originate(*prefix, Some(origination_attrs(comms)));
            }
            *originated = wanted;
            if node.exportable != **exportable {
                *exportable = Arc::new(node.exportable.clone());
                for p in peers.values() {
                    let node_as = rib.config().local_as;
                    rib.set_peer_config(p.id, peer_config(&p.spec, exportable, node_as), now);
                }
            }
        }
        RibCmd::Routes(filter, reply) => {
            let _ = reply.send(route_views(rib, filter));
        }
        RibCmd::Explain(prefix, reply) => {
            let _ = reply.send(rib.explain(prefix));
        }
        // Taken by the task's loop before it gets here.
        RibCmd::Quiesce(done) => {
            let _ = done.send(());
        }
        RibCmd::GracefulShutdown(on) => {
            if on {
                info!("graceful shutdown (RFC 8326): every route goes out again with GRACEFUL_SHUTDOWN");
            }
            rib.set_graceful_shutdown(on);
        }
    }
}

/// Hands an output of the RIB to its peer tasks or the kernel task; peers
/// whose queue this fills past [`PAUSE_EXPORT_AT`] are added to `full`.
fn dispatch(
    rib: &Rib,
    o: Output,
    peers: &HashMap<u64, Peer>,
    by_id: &HashMap<PeerId, u64>,
    kernel: Option<&KernelHandle>,
    full: &mut Vec<PeerId>,
) {
    let tx = |id: &PeerId| by_id.get(id).and_then(|k| peers.get(k)).map(|p| &p.tx);
    match o {
        Output::Send { peers: ids, messages } => {
            let bytes: usize = messages.iter().map(Bytes::len).sum();
            for id in &ids {
                let Some(p) = by_id.get(id).and_then(|k| peers.get(k)) else { continue };
                // Counted before it is sent: the peer task subtracts what it
                // takes, which must never be more than was added.
                let full_now = p.queue.queued(bytes);
                if p.tx.send(RibOut::Send(messages.clone())).is_err() {
                    p.queue.taken(bytes);
                } else if full_now {
                    full.push(*id);
                }
            }
        }
        Output::Message(id, m) => {
            if let Some(t) = tx(&id) {
                let _ = t.send(RibOut::Message(m));
            }
        }
        Output::Teardown { peer, subcode, reason } => {
            warn!(peer = rib.peer_name(peer).unwrap_or("?"), "{reason}: closing the session");
            if let Some(t) = tx(&peer) {
                let _ = t.send(RibOut::Teardown(subcode, reason));
            }
        }
        Output::Warning(peer, msg) => warn!(peer = rib.peer_name(peer).unwrap_or("?"), "{msg}"),
        Output::DeferralDone => {
            info!("selection deferral over: best paths exported");
            if let Some(k) = kernel {
                k.send(KernelCmd::DeferralDone);
            }
        }
        // Only emitted with `fib: true`, that is with a kernel task.
        Output::Fib(routes) => {
            if let Some(k) = kernel {
                k.send(KernelCmd::Forwarding(routes));
            }
        }
    }
}

/// Counts for `show peers` and metrics, and the selection deferral.
fn publish(rib: &Rib, peers: &HashMap<u64, Peer>, shared: &Shared) {
    let stats: RibStats = rib.stats();
    let now = Instant::now();
    let deferral = rib.deferral(now).map(|d| super::status::Deferral {
        until: std::time::SystemTime::now() + d.until.saturating_duration_since(now),
        waiting: d
            .waiting
            .into_iter()
            .map(|(peer, w)| {
                let why = match w {
                    DeferralWait::EndOfRib(f) => {
                        format!("End-of-RIB for {}", f.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                    }
                    DeferralWait::Restarting(f) => format!(
                        "End-of-RIB for {} (it restarts too; it was sent this node's table first)",
                        f.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                    DeferralWait::Session(t) => {
                        format!("its session, for {} s more", t.saturating_duration_since(now).as_secs())
                    }
                };
                (peer, why)
            })
            .collect(),
    });
    let mut s = shared.lock();
    s.rib = stats;
    s.deferral = deferral;
    for p in peers.values() {
        let n = rib.accepted(p.id);
        // Runs after every batch: no allocation unless a count is new.
        match s.routes_received.get_mut(&p.spec.name) {
            Some(v) => *v = n,
            None => {
                s.routes_received.insert(p.spec.name.clone(), n);
            }
        }
        let ignored = rib.ignored(p.id);
        if ignored != Default::default() {
            s.routes_ignored.insert(p.spec.name.clone(), ignored);
        } else if s.routes_ignored.contains_key(&p.spec.name) {
            s.routes_ignored.remove(&p.spec.name);
        }
    }
}

fn route_views(rib: &Rib, filter: Option<IpNet>) -> Vec<RouteView> {
    let mut out = Vec::new();
    for (prefix, paths) in rib.routes(filter) {
        for p in paths {
            let a = &p.attrs;
            out.push(RouteView {
                prefix,
                path_id: (p.path_id != 0).then_some(p.path_id),
                peer: p.peer.unwrap_or_else(|| "local".into()),
                next_hop: a.next_hop.map(|n: IpAddr| match a.link_local {
                    Some(ll) => format!("{n} ({ll})"),
                    None => n.to_string(),
                }),
                as_path: a.as_path_ref().map(|x| x.to_string()).unwrap_or_default(),
                origin: Some(format!("{:?}", a.origin())),
                med: a.med(),
                local_pref: a.local_pref(),
                communities: a.communities().iter().map(|c| format!("{c:?}")).collect(),
                large_communities: match a.attr(bgpd_proto::AttrCode::LARGE_COMMUNITY) {
                    Some(Attr::LargeCommunities(c)) => c.iter().map(|c| format!("{c:?}")).collect(),
                    _ => Vec::new(),
                },
                best: p.best,
                multipath: p.used,
                stale: p.stale,
                lost: p.reason.map(|r| r.describe().to_string()),
            });
        }
    }
    out
}

/// Session facts the RIB needs, from what the session negotiated (the
/// node's addresses for next hop self and its subnets).
pub fn session_info(
    n: &bgpd_proto::session::Negotiated,
    local: Option<IpAddr>,
    peer: IpAddr,
    node: &NodeSpec,
) -> SessionInfo {
    let addrs = LocalAddrs { ipv4: node.ipv4, ipv6: node.ipv6, subnets: node.subnets.clone() };
    bgpd_proto::speaker::session_info(n, local, peer, &addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route-server pair of peers (one sends, one receives), both accepting everything.
    fn in_and_out(tx: &Tracked<RibCmd>) -> mpsc::UnboundedReceiver<RibOut> {
        use bgpd_proto::rib::policy::{Action, Filter, Rule};
        use bgpd_proto::{FamilySet, WireContext};
        let accept = Arc::new(Filter {
            name: "accept-all".into(),
            import_v4: vec![Rule::new(Action::Accept)],
            export_v4: vec![Rule::new(Action::Accept)],
            ..Filter::default()
        });
        let mut a = crate::daemon::peer::tests::spec();
        a.routing.filters = vec![accept];
        let mut b = a.clone();
        b.name = "out".into();
        b.addr = "10.0.0.3:179".parse().unwrap();
        b.peer_as = 65020;
        let (a_tx, _) = mpsc::unbounded_channel();
        let (b_tx, b_rx) = mpsc::unbounded_channel();
        for (key, spec, out) in [(1, a, a_tx), (2, b, b_tx)] {
            let peer_id = match spec.addr.ip() {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => unreachable!("IPv4 test peers"),
            };
            tx.send(RibCmd::AddPeer { key, spec: Box::new(spec), tx: out, queue: Arc::default() });
            let session = SessionInfo {
                peer_id,
                families: FamilySet::of(&[bgpd_proto::Family::IPV4_UNICAST]),
                tx: WireContext::new(true),
                local_v4: Some("10.0.0.1".parse().unwrap()),
                local_v6: None,
                shared_v4: None,
                shared_v6: None,
                route_refresh: true,
                enhanced_refresh: false,
                graceful_restart: None,
                long_lived: false,
            };
            tx.send(RibCmd::Up(key, Box::new(session)));
        }
        b_rx
    }

    /// `n` UPDATEs of 1,000 /24s each (16.0.0.0 upwards), one attribute set: a full
    /// table as it arrives.
    fn table(n: usize) -> Vec<Update> {
        use bgpd_proto::nlri::Nlri;
        let attributes = vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence([65010]))),
            PathAttribute::new(Attr::NextHop("10.0.0.2".parse().unwrap())),
        ];
        (0..n)
            .map(|u| {
                let nlri = (0..1000u32)
                    .map(|i| {
                        let net = (16u32 << 24) + (((u as u32) * 1000 + i) << 8);
                        Nlri::new(ipnet::Ipv4Net::new(net.into(), 24).unwrap())
                    })
                    .collect();
                Update { attributes: attributes.clone(), nlri, ..Update::default() }
            })
            .collect()
    }

    /// The prefixes announced by encoded UPDATEs.
    fn announced(messages: &[Bytes]) -> usize {
        let ctx = bgpd_proto::WireContext::new(true);
        messages
            .iter()
            .map(|m| match wire::Message::decode(m, &ctx) {
                Ok(Some(wire::Frame { message: Message::Update(u), .. })) => u.announced_count(),
                other => panic!("not an UPDATE: {other:?}"),
            })
            .sum()
    }

    #[tokio::test]
    async fn a_table_streaming_in_goes_out_in_bounded_batches_before_the_rest_is_applied() {
        // 20,000 routes queued at once, as a peer sending a full table
        // queues them faster than the RIB applies them: before, the RIB
        // applied up to 1,024 UPDATEs (a million such routes) before it
        // exported anything.
        let (tx, rx, progress) = progress::channel("rib");
        let mut out = in_and_out(&tx);
        let credit = Arc::new(super::super::peer::Credit::new(Arc::default()));
        for u in table(20) {
            tx.send(RibCmd::Update(1, Box::new(u), false, credit.take()));
        }
        let rib = Rib::new(rib_config(&crate::daemon::peer::tests::node(), false), Instant::now());
        let waiting = progress.clone();
        tokio::spawn(run(rib, rx, progress, Shared::default(), Arc::default(), Vec::new(), None));

        let mut sends = Vec::new();
        let mut total = 0;
        while total < 20_000 {
            match out.recv().await.expect("the RIB task runs") {
                RibOut::Send(m) => {
                    if sends.is_empty() {
                        assert!(waiting.waiting() > 0, "the first UPDATEs go out while input waits");
                    }
                    let n = announced(&m);
                    total += n;
                    sends.push(n);
                }
                RibOut::Message(_) => {}
                RibOut::Teardown(..) => panic!("no teardown"),
            }
        }
        assert_eq!(total, 20_000, "every route out once");
        assert!(
            sends[0] > 0 && sends[0] < (BATCH_ROUTES >> RAMP_STEPS) + 1000,
            "the first export after at most the smallest batch of input: {sends:?}"
        );
        assert!(sends.len() >= 20_000 / (BATCH_ROUTES + 1000), "one export per batch: {sends:?}");
    }

    #[test]
    fn a_batch_is_full_at_its_routes_its_commands_or_its_time() {
        let t0 = Instant::now();
        let credit = Arc::new(super::super::peer::Credit::new(Arc::default()));
        let mut batch = Batch::new(t0, RAMP_STEPS);
        for u in table(BATCH_ROUTES / 1000) {
            batch.add(&RibCmd::Update(1, Box::new(u), false, credit.take()));
            assert!(!batch.full(t0));
        }
        batch.add(&RibCmd::Update(1, Box::new(table(1).remove(0)), false, credit.take()));
        assert!(batch.full(t0), "{BATCH_ROUTES} routes");
        let mut batch = Batch::new(t0, RAMP_STEPS);
        for _ in 0..BATCH_COMMANDS - 1 {
            batch.add(&RibCmd::Resume(1));
        }
        assert!(!batch.full(t0));
        assert!(!batch.full(t0 + BATCH_TIME / 2));
        assert!(batch.full(t0 + BATCH_TIME), "{BATCH_TIME:?} after it began");
        batch.add(&RibCmd::Resume(1));
        assert!(batch.full(t0), "{BATCH_COMMANDS} commands");
    }

    #[test]
    fn the_first_batch_after_an_idle_queue_is_the_smallest() {
        let t0 = Instant::now();
        let credit = Arc::new(super::super::peer::Credit::new(Arc::default()));
        let mut batch = Batch::new(t0, 0);
        batch.add(&RibCmd::Update(1, Box::new(table(1).remove(0)), false, credit.take()));
        assert!(!batch.full(t0), "1,000 routes");
        batch.add(&RibCmd::Update(1, Box::new(table(1).remove(0)), false, credit.take()));
        assert!(batch.full(t0), "{} routes", BATCH_ROUTES >> RAMP_STEPS);
        assert!(Batch::new(t0, 0).full(t0 + BATCH_TIME / 16));
        assert!(!Batch::new(t0, 1).full(t0 + BATCH_TIME / 16), "doubled");
        assert!(!Batch::new(t0, RAMP_STEPS + 1).full(t0 + BATCH_TIME / 2), "at most the full bounds");
    }

    #[test]
    fn every_peer_has_a_prefix_limit_its_own_or_the_default_warning() {
        let exportable = Arc::new(Vec::new());
        let mut spec = crate::daemon::peer::tests::spec();
        spec.routing.max_prefix = None;
        let cfg = peer_config(&spec, &exportable, 64512);
        assert_eq!(cfg.max_prefix, Some(DEFAULT_MAX_PREFIX));
        const { assert!(!DEFAULT_MAX_PREFIX.teardown, "the default only warns") };
        spec.routing.max_prefix = Some((500, true));
        let cfg = peer_config(&spec, &exportable, 64512);
        assert_eq!(cfg.max_prefix, Some(MaxPrefix { limit: 500, teardown: true }));
    }

    #[test]
    fn peers_with_the_same_filters_get_equal_policies() {
        use bgpd_proto::rib::policy::{Action, Filter, Rule};
        let exportable = Arc::new(vec![ExportRange {
            cidr: "10.244.0.0/16".parse().unwrap(),
            source: bgpd_proto::rib::policy::RangeSource::IpPool("default".into()),
        }]);
        let filter = || {
            let mut f = Filter { name: "no-transit".into(), ..Filter::default() };
            f.export_v4 = vec![Rule::new(Action::Reject)];
            Arc::new(f)
        };
        let mut a = crate::daemon::peer::tests::spec();
        a.routing.filters = vec![filter()];
        let mut b = a.clone();
        b.name = "other".into();
        b.routing.filters = vec![filter()];
        let node_as = a.peer_as + 1;
        assert_eq!(peer_config(&a, &exportable, node_as).policy, peer_config(&b, &exportable, node_as).policy);
        // The same filters towards an iBGP peer: `peerType` rules see another value.
        assert_ne!(peer_config(&a, &exportable, node_as).policy, peer_config(&a, &exportable, a.peer_as).policy);
        b.routing.filters.clear();
        assert_ne!(peer_config(&a, &exportable, node_as).policy, peer_config(&b, &exportable, node_as).policy);
    }
}
