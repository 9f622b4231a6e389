//! UPDATE messages (RFC 4271 §4.3, RFC 4760, RFC 7606, RFC 7911).

use std::net::Ipv4Addr;

use bytes::BufMut;
use ipnet::Ipv4Net;

use super::aspath::AsPath;
use super::attr::{decode_attr, Attr, AttrFault, AttrFlags, MpNlri, MpReach, MpUnreach, Origin, PathAttribute};
use super::WireContext;
use crate::error::{DecodeError, EncodeError, ErrorAction, UpdateIssue};
use crate::nlri::{decode_nlri, encode_nlri, nlri_wire_len, Nlri};
use crate::types::{AttrCode, Family, AS_TRANS};

/// An UPDATE message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Update {
    /// IPv4 unicast prefixes withdrawn (the Withdrawn Routes field).
    pub withdrawn: Vec<Nlri<Ipv4Net>>,
    /// Path attributes in wire order, MP_REACH_NLRI / MP_UNREACH_NLRI included.
    pub attributes: Vec<PathAttribute>,
    /// IPv4 unicast prefixes announced (the NLRI field).
    pub nlri: Vec<Nlri<Ipv4Net>>,
}

/// A decoded UPDATE and the RFC 7606 issues found in it that did not reset
/// the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedUpdate {
    /// The message, without discarded attributes.
    pub update: Update,
    /// What was wrong; if any issue is [`ErrorAction::TreatAsWithdraw`], every
    /// prefix the update announces must be handled as withdrawn.
    pub issues: Vec<UpdateIssue>,
}

impl DecodedUpdate {
    /// Whether RFC 7606 requires the announced prefixes to be treated as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.issues.iter().any(|i| i.action == ErrorAction::TreatAsWithdraw)
    }
}

impl Update {
    /// Decodes an UPDATE body (after the 19-octet header).
    pub fn decode(body: &[u8], ctx: &WireContext) -> Result<DecodedUpdate, DecodeError> {
        // RFC 4271 §6.3: Withdrawn Routes Length + Total Attribute Length + 23
        // must fit the message, else Malformed Attribute List.
        let [w0, w1, rest @ ..] = body else {
            return Err(DecodeError::malformed_attribute_list("UPDATE too short for the Withdrawn Routes Length"));
        };
        let wlen = usize::from(u16::from_be_bytes([*w0, *w1]));
        if rest.len() < wlen + 2 {
            return Err(DecodeError::malformed_attribute_list("Withdrawn Routes Length overruns the message"));
        }
        let (wfield, rest) = rest.split_at(wlen);
        let alen = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < alen {
            return Err(DecodeError::malformed_attribute_list("Total Attribute Length overruns the message"));
        }
        let (afield, nfield) = rest.split_at(alen);

        let v4 = ctx.add_path.contains(Family::IPV4_UNICAST);
        let mut withdrawn = Vec::new();
        // RFC 7606 §5.3: NLRI field syntax errors reset the session.
        decode_nlri(wfield, v4, &mut withdrawn).map_err(|e| DecodeError::invalid_network_field(e.reason()))?;
        let mut nlri = Vec::new();
        decode_nlri(nfield, v4, &mut nlri).map_err(|e| DecodeError::invalid_network_field(e.reason()))?;

        let mut issues = Vec::new();
        let mut seen = Seen::default();
        let attributes = decode_attributes(afield, ctx, &mut issues, &mut seen)?;
        let update = Update { withdrawn, attributes, nlri };
        check_mandatory(&update, &seen, &mut issues);
        Ok(DecodedUpdate { update, issues })
    }

    /// The encoded body size (without the 19-octet header).
    pub fn body_len(&self, ctx: &WireContext) -> usize {
        4 + self.withdrawn.iter().map(nlri_wire_len).sum::<usize>()
            + self.attributes.iter().map(|a| a.wire_len(ctx)).sum::<usize>()
            + self.nlri.iter().map(nlri_wire_len).sum::<usize>()
    }

    /// Appends the body (after the header).
    pub fn encode_body<B: BufMut>(&self, ctx: &WireContext, out: &mut B) -> Result<(), EncodeError> {
        let wlen: usize = self.withdrawn.iter().map(nlri_wire_len).sum();
        out.put_u16(u16::try_from(wlen).map_err(|_| EncodeError::FieldTooLong("withdrawn routes"))?);
        self.withdrawn.iter().for_each(|n| encode_nlri(n, out));
        let alen: usize = self.attributes.iter().map(|a| a.wire_len(ctx)).sum();
        out.put_u16(u16::try_from(alen).map_err(|_| EncodeError::FieldTooLong("path attributes"))?);
        for a in &self.attributes {
            a.encode(ctx, out)?;
        }
        self.nlri.iter().for_each(|n| encode_nlri(n, out));
        Ok(())
    }

    /// The End-of-RIB marker for `family` (RFC 4724 §2): an empty UPDATE for
    /// IPv4 unicast, else an UPDATE with an empty MP_UNREACH_NLRI.
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            return Update::default();
        }
        let nlri = match family.afi {
            _ if !family.has_prefix_nlri() => MpNlri::Other(Vec::new()),
            crate::types::Afi::IPV4 => MpNlri::V4(Vec::new()),
            _ => MpNlri::V6(Vec::new()),
        };
        Update {
            attributes: vec![PathAttribute::new(Attr::MpUnreach(MpUnreach { family, nlri }))],
            ..Update::default()
        }
    }

    /// The family this UPDATE marks the End-of-RIB of, if it is such a marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [PathAttribute { value: Attr::MpUnreach(u), .. }] if u.nlri.is_empty() => Some(u.family),
            _ => None,
        }
    }

    /// The first attribute with this type code.
    pub fn attr(&self, code: AttrCode) -> Option<&Attr> {
        self.attributes.iter().map(|a| &a.value).find(|a| a.code() == code)
    }

    /// ORIGIN, if present.
    pub fn origin(&self) -> Option<Origin> {
        match self.attr(AttrCode::ORIGIN) {
            Some(Attr::Origin(o)) => Some(*o),
            _ => None,
        }
    }

    /// AS_PATH as received, if present.
    pub fn as_path(&self) -> Option<&AsPath> {
        match self.attr(AttrCode::AS_PATH) {
            Some(Attr::AsPath(p)) => Some(p),
            _ => None,
        }
    }

    /// NEXT_HOP, if present.
    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        match self.attr(AttrCode::NEXT_HOP) {
            Some(Attr::NextHop(a)) => Some(*a),
            _ => None,
        }
    }

    /// MP_REACH_NLRI, if present.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        match self.attr(AttrCode::MP_REACH_NLRI) {
            Some(Attr::MpReach(r)) => Some(r.as_ref()),
            _ => None,
        }
    }

    /// MP_UNREACH_NLRI, if present.
    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        match self.attr(AttrCode::MP_UNREACH_NLRI) {
            Some(Attr::MpUnreach(u)) => Some(u),
            _ => None,
        }
    }

    /// The AS path of a message received on a session, reconciled as RFC 6793
    /// asks: on a session where both sides negotiated 4-octet AS numbers,
    /// AS_PATH as it is (§4.1: AS4_PATH and AS4_AGGREGATOR from a NEW speaker
    /// are discarded, never merged); from a 2-octet speaker, AS_PATH with
    /// AS4_PATH merged in ([`Update::effective_as_path`]).
    pub fn received_as_path(&self, four_octet_as: bool) -> Option<AsPath> {
        if four_octet_as {
            return self.as_path().cloned();
        }
        self.effective_as_path()
    }

    /// The AS path with AS4_PATH merged in, as RFC 6793 §4.2.3 reconstructs it
    /// for a message from a 2-octet AS speaker (OLD BGP speaker). On a session
    /// with 4-octet AS numbers use [`Update::received_as_path`]: there
    /// AS4_PATH is not merged.
    pub fn effective_as_path(&self) -> Option<AsPath> {
        let path = self.as_path()?;
        let as4 = match self.attr(AttrCode::AS4_PATH) {
            Some(Attr::As4Path(p)) => Some(p),
            _ => None,
        };
        // RFC 6793 §4.2.3: an AGGREGATOR with an AS other than AS_TRANS means
        // the AS4_* attributes were added by someone else and are ignored.
        let aggregator_not_trans =
            matches!(self.attr(AttrCode::AGGREGATOR), Some(Attr::Aggregator(a)) if a.asn != AS_TRANS);
        let has_as4_aggregator = self.attr(AttrCode::AS4_AGGREGATOR).is_some();
        if aggregator_not_trans && has_as4_aggregator {
            return Some(path.clone());
        }
        Some(path.reconcile_as4(as4))
    }

    /// How many prefixes this UPDATE announces (IPv4 field and MP_REACH_NLRI).
    pub fn announced_count(&self) -> usize {
        self.nlri.len() + self.mp_reach().map_or(0, |r| r.nlri.len())
    }

    /// How many prefixes this UPDATE withdraws (IPv4 field and MP_UNREACH_NLRI).
    pub fn withdrawn_count(&self) -> usize {
        self.withdrawn.len() + self.mp_unreach().map_or(0, |u| u.nlri.len())
    }
}

/// Decodes a Path Attributes field on its own (as MRT RIB entries store it):
/// the attributes, and the RFC 7606 issues that did not reset the session.
pub fn decode_path_attributes(
    field: &[u8],
    ctx: &WireContext,
) -> Result<(Vec<PathAttribute>, Vec<UpdateIssue>), DecodeError> {
    let mut issues = Vec::new();
    let attrs = decode_attributes(field, ctx, &mut issues, &mut Seen::default())?;
    Ok((attrs, issues))
}

/// Encodes a Path Attributes field on its own (the inverse of
/// [`decode_path_attributes`]).
pub fn encode_path_attributes<B: BufMut>(
    attrs: &[PathAttribute],
    ctx: &WireContext,
    out: &mut B,
) -> Result<(), EncodeError> {
    attrs.iter().try_for_each(|a| a.encode(ctx, out))
}

/// How many attribute headers the field holds (to size the vector once).
fn count_attributes(mut field: &[u8]) -> usize {
    let mut n = 0;
    while let [flags, _, l0, rest @ ..] = field {
        let (len, rest) = if flags & AttrFlags::EXTENDED_LENGTH != 0 {
            match rest {
                [l1, rest @ ..] => (usize::from(u16::from_be_bytes([*l0, *l1])), rest),
                [] => break,
            }
        } else {
            (usize::from(*l0), rest)
        };
        n += 1;
        field = rest.get(len..).unwrap_or_default();
    }
    n
}

/// The attribute type codes met in a Path Attributes field (decoded or not).
#[derive(Default)]
struct Seen([u64; 4]);

impl Seen {
    /// Marks `code`; returns whether it was already marked.
    fn mark(&mut self, code: AttrCode) -> bool {
        let (word, bit) = (usize::from(code.0 / 64), 1u64 << (code.0 % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        was
    }

    fn contains(&self, code: AttrCode) -> bool {
        self.0[usize::from(code.0 / 64)] & (1u64 << (code.0 % 64)) != 0
    }
}

/// The well-formed fixed-size attributes nearly every UPDATE carries,
/// decoded without the general path (a hot loop: about 5 % of decode time).
/// Anything else — wrong flags or length included — returns `None` and goes
/// through `decode_attr`, which stays the reference (a test checks that both
/// agree wherever this one answers).
#[inline(always)]
fn fixed_attr(flags: AttrFlags, code: AttrCode, data: &[u8]) -> Option<Attr> {
    let ot = flags.0 & (AttrFlags::OPTIONAL | AttrFlags::TRANSITIVE);
    let &[a, b, c, d] = data else {
        return match (code, data, ot) {
            (AttrCode::ORIGIN, [0], AttrFlags::TRANSITIVE) => Some(Attr::Origin(super::attr::Origin::Igp)),
            _ => None,
        };
    };
    let v = u32::from_be_bytes([a, b, c, d]);
    match (code, ot) {
        (AttrCode::NEXT_HOP, AttrFlags::TRANSITIVE) => Some(Attr::NextHop(v.into())),
        (AttrCode::MULTI_EXIT_DISC, AttrFlags::OPTIONAL) => Some(Attr::Med(v)),
        (AttrCode::LOCAL_PREF, AttrFlags::TRANSITIVE) => Some(Attr::LocalPref(v)),
        (AttrCode::ORIGINATOR_ID, AttrFlags::OPTIONAL) => Some(Attr::OriginatorId(v.into())),
        _ => None,
    }
}

/// Parses the Path Attributes field; `seen` collects the codes met, to find
/// duplicates (RFC 7606 §3 (g)) and missing mandatory attributes.
fn decode_attributes(
    mut field: &[u8],
    ctx: &WireContext,
    issues: &mut Vec<UpdateIssue>,
    seen: &mut Seen,
) -> Result<Vec<PathAttribute>, DecodeError> {
    let mut attrs: Vec<PathAttribute> = Vec::with_capacity(count_attributes(field));
    while !field.is_empty() {
        let (flags, code, hdr) = match field {
            [f, c, ..] => (AttrFlags(*f), AttrCode(*c), if *f & AttrFlags::EXTENDED_LENGTH != 0 { 4 } else { 3 }),
            _ => (AttrFlags(0), AttrCode(0), 3),
        };
        if field.len() < hdr {
            // RFC 7606 §4: too few octets left for an attribute header (and
            // so for a hidden MP_REACH_NLRI/MP_UNREACH_NLRI).
            issues.push(UpdateIssue {
                attr: code,
                action: ErrorAction::TreatAsWithdraw,
                reason: "path attributes end inside an attribute header",
            });
            break;
        }
        let len = if hdr == 4 { usize::from(u16::from_be_bytes([field[2], field[3]])) } else { usize::from(field[2]) };
        if field.len() < hdr + len {
            // RFC 7606 §4: an attribute overrunning Total Attribute Length.
            if matches!(code, AttrCode::MP_REACH_NLRI | AttrCode::MP_UNREACH_NLRI) {
                return Err(DecodeError::malformed_attribute_list(
                    "MP_REACH_NLRI/MP_UNREACH_NLRI overruns the path attributes",
                ));
            }
            if !mp_located(seen, &field[hdr..]) {
                return Err(DecodeError::malformed_attribute_list(
                    "attribute length overruns the path attributes before MP_REACH_NLRI/MP_UNREACH_NLRI could be located",
                ));
            }
            issues.push(UpdateIssue {
                attr: code,
                action: ErrorAction::TreatAsWithdraw,
                reason: "attribute length overruns the path attributes",
            });
            break;
        }
        let (raw, rest) = field.split_at(hdr + len);
        field = rest;
        if seen.mark(code) {
            if matches!(code, AttrCode::MP_REACH_NLRI | AttrCode::MP_UNREACH_NLRI) {
                // RFC 7606 §3 (g).
                return Err(DecodeError::malformed_attribute_list(
                    "MP_REACH_NLRI or MP_UNREACH_NLRI appears more than once",
                ));
            }
            issues.push(UpdateIssue {
                attr: code,
                action: ErrorAction::AttributeDiscard,
                reason: "attribute appears more than once; later copies discarded",
            });
            continue;
        }
        if let Some(value) = fixed_attr(flags, code, &raw[hdr..]) {
            attrs.push(PathAttribute { flags, value });
            continue;
        }
        match decode_attr(flags, code, &raw[hdr..], raw, ctx) {
            Ok(value) => attrs.push(PathAttribute { flags, value }),
            Err(AttrFault::Issue(action, reason)) => issues.push(UpdateIssue { attr: code, action, reason }),
            Err(AttrFault::Reset(e)) => return Err(*e),
        }
    }
    Ok(attrs)
}

/// The fewest octets an MP_REACH_NLRI or MP_UNREACH_NLRI attribute takes:
/// a 3-octet header and MP_UNREACH_NLRI's AFI and SAFI (RFC 4760 §4).
const MIN_MP_ATTRIBUTE_LEN: usize = 6;

/// After an attribute overran the path attributes (RFC 7606 §4), whether
/// every MP_REACH_NLRI / MP_UNREACH_NLRI of the UPDATE is known to have been
/// parsed, so that treat-as-withdraw reaches all of its NLRI. RFC 7606 §3 (j):
/// treat-as-withdraw needs the NLRI field and the MP_* attributes "successfully
/// parsed"; if that is not possible, "session reset" (or "AFI/SAFI disable",
/// which bgpd does not implement) MUST be followed. The octets after the
/// overrunning attribute's header (`unread`) are not interpreted: an MP_*
/// attribute may hide there unless both were parsed already (another copy
/// would be a §3 (g) duplicate) or too few octets are left to hold one. Otherwise IPv6 (or any
/// MP) prefixes announced there would stay installed with their old
/// attributes while the IPv4 ones are withdrawn.
fn mp_located(seen: &Seen, unread: &[u8]) -> bool {
    (seen.contains(AttrCode::MP_REACH_NLRI) && seen.contains(AttrCode::MP_UNREACH_NLRI))
        || unread.len() < MIN_MP_ATTRIBUTE_LEN
}

/// RFC 7606 §3 (d): missing well-known mandatory attributes → treat-as-withdraw.
/// An attribute that was present but malformed (so `seen`) has been reported already.
fn check_mandatory(u: &Update, seen: &Seen, issues: &mut Vec<UpdateIssue>) {
    let has_mandatory = seen.contains(AttrCode::ORIGIN) && seen.contains(AttrCode::AS_PATH);
    if has_mandatory && (u.nlri.is_empty() || seen.contains(AttrCode::NEXT_HOP)) {
        return;
    }
    let mp = u.mp_reach().is_some_and(|r| !r.nlri.is_empty());
    if u.nlri.is_empty() && !mp {
        return;
    }
    let mut missing = Vec::new();
    for code in [AttrCode::ORIGIN, AttrCode::AS_PATH] {
        if !seen.contains(code) {
            missing.push(code);
        }
    }
    // RFC 4760 §3: NEXT_HOP is needed only for NLRI in the IPv4 field.
    if !u.nlri.is_empty() && !seen.contains(AttrCode::NEXT_HOP) {
        missing.push(AttrCode::NEXT_HOP);
    }
    for attr in missing {
        issues.push(UpdateIssue {
            attr,
            action: ErrorAction::TreatAsWithdraw,
            reason: "well-known mandatory attribute missing",
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_the_reference_decoder() {
        let ctx = WireContext::new(true);
        let mut answered = 0;
        for code in [1u8, 3, 4, 5, 9, 8, 2] {
            for flags in [0x00u8, 0x40, 0x80, 0xC0, 0x50, 0x90, 0x60] {
                for data in [&[0u8][..], &[1], &[0, 0, 0, 5], &[10, 0, 0, 1], &[1, 2, 3], &[1, 2, 3, 4, 5]] {
                    let (f, c) = (AttrFlags(flags), AttrCode(code));
                    if let Some(fast) = fixed_attr(f, c, data) {
                        answered += 1;
                        let slow = decode_attr(f, c, data, data, &ctx).expect("the reference accepts it too");
                        assert_eq!(fast, slow, "code {code} flags {flags:#x} data {data:?}");
                    }
                }
            }
        }
        assert!(answered >= 10, "the fast path answered only {answered} cases");
    }
}
