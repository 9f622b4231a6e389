//! `bgpd verify`: a design template checked offline. The template `bgpd lab`
//! builds is read the same way; every node and bgpd router is configured by
//! the daemon's own code and BIRD and FRR routers are approximated, all run
//! as sans-IO speakers on the simulator's virtual clock; the pods get the
//! addresses the IPAM allocator would give them. Then: static checks of
//! sessions, selectors, services and pools ([`checks`], [`ipam`]); packets
//! traced hop by hop through the resulting forwarding tables ([`reach`]);
//! and, with `--failures N`, the same after each failure of up to N routers,
//! links and nodes. No root, no daemons, no network. See `docs/verify.md`.

pub mod checks;
pub mod delta;
pub mod ecmp;
pub mod explain;
pub mod forward;
pub mod fx;
pub mod ipam;
pub mod model;
pub mod predict;
pub mod reach;
pub mod report;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ipnet::IpNet;

use crate::spec::{Role, TemplateError, Topology};

use delta::{Baseline, Dests, Dirty, Moved, Recorded};
use forward::Fibs;
use model::Design;
use report::{Class, FailureOutcome, Finding, Kind, Report, Severity};
use sim::{Scenario, Simulation};

/// What to verify beyond the design as written.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Fail every combination of up to this many routers, links and nodes.
    pub failures: usize,
    /// Explain a node's route to a prefix: (member, prefix).
    pub explain: Option<(String, IpNet)>,
}

/// At most this many failure scenarios are run (combinations past it are
/// left out, and the report says so).
pub const MAX_SCENARIOS: usize = 500;

/// Reads and verifies a template file.
pub fn verify(path: &Path, opts: &Options) -> Result<Report, TemplateError> {
    let topo = Topology::load(path)?;
    Ok(verify_topology(topo, &path.display().to_string(), opts))
}

/// Verifies a template already read.
pub fn verify_topology(topo: Topology, template: &str, opts: &Options) -> Report {
    let n = opts.failures;
    check(topo, template, opts, |design| every_combination(design, n))
}

/// Verifies a template already read, then the design with each of
/// `scenarios` failed, instead of every combination of up to
/// `opts.failures` failures (a benchmark's every single ToR failure).
pub fn verify_failures(topo: Topology, template: &str, opts: &Options, scenarios: Vec<Scenario>) -> Report {
    check(topo, template, opts, |_| scenarios)
}

fn check(topo: Topology, template: &str, opts: &Options, scenarios: impl FnOnce(&Design) -> Vec<Scenario>) -> Report {
    let design = model::build(topo);
    let mut findings = design.findings.clone();
    findings.extend(checks::run(&design));
    let none = Scenario::none();
    let sim = sim::simulate(&design, &none);
    let dests = Dests::of(&design);
    let (counts, baseline, recorded) = {
        let fibs = fibs(&design, &sim);
        reach::check(&design, &sim, &none, &fibs, &dests, threads())
    };
    findings.extend(sim.findings.iter().cloned());
    let sessions = sim::sessions(&design, &sim, &none);
    findings.extend(sessions_down(&design, &sessions, &findings));
    findings.extend(baseline.iter().cloned());
    let explanation = opts.explain.as_ref().map(|(m, p)| explain_route(&design, &sim, m, *p));
    let converged = sim.converged;
    let scenarios = scenarios(&design);
    let failures = if scenarios.is_empty() {
        // A thousand nodes' RIBs take a second to free: nothing waits for it.
        std::thread::spawn(move || drop(sim));
        Vec::new()
    } else {
        failures(&design, sim, scenarios, &baseline, dests, recorded)
    };
    let t = &design.topo;
    Report {
        template: template.to_string(),
        lab: t.name.clone(),
        members: (t.nodes().count(), t.routers().count(), t.members.len() - t.nodes().count() - t.routers().count()),
        converged,
        sessions,
        traces: counts,
        findings,
        failures,
        explanation,
    }
}

/// Every member's forwarding table in the simulation, by name.
fn fibs<'a>(design: &'a Design, sim: &'a Simulation) -> Fibs<'a> {
    design.members.keys().filter_map(|m| Some((m.as_str(), sim.fabric.fib_ref(m)?))).collect()
}

/// How many threads tracing flows use: the machine's cores, at most 8.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Sessions that did not come up and that no static finding explains.
fn sessions_down(design: &Design, sessions: &[report::SessionState], known: &[Finding]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in sessions.iter().filter(|s| !s.established) {
        let Some(m) = design.members.get(&s.member) else { continue };
        let Some(p) = m.speaker.as_ref().and_then(|sp| sp.peers.iter().find(|p| p.name == s.peer)) else { continue };
        let explained = known
            .iter()
            .filter(|f| f.class == Class::Session)
            .any(|f| f.names(p.object.kind, &p.object.name) && (f.names(m.kind, &m.name) || p.object.kind == m.kind));
        if explained {
            continue;
        }
        out.push(
            Finding::problem(
                Class::Session,
                vec![p.object.clone(), m.object()],
                format!(
                    "{}'s session {} to {} did not come up: {}",
                    s.member,
                    s.peer,
                    s.remote,
                    s.failure.clone().unwrap_or_default()
                ),
            )
            .fix(format!("check both ends of the session ({})", p.object)),
        );
    }
    out
}

/// The names of what can fail: routers, segments, nodes.
fn failure_points(design: &Design) -> Vec<(bool, String)> {
    let t = &design.topo;
    let routers = t.routers().map(|r| (false, r.name.clone()));
    let segments = t.segments.iter().map(|s| (true, s.name.clone()));
    let nodes = t.members.values().filter(|m| matches!(m.role, Role::Node { .. })).map(|m| (false, m.name.clone()));
    routers.chain(segments).chain(nodes).collect()
}

/// Combinations of `k` out of `n` indices, in order, at most `limit`.
fn combinations(n: usize, k: usize, limit: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    if k == 0 || k > n {
        return out;
    }
    loop {
        if out.len() >= limit {
            return out;
        }
        out.push(idx.clone());
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else { return out };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

/// Every combination of up to `n` failure points, at most [`MAX_SCENARIOS`].
fn every_combination(design: &Design, n: usize) -> Vec<Scenario> {
    let points = failure_points(design);
    let mut out = Vec::new();
    for k in 1..=n {
        let left = MAX_SCENARIOS.saturating_sub(out.len());
        for combo in combinations(points.len(), k, left) {
            let mut failed = Scenario::none();
            for i in combo {
                let (segment, name) = &points[i];
                if *segment {
                    failed.segments.insert(name.clone());
                } else {
                    failed.members.insert(name.clone());
                }
            }
            out.push(failed);
        }
    }
    out
}

/// Every member's forwarding table, as the simulation has it now.
fn snapshot(design: &Design, sim: &Simulation) -> BTreeMap<String, forward::Fib> {
    design.members.keys().map(|m| (m.clone(), sim.fabric.fib(m))).collect()
}

/// What each failure scenario breaks that the design without failures did
/// not. Each scenario starts from the converged design `sim`: what it
/// names fails, the fabric converges again, the flows that the failure may
/// have changed are traced again ([`delta`]), and what failed comes back
/// (a fresh start) before the next one. Should the fabric not come back to
/// the tables it had, it is simulated again from the start, so that each
/// scenario is the design plus its failures.
fn failures(
    design: &Design,
    mut sim: Simulation,
    scenarios: Vec<Scenario>,
    baseline: &[Finding],
    dests: Dests,
    recorded: Recorded,
) -> Vec<FailureOutcome> {
    let known: BTreeSet<(Class, String)> = baseline.iter().map(|f| (f.class, f.summary.clone())).collect();
    let base = Baseline::new(design, snapshot(design, &sim), dests, recorded, threads());
    let mut moved = Moved::start(design, &mut sim);
    let mut out = Vec::with_capacity(scenarios.len());
    for failed in &scenarios {
        let converged = sim.fail(failed);
        moved.take(design, &mut sim);
        out.push(failure(design, &sim, failed, &base, &moved, &known, converged));
        let restored = sim.restore(design, failed);
        if !moved.settle(design, &mut sim, &base) || !restored {
            sim = sim::simulate(design, &Scenario::none());
            moved = Moved::start(design, &mut sim);
            // Simulated again from the start: deterministic, yet compared;
            // what differs stays counted as moved.
            moved.forget();
            moved.settle(design, &mut sim, &base);
        }
    }
    std::thread::spawn(move || drop(sim));
    out
}

/// One failure scenario, simulated: its traces, and what they find beyond `known`.
fn failure(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    base: &Baseline,
    moved: &Moved,
    known: &BTreeSet<(Class, String)>,
    converged: bool,
) -> FailureOutcome {
    let fibs = fibs(design, sim);
    let dirty = Dirty::new(design, base, failed, &fibs, moved);
    let (counts, findings) = reach::check_changed(design, sim, failed, &fibs, base, &dirty, threads());
    let fresh: Vec<Finding> = findings.into_iter().filter(|f| !known.contains(&(f.class, f.summary.clone()))).collect();
    let mut findings = Vec::new();
    let cut = counts.traced - counts.delivered;
    if fresh.iter().any(|f| f.severity == Severity::Problem) {
        findings.push(
            Finding::problem(
                Class::Partition,
                failed.objects(design),
                format!(
                    "the failure of {} cuts {cut} of {} traced flows",
                    failed.objects(design).iter().map(ToString::to_string).collect::<Vec<_>>().join(" + "),
                    counts.traced
                ),
            )
            .fix("add redundancy around it: a second uplink, ToR or endpoint"),
        );
    }
    findings.extend(fresh);
    FailureOutcome { failed: failed.objects(design), converged, findings }
}

/// `--explain MEMBER PREFIX`: the paths a member has for a prefix and which
/// it uses, or why it has none.
fn explain_route(design: &Design, sim: &Simulation, member: &str, prefix: IpNet) -> Vec<String> {
    let prefix = prefix.trunc();
    let mut out = Vec::new();
    if let Some(m) = design.members.get(member) {
        for (net, local) in &m.local {
            if net.contains(&prefix) {
                out.push(format!("{member} handles {net} itself: {local:?}"));
            }
        }
        if let Some(sp) = &m.speaker {
            for (p, _, cause) in sp.originations.iter().filter(|(p, _, _)| *p == prefix) {
                out.push(format!("{member} originates {p}: {cause}"));
            }
        }
    }
    let routes = sim.fabric.speaker(member).map(|s| s.rib().routes(Some(prefix))).unwrap_or_default();
    // The prefix itself, else the RIB's prefixes inside or around it.
    let exact: Vec<&(IpNet, Vec<bgpd_proto::rib::core::PathView>)> =
        routes.iter().filter(|(p, _)| *p == prefix).collect();
    let chosen = if exact.is_empty() { routes.iter().collect() } else { exact };
    let fib = sim.fabric.fib(member);
    for (net, paths) in &chosen {
        out.push(format!("{net}:"));
        for v in paths.iter().filter(|v| v.peer.is_some()) {
            let state = if v.best {
                "best".to_string()
            } else if v.used {
                "used (ECMP)".to_string()
            } else {
                format!("not used: {}", v.reason.map_or("lost", |r| r.describe()))
            };
            let nh = v.attrs.next_hop.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            out.push(format!(
                "  path from {}: AS_PATH {}, next hop {nh}: {state}",
                v.peer.as_deref().unwrap_or("?"),
                v.attrs.as_path()
            ));
        }
        match fib.get(net) {
            Some(hops) => {
                let hops: Vec<String> = hops.iter().map(ToString::to_string).collect();
                out.push(format!("  in {member}'s forwarding table via {}", hops.join(", ")));
            }
            None if paths.iter().any(|v| v.peer.is_none()) => out.push(format!("  originated by {member}")),
            None => out.push(format!("  not in {member}'s forwarding table")),
        }
    }
    if chosen.is_empty() {
        // The route that should cover it: what some member originates.
        let prefix = if prefix.prefix_len() == prefix.max_prefix_len() {
            reach::covering(design, &Scenario::none(), prefix.addr())
        } else {
            prefix
        };
        out.push(format!("{member} has no path to {prefix}:"));
        out.extend(
            explain::missing(design, sim, &Scenario::none(), member, prefix).into_iter().map(|l| format!("  {l}")),
        );
    }
    if out.is_empty() {
        out.push(format!("{member} is not a member of the lab"));
    }
    out
}

/// Whether `report` names an object of `kind` called `name` in a finding of `class`.
pub fn found(report: &Report, class: Class, kind: Kind, name: &str) -> bool {
    report.findings.iter().any(|f| f.class == class && f.severity == Severity::Problem && f.names(kind, name))
}
