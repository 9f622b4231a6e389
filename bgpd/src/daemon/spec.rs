//! What the daemon runs: this node and its peers, as plain data derived
//! from the datastore (see `plan.rs`), compared to apply changes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use bgpd_proto::rib::core::NextHopMode;
use bgpd_proto::rib::policy::{ExportRange, Filter};
use bgpd_proto::types::Family;
use ipnet::IpNet;

/// A TCP MD5 key: never printed (`Debug` says it is there, not what it is).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub Vec<u8>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl std::ops::Deref for Password {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// One BGP peer of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Why the peer exists (the BGPPeer object's name).
    pub name: String,
    /// The peer's address and port.
    pub addr: SocketAddr,
    /// The AS this node presents to the peer.
    pub local_as: u32,
    /// The peer's AS.
    pub peer_as: u32,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<Password>,
    /// Hold time to propose, seconds.
    pub hold_time: u16,
    /// Keepalive interval, if configured.
    pub keepalive: Option<Duration>,
    /// GTSM: accept the peer only this many hops away (RFC 5082).
    pub ttl_security: Option<u8>,
    /// Source address for connections to the peer.
    pub source: Option<IpAddr>,
    /// Wait for the peer to connect.
    pub passive: bool,
    /// Graceful restart time to advertise (Calico `maxRestartTime`), seconds.
    pub restart_time: Option<u16>,
    /// Long-lived stale time to advertise (RFC 9494), seconds; `None`: no
    /// LLGR capability (BGPPeer annotation `bgpd.io/long-lived-stale-time`).
    pub long_lived_stale_time: Option<u32>,
    /// Offer the N bit (RFC 8538; annotation `bgpd.io/graceful-notification`).
    pub graceful_notification: bool,
    /// BFD with this peer (annotation `bgpd.io/bfd`; resolved against the
    /// node's BFDConfiguration interfaces by the BFD task). A change does not
    /// reset the BGP session.
    pub bfd: crate::datastore::BfdMode,
    /// ADD-PATH for the session's families: (receive, send).
    pub add_path: (bool, bool),
    /// The address families the session carries (multiprotocol capabilities
    /// offered). A session between two Calico nodes carries only the family
    /// of its addresses, as Calico's BIRD (one daemon per family) does; a
    /// session to any other peer offers IPv4 and IPv6 unicast.
    pub families: Vec<Family>,
    /// Offer IPv6 next hops for IPv4 unicast (RFC 8950): on every session
    /// over IPv6 that carries IPv4 unicast.
    pub extended_next_hop: bool,
    /// How routes are handled: changes here never reset the session.
    pub routing: RoutingSpec,
}

impl PeerSpec {
    /// Whether `other` needs no new session (only routing differs, if anything).
    pub fn same_session(&self, other: &PeerSpec) -> bool {
        let strip = |p: &PeerSpec| PeerSpec { routing: RoutingSpec::default(), bfd: Default::default(), ..p.clone() };
        strip(self) == strip(other)
    }
}

/// A peer's route handling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingSpec {
    /// A route reflector client of this node.
    pub rr_client: bool,
    /// Calico `nextHopMode`.
    pub next_hop_mode: NextHopMode,
    /// Calico `numAllowedLocalASNumbers`.
    pub allow_local_as: u32,
    /// Calico `filters`, resolved, in order.
    pub filters: Vec<Arc<Filter>>,
    /// Prefix limit: (limit, teardown).
    pub max_prefix: Option<(u32, bool)>,
    /// Paths sent per prefix with ADD-PATH (0: the whole ECMP set).
    pub add_path_send_count: u8,
    /// MinRouteAdvertisementInterval (zero: none).
    pub mrai: std::time::Duration,
    /// Keep the peer's routes before import policy.
    pub keep_received: bool,
}

/// This node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name.
    pub name: String,
    /// BGP identifier: the `bgpd.io/router-id` annotation, else the node's
    /// IPv4 address (as Calico uses), else a hash of its name.
    pub router_id: Ipv4Addr,
    /// Where `router_id` came from.
    pub router_id_source: super::router_id::RouterIdSource,
    /// The node's AS.
    pub asn: u32,
    /// Addresses and port to listen on.
    pub listen: Vec<SocketAddr>,
    /// The node's IPv4 and IPv6 addresses (next hops for what it originates).
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// The ECMP width (`bgpd.io/max-paths` on the BGPConfiguration).
    pub max_paths: u8,
    /// Compare MED across neighbouring ASes (`bgpd.io/always-compare-med`).
    pub always_compare_med: bool,
    /// The node's subnets (the prefix lengths of its Node addresses, as
    /// Calico reads them): a peer on one of them gets third-party next hops.
    pub subnets: Vec<IpNet>,
    /// Prefixes this node originates (its IPAM blocks, service ranges and
    /// addresses), why, and with which communities.
    pub originations: Vec<super::originate::Origination>,
    /// Route reflector cluster ID (`routeReflectorClusterID`).
    pub cluster_id: Option<Ipv4Addr>,
    /// The ranges Calico's default export policy knows for learned routes:
    /// those it passes on (IP pools, or the IPAM blocks without pools;
    /// service ranges) and the IP pools with `disableBGPExport` it holds back.
    pub exportable: Vec<ExportRange>,
    /// Static routes to peers that are reached through a gateway (Calico
    /// `reachableBy`): (the peer's address as a host prefix, the gateway).
    pub statics: Vec<(IpNet, IpAddr)>,
    /// What this start says about the run before it (graceful restart: R
    /// bit, F bits, selection deferral).
    pub restart: super::marker::Restart,
    /// The BFD timers per interface pattern of the BFDConfigurations that
    /// select this node, in their order (the first pattern that matches a
    /// peer's interface wins).
    pub bfd_interfaces: Vec<crate::datastore::BfdInterface>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peer_spec_never_prints_its_password() {
        let mut spec = crate::daemon::peer::tests::spec();
        spec.password = Some(super::Password(b"s3cret-key".to_vec()));
        let printed = format!("{spec:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("password: Some(Password(<redacted>))"), "{printed}");
    }
}
