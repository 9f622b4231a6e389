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
mod tests;
