//! `IPPool`: a range that pod (or LoadBalancer) addresses come from, cut into
//! blocks that nodes claim. The allocator (`ipam`) hands addresses out of it;
//! routing (bgpd) keeps the blocks of a pool with `disableBGPExport` out of BGP,
//! tunnels by its `ipipMode`, and passes on what Calico's default export policy
//! passes. Both read it through [`IpPool::validate`].
//!
//! The block arithmetic the allocator uses ([`IpPool::block_at`],
//! [`IpPool::block_of`], [`IpPool::usable_for_workloads`], …) is here too, as
//! methods rather than an extension trait in `ipam`: it is a pure function of
//! the validated fields (what blocks a pool *has*), bgpd's tools use it as well
//! (`bgpd-lab`'s verifier), and inherent methods need no import at each use.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{addr_from, net_base, parse_network, quoted, InvalidResource, IpFamily, Refusals};
use crate::Selector;

/// A `FromStr` over Calico's words for an enum, and a `Deserialize` through it,
/// so that serde (ipam) and bgpd's field reader accept the same words and refuse
/// the others with the same reason (`"Sometimes" is not one of Never, Always,
/// CrossSubnet`).
macro_rules! calico_words {
    ($t:ident { $($word:literal => $variant:ident),+ $(,)? }) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<$t, String> {
                match s {
                    $($word => Ok($t::$variant),)+
                    _ => Err(format!("{} is not one of {}", quoted(s), [$($word),+].join(", "))),
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Encapsulation mode of `ipipMode` / `vxlanMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum EncapMode {
    /// No encapsulation (Calico's default).
    #[default]
    Never,
    /// Always encapsulate.
    Always,
    /// Encapsulate only across subnets.
    CrossSubnet,
}

calico_words!(EncapMode { "Never" => Never, "Always" => Always, "CrossSubnet" => CrossSubnet });

/// What a pool's addresses may be used for (`allowedUses`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Tunnel addresses of nodes.
    Tunnel,
    /// LoadBalancer service addresses.
    LoadBalancer,
}

calico_words!(AllowedUse { "Workload" => Workload, "Tunnel" => Tunnel, "LoadBalancer" => LoadBalancer });

/// `assignmentMode`: whether a pool is used for automatic assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum AssignmentMode {
    /// Used for automatic assignment (Calico's default).
    #[default]
    Automatic,
    /// Used only when requested by name or CIDR.
    Manual,
}

calico_words!(AssignmentMode { "Automatic" => Automatic, "Manual" => Manual });

/// `spec` of an IPPool, as written. Words (`ipipMode`, `allowedUses`, …) are
/// read into their enums already ([`EncapMode::from_str`], …); everything else
/// is checked by [`IpPool::validate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's CIDR; empty (or absent) is refused as missing.
    #[serde(default)]
    pub cidr: String,
    /// Prefix length of the blocks cut from the pool (default 26 / 122).
    #[serde(default)]
    pub block_size: Option<u8>,
    /// Which nodes may claim blocks from this pool (default `all()`).
    #[serde(default)]
    pub node_selector: Option<String>,
    /// Which namespaces' pods may use this pool (default all).
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// A disabled pool is never used for new assignments.
    #[serde(default)]
    pub disabled: bool,
    /// Uses allowed (default `[Workload, Tunnel]`).
    #[serde(default)]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    /// When true, the pool's blocks are not advertised over BGP.
    #[serde(rename = "disableBGPExport", default)]
    pub disable_bgp_export: bool,
    /// `Automatic` (default) or `Manual`.
    #[serde(default)]
    pub assignment_mode: Option<AssignmentMode>,
    /// IP-in-IP mode.
    #[serde(default)]
    pub ipip_mode: Option<EncapMode>,
    /// VXLAN mode.
    #[serde(default)]
    pub vxlan_mode: Option<EncapMode>,
    /// Masquerade outgoing traffic.
    #[serde(default)]
    pub nat_outgoing: bool,
}

impl IpPoolSpec {
    /// The fields of the spec, in Calico's spelling (any other is unknown).
    pub const FIELDS: &'static [&'static str] = &[
        "cidr",
        "blockSize",
        "nodeSelector",
        "namespaceSelector",
        "disabled",
        "allowedUses",
        "disableBGPExport",
        "assignmentMode",
        "ipipMode",
        "vxlanMode",
        "natOutgoing",
    ];
}

/// A validated IP pool, with Calico's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPool {
    /// `metadata.name`.
    pub name: String,
    /// `spec.cidr`: the pool's network.
    pub cidr: IpNet,
    /// `spec.blockSize`: prefix length of its blocks (26 for IPv4, 122 for IPv6
    /// by default).
    pub block_size: u8,
    /// `spec.nodeSelector` (default `all()`): the nodes that take blocks from it.
    pub node_selector: Selector,
    /// `spec.namespaceSelector` (default `all()`).
    pub namespace_selector: Selector,
    /// `spec.disabled`: no new addresses from it (existing blocks stay routed).
    pub disabled: bool,
    /// `spec.allowedUses` (default Workload and Tunnel).
    pub allowed_uses: Vec<AllowedUse>,
    /// `spec.disableBGPExport`: the pool's routes are not advertised.
    pub disable_bgp_export: bool,
    /// `spec.assignmentMode` (default Automatic).
    pub assignment_mode: AssignmentMode,
    /// `spec.ipipMode` (default Never).
    pub ipip_mode: EncapMode,
    /// `spec.vxlanMode` (default Never).
    pub vxlan_mode: EncapMode,
    /// `spec.natOutgoing`.
    pub nat_outgoing: bool,
}

impl IpPool {
    /// The `kind` of the resource.
    pub const KIND: &'static str = "IPPool";

    /// Validates a pool spec and applies Calico's defaults; `Err` holds every
    /// field refused, in the order the fields are checked.
    ///
    /// The rules: `cidr` is present and a network (no host bits); `blockSize` is
    /// 20..=32 (IPv4) or 116..=128 (IPv6) and no shorter than the pool's prefix;
    /// the selectors parse; IPIP is IPv4 only and not combined with VXLAN.
    pub fn validate(name: &str, spec: &IpPoolSpec) -> Result<IpPool, Vec<InvalidResource>> {
        let mut refused = Refusals::new(Self::KIND, name);
        let cidr = match spec.cidr.as_str() {
            "" => {
                refused.add("cidr", "missing");
                None
            }
            text => parse_network(text).map_err(|reason| refused.add("cidr", reason)).ok(),
        };
        let family = cidr.as_ref().map(IpFamily::of_net);
        let block_size = family.map(|family| spec.block_size.unwrap_or(family.default_block_size()));
        if let (Some(cidr), Some(family), Some(size)) = (cidr, family, block_size) {
            let (min, max) = (family.min_block_size(), family.max_prefix());
            if !(min..=max).contains(&size) {
                refused.add("blockSize", format!("{size} is outside {min}..={max} for an {family} pool"));
            } else if size < cidr.prefix_len() {
                let why = "a block must fit in the pool";
                refused.add(
                    "blockSize",
                    format!("{size} is shorter than the pool's prefix /{}: {why}", cidr.prefix_len()),
                );
            }
        }
        let mut selector = |field: &str, text: &Option<String>| match text.as_deref() {
            None | Some("") => Selector::All,
            Some(text) => Selector::parse(text).unwrap_or_else(|e| {
                refused.add(field, e.to_string());
                Selector::All
            }),
        };
        let node_selector = selector("nodeSelector", &spec.node_selector);
        let namespace_selector = selector("namespaceSelector", &spec.namespace_selector);
        let ipip_mode = spec.ipip_mode.unwrap_or_default();
        let vxlan_mode = spec.vxlan_mode.unwrap_or_default();
        if ipip_mode != EncapMode::Never && vxlan_mode != EncapMode::Never {
            refused.add("vxlanMode", "cannot be enabled together with ipipMode");
        }
        if family == Some(IpFamily::V6) && ipip_mode != EncapMode::Never {
            refused.add("ipipMode", "IPIP is not supported for an IPv6 pool");
        }
        refused.finish(|| {
            Some(IpPool {
                name: name.to_string(),
                cidr: cidr?,
                block_size: block_size?,
                node_selector,
                namespace_selector,
                disabled: spec.disabled,
                allowed_uses: spec.allowed_uses.clone().unwrap_or(vec![AllowedUse::Workload, AllowedUse::Tunnel]),
                disable_bgp_export: spec.disable_bgp_export,
                assignment_mode: spec.assignment_mode.unwrap_or_default(),
                ipip_mode,
                vxlan_mode,
                nat_outgoing: spec.nat_outgoing,
            })
        })
    }

    /// [`IpPool::validate`] for a reader that stops at the first fault.
    pub fn from_spec(name: &str, spec: &IpPoolSpec) -> Result<IpPool, InvalidResource> {
        Self::validate(name, spec).map_err(super::first)
    }

    /// The pool's address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_net(&self.cidr)
    }

    /// Number of blocks the pool holds.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix_len())
    }

    /// Addresses per block.
    pub fn block_len(&self) -> u128 {
        1u128 << (self.family().max_prefix() - self.block_size)
    }

    /// The `index`-th block of the pool, if it exists.
    pub fn block_at(&self, index: u128) -> Option<IpNet> {
        if index >= self.block_count() {
            return None;
        }
        let base = net_base(&self.cidr);
        let addr = addr_from(self.family(), base + index * self.block_len())?;
        IpNet::new(addr, self.block_size).ok()
    }

    /// The block of this pool that contains `ip`, if the pool contains it.
    pub fn block_of(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        IpNet::new(ip, self.block_size).ok().map(|n| n.trunc())
    }

    /// Whether the pool may be used for pod addresses at all.
    pub fn usable_for_workloads(&self) -> bool {
        !self.disabled && self.allowed_uses.contains(&AllowedUse::Workload)
    }
}

#[cfg(test)]
mod tests;
