//! `projectcalico.org/v3` (and `crd.projectcalico.org/v1`) `IPPool`: a range that
//! pod (or LoadBalancer) addresses come from. Routing needs it for two things: a pool
//! with `disableBGPExport` keeps its blocks out of BGP, and the pools are what
//! Calico's default export policy passes on.
//!
//! The pool and its rules are `bgpd-model`'s ([`bgpd_model::calico::IpPool`]), the
//! same the `ipam` crate's allocator reads pools with. Here the spec's fields are
//! read with their YAML types checked (so a fault names `spec.…` and the object's
//! location), handed to [`IpPool::validate`], and its refusals reported as
//! problems.

use bgpd_model::calico::{AllowedUse, IpPoolSpec};

use super::fields::{as_str, describe, Fields, Findings};

pub use bgpd_model::calico::IpPool;

/// Reads an IPPool (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<IpPool> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(IpPoolSpec::FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let text = |key, f: &mut Findings| f.opt(spec.str(key)).map(str::to_string);
    let raw = IpPoolSpec {
        cidr: text("cidr", f).unwrap_or_default(),
        block_size: f.opt(spec.get("blockSize", |v| {
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("expected a prefix length, found {}", describe(v)))
        })),
        node_selector: text("nodeSelector", f),
        namespace_selector: text("namespaceSelector", f),
        disabled: f.opt(spec.bool("disabled")).unwrap_or(false),
        allowed_uses: allowed_uses(&spec, f),
        disable_bgp_export: f.opt(spec.bool("disableBGPExport")).unwrap_or(false),
        assignment_mode: f.opt(spec.parse_str("assignmentMode", str::parse)),
        ipip_mode: f.opt(spec.parse_str("ipipMode", str::parse)),
        vxlan_mode: f.opt(spec.parse_str("vxlanMode", str::parse)),
        nat_outgoing: f.opt(spec.bool("natOutgoing")).unwrap_or(false),
    };
    match IpPool::validate(name, &raw) {
        Ok(pool) => f.errors.is_empty().then_some(pool),
        Err(refused) => {
            for e in refused {
                let path = spec.path_of(&e.field);
                // A field already refused for its YAML type is read as absent:
                // the model's "missing" for it would say the same twice.
                if !f.errors.iter().any(|known| known.field == path) {
                    f.error(path, e.reason);
                }
            }
            None
        }
    }
}

/// `allowedUses`, each item read with the model's words; `None` when absent.
fn allowed_uses(spec: &Fields, f: &mut Findings) -> Option<Vec<AllowedUse>> {
    if !spec.has("allowedUses") {
        return None;
    }
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list("allowedUses")).unwrap_or_default() {
        match as_str(item).and_then(str::parse) {
            Ok(using) => out.push(using),
            Err(reason) => f.error(path, reason),
        }
    }
    Some(out)
}
