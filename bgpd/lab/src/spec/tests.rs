use super::*;

const SMALL: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65101, nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 10.0.1.11/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-2}
spec: {bgp: {ipv4Address: 10.0.1.12/24, asNumber: 65102}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, clusterIP: 10.96.0.10}
status: {loadBalancer: {ingress: [{ip: 192.0.2.10}]}}
---
apiVersion: bgpd.io/v1
kind: Lab
metadata: {name: t}
spec:
  podsPerNode: 2
  routers:
    - {name: tor, asNumber: 65001}
  segments:
    - name: rack1
      members: [{name: tor, address: 10.0.1.1/24}, {name: node-1}, {name: node-2}]
  services:
    - name: web
      endpoints: [{node: node-2}]
"#;

#[test]
fn derives_members_sessions_and_services() {
    let t = Topology::parse(SMALL).unwrap();
    assert_eq!(t.name, "t");
    assert_eq!(t.nodes().count(), 2);
    let tor = &t.members["tor"];
    assert!(matches!(tor.role, Role::Router { router_id, .. } if router_id == Ipv4Addr::new(10, 0, 1, 1)));
    let sessions = t.router_sessions(tor);
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].peer_as, 65101, "node-1 takes the cluster's default AS");
    assert_eq!(sessions[1].peer_as, 65102, "node-2 sets its own");
    assert_eq!(sessions[1].neighbor, IpAddr::V4(Ipv4Addr::new(10, 0, 1, 12)));
    assert_eq!(t.pods(&t.members["node-1"]), ["node-1-p1", "node-1-p2"]);
    assert_eq!(t.services[0].addresses, [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))]);
    assert_eq!(t.services[0].endpoints, [("node-2".to_string(), true)]);
    assert_eq!(t.clusters.len(), 1);
    assert!(!t.clusters[DEFAULT_CLUSTER].contains("kind: Lab"));
    assert_eq!(t.owner_of(Ipv4Addr::new(10, 0, 1, 12).into()).map(|m| m.name.as_str()), Some("node-2"));
    assert!(!t.dual_stack());
}

/// The resources as `calicoctl apply` takes them: the two Nodes as one
/// document holding a YAML sequence, and a label written `yes`, which the
/// nodes' datastore must still read as Calico reads it (`"true"`).
#[test]
fn a_list_of_resources_and_yaml11_words_reach_the_datastore_as_written() {
    let nodes = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-1}\nspec: {bgp: {ipv4Address: 10.0.1.11/24}}\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-2}\nspec: {bgp: {ipv4Address: 10.0.1.12/24, asNumber: 65102}}\n";
    let listed = "- apiVersion: projectcalico.org/v3\n  kind: Node\n  metadata: {name: node-1, labels: {rr: yes}}\n  spec: {bgp: {ipv4Address: 10.0.1.11/24}}\n- apiVersion: projectcalico.org/v3\n  kind: Node\n  metadata: {name: node-2}\n  spec: {bgp: {ipv4Address: 10.0.1.12/24, asNumber: 65102}}\n";
    assert!(SMALL.contains(nodes));
    let text = SMALL.replace(nodes, listed);
    let t = Topology::parse(&text).unwrap();
    assert_eq!(t.nodes().count(), 2);
    let source = bgpd::datastore::SourceText { path: "cluster.yaml".into(), text: t.clusters[DEFAULT_CLUSTER].clone() };
    let (model, _) = bgpd::datastore::parse_sources(&[source]).unwrap();
    assert_eq!(model.nodes["node-1"].labels.get("rr").map(String::as_str), Some("true"));
}

#[test]
fn clusters_split_by_annotation() {
    let text = SMALL
        .replace("metadata: {name: node-2}", "metadata: {name: node-2, annotations: {lab.bgpd.io/cluster: b}}")
        .replace("metadata: {name: node-1}", "metadata: {name: node-1, annotations: {lab.bgpd.io/cluster: a}}");
    let t = Topology::parse(&text).unwrap();
    assert_eq!(t.clusters.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(t.clusters["a"].contains("node-1") && !t.clusters["a"].contains("node-2"));
    assert!(t.clusters["a"].contains("BGPConfiguration"), "unannotated resources go to every cluster");
}

#[test]
fn errors_name_what_is_wrong() {
    let cases = [
        (SMALL.replace("kind: Lab", "kind: Lob"), "no `apiVersion: bgpd.io/v1` `kind: Lab`"),
        (SMALL.replace("{name: node-2}]", "{name: node-9}]"), "\"node-9\" is not a Node"),
        (
            SMALL.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster"),
            "needs externalTrafficPolicy: Local",
        ),
        (SMALL.replace("10.0.1.12/24, asNumber", "10.0.1.11/24, asNumber"), "already node-1's"),
        (SMALL.replace("podsPerNode: 2", "podsPerNode: 2\n  bogus: 1"), "unknown field `bogus`"),
        (SMALL.replace("{node: node-2}", "{node: tor}"), "endpoint node \"tor\" is not a Node"),
        (SMALL.replace("name: rack1", "name: a-very-long-segment"), "at most 12"),
        // Read by bgpd's own loader: a Node it would skip is the template's error,
        // named as bgpd names it.
        (
            SMALL.replace("ipv4Address: 10.0.1.12/24", "ipv4Address: 10.0.1.300/24"),
            "Node \"node-2\": spec.bgp.ipv4Address",
        ),
    ];
    for (text, want) in cases {
        let e = Topology::parse(&text).unwrap_err();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
}

#[test]
fn a_cluster_name_that_is_a_path_is_refused() {
    for bad in ["../../etc", "a/b", "..", "/tmp/x"] {
        let text = SMALL.replace(
            "metadata: {name: node-1}",
            &format!("metadata: {{name: node-1, annotations: {{lab.bgpd.io/cluster: '{bad}'}}}}"),
        );
        let err = Topology::parse(&text).map(|_| ()).expect_err(bad);
        assert!(err.contains("a cluster name is lowercase letters"), "{bad}: {err}");
    }
}
