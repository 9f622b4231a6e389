//! The BGP-4 wire codec: every message type, with the negotiated state a
//! session brings to decoding and encoding in [`WireContext`].

mod aspath;
mod attr;
mod capability;
mod notification;
mod open;
mod pack;
mod route_refresh;
mod update;

pub use aspath::{AsPath, AsSegment, Asns, SegmentKind};
pub use attr::{
    Aggregator, Attr, AttrFlags, Community, ExtCommunity, LargeCommunity, MpNlri, MpReach, MpUnreach, NextHop, Origin,
    PathAttribute,
};
pub use capability::{AddPathMode, Capability, GrFamily, GracefulRestart, LlgrFamily, Role};
pub use notification::Notification;
pub use open::{Open, OptParam, PARAM_CAPABILITIES};
pub use pack::{pack_announcements, pack_withdrawals, Announcement};
pub use route_refresh::{RefreshSubtype, RouteRefresh};
pub use update::{decode_path_attributes, encode_path_attributes, DecodedUpdate, Update};

use bytes::{BufMut, BytesMut};

use crate::error::{code, DecodeError, EncodeError, UpdateIssue};
use crate::types::{Family, FamilySet, MessageType};

/// Length of the message header (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message size without the extended message capability.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with the extended message capability (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// What was negotiated for one direction of a session and changes how
/// messages are encoded or decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireContext {
    /// AS numbers are four octets in AS_PATH and AGGREGATOR (RFC 6793).
    pub four_octet_as: bool,
    /// Families whose NLRI carry ADD-PATH path identifiers in this direction.
    pub add_path: FamilySet,
    /// Messages may be up to 65535 octets (RFC 8654).
    pub extended_message: bool,
    /// Families whose NLRI may carry an IPv6 next hop (RFC 8950): both sides
    /// sent the extended next hop capability for them.
    pub extended_next_hop: FamilySet,
    /// MRT TABLE_DUMP_V2 RIB entries abbreviate MP_REACH_NLRI to its next hop
    /// (RFC 6396 §4.3.4); the family then comes from the RIB entry.
    pub(crate) mp_reach_abbreviated: bool,
    pub(crate) mp_family: Option<Family>,
}

impl WireContext {
    /// The context of a session that negotiated nothing beyond RFC 4271.
    pub fn new(four_octet_as: bool) -> WireContext {
        WireContext { four_octet_as, ..WireContext::default() }
    }

    /// This context with ADD-PATH in `families`.
    pub fn with_add_path(mut self, families: FamilySet) -> WireContext {
        self.add_path = families;
        self
    }

    /// This context with or without extended messages.
    pub fn with_extended_message(mut self, on: bool) -> WireContext {
        self.extended_message = on;
        self
    }

    /// This context with IPv6 next hops allowed for `families` (RFC 8950).
    pub fn with_extended_next_hop(mut self, families: FamilySet) -> WireContext {
        self.extended_next_hop = families;
        self
    }

    /// The largest message allowed.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// One message decoded from a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message.
    pub message: Message,
    /// RFC 7606 issues that did not reset the session (UPDATE only).
    pub issues: Vec<UpdateIssue>,
    /// How many octets of the input the message took.
    pub len: usize,
}

impl Message {
    /// The message type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::OPEN,
            Message::Update(_) => MessageType::UPDATE,
            Message::Notification(_) => MessageType::NOTIFICATION,
            Message::Keepalive => MessageType::KEEPALIVE,
            Message::RouteRefresh(_) => MessageType::ROUTE_REFRESH,
        }
    }

    /// Decodes the first message of `buf`. Returns `Ok(None)` while `buf`
    /// does not yet hold a whole message: that is not an error.
    pub fn decode(buf: &[u8], ctx: &WireContext) -> Result<Option<Frame>, DecodeError> {
        let Some((kind, len)) = decode_header(buf, ctx)? else { return Ok(None) };
        if buf.len() < len {
            return Ok(None);
        }
        let body = &buf[HEADER_LEN..len];
        let mut issues = Vec::new();
        let message = match kind {
            MessageType::OPEN => Message::Open(Open::decode(body)?),
            MessageType::UPDATE => {
                let d = Update::decode(body, ctx)?;
                issues = d.issues;
                Message::Update(d.update)
            }
            MessageType::NOTIFICATION => Message::Notification(Notification::decode(body)?),
            MessageType::KEEPALIVE => Message::Keepalive,
            _ => Message::RouteRefresh(RouteRefresh::decode(body)?),
        };
        Ok(Some(Frame { message, issues, len }))
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, ctx: &WireContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_bytes(0xFF, 16);
        out.put_u16(0);
        out.put_u8(self.kind().0);
        match self {
            Message::Open(o) => o.encode_body(out)?,
            Message::Update(u) => u.encode_body(ctx, out)?,
            Message::Notification(n) => n.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => r.encode_body(out),
        }
        let len = out.len() - start;
        // RFC 8654 §4: OPEN and KEEPALIVE stay within 4096 octets.
        let max = match self {
            Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
            _ => ctx.max_message_len(),
        };
        if len > max {
            out.truncate(start);
            return Err(EncodeError::TooLong { len, max });
        }
        // Invariant: len <= 65535 was just checked.
        out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, ctx: &WireContext) -> Result<BytesMut, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(ctx, &mut out)?;
        Ok(out)
    }
}

/// Checks the header of the message at the start of `buf` (RFC 4271 §6.1)
/// and returns its type and total length, or `None` if fewer than 19 octets
/// have arrived.
pub fn decode_header(buf: &[u8], ctx: &WireContext) -> Result<Option<(MessageType, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xFF) {
        return Err(DecodeError::new(
            code::MESSAGE_HEADER,
            code::header::CONNECTION_NOT_SYNCHRONIZED,
            [],
            "marker is not all ones",
        ));
    }
    let len_field = [buf[16], buf[17]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let kind = MessageType(buf[18]);
    let bad_len =
        |reason| Err(DecodeError::new(code::MESSAGE_HEADER, code::header::BAD_MESSAGE_LENGTH, len_field, reason));
    let (min, max) = match kind {
        MessageType::OPEN => (29, MAX_MESSAGE_LEN),
        MessageType::UPDATE => (23, ctx.max_message_len()),
        MessageType::NOTIFICATION => (21, ctx.max_message_len()),
        MessageType::KEEPALIVE => (19, 19),
        MessageType::ROUTE_REFRESH => (23, ctx.max_message_len()),
        _ => {
            return Err(DecodeError::new(
                code::MESSAGE_HEADER,
                code::header::BAD_MESSAGE_TYPE,
                [kind.0],
                "unknown message type",
            ));
        }
    };
    if len < min {
        return bad_len("message length below the minimum for its type");
    }
    if len > max {
        return bad_len("message length above the maximum");
    }
    Ok(Some((kind, len)))
}
