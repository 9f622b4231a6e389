//! Open code points: AFI, SAFI, message types, attribute and capability codes.
//!
//! Each is a newtype over its wire integer with named constants, so values this
//! crate does not know still decode, round-trip and print (STYLE principle 4).

use std::fmt;

macro_rules! code_point {
    ($(#[$doc:meta])* $name:ident($int:ty) { $($(#[$cdoc:meta])* $konst:ident = $val:expr => $label:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$cdoc])* pub const $konst: $name = $name($val);)*

            /// The registry name of this code point, if this crate knows it.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($label),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}", n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

pub(crate) use code_point;

code_point! {
    /// Address Family Identifier (IANA "Address Family Numbers").
    Afi(u16) {
        /// IPv4.
        IPV4 = 1 => "ipv4",
        /// IPv6.
        IPV6 = 2 => "ipv6",
        /// Layer-2 VPN (EVPN, VPLS).
        L2VPN = 25 => "l2vpn",
    }
}

code_point! {
    /// Subsequent Address Family Identifier (RFC 4760).
    Safi(u8) {
        /// Unicast forwarding.
        UNICAST = 1 => "unicast",
        /// Multicast RPF.
        MULTICAST = 2 => "multicast",
        /// Labeled unicast (RFC 8277).
        LABELED_UNICAST = 4 => "labeled-unicast",
        /// EVPN (RFC 7432).
        EVPN = 70 => "evpn",
        /// MPLS L3VPN (RFC 4364).
        MPLS_VPN = 128 => "mpls-vpn",
        /// Flow specification (RFC 8955).
        FLOWSPEC = 133 => "flowspec",
    }
}

code_point! {
    /// BGP message type (RFC 4271 §4.1).
    MessageType(u8) {
        /// OPEN.
        OPEN = 1 => "OPEN",
        /// UPDATE.
        UPDATE = 2 => "UPDATE",
        /// NOTIFICATION.
        NOTIFICATION = 3 => "NOTIFICATION",
        /// KEEPALIVE.
        KEEPALIVE = 4 => "KEEPALIVE",
        /// ROUTE-REFRESH (RFC 2918).
        ROUTE_REFRESH = 5 => "ROUTE-REFRESH",
    }
}

code_point! {
    /// Path attribute type code (IANA "BGP Path Attributes").
    AttrCode(u8) {
        /// ORIGIN (RFC 4271).
        ORIGIN = 1 => "ORIGIN",
        /// AS_PATH (RFC 4271).
        AS_PATH = 2 => "AS_PATH",
        /// NEXT_HOP (RFC 4271).
        NEXT_HOP = 3 => "NEXT_HOP",
        /// MULTI_EXIT_DISC (RFC 4271).
        MULTI_EXIT_DISC = 4 => "MULTI_EXIT_DISC",
        /// LOCAL_PREF (RFC 4271).
        LOCAL_PREF = 5 => "LOCAL_PREF",
        /// ATOMIC_AGGREGATE (RFC 4271).
        ATOMIC_AGGREGATE = 6 => "ATOMIC_AGGREGATE",
        /// AGGREGATOR (RFC 4271).
        AGGREGATOR = 7 => "AGGREGATOR",
        /// COMMUNITIES (RFC 1997).
        COMMUNITIES = 8 => "COMMUNITIES",
        /// ORIGINATOR_ID (RFC 4456).
        ORIGINATOR_ID = 9 => "ORIGINATOR_ID",
        /// CLUSTER_LIST (RFC 4456).
        CLUSTER_LIST = 10 => "CLUSTER_LIST",
        /// MP_REACH_NLRI (RFC 4760).
        MP_REACH_NLRI = 14 => "MP_REACH_NLRI",
        /// MP_UNREACH_NLRI (RFC 4760).
        MP_UNREACH_NLRI = 15 => "MP_UNREACH_NLRI",
        /// EXTENDED COMMUNITIES (RFC 4360).
        EXTENDED_COMMUNITIES = 16 => "EXTENDED_COMMUNITIES",
        /// AS4_PATH (RFC 6793).
        AS4_PATH = 17 => "AS4_PATH",
        /// AS4_AGGREGATOR (RFC 6793).
        AS4_AGGREGATOR = 18 => "AS4_AGGREGATOR",
        /// LARGE_COMMUNITY (RFC 8092).
        LARGE_COMMUNITY = 32 => "LARGE_COMMUNITY",
        /// OTC, Only to Customer (RFC 9234).
        OTC = 35 => "OTC",
    }
}

code_point! {
    /// Capability code (IANA "Capability Codes", RFC 5492).
    CapabilityCode(u8) {
        /// Multiprotocol extensions (RFC 4760).
        MULTIPROTOCOL = 1 => "multiprotocol",
        /// Route refresh (RFC 2918).
        ROUTE_REFRESH = 2 => "route-refresh",
        /// Extended next hop encoding (RFC 8950).
        EXTENDED_NEXT_HOP = 5 => "extended-next-hop",
        /// Extended message (RFC 8654).
        EXTENDED_MESSAGE = 6 => "extended-message",
        /// BGP role (RFC 9234).
        ROLE = 9 => "role",
        /// Graceful restart (RFC 4724).
        GRACEFUL_RESTART = 64 => "graceful-restart",
        /// 4-octet AS numbers (RFC 6793).
        FOUR_OCTET_AS = 65 => "4-octet-as",
        /// ADD-PATH (RFC 7911).
        ADD_PATH = 69 => "add-path",
        /// Enhanced route refresh (RFC 7313).
        ENHANCED_ROUTE_REFRESH = 70 => "enhanced-route-refresh",
        /// Long-lived graceful restart (RFC 9494).
        LONG_LIVED_GR = 71 => "long-lived-graceful-restart",
        /// FQDN / hostname (draft-walton-bgp-hostname-capability).
        FQDN = 73 => "fqdn",
    }
}

/// An address family: the AFI/SAFI pair that names a table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    /// The address family.
    pub afi: Afi,
    /// The sub-family.
    pub safi: Safi,
}

impl Family {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: Family = Family::new(Afi::IPV4, Safi::UNICAST);
    /// IPv6 unicast.
    pub const IPV6_UNICAST: Family = Family::new(Afi::IPV6, Safi::UNICAST);
    /// IPv4 multicast.
    pub const IPV4_MULTICAST: Family = Family::new(Afi::IPV4, Safi::MULTICAST);
    /// IPv6 multicast.
    pub const IPV6_MULTICAST: Family = Family::new(Afi::IPV6, Safi::MULTICAST);

    /// The family of `afi` and `safi`.
    pub const fn new(afi: Afi, safi: Safi) -> Family {
        Family { afi, safi }
    }

    /// Whether this crate decodes this family's NLRI as plain prefixes
    /// (IPv4/IPv6 unicast and multicast). Other families are kept as raw bytes.
    pub fn has_prefix_nlri(self) -> bool {
        matches!(self.afi, Afi::IPV4 | Afi::IPV6) && matches!(self.safi, Safi::UNICAST | Safi::MULTICAST)
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.afi, self.safi)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// AS_TRANS, the 2-octet stand-in for a 4-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u32 = 23456;

/// A set of the families whose NLRI this crate decodes (IPv4/IPv6 × unicast/multicast).
///
/// Used for the per-direction ADD-PATH state of a session: families not
/// representable here carry raw NLRI anyway.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FamilySet(u8);

impl FamilySet {
    /// The empty set.
    pub const EMPTY: FamilySet = FamilySet(0);
    /// All four prefix families.
    pub const ALL: FamilySet = FamilySet(0b1111);

    fn bit(family: Family) -> Option<u8> {
        match (family.afi, family.safi) {
            (Afi::IPV4, Safi::UNICAST) => Some(1),
            (Afi::IPV6, Safi::UNICAST) => Some(2),
            (Afi::IPV4, Safi::MULTICAST) => Some(4),
            (Afi::IPV6, Safi::MULTICAST) => Some(8),
            _ => None,
        }
    }

    /// Adds `family`; returns false when it is not a prefix family.
    pub fn insert(&mut self, family: Family) -> bool {
        match Self::bit(family) {
            Some(b) => {
                self.0 |= b;
                true
            }
            None => false,
        }
    }

    /// Whether `family` is in the set.
    pub fn contains(self, family: Family) -> bool {
        Self::bit(family).is_some_and(|b| self.0 & b != 0)
    }

    /// The set with exactly `families`.
    pub fn of(families: &[Family]) -> FamilySet {
        let mut s = FamilySet::EMPTY;
        for f in families {
            s.insert(*f);
        }
        s
    }
}

impl fmt::Debug for FamilySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [Family::IPV4_UNICAST, Family::IPV6_UNICAST, Family::IPV4_MULTICAST, Family::IPV6_MULTICAST];
        f.debug_set().entries(all.iter().filter(|x| self.contains(**x))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_code_points_print_their_number() {
        assert_eq!(format!("{:?}", AttrCode(99)), "AttrCode(99)");
        assert_eq!(format!("{:?}", AttrCode::AS_PATH), "AS_PATH");
        assert_eq!(format!("{}", Family::IPV6_UNICAST), "ipv6/unicast");
    }

    #[test]
    fn family_set_holds_only_prefix_families() {
        let mut s = FamilySet::EMPTY;
        assert!(s.insert(Family::IPV6_UNICAST));
        assert!(!s.insert(Family::new(Afi::L2VPN, Safi::EVPN)));
        assert!(s.contains(Family::IPV6_UNICAST));
        assert!(!s.contains(Family::IPV4_UNICAST));
    }
}
