//! The node's workloads a BGPPeer with `localWorkloadSelector` peers with:
//! Calico `projectcalico.org/v3` `WorkloadEndpoint`s (file and etcd
//! datastores) and Kubernetes `v1` `Pod`s (the Kubernetes datastore, which
//! watches only the pods of its own node), both read into one
//! [`WorkloadEndpoint`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

use super::fields::{as_str, quoted, Fields, Findings};
use super::values::{check_name, parse_ip};

/// The label Calico gives a workload endpoint for its namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label Calico gives a workload endpoint for its orchestrator (`k8s`).
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The label Calico gives a workload endpoint for its pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";

/// A workload (a pod) on a node, as `localWorkloadSelector` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    /// `metadata.namespace`.
    pub namespace: String,
    /// The pod's name: a Pod's `metadata.name`, a WorkloadEndpoint's `spec.pod`
    /// (else its `metadata.name`).
    pub pod: String,
    /// The node it runs on (`spec.node`, a Pod's `spec.nodeName`).
    pub node: String,
    /// Its labels, with Calico's `projectcalico.org/namespace`,
    /// `projectcalico.org/orchestrator` and `projectcalico.org/serviceaccount`.
    pub labels: BTreeMap<String, String>,
    /// Its first IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its first IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
}

impl WorkloadEndpoint {
    /// Its address of the family of `v4` (true: IPv4).
    pub fn address(&self, v4: bool) -> Option<IpAddr> {
        match v4 {
            true => self.ipv4.map(IpAddr::V4),
            false => self.ipv6.map(IpAddr::V6),
        }
    }

    fn add_address(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.ipv4.get_or_insert(a);
            }
            IpAddr::V6(a) => {
                self.ipv6.get_or_insert(a);
            }
        }
    }
}

/// An address of a workload: a host prefix (`/32`, `/128`) or a bare address.
fn host_address(s: &str) -> Result<IpAddr, String> {
    match IpNet::from_str(s) {
        Ok(net) if net.prefix_len() == net.max_prefix_len() => Ok(net.addr()),
        Ok(_) => Err(format!("{} is not a single address (/32 or /128)", quoted(s))),
        Err(_) => parse_ip(s).map_err(|_| format!("{} is not an IP address or host prefix", quoted(s))),
    }
}

fn name_field(spec: &Fields, key: &str, f: &mut Findings) -> Option<String> {
    f.opt(spec.parse_str(key, |s| check_name(s).map(|()| s.to_string())))
}

/// Reads a Calico WorkloadEndpoint (name and namespace already checked).
pub(crate) fn parse_wep(
    namespace: &str,
    name: &str,
    mut labels: BTreeMap<String, String>,
    root: &Fields,
    f: &mut Findings,
) -> Option<WorkloadEndpoint> {
    let spec = f.take(root.child("spec"))?;
    let node = name_field(&spec, "node", f);
    if node.is_none() && f.errors.is_empty() {
        f.error(spec.path_of("node"), "missing (the node the workload runs on)");
    }
    let pod = name_field(&spec, "pod", f).unwrap_or_else(|| name.to_string());
    let orchestrator = f.opt(spec.str("orchestrator"));
    let service_account = name_field(&spec, "serviceAccountName", f);
    labels.entry(NAMESPACE_LABEL.into()).or_insert_with(|| namespace.to_string());
    if let Some(o) = orchestrator {
        labels.entry(ORCHESTRATOR_LABEL.into()).or_insert_with(|| o.to_string());
    }
    if let Some(sa) = service_account {
        labels.entry(SERVICE_ACCOUNT_LABEL.into()).or_insert(sa);
    }
    let mut wep =
        WorkloadEndpoint { namespace: namespace.to_string(), pod, node: node?, labels, ipv4: None, ipv6: None };
    for (path, item) in f.take(spec.list("ipNetworks")).unwrap_or_default() {
        match as_str(item).and_then(host_address) {
            Ok(ip) => wep.add_address(ip),
            Err(reason) => f.error(path, reason),
        }
    }
    f.errors.is_empty().then_some(wep)
}

/// Reads a Kubernetes Pod (name and namespace already checked): `None` inside
/// for a pod that is no workload endpoint of Calico's (host network, not
/// scheduled yet, finished).
pub(crate) fn parse_pod(
    namespace: &str,
    name: &str,
    mut labels: BTreeMap<String, String>,
    root: &Fields,
    f: &mut Findings,
) -> Option<Option<WorkloadEndpoint>> {
    let spec = f.take(root.child("spec"))?;
    let status = f.take(root.child("status"))?;
    let node = name_field(&spec, "nodeName", f);
    let host_network = f.opt(spec.bool("hostNetwork")).unwrap_or(false);
    let service_account = name_field(&spec, "serviceAccountName", f);
    let phase = f.opt(status.str("phase"));
    let mut addresses = Vec::new();
    for (path, item) in f.take(status.list("podIPs")).unwrap_or_default() {
        let Some(entry) = f.take(Fields::at(Some(item), &path)) else { continue };
        if let Some(ip) = f.opt(entry.parse_str("ip", parse_ip)) {
            addresses.push(ip);
        }
    }
    if addresses.is_empty() {
        addresses.extend(f.opt(status.parse_str("podIP", parse_ip)));
    }
    if !f.errors.is_empty() {
        return None;
    }
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    let Some(node) = node.filter(|_| !host_network && !finished) else { return Some(None) };
    labels.insert(NAMESPACE_LABEL.into(), namespace.to_string());
    labels.insert(ORCHESTRATOR_LABEL.into(), "k8s".into());
    if let Some(sa) = service_account {
        labels.insert(SERVICE_ACCOUNT_LABEL.into(), sa);
    }
    let mut wep = WorkloadEndpoint {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        node,
        labels,
        ipv4: None,
        ipv6: None,
    };
    for ip in addresses {
        wep.add_address(ip);
    }
    Some(Some(wep))
}

#[cfg(test)]
mod tests {
    use crate::datastore::{parse_sources, Severity, SourceText};

    fn load(text: &str) -> (crate::datastore::Model, Vec<crate::datastore::Problem>) {
        parse_sources(&[SourceText { path: "w.yaml".into(), text: text.into() }]).unwrap()
    }

    const WEP: &str = r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-router--0-eth0
  namespace: net
  labels: {app: router, projectcalico.org/namespace: net, projectcalico.org/orchestrator: k8s}
spec:
  node: n1
  orchestrator: k8s
  pod: router-0
  serviceAccountName: router
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks: [10.244.1.5/32, "fd10::5/128"]
"#;

    #[test]
    fn a_workload_endpoint_is_read_with_calicos_labels() {
        let (m, problems) = load(WEP);
        assert!(problems.is_empty(), "{problems:#?}");
        let w = &m.workload_endpoints["net/n1-k8s-router--0-eth0"];
        assert_eq!((w.pod.as_str(), w.node.as_str()), ("router-0", "n1"));
        assert_eq!(w.ipv4, Some("10.244.1.5".parse().unwrap()));
        assert_eq!(w.ipv6, Some("fd10::5".parse().unwrap()));
        assert_eq!(w.labels["projectcalico.org/serviceaccount"], "router");
        assert_eq!(w.labels["app"], "router");
    }

    #[test]
    fn a_bad_ip_network_is_an_error_naming_it_and_skips_only_that_endpoint() {
        let bad = WEP.replace("[10.244.1.5/32,", "[10.244.1.0/24,");
        let other = WEP.replace("n1-k8s-router--0-eth0", "n1-k8s-other-eth0");
        let (m, problems) = load(&format!("{bad}---{other}"));
        assert_eq!(m.workload_endpoints.keys().collect::<Vec<_>>(), ["net/n1-k8s-other-eth0"]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!((problems[0].severity, problems[0].field.as_str()), (Severity::Error, "spec.ipNetworks[0]"));
        let missing = WEP.replace("  node: n1\n", "");
        let (m, problems) = load(&missing);
        assert!(m.workload_endpoints.is_empty());
        assert_eq!(problems[0].field, "spec.node");
    }

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: vm-1
  namespace: virt
  labels: {kubevirt.io/vm: vm-1}
spec:
  nodeName: n1
  serviceAccountName: default
  containers: [{name: c, image: x}]
status:
  phase: Running
  podIP: 10.244.1.7
  podIPs: [{ip: 10.244.1.7}, {ip: "fd10::7"}]
"#;

    #[test]
    fn a_pod_is_a_workload_endpoint_with_calicos_three_labels() {
        let (m, problems) = load(POD);
        assert!(problems.is_empty(), "{problems:#?}");
        let w = &m.workload_endpoints["virt/vm-1"];
        assert_eq!((w.pod.as_str(), w.node.as_str()), ("vm-1", "n1"));
        assert_eq!((w.ipv4.unwrap().to_string(), w.ipv6.unwrap().to_string()), ("10.244.1.7".into(), "fd10::7".into()));
        let labels: Vec<(&str, &str)> = w.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("kubevirt.io/vm", "vm-1"),
                ("projectcalico.org/namespace", "virt"),
                ("projectcalico.org/orchestrator", "k8s"),
                ("projectcalico.org/serviceaccount", "default")
            ]
        );
        // Only podIP (an older API server): still read.
        let (m, _) = load(&POD.replace("  podIPs: [{ip: 10.244.1.7}, {ip: \"fd10::7\"}]\n", ""));
        assert_eq!(m.workload_endpoints["virt/vm-1"].ipv4, Some("10.244.1.7".parse().unwrap()));
    }

    #[test]
    fn host_network_finished_and_unscheduled_pods_are_skipped_quietly() {
        for (from, to) in [
            ("  nodeName: n1\n", "  nodeName: n1\n  hostNetwork: true\n"),
            ("phase: Running", "phase: Succeeded"),
            ("phase: Running", "phase: Failed"),
            ("  nodeName: n1\n", ""),
        ] {
            let (m, problems) = load(&POD.replace(from, to));
            assert!(m.workload_endpoints.is_empty(), "{to}");
            assert!(problems.is_empty(), "{problems:#?}");
        }
        let (m, problems) = load(&POD.replace("{ip: 10.244.1.7}", "{ip: 10.244.1}"));
        assert!(m.workload_endpoints.is_empty());
        assert_eq!(problems[0].field, "status.podIPs[0].ip");
    }

    #[test]
    fn workloads_on_a_node_are_those_of_that_node_only() {
        let other = POD.replace("name: vm-1", "name: vm-2").replace("nodeName: n1", "nodeName: n2");
        let (m, _) = load(&format!("{POD}---{other}"));
        let on = |n| m.workloads_on(n).map(|w| w.pod.as_str()).collect::<Vec<_>>();
        assert_eq!((on("n1"), on("n2"), on("n3")), (vec!["vm-1"], vec!["vm-2"], vec![]));
    }
}
