//! Read-only queries for `show` and metrics: paths per prefix with why
//! each lost, used paths, sizes, per-peer counters, the selection deferral
//! in progress.

use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use crate::rib::attrs::PathAttrs;
use crate::rib::checks::IgnoredCounts;
use crate::rib::decision::Reason;
use crate::rib::table::{Path, PeerId};
use crate::wire::PathAttribute;

use super::{decision_input, DeferralWait, Rib};

/// Selection deferral in progress (`show peers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferralView {
    /// When it ends at the latest.
    pub until: Instant,
    /// The peers it waits for, by name, and why.
    pub waiting: Vec<(String, DeferralWait)>,
}

/// One path as `show routes` presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathView {
    /// The peer (`None`: originated here).
    pub peer: Option<String>,
    /// ADD-PATH identifier.
    pub path_id: u32,
    /// Attributes.
    pub attrs: Arc<PathAttrs>,
    /// Best path.
    pub best: bool,
    /// In the ECMP set.
    pub used: bool,
    /// Stale (graceful restart or refresh under way).
    pub stale: bool,
    /// Why it lost, when it is not used.
    pub reason: Option<Reason>,
}

/// Sizes for `show` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RibStats {
    /// Prefixes per family (IPv4, IPv6).
    pub prefixes: [usize; 2],
    /// Paths, all families.
    pub paths: usize,
    /// Distinct attribute sets.
    pub attr_sets: usize,
    /// Update groups.
    pub groups: usize,
    /// Bytes the tables and attribute sets take (estimated from their layout).
    pub bytes: usize,
}

impl Rib {
    /// The peer's name.
    pub fn peer_name(&self, peer: PeerId) -> Option<&str> {
        self.peer(peer).map(|p| p.cfg.name.as_str())
    }

    /// Prefixes accepted from the peer.
    pub fn accepted(&self, peer: PeerId) -> usize {
        self.peer(peer).map_or(0, |p| p.accepted)
    }

    /// How many paths of the peer are kept before import policy
    /// ([`PeerConfig::keep_received`](super::PeerConfig::keep_received);
    /// counted against its prefix limit).
    pub fn kept_received(&self, peer: PeerId) -> usize {
        self.peer(peer).map_or(0, |s| s.received.v4.len() + s.received.v6.len())
    }

    /// How many UPDATEs from the peer had routes or attributes the RIB did not
    /// take as they came, by reason
    /// ([`Ignored`](crate::rib::checks::Ignored)); for metrics.
    pub fn ignored(&self, peer: PeerId) -> IgnoredCounts {
        self.peer(peer).map_or_else(IgnoredCounts::default, |p| p.ignored)
    }

    /// Selection deferral in progress: until when, and whom it waits for.
    pub fn deferral(&self, now: Instant) -> Option<DeferralView> {
        let until = self.defer_until?;
        let waiting = self
            .peers
            .iter()
            .flatten()
            .filter_map(|p| self.deferral_wait(p, now).map(|w| (p.cfg.name.clone(), w)))
            .collect();
        Some(DeferralView { until, waiting })
    }

    /// Every path to the prefixes `filter` selects (all when `None`; a
    /// prefix selects itself, the prefixes inside it and those covering its
    /// address), best first, with why each unused one lost.
    pub fn routes(&self, filter: Option<IpNet>) -> Vec<(IpNet, Vec<PathView>)> {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let wanted = |p: IpNet| filter.is_none_or(|f| f.contains(&p) || p.contains(&f.addr()));
        let mut out: Vec<(IpNet, Vec<PathView>)> = Vec::new();
        for (pfx, paths) in self.fams.v4.table.iter() {
            if wanted(IpNet::V4(*pfx)) {
                out.push((IpNet::V4(*pfx), self.view(paths, self.fams.v4.table.reasons(pfx, &d))));
            }
        }
        for (pfx, paths) in self.fams.v6.table.iter() {
            if wanted(IpNet::V6(*pfx)) {
                out.push((IpNet::V6(*pfx), self.view(paths, self.fams.v6.table.reasons(pfx, &d))));
            }
        }
        out.sort_by_key(|a| a.0);
        out
    }

    /// Every prefix with its paths, best first, without the reasons
    /// [`Rib::routes`] works out for each: for a caller that looks at every
    /// prefix and explains a few (with [`Rib::routes`] of one prefix).
    pub fn paths(&self) -> impl Iterator<Item = (IpNet, &[Path])> + '_ {
        let v4 = self.fams.v4.table.iter().map(|(p, paths)| (IpNet::V4(*p), &paths[..]));
        let v6 = self.fams.v6.table.iter().map(|(p, paths)| (IpNet::V6(*p), &paths[..]));
        v4.chain(v6)
    }

    /// The paths to one prefix, best first (none when there are none).
    pub fn paths_of(&self, prefix: IpNet) -> &[Path] {
        let paths = match prefix {
            IpNet::V4(p) => self.fams.v4.table.get(&p),
            IpNet::V6(p) => self.fams.v6.table.get(&p),
        };
        paths.map_or(&[], |p| &p[..])
    }

    /// Starts (or stops) keeping a journal of the prefixes whose paths are
    /// added, replaced or removed, for a caller that looks again only at
    /// what changed ([`Rib::take_changes`]). Off by default: a daemon has
    /// no reader for it.
    pub fn track_changes(&mut self, on: bool) {
        self.fams.v4.table.track(on);
        self.fams.v6.table.track(on);
    }

    /// Whether a journal of changes is kept ([`Rib::track_changes`]).
    pub fn tracks_changes(&self) -> bool {
        self.fams.v4.table.tracks()
    }

    /// The prefixes whose paths changed since the journal was last taken,
    /// sorted, each once; empty when no journal is kept.
    pub fn take_changes(&mut self) -> Vec<IpNet> {
        let v4 = self.fams.v4.table.take_journal().into_iter().map(IpNet::V4);
        let mut out: Vec<IpNet> = v4.chain(self.fams.v6.table.take_journal().into_iter().map(IpNet::V6)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn view(&self, paths: &[Path], reasons: Vec<Option<Reason>>) -> Vec<PathView> {
        paths
            .iter()
            .zip(reasons)
            .enumerate()
            .map(|(i, (p, reason))| PathView {
                peer: if p.peer.is_local() { None } else { self.peer_name(p.peer).map(str::to_string) },
                path_id: p.path_id,
                best: i == 0 && p.is_used(),
                used: p.is_used(),
                stale: p.is_stale(),
                reason,
                attrs: p.attrs.clone(),
            })
            .collect()
    }

    /// The used paths of `prefix` (best first): what the FIB installs.
    pub fn used(&self, prefix: IpNet) -> Vec<Path> {
        match prefix {
            IpNet::V4(p) => self.fams.v4.table.used(&p).into_vec(),
            IpNet::V6(p) => self.fams.v6.table.used(&p).into_vec(),
        }
    }

    /// Sizes.
    pub fn stats(&self) -> RibStats {
        let attr_bytes = self.interner.len()
            * (std::mem::size_of::<PathAttrs>() + 16 + 4 * std::mem::size_of::<PathAttribute>() + 8);
        RibStats {
            prefixes: [self.fams.v4.table.len(), self.fams.v6.table.len()],
            paths: self.fams.v4.table.path_count() + self.fams.v6.table.path_count(),
            attr_sets: self.interner.len(),
            groups: self.groups.iter().filter(|g| !g.members.is_empty()).count(),
            bytes: self.fams.v4.table.heap_bytes() + self.fams.v6.table.heap_bytes() + attr_bytes,
        }
    }
}
