//! Update packing: from one attribute set and many prefixes, the fewest
//! UPDATE messages that fit the negotiated maximum size.

use bytes::{BufMut, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

use super::attr::{AttrFlags, NextHop, PathAttribute};
use super::{WireContext, HEADER_LEN};
use crate::error::EncodeError;
use crate::nlri::{encode_nlri, nlri_wire_len, Nlri, WirePrefix};
use crate::types::{AttrCode, Family, MessageType};

/// Prefixes to announce or withdraw, of one address family type.
#[derive(Clone, Copy, Debug)]
pub enum Announcement<'a> {
    /// IPv4 prefixes.
    V4(&'a [Nlri<Ipv4Net>]),
    /// IPv6 prefixes.
    V6(&'a [Nlri<Ipv6Net>]),
}

/// Splits `nlri` into runs whose encoding fits `room` octets each.
fn chunks<P: WirePrefix>(nlri: &[Nlri<P>], room: usize) -> Result<Vec<&[Nlri<P>]>, EncodeError> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, n) in nlri.iter().enumerate() {
        let l = nlri_wire_len(n);
        if l > room {
            return Err(EncodeError::TooLong { len: l, max: room });
        }
        if used + l > room {
            out.push(&nlri[start..i]);
            start = i;
            used = 0;
        }
        used += l;
    }
    if start < nlri.len() {
        out.push(&nlri[start..]);
    }
    Ok(out)
}

fn header(out: &mut BytesMut, len: usize) {
    out.put_bytes(0xFF, 16);
    // Invariant: callers keep len within the negotiated maximum (<= 65535).
    out.put_u16(len as u16);
    out.put_u8(MessageType::UPDATE.0);
}

fn nlri_len<P: WirePrefix>(n: &[Nlri<P>]) -> usize {
    n.iter().map(nlri_wire_len).sum()
}

fn put_nlri<P: WirePrefix>(n: &[Nlri<P>], out: &mut BytesMut) {
    n.iter().for_each(|x| encode_nlri(x, out));
}

/// Encodes UPDATEs announcing `prefixes` of `family` with `attributes` (which
/// must not contain MP_REACH_NLRI / MP_UNREACH_NLRI).
///
/// IPv4 unicast with an IPv4 `next_hop` uses the NLRI field (`attributes`
/// then carries NEXT_HOP); every other case uses MP_REACH_NLRI, placed first
/// as RFC 7606 §5.1 asks. Returns the messages, each one whole.
pub fn pack_announcements(
    family: Family,
    attributes: &[PathAttribute],
    next_hop: &NextHop,
    prefixes: Announcement<'_>,
    ctx: &WireContext,
) -> Result<Vec<BytesMut>, EncodeError> {
    let max = ctx.max_message_len();
    let attrs_len: usize = attributes.iter().map(|a| a.wire_len(ctx)).sum();
    let mut out = Vec::new();
    match (prefixes, next_hop) {
        (Announcement::V4(nlri), NextHop::V4(_)) if family == Family::IPV4_UNICAST => {
            let base = HEADER_LEN + 4 + attrs_len;
            let room = max.checked_sub(base).ok_or(EncodeError::TooLong { len: base, max })?;
            for chunk in chunks(nlri, room)? {
                let len = base + nlri_len(chunk);
                let mut m = BytesMut::with_capacity(len);
                header(&mut m, len);
                m.put_u16(0);
                m.put_u16(attrs_len as u16);
                for a in attributes {
                    a.encode(ctx, &mut m)?;
                }
                put_nlri(chunk, &mut m);
                out.push(m);
            }
        }
        (Announcement::V4(nlri), _) => mp_reach(family, attributes, attrs_len, next_hop, nlri, ctx, &mut out)?,
        (Announcement::V6(nlri), _) => mp_reach(family, attributes, attrs_len, next_hop, nlri, ctx, &mut out)?,
    }
    Ok(out)
}

fn mp_reach<P: WirePrefix>(
    family: Family,
    attributes: &[PathAttribute],
    attrs_len: usize,
    next_hop: &NextHop,
    nlri: &[Nlri<P>],
    ctx: &WireContext,
    out: &mut Vec<BytesMut>,
) -> Result<(), EncodeError> {
    let max = ctx.max_message_len();
    let mut nh = BytesMut::new();
    match next_hop {
        NextHop::V4(a) => nh.put_slice(&a.octets()),
        NextHop::V6 { global, link_local } => {
            nh.put_slice(&global.octets());
            if let Some(ll) = link_local {
                nh.put_slice(&ll.octets());
            }
        }
        NextHop::Other(b) => nh.put_slice(b),
    }
    let nh_len = u8::try_from(nh.len()).map_err(|_| EncodeError::FieldTooLong("next hop"))?;
    // MP_REACH_NLRI header with Extended Length (4) + AFI/SAFI (3) + next hop length (1) + next hop + reserved (1).
    let mp_fixed = 4 + 3 + 1 + nh.len() + 1;
    let base = HEADER_LEN + 4 + attrs_len + mp_fixed;
    let room = max.checked_sub(base).ok_or(EncodeError::TooLong { len: base, max })?;
    for chunk in chunks(nlri, room)? {
        let n_len = nlri_len(chunk);
        let len = base + n_len;
        let mut m = BytesMut::with_capacity(len);
        header(&mut m, len);
        m.put_u16(0);
        m.put_u16((attrs_len + mp_fixed + n_len) as u16);
        m.put_u8(AttrFlags::OPTIONAL | AttrFlags::EXTENDED_LENGTH);
        m.put_u8(AttrCode::MP_REACH_NLRI.0);
        m.put_u16((mp_fixed - 4 + n_len) as u16);
        m.put_u16(family.afi.0);
        m.put_u8(family.safi.0);
        m.put_u8(nh_len);
        m.put_slice(&nh);
        m.put_u8(0);
        put_nlri(chunk, &mut m);
        for a in attributes {
            a.encode(ctx, &mut m)?;
        }
        out.push(m);
    }
    Ok(())
}

/// Encodes UPDATEs withdrawing `prefixes` of `family`: the Withdrawn Routes
/// field for IPv4 unicast, MP_UNREACH_NLRI otherwise.
pub fn pack_withdrawals(
    family: Family,
    prefixes: Announcement<'_>,
    ctx: &WireContext,
) -> Result<Vec<BytesMut>, EncodeError> {
    match prefixes {
        Announcement::V4(nlri) if family == Family::IPV4_UNICAST => {
            let base = HEADER_LEN + 4;
            let mut out = Vec::new();
            for chunk in chunks(nlri, ctx.max_message_len() - base)? {
                let w = nlri_len(chunk);
                let mut m = BytesMut::with_capacity(base + w);
                header(&mut m, base + w);
                m.put_u16(w as u16);
                put_nlri(chunk, &mut m);
                m.put_u16(0);
                out.push(m);
            }
            Ok(out)
        }
        Announcement::V4(nlri) => mp_unreach(family, nlri, ctx),
        Announcement::V6(nlri) => mp_unreach(family, nlri, ctx),
    }
}

fn mp_unreach<P: WirePrefix>(
    family: Family,
    nlri: &[Nlri<P>],
    ctx: &WireContext,
) -> Result<Vec<BytesMut>, EncodeError> {
    // Header, two length fields, attribute header with Extended Length, AFI/SAFI.
    let base = HEADER_LEN + 4 + 4 + 3;
    let mut out = Vec::new();
    for chunk in chunks(nlri, ctx.max_message_len() - base)? {
        let n = nlri_len(chunk);
        let mut m = BytesMut::with_capacity(base + n);
        header(&mut m, base + n);
        m.put_u16(0);
        m.put_u16((4 + 3 + n) as u16);
        m.put_u8(AttrFlags::OPTIONAL | AttrFlags::EXTENDED_LENGTH);
        m.put_u8(AttrCode::MP_UNREACH_NLRI.0);
        m.put_u16((3 + n) as u16);
        m.put_u16(family.afi.0);
        m.put_u8(family.safi.0);
        put_nlri(chunk, &mut m);
        out.push(m);
    }
    Ok(out)
}
