//! The RIB as a whole, sans-IO: peers come up and go down, UPDATEs come in,
//! and out come encoded UPDATEs for each update group, End-of-RIB markers,
//! route refresh requests and teardowns. The daemon feeds it and writes
//! what it asks; the simulation tests drive it the same way.
//!
//! - **Adj-RIB-In** is post-policy and lives in the per-family [`Table`]s
//!   (every path of every peer). Routes an import policy rejected are not
//!   kept: a changed import policy re-checks the kept ones and asks the peer
//!   for a ROUTE-REFRESH.
//! - **Loc-RIB**: the decision process of RFC 4271 §9.1 with RFC 4456 §9,
//!   deterministic MED, ECMP ([`super::decision`]).
//! - **Adj-RIB-Out** is not stored. What a peer was sent is a function of
//!   the Loc-RIB and its export policy, so a change is exported by running
//!   the export for the prefix's previous and current used paths and sending
//!   the difference (as BIRD does). That keeps a route server's memory at
//!   one table, however many peers it has.
//! - **Update groups**: peers whose export policy, session type and
//!   negotiated encoding are the same share one encoded stream. A route
//!   never goes back to the peer it came from: a member that is the source
//!   of changed routes gets a stream of its own for that batch.
//!
//! The [`Rib`] is defined here with its types; each concern is an
//! `impl Rib` of its own: `peers.rs` (peer lifecycle), `import.rs`
//! (UPDATEs in, import policy, max-prefix), `restart.rs` (graceful restart,
//! selection deferral, timers), `export.rs` (update groups, MRAI, export
//! and encoding), `views.rs` (queries), `explain.rs` (why a prefix is or
//! is not sent to each peer and used: [`Rib::explain`]).

mod explain;
mod export;
mod import;
mod peers;
mod restart;
mod views;

pub use explain::{
    Explanation, Export, Forwarding, Import, PathExplanation, PathExport, PathSource, PathStatus, PeerDrops,
    PeerExplanation, PeerKind, PolicyStep, Rejection, REJECTIONS_KEPT,
};
pub use restart::DeferralWait;
pub use views::{DeferralView, PathView, RibStats};

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use super::attrs::{Interner, PathAttrs};
use super::checks::{IgnoredCounts, Logged};
use super::decision::DecisionOptions;
use super::policy::{PeerPolicy, PeerType};
use super::table::{DecisionInput, FastMap, Path, PeerId, PeerInfo, Table, Used};
use crate::nlri::{Nlri, WirePrefix};
use crate::types::{AttrCode, Family, FamilySet};
use crate::wire::{Announcement, Attr, Message, PathAttribute, WireContext};

/// How long stale routes of a peer that came back wait for its End-of-RIB.
pub const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// How long selection deferral waits for a configured peer's session to
/// come up before it stops waiting for that peer (RFC 4724 §4.1 waits for
/// End-of-RIB from peers; a peer that is down or gone must not hold the
/// others until the deferral deadline). Two of bgpd's connect retries.
pub const DEFERRAL_PEER_WAIT: Duration = Duration::from_secs(10);

/// Calico `nextHopMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NextHopMode {
    /// This speaker's address towards eBGP peers and for its own routes;
    /// the next hop as received towards iBGP peers (BIRD's default).
    #[default]
    Auto,
    /// Always this speaker's address.
    SelfAddr,
    /// Always the next hop as received (`keepOriginalNextHop`).
    Keep,
}

/// What happens when a peer sends more prefixes than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPrefix {
    /// Prefixes accepted from the peer, all families together.
    pub limit: u32,
    /// Tear the session down (Cease, Maximum Number of Prefixes Reached);
    /// otherwise only warn.
    pub teardown: bool,
}

/// How one peer's routes are handled.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Name for logs and `show`.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// The AS this speaker presents to it.
    pub local_as: u32,
    /// Its AS.
    pub peer_as: u32,
    /// A route reflector client of this speaker (needs [`RibConfig::cluster_id`]).
    pub rr_client: bool,
    /// Next-hop handling towards it.
    pub next_hop_mode: NextHopMode,
    /// How often the local AS may appear in a received AS_PATH (allowas-in).
    pub allow_local_as: u32,
    /// Its import and export policy. Peers with equal policies (and equal
    /// session settings) share an update group.
    pub policy: Arc<PeerPolicy>,
    /// Prefix limit.
    pub max_prefix: Option<MaxPrefix>,
    /// With ADD-PATH send negotiated: how many of the used paths to send
    /// (0: the whole ECMP set).
    pub add_path_send: u8,
    /// MinRouteAdvertisementInterval (RFC 4271 §9.2.1.1): after an UPDATE
    /// that announces routes, further announcements to the peer wait this
    /// long and go out together (a route that flaps meanwhile is sent once, in
    /// its last state). Withdrawals are not held. Zero (the default): none.
    pub mrai: Duration,
    /// Keep a copy of what the peer sends before import policy (RFC 4271's
    /// Adj-RIB-In, "soft reconfiguration inbound"): an import policy change
    /// is then applied to the copy instead of asking the peer for its routes
    /// again (ROUTE-REFRESH), which a peer without route refresh cannot
    /// answer. Costs a map entry per received path. Default: off.
    pub keep_received: bool,
}

impl PeerConfig {
    /// A peer with the plain defaults: every route accepted and exported
    /// ([`PeerPolicy::accept_all`]), no route reflection, next hop `Auto`, no allowas-in,
    /// no prefix limit, no ADD-PATH, no MRAI, nothing kept before policy.
    pub fn new(name: impl Into<String>, addr: IpAddr, local_as: u32, peer_as: u32) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            addr,
            local_as,
            peer_as,
            rr_client: false,
            next_hop_mode: NextHopMode::Auto,
            allow_local_as: 0,
            policy: Arc::new(PeerPolicy::accept_all(if local_as == peer_as { PeerType::Ibgp } else { PeerType::Ebgp })),
            max_prefix: None,
            add_path_send: 0,
            mrai: Duration::ZERO,
            keep_received: false,
        }
    }

    fn ebgp(&self) -> bool {
        self.local_as != self.peer_as
    }
}

/// What the session negotiated, as the RIB needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// IPv4 / IPv6 unicast, as negotiated.
    pub families: FamilySet,
    /// How to encode what goes to the peer.
    pub tx: WireContext,
    /// This speaker's addresses on the session (next hop self).
    pub local_v4: Option<Ipv4Addr>,
    /// IPv6 address for next hop self.
    pub local_v6: Option<Ipv6Addr>,
    /// The IPv4 subnet this speaker and the peer share, when the peer is one
    /// hop away on it: a route whose next hop is on it keeps that next hop
    /// towards an external peer (third-party next hop, RFC 4271 §5.1.3), so
    /// traffic between two routers on one segment does not detour via us.
    pub shared_v4: Option<Ipv4Net>,
    /// The IPv6 subnet shared with the peer, likewise.
    pub shared_v6: Option<Ipv6Net>,
    /// The peer accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// Enhanced route refresh (RFC 7313) was negotiated.
    pub enhanced_refresh: bool,
    /// The peer's graceful restart capability (with its long-lived part).
    pub graceful_restart: Option<PeerRestart>,
    /// The peer sent the long-lived graceful restart capability (RFC 9494):
    /// it may be sent routes marked LLGR_STALE; other peers are not (§4.5).
    pub long_lived: bool,
}

/// A peer's graceful restart as its OPEN announced it (RFC 4724 §3, RFC
/// 9494 §3): what this speaker keeps of its routes while it restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRestart {
    /// Restart time, seconds.
    pub time: u16,
    /// Families its graceful restart capability lists: their routes are
    /// kept (stale, still used) for the restart time.
    pub families: FamilySet,
    /// The Restart State (R) bit: it has just restarted itself, so this
    /// speaker's selection deferral does not wait for its End-of-RIB (RFC
    /// 4724 §4.1).
    pub restarting: bool,
    /// Long-lived stale time per family (IPv4, IPv6 unicast) from its LLGR
    /// capability, seconds; 0: none. After the restart time (or at once for
    /// a family the graceful restart capability does not list) its routes
    /// are kept this long more, marked LLGR_STALE and least preferred.
    pub long_lived: [u32; 2],
}

impl PeerRestart {
    /// Graceful restart for `families` with `time`, no R bit, no long-lived part.
    pub fn new(time: u16, families: FamilySet) -> PeerRestart {
        PeerRestart { time, families, restarting: false, long_lived: [0, 0] }
    }
}

/// Speaker-wide settings.
#[derive(Clone, Debug)]
pub struct RibConfig {
    /// This speaker's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Its AS.
    pub local_as: u32,
    /// Set when this speaker is a route reflector (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// Decision options.
    pub decision: DecisionOptions,
    /// ECMP width.
    pub max_paths: usize,
    /// After this speaker restarted: hold best-path export until every peer
    /// that is waited for sent End-of-RIB, or this long (RFC 4724 §4.1
    /// selection deferral). Waited for: peers whose session is up and that
    /// sent the graceful restart capability without the R bit, and peers
    /// not up yet during their first [`RibConfig::defer_peer_wait`].
    pub defer: Option<Duration>,
    /// How long deferral waits for a peer's session to come up
    /// ([`DEFERRAL_PEER_WAIT`] in the daemon).
    pub defer_peer_wait: Duration,
    /// Emit [`Output::Fib`] for the kernel's forwarding table.
    pub fib: bool,
}

/// Something the daemon must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these encoded UPDATEs to each of these peers.
    Send {
        /// The peers (an update group, or one peer).
        peers: Vec<PeerId>,
        /// The messages, whole.
        messages: Vec<Bytes>,
    },
    /// Send this message to the peer (End-of-RIB, ROUTE-REFRESH, BoRR/EoRR).
    Message(PeerId, Message),
    /// Close the session with this NOTIFICATION (max-prefix).
    Teardown {
        /// The peer.
        peer: PeerId,
        /// Cease subcode.
        subcode: u8,
        /// Why, for the log.
        reason: String,
    },
    /// A warning about a peer, for the log.
    Warning(PeerId, String),
    /// Selection deferral after a restart ended: the daemon may sweep what
    /// it kept from before the restart.
    DeferralDone,
    /// Forwarding changes (with [`RibConfig::fib`]): each prefix and the
    /// next hops of its used learned paths (ECMP); none: remove the route.
    /// Prefixes this node originates are not here (the daemon installs
    /// what they need, e.g. a blackhole for a block).
    Fib(Vec<FibRoute>),
}

/// One forwarding change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibRoute {
    /// The prefix.
    pub prefix: IpNet,
    /// Next hops, best path's first; empty: no learned route any more.
    pub next_hops: Vec<IpAddr>,
    /// The best path's priority ([`PathAttrs::priority`], BGPFilter
    /// `setPriority`): the kernel route's metric. `None`: the default, and
    /// always when there are no next hops.
    pub priority: Option<u32>,
}

/// The priority the kernel route of a used set gets: the best path's, when
/// that path is learned (an ECMP set takes its best path's).
fn fib_priority(used: &[Path]) -> Option<u32> {
    used.first().filter(|p| !p.peer.is_local()).and_then(|p| p.attrs.priority)
}

/// The next hops a used set forwards to: those of its learned paths, best
/// first, each once; none when the best path is this node's own.
fn forwarding(used: &[Path]) -> SmallVec<[IpAddr; 4]> {
    if used.first().is_none_or(|p| p.peer.is_local()) {
        return SmallVec::new();
    }
    // Inline: this runs twice for every changed prefix when the FIB is on.
    let mut hops: SmallVec<[IpAddr; 4]> = SmallVec::new();
    for nh in used.iter().filter(|p| !p.peer.is_local()).filter_map(|p| p.attrs.next_hop) {
        if !hops.contains(&nh) {
            hops.push(nh);
        }
    }
    hops
}

/// A prefix type the RIB holds: IPv4 or IPv6 unicast.
pub trait RibPrefix: WirePrefix + Into<IpNet> + Send + Sync + 'static {
    /// Its family.
    const FAMILY: Family;
    #[doc(hidden)]
    fn fam(f: &mut Families) -> &mut Fam<Self>;
    #[doc(hidden)]
    fn fam_ref(f: &Families) -> &Fam<Self>;
    #[doc(hidden)]
    fn announcement(n: &[Nlri<Self>]) -> Announcement<'_>;
    #[doc(hidden)]
    fn held(h: &mut Held) -> &mut FastMap<Self, (Used, Used)>;
    #[doc(hidden)]
    fn received(r: &mut Received) -> &mut FastMap<(Self, u32), Arc<PathAttrs>>;
    #[doc(hidden)]
    fn held_ref(h: &Held) -> &FastMap<Self, (Used, Used)>;
    #[doc(hidden)]
    fn received_ref(r: &Received) -> &FastMap<(Self, u32), Arc<PathAttrs>>;
}

impl RibPrefix for Ipv4Net {
    const FAMILY: Family = Family::IPV4_UNICAST;
    fn fam(f: &mut Families) -> &mut Fam<Self> {
        &mut f.v4
    }
    fn fam_ref(f: &Families) -> &Fam<Self> {
        &f.v4
    }
    fn announcement(n: &[Nlri<Self>]) -> Announcement<'_> {
        Announcement::V4(n)
    }
    fn held(h: &mut Held) -> &mut FastMap<Self, (Used, Used)> {
        &mut h.v4
    }
    fn received(r: &mut Received) -> &mut FastMap<(Self, u32), Arc<PathAttrs>> {
        &mut r.v4
    }
    fn held_ref(h: &Held) -> &FastMap<Self, (Used, Used)> {
        &h.v4
    }
    fn received_ref(r: &Received) -> &FastMap<(Self, u32), Arc<PathAttrs>> {
        &r.v4
    }
}

impl RibPrefix for Ipv6Net {
    const FAMILY: Family = Family::IPV6_UNICAST;
    fn fam(f: &mut Families) -> &mut Fam<Self> {
        &mut f.v6
    }
    fn fam_ref(f: &Families) -> &Fam<Self> {
        &f.v6
    }
    fn announcement(n: &[Nlri<Self>]) -> Announcement<'_> {
        Announcement::V6(n)
    }
    fn held(h: &mut Held) -> &mut FastMap<Self, (Used, Used)> {
        &mut h.v6
    }
    fn received(r: &mut Received) -> &mut FastMap<(Self, u32), Arc<PathAttrs>> {
        &mut r.v6
    }
    fn held_ref(h: &Held) -> &FastMap<Self, (Used, Used)> {
        &h.v6
    }
    fn received_ref(r: &Received) -> &FastMap<(Self, u32), Arc<PathAttrs>> {
        &r.v6
    }
}

/// One family's table and the prefixes changed since the last flush, each
/// with the paths it used before the first change.
#[doc(hidden)]
pub struct Fam<P> {
    table: Table<P>,
    dirty: FastMap<P, (Used, Used)>,
}

/// Notes that `prefix` changed from `old` to `new` since the last flush
/// (keeping the first `old`).
fn note<P: RibPrefix>(dirty: &mut FastMap<P, (Used, Used)>, prefix: P, old: Used, new: Used) {
    match dirty.entry(prefix) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1 = new,
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert((old, new));
        }
    }
}

impl<P> Default for Fam<P> {
    fn default() -> Self {
        Fam { table: Table::default(), dirty: FastMap::default() }
    }
}

/// The two tables.
#[doc(hidden)]
#[derive(Default)]
pub struct Families {
    v4: Fam<Ipv4Net>,
    v6: Fam<Ipv6Net>,
}

/// What makes peers share an update group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    policy: Arc<PeerPolicy>,
    ibgp: bool,
    rr_client: bool,
    local_as: u32,
    next_hop_mode: NextHopMode,
    local_v4: Option<Ipv4Addr>,
    local_v6: Option<Ipv6Addr>,
    shared_v4: Option<Ipv4Net>,
    shared_v6: Option<Ipv6Net>,
    families: FamilySet,
    long_lived: bool,
    four_octet_as: bool,
    add_path: FamilySet,
    add_path_send: u8,
    extended_message: bool,
    /// IPv4 unicast may carry IPv6 next hops (RFC 8950, negotiated).
    extended_next_hop: bool,
    mrai: Duration,
}

impl GroupKey {
    fn tx(&self) -> WireContext {
        let mut c = WireContext::new(self.four_octet_as).with_add_path(self.add_path);
        c.extended_message = self.extended_message;
        if self.extended_next_hop {
            c = c.with_extended_next_hop(FamilySet::of(&[Family::IPV4_UNICAST]));
        }
        c
    }
}

struct Group {
    key: GroupKey,
    members: Vec<PeerId>,
    held: Held,
}

/// Announcements an update group's MRAI holds back, per family (the used
/// paths before the first held change, and now), and until when.
#[doc(hidden)]
#[derive(Default)]
pub struct Held {
    v4: FastMap<Ipv4Net, (Used, Used)>,
    v6: FastMap<Ipv6Net, (Used, Used)>,
    until: Option<Instant>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

struct PeerState {
    cfg: PeerConfig,
    session: Option<SessionInfo>,
    /// Prefixes accepted from the peer.
    accepted: usize,
    over_limit: bool,
    /// Its paths are stale until this deadline: the end of its restart time
    /// while it is down; once it is back, the end of the wait for its
    /// End-of-RIB.
    stale_until: Option<Instant>,
    /// Per family (IPv4, IPv6): its stale paths are long-lived stale (RFC
    /// 9494 §4.2) until this deadline.
    long_lived_until: [Option<Instant>; 2],
    /// Its graceful restart capability when its session went down gracefully.
    down_restart: Option<PeerRestart>,
    /// It restarts too and was sent the table and End-of-RIB during this
    /// speaker's deferral (see [`Rib::check_deferral`]).
    sent_early: bool,
    /// Families whose End-of-RIB it has sent in this session.
    eor: FamilySet,
    group: Option<usize>,
    /// Export paused ([`Rib::pause_export`]): out of its update group, the
    /// changes it misses collect here, each prefix with the used paths it was
    /// last sent and the ones it is owed; one entry per prefix however often
    /// it changes, so the backlog is bounded by the table, not by the churn.
    paused: Option<Held>,
    /// What it sent, before import policy, when [`PeerConfig::keep_received`].
    received: Received,
    /// What of what it sent was not taken as it came ([`Rib::ignored`]).
    ignored: IgnoredCounts,
    /// The [`Ignored`](super::checks::Ignored) kinds logged in this session.
    ignored_logged: Logged,
    /// Whether its import policy takes every route unchanged (evaluation skipped).
    import_all: bool,
    /// Why prefixes it sent were dropped, the last reason per prefix, for
    /// [`Rib::explain`]; at most [`REJECTIONS_KEPT`], cleared when its session
    /// comes up.
    rejected: explain::Rejections,
}

/// A peer's routes as received (before import policy), by prefix and path ID.
#[doc(hidden)]
#[derive(Default)]
pub struct Received {
    v4: FastMap<(Ipv4Net, u32), Arc<PathAttrs>>,
    v6: FastMap<(Ipv6Net, u32), Arc<PathAttrs>>,
}

/// The routing information base.
pub struct Rib {
    cfg: RibConfig,
    peers: Vec<Option<PeerState>>,
    infos: Vec<Option<PeerInfo>>,
    fams: Families,
    interner: Interner,
    groups: Vec<Group>,
    /// The groups with members, by key.
    group_index: FastMap<GroupKey, usize>,
    out: VecDeque<Output>,
    reach: Box<dyn Fn(Option<IpAddr>) -> Option<u32> + Send + Sync>,
    defer_until: Option<Instant>,
    /// When selection deferral started (peers not up are waited for a while from then).
    defer_started: Instant,
    /// Decommissioning (RFC 8326): every route is sent with GRACEFUL_SHUTDOWN,
    /// and with LOCAL_PREF 0 to iBGP peers.
    graceful_shutdown: bool,
    /// The latest time an input brought (MRAI intervals start from it).
    now: Option<Instant>,
}

fn fam_index(f: Family) -> Option<usize> {
    match f {
        Family::IPV4_UNICAST => Some(0),
        Family::IPV6_UNICAST => Some(1),
        _ => None,
    }
}

impl Rib {
    /// An empty RIB.
    pub fn new(cfg: RibConfig, now: Instant) -> Rib {
        let defer_until = cfg.defer.map(|d| now + d);
        Rib {
            defer_started: now,
            graceful_shutdown: false,
            cfg,
            peers: Vec::new(),
            infos: Vec::new(),
            fams: Families::default(),
            interner: Interner::default(),
            groups: Vec::new(),
            group_index: FastMap::default(),
            out: VecDeque::new(),
            reach: Box::new(|nh| nh.map(|_| 0)),
            defer_until,
            now: None,
        }
    }

    /// Sets how next hops are resolved (the FIB's view); decides every prefix again.
    pub fn set_reachability(&mut self, reach: Box<dyn Fn(Option<IpAddr>) -> Option<u32> + Send + Sync>) {
        self.reach = reach;
        self.redecide_all();
    }

    /// Changes the decision settings (always-compare-MED, ECMP width) and
    /// decides every prefix again; the differences go out at the next flush.
    pub fn set_decision(&mut self, decision: DecisionOptions, max_paths: usize) {
        let max_paths = max_paths.max(1);
        if self.cfg.decision == decision && self.cfg.max_paths == max_paths {
            return;
        }
        self.cfg.decision = decision;
        self.cfg.max_paths = max_paths;
        self.redecide_all();
    }

    /// The speaker's settings.
    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }

    fn peer(&self, peer: PeerId) -> Option<&PeerState> {
        self.peers.get(peer.0 as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, peer: PeerId) -> Option<&mut PeerState> {
        self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut)
    }

    /// Removes the paths of `peer` that `pred` selects, in both families.
    fn drop_paths(&mut self, peer: PeerId, pred: impl Fn(&Path) -> bool) {
        self.drop_family::<Ipv4Net>(peer, &pred);
        self.drop_family::<Ipv6Net>(peer, &pred);
    }

    fn drop_family<P: RibPrefix>(&mut self, peer: PeerId, pred: impl Fn(&Path) -> bool) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        let dirty = &mut fam.dirty;
        let n =
            fam.table.remove_where(|p| p.peer == peer && pred(p), &d, |prefix, old, new| note(dirty, prefix, old, new));
        if let Some(s) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) {
            s.accepted = s.accepted.saturating_sub(n);
        }
    }

    fn redecide_all(&mut self) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let Families { v4, v6 } = &mut self.fams;
        v4.table.redecide(&d, |p, old, new| note(&mut v4.dirty, p, old, new));
        v6.table.redecide(&d, |p, old, new| note(&mut v6.dirty, p, old, new));
    }

    fn dirty(&self) -> usize {
        self.fams.v4.dirty.len() + self.fams.v6.dirty.len()
    }

    /// The next thing the daemon must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

/// What the decision process reads, from the RIB's fields (a function, not
/// a method: the callers hold the tables mutably at the same time).
fn decision_input<'a>(
    infos: &'a [Option<PeerInfo>],
    cfg: &RibConfig,
    reach: &'a (dyn Fn(Option<IpAddr>) -> Option<u32> + Send + Sync),
) -> DecisionInput<'a> {
    DecisionInput { peers: infos, local_as: cfg.local_as, opts: cfg.decision, max_paths: cfg.max_paths, reach }
}

/// Sets LOCAL_PREF in `attributes` to `value` (added if missing).
fn set_local_pref(attributes: &mut Vec<PathAttribute>, value: u32) {
    match attributes.iter_mut().find(|a| a.value.code() == AttrCode::LOCAL_PREF) {
        Some(a) => a.value = Attr::LocalPref(value),
        None => attributes.push(PathAttribute::new(Attr::LocalPref(value))),
    }
}
