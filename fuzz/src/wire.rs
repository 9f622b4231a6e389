//! The BGP codec: messages, path attributes, OPEN bodies and MRT streams.

use bgpd_proto::mrt::{decode_rib_attributes, Entry, Records};
use bgpd_proto::wire::{decode_path_attributes, Message, Open};
use bgpd_proto::{Family, FamilySet, WireContext};

/// The context a flags byte selects: 4-octet AS, ADD-PATH, extended messages.
fn context(flags: u8) -> WireContext {
    WireContext::new(flags & 1 != 0)
        .with_add_path(if flags & 2 != 0 { FamilySet::ALL } else { FamilySet::EMPTY })
        .with_extended_message(flags & 4 != 0)
}

/// A flags byte (the negotiated context), then a stream of BGP messages: the
/// decoder returns a message, "need more bytes" or an error, never panics,
/// and whatever it decodes re-encodes to bytes that decode to the same value.
pub fn message(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let ctx = context(flags);
    while let Ok(Some(frame)) = Message::decode(rest, &ctx) {
        assert!(frame.len <= rest.len(), "a frame longer than its input");
        if let Ok(bytes) = frame.message.to_bytes(&ctx) {
            let again = Message::decode(&bytes, &ctx).expect("re-encoded message decodes").expect("whole message");
            assert_eq!(again.len, bytes.len(), "one message re-encoded, one message decoded");
            assert_eq!(again.message, frame.message, "decode, encode, decode: the same message");
        }
        rest = &rest[frame.len..];
    }
}

/// A flags byte, then a Path Attributes field, decoded in a session's
/// context and as an MRT RIB entry's attributes (RFC 6396 §4.3.4).
pub fn path_attributes(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let _ = decode_path_attributes(rest, &context(flags));
    let family = if flags & 8 != 0 { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST };
    let _ = decode_rib_attributes(rest, family, flags & 1 != 0);
}

/// An OPEN body (after the header): capabilities and RFC 9072 extended
/// parameters. What decodes re-encodes to a body that decodes to the same OPEN.
pub fn open(data: &[u8]) {
    let Ok(open) = Open::decode(data) else { return };
    let _ = open.asn();
    let _ = open.capabilities().count();
    let mut body = Vec::new();
    if open.encode_body(&mut body).is_ok() {
        let again = Open::decode(&body).expect("a re-encoded OPEN decodes");
        assert_eq!(again, open, "decode, encode, decode: the same OPEN");
    }
}

/// An MRT stream (RFC 6396): every record's entry, every BGP message of a
/// BGP4MP record and every RIB entry's attributes decoded.
pub fn mrt(data: &[u8]) {
    for rec in Records::new(data).flatten() {
        match rec.entry() {
            Ok(Entry::Message(m)) => {
                let _ = Message::decode(m.message, &m.context);
            }
            Ok(Entry::Rib { family, four_octet_as, entries, .. }) => {
                for e in entries {
                    let _ = decode_rib_attributes(e.attributes, family, four_octet_as);
                }
            }
            _ => {}
        }
    }
}
