//! The ClusterRole and Role in `templates/kubernetes/bgpd.yaml` against the requests the datastore makes.
//!
//! The datastore runs against the API-server stand-in on a cluster that makes it
//! read everything it can (Calico's kinds with BFDConfiguration, a BGPConfiguration
//! that advertises Service addresses, a BGPPeer with a password Secret), once with
//! `crd.projectcalico.org/v1` and once with `projectcalico.org/v3`. Every request
//! the stand-in logged is mapped to what RBAC checks (verb, API group, resource,
//! and for Secrets the namespace and name) and must be granted; every grant must be
//! requested, or be listed here with what requests it, so the roles cannot grow
//! unnoticed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::json;

use super::api_server::ApiServer;
use super::{json as fixture, peer, running, secret, NODE_RR};

/// What RBAC checks of a request: verb, API group, resource, and the namespace
/// and object name where the request names them (a `metadata.name` field
/// selector names the object of a list or watch, as RBAC reads it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// `None` for discovery (`/api`, `/apis/GROUP/VERSION`), which every
/// authenticated client may read (the `system:discovery` ClusterRole).
fn access_of(request: &str) -> Option<Access> {
    let (method, target) = request.split_once(' ').unwrap_or(("GET", request));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let (namespace, resource, object) = match rest {
        [] => return None,
        ["namespaces", ns, plural, name @ ..] => (Some(ns.to_string()), *plural, name),
        [plural, name @ ..] => (None, *plural, name),
    };
    // A subresource (`NAME/status`) is its own resource to RBAC.
    let resource = match object {
        [_, sub] => format!("{resource}/{sub}"),
        _ => resource.to_string(),
    };
    let selected = query.split('&').find_map(|p| p.strip_prefix("fieldSelector=metadata.name=")).map(str::to_string);
    let watch = query.split('&').any(|p| p == "watch=true");
    let verb = match (method, object.first(), watch) {
        ("GET", _, true) => "watch",
        ("GET", None, false) => "list",
        ("GET", Some(_), false) => "get",
        ("POST", ..) => "create",
        ("PUT", ..) => "update",
        ("PATCH", ..) => "patch",
        ("DELETE", None, _) => "deletecollection",
        ("DELETE", Some(_), _) => "delete",
        (m, ..) => panic!("unexpected method {m} in {request}"),
    };
    let name = object.first().map(|n| n.to_string()).or(selected);
    Some(Access { verb: verb.into(), group: group.into(), resource, namespace, name })
}

/// One rule of a ClusterRole or Role, expanded: what it grants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    verb: String,
    group: String,
    resource: String,
    /// The Role's namespace; `None` for the ClusterRole (every namespace).
    namespace: Option<String>,
    /// `resourceNames`; empty: every name.
    names: Vec<String>,
}

impl Grant {
    fn allows(&self, a: &Access) -> bool {
        self.verb == a.verb
            && self.group == a.group
            && self.resource == a.resource
            && (self.namespace.is_none() || self.namespace == a.namespace)
            && (self.names.is_empty() || a.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// The rules of the ClusterRole `bgpd` and the Role `bgpd-secrets` of bgpd.yaml.
fn shipped_grants() -> Vec<Grant> {
    let text = include_str!("../../../../../../templates/kubernetes/bgpd.yaml");
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(text).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect();
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let mut grants = Vec::new();
    for (kind, name) in [("ClusterRole", "bgpd"), ("Role", "bgpd-secrets")] {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in bgpd.yaml"));
        let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
        for rule in doc["rules"].as_sequence().expect("rules") {
            for verb in strings(&rule["verbs"]) {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        assert!(![&verb, &group, &resource].contains(&&"*".to_string()), "a wildcard: {rule:?}");
                        let names = strings(&rule["resourceNames"]);
                        grants.push(Grant {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource,
                            namespace: namespace.clone(),
                            names,
                        });
                    }
                }
            }
        }
    }
    grants
}

/// The Secret the Role names (its first `resourceNames` entry).
fn granted_secret(grants: &[Grant]) -> String {
    grants.iter().find(|g| g.resource == "secrets").and_then(|g| g.names.first()).cloned().expect("a Secret by name")
}

/// Runs the datastore against a cluster serving Calico's kinds as `group_version`
/// until it watches every kind it reads (a Secret included); returns the
/// requests the stand-in logged.
async fn requests_of_a_full_datastore(group_version: &str, secret_name: &str) -> Vec<String> {
    let server = ApiServer::default();
    server.serve_calico(group_version);
    server.serve_resource(group_version, "bfdconfigurations", "BFDConfiguration");
    server.apply("/api/v1/nodes", fixture(NODE_RR));
    let mut bgp = peer("tor", Some(secret_name));
    bgp["apiVersion"] = json!(group_version);
    server.apply(&format!("/apis/{group_version}/bgppeers"), bgp);
    server.apply(
        &format!("/apis/{group_version}/bgpconfigurations"),
        json!({"apiVersion": group_version, "kind": "BGPConfiguration", "metadata": {"name": "default"},
               "spec": {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}}),
    );
    server.apply("/api/v1/namespaces/kube-system/secrets", secret(secret_name, "password", "s3cr3t"));
    let _running = running(&server).await;
    let watched = |requests: &[String], path: &str| {
        requests.iter().any(|r| r.starts_with(&format!("{path}?")) && r.contains("watch=true"))
    };
    let wanted = [
        "/api/v1/nodes".to_string(),
        "/api/v1/services".to_string(),
        "/apis/discovery.k8s.io/v1/endpointslices".to_string(),
        "/api/v1/namespaces/kube-system/secrets".to_string(),
        format!("/apis/{group_version}/bfdconfigurations"),
        format!("/apis/{group_version}/blockaffinities"),
    ];
    let all_watched = tokio::time::timeout(Duration::from_secs(10), async {
        while !wanted.iter().all(|w| watched(&server.requests(), w)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let requests = server.requests();
    all_watched.await.unwrap_or_else(|_| panic!("not every kind watched on {group_version}: {requests:#?}"));
    server.requests()
}

/// Issue 20, Done when: bgpd.yaml grants the daemon exactly what its datastore
/// requests, on either Calico API: every request is granted (Secrets only by
/// the name the Role lists, in bgpd's namespace), and every grant is requested
/// or listed with what requests it.
#[tokio::test]
async fn the_shipped_roles_grant_what_the_datastore_requests() {
    let grants = shipped_grants();
    let secret_name = granted_secret(&grants);
    let mut used: BTreeSet<Grant> = BTreeSet::new();
    for group_version in ["crd.projectcalico.org/v1", "projectcalico.org/v3"] {
        let requests = requests_of_a_full_datastore(group_version, &secret_name).await;
        for r in &requests {
            let Some(access) = access_of(r) else { continue };
            let grant = grants.iter().find(|g| g.allows(&access));
            let grant = grant.unwrap_or_else(|| panic!("{r} needs {access:?}, which bgpd.yaml does not grant"));
            used.insert(grant.clone());
        }
    }
    // Granted, and requested by what these runs do not start.
    let requested_elsewhere = |g: &Grant| -> Option<&'static str> {
        match (g.verb.as_str(), g.resource.as_str()) {
            // daemon::nodestatus reads this node's CalicoNodeStatus and writes
            // its status; the datastore does not.
            (_, "caliconodestatuses" | "caliconodestatuses/status") => Some("daemon::nodestatus"),
            _ => None,
        }
    };
    let unexplained: Vec<&Grant> =
        grants.iter().filter(|g| !used.contains(*g) && requested_elsewhere(g).is_none()).collect();
    assert!(unexplained.is_empty(), "granted but never requested: {unexplained:#?}");
    for g in grants.iter().filter(|g| requested_elsewhere(g).is_some()) {
        assert!(!used.contains(g), "{g:?} is requested by the datastore: take it off the list");
    }
}

#[test]
fn requests_map_to_what_rbac_checks() {
    let a = |verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>| Access {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
    };
    assert_eq!(access_of("/apis/crd.projectcalico.org/v1?"), None);
    assert_eq!(access_of("/api/v1/nodes?limit=500"), Some(a("list", "", "nodes", None, None)));
    assert_eq!(
        access_of("/api/v1/namespaces/kube-system/secrets?fieldSelector=metadata.name=p&watch=true"),
        Some(a("watch", "", "secrets", Some("kube-system"), Some("p")))
    );
    assert_eq!(access_of("/api/v1/namespaces/team?"), Some(a("get", "", "namespaces", None, Some("team"))));
    assert_eq!(
        access_of("PATCH /apis/crd.projectcalico.org/v1/caliconodestatuses/n1/status?"),
        Some(a("patch", "crd.projectcalico.org", "caliconodestatuses/status", None, Some("n1")))
    );
}
