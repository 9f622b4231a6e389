//! A Calico node end to end: bgpd reads a file datastore the way a cluster
//! fills it (Node, BGPConfiguration, IPPool, IPAMBlock, BGPPeer, Service,
//! EndpointSlice), peers with BIRD ToRs, and follows edits of the datastore
//! without resetting sessions.
//!
//! - `tor_end_to_end`: one node and one BIRD ToR. The ToR receives the node's
//!   block (/26), the service range 10.96.0.0/12 and the `externalTrafficPolicy:
//!   Local` cluster IP 10.96.0.10/32, all with bgpd's address as next hop; the
//!   node's kernel holds the ToR's prefix and a blackhole for its own block. The
//!   endpoint turns `ready: false`: the /32 is withdrawn at the ToR, the rest
//!   stays, and neither side's session was reset (bgpd's `established_since` and
//!   `flaps`, BIRD's protocol `since`).
//! - `tor_over_etcd`: the same node on the etcd datastore (etcd in the node's
//!   namespace, one key per object): an endpoint turning ready (a put) brings the
//!   /32, a new IPAMBlock key brings its /26, deleting the old block's key
//!   withdraws it and moves the node's blackhole; no session reset.
//! - `hot_reconfiguration`: one node and three BIRDs, of which the datastore
//!   names two. A third BGPPeer is added: it comes up, the first two are not
//!   touched. One is removed: it alone goes, and BIRD saw bgpd's Cease "Peer
//!   De-configured" (RFC 4486 subcode 3), and the prefix it announced leaves bgpd
//!   and the node's kernel. A new IPAMBlock for the node: its /26
//!   reaches the remaining peers, still without a reset.

use std::collections::BTreeMap;
use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, etcd, holds_for, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
/// Long enough for the file datastore's poll (500 ms) and the RIB to act.
const CHANGE: Duration = Duration::from_secs(10);

fn bgp_peer(name: &str, ip: &str, asn: u32) -> String {
    doc::peer(name, &[], &format!("  peerIP: {ip}\n  asNumber: {asn}\n  keepaliveTime: 3s\n"))
}

/// A BIRD ToR at `me` (AS `asn`) with one session `bgpd` to the node at `node`
/// (AS `node_as`), announcing `routes`.
fn tor_conf(me: &str, asn: u32, node: &str, node_as: u32, routes: &[&str]) -> bird::BirdConfig {
    bird::BirdConfig {
        router_id: me.into(),
        routes4: routes.iter().map(|r| r.to_string()).collect(),
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: me.into(),
            local_as: asn,
            neighbor: node.into(),
            peer_as: node_as,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What BIRD learned from protocol `proto`: prefix → next hop (`via` address).
fn bird_routes(b: &bird::Bird, proto: &str) -> Result<BTreeMap<String, String>, String> {
    let out = b.cmd(&["show", "route", "protocol", proto])?;
    let mut routes = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.split_whitespace().next().filter(|p| p.contains('/')).map(String::from);
            continue;
        }
        if let (Some(p), Some(via)) = (&current, line.trim().strip_prefix("via ")) {
            routes.insert(p.clone(), via.split_whitespace().next().unwrap_or_default().to_string());
        }
    }
    Ok(routes)
}

/// `Ok` when BIRD has learned each of `want` from `proto` with next hop `via`.
fn bird_has_all(b: &bird::Bird, proto: &str, want: &[&str], via: &str) -> Result<(), String> {
    let have = bird_routes(b, proto)?;
    for p in want {
        match have.get(*p) {
            Some(v) if v == via => {}
            Some(v) => return Err(format!("BIRD has {p} via {v}, want via {via}; all: {have:?}")),
            None => return Err(format!("BIRD has no {p}; all: {have:?}")),
        }
    }
    Ok(())
}

/// The `since` column of BIRD's `show protocols NAME` (when the protocol last
/// changed state).
fn bird_since(b: &bird::Bird, proto: &str) -> Result<String, String> {
    let out = b.cmd(&["show", "protocols", proto])?;
    out.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Name Proto Table State Since Info
            (f.first() == Some(&proto)).then(|| f.get(4).map(|s| s.to_string())).flatten()
        })
        .ok_or_else(|| format!("no line for {proto} in: {out}"))
}

/// A session's identity across a reconfiguration: bgpd's `established_since`
/// and `flaps`, and BIRD's `since` (see [`bird::same_since`]). The same before
/// and after means no reset.
#[derive(Debug)]
struct SessionMark {
    established_since: Value,
    flaps: Value,
    bird_since: String,
}

fn mark(b: &bgpd::Bgpd, peer: &str, tor: &bird::Bird) -> Result<SessionMark, String> {
    let p = b.established(peer)?;
    tor.established("bgpd")?;
    if p["established_since"].is_null() || p["flaps"].is_null() {
        return Err(format!("bgpd show peers: no established_since/flaps for {peer}: {p}"));
    }
    Ok(SessionMark {
        established_since: p["established_since"].clone(),
        flaps: p["flaps"].clone(),
        bird_since: bird_since(tor, "bgpd")?,
    })
}

fn unchanged(b: &bgpd::Bgpd, peer: &str, tor: &bird::Bird, before: &SessionMark) -> Result<(), String> {
    let now = mark(b, peer, tor)?;
    let bird_same = bird::same_since(&before.bird_since, &now.bird_since);
    if now.established_since == before.established_since && now.flaps == before.flaps && bird_same {
        Ok(())
    } else {
        Err(format!("session {peer} was reset: before {before:?}, now {now:?}"))
    }
}

/// bgpd's routes in the node's kernel (table 254, protocol 186): prefix →
/// gateways, or `["blackhole"]`.
fn kernel(ns: &Ns) -> Result<BTreeMap<String, Vec<String>>, String> {
    let out = ns.ip(&["-j", "route", "show", "table", "254", "proto", "186"]).map_err(|e| e.to_string())?;
    let routes: Vec<Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).map_err(|e| format!("{e}: {out}"))?;
    let mut m = BTreeMap::new();
    for r in routes {
        let hops: Vec<String> = if r["type"] == "blackhole" {
            vec!["blackhole".into()]
        } else {
            r["gateway"].as_str().map(String::from).into_iter().collect()
        };
        m.insert(r["dst"].as_str().unwrap_or_default().to_string(), hops);
    }
    Ok(m)
}

const NODE_AS: u32 = 64513;
const CLUSTER_AS: u32 = 64512;
const BLOCK: &str = "10.244.7.0/26";
const RANGE: &str = "10.96.0.0/12";
const CLUSTER_IP: &str = "10.96.0.10";
const TOR_PREFIX: &str = "10.200.7.0/24";

fn tor_datastore(ready: bool) -> String {
    doc::stream(&[
        doc::bgp_configuration_services(CLUSTER_AS, RANGE),
        doc::node_with_as("node-1", "10.255.7.1/24", NODE_AS),
        doc::ip_pool("pool-1", "10.244.0.0/16"),
        doc::ipam_block(BLOCK, "node-1"),
        bgp_peer("tor", "10.255.7.2", 65001),
        doc::service_local("web", CLUSTER_IP),
        doc::endpoint_slice("web", "10.244.7.5", "node-1", ready),
    ])
}

fn tor_end_to_end(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(7, &["node", "tor"]))?;
    let node = &ns[0];
    let b = setup(bgpd::Bgpd::start_yaml(lab, node, "e2e", "node-1", &tor_datastore(true)))?;
    let tor = setup(bird::Bird::start(
        lab,
        &ns[1],
        "tor",
        &tor_conf("10.255.7.2", 65001, "10.255.7.1", NODE_AS, &[TOR_PREFIX]),
    ))?;
    wait_for("bgpd: tor Established", UP, || b.established("tor"))?;
    let host = format!("{CLUSTER_IP}/32");
    let all = [BLOCK, RANGE, host.as_str()];
    let diag = |e: String| {
        format!(
            "{e}\n--- bgpd show originations ---\n{}--- bgpd show config ---\n{}",
            b.show_text(&["originations"]),
            b.show_text(&["config"])
        )
    };
    wait_for("ToR: block, service range and eTP=Local /32 from bgpd", UP, || {
        bird_has_all(&tor, "bgpd", &all, "10.255.7.1")
    })
    .map_err(diag)?;

    let want_kernel: BTreeMap<String, Vec<String>> =
        [(TOR_PREFIX.to_string(), vec!["10.255.7.2".to_string()]), (BLOCK.to_string(), vec!["blackhole".to_string()])]
            .into_iter()
            .collect();
    wait_for("node kernel: the ToR's prefix via the ToR, the own block a blackhole", UP, || {
        let have = kernel(node)?;
        if have == want_kernel {
            Ok(())
        } else {
            Err(format!("kernel has {have:?}, want {want_kernel:?}"))
        }
    })?;

    let before = mark(&b, "tor", &tor)?;
    setup(b.reconfigure_yaml(&tor_datastore(false)))?;
    wait_for(&format!("ToR: {host} withdrawn once the endpoint is not ready"), CHANGE, || {
        let have = bird_routes(&tor, "bgpd")?;
        if have.contains_key(&host) {
            Err(format!("still has {host}: {have:?}"))
        } else {
            Ok(())
        }
    })
    .map_err(diag)?;
    // The rest stays, and stays put for a while (no late reset either).
    holds_for("ToR keeps the block and the range, session not reset", Duration::from_secs(3), || {
        bird_has_all(&tor, "bgpd", &[BLOCK, RANGE], "10.255.7.1")?;
        unchanged(&b, "tor", &tor, &before)
    })?;
    let have = kernel(node)?;
    if have != want_kernel {
        return Err(format!("node kernel after the endpoint change: {have:?}, want {want_kernel:?}"));
    }
    Ok(())
}

/// The ToR case's checks on the etcd datastore: objects are etcd keys, and
/// each change is one put or delete, followed through bgpd's watch.
fn tor_over_etcd(lab: &Lab) -> Result<(), String> {
    const BLOCK2: &str = "10.244.10.64/26";
    let ns = setup(lab.lan(10, &["node", "tor"]))?;
    let node = &ns[0];
    let store = setup(etcd::Etcd::start(node, "e2e"))?;
    let slice = |ready| doc::endpoint_slice("web", "10.244.10.5", "node-1", ready);
    for (k, v) in [
        ("bgpconfigurations/default", doc::bgp_configuration_services(CLUSTER_AS, RANGE)),
        ("nodes/node-1", doc::node_with_as("node-1", "10.255.10.1/24", NODE_AS)),
        ("ippools/pool-1", doc::ip_pool("pool-1", "10.244.0.0/16")),
        ("ipamblocks/10-244-10-0-26", doc::ipam_block("10.244.10.0/26", "node-1")),
        ("bgppeers/tor", bgp_peer("tor", "10.255.10.2", 65001)),
        ("services/default/web", doc::service_local("web", CLUSTER_IP)),
        ("endpointslices/default/web-1", slice(false)),
    ] {
        store.put(k, &v)?;
    }
    let b = setup(bgpd::Bgpd::start_datastore(lab, node, "e2e-etcd", "node-1", &format!("etcd:{}", etcd::URL)))?;
    let tor = setup(bird::Bird::start(
        lab,
        &ns[1],
        "tor-etcd",
        &tor_conf("10.255.10.2", 65001, "10.255.10.1", NODE_AS, &["10.200.10.0/24"]),
    ))?;
    wait_for("bgpd: tor Established", UP, || b.established("tor"))?;
    wait_for("ToR: block and service range", UP, || {
        bird_has_all(&tor, "bgpd", &["10.244.10.0/26", RANGE], "10.255.10.1")
    })?;
    let host = format!("{CLUSTER_IP}/32");
    let has_host = |want: bool| {
        let have = bird_routes(&tor, "bgpd")?;
        if have.contains_key(&host) == want {
            Ok(())
        } else {
            Err(format!("want {host} {}; BIRD has {have:?}", if want { "present" } else { "absent" }))
        }
    };
    // Not ready at the start: no /32.
    holds_for(&format!("ToR: no {host} while the endpoint is not ready"), Duration::from_secs(2), || has_host(false))?;
    let before = mark(&b, "tor", &tor)?;

    store.put("endpointslices/default/web-1", &slice(true))?;
    wait_for(&format!("ToR: {host} once the endpoint is ready (etcd put)"), CHANGE, || has_host(true))?;
    store.put("ipamblocks/10-244-10-64-26", &doc::ipam_block(BLOCK2, "node-1"))?;
    wait_for(&format!("ToR: the new block {BLOCK2} (etcd put)"), CHANGE, || {
        bird_has_all(&tor, "bgpd", &["10.244.10.0/26", BLOCK2, RANGE, &host], "10.255.10.1")
    })?;
    store.delete("ipamblocks/10-244-10-0-26")?;
    wait_for("ToR: 10.244.10.0/26 withdrawn (etcd delete)", CHANGE, || {
        let have = bird_routes(&tor, "bgpd")?;
        if have.contains_key("10.244.10.0/26") {
            Err(format!("still there: {have:?}"))
        } else {
            Ok(())
        }
    })?;
    bird_has_all(&tor, "bgpd", &[BLOCK2, RANGE, &host], "10.255.10.1")?;
    let want_kernel: BTreeMap<String, Vec<String>> = [
        ("10.200.10.0/24".to_string(), vec!["10.255.10.2".to_string()]),
        (BLOCK2.to_string(), vec!["blackhole".to_string()]),
    ]
    .into_iter()
    .collect();
    wait_for("node kernel: the ToR's prefix, the blackhole moved to the new block", CHANGE, || {
        let have = kernel(node)?;
        if have == want_kernel {
            Ok(())
        } else {
            Err(format!("kernel has {have:?}, want {want_kernel:?}"))
        }
    })?;
    unchanged(&b, "tor", &tor, &before)
}

fn hot_datastore(peers: &[(&str, &str)], blocks: &[&str]) -> String {
    let mut docs = vec![
        doc::bgp_configuration_services(CLUSTER_AS, RANGE),
        doc::node("node-1", "10.255.8.1/24", &[], None),
        doc::ip_pool("pool-1", "10.244.0.0/16"),
    ];
    docs.extend(blocks.iter().map(|b| doc::ipam_block(b, "node-1")));
    docs.extend(peers.iter().map(|(name, ip)| bgp_peer(name, ip, 65001)));
    doc::stream(&docs)
}

fn hot_reconfiguration(lab: &Lab) -> Result<(), String> {
    const B1: &str = "10.244.8.0/26";
    const B2: &str = "10.244.8.64/26";
    const P1_PREFIX: &str = "10.200.8.0/24";
    let ns = setup(lab.lan(8, &["node", "p1", "p2", "p3"]))?;
    let (p1, p2, p3) = (("p1", "10.255.8.2"), ("p2", "10.255.8.3"), ("p3", "10.255.8.4"));
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "hot", "node-1", &hot_datastore(&[p1, p2], &[B1])))?;
    let mut birds = Vec::new();
    for (i, (name, ip)) in [p1, p2, p3].into_iter().enumerate() {
        // p1 announces a prefix: it must leave the node's kernel with p1.
        let routes: &[&str] = if i == 0 { &[P1_PREFIX] } else { &[] };
        let cfg = tor_conf(ip, 65001, "10.255.8.1", CLUSTER_AS, routes);
        birds.push(setup(bird::Bird::start(lab, &ns[i + 1], name, &cfg))?);
    }
    for (name, _) in [p1, p2] {
        wait_for(&format!("bgpd: {name} Established"), UP, || b.established(name))?;
    }
    for (i, tor) in birds.iter().take(2).enumerate() {
        wait_for(&format!("p{}: the block from bgpd", i + 1), UP, || bird_has_all(tor, "bgpd", &[B1], "10.255.8.1"))?;
    }
    let learned = |want: bool| {
        let have = kernel(&ns[0])?;
        match (have.get(P1_PREFIX), want) {
            (Some(h), true) if h == &["10.255.8.2".to_string()] => Ok(()),
            (None, false) => Ok(()),
            _ => Err(format!("node kernel: want {P1_PREFIX} via p1 {want}; have {have:?}")),
        }
    };
    wait_for(&format!("node kernel: {P1_PREFIX} via p1"), UP, || learned(true))?;
    let m1 = mark(&b, "p1", &birds[0])?;
    let m2 = mark(&b, "p2", &birds[1])?;

    // A third peer.
    setup(b.reconfigure_yaml(&hot_datastore(&[p1, p2, p3], &[B1])))?;
    wait_for("bgpd: p3 Established after it was added", UP, || b.established("p3"))?;
    wait_for("p3: the block from bgpd", UP, || bird_has_all(&birds[2], "bgpd", &[B1], "10.255.8.1"))?;
    unchanged(&b, "p1", &birds[0], &m1)?;
    unchanged(&b, "p2", &birds[1], &m2)?;
    let m3 = mark(&b, "p3", &birds[2])?;

    // Remove the first.
    setup(b.reconfigure_yaml(&hot_datastore(&[p2, p3], &[B1])))?;
    wait_for("bgpd: p1 gone from show peers", CHANGE, || match b.peer("p1") {
        Ok(p) => Err(format!("still there: {p}")),
        Err(_) => Ok(()),
    })?;
    wait_for("p1 (BIRD): session down with Cease / Peer de-configured", CHANGE, || {
        let out = birds[0].protocol("bgpd")?;
        if out.contains("Established") {
            return Err(format!("still Established: {out}"));
        }
        if out.to_lowercase().contains("peer de-configured") {
            Ok(())
        } else {
            Err(format!("no 'Peer de-configured' in: {out}"))
        }
    })?;
    wait_for(&format!("{P1_PREFIX} gone from bgpd and the node's kernel with p1"), CHANGE, || {
        let routes = b.routes_for(P1_PREFIX)?;
        if !routes.is_empty() {
            return Err(format!("bgpd still has {routes:?}"));
        }
        learned(false)
    })?;
    unchanged(&b, "p2", &birds[1], &m2)?;
    unchanged(&b, "p3", &birds[2], &m3)?;

    // A new block for the node.
    setup(b.reconfigure_yaml(&hot_datastore(&[p2, p3], &[B1, B2])))?;
    for (i, tor) in birds.iter().enumerate().skip(1) {
        wait_for(&format!("p{}: the new block {B2}", i + 1), CHANGE, || {
            bird_has_all(tor, "bgpd", &[B1, B2], "10.255.8.1")
        })?;
    }
    unchanged(&b, "p2", &birds[1], &m2)?;
    unchanged(&b, "p3", &birds[2], &m3)?;
    Ok(())
}

#[test]
fn cluster_e2e() {
    if !testgate::require_root_and_cmds("cluster_e2e", &["ip", "bird", "birdc", "etcd"]) {
        return;
    }
    run_parallel(vec![
        ("ToR end to end".into(), Box::new(tor_end_to_end)),
        ("ToR end to end over etcd".into(), Box::new(tor_over_etcd)),
        ("hot reconfiguration".into(), Box::new(hot_reconfiguration)),
    ]);
}
