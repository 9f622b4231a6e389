//! Route reflection (RFC 4456) with bgpd's RIB:
//! - bgpd as the route reflector (its Node has `routeReflectorClusterID`) of
//!   three iBGP clients chosen by `peerSelector`: BIRD, FRR and GoBGP, each
//!   announcing its own IPAM block. Every client receives the other two with
//!   ORIGINATOR_ID = the originator's router ID and CLUSTER_LIST = [cluster
//!   ID], as each daemon's own route display shows them.
//! - bgpd as a client of an FRR route reflector (`neighbor … route-reflector-client`)
//!   with another FRR client: bgpd learns the other client's prefix, and its
//!   own block reaches the other client through the reflector.

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, gobgp, run_parallel, setup, wait_for, Case, Lab};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const AS: u32 = 64512;
const CLUSTER: &str = "10.0.0.99";

/// Adds what bgpd and a client show about `prefix` to a failure.
fn with_routes(b: &bgpd::Bgpd, e: String, peer_view: &str) -> String {
    format!("{e}\n--- bgpd show routes ---\n{}\n--- peer's view ---\n{peer_view}", b.show_text(&["routes"]))
}

/// Checks BIRD's `show route all PREFIX`: the route is there with the
/// expected BGP.originator_id and BGP.cluster_list.
fn bird_reflected(bird: &bird::Bird, prefix: &str, originator: &str) -> Result<(), String> {
    let out = bird.cmd(&["show", "route", "all", prefix])?;
    let attr = |name: &str| {
        out.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
    };
    match (attr("BGP.originator_id"), attr("BGP.cluster_list")) {
        (Some(o), Some(c)) if o == originator && c == CLUSTER => Ok(()),
        (o, c) => Err(format!(
            "BIRD: {prefix} originator_id {o:?} cluster_list {c:?}, want {originator} and {CLUSTER}: {}",
            out.trim()
        )),
    }
}

/// Checks FRR's `show bgp ipv4 unicast PREFIX json`: originatorId and clusterList.
fn frr_reflected(frr: &frr::Frr, prefix: &str, originator: &str) -> Result<(), String> {
    let v = frr.has_route(prefix)?;
    let paths = v["paths"].as_array().cloned().unwrap_or_default();
    let ok = paths.iter().any(|p| {
        p["originatorId"] == originator
            && p["clusterList"]["list"].as_array().is_some_and(|l| l.len() == 1 && l[0] == CLUSTER)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("FRR: {prefix} without originatorId {originator} and clusterList [{CLUSTER}]: {v}"))
    }
}

/// Checks `gobgp global rib -j`: a path with ORIGINATOR_ID (type 9) and
/// CLUSTER_LIST (type 10) as expected.
fn gobgp_reflected(g: &gobgp::Gobgp, prefix: &str, originator: &str) -> Result<(), String> {
    let paths = g.paths(prefix)?;
    let attr = |p: &Value, t: u64| -> Value {
        p["attrs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == t)
            .map(|a| a["value"].clone())
            .unwrap_or_default()
    };
    let ok = paths
        .iter()
        .any(|p| attr(p, 9) == originator && attr(p, 10).as_array().is_some_and(|l| l.len() == 1 && l[0] == CLUSTER));
    if ok {
        Ok(())
    } else {
        Err(format!("GoBGP: {prefix} without ORIGINATOR_ID {originator} and CLUSTER_LIST [{CLUSTER}]: {paths:?}"))
    }
}

fn bgpd_is_reflector(lab: &Lab) -> Result<(), String> {
    // One LAN: bgpd .1, BIRD .2, FRR .3, GoBGP .4.
    let ns = setup(lab.lan(1, &["bgpd", "bird", "frr", "gobgp"]))?;
    let clients = [
        ("bird", "10.255.1.2", "10.244.2.0/26"),
        ("frr", "10.255.1.3", "10.244.3.0/26"),
        ("gobgp", "10.255.1.4", "10.244.4.0/26"),
    ];
    let mut docs = vec![doc::bgp_configuration(AS), doc::node("node-1", "10.255.1.1/24", &[], Some(CLUSTER))];
    for (name, addr, block) in clients {
        docs.push(doc::node(name, &format!("{addr}/24"), &[("rr-client", "yes")], None));
        docs.push(doc::ipam_block(block, name));
    }
    docs.push(doc::ipam_block("10.244.1.0/26", "node-1"));
    docs.push(doc::peer("clients", &[], "  node: node-1\n  peerSelector: has(rr-client)\n  keepaliveTime: 3s\n"));
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "rr", "node-1", &doc::stream(&docs)))?;

    let bird = setup(bird::Bird::start(
        lab,
        &ns[1],
        "rr",
        &bird::BirdConfig {
            router_id: "10.255.1.2".into(),
            routes4: vec!["10.244.2.0/26".into()],
            routes6: vec![],
            sessions: vec![bird::BirdSession {
                name: "bgpd".into(),
                local: "10.255.1.2".into(),
                local_as: AS,
                neighbor: "10.255.1.1".into(),
                peer_as: AS,
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    let frr = setup(frr::Frr::start(
        lab,
        &ns[2],
        "rr",
        &frr::FrrConfig {
            asn: AS,
            router_id: "10.255.1.3".into(),
            routes4: vec!["10.244.3.0/26".into()],
            routes6: vec![],
            neighbors: vec![frr::FrrNeighbor {
                addr: "10.255.1.1".into(),
                remote_as: AS,
                update_source: "10.255.1.3".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    let gobgp = setup(gobgp::Gobgp::start(
        lab,
        &ns[3],
        "rr",
        &gobgp::Config {
            asn: AS,
            router_id: "10.255.1.4".into(),
            listen: vec!["10.255.1.4".into()],
            neighbors: vec![gobgp::Neighbor {
                addr: "10.255.1.1".into(),
                peer_as: AS,
                local_address: "10.255.1.4".into(),
                ..Default::default()
            }],
        },
    ))?;
    gobgp.add_route("10.244.4.0/26", "10.255.1.4")?;

    for (name, _, block) in clients {
        let peer = format!("clients/{name}");
        wait_for(&format!("bgpd: {peer} Established"), UP, || b.established(&peer))?;
        wait_for(&format!("bgpd: {block} from {peer}"), UP, || b.has_route(&peer, block))
            .map_err(|e| with_routes(&b, e, ""))?;
    }
    // Each client gets the other two, reflected.
    for (name, rid, block) in clients {
        if name != "bird" {
            wait_for(&format!("BIRD: {block} reflected"), UP, || bird_reflected(&bird, block, rid))
                .map_err(|e| with_routes(&b, e, &bird.cmd(&["show", "route", "all"]).unwrap_or_else(|e| e)))?;
        }
        if name != "frr" {
            wait_for(&format!("FRR: {block} reflected"), UP, || frr_reflected(&frr, block, rid))
                .map_err(|e| with_routes(&b, e, &frr.vtysh(&["show bgp ipv4 unicast"]).unwrap_or_else(|e| e)))?;
        }
        if name != "gobgp" {
            wait_for(&format!("GoBGP: {block} reflected"), UP, || gobgp_reflected(&gobgp, block, rid))
                .map_err(|e| with_routes(&b, e, &gobgp.cli(&["global", "rib"]).unwrap_or_else(|e| e)))?;
        }
    }
    // bgpd's own block reaches the clients as an ordinary iBGP route (not reflected).
    wait_for("BIRD: bgpd's own block", UP, || bird.has_route("bgpd", "10.244.1.0/26"))?;
    let own = bird.cmd(&["show", "route", "all", "10.244.1.0/26"])?;
    if own.contains("BGP.originator_id") || own.contains("BGP.cluster_list") {
        return Err(format!("bgpd's own route carries reflection attributes: {own}"));
    }
    Ok(())
}

fn bgpd_is_client(lab: &Lab) -> Result<(), String> {
    // One LAN: the FRR reflector .1, bgpd .2, the other FRR client .3.
    let ns = setup(lab.lan(2, &["rr", "bgpd", "client"]))?;
    let docs = vec![
        doc::bgp_configuration(AS),
        doc::node("node-1", "10.255.2.2/24", &[], None),
        doc::ipam_block("10.244.20.0/26", "node-1"),
        doc::peer("rr", &[], "  peerIP: 10.255.2.1\n  asNumber: 64512\n  keepaliveTime: 3s\n"),
    ];
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[1], "rrc", "node-1", &doc::stream(&docs)))?;
    let neighbor = |addr: &str, src: &str| frr::FrrNeighbor {
        addr: addr.into(),
        remote_as: AS,
        update_source: src.into(),
        ..Default::default()
    };
    let rr = setup(frr::Frr::start(
        lab,
        &ns[0],
        "rrc-rr",
        &frr::FrrConfig {
            asn: AS,
            router_id: "10.255.2.1".into(),
            routes4: vec![],
            routes6: vec![],
            neighbors: vec![neighbor("10.255.2.2", "10.255.2.1"), neighbor("10.255.2.3", "10.255.2.1")],
            ..Default::default()
        },
    ))?;
    rr.vtysh(&[
        "configure terminal",
        "router bgp 64512",
        "bgp cluster-id 10.0.0.77",
        "address-family ipv4 unicast",
        "neighbor 10.255.2.2 route-reflector-client",
        "neighbor 10.255.2.3 route-reflector-client",
    ])?;
    let client = setup(frr::Frr::start(
        lab,
        &ns[2],
        "rrc-client",
        &frr::FrrConfig {
            asn: AS,
            router_id: "10.255.2.3".into(),
            routes4: vec!["10.100.23.0/24".into()],
            routes6: vec![],
            neighbors: vec![neighbor("10.255.2.1", "10.255.2.3")],
            ..Default::default()
        },
    ))?;
    wait_for("bgpd: rr Established", UP, || b.established("rr"))?;
    wait_for("FRR client Established with the reflector", UP, || client.established("10.255.2.1"))?;
    wait_for("bgpd: 10.100.23.0/24 reflected by FRR", UP, || b.has_route("rr", "10.100.23.0/24"))
        .map_err(|e| with_routes(&b, e, &rr.vtysh(&["show bgp ipv4 unicast"]).unwrap_or_else(|e| e)))?;
    let r = b.has_route("rr", "10.100.23.0/24")?;
    if r["next_hop"] != "10.255.2.3" || r["best"] != true {
        return Err(format!("bgpd's reflected route should be best with next hop 10.255.2.3 (the originator): {r}"));
    }
    // And the other way: bgpd's block reaches the other client via the reflector.
    wait_for("FRR client: bgpd's block reflected", UP, || {
        let v = client.has_route("10.244.20.0/26")?;
        let p = &v["paths"][0];
        if p["originatorId"] == "10.255.2.2" {
            Ok(())
        } else {
            Err(format!("no originatorId 10.255.2.2: {v}"))
        }
    })
    .map_err(|e| with_routes(&b, e, &client.vtysh(&["show bgp ipv4 unicast"]).unwrap_or_else(|e| e)))?;
    Ok(())
}

#[test]
fn route_reflection() {
    if !testgate::require_root_and_cmds(
        "route_reflection",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd", "gobgp", "unshare"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        ("bgpd reflects between BIRD, FRR and GoBGP clients".into(), Box::new(bgpd_is_reflector)),
        ("bgpd as a client of an FRR reflector".into(), Box::new(bgpd_is_client)),
    ];
    run_parallel(cases);
}
