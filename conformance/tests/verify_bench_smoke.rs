//! `bench verify` (`conformance/src/bench/verify.rs`) at a small size, as a
//! correctness test (no time or memory figure is asserted): the generated
//! design (40 nodes in 4 racks of 10, two ToRs per rack, a spine, 10 services
//! with endpoints on three nodes each) goes through `Topology::parse` and
//! `bgpd verify`, and the checks find it sound, also with each of its 8 ToRs
//! failed; the same design with one mistake (the nodes refuse their own rack
//! AS back) is found broken, so the soundness is the checks' verdict.

use bgpd_lab::spec::Topology;
use bgpd_lab::verify::report::{Class, Kind};
use bgpd_lab::verify::{found, verify_topology, Options};
use conformance::bench::verify::{measure, template, Shape};

fn shape() -> Shape {
    Shape { per_rack: 10, ..Shape::new(40) }
}

#[test]
fn the_generated_design_is_sound_and_survives_every_single_tor_failure() {
    let f = measure(&shape(), true).unwrap_or_else(|e| panic!("{e}"));
    assert!(f.sound(), "{f:#?}");
    assert_eq!((f.nodes, f.racks, f.members), (40, 4, 49), "{f:#?}");
    // Each node has a session to each of its two ToRs, and each ToR one to the spine: both ends counted.
    assert_eq!(f.sessions, (2 * (40 * 2 + 8), 2 * (40 * 2 + 8)), "{f:#?}");
    assert_eq!(f.failures, 8, "every ToR failed once");
    assert!(f.with_failures.is_some() && f.peak >= f.check_peak, "{f:#?}");
}

#[test]
fn the_generated_design_without_allowas_in_is_found_broken() {
    let text = template(&shape()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text.matches("numAllowedLocalASNumbers: 1").count(), 8, "a BGPPeer per ToR");
    let broken = text.replace("numAllowedLocalASNumbers: 1", "numAllowedLocalASNumbers: 0");
    let topo = Topology::parse(&broken).unwrap_or_else(|e| panic!("{e}"));
    let r = verify_topology(topo, "broken bench design", &Options::default());
    assert!(!r.sound(), "a node rejects its rack mates' routes as AS-path loops");
    assert!(found(&r, Class::BlackHole, Kind::Node, "node-1"), "{}", r.text());
    assert!(r.traces.delivered < r.traces.traced, "{:?}", r.traces);
}
