//! ECMP and ADD-PATH send (RFC 7911) with bgpd's RIB: FRR (AS 65001) and
//! BIRD (AS 65002) announce the same prefix over eBGP with equally long AS
//! paths and the same ORIGIN; `bgpd show routes PREFIX --json` shows both
//! used (one best, both multipath). GoBGP (AS 65003) peers with bgpd with
//! ADD-PATH (`bgpd.io/add-path: send` on its BGPPeer, `add-paths receive`
//! in GoBGP) and a BGPFilter accepting the prefix for export: both paths
//! reach GoBGP's RIB.

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, gobgp, run_parallel, setup, wait_for, Case, Lab};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const PREFIX: &str = "10.100.30.0/24";

fn ecmp_and_add_path(lab: &Lab) -> Result<(), String> {
    // One LAN: bgpd .1, FRR .2, BIRD .3, GoBGP .4.
    let ns = setup(lab.lan(3, &["bgpd", "frr", "bird", "gobgp"]))?;
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.3.1/24", &[], None),
        doc::ipam_block("10.244.3.0/26", "node-1"),
        doc::peer("frr", &[], "  peerIP: 10.255.3.2\n  asNumber: 65001\n  keepaliveTime: 3s\n"),
        doc::peer("bird", &[], "  peerIP: 10.255.3.3\n  asNumber: 65002\n  keepaliveTime: 3s\n"),
        doc::peer(
            "gobgp",
            &[("bgpd.io/add-path", "send")],
            "  peerIP: 10.255.3.4\n  asNumber: 65003\n  keepaliveTime: 3s\n  filters: [to-gobgp]\n",
        ),
        doc::filter(
            "to-gobgp",
            "  exportV4:\n    - action: Accept\n      matchOperator: In\n      cidr: 10.100.0.0/16\n",
        ),
    ];
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "ecmp", "node-1", &doc::stream(&docs)))?;

    let _frr = setup(frr::Frr::start(
        lab,
        &ns[1],
        "ecmp",
        &frr::FrrConfig {
            asn: 65001,
            router_id: "10.255.3.2".into(),
            routes4: vec![PREFIX.into()],
            routes6: vec![],
            neighbors: vec![frr::FrrNeighbor {
                addr: "10.255.3.1".into(),
                remote_as: 64512,
                update_source: "10.255.3.2".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    ))?;
    // BIRD gives routes from static protocols ORIGIN incomplete; FRR's
    // `network` gives IGP. Make them equal so only the neighbour AS differs.
    let bird_cfg = bird::BirdConfig {
        router_id: "10.255.3.3".into(),
        routes4: vec![PREFIX.into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: "10.255.3.3".into(),
            local_as: 65002,
            neighbor: "10.255.3.1".into(),
            peer_as: 64512,
            channels: [bird::Af::Ipv4, bird::Af::Ipv6]
                .map(|af| bird::BirdChannel {
                    export: "filter { bgp_origin = ORIGIN_IGP; accept; }".into(),
                    ..bird::BirdChannel::all(af)
                })
                .into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let _bird = setup(bird::Bird::start(lab, &ns[2], "ecmp", &bird_cfg))?;
    let g_cfg = gobgp::Config {
        asn: 65003,
        router_id: "10.255.3.4".into(),
        listen: vec!["10.255.3.4".into()],
        neighbors: vec![gobgp::Neighbor {
            addr: "10.255.3.1".into(),
            peer_as: 64512,
            local_address: "10.255.3.4".into(),
            ..Default::default()
        }],
    };
    let g = setup(gobgp::Gobgp::start_conf(lab, &ns[3], "ecmp", &g_cfg.render_add_paths_receive()))?;

    for p in ["frr", "bird", "gobgp"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    // GoBGP shows what both sides advertised: add-path must be negotiated.
    let neighbor = g.neighbor("10.255.3.1")?;
    let add_path = neighbor.lines().find(|l| l.to_lowercase().contains("add-path")).unwrap_or_default().to_string();
    if !add_path.contains("advertised and received") {
        return Err(format!("GoBGP: ADD-PATH not advertised and received: {neighbor}"));
    }
    let diag = |e: String| format!("{e}\n--- bgpd show routes {PREFIX} ---\n{}", b.show_text(&["routes", PREFIX]));
    let routes = wait_for(&format!("bgpd: {PREFIX} from FRR and BIRD, both multipath"), UP, || {
        let rs: Vec<Value> = b.routes_for(PREFIX)?.into_iter().filter(|r| r["prefix"] == PREFIX).collect();
        let used: Vec<&Value> = rs.iter().filter(|r| r["multipath"] == true).collect();
        let best = rs.iter().filter(|r| r["best"] == true).count();
        let peers: Vec<&Value> = used.iter().map(|r| &r["peer"]).collect();
        if used.len() == 2 && best == 1 && peers.contains(&&Value::from("frr")) && peers.contains(&&Value::from("bird"))
        {
            Ok(rs)
        } else {
            Err(format!("{} paths, {} multipath, {best} best: {rs:?}", rs.len(), used.len()))
        }
    })
    .map_err(diag)?;
    if let Some(lost) = routes.iter().find(|r| !r["lost"].is_null()) {
        return Err(diag(format!("a used path says why it lost: {lost}")));
    }

    wait_for(&format!("GoBGP: two paths of {PREFIX} (ADD-PATH)"), UP, || {
        let paths = g.paths(PREFIX)?;
        let as_paths: Vec<String> = paths
            .iter()
            .map(|p| {
                p["attrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == 2)
                    .map(|a| a["as_paths"].to_string())
                    .unwrap_or_default()
            })
            .collect();
        let via = |asn: &str| as_paths.iter().any(|a| a.contains("64512") && a.contains(asn));
        if paths.len() == 2 && via("65001") && via("65002") {
            Ok(())
        } else {
            Err(format!("{} paths with AS paths {as_paths:?}: {paths:?}", paths.len()))
        }
    })
    .map_err(|e| {
        diag(format!(
            "{e}\n--- gobgp neighbor adj-in ---\n{}",
            g.cli(&["neighbor", "10.255.3.1", "adj-in"]).unwrap_or_else(|e| e)
        ))
    })?;
    Ok(())
}

#[test]
fn ecmp_and_add_path_send() {
    if !testgate::require_root_and_cmds(
        "ecmp_and_add_path_send",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd", "gobgp", "unshare"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> =
        vec![("ECMP over FRR and BIRD, both paths to GoBGP with ADD-PATH".into(), Box::new(ecmp_and_add_path))];
    run_parallel(cases);
}
