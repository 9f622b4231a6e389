//! Checks that need no simulation: both ends of every session, the selectors
//! of BGPPeers, and service addresses against the ranges that advertise them.
//! Each finding names the objects to change and says how.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::spec::Role;
use bgpd::datastore::{Model, PeerRemote, PeerScope, TrafficPolicy};

use super::model::{Design, MemberModel, PeerModel};
use super::report::{Class, Finding, Kind, Object};

/// Every static check.
pub fn run(design: &Design) -> Vec<Finding> {
    let mut out = sessions(design);
    let multi = design.models.len() > 1;
    for (cluster, model) in &design.models {
        out.extend(selectors(model, cluster, multi));
        out.extend(services(model, cluster, multi));
    }
    out.extend(anycast(design));
    out
}

/// The BGPConfiguration of a cluster, named as findings name it.
pub fn bgp_configuration(cluster: &str, multi: bool) -> Object {
    Object::new(Kind::BgpConfiguration, if multi { format!("{cluster}/default") } else { "default".into() })
}

/// Who owns `addr`, and on which segment.
fn owner(design: &Design, addr: IpAddr) -> Option<(&MemberModel, &str)> {
    design
        .members
        .values()
        .find_map(|m| m.interfaces.iter().find(|(_, n)| n.addr() == addr).map(|(seg, _)| (m, seg.as_str())))
}

/// `from`'s session towards one of `to`'s addresses: the one of the same
/// family as `p` (routers have a session per family), else any.
pub fn session_back<'a>(from: &'a MemberModel, to: &MemberModel, p: &PeerModel) -> Option<&'a PeerModel> {
    let peers = &from.speaker.as_ref()?.peers;
    let same = |b: &&PeerModel| b.remote.is_ipv4() == p.remote.is_ipv4();
    peers.iter().filter(|b| to.owns(b.remote)).find(same).or_else(|| peers.iter().find(|b| to.owns(b.remote)))
}

fn how_to_add(owner: &MemberModel, member: &MemberModel, design: &Design) -> String {
    match owner.kind {
        Kind::Router => match design.topo.members.get(&owner.name).map(|m| &m.role) {
            Some(Role::Router { peers: Some(_), .. }) => {
                format!("add {} to router {}'s `peers` in the Lab document", member.name, owner.name)
            }
            _ => format!(
                "put {} on a segment of router {} (a router peers with every node and router on its segments)",
                member.name, owner.name
            ),
        },
        Kind::Node => format!("add a BGPPeer that gives node {} a session to {}", owner.name, member.name),
        _ => format!("{} runs no BGP: remove the session", owner.name),
    }
}

/// Both ends of every configured session.
fn sessions(design: &Design) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<(String, String, &'static str)> = BTreeSet::new();
    for m in design.members.values() {
        let Some(sp) = &m.speaker else { continue };
        for p in &sp.peers {
            let me = m.object();
            let Some((peer, seg)) = owner(design, p.remote) else {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![p.object.clone(), me],
                        format!("{}'s session {} goes to {}, which no member of the lab has", m.name, p.name, p.remote),
                    )
                    .fix(format!("correct the peer address in {} (or add the member that has {})", p.object, p.remote)),
                );
                continue;
            };
            let pair = |what: &'static str| {
                let (a, b) = if m.name < peer.name { (&m.name, &peer.name) } else { (&peer.name, &m.name) };
                (a.clone(), b.clone(), what)
            };
            let shared = m.interfaces.iter().any(|(s, n)| s == seg && n.contains(&p.remote));
            if !shared && seen.insert(pair("segment")) {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![p.object.clone(), me.clone(), peer.object()],
                        format!(
                            "{}'s session {} to {} ({}) cannot connect: no route to the peer address, {} is not on \
                             segment {seg}",
                            m.name, p.name, p.remote, peer.name, m.name
                        ),
                    )
                    .fix(format!("peer with {}'s address on a segment {} shares with it", peer.name, m.name)),
                );
            }
            let Some(back) = session_back(peer, m, p) else {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![p.object.clone(), me, peer.object()],
                        format!(
                            "{}'s session {} to {} ({}) is configured on one side only: {} has no session for {}",
                            m.name, p.name, p.remote, peer.name, peer.name, m.name
                        ),
                    )
                    .fix(how_to_add(peer, m, design)),
                );
                continue;
            };
            if p.session.peer_as != back.session.local_as && seen.insert(pair("as")) {
                let (wrong, right) = (p, back);
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![wrong.object.clone(), me.clone(), right.object.clone(), peer.object()],
                        format!(
                            "AS mismatch: {} expects AS {} at {} ({}), but {} speaks AS {} on that session",
                            m.name, wrong.session.peer_as, p.remote, peer.name, peer.name, right.session.local_as
                        ),
                    )
                    .detail(format!("{} would refuse the OPEN with Bad Peer AS (RFC 4271 §6.2)", m.name))
                    .fix(format!(
                        "set the peer AS in {} to {} (or change {}'s AS)",
                        wrong.object, right.session.local_as, peer.name
                    )),
                );
            } else if back.session.peer_as != p.session.local_as && seen.insert(pair("as")) {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![back.object.clone(), peer.object(), p.object.clone(), me.clone()],
                        format!(
                            "AS mismatch: {} expects AS {} from {}, but {} speaks AS {}",
                            peer.name, back.session.peer_as, m.name, m.name, p.session.local_as
                        ),
                    )
                    .fix(format!("set the peer AS in {} to {}", back.object, p.session.local_as)),
                );
            }
            // RFC 6286 §2.2: within an AS the two identifiers must differ. A
            // router ID hashed from a node name can collide with another's.
            let same_as = p.session.local_as == p.session.peer_as;
            if same_as && p.session.bgp_id == back.session.bgp_id && seen.insert(pair("router id")) {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![me.clone(), peer.object(), p.object.clone()],
                        format!(
                            "{} and {} both have router ID {} in AS {}: the session is refused (Bad BGP Identifier)",
                            m.name, peer.name, p.session.bgp_id, p.session.local_as
                        ),
                    )
                    .detail("RFC 6286 §2.2: iBGP peers need distinct identifiers")
                    .fix(format!(
                        "give {} or {} another router ID (Node annotation bgpd.io/router-id)",
                        m.name, peer.name
                    )),
                );
            }
            if p.session.passive && back.session.passive && seen.insert(pair("passive")) {
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![p.object.clone(), me.clone(), back.object.clone(), peer.object()],
                        format!(
                            "{} and {} both wait for the other to connect: the session never starts",
                            m.name, peer.name
                        ),
                    )
                    .fix("let one side connect (bgpd nodes: the lower address connects)"),
                );
            }
            if p.password != back.password && seen.insert(pair("password")) {
                let which = match (&p.password, &back.password) {
                    (Some(_), None) => format!("only {} sets a password", m.name),
                    (None, Some(_)) => format!("only {} sets a password", peer.name),
                    _ => "the passwords differ".to_string(),
                };
                out.push(
                    Finding::problem(
                        Class::Session,
                        vec![p.object.clone(), me.clone(), back.object.clone(), peer.object()],
                        format!(
                            "TCP MD5 between {} and {}: {which}: the connection is never answered",
                            m.name, peer.name
                        ),
                    )
                    .fix("set the same password (a Secret reference) on both sides, or on neither"),
                );
            }
        }
    }
    out
}

/// BGPPeer selectors that select nothing.
fn selectors(model: &Model, cluster: &str, multi: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let obj = |name: &str| Object::new(Kind::BgpPeer, name);
    let whose = if multi { format!(" of cluster {cluster}") } else { String::new() };
    for p in model.peers.values() {
        match &p.scope {
            PeerScope::Node(n) if !model.nodes.contains_key(n) => out.push(
                Finding::problem(
                    Class::Selector,
                    vec![obj(&p.name)],
                    format!("BGPPeer {}: spec.node {n:?} is no Node{whose}: no node opens the session", p.name),
                )
                .fix("name an existing Node in spec.node"),
            ),
            PeerScope::NodeSelector(sel) if !model.nodes.values().any(|n| sel.matches(&n.labels)) => out.push(
                Finding::problem(
                    Class::Selector,
                    vec![obj(&p.name)],
                    format!("BGPPeer {}: nodeSelector `{sel}` selects no Node{whose}", p.name),
                )
                .detail(labels(model))
                .fix("correct the nodeSelector, or the Nodes' labels"),
            ),
            _ => {}
        }
        if let PeerRemote::Nodes(sel) = &p.remote {
            if model.nodes_matching(sel).next().is_none() {
                out.push(
                    Finding::problem(
                        Class::Selector,
                        vec![obj(&p.name)],
                        format!("BGPPeer {}: peerSelector `{sel}` selects no Node{whose}: no session is made", p.name),
                    )
                    .detail(labels(model))
                    .fix("correct the peerSelector, or label the Nodes it should select"),
                );
            }
        }
    }
    out
}

fn labels(model: &Model) -> String {
    let mut parts = Vec::new();
    for n in model.nodes.values() {
        let l: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("{} {{{}}}", n.name, l.join(", ")));
    }
    format!("node labels: {}", parts.join("; "))
}

fn within(ranges: &[IpNet], ip: &IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

/// Service addresses against the BGPConfiguration's ranges, and
/// `externalTrafficPolicy: Local` services without a ready endpoint.
fn services(model: &Model, cluster: &str, multi: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let cfg = &model.bgp_configuration;
    let config = bgp_configuration(cluster, multi);
    for svc in model.services.values() {
        let me = Object::new(Kind::Service, svc.key());
        let uncovered = |ips: &[IpAddr], ranges: &[IpNet], what: &str, field: &str| -> Vec<Finding> {
            ips.iter()
                .filter(|ip| !within(ranges, ip))
                .map(|ip| {
                    let have: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                    Finding::problem(
                        Class::Service,
                        vec![me.clone(), config.clone()],
                        format!("Service {}: {what} {ip} is in no {field} range: no node advertises it", svc.key()),
                    )
                    .detail(format!("{field}: {}", if have.is_empty() { "none".to_string() } else { have.join(", ") }))
                    .fix(format!(
                        "add a {field} entry covering {ip} to {config}, or give the Service an address inside one"
                    ))
                })
                .collect()
        };
        out.extend(uncovered(
            &svc.load_balancer_ingress,
            &cfg.service_load_balancer_ips,
            "LoadBalancer IP",
            "serviceLoadBalancerIPs",
        ));
        out.extend(uncovered(&svc.external_ips, &cfg.service_external_ips, "external IP", "serviceExternalIPs"));
        if !cfg.service_cluster_ips.is_empty() {
            out.extend(uncovered(&svc.cluster_ips, &cfg.service_cluster_ips, "cluster IP", "serviceClusterIPs"));
        }
        let addressed = !svc.load_balancer_ingress.is_empty() || !svc.external_ips.is_empty();
        if svc.external_traffic_policy == TrafficPolicy::Local && addressed {
            let ready: Vec<&str> = model
                .slices_of(svc)
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.ready)
                .filter_map(|e| e.node_name.as_deref())
                .collect();
            if ready.is_empty() {
                let whose = if multi { format!(" in cluster {cluster}") } else { String::new() };
                out.push(
                    Finding::problem(
                        Class::Service,
                        vec![me.clone()],
                        format!(
                            "Service {} has externalTrafficPolicy: Local and no ready endpoint{whose}: no node \
                             advertises its addresses",
                            svc.key()
                        ),
                    )
                    .fix("give it a ready endpoint (in the Lab document: an endpoint with ready: true)"),
                );
            }
        }
    }
    out
}

/// Services present in several clusters whose addresses only one cluster's
/// nodes advertise.
fn anycast(design: &Design) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in design.topo.services.iter().filter(|s| s.clusters.len() > 1) {
        for a in &s.addresses {
            let host = IpNet::from(*a);
            let advertising: BTreeSet<&str> = design
                .members
                .values()
                .filter(|m| {
                    m.speaker.as_ref().is_some_and(|sp| sp.originations.iter().any(|(p, _, _)| p.contains(&host)))
                })
                .filter_map(|m| m.cluster.as_deref())
                .collect();
            let silent: Vec<&String> = s.clusters.iter().filter(|c| !advertising.contains(c.as_str())).collect();
            if advertising.len() == 1 && !silent.is_empty() {
                let silent: Vec<&str> = silent.iter().map(|c| c.as_str()).collect();
                out.push(
                    Finding::problem(
                        Class::Service,
                        vec![Object::new(Kind::Service, &s.key)],
                        format!(
                            "anycast address {a} of Service {} is advertised from cluster {} only (not {})",
                            s.key,
                            advertising.iter().next().copied().unwrap_or_default(),
                            silent.join(", ")
                        ),
                    )
                    .detail("a failure of that cluster leaves the address unreachable")
                    .fix(format!(
                        "give the Service a ready endpoint in {} and cover {a} in its ranges",
                        silent.join(", ")
                    )),
                );
            }
        }
    }
    out
}
