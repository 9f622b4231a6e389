//! `projectcalico.org/v3` `BGPFilter`: ordered import/export rules for IPv4 and IPv6
//! routes that BGPPeers name in `spec.filters`. Validated here once into the policy
//! engine's types ([`bgpd_proto::rib::policy`]), which the RIB evaluates per prefix.
//!
//! The checks are Calico's (its CRD schema, CEL rules and validator): `cidr` and
//! `matchOperator` come together, `prefixLength` needs `cidr`, operations only with
//! `Accept`, one community value, at most 10 operations of exactly one kind each.

use std::sync::Arc;

use bgpd_proto::rib::policy::{
    self, Action, CidrMatch, CommunityValue, MatchOperator, Operation, PeerType, Rule, Source,
};
use bgpd_proto::wire::LargeCommunity;
use ipnet::IpNet;
use serde_yaml::Value;

use super::fields::{as_str, as_u64, quoted, Fields, Findings};
use super::values::{parse_ip, parse_network, AsNumber, ConfiguredCommunity};
use super::{BgpPeer, Model};

/// A validated BGPFilter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpFilter {
    /// The filter as the RIB evaluates it (`metadata.name` and the four rule lists),
    /// shared by every peer that names it.
    pub policy: Arc<policy::Filter>,
}

impl BgpFilter {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The engine's filter (a shared handle, cheap to clone).
    pub fn to_policy(&self) -> Arc<policy::Filter> {
        self.policy.clone()
    }
}

impl Model {
    /// The filters a BGPPeer names, in its order, for [`policy::evaluate`]. A name
    /// with no valid BGPFilter is skipped, as Calico skips it (the load reported it).
    pub fn peer_filters(&self, peer: &BgpPeer) -> Vec<Arc<policy::Filter>> {
        peer.filters.iter().filter_map(|name| self.filters.get(name)).map(BgpFilter::to_policy).collect()
    }
}

const SPEC_FIELDS: &[&str] = &["exportV4", "importV4", "exportV6", "importV6"];

const RULE_FIELDS: &[&str] = &[
    "cidr",
    "prefixLength",
    "matchOperator",
    "source",
    "interface",
    "peerType",
    "communities",
    "asPathPrefix",
    "priority",
    "action",
    "operations",
];

/// Calico's bounds for `priority` and `setPriority.value`.
const PRIORITY_MAX: u64 = 2_147_483_646;
/// Calico's limit on `operations` and on `prependASPath.prefix`.
const MAX_ITEMS: usize = 10;

/// Reads a BGPFilter (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<BgpFilter> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(SPEC_FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let export_v4 = rules(&spec, "exportV4", false, f);
    let import_v4 = rules(&spec, "importV4", false, f);
    let export_v6 = rules(&spec, "exportV6", true, f);
    let import_v6 = rules(&spec, "importV6", true, f);
    f.errors.is_empty().then(|| BgpFilter {
        policy: Arc::new(policy::Filter { name: name.to_string(), export_v4, import_v4, export_v6, import_v6 }),
    })
}

fn rules(spec: &Fields, key: &str, v6: bool, f: &mut Findings) -> Vec<Rule> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list(key)).unwrap_or_default() {
        let Some(fields) = f.take(Fields::at(Some(item), &path)) else { continue };
        if let Some(r) = rule(&fields, key, v6, f) {
            out.push(r);
        }
    }
    out
}

/// One rule of list `list` (for messages); `v6`: whether it is an IPv6 list.
fn rule(m: &Fields, list: &str, v6: bool, f: &mut Findings) -> Option<Rule> {
    let errors_before = f.errors.len();
    for unknown in m.unknown_keys(RULE_FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let action = f.take(m.parse_str("action", |s| match s {
        "Accept" => Ok(Action::Accept),
        "Reject" => Ok(Action::Reject),
        _ => Err(format!("{} is not one of Accept, Reject", quoted(s))),
    }));
    if let Some(None) = action {
        f.error(m.path_of("action"), "missing (Accept or Reject)");
    }
    let cidr = cidr_match(m, list, v6, f);
    let source = f.opt(m.parse_str("source", |s| match s {
        "RemotePeers" => Ok(Source::RemotePeers),
        _ => Err(format!("{} is not RemotePeers (the only source Calico defines)", quoted(s))),
    }));
    let interface = f.opt(m.parse_str("interface", check_interface));
    let peer_type = f.opt(m.parse_str("peerType", |s| match s {
        "eBGP" => Ok(PeerType::Ebgp),
        "iBGP" => Ok(PeerType::Ibgp),
        _ => Err(format!("{} is not one of eBGP, iBGP", quoted(s))),
    }));
    let community = communities(m, f);
    let as_path_prefix = as_numbers(m, "asPathPrefix", f);
    let priority = f.opt(m.get("priority", priority_value));
    let operations = operations(m, f);
    if action == Some(Some(Action::Reject)) && !operations.is_empty() {
        f.error(m.path_of("operations"), "operations may only be used with action Accept");
    }
    if f.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        cidr,
        source,
        interface,
        peer_type,
        community,
        as_path_prefix: (!as_path_prefix.is_empty()).then_some(as_path_prefix),
        priority,
        action: action.flatten()?,
        operations,
    })
}

/// `cidr`, `matchOperator` and `prefixLength` together.
fn cidr_match(m: &Fields, list: &str, v6: bool, f: &mut Findings) -> Option<CidrMatch> {
    let cidr = f.opt(m.parse_str("cidr", |s| filter_cidr(s, list, v6)));
    let op = f.opt(m.parse_str("matchOperator", |s| match s {
        "Equal" => Ok(MatchOperator::Equal),
        "NotEqual" => Ok(MatchOperator::NotEqual),
        "In" => Ok(MatchOperator::In),
        "NotIn" => Ok(MatchOperator::NotIn),
        _ => Err(format!("{} is not one of Equal, NotEqual, In, NotIn", quoted(s))),
    }));
    // Present (even if invalid, which is reported on its own): not absent, null or "".
    let present = |key| !matches!(m.str(key), Ok(None));
    let (has_cidr, has_op) = (present("cidr"), present("matchOperator"));
    if has_cidr && !has_op {
        f.error(m.path_of("matchOperator"), "missing (required with cidr)");
    }
    if has_op && !has_cidr {
        f.error(m.path_of("cidr"), "missing (required with matchOperator)");
    }
    let (min_len, max_len) = prefix_length(m, v6, f);
    if m.has("prefixLength") && !has_cidr {
        f.error(m.path_of("prefixLength"), "requires cidr");
    }
    let (cidr, op) = (cidr?, op?);
    let with_length = min_len.is_some() || max_len.is_some();
    if with_length && matches!(op, MatchOperator::Equal | MatchOperator::NotEqual) {
        f.warn(m.path_of("prefixLength"), format!("has no effect with matchOperator {op:?}; ignored"));
    }
    let found = CidrMatch { cidr, op, min_len, max_len };
    let (lo, hi) = found.length_range();
    if with_length && lo > hi && matches!(op, MatchOperator::In | MatchOperator::NotIn) {
        let what = if op == MatchOperator::In { "never matches" } else { "matches every route" };
        let reason = format!("no prefix length lies in {cidr} with lengths {lo}..={hi}: the rule {what}");
        f.warn(m.path_of("prefixLength"), reason);
    }
    Some(found)
}

/// A CIDR of the list's family; a bare address is a host prefix (Calico's `netv4` /
/// `netv6` validators).
fn filter_cidr(s: &str, list: &str, v6: bool) -> Result<IpNet, String> {
    let net = if s.contains('/') { parse_network(s)? } else { IpNet::from(parse_ip(s)?) };
    match (net, v6) {
        (IpNet::V4(_), false) | (IpNet::V6(_), true) => Ok(net),
        (IpNet::V6(_), false) => Err(format!("{net} is an IPv6 CIDR in the IPv4 list {list}")),
        (IpNet::V4(_), true) => Err(format!("{net} is an IPv4 CIDR in the IPv6 list {list}")),
    }
}

/// `prefixLength: {min, max}`, each 0..=32 (IPv4) or 0..=128 (IPv6), min ≤ max.
fn prefix_length(m: &Fields, v6: bool, f: &mut Findings) -> (Option<u8>, Option<u8>) {
    let Some(pl) = f.take(m.child("prefixLength")) else { return (None, None) };
    for unknown in pl.unknown_keys(&["min", "max"]) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let limit: u8 = if v6 { 128 } else { 32 };
    let length = |v: &Value| match as_u64(v)? {
        n if n <= u64::from(limit) => Ok(n as u8),
        n => Err(format!("{n} is out of range 0..={limit}")),
    };
    let min = f.opt(pl.get("min", length));
    let max = f.opt(pl.get("max", length));
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            f.error(m.path_of("prefixLength"), format!("min {lo} is greater than max {hi}"));
        }
    }
    (min, max)
}

/// Calico's `bgpFilterInterface`: 1 to 15 of `a-z A-Z 0-9 _ . - *`; `*` is a wildcard.
fn check_interface(s: &str) -> Result<String, String> {
    let ok = (1..=15).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} is not an interface pattern (1 to 15 letters, digits, '_', '.', '-', and '*' as a wildcard)",
            quoted(s)
        ))
    }
}

/// `communities: {values: [one value]}`.
fn communities(m: &Fields, f: &mut Findings) -> Option<CommunityValue> {
    if !m.has("communities") {
        return None;
    }
    let c = f.take(m.child("communities"))?;
    for unknown in c.unknown_keys(&["values"]) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let values = f.take(c.list("values"))?;
    let [(path, value)] = values.as_slice() else {
        let n = values.len();
        f.error(c.path_of("values"), format!("has {n} values; Calico allows exactly one"));
        return None;
    };
    match community_value(value) {
        Ok(v) => Some(v),
        Err(reason) => {
            f.error(path.clone(), reason);
            None
        }
    }
}

fn community_value(v: &Value) -> Result<CommunityValue, String> {
    Ok(match as_str(v)?.parse::<ConfiguredCommunity>()? {
        ConfiguredCommunity::Standard(a, n) => CommunityValue::Standard(bgpd_proto::wire::Community::new(a, n)),
        ConfiguredCommunity::Large(global, local1, local2) => {
            CommunityValue::Large(LargeCommunity { global, local1, local2 })
        }
    })
}

/// A list of AS numbers (integers, digit strings or asdot), each error at its index.
fn as_numbers(m: &Fields, key: &str, f: &mut Findings) -> Vec<u32> {
    let items = f.take(m.list(key)).unwrap_or_default();
    as_number_items(items, f)
}

fn as_number_items(items: Vec<(String, &Value)>, f: &mut Findings) -> Vec<u32> {
    let mut out = Vec::new();
    for (path, v) in items {
        match AsNumber::from_value(v) {
            Ok(a) => out.push(a.get()),
            Err(reason) => f.error(path, reason),
        }
    }
    out
}

fn priority_value(v: &Value) -> Result<u32, String> {
    match as_u64(v)? {
        // Invariant: bounded by PRIORITY_MAX < u32::MAX.
        n @ 1..=PRIORITY_MAX => Ok(n as u32),
        n => Err(format!("{n} is out of range 1..={PRIORITY_MAX}")),
    }
}

/// `operations`: at most 10, each with exactly one of addCommunity, prependASPath,
/// setPriority.
fn operations(m: &Fields, f: &mut Findings) -> Vec<Operation> {
    let items = f.take(m.list("operations")).unwrap_or_default();
    if items.len() > MAX_ITEMS {
        f.error(m.path_of("operations"), format!("has {} entries; Calico allows at most {MAX_ITEMS}", items.len()));
    }
    let mut out = Vec::new();
    for (path, item) in items {
        let Some(op) = f.take(Fields::at(Some(item), &path)) else { continue };
        for unknown in op.unknown_keys(&["addCommunity", "prependASPath", "setPriority"]) {
            f.warn(unknown, "not supported by bgpd; ignored");
        }
        let set = ["addCommunity", "prependASPath", "setPriority"].into_iter().filter(|k| op.has(k)).count();
        if set != 1 {
            let reason = format!(
                "sets {set} operations; each entry needs exactly one of addCommunity, prependASPath, setPriority"
            );
            f.error(path, reason);
            continue;
        }
        if op.has("addCommunity") {
            let Some(add) = f.take(op.child("addCommunity")) else { continue };
            match add.value("value") {
                None => f.error(add.path_of("value"), "missing"),
                Some(v) => match community_value(v) {
                    Ok(c) => out.push(Operation::AddCommunity(c)),
                    Err(reason) => f.error(add.path_of("value"), reason),
                },
            }
        } else if op.has("prependASPath") {
            let Some(pp) = f.take(op.child("prependASPath")) else { continue };
            let Some(items) = f.take(pp.list("prefix")) else { continue };
            if items.is_empty() {
                f.error(pp.path_of("prefix"), "missing (1 to 10 AS numbers)");
            } else if items.len() > MAX_ITEMS {
                let reason = format!("has {} AS numbers; Calico allows at most {MAX_ITEMS}", items.len());
                f.error(pp.path_of("prefix"), reason);
            } else {
                out.push(Operation::PrependAsPath(as_number_items(items, f)));
            }
        } else {
            let Some(sp) = f.take(op.child("setPriority")) else { continue };
            match f.opt(sp.get("value", priority_value)) {
                Some(p) => out.push(Operation::SetPriority(p)),
                None if !sp.has("value") => f.error(sp.path_of("value"), "missing"),
                None => {}
            }
        }
    }
    out
}
