//! Conversion of API objects to the model, and the watcher bookkeeping. The
//! fixtures in `fixtures/` are written in the shape `kubectl get -o json` prints
//! (a core Node with Calico's Kubernetes-datastore annotations, CRD objects with
//! `crd.projectcalico.org/v1`, a list item without apiVersion/kind); they are not
//! captured from a cluster (none runs here).

use std::net::Ipv4Addr;

use super::*;
use crate::datastore::{parse_sources, Affinity, AsNumber, Md5Key, Model, PeerScope, Problem, Severity};

const NODE_RR: &str = include_str!("fixtures/node-rr.json");
const NODE_PLAIN: &str = include_str!("fixtures/node-plain.json");
const BGP_PEER: &str = include_str!("fixtures/bgppeer.json");
const BGP_CONFIGURATION: &str = include_str!("fixtures/bgpconfiguration.json");
const SECRET: &str = include_str!("fixtures/secret.json");
const IPAM_BLOCK: &str = include_str!("fixtures/ipamblock.json");
const BFD_CONFIGURATION: &str = include_str!("fixtures/bfdconfiguration.json");

fn watched(plural: &str) -> &'static Watched {
    WATCHED.iter().find(|w| w.plural == plural).expect("a watched kind")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// Converts (plural, API JSON) pairs and loads them as the daemon would.
fn load(objects: &[(&str, &str)]) -> (Model, Vec<Problem>) {
    let sources: Vec<Source> = objects
        .iter()
        .map(|(plural, text)| {
            let (key, v) = convert(watched(plural), &json(text)).expect("named object");
            Source { path: key.into(), text: v.to_string() }
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
        ("secrets", SECRET),
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
    let (key, v) = convert(watched("secrets"), &json(SECRET)).unwrap();
    assert_eq!(key, "kubernetes:secrets/calico-system/bgp-secrets");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["metadata"], serde_json::json!({"name": "bgp-secrets", "namespace": "calico-system"}));
    assert_eq!(v["data"]["rr-password"], "czNjcjN0");
    let (key, v) = convert(watched("bgppeers"), &json(BGP_PEER)).unwrap();
    assert_eq!(key, "kubernetes:bgppeers/to-rr");
    assert!(v["metadata"].get("annotations").is_none() && v["metadata"].get("resourceVersion").is_none());
    assert!(convert(watched("bgppeers"), &serde_json::json!({"metadata": {}})).is_none());
}

fn dynamic(text: &str) -> DynamicObject {
    serde_json::from_str(text).expect("fixture is a Kubernetes object")
}

#[test]
fn a_kind_is_complete_after_its_first_list_and_tracks_changes() {
    let w = watched("nodes");
    let mut k = KindState::default();
    assert!(!k.event(w, Event::Init));
    assert!(!k.event(w, Event::InitApply(dynamic(NODE_RR))));
    assert!(k.objects.is_none(), "not complete before InitDone");
    assert!(k.event(w, Event::InitDone));
    assert_eq!(k.objects.as_ref().map(BTreeMap::len), Some(1));
    // A status-only update of the Node converts to the same text: no change.
    let mut v = json(NODE_RR);
    v["status"]["nodeInfo"]["kubeletVersion"] = "v1.33.2".into();
    v["metadata"]["resourceVersion"] = "482999".into();
    assert!(!k.event(w, Event::Apply(serde_json::from_value(v.clone()).unwrap())));
    v["metadata"]["labels"]["rack"] = "r2".into();
    assert!(k.event(w, Event::Apply(serde_json::from_value(v).unwrap())), "a label change is a change");
    assert!(k.event(w, Event::Apply(dynamic(NODE_PLAIN))));
    assert!(k.event(w, Event::Delete(dynamic(NODE_RR))));
    assert!(!k.event(w, Event::Delete(dynamic(NODE_RR))), "deleting what is gone changes nothing");
    assert_eq!(k.objects.unwrap().keys().collect::<Vec<_>>(), ["kubernetes:nodes/worker-9"]);
}

fn api_error(code: u16) -> watcher::Error {
    watcher::Error::InitialListFailed(kube::Error::Api(kube::core::ErrorResponse {
        status: "Failure".into(),
        message: "the server could not find the requested resource".into(),
        reason: "NotFound".into(),
        code,
    }))
}

#[test]
fn a_missing_crd_is_an_empty_kind_and_other_errors_make_the_datastore_unreachable() {
    let filters = watched("bgpfilters");
    let mut k = KindState::default();
    assert!(k.error(filters, &api_error(404)));
    assert_eq!(k.objects.as_ref().map(BTreeMap::len), Some(0));
    assert!(k.error.is_none());
    assert!(k.note.as_deref().is_some_and(|n| n.contains("bgpfilters")), "{:?}", k.note);

    let nodes = watched("nodes");
    let mut k = KindState::default();
    assert!(!k.error(nodes, &api_error(404)), "core kinds always exist: a 404 is an error");
    assert!(k.error.is_some());
    let mut k = KindState::default();
    assert!(!k.error(filters, &api_error(403)));
    assert!(k.error.as_deref().is_some_and(|e| e.contains("bgpfilters")), "{:?}", k.error);
    // The watcher delivering again clears the error.
    k.event(filters, Event::Init);
    assert!(k.error.is_none());

    // BFDConfiguration is Calico Enterprise's: absent or not granted, there is no BFD.
    let bfd = watched("bfdconfigurations");
    for code in [404, 403] {
        let mut k = KindState::default();
        assert!(k.error(bfd, &api_error(code)), "{code}");
        assert!(k.error.is_none() && k.objects.as_ref().is_some_and(BTreeMap::is_empty), "{code}");
        assert!(k.note.as_deref().is_some_and(|n| n.contains("bfdconfigurations")), "{:?}", k.note);
    }
}

#[tokio::test]
async fn published_content_waits_for_every_kind_and_keeps_the_last_good_on_errors() {
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let out = Publisher { tx };
    let mut kinds: Vec<KindState> = WATCHED.iter().map(|_| KindState::default()).collect();
    for (i, w) in WATCHED.iter().enumerate().skip(1) {
        kinds[i].event(w, Event::Init);
        kinds[i].event(w, Event::InitDone);
    }
    publish(&kinds, &out);
    assert!(rx.borrow_and_update().sources.is_none(), "nodes not listed yet");
    kinds[0].event(&WATCHED[0], Event::Init);
    kinds[0].event(&WATCHED[0], Event::InitApply(dynamic(NODE_RR)));
    kinds[0].event(&WATCHED[0], Event::InitDone);
    publish(&kinds, &out);
    let first = rx.borrow_and_update().sources.clone().expect("complete");
    assert_eq!(first.len(), 1);
    kinds[2].error(&WATCHED[2], &api_error(500));
    publish(&kinds, &out);
    let f = rx.borrow_and_update().clone();
    assert!(f.unreachable.as_ref().is_some_and(|u| u.reason.contains("services")), "{:?}", f.unreachable);
    assert_eq!(f.sources.as_deref(), Some(&*first), "the last content stays");
    kinds[2].event(&WATCHED[2], Event::Init);
    kinds[2].event(&WATCHED[2], Event::InitDone);
    publish(&kinds, &out);
    assert!(rx.borrow_and_update().unreachable.is_none());
}
