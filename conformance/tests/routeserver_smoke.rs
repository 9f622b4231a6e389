//! The route-server benchmark harness at tiny scale (`bench routeserver`, see
//! `conformance/src/bench/routeserver`): a DUT configured as a route server takes
//! 2,000 prefixes in 20 attribute sets from one tester, and then the same 1,000 prefixes
//! from two testers with different AS-path lengths; the monitor must end with exactly the
//! expected table (every prefix, nothing more, and after churn the shortest path's origin
//! AS everywhere), and still hold it 2 s later. A correctness test of the harness and the
//! DUT: no timing is asserted.

use std::time::Duration;

use conformance::bench::routeserver::scenario::{self, Kind, Scenario};
use conformance::bench::routeserver::{run_one, DutKind, RunConfig, Target};
use conformance::lab::bgpd;

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "1x2000-20set".into(), testers: 1, kind: Kind::Distinct { prefixes: 2000, sets: 20 } },
        Scenario { name: "2x1000-churn".into(), testers: 2, kind: Kind::Churn { prefixes: 1000 } },
    ]
}

fn check(target: Target) {
    let cfg = RunConfig { timeout: Duration::from_secs(60), settle: Duration::from_secs(2) };
    for s in scenarios() {
        let load = scenario::build(&s).expect("building the load");
        let o = run_one(&target, &s, &load, &cfg).unwrap_or_else(|e| panic!("{} {}: {e}", target.name(), s.name));
        eprintln!("{}", o.line());
        assert_eq!(o.error, None, "{}", o.line());
        assert!(o.seconds.is_some(), "{}: the monitor never held exactly the expected table: {}", s.name, o.line());
        assert_eq!((o.progress, o.extra), (o.expected, 0), "{}", o.line());
        assert_eq!(o.still_complete, Some(true), "{}: the table changed after done: {}", s.name, o.line());
    }
}

#[test]
fn bird_as_route_server_passes_every_prefix_and_the_best_path() {
    if !testgate::require_root_and_cmds("bird_as_route_server_passes_every_prefix_and_the_best_path", &["bird", "ip"]) {
        return;
    }
    check(Target::Dut(DutKind::Bird, None));
}

#[test]
fn generator_delivers_every_prefix_without_a_dut() {
    if !testgate::require_root_and_cmds("generator_delivers_every_prefix_without_a_dut", &["ip"]) {
        return;
    }
    check(Target::Generator);
}

#[test]
fn bgpd_as_route_server_passes_every_prefix_and_the_best_path() {
    if !testgate::require_root_and_cmds("bgpd_as_route_server_passes_every_prefix_and_the_best_path", &["ip"]) {
        return;
    }
    check(Target::Dut(DutKind::Bgpd, Some(bgpd::binary())));
}
