//! The BGP decision process: which of several paths to one prefix is best
//! (RFC 4271 §9.1.2.2, RFC 4456 §9, RFC 5065), why each other path lost,
//! and which paths are equal enough to share the traffic (ECMP).

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};

use crate::wire::Origin;

/// What the decision process needs to know about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// LOCAL_PREF (for eBGP-learned paths, the value import policy gave; 100 by default).
    pub local_pref: u32,
    /// AS path length as RFC 4271 counts it (an AS_SET counts one; RFC 5065
    /// confederation segments count zero).
    pub as_path_len: usize,
    /// ORIGIN.
    pub origin: Origin,
    /// MULTI_EXIT_DISC; a missing MED compares as 0 (RFC 4271 §9.1.2.2 (c)).
    pub med: Option<u32>,
    /// The neighbouring AS (first AS of the path; the local AS for a locally originated path).
    pub neighbor_as: u32,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// Cost to the next hop (interior metric); `None` when the next hop is unreachable.
    pub igp_cost: Option<u32>,
    /// The peer's BGP identifier, or ORIGINATOR_ID when present (RFC 4456 §9).
    pub router_id: Ipv4Addr,
    /// CLUSTER_LIST length (RFC 4456 §9).
    pub cluster_list_len: usize,
    /// The peer's address.
    pub peer_addr: IpAddr,
    /// Originated by this speaker (always preferred over learned paths).
    pub local: bool,
    /// Marked LLGR_STALE (RFC 9494 §4.3): less preferred than any path that is not.
    pub llgr_stale: bool,
}

/// Decision options an operator sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecisionOptions {
    /// Compare MED between paths from different neighbouring ASes too.
    pub always_compare_med: bool,
    /// Paths through different neighbouring ASes but of equal AS path length
    /// may share traffic (anycast from several clusters or ToRs).
    pub multipath_relax: bool,
}

/// The step at which one path lost to another, for `show routes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Its next hop is unreachable (§9.1.2.2 (a)).
    NextHopUnreachable,
    /// Long-lived stale (LLGR_STALE, RFC 9494 §4.3) while the other is not.
    LongLivedStale,
    /// Not originated locally while the other was.
    NotLocal,
    /// Lower LOCAL_PREF (§9.1.1).
    LocalPref,
    /// Longer AS_PATH (§9.1.2.2 (a)).
    AsPathLength,
    /// Higher ORIGIN (§9.1.2.2 (b)).
    Origin,
    /// Higher MED from the same neighbouring AS (§9.1.2.2 (c)).
    Med,
    /// iBGP-learned against eBGP-learned (§9.1.2.2 (d)).
    Ibgp,
    /// Higher cost to the next hop (§9.1.2.2 (e)).
    IgpCost,
    /// Higher BGP identifier or ORIGINATOR_ID (§9.1.2.2 (f), RFC 4456 §9).
    RouterId,
    /// Longer CLUSTER_LIST (RFC 4456 §9).
    ClusterListLength,
    /// Higher peer address (§9.1.2.2 (g)).
    PeerAddress,
}

impl Reason {
    /// Text for people.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::NextHopUnreachable => "next hop unreachable",
            Reason::LongLivedStale => "long-lived stale (LLGR_STALE)",
            Reason::NotLocal => "a local route is preferred",
            Reason::LocalPref => "lower local preference",
            Reason::AsPathLength => "longer AS path",
            Reason::Origin => "worse origin",
            Reason::Med => "higher MED",
            Reason::Ibgp => "iBGP path, an eBGP path exists",
            Reason::IgpCost => "higher IGP cost to the next hop",
            Reason::RouterId => "higher router ID",
            Reason::ClusterListLength => "longer cluster list",
            Reason::PeerAddress => "higher peer address",
        }
    }
}

fn origin_rank(o: Origin) -> u8 {
    o.code()
}

/// Compares two paths: `Less` means `a` is better. The second value is the
/// step that decided (`None` for equal paths).
pub fn compare(a: &Candidate, b: &Candidate, opts: DecisionOptions) -> (Ordering, Option<Reason>) {
    let steps: [(Ordering, Reason); 12] = [
        (b.igp_cost.is_some().cmp(&a.igp_cost.is_some()), Reason::NextHopUnreachable),
        // RFC 9494 §4.3: a long-lived stale path loses to any other, whatever its attributes.
        (a.llgr_stale.cmp(&b.llgr_stale), Reason::LongLivedStale),
        (b.local.cmp(&a.local), Reason::NotLocal),
        (b.local_pref.cmp(&a.local_pref), Reason::LocalPref),
        (a.as_path_len.cmp(&b.as_path_len), Reason::AsPathLength),
        (origin_rank(a.origin).cmp(&origin_rank(b.origin)), Reason::Origin),
        (
            if opts.always_compare_med || a.neighbor_as == b.neighbor_as {
                a.med.unwrap_or(0).cmp(&b.med.unwrap_or(0))
            } else {
                Ordering::Equal
            },
            Reason::Med,
        ),
        (b.ebgp.cmp(&a.ebgp), Reason::Ibgp),
        (a.igp_cost.unwrap_or(u32::MAX).cmp(&b.igp_cost.unwrap_or(u32::MAX)), Reason::IgpCost),
        (u32::from(a.router_id).cmp(&u32::from(b.router_id)), Reason::RouterId),
        (a.cluster_list_len.cmp(&b.cluster_list_len), Reason::ClusterListLength),
        (a.peer_addr.cmp(&b.peer_addr), Reason::PeerAddress),
    ];
    steps.into_iter().find(|(o, _)| *o != Ordering::Equal).map_or((Ordering::Equal, None), |(o, r)| (o, Some(r)))
}

/// Whether `a` and `b` are equal through the IGP-cost step, so that both may
/// carry traffic (ECMP): same neighbouring AS, or any with `multipath_relax`.
pub fn multipath_equal(a: &Candidate, b: &Candidate, opts: DecisionOptions) -> bool {
    let reachable = a.igp_cost.is_some() && b.igp_cost.is_some();
    reachable
        && a.llgr_stale == b.llgr_stale
        && a.local == b.local
        && a.local_pref == b.local_pref
        && a.as_path_len == b.as_path_len
        && a.origin == b.origin
        && (opts.multipath_relax || a.neighbor_as == b.neighbor_as)
        // MED only matters where the decision process compares it.
        && ((a.neighbor_as != b.neighbor_as && !opts.always_compare_med) || a.med.unwrap_or(0) == b.med.unwrap_or(0))
        && a.ebgp == b.ebgp
        && a.igp_cost == b.igp_cost
}

/// The outcome of selecting among the paths to one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index of the best path.
    pub best: usize,
    /// Indices of the paths that share traffic with the best (the best included), at most `max_paths`.
    pub multipath: Vec<usize>,
    /// For every other path, the step at which it lost to the best.
    pub lost: Vec<(usize, Reason)>,
}

/// Selects the best of `paths` (`None` if empty or all unreachable), with
/// deterministic MED: paths are grouped by neighbouring AS, MED decides
/// within each group, then the group winners are compared — so the result
/// does not depend on the order the paths arrived in.
pub fn select(paths: &[Candidate], opts: DecisionOptions, max_paths: usize) -> Option<Selection> {
    let reachable: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].igp_cost.is_some()).collect();
    if reachable.is_empty() {
        return None;
    }
    let better = |i: usize, j: usize| compare(&paths[i], &paths[j], opts).0 == Ordering::Less;
    // Winner of each neighbouring-AS group (MED applies within it).
    let mut group_best: Vec<usize> = Vec::new();
    for &i in &reachable {
        match group_best.iter_mut().find(|g| paths[**g].neighbor_as == paths[i].neighbor_as) {
            Some(g) if better(i, *g) => *g = i,
            Some(_) => {}
            None => group_best.push(i),
        }
    }
    let mut best = group_best[0];
    for &g in &group_best[1..] {
        if better(g, best) {
            best = g;
        }
    }
    let mut multipath: Vec<usize> =
        reachable.iter().copied().filter(|&i| i == best || multipath_equal(&paths[best], &paths[i], opts)).collect();
    multipath.sort_by(|&i, &j| compare(&paths[i], &paths[j], opts).0);
    multipath.truncate(max_paths.max(1));
    if !multipath.contains(&best) {
        multipath.insert(0, best);
    }
    let lost = (0..paths.len())
        .filter(|&i| i != best)
        .map(|i| (i, compare(&paths[best], &paths[i], opts).1.unwrap_or(Reason::PeerAddress)))
        .collect();
    Some(Selection { best, multipath, lost })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(peer: u8) -> Candidate {
        Candidate {
            local_pref: 100,
            as_path_len: 2,
            origin: Origin::Igp,
            med: None,
            neighbor_as: 65001,
            ebgp: true,
            igp_cost: Some(0),
            router_id: Ipv4Addr::new(10, 0, 0, peer),
            cluster_list_len: 0,
            peer_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)),
            local: false,
            llgr_stale: false,
        }
    }

    fn loses_at(a: Candidate, b: Candidate, r: Reason) {
        let o = DecisionOptions::default();
        assert_eq!(compare(&a, &b, o), (Ordering::Less, Some(r)), "a must beat b at {r:?}");
        assert_eq!(compare(&b, &a, o), (Ordering::Greater, Some(r)));
    }

    #[test]
    fn each_step_in_rfc_order() {
        let mut b = c(1);
        b.igp_cost = None;
        loses_at(c(2), b, Reason::NextHopUnreachable);
        // RFC 9494 §4.3: long-lived stale loses before local preference, even to a worse path.
        let mut b = c(1);
        b.llgr_stale = true;
        b.local = true;
        let mut a = c(2);
        a.local_pref = 10;
        loses_at(a, b, Reason::LongLivedStale);
        let mut a = c(2);
        a.local = true;
        a.local_pref = 50;
        loses_at(a, c(1), Reason::NotLocal);
        let mut a = c(2);
        a.local_pref = 200;
        a.as_path_len = 9;
        loses_at(a, c(1), Reason::LocalPref);
        let mut b = c(1);
        b.as_path_len = 3;
        loses_at(c(2), b, Reason::AsPathLength);
        let mut b = c(1);
        b.origin = Origin::Incomplete;
        loses_at(c(2), b, Reason::Origin);
        let mut b = c(1);
        b.med = Some(10);
        loses_at(c(2), b, Reason::Med);
        let mut b = c(1);
        b.ebgp = false;
        loses_at(c(2), b, Reason::Ibgp);
        let mut b = c(1);
        b.igp_cost = Some(5);
        loses_at(c(2), b, Reason::IgpCost);
        loses_at(c(1), c(2), Reason::RouterId);
        let (mut a, mut b) = (c(1), c(1));
        b.cluster_list_len = 1;
        a.peer_addr = "10.0.0.9".parse().unwrap();
        loses_at(a, b, Reason::ClusterListLength);
        let (a, mut b) = (c(1), c(1));
        b.peer_addr = "10.0.0.9".parse().unwrap();
        loses_at(a, b, Reason::PeerAddress);
    }

    #[test]
    fn med_is_compared_only_within_a_neighbouring_as_unless_asked() {
        let mut a = c(2);
        a.med = Some(100);
        a.neighbor_as = 65002;
        let b = c(1);
        // Different neighbouring AS: MED is skipped, the router ID decides.
        assert_eq!(compare(&a, &b, DecisionOptions::default()), (Ordering::Greater, Some(Reason::RouterId)));
        let always = DecisionOptions { always_compare_med: true, ..Default::default() };
        assert_eq!(compare(&a, &b, always), (Ordering::Greater, Some(Reason::Med)));
    }

    #[test]
    fn deterministic_med_does_not_depend_on_arrival_order() {
        // The classic MED cycle: A (AS1, MED 10), B (AS2, MED 0), C (AS1, MED 5)
        // with router IDs making pairwise order matter.
        let mut p = [c(3), c(1), c(2)];
        p[0].neighbor_as = 1;
        p[0].med = Some(10);
        p[1].neighbor_as = 2;
        p[1].med = Some(0);
        p[2].neighbor_as = 1;
        p[2].med = Some(5);
        let o = DecisionOptions::default();
        let first = select(&p, o, 1).unwrap();
        let winner = p[first.best].clone();
        for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let q: Vec<Candidate> = perm.iter().map(|&i| p[i].clone()).collect();
            let s = select(&q, o, 1).unwrap();
            assert_eq!(q[s.best], winner, "order {perm:?}");
        }
    }

    #[test]
    fn ecmp_within_a_neighbouring_as_and_across_with_relax() {
        let mut p = vec![c(1), c(2), c(3)];
        p[2].neighbor_as = 65009; // an anycast path from another cluster
        let s = select(&p, DecisionOptions::default(), 8).unwrap();
        assert_eq!(s.best, 0);
        assert_eq!(s.multipath, vec![0, 1]);
        let relax = DecisionOptions { multipath_relax: true, ..Default::default() };
        assert_eq!(select(&p, relax, 8).unwrap().multipath, vec![0, 1, 2]);
        assert_eq!(select(&p, relax, 2).unwrap().multipath, vec![0, 1], "capped at max paths");
        let mut longer = p.clone();
        longer[1].as_path_len = 3;
        assert_eq!(select(&longer, relax, 8).unwrap().multipath, vec![0, 2]);
    }

    #[test]
    fn losers_say_why() {
        let mut p = vec![c(1), c(2), c(3)];
        p[1].local_pref = 50;
        p[2].igp_cost = None;
        let s = select(&p, DecisionOptions::default(), 1).unwrap();
        assert_eq!(s.best, 0);
        assert_eq!(s.lost, vec![(1, Reason::LocalPref), (2, Reason::NextHopUnreachable)]);
        assert!(select(&[p[2].clone()], DecisionOptions::default(), 1).is_none());
    }
}
