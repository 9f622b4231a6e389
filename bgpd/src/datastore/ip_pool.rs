//! `projectcalico.org/v3` (and `crd.projectcalico.org/v1`) `IPPool`: a range that
//! pod (or LoadBalancer) addresses come from. Routing needs it for two things: a pool
//! with `disableBGPExport` keeps its blocks out of BGP, and the pools are what
//! Calico's default export policy passes on. The allocator's own reading of pools is
//! the `ipam` crate's; the rules here are the same (see `docs/ipam.md`).

use bgpd_model::Selector;
use ipam::model::{AllowedUse, EncapMode};
use ipnet::IpNet;

use super::fields::{as_str, quoted, Fields, Findings};
use super::values::parse_network;

/// A validated IP pool, as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPool {
    /// `metadata.name`.
    pub name: String,
    /// `spec.cidr`.
    pub cidr: IpNet,
    /// `spec.blockSize`: prefix length of the pool's blocks (26 for IPv4, 122 for IPv6
    /// by default).
    pub block_size: u8,
    /// `spec.nodeSelector` (default `all()`): the nodes that take blocks from it.
    pub node_selector: Selector,
    /// `spec.disableBGPExport`: the pool's routes are not advertised.
    pub disable_bgp_export: bool,
    /// `spec.ipipMode` (default Never).
    pub ipip_mode: EncapMode,
    /// `spec.vxlanMode` (default Never).
    pub vxlan_mode: EncapMode,
    /// `spec.natOutgoing`.
    pub nat_outgoing: bool,
    /// `spec.disabled`: no new addresses from it (existing blocks stay routed).
    pub disabled: bool,
    /// `spec.allowedUses` (default Workload and Tunnel).
    pub allowed_uses: Vec<AllowedUse>,
}

const FIELDS: &[&str] = &[
    "cidr",
    "blockSize",
    "nodeSelector",
    "disableBGPExport",
    "ipipMode",
    "vxlanMode",
    "natOutgoing",
    "disabled",
    "allowedUses",
    // Read by the `ipam` crate, not by routing.
    "namespaceSelector",
    "assignmentMode",
];

fn encap_mode(s: &str) -> Result<EncapMode, String> {
    match s {
        "Never" => Ok(EncapMode::Never),
        "Always" => Ok(EncapMode::Always),
        "CrossSubnet" => Ok(EncapMode::CrossSubnet),
        _ => Err(format!("{} is not one of Never, Always, CrossSubnet", quoted(s))),
    }
}

/// Reads an IPPool (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<IpPool> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let cidr = f.opt(spec.parse_str("cidr", parse_network));
    if cidr.is_none() && !spec.has("cidr") {
        f.error(spec.path_of("cidr"), "missing");
    }
    let block_size = f.opt(spec.get("blockSize", |v| {
        v.as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| format!("expected a prefix length, found {}", super::fields::describe(v)))
    }));
    let node_selector = f
        .opt(spec.parse_str("nodeSelector", |s| Selector::parse(s).map_err(|e| e.to_string())))
        .unwrap_or(Selector::All);
    let disable_bgp_export = f.opt(spec.bool("disableBGPExport")).unwrap_or(false);
    let ipip_mode = f.opt(spec.parse_str("ipipMode", encap_mode)).unwrap_or_default();
    let vxlan_mode = f.opt(spec.parse_str("vxlanMode", encap_mode)).unwrap_or_default();
    let nat_outgoing = f.opt(spec.bool("natOutgoing")).unwrap_or(false);
    let disabled = f.opt(spec.bool("disabled")).unwrap_or(false);
    let allowed_uses = allowed_uses(&spec, f);
    if ipip_mode != EncapMode::Never && vxlan_mode != EncapMode::Never {
        f.error(spec.path_of("vxlanMode"), "cannot be enabled together with ipipMode");
    }
    let cidr = cidr?;
    let (v4, min, max) = match cidr {
        IpNet::V4(_) => (true, 20, 32),
        IpNet::V6(_) => (false, 116, 128),
    };
    if !v4 && ipip_mode != EncapMode::Never {
        f.error(spec.path_of("ipipMode"), "IPIP is not supported for an IPv6 pool");
    }
    let block_size = block_size.unwrap_or(if v4 { 26 } else { 122 });
    if !(min..=max).contains(&block_size) {
        let family = if v4 { "IPv4" } else { "IPv6" };
        f.error(spec.path_of("blockSize"), format!("{block_size} is outside {min}..={max} for an {family} pool"));
    } else if block_size < cidr.prefix_len() {
        f.error(
            spec.path_of("blockSize"),
            format!(
                "{block_size} is shorter than the pool's prefix /{}: a block must fit in the pool",
                cidr.prefix_len()
            ),
        );
    }
    f.errors.is_empty().then(|| IpPool {
        name: name.to_string(),
        cidr,
        block_size,
        node_selector,
        disable_bgp_export,
        ipip_mode,
        vxlan_mode,
        nat_outgoing,
        disabled,
        allowed_uses,
    })
}

fn allowed_uses(spec: &Fields, f: &mut Findings) -> Vec<AllowedUse> {
    if !spec.has("allowedUses") {
        return vec![AllowedUse::Workload, AllowedUse::Tunnel];
    }
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list("allowedUses")).unwrap_or_default() {
        match as_str(item) {
            Ok("Workload") => out.push(AllowedUse::Workload),
            Ok("Tunnel") => out.push(AllowedUse::Tunnel),
            Ok("LoadBalancer") => out.push(AllowedUse::LoadBalancer),
            Ok(s) => f.error(path, format!("{} is not one of Workload, Tunnel, LoadBalancer", quoted(s))),
            Err(reason) => f.error(path, reason),
        }
    }
    out
}
