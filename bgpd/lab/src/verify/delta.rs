//! Failure scenarios traced by difference. A design of a thousand nodes
//! traces millions of flows; a single failure changes where a few of them
//! go. So the design without failures is traced once, each flow's outcome
//! kept ([`Recorded`]), and for every destination which member forwards to
//! which ([`Baseline`]). A failure changes some members outright (down, or
//! with an interface on a failed segment) and some members' routes; a
//! member's packets for a destination can end differently only if the
//! path they took passes a member that changed for that destination
//! ([`Dirty`]). Only those flows are traced again; every other flow ends
//! as it did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ecmp;
use super::forward::{Fib, Fibs, Network, Numbering};
use super::fx::FxMap;
use super::model::Design;
use super::sim::{Scenario, Simulation};

/// No destination: a flow with no source address.
pub const NONE: u32 = u32::MAX;

/// A flow's contribution to the counts: 0 when it is not traced (no
/// source address, or sent to itself), else the pairs traced (the flow and
/// each answer; low byte) and the pairs of those that arrived (high byte).
pub type Outcome = u16;

/// An outcome: `traced` pairs (at least 1), `delivered` of them arrived.
pub fn outcome(traced: usize, delivered: usize) -> Outcome {
    (traced.min(255) as u16) | (delivered.min(255) as u16) << 8
}

/// The pairs an outcome traced, and those that arrived.
pub fn counts(o: Outcome) -> (usize, usize) {
    (usize::from(o & 0xff), usize::from(o >> 8))
}

/// Every address a flow can be sent to or answered at, numbered: the
/// members' interface addresses, the pods' addresses and the services'.
#[derive(Debug, Default)]
pub struct Dests {
    index: HashMap<IpAddr, u32>,
    addrs: Vec<IpAddr>,
}

impl Dests {
    /// The addresses of `design`.
    pub fn of(design: &Design) -> Dests {
        let mut d = Dests::default();
        let members = design.members.values().flat_map(|m| m.interfaces.iter().map(|(_, a)| a.addr()));
        let pods = design.pods.iter().flat_map(|p| p.addresses.iter().copied());
        let services = design.topo.services.iter().flat_map(|s| s.addresses.iter().copied());
        for a in members.chain(pods).chain(services) {
            d.index.entry(a).or_insert_with(|| {
                d.addrs.push(a);
                (d.addrs.len() - 1) as u32
            });
        }
        d
    }

    /// The number of an address, [`NONE`] when it is not one of them.
    pub fn get(&self, a: IpAddr) -> u32 {
        self.index.get(&a).copied().unwrap_or(NONE)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// Each flow of the design without failures as tracing left it, by
/// (source, target) in the order the tracer lists them: its outcome, and
/// the address its answer went to (a [`Dests`] number).
#[derive(Debug, Default)]
pub struct Recorded {
    /// Targets per source (the row length).
    pub targets: usize,
    /// Outcomes, row by row.
    pub outcomes: Vec<Outcome>,
    /// Answer addresses, row by row.
    pub answers: Vec<u32>,
    /// What each node weighed for ECMP, by member number.
    pub ecmp: Vec<Option<ecmp::Node>>,
}

/// Who forwards to whom for one destination in the design without
/// failures, reversed: the members whose next hop is member `m` are
/// `from[offsets[m]..offsets[m + 1]]`.
#[derive(Debug, Default)]
struct Reverse {
    offsets: Vec<u32>,
    from: Vec<u32>,
}

/// What the failure scenarios compare with: the design without failures.
pub struct Baseline {
    /// Every member's forwarding table.
    pub fibs: BTreeMap<String, Fib>,
    /// The destinations.
    pub dests: Dests,
    /// Each flow's outcome.
    pub recorded: Recorded,
    /// Per destination, who forwards to whom.
    reverse: Vec<Reverse>,
    /// The members' numbers (their order in the design, as [`Network`] numbers them).
    pub members: HashMap<String, usize>,
    /// The prefixes of `fibs`, numbered.
    pub numbering: Numbering,
}

impl Baseline {
    /// The design without failures: its forwarding tables `fibs` and the
    /// flows traced through them. Works out who forwards to whom for every
    /// destination, on `threads` threads.
    pub fn new(
        design: &Design,
        fibs: BTreeMap<String, Fib>,
        dests: Dests,
        recorded: Recorded,
        threads: usize,
    ) -> Baseline {
        let none = Scenario::none();
        let n = design.members.len();
        let chunk = dests.len().div_ceil(threads.max(1)).max(1);
        let reverse: Vec<Reverse> = std::thread::scope(|s| {
            let fibs = &fibs;
            let none = &none;
            let handles: Vec<_> = dests
                .addrs
                .chunks(chunk)
                .map(|addrs| {
                    s.spawn(move || {
                        let net = Network::new(design, none, |m| fibs.get(m));
                        addrs.iter().map(|d| reverse(&net, n, *d)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        let members = design.members.keys().enumerate().map(|(i, m)| (m.clone(), i)).collect();
        let numbering = Numbering::of(fibs.values().flat_map(|f| f.keys()));
        Baseline { fibs, dests, recorded, reverse, members, numbering }
    }
}

/// Who forwards to whom for `dst`, reversed.
fn reverse(net: &Network, n: usize, dst: IpAddr) -> Reverse {
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for i in 0..n {
        for next in net.next_members(i, dst) {
            edges.push((next as u32, i as u32));
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let mut offsets = Vec::with_capacity(n + 1);
    let mut at = 0;
    for m in 0..=n as u32 {
        while at < edges.len() && edges[at].0 < m {
            at += 1;
        }
        offsets.push(at as u32);
    }
    Reverse { offsets, from: edges.into_iter().map(|(_, f)| f).collect() }
}

/// The prefixes whose routes differ between two tables, walking both in
/// order.
fn differences(a: &Fib, b: &Fib) -> Vec<IpNet> {
    let mut out = Vec::new();
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => return out,
            (Some((p, _)), None) => {
                out.push(**p);
                x.next();
            }
            (None, Some((q, _))) => {
                out.push(**q);
                y.next();
            }
            (Some((p, h)), Some((q, k))) => match p.cmp(q) {
                std::cmp::Ordering::Less => {
                    out.push(**p);
                    x.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(**q);
                    y.next();
                }
                std::cmp::Ordering::Equal => {
                    if h != k {
                        out.push(**p);
                    }
                    x.next();
                    y.next();
                }
            },
        }
    }
}

/// For one failure scenario: per destination, the members whose packets
/// for it may end differently than without failures.
pub struct Dirty {
    sets: Vec<Option<Vec<u64>>>,
    /// Members that changed outright: down, or on a failed segment.
    outright: Vec<bool>,
    /// Prefix → the members whose route for it changed.
    routes: FxMap<IpNet, Vec<usize>>,
    /// Member → the prefixes of its routes that changed.
    changed: Vec<Vec<IpNet>>,
    /// The lengths of those prefixes: IPv4, IPv6.
    lengths: [Vec<u8>; 2],
    /// The prefixes of the tables now: the design's and those added.
    numbering: Numbering,
    /// Member → the prefixes whose paths in its RIB may differ from the
    /// design's (`None`: not known, any may).
    paths: Vec<Option<Vec<IpNet>>>,
}

impl Dirty {
    /// The members that changed for each destination of `base`, with
    /// `failed` down and `fibs` the forwarding tables now; and the
    /// members that reach them on their way there.     /// `moved` says which tables can differ from the design's at all.
    pub fn new(design: &Design, base: &Baseline, failed: &Scenario, fibs: &Fibs, moved: &Moved) -> Dirty {
        let n = design.members.len();
        let mut outright: Vec<usize> = Vec::new();
        let mut whole = vec![false; n];
        // Prefix → the members whose route for it changed.
        let mut routes: FxMap<IpNet, Vec<usize>> = FxMap::default();
        let mut changed: Vec<Vec<IpNet>> = vec![Vec::new(); n];
        let empty = Fib::new();
        for (i, m) in design.members.values().enumerate() {
            if failed.down(&m.name) || m.interfaces.iter().any(|(s, _)| failed.segments.contains(s)) {
                outright.push(i);
                whole[i] = true;
                continue;
            }
            let before = base.fibs.get(&m.name).unwrap_or(&empty);
            let now = fibs.get(m.name.as_str()).copied().unwrap_or(&empty);
            changed[i] = match moved.fib_moved(i) {
                Some(set) => set.iter().filter(|p| before.get(p) != now.get(p)).copied().collect(),
                None if before == now => continue,
                None => differences(before, now),
            };
            for p in &changed[i] {
                routes.entry(*p).or_default().push(i);
            }
        }
        let mut lengths: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for p in routes.keys() {
            let l = &mut lengths[usize::from(p.addr().is_ipv6())];
            if !l.contains(&p.prefix_len()) {
                l.push(p.prefix_len());
            }
        }
        let words = n.div_ceil(64);
        let sets = base
            .dests
            .addrs
            .iter()
            .zip(&base.reverse)
            .map(|(d, rev)| {
                let mut start = outright.clone();
                for len in &lengths[usize::from(d.is_ipv6())] {
                    let Ok(p) = IpNet::new(*d, *len) else { continue };
                    if let Some(ms) = routes.get(&p.trunc()) {
                        start.extend(ms);
                    }
                }
                if start.is_empty() {
                    return None;
                }
                let mut set = vec![0u64; words];
                while let Some(m) = start.pop() {
                    if set[m / 64] & (1 << (m % 64)) != 0 {
                        continue;
                    }
                    set[m / 64] |= 1 << (m % 64);
                    let (a, b) = (rev.offsets[m] as usize, rev.offsets[m + 1] as usize);
                    start.extend(rev.from[a..b].iter().map(|f| *f as usize));
                }
                Some(set)
            })
            .collect();
        let mut numbering = base.numbering.clone();
        numbering.extend(routes.keys());
        let paths = moved.paths.iter().map(|p| p.as_ref().map(|set| set.iter().copied().collect())).collect();
        Dirty { sets, outright: whole, routes, changed, lengths, numbering, paths }
    }

    /// The prefixes of the forwarding tables now, numbered.
    pub fn numbering(&self) -> &Numbering {
        &self.numbering
    }

    /// The prefixes of member `m`'s routes that changed, sorted.
    pub fn routes_changed(&self, m: usize) -> &[IpNet] {
        self.changed.get(m).map_or(&[], Vec::as_slice)
    }

    /// The prefixes whose paths in member `m`'s RIB may differ from the
    /// design's; `None` when any may.
    pub fn paths_moved(&self, m: usize) -> Option<&[IpNet]> {
        self.paths.get(m)?.as_deref()
    }

    /// Whether member `m` changed outright (down, or on a failed segment).
    pub fn changed_outright(&self, m: usize) -> bool {
        self.outright.get(m).copied().unwrap_or(true)
    }

    /// Whether one of member `m`'s routes covering `addr` changed.
    pub fn route_changed(&self, m: usize, addr: IpAddr) -> bool {
        let Some(mine) = self.changed.get(m) else { return true };
        if mine.len() <= 16 {
            return mine.iter().any(|p| p.contains(&addr));
        }
        self.lengths[usize::from(addr.is_ipv6())].iter().any(|len| {
            IpNet::new(addr, *len).is_ok_and(|p| self.routes.get(&p.trunc()).is_some_and(|ms| ms.contains(&m)))
        })
    }

    /// Whether member `m`'s packets for destination `d` may end
    /// differently (an unknown destination may).
    pub fn is(&self, d: u32, m: usize) -> bool {
        match self.sets.get(d as usize) {
            None => true,
            Some(None) => false,
            Some(Some(set)) => set[m / 64] & (1 << (m % 64)) != 0,
        }
    }
}

/// What moved in the running fabric since the design without failures,
/// kept from one failure scenario to the next: which prefixes of each
/// forwarding table and of each RIB may differ from the design's. A
/// thousand nodes hold a million routes; a failure moves a few of them.
pub struct Moved {
    /// Per member: the prefixes of its forwarding table that may differ
    /// from the design's (`None`: any may, as after it was cleared).
    fibs: Vec<Option<BTreeSet<IpNet>>>,
    /// Per member: the prefixes whose paths in its RIB may differ from the
    /// design's (`None`: any may, as for a speaker started afresh).
    paths: Vec<Option<BTreeSet<IpNet>>>,
}

impl Moved {
    /// Starts watching `sim`, which holds the design without failures:
    /// its forwarding tables and RIBs keep a journal of changes from now on.
    pub fn start(design: &Design, sim: &mut Simulation) -> Moved {
        sim.fabric.track_fib_changes();
        for m in design.members.keys() {
            if let Some(sp) = sim.fabric.speaker_mut(m) {
                sp.rib_mut().track_changes(true);
            }
        }
        // Nothing moved yet: what they hold is the design's.
        let empty = || design.members.keys().map(|_| Some(BTreeSet::new())).collect();
        Moved { fibs: empty(), paths: empty() }
    }

    /// Starts journals where there are none (a speaker started afresh has
    /// none: what it holds is not known to be the design's).
    fn track(&mut self, design: &Design, sim: &mut Simulation) {
        for (i, m) in design.members.keys().enumerate() {
            if let Some(sp) = sim.fabric.speaker_mut(m) {
                if !sp.rib().tracks_changes() {
                    sp.rib_mut().track_changes(true);
                    self.paths[i] = None;
                }
            }
        }
    }

    /// Reads what moved since it last looked (after a failure converged).
    pub fn take(&mut self, design: &Design, sim: &mut Simulation) {
        for (i, m) in design.members.keys().enumerate() {
            match sim.fabric.take_fib_changes(m) {
                Some(changed) => {
                    if let Some(set) = &mut self.fibs[i] {
                        set.extend(changed);
                    }
                }
                None => self.fibs[i] = None,
            }
            let Some(sp) = sim.fabric.speaker_mut(m) else { continue };
            let changed = sp.rib_mut().take_changes();
            if let Some(set) = &mut self.paths[i] {
                set.extend(changed);
            }
        }
    }

    /// The prefixes of member `m`'s forwarding table that may differ from
    /// the design's, as last read; `None` when any may.
    pub fn fib_moved(&self, m: usize) -> Option<&BTreeSet<IpNet>> {
        self.fibs.get(m)?.as_ref()
    }

    /// Counts everything as moved: the next [`Moved::settle`] compares
    /// every table and every path with the design's.
    pub fn forget(&mut self) {
        self.fibs.iter_mut().for_each(|s| *s = None);
        self.paths.iter_mut().for_each(|p| *p = None);
    }

    /// After what failed came back: reads what moved, and compares what
    /// did with the design (`base`): the routes and paths back to the
    /// design's are no longer counted as moved. Whether every forwarding
    /// table is the design's again.
    pub fn settle(&mut self, design: &Design, sim: &mut Simulation, base: &Baseline) -> bool {
        self.track(design, sim);
        self.take(design, sim);
        let empty = Fib::new();
        for (i, m) in design.members.keys().enumerate() {
            let before = base.fibs.get(m).unwrap_or(&empty);
            let now = sim.fabric.fib_ref(m).unwrap_or(&empty);
            self.fibs[i] = Some(match self.fibs[i].take() {
                Some(set) => set.into_iter().filter(|p| before.get(p) != now.get(p)).collect(),
                None => differences(before, now).into_iter().collect(),
            });
            let recorded = base.recorded.ecmp.get(i).and_then(Option::as_ref);
            let (Some(node), Some(sp)) = (recorded, sim.fabric.speaker(m)) else {
                // Nothing of its paths is compared: only what a node weighed is.
                self.paths[i] = Some(BTreeSet::new());
                continue;
            };
            self.paths[i] = Some(match self.paths[i].take() {
                Some(set) => set.into_iter().filter(|p| node.differs(sp.rib(), *p)).collect(),
                None => node.differing(sp.rib()),
            });
        }
        self.fibs.iter().all(|f| f.as_ref().is_some_and(BTreeSet::is_empty))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;
    use crate::spec::Topology;
    use crate::verify::report::Finding;
    use crate::verify::{failure_points, fibs, model, reach, sim, snapshot};

    /// The shipped templates and the broken copies.
    fn templates() -> Vec<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates");
        let mut out = Vec::new();
        for dir in [root.clone(), root.join("broken")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "yaml") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn tracing_the_changed_flows_finds_what_tracing_every_flow_finds() {
        let (mut scenarios, mut reused, mut sparse, mut total) = (0, 0, 0, 0);
        for path in templates() {
            let design = model::build(Topology::load(&path).unwrap());
            let none = Scenario::none();
            let mut s = sim::simulate(&design, &none);
            let dests = Dests::of(&design);
            let (_, base_findings, recorded) = reach::check(&design, &s, &none, &fibs(&design, &s), &dests, 2);
            let base = Baseline::new(&design, snapshot(&design, &s), dests, recorded, 2);
            let mut moved = Moved::start(&design, &mut s);
            let known: BTreeSet<String> = base_findings.iter().map(|f| f.summary.clone()).collect();
            let fresh =
                |v: Vec<Finding>| -> Vec<Finding> { v.into_iter().filter(|f| !known.contains(&f.summary)).collect() };
            for (segment, name) in failure_points(&design) {
                let mut failed = Scenario::none();
                if segment {
                    failed.segments.insert(name.clone());
                } else {
                    failed.members.insert(name.clone());
                }
                let what = format!("{}, {name} failed", path.display());
                s.fail(&failed);
                moved.take(&design, &mut s);
                let f = fibs(&design, &s);
                let (all_counts, all_findings, _) = reach::check(&design, &s, &failed, &f, &base.dests, 2);
                let dirty = Dirty::new(&design, &base, &failed, &f, &moved);
                let n = design.members.len();
                // Members whose paths are known to be mostly the design's.
                sparse += (0..n).filter(|m| dirty.paths_moved(*m).is_some_and(|p| p.len() < 4)).count();
                total += n;
                let (counts, findings) = reach::check_changed(&design, &s, &failed, &f, &base, &dirty, 2);
                assert_eq!(counts, all_counts, "{what}");
                assert_eq!(fresh(findings), fresh(all_findings), "{what}");
                scenarios += 1;
                reused += usize::from(dirty.sets.iter().any(|d| {
                    d.as_ref().is_none_or(|set| set.iter().map(|w| w.count_ones() as usize).sum::<usize>() < n)
                }));
                drop(f);
                assert!(s.restore(&design, &failed), "{what}: converges again");
                assert!(moved.settle(&design, &mut s, &base), "{what}: the tables are back");
                assert!(snapshot(&design, &s) == base.fibs, "{what}: the tables are back, compared in full");
            }
        }
        assert!(scenarios > 50, "{scenarios} scenarios");
        assert!(reused * 2 > scenarios, "most scenarios leave some flows alone: {reused} of {scenarios}");
        assert!(sparse * 3 > total, "many members' paths are known not to have moved: {sparse} of {total}");
    }
}
