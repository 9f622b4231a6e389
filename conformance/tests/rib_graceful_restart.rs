//! Graceful restart (RFC 4724) with bgpd's RIB:
//! - helper: FRR (`bgp graceful-restart`, `preserve-fw-state`) announces
//!   three prefixes; its bgpd is killed with SIGKILL. bgpd keeps the three
//!   routes marked stale while FRR is down; FRR comes back announcing only
//!   two, and after its End-of-RIB the third is gone and the two are fresh.
//! - restarting speaker: bgpd peers with BIRD (`graceful restart on`) and FRR
//!   and is killed with SIGKILL, then started again within the restart time.
//!   While it is down both keep its route (BIRD: "Neighbor graceful restart
//!   active", FRR: the path is stale); after it is back they hold it fresh,
//!   and bgpd's log says it started as restarted (selection deferred).

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, holds_for, run_parallel, setup, wait_for, Lab};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);

/// bgpd's paths of `prefix` learned from `peer`.
fn paths_from(b: &bgpd::Bgpd, peer: &str, prefix: &str) -> Result<Vec<Value>, String> {
    Ok(b.routes()?.into_iter().filter(|r| r["peer"] == peer && r["prefix"] == prefix).collect())
}

fn diag(b: &bgpd::Bgpd, e: String) -> String {
    format!("{e}\n--- bgpd show routes ---\n{}", b.show_text(&["routes"]))
}

fn frr_config(routes: &[&str]) -> String {
    let cfg = frr::FrrConfig {
        asn: 65010,
        router_id: "10.255.4.2".into(),
        routes4: routes.iter().map(|r| r.to_string()).collect(),
        routes6: vec![],
        neighbors: vec![frr::FrrNeighbor {
            addr: "10.255.4.1".into(),
            remote_as: 64512,
            update_source: "10.255.4.2".into(),
            ..Default::default()
        }],
        // Preserved forwarding state: bgpd keeps the stale routes until FRR's
        // End-of-RIB instead of flushing them when the session comes back.
        graceful_restart_preserve_fw_state: true,
        ..Default::default()
    };
    cfg.render()
}

fn helper(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(4, &["bgpd", "frr"]))?;
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.4.1/24", &[], None),
        doc::ipam_block("10.244.4.0/26", "node-1"),
        doc::peer("frr", &[], "  peerIP: 10.255.4.2\n  asNumber: 65010\n  keepaliveTime: 3s\n"),
    ];
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "grh", "node-1", &doc::stream(&docs)))?;
    let all = ["10.100.41.0/24", "10.100.42.0/24", "10.100.43.0/24"];
    let kept = &all[..2];
    let text = frr_config(&all);
    let mut frr = setup(frr::Frr::start_conf(lab, &ns[1], "grh", &text))?;
    wait_for("bgpd: frr Established", UP, || b.established("frr"))?;
    for p in all {
        wait_for(&format!("bgpd: {p} from FRR"), UP, || b.has_route("frr", p)).map_err(|e| diag(&b, e))?;
    }
    let gr = b.peer("frr")?["capabilities"].to_string();
    if !gr.contains("graceful-restart") {
        return Err(format!("no graceful restart negotiated with FRR: {gr}"));
    }

    setup(frr.kill_bgpd(lab))?;
    let all_stale = || -> Result<(), String> {
        for p in all {
            let paths = paths_from(&b, "frr", p)?;
            if paths.len() != 1 || paths[0]["stale"] != true {
                return Err(format!("{p}: want one stale path from frr, have {paths:?}"));
            }
        }
        Ok(())
    };
    wait_for("bgpd: FRR's routes stale after FRR's crash", Duration::from_secs(20), all_stale)
        .map_err(|e| diag(&b, e))?;
    holds_for("bgpd keeps FRR's stale routes while FRR is down", Duration::from_secs(4), all_stale)
        .map_err(|e| diag(&b, e))?;
    if b.peer("frr")?["state"] == "Established" {
        return Err("bgpd shows FRR Established while FRR's bgpd is dead".into());
    }

    setup(frr.restart_bgpd_conf(lab, &ns[1], "grh", &frr_config(kept)))?;
    wait_for("bgpd: frr Established again", UP, || b.established("frr"))?;
    wait_for("bgpd: FRR's End-of-RIB sweeps the route it no longer announces", UP, || {
        for p in kept {
            let paths = paths_from(&b, "frr", p)?;
            if paths.len() != 1 || paths[0]["stale"] != false {
                return Err(format!("{p}: want one fresh path from frr, have {paths:?}"));
            }
        }
        let gone = paths_from(&b, "frr", all[2])?;
        if gone.is_empty() {
            Ok(())
        } else {
            Err(format!("{} still there: {gone:?}", all[2]))
        }
    })
    .map_err(|e| diag(&b, e))?;
    Ok(())
}

fn restarting_speaker(lab: &Lab) -> Result<(), String> {
    // bgpd .1, BIRD .2 (AS 65020), FRR .3 (AS 65021).
    let ns = setup(lab.lan(5, &["bgpd", "bird", "frr"]))?;
    let block = "10.244.5.0/26";
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.5.1/24", &[], None),
        doc::ipam_block(block, "node-1"),
        doc::peer("bird", &[], "  peerIP: 10.255.5.2\n  asNumber: 65020\n  keepaliveTime: 3s\n"),
        doc::peer("frr", &[], "  peerIP: 10.255.5.3\n  asNumber: 65021\n  keepaliveTime: 3s\n"),
    ];
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "grs", "node-1", &doc::stream(&docs)))?;
    let bird = setup(bird::Bird::start(
        lab,
        &ns[1],
        "grs",
        &bird::BirdConfig {
            router_id: "10.255.5.2".into(),
            routes4: vec!["10.100.52.0/24".into()],
            routes6: vec![],
            sessions: vec![bird::BirdSession {
                name: "bgpd".into(),
                local: "10.255.5.2".into(),
                local_as: 65020,
                neighbor: "10.255.5.1".into(),
                peer_as: 64512,
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    let frr = setup(frr::Frr::start(
        lab,
        &ns[2],
        "grs",
        &frr::FrrConfig {
            asn: 65021,
            router_id: "10.255.5.3".into(),
            routes4: vec!["10.100.53.0/24".into()],
            routes6: vec![],
            neighbors: vec![frr::FrrNeighbor {
                addr: "10.255.5.1".into(),
                remote_as: 64512,
                update_source: "10.255.5.3".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    let frr_path = |want_stale: bool| -> Result<(), String> {
        let v = frr.has_route(block)?;
        let stale = v["paths"].as_array().into_iter().flatten().any(|p| p["stale"] == true);
        if stale == want_stale {
            Ok(())
        } else {
            Err(format!("FRR: {block} stale={stale}, want {want_stale}: {v}"))
        }
    };
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    wait_for("bgpd: frr Established", UP, || b.established("frr"))?;
    wait_for("BIRD: bgpd's block", UP, || bird.has_route("bgpd", block)).map_err(|e| diag(&b, e))?;
    wait_for("FRR: bgpd's block", UP, || frr_path(false)).map_err(|e| diag(&b, e))?;

    setup(b.kill(lab))?;
    let bird_helping = || -> Result<(), String> {
        bird.has_route("bgpd", block)?;
        let p = bird.protocol("bgpd")?;
        if p.contains("Neighbor graceful restart active") {
            Ok(())
        } else {
            Err(format!("BIRD is not helping bgpd's graceful restart: {p}"))
        }
    };
    wait_for("BIRD keeps bgpd's route in graceful restart", Duration::from_secs(20), bird_helping)?;
    wait_for("FRR keeps bgpd's route stale", Duration::from_secs(20), || frr_path(true))?;
    holds_for("BIRD and FRR keep bgpd's route while it is down", Duration::from_secs(3), || {
        bird_helping()?;
        frr_path(true)
    })?;

    setup(b.start_again(lab))?;
    wait_for("bgpd: bird Established after the restart", UP, || b.established("bird"))?;
    wait_for("bgpd: frr Established after the restart", UP, || b.established("frr"))?;
    wait_for("FRR: bgpd's route fresh after the restart", UP, || frr_path(false)).map_err(|e| diag(&b, e))?;
    wait_for("BIRD: bgpd's route after the restart, graceful restart done", UP, || {
        bird.has_route("bgpd", block)?;
        let p = bird.protocol("bgpd")?;
        if p.contains("Established") && !p.contains("Neighbor graceful restart active") {
            Ok(())
        } else {
            Err(format!("BIRD: {p}"))
        }
    })
    .map_err(|e| diag(&b, e))?;
    // bgpd knew it restarted: it set the R bit and deferred selection.
    let log = b.log(lab);
    let starts: Vec<&str> = log.lines().filter(|l| l.contains(" starting") && l.contains("restarting=")).collect();
    if starts.len() != 2 || !starts[0].contains("restarting=false") || !starts[1].contains("restarting=true") {
        return Err(format!("bgpd's start lines should say restarting=false then restarting=true: {starts:?}"));
    }
    // The peers' own routes came back too.
    wait_for("bgpd: BIRD's route after the restart", UP, || b.has_route("bird", "10.100.52.0/24"))?;
    wait_for("bgpd: FRR's route after the restart", UP, || b.has_route("frr", "10.100.53.0/24"))?;
    Ok(())
}

fn prerequisites_met(test: &str) -> bool {
    let ok = testgate::require_root_and_cmds(
        test,
        &["ip", "kill", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
    );
    if ok {
        bgpd::binary();
    }
    ok
}

#[test]
fn graceful_restart_helper() {
    if prerequisites_met("graceful_restart_helper") {
        run_parallel(vec![("bgpd helps FRR restart: stale routes, End-of-RIB sweep".into(), Box::new(helper))]);
    }
}

#[test]
fn graceful_restart_restarting_speaker() {
    if prerequisites_met("graceful_restart_restarting_speaker") {
        run_parallel(vec![("bgpd restarts: BIRD and FRR keep its routes".into(), Box::new(restarting_speaker))]);
    }
}
