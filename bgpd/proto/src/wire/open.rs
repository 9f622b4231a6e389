//! OPEN messages (RFC 4271 §4.2, RFC 5492, RFC 9072).

use std::net::Ipv4Addr;

use bytes::BufMut;

use super::capability::Capability;
use crate::error::{code, DecodeError, EncodeError};
use crate::types::CapabilityCode;

/// Optional parameter type carrying capabilities (RFC 5492 §4).
pub const PARAM_CAPABILITIES: u8 = 2;

/// An optional parameter of an OPEN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OptParam {
    /// Type 2: one or more capabilities (implementations differ in whether
    /// they put each capability in a parameter of its own; both are kept).
    Capabilities(Vec<Capability>),
    /// Any other parameter type, kept so the session can refuse it with
    /// Unsupported Optional Parameter (RFC 4271 §6.2).
    Unknown {
        /// Parameter type.
        kind: u8,
        /// Parameter value.
        data: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Open {
    /// The sender's AS, or AS_TRANS when it does not fit two octets.
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Optional parameters in wire order.
    pub params: Vec<OptParam>,
    /// Whether the parameters use the extended encoding of RFC 9072 (forced
    /// on encode when they exceed 255 octets).
    pub extended_params: bool,
}

impl Open {
    /// An OPEN carrying `capabilities` in one optional parameter.
    pub fn new(my_as: u16, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Open {
        let params = if capabilities.is_empty() { Vec::new() } else { vec![OptParam::Capabilities(capabilities)] };
        Open { my_as, hold_time, bgp_id, params, extended_params: false }
    }

    /// All capabilities across all parameters, in wire order.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptParam::Capabilities(c) => c.as_slice(),
            OptParam::Unknown { .. } => &[],
        })
    }

    /// The sender's real AS: the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Decodes an OPEN body (after the header).
    pub fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let [version, a0, a1, h0, h1, i0, i1, i2, i3, plen, rest @ ..] = body else {
            return Err(DecodeError::new(
                code::MESSAGE_HEADER,
                code::header::BAD_MESSAGE_LENGTH,
                [],
                "OPEN shorter than 29 octets",
            ));
        };
        if *version != 4 {
            // RFC 4271 §6.2: data is the largest supported version.
            return Err(DecodeError::new(
                code::OPEN_MESSAGE,
                code::open::UNSUPPORTED_VERSION,
                [0, 4],
                "unsupported BGP version",
            ));
        }
        let my_as = u16::from_be_bytes([*a0, *a1]);
        let hold_time = u16::from_be_bytes([*h0, *h1]);
        let bgp_id = Ipv4Addr::new(*i0, *i1, *i2, *i3);
        // RFC 9072 §2: length 255 followed by type 255 announces the extended form.
        let (extended, mut params_field) = match rest {
            [255, l0, l1, tail @ ..] if *plen == 255 => {
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                if tail.len() != len {
                    return Err(DecodeError::open_malformed(
                        "extended optional parameters length does not match the message",
                    ));
                }
                (true, tail)
            }
            _ => {
                if rest.len() != usize::from(*plen) {
                    return Err(DecodeError::open_malformed("optional parameters length does not match the message"));
                }
                (false, rest)
            }
        };
        let hdr = if extended { 3 } else { 2 };
        let mut params = Vec::new();
        while !params_field.is_empty() {
            if params_field.len() < hdr {
                return Err(DecodeError::open_malformed("optional parameter header overruns the parameters"));
            }
            let kind = params_field[0];
            let len = if extended {
                usize::from(u16::from_be_bytes([params_field[1], params_field[2]]))
            } else {
                usize::from(params_field[1])
            };
            let Some(value) = params_field.get(hdr..hdr + len) else {
                return Err(DecodeError::open_malformed("optional parameter overruns the parameters"));
            };
            params_field = &params_field[hdr + len..];
            if kind == PARAM_CAPABILITIES {
                params.push(OptParam::Capabilities(decode_capabilities(value)?));
            } else {
                params.push(OptParam::Unknown { kind, data: value.to_vec() });
            }
        }
        Ok(Open { my_as, hold_time, bgp_id, params, extended_params: extended })
    }

    fn param_value_len(p: &OptParam) -> usize {
        match p {
            OptParam::Capabilities(c) => c.iter().map(Capability::wire_len).sum(),
            OptParam::Unknown { data, .. } => data.len(),
        }
    }

    /// Appends the body (after the header).
    pub fn encode_body<B: BufMut>(&self, out: &mut B) -> Result<(), EncodeError> {
        out.put_u8(4);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_slice(&self.bgp_id.octets());
        let short: usize = self.params.iter().map(|p| 2 + Self::param_value_len(p)).sum();
        let extended =
            self.extended_params || short > 255 || self.params.iter().any(|p| Self::param_value_len(p) > 255);
        if extended {
            let long: usize = self.params.iter().map(|p| 3 + Self::param_value_len(p)).sum();
            out.put_u8(255);
            out.put_u8(255);
            out.put_u16(u16::try_from(long).map_err(|_| EncodeError::FieldTooLong("optional parameters"))?);
        } else {
            // Invariant: short <= 255 in this branch.
            out.put_u8(short as u8);
        }
        for p in &self.params {
            let (kind, len) = match p {
                OptParam::Capabilities(_) => (PARAM_CAPABILITIES, Self::param_value_len(p)),
                OptParam::Unknown { kind, .. } => (*kind, Self::param_value_len(p)),
            };
            out.put_u8(kind);
            if extended {
                out.put_u16(u16::try_from(len).map_err(|_| EncodeError::FieldTooLong("optional parameter"))?);
            } else {
                out.put_u8(len as u8);
            }
            match p {
                OptParam::Capabilities(caps) => {
                    for c in caps {
                        c.encode(out)?;
                    }
                }
                OptParam::Unknown { data, .. } => out.put_slice(data),
            }
        }
        Ok(())
    }
}

fn decode_capabilities(mut d: &[u8]) -> Result<Vec<Capability>, DecodeError> {
    let mut caps = Vec::new();
    while !d.is_empty() {
        let [code, len, rest @ ..] = d else {
            return Err(DecodeError::open_malformed("capability header overruns its parameter"));
        };
        let Some(value) = rest.get(..usize::from(*len)) else {
            return Err(DecodeError::open_malformed("capability overruns its parameter"));
        };
        caps.push(Capability::decode(CapabilityCode(*code), value)?);
        d = &rest[usize::from(*len)..];
    }
    Ok(caps)
}
