//! The status as rendered from a daemon's state, the table, the requests read
//! from a datastore, and (through the API-server stand-in) the Kubernetes
//! datastore end to end. What is rendered is checked against Calico's CRD
//! schemas (`../shared/data/calico-crds`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bgpd_proto::session::State;
use serde_json::{json, Value};

use super::render::{peer_type, render, Snapshot};
use super::request::requests;
use super::*;
use crate::daemon::status::Facts;
use crate::daemon::status::{PeerView, RouteView};
use crate::datastore::{parse_sources, SourceText};
use testgate::crd_schema;

/// 2026-11-30T04:33:20Z.
const T0: u64 = 1_796_013_200;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn peer(name: &str, addr: &str, state: State) -> PeerView {
    let mut v = PeerView::new(name, addr.parse().unwrap(), 64512, 64512);
    v.state = state;
    if state == State::Established {
        v.established_since = Some(T0 - 3600);
    }
    v
}

fn route(prefix: &str, peer: &str, next_hop: &str, best: bool) -> RouteView {
    RouteView {
        prefix: prefix.parse().unwrap(),
        path_id: None,
        peer: peer.into(),
        next_hop: Some(next_hop.into()),
        as_path: String::new(),
        origin: None,
        med: None,
        local_pref: None,
        communities: vec![],
        large_communities: vec![],
        best,
        multipath: best,
        stale: false,
        lost: (!best).then(|| "lower LOCAL_PREF".into()),
    }
}

/// A dual-stack node with a mesh peer (up), a global peer (connecting) and a
/// node-specific IPv6 peer (up), routes from two of them, a block and a
/// service address of its own.
fn snapshot() -> Snapshot {
    let facts = Facts {
        router_id: Some("10.0.0.1".parse().unwrap()),
        families: (true, true),
        booted_at: Some(at(T0 - 7200)),
        peer_types: BTreeMap::from([
            ("mesh/n2".into(), PeerType::NodeMesh),
            ("tor".into(), PeerType::GlobalPeer),
            ("rr6/rr-1/ipv6".into(), PeerType::NodePeer),
        ]),
    };
    Snapshot {
        facts,
        peers: vec![
            peer("mesh/n2", "10.0.0.2:179", State::Established),
            peer("rr6/rr-1/ipv6", "[fd00::9]:179", State::Established),
            peer("tor", "10.0.0.254:179", State::Active),
        ],
        routes: vec![
            route("10.244.2.0/26", "mesh/n2", "10.0.0.2", true),
            route("10.244.2.0/26", "tor", "10.0.0.254", false),
            route("192.0.2.0/24", "tor", "10.0.0.254", true),
            route("fd00:244:2::/122", "rr6/rr-1/ipv6", "fd00::9", true),
        ],
        originations: vec![("10.244.1.0/26".parse().unwrap(), true), ("192.0.2.10/32".parse().unwrap(), false)],
        kernel_on: true,
        kernel_failing: ["192.0.2.0/24".parse().unwrap()].into(),
        running: true,
        reconfigured_at: Some(at(T0 - 60)),
    }
}

fn schema(group_dir: &str, version: &str, test: &str) -> Option<Value> {
    let path = testgate::shared_data(test, format!("calico-crds/{group_dir}/caliconodestatuses.yaml"))?;
    Some(crd_schema::load(&path, version))
}

#[test]
fn every_class_renders_as_calico_names_it() {
    let s = render(&snapshot(), Classes::ALL, at(T0));
    assert_eq!(s.last_updated.as_deref(), Some("2026-11-30T04:33:20Z"));
    let agent = s.agent.as_ref().expect("agent");
    let v4 = agent.bird_v4.as_ref().expect("birdV4");
    assert_eq!(v4.state, AgentState::Ready);
    assert_eq!(v4.router_id, "10.0.0.1");
    assert_eq!(v4.last_boot_time, "2026-11-30 02:33:20");
    assert_eq!(v4.last_reconfiguration_time.as_deref(), Some("2026-11-30 04:32:20"));
    assert_eq!(agent.bird_v6.as_ref(), Some(v4), "one daemon for both families");

    let bgp = s.bgp.as_ref().expect("bgp");
    assert_eq!(
        (
            bgp.number_established_v4,
            bgp.number_not_established_v4,
            bgp.number_established_v6,
            bgp.number_not_established_v6
        ),
        (1, 1, 1, 0)
    );
    let v4: Vec<(&str, PeerType, SessionState, Option<&str>)> =
        bgp.peers_v4.iter().map(|p| (p.peer_ip.as_str(), p.kind, p.state, p.since.as_deref())).collect();
    assert_eq!(
        v4,
        [
            ("10.0.0.2", PeerType::NodeMesh, SessionState::Established, Some("2026-11-30 03:33:20")),
            ("10.0.0.254", PeerType::GlobalPeer, SessionState::Active, None),
        ]
    );
    assert_eq!(bgp.peers_v6[0].peer_ip, "fd00::9");
    assert_eq!(bgp.peers_v6[0].kind, PeerType::NodePeer);

    let routes = s.routes.as_ref().expect("routes");
    type Row<'a> = (&'a str, RouteType, Option<&'a str>, SourceType, Option<&'a str>);
    let v4: Vec<Row> = routes
        .routes_v4
        .iter()
        .map(|r| {
            (
                r.destination.as_str(),
                r.kind,
                r.gateway.as_deref(),
                r.learned_from.source_type,
                r.learned_from.peer_ip.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        v4,
        [
            // The mesh path is used; the global peer's other path to it is not listed.
            ("10.244.2.0/26", RouteType::Fib, Some("10.0.0.2"), SourceType::NodeMesh, Some("10.0.0.2")),
            // Failing in the kernel: in the RIB only.
            ("192.0.2.0/24", RouteType::Rib, Some("10.0.0.254"), SourceType::BgpPeer, Some("10.0.0.254")),
            // The node's block has its blackhole; the service address is only advertised.
            ("10.244.1.0/26", RouteType::Fib, None, SourceType::Static, None),
            ("192.0.2.10/32", RouteType::Rib, None, SourceType::Static, None),
        ]
    );
    assert_eq!(routes.routes_v4[2].interface.as_deref(), Some("blackhole"));
    assert_eq!(routes.routes_v6.len(), 1);
    assert_eq!(routes.routes_v6[0].learned_from.source_type, SourceType::BgpPeer);
}

#[test]
fn only_the_classes_asked_for_are_rendered() {
    let s = render(&snapshot(), Classes { agent: false, bgp: true, routes: false }, at(T0));
    assert!(s.agent.is_none() && s.routes.is_none() && s.bgp.is_some());
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["bgp", "lastUpdated"]);
    let s = render(&snapshot(), Classes::default(), at(T0));
    assert_eq!(serde_json::to_value(&s).unwrap(), json!({ "lastUpdated": "2026-11-30T04:33:20Z" }));
}

#[test]
fn a_decommissioned_node_is_not_ready_and_without_kernel_routes_are_rib_only() {
    let mut snap = snapshot();
    snap.running = false;
    snap.kernel_on = false;
    snap.facts.families = (true, false);
    let s = render(&snap, Classes::ALL, at(T0));
    let agent = s.agent.unwrap();
    assert_eq!(agent.bird_v4.unwrap().state, AgentState::NotReady);
    assert!(agent.bird_v6.is_none(), "no IPv6 address: no IPv6 agent");
    assert!(s.routes.unwrap().routes_v4.iter().all(|r| r.kind == RouteType::Rib));
}

#[test]
fn the_rendered_status_fits_both_crd_schemas() {
    let test = "the_rendered_status_fits_both_crd_schemas";
    for (dir, version) in [("projectcalico.org-v3", "v3"), ("crd.projectcalico.org-v1", "v1")] {
        let Some(schema) = schema(dir, version, test) else { return };
        let status = render(&snapshot(), Classes::ALL, at(T0));
        let object = json!({
            "apiVersion": "projectcalico.org/v3", "kind": "CalicoNodeStatus",
            "metadata": { "name": "n1-status" },
            "spec": { "node": "n1", "classes": ["Agent", "BGP", "Routes"], "updatePeriodSeconds": 10 },
            "status": status,
        });
        assert_eq!(crd_schema::check(&schema, &object), Vec::<String>::new(), "{dir}");
        // The checker refuses what the API server would.
        let mut bad = object.clone();
        bad["status"]["bgp"]["peersV4"][0]["type"] = json!("Mesh");
        bad["status"]["routes"]["routesV4"][0]["learnedFrom"]["source"] = json!("x");
        bad["status"]["lastUpdated"] = json!("yesterday");
        bad["status"]["bgp"].as_object_mut().unwrap().remove("numberEstablishedV6");
        let errors = crd_schema::check(&schema, &bad);
        assert_eq!(errors.len(), 4, "{errors:#?}");
    }
}

#[test]
fn the_table_is_calicoctls() {
    let s = render(&snapshot(), Classes::ALL, at(T0));
    let want = "\
Calico process is running.

IPv4 BGP status
+--------------+-------------------+-------+----------+-------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+--------------+-------------------+-------+----------+-------------+
| 10.0.0.2     | node-to-node mesh | up    | 03:33:20 | Established |
| 10.0.0.254   | global            | start | -        | Active      |
+--------------+-------------------+-------+----------+-------------+

IPv6 BGP status
+--------------+---------------+-------+----------+-------------+
| PEER ADDRESS |   PEER TYPE   | STATE |  SINCE   |    INFO     |
+--------------+---------------+-------+----------+-------------+
| fd00::9      | node specific | up    | 03:33:20 | Established |
+--------------+---------------+-------+----------+-------------+
";
    assert_eq!(table::render(&s, "2026-11-30"), want);
    // Up since an earlier day: the date, as BIRD shows it.
    let next_day = table::render(&s, "2026-12-01");
    assert!(next_day.contains("| fd00::9      | node specific | up    | 2026-11-30 | Established |"), "{next_day}");
    let mut stopping = s.clone();
    stopping.agent.as_mut().unwrap().bird_v4.as_mut().unwrap().state = AgentState::NotReady;
    assert!(table::render(&stopping, "2026-11-30").lines().nth(1).unwrap().contains("decommissioning"));
}

#[test]
fn no_peers_says_so_per_family() {
    let s = render(&Snapshot::default(), Classes::ALL, at(T0));
    assert_eq!(
        table::render(&s, "2026-11-30"),
        "Calico process is running.\n\nIPv4 BGP status\nNo IPv4 peers found.\n\nIPv6 BGP status\nNo IPv6 peers found.\n"
    );
}

fn source(text: &str) -> SourceText {
    SourceText { path: "/calico/bgpd/caliconodestatuses/x".into(), text: text.into() }
}

#[test]
fn requests_are_read_for_this_node_only_and_bad_ones_named() {
    let text = "\
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: n1-all}
spec: {node: n1, classes: [Agent, BGP, Routes], updatePeriodSeconds: 10}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: n1-never}
spec: {node: n1, classes: [BGP], updatePeriodSeconds: 0}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: n2-bgp}
spec: {node: n2, classes: [BGP], updatePeriodSeconds: 5}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: n1-typo}
spec: {node: n1, classes: [BGP, Peers], updatePeriodSeconds: 5}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: n1-negative}
spec: {node: n1, classes: [BGP], updatePeriodSeconds: -1}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: nobody}
spec: {classes: [BGP]}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.254, asNumber: 65001}
";
    let (reqs, problems) = requests(&[source(text)], "n1");
    let got: Vec<(&str, Classes, Option<u64>)> =
        reqs.iter().map(|r| (r.name.as_str(), r.classes, r.period.map(|p| p.as_secs()))).collect();
    assert_eq!(
        got,
        [("n1-all", Classes::ALL, Some(10)), ("n1-never", Classes { agent: false, bgp: true, routes: false }, None)]
    );
    assert_eq!(reqs[0].object["spec"]["updatePeriodSeconds"], 10);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("\"n1-typo\": spec.classes: \"Peers\" is none of Agent, BGP, Routes"),
        "{problems:#?}"
    );
    assert!(problems[1].contains("\"n1-negative\": spec.updatePeriodSeconds: -1 is not a number"), "{problems:#?}");
    assert!(problems[2].contains("\"nobody\": spec.node: missing"), "{problems:#?}");
    assert!(problems.iter().all(|p| p.contains("/calico/bgpd/caliconodestatuses/x")), "names where: {problems:#?}");
    let (reqs, _) = requests(&[source(text)], "n2");
    assert_eq!(reqs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["n2-bgp"]);
    // The routing model ignores the kind.
    let (model, _) = parse_sources(&[source(text)]).unwrap();
    assert_eq!(model.peers.len(), 1);
}

#[test]
fn peer_types_follow_the_bgppeer_that_made_the_session() {
    let yaml = "\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.254, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack}
spec: {nodeSelector: all(), peerIP: 10.0.0.253, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: to-rr}
spec: {node: n1, peerSelector: has(rr)}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: vms}
spec: {localWorkloadSelector: has(router), asNumber: 65300}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-vms}
spec: {nodeSelector: all(), localWorkloadSelector: has(router), asNumber: 65300}
";
    let (model, _) = parse_sources(&[source(yaml)]).unwrap();
    assert_eq!(peer_type("tor", &model), PeerType::GlobalPeer);
    assert_eq!(peer_type("rack", &model), PeerType::NodePeer);
    assert_eq!(peer_type("to-rr/rr-1/ipv6", &model), PeerType::NodePeer);
    assert_eq!(peer_type("mesh/n2", &model), PeerType::NodeMesh);
    assert_eq!(peer_type("mesh/n2/ipv6", &model), PeerType::NodeMesh);
    assert_eq!(peer_type("local/vms/virt/vm-1", &model), PeerType::GlobalPeer);
    assert_eq!(peer_type("local/rack-vms/virt/vm-1/ipv6", &model), PeerType::NodePeer);
}

// The datastore's tests include it too; its items are `pub(super)` to them.
#[path = "../../datastore/live/kubernetes/tests/api_server.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod api_server;

/// Waits (at most 10 s) until `f` gives a value.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn kubernetes_status_is_patched_through_the_status_subresource() {
    let test = "kubernetes_status_is_patched_through_the_status_subresource";
    let Some(schema) = schema("crd.projectcalico.org-v1", "v1", test) else { return };
    let server = api_server::ApiServer::default();
    // Each status PATCH is admitted against the CRD, as a real API server does.
    if !server.admit_calico_crds(test) {
        return;
    }
    server.serve_calico("crd.projectcalico.org/v1");
    server.serve_resource("crd.projectcalico.org/v1", "caliconodestatuses", "CalicoNodeStatus");
    server.serve_status("caliconodestatuses");
    let collection = "/apis/crd.projectcalico.org/v1/caliconodestatuses";
    let object = |name: &str, node: &str, classes: &[&str], period: u32| {
        json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "CalicoNodeStatus", "metadata": { "name": name },
            "spec": { "node": node, "classes": classes, "updatePeriodSeconds": period },
        })
    };
    server.apply(collection, object("n1-all", "n1", &["Agent", "BGP", "Routes"], 1));
    server.apply(collection, object("n1-never", "n1", &["BGP"], 0));
    server.apply(collection, object("n2-bgp", "n2", &["BGP"], 1));
    let client = server.start().await;

    // The daemon's state: n1 with a mesh session up and a global peer connecting.
    let shared = crate::daemon::status::Shared::default();
    {
        let snap = snapshot();
        let mut s = shared.lock();
        s.node_status = snap.facts.clone();
        for p in snap.peers {
            s.peers.insert(p.name.clone(), crate::daemon::status::PeerStatus { view: p, established_at: None });
        }
        s.originations = vec![crate::daemon::originate::Origination {
            prefix: "10.244.1.0/26".parse().unwrap(),
            cause: "block".into(),
            communities: vec![],
            blackhole: true,
        }];
    }
    let reqs = follow::spawn("n1", client.clone());
    let target = writer::Target::Kubernetes { client: Some(client), api: None };
    let task = tokio::spawn(writer::run(target, shared.clone(), None, reqs));

    let written =
        eventually("n1-all's status", || server.object(collection, "n1-all").filter(|o| o["status"].is_object())).await;
    assert_eq!(crd_schema::check(&schema, &written), Vec::<String>::new(), "{written:#}");
    assert_eq!(written["spec"], object("n1-all", "n1", &["Agent", "BGP", "Routes"], 1)["spec"]);
    let status = &written["status"];
    assert_eq!(status["bgp"]["numberEstablishedV4"], 1);
    assert_eq!(status["bgp"]["numberNotEstablishedV4"], 1);
    assert_eq!(status["bgp"]["peersV4"][1]["type"], "GlobalPeer");
    assert_eq!(status["agent"]["birdV6"]["routerID"], "10.0.0.1");
    assert_eq!(status["routes"]["routesV4"][0]["destination"], "10.244.1.0/26");
    let patched = |name: &str| {
        let path = format!("PATCH {collection}/{name}/status?");
        server.requests().iter().filter(|r| r.starts_with(&path)).count()
    };
    // Written again every second.
    eventually("a second write", || (patched("n1-all") >= 2).then_some(())).await;
    assert_eq!((patched("n1-never"), patched("n2-bgp")), (0, 0), "period 0, and another node's");
    // The stand-in logs a PATCH when it arrives; the writer counts it when
    // the answer is back: wait for the count too.
    let written = || {
        crate::daemon::metrics::render(&shared)
            .lines()
            .find_map(|l| l.strip_prefix("bgpd_node_status_writes_total{result=\"written\"} "))
            .and_then(|n| n.parse::<u64>().ok())
    };
    eventually("two writes counted", || written().filter(|n| *n >= 2)).await;
    assert!(server.object(collection, "n2-bgp").unwrap().get("status").is_none());

    // The user asks for BGP only: the other sections go (a merge patch with nulls).
    let mut edited = server.object(collection, "n1-all").unwrap();
    edited["spec"]["classes"] = json!(["BGP"]);
    server.apply(collection, edited);
    let written = eventually("a status of BGP only", || {
        server
            .object(collection, "n1-all")
            .filter(|o| o["status"]["agent"].is_null() && o["status"]["routes"].is_null())
    })
    .await;
    assert_eq!(written["status"]["bgp"]["numberEstablishedV4"], 1);
    assert_eq!(crd_schema::check(&schema, &written), Vec::<String>::new());

    // Gone from the API: no more writes to it.
    server.delete(collection, "n1-all");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = patched("n1-all");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(patched("n1-all") <= before + 1, "writes go on for a deleted object");
    task.abort();
}

#[test]
fn the_keeper_reparses_one_object_and_reports_a_problem_once() {
    let mut k = request::Keeper::new("n1");
    let object = |node: &str, period: &str| {
        format!(
            "{{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"CalicoNodeStatus\", \"metadata\": {{\"name\": \"s\"}}, \
             \"spec\": {{\"node\": \"{node}\", \"classes\": [\"BGP\"], \"updatePeriodSeconds\": {period}}}}}"
        )
    };
    assert!(k.put("/p/caliconodestatuses/s", &object("n1", "10")).is_empty());
    assert!(k.put("/p/caliconodestatuses/t", &object("n2", "10")).is_empty());
    assert_eq!(k.requests().len(), 1);
    assert_eq!(k.requests()[0].source, std::path::PathBuf::from("/p/caliconodestatuses/s"));
    let first = k.put("/p/caliconodestatuses/s", &object("n1", "\"soon\""));
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("spec.updatePeriodSeconds"), "{first:?}");
    assert!(k.put("/p/caliconodestatuses/s", &object("n1", "\"soon\"")).is_empty(), "said once");
    assert!(k.requests().is_empty(), "an object in error is not written");
    k.put("/p/caliconodestatuses/s", &object("n1", "5"));
    assert_eq!(k.requests()[0].period, Some(Duration::from_secs(5)));
    k.delete("/p/caliconodestatuses/s");
    assert!(k.requests().is_empty());
    assert!(sources::etcd_owns("/calico/bgpd/", "/calico/bgpd/caliconodestatuses/s"));
    assert!(!sources::etcd_owns("/calico/bgpd/", "/calico/bgpd/bgppeers/s"));
    assert_eq!(
        sources::etcd_dirs("/calico/bgpd/"),
        ["/calico/bgpd/caliconodestatuses/", "/calico/resources/v3/projectcalico.org/caliconodestatuses/"]
    );
}
