//! Calico's IPAM-relevant resources (`projectcalico.org/v3`), typed and validated.
//!
//! Field names and defaults are Calico's, so existing manifests parse unchanged.
//! Raw serde types (`*Spec`) mirror the YAML; [`IpPool`] and friends are the
//! validated forms the allocator works with.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::Selector;

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

/// Encapsulation mode of `ipipMode` / `vxlanMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    /// No encapsulation (Calico's default).
    #[default]
    Never,
    /// Always encapsulate.
    Always,
    /// Encapsulate only across subnets.
    CrossSubnet,
}

/// What a pool's addresses may be used for (`allowedUses`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Tunnel addresses of nodes.
    Tunnel,
    /// LoadBalancer service addresses.
    LoadBalancer,
}

/// `assignmentMode`: whether a pool is used for automatic assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    /// Used for automatic assignment (Calico's default).
    #[default]
    Automatic,
    /// Used only when requested by name or CIDR.
    Manual,
}

/// `metadata` of a Kubernetes-style object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    /// Namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_text")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// Labels and annotations as Calico's loader reads them: a YAML boolean or
/// number (`routeReflector: true`) is its text, null the empty string. A plain
/// YAML 1.1 word (`yes`, `off`) is a boolean when read through
/// [`crate::yaml::documents`], so `"true"` / `"false"` here, as in Calico.
fn string_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Bool(bool),
        Int(i64),
        Uint(u64),
        Float(f64),
    }
    let m: Option<BTreeMap<String, Option<Scalar>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                None => String::new(),
                Some(Scalar::Text(s)) => s,
                Some(Scalar::Bool(b)) => b.to_string(),
                Some(Scalar::Int(i)) => i.to_string(),
                Some(Scalar::Uint(u)) => u.to_string(),
                Some(Scalar::Float(f)) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// A string field as Calico's loader reads it: a boolean (so a plain YAML 1.1
/// word, `name: off`) is its text `true` / `false`, as bgpd reads it too.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(optional_text(d)?.unwrap_or_default())
}

/// [`text`] for an optional field.
fn optional_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::Text(s) => s,
        Text::Bool(b) => b.to_string(),
    }))
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
mod label_tests {
    use super::*;

    #[test]
    fn scalar_label_values_are_their_text_as_calico_reads_them() {
        let m: ObjectMeta =
            serde_yaml::from_str("name: rr1\nlabels: {routeReflector: true, rack: 3, none: null}").unwrap();
        let got: Vec<(&str, &str)> = m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("none", ""), ("rack", "3"), ("routeReflector", "true")]);
        let bad = serde_yaml::from_str::<ObjectMeta>("name: n\nlabels: {rack: [1]}");
        assert!(bad.is_err(), "a list is no label value");
    }

    /// `name: off` is the name `false` in Calico (a YAML 1.1 word in a string field).
    #[test]
    fn a_yaml11_word_as_a_name_is_its_boolean_text() {
        let v = crate::yaml::documents("name: off\nnamespace: yes\n").next().unwrap().unwrap();
        let m: ObjectMeta = serde_yaml::from_value(v).unwrap();
        assert_eq!((m.name.as_str(), m.namespace.as_deref()), ("false", Some("true")));
        let m: ObjectMeta = serde_yaml::from_str("name: 'off'").unwrap();
        assert_eq!((m.name.as_str(), m.namespace), ("off", None));
    }
}

/// `spec` of a `projectcalico.org/v3` IPPool, as written in YAML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's CIDR.
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

/// A validated IP pool.
#[derive(Clone, Debug, PartialEq)]
pub struct IpPool {
    /// `metadata.name`.
    pub name: String,
    /// The pool's network.
    pub cidr: IpNet,
    /// Prefix length of its blocks.
    pub block_size: u8,
    /// Parsed `nodeSelector`.
    pub node_selector: Selector,
    /// Parsed `namespaceSelector`.
    pub namespace_selector: Selector,
    /// `disabled`.
    pub disabled: bool,
    /// `allowedUses`.
    pub allowed_uses: Vec<AllowedUse>,
    /// `disableBGPExport`.
    pub disable_bgp_export: bool,
    /// `assignmentMode`.
    pub assignment_mode: AssignmentMode,
    /// `ipipMode`.
    pub ipip_mode: EncapMode,
    /// `vxlanMode`.
    pub vxlan_mode: EncapMode,
    /// `natOutgoing`.
    pub nat_outgoing: bool,
}

/// A resource that failed validation: which object, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: field {field}: {reason}")]
pub struct InvalidResource {
    /// The resource kind (`IPPool`, …).
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// The offending field, in Calico's spelling.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Parses a CIDR whose host bits must be zero.
pub fn parse_cidr(kind: &'static str, name: &str, field: &'static str, s: &str) -> Result<IpNet, InvalidResource> {
    let invalid = |reason: String| InvalidResource { kind, name: name.to_string(), field, reason };
    let net: IpNet = s.trim().parse().map_err(|e| invalid(format!("{s:?} is not a CIDR: {e}")))?;
    if net.trunc() != net {
        return Err(invalid(format!("{s:?} has host bits set (did you mean {}?)", net.trunc())));
    }
    Ok(net)
}

impl IpPool {
    /// Validates a pool spec and applies Calico's defaults.
    pub fn from_spec(name: &str, spec: &IpPoolSpec) -> Result<IpPool, InvalidResource> {
        let invalid = |field: &'static str, reason: String| InvalidResource {
            kind: "IPPool",
            name: name.to_string(),
            field,
            reason,
        };
        let cidr = parse_cidr("IPPool", name, "cidr", &spec.cidr)?;
        let family = IpFamily::of_net(&cidr);
        let block_size = spec.block_size.unwrap_or(family.default_block_size());
        if block_size < family.min_block_size() || block_size > family.max_prefix() {
            return Err(invalid(
                "blockSize",
                format!(
                    "{block_size} is outside {}..={} for an {family} pool",
                    family.min_block_size(),
                    family.max_prefix()
                ),
            ));
        }
        if block_size < cidr.prefix_len() {
            return Err(invalid(
                "blockSize",
                format!(
                    "{block_size} is shorter than the pool's prefix /{}: a block must fit in the pool",
                    cidr.prefix_len()
                ),
            ));
        }
        let selector = |field: &'static str, s: &Option<String>| match s {
            None => Ok(Selector::All),
            Some(text) => Selector::parse(text).map_err(|e| invalid(field, e.to_string())),
        };
        Ok(IpPool {
            name: name.to_string(),
            cidr,
            block_size,
            node_selector: selector("nodeSelector", &spec.node_selector)?,
            namespace_selector: selector("namespaceSelector", &spec.namespace_selector)?,
            disabled: spec.disabled,
            allowed_uses: spec.allowed_uses.clone().unwrap_or(vec![AllowedUse::Workload, AllowedUse::Tunnel]),
            disable_bgp_export: spec.disable_bgp_export,
            assignment_mode: spec.assignment_mode.unwrap_or_default(),
            ipip_mode: spec.ipip_mode.unwrap_or_default(),
            vxlan_mode: spec.vxlan_mode.unwrap_or_default(),
            nat_outgoing: spec.nat_outgoing,
        })
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

/// `spec` of `projectcalico.org/v3` IPAMConfiguration (also accepts the
/// `crd.projectcalico.org/v1` IPAMConfig field `autoAllocateBlocks`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfigSpec {
    /// Forbid borrowing addresses from other nodes' blocks.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Maximum blocks affine to one node (default 20; 0 = unlimited).
    #[serde(default)]
    pub max_blocks_per_host: Option<u32>,
    /// Claim new blocks automatically (default true).
    #[serde(default)]
    pub auto_allocate_blocks: Option<bool>,
}

/// Validated global IPAM configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// `strictAffinity`.
    pub strict_affinity: bool,
    /// `maxBlocksPerHost`; `None` is unlimited (Calico's 0).
    pub max_blocks_per_host: Option<u32>,
    /// `autoAllocateBlocks`.
    pub auto_allocate_blocks: bool,
}

/// Calico's safeguard: at most 20 blocks per host unless configured otherwise.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            max_blocks_per_host: Some(DEFAULT_MAX_BLOCKS_PER_HOST),
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfig {
    /// Applies Calico's defaults to a spec.
    pub fn from_spec(spec: &IpamConfigSpec) -> IpamConfig {
        IpamConfig {
            strict_affinity: spec.strict_affinity,
            max_blocks_per_host: match spec.max_blocks_per_host {
                None => Some(DEFAULT_MAX_BLOCKS_PER_HOST),
                Some(0) => None,
                Some(n) => Some(n),
            },
            auto_allocate_blocks: spec.auto_allocate_blocks.unwrap_or(true),
        }
    }
}

/// `spec` of `projectcalico.org/v3` IPReservation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpReservationSpec {
    /// Addresses or CIDRs never handed out automatically.
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

/// A validated IP reservation.
#[derive(Clone, Debug, PartialEq)]
pub struct IpReservation {
    /// `metadata.name`.
    pub name: String,
    /// Reserved networks (single addresses become /32 or /128).
    pub cidrs: Vec<IpNet>,
}

impl IpReservation {
    /// Validates a reservation spec.
    pub fn from_spec(name: &str, spec: &IpReservationSpec) -> Result<Self, InvalidResource> {
        let mut cidrs = Vec::new();
        for s in &spec.reserved_cidrs {
            let net = match s.trim().parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => parse_cidr("IPReservation", name, "reservedCIDRs", s)?,
            };
            cidrs.push(net);
        }
        Ok(IpReservation { name: name.to_string(), cidrs })
    }
}

/// A node as far as IPAM cares: its name and labels (for `nodeSelector`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// A namespace: labels (for `namespaceSelector`) and annotations (pool choice).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// `metadata.name`.
    pub name: String,
    /// Labels, plus `kubernetes.io/metadata.name` and `projectcalico.org/name`
    /// which Kubernetes and Calico add implicitly.
    pub labels: BTreeMap<String, String>,
    /// Annotations (`cni.projectcalico.org/ipv4pools`, `ipv6pools`).
    pub annotations: BTreeMap<String, String>,
}

impl Namespace {
    /// A namespace with the implicit name labels set.
    pub fn new(name: &str, mut labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> Namespace {
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        labels.insert("projectcalico.org/name".into(), name.into());
        Namespace { name: name.to_string(), labels, annotations }
    }
}

/// A pod's identity and annotations (`cni.projectcalico.org/*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}
