//! Capabilities advertised in OPEN (RFC 5492 and the RFCs of each capability).

use bytes::BufMut;

use crate::error::{DecodeError, EncodeError};
use crate::types::{Afi, CapabilityCode, Family, Safi};

/// ADD-PATH send/receive mode for one family (RFC 7911 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddPathMode(pub u8);

impl AddPathMode {
    /// Able to receive multiple paths.
    pub const RECEIVE: AddPathMode = AddPathMode(1);
    /// Able to send multiple paths.
    pub const SEND: AddPathMode = AddPathMode(2);
    /// Both.
    pub const BOTH: AddPathMode = AddPathMode(3);

    /// Whether the receive bit is set.
    pub fn receive(self) -> bool {
        self.0 & 1 != 0
    }
    /// Whether the send bit is set.
    pub fn send(self) -> bool {
        self.0 & 2 != 0
    }
}

/// One family of the graceful restart capability (RFC 4724 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrFamily {
    /// The family.
    pub family: Family,
    /// Flags; bit 0x80 is Forwarding State preserved.
    pub flags: u8,
}

impl GrFamily {
    /// The Forwarding State bit.
    pub const FORWARDING: u8 = 0x80;

    /// Whether forwarding state was preserved for this family.
    pub fn forwarding(self) -> bool {
        self.flags & Self::FORWARDING != 0
    }
}

/// Graceful restart capability value (RFC 4724 §3, N bit RFC 8538).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// The four flag bits (R = 0x8 restarting, N = 0x4 notification).
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub time: u16,
    /// Per-family state.
    pub families: Vec<GrFamily>,
}

impl GracefulRestart {
    /// Restart State bit.
    pub const RESTART: u8 = 0x8;
    /// Graceful Notification bit (RFC 8538).
    pub const NOTIFICATION: u8 = 0x4;

    /// Whether the sender has restarted (R bit).
    pub fn restarting(&self) -> bool {
        self.flags & Self::RESTART != 0
    }
}

/// One family of the long-lived graceful restart capability (RFC 9494 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LlgrFamily {
    /// The family.
    pub family: Family,
    /// Flags; bit 0x80 is Forwarding State preserved.
    pub flags: u8,
    /// Long-lived stale time in seconds (24 bits).
    pub stale_time: u32,
}

/// BGP role (RFC 9234 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Role(pub u8);

impl Role {
    /// Provider.
    pub const PROVIDER: Role = Role(0);
    /// Route server.
    pub const RS: Role = Role(1);
    /// Route server client.
    pub const RS_CLIENT: Role = Role(2);
    /// Customer.
    pub const CUSTOMER: Role = Role(3);
    /// Lateral peer.
    pub const PEER: Role = Role(4);
}

/// A capability.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol extensions for one family (RFC 4760 §8).
    Multiprotocol(Family),
    /// Route refresh (RFC 2918).
    RouteRefresh,
    /// Extended next hop: (NLRI family, next hop AFI) triples (RFC 8950 §3).
    ExtendedNextHop(Vec<(Family, Afi)>),
    /// Extended message (RFC 8654).
    ExtendedMessage,
    /// BGP role (RFC 9234).
    Role(Role),
    /// Graceful restart (RFC 4724).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS number support, with the sender's AS (RFC 6793).
    FourOctetAs(u32),
    /// ADD-PATH (RFC 7911).
    AddPath(Vec<(Family, AddPathMode)>),
    /// Enhanced route refresh (RFC 7313).
    EnhancedRouteRefresh,
    /// Long-lived graceful restart (RFC 9494).
    LongLivedGr(Vec<LlgrFamily>),
    /// FQDN: host and domain name (draft-walton-bgp-hostname-capability).
    Fqdn {
        /// Host name.
        hostname: String,
        /// Domain name.
        domain: String,
    },
    /// A capability this crate does not interpret (or one it knows sent
    /// with a length it cannot parse is refused as malformed instead).
    Unknown {
        /// Capability code.
        code: CapabilityCode,
        /// Value.
        data: Vec<u8>,
    },
}

fn family3(d: &[u8]) -> Family {
    // AFI (2), SAFI (1).
    Family::new(Afi(u16::from_be_bytes([d[0], d[1]])), Safi(d[2]))
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> CapabilityCode {
        match self {
            Capability::Multiprotocol(_) => CapabilityCode::MULTIPROTOCOL,
            Capability::RouteRefresh => CapabilityCode::ROUTE_REFRESH,
            Capability::ExtendedNextHop(_) => CapabilityCode::EXTENDED_NEXT_HOP,
            Capability::ExtendedMessage => CapabilityCode::EXTENDED_MESSAGE,
            Capability::Role(_) => CapabilityCode::ROLE,
            Capability::GracefulRestart(_) => CapabilityCode::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => CapabilityCode::FOUR_OCTET_AS,
            Capability::AddPath(_) => CapabilityCode::ADD_PATH,
            Capability::EnhancedRouteRefresh => CapabilityCode::ENHANCED_ROUTE_REFRESH,
            Capability::LongLivedGr(_) => CapabilityCode::LONG_LIVED_GR,
            Capability::Fqdn { .. } => CapabilityCode::FQDN,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decodes one capability value. A known capability with a malformed
    /// value is an OPEN Message Error, subcode Unspecific (RFC 4271 §6.2).
    pub fn decode(code: CapabilityCode, d: &[u8]) -> Result<Capability, DecodeError> {
        let bad = |what| Err(DecodeError::open_malformed(what));
        Ok(match code {
            CapabilityCode::MULTIPROTOCOL => match d {
                [a0, a1, _reserved, safi] => {
                    Capability::Multiprotocol(Family::new(Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi)))
                }
                _ => return bad("multiprotocol capability length is not 4"),
            },
            CapabilityCode::ROUTE_REFRESH if d.is_empty() => Capability::RouteRefresh,
            CapabilityCode::ROUTE_REFRESH => return bad("route refresh capability has a value"),
            CapabilityCode::EXTENDED_NEXT_HOP if d.len() % 6 == 0 => Capability::ExtendedNextHop(
                d.chunks_exact(6)
                    .map(|c| {
                        let f = Family::new(Afi(u16::from_be_bytes([c[0], c[1]])), Safi(c[3]));
                        (f, Afi(u16::from_be_bytes([c[4], c[5]])))
                    })
                    .collect(),
            ),
            CapabilityCode::EXTENDED_NEXT_HOP => {
                return bad("extended next hop capability length is not a multiple of 6")
            }
            CapabilityCode::EXTENDED_MESSAGE if d.is_empty() => Capability::ExtendedMessage,
            CapabilityCode::EXTENDED_MESSAGE => return bad("extended message capability has a value"),
            CapabilityCode::ROLE => match d {
                [r] => Capability::Role(Role(*r)),
                _ => return bad("role capability length is not 1"),
            },
            CapabilityCode::GRACEFUL_RESTART if d.len() >= 2 && (d.len() - 2) % 4 == 0 => {
                let head = u16::from_be_bytes([d[0], d[1]]);
                Capability::GracefulRestart(GracefulRestart {
                    flags: (head >> 12) as u8,
                    time: head & 0x0FFF,
                    families: d[2..].chunks_exact(4).map(|c| GrFamily { family: family3(c), flags: c[3] }).collect(),
                })
            }
            CapabilityCode::GRACEFUL_RESTART => return bad("graceful restart capability length is not 2 + 4n"),
            CapabilityCode::FOUR_OCTET_AS => match d {
                [a, b, c, e] => Capability::FourOctetAs(u32::from_be_bytes([*a, *b, *c, *e])),
                _ => return bad("4-octet AS capability length is not 4"),
            },
            CapabilityCode::ADD_PATH if d.len() % 4 == 0 && !d.is_empty() => {
                Capability::AddPath(d.chunks_exact(4).map(|c| (family3(c), AddPathMode(c[3]))).collect())
            }
            CapabilityCode::ADD_PATH => return bad("ADD-PATH capability length is not a positive multiple of 4"),
            CapabilityCode::ENHANCED_ROUTE_REFRESH if d.is_empty() => Capability::EnhancedRouteRefresh,
            CapabilityCode::ENHANCED_ROUTE_REFRESH => return bad("enhanced route refresh capability has a value"),
            CapabilityCode::LONG_LIVED_GR if d.len() % 7 == 0 => Capability::LongLivedGr(
                d.chunks_exact(7)
                    .map(|c| LlgrFamily {
                        family: family3(c),
                        flags: c[3],
                        stale_time: u32::from_be_bytes([0, c[4], c[5], c[6]]),
                    })
                    .collect(),
            ),
            CapabilityCode::LONG_LIVED_GR => {
                return bad("long-lived graceful restart capability length is not a multiple of 7")
            }
            CapabilityCode::FQDN => {
                let Some((&hl, rest)) = d.split_first() else { return bad("FQDN capability is empty") };
                let Some((host, rest)) = rest.split_at_checked(usize::from(hl)) else {
                    return bad("FQDN host name overruns the capability");
                };
                let Some((&dl, rest)) = rest.split_first() else { return bad("FQDN capability has no domain length") };
                if rest.len() != usize::from(dl) {
                    return bad("FQDN domain name length does not match the capability");
                }
                match (std::str::from_utf8(host), std::str::from_utf8(rest)) {
                    (Ok(hostname), Ok(domain)) => {
                        Capability::Fqdn { hostname: hostname.to_string(), domain: domain.to_string() }
                    }
                    // Names that are not UTF-8 are kept as received, so that the
                    // capability re-encodes to the same octets (a lossy decode
                    // grew them: found by the `open` fuzz target).
                    _ => Capability::Unknown { code, data: d.to_vec() },
                }
            }
            _ => Capability::Unknown { code, data: d.to_vec() },
        })
    }

    fn value_len(&self) -> usize {
        match self {
            Capability::Multiprotocol(_) | Capability::FourOctetAs(_) => 4,
            Capability::RouteRefresh | Capability::ExtendedMessage | Capability::EnhancedRouteRefresh => 0,
            Capability::ExtendedNextHop(v) => 6 * v.len(),
            Capability::Role(_) => 1,
            Capability::GracefulRestart(g) => 2 + 4 * g.families.len(),
            Capability::AddPath(v) => 4 * v.len(),
            Capability::LongLivedGr(v) => 7 * v.len(),
            Capability::Fqdn { hostname, domain } => 2 + hostname.len() + domain.len(),
            Capability::Unknown { data, .. } => data.len(),
        }
    }

    /// The encoded size, with the code and length octets.
    pub fn wire_len(&self) -> usize {
        2 + self.value_len()
    }

    /// Appends code, length and value.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<(), EncodeError> {
        out.put_u8(self.code().0);
        out.put_u8(u8::try_from(self.value_len()).map_err(|_| EncodeError::FieldTooLong("capability"))?);
        match self {
            Capability::Multiprotocol(f) => {
                out.put_u16(f.afi.0);
                out.put_u8(0);
                out.put_u8(f.safi.0);
            }
            Capability::RouteRefresh | Capability::ExtendedMessage | Capability::EnhancedRouteRefresh => {}
            Capability::ExtendedNextHop(v) => v.iter().for_each(|(f, nh)| {
                out.put_u16(f.afi.0);
                out.put_u16(u16::from(f.safi.0));
                out.put_u16(nh.0);
            }),
            Capability::Role(r) => out.put_u8(r.0),
            Capability::GracefulRestart(g) => {
                out.put_u16((u16::from(g.flags & 0xF) << 12) | (g.time & 0x0FFF));
                g.families.iter().for_each(|f| {
                    out.put_u16(f.family.afi.0);
                    out.put_u8(f.family.safi.0);
                    out.put_u8(f.flags);
                });
            }
            Capability::FourOctetAs(a) => out.put_u32(*a),
            Capability::AddPath(v) => v.iter().for_each(|(f, m)| {
                out.put_u16(f.afi.0);
                out.put_u8(f.safi.0);
                out.put_u8(m.0);
            }),
            Capability::LongLivedGr(v) => v.iter().for_each(|f| {
                out.put_u16(f.family.afi.0);
                out.put_u8(f.family.safi.0);
                out.put_u8(f.flags);
                out.put_slice(&f.stale_time.to_be_bytes()[1..]);
            }),
            Capability::Fqdn { hostname, domain } => {
                let hl = u8::try_from(hostname.len()).map_err(|_| EncodeError::FieldTooLong("FQDN host name"))?;
                let dl = u8::try_from(domain.len()).map_err(|_| EncodeError::FieldTooLong("FQDN domain name"))?;
                out.put_u8(hl);
                out.put_slice(hostname.as_bytes());
                out.put_u8(dl);
                out.put_slice(domain.as_bytes());
            }
            Capability::Unknown { data, .. } => out.put_slice(data),
        }
        Ok(())
    }
}
