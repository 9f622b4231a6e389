//! `crd.projectcalico.org/v1` `IPAMBlock`: which pod address block is affine to which
//! node. bgpd reads only what routing needs (CIDR, affinity, deleted, and the
//! addresses borrowed by other nodes); the rest of the allocation state is the `ipam`
//! crate's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::fields::{as_u64, quoted, Fields, Findings};
use super::values::{check_name, parse_network};

/// An IPAM block as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamBlock {
    /// `metadata.name` (Calico writes e.g. `10-244-1-0-26`).
    pub name: String,
    /// `spec.cidr`: the block.
    pub cidr: IpNet,
    /// `spec.affinity`: the block's owner, if any.
    pub affinity: Option<Affinity>,
    /// `spec.deleted`: the block is being released and must not be advertised.
    pub deleted: bool,
    /// Addresses of the block allocated to pods on another node than the block's
    /// (`spec.allocations` and `spec.attributes[].secondary.node`), in address order:
    /// that node advertises each as a /32 (/128), the block's owner the block.
    pub borrowed: Vec<BorrowedAddress>,
}

/// An address allocated from a block to a pod on a node the block is not affine to
/// (Calico's borrowed address, when `strictAffinity` is off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowedAddress {
    /// The address.
    pub ip: IpAddr,
    /// `secondary.node` of its allocation attribute: the node of the pod.
    pub node: String,
    /// `handle_id` of its allocation attribute (one per pod interface), if any.
    pub handle: Option<String>,
}

/// `spec.affinity` of an IPAM block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affinity {
    /// `host:NAME`: affine to that node, which advertises it.
    Host(String),
    /// `virtual:NAME`: owned by a virtual entity (Calico's LoadBalancer IPAM), not a node.
    Virtual(String),
}

impl std::str::FromStr for Affinity {
    type Err = String;
    fn from_str(s: &str) -> Result<Affinity, String> {
        let (make, name): (fn(String) -> Affinity, &str) = if let Some(n) = s.strip_prefix("host:") {
            (Affinity::Host, n)
        } else if let Some(n) = s.strip_prefix("virtual:") {
            (Affinity::Virtual, n)
        } else {
            return Err(format!("{} is not an affinity (expected host:NODE or virtual:NAME)", quoted(s)));
        };
        check_name(name).map_err(|e| format!("{}: {e}", quoted(s)))?;
        Ok(make(name.to_string()))
    }
}

/// Reads an IPAMBlock (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<IpamBlock> {
    let spec = f.take(root.child("spec"))?;
    let cidr = f.opt(spec.parse_str("cidr", parse_network));
    if cidr.is_none() && !spec.has("cidr") {
        f.error(spec.path_of("cidr"), "missing");
    }
    let affinity = f.opt(spec.parse_str("affinity", str::parse::<Affinity>));
    let deleted = f.opt(spec.bool("deleted")).unwrap_or(false);
    let cidr = cidr?;
    if !f.errors.is_empty() {
        return None;
    }
    let borrowed = borrowed(&spec, &cidr, affinity.as_ref(), f);
    Some(IpamBlock { name: name.to_string(), cidr, affinity, deleted, borrowed })
}

/// One `spec.attributes` entry: what routing needs of it.
struct Attribute {
    handle: Option<String>,
    node: Option<String>,
}

/// The addresses of the block allocated to a node other than the block's host.
/// Faults here are warnings: the block itself is still advertised, only the
/// borrowed addresses a fault hides are not.
fn borrowed(spec: &Fields, cidr: &IpNet, affinity: Option<&Affinity>, f: &mut Findings) -> Vec<BorrowedAddress> {
    let mut out = Vec::new();
    let (attributes, allocations) = match (spec.list("attributes"), spec.list("allocations")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            f.warn(e.field, format!("{}; no borrowed addresses read", e.reason));
            return out;
        }
    };
    let attributes: Vec<Option<Attribute>> = attributes
        .into_iter()
        .map(|(path, v)| {
            let read = || -> Result<Attribute, super::fields::FieldError> {
                let a = Fields::at(Some(v), &path)?;
                let handle = a.str("handle_id")?.map(str::to_string);
                let node = a.child("secondary")?.str("node")?.map(str::to_string);
                Ok(Attribute { handle, node })
            };
            read()
                .map_err(|e| f.warn(e.field, format!("{}; its addresses are not advertised as borrowed", e.reason)))
                .ok()
        })
        .collect();
    let host = match affinity {
        Some(Affinity::Host(h)) => Some(h.as_str()),
        _ => None,
    };
    for (ordinal, (path, v)) in allocations.into_iter().enumerate() {
        if v.is_null() {
            continue;
        }
        let index = match as_u64(v) {
            Ok(i) => i,
            Err(reason) => {
                f.warn(path, reason);
                continue;
            }
        };
        // An allocation without an attribute (hand-written blocks often have none)
        // names no node: it cannot be a borrowed one.
        let attribute = usize::try_from(index).ok().and_then(|i| attributes.get(i));
        let Some(Some(Attribute { handle, node: Some(node) })) = attribute else { continue };
        if Some(node.as_str()) == host {
            continue;
        }
        let Some(ip) = nth_address(cidr, ordinal) else {
            f.warn(path, format!("ordinal {ordinal} is outside the block {cidr}"));
            break;
        };
        out.push(BorrowedAddress { ip, node: node.clone(), handle: handle.clone() });
    }
    out
}

/// Address number `n` of `net` (0 is the network address), if inside it.
fn nth_address(net: &IpNet, n: usize) -> Option<IpAddr> {
    let ip = match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).checked_add(u32::try_from(n).ok()?)?)),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()).checked_add(n as u128)?)),
    };
    net.contains(&ip).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_syntax() {
        assert_eq!("host:node-1".parse::<Affinity>().unwrap(), Affinity::Host("node-1".into()));
        assert_eq!("virtual:lb".parse::<Affinity>().unwrap(), Affinity::Virtual("lb".into()));
        for bad in ["node-1", "host:", "host:a b", "hostnode-1", "Host:node-1", "pool:x"] {
            assert!(bad.parse::<Affinity>().is_err(), "{bad:?} accepted");
        }
    }

    fn block(yaml: &str) -> (Option<IpamBlock>, Findings) {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let root = Fields::at(Some(&v), "").unwrap();
        let mut f = Findings::default();
        (parse("b", &root, &mut f), f)
    }

    #[test]
    fn borrowed_addresses_are_those_of_other_nodes() {
        // Calico's layout: allocations index attributes; secondary.node names the pod's node.
        let (b, f) = block(
            "spec:
               cidr: 10.244.0.0/30
               affinity: host:a
               allocations: [0, null, 1, 2]
               attributes:
               - {handle_id: h-own, secondary: {node: a, pod: p1}}
               - {handle_id: h-b, secondary: {node: b, namespace: ns, pod: p2}}
               - {handle_id: h-none}",
        );
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
        let b = b.unwrap();
        assert_eq!(
            b.borrowed,
            [BorrowedAddress { ip: "10.244.0.2".parse().unwrap(), node: "b".into(), handle: Some("h-b".into()) }]
        );
    }

    #[test]
    fn faulty_allocations_warn_and_keep_the_block() {
        let (b, f) = block(
            "spec:
               cidr: fd00::/126
               allocations: [7, x, 0, null, 0]
               attributes: [{secondary: {node: c}}]",
        );
        let b = b.expect("the block is kept");
        // No affinity: every allocation with a node is borrowed; ordinal 4 is outside a /126.
        assert_eq!(b.borrowed.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(), ["fd00::2"]);
        // Attribute 7 does not exist: no node, nothing borrowed, no fault.
        let fields: Vec<&str> = f.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, ["spec.allocations[1]", "spec.allocations[4]"], "{f:?}");
        let (b, f) = block("spec: {cidr: 10.0.0.0/30, allocations: 3}");
        assert!(b.unwrap().borrowed.is_empty());
        assert_eq!(f.warnings[0].field, "spec.allocations");
    }
}
