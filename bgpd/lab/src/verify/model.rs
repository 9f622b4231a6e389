//! Every member of a template as the simulator needs it: each node and bgpd
//! router configured by the daemon's own code (datastore → `Model` → plan →
//! session, peer and RIB configuration, originations), BIRD and FRR routers
//! approximated as the lab configures them, and what each member delivers
//! locally (its pods, the service addresses of its ready endpoints, the
//! blackholes of its blocks).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use bgpd_proto::rib::attrs::PathAttrs;
use bgpd_proto::rib::core::{NextHopMode, PeerConfig, RibConfig, DEFERRAL_PEER_WAIT};
use bgpd_proto::rib::decision::DecisionOptions;
use bgpd_proto::session::{GracefulRestartConfig, SessionConfig};
use bgpd_proto::speaker::LocalAddrs;
use bgpd_proto::types::Family;
use bgpd_proto::wire::{AsPath, Attr, Origin, PathAttribute};
use ipnet::IpNet;

use crate::routers::bgpd_datastore;
use crate::spec::{Implementation, Member, Role, RouterSession, Topology};
use bgpd::daemon::spec::{NodeSpec, PeerSpec};
use bgpd::datastore::{self, Model, Severity as DsSeverity, SourceText};

use super::ipam::{PredictedPod, Prediction};
use super::report::{Class, Finding, Kind, Object};

/// What a member does with packets for a prefix of its own (beyond its
/// interfaces' addresses and connected subnets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// Delivered here: to the pod or service endpoint named.
    Deliver(String),
    /// Dropped here on purpose (a node's own block: addresses without a pod).
    Blackhole(String),
}

/// One BGP session a member has configured.
#[derive(Clone, Debug)]
pub struct PeerModel {
    /// The object that configures it: a BGPPeer, the BGPConfiguration (the
    /// node-to-node mesh), or the router itself.
    pub object: Object,
    /// The RIB's name for it (the daemon's peer name, or the neighbour's).
    pub name: String,
    /// The neighbour's address.
    pub remote: IpAddr,
    /// Session settings (AS numbers, passive, timers, families).
    pub session: SessionConfig,
    /// Route handling (policy, reflection, next hop, allowas-in).
    pub rib: PeerConfig,
    /// TCP MD5 key.
    pub password: Option<Vec<u8>>,
}

/// A member's BGP speaker, as configuration.
#[derive(Clone, Debug)]
pub struct SpeakerModel {
    /// RIB settings (`fib` on: the simulator reports forwarding).
    pub rib: RibConfig,
    /// Its sessions.
    pub peers: Vec<PeerModel>,
    /// What it originates, with the attributes and why.
    pub originations: Vec<(IpNet, PathAttrs, String)>,
    /// Its addresses for next hop self and third-party next hops.
    pub local: LocalAddrs,
}

/// One member of the template.
#[derive(Clone, Debug)]
pub struct MemberModel {
    /// Its name.
    pub name: String,
    /// Node, router or host.
    pub kind: Kind,
    /// Its cluster (nodes only).
    pub cluster: Option<String>,
    /// Its interfaces: (segment, address with the subnet's length), IPv4 then IPv6.
    pub interfaces: Vec<(String, IpNet)>,
    /// Its BGP speaker (nodes and routers).
    pub speaker: Option<SpeakerModel>,
    /// Prefixes it handles itself.
    pub local: Vec<(IpNet, Local)>,
    /// Default gateways (hosts).
    pub gateways: Vec<IpAddr>,
}

impl MemberModel {
    /// Whether `addr` is one of its interface addresses.
    pub fn owns(&self, addr: IpAddr) -> bool {
        self.interfaces.iter().any(|(_, n)| n.addr() == addr)
    }

    /// The object a finding names for it.
    pub fn object(&self) -> Object {
        Object::new(self.kind, &self.name)
    }
}

/// The whole design, ready to simulate.
#[derive(Debug)]
pub struct Design {
    /// The template.
    pub topo: Topology,
    /// Per cluster, the datastore model every node of it reads.
    pub models: BTreeMap<String, Model>,
    /// Members by name.
    pub members: BTreeMap<String, MemberModel>,
    /// The pods and their addresses.
    pub pods: Vec<PredictedPod>,
    /// Problems found while building (datastore objects skipped, IPAM).
    pub findings: Vec<Finding>,
}

/// Builds every member of `topo`.
pub fn build(topo: Topology) -> Design {
    let prediction = super::ipam::predict(&topo);
    let Prediction { ipam, pods, mut findings } = prediction;
    let mut models = BTreeMap::new();
    for (cluster, yaml) in &topo.clusters {
        let mut srcs = vec![SourceText { path: format!("cluster {cluster}").into(), text: yaml.clone() }];
        srcs.push(SourceText {
            path: format!("cluster {cluster}: lab EndpointSlices").into(),
            text: endpoint_slices(&topo, cluster, &pods),
        });
        let store = ipam.get(cluster).cloned().unwrap_or_default();
        match datastore::parse_input(&srcs, &store) {
            Ok((model, problems)) => {
                for p in problems.iter().filter(|p| p.severity == DsSeverity::Error) {
                    findings.push(datastore_problem(cluster, p));
                }
                models.insert(cluster.clone(), model);
            }
            Err(e) => findings.push(Finding::problem(
                Class::Session,
                Vec::new(),
                format!("cluster {cluster}: the datastore cannot be read: {e}"),
            )),
        }
    }
    let mut members = BTreeMap::new();
    for m in topo.members.values() {
        let built = match &m.role {
            Role::Node { cluster, .. } => models.get(cluster).map(|model| node(m, cluster, model, &topo, &pods)),
            Role::Router { implementation: Implementation::Bgpd, .. } => Some(bgpd_router(m, &topo)),
            Role::Router { implementation, asn, router_id, .. } => {
                Some(Ok(other_router(m, *implementation, *asn, *router_id, &topo.router_sessions(m))))
            }
            Role::Host { gateway, gateway6 } => Some(Ok(MemberModel {
                name: m.name.clone(),
                kind: Kind::Host,
                cluster: None,
                interfaces: interfaces(m),
                speaker: None,
                local: Vec::new(),
                gateways: std::iter::once(IpAddr::V4(*gateway)).chain(gateway6.map(IpAddr::V6)).collect(),
            })),
        };
        match built {
            Some(Ok(mm)) => {
                members.insert(m.name.clone(), mm);
            }
            Some(Err(f)) => findings.push(f),
            None => {}
        }
    }
    Design { topo, models, members, pods, findings }
}

/// The lab's EndpointSlices of a cluster, as `bgpd lab up` writes them: one
/// per service, endpoint node and address family, on the node's first pod,
/// ready as the template says.
fn endpoint_slices(topo: &Topology, cluster: &str, pods: &[PredictedPod]) -> String {
    let mut out = String::new();
    for s in topo.services.iter().filter(|s| s.clusters.iter().any(|c| c == cluster)) {
        for (node, ready) in &s.endpoints {
            let Some(pod) = pods.iter().find(|p| &p.node == node) else { continue };
            if !matches!(&topo.members[node].role, Role::Node { cluster: c, .. } if c == cluster) {
                continue;
            }
            for ip in &pod.addresses {
                let (family, suffix) = if ip.is_ipv4() { ("IPv4", "") } else { ("IPv6", "-v6") };
                let _ = write!(
                    out,
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-lab-{node}{suffix}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nendpoints:\n- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions: {{ready: {ready}}}\nports:\n- {{name: probe, port: {port}, protocol: TCP}}\n",
                    name = s.name,
                    ns = s.namespace,
                    port = topo.port,
                );
            }
        }
    }
    out
}

/// A datastore object skipped as invalid.
fn datastore_problem(cluster: &str, p: &datastore::Problem) -> Finding {
    use datastore::{ObjectKind::Read, ResourceKind as R};
    let (kind, class) = match p.object.as_ref().map(|o| &o.kind) {
        Some(Read(R::BgpPeer)) => (Some(Kind::BgpPeer), Class::Session),
        Some(Read(R::BgpFilter)) => (Some(Kind::BgpFilter), Class::Session),
        Some(Read(R::IpPool)) => (Some(Kind::IpPool), Class::Ipam),
        Some(Read(R::Service)) => (Some(Kind::Service), Class::Service),
        Some(Read(R::BgpConfiguration)) => (Some(Kind::BgpConfiguration), Class::Session),
        Some(Read(R::Node)) => (Some(Kind::Node), Class::Session),
        _ => (None, Class::Session),
    };
    let objects = match (kind, p.object.as_ref().and_then(|o| o.name.clone())) {
        (Some(k), Some(n)) => vec![Object::new(k, n)],
        _ => Vec::new(),
    };
    Finding::problem(class, objects, format!("cluster {cluster}: skipped as invalid: {p}"))
        .fix("correct the field named; the daemon skips the object as verify did")
}

fn interfaces(m: &Member) -> Vec<(String, IpNet)> {
    let v4 = m.links.iter().map(|(s, a)| (s.clone(), IpNet::V4(*a)));
    v4.chain(m.links6.iter().map(|(s, a)| (s.clone(), IpNet::V6(*a)))).collect()
}

/// The object that configures a node's peer, from the daemon's peer name:
/// `BGPPEER` or `BGPPEER/NODE` (a `peerSelector` peer), `mesh/NODE` (the mesh).
pub fn peer_object(peer_name: &str, cluster: &str, multi_cluster: bool) -> Object {
    match peer_name.split_once('/') {
        Some(("mesh", _)) => {
            let name = if multi_cluster { format!("{cluster}/default") } else { "default".into() };
            Object::new(Kind::BgpConfiguration, name)
        }
        Some((peer, _)) => Object::new(Kind::BgpPeer, peer),
        None => Object::new(Kind::BgpPeer, peer_name),
    }
}

/// A speaker configured by the daemon's code from a plan.
fn daemon_speaker(node: &NodeSpec, peers: &[PeerSpec], cluster: &str, multi_cluster: bool) -> SpeakerModel {
    let mut rib = bgpd::daemon::rib::rib_config(node, false);
    rib.fib = true;
    let exportable = Arc::new(node.exportable.clone());
    let peers = peers
        .iter()
        .map(|p| PeerModel {
            object: peer_object(&p.name, cluster, multi_cluster),
            name: p.name.clone(),
            remote: p.addr.ip(),
            session: bgpd::daemon::peer::session_config(node, p),
            rib: bgpd::daemon::rib::peer_config(p, &exportable, node.asn),
            password: p.password.as_ref().map(|k| k.0.clone()),
        })
        .collect();
    let originations = node
        .originations
        .iter()
        .map(|o| (o.prefix, bgpd::daemon::rib::origination_attrs(&o.communities), o.cause.clone()))
        .collect();
    let local = LocalAddrs { ipv4: node.ipv4, ipv6: node.ipv6, subnets: node.subnets.clone() };
    SpeakerModel { rib, peers, originations, local }
}

fn node(
    m: &Member,
    cluster: &str,
    model: &Model,
    topo: &Topology,
    pods: &[PredictedPod],
) -> Result<MemberModel, Finding> {
    let (spec, peers) = bgpd::daemon::plan::plan(model, &m.name).map_err(|e| {
        Finding::problem(Class::Session, vec![Object::new(Kind::Node, &m.name)], format!("node {}: {e}", m.name))
            .fix("give the Node a spec.bgp.ipv4Address")
    })?;
    let speaker = daemon_speaker(&spec, &peers, cluster, topo.clusters.len() > 1);
    let mut local = Vec::new();
    for p in pods.iter().filter(|p| p.node == m.name) {
        for a in &p.addresses {
            local.push((IpNet::from(*a), Local::Deliver(format!("pod {}", p.name))));
        }
    }
    for o in spec.originations.iter().filter(|o| o.blackhole) {
        local.push((o.prefix, Local::Blackhole(format!("blackhole for {} (addresses without a pod)", o.prefix))));
    }
    // The lab's stand-in for kube-proxy: a ready endpoint's pod owns the
    // service addresses and its node routes them to it.
    let first_pod = pods.iter().find(|p| p.node == m.name);
    for s in &topo.services {
        if !s.endpoints.iter().any(|(n, ready)| *n == m.name && *ready) {
            continue;
        }
        let Some(pod) = first_pod else { continue };
        for a in &s.addresses {
            if pod.addresses.iter().any(|p| p.is_ipv4() == a.is_ipv4()) {
                local.push((IpNet::from(*a), Local::Deliver(format!("Service {} endpoint {}", s.key, pod.name))));
            }
        }
    }
    Ok(MemberModel {
        name: m.name.clone(),
        kind: Kind::Node,
        cluster: Some(cluster.to_string()),
        interfaces: interfaces(m),
        speaker: Some(speaker),
        local,
        gateways: Vec::new(),
    })
}

/// A bgpd router: the datastore the lab writes for it, through the daemon's code.
fn bgpd_router(m: &Member, topo: &Topology) -> Result<MemberModel, Finding> {
    let text = bgpd_datastore(m, &topo.router_sessions(m));
    let obj = vec![Object::new(Kind::Router, &m.name)];
    let src = SourceText { path: format!("router {}", m.name).into(), text };
    let (model, _) = datastore::parse_sources(&[src]).map_err(|e| {
        Finding::problem(Class::Session, obj.clone(), format!("router {}: its datastore cannot be read: {e}", m.name))
    })?;
    let (spec, peers) = bgpd::daemon::plan::plan(&model, &m.name)
        .map_err(|e| Finding::problem(Class::Session, obj.clone(), format!("router {}: {e}", m.name)))?;
    let mut speaker = daemon_speaker(&spec, &peers, "", false);
    for p in &mut speaker.peers {
        p.object = Object::new(Kind::Router, &m.name);
    }
    Ok(MemberModel {
        name: m.name.clone(),
        kind: Kind::Router,
        cluster: None,
        interfaces: interfaces(m),
        speaker: Some(speaker),
        local: Vec::new(),
        gateways: Vec::new(),
    })
}

/// A BIRD or FRR router, approximated by a speaker configured as
/// `lab::routers::{bird_conf, frr_conf}` configure them: one session per
/// neighbour and family, timers 3/9, graceful restart, every route accepted
/// and exported, iBGP neighbours as reflector clients with next hop self,
/// ECMP over up to 16 paths across neighbouring ASes, connected networks
/// advertised (BIRD `protocol direct`, FRR `redistribute connected`).
fn other_router(
    m: &Member,
    implementation: Implementation,
    asn: u32,
    router_id: std::net::Ipv4Addr,
    sessions: &[RouterSession],
) -> MemberModel {
    let ibgp = sessions.iter().any(|s| s.peer_as == asn);
    let rib = RibConfig {
        router_id,
        local_as: asn,
        cluster_id: ibgp.then_some(router_id),
        decision: DecisionOptions { always_compare_med: false, multipath_relax: true },
        max_paths: 16,
        defer: None,
        defer_peer_wait: DEFERRAL_PEER_WAIT,
        fib: true,
    };
    let peers = sessions
        .iter()
        .map(|s| {
            let mut session = SessionConfig::new(asn, s.peer_as, router_id);
            session.hold_time = 9;
            session.keepalive_time = Some(std::time::Duration::from_secs(3));
            session.connect_retry = std::time::Duration::from_secs(2);
            session.families = vec![if s.neighbor.is_ipv4() { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST }];
            if s.extended_next_hop {
                // RFC 8950: the IPv6 session carries IPv4 too (BIRD's
                // `extended next hop on`, FRR's `capability extended-nexthop`).
                session.families.insert(0, Family::IPV4_UNICAST);
                session.extended_next_hop = true;
            }
            session.graceful_restart = Some(GracefulRestartConfig {
                restart_time: 120,
                restarting: false,
                forwarding_preserved: Vec::new(),
                notification: false,
                long_lived_stale_time: None,
            });
            let mut rib = PeerConfig::new(s.peer.clone(), s.neighbor, asn, s.peer_as);
            if s.peer_as == asn {
                rib.rr_client = true;
                rib.next_hop_mode = NextHopMode::SelfAddr;
            }
            PeerModel {
                object: Object::new(Kind::Router, &m.name),
                name: s.peer.clone(),
                remote: s.neighbor,
                session,
                rib,
                password: None,
            }
        })
        .collect();
    let origin = match implementation {
        // `redistribute connected`: ORIGIN incomplete, as FRR sets it.
        Implementation::Frr => Origin::Incomplete,
        _ => Origin::Igp,
    };
    let cause = match implementation {
        Implementation::Frr => "connected network (FRR redistribute connected)",
        _ => "connected network (BIRD protocol direct)",
    };
    let originations = interfaces(m)
        .into_iter()
        .map(|(_, a)| {
            let attrs = PathAttrs {
                attributes: vec![
                    PathAttribute::new(Attr::Origin(origin)),
                    PathAttribute::new(Attr::AsPath(AsPath::default())),
                ],
                next_hop: None,
                link_local: None,
                priority: None,
            };
            (a.trunc(), attrs, cause.to_string())
        })
        .collect();
    // Routers know every subnet they are on (third-party next hops on each).
    let local = LocalAddrs {
        ipv4: m.links.first().map(|(_, a)| a.addr()),
        ipv6: m.links6.first().map(|(_, a)| a.addr()),
        subnets: interfaces(m).into_iter().map(|(_, a)| a.trunc()).collect(),
    };
    MemberModel {
        name: m.name.clone(),
        kind: Kind::Router,
        cluster: None,
        interfaces: interfaces(m),
        speaker: Some(SpeakerModel { rib, peers, originations, local }),
        local: Vec::new(),
        gateways: Vec::new(),
    }
}
