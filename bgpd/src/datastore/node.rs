//! `projectcalico.org/v3` `Node`: a cluster node's labels and BGP identity.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::fields::{Fields, Findings};
use super::values::{parse_ip, parse_ipv4_interface, parse_ipv6_interface, AsNumber};

/// A Calico node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`: the node name that `--node` and `BGPPeer.spec.node` use.
    pub name: String,
    /// `metadata.labels`, matched by `nodeSelector` and `peerSelector`.
    pub labels: BTreeMap<String, String>,
    /// `spec.bgp`; `None` for a node that does not run BGP.
    pub bgp: Option<NodeBgp>,
}

/// `spec.bgp` of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBgp {
    /// `asNumber`: the node's own AS; `None` means the cluster AS of the default
    /// BGPConfiguration.
    pub as_number: Option<AsNumber>,
    /// `ipv4Address`, e.g. `10.0.0.1/24`: the address (router ID, session source, next
    /// hop) and the prefix of its subnet.
    pub ipv4_address: Option<Ipv4Net>,
    /// `ipv6Address`, e.g. `fd00::1/64`.
    pub ipv6_address: Option<Ipv6Net>,
    /// `routeReflectorClusterID`: set on route reflector nodes (an IPv4 address).
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
}

const BGP_FIELDS: &[&str] =
    &["asNumber", "ipv4Address", "ipv6Address", "routeReflectorClusterID", "ipv4IPIPTunnelAddr"];

/// Reads a Node (name and labels already checked by the caller).
pub(crate) fn parse(name: &str, labels: BTreeMap<String, String>, root: &Fields, f: &mut Findings) -> Option<Node> {
    let spec = f.take(root.child("spec"))?;
    let bgp = if spec.has("bgp") { parse_bgp(&f.take(spec.child("bgp"))?, f) } else { None };
    if spec.has("bgp") && bgp.is_none() {
        return None;
    }
    f.errors.is_empty().then(|| Node { name: name.to_string(), labels, bgp })
}

fn parse_bgp(bgp: &Fields, f: &mut Findings) -> Option<NodeBgp> {
    for unknown in bgp.unknown_keys(BGP_FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let as_number = f.opt(bgp.get("asNumber", AsNumber::from_value));
    let ipv4_address = f.opt(bgp.parse_str("ipv4Address", parse_ipv4_interface));
    let ipv6_address = f.opt(bgp.parse_str("ipv6Address", parse_ipv6_interface));
    let route_reflector_cluster_id = f.opt(bgp.parse_str("routeReflectorClusterID", |s| match parse_ip(s)? {
        std::net::IpAddr::V4(a) => Ok(a),
        std::net::IpAddr::V6(_) => Err(format!("{s:?} is not an IPv4 address (cluster IDs are 32-bit)")),
    }));
    if f.errors.is_empty() && ipv4_address.is_none() && ipv6_address.is_none() {
        f.error(bgp.path_of("ipv4Address"), "a BGP node needs ipv4Address or ipv6Address");
    }
    f.errors.is_empty().then_some(NodeBgp { as_number, ipv4_address, ipv6_address, route_reflector_cluster_id })
}
