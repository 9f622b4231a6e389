//! The Calico corpus: clusters written in Calico's resources
//! (`bgpd/tests/calico_plan/*.yaml`, see its README) and, for each node,
//! every session it must run and what it originates, as Calico's confd would
//! render them into BIRD's configuration for that node.
//!
//! A session is written `NAME ADDR:PORT as LOCAL>PEER connects|waits FAMILIES
//! md5:y|n ttl:HOPS|- src:ADDR|- gr:SECONDS` with ` rr-client` when this node
//! reflects to it; an origination `PREFIX COMMUNITIES`.

use super::plan;
use crate::daemon::spec::PeerSpec;
use crate::datastore::{parse_sources, ClusterRoutes, LogSeverity, Model, Severity, SourceText};
use bgpd_proto::Family;

/// One case: a file of the corpus, a node, the sessions it must run (in
/// order), and what it must originate (`None`: not checked).
struct Case {
    file: &'static str,
    node: &'static str,
    sessions: &'static [&'static str],
    originations: Option<&'static [&'static str]>,
}

const fn case(file: &'static str, node: &'static str, sessions: &'static [&'static str]) -> Case {
    Case { file, node, sessions, originations: None }
}

const CASES: &[Case] = &[
    // Mesh, dual stack. confd compares addresses as text: "10.0.0.10" and
    // "10.0.0.11" are lower than "10.0.0.9", "fd00::a" higher than "fd00::9".
    case(
        "mesh-dual-stack.yaml",
        "node-a",
        &[
            "mesh/node-b 10.0.0.10:179 as 63400>63400 connects ipv4 md5:n ttl:- src:10.0.0.9 gr:120",
            "mesh/node-b/ipv6 [fd00::a]:179 as 63400>63400 waits ipv6 md5:n ttl:- src:fd00::9 gr:120",
            "mesh/node-c 10.0.0.11:179 as 63400>65003 connects ipv4 md5:n ttl:- src:10.0.0.9 gr:120",
        ],
    ),
    case(
        "mesh-dual-stack.yaml",
        "node-b",
        &[
            "mesh/node-a 10.0.0.9:179 as 63400>63400 waits ipv4 md5:n ttl:- src:10.0.0.10 gr:120",
            "mesh/node-a/ipv6 [fd00::9]:179 as 63400>63400 connects ipv6 md5:n ttl:- src:fd00::a gr:120",
            "mesh/node-c 10.0.0.11:179 as 63400>65003 waits ipv4 md5:n ttl:- src:10.0.0.10 gr:120",
        ],
    ),
    case(
        "mesh-dual-stack.yaml",
        "node-c",
        &[
            "mesh/node-a 10.0.0.9:179 as 65003>63400 waits ipv4 md5:n ttl:- src:10.0.0.11 gr:120",
            "mesh/node-b 10.0.0.10:179 as 65003>63400 connects ipv4 md5:n ttl:- src:10.0.0.11 gr:120",
        ],
    ),
    // Mesh password and restart time; node-b listens on its own port.
    case(
        "mesh-password-ports.yaml",
        "node-a",
        &["mesh/node-b 10.0.0.2:1791 as 64512>64512 waits ipv4 md5:y ttl:- src:10.0.0.1 gr:300"],
    ),
    case(
        "mesh-password-ports.yaml",
        "node-b",
        &["mesh/node-a 10.0.0.1:1790 as 64512>64512 connects ipv4 md5:y ttl:- src:10.0.0.2 gr:300"],
    ),
    // Route reflectors: clients connect, one session per family both have;
    // the reflector reaches them through the BGPPeer's reverse side.
    case(
        "route-reflectors.yaml",
        "node-a",
        &[
            "peer-with-route-reflectors/rr-1 10.0.0.5:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.1 gr:120",
            "peer-with-route-reflectors/rr-1/ipv6 [fd00::5]:179 as 64512>64512 connects ipv6 md5:n ttl:- src:fd00::1 gr:120",
        ],
    ),
    case(
        "route-reflectors.yaml",
        "node-b",
        &["peer-with-route-reflectors/rr-1 10.0.0.5:179 as 65002>64512 connects ipv4 md5:n ttl:- src:10.0.0.2 gr:120"],
    ),
    case(
        "route-reflectors.yaml",
        "rr-1",
        &[
            "rr-external 10.0.0.200:179 as 64512>64512 connects ipv4+ipv6 md5:n ttl:- src:10.0.0.5 gr:120 rr-client",
            "peer-with-route-reflectors/node-a 10.0.0.1:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.5 gr:120 rr-client",
            "peer-with-route-reflectors/node-a/ipv6 [fd00::1]:179 as 64512>64512 connects ipv6 md5:n ttl:- src:fd00::5 gr:120 rr-client",
            "peer-with-route-reflectors/node-b 10.0.0.2:179 as 64512>65002 connects ipv4 md5:n ttl:- src:10.0.0.5 gr:120",
        ],
    ),
    // reversePeering: Manual: each side only from its own BGPPeer.
    case(
        "reverse-manual.yaml",
        "node-a",
        &["peer-with-rr/rr-1 10.0.0.5:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.1 gr:120"],
    ),
    case("reverse-manual.yaml", "node-b", &[]),
    case(
        "reverse-manual.yaml",
        "rr-1",
        &[
            "peer-from-rr/node-a 10.0.0.1:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.5 gr:60 rr-client",
            "peer-from-rr/node-b 10.0.0.2:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.5 gr:60 rr-client",
        ],
    ),
    // peerIP of a Calico node: its AS when asNumber is absent, its listen
    // port, the reverse side on that node, the lower address waiting for a
    // global BGPPeer.
    case(
        "peer-ip-nodes.yaml",
        "node-a",
        &[
            "to-b 10.0.0.2:178 as 64512>65002 waits ipv4 md5:n ttl:- src:10.0.0.1 gr:120",
            "to-c 10.0.0.3:1179 as 64512>65003 connects ipv4 md5:n ttl:- src:10.0.0.1 gr:120",
            "to-c-other-as [fd00::3]:179 as 64512>65999 connects ipv6 md5:n ttl:- src:fd00::1 gr:120",
        ],
    ),
    case(
        "peer-ip-nodes.yaml",
        "node-b",
        &[
            "to-b/node-a 10.0.0.1:178 as 65002>64512 connects ipv4 md5:n ttl:- src:10.0.0.2 gr:120",
            "to-b/node-c 10.0.0.3:1179 as 65002>65003 connects ipv4 md5:n ttl:- src:10.0.0.2 gr:120",
        ],
    ),
    case(
        "peer-ip-nodes.yaml",
        "node-c",
        &[
            "to-b 10.0.0.2:178 as 65003>65002 connects ipv4 md5:n ttl:- src:10.0.0.3 gr:120",
            "to-c/node-a 10.0.0.1:178 as 65003>64512 connects ipv4 md5:n ttl:- src:10.0.0.3 gr:120",
        ],
    ),
    // ToR per rack: both families on a session to a router that is no
    // Calico node; the global peer wins over a node's peer at the same
    // address; a peer at the node's own address is skipped.
    case(
        "tor-per-rack.yaml",
        "node-a",
        &[
            "z-global-route-server 192.0.2.1:179 as 65100>65301 connects ipv4+ipv6 md5:n ttl:- src:10.0.1.11 gr:120",
            "rack1-tor 10.0.1.1:179 as 65100>65001 connects ipv4+ipv6 md5:y ttl:1 src:- gr:60",
            "rack1-tor-v6 [fd00:1::1]:179 as 65100>65001 connects ipv4+ipv6 md5:n ttl:- src:fd00:1::11 gr:120",
        ],
    ),
    // Local workloads: each node the BGPPeer selects peers with the matching
    // workloads on itself, per family, from the peering address; node-b's
    // VM has an IPv6 address too and gets both sessions although node-b has
    // no IPv6 address (deliberately: Calico would run no BIRD for IPv6
    // there); node-c is not selected.
    case(
        "local-workloads.yaml",
        "node-a",
        &[
            "local/vm-routers/tenant-1/virt-launcher-r1 10.244.0.5:179 as 64512>65500 connects ipv4 md5:n ttl:- src:169.254.0.179 gr:60",
            "local/vm-routers/tenant-1/virt-launcher-r1/ipv6 [fd10::5]:179 as 64512>65500 connects ipv6 md5:n ttl:- src:fd00:ffff::179 gr:60",
        ],
    ),
    case(
        "local-workloads.yaml",
        "node-b",
        &[
            "local/vm-routers/tenant-2/virt-launcher-r2 10.244.1.5:179 as 64512>65500 connects ipv4 md5:n ttl:- src:169.254.0.179 gr:60",
            "local/vm-routers/tenant-2/virt-launcher-r2/ipv6 [fd10:1::5]:179 as 64512>65500 connects ipv6 md5:n ttl:- src:fd00:ffff::179 gr:60",
        ],
    ),
    case("local-workloads.yaml", "node-c", &[]),
    // Communities: node-b's own BGPConfiguration replaces the list.
    Case {
        file: "communities-per-node.yaml",
        node: "node-a",
        sessions: &["mesh/node-b 10.0.0.2:179 as 64512>64512 waits ipv4 md5:n ttl:- src:10.0.0.1 gr:120"],
        originations: Some(&["10.244.0.0/26 63400:300:100,63400:120"]),
    },
    Case {
        file: "communities-per-node.yaml",
        node: "node-b",
        sessions: &["mesh/node-a 10.0.0.1:179 as 64512>64512 connects ipv4 md5:n ttl:- src:10.0.0.2 gr:120"],
        originations: Some(&["10.244.0.64/26 63400:200"]),
    },
];

fn load(file: &str) -> Model {
    let path = format!("{}/tests/calico_plan/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (model, problems) = parse_sources(&[SourceText { path: file.into(), text }]).unwrap();
    let errors: Vec<_> = problems.iter().filter(|p| p.severity == Severity::Error).collect();
    assert!(errors.is_empty(), "{file}: {errors:#?}");
    model
}

fn families(f: &[Family]) -> String {
    let name = |f: &Family| if *f == Family::IPV4_UNICAST { "ipv4" } else { "ipv6" };
    f.iter().map(name).collect::<Vec<_>>().join("+")
}

fn render(p: &PeerSpec) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "{} {} as {}>{} {} {} md5:{} ttl:{} src:{} gr:{}{}",
        p.name,
        p.addr,
        p.local_as,
        p.peer_as,
        if p.passive { "waits" } else { "connects" },
        families(&p.families),
        if p.password.is_some() { "y" } else { "n" },
        opt(p.ttl_security.map(|t| t.to_string())),
        opt(p.source.map(|s| s.to_string())),
        opt(p.restart_time.map(|t| t.to_string())),
        if p.routing.rr_client { " rr-client" } else { "" },
    )
}

#[test]
fn every_node_of_the_corpus_plans_what_calico_renders() {
    let mut failures = Vec::new();
    for c in CASES {
        let model = load(c.file);
        let (node, peers) = plan(&model, c.node).unwrap_or_else(|e| panic!("{} {}: {e}", c.file, c.node));
        let got: Vec<String> = peers.iter().map(render).collect();
        if got != c.sessions {
            failures.push(format!("{} {}:\n  got  {got:#?}\n  want {:#?}", c.file, c.node, c.sessions));
        }
        if let Some(want) = c.originations {
            let got: Vec<String> = node
                .originations
                .iter()
                .map(|o| {
                    let cs: Vec<String> = o.communities.iter().map(|c| c.to_string()).collect();
                    format!("{} {}", o.prefix, cs.join(","))
                })
                .collect();
            if got != want {
                failures.push(format!("{} {} originations:\n  got  {got:#?}\n  want {want:#?}", c.file, c.node));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_corpus_file_has_cases_and_every_case_a_file() {
    let dir = format!("{}/tests/calico_plan", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut cased: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    cased.sort();
    cased.dedup();
    assert_eq!(files, cased);
}

#[test]
fn a_node_listens_on_its_own_port_and_logs_at_its_own_level() {
    let model = load("mesh-password-ports.yaml");
    let port = |n: &str| plan(&model, n).unwrap().0.listen.iter().map(|a| a.port()).collect::<Vec<_>>();
    assert_eq!(port("node-a"), [1790, 1790], "the cluster's listenPort");
    assert_eq!(port("node-b"), [1791, 1791], "node.node-b's listenPort");
    assert_eq!(model.log_severity_of("node-a"), LogSeverity::Info);
    assert_eq!(model.log_severity_of("node-b"), LogSeverity::Debug);
}

#[test]
fn a_peer_without_as_number_at_no_node_s_address_is_warned_about_and_plans_nothing() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n\
                ---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: nowhere}\nspec: {peerIP: 10.0.0.77}\n";
    let (model, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml.into() }]).unwrap();
    let warned: Vec<String> =
        problems.iter().filter(|p| p.severity == Severity::Warning).map(|p| p.to_string()).collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("spec.asNumber: missing, and 10.0.0.77 is no Node's address"), "{warned:?}");
    let (_, peers) = plan(&model, "n1").unwrap();
    assert!(peers.iter().all(|p| p.name != "nowhere"), "no AS to peer with");
}

#[test]
fn program_cluster_routes_and_local_workload_peering_addresses_are_read() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                spec: {programClusterRoutes: EnabledIPIPOnly, localWorkloadPeeringIPV4: 169.254.0.179}\n";
    let (model, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml.into() }]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let c = &model.bgp_configuration;
    assert_eq!(c.program_cluster_routes, ClusterRoutes { ipip: true, no_encap: false });
    assert_eq!(c.local_workload_peering_ipv4, Some("169.254.0.179".parse().unwrap()));
    // A value Calico does not know: Calico's default, with a warning naming it.
    let yaml = yaml.replace("EnabledIPIPOnly", "Sometimes");
    let (model, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml }]).unwrap();
    let warned: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(warned.iter().any(|w| w.contains("spec.programClusterRoutes: \"Sometimes\" is not one of")), "{warned:?}");
    assert_eq!(model.bgp_configuration.program_cluster_routes, ClusterRoutes::CALICO_DEFAULT);
}

#[test]
fn live_migration_route_priorities_are_named_as_not_supported() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                spec: {ipv4NormalRoutePriority: 1024, ipv6NormalRoutePriority: 1024, asNumber: 64513}\n";
    let (model, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml.into() }]).unwrap();
    let warned: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    for field in ["ipv4NormalRoutePriority", "ipv6NormalRoutePriority"] {
        let w = warned.iter().filter(|w| w.contains(&format!("spec.{field}: not supported: Felix's metric"))).count();
        assert_eq!(w, 1, "one warning naming {field}, not also as an unknown field: {warned:?}");
    }
    assert_eq!(model.bgp_configuration.as_number.get(), 64513, "the rest of the object is read");
}
