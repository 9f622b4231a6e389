//! Loading realistic manifests, every validation rule, and robustness against
//! arbitrary input.

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU8};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use bgpd_proto::rib::policy;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/datastore/testdata").join(name)
}

fn parse(text: &str) -> (Model, Vec<Problem>) {
    parse_sources(&[SourceText { path: "test.yaml".into(), text: text.into() }]).expect("no syntax error")
}

fn of(problems: &[Problem], severity: Severity) -> Vec<String> {
    problems.iter().filter(|p| p.severity == severity).map(ToString::to_string).collect()
}

fn names<'a>(peers: impl IntoIterator<Item = &'a BgpPeer>) -> Vec<&'a str> {
    peers.into_iter().map(|p| p.name.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn tor_fabric_loads_completely() {
    let (model, problems) = load(&testdata("tor-fabric.yaml")).unwrap();
    assert!(of(&problems, Severity::Error).is_empty(), "{problems:#?}");
    assert!(of(&problems, Severity::Warning).is_empty(), "{problems:#?}");
    assert!(problems.is_empty(), "{problems:#?}");
    let pool = &model.ip_pools["default-ipv4"];
    assert_eq!((pool.cidr, pool.block_size), ("10.244.0.0/16".parse().unwrap(), 26));
    assert!(!pool.disable_bgp_export);

    let c = &model.bgp_configuration;
    assert_eq!(c.as_number.get(), 64512);
    assert!(!c.node_to_node_mesh_enabled);
    assert_eq!(c.bind_mode, BindMode::NodeIp);
    assert_eq!(c.log_severity_screen, LogSeverity::Warning);
    assert_eq!(c.node_mesh_max_restart_time, Duration::from_secs(90));
    assert_eq!(c.service_cluster_ips, ["10.96.0.0/12".parse().unwrap()]);
    assert_eq!(c.service_external_ips.len(), 2);
    assert_eq!(c.service_load_balancer_ips, ["198.51.100.0/24".parse().unwrap()]);
    assert_eq!(c.communities["no-export-ish"], ConfiguredCommunity::Large(64512, 300, 100));
    assert_eq!(
        c.prefix_advertisements,
        [PrefixAdvertisement {
            cidr: "198.51.100.0/24".parse().unwrap(),
            communities: vec![ConfiguredCommunity::Large(64512, 300, 100), ConfiguredCommunity::Standard(64512, 120)],
        }]
    );
    assert_eq!(c.ignored_interfaces, ["kube-ipvs*"]);

    let a1 = model.nodes["rack-a-1"].bgp.as_ref().unwrap();
    let v4 = a1.ipv4_address.unwrap();
    assert_eq!((v4.addr().to_string(), v4.prefix_len()), ("10.1.0.11".to_string(), 24));
    assert_eq!(a1.ipv6_address.unwrap().to_string(), "fd00:1::11/64");
    assert_eq!(model.node_as_number("rack-a-1").get(), 65001);
    assert_eq!(model.node_as_number("rack-b-1").get(), 65002);
    assert_eq!(model.node_as_number("unknown-node").get(), 64512);
    assert_eq!(
        model.nodes["rack-b-1"].bgp.as_ref().unwrap().route_reflector_cluster_id,
        Some("224.0.0.1".parse().unwrap())
    );

    assert_eq!(
        names(model.peers_for_node("rack-a-1")),
        ["rack-a-1-monitor", "rack-a-tor", "route-server", "to-route-reflectors"]
    );
    assert_eq!(names(model.peers_for_node("rack-a-2")), ["rack-a-tor", "route-server", "to-route-reflectors"]);
    assert_eq!(names(model.peers_for_node("rack-b-1")), ["rack-b-tor", "route-server", "to-route-reflectors"]);
    // A node without a Node object has no labels: only global peers and selectors
    // that match the empty label set.
    assert_eq!(names(model.peers_for_node("stranger")), ["route-server", "to-route-reflectors"]);

    let tor_a = &model.peers["rack-a-tor"];
    assert_eq!(
        tor_a.remote,
        PeerRemote::Address { address: "10.1.0.1".parse().unwrap(), as_number: AsNumber::new(65101).unwrap() }
    );
    assert_eq!(tor_a.password.as_ref().unwrap().as_bytes(), b"rack-a-secret");
    assert_eq!(tor_a.keepalive_time, Some(Duration::from_secs(10)));
    assert_eq!(tor_a.max_restart_time, Some(Duration::from_secs(90)));
    assert_eq!(tor_a.ttl_security, NonZeroU8::new(1));
    assert_eq!(tor_a.filters, ["export-pods"]);
    let export_pods = model.peer_filters(tor_a);
    assert_eq!(export_pods.len(), 1);
    assert_eq!(export_pods[0].name, "export-pods");
    assert_eq!(export_pods[0].export_v4.len(), 1);
    assert!(export_pods[0].import_v4.is_empty() && export_pods[0].export_v6.is_empty());
    assert_eq!(tor_a.next_hop_mode, ConfiguredNextHopMode::Self_);
    assert_eq!(tor_a.source_address, SourceAddress::UseNodeIp);

    let tor_b = &model.peers["rack-b-tor"];
    assert_eq!(tor_b.password.as_ref().unwrap().as_bytes(), b"rack-b-secret");
    assert_eq!(tor_b.source_address, SourceAddress::None);
    assert_eq!(tor_b.reachable_by, Some(ip("10.2.0.254")));
    let PeerRemote::Address { as_number, .. } = tor_b.remote else { panic!() };
    assert_eq!(as_number.get(), 65546);

    let rs = &model.peers["route-server"];
    assert_eq!(rs.scope, PeerScope::Global);
    assert_eq!(
        rs.remote,
        PeerRemote::Address {
            address: PeerAddress { ip: ip("fd00:ff::100"), port: Some(1790) },
            as_number: AsNumber::new(64600).unwrap()
        }
    );
    assert_eq!(rs.local_as_number, AsNumber::new(64999));
    assert_eq!(rs.next_hop_mode, ConfiguredNextHopMode::Keep);
    assert_eq!(rs.num_allowed_local_as_numbers, NonZeroU32::new(2));
    assert_eq!(rs.keepalive_time, None);
    assert_eq!(model.peers["rack-a-1-monitor"].scope, PeerScope::Node("rack-a-1".into()));
    assert_eq!(
        model.peers["rack-a-1-monitor"].remote,
        PeerRemote::Address { address: "10.1.0.200:1179".parse().unwrap(), as_number: AsNumber::new(65001).unwrap() }
    );

    let PeerRemote::Nodes(rr) = &model.peers["to-route-reflectors"].remote else { panic!() };
    assert_eq!(model.nodes_matching(rr).count(), 0);

    let blocks: Vec<_> = model.blocks_for_node("rack-a-1").iter().map(|b| b.cidr.to_string()).collect();
    assert_eq!(blocks, ["10.244.0.0/26", "fd00:244::/122"], "the deleted block is left out");
    assert_eq!(model.blocks_for_node("rack-b-1").len(), 1);
    assert!(model.blocks_for_node("rack-a-2").is_empty());
}

#[test]
fn json_list_loads() {
    let (model, problems) = load(&testdata("list.json")).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let c = &model.bgp_configuration;
    assert_eq!((c.as_number.get(), c.listen_port), (65000, 1179));
    assert_eq!(c.node_mesh_password.as_ref().unwrap().as_bytes(), b"mesh-secret");
    assert_eq!(names(model.peers_for_node("node-1")), ["v6-upstream"]);
    assert!(model.peers_for_node("node-2").is_empty());
    let PeerRemote::Address { address, .. } = model.peers["v6-upstream"].remote else { panic!() };
    assert_eq!(address, PeerAddress { ip: ip("2001:db8::1"), port: Some(179) });
}

#[test]
fn directory_is_read_in_name_order_and_later_wins() {
    let (model, problems) = load(&testdata("dir")).unwrap();
    // README.md and the hidden file are not read (both are bad YAML).
    let warnings = of(&problems, Severity::Warning);
    assert_eq!(warnings.len(), 1, "{problems:#?}");
    assert!(
        warnings[0].starts_with("BGPPeer \"tor\": defined again; this definition replaces the one at "),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("10-config.yaml, document 2") && warnings[0].ends_with("30-override.json, document 1)")
    );
    let PeerRemote::Address { address, .. } = model.peers["tor"].remote else { panic!() };
    assert_eq!(address.ip, ip("10.0.0.2"));
    assert_eq!(model.bgp_configuration.as_number.get(), 65000);
    assert!(model.nodes.contains_key("node-1"));
}

#[test]
fn missing_path_is_an_io_error() {
    let err = load(&testdata("does-not-exist.yaml")).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn syntax_error_fails_the_load_with_file_and_line() {
    let text = "apiVersion: v1\nkind: Secret\n---\napiVersion: v1\nkind: [Secret\nmetadata: {}\n";
    let err = parse_sources(&[SourceText { path: "peers.yaml".into(), text: text.into() }]).unwrap_err();
    let LoadError::Syntax { line: Some(line), .. } = err else { panic!("{err:?}") };
    assert!((5..=6).contains(&line), "line {line}");
    assert!(err.to_string().starts_with(&format!("peers.yaml:{line}:")), "{err}");
}

#[test]
fn empty_input_gives_calico_defaults() {
    let (model, problems) = parse("");
    assert!(problems.is_empty());
    assert_eq!(model, Model::default());
    let c = &model.bgp_configuration;
    assert_eq!((c.as_number.get(), c.listen_port, c.node_to_node_mesh_enabled), (64512, 179, true));
    assert_eq!(c.node_mesh_max_restart_time, Duration::from_secs(120));
    assert_eq!((c.bind_mode, c.log_severity_screen), (BindMode::None, LogSeverity::Info));
}

const PEER_HEAD: &str = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-1}\n";
const GOOD_PEER: &str = "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: good}\nspec: {peerIP: 10.0.0.9, asNumber: 65000}\n";

/// Each invalid BGPPeer is reported with this exact message and skipped, and the
/// valid peer after it still loads.
#[test]
fn invalid_peers_are_reported_and_skipped() {
    let cases: &[(&str, &str)] = &[
        ("spec: {peerIP: 10.0.0.300, asNumber: 65000}", r#"spec.peerIP: "10.0.0.300" is not an IP address (expected IP, IPv4:port or [IPv6]:port)"#),
        ("spec: {peerIP: '10.0.0.1:0', asNumber: 65000}", r#"spec.peerIP: "10.0.0.1:0": port 0 is not a usable port"#),
        ("spec: {peerIP: '[fd00::1]:99999', asNumber: 65000}", r#"spec.peerIP: "[fd00::1]:99999" is not an IP address"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 0}", "spec.asNumber: AS number 0 is reserved and cannot be used"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 4294967296}", "spec.asNumber: AS number 4294967296 is out of range 1..=4294967295"),
        ("spec: {peerIP: 10.0.0.1, asNumber: '1.65536'}", r#"spec.asNumber: "1.65536": each half of a dotted AS number must be 0..=65535"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, localASNumber: 0}", "spec.localASNumber: AS number 0 is reserved"),
        ("spec: {localWorkloadSelector: \"app == 'router'\"}", "spec.asNumber: missing: required with localWorkloadSelector"),
        ("spec: {localWorkloadSelector: all(), asNumber: 65000, peerIP: 10.0.0.1}", "spec.localWorkloadSelector: cannot be used together with peerIP"),
        ("spec: {localWorkloadSelector: all(), asNumber: 65000, peerSelector: all()}", "spec.localWorkloadSelector: cannot be used together with peerSelector"),
        ("spec: {localWorkloadSelector: 'app = x', asNumber: 65000}", r#"spec.localWorkloadSelector: invalid selector "app = x""#),
        ("spec: {peerSelector: all(), reversePeering: Sometimes}", r#"spec.reversePeering: "Sometimes" is not one of Auto, Manual"#),
        ("spec: {asNumber: 65000}", "spec.peerIP: missing (a BGPPeer needs peerIP or peerSelector)"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, keepaliveTime: 30}", r#"spec.keepaliveTime: expected a duration string such as "30s", found 30"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, keepaliveTime: 1m30}", r#"spec.keepaliveTime: "1m30" is not a duration (missing unit"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, keepaliveTime: 0s}", "spec.keepaliveTime: must be more than 0"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, maxRestartTime: -5s}", r#"spec.maxRestartTime: "-5s" is negative"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, ttlSecurity: 256}", "spec.ttlSecurity: 256 hops is out of range 0..=255"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, ttlSecurity: -1}", "spec.ttlSecurity: expected a non-negative integer, found -1"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, sourceAddress: NodeIP}", r#"spec.sourceAddress: "NodeIP" is not one of UseNodeIP, None"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, nextHopMode: self}", r#"spec.nextHopMode: "self" is not one of Auto, Self, Keep"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, nextHopMode: Self, keepOriginalNextHop: true}", "spec.keepOriginalNextHop: contradicts nextHopMode"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, keepOriginalNextHop: 'yes'}", r#"spec.keepOriginalNextHop: expected true or false, found "yes""#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, filters: [ok, 'bad name']}", r#"spec.filters[1]: "bad name" contains ' '"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, filters: export}", r#"spec.filters: expected a list, found "export""#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, numAllowedLocalASNumbers: 5000000000}", "spec.numAllowedLocalASNumbers: out of range"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, reachableBy: fd00::1}", "spec.reachableBy: fd00::1 is not of the same IP family as peerIP 10.0.0.1"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, reachableBy: gateway}", r#"spec.reachableBy: "gateway" is not an IP address"#),
        ("spec: {node: a, nodeSelector: all(), peerIP: 10.0.0.1, asNumber: 65000}", "spec.nodeSelector: cannot be used together with node"),
        ("spec: {nodeSelector: 'rack = a', peerIP: 10.0.0.1, asNumber: 65000}", r#"spec.nodeSelector: invalid selector "rack = a""#),
        ("spec: {peerSelector: all(), peerIP: 10.0.0.1, asNumber: 65000}", "spec.peerSelector: cannot be used together with peerIP"),
        ("spec: {peerSelector: all(), asNumber: 65000}", "spec.asNumber: cannot be used with peerSelector"),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, password: {secretKeyRef: {name: nope, key: k}}}", r#"spec.password.secretKeyRef: Secret "nope" not found"#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, password: {secretKeyRef: {name: s, key: other}}}", r#"spec.password.secretKeyRef: Secret "s" has no key "other""#),
        ("spec: {peerIP: 10.0.0.1, asNumber: 65000, password: {secretKeyRef: {name: s, key: long}}}", "spec.password.secretKeyRef: Secret \"s\" key \"long\": the password is 81 bytes; TCP MD5 keys are at most 80 bytes"),
        ("spec: [peerIP]", "spec: expected a mapping, found a list"),
    ];
    let long = "x".repeat(81);
    let secret =
        format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{k: pw, long: {long}}}\n");
    for (spec, expected) in cases {
        let text = format!("{PEER_HEAD}{spec}\n{GOOD_PEER}{secret}");
        let (model, problems) = parse(&text);
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{spec}: {errors:#?}");
        let want = format!("BGPPeer \"tor-1\": {expected}");
        assert!(errors[0].starts_with(&want), "{spec}:\n got  {}\n want {want}…", errors[0]);
        assert!(errors[0].ends_with("(test.yaml, document 1)"), "{}", errors[0]);
        assert!(!model.peers.contains_key("tor-1"), "{spec}: invalid peer kept");
        assert!(model.peers.contains_key("good"), "{spec}: valid peer lost");
    }
}

const BFD_HEAD: &str = "apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {name: bfd}\n";

#[test]
fn bfd_configuration_defaults_are_calico_enterprise_s() {
    let text = format!(
        "{BFD_HEAD}spec:\n  nodeSelector: has(rack)\n  interfaces:\n  - matchPattern: eth*\n    \
         minimumRecvInterval: 300ms\n    minimumSendInterval: 300ms\n    idleSendInterval: 1s\n    multiplier: 3\n  \
         - matchPattern: '*'\n"
    );
    let (model, problems) = parse(&text);
    assert!(problems.is_empty(), "{problems:#?}");
    let bfd = &model.bfd_configurations["bfd"];
    let [eth, any] = &bfd.interfaces[..] else { panic!("two interfaces: {bfd:?}") };
    assert_eq!(
        (eth.minimum_recv_interval, eth.minimum_send_interval, eth.idle_send_interval, eth.multiplier),
        (Duration::from_millis(300), Duration::from_millis(300), Duration::from_secs(1), 3)
    );
    assert_eq!(
        (any.minimum_recv_interval, any.minimum_send_interval, any.idle_send_interval, any.multiplier),
        (Duration::from_millis(10), Duration::from_millis(100), Duration::from_secs(60), 5),
        "Calico Enterprise's defaults"
    );
    assert!(eth.matches(Some("eth1")) && !eth.matches(Some("ens3")) && !eth.matches(None));
    assert!(any.matches(Some("ens3")) && any.matches(None));
    let exact = BfdInterface { match_pattern: "bond0".into(), ..eth.clone() };
    assert!(exact.matches(Some("bond0")) && !exact.matches(Some("bond0.100")));
    // The selector is Calico's.
    let rack: BTreeMap<String, String> = [("rack".to_string(), "a".to_string())].into();
    assert!(bfd.node_selector.matches(&rack) && !bfd.node_selector.matches(&BTreeMap::new()));
}

/// Calico Enterprise's documented sample, as written there.
#[test]
fn the_calico_enterprise_bfd_sample_loads() {
    let text = "apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata:\n  name: default\nspec:\n  \
                nodeSelector: \"all()\"\n  interfaces:\n  - matchPattern: \"*\"\n    minimumRecvInterval: 10ms\n    \
                minimumSendInterval: 100ms\n    idleSendInterval: 1m\n    multiplier: 5\n";
    let (model, problems) = parse(text);
    assert!(problems.is_empty(), "{problems:#?}");
    let i = &model.bfd_configurations["default"].interfaces[0];
    assert_eq!(
        (i.minimum_recv_interval, i.minimum_send_interval, i.idle_send_interval, i.multiplier),
        (Duration::from_millis(10), Duration::from_millis(100), Duration::from_secs(60), 5)
    );
}

/// Each invalid BFDConfiguration is reported with this exact message and dropped.
#[test]
fn invalid_bfd_configurations_are_reported_and_skipped() {
    let cases: &[(&str, &str)] = &[
        ("spec: {interfaces: [{minimumRecvInterval: 10ms}]}", "spec.interfaces[0].matchPattern: missing"),
        (
            "spec: {interfaces: [{matchPattern: 'e*h*'}]}",
            r#"spec.interfaces[0].matchPattern: "e*h*": only a trailing "*" is supported"#,
        ),
        (
            "spec: {interfaces: [{matchPattern: '*', minimumRecvInterval: 0s}]}",
            "spec.interfaces[0].minimumRecvInterval: 0ns is not a whole number of milliseconds",
        ),
        (
            "spec: {interfaces: [{matchPattern: '*', minimumSendInterval: 1500us}]}",
            "spec.interfaces[0].minimumSendInterval: 1.5ms is not a whole number of milliseconds",
        ),
        (
            "spec: {interfaces: [{matchPattern: '*', idleSendInterval: 2h}]}",
            "spec.interfaces[0].idleSendInterval: 7200s is longer than BFD's 32-bit microsecond fields allow",
        ),
        (
            "spec: {interfaces: [{matchPattern: '*', multiplier: 0}]}",
            "spec.interfaces[0].multiplier: 0 is not a multiplier from 1 to 255",
        ),
        (
            "spec: {interfaces: [{matchPattern: '*', multiplier: 300}]}",
            "spec.interfaces[0].multiplier: 300 is not a multiplier from 1 to 255",
        ),
        ("spec: {nodeSelector: 'rack = a'}", r#"spec.nodeSelector: invalid selector "rack = a""#),
        ("spec: {interfaces: '*'}", r#"spec.interfaces: expected a list, found "*""#),
    ];
    for (spec, expected) in cases {
        let (model, problems) = parse(&format!("{BFD_HEAD}{spec}\n"));
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{spec}: {errors:#?}");
        let want = format!("BFDConfiguration \"bfd\": {expected}");
        assert!(errors[0].starts_with(&want), "{spec}:\n got  {}\n want {want}…", errors[0]);
        assert!(model.bfd_configurations.is_empty(), "{spec}: invalid configuration kept");
    }
    // An unknown field is a warning, and the rest is read.
    let (model, problems) = parse(&format!("{BFD_HEAD}spec: {{interfaces: [{{matchPattern: '*', echo: true}}]}}\n"));
    assert_eq!(of(&problems, Severity::Warning).len(), 1, "{problems:#?}");
    assert_eq!(model.bfd_configurations["bfd"].interfaces.len(), 1);
}

#[test]
fn the_bfd_annotation_turns_bfd_on_off_or_multihop_for_one_peer() {
    for (value, want) in [
        (None, BfdMode::Auto),
        (Some("true"), BfdMode::On),
        (Some("false"), BfdMode::Off),
        (Some("multihop"), BfdMode::Multihop),
    ] {
        let ann = value.map(|v| format!("annotations: {{bgpd.io/bfd: '{v}'}}, ")).unwrap_or_default();
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{{ann}name: p}}\nspec: {{peerIP: 10.0.0.1, asNumber: 65000}}\n"
        );
        let (model, problems) = parse(&text);
        assert!(problems.is_empty(), "{value:?}: {problems:#?}");
        assert_eq!(model.peers["p"].bfd, want, "{value:?}");
    }
    let text =
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {annotations: {bgpd.io/bfd: 'yes'}, name: p}\n\
                spec: {peerIP: 10.0.0.1, asNumber: 65000}\n";
    let (_, problems) = parse(text);
    let errors = of(&problems, Severity::Error);
    assert!(
        errors.iter().any(|e| e.contains(r#"bgpd.io/bfd"#) && e.contains(r#""yes" is not true, false or multihop"#)),
        "{errors:#?}"
    );
}

#[test]
fn all_faults_of_one_object_are_reported_together() {
    let (_, problems) = parse(&format!("{PEER_HEAD}spec: {{peerIP: nope, asNumber: 0, keepaliveTime: x}}\n"));
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["spec.peerIP", "spec.asNumber", "spec.keepaliveTime"]);
}

#[test]
fn secret_may_come_after_the_peer_and_in_another_file() {
    let peer = format!(
        "{PEER_HEAD}spec: {{peerIP: 10.0.0.1, asNumber: 65000, password: {{secretKeyRef: {{name: s, key: k}}}}}}\n"
    );
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: cHc=}\n";
    let (model, problems) = parse_sources(&[
        SourceText { path: "a.yaml".into(), text: peer },
        SourceText { path: "b.yaml".into(), text: secret.into() },
    ])
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(model.peers["tor-1"].password.as_ref().unwrap().as_bytes(), b"pw");
}

#[test]
fn invalid_secret_is_reported_and_its_peers_fail() {
    let text = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {{k: '%%%'}}\n---\n{PEER_HEAD}spec: {{peerIP: 10.0.0.1, asNumber: 65000, password: {{secretKeyRef: {{name: s, key: k}}}}}}\n"
    );
    let (model, problems) = parse(&text);
    let errors = of(&problems, Severity::Error);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("Secret \"s\": data.k: not valid base64"), "{}", errors[0]);
    assert!(
        errors[1].starts_with("BGPPeer \"tor-1\": spec.password.secretKeyRef: Secret \"s\" not found"),
        "{}",
        errors[1]
    );
    assert!(model.peers.is_empty());
}

#[test]
fn invalid_bgp_configuration_is_reported_and_defaults_remain() {
    let head = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n";
    let cases: &[(&str, &str)] = &[
        ("spec: {asNumber: 0}", "spec.asNumber: AS number 0 is reserved"),
        ("spec: {listenPort: 0}", "spec.listenPort: port 0 is out of range 1..=65535"),
        ("spec: {listenPort: 65536}", "spec.listenPort: port 65536 is out of range 1..=65535"),
        ("spec: {listenPort: '179'}", "spec.listenPort: expected a non-negative integer, found \"179\""),
        ("spec: {bindMode: All}", r#"spec.bindMode: "All" is not one of None, NodeIP"#),
        (
            "spec: {logSeverityScreen: loud}",
            r#"spec.logSeverityScreen: "loud" is not one of Debug, Info, Warning, Error, Fatal"#,
        ),
        ("spec: {nodeToNodeMeshEnabled: 1}", "spec.nodeToNodeMeshEnabled: expected true or false, found 1"),
        (
            "spec: {nodeMeshMaxRestartTime: 2d}",
            r#"spec.nodeMeshMaxRestartTime: "2d" is not a duration (unknown unit "d""#,
        ),
        (
            "spec: {serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: 10.96.0.1/12}]}",
            r#"spec.serviceClusterIPs[1].cidr: "10.96.0.1/12" has host bits set (the network is 10.96.0.0/12)"#,
        ),
        (
            "spec: {serviceExternalIPs: [{cidr: 300.0.0.0/8}]}",
            r#"spec.serviceExternalIPs[0].cidr: "300.0.0.0/8" is not a CIDR"#,
        ),
        (
            "spec: {serviceLoadBalancerIPs: [{cidr: 7}]}",
            "spec.serviceLoadBalancerIPs[0].cidr: expected a string, found 7",
        ),
        ("spec: {serviceLoadBalancerIPs: ['10.0.0.0/8']}", "spec.serviceLoadBalancerIPs[0]: expected a mapping"),
        (
            "spec: {communities: [{name: a, value: '65536:1'}]}",
            r#"spec.communities[0].value: "65536:1": each part of a standard community must be 0..=65535"#,
        ),
        (
            "spec: {communities: [{name: a, value: '1:1'}, {name: a, value: '1:2'}]}",
            r#"spec.communities[1].name: community name "a" is defined twice"#,
        ),
        ("spec: {communities: [{value: '1:1'}]}", "spec.communities[0].name: missing"),
        (
            "spec: {prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [unknown-name]}]}",
            r#"spec.prefixAdvertisements[0].communities[0]: "unknown-name" is neither a name"#,
        ),
        ("spec: {prefixAdvertisements: [{communities: ['1:1']}]}", "spec.prefixAdvertisements[0].cidr: missing"),
        ("spec: {ignoredInterfaces: [eth0, 7]}", "spec.ignoredInterfaces[1]: expected a string, found 7"),
    ];
    for (spec, expected) in cases {
        let (model, problems) = parse(&format!("{head}{spec}\n"));
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{spec}: {errors:#?}");
        let want = format!("BGPConfiguration \"default\": {expected}");
        assert!(errors[0].starts_with(&want), "{spec}:\n got  {}\n want {want}…", errors[0]);
        assert_eq!(model.bgp_configuration, BgpConfiguration::default(), "{spec}");
    }
}

#[test]
fn an_unresolved_mesh_password_holds_the_mesh_and_keeps_the_rest() {
    // Dropping the object would fall back to the defaults, which run the
    // mesh without any password: the object stays, the mesh is held.
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                spec: {asNumber: 65001, nodeMeshPassword: {secretKeyRef: {name: x, key: y}}}\n";
    let (model, problems) = parse(text);
    assert!(of(&problems, Severity::Error).is_empty(), "{problems:#?}");
    let warnings = of(&problems, Severity::Warning);
    let want = r#"BGPConfiguration "default": spec.nodeMeshPassword.secretKeyRef: Secret "x" not found: the node-to-node mesh is held"#;
    assert!(warnings.iter().any(|w| w.starts_with(want)), "{warnings:#?}");
    let cfg = &model.bgp_configuration;
    assert_eq!(cfg.as_number.get(), 65001, "the rest of the object is kept");
    assert!(cfg.node_mesh_password_unresolved && cfg.node_mesh_password.is_none());
}

#[test]
fn bgp_configuration_names() {
    let cfg = |name: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: {name}}}\nspec: {{asNumber: 65000}}\n")
    };
    // A per-node configuration is read; asNumber is not a per-node field (Calico ignores it there).
    let (model, problems) = parse(&cfg("node.rack-a-1"));
    assert_eq!(model.bgp_configuration, BgpConfiguration::default());
    assert_eq!(model.node_bgp_configurations["rack-a-1"], crate::datastore::NodeBgpConfiguration::default());
    let warnings = of(&problems, Severity::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("BGPConfiguration \"node.rack-a-1\": spec.asNumber: only listenPort"),
        "{warnings:?}"
    );
    let (model, problems) = parse(&cfg("custom"));
    assert_eq!(model, Model::default());
    assert_eq!(
        of(&problems, Severity::Error),
        ["BGPConfiguration \"custom\": metadata.name: a BGPConfiguration is named \"default\" (the cluster's) or \"node.NAME\" (one node's) (test.yaml, document 1)"]
    );
    // The CRD form (what kubectl shows with the Kubernetes datastore) is read too.
    let (model, _) = parse(&cfg("default").replace("projectcalico.org/v3", "crd.projectcalico.org/v1"));
    assert_eq!(model.bgp_configuration.as_number.get(), 65000);
}

#[test]
fn invalid_nodes_blocks_and_metadata() {
    let node = "apiVersion: projectcalico.org/v3\nkind: Node\n";
    let block = "apiVersion: crd.projectcalico.org/v1\nkind: IPAMBlock\n";
    let cases: &[(String, &str)] = &[
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/33}}}}"), r#"Node "n1": spec.bgp.ipv4Address: "10.0.0.1/33" is not an IPv4 address"#),
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{ipv4Address: 'fd00::1/64'}}}}"), r#"Node "n1": spec.bgp.ipv4Address: "fd00::1/64" is not an IPv4 address"#),
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{ipv6Address: 10.0.0.1/24}}}}"), r#"Node "n1": spec.bgp.ipv6Address: "10.0.0.1/24" is not an IPv6 address"#),
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{asNumber: 65000}}}}"), r#"Node "n1": spec.bgp.ipv4Address: a BGP node needs ipv4Address or ipv6Address"#),
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/24, asNumber: 0}}}}"), r#"Node "n1": spec.bgp.asNumber: AS number 0 is reserved"#),
        (format!("{node}metadata: {{name: n1}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 'fd00::1'}}}}"), r#"Node "n1": spec.bgp.routeReflectorClusterID: "fd00::1" is not an IPv4 address"#),
        (format!("{node}metadata: {{name: n1, labels: {{rack: [1]}}}}\nspec: {{}}"), r#"Node "n1": metadata.labels.rack: expected a string, found a list"#),
        (format!("{node}metadata: {{labels: {{}}}}\nspec: {{}}"), "Node (unnamed): metadata.name: missing"),
        (format!("{node}metadata: {{name: 'a/b'}}\nspec: {{}}"), r#"Node "a/b": metadata.name: "a/b" contains '/'"#),
        (format!("{node}metadata: {{name: [a]}}\nspec: {{}}"), "Node (unnamed): metadata.name: expected a string, found a list"),
        (format!("{block}metadata: {{name: b}}\nspec: {{cidr: 10.244.0.1/26, affinity: host:n}}"), r#"IPAMBlock "b": spec.cidr: "10.244.0.1/26" has host bits set"#),
        (format!("{block}metadata: {{name: b}}\nspec: {{affinity: host:n}}"), r#"IPAMBlock "b": spec.cidr: missing"#),
        (format!("{block}metadata: {{name: b}}\nspec: {{cidr: 10.244.0.0/26, affinity: 'node-1'}}"), r#"IPAMBlock "b": spec.affinity: "node-1" is not an affinity (expected host:NODE or virtual:NAME)"#),
        (format!("{block}metadata: {{name: b}}\nspec: {{cidr: 10.244.0.0/26, affinity: 'host:'}}"), r#"IPAMBlock "b": spec.affinity: "host:": the name is empty"#),
        (format!("{block}metadata: {{name: b}}\nspec: {{cidr: 10.244.0.0/26, deleted: 'no'}}"), r#"IPAMBlock "b": spec.deleted: expected true or false, found "no""#),
        ("apiVersion: projectcalico.org/v2\nkind: BGPPeer\nmetadata: {name: p}\n".to_string(), r#"BGPPeer "p": apiVersion: "projectcalico.org/v2" is not an apiVersion bgpd reads for BGPPeer"#),
    ];
    for (text, expected) in cases {
        let (model, problems) = parse(text);
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{text}: {errors:#?}");
        assert!(errors[0].starts_with(expected), "{text}:\n got  {}\n want {expected}…", errors[0]);
        assert_eq!(model, Model::default(), "{text}");
    }
}

#[test]
fn duplicates_later_wins_with_a_warning_and_invalid_later_keeps_earlier() {
    let peer = |ip: &str| format!("---\n{PEER_HEAD}spec: {{peerIP: '{ip}', asNumber: 65000}}\n");
    let (model, problems) = parse(&format!("{}{}", peer("10.0.0.1"), peer("10.0.0.2")));
    assert_eq!(
        of(&problems, Severity::Warning),
        ["BGPPeer \"tor-1\": defined again; this definition replaces the one at test.yaml, document 1 (test.yaml, document 2)"]
    );
    let PeerRemote::Address { address, .. } = model.peers["tor-1"].remote else { panic!() };
    assert_eq!(address.ip, ip("10.0.0.2"));

    let (model, problems) = parse(&format!("{}{}", peer("10.0.0.1"), peer("bad")));
    assert_eq!(of(&problems, Severity::Error).len(), 1);
    assert!(of(&problems, Severity::Warning).is_empty());
    let PeerRemote::Address { address, .. } = model.peers["tor-1"].remote else { panic!() };
    assert_eq!(address.ip, ip("10.0.0.1"));

    // The same name in different kinds is no duplicate.
    let node = "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: tor-1}\n";
    let (_, problems) = parse(&format!("{}{node}", peer("10.0.0.1")));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn unsupported_fields_and_missing_filters_warn_but_load() {
    let text = format!("{PEER_HEAD}spec: {{peerIP: 10.0.0.1, asNumber: 65000, futureField: x, filters: [f1]}}\n");
    let (model, problems) = parse(&text);
    assert!(model.peers.contains_key("tor-1"));
    assert_eq!(
        of(&problems, Severity::Warning),
        [
            "BGPPeer \"tor-1\": spec.futureField: not supported by bgpd; ignored (test.yaml, document 1)",
            "BGPPeer \"tor-1\": spec.filters: BGPFilter \"f1\" is not in the datastore; the peer runs without it (test.yaml, document 1)",
        ]
    );
}

const FILTER_HEAD: &str = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\n";
const GOOD_FILTER: &str =
    "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: good}\nspec: {importV4: [{action: Reject}]}\n";

fn filter_rules(model: &Model, name: &str, dir: policy::Direction, v6: bool) -> Vec<policy::Rule> {
    model.filters[name].policy.rules(dir, v6).to_vec()
}

#[test]
fn bgp_filters_load_and_evaluate() {
    use policy::{Action, CidrMatch, CommunityValue, Direction, MatchOperator, Operation, PeerType, Source, Verdict};
    let (model, problems) = load(&testdata("bgp-filters.yaml")).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(model.filters.keys().collect::<Vec<_>>(), ["full-example", "my-filter", "no-default-route"]);

    // Calico's reference example, rule by rule.
    let export_v4 = filter_rules(&model, "my-filter", Direction::Export, false);
    assert_eq!(export_v4.len(), 2);
    assert_eq!(
        export_v4[0].cidr,
        Some(CidrMatch { cidr: "77.0.0.0/16".parse().unwrap(), op: MatchOperator::In, min_len: None, max_len: None })
    );
    assert_eq!((export_v4[0].source, export_v4[0].action), (Some(Source::RemotePeers), Action::Accept));
    assert_eq!((export_v4[1].interface.as_deref(), export_v4[1].action), (Some("*.calico"), Action::Reject));
    let import_v4 = filter_rules(&model, "my-filter", Direction::Import, false);
    assert_eq!(import_v4[0].cidr.unwrap().length_range(), (30, 32));
    assert_eq!(import_v4[1].cidr.unwrap().op, MatchOperator::NotIn);
    let import_v6 = filter_rules(&model, "my-filter", Direction::Import, true);
    assert_eq!(import_v6[0].cidr.unwrap().cidr, "5000::/64".parse::<ipnet::IpNet>().unwrap());
    assert!(import_v6[1].is_unconditional());

    // Every field and operation.
    let full = filter_rules(&model, "full-example", Direction::Import, false);
    assert_eq!(full.len(), 3);
    assert_eq!(full[0].cidr.unwrap().length_range(), (24, 28));
    assert_eq!(full[0].peer_type, Some(PeerType::Ibgp));
    assert_eq!(full[0].community, Some(CommunityValue::Standard(bgpd_proto::wire::Community::new(65000, 100))));
    assert_eq!(full[0].as_path_prefix, Some(vec![65000]));
    assert_eq!((full[0].priority, full[0].interface.as_deref()), (Some(512), Some("eth0")));
    assert_eq!(
        full[0].operations,
        [
            Operation::SetPriority(256),
            Operation::AddCommunity(CommunityValue::Standard(bgpd_proto::wire::Community::new(65000, 200))),
            Operation::PrependAsPath(vec![65001, 65002]),
        ]
    );
    let large = bgpd_proto::wire::LargeCommunity { global: 65000, local1: 100, local2: 999 };
    assert_eq!(full[1].community, Some(CommunityValue::Large(large)));
    assert_eq!(full[1].as_path_prefix, Some(vec![65000, 65546]), "asdot 1.10");
    let full_export = filter_rules(&model, "full-example", Direction::Export, false);
    let large = bgpd_proto::wire::LargeCommunity { global: 65000, local1: 300, local2: 400 };
    assert_eq!(
        full_export[0].operations,
        [Operation::AddCommunity(CommunityValue::Large(large)), Operation::PrependAsPath(vec![64999])]
    );
    assert_eq!(full_export[1].cidr.unwrap().op, MatchOperator::Equal);

    // The peer's filters in its order, evaluated as the RIB will.
    let filters = model.peer_filters(&model.peers["tor"]);
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["no-default-route", "my-filter"]);
    let attrs =
        bgpd_proto::rib::attrs::PathAttrs { attributes: Vec::new(), next_hop: None, link_local: None, priority: None };
    let verdict = |prefix: &str| {
        let ctx = policy::RouteContext {
            prefix: prefix.parse().unwrap(),
            attrs: &attrs,
            peer_type: PeerType::Ebgp,
            from_remote_peer: true,
            interface: None,
        };
        policy::evaluate(&filters, Direction::Import, &ctx)
    };
    assert_eq!(verdict("0.0.0.0/0"), Verdict::Reject, "no-default-route comes first");
    assert_eq!(verdict("55.0.3.4/30"), Verdict::Accept(&[]));
    assert_eq!(verdict("55.0.3.0/24"), Verdict::Reject, "outside 30..=32, and NotIn 44.0.0.0/16");
    assert_eq!(verdict("44.0.1.0/24"), Verdict::NoMatch);
    assert_eq!(verdict("::/0"), Verdict::Reject);
    assert_eq!(verdict("5000::/64"), Verdict::Accept(&[]));
    assert_eq!(verdict("5000::/65"), Verdict::Reject);
}

/// Each invalid BGPFilter is reported with this exact message (object, field path,
/// reason) and skipped; the valid filter after it still loads.
#[test]
fn invalid_bgp_filters_are_reported_and_skipped() {
    let cases: &[(&str, &str)] = &[
        ("spec: {importV4: [{cidr: 10.0.0.0/8, matchOperator: In}]}", "spec.importV4[0].action: missing (Accept or Reject)"),
        ("spec: {importV4: [{action: accept}]}", r#"spec.importV4[0].action: "accept" is not one of Accept, Reject"#),
        ("spec: {exportV4: [{action: Accept}, {action: Reject, cidr: 10.0.0.0/33, matchOperator: In}]}", r#"spec.exportV4[1].cidr: "10.0.0.0/33" is not a CIDR"#),
        ("spec: {exportV4: [{action: Accept, cidr: 10.0.0.1/8, matchOperator: In}]}", r#"spec.exportV4[0].cidr: "10.0.0.1/8" has host bits set (the network is 10.0.0.0/8)"#),
        ("spec: {exportV4: [{action: Accept, cidr: 'fd00::/8', matchOperator: In}]}", "spec.exportV4[0].cidr: fd00::/8 is an IPv6 CIDR in the IPv4 list exportV4"),
        ("spec: {importV6: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In}]}", "spec.importV6[0].cidr: 10.0.0.0/8 is an IPv4 CIDR in the IPv6 list importV6"),
        ("spec: {importV4: [{action: Accept, cidr: 10.0.0.0/8}]}", "spec.importV4[0].matchOperator: missing (required with cidr)"),
        ("spec: {importV4: [{action: Accept, matchOperator: In}]}", "spec.importV4[0].cidr: missing (required with matchOperator)"),
        ("spec: {importV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: Contains}]}", r#"spec.importV4[0].matchOperator: "Contains" is not one of Equal, NotEqual, In, NotIn"#),
        ("spec: {importV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 33}}]}", "spec.importV4[0].prefixLength.min: 33 is out of range 0..=32"),
        ("spec: {importV6: [{action: Accept, cidr: 'fd00::/8', matchOperator: In, prefixLength: {max: 129}}]}", "spec.importV6[0].prefixLength.max: 129 is out of range 0..=128"),
        ("spec: {importV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 24, max: 16}}]}", "spec.importV4[0].prefixLength: min 24 is greater than max 16"),
        ("spec: {importV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: -1}}]}", "spec.importV4[0].prefixLength.min: expected a non-negative integer, found -1"),
        ("spec: {importV4: [{action: Accept, prefixLength: {min: 24}}]}", "spec.importV4[0].prefixLength: requires cidr"),
        ("spec: {exportV4: [{action: Reject, source: Local}]}", r#"spec.exportV4[0].source: "Local" is not RemotePeers"#),
        ("spec: {exportV4: [{action: Reject, interface: 'eth 0'}]}", r#"spec.exportV4[0].interface: "eth 0" is not an interface pattern"#),
        ("spec: {exportV4: [{action: Reject, interface: averyveryverylongname}]}", r#"spec.exportV4[0].interface: "averyveryverylongname" is not an interface pattern"#),
        ("spec: {exportV4: [{action: Reject, peerType: ebgp}]}", r#"spec.exportV4[0].peerType: "ebgp" is not one of eBGP, iBGP"#),
        ("spec: {exportV4: [{action: Reject, communities: {values: []}}]}", "spec.exportV4[0].communities.values: has 0 values; Calico allows exactly one"),
        ("spec: {exportV4: [{action: Reject, communities: {values: ['1:2', '3:4']}}]}", "spec.exportV4[0].communities.values: has 2 values; Calico allows exactly one"),
        ("spec: {exportV4: [{action: Reject, communities: {values: ['65536:1']}}]}", r#"spec.exportV4[0].communities.values[0]: "65536:1": each part of a standard community must be 0..=65535"#),
        ("spec: {exportV4: [{action: Reject, asPathPrefix: [65000, 0]}]}", "spec.exportV4[0].asPathPrefix[1]: AS number 0 is reserved"),
        ("spec: {exportV4: [{action: Reject, priority: 0}]}", "spec.exportV4[0].priority: 0 is out of range 1..=2147483646"),
        ("spec: {exportV4: [{action: Reject, priority: 2147483647}]}", "spec.exportV4[0].priority: 2147483647 is out of range 1..=2147483646"),
        ("spec: {exportV4: [{action: Reject, operations: [{setPriority: {value: 5}}]}]}", "spec.exportV4[0].operations: operations may only be used with action Accept"),
        ("spec: {exportV4: [{action: Accept, operations: [{}]}]}", "spec.exportV4[0].operations[0]: sets 0 operations; each entry needs exactly one"),
        ("spec: {exportV4: [{action: Accept, operations: [{setPriority: {value: 5}, addCommunity: {value: '1:1'}}]}]}", "spec.exportV4[0].operations[0]: sets 2 operations"),
        ("spec: {exportV4: [{action: Accept, operations: [{addCommunity: {value: 'a:b'}}]}]}", r#"spec.exportV4[0].operations[0].addCommunity.value: "a:b" is not a community"#),
        ("spec: {exportV4: [{action: Accept, operations: [{addCommunity: {}}]}]}", "spec.exportV4[0].operations[0].addCommunity.value: missing"),
        ("spec: {exportV4: [{action: Accept, operations: [{prependASPath: {prefix: []}}]}]}", "spec.exportV4[0].operations[0].prependASPath.prefix: missing (1 to 10 AS numbers)"),
        ("spec: {exportV4: [{action: Accept, operations: [{prependASPath: {prefix: [1,2,3,4,5,6,7,8,9,10,11]}}]}]}", "spec.exportV4[0].operations[0].prependASPath.prefix: has 11 AS numbers; Calico allows at most 10"),
        ("spec: {exportV4: [{action: Accept, operations: [{prependASPath: {prefix: [x]}}]}]}", r#"spec.exportV4[0].operations[0].prependASPath.prefix[0]: "x" is not an AS number"#),
        ("spec: {exportV4: [{action: Accept, operations: [{setPriority: {value: 0}}]}]}", "spec.exportV4[0].operations[0].setPriority.value: 0 is out of range"),
        ("spec: {exportV4: [{action: Accept, operations: [{setPriority: {}}]}]}", "spec.exportV4[0].operations[0].setPriority.value: missing"),
        ("spec: {exportV4: [{action: Accept, operations: [{setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}, {setPriority: {value: 1}}]}]}", "spec.exportV4[0].operations: has 11 entries; Calico allows at most 10"),
        ("spec: {exportV4: {action: Accept}}", "spec.exportV4: expected a list, found a mapping"),
        ("spec: {exportV4: [Accept]}", r#"spec.exportV4[0]: expected a mapping, found "Accept""#),
        ("spec: [exportV4]", "spec: expected a mapping, found a list"),
    ];
    for (spec, expected) in cases {
        let text = format!("{FILTER_HEAD}{spec}\n{GOOD_FILTER}");
        let (model, problems) = parse(&text);
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{spec}: {errors:#?}");
        let want = format!("BGPFilter \"f\": {expected}");
        assert!(errors[0].starts_with(&want), "{spec}:\n got  {}\n want {want}…", errors[0]);
        assert!(errors[0].ends_with("(test.yaml, document 1)"), "{}", errors[0]);
        assert!(!model.filters.contains_key("f"), "{spec}: invalid filter kept");
        assert!(model.filters.contains_key("good"), "{spec}: valid filter lost");
    }
}

#[test]
fn bgp_filter_warnings_keep_the_filter() {
    let spec = "spec: {importV4: [{action: Accept, cidr: 10.0.0.0/24, matchOperator: Equal, prefixLength: {min: 24}, \
                weight: 3}, {action: Reject, cidr: 10.0.0.0/24, matchOperator: In, prefixLength: {max: 16}}], \
                importV5: []}";
    let (model, problems) = parse(&format!("{FILTER_HEAD}{spec}\n"));
    assert!(of(&problems, Severity::Error).is_empty(), "{problems:#?}");
    assert_eq!(
        of(&problems, Severity::Warning),
        [
            "BGPFilter \"f\": spec.importV5: not supported by bgpd; ignored (test.yaml, document 1)",
            "BGPFilter \"f\": spec.importV4[0].weight: not supported by bgpd; ignored (test.yaml, document 1)",
            "BGPFilter \"f\": spec.importV4[0].prefixLength: has no effect with matchOperator Equal; ignored (test.yaml, document 1)",
            "BGPFilter \"f\": spec.importV4[1].prefixLength: no prefix length lies in 10.0.0.0/24 with lengths 24..=16: the rule never matches (test.yaml, document 1)",
        ]
    );
    assert_eq!(model.filters["f"].policy.import_v4.len(), 2);
    // A bare address is a host prefix; an empty asPathPrefix is no condition.
    let spec = "spec: {exportV4: [{action: Reject, cidr: 10.0.0.1, matchOperator: Equal, asPathPrefix: []}], \
                exportV6: [{action: Reject, cidr: 'fd00::1', matchOperator: NotEqual}]}";
    let (model, problems) = parse(&format!("{FILTER_HEAD}{spec}\n"));
    assert!(problems.is_empty(), "{problems:#?}");
    let f = &model.filters["f"].policy;
    assert_eq!(f.export_v4[0].cidr.unwrap().cidr.to_string(), "10.0.0.1/32");
    assert_eq!(f.export_v4[0].as_path_prefix, None);
    assert_eq!(f.export_v6[0].cidr.unwrap().cidr.to_string(), "fd00::1/128");
}

#[test]
fn peers_naming_invalid_or_missing_filters_warn_and_skip_them() {
    let peer = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-1}\n\
                spec: {peerIP: 10.0.0.1, asNumber: 65000, filters: [broken, good, absent]}\n";
    let broken = "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: broken}\n\
                  spec: {importV4: [{action: Drop}]}\n";
    let (model, problems) = parse(&format!("{peer}{broken}{GOOD_FILTER}"));
    assert_eq!(
        of(&problems, Severity::Error),
        [r#"BGPFilter "broken": spec.importV4[0].action: "Drop" is not one of Accept, Reject (test.yaml, document 2)"#]
    );
    assert_eq!(
        of(&problems, Severity::Warning),
        [
            "BGPPeer \"tor-1\": spec.filters: BGPFilter \"broken\" is invalid (see its errors); the peer runs without it (test.yaml, document 1)",
            "BGPPeer \"tor-1\": spec.filters: BGPFilter \"absent\" is not in the datastore; the peer runs without it (test.yaml, document 1)",
        ]
    );
    let filters = model.peer_filters(&model.peers["tor-1"]);
    assert_eq!(filters.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["good"]);
}

#[test]
fn bgp_filter_with_a_wrong_api_version_is_an_error() {
    let text = "apiVersion: projectcalico.org/v2\nkind: BGPFilter\nmetadata: {name: f}\nspec: {}\n";
    let (model, problems) = parse(text);
    assert!(model.filters.is_empty());
    assert_eq!(
        of(&problems, Severity::Error),
        [
            r#"BGPFilter "f": apiVersion: "projectcalico.org/v2" is not an apiVersion bgpd reads for BGPFilter (test.yaml, document 1)"#
        ]
    );
    // An empty spec is a valid filter that matches nothing.
    let (model, problems) = parse(&format!("{FILTER_HEAD}spec: {{}}\n"));
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(*model.filters["f"].policy, policy::Filter { name: "f".into(), ..Default::default() });
}

#[test]
fn unknown_kinds_are_collected_for_debug() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: k8s-node}\n";
    let (model, problems) = parse(text);
    assert_eq!(model, Model::default());
    assert_eq!(of(&problems, Severity::Debug).len(), 2);
    assert_eq!(problems[1].object, Some(ObjectRef { kind: ResourceKind::Node.into(), name: Some("k8s-node".into()) }));
}

#[test]
fn snapshots_compare_by_content_not_position() {
    let a = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: a}\nspec: {peerIP: 10.0.0.1, asNumber: 65000}\n";
    let b = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: b}\nspec: {peerIP: 10.0.0.2, asNumber: 65000}\n";
    let (m1, _) = parse(&format!("{a}---\n{b}"));
    let (m2, _) = parse(&format!("# moved around\n{b}---\n{a}"));
    assert_eq!(m1, m2);
    let (m3, _) = parse(&format!("{a}---\n{}", b.replace("10.0.0.2", "10.0.0.3")));
    assert_ne!(m1, m3);
}

mod robustness {
    //! Arbitrary input must never panic: random YAML value trees placed where the
    //! converters look, and random mutations of a realistic manifest.

    use proptest::prelude::*;
    use serde_yaml::{Mapping, Value};

    use super::super::*;

    #[test]
    fn deeply_nested_flow_collections_are_refused_before_parsing() {
        let deep = |n: usize| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: deep\nspec:\n  peerIP: {}{}\n",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let e = parse_sources(&[SourceText { path: "deep.yaml".into(), text: deep(10_000) }]).unwrap_err().to_string();
        assert!(e.starts_with("deep.yaml:6:") && e.contains("nested deeper than 256 levels"), "{e}");
        // Brackets in quoted strings and comments are text, not nesting.
        let quoted = format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1  # {}\n  labels: {{a: \"{}\", b: '{}'}}\n",
            "[".repeat(300),
            "{".repeat(300),
            "[".repeat(300)
        );
        let (model, _) = parse_sources(&[SourceText { path: "q.yaml".into(), text: quoted }]).unwrap();
        assert_eq!(model.nodes["n1"].labels["a"].len(), 300);
    }

    #[test]
    fn a_file_that_is_not_text_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.yaml");
        std::fs::write(&path, b"kind: Node\n\xff\xfe\x00garbage").unwrap();
        let e = source::read(&path).expect_err("not UTF-8").to_string();
        assert!(e.contains("garbage.yaml") && e.contains("not UTF-8 text (the byte at offset 11 is not)"), "{e}");
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-zA-Z0-9.:/\\[\\]_ -]{0,24}".prop_map(Value::from),
            prop::sample::select(vec![
                "10.0.0.1",
                "[fd00::1]:179",
                "65000",
                "1.10",
                "0",
                "30s",
                "host:n",
                "10.0.0.0/8",
                "all()",
                "has(a)",
                "UseNodeIP",
                "Keep",
                "NodeIP",
                "default",
            ])
            .prop_map(Value::from),
        ]
    }

    const KEYS: &[&str] = &[
        "peerIP",
        "asNumber",
        "node",
        "nodeSelector",
        "peerSelector",
        "password",
        "secretKeyRef",
        "name",
        "key",
        "keepaliveTime",
        "ttlSecurity",
        "filters",
        "cidr",
        "exportV4",
        "importV6",
        "action",
        "matchOperator",
        "prefixLength",
        "min",
        "max",
        "operations",
        "prependASPath",
        "prefix",
        "asPathPrefix",
        "values",
        "affinity",
        "deleted",
        "bgp",
        "ipv4Address",
        "ipv6Address",
        "serviceClusterIPs",
        "communities",
        "value",
        "prefixAdvertisements",
        "listenPort",
        "interfaces",
        "matchPattern",
        "multiplier",
        "minimumRecvInterval",
        "labels",
        "data",
        "stringData",
        "items",
        "kind",
        "apiVersion",
        "metadata",
        "spec",
    ];

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| Value::Mapping(
                    kvs.into_iter().map(|(k, v)| (Value::from(k), v)).collect::<Mapping>()
                )),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        let kinds = prop::sample::select(vec![
            ("projectcalico.org/v3", "BGPPeer"),
            ("projectcalico.org/v3", "BGPFilter"),
            ("projectcalico.org/v3", "BFDConfiguration"),
            ("projectcalico.org/v3", "BGPConfiguration"),
            ("projectcalico.org/v3", "Node"),
            ("crd.projectcalico.org/v1", "IPAMBlock"),
            ("projectcalico.org/v3", "IPPool"),
            ("v1", "Service"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("v1", "Secret"),
            ("v1", "List"),
        ]);
        let names = prop::sample::select(vec!["default", "a", "s", "node.x", ""]);
        (kinds, names, value(), value()).prop_map(|((api, kind), name, spec, extra)| {
            let mut m = Mapping::new();
            m.insert("apiVersion".into(), api.into());
            m.insert("kind".into(), kind.into());
            let mut meta = Mapping::new();
            meta.insert("name".into(), name.into());
            meta.insert("labels".into(), extra.clone());
            m.insert("metadata".into(), Value::Mapping(meta));
            m.insert("spec".into(), spec);
            m.insert("data".into(), extra.clone());
            m.insert("items".into(), extra);
            Value::Mapping(m)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6270_6764),
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_objects_never_panic(objects in prop::collection::vec(object(), 1..6)) {
            let text = objects.iter().map(|o| serde_yaml::to_string(o).unwrap()).collect::<Vec<_>>().join("---\n");
            let (_model, _problems) = parse_sources(&[SourceText { path: "fuzz.yaml".into(), text }]).unwrap();
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[ -~\n\t]{0,300}") {
            let _ = parse_sources(&[SourceText { path: "fuzz.yaml".into(), text }]);
        }
    }

    /// Byte-level mutations of the ToR fabric manifest (seeded, bounded): each result
    /// is either a syntax error or a model with problems, never a panic.
    #[test]
    fn mutated_manifest_never_panics() {
        let base = std::fs::read(super::testdata("tor-fabric.yaml")).unwrap();
        let mut rng = fastrand::Rng::with_seed(0xB6D);
        let alphabet = b" :-[]{}'\"\n#&*!|>0123456789abcxyz./";
        let (mut ok, mut syntax) = (0, 0);
        for _ in 0..400 {
            let mut bytes = base.clone();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match parse_sources(&[SourceText { path: "mutant.yaml".into(), text }]) {
                Ok(_) => ok += 1,
                Err(LoadError::Syntax { .. }) => syntax += 1,
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }
        // Both outcomes occur, so the mutations reach the validators too.
        assert!(ok > 0 && syntax > 0, "ok {ok}, syntax {syntax}");
    }
}

mod advertisement_kinds {
    //! IPPool, Service and EndpointSlice: defaults, realistic manifests, and every
    //! validation rule naming object, field and reason.

    use super::*;
    use ipam::model::{AllowedUse, EncapMode};

    fn errors_of(text: &str) -> Vec<String> {
        let (_, problems) = parse(text);
        of(&problems, Severity::Error)
    }

    #[test]
    fn advertise_fixture_loads_without_problems() {
        let (model, problems) = load(&testdata("advertise.yaml")).unwrap();
        assert!(of(&problems, Severity::Error).is_empty(), "{problems:#?}");
        assert!(of(&problems, Severity::Warning).is_empty(), "{problems:#?}");
        assert_eq!(model.ip_pools.len(), 3);
        let v6 = &model.ip_pools["pods-v6"];
        assert_eq!(v6.block_size, 122, "IPv6 default block size");
        assert_eq!(v6.node_selector, bgpd_model::Selector::All, "default nodeSelector all()");
        let web = &model.services["default/web"];
        assert_eq!(web.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(web.ip_families, [IpFamily::V4, IpFamily::V6]);
        assert_eq!(web.cluster_ips, [ip("10.96.0.10"), ip("fd00:96::10")]);
        assert_eq!(web.load_balancer_ingress, [ip("198.51.100.10")]);
        let slice = &model.endpoint_slices["default/web-v4"];
        assert_eq!(slice.service.as_deref(), Some("web"));
        assert_eq!(slice.endpoints.iter().map(|e| e.ready).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(model.services.len(), 6);
    }

    #[test]
    fn ip_pool_defaults_and_crd_form() {
        let (m, problems) = parse(
            "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.244.0.0/16}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let p = &m.ip_pools["p"];
        assert_eq!(p.block_size, 26);
        assert_eq!((p.ipip_mode, p.vxlan_mode), (EncapMode::Never, EncapMode::Never));
        assert_eq!(p.allowed_uses, [AllowedUse::Workload, AllowedUse::Tunnel]);
        assert!(!p.disabled && !p.disable_bgp_export && !p.nat_outgoing);
    }

    #[test]
    fn invalid_ip_pools_name_the_field() {
        let cases = [
            ("{}", "spec.cidr: missing"),
            ("{cidr: 10.244.0.1/16}", "spec.cidr: \"10.244.0.1/16\" has host bits set"),
            ("{cidr: 10.0.0.0/16, blockSize: 19}", "spec.blockSize: 19 is outside 20..=32 for an IPv4 pool"),
            ("{cidr: 10.0.0.0/24, blockSize: 23}", "spec.blockSize: 23 is shorter than the pool's prefix /24"),
            ("{cidr: 'fd00::/64', blockSize: 100}", "spec.blockSize: 100 is outside 116..=128 for an IPv6 pool"),
            ("{cidr: 10.0.0.0/16, blockSize: x}", "spec.blockSize: expected a prefix length"),
            ("{cidr: 10.0.0.0/16, ipipMode: Sometimes}", "spec.ipipMode: \"Sometimes\" is not one of Never"),
            ("{cidr: 10.0.0.0/16, ipipMode: Always, vxlanMode: Always}", "spec.vxlanMode: cannot be enabled together"),
            ("{cidr: 'fd00::/64', ipipMode: CrossSubnet}", "spec.ipipMode: IPIP is not supported for an IPv6 pool"),
            ("{cidr: 10.0.0.0/16, nodeSelector: 'a =='}", "spec.nodeSelector:"),
            ("{cidr: 10.0.0.0/16, disableBGPExport: 'yes'}", "spec.disableBGPExport: expected true or false"),
            ("{cidr: 10.0.0.0/16, allowedUses: [Pods]}", "spec.allowedUses[0]: \"Pods\" is not one of"),
        ];
        for (spec, want) in cases {
            let text = format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {spec}\n");
            let errors = errors_of(&text);
            assert!(errors.iter().any(|e| e.starts_with("IPPool \"p\": ") && e.contains(want)), "{spec}: {errors:?}");
        }
    }

    #[test]
    fn services_keyed_by_namespace_with_defaults() {
        let (m, problems) = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: kube-system}\nspec: {clusterIP: None}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let a = &m.services["default/a"];
        assert_eq!((a.service_type, a.external_traffic_policy), (ServiceType::ClusterIp, TrafficPolicy::Cluster));
        assert_eq!(a.ip_families, [IpFamily::V4], "families from the cluster IP when ipFamilies is absent");
        assert!(m.services["kube-system/a"].cluster_ips.is_empty(), "headless");
    }

    #[test]
    fn invalid_services_name_the_field() {
        let cases = [
            ("spec: {type: Magic}", "spec.type: \"Magic\" is not one of ClusterIP"),
            ("spec: {clusterIP: 10.96.0.300}", "spec.clusterIP: \"10.96.0.300\" is not an IP address"),
            (
                "spec: {clusterIP: 10.96.0.1, clusterIPs: [10.96.0.2]}",
                "spec.clusterIPs: the first entry must be clusterIP",
            ),
            ("spec: {clusterIPs: [10.96.0.1, 10.96.0.2]}", "spec.clusterIPs: two cluster IPs must be one IPv4"),
            ("spec: {externalIPs: [1.2.3.4, nope]}", "spec.externalIPs[1]: \"nope\" is not an IP address"),
            (
                "spec: {externalTrafficPolicy: local}",
                "spec.externalTrafficPolicy: \"local\" is not one of Cluster, Local",
            ),
            ("spec: {ipFamilies: [IPv5]}", "spec.ipFamilies[0]: \"IPv5\" is not one of IPv4, IPv6"),
        ];
        // A fault in `status` is a warning and the Service stays: see service.rs.
        for (body, want) in cases {
            let text = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ns}}\n{body}\n");
            let errors = errors_of(&text);
            assert!(
                errors.iter().any(|e| e.starts_with("Service \"ns/s\": ") && e.contains(want)),
                "{body}: {errors:?}"
            );
        }
        let errors = errors_of("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: 'a b'}\n");
        assert!(errors[0].contains("metadata.namespace"), "{errors:?}");
    }

    #[test]
    fn endpoint_slice_readiness_and_validation() {
        let (m, problems) = parse(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv6\nendpoints:\n- {addresses: ['fd00::1'], nodeName: n1}\n- {addresses: ['fd00::2'], nodeName: n2, conditions: {ready: false, serving: true}}\n- {addresses: ['fd00::3'], conditions: {ready: true}}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let s = &m.endpoint_slices["default/s-1"];
        assert_eq!(s.address_type, Some(IpFamily::V6));
        let got: Vec<_> = s.endpoints.iter().map(|e| (e.node_name.as_deref(), e.ready)).collect();
        assert_eq!(got, [(Some("n1"), true), (Some("n2"), false), (None, true)]);

        // (body, problem, whether the slice is dropped: a bad endpoint is only skipped)
        let cases = [
            (
                "addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]",
                "endpoints[0].addresses[0]: fd00::1 is not of the slice's addressType",
                false,
            ),
            ("addressType: IPv7", "addressType: \"IPv7\" is not one of IPv4, IPv6, FQDN", true),
            ("endpoints: []", "addressType: missing", true),
            (
                "addressType: IPv4\nendpoints: [{addresses: [1.2.3.4], conditions: {ready: 'yes'}}]",
                "endpoints[0].conditions.ready: expected true or false",
                false,
            ),
            (
                "addressType: IPv4\nendpoints: [{addresses: [1.2.3.4], nodeName: 'a b'}]",
                "endpoints[0].nodeName:",
                false,
            ),
        ];
        for (body, want, dropped) in cases {
            let text = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: e, namespace: ns, labels: {{kubernetes.io/service-name: s}}}}\n{body}\n");
            let (m, problems) = parse(&text);
            let found = of(&problems, if dropped { Severity::Error } else { Severity::Warning });
            assert!(
                found.iter().any(|e| e.starts_with("EndpointSlice \"ns/e\": ") && e.contains(want)),
                "{body}: {problems:?}"
            );
            assert_eq!(m.endpoint_slices.is_empty(), dropped, "{body}");
        }
        let (m, problems) = parse(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: orphan}\naddressType: FQDN\n",
        );
        assert_eq!(m.endpoint_slices["default/orphan"].service, None);
        assert!(of(&problems, Severity::Warning)[0].contains("belongs to no Service"), "{problems:?}");
        let errors = errors_of("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old}\n");
        assert!(errors[0].contains("apiVersion"), "{errors:?}");
    }

    #[test]
    fn peer_settings_by_annotation() {
        let peer = |a: &str| {
            format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor, annotations: {{{a}}}}}\nspec: {{peerIP: 10.0.0.1, asNumber: 65001}}\n")
        };
        let m = parse(&peer(
            "bgpd.io/mrai: '5', bgpd.io/max-prefix: '100', bgpd.io/max-prefix-action: warn, bgpd.io/add-path: both, bgpd.io/add-path-send-count: '2', bgpd.io/keep-received: 'true'",
        ))
        .0;
        let p = &m.peers["tor"];
        assert_eq!(p.long_lived_stale_time, Some(3600), "LLGR offered by default");
        assert!(!p.graceful_notification, "the N bit is opt-in");
        assert_eq!(p.mrai, std::time::Duration::from_secs(5));
        assert_eq!(p.max_prefix, Some((100, false)));
        assert!(p.add_path.receive && p.add_path.send);
        assert_eq!(p.add_path_send_count, 2);
        assert!(p.keep_received);
        let d = &parse(&peer("")).0.peers["tor"];
        assert!(!d.keep_received);
        assert_eq!((d.mrai, d.max_prefix, d.add_path_send_count), (std::time::Duration::ZERO, None, 0));
        let g =
            &parse(&peer("bgpd.io/long-lived-stale-time: '0', bgpd.io/graceful-notification: 'true'")).0.peers["tor"];
        assert_eq!((g.long_lived_stale_time, g.graceful_notification), (Some(0), true));
        for (a, want) in [
            (
                "bgpd.io/long-lived-stale-time: '16777216'",
                r#""16777216" is not a number of seconds from 0 to 16777215"#,
            ),
            ("bgpd.io/long-lived-stale-time: 'forever'", r#""forever" is not a number of seconds"#),
            ("bgpd.io/graceful-notification: 'on'", r#""on" is not true or false"#),
            ("bgpd.io/mrai: '601'", r#""601" is not a number of seconds from 0 to 600"#),
            ("bgpd.io/max-prefix: '0'", r#""0" is not a positive number of prefixes"#),
            ("bgpd.io/add-path: all", r#""all" is not receive, send or both"#),
            ("bgpd.io/keep-received: 'yes'", r#""yes" is not true or false"#),
        ] {
            let errors = errors_of(&peer(a));
            assert!(errors.iter().any(|e| e.contains(want)), "{a}: {errors:?}");
        }
    }

    #[test]
    fn decision_settings_by_annotation() {
        let cfg = |a: &str| {
            format!("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default, annotations: {{{a}}}}}\nspec: {{}}\n")
        };
        let c = parse(&cfg("bgpd.io/max-paths: '4', bgpd.io/always-compare-med: 'true'")).0.bgp_configuration;
        assert_eq!((c.max_paths, c.always_compare_med), (4, true));
        let d = BgpConfiguration::default();
        assert_eq!((d.max_paths, d.always_compare_med), (16, false));
        let errors = errors_of(&cfg("bgpd.io/max-paths: '0'"));
        assert!(errors[0].contains(r#"bgpd.io/max-paths"]: "0" is not a number of paths from 1 to 64"#), "{errors:?}");
        let errors = errors_of(&cfg("bgpd.io/always-compare-med: 'yes'"));
        assert!(errors[0].contains(r#""yes" is not true or false"#), "{errors:?}");
        assert_eq!(d.node_mesh_long_lived_stale_time, Some(3600));
        let c = parse(&cfg("bgpd.io/node-mesh-long-lived-stale-time: '60'")).0.bgp_configuration;
        assert_eq!(c.node_mesh_long_lived_stale_time, Some(60));
        let errors = errors_of(&cfg("bgpd.io/node-mesh-long-lived-stale-time: '-1'"));
        assert!(errors[0].contains("node-mesh-long-lived-stale-time"), "{errors:?}");
        assert_eq!(d.default_max_prefix, None);
        let c = parse(&cfg("bgpd.io/max-prefix: '2000'")).0.bgp_configuration;
        assert_eq!(c.default_max_prefix, Some((2000, false)), "the default limit only warns unless told");
        let c = parse(&cfg("bgpd.io/max-prefix: '2000', bgpd.io/max-prefix-action: teardown")).0.bgp_configuration;
        assert_eq!(c.default_max_prefix, Some((2000, true)));
        let errors = errors_of(&cfg("bgpd.io/max-prefix: '0'"));
        assert!(errors[0].contains(r#""0" is not a positive number of prefixes"#), "{errors:?}");
    }

    #[test]
    fn an_empty_service_range_entry_is_skipped_not_the_configuration() {
        let text = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  asNumber: 64600\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}, {}, {cidr: ''}]\n";
        let (model, problems) = parse(text);
        let c = &model.bgp_configuration;
        assert_eq!(c.as_number.get(), 64600, "the configuration is kept");
        assert_eq!(c.service_cluster_ips, vec!["10.96.0.0/12".parse::<ipnet::IpNet>().unwrap()]);
        let warnings: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("serviceClusterIPs[1].cidr: missing: the entry is skipped"), "{warnings:?}");
        assert!(errors_of(text).is_empty());
    }

    #[test]
    fn a_boolean_label_is_its_text_so_a_reflector_selector_matches() {
        let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: rr1, labels: {routeReflector: true}}\nspec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 224.0.0.1}}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: to-rr}\nspec: {nodeSelector: all(), peerSelector: routeReflector == 'true'}\n";
        let (model, problems) = parse(text);
        assert!(errors_of(text).is_empty(), "{problems:?}");
        assert_eq!(model.nodes["rr1"].labels["routeReflector"], "true");
    }

    #[test]
    fn load_balancer_aggregation_setting() {
        let cfg = |v: &str| {
            format!("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{serviceLoadBalancerAggregation: {v}}}\n")
        };
        assert!(parse(&cfg("Enabled")).0.bgp_configuration.service_load_balancer_aggregation);
        assert!(!parse(&cfg("Disabled")).0.bgp_configuration.service_load_balancer_aggregation);
        assert!(BgpConfiguration::default().service_load_balancer_aggregation);
        // Quoted: unquoted, `Off` is YAML 1.1's false, as Calico reads it.
        let errors = errors_of(&cfg("'Off'"));
        assert!(
            errors[0].contains("spec.serviceLoadBalancerAggregation: \"Off\" is not one of Enabled, Disabled"),
            "{errors:?}"
        );
    }
}

#[test]
fn memoised_parsing_gives_the_same_model_and_sees_every_change() {
    let node = |asn: u32| {
        SourceText {
        path: "n.yaml".into(),
        text: format!("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n1}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/24, asNumber: {asn}}}}}\n"),
    }
    };
    let peer = SourceText {
        path: "p.yaml".into(),
        text: "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.0.2, asNumber: 65010, bogus: 1}\n".into(),
    };
    let plain = parse_sources(&[node(65001), peer.clone()]).unwrap();
    let first = parse_sources_memo(&[node(65001), peer.clone()]).unwrap();
    let again = parse_sources_memo(&[node(65001), peer.clone()]).unwrap();
    assert_eq!(first.0, plain.0);
    assert_eq!(again.0, plain.0, "unchanged sources come from the memo");
    assert_eq!(again.1.len(), plain.1.len(), "with their problems (the unknown field)");
    let changed = parse_sources_memo(&[node(65002), peer]).unwrap();
    assert_eq!(changed.0.nodes["n1"].bgp.as_ref().unwrap().as_number.map(|a| a.get()), Some(65002));
    // A source that is gone is gone.
    let only_node = parse_sources_memo(&[node(65002)]).unwrap();
    assert!(only_node.0.peers.is_empty());
}

#[test]
fn memoised_parsing_agrees_with_plain_parsing_on_every_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/datastore/testdata");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(sources) = source::read(&path) else { continue };
        let plain = parse_sources(&sources);
        // Twice: the second call comes from the memo.
        for _ in 0..2 {
            let memo = parse_sources_memo(&sources);
            match (&plain, &memo) {
                (Ok((m1, p1)), Ok((m2, p2))) => {
                    assert_eq!(m1, m2, "{}", path.display());
                    let (a, b): (Vec<String>, Vec<String>) =
                        (p1.iter().map(|p| p.to_string()).collect(), p2.iter().map(|p| p.to_string()).collect());
                    assert_eq!(a, b, "{}", path.display());
                }
                (Err(e1), Err(e2)) => assert_eq!(e1.to_string(), e2.to_string()),
                _ => panic!("{}: one parse failed, the other did not", path.display()),
            }
        }
    }
}

#[test]
fn documents_split_at_their_markers_only() {
    let text = "a: 1\n---\nb: |\n  ---\n  x\n--- # c\nc: 3\n---\n";
    assert_eq!(source::split_documents(text), ["a: 1\n", "---\nb: |\n  ---\n  x\n", "--- # c\nc: 3\n", "---\n"]);
    assert_eq!(source::split_documents(""), [""]);
    assert_eq!(source::split_documents("{\"kind\": \"Node\"}"), ["{\"kind\": \"Node\"}"]);
}

#[test]
fn a_syntax_error_in_one_document_is_reported_with_its_line_in_the_file() {
    let s = SourceText { path: "x.yaml".into(), text: "kind: A\n---\nkind: [unclosed\n".into() };
    let (a, b) = (parse_sources(std::slice::from_ref(&s)), parse_sources_memo(&[s]));
    assert_eq!(a.unwrap_err().to_string(), b.unwrap_err().to_string());
}

#[test]
fn a_document_inserted_before_others_renumbers_them_as_a_plain_parse_does() {
    let doc = |name: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{peerIP: 10.0.0.2, asNumber: 65010, bogus: 1}}\n")
    };
    let before = SourceText { path: "m.yaml".into(), text: format!("{}---\n{}", doc("a"), doc("b")) };
    let after = SourceText { path: "m.yaml".into(), text: format!("{}---\n{}---\n{}", doc("z"), doc("a"), doc("b")) };
    for s in [before, after] {
        let plain = parse_sources(std::slice::from_ref(&s)).unwrap();
        let memo = parse_sources_memo(std::slice::from_ref(&s)).unwrap();
        assert_eq!(plain.0, memo.0);
        let text = |p: &[Problem]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(text(&plain.1), text(&memo.1), "problem locations name the right document");
    }
}

#[test]
fn a_local_workload_peer_is_read_with_its_as_and_selector() {
    let text = format!(
        "{PEER_HEAD}spec: {{nodeSelector: \"rack == 'a'\", localWorkloadSelector: \"app == 'router'\", asNumber: 65300, \
         keepaliveTime: 10s}}\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{localWorkloadPeeringIPV4: 169.254.0.179, localWorkloadPeeringIPV6: 'fe80::179'}}\n"
    );
    let (model, problems) = parse(&text);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(!model.peers.contains_key("tor-1"), "no remote address or node: apart from the other peers");
    let LocalWorkloadPeer { selector, as_number, peer } = &model.local_workload_peers["tor-1"];
    assert_eq!(as_number.get(), 65300);
    let labels: BTreeMap<String, String> = [("app".to_string(), "router".to_string())].into();
    assert!(selector.matches(&labels));
    assert!(matches!(peer.scope, PeerScope::NodeSelector(_)));
    assert_eq!(peer.keepalive_time, Some(Duration::from_secs(10)));
    let cfg = &model.bgp_configuration;
    assert_eq!(cfg.local_workload_peering_ipv4, Some("169.254.0.179".parse().unwrap()));
    assert_eq!(cfg.local_workload_peering_ipv6, Some("fe80::179".parse().unwrap()));
}

#[test]
fn local_workload_peering_addresses_are_checked_by_family_and_needed_by_the_peers() {
    let cfg = |spec: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {spec}\n")
    };
    for (spec, want) in [
        ("{localWorkloadPeeringIPV4: 'fe80::1'}", r#"spec.localWorkloadPeeringIPV4: "fe80::1" is not an IPv4 address"#),
        (
            "{localWorkloadPeeringIPV6: 169.254.0.179}",
            r#"spec.localWorkloadPeeringIPV6: "169.254.0.179" is not an IPv6 address"#,
        ),
    ] {
        let (_, problems) = parse(&cfg(spec));
        let errors = of(&problems, Severity::Error);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains(want), "{}", errors[0]);
    }
    // A peer of local workloads without either address: a warning naming the fields.
    let peer = format!("{PEER_HEAD}spec: {{localWorkloadSelector: all(), asNumber: 65300}}\n");
    let (model, problems) = parse(&peer);
    assert!(model.local_workload_peers.contains_key("tor-1"), "kept: the addresses may come later");
    let warnings = of(&problems, Severity::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("spec.localWorkloadSelector: no session")
            && warnings[0].contains("localWorkloadPeeringIPV4")
    );
    let (_, problems) = parse(&format!("{peer}---\n{}", cfg("{localWorkloadPeeringIPV4: 169.254.0.179}")));
    assert!(problems.is_empty(), "{problems:#?}");
}
