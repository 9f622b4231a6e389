//! What the RIB does with routes it must not take as they came: RFC 7606
//! treat-as-withdraw found by the codec, and the checks that need the
//! session (RFC 6793 AS4_PATH, RFC 5065 confederation segments, next hops,
//! negotiated families). A peer's UPDATEs go through the codec as its bytes
//! would (a decode error resets the session, as the daemon does); what the
//! RIB sends a second peer, the monitor, is decoded with the monitor's context.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgpd_proto::nlri::Nlri;
use bgpd_proto::rib::attrs::PathAttrs;
use bgpd_proto::rib::checks::Ignored;
use bgpd_proto::rib::core::{Output, PeerConfig, Rib, RibConfig, SessionInfo};
use bgpd_proto::rib::decision::DecisionOptions;
use bgpd_proto::rib::table::PeerId;
use bgpd_proto::wire::{
    encode_path_attributes, Aggregator, AsPath, AsSegment, Asns, Attr, Message, MpNlri, MpReach, NextHop, Origin,
    PathAttribute, SegmentKind, Update,
};
use bgpd_proto::{AttrCode, DecodeError, ErrorAction, Family, FamilySet, WireContext};
use ipnet::IpNet;

const LOCAL_AS: u32 = 65000;
const PEER_AS: u32 = 65011;
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const V4: Family = Family::IPV4_UNICAST;
const V6: Family = Family::IPV6_UNICAST;
const P4: &str = "198.51.100.0/24";
const P6: &str = "2001:db8:1::/48";

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

/// The RIB, the peer under test (10.0.0.11) and a monitor peer (10.0.0.20, AS 65020).
struct Harness {
    rib: Rib,
    now: Instant,
    peer: PeerId,
    monitor: PeerId,
    /// How the peer encodes what it sends (its session's receive context here).
    rx: WireContext,
    warnings: Vec<String>,
    /// What the monitor was sent, decoded.
    monitor_got: Vec<Update>,
}

fn session(peer_id: Ipv4Addr) -> SessionInfo {
    SessionInfo {
        peer_id,
        families: FamilySet::of(&[V4, V6]),
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

fn peer_config(name: &str, addr: Ipv4Addr, peer_as: u32) -> PeerConfig {
    PeerConfig::new(name, IpAddr::V4(addr), LOCAL_AS, peer_as)
}

impl Harness {
    /// An eBGP peer of AS 65011 (`peer_as` changes that) whose session `f` may change.
    fn new(peer_as: u32, f: impl FnOnce(&mut SessionInfo)) -> Harness {
        let now = Instant::now();
        let cfg = RibConfig {
            router_id: Ipv4Addr::new(10, 255, 0, 1),
            local_as: LOCAL_AS,
            cluster_id: None,
            decision: DecisionOptions::default(),
            max_paths: 1,
            defer: None,
            defer_peer_wait: Duration::from_secs(10),
            fib: false,
        };
        let mut rib = Rib::new(cfg, now);
        let peer = rib.add_peer(peer_config("peer", Ipv4Addr::new(10, 0, 0, 11), peer_as));
        let monitor = rib.add_peer(peer_config("monitor", Ipv4Addr::new(10, 0, 0, 20), 65020));
        let mut s = session(Ipv4Addr::new(10, 0, 0, 11));
        f(&mut s);
        // The two directions negotiate the same AS size and next hop families.
        let rx = WireContext::new(s.tx.four_octet_as).with_extended_next_hop(s.tx.extended_next_hop);
        rib.peer_up(peer, s, now);
        rib.peer_up(monitor, session(Ipv4Addr::new(10, 0, 0, 20)), now);
        let mut h = Harness { rib, now, peer, monitor, rx, warnings: Vec::new(), monitor_got: Vec::new() };
        h.drain();
        h.monitor_got.clear();
        h
    }

    /// The peer sends these bytes: decoded, then into the RIB as the daemon does
    /// (an RFC 7606 treat-as-withdraw issue withdraws every announcement; a
    /// decode error resets the session, so the peer's routes go).
    fn receive(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        self.now += Duration::from_secs(1);
        match Message::decode(bytes, &self.rx) {
            Ok(Some(frame)) => {
                let Message::Update(u) = frame.message else { panic!("not an UPDATE") };
                let withdraw_all = frame.issues.iter().any(|i| i.action == ErrorAction::TreatAsWithdraw);
                self.rib.update(self.peer, &u, withdraw_all, self.now);
                self.rib.flush(self.now);
                self.drain();
                Ok(())
            }
            Ok(None) => panic!("test message incomplete"),
            Err(e) => {
                self.rib.peer_down(self.peer, false, self.now);
                self.drain();
                Err(e)
            }
        }
    }

    /// The peer sends a well-formed UPDATE.
    fn send(&mut self, u: Update) {
        let bytes = Message::Update(u).to_bytes(&self.rx).expect("test UPDATE encodes");
        self.receive(&bytes).expect("test UPDATE decodes");
    }

    fn drain(&mut self) {
        while let Some(o) = self.rib.poll_output() {
            match o {
                Output::Warning(_, w) => self.warnings.push(w),
                Output::Send { peers, messages } if peers.contains(&self.monitor) => {
                    for m in messages {
                        let ctx = WireContext::new(true);
                        let f = Message::decode(&m, &ctx).expect("RIB output decodes").expect("whole message");
                        let Message::Update(u) = f.message else { panic!("Send carries a non-UPDATE") };
                        self.monitor_got.push(u);
                    }
                }
                _ => {}
            }
        }
    }

    /// Prefixes with a used path.
    fn prefixes(&self) -> Vec<IpNet> {
        self.rib.routes(None).into_iter().filter(|(_, v)| v.iter().any(|p| p.used)).map(|(p, _)| p).collect()
    }

    /// The best path's attributes for `prefix`.
    fn best(&self, prefix: &str) -> Option<Arc<PathAttrs>> {
        self.rib.used(net(prefix)).first().map(|p| p.attrs.clone())
    }

    fn ignored(&self, kind: Ignored) -> u64 {
        self.rib.ignored(self.peer).get(kind)
    }

    /// Warnings that name `kind`.
    fn warned(&self, kind: Ignored) -> usize {
        self.warnings.iter().filter(|w| w.contains(kind.name())).count()
    }
}

/// ORIGIN IGP and an AS_SEQUENCE of `path`.
fn base(path: &[u32]) -> Vec<PathAttribute> {
    vec![
        PathAttribute::new(Attr::Origin(Origin::Igp)),
        PathAttribute::new(Attr::AsPath(AsPath::sequence(path.iter().copied()))),
    ]
}

/// An UPDATE announcing `prefix` with path `path` and next hop `nh`: IPv4 in the
/// NLRI field with NEXT_HOP, IPv6 in MP_REACH_NLRI (with `link_local`), plus `extra`.
fn ann(prefix: &str, path: &[u32], nh: &str, link_local: Option<&str>, extra: Vec<Attr>) -> Update {
    let mut attributes = base(path);
    let mut u = Update::default();
    match (net(prefix), nh.parse::<IpAddr>().expect("test next hop")) {
        (IpNet::V4(p), IpAddr::V4(a)) => {
            attributes.push(PathAttribute::new(Attr::NextHop(a)));
            u.nlri = vec![Nlri::new(p)];
        }
        (IpNet::V6(p), IpAddr::V6(global)) => {
            let link_local = link_local.map(|l| l.parse().expect("test link-local"));
            let next_hop = NextHop::V6 { global, link_local };
            let r = MpReach { family: V6, next_hop, nlri: MpNlri::V6(vec![Nlri::new(p)]) };
            attributes.insert(0, PathAttribute::new(Attr::MpReach(Box::new(r))));
        }
        (IpNet::V4(p), IpAddr::V6(global)) => {
            // RFC 8950: IPv4 NLRI with an IPv6 next hop, in MP_REACH_NLRI.
            let next_hop = NextHop::V6 { global, link_local: None };
            let r = MpReach { family: V4, next_hop, nlri: MpNlri::V4(vec![Nlri::new(p)]) };
            attributes.insert(0, PathAttribute::new(Attr::MpReach(Box::new(r))));
        }
        _ => panic!("IPv6 prefix with an IPv4 next hop"),
    }
    attributes.extend(extra.into_iter().map(PathAttribute::new));
    u.attributes = attributes;
    u
}

/// An UPDATE message from its Path Attributes and NLRI fields (no withdrawals).
fn raw_update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    let mut m = vec![0xFF; 16];
    m.extend_from_slice(&((19 + b.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&b);
    m
}

fn attr_bytes(attrs: &[PathAttribute], ctx: &WireContext) -> Vec<u8> {
    let mut out = Vec::new();
    encode_path_attributes(attrs, ctx, &mut out).expect("test attributes encode");
    out
}

/// COMMUNITIES of length 5: RFC 7606 §7.8, treat-as-withdraw.
const BAD_COMMUNITIES: [u8; 8] = [0xC0, 8, 5, 0, 1, 0, 1, 0];
/// 198.51.100.0/24 in the NLRI field.
const P4_NLRI: [u8; 4] = [24, 198, 51, 100];

fn flat(p: &AsPath) -> Vec<u32> {
    p.segments.iter().flat_map(|s| s.asns.iter().copied()).collect()
}

// ----- RFC 7606 treat-as-withdraw, through the codec -----

#[test]
fn a_malformed_update_withdraws_an_installed_ipv4_route() {
    let mut h = Harness::new(PEER_AS, |_| {});
    h.send(ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]));
    assert_eq!(h.prefixes(), vec![net(P4)]);
    let attrs =
        [attr_bytes(&ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]).attributes, &h.rx), BAD_COMMUNITIES.to_vec()];
    h.receive(&raw_update(&attrs.concat(), &P4_NLRI)).expect("treat-as-withdraw keeps the session");
    assert!(h.prefixes().is_empty(), "the route the malformed UPDATE announced is withdrawn");
    assert!(h.monitor_got.last().is_some_and(|u| u.withdrawn.len() == 1), "and withdrawn from the monitor");
}

#[test]
fn a_malformed_update_withdraws_an_installed_ipv6_route() {
    let mut h = Harness::new(PEER_AS, |_| {});
    h.send(ann(P6, &[PEER_AS], "2001:db8::11", None, vec![]));
    assert_eq!(h.prefixes(), vec![net(P6)]);
    // MP_REACH_NLRI first (RFC 7606 §5.1), then a malformed COMMUNITIES.
    let good = attr_bytes(&ann(P6, &[PEER_AS, 64999], "2001:db8::11", None, vec![]).attributes, &h.rx);
    h.receive(&raw_update(&[good, BAD_COMMUNITIES.to_vec()].concat(), &[])).expect("session stays");
    assert!(h.prefixes().is_empty(), "the IPv6 route the malformed UPDATE announced is withdrawn");
    assert!(h.monitor_got.last().and_then(Update::mp_unreach).is_some_and(|w| w.nlri.len() == 1));
}

#[test]
fn an_attribute_overrun_hiding_mp_reach_resets_the_session_and_no_route_survives() {
    let mut h = Harness::new(PEER_AS, |_| {});
    h.send(ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]));
    h.send(ann(P6, &[PEER_AS], "2001:db8::11", None, vec![]));
    assert_eq!(h.prefixes(), vec![net(P4), net(P6)]);
    // ORIGIN, AS_PATH, NEXT_HOP, then a COMMUNITIES whose length runs past the
    // field, over an MP_REACH_NLRI announcing the IPv6 prefix again.
    let head = attr_bytes(&ann(P4, &[PEER_AS, 64999], "10.0.0.11", None, vec![]).attributes, &h.rx);
    let mp = ann(P6, &[PEER_AS, 64999], "2001:db8::11", None, vec![]).attributes;
    let hidden = attr_bytes(&mp[..1], &h.rx);
    let overrun = [vec![0xC0, 8, 200, 0, 1, 0, 1], hidden].concat();
    let e = h.receive(&raw_update(&[head, overrun].concat(), &P4_NLRI)).expect_err("RFC 7606 §3 (j): session reset");
    assert_eq!((e.code, e.subcode), (3, 1), "UPDATE Message Error / Malformed Attribute List");
    assert!(h.prefixes().is_empty(), "neither the IPv4 nor the IPv6 route stays with its old attributes");
}

// ----- RFC 4760: families -----

#[test]
fn mp_reach_of_a_family_the_session_did_not_negotiate_is_ignored_and_counted() {
    let mut h = Harness::new(PEER_AS, |s| s.families = FamilySet::of(&[V4]));
    h.send(ann(P6, &[PEER_AS], "2001:db8::11", None, vec![]));
    h.send(ann("2001:db8:2::/48", &[PEER_AS], "2001:db8::11", None, vec![]));
    h.send(ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]));
    assert_eq!(h.prefixes(), vec![net(P4)], "IPv6 was not negotiated: its NLRI are not installed");
    assert_eq!(h.ignored(Ignored::FamilyNotNegotiated), 2);
    assert_eq!(h.warned(Ignored::FamilyNotNegotiated), 1, "logged once per session: {:?}", h.warnings);
    assert!(h.monitor_got.iter().all(|u| u.mp_reach().is_none()), "nothing IPv6 is passed on");
}

// ----- RFC 6793: AS4_PATH -----

#[test]
fn as4_path_from_a_4_octet_speaker_is_discarded_not_merged_nor_passed_on() {
    let mut h = Harness::new(PEER_AS, |_| {});
    // Merged, AS4_PATH [65000] would make the path 65011 65000: a loop through this AS.
    let as4 = vec![
        Attr::As4Path(AsPath::sequence([LOCAL_AS])),
        Attr::As4Aggregator(Aggregator { asn: 4_200_000_000, address: Ipv4Addr::new(192, 0, 2, 9) }),
    ];
    h.send(ann(P4, &[PEER_AS, 64999], "10.0.0.11", None, as4));
    let best = h.best(P4).expect("RFC 6793 §4.1: the route is kept, its AS4_PATH discarded");
    assert_eq!(flat(&best.as_path()), vec![PEER_AS, 64999], "AS_PATH as received");
    assert!(best.attr(AttrCode::AS4_PATH).is_none() && best.attr(AttrCode::AS4_AGGREGATOR).is_none());
    let sent = h.monitor_got.last().expect("the monitor gets the route");
    assert_eq!(flat(sent.as_path().expect("AS_PATH")), vec![LOCAL_AS, PEER_AS, 64999]);
    assert!(sent.attr(AttrCode::AS4_PATH).is_none() && sent.attr(AttrCode::AS4_AGGREGATOR).is_none());
    assert_eq!(h.ignored(Ignored::As4FromNewSpeaker), 1);
}

#[test]
fn as4_path_and_as4_aggregator_from_a_2_octet_speaker_are_merged() {
    let mut h = Harness::new(PEER_AS, |s| s.tx = WireContext::new(false));
    let agg = |asn| Aggregator { asn, address: Ipv4Addr::new(192, 0, 2, 9) };
    let as4 = vec![
        Attr::Aggregator(agg(23456)),
        Attr::As4Path(AsPath::sequence([4_200_000_000])),
        Attr::As4Aggregator(agg(4_200_000_000)),
    ];
    h.send(ann(P4, &[PEER_AS, 23456], "10.0.0.11", None, as4));
    let best = h.best(P4).expect("route");
    assert_eq!(flat(&best.as_path()), vec![PEER_AS, 4_200_000_000], "RFC 6793 §4.2.3 merge");
    assert_eq!(best.attr(AttrCode::AGGREGATOR), Some(&Attr::Aggregator(agg(4_200_000_000))));
    assert!(best.attr(AttrCode::AS4_PATH).is_none() && best.attr(AttrCode::AS4_AGGREGATOR).is_none());
    assert_eq!(h.ignored(Ignored::As4FromNewSpeaker), 0);
}

// ----- RFC 5065: confederation segments -----

#[test]
fn confederation_segments_from_an_external_peer_withdraw_the_route() {
    let mut h = Harness::new(PEER_AS, |_| {});
    h.send(ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]));
    let mut u = ann(P4, &[PEER_AS], "10.0.0.11", None, vec![]);
    let confed = AsSegment { kind: SegmentKind::ConfedSequence, asns: Asns::from_slice(&[65100]) };
    let seq = AsSegment { kind: SegmentKind::Sequence, asns: Asns::from_slice(&[PEER_AS]) };
    u.attributes[1] = PathAttribute::new(Attr::AsPath(AsPath { segments: [confed, seq].into_iter().collect() }));
    h.send(u);
    assert!(h.prefixes().is_empty(), "RFC 5065 §5 / RFC 7606 §7.2: treat-as-withdraw");
    assert_eq!(h.ignored(Ignored::ConfedFromExternal), 1);
    assert_eq!(h.warned(Ignored::ConfedFromExternal), 1);
}

// ----- next hops -----

#[test]
fn unusable_next_hops_withdraw_the_route_and_are_counted_by_reason() {
    use Ignored::{Ipv6NextHopWithoutExtendedNextHop as NoEnh, MartianNextHop as Martian, OwnNextHop as Own};
    let mut h = Harness::new(PEER_AS, |_| {});
    let cases: &[(&str, &str, Option<&str>, Ignored)] = &[
        (P4, "10.0.0.1", None, Own),
        (P4, "0.0.0.0", None, Martian),
        (P4, "0.1.2.3", None, Martian),
        (P4, "127.0.0.1", None, Martian),
        (P4, "224.0.0.5", None, Martian),
        (P4, "240.0.0.1", None, Martian),
        (P4, "255.255.255.255", None, Martian),
        (P4, "2001:db8::11", None, NoEnh),
        (P6, "fd00::1", None, Own),
        (P6, "fd00::1", Some("fe80::11"), Own),
        (P6, "::", None, Martian),
        (P6, "::1", None, Martian),
        (P6, "ff02::1", None, Martian),
        (P6, "::ffff:10.0.0.11", None, Martian),
        (P6, "::", Some("::"), Martian),
        (P6, "2001:db8::11", Some("ff02::2"), Martian),
    ];
    for (i, (prefix, nh, ll, kind)) in cases.iter().enumerate() {
        let good = if prefix.contains(':') { "2001:db8::11" } else { "10.0.0.11" };
        h.send(ann(prefix, &[PEER_AS], good, None, vec![]));
        assert_eq!(h.prefixes(), vec![net(prefix)], "case {i}: installed first");
        let before = h.ignored(*kind);
        h.send(ann(prefix, &[PEER_AS], nh, *ll, vec![]));
        assert!(h.prefixes().is_empty(), "case {i}: next hop {nh} {ll:?} must withdraw {prefix}");
        assert_eq!(h.ignored(*kind), before + 1, "case {i}: counted as {kind:?}");
    }
    for kind in [Own, Martian, NoEnh] {
        assert_eq!(h.warned(kind), 1, "{kind:?} logged once per session: {:?}", h.warnings);
    }
    assert!(h.monitor_got.last().is_some_and(|u| u.mp_reach().is_none() && u.nlri.is_empty()), "last: a withdrawal");
}

#[test]
fn legitimate_next_hops_are_kept() {
    let mut h = Harness::new(PEER_AS, |_| {});
    let cases: &[(&str, &str, Option<&str>)] = &[
        // Third-party next hops: another router on the peering LAN, a route server's client.
        ("198.51.100.0/24", "10.0.0.99", None),
        ("203.0.113.0/24", "192.0.2.1", None),
        // RFC 2545 §3: global and link-local; link-local alone (16 octets, or BIRD's `::` + link-local).
        ("2001:db8:1::/48", "2001:db8::11", Some("fe80::11")),
        ("2001:db8:2::/48", "fe80::11", None),
        ("2001:db8:3::/48", "::", Some("fe80::11")),
    ];
    for (prefix, nh, ll) in cases {
        h.send(ann(prefix, &[PEER_AS], nh, *ll, vec![]));
    }
    assert_eq!(h.prefixes().len(), cases.len(), "{:?}", h.warnings);
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);

    // RFC 8950 where negotiated: IPv4 NLRI with an IPv6 next hop.
    let mut enh = Harness::new(PEER_AS, |s| s.tx = WireContext::new(true).with_extended_next_hop(FamilySet::of(&[V4])));
    enh.send(ann(P4, &[PEER_AS], "2001:db8::11", None, vec![]));
    let best = enh.best(P4).expect("RFC 8950 route");
    assert_eq!(best.next_hop, Some("2001:db8::11".parse().unwrap()));

    // iBGP: a next hop several hops away, kept.
    let mut ibgp = Harness::new(LOCAL_AS, |_| {});
    ibgp.send(ann(P4, &[], "192.0.2.1", None, vec![]));
    assert_eq!(ibgp.prefixes(), vec![net(P4)]);
}
