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
const SECRET_JSON: &str = include_str!("fixtures/secret.json");
const IPAM_BLOCK: &str = include_str!("fixtures/ipamblock.json");
const BFD_CONFIGURATION: &str = include_str!("fixtures/bfdconfiguration.json");

fn watched(plural: &str) -> &'static Watched {
    if plural == "secrets" {
        return &super::SECRET;
    }
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
    let (key, v) = convert(watched("secrets"), &json(SECRET_JSON)).unwrap();
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
    publish(&kinds, &SecretWatches::default(), &out);
    assert!(rx.borrow_and_update().sources.is_none(), "nodes not listed yet");
    kinds[0].event(&WATCHED[0], Event::Init);
    kinds[0].event(&WATCHED[0], Event::InitApply(dynamic(NODE_RR)));
    kinds[0].event(&WATCHED[0], Event::InitDone);
    publish(&kinds, &SecretWatches::default(), &out);
    let first = rx.borrow_and_update().sources.clone().expect("complete");
    assert_eq!(first.len(), 1);
    let services = WATCHED.iter().position(|w| w.plural == "services").unwrap();
    kinds[services].error(&WATCHED[services], &api_error(500));
    publish(&kinds, &SecretWatches::default(), &out);
    let f = rx.borrow_and_update().clone();
    assert!(f.unreachable.as_ref().is_some_and(|u| u.reason.contains("services")), "{:?}", f.unreachable);
    assert_eq!(f.sources.as_deref(), Some(&*first), "the last content stays");
    kinds[services].event(&WATCHED[services], Event::Init);
    kinds[services].event(&WATCHED[services], Event::InitDone);
    publish(&kinds, &SecretWatches::default(), &out);
    assert!(rx.borrow_and_update().unreachable.is_none());
}

mod api_server;

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
    server.apply("/api/v1/nodes", json(NODE_RR));
    server.apply(PEERS, peer("tor", Some("bgp-password")));
    server.apply(SECRETS, secret("bgp-password", "password", "s3cr3t"));
    server.apply(SECRETS, secret("unrelated", "token", "not bgpd's business"));
    server.forbid_secret("not-granted");
    let client = server.start().await;
    let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
    let task = tokio::spawn(watch(client, "kube-system".into(), Publisher { tx }));

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

/// The shipped RBAC grants exactly what the watchers read: get/list/watch on every
/// kind of `WATCHED` cluster-wide, and Secrets only by name in bgpd's namespace.
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
    for rule in rules("ClusterRole") {
        assert_eq!(strings(&rule["verbs"]), ["get", "list", "watch"], "{rule:?}");
        assert!(rule.get("resourceNames").is_none());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                granted.insert((group.clone(), resource));
            }
        }
    }
    let watched: BTreeSet<(String, String)> =
        WATCHED.iter().map(|w| (w.group.to_string(), w.plural.to_string())).collect();
    assert_eq!(granted, watched, "the ClusterRole and WATCHED differ");
    let secrets = rules("Role");
    assert_eq!(secrets.len(), 1);
    assert_eq!(strings(&secrets[0]["resources"]), ["secrets"]);
    assert!(!strings(&secrets[0]["resourceNames"]).is_empty(), "Secrets must be granted by name");
}
