//! Kubernetes `v1` `Service`: the addresses a node may advertise for it (cluster IPs,
//! external IPs, LoadBalancer ingress IPs) and its `externalTrafficPolicy`. Only what
//! advertisement needs is read; the many other fields of a Service (ports, selector,
//! …) are not bgpd's business and pass without a warning.

use std::net::IpAddr;

use super::fields::{as_str, quoted, Fields, Findings};
use super::values::parse_ip;

/// A Service as advertisement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.type` (default ClusterIP).
    pub service_type: ServiceType,
    /// `spec.clusterIPs`, or `spec.clusterIP` alone; empty for a headless Service
    /// (`None`) or one without a cluster IP.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ipFamilies`, or the families of the cluster IPs when absent: which
    /// EndpointSlices (by `addressType`) belong to it.
    pub ip_families: Vec<IpFamily>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy` (default Cluster).
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.loadBalancerIP` (deprecated in Kubernetes, still honoured by Calico when
    /// matching single-address `serviceLoadBalancerIPs` entries).
    pub load_balancer_ip: Option<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (entries with only a hostname, or that
    /// are not addresses, are skipped).
    pub load_balancer_ingress: Vec<IpAddr>,
}

impl Service {
    /// `namespace/name`, the key in [`super::Model::services`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `spec.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// A cluster IP only (Kubernetes' default).
    #[default]
    ClusterIp,
    /// A cluster IP and a port on every node.
    NodePort,
    /// A NodePort Service with an external load balancer address.
    LoadBalancer,
    /// A DNS alias: no address, never advertised.
    ExternalName,
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any node forwards to any endpoint (Kubernetes' default).
    #[default]
    Cluster,
    /// Only nodes with an endpoint of the Service take its external traffic.
    Local,
}

/// An address family as Kubernetes spells it (`IPv4`, `IPv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    pub(crate) fn parse(s: &str) -> Result<IpFamily, String> {
        match s {
            "IPv4" => Ok(IpFamily::V4),
            "IPv6" => Ok(IpFamily::V6),
            _ => Err(format!("{} is not one of IPv4, IPv6", quoted(s))),
        }
    }
}

fn ip_list(spec: &Fields, key: &str, f: &mut Findings) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list(key)).unwrap_or_default() {
        match as_str(item).and_then(parse_ip) {
            Ok(ip) if !out.contains(&ip) => out.push(ip),
            Ok(_) => {}
            Err(reason) => f.error(path, reason),
        }
    }
    out
}

/// Reads a Service (name and namespace already checked by the caller).
pub(crate) fn parse(namespace: &str, name: &str, root: &Fields, f: &mut Findings) -> Option<Service> {
    let spec = f.take(root.child("spec"))?;
    let service_type = f
        .opt(spec.parse_str("type", |s| match s {
            "ClusterIP" => Ok(ServiceType::ClusterIp),
            "NodePort" => Ok(ServiceType::NodePort),
            "LoadBalancer" => Ok(ServiceType::LoadBalancer),
            "ExternalName" => Ok(ServiceType::ExternalName),
            _ => Err(format!("{} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName", quoted(s))),
        }))
        .unwrap_or_default();
    let cluster_ips = cluster_ips(&spec, f);
    let families_given = spec.has("ipFamilies");
    let mut ip_families = Vec::new();
    for (path, item) in f.take(spec.list("ipFamilies")).unwrap_or_default() {
        match as_str(item).and_then(IpFamily::parse) {
            Ok(fam) if !ip_families.contains(&fam) => ip_families.push(fam),
            Ok(_) => f.error(path, "listed twice"),
            Err(reason) => f.error(path, reason),
        }
    }
    if !families_given {
        ip_families = cluster_ips.iter().map(IpFamily::of).collect();
        ip_families.dedup();
    }
    let external_ips = ip_list(&spec, "externalIPs", f);
    let external_traffic_policy = f
        .opt(spec.parse_str("externalTrafficPolicy", |s| match s {
            "Cluster" => Ok(TrafficPolicy::Cluster),
            "Local" => Ok(TrafficPolicy::Local),
            _ => Err(format!("{} is not one of Cluster, Local", quoted(s))),
        }))
        .unwrap_or_default();
    let load_balancer_ip = f.opt(spec.parse_str("loadBalancerIP", parse_ip));
    let load_balancer_ingress = ingress(root, f);
    f.errors.is_empty().then(|| Service {
        namespace: namespace.to_string(),
        name: name.to_string(),
        service_type,
        cluster_ips,
        ip_families,
        external_ips,
        external_traffic_policy,
        load_balancer_ip,
        load_balancer_ingress,
    })
}

/// `clusterIPs`, else `clusterIP`; `None` (headless) gives no address. When both are
/// given, `clusterIPs[0]` must be `clusterIP`, as the API server enforces.
fn cluster_ips(spec: &Fields, f: &mut Findings) -> Vec<IpAddr> {
    let one = f.opt(spec.str("clusterIP"));
    let mut many = Vec::new();
    let mut headless = one == Some("None");
    for (path, item) in f.take(spec.list("clusterIPs")).unwrap_or_default() {
        match as_str(item) {
            Ok("None") => headless = true,
            Ok(s) => match parse_ip(s) {
                Ok(ip) if many.contains(&ip) => f.error(path, format!("{ip} is listed twice")),
                Ok(ip) => many.push(ip),
                Err(reason) => f.error(path, reason),
            },
            Err(reason) => f.error(path, reason),
        }
    }
    if headless {
        return Vec::new();
    }
    if many.len() == 2 && many[0].is_ipv4() == many[1].is_ipv4() {
        f.error(spec.path_of("clusterIPs"), "two cluster IPs must be one IPv4 and one IPv6 address");
    } else if many.len() > 2 {
        f.error(spec.path_of("clusterIPs"), "at most two cluster IPs (one per family)");
    }
    let one = match one.map(parse_ip) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(reason)) => {
            f.error(spec.path_of("clusterIP"), reason);
            return Vec::new();
        }
    };
    match (one, many.first()) {
        (Some(a), Some(b)) if a != *b => {
            f.error(spec.path_of("clusterIPs"), format!("the first entry must be clusterIP {a}, found {b}"));
            Vec::new()
        }
        (Some(a), None) => vec![a],
        _ => many,
    }
}

/// `status.loadBalancer.ingress[].ip`. The status is written by a controller,
/// not by the operator, and a fault in it says nothing about the spec: an entry
/// that is not an address (or a status of the wrong shape) is skipped with a
/// warning naming it, and the Service is kept, as Calico keeps it. An entry
/// with only a `hostname` (a cloud load balancer's DNS name) is skipped silently.
fn ingress(root: &Fields, f: &mut Findings) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let skip = |e: super::fields::FieldError, f: &mut Findings| f.warn(e.field, format!("{}; skipped", e.reason));
    let entries = root.child("status").and_then(|s| s.child("loadBalancer")).and_then(|lb| lb.list("ingress"));
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            skip(e, f);
            return out;
        }
    };
    for (path, item) in entries {
        match Fields::at(Some(item), &path).and_then(|entry| entry.parse_str("ip", parse_ip)) {
            Ok(Some(ip)) if !out.contains(&ip) => out.push(ip),
            Ok(_) => {}
            Err(e) => skip(e, f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::datastore::{parse_sources, Problem, Severity, SourceText};

    fn load(text: &str) -> (crate::datastore::Model, Vec<Problem>) {
        parse_sources(&[SourceText { path: "svc.yaml".into(), text: text.into() }]).unwrap()
    }

    /// A LoadBalancer Service as a cloud controller leaves it: an ingress entry
    /// with a host name (no address), one whose `ip` is not an address, one that
    /// is not a mapping, and a good one. Kubernetes' API server would not store
    /// the bad two; a file can hold them. The Service keeps its spec and the good
    /// address; each bad entry is a warning naming it.
    #[test]
    fn bad_status_entries_are_skipped_and_the_service_kept() {
        let (model, problems) = load(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
status:
  loadBalancer:
    ingress:
    - hostname: web.elb.example.com
    - ip: web.example.com
    - just-a-string
    - ip: 203.0.113.7
"#,
        );
        let svc = &model.services["shop/web"];
        assert_eq!(svc.cluster_ips, ["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(svc.load_balancer_ingress, ["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]);
        let warnings: Vec<String> =
            problems.iter().filter(|p| p.severity == Severity::Warning).map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{problems:#?}");
        assert!(warnings[0].starts_with("Service \"shop/web\": status.loadBalancer.ingress[1].ip: "), "{warnings:?}");
        assert!(warnings[0].contains("skipped"), "{warnings:?}");
        assert!(warnings[1].contains("status.loadBalancer.ingress[2]"), "{warnings:?}");
        assert!(problems.iter().all(|p| p.severity != Severity::Error), "{problems:#?}");
    }

    #[test]
    fn a_status_of_the_wrong_shape_is_ignored_with_a_warning() {
        for status in ["status: [1]", "status: {loadBalancer: 3}", "status: {loadBalancer: {ingress: {ip: 1.2.3.4}}}"] {
            let (model, problems) = load(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 10.96.0.10}}\n{status}\n"
            ));
            let svc = &model.services["default/web"];
            assert!(svc.load_balancer_ingress.is_empty(), "{status}");
            assert_eq!(problems.len(), 1, "{status}: {problems:#?}");
            assert_eq!(problems[0].severity, Severity::Warning, "{status}");
            assert!(problems[0].field.starts_with("status"), "{status}: {problems:#?}");
        }
    }

    #[test]
    fn a_bad_spec_still_drops_the_service() {
        let (model, problems) =
            load("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.300}\n");
        assert!(model.services.is_empty());
        assert_eq!(problems[0].severity, Severity::Error);
        assert_eq!(problems[0].field, "spec.clusterIP");
    }
}
