//! The routes a caller wants in the kernel: typed, validated once, then compared and encoded.

use std::net::IpAddr;
use std::num::NonZeroU8;

use ipnet::IpNet;

use crate::error::{RouteError, RouteErrorKind};

/// One route the caller wants installed in the FIB's table, keyed by its prefix.
///
/// The table and protocol number are the FIB's own (see [`crate::FibConfig`]); the metric
/// is the route's, or the FIB's when it has none. A prefix identifies exactly one of our
/// routes: a new metric for a prefix moves its route (the new one is installed before the
/// old one is removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; must have no host bits set (`10.0.0.0/24`, not `10.0.0.1/24`).
    pub prefix: IpNet,
    /// Where packets to the prefix go.
    pub target: Target,
    /// Preferred source address for locally originated traffic (`RTA_PREFSRC`).
    pub pref_src: Option<IpAddr>,
    /// The kernel route's metric (`RTA_PRIORITY`); `None`: [`crate::FibConfig::metric`].
    /// IPv6 reads 0 as 1024, as the kernel does.
    pub metric: Option<u32>,
}

/// What a route does with matching packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Forward through one next hop, or several (ECMP, `RTA_MULTIPATH`, weighted).
    Unicast(Vec<NextHop>),
    /// Drop silently (`RTN_BLACKHOLE`): the node's own blocks, aggregate service ranges.
    Blackhole,
    /// Drop with ICMP unreachable (`RTN_UNREACHABLE`).
    Unreachable,
}

/// One next hop of a unicast route.
///
/// A gateway with neither a device nor `onlink` is resolved recursively through the
/// kernel's own routes (BIRD's "gateway recursive"): an iBGP next hop across an L3 fabric
/// becomes the directly connected gateway that leads to it, and is re-resolved when the
/// underlying route changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Gateway address (`RTA_GATEWAY`); `None` for a device route.
    pub gateway: Option<IpAddr>,
    /// Output device by name (`RTA_OIF`), e.g. `tunl0`, `vxlan.calico`, `eth0`.
    pub device: Option<String>,
    /// Treat the gateway as directly reachable through `device` even without a matching
    /// connected route (`RTNH_F_ONLINK`), as IPIP and VXLAN pools need.
    pub onlink: bool,
    /// Relative ECMP weight, 1–255 (`rtnh_hops + 1`).
    pub weight: NonZeroU8,
}

const WEIGHT_ONE: NonZeroU8 = NonZeroU8::MIN;

impl NextHop {
    /// A gateway resolved through the kernel's routes.
    pub fn via(gateway: IpAddr) -> Self {
        NextHop { gateway: Some(gateway), device: None, onlink: false, weight: WEIGHT_ONE }
    }

    /// A device route (no gateway).
    pub fn dev(device: impl Into<String>) -> Self {
        NextHop { gateway: None, device: Some(device.into()), onlink: false, weight: WEIGHT_ONE }
    }

    /// A gateway through a named device.
    pub fn via_dev(gateway: IpAddr, device: impl Into<String>) -> Self {
        NextHop { gateway: Some(gateway), device: Some(device.into()), onlink: false, weight: WEIGHT_ONE }
    }

    /// The same next hop marked `onlink` (tunnel devices).
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }

    /// The same next hop with an ECMP weight.
    pub fn weight(mut self, weight: NonZeroU8) -> Self {
        self.weight = weight;
        self
    }

    /// True when the gateway must be resolved through the kernel's routes.
    pub(crate) fn is_recursive(&self) -> bool {
        self.gateway.is_some() && self.device.is_none() && !self.onlink
    }
}

impl Route {
    /// A unicast route through the given next hops.
    pub fn unicast(prefix: IpNet, next_hops: Vec<NextHop>) -> Self {
        Route { prefix, target: Target::Unicast(next_hops), pref_src: None, metric: None }
    }

    /// A blackhole route.
    pub fn blackhole(prefix: IpNet) -> Self {
        Route { prefix, target: Target::Blackhole, pref_src: None, metric: None }
    }

    /// An unreachable route.
    pub fn unreachable(prefix: IpNet) -> Self {
        Route { prefix, target: Target::Unreachable, pref_src: None, metric: None }
    }

    /// Checks what the kernel would otherwise reject less clearly: host bits in the prefix,
    /// an empty next-hop list, a next hop with neither gateway nor device, address families
    /// that do not match the prefix, `onlink` without a device and gateway.
    pub fn validate(&self) -> Result<(), RouteError> {
        let invalid = |reason: String| RouteError { prefix: self.prefix, kind: RouteErrorKind::Invalid { reason } };
        if self.prefix.trunc() != self.prefix {
            return Err(invalid(format!("prefix has host bits set (network is {})", self.prefix.trunc())));
        }
        let v4 = matches!(self.prefix, IpNet::V4(_));
        if let Some(src) = self.pref_src {
            if src.is_ipv4() != v4 {
                return Err(invalid(format!("pref_src {src} is not of the prefix's address family")));
            }
        }
        if let Target::Unicast(hops) = &self.target {
            if hops.is_empty() {
                return Err(invalid("unicast route without next hops".into()));
            }
            for hop in hops {
                match (&hop.gateway, &hop.device) {
                    (None, None) => return Err(invalid("next hop has neither gateway nor device".into())),
                    // RFC 8950: an IPv4 route may go through an IPv6 gateway
                    // (the kernel's RTA_VIA); not the other way round.
                    (Some(gw), _) if gw.is_ipv4() && !v4 => {
                        return Err(invalid(format!("gateway {gw} is IPv4 for an IPv6 prefix")))
                    }
                    (Some(gw), _) if gw.is_unspecified() || gw.is_multicast() => {
                        return Err(invalid(format!("gateway {gw} is not a unicast address")))
                    }
                    _ => {}
                }
                if hop.onlink && (hop.gateway.is_none() || hop.device.is_none()) {
                    return Err(invalid("onlink next hop needs a gateway and a device".into()));
                }
                if let Some(dev) = &hop.device {
                    if dev.is_empty() || dev.len() > 15 {
                        return Err(invalid(format!("device name {dev:?} is not 1 to 15 bytes long")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One change to the desired routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add the route, or replace the route with the same prefix.
    Upsert(Route),
    /// Remove our route for this prefix.
    Remove(IpNet),
}

impl RouteChange {
    /// The prefix this change is about.
    pub fn prefix(&self) -> IpNet {
        match self {
            RouteChange::Upsert(r) => r.prefix,
            RouteChange::Remove(p) => *p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn validate_rejects_host_bits() {
        let r = Route::blackhole(net("10.0.0.1/24"));
        let e = r.validate().unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn validate_rejects_family_mismatch_but_an_ipv6_gateway_for_ipv4() {
        let r = Route::unicast(net("2001:db8::/64"), vec![NextHop::via("10.0.0.1".parse().unwrap())]);
        assert!(r.validate().is_err());
        let r = Route::unicast(net("10.0.0.0/24"), vec![NextHop::via("2001:db8::1".parse().unwrap())]);
        r.validate().expect("RFC 8950: IPv4 over an IPv6 gateway");
        let mut r = Route::blackhole(net("2001:db8::/64"));
        r.pref_src = Some("10.0.0.1".parse().unwrap());
        assert!(r.validate().is_err());
    }

    #[test]
    fn validate_rejects_empty_and_incomplete_hops() {
        assert!(Route::unicast(net("10.0.0.0/24"), vec![]).validate().is_err());
        let hop = NextHop { gateway: None, device: None, onlink: false, weight: WEIGHT_ONE };
        assert!(Route::unicast(net("10.0.0.0/24"), vec![hop]).validate().is_err());
        let onlink = NextHop::via("10.1.1.1".parse().unwrap()).onlink();
        assert!(Route::unicast(net("10.0.0.0/24"), vec![onlink]).validate().is_err());
    }

    #[test]
    fn validate_accepts_ecmp_and_tunnel() {
        let r = Route::unicast(
            net("10.0.0.0/24"),
            vec![
                NextHop::via("10.1.1.1".parse().unwrap()),
                NextHop::via_dev("10.2.2.2".parse().unwrap(), "tunl0").onlink(),
            ],
        );
        r.validate().unwrap();
        assert!(r.target == r.clone().target);
    }
}
