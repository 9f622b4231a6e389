//! `bgpd run --take-over bird`: bgpd replaces Calico's BIRD on a node whose
//! kernel still holds BIRD's routes (`persist`: protocol 12, metric 32):
//!
//! - the node's namespace holds BIRD's leftovers: the block's blackhole, a
//!   route to a prefix the ToR announces, and one to a prefix nobody
//!   announces any more;
//! - the ToR (a BIRD, AS 65001) is frozen (SIGSTOP) and bgpd starts with
//!   `--take-over bird` and no restart marker: it logs that it takes over 3
//!   routes of protocol bird, starts as restarting, and BIRD's routes stay
//!   while selection is deferred (`bgpd show fib`: 3 left, not retired);
//! - the ToR resumes, the session comes up, End-of-RIB ends the deferral:
//!   bgpd's routes (metric 20, protocol 186) go in and only then are BIRD's
//!   removed, each once bgpd's for its prefix is in: the two bgpd replaced (block, ToR prefix) at once, the one nobody
//!   announces kept through the hold (`--take-over-hold 6`: a peer not back
//!   yet would still be reached through it), then removed; `show fib` says
//!   1 left while replacing, then 0 left, removal done.

use std::collections::BTreeSet;
use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, holds_for, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const ONE: &str = "10.100.71.0/24";
const TWO: &str = "10.100.72.0/24";
const OLD: &str = "10.100.79.0/24";
const BLOCK: &str = "10.244.7.0/26";
const NODE: &str = "10.255.24.1";
const TOR: &str = "10.255.24.2";

/// The node's routes of `proto` in table 254, as `dst metric`.
fn routes(ns: &Ns, proto: &str) -> Result<BTreeSet<String>, String> {
    let out = ns.ip(&["-j", "route", "show", "table", "254", "proto", proto]).map_err(|e| e.to_string())?;
    let routes: Vec<Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).map_err(|e| format!("{e}: {out}"))?;
    Ok(routes
        .iter()
        .map(|r| format!("{} {}", r["dst"].as_str().unwrap_or_default(), r["metric"].as_u64().unwrap_or(0)))
        .collect())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn show_fib(b: &bgpd::Bgpd) -> Result<Value, String> {
    let text = b.show_text(&["fib", "--json"]);
    serde_json::from_str(text.trim()).map_err(|e| format!("bgpd show fib --json: {e}: {text}"))
}

fn take_over(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(24, &["node", "tor"]))?;
    let node = &ns[0];
    // What Calico's BIRD left behind.
    for args in [
        vec!["route", "add", "blackhole", BLOCK, "proto", "12", "metric", "32"],
        vec!["route", "add", ONE, "via", TOR, "proto", "12", "metric", "32"],
        vec!["route", "add", OLD, "via", TOR, "proto", "12", "metric", "32"],
    ] {
        setup(node.ip(&args))?;
    }
    let bird_routes = set(&[&format!("{BLOCK} 32"), &format!("{ONE} 32"), &format!("{OLD} 32")]);
    let conf = bird::BirdConfig {
        router_id: TOR.into(),
        routes4: vec![ONE.into(), TWO.into()],
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
    .render();
    let tor = setup(bird::Bird::start_conf(lab, &ns[1], "to1", &conf))?;
    setup(lab.signal(tor.proc, "STOP"))?;
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", &format!("{NODE}/24"), &[], None),
        doc::ipam_block(BLOCK, "node-1"),
        doc::peer("tor", &[], &format!("  peerIP: {TOR}\n  asNumber: 65001\n  keepaliveTime: 3s\n")),
    ];
    let started = bgpd::Bgpd::start_yaml_args(
        lab,
        node,
        "to",
        "node-1",
        &doc::stream(&docs),
        &["--take-over", "bird", "--take-over-hold", "6"],
    );
    let b = match started {
        Ok(b) => b,
        Err(e) => {
            let _ = lab.signal(tor.proc, "CONT");
            return Err(format!("starting bgpd: {e}"));
        }
    };
    let kept = holds_for("BIRD's routes kept during the deferral", Duration::from_secs(3), || {
        let have = routes(node, "12")?;
        if have == bird_routes {
            Ok(())
        } else {
            Err(format!("protocol 12 routes {have:?}, want {bird_routes:?}"))
        }
    });
    let fib = show_fib(&b);
    setup(lab.signal(tor.proc, "CONT"))?;
    kept?;
    let fib = fib?;
    let t = &fib["kernel"]["take_over"];
    if t["protocol"] != 12 || t["name"] != "bird" || t["left"] != 3 || t["phase"] != "waiting" {
        return Err(format!("show fib during the deferral: want bird (12), 3 left, waiting: {fib}"));
    }
    let log = b.log(lab);
    if !log.contains("taking over 3 routes of protocol bird (12)") || !log.contains("restarting=true") {
        return Err(format!("bgpd's log should say it takes over 3 routes of bird and restarts:\n{log}"));
    }

    wait_for("bgpd: tor Established", UP, || b.established("tor"))?;
    let ours = set(&[&format!("{BLOCK} 20"), &format!("{ONE} 20"), &format!("{TWO} 20")]);
    let old_only = set(&[&format!("{OLD} 32")]);
    wait_for("BIRD's replaced routes removed, bgpd's in", UP, || {
        // BIRD's first: bgpd's routes only ever come in here, so one of BIRD's gone in
        // this read must have bgpd's route for its prefix in the later one (read the
        // other way round, a route of bgpd's installed and BIRD's removed between the
        // two reads looked like a removal before bgpd's route was in).
        let left = routes(node, "12")?;
        let bgp = routes(node, "186")?;
        let prefix = |r: &String| r.split(' ').next().unwrap_or_default().to_string();
        let have: BTreeSet<String> = bgp.iter().map(prefix).collect();
        let gone: Vec<String> = bird_routes.difference(&left).map(prefix).collect();
        if gone.iter().any(|p| !have.contains(p)) {
            // Not a wait: each of BIRD's routes must go only once bgpd's for its prefix is in.
            return Ok(Err(format!("BIRD's routes removed ({left:?} left) before bgpd's were in: {bgp:?}")));
        }
        if left.is_empty() {
            return Ok(Err(format!("BIRD's route to {OLD}, which bgpd has no route for, went before the hold")));
        }
        if left == old_only && bgp == ours {
            Ok(Ok(()))
        } else {
            Err(format!("protocol 12: {left:?}; bgpd's: {bgp:?}, want {ours:?}"))
        }
    })??;
    let fib = show_fib(&b)?;
    let t = &fib["kernel"]["take_over"];
    if t["left"] != 1 || t["phase"] != "replacing" || t["hold_seconds"] != 6 {
        return Err(format!("show fib after the deferral: want 1 left, replacing, hold 6 s: {fib}"));
    }
    wait_for("BIRD's last route removed after the hold", Duration::from_secs(15), || {
        let left = routes(node, "12")?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("protocol 12: {left:?}"))
        }
    })?;
    wait_for("show fib: removal done", Duration::from_secs(5), || {
        let fib = show_fib(&b)?;
        if fib["kernel"]["take_over"]["phase"] == "done" {
            Ok(())
        } else {
            Err(format!("{fib}"))
        }
    })?;
    let fib = show_fib(&b)?;
    let t = &fib["kernel"]["take_over"];
    if t["left"] != 0 || t["phase"] != "done" {
        return Err(format!("show fib after the hold: want 0 left, done: {fib}"));
    }
    let text = b.show_text(&["fib"]);
    if !text.contains("taking over from protocol bird (12): 0 of its routes left, removal done") {
        return Err(format!("bgpd show fib: {text}"));
    }
    let log = b.log(lab);
    if !log.contains("replaced 2 routes of protocol bird (12)")
        || !log.contains("the 1 routes of protocol bird (12) bgpd had not replaced are removed")
    {
        return Err(format!("bgpd's log should say 2 of BIRD's routes were replaced, then 1 removed:\n{log}"));
    }
    Ok(())
}

#[test]
fn take_over_from_bird_keeps_forwarding_then_removes_its_routes() {
    if !testgate::require_root_and_cmds(
        "take_over_from_bird_keeps_forwarding_then_removes_its_routes",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    run_parallel(vec![("take over".into(), Box::new(take_over))]);
}
