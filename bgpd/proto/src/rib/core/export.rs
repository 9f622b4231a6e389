//! Routes going out: update groups, MRAI hold and release, the export of a
//! prefix's used paths to a group or one peer (policy, attribute rewriting,
//! next hop), encoding into UPDATEs, sending the whole table, route refresh
//! requests, paused export (backpressure), graceful shutdown.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use crate::nlri::Nlri;
use crate::rib::attrs::PathAttrs;
use crate::rib::policy::{self, DecidedBy, Decision};
use crate::rib::table::{FastMap, Path, PeerId, Used};
use crate::types::{AttrCode, Family};
use crate::wire::{
    pack_announcements, pack_withdrawals, AsPath, Attr, Community, Message, NextHop, PathAttribute, RefreshSubtype,
    RouteRefresh, Update,
};

use super::{
    fib_priority, forwarding, set_local_pref, FibRoute, Group, GroupKey, Held, NextHopMode, Output, PeerConfig, Rib,
    RibPrefix, SessionInfo,
};

/// Why a used path chosen for a peer is not sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NotSent {
    /// iBGP-learned towards iBGP, not reflected (RFC 4456 §8).
    Reflection,
    /// Export policy rejected it.
    Policy(DecidedBy),
    /// No next hop of the family for the peer.
    NoNextHop,
}

/// Where a route came from, as export rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provenance {
    Local,
    Ebgp,
    IbgpClient,
    IbgpNonClient,
}

impl Rib {
    /// The peer asks for the table again (ROUTE-REFRESH): it gets it, framed
    /// by BoRR/EoRR when enhanced route refresh was negotiated.
    pub fn refresh_requested(&mut self, peer: PeerId, family: Family, now: Instant) {
        self.now = Some(now);
        if self.deferring(now) {
            return;
        }
        let Some(s) = self.peer(peer).and_then(|s| s.session.as_ref()) else { return };
        if !s.families.contains(family) {
            return;
        }
        let enhanced = s.enhanced_refresh;
        let rr = |subtype| Message::RouteRefresh(RouteRefresh { family, subtype, orf: Vec::new() });
        if enhanced {
            self.out.push_back(Output::Message(peer, rr(RefreshSubtype::BORR)));
        }
        match family {
            Family::IPV4_UNICAST => self.send_family::<Ipv4Net>(peer),
            Family::IPV6_UNICAST => self.send_family::<Ipv6Net>(peer),
            _ => {}
        }
        if enhanced {
            self.out.push_back(Output::Message(peer, rr(RefreshSubtype::EORR)));
        }
    }

    /// Stops exporting to the peer (its connection does not take what it is
    /// sent: the daemon's queue towards it is full). It leaves its update
    /// group; what changes meanwhile is remembered per prefix, not encoded
    /// ([`PeerState::paused`](super::PeerState::paused)), and sent by
    /// [`Rib::resume_export`]. No-op without a session or when already paused.
    pub fn pause_export(&mut self, peer: PeerId) {
        let Some(state) = self.peer_mut(peer) else { return };
        if state.session.is_none() || state.paused.is_some() {
            return;
        }
        let group = state.group;
        let mut paused = Held::default();
        // What its group holds back (MRAI) was sent to no member yet.
        if let Some(g) = group.and_then(|g| self.groups.get(g)) {
            hold(&mut paused.v4, &g.held.v4);
            hold(&mut paused.v6, &g.held.v6);
        }
        self.leave_group(peer);
        if let Some(state) = self.peer_mut(peer) {
            state.paused = Some(paused);
        }
    }

    /// Whether export to the peer is paused.
    pub fn export_paused(&self, peer: PeerId) -> bool {
        self.peer(peer).is_some_and(|s| s.paused.is_some())
    }

    /// Resumes export to a paused peer: it is sent, from the Loc-RIB as it is
    /// now, the difference for every prefix that changed while it was paused,
    /// and rejoins its update group.
    pub fn resume_export(&mut self, peer: PeerId, now: Instant) {
        self.now = Some(now);
        // Changes not flushed yet go to the groups, and to this peer's backlog.
        self.flush_out();
        let Some(paused) = self.peer_mut(peer).and_then(|s| s.paused.take()) else { return };
        if !self.deferring(now) {
            self.export_to::<Ipv4Net>(peer, &paused.v4);
            self.export_to::<Ipv6Net>(peer, &paused.v6);
        }
        self.join_group(peer);
    }

    /// Exports changes (prefix → used paths it was sent, used paths now) to
    /// one peer alone.
    fn export_to<P: RibPrefix>(&mut self, peer: PeerId, batch: &FastMap<P, (Used, Used)>) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        if batch.is_empty() || !s.families.contains(P::FAMILY) {
            return;
        }
        let key = self.group_key(&state.cfg, s);
        let mut cache = ExportCache::default();
        let mut build = Build::<P>::new(&key);
        for (prefix, (old, now)) in batch {
            let a = self.export(&key, *prefix, old, Some(peer), &mut cache);
            let b = self.export(&key, *prefix, now, Some(peer), &mut cache);
            build.diff(*prefix, &a, &b);
        }
        self.emit(vec![peer], &key, build);
    }

    /// Sends `peer` the difference between what the old configuration
    /// (its group key holds its policy) exported and what the new one does.
    pub(super) fn reexport<P: RibPrefix>(
        &mut self,
        peer: PeerId,
        old: &GroupKey,
        new: &GroupKey,
        before: &FastMap<P, (Used, Used)>,
    ) {
        let mut build = Build::<P>::new(new);
        let mut old_cache = ExportCache::default();
        let mut new_cache = ExportCache::default();
        let table = &P::fam_ref(&self.fams).table;
        for (prefix, paths) in table.iter() {
            let used: SmallVec<[Path; 1]> = paths.iter().take_while(|p| p.is_used()).cloned().collect();
            let was = before.get(prefix).map_or(&used, |(old, _)| old);
            let a = self.export(old, *prefix, was, Some(peer), &mut old_cache);
            let b = self.export(new, *prefix, &used, Some(peer), &mut new_cache);
            build.diff(*prefix, &a, &b);
        }
        // Prefixes that are gone altogether since.
        for (prefix, (was, _)) in before.iter().filter(|(p, _)| table.get(p).is_none()) {
            let a = self.export(old, *prefix, was, Some(peer), &mut old_cache);
            build.diff(*prefix, &a, &[]);
        }
        self.emit(vec![peer], new, build);
    }

    pub(super) fn group_key(&self, cfg: &PeerConfig, s: &SessionInfo) -> GroupKey {
        GroupKey {
            policy: cfg.policy.clone(),
            ibgp: !cfg.ebgp(),
            rr_client: cfg.rr_client,
            local_as: cfg.local_as,
            next_hop_mode: cfg.next_hop_mode,
            local_v4: s.local_v4,
            local_v6: s.local_v6,
            shared_v4: s.shared_v4,
            shared_v6: s.shared_v6,
            families: s.families,
            long_lived: s.long_lived,
            four_octet_as: s.tx.four_octet_as,
            add_path: s.tx.add_path,
            add_path_send: cfg.add_path_send,
            extended_message: s.tx.extended_message,
            extended_next_hop: s.tx.extended_next_hop.contains(Family::IPV4_UNICAST),
            mrai: cfg.mrai,
        }
    }

    pub(super) fn join_group(&mut self, peer: PeerId) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        if state.paused.is_some() {
            // Rejoins when its export resumes.
            return;
        }
        let key = self.group_key(&state.cfg, s);
        // Found by hashing the key (policy data included), confirmed by
        // comparing it: equal policies share a group, and only those.
        let g = match self.group_index.get(&key) {
            Some(&g) => g,
            None => {
                let g = match self.groups.iter().position(|g| g.members.is_empty()) {
                    Some(g) => {
                        self.groups[g].key = key.clone();
                        self.groups[g].held = Held::default();
                        g
                    }
                    None => {
                        self.groups.push(Group { key: key.clone(), members: Vec::new(), held: Held::default() });
                        self.groups.len() - 1
                    }
                };
                self.group_index.insert(key, g);
                g
            }
        };
        self.groups[g].members.push(peer);
        if let Some(s) = self.peer_mut(peer) {
            s.group = Some(g);
        }
    }

    pub(super) fn leave_group(&mut self, peer: PeerId) {
        let Some(g) = self.peer_mut(peer).and_then(|s| s.group.take()) else { return };
        if let Some(group) = self.groups.get_mut(g) {
            group.members.retain(|m| *m != peer);
            if group.members.is_empty() {
                self.group_index.remove(&group.key);
            }
        }
    }

    fn source(&self, p: &Path) -> Provenance {
        if p.peer.is_local() {
            return Provenance::Local;
        }
        match self.peer(p.peer) {
            Some(s) if s.cfg.ebgp() => Provenance::Ebgp,
            Some(s) if s.cfg.rr_client => Provenance::IbgpClient,
            _ => Provenance::IbgpNonClient,
        }
    }

    /// What the group is sent for `prefix` whose used paths are `used`:
    /// (path identifier, attributes) pairs; one pair without ADD-PATH.
    pub(super) fn export<P: RibPrefix>(
        &self,
        g: &GroupKey,
        prefix: P,
        used: &[Path],
        exclude: Option<PeerId>,
        cache: &mut ExportCache,
    ) -> SmallVec<[(u32, Arc<PathAttrs>); 1]> {
        let mut out = SmallVec::new();
        let addpath = g.add_path.contains(P::FAMILY);
        let n = if addpath {
            if g.add_path_send == 0 {
                usize::MAX
            } else {
                g.add_path_send as usize
            }
        } else {
            1
        };
        // A route never goes back to the peer it came from: with ADD-PATH its
        // other paths still may; without, nothing is sent (as BIRD does).
        // RFC 9494 §4.5: a long-lived stale path goes only to peers that
        // sent the LLGR capability; to the others the prefix is withdrawn.
        let sendable = |p: &&Path| Some(p.peer) != exclude && (g.long_lived || !p.attrs.is_llgr_stale());
        let chosen: SmallVec<[&Path; 2]> = if addpath {
            used.iter().filter(sendable).take(n).collect()
        } else {
            used.first().filter(sendable).into_iter().collect()
        };
        for p in chosen {
            if let Ok((a, _)) = self.export_path(g, prefix.into(), P::FAMILY, p, cache) {
                let mut id = if addpath { out_path_id(p) } else { 0 };
                // Two paths of one prefix folding to one identifier (received
                // identifiers differing only in their high bits): the later
                // one takes the next free value.
                while addpath && out.iter().any(|(o, _)| *o == id) {
                    id = id.wrapping_add(1);
                }
                out.push((id, a));
            }
        }
        out
    }

    /// Whether one used path chosen for the group is sent, and with which
    /// attributes: route reflection (RFC 4456 §8), export policy (and the
    /// step that decided), this speaker's changes ([`Rib::transform`]).
    pub(super) fn export_path(
        &self,
        g: &GroupKey,
        prefix: IpNet,
        family: Family,
        p: &Path,
        cache: &mut ExportCache,
    ) -> Result<(Arc<PathAttrs>, DecidedBy), NotSent> {
        let src = self.source(p);
        let allowed = match (g.ibgp, src) {
            (false, _) | (true, Provenance::Local | Provenance::Ebgp) => true,
            (true, Provenance::IbgpClient) => self.cfg.cluster_id.is_some(),
            (true, Provenance::IbgpNonClient) => self.cfg.cluster_id.is_some() && g.rr_client,
        };
        if !allowed {
            return Err(NotSent::Reflection);
        }
        let decision = g.policy.export(prefix, &p.attrs, !p.peer.is_local());
        let attrs = match decision {
            Decision { accept: false, by, .. } => return Err(NotSent::Policy(by)),
            Decision { operations: [], .. } => {
                let key = (Arc::as_ptr(&p.attrs), p.peer);
                match cache.by_source.get(&key) {
                    Some(a) => a.clone(),
                    None => {
                        let a = self.transform(g, family, p, &p.attrs, src).map(|a| cache.share(a));
                        cache.by_source.insert(key, a.clone());
                        a
                    }
                }
            }
            Decision { operations, .. } => {
                let m = policy::apply(operations, &p.attrs);
                self.transform(g, family, p, &m, src).map(|a| cache.share(a))
            }
        };
        attrs.map(|a| (a, decision.by)).ok_or(NotSent::NoNextHop)
    }

    /// The attributes sent to the group for path `p` (with `attrs` after
    /// export policy): AS_PATH prepend and attribute scrubbing for eBGP,
    /// LOCAL_PREF and reflection attributes for iBGP, the next hop.
    fn transform(
        &self,
        g: &GroupKey,
        family: Family,
        p: &Path,
        attrs: &PathAttrs,
        src: Provenance,
    ) -> Option<PathAttrs> {
        let mut v: Vec<PathAttribute> = attrs
            .attributes
            .iter()
            .filter(|a| !matches!(a.value.code(), AttrCode::NEXT_HOP | AttrCode::AS4_PATH | AttrCode::AS4_AGGREGATOR))
            .cloned()
            .collect();
        if !v.iter().any(|a| a.value.code() == AttrCode::AS_PATH) {
            v.push(PathAttribute::new(Attr::AsPath(AsPath::default())));
        }
        if !v.iter().any(|a| a.value.code() == AttrCode::ORIGIN) {
            v.push(PathAttribute::new(Attr::Origin(crate::wire::Origin::Incomplete)));
        }
        if g.ibgp {
            if !v.iter().any(|a| a.value.code() == AttrCode::LOCAL_PREF) {
                v.push(PathAttribute::new(Attr::LocalPref(100)));
            }
            if matches!(src, Provenance::IbgpClient | Provenance::IbgpNonClient) {
                if let Some(cluster) = self.cfg.cluster_id {
                    let originator = self.infos.get(p.peer.0 as usize).and_then(Option::as_ref).map(|i| i.router_id);
                    if !v.iter().any(|a| a.value.code() == AttrCode::ORIGINATOR_ID) {
                        if let Some(o) = originator {
                            v.push(PathAttribute::new(Attr::OriginatorId(o)));
                        }
                    }
                    match v.iter_mut().find(|a| a.value.code() == AttrCode::CLUSTER_LIST) {
                        Some(PathAttribute { value: Attr::ClusterList(c), .. }) => c.insert(0, cluster),
                        _ => v.push(PathAttribute::new(Attr::ClusterList([cluster].into_iter().collect()))),
                    }
                }
            }
        } else {
            v.retain(|a| {
                let c = a.value.code();
                let internal = matches!(c, AttrCode::LOCAL_PREF | AttrCode::ORIGINATOR_ID | AttrCode::CLUSTER_LIST);
                // RFC 4271 §5.1.4: a MED received from one AS is not sent to another.
                !(internal || (c == AttrCode::MULTI_EXIT_DISC && src != Provenance::Local))
            });
            for a in v.iter_mut() {
                if let Attr::AsPath(path) = &mut a.value {
                    path.prepend(g.local_as, 1);
                }
            }
        }
        // Third-party next hop (RFC 4271 §5.1.3): towards an external peer on
        // a subnet we share, a learned route whose next hop is on that subnet
        // keeps it.
        let on_shared = |nh: Option<IpAddr>| match nh {
            Some(IpAddr::V4(a)) => g.shared_v4.is_some_and(|n| n.contains(&a)),
            Some(IpAddr::V6(a)) => g.shared_v6.is_some_and(|n| n.contains(&a)),
            None => false,
        };
        let keep = match g.next_hop_mode {
            NextHopMode::SelfAddr => false,
            NextHopMode::Keep => src != Provenance::Local,
            NextHopMode::Auto if g.ibgp => src != Provenance::Local && src != Provenance::Ebgp,
            NextHopMode::Auto => src != Provenance::Local && on_shared(attrs.next_hop),
        };
        let self_v4 = g.local_v4.map(IpAddr::V4);
        let self_v6 = g.local_v6.map(IpAddr::V6);
        // RFC 8950 §4: IPv4 NLRI carry an IPv6 next hop only where the
        // extended next hop capability was negotiated for them.
        let v6_allowed = family != Family::IPV4_UNICAST || g.extended_next_hop;
        let (next_hop, link_local) = if keep && attrs.next_hop.is_some_and(|nh| nh.is_ipv4() || v6_allowed) {
            (attrs.next_hop, attrs.link_local)
        } else if family == Family::IPV4_UNICAST {
            // The node's IPv4 address, as Calico gives it; its IPv6 address
            // on the session only for a node without one, where negotiated.
            (self_v4.or(self_v6.filter(|_| g.extended_next_hop)), None)
        } else {
            (self_v6, None)
        };
        let next_hop = next_hop?;
        if let (Family::IPV4_UNICAST, IpAddr::V4(a)) = (family, next_hop) {
            v.push(PathAttribute::new(Attr::NextHop(a)));
        }
        if self.graceful_shutdown {
            // RFC 8326 §4.1: this speaker is about to go away.
            crate::rib::attrs::add_community(&mut v, Community::GRACEFUL_SHUTDOWN);
            if g.ibgp {
                set_local_pref(&mut v, 0);
            }
        }
        v.sort_by_key(|a| a.value.code().0);
        Some(PathAttrs { attributes: v, next_hop: Some(next_hop), link_local, priority: None })
    }

    /// Decommissioning (RFC 8326): with `on`, every route this speaker sends
    /// carries the GRACEFUL_SHUTDOWN community, and LOCAL_PREF 0 towards
    /// iBGP peers, so that peers move traffic to other paths before the
    /// sessions close. Every established peer is sent its routes again.
    pub fn set_graceful_shutdown(&mut self, on: bool) {
        if self.graceful_shutdown == on {
            return;
        }
        self.flush_out();
        self.graceful_shutdown = on;
        if self.defer_until.is_some() {
            return;
        }
        let ups: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.session.is_some()))
            .map(|i| PeerId(i as u16))
            .collect();
        for p in ups {
            self.send_table(p, false);
        }
    }

    /// Whether [`Rib::set_graceful_shutdown`] is on.
    pub fn graceful_shutdown(&self) -> bool {
        self.graceful_shutdown
    }

    /// Exports what changed since the last flush to every update group.
    pub fn flush(&mut self, now: Instant) {
        self.now = Some(now);
        self.flush_out();
    }

    /// [`Rib::flush`] at the time of the last input (every input that
    /// changes routes ends with it).
    pub(super) fn flush_out(&mut self) {
        if self.defer_until.is_some() {
            self.fams.v4.dirty.clear();
            self.fams.v6.dirty.clear();
            return;
        }
        if self.cfg.fib {
            let mut changes = Vec::new();
            fib_changes(&self.fams.v4.dirty, &mut changes);
            fib_changes(&self.fams.v6.dirty, &mut changes);
            if !changes.is_empty() {
                self.out.push_back(Output::Fib(changes));
            }
        }
        self.flush_family::<Ipv4Net>();
        self.flush_family::<Ipv6Net>();
        if self.interner.len() > 1024 && self.interner.len() > 2 * (self.paths_hint() + 1) {
            self.interner.sweep();
        }
    }

    fn paths_hint(&self) -> usize {
        (self.fams.v4.table.path_count() + self.fams.v6.table.path_count()).min(1 << 20)
    }

    fn flush_family<P: RibPrefix>(&mut self) {
        let dirty = std::mem::take(&mut P::fam(&mut self.fams).dirty);
        if dirty.is_empty() {
            return;
        }
        for state in self.peers.iter_mut().flatten() {
            let (Some(paused), Some(s)) = (state.paused.as_mut(), &state.session) else { continue };
            if s.families.contains(P::FAMILY) {
                hold(P::held(paused), &dirty);
            }
        }
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.members.is_empty() || !g.key.families.contains(P::FAMILY) {
                continue;
            }
            if g.key.mrai.is_zero() {
                self.export_group(gi, &dirty);
                continue;
            }
            // MRAI: changes join what the group holds; withdrawals go at once,
            // announcements when the interval since the last ones is over.
            let now = self.now;
            let group = &mut self.groups[gi];
            let waiting = group.held.until.is_some_and(|t| now.is_some_and(|n| n < t));
            let held = P::held(&mut group.held);
            hold(held, &dirty);
            let batch: FastMap<P, (Used, Used)> = if waiting {
                let gone: Vec<P> = held.iter().filter(|(_, (_, new))| new.is_empty()).map(|(p, _)| *p).collect();
                gone.into_iter().filter_map(|p| held.remove(&p).map(|v| (p, v))).collect()
            } else {
                std::mem::take(held)
            };
            self.send_held(gi, &batch, waiting);
        }
    }

    /// Exports a batch an MRAI group held (or let through), and starts its
    /// interval when the batch announced something.
    fn send_held<P: RibPrefix>(&mut self, gi: usize, batch: &FastMap<P, (Used, Used)>, waiting: bool) {
        if batch.is_empty() {
            return;
        }
        self.export_group(gi, batch);
        let announced = batch.values().any(|(_, new)| !new.is_empty());
        if let (false, true, Some(now)) = (waiting, announced, self.now) {
            let g = &mut self.groups[gi];
            g.held.until = Some(now + g.key.mrai);
        }
    }

    /// Releases what MRAI groups held once their interval is over.
    pub(super) fn release_held(&mut self, now: Instant) {
        for gi in 0..self.groups.len() {
            let g = &mut self.groups[gi];
            if g.held.until.is_none_or(|t| t > now) {
                continue;
            }
            g.held.until = None;
            let v4 = std::mem::take(&mut g.held.v4);
            let v6 = std::mem::take(&mut g.held.v6);
            if g.members.is_empty() {
                continue;
            }
            self.send_held(gi, &v4, false);
            self.send_held(gi, &v6, false);
        }
    }

    /// Exports changes (prefix → used paths before, now) to one update group.
    fn export_group<P: RibPrefix>(&mut self, gi: usize, dirty: &FastMap<P, (Used, Used)>) {
        {
            let g = &self.groups[gi];
            let key = g.key.clone();
            let members = g.members.clone();
            // Members that are the source of a changed route get a stream
            // of their own (their routes are not sent back to them); the
            // others share one.
            let mut member = vec![false; self.peers.len()];
            members.iter().for_each(|m| member[m.0 as usize] = true);
            let mut sources: Vec<PeerId> = Vec::new();
            for (old, now) in dirty.values() {
                for p in old.iter().chain(now.iter()) {
                    if !p.peer.is_local() && member.get(p.peer.0 as usize) == Some(&true) && !sources.contains(&p.peer)
                    {
                        sources.push(p.peer);
                    }
                }
            }
            let mut cache = ExportCache::default();
            let shared: Vec<PeerId> = members.iter().copied().filter(|m| !sources.contains(m)).collect();
            let mut streams: Vec<(Vec<PeerId>, Option<PeerId>)> =
                sources.iter().map(|s| (vec![*s], Some(*s))).collect();
            if !shared.is_empty() {
                streams.push((shared, None));
            }
            for (to, exclude) in streams {
                let mut build = Build::<P>::new(&key);
                for (prefix, (old, now)) in dirty {
                    let a = self.export(&key, *prefix, old, exclude, &mut cache);
                    let b = self.export(&key, *prefix, now, exclude, &mut cache);
                    build.diff(*prefix, &a, &b);
                }
                self.emit(to, &key, build);
            }
        }
    }

    /// Sends `peer` the whole table of its families (and End-of-RIB).
    pub(super) fn send_table(&mut self, peer: PeerId, eor: bool) {
        let Some(fams) = self.peer(peer).and_then(|s| s.session.as_ref()).map(|s| s.families) else { return };
        for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            if !fams.contains(f) {
                continue;
            }
            if f == Family::IPV4_UNICAST {
                self.send_family::<Ipv4Net>(peer);
            } else {
                self.send_family::<Ipv6Net>(peer);
            }
            if eor {
                self.out.push_back(Output::Message(peer, Message::Update(Update::end_of_rib(f))));
            }
        }
    }

    fn send_family<P: RibPrefix>(&mut self, peer: PeerId) {
        let Some(state) = self.peer(peer) else { return };
        let Some(s) = &state.session else { return };
        let key = self.group_key(&state.cfg, s);
        let mut cache = ExportCache::default();
        let mut build = Build::<P>::new(&key);
        for (prefix, paths) in P::fam_ref(&self.fams).table.iter() {
            let used: SmallVec<[Path; 1]> = paths.iter().take_while(|p| p.is_used()).cloned().collect();
            let b = self.export(&key, *prefix, &used, Some(peer), &mut cache);
            build.diff(*prefix, &[], &b);
        }
        self.emit(vec![peer], &key, build);
    }

    fn emit<P: RibPrefix>(&mut self, peers: Vec<PeerId>, key: &GroupKey, build: Build<P>) {
        if build.withdrawn.is_empty() && build.order.is_empty() {
            return;
        }
        let tx = key.tx();
        let mut messages = Vec::new();
        let mut encode = |r: Result<Vec<BytesMut>, crate::EncodeError>, what: &str| match r {
            Ok(v) => messages.extend(v.into_iter().map(BytesMut::freeze)),
            Err(e) => self.out.push_back(Output::Warning(peers[0], format!("cannot encode {what}: {e}"))),
        };
        if !build.withdrawn.is_empty() {
            encode(pack_withdrawals(P::FAMILY, P::announcement(&build.withdrawn), &tx), "withdrawals");
        }
        let mut announced = build.announced;
        for ptr in &build.order {
            let Some((attrs, nlri)) = announced.remove(ptr) else { continue };
            let Some(nh) = next_hop(&attrs) else { continue };
            encode(pack_announcements(P::FAMILY, &attrs.attributes, &nh, P::announcement(&nlri), &tx), "announcements");
        }
        if !messages.is_empty() {
            self.out.push_back(Output::Send { peers, messages });
        }
    }
}

/// Adds changes (prefix → used paths before, now) to what is held back: a
/// prefix already held keeps its "before" (what was last sent) and takes the
/// new "now".
fn hold<P: RibPrefix>(held: &mut FastMap<P, (Used, Used)>, changes: &FastMap<P, (Used, Used)>) {
    for (prefix, (old, new)) in changes {
        match held.entry(*prefix) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1 = new.clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((old.clone(), new.clone()));
            }
        }
    }
}

/// Outgoing attribute sets made during one export run: by source set and
/// peer (the usual case: every prefix with one source set shares one), and
/// by value (so that sets a policy modified per prefix still pack together).
#[derive(Default)]
pub(super) struct ExportCache {
    by_source: FastMap<(*const PathAttrs, PeerId), Option<Arc<PathAttrs>>>,
    by_value: std::collections::HashSet<Arc<PathAttrs>, foldhash::fast::RandomState>,
}

impl ExportCache {
    fn share(&mut self, a: PathAttrs) -> Arc<PathAttrs> {
        if let Some(x) = self.by_value.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.by_value.insert(x.clone());
        x
    }
}

/// The forwarding changes among changed prefixes.
fn fib_changes<P: RibPrefix>(dirty: &FastMap<P, (Used, Used)>, out: &mut Vec<FibRoute>) {
    for (prefix, (old, new)) in dirty {
        let (a, b) = (forwarding(old), forwarding(new));
        // A new priority alone (a BGPFilter's `setPriority` edited) moves the route.
        let priority = if b.is_empty() { None } else { fib_priority(new) };
        let before = if a.is_empty() { None } else { fib_priority(old) };
        if a != b || before != priority {
            out.push(FibRoute { prefix: (*prefix).into(), next_hops: b.into_vec(), priority });
        }
    }
}

/// The path identifier a path is sent with (ADD-PATH): stable for as long
/// as the path exists, distinct between peers.
fn out_path_id(p: &Path) -> u32 {
    (u32::from(p.peer.0.wrapping_add(1)) << 16) | ((p.path_id ^ (p.path_id >> 16)) & 0xffff)
}

fn next_hop(a: &PathAttrs) -> Option<NextHop> {
    match a.next_hop? {
        IpAddr::V4(v) => Some(NextHop::V4(v)),
        IpAddr::V6(global) => Some(NextHop::V6 { global, link_local: a.link_local }),
    }
}

/// UPDATE contents being collected for one group: withdrawals, and
/// announcements by attribute set in first-seen order.
struct Build<P> {
    addpath: bool,
    withdrawn: Vec<Nlri<P>>,
    announced: FastMap<*const PathAttrs, (Arc<PathAttrs>, Vec<Nlri<P>>)>,
    order: Vec<*const PathAttrs>,
}

impl<P: RibPrefix> Build<P> {
    fn new(key: &GroupKey) -> Self {
        Build {
            addpath: key.add_path.contains(P::FAMILY),
            withdrawn: Vec::new(),
            announced: FastMap::default(),
            order: Vec::new(),
        }
    }

    /// Adds what turns `old` (sent before) into `new`.
    fn diff(&mut self, prefix: P, old: &[(u32, Arc<PathAttrs>)], new: &[(u32, Arc<PathAttrs>)]) {
        for (id, _) in old {
            if !new.iter().any(|(n, _)| n == id) {
                self.withdrawn.push(Nlri { path_id: self.addpath.then_some(*id), prefix });
            }
        }
        for (id, a) in new {
            if old.iter().any(|(o, b)| o == id && (Arc::ptr_eq(a, b) || a == b)) {
                continue;
            }
            let ptr = Arc::as_ptr(a);
            let entry = self.announced.entry(ptr).or_insert_with(|| {
                self.order.push(ptr);
                (a.clone(), Vec::new())
            });
            entry.1.push(Nlri { path_id: self.addpath.then_some(*id), prefix });
        }
    }
}
