//! The whole per-node BGP core, sans-IO: the sessions by peer (each a
//! [`Peer`], with the second connection of a collision) and the [`Rib`],
//! and everything between them: sessions up and down into the RIB with the
//! graceful restart helper decision, UPDATEs with their RFC 7606 outcome,
//! ROUTE-REFRESH dispatch, the RIB's UPDATEs out to each member of an
//! update group, max-prefix teardowns and their restart, next-hop
//! reachability. Time comes in as an argument everywhere.
//!
//! Inputs: [`Speaker::add_peer`], [`Speaker::handle_connected`],
//! [`Speaker::handle_bytes`], [`Speaker::handle_connection_lost`],
//! [`Speaker::handle_timeout`], [`Speaker::handle_reachability`], …
//! Outputs: [`Speaker::poll_transmit`] (bytes for a connection),
//! [`Speaker::poll_timeout`], [`Speaker::poll_event`] (connect, close,
//! forwarding changes, what happened). [`sim`] runs many speakers over
//! in-memory links on a virtual clock.

mod peer;
pub mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;

pub use peer::{ConnId, Initiator, Peer, PeerEvent, Refresh, MAX_PREFIX_RESTART};

use crate::error::UpdateIssue;
use crate::rib::attrs::PathAttrs;
use crate::rib::core::{FibRoute, Output, PeerConfig, PeerRestart, Rib, RibConfig, SessionInfo};
use crate::rib::table::PeerId;
use crate::session::{ConfigError, DownReason, Negotiated, SessionConfig, State};
use crate::{Family, FamilySet};

/// A peer of the speaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub usize);

/// This speaker's addresses, for next hop self and for telling whether a
/// peer is on a shared subnet (third-party next hop).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    /// IPv4 next hop self when the session's own address is IPv6.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 next hop self when the session's own address is IPv4.
    pub ipv6: Option<Ipv6Addr>,
    /// The subnets this speaker is on (Calico: the prefix lengths of the
    /// Node's `ipv4Address` / `ipv6Address`).
    pub subnets: Vec<IpNet>,
}

/// Everything about one peer.
#[derive(Clone, Debug)]
pub struct PeerSetup {
    /// The session (ASes, timers, capabilities).
    pub session: SessionConfig,
    /// How its routes are handled (policy, reflection, next hop, limits).
    pub rib: PeerConfig,
    /// The TCP MD5 key (RFC 2385), if any: the driver sets it on the
    /// connections; the simulator answers only when both ends agree.
    pub password: Option<Vec<u8>>,
    /// This speaker's addresses.
    pub local: LocalAddrs,
}

/// How next hops resolve: the speaker's view of its forwarding table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Every next hop, at cost 0 (a speaker that does not look, e.g. one on
    /// a single subnet with its peers).
    #[default]
    All,
    /// Next hops inside these networks, each at its IGP cost (the longest
    /// match counts); any other next hop is unresolvable and its paths are
    /// not used.
    Networks(Vec<(IpNet, u32)>),
}

impl Reachability {
    /// The cost of reaching `nh`, if it resolves.
    pub fn cost(&self, nh: IpAddr) -> Option<u32> {
        match self {
            Reachability::All => Some(0),
            Reachability::Networks(nets) => {
                nets.iter().filter(|(n, _)| n.contains(&nh)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, c)| *c)
            }
        }
    }
}

/// What the driver must do, or what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a connection to the peer, then report it with
    /// [`Speaker::handle_connected`] or [`Speaker::handle_connect_failed`].
    Connect(PeerKey),
    /// Abandon the peer's connection attempt in progress (`unanswered`:
    /// ConnectRetry expired without an answer).
    CancelConnect {
        /// The peer.
        peer: PeerKey,
        /// No answer within ConnectRetry.
        unanswered: bool,
    },
    /// Close the connection once what was queued on it is written.
    Close(PeerKey, ConnId),
    /// A session changed state.
    StateChanged {
        /// The peer.
        peer: PeerKey,
        /// The state left.
        from: State,
        /// The state entered.
        to: State,
    },
    /// A session reached Established.
    Established {
        /// The peer.
        peer: PeerKey,
        /// What was negotiated.
        negotiated: Box<Negotiated>,
    },
    /// A session went down.
    Down {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: DownReason,
        /// Its routes are kept as stale (graceful restart helper).
        graceful: bool,
    },
    /// An UPDATE with RFC 7606 problems that did not reset the session.
    UpdateIssues {
        /// The peer.
        peer: PeerKey,
        /// The problems.
        issues: Vec<UpdateIssue>,
        /// Its announcements were withdrawn instead (treat-as-withdraw).
        treat_as_withdraw: bool,
    },
    /// Two connections met; the one `kept` opened survives.
    Collision {
        /// The peer.
        peer: PeerKey,
        /// Who opened the surviving connection.
        kept: Initiator,
    },
    /// The RIB closed the session (max-prefix); it starts again after `restart_in`.
    Teardown {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: String,
        /// When it starts again.
        restart_in: Duration,
    },
    /// A warning about a peer from the RIB (e.g. above a prefix limit that only warns).
    Warning {
        /// The peer.
        peer: PeerKey,
        /// What.
        text: String,
    },
    /// Forwarding changes: each prefix with the next hops of its used
    /// learned paths; none: no learned route any more.
    Fib(Vec<FibRoute>),
    /// Selection deferral after a restart ended.
    DeferralDone,
}

/// Bytes to write on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub peer: PeerKey,
    /// Its connection.
    pub conn: ConnId,
    /// The bytes.
    pub bytes: Bytes,
}

struct Slot {
    peer: Peer,
    id: PeerId,
    setup: PeerSetup,
}

/// One node's BGP speaker, sans-IO.
pub struct Speaker {
    rib: Rib,
    slots: Vec<Option<Slot>>,
    by_id: Vec<Option<PeerKey>>,
    reach: Reachability,
    transmit: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Speaker {
    /// A speaker with no peers.
    pub fn new(cfg: RibConfig, now: Instant) -> Speaker {
        Speaker {
            rib: Rib::new(cfg, now),
            slots: Vec::new(),
            by_id: Vec::new(),
            reach: Reachability::All,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The RIB (views: routes, used paths, counters).
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// The RIB, for settings that go straight to it (graceful shutdown,
    /// export pause); call [`Speaker::flush`] after changing it.
    pub fn rib_mut(&mut self) -> &mut Rib {
        &mut self.rib
    }

    /// The peers, by key.
    pub fn peers(&self) -> impl Iterator<Item = (PeerKey, &Peer, &PeerSetup)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (PeerKey(i), &s.peer, &s.setup)))
    }

    /// One peer.
    pub fn peer(&self, key: PeerKey) -> Option<(&Peer, &PeerSetup)> {
        self.slot(key).map(|s| (&s.peer, &s.setup))
    }

    /// The RIB's id of a peer.
    pub fn rib_id(&self, key: PeerKey) -> Option<PeerId> {
        self.slot(key).map(|s| s.id)
    }

    fn slot(&self, key: PeerKey) -> Option<&Slot> {
        self.slots.get(key.0).and_then(Option::as_ref)
    }

    /// Adds a peer; its session starts at once.
    pub fn add_peer(&mut self, setup: PeerSetup, now: Instant) -> Result<PeerKey, ConfigError> {
        let peer = Peer::new(setup.session.clone(), now)?;
        let id = self.rib.add_peer(setup.rib.clone());
        let key = PeerKey(self.slots.iter().position(Option::is_none).unwrap_or(self.slots.len()));
        let slot = Slot { peer, id, setup };
        if key.0 == self.slots.len() {
            self.slots.push(Some(slot));
        } else {
            self.slots[key.0] = Some(slot);
        }
        let i = usize::from(id.0);
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        self.by_id[i] = Some(key);
        self.pump(now);
        Ok(key)
    }

    /// Removes a peer: Cease / Peer De-configured, its routes withdrawn.
    pub fn remove_peer(&mut self, key: PeerKey, now: Instant) {
        let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) else { return };
        slot.peer.handle_stop(crate::error::code::cease::PEER_DECONFIGURED, None, now);
        self.pump(now);
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::take) {
            // The last connection closes once the NOTIFICATION is written.
            if let Some((conn, _)) = slot.peer.connection() {
                self.events.push_back(Event::Close(key, conn));
            }
            self.by_id[usize::from(slot.id.0)] = None;
            self.rib.remove_peer(slot.id);
        }
        self.pump(now);
    }

    /// New routing settings for a peer (policy, reflection, limits), applied
    /// without a session reset.
    pub fn set_peer_routing(&mut self, key: PeerKey, cfg: PeerConfig, now: Instant) {
        let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) else { return };
        slot.setup.rib = cfg.clone();
        let id = slot.id;
        self.rib.set_peer_config(id, cfg, now);
        self.pump(now);
    }

    /// Originates `prefix` with `attrs` (or stops originating it).
    pub fn originate(&mut self, prefix: IpNet, attrs: Option<PathAttrs>, now: Instant) {
        self.rib.originate(prefix, attrs);
        self.pump(now);
    }

    /// How next hops resolve from now on (every prefix is decided again).
    pub fn handle_reachability(&mut self, reach: Reachability, now: Instant) {
        if reach == self.reach {
            return;
        }
        self.reach = reach.clone();
        let shared = Arc::new(reach);
        self.rib.set_reachability(Box::new(move |nh| nh.and_then(|a| shared.cost(a))));
        self.pump(now);
    }

    /// A connection to the peer came up (`Initiator::Local`: the one asked
    /// for by [`Event::Connect`]); `local`: this speaker's address on it.
    /// `None`: refused, the driver closes it.
    pub fn handle_connected(
        &mut self,
        key: PeerKey,
        by: Initiator,
        local: Option<IpAddr>,
        now: Instant,
    ) -> Option<ConnId> {
        let slot = self.slots.get_mut(key.0).and_then(Option::as_mut)?;
        let id = slot.peer.handle_connected(by, local, now);
        self.pump(now);
        id
    }

    /// The connection attempt asked for failed.
    pub fn handle_connect_failed(&mut self, key: PeerKey, now: Instant) {
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) {
            slot.peer.handle_connect_failed(now);
            self.pump(now);
        }
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, key: PeerKey, conn: ConnId, bytes: &[u8], now: Instant) {
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) {
            slot.peer.handle_bytes(conn, bytes, now);
            self.pump(now);
        }
    }

    /// A connection closed or failed.
    pub fn handle_connection_lost(&mut self, key: PeerKey, conn: ConnId, now: Instant) {
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) {
            slot.peer.handle_connection_lost(conn, now);
            self.pump(now);
        }
    }

    /// BFD with the peer came up or went down (`failure`: the path failed).
    pub fn handle_bfd(&mut self, key: PeerKey, up: bool, failure: bool, now: Instant) {
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) {
            slot.peer.handle_bfd(up, failure, now);
            self.pump(now);
        }
    }

    /// Stops one peer's session with Cease and `subcode` (it stays down).
    pub fn handle_stop(&mut self, key: PeerKey, subcode: u8, message: Option<&str>, now: Instant) {
        if let Some(slot) = self.slots.get_mut(key.0).and_then(Option::as_mut) {
            slot.peer.handle_stop(subcode, message, now);
            self.pump(now);
        }
    }

    /// Time passed: every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in self.slots.iter_mut().flatten() {
            if slot.peer.poll_timeout().is_some_and(|t| t <= now) {
                slot.peer.handle_timeout(now);
            }
        }
        if self.rib.poll_timeout().is_some_and(|t| t <= now) {
            self.rib.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Sends what RIB changes made directly (through [`Speaker::rib_mut`]) produced.
    pub fn flush(&mut self, now: Instant) {
        self.pump(now);
    }

    /// Bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().flatten().filter_map(|s| s.peer.poll_timeout()).chain(self.rib.poll_timeout()).min()
    }

    /// What to do, or what happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves events between the peers and the RIB until neither has more.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..self.slots.len() {
                let key = PeerKey(i);
                while let Some(slot) = self.slots[i].as_mut() {
                    let Some(ev) = slot.peer.poll_event() else { break };
                    moved = true;
                    let id = slot.id;
                    let local = slot.peer.connection().and_then(|(_, l)| l);
                    let addr = slot.setup.rib.addr;
                    match ev {
                        PeerEvent::Connect => self.events.push_back(Event::Connect(key)),
                        PeerEvent::CancelConnect { unanswered } => {
                            self.events.push_back(Event::CancelConnect { peer: key, unanswered });
                        }
                        PeerEvent::Close(c) => self.events.push_back(Event::Close(key, c)),
                        PeerEvent::StateChanged { from, to } => {
                            self.events.push_back(Event::StateChanged { peer: key, from, to });
                        }
                        PeerEvent::Established { negotiated, .. } => {
                            let info = session_info(&negotiated, local, addr, &slot.setup.local);
                            self.rib.peer_up(id, info, now);
                            self.events.push_back(Event::Established { peer: key, negotiated });
                        }
                        PeerEvent::Down { reason, graceful, was_established } => {
                            if was_established {
                                self.rib.peer_down(id, graceful, now);
                            }
                            self.events.push_back(Event::Down { peer: key, reason, graceful });
                        }
                        PeerEvent::Update { update, issues, treat_as_withdraw } => {
                            self.rib.update(id, &update, treat_as_withdraw, now);
                            if !issues.is_empty() {
                                self.events.push_back(Event::UpdateIssues { peer: key, issues, treat_as_withdraw });
                            }
                        }
                        PeerEvent::Refresh(r) => match r {
                            Refresh::Request(f) => self.rib.refresh_requested(id, f, now),
                            Refresh::Begin(f) => self.rib.refresh_begin(id, f),
                            Refresh::End(f) => self.rib.refresh_end(id, f),
                        },
                        PeerEvent::Collision { kept } => self.events.push_back(Event::Collision { peer: key, kept }),
                    }
                }
            }
            self.rib.flush(now);
            while let Some(o) = self.rib.poll_output() {
                moved = true;
                self.dispatch(o, now);
            }
            for (i, slot) in self.slots.iter_mut().enumerate() {
                let Some(slot) = slot.as_mut() else { continue };
                while let Some((conn, bytes)) = slot.peer.poll_transmit() {
                    self.transmit.push_back(Transmit { peer: PeerKey(i), conn, bytes });
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn key(&self, id: PeerId) -> Option<PeerKey> {
        self.by_id.get(usize::from(id.0)).copied().flatten()
    }

    fn slot_mut(&mut self, id: PeerId) -> Option<&mut Slot> {
        let key = self.key(id)?;
        self.slots.get_mut(key.0).and_then(Option::as_mut)
    }

    fn dispatch(&mut self, o: Output, now: Instant) {
        match o {
            Output::Send { peers, messages } => {
                for id in peers {
                    if let Some(slot) = self.slot_mut(id) {
                        slot.peer.send_updates(messages.iter().cloned());
                    }
                }
            }
            Output::Message(id, m) => {
                if let Some(slot) = self.slot_mut(id) {
                    let _ = slot.peer.send(&m);
                }
            }
            Output::Teardown { peer, subcode, reason } => {
                if let Some(key) = self.key(peer) {
                    if let Some(slot) = self.slot_mut(peer) {
                        slot.peer.handle_teardown(subcode, &reason, now);
                    }
                    self.events.push_back(Event::Teardown { peer: key, reason, restart_in: MAX_PREFIX_RESTART });
                }
            }
            Output::Warning(peer, text) => {
                if let Some(key) = self.key(peer) {
                    self.events.push_back(Event::Warning { peer: key, text });
                }
            }
            Output::DeferralDone => self.events.push_back(Event::DeferralDone),
            Output::Fib(routes) => self.events.push_back(Event::Fib(routes)),
        }
    }
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("router_id", &self.rib.config().router_id)
            .field("peers", &self.slots.iter().flatten().count())
            .finish()
    }
}

/// What the RIB needs of a negotiated session: the families, the encoding,
/// this speaker's addresses for next hop self (`local`: its address on the
/// connection), the subnet it shares with the peer, refresh and graceful
/// restart.
pub fn session_info(n: &Negotiated, local: Option<IpAddr>, peer: IpAddr, addrs: &LocalAddrs) -> SessionInfo {
    let mut families = FamilySet::EMPTY;
    for f in &n.families {
        if matches!(*f, Family::IPV4_UNICAST | Family::IPV6_UNICAST) {
            families.insert(*f);
        }
    }
    let (local_v4, local_v6) = match local {
        Some(IpAddr::V4(a)) => (Some(a), addrs.ipv6),
        Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => (addrs.ipv4, Some(a)),
        _ => (addrs.ipv4, addrs.ipv6),
    };
    // The subnet both ends of the session are on.
    let canonical = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    let shared = |net: &IpNet| local.is_some_and(|l| net.contains(&canonical(l))) && net.contains(&canonical(peer));
    let shared_net = addrs.subnets.iter().find(|n| shared(n));
    SessionInfo {
        peer_id: n.peer_id,
        families,
        tx: n.tx.clone(),
        local_v4,
        local_v6,
        shared_v4: shared_net.and_then(|n| match n {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        }),
        shared_v6: shared_net.and_then(|n| match n {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        }),
        route_refresh: n.route_refresh,
        enhanced_refresh: n.enhanced_route_refresh,
        // Every family the peer lists is kept across its restart, whether or
        // not it sets the Forwarding State bit: dropping a family whose F bit
        // is clear when the peer comes back would withdraw routes that its
        // End-of-RIB is about to confirm (hitless beats the letter of RFC
        // 4724 §4.2 here; docs/rib.md). No families listed: nothing is kept.
        graceful_restart: n.peer_graceful_restart.as_ref().map(|g| {
            let mut f = FamilySet::EMPTY;
            for x in &g.families {
                f.insert(x.family);
            }
            let mut r = PeerRestart::new(g.time, f);
            r.restarting = g.restarting();
            for ll in n.peer_llgr.iter().flatten() {
                match ll.family {
                    Family::IPV4_UNICAST => r.long_lived[0] = ll.stale_time,
                    Family::IPV6_UNICAST => r.long_lived[1] = ll.stale_time,
                    _ => {}
                }
            }
            r
        }),
        long_lived: n.peer_llgr.is_some(),
    }
}
