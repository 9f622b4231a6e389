//! Why a prefix is (or is not) advertised to each peer and used for
//! forwarding: `bgpd explain` on a running node, and the design simulator's
//! `--explain`. The answer is typed ([`Explanation`]); putting it into words
//! is the caller's business.
//!
//! Export is explained by running the same steps the RIB runs when it sends
//! ([`Rib::export_path`]): which used paths a peer may be sent (best only, or
//! with ADD-PATH up to its limit), split horizon, route reflection, the
//! peer's policy (the rule that decided, or Calico's default), the next hop.
//! Import is explained from the peer's paths in the RIB, else from the copy
//! kept before policy ([`PeerConfig::keep_received`](super::PeerConfig::keep_received)),
//! else from the last reason the RIB dropped the prefix from that peer, which
//! it records per peer (bounded by [`REJECTIONS_KEPT`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use crate::rib::attrs::PathAttrs;
use crate::rib::checks::Ignored;
use crate::rib::decision::{multipath_equal, Reason};
use crate::rib::policy::{DecidedBy, DefaultExport, Direction, ExportRange, Filter, PeerPolicy, Rule};
use crate::rib::table::{FastMap, Path, PeerId};

use super::export::{ExportCache, NotSent};
use super::{decision_input, forwarding, PeerState, Rib, RibPrefix};

/// How many import rejections the RIB remembers per peer (the last reason per
/// prefix). A peer whose routes are rejected by the thousand fills it once;
/// then further prefixes are explained as "not received, or rejected".
pub const REJECTIONS_KEPT: usize = 1024;

/// Why the RIB dropped a route a peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The UPDATE was malformed and RFC 7606 says treat-as-withdraw.
    TreatAsWithdraw,
    /// AS_PATH holds this AS (the local AS of the session, or the node's)
    /// more often than `numAllowedLocalASNumbers` allows: an AS-path loop
    /// (RFC 4271 §9.1.2).
    AsPathLoop {
        /// The AS found in the path.
        asn: u32,
        /// How often it may appear.
        allowed: u32,
    },
    /// ORIGINATOR_ID is this speaker's router ID: its own route reflected
    /// back (RFC 4456 §8).
    OriginatorIsSelf,
    /// CLUSTER_LIST holds this speaker's cluster ID: a reflection loop (RFC 4456 §8).
    ClusterLoop,
    /// AS_CONFED segments from an eBGP peer (RFC 5065 §5, RFC 7606 §7.2).
    ConfedFromExternal,
    /// An unusable next hop (RFC 4271 §6.3, RFC 7606 §7.3, RFC 8950 §4).
    NextHop {
        /// Which check.
        kind: Ignored,
        /// The next hop.
        addr: IpAddr,
    },
    /// Import policy.
    Policy(PolicyStep),
}

/// The step of a peer's policy that decided, with what an explanation names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStep {
    /// A BGPFilter rule.
    Rule {
        /// The filter.
        filter: Arc<Filter>,
        /// Import or export.
        direction: Direction,
        /// The IPv6 list (`importV6`, `exportV6`) rather than the IPv4 one.
        v6: bool,
        /// The rule's index in that list (0-based).
        index: usize,
    },
    /// No rule matched; Calico imports everything then.
    ImportDefault,
    /// No rule matched; the peer is sent everything ([`DefaultExport::All`]).
    ExportAll,
    /// No rule matched; Calico's default export sends this node's own routes.
    OwnRoute,
    /// No rule matched; a learned route inside a range Calico exports.
    InRange(ExportRange),
    /// No rule matched; a learned route inside an IPPool with `disableBGPExport`.
    ExportDisabled(ExportRange),
    /// No rule matched; a learned route outside every range Calico exports
    /// (IP pools, service ranges): not passed on, the node is no transit.
    NotExportable,
}

impl PolicyStep {
    /// The step `by` of `policy`, for a route of `prefix` in `direction`.
    pub fn of(policy: &PeerPolicy, direction: Direction, prefix: IpNet, by: DecidedBy) -> PolicyStep {
        let range = |i: usize| policy.range(i).cloned();
        match by {
            DecidedBy::Rule { filter, rule } => match policy.filters.get(filter) {
                Some(f) => {
                    PolicyStep::Rule { filter: f.clone(), direction, v6: matches!(prefix, IpNet::V6(_)), index: rule }
                }
                // Indices come from evaluating this very policy.
                None => PolicyStep::NotExportable,
            },
            DecidedBy::ImportDefault => PolicyStep::ImportDefault,
            DecidedBy::ExportAll => PolicyStep::ExportAll,
            DecidedBy::OwnRoute => PolicyStep::OwnRoute,
            DecidedBy::InRange(i) => range(i).map_or(PolicyStep::NotExportable, PolicyStep::InRange),
            DecidedBy::ExportDisabled(i) => range(i).map_or(PolicyStep::NotExportable, PolicyStep::ExportDisabled),
            DecidedBy::NotExportable => PolicyStep::NotExportable,
        }
    }

    /// The rule, for [`PolicyStep::Rule`].
    pub fn rule(&self) -> Option<&Rule> {
        match self {
            PolicyStep::Rule { filter, direction, v6, index } => filter.rules(*direction, *v6).get(*index),
            _ => None,
        }
    }
}

/// Everything the RIB can say about one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The prefix.
    pub prefix: IpNet,
    /// Every path to it, best first, with why each unused one is not used.
    pub paths: Vec<PathExplanation>,
    /// What the kernel is given for it.
    pub forwarding: Forwarding,
    /// Whether this RIB hands forwarding changes to the kernel at all
    /// ([`RibConfig::fib`](super::RibConfig::fib)).
    pub fib: bool,
    /// Selection deferral after a restart is in progress (RFC 4724 §4.1):
    /// nothing is exported or installed before it ends; the peer
    /// explanations say what will be sent then.
    pub deferring: bool,
    /// The ranges of Calico's default export that contain the prefix (as
    /// the peers' policies hold them), most specific last; empty when none
    /// does or no peer has Calico's default.
    pub export_ranges: Vec<ExportRange>,
    /// Per peer, in the order they were added.
    pub peers: Vec<PeerExplanation>,
}

/// One path to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathExplanation {
    /// Where it comes from.
    pub source: PathSource,
    /// ADD-PATH identifier it was received with (0 without).
    pub path_id: u32,
    /// Its attributes, after import policy.
    pub attrs: Arc<PathAttrs>,
    /// Kept while its peer restarts or re-sends (graceful restart, enhanced refresh).
    pub stale: bool,
    /// Whether it is used, and if not why.
    pub status: PathStatus,
}

/// Where a path comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSource {
    /// Originated by this node.
    Originated,
    /// Learned from a peer.
    Peer {
        /// The peer's name.
        name: String,
        /// Its address.
        addr: IpAddr,
        /// The kind of session.
        kind: PeerKind,
    },
}

/// The kind of a session, as route reflection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// External BGP.
    Ebgp,
    /// Internal BGP, not a route reflector client of this node.
    Ibgp,
    /// Internal BGP, a route reflector client of this node.
    IbgpClient,
}

/// Whether a path is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStatus {
    /// The best path.
    Best,
    /// Equal to the best down to the IGP cost: shares the traffic (ECMP).
    Multipath,
    /// Equal to the best, but the ECMP set is full (`bgpd.io/max-paths`).
    EcmpFull {
        /// The ECMP width.
        max_paths: usize,
    },
    /// Lost to the best at this step of the decision process (when no path
    /// is usable at all: [`Reason::NextHopUnreachable`]).
    Lost(Reason),
}

/// What the kernel is given for the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// The best path is this node's own: no learned route (the daemon
    /// installs what an origination needs, a blackhole for a block).
    Originated,
    /// A learned route through these next hops (best path's first; several: ECMP).
    Learned(Vec<IpAddr>),
    /// Paths exist, none usable: every next hop is unreachable.
    NoUsablePath,
    /// No path at all.
    NoRoute,
}

/// One peer and the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerExplanation {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// The kind of session.
    pub kind: PeerKind,
    /// What it sent of the prefix.
    pub import: Import,
    /// What it is sent.
    pub export: Export,
}

/// What a peer sent of the prefix, as far as the RIB knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Import {
    /// This many of its paths are in the RIB (see [`Explanation::paths`]).
    InRib(usize),
    /// No session with it, and none of its paths kept.
    NoSession,
    /// Its session did not negotiate the prefix's family.
    FamilyNotNegotiated,
    /// It sent the prefix and the RIB dropped it (the last time, for this reason).
    Rejected(Rejection),
    /// It did not send the prefix: certain, the copy kept before import
    /// policy ([`PeerConfig::keep_received`](super::PeerConfig::keep_received)) has nothing.
    NotReceived,
    /// Not in the RIB: not received, or rejected on import without a record
    /// (`unrecorded`: more than [`REJECTIONS_KEPT`] rejections of this peer
    /// are pending, so a rejection may have gone unrecorded).
    NotInRib {
        /// Rejections may have gone unrecorded.
        unrecorded: bool,
    },
}

/// What a peer is sent for the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// No session: nothing is sent.
    NoSession,
    /// Its session did not negotiate the prefix's family.
    FamilyNotNegotiated,
    /// Per path of [`Explanation::paths`], whether and how it is sent.
    Paths {
        /// One per path, in the same order.
        paths: Vec<PathExport>,
        /// Export to the peer is paused (it does not read what it is sent):
        /// the outcomes are what it gets once it catches up.
        paused: bool,
        /// The update group's MRAI holds a change of the prefix back until then.
        held_until: Option<Instant>,
    },
}

/// Whether one path is sent to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathExport {
    /// Sent, with these attributes (after policy and this speaker's changes).
    Sent {
        /// ADD-PATH identifier, when ADD-PATH send is negotiated.
        path_id: Option<u32>,
        /// The attributes sent.
        attrs: Arc<PathAttrs>,
        /// The policy step that let it through.
        by: PolicyStep,
        /// The peer will drop it on receipt.
        dropped_by_peer: Option<PeerDrops>,
    },
    /// Not used here (not best, not in the ECMP set): only used paths are sent.
    NotUsed,
    /// In the ECMP set, but without ADD-PATH only the best path is sent.
    OnlyBestWithoutAddPath,
    /// With ADD-PATH, beyond the paths the peer is sent (`bgpd.io/add-path-send-count`).
    AddPathLimit(u8),
    /// Learned from this peer: a route never goes back to where it came from.
    FromThisPeer,
    /// Learned over iBGP and the peer is iBGP: not passed on (RFC 4456 §8
    /// split horizon), because this node is no route reflector (`reflector`
    /// false) or reflects only to and from its clients.
    IbgpSplitHorizon {
        /// This node is a route reflector.
        reflector: bool,
    },
    /// Long-lived stale (LLGR_STALE) and the peer did not send the LLGR
    /// capability: withdrawn towards it (RFC 9494 §4.5).
    LongLivedStale,
    /// Rejected by export policy.
    Rejected(PolicyStep),
    /// No next hop of the family to send it with (no address of that family on the session).
    NoNextHop,
}

/// Why a peer drops a route it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDrops {
    /// Its own AS is in the AS_PATH it receives (RFC 4271 §9.1.2), unless it allows its own AS in.
    AsPathLoop(u32),
    /// The route's ORIGINATOR_ID is its own router ID (RFC 4456 §8).
    OriginatorIsPeer,
}

impl Rib {
    /// Why `prefix` (exactly that prefix) is or is not advertised to each
    /// peer and used for forwarding.
    pub fn explain(&self, prefix: IpNet) -> Explanation {
        match prefix.trunc() {
            IpNet::V4(p) => self.explain_in::<Ipv4Net>(p),
            IpNet::V6(p) => self.explain_in::<Ipv6Net>(p),
        }
    }

    fn explain_in<P: RibPrefix>(&self, prefix: P) -> Explanation {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let table = &P::fam_ref(&self.fams).table;
        let paths: Vec<Path> = table.get(&prefix).map(|p| p.to_vec()).unwrap_or_default();
        let reasons = table.reasons(&prefix, &d);
        let best = paths.first().filter(|p| p.is_used()).map(|p| d.candidate(p));
        let explained = paths
            .iter()
            .zip(reasons)
            .enumerate()
            .map(|(i, (p, reason))| {
                let status = match (i, p.is_used(), &best) {
                    (0, true, _) => PathStatus::Best,
                    (_, true, _) => PathStatus::Multipath,
                    (_, false, Some(b)) if multipath_equal(b, &d.candidate(p), self.cfg.decision) => {
                        PathStatus::EcmpFull { max_paths: self.cfg.max_paths }
                    }
                    _ => PathStatus::Lost(reason.unwrap_or(Reason::NextHopUnreachable)),
                };
                PathExplanation {
                    source: self.path_source(p),
                    path_id: p.path_id,
                    attrs: p.attrs.clone(),
                    stale: p.is_stale(),
                    status,
                }
            })
            .collect();
        let used: SmallVec<[Path; 1]> = paths.iter().take_while(|p| p.is_used()).cloned().collect();
        let forwarding = match used.first() {
            None if paths.is_empty() => Forwarding::NoRoute,
            None => Forwarding::NoUsablePath,
            Some(p) if p.peer.is_local() => Forwarding::Originated,
            Some(_) => Forwarding::Learned(forwarding(&used).into_vec()),
        };
        let net: IpNet = prefix.into();
        let export_ranges = self
            .peers
            .iter()
            .flatten()
            .find_map(|s| match &s.cfg.policy.default_export {
                DefaultExport::Calico(r) => Some(r),
                DefaultExport::All => None,
            })
            .map(|r| {
                let mut v: Vec<ExportRange> = r.iter().filter(|r| r.cidr.contains(&net)).cloned().collect();
                v.sort_by_key(|r| r.cidr.prefix_len());
                v
            })
            .unwrap_or_default();
        let peers = (0..self.peers.len())
            .filter_map(|i| {
                let id = PeerId(i as u16);
                let s = self.peer(id)?;
                Some(PeerExplanation {
                    name: s.cfg.name.clone(),
                    addr: s.cfg.addr,
                    kind: kind(s),
                    import: self.explain_import(id, s, prefix, &paths),
                    export: self.explain_export(id, s, prefix, &paths, &used),
                })
            })
            .collect();
        Explanation {
            prefix: net,
            paths: explained,
            forwarding,
            fib: self.cfg.fib,
            deferring: self.defer_until.is_some(),
            export_ranges,
            peers,
        }
    }

    fn path_source(&self, p: &Path) -> PathSource {
        match self.peer(p.peer) {
            Some(s) if !p.peer.is_local() => {
                PathSource::Peer { name: s.cfg.name.clone(), addr: s.cfg.addr, kind: kind(s) }
            }
            _ => PathSource::Originated,
        }
    }

    fn explain_import<P: RibPrefix>(&self, id: PeerId, s: &PeerState, prefix: P, paths: &[Path]) -> Import {
        let mine = paths.iter().filter(|p| p.peer == id).count();
        if mine > 0 {
            return Import::InRib(mine);
        }
        let Some(session) = &s.session else { return Import::NoSession };
        if !session.families.contains(P::FAMILY) {
            return Import::FamilyNotNegotiated;
        }
        let net: IpNet = prefix.into();
        if s.cfg.keep_received {
            // The copy before policy says what import policy does with it now.
            let received = P::received_ref(&s.received);
            let kept =
                received.get(&(prefix, 0)).or_else(|| received.iter().find(|((p, _), _)| *p == prefix).map(|(_, a)| a));
            if let Some(attrs) = kept {
                let d = s.cfg.policy.import(net, attrs);
                if !d.accept {
                    return Import::Rejected(Rejection::Policy(PolicyStep::of(
                        &s.cfg.policy,
                        Direction::Import,
                        net,
                        d.by,
                    )));
                }
            }
            return match s.rejected.get(&net) {
                Some(r) => Import::Rejected(r.clone()),
                None => Import::NotReceived,
            };
        }
        match s.rejected.get(&net) {
            Some(r) => Import::Rejected(r.clone()),
            None => Import::NotInRib { unrecorded: s.rejected.len() >= REJECTIONS_KEPT },
        }
    }

    fn explain_export<P: RibPrefix>(
        &self,
        id: PeerId,
        s: &PeerState,
        prefix: P,
        paths: &[Path],
        used: &[Path],
    ) -> Export {
        let Some(session) = &s.session else { return Export::NoSession };
        if !session.families.contains(P::FAMILY) {
            return Export::FamilyNotNegotiated;
        }
        let key = self.group_key(&s.cfg, session);
        let mut cache = ExportCache::default();
        // What the peer is sent, exactly as the RIB sends it (path identifiers included).
        let sent = self.export(&key, prefix, used, Some(id), &mut cache);
        let mut sent = sent.into_iter();
        let addpath = key.add_path.contains(P::FAMILY);
        let limit = if addpath && key.add_path_send > 0 { key.add_path_send as usize } else { usize::MAX };
        let mut chosen = 0;
        let peer_id = self.infos.get(id.0 as usize).and_then(Option::as_ref).map(|i| i.router_id);
        let net: IpNet = prefix.into();
        let outcomes = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if !p.is_used() {
                    return PathExport::NotUsed;
                }
                if !addpath && i > 0 {
                    return PathExport::OnlyBestWithoutAddPath;
                }
                if p.peer == id {
                    return PathExport::FromThisPeer;
                }
                if !key.long_lived && p.attrs.is_llgr_stale() {
                    return PathExport::LongLivedStale;
                }
                chosen += 1;
                if chosen > limit {
                    return PathExport::AddPathLimit(key.add_path_send);
                }
                match self.export_path(&key, net, P::FAMILY, p, &mut cache) {
                    Err(NotSent::Reflection) => {
                        PathExport::IbgpSplitHorizon { reflector: self.cfg.cluster_id.is_some() }
                    }
                    Err(NotSent::Policy(by)) => {
                        PathExport::Rejected(PolicyStep::of(&key.policy, Direction::Export, net, by))
                    }
                    Err(NotSent::NoNextHop) => PathExport::NoNextHop,
                    Ok((attrs, by)) => {
                        // The same path, as `export` encoded it.
                        let (out_id, attrs) = sent.next().unwrap_or((0, attrs));
                        let drops = if !key.ibgp && attrs.as_path_ref().is_some_and(|a| a.count(s.cfg.peer_as) > 0) {
                            Some(PeerDrops::AsPathLoop(s.cfg.peer_as))
                        } else if key.ibgp && peer_id.is_some() && attrs.originator_id() == peer_id {
                            Some(PeerDrops::OriginatorIsPeer)
                        } else {
                            None
                        };
                        PathExport::Sent {
                            path_id: addpath.then_some(out_id),
                            attrs,
                            by: PolicyStep::of(&key.policy, Direction::Export, net, by),
                            dropped_by_peer: drops,
                        }
                    }
                }
            })
            .collect();
        let group = s.group.and_then(|g| self.groups.get(g));
        let held_until = group.filter(|g| P::held_ref(&g.held).contains_key(&prefix)).and_then(|g| g.held.until);
        Export::Paths { paths: outcomes, paused: s.paused.is_some(), held_until }
    }

    /// Remembers why a prefix from `peer` was dropped (bounded per peer).
    pub(super) fn note_rejection(&mut self, peer: PeerId, prefix: IpNet, why: Rejection) {
        let Some(s) = self.peer_mut(peer) else { return };
        if s.rejected.len() < REJECTIONS_KEPT || s.rejected.contains_key(&prefix) {
            s.rejected.insert(prefix, why);
        }
    }

    /// Forgets why a prefix from `peer` was dropped (it was withdrawn or accepted since).
    pub(super) fn forget_rejection(&mut self, peer: PeerId, prefix: IpNet) {
        if let Some(s) = self.peer_mut(peer).filter(|s| !s.rejected.is_empty()) {
            s.rejected.remove(&prefix);
        }
    }
}

fn kind(s: &PeerState) -> PeerKind {
    match (s.cfg.ebgp(), s.cfg.rr_client) {
        (true, _) => PeerKind::Ebgp,
        (false, true) => PeerKind::IbgpClient,
        (false, false) => PeerKind::Ibgp,
    }
}

/// The rejections of one peer, by prefix.
pub(super) type Rejections = FastMap<IpNet, Rejection>;
