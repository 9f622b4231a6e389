//! Kubernetes `discovery.k8s.io/v1` `EndpointSlice`: where the endpoints of a Service
//! run, which decides what a node advertises for a Service with
//! `externalTrafficPolicy: Local`.

use std::net::IpAddr;

use serde_yaml::Value;

use super::fields::{as_str, quoted, FieldError, Fields, Findings};
use super::service::IpFamily;
use super::values::{check_name, parse_ip};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An EndpointSlice as advertisement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The `kubernetes.io/service-name` label: the Service (same namespace) the
    /// slice belongs to; `None` for a slice of no Service (warned, never used).
    pub service: Option<String>,
    /// `addressType`: `IPv4`, `IPv6`, or `None` for `FQDN` (never used for routing).
    pub address_type: Option<IpFamily>,
    /// `endpoints[]`.
    pub endpoints: Vec<Endpoint>,
}

/// One entry of `endpoints`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses` (IP addresses of the slice's `addressType`; empty for FQDN).
    pub addresses: Vec<IpAddr>,
    /// `nodeName`: the node hosting the endpoint, if known.
    pub node_name: Option<String>,
    /// `conditions.ready`; absent means ready ("unknown state … interpreted as
    /// ready", as the Kubernetes API documents it).
    pub ready: bool,
}

impl EndpointSlice {
    /// `namespace/name`, the key in [`super::Model::endpoint_slices`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Reads an EndpointSlice (name and namespace already checked by the caller).
pub(crate) fn parse(
    namespace: &str,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    root: &Fields,
    f: &mut Findings,
) -> Option<EndpointSlice> {
    let service = labels.get(SERVICE_NAME_LABEL).cloned();
    match &service {
        None => f.warn(
            format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
            "missing: the slice belongs to no Service and is not used",
        ),
        Some(s) => {
            if let Err(reason) = check_name(s) {
                f.error(format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"), reason);
            }
        }
    }
    let address_type = match f.opt(root.str("addressType")) {
        None => {
            f.error("addressType", "missing (IPv4, IPv6 or FQDN)");
            None
        }
        Some("FQDN") => None,
        Some(s) => match IpFamily::parse(s) {
            Ok(fam) => Some(fam),
            Err(_) => {
                f.error("addressType", format!("{} is not one of IPv4, IPv6, FQDN", quoted(s)));
                None
            }
        },
    };
    let mut endpoints = Vec::new();
    for (path, item) in f.take(root.list("endpoints")).unwrap_or_default() {
        // Kubernetes validates each endpoint; one it would not store cannot be
        // trusted to say where a ready endpoint runs, so it is skipped and the
        // slice's other endpoints are kept.
        match endpoint(&path, item, address_type) {
            Ok(Some(e)) => endpoints.push(e),
            Ok(None) => {}
            Err(e) => f.warn(e.field, format!("{}; the endpoint is skipped", e.reason)),
        }
    }
    f.errors.is_empty().then(|| EndpointSlice {
        namespace: namespace.to_string(),
        name: name.to_string(),
        service,
        address_type,
        endpoints,
    })
}

/// One entry of `endpoints` at `path`; `None` when the slice's `addressType`
/// is unknown (its other faults are errors of the slice).
fn endpoint(path: &str, item: &Value, address_type: Option<IpFamily>) -> Result<Option<Endpoint>, FieldError> {
    let e = Fields::at(Some(item), path)?;
    let mut addresses = Vec::new();
    for (apath, a) in e.list("addresses")? {
        let s = as_str(a).map_err(|r| FieldError::new(apath.clone(), r))?;
        let Some(fam) = address_type else { return Ok(None) };
        match parse_ip(s) {
            Ok(ip) if IpFamily::of(&ip) == fam => addresses.push(ip),
            Ok(ip) => return Err(FieldError::new(apath, format!("{ip} is not of the slice's addressType"))),
            Err(reason) => return Err(FieldError::new(apath, reason)),
        }
    }
    let node_name = e.parse_str("nodeName", |s| check_name(s).map(|()| s.to_string()))?;
    let ready = e.child("conditions")?.bool("ready")?.unwrap_or(true);
    Ok(Some(Endpoint { addresses, node_name, ready }))
}

#[cfg(test)]
mod tests {
    use crate::datastore::{parse_sources, Severity, SourceText};

    /// An EndpointSlice with one good endpoint and three that Kubernetes would
    /// not store (not a mapping, an address of the other family, `ready` not a
    /// boolean): the slice is kept with the good endpoint, and each bad one is a
    /// warning naming it.
    #[test]
    fn malformed_endpoints_are_skipped_and_the_slice_kept() {
        let text = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  nodeName: node-1
  conditions: {ready: true}
- nope
- addresses: ["fd00::5"]
  nodeName: node-2
- addresses: [10.244.3.5]
  nodeName: node-3
  conditions: {ready: maybe}
"#;
        let (model, problems) = parse_sources(&[SourceText { path: "eps.yaml".into(), text: text.into() }]).unwrap();
        let slice = &model.endpoint_slices["shop/web-abc12"];
        let nodes: Vec<Option<&str>> = slice.endpoints.iter().map(|e| e.node_name.as_deref()).collect();
        assert_eq!(nodes, [Some("node-1")]);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["endpoints[1]", "endpoints[2].addresses[0]", "endpoints[3].conditions.ready"]);
        assert!(
            problems.iter().all(|p| p.severity == Severity::Warning && p.reason.contains("skipped")),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_slice_without_an_address_type_is_still_dropped() {
        let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\nendpoints: []\n";
        let (model, problems) = parse_sources(&[SourceText { path: "eps.yaml".into(), text: text.into() }]).unwrap();
        assert!(model.endpoint_slices.is_empty());
        assert_eq!((problems[0].severity, problems[0].field.as_str()), (Severity::Error, "addressType"));
    }
}
