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
    let mut nets: Vec<IpNet> =
        ["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.0.0.1/8", "10.244.1.0/26", "fd00::/8"].into_iter().map(net).collect();
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
    for (route, want) in [("10.1.0.0/16", true), ("10.1.2.0/24", true), ("10.0.0.0/8", false), ("10.1.2.0/25", false)] {
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
        r.cidr =
            Some(CidrMatch { cidr: net("10.244.0.0/16"), op: MatchOperator::In, min_len: Some(24), max_len: Some(28) });
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
    let only_v4_export =
        filter("e4", |f| f.export_v4 = vec![rule(Action::Accept, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))]);
    let fs = [only_v4_export.clone()];
    assert!(is_pass_through(&[], Direction::Import, false));
    assert!(is_pass_through(&fs, Direction::Import, false));
    assert!(is_pass_through(&fs, Direction::Export, true));
    assert!(!is_pass_through(&fs, Direction::Export, false));

    // Import: no rules, or only plain accepts, is accept-all (the fallback accepts).
    assert!(accepts_all(&[], Direction::Import, false));
    let plain =
        filter("p", |f| f.import_v4 = vec![rule(Action::Accept, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))]);
    assert!(accepts_all(std::slice::from_ref(&plain), Direction::Import, false));
    let rejects = filter("r", |f| f.import_v4 = vec![rule(Action::Reject, |r| r.peer_type = Some(PeerType::Ibgp))]);
    assert!(!accepts_all(&[plain.clone(), rejects.clone()], Direction::Import, false));
    let ops =
        filter("o", |f| f.import_v4 = vec![rule(Action::Accept, |r| r.operations = vec![Operation::SetPriority(1)])]);
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
    let out = apply(&[add(Community::new(65000, 2)), add(Community::new(65000, 1)), add(Community::new(65000, 2))], &a);
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
                r.cidr = Some(CidrMatch { cidr: net("10.244.0.0/16"), op: MatchOperator::In, min_len, max_len: None })
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
        filter(name, |f| f.import_v4 = vec![rule(Action::Reject, |r| r.cidr = cidr("10.0.0.0/8", MatchOperator::In))])
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
