//! `bgpd verify` on the shipped templates (each must be sound) and on the
//! deliberately broken copies in `templates/broken/` (each must be found,
//! with the right class of problem and the object responsible named).
//! The library is called directly: no binary, no root, no network.

use std::path::PathBuf;

use bgpd_lab::verify::report::{Class, Kind, Report, Severity};
use bgpd_lab::verify::{found, verify, Options};

fn templates() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

fn run(rel: &str, opts: &Options) -> Report {
    let path = templates().join(rel);
    verify(&path, opts).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn problems(r: &Report) -> String {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .map(|f| format!("{:?}: {}\n", f.class, f.summary))
        .collect()
}

#[test]
fn every_shipped_template_is_sound() {
    let mut seen = 0;
    for entry in std::fs::read_dir(templates()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let r = verify(&path, &Options::default()).unwrap();
        let name = path.display();
        assert!(r.sound(), "{name}: {}", problems(&r));
        assert!(r.converged, "{name}: the simulation did not converge");
        assert!(!r.sessions.is_empty() && r.sessions.iter().all(|s| s.established), "{name}: {:?}", r.sessions);
        assert!(r.traces.traced > 0 && r.traces.delivered == r.traces.traced, "{name}: {:?}", r.traces);
    }
    assert_eq!(seen, 8, "the eight shipped templates");
}

#[test]
fn as_mismatch_names_the_bgppeer() {
    let r = run("broken/as-mismatch.yaml", &Options::default());
    assert!(!r.sound());
    assert!(found(&r, Class::Session, Kind::BgpPeer, "tor-r1"), "{}", problems(&r));
    let f = r.findings.iter().find(|f| f.class == Class::Session).unwrap();
    assert!(f.summary.contains("AS 65009") && f.summary.contains("65001"), "{}", f.summary);
    assert!(f.fix.as_deref().unwrap_or_default().contains("65001"), "{f:?}");
    let down: Vec<_> = r.sessions.iter().filter(|s| !s.established).collect();
    assert!(!down.is_empty() && down.iter().all(|s| s.remote.to_string() == "10.0.1.1" || s.member == "tor-r1"));
}

#[test]
fn a_peer_selector_selecting_nothing_is_named_and_its_black_holes_found() {
    let r = run("broken/peer-selector-nothing.yaml", &Options::default());
    assert!(found(&r, Class::Selector, Kind::BgpPeer, "peer-with-route-reflectors"), "{}", problems(&r));
    assert!(found(&r, Class::BlackHole, Kind::Node, "node-1"), "{}", problems(&r));
}

#[test]
fn a_pool_selecting_no_node_leaves_nodes_without_addresses() {
    let r = run("broken/pool-selects-no-node.yaml", &Options::default());
    for node in ["node-3", "node-4"] {
        assert!(found(&r, Class::Ipam, Kind::Node, node), "{}", problems(&r));
    }
    assert!(found(&r, Class::Ipam, Kind::IpPool, "rack2"), "{}", problems(&r));
}

#[test]
fn a_load_balancer_ip_outside_the_ranges_is_never_advertised() {
    let r = run("broken/lb-ip-outside-range.yaml", &Options::default());
    assert!(found(&r, Class::Service, Kind::Service, "default/web"), "{}", problems(&r));
    assert!(found(&r, Class::Service, Kind::BgpConfiguration, "default"), "{}", problems(&r));
    let hole = r.findings.iter().find(|f| f.class == Class::BlackHole).expect("a black hole");
    assert!(hole.summary.contains("198.51.100.10") && hole.detail.iter().any(|d| d.contains("never advertised")));
}

#[test]
fn a_rack_sharing_an_as_without_allowas_in_rejects_its_neighbours_routes() {
    let r = run("broken/rack-as-loop.yaml", &Options::default());
    assert!(r.sessions.iter().all(|s| s.established), "the sessions are fine; the routes are not");
    for node in ["node-1", "node-2", "node-3", "node-4"] {
        assert!(found(&r, Class::BlackHole, Kind::Node, node), "{}", problems(&r));
    }
    let f = r.findings.iter().find(|f| f.class == Class::BlackHole && f.names(Kind::Node, "node-1")).unwrap();
    assert!(f.detail.iter().any(|d| d.contains("AS-path loop") && d.contains("65101")), "{f:?}");
    assert!(f.fix.as_deref().unwrap_or_default().contains("numAllowedLocalASNumbers"), "{f:?}");
}

#[test]
fn a_local_service_without_a_ready_endpoint_is_named() {
    let r = run("broken/local-no-endpoint.yaml", &Options::default());
    assert!(found(&r, Class::Service, Kind::Service, "default/web"), "{}", problems(&r));
    let f = r.findings.iter().find(|f| f.class == Class::Service).unwrap();
    assert!(f.summary.contains("no ready endpoint"), "{}", f.summary);
}

#[test]
fn a_router_id_collision_in_the_mesh_is_named() {
    let r = run("broken/router-id-collision.yaml", &Options::default());
    assert!(!r.sound());
    let f = r
        .findings
        .iter()
        .find(|f| f.class == Class::Session && f.summary.contains("router ID"))
        .unwrap_or_else(|| panic!("{}", problems(&r)));
    assert!(
        f.summary.contains("53.151.27.230") && f.summary.contains("node-1") && f.summary.contains("node-2"),
        "{f:?}"
    );
    assert!(f.fix.as_deref().unwrap_or_default().contains("bgpd.io/router-id"), "{f:?}");
    let down: Vec<_> = r.sessions.iter().filter(|s| !s.established).collect();
    assert!(!down.is_empty(), "the session between them does not come up");
    assert!(down.iter().all(|s| s.member == "node-1" || s.member == "node-2"), "{down:?}");
}

#[test]
fn answers_through_another_firewall_are_named_where_the_template_declares_symmetry() {
    let r = run("broken/asymmetric.yaml", &Options::default());
    assert!(!r.sound());
    let asym: Vec<_> = r.findings.iter().filter(|f| f.class == Class::Asymmetry).collect();
    assert!(!asym.is_empty(), "{}", problems(&r));
    assert!(asym.iter().all(|f| f.names(Kind::Router, "fw-b")), "{asym:?}");
    let out = asym
        .iter()
        .find(|f| f.summary.contains("requests pass fw-a where the answers pass fw-b"))
        .unwrap_or_else(|| panic!("{asym:?}"));
    assert!(out.detail.iter().any(|d| d.contains("-> host client")), "{out:?}");
    assert!(
        r.findings.iter().all(|f| f.class == Class::Asymmetry || f.severity != Severity::Problem),
        "nothing else is wrong: {}",
        problems(&r)
    );
    // Without the declaration the same design is sound: asymmetry is a
    // problem only where the template says it is one.
    let text = std::fs::read_to_string(templates().join("broken/asymmetric.yaml")).unwrap();
    let topo = bgpd_lab::spec::Topology::parse(&text.replace("symmetric: true", "symmetric: false")).unwrap();
    let r = bgpd_lab::verify::verify_topology(topo, "asymmetric, undeclared", &Options::default());
    assert!(r.sound(), "{}", problems(&r));
    // The fix the template names: the client's gateway is the firewall the
    // cluster's requests leave by.
    let topo = bgpd_lab::spec::Topology::parse(&text.replace("gateway: 10.9.0.2", "gateway: 10.9.0.1")).unwrap();
    let r = bgpd_lab::verify::verify_topology(topo, "asymmetric, fixed", &Options::default());
    assert!(r.sound(), "{}", problems(&r));
}

#[test]
fn every_broken_template_is_tested() {
    let mut names: Vec<String> = std::fs::read_dir(templates().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let tested = [
        "as-mismatch.yaml",
        "asymmetric.yaml",
        "lb-ip-outside-range.yaml",
        "local-no-endpoint.yaml",
        "peer-selector-nothing.yaml",
        "pool-selects-no-node.yaml",
        "rack-as-loop.yaml",
        "router-id-collision.yaml",
    ];
    assert_eq!(names, tested, "a broken template without a test (or a test without its template)");
}

#[test]
fn failures_of_a_single_homed_rack_partition_it_and_a_dual_homed_design_survives_its_tors() {
    let opts = Options { failures: 1, ..Options::default() };
    let r = run("l3-tor-per-rack.yaml", &opts);
    let tor =
        r.failures.iter().find(|o| o.failed.iter().any(|x| x.kind == Kind::Router && x.name == "tor-r1")).unwrap();
    assert!(tor.findings.iter().any(|f| f.class == Class::Partition), "{:?}", tor.findings);
    let node = r.failures.iter().find(|o| o.failed.iter().any(|x| x.name == "node-1")).unwrap();
    assert!(
        node.findings.is_empty(),
        "a node's failure cuts only its own pods, which are not probed: {:?}",
        node.findings
    );
    assert!(!r.sound());

    let r = run("dual-tor-ecmp.yaml", &opts);
    for tor in ["tor-a", "tor-b"] {
        let o = r.failures.iter().find(|o| o.failed.iter().any(|x| x.name == tor)).unwrap();
        assert!(o.converged && o.findings.is_empty(), "{tor}: {:?}", o.findings);
    }
}

#[test]
fn explain_says_why_a_route_is_missing_and_json_carries_the_classes() {
    let probe = run("broken/rack-as-loop.yaml", &Options::default());
    let f = probe.findings.iter().find(|f| f.class == Class::BlackHole && f.names(Kind::Node, "node-1")).unwrap();
    let prefix: ipnet::IpNet = f.summary.rsplit(' ').next().unwrap().parse().unwrap();
    let opts = Options { explain: Some(("node-1".into(), prefix)), ..Options::default() };
    let r = run("broken/rack-as-loop.yaml", &opts);
    let lines = r.explanation.clone().unwrap();
    assert!(lines.iter().any(|l| l.contains("AS-path loop")), "{lines:?}");
    let json = serde_json::to_value(&r).unwrap();
    let classes: Vec<&str> = json["findings"].as_array().unwrap().iter().filter_map(|f| f["class"].as_str()).collect();
    assert!(classes.contains(&"black-hole"), "{classes:?}");
    assert!(json["findings"][0]["objects"][0]["kind"].as_str().is_some());
}

#[test]
fn an_unreadable_template_is_an_error() {
    let err = verify(&templates().join("no-such-template.yaml"), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}
