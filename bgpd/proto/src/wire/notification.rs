//! NOTIFICATION messages (RFC 4271 §4.5, RFC 4486, RFC 8203/9003).

use bytes::BufMut;

use super::capability::Capability;
use crate::error::{code, DecodeError};
use crate::types::CapabilityCode;

/// A NOTIFICATION message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, whose meaning depends on code and subcode.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given fields.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification { code, subcode, data: data.into() }
    }

    /// Cease with a shutdown communication (RFC 9003): `subcode` should be
    /// Administrative Shutdown or Administrative Reset. The message is cut to
    /// 255 octets at a character boundary.
    pub fn cease_with_message(subcode: u8, message: &str) -> Notification {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        data.push(end as u8);
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification::new(code::CEASE, subcode, data)
    }

    /// Cease / Hard Reset (RFC 8538 §3) carrying `inner` (its code,
    /// subcode and data) as its data: the session ends for good even where
    /// the N bit makes other NOTIFICATIONs graceful.
    pub fn hard_reset(inner: &Notification) -> Notification {
        let mut data = Vec::with_capacity(inner.data.len() + 2);
        data.push(inner.code);
        data.push(inner.subcode);
        data.extend_from_slice(&inner.data);
        Notification::new(code::CEASE, code::cease::HARD_RESET, data)
    }

    /// Whether this is a Cease / Hard Reset (RFC 8538 §3).
    pub fn is_hard_reset(&self) -> bool {
        self.code == code::CEASE && self.subcode == code::cease::HARD_RESET
    }

    /// The NOTIFICATION a Hard Reset carries (RFC 8538 §3), if its data holds one.
    pub fn hard_reset_inner(&self) -> Option<Notification> {
        match (self.is_hard_reset(), self.data.as_slice()) {
            (true, [c, s, rest @ ..]) => Some(Notification::new(*c, *s, rest)),
            _ => None,
        }
    }

    /// RFC 8538 §5.1: once the N bit is exchanged, these Cease subcodes are
    /// sent inside a Hard Reset (the peer must drop the routes); the others
    /// (and every error code) leave graceful restart in force. Administrative
    /// Reset is left graceful here: bgpd sends it when it restarts.
    pub fn needs_hard_reset(&self) -> bool {
        self.code == code::CEASE
            && matches!(
                self.subcode,
                code::cease::MAX_PREFIXES
                    | code::cease::ADMINISTRATIVE_SHUTDOWN
                    | code::cease::PEER_DECONFIGURED
                    | code::cease::BFD_DOWN
            )
    }

    /// The NOTIFICATION a decoding error calls for.
    pub fn from_error(e: &DecodeError) -> Notification {
        Notification::new(e.code, e.subcode, e.data.clone())
    }

    /// Decodes a NOTIFICATION body.
    pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
        match body {
            [c, s, data @ ..] => Ok(Notification::new(*c, *s, data)),
            _ => Err(DecodeError::new(
                code::MESSAGE_HEADER,
                code::header::BAD_MESSAGE_LENGTH,
                [],
                "NOTIFICATION shorter than 21 octets",
            )),
        }
    }

    /// Appends the body.
    pub fn encode_body<B: BufMut>(&self, out: &mut B) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or
    /// Reset (RFC 9003 §2), if the data carries a well-formed one.
    pub fn shutdown_message(&self) -> Option<&str> {
        if self.code != code::CEASE
            || !matches!(self.subcode, code::cease::ADMINISTRATIVE_SHUTDOWN | code::cease::ADMINISTRATIVE_RESET)
        {
            return None;
        }
        let (len, text) = self.data.split_first()?;
        let text = text.get(..usize::from(*len))?;
        std::str::from_utf8(text).ok()
    }

    /// The capabilities an OPEN Message Error / Unsupported Capability lists
    /// in its data (RFC 5492 §5), if the data parses as capabilities.
    pub fn unsupported_capabilities(&self) -> Option<Vec<Capability>> {
        if self.code != code::OPEN_MESSAGE || self.subcode != code::open::UNSUPPORTED_CAPABILITY {
            return None;
        }
        let mut rest = self.data.as_slice();
        let mut caps = Vec::new();
        while let [c, len, tail @ ..] = rest {
            let value = tail.get(..usize::from(*len))?;
            caps.push(Capability::decode(CapabilityCode(*c), value).ok()?);
            rest = &tail[usize::from(*len)..];
        }
        rest.is_empty().then_some(caps)
    }

    /// Human-readable names of the code and subcode.
    pub fn describe(&self) -> String {
        if let Some(inner) = self.hard_reset_inner() {
            return format!("Cease / Hard Reset ({})", inner.describe());
        }
        let (c, s) = names(self.code, self.subcode);
        let mut out = format!("{c} / {s}");
        if let Some(m) = self.shutdown_message() {
            out.push_str(&format!(": \"{m}\""));
        }
        out
    }
}

fn names(c: u8, s: u8) -> (&'static str, &'static str) {
    use code::*;
    let code_name = match c {
        MESSAGE_HEADER => "Message Header Error",
        OPEN_MESSAGE => "OPEN Message Error",
        UPDATE_MESSAGE => "UPDATE Message Error",
        HOLD_TIMER_EXPIRED => "Hold Timer Expired",
        FSM => "Finite State Machine Error",
        CEASE => "Cease",
        ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH Message Error",
        _ => "unknown error code",
    };
    let sub = match (c, s) {
        (_, 0) => "Unspecific",
        (MESSAGE_HEADER, 1) => "Connection Not Synchronized",
        (MESSAGE_HEADER, 2) => "Bad Message Length",
        (MESSAGE_HEADER, 3) => "Bad Message Type",
        (OPEN_MESSAGE, 1) => "Unsupported Version Number",
        (OPEN_MESSAGE, 2) => "Bad Peer AS",
        (OPEN_MESSAGE, 3) => "Bad BGP Identifier",
        (OPEN_MESSAGE, 4) => "Unsupported Optional Parameter",
        (OPEN_MESSAGE, 6) => "Unacceptable Hold Time",
        (OPEN_MESSAGE, 7) => "Unsupported Capability",
        (OPEN_MESSAGE, 11) => "Role Mismatch",
        (UPDATE_MESSAGE, 1) => "Malformed Attribute List",
        (UPDATE_MESSAGE, 2) => "Unrecognized Well-known Attribute",
        (UPDATE_MESSAGE, 3) => "Missing Well-known Attribute",
        (UPDATE_MESSAGE, 4) => "Attribute Flags Error",
        (UPDATE_MESSAGE, 5) => "Attribute Length Error",
        (UPDATE_MESSAGE, 6) => "Invalid ORIGIN Attribute",
        (UPDATE_MESSAGE, 8) => "Invalid NEXT_HOP Attribute",
        (UPDATE_MESSAGE, 9) => "Optional Attribute Error",
        (UPDATE_MESSAGE, 10) => "Invalid Network Field",
        (UPDATE_MESSAGE, 11) => "Malformed AS_PATH",
        (FSM, 1) => "Receive Unexpected Message in OpenSent State",
        (FSM, 2) => "Receive Unexpected Message in OpenConfirm State",
        (FSM, 3) => "Receive Unexpected Message in Established State",
        (CEASE, 1) => "Maximum Number of Prefixes Reached",
        (CEASE, 2) => "Administrative Shutdown",
        (CEASE, 3) => "Peer De-configured",
        (CEASE, 4) => "Administrative Reset",
        (CEASE, 5) => "Connection Rejected",
        (CEASE, 6) => "Other Configuration Change",
        (CEASE, 7) => "Connection Collision Resolution",
        (CEASE, 8) => "Out of Resources",
        (CEASE, 9) => "Hard Reset",
        (CEASE, 10) => "BFD Down",
        (ROUTE_REFRESH_MESSAGE, 1) => "Invalid Message Length",
        _ => "unknown subcode",
    };
    (code_name, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_communication_round_trip() {
        let n = Notification::cease_with_message(code::cease::ADMINISTRATIVE_SHUTDOWN, "maintenance");
        assert_eq!(n.data[0], 11);
        assert_eq!(n.shutdown_message(), Some("maintenance"));
        assert_eq!(n.describe(), "Cease / Administrative Shutdown: \"maintenance\"");
    }

    #[test]
    fn long_shutdown_message_is_cut_at_a_char_boundary() {
        let long = "é".repeat(200);
        let n = Notification::cease_with_message(code::cease::ADMINISTRATIVE_RESET, &long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_message().map(|m| m.chars().count()), Some(127));
    }
}
