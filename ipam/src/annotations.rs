//! Calico's pod and namespace annotations that steer IPAM.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// `cni.projectcalico.org/ipv4pools`: JSON list of pool names or CIDRs.
pub const IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
/// `cni.projectcalico.org/ipv6pools`: JSON list of pool names or CIDRs.
pub const IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
/// `cni.projectcalico.org/ipAddrs`: JSON list of addresses to assign.
pub const IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
/// `cni.projectcalico.org/floatingIPs`: JSON list of floating addresses.
pub const FLOATING_IPS: &str = "cni.projectcalico.org/floatingIPs";

/// An annotation that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {reason} (value {value:?})")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// IPAM choices taken from a pod's and its namespace's annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIpam {
    /// IPv4 pools (pod annotation, else namespace annotation).
    pub ipv4_pools: Option<Vec<String>>,
    /// IPv6 pools (pod annotation, else namespace annotation).
    pub ipv6_pools: Option<Vec<String>>,
    /// Specific addresses requested (pod annotation only).
    pub ip_addrs: Vec<IpAddr>,
    /// Floating IPs (pod annotation only).
    pub floating_ips: Vec<IpAddr>,
}

fn string_list(key: &'static str, anns: &BTreeMap<String, String>) -> Result<Option<Vec<String>>, AnnotationError> {
    let Some(v) = anns.get(key) else {
        return Ok(None);
    };
    serde_json::from_str::<Vec<String>>(v).map(Some).map_err(|e| AnnotationError {
        key,
        value: v.clone(),
        reason: format!("expected a JSON list of strings: {e}"),
    })
}

fn ip_list(key: &'static str, anns: &BTreeMap<String, String>) -> Result<Vec<IpAddr>, AnnotationError> {
    let Some(list) = string_list(key, anns)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|s| {
            s.trim().parse::<IpAddr>().map_err(|e| AnnotationError {
                key,
                value: anns.get(key).cloned().unwrap_or_default(),
                reason: format!("{s:?} is not an IP address: {e}"),
            })
        })
        .collect()
}

impl PodIpam {
    /// Reads the annotations; the pod's pool annotations override the namespace's.
    pub fn from_annotations(
        pod: &BTreeMap<String, String>,
        namespace: &BTreeMap<String, String>,
    ) -> Result<PodIpam, AnnotationError> {
        let ipv4_pools = match string_list(IPV4_POOLS, pod)? {
            Some(p) => Some(p),
            None => string_list(IPV4_POOLS, namespace)?,
        };
        let ipv6_pools = match string_list(IPV6_POOLS, pod)? {
            Some(p) => Some(p),
            None => string_list(IPV6_POOLS, namespace)?,
        };
        Ok(PodIpam {
            ipv4_pools,
            ipv6_pools,
            ip_addrs: ip_list(IP_ADDRS, pod)?,
            floating_ips: ip_list(FLOATING_IPS, pod)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn test_pod_overrides_namespace() {
        let pod = m(&[(IPV4_POOLS, r#"["a"]"#), (IP_ADDRS, r#"["10.0.0.5"]"#)]);
        let ns = m(&[(IPV4_POOLS, r#"["b"]"#), (IPV6_POOLS, r#"["v6"]"#)]);
        let p = PodIpam::from_annotations(&pod, &ns).unwrap();
        assert_eq!(p.ipv4_pools, Some(vec!["a".to_string()]));
        assert_eq!(p.ipv6_pools, Some(vec!["v6".to_string()]));
        assert_eq!(p.ip_addrs, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn test_bad_annotations_rejected() {
        for (k, v) in [(IPV4_POOLS, "a,b"), (IP_ADDRS, r#"["10.0.0.300"]"#), (FLOATING_IPS, "[1]")] {
            let err = PodIpam::from_annotations(&m(&[(k, v)]), &BTreeMap::new()).unwrap_err();
            assert_eq!(err.key, k);
        }
    }
}
