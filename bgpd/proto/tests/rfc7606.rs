//! Table test of error handling: each malformed input and the outcome RFC
//! 4271 §6 / RFC 7606 (and RFC 4760, 6793, 7313, 8092) prescribe for it:
//! a session reset with its exact NOTIFICATION, treat-as-withdraw, or
//! attribute discard.

use bgpd_proto::error::{code, ErrorAction};
use bgpd_proto::wire::Message;
use bgpd_proto::{AttrCode, WireContext};

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xFF; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut a = vec![flags, code];
    if flags & 0x10 != 0 {
        a.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        a.push(value.len() as u8);
    }
    a.extend_from_slice(value);
    a
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
fn as_path() -> Vec<u8> {
    attr(0x40, 2, &[2, 1, 0xfd, 0xe8])
}
fn next_hop() -> Vec<u8> {
    attr(0x40, 3, &[192, 0, 2, 1])
}
/// ORIGIN, AS_PATH and NEXT_HOP, then `extra`.
fn attrs_with(extra: &[u8]) -> Vec<u8> {
    [origin(), as_path(), next_hop(), extra.to_vec()].concat()
}
const NLRI: &[u8] = &[8, 10];

fn open(version: u8, params: &[u8]) -> Vec<u8> {
    let mut b = vec![version, 0xfd, 0xe8, 0, 90, 192, 0, 2, 1, params.len() as u8];
    b.extend_from_slice(params);
    msg(1, &b)
}

fn mp_reach_v6(nh_len: u8, nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh_len];
    v.extend(std::iter::repeat_n(0x20, usize::from(nh_len)));
    v.push(0);
    v.extend_from_slice(nlri);
    attr(0x90, 14, &v)
}

/// 2001:db8::/32.
const V6_NLRI: &[u8] = &[32, 0x20, 0x01, 0x0d, 0xb8];

fn mp_unreach_v6(nlri: &[u8]) -> Vec<u8> {
    attr(0x80, 15, &[&[0, 2, 1], nlri].concat())
}

/// COMMUNITIES claiming 60 octets where 8 are left: enough to hide an MP_* attribute.
fn overrun_with_room() -> Vec<u8> {
    [&[0xC0, 8, 60][..], &[0, 1, 0, 1, 0x80, 15, 3, 0]].concat()
}

#[derive(Debug)]
enum Expect {
    Reset(u8, u8, Option<Vec<u8>>),
    Issue(ErrorAction, AttrCode),
    Clean,
}
use Expect::*;

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use ErrorAction::{AttributeDiscard as Discard, TreatAsWithdraw as Withdraw};
    let h = code::MESSAGE_HEADER;
    let o = code::OPEN_MESSAGE;
    let u = code::UPDATE_MESSAGE;
    let mut bad_marker = msg(4, &[]);
    bad_marker[3] = 0;
    let mut short = msg(4, &[]);
    short[17] = 18;
    let big = msg(2, &vec![0; 4097 - 19]);
    vec![
        // RFC 4271 §6.1.
        ("marker not all ones", bad_marker, Reset(h, 1, Some(vec![]))),
        ("length below 19", short, Reset(h, 2, Some(vec![0, 18]))),
        ("length above 4096 without extended message", big, Reset(h, 2, Some(vec![0x10, 0x01]))),
        ("unknown message type", msg(7, &[]), Reset(h, 3, Some(vec![7]))),
        ("KEEPALIVE longer than 19", msg(4, &[0]), Reset(h, 2, Some(vec![0, 20]))),
        ("OPEN shorter than 29", msg(1, &[4, 0, 1, 0, 90, 1, 2, 3, 4]), Reset(h, 2, Some(vec![0, 28]))),
        ("UPDATE shorter than 23", msg(2, &[0, 0, 0]), Reset(h, 2, Some(vec![0, 22]))),
        ("NOTIFICATION shorter than 21", msg(3, &[6]), Reset(h, 2, Some(vec![0, 20]))),
        ("ROUTE-REFRESH shorter than 23", msg(5, &[0, 1, 0]), Reset(h, 2, Some(vec![0, 22]))),
        // RFC 4271 §6.2.
        ("OPEN version 3", open(3, &[]), Reset(o, 1, Some(vec![0, 4]))),
        ("OPEN parameters length mismatch", msg(1, &[4, 0, 1, 0, 90, 1, 2, 3, 4, 5, 2, 0]), Reset(o, 0, None)),
        ("OPEN capability overruns its parameter", open(4, &[2, 3, 65, 4, 0]), Reset(o, 0, None)),
        ("OPEN 4-octet AS capability of length 2", open(4, &[2, 4, 65, 2, 0, 1]), Reset(o, 0, None)),
        ("OPEN multiprotocol capability of length 3", open(4, &[2, 5, 1, 3, 0, 1, 1]), Reset(o, 0, None)),
        ("OPEN unknown parameter is kept for the session to refuse", open(4, &[9, 1, 0]), Clean),
        ("OPEN unknown capability is kept", open(4, &[2, 3, 200, 1, 7]), Clean),
        // RFC 4271 §6.3, RFC 7606 §4 and §5.3.
        (
            "withdrawn length overruns",
            update(&[], &[], &[]).into_iter().enumerate().map(|(i, b)| if i == 20 { 9 } else { b }).collect(),
            Reset(u, 1, None),
        ),
        (
            "total attribute length overruns",
            {
                let mut m = update(&[], &attrs_with(&[]), NLRI);
                m[22] = 0xFF;
                m
            },
            Reset(u, 1, None),
        ),
        ("IPv4 NLRI prefix length 33", update(&[], &attrs_with(&[]), &[33, 1, 2, 3, 4, 5]), Reset(u, 10, None)),
        ("IPv4 NLRI overruns", update(&[], &attrs_with(&[]), &[24, 10, 1]), Reset(u, 10, None)),
        ("withdrawn prefix overruns", update(&[16, 10], &[], &[]), Reset(u, 10, None)),
        // RFC 7606 §7.
        (
            "ORIGIN undefined value",
            update(&[], &[attr(0x40, 1, &[3]), as_path(), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::ORIGIN),
        ),
        (
            "ORIGIN length 2",
            update(&[], &[attr(0x40, 1, &[0, 0]), as_path(), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::ORIGIN),
        ),
        (
            "AS_PATH unknown segment type",
            update(&[], &[origin(), attr(0x40, 2, &[7, 1, 0, 1]), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::AS_PATH),
        ),
        (
            "AS_PATH zero-length segment",
            update(&[], &[origin(), attr(0x40, 2, &[2, 0]), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::AS_PATH),
        ),
        (
            "AS_PATH segment overrun",
            update(&[], &[origin(), attr(0x40, 2, &[2, 2, 0, 1]), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::AS_PATH),
        ),
        (
            "AS_PATH single trailing octet",
            update(&[], &[origin(), attr(0x40, 2, &[2, 1, 0, 1, 2]), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::AS_PATH),
        ),
        (
            "NEXT_HOP length 5",
            update(&[], &[origin(), as_path(), attr(0x40, 3, &[1, 2, 3, 4, 5])].concat(), NLRI),
            Issue(Withdraw, AttrCode::NEXT_HOP),
        ),
        (
            "MED length 3",
            update(&[], &attrs_with(&attr(0x80, 4, &[0, 0, 1])), NLRI),
            Issue(Withdraw, AttrCode::MULTI_EXIT_DISC),
        ),
        (
            "LOCAL_PREF length 2",
            update(&[], &attrs_with(&attr(0x40, 5, &[0, 100])), NLRI),
            Issue(Withdraw, AttrCode::LOCAL_PREF),
        ),
        (
            "ATOMIC_AGGREGATE length 1",
            update(&[], &attrs_with(&attr(0x40, 6, &[0])), NLRI),
            Issue(Discard, AttrCode::ATOMIC_AGGREGATE),
        ),
        (
            "AGGREGATOR length 8 on a 2-octet session",
            update(&[], &attrs_with(&attr(0xC0, 7, &[0, 0, 0, 1, 1, 2, 3, 4])), NLRI),
            Issue(Discard, AttrCode::AGGREGATOR),
        ),
        (
            "COMMUNITIES length 5",
            update(&[], &attrs_with(&attr(0xC0, 8, &[0, 1, 0, 1, 0])), NLRI),
            Issue(Withdraw, AttrCode::COMMUNITIES),
        ),
        (
            "COMMUNITIES length 0",
            update(&[], &attrs_with(&attr(0xC0, 8, &[])), NLRI),
            Issue(Withdraw, AttrCode::COMMUNITIES),
        ),
        (
            "ORIGINATOR_ID length 3",
            update(&[], &attrs_with(&attr(0x80, 9, &[1, 2, 3])), NLRI),
            Issue(Withdraw, AttrCode::ORIGINATOR_ID),
        ),
        (
            "CLUSTER_LIST length 6",
            update(&[], &attrs_with(&attr(0x80, 10, &[1, 2, 3, 4, 5, 6])), NLRI),
            Issue(Withdraw, AttrCode::CLUSTER_LIST),
        ),
        (
            "EXTENDED_COMMUNITIES length 7",
            update(&[], &attrs_with(&attr(0xC0, 16, &[0; 7])), NLRI),
            Issue(Withdraw, AttrCode::EXTENDED_COMMUNITIES),
        ),
        (
            "LARGE_COMMUNITY length 13",
            update(&[], &attrs_with(&attr(0xC0, 32, &[0; 13])), NLRI),
            Issue(Withdraw, AttrCode::LARGE_COMMUNITY),
        ),
        // RFC 9234 §5.
        ("OTC length 2", update(&[], &attrs_with(&attr(0xC0, 35, &[0, 1])), NLRI), Issue(Withdraw, AttrCode::OTC)),
        // RFC 6793 §6.
        (
            "AS4_PATH overrun",
            update(&[], &attrs_with(&attr(0xC0, 17, &[2, 2, 0, 0, 0, 1])), NLRI),
            Issue(Discard, AttrCode::AS4_PATH),
        ),
        (
            "AS4_PATH with a confederation segment",
            update(&[], &attrs_with(&attr(0xC0, 17, &[3, 1, 0, 0, 0, 1])), NLRI),
            Issue(Discard, AttrCode::AS4_PATH),
        ),
        (
            "AS4_AGGREGATOR length 7",
            update(&[], &attrs_with(&attr(0xC0, 18, &[0; 7])), NLRI),
            Issue(Discard, AttrCode::AS4_AGGREGATOR),
        ),
        // RFC 7606 §3.
        (
            "duplicate COMMUNITIES",
            update(&[], &attrs_with(&[attr(0xC0, 8, &[0, 1, 0, 1]), attr(0xC0, 8, &[0, 1, 0, 2])].concat()), NLRI),
            Issue(Discard, AttrCode::COMMUNITIES),
        ),
        (
            "duplicate MP_REACH_NLRI",
            update(&[], &[origin(), as_path(), mp_reach_v6(16, &[]), mp_reach_v6(16, &[])].concat(), &[]),
            Reset(u, 1, None),
        ),
        (
            "ORIGIN with the Optional bit",
            update(&[], &[attr(0xC0, 1, &[0]), as_path(), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::ORIGIN),
        ),
        (
            "COMMUNITIES without the Transitive bit",
            update(&[], &attrs_with(&attr(0x80, 8, &[0, 1, 0, 1])), NLRI),
            Issue(Withdraw, AttrCode::COMMUNITIES),
        ),
        (
            "MP_REACH_NLRI marked transitive",
            update(
                &[],
                &[origin(), as_path(), {
                    let mut a = mp_reach_v6(16, &[]);
                    a[0] = 0xD0;
                    a
                }]
                .concat(),
                &[],
            ),
            Reset(u, 4, None),
        ),
        (
            "unrecognized well-known attribute",
            update(&[], &attrs_with(&attr(0x40, 99, &[1])), NLRI),
            Reset(u, 2, Some(attr(0x40, 99, &[1]))),
        ),
        ("unknown optional transitive attribute is kept", update(&[], &attrs_with(&attr(0xC0, 99, &[1])), NLRI), Clean),
        (
            "attribute overruns the attributes field",
            update(&[], &[origin(), as_path(), next_hop(), vec![0xC0, 8, 9, 0, 1]].concat(), NLRI),
            Issue(Withdraw, AttrCode::COMMUNITIES),
        ),
        // RFC 7606 §3 (j): treat-as-withdraw needs every MP_* attribute parsed;
        // an overrun that may hide one (enough octets left) resets instead.
        (
            "attribute overrun before MP_REACH_NLRI could be located",
            update(
                &[],
                &[origin(), as_path(), next_hop(), vec![0xC0, 8, 60, 0, 1, 0, 1], mp_reach_v6(16, V6_NLRI)].concat(),
                NLRI,
            ),
            Reset(u, 1, None),
        ),
        (
            "attribute overrun after MP_REACH_NLRI, room left for an MP_UNREACH_NLRI",
            update(&[], &[mp_reach_v6(16, V6_NLRI), origin(), as_path(), overrun_with_room()].concat(), &[]),
            Reset(u, 1, None),
        ),
        (
            "attribute overrun after MP_REACH_NLRI and MP_UNREACH_NLRI",
            update(
                &[],
                &[mp_reach_v6(16, V6_NLRI), mp_unreach_v6(V6_NLRI), origin(), as_path(), overrun_with_room()].concat(),
                &[],
            ),
            Issue(Withdraw, AttrCode::COMMUNITIES),
        ),
        (
            "attribute header cut short",
            update(&[], &[origin(), as_path(), next_hop(), vec![0xC0]].concat(), NLRI),
            Issue(Withdraw, AttrCode(0)),
        ),
        (
            "ORIGIN missing with NLRI",
            update(&[], &[as_path(), next_hop()].concat(), NLRI),
            Issue(Withdraw, AttrCode::ORIGIN),
        ),
        (
            "NEXT_HOP missing with IPv4 NLRI",
            update(&[], &[origin(), as_path()].concat(), NLRI),
            Issue(Withdraw, AttrCode::NEXT_HOP),
        ),
        (
            "NEXT_HOP not needed with MP_REACH_NLRI only",
            update(&[], &[origin(), as_path(), mp_reach_v6(16, &[64, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0])].concat(), &[]),
            Clean,
        ),
        ("no attributes and no NLRI: a withdrawal", update(&[8, 10], &[], &[]), Clean),
        // RFC 4760 §7, RFC 7606 §7.11.
        (
            "MP_REACH_NLRI next hop length 5 for IPv6",
            update(&[], &[origin(), as_path(), mp_reach_v6(5, &[])].concat(), &[]),
            Reset(u, 9, None),
        ),
        (
            "MP_REACH_NLRI prefix length 129",
            update(&[], &[origin(), as_path(), mp_reach_v6(16, &[129, 0])].concat(), &[]),
            Reset(u, 9, None),
        ),
        ("MP_UNREACH_NLRI shorter than AFI/SAFI", update(&[], &attr(0x80, 15, &[0, 2]), &[]), Reset(u, 9, None)),
        (
            "MP_REACH_NLRI overruns the attributes",
            update(&[], &[origin(), vec![0x90, 14, 0, 40, 0, 2, 1]].concat(), &[]),
            Reset(u, 1, None),
        ),
        // RFC 7313 §5.
        ("BoRR longer than 23 octets", msg(5, &[0, 1, 1, 1, 0]), Reset(code::ROUTE_REFRESH_MESSAGE, 1, None)),
        ("route refresh with ORF entries is kept", msg(5, &[0, 1, 0, 1, 1, 2]), Clean),
    ]
}

#[test]
fn every_malformation_gets_its_rfc_outcome() {
    let ctx = WireContext::new(false);
    let mut failures = Vec::new();
    for (name, bytes, expect) in cases() {
        let got = Message::decode(&bytes, &ctx);
        let ok = match (&expect, &got) {
            (Reset(c, s, data), Err(e)) => {
                e.code == *c && e.subcode == *s && data.as_ref().is_none_or(|d| *d == e.data)
            }
            (Issue(action, attr), Ok(Some(f))) => f.issues.iter().any(|i| i.action == *action && i.attr == *attr),
            (Clean, Ok(Some(f))) => f.issues.is_empty() && f.len == bytes.len(),
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn treat_as_withdraw_keeps_the_prefixes_to_withdraw() {
    let bytes = update(&[], &[attr(0x40, 1, &[9]), as_path(), next_hop()].concat(), &[16, 10, 1, 24, 10, 2, 3]);
    let f = Message::decode(&bytes, &WireContext::new(false)).unwrap().unwrap();
    let Message::Update(u) = f.message else { panic!("not an UPDATE") };
    assert_eq!(u.nlri.len(), 2, "the prefixes must be located to be withdrawn");
    assert!(f.issues.iter().all(|i| i.action == ErrorAction::TreatAsWithdraw));
}

#[test]
fn discard_drops_only_the_bad_attribute() {
    let bytes = update(&[], &attrs_with(&[attr(0x40, 6, &[0]), attr(0xC0, 8, &[0, 1, 0, 1])].concat()), NLRI);
    let f = Message::decode(&bytes, &WireContext::new(false)).unwrap().unwrap();
    let Message::Update(u) = f.message else { panic!("not an UPDATE") };
    assert!(u.attr(AttrCode::ATOMIC_AGGREGATE).is_none());
    assert!(u.attr(AttrCode::COMMUNITIES).is_some());
    assert_eq!(u.nlri.len(), 1);
}

#[test]
fn incomplete_input_is_not_an_error() {
    let m = update(&[], &attrs_with(&[]), NLRI);
    for cut in 0..m.len() {
        assert_eq!(Message::decode(&m[..cut], &WireContext::new(false)), Ok(None), "cut at {cut}");
    }
}
