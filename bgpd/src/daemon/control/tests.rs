use super::*;
use crate::daemon::rib::{RibCmd, RibHandle};
use crate::daemon::status::{PeerStatus, PeerView, RouteView};

fn shared_with_routes() -> Control {
    let shared = Shared::default();
    let view =
        PeerView { peer_id: Some("10.0.0.2".into()), peer_hostname: Some("tor-1".into()), ..PeerView::example("tor") };
    let routes: Vec<RouteView> = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]
        .iter()
        .map(|p| RouteView {
            prefix: p.parse().unwrap(),
            path_id: None,
            peer: "tor".into(),
            next_hop: Some("10.0.0.2".into()),
            as_path: "65010".into(),
            origin: Some("Igp".into()),
            med: None,
            local_pref: None,
            communities: vec!["65010:1".into()],
            large_communities: vec![],
            best: true,
            multipath: true,
            stale: false,
            lost: None,
        })
        .collect();
    // A stand-in for the RIB task: answers `show routes` from a fixed list.
    let (handle, mut rx) = RibHandle::new();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let RibCmd::Routes(filter, reply) = cmd {
                let r: Vec<RouteView> = routes
                    .iter()
                    .filter(|r| filter.is_none_or(|q: IpNet| q.contains(&r.prefix) || r.prefix.contains(&q.addr())))
                    .cloned()
                    .collect();
                let _ = reply.send(r);
            }
        }
    });
    shared.lock().peers.insert("tor#0".into(), PeerStatus { view, established_at: None });
    Control { shared, rib: Some(handle), lifecycle: None }
}

/// A node with two ToR peers and a real RIB behind the control socket:
/// tor-a (AS 65010) sends three routes, tor-b (AS 65020) has a BGPFilter
/// that rejects one of them on export; the node originates a block.
fn shared_with_a_rib() -> Control {
    use crate::daemon::originate::Origination;
    use crate::daemon::rib::{origination_attrs, peer_config, rib_config};
    use bgpd_proto::nlri::Nlri;
    use bgpd_proto::rib::core::{Rib, SessionInfo};
    use bgpd_proto::rib::policy::{Action, CidrMatch, ExportRange, Filter, MatchOperator, RangeSource, Rule};
    use bgpd_proto::wire::{AsPath, Attr, Origin, PathAttribute, Update};
    use bgpd_proto::{FamilySet, WireContext};
    use std::sync::Arc;

    let net = |s: &str| -> IpNet { s.parse().unwrap() };
    let mut node = crate::daemon::spec::NodeSpec {
        originations: vec![Origination {
            prefix: net("10.244.1.0/26"),
            cause: "IPAMBlock 10-244-1-0-26 (affinity host:node-1, IPPool pods)".into(),
            communities: vec![],
            blackhole: true,
        }],
        exportable: vec![ExportRange { cidr: net("10.244.0.0/16"), source: RangeSource::IpPool("pods".into()) }],
        ..crate::daemon::peer::tests::node()
    };
    node.exportable
        .push(ExportRange { cidr: net("10.250.0.0/16"), source: RangeSource::IpPoolExportDisabled("quiet".into()) });
    let exportable = Arc::new(node.exportable.clone());
    let now = std::time::Instant::now();
    let mut rib = Rib::new(rib_config(&node, false), now);
    let mut a = crate::daemon::peer::tests::spec();
    a.name = "tor-a".into();
    let mut b = a.clone();
    b.name = "tor-b".into();
    b.addr = "10.0.0.3:179".parse().unwrap();
    b.peer_as = 65020;
    let mut no_pods = Filter { name: "no-pods".into(), ..Filter::default() };
    let mut rule = Rule::new(Action::Reject);
    rule.cidr = Some(CidrMatch { cidr: net("10.244.8.0/24"), op: MatchOperator::In, min_len: None, max_len: None });
    no_pods.export_v4 = vec![rule];
    b.routing.filters = vec![Arc::new(no_pods)];
    let ia = rib.add_peer(peer_config(&a, &exportable, node.asn));
    let ib = rib.add_peer(peer_config(&b, &exportable, node.asn));
    for (id, addr) in [(ia, "10.0.0.2"), (ib, "10.0.0.3")] {
        let session = SessionInfo {
            peer_id: addr.parse().unwrap(),
            families: FamilySet::of(&[bgpd_proto::Family::IPV4_UNICAST]),
            tx: WireContext::new(true),
            local_v4: node.ipv4,
            local_v6: None,
            shared_v4: None,
            shared_v6: None,
            route_refresh: true,
            enhanced_refresh: false,
            graceful_restart: None,
            long_lived: false,
        };
        rib.peer_up(id, session, now);
    }
    let mut u = Update {
        attributes: vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence([65010]))),
            PathAttribute::new(Attr::NextHop("10.0.0.2".parse().unwrap())),
        ],
        ..Update::default()
    };
    for p in ["10.244.8.0/26", "192.168.0.0/24", "10.250.3.0/26"] {
        let IpNet::V4(v4) = net(p) else { unreachable!("IPv4 test prefixes") };
        u.nlri.push(Nlri::new(v4));
    }
    rib.update(ia, &u, false, now);
    rib.originate(net("10.244.1.0/26"), Some(origination_attrs(&[])));
    rib.flush(now);
    while rib.poll_output().is_some() {}

    // The RIB task's part: answer `explain` from this RIB.
    let (handle, mut rx) = RibHandle::new();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let RibCmd::Explain(prefix, reply) = cmd {
                let _ = reply.send(rib.explain(prefix));
            }
        }
    });
    let shared = Shared::default();
    shared.lock().originations = node.originations.clone();
    Control { shared, rib: Some(handle), lifecycle: None }
}

/// The advertised lines of `peer` in an `explain` answer.
fn advertised<'a>(v: &'a serde_json::Value, peer: &str) -> &'a serde_json::Value {
    let peers = v["explain"]["peers"].as_array().expect("peers");
    &peers.iter().find(|p| p["name"] == peer).expect("the peer")["advertised"]
}

#[tokio::test]
async fn explain_answers_over_the_socket_in_words_and_codes() {
    let dir = std::env::temp_dir().join(format!("bgpd-explain-test-{}", std::process::id()));
    let path = dir.join("bgpd.sock");
    let p = path.clone();
    let shared = shared_with_a_rib();
    let server = tokio::spawn(async move { serve(&p, shared).await });
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ask_explain = |prefix: &str, peer: Option<&str>| Request::Explain {
        prefix: prefix.parse().unwrap(),
        peer: peer.map(str::to_string),
    };

    // A learned pod route: tor-b's filter rejects it, tor-a sent it.
    let req = ask_explain("10.244.8.0/26", None);
    let v = ask(&path, &req).await.unwrap();
    assert_eq!(advertised(&v, "tor-b")[0]["code"], "rejected_by_rule", "{v}");
    let text = render(&req, &v);
    assert!(text.contains("BGPFilter no-pods exportV4 rule 1: cidr In 10.244.8.0/24, Reject"), "{text}");
    assert!(text.contains("the path from tor-a: not sent back to the peer it came from"), "{text}");
    assert!(text.contains("tor-a") && text.contains("best path"), "{text}");

    // A learned route outside every pool, one in a pool with disableBGPExport.
    let v = ask(&path, &ask_explain("192.168.0.0/24", Some("tor-b"))).await.unwrap();
    assert_eq!(advertised(&v, "tor-b")[0]["code"], "not_exportable", "{v}");
    assert_eq!(v["explain"]["peers"].as_array().unwrap().len(), 1, "only the peer asked about");
    let v = ask(&path, &ask_explain("10.250.3.0/26", Some("tor-b"))).await.unwrap();
    assert_eq!(advertised(&v, "tor-b")[0]["code"], "export_disabled", "{v}");
    assert!(advertised(&v, "tor-b")[0]["text"].as_str().unwrap().contains("IPPool quiet"), "{v}");

    // The node's own block: why it exists, sent to both by Calico's default.
    let req = ask_explain("10.244.1.0/26", None);
    let v = ask(&path, &req).await.unwrap();
    assert_eq!(v["explain"]["originated"], "IPAMBlock 10-244-1-0-26 (affinity host:node-1, IPPool pods)");
    assert_eq!(advertised(&v, "tor-a")[0]["code"], "sent");
    assert_eq!(v["explain"]["kernel"]["code"], "originated");
    let text = render(&req, &v);
    assert!(text.contains("Calico's default export (this node's own route)"), "{text}");

    // Not in the RIB at all, and a peer that does not exist.
    let v = ask(&path, &ask_explain("10.99.0.0/16", Some("tor-a"))).await.unwrap();
    assert_eq!(v["explain"]["kernel"]["code"], "no_route");
    assert_eq!(v["explain"]["peers"][0]["received"]["code"], "not_in_rib");
    let err = ask(&path, &ask_explain("10.99.0.0/16", Some("nope"))).await.unwrap_err();
    assert!(err.to_string().contains("no peer named") && err.to_string().contains("nope"), "{err}");
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_requests_are_one_json_line() {
    let r: Request = serde_json::from_str(r#"{"request":"explain","prefix":"10.244.1.0/26","peer":"tor-a"}"#).unwrap();
    assert_eq!(r, Request::Explain { prefix: "10.244.1.0/26".parse().unwrap(), peer: Some("tor-a".into()) });
}

#[test]
fn requests_are_one_json_line_each() {
    assert_eq!(serde_json::to_string(&Request::Peers).unwrap(), r#"{"request":"peers"}"#);
    let r: Request = serde_json::from_str(r#"{"request":"routes","prefix":"192.0.2.0/24"}"#).unwrap();
    assert_eq!(r, Request::Routes { prefix: Some("192.0.2.0/24".parse().unwrap()) });
    assert!(serde_json::from_str::<Request>(r#"{"request":"everything"}"#).is_err());
    let r: Request = serde_json::from_str(r#"{"request":"stop","how":"withdraw","drain_secs":5}"#).unwrap();
    assert_eq!(r, Request::Stop { how: StopHow::Withdraw, drain_secs: Some(5) });
}

#[tokio::test]
async fn routes_filter_by_prefix_and_render_as_a_table() {
    let shared = shared_with_routes();
    let all = answer(&shared, &Request::Routes { prefix: None }).await;
    assert_eq!(all["routes"].as_array().unwrap().len(), 3);
    let req = Request::Routes { prefix: Some("192.0.2.128/25".parse().unwrap()) };
    let some = answer(&shared, &req).await;
    assert_eq!(some["routes"].as_array().unwrap().len(), 1, "the covering route");
    let table = render(&req, &some);
    assert!(table.lines().nth(1).unwrap().starts_with("*> 192.0.2.0/24"), "{table}");
    let peers = render(&Request::Peers, &answer(&shared, &Request::Peers).await);
    assert!(peers.contains("tor") && peers.contains("Established") && peers.contains("tor-1"), "{peers}");
}

#[tokio::test]
async fn peers_say_the_deferral_and_the_decommission() {
    use crate::daemon::status::{Deferral, Lifecycle};
    let shared = shared_with_routes();
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(42);
    shared.shared.lock().deferral =
        Some(Deferral { until, waiting: vec![("tor".into(), "End-of-RIB for ipv4/unicast".into())] });
    let v = answer(&shared, &Request::Peers).await;
    assert!(v["deferral"]["until"].as_u64().is_some(), "{v}");
    let text = render(&Request::Peers, &v);
    assert!(text.contains("restarting: selection deferral"), "{text}");
    assert!(text.contains("waiting for tor: End-of-RIB for ipv4/unicast"), "{text}");
    shared.shared.lock().deferral = None;
    shared.shared.lock().lifecycle = Lifecycle::Draining { why: "bgpd stop --withdraw".into(), until };
    let text = render(&Request::Peers, &answer(&shared, &Request::Peers).await);
    assert!(text.contains("decommissioning (bgpd stop --withdraw)"), "{text}");
    assert!(!text.contains("restarting:"), "{text}");
    shared.shared.lock().lifecycle = Lifecycle::Decommissioned { why: "Node gone".into() };
    let text = render(&Request::Peers, &answer(&shared, &Request::Peers).await);
    assert!(text.contains("decommissioned (Node gone)"), "{text}");
}

#[tokio::test]
async fn the_socket_answers_and_reports_bad_requests() {
    let dir = std::env::temp_dir().join(format!("bgpd-control-test-{}", std::process::id()));
    let path = dir.join("bgpd.sock");
    let shared = shared_with_routes();
    let p = path.clone();
    let server = tokio::spawn(async move { serve(&p, shared).await });
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let v = ask(&path, &Request::Originations).await.unwrap();
    assert!(v["originations"].as_array().unwrap().is_empty());
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(b"{\"request\":\"nonsense\"}\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    assert!(line.contains("bad request"), "{line}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "root only");
    // A request without end is cut at the limit and answered with an error.
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(&vec![b'x'; 70 * 1024]).await.unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    assert!(line.contains("request longer than 65536 bytes"), "{line}");
    // The server still answers.
    assert!(ask(&path, &Request::Originations).await.is_ok());
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn show_bfd_prints_each_session_and_the_discards() {
    let v = serde_json::json!({ "bfd": {
        "sessions": { "tor": {
            "peer": "tor", "address": "10.0.0.2", "kind": "single-hop", "interface": "eth0",
            "state": "Up", "remote_state": "Up", "local_discr": 17, "remote_discr": 99,
            "tx_interval_ms": 300, "rx_interval_ms": 300, "detection_time_ms": 900, "multiplier": 3,
            "up_since": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 125,
            "diag": "Control Detection Time Expired", "remote_diag": "Neighbor Signaled Session Down",
            "flaps": 2, "received": 10, "sent": 11, "error": null
        }},
        "discarded": { "TTL is not 255": 4 },
        "errors": []
    }});
    let text = render(&Request::Bfd, &v);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PEER") && lines[0].contains("DETECT ms"), "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..12],
        ["tor", "10.0.0.2", "single-hop", "eth0", "Up", "17", "99", "300", "300", "900", "2m05s", "2"]
    );
    assert!(lines[1].ends_with("Control Detection Time Expired (remote: Neighbor Signaled Session Down)"), "{text}");
    assert_eq!(lines[2], "discarded: 4 packets: TTL is not 255");
    assert_eq!((ago(59), ago(3600), ago(90000)), ("59s".to_string(), "1h00m".to_string(), "1d01h".to_string()));
}
