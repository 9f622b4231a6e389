//! Who reaches what: every node, pod and host to every pod, service address
//! with a ready endpoint and host (routers to service addresses too), both
//! ways (an answer must find its way back), every ECMP branch. Broken
//! branches become findings grouped by where and why they break, with the
//! reason a route is missing; dual-homed nodes using fewer next hops than
//! they could are reported too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::delta::{self, Baseline, Dests, Dirty, Outcome, Recorded, NONE};
use super::ecmp;
use super::forward::{Drop, End, Fibs, Network};
use super::model::{Design, Local};
use super::report::{Class, Finding, Kind, Object, TraceCounts};
use super::sim::{Scenario, Simulation};

/// A probe source: a pod (from its node), a node, a host or a router.
struct ProbeSource {
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

fn sources(design: &Design, failed: &Scenario) -> Vec<ProbeSource> {
    let mut out = Vec::new();
    for p in design.pods.iter().filter(|p| !failed.down(&p.node)) {
        out.push(ProbeSource {
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
        out.push(ProbeSource { label: m.name.clone(), start: m.name.clone(), addrs, services_only, pod: false });
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
    Drop {
        at: String,
        why: Drop,
        prefix: IpNet,
    },
    Loop {
        members: Vec<String>,
        prefix: IpNet,
    },
    Elsewhere {
        at: String,
        what: String,
        prefix: IpNet,
    },
    /// Delivered both ways, but requests pass `forward` and answers `back`
    /// (the members only one direction passes).
    Asymmetric {
        forward: Vec<String>,
        back: Vec<String>,
    },
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

/// Traces every flow; returns the counts, the findings, and each flow's
/// outcome with its answer address numbered by `dests` (for the failure
/// scenarios, [`delta`](super::delta)). `fibs`: each member's installed
/// routes; the flows are shared out over `threads` threads (each with its
/// own [`Network`]), in order, so that the findings list them as one
/// thread would.
pub fn check(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    dests: &Dests,
    threads: usize,
) -> (TraceCounts, Vec<Finding>, Recorded) {
    let sources = sources(design, failed);
    let targets = targets(design, failed);
    let index: HashMap<&str, usize> = design.members.keys().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let srcs: Vec<Src> =
        sources.iter().enumerate().map(|(i, s)| (i, index.get(s.start.as_str()).copied(), s)).collect();
    let tgts: Vec<(usize, &Target)> = targets.iter().enumerate().collect();
    let (counts, findings, rows) = traced(design, sim, failed, fibs, &srcs, &tgts, &Mode::Record(dests), threads);
    let mut recorded = Recorded { targets: targets.len(), ..Recorded::default() };
    for (o, a) in rows {
        recorded.outcomes.extend(o);
        recorded.answers.extend(a);
    }
    let (more, nodes) = ecmp::check(design, sim, failed, fibs, None, threads);
    recorded.ecmp = nodes;
    (counts, findings.into_iter().chain(more).collect(), recorded)
}

/// [`check`] for a failure scenario, compared with the design without
/// failures `base`: only the flows whose path passes a member that
/// `dirty` says changed are traced; every other flow counts as it did in
/// `base`. The findings are those [`check`] would give, short of the ones
/// `base` has already (a broken flow that no failure touches is not
/// traced again), and of ECMP findings of members that did not change.
pub fn check_changed(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    base: &Baseline,
    dirty: &Dirty,
    threads: usize,
) -> (TraceCounts, Vec<Finding>) {
    let none = Scenario::none();
    let (all_sources, all_targets) = (sources(design, &none), targets(design, &none));
    let source_rows: HashMap<(&str, &str), usize> =
        all_sources.iter().enumerate().map(|(i, s)| ((s.label.as_str(), s.start.as_str()), i)).collect();
    let target_cols: HashMap<(&str, IpAddr), usize> =
        all_targets.iter().enumerate().map(|(i, t)| ((t.label.as_str(), t.addr), i)).collect();
    let sources = sources(design, failed);
    let targets = targets(design, failed);
    let srcs: Vec<Src> = sources
        .iter()
        .map(|s| {
            let row = source_rows.get(&(s.label.as_str(), s.start.as_str())).copied().unwrap_or(usize::MAX);
            (row, base.members.get(&s.start).copied(), s)
        })
        .collect();
    let tgts: Vec<(usize, &Target)> = targets
        .iter()
        .map(|t| (target_cols.get(&(t.label.as_str(), t.addr)).copied().unwrap_or(usize::MAX), t))
        .collect();
    // The members that may answer for each target: where it is delivered.
    let ats: Vec<Vec<usize>> = targets
        .iter()
        .map(|t| match &t.expect {
            Expect::Member(m) => base.members.get(m).copied().into_iter().collect(),
            Expect::Service(_) => design
                .members
                .values()
                .enumerate()
                .filter(|(_, m)| m.local.iter().any(|(n, l)| matches!(l, Local::Deliver(_)) && n.contains(&t.addr)))
                .map(|(i, _)| i)
                .collect(),
        })
        .collect();
    let dests = targets.iter().map(|t| base.dests.get(t.addr)).collect();
    let reuse = Reuse { base, dirty, ats, dests };
    let (counts, findings, _) = traced(design, sim, failed, fibs, &srcs, &tgts, &Mode::Reuse(&reuse), threads);
    let (more, _) = ecmp::check(design, sim, failed, fibs, Some((base, dirty)), threads);
    let findings: Vec<Finding> = findings.into_iter().chain(more).collect();
    (counts, findings)
}

/// A source with its row (its place among the sources of the design
/// without failures) and its start member's number.
type Src<'a> = (usize, Option<usize>, &'a ProbeSource);

/// How flows are traced: every one, with its outcome recorded; or only
/// those a failure may have changed.
enum Mode<'a> {
    Record(&'a Dests),
    Reuse(&'a Reuse<'a>),
}

/// What a failure scenario reuses of the design without failures.
struct Reuse<'a> {
    base: &'a Baseline,
    dirty: &'a Dirty,
    /// Per target (in the scenario's order): the members that deliver it.
    ats: Vec<Vec<usize>>,
    /// Per target: its address as a destination of `base` (or [`NONE`]).
    dests: Vec<u32>,
}

impl Reuse<'_> {
    /// The outcome of the flow from `src` to target `col` (number `j` in
    /// the scenario) when nothing on its way changed.
    fn unchanged(&self, src: &Src, col: usize, j: usize) -> Option<Outcome> {
        let (row, start, _) = *src;
        if row == usize::MAX || col == usize::MAX {
            return None;
        }
        let d = self.dests[j];
        if d == NONE || self.dirty.is(d, start?) {
            return None;
        }
        let k = row * self.base.recorded.targets + col;
        let o = self.base.recorded.outcomes[k];
        if o == 0 {
            return Some(0);
        }
        let answer = self.base.recorded.answers[k];
        if answer == NONE || self.ats[j].iter().any(|m| self.dirty.is(answer, *m)) {
            return None;
        }
        Some(o)
    }
}

/// One thread's rows: per source, its flows' outcomes and answer addresses.
type Rows = Vec<(Vec<Outcome>, Vec<u32>)>;

/// Traces the flows of `srcs` to `tgts` on `threads` threads; the counts,
/// the findings of the broken flows, and (recording) the rows.
#[allow(clippy::too_many_arguments)]
fn traced(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    srcs: &[Src],
    tgts: &[(usize, &Target)],
    mode: &Mode,
    threads: usize,
) -> (TraceCounts, Vec<Finding>, Rows) {
    let fib = |m: &str| fibs.get(m).copied();
    let network = || match mode {
        Mode::Reuse(r) => Network::numbered(design, failed, fib, r.dirty.numbering()),
        Mode::Record(_) => Network::new(design, failed, fib),
    };
    let chunk = srcs.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<(Traced, Rows)> = std::thread::scope(|s| {
        let mut chunks = srcs.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let rest: Vec<_> = chunks.map(|c| s.spawn(|| trace_flows(design, failed, &network(), c, tgts, mode))).collect();
        let mut parts = vec![trace_flows(design, failed, &network(), first, tgts, mode)];
        for h in rest {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    let mut counts = TraceCounts::default();
    let mut broken: BTreeMap<Break, Vec<String>> = BTreeMap::new();
    let mut rows = Vec::new();
    for ((c, b), r) in parts {
        counts.traced += c.traced;
        counts.delivered += c.delivered;
        for (k, flows) in b {
            broken.entry(k).or_default().extend(flows);
        }
        rows.extend(r);
    }
    let findings: Vec<Finding> = broken.into_iter().map(|(b, flows)| finding(design, sim, failed, b, flows)).collect();
    (counts, findings, rows)
}

/// What tracing some flows found: the counts, and the broken branches with the flows they break.
type Traced = (TraceCounts, BTreeMap<Break, Vec<String>>);

/// Traces the flows of `srcs` to `tgts`, in order (see [`Mode`]).
fn trace_flows(
    design: &Design,
    failed: &Scenario,
    net: &Network,
    srcs: &[Src],
    tgts: &[(usize, &Target)],
    mode: &Mode,
) -> (Traced, Rows) {
    let mut counts = TraceCounts::default();
    let mut broken: BTreeMap<Break, Vec<String>> = BTreeMap::new();
    let mut rows: Rows = Vec::new();
    // Where each broken destination should have been taken: asked once per address.
    let mut covers: HashMap<IpAddr, IpNet> = HashMap::new();
    let mut cover = |addr: IpAddr| *covers.entry(addr).or_insert_with(|| covering(design, failed, addr));
    let symmetric = design.topo.symmetric;
    for src in srcs {
        let s = src.2;
        let record = matches!(mode, Mode::Record(_));
        let (mut outcomes, mut answers) = if record {
            (Vec::with_capacity(tgts.len()), Vec::with_capacity(tgts.len()))
        } else {
            (Vec::new(), Vec::new())
        };
        for (j, (col, t)) in tgts.iter().enumerate() {
            let o = trace_flow(net, src, s, (j, *col, t), mode, symmetric, &mut cover, &mut broken);
            let (traced, delivered) = delta::counts(o.0);
            counts.traced += traced;
            counts.delivered += delivered;
            if let Mode::Record(dests) = mode {
                outcomes.push(o.0);
                answers.push(o.1.map_or(NONE, |a| dests.get(a)));
            }
        }
        if record {
            rows.push((outcomes, answers));
        }
    }
    ((counts, broken), rows)
}

/// One flow: its outcome (0: not traced) and the address its answer goes
/// to; with `symmetric`, a flow delivered both ways must pass the same
/// members both ways.
#[allow(clippy::too_many_arguments)]
fn trace_flow(
    net: &Network,
    src: &Src,
    s: &ProbeSource,
    (j, col, t): (usize, usize, &Target),
    mode: &Mode,
    symmetric: bool,
    cover: &mut impl FnMut(IpAddr) -> IpNet,
    broken: &mut BTreeMap<Break, Vec<String>>,
) -> (Outcome, Option<IpAddr>) {
    if s.services_only && !matches!(t.expect, Expect::Service(_)) {
        return (0, None);
    }
    if let Mode::Reuse(r) = mode {
        if let Some(o) = r.unchanged(src, col, j) {
            return (o, None);
        }
    }
    // A pod has its address; a member's own packets leave with the
    // address of the interface they go out by.
    let from = if s.pod {
        s.addrs.iter().copied().find(|a| a.is_ipv4() == t.addr.is_ipv4())
    } else {
        net.source_address(&s.start, t.addr)
    };
    let Some(from) = from else { return (0, None) };
    if from == t.addr || t.label.strip_prefix("pod ") == Some(s.label.as_str()) {
        return (0, None);
    }
    // Named only when it is broken: most flows are not.
    let flow = || format!("{} ({from}) -> {} ({})", s.label, t.label, t.addr);
    let mut ok = true;
    let (mut traced, mut delivered) = (1, 0);
    // Where the flow arrived, for the way back.
    let mut ats: Vec<&str> = Vec::new();
    let ends = net.trace(&s.start, t.addr);
    for end in ends.iter() {
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
                    if symmetric {
                        ats.push(at);
                    }
                    traced += 1;
                    let mut back_ok = true;
                    for b in net.trace(at, from).iter() {
                        if let Some(issue) = broken_end(b, from, cover) {
                            back_ok = false;
                            broken.entry(issue).or_default().push(format!("{}: the answer", flow()));
                        }
                    }
                    if back_ok {
                        delivered += 1;
                    } else {
                        ok = false;
                    }
                    None
                } else {
                    Some(Break::Elsewhere { at: at.clone(), what: what.clone(), prefix: cover(t.addr) })
                }
            }
            other => broken_end(other, t.addr, cover),
        };
        if let Some(issue) = issue {
            ok = false;
            broken.entry(issue).or_default().push(flow());
        }
    }
    if ok && symmetric {
        if let Some(b) = asymmetry(net, &s.start, t.addr, &ats, from) {
            broken.entry(b).or_default().push(flow());
        }
    }
    (delta::outcome(traced, delivered + usize::from(ok)), Some(from))
}

/// Whether the answers to a flow from `start` to `dst`, delivered at
/// `ats`, come back to `from` through other members than the flow went
/// through (every ECMP branch counted both ways).
fn asymmetry(net: &Network, start: &str, dst: IpAddr, ats: &[&str], from: IpAddr) -> Option<Break> {
    let forward = net.through(start, dst);
    let mut back = BTreeSet::new();
    for at in ats {
        back.extend(net.through(at, from).iter().copied());
    }
    if *forward == back {
        return None;
    }
    let names = |only: Vec<usize>| only.into_iter().map(|i| net.name(i).to_string()).collect::<Vec<_>>();
    Some(Break::Asymmetric {
        forward: names(forward.difference(&back).copied().collect()),
        back: names(back.difference(&forward).copied().collect()),
    })
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

/// How many flows or prefixes a finding lists.
pub const SHOWN: usize = 4;

fn flows_detail(mut f: Finding, flows: &[String]) -> Finding {
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
        Break::Asymmetric { forward, back } => {
            let objects = forward.iter().chain(&back).map(|m| member_object(design, m)).collect();
            let summary = match (forward.join(", "), back.join(", ")) {
                (f, b) if b.is_empty() => format!("asymmetric paths: the requests also pass {f}, which the answers do not"),
                (f, b) if f.is_empty() => format!("asymmetric paths: the answers also pass {b}, which the requests do not"),
                (f, b) => format!("asymmetric paths: requests pass {f} where the answers pass {b}"),
            };
            flows_detail(Finding::problem(Class::Asymmetry, objects, summary), &flows)
            .fix("the template declares symmetric paths: make both directions prefer the same members (the same gateway, the same advertisements, or equal paths both ways)")
        }
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
