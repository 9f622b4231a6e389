//! `crd.projectcalico.org/v1` `IPAMHandle`: the addresses one pod interface holds.
//! Routing reads only `spec.floatingIPs`, a bgpd extension that `bgpd-ipam` records
//! from the pod's `cni.projectcalico.org/floatingIPs` annotation: each floating IP,
//! the pod address it maps to and the node that hosts the pod, which advertises it
//! (see `daemon/originate.rs`). Handles come from the YAML ([`parse`]) or typed from
//! the IPAM stores, file or etcd ([`from_store`]); the entries of both are checked by
//! the model's rule, `FloatingIp::validate`.

use std::net::IpAddr;

use bgpd_model::calico::IpamHandle;

use super::fields::{Fields, Findings};
use super::values::{check_name, parse_ip};

/// An IPAM handle as routing sees it: its floating IPs (the model's
/// `bgpd_model::calico::IpamHandle` is the whole object, as `ipam` stores it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleFloatingIps {
    /// `metadata.name` (Calico names a handle by its ID, e.g.
    /// `k8s-pod-network.CONTAINERID`).
    pub name: String,
    /// `spec.handleID`, else the name.
    pub handle_id: String,
    /// `spec.floatingIPs`, the valid entries in list order.
    pub floating_ips: Vec<FloatingIp>,
}

/// One `spec.floatingIPs` entry: the model's type, which `bgpd-ipam` stores
/// in its handles.
pub use bgpd_model::calico::FloatingIp;

/// Reads an IPAMHandle (name already checked by the caller). A malformed
/// `floatingIPs` entry is a warning: the handle stays with its other entries.
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<HandleFloatingIps> {
    let spec = f.take(root.child("spec"))?;
    let handle_id = f.opt(spec.str("handleID")).unwrap_or(name).to_string();
    let entries = match spec.list("floatingIPs") {
        Ok(entries) => entries,
        Err(e) => {
            f.warn(e.field, format!("{}; no floating IP read", e.reason));
            Vec::new()
        }
    };
    let mut floating_ips = Vec::new();
    for (index, (path, v)) in entries.into_iter().enumerate() {
        match floating_ip(name, index, &path, v) {
            Ok(ip) => floating_ips.push(ip),
            Err(e) => f.warn(e.field, format!("{}; this floating IP is not advertised", e.reason)),
        }
    }
    Some(HandleFloatingIps { name: name.to_string(), handle_id, floating_ips })
}

/// A handle of an IPAM store with floating IPs, typed as the store decoded it:
/// its name is its ID, as Calico names IPAMHandles, which must be a name
/// (`metadata.name`); each entry is kept or warned about as the YAML's are.
pub(crate) fn from_store(h: &IpamHandle, f: &mut Findings) -> Option<HandleFloatingIps> {
    if let Err(reason) = check_name(&h.handle_id) {
        f.error("metadata.name", reason);
        return None;
    }
    let mut floating_ips = Vec::new();
    for (index, entry) in h.floating_ips.iter().enumerate() {
        match entry.validate(&h.handle_id, index) {
            Ok(()) => floating_ips.push(entry.clone()),
            Err(r) => f.warn(format!("spec.{}", r.field), format!("{}; this floating IP is not advertised", r.reason)),
        }
    }
    let name = h.handle_id.clone();
    Some(HandleFloatingIps { name: name.clone(), handle_id: name, floating_ips })
}

/// Entry `index` of handle `handle`'s `spec.floatingIPs` (`v`, at `path`), by the
/// model's rules ([`FloatingIp::validate`]) once its fields are read.
fn floating_ip(
    handle: &str,
    index: usize,
    path: &str,
    v: &serde_yaml::Value,
) -> Result<FloatingIp, super::fields::FieldError> {
    use super::fields::FieldError;
    let e = Fields::at(Some(v), path)?;
    let required =
        |key: &str, r: Result<Option<IpAddr>, FieldError>| r?.ok_or_else(|| FieldError::new(e.path_of(key), "missing"));
    let ip = required("ip", e.parse_str("ip", parse_ip))?;
    let target = required("target", e.parse_str("target", parse_ip))?;
    if let Some(reason) = FloatingIp::family_fault(ip, target) {
        return Err(FieldError::new(e.path_of("target"), reason));
    }
    let node = e.str("node")?.ok_or_else(|| FieldError::new(e.path_of("node"), "missing"))?;
    let entry = FloatingIp { ip, target, node: node.to_string() };
    // The family is checked above too, before `node` is read: an entry with
    // both faults is refused for its target, as it always was.
    entry.validate(handle, index).map_err(|r| FieldError::new(format!("spec.{}", r.field), r.reason))?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(yaml: &str) -> (Option<HandleFloatingIps>, Findings) {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let root = Fields::at(Some(&v), "").unwrap();
        let mut f = Findings::default();
        (parse("k8s-pod-network.c1", &root, &mut f), f)
    }

    #[test]
    fn floating_ips_as_bgpd_ipam_writes_them() {
        let (h, f) = handle(
            r#"{"spec": {"handleID": "k8s-pod-network.c1", "block": {"10.244.0.0/26": 1},
                "floatingIPs": [{"ip": "192.0.2.10", "target": "10.244.0.5", "node": "node-1"},
                                {"ip": "2001:db8::10", "target": "fd00::5", "node": "node-1"}]}}"#,
        );
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
        let h = h.unwrap();
        assert_eq!(h.handle_id, "k8s-pod-network.c1");
        assert_eq!(
            h.floating_ips[0],
            FloatingIp {
                ip: "192.0.2.10".parse().unwrap(),
                target: "10.244.0.5".parse().unwrap(),
                node: "node-1".into()
            }
        );
        assert_eq!(h.floating_ips[1].ip.to_string(), "2001:db8::10");
    }

    #[test]
    fn a_bad_entry_warns_and_the_others_stay() {
        let (h, f) = handle(
            "spec:
               floatingIPs:
               - {ip: 192.0.2.1, target: fd00::1, node: n}
               - {ip: 192.0.2.2, node: n}
               - {ip: 192.0.2.300, target: 10.0.0.1, node: n}
               - {ip: 192.0.2.4, target: 10.0.0.1, node: 'a b'}
               - {ip: 192.0.2.5, target: 10.0.0.1}
               - {ip: 192.0.2.6, target: 10.0.0.6, node: n}",
        );
        let h = h.expect("the handle is kept");
        assert_eq!(h.handle_id, "k8s-pod-network.c1", "the name when handleID is absent");
        assert_eq!(h.floating_ips.len(), 1);
        assert_eq!(h.floating_ips[0].ip.to_string(), "192.0.2.6");
        let fields: Vec<&str> = f.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.floatingIPs[0].target",
                "spec.floatingIPs[1].target",
                "spec.floatingIPs[2].ip",
                "spec.floatingIPs[3].node",
                "spec.floatingIPs[4].node"
            ],
            "{f:?}"
        );
        assert!(f.errors.is_empty());
        let (h, f) = handle("spec: {floatingIPs: 3}");
        assert!(h.unwrap().floating_ips.is_empty());
        assert_eq!(f.warnings[0].field, "spec.floatingIPs");
    }
}
