//! `IPAMHandle` (`crd.projectcalico.org/v1`): the addresses one pod interface
//! holds, per block, and (a bgpd extension, `spec.floatingIPs`) the floating IPs
//! `bgpd-ipam` recorded from the pod's `cni.projectcalico.org/floatingIPs`
//! annotation, which the pod's node advertises.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{check_name, null_as_default, InvalidResource};

/// A handle: which blocks hold its addresses and how many (Calico `IPAMHandle`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHandle {
    /// The handle ID (e.g. `k8s-pod-network.CONTAINERID`).
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR (as text, like Calico) → number of addresses held there
    /// (always written: the CRD requires it; `null` reads as none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub block: BTreeMap<String, u32>,
    /// Floating IPs recorded for this handle, to be advertised towards the node.
    #[serde(rename = "floatingIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub floating_ips: Vec<FloatingIp>,
}

/// A floating IP (`cni.projectcalico.org/floatingIPs`) mapped onto a pod address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// The floating address.
    pub ip: IpAddr,
    /// The pod address it maps to.
    pub target: IpAddr,
    /// The node hosting the pod (where it is advertised from).
    pub node: String,
}

impl IpamHandle {
    /// The `kind` of the resource.
    pub const KIND: &'static str = "IPAMHandle";
}

impl FloatingIp {
    /// Why `target` cannot be the pod address of floating IP `ip`: it must be of
    /// the same family (a packet to `ip` is sent on to `target`).
    pub fn family_fault(ip: IpAddr, target: IpAddr) -> Option<String> {
        (ip.is_ipv4() != target.is_ipv4()).then(|| format!("{target} is not of the family of {ip}"))
    }

    /// Checks entry `index` of handle `handle`'s `floatingIPs` (the node
    /// advertises it, so its `node` must name one): the refusal names the
    /// field, e.g. `floatingIPs[1].target`. bgpd reads a handle's entries by
    /// these rules and advertises only those that pass.
    pub fn validate(&self, handle: &str, index: usize) -> Result<(), InvalidResource> {
        let refusal = |field: &str, reason: String| InvalidResource {
            kind: IpamHandle::KIND,
            name: handle.to_string(),
            field: format!("floatingIPs[{index}].{field}"),
            reason,
        };
        if let Some(reason) = Self::family_fault(self.ip, self.target) {
            return Err(refusal("target", reason));
        }
        check_name(&self.node).map_err(|reason| refusal("node", reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, target: &str, node: &str) -> FloatingIp {
        FloatingIp { ip: ip.parse().unwrap(), target: target.parse().unwrap(), node: node.into() }
    }

    #[test]
    fn a_floating_ip_needs_a_target_of_its_family_and_a_node_name() {
        entry("192.0.2.10", "10.244.0.5", "node-1").validate("h", 0).unwrap();
        entry("2001:db8::10", "fd00::5", "node-1").validate("h", 0).unwrap();
        let e = entry("192.0.2.10", "fd00::5", "node-1").validate("h", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IPAMHandle \"h\": field floatingIPs[2].target: fd00::5 is not of the family of 192.0.2.10"
        );
        let e = entry("192.0.2.10", "10.244.0.5", "a b").validate("h", 0).unwrap_err();
        assert_eq!((e.field.as_str(), e.kind), ("floatingIPs[0].node", "IPAMHandle"));
        let e = entry("192.0.2.10", "10.244.0.5", "").validate("h", 0).unwrap_err();
        assert_eq!(e.reason, "the name is empty");
    }

    #[test]
    fn handles_read_as_calico_and_bgpd_ipam_write_them() {
        let h: IpamHandle = serde_json::from_value(serde_json::json!({
            "handleID": "k8s-pod-network.c1", "block": {"10.244.0.0/26": 1},
            "floatingIPs": [{"ip": "192.0.2.10", "target": "10.244.0.5", "node": "node-1"}],
        }))
        .unwrap();
        assert_eq!(h.floating_ips, [entry("192.0.2.10", "10.244.0.5", "node-1")]);
        let v = serde_json::to_value(IpamHandle { handle_id: "h".into(), ..IpamHandle::default() }).unwrap();
        assert_eq!(v, serde_json::json!({"handleID": "h", "block": {}}), "no floatingIPs when there are none");
    }
}
