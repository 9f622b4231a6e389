//! What Kubernetes RBAC checks of a request to the API server, and what the
//! roles of a manifest grant: for the tests that hold a shipped ClusterRole
//! or Role to the requests a component makes (least privilege), reading the
//! requests the API-server stand-in logs (`METHOD PATH?QUERY`, or `PATH?QUERY`
//! for a GET).

use serde::Deserialize as _;

/// What RBAC checks of a request: verb, API group, resource (a subresource
/// as `plural/sub`), and the namespace and object name where the request
/// names them (a `metadata.name` field selector names the object of a list
/// or watch, as RBAC reads it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The access a logged request needs; `None` for discovery (`/api`,
/// `/apis/GROUP/VERSION`), which every authenticated client may read (the
/// `system:discovery` ClusterRole). Panics on a method RBAC has no verb for.
pub fn access_of(request: &str) -> Option<Access> {
    let (method, target) = request.split_once(' ').unwrap_or(("GET", request));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return None,
    };
    // Namespaced: namespaces/NS/PLURAL[/NAME]; else PLURAL[/NAME] (a
    // Namespace itself is namespaces/NAME).
    let (namespace, resource, object) = match rest {
        [] => return None,
        ["namespaces", ns, plural, name @ ..] => (Some(ns.to_string()), *plural, name),
        [plural, name @ ..] => (None, *plural, name),
    };
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

/// One rule of a ClusterRole or Role, expanded to one verb, group and resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub verb: String,
    pub group: String,
    pub resource: String,
    /// The Role's namespace; `None` for a ClusterRole (every namespace).
    pub namespace: Option<String>,
    /// `resourceNames`; empty: every name.
    pub names: Vec<String>,
}

impl Grant {
    /// Whether this grant allows `a`.
    pub fn allows(&self, a: &Access) -> bool {
        self.verb == a.verb
            && self.group == a.group
            && self.resource == a.resource
            && (self.namespace.is_none() || self.namespace == a.namespace)
            && (self.names.is_empty() || a.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// What the roles `roles` ((kind, name): `ClusterRole` or `Role`) of the
/// multi-document YAML `manifest` grant. Panics when a role is missing or a
/// rule uses a wildcard (a least-privilege role names what it grants).
pub fn grants(manifest: &str, roles: &[(&str, &str)]) -> Vec<Grant> {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(manifest).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect();
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let mut grants = Vec::new();
    for (kind, name) in roles {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == *kind && d["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"));
        let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
        for rule in doc["rules"].as_sequence().expect("rules") {
            for verb in strings(&rule["verbs"]) {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        assert!(![&verb, &group, &resource].contains(&&"*".to_string()), "a wildcard: {rule:?}");
                        let names = strings(&rule["resourceNames"]);
                        let namespace = namespace.clone();
                        grants.push(Grant { verb: verb.clone(), group: group.clone(), resource, namespace, names });
                    }
                }
            }
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(verb: &str, group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> Access {
        let s = |s: Option<&str>| s.map(str::to_string);
        Access {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: s(namespace),
            name: s(name),
        }
    }

    #[test]
    fn requests_read_as_rbac_reads_them() {
        assert_eq!(access_of("/api/v1"), None);
        assert_eq!(access_of("/apis/crd.projectcalico.org/v1"), None);
        assert_eq!(access_of("/api/v1/nodes?limit=500"), Some(a("list", "", "nodes", None, None)));
        assert_eq!(access_of("/api/v1/nodes?watch=true&resourceVersion=5"), Some(a("watch", "", "nodes", None, None)));
        assert_eq!(access_of("/api/v1/namespaces/team?"), Some(a("get", "", "namespaces", None, Some("team"))));
        assert_eq!(
            access_of("/api/v1/namespaces/kube-system/secrets?fieldSelector=metadata.name=bgp&watch=true"),
            Some(a("watch", "", "secrets", Some("kube-system"), Some("bgp")))
        );
        assert_eq!(
            access_of("PATCH /apis/projectcalico.org/v3/caliconodestatuses/n1/status"),
            Some(a("patch", "projectcalico.org", "caliconodestatuses/status", None, Some("n1")))
        );
        assert_eq!(
            access_of("DELETE /apis/crd.projectcalico.org/v1/ipamblocks/b1"),
            Some(a("delete", "crd.projectcalico.org", "ipamblocks", None, Some("b1")))
        );
    }

    #[test]
    fn roles_expand_to_grants_that_allow_only_what_they_name() {
        let manifest = "kind: ClusterRole\nmetadata: {name: c}\nrules:\n- apiGroups: [\"\"]\n  resources: [nodes]\n  \
                        verbs: [list, watch]\n---\nkind: Role\nmetadata: {name: r, namespace: kube-system}\nrules:\n\
                        - apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [bgp]\n  verbs: [watch]\n";
        let g = grants(manifest, &[("ClusterRole", "c"), ("Role", "r")]);
        assert_eq!(g.len(), 3);
        let allowed = |x: &Access| g.iter().any(|g| g.allows(x));
        assert!(allowed(&a("list", "", "nodes", None, None)));
        assert!(!allowed(&a("get", "", "nodes", None, Some("n1"))));
        assert!(allowed(&a("watch", "", "secrets", Some("kube-system"), Some("bgp"))));
        assert!(!allowed(&a("watch", "", "secrets", Some("kube-system"), None)), "no name");
        assert!(!allowed(&a("watch", "", "secrets", Some("default"), Some("bgp"))), "another namespace");
    }
}
