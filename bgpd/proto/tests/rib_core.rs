//! Deterministic simulation tests of the sans-IO RIB ([`Rib`]).
//!
//! Peers are in memory: what a peer sends goes through the wire codec
//! (encoded and decoded with the context it would use) into [`Rib::update`];
//! every `Output::Send` the RIB emits is decoded with the receiving peer's
//! negotiated context (ADD-PATH included) and applied to that peer's model of
//! its Adj-RIB-In from us, with the loop checks a real peer applies (its own
//! AS in AS_PATH, its router ID as ORIGINATOR_ID). Time is a virtual clock
//! (`Instant`s advanced by hand).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgpd_proto::nlri::Nlri;
use bgpd_proto::rib::attrs::PathAttrs;
use bgpd_proto::rib::checks::Ignored;
use bgpd_proto::rib::core::{
    DeferralWait, Explanation, Export, Forwarding, Import, MaxPrefix, Output, PathExport, PathSource, PathStatus,
    PeerConfig, PeerDrops, PeerExplanation, PeerKind, PeerRestart, PolicyStep, Rejection, Rib, RibConfig, SessionInfo,
    REJECTIONS_KEPT, STALE_PATH_TIME,
};
use bgpd_proto::rib::decision::DecisionOptions;
use bgpd_proto::rib::decision::Reason;
use bgpd_proto::rib::policy::{
    Action, CidrMatch, CommunityValue, DefaultExport, ExportRange, Filter, MatchOperator, Operation, PeerPolicy,
    PeerType, RangeSource, Rule,
};
use bgpd_proto::rib::table::PeerId;
use bgpd_proto::wire::{
    AsPath, Attr, Community, Message, MpNlri, MpReach, MpUnreach, NextHop, Origin, PathAttribute, RefreshSubtype,
    RouteRefresh, Update,
};
use bgpd_proto::{AttrCode, Family, FamilySet, WireContext};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);
/// This speaker's addresses on the shared peering LAN.
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const V4: Family = Family::IPV4_UNICAST;
const V6: Family = Family::IPV6_UNICAST;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn both() -> FamilySet {
    FamilySet::of(&[V4, V6])
}

fn flat(p: &AsPath) -> Vec<u32> {
    p.segments.iter().flat_map(|s| s.asns.iter().copied()).collect()
}

// ----- what peers send -----

/// An UPDATE announcing `nlri` (one family; path ids for ADD-PATH) with
/// ORIGIN IGP, `path` and next hop `nh`, plus `extra` attributes.
fn ann_ids(nlri: &[(&str, Option<u32>)], path: &[u32], nh: &str, extra: Vec<Attr>) -> Update {
    let nh: IpAddr = nh.parse().expect("test next hop");
    let mut attributes = vec![
        PathAttribute::new(Attr::Origin(Origin::Igp)),
        PathAttribute::new(Attr::AsPath(AsPath::sequence(path.iter().copied()))),
    ];
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (p, id) in nlri {
        match net(p) {
            IpNet::V4(prefix) => v4.push(Nlri { path_id: *id, prefix }),
            IpNet::V6(prefix) => v6.push(Nlri { path_id: *id, prefix }),
        }
    }
    assert!(v4.is_empty() || v6.is_empty(), "one family per test UPDATE");
    let mut u = Update::default();
    match nh {
        IpAddr::V4(a) if v6.is_empty() => {
            attributes.push(PathAttribute::new(Attr::NextHop(a)));
            u.nlri = v4;
        }
        IpAddr::V6(global) if v4.is_empty() => attributes.insert(
            0,
            PathAttribute::new(Attr::MpReach(Box::new(MpReach {
                family: V6,
                next_hop: NextHop::V6 { global, link_local: None },
                nlri: MpNlri::V6(v6),
            }))),
        ),
        // IPv4 NLRI with an IPv6 next hop (RFC 8950 §3).
        IpAddr::V6(global) => attributes.insert(
            0,
            PathAttribute::new(Attr::MpReach(Box::new(MpReach {
                family: V4,
                next_hop: NextHop::V6 { global, link_local: None },
                nlri: MpNlri::V4(v4),
            }))),
        ),
        _ => panic!("test UPDATE: an IPv4 next hop for IPv6 prefixes"),
    }
    attributes.extend(extra.into_iter().map(PathAttribute::new));
    u.attributes = attributes;
    u
}

fn ann(prefixes: &[&str], path: &[u32], nh: &str) -> Update {
    ann_with(prefixes, path, nh, Vec::new())
}

fn ann_with(prefixes: &[&str], path: &[u32], nh: &str, extra: Vec<Attr>) -> Update {
    let nlri: Vec<(&str, Option<u32>)> = prefixes.iter().map(|p| (*p, None)).collect();
    ann_ids(&nlri, path, nh, extra)
}

/// An UPDATE withdrawing `prefixes` (one family).
fn wd(prefixes: &[&str]) -> Update {
    let mut u = Update::default();
    let mut v6 = Vec::new();
    for p in prefixes {
        match net(p) {
            IpNet::V4(prefix) => u.withdrawn.push(Nlri::new(prefix)),
            IpNet::V6(prefix) => v6.push(Nlri::new(prefix)),
        }
    }
    if !v6.is_empty() {
        assert!(u.withdrawn.is_empty(), "one family per test UPDATE");
        u.attributes.push(PathAttribute::new(Attr::MpUnreach(MpUnreach { family: V6, nlri: MpNlri::V6(v6) })));
    }
    u
}

// ----- what peers receive -----

/// One path as a peer received it from us.
#[derive(Clone, Debug, PartialEq)]
struct Received {
    attrs: Vec<PathAttribute>,
    next_hop: IpAddr,
}

impl Received {
    fn attr(&self, code: AttrCode) -> Option<&Attr> {
        self.attrs.iter().map(|a| &a.value).find(|a| a.code() == code)
    }
    fn as_path(&self) -> Vec<u32> {
        match self.attr(AttrCode::AS_PATH) {
            Some(Attr::AsPath(p)) => flat(p),
            other => panic!("no AS_PATH: {other:?}"),
        }
    }
    fn med(&self) -> Option<u32> {
        match self.attr(AttrCode::MULTI_EXIT_DISC) {
            Some(Attr::Med(m)) => Some(*m),
            _ => None,
        }
    }
    fn local_pref(&self) -> Option<u32> {
        match self.attr(AttrCode::LOCAL_PREF) {
            Some(Attr::LocalPref(m)) => Some(*m),
            _ => None,
        }
    }
    fn communities(&self) -> Vec<Community> {
        match self.attr(AttrCode::COMMUNITIES) {
            Some(Attr::Communities(c)) => c.to_vec(),
            _ => Vec::new(),
        }
    }
    fn originator(&self) -> Option<Ipv4Addr> {
        match self.attr(AttrCode::ORIGINATOR_ID) {
            Some(Attr::OriginatorId(o)) => Some(*o),
            _ => None,
        }
    }
    fn cluster_list(&self) -> Vec<Ipv4Addr> {
        match self.attr(AttrCode::CLUSTER_LIST) {
            Some(Attr::ClusterList(c)) => c.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Something a peer was told, in order.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    /// An UPDATE that was not End-of-RIB.
    Update,
    /// End-of-RIB, with how many routes of the family the peer then held.
    Eor(Family, usize),
    /// A ROUTE-REFRESH (request, BoRR or EoRR).
    Refresh(RouteRefresh),
}

/// A simulated peer.
struct SimPeer {
    asn: u32,
    router_id: Ipv4Addr,
    addr: Ipv4Addr,
    /// How it encodes what it sends us.
    rx: WireContext,
    session: Option<SessionInfo>,
    /// Its Adj-RIB-In from us: (prefix, path id) → path.
    rib_in: BTreeMap<(IpNet, u32), Received>,
    events: Vec<Event>,
}

impl SimPeer {
    fn updates(&self) -> usize {
        self.events.iter().filter(|e| **e == Event::Update).count()
    }

    fn eors(&self) -> Vec<Family> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Eor(f, _) => Some(*f),
                _ => None,
            })
            .collect()
    }

    fn count(&self, family: Family) -> usize {
        self.rib_in.keys().filter(|(p, _)| matches!(p, IpNet::V4(_)) == (family == V4)).count()
    }

    /// The path to `p` (without ADD-PATH: the only one).
    fn best(&self, p: &str) -> Option<&Received> {
        let paths = self.paths(p);
        assert!(paths.len() <= 1, "several paths to {p}: {paths:?}");
        paths.first().map(|(_, r)| *r)
    }

    fn paths(&self, p: &str) -> Vec<(u32, &Received)> {
        let p = net(p);
        self.rib_in.range((p, 0)..=(p, u32::MAX)).map(|((_, id), r)| (*id, r)).collect()
    }

    fn prefixes(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.rib_in.keys().map(|(p, _)| *p).collect();
        v.dedup();
        v
    }

    fn apply(&mut self, u: &Update) {
        if let Some(f) = u.end_of_rib_family() {
            let n = self.count(f);
            self.events.push(Event::Eor(f, n));
            return;
        }
        self.events.push(Event::Update);
        let key = |p: IpNet, id: Option<u32>| (p, id.unwrap_or(0));
        for n in &u.withdrawn {
            self.rib_in.remove(&key(IpNet::V4(n.prefix), n.path_id));
        }
        if let Some(un) = u.mp_unreach() {
            match &un.nlri {
                MpNlri::V4(v) => v.iter().for_each(|n| drop(self.rib_in.remove(&key(IpNet::V4(n.prefix), n.path_id)))),
                MpNlri::V6(v) => v.iter().for_each(|n| drop(self.rib_in.remove(&key(IpNet::V6(n.prefix), n.path_id)))),
                MpNlri::Other(_) => panic!("unexpected MP_UNREACH family"),
            }
        }
        let attrs: Vec<PathAttribute> = u
            .attributes
            .iter()
            .filter(|a| !matches!(a.value, Attr::MpReach(_) | Attr::MpUnreach(_)))
            .cloned()
            .collect();
        // A real peer's loop checks: its own AS in the path (RFC 4271 §9.1.2),
        // its own router ID as ORIGINATOR_ID (RFC 4456 §8). Treated as withdrawn.
        let looped = u.as_path().is_some_and(|p| p.count(self.asn) > 0)
            || matches!(u.attr(AttrCode::ORIGINATOR_ID), Some(Attr::OriginatorId(o)) if *o == self.router_id);
        let mut put = |p: IpNet, id: Option<u32>, nh: IpAddr| {
            if looped {
                self.rib_in.remove(&key(p, id));
            } else {
                self.rib_in.insert(key(p, id), Received { attrs: attrs.clone(), next_hop: nh });
            }
        };
        if !u.nlri.is_empty() {
            let nh = u.next_hop().expect("IPv4 NLRI without NEXT_HOP");
            u.nlri.iter().for_each(|n| put(IpNet::V4(n.prefix), n.path_id, IpAddr::V4(nh)));
        }
        if let Some(r) = u.mp_reach() {
            let nh = match r.next_hop {
                NextHop::V4(a) => IpAddr::V4(a),
                NextHop::V6 { global, .. } => IpAddr::V6(global),
                NextHop::Other(_) => panic!("unexpected next hop"),
            };
            match &r.nlri {
                MpNlri::V4(v) => v.iter().for_each(|n| put(IpNet::V4(n.prefix), n.path_id, nh)),
                MpNlri::V6(v) => v.iter().for_each(|n| put(IpNet::V6(n.prefix), n.path_id, nh)),
                MpNlri::Other(_) => panic!("unexpected MP_REACH family"),
            }
        }
    }
}

/// The RIB, its peers and the virtual clock.
struct Sim {
    rib: Rib,
    now: Instant,
    peers: BTreeMap<PeerId, SimPeer>,
    /// Every `Output::Send`: its peers and how many messages.
    sends: Vec<(Vec<PeerId>, usize)>,
    teardowns: Vec<(PeerId, u8)>,
    warnings: Vec<(PeerId, String)>,
    deferral_done: usize,
    /// The kernel table as `Output::Fib` would leave it.
    fib: BTreeMap<IpNet, Vec<IpAddr>>,
    /// The priority (kernel metric) of each route of `fib` that has one.
    fib_priority: BTreeMap<IpNet, u32>,
}

fn rib_config() -> RibConfig {
    RibConfig {
        router_id: ROUTER_ID,
        local_as: LOCAL_AS,
        cluster_id: None,
        decision: DecisionOptions::default(),
        max_paths: 1,
        defer: None,
        defer_peer_wait: Duration::from_secs(10),
        fib: false,
    }
}

impl Sim {
    fn new(cfg: RibConfig) -> Sim {
        let now = Instant::now();
        Sim {
            rib: Rib::new(cfg, now),
            now,
            peers: BTreeMap::new(),
            sends: Vec::new(),
            teardowns: Vec::new(),
            warnings: Vec::new(),
            deferral_done: 0,
            fib: BTreeMap::new(),
            fib_priority: BTreeMap::new(),
        }
    }

    /// Registers peer 10.0.0.`n` (also its router ID) of AS `asn`.
    fn add(&mut self, n: u8, asn: u32, f: impl FnOnce(&mut PeerConfig)) -> PeerId {
        let addr = Ipv4Addr::new(10, 0, 0, n);
        let mut cfg = PeerConfig::new(format!("peer{n}"), IpAddr::V4(addr), LOCAL_AS, asn);
        f(&mut cfg);
        let id = self.rib.add_peer(cfg);
        let peer = SimPeer {
            asn,
            router_id: addr,
            addr,
            rx: WireContext::new(true),
            session: None,
            rib_in: BTreeMap::new(),
            events: Vec::new(),
        };
        self.peers.insert(id, peer);
        id
    }

    fn peer(&self, id: PeerId) -> &SimPeer {
        &self.peers[&id]
    }

    fn session(&self, id: PeerId) -> SessionInfo {
        SessionInfo {
            peer_id: self.peer(id).router_id,
            families: both(),
            tx: WireContext::new(true),
            local_v4: Some(LOCAL_V4),
            local_v6: Some(LOCAL_V6),
            shared_v4: None,
            shared_v6: None,
            route_refresh: true,
            enhanced_refresh: false,
            graceful_restart: None,
            long_lived: false,
        }
    }

    fn up(&mut self, id: PeerId) {
        self.up_with(id, |_| {});
    }

    fn up_with(&mut self, id: PeerId, f: impl FnOnce(&mut SessionInfo)) {
        let mut s = self.session(id);
        f(&mut s);
        let p = self.peers.get_mut(&id).expect("known peer");
        p.rib_in.clear();
        p.session = Some(s.clone());
        self.rib.peer_up(id, s, self.now);
        self.drain();
    }

    fn down(&mut self, id: PeerId, graceful: bool) {
        let p = self.peers.get_mut(&id).expect("known peer");
        p.session = None;
        p.rib_in.clear();
        self.rib.peer_down(id, graceful, self.now);
        self.drain();
    }

    /// The peer sends `u`: through the codec, into the RIB, then a flush.
    fn send(&mut self, id: PeerId, u: Update) {
        self.send_no_flush(id, u);
        self.rib.flush(self.now);
        self.drain();
    }

    fn send_no_flush(&mut self, id: PeerId, u: Update) {
        let rx = &self.peer(id).rx;
        let bytes = Message::Update(u).to_bytes(rx).expect("test UPDATE encodes");
        let frame = Message::decode(&bytes, rx).expect("test UPDATE decodes").expect("whole message");
        assert!(frame.issues.is_empty(), "test UPDATE has RFC 7606 issues: {:?}", frame.issues);
        let Message::Update(u) = frame.message else { panic!("not an UPDATE") };
        self.rib.update(id, &u, false, self.now);
        self.drain();
    }

    fn eor(&mut self, id: PeerId, f: Family) {
        self.send(id, Update::end_of_rib(f));
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.rib.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.rib.poll_output() {
            match o {
                Output::Send { peers, messages } => {
                    assert!(!peers.is_empty(), "Send to nobody");
                    for id in &peers {
                        let p = self.peers.get_mut(id).expect("Send to an unknown peer");
                        let tx = p.session.as_ref().map(|s| s.tx.clone());
                        let tx = tx.unwrap_or_else(|| panic!("Send to {id:?}, whose session is down"));
                        for m in &messages {
                            let frame = Message::decode(m, &tx).expect("RIB output decodes").expect("whole message");
                            assert_eq!(frame.len, m.len(), "one message per buffer");
                            assert!(frame.issues.is_empty(), "RIB output has RFC 7606 issues: {:?}", frame.issues);
                            let Message::Update(u) = frame.message else { panic!("Send carries a non-UPDATE") };
                            p.apply(&u);
                        }
                    }
                    self.sends.push((peers, messages.len()));
                }
                Output::Message(id, m) => {
                    let p = self.peers.get_mut(&id).expect("Message to an unknown peer");
                    let tx = p.session.as_ref().map(|s| s.tx.clone()).expect("Message to a down peer");
                    // Through the codec too.
                    let bytes = m.to_bytes(&tx).expect("RIB message encodes");
                    let frame = Message::decode(&bytes, &tx).expect("decodes").expect("whole");
                    match frame.message {
                        Message::Update(u) => p.apply(&u),
                        Message::RouteRefresh(r) => p.events.push(Event::Refresh(r)),
                        other => panic!("unexpected message {other:?}"),
                    }
                }
                Output::Teardown { peer, subcode, .. } => self.teardowns.push((peer, subcode)),
                Output::Warning(peer, w) => self.warnings.push((peer, w)),
                Output::DeferralDone => self.deferral_done += 1,
                Output::Fib(routes) => {
                    for r in routes {
                        match r.priority {
                            Some(p) => self.fib_priority.insert(r.prefix, p),
                            None => self.fib_priority.remove(&r.prefix),
                        };
                        if r.next_hops.is_empty() {
                            assert_eq!(r.priority, None, "a removal carries no priority");
                            self.fib.remove(&r.prefix);
                        } else {
                            self.fib.insert(r.prefix, r.next_hops);
                        }
                    }
                }
            }
        }
    }

    /// Prefixes the RIB has a used path to.
    fn rib_prefixes(&self) -> Vec<IpNet> {
        self.rib.routes(None).into_iter().filter(|(_, ps)| ps.iter().any(|p| p.used)).map(|(p, _)| p).collect()
    }
}

/// A rule matching exactly `prefix`, with `action`.
fn exact(prefix: &str, action: Action) -> Rule {
    let mut r = Rule::new(action);
    r.cidr = Some(CidrMatch { cidr: net(prefix), op: MatchOperator::Equal, min_len: None, max_len: None });
    r
}

/// A BGPFilter named `name` that rejects `import_reject` on import and
/// `export_reject` on export (exact prefixes) and, with `export_community`,
/// accepts every other route on export adding that community.
fn filter(name: &str, import_reject: &[&str], export_reject: &[&str], export_community: Option<Community>) -> Filter {
    let mut f = Filter { name: name.into(), ..Filter::default() };
    for p in import_reject {
        let list = if net(p).addr().is_ipv4() { &mut f.import_v4 } else { &mut f.import_v6 };
        list.push(exact(p, Action::Reject));
    }
    for p in export_reject {
        let list = if net(p).addr().is_ipv4() { &mut f.export_v4 } else { &mut f.export_v6 };
        list.push(exact(p, Action::Reject));
    }
    if let Some(c) = export_community {
        let mut tag = Rule::new(Action::Accept);
        tag.operations = vec![Operation::AddCommunity(CommunityValue::Standard(c))];
        f.export_v4.push(tag.clone());
        f.export_v6.push(tag);
    }
    f
}

/// A peer policy of one such filter, everything else exported.
fn policy(import_reject: &[&str], export_reject: &[&str], export_community: Option<Community>) -> Arc<PeerPolicy> {
    policy_of(vec![filter("test", import_reject, export_reject, export_community)])
}

fn policy_of(filters: Vec<Filter>) -> Arc<PeerPolicy> {
    Arc::new(PeerPolicy {
        filters: filters.into_iter().map(Arc::new).collect(),
        peer_type: PeerType::Ebgp,
        default_export: DefaultExport::All,
    })
}

// ----- 1. route server -----

#[test]
fn route_server_passes_routes_between_ebgp_peers_with_our_as_and_next_hop() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    s.up(a);
    s.up(b);
    // C peers over another interface: its next hop self is another address.
    let c_v4 = Ipv4Addr::new(10, 1, 0, 1);
    let c_v6: Ipv6Addr = "fd00:1::1".parse().unwrap();
    s.up_with(c, |x| {
        x.local_v4 = Some(c_v4);
        x.local_v6 = Some(c_v6);
    });
    for p in [a, b, c] {
        assert_eq!(s.peer(p).eors(), vec![V4, V6], "an empty table, then End-of-RIB");
        assert_eq!(s.peer(p).updates(), 0);
    }

    s.send(
        a,
        ann_with(
            &["198.51.100.0/24", "203.0.113.0/24"],
            &[65011, 64999],
            "10.0.0.11",
            vec![Attr::Med(50), Attr::LocalPref(300)],
        ),
    );
    s.send(a, ann(&["2001:db8:1::/48"], &[65011], "fd00::11"));
    for (p, nh4, nh6) in [(b, LOCAL_V4, LOCAL_V6), (c, c_v4, c_v6)] {
        let peer = s.peer(p);
        for pfx in ["198.51.100.0/24", "203.0.113.0/24"] {
            let r = peer.best(pfx).unwrap_or_else(|| panic!("{p:?} lacks {pfx}"));
            assert_eq!(r.as_path(), vec![LOCAL_AS, 65011, 64999]);
            assert_eq!(r.next_hop, IpAddr::V4(nh4));
            assert_eq!(r.med(), None, "RFC 4271 §5.1.4: a learned MED is not passed on");
            assert_eq!(r.local_pref(), None, "no LOCAL_PREF over eBGP");
        }
        let r = peer.best("2001:db8:1::/48").expect("IPv6 route");
        assert_eq!(r.as_path(), vec![LOCAL_AS, 65011]);
        assert_eq!(r.next_hop, IpAddr::V6(nh6));
        assert!(r.attr(AttrCode::NEXT_HOP).is_none(), "IPv6 routes carry their next hop in MP_REACH_NLRI");
    }
    assert!(s.peer(a).rib_in.is_empty(), "A drops its own routes (AS path loop)");

    s.send(a, wd(&["203.0.113.0/24"]));
    s.send(a, wd(&["2001:db8:1::/48"]));
    for p in [b, c] {
        assert_eq!(s.peer(p).prefixes(), vec![net("198.51.100.0/24")], "withdrawals reach {p:?}");
    }
    s.send(b, ann(&["2001:db8:2::/48"], &[65012], "fd00::12"));

    // A peer that comes up later gets the whole table, then End-of-RIB per family.
    let d = s.add(14, 65014, |_| {});
    s.up(d);
    let peer = s.peer(d);
    assert_eq!(peer.prefixes(), vec![net("198.51.100.0/24"), net("2001:db8:2::/48")]);
    assert_eq!(peer.best("2001:db8:2::/48").unwrap().as_path(), vec![LOCAL_AS, 65012]);
    let eors: Vec<&Event> = peer.events.iter().filter(|e| matches!(e, Event::Eor(..))).collect();
    assert_eq!(eors, vec![&Event::Eor(V4, 1), &Event::Eor(V6, 1)], "End-of-RIB after the family's routes");
    assert!(matches!(peer.events.last(), Some(Event::Eor(V6, _))));
}

#[test]
fn an_external_peer_on_a_shared_subnet_gets_third_party_next_hops() {
    let mut s = Sim::new(rib_config());
    let lan4: Ipv4Net = "10.0.0.0/24".parse().unwrap();
    let lan6: Ipv6Net = "fd00::/64".parse().unwrap();
    let on_lan = |x: &mut SessionInfo| {
        x.shared_v4 = Some(lan4);
        x.shared_v6 = Some(lan6);
    };
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    s.up_with(a, on_lan);
    s.up_with(b, on_lan);
    // C is not on the LAN (another interface): it gets next hop self.
    s.up(c);
    s.send(a, ann(&["198.51.100.0/24"], &[65011], "10.0.0.11"));
    s.send(a, ann(&["2001:db8:1::/48"], &[65011], "fd00::11"));
    // A next hop off the LAN is never passed on.
    s.send(a, ann(&["203.0.113.0/24"], &[65011], "192.0.2.1"));
    let b_view = s.peer(b);
    assert_eq!(b_view.best("198.51.100.0/24").unwrap().next_hop, "10.0.0.11".parse::<IpAddr>().unwrap());
    assert_eq!(b_view.best("2001:db8:1::/48").unwrap().next_hop, "fd00::11".parse::<IpAddr>().unwrap());
    assert_eq!(b_view.best("203.0.113.0/24").unwrap().next_hop, IpAddr::V4(LOCAL_V4));
    let c_view = s.peer(c);
    assert_eq!(c_view.best("198.51.100.0/24").unwrap().next_hop, IpAddr::V4(LOCAL_V4));
    assert_eq!(c_view.best("2001:db8:1::/48").unwrap().next_hop, IpAddr::V6(LOCAL_V6));
}

/// An IPv6 session with the extended next hop capability negotiated for IPv4
/// unicast (RFC 8950).
fn extended_next_hop(x: &mut SessionInfo) {
    x.tx = x.tx.clone().with_extended_next_hop(FamilySet::of(&[V4]));
}

#[test]
fn ipv4_routes_take_ipv6_next_hops_only_where_extended_next_hop_was_negotiated() {
    let mut s = Sim::new(RibConfig { fib: true, ..rib_config() });
    let ipv6_only = |x: &mut SessionInfo| {
        extended_next_hop(x);
        x.local_v4 = None;
    };
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    let d = s.add(14, 65014, |_| {});
    let e = s.add(15, 65015, |_| {});
    s.peers.get_mut(&a).unwrap().rx = WireContext::new(true).with_extended_next_hop(FamilySet::of(&[V4]));
    s.up_with(a, ipv6_only);
    s.up_with(b, ipv6_only);
    // C: no IPv4 address and no extended next hop: no next hop to give.
    s.up_with(c, |x| x.local_v4 = None);
    // D: an IPv4 address, no extended next hop: the IPv4 address.
    s.up(d);
    // E: dual stack, extended next hop: still the IPv4 address (Calico's next hop).
    s.up_with(e, extended_next_hop);
    s.send(a, ann(&["198.51.100.0/24"], &[65011], "fd00::11"));

    let nh = |p: PeerId| s.peer(p).best("198.51.100.0/24").map(|r| r.next_hop);
    assert_eq!(nh(b), Some(IpAddr::V6(LOCAL_V6)));
    assert_eq!(nh(c), None, "RFC 8950 §4: no IPv6 next hop without the capability");
    assert_eq!(nh(d), Some(IpAddr::V4(LOCAL_V4)));
    assert_eq!(nh(e), Some(IpAddr::V4(LOCAL_V4)));
    let v6_hop: IpAddr = "fd00::11".parse().unwrap();
    assert_eq!(s.fib.get(&net("198.51.100.0/24")), Some(&vec![v6_hop]), "forwarded via the IPv6 gateway");

    // A peer without the capability that sends one is treated as withdrawn.
    s.peers.get_mut(&d).unwrap().rx = WireContext::new(true).with_extended_next_hop(FamilySet::of(&[V4]));
    s.send(d, ann(&["203.0.113.0/24"], &[65014], "fd00::14"));
    assert!(!s.rib_prefixes().contains(&net("203.0.113.0/24")));
}

#[test]
fn mrai_holds_announcements_sends_the_last_state_once_and_lets_withdrawals_through() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let slow = s.add(12, 65012, |c| c.mrai = Duration::from_secs(5));
    let fast = s.add(13, 65013, |_| {});
    for p in [a, slow, fast] {
        s.up(p);
    }
    let base = s.peer(slow).updates();
    // The first announcement goes at once and starts the interval.
    s.send(a, ann(&["198.51.100.0/24"], &[65011], "10.0.0.11"));
    assert!(s.peer(slow).best("198.51.100.0/24").is_some());
    assert_eq!(s.peer(slow).updates(), base + 1);
    // Within the interval: a new prefix and a flap of another are held for
    // the MRAI peer, not for the other one.
    s.advance(1);
    s.send(a, ann(&["203.0.113.0/24"], &[65011], "10.0.0.11"));
    s.send(a, ann(&["192.0.2.0/24"], &[65011], "10.0.0.11"));
    s.send(a, wd(&["192.0.2.0/24"]));
    s.send(a, ann(&["192.0.2.0/24"], &[65011, 65011], "10.0.0.11"));
    assert!(s.peer(fast).best("203.0.113.0/24").is_some(), "no MRAI: at once");
    assert!(s.peer(slow).best("203.0.113.0/24").is_none(), "held by MRAI");
    assert!(s.peer(slow).best("192.0.2.0/24").is_none(), "held by MRAI");
    assert_eq!(s.peer(slow).updates(), base + 1);
    assert!(s.rib.poll_timeout().is_some_and(|t| t <= s.now + Duration::from_secs(4)));
    // A withdrawal is not held.
    s.send(a, wd(&["198.51.100.0/24"]));
    assert!(s.peer(slow).best("198.51.100.0/24").is_none(), "withdrawals go at once");
    // The interval ends: what is held goes out, each prefix in its last state, once.
    let before = s.peer(slow).updates();
    s.advance(4);
    let view = s.peer(slow);
    assert_eq!(view.best("192.0.2.0/24").unwrap().as_path(), vec![LOCAL_AS, 65011, 65011], "the last state");
    assert!(view.best("203.0.113.0/24").is_some());
    assert_eq!(view.prefixes(), s.peer(fast).prefixes(), "both peers end with the same table");
    let sent = view.updates() - before;
    assert!(sent <= 2, "the held announcements are packed, not sent per change: {sent} UPDATEs");
}

// ----- 2. best path -----

#[test]
fn the_better_path_is_exported_and_a_losing_path_change_sends_nothing() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let m = s.add(13, 65013, |_| {});
    for p in [a, b, m] {
        s.up(p);
    }
    let p = "198.51.100.0/24";
    s.send(a, ann(&[p], &[65011, 65100, 65101], "10.0.0.11"));
    assert_eq!(s.peer(m).best(p).unwrap().as_path(), vec![LOCAL_AS, 65011, 65100, 65101]);
    s.send(b, ann(&[p], &[65012], "10.0.0.12"));
    assert_eq!(s.peer(m).best(p).unwrap().as_path(), vec![LOCAL_AS, 65012], "the shorter path wins");
    // A's path changes but still loses: no UPDATE to anyone.
    let (updates, sends) = (s.peer(m).updates(), s.sends.len());
    s.send(a, ann(&[p], &[65011, 65200, 65201, 65202], "10.0.0.11"));
    assert_eq!(s.peer(m).updates(), updates);
    assert_eq!(s.sends.len(), sends, "nothing sent for a change of a non-best path");
    let routes = s.rib.routes(Some(net(p)));
    assert_eq!(routes[0].1.len(), 2);
    assert_eq!(routes[0].1[1].reason, Some(bgpd_proto::rib::decision::Reason::AsPathLength));
    s.send(b, wd(&[p]));
    assert_eq!(s.peer(m).best(p).unwrap().as_path(), vec![LOCAL_AS, 65011, 65200, 65201, 65202]);
    s.send(a, wd(&[p]));
    assert!(s.peer(m).rib_in.is_empty());
}

#[test]
fn a_change_of_the_best_paths_attributes_is_sent_again() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let m = s.add(13, 65013, |_| {});
    s.up(a);
    s.up(m);
    let p = "198.51.100.0/24";
    s.send(a, ann(&[p], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(m).best(p).unwrap().as_path(), vec![LOCAL_AS, 65011]);
    // The only (so best) path changes its attributes: an implicit withdrawal and a new path.
    s.send(a, ann(&[p], &[65011, 65100], "10.0.0.11"));
    assert_eq!(s.rib.used(net(p))[0].attrs.as_path().path_len(), 2, "the RIB holds the new path");
    assert_eq!(s.peer(m).best(p).unwrap().as_path(), vec![LOCAL_AS, 65011, 65100], "the monitor must see it");
}

// ----- 3. iBGP and route reflection -----

#[test]
fn ibgp_routes_go_to_ebgp_peers_only_without_reflection() {
    let mut s = Sim::new(rib_config());
    let i1 = s.add(21, LOCAL_AS, |_| {});
    let i2 = s.add(22, LOCAL_AS, |_| {});
    let e = s.add(11, 65011, |_| {});
    for p in [i1, i2, e] {
        s.up(p);
    }
    let p = "198.51.100.0/24";
    s.send(i1, ann_with(&[p], &[65100], "10.9.0.1", vec![Attr::LocalPref(200)]));
    assert!(s.peer(i2).rib_in.is_empty(), "RFC 4271 §9.2: no iBGP route to an iBGP peer");
    let r = s.peer(e).best(p).expect("iBGP route to the eBGP peer");
    assert_eq!(r.as_path(), vec![LOCAL_AS, 65100]);
    assert_eq!(r.next_hop, IpAddr::V4(LOCAL_V4));
    assert_eq!(r.local_pref(), None);

    let q = "203.0.113.0/24";
    s.send(e, ann_with(&[q], &[65011], "10.0.0.11", vec![Attr::Med(7)]));
    for i in [i1, i2] {
        let r = s.peer(i).best(q).expect("eBGP route to iBGP peers");
        assert_eq!(r.as_path(), vec![65011], "no prepend towards iBGP");
        assert_eq!(r.local_pref(), Some(100));
        assert_eq!(r.next_hop, IpAddr::V4(LOCAL_V4), "next hop self for eBGP-learned routes (Auto)");
        assert_eq!(r.med(), Some(7), "MED is kept within the AS");
    }
}

#[test]
fn route_reflector_reflects_client_routes_to_all_and_non_client_routes_to_clients() {
    let mut s = Sim::new(RibConfig { cluster_id: Some(CLUSTER_ID), ..rib_config() });
    let c1 = s.add(21, LOCAL_AS, |c| c.rr_client = true);
    let c2 = s.add(22, LOCAL_AS, |c| c.rr_client = true);
    let n1 = s.add(23, LOCAL_AS, |_| {});
    let e = s.add(11, 65011, |_| {});
    for p in [c1, c2, n1, e] {
        s.up(p);
    }
    let c1_id = s.peer(c1).router_id;

    let p = "198.51.100.0/24";
    s.send(c1, ann(&[p], &[], "10.9.0.1"));
    for to in [c2, n1] {
        let r = s.peer(to).best(p).unwrap_or_else(|| panic!("client route reflected to {to:?}"));
        assert_eq!(r.originator(), Some(c1_id), "RFC 4456 §8: ORIGINATOR_ID is the source's router ID");
        assert_eq!(r.cluster_list(), vec![CLUSTER_ID]);
        assert_eq!(r.next_hop, "10.9.0.1".parse::<IpAddr>().unwrap(), "reflected routes keep their next hop");
        assert_eq!(r.local_pref(), Some(100));
        assert_eq!(r.as_path(), Vec::<u32>::new());
    }
    assert!(s.peer(c1).rib_in.is_empty(), "C1 drops its own route (ORIGINATOR_ID)");
    let r = s.peer(e).best(p).expect("to eBGP");
    assert_eq!((r.originator(), r.cluster_list()), (None, vec![]), "no reflection attributes over eBGP");
    assert_eq!(r.as_path(), vec![LOCAL_AS]);

    let q = "203.0.113.0/24";
    s.send(n1, ann(&[q], &[], "10.9.0.3"));
    for to in [c1, c2] {
        let r = s.peer(to).best(q).unwrap_or_else(|| panic!("non-client route reflected to client {to:?}"));
        assert_eq!(r.originator(), Some(s.peer(n1).router_id));
        assert_eq!(r.cluster_list(), vec![CLUSTER_ID]);
    }
    assert!(s.peer(n1).best(q).is_none(), "a non-client route is not reflected to non-clients");
    assert!(s.peer(e).best(q).is_some());

    // An existing CLUSTER_LIST is prefixed, an existing ORIGINATOR_ID kept.
    let r2 = "192.0.2.0/24";
    let far = Ipv4Addr::new(10, 8, 8, 8);
    let orig = Ipv4Addr::new(10, 9, 9, 9);
    s.send(
        c1,
        ann_with(
            &[r2],
            &[],
            "10.9.0.1",
            vec![Attr::OriginatorId(orig), Attr::ClusterList([far].into_iter().collect())],
        ),
    );
    let r = s.peer(c2).best(r2).expect("reflected");
    assert_eq!(r.originator(), Some(orig));
    assert_eq!(r.cluster_list(), vec![CLUSTER_ID, far]);

    // RFC 4456 §8 loops: our cluster ID in CLUSTER_LIST, our router ID as ORIGINATOR_ID.
    let l1 = "192.0.2.128/25";
    s.send(n1, ann_with(&[l1], &[], "10.9.0.3", vec![Attr::ClusterList([far, CLUSTER_ID].into_iter().collect())]));
    let l2 = "192.0.2.64/26";
    s.send(n1, ann_with(&[l2], &[], "10.9.0.3", vec![Attr::OriginatorId(ROUTER_ID)]));
    for l in [l1, l2] {
        assert!(s.rib.routes(Some(net(l))).iter().all(|(p, _)| *p != net(l)), "{l} is a loop and not installed");
        assert!(s.peer(c1).best(l).is_none() && s.peer(e).best(l).is_none());
    }
}

#[test]
fn as_path_loops_are_ignored_unless_allowas_in_permits_them() {
    let mut s = Sim::new(rib_config());
    let e0 = s.add(11, 65011, |_| {});
    let e1 = s.add(12, 65012, |c| c.allow_local_as = 1);
    let m = s.add(13, 65013, |_| {});
    for p in [e0, e1, m] {
        s.up(p);
    }
    let (p0, p1) = ("198.51.100.0/24", "203.0.113.0/24");
    s.send(e0, ann(&[p0], &[65011, LOCAL_AS, 65100], "10.0.0.11"));
    assert!(s.rib_prefixes().is_empty(), "our AS once in the path: a loop with allowas-in 0");
    assert!(s.peer(m).rib_in.is_empty());
    s.send(e1, ann(&[p1], &[65012, LOCAL_AS, 65100], "10.0.0.12"));
    assert_eq!(s.rib_prefixes(), vec![net(p1)], "allowas-in 1 accepts our AS once");
    assert_eq!(s.peer(m).best(p1).unwrap().as_path(), vec![LOCAL_AS, 65012, LOCAL_AS, 65100]);
    // Twice is too many: the looped announcement withdraws the route.
    s.send(e1, ann(&[p1], &[65012, LOCAL_AS, LOCAL_AS, 65100], "10.0.0.12"));
    assert!(s.rib_prefixes().is_empty());
    assert!(s.peer(m).rib_in.is_empty());
}

// ----- 4. ECMP and ADD-PATH -----

/// Two eBGP peers announce one anycast /32 with equal path lengths, with
/// multipath relax and 4 paths; three receivers: ADD-PATH all paths,
/// ADD-PATH one path, no ADD-PATH. Returns (sim, a, b, [all, one, plain]).
fn ecmp_sim() -> (Sim, PeerId, PeerId, [PeerId; 3]) {
    let cfg = RibConfig {
        decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
        max_paths: 4,
        ..rib_config()
    };
    let mut s = Sim::new(cfg);
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let all = s.add(13, 65013, |_| {});
    let one = s.add(14, 65014, |c| c.add_path_send = 1);
    let plain = s.add(15, 65015, |_| {});
    s.up(a);
    s.up(b);
    let ap = |x: &mut SessionInfo| x.tx = WireContext::new(true).with_add_path(FamilySet::of(&[V4]));
    s.up_with(all, ap);
    s.up_with(one, ap);
    s.up(plain);
    let p = "192.0.2.10/32";
    s.send(a, ann(&[p], &[65011, 65100], "10.0.0.11"));
    s.send(b, ann(&[p], &[65012, 65100], "10.0.0.12"));
    (s, a, b, [all, one, plain])
}

#[test]
fn ecmp_across_neighbour_ases_and_add_path_sends_each_used_path() {
    let (s, a, _, [all, one, plain]) = ecmp_sim();
    let p = "192.0.2.10/32";
    let used = s.rib.used(net(p));
    assert_eq!(used.len(), 2, "multipath relax: both paths are used");
    assert_eq!(used[0].peer, a, "the lower router ID is best");

    let paths = s.peer(all).paths(p);
    assert_eq!(paths.len(), 2, "ADD-PATH peer gets both: {paths:?}");
    assert_ne!(paths[0].0, paths[1].0, "distinct path identifiers");
    let mut as_paths: Vec<Vec<u32>> = paths.iter().map(|(_, r)| r.as_path()).collect();
    as_paths.sort();
    assert_eq!(as_paths, vec![vec![LOCAL_AS, 65011, 65100], vec![LOCAL_AS, 65012, 65100]]);
    let one_paths = s.peer(one).paths(p);
    assert_eq!(one_paths.len(), 1, "add_path_send = 1: one path");
    assert_eq!(one_paths[0].1.as_path(), vec![LOCAL_AS, 65011, 65100]);
    assert_eq!(s.peer(plain).best(p).unwrap().as_path(), vec![LOCAL_AS, 65011, 65100]);
}

#[test]
fn narrowing_and_widening_ecmp_live_sends_only_the_difference() {
    let (mut s, a, _, [all, _, plain]) = ecmp_sim();
    let p = "192.0.2.10/32";
    let multipath = DecisionOptions { multipath_relax: true, ..DecisionOptions::default() };
    s.rib.set_decision(multipath, 1);
    s.rib.flush(s.now);
    s.drain();
    assert_eq!(s.rib.used(net(p)).len(), 1, "max paths 1: the best path alone");
    assert_eq!(s.rib.used(net(p))[0].peer, a);
    assert_eq!(s.peer(all).paths(p).len(), 1, "the ADD-PATH peer is told the second path is gone");
    let before = s.peer(plain).updates();
    s.rib.set_decision(multipath, 4);
    s.rib.flush(s.now);
    s.drain();
    assert_eq!(s.rib.used(net(p)).len(), 2, "wider again: both paths");
    assert_eq!(s.peer(all).paths(p).len(), 2);
    assert_eq!(s.peer(plain).updates(), before, "the best path did not change: nothing to a plain peer");
}

#[test]
fn withdrawing_one_ecmp_path_withdraws_only_its_identifier() {
    let (mut s, a, _, [all, one, plain]) = ecmp_sim();
    let p = "192.0.2.10/32";
    let b_id = s.peer(all).paths(p).iter().find(|(_, r)| r.as_path()[1] == 65012).expect("B's path").0;
    let before = s.peer(all).updates();
    s.send(a, wd(&[p]));
    let paths = s.peer(all).paths(p);
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].0, b_id, "the remaining path keeps its identifier");
    assert_eq!(s.peer(all).updates(), before + 1, "one UPDATE withdrawing A's path only");
    assert_eq!(s.peer(one).paths(p)[0].1.as_path(), vec![LOCAL_AS, 65012, 65100]);
    assert_eq!(s.peer(plain).best(p).unwrap().as_path(), vec![LOCAL_AS, 65012, 65100]);
    assert_eq!(s.rib.used(net(p)).len(), 1);
}

#[test]
fn add_path_paths_received_from_one_peer_are_sent_on_with_distinct_identifiers() {
    let cfg = RibConfig {
        decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
        max_paths: 4,
        ..rib_config()
    };
    let mut s = Sim::new(cfg);
    let a = s.add(11, 65011, |_| {});
    let m = s.add(13, 65013, |_| {});
    let ap = |x: &mut SessionInfo| x.tx = WireContext::new(true).with_add_path(FamilySet::of(&[V4]));
    s.peers.get_mut(&a).unwrap().rx = WireContext::new(true).with_add_path(FamilySet::of(&[V4]));
    s.up_with(a, ap);
    s.up_with(m, ap);
    let p = "192.0.2.10/32";
    s.send(a, ann_ids(&[(p, Some(1))], &[65011, 65100], "10.0.0.11", vec![]));
    s.send(a, ann_ids(&[(p, Some(2))], &[65011, 65100], "10.0.0.21", vec![]));
    assert_eq!(s.rib.used(net(p)).len(), 2);
    let paths = s.peer(m).paths(p);
    assert_eq!(paths.len(), 2, "both used paths: {paths:?}");
    let mut hops: Vec<IpAddr> = paths.iter().map(|(_, r)| r.next_hop).collect();
    hops.dedup();
    assert_eq!(hops, vec![IpAddr::V4(LOCAL_V4)], "next hop self for both");
    // A withdraws path 2: the RIB keeps path 1 (what receivers are told is
    // checked by the ECMP withdrawal test).
    s.send_no_flush(
        a,
        Update {
            withdrawn: vec![Nlri { path_id: Some(2), prefix: "192.0.2.10/32".parse().unwrap() }],
            ..Update::default()
        },
    );
    s.rib.flush(s.now);
    s.drain();
    assert_eq!(s.rib.used(net(p)).len(), 1);
}

#[test]
fn add_path_identifiers_stay_distinct_for_large_received_identifiers() {
    let cfg = RibConfig {
        decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
        max_paths: 4,
        ..rib_config()
    };
    let mut s = Sim::new(cfg);
    let a = s.add(11, 65011, |_| {});
    let m = s.add(13, 65013, |_| {});
    let ap = |x: &mut SessionInfo| x.tx = WireContext::new(true).with_add_path(FamilySet::of(&[V4]));
    s.peers.get_mut(&a).unwrap().rx = WireContext::new(true).with_add_path(FamilySet::of(&[V4]));
    s.up_with(a, ap);
    s.up_with(m, ap);
    let p = "192.0.2.10/32";
    // Two paths from one ADD-PATH peer, identifiers 1 and 65537 (0x10001).
    s.send(a, ann_ids(&[(p, Some(1))], &[65011, 65100], "10.0.0.11", vec![]));
    s.send(a, ann_ids(&[(p, Some(0x10001))], &[65011, 65100], "10.0.0.21", vec![]));
    assert_eq!(s.rib.used(net(p)).len(), 2);
    assert_eq!(s.peer(m).paths(p).len(), 2, "both used paths, with distinct identifiers");
}

// ----- 5. graceful restart helper -----

fn gr_session(x: &mut SessionInfo) {
    x.graceful_restart = Some(PeerRestart::new(120, FamilySet::of(&[V4])));
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib_then_sweeps_the_rest() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_session);
    s.up(b);
    let ps = ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"];
    s.send(a, ann(&ps, &[65011], "10.0.0.11"));
    s.send(a, ann(&["2001:db8:1::/48"], &[65011], "fd00::11"));
    assert_eq!(s.peer(b).prefixes().len(), 4);

    let before = s.peer(b).updates();
    s.down(a, true);
    assert_eq!(s.peer(b).updates(), before + 1, "only the IPv6 route (not kept by A's forwarding) is withdrawn");
    assert_eq!(s.peer(b).prefixes(), ps.iter().map(|p| net(p)).collect::<Vec<_>>());
    assert!(s.rib.routes(None).iter().all(|(_, v)| v.iter().all(|p| p.stale && p.used)), "stale and still used");
    assert_eq!(s.rib.poll_timeout(), Some(s.now + Duration::from_secs(120)));

    s.advance(30);
    s.up_with(a, gr_session);
    // A sends two of the three again, then End-of-RIB.
    s.send(a, ann(&ps[..2], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).updates(), before + 1, "routes sent again unchanged: nothing to tell B");
    s.eor(a, V4);
    assert_eq!(s.peer(b).prefixes(), vec![net(ps[0]), net(ps[1])], "exactly the route not sent again goes");
    assert_eq!(s.peer(b).updates(), before + 2);
    assert!(s.rib.routes(None).iter().all(|(_, v)| v.iter().all(|p| !p.stale)));
    s.eor(a, V6);
    assert_eq!(s.rib.poll_timeout(), None, "restart over");
    s.advance(200);
    assert_eq!(s.peer(b).prefixes().len(), 2);
}

#[test]
fn graceful_restart_timer_expiry_withdraws_the_stale_routes() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_session);
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    s.down(a, true);
    s.advance(119);
    assert_eq!(s.peer(b).prefixes().len(), 2, "still within the restart time");
    s.advance(2);
    assert!(s.peer(b).rib_in.is_empty(), "restart time over: the stale routes are withdrawn");
    assert!(s.rib.routes(None).is_empty());
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(s.rib.poll_timeout(), None);
}

#[test]
fn non_graceful_session_loss_withdraws_at_once() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_session);
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    s.down(a, false);
    assert!(s.peer(b).rib_in.is_empty());
    assert!(s.rib.routes(None).is_empty());
    assert_eq!(s.rib.poll_timeout(), None);
}

// ----- 6. selection deferral -----

fn deferring() -> RibConfig {
    RibConfig { defer: Some(Duration::from_secs(60)), ..rib_config() }
}

fn gr_both(x: &mut SessionInfo) {
    x.graceful_restart = Some(PeerRestart::new(120, both()));
}

#[test]
fn selection_deferral_holds_export_until_every_peer_sent_end_of_rib() {
    let mut s = Sim::new(deferring());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_both);
    s.up_with(b, gr_both);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.send(b, ann(&["10.2.1.0/24"], &[65012], "10.0.0.12"));
    s.send(b, ann(&["2001:db8:2::/48"], &[65012], "fd00::12"));
    s.eor(a, V4);
    s.eor(a, V6);
    s.eor(b, V4);
    assert!(s.sends.is_empty(), "nothing exported during deferral");
    assert!(s.peer(a).events.is_empty() && s.peer(b).events.is_empty(), "not even End-of-RIB");
    assert_eq!(s.deferral_done, 0);
    let view = s.rib.deferral(s.now).expect("deferring");
    assert_eq!(view.until, s.now + Duration::from_secs(60));
    assert_eq!(view.waiting, vec![("peer12".to_string(), DeferralWait::EndOfRib(vec![V6]))]);
    s.eor(b, V6);
    assert_eq!(s.deferral_done, 1);
    assert_eq!(s.rib.deferral(s.now), None);
    assert_eq!(s.peer(a).prefixes(), vec![net("10.2.1.0/24"), net("2001:db8:2::/48")]);
    assert_eq!(s.peer(b).prefixes(), vec![net("10.1.1.0/24")]);
    for p in [a, b] {
        assert_eq!(s.peer(p).eors(), vec![V4, V6]);
    }
    assert_eq!(s.rib.poll_timeout(), None);
    // Afterwards, changes flow as usual.
    s.send(a, ann(&["10.1.2.0/24"], &[65011], "10.0.0.11"));
    assert!(s.peer(b).best("10.1.2.0/24").is_some());
}

#[test]
fn selection_deferral_ends_at_its_deadline() {
    let mut s = Sim::new(deferring());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_both);
    s.up_with(b, gr_both);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.eor(a, V4);
    s.eor(a, V6);
    s.advance(59);
    assert_eq!(s.deferral_done, 0);
    assert!(s.peer(b).events.is_empty());
    s.advance(1);
    assert_eq!(s.deferral_done, 1, "B never sent End-of-RIB: the deadline ends deferral");
    assert_eq!(s.peer(b).prefixes(), vec![net("10.1.1.0/24")]);
    assert_eq!(s.peer(b).eors(), vec![V4, V6]);
    assert_eq!(s.peer(a).eors(), vec![V4, V6]);
}

#[test]
fn selection_deferral_waits_for_a_peer_that_is_not_up_only_a_while() {
    // A configured peer that is down or gone holds the others for
    // `defer_peer_wait` (10 s here), not until the 60 s deadline.
    let mut s = Sim::new(deferring());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let _never_up = s.add(13, 65013, |_| {});
    s.up_with(a, gr_both);
    s.up_with(b, gr_both);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    for p in [a, b] {
        s.eor(p, V4);
        s.eor(p, V6);
    }
    assert_eq!(s.deferral_done, 0, "the third peer may still come up");
    let until = s.now + Duration::from_secs(10);
    assert_eq!(
        s.rib.deferral(s.now).map(|v| v.waiting),
        Some(vec![("peer13".to_string(), DeferralWait::Session(until))])
    );
    assert_eq!(s.rib.poll_timeout(), Some(until), "the end of the wait is a deadline of its own");
    s.advance(9);
    assert_eq!(s.deferral_done, 0);
    assert!(s.peer(b).prefixes().is_empty());
    s.advance(1);
    assert_eq!(s.deferral_done, 1, "ten seconds, not the sixty of the deadline");
    assert_eq!(s.peer(b).prefixes(), vec![net("10.1.1.0/24")]);
    assert_eq!(s.rib.poll_timeout(), None, "no deadline left behind");
}

#[test]
fn selection_deferral_does_not_wait_for_peers_without_graceful_restart() {
    // RFC 4724 §4.1: excluding peers that did not advertise the capability.
    let mut s = Sim::new(deferring());
    let a = s.add(11, 65011, |_| {});
    let plain = s.add(12, 65012, |_| {});
    s.up_with(a, gr_both);
    s.up(plain);
    s.send(plain, ann(&["10.2.1.0/24"], &[65012], "10.0.0.12"));
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(
        s.rib.deferral(s.now).map(|v| v.waiting),
        Some(vec![("peer11".to_string(), DeferralWait::EndOfRib(vec![V4, V6]))])
    );
    s.eor(a, V4);
    assert_eq!(s.deferral_done, 0);
    s.eor(a, V6);
    assert_eq!(s.deferral_done, 1, "A's End-of-RIB was the only one waited for");
    assert_eq!(s.peer(plain).prefixes(), vec![net("10.1.1.0/24")]);
}

fn gr_restarting(x: &mut SessionInfo) {
    gr_both(x);
    if let Some(r) = x.graceful_restart.as_mut() {
        r.restarting = true;
    }
}

#[test]
fn a_restarting_peer_gets_our_table_first_and_its_routes_are_waited_for() {
    // A peer with the R bit waits for our End-of-RIB before it sends its
    // routes. Once only such peers are left they get our table first; the
    // helpers get theirs only once their routes are in, so no helper sweeps
    // them.
    let mut s = Sim::new(deferring());
    let helper = s.add(11, 65011, |_| {});
    let r1 = s.add(12, 65012, |_| {});
    let r2 = s.add(13, 65013, |_| {});
    s.up_with(helper, gr_both);
    s.up_with(r1, gr_restarting);
    s.up_with(r2, gr_restarting);
    s.send(helper, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert!(s.peer(r1).events.is_empty(), "the helper is still waited for");
    s.eor(helper, V4);
    s.eor(helper, V6);
    // Only restarting peers left: they get the table and End-of-RIB, once.
    assert_eq!(s.peer(r1).prefixes(), vec![net("10.1.1.0/24")]);
    assert_eq!(s.peer(r1).eors(), vec![V4, V6]);
    assert_eq!(s.peer(r2).eors(), vec![V4, V6]);
    assert!(s.peer(helper).events.is_empty(), "the helper waits for the restarting peers' routes");
    assert_eq!(s.deferral_done, 0);
    assert_eq!(s.rib.deferral(s.now).map(|v| v.waiting.len()), Some(2), "both restarting peers are still waited for");
    s.send(r1, ann(&["10.2.1.0/24"], &[65012], "10.0.0.12"));
    s.eor(r1, V4);
    s.eor(r1, V6);
    assert_eq!(s.peer(r2).eors(), vec![V4, V6], "sent once");
    s.send(r2, ann(&["10.3.1.0/24"], &[65013], "10.0.0.13"));
    s.eor(r2, V4);
    s.eor(r2, V6);
    assert_eq!(s.deferral_done, 1);
    assert_eq!(s.peer(helper).prefixes(), vec![net("10.2.1.0/24"), net("10.3.1.0/24")]);
    assert_eq!(s.peer(r1).prefixes(), vec![net("10.1.1.0/24"), net("10.3.1.0/24")], "R2's routes follow");
}

#[test]
fn a_clean_start_does_not_defer() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up_with(a, gr_both);
    s.up_with(b, gr_both);
    assert_eq!(s.rib.deferral(s.now), None);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).prefixes(), vec![net("10.1.1.0/24")]);
}

// ----- 6b. long-lived graceful restart (RFC 9494) -----

/// Graceful restart with `time` for both families and a long-lived stale time `llst`.
fn llgr(time: u16, llst: u32) -> impl Fn(&mut SessionInfo) {
    move |x: &mut SessionInfo| {
        let mut r = PeerRestart::new(time, both());
        r.long_lived = [llst, llst];
        x.graceful_restart = Some(r);
        x.long_lived = true;
    }
}

fn llgr_aware(x: &mut SessionInfo) {
    x.long_lived = true;
}

#[test]
fn long_lived_stale_routes_are_marked_depreferenced_and_swept_after_the_long_lived_stale_time() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let alt = s.add(12, 65012, |_| {});
    let aware = s.add(20, 65020, |_| {});
    let plain = s.add(21, 65021, |_| {});
    s.up_with(a, llgr(60, 600));
    s.up(alt);
    s.up_with(aware, llgr_aware);
    s.up(plain);
    // Two prefixes only A has, one NO_LLGR, and one with a longer path from ALT.
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.send(
        a,
        ann_with(
            &["10.1.2.0/24"],
            &[65011],
            "10.0.0.11",
            vec![Attr::Communities([Community::NO_LLGR].into_iter().collect())],
        ),
    );
    s.send(a, ann(&["10.9.0.0/24"], &[65011], "10.0.0.11"));
    s.send(alt, ann(&["10.9.0.0/24"], &[65012, 65100, 65101], "10.0.0.12"));
    assert_eq!(s.peer(aware).best("10.9.0.0/24").map(|r| r.as_path()), Some(vec![LOCAL_AS, 65011]));

    s.down(a, true);
    s.advance(59);
    assert!(s.peer(aware).best("10.1.1.0/24").is_some_and(|r| !r.communities().contains(&Community::LLGR_STALE)));
    assert_eq!(s.peer(plain).prefixes().len(), 3, "restart time: plain graceful restart");
    s.advance(1);
    // RFC 9494 §4.2: NO_LLGR goes; the rest is marked and kept.
    assert_eq!(s.peer(aware).best("10.1.2.0/24"), None, "NO_LLGR: removed when the long-lived time begins");
    let kept = s.peer(aware).best("10.1.1.0/24").expect("kept long-lived stale");
    assert!(kept.communities().contains(&Community::LLGR_STALE), "LLGR_STALE attached");
    // §4.3: less preferred than any other path, even a longer one.
    assert_eq!(s.peer(aware).best("10.9.0.0/24").map(|r| r.as_path()), Some(vec![LOCAL_AS, 65012, 65100, 65101]));
    // §4.5: not sent to a peer without the capability.
    assert_eq!(s.peer(plain).prefixes(), vec![net("10.9.0.0/24")], "LLGR_STALE routes withdrawn from non-LLGR peers");
    let views = s.rib.routes(Some(net("10.9.0.0/24")));
    let lost = views[0].1.iter().find(|p| p.peer.as_deref() == Some("peer11")).and_then(|p| p.reason);
    assert_eq!(lost, Some(bgpd_proto::rib::decision::Reason::LongLivedStale));
    assert_eq!(s.rib.poll_timeout(), Some(s.now + Duration::from_secs(600)));

    s.advance(599);
    assert!(s.peer(aware).best("10.1.1.0/24").is_some());
    s.advance(1);
    assert_eq!(s.peer(aware).best("10.1.1.0/24"), None, "long-lived stale time over: swept");
    assert!(s.rib.routes(Some(net("10.1.1.0/24"))).is_empty());
    assert_eq!(s.rib.poll_timeout(), None);
}

#[test]
fn a_peer_back_in_its_long_lived_time_replaces_its_stale_routes_at_end_of_rib() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let aware = s.add(20, 65020, |_| {});
    s.up_with(a, llgr(0, 600));
    s.up_with(aware, llgr_aware);
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    s.down(a, true);
    // Restart time 0: long-lived stale at once.
    assert!(s.peer(aware).best("10.1.1.0/24").is_some_and(|r| r.communities().contains(&Community::LLGR_STALE)));
    s.advance(100);
    s.up_with(a, llgr(0, 600));
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert!(s.peer(aware).best("10.1.1.0/24").is_some_and(|r| !r.communities().contains(&Community::LLGR_STALE)));
    assert!(s.peer(aware).best("10.1.2.0/24").is_some(), "still long-lived stale until End-of-RIB");
    s.eor(a, V4);
    assert_eq!(s.peer(aware).prefixes(), vec![net("10.1.1.0/24")], "End-of-RIB sweeps what was not sent again");
    s.eor(a, V6);
    assert_eq!(s.rib.poll_timeout(), None);
}

#[test]
fn without_the_long_lived_capability_the_restart_time_ends_it() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    // A long-lived stale time without the peer having sent the capability (`long_lived` false) is ignored.
    s.up_with(a, |x| {
        llgr(30, 600)(x);
        x.long_lived = false;
    });
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.down(a, true);
    s.advance(30);
    assert!(s.peer(b).prefixes().is_empty());
    assert_eq!(s.rib.poll_timeout(), None);
}

// ----- 6c. graceful shutdown (RFC 8326) -----

#[test]
fn graceful_shutdown_resends_every_route_with_the_community_and_local_pref_zero_to_ibgp() {
    let mut s = Sim::new(rib_config());
    let ext = s.add(11, 65011, |_| {});
    let int = s.add(12, LOCAL_AS, |_| {});
    s.up(ext);
    s.up(int);
    s.rib.originate(
        net("10.244.1.0/26"),
        Some(PathAttrs {
            attributes: vec![
                PathAttribute::new(Attr::Origin(Origin::Igp)),
                PathAttribute::new(Attr::AsPath(AsPath::default())),
            ],
            next_hop: None,
            link_local: None,
            priority: None,
        }),
    );
    s.rib.flush(s.now);
    s.drain();
    s.send(ext, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(int).best("10.244.1.0/26").and_then(|r| r.local_pref()), Some(100));

    s.rib.set_graceful_shutdown(true);
    s.drain();
    let own = s.peer(int).best("10.244.1.0/26").expect("own block to iBGP");
    assert_eq!(own.local_pref(), Some(0), "iBGP: LOCAL_PREF 0");
    assert!(own.communities().contains(&Community::GRACEFUL_SHUTDOWN));
    let learned = s.peer(int).best("10.1.1.0/24").expect("learned route to iBGP");
    assert_eq!((learned.local_pref(), learned.communities().contains(&Community::GRACEFUL_SHUTDOWN)), (Some(0), true));
    let to_ext = s.peer(ext).best("10.244.1.0/26").expect("own block to eBGP");
    assert!(to_ext.communities().contains(&Community::GRACEFUL_SHUTDOWN));
    assert_eq!(to_ext.local_pref(), None, "no LOCAL_PREF over eBGP");

    s.rib.set_graceful_shutdown(false);
    s.drain();
    let own = s.peer(int).best("10.244.1.0/26").expect("own block to iBGP");
    assert_eq!((own.local_pref(), own.communities().contains(&Community::GRACEFUL_SHUTDOWN)), (Some(100), false));
}

#[test]
fn a_received_graceful_shutdown_route_loses_to_any_other() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let m = s.add(20, 65020, |_| {});
    s.up(a);
    s.up(b);
    s.up(m);
    let gshut = vec![Attr::Communities([Community::GRACEFUL_SHUTDOWN].into_iter().collect())];
    s.send(a, ann_with(&["10.9.0.0/24"], &[65011], "10.0.0.11", gshut));
    s.send(b, ann(&["10.9.0.0/24"], &[65012, 65100, 65101], "10.0.0.12"));
    assert_eq!(s.peer(m).best("10.9.0.0/24").map(|r| r.as_path()), Some(vec![LOCAL_AS, 65012, 65100, 65101]));
    let views = s.rib.routes(Some(net("10.9.0.0/24")));
    let lost = views[0].1.iter().find(|p| p.peer.as_deref() == Some("peer11")).and_then(|p| p.reason);
    assert_eq!(lost, Some(bgpd_proto::rib::decision::Reason::LocalPref));
}

// ----- 7. max-prefix -----

#[test]
fn max_prefix_teardown_after_the_limit_withdraws_the_peers_routes() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |c| c.max_prefix = Some(MaxPrefix { limit: 5, teardown: true }));
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    for i in 1..=5 {
        s.send(a, ann(&[&format!("10.1.{i}.0/24")], &[65011], "10.0.0.11"));
    }
    assert!(s.teardowns.is_empty() && s.warnings.is_empty(), "5 prefixes are within the limit");
    assert_eq!(s.peer(b).prefixes().len(), 5);
    assert_eq!(s.rib.accepted(a), 5);
    s.send(a, ann(&["10.1.6.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.teardowns, vec![(a, 1)], "Cease / Maximum Number of Prefixes Reached (RFC 4486)");
    assert!(s.peer(b).rib_in.is_empty(), "A's routes are withdrawn from B");
    assert!(s.rib.routes(None).is_empty());
    assert_eq!(s.rib.accepted(a), 0);
    // The daemon then closes the session.
    s.down(a, false);
    assert!(s.peer(b).rib_in.is_empty());
}

#[test]
fn max_prefix_without_teardown_only_warns() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |c| c.max_prefix = Some(MaxPrefix { limit: 5, teardown: false }));
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    let ps: Vec<String> = (1..=7).map(|i| format!("10.1.{i}.0/24")).collect();
    let ps: Vec<&str> = ps.iter().map(String::as_str).collect();
    s.send(a, ann(&ps, &[65011], "10.0.0.11"));
    assert!(s.teardowns.is_empty());
    assert_eq!(s.warnings.len(), 1, "one warning: {:?}", s.warnings);
    assert_eq!(s.warnings[0].0, a);
    assert_eq!(s.peer(b).prefixes().len(), 7, "the routes stay");
}

#[test]
fn max_prefix_counts_the_copy_kept_before_policy() {
    // Import policy rejects everything A sends, but with keep-received the RIB
    // still holds each route: the limit counts that copy.
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |c| {
        let all: Vec<String> = (1..=6).map(|i| format!("10.1.{i}.0/24")).collect();
        c.policy = policy(&all.iter().map(String::as_str).collect::<Vec<_>>(), &[], None);
        c.keep_received = true;
        c.max_prefix = Some(MaxPrefix { limit: 5, teardown: true });
    });
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    for i in 1..=5 {
        s.send(a, ann(&[&format!("10.1.{i}.0/24")], &[65011], "10.0.0.11"));
    }
    assert_eq!(s.rib.accepted(a), 0, "policy rejects them all");
    assert!(s.teardowns.is_empty(), "5 kept prefixes are within the limit");
    assert_eq!(s.rib.kept_received(a), 5);
    s.send(a, ann(&["10.1.6.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.teardowns, vec![(a, 1)], "6 kept prefixes are over the limit");
    assert_eq!(s.rib.kept_received(a), 0, "the kept copy goes with the session");
}

// ----- 8. policy -----

#[test]
fn import_policy_rejects_and_export_policy_modifies_for_its_peer_only() {
    let mut s = Sim::new(rib_config());
    let (p1, p2) = ("10.1.1.0/24", "10.1.2.0/24");
    let a = s.add(11, 65011, |c| {
        c.policy = policy(&[p2], &[], None);
    });
    let tag = Community::new(65000, 777);
    let b = s.add(12, 65012, |c| {
        c.policy = policy(&[], &[], Some(tag));
    });
    let c = s.add(13, 65013, |_| {});
    for p in [a, b, c] {
        s.up(p);
    }
    s.send(a, ann(&[p1, p2], &[65011], "10.0.0.11"));
    assert_eq!(s.rib_prefixes(), vec![net(p1)], "p2 is rejected on import and not installed");
    assert_eq!(s.rib.accepted(a), 1);
    assert_eq!(s.peer(b).best(p1).unwrap().communities(), vec![tag], "B's export adds its community");
    assert_eq!(s.peer(c).best(p1).unwrap().communities(), vec![], "C is not B");
    assert!(s.peer(b).best(p2).is_none() && s.peer(c).best(p2).is_none());
}

#[test]
fn a_new_export_policy_sends_the_difference_without_a_session_event() {
    let mut s = Sim::new(rib_config());
    let (p1, p2, p3) = ("10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24");
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |c| {
        c.policy = policy(&[], &[p1], None);
    });
    s.up(a);
    s.up(b);
    s.send(a, ann(&[p1, p2, p3], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).prefixes(), vec![net(p2), net(p3)]);
    let events = s.peer(b).events.len();
    // Same peer, new export policy: p2 rejected instead of p1.
    let mut cfg = cfg_like(&s, b, 65012, policy(&[], &[p2], None));
    s.rib.set_peer_config(b, cfg.clone(), s.now);
    s.drain();
    assert_eq!(s.peer(b).prefixes(), vec![net(p1), net(p3)], "p2 withdrawn, p1 announced");
    let new_events = &s.peer(b).events[events..];
    assert!(new_events.iter().all(|e| !matches!(e, Event::Eor(..))), "no new table, no End-of-RIB: {new_events:?}");
    assert!(new_events.iter().filter(|e| **e == Event::Update).count() <= 2, "just the difference");
    // Setting the same configuration again changes nothing.
    let n = s.peer(b).events.len();
    cfg.policy = policy(&[], &[p2], None);
    s.rib.set_peer_config(b, cfg, s.now);
    s.drain();
    assert_eq!(s.peer(b).events.len(), n);
}

fn cfg_like(s: &Sim, id: PeerId, asn: u32, policy: Arc<PeerPolicy>) -> PeerConfig {
    let addr = s.peer(id).addr;
    PeerConfig { policy, ..PeerConfig::new(format!("peer{}", addr.octets()[3]), IpAddr::V4(addr), LOCAL_AS, asn) }
}

#[test]
fn a_new_import_policy_withdraws_now_rejected_routes_and_asks_for_a_refresh() {
    let mut s = Sim::new(rib_config());
    let (p1, p2) = ("10.1.1.0/24", "10.1.2.0/24");
    let a = s.add(11, 65011, |c| {
        c.policy = policy(&[], &[], None);
    });
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    s.send(a, ann(&[p1, p2], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).prefixes().len(), 2);
    let cfg = cfg_like(&s, a, 65011, policy(&[p1], &[], None));
    s.rib.set_peer_config(a, cfg, s.now);
    s.drain();
    assert_eq!(s.peer(b).prefixes(), vec![net(p2)], "p1 now rejected on import: withdrawn");
    assert_eq!(s.rib_prefixes(), vec![net(p2)]);
    let refreshes: Vec<&Event> = s.peer(a).events.iter().filter(|e| matches!(e, Event::Refresh(_))).collect();
    assert_eq!(
        refreshes,
        vec![&Event::Refresh(RouteRefresh::request(V4)), &Event::Refresh(RouteRefresh::request(V6))],
        "ROUTE-REFRESH for each family, to learn what the new policy now accepts"
    );
}

#[test]
fn a_kept_copy_applies_a_new_import_policy_without_asking_the_peer() {
    let mut s = Sim::new(rib_config());
    let (p1, p2) = ("10.1.1.0/24", "10.1.2.0/24");
    let a = s.add(11, 65011, |c| {
        c.policy = policy(&[p1], &[], None);
        c.keep_received = true;
    });
    let b = s.add(12, 65012, |_| {});
    // A has no route refresh: only the kept copy can bring p1 back.
    s.up_with(a, |x| x.route_refresh = false);
    s.up(b);
    s.send(a, ann(&[p1, p2], &[65011], "10.0.0.11"));
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "10.0.0.11"));
    s.send(a, wd(&["10.1.3.0/24"]));
    assert_eq!(s.peer(b).prefixes(), vec![net(p2)], "p1 rejected on import");
    // The new policy accepts p1 and rejects p2.
    let mut cfg = cfg_like(&s, a, 65011, policy(&[p2], &[], None));
    cfg.keep_received = true;
    s.rib.set_peer_config(a, cfg, s.now);
    s.drain();
    assert_eq!(
        s.peer(b).prefixes(),
        vec![net(p1)],
        "p1 from the kept copy, p2 now rejected, the withdrawn one not revived"
    );
    assert!(!s.peer(a).events.iter().any(|e| matches!(e, Event::Refresh(_))), "no ROUTE-REFRESH needed");
    // After the session goes down and up, the copy is the new session's.
    s.down(a, false);
    s.up_with(a, |x| x.route_refresh = false);
    s.send(a, ann(&[p2], &[65011], "10.0.0.11"));
    let mut cfg = cfg_like(&s, a, 65011, policy(&[], &[], None));
    cfg.keep_received = true;
    s.rib.set_peer_config(a, cfg, s.now);
    s.drain();
    assert_eq!(s.peer(b).prefixes(), vec![net(p2)], "only what this session sent");
}

#[test]
fn an_import_policy_change_withdraws_from_peers_sharing_the_changed_peers_group() {
    let mut s = Sim::new(rib_config());
    let p1 = "10.1.1.0/24";
    // A and B share policy 1 and so an update group; A joins first.
    let a = s.add(11, 65011, |c| {
        c.policy = policy(&[], &[], None);
    });
    let b = s.add(12, 65012, |c| {
        c.policy = policy(&[], &[], None);
    });
    s.up(a);
    s.up(b);
    s.send(a, ann(&[p1], &[65011], "10.0.0.11"));
    assert!(s.peer(b).best(p1).is_some());
    // A's new policy rejects p1 both ways.
    let cfg = cfg_like(&s, a, 65011, policy(&[p1], &[p1], None));
    s.rib.set_peer_config(a, cfg, s.now);
    s.drain();
    assert!(s.rib_prefixes().is_empty());
    assert!(s.peer(b).best(p1).is_none(), "B must be told p1 is gone");
}

#[test]
fn removing_an_ebgp_peer_withdraws_its_routes_from_ibgp_peers() {
    let mut s = Sim::new(rib_config());
    let e = s.add(11, 65011, |_| {});
    let i = s.add(21, LOCAL_AS, |_| {});
    let e2 = s.add(12, 65012, |_| {});
    s.up(e);
    s.up(i);
    s.up(e2);
    s.send(e, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    assert!(s.peer(i).best("10.1.1.0/24").is_some());
    assert!(s.peer(e2).best("10.1.1.0/24").is_some());
    s.peers.get_mut(&e).unwrap().session = None;
    s.rib.remove_peer(e);
    s.drain();
    assert!(s.peer(e2).rib_in.is_empty(), "the eBGP peer is told");
    assert!(s.peer(i).rib_in.is_empty(), "the iBGP peer must be told too");
}

// ----- 9. update groups -----

#[test]
fn peers_with_equal_config_share_one_encoded_stream() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |c| c.policy = policy(&[], &["192.0.2.0/24"], None));
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    let d = s.add(14, 65014, |c| c.policy = policy(&[], &["198.51.100.0/24"], None));
    for p in [a, b, c, d] {
        s.up(p);
    }
    s.sends.clear();
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    let with = |id: PeerId| s.sends.iter().filter(|(ps, _)| ps.contains(&id)).collect::<Vec<_>>();
    let to_b = with(b);
    assert_eq!(to_b.len(), 1, "one Send for B: {:?}", s.sends);
    let mut group = to_b[0].0.clone();
    group.sort();
    assert_eq!(group, vec![b, c], "B and C share it");
    assert_eq!(to_b[0].1, 1, "both prefixes packed in one UPDATE");
    let to_d = with(d);
    assert_eq!(to_d.len(), 1);
    assert_eq!(to_d[0].0, vec![d], "another policy: its own stream");
    assert_eq!(s.peer(b).rib_in, s.peer(c).rib_in);
    assert_eq!(s.rib.stats().groups, 3);
}

#[test]
fn peers_share_a_group_by_policy_equality() {
    let mut s = Sim::new(rib_config());
    let tag = |n| Some(Community::new(65000, n));
    // B and C: the same filter, built apart. D: a filter differing only in the
    // value of an operation. E: what PeerConfig::new gives, with a filter set
    // afterwards and nothing else changed (when the RIB compared a separate
    // policy ID, E kept ID 0 and shared F's stream, which sent it what its
    // filter rejects). F: PeerConfig::new as it is.
    let b = s.add(12, 65012, |c| c.policy = policy(&[], &[], tag(1)));
    let c = s.add(13, 65013, |c| c.policy = policy(&[], &[], tag(1)));
    let d = s.add(14, 65014, |c| c.policy = policy(&[], &[], tag(2)));
    let e = s.add(15, 65015, |c| c.policy = policy(&[], &["10.1.1.0/24"], None));
    let f = s.add(16, 65016, |_| {});
    let a = s.add(11, 65011, |_| {});
    for p in [a, b, c, d, e, f] {
        s.up(p);
    }
    s.sends.clear();
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(stream(&s, b), vec![b, c], "equal filters: one group");
    assert_eq!(stream(&s, d), vec![d], "another community value: another group");
    assert_eq!(stream(&s, e), vec![e]);
    assert_eq!(stream(&s, f), vec![f]);
    assert_eq!(s.peer(e).prefixes(), vec![net("10.1.2.0/24")], "E's filter holds");
    assert_eq!(s.peer(f).prefixes().len(), 2);
    assert_eq!(s.peer(d).best("10.1.1.0/24").unwrap().communities(), vec![Community::new(65000, 2)]);
    // A is in F's group (the same default policy) but is the source of the
    // batch, so it got a stream of its own. Groups: A+F, B+C, D, E.
    assert_eq!(s.rib.stats().groups, 4);
    // C's policy changes to D's: C leaves B's group and joins D's.
    let cfg = cfg_like(&s, c, 65013, policy(&[], &[], tag(2)));
    s.rib.set_peer_config(c, cfg, s.now);
    s.drain();
    s.sends.clear();
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(stream(&s, c), vec![c, d]);
    assert_eq!(stream(&s, b), vec![b]);
}

/// The peers of the first `Output::Send` that went to `id`, sorted.
fn stream(s: &Sim, id: PeerId) -> Vec<PeerId> {
    let mut to: Vec<PeerId> = s.sends.iter().find(|(ps, _)| ps.contains(&id)).expect("a send").0.clone();
    to.sort();
    to
}

#[test]
fn an_export_only_policy_change_asks_the_peer_for_nothing() {
    let mut s = Sim::new(rib_config());
    let (p1, p2) = ("10.1.1.0/24", "10.1.2.0/24");
    let a = s.add(11, 65011, |c| c.policy = policy(&[], &[p1], None));
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    s.send(b, ann(&[p1, p2], &[65012], "10.0.0.12"));
    s.send(a, ann(&["10.2.0.0/16"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(a).prefixes(), vec![net(p2)]);
    // The filter's export list changes, its import list does not.
    let cfg = cfg_like(&s, a, 65011, policy(&[], &[p2], None));
    s.rib.set_peer_config(a, cfg, s.now);
    s.drain();
    assert_eq!(s.peer(a).prefixes(), vec![net(p1)]);
    assert!(!s.peer(a).events.iter().any(|e| matches!(e, Event::Refresh(_))), "import is unchanged: no ROUTE-REFRESH");
    assert_eq!(s.rib_prefixes().len(), 3, "A's route kept");
}

// ----- 10. enhanced route refresh -----

#[test]
fn enhanced_route_refresh_frames_the_table_with_borr_and_eorr() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let plain = s.add(13, 65013, |_| {});
    s.up_with(a, |x| x.enhanced_refresh = true);
    s.up(b);
    s.up(plain);
    s.send(b, ann(&["10.2.1.0/24", "10.2.2.0/24"], &[65012], "10.0.0.12"));
    let n = s.peer(a).events.len();
    s.rib.refresh_requested(a, V4, s.now);
    s.drain();
    let rr = |subtype| Event::Refresh(RouteRefresh { family: V4, subtype, orf: Vec::new() });
    let ev = &s.peer(a).events[n..];
    assert_eq!(ev.first(), Some(&rr(RefreshSubtype::BORR)), "{ev:?}");
    assert_eq!(ev.last(), Some(&rr(RefreshSubtype::EORR)));
    assert!(ev[1..ev.len() - 1].iter().all(|e| *e == Event::Update) && ev.len() > 2, "the table in between: {ev:?}");
    assert_eq!(s.peer(a).prefixes().len(), 2);

    let n = s.peer(plain).events.len();
    s.rib.refresh_requested(plain, V4, s.now);
    s.drain();
    let ev = &s.peer(plain).events[n..];
    assert!(!ev.is_empty() && ev.iter().all(|e| *e == Event::Update), "no BoRR/EoRR without the capability: {ev:?}");

    // B re-sends its routes (BoRR … EoRR): what it does not send again goes.
    s.rib.refresh_begin(b, V4);
    s.send(b, ann(&["10.2.1.0/24"], &[65012], "10.0.0.12"));
    assert_eq!(s.peer(a).prefixes().len(), 2, "nothing goes before EoRR");
    s.rib.refresh_end(b, V4);
    s.drain();
    assert_eq!(s.peer(a).prefixes(), vec![net("10.2.1.0/24")]);
    assert_eq!(s.peer(plain).prefixes(), vec![net("10.2.1.0/24")]);
    assert!(s.rib.routes(None).iter().all(|(_, v)| v.iter().all(|p| !p.stale)));
}

// ----- 11. property: the RIB and every peer's view match a reference model -----

mod prop {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    const PREFIXES: [&str; 6] =
        ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24", "2001:db8:1::/48", "2001:db8:2::/48"];
    const PEER_AS: [u32; 3] = [65011, 65012, 65013];

    #[derive(Clone, Debug)]
    enum Op {
        Announce { peer: usize, prefix: usize, len: usize, med: Option<u32> },
        Withdraw { peer: usize, prefix: usize },
        Down { peer: usize, graceful: bool },
        Up { peer: usize },
        Eor { peer: usize },
        Flush,
        Wait { secs: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..3usize, 0..PREFIXES.len(), 1..4usize, proptest::option::of(0..3u32))
                .prop_map(|(peer, prefix, len, med)| Op::Announce { peer, prefix, len, med }),
            4 => (0..3usize, 0..PREFIXES.len()).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
            1 => (0..3usize, any::<bool>()).prop_map(|(peer, graceful)| Op::Down { peer, graceful }),
            2 => (0..3usize).prop_map(|peer| Op::Up { peer }),
            1 => (0..3usize).prop_map(|peer| Op::Eor { peer }),
            2 => Just(Op::Flush),
            1 => prop_oneof![Just(1u64), Just(150u64)].prop_map(|secs| Op::Wait { secs }),
        ]
    }

    /// Runs `ops`; with `stable`, each peer always announces a prefix with
    /// the same attributes and there is no ECMP (see the ignored variant).
    fn run(ops: &[Op], stable: bool) -> Result<(), TestCaseError> {
        let cfg = RibConfig {
            decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
            max_paths: if stable { 1 } else { 4 },
            ..rib_config()
        };
        let mut s = Sim::new(cfg);
        let peers: Vec<PeerId> = (0..3).map(|i| s.add(11 + i as u8, PEER_AS[i], |_| {})).collect();
        let m = s.add(20, 65020, |_| {});
        let m2 = s.add(21, 65021, |_| {});
        let gr = |x: &mut SessionInfo| x.graceful_restart = Some(PeerRestart::new(RESTART_TIME, both()));
        for p in &peers {
            s.up_with(*p, gr);
        }
        s.up(m);
        s.up_with(m2, |x| x.tx = WireContext::new(true).with_add_path(both()));
        let mut model = Model { up: [true; 3], ..Model::default() };
        for op in ops {
            match *op {
                Op::Announce { peer, prefix, len, med } if model.up[peer] => {
                    let (len, med) = if stable { (1 + (peer + prefix) % 3, None) } else { (len, med) };
                    let mut path = vec![PEER_AS[peer]];
                    path.extend((1..len).map(|i| 64700 + i as u32));
                    let nh = if prefix < 4 { format!("10.0.0.{}", 11 + peer) } else { format!("fd00::{}", 11 + peer) };
                    let extra = med.map(Attr::Med).into_iter().collect();
                    s.send_no_flush(peers[peer], ann_with(&[PREFIXES[prefix]], &path, &nh, extra));
                    model.paths[peer].insert(prefix, (path, false));
                }
                Op::Withdraw { peer, prefix } if model.up[peer] => {
                    s.send_no_flush(peers[peer], wd(&[PREFIXES[prefix]]));
                    model.paths[peer].remove(&prefix);
                }
                Op::Down { peer, graceful } if model.up[peer] => {
                    s.down(peers[peer], graceful);
                    model.down(peer, graceful);
                }
                Op::Up { peer } if !model.up[peer] => {
                    s.up_with(peers[peer], gr);
                    model.up(peer);
                }
                Op::Eor { peer } if model.up[peer] => {
                    s.eor(peers[peer], V4);
                    s.eor(peers[peer], V6);
                    model.end_of_rib(peer);
                }
                Op::Flush => {
                    s.rib.flush(s.now);
                    s.drain();
                }
                Op::Wait { secs } => {
                    s.advance(secs);
                    model.advance(secs);
                }
                _ => {}
            }
        }
        s.rib.flush(s.now);
        s.drain();

        // Every value below comes from the model, none from the RIB.
        let name = |i: usize| format!("peer{}", 11 + i);
        let with_us = |p: &[u32]| [&[LOCAL_AS], p].concat();
        let max_paths = if stable { 1 } else { 4 };
        let mut want_paths = BTreeMap::new();
        for (i, paths) in model.paths.iter().enumerate() {
            for (k, (path, stale)) in paths {
                want_paths.insert((net(PREFIXES[*k]), name(i)), (path.clone(), *stale));
            }
        }
        let (mut want_selection, mut want_m, mut want_m2) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut want_source: [BTreeMap<IpNet, Vec<u32>>; 3] = Default::default();
        for (k, prefix) in PREFIXES.iter().enumerate() {
            let Some((best, used)) = model.select(k, max_paths) else { continue };
            let path = |i: usize| with_us(&model.paths[i][&k].0);
            want_selection.insert(net(prefix), (name(best), used.iter().map(|i| name(*i)).collect::<Vec<_>>()));
            want_m.insert(net(prefix), path(best));
            let mut all: Vec<Vec<u32>> = used.iter().map(|i| path(*i)).collect();
            all.sort();
            want_m2.insert(net(prefix), all);
            // Without ADD-PATH a peer gets the best path, unless it is its own.
            for (i, w) in want_source.iter_mut().enumerate() {
                if i != best {
                    w.insert(net(prefix), path(best));
                }
            }
        }

        // The RIB: its paths (stale ones included), then its selection.
        let routes = s.rib.routes(None);
        let got_paths: BTreeMap<(IpNet, String), (Vec<u32>, bool)> = routes
            .iter()
            .flat_map(|(prefix, paths)| {
                paths
                    .iter()
                    .map(|p| ((*prefix, p.peer.clone().unwrap_or_default()), (flat(&p.attrs.as_path()), p.stale)))
            })
            .collect();
        prop_assert_eq!(got_paths, want_paths, "the RIB's paths (AS_PATH, stale)");
        let got_selection: BTreeMap<IpNet, (String, Vec<String>)> = routes
            .iter()
            .filter_map(|(prefix, paths)| {
                let best = paths.iter().find(|p| p.best)?.peer.clone().unwrap_or_default();
                let mut used: Vec<String> =
                    paths.iter().filter(|p| p.used).map(|p| p.peer.clone().unwrap_or_default()).collect();
                used.sort();
                Some((*prefix, (best, used)))
            })
            .collect();
        prop_assert_eq!(got_selection, want_selection, "the RIB's best path and ECMP set");

        // What the peers were sent.
        let got_m: BTreeMap<IpNet, Vec<u32>> = s.peer(m).rib_in.iter().map(|((p, _), r)| (*p, r.as_path())).collect();
        prop_assert_eq!(got_m, want_m, "monitor: the best paths");
        let mut got_m2: BTreeMap<IpNet, Vec<Vec<u32>>> = BTreeMap::new();
        for ((p, _), r) in &s.peer(m2).rib_in {
            got_m2.entry(*p).or_default().push(r.as_path());
        }
        got_m2.values_mut().for_each(|v| v.sort());
        prop_assert_eq!(got_m2, want_m2, "ADD-PATH monitor: every used path");
        for (i, p) in peers.iter().enumerate() {
            if model.up[i] {
                let got: BTreeMap<IpNet, Vec<u32>> =
                    s.peer(*p).rib_in.iter().map(|((p, _), r)| (*p, r.as_path())).collect();
                prop_assert_eq!(&got, &want_source[i], "peer {}: the best paths not its own", i);
            }
        }
        Ok(())
    }

    /// The restart time the source peers' graceful restart capability gives (s).
    const RESTART_TIME: u16 = 120;

    /// A reference model of the RIB, written from the RFCs and sharing no code
    /// with `rib::core`, `rib::table` or `rib::decision`: the property test's
    /// expected values come from here, never from the RIB under test.
    #[derive(Default)]
    struct Model {
        /// Virtual seconds since the start.
        now: u64,
        up: [bool; 3],
        /// Per source peer: prefix (index into `PREFIXES`) → (AS_PATH, stale).
        paths: [BTreeMap<usize, (Vec<u32>, bool)>; 3],
        /// Per source peer: when its stale paths go.
        stale_until: [Option<u64>; 3],
    }

    impl Model {
        /// RFC 4724 §4.2: after a graceful loss the peer's paths are kept,
        /// marked stale, for its restart time; any other loss withdraws them.
        fn down(&mut self, peer: usize, graceful: bool) {
            self.up[peer] = false;
            if graceful {
                self.paths[peer].values_mut().for_each(|(_, stale)| *stale = true);
                self.stale_until[peer] = Some(self.now + u64::from(RESTART_TIME));
            } else {
                self.paths[peer].clear();
                self.stale_until[peer] = None;
            }
        }

        /// Back within its restart time: its stale paths wait for its
        /// End-of-RIB, at most the stale-path time.
        fn up(&mut self, peer: usize) {
            self.up[peer] = true;
            if self.stale_until[peer].is_some() {
                self.stale_until[peer] = Some(self.now + STALE_PATH_TIME.as_secs());
            }
        }

        /// RFC 4724 §4.2: End-of-RIB (both families) removes what is still stale.
        fn end_of_rib(&mut self, peer: usize) {
            self.paths[peer].retain(|_, (_, stale)| !*stale);
            self.stale_until[peer] = None;
        }

        fn advance(&mut self, secs: u64) {
            self.now += secs;
            for peer in 0..3 {
                if self.stale_until[peer].is_some_and(|t| t <= self.now) {
                    self.end_of_rib(peer);
                }
            }
        }

        /// RFC 4271 §9.1.2.2 for `prefix`: (best, used) source peers. Every
        /// path is eBGP with LOCAL_PREF 100, ORIGIN IGP and a reachable next
        /// hop, and each peer is its own neighbouring AS (so MED is never
        /// compared): (a) the shortest AS_PATH wins, then (f) the lowest BGP
        /// identifier (peer i's is 10.0.0.(11+i)). With `multipath_relax`,
        /// every path of the best length is used, at most `max_paths`.
        fn select(&self, prefix: usize, max_paths: usize) -> Option<(usize, Vec<usize>)> {
            let mut candidates: Vec<(usize, usize)> =
                (0..3).filter_map(|i| self.paths[i].get(&prefix).map(|(path, _)| (path.len(), i))).collect();
            candidates.sort();
            let &(best_len, best) = candidates.first()?;
            let used = candidates.iter().filter(|(len, _)| *len == best_len).map(|(_, i)| *i).take(max_paths).collect();
            Some((best, used))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 400,
            rng_seed: RngSeed::Fixed(0x005e_ed1b),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn the_monitors_view_is_the_ribs_best_paths_in_any_order(ops in proptest::collection::vec(op(), 1..60)) {
            run(&ops, false)?;
        }

        /// The same without the two table.rs bugs' triggers: fixed attributes per
        /// (peer, prefix) and one used path.
        #[test]
        fn the_monitors_view_is_the_ribs_best_path_with_fixed_attributes(ops in proptest::collection::vec(op(), 1..60)) {
            run(&ops, true)?;
        }
    }
}

// ----- forwarding (Output::Fib) -----

#[test]
fn forwarding_follows_the_ecmp_set_and_yields_to_own_routes() {
    let cfg = RibConfig {
        decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
        max_paths: 4,
        fib: true,
        ..rib_config()
    };
    let mut s = Sim::new(cfg);
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    let p = "192.0.2.10/32";
    s.send(a, ann(&[p], &[65011], "10.0.0.11"));
    assert_eq!(s.fib.get(&net(p)), Some(&vec!["10.0.0.11".parse::<IpAddr>().unwrap()]));
    s.send(b, ann(&[p], &[65012], "10.0.0.12"));
    let both: Vec<IpAddr> = vec!["10.0.0.11".parse().unwrap(), "10.0.0.12".parse().unwrap()];
    assert_eq!(s.fib.get(&net(p)), Some(&both), "ECMP: both next hops, best first");
    s.send(a, wd(&[p]));
    assert_eq!(s.fib.get(&net(p)), Some(&vec!["10.0.0.12".parse::<IpAddr>().unwrap()]));
    // This node originates the prefix: its own route wins, the learned one leaves the FIB.
    s.rib.originate(net(p), Some(PathAttrs { attributes: vec![], next_hop: None, link_local: None, priority: None }));
    s.rib.flush(s.now);
    s.drain();
    assert_eq!(s.fib.get(&net(p)), None);
    s.rib.originate(net(p), None);
    s.rib.flush(s.now);
    s.drain();
    assert_eq!(s.fib.get(&net(p)), Some(&vec!["10.0.0.12".parse::<IpAddr>().unwrap()]));
    s.down(b, false);
    assert!(s.fib.is_empty());
}

/// An import filter that sets priority `value` on `prefixes` (exact) and accepts the rest.
fn priority_policy(prefixes: &[&str], value: u32) -> Arc<PeerPolicy> {
    let mut f = Filter { name: "priority".into(), ..Filter::default() };
    for p in prefixes {
        let mut r = exact(p, Action::Accept);
        r.operations = vec![Operation::SetPriority(value)];
        f.import_v4.push(r);
    }
    policy_of(vec![f])
}

#[test]
fn the_best_paths_priority_reaches_the_fib_and_a_new_one_alone_moves_the_route() {
    let cfg = RibConfig {
        decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
        max_paths: 4,
        fib: true,
        ..rib_config()
    };
    let mut s = Sim::new(cfg);
    let (p1, p2) = ("10.1.1.0/24", "10.1.2.0/24");
    let a = s.add(11, 65011, |c| {
        c.policy = priority_policy(&[p1], 512);
        c.keep_received = true;
    });
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    s.send(a, ann(&[p1, p2], &[65011], "10.0.0.11"));
    assert_eq!(s.fib_priority, BTreeMap::from([(net(p1), 512)]), "p2 has no priority: the default");
    // B's path joins the ECMP set as the second path: the best path's priority stays.
    s.send(b, ann(&[p1], &[65012], "10.0.0.12"));
    assert_eq!(s.fib.get(&net(p1)).map(Vec::len), Some(2));
    assert_eq!(s.fib_priority.get(&net(p1)), Some(&512));
    // The filter now says 300: same next hops, a new priority.
    let mut new = cfg_like(&s, a, 65011, priority_policy(&[p1], 300));
    new.keep_received = true;
    s.rib.set_peer_config(a, new, s.now);
    s.drain();
    assert_eq!(s.fib_priority, BTreeMap::from([(net(p1), 300)]));
    // Without the rule the route goes back to the default.
    let mut new = cfg_like(&s, a, 65011, policy(&[], &[], None));
    new.keep_received = true;
    s.rib.set_peer_config(a, new, s.now);
    s.drain();
    assert!(s.fib_priority.is_empty());
    assert_eq!(s.fib.len(), 2);
}

// ----- export paused (a peer whose connection does not keep up) -----

#[test]
fn a_paused_peer_is_sent_nothing_then_only_the_net_difference() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    for p in [a, b, c] {
        s.up(p);
    }
    s.send(a, ann(&["10.1.1.0/24", "10.1.2.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).prefixes().len(), 2);
    s.rib.pause_export(b);
    assert!(s.rib.export_paused(b));
    let updates = s.peer(b).updates();
    // While paused: one prefix withdrawn, one announced and withdrawn again,
    // one announced, one changed several times.
    s.send(a, wd(&["10.1.1.0/24"]));
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "10.0.0.11"));
    s.send(a, wd(&["10.1.3.0/24"]));
    s.send(a, ann(&["10.1.4.0/24"], &[65011], "10.0.0.11"));
    for n in 0..5 {
        s.send(a, ann(&["10.1.2.0/24"], &[65011, 64600 + n], "10.0.0.11"));
    }
    assert_eq!(s.peer(b).updates(), updates, "nothing goes to a paused peer");
    assert_ne!(s.peer(c).updates(), updates, "the others are sent everything");
    let before = s.peer(c).updates();
    s.rib.resume_export(b, s.now);
    s.drain();
    assert!(!s.rib.export_paused(b));
    assert_eq!(s.peer(b).rib_in, s.peer(c).rib_in, "after resuming, B holds what C holds");
    assert!(s.peer(b).updates() - updates <= 3, "the net difference only: {}", s.peer(b).updates() - updates);
    assert_eq!(s.peer(c).updates(), before, "resuming B sends C nothing");
    // Back in its group: later changes reach it as they reach the others.
    s.send(a, ann(&["10.1.5.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).rib_in, s.peer(c).rib_in);
}

#[test]
fn paused_export_converges_to_the_same_table_whatever_the_interleaving() {
    // Two sources change a small pool of prefixes at random while monitor B
    // is paused and resumed at random; monitor C never is. Whenever B is not
    // paused, and at the end, B holds exactly what C holds.
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut s = Sim::new(rib_config());
    let srcs = [s.add(11, 65011, |_| {}), s.add(14, 65014, |_| {})];
    let b = s.add(12, 65012, |_| {});
    let c = s.add(13, 65013, |_| {});
    for p in [srcs[0], srcs[1], b, c] {
        s.up(p);
    }
    for step in 0..2000 {
        let src = srcs[next(2) as usize];
        let prefix = format!("10.2.{}.0/24", next(16));
        match next(10) {
            0 => s.rib.pause_export(b),
            1 => {
                s.rib.resume_export(b, s.now);
                s.drain();
            }
            2 | 3 => s.send(src, wd(&[&prefix])),
            4 if step % 7 == 0 => {
                // A source flaps: its routes go, then it comes back empty.
                s.down(src, false);
                s.up(src);
            }
            _ => {
                let asn = if src == srcs[0] { 65011 } else { 65014 };
                let path: Vec<u32> = std::iter::once(asn).chain((0..next(3)).map(|i| 64700 + i as u32)).collect();
                let nh = if src == srcs[0] { "10.0.0.11" } else { "10.0.0.14" };
                s.send(src, ann(&[&prefix], &path, nh));
            }
        }
        if !s.rib.export_paused(b) {
            assert_eq!(s.peer(b).rib_in, s.peer(c).rib_in, "step {step}");
        }
    }
    s.rib.resume_export(b, s.now);
    s.drain();
    assert_eq!(s.peer(b).rib_in, s.peer(c).rib_in);
}

#[test]
fn a_paused_peer_that_goes_down_gets_the_whole_table_on_its_next_session() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.rib.pause_export(b);
    s.send(a, ann(&["10.1.2.0/24"], &[65011], "10.0.0.11"));
    s.down(b, false);
    assert!(!s.rib.export_paused(b), "the backlog goes with the session");
    s.up(b);
    assert_eq!(s.peer(b).prefixes().len(), 2);
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(s.peer(b).prefixes().len(), 3, "in its group again");
}

// ----- 13. explain -----

/// Calico's default export over these ranges (IPPool `pods` 10.244.0.0/16,
/// `quiet` 10.250.0.0/16 with disableBGPExport), behind `filters`.
fn calico(filters: Vec<Filter>, peer_type: PeerType) -> Arc<PeerPolicy> {
    let ranges = vec![
        ExportRange { cidr: net("10.244.0.0/16"), source: RangeSource::IpPool("pods".into()) },
        ExportRange { cidr: net("10.250.0.0/16"), source: RangeSource::IpPoolExportDisabled("quiet".into()) },
    ];
    Arc::new(PeerPolicy {
        filters: filters.into_iter().map(Arc::new).collect(),
        peer_type,
        default_export: DefaultExport::Calico(Arc::new(ranges)),
    })
}

fn peer_of<'a>(e: &'a Explanation, name: &str) -> &'a PeerExplanation {
    e.peers.iter().find(|p| p.name == name).expect("the peer is explained")
}

/// The export outcome of each path towards `name`.
fn sent_to(e: &Explanation, name: &str) -> Vec<PathExport> {
    match &peer_of(e, name).export {
        Export::Paths { paths, .. } => paths.clone(),
        other => panic!("{name}: no paths: {other:?}"),
    }
}

#[test]
fn explain_an_origination_sent_by_calicos_default_and_dropped_by_a_looping_peer() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |c| c.policy = calico(vec![], PeerType::Ebgp));
    // B is in this node's AS... as seen from A's routes: it has A's AS.
    let b = s.add(12, 65011, |c| c.policy = calico(vec![], PeerType::Ebgp));
    s.up(a);
    s.up(b);
    s.rib.originate(net("10.244.1.0/26"), Some(origination()));
    s.rib.flush(s.now);
    s.drain();
    let e = s.rib.explain(net("10.244.1.0/26"));
    assert_eq!(e.forwarding, Forwarding::Originated);
    assert_eq!(e.paths.len(), 1);
    assert_eq!((&e.paths[0].source, e.paths[0].status), (&PathSource::Originated, PathStatus::Best));
    assert_eq!(e.export_ranges.iter().map(|r| r.cidr).collect::<Vec<_>>(), vec![net("10.244.0.0/16")]);
    let PathExport::Sent { by, dropped_by_peer, attrs, path_id } = &sent_to(&e, "peer11")[0] else {
        panic!("sent to A")
    };
    assert_eq!((by, *dropped_by_peer, *path_id), (&PolicyStep::OwnRoute, None, None));
    assert_eq!(attrs.as_path_ref().unwrap().to_string(), LOCAL_AS.to_string(), "as sent: our AS prepended");

    // A's route goes to B, whose AS is already in the path: B drops it.
    s.send(a, ann(&["10.244.9.0/26"], &[65011], "10.0.0.11"));
    let e = s.rib.explain(net("10.244.9.0/26"));
    let PathExport::Sent { by, dropped_by_peer, .. } = &sent_to(&e, "peer12")[0] else { panic!("sent to B") };
    assert_eq!(
        by,
        &PolicyStep::InRange(ExportRange { cidr: net("10.244.0.0/16"), source: RangeSource::IpPool("pods".into()) })
    );
    assert_eq!(*dropped_by_peer, Some(PeerDrops::AsPathLoop(65011)));
    assert_eq!(sent_to(&e, "peer11"), vec![PathExport::FromThisPeer], "split horizon");
    assert_eq!(peer_of(&e, "peer11").import, Import::InRib(1));
    assert_eq!(e.forwarding, Forwarding::Learned(vec!["10.0.0.11".parse().unwrap()]));
}

/// ORIGIN IGP, an empty AS_PATH: what the daemon originates.
fn origination() -> PathAttrs {
    PathAttrs {
        attributes: vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::default())),
        ],
        next_hop: None,
        link_local: None,
        priority: None,
    }
}

#[test]
fn explain_export_names_the_filter_rule_and_calicos_default() {
    let mut s = Sim::new(rib_config());
    let mut no_lab = Filter { name: "no-lab".into(), ..Filter::default() };
    no_lab.export_v4 = vec![exact("10.244.7.0/26", Action::Accept), exact("10.244.8.0/26", Action::Reject)];
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |c| c.policy = calico(vec![no_lab], PeerType::Ebgp));
    s.up(a);
    s.up(b);
    for p in ["10.244.8.0/26", "10.250.1.0/26", "192.168.0.0/24", "10.244.7.0/26"] {
        s.send(a, ann(&[p], &[65011], "10.0.0.11"));
    }
    let only = |p: &str| sent_to(&s.rib.explain(net(p)), "peer12").remove(0);
    let PathExport::Rejected(step) = only("10.244.8.0/26") else { panic!("a rule of no-lab rejects it") };
    let PolicyStep::Rule { filter, index: 1, v6: false, .. } = &step else { panic!("rule 1: {step:?}") };
    assert_eq!(filter.name, "no-lab");
    assert_eq!(step.rule(), Some(&exact("10.244.8.0/26", Action::Reject)));
    assert_eq!(
        only("10.250.1.0/26"),
        PathExport::Rejected(PolicyStep::ExportDisabled(ExportRange {
            cidr: net("10.250.0.0/16"),
            source: RangeSource::IpPoolExportDisabled("quiet".into())
        }))
    );
    assert_eq!(only("192.168.0.0/24"), PathExport::Rejected(PolicyStep::NotExportable));
    assert!(matches!(only("10.244.7.0/26"), PathExport::Sent { by: PolicyStep::Rule { index: 0, .. }, .. }));
    // What the explanation says is what B has.
    assert_eq!(s.peer(b).prefixes(), vec![net("10.244.7.0/26")]);
}

#[test]
fn explain_paths_not_best_not_sent_without_add_path_and_beyond_the_add_path_limit() {
    let (mut s, a, b, [_all, one, plain]) = ecmp_sim();
    let c = s.add(16, 65016, |_| {});
    s.up(c);
    // A third, longer path: not in the ECMP set.
    s.send(c, ann(&["192.0.2.10/32"], &[65016, 65999, 65100], "10.0.0.16"));
    let e = s.rib.explain(net("192.0.2.10/32"));
    let statuses: Vec<PathStatus> = e.paths.iter().map(|p| p.status).collect();
    assert_eq!(statuses, vec![PathStatus::Best, PathStatus::Multipath, PathStatus::Lost(Reason::AsPathLength)]);
    let hops: Vec<IpAddr> = ["10.0.0.11", "10.0.0.12"].iter().map(|h| h.parse().unwrap()).collect();
    assert_eq!(e.forwarding, Forwarding::Learned(hops));
    let to_plain = sent_to(&e, s.rib.peer_name(plain).unwrap());
    assert!(matches!(to_plain[0], PathExport::Sent { path_id: None, .. }));
    assert_eq!(to_plain[1..], [PathExport::OnlyBestWithoutAddPath, PathExport::NotUsed]);
    let to_one = sent_to(&e, s.rib.peer_name(one).unwrap());
    assert!(matches!(to_one[0], PathExport::Sent { path_id: Some(_), .. }));
    assert_eq!(to_one[1..], [PathExport::AddPathLimit(1), PathExport::NotUsed]);
    assert_eq!(sent_to(&e, s.rib.peer_name(a).unwrap())[0], PathExport::FromThisPeer);
    assert!(matches!(sent_to(&e, s.rib.peer_name(b).unwrap())[0], PathExport::Sent { .. }));
    // With an ECMP width of one, B's equal path waits outside the full set.
    s.rib.set_decision(DecisionOptions { multipath_relax: true, ..DecisionOptions::default() }, 1);
    let e = s.rib.explain(net("192.0.2.10/32"));
    assert_eq!(e.paths[1].status, PathStatus::EcmpFull { max_paths: 1 });
}

#[test]
fn explain_ibgp_split_horizon_and_reflection() {
    let mut s = Sim::new(rib_config());
    let i1 = s.add(21, LOCAL_AS, |_| {});
    let i2 = s.add(22, LOCAL_AS, |_| {});
    s.up(i1);
    s.up(i2);
    s.send(i1, ann_with(&["10.9.0.0/16"], &[], "10.0.0.21", vec![Attr::LocalPref(100)]));
    let e = s.rib.explain(net("10.9.0.0/16"));
    assert_eq!(peer_of(&e, "peer21").kind, PeerKind::Ibgp);
    assert_eq!(sent_to(&e, "peer22"), vec![PathExport::IbgpSplitHorizon { reflector: false }]);
    assert!(s.peer(i2).rib_in.is_empty());
    // As a reflector, the same route goes from a client to the other iBGP peer.
    let mut s = Sim::new(RibConfig { cluster_id: Some(CLUSTER_ID), ..rib_config() });
    let client = s.add(21, LOCAL_AS, |c| c.rr_client = true);
    let other = s.add(22, LOCAL_AS, |_| {});
    let other2 = s.add(23, LOCAL_AS, |_| {});
    s.up(client);
    s.up(other);
    s.up(other2);
    s.send(other, ann_with(&["10.9.0.0/16"], &[], "10.0.0.22", vec![Attr::LocalPref(100)]));
    let e = s.rib.explain(net("10.9.0.0/16"));
    assert!(matches!(sent_to(&e, "peer21")[0], PathExport::Sent { .. }), "non-client to client");
    assert_eq!(
        sent_to(&e, "peer23"),
        vec![PathExport::IbgpSplitHorizon { reflector: true }],
        "non-client to non-client"
    );
}

#[test]
fn explain_import_rejections_by_loop_next_hop_and_policy() {
    let mut s = Sim::new(rib_config());
    let mut f = Filter { name: "only-pods".into(), ..Filter::default() };
    f.import_v4 = vec![exact("10.1.1.0/24", Action::Reject)];
    let a = s.add(11, 65011, |c| c.policy = policy_of(vec![f.clone()]));
    let b = s.add(12, 65012, |c| {
        c.policy = policy_of(vec![f]);
        c.keep_received = true;
    });
    s.up(a);
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.send(a, ann(&["10.1.2.0/24"], &[65011, LOCAL_AS], "10.0.0.11"));
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "127.0.0.1"));
    let import = |s: &Sim, p: &str, name: &str| peer_of(&s.rib.explain(net(p)), name).import.clone();
    let Import::Rejected(Rejection::Policy(step)) = import(&s, "10.1.1.0/24", "peer11") else { panic!("policy") };
    assert_eq!(step.rule(), Some(&exact("10.1.1.0/24", Action::Reject)));
    assert_eq!(
        import(&s, "10.1.2.0/24", "peer11"),
        Import::Rejected(Rejection::AsPathLoop { asn: LOCAL_AS, allowed: 0 })
    );
    assert_eq!(
        import(&s, "10.1.3.0/24", "peer11"),
        Import::Rejected(Rejection::NextHop { kind: Ignored::MartianNextHop, addr: "127.0.0.1".parse().unwrap() })
    );
    assert_eq!(import(&s, "10.1.4.0/24", "peer11"), Import::NotInRib { unrecorded: false }, "never sent");
    // Sent again, acceptably: the record goes.
    s.send(a, ann(&["10.1.3.0/24"], &[65011], "10.0.0.11"));
    assert_eq!(import(&s, "10.1.3.0/24", "peer11"), Import::InRib(1));
    // Withdrawn: the record goes too.
    s.send(a, wd(&["10.1.2.0/24"]));
    assert_eq!(import(&s, "10.1.2.0/24", "peer11"), Import::NotInRib { unrecorded: false });
    // With the copy kept before policy, "not received" is certain and a
    // rejection is what the policy says now.
    s.send(b, ann(&["10.1.1.0/24"], &[65012], "10.0.0.12"));
    assert!(matches!(import(&s, "10.1.1.0/24", "peer12"), Import::Rejected(Rejection::Policy(_))));
    assert_eq!(import(&s, "10.1.9.0/24", "peer12"), Import::NotReceived);
    s.down(b, false);
    assert_eq!(import(&s, "10.1.9.0/24", "peer12"), Import::NoSession);
    assert_eq!(peer_of(&s.rib.explain(net("10.1.9.0/24")), "peer12").export, Export::NoSession);
}

#[test]
fn explain_a_route_whose_next_hop_is_unreachable_and_paused_export() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    let b = s.add(12, 65012, |_| {});
    s.up(a);
    s.up(b);
    s.send(a, ann(&["10.1.1.0/24"], &[65011], "10.0.0.11"));
    s.rib.pause_export(b);
    let e = s.rib.explain(net("10.1.1.0/24"));
    assert!(matches!(peer_of(&e, "peer12").export, Export::Paths { paused: true, .. }));
    s.rib.set_reachability(Box::new(|nh| (nh != Some("10.0.0.11".parse().unwrap())).then_some(0)));
    let e = s.rib.explain(net("10.1.1.0/24"));
    assert_eq!(e.forwarding, Forwarding::NoUsablePath);
    assert_eq!(e.paths[0].status, PathStatus::Lost(Reason::NextHopUnreachable));
    assert_eq!(sent_to(&e, "peer12"), vec![PathExport::NotUsed]);
    let none = s.rib.explain(net("10.7.0.0/16"));
    assert_eq!((&none.forwarding, none.paths.len()), (&Forwarding::NoRoute, 0));
    assert_eq!(sent_to(&none, "peer12"), vec![]);
}

#[test]
fn explain_says_an_unnegotiated_family_and_the_deferral() {
    let mut s = Sim::new(RibConfig { defer: Some(Duration::from_secs(60)), ..rib_config() });
    let a = s.add(11, 65011, |_| {});
    // A configured peer not up yet holds the deferral for a while.
    s.add(12, 65012, |_| {});
    s.up_with(a, |x| x.families = FamilySet::of(&[V4]));
    let e = s.rib.explain(net("2001:db8::/32"));
    assert!(e.deferring);
    assert_eq!(peer_of(&e, "peer11").import, Import::FamilyNotNegotiated);
    assert_eq!(peer_of(&e, "peer11").export, Export::FamilyNotNegotiated);
}

#[test]
fn explain_remembers_a_bounded_number_of_rejections_and_says_so() {
    let mut s = Sim::new(rib_config());
    let a = s.add(11, 65011, |_| {});
    s.up(a);
    let prefixes: Vec<String> = (0..=REJECTIONS_KEPT).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    // Every one an AS-path loop.
    for chunk in refs.chunks(256) {
        s.send(a, ann(chunk, &[65011, LOCAL_AS], "10.0.0.11"));
    }
    let import = |s: &Sim, p: &str| peer_of(&s.rib.explain(net(p)), "peer11").import.clone();
    assert!(matches!(import(&s, refs[0]), Import::Rejected(Rejection::AsPathLoop { .. })));
    assert!(matches!(import(&s, refs[REJECTIONS_KEPT - 1]), Import::Rejected(_)));
    assert_eq!(import(&s, refs[REJECTIONS_KEPT]), Import::NotInRib { unrecorded: true }, "past the bound");
    // A new session starts with none.
    s.down(a, false);
    s.up(a);
    assert_eq!(import(&s, refs[0]), Import::NotInRib { unrecorded: false });
}
