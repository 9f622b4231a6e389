//! bgpd installs what it learns into the kernel (`fib` crate, table 254,
//! protocol 186 `bgp`), with a blackhole for its own block, and keeps the
//! routes through a crash:
//!
//! - two BIRDs as ToRs (AS 65001 and 65002) on one LAN with the node announce
//!   10.100.61.0/24 both (ECMP: one route with both next hops), 10.100.62.0/24
//!   (ToR 1 only) and 10.100.63.0/24 (ToR 2 only); the node's IPAM block
//!   10.244.6.0/26 is a blackhole. Checked with `ip -j route show table 254
//!   proto 186` in the node's namespace.
//! - ToR 1 stops announcing 10.100.62.0/24: the route leaves the kernel.
//! - bgpd is killed with SIGKILL: the routes stay. While it is down ToR 2
//!   stops announcing 10.100.63.0/24 and both BIRDs are frozen (SIGSTOP).
//! - bgpd starts again (same control socket: a restart): the previous run's
//!   routes stay, 10.100.63.0/24 included, while selection is deferred
//!   (`bgpd show fib`: not swept); the BIRDs resume, send End-of-RIB, and
//!   10.100.63.0/24 is swept while the others stay.

use std::collections::BTreeMap;
use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, holds_for, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const ECMP: &str = "10.100.61.0/24";
const ONE: &str = "10.100.62.0/24";
const STALE: &str = "10.100.63.0/24";
const BLOCK: &str = "10.244.6.0/26";
const TOR1: &str = "10.255.6.2";
const TOR2: &str = "10.255.6.3";

/// What the node's kernel holds of bgpd's routes: prefix → gateways (sorted),
/// or `["blackhole"]`.
fn kernel(ns: &Ns) -> Result<BTreeMap<String, Vec<String>>, String> {
    let out = ns.ip(&["-j", "route", "show", "table", "254", "proto", "186"]).map_err(|e| e.to_string())?;
    let routes: Vec<Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).map_err(|e| format!("{e}: {out}"))?;
    let mut m = BTreeMap::new();
    for r in routes {
        let dst = r["dst"].as_str().unwrap_or_default().to_string();
        let mut hops: Vec<String> = if r["type"] == "blackhole" {
            vec!["blackhole".into()]
        } else if let Some(nh) = r["nexthops"].as_array() {
            nh.iter().filter_map(|h| h["gateway"].as_str().map(String::from)).collect()
        } else {
            r["gateway"].as_str().map(String::from).into_iter().collect()
        };
        hops.sort();
        m.insert(dst, hops);
    }
    Ok(m)
}

/// `Ok` when the kernel holds exactly `want` of bgpd's routes.
fn kernel_is(ns: &Ns, want: &[(&str, &[&str])]) -> Result<(), String> {
    let have = kernel(ns)?;
    let want: BTreeMap<String, Vec<String>> = want
        .iter()
        .map(|(p, h)| {
            let mut h: Vec<String> = h.iter().map(|x| x.to_string()).collect();
            h.sort();
            (p.to_string(), h)
        })
        .collect();
    if have == want {
        Ok(())
    } else {
        Err(format!("kernel has {have:?}, want {want:?}"))
    }
}

fn bird_conf(tor: u8, routes: &[&str]) -> String {
    let me = format!("10.255.6.{}", tor + 1);
    bird::BirdConfig {
        router_id: me.clone(),
        routes4: routes.iter().map(|r| r.to_string()).collect(),
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: me,
            local_as: 65000 + u32::from(tor),
            neighbor: "10.255.6.1".into(),
            peer_as: 64512,
            ..Default::default()
        }],
        ..Default::default()
    }
    .render()
}

/// Rewrites a BIRD's configuration (as [`bird::Bird::start_conf`] wrote it)
/// and has BIRD reload it.
fn reconfigure(lab: &Lab, b: &bird::Bird, tag: &str, text: &str) -> Result<(), String> {
    std::fs::write(lab.dir().join(format!("{tag}-bird.conf")), text).map_err(|e| format!("writing {tag}: {e}"))?;
    let out = b.cmd(&["configure"])?;
    if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
        Ok(())
    } else {
        Err(format!("birdc configure ({tag}): {out}"))
    }
}

fn show_fib(b: &bgpd::Bgpd) -> Result<Value, String> {
    let text = b.show_text(&["fib", "--json"]);
    serde_json::from_str(text.trim()).map_err(|e| format!("bgpd show fib --json: {e}: {text}"))
}

fn kernel_routes(lab: &Lab) -> Result<(), String> {
    // One LAN: the node .1 (bgpd), ToR 1 .2, ToR 2 .3.
    let ns = setup(lab.lan(6, &["node", "tor1", "tor2"]))?;
    let node = &ns[0];
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.6.1/24", &[], None),
        doc::ipam_block(BLOCK, "node-1"),
        doc::peer("tor1", &[], &format!("  peerIP: {TOR1}\n  asNumber: 65001\n  keepaliveTime: 3s\n")),
        doc::peer("tor2", &[], &format!("  peerIP: {TOR2}\n  asNumber: 65002\n  keepaliveTime: 3s\n")),
    ];
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, node, "kr", "node-1", &doc::stream(&docs)))?;
    let tor1 = setup(bird::Bird::start_conf(lab, &ns[1], "kr1", &bird_conf(1, &[ECMP, ONE])))?;
    let tor2 = setup(bird::Bird::start_conf(lab, &ns[2], "kr2", &bird_conf(2, &[ECMP, STALE])))?;
    for p in ["tor1", "tor2"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    let diag = |b: &bgpd::Bgpd, e: String| {
        format!(
            "{e}\n--- bgpd show routes ---\n{}--- bgpd show fib ---\n{}--- ip route (table 254) ---\n{}",
            b.show_text(&["routes"]),
            b.show_text(&["fib"]),
            node.ip(&["route", "show", "table", "254"]).unwrap_or_else(|e| e.to_string())
        )
    };

    let full: &[(&str, &[&str])] = &[(ECMP, &[TOR1, TOR2]), (ONE, &[TOR1]), (STALE, &[TOR2]), (BLOCK, &["blackhole"])];
    wait_for("kernel: learned routes (one ECMP) and the block's blackhole", UP, || kernel_is(node, full))
        .map_err(|e| diag(&b, e))?;

    reconfigure(lab, &tor1, "kr1", &bird_conf(1, &[ECMP]))?;
    let after_withdraw: &[(&str, &[&str])] = &[(ECMP, &[TOR1, TOR2]), (STALE, &[TOR2]), (BLOCK, &["blackhole"])];
    wait_for(&format!("kernel: {ONE} gone after ToR 1 withdrew it"), UP, || kernel_is(node, after_withdraw))
        .map_err(|e| diag(&b, e))?;

    setup(b.kill(lab))?;
    kernel_is(node, after_withdraw).map_err(|e| format!("after bgpd was killed: {e}"))?;
    wait_for("BIRD (ToR 2) notices bgpd is gone", UP, || match tor2.bgp_state("bgpd")? {
        s if s == "Established" => Err("still Established".into()),
        _ => Ok(()),
    })?;
    reconfigure(lab, &tor2, "kr2", &bird_conf(2, &[ECMP]))?;
    // Frozen ToRs: bgpd stays in its selection deferral until they resume.
    setup(lab.signal(tor1.proc, "STOP"))?;
    setup(lab.signal(tor2.proc, "STOP"))?;
    let started = b.start_again(lab);
    if let Err(e) = started {
        let _ = lab.signal(tor1.proc, "CONT");
        let _ = lab.signal(tor2.proc, "CONT");
        return Err(format!("starting bgpd again: {e}"));
    }
    let kept = holds_for("kernel: the previous run's routes kept during the deferral", Duration::from_secs(3), || {
        kernel_is(node, after_withdraw)
    });
    let fib = show_fib(&b);
    setup(lab.signal(tor1.proc, "CONT"))?;
    setup(lab.signal(tor2.proc, "CONT"))?;
    kept.map_err(|e| diag(&b, e))?;
    let fib = fib?;
    if fib["kernel"]["swept"] != false || fib["kernel"]["table"] != 254 {
        return Err(format!("show fib during the deferral: want table 254, not swept: {fib}"));
    }
    if !b.log(lab).contains("restarting=true") {
        return Err("bgpd's log does not say it started as restarted".into());
    }

    for p in ["tor1", "tor2"] {
        wait_for(&format!("bgpd: {p} Established again"), UP, || b.established(p))?;
    }
    let refreshed: &[(&str, &[&str])] = &[(ECMP, &[TOR1, TOR2]), (BLOCK, &["blackhole"])];
    wait_for(&format!("kernel: {STALE} swept after the deferral, the rest kept"), UP, || kernel_is(node, refreshed))
        .map_err(|e| diag(&b, e))?;
    let fib = show_fib(&b)?;
    let k = &fib["kernel"];
    if k["swept"] != true
        || k["learned"] != 1
        || k["blackholes"] != 1
        || k["failing"] != Value::Object(Default::default())
    {
        return Err(format!("show fib after the deferral: want swept, 1 learned, 1 blackhole, none failing: {fib}"));
    }
    // Route lines (not the `nexthop` lines under a multipath route) carry the FIB's metric.
    let text = node.ip(&["route", "show", "table", "254", "proto", "186"]).map_err(|e| e.to_string())?;
    if text.lines().filter(|l| !l.starts_with(char::is_whitespace)).any(|l| !l.contains("metric 20")) {
        return Err(format!("bgpd's routes should carry metric 20: {text}"));
    }
    Ok(())
}

#[test]
fn kernel_routes_ecmp_blackhole_withdraw_and_restart() {
    if !testgate::require_root_and_cmds("kernel_routes_ecmp_blackhole_withdraw_and_restart", &["ip", "bird", "birdc"]) {
        return;
    }
    run_parallel(vec![("kernel routes".into(), Box::new(kernel_routes))]);
}
