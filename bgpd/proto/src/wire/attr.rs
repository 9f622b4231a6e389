//! Path attributes (RFC 4271 §4.3, §5) with RFC 7606 error classification.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BufMut;
use ipnet::{Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use super::aspath::AsPath;
use super::WireContext;
use crate::error::{code, DecodeError, ErrorAction};
use crate::nlri::{decode_nlri, encode_nlri, nlri_wire_len, Nlri};
use crate::types::{Afi, AttrCode, Family, Safi};

/// Attribute flags octet (RFC 4271 §4.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AttrFlags(pub u8);

impl AttrFlags {
    /// Optional bit.
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive bit.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial bit.
    pub const PARTIAL: u8 = 0x20;
    /// Extended Length bit.
    pub const EXTENDED_LENGTH: u8 = 0x10;

    /// Well-known (mandatory or discretionary): transitive, not optional.
    pub const WELL_KNOWN: AttrFlags = AttrFlags(Self::TRANSITIVE);
    /// Optional transitive.
    pub const OPTIONAL_TRANSITIVE: AttrFlags = AttrFlags(Self::OPTIONAL | Self::TRANSITIVE);
    /// Optional non-transitive.
    pub const OPTIONAL_NON_TRANSITIVE: AttrFlags = AttrFlags(Self::OPTIONAL);

    /// Whether the Optional bit is set.
    pub fn optional(self) -> bool {
        self.0 & Self::OPTIONAL != 0
    }
    /// Whether the Transitive bit is set.
    pub fn transitive(self) -> bool {
        self.0 & Self::TRANSITIVE != 0
    }
    /// Whether the Partial bit is set.
    pub fn partial(self) -> bool {
        self.0 & Self::PARTIAL != 0
    }
    /// Whether the Extended Length bit is set.
    pub fn extended_length(self) -> bool {
        self.0 & Self::EXTENDED_LENGTH != 0
    }
}

impl std::fmt::Debug for AttrFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// IGP (0).
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

impl Origin {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }
    }
}

/// AGGREGATOR / AS4_AGGREGATOR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aggregator {
    /// The AS that formed the aggregate.
    pub asn: u32,
    /// The BGP identifier of the speaker that formed it.
    pub address: Ipv4Addr,
}

/// A standard community (RFC 1997).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// GRACEFUL_SHUTDOWN (RFC 8326).
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// LLGR_STALE (RFC 9494).
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// NO_LLGR (RFC 9494).
    pub const NO_LLGR: Community = Community(0xFFFF_0007);
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    /// The community `asn:value`.
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

impl std::fmt::Debug for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// An extended community (RFC 4360): eight octets, the first one or two the type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunity(pub [u8; 8]);

impl ExtCommunity {
    /// The type octet (high) and sub-type octet.
    pub fn kind(&self) -> (u8, u8) {
        (self.0[0], self.0[1])
    }

    /// A two-octet-AS route target (type 0x00, sub-type 0x02).
    pub fn route_target(asn: u16, value: u32) -> ExtCommunity {
        let a = asn.to_be_bytes();
        let v = value.to_be_bytes();
        ExtCommunity([0x00, 0x02, a[0], a[1], v[0], v[1], v[2], v[3]])
    }
}

impl std::fmt::Debug for ExtCommunity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A large community (RFC 8092).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an AS number).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

impl std::fmt::Debug for LargeCommunity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

/// The next hop of an MP_REACH_NLRI attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 global address and optional link-local address (RFC 2545 §3);
    /// also for IPv4 NLRI with an IPv6 next hop (RFC 8950).
    V6 {
        /// The global address.
        global: Ipv6Addr,
        /// The link-local address, when the length is 32.
        link_local: Option<Ipv6Addr>,
    },
    /// A next hop of a family this crate keeps as raw bytes.
    Other(Vec<u8>),
}

impl NextHop {
    fn wire_len(&self) -> usize {
        match self {
            NextHop::V4(_) => 4,
            NextHop::V6 { link_local: None, .. } => 16,
            NextHop::V6 { link_local: Some(_), .. } => 32,
            NextHop::Other(b) => b.len(),
        }
    }

    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            NextHop::V4(a) => out.put_slice(&a.octets()),
            NextHop::V6 { global, link_local } => {
                out.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.put_slice(&ll.octets());
                }
            }
            NextHop::Other(b) => out.put_slice(b),
        }
    }
}

/// The NLRI carried in MP_REACH_NLRI or MP_UNREACH_NLRI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MpNlri {
    /// IPv4 prefixes (unicast or multicast).
    V4(Vec<Nlri<Ipv4Net>>),
    /// IPv6 prefixes (unicast or multicast).
    V6(Vec<Nlri<Ipv6Net>>),
    /// NLRI of another family, kept as raw bytes.
    Other(Vec<u8>),
}

impl MpNlri {
    /// How many prefixes (0 for raw NLRI of other families).
    pub fn len(&self) -> usize {
        match self {
            MpNlri::V4(v) => v.len(),
            MpNlri::V6(v) => v.len(),
            MpNlri::Other(_) => 0,
        }
    }

    /// Whether there is no NLRI at all.
    pub fn is_empty(&self) -> bool {
        match self {
            MpNlri::V4(v) => v.is_empty(),
            MpNlri::V6(v) => v.is_empty(),
            MpNlri::Other(b) => b.is_empty(),
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            MpNlri::V4(v) => v.iter().map(nlri_wire_len).sum(),
            MpNlri::V6(v) => v.iter().map(nlri_wire_len).sum(),
            MpNlri::Other(b) => b.len(),
        }
    }

    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            MpNlri::V4(v) => v.iter().for_each(|n| encode_nlri(n, out)),
            MpNlri::V6(v) => v.iter().for_each(|n| encode_nlri(n, out)),
            MpNlri::Other(b) => out.put_slice(b),
        }
    }

    fn decode(family: Family, data: &[u8], ctx: &WireContext) -> Result<MpNlri, &'static str> {
        let add_path = ctx.add_path.contains(family);
        match family.afi {
            _ if !family.has_prefix_nlri() => Ok(MpNlri::Other(data.to_vec())),
            Afi::IPV4 => {
                let mut v = Vec::new();
                decode_nlri(data, add_path, &mut v).map_err(|e| e.reason())?;
                Ok(MpNlri::V4(v))
            }
            _ => {
                let mut v = Vec::new();
                decode_nlri(data, add_path, &mut v).map_err(|e| e.reason())?;
                Ok(MpNlri::V6(v))
            }
        }
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MpReach {
    /// The family of the NLRI.
    pub family: Family,
    /// The next hop for all of the NLRI.
    pub next_hop: NextHop,
    /// The reachable destinations.
    pub nlri: MpNlri,
}

impl MpReach {
    /// Whether it is written in the TABLE_DUMP_V2 short form, next hop length
    /// and next hop only (RFC 6396 §4.3.4): in a RIB entry context, when the
    /// short form loses nothing. Some writers (Quagga's, hence RIPE RIS dumps)
    /// put the whole attribute in RIB entries, AFI, SAFI and the entry's
    /// prefix included; such a value is written back in that full form, so
    /// that decode → encode → decode gives it back.
    fn abbreviated(&self, ctx: &WireContext) -> bool {
        ctx.mp_reach_abbreviated && self.nlri.is_empty() && ctx.mp_family.unwrap_or(Family::IPV6_UNICAST) == self.family
    }
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MpUnreach {
    /// The family of the withdrawn NLRI.
    pub family: Family,
    /// The withdrawn destinations (empty for an End-of-RIB marker).
    pub nlri: MpNlri,
}

/// A decoded path attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH, with AS numbers of the session's size.
    AsPath(AsPath),
    /// NEXT_HOP.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR.
    Aggregator(Aggregator),
    /// COMMUNITIES (up to four inline, without allocation).
    Communities(SmallVec<[Community; 4]>),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST (up to four inline, without allocation).
    ClusterList(SmallVec<[Ipv4Addr; 4]>),
    /// MP_REACH_NLRI (boxed: it is the largest variant and the rarest in
    /// IPv4 feeds, and boxing keeps every attribute small).
    MpReach(Box<MpReach>),
    /// MP_UNREACH_NLRI.
    MpUnreach(MpUnreach),
    /// EXTENDED COMMUNITIES.
    ExtCommunities(Vec<ExtCommunity>),
    /// AS4_PATH.
    As4Path(AsPath),
    /// AS4_AGGREGATOR.
    As4Aggregator(Aggregator),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<LargeCommunity>),
    /// OTC, Only to Customer: the AS that must see the route only from customers (RFC 9234 §5).
    Otc(u32),
    /// An optional attribute this crate does not interpret, kept to be passed on.
    Unknown {
        /// Its type code.
        code: AttrCode,
        /// Its value.
        data: Vec<u8>,
    },
}

impl Attr {
    /// The attribute type code.
    pub fn code(&self) -> AttrCode {
        match self {
            Attr::Origin(_) => AttrCode::ORIGIN,
            Attr::AsPath(_) => AttrCode::AS_PATH,
            Attr::NextHop(_) => AttrCode::NEXT_HOP,
            Attr::Med(_) => AttrCode::MULTI_EXIT_DISC,
            Attr::LocalPref(_) => AttrCode::LOCAL_PREF,
            Attr::AtomicAggregate => AttrCode::ATOMIC_AGGREGATE,
            Attr::Aggregator(_) => AttrCode::AGGREGATOR,
            Attr::Communities(_) => AttrCode::COMMUNITIES,
            Attr::OriginatorId(_) => AttrCode::ORIGINATOR_ID,
            Attr::ClusterList(_) => AttrCode::CLUSTER_LIST,
            Attr::MpReach(_) => AttrCode::MP_REACH_NLRI,
            Attr::MpUnreach(_) => AttrCode::MP_UNREACH_NLRI,
            Attr::ExtCommunities(_) => AttrCode::EXTENDED_COMMUNITIES,
            Attr::As4Path(_) => AttrCode::AS4_PATH,
            Attr::As4Aggregator(_) => AttrCode::AS4_AGGREGATOR,
            Attr::LargeCommunities(_) => AttrCode::LARGE_COMMUNITY,
            Attr::Otc(_) => AttrCode::OTC,
            Attr::Unknown { code, .. } => *code,
        }
    }
}

/// The Optional and Transitive bits each known attribute must carry.
fn expected_flags(code: AttrCode) -> Option<AttrFlags> {
    Some(match code {
        AttrCode::ORIGIN
        | AttrCode::AS_PATH
        | AttrCode::NEXT_HOP
        | AttrCode::LOCAL_PREF
        | AttrCode::ATOMIC_AGGREGATE => AttrFlags::WELL_KNOWN,
        AttrCode::AGGREGATOR
        | AttrCode::COMMUNITIES
        | AttrCode::EXTENDED_COMMUNITIES
        | AttrCode::AS4_PATH
        | AttrCode::AS4_AGGREGATOR
        | AttrCode::LARGE_COMMUNITY
        | AttrCode::OTC => AttrFlags::OPTIONAL_TRANSITIVE,
        AttrCode::MULTI_EXIT_DISC
        | AttrCode::ORIGINATOR_ID
        | AttrCode::CLUSTER_LIST
        | AttrCode::MP_REACH_NLRI
        | AttrCode::MP_UNREACH_NLRI => AttrFlags::OPTIONAL_NON_TRANSITIVE,
        _ => return None,
    })
}

/// A path attribute as received or to be sent: its flags and its value.
///
/// The flags are kept so that the Partial bit and the sender's choice of the
/// Extended Length bit survive a decode/encode round trip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathAttribute {
    /// The flags octet as received (Extended Length is forced on encode when needed).
    pub flags: AttrFlags,
    /// The value.
    pub value: Attr,
}

impl PathAttribute {
    /// An attribute with the standard flags for its type (for unknown
    /// attributes: optional transitive).
    pub fn new(value: Attr) -> PathAttribute {
        let flags = expected_flags(value.code()).unwrap_or(AttrFlags::OPTIONAL_TRANSITIVE);
        PathAttribute { flags, value }
    }

    /// The encoded size of the value.
    pub(crate) fn value_len(&self, ctx: &WireContext) -> usize {
        let as_size = if ctx.four_octet_as { 4 } else { 2 };
        match &self.value {
            Attr::Origin(_) => 1,
            Attr::AsPath(p) => p.wire_len(as_size),
            Attr::NextHop(_) | Attr::Med(_) | Attr::LocalPref(_) | Attr::OriginatorId(_) | Attr::Otc(_) => 4,
            Attr::AtomicAggregate => 0,
            Attr::Aggregator(_) => as_size + 4,
            Attr::Communities(c) => 4 * c.len(),
            Attr::ClusterList(c) => 4 * c.len(),
            Attr::MpReach(r) if r.abbreviated(ctx) => 1 + r.next_hop.wire_len(),
            Attr::MpReach(r) => 5 + r.next_hop.wire_len() + r.nlri.wire_len(),
            Attr::MpUnreach(u) => 3 + u.nlri.wire_len(),
            Attr::ExtCommunities(c) => 8 * c.len(),
            Attr::As4Path(p) => p.wire_len(4),
            Attr::As4Aggregator(_) => 8,
            Attr::LargeCommunities(c) => 12 * c.len(),
            Attr::Unknown { data, .. } => data.len(),
        }
    }

    /// The encoded size including the attribute header.
    pub(crate) fn wire_len(&self, ctx: &WireContext) -> usize {
        let len = self.value_len(ctx);
        len + if self.flags.extended_length() || len > 255 { 4 } else { 3 }
    }

    /// Appends the attribute (header and value).
    pub(crate) fn encode<B: BufMut>(&self, ctx: &WireContext, out: &mut B) -> Result<(), crate::error::EncodeError> {
        let len = self.value_len(ctx);
        let len16 = u16::try_from(len).map_err(|_| crate::error::EncodeError::FieldTooLong("path attribute"))?;
        let ext = self.flags.extended_length() || len > 255;
        let flags =
            if ext { self.flags.0 | AttrFlags::EXTENDED_LENGTH } else { self.flags.0 & !AttrFlags::EXTENDED_LENGTH };
        out.put_u8(flags);
        out.put_u8(self.value.code().0);
        if ext {
            out.put_u16(len16);
        } else {
            // Invariant: not extended means len <= 255.
            out.put_u8(len16 as u8);
        }
        let as_size = if ctx.four_octet_as { 4 } else { 2 };
        match &self.value {
            Attr::Origin(o) => out.put_u8(o.code()),
            Attr::AsPath(p) => p.encode(as_size, out),
            Attr::NextHop(a) | Attr::OriginatorId(a) => out.put_slice(&a.octets()),
            Attr::Med(v) | Attr::LocalPref(v) | Attr::Otc(v) => out.put_u32(*v),
            Attr::AtomicAggregate => {}
            Attr::Aggregator(a) => {
                if as_size == 4 {
                    out.put_u32(a.asn);
                } else {
                    out.put_u16(u16::try_from(a.asn).unwrap_or(crate::types::AS_TRANS as u16));
                }
                out.put_slice(&a.address.octets());
            }
            Attr::Communities(c) => c.iter().for_each(|c| out.put_u32(c.0)),
            Attr::ClusterList(c) => c.iter().for_each(|a| out.put_slice(&a.octets())),
            Attr::MpReach(r) => {
                let full = !r.abbreviated(ctx);
                if full {
                    out.put_u16(r.family.afi.0);
                    out.put_u8(r.family.safi.0);
                }
                let nh_len = u8::try_from(r.next_hop.wire_len())
                    .map_err(|_| crate::error::EncodeError::FieldTooLong("next hop"))?;
                out.put_u8(nh_len);
                r.next_hop.encode(out);
                if full {
                    out.put_u8(0);
                    r.nlri.encode(out);
                }
            }
            Attr::MpUnreach(u) => {
                out.put_u16(u.family.afi.0);
                out.put_u8(u.family.safi.0);
                u.nlri.encode(out);
            }
            Attr::ExtCommunities(c) => c.iter().for_each(|c| out.put_slice(&c.0)),
            Attr::As4Path(p) => p.encode(4, out),
            Attr::As4Aggregator(a) => {
                out.put_u32(a.asn);
                out.put_slice(&a.address.octets());
            }
            Attr::LargeCommunities(c) => c.iter().for_each(|c| {
                out.put_u32(c.global);
                out.put_u32(c.local1);
                out.put_u32(c.local2);
            }),
            Attr::Unknown { data, .. } => out.put_slice(data),
        }
        Ok(())
    }
}

/// The outcome of decoding one attribute that did not succeed.
#[derive(Debug)]
pub(crate) enum AttrFault {
    /// RFC 7606 handling without a session reset.
    Issue(ErrorAction, &'static str),
    /// Session reset with this NOTIFICATION (boxed: rare, and it keeps the
    /// result of every attribute decode small).
    Reset(Box<DecodeError>),
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

fn ipv4_at(d: &[u8], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[i], d[i + 1], d[i + 2], d[i + 3])
}

fn ipv6_at(d: &[u8], i: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[i..i + 16]);
    Ipv6Addr::from(a)
}

/// Decodes one attribute value. `raw` is the whole attribute (header
/// included), used as NOTIFICATION data where RFC 4271 §6.3 asks for it.
pub(crate) fn decode_attr(
    flags: AttrFlags,
    code: AttrCode,
    data: &[u8],
    raw: &[u8],
    ctx: &WireContext,
) -> Result<Attr, AttrFault> {
    use ErrorAction::{AttributeDiscard as Discard, TreatAsWithdraw as Withdraw};
    let Some(expected) = expected_flags(code) else {
        if !flags.optional() {
            // RFC 4271 §6.3: an unrecognized well-known attribute resets the session.
            return Err(AttrFault::Reset(Box::new(DecodeError::new(
                code::UPDATE_MESSAGE,
                code::update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                raw,
                "unrecognized well-known attribute",
            ))));
        }
        return Ok(Attr::Unknown { code, data: data.to_vec() });
    };
    if flags.0 & 0xC0 != expected.0 {
        // RFC 7606 §3 (c): Optional/Transitive bits in conflict → treat-as-withdraw;
        // the NLRI carried by MP_* cannot be handled that way, so those reset.
        if matches!(code, AttrCode::MP_REACH_NLRI | AttrCode::MP_UNREACH_NLRI) {
            return Err(AttrFault::Reset(Box::new(DecodeError::new(
                code::UPDATE_MESSAGE,
                code::update::ATTRIBUTE_FLAGS_ERROR,
                raw,
                "MP_REACH_NLRI/MP_UNREACH_NLRI with wrong attribute flags",
            ))));
        }
        return Err(AttrFault::Issue(Withdraw, "attribute flags conflict with the attribute type"));
    }
    let as_size = if ctx.four_octet_as { 4 } else { 2 };
    let len = data.len();
    match code {
        // RFC 7606 §7.1.
        AttrCode::ORIGIN => match data {
            [0] => Ok(Attr::Origin(Origin::Igp)),
            [1] => Ok(Attr::Origin(Origin::Egp)),
            [2] => Ok(Attr::Origin(Origin::Incomplete)),
            [_] => Err(AttrFault::Issue(Withdraw, "ORIGIN has an undefined value")),
            _ => Err(AttrFault::Issue(Withdraw, "ORIGIN length is not 1")),
        },
        // RFC 7606 §7.2.
        AttrCode::AS_PATH => {
            AsPath::decode(data, as_size).map(Attr::AsPath).map_err(|e| AttrFault::Issue(Withdraw, e.reason()))
        }
        // RFC 7606 §7.3.
        AttrCode::NEXT_HOP if len == 4 => Ok(Attr::NextHop(ipv4_at(data, 0))),
        AttrCode::NEXT_HOP => Err(AttrFault::Issue(Withdraw, "NEXT_HOP length is not 4")),
        // RFC 7606 §7.4.
        AttrCode::MULTI_EXIT_DISC if len == 4 => Ok(Attr::Med(u32_at(data, 0))),
        AttrCode::MULTI_EXIT_DISC => Err(AttrFault::Issue(Withdraw, "MULTI_EXIT_DISC length is not 4")),
        // RFC 7606 §7.5.
        AttrCode::LOCAL_PREF if len == 4 => Ok(Attr::LocalPref(u32_at(data, 0))),
        AttrCode::LOCAL_PREF => Err(AttrFault::Issue(Withdraw, "LOCAL_PREF length is not 4")),
        // RFC 7606 §7.6.
        AttrCode::ATOMIC_AGGREGATE if len == 0 => Ok(Attr::AtomicAggregate),
        AttrCode::ATOMIC_AGGREGATE => Err(AttrFault::Issue(Discard, "ATOMIC_AGGREGATE length is not 0")),
        // RFC 7606 §7.7.
        AttrCode::AGGREGATOR if len == as_size + 4 => {
            let asn = if as_size == 4 { u32_at(data, 0) } else { u32::from(u16::from_be_bytes([data[0], data[1]])) };
            Ok(Attr::Aggregator(Aggregator { asn, address: ipv4_at(data, as_size) }))
        }
        AttrCode::AGGREGATOR => Err(AttrFault::Issue(Discard, "AGGREGATOR length does not match the AS number size")),
        // RFC 7606 §7.8.
        AttrCode::COMMUNITIES if len > 0 && len % 4 == 0 => {
            Ok(Attr::Communities(data.chunks_exact(4).map(|c| Community(u32_at(c, 0))).collect()))
        }
        AttrCode::COMMUNITIES => Err(AttrFault::Issue(Withdraw, "COMMUNITIES length is zero or not a multiple of 4")),
        // RFC 7606 §7.9.
        AttrCode::ORIGINATOR_ID if len == 4 => Ok(Attr::OriginatorId(ipv4_at(data, 0))),
        AttrCode::ORIGINATOR_ID => Err(AttrFault::Issue(Withdraw, "ORIGINATOR_ID length is not 4")),
        // RFC 7606 §7.10.
        AttrCode::CLUSTER_LIST if len > 0 && len % 4 == 0 => {
            Ok(Attr::ClusterList(data.chunks_exact(4).map(|c| ipv4_at(c, 0)).collect()))
        }
        AttrCode::CLUSTER_LIST => Err(AttrFault::Issue(Withdraw, "CLUSTER_LIST length is zero or not a multiple of 4")),
        // RFC 7606 §7.11 and RFC 4760 §7: errors in MP_* reset the session.
        AttrCode::MP_REACH_NLRI => decode_mp_reach(data, ctx).map(|r| Attr::MpReach(Box::new(r))).map_err(|reason| {
            AttrFault::Reset(Box::new(DecodeError::new(
                code::UPDATE_MESSAGE,
                code::update::OPTIONAL_ATTRIBUTE_ERROR,
                raw,
                reason,
            )))
        }),
        AttrCode::MP_UNREACH_NLRI => decode_mp_unreach(data, ctx).map(Attr::MpUnreach).map_err(|reason| {
            AttrFault::Reset(Box::new(DecodeError::new(
                code::UPDATE_MESSAGE,
                code::update::OPTIONAL_ATTRIBUTE_ERROR,
                raw,
                reason,
            )))
        }),
        // RFC 7606 §7.14.
        AttrCode::EXTENDED_COMMUNITIES if len > 0 && len % 8 == 0 => Ok(Attr::ExtCommunities(
            data.chunks_exact(8).map(|c| ExtCommunity([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        )),
        AttrCode::EXTENDED_COMMUNITIES => {
            Err(AttrFault::Issue(Withdraw, "EXTENDED_COMMUNITIES length is zero or not a multiple of 8"))
        }
        // RFC 6793 §6: malformed AS4 attributes are discarded.
        AttrCode::AS4_PATH => match AsPath::decode(data, 4) {
            Ok(p) if p.has_confed() => Err(AttrFault::Issue(Discard, "AS4_PATH carries confederation segments")),
            Ok(p) => Ok(Attr::As4Path(p)),
            Err(e) => Err(AttrFault::Issue(Discard, e.reason())),
        },
        AttrCode::AS4_AGGREGATOR if len == 8 => {
            Ok(Attr::As4Aggregator(Aggregator { asn: u32_at(data, 0), address: ipv4_at(data, 4) }))
        }
        AttrCode::AS4_AGGREGATOR => Err(AttrFault::Issue(Discard, "AS4_AGGREGATOR length is not 8")),
        // RFC 8092 §6.
        AttrCode::LARGE_COMMUNITY if len > 0 && len % 12 == 0 => Ok(Attr::LargeCommunities(
            data.chunks_exact(12)
                .map(|c| LargeCommunity { global: u32_at(c, 0), local1: u32_at(c, 4), local2: u32_at(c, 8) })
                .collect(),
        )),
        AttrCode::LARGE_COMMUNITY => {
            Err(AttrFault::Issue(Withdraw, "LARGE_COMMUNITY length is zero or not a multiple of 12"))
        }
        // RFC 9234 §5.
        AttrCode::OTC if len == 4 => Ok(Attr::Otc(u32_at(data, 0))),
        AttrCode::OTC => Err(AttrFault::Issue(Withdraw, "OTC length is not 4")),
        _ => Ok(Attr::Unknown { code, data: data.to_vec() }),
    }
}

fn family_at(data: &[u8]) -> Family {
    Family::new(Afi(u16::from_be_bytes([data[0], data[1]])), Safi(data[2]))
}

fn decode_next_hop(family: Family, nh: &[u8]) -> Result<NextHop, &'static str> {
    if !family.has_prefix_nlri() {
        return Ok(NextHop::Other(nh.to_vec()));
    }
    match (family.afi, nh.len()) {
        (Afi::IPV4, 4) => Ok(NextHop::V4(ipv4_at(nh, 0))),
        // IPv6 next hops, also for IPv4 NLRI (RFC 8950 §3).
        (_, 16) => Ok(NextHop::V6 { global: ipv6_at(nh, 0), link_local: None }),
        (_, 32) => Ok(NextHop::V6 { global: ipv6_at(nh, 0), link_local: Some(ipv6_at(nh, 16)) }),
        _ => Err("MP_REACH_NLRI next hop length does not fit the address family"),
    }
}

fn decode_mp_reach(data: &[u8], ctx: &WireContext) -> Result<MpReach, &'static str> {
    if ctx.mp_reach_abbreviated {
        // RFC 6396 §4.3.4: in TABLE_DUMP_V2 RIB entries only the next hop
        // length and next hop are kept; the family comes from the RIB subtype.
        // A whole attribute (AFI first, so its first octet is 0 and not the
        // length of the rest) is read as in an UPDATE below.
        if let [nh_len, nh @ ..] = data {
            if usize::from(*nh_len) == nh.len() {
                let family = ctx.mp_family.unwrap_or(Family::IPV6_UNICAST);
                let nlri = if family.afi == Afi::IPV4 { MpNlri::V4(Vec::new()) } else { MpNlri::V6(Vec::new()) };
                return Ok(MpReach { family, next_hop: decode_next_hop(family, nh)?, nlri });
            }
        }
    }
    if data.len() < 5 {
        return Err("MP_REACH_NLRI shorter than its fixed fields");
    }
    let family = family_at(data);
    let nh_len = usize::from(data[3]);
    let Some(nh) = data.get(4..4 + nh_len) else {
        return Err("MP_REACH_NLRI next hop overruns the attribute");
    };
    let next_hop = decode_next_hop(family, nh)?;
    // One reserved octet (formerly the SNPA count, RFC 4760 §3) follows.
    let Some(nlri) = data.get(5 + nh_len..) else {
        return Err("MP_REACH_NLRI ends before its reserved octet");
    };
    let nlri = MpNlri::decode(family, nlri, ctx)?;
    Ok(MpReach { family, next_hop, nlri })
}

fn decode_mp_unreach(data: &[u8], ctx: &WireContext) -> Result<MpUnreach, &'static str> {
    if data.len() < 3 {
        return Err("MP_UNREACH_NLRI shorter than its fixed fields");
    }
    let family = family_at(data);
    let nlri = MpNlri::decode(family, &data[3..], ctx)?;
    Ok(MpUnreach { family, nlri })
}
