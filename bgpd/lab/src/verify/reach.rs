//! Who reaches what: every node, pod and host to every pod, service address
//! with a ready endpoint and host (routers to service addresses too), both
//! ways (an answer must find its way back), every ECMP branch. Broken
//! branches become findings grouped by where and why they break, with the
//! reason a route is missing; dual-homed nodes using fewer next hops than
//! they could are reported too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::forward::{Drop, End, Fibs, Network};
use super::model::Design;
use super::report::{Class, Finding, Kind, Object, TraceCounts};
use super::sim::{Scenario, Simulation};

/// A probe source: a pod (from its node), a node, a host or a router.
struct Source {
    label: String,
    start: String,
    addrs: Vec<IpAddr>,
    services_only: bool,
    pod: bool,
}

/// A probe target and who must answer.
struct Target {
    label: String,
    addr: IpAddr,
    /// The member that delivers it, or a service key any endpoint may answer for.
    expect: Expect,
}

enum Expect {
    Member(String),
    Service(String),
}

fn sources(design: &Design, failed: &Scenario) -> Vec<Source> {
    let mut out = Vec::new();
    for p in design.pods.iter().filter(|p| !failed.down(&p.node)) {
        out.push(Source {
            label: p.name.clone(),
            start: p.node.clone(),
            addrs: p.addresses.clone(),
            services_only: false,
            pod: true,
        });
    }
    for m in design.members.values().filter(|m| !failed.down(&m.name)) {
        // Its source address depends on the way out (see `check`).
        let addrs = Vec::new();
        let services_only = m.kind == Kind::Router;
        out.push(Source { label: m.name.clone(), start: m.name.clone(), addrs, services_only, pod: false });
    }
    out
}

fn targets(design: &Design, failed: &Scenario) -> Vec<Target> {
    let mut out = Vec::new();
    for p in design.pods.iter().filter(|p| !failed.down(&p.node)) {
        for a in &p.addresses {
            out.push(Target { label: format!("pod {}", p.name), addr: *a, expect: Expect::Member(p.node.clone()) });
        }
    }
    for s in &design.topo.services {
        // As the lab probes: a ready endpoint on a node that is up and has a pod.
        let ready =
            s.endpoints.iter().any(|(n, ready)| *ready && !failed.down(n) && design.pods.iter().any(|p| &p.node == n));
        if !ready {
            continue;
        }
        for a in &s.addresses {
            out.push(Target { label: format!("Service {}", s.key), addr: *a, expect: Expect::Service(s.key.clone()) });
        }
    }
    for m in design.members.values().filter(|m| m.kind == Kind::Host && !failed.down(&m.name)) {
        for (seg, a) in &m.interfaces {
            if !failed.segments.contains(seg) {
                out.push(Target {
                    label: format!("host {}", m.name),
                    addr: a.addr(),
                    expect: Expect::Member(m.name.clone()),
                });
            }
        }
    }
    out
}

/// One broken branch: where, why, and for which flow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    Drop { at: String, why: Drop, prefix: IpNet },
    Loop { members: Vec<String>, prefix: IpNet },
    Elsewhere { at: String, what: String, prefix: IpNet },
}

/// The most specific prefix a live member originates that covers `addr`
/// (the route that should have taken the packet), else the address itself.
pub fn covering(design: &Design, failed: &Scenario, addr: IpAddr) -> IpNet {
    design
        .members
        .values()
        .filter(|m| !failed.down(&m.name))
        .filter_map(|m| m.speaker.as_ref())
        .flat_map(|s| s.originations.iter().map(|(p, _, _)| *p))
        .filter(|p| p.contains(&addr))
        .max_by_key(IpNet::prefix_len)
        .unwrap_or_else(|| IpNet::from(addr))
}

/// Traces every flow; returns the counts and the findings. `fibs`: each
/// member's installed routes; the flows are shared out over `threads`
/// threads (each with its own [`Network`]), in order, so that the findings
/// list them as one thread would.
pub fn check(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    threads: usize,
) -> (TraceCounts, Vec<Finding>) {
    let sources = sources(design, failed);
    let targets = targets(design, failed);
    let network = || Network::new(design, failed, |m| fibs.get(m).copied());
    let chunk = sources.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Traced> = std::thread::scope(|s| {
        let mut chunks = sources.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let rest: Vec<_> = chunks.map(|c| s.spawn(|| trace_flows(design, failed, &network(), c, &targets))).collect();
        let mut parts = vec![trace_flows(design, failed, &network(), first, &targets)];
        for h in rest {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    let mut counts = TraceCounts::default();
    let mut broken: BTreeMap<Break, Vec<String>> = BTreeMap::new();
    for (c, b) in parts {
        counts.traced += c.traced;
        counts.delivered += c.delivered;
        for (k, flows) in b {
            broken.entry(k).or_default().extend(flows);
        }
    }
    let mut findings: Vec<Finding> =
        broken.into_iter().map(|(b, flows)| finding(design, sim, failed, b, flows)).collect();
    findings.extend(ecmp(design, sim, failed, &network()));
    (counts, findings)
}

/// What tracing some flows found: the counts, and the broken branches with the flows they break.
type Traced = (TraceCounts, BTreeMap<Break, Vec<String>>);

/// Traces the flows of `sources` to `targets`, in order.
fn trace_flows(design: &Design, failed: &Scenario, net: &Network, sources: &[Source], targets: &[Target]) -> Traced {
    let mut counts = TraceCounts::default();
    let mut broken: BTreeMap<Break, Vec<String>> = BTreeMap::new();
    // Where each broken destination should have been taken: asked once per address.
    let mut covers: HashMap<IpAddr, IpNet> = HashMap::new();
    let mut cover = |addr: IpAddr| *covers.entry(addr).or_insert_with(|| covering(design, failed, addr));
    for src in sources {
        for t in targets {
            if src.services_only && !matches!(t.expect, Expect::Service(_)) {
                continue;
            }
            // A pod has its address; a member's own packets leave with the
            // address of the interface they go out by.
            let from = if src.pod {
                src.addrs.iter().copied().find(|a| a.is_ipv4() == t.addr.is_ipv4())
            } else {
                net.source_address(&src.start, t.addr)
            };
            let Some(from) = from else { continue };
            if from == t.addr || t.label.strip_prefix("pod ") == Some(src.label.as_str()) {
                continue;
            }
            // Named only when it is broken: most flows are not.
            let flow = || format!("{} ({from}) -> {} ({})", src.label, t.label, t.addr);
            let mut ok = true;
            counts.traced += 1;
            for end in net.trace(&src.start, t.addr).iter() {
                let issue = match end {
                    End::Delivered(at, what) => {
                        let right = match &t.expect {
                            Expect::Member(m) => m == at,
                            Expect::Service(key) => what
                                .strip_prefix("Service ")
                                .and_then(|w| w.strip_prefix(key.as_str()))
                                .is_some_and(|w| w.starts_with(' ')),
                        };
                        if right {
                            // The answer goes back from where it arrived.
                            counts.traced += 1;
                            let mut back_ok = true;
                            for b in net.trace(at, from).iter() {
                                if let Some(issue) = broken_end(b, from, &mut cover) {
                                    back_ok = false;
                                    broken.entry(issue).or_default().push(format!("{}: the answer", flow()));
                                }
                            }
                            if back_ok {
                                counts.delivered += 1;
                            } else {
                                ok = false;
                            }
                            None
                        } else {
                            Some(Break::Elsewhere { at: at.clone(), what: what.clone(), prefix: cover(t.addr) })
                        }
                    }
                    other => broken_end(other, t.addr, &mut cover),
                };
                if let Some(issue) = issue {
                    ok = false;
                    broken.entry(issue).or_default().push(flow());
                }
            }
            if ok {
                counts.delivered += 1;
            }
        }
    }
    (counts, broken)
}

fn broken_end(end: &End, dst: IpAddr, cover: &mut impl FnMut(IpAddr) -> IpNet) -> Option<Break> {
    match end {
        End::Delivered(..) => None,
        End::Dropped(at, why) => Some(Break::Drop { at: at.clone(), why: why.clone(), prefix: cover(dst) }),
        End::Loop(members) => Some(Break::Loop { members: members.clone(), prefix: cover(dst) }),
    }
}

fn member_object(design: &Design, name: &str) -> Object {
    design.members.get(name).map_or_else(|| Object::new(Kind::Node, name), |m| m.object())
}

fn flows_detail(mut f: Finding, flows: &[String]) -> Finding {
    const SHOWN: usize = 4;
    for fl in flows.iter().take(SHOWN) {
        f = f.detail(format!("affects {fl}"));
    }
    if flows.len() > SHOWN {
        f = f.detail(format!("… and {} more flows", flows.len() - SHOWN));
    }
    f
}

fn finding(design: &Design, sim: &Simulation, failed: &Scenario, b: Break, flows: Vec<String>) -> Finding {
    match b {
        Break::Drop { at, why: Drop::NoRoute, prefix } => {
            let mut f = Finding::problem(
                Class::BlackHole,
                vec![member_object(design, &at)],
                format!("black hole at {at}: no route to {prefix}"),
            );
            for line in super::explain::missing(design, sim, failed, &at, prefix) {
                f = f.detail(line);
            }
            flows_detail(f, &flows).fix(fix_for_missing(design, sim, failed, &at, prefix))
        }
        Break::Drop { at, why: Drop::Blackhole(why), prefix } => flows_detail(
            Finding::problem(
                Class::BlackHole,
                vec![member_object(design, &at)],
                format!("black hole at {at}: {prefix} ends in a blackhole route ({why})"),
            ),
            &flows,
        )
        .fix("the address is in a block of this node but no pod has it: check which node the traffic should reach"),
        Break::Drop { at, why: Drop::Unresolvable(nh), prefix } => flows_detail(
            Finding::problem(
                Class::BlackHole,
                vec![member_object(design, &at)],
                format!("black hole at {at}: the route to {prefix} has next hop {nh}, which is on no live segment of {at} or that nobody has"),
            ),
            &flows,
        )
        .fix("make the next hop reachable: next hop self on the advertising peer (nextHopMode: Self), or share the segment"),
        Break::Drop { at, why: Drop::NoHost(seg), prefix } => flows_detail(
            Finding::problem(
                Class::BlackHole,
                vec![member_object(design, &at), Object::new(Kind::Segment, &seg)],
                format!("black hole at {at}: {prefix} is on its segment {seg}, but no live member there has the address"),
            ),
            &flows,
        )
        .fix("the address belongs on another segment: advertise it instead of overlapping a connected subnet"),
        Break::Loop { members, prefix } => flows_detail(
            Finding::problem(
                Class::Loop,
                members.iter().collect::<BTreeSet<_>>().into_iter().map(|m| member_object(design, m)).collect(),
                format!("forwarding loop for {prefix}: {}", members.join(" -> ")),
            ),
            &flows,
        )
        .fix("find which member's route points back (a static default or a stale route), and correct its next hop"),
        Break::Elsewhere { at, what, prefix } => flows_detail(
            Finding::problem(
                Class::BlackHole,
                vec![member_object(design, &at)],
                format!("{prefix} is delivered at {at} ({what}), not where it belongs"),
            ),
            &flows,
        )
        .fix("two members claim the address: make the blocks or service addresses unique"),
    }
}

/// A suggestion from the first explained reason.
fn fix_for_missing(design: &Design, sim: &Simulation, failed: &Scenario, at: &str, prefix: IpNet) -> String {
    let lines = super::explain::missing(design, sim, failed, at, prefix);
    if lines.iter().any(|l| l.contains("AS-path loop")) {
        return "allow the local AS back in (numAllowedLocalASNumbers: 1 on the BGPPeer), or give each node its own AS"
            .into();
    }
    if lines.iter().any(|l| l.contains("never advertised")) {
        return "make sure a member advertises the prefix (a ready endpoint, an advertised range, a pool)".into();
    }
    if lines.iter().any(|l| l.contains("no BGP session configured")) {
        return "give the member a BGP session (a BGPPeer, the node-to-node mesh, a route reflector)".into();
    }
    if lines.iter().any(|l| l.contains("session is down")) {
        return "bring the session up (see the Sessions findings)".into();
    }
    if lines.iter().any(|l| l.contains("BGPFilter")) {
        return "change the BGPFilter rule named so that it accepts the prefix".into();
    }
    if lines.iter().any(|l| l.contains("iBGP")) {
        return "add route reflection (routeReflectorClusterID) or a full mesh".into();
    }
    "check the sessions and policies on the path the route should come by".into()
}

/// Nodes with uplinks to two or more neighbours that use fewer of them than
/// offer a path: the redundancy the design has but does not use.
fn ecmp(design: &Design, sim: &Simulation, failed: &Scenario, net: &Network) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in design.members.values().filter(|m| m.kind == Kind::Node && !failed.down(&m.name)) {
        let Some(sp) = &m.speaker else { continue };
        let up: BTreeMap<&str, &str> = sim
            .fabric
            .sessions(&m.name)
            .iter()
            .filter(|s| s.established)
            .filter_map(|s| {
                let p = sp.peers.iter().find(|p| p.name == s.peer)?;
                let n = design.members.values().find(|n| n.owns(p.remote))?;
                Some((p.name.as_str(), n.name.as_str()))
            })
            .collect();
        let neighbours: BTreeSet<&str> = up.values().copied().collect();
        if neighbours.len() < 2 {
            continue;
        }
        let Some(speaker) = sim.fabric.speaker(&m.name) else { continue };
        let mut narrow = Vec::new();
        for (prefix, paths) in speaker.rib().routes(None) {
            // A route of its own (a service address with a local endpoint) wins anyway.
            if paths.iter().any(|v| v.peer.is_none()) {
                continue;
            }
            // Distinct next hops offered by neighbours with a session up, by
            // the member they lead to: two reflectors passing on one node's
            // route offer one next hop, and so do two ToRs passing on a rack
            // mate's route with its addresses on both their segments as next
            // hops (third-party next hops), which the node uses both of.
            let offered: BTreeSet<Result<&str, IpAddr>> = paths
                .iter()
                .filter(|v| v.peer.as_deref().is_some_and(|p| up.contains_key(p)))
                .filter_map(|v| v.attrs.next_hop)
                .map(|nh| net.neighbour_of(&m.name, nh).ok_or(nh))
                .collect();
            if offered.len() < 2 {
                continue;
            }
            let width = net.width(&m.name, prefix.addr());
            if width < offered.len() {
                let lost: Vec<String> = paths
                    .iter()
                    .filter(|v| !v.used)
                    .filter_map(|v| {
                        Some(format!("{} ({})", v.peer.as_deref()?, v.reason.map_or("not used", |r| r.describe())))
                    })
                    .collect();
                narrow.push(format!("{prefix}: {width} of {} next hops; lost: {}", offered.len(), lost.join(", ")));
            }
        }
        if !narrow.is_empty() {
            let mut f = Finding::problem(
                Class::Ecmp,
                vec![m.object()],
                format!(
                    "{} uses fewer next hops than it has neighbours offering a path ({} prefixes)",
                    m.name,
                    narrow.len()
                ),
            );
            for n in narrow.iter().take(4) {
                f = f.detail(n.clone());
            }
            out.push(f.fix("make the paths equal (same AS path length and attributes) or raise bgpd.io/max-paths"));
        }
    }
    out
}
