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
    /// Annotation `bgpd.io/router-id` on the Node: how its BGP identifier is
    /// chosen, as Calico's `CALICO_ROUTER_ID` says it (an address, or
    /// `hash`); `None`: the IPv4 address, else the hash of the name.
    pub router_id: Option<RouterIdSetting>,
}

/// An explicit choice of a node's BGP identifier (annotation `bgpd.io/router-id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterIdSetting {
    /// This identifier.
    Address(Ipv4Addr),
    /// The hash of the node name, even when the node has an IPv4 address
    /// (Calico's `CALICO_ROUTER_ID=hash`).
    Hash,
}

/// The annotation that sets a node's router ID.
const ROUTER_ID_ANNOTATION: &str = "bgpd.io/router-id";

/// Whether `a` may be a BGP identifier: RFC 6286 §2.1 asks only for a
/// non-zero value, but peers refuse identifiers in the reserved ranges with
/// "Bad BGP Identifier" (projectcalico/calico#5146): 0/8, 127/8, 224/4
/// (multicast) and 240/4 (reserved, broadcast).
pub fn usable_router_id(a: Ipv4Addr) -> bool {
    !matches!(a.octets()[0], 0 | 127 | 224..=255)
}

const BGP_FIELDS: &[&str] =
    &["asNumber", "ipv4Address", "ipv6Address", "routeReflectorClusterID", "ipv4IPIPTunnelAddr"];

/// Reads a Node (name and labels already checked by the caller).
pub(crate) fn parse(name: &str, labels: BTreeMap<String, String>, root: &Fields, f: &mut Findings) -> Option<Node> {
    let spec = f.take(root.child("spec"))?;
    let router_id = router_id_annotation(root, f);
    let bgp = if spec.has("bgp") { parse_bgp(&f.take(spec.child("bgp"))?, router_id, f) } else { None };
    if spec.has("bgp") && bgp.is_none() {
        return None;
    }
    f.errors.is_empty().then(|| Node { name: name.to_string(), labels, bgp })
}

/// Reads the `bgpd.io/router-id` annotation: an IPv4 address outside the
/// reserved ranges, or `hash`.
fn router_id_annotation(root: &Fields, f: &mut Findings) -> Option<RouterIdSetting> {
    let meta = root.child("metadata").ok()?;
    let a = f.take(meta.string_map("annotations"))?;
    let v = a.get(ROUTER_ID_ANNOTATION)?;
    let path = format!("metadata.annotations[{ROUTER_ID_ANNOTATION:?}]");
    if v == "hash" {
        return Some(RouterIdSetting::Hash);
    }
    match v.parse::<Ipv4Addr>() {
        Ok(a) if usable_router_id(a) => Some(RouterIdSetting::Address(a)),
        Ok(a) => {
            let why = "is in a reserved range (0/8, 127/8, 224/4, 240/4) that peers refuse as a BGP identifier";
            f.error(path, format!("{a} {why}"));
            None
        }
        Err(_) => {
            f.error(path, format!("{v:?} is neither an IPv4 address nor \"hash\""));
            None
        }
    }
}

fn parse_bgp(bgp: &Fields, router_id: Option<RouterIdSetting>, f: &mut Findings) -> Option<NodeBgp> {
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
    f.errors.is_empty().then_some(NodeBgp {
        as_number,
        ipv4_address,
        ipv6_address,
        route_reflector_cluster_id,
        router_id,
    })
}
