//! Kubernetes `discovery.k8s.io/v1` `EndpointSlice`: where the endpoints of a Service
//! run, which decides what a node advertises for a Service with
//! `externalTrafficPolicy: Local`.

use std::net::IpAddr;

use super::fields::{as_str, quoted, Fields, Findings};
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
        let Some(e) = f.take(Fields::at(Some(item), &path)) else { continue };
        let mut addresses = Vec::new();
        for (apath, a) in f.take(e.list("addresses")).unwrap_or_default() {
            let Some(s) = f.take(as_str(a).map_err(|r| super::fields::FieldError::new(apath.clone(), r))) else {
                continue;
            };
            let Some(fam) = address_type else { continue };
            match parse_ip(s) {
                Ok(ip) if IpFamily::of(&ip) == fam => addresses.push(ip),
                Ok(ip) => f.error(apath, format!("{ip} is not of the slice's addressType")),
                Err(reason) => f.error(apath, reason),
            }
        }
        let node_name = f.opt(e.parse_str("nodeName", |s| check_name(s).map(|()| s.to_string())));
        let conditions = f.take(e.child("conditions"));
        let ready = conditions.and_then(|c| f.opt(c.bool("ready"))).unwrap_or(true);
        endpoints.push(Endpoint { addresses, node_name, ready });
    }
    f.errors.is_empty().then(|| EndpointSlice {
        namespace: namespace.to_string(),
        name: name.to_string(),
        service,
        address_type,
        endpoints,
    })
}
