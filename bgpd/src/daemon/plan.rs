//! From the datastore's model to what this node runs: its own spec and its
//! peers (BGPPeers that apply to it, and the node-to-node mesh).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd_proto::rib::core::NextHopMode as RibNextHop;
use bgpd_proto::rib::policy::{ExportRange, RangeSource};
use ipnet::IpNet;

use crate::datastore::{BindMode, Model, NextHopMode, PeerRemote, PeerScope, SourceAddress};

use super::spec::{NodeSpec, Password, PeerSpec, RoutingSpec};

/// Why this node cannot run with the model.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No Node object has this name.
    #[error("no Node named {0:?} in the datastore")]
    UnknownNode(String),
    /// The node has no BGP address to take its router ID from.
    #[error("Node {0:?}: spec.bgp.ipv4Address is needed for the BGP identifier")]
    NoRouterId(String),
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

/// The node and its peers for `node_name`.
pub fn plan(model: &Model, node_name: &str) -> Result<(NodeSpec, Vec<PeerSpec>), PlanError> {
    let node = model.nodes.get(node_name).ok_or_else(|| PlanError::UnknownNode(node_name.to_string()))?;
    let bgp = node.bgp.as_ref();
    let ipv4 = bgp.and_then(|b| b.ipv4_address).map(|n| n.addr());
    let ipv6 = bgp.and_then(|b| b.ipv6_address).map(|n| n.addr());
    let router_id = ipv4.ok_or_else(|| PlanError::NoRouterId(node_name.to_string()))?;
    let asn = model.node_as_number(node_name).get();
    let cfg = &model.bgp_configuration;
    let port = cfg.listen_port;
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
    let spec = NodeSpec {
        name: node_name.to_string(),
        router_id,
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

    let source_for = |peer: IpAddr, mode: SourceAddress| match (mode, peer) {
        (SourceAddress::UseNodeIp, IpAddr::V4(_)) => ipv4.map(IpAddr::V4),
        (SourceAddress::UseNodeIp, IpAddr::V6(_)) => ipv6.map(IpAddr::V6),
        (SourceAddress::None, _) => None,
    };
    let mut peers = Vec::new();
    // Node-to-node BGPPeers work both ways (as in Calico): a node that a
    // BGPPeer's peerSelector selects peers with the nodes its nodeSelector
    // (or node, or nothing: all) selects — that is how route reflectors
    // reach their clients.
    let labels = model.nodes.get(node_name).map(|n| n.labels.clone()).unwrap_or_default();
    let mut entries: Vec<(&crate::datastore::BgpPeer, Option<Vec<&crate::datastore::Node>>)> = Vec::new();
    for p in model.peers_for_node(node_name) {
        match &p.remote {
            PeerRemote::Address { .. } => entries.push((p, None)),
            PeerRemote::Nodes(sel) => entries.push((p, Some(model.nodes_matching(sel).collect()))),
        }
    }
    for p in model.peers.values() {
        let PeerRemote::Nodes(sel) = &p.remote else { continue };
        if !sel.matches(&labels) {
            continue;
        }
        let others: Vec<&crate::datastore::Node> = model
            .nodes
            .values()
            .filter(|n| match &p.scope {
                PeerScope::Node(name) => &n.name == name,
                PeerScope::NodeSelector(s) => s.matches(&n.labels),
                PeerScope::Global => true,
            })
            .collect();
        entries.push((p, Some(others)));
    }
    for (p, others) in entries {
        let hold = p
            .keepalive_time
            .map_or(DEFAULT_HOLD, |k| u16::try_from(k.as_secs().saturating_mul(3)).unwrap_or(u16::MAX).max(3));
        let restart = p.max_restart_time.unwrap_or(DEFAULT_RESTART);
        let routing = RoutingSpec {
            rr_client: false,
            next_hop_mode: match p.next_hop_mode {
                NextHopMode::Auto => RibNextHop::Auto,
                NextHopMode::Self_ => RibNextHop::SelfAddr,
                NextHopMode::Keep => RibNextHop::Keep,
            },
            allow_local_as: p.num_allowed_local_as_numbers.map_or(0, |n| n.get()),
            filters: p.filters.iter().filter_map(|f| model.filters.get(f)).map(|f| f.to_policy()).collect(),
            max_prefix: p.max_prefix.or(cfg.default_max_prefix),
            add_path_send_count: p.add_path_send_count,
            mrai: p.mrai,
            keep_received: p.keep_received,
        };
        let base = |name: String, addr: SocketAddr, peer_as: u32| PeerSpec {
            name,
            addr,
            local_as: p.local_as_number.map_or(asn, |a| a.get()),
            peer_as,
            password: p.password.as_ref().map(|k| Password(k.as_bytes().to_vec())),
            hold_time: hold,
            keepalive: p.keepalive_time,
            ttl_security: p.ttl_security.map(|h| h.get()),
            source: source_for(addr.ip(), p.source_address),
            passive: false,
            restart_time: Some(u16::try_from(restart.as_secs()).unwrap_or(4095).min(4095)),
            long_lived_stale_time: p.long_lived_stale_time,
            graceful_notification: p.graceful_notification,
            bfd: p.bfd,
            add_path: (p.add_path.receive, p.add_path.send),
            routing: routing.clone(),
        };
        match (&p.remote, others) {
            (PeerRemote::Address { address, as_number }, _) => {
                let addr = SocketAddr::new(address.ip, address.port.unwrap_or(179));
                peers.push(base(p.name.clone(), addr, as_number.get()));
            }
            (PeerRemote::Nodes(_), others) => {
                for other in others.unwrap_or_default().into_iter().filter(|n| n.name != node_name) {
                    let Some(a) = other.bgp.as_ref().and_then(|b| b.ipv4_address).map(|n| n.addr()) else { continue };
                    if peers.iter().any(|q| q.addr.ip() == IpAddr::V4(a)) {
                        continue;
                    }
                    let other_as = model.node_as_number(&other.name).get();
                    let mut s =
                        base(format!("{}/{}", p.name, other.name), SocketAddr::new(IpAddr::V4(a), port), other_as);
                    s.passive = IpAddr::V4(router_id) > IpAddr::V4(a);
                    // A reflector's peers that are not reflectors of its
                    // cluster are its clients (Calico's route reflector model).
                    let other_cluster = other.bgp.as_ref().and_then(|b| b.route_reflector_cluster_id);
                    s.routing.rr_client =
                        cluster_id.is_some() && other_cluster != cluster_id && s.local_as == s.peer_as;
                    peers.push(s);
                }
            }
        }
    }
    // The node-to-node mesh: every other node with an IPv4 address, route
    // reflectors excepted (they peer through BGPPeers), and none at all for
    // a reflector. One session per node pair carries IPv4 and IPv6.
    let is_reflector =
        |n: &crate::datastore::Node| n.bgp.as_ref().is_some_and(|b| b.route_reflector_cluster_id.is_some());
    if cfg.node_to_node_mesh_enabled && !is_reflector(node) {
        for other in model.nodes.values().filter(|n| n.name != node_name && !is_reflector(n)) {
            let Some(a) = other.bgp.as_ref().and_then(|b| b.ipv4_address).map(|n| n.addr()) else { continue };
            if peers.iter().any(|p| p.addr.ip() == IpAddr::V4(a)) {
                continue;
            }
            let restart = cfg.node_mesh_max_restart_time;
            peers.push(PeerSpec {
                name: format!("mesh/{}", other.name),
                addr: SocketAddr::new(IpAddr::V4(a), port),
                local_as: asn,
                peer_as: model.node_as_number(&other.name).get(),
                password: cfg.node_mesh_password.as_ref().map(|k| Password(k.as_bytes().to_vec())),
                hold_time: DEFAULT_HOLD,
                keepalive: None,
                ttl_security: None,
                source: Some(IpAddr::V4(router_id)),
                // Between two nodes only one side connects: the lower address.
                passive: router_id > a,
                restart_time: Some(u16::try_from(restart.as_secs()).unwrap_or(4095).min(4095)),
                long_lived_stale_time: cfg.node_mesh_long_lived_stale_time,
                graceful_notification: false,
                bfd: Default::default(),
                add_path: (false, false),
                routing: RoutingSpec { max_prefix: cfg.default_max_prefix, ..RoutingSpec::default() },
            });
        }
    }
    let mut spec = spec;
    spec.statics = model
        .peers_for_node(node_name)
        .into_iter()
        .filter_map(|p| match (&p.remote, p.reachable_by) {
            (PeerRemote::Address { address, .. }, Some(gw)) => Some((IpNet::from(address.ip), gw)),
            _ => None,
        })
        .collect();
    spec.statics.sort();
    spec.statics.dedup();
    Ok((spec, peers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{parse_sources, Source};

    fn plan_of(yaml: &str, node: &str) -> Result<(NodeSpec, Vec<PeerSpec>), PlanError> {
        let (m, problems) = parse_sources(&[Source { path: "ds.yaml".into(), text: yaml.into() }]).unwrap();
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
        assert!(!p1[0].passive, "the lower address connects");
        assert_eq!((p1[0].long_lived_stale_time, p1[0].graceful_notification), (Some(3600), false));
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
}
