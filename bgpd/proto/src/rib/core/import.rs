//! Routes coming in: UPDATEs from a peer (loop checks, next-hop and family
//! checks, attributes as kept), the copy kept before import policy, import
//! policy and its re-check, the prefix limit, route refresh from the peer's
//! side (BoRR/EoRR), and routes originated here.

use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::code;
use crate::nlri::Nlri;
use crate::rib::attrs::PathAttrs;
use crate::rib::checks::{next_hop_fault, Ignored, NextHopRules};
use crate::rib::table::{Path, PeerId, STALE};
use crate::types::{AttrCode, Family, FamilySet, AS_TRANS};
use crate::wire::{AsPath, Attr, Community, MpNlri, NextHop, PathAttribute, Update};

use super::{decision_input, fam_index, note, set_local_pref, Output, PeerState, Received, Rib, RibPrefix};
use super::{PolicyStep, Rejection};
use crate::rib::policy::Direction;

impl Rib {
    /// Counts an [`Ignored`] case; the first of its kind in a session is
    /// logged with `detail` (later ones only counted: a peer that sends such
    /// routes sends many).
    fn note_ignored(&mut self, peer: PeerId, kind: Ignored, detail: impl FnOnce() -> String) {
        let Some(s) = self.peer_mut(peer) else { return };
        s.ignored.add(kind);
        if !s.ignored_logged.first(kind) {
            return;
        }
        let msg = format!(
            "{}: {}: {}; further cases in this session are only counted ({})",
            s.cfg.name,
            detail(),
            kind.outcome(),
            kind.name()
        );
        self.out.push_back(Output::Warning(peer, msg));
    }

    /// An UPDATE from the peer (`treat_as_withdraw`: RFC 7606 says its
    /// announcements are withdrawals). Beyond the codec's checks, what needs
    /// the session is checked here ([`crate::rib::checks`]): confederation segments
    /// from an external peer and unusable next hops withdraw the routes
    /// concerned, NLRI of families not negotiated are ignored, AS4_PATH from a
    /// 4-octet speaker is discarded; each case is counted ([`Rib::ignored`]).
    pub fn update(&mut self, peer: PeerId, u: &Update, treat_as_withdraw: bool, now: Instant) {
        self.now = Some(now);
        if let Some(f) = u.end_of_rib_family() {
            self.end_of_rib(peer, f, now);
            return;
        }
        // A peer without a session (torn down for max-prefix, say) may still
        // have UPDATEs in flight: they are dropped.
        let Some(state) = self.peer(peer) else { return };
        let Some(session) = &state.session else { return };
        let ebgp = state.cfg.ebgp();
        let four_octet_as = session.tx.four_octet_as;
        let families = session.families;
        let rules = NextHopRules {
            extended_next_hop: session.tx.extended_next_hop,
            local_v4: session.local_v4,
            local_v6: session.local_v6,
        };
        // RFC 5065 §5: bgpd has no confederation, so no eBGP peer is in ours.
        let confed = ebgp && u.as_path().is_some_and(AsPath::has_confed);
        let rejected = if treat_as_withdraw {
            Some(Rejection::TreatAsWithdraw)
        } else if confed {
            Some(Rejection::ConfedFromExternal)
        } else {
            self.loop_check(state, u, four_octet_as)
        };
        if confed {
            let path = u.as_path().map(ToString::to_string).unwrap_or_default();
            self.note_ignored(peer, Ignored::ConfedFromExternal, || {
                format!("AS_PATH {path} has confederation segments")
            });
        }
        if four_octet_as && u.attributes.iter().any(|a| matches!(a.value, Attr::As4Path(_) | Attr::As4Aggregator(_))) {
            self.note_ignored(peer, Ignored::As4FromNewSpeaker, || "AS4_PATH/AS4_AGGREGATOR received".to_string());
        }
        for w in &u.withdrawn {
            self.received_withdraw::<Ipv4Net>(peer, w);
        }
        if let Some(un) = u.mp_unreach() {
            match (&un.nlri, un.family) {
                (MpNlri::V4(v), Family::IPV4_UNICAST) => {
                    v.iter().for_each(|n| self.received_withdraw::<Ipv4Net>(peer, n))
                }
                (MpNlri::V6(v), Family::IPV6_UNICAST) => {
                    v.iter().for_each(|n| self.received_withdraw::<Ipv6Net>(peer, n))
                }
                _ => {}
            }
        }
        let mp = u.mp_reach().filter(|r| !r.nlri.is_empty());
        if u.nlri.is_empty() && mp.is_none() {
            return;
        }
        if !u.nlri.is_empty() {
            let nh = u.next_hop().map(NextHop::V4);
            match self.usable(peer, Family::IPV4_UNICAST, nh.as_ref(), families, &rules) {
                None => {}
                Some(fault) => match fault.or_else(|| rejected.clone()) {
                    None => {
                        let attrs = self.received_attrs(u, false, ebgp, four_octet_as);
                        u.nlri.iter().for_each(|n| self.received_announce::<Ipv4Net>(peer, n, &attrs));
                    }
                    Some(why) => u.nlri.iter().for_each(|n| self.received_reject::<Ipv4Net>(peer, n, &why)),
                },
            }
        }
        if let Some(r) = mp {
            match self.usable(peer, r.family, Some(&r.next_hop), families, &rules) {
                None => {}
                Some(fault) => match (&r.nlri, fault.or_else(|| rejected.clone())) {
                    (MpNlri::V4(v), None) => {
                        let a = self.received_attrs(u, true, ebgp, four_octet_as);
                        v.iter().for_each(|n| self.received_announce::<Ipv4Net>(peer, n, &a))
                    }
                    (MpNlri::V6(v), None) => {
                        let a = self.received_attrs(u, true, ebgp, four_octet_as);
                        v.iter().for_each(|n| self.received_announce::<Ipv6Net>(peer, n, &a))
                    }
                    (MpNlri::V4(v), Some(why)) => v.iter().for_each(|n| self.received_reject::<Ipv4Net>(peer, n, &why)),
                    (MpNlri::V6(v), Some(why)) => v.iter().for_each(|n| self.received_reject::<Ipv6Net>(peer, n, &why)),
                    _ => {}
                },
            }
        }
        self.check_limit(peer);
        if self.dirty() >= 4096 {
            self.flush_out();
        }
    }

    /// Whether NLRI of `family` with next hop `nh` may be used: `None` when
    /// the family is not one the session negotiated (RFC 4760 §8: the NLRI
    /// are ignored), `Some(Some(why))` when the next hop cannot be right (RFC
    /// 4271 §6.3, RFC 7606 §7.3, RFC 8950: treat-as-withdraw), `Some(None)`
    /// otherwise. A missing next hop is the codec's business (RFC 7606 §3 (d)).
    fn usable(
        &mut self,
        peer: PeerId,
        family: Family,
        nh: Option<&NextHop>,
        families: FamilySet,
        rules: &NextHopRules,
    ) -> Option<Option<Rejection>> {
        if !families.contains(family) || fam_index(family).is_none() {
            self.note_ignored(peer, Ignored::FamilyNotNegotiated, || format!("{family} NLRI"));
            return None;
        }
        let fault = nh.and_then(|nh| next_hop_fault(family, nh, rules));
        if let Some((kind, addr)) = fault {
            self.note_ignored(peer, kind, || format!("{family} NLRI with next hop {addr}"));
        }
        Some(fault.map(|(kind, addr)| Rejection::NextHop { kind, addr }))
    }

    /// AS_PATH loop (with allowas-in), and RFC 4456 §8 ORIGINATOR_ID /
    /// CLUSTER_LIST loops: which one, if any.
    fn loop_check(&self, state: &PeerState, u: &Update, four_octet_as: bool) -> Option<Rejection> {
        let path = u.received_as_path(four_octet_as).unwrap_or_default();
        let allowed = state.cfg.allow_local_as;
        for asn in [state.cfg.local_as, self.cfg.local_as] {
            if path.count(asn) > allowed as usize {
                return Some(Rejection::AsPathLoop { asn, allowed });
            }
        }
        if let Some(Attr::OriginatorId(o)) = u.attr(AttrCode::ORIGINATOR_ID) {
            if *o == self.cfg.router_id {
                return Some(Rejection::OriginatorIsSelf);
            }
        }
        if let (Some(Attr::ClusterList(c)), Some(id)) = (u.attr(AttrCode::CLUSTER_LIST), self.cfg.cluster_id) {
            if c.contains(&id) {
                return Some(Rejection::ClusterLoop);
            }
        }
        None
    }

    /// The attributes of a received UPDATE as the RIB keeps them: 4-octet
    /// AS path reconciled (RFC 6793), and for eBGP, the attributes that must
    /// not cross an AS boundary removed (LOCAL_PREF, RFC 4271 §5.1.5;
    /// ORIGINATOR_ID and CLUSTER_LIST, RFC 4456 §8).
    fn received_attrs(&mut self, u: &Update, mp: bool, ebgp: bool, four_octet_as: bool) -> Arc<PathAttrs> {
        let mut a = PathAttrs::from_update(u, mp);
        let has_as4 = a.attributes.iter().any(|x| matches!(x.value, Attr::As4Path(_) | Attr::As4Aggregator(..)));
        if has_as4 {
            if !four_octet_as {
                reconcile_as4(&mut a.attributes, u);
            }
            // RFC 6793 §4.1: from a 4-octet speaker they are discarded; from a
            // 2-octet one they are merged in: either way never kept nor passed on.
            a.attributes.retain(|x| !matches!(x.value, Attr::As4Path(_) | Attr::As4Aggregator(..)));
        }
        if ebgp {
            a.attributes.retain(|x| {
                !matches!(x.value.code(), AttrCode::LOCAL_PREF | AttrCode::ORIGINATOR_ID | AttrCode::CLUSTER_LIST)
            });
        }
        // RFC 8326 §4.2: the sender is about to go away; its routes lose to
        // any alternative before it does (LOCAL_PREF 0, before import policy).
        if a.has_community(Community::GRACEFUL_SHUTDOWN) {
            set_local_pref(&mut a.attributes, 0);
        }
        self.interner.intern(a)
    }

    /// A path as received: kept before policy when the peer wants that, then announced.
    fn received_announce<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>, attrs: &Arc<PathAttrs>) {
        if let Some(s) = self.peer_mut(peer).filter(|s| s.cfg.keep_received) {
            P::received(&mut s.received).insert((n.prefix, n.path_id.unwrap_or(0)), attrs.clone());
        }
        self.announce(peer, n, attrs);
    }

    /// A path withdrawn by the peer.
    fn received_withdraw<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>) {
        if let Some(s) = self.peer_mut(peer).filter(|s| s.cfg.keep_received) {
            P::received(&mut s.received).remove(&(n.prefix, n.path_id.unwrap_or(0)));
        }
        self.forget_rejection(peer, n.prefix.into());
        self.withdraw(peer, n);
    }

    /// A path the peer announced that cannot be taken (treated as
    /// withdrawn), and why.
    fn received_reject<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>, why: &Rejection) {
        if let Some(s) = self.peer_mut(peer).filter(|s| s.cfg.keep_received) {
            P::received(&mut s.received).remove(&(n.prefix, n.path_id.unwrap_or(0)));
        }
        self.note_rejection(peer, n.prefix.into(), why.clone());
        self.withdraw(peer, n);
    }

    /// Applies the peer's (new) import policy to its kept routes.
    pub(super) fn reimport<P: RibPrefix>(&mut self, peer: PeerId) {
        let kept: Vec<((P, u32), Arc<PathAttrs>)> = match self.peer_mut(peer) {
            Some(s) => P::received(&mut s.received).iter().map(|(k, a)| (*k, a.clone())).collect(),
            None => return,
        };
        for ((prefix, path_id), attrs) in kept {
            self.announce(peer, &Nlri { path_id: Some(path_id), prefix }, &attrs);
        }
    }

    fn announce<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>, attrs: &Arc<PathAttrs>) {
        let Some(state) = self.peers.get(peer.0 as usize).and_then(Option::as_ref) else { return };
        let attrs = if state.import_all {
            attrs.clone()
        } else {
            let prefix: IpNet = n.prefix.into();
            let policy = &state.cfg.policy;
            match policy.import(prefix, attrs) {
                d if !d.accept => {
                    let why = Rejection::Policy(PolicyStep::of(policy, Direction::Import, prefix, d.by));
                    self.note_rejection(peer, prefix, why);
                    return self.withdraw(peer, n);
                }
                d if d.operations.is_empty() => attrs.clone(),
                d => {
                    let a = crate::rib::policy::apply(d.operations, attrs);
                    self.interner.intern(a)
                }
            }
        };
        self.forget_rejection(peer, n.prefix.into());
        let path = Path::new(peer, n.path_id.unwrap_or(0), attrs);
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        let (old, added) = fam.table.update(n.prefix, path, &d);
        if added {
            if let Some(s) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) {
                s.accepted += 1;
            }
        }
        if let Some((old, new)) = old {
            note(&mut fam.dirty, n.prefix, old, new);
        }
    }

    pub(super) fn withdraw<P: RibPrefix>(&mut self, peer: PeerId, n: &Nlri<P>) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        let Some(old) = fam.table.withdraw(n.prefix, peer, n.path_id.unwrap_or(0), &d) else { return };
        if let Some(s) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) {
            s.accepted = s.accepted.saturating_sub(1);
        }
        if let Some((old, new)) = old {
            note(&mut fam.dirty, n.prefix, old, new);
        }
    }

    fn check_limit(&mut self, peer: PeerId) {
        let Some(s) = self.peer_mut(peer) else { return };
        let Some(m) = s.cfg.max_prefix else { return };
        // The copy kept before import policy holds memory too: a peer whose routes
        // policy rejects must not grow it without bound.
        let kept = s.received.v4.len() + s.received.v6.len();
        if s.accepted.max(kept) <= m.limit as usize {
            s.over_limit = false;
            return;
        }
        if s.over_limit {
            return;
        }
        s.over_limit = true;
        let msg = if kept > s.accepted {
            format!(
                "{kept} prefixes received (kept before policy; {} accepted), more than the limit of {}",
                s.accepted, m.limit
            )
        } else {
            format!("{} prefixes received, more than the limit of {}", s.accepted, m.limit)
        };
        if m.teardown {
            self.out.push_back(Output::Teardown { peer, subcode: code::cease::MAX_PREFIXES, reason: msg });
            self.leave_group(peer);
            if let Some(s) = self.peer_mut(peer) {
                s.session = None;
                s.received = Received::default();
            }
            self.drop_paths(peer, |_| true);
            self.flush_out();
        } else {
            self.out.push_back(Output::Warning(peer, msg));
        }
    }

    /// The peer starts re-sending `family` (BoRR, RFC 7313): its paths turn stale.
    pub fn refresh_begin(&mut self, peer: PeerId, family: Family) {
        match family {
            Family::IPV4_UNICAST => self.fams.v4.table.mark(|p| p.peer == peer, STALE),
            Family::IPV6_UNICAST => self.fams.v6.table.mark(|p| p.peer == peer, STALE),
            _ => 0,
        };
    }

    /// The peer finished re-sending `family` (EoRR): what it did not send again goes.
    pub fn refresh_end(&mut self, peer: PeerId, family: Family) {
        match family {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
            _ => {}
        }
        self.flush_out();
    }

    /// Originates `prefix` with `attrs` (ORIGIN, communities; AS_PATH empty),
    /// or with `None` withdraws it.
    pub fn originate(&mut self, prefix: IpNet, attrs: Option<PathAttrs>) {
        let attrs = attrs.map(|a| self.interner.intern(a));
        match (prefix, attrs) {
            (IpNet::V4(p), Some(a)) => self.originate_in::<Ipv4Net>(p, a),
            (IpNet::V6(p), Some(a)) => self.originate_in::<Ipv6Net>(p, a),
            (IpNet::V4(p), None) => self.withdraw::<Ipv4Net>(PeerId::LOCAL, &Nlri::new(p)),
            (IpNet::V6(p), None) => self.withdraw::<Ipv6Net>(PeerId::LOCAL, &Nlri::new(p)),
        }
    }

    fn originate_in<P: RibPrefix>(&mut self, prefix: P, attrs: Arc<PathAttrs>) {
        let d = decision_input(&self.infos, &self.cfg, &*self.reach);
        let fam = P::fam(&mut self.fams);
        if let (Some((old, new)), _) = fam.table.update(prefix, Path::new(PeerId::LOCAL, 0, attrs), &d) {
            note(&mut fam.dirty, prefix, old, new);
        }
    }

    /// Withdraws the peer's routes its (new) import policy rejects.
    pub(super) fn recheck_import<P: RibPrefix>(&mut self, peer: PeerId) {
        let Some(policy) = self.peer(peer).map(|s| s.cfg.policy.clone()) else { return };
        let rejected: Vec<(P, u32, Rejection)> = P::fam_ref(&self.fams)
            .table
            .iter()
            .flat_map(|(pfx, paths)| paths.iter().filter(|p| p.peer == peer).map(move |p| (*pfx, p)))
            .filter_map(|(pfx, p)| {
                let d = policy.import(pfx.into(), &p.attrs);
                (!d.accept).then(|| {
                    (pfx, p.path_id, Rejection::Policy(PolicyStep::of(&policy, Direction::Import, pfx.into(), d.by)))
                })
            })
            .collect();
        for (prefix, path_id, why) in rejected {
            self.note_rejection(peer, prefix.into(), why);
            self.withdraw::<P>(peer, &Nlri { path_id: Some(path_id), prefix });
        }
    }
}

/// RFC 6793 §4.2.3, for an UPDATE from a 2-octet AS speaker: AS_PATH with
/// AS4_PATH merged in, and an AGGREGATOR naming AS_TRANS replaced by
/// AS4_AGGREGATOR (both left alone when AGGREGATOR names another AS: the
/// AS4_* attributes then came from elsewhere).
fn reconcile_as4(attributes: &mut [PathAttribute], u: &Update) {
    let Some(path) = u.effective_as_path() else { return };
    let as4_aggregator = match u.attr(AttrCode::AS4_AGGREGATOR) {
        Some(Attr::As4Aggregator(a)) => Some(*a),
        _ => None,
    };
    for x in attributes.iter_mut() {
        match &mut x.value {
            Attr::AsPath(old) => *old = path.clone(),
            Attr::Aggregator(agg) if agg.asn == AS_TRANS => {
                if let Some(a4) = as4_aggregator {
                    *agg = a4;
                }
            }
            _ => {}
        }
    }
}
