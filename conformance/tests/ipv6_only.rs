//! An IPv6-only node (a Node with only `spec.bgp.ipv6Address`, so a router ID
//! hashed from its name) on an IPv6-only link, peering with BIRD and with FRR
//! over IPv6 and exchanging IPv4 routes with IPv6 next hops (RFC 8950) both
//! ways:
//!
//! - the session carries IPv4 and IPv6 unicast, and bgpd negotiated the
//!   extended next hop capability (`bgpd show peers`: `extended-next-hop
//!   ipv4/unicast`); the peer names bgpd by its hashed router ID;
//! - bgpd's IPv4 block reaches the peer with bgpd's IPv6 address as next hop
//!   (BIRD: `BGP.next_hop`; FRR: the path's next hop, of family IPv6);
//! - the peer's IPv4 route reaches bgpd with the peer's IPv6 address as next
//!   hop, and bgpd installs it in the node's kernel through that gateway
//!   (`ip -j route`: `via inet6 …`, RTA_VIA);
//! - the peer installs bgpd's IPv4 block in its own kernel through bgpd's
//!   IPv6 address too.
//!
//! Both cases run in parallel, each in namespaces of its own, with no IPv4
//! address on the link. Needs root, `ip`, BIRD 2 and FRR.

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, run_parallel, setup, wait_for, Case, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const BGPD_AS: u32 = 64512;
const NODE: &str = "v6-node-1";

/// One case: link `n` (fd00:255:n::/64), the peer in AS 65000 + n.
struct Link {
    n: u8,
}

impl Link {
    fn bgpd_addr(&self) -> String {
        format!("fd00:255:{}::1", self.n)
    }
    fn peer_addr(&self) -> String {
        format!("fd00:255:{}::2", self.n)
    }
    fn peer_as(&self) -> u32 {
        65000 + u32::from(self.n)
    }
    /// bgpd's IPv4 block (an IPv4 pool on IPv6-only nodes).
    fn block4(&self) -> String {
        format!("10.244.{}.0/26", self.n)
    }
    fn block6(&self) -> String {
        format!("fd00:244:{}::/122", self.n)
    }
    /// The peer's IPv4 route.
    fn route4(&self) -> String {
        format!("10.100.{}.0/24", self.n)
    }

    /// Two namespaces joined by a veth with IPv6 addresses only.
    fn namespaces(&self, lab: &Lab) -> Result<(Ns, Ns), String> {
        let node = setup(lab.netns("node"))?;
        let peer = setup(lab.netns("peer"))?;
        let (a, b) = (format!("{}/64", self.bgpd_addr()), format!("{}/64", self.peer_addr()));
        setup(lab.veth(&node, "veth0", &[&a], &peer, "veth0", &[&b]))?;
        Ok((node, peer))
    }

    /// bgpd's datastore: the IPv6-only Node, its blocks of both families,
    /// and the peer over IPv6.
    fn datastore(&self) -> String {
        let node = format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {NODE}}}\nspec: {{bgp: {{ipv6Address: \"{}/64\"}}}}\n",
            self.bgpd_addr()
        );
        let peer =
            format!("  peerIP: \"[{}]:179\"\n  asNumber: {}\n  keepaliveTime: 3s\n", self.peer_addr(), self.peer_as());
        doc::stream(&[
            doc::bgp_configuration(BGPD_AS),
            node,
            doc::ipam_block(&self.block4(), NODE),
            doc::ipam_block(&self.block6(), NODE),
            doc::peer("peer", &[], &peer),
        ])
    }
}

/// bgpd's side: Established with the extended next hop capability, the
/// peer's IPv4 route learned with the peer's IPv6 address as next hop and
/// installed in the kernel through it.
fn check_bgpd(b: &bgpd::Bgpd, node: &Ns, l: &Link) -> Result<(), String> {
    let p = wait_for("bgpd: peer Established", UP, || b.established("peer"))?;
    let caps = p["capabilities"].to_string();
    for want in ["multiprotocol ipv4/unicast", "multiprotocol ipv6/unicast", "extended-next-hop ipv4/unicast"] {
        if !caps.contains(want) {
            return Err(format!("bgpd's negotiated capabilities {caps} lack {want:?}"));
        }
    }
    let r = wait_for(&format!("bgpd: {} from the peer", l.route4()), UP, || b.has_route("peer", &l.route4()))?;
    // The global address first; FRR sends its link-local one too, shown after it.
    if r["next_hop"].as_str().and_then(|h| h.split_whitespace().next()) != Some(l.peer_addr().as_str()) {
        return Err(format!("bgpd has {} with next hop {}, want {}: {r}", l.route4(), r["next_hop"], l.peer_addr()));
    }
    wait_for(&format!("node kernel: {} via inet6 {}", l.route4(), l.peer_addr()), UP, || {
        kernel_via(node, &l.route4(), &l.peer_addr())
    })
    .map_err(|e| format!("{e}\n--- bgpd show fib ---\n{}", b.show_text(&["fib"])))?;
    Ok(())
}

/// `Ok` when the namespace's main table routes `prefix` through IPv6
/// gateway `gw` (`ip -j route show PREFIX`: `"via": {"family": "inet6", "host": GW}`).
fn kernel_via(ns: &Ns, prefix: &str, gw: &str) -> Result<(), String> {
    let out = ns.ip(&["-j", "route", "show", prefix]).map_err(|e| e.to_string())?;
    let routes: Vec<Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).map_err(|e| format!("{e}: {out}"))?;
    let through = |h: &Value| h["via"]["family"] == "inet6" && h["via"]["host"] == gw;
    let ok = routes.iter().any(|r| through(r) || r["nexthops"].as_array().is_some_and(|h| h.iter().any(through)));
    if ok {
        Ok(())
    } else {
        Err(format!("{prefix} is not via inet6 {gw}: {out}"))
    }
}

/// bgpd's router ID for `NODE`: the first four octets of
/// `printf %s v6-node-1 | sha256sum` (3104469a…), none of them in a reserved
/// range, so Calico's `CALICO_ROUTER_ID=hash` gives the same.
const ROUTER_ID: &str = "49.4.70.154";

/// `Ok` when the peer's view of bgpd names it by the hashed router ID.
fn check_router_id(seen: &str) -> Result<(), String> {
    if seen.contains(ROUTER_ID) {
        Ok(())
    } else {
        Err(format!("the peer does not name bgpd by {ROUTER_ID} (the hash of {NODE:?}): {seen}"))
    }
}

fn bird_conf(l: &Link) -> String {
    // The IPv4 channel of an IPv6 session with `extended next hop on`
    // (RFC 8950); the kernel protocol installs what BIRD learns.
    bird::BirdConfig {
        router_id: format!("10.255.{}.2", l.n),
        routes4: vec![l.route4()],
        kernel: vec![bird::BirdKernel {
            name: Some("k4".into()),
            af: bird::Af::Ipv4,
            import: Some("none".into()),
            export: "where source = RTS_BGP".into(),
            merge_paths: false,
        }],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: l.peer_addr(),
            local_as: l.peer_as(),
            neighbor: l.bgpd_addr(),
            peer_as: BGPD_AS,
            graceful_restart: false,
            route_refresh: false,
            channels: vec![
                bird::BirdChannel { extended_next_hop: true, ..bird::BirdChannel::all(bird::Af::Ipv4) },
                bird::BirdChannel::all(bird::Af::Ipv6),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
    .render()
}

fn run_bird(lab: &Lab, l: &Link) -> Result<(), String> {
    let (node, peer_ns) = l.namespaces(lab)?;
    let peer = setup(bird::Bird::start_conf(lab, &peer_ns, "b", &bird_conf(l)))?;
    let b = setup(bgpd::Bgpd::start_yaml(lab, &node, "b", NODE, &l.datastore()))?;
    wait_for("BIRD: bgpd Established", UP, || peer.established("bgpd"))?;
    let caps = peer.neighbor_capabilities("bgpd")?;
    if !caps.contains("Extended next hop") {
        return Err(format!("BIRD's neighbor capabilities lack the extended next hop:\n{caps}"));
    }
    check_router_id(&peer.protocol("bgpd")?)?;
    check_bgpd(&b, &node, l)?;
    let block = l.block4();
    wait_for(&format!("BIRD: {block} from bgpd"), UP, || peer.has_route("bgpd", &block))?;
    let all = peer.cmd(&["show", "route", &block, "all"])?;
    if !all.lines().any(|x| x.contains("BGP.next_hop") && x.contains(&l.bgpd_addr())) {
        return Err(format!("BIRD's {block} does not carry bgpd's IPv6 next hop {}:\n{all}", l.bgpd_addr()));
    }
    wait_for(&format!("BIRD's kernel: {block} via inet6"), UP, || kernel_via(&peer_ns, &block, &l.bgpd_addr()))?;
    wait_for(&format!("BIRD: {} from bgpd", l.block6()), UP, || peer.has_route("bgpd", &l.block6()))?;
    Ok(())
}

fn frr_conf(l: &Link) -> String {
    // `capability extended-nexthop` offers RFC 8950 on a global IPv6 session
    // (FRR turns it on by itself only for link-local sessions).
    frr::FrrConfig {
        asn: l.peer_as(),
        router_id: format!("10.255.{}.2", l.n),
        graceful_restart: false,
        routes4: vec![l.route4()],
        neighbors: vec![frr::FrrNeighbor {
            addr: l.bgpd_addr(),
            remote_as: BGPD_AS,
            update_source: l.peer_addr(),
            extended_nexthop: true,
            ..Default::default()
        }],
        ..Default::default()
    }
    .render()
}

fn run_frr(lab: &Lab, l: &Link) -> Result<(), String> {
    let (node, peer_ns) = l.namespaces(lab)?;
    let peer = setup(frr::Frr::start_conf(lab, &peer_ns, "f", &frr_conf(l)))?;
    let b = setup(bgpd::Bgpd::start_yaml(lab, &node, "f", NODE, &l.datastore()))?;
    let n = wait_for("FRR: bgpd Established", UP, || peer.established(&l.bgpd_addr()))?;
    let ext = &n["neighborCapabilities"]["extendedNexthop"];
    if !ext.as_str().is_some_and(|s| s.contains("advertisedAndReceived")) {
        return Err(format!(
            "FRR: extended next hop not advertised and received: {ext} / {}",
            n["neighborCapabilities"]
        ));
    }
    check_router_id(&n["remoteRouterId"].to_string())?;
    check_bgpd(&b, &node, l)?;
    let block = l.block4();
    let r = wait_for(&format!("FRR: {block} from bgpd"), UP, || peer.has_route(&block))?;
    let hops = r["paths"][0]["nexthops"].to_string();
    if !(hops.contains(&format!("\"ip\":\"{}\"", l.bgpd_addr())) && hops.contains("\"afi\":\"ipv6\"")) {
        return Err(format!("FRR's {block} does not carry bgpd's IPv6 next hop {}: {hops}", l.bgpd_addr()));
    }
    // FRR installs through the next hop's link-local address (or the global
    // one): either is an IPv6 gateway for an IPv4 route.
    wait_for(&format!("FRR's kernel: {block} via inet6"), UP, || {
        let out = peer_ns.ip(&["route", "show", &block]).map_err(|e| e.to_string())?;
        if out.contains("via inet6") {
            Ok(())
        } else {
            Err(format!("{block}: {out}"))
        }
    })?;
    wait_for(&format!("FRR: {} from bgpd", l.block6()), UP, || peer.has_route(&l.block6()))?;
    Ok(())
}

#[test]
fn ipv6_only_node_exchanges_ipv4_over_ipv6_next_hops_with_bird_and_frr() {
    if !testgate::require_root_and_cmds(
        "ipv6_only_node_exchanges_ipv4_over_ipv6_next_hops_with_bird_and_frr",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        ("BIRD, IPv6-only, RFC 8950".into(), Box::new(|lab: &Lab| run_bird(lab, &Link { n: 31 }))),
        ("FRR, IPv6-only, RFC 8950".into(), Box::new(|lab: &Lab| run_frr(lab, &Link { n: 32 }))),
    ];
    run_parallel(cases);
}
