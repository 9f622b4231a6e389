//! A Loc-RIB table for one address family: every path to every prefix, the
//! best one selected by the decision process, and the changes of best path
//! (and of the ECMP set) that the FIB and the outbound side consume.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::attrs::PathAttrs;
use super::decision::{select, Candidate, DecisionOptions, Reason};

/// A peer as the RIB knows it (index into [`Table::peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

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

/// One path to a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Who sent it (`None`: originated locally).
    pub peer: Option<PeerId>,
    /// ADD-PATH identifier (0 without ADD-PATH).
    pub path_id: u32,
    /// Its attributes, shared.
    pub attrs: Arc<PathAttrs>,
}

/// All paths to one prefix and the outcome of the decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dest {
    /// The paths, in arrival order.
    pub paths: Vec<Path>,
    /// Index of the best path.
    pub best: Option<usize>,
    /// Indices of the paths sharing traffic (best included).
    pub multipath: Vec<usize>,
    /// For each other path, why it lost.
    pub lost: Vec<(usize, Reason)>,
    /// The paths in use after the last decision (best first), to tell
    /// whether a decision changed anything.
    pub used: Vec<Path>,
}

/// A change of the best path (or ECMP set) of a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestChange<P> {
    /// The prefix.
    pub prefix: P,
    /// The paths now used (best first); empty when the prefix is gone.
    pub now: Vec<Path>,
}

/// Decides how a path's next hop is reached: its IGP cost, or `None` when
/// unreachable (the FIB's next-hop resolution answers this in the daemon).
pub type Reachability<'a> = &'a dyn Fn(Option<IpAddr>) -> Option<u32>;

/// One family's table.
pub struct Table<P> {
    dests: HashMap<P, Dest>,
    peers: Vec<Option<PeerInfo>>,
    opts: DecisionOptions,
    max_paths: usize,
    local_as: u32,
}

impl<P: Copy + Eq + Hash> Table<P> {
    /// An empty table; `max_paths` is the ECMP width (1: no multipath).
    pub fn new(local_as: u32, opts: DecisionOptions, max_paths: usize) -> Table<P> {
        Table { dests: HashMap::new(), peers: Vec::new(), opts, max_paths: max_paths.max(1), local_as }
    }

    /// Registers a peer (reusing a free slot).
    pub fn add_peer(&mut self, info: PeerInfo) -> PeerId {
        if let Some(i) = self.peers.iter().position(Option::is_none) {
            self.peers[i] = Some(info);
            return PeerId(i as u32);
        }
        self.peers.push(Some(info));
        PeerId(self.peers.len() as u32 - 1)
    }

    /// The paths to `prefix`, and the decision.
    pub fn get(&self, prefix: &P) -> Option<&Dest> {
        self.dests.get(prefix)
    }

    /// How many prefixes have at least one path.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    fn candidate(&self, p: &Path, reach: Reachability<'_>) -> Candidate {
        let a = &p.attrs;
        let as_path = a.as_path();
        let info = p.peer.and_then(|id| self.peers.get(id.0 as usize).cloned().flatten());
        let (ebgp, peer_id, addr, peer_as) = match &info {
            Some(i) => (i.ebgp, i.router_id, i.addr, i.asn),
            None => (false, Ipv4Addr::UNSPECIFIED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.local_as),
        };
        Candidate {
            local_pref: a.local_pref().unwrap_or(100),
            as_path_len: as_path.path_len(),
            origin: a.origin(),
            med: a.med(),
            neighbor_as: as_path.first_asn().unwrap_or(if ebgp { peer_as } else { self.local_as }),
            ebgp,
            igp_cost: if p.peer.is_none() { Some(0) } else { reach(a.next_hop) },
            router_id: a.originator_id().unwrap_or(peer_id),
            cluster_list_len: a.cluster_list_len(),
            peer_addr: addr,
            local: p.peer.is_none(),
        }
    }

    fn decide(&mut self, prefix: P, reach: Reachability<'_>) -> Option<BestChange<P>> {
        let dest = self.dests.get(&prefix)?;
        let cands: Vec<Candidate> = dest.paths.iter().map(|p| self.candidate(p, reach)).collect();
        let sel = select(&cands, self.opts, self.max_paths);
        let dest = self.dests.get_mut(&prefix)?;
        match sel {
            Some(s) => {
                dest.best = Some(s.best);
                dest.multipath = s.multipath;
                dest.lost = s.lost;
            }
            None => {
                dest.best = None;
                dest.multipath.clear();
                dest.lost.clear();
            }
        }
        let now: Vec<Path> = dest.multipath.iter().map(|&i| dest.paths[i].clone()).collect();
        let changed = now != dest.used;
        dest.used.clone_from(&now);
        if dest.paths.is_empty() {
            self.dests.remove(&prefix);
        }
        changed.then_some(BestChange { prefix, now })
    }

    /// Adds or replaces the path `(peer, path_id)` to `prefix`.
    pub fn update(&mut self, prefix: P, path: Path, reach: Reachability<'_>) -> Option<BestChange<P>> {
        let dest = self.dests.entry(prefix).or_default();
        match dest.paths.iter_mut().find(|p| p.peer == path.peer && p.path_id == path.path_id) {
            Some(p) if *p == path => return None,
            Some(p) => *p = path,
            None => dest.paths.push(path),
        }
        self.decide(prefix, reach)
    }

    /// Removes the path `(peer, path_id)` to `prefix`.
    pub fn withdraw(
        &mut self,
        prefix: P,
        peer: Option<PeerId>,
        path_id: u32,
        reach: Reachability<'_>,
    ) -> Option<BestChange<P>> {
        let dest = self.dests.get_mut(&prefix)?;
        let before = dest.paths.len();
        dest.paths.retain(|p| !(p.peer == peer && p.path_id == path_id));
        if dest.paths.len() == before {
            return None;
        }
        self.decide(prefix, reach)
    }

    /// Removes every path of `peer` (its session went down) and forgets it.
    pub fn drop_peer(&mut self, peer: PeerId, reach: Reachability<'_>) -> Vec<BestChange<P>> {
        let prefixes: Vec<P> =
            self.dests.iter().filter(|(_, d)| d.paths.iter().any(|p| p.peer == Some(peer))).map(|(k, _)| *k).collect();
        let mut changes = Vec::new();
        for prefix in prefixes {
            if let Some(d) = self.dests.get_mut(&prefix) {
                d.paths.retain(|p| p.peer != Some(peer));
            }
            changes.extend(self.decide(prefix, reach));
        }
        if let Some(slot) = self.peers.get_mut(peer.0 as usize) {
            *slot = None;
        }
        changes
    }
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

    fn peer(t: &mut Table<Ipv4Net>, n: u8, asn: u32) -> PeerId {
        t.add_peer(PeerInfo {
            router_id: Ipv4Addr::new(10, 0, 0, n),
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            asn,
            ebgp: true,
        })
    }

    const REACH: Reachability<'static> = &|nh| nh.map(|_| 0);

    #[test]
    fn best_path_follows_updates_and_withdrawals() {
        let mut i = Interner::default();
        let mut t: Table<Ipv4Net> = Table::new(64512, DecisionOptions::default(), 1);
        let (a, b) = (peer(&mut t, 1, 65001), peer(&mut t, 2, 65002));
        let p: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let long = attrs(&mut i, &[65001, 65100], [10, 0, 0, 1], None);
        let short = attrs(&mut i, &[65002], [10, 0, 0, 2], None);
        let first = t.update(p, Path { peer: Some(a), path_id: 0, attrs: long }, REACH).unwrap();
        assert_eq!(first.now[0].peer, Some(a));
        let second = t.update(p, Path { peer: Some(b), path_id: 0, attrs: short.clone() }, REACH).unwrap();
        assert_eq!(second.now[0].peer, Some(b), "the shorter AS path wins");
        assert_eq!(t.get(&p).unwrap().lost, vec![(0, Reason::AsPathLength)]);
        // Same path again: no change.
        assert!(t.update(p, Path { peer: Some(b), path_id: 0, attrs: short }, REACH).is_none());
        let third = t.withdraw(p, Some(b), 0, REACH).unwrap();
        assert_eq!(third.now[0].peer, Some(a));
        let last = t.withdraw(p, Some(a), 0, REACH).unwrap();
        assert!(last.now.is_empty());
        assert!(t.is_empty());
        drop((first, second, third));
        assert_eq!(i.sweep(), 2, "no route uses the two sets any more");
    }

    #[test]
    fn ecmp_set_and_dropping_a_peer() {
        let mut i = Interner::default();
        let relax = DecisionOptions { multipath_relax: true, ..Default::default() };
        let mut t: Table<Ipv4Net> = Table::new(64512, relax, 4);
        let (a, b) = (peer(&mut t, 1, 65001), peer(&mut t, 2, 65002));
        let p: Ipv4Net = "192.0.2.1/32".parse().unwrap();
        // One anycast service IP from two clusters.
        t.update(p, Path { peer: Some(a), path_id: 0, attrs: attrs(&mut i, &[65001], [10, 0, 0, 1], None) }, REACH);
        let c =
            t.update(p, Path { peer: Some(b), path_id: 0, attrs: attrs(&mut i, &[65002], [10, 0, 0, 2], None) }, REACH);
        assert_eq!(c.unwrap().now.len(), 2);
        let changes = t.drop_peer(a, REACH);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].now.iter().map(|p| p.peer).collect::<Vec<_>>(), vec![Some(b)]);
        assert_eq!(peer(&mut t, 3, 65003), a, "the slot is reused");
    }

    #[test]
    fn unreachable_next_hops_are_never_best_and_local_routes_win() {
        let mut i = Interner::default();
        let mut t: Table<Ipv4Net> = Table::new(64512, DecisionOptions::default(), 1);
        let a = peer(&mut t, 1, 65001);
        let p: Ipv4Net = "10.2.0.0/26".parse().unwrap();
        let far: Reachability<'static> = &|_| None;
        assert!(t
            .update(
                p,
                Path { peer: Some(a), path_id: 0, attrs: attrs(&mut i, &[65001], [10, 9, 9, 9], Some(500)) },
                far
            )
            .is_none());
        assert_eq!(t.get(&p).unwrap().best, None);
        let local = attrs(&mut i, &[], [0, 0, 0, 0], None);
        let c = t.update(p, Path { peer: None, path_id: 0, attrs: local }, far).unwrap();
        assert_eq!(c.now[0].peer, None);
        assert_eq!(t.get(&p).unwrap().lost, vec![(0, Reason::NextHopUnreachable)]);
    }

    #[test]
    fn attribute_sets_are_shared() {
        let mut i = Interner::default();
        let a = attrs(&mut i, &[65001], [10, 0, 0, 1], None);
        let b = attrs(&mut i, &[65001], [10, 0, 0, 1], None);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
    }
}
