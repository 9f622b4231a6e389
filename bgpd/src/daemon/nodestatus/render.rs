//! The status from the daemon's state: [`Facts`] kept at each load (router ID,
//! families, each peer's kind), a [`Snapshot`] gathered from the shared status and
//! the RIB task, and [`render`], a plain function of the snapshot, the classes and
//! the time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use super::{
    bird_time, rfc3339, Agent, AgentDetail, AgentState, Bgp, Classes, LearnedFrom, NodeStatus, Peer, PeerType, Route,
    RouteType, Routes, SessionState, SourceType,
};
use crate::daemon::spec::{NodeSpec, PeerSpec};
use crate::daemon::status::{Facts, Lifecycle, PeerView, RouteView, Shared};
use crate::datastore::{Model, PeerScope};

impl Facts {
    /// Takes a new plan: `node` and `peers` as planned from `model`.
    pub fn update(&mut self, model: &Model, node: &NodeSpec, peers: &[PeerSpec], now: SystemTime) {
        self.router_id = Some(node.router_id);
        self.families = (node.ipv4.is_some(), node.ipv6.is_some());
        self.booted_at.get_or_insert(now);
        self.peer_types = peers.iter().map(|p| (p.name.clone(), peer_type(&p.name, model))).collect();
    }
}

/// The kind of the planned session `name` (see `plan`: `mesh/NODE[/ipv6]` for
/// the mesh, `BGPPEER` or `BGPPEER/NODE[/ipv6]` for a BGPPeer's,
/// `local/BGPPEER/NAMESPACE/POD[/ipv6]` for a session with a local workload):
/// a BGPPeer without `node` or `nodeSelector` is global, any other BGPPeer (the
/// reverse side of another node's included) node specific. With a BGPPeer
/// named `mesh` or `local` the names are ambiguous; they are then taken as that
/// BGPPeer's.
pub fn peer_type(name: &str, model: &Model) -> PeerType {
    let first = name.split('/').next().unwrap_or(name);
    let local = || name.strip_prefix("local/")?.split('/').next().and_then(|p| model.local_workload_peers.get(p));
    match model.peers.get(first) {
        None if name.starts_with("mesh/") => PeerType::NodeMesh,
        None if local().is_some_and(|p| matches!(p.peer.scope, PeerScope::Global)) => PeerType::GlobalPeer,
        Some(p) if matches!(p.scope, PeerScope::Global) => PeerType::GlobalPeer,
        _ => PeerType::NodePeer,
    }
}

/// Everything a status is rendered from, copied out of the daemon.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// From the last load.
    pub facts: Facts,
    /// The peers.
    pub peers: Vec<PeerView>,
    /// The RIB's paths (only the used ones are rendered).
    pub routes: Vec<RouteView>,
    /// The node's originations: (prefix, gets a blackhole route).
    pub originations: Vec<(IpNet, bool)>,
    /// Whether bgpd programs the kernel.
    pub kernel_on: bool,
    /// Prefixes not in the kernel as wanted.
    pub kernel_failing: BTreeSet<IpNet>,
    /// The daemon runs its sessions (not decommissioning).
    pub running: bool,
    /// When the configuration was last loaded.
    pub reconfigured_at: Option<SystemTime>,
}

impl Snapshot {
    /// Copies the state out of `shared`, and asks the RIB task for its paths
    /// when `routes` (and there is one).
    pub async fn gather(shared: &Shared, rib: Option<&crate::daemon::rib::RibHandle>, routes: bool) -> Snapshot {
        let peers = shared.peers();
        let mut snap = {
            let s = shared.lock();
            Snapshot {
                facts: s.node_status.clone(),
                peers,
                routes: Vec::new(),
                originations: s.originations.iter().map(|o| (o.prefix, o.blackhole)).collect(),
                kernel_on: s.kernel.is_some(),
                kernel_failing: s.kernel.as_ref().map(|k| k.failing.keys().copied().collect()).unwrap_or_default(),
                running: s.lifecycle == Lifecycle::Running,
                reconfigured_at: s.config_loaded_at,
            }
        };
        if let (true, Some(rib)) = (routes, rib) {
            snap.routes = rib.routes(None).await;
        }
        snap
    }
}

/// The status of the classes asked for, at `now`.
pub fn render(snap: &Snapshot, classes: Classes, now: SystemTime) -> NodeStatus {
    NodeStatus {
        last_updated: Some(rfc3339(now)),
        agent: classes.agent.then(|| agent(snap)),
        bgp: classes.bgp.then(|| bgp(snap)),
        routes: classes.routes.then(|| routes(snap)),
    }
}

fn agent(snap: &Snapshot) -> Agent {
    let detail = || AgentDetail {
        state: if snap.running { AgentState::Ready } else { AgentState::NotReady },
        version: format!("bgpd {}", env!("CARGO_PKG_VERSION")),
        router_id: snap.facts.router_id.map(|r| r.to_string()).unwrap_or_default(),
        last_boot_time: snap.facts.booted_at.map(bird_time).unwrap_or_default(),
        last_reconfiguration_time: snap.reconfigured_at.map(bird_time),
    };
    let (v4, v6) = snap.facts.families;
    Agent { bird_v4: v4.then(detail), bird_v6: v6.then(detail) }
}

/// An address as the peer knows it (IPv4-mapped IPv6 as IPv4).
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bgp(snap: &Snapshot) -> Bgp {
    let mut out = Bgp::default();
    for p in &snap.peers {
        let ip = plain(p.address.ip());
        let state = SessionState::from(p.state);
        let up = state == SessionState::Established;
        let peer = Peer {
            peer_ip: ip.to_string(),
            kind: snap.facts.peer_types.get(&p.name).copied().unwrap_or(PeerType::NodePeer),
            state,
            since: p
                .established_since
                .filter(|_| up)
                .map(|s| bird_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))),
        };
        let (list, established, not) = if ip.is_ipv4() {
            (&mut out.peers_v4, &mut out.number_established_v4, &mut out.number_not_established_v4)
        } else {
            (&mut out.peers_v6, &mut out.number_established_v6, &mut out.number_not_established_v6)
        };
        *if up { established } else { not } += 1;
        list.push(peer);
    }
    for list in [&mut out.peers_v4, &mut out.peers_v6] {
        list.sort_by_key(|p| (p.peer_ip.parse::<IpAddr>().ok(), p.kind));
    }
    out
}

fn routes(snap: &Snapshot) -> Routes {
    let by_name: BTreeMap<&str, &PeerView> = snap.peers.iter().map(|p| (p.name.as_str(), p)).collect();
    let installed = |prefix: &IpNet| snap.kernel_on && !snap.kernel_failing.contains(prefix);
    let mut out = Routes::default();
    let mut push = |prefix: IpNet, route: Route| match prefix {
        IpNet::V4(_) => out.routes_v4.push(route),
        IpNet::V6(_) => out.routes_v6.push(route),
    };
    // The paths learned from peers used for forwarding: the best and the rest
    // of its ECMP set (the node's own are its originations, below).
    for r in snap.routes.iter().filter(|r| r.best || r.multipath) {
        let Some(peer) = by_name.get(r.peer.as_str()) else { continue };
        let mesh = snap.facts.peer_types.get(&r.peer) == Some(&PeerType::NodeMesh);
        let route = Route {
            kind: if installed(&r.prefix) { RouteType::Fib } else { RouteType::Rib },
            destination: r.prefix.to_string(),
            gateway: r.next_hop.clone(),
            interface: None,
            learned_from: LearnedFrom {
                source_type: if mesh { SourceType::NodeMesh } else { SourceType::BgpPeer },
                peer_ip: Some(plain(peer.address.ip()).to_string()),
            },
        };
        push(r.prefix, route);
    }
    for (prefix, blackhole) in &snap.originations {
        let in_kernel = *blackhole && installed(prefix);
        let route = Route {
            kind: if in_kernel { RouteType::Fib } else { RouteType::Rib },
            destination: prefix.to_string(),
            gateway: None,
            interface: blackhole.then(|| "blackhole".to_string()),
            learned_from: LearnedFrom { source_type: SourceType::Static, peer_ip: None },
        };
        push(*prefix, route);
    }
    out
}
