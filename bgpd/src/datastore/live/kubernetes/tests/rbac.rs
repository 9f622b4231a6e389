//! The ClusterRole and Role in `templates/kubernetes/bgpd.yaml` against the requests the datastore makes.
//!
//! The datastore runs against the API-server stand-in on a cluster that makes it
//! read everything it can (Calico's kinds with BFDConfiguration, a BGPConfiguration
//! that advertises Service addresses, a BGPPeer with a password Secret), once with
//! `crd.projectcalico.org/v1` and once with `projectcalico.org/v3`. Every request
//! the stand-in logged is mapped to what RBAC checks (verb, API group, resource,
//! and for Secrets the namespace and name: `testgate::rbac`) and must be granted; every grant must be
//! requested, or be listed here with what requests it, so the roles cannot grow
//! unnoticed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use testgate::rbac::{access_of, grants, Grant};

use super::api_server::ApiServer;
use super::{json as fixture, peer, running, secret, NODE_RR};

/// The rules of the ClusterRole `bgpd` and the Role `bgpd-secrets` of bgpd.yaml.
fn shipped_grants() -> Vec<Grant> {
    let text = include_str!("../../../../../../templates/kubernetes/bgpd.yaml");
    grants(text, &[("ClusterRole", "bgpd"), ("Role", "bgpd-secrets")])
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
    // A BGPPeer of local workloads: this node's Pods are read.
    server.apply(
        &format!("/apis/{group_version}/bgppeers"),
        json!({"apiVersion": group_version, "kind": "BGPPeer", "metadata": {"name": "routers"},
               "spec": {"localWorkloadSelector": "app == 'router'", "asNumber": 65300}}),
    );
    let _running = running(&server).await;
    let watched = |requests: &[String], path: &str| {
        requests.iter().any(|r| r.starts_with(&format!("{path}?")) && r.contains("watch=true"))
    };
    let wanted = [
        "/api/v1/nodes".to_string(),
        "/api/v1/services".to_string(),
        "/apis/discovery.k8s.io/v1/endpointslices".to_string(),
        "/api/v1/namespaces/kube-system/secrets".to_string(),
        "/api/v1/pods".to_string(),
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
