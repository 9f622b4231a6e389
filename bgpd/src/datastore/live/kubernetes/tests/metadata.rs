//! Nodes read as metadata only (issue 20, item 5): bgpd reads a Node's name,
//! labels and annotations, never its spec or status, so it lists and watches
//! Nodes as `PartialObjectMetadata` and a kubelet's status post costs it the
//! Node's metadata, not the whole Node.

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;

use super::api_server::ApiServer;
use super::{convert, json, published, running, watched, watching, NODES, NODE_RR, V1, V1_PEERS, WATCHES};

/// What kube's `list_metadata` and `watch_metadata` send (kube-core's
/// `JSON_METADATA_LIST_MIME` and `JSON_METADATA_MIME`).
const AS_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
const AS_OBJECT: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// NODE_RR with Calico's labels and annotations of a Node (written by
/// calicoctl or Calico's API server) and a kubelet's status.
fn calico_node() -> Value {
    let mut node = json(NODE_RR);
    let annotations = &mut node["metadata"]["annotations"];
    annotations["projectcalico.org/labels"] = r#"{"rack":"calico-value","zone":"z1"}"#.into();
    annotations["projectcalico.org/annotations"] = r#"{"bgpd.io/note":"from calico"}"#.into();
    node
}

/// `node` with a status as large as a kubelet reports (conditions, capacity,
/// node info and the 50 images of `nodeStatusMaxImages`; as `bench kube-api`'s
/// Nodes): about 14 KB, its heartbeats at `beat` seconds.
fn with_kubelet_status(mut node: Value, beat: u64) -> Value {
    let images: Vec<Value> = (0..50u64)
        .map(|k| {
            serde_json::json!({ "names": [
                format!("registry.example.com/platform-team-{}/service-{k}-backend@sha256:{:064x}", k % 7, k * 0x9e37_79b9),
                format!("registry.example.com/platform-team-{}/service-{k}-backend:v1.{}.0", k % 7, k % 13),
            ], "sizeBytes": 10_000_000 + k * 1_234_567 })
        })
        .collect();
    let heartbeat = format!("2026-01-01T{:02}:{:02}:{:02}Z", beat / 3600 % 24, beat / 60 % 60, beat % 60);
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({ "type": kind, "status": status, "reason": reason, "message": message,
                            "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-01-01T00:00:00Z" })
    };
    let resources = serde_json::json!({ "cpu": "8", "ephemeral-storage": "104845292Ki", "hugepages-1Gi": "0",
                                        "hugepages-2Mi": "0", "memory": "32386544Ki", "pods": "110" });
    node["status"] = serde_json::json!({
        "capacity": resources, "allocatable": resources,
        "conditions": [
            condition("NetworkUnavailable", "False", "CalicoIsUp", "Calico is running on this node"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{ "type": "InternalIP", "address": "10.0.0.11" }, { "type": "Hostname", "address": "rr-1" }],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "architecture": "amd64", "bootID": "6f1c0e0e6d2b4c1f9a8e3d2c1b0a9f8e", "containerRuntimeVersion": "containerd://1.7.27",
            "kernelVersion": "6.1.0-37-cloud-amd64", "kubeProxyVersion": "", "kubeletVersion": "v1.33.2",
            "machineID": "ec2a8f4b1c3d4e5f6a7b8c9d0e1f2a3b", "operatingSystem": "linux",
            "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": "ec2a8f4b-1c3d-4e5f-6a7b-8c9d0e1f2a3b",
        },
        "images": images,
    });
    node
}

/// The datastore lists and watches Nodes as metadata, and every other kind as
/// whole objects.
#[tokio::test]
async fn nodes_are_listed_and_watched_as_metadata_and_other_kinds_whole() {
    let server = ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_RR));
    let mut run = running(&server).await;
    published(&mut run.rx, "the first content", |f| f.sources.is_some()).await;
    watching(&server, WATCHES).await;
    let requests = server.requests_accepting();
    let of = |collection: &str| -> Vec<(String, Option<String>)> {
        requests.iter().filter(|(r, _)| r.split_once('?').is_some_and(|(p, _)| p == collection)).cloned().collect()
    };
    let nodes = of(NODES);
    assert!(nodes.iter().any(|(r, _)| r.contains("watch=true")), "{nodes:?}");
    for (request, accept) in &nodes {
        let wanted = if request.contains("watch=true") { AS_OBJECT } else { AS_LIST };
        assert_eq!(accept.as_deref(), Some(wanted), "{request}");
    }
    let peers = of(V1_PEERS);
    assert!(!peers.is_empty());
    for (request, accept) in &peers {
        assert!(!accept.as_deref().unwrap_or_default().contains("PartialObjectMetadata"), "{request}: {accept:?}");
    }
}

/// A Node read as metadata becomes exactly the Node it became when read whole:
/// its labels merged with Calico's (`projectcalico.org/labels`), Calico's
/// annotations (`projectcalico.org/annotations`) and the BGP settings of
/// Calico's annotations; a later label change arrives through the watch.
#[tokio::test]
async fn a_node_read_as_metadata_converts_as_the_whole_node_did() {
    let server = ApiServer::default();
    server.serve_calico(V1);
    let node = with_kubelet_status(calico_node(), 0);
    server.apply(NODES, node.clone());
    let mut run = running(&server).await;
    let expected = convert(&watched("nodes"), &node).expect("a named Node").object.to_string();
    let text = |f: &super::super::super::Feed| {
        let mut sources = f.sources.iter().flat_map(|s| s.iter());
        sources.find(|s| s.path.display().to_string() == "kubernetes:nodes/rr-1").map(|s| s.text.clone())
    };
    let f = published(&mut run.rx, "the Node", |f| text(f).is_some()).await;
    assert_eq!(text(&f).as_deref(), Some(expected.as_str()));
    let model = super::model_of(&f);
    let rr = &model.nodes["rr-1"];
    assert_eq!(rr.labels.get("zone").map(String::as_str), Some("z1"), "Calico's label");
    assert_eq!(rr.labels.get("rack").map(String::as_str), Some("r1"), "the Kubernetes label wins");
    assert!(rr.bgp.as_ref().is_some_and(|b| b.as_number.is_some()), "spec.bgp from the annotations");

    watching(&server, WATCHES).await;
    let mut relabelled = node;
    relabelled["metadata"]["labels"]["rack"] = "r2".into();
    server.apply(NODES, relabelled.clone());
    let expected = convert(&watched("nodes"), &relabelled).unwrap().object.to_string();
    published(&mut run.rx, "the label change", |f| text(f).as_deref() == Some(expected.as_str())).await;
}

/// A kubelet's status post (a new heartbeat on a 14 KB Node) sends bgpd the
/// Node's metadata only: under 4 KB an event where the whole Node was 14 KB.
#[tokio::test]
async fn a_node_status_post_costs_its_metadata_not_the_whole_node() {
    const POSTS: u64 = 20;
    let server = ApiServer::default();
    server.serve_calico(V1);
    let node = with_kubelet_status(calico_node(), 0);
    let whole = serde_json::json!({ "type": "MODIFIED", "object": node }).to_string().len();
    assert!(whole > 14_000, "the Node is {whole} bytes an event");
    server.apply(NODES, node);
    let mut run = running(&server).await;
    let first = published(&mut run.rx, "the first content", |f| f.sources.is_some()).await;
    watching(&server, WATCHES).await;
    let before = server.sent().get(NODES).copied().unwrap_or_default();
    for beat in 1..=POSTS {
        server.apply(NODES, with_kubelet_status(calico_node(), beat));
    }
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        while server.sent().get(NODES).map_or(0, |s| s.events) < before.events + POSTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    delivered.await.expect("every status post sent");
    let after = server.sent()[NODES];
    let per_event = (after.bytes - before.bytes) / (after.events - before.events);
    assert!(per_event < 4_096, "{per_event} bytes per Node status post (the whole Node: {whole})");
    // And they change nothing bgpd reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        run.rx.borrow().sources.as_ref().map(std::sync::Arc::as_ptr),
        first.sources.as_ref().map(std::sync::Arc::as_ptr)
    );
}

/// The stand-in answers metadata requests as the API server does
/// (k8s.io/apiserver/pkg/endpoints/handlers/response.go): a
/// `PartialObjectMetadataList` of `PartialObjectMetadata` items holding the whole
/// metadata and nothing else, watch events whose objects are
/// `PartialObjectMetadata`, and 406 for a list asked for as one object.
#[tokio::test]
async fn the_stand_in_answers_metadata_requests_as_the_api_server_does() {
    let server = ApiServer::default();
    let node = with_kubelet_status(calico_node(), 0);
    server.apply(NODES, node.clone());
    let client = server.start().await;
    let request = kube::core::Request::new(NODES).list_metadata(&ListParams::default()).unwrap();
    let list: Value = client.request(request).await.expect("a metadata list");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    let item = &list["items"][0];
    let fields: Vec<&String> = item.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["apiVersion", "kind", "metadata"]);
    assert_eq!(item["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(item["kind"], "PartialObjectMetadata");
    let mut metadata = node["metadata"].clone();
    metadata["resourceVersion"] = item["metadata"]["resourceVersion"].clone();
    assert_eq!(item["metadata"], metadata, "the whole metadata, managedFields included");

    let mut as_object = kube::core::Request::new(NODES).list(&ListParams::default()).unwrap();
    as_object.headers_mut().insert("accept", AS_OBJECT.parse().unwrap());
    match client.request::<Value>(as_object).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 406),
        other => panic!("a list asked for as PartialObjectMetadata: {other:?}"),
    }

    let nodes: Api<DynamicObject> = Api::all_with(client, &watched("nodes").resource());
    let mut events = Box::pin(nodes.watch_metadata(&WatchParams::default().timeout(10), "0").await.unwrap());
    let mut changed = node;
    changed["metadata"]["labels"]["rack"] = "r2".into();
    server.apply(NODES, changed);
    let event = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut events)).await;
    let Ok(Some(Ok(WatchEvent::Modified(o)))) = event else { panic!("no MODIFIED event: {event:?}") };
    let types = o.types.expect("type fields");
    assert_eq!((types.api_version.as_str(), types.kind.as_str()), ("meta.k8s.io/v1", "PartialObjectMetadata"));
    assert_eq!(o.metadata.labels.unwrap()["rack"], "r2");
}
