//! A node's BGP identifier: the `bgpd.io/router-id` annotation if set, else
//! its IPv4 address (as Calico's BIRD), else a hash of its name (as Calico's
//! `CALICO_ROUTER_ID=hash`), kept out of the ranges peers refuse.

use std::net::Ipv4Addr;

use crate::datastore::{usable_router_id, Node, RouterIdSetting};

/// Where a node's router ID came from (logged at start, and why it is what it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterIdSource {
    /// The Node's `bgpd.io/router-id` annotation.
    Annotation,
    /// The Node's `spec.bgp.ipv4Address`.
    Ipv4Address,
    /// The hash of the node name: no IPv4 address, or `bgpd.io/router-id: hash`.
    NameHash,
}

impl RouterIdSource {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterIdSource::Annotation => "annotation",
            RouterIdSource::Ipv4Address => "ipv4Address",
            RouterIdSource::NameHash => "hash of the node name",
        }
    }
}

/// `node`'s BGP identifier and where it came from; `None` for a node
/// without `spec.bgp` (it runs no BGP).
pub fn router_id(node: &Node) -> Option<(Ipv4Addr, RouterIdSource)> {
    let bgp = node.bgp.as_ref()?;
    Some(match (bgp.router_id, bgp.ipv4_address) {
        (Some(RouterIdSetting::Address(a)), _) => (a, RouterIdSource::Annotation),
        (Some(RouterIdSetting::Hash), _) | (None, None) => (hash_of_name(&node.name), RouterIdSource::NameHash),
        (None, Some(v4)) => (v4.addr(), RouterIdSource::Ipv4Address),
    })
}

/// A router ID derived from a node name, stable across restarts and nodes.
///
/// Calico's rule first (confd's `hashToIPv4`): the first four octets of the
/// name's SHA-256, with a first octet above 223 lowered by 32 so that the ID
/// is never multicast (224/4) or reserved (240/4). A node that ran Calico with
/// `CALICO_ROUTER_ID=hash` keeps its identifier under bgpd. Calico's rule
/// still lets 0/8 and 127/8 through, which peers refuse as well
/// (projectcalico/calico#5146): for those the next four octets of the digest
/// are tried, and so on. Two names can still hash to one ID (the odds that
/// any two of 1,000 nodes do are about 1 in 7,000); an annotation fixes it.
pub fn hash_of_name(name: &str) -> Ipv4Addr {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let candidate = |w: &[u8]| {
        let first = if w[0] > 223 { w[0] - 32 } else { w[0] };
        Ipv4Addr::new(first, w[1], w[2], w[3])
    };
    digest
        .as_ref()
        .chunks_exact(4)
        .map(candidate)
        .find(|a| usable_router_id(*a))
        // Eight candidates all in 0/8 or 127/8 (odds about 1 in 10^17):
        // the first, moved out of them.
        .unwrap_or_else(|| {
            let o = candidate(&digest.as_ref()[..4]).octets();
            Ipv4Addr::new(o[0] | 1 | 0x40, o[1], o[2], o[3])
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{parse_sources, SourceText};

    fn node(yaml_spec: &str, annotations: &str) -> Node {
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n1{annotations}}}\nspec: {yaml_spec}\n"
        );
        let (m, problems) = parse_sources(&[SourceText { path: "ds.yaml".into(), text }]).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        m.nodes["n1"].clone()
    }

    #[test]
    fn the_ipv4_address_is_the_router_id_as_in_calico() {
        let n = node("{bgp: {ipv4Address: 10.0.0.1/24, ipv6Address: 'fd00::1/64'}}", "");
        assert_eq!(router_id(&n), Some(("10.0.0.1".parse().unwrap(), RouterIdSource::Ipv4Address)));
    }

    #[test]
    fn an_ipv6_only_node_gets_the_hash_of_its_name() {
        let n = node("{bgp: {ipv6Address: 'fd00::1/64'}}", "");
        assert_eq!(router_id(&n), Some((hash_of_name("n1"), RouterIdSource::NameHash)));
    }

    #[test]
    fn the_annotation_wins_an_address_or_the_hash() {
        let n = node("{bgp: {ipv4Address: 10.0.0.1/24}}", ", annotations: {bgpd.io/router-id: 192.0.2.7}");
        assert_eq!(router_id(&n), Some(("192.0.2.7".parse().unwrap(), RouterIdSource::Annotation)));
        let n = node("{bgp: {ipv4Address: 10.0.0.1/24}}", ", annotations: {bgpd.io/router-id: hash}");
        assert_eq!(router_id(&n), Some((hash_of_name("n1"), RouterIdSource::NameHash)));
    }

    #[test]
    fn a_node_without_bgp_has_no_router_id() {
        assert_eq!(router_id(&node("{}", "")), None);
    }

    /// Digests from `printf %s NAME | sha256sum` (coreutils), turned into
    /// IDs by hand with the rule above: `node-1` 35971be6… is Calico's ID
    /// as is; `node-18` f5c28be3… has 245 lowered to 213, as Calico does;
    /// `node-271` 7ff0afe1 679de44d… and `node-369` 0037011b 21581345…
    /// would be 127.240.175.225 and 0.55.1.27 under Calico, and take the
    /// digest's next four octets here.
    #[test]
    fn names_hash_as_calico_hashes_them_outside_0_8_and_127_8() {
        let vectors = [
            ("node-1", "53.151.27.230"),
            ("node-18", "213.194.139.227"),
            ("node-271", "103.157.228.77"),
            ("node-369", "33.88.19.69"),
        ];
        for (name, want) in vectors {
            assert_eq!(hash_of_name(name), want.parse::<Ipv4Addr>().unwrap(), "{name}");
        }
    }

    #[test]
    fn derived_ids_never_land_in_reserved_ranges() {
        for i in 0..20_000 {
            let name = format!("node-{i}");
            let id = hash_of_name(&name);
            assert!(usable_router_id(id), "{name} -> {id}");
            assert_eq!(id, hash_of_name(&name), "stable");
        }
    }
}
