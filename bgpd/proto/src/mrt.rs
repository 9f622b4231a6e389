//! MRT framing (RFC 6396, ADD-PATH subtypes of RFC 8050): the records of
//! BGP captures and table dumps, with borrowed bodies for the BGP codec.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{DecodeError, UpdateIssue};
use crate::nlri::{decode_nlri, Nlri};
use crate::types::{Afi, Family, FamilySet, Safi};
use crate::wire::{PathAttribute, WireContext};

/// MRT record types this module reads (RFC 6396 §4).
pub mod kind {
    /// TABLE_DUMP (RFC 6396 §4.2).
    pub const TABLE_DUMP: u16 = 12;
    /// TABLE_DUMP_V2 (RFC 6396 §4.3).
    pub const TABLE_DUMP_V2: u16 = 13;
    /// BGP4MP (RFC 6396 §4.4).
    pub const BGP4MP: u16 = 16;
    /// BGP4MP_ET, with a microsecond timestamp (RFC 6396 §3).
    pub const BGP4MP_ET: u16 = 17;
}

/// Why an MRT stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MrtError {
    /// The stream ends inside a record.
    #[error("truncated MRT record at offset {offset}: {reason}")]
    Truncated {
        /// Offset of the record in the stream.
        offset: usize,
        /// Which part was cut.
        reason: &'static str,
    },
    /// A record's body does not match its type.
    #[error("malformed MRT record (type {kind}, subtype {subtype}): {reason}")]
    Malformed {
        /// Record type.
        kind: u16,
        /// Record subtype.
        subtype: u16,
        /// What was wrong.
        reason: &'static str,
    },
}

/// One MRT record, body borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Seconds since the epoch.
    pub timestamp: u32,
    /// Microseconds, for extended-timestamp (`_ET`) types.
    pub microseconds: Option<u32>,
    /// Record type.
    pub kind: u16,
    /// Record subtype.
    pub subtype: u16,
    /// The body, after the extended timestamp if any.
    pub body: &'a [u8],
}

/// Reads the record at the start of `buf`; `Ok(None)` at the end of input.
/// Returns the record and the octets it took.
pub fn read_record(buf: &[u8], offset: usize) -> Result<Option<(Record<'_>, usize)>, MrtError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < 12 {
        return Err(MrtError::Truncated { offset, reason: "header" });
    }
    let timestamp = be32(buf, 0);
    let kind = be16(buf, 4);
    let subtype = be16(buf, 6);
    let len = be32(buf, 8) as usize;
    let Some(body) = buf.get(12..12 + len) else {
        return Err(MrtError::Truncated { offset, reason: "body" });
    };
    // RFC 6396 §3: _ET types carry microseconds in the first 4 body octets,
    // counted in the length.
    let (microseconds, body) = if kind == kind::BGP4MP_ET || kind == 33 || kind == 49 {
        if body.len() < 4 {
            return Err(MrtError::Malformed { kind, subtype, reason: "extended timestamp missing" });
        }
        (Some(be32(body, 0)), &body[4..])
    } else {
        (None, body)
    };
    Ok(Some((Record { timestamp, microseconds, kind, subtype, body }, 12 + len)))
}

/// An iterator over the records of an MRT stream held in memory.
pub struct Records<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    /// Iterates over the records of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Records { buf, offset: 0, failed: false }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, MrtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match read_record(&self.buf[self.offset..], self.offset) {
            Ok(Some((r, n))) => {
                self.offset += n;
                Some(Ok(r))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A small cursor for MRT bodies; every read is checked.
struct Cursor<'a> {
    b: &'a [u8],
    kind: u16,
    subtype: u16,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: &'static str) -> MrtError {
        MrtError::Malformed { kind: self.kind, subtype: self.subtype, reason }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MrtError> {
        if self.b.len() < n {
            return Err(self.err(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MrtError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, MrtError> {
        Ok(be16(self.take(2, what)?, 0))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MrtError> {
        Ok(be32(self.take(4, what)?, 0))
    }
    fn ip(&mut self, v6: bool, what: &'static str) -> Result<IpAddr, MrtError> {
        if v6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(self.take(16, what)?);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        } else {
            let a = self.take(4, what)?;
            Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])))
        }
    }
}

/// A BGP message captured in a BGP4MP / BGP4MP_ET record (RFC 6396 §4.4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bgp4mpMessage<'a> {
    /// The peer's AS.
    pub peer_as: u32,
    /// The collector's AS.
    pub local_as: u32,
    /// The peer's address.
    pub peer_ip: IpAddr,
    /// The collector's address.
    pub local_ip: IpAddr,
    /// The context the message was encoded for (4-octet AS, ADD-PATH).
    pub context: WireContext,
    /// The whole BGP message, header included.
    pub message: &'a [u8],
}

/// One route of a TABLE_DUMP_V2 RIB record or a TABLE_DUMP record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibEntry<'a> {
    /// Index into the PEER_INDEX_TABLE (TABLE_DUMP_V2), or 0 (TABLE_DUMP).
    pub peer_index: u16,
    /// When the route was learned.
    pub originated: u32,
    /// ADD-PATH path identifier (RFC 8050 subtypes).
    pub path_id: Option<u32>,
    /// The encoded path attributes.
    pub attributes: &'a [u8],
}

/// A peer of the PEER_INDEX_TABLE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Address.
    pub ip: IpAddr,
    /// AS number.
    pub asn: u32,
}

/// What an MRT record holds, as far as BGP goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A BGP message (BGP4MP MESSAGE* subtypes).
    Message(Bgp4mpMessage<'a>),
    /// A BGP FSM state change (BGP4MP STATE_CHANGE*).
    StateChange {
        /// Old state (RFC 6396 §4.4.1 numbering).
        old: u16,
        /// New state.
        new: u16,
    },
    /// The TABLE_DUMP_V2 peer index.
    PeerIndex(Vec<Peer>),
    /// The routes to one prefix (TABLE_DUMP_V2 RIB subtypes, or one TABLE_DUMP route).
    Rib {
        /// The prefix's family.
        family: Family,
        /// The prefix (for RIB_GENERIC of other families: `None`).
        prefix: Option<IpNet>,
        /// Attributes are encoded with 4-octet AS numbers (always for TABLE_DUMP_V2).
        four_octet_as: bool,
        /// The routes.
        entries: Vec<RibEntry<'a>>,
    },
    /// A record type or subtype not carrying BGP data this module reads.
    Other,
}

impl<'a> Record<'a> {
    /// Interprets the record body.
    pub fn entry(&self) -> Result<Entry<'a>, MrtError> {
        let mut c = Cursor { b: self.body, kind: self.kind, subtype: self.subtype };
        match (self.kind, self.subtype) {
            (kind::BGP4MP | kind::BGP4MP_ET, 0 | 5) => {
                let as4 = self.subtype == 5;
                c.take(if as4 { 8 } else { 4 }, "peer/local AS")?;
                c.u16("interface index")?;
                let afi = c.u16("AFI")?;
                c.take(if afi == 2 { 32 } else { 8 }, "addresses")?;
                Ok(Entry::StateChange { old: c.u16("old state")?, new: c.u16("new state")? })
            }
            (kind::BGP4MP | kind::BGP4MP_ET, 1 | 4 | 6 | 7 | 8 | 9 | 10 | 11) => {
                let as4 = matches!(self.subtype, 4 | 7 | 9 | 11);
                let add_path = matches!(self.subtype, 8..=11);
                let (peer_as, local_as) = if as4 {
                    (c.u32("peer AS")?, c.u32("local AS")?)
                } else {
                    (u32::from(c.u16("peer AS")?), u32::from(c.u16("local AS")?))
                };
                c.u16("interface index")?;
                let afi = c.u16("AFI")?;
                let v6 = match afi {
                    1 => false,
                    2 => true,
                    _ => return Err(c.err("address family is neither IPv4 nor IPv6")),
                };
                let peer_ip = c.ip(v6, "peer address")?;
                let local_ip = c.ip(v6, "local address")?;
                // The collector's negotiated message size is not recorded, so
                // messages up to the RFC 8654 maximum are accepted.
                let context = WireContext::new(as4)
                    .with_add_path(if add_path { FamilySet::ALL } else { FamilySet::EMPTY })
                    .with_extended_message(true);
                Ok(Entry::Message(Bgp4mpMessage { peer_as, local_as, peer_ip, local_ip, context, message: c.b }))
            }
            (kind::TABLE_DUMP_V2, 1) => {
                c.u32("collector BGP ID")?;
                let name_len = c.u16("view name length")?;
                c.take(usize::from(name_len), "view name")?;
                let n = c.u16("peer count")?;
                let mut peers = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let t = c.u8("peer type")?;
                    let id = c.take(4, "peer BGP ID")?;
                    let ip = c.ip(t & 1 != 0, "peer address")?;
                    let asn = if t & 2 != 0 { c.u32("peer AS")? } else { u32::from(c.u16("peer AS")?) };
                    peers.push(Peer { bgp_id: Ipv4Addr::new(id[0], id[1], id[2], id[3]), ip, asn });
                }
                Ok(Entry::PeerIndex(peers))
            }
            (kind::TABLE_DUMP_V2, 2..=5 | 8..=11) => {
                let add_path = self.subtype >= 8;
                let family = match self.subtype {
                    2 | 8 => Family::IPV4_UNICAST,
                    3 | 9 => Family::IPV4_MULTICAST,
                    4 | 10 => Family::IPV6_UNICAST,
                    _ => Family::IPV6_MULTICAST,
                };
                c.u32("sequence number")?;
                let len = c.u8("prefix length")?;
                let octets = c.take(usize::from(len).div_ceil(8), "prefix")?;
                let mut wire = Vec::with_capacity(1 + octets.len());
                wire.push(len);
                wire.extend_from_slice(octets);
                let prefix = decode_one_prefix(family, &wire).ok_or_else(|| c.err("invalid prefix"))?;
                let entries = rib_entries(&mut c, add_path)?;
                Ok(Entry::Rib { family, prefix: Some(prefix), four_octet_as: true, entries })
            }
            (kind::TABLE_DUMP_V2, 6 | 12) => {
                let add_path = self.subtype == 12;
                c.u32("sequence number")?;
                let family = Family::new(Afi(c.u16("AFI")?), Safi(c.u8("SAFI")?));
                // RIB_GENERIC holds a single NLRI of any family; for prefix
                // families it is a length-prefixed prefix.
                let prefix = if family.has_prefix_nlri() {
                    let len = c.u8("prefix length")?;
                    let octets = c.take(usize::from(len).div_ceil(8), "prefix")?;
                    let mut wire = vec![len];
                    wire.extend_from_slice(octets);
                    Some(decode_one_prefix(family, &wire).ok_or_else(|| c.err("invalid prefix"))?)
                } else {
                    return Ok(Entry::Other);
                };
                let entries = rib_entries(&mut c, add_path)?;
                Ok(Entry::Rib { family, prefix, four_octet_as: true, entries })
            }
            (kind::TABLE_DUMP, 1 | 2) => {
                let v6 = self.subtype == 2;
                c.u16("view number")?;
                c.u16("sequence number")?;
                let addr = c.ip(v6, "prefix")?;
                let len = c.u8("prefix length")?;
                let prefix = IpNet::new(addr, len).map_err(|_| c.err("prefix length too long"))?.trunc();
                c.u8("status")?;
                let originated = c.u32("originated time")?;
                c.ip(v6, "peer address")?;
                c.u16("peer AS")?;
                let alen = c.u16("attribute length")?;
                let attributes = c.take(usize::from(alen), "attributes")?;
                let family = if v6 { Family::IPV6_UNICAST } else { Family::IPV4_UNICAST };
                let entries = vec![RibEntry { peer_index: 0, originated, path_id: None, attributes }];
                Ok(Entry::Rib { family, prefix: Some(prefix), four_octet_as: false, entries })
            }
            _ => Ok(Entry::Other),
        }
    }
}

fn decode_one_prefix(family: Family, wire: &[u8]) -> Option<IpNet> {
    if family.afi == Afi::IPV4 {
        let mut v: Vec<Nlri<Ipv4Net>> = Vec::with_capacity(1);
        decode_nlri(wire, false, &mut v).ok()?;
        v.first().map(|n| IpNet::V4(n.prefix))
    } else {
        let mut v: Vec<Nlri<Ipv6Net>> = Vec::with_capacity(1);
        decode_nlri(wire, false, &mut v).ok()?;
        v.first().map(|n| IpNet::V6(n.prefix))
    }
}

fn rib_entries<'a>(c: &mut Cursor<'a>, add_path: bool) -> Result<Vec<RibEntry<'a>>, MrtError> {
    let n = c.u16("entry count")?;
    let mut entries = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let peer_index = c.u16("peer index")?;
        let originated = c.u32("originated time")?;
        let path_id = if add_path { Some(c.u32("path identifier")?) } else { None };
        let alen = c.u16("attribute length")?;
        let attributes = c.take(usize::from(alen), "attributes")?;
        entries.push(RibEntry { peer_index, originated, path_id, attributes });
    }
    Ok(entries)
}

/// Decodes the path attributes of a RIB entry: MP_REACH_NLRI is abbreviated
/// to its next hop there (RFC 6396 §4.3.4), with `family` giving its family.
pub fn decode_rib_attributes(
    attributes: &[u8],
    family: Family,
    four_octet_as: bool,
) -> Result<(Vec<PathAttribute>, Vec<UpdateIssue>), DecodeError> {
    let ctx = rib_context(family, four_octet_as);
    crate::wire::decode_path_attributes(attributes, &ctx)
}

/// The context for encoding or decoding RIB entry attributes of `family`.
pub fn rib_context(family: Family, four_octet_as: bool) -> WireContext {
    WireContext { mp_reach_abbreviated: true, mp_family: Some(family), ..WireContext::new(four_octet_as) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let rec = [0u8, 0, 0, 1, 0, 16, 0, 4, 0, 0, 0, 50, 1, 2];
        assert!(matches!(read_record(&rec, 0), Err(MrtError::Truncated { reason: "body", .. })));
        assert!(matches!(read_record(&rec[..5], 0), Err(MrtError::Truncated { reason: "header", .. })));
    }

    /// ORIGIN IGP, AS_PATH 65017 (4-octet), then `mp` as MP_REACH_NLRI.
    fn rib_attributes_with_mp_reach(mp: &[u8]) -> Vec<u8> {
        let mut a = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xf9, 0x80, 14, mp.len() as u8];
        a.extend_from_slice(mp);
        a
    }

    const NH_GLOBAL: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const NH_LINK_LOCAL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn ipv6_rib_entry_attributes_round_trip_in_both_mp_reach_forms() {
        // RFC 6396 §4.3.4 short form: next hop length and next hop (global + link-local).
        let short = [[32u8].as_slice(), &NH_GLOBAL, &NH_LINK_LOCAL].concat();
        // The whole attribute with the entry's prefix, as Quagga-based collectors
        // (RIPE RIS) write it: AFI 2, SAFI 1, next hop, reserved, 2001:db8::/32.
        let full = [[0u8, 2, 1, 32].as_slice(), &NH_GLOBAL, &NH_LINK_LOCAL, &[0, 32, 0x20, 0x01, 0x0d, 0xb8]].concat();
        for (name, mp) in [("short", short), ("full", full)] {
            let bytes = rib_attributes_with_mp_reach(&mp);
            let (attrs, issues) = decode_rib_attributes(&bytes, Family::IPV6_UNICAST, true).unwrap();
            assert!(issues.is_empty(), "{name}: {issues:?}");
            let Some(crate::wire::Attr::MpReach(r)) = attrs.last().map(|a| &a.value) else {
                panic!("{name}: no MP_REACH")
            };
            assert_eq!(r.family, Family::IPV6_UNICAST, "{name}");
            let ctx = rib_context(Family::IPV6_UNICAST, true);
            let mut again = Vec::new();
            crate::wire::encode_path_attributes(&attrs, &ctx, &mut again).unwrap();
            assert_eq!(again, bytes, "{name}: re-encoded as received");
            assert_eq!(decode_rib_attributes(&again, Family::IPV6_UNICAST, true).unwrap().0, attrs, "{name}");
        }
    }

    #[test]
    fn bgp4mp_as4_message_is_located() {
        let mut body = vec![];
        body.extend_from_slice(&65001u32.to_be_bytes());
        body.extend_from_slice(&12654u32.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 1, 192, 0, 2, 1, 192, 0, 2, 2]);
        let keepalive = [[0xFFu8; 16].as_slice(), &[0, 19, 4]].concat();
        body.extend_from_slice(&keepalive);
        let mut rec = vec![0, 0, 0, 1, 0, 16, 0, 4];
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&body);
        let (r, n) = read_record(&rec, 0).unwrap().unwrap();
        assert_eq!(n, rec.len());
        let Entry::Message(m) = r.entry().unwrap() else { panic!("not a message") };
        assert_eq!(m.peer_as, 65001);
        assert!(m.context.four_octet_as);
        assert_eq!(m.message, keepalive.as_slice());
    }
}
