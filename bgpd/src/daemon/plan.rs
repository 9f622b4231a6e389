//! From the datastore's model to what this node runs: its own spec and its
//! peers (BGPPeers that apply to it, and the node-to-node mesh).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd_proto::rib::core::NextHopMode;
use bgpd_proto::rib::policy::{ExportRange, RangeSource};
use ipnet::IpNet;

use bgpd_proto::Family;

use crate::datastore::{
    BgpPeer, BindMode, ConfiguredNextHopMode, LocalWorkloadPeer, Model, Node, PeerRemote, PeerScope, ReversePeering,
    SourceAddress,
};

use super::spec::{NodeSpec, Password, PeerSpec, RoutingSpec};

/// Why this node cannot run with the model.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No Node object has this name.
    #[error("no Node named {0:?} in the datastore")]
    UnknownNode(String),
    /// The node has no `spec.bgp`: it runs no BGP.
    #[error("Node {0:?} has no spec.bgp: it does not run BGP")]
    NoBgp(String),
}

/// Calico's default graceful restart time when none is configured.
const DEFAULT_RESTART: Duration = Duration::from_secs(120);
/// Hold time proposed when no keepalive time is configured (RFC 4271 §10 suggests 90 s).
const DEFAULT_HOLD: u16 = 90;

/// The ranges Calico's default export knows, for the routes learned from peers:
/// IP pools (passed on, or held back for a pool with `disableBGPExport`: Calico's
/// export filter rejects those; disabled pools keep their existing blocks routed,
/// so they stay), plus the service ranges. Without any IPPool in the datastore the
/// IPAM blocks stand in for the pools.
fn exportable(model: &Model) -> Vec<ExportRange> {
    let cfg = &model.bgp_configuration;
    let mut out: Vec<ExportRange> = if model.ip_pools.is_empty() {
        let block = |b: &crate::datastore::IpamBlock| RangeSource::IpamBlock(b.name.clone());
        model.ipam_blocks.values().map(|b| ExportRange { cidr: b.cidr, source: block(b) }).collect()
    } else {
        let source = |p: &crate::datastore::IpPool| match p.disable_bgp_export {
            true => RangeSource::IpPoolExportDisabled(p.name.clone()),
            false => RangeSource::IpPool(p.name.clone()),
        };
        model.ip_pools.values().map(|p| ExportRange { cidr: p.cidr, source: source(p) }).collect()
    };
    let services = [
        (&cfg.service_cluster_ips, RangeSource::ServiceClusterIps),
        (&cfg.service_external_ips, RangeSource::ServiceExternalIps),
        (&cfg.service_load_balancer_ips, RangeSource::ServiceLoadBalancerIps),
    ];
    for (ranges, source) in services {
        out.extend(ranges.iter().map(|cidr| ExportRange { cidr: *cidr, source: source.clone() }));
    }
    // In prefix order (stable: an IPPool before a service range of the same CIDR).
    out.sort_by_key(|r| r.cidr);
    out.dedup();
    out
}

/// The node and its peers for `node_name`, as Calico's confd would configure
/// its BIRD: the rules are listed in `docs/configuration.md`, "How bgpd plans
/// sessions (as Calico does)".
pub fn plan(model: &Model, node_name: &str) -> Result<(NodeSpec, Vec<PeerSpec>), PlanError> {
    let node = model.nodes.get(node_name).ok_or_else(|| PlanError::UnknownNode(node_name.to_string()))?;
    let bgp = node.bgp.as_ref();
    let ipv4 = bgp.and_then(|b| b.ipv4_address).map(|n| n.addr());
    let ipv6 = bgp.and_then(|b| b.ipv6_address).map(|n| n.addr());
    // RFC 6286 §2.1: the identifier need not be an address of the node; an
    // IPv6-only node takes the hash of its name (router_id.rs).
    let (router_id, router_id_source) =
        super::router_id::router_id(node).ok_or_else(|| PlanError::NoBgp(node_name.to_string()))?;
    let asn = model.node_as_number(node_name).get();
    let cfg = &model.bgp_configuration;
    // A `node.NAME` BGPConfiguration may set this node's port.
    let port = model.listen_port_of(node_name);
    let listen = match cfg.bind_mode {
        BindMode::NodeIp => {
            ipv4.map(IpAddr::V4).into_iter().chain(ipv6.map(IpAddr::V6)).map(|a| SocketAddr::new(a, port)).collect()
        }
        BindMode::None => vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port),
        ],
    };
    let originations = super::originate::originations(model, node_name);
    let cluster_id = bgp.and_then(|b| b.route_reflector_cluster_id);
    let exportable = exportable(model);
    let mut spec = NodeSpec {
        name: node_name.to_string(),
        router_id,
        router_id_source,
        asn,
        listen,
        ipv4,
        ipv6,
        max_paths: cfg.max_paths,
        always_compare_med: cfg.always_compare_med,
        subnets: bgp
            .iter()
            .flat_map(|b| [b.ipv4_address.map(|n| IpNet::V4(n.trunc())), b.ipv6_address.map(|n| IpNet::V6(n.trunc()))])
            .flatten()
            .collect(),
        originations,
        cluster_id,
        exportable,
        statics: Vec::new(),
        restart: Default::default(),
        bfd_interfaces: model
            .bfd_configurations
            .values()
            .filter(|c| c.node_selector.matches(&node.labels))
            .flat_map(|c| c.interfaces.iter().cloned())
            .collect(),
    };
    let ipv4_routes = spec.exportable.iter().any(|r| r.cidr.addr().is_ipv4());
    let me = Me { node, asn, cluster_id, ipv4_routes };
    let mut peers: Vec<PeerSpec> = Vec::new();
    // Calico keeps one peering per address: global BGPPeers first, then the
    // node's own, then the reverse of other nodes' BGPPeers, then the mesh.
    for candidate in bgp_peer_sessions(model, &me).into_iter().chain(mesh_sessions(model, &me)) {
        if !peers.iter().any(|p| p.addr.ip() == candidate.addr.ip()) {
            peers.push(candidate);
        }
    }
    // RFC 8950: a session over IPv6 that carries IPv4 unicast offers IPv6
    // next hops for it; without them an IPv6-only node has no next hop to
    // give its IPv4 routes.
    for p in &mut peers {
        p.extended_next_hop = p.addr.is_ipv6() && p.families.contains(&Family::IPV4_UNICAST);
    }
    spec.statics = model
        .peers_for_node(node_name)
        .into_iter()
        .filter_map(|p| match (&p.remote, p.reachable_by) {
            (PeerRemote::Address { address, .. } | PeerRemote::Node { address }, Some(gw)) => {
                Some((IpNet::from(address.ip), gw))
            }
            _ => None,
        })
        .collect();
    spec.statics.sort();
    spec.statics.dedup();
    Ok((spec, peers))
}

/// The node being planned.
struct Me<'a> {
    node: &'a Node,
    asn: u32,
    cluster_id: Option<Ipv4Addr>,
    /// The cluster has IPv4 ranges to route (IPv4 pools, blocks or service
    /// ranges).
    ipv4_routes: bool,
}

/// A Node's BGP address of `family` (`Family::IPV4_UNICAST` or `IPV6_UNICAST`).
fn address(node: &Node, family: Family) -> Option<IpAddr> {
    let bgp = node.bgp.as_ref()?;
    match family {
        Family::IPV4_UNICAST => bgp.ipv4_address.map(|n| IpAddr::V4(n.addr())),
        _ => bgp.ipv6_address.map(|n| IpAddr::V6(n.addr())),
    }
}

/// The unicast family of an address.
fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::IPV4_UNICAST
    } else {
        Family::IPV6_UNICAST
    }
}

/// Calico's rule for who connects between two Calico nodes: the one whose
/// address is lower *as text* waits (confd compares the address strings, so
/// `10.0.0.10` is lower than `10.0.0.9`), the other connects. Matching the
/// comparison exactly is what lets a bgpd node and a BIRD node always agree.
fn waits_for(me: IpAddr, peer: IpAddr) -> bool {
    peer.to_string() > me.to_string()
}

/// A session to Calico node `other` over `family`, when both nodes have an
/// address of that family: (the peer's address, this node's).
fn node_pair(me: &Node, other: &Node, family: Family) -> Option<(IpAddr, IpAddr)> {
    if other.name == me.name {
        return None;
    }
    Some((address(other, family)?, address(me, family)?))
}

/// The families of a session between this node and Calico node `other`
/// over `family`. Calico runs one BIRD per family, so each session carries
/// its own family only; but Calico cannot route IPv4 between nodes that do
/// not both have an IPv4 address at all. bgpd does: when the cluster has
/// IPv4 ranges and either node lacks an IPv4 address, their IPv6 session
/// carries IPv4 unicast too, with IPv6 next hops (RFC 8950).
fn node_families(me: &Me, other: &Node, family: Family) -> Vec<Family> {
    let no_ipv4_session =
        address(me.node, Family::IPV4_UNICAST).is_none() || address(other, Family::IPV4_UNICAST).is_none();
    if family == Family::IPV6_UNICAST && me.ipv4_routes && no_ipv4_session {
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    } else {
        vec![family]
    }
}

/// The name of a session to node `other`: `PREFIX/NODE`, with `/ipv6` for
/// the IPv6 session.
fn session_name(prefix: &str, other: &str, family: Family) -> String {
    match family {
        Family::IPV4_UNICAST => format!("{prefix}/{other}"),
        _ => format!("{prefix}/{other}/ipv6"),
    }
}

/// The sessions BGPPeers give this node, in Calico's order of precedence:
/// global BGPPeers (neither `node` nor `nodeSelector`), the BGPPeers that
/// select this node, then the reverse side of BGPPeers whose remote side
/// (`peerSelector`, or a `peerIP` that is this node) selects it.
fn bgp_peer_sessions(model: &Model, me: &Me) -> Vec<PeerSpec> {
    let mine = model.peers_for_node(&me.node.name);
    let (global, scoped): (Vec<&BgpPeer>, Vec<&BgpPeer>) =
        mine.into_iter().partition(|p| matches!(p.scope, PeerScope::Global));
    let mut out = Vec::new();
    for p in global.iter().chain(&scoped) {
        forward(model, me, p, &mut out);
    }
    for p in model.local_workload_peers_for_node(&me.node.name) {
        local_workloads(model, me, p, &mut out);
    }
    for p in model.peers.values().filter(|p| p.reverse_peering == ReversePeering::Auto) {
        reverse(model, me, p, &mut out);
    }
    out
}

/// The sessions BGPPeer `p`, which applies to this node, opens.
fn forward(model: &Model, me: &Me, p: &BgpPeer, out: &mut Vec<PeerSpec>) {
    let (peer_addr, as_number) = match &p.remote {
        PeerRemote::Nodes(sel) => {
            for other in model.nodes_matching(sel) {
                for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                    let Some((ip, _)) = node_pair(me.node, other, family) else { continue };
                    let name = session_name(&p.name, &other.name, family);
                    out.push(to_node(model, me, p, name, other, ip));
                }
            }
            return;
        }
        PeerRemote::Address { address, as_number } => (address, Some(as_number.get())),
        PeerRemote::Node { address } => (address, None),
    };
    let ip = peer_addr.ip;
    if address_of(me.node, ip) {
        return; // Calico skips a peer at the node's own address.
    }
    let remote = model.node_with_address(ip);
    // Without asNumber the peer is the node at that address, with its AS.
    let Some(peer_as) = as_number.or_else(|| remote.map(|n| model.node_as_number(&n.name).get())) else { return };
    // A Calico node at that address with that AS is dialled on its listen port.
    let same_node = remote.filter(|n| model.node_as_number(&n.name).get() == peer_as);
    let port = peer_addr.port.or_else(|| same_node.map(|n| model.listen_port_of(&n.name))).unwrap_or(179);
    let mut s = from_bgp_peer(model, me, p, p.name.clone(), SocketAddr::new(ip, port), peer_as);
    if let Some(n) = remote {
        // A session between two Calico nodes: only when this node has an
        // address of that family too (Calico runs no BIRD for a family the
        // node lacks), carrying that family only; for a global BGPPeer the
        // node with the lower address waits (confd's `calico_node` peers;
        // other BGPPeers always connect).
        let Some(mine) = address(me.node, family_of(ip)) else { return };
        s.families = node_families(me, n, family_of(ip));
        s.passive = matches!(p.scope, PeerScope::Global) && waits_for(mine, ip);
        s.routing.rr_client = rr_client(me, &s, cluster_of(n));
    } else {
        s.routing.rr_client = rr_client(me, &s, None);
    }
    out.push(s);
}

/// The sessions of BGPPeer `p` (`localWorkloadSelector`, which applies to
/// this node) with the workloads on this node that it selects: one
/// per family the default BGPConfiguration has a peering address of
/// (`localWorkloadPeeringIPV4/V6`, this node's end) and the workload has an
/// address of, carrying that family only (as Calico's BIRD, one per family).
/// The workload's speaker peers with the peering address (multihop: it is not
/// on the workload's own network), so this node connects from it and accepts.
/// Without either peering address there is none (the datastore warns).
fn local_workloads(model: &Model, me: &Me, lp: &LocalWorkloadPeer, out: &mut Vec<PeerSpec>) {
    let (p, selector, peer_as) = (&lp.peer, &lp.selector, lp.as_number.get());
    let cfg = &model.bgp_configuration;
    let ends = [
        (Family::IPV4_UNICAST, cfg.local_workload_peering_ipv4.map(IpAddr::V4)),
        (Family::IPV6_UNICAST, cfg.local_workload_peering_ipv6.map(IpAddr::V6)),
    ];
    for w in model.workloads_on(&me.node.name).filter(|w| selector.matches(&w.labels)) {
        for (family, end) in ends {
            let (Some(local), Some(ip)) = (end, w.address(family == Family::IPV4_UNICAST)) else { continue };
            let name = session_name(&format!("local/{}/{}", p.name, w.namespace), &w.pod, family);
            // A pod with two workload endpoints (interfaces), or a Pod and its
            // WorkloadEndpoint both in a file: the first in key order.
            if out.iter().any(|s| s.name == name) {
                continue;
            }
            let mut s = from_bgp_peer(model, me, p, name, SocketAddr::new(ip, 179), peer_as);
            s.source = Some(local);
            s.families = vec![family];
            s.routing.rr_client = rr_client(me, &s, None);
            out.push(s);
        }
    }
}

/// The sessions this node runs because BGPPeer `p`'s remote side selects
/// it: to every node `p` applies to.
fn reverse(model: &Model, me: &Me, p: &BgpPeer, out: &mut Vec<PeerSpec>) {
    let families = match &p.remote {
        PeerRemote::Nodes(sel) if sel.matches(&me.node.labels) => vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        PeerRemote::Nodes(_) => return,
        PeerRemote::Address { address, .. } | PeerRemote::Node { address } => {
            let as_matches = match &p.remote {
                PeerRemote::Address { as_number, .. } => as_number.get() == me.asn,
                _ => true,
            };
            let port_matches = address.port.is_none_or(|port| port == model.listen_port_of(&me.node.name));
            if !(address_of(me.node, address.ip) && as_matches && port_matches) {
                return;
            }
            // Reversed over the family of the peerIP only.
            vec![family_of(address.ip)]
        }
    };
    for other in model.nodes.values().filter(|n| applies_to(p, n)) {
        for family in &families {
            let Some((ip, _)) = node_pair(me.node, other, *family) else { continue };
            let name = session_name(&p.name, &other.name, *family);
            out.push(to_node(model, me, p, name, other, ip));
        }
    }
}

/// Whether BGPPeer `p` applies to node `n` (its `node`, `nodeSelector`, or all).
fn applies_to(p: &BgpPeer, n: &Node) -> bool {
    match &p.scope {
        PeerScope::Node(name) => &n.name == name,
        PeerScope::NodeSelector(s) => s.matches(&n.labels),
        PeerScope::Global => true,
    }
}

/// Whether `ip` is one of `node`'s BGP addresses.
fn address_of(node: &Node, ip: IpAddr) -> bool {
    address(node, family_of(ip)) == Some(ip)
}

/// A node's route reflector cluster ID.
fn cluster_of(n: &Node) -> Option<Ipv4Addr> {
    n.bgp.as_ref().and_then(|b| b.route_reflector_cluster_id)
}

/// Calico's route reflector rule: on a reflector, an iBGP peer that is not a
/// reflector of the same cluster is a client.
fn rr_client(me: &Me, s: &PeerSpec, peer_cluster: Option<Ipv4Addr>) -> bool {
    me.cluster_id.is_some() && s.local_as == s.peer_as && peer_cluster != me.cluster_id
}

/// A session of BGPPeer `p` to Calico node `other` at `ip` (one of its
/// addresses): its AS, its listen port, that family only, and this node
/// connects (Calico makes no side of a node-specific peering passive).
fn to_node(model: &Model, me: &Me, p: &BgpPeer, name: String, other: &Node, ip: IpAddr) -> PeerSpec {
    let addr = SocketAddr::new(ip, model.listen_port_of(&other.name));
    let mut s = from_bgp_peer(model, me, p, name, addr, model.node_as_number(&other.name).get());
    s.families = node_families(me, other, family_of(ip));
    s.routing.rr_client = rr_client(me, &s, cluster_of(other));
    s
}

/// A session with BGPPeer `p`'s settings to `addr` in AS `peer_as`.
fn from_bgp_peer(model: &Model, me: &Me, p: &BgpPeer, name: String, addr: SocketAddr, peer_as: u32) -> PeerSpec {
    let hold = p
        .keepalive_time
        .map_or(DEFAULT_HOLD, |k| u16::try_from(k.as_secs().saturating_mul(3)).unwrap_or(u16::MAX).max(3));
    let restart = p.max_restart_time.unwrap_or(DEFAULT_RESTART);
    let routing = RoutingSpec {
        rr_client: false,
        next_hop_mode: match p.next_hop_mode {
            ConfiguredNextHopMode::Auto => NextHopMode::Auto,
            ConfiguredNextHopMode::Self_ => NextHopMode::SelfAddr,
            ConfiguredNextHopMode::Keep => NextHopMode::Keep,
        },
        allow_local_as: p.num_allowed_local_as_numbers.map_or(0, |n| n.get()),
        filters: p.filters.iter().filter_map(|f| model.filters.get(f)).map(|f| f.to_policy()).collect(),
        max_prefix: p.max_prefix.or(model.bgp_configuration.default_max_prefix),
        add_path_send_count: p.add_path_send_count,
        mrai: p.mrai,
        keep_received: p.keep_received,
    };
    let source = match p.source_address {
        SourceAddress::UseNodeIp => address(me.node, family_of(addr.ip())),
        SourceAddress::None => None,
    };
    PeerSpec {
        name,
        addr,
        local_as: p.local_as_number.map_or(me.asn, |a| a.get()),
        peer_as,
        password: p.password.as_ref().map(|k| Password(k.as_bytes().to_vec())),
        hold_time: hold,
        keepalive: p.keepalive_time,
        ttl_security: p.ttl_security.map(|h| h.get()),
        source,
        passive: false,
        restart_time: Some(u16::try_from(restart.as_secs()).unwrap_or(4095).min(4095)),
        long_lived_stale_time: p.long_lived_stale_time,
        graceful_notification: p.graceful_notification,
        bfd: p.bfd,
        add_path: (p.add_path.receive, p.add_path.send),
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        extended_next_hop: false,
        routing,
    }
}

/// The node-to-node mesh: with `nodeToNodeMeshEnabled`, a node that is no
/// route reflector peers with every other node that is none, one session per
/// family both have, each carrying its family only; of two nodes the one
/// with the lower address (as text) waits and the other connects.
fn mesh_sessions(model: &Model, me: &Me) -> Vec<PeerSpec> {
    let cfg = &model.bgp_configuration;
    let is_reflector = |n: &Node| cluster_of(n).is_some();
    // A nodeMeshPassword that does not resolve holds the mesh (the datastore
    // reports it): no session without the password it is configured with.
    if !cfg.node_to_node_mesh_enabled || is_reflector(me.node) || cfg.node_mesh_password_unresolved {
        return Vec::new();
    }
    let restart = cfg.node_mesh_max_restart_time;
    let mut out = Vec::new();
    for other in model.nodes.values().filter(|n| !is_reflector(n)) {
        for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            let Some((ip, mine)) = node_pair(me.node, other, family) else { continue };
            out.push(PeerSpec {
                name: session_name("mesh", &other.name, family),
                addr: SocketAddr::new(ip, model.listen_port_of(&other.name)),
                local_as: me.asn,
                peer_as: model.node_as_number(&other.name).get(),
                password: cfg.node_mesh_password.as_ref().map(|k| Password(k.as_bytes().to_vec())),
                hold_time: DEFAULT_HOLD,
                keepalive: None,
                ttl_security: None,
                source: Some(mine),
                passive: waits_for(mine, ip),
                restart_time: Some(u16::try_from(restart.as_secs()).unwrap_or(4095).min(4095)),
                long_lived_stale_time: cfg.node_mesh_long_lived_stale_time,
                graceful_notification: false,
                bfd: Default::default(),
                add_path: (false, false),
                families: node_families(me, other, family),
                extended_next_hop: false,
                routing: RoutingSpec { max_prefix: cfg.default_max_prefix, ..RoutingSpec::default() },
            });
        }
    }
    out
}

#[cfg(test)]
mod calico_corpus;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{parse_sources, SourceText};

    fn plan_of(yaml: &str, node: &str) -> Result<(NodeSpec, Vec<PeerSpec>), PlanError> {
        let (m, problems) = parse_sources(&[SourceText { path: "ds.yaml".into(), text: yaml.into() }]).unwrap();
        assert!(problems.iter().all(|p| p.severity != crate::datastore::Severity::Error), "{problems:?}");
        plan(&m, node)
    }

    const NODES: &str = r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: r1}}
spec: {bgp: {ipv4Address: 10.0.0.1/24, asNumber: 65001}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2, labels: {rack: r2}}
spec: {bgp: {ipv4Address: 10.0.0.2/24}}
"#;

    #[test]
    fn mesh_peers_with_one_active_side() {
        let (n1, p1) = plan_of(NODES, "n1").unwrap();
        let (_, p2) = plan_of(NODES, "n2").unwrap();
        assert_eq!(n1.asn, 65001);
        assert_eq!((p1.len(), p2.len()), (1, 1));
        assert_eq!(p1[0].name, "mesh/n2");
        assert_eq!(p1[0].peer_as, 64512, "n2 has no AS of its own: the cluster's");
        assert_ne!(p1[0].passive, p2[0].passive, "exactly one side connects");
        assert!(p1[0].passive, "the lower address waits, the higher connects (Calico's rule)");
        assert_eq!((p1[0].long_lived_stale_time, p1[0].graceful_notification), (Some(3600), false));
    }

    #[test]
    fn an_unresolved_mesh_password_holds_the_mesh_not_the_explicit_peers() {
        let cfg = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                   spec: {nodeMeshPassword: {secretKeyRef: {name: gone, key: k}}}\n---\n\
                   apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n\
                   spec: {peerIP: 10.0.0.254, asNumber: 65100}\n";
        let (m, _) = parse_sources(&[SourceText { path: "ds.yaml".into(), text: format!("{NODES}{cfg}") }]).unwrap();
        let (_, p) = plan(&m, "n1").unwrap();
        let names: Vec<&str> = p.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tor"], "no mesh session without its password; the ToR still peers");
    }

    #[test]
    fn the_configured_default_prefix_limit_applies_to_mesh_and_peers_without_their_own() {
        let (_, p) = plan_of(NODES, "n1").unwrap();
        assert_eq!(p[0].routing.max_prefix, None, "unset: the daemon's built-in default applies");
        let cfg = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default, annotations: {bgpd.io/max-prefix: '5000'}}\nspec: {}\n";
        let peers = "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.0.254, asNumber: 65100}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: own, annotations: {bgpd.io/max-prefix: '10'}}\nspec: {peerIP: 10.0.0.253, asNumber: 65100}\n";
        let (_, p) = plan_of(&format!("{NODES}{cfg}{peers}"), "n1").unwrap();
        let limit = |name: &str| p.iter().find(|s| s.name.starts_with(name)).unwrap().routing.max_prefix;
        assert_eq!(limit("mesh/n2"), Some((5000, false)), "the mesh gets the default, warn only");
        assert_eq!(limit("tor"), Some((5000, false)));
        assert_eq!(limit("own"), Some((10, true)), "a peer's own limit wins");
    }

    #[test]
    fn tor_peer_by_rack_selector_with_keepalive_and_port() {
        let yaml = format!(
            "{NODES}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{nodeToNodeMeshEnabled: false, listenPort: 1790}}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor-r1}}\nspec: {{nodeSelector: \"rack == 'r1'\", peerIP: \"10.0.0.254:1179\", asNumber: 65100, keepaliveTime: 10s, ttlSecurity: 1}}\n"
        );
        let (n1, p1) = plan_of(&yaml, "n1").unwrap();
        let (_, p2) = plan_of(&yaml, "n2").unwrap();
        assert!(p2.is_empty());
        assert_eq!(n1.listen[0].port(), 1790);
        let tor = &p1[0];
        assert_eq!((tor.addr.port(), tor.peer_as, tor.local_as, tor.hold_time), (1179, 65100, 65001, 30));
        assert_eq!(tor.ttl_security, Some(1));
        assert_eq!(tor.long_lived_stale_time, Some(3600), "LLGR offered by default");
        let annotated = yaml.replace(
            "metadata: {name: tor-r1}",
            "metadata: {name: tor-r1, annotations: {bgpd.io/long-lived-stale-time: '30', bgpd.io/graceful-notification: 'true'}}",
        );
        let (_, p) = plan_of(&annotated, "n1").unwrap();
        assert_eq!((p[0].long_lived_stale_time, p[0].graceful_notification), (Some(30), true));
        assert!(!p[0].same_session(tor), "a change of either resets the session (both are in the OPEN)");
        assert!(n1.statics.is_empty());
        let via_gw = yaml.replace("ttlSecurity: 1}", "ttlSecurity: 1, reachableBy: 10.0.0.1}");
        let (n1, _) = plan_of(&via_gw, "n1").unwrap();
        assert_eq!(n1.statics, vec![("10.0.0.254/32".parse().unwrap(), "10.0.0.1".parse().unwrap())], "reachableBy");
        assert_eq!(tor.source, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn route_reflectors_are_not_in_the_mesh_and_reflect_to_their_clients() {
        let yaml = format!(
            "{NODES}---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: rr1, labels: {{rr: 'yes'}}}}\nspec: {{bgp: {{ipv4Address: 10.0.0.9/24, routeReflectorClusterID: 224.0.0.1}}}}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: to-rr}}\nspec: {{nodeSelector: all(), peerSelector: \"rr == 'yes'\"}}\n"
        );
        let (_, p1) = plan_of(&yaml, "n1").unwrap();
        let names: Vec<&str> = p1.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["to-rr/rr1", "mesh/n2"], "the reflector is reached through the BGPPeer only");
        assert!(!p1[0].routing.rr_client);
        let (rr, prr) = plan_of(&yaml, "rr1").unwrap();
        assert_eq!(rr.cluster_id, Some("224.0.0.1".parse().unwrap()));
        let names: Vec<&str> = prr.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["to-rr/n1", "to-rr/n2"], "a reflector has no mesh peers");
        // n2 shares the reflector's AS: a client; n1 has an AS of its own: an eBGP peer.
        assert_eq!(prr.iter().map(|p| p.routing.rr_client).collect::<Vec<_>>(), [false, true]);
    }

    const IPV6_ONLY: &str = r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: v6-a}
spec: {bgp: {ipv6Address: "fd00::1/64"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: v6-b}
spec: {bgp: {ipv6Address: "fd00::2/64"}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v6}
spec: {cidr: "fd10::/48"}
"#;

    const IPV4_POOL: &str =
        "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.244.0.0/16}\n";

    #[test]
    fn an_ipv6_only_node_plans_with_a_router_id_hashed_from_its_name() {
        let (a, peers) = plan_of(IPV6_ONLY, "v6-a").unwrap();
        assert_eq!(a.router_id, super::super::router_id::hash_of_name("v6-a"));
        assert_eq!(a.router_id_source, super::super::router_id::RouterIdSource::NameHash);
        assert_ne!(a.router_id, plan_of(IPV6_ONLY, "v6-b").unwrap().0.router_id);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].families, [Family::IPV6_UNICAST], "no IPv4 ranges: IPv6 only, as Calico");
        assert!(!peers[0].extended_next_hop);
    }

    #[test]
    fn ipv6_only_nodes_with_ipv4_pools_carry_ipv4_over_ipv6_with_extended_next_hop() {
        let (_, peers) = plan_of(&format!("{IPV6_ONLY}{IPV4_POOL}"), "v6-a").unwrap();
        let mesh = &peers[0];
        assert_eq!(mesh.name, "mesh/v6-b/ipv6");
        assert_eq!(mesh.families, [Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
        assert!(mesh.extended_next_hop, "RFC 8950: IPv4 routes get IPv6 next hops");
        // Dual-stack nodes keep Calico's one session per family.
        let dual = NODES.replace("{ipv4Address: 10.0.0.2/24}", "{ipv4Address: 10.0.0.2/24, ipv6Address: 'fd00::2/64'}");
        let dual = dual.replace(
            "{ipv4Address: 10.0.0.1/24, asNumber: 65001}",
            "{ipv4Address: 10.0.0.1/24, ipv6Address: 'fd00::1/64', asNumber: 65001}",
        );
        let (_, peers) = plan_of(&format!("{dual}{IPV4_POOL}"), "n1").unwrap();
        let fams: Vec<(&str, Vec<Family>, bool)> =
            peers.iter().map(|p| (p.name.as_str(), p.families.clone(), p.extended_next_hop)).collect();
        assert_eq!(
            fams,
            [("mesh/n2", vec![Family::IPV4_UNICAST], false), ("mesh/n2/ipv6", vec![Family::IPV6_UNICAST], false)]
        );
    }

    #[test]
    fn a_bgp_peer_over_ipv6_offers_extended_next_hop_for_ipv4() {
        let peer = "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n\
                    spec: {peerIP: 'fd00::fe', asNumber: 65100}\n---\napiVersion: projectcalico.org/v3\n\
                    kind: BGPPeer\nmetadata: {name: tor4}\nspec: {peerIP: 10.0.0.254, asNumber: 65100}\n";
        let (_, peers) = plan_of(&format!("{IPV6_ONLY}{peer}"), "v6-a").unwrap();
        let tor = peers.iter().find(|p| p.name == "tor").unwrap();
        assert_eq!(tor.families, [Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
        assert!(tor.extended_next_hop);
        let tor4 = peers.iter().find(|p| p.name == "tor4").unwrap();
        assert!(!tor4.extended_next_hop, "an IPv4 session carries IPv4 next hops");
    }

    #[test]
    fn a_node_without_bgp_is_an_error_naming_it() {
        let yaml =
            format!("{NODES}---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n3}}\nspec: {{}}\n");
        let e = plan_of(&yaml, "n3").unwrap_err();
        assert!(matches!(e, PlanError::NoBgp(ref n) if n == "n3"), "{e}");
    }

    #[test]
    fn unknown_node_is_an_error_naming_it() {
        let e = plan_of(NODES, "n9").unwrap_err();
        assert!(e.to_string().contains("n9"));
    }

    #[test]
    fn bfd_configurations_select_nodes_and_the_annotation_stays_out_of_the_session() {
        let yaml = format!(
            "{NODES}---\napiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: b-racks}}\n\
             spec: {{nodeSelector: \"rack == 'r1'\", interfaces: [{{matchPattern: eth*, multiplier: 3}}]}}\n\
             ---\napiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: a-all}}\n\
             spec: {{interfaces: [{{matchPattern: '*'}}]}}\n"
        );
        let (n1, p1) = plan_of(&yaml, "n1").unwrap();
        let (n2, _) = plan_of(&yaml, "n2").unwrap();
        let patterns = |n: &NodeSpec| n.bfd_interfaces.iter().map(|i| i.match_pattern.clone()).collect::<Vec<_>>();
        assert_eq!(patterns(&n1), ["*", "eth*"], "every selecting configuration, in name order");
        assert_eq!(patterns(&n2), ["*"]);
        let mut off = p1[0].clone();
        off.bfd = crate::datastore::BfdMode::Off;
        assert!(off.same_session(&p1[0]), "turning BFD on or off does not reset the BGP session");
    }

    /// Pods on n1 (one a router, one not) and a router on n2, a BGPPeer of
    /// the routers for every node, and the peering address over IPv4.
    const LOCAL: &str = r#"
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: routers}
spec: {localWorkloadSelector: "app == 'router'", asNumber: 65300, keepaliveTime: 10s}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {localWorkloadPeeringIPV4: 169.254.0.179}
---
apiVersion: v1
kind: Pod
metadata: {name: vm-1, namespace: virt, labels: {app: router}}
spec: {nodeName: n1}
status: {phase: Running, podIPs: [{ip: 10.244.1.7}, {ip: "fd10::7"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: virt, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIPs: [{ip: 10.244.1.8}]}
---
apiVersion: v1
kind: Pod
metadata: {name: vm-2, namespace: virt, labels: {app: router}}
spec: {nodeName: n2}
status: {phase: Running, podIPs: [{ip: 10.244.2.7}]}
"#;

    fn names(peers: &[PeerSpec]) -> Vec<&str> {
        peers.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn a_node_peers_with_the_matching_workloads_on_it_only() {
        let (_, p1) = plan_of(&format!("{NODES}{LOCAL}"), "n1").unwrap();
        assert_eq!(names(&p1), ["local/routers/virt/vm-1", "mesh/n2"], "not web (no match), not vm-2 (on n2)");
        let vm = &p1[0];
        assert_eq!(vm.addr, "10.244.1.7:179".parse().unwrap());
        assert_eq!(vm.source, Some("169.254.0.179".parse().unwrap()), "the node's end: the peering address");
        assert_eq!((vm.local_as, vm.peer_as, vm.hold_time), (65001, 65300, 30), "the BGPPeer's settings apply");
        assert!(!vm.passive, "connects, and accepts");
        assert_eq!(vm.families, [Family::IPV4_UNICAST]);
        let (_, p2) = plan_of(&format!("{NODES}{LOCAL}"), "n2").unwrap();
        assert_eq!(names(&p2), ["local/routers/virt/vm-2", "mesh/n1"]);
        // The workload gone: its session goes (the daemon stops peers by name).
        let gone =
            LOCAL.replace("{name: vm-1, namespace: virt, labels: {app: router}}", "{name: vm-1, namespace: virt}");
        let (_, p1) = plan_of(&format!("{NODES}{gone}"), "n1").unwrap();
        assert_eq!(names(&p1), ["mesh/n2"]);
    }

    #[test]
    fn a_pod_with_a_second_workload_endpoint_has_one_session_per_family() {
        let wep = "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n\
                   metadata: {name: n1-k8s-vm--1-net1, namespace: virt, labels: {app: router}}\n\
                   spec: {node: n1, pod: vm-1, ipNetworks: [10.244.9.7/32]}\n";
        let (_, p) = plan_of(&format!("{NODES}{LOCAL}{wep}"), "n1").unwrap();
        let vm: Vec<String> = p.iter().filter(|s| s.name.starts_with("local/")).map(|s| s.addr.to_string()).collect();
        assert_eq!(vm, ["10.244.9.7:179"], "one session named local/routers/virt/vm-1: the first endpoint's");
    }

    #[test]
    fn local_workload_sessions_follow_the_peering_addresses_set() {
        let both = LOCAL.replace(
            "{localWorkloadPeeringIPV4: 169.254.0.179}",
            "{localWorkloadPeeringIPV4: 169.254.0.179, localWorkloadPeeringIPV6: 'fd00:ff::179'}",
        );
        let (_, p) = plan_of(&format!("{NODES}{both}"), "n1").unwrap();
        let local: Vec<(&str, String, Vec<Family>)> = p
            .iter()
            .filter(|s| s.name.starts_with("local/"))
            .map(|s| (s.name.as_str(), s.source.unwrap().to_string(), s.families.clone()))
            .collect();
        assert_eq!(
            local,
            [
                ("local/routers/virt/vm-1", "169.254.0.179".into(), vec![Family::IPV4_UNICAST]),
                ("local/routers/virt/vm-1/ipv6", "fd00:ff::179".into(), vec![Family::IPV6_UNICAST]),
            ]
        );
        let v6 =
            LOCAL.replace("{localWorkloadPeeringIPV4: 169.254.0.179}", "{localWorkloadPeeringIPV6: 'fd00:ff::179'}");
        let (_, p) = plan_of(&format!("{NODES}{v6}"), "n1").unwrap();
        assert_eq!(names(&p), ["local/routers/virt/vm-1/ipv6", "mesh/n2"]);
        assert_eq!(p[0].addr, "[fd10::7]:179".parse().unwrap());
    }

    #[test]
    fn no_peering_address_no_local_workload_session() {
        let none = LOCAL.replace("{localWorkloadPeeringIPV4: 169.254.0.179}", "{}");
        let (m, problems) =
            parse_sources(&[SourceText { path: "ds.yaml".into(), text: format!("{NODES}{none}") }]).unwrap();
        let (_, p) = plan(&m, "n1").unwrap();
        assert_eq!(names(&p), ["mesh/n2"]);
        assert!(
            problems
                .iter()
                .any(|x| x.field == "spec.localWorkloadSelector" && x.reason.contains("localWorkloadPeeringIPV4")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_local_workload_peer_applies_to_the_nodes_it_selects_only() {
        let scoped = LOCAL
            .replace("spec: {localWorkloadSelector:", "spec: {nodeSelector: \"rack == 'r2'\", localWorkloadSelector:");
        let (_, p1) = plan_of(&format!("{NODES}{scoped}"), "n1").unwrap();
        assert_eq!(names(&p1), ["mesh/n2"], "n1 is not in rack r2");
        let (_, p2) = plan_of(&format!("{NODES}{scoped}"), "n2").unwrap();
        assert_eq!(names(&p2), ["local/routers/virt/vm-2", "mesh/n1"]);
        let on_n1 = LOCAL.replace("spec: {localWorkloadSelector:", "spec: {node: n1, localWorkloadSelector:");
        let (_, p2) = plan_of(&format!("{NODES}{on_n1}"), "n2").unwrap();
        assert_eq!(names(&p2), ["mesh/n1"]);
    }
}
