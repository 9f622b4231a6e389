//! `crd.projectcalico.org/v1` `IPAMBlock`: which pod address block is affine to which
//! node. bgpd reads only what routing needs (CIDR, affinity, deleted, and the
//! addresses borrowed by other nodes); the rest of the allocation state is the `ipam`
//! crate's business.

use ipnet::IpNet;

use super::fields::{as_u64, Fields, Findings};
use super::values::parse_network;

/// A block's address held by another node's pod: the model's, which computes
/// them ([`ipam_block::borrowed`]) for the YAML's blocks and the stores'.
pub use bgpd_model::calico::ipam_block::BorrowedAddress;
/// `spec.affinity`, typed by the model's one rule (which the allocator checks
/// stored blocks by too).
pub use bgpd_model::calico::Affinity;

use bgpd_model::calico::ipam_block::{self, Allocated};
use bgpd_model::calico::AllocationBlock;

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

/// A block of an IPAM store (file or etcd), typed as the store decoded it:
/// what routing reads of it, by the rules the YAML's blocks are read by, with
/// the same findings named by the same fields. `deleted`: the block is being
/// released. Its name is Calico's for its CIDR ([`super::ipam_store::block_name`]).
pub(crate) fn from_store(b: &AllocationBlock, deleted: bool, f: &mut Findings) -> Option<IpamBlock> {
    let cidr = parse_network(&b.cidr.to_string()).map_err(|reason| f.error("spec.cidr", reason)).ok();
    let affinity =
        b.affinity.as_deref().and_then(|a| a.parse().map_err(|reason| f.error("spec.affinity", reason)).ok());
    let cidr = cidr?;
    if !f.errors.is_empty() {
        return None;
    }
    let (borrowed, outside) = ipam_block::borrowed(&cidr, affinity.as_ref(), b.allocations_with_node());
    if let Some(ordinal) = outside {
        f.warn(format!("spec.allocations[{ordinal}]"), format!("ordinal {ordinal} is outside the block {cidr}"));
    }
    Some(IpamBlock { name: super::ipam_store::block_name(&b.cidr), cidr, affinity, deleted, borrowed })
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
    let (attributes, allocations) = match (spec.list("attributes"), spec.list("allocations")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            f.warn(e.field, format!("{}; no borrowed addresses read", e.reason));
            return Vec::new();
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
    // Read lazily: the model's rule stops at an allocation outside the block,
    // and what follows it is not looked at (nor warned about).
    let allocated = allocations.iter().enumerate().filter_map(|(ordinal, (path, v))| {
        if v.is_null() {
            return None;
        }
        let index = as_u64(v).map_err(|reason| f.warn(path.as_str(), reason)).ok()?;
        // An allocation without an attribute (hand-written blocks often have none)
        // names no node: it cannot be a borrowed one.
        match usize::try_from(index).ok().and_then(|i| attributes.get(i)) {
            Some(Some(Attribute { handle, node: Some(node) })) => {
                Some(Allocated { ordinal, node, handle: handle.as_deref() })
            }
            _ => None,
        }
    });
    let (out, outside) = ipam_block::borrowed(cidr, affinity, allocated);
    if let Some(ordinal) = outside {
        f.warn(allocations[ordinal].0.as_str(), format!("ordinal {ordinal} is outside the block {cidr}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
