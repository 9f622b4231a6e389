//! Calico's resources (`projectcalico.org/v3`, and their `crd.projectcalico.org/v1`
//! form) as typed objects, each validated here and nowhere else.
//!
//! A kind has a `*Spec`, the fields as written (serde reads YAML into it; bgpd's
//! datastore fills it from its own field reader, which knows paths and lines),
//! and a validated form built from it with Calico's defaults, whose refusals are
//! [`InvalidResource`]s naming the kind, the object, the field (relative to
//! `spec`, e.g. `blockSize`, `allowedUses[1]`) and the reason. Each program maps
//! that error into its own: `ipam::design::DesignError::Invalid`, bgpd's
//! `datastore::Problem` (with `spec.` and the object's location added).
//!
//! Kinds here: [`IpPool`] (read by bgpd and ipam), [`IpReservation`] (read by
//! ipam), and of [`Node`] what IPAM reads (name and labels, the labels' values
//! by [`LabelValue`], which bgpd's datastore reads every label and annotation
//! with). The IPAM state, stored by `ipam` and read by bgpd for what it
//! advertises: `IPAMBlock` ([`AllocationBlock`], its [`Affinity`]),
//! [`BlockAffinity`] and [`IpamHandle`] (with its [`FloatingIp`]s). Still
//! parsed by bgpd alone: Node's `spec.bgp` and bgpd's other kinds.

pub mod block_affinity;
pub mod ip_pool;
pub mod ip_reservation;
pub mod ipam_block;
pub mod ipam_handle;
pub mod node;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use block_affinity::{AffinityState, BlockAffinity};
pub use ip_pool::{AllowedUse, AssignmentMode, EncapMode, IpPool, IpPoolSpec};
pub use ip_reservation::{IpReservation, IpReservationSpec};
pub use ipam_block::{
    block_len, check_name, host_affinity, Affinity, AllocationAttribute, AllocationBlock, BlockProblem, InvalidBlock,
    ATTR_NAMESPACE, ATTR_NODE, ATTR_POD,
};
pub use ipam_handle::{FloatingIp, IpamHandle};
pub use node::{LabelValue, Node};

/// Address family of a pool, block or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(net.addr())
    }

    /// Calico's default `blockSize` for the family (26 for IPv4, 122 for IPv6).
    pub fn default_block_size(self) -> u8 {
        match self {
            IpFamily::V4 => 26,
            IpFamily::V6 => 122,
        }
    }

    /// The smallest (widest) block prefix Calico accepts: 20 for IPv4, 116 for IPv6.
    pub fn min_block_size(self) -> u8 {
        match self {
            IpFamily::V4 => 20,
            IpFamily::V6 => 116,
        }
    }

    /// Bits in an address of the family.
    pub fn max_prefix(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A resource that failed validation: which object, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: field {field}: {reason}")]
pub struct InvalidResource {
    /// The resource kind (`IPPool`, …).
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// The offending field below `spec`, in Calico's spelling (`cidr`,
    /// `allowedUses[0]`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// The refusals found in one object, in the order its fields are checked.
struct Refusals {
    kind: &'static str,
    name: String,
    found: Vec<InvalidResource>,
}

impl Refusals {
    fn new(kind: &'static str, name: &str) -> Refusals {
        Refusals { kind, name: name.to_string(), found: Vec::new() }
    }

    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        let (kind, name) = (self.kind, self.name.clone());
        self.found.push(InvalidResource { kind, name, field: field.into(), reason: reason.into() });
    }

    /// `value` if nothing was refused, else every refusal.
    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<InvalidResource>> {
        match value() {
            Some(v) if self.found.is_empty() => Ok(v),
            _ => Err(self.found),
        }
    }
}

/// A field Calico's Go client writes as `null` when empty (a nil slice or
/// map): read as the empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The first refusal, for a reader that stops at the first fault.
fn first(found: Vec<InvalidResource>) -> InvalidResource {
    found.into_iter().next().expect("a refusal names its field")
}

/// Parses a network whose host bits must be zero; `Err` is the reason.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s.parse().map_err(|_| format!("{} is not a CIDR (expected e.g. 10.96.0.0/12)", quoted(s)))?;
    if net.trunc() != net {
        return Err(format!("{} has host bits set (the network is {})", quoted(s), net.trunc()));
    }
    Ok(net)
}

/// [`parse_network`] for field `field` of object `name` of kind `kind`.
pub fn parse_cidr(kind: &'static str, name: &str, field: &str, s: &str) -> Result<IpNet, InvalidResource> {
    parse_network(s).map_err(|reason| InvalidResource { kind, name: name.to_string(), field: field.into(), reason })
}

/// `s` in double quotes, cut to 64 characters so that a message stays one line.
pub fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// The numeric value of a network's first address.
pub fn net_base(net: &IpNet) -> u128 {
    addr_value(net.network())
}

/// The numeric value of an address.
pub fn addr_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a family with the given numeric value, if it fits.
pub fn addr_from(family: IpFamily, v: u128) -> Option<IpAddr> {
    match family {
        IpFamily::V4 => u32::try_from(v).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        IpFamily::V6 => Some(IpAddr::V6(Ipv6Addr::from(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_must_be_cidrs_without_host_bits() {
        assert_eq!(parse_network("10.96.0.0/12").unwrap().to_string(), "10.96.0.0/12");
        assert_eq!(
            parse_network("10.96.0.1/12").unwrap_err(),
            "\"10.96.0.1/12\" has host bits set (the network is 10.96.0.0/12)"
        );
        assert_eq!(parse_network("10.96.0.0").unwrap_err(), "\"10.96.0.0\" is not a CIDR (expected e.g. 10.96.0.0/12)");
        assert!(parse_network(" 10.96.0.0/12").is_err(), "no blanks, as Go's ParseCIDR");
        let e = parse_cidr("IPPool", "p", "cidr", "10.0.0.0/33").unwrap_err();
        assert_eq!(
            e.to_string(),
            "IPPool \"p\": field cidr: \"10.0.0.0/33\" is not a CIDR (expected e.g. 10.96.0.0/12)"
        );
    }

    #[test]
    fn long_strings_are_cut() {
        assert_eq!(quoted(&"x".repeat(100)).chars().count(), 64 + 3);
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn addresses_as_numbers_and_back() {
        let net: IpNet = "10.0.1.0/24".parse().unwrap();
        assert_eq!(net_base(&net), 0x0a00_0100);
        assert_eq!(addr_from(IpFamily::V4, 0x0a00_0105), Some("10.0.1.5".parse().unwrap()));
        assert_eq!(addr_from(IpFamily::V4, 1 << 32), None);
        assert_eq!(addr_value("::1".parse().unwrap()), 1);
        assert_eq!(IpFamily::of_net(&"fd00::/64".parse().unwrap()), IpFamily::V6);
    }
}
