//! Graceful restart (RFC 4724) and long-lived graceful restart (RFC 9494)
//! as the helper: a session going down, stale routes, End-of-RIB; selection
//! deferral after this speaker restarted; and the timers that run them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::nlri::Nlri;
use crate::rib::attrs::PathAttrs;
use crate::rib::table::{Path, PeerId, STALE};
use crate::types::{Family, FamilySet};
use crate::wire::Community;

use super::{
    decision_input, fam_index, fib_priority, forwarding, note, FibRoute, Output, PeerRestart, PeerState, Received, Rib,
    RibPrefix,
};

/// Why selection deferral still waits for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeferralWait {
    /// Its session is up; its End-of-RIB is missing for these families.
    EndOfRib(Vec<Family>),
    /// It restarts too (R bit): its End-of-RIB is missing for these
    /// families; it gets this speaker's first once only such peers are left.
    Restarting(Vec<Family>),
    /// Its session is not up; it is waited for until then.
    Session(Instant),
}

impl Rib {
    /// The session went down. With `graceful` (the peer negotiated graceful
    /// restart and the session did not end with a NOTIFICATION that rules it
    /// out), its routes stay as stale for its restart time; otherwise they go.
    pub fn peer_down(&mut self, peer: PeerId, graceful: bool, now: Instant) {
        self.now = Some(now);
        // A session that never came up (a failed reconnect while the peer
        // restarts) changes nothing: its stale routes wait on.
        if self.peer(peer).is_none_or(|s| s.session.is_none()) {
            return;
        }
        self.leave_group(peer);
        let Some(state) = self.peer_mut(peer) else { return };
        // The next session sends everything again.
        state.received = Received::default();
        state.paused = None;
        let session = state.session.take();
        let long_lived_peer = session.as_ref().is_some_and(|s| s.long_lived);
        let gr = session.and_then(|s| s.graceful_restart);
        let kept = |r: &PeerRestart, f: Family| {
            let ll = if long_lived_peer { r.long_lived[fam_index(f).unwrap_or(0)] } else { 0 };
            (r.families.contains(f) && r.time > 0, ll > 0)
        };
        match gr {
            Some(r)
                if graceful
                    && [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().any(|f| kept(&r, *f) != (false, false)) =>
            {
                let mut r = r;
                if !long_lived_peer {
                    r.long_lived = [0, 0];
                }
                state.down_restart = Some(r);
                let in_restart_time = [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().any(|f| kept(&r, *f).0);
                state.stale_until = in_restart_time.then(|| now + Duration::from_secs(u64::from(r.time)));
                self.fams.v4.table.mark(|p| p.peer == peer, STALE);
                self.fams.v6.table.mark(|p| p.peer == peer, STALE);
                for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                    let i = fam_index(f).unwrap_or(0);
                    let already_long_lived = self.peer(peer).is_some_and(|s| s.long_lived_until[i].is_some());
                    match kept(&r, f) {
                        // A family already in its long-lived stale time stays there.
                        _ if already_long_lived => {}
                        (true, _) => {}
                        // RFC 9494 §4.2: a family the graceful restart
                        // capability does not list (restart time zero) is
                        // long-lived stale at once.
                        (false, true) => self.enter_long_lived(peer, f, now),
                        // Families it does not keep forwarding for go now.
                        (false, false) => self.drop_one_family(peer, f),
                    }
                }
            }
            _ => {
                state.stale_until = None;
                state.long_lived_until = [None, None];
                state.down_restart = None;
                self.drop_paths(peer, |_| true);
            }
        }
        self.flush_out();
    }

    fn drop_one_family(&mut self, peer: PeerId, f: Family) {
        match f {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, |_| true),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, |_| true),
            _ => {}
        }
    }

    /// RFC 9494 §4.2: the restart time of `peer` is over (or zero) for
    /// family `f`, and its capability asks for a long-lived stale time: its
    /// stale paths marked NO_LLGR go; the others carry LLGR_STALE, lose to
    /// any other path (§4.3) and are kept until the long-lived stale time ends
    /// or its End-of-RIB comes.
    fn enter_long_lived(&mut self, peer: PeerId, f: Family, now: Instant) {
        let Some(i) = fam_index(f) else { return };
        let Some(secs) = self.peer(peer).and_then(|s| s.down_restart).map(|r| r.long_lived[i]) else { return };
        if secs == 0 {
            return self.drop_one_family(peer, f);
        }
        if let Some(s) = self.peer_mut(peer) {
            s.long_lived_until[i] = Some(now + Duration::from_secs(u64::from(secs)));
        }
        match f {
            Family::IPV4_UNICAST => self.mark_long_lived::<Ipv4Net>(peer),
            Family::IPV6_UNICAST => self.mark_long_lived::<Ipv6Net>(peer),
            _ => {}
        }
        let name = self.peer_name(peer).unwrap_or("?").to_string();
        self.out.push_back(Output::Warning(
            peer,
            format!("{name}: restart time over, its {f} routes are kept long-lived stale (LLGR_STALE) for {secs} s"),
        ));
    }

    fn mark_long_lived<P: RibPrefix>(&mut self, peer: PeerId) {
        let stale: Vec<(P, u32, Arc<PathAttrs>)> = P::fam_ref(&self.fams)
            .table
            .iter()
            .flat_map(|(pfx, paths)| {
                paths.iter().filter(|p| p.peer == peer && p.is_stale()).map(move |p| (*pfx, p.path_id, p.attrs.clone()))
            })
            .collect();
        for (prefix, path_id, attrs) in stale {
            let n = Nlri { path_id: Some(path_id), prefix };
            if attrs.has_community(Community::NO_LLGR) {
                self.withdraw::<P>(peer, &n);
                continue;
            }
            if attrs.is_llgr_stale() {
                continue;
            }
            let marked = self.interner.intern(attrs.with_community(Community::LLGR_STALE));
            let mut path = Path::new(peer, path_id, marked);
            path.flags = STALE;
            let d = decision_input(&self.infos, &self.cfg, &*self.reach);
            let fam = P::fam(&mut self.fams);
            if let (Some((old, new)), _) = fam.table.update(prefix, path, &d) {
                note(&mut fam.dirty, prefix, old, new);
            }
        }
    }

    /// The peer sent End-of-RIB for `family`: its stale paths of the family go.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family, now: Instant) {
        self.now = Some(now);
        let Some(s) = self.peer_mut(peer) else { return };
        s.eor.insert(family);
        if let Some(i) = fam_index(family) {
            s.long_lived_until[i] = None;
        }
        match family {
            Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
            Family::IPV6_UNICAST => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
            _ => {}
        }
        if let Some(s) = self.peer_mut(peer) {
            let fams = s.session.as_ref().map_or(FamilySet::EMPTY, |x| x.families);
            if [Family::IPV4_UNICAST, Family::IPV6_UNICAST].iter().all(|f| !fams.contains(*f) || s.eor.contains(*f)) {
                s.stale_until = None;
            }
            if s.stale_until.is_none() && s.long_lived_until.iter().all(Option::is_none) {
                s.down_restart = None;
            }
        }
        self.flush_out();
        self.check_deferral(now);
    }

    pub(super) fn deferring(&mut self, now: Instant) -> bool {
        self.check_deferral(now);
        self.defer_until.is_some()
    }

    /// Why deferral waits for `p` at `now`, if it does. RFC 4724 §4.1:
    /// End-of-RIB from every peer, "excluding the ones that do not
    /// advertise the graceful restart capability". A peer whose session is
    /// not up is waited for during the first
    /// [`RibConfig::defer_peer_wait`](super::RibConfig::defer_peer_wait) of
    /// the deferral only: a peer that is down or gone must not hold every
    /// other one until the deadline.
    ///
    /// Deviation: RFC 4724 §4.1 also excludes peers with the Restart State
    /// bit, so that two restarting speakers do not wait for each other. But
    /// such a peer still has routes this speaker had before its restart (FRR
    /// sets the bit for a while after its own start, restarted or not), and
    /// ending the deferral without them withdraws them from every helper at
    /// the End-of-RIB, and from the kernel at the sweep. So they are waited
    /// for too, and the deadlock is broken the other way: once only
    /// restarting peers are left, they get this speaker's table and
    /// End-of-RIB first ([`Rib::check_deferral`]), end their own deferral,
    /// and send theirs.
    pub(super) fn deferral_wait(&self, p: &PeerState, now: Instant) -> Option<DeferralWait> {
        match &p.session {
            None => {
                let until = self.defer_started + self.cfg.defer_peer_wait;
                (now < until).then_some(DeferralWait::Session(until))
            }
            Some(s) => {
                let gr = s.graceful_restart.as_ref()?;
                let missing: Vec<Family> = [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
                    .into_iter()
                    .filter(|f| s.families.contains(*f) && !p.eor.contains(*f))
                    .collect();
                match (missing.is_empty(), gr.restarting) {
                    (true, _) => None,
                    (false, false) => Some(DeferralWait::EndOfRib(missing)),
                    (false, true) => Some(DeferralWait::Restarting(missing)),
                }
            }
        }
    }

    /// Ends selection deferral once no peer is waited for any more (see
    /// [`Rib::deferral_wait`]), or at the deadline. When every peer still
    /// waited for restarts itself (R bit), those get this speaker's table and
    /// End-of-RIB now, once each: they wait for it to end their own deferral.
    fn check_deferral(&mut self, now: Instant) {
        let Some(until) = self.defer_until else { return };
        let waiting: Vec<(PeerId, bool)> = (0..self.peers.len())
            .filter_map(|i| {
                let p = self.peers[i].as_ref()?;
                let w = self.deferral_wait(p, now)?;
                Some((PeerId(i as u16), matches!(w, DeferralWait::Restarting(_))))
            })
            .collect();
        if now < until && !waiting.is_empty() {
            if waiting.iter().all(|(_, restarting)| *restarting) {
                for (peer, _) in waiting {
                    let first = self.peer_mut(peer).is_some_and(|s| !std::mem::replace(&mut s.sent_early, true));
                    if first {
                        self.send_table(peer, true);
                    }
                }
            }
            return;
        }
        self.defer_until = None;
        self.fams.v4.dirty.clear();
        self.fams.v6.dirty.clear();
        if self.cfg.fib {
            // The whole table, once: the daemon then sweeps what is left
            // from before the restart.
            let mut all: Vec<FibRoute> = Vec::new();
            for (p, paths) in self.fams.v4.table.iter() {
                let used = crate::rib::table::used_of(paths);
                let hops = forwarding(&used);
                if !hops.is_empty() {
                    all.push(FibRoute {
                        prefix: IpNet::V4(*p),
                        next_hops: hops.into_vec(),
                        priority: fib_priority(&used),
                    });
                }
            }
            for (p, paths) in self.fams.v6.table.iter() {
                let used = crate::rib::table::used_of(paths);
                let hops = forwarding(&used);
                if !hops.is_empty() {
                    all.push(FibRoute {
                        prefix: IpNet::V6(*p),
                        next_hops: hops.into_vec(),
                        priority: fib_priority(&used),
                    });
                }
            }
            self.out.push_back(Output::Fib(all));
        }
        let ups: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.session.is_some()))
            .map(|i| PeerId(i as u16))
            .collect();
        for p in ups {
            self.send_table(p, true);
        }
        self.out.push_back(Output::DeferralDone);
    }

    /// When [`Rib::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.groups.iter().filter(|g| !g.held.is_empty()).filter_map(|g| g.held.until);
        // While deferring, the end of the wait for peers not up yet.
        let peer_wait = self.defer_until.map(|_| self.defer_started + self.cfg.defer_peer_wait);
        let peer_wait = peer_wait.filter(|t| self.now.is_none_or(|now| now < *t));
        self.peers
            .iter()
            .flatten()
            .flat_map(|p| std::iter::once(p.stale_until).chain(p.long_lived_until))
            .flatten()
            .chain(self.defer_until)
            .chain(peer_wait)
            .chain(held)
            .min()
    }

    /// Runs what is due: restart timers of peers (their stale routes go)
    /// and the end of selection deferral.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.release_held(now);
        let expired: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().and_then(|p| p.stale_until).is_some_and(|t| t <= now))
            .map(|i| PeerId(i as u16))
            .collect();
        for peer in expired {
            let Some(s) = self.peer_mut(peer) else { continue };
            s.stale_until = None;
            let name = s.cfg.name.clone();
            let back = s.session.is_some();
            let long_lived = s.down_restart.map_or([0, 0], |r| r.long_lived);
            let in_long_lived = s.long_lived_until;
            for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                let i = fam_index(f).unwrap_or(0);
                if in_long_lived[i].is_some() {
                    continue;
                }
                if !back && long_lived[i] > 0 {
                    // RFC 9494 §4.2: the restart time is over, the long-lived stale time begins.
                    self.enter_long_lived(peer, f, now);
                } else {
                    match f {
                        Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
                        _ => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
                    }
                }
            }
            if long_lived == [0, 0] || back {
                self.out.push_back(Output::Warning(peer, format!("{name}: restart time over, its stale routes go")));
            }
        }
        // Long-lived stale times that ended (RFC 9494 §4.2): those paths go.
        for i in 0..self.peers.len() {
            for (fi, f) in [Family::IPV4_UNICAST, Family::IPV6_UNICAST].into_iter().enumerate() {
                let Some(s) = self.peers[i].as_mut() else { continue };
                if s.long_lived_until[fi].is_none_or(|t| t > now) {
                    continue;
                }
                s.long_lived_until[fi] = None;
                let name = s.cfg.name.clone();
                let peer = PeerId(i as u16);
                self.out.push_back(Output::Warning(
                    peer,
                    format!("{name}: long-lived stale time over, its {f} stale routes go"),
                ));
                match f {
                    Family::IPV4_UNICAST => self.drop_family::<Ipv4Net>(peer, Path::is_stale),
                    _ => self.drop_family::<Ipv6Net>(peer, Path::is_stale),
                }
            }
        }
        for s in self.peers.iter_mut().flatten() {
            if s.stale_until.is_none() && s.long_lived_until.iter().all(Option::is_none) {
                s.down_restart = None;
            }
        }
        self.check_deferral(now);
        self.flush_out();
    }
}
