//! Route policy: Calico's `BGPFilter` rules, evaluated per prefix.
//!
//! A BGPPeer names BGPFilters (`spec.filters`) in order. Each filter holds four
//! ordered rule lists: `importV4`, `exportV4`, `importV6`, `exportV6`. For a route,
//! the lists of its direction and address family are walked filter by filter, rule
//! by rule; the **first** rule whose conditions all hold decides: `Accept` (after
//! applying the rule's operations, in order) or `Reject`. This module is that
//! evaluation and the application of operations: plain data and pure functions, no
//! datastore types, no I/O.
//!
//! # When no rule matches
//!
//! [`evaluate`] then answers [`Verdict::NoMatch`] and the caller applies what Calico
//! does after its filter functions ([`fallback`]). Calico renders each BGPPeer's
//! filters as BIRD functions called at the top of the session's filters
//! (confd `bgp_processor.go`, `buildImportFilter` / `buildExportFilter`, and
//! `template_funcs.go`, `BGPFilterBIRDFuncs`; projectcalico/calico):
//!
//! - **import**: the filter calls are followed by `accept;` ("import all", as before
//!   BGPFilter existed): an unmatched route is accepted unchanged
//!   ([`Fallback::Accept`]).
//! - **export**: the filter calls are followed by `calico_export_to_bgp_peers(sameAS);
//!   reject;`, Calico's ordinary export policy (reject IP pools with
//!   `disableBGPExport`, reject tunnel routes towards iBGP peers, add the
//!   `prefixAdvertisements` communities, accept IP pool, static and allow-listed
//!   routes, reject the rest): an unmatched route goes through that policy
//!   ([`Fallback::DefaultExport`]). Calico's documentation says the default action is
//!   Accept; on export that is only true of routes its ordinary policy accepts.
//!
//! Because BIRD's `accept;` and `reject;` end the whole filter, a route that an
//! export rule **accepts** is exported without Calico's ordinary export policy: in
//! particular it does not get the BGPConfiguration's `prefixAdvertisements`
//! communities, and an export rule can announce a route (say, one learned from an
//! eBGP peer) that the ordinary policy would have held back.
//!
//! # Where the RIB evaluates
//!
//! On import, before the route enters Adj-RIB-In/Loc-RIB, with the attributes as
//! received. On export, per peer, with the attributes before this speaker's own
//! changes for that peer (BIRD runs the export filter before it prepends its own AS
//! and sets the next hop): an export `prependASPath` therefore ends up *after* the
//! local AS that an eBGP session adds in front.

use std::sync::Arc;

use ipnet::IpNet;
use smallvec::smallvec;

use super::attrs::PathAttrs;
use crate::wire::{AsPath, Attr, Community, LargeCommunity, PathAttribute, SegmentKind};

/// One BGPFilter: its name and its four ordered rule lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// `metadata.name`, for logs and `bgpd show`.
    pub name: String,
    /// `exportV4`: rules for IPv4 routes sent to the peer.
    pub export_v4: Vec<Rule>,
    /// `importV4`: rules for IPv4 routes received from the peer.
    pub import_v4: Vec<Rule>,
    /// `exportV6`: rules for IPv6 routes sent to the peer.
    pub export_v6: Vec<Rule>,
    /// `importV6`: rules for IPv6 routes received from the peer.
    pub import_v6: Vec<Rule>,
}

impl Filter {
    /// The rule list for a direction and address family.
    pub fn rules(&self, dir: Direction, v6: bool) -> &[Rule] {
        match (dir, v6) {
            (Direction::Import, false) => &self.import_v4,
            (Direction::Export, false) => &self.export_v4,
            (Direction::Import, true) => &self.import_v6,
            (Direction::Export, true) => &self.export_v6,
        }
    }
}

/// One rule: conditions (all optional, all must hold), an action, and operations.
/// A rule without conditions matches every route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `cidr` + `matchOperator` (+ `prefixLength`): a condition on the prefix.
    pub cidr: Option<CidrMatch>,
    /// `source`: where the route came from.
    pub source: Option<Source>,
    /// `interface`: a pattern for the route's outgoing interface (`*` matches any
    /// run of characters, `?` one character, as in BIRD's `ifname ~ "…"`). A route
    /// whose interface is unknown does not match.
    pub interface: Option<String>,
    /// `peerType`: the kind of session the route is received from or sent to.
    pub peer_type: Option<PeerType>,
    /// `communities.values` (Calico allows exactly one): a community the route carries.
    pub community: Option<CommunityValue>,
    /// `asPathPrefix`: AS numbers the AS_PATH must start with, in order (empty: any).
    pub as_path_prefix: Option<Vec<u32>>,
    /// `priority`: the route's priority ([`PathAttrs::priority`]) must equal this; a
    /// route without a priority does not match.
    pub priority: Option<u32>,
    /// `action`.
    pub action: Action,
    /// `operations`, applied in order when the rule accepts (Calico allows them only
    /// with `Accept`; they are ignored with `Reject`).
    pub operations: Vec<Operation>,
}

impl Rule {
    /// A rule with no conditions and no operations.
    pub fn new(action: Action) -> Rule {
        Rule {
            cidr: None,
            source: None,
            interface: None,
            peer_type: None,
            community: None,
            as_path_prefix: None,
            priority: None,
            action,
            operations: Vec::new(),
        }
    }

    /// Whether the rule has no condition at all (it matches every route).
    pub fn is_unconditional(&self) -> bool {
        self.cidr.is_none()
            && self.source.is_none()
            && self.interface.is_none()
            && self.peer_type.is_none()
            && self.community.is_none()
            && self.as_path_prefix.as_ref().is_none_or(Vec::is_empty)
            && self.priority.is_none()
    }

    /// Whether all conditions hold for the route.
    pub fn matches(&self, ctx: &RouteContext<'_>) -> bool {
        // Cheapest and most selective conditions first.
        if let Some(p) = self.peer_type {
            if p != ctx.peer_type {
                return false;
            }
        }
        if self.source == Some(Source::RemotePeers) && !ctx.from_remote_peer {
            return false;
        }
        if let Some(c) = &self.cidr {
            if !c.matches(ctx.prefix) {
                return false;
            }
        }
        if let Some(p) = self.priority {
            if ctx.attrs.priority != Some(p) {
                return false;
            }
        }
        if let Some(pattern) = &self.interface {
            match ctx.interface {
                Some(name) if glob_match(pattern.as_bytes(), name.as_bytes()) => {}
                _ => return false,
            }
        }
        if let Some(c) = &self.community {
            if !has_community(ctx.attrs, c) {
                return false;
            }
        }
        if let Some(prefix) = &self.as_path_prefix {
            if !as_path_starts_with(ctx.attrs, prefix) {
                return false;
            }
        }
        true
    }
}

/// A condition on the route's prefix.
///
/// Without `prefixLength`, `In` is BIRD's `net ~ cidr` (the prefix lies within
/// `cidr`: same or longer length); with it, Calico renders `net ~ [ cidr{lo,hi} ]`
/// where `lo` is the larger of `cidr`'s length and `min`, and `hi` the smaller of
/// 32/128 and `max`. `Equal` is an exact comparison; `prefixLength` does not apply to
/// it. `NotEqual` and `NotIn` are the negations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CidrMatch {
    /// `cidr` (a network address: no host bits).
    pub cidr: IpNet,
    /// `matchOperator`.
    pub op: MatchOperator,
    /// `prefixLength.min`.
    pub min_len: Option<u8>,
    /// `prefixLength.max`.
    pub max_len: Option<u8>,
}

impl CidrMatch {
    /// Whether `prefix` satisfies the condition.
    pub fn matches(&self, prefix: IpNet) -> bool {
        match self.op {
            MatchOperator::Equal => prefix.trunc() == self.cidr,
            MatchOperator::NotEqual => prefix.trunc() != self.cidr,
            MatchOperator::In => self.within(prefix),
            MatchOperator::NotIn => !self.within(prefix),
        }
    }

    /// The prefix lengths `In` accepts (empty when `lo > hi`).
    pub fn length_range(&self) -> (u8, u8) {
        let lo = self.cidr.prefix_len().max(self.min_len.unwrap_or(0));
        let hi = self.cidr.max_prefix_len().min(self.max_len.unwrap_or(u8::MAX));
        (lo, hi)
    }

    fn within(&self, prefix: IpNet) -> bool {
        let (lo, hi) = self.length_range();
        (lo..=hi).contains(&prefix.prefix_len()) && self.cidr.contains(&prefix)
    }
}

/// `matchOperator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOperator {
    /// The prefix is exactly `cidr`.
    Equal,
    /// The prefix is not `cidr`.
    NotEqual,
    /// The prefix lies within `cidr` (and its length within `prefixLength`).
    In,
    /// The negation of `In`.
    NotIn,
}

/// `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The route was learned from a BGP peer (BIRD `source ~ [ RTS_BGP ]`), not
    /// originated by this node. Always true on import.
    RemotePeers,
}

/// `peerType`: the session the route is received from or sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerType {
    /// External BGP. Calico: the peer's AS differs from the node's.
    Ebgp,
    /// Internal BGP. Calico: the peer's AS equals the node's.
    Ibgp,
}

/// A standard (RFC 1997) or large (RFC 8092) community, as Calico's `aa:nn` and
/// `aa:nn:mm` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommunityValue {
    /// `aa:nn`: matched against and added to COMMUNITIES.
    Standard(Community),
    /// `aa:nn:mm`: matched against and added to LARGE_COMMUNITY.
    Large(LargeCommunity),
}

/// `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Take the route (after the rule's operations).
    Accept,
    /// Drop the route.
    Reject,
}

/// One entry of `operations`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `addCommunity`: add the community unless the route already carries it.
    AddCommunity(CommunityValue),
    /// `prependASPath`: the AS_PATH then starts with these AS numbers, in this order.
    PrependAsPath(Vec<u32>),
    /// `setPriority`: set [`PathAttrs::priority`] (the kernel route metric).
    SetPriority(u32),
}

/// Whether routes are received or sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the peer (`importV4`, `importV6`).
    Import,
    /// Sent to the peer (`exportV4`, `exportV6`).
    Export,
}

/// What a rule can look at, for one route and one peer.
#[derive(Clone, Copy, Debug)]
pub struct RouteContext<'a> {
    /// The route's prefix (its family selects the v4 or v6 rules).
    pub prefix: IpNet,
    /// The route's attributes (on export: before this speaker's per-peer changes).
    pub attrs: &'a PathAttrs,
    /// The peer the route is received from (import) or sent to (export): eBGP or iBGP.
    pub peer_type: PeerType,
    /// Whether the route was learned from a BGP peer (false: originated by this node).
    pub from_remote_peer: bool,
    /// The route's outgoing interface, when known.
    pub interface: Option<&'a str>,
}

/// The outcome of [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// A rule accepted the route; apply these operations (possibly none) with [`apply`].
    Accept(&'a [Operation]),
    /// A rule rejected the route.
    Reject,
    /// No rule matched: the caller applies [`fallback`].
    NoMatch,
}

/// What Calico does with a route no filter rule matched (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// Accept the route unchanged (import).
    Accept,
    /// Apply the ordinary export policy, as without filters (export).
    DefaultExport,
}

/// Calico's behaviour when no rule matches, per direction.
pub fn fallback(dir: Direction) -> Fallback {
    match dir {
        Direction::Import => Fallback::Accept,
        Direction::Export => Fallback::DefaultExport,
    }
}

/// One peer's policy, as plain data: its BGPFilters in order, then Calico's defaults
/// (import: accept; export: [`DefaultExport`]). Peers with equal policies share an
/// update group (the RIB compares the data itself, hashing it to find the group), so
/// there is no separate identity to keep in step with the behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerPolicy {
    /// The peer's BGPFilters (`spec.filters`), in order.
    pub filters: Vec<Arc<Filter>>,
    /// What rules with `peerType` see: Calico compares the peer's AS with the node's.
    pub peer_type: PeerType,
    /// What is exported when no rule matched.
    pub default_export: DefaultExport,
}

/// What a peer is sent when no rule of its filters matched a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DefaultExport {
    /// Every route: a plain BGP speaker (tests, route servers, the simulator's routers).
    All,
    /// Calico's ordinary export policy: the node's own routes, and learned routes
    /// inside a range that is exported ([`ExportRange`]; the first range containing
    /// the prefix decides). Anything else learned is not passed on, so a node never
    /// becomes a transit router.
    Calico(Arc<Vec<ExportRange>>),
}

/// A range Calico's default export knows about: learned routes inside it are passed
/// on, or, for an IPPool with `disableBGPExport`, held back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExportRange {
    /// The range.
    pub cidr: IpNet,
    /// The object it comes from.
    pub source: RangeSource,
}

/// Whether `range` holds all of `prefix` (the same family, no longer, the
/// same leading bits): what `IpNet::contains` answers, in a few instructions
/// (every learned route is checked against the ranges for every peer group).
fn covers(range: &IpNet, prefix: &IpNet) -> bool {
    fn same_bits(a: u128, b: u128, len: u8, width: u8) -> bool {
        len == 0 || (a ^ b) >> (width - len) == 0
    }
    match (range, prefix) {
        (IpNet::V4(r), IpNet::V4(p)) => {
            r.prefix_len() <= p.prefix_len()
                && same_bits(u32::from(r.addr()).into(), u32::from(p.addr()).into(), r.prefix_len(), 32)
        }
        (IpNet::V6(r), IpNet::V6(p)) => {
            r.prefix_len() <= p.prefix_len()
                && same_bits(u128::from(r.addr()), u128::from(p.addr()), r.prefix_len(), 128)
        }
        _ => false,
    }
}

/// Where an [`ExportRange`] comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RangeSource {
    /// An IPPool (its name).
    IpPool(String),
    /// An IPPool with `disableBGPExport: true` (its name): not exported.
    IpPoolExportDisabled(String),
    /// An IPAMBlock (its name), standing in for the pools when the datastore has none.
    IpamBlock(String),
    /// BGPConfiguration `serviceClusterIPs`.
    ServiceClusterIps,
    /// BGPConfiguration `serviceExternalIPs`.
    ServiceExternalIps,
    /// BGPConfiguration `serviceLoadBalancerIPs`.
    ServiceLoadBalancerIps,
}

impl RangeSource {
    /// Whether learned routes inside the range are exported.
    pub fn exported(&self) -> bool {
        !matches!(self, RangeSource::IpPoolExportDisabled(_))
    }
}

/// Which step of a [`PeerPolicy`] decided about a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// A rule: `filter` indexes [`PeerPolicy::filters`], `rule` the filter's list for
    /// the direction and the route's family ([`Filter::rules`]).
    Rule {
        /// Index of the filter.
        filter: usize,
        /// Index of the rule in its list.
        rule: usize,
    },
    /// No rule matched, import: Calico accepts.
    ImportDefault,
    /// No rule matched, export, [`DefaultExport::All`].
    ExportAll,
    /// No rule matched, export: a route this node originates.
    OwnRoute,
    /// No rule matched, export: learned, inside this exported range (an index into
    /// the [`DefaultExport::Calico`] ranges).
    InRange(usize),
    /// No rule matched, export: learned, inside this range whose export is disabled
    /// (an IPPool with `disableBGPExport`).
    ExportDisabled(usize),
    /// No rule matched, export: learned and outside every range Calico exports.
    NotExportable,
}

/// What a [`PeerPolicy`] says about one route, and which step said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Take the route (after [`Decision::operations`]), or drop it.
    pub accept: bool,
    /// Operations to apply ([`apply`]) when accepted; empty for the defaults.
    pub operations: &'a [Operation],
    /// The step that decided.
    pub by: DecidedBy,
}

impl Decision<'_> {
    fn default(accept: bool, by: DecidedBy) -> Decision<'static> {
        Decision { accept, operations: &[], by }
    }
}

impl PeerPolicy {
    /// No filters, everything exported: what a plain BGP speaker does.
    pub fn accept_all(peer_type: PeerType) -> PeerPolicy {
        PeerPolicy { filters: Vec::new(), peer_type, default_export: DefaultExport::All }
    }

    /// A route received from the peer (`from_remote_peer` is always true on import).
    pub fn import(&self, prefix: IpNet, attrs: &PathAttrs) -> Decision<'_> {
        let ctx = RouteContext { prefix, attrs, peer_type: self.peer_type, from_remote_peer: true, interface: None };
        self.rule(Direction::Import, &ctx).unwrap_or(Decision::default(true, DecidedBy::ImportDefault))
    }

    /// A route about to be sent to the peer (`learned`: from another peer, not
    /// originated here), with its attributes as this speaker holds them.
    pub fn export(&self, prefix: IpNet, attrs: &PathAttrs, learned: bool) -> Decision<'_> {
        let ctx = RouteContext { prefix, attrs, peer_type: self.peer_type, from_remote_peer: learned, interface: None };
        if let Some(d) = self.rule(Direction::Export, &ctx) {
            return d;
        }
        let ranges = match &self.default_export {
            DefaultExport::All => return Decision::default(true, DecidedBy::ExportAll),
            DefaultExport::Calico(_) if !learned => return Decision::default(true, DecidedBy::OwnRoute),
            DefaultExport::Calico(ranges) => ranges,
        };
        let inside =
            |exported: bool| ranges.iter().position(|r| r.source.exported() == exported && covers(&r.cidr, &prefix));
        // The disabled ranges are looked at only for a route outside every exported one.
        match inside(true).ok_or_else(|| inside(false)) {
            Ok(i) => Decision::default(true, DecidedBy::InRange(i)),
            Err(Some(i)) => Decision::default(false, DecidedBy::ExportDisabled(i)),
            Err(None) => Decision::default(false, DecidedBy::NotExportable),
        }
    }

    /// The first rule that matches, as a decision.
    fn rule(&self, dir: Direction, ctx: &RouteContext<'_>) -> Option<Decision<'_>> {
        let v6 = matches!(ctx.prefix, IpNet::V6(_));
        for (fi, filter) in self.filters.iter().enumerate() {
            if let Some(ri) = filter.rules(dir, v6).iter().position(|r| r.matches(ctx)) {
                let rule = &filter.rules(dir, v6)[ri];
                return Some(Decision {
                    accept: rule.action == Action::Accept,
                    operations: if rule.action == Action::Accept { &rule.operations } else { &[] },
                    by: DecidedBy::Rule { filter: fi, rule: ri },
                });
            }
        }
        None
    }

    /// Whether every received route is imported unchanged (both families), so that
    /// the RIB may skip the import evaluation.
    pub fn import_accepts_all(&self) -> bool {
        accepts_all(&self.filters, Direction::Import, false) && accepts_all(&self.filters, Direction::Import, true)
    }

    /// Whether `other` imports exactly as this policy does: per family, the same
    /// import rules in the same order across the filters, and the same peer type.
    /// (Filter names, export rules and the default export do not matter: a change
    /// there needs no ROUTE-REFRESH.)
    pub fn same_import(&self, other: &PeerPolicy) -> bool {
        fn rules(p: &PeerPolicy, v6: bool) -> impl Iterator<Item = &Rule> {
            p.filters.iter().flat_map(move |f| f.rules(Direction::Import, v6))
        }
        self.peer_type == other.peer_type
            && rules(self, false).eq(rules(other, false))
            && rules(self, true).eq(rules(other, true))
    }

    /// The range [`DecidedBy::InRange`] or [`DecidedBy::ExportDisabled`] names.
    pub fn range(&self, index: usize) -> Option<&ExportRange> {
        match &self.default_export {
            DefaultExport::Calico(ranges) => ranges.get(index),
            DefaultExport::All => None,
        }
    }
}

/// Evaluates the filters in order for the route's family (from `ctx.prefix`) and
/// direction: the first rule that matches decides; [`Verdict::NoMatch`] when none
/// does. Allocates nothing.
pub fn evaluate<'a>(filters: &'a [Arc<Filter>], dir: Direction, ctx: &RouteContext<'_>) -> Verdict<'a> {
    let v6 = matches!(ctx.prefix, IpNet::V6(_));
    for filter in filters {
        for rule in filter.rules(dir, v6) {
            if rule.matches(ctx) {
                return match rule.action {
                    Action::Accept => Verdict::Accept(&rule.operations),
                    Action::Reject => Verdict::Reject,
                };
            }
        }
    }
    Verdict::NoMatch
}

/// Whether the filters have no rule for this direction and family, so that
/// [`evaluate`] always answers [`Verdict::NoMatch`]: the caller may skip it and
/// apply [`fallback`] directly (the common case: a peer without filters).
pub fn is_pass_through(filters: &[Arc<Filter>], dir: Direction, v6: bool) -> bool {
    filters.iter().all(|f| f.rules(dir, v6).is_empty())
}

/// Whether every route of this direction and family ends up accepted unchanged,
/// counting Calico's [`fallback`]: on import, when no rule rejects or has
/// operations; on export, only when an unconditional `Accept` rule without
/// operations comes before any rule that rejects or has operations (an unmatched
/// export route is subject to the ordinary export policy, which is not "accept all").
pub fn accepts_all(filters: &[Arc<Filter>], dir: Direction, v6: bool) -> bool {
    for rule in filters.iter().flat_map(|f| f.rules(dir, v6)) {
        if rule.action == Action::Reject || !rule.operations.is_empty() {
            return false;
        }
        if rule.is_unconditional() {
            return true;
        }
    }
    dir == Direction::Import
}

/// Applies operations in order to a copy of `attrs`. `prependASPath` keeps the
/// AS_PATH valid (segments of at most 255 AS numbers, 4-octet numbers kept: the
/// RIB holds AS paths with 4-octet numbers and no AS4_PATH, and the encoder writes
/// AS_TRANS for 2-octet peers); `addCommunity` keeps the communities already there
/// and adds none twice; `setPriority` sets [`PathAttrs::priority`]. A missing
/// COMMUNITIES, LARGE_COMMUNITY or AS_PATH attribute is created, in type-code order.
pub fn apply(ops: &[Operation], attrs: &PathAttrs) -> PathAttrs {
    let mut out = attrs.clone();
    for op in ops {
        match op {
            Operation::AddCommunity(CommunityValue::Standard(c)) => add_standard(&mut out, *c),
            Operation::AddCommunity(CommunityValue::Large(c)) => add_large(&mut out, *c),
            Operation::PrependAsPath(asns) => prepend(&mut out, asns),
            Operation::SetPriority(p) => out.priority = Some(*p),
        }
    }
    out
}

fn add_standard(attrs: &mut PathAttrs, c: Community) {
    for a in &mut attrs.attributes {
        if let Attr::Communities(list) = &mut a.value {
            if !list.contains(&c) {
                list.push(c);
            }
            return;
        }
    }
    insert_attr(attrs, Attr::Communities(smallvec![c]));
}

fn add_large(attrs: &mut PathAttrs, c: LargeCommunity) {
    for a in &mut attrs.attributes {
        if let Attr::LargeCommunities(list) = &mut a.value {
            if !list.contains(&c) {
                list.push(c);
            }
            return;
        }
    }
    insert_attr(attrs, Attr::LargeCommunities(vec![c]));
}

fn prepend(attrs: &mut PathAttrs, asns: &[u32]) {
    if asns.is_empty() {
        return;
    }
    for a in &mut attrs.attributes {
        if let Attr::AsPath(path) = &mut a.value {
            // Prepending one at a time from the last keeps the list's order at the front.
            for &asn in asns.iter().rev() {
                path.prepend(asn, 1);
            }
            return;
        }
    }
    insert_attr(attrs, Attr::AsPath(AsPath::sequence(asns.iter().copied())));
}

/// Inserts a new attribute before the first one with a higher type code (RFC 4271
/// §5: attributes are sent in ascending order of type code, which keeps that order).
fn insert_attr(attrs: &mut PathAttrs, value: Attr) {
    let code = value.code();
    let at = attrs.attributes.iter().position(|a| a.value.code() > code).unwrap_or(attrs.attributes.len());
    attrs.attributes.insert(at, PathAttribute::new(value));
}

fn has_community(attrs: &PathAttrs, c: &CommunityValue) -> bool {
    match c {
        CommunityValue::Standard(c) => attrs.communities().contains(c),
        CommunityValue::Large(c) => attrs.attributes.iter().any(|a| match &a.value {
            Attr::LargeCommunities(list) => list.contains(c),
            _ => false,
        }),
    }
}

/// Whether the AS_PATH starts with `prefix` (BIRD `bgp_path ~ [= a b * =]`): the AS
/// numbers must lead the path in AS_SEQUENCE segments (an AS_SET or confederation
/// segment before the prefix is complete fails the match). The path is the one the
/// RIB holds: reconciled with AS4_PATH on receipt where RFC 6793 asks for it (from a
/// 2-octet speaker only, §4.2.3; a 4-octet speaker's AS4_PATH is discarded, §4.1),
/// which only the session knows; an AS4_PATH left in `attrs` is not looked at.
fn as_path_starts_with(attrs: &PathAttrs, prefix: &[u32]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    attrs.as_path_ref().is_some_and(|path| path_starts_with(path, prefix))
}

fn path_starts_with(path: &AsPath, prefix: &[u32]) -> bool {
    let mut want = prefix.iter();
    let mut next = want.next();
    for seg in &path.segments {
        if next.is_none() {
            return true;
        }
        if seg.kind != SegmentKind::Sequence {
            return false;
        }
        for asn in &seg.asns {
            match next {
                None => return true,
                Some(w) if w == asn => next = want.next(),
                Some(_) => return false,
            }
        }
    }
    next.is_none()
}

/// Shell-style match of `pattern` against `text`: `*` any run of bytes (possibly
/// empty), `?` exactly one byte, anything else itself. Linear backtracking on the
/// last `*`; no allocation.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AttrCode;
    use crate::wire::{AsSegment, Asns, Origin};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn covers_answers_as_ipnet_contains() {
        // Ranges and prefixes with and without host bits, both families, every
        // length from 0 to the whole address, and mixed families.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut nets: Vec<IpNet> = ["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.0.0.1/8", "10.244.1.0/26", "fd00::/8"]
            .into_iter()
            .map(net)
            .collect();
        for _ in 0..400 {
            let (r, len) = (next(), next());
            let net = if r % 2 == 0 {
                // Few distinct leading bits, so that containment happens.
                let a = std::net::Ipv4Addr::from(0x0af4_0000 | (r >> 40) as u32 & 0xffff);
                IpNet::V4(ipnet::Ipv4Net::new(a, (len % 33) as u8).unwrap())
            } else {
                let a = std::net::Ipv6Addr::from(0xfd00u128 << 112 | u128::from(r >> 32 & 0xffff) << 96);
                IpNet::V6(ipnet::Ipv6Net::new(a, (len % 129) as u8).unwrap())
            };
            nets.push(net);
        }
        let mut both = 0;
        for r in &nets {
            for p in &nets {
                assert_eq!(covers(r, p), r.contains(p), "{r} covers {p}");
                both += usize::from(r != p && r.contains(p));
            }
        }
        assert!(both > 1000, "only {both} pairs nested");
    }

    /// Attributes as an eBGP peer would send them: ORIGIN, AS_PATH, NEXT_HOP,
    /// COMMUNITIES (when given).
    fn attrs(path: &[u32], communities: &[Community]) -> PathAttrs {
        let mut attributes = vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence(path.iter().copied()))),
            PathAttribute::new(Attr::NextHop("192.0.2.1".parse().unwrap())),
        ];
        if !communities.is_empty() {
            attributes.push(PathAttribute::new(Attr::Communities(communities.iter().copied().collect())));
        }
        PathAttrs { attributes, next_hop: Some("192.0.2.1".parse().unwrap()), link_local: None, priority: None }
    }

    fn ctx<'a>(prefix: &str, attrs: &'a PathAttrs) -> RouteContext<'a> {
        RouteContext { prefix: net(prefix), attrs, peer_type: PeerType::Ebgp, from_remote_peer: true, interface: None }
    }

    fn cidr(c: &str, op: MatchOperator) -> Option<CidrMatch> {
        Some(CidrMatch { cidr: net(c), op, min_len: None, max_len: None })
    }

    fn rule(action: Action, f: impl FnOnce(&mut Rule)) -> Rule {
        let mut r = Rule::new(action);
        f(&mut r);
        r
    }

    fn filter(name: &str, f: impl FnOnce(&mut Filter)) -> Arc<Filter> {
        let mut x = Filter { name: name.into(), ..Filter::default() };
        f(&mut x);
        Arc::new(x)
    }

    #[test]
    fn cidr_operators_without_prefix_length() {
        let a = attrs(&[65001], &[]);
        let cases = [
            // (operator, cidr, route, matches)
            (MatchOperator::Equal, "10.0.0.0/16", "10.0.0.0/16", true),
            (MatchOperator::Equal, "10.0.0.0/16", "10.0.1.0/24", false),
            (MatchOperator::NotEqual, "10.0.0.0/16", "10.0.0.0/16", false),
            (MatchOperator::NotEqual, "10.0.0.0/16", "10.0.0.0/17", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.0.0/16", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.255.0/24", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.0.0/8", false),
            (MatchOperator::In, "10.0.0.0/16", "10.1.0.0/24", false),
            (MatchOperator::NotIn, "10.0.0.0/16", "10.0.3.0/24", false),
            (MatchOperator::NotIn, "10.0.0.0/16", "10.1.0.0/24", true),
            (MatchOperator::NotIn, "10.0.0.0/16", "10.0.0.0/8", true),
        ];
        for (op, c, route, want) in cases {
            let r = rule(Action::Accept, |r| r.cidr = cidr(c, op));
            assert_eq!(r.matches(&ctx(route, &a)), want, "{op:?} {c} vs {route}");
        }
    }

    #[test]
    fn prefix_length_bounds_in_and_not_in() {
        // Calico's docs example: cidr 10.0.0.0/8, prefixLength {min: 16, max: 24}.
        let m = CidrMatch { cidr: net("10.0.0.0/8"), op: MatchOperator::In, min_len: Some(16), max_len: Some(24) };
        assert_eq!(m.length_range(), (16, 24));
        for (route, want) in
            [("10.1.0.0/16", true), ("10.1.2.0/24", true), ("10.0.0.0/8", false), ("10.1.2.0/25", false)]
        {
            assert_eq!(m.matches(net(route)), want, "{route}");
            let not_in = CidrMatch { op: MatchOperator::NotIn, ..m };
            assert_eq!(not_in.matches(net(route)), !want, "NotIn {route}");
        }
        // Only min: max defaults to 32; a min below the CIDR's length is raised to it.
        let m = CidrMatch { cidr: net("55.0.0.0/16"), op: MatchOperator::In, min_len: Some(30), max_len: None };
        assert_eq!(m.length_range(), (30, 32));
        assert!(m.matches(net("55.0.1.4/30")));
        assert!(!m.matches(net("55.0.1.0/29")));
        let m = CidrMatch { min_len: Some(4), ..m };
        assert_eq!(m.length_range(), (16, 32));
        // A max below the CIDR's length: In never holds, NotIn always.
        let m = CidrMatch { cidr: net("10.0.0.0/24"), op: MatchOperator::In, min_len: None, max_len: Some(16) };
        assert!(!m.matches(net("10.0.0.0/24")));
        assert!(CidrMatch { op: MatchOperator::NotIn, ..m }.matches(net("10.0.0.0/24")));
        // Equal ignores prefixLength.
        let m = CidrMatch { op: MatchOperator::Equal, ..m };
        assert!(m.matches(net("10.0.0.0/24")));
        assert!(m.matches(net("10.0.0.7/24")), "host bits of the route are ignored");
    }

    #[test]
    fn cidr_of_the_other_family_never_is_in() {
        let m = CidrMatch { cidr: net("fd00::/8"), op: MatchOperator::In, min_len: Some(48), max_len: Some(64) };
        assert!(m.matches(net("fd00:1:2::/48")));
        assert!(!m.matches(net("fd00:1:2::/65")));
        assert!(!m.matches(net("10.0.0.0/8")));
        assert!(CidrMatch { op: MatchOperator::NotIn, ..m }.matches(net("10.0.0.0/8")));
    }

    #[test]
    fn source_remote_peers_is_about_learned_routes() {
        let a = attrs(&[], &[]);
        let r = rule(Action::Reject, |r| r.source = Some(Source::RemotePeers));
        let mut c = ctx("10.0.0.0/24", &a);
        assert!(r.matches(&c));
        c.from_remote_peer = false;
        assert!(!r.matches(&c));
    }

    #[test]
    fn interface_patterns() {
        let a = attrs(&[], &[]);
        let cases = [
            ("*.calico", Some("vxlan.calico"), true),
            ("*.calico", Some("wireguard.cali"), false),
            ("eth*", Some("eth0"), true),
            ("eth*", Some("eth"), true),
            ("eth*", Some("veth0"), false),
            ("eth0", Some("eth0"), true),
            ("eth0", Some("eth01"), false),
            ("*", Some("anything"), true),
            ("e*h*1", Some("eth0.eth1"), true),
            ("e*h*1", Some("eth0.eth2"), false),
            ("eth?", Some("eth7"), true),
            // A route without a known interface never matches (BIRD `defined(ifname)`).
            ("*", None, false),
        ];
        for (pattern, iface, want) in cases {
            let r = rule(Action::Reject, |r| r.interface = Some(pattern.into()));
            let c = RouteContext { interface: iface, ..ctx("10.0.0.0/24", &a) };
            assert_eq!(r.matches(&c), want, "{pattern} vs {iface:?}");
        }
    }

    #[test]
    fn peer_type_selects_sessions() {
        let a = attrs(&[], &[]);
        let ibgp = rule(Action::Reject, |r| r.peer_type = Some(PeerType::Ibgp));
        let ebgp = rule(Action::Reject, |r| r.peer_type = Some(PeerType::Ebgp));
        let c = ctx("10.0.0.0/24", &a);
        assert!(ebgp.matches(&c) && !ibgp.matches(&c));
        let c = RouteContext { peer_type: PeerType::Ibgp, ..c };
        assert!(ibgp.matches(&c) && !ebgp.matches(&c));
    }

    #[test]
    fn standard_and_large_community_match() {
        let mut a = attrs(&[], &[Community::new(65000, 100)]);
        let std_rule =
            |asn, v| rule(Action::Accept, |r| r.community = Some(CommunityValue::Standard(Community::new(asn, v))));
        assert!(std_rule(65000, 100).matches(&ctx("10.0.0.0/24", &a)));
        assert!(!std_rule(65000, 101).matches(&ctx("10.0.0.0/24", &a)));
        let large = LargeCommunity { global: 65000, local1: 100, local2: 999 };
        let large_rule = rule(Action::Accept, |r| r.community = Some(CommunityValue::Large(large)));
        assert!(!large_rule.matches(&ctx("10.0.0.0/24", &a)));
        a.attributes.push(PathAttribute::new(Attr::LargeCommunities(vec![large])));
        assert!(large_rule.matches(&ctx("10.0.0.0/24", &a)));
        // A route without communities.
        assert!(!std_rule(65000, 100).matches(&ctx("10.0.0.0/24", &attrs(&[], &[]))));
    }

    #[test]
    fn as_path_prefix_match() {
        let r = |p: &[u32]| rule(Action::Accept, |r| r.as_path_prefix = Some(p.to_vec()));
        let a = attrs(&[65000, 65001, 65002], &[]);
        let c = ctx("10.0.0.0/24", &a);
        assert!(r(&[65000]).matches(&c));
        assert!(r(&[65000, 65001]).matches(&c));
        assert!(r(&[65000, 65001, 65002]).matches(&c));
        assert!(!r(&[65000, 65001, 65002, 65003]).matches(&c), "longer than the path");
        assert!(!r(&[65001]).matches(&c), "not at the start");
        assert!(r(&[]).matches(&c), "an empty prefix is no condition");
        // An empty path (a locally originated iBGP route) matches no prefix.
        let empty = attrs(&[], &[]);
        assert!(!r(&[65000]).matches(&ctx("10.0.0.0/24", &empty)));
        // Across two sequence segments; an AS_SET stops the match.
        let mut split = attrs(&[], &[]);
        let segs = [
            AsSegment { kind: SegmentKind::Sequence, asns: Asns::from_slice(&[1]) },
            AsSegment { kind: SegmentKind::Sequence, asns: Asns::from_slice(&[2]) },
            AsSegment { kind: SegmentKind::Set, asns: Asns::from_slice(&[3, 4]) },
        ];
        split.attributes[1] = PathAttribute::new(Attr::AsPath(AsPath { segments: segs.into_iter().collect() }));
        let c = ctx("10.0.0.0/24", &split);
        assert!(r(&[1, 2]).matches(&c));
        assert!(!r(&[1, 2, 3]).matches(&c));
        // The path as the RIB holds it: an AS4_PATH is not merged here. Whether it
        // must be depends on the session (RFC 6793 §4.1, §4.2.3): the RIB
        // reconciles on receipt and keeps no AS4_PATH.
        let mut as4 = attrs(&[100, 23456], &[]);
        as4.attributes.push(PathAttribute::new(Attr::As4Path(AsPath::sequence([4_200_000_000]))));
        let c = ctx("10.0.0.0/24", &as4);
        assert!(r(&[100, 23456]).matches(&c));
        assert!(!r(&[100, 4_200_000_000]).matches(&c));
    }

    #[test]
    fn priority_match_needs_a_priority() {
        let r = rule(Action::Accept, |r| r.priority = Some(512));
        let mut a = attrs(&[], &[]);
        assert!(!r.matches(&ctx("10.0.0.0/24", &a)));
        a.priority = Some(512);
        assert!(r.matches(&ctx("10.0.0.0/24", &a)));
        a.priority = Some(1024);
        assert!(!r.matches(&ctx("10.0.0.0/24", &a)));
    }

    #[test]
    fn all_conditions_must_hold() {
        let mut a = attrs(&[65000, 65100], &[Community::new(65000, 100)]);
        a.priority = Some(512);
        // Calico's full example, rule 1 of importV4.
        let r = rule(Action::Accept, |r| {
            r.cidr = Some(CidrMatch {
                cidr: net("10.244.0.0/16"),
                op: MatchOperator::In,
                min_len: Some(24),
                max_len: Some(28),
            });
            r.peer_type = Some(PeerType::Ibgp);
            r.community = Some(CommunityValue::Standard(Community::new(65000, 100)));
            r.as_path_prefix = Some(vec![65000]);
            r.priority = Some(512);
            r.interface = Some("eth0".into());
        });
        let good = RouteContext {
            prefix: net("10.244.5.0/24"),
            attrs: &a,
            peer_type: PeerType::Ibgp,
            from_remote_peer: true,
            interface: Some("eth0"),
        };
        assert!(r.matches(&good));
        assert!(!r.matches(&RouteContext { prefix: net("10.244.5.0/29"), ..good }));
        assert!(!r.matches(&RouteContext { peer_type: PeerType::Ebgp, ..good }));
        assert!(!r.matches(&RouteContext { interface: Some("eth1"), ..good }));
        let b = PathAttrs { priority: Some(1), ..a.clone() };
        assert!(!r.matches(&RouteContext { attrs: &b, ..good }));
        let b = attrs(&[65000], &[]);
        let b = PathAttrs { priority: Some(512), ..b };
        assert!(!r.matches(&RouteContext { attrs: &b, ..good }), "community missing");
        assert!(!r.is_unconditional());
        assert!(Rule::new(Action::Reject).is_unconditional());
    }

    #[test]
    fn first_matching_rule_decides_across_rules_and_filters() {
        let a = attrs(&[65001], &[]);
        let f1 = filter("f1", |f| {
            f.import_v4 = vec![
                rule(Action::Accept, |r| {
                    r.cidr = cidr("10.0.0.0/16", MatchOperator::Equal);
                    r.operations = vec![Operation::SetPriority(7)];
                }),
                rule(Action::Reject, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In)),
            ];
        });
        let f2 = filter("f2", |f| {
            f.import_v4 = vec![
                rule(Action::Accept, |r| r.cidr = cidr("10.1.0.0/16", MatchOperator::In)),
                rule(Action::Reject, |_| {}),
            ];
        });
        let both = [f1.clone(), f2.clone()];
        let ops = [Operation::SetPriority(7)];
        assert_eq!(evaluate(&both, Direction::Import, &ctx("10.0.0.0/16", &a)), Verdict::Accept(&ops));
        // 10.1.0.0/16 is rejected by f1's second rule before f2 can accept it.
        assert_eq!(evaluate(&both, Direction::Import, &ctx("10.1.0.0/16", &a)), Verdict::Reject);
        // In the other order, f2 accepts it (no operations), and rejects the rest.
        let swapped = [f2, f1];
        assert_eq!(evaluate(&swapped, Direction::Import, &ctx("10.1.0.0/16", &a)), Verdict::Accept(&[]));
        assert_eq!(evaluate(&swapped, Direction::Import, &ctx("10.0.0.0/16", &a)), Verdict::Reject);
        assert_eq!(evaluate(&both, Direction::Import, &ctx("192.168.0.0/16", &a)), Verdict::Reject);
        assert_eq!(evaluate(&both[..1], Direction::Import, &ctx("192.168.0.0/16", &a)), Verdict::NoMatch);
        assert_eq!(evaluate(&[], Direction::Import, &ctx("192.168.0.0/16", &a)), Verdict::NoMatch);
    }

    #[test]
    fn family_and_direction_select_the_list() {
        let a = attrs(&[], &[]);
        let f = filter("lists", |f| {
            f.import_v4 = vec![rule(Action::Reject, |_| {})];
            f.export_v4 = vec![rule(Action::Accept, |r| r.operations = vec![Operation::SetPriority(4)])];
            f.import_v6 = vec![rule(Action::Accept, |r| r.operations = vec![Operation::SetPriority(6)])];
            f.export_v6 = vec![rule(Action::Reject, |r| r.source = Some(Source::RemotePeers))];
        });
        let fs = [f];
        let v4 = ctx("10.0.0.0/24", &a);
        let v6 = ctx("fd00::/64", &a);
        assert_eq!(evaluate(&fs, Direction::Import, &v4), Verdict::Reject);
        assert_eq!(evaluate(&fs, Direction::Export, &v4), Verdict::Accept(&[Operation::SetPriority(4)]));
        assert_eq!(evaluate(&fs, Direction::Import, &v6), Verdict::Accept(&[Operation::SetPriority(6)]));
        assert_eq!(evaluate(&fs, Direction::Export, &v6), Verdict::Reject);
        let local = RouteContext { from_remote_peer: false, ..v6 };
        assert_eq!(evaluate(&fs, Direction::Export, &local), Verdict::NoMatch);
    }

    #[test]
    fn fallback_is_accept_on_import_and_the_ordinary_policy_on_export() {
        assert_eq!(fallback(Direction::Import), Fallback::Accept);
        assert_eq!(fallback(Direction::Export), Fallback::DefaultExport);
    }

    #[test]
    fn pass_through_and_accepts_all() {
        let only_v4_export = filter("e4", |f| {
            f.export_v4 = vec![rule(Action::Accept, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))]
        });
        let fs = [only_v4_export.clone()];
        assert!(is_pass_through(&[], Direction::Import, false));
        assert!(is_pass_through(&fs, Direction::Import, false));
        assert!(is_pass_through(&fs, Direction::Export, true));
        assert!(!is_pass_through(&fs, Direction::Export, false));

        // Import: no rules, or only plain accepts, is accept-all (the fallback accepts).
        assert!(accepts_all(&[], Direction::Import, false));
        let plain = filter("p", |f| {
            f.import_v4 = vec![rule(Action::Accept, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))]
        });
        assert!(accepts_all(std::slice::from_ref(&plain), Direction::Import, false));
        let rejects = filter("r", |f| f.import_v4 = vec![rule(Action::Reject, |r| r.peer_type = Some(PeerType::Ibgp))]);
        assert!(!accepts_all(&[plain.clone(), rejects.clone()], Direction::Import, false));
        let ops = filter("o", |f| {
            f.import_v4 = vec![rule(Action::Accept, |r| r.operations = vec![Operation::SetPriority(1)])]
        });
        assert!(!accepts_all(&[ops], Direction::Import, false));
        // An unconditional plain accept ends the walk: what follows never runs.
        let all = filter("a", |f| f.import_v4 = vec![Rule::new(Action::Accept)]);
        assert!(accepts_all(&[all.clone(), rejects], Direction::Import, false));

        // Export: the fallback is the ordinary policy, so only an unconditional accept counts.
        assert!(!accepts_all(&[], Direction::Export, false));
        assert!(!accepts_all(&fs, Direction::Export, false));
        let all_out = filter("ao", |f| f.export_v4 = vec![Rule::new(Action::Accept)]);
        assert!(accepts_all(&[only_v4_export, all_out], Direction::Export, false));
    }

    fn path_of(a: &PathAttrs) -> AsPath {
        a.as_path()
    }

    #[test]
    fn apply_prepends_in_order_and_keeps_segments_valid() {
        let a = attrs(&[65100], &[]);
        let out = apply(&[Operation::PrependAsPath(vec![65001, 65002])], &a);
        assert_eq!(path_of(&out), AsPath::sequence([65001, 65002, 65100]));
        // 4-octet numbers are kept as they are (the encoder writes AS_TRANS for 2-octet peers).
        let out = apply(&[Operation::PrependAsPath(vec![4_200_000_000])], &out);
        assert_eq!(path_of(&out).first_asn(), Some(4_200_000_000));
        // A first segment that would exceed 255 AS numbers spills into a new one.
        let long = attrs(&[7; 254], &[]);
        let out = apply(&[Operation::PrependAsPath(vec![1, 2, 3])], &long);
        let p = path_of(&out);
        assert!(p.segments.iter().all(|s| s.asns.len() <= 255), "{p:?}");
        assert_eq!(p.path_len(), 257);
        let flat: Vec<u32> = p.segments.iter().flat_map(|s| s.asns.iter().copied()).take(4).collect();
        assert_eq!(flat, [1, 2, 3, 7]);
        // Prepending before an AS_SET starts a new sequence segment.
        let mut set = attrs(&[], &[]);
        set.attributes[1] = PathAttribute::new(Attr::AsPath(AsPath {
            segments: [AsSegment { kind: SegmentKind::Set, asns: Asns::from_slice(&[5, 6]) }].into_iter().collect(),
        }));
        let out = apply(&[Operation::PrependAsPath(vec![9])], &set);
        assert_eq!(path_of(&out).to_string(), "9 {5,6}");
    }

    #[test]
    fn apply_creates_a_missing_as_path_in_code_order() {
        let a = PathAttrs {
            attributes: vec![
                PathAttribute::new(Attr::Origin(Origin::Igp)),
                PathAttribute::new(Attr::NextHop("192.0.2.1".parse().unwrap())),
            ],
            next_hop: None,
            link_local: None,
            priority: None,
        };
        let out = apply(&[Operation::PrependAsPath(vec![64512])], &a);
        let codes: Vec<AttrCode> = out.attributes.iter().map(|x| x.value.code()).collect();
        assert_eq!(codes, [AttrCode::ORIGIN, AttrCode::AS_PATH, AttrCode::NEXT_HOP]);
        assert_eq!(path_of(&out), AsPath::sequence([64512]));
        // Nothing to prepend: unchanged.
        assert_eq!(apply(&[Operation::PrependAsPath(vec![])], &a), a);
    }

    #[test]
    fn apply_adds_communities_once() {
        let a = attrs(&[1], &[Community::new(65000, 1)]);
        let add = |c| Operation::AddCommunity(CommunityValue::Standard(c));
        let out =
            apply(&[add(Community::new(65000, 2)), add(Community::new(65000, 1)), add(Community::new(65000, 2))], &a);
        assert_eq!(out.communities(), [Community::new(65000, 1), Community::new(65000, 2)]);
        // Created when missing, after NEXT_HOP and before LARGE_COMMUNITY (type-code order).
        let bare = attrs(&[1], &[]);
        let large = LargeCommunity { global: 65000, local1: 300, local2: 400 };
        let out = apply(
            &[
                Operation::AddCommunity(CommunityValue::Large(large)),
                Operation::AddCommunity(CommunityValue::Large(large)),
                add(Community::NO_EXPORT),
            ],
            &bare,
        );
        let codes: Vec<AttrCode> = out.attributes.iter().map(|x| x.value.code()).collect();
        assert_eq!(
            codes,
            [AttrCode::ORIGIN, AttrCode::AS_PATH, AttrCode::NEXT_HOP, AttrCode::COMMUNITIES, AttrCode::LARGE_COMMUNITY]
        );
        assert_eq!(out.communities(), [Community::NO_EXPORT]);
        let larges: Vec<&Attr> =
            out.attributes.iter().map(|x| &x.value).filter(|v| matches!(v, Attr::LargeCommunities(_))).collect();
        assert_eq!(larges, [&Attr::LargeCommunities(vec![large])]);
    }

    #[test]
    fn apply_sets_priority_last_one_wins_and_leaves_input_alone() {
        let a = attrs(&[1], &[]);
        let out = apply(&[Operation::SetPriority(256), Operation::SetPriority(1024)], &a);
        assert_eq!(out.priority, Some(1024));
        assert_eq!(a.priority, None);
        assert_eq!(apply(&[], &a), a);
    }

    #[test]
    fn operations_then_match_on_export() {
        // An import rule adds a community; an export rule of another peer matches it.
        let a = attrs(&[65001], &[]);
        let tag = CommunityValue::Standard(Community::new(64512, 42));
        let import = filter("tag", |f| {
            f.import_v4 = vec![rule(Action::Accept, |r| r.operations = vec![Operation::AddCommunity(tag)])]
        });
        let export = filter("by-tag", |f| {
            f.export_v4 = vec![
                rule(Action::Accept, |r| r.community = Some(tag)),
                rule(Action::Reject, |r| r.source = Some(Source::RemotePeers)),
            ]
        });
        let imports = [import];
        let Verdict::Accept(ops) = evaluate(&imports, Direction::Import, &ctx("10.9.0.0/16", &a)) else {
            panic!("import accepts")
        };
        let tagged = apply(ops, &a);
        assert_eq!(
            evaluate(std::slice::from_ref(&export), Direction::Export, &ctx("10.9.0.0/16", &tagged)),
            Verdict::Accept(&[])
        );
        assert_eq!(evaluate(&[export], Direction::Export, &ctx("10.9.0.0/16", &a)), Verdict::Reject);
    }

    #[test]
    fn glob_corner_cases() {
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"**", b""));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(glob_match(b"*a", b"aaaa"));
        assert!(!glob_match(b"?", b""));
    }

    fn peer_policy(filters: Vec<Arc<Filter>>, ranges: Option<Vec<ExportRange>>) -> PeerPolicy {
        let default_export = ranges.map_or(DefaultExport::All, |r| DefaultExport::Calico(Arc::new(r)));
        PeerPolicy { filters, peer_type: PeerType::Ebgp, default_export }
    }

    fn hash_of(p: &PeerPolicy) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(p)
    }

    #[test]
    fn peer_policies_are_equal_by_content_not_by_allocation() {
        let make = |min_len| {
            filter("pods", |f| {
                f.export_v4 = vec![rule(Action::Accept, |r| {
                    r.cidr =
                        Some(CidrMatch { cidr: net("10.244.0.0/16"), op: MatchOperator::In, min_len, max_len: None })
                })]
            })
        };
        // Two filters built apart (distinct allocations) with the same content.
        let a = peer_policy(vec![make(Some(24))], None);
        let b = peer_policy(vec![make(Some(24))], None);
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b), "equal policies hash alike (update groups find each other)");
        // A prefix length bound, the filters' order, the default export: each makes another policy.
        assert_ne!(a, peer_policy(vec![make(None)], None));
        let other = filter("other", |f| f.export_v4 = vec![Rule::new(Action::Reject)]);
        let ab = peer_policy(vec![make(Some(24)), other.clone()], None);
        let ba = peer_policy(vec![other, make(Some(24))], None);
        assert_ne!(ab, ba);
        assert_ne!(a, peer_policy(vec![make(Some(24))], Some(vec![])));
        // PeerConfig::new's policy has no filters and exports everything.
        assert_eq!(PeerPolicy::accept_all(PeerType::Ebgp), peer_policy(vec![], None));
    }

    #[test]
    fn peer_policy_names_the_step_that_decided() {
        let a = attrs(&[65001], &[]);
        let f1 = filter("f1", |f| {
            f.import_v4 = vec![
                rule(Action::Accept, |r| r.cidr = cidr("10.9.0.0/16", MatchOperator::Equal)),
                rule(Action::Reject, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In)),
            ];
            f.export_v4 = vec![rule(Action::Accept, |r| {
                r.cidr = cidr("192.0.2.0/24", MatchOperator::Equal);
                r.operations = vec![Operation::SetPriority(5)];
            })];
        });
        let f2 = filter("f2", |f| f.export_v4 = vec![rule(Action::Reject, |r| r.source = Some(Source::RemotePeers))]);
        let pools = vec![
            ExportRange { cidr: net("10.244.0.0/16"), source: RangeSource::IpPool("default".into()) },
            ExportRange { cidr: net("10.250.0.0/16"), source: RangeSource::IpPoolExportDisabled("quiet".into()) },
            ExportRange { cidr: net("10.96.0.0/12"), source: RangeSource::ServiceClusterIps },
        ];
        let p = peer_policy(vec![f1.clone()], Some(pools.clone()));
        let import = |s| p.import(net(s), &a);
        assert_eq!(import("10.1.0.0/16").by, DecidedBy::Rule { filter: 0, rule: 1 });
        assert!(!import("10.1.0.0/16").accept);
        assert_eq!(import("10.9.0.0/16").by, DecidedBy::Rule { filter: 0, rule: 0 });
        assert!(import("192.168.0.0/16").accept);
        assert_eq!(import("192.168.0.0/16").by, DecidedBy::ImportDefault);
        let export = |s, learned| p.export(net(s), &a, learned);
        let d = export("192.0.2.0/24", true);
        assert_eq!(
            (d.accept, d.operations, d.by),
            (true, &[Operation::SetPriority(5)][..], DecidedBy::Rule { filter: 0, rule: 0 })
        );
        assert_eq!(export("172.16.0.0/24", false).by, DecidedBy::OwnRoute);
        assert_eq!(export("10.244.3.0/26", true).by, DecidedBy::InRange(0));
        assert_eq!(export("10.96.0.10/32", true).by, DecidedBy::InRange(2));
        let disabled = export("10.250.1.0/26", true);
        assert_eq!((disabled.accept, disabled.by), (false, DecidedBy::ExportDisabled(1)));
        assert_eq!(p.range(1), Some(&pools[1]));
        let outside = export("172.16.0.0/24", true);
        assert_eq!((outside.accept, outside.by), (false, DecidedBy::NotExportable));
        // The second filter decides what the first does not match.
        let p2 = peer_policy(vec![f1, f2], Some(pools));
        assert_eq!(p2.export(net("10.244.3.0/26"), &a, true).by, DecidedBy::Rule { filter: 1, rule: 0 });
        // Everything, without Calico's default.
        let all = peer_policy(vec![], None);
        assert_eq!((all.export(net("172.16.0.0/24"), &a, true).by), DecidedBy::ExportAll);
    }

    #[test]
    fn same_import_looks_at_import_rules_and_peer_type_only() {
        let reject = |name: &str| {
            filter(name, |f| {
                f.import_v4 = vec![rule(Action::Reject, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))]
            })
        };
        let a = peer_policy(vec![reject("a")], None);
        // Another name, another export list, another default export: imports the same.
        let mut b = peer_policy(
            vec![filter("b", |f| {
                f.import_v4 = reject("x").import_v4.clone();
                f.export_v6 = vec![Rule::new(Action::Reject)];
            })],
            Some(vec![]),
        );
        assert!(a.same_import(&b));
        b.peer_type = PeerType::Ibgp;
        assert!(!a.same_import(&b), "peerType conditions see another value");
        // The same rule in the IPv6 list is another import policy.
        let v6 = peer_policy(vec![filter("a", |f| f.import_v6 = reject("x").import_v4.clone())], None);
        assert!(!a.same_import(&v6));
        assert!(!a.same_import(&peer_policy(vec![], None)));
    }
}
