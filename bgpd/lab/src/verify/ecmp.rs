//! Redundancy the design has but does not use: nodes with sessions up to
//! two or more neighbours that use fewer of them for a prefix than offer a
//! path to it (a dual-homed node using one ToR).
//!
//! A thousand nodes with a thousand prefixes each are a million prefixes
//! to weigh, after every failure too. So the design without failures keeps
//! what it weighed per node and prefix ([`Node`]); a failure scenario
//! weighs again only a node whose sessions changed, and of the others only
//! the prefixes whose paths changed or whose forwarding changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use bgpd_proto::rib::core::Rib;
use bgpd_proto::rib::table::Path;
use ipnet::IpNet;

use super::delta::{Baseline, Dirty};
use super::forward::{Fibs, Network};
use super::fx::Fx;
use super::model::Design;
use super::reach::SHOWN;
use super::report::{Class, Finding, Kind};
use super::sim::{Scenario, Simulation};

/// (next hops used, neighbours offering) when a node uses fewer next hops
/// for a prefix than neighbours offer a path.
type Shortfall = Option<(usize, usize)>;

/// What a node weighed in the design without failures.
#[derive(Debug, Default)]
pub struct Node {
    /// Its sessions up: peer name → the neighbour member.
    up: BTreeMap<String, String>,
    /// Whether it weighed its prefixes (it has two neighbours or more).
    weighed: bool,
    /// Per prefix, in address order ([`order`]): a hash of the paths
    /// weighed, and (next hops used, neighbours offering) when it uses
    /// fewer than offer.
    prefixes: Vec<(IpNet, u64, Shortfall)>,
    /// The prefixes it uses fewer next hops for than offered: (prefix,
    /// used, offered), in prefix order.
    narrow: Vec<(IpNet, usize, usize)>,
    /// Every next hop of its paths, sorted.
    next_hops: Vec<IpAddr>,
}

/// The order of [`Node::prefixes`]: by address, then length, so that
/// the prefixes whose address a route covers are next to each other.
fn order(p: &IpNet) -> (IpAddr, u8) {
    (p.addr(), p.prefix_len())
}

impl Node {
    /// What was weighed for `prefix`.
    fn get(&self, prefix: &IpNet) -> Option<(u64, Shortfall)> {
        let i = self.prefixes.binary_search_by_key(&order(prefix), |(p, _, _)| order(p)).ok()?;
        let (_, h, v) = self.prefixes[i];
        Some((h, v))
    }

    /// The prefixes weighed whose address `route` covers.
    fn covered(&self, route: &IpNet) -> impl Iterator<Item = IpNet> + '_ {
        let first = self.prefixes.partition_point(|(p, _, _)| order(p) < (route.network(), 0));
        let last = self.prefixes.partition_point(|(p, _, _)| order(p) <= (route.broadcast(), u8::MAX));
        self.prefixes[first..last.max(first)].iter().map(|(p, _, _)| *p)
    }

    /// Whether the paths to `prefix` in `rib` differ from those weighed
    /// in what the verdict depends on (always false when nothing was).
    pub fn differs(&self, rib: &Rib, prefix: IpNet) -> bool {
        self.weighed && entry(rib.paths_of(prefix)) != self.get(&prefix).map(|(h, _)| h)
    }

    /// The prefixes whose paths in `rib` differ from those weighed.
    pub fn differing(&self, rib: &Rib) -> BTreeSet<IpNet> {
        if !self.weighed {
            return BTreeSet::new();
        }
        let mut out: BTreeSet<IpNet> = rib.paths().filter(|(p, _)| self.differs(rib, *p)).map(|(p, _)| p).collect();
        out.extend(self.prefixes.iter().map(|(p, _, _)| *p).filter(|p| rib.paths_of(*p).is_empty()));
        out
    }
}

/// The findings, and (without `reuse`) what each node weighed, by member
/// number. With `reuse` (a failure scenario and the design without
/// failures), a node weighs again only what changed.
pub fn check(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    reuse: Option<(&Baseline, &Dirty)>,
    threads: usize,
) -> (Vec<Finding>, Vec<Option<Node>>) {
    let n = design.members.len();
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let parts: Vec<(Vec<Finding>, Vec<Option<Node>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|first| s.spawn(move || weigh(design, sim, failed, fibs, reuse, first..(first + chunk).min(n))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let mut out = (Vec::new(), Vec::with_capacity(n));
    for (f, nodes) in parts {
        out.0.extend(f);
        out.1.extend(nodes);
    }
    out
}

/// [`check`] for the members numbered `range`, on one thread.
fn weigh(
    design: &Design,
    sim: &Simulation,
    failed: &Scenario,
    fibs: &Fibs,
    reuse: Option<(&Baseline, &Dirty)>,
    range: std::ops::Range<usize>,
) -> (Vec<Finding>, Vec<Option<Node>>) {
    let fib = |m: &str| fibs.get(m).copied();
    let net = &match reuse {
        Some((_, dirty)) => Network::numbered(design, failed, fib, dirty.numbering()),
        None => Network::new(design, failed, fib),
    };
    // Each address's member: the first that has it.
    let mut owners: HashMap<IpAddr, &str> = HashMap::new();
    for n in design.members.values() {
        for (_, a) in &n.interfaces {
            owners.entry(a.addr()).or_insert(&n.name);
        }
    }
    // The addresses of the members that failed: next hops that lead nowhere now.
    let gone: BTreeSet<IpAddr> = failed
        .members
        .iter()
        .filter_map(|m| design.members.get(m))
        .flat_map(|m| m.interfaces.iter().map(|(_, a)| a.addr()))
        .collect();
    let mut out = Vec::new();
    let mut nodes = Vec::new();
    for (i, m) in design.members.values().enumerate().skip(range.start).take(range.len()) {
        let weigh = m.kind == Kind::Node && !failed.down(&m.name);
        let (Some(sp), Some(speaker), true) = (&m.speaker, sim.fabric.speaker(&m.name), weigh) else {
            nodes.push(None);
            continue;
        };
        let up: BTreeMap<String, String> = sim
            .fabric
            .sessions(&m.name)
            .iter()
            .filter(|s| s.established)
            .filter_map(|s| {
                let p = sp.peers.iter().find(|p| p.name == s.peer)?;
                Some((p.name.clone(), owners.get(&p.remote)?.to_string()))
            })
            .collect();
        // What the design without failures weighed, when it still holds.
        let before = reuse.and_then(|(base, dirty)| {
            let node = base.recorded.ecmp.get(i)?.as_ref()?;
            (!dirty.changed_outright(i) && node.up == up).then_some((node, dirty))
        });
        let neighbours: BTreeSet<&str> = up.values().map(String::as_str).collect();
        if neighbours.len() < 2 {
            nodes.push(reuse.is_none().then(|| Node { up, ..Node::default() }));
            continue;
        }
        let rib = speaker.rib();
        // Where each next hop leads, asked once.
        let mut leads: HashMap<IpAddr, Option<&str>> = HashMap::new();
        // (next hops used, neighbours offering) when fewer are used.
        let mut judge = |prefix: IpNet, paths: &[Path]| {
            // Distinct next hops offered by neighbours with a session up, by
            // the member they lead to: two reflectors passing on one node's
            // route offer one next hop, and so do two ToRs passing on a rack
            // mate's route with its addresses on both their segments as next
            // hops (third-party next hops), which the node uses both of.
            let offered: BTreeSet<Result<&str, IpAddr>> = paths
                .iter()
                .filter(|p| rib.peer_name(p.peer).is_some_and(|n| up.contains_key(n)))
                .filter_map(|p| p.attrs.next_hop)
                .map(|nh| leads.entry(nh).or_insert_with(|| net.neighbour_of(&m.name, nh)).ok_or(nh))
                .collect();
            let width = if offered.len() < 2 { usize::MAX } else { net.width(&m.name, prefix.addr()) };
            (width < offered.len()).then_some((width, offered.len()))
        };
        // Only the prefixes whose paths moved or whose route changed, when
        // its sessions and next hops are the design's.
        let sparse = before.and_then(|(node, dirty)| {
            let moved = dirty.paths_moved(i)?;
            if !node.weighed || node.next_hops.iter().any(|nh| gone.contains(nh)) {
                return None;
            }
            let routes = dirty.routes_changed(i);
            let mut again: Vec<IpNet> = moved.to_vec();
            again.extend(routes.iter().flat_map(|r| node.covered(r)));
            again.sort_unstable_by_key(order);
            again.dedup();
            Some((node, again))
        });
        let mut narrow: Vec<(IpNet, usize, usize)> = Vec::new();
        if let Some((node, again)) = &sparse {
            let is_again = |p: &IpNet| again.binary_search_by_key(&order(p), order).is_ok();
            narrow.extend(node.narrow.iter().filter(|(p, _, _)| !is_again(p)));
            for prefix in again {
                let paths = rib.paths_of(*prefix);
                if entry(paths).is_some() {
                    narrow.extend(judge(*prefix, paths).map(|(w, o)| (*prefix, w, o)));
                }
            }
        } else {
            let mut node = Node { weighed: true, ..Node::default() };
            let mut next_hops = BTreeSet::new();
            for (prefix, paths) in rib.paths() {
                next_hops.extend(paths.iter().filter_map(|p| p.attrs.next_hop));
                let Some(hash) = entry(paths) else { continue };
                let kept = before.and_then(|(b, dirty)| {
                    let (h, verdict) = b.get(&prefix)?;
                    let same = h == hash
                        && !dirty.route_changed(i, prefix.addr())
                        && !paths.iter().any(|p| p.attrs.next_hop.is_some_and(|nh| gone.contains(&nh)));
                    same.then_some(verdict)
                });
                let verdict = kept.unwrap_or_else(|| judge(prefix, paths));
                if let Some((width, offered)) = verdict {
                    narrow.push((prefix, width, offered));
                }
                if reuse.is_none() {
                    node.prefixes.push((prefix, hash, verdict));
                }
            }
            narrow.sort_unstable();
            if reuse.is_none() {
                node.prefixes.sort_unstable_by_key(|(p, _, _)| order(p));
                node.narrow = narrow.clone();
                node.next_hops = next_hops.into_iter().collect();
                node.up = up;
                nodes.push(Some(node));
            } else {
                nodes.push(None);
            }
        }
        if sparse.is_some() {
            nodes.push(None);
        }
        if !narrow.is_empty() {
            narrow.sort_unstable();
            out.push(finding(design, sim, &m.name, &narrow));
        }
    }
    (out, nodes)
}

/// What the verdict on a prefix depends on, as a hash: `None` for no
/// paths, or a route of the node's own (a service address with a local
/// endpoint), which wins anyway.
fn entry(paths: &[Path]) -> Option<u64> {
    (!paths.is_empty() && !paths.iter().any(|p| p.peer.is_local())).then(|| weighed(paths))
}

/// What the verdict on a prefix depends on of its paths: who offers each
/// and its next hop, in any order.
fn weighed(paths: &[Path]) -> u64 {
    paths.iter().fold(0u64, |sum, p| {
        let mut h = Fx::default();
        p.peer.hash(&mut h);
        p.attrs.next_hop.hash(&mut h);
        sum.wrapping_add(h.finish())
    })
}

/// The finding for a node using fewer next hops than offered for the
/// prefixes `narrow` (prefix, used, offered), in prefix order.
fn finding(design: &Design, sim: &Simulation, member: &str, narrow: &[(IpNet, usize, usize)]) -> Finding {
    let object = design.members.get(member).map(|m| m.object()).expect("a member of the design");
    let mut f = Finding::problem(
        Class::Ecmp,
        vec![object],
        format!("{member} uses fewer next hops than it has neighbours offering a path ({} prefixes)", narrow.len()),
    );
    let rib = sim.fabric.speaker(member).map(|s| s.rib());
    for (prefix, width, offered) in narrow.iter().take(SHOWN) {
        // Why the others lost.
        let views = rib.and_then(|r| r.routes(Some(*prefix)).into_iter().find(|(p, _)| p == prefix)).map(|(_, v)| v);
        let lost: Vec<String> = views
            .unwrap_or_default()
            .iter()
            .filter(|v| !v.used)
            .filter_map(|v| Some(format!("{} ({})", v.peer.as_deref()?, v.reason.map_or("not used", |r| r.describe()))))
            .collect();
        f = f.detail(format!("{prefix}: {width} of {offered} next hops; lost: {}", lost.join(", ")));
    }
    f.fix("make the paths equal (same AS path length and attributes) or raise bgpd.io/max-paths")
}
