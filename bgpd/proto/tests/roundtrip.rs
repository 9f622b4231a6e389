//! Property tests: any valid message survives encode → decode → encode
//! unchanged, and no input bytes, whatever they are, panic a decoder.

use std::net::{Ipv4Addr, Ipv6Addr};

use bgpd_proto::mrt::Records;
use bgpd_proto::nlri::Nlri;
use bgpd_proto::wire::*;
use bgpd_proto::{Afi, AttrCode, CapabilityCode, Family, FamilySet, Safi, WireContext};
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::collection::vec;
use proptest::prelude::*;

fn v4_nlri(add_path: bool) -> impl Strategy<Value = Nlri<Ipv4Net>> {
    (any::<u32>(), 0u8..=32, any::<u32>()).prop_map(move |(a, l, id)| Nlri {
        path_id: add_path.then_some(id),
        prefix: Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc(),
    })
}

fn v6_nlri(add_path: bool) -> impl Strategy<Value = Nlri<Ipv6Net>> {
    (any::<u128>(), 0u8..=128, any::<u32>()).prop_map(move |(a, l, id)| Nlri {
        path_id: add_path.then_some(id),
        prefix: Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc(),
    })
}

fn as_path(four: bool) -> impl Strategy<Value = AsPath> {
    let asn = if four { any::<u32>().boxed() } else { (0u32..=65535).boxed() };
    let kind = prop_oneof![
        Just(SegmentKind::Sequence),
        Just(SegmentKind::Set),
        Just(SegmentKind::ConfedSequence),
        Just(SegmentKind::ConfedSet)
    ];
    vec((kind, vec(asn, 1..12)).prop_map(|(kind, asns)| AsSegment { kind, asns: asns.into() }), 0..4)
        .prop_map(|segments| AsPath { segments: segments.into() })
}

fn mp_reach(ctx_add_path: bool) -> impl Strategy<Value = Attr> {
    let v6nh = (any::<u128>(), proptest::option::of(any::<u128>()))
        .prop_map(|(g, l)| NextHop::V6 { global: Ipv6Addr::from(g), link_local: l.map(Ipv6Addr::from) });
    prop_oneof![
        (vec(v6_nlri(ctx_add_path), 0..20), v6nh.clone()).prop_map(|(n, nh)| Attr::MpReach(Box::new(MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: nh,
            nlri: MpNlri::V6(n)
        }))),
        (vec(v4_nlri(ctx_add_path), 0..20), v6nh).prop_map(|(n, nh)| Attr::MpReach(Box::new(MpReach {
            family: Family::IPV4_UNICAST,
            next_hop: nh,
            nlri: MpNlri::V4(n)
        }))),
        (vec(any::<u8>(), 0..30), vec(any::<u8>(), 0..40)).prop_map(|(nh, n)| Attr::MpReach(Box::new(MpReach {
            family: Family::new(Afi::L2VPN, Safi::EVPN),
            next_hop: NextHop::Other(nh),
            nlri: MpNlri::Other(n)
        }))),
    ]
}

fn mp_unreach(add_path: bool) -> impl Strategy<Value = Attr> {
    prop_oneof![
        vec(v6_nlri(add_path), 0..20)
            .prop_map(|n| Attr::MpUnreach(MpUnreach { family: Family::IPV6_UNICAST, nlri: MpNlri::V6(n) })),
        vec(v4_nlri(add_path), 0..20)
            .prop_map(|n| Attr::MpUnreach(MpUnreach { family: Family::IPV4_MULTICAST, nlri: MpNlri::V4(n) })),
    ]
}

fn attribute(four: bool, add_path: bool) -> impl Strategy<Value = Attr> {
    let asn = if four { any::<u32>().boxed() } else { (0u32..=65535).boxed() };
    let ip = any::<u32>().prop_map(Ipv4Addr::from);
    prop_oneof![
        prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)].prop_map(Attr::Origin),
        as_path(four).prop_map(Attr::AsPath),
        ip.clone().prop_map(Attr::NextHop),
        any::<u32>().prop_map(Attr::Med),
        any::<u32>().prop_map(Attr::LocalPref),
        Just(Attr::AtomicAggregate),
        (asn, ip.clone()).prop_map(|(asn, address)| Attr::Aggregator(Aggregator { asn, address })),
        vec(any::<u32>().prop_map(Community), 1..80).prop_map(|c| Attr::Communities(c.into())),
        ip.clone().prop_map(Attr::OriginatorId),
        vec(ip.clone(), 1..10).prop_map(|c| Attr::ClusterList(c.into())),
        mp_reach(add_path),
        mp_unreach(add_path),
        vec(any::<[u8; 8]>().prop_map(ExtCommunity), 1..10).prop_map(Attr::ExtCommunities),
        as_path(true).prop_filter("no confederation segments in AS4_PATH", |p| !p.has_confed()).prop_map(Attr::As4Path),
        (any::<u32>(), ip).prop_map(|(asn, address)| Attr::As4Aggregator(Aggregator { asn, address })),
        vec(any::<(u32, u32, u32)>(), 1..10).prop_map(|v| Attr::LargeCommunities(
            v.into_iter().map(|(global, local1, local2)| LargeCommunity { global, local1, local2 }).collect()
        )),
        any::<u32>().prop_map(Attr::Otc),
        (33u8..=255, vec(any::<u8>(), 0..300))
            .prop_filter("unknown code", |(c, _)| AttrCode(*c).name().is_none())
            .prop_map(|(c, data)| Attr::Unknown { code: AttrCode(c), data }),
    ]
}

fn update(four: bool, add_path: bool) -> impl Strategy<Value = Update> {
    (
        vec(v4_nlri(add_path), 0..30),
        vec((attribute(four, add_path), any::<bool>(), any::<bool>()), 0..10),
        vec(v4_nlri(add_path), 0..30),
    )
        .prop_map(|(withdrawn, attrs, nlri)| {
            let mut seen = std::collections::BTreeSet::new();
            let attributes = attrs
                .into_iter()
                .filter(|(a, _, _)| seen.insert(a.code()))
                .map(|(value, ext, partial)| {
                    let mut a = PathAttribute::new(value);
                    if ext {
                        a.flags.0 |= AttrFlags::EXTENDED_LENGTH;
                    }
                    if partial && a.flags.optional() && a.flags.transitive() {
                        a.flags.0 |= AttrFlags::PARTIAL;
                    }
                    a
                })
                .collect();
            Update { withdrawn, attributes, nlri }
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    let fam = (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Family::new(Afi(a), Safi(s)));
    prop_oneof![
        fam.clone().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        vec((fam.clone(), any::<u16>().prop_map(Afi)), 0..4).prop_map(Capability::ExtendedNextHop),
        Just(Capability::ExtendedMessage),
        any::<u8>().prop_map(|r| Capability::Role(Role(r))),
        (0u8..16, 0u16..4096, vec((fam.clone(), any::<u8>()), 0..5)).prop_map(|(flags, time, f)| {
            Capability::GracefulRestart(GracefulRestart {
                flags,
                time,
                families: f.into_iter().map(|(family, flags)| GrFamily { family, flags }).collect(),
            })
        }),
        any::<u32>().prop_map(Capability::FourOctetAs),
        vec((fam.clone(), any::<u8>().prop_map(AddPathMode)), 1..5).prop_map(Capability::AddPath),
        Just(Capability::EnhancedRouteRefresh),
        vec((fam, any::<u8>(), 0u32..0x100_0000), 0..4).prop_map(|v| Capability::LongLivedGr(
            v.into_iter().map(|(family, flags, stale_time)| LlgrFamily { family, flags, stale_time }).collect()
        )),
        ("[a-z0-9-]{0,20}", "[a-z0-9.]{0,20}").prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (any::<u8>(), vec(any::<u8>(), 0..20))
            .prop_filter("unknown code", |(c, _)| CapabilityCode(*c).name().is_none())
            .prop_map(|(c, data)| Capability::Unknown { code: CapabilityCode(c), data }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    let param = prop_oneof![
        vec(capability(), 0..8).prop_map(OptParam::Capabilities),
        (any::<u8>(), vec(any::<u8>(), 0..10))
            .prop_filter("not the capabilities type", |(k, _)| *k != PARAM_CAPABILITIES)
            .prop_map(|(kind, data)| OptParam::Unknown { kind, data }),
    ];
    (any::<u16>(), any::<u16>(), any::<u32>(), vec(param, 0..6), any::<bool>()).prop_map(
        |(my_as, hold_time, id, params, ext)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            params,
            extended_params: ext,
        },
    )
}

fn message(four: bool, add_path: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four, add_path).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100))
            .prop_map(|(c, s, d)| Message::Notification(Notification::new(c, s, d))),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), prop_oneof![Just(0u8), Just(1), Just(2), Just(9)], vec(any::<u8>(), 0..10))
            .prop_map(|(afi, safi, sub, orf)| Message::RouteRefresh(RouteRefresh {
                family: Family::new(Afi(afi), Safi(safi)),
                subtype: RefreshSubtype(sub),
                orf: if sub == 1 || sub == 2 { Vec::new() } else { orf },
            })),
    ]
}

/// Strips what the encoder may legitimately choose (Extended Length bit,
/// RFC 9072 parameter encoding) to compare meaning.
fn meaning(m: &Message) -> Message {
    match m {
        Message::Update(u) => {
            let mut u = u.clone();
            u.attributes.iter_mut().for_each(|a| a.flags.0 &= !AttrFlags::EXTENDED_LENGTH);
            Message::Update(u)
        }
        Message::Open(o) => Message::Open(Open { extended_params: false, ..o.clone() }),
        other => other.clone(),
    }
}

fn has_path_id(n: &MpNlri) -> bool {
    match n {
        MpNlri::V4(v) => v.iter().any(|n| n.path_id.is_some()),
        MpNlri::V6(v) => v.iter().any(|n| n.path_id.is_some()),
        MpNlri::Other(_) => false,
    }
}

fn contexts() -> impl Strategy<Value = (bool, bool)> {
    (any::<bool>(), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn valid_messages_round_trip(m in contexts().prop_flat_map(|(f, a)| message(f, a))) {
        // The context that matches how the message was drawn: 4-octet AS
        // numbers and ADD-PATH identifiers present or not.
        let ctx_for = |m: &Message| -> WireContext {
            let four = match m {
                Message::Update(u) => u.attributes.iter().any(|a| matches!(&a.value,
                    Attr::AsPath(p) if p.segments.iter().flat_map(|s| &s.asns).any(|&x| x > 65535))
                    || matches!(&a.value, Attr::Aggregator(g) if g.asn > 65535)),
                _ => false,
            };
            let add_path = match m {
                Message::Update(u) => u.withdrawn.iter().chain(&u.nlri).any(|n| n.path_id.is_some())
                    || u.attributes.iter().any(|a| match &a.value {
                        Attr::MpReach(r) => has_path_id(&r.nlri),
                        Attr::MpUnreach(u) => has_path_id(&u.nlri),
                        _ => false,
                    }),
                _ => false,
            };
            WireContext::new(four).with_add_path(if add_path { FamilySet::ALL } else { FamilySet::EMPTY }).with_extended_message(true)
        };
        let ctx = ctx_for(&m);
        let Ok(bytes) = m.to_bytes(&ctx) else {
            // Only OPENs over 4096 octets may be refused.
            prop_assert!(matches!(m, Message::Open(_)));
            return Ok(());
        };
        let frame = Message::decode(&bytes, &ctx).unwrap().unwrap();
        prop_assert_eq!(frame.len, bytes.len());
        prop_assert_eq!(meaning(&frame.message), meaning(&m));
        let again = frame.message.to_bytes(&ctx).unwrap();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn packed_updates_carry_every_prefix_once(
        v4 in vec(v4_nlri(false), 0..3000),
        v6 in vec(v6_nlri(false), 0..2000),
        communities in vec(any::<u32>().prop_map(Community), 1..200),
    ) {
        let ctx = WireContext::new(true);
        let attrs = vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence([65001, 65002]))),
            PathAttribute::new(Attr::NextHop(Ipv4Addr::new(192, 0, 2, 1))),
            PathAttribute::new(Attr::Communities(communities.into())),
        ];
        let msgs = pack_announcements(Family::IPV4_UNICAST, &attrs, &NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)), Announcement::V4(&v4), &ctx).unwrap();
        let strip = |a: &[PathAttribute]| -> Vec<Attr> { a.iter().map(|x| x.value.clone()).collect() };
        let mut got4 = Vec::new();
        let mut sizes = Vec::new();
        for m in &msgs {
            prop_assert!(m.len() <= 4096);
            let Message::Update(u) = Message::decode(m, &ctx).unwrap().unwrap().message else { panic!("not an UPDATE") };
            prop_assert_eq!(strip(&u.attributes), strip(&attrs));
            sizes.push((m.len(), u.nlri.len()));
            got4.extend(u.nlri);
        }
        prop_assert_eq!(&got4, &v4);
        // The fewest messages: no message could have taken the next one's first prefix.
        let mut seen = 0;
        for w in sizes.windows(2) {
            seen += w[0].1;
            let next = &v4[seen];
            prop_assert!(w[0].0 + 1 + usize::from(next.prefix.prefix_len()).div_ceil(8) > 4096);
        }

        let nh = NextHop::V6 { global: "2001:db8::1".parse().unwrap(), link_local: Some("fe80::1".parse().unwrap()) };
        let msgs6 = pack_announcements(Family::IPV6_UNICAST, &attrs[..2], &nh, Announcement::V6(&v6), &ctx).unwrap();
        let mut got6 = Vec::new();
        for m in &msgs6 {
            prop_assert!(m.len() <= 4096);
            let f = Message::decode(m, &ctx).unwrap().unwrap();
            prop_assert!(f.issues.is_empty(), "{:?}", f.issues);
            let Message::Update(u) = f.message else { panic!("not an UPDATE") };
            let r = u.mp_reach().unwrap();
            prop_assert_eq!(&r.next_hop, &nh);
            let MpNlri::V6(n) = &r.nlri else { panic!("not IPv6") };
            got6.extend(n.iter().copied());
        }
        prop_assert_eq!(&got6, &v6);

        let w = pack_withdrawals(Family::IPV6_UNICAST, Announcement::V6(&v6), &ctx).unwrap();
        let total: usize = w.iter().map(|m| {
            let Message::Update(u) = Message::decode(m, &ctx).unwrap().unwrap().message else { panic!() };
            u.withdrawn_count()
        }).sum();
        prop_assert_eq!(total, v6.len());
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..5000),
            (1u8..=6, vec(any::<u8>(), 0..4100)).prop_map(|(t, body)| {
                let mut m = vec![0xFF; 16];
                m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
                m.push(t);
                m.extend(body);
                m
            }),
        ],
        four in any::<bool>(),
        add_path in any::<bool>(),
    ) {
        let ctx = WireContext::new(four)
            .with_add_path(if add_path { FamilySet::ALL } else { FamilySet::EMPTY })
            .with_extended_message(true);
        let _ = Message::decode(&bytes, &ctx);
        let _ = Update::decode(&bytes, &ctx);
        let _ = Open::decode(&bytes);
        let _ = decode_path_attributes(&bytes, &ctx);
        let _ = bgpd_proto::mrt::decode_rib_attributes(&bytes, Family::IPV6_UNICAST, four);
        for r in Records::new(&bytes).flatten() {
            let _ = r.entry();
        }
    }
}

#[test]
fn end_of_rib_markers() {
    let ctx = WireContext::new(true);
    for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST, Family::IPV4_MULTICAST, Family::new(Afi::L2VPN, Safi::EVPN)] {
        let bytes = Message::Update(Update::end_of_rib(f)).to_bytes(&ctx).unwrap();
        let Message::Update(u) = Message::decode(&bytes, &ctx).unwrap().unwrap().message else { panic!() };
        assert_eq!(u.end_of_rib_family(), Some(f));
    }
    assert_eq!(Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)).to_bytes(&ctx).unwrap().len(), 23);
}
