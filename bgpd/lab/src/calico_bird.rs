//! A Calico node that still runs Calico's BIRD: its configuration rendered
//! from the cluster's resources the way Calico's confd renders `bird.cfg` and
//! `bird6.cfg`, so that a lab can mix such nodes with bgpd nodes and migrate
//! them one by one (`bgpd lab migrate`, docs/migration.md).
//!
//! The rules are Calico's, written here from its documentation and from what
//! confd's templates produce, independently of bgpd's own planner
//! (`bgpd::daemon::plan`): the lab then checks bgpd's planning against them
//! on the wire. What confd does, and so what this renders:
//!
//! - one session per peer address, each over its own address family (Calico
//!   runs one BIRD per family); the explicit BGPPeers first (global ones, then
//!   those of this node in name order), then the reverse sessions of BGPPeers
//!   that select this node, then the node-to-node mesh;
//! - in the mesh, and to a global BGPPeer whose `peerIP` is a Calico node, the
//!   node whose address is lower as text waits (`passive on`);
//! - a route reflector (`routeReflectorClusterID`) takes no part in the mesh
//!   and treats every iBGP peer that is not a reflector of its cluster as a
//!   client;
//! - the template every session comes from: `multihop`, `gateway recursive`,
//!   `import all`, the export filter that passes the node's blocks and the IP
//!   pools (nothing beneath a block of the node), `add paths on`, graceful
//!   restart, connect delay 2 s, retry 5 s, error wait 5-30 s;
//! - the node's blocks as static blackholes, and a kernel protocol with
//!   `learn`, `persist` (BIRD's routes stay in the kernel when it stops),
//!   `scan time 2`, graceful restart and `merge paths on`.
//!
//! Calico's BIRD is BIRD 1.6 with two daemons; this is the same configuration
//! in BIRD 2's syntax, one daemon with a channel per session: on the wire the
//! same sessions. Routes in IPIP pools are installed plain (BIRD 2 has no
//! `krt_tunnel`), and device routes are not exported to the kernel. What the
//! lab cannot render (BGPFilters, TTL security, local workload peers,
//! service advertisement, prefixAdvertisements) is an error naming the
//! resource and field.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::bail;
use bgpd::datastore::{BgpPeer, ConfiguredNextHopMode, Model, PeerRemote, PeerScope, ReversePeering, SourceAddress};
use ipam::model::EncapMode;
use ipnet::IpNet;

/// One BGP session of a Calico BIRD node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdSession {
    /// The protocol's name: `Mesh_`, `Global_` or `Node_` and the address.
    pub name: String,
    /// The peer's address.
    pub neighbor: IpAddr,
    /// The peer's port.
    pub port: u16,
    /// The peer's AS.
    pub peer_as: u32,
    /// The AS this node presents.
    pub local_as: u32,
    /// The source address, when the session is bound to the node's address.
    pub source: Option<IpAddr>,
    /// This side waits for the other to connect.
    pub passive: bool,
    /// The peer is a route-reflector client of this node (its cluster ID).
    pub rr_client: Option<std::net::Ipv4Addr>,
    /// The graceful restart time offered, seconds.
    pub restart_time: u64,
    /// The keepalive interval, seconds (hold time 3×), when set.
    pub keepalive: Option<u64>,
    /// The TCP MD5 password.
    pub password: Option<String>,
    /// `next hop self` or `next hop keep`.
    pub next_hop: Option<&'static str>,
    /// `allow local as N`.
    pub allow_local_as: Option<u32>,
}

/// The sessions confd gives node `node`, in its order.
pub fn sessions(model: &Model, node: &str) -> anyhow::Result<Vec<BirdSession>> {
    let Some(me) = model.nodes.get(node) else { bail!("no Node {node:?} in the datastore") };
    let Some(bgp) = &me.bgp else { bail!("Node {node} has no spec.bgp: Calico runs no BIRD there") };
    let mine: Vec<IpAddr> = bgp
        .ipv4_address
        .map(|a| IpAddr::V4(a.addr()))
        .into_iter()
        .chain(bgp.ipv6_address.map(|a| IpAddr::V6(a.addr())))
        .collect();
    let my_addr = |like: &IpAddr| mine.iter().copied().find(|a| a.is_ipv4() == like.is_ipv4());
    if let Some(p) = model.local_workload_peers_for_node(node).first() {
        bail!("BGPPeer {}: spec.localWorkloadSelector is not rendered by the lab's Calico BIRD", p.peer.name);
    }
    let c = &model.bgp_configuration;
    let unrendered = [
        (!c.service_cluster_ips.is_empty(), "spec.serviceClusterIPs"),
        (!c.service_external_ips.is_empty(), "spec.serviceExternalIPs"),
        (!c.service_load_balancer_ips.is_empty(), "spec.serviceLoadBalancerIPs"),
        (!model.prefix_advertisements_for(node).is_empty(), "spec.prefixAdvertisements"),
    ];
    if let Some((_, field)) = unrendered.iter().find(|(set, _)| *set) {
        bail!("BGPConfiguration: {field} is not rendered by the lab's Calico BIRD (node {node})");
    }
    let my_as = model.node_as_number(node).get();
    let cluster_id = bgp.route_reflector_cluster_id;
    let node_addrs = |name: &str| -> Vec<IpAddr> {
        let Some(b) = model.nodes.get(name).and_then(|n| n.bgp.as_ref()) else { return Vec::new() };
        let v4 = b.ipv4_address.map(|a| IpAddr::V4(a.addr()));
        v4.into_iter().chain(b.ipv6_address.map(|a| IpAddr::V6(a.addr()))).collect()
    };
    let mut out: Vec<BirdSession> = Vec::new();
    let mut seen: BTreeSet<IpAddr> = mine.iter().copied().collect();
    let mut add = |s: BirdSession, out: &mut Vec<BirdSession>| {
        if seen.insert(s.neighbor) {
            out.push(s);
        }
    };
    let base = |prefix: &str, neighbor: IpAddr, port: u16, peer_as: u32| BirdSession {
        name: protocol_name(prefix, neighbor),
        neighbor,
        port,
        peer_as,
        local_as: my_as,
        source: my_addr(&neighbor),
        passive: false,
        rr_client: None,
        restart_time: 120,
        keepalive: None,
        password: None,
        next_hop: None,
        allow_local_as: None,
    };
    // A BGPPeer's settings, on every session it makes (both directions).
    let with_peer = |mut s: BirdSession, p: &BgpPeer| -> anyhow::Result<BirdSession> {
        unsupported(p)?;
        if let Some(a) = p.local_as_number {
            s.local_as = a.get();
        }
        if p.source_address == SourceAddress::None {
            s.source = None;
        }
        s.restart_time = p.max_restart_time.map_or(120, |d| d.as_secs());
        s.keepalive = p.keepalive_time.map(|d| d.as_secs().max(1));
        s.password = p.password.as_ref().map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned());
        s.next_hop = match p.next_hop_mode {
            ConfiguredNextHopMode::Auto => None,
            ConfiguredNextHopMode::Self_ => Some("next hop self"),
            ConfiguredNextHopMode::Keep => Some("next hop keep"),
        };
        s.allow_local_as = p.num_allowed_local_as_numbers.map(|n| n.get());
        Ok(s)
    };
    // 1. The BGPPeers of this node: global ones first, then the others in name order.
    let mut own = model.peers_for_node(node);
    own.sort_by_key(|p| (!matches!(p.scope, PeerScope::Global), p.name.clone()));
    for p in own {
        let global = matches!(p.scope, PeerScope::Global);
        let prefix = if global { "Global" } else { "Node" };
        match &p.remote {
            PeerRemote::Address { address, as_number } => {
                let calico =
                    model.node_with_address(address.ip).filter(|n| model.node_as_number(&n.name) == *as_number);
                let port = address.port.unwrap_or_else(|| calico.map_or(179, |n| model.listen_port_of(&n.name)));
                let mut s = with_peer(base(prefix, address.ip, port, as_number.get()), p)?;
                if global && calico.is_some() {
                    s.passive = my_addr(&address.ip).is_some_and(|a| a.to_string() < address.ip.to_string());
                }
                add(s, &mut out);
            }
            PeerRemote::Node { address } => {
                let Some(n) = model.node_with_address(address.ip) else { continue };
                if my_addr(&address.ip).is_none() {
                    continue;
                }
                let port = address.port.unwrap_or_else(|| model.listen_port_of(&n.name));
                let mut s = with_peer(base(prefix, address.ip, port, model.node_as_number(&n.name).get()), p)?;
                if global {
                    s.passive = my_addr(&address.ip).is_some_and(|a| a.to_string() < address.ip.to_string());
                }
                add(s, &mut out);
            }
            PeerRemote::Nodes(selector) => {
                for n in model.nodes_matching(selector).filter(|n| n.name != node) {
                    for a in node_addrs(&n.name).into_iter().filter(|a| my_addr(a).is_some()) {
                        let port = model.listen_port_of(&n.name);
                        add(with_peer(base(prefix, a, port, model.node_as_number(&n.name).get()), p)?, &mut out);
                    }
                }
            }
        }
    }
    // 2. The reverse sessions: BGPPeers of other nodes whose remote side is this node.
    let labels = &me.labels;
    for p in model.peers.values().filter(|p| p.reverse_peering == ReversePeering::Auto) {
        let families: Vec<bool> = match &p.remote {
            PeerRemote::Address { address, as_number } if *as_number == model.node_as_number(node) => {
                if mine.contains(&address.ip) {
                    vec![address.ip.is_ipv4()]
                } else {
                    continue;
                }
            }
            PeerRemote::Node { address } if mine.contains(&address.ip) => vec![address.ip.is_ipv4()],
            PeerRemote::Nodes(selector) if selector.matches(labels) => vec![true, false],
            _ => continue,
        };
        let local: Vec<String> = match &p.scope {
            PeerScope::Node(n) => vec![n.clone()],
            PeerScope::NodeSelector(sel) => model.nodes_matching(sel).map(|n| n.name.clone()).collect(),
            PeerScope::Global => model.nodes.keys().cloned().collect(),
        };
        for x in local.iter().filter(|x| x.as_str() != node) {
            for a in node_addrs(x).into_iter().filter(|a| families.contains(&a.is_ipv4()) && my_addr(a).is_some()) {
                let s = base("Node", a, model.listen_port_of(x), model.node_as_number(x).get());
                add(with_peer(s, p)?, &mut out);
            }
        }
    }
    // 3. The node-to-node mesh, between nodes that are no route reflectors.
    if c.node_to_node_mesh_enabled && cluster_id.is_none() {
        if c.node_mesh_password.is_some() || c.node_mesh_password_unresolved {
            bail!("BGPConfiguration default: spec.nodeMeshPassword is not rendered by the lab's Calico BIRD");
        }
        for (name, n) in &model.nodes {
            let reflector = n.bgp.as_ref().is_some_and(|b| b.route_reflector_cluster_id.is_some());
            if name == node || reflector {
                continue;
            }
            for a in node_addrs(name) {
                let Some(me) = my_addr(&a) else { continue };
                let mut s = base("Mesh", a, model.listen_port_of(name), model.node_as_number(name).get());
                s.passive = me.to_string() < a.to_string();
                s.restart_time = c.node_mesh_max_restart_time.as_secs();
                add(s, &mut out);
            }
        }
    }
    // Route reflection: every iBGP peer that is no reflector of this cluster is a client.
    if let Some(id) = cluster_id {
        for s in out.iter_mut().filter(|s| s.peer_as == s.local_as) {
            let same_cluster = model
                .node_with_address(s.neighbor)
                .and_then(|n| n.bgp.as_ref())
                .is_some_and(|b| b.route_reflector_cluster_id == Some(id));
            if !same_cluster {
                s.rr_client = Some(id);
            }
        }
    }
    Ok(out)
}

/// What a BGPPeer sets that the lab's Calico BIRD does not render.
fn unsupported(p: &BgpPeer) -> anyhow::Result<()> {
    let field = if !p.filters.is_empty() {
        "spec.filters"
    } else if p.ttl_security.is_some() {
        "spec.ttlSecurity"
    } else if p.reachable_by.is_some() {
        "spec.reachableBy"
    } else {
        return Ok(());
    };
    bail!("BGPPeer {}: {field} is not rendered by the lab's Calico BIRD", p.name)
}

/// confd's protocol name: the prefix and the address with `.` and `:` as `_`.
fn protocol_name(prefix: &str, addr: IpAddr) -> String {
    format!("{prefix}_{}", addr.to_string().replace(['.', ':'], "_"))
}

/// BIRD 2's configuration for node `node`, as confd renders Calico's BIRD.
pub fn render(model: &Model, node: &str) -> anyhow::Result<String> {
    let sessions = sessions(model, node)?;
    let bgp = model.nodes.get(node).and_then(|n| n.bgp.as_ref());
    let Some(router_id) = bgp.and_then(|b| b.ipv4_address).map(|a| a.addr()) else {
        bail!("Node {node}: the lab's Calico BIRD takes its router ID from spec.bgp.ipv4Address, which is not set")
    };
    let blocks: Vec<IpNet> = model.blocks_for_node(node).iter().map(|b| b.cidr).collect();
    let pools: Vec<IpNet> = model.ip_pools.values().filter(|p| !p.disable_bgp_export).map(|p| p.cidr).collect();
    let mut c = String::new();
    let _ = writeln!(c, "# Calico's BIRD for node {node}, as confd renders it (bgpd lab).");
    let _ = writeln!(c, "router id {router_id};\nlog stderr all;");
    // Aggregation: a block of this node is exported, nothing beneath it.
    c.push_str("function calico_aggr() {\n");
    for b in &blocks {
        let _ = writeln!(c, "  if ( net = {b} ) then accept;\n  if ( net ~ {b} ) then reject;");
    }
    c.push_str("}\n");
    c.push_str("filter calico_export_to_bgp_peers {\n  calico_aggr();\n");
    for p in &pools {
        let _ = writeln!(c, "  if ( net ~ {p} ) then accept;");
    }
    c.push_str("  reject;\n}\n");
    // BIRD 2 would install the interfaces' subnets again: they stay the
    // kernel's. The pools whose cluster routes `programClusterRoutes` leaves
    // to Felix (and VXLAN pools) are not BIRD's to install.
    c.push_str("filter calico_kernel_programming {\n  if source = RTS_DEVICE then reject;\n");
    let owned = model.bgp_configuration.program_cluster_routes;
    for p in model.ip_pools.values() {
        let vxlan = p.vxlan_mode != EncapMode::Never;
        let ipip = p.ipip_mode != EncapMode::Never;
        let bird = !vxlan && if ipip { owned.ipip } else { owned.no_encap };
        if !bird {
            let _ = writeln!(c, "  if ( net ~ {} ) then reject;", p.cidr);
        }
    }
    c.push_str("  accept;\n}\n");
    c.push_str("protocol device { scan time 2; }\n");
    c.push_str("protocol direct {\n  ipv4;\n  ipv6;\n  interface -\"cali*\", -\"kube-ipvs*\", -\"veth*\", \"*\";\n}\n");
    for af in ["ipv4", "ipv6"] {
        let _ = writeln!(
            c,
            "protocol kernel {{\n  {af} {{ import all; export filter calico_kernel_programming; }};\n  learn;\n  \
             persist;\n  scan time 2;\n  graceful restart on;\n  merge paths on;\n}}"
        );
        let mine: Vec<&IpNet> = blocks.iter().filter(|b| matches!(b, IpNet::V4(_)) == (af == "ipv4")).collect();
        if !mine.is_empty() {
            let _ = writeln!(c, "protocol static {{\n  {af};");
            for b in mine {
                let _ = writeln!(c, "  route {b} blackhole;");
            }
            c.push_str("}\n");
        }
    }
    c.push_str(
        "template bgp bgp_template {\n  multihop;\n  graceful restart on;\n  connect delay time 2;\n  \
         connect retry time 5;\n  error wait time 5, 30;\n}\n",
    );
    for s in &sessions {
        let af = if s.neighbor.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = writeln!(c, "protocol bgp {} from bgp_template {{", s.name);
        match s.source {
            Some(src) => {
                let _ = writeln!(c, "  local {src} as {};", s.local_as);
            }
            None => {
                let _ = writeln!(c, "  local as {};", s.local_as);
            }
        }
        let _ = writeln!(c, "  neighbor {} port {} as {};", s.neighbor, s.port, s.peer_as);
        if s.passive {
            c.push_str("  passive on;\n");
        }
        let _ = writeln!(c, "  graceful restart time {};", s.restart_time);
        if let Some(k) = s.keepalive {
            let _ = writeln!(c, "  keepalive time {k};\n  hold time {};", 3 * k);
        }
        if let Some(p) = &s.password {
            let _ = writeln!(c, "  password \"{}\";", p.replace('\\', "\\\\").replace('"', "\\\""));
        }
        if let Some(id) = s.rr_client {
            let _ = writeln!(c, "  rr client;\n  rr cluster id {id};");
        }
        if let Some(n) = s.allow_local_as {
            let _ = writeln!(c, "  allow local as {n};");
        }
        let nh = s.next_hop.map(|n| format!(" {n};")).unwrap_or_default();
        let _ = writeln!(
            c,
            "  {af} {{ import all; export filter calico_export_to_bgp_peers; add paths on; gateway recursive;{nh} }};\n}}"
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgpd::datastore::{parse_sources, SourceText};

    fn model(yaml: &str) -> Model {
        let (m, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml.into() }]).expect("parses");
        assert!(problems.is_empty(), "{problems:?}");
        m
    }

    const MESH: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 10.0.0.9/24, ipv6Address: "fd00::9/64"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-2}
spec: {bgp: {ipv4Address: 10.0.0.10/24, ipv6Address: "fd00::10/64"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-3}
spec: {bgp: {ipv4Address: 10.0.0.11/24}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.1, asNumber: 65000}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16}
"#;

    #[test]
    fn the_mesh_has_a_session_per_family_and_the_lower_text_address_waits() {
        let m = model(MESH);
        let s = sessions(&m, "node-1").unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Global_10_0_0_1", "Mesh_10_0_0_10", "Mesh_fd00__10", "Mesh_10_0_0_11"]);
        // As text, "10.0.0.9" > "10.0.0.10", "fd00::9" > "fd00::10" and
        // "10.0.0.9" > "10.0.0.11": node-1 connects to the others.
        assert!(!s[1].passive && !s[2].passive && !s[3].passive);
        let s3 = sessions(&m, "node-3").unwrap();
        let to_1 = s3.iter().find(|s| s.name == "Mesh_10_0_0_9").unwrap();
        assert!(to_1.passive, "node-3 (10.0.0.11) < 10.0.0.9 as text: it waits");
        assert!(!s3.iter().any(|s| s.neighbor.is_ipv6()), "node-3 has no IPv6 address: no IPv6 session");
        // The ToR is no Calico node: every node connects to it, from its own address.
        assert!(!s[0].passive);
        assert_eq!(s[0].source, Some("10.0.0.9".parse().unwrap()));
        assert_eq!((s[0].peer_as, s[0].local_as), (65000, 64512));
    }

    #[test]
    fn a_reflector_leaves_the_mesh_and_serves_its_ibgp_peers_as_clients() {
        let yaml = format!(
            "{MESH}---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: rr, labels: {{rr: \"y\"}}}}\n\
             spec: {{bgp: {{ipv4Address: 10.0.0.20/24, routeReflectorClusterID: 224.0.0.1}}}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: to-rr}}\n\
             spec: {{nodeSelector: \"!has(rr)\", peerSelector: \"has(rr)\"}}\n"
        );
        let m = model(&yaml);
        let rr = sessions(&m, "rr").unwrap();
        let names: Vec<&str> = rr.iter().map(|s| s.name.as_str()).collect();
        // The ToR (global), then the reverse sessions of `to-rr`; no mesh.
        assert_eq!(names, ["Global_10_0_0_1", "Node_10_0_0_9", "Node_10_0_0_10", "Node_10_0_0_11"]);
        assert!(rr[1..].iter().all(|s| s.rr_client == Some("224.0.0.1".parse().unwrap())));
        assert_eq!(rr[0].rr_client, None, "eBGP: no client");
        let n1 = sessions(&m, "node-1").unwrap();
        assert!(n1.iter().any(|s| s.name == "Node_10_0_0_20" && s.rr_client.is_none()));
        assert!(!n1.iter().any(|s| s.name == "Mesh_10_0_0_20"));
    }

    #[test]
    fn the_configuration_has_the_blackholes_filters_and_calico_template() {
        let m = model(MESH);
        let c = render(&m, "node-1").unwrap();
        assert!(c.contains("router id 10.0.0.9;"));
        assert!(c.contains("if ( net ~ 10.244.0.0/16 ) then accept;"));
        assert!(c.contains("persist;") && c.contains("learn;"));
        assert!(c.contains("protocol bgp Mesh_10_0_0_10 from bgp_template {\n  local 10.0.0.9 as 64512;"));
        assert!(c.contains("neighbor fd00::10 port 179 as 64512;"));
        assert!(c.contains("add paths on;"));
        // Calico's default programClusterRoutes (EnabledNoEncapOnly): the
        // unencapsulated pool's routes are BIRD's.
        assert!(!c.contains("if ( net ~ 10.244.0.0/16 ) then reject;"), "{c}");
        let felix =
            model(&MESH.replace("spec: {asNumber: 64512}", "spec: {asNumber: 64512, programClusterRoutes: Disabled}"));
        assert!(render(&felix, "node-1").unwrap().contains("  if ( net ~ 10.244.0.0/16 ) then reject;\n  accept;"));
    }

    #[test]
    fn what_the_lab_cannot_render_is_an_error_naming_the_field() {
        let yaml = format!(
            "{MESH}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: gtsm}}\n\
             spec: {{peerIP: 10.0.0.2, asNumber: 65000, ttlSecurity: 1}}\n"
        );
        let e = sessions(&model(&yaml), "node-1").unwrap_err().to_string();
        assert!(e.contains("BGPPeer gtsm: spec.ttlSecurity"), "{e}");
        let yaml = MESH
            .replace("spec: {asNumber: 64512}", "spec: {asNumber: 64512, serviceClusterIPs: [{cidr: 10.96.0.0/12}]}");
        let e = sessions(&model(&yaml), "node-1").unwrap_err().to_string();
        assert!(e.contains("BGPConfiguration: spec.serviceClusterIPs is not rendered"), "{e}");
    }
}
