//! `crd.projectcalico.org/v1` `IPAMBlock`: which pod address block is affine to which
//! node. bgpd reads only what routing needs (CIDR, affinity, deleted); the allocation
//! bitmap is the `ipam` crate's business.

use ipnet::IpNet;

use super::fields::{quoted, Fields, Findings};
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
    f.errors.is_empty().then(|| IpamBlock { name: name.to_string(), cidr, affinity, deleted })
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
}
