//! A Loc-RIB table for one address family: every path to every prefix (the
//! post-policy Adj-RIBs-In of all peers together), kept in decision order.
//!
//! Memory is the point of the layout: a prefix with one path costs its key
//! and 16 bytes (its one [`Path`] inline; several paths go behind a box), and
//! the attributes are shared ([`super::attrs::Interner`]). The paths of a
//! prefix are sorted best first, the ECMP set in front, so the decision's
//! outcome needs no fields of its own; why each other path lost is worked out
//! again when someone asks (`bgpd show routes`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use smallvec::SmallVec;

use super::attrs::PathAttrs;
use super::decision::{compare, multipath_equal, Candidate, DecisionOptions, Reason};

/// A peer as the RIB knows it. [`PeerId::LOCAL`] stands for this speaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u16);

impl PeerId {
    /// Routes this speaker originates.
    pub const LOCAL: PeerId = PeerId(u16::MAX);

    /// Whether this is the local speaker.
    pub fn is_local(self) -> bool {
        self == PeerId::LOCAL
    }
}

/// What the decision process needs to know about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Its address.
    pub addr: IpAddr,
    /// Its AS.
    pub asn: u32,
    /// Whether the session is eBGP.
    pub ebgp: bool,
}

/// Flag: the path is stale (its peer restarts gracefully, or an enhanced
/// route refresh is under way) and goes unless the peer sends it again.
pub const STALE: u16 = 1;
/// Flag: the path is in use (best or in the ECMP set).
pub const USED: u16 = 2;

/// One path to a prefix: 16 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Its attributes, shared.
    pub attrs: Arc<PathAttrs>,
    /// ADD-PATH identifier the peer gave it (0 without ADD-PATH).
    pub path_id: u32,
    /// Who sent it.
    pub peer: PeerId,
    /// [`STALE`], [`USED`].
    pub flags: u16,
}

impl Path {
    /// A fresh path.
    pub fn new(peer: PeerId, path_id: u32, attrs: Arc<PathAttrs>) -> Path {
        Path { attrs, path_id, peer, flags: 0 }
    }

    /// Whether the path is stale.
    pub fn is_stale(&self) -> bool {
        self.flags & STALE != 0
    }

    /// Whether the path is in use (best or ECMP).
    pub fn is_used(&self) -> bool {
        self.flags & USED != 0
    }

    /// Same path (peer and identifier) with the same attributes, whatever the flags.
    pub fn same(&self, other: &Path) -> bool {
        self.peer == other.peer && self.path_id == other.path_id && Arc::ptr_eq(&self.attrs, &other.attrs)
    }
}

/// The paths to one prefix, best first; the used ones (ECMP set) lead.
/// 16 bytes: one path inline (most prefixes), several behind one box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths(PathsInner);

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathsInner {
    One(Path),
    // A thin pointer: the box keeps the slot at 16 bytes (a Vec is 24).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Path>>),
}

impl Paths {
    fn one(p: Path) -> Paths {
        Paths(PathsInner::One(p))
    }

    fn push(&mut self, p: Path) {
        match &mut self.0 {
            PathsInner::Many(v) => v.push(p),
            PathsInner::One(first) => {
                let first = first.clone();
                self.0 = PathsInner::Many(Box::new(vec![first, p]));
            }
        }
    }

    /// Keeps the paths `keep` selects; `false` when none is left (the
    /// caller then drops the prefix).
    fn retain(&mut self, keep: impl Fn(&Path) -> bool) -> bool {
        match &mut self.0 {
            PathsInner::One(p) => keep(p),
            PathsInner::Many(v) => {
                v.retain(|p| keep(p));
                match v.len() {
                    0 => false,
                    1 => {
                        let last = v[0].clone();
                        self.0 = PathsInner::One(last);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

impl std::ops::Deref for Paths {
    type Target = [Path];
    fn deref(&self) -> &[Path] {
        match &self.0 {
            PathsInner::One(p) => std::slice::from_ref(p),
            PathsInner::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Paths {
    fn deref_mut(&mut self) -> &mut [Path] {
        match &mut self.0 {
            PathsInner::One(p) => std::slice::from_mut(p),
            PathsInner::Many(v) => v,
        }
    }
}

/// The used paths of a prefix, best first.
pub type Used = SmallVec<[Path; 1]>;

/// The used paths (best first) among `paths`.
pub fn used_of(paths: &[Path]) -> Used {
    paths.iter().take_while(|p| p.is_used()).cloned().collect()
}

/// Whether the used paths of `paths` differ from `before` (another path,
/// another order, or other attributes).
fn used_changed(before: &[Path], paths: &Paths) -> bool {
    let mut now = paths.iter().take_while(|p| p.is_used());
    let same = before.iter().all(|b| now.next().is_some_and(|a| a.same(b))) && now.next().is_none();
    !same
}

/// Decides how a path's next hop is reached: its IGP cost, or `None` when
/// unreachable (the FIB's next-hop resolution answers this in the daemon).
pub type Reachability<'a> = &'a dyn Fn(Option<IpAddr>) -> Option<u32>;

/// A hash map with foldhash: seeded per process, several times faster than
/// SipHash on the small keys of a RIB.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Shards of a table: each grows on its own, so growing a big table never
/// holds two copies of it (a hash table doubles by copying).
const SHARDS: usize = 64;

/// One family's table.
pub struct Table<P> {
    shards: Vec<FastMap<P, Paths>>,
    pick: foldhash::fast::RandomState,
    len: usize,
    paths: usize,
    /// When kept ([`Table::track`]): the prefixes whose paths were added,
    /// replaced or removed since it was last taken (repeats included).
    journal: Option<Vec<P>>,
}

impl<P> Default for Table<P> {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS).map(|_| FastMap::default()).collect(),
            pick: Default::default(),
            len: 0,
            paths: 0,
            journal: None,
        }
    }
}

/// What the decision process is told about the peers.
pub struct DecisionInput<'a> {
    /// Peers by [`PeerId`] index.
    pub peers: &'a [Option<PeerInfo>],
    /// The local AS (neighbouring AS of local and iBGP routes without an AS path).
    pub local_as: u32,
    /// Options.
    pub opts: DecisionOptions,
    /// ECMP width.
    pub max_paths: usize,
    /// Next-hop reachability.
    pub reach: Reachability<'a>,
}

impl DecisionInput<'_> {
    /// The decision process's view of one path.
    pub fn candidate(&self, p: &Path) -> Candidate {
        let a = &p.attrs;
        let info = if p.peer.is_local() { None } else { self.peers.get(p.peer.0 as usize).and_then(Option::as_ref) };
        let (ebgp, peer_id, addr, peer_as) = match info {
            Some(i) => (i.ebgp, i.router_id, i.addr, i.asn),
            None => (false, Ipv4Addr::UNSPECIFIED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.local_as),
        };
        let as_path = a.as_path_ref();
        Candidate {
            local_pref: a.local_pref().unwrap_or(100),
            as_path_len: as_path.map_or(0, |p| p.path_len()),
            origin: a.origin(),
            med: a.med(),
            neighbor_as: as_path.and_then(|p| p.first_asn()).unwrap_or(if ebgp { peer_as } else { self.local_as }),
            ebgp,
            igp_cost: if p.peer.is_local() { Some(0) } else { (self.reach)(a.next_hop) },
            router_id: a.originator_id().unwrap_or(peer_id),
            cluster_list_len: a.cluster_list_len(),
            peer_addr: addr,
            local: p.peer.is_local(),
            llgr_stale: a.is_llgr_stale(),
        }
    }
}

impl<P: Copy + Eq + Hash> Table<P> {
    fn shard(&self, prefix: &P) -> usize {
        use std::hash::BuildHasher;
        (self.pick.hash_one(prefix) >> 58) as usize % SHARDS
    }

    /// The paths to `prefix`, best first.
    pub fn get(&self, prefix: &P) -> Option<&Paths> {
        self.shards[self.shard(prefix)].get(prefix)
    }

    /// How many prefixes have at least one path.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Paths held, all prefixes together.
    pub fn path_count(&self) -> usize {
        self.paths
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every prefix and its paths.
    pub fn iter(&self) -> impl Iterator<Item = (&P, &Paths)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Bytes the table's own structures take (keys, path vectors, hash
    /// table slack; attribute sets are counted by the interner). O(1): the
    /// paths beyond the first of a prefix are counted as spilled to the heap.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<P>() + std::mem::size_of::<Paths>() + 1;
        let extra = self.paths.saturating_sub(self.len);
        let capacity: usize = self.shards.iter().map(|s| s.capacity()).sum();
        // A prefix with several paths: a box (a Vec) and the paths.
        capacity * entry + (extra + extra.min(self.len)) * std::mem::size_of::<Path>()
    }

    /// Starts (or stops) keeping a journal of the prefixes whose paths
    /// change: added, replaced or removed (not flags such as stale or used).
    pub fn track(&mut self, on: bool) {
        self.journal = on.then(|| self.journal.take().unwrap_or_default());
    }

    /// Whether a journal is kept.
    pub fn tracks(&self) -> bool {
        self.journal.is_some()
    }

    /// The prefixes whose paths changed since the journal was last taken
    /// (in order, repeats included); empty when no journal is kept.
    pub fn take_journal(&mut self) -> Vec<P> {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn log(journal: &mut Option<Vec<P>>, prefix: P) {
        if let Some(j) = journal {
            j.push(prefix);
        }
    }

    /// The used paths of `prefix` (best first), as they are now.
    pub fn used(&self, prefix: &P) -> SmallVec<[Path; 1]> {
        self.get(prefix).map(|p| used_of(p)).unwrap_or_default()
    }

    /// Adds or replaces the path `(peer, path_id)` to `prefix` and decides
    /// again. Returns, when the used set changed, the used paths as they were
    /// and as they are; and whether the path is new (not a replacement).
    pub fn update(&mut self, prefix: P, path: Path, d: &DecisionInput<'_>) -> (Option<(Used, Used)>, bool) {
        use std::collections::hash_map::Entry;
        let shard = self.shard(&prefix);
        let paths = match self.shards[shard].entry(prefix) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                // A new prefix: its one path is used if it can be reached.
                let mut path = path;
                let reachable = path.peer.is_local() || (d.reach)(path.attrs.next_hop).is_some();
                path.flags = if reachable { path.flags | USED } else { path.flags & !USED };
                let now: Used = if reachable { smallvec::smallvec![path.clone()] } else { Used::new() };
                e.insert(Paths::one(path));
                self.len += 1;
                self.paths += 1;
                Self::log(&mut self.journal, prefix);
                return (reachable.then_some((Used::new(), now)), true);
            }
        };
        let before = used_of(paths);
        let added = match paths.iter_mut().find(|p| p.peer == path.peer && p.path_id == path.path_id) {
            Some(p) if Arc::ptr_eq(&p.attrs, &path.attrs) => {
                // Sent again: no longer stale, nothing else changes.
                p.flags &= !STALE;
                return (None, false);
            }
            Some(p) => {
                let used = p.flags & USED;
                *p = path;
                p.flags |= used;
                false
            }
            None => {
                paths.push(path);
                self.paths += 1;
                true
            }
        };
        Self::log(&mut self.journal, prefix);
        decide(paths, d);
        (used_changed(&before, paths).then(|| (before, used_of(paths))), added)
    }

    /// Removes the path `(peer, path_id)` to `prefix`. Returns `None` when
    /// there was no such path, else the used paths as they were and as they
    /// are if the used set changed.
    pub fn withdraw(
        &mut self,
        prefix: P,
        peer: PeerId,
        path_id: u32,
        d: &DecisionInput<'_>,
    ) -> Option<Option<(Used, Used)>> {
        let shard = self.shard(&prefix);
        let paths = self.shards[shard].get_mut(&prefix)?;
        let i = paths.iter().position(|p| p.peer == peer && p.path_id == path_id)?;
        let was_used = paths[i].is_used();
        let before = if was_used { used_of(paths) } else { Used::new() };
        self.paths -= 1;
        Self::log(&mut self.journal, prefix);
        if !paths.retain(|p| !(p.peer == peer && p.path_id == path_id)) {
            self.shards[shard].remove(&prefix);
            self.len -= 1;
            return Some(was_used.then(|| (before, Used::new())));
        }
        if !was_used {
            return Some(None);
        }
        decide(paths, d);
        Some(used_changed(&before, paths).then(|| (before, used_of(paths))))
    }

    /// Removes the paths of `peer` that `pred` selects, calling `changed`
    /// (before the removal, with the used set as it was) for each prefix
    /// whose used set changes. Returns how many paths went.
    pub fn remove_where(
        &mut self,
        pred: impl Fn(&Path) -> bool,
        d: &DecisionInput<'_>,
        mut changed: impl FnMut(P, Used, Used),
    ) -> usize {
        let mut removed = 0;
        let mut emptied = 0;
        let journal = &mut self.journal;
        for shard in &mut self.shards {
            shard.retain(|prefix, paths| {
                let n = paths.iter().filter(|p| pred(p)).count();
                if n == 0 {
                    return true;
                }
                Self::log(journal, *prefix);
                let before = used_of(paths);
                removed += n;
                if !paths.retain(|p| !pred(p)) {
                    emptied += 1;
                    if !before.is_empty() {
                        changed(*prefix, before, Used::new());
                    }
                    return false;
                }
                decide(paths, d);
                if used_changed(&before, paths) {
                    changed(*prefix, before, used_of(paths));
                }
                true
            });
        }
        self.len -= emptied;
        self.paths -= removed;
        removed
    }

    /// Sets flags on the paths `pred` selects; returns how many.
    pub fn mark(&mut self, pred: impl Fn(&Path) -> bool, flag: u16) -> usize {
        let mut n = 0;
        for paths in self.shards.iter_mut().flat_map(|s| s.values_mut()) {
            for p in paths.iter_mut().filter(|p| pred(p)) {
                p.flags |= flag;
                n += 1;
            }
        }
        n
    }

    /// Decides every prefix again (next-hop reachability or options changed),
    /// calling `changed` with the old used set of each prefix that changed.
    pub fn redecide(&mut self, d: &DecisionInput<'_>, mut changed: impl FnMut(P, Used, Used)) {
        for (prefix, paths) in self.shards.iter_mut().flat_map(|s| s.iter_mut()) {
            let before = used_of(paths);
            if decide(paths, d) {
                changed(*prefix, before, used_of(paths));
            }
        }
    }

    /// Why each path of `prefix` that is not used lost to the best.
    pub fn reasons(&self, prefix: &P, d: &DecisionInput<'_>) -> Vec<Option<Reason>> {
        let Some(paths) = self.get(prefix) else { return Vec::new() };
        let Some(best) = paths.first().filter(|p| p.is_used()) else {
            return paths.iter().map(|_| Some(Reason::NextHopUnreachable)).collect();
        };
        let b = d.candidate(best);
        paths
            .iter()
            .map(
                |p| {
                    if p.is_used() {
                        None
                    } else {
                        compare(&b, &d.candidate(p), d.opts).1.or(Some(Reason::PeerAddress))
                    }
                },
            )
            .collect()
    }
}

/// Runs the decision process over `paths` and sorts them: the used ones
/// (best, then the rest of the ECMP set) first. Deterministic MED: paths
/// are compared within their neighbouring AS first, so the outcome does
/// not depend on arrival order. Returns whether the used set changed.
fn decide(paths: &mut Paths, d: &DecisionInput<'_>) -> bool {
    let before: SmallVec<[(PeerId, u32, *const PathAttrs); 2]> =
        paths.iter().take_while(|p| p.is_used()).map(|p| (p.peer, p.path_id, Arc::as_ptr(&p.attrs))).collect();
    if paths.len() == 1 {
        let p = &mut paths[0];
        let reachable = p.peer.is_local() || (d.reach)(p.attrs.next_hop).is_some();
        if reachable {
            p.flags |= USED;
        } else {
            p.flags &= !USED;
        }
        let now = reachable.then_some((p.peer, p.path_id, Arc::as_ptr(&p.attrs)));
        return before.as_slice() != now.as_slice();
    }
    let cands: SmallVec<[Candidate; 4]> = paths.iter().map(|p| d.candidate(p)).collect();
    let better = |i: usize, j: usize| compare(&cands[i], &cands[j], d.opts).0 == std::cmp::Ordering::Less;
    // Deterministic MED: winner of each neighbouring-AS group, then the winners.
    let mut group_best: SmallVec<[usize; 4]> = SmallVec::new();
    for i in (0..paths.len()).filter(|&i| cands[i].igp_cost.is_some()) {
        match group_best.iter_mut().find(|g| cands[**g].neighbor_as == cands[i].neighbor_as) {
            Some(g) if better(i, *g) => *g = i,
            Some(_) => {}
            None => group_best.push(i),
        }
    }
    let mut order: SmallVec<[usize; 4]> = (0..paths.len()).collect();
    let mut used = 0;
    if let Some(&first) = group_best.first() {
        let best = group_best[1..].iter().fold(first, |b, &g| if better(g, b) { g } else { b });
        // Best first, then its equals (ECMP) by preference, then the rest.
        order.sort_by(|&i, &j| {
            let key = |k: usize| (k != best, !(k == best || multipath_equal(&cands[best], &cands[k], d.opts)));
            key(i).cmp(&key(j)).then_with(|| compare(&cands[i], &cands[j], d.opts).0)
        });
        used = order
            .iter()
            .take_while(|&&k| k == best || multipath_equal(&cands[best], &cands[k], d.opts))
            .count()
            .min(d.max_paths.max(1));
    }
    let sorted: SmallVec<[Path; 4]> = order.iter().map(|&i| paths[i].clone()).collect();
    for (n, (slot, mut p)) in paths.iter_mut().zip(sorted).enumerate() {
        if n < used {
            p.flags |= USED;
        } else {
            p.flags &= !USED;
        }
        *slot = p;
    }
    let now: SmallVec<[(PeerId, u32, *const PathAttrs); 2]> =
        paths.iter().take(used).map(|p| (p.peer, p.path_id, Arc::as_ptr(&p.attrs))).collect();
    before != now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::attrs::Interner;
    use crate::wire::{AsPath, Attr, Origin, PathAttribute};
    use ipnet::Ipv4Net;

    fn attrs(i: &mut Interner, path: &[u32], nh: [u8; 4], lp: Option<u32>) -> Arc<PathAttrs> {
        let mut v = vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence(path.iter().copied()))),
            PathAttribute::new(Attr::NextHop(Ipv4Addr::from(nh))),
        ];
        if let Some(lp) = lp {
            v.push(PathAttribute::new(Attr::LocalPref(lp)));
        }
        i.intern(PathAttrs {
            attributes: v,
            next_hop: Some(IpAddr::V4(Ipv4Addr::from(nh))),
            link_local: None,
            priority: None,
        })
    }

    fn peers() -> Vec<Option<PeerInfo>> {
        (1..=3)
            .map(|n| {
                Some(PeerInfo {
                    router_id: Ipv4Addr::new(10, 0, 0, n),
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
                    asn: 65000 + n as u32,
                    ebgp: true,
                })
            })
            .collect()
    }

    const REACH: Reachability<'static> = &|nh| nh.map(|_| 0);

    fn input<'a>(peers: &'a [Option<PeerInfo>], opts: DecisionOptions, max: usize) -> DecisionInput<'a> {
        DecisionInput { peers, local_as: 64512, opts, max_paths: max, reach: REACH }
    }

    #[test]
    fn best_path_follows_updates_and_withdrawals() {
        let mut i = Interner::default();
        let ps = peers();
        let d = input(&ps, DecisionOptions::default(), 1);
        let mut t: Table<Ipv4Net> = Table::default();
        let (a, b) = (PeerId(0), PeerId(1));
        let p: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let long = attrs(&mut i, &[65001, 65100], [10, 0, 0, 1], None);
        let short = attrs(&mut i, &[65002], [10, 0, 0, 2], None);
        assert!(t.update(p, Path::new(a, 0, long), &d).0.is_some());
        assert_eq!(t.used(&p)[0].peer, a);
        assert!(t.update(p, Path::new(b, 0, short.clone()), &d).0.is_some());
        assert_eq!(t.used(&p)[0].peer, b, "the shorter AS path wins");
        assert_eq!(t.reasons(&p, &d), vec![None, Some(Reason::AsPathLength)]);
        assert!(t.update(p, Path::new(b, 0, short), &d).0.is_none(), "same path again: no change");
        assert!(t.withdraw(p, b, 0, &d).unwrap().is_some());
        assert_eq!(t.used(&p)[0].peer, a);
        assert!(t.withdraw(p, b, 0, &d).is_none(), "already gone");
        assert!(t.withdraw(p, a, 0, &d).unwrap().is_some());
        assert!(t.is_empty());
        assert_eq!(t.path_count(), 0);
        assert_eq!(i.sweep(), 2, "no route uses the two sets any more");
    }

    #[test]
    fn ecmp_set_leads_and_removal_reports_old_sets() {
        let mut i = Interner::default();
        let ps = peers();
        let relax = DecisionOptions { multipath_relax: true, ..Default::default() };
        let d = input(&ps, relax, 4);
        let mut t: Table<Ipv4Net> = Table::default();
        let p: Ipv4Net = "192.0.2.1/32".parse().unwrap();
        // One anycast service IP from two clusters, and a longer path from a third.
        t.update(p, Path::new(PeerId(2), 0, attrs(&mut i, &[65003, 1], [10, 0, 0, 3], None)), &d);
        t.update(p, Path::new(PeerId(0), 0, attrs(&mut i, &[65001], [10, 0, 0, 1], None)), &d);
        t.update(p, Path::new(PeerId(1), 0, attrs(&mut i, &[65002], [10, 0, 0, 2], None)), &d);
        let used: Vec<PeerId> = t.used(&p).iter().map(|p| p.peer).collect();
        assert_eq!(used, vec![PeerId(0), PeerId(1)], "ECMP across neighbouring ASes, lower router ID first");
        let mut changes = Vec::new();
        let n = t.remove_where(|p| p.peer == PeerId(0), &d, |pfx, old, _| changes.push((pfx, old.len())));
        assert_eq!((n, changes), (1, vec![(p, 2)]));
        assert_eq!(t.used(&p).len(), 1);
        let narrow = input(&ps, relax, 1);
        t.redecide(&narrow, |_, _, _| {});
        assert_eq!(t.used(&p).len(), 1);
    }

    #[test]
    fn unreachable_next_hops_are_never_used_and_local_routes_win() {
        let mut i = Interner::default();
        let ps = peers();
        let far: Reachability<'static> = &|_| None;
        let d =
            DecisionInput { peers: &ps, local_as: 64512, opts: DecisionOptions::default(), max_paths: 1, reach: far };
        let mut t: Table<Ipv4Net> = Table::default();
        let p: Ipv4Net = "10.2.0.0/26".parse().unwrap();
        assert!(t
            .update(p, Path::new(PeerId(0), 0, attrs(&mut i, &[65001], [10, 9, 9, 9], Some(500))), &d)
            .0
            .is_none());
        assert!(t.used(&p).is_empty());
        let local = attrs(&mut i, &[], [0, 0, 0, 0], None);
        assert!(t.update(p, Path::new(PeerId::LOCAL, 0, local), &d).0.is_some());
        assert!(t.used(&p)[0].peer.is_local());
        assert_eq!(t.reasons(&p, &d), vec![None, Some(Reason::NextHopUnreachable)]);
    }

    #[test]
    fn stale_paths_are_marked_refreshed_and_swept() {
        let mut i = Interner::default();
        let ps = peers();
        let d = input(&ps, DecisionOptions::default(), 1);
        let mut t: Table<Ipv4Net> = Table::default();
        let a = attrs(&mut i, &[65001], [10, 0, 0, 1], None);
        let (p1, p2): (Ipv4Net, Ipv4Net) = ("10.0.1.0/24".parse().unwrap(), "10.0.2.0/24".parse().unwrap());
        t.update(p1, Path::new(PeerId(0), 0, a.clone()), &d);
        t.update(p2, Path::new(PeerId(0), 0, a.clone()), &d);
        assert_eq!(t.mark(|p| p.peer == PeerId(0), STALE), 2);
        assert!(t.update(p1, Path::new(PeerId(0), 0, a), &d).0.is_none(), "sent again after the restart");
        let swept = t.remove_where(|p| p.peer == PeerId(0) && p.is_stale(), &d, |_, _, _| {});
        assert_eq!(swept, 1);
        assert!(t.get(&p1).is_some() && t.get(&p2).is_none());
    }

    #[test]
    fn the_journal_names_each_prefix_whose_paths_changed() {
        let mut i = Interner::default();
        let ps = peers();
        let d = input(&ps, DecisionOptions::default(), 1);
        let mut t: Table<Ipv4Net> = Table::default();
        let a = attrs(&mut i, &[65001], [10, 0, 0, 1], None);
        let b = attrs(&mut i, &[65002], [10, 0, 0, 2], None);
        let [p1, p2, p3]: [Ipv4Net; 3] = ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"].map(|p| p.parse().unwrap());
        t.update(p1, Path::new(PeerId(0), 0, a.clone()), &d);
        assert!(t.take_journal().is_empty(), "no journal until asked for");
        t.track(true);
        t.update(p1, Path::new(PeerId(0), 0, a.clone()), &d);
        t.mark(|_| true, STALE);
        assert!(t.take_journal().is_empty(), "sent again, and flags: the paths are the same");
        t.update(p2, Path::new(PeerId(0), 0, a.clone()), &d);
        t.update(p1, Path::new(PeerId(1), 0, b.clone()), &d);
        t.update(p1, Path::new(PeerId(1), 0, a.clone()), &d);
        assert_eq!(t.take_journal(), vec![p2, p1, p1], "a new prefix, a second path, a replaced path");
        assert!(t.take_journal().is_empty(), "taken");
        t.withdraw(p2, PeerId(0), 0, &d);
        t.withdraw(p3, PeerId(0), 0, &d);
        t.remove_where(|p| p.peer == PeerId(1), &d, |_, _, _| {});
        assert_eq!(t.take_journal(), vec![p2, p1], "a withdrawal (not of a path that was not there), a removal");
        t.track(false);
        t.withdraw(p1, PeerId(0), 0, &d);
        assert!(t.take_journal().is_empty(), "stopped");
    }

    #[test]
    fn a_one_path_prefix_costs_a_key_and_16_bytes() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<Paths>(), 16);
    }
}
