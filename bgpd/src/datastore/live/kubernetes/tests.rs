//! Conversion of API objects to the model, and the watcher bookkeeping. The
//! fixtures in `fixtures/` are written in the shape `kubectl get -o json` prints
//! (a core Node with Calico's Kubernetes-datastore annotations, CRD objects with
//! `crd.projectcalico.org/v1`, a list item without apiVersion/kind); they are not
//! captured from a cluster (none runs here).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::Value;

use super::convert::{convert, Converted, FLOATING_IPS_ANNOTATION};
use super::follow::Failure;
use super::kinds::{CalicoApi, Discovered, Probe};
use super::*;
use crate::datastore::{parse_sources, Affinity, AsNumber, Md5Key, Model, PeerScope, Problem, Severity, SourceText};

const NODE_RR: &str = include_str!("fixtures/node-rr.json");
const NODE_PLAIN: &str = include_str!("fixtures/node-plain.json");
const BGP_PEER: &str = include_str!("fixtures/bgppeer.json");
const BGP_CONFIGURATION: &str = include_str!("fixtures/bgpconfiguration.json");
const SECRET_JSON: &str = include_str!("fixtures/secret.json");
const IPAM_BLOCK: &str = include_str!("fixtures/ipamblock.json");
const BFD_CONFIGURATION: &str = include_str!("fixtures/bfdconfiguration.json");

/// The kinds watched on a cluster with `crd.projectcalico.org/v1`.
fn v1_kinds() -> Vec<Watched> {
    kinds::watched(CalicoApi::CrdV1)
}

fn watched(plural: &str) -> Watched {
    if plural == "secrets" {
        return SECRET;
    }
    v1_kinds().into_iter().find(|w| w.plural == plural).expect("a watched kind")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// Converts (plural, API JSON) pairs and loads them as the daemon would.
fn load(objects: &[(&str, &str)]) -> (Model, Vec<Problem>) {
    let sources: Vec<SourceText> = objects
        .iter()
        .map(|(plural, text)| {
            let c = convert(&watched(plural), &json(text)).expect("named object");
            SourceText { path: c.key.into(), text: c.object.to_string() }
        })
        .collect();
    parse_sources(&sources).expect("converted objects are valid YAML")
}

fn errors(problems: &[Problem]) -> Vec<String> {
    problems.iter().filter(|p| p.severity >= Severity::Warning).map(ToString::to_string).collect()
}

#[test]
fn a_core_node_with_calico_annotations_is_a_bgp_node() {
    let (model, problems) = load(&[("nodes", NODE_RR)]);
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    let node = &model.nodes["rr-1"];
    assert_eq!(node.labels.get("route-reflector").map(String::as_str), Some("true"));
    assert_eq!(node.labels.get("rack").map(String::as_str), Some("r1"));
    let bgp = node.bgp.as_ref().expect("spec.bgp from the annotations");
    assert_eq!(bgp.ipv4_address, Some("10.0.0.11/24".parse().unwrap()));
    assert_eq!(bgp.as_number.map(AsNumber::get), Some(64600));
    assert_eq!(bgp.route_reflector_cluster_id, Some(Ipv4Addr::new(244, 0, 0, 1)));
    assert_eq!(bgp.ipv6_address, None);
}

#[test]
fn a_core_node_without_address_annotations_does_not_run_bgp() {
    let (model, problems) = load(&[("nodes", NODE_PLAIN)]);
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    let node = &model.nodes["worker-9"];
    assert!(node.bgp.is_none());
    assert_eq!(node.labels.get("kubernetes.io/hostname").map(String::as_str), Some("worker-9"));
}

#[test]
fn crd_objects_and_a_secret_list_item_make_the_model() {
    let (model, problems) = load(&[
        ("nodes", NODE_RR),
        ("nodes", NODE_PLAIN),
        ("secrets", SECRET_JSON),
        ("bgpconfigurations", BGP_CONFIGURATION),
        ("bgppeers", BGP_PEER),
        ("ipamblocks", IPAM_BLOCK),
    ]);
    let bad: Vec<String> = problems.iter().filter(|p| p.severity == Severity::Error).map(ToString::to_string).collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(model.bgp_configuration.as_number.get(), 64600);
    assert!(!model.bgp_configuration.node_to_node_mesh_enabled);
    let peer = &model.peers["to-rr"];
    assert!(matches!(peer.scope, PeerScope::NodeSelector(_)));
    assert_eq!(peer.password, Some(Md5Key::new(b"s3cr3t".to_vec()).unwrap()), "the Secret's data resolved");
    let blocks: Vec<_> = model.blocks_for_node("worker-9").into_iter().map(|b| b.cidr.to_string()).collect();
    assert_eq!(blocks, ["10.244.8.0/26"]);
    assert_eq!(model.ipam_blocks["10-244-8-0-26"].affinity, Some(Affinity::Host("worker-9".into())));
    // The peer selects the route reflector by its label, and applies to the worker.
    assert_eq!(model.peers_for_node("worker-9").len(), 1);
    assert!(model.peers_for_node("rr-1").is_empty());
}

#[test]
fn a_bfd_configuration_crd_object_selects_nodes_and_timers() {
    let (model, problems) = load(&[("bfdconfigurations", BFD_CONFIGURATION)]);
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    let bfd = &model.bfd_configurations["tor-links"];
    assert_eq!(bfd.interfaces.len(), 1);
    let eth = &bfd.interfaces[0];
    assert!(eth.matches(Some("eth0")) && !eth.matches(Some("vxlan.calico")));
    assert_eq!(eth.minimum_recv_interval, std::time::Duration::from_millis(300));
    assert_eq!(eth.idle_send_interval, std::time::Duration::from_secs(1));
    assert_eq!(eth.multiplier, 3);
}

#[test]
fn bookkeeping_metadata_is_dropped_and_kind_filled_in() {
    let Converted { key, object: v, note } = convert(&watched("secrets"), &json(SECRET_JSON)).unwrap();
    assert_eq!(key, "kubernetes:secrets/calico-system/bgp-secrets");
    assert_eq!(note, None);
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["metadata"], serde_json::json!({"name": "bgp-secrets", "namespace": "calico-system"}));
    assert_eq!(v["data"]["rr-password"], "czNjcjN0");
    let c = convert(&watched("bgppeers"), &json(BGP_PEER)).unwrap();
    assert_eq!(c.key, "kubernetes:bgppeers/to-rr");
    // Its only annotation is Calico's metadata, which holds no labels or annotations.
    assert!(c.object["metadata"].get("annotations").is_none(), "{}", c.object);
    assert!(c.object["metadata"].get("resourceVersion").is_none() && c.object["metadata"].get("uid").is_none());
    assert!(convert(&watched("bgppeers"), &serde_json::json!({"metadata": {}})).is_none());
}

#[test]
fn unusable_calico_metadata_annotations_are_noted_and_the_object_kept() {
    let mut p = json(BGP_PEER);
    p["metadata"]["annotations"]["projectcalico.org/metadata"] = "{not json".into();
    p["metadata"]["annotations"]["bgpd.io/mrai"] = "3".into();
    let c = convert(&watched("bgppeers"), &p).unwrap();
    assert_eq!(c.object["metadata"]["annotations"], serde_json::json!({"bgpd.io/mrai": "3"}));
    let note = c.note.expect("a note");
    assert!(note.contains("bgppeers/to-rr") && note.contains("projectcalico.org/metadata"), "{note}");
    let mut n = json(NODE_RR);
    n["metadata"]["annotations"]["projectcalico.org/labels"] = "[1]".into();
    let c = convert(&watched("nodes"), &n).unwrap();
    assert_eq!(c.object["metadata"]["labels"]["rack"], "r1", "the Kubernetes labels stay");
    assert!(c.note.is_some_and(|n| n.contains("projectcalico.org/labels")));
}

#[test]
fn calicos_kinds_from_v3_are_handed_over_in_their_crd_form() {
    let v3 = kinds::watched(CalicoApi::V3);
    let blocks = v3.iter().find(|w| w.plural == "ipamblocks").unwrap();
    assert_eq!(blocks.api_version(), "projectcalico.org/v3");
    let mut b = json(IPAM_BLOCK);
    b["apiVersion"] = "projectcalico.org/v3".into();
    let c = convert(blocks, &b).unwrap();
    assert_eq!(c.object["apiVersion"], "crd.projectcalico.org/v1");
    let (model, problems) = parse_sources(&[SourceText { path: c.key.into(), text: c.object.to_string() }]).unwrap();
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    assert_eq!(model.ipam_blocks.len(), 1);
}

fn dynamic(text: &str) -> DynamicObject {
    serde_json::from_str(text).expect("fixture is a Kubernetes object")
}

fn listed(texts: &[&str]) -> Update {
    Update::Listed(texts.iter().map(|t| dynamic(t)).collect())
}

fn failure(code: Option<u16>) -> Update {
    Update::Failed(Failure { code, message: format!("status {code:?}") })
}

fn state_keys(k: &Store) -> Vec<String> {
    match k.view() {
        View::Ready { sources, .. } => sources.iter().map(|s| s.path.display().to_string()).collect(),
        View::Waiting(_) => panic!("not complete"),
    }
}

#[test]
fn a_kind_is_complete_after_its_first_list_and_tracks_changes() {
    let nodes = [watched("nodes")];
    let mut store = Store::new(&nodes, "kube-system");
    let node = Slot::Kind(0);
    assert!(!store.complete());
    assert!(store.update(&node, listed(&[NODE_RR])));
    assert!(store.complete());
    // A status-only update of the Node converts to the same text: no change.
    let mut v = json(NODE_RR);
    v["status"]["nodeInfo"]["kubeletVersion"] = "v1.33.2".into();
    v["metadata"]["resourceVersion"] = "482999".into();
    assert!(!store.update(&node, Update::Applied(serde_json::from_value(v.clone()).unwrap())));
    v["metadata"]["labels"]["rack"] = "r2".into();
    assert!(store.update(&node, Update::Applied(serde_json::from_value(v).unwrap())), "a label change is a change");
    assert!(store.update(&node, Update::Applied(dynamic(NODE_PLAIN))));
    assert!(store.update(&node, Update::Deleted(dynamic(NODE_RR))));
    assert!(!store.update(&node, Update::Deleted(dynamic(NODE_RR))), "deleting what is gone changes nothing");
    assert_eq!(state_keys(&store), ["kubernetes:nodes/worker-9"]);
    // A list replaces everything.
    assert!(store.update(&node, listed(&[NODE_RR])));
    assert_eq!(state_keys(&store), ["kubernetes:nodes/rr-1"]);
    assert!(!store.update(&node, listed(&[NODE_RR])), "the same list again");
}

#[test]
fn every_failure_keeps_the_objects_and_a_list_or_a_watch_clears_it() {
    let kinds = [watched("ipamblocks"), watched("bgpfilters")];
    let mut store = Store::new(&kinds, "kube-system");
    let blocks = Slot::Kind(0);
    store.update(&Slot::Kind(1), listed(&[]));
    // Before the first list, a 404 is an error (never "no objects").
    assert!(!store.update(&blocks, failure(Some(404))));
    assert!(matches!(store.view(), View::Waiting(Some(e)) if e.contains("ipamblocks")));
    store.update(&blocks, listed(&[IPAM_BLOCK]));
    assert_eq!(store.error(), None);
    for code in [Some(404), Some(500), Some(403), None] {
        assert!(!store.update(&blocks, failure(code)), "{code:?}");
        let View::Ready { sources, error, .. } = store.view() else { panic!("{code:?}: complete") };
        assert_eq!(sources.len(), 1, "{code:?}: the block stays");
        assert!(error.is_some_and(|e| e.contains("ipamblocks") && e.contains("keeping the 1 objects")), "{code:?}");
        // The watch established again clears it, with no event.
        assert!(!store.update(&blocks, Update::Watching));
        assert_eq!(store.error(), None, "{code:?}");
    }
}

#[test]
fn a_403_on_the_optional_kind_or_a_secret_means_none_with_a_note() {
    let kinds = [watched("bfdconfigurations")];
    let mut store = Store::new(&kinds, "kube-system");
    assert!(store.update(&Slot::Kind(0), failure(Some(403))));
    let View::Ready { sources, notes, error } = store.view() else { panic!("complete") };
    assert!(sources.is_empty() && error.is_none());
    assert!(notes.iter().any(|n| n.contains("bfdconfigurations")), "{notes:?}");
    // A Secret the Role does not grant.
    let (new, gone) = store.sync_secrets(&BTreeSet::from(["bgp-pw".to_string()]));
    assert_eq!((new.len(), gone.len()), (1, 0));
    assert!(!store.complete(), "a new Secret is waited for");
    store.update(&Slot::Secret("bgp-pw".into()), failure(Some(403)));
    let View::Ready { notes, error: None, .. } = store.view() else { panic!("complete, no error") };
    assert!(notes.iter().any(|n| n.contains("kube-system/bgp-pw") && n.contains("resourceNames")), "{notes:?}");
    let (_, gone) = store.sync_secrets(&BTreeSet::new());
    assert_eq!(gone, ["bgp-pw"]);
    assert!(!store.update(&Slot::Secret("bgp-pw".into()), listed(&[SECRET_JSON])), "a stopped watch is ignored");
}

#[test]
fn discovery_prefers_the_crds_and_never_takes_absence_for_no_objects() {
    let all: BTreeSet<String> = kinds::CALICO.iter().map(|(_, p, _)| p.to_string()).collect();
    let without = |plural: &str| -> BTreeSet<String> { all.iter().filter(|p| *p != plural).cloned().collect() };
    let v1 = |p: Probe| (CalicoApi::CrdV1, p);
    let v3 = |p: Probe| (CalicoApi::V3, p);
    assert_eq!(
        kinds::choose(&[v1(Probe::Served(all.clone()))]),
        Ok(Discovered { api: CalicoApi::CrdV1, missing_optional: BTreeSet::new() })
    );
    let d = kinds::choose(&[v1(Probe::Absent), v3(Probe::Served(without("bfdconfigurations")))]).unwrap();
    assert_eq!(d.api, CalicoApi::V3);
    assert_eq!(d.missing_optional, BTreeSet::from(["bfdconfigurations"]));
    let e = kinds::choose(&[v1(Probe::Absent), v3(Probe::Absent)]).unwrap_err();
    assert!(e.contains("crd.projectcalico.org/v1 and projectcalico.org/v3"), "{e}");
    let e = kinds::choose(&[v1(Probe::Served(without("bgppeers")))]).unwrap_err();
    assert!(e.contains("without bgppeers"), "{e}");
    let e = kinds::choose(&[v1(Probe::Failed("503".into())), v3(Probe::Served(all))]).unwrap_err();
    assert!(e.contains("crd.projectcalico.org/v1: 503"), "a failed probe of the preferred group is an error: {e}");
}

#[tokio::test]
async fn published_content_waits_for_every_kind_and_keeps_the_last_good_on_errors() {
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let out = Publisher { tx };
    let kinds = v1_kinds();
    let mut store = Store::new(&kinds, "kube-system");
    for i in 1..kinds.len() {
        store.update(&Slot::Kind(i), listed(&[]));
    }
    publish(&store, &out);
    assert!(rx.borrow_and_update().sources.is_none(), "nodes not listed yet");
    store.update(&Slot::Kind(0), listed(&[NODE_RR]));
    publish(&store, &out);
    let first = rx.borrow_and_update().sources.clone().expect("complete");
    assert_eq!(first.len(), 1);
    let services = kinds.iter().position(|w| w.plural == "services").unwrap();
    store.update(&Slot::Kind(services), failure(Some(500)));
    publish(&store, &out);
    let f = rx.borrow_and_update().clone();
    assert!(f.unreachable.as_ref().is_some_and(|u| u.reason.contains("services")), "{:?}", f.unreachable);
    assert_eq!(f.sources.as_deref(), Some(&*first), "the last content stays");
    let since = f.unreachable.unwrap().since;
    // Another kind's change is published while services fail, still unreachable.
    store.update(&Slot::Kind(0), Update::Applied(dynamic(NODE_PLAIN)));
    publish(&store, &out);
    let f = rx.borrow_and_update().clone();
    assert_eq!(f.sources.as_ref().map(|s| s.len()), Some(2));
    assert_eq!(f.unreachable.map(|u| u.since), Some(since), "the same outage");
    store.update(&Slot::Kind(services), Update::Watching);
    publish(&store, &out);
    assert!(rx.borrow_and_update().unreachable.is_none());
}

mod api_server;
mod metadata;
mod rbac;
mod throttle;

fn secret(name: &str, key: &str, value: &str) -> Value {
    use base64::Engine as _;
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": "kube-system" },
        "data": { key: base64::engine::general_purpose::STANDARD.encode(value) },
    })
}

fn peer(name: &str, secret: Option<&str>) -> Value {
    let mut spec = serde_json::json!({ "peerIP": "192.0.2.1", "asNumber": 64512 });
    if let Some(s) = secret {
        spec["password"] = serde_json::json!({ "secretKeyRef": { "name": s, "key": "password" } });
    }
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": { "name": name }, "spec": spec,
    })
}

/// Waits (at most 10 s) until the published feed satisfies `ok`.
async fn published(
    rx: &mut tokio::sync::watch::Receiver<super::super::Feed>,
    what: &str,
    ok: impl Fn(&super::super::Feed) -> bool,
) -> super::super::Feed {
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|f| ok(f))).await;
    let found = waited.ok().and_then(Result::ok).map(|f| f.clone());
    found.unwrap_or_else(|| panic!("never published: {what}; last feed: {:?}", rx.borrow().sources))
}

fn keys(f: &super::super::Feed) -> Vec<String> {
    f.sources.iter().flat_map(|s| s.iter()).map(|s| s.path.display().to_string()).collect()
}

#[tokio::test]
async fn only_the_secrets_peers_refer_to_are_read_and_held() {
    const PEERS: &str = "/apis/crd.projectcalico.org/v1/bgppeers";
    const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
    let server = api_server::ApiServer::default();
    server.serve_calico("crd.projectcalico.org/v1");
    server.apply("/api/v1/nodes", json(NODE_RR));
    server.apply(PEERS, peer("tor", Some("bgp-password")));
    server.apply(SECRETS, secret("bgp-password", "password", "s3cr3t"));
    server.apply(SECRETS, secret("unrelated", "token", "not bgpd's business"));
    server.forbid_secret("not-granted");
    let client = server.start().await;
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Some("node-1".into()), Publisher { tx }));

    let f = published(&mut rx, "the first content", |f| f.sources.is_some()).await;
    let held = keys(&f);
    assert!(held.contains(&"kubernetes:secrets/kube-system/bgp-password".to_string()), "{held:?}");
    assert!(!held.iter().any(|k| k.contains("unrelated")), "an unreferenced Secret is held: {held:?}");
    let secret_requests: Vec<String> = server.requests().into_iter().filter(|r| r.contains("/secrets")).collect();
    assert!(!secret_requests.is_empty());
    for r in &secret_requests {
        assert!(r.contains("fieldSelector=metadata.name=bgp-password"), "a Secrets request not by name: {r}");
    }

    // A new peer refers to a Secret the Role does not grant: the datastore stays
    // reachable, the note names the Secret and the fix.
    server.apply(PEERS, peer("second", Some("not-granted")));
    let f = published(&mut rx, "the second peer", |f| keys(f).iter().any(|k| k.ends_with("bgppeers/second"))).await;
    assert!(f.unreachable.is_none(), "{:?}", f.unreachable);
    assert!(
        f.notes.iter().any(|n| n.contains("kube-system/not-granted") && n.contains("resourceNames")),
        "{:?}",
        f.notes
    );
    assert!(server.requests().iter().any(|r| r.contains("fieldSelector=metadata.name=not-granted")));

    // No peer refers to the first Secret any more: it leaves the content.
    server.apply(PEERS, peer("tor", None));
    let f = published(&mut rx, "the Secret dropped", |f| {
        f.sources.is_some() && !keys(f).iter().any(|k| k.contains("bgp-password"))
    })
    .await;
    assert!(keys(&f).iter().any(|k| k.ends_with("bgppeers/tor")));
    assert!(!server.requests().iter().any(|r| r.ends_with("/secrets?") || r.contains("/secrets?watch")));
    task.abort();
}

fn handle(name: &str, floating: &[(&str, &str, &str)]) -> Value {
    let entries: Vec<Value> = floating
        .iter()
        .map(|(ip, target, node)| serde_json::json!({"ip": ip, "target": target, "node": node}))
        .collect();
    let spec = serde_json::json!({ "handleID": name, "block": { "10.244.8.0/26": 1 } });
    // As `bgpd-ipam`'s KubeStore writes them: in an annotation (the CRD has no field).
    let mut metadata = serde_json::json!({ "name": name, "resourceVersion": "1" });
    if !entries.is_empty() {
        metadata["annotations"] = serde_json::json!({ FLOATING_IPS_ANNOTATION: Value::Array(entries).to_string() });
    }
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle", "metadata": metadata, "spec": spec,
    })
}

/// Issue 20 (a): the floating IPs `bgpd-ipam`'s `KubeStore` records on IPAMHandle
/// objects reach the model, as on the file and etcd datastores; handles without
/// any are not held, and one whose floating IPs are removed leaves the content.
#[tokio::test]
async fn floating_ips_of_ipam_handles_reach_the_model() {
    const HANDLES: &str = "/apis/crd.projectcalico.org/v1/ipamhandles";
    let server = api_server::ApiServer::default();
    server.serve_calico("crd.projectcalico.org/v1");
    server.apply("/api/v1/nodes", json(NODE_PLAIN));
    server.apply("/apis/crd.projectcalico.org/v1/ipamblocks", json(IPAM_BLOCK));
    server.apply(HANDLES, handle("k8s-pod-network.abc", &[("192.0.2.10", "10.244.8.0", "worker-9")]));
    server.apply(HANDLES, handle("k8s-pod-network.plain", &[]));
    let client = server.start().await;
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Some("node-1".into()), Publisher { tx }));

    let f = published(&mut rx, "the first content", |f| f.sources.is_some()).await;
    let held = keys(&f);
    assert!(held.contains(&"kubernetes:ipamhandles/k8s-pod-network.abc".to_string()), "{held:?}");
    assert!(!held.iter().any(|k| k.contains("plain")), "a handle without floating IPs is held: {held:?}");
    let (model, problems) = parse_sources(f.sources.as_deref().unwrap()).unwrap();
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    let floating: Vec<_> =
        model.floating_ips_for_node("worker-9").map(|(h, f)| (h.handle_id.clone(), f.ip.to_string())).collect();
    assert_eq!(floating, [("k8s-pod-network.abc".to_string(), "192.0.2.10".to_string())]);

    // A second pod gets a floating IP: added; the first loses its own: removed.
    server.apply(HANDLES, handle("k8s-pod-network.plain", &[("192.0.2.11", "10.244.8.1", "worker-9")]));
    server.apply(HANDLES, handle("k8s-pod-network.abc", &[]));
    let f = published(&mut rx, "the floating IPs moved", |f| {
        let k = keys(f);
        k.iter().any(|k| k.ends_with("/k8s-pod-network.plain"))
            && !k.iter().any(|k| k.ends_with("/k8s-pod-network.abc"))
    })
    .await;
    let (model, _) = parse_sources(f.sources.as_deref().unwrap()).unwrap();
    let ips: Vec<String> = model.floating_ips_for_node("worker-9").map(|(_, f)| f.ip.to_string()).collect();
    assert_eq!(ips, ["192.0.2.11"]);
    // The handle released (the pod deleted): no floating IP left.
    server.delete(HANDLES, "k8s-pod-network.plain");
    let f = published(&mut rx, "the handle deleted", |f| !keys(f).iter().any(|k| k.contains("ipamhandles"))).await;
    let (model, _) = parse_sources(f.sources.as_deref().unwrap()).unwrap();
    assert_eq!(model.floating_ips_for_node("worker-9").count(), 0);
    task.abort();
}

fn affinity(node: &str, cidr: &str, state: &str) -> Value {
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
        "metadata": { "name": format!("{node}-{}", cidr.replace(['.', '/'], "-")) },
        "spec": { "node": node, "cidr": cidr, "state": state, "deleted": "false" },
    })
}

/// As on the file and etcd datastores, a block whose release has begun (its
/// BlockAffinity `pendingDeletion`, the first of `bgpd-ipam`'s two release
/// writes) is withdrawn at once; confirmed affinities are not held.
#[tokio::test]
async fn a_block_whose_affinity_is_pending_deletion_is_withdrawn() {
    const AFFINITIES: &str = "/apis/crd.projectcalico.org/v1/blockaffinities";
    let server = api_server::ApiServer::default();
    server.serve_calico("crd.projectcalico.org/v1");
    server.apply("/api/v1/nodes", json(NODE_PLAIN));
    server.apply("/apis/crd.projectcalico.org/v1/ipamblocks", json(IPAM_BLOCK));
    server.apply(AFFINITIES, affinity("worker-9", "10.244.8.0/26", "confirmed"));
    let client = server.start().await;
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Some("node-1".into()), Publisher { tx }));
    let blocks = |f: &super::super::Feed| -> Vec<String> {
        model_of(f).blocks_for_node("worker-9").iter().map(|b| b.cidr.to_string()).collect()
    };
    let f = published(&mut rx, "the first content", |f| f.sources.is_some()).await;
    assert_eq!(blocks(&f), ["10.244.8.0/26"]);
    assert!(!keys(&f).iter().any(|k| k.contains("blockaffinities")), "{:?}", keys(&f));

    server.apply(AFFINITIES, affinity("worker-9", "10.244.8.0/26", "pendingDeletion"));
    let f = published(&mut rx, "the block withdrawn", |f| f.sources.is_some() && blocks(f).is_empty()).await;
    assert!(model_of(&f).ipam_blocks["10-244-8-0-26"].deleted);
    // The release undone (the affinity confirmed again): advertised again.
    server.apply(AFFINITIES, affinity("worker-9", "10.244.8.0/26", "confirmed"));
    published(&mut rx, "the block back", |f| f.sources.is_some() && blocks(f).len() == 1).await;
    // Another node's release does not touch this block.
    server.apply(AFFINITIES, affinity("worker-1", "10.244.8.0/26", "pendingDeletion"));
    server.apply("/api/v1/nodes", json(NODE_RR));
    let f = published(&mut rx, "the second node", |f| keys(f).iter().any(|k| k.ends_with("nodes/rr-1"))).await;
    assert_eq!(blocks(&f), ["10.244.8.0/26"]);
    task.abort();
}

/// IPAMHandle is optional: a cluster whose Calico group does not serve it (or a
/// ClusterRole from before bgpd read it) runs without floating IPs, with a note.
#[tokio::test]
async fn a_cluster_without_ipam_handles_runs_without_floating_ips() {
    let server = api_server::ApiServer::default();
    for (plural, kind) in [
        ("bgpconfigurations", "BGPConfiguration"),
        ("bgppeers", "BGPPeer"),
        ("bgpfilters", "BGPFilter"),
        ("ippools", "IPPool"),
        ("ipamblocks", "IPAMBlock"),
    ] {
        server.serve_resource("crd.projectcalico.org/v1", plural, kind);
    }
    server.apply("/api/v1/nodes", json(NODE_PLAIN));
    let client = server.start().await;
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Some("node-1".into()), Publisher { tx }));
    let f = published(&mut rx, "the first content", |f| f.sources.is_some()).await;
    assert!(f.unreachable.is_none(), "{:?}", f.unreachable);
    assert!(f.notes.iter().any(|n| n.contains("ipamhandles")), "{:?}", f.notes);
    task.abort();
}

/// The shipped RBAC grants exactly what the watchers read: list/watch on every
/// kind bgpd may watch (Calico's in either group) cluster-wide, and Secrets only by name in bgpd's namespace.
#[test]
fn the_shipped_roles_grant_what_is_watched_and_secrets_only_by_name() {
    use serde::Deserialize as _;
    let text = include_str!("../../../../../templates/kubernetes/bgpd.yaml");
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(text).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect();
    let rules = |kind: &str| -> Vec<serde_yaml::Value> {
        let doc = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
        doc["rules"].as_sequence().expect("rules").clone()
    };
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let mut granted = BTreeSet::new();
    let mut node_status = Vec::new();
    for rule in rules("ClusterRole") {
        // CalicoNodeStatus is read and written by `daemon::nodestatus`, not the datastore.
        if strings(&rule["resources"]).iter().all(|r| r.starts_with("caliconodestatuses")) {
            node_status.push((strings(&rule["resources"]), strings(&rule["verbs"])));
            continue;
        }
        assert_eq!(strings(&rule["verbs"]), ["list", "watch"], "{rule:?}");
        assert!(rule.get("resourceNames").is_none());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                granted.insert((group.clone(), resource));
            }
        }
    }
    assert_eq!(granted, kinds::granted(), "the ClusterRole and what bgpd may read differ");
    let status_rules =
        |resource: &str, verbs: &[&str]| (vec![resource.to_string()], verbs.iter().map(|v| v.to_string()).collect());
    assert_eq!(
        node_status,
        [status_rules("caliconodestatuses", &["list", "watch"]), status_rules("caliconodestatuses/status", &["patch"])]
    );
    let secrets = rules("Role");
    assert_eq!(secrets.len(), 1);
    assert_eq!(strings(&secrets[0]["resources"]), ["secrets"]);
    assert!(!strings(&secrets[0]["resourceNames"]).is_empty(), "Secrets must be granted by name");
}

// ---------------------------------------------------------------------------
// Against the API-server stand-in: each of these reproduced a failure of the
// datastore before it was fixed (issue 20).

const V1: &str = "crd.projectcalico.org/v1";
const V1_PEERS: &str = "/apis/crd.projectcalico.org/v1/bgppeers";
const V1_BLOCKS: &str = "/apis/crd.projectcalico.org/v1/ipamblocks";
const NODES: &str = "/api/v1/nodes";

type Feeds = std::sync::Arc<std::sync::Mutex<Vec<super::super::Feed>>>;

/// The datastore watching `server`: its feed, its task, and every feed it
/// published (recorded as it happened).
struct Running {
    rx: tokio::sync::watch::Receiver<super::super::Feed>,
    task: tokio::task::JoinHandle<()>,
    seen: Feeds,
    recorder: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        self.recorder.abort();
    }
}

async fn running(server: &api_server::ApiServer) -> Running {
    let client = server.start().await;
    let (tx, rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Some("node-1".into()), Publisher { tx }));
    let seen: Feeds = Default::default();
    let mut recorded = rx.clone();
    let log = seen.clone();
    let recorder = tokio::spawn(async move {
        while recorded.changed().await.is_ok() {
            let f = recorded.borrow_and_update().clone();
            log.lock().unwrap().push(f);
        }
    });
    Running { rx, task, seen, recorder }
}

/// Waits (at most 10 s) until `n` watches are open.
/// The watches of a cluster serving Calico's CRDs (`serve_calico`, without
/// BFDConfiguration) and no Service advertisement: Nodes, BGPConfigurations,
/// BGPPeers, BGPFilters, IPPools, IPAMBlocks, IPAMHandles, BlockAffinities.
const WATCHES: usize = 8;

/// The datastore on a v1 cluster with one Node and one block (`b1`), once the
/// block is published and every kind watched.
async fn one_block_watched(server: &api_server::ApiServer) -> Running {
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_PLAIN));
    server.apply(V1_BLOCKS, block("b1", "10.244.8.0/26", "worker-9"));
    let mut run = running(server).await;
    published(&mut run.rx, "the block", |f| has_key(f, "ipamblocks/b1") && f.unreachable.is_none()).await;
    watching(server, WATCHES).await;
    run
}

async fn watching(server: &api_server::ApiServer, n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while server.open_watches() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("{} watches open, not {n}", server.open_watches()));
}

fn model_of(f: &super::super::Feed) -> Model {
    let sources = f.sources.as_deref().expect("content");
    parse_sources(sources).expect("converted objects are valid YAML").0
}

fn block(name: &str, cidr: &str, node: &str) -> Value {
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": { "name": name },
        "spec": { "cidr": cidr, "affinity": format!("host:{node}"), "allocations": [], "unallocated": [],
                  "attributes": [], "strictAffinity": false },
    })
}

fn has_key(f: &super::super::Feed, suffix: &str) -> bool {
    keys(f).iter().any(|k| k.ends_with(suffix))
}

/// bgpd's own settings are annotations: a real cluster must deliver them. An
/// object written through Calico's API server or calicoctl keeps its labels and
/// annotations in `projectcalico.org/metadata` (merged over the object's own, as
/// Calico's `ConvertK8sResourceToCalicoResource` does); a Node's Calico labels are
/// in `projectcalico.org/labels` (the Kubernetes labels win, as in Calico's
/// `mergeCalicoAndK8sLabels`).
#[test]
fn annotations_and_calicos_metadata_annotation_reach_the_model() {
    let mut direct = peer("direct", None);
    direct["metadata"]["annotations"] = serde_json::json!({ "bgpd.io/max-prefix": "100", "bgpd.io/add-path": "send" });
    let mut via_calico = peer("via-calico", None);
    via_calico["metadata"]["labels"] = serde_json::json!({ "tier": "own", "kept": "yes" });
    via_calico["metadata"]["annotations"] = serde_json::json!({
        "bgpd.io/keep-received": "true",
        "projectcalico.org/metadata":
            r#"{"creationTimestamp":null,"labels":{"tier":"calico"},"annotations":{"bgpd.io/mrai":"5"}}"#,
    });
    let mut node = json(NODE_RR);
    node["metadata"]["annotations"]["projectcalico.org/labels"] = r#"{"rack":"calico-value","zone":"z1"}"#.into();
    let (direct, via_calico) = (direct.to_string(), via_calico.to_string());
    let node = node.to_string();
    let (model, problems) = load(&[("bgppeers", &direct), ("bgppeers", &via_calico), ("nodes", &node)]);
    assert!(errors(&problems).is_empty(), "{:?}", errors(&problems));
    let direct = &model.peers["direct"];
    assert_eq!(direct.max_prefix, Some((100, true)));
    let via = &model.peers["via-calico"];
    assert!(via.keep_received, "the object's own annotation is kept");
    assert_eq!(via.mrai, Duration::from_secs(5), "the annotation from projectcalico.org/metadata");
    let v = convert(&watched("bgppeers"), &json(&via_calico)).unwrap().object;
    assert_eq!(v["metadata"]["labels"], serde_json::json!({ "tier": "calico", "kept": "yes" }));
    assert!(v["metadata"]["annotations"].get("projectcalico.org/metadata").is_none());
    let labels = &model.nodes["rr-1"].labels;
    assert_eq!(labels.get("rack").map(String::as_str), Some("r1"), "the Kubernetes label wins");
    assert_eq!(labels.get("zone").map(String::as_str), Some("z1"), "the Calico label is merged");
}

/// A watch cut mid-stream whose next attempt is refused: the kinds that failed
/// are quiet (no object changes afterwards), yet the datastore is reachable again
/// once their watches are back, and later changes are published.
#[tokio::test]
async fn a_reset_mid_watch_with_quiet_kinds_recovers_once_the_watches_are_back() {
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_RR));
    server.apply(V1_PEERS, peer("tor", None));
    let mut run = running(&server).await;
    published(&mut run.rx, "the first content", |f| f.sources.is_some() && f.unreachable.is_none()).await;
    watching(&server, WATCHES).await;
    server.fail_watches(500, 3);
    server.reset_watches();
    published(&mut run.rx, "unreachable after the refused watches", |f| f.unreachable.is_some()).await;
    let f = published(&mut run.rx, "reachable again", |f| f.unreachable.is_none()).await;
    assert!(has_key(&f, "bgppeers/tor"), "{:?}", keys(&f));
    server.apply(V1_PEERS, peer("later", None));
    let f = published(&mut run.rx, "a later change", |f| has_key(f, "bgppeers/later")).await;
    assert!(f.unreachable.is_none());
}

/// kubernetes/kubernetes #71218: after an API server or etcd restart a list can
/// answer 404 for a while. The kind keeps its last good objects (never "none"),
/// the datastore says why it is unreachable, and the list is retried.
#[tokio::test]
async fn a_404_on_relist_keeps_the_last_good_objects_and_retries() {
    let server = api_server::ApiServer::default();
    let mut run = one_block_watched(&server).await;
    let lists = || server.requests().iter().filter(|r| r.starts_with(V1_BLOCKS) && !r.contains("watch=true")).count();
    let before = lists();
    server.fail_lists(V1_BLOCKS, 404, 2);
    server.expire_watches();
    server.apply(V1_BLOCKS, block("b2", "10.244.9.0/26", "worker-9"));
    let f = published(&mut run.rx, "the second block after the relists", |f| {
        has_key(f, "ipamblocks/b2") && f.unreachable.is_none()
    })
    .await;
    assert!(has_key(&f, "ipamblocks/b1"));
    assert!(lists() >= before + 3, "two refused lists and a good one");
    let seen = run.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|f| f.unreachable.as_ref().is_some_and(|u| u.reason.contains("ipamblocks"))),
        "the 404 is reported"
    );
    for f in seen.iter().filter(|f| f.sources.is_some()) {
        assert!(has_key(f, "ipamblocks/b1"), "published without the block: {:?}", keys(f));
    }
}

/// 410 Gone on an open watch (its resourceVersion compacted away): the kinds are
/// listed again and what changed meanwhile arrives.
#[tokio::test]
async fn a_410_gone_lists_again_and_catches_up() {
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_PLAIN));
    server.apply(V1_PEERS, peer("old", None));
    let mut run = running(&server).await;
    published(&mut run.rx, "the first content", |f| has_key(f, "bgppeers/old")).await;
    watching(&server, WATCHES).await;
    server.expire_watches();
    server.delete(V1_PEERS, "old");
    server.apply(V1_PEERS, peer("new", None));
    let f = published(&mut run.rx, "the peers after the relist", |f| {
        has_key(f, "bgppeers/new") && !has_key(f, "bgppeers/old")
    })
    .await;
    assert!(f.unreachable.is_none());
}

/// Routine Node status updates at 1,000 a second (what a large cluster's kubelets
/// send): a real change is still published, and the status updates publish
/// nothing of their own.
#[tokio::test]
async fn a_change_is_published_under_1000_node_status_updates_a_second() {
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    // With every kind served nothing else (a retried list) wakes the datastore up.
    server.serve_resource(V1, "bfdconfigurations", "BFDConfiguration");
    server.apply(NODES, json(NODE_RR));
    server.apply(NODES, json(NODE_PLAIN));
    let mut run = running(&server).await;
    let first = published(&mut run.rx, "the first content", |f| f.sources.is_some()).await;
    let churn = server.churn(NODES, "worker-9", 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.apply(V1_PEERS, peer("during-churn", None));
    let f = published(&mut run.rx, "the peer added during the churn", |f| has_key(f, "bgppeers/during-churn")).await;
    drop(churn);
    let seen = run.seen.lock().unwrap().clone();
    let contents: Vec<_> = seen.iter().filter_map(|f| f.sources.clone()).collect();
    let distinct = contents.windows(2).filter(|w| !std::sync::Arc::ptr_eq(&w[0], &w[1])).count() + 1;
    assert_eq!(distinct, 2, "status updates published content of their own");
    assert_eq!(keys(&f).len(), keys(&first).len() + 1);
}

/// A cluster whose Calico kinds are `projectcalico.org/v3` CRDs (no
/// `crd.projectcalico.org`): found by discovery and read.
#[tokio::test]
async fn a_v3_only_cluster_is_found_by_discovery_and_read() {
    let server = api_server::ApiServer::default();
    server.serve_calico("projectcalico.org/v3");
    server.apply(NODES, json(NODE_RR));
    let mut p = peer("v3-peer", None);
    p["apiVersion"] = "projectcalico.org/v3".into();
    server.apply("/apis/projectcalico.org/v3/bgppeers", p);
    let mut run = running(&server).await;
    let f = published(&mut run.rx, "the v3 peer", |f| f.sources.is_some()).await;
    assert!(has_key(&f, "bgppeers/v3-peer"), "{:?}", keys(&f));
    assert!(model_of(&f).peers.contains_key("v3-peer"));
    assert!(f.unreachable.is_none());
}

/// `--datastore kubernetes:KUBECONFIG`: the datastore and its client come from
/// that file (whatever `KUBECONFIG` says); a kubeconfig that cannot be read is
/// named in the unreachable reason.
#[tokio::test]
async fn a_kubeconfig_file_names_the_api_server() {
    let server = api_server::ApiServer::default();
    server.serve_calico("crd.projectcalico.org/v1");
    server.apply(NODES, json(NODE_RR));
    let url = server.start_at().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{url}\"}}\n\
         users:\n- name: bgpd\n  user: {{token: not-checked}}\ncontexts:\n- name: c\n  context: \
         {{cluster: stand-in, user: bgpd}}\ncurrent-context: c\n"
    );
    std::fs::write(&kubeconfig, text).unwrap();
    let spec = super::super::DatastoreSpec::Kubernetes { kubeconfig: Some(kubeconfig) };
    let mut rx = super::super::spawn(&spec, "kube-system", "node-1");
    let f = published(&mut rx, "the node", |f| f.sources.is_some()).await;
    assert!(model_of(&f).nodes.contains_key("rr-1"), "{:?}", keys(&f));

    let missing = dir.path().join("missing");
    let spec = super::super::DatastoreSpec::Kubernetes { kubeconfig: Some(missing.clone()) };
    let mut rx = super::super::spawn(&spec, "kube-system", "node-1");
    let f = published(&mut rx, "unreachable", |f| f.unreachable.is_some()).await;
    let reason = f.unreachable.unwrap().reason;
    assert!(reason.contains(&format!("kubeconfig {}", missing.display())), "{reason}");
}

/// A cluster without Calico's kinds is an error, never an empty model: bgpd must
/// not run ready with no peers and no blocks.
#[tokio::test]
async fn a_cluster_without_calicos_kinds_is_unreachable_not_empty() {
    let server = api_server::ApiServer::default();
    server.apply(NODES, json(NODE_RR));
    let mut run = running(&server).await;
    let f = published(&mut run.rx, "the missing group reported", |f| f.unreachable.is_some()).await;
    let reason = &f.unreachable.as_ref().unwrap().reason;
    assert!(reason.contains("crd.projectcalico.org/v1") && reason.contains("projectcalico.org/v3"), "{reason}");
    assert!(run.seen.lock().unwrap().iter().all(|f| f.sources.is_none()), "published content without Calico's kinds");
}

fn configuration(service_cluster_ips: &[&str]) -> Value {
    let cidrs: Vec<Value> = service_cluster_ips.iter().map(|c| serde_json::json!({ "cidr": c })).collect();
    serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPConfiguration",
        "metadata": { "name": "default" },
        "spec": { "asNumber": 64512, "serviceClusterIPs": cidrs },
    })
}

/// Services and EndpointSlices (every one of the cluster, with their churn) are
/// read only while a BGPConfiguration advertises Service addresses.
#[tokio::test]
async fn services_are_read_only_while_service_advertisement_is_configured() {
    const CONFIGURATIONS: &str = "/apis/crd.projectcalico.org/v1/bgpconfigurations";
    const SERVICES: &str = "/api/v1/services";
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_RR));
    server.apply(CONFIGURATIONS, configuration(&[]));
    server.apply(
        SERVICES,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web", "namespace": "default" },
            "spec": { "clusterIP": "10.96.0.10", "ports": [{ "port": 80 }] },
        }),
    );
    let mut run = running(&server).await;
    let f = published(&mut run.rx, "the first content", |f| f.sources.is_some()).await;
    assert!(!has_key(&f, "services/default/web"));
    let read = |path: &str| server.requests().iter().any(|r| r.starts_with(path));
    assert!(!read(SERVICES) && !read("/apis/discovery.k8s.io"), "{:?}", server.requests());

    server.apply(CONFIGURATIONS, configuration(&["10.96.0.0/12"]));
    let f = published(&mut run.rx, "the Service", |f| has_key(f, "services/default/web")).await;
    assert!(f.unreachable.is_none());
    assert!(read(SERVICES) && read("/apis/discovery.k8s.io/v1/endpointslices"));

    server.apply(CONFIGURATIONS, configuration(&[]));
    published(&mut run.rx, "the Service gone", |f| f.sources.is_some() && !has_key(f, "services/default/web")).await;
}

/// Lists are read in pages; a watch starts from the list's resourceVersion and
/// resumes from the last BOOKMARK after a reset, so nothing is listed again.
#[tokio::test]
async fn lists_are_paged_and_watches_resume_from_the_last_bookmark() {
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_PLAIN));
    let count = usize::try_from(follow::PAGE).unwrap() * 2 + 7;
    for i in 0..count {
        let (a, b) = (i / 64, (i % 64) * 4);
        server.apply(V1_BLOCKS, block(&format!("b{i:04}"), &format!("10.{}.{}.{b}/30", 100 + a / 256, a % 256), "x"));
    }
    let mut run = running(&server).await;
    let f = published(&mut run.rx, "every block", |f| f.sources.is_some()).await;
    assert_eq!(keys(&f).iter().filter(|k| k.contains("ipamblocks/")).count(), count);
    let pages: Vec<String> =
        server.requests().into_iter().filter(|r| r.starts_with(V1_BLOCKS) && !r.contains("watch=true")).collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[0].contains("limit=500") && pages[1].contains("continue="), "{pages:?}");
    watching(&server, WATCHES).await;
    // Changes elsewhere move the resourceVersion; a bookmark tells the watchers.
    server.apply(NODES, json(NODE_RR));
    assert_eq!(server.bookmark(), WATCHES, "every watch asks for bookmarks");
    let bookmarked = server.version();
    // Nothing shows that a watcher took its bookmark: give it time to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lists_before = server.requests().iter().filter(|r| !r.contains("watch=true")).count();
    server.reset_watches();
    watching(&server, WATCHES).await;
    let requests = server.requests();
    let block_watches: Vec<&String> =
        requests.iter().filter(|r| r.starts_with(V1_BLOCKS) && r.contains("watch=true")).collect();
    let last = block_watches.last().expect("a watch");
    assert!(last.contains(&format!("resourceVersion={bookmarked}")), "{last}");
    assert_eq!(requests.iter().filter(|r| !r.contains("watch=true")).count(), lists_before, "listed again");
}

/// bgpd reads its Secrets from its own namespace (`POD_NAMESPACE`, from the
/// downward API): the ServiceAccount, the Secrets Role, the bindings' subjects,
/// the DaemonSet and the alerts must all be in one namespace.
#[test]
fn the_manifests_put_everything_in_one_namespace_and_pod_namespace_follows_it() {
    use serde::Deserialize as _;
    let mut namespaces = BTreeSet::new();
    for text in [
        include_str!("../../../../../templates/kubernetes/bgpd.yaml"),
        include_str!("../../../../../templates/kubernetes/alerts.yaml"),
    ] {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let doc = serde_yaml::Value::deserialize(doc).unwrap();
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if !matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding") {
                let ns = doc["metadata"]["namespace"].as_str();
                namespaces.insert(ns.unwrap_or_else(|| panic!("{kind} without a namespace")).to_string());
            }
            for subject in doc["subjects"].as_sequence().into_iter().flatten() {
                namespaces.insert(subject["namespace"].as_str().expect("a subject's namespace").to_string());
            }
            if kind == "DaemonSet" {
                let env = &doc["spec"]["template"]["spec"]["containers"][0]["env"];
                let pod_namespace = env.as_sequence().into_iter().flatten().find(|e| e["name"] == "POD_NAMESPACE");
                let from = pod_namespace.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]);
                assert_eq!(from.and_then(|f| f.as_str()), Some("metadata.namespace"));
            }
        }
    }
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
}

/// Issue 20: with admission on, the stand-in answers a write its CRD's schema
/// refuses as the API server does (`422 Invalid`, a Status naming the field)
/// and stores nothing; what fits is stored, with the fields the schema does
/// not name pruned and warned of; kinds without a CRD are not checked.
#[tokio::test]
async fn the_stand_in_refuses_what_the_crd_schema_refuses_with_422() {
    use kube::api::{Api, ApiResource, Patch, PatchParams, PostParams};
    use kube::core::GroupVersionKind;

    let test = "the_stand_in_refuses_what_the_crd_schema_refuses_with_422";
    let server = api_server::ApiServer::default();
    if !server.admit_calico_crds(test) {
        return;
    }
    server.serve_calico("crd.projectcalico.org/v1");
    server.serve_resource("crd.projectcalico.org/v1", "caliconodestatuses", "CalicoNodeStatus");
    server.serve_status("caliconodestatuses");
    let client = server.start().await;
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("crd.projectcalico.org", "v1", kind), plural)
    };
    let affinities: Api<DynamicObject> = Api::all_with(client.clone(), &resource("BlockAffinity", "blockaffinities"));
    let object = |spec: Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
            "metadata": { "name": "n1-10-0-0-0-26" }, "spec": spec,
        }))
        .unwrap()
    };
    let invalid = |e: kube::Error| match e {
        kube::Error::Api(s) => s,
        e => panic!("not an API error: {e}"),
    };

    // BlockAffinity's required `deleted` missing: 422 naming it, nothing stored.
    let spec = serde_json::json!({ "cidr": "10.0.0.0/26", "node": "n1", "state": "confirmed" });
    let e = invalid(affinities.create(&PostParams::default(), &object(spec.clone())).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert!(e.message.contains("spec.deleted: Required value"), "{}", e.message);
    assert!(
        e.message.starts_with("BlockAffinity.crd.projectcalico.org \"n1-10-0-0-0-26\" is invalid"),
        "{}",
        e.message
    );
    assert!(server.object("/apis/crd.projectcalico.org/v1/blockaffinities", "n1-10-0-0-0-26").is_none());

    // With it (a string in v1), and a field the CRD does not name: stored, pruned.
    let mut good = spec.clone();
    good["deleted"] = "false".into();
    good["extra"] = 1.into();
    let stored = affinities.create(&PostParams::default(), &object(good)).await.expect("a valid object");
    assert!(stored.data["spec"].get("extra").is_none(), "{:?}", stored.data);
    assert_eq!(server.warnings(), ["unknown field \"spec.extra\""]);

    // A replace with the wrong type (a boolean where v1 has a string): 422.
    let mut wrong = spec;
    wrong["deleted"] = true.into();
    let mut replace = object(wrong);
    replace.metadata.resource_version = stored.metadata.resource_version.clone();
    let e = invalid(affinities.replace("n1-10-0-0-0-26", &PostParams::default(), &replace).await.unwrap_err());
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("spec.deleted: Invalid value: true"), "{}", e.message);

    // A status PATCH is checked on the object it makes: an enum refused.
    const STATUSES: &str = "/apis/crd.projectcalico.org/v1/caliconodestatuses";
    server.apply(
        STATUSES,
        serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "CalicoNodeStatus", "metadata": { "name": "n1" },
            "spec": { "node": "n1", "classes": ["BGP"], "updatePeriodSeconds": 10 },
        }),
    );
    let statuses: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("CalicoNodeStatus", "caliconodestatuses"));
    let patch = serde_json::json!({ "status": { "bgp": { "numberEstablishedV4": "one" } } });
    let e = invalid(statuses.patch_status("n1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err());
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("status.bgp.numberEstablishedV4: Invalid value"), "{}", e.message);
    assert!(server.object(STATUSES, "n1").unwrap().get("status").is_none(), "nothing stored");

    // A kind without a CRD in the shared data is not checked.
    server.serve_resource("crd.projectcalico.org/v1", "widgets", "Widget");
    let widgets: Api<DynamicObject> = Api::all_with(client, &resource("Widget", "widgets"));
    let widget: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "Widget", "metadata": { "name": "w" }, "spec": { "any": 1 },
    }))
    .unwrap();
    widgets.create(&PostParams::default(), &widget).await.expect("no schema, no check");
}

/// Pods are read only while a BGPPeer has `localWorkloadSelector`, only this
/// node's (a `spec.nodeName` field selector), and only what routing reads of
/// them (a pod's conditions changing is no change of the model).
#[tokio::test]
async fn this_nodes_pods_are_read_only_while_a_peer_selects_local_workloads() {
    const PODS: &str = "/api/v1/pods";
    let server = api_server::ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_PLAIN));
    let pod = |ready: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vm-1", "namespace": "virt", "labels": {"app": "router"},
                         "annotations": {"cni.projectcalico.org/podIP": "10.244.1.7/32"}, "uid": "u1"},
            "spec": {"nodeName": "node-1", "serviceAccountName": "default", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                       "conditions": [{"type": "Ready", "status": ready}]},
        })
    };
    server.apply(PODS, pod("False"));
    let mut run = running(&server).await;
    published(&mut run.rx, "the node", |f| f.sources.is_some()).await;
    watching(&server, WATCHES).await;
    assert!(!server.requests().iter().any(|r| r.contains("/pods")), "no Pods read without such a BGPPeer");

    let mut routers = peer("routers", None);
    routers["spec"] = serde_json::json!({"localWorkloadSelector": "app == 'router'", "asNumber": 65300});
    server.apply(V1_PEERS, routers);
    let f = published(&mut run.rx, "the pod", |f| has_key(f, "pods/virt/vm-1")).await;
    let requests = server.requests();
    let list = requests.iter().find(|r| r.contains("/api/v1/pods")).expect("Pods listed");
    assert!(list.contains("fieldSelector=spec.nodeName=node-1"), "{list}");
    let text = &f.sources.as_ref().unwrap().iter().find(|s| s.path.ends_with("vm-1")).unwrap().text;
    assert!(!text.contains("conditions") && !text.contains("containers") && !text.contains("cni."), "{text}");
    let m = model_of(&f);
    assert_eq!(m.workload_endpoints["virt/vm-1"].ipv4, Some("10.244.1.7".parse().unwrap()));
    let before = f.sources.clone();
    server.apply(PODS, pod("True"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run.rx.borrow().sources, before, "a condition is no change of the model");

    server.delete(V1_PEERS, "routers");
    published(&mut run.rx, "the pod forgotten", |f| !has_key(f, "pods/virt/vm-1")).await;
}
