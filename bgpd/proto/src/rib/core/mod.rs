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

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use super::attrs::{Interner, PathAttrs};
use super::checks::{next_hop_fault, Ignored, IgnoredCounts, Logged, NextHopRules};
use super::decision::{DecisionOptions, Reason};
use super::table::{DecisionInput, FastMap, Path, PeerId, PeerInfo, Table, Used, STALE};
use crate::error::code;
use crate::nlri::{Nlri, WirePrefix};
use crate::types::{AttrCode, Family, FamilySet, AS_TRANS};
use crate::wire::{
    pack_announcements, pack_withdrawals, Announcement, AsPath, Attr, Community, Message, MpNlri, NextHop,
    PathAttribute, RefreshSubtype, RouteRefresh, Update, WireContext,
};

/// How long stale routes of a peer that came back wait for its End-of-RIB.
pub const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// How long selection deferral waits for a configured peer's session to
/// come up before it stops waiting for that peer (RFC 4724 §4.1 waits for
/// End-of-RIB from peers; a peer that is down or gone must not hold the
/// others until the deferral deadline). Two of bgpd's connect retries.
pub const DEFERRAL_PEER_WAIT: Duration = Duration::from_secs(10);

/// What an import or export policy says about one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take the route as it is.
    Accept,
    /// Take the route with these attributes instead.
    Modify(PathAttrs),
    /// Drop it.
    Reject,
}

/// A peer's import and export policy. The daemon implements it with
/// Calico `BGPFilter`s and Calico's defaults; tests with closures.
pub trait PeerPolicy: Send + Sync + std::fmt::Debug {
    /// A route received from the peer.
    fn import(&self, prefix: IpNet, attrs: &PathAttrs) -> Verdict;
    /// A route about to be sent to the peer (`learned`: from another peer,
    /// not originated here), with its attributes as this speaker holds them.
    fn export(&self, prefix: IpNet, attrs: &PathAttrs, learned: bool) -> Verdict;
    /// Whether every route is imported unchanged (lets the RIB skip the call).
    fn import_accepts_all(&self) -> bool {
        false
    }
}

/// Accepts everything both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl PeerPolicy for AcceptAll {
    fn import(&self, _: IpNet, _: &PathAttrs) -> Verdict {
        Verdict::Accept
    }
    fn export(&self, _: IpNet, _: &PathAttrs, _: bool) -> Verdict {
        Verdict::Accept
    }
    fn import_accepts_all(&self) -> bool {
        true
    }
}

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
    /// Its policy.
    pub policy: Arc<dyn PeerPolicy>,
    /// Equal for peers with equal policies (update groups compare this, not the policy).
    pub policy_id: u64,
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

/// Adds changes (prefix → used paths before, now) to what is held back: a
/// prefix already held keeps its "before" (what was last sent) and takes the
/// new "now".
fn hold<P: RibPrefix>(held: &mut FastMap<P, (Used, Used)>, changes: &FastMap<P, (Used, Used)>) {
    for (prefix, (old, new)) in changes {
        match held.entry(*prefix) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1 = new.clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((old.clone(), new.clone()));
            }
        }
    }
}

/// One forwarding change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibRoute {
    /// The prefix.
    pub prefix: IpNet,
    /// Next hops, best path's first; empty: no learned route any more.
    pub next_hops: Vec<IpAddr>,
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
    policy_id: u64,
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
    mrai: Duration,
}

impl GroupKey {
    fn tx(&self) -> WireContext {
        let mut c = WireContext::new(self.four_octet_as).with_add_path(self.add_path);
        c.extended_message = self.extended_message;
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
    /// The [`Ignored`] kinds logged in this session.
    ignored_logged: Logged,
}

/// A peer's routes as received (before import policy), by prefix and path ID.
#[doc(hidden)]
#[derive(Default)]
pub struct Received {
    v4: FastMap<(Ipv4Net, u32), Arc<PathAttrs>>,
    v6: FastMap<(Ipv6Net, u32), Arc<PathAttrs>>,
}

/// Where a route came from, as export rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Local,
    Ebgp,
    IbgpClient,
    IbgpNonClient,
}

/// The routing information base.
pub struct Rib {
    cfg: RibConfig,
    peers: Vec<Option<PeerState>>,
    infos: Vec<Option<PeerInfo>>,
    fams: Families,
    interner: Interner,
    groups: Vec<Group>,
    out: VecDeque<Output>,
    reach: Box<dyn Fn(Option<IpAddr>) -> Option<u32> + Send>,
    defer_until: Option<Instant>,
    /// When selection deferral started (peers not up are waited for a while from then).
    defer_started: Instant,
    /// Decommissioning (RFC 8326): every route is sent with GRACEFUL_SHUTDOWN,
    /// and with LOCAL_PREF 0 to iBGP peers.
    graceful_shutdown: bool,
    /// The latest time an input brought (MRAI intervals start from it).
    now: Option<Instant>,
}

/// Why selection deferral still waits for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeferralWait {
    /// Its session is up; its End-of-RIB is missing for these families.
    EndOfRib(Vec<Family>),
    /// It restarts too (R bit): its End-of-RIB is missing for these
    /// families; it gets this speaker's first once only such peers are left.
    Restarting(Vec<Family>),
    /// Its session is not up; it is waited for until then.
    Session(Instant),
}

/// Selection deferral in progress (`show peers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferralView {
    /// When it ends at the latest.
    pub until: Instant,
    /// The peers it waits for, by name, and why.
    pub waiting: Vec<(String, DeferralWait)>,
}

/// One path as `show routes` presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathView {
    /// The peer (`None`: originated here).
    pub peer: Option<String>,
    /// ADD-PATH identifier.
    pub path_id: u32,
    /// Attributes.
    pub attrs: Arc<PathAttrs>,
    /// Best path.
    pub best: bool,
    /// In the ECMP set.
    pub used: bool,
    /// Stale (graceful restart or refresh under way).
    pub stale: bool,
    /// Why it lost, when it is not used.
    pub reason: Option<Reason>,
}

/// Sizes for `show` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RibStats {
    /// Prefixes per family (IPv4, IPv6).
    pub prefixes: [usize; 2],
    /// Paths, all families.
    pub paths: usize,
    /// Distinct attribute sets.
    pub attr_sets: usize,
    /// Update groups.
    pub groups: usize,
    /// Bytes the tables and attribute sets take (estimated from their layout).
    pub bytes: usize,
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
            out: VecDeque::new(),
            reach: Box::new(|nh| nh.map(|_| 0)),
            defer_until,
            now: None,
        }
    }

    /// Sets how next hops are resolved (the FIB's view); decides every prefix again.
    pub fn set_reachability(&mut self, reach: Box<dyn Fn(Option<IpAddr>) -> Option<u32> + Send>) {
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

    /// Registers a peer (its session is not up yet).
    pub fn add_peer(&mut self, cfg: PeerConfig) -> PeerId {
        let state = PeerState {
            cfg,
            session: None,
            accepted: 0,
            over_limit: false,
            stale_until: None,
            long_lived_until: [None, None],
            down_restart: None,
            sent_early: false,
            eor: FamilySet::EMPTY,
            group: None,
            paused: None,
            received: Received::default(),
            ignored: IgnoredCounts::default(),
            ignored_logged: Logged::default(),
        };
        let info = PeerInfo {
            router_id: Ipv4Addr::UNSPECIFIED,
            addr: state.cfg.addr,
            asn: state.cfg.peer_as,
            ebgp: state.cfg.ebgp(),
        };
        let i = match self.peers.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.peers.push(None);
                self.infos.push(None);
                self.peers.len() - 1
            }
        };
        self.peers[i] = Some(state);
        self.infos[i] = Some(info);
        PeerId(i as u16)
    }

    /// Forgets a peer and its routes.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.leave_group(peer);
        self.drop_paths(peer, |_| true);
        // Export while the peer is still known: its paths' source type
        // decides who must hear of their withdrawal.
        self.flush();
        if let Some(s) = self.peers.get_mut(peer.0 as usize) {
            *s = None;
        }
        if let Some(s) = self.infos.get_mut(peer.0 as usize) {
            *s = None;
        }
        self.flush();
    }

    fn peer(&self, peer: PeerId) -> Option<&PeerState> {
        self.peers.get(peer.0 as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, peer: PeerId) -> Option<&mut PeerState> {
        self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut)
    }

    /// The peer's name.
    pub fn peer_name(&self, peer: PeerId) -> Option<&str> {
        self.peer(peer).map(|p| p.cfg.name.as_str())
    }

    /// Prefixes accepted from the peer.
    pub fn accepted(&self, peer: PeerId) -> usize {
        self.peer(peer).map_or(0, |p| p.accepted)
    }

    /// How many paths of the peer are kept before import policy
    /// ([`PeerConfig::keep_received`]; counted against its prefix limit).
    pub fn kept_received(&self, peer: PeerId) -> usize {
        self.peer(peer).map_or(0, |s| s.received.v4.len() + s.received.v6.len())
    }

    /// How many UPDATEs from the peer had routes or attributes the RIB did not
    /// take as they came, by reason ([`Ignored`]); for metrics.
    pub fn ignored(&self, peer: PeerId) -> IgnoredCounts {
        self.peer(peer).map_or_else(IgnoredCounts::default, |p| p.ignored)
    }

    /// Counts an [`Ignored`] case; the first of its kind in a session is
    /// logged with `detail` (later ones only counted: a peer that sends such
    /// routes sends many).
    fn note_ignored(&mut self, peer: PeerId, kind: Ignored, detail: impl FnOnce() -> String) {
        let Some(s) = self.peer_mut(peer) else { return };
        s.ignored.add(kind);
        if !s.ignored_logged.first(kind) {
            return;
        }
        let msg = format!(
            "{}: {}: {}; further cases in this session are only counted ({})",
            s.cfg.name,
            detail(),
            kind.outcome(),
            kind.name()
        );
        self.out.push_back(Output::Warning(peer, msg));
    }

    /// The session came up: the peer gets the table and End-of-RIB (after
    /// selection deferral, when this speaker restarted).
    pub fn peer_up(&mut self, peer: PeerId, session: SessionInfo, now: Instant) {
        self.now = Some(now);
        if let Some(info) = self.infos.get_mut(peer.0 as usize).and_then(Option::as_mut) {
            info.router_id = session.peer_id;
        }
        let Some(state) = self.peer_mut(peer) else { return };
        // A new session is sent the whole table: nothing owed from before.
        state.paused = None;
        // RFC 4724 §4.2: stale routes of families the peer no longer lists
        // (in its graceful restart or long-lived capability) go at once; the
        // others wait for its End-of-RIB.
        let keep = session.graceful_restart.map_or([false, false], |r| {
            [Family::IPV4_UNICAST, Family::IPV6_UNICAST].map(|f| {
                let i = fam_index(f).unwrap_or(0);
                r.families.contains(f) || (session.long_lived && r.long_lived[i] > 0)
            })
        });
        state.eor = FamilySet::EMPTY;
        state.sent_early = false;
        state.ignored_logged = Logged::default();
        state.session = Some(session);
        state.over_limit = false;
        let restarting = state.stale_until.is_some() || state.long_lived_until.iter().any(Option::is_some);
        if restarting {
            // Back: its stale routes wait for its End-of-RIB, at most this
            // long (FRR's default stale-path time); long-lived stale ones
            // keep their own deadline (RFC 9494 §4.2).
            if state.stale_until.is_some() {
                state.stale_until = Some(now + STALE_PATH_TIME);
            }
            for (i, kept) in keep.into_iter().enumerate() {
                if !kept {
                    state.long_lived_until[i] = None;
                }
            }
            if !keep[0] {
                self.drop_family::<Ipv4Net>(peer, Path::is_stale);
            }
            if !keep[1] {
                self.drop_family::<Ipv6Net>(peer, Path::is_stale);
            }
        }
        self.redecide_all();
        self.join_group(peer);
        if self.deferring(now) {
            return;
        }
        self.flush();
        self.send_table(peer, true);
    }

    /// The session went down. With `graceful` (the peer negotiated graceful
    /// restart and the session did not end with a NOTIFICATION that rules it
    /// out), its routes stay as stale for its restart time; otherwise they go.
    pub fn peer_down(&mut self, peer: PeerId, graceful: bool, now: Instant) {
        self.now = Some(now);
        // A session that never came up (a failed reconnect while the peer
        // restarts) changes nothing: its stale routes wait on.
        if self.peer(peer).is_none_or(|s| s.session.is_none()) {
            return;
        }
        self.leave_group(peer);
        let Some(state) = self.peer_mut(peer) else { return };
        // The next session sends everything again.
        state.received = Received::default();
        state.paused = None;
        let session = state.session.take();
        let long_lived_peer = session.as_ref().is_some_and(|s| s.long_lived);
        let gr = session.and_then(|s| s.graceful_restart);
        let kept = |r: &PeerRestart, f: Family| {
            let ll = if long_lived_peer { r.long_lived[fam_index(f).unwrap_or(0)] } else { 0 };
            (r.families.contains(f) && r.time > 0, ll > 0)
        };
        match gr {
            Some(r)
                if graceful
                    && [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().any(|f| kept(&r, *f) != (false, false)) =>
            {
                let mut r = r;
                if !long_lived_peer {
                    r.long_lived = [0, 0];
                }
                state.down_restart = Some(r);
                let in_restart_time = [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().any(|f| kept(&r, *f).0);
                state.stale_until = in_restart_time.then(|| now + Duration::from_secs(u64::from(r.time)));
                self.fams.v4.table.mark(|p| p.peer == peer, STALE);
                self.fams.v6.table.mark(|p| p.peer == peer, STALE);
                for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                    let i = fam_index(f).unwrap_or(0);
                    let already_long_lived = self.peer(peer).is_some_and(|s| s.long_lived_until[i].is_some());
                    match kept(&r, f) {
                        // A family already in its long-lived stale time stays there.
                        _ if already_long_lived => {}
                        (true, _) => {}
                        // RFC 9494 §4.2: a family the graceful restart
                        // capability does not list (restart time zero) is
                        // long-lived stale at once.
                        (false, true) => self.enter_long_lived(peer, f, now),
                        // Families it does not keep forwarding for go now.
                        (false, false) => self.drop_one_family(peer, f),
                    }
                }
            }
            _ => {
                state.stale_until = None;
                state.long_lived_until = [None, None];
                state.down_restart = None;
                self.drop_paths(peer, |_| true);
            }
        }
        self.flush();
    }

    fn drop_one_family(&mut self, peer: PeerId, f: Family) {
        match f {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, |_| true),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, |_| true),
            _ => {}
        }
    }

    /// RFC 9494 §4.2: the restart time of `peer` is over (or zero) for
    /// family `f`, and its capability asks for a long-lived stale time: its
    /// stale paths marked NO_LLGR go; the others carry LLGR_STALE, lose to
    /// any other path (§4.3) and are kept until the long-lived stale time ends
    /// or its End-of-RIB comes.
    fn enter_long_lived(&mut self, peer: PeerId, f: Family, now: Instant) {
        let Some(i) = fam_index(f) else { return };
        let Some(secs) = self.peer(peer).and_then(|s| s.down_restart).map(|r| r.long_lived[i]) else { return };
        if secs == 0 {
            return self.drop_one_family(peer, f);
        }
        if let Some(s) = self.peer_mut(peer) {
            s.long_lived_until[i] = Some(now + Duration::from_secs(u64::from(secs)));
        }
        match f {
            Family::IPV4_UNICAST => self.mark_long_lived::<Ipv4Net>(peer),
            Family::IPV6_UNICAST => self.mark_long_lived::<Ipv6Net>(peer),
            _ => {}
        }
        let name = self.peer_name(peer).unwrap_or("?").to_string();
        self.out.push_back(Output::Warning(
            peer,
            format!("{name}: restart time over, its {f} routes are kept long-lived stale (LLGR_STALE) for {secs} s"),
        ));
    }

    fn mark_long_lived<P: RibPrefix>(&mut self, peer: PeerId) {
        let stale: Vec<(P, u32, Arc<PathAttrs>)> = P::fam_ref(&self.fams)
            .table
            .iter()
            .flat_map(|(pfx, paths)| {
                paths.iter().filter(|p| p.peer == peer && p.is_stale()).map(move |p| (*pfx, p.path_id, p.attrs.clone()))
            })
            .collect();
        for (prefix, path_id, attrs) in stale {
            let n = Nlri { path_id: Some(path_id), prefix };
            if attrs.has_community(Community::NO_LLGR) {
                self.withdraw::<P>(peer, &n);
                continue;
            }
            if attrs.is_llgr_stale() {
                continue;
            }
            let marked = self.interner.intern(attrs.with_community(Community::LLGR_STALE));
            let mut path = Path::new(peer, path_id, marked);
            path.flags = STALE;
            let d = decision_input(&self.infos, &self.cfg, &*self.reach);
            let fam = P::fam(&mut self.fams);
            if let (Some((old, new)), _) = fam.table.update(prefix, path, &d) {
                note(&mut fam.dirty, prefix, old, new);
            }
        }
    }

    /// An UPDATE from the peer (`treat_as_withdraw`: RFC 7606 says its
    /// announcements are withdrawals). Beyond the codec's checks, what needs
    /// the session is checked here ([`super::checks`]): confederation segments
    /// from an external peer and unusable next hops withdraw the routes
    /// concerned, NLRI of families not negotiated are ignored, AS4_PATH from a
    /// 4-octet speaker is discarded; each case is counted ([`Rib::ignored`]).
    pub fn update(&mut self, peer: PeerId, u: &Update, treat_as_withdraw: bool, now: Instant) {
        self.now = Some(now);
        if let Some(f) = u.end_of_rib_family() {
            self.end_of_rib(peer, f, now);
            return;
        }
        // A peer without a session (torn down for max-prefix, say) may still
        // have UPDATEs in flight: they are dropped.
        let Some(state) = self.peer(peer) else { return };
        let Some(session) = &state.session else { return };
        let ebgp = state.cfg.ebgp();
        let four_octet_as = session.tx.four_octet_as;
        let families = session.families;
        let rules = NextHopRules {
            extended_next_hop: session.tx.extended_next_hop,
            local_v4: session.local_v4,
            local_v6: session.local_v6,
        };
        // RFC 5065 §5: bgpd has no confederation, so no eBGP peer is in ours.
        let confed = ebgp && u.as_path().is_some_and(AsPath::has_confed);
        let loop_free = !treat_as_withdraw && !confed && self.loop_free(state, u, four_octet_as);
        if confed {
            let path = u.as_path().map(ToString::to_string).unwrap_or_default();
            self.note_ignored(peer, Ignored::ConfedFromExternal, || {
                format!("AS_PATH {path} has confederation segments")
            });
        }
        if four_octet_as && u.attributes.iter().any(|a| matches!(a.value, Attr::As4Path(_) | Attr::As4Aggregator(_))) {
            self.note_ignored(peer, Ignored::As4FromNewSpeaker, || "AS4_PATH/AS4_AGGREGATOR received".to_string());
        }
        for w in &u.withdrawn {
            self.received_withdraw::<Ipv4Net>(peer, w);
        }
        if let Some(un) = u.mp_unreach() {
            match (&un.nlri, un.family) {
                (MpNlri::V4(v), Family::IPV4_UNICAST) => {
                    v.iter().for_each(|n| self.received_withdraw::<Ipv4Net>(peer, n))
                }
                (MpNlri::V6(v), Family::IPV6_UNICAST) => {
                    v.iter().for_each(|n| self.received_withdraw::<Ipv6Net>(peer, n))
                }
                _ => {}
            }
        }
        let mp = u.mp_reach().filter(|r| !r.nlri.is_empty());
        if u.nlri.is_empty() && mp.is_none() {
            return;
        }
        if !u.nlri.is_empty() {
            let nh = u.next_hop().map(NextHop::V4);
            match self.usable(peer, Family::IPV4_UNICAST, nh.as_ref(), families, &rules) {
                None => {}
                Some(true) if loop_free => {
                    let attrs = self.received_attrs(u, false, ebgp, four_octet_as);
                    u.nlri.iter().for_each(|n| self.received_announce::<Ipv4Net>(peer, n, &attrs));
                }
                Some(_) => u.nlri.iter().for_each(|n| self.received_withdraw::<Ipv4Net>(peer, n)),
            }
        }
        if let Some(r) = mp {
            match self.usable(peer, r.family, Some(&r.next_hop), families, &rules) {
                None => {}
                Some(usable) => {
                    let attrs = (usable && loop_free).then(|| self.received_attrs(u, true, ebgp, four_octet_as));
                    match (&r.nlri, attrs) {
                        (MpNlri::V4(v), Some(a)) => {
                            v.iter().for_each(|n| self.received_announce::<Ipv4Net>(peer, n, &a))
                        }
                        (MpNlri::V6(v), Some(a)) => {
                            v.iter().for_each(|n| self.received_announce::<Ipv6Net>(peer, n, &a))
                        }
                        (MpNlri::V4(v), None) => v.iter().for_each(|n| self.received_withdraw::<Ipv4Net>(peer, n)),
                        (MpNlri::V6(v), None) => v.iter().for_each(|n| self.received_withdraw::<Ipv6Net>(peer, n)),
                        _ => {}
                    }
                }
            }
        }
        self.check_limit(peer);
        if self.dirty() >= 4096 {
            self.flush();
        }
    }

    /// Whether NLRI of `family` with next hop `nh` may be used: `None` when
    /// the family is not one the session negotiated (RFC 4760 §8: the NLRI
    /// are ignored), `Some(false)` when the next hop cannot be right (RFC 4271
    /// §6.3, RFC 7606 §7.3, RFC 8950: treat-as-withdraw), `Some(true)` otherwise.
    /// A missing next hop is the codec's business (RFC 7606 §3 (d)).
    fn usable(
        &mut self,
        peer: PeerId,
        family: Family,
        nh: Option<&NextHop>,
        families: FamilySet,
        rules: &NextHopRules,
    ) -> Option<bool> {
        if !families.contains(family) || fam_index(family).is_none() {
            self.note_ignored(peer, Ignored::FamilyNotNegotiated, || format!("{family} NLRI"));
            return None;
        }
        let fault = nh.and_then(|nh| next_hop_fault(family, nh, rules));
        if let Some((kind, addr)) = fault {
            self.note_ignored(peer, kind, || format!("{family} NLRI with next hop {addr}"));
        }
        Some(fault.is_none())
    }

    /// AS_PATH loop (with allowas-in), and RFC 4456 §8 ORIGINATOR_ID / CLUSTER_LIST loops.
    fn loop_free(&self, state: &PeerState, u: &Update, four_octet_as: bool) -> bool {
        let path = u.received_as_path(four_octet_as).unwrap_or_default();
        let allowed = state.cfg.allow_local_as as usize;
        if path.count(state.cfg.local_as) > allowed
            || (state.cfg.local_as != self.cfg.local_as && path.count(self.cfg.local_as) > allowed)
        {
            return false;
        }
        if let Some(Attr::OriginatorId(o)) = u.attr(AttrCode::ORIGINATOR_ID) {
            if *o == self.cfg.router_id {
                return false;
            }
        }
        if let (Some(Attr::ClusterList(c)), Some(id)) = (u.attr(AttrCode::CLUSTER_LIST), self.cfg.cluster_id) {
            if c.contains(&id) {
                return false;
            }
        }
        true
    }

    /// The attributes of a received UPDATE as the RIB keeps them: 4-octet
    /// AS path reconciled (RFC 6793), and for eBGP, the attributes that must
    /// not cross an AS boundary removed (LOCAL_PREF, RFC 4271 §5.1.5;
    /// ORIGINATOR_ID and CLUSTER_LIST, RFC 4456 §8).
    fn received_attrs(&mut self, u: &Update, mp: bool, ebgp: bool, four_octet_as: bool) -> Arc<PathAttrs> {
        let mut a = PathAttrs::from_update(u, mp);
        let has_as4 = a.attributes.iter().any(|x| matches!(x.value, Attr::As4Path(_) | Attr::As4Aggregator(..)));
        if has_as4 {
            if !four_octet_as {
                reconcile_as4(&mut a.attributes, u);
            }
            // RFC 6793 §4.1: from a 4-octet speaker they are discarded; from a
            // 2-octet one they are merged in: either way never kept nor passed on.
            a.attributes.retain(|x| !matches!(x.value, Attr::As4Path(_) | Attr::As4Aggregator(..)));
        }
        if ebgp {
            a.attributes.retain(|x| {
                !matches!(x.value.code(), AttrCode::LOCAL_PREF | AttrCode::ORIGINATOR_ID | AttrCode::CLUSTER_LIST)
            });
        }
        // RFC 8326 §4.2: the sender is about to go away; its routes lose to
        // any alternative before it does (LOCAL_PREF 0, before import policy).
        if a.has_community(Community::GRACEFUL_SHUTDOWN) {
            set_local_pref(&mut a.attributes, 0);
        }
        self.interner.intern(a)
    }

    /// A path as received: kept before policy when the peer wants that, then announced.
    fn received_announce<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>, attrs: &Arc<PathAttrs>) {
        if let Some(s) = self.peer_mut(peer).filter(|s| s.cfg.keep_received) {
            P::received(&mut s.received).insert((n.prefix, n.path_id.unwrap_or(0)), attrs.clone());
        }
        self.announce(peer, n, attrs);
    }

    /// A path withdrawn (or treated as withdrawn) by the peer.
    fn received_withdraw<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>) {
        if let Some(s) = self.peer_mut(peer).filter(|s| s.cfg.keep_received) {
            P::received(&mut s.received).remove(&(n.prefix, n.path_id.unwrap_or(0)));
        }
        self.withdraw(peer, n);
    }

    /// Applies the peer's (new) import policy to its kept routes.
    fn reimport<P: RibPrefix>(&mut self, peer: PeerId) {
        let kept: Vec<((P, u32), Arc<PathAttrs>)> = match self.peer_mut(peer) {
            Some(s) => P::received(&mut s.received).iter().map(|(k, a)| (*k, a.clone())).collect(),
            None => return,
        };
        for ((prefix, path_id), attrs) in kept {
            self.announce(peer, &Nlri { path_id: Some(path_id), prefix }, &attrs);
        }
    }

    fn announce<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>, attrs: &Arc<PathAttrs>) {
        let Some(state) = self.peers.get(peer.0 as usize).and_then(Option::as_ref) else { return };
        let attrs = if state.cfg.policy.import_accepts_all() {
            attrs.clone()
        } else {
            match state.cfg.policy.import(n.prefix.into(), attrs) {
                Verdict::Accept => attrs.clone(),
                Verdict::Modify(a) => self.interner.intern(a),
                Verdict::Reject => return self.withdraw(peer, n),
            }
        };
        let path = Path::new(peer, n.path_id.unwrap_or(0), attrs);
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        let (old, added) = fam.table.update(n.prefix, path, &d);
        if added {
            if let Some(s) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) {
                s.accepted += 1;
            }
        }
        if let Some((old, new)) = old {
            note(&mut fam.dirty, n.prefix, old, new);
        }
    }

    fn withdraw<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        let Some(old) = fam.table.withdraw(n.prefix, peer, n.path_id.unwrap_or(0), &d) else { return };
        if let Some(s) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) {
            s.accepted = s.accepted.saturating_sub(1);
        }
        if let Some((old, new)) = old {
            note(&mut fam.dirty, n.prefix, old, new);
        }
    }

    fn check_limit(&mut self, peer: PeerId) {
        let Some(s) = self.peer_mut(peer) else { return };
        let Some(m) = s.cfg.max_prefix else { return };
        // The copy kept before import policy holds memory too: a peer whose routes
        // policy rejects must not grow it without bound.
        let kept = s.received.v4.len() + s.received.v6.len();
        if s.accepted.max(kept) <= m.limit as usize {
            s.over_limit = false;
            return;
        }
        if s.over_limit {
            return;
        }
        s.over_limit = true;
        let msg = if kept > s.accepted {
            format!(
                "{kept} prefixes received (kept before policy; {} accepted), more than the limit of {}",
                s.accepted, m.limit
            )
        } else {
            format!("{} prefixes received, more than the limit of {}", s.accepted, m.limit)
        };
        if m.teardown {
            self.out.push_back(Output::Teardown { peer, subcode: code::cease::MAX_PREFIXES, reason: msg });
            self.leave_group(peer);
            if let Some(s) = self.peer_mut(peer) {
                s.session = None;
                s.received = Received::default();
            }
            self.drop_paths(peer, |_| true);
            self.flush();
        } else {
            self.out.push_back(Output::Warning(peer, msg));
        }
    }

    /// The peer sent End-of-RIB for `family`: its stale paths of the family go.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family, now: Instant) {
        self.now = Some(now);
        let Some(s) = self.peer_mut(peer) else { return };
        s.eor.insert(family);
        if let Some(i) = fam_index(family) {
            s.long_lived_until[i] = None;
        }
        match family {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
            _ => {}
        }
        if let Some(s) = self.peer_mut(peer) {
            let fams = s.session.as_ref().map_or(FamilySet::EMPTY, |x| x.families);
            if [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().all(|f| !fams.contains(*f) || s.eor.contains(*f)) {
                s.stale_until = None;
            }
            if s.stale_until.is_none() && s.long_lived_until.iter().all(Option::is_none) {
                s.down_restart = None;
            }
        }
        self.flush();
        self.check_deferral(now);
    }

    /// The peer asks for the table again (ROUTE-REFRESH): it gets it, framed
    /// by BoRR/EoRR when enhanced route refresh was negotiated.
    pub fn refresh_requested(&mut self, peer: PeerId, family: Family, now: Instant) {
        self.now = Some(now);
        if self.deferring(now) {
            return;
        }
        let Some(s) = self.peer(peer).and_then(|s| s.session.as_ref()) else { return };
        if !s.families.contains(family) {
            return;
        }
        let enhanced = s.enhanced_refresh;
        let rr = |subtype| Message::RouteRefresh(RouteRefresh { family, subtype, orf: Vec::new() });
        if enhanced {
            self.out.push_back(Output::Message(peer, rr(RefreshSubtype::BORR)));
        }
        match family {
            Family::IPV4_UNICAST => self.send_family::<Ipv4Net>(peer),
            Family::IPV6_UNICAST => self.send_family::<Ipv6Net>(peer),
            _ => {}
        }
        if enhanced {
            self.out.push_back(Output::Message(peer, rr(RefreshSubtype::EORR)));
        }
    }

    /// Stops exporting to the peer (its connection does not take what it is
    /// sent: the daemon's queue towards it is full). It leaves its update
    /// group; what changes meanwhile is remembered per prefix, not encoded
    /// ([`PeerState::paused`]), and sent by [`Rib::resume_export`]. No-op
    /// without a session or when already paused.
    pub fn pause_export(&mut self, peer: PeerId) {
        let Some(state) = self.peer_mut(peer) else { return };
        if state.session.is_none() || state.paused.is_some() {
            return;
        }
        let group = state.group;
        let mut paused = Held::default();
        // What its group holds back (MRAI) was sent to no member yet.
        if let Some(g) = group.and_then(|g| self.groups.get(g)) {
            hold(&mut paused.v4, &g.held.v4);
            hold(&mut paused.v6, &g.held.v6);
        }
        self.leave_group(peer);
        if let Some(state) = self.peer_mut(peer) {
            state.paused = Some(paused);
        }
    }

    /// Whether export to the peer is paused.
    pub fn export_paused(&self, peer: PeerId) -> bool {
        self.peer(peer).is_some_and(|s| s.paused.is_some())
    }

    /// Resumes export to a paused peer: it is sent, from the Loc-RIB as it is
    /// now, the difference for every prefix that changed while it was paused,
    /// and rejoins its update group.
    pub fn resume_export(&mut self, peer: PeerId, now: Instant) {
        self.now = Some(now);
        // Changes not flushed yet go to the groups, and to this peer's backlog.
        self.flush();
        let Some(paused) = self.peer_mut(peer).and_then(|s| s.paused.take()) else { return };
        if !self.deferring(now) {
            self.export_to::<Ipv4Net>(peer, &paused.v4);
            self.export_to::<Ipv6Net>(peer, &paused.v6);
        }
        self.join_group(peer);
    }

    /// Exports changes (prefix → used paths it was sent, used paths now) to
    /// one peer alone.
    fn export_to<P: RibPrefix>(&mut self, peer: PeerId, batch: &FastMap<P, (Used, Used)>) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        if batch.is_empty() || !s.families.contains(P::FAMILY) {
            return;
        }
        let key = self.group_key(&state.cfg, s);
        let policy = state.cfg.policy.clone();
        let mut cache = ExportCache::default();
        let mut build = Build::<P>::new(&key);
        for (prefix, (old, now)) in batch {
            let a = self.export(&key, &*policy, *prefix, old, Some(peer), &mut cache);
            let b = self.export(&key, &*policy, *prefix, now, Some(peer), &mut cache);
            build.diff(*prefix, &a, &b);
        }
        self.emit(vec![peer], &key, build);
    }

    /// The peer starts re-sending `family` (BoRR, RFC 7313): its paths turn stale.
    pub fn refresh_begin(&mut self, peer: PeerId, family: Family) {
        match family {
            Family::IPV4_UNICAST => self.fams.v4.table.mark(|p| p.peer == peer, STALE),
            Family::IPV6_UNICAST => self.fams.v6.table.mark(|p| p.peer == peer, STALE),
            _ => 0,
        };
    }

    /// The peer finished re-sending `family` (EoRR): what it did not send again goes.
    pub fn refresh_end(&mut self, peer: PeerId, family: Family) {
        match family {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
            _ => {}
        }
        self.flush();
    }

    /// Originates `prefix` with `attrs` (ORIGIN, communities; AS_PATH empty),
    /// or with `None` withdraws it.
    pub fn originate(&mut self, prefix: IpNet, attrs: Option<PathAttrs>) {
        let attrs = attrs.map(|a| self.interner.intern(a));
        match (prefix, attrs) {
            (IpNet::V4(p), Some(a)) => self.originate_in::<Ipv4Net>(p, a),
            (IpNet::V6(p), Some(a)) => self.originate_in::<Ipv6Net>(p, a),
            (IpNet::V4(p), None) => self.withdraw::<Ipv4Net>(PeerId::LOCAL, &Nlri::new(p)),
            (IpNet::V6(p), None) => self.withdraw::<Ipv6Net>(PeerId::LOCAL, &Nlri::new(p)),
        }
    }

    fn originate_in<P: RibPrefix>(&mut self, prefix: P, attrs: Arc<PathAttrs>) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        if let (Some((old, new)), _) = fam.table.update(prefix, Path::new(PeerId::LOCAL, 0, attrs), &d) {
            note(&mut fam.dirty, prefix, old, new);
        }
    }

    /// Changes a peer's configuration without touching its session: a new
    /// import policy re-checks the routes kept from it and asks it for a
    /// ROUTE-REFRESH; a new export policy (or next-hop mode, ADD-PATH count,
    /// reflector role) sends it the difference.
    pub fn set_peer_config(&mut self, peer: PeerId, cfg: PeerConfig, now: Instant) {
        self.now = Some(now);
        // What is pending goes out under the old settings, and the peer
        // leaves its group first: the group's export must not see the new
        // policy of one member.
        self.flush();
        self.leave_group(peer);
        let Some(state) = self.peer_mut(peer) else { return };
        let import_changed = state.cfg.policy_id != cfg.policy_id;
        if !cfg.keep_received {
            state.received = Received::default();
        }
        let old_cfg = std::mem::replace(&mut state.cfg, cfg);
        // A copy kept from the start of the session can stand in for a refresh.
        let kept = old_cfg.keep_received && self.peer(peer).is_some_and(|s| s.cfg.keep_received);
        let up = self.peer(peer).and_then(|s| s.session.clone());
        if import_changed {
            let policy = self.peer(peer).map(|s| s.cfg.policy.clone());
            if let Some(policy) = policy {
                self.recheck_import::<Ipv4Net>(peer, &*policy);
                self.recheck_import::<Ipv6Net>(peer, &*policy);
            }
            if kept {
                self.reimport::<Ipv4Net>(peer);
                self.reimport::<Ipv6Net>(peer);
            } else if let Some(s) = &up {
                if s.route_refresh {
                    for f in
                        [Family::IPV4_UNICAST, Family::IPV6_UNICAST].into_iter().filter(|f| s.families.contains(*f))
                    {
                        self.out.push_back(Output::Message(peer, Message::RouteRefresh(RouteRefresh::request(f))));
                    }
                }
            }
        }
        // Routes the new import policy rejects: the other peers hear of it
        // now; this peer (in no group at the moment) through the re-export
        // below, which starts from what it was sent: the old used paths.
        let before4 = self.fams.v4.dirty.clone();
        let before6 = self.fams.v6.dirty.clone();
        self.flush();
        let Some(session) = up else { return };
        let old_key = self.group_key(&old_cfg, &session);
        let new_key = self.peer(peer).map(|s| self.group_key(&s.cfg, &session));
        if let Some(new_key) = new_key {
            // Same group key and same policy: what the peer is sent is
            // unchanged (max-prefix, say), no table walk needed.
            let unchanged = old_key == new_key && !import_changed && before4.is_empty() && before6.is_empty();
            if !unchanged && !self.deferring(now) {
                self.reexport::<Ipv4Net>(peer, &old_key, &*old_cfg.policy, &new_key, &before4);
                self.reexport::<Ipv6Net>(peer, &old_key, &*old_cfg.policy, &new_key, &before6);
            }
        }
        self.join_group(peer);
    }

    fn recheck_import<P: RibPrefix>(&mut self, peer: PeerId, policy: &dyn PeerPolicy) {
        let rejected: Vec<(P, u32)> = P::fam_ref(&self.fams)
            .table
            .iter()
            .flat_map(|(pfx, paths)| paths.iter().filter(|p| p.peer == peer).map(move |p| (*pfx, p)))
            .filter(|(pfx, p)| policy.import((*pfx).into(), &p.attrs) == Verdict::Reject)
            .map(|(pfx, p)| (pfx, p.path_id))
            .collect();
        for (prefix, path_id) in rejected {
            self.withdraw::<P>(peer, &Nlri { path_id: Some(path_id), prefix });
        }
    }

    /// Sends `peer` the difference between what the old configuration
    /// exported and what the new one does.
    fn reexport<P: RibPrefix>(
        &mut self,
        peer: PeerId,
        old: &GroupKey,
        old_policy: &dyn PeerPolicy,
        new: &GroupKey,
        before: &FastMap<P, (Used, Used)>,
    ) {
        let Some(new_policy) = self.peer(peer).map(|s| s.cfg.policy.clone()) else { return };
        let mut build = Build::<P>::new(new);
        let mut old_cache = ExportCache::default();
        let mut new_cache = ExportCache::default();
        let table = &P::fam_ref(&self.fams).table;
        for (prefix, paths) in table.iter() {
            let used: SmallVec<[Path; 1]> = paths.iter().take_while(|p| p.is_used()).cloned().collect();
            let was = before.get(prefix).map_or(&used, |(old, _)| old);
            let a = self.export(old, old_policy, *prefix, was, Some(peer), &mut old_cache);
            let b = self.export(new, &*new_policy, *prefix, &used, Some(peer), &mut new_cache);
            build.diff(*prefix, &a, &b);
        }
        // Prefixes that are gone altogether since.
        for (prefix, (was, _)) in before.iter().filter(|(p, _)| table.get(p).is_none()) {
            let a = self.export(old, old_policy, *prefix, was, Some(peer), &mut old_cache);
            build.diff(*prefix, &a, &[]);
        }
        self.emit(vec![peer], new, build);
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

    // ----- timers -----

    fn deferring(&mut self, now: Instant) -> bool {
        self.check_deferral(now);
        self.defer_until.is_some()
    }

    /// Why deferral waits for `p` at `now`, if it does. RFC 4724 §4.1:
    /// End-of-RIB from every peer, "excluding the ones that do not
    /// advertise the graceful restart capability". A peer whose session is
    /// not up is waited for during the first [`RibConfig::defer_peer_wait`]
    /// of the deferral only: a peer that is down or gone must not hold every
    /// other one until the deadline.
    ///
    /// Deviation: RFC 4724 §4.1 also excludes peers with the Restart State
    /// bit, so that two restarting speakers do not wait for each other. But
    /// such a peer still has routes this speaker had before its restart (FRR
    /// sets the bit for a while after its own start, restarted or not), and
    /// ending the deferral without them withdraws them from every helper at
    /// the End-of-RIB, and from the kernel at the sweep. So they are waited
    /// for too, and the deadlock is broken the other way: once only
    /// restarting peers are left, they get this speaker's table and
    /// End-of-RIB first ([`Rib::check_deferral`]), end their own deferral,
    /// and send theirs.
    fn deferral_wait(&self, p: &PeerState, now: Instant) -> Option<DeferralWait> {
        match &p.session {
            None => {
                let until = self.defer_started + self.cfg.defer_peer_wait;
                (now < until).then_some(DeferralWait::Session(until))
            }
            Some(s) => {
                let gr = s.graceful_restart.as_ref()?;
                let missing: Vec<Family> = [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
                    .into_iter()
                    .filter(|f| s.families.contains(*f) && !p.eor.contains(*f))
                    .collect();
                match (missing.is_empty(), gr.restarting) {
                    (true, _) => None,
                    (false, false) => Some(DeferralWait::EndOfRib(missing)),
                    (false, true) => Some(DeferralWait::Restarting(missing)),
                }
            }
        }
    }

    /// Selection deferral in progress: until when, and whom it waits for.
    pub fn deferral(&self, now: Instant) -> Option<DeferralView> {
        let until = self.defer_until?;
        let waiting = self
            .peers
            .iter()
            .flatten()
            .filter_map(|p| self.deferral_wait(p, now).map(|w| (p.cfg.name.clone(), w)))
            .collect();
        Some(DeferralView { until, waiting })
    }

    /// Ends selection deferral once no peer is waited for any more (see
    /// [`Rib::deferral_wait`]), or at the deadline. When every peer still
    /// waited for restarts itself (R bit), those get this speaker's table and
    /// End-of-RIB now, once each: they wait for it to end their own deferral.
    fn check_deferral(&mut self, now: Instant) {
        let Some(until) = self.defer_until else { return };
        let waiting: Vec<(PeerId, bool)> = (0..self.peers.len())
            .filter_map(|i| {
                let p = self.peers[i].as_ref()?;
                let w = self.deferral_wait(p, now)?;
                Some((PeerId(i as u16), matches!(w, DeferralWait::Restarting(_))))
            })
            .collect();
        if now < until && !waiting.is_empty() {
            if waiting.iter().all(|(_, restarting)| *restarting) {
                for (peer, _) in waiting {
                    let first = self.peer_mut(peer).is_some_and(|s| !std::mem::replace(&mut s.sent_early, true));
                    if first {
                        self.send_table(peer, true);
                    }
                }
            }
            return;
        }
        self.defer_until = None;
        self.fams.v4.dirty.clear();
        self.fams.v6.dirty.clear();
        if self.cfg.fib {
            // The whole table, once: the daemon then sweeps what is left
            // from before the restart.
            let mut all: Vec<FibRoute> = Vec::new();
            for (p, paths) in self.fams.v4.table.iter() {
                let hops = forwarding(&super::table::used_of(paths));
                if !hops.is_empty() {
                    all.push(FibRoute { prefix: IpNet::V4(*p), next_hops: hops.into_vec() });
                }
            }
            for (p, paths) in self.fams.v6.table.iter() {
                let hops = forwarding(&super::table::used_of(paths));
                if !hops.is_empty() {
                    all.push(FibRoute { prefix: IpNet::V6(*p), next_hops: hops.into_vec() });
                }
            }
            self.out.push_back(Output::Fib(all));
        }
        let ups: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.session.is_some()))
            .map(|i| PeerId(i as u16))
            .collect();
        for p in ups {
            self.send_table(p, true);
        }
        self.out.push_back(Output::DeferralDone);
    }

    /// When [`Rib::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.groups.iter().filter(|g| !g.held.is_empty()).filter_map(|g| g.held.until);
        // While deferring, the end of the wait for peers not up yet.
        let peer_wait = self.defer_until.map(|_| self.defer_started + self.cfg.defer_peer_wait);
        let peer_wait = peer_wait.filter(|t| self.now.is_none_or(|now| now < *t));
        self.peers
            .iter()
            .flatten()
            .flat_map(|p| std::iter::once(p.stale_until).chain(p.long_lived_until))
            .flatten()
            .chain(self.defer_until)
            .chain(peer_wait)
            .chain(held)
            .min()
    }

    /// Runs what is due: restart timers of peers (their stale routes go)
    /// and the end of selection deferral.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.release_held(now);
        let expired: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().and_then(|p| p.stale_until).is_some_and(|t| t <= now))
            .map(|i| PeerId(i as u16))
            .collect();
        for peer in expired {
            let Some(s) = self.peer_mut(peer) else { continue };
            s.stale_until = None;
            let name = s.cfg.name.clone();
            let back = s.session.is_some();
            let long_lived = s.down_restart.map_or([0, 0], |r| r.long_lived);
            let in_long_lived = s.long_lived_until;
            for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                let i = fam_index(f).unwrap_or(0);
                if in_long_lived[i].is_some() {
                    continue;
                }
                if !back && long_lived[i] > 0 {
                    // RFC 9494 §4.2: the restart time is over, the long-lived stale time begins.
                    self.enter_long_lived(peer, f, now);
                } else {
                    match f {
                        Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
                        _ => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
                    }
                }
            }
            if long_lived == [0, 0] || back {
                self.out.push_back(Output::Warning(peer, format!("{name}: restart time over, its stale routes go")));
            }
        }
        // Long-lived stale times that ended (RFC 9494 §4.2): those paths go.
        for i in 0..self.peers.len() {
            for (fi, f) in [Family::IPV4_UNICAST, Family::IPV6_UNICAST].into_iter().enumerate() {
                let Some(s) = self.peers[i].as_mut() else { continue };
                if s.long_lived_until[fi].is_none_or(|t| t > now) {
                    continue;
                }
                s.long_lived_until[fi] = None;
                let name = s.cfg.name.clone();
                let peer = PeerId(i as u16);
                self.out.push_back(Output::Warning(
                    peer,
                    format!("{name}: long-lived stale time over, its {f} stale routes go"),
                ));
                match f {
                    Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
                    _ => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
                }
            }
        }
        for s in self.peers.iter_mut().flatten() {
            if s.stale_until.is_none() && s.long_lived_until.iter().all(Option::is_none) {
                s.down_restart = None;
            }
        }
        self.check_deferral(now);
        self.flush();
    }

    /// The next thing the daemon must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    // ----- update groups and export -----

    fn group_key(&self, cfg: &PeerConfig, s: &SessionInfo) -> GroupKey {
        GroupKey {
            policy_id: cfg.policy_id,
            ibgp: !cfg.ebgp(),
            rr_client: cfg.rr_client,
            local_as: cfg.local_as,
            next_hop_mode: cfg.next_hop_mode,
            local_v4: s.local_v4,
            local_v6: s.local_v6,
            shared_v4: s.shared_v4,
            shared_v6: s.shared_v6,
            families: s.families,
            long_lived: s.long_lived,
            four_octet_as: s.tx.four_octet_as,
            add_path: s.tx.add_path,
            add_path_send: cfg.add_path_send,
            extended_message: s.tx.extended_message,
            mrai: cfg.mrai,
        }
    }

    fn join_group(&mut self, peer: PeerId) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        if state.paused.is_some() {
            // Rejoins when its export resumes.
            return;
        }
        let key = self.group_key(&state.cfg, s);
        let g = match self.groups.iter().position(|g| g.key == key && !g.members.is_empty()) {
            Some(g) => g,
            None => match self.groups.iter().position(|g| g.members.is_empty()) {
                Some(g) => {
                    self.groups[g].key = key;
                    self.groups[g].held = Held::default();
                    g
                }
                None => {
                    self.groups.push(Group { key, members: Vec::new(), held: Held::default() });
                    self.groups.len() - 1
                }
            },
        };
        self.groups[g].members.push(peer);
        if let Some(s) = self.peer_mut(peer) {
            s.group = Some(g);
        }
    }

    fn leave_group(&mut self, peer: PeerId) {
        let Some(g) = self.peer_mut(peer).and_then(|s| s.group.take()) else { return };
        if let Some(group) = self.groups.get_mut(g) {
            group.members.retain(|m| *m != peer);
        }
    }

    fn source(&self, p: &Path) -> Source {
        if p.peer.is_local() {
            return Source::Local;
        }
        match self.peer(p.peer) {
            Some(s) if s.cfg.ebgp() => Source::Ebgp,
            Some(s) if s.cfg.rr_client => Source::IbgpClient,
            _ => Source::IbgpNonClient,
        }
    }

    /// What the group is sent for `prefix` whose used paths are `used`:
    /// (path identifier, attributes) pairs; one pair without ADD-PATH.
    fn export<P: RibPrefix>(
        &self,
        g: &GroupKey,
        policy: &dyn PeerPolicy,
        prefix: P,
        used: &[Path],
        exclude: Option<PeerId>,
        cache: &mut ExportCache,
    ) -> SmallVec<[(u32, Arc<PathAttrs>); 1]> {
        let mut out = SmallVec::new();
        let addpath = g.add_path.contains(P::FAMILY);
        let n = if addpath {
            if g.add_path_send == 0 {
                usize::MAX
            } else {
                g.add_path_send as usize
            }
        } else {
            1
        };
        // A route never goes back to the peer it came from: with ADD-PATH its
        // other paths still may; without, nothing is sent (as BIRD does).
        // RFC 9494 §4.5: a long-lived stale path goes only to peers that
        // sent the LLGR capability; to the others the prefix is withdrawn.
        let sendable = |p: &&Path| Some(p.peer) != exclude && (g.long_lived || !p.attrs.is_llgr_stale());
        let chosen: SmallVec<[&Path; 2]> = if addpath {
            used.iter().filter(sendable).take(n).collect()
        } else {
            used.first().filter(sendable).into_iter().collect()
        };
        for p in chosen {
            let src = self.source(p);
            let allowed = match (g.ibgp, src) {
                (false, _) | (true, Source::Local | Source::Ebgp) => true,
                (true, Source::IbgpClient) => self.cfg.cluster_id.is_some(),
                (true, Source::IbgpNonClient) => self.cfg.cluster_id.is_some() && g.rr_client,
            };
            if !allowed {
                continue;
            }
            let attrs = match policy.export(prefix.into(), &p.attrs, !p.peer.is_local()) {
                Verdict::Reject => continue,
                Verdict::Accept => {
                    let key = (Arc::as_ptr(&p.attrs), p.peer);
                    match cache.by_source.get(&key) {
                        Some(a) => a.clone(),
                        None => {
                            let a = self.transform(g, P::FAMILY, p, &p.attrs, src).map(|a| cache.share(a));
                            cache.by_source.insert(key, a.clone());
                            a
                        }
                    }
                }
                Verdict::Modify(m) => self.transform(g, P::FAMILY, p, &m, src).map(|a| cache.share(a)),
            };
            if let Some(a) = attrs {
                let mut id = if addpath { out_path_id(p) } else { 0 };
                // Two paths of one prefix folding to one identifier (received
                // identifiers differing only in their high bits): the later
                // one takes the next free value.
                while addpath && out.iter().any(|(o, _)| *o == id) {
                    id = id.wrapping_add(1);
                }
                out.push((id, a));
            }
        }
        out
    }

    /// The attributes sent to the group for path `p` (with `attrs` after
    /// export policy): AS_PATH prepend and attribute scrubbing for eBGP,
    /// LOCAL_PREF and reflection attributes for iBGP, the next hop.
    fn transform(&self, g: &GroupKey, family: Family, p: &Path, attrs: &PathAttrs, src: Source) -> Option<PathAttrs> {
        let mut v: Vec<PathAttribute> = attrs
            .attributes
            .iter()
            .filter(|a| !matches!(a.value.code(), AttrCode::NEXT_HOP | AttrCode::AS4_PATH | AttrCode::AS4_AGGREGATOR))
            .cloned()
            .collect();
        if !v.iter().any(|a| a.value.code() == AttrCode::AS_PATH) {
            v.push(PathAttribute::new(Attr::AsPath(AsPath::default())));
        }
        if !v.iter().any(|a| a.value.code() == AttrCode::ORIGIN) {
            v.push(PathAttribute::new(Attr::Origin(crate::wire::Origin::Incomplete)));
        }
        if g.ibgp {
            if !v.iter().any(|a| a.value.code() == AttrCode::LOCAL_PREF) {
                v.push(PathAttribute::new(Attr::LocalPref(100)));
            }
            if matches!(src, Source::IbgpClient | Source::IbgpNonClient) {
                if let Some(cluster) = self.cfg.cluster_id {
                    let originator = self.infos.get(p.peer.0 as usize).and_then(Option::as_ref).map(|i| i.router_id);
                    if !v.iter().any(|a| a.value.code() == AttrCode::ORIGINATOR_ID) {
                        if let Some(o) = originator {
                            v.push(PathAttribute::new(Attr::OriginatorId(o)));
                        }
                    }
                    match v.iter_mut().find(|a| a.value.code() == AttrCode::CLUSTER_LIST) {
                        Some(PathAttribute { value: Attr::ClusterList(c), .. }) => c.insert(0, cluster),
                        _ => v.push(PathAttribute::new(Attr::ClusterList([cluster].into_iter().collect()))),
                    }
                }
            }
        } else {
            v.retain(|a| {
                let c = a.value.code();
                let internal = matches!(c, AttrCode::LOCAL_PREF | AttrCode::ORIGINATOR_ID | AttrCode::CLUSTER_LIST);
                // RFC 4271 §5.1.4: a MED received from one AS is not sent to another.
                !(internal || (c == AttrCode::MULTI_EXIT_DISC && src != Source::Local))
            });
            for a in v.iter_mut() {
                if let Attr::AsPath(path) = &mut a.value {
                    path.prepend(g.local_as, 1);
                }
            }
        }
        // Third-party next hop (RFC 4271 §5.1.3): towards an external peer on
        // a subnet we share, a learned route whose next hop is on that subnet
        // keeps it.
        let on_shared = |nh: Option<IpAddr>| match nh {
            Some(IpAddr::V4(a)) => g.shared_v4.is_some_and(|n| n.contains(&a)),
            Some(IpAddr::V6(a)) => g.shared_v6.is_some_and(|n| n.contains(&a)),
            None => false,
        };
        let keep = match g.next_hop_mode {
            NextHopMode::SelfAddr => false,
            NextHopMode::Keep => src != Source::Local,
            NextHopMode::Auto if g.ibgp => src != Source::Local && src != Source::Ebgp,
            NextHopMode::Auto => src != Source::Local && on_shared(attrs.next_hop),
        };
        let self_v4 = g.local_v4.map(IpAddr::V4);
        let self_v6 = g.local_v6.map(IpAddr::V6);
        let (next_hop, link_local) = if keep && attrs.next_hop.is_some() {
            (attrs.next_hop, attrs.link_local)
        } else if family == Family::IPV4_UNICAST {
            (self_v4.or(self_v6), None)
        } else {
            (self_v6, None)
        };
        let next_hop = next_hop?;
        if let (Family::IPV4_UNICAST, IpAddr::V4(a)) = (family, next_hop) {
            v.push(PathAttribute::new(Attr::NextHop(a)));
        }
        if self.graceful_shutdown {
            // RFC 8326 §4.1: this speaker is about to go away.
            super::attrs::add_community(&mut v, Community::GRACEFUL_SHUTDOWN);
            if g.ibgp {
                set_local_pref(&mut v, 0);
            }
        }
        v.sort_by_key(|a| a.value.code().0);
        Some(PathAttrs { attributes: v, next_hop: Some(next_hop), link_local, priority: None })
    }

    /// Decommissioning (RFC 8326): with `on`, every route this speaker sends
    /// carries the GRACEFUL_SHUTDOWN community, and LOCAL_PREF 0 towards
    /// iBGP peers, so that peers move traffic to other paths before the
    /// sessions close. Every established peer is sent its routes again.
    pub fn set_graceful_shutdown(&mut self, on: bool) {
        if self.graceful_shutdown == on {
            return;
        }
        self.flush();
        self.graceful_shutdown = on;
        if self.defer_until.is_some() {
            return;
        }
        let ups: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.session.is_some()))
            .map(|i| PeerId(i as u16))
            .collect();
        for p in ups {
            self.send_table(p, false);
        }
    }

    /// Whether [`Rib::set_graceful_shutdown`] is on.
    pub fn graceful_shutdown(&self) -> bool {
        self.graceful_shutdown
    }

    /// Exports what changed since the last flush to every update group.
    pub fn flush(&mut self) {
        if self.defer_until.is_some() {
            self.fams.v4.dirty.clear();
            self.fams.v6.dirty.clear();
            return;
        }
        if self.cfg.fib {
            let mut changes = Vec::new();
            fib_changes(&self.fams.v4.dirty, &mut changes);
            fib_changes(&self.fams.v6.dirty, &mut changes);
            if !changes.is_empty() {
                self.out.push_back(Output::Fib(changes));
            }
        }
        self.flush_family::<Ipv4Net>();
        self.flush_family::<Ipv6Net>();
        if self.interner.len() > 1024 && self.interner.len() > 2 * (self.paths_hint() + 1) {
            self.interner.sweep();
        }
    }

    fn paths_hint(&self) -> usize {
        (self.fams.v4.table.path_count() + self.fams.v6.table.path_count()).min(1 << 20)
    }

    fn flush_family<P: RibPrefix>(&mut self) {
        let dirty = std::mem::take(&mut P::fam(&mut self.fams).dirty);
        if dirty.is_empty() {
            return;
        }
        for state in self.peers.iter_mut().flatten() {
            let (Some(paused), Some(s)) = (state.paused.as_mut(), &state.session) else { continue };
            if s.families.contains(P::FAMILY) {
                hold(P::held(paused), &dirty);
            }
        }
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.members.is_empty() || !g.key.families.contains(P::FAMILY) {
                continue;
            }
            if g.key.mrai.is_zero() {
                self.export_group(gi, &dirty);
                continue;
            }
            // MRAI: changes join what the group holds; withdrawals go at once,
            // announcements when the interval since the last ones is over.
            let now = self.now;
            let group = &mut self.groups[gi];
            let waiting = group.held.until.is_some_and(|t| now.is_some_and(|n| n < t));
            let held = P::held(&mut group.held);
            hold(held, &dirty);
            let batch: FastMap<P, (Used, Used)> = if waiting {
                let gone: Vec<P> = held.iter().filter(|(_, (_, new))| new.is_empty()).map(|(p, _)| *p).collect();
                gone.into_iter().filter_map(|p| held.remove(&p).map(|v| (p, v))).collect()
            } else {
                std::mem::take(held)
            };
            self.send_held(gi, &batch, waiting);
        }
    }

    /// Exports a batch an MRAI group held (or let through), and starts its
    /// interval when the batch announced something.
    fn send_held<P: RibPrefix>(&mut self, gi: usize, batch: &FastMap<P, (Used, Used)>, waiting: bool) {
        if batch.is_empty() {
            return;
        }
        self.export_group(gi, batch);
        let announced = batch.values().any(|(_, new)| !new.is_empty());
        if let (false, true, Some(now)) = (waiting, announced, self.now) {
            let g = &mut self.groups[gi];
            g.held.until = Some(now + g.key.mrai);
        }
    }

    /// Releases what MRAI groups held once their interval is over.
    fn release_held(&mut self, now: Instant) {
        for gi in 0..self.groups.len() {
            let g = &mut self.groups[gi];
            if g.held.until.is_none_or(|t| t > now) {
                continue;
            }
            g.held.until = None;
            let v4 = std::mem::take(&mut g.held.v4);
            let v6 = std::mem::take(&mut g.held.v6);
            if g.members.is_empty() {
                continue;
            }
            self.send_held(gi, &v4, false);
            self.send_held(gi, &v6, false);
        }
    }

    /// Exports changes (prefix → used paths before, now) to one update group.
    fn export_group<P: RibPrefix>(&mut self, gi: usize, dirty: &FastMap<P, (Used, Used)>) {
        {
            let g = &self.groups[gi];
            let Some(policy) = self.peer(g.members[0]).map(|s| s.cfg.policy.clone()) else { return };
            let key = g.key.clone();
            let members = g.members.clone();
            // Members that are the source of a changed route get a stream
            // of their own (their routes are not sent back to them); the
            // others share one.
            let mut member = vec![false; self.peers.len()];
            members.iter().for_each(|m| member[m.0 as usize] = true);
            let mut sources: Vec<PeerId> = Vec::new();
            for (old, now) in dirty.values() {
                for p in old.iter().chain(now.iter()) {
                    if !p.peer.is_local() && member.get(p.peer.0 as usize) == Some(&true) && !sources.contains(&p.peer)
                    {
                        sources.push(p.peer);
                    }
                }
            }
            let mut cache = ExportCache::default();
            let shared: Vec<PeerId> = members.iter().copied().filter(|m| !sources.contains(m)).collect();
            let mut streams: Vec<(Vec<PeerId>, Option<PeerId>)> =
                sources.iter().map(|s| (vec![*s], Some(*s))).collect();
            if !shared.is_empty() {
                streams.push((shared, None));
            }
            for (to, exclude) in streams {
                let mut build = Build::<P>::new(&key);
                for (prefix, (old, now)) in dirty {
                    let a = self.export(&key, &*policy, *prefix, old, exclude, &mut cache);
                    let b = self.export(&key, &*policy, *prefix, now, exclude, &mut cache);
                    build.diff(*prefix, &a, &b);
                }
                self.emit(to, &key, build);
            }
        }
    }

    /// Sends `peer` the whole table of its families (and End-of-RIB).
    fn send_table(&mut self, peer: PeerId, eor: bool) {
        let Some(fams) = self.peer(peer).and_then(|s| s.session.as_ref()).map(|s| s.families) else { return };
        for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            if !fams.contains(f) {
                continue;
            }
            if f == Family::IPV4_UNICAST {
                self.send_family::<Ipv4Net>(peer);
            } else {
                self.send_family::<Ipv6Net>(peer);
            }
            if eor {
                self.out.push_back(Output::Message(peer, Message::Update(Update::end_of_rib(f))));
            }
        }
    }

    fn send_family<P: RibPrefix>(&mut self, peer: PeerId) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        let key = self.group_key(&state.cfg, s);
        let policy = state.cfg.policy.clone();
        let mut cache = ExportCache::default();
        let mut build = Build::<P>::new(&key);
        for (prefix, paths) in P::fam_ref(&self.fams).table.iter() {
            let used: SmallVec<[Path; 1]> = paths.iter().take_while(|p| p.is_used()).cloned().collect();
            let b = self.export(&key, &*policy, *prefix, &used, Some(peer), &mut cache);
            build.diff(*prefix, &[], &b);
        }
        self.emit(vec![peer], &key, build);
    }

    fn emit<P: RibPrefix>(&mut self, peers: Vec<PeerId>, key: &GroupKey, build: Build<P>) {
        if build.withdrawn.is_empty() && build.order.is_empty() {
            return;
        }
        let tx = key.tx();
        let mut messages = Vec::new();
        let mut encode = |r: Result<Vec<BytesMut>, crate::EncodeError>, what: &str| match r {
            Ok(v) => messages.extend(v.into_iter().map(BytesMut::freeze)),
            Err(e) => self.out.push_back(Output::Warning(peers[0], format!("cannot encode {what}: {e}"))),
        };
        if !build.withdrawn.is_empty() {
            encode(pack_withdrawals(P::FAMILY, P::announcement(&build.withdrawn), &tx), "withdrawals");
        }
        let mut announced = build.announced;
        for ptr in &build.order {
            let Some((attrs, nlri)) = announced.remove(ptr) else { continue };
            let Some(nh) = next_hop(&attrs) else { continue };
            encode(pack_announcements(P::FAMILY, &attrs.attributes, &nh, P::announcement(&nlri), &tx), "announcements");
        }
        if !messages.is_empty() {
            self.out.push_back(Output::Send { peers, messages });
        }
    }

    // ----- queries -----

    /// Every path to the prefixes `filter` selects (all when `None`; a
    /// prefix selects itself, the prefixes inside it and those covering its
    /// address), best first, with why each unused one lost.
    pub fn routes(&self, filter: Option<IpNet>) -> Vec<(IpNet, Vec<PathView>)> {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let wanted = |p: IpNet| filter.is_none_or(|f| f.contains(&p) || p.contains(&f.addr()));
        let mut out: Vec<(IpNet, Vec<PathView>)> = Vec::new();
        for (pfx, paths) in self.fams.v4.table.iter() {
            if wanted(IpNet::V4(*pfx)) {
                out.push((IpNet::V4(*pfx), self.view(paths, self.fams.v4.table.reasons(pfx, &d))));
            }
        }
        for (pfx, paths) in self.fams.v6.table.iter() {
            if wanted(IpNet::V6(*pfx)) {
                out.push((IpNet::V6(*pfx), self.view(paths, self.fams.v6.table.reasons(pfx, &d))));
            }
        }
        out.sort_by_key(|a| a.0);
        out
    }

    fn view(&self, paths: &[Path], reasons: Vec<Option<Reason>>) -> Vec<PathView> {
        paths
            .iter()
            .zip(reasons)
            .enumerate()
            .map(|(i, (p, reason))| PathView {
                peer: if p.peer.is_local() { None } else { self.peer_name(p.peer).map(str::to_string) },
                path_id: p.path_id,
                best: i == 0 && p.is_used(),
                used: p.is_used(),
                stale: p.is_stale(),
                reason,
                attrs: p.attrs.clone(),
            })
            .collect()
    }

    /// The used paths of `prefix` (best first): what the FIB installs.
    pub fn used(&self, prefix: IpNet) -> Vec<Path> {
        match prefix {
            IpNet::V4(p) => self.fams.v4.table.used(&p).into_vec(),
            IpNet::V6(p) => self.fams.v6.table.used(&p).into_vec(),
        }
    }

    /// Sizes.
    pub fn stats(&self) -> RibStats {
        let attr_bytes = self.interner.len()
            * (std::mem::size_of::<PathAttrs>() + 16 + 4 * std::mem::size_of::<PathAttribute>() + 8);
        RibStats {
            prefixes: [self.fams.v4.table.len(), self.fams.v6.table.len()],
            paths: self.fams.v4.table.path_count() + self.fams.v6.table.path_count(),
            attr_sets: self.interner.len(),
            groups: self.groups.iter().filter(|g| !g.members.is_empty()).count(),
            bytes: self.fams.v4.table.heap_bytes() + self.fams.v6.table.heap_bytes() + attr_bytes,
        }
    }
}

/// Outgoing attribute sets made during one export run: by source set and
/// peer (the usual case: every prefix with one source set shares one), and
/// by value (so that sets a policy modified per prefix still pack together).
#[derive(Default)]
struct ExportCache {
    by_source: FastMap<(*const PathAttrs, PeerId), Option<Arc<PathAttrs>>>,
    by_value: std::collections::HashSet<Arc<PathAttrs>, foldhash::fast::RandomState>,
}

impl ExportCache {
    fn share(&mut self, a: PathAttrs) -> Arc<PathAttrs> {
        if let Some(x) = self.by_value.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.by_value.insert(x.clone());
        x
    }
}

/// What the decision process reads, from the RIB's fields (a function, not
/// a method: the callers hold the tables mutably at the same time).
fn decision_input<'a>(
    infos: &'a [Option<PeerInfo>],
    cfg: &RibConfig,
    reach: &'a (dyn Fn(Option<IpAddr>) -> Option<u32> + Send),
) -> DecisionInput<'a> {
    DecisionInput { peers: infos, local_as: cfg.local_as, opts: cfg.decision, max_paths: cfg.max_paths, reach }
}

/// The forwarding changes among changed prefixes.
fn fib_changes<P: RibPrefix>(dirty: &FastMap<P, (Used, Used)>, out: &mut Vec<FibRoute>) {
    for (prefix, (old, new)) in dirty {
        let (a, b) = (forwarding(old), forwarding(new));
        if a != b {
            out.push(FibRoute { prefix: (*prefix).into(), next_hops: b.into_vec() });
        }
    }
}

/// The path identifier a path is sent with (ADD-PATH): stable for as long
/// as the path exists, distinct between peers.
fn out_path_id(p: &Path) -> u32 {
    (u32::from(p.peer.0.wrapping_add(1)) << 16) | ((p.path_id ^ (p.path_id >> 16)) & 0xffff)
}

fn next_hop(a: &PathAttrs) -> Option<NextHop> {
    match a.next_hop? {
        IpAddr::V4(v) => Some(NextHop::V4(v)),
        IpAddr::V6(global) => Some(NextHop::V6 { global, link_local: a.link_local }),
    }
}

/// UPDATE contents being collected for one group: withdrawals, and
/// announcements by attribute set in first-seen order.
struct Build<P> {
    addpath: bool,
    withdrawn: Vec<Nlri<P>>,
    announced: FastMap<*const PathAttrs, (Arc<PathAttrs>, Vec<Nlri<P>>)>,
    order: Vec<*const PathAttrs>,
}

impl<P: RibPrefix> Build<P> {
    fn new(key: &GroupKey) -> Self {
        Build {
            addpath: key.add_path.contains(P::FAMILY),
            withdrawn: Vec::new(),
            announced: FastMap::default(),
            order: Vec::new(),
        }
    }

    /// Adds what turns `old` (sent before) into `new`.
    fn diff(&mut self, prefix: P, old: &[(u32, Arc<PathAttrs>)], new: &[(u32, Arc<PathAttrs>)]) {
        for (id, _) in old {
            if !new.iter().any(|(n, _)| n == id) {
                self.withdrawn.push(Nlri { path_id: self.addpath.then_some(*id), prefix });
            }
        }
        for (id, a) in new {
            if old.iter().any(|(o, b)| o == id && (Arc::ptr_eq(a, b) || a == b)) {
                continue;
            }
            let ptr = Arc::as_ptr(a);
            let entry = self.announced.entry(ptr).or_insert_with(|| {
                self.order.push(ptr);
                (a.clone(), Vec::new())
            });
            entry.1.push(Nlri { path_id: self.addpath.then_some(*id), prefix });
        }
    }
}

/// RFC 6793 §4.2.3, for an UPDATE from a 2-octet AS speaker: AS_PATH with
/// AS4_PATH merged in, and an AGGREGATOR naming AS_TRANS replaced by
/// AS4_AGGREGATOR (both left alone when AGGREGATOR names another AS: the
/// AS4_* attributes then came from elsewhere).
fn reconcile_as4(attributes: &mut [PathAttribute], u: &Update) {
    let Some(path) = u.effective_as_path() else { return };
    let as4_aggregator = match u.attr(AttrCode::AS4_AGGREGATOR) {
        Some(Attr::As4Aggregator(a)) => Some(*a),
        _ => None,
    };
    for x in attributes.iter_mut() {
        match &mut x.value {
            Attr::AsPath(old) => *old = path.clone(),
            Attr::Aggregator(agg) if agg.asn == AS_TRANS => {
                if let Some(a4) = as4_aggregator {
                    *agg = a4;
                }
            }
            _ => {}
        }
    }
}

/// Sets LOCAL_PREF in `attributes` to `value` (added if missing).
fn set_local_pref(attributes: &mut Vec<PathAttribute>, value: u32) {
    match attributes.iter_mut().find(|a| a.value.code() == AttrCode::LOCAL_PREF) {
        Some(a) => a.value = Attr::LocalPref(value),
        None => attributes.push(PathAttribute::new(Attr::LocalPref(value))),
    }
}
