//! ROUTE-REFRESH messages (RFC 2918, RFC 7313).

use bytes::BufMut;

use crate::error::{code, DecodeError};
use crate::types::{Afi, Family, Safi};

/// ROUTE-REFRESH subtype (RFC 7313 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefreshSubtype(pub u8);

impl RefreshSubtype {
    /// A normal route refresh request (RFC 2918).
    pub const REQUEST: RefreshSubtype = RefreshSubtype(0);
    /// Beginning of Route Refresh.
    pub const BORR: RefreshSubtype = RefreshSubtype(1);
    /// End of Route Refresh.
    pub const EORR: RefreshSubtype = RefreshSubtype(2);
}

/// A ROUTE-REFRESH message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: Family,
    /// The subtype (the octet RFC 2918 called Reserved).
    pub subtype: RefreshSubtype,
    /// Outbound route filter entries (RFC 5291) of a request, kept raw.
    pub orf: Vec<u8>,
}

impl RouteRefresh {
    /// A plain refresh request for `family`.
    pub fn request(family: Family) -> RouteRefresh {
        RouteRefresh { family, subtype: RefreshSubtype::REQUEST, orf: Vec::new() }
    }

    /// Decodes the body.
    pub fn decode(body: &[u8]) -> Result<RouteRefresh, DecodeError> {
        let [a0, a1, sub, safi, orf @ ..] = body else {
            return Err(DecodeError::new(
                code::ROUTE_REFRESH_MESSAGE,
                code::route_refresh::INVALID_MESSAGE_LENGTH,
                body,
                "ROUTE-REFRESH shorter than 23 octets",
            ));
        };
        let subtype = RefreshSubtype(*sub);
        // RFC 7313 §5: BoRR/EoRR must be exactly 4 octets after the header;
        // the data is the whole message body.
        if matches!(subtype, RefreshSubtype::BORR | RefreshSubtype::EORR) && !orf.is_empty() {
            return Err(DecodeError::new(
                code::ROUTE_REFRESH_MESSAGE,
                code::route_refresh::INVALID_MESSAGE_LENGTH,
                body,
                "BoRR/EoRR ROUTE-REFRESH longer than 23 octets",
            ));
        }
        Ok(RouteRefresh {
            family: Family::new(Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi)),
            subtype,
            orf: orf.to_vec(),
        })
    }

    /// Appends the body.
    pub fn encode_body<B: BufMut>(&self, out: &mut B) {
        out.put_u16(self.family.afi.0);
        out.put_u8(self.subtype.0);
        out.put_u8(self.family.safi.0);
        out.put_slice(&self.orf);
    }
}
