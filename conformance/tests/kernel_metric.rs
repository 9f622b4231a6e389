//! BGPFilter `setPriority` is the kernel route's metric, as Calico's BIRD
//! renders it (`krt_metric`):
//!
//! - a BIRD ToR (AS 65001) announces 10.100.81.0/24 and 10.100.82.0/24 to
//!   bgpd, whose BGPPeer names a BGPFilter with an `importV4` rule that sets
//!   priority 512 on 10.100.81.0/24: in the node's table 254 that route has
//!   metric 512, the other bgpd's default 20 (`ip -j route show table 254
//!   proto 186`);
//! - the datastore is rewritten with the rule at 300: the route moves to
//!   metric 300 without a gap: every poll while it moves finds a route of
//!   bgpd's for the prefix, and `ip monitor route` in the node's namespace
//!   shows the route at 300 added before the one at 512 is deleted; the
//!   other route is not touched.

use std::collections::BTreeSet;
use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;
use testgate::testbed::RouteMonitor;

const UP: Duration = Duration::from_secs(60);
const PRIO: &str = "10.100.81.0/24";
const PLAIN: &str = "10.100.82.0/24";
const NODE: &str = "10.255.26.1";
const TOR: &str = "10.255.26.2";

/// The node's routes of bgpd in table 254, as `dst metric`.
fn routes(ns: &Ns) -> Result<BTreeSet<String>, String> {
    let out = ns.ip(&["-j", "route", "show", "table", "254", "proto", "186"]).map_err(|e| e.to_string())?;
    let routes: Vec<Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).map_err(|e| format!("{e}: {out}"))?;
    Ok(routes
        .iter()
        .map(|r| format!("{} {}", r["dst"].as_str().unwrap_or_default(), r["metric"].as_u64().unwrap_or(0)))
        .collect())
}

fn routes_are(ns: &Ns, want: &[String]) -> Result<(), String> {
    let have = routes(ns)?;
    let want: BTreeSet<String> = want.iter().cloned().collect();
    if have == want {
        Ok(())
    } else {
        Err(format!("bgpd's routes in table 254 are {have:?}, want {want:?}"))
    }
}

/// The datastore: the ToR's BGPPeer with a filter setting `priority` on PRIO.
fn datastore(priority: u32) -> String {
    doc::stream(&[
        doc::bgp_configuration(64512),
        doc::node("node-1", &format!("{NODE}/24"), &[], None),
        doc::peer(
            "tor",
            &[],
            &format!("  peerIP: {TOR}\n  asNumber: 65001\n  keepaliveTime: 3s\n  filters: [metric]\n"),
        ),
        doc::filter(
            "metric",
            &format!(
                "  importV4:
    - action: Accept
      matchOperator: Equal
      cidr: {PRIO}
      operations:
        - setPriority: {{value: {priority}}}
"
            ),
        ),
    ])
}

fn bird_conf() -> String {
    bird::BirdConfig {
        router_id: TOR.into(),
        routes4: vec![PRIO.into(), PLAIN.into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: TOR.into(),
            local_as: 65001,
            neighbor: NODE.into(),
            peer_as: 64512,
            ..Default::default()
        }],
        ..Default::default()
    }
    .render()
}

fn kernel_metric(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(26, &["node", "tor"]))?;
    let node = &ns[0];
    let b = setup(bgpd::Bgpd::start_yaml(lab, node, "km", "node-1", &datastore(512)))?;
    let _tor = setup(bird::Bird::start_conf(lab, &ns[1], "km-tor", &bird_conf()))?;
    wait_for("bgpd: tor Established", UP, || b.established("tor"))?;
    let diag = |e: String| {
        format!(
            "{e}\n--- bgpd show routes ---\n{}--- bgpd show fib ---\n{}--- ip route (table 254) ---\n{}",
            b.show_text(&["routes"]),
            b.show_text(&["fib"]),
            node.ip(&["route", "show", "table", "254"]).unwrap_or_else(|e| e.to_string())
        )
    };
    let at = |metric: u32| vec![format!("{PRIO} {metric}"), format!("{PLAIN} 20")];
    wait_for("kernel: the filtered route at metric 512, the other at 20", UP, || routes_are(node, &at(512)))
        .map_err(diag)?;

    // The filter now says 300.
    let monitor = setup(RouteMonitor::start(node))?;
    setup(b.reconfigure_yaml(&datastore(300)))?;
    let mut gap = None;
    let moved = wait_for("kernel: the filtered route moved to metric 300", UP, || {
        let have = routes(node)?;
        if !have.iter().any(|r| r.starts_with(&format!("{PRIO} "))) {
            gap.get_or_insert_with(|| format!("no route of bgpd's to {PRIO} at one poll: {have:?}"));
        }
        routes_are(node, &at(300))
    });
    let lines = setup(monitor.stop())?;
    moved.map_err(diag)?;
    if let Some(gap) = gap {
        return Err(gap);
    }
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("proto bgp")).collect();
    let (added, deleted) = (
        ours.iter().position(|l| l.contains(PRIO) && !l.starts_with("Deleted") && l.contains("metric 300")),
        ours.iter().position(|l| l.contains(PRIO) && l.starts_with("Deleted") && l.contains("metric 512")),
    );
    match (added, deleted) {
        (Some(a), Some(d)) if a < d && ours.len() == 2 => Ok(()),
        _ => Err(format!(
            "ip monitor route: want bgpd's {PRIO} added at metric 300, then deleted at 512, nothing else of bgpd's; saw {ours:?}"
        )),
    }
}

#[test]
fn kernel_metric_from_set_priority_moves_without_a_gap() {
    if !testgate::require_root_and_cmds("kernel_metric_from_set_priority_moves_without_a_gap", &["ip", "bird", "birdc"])
    {
        return;
    }
    run_parallel(vec![("kernel metric".into(), Box::new(kernel_metric))]);
}
