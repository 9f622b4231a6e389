//! Calico BGPFilter policy with bgpd's RIB, against BIRD: the BGPPeer's
//! filter rejects one of bgpd's blocks for export, accepts another with an
//! `addCommunity` operation (BIRD sees the community), and rejects one of
//! BIRD's routes on import. The test then rewrites the datastore file with a
//! changed filter: within seconds BIRD sees the new export result and bgpd
//! the newly accepted import (re-export and ROUTE-REFRESH), while neither
//! bgpd's nor BIRD's session was reset (uptime keeps growing, no flap, BIRD's
//! protocol "since" time unchanged).

use std::time::{Duration, Instant};

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, run_parallel, setup, wait_for, Case, Lab};

const UP: Duration = Duration::from_secs(60);
/// How long a changed filter may take to show (datastore re-read within a
/// second, then re-export or ROUTE-REFRESH).
const CHANGE: Duration = Duration::from_secs(15);
const B61: &str = "10.244.61.0/26";
const B62: &str = "10.244.62.0/26";
const B63: &str = "10.244.63.0/26";
const IN1: &str = "10.100.60.0/24";
const IN2: &str = "10.100.61.0/24";

fn datastore(filter_spec: &str) -> String {
    doc::stream(&[
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.6.1/24", &[], None),
        doc::ipam_block(B61, "node-1"),
        doc::ipam_block(B62, "node-1"),
        doc::ipam_block(B63, "node-1"),
        doc::peer(
            "bird",
            &[],
            "  peerIP: 10.255.6.2\n  asNumber: 65030\n  keepaliveTime: 3s\n  filters: [bird-policy]\n",
        ),
        doc::filter("bird-policy", filter_spec),
    ])
}

const BEFORE: &str = "  exportV4:
    - action: Reject
      matchOperator: Equal
      cidr: 10.244.61.0/26
    - action: Accept
      matchOperator: Equal
      cidr: 10.244.62.0/26
      operations:
        - addCommunity: {value: \"65000:100\"}
  importV4:
    - action: Reject
      matchOperator: Equal
      cidr: 10.100.61.0/24
";

const AFTER: &str = "  exportV4:
    - action: Reject
      matchOperator: Equal
      cidr: 10.244.62.0/26
    - action: Accept
      matchOperator: Equal
      cidr: 10.244.61.0/26
      operations:
        - addCommunity: {value: \"65000:200\"}
";

/// BIRD's `BGP.community` of `prefix` from bgpd: `Ok(None)` without one,
/// `Err` when BIRD does not have the route.
fn bird_community(bird: &bird::Bird, prefix: &str) -> Result<Option<String>, String> {
    bird.has_route("bgpd", prefix)?;
    let out = bird.cmd(&["show", "route", "all", prefix, "protocol", "bgpd"])?;
    Ok(out.lines().find_map(|l| l.trim().strip_prefix("BGP.community:").map(|v| v.trim().to_string())))
}

fn bird_lacks(bird: &bird::Bird, prefix: &str) -> Result<(), String> {
    match bird.has_route("bgpd", prefix) {
        Ok(out) => Err(format!("BIRD has {prefix} from bgpd: {out}")),
        Err(_) => Ok(()),
    }
}

/// Whether bgpd uses a path of `prefix` from BIRD.
fn bgpd_uses(b: &bgpd::Bgpd, prefix: &str) -> Result<bool, String> {
    Ok(b.routes()?.iter().any(|r| r["prefix"] == prefix && r["peer"] == "bird" && r["best"] == true))
}

/// BIRD's `show protocols bgpd` line: name, proto, table, state, since, info.
fn bird_since(bird: &bird::Bird) -> Result<String, String> {
    let out = bird.cmd(&["show", "protocols", "bgpd"])?;
    let line = out.lines().find(|l| l.starts_with("bgpd ")).ok_or_else(|| format!("no bgpd protocol: {out}"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(3) != Some(&"up") {
        return Err(format!("BIRD's protocol is not up: {line}"));
    }
    Ok(f[4..].join(" "))
}

fn policy(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(6, &["bgpd", "bird"]))?;
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "pol", "node-1", &datastore(BEFORE)))?;
    let bird = setup(bird::Bird::start(
        lab,
        &ns[1],
        "pol",
        &bird::BirdConfig {
            router_id: "10.255.6.2".into(),
            routes4: vec![IN1.into(), IN2.into()],
            routes6: vec![],
            sessions: vec![bird::BirdSession {
                name: "bgpd".into(),
                local: "10.255.6.2".into(),
                local_as: 65030,
                neighbor: "10.255.6.1".into(),
                peer_as: 64512,
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    let diag = |e: String| {
        format!(
            "{e}\n--- bgpd show routes ---\n{}\n--- BIRD show route all protocol bgpd ---\n{}",
            b.show_text(&["routes"]),
            bird.cmd(&["show", "route", "all", "protocol", "bgpd"]).unwrap_or_else(|e| e)
        )
    };
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;

    // Before: 61 rejected, 62 with 65000:100, 63 by Calico's default; IN2 rejected.
    wait_for("BIRD: 62 with community 65000:100, 63 without", UP, || {
        match (bird_community(&bird, B62)?, bird_community(&bird, B63)?) {
            (Some(c), None) if c == "(65000,100)" => Ok(()),
            other => Err(format!("communities of 62 and 63: {other:?}")),
        }
    })
    .map_err(diag)?;
    bird_lacks(&bird, B61).map_err(diag)?;
    wait_for("bgpd: BIRD's 10.100.60.0/24", UP, || bgpd_uses(&b, IN1)?.then_some(()).ok_or("not used".to_string()))
        .map_err(diag)?;
    if bgpd_uses(&b, IN2)? {
        return Err(diag(format!("bgpd uses {IN2}, which the import filter rejects")));
    }

    let up_before = b.established("bird")?;
    let since_before = bird_since(&bird)?;
    let changed_at = Instant::now();
    setup(b.reconfigure_yaml(&datastore(AFTER)))?;

    wait_for("BIRD: 61 with 65000:200, 62 gone, 63 kept", CHANGE, || {
        bird_lacks(&bird, B62)?;
        match (bird_community(&bird, B61)?, bird_community(&bird, B63)?) {
            (Some(c), None) if c == "(65000,200)" => Ok(()),
            other => Err(format!("communities of 61 and 63: {other:?}")),
        }
    })
    .map_err(diag)?;
    wait_for("bgpd: 10.100.61.0/24 accepted after the change (ROUTE-REFRESH)", CHANGE, || {
        bgpd_uses(&b, IN2)?.then_some(()).ok_or("not used".to_string())
    })
    .map_err(diag)?;

    // No session reset on either side.
    let up_after = b.established("bird")?;
    let (u0, u1) = (up_before["uptime_secs"].as_u64().unwrap_or(0), up_after["uptime_secs"].as_u64().unwrap_or(0));
    let elapsed = changed_at.elapsed().as_secs();
    if u1 + 1 < u0 + elapsed || up_after["flaps"] != up_before["flaps"] {
        return Err(format!(
            "bgpd's session to BIRD was reset by the filter change: uptime {u0} s then {u1} s over {elapsed} s, flaps {} then {}",
            up_before["flaps"], up_after["flaps"]
        ));
    }
    let since_after = bird_since(&bird)?;
    if !bird::same_since(&since_before, &since_after) {
        return Err(format!("BIRD's session was reset: up since {since_before:?}, now since {since_after:?}"));
    }
    if up_after["flaps"] != 0 {
        return Err(format!("bgpd counts flaps on a session that never went down: {up_after}"));
    }
    Ok(())
}

#[test]
fn bgp_filter_policy() {
    if !testgate::require_root_and_cmds("bgp_filter_policy", &["ip", "bird", "birdc"]) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> =
        vec![("BGPFilter on BIRD's peer: reject, addCommunity, change without reset".into(), Box::new(policy))];
    run_parallel(cases);
}
