//! Peer lifecycle: a peer is registered, its session comes up, its
//! configuration changes, it is forgotten. (A session going down is mostly
//! graceful restart: [`Rib::peer_down`] is in `restart.rs`.)

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::rib::checks::{IgnoredCounts, Logged};
use crate::rib::table::{Path, PeerId, PeerInfo};
use crate::types::{Family, FamilySet};
use crate::wire::{Message, RouteRefresh};

use super::{fam_index, Output, PeerConfig, PeerState, Received, Rejection, Rib, SessionInfo, STALE_PATH_TIME};

impl Rib {
    /// Registers a peer (its session is not up yet).
    pub fn add_peer(&mut self, cfg: PeerConfig) -> PeerId {
        let state = PeerState {
            import_all: cfg.policy.import_accepts_all(),
            rejected: Default::default(),
            cfg,
            session: None,
            accepted: 0,
            over_limit: false,
            stale_until: None,
            long_lived_until: [None, None],
            down_restart: None,
            sent_early: false,
            eor: FamilySet::EMPTY,
            group: None,
            paused: None,
            received: Received::default(),
            ignored: IgnoredCounts::default(),
            ignored_logged: Logged::default(),
        };
        let info = PeerInfo {
            router_id: Ipv4Addr::UNSPECIFIED,
            addr: state.cfg.addr,
            asn: state.cfg.peer_as,
            ebgp: state.cfg.ebgp(),
        };
        let i = match self.peers.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.peers.push(None);
                self.infos.push(None);
                self.peers.len() - 1
            }
        };
        self.peers[i] = Some(state);
        self.infos[i] = Some(info);
        PeerId(i as u16)
    }

    /// Forgets a peer and its routes.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.leave_group(peer);
        self.drop_paths(peer, |_| true);
        // Export while the peer is still known: its paths' source type
        // decides who must hear of their withdrawal.
        self.flush_out();
        if let Some(s) = self.peers.get_mut(peer.0 as usize) {
            *s = None;
        }
        if let Some(s) = self.infos.get_mut(peer.0 as usize) {
            *s = None;
        }
        self.flush_out();
    }

    /// The session came up: the peer gets the table and End-of-RIB (after
    /// selection deferral, when this speaker restarted).
    pub fn peer_up(&mut self, peer: PeerId, session: SessionInfo, now: Instant) {
        self.now = Some(now);
        if let Some(info) = self.infos.get_mut(peer.0 as usize).and_then(Option::as_mut) {
            info.router_id = session.peer_id;
        }
        let Some(state) = self.peer_mut(peer) else { return };
        // A new session is sent the whole table: nothing owed from before.
        state.paused = None;
        // RFC 4724 §4.2: stale routes of families the peer no longer lists
        // (in its graceful restart or long-lived capability) go at once; the
        // others wait for its End-of-RIB.
        let keep = session.graceful_restart.map_or([false, false], |r| {
            [Family::IPV4_UNICAST, Family::IPV6_UNICAST].map(|f| {
                let i = fam_index(f).unwrap_or(0);
                r.families.contains(f) || (session.long_lived && r.long_lived[i] > 0)
            })
        });
        state.eor = FamilySet::EMPTY;
        state.sent_early = false;
        state.ignored_logged = Logged::default();
        state.rejected.clear();
        state.session = Some(session);
        state.over_limit = false;
        let restarting = state.stale_until.is_some() || state.long_lived_until.iter().any(Option::is_some);
        if restarting {
            // Back: its stale routes wait for its End-of-RIB, at most this
            // long (FRR's default stale-path time); long-lived stale ones
            // keep their own deadline (RFC 9494 §4.2).
            if state.stale_until.is_some() {
                state.stale_until = Some(now + STALE_PATH_TIME);
            }
            for (i, kept) in keep.into_iter().enumerate() {
                if !kept {
                    state.long_lived_until[i] = None;
                }
            }
            if !keep[0] {
                self.drop_family::<Ipv4Net>(peer, Path::is_stale);
            }
            if !keep[1] {
                self.drop_family::<Ipv6Net>(peer, Path::is_stale);
            }
        }
        self.redecide_all();
        self.join_group(peer);
        if self.deferring(now) {
            return;
        }
        self.flush_out();
        self.send_table(peer, true);
    }

    /// Changes a peer's configuration without touching its session: a new
    /// import policy re-checks the routes kept from it and asks it for a
    /// ROUTE-REFRESH; a new export policy (or next-hop mode, ADD-PATH count,
    /// reflector role) sends it the difference.
    pub fn set_peer_config(&mut self, peer: PeerId, cfg: PeerConfig, now: Instant) {
        self.now = Some(now);
        // What is pending goes out under the old settings, and the peer
        // leaves its group first: the group's export must not see the new
        // policy of one member.
        self.flush_out();
        self.leave_group(peer);
        let Some(state) = self.peer_mut(peer) else { return };
        let import_changed = !state.cfg.policy.same_import(&cfg.policy);
        if !cfg.keep_received {
            state.received = Received::default();
        }
        state.import_all = cfg.policy.import_accepts_all();
        if import_changed {
            // What the old import policy rejected may pass now.
            state.rejected.retain(|_, why| !matches!(why, Rejection::Policy(_)));
        }
        let old_cfg = std::mem::replace(&mut state.cfg, cfg);
        // A copy kept from the start of the session can stand in for a refresh.
        let kept = old_cfg.keep_received && self.peer(peer).is_some_and(|s| s.cfg.keep_received);
        let up = self.peer(peer).and_then(|s| s.session.clone());
        if import_changed {
            self.recheck_import::<Ipv4Net>(peer);
            self.recheck_import::<Ipv6Net>(peer);
            if kept {
                self.reimport::<Ipv4Net>(peer);
                self.reimport::<Ipv6Net>(peer);
            } else if let Some(s) = &up {
                if s.route_refresh {
                    for f in
                        [Family::IPV4_UNICAST, Family::IPV6_UNICAST].into_iter().filter(|f| s.families.contains(*f))
                    {
                        self.out.push_back(Output::Message(peer, Message::RouteRefresh(RouteRefresh::request(f))));
                    }
                }
            }
        }
        // Routes the new import policy rejects: the other peers hear of it
        // now; this peer (in no group at the moment) through the re-export
        // below, which starts from what it was sent: the old used paths.
        let before4 = self.fams.v4.dirty.clone();
        let before6 = self.fams.v6.dirty.clone();
        self.flush_out();
        let Some(session) = up else { return };
        let old_key = self.group_key(&old_cfg, &session);
        let new_key = self.peer(peer).map(|s| self.group_key(&s.cfg, &session));
        if let Some(new_key) = new_key {
            // Same group key and same policy: what the peer is sent is
            // unchanged (max-prefix, say), no table walk needed.
            let unchanged = old_key == new_key && !import_changed && before4.is_empty() && before6.is_empty();
            if !unchanged && !self.deferring(now) {
                self.reexport::<Ipv4Net>(peer, &old_key, &new_key, &before4);
                self.reexport::<Ipv6Net>(peer, &old_key, &new_key, &before6);
            }
        }
        self.join_group(peer);
    }
}
