//! What a received UPDATE must pass before the RIB uses its routes, beyond
//! what the codec checks: rules that need the session (its negotiated
//! families and capabilities, this speaker's addresses on it, eBGP or iBGP).
//! A failed check handles the routes concerned as withdrawn (RFC 7606
//! treat-as-withdraw), ignores them, or drops an attribute; each case is
//! an [`Ignored`] kind, counted per peer and logged once per session by
//! [`super::core::Rib`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::{Afi, Family, FamilySet};
use crate::wire::NextHop;

/// Why the RIB did not take what a peer sent as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ignored {
    /// RFC 5065 §5: AS_CONFED_SEQUENCE or AS_CONFED_SET segments from a
    /// neighbor outside this speaker's confederation (bgpd has none, so from
    /// any eBGP peer) make a malformed AS_PATH; RFC 7606 §7.2: treat-as-withdraw.
    ConfedFromExternal,
    /// RFC 4271 §6.3: the next hop is this speaker's own address on the
    /// session (the route would point back at this node); treat-as-withdraw.
    OwnNextHop,
    /// RFC 4271 §6.3, RFC 7606 §7.3: a next hop no neighbor can have
    /// (0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4 and the broadcast
    /// address; ::, ::1, ff00::/8, IPv4-mapped ::ffff:0:0/96); treat-as-withdraw.
    MartianNextHop,
    /// RFC 8950 §4: an IPv6 next hop for IPv4 NLRI on a session that did not
    /// negotiate the extended next hop capability for them; treat-as-withdraw.
    Ipv6NextHopWithoutExtendedNextHop,
    /// RFC 4760 §8: NLRI of a family the session did not negotiate (or that
    /// the RIB does not hold); the NLRI are ignored.
    FamilyNotNegotiated,
    /// RFC 6793 §4.1: AS4_PATH or AS4_AGGREGATOR from a speaker that
    /// negotiated 4-octet AS numbers; discarded (not merged into AS_PATH, not
    /// passed on), the UPDATE is processed without them.
    As4FromNewSpeaker,
}

impl Ignored {
    /// Every kind, in the order of [`IgnoredCounts`].
    pub const ALL: [Ignored; 6] = [
        Ignored::ConfedFromExternal,
        Ignored::OwnNextHop,
        Ignored::MartianNextHop,
        Ignored::Ipv6NextHopWithoutExtendedNextHop,
        Ignored::FamilyNotNegotiated,
        Ignored::As4FromNewSpeaker,
    ];

    /// A name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Ignored::ConfedFromExternal => "confed_segment_from_external_peer",
            Ignored::OwnNextHop => "own_next_hop",
            Ignored::MartianNextHop => "martian_next_hop",
            Ignored::Ipv6NextHopWithoutExtendedNextHop => "ipv6_next_hop_without_extended_next_hop",
            Ignored::FamilyNotNegotiated => "family_not_negotiated",
            Ignored::As4FromNewSpeaker => "as4_attribute_from_4_octet_speaker",
        }
    }

    /// What happens to the routes, and the rule, for the log.
    pub fn outcome(self) -> &'static str {
        match self {
            Ignored::ConfedFromExternal => "routes treated as withdrawn (RFC 5065 §5, RFC 7606 §7.2)",
            Ignored::OwnNextHop | Ignored::MartianNextHop => {
                "routes treated as withdrawn (RFC 4271 §6.3, RFC 7606 §7.3)"
            }
            Ignored::Ipv6NextHopWithoutExtendedNextHop => "routes treated as withdrawn (RFC 8950 §4)",
            Ignored::FamilyNotNegotiated => "routes ignored (RFC 4760 §8)",
            Ignored::As4FromNewSpeaker => "attribute discarded, AS_PATH used as received (RFC 6793 §4.1)",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// How many UPDATEs of one peer hit each [`Ignored`] case (counters: they
/// only grow while the peer is configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredCounts([u64; Ignored::ALL.len()]);

impl IgnoredCounts {
    /// The count for `kind`.
    pub fn get(&self, kind: Ignored) -> u64 {
        self.0[kind as usize]
    }

    /// Every kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Ignored, u64)> + '_ {
        Ignored::ALL.iter().map(|k| (*k, self.get(*k)))
    }

    /// Counts one case of `kind`.
    pub fn add(&mut self, kind: Ignored) {
        self.0[kind as usize] += 1;
    }
}

/// The kinds already logged in a session (each is logged once per session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Logged(u8);

impl Logged {
    /// Marks `kind`; returns whether it was not marked yet.
    pub(crate) fn first(&mut self, kind: Ignored) -> bool {
        let first = self.0 & kind.bit() == 0;
        self.0 |= kind.bit();
        first
    }
}

/// What the next-hop checks need to know of the session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NextHopRules {
    /// Families whose NLRI may carry IPv6 next hops (RFC 8950).
    pub extended_next_hop: FamilySet,
    /// This speaker's addresses on the session.
    pub local_v4: Option<Ipv4Addr>,
    /// Likewise, IPv6.
    pub local_v6: Option<Ipv6Addr>,
}

/// Why `nh`, the next hop of NLRI of `family`, cannot be used on a session
/// with `rules` (and the address at fault), or `None` when it can. Third-party
/// next hops (another router on the peer's subnet, a route server's clients)
/// and iBGP next hops several hops away are fine; so are an IPv6 link-local
/// next hop next to a global one (RFC 2545 §3) and a link-local one alone,
/// which some speakers (BIRD) send as `::` plus the link-local address.
pub(crate) fn next_hop_fault(family: Family, nh: &NextHop, rules: &NextHopRules) -> Option<(Ignored, IpAddr)> {
    match *nh {
        NextHop::V4(a) if martian_v4(a) => Some((Ignored::MartianNextHop, a.into())),
        NextHop::V4(a) if rules.local_v4 == Some(a) => Some((Ignored::OwnNextHop, a.into())),
        NextHop::V4(_) | NextHop::Other(_) => None,
        NextHop::V6 { global, .. } if family.afi == Afi::IPV4 && !rules.extended_next_hop.contains(family) => {
            Some((Ignored::Ipv6NextHopWithoutExtendedNextHop, global.into()))
        }
        NextHop::V6 { global, link_local } => {
            let link_local_only = global.is_unspecified() && link_local.is_some();
            if !link_local_only && martian_v6(global) {
                return Some((Ignored::MartianNextHop, global.into()));
            }
            if let Some(ll) = link_local.filter(|ll| martian_v6(*ll)) {
                return Some((Ignored::MartianNextHop, ll.into()));
            }
            (rules.local_v6 == Some(global)).then_some((Ignored::OwnNextHop, global.into()))
        }
    }
}

/// 0.0.0.0/8 ("this network"), 127.0.0.0/8 (loopback), 224.0.0.0/4
/// (multicast), 240.0.0.0/4 (reserved, with 255.255.255.255): never a
/// neighbor's address (RFC 6890).
fn martian_v4(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 0 || first == 127 || first >= 224
}

/// `::`, `::1`, ff00::/8 (multicast) and IPv4-mapped ::ffff:0:0/96 (an IPv4
/// next hop in disguise): never an IPv6 neighbor's address (RFC 4291, RFC 6890).
fn martian_v6(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ext: bool) -> NextHopRules {
        NextHopRules {
            extended_next_hop: if ext { FamilySet::of(&[Family::IPV4_UNICAST]) } else { FamilySet::EMPTY },
            local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            local_v6: Some("fd00::1".parse().unwrap()),
        }
    }

    fn v4(s: &str) -> NextHop {
        NextHop::V4(s.parse().unwrap())
    }

    fn v6(global: &str, ll: Option<&str>) -> NextHop {
        NextHop::V6 { global: global.parse().unwrap(), link_local: ll.map(|l| l.parse().unwrap()) }
    }

    #[test]
    fn martian_and_own_next_hops_are_named() {
        let r = rules(false);
        let v4u = Family::IPV4_UNICAST;
        let v6u = Family::IPV6_UNICAST;
        for bad in ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.5", "239.255.255.255", "240.0.0.1", "255.255.255.255"] {
            assert_eq!(next_hop_fault(v4u, &v4(bad), &r).map(|f| f.0), Some(Ignored::MartianNextHop), "{bad}");
        }
        for bad in ["::", "::1", "ff02::1", "::ffff:10.0.0.11"] {
            assert_eq!(next_hop_fault(v6u, &v6(bad, None), &r).map(|f| f.0), Some(Ignored::MartianNextHop), "{bad}");
        }
        assert_eq!(next_hop_fault(v6u, &v6("::", Some("::")), &r).map(|f| f.0), Some(Ignored::MartianNextHop));
        assert_eq!(
            next_hop_fault(v6u, &v6("2001:db8::1", Some("ff02::2")), &r),
            Some((Ignored::MartianNextHop, "ff02::2".parse().unwrap()))
        );
        assert_eq!(next_hop_fault(v4u, &v4("10.0.0.1"), &r).map(|f| f.0), Some(Ignored::OwnNextHop));
        assert_eq!(next_hop_fault(v6u, &v6("fd00::1", Some("fe80::1")), &r).map(|f| f.0), Some(Ignored::OwnNextHop));
    }

    #[test]
    fn legitimate_next_hops_pass() {
        let r = rules(false);
        let v6u = Family::IPV6_UNICAST;
        // Another router on the LAN (third party), routers further away (iBGP).
        for ok in ["10.0.0.11", "10.0.0.99", "192.0.2.1", "223.255.255.254", "1.0.0.1"] {
            assert_eq!(next_hop_fault(Family::IPV4_UNICAST, &v4(ok), &r), None, "{ok}");
        }
        // Global with link-local; link-local alone, in the 16-octet or the `::` + link-local form.
        for (g, ll) in
            [("2001:db8::11", Some("fe80::11")), ("fe80::11", None), ("::", Some("fe80::11")), ("fd00::11", None)]
        {
            assert_eq!(next_hop_fault(v6u, &v6(g, ll), &r), None, "{g} {ll:?}");
        }
        // RFC 8950: IPv6 next hops for IPv4 NLRI only where negotiated.
        let enh = v6("2001:db8::11", Some("fe80::11"));
        assert_eq!(
            next_hop_fault(Family::IPV4_UNICAST, &enh, &r).map(|f| f.0),
            Some(Ignored::Ipv6NextHopWithoutExtendedNextHop)
        );
        assert_eq!(next_hop_fault(Family::IPV4_UNICAST, &enh, &rules(true)), None);
    }

    #[test]
    fn each_kind_is_logged_once_and_counted_each_time() {
        let mut logged = Logged::default();
        let mut counts = IgnoredCounts::default();
        for k in Ignored::ALL {
            assert!(logged.first(k), "{k:?}");
            counts.add(k);
        }
        assert!(Ignored::ALL.iter().all(|k| !logged.first(*k)));
        counts.add(Ignored::OwnNextHop);
        assert_eq!(counts.get(Ignored::OwnNextHop), 2);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 7);
    }
}
