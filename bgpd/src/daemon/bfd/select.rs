//! Which peers run BFD, with which timers: a BFDConfiguration pattern matching the
//! interface of the peer's connected network, or the peer's `bgpd.io/bfd` annotation.

use std::time::Duration;

use bgpd_proto::bfd::BfdConfig;

use super::BfdPeer;
use crate::daemon::spec::{NodeSpec, PeerSpec};
use crate::datastore::{BfdInterface, BfdMode};

/// The sessions `node` runs for `peers`: each peer whose `bgpd.io/bfd`
/// asks for BFD, or (no annotation) whose interface a BFDConfiguration
/// pattern of the node matches, with that pattern's timers.
pub fn sessions_for<'a>(node: &NodeSpec, peers: impl Iterator<Item = &'a PeerSpec>) -> Vec<BfdPeer> {
    sessions_on(node, peers, &connected_networks())
}

/// [`sessions_for`] with the host's connected networks given: (interface,
/// this host's address with the network's prefix length).
pub fn sessions_on<'a>(
    node: &NodeSpec,
    peers: impl Iterator<Item = &'a PeerSpec>,
    networks: &[(String, ipnet::IpNet)],
) -> Vec<BfdPeer> {
    let mut out = Vec::new();
    for p in peers {
        let addr = p.addr.ip();
        // The interface the peer is reached through: the longest connected network holding it.
        let connected = networks.iter().filter(|(_, net)| net.contains(&addr)).max_by_key(|(_, net)| net.prefix_len());
        let interface = connected.map(|(name, _)| name.clone());
        let matched = BfdInterface::best(&node.bfd_interfaces, interface.as_deref());
        let (multihop, config) = match (p.bfd, matched) {
            (BfdMode::Off, _) => continue,
            // Single-hop only for a peer on a connected network.
            (BfdMode::Auto, Some(i)) if interface.is_some() => (false, config_of(i)),
            (BfdMode::Auto, _) => continue,
            (BfdMode::On, i) => (false, i.map_or_else(BfdConfig::default, config_of)),
            (BfdMode::Multihop, i) => (true, i.map_or_else(BfdConfig::default, config_of)),
        };
        // Single-hop: from this host's address on the shared network (RFC
        // 5881 sessions are between the two interfaces; the remote knows us by
        // that address, even where BGP runs from the node's IP). Multihop: from
        // the BGP session's source.
        let local = match (multihop, connected) {
            (false, Some((_, net))) => Some(net.addr()),
            _ => p.source.filter(|l| l.is_ipv4() == addr.is_ipv4()),
        };
        let restart_window = Duration::from_secs(u64::from(p.restart_time.unwrap_or(120)));
        out.push(BfdPeer { name: p.name.clone(), addr, local, multihop, config, interface, restart_window });
    }
    out
}

/// A BFDConfiguration interface's timers as a session's configuration.
pub fn config_of(i: &BfdInterface) -> BfdConfig {
    BfdConfig {
        desired_min_tx: i.minimum_send_interval,
        required_min_rx: i.minimum_recv_interval,
        detect_mult: i.multiplier,
        idle_tx: i.idle_send_interval.max(bgpd_proto::bfd::MIN_IDLE_TX),
        passive: false,
    }
}

/// This host's interface addresses with their prefix lengths: (interface, address/len).
fn connected_networks() -> Vec<(String, ipnet::IpNet)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else { continue };
        let net = match (addr.as_sockaddr_in(), mask.as_sockaddr_in(), addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (Some(a), Some(m), _, _) => {
                let len = u32::from(m.ip()).leading_ones() as u8;
                ipnet::Ipv4Net::new(a.ip(), len).ok().map(ipnet::IpNet::V4)
            }
            (_, _, Some(a), Some(m)) => {
                let len = u128::from(m.ip()).leading_ones() as u8;
                ipnet::Ipv6Net::new(a.ip(), len).ok().map(ipnet::IpNet::V6)
            }
            _ => None,
        };
        if let Some(net) = net.filter(|n| n.prefix_len() > 0) {
            out.push((a.interface_name, net));
        }
    }
    out
}
