//! One peer, sans-IO: its [`Session`], the second session while a
//! connection collision is pending (RFC 4271 §6.8), the restart after a
//! max-prefix teardown, the hold-down while BFD says the path is down, and
//! the graceful restart helper decision when the session goes down.
//!
//! The driver owns the connections, each named by a [`ConnId`] this peer
//! hands out: it opens one when told ([`PeerEvent::Connect`]), reports
//! what happens to it (`handle_connected`, `handle_bytes`,
//! `handle_connection_lost`), writes what [`Peer::poll_transmit`] gives and
//! closes what [`PeerEvent::Close`] names.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{code, UpdateIssue};
use crate::session::{
    resolve_collision, retains_routes, CollisionWinner, ConfigError, DownReason, Negotiated, SendError, Session,
    SessionConfig, SessionEvent, SessionStats, State,
};
use crate::wire::{Message, Notification, RefreshSubtype, Update};
use crate::{ErrorAction, Family, MessageType};

/// A connection of one peer, as the peer names it to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This speaker connected to the peer.
    Local,
    /// The peer connected to this speaker.
    Remote,
}

/// What a ROUTE-REFRESH message asks (RFC 2918, RFC 7313).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refresh {
    /// Send our routes of the family again.
    Request(Family),
    /// The peer starts sending its routes of the family again (BoRR).
    Begin(Family),
    /// The peer has sent all its routes of the family again (EoRR).
    End(Family),
}

/// What the driver must do, or what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Open a connection to the peer; report it with
    /// [`Peer::handle_connected`] (`Initiator::Local`) or
    /// [`Peer::handle_connect_failed`].
    Connect,
    /// Abandon the connection attempt in progress: the peer's own
    /// connection was taken instead, or ConnectRetry expired without an
    /// answer (a [`PeerEvent::Connect`] follows then).
    CancelConnect {
        /// ConnectRetry expired: the attempt got no answer.
        unanswered: bool,
    },
    /// Close this connection once what was queued on it is written.
    Close(ConnId),
    /// The session changed state.
    StateChanged {
        /// The state left.
        from: State,
        /// The state entered.
        to: State,
    },
    /// The session reached Established on this connection.
    Established {
        /// The connection.
        conn: ConnId,
        /// The negotiated parameters.
        negotiated: Box<Negotiated>,
    },
    /// The session went down; `graceful`: this speaker keeps the peer's
    /// routes as its graceful restart helper (RFC 4724 §4.2, RFC 8538 §4).
    Down {
        /// Why.
        reason: DownReason,
        /// Keep the routes (stale) rather than withdraw them.
        graceful: bool,
        /// The session had been Established (else nothing was learned).
        was_established: bool,
    },
    /// An UPDATE arrived.
    Update {
        /// The UPDATE.
        update: Box<Update>,
        /// RFC 7606 problems that did not reset the session.
        issues: Vec<UpdateIssue>,
        /// One of them is treat-as-withdraw: every prefix the UPDATE
        /// announces is to be withdrawn instead.
        treat_as_withdraw: bool,
    },
    /// A ROUTE-REFRESH message.
    Refresh(Refresh),
    /// Two connections met (RFC 4271 §6.8); the one `kept` opened survives,
    /// the other was sent Cease / Connection Collision Resolution.
    Collision {
        /// Who opened the connection that survives.
        kept: Initiator,
    },
}

/// How long a session torn down for too many prefixes waits before it starts again.
pub const MAX_PREFIX_RESTART: Duration = Duration::from_secs(30);

struct Conn {
    id: ConnId,
    local: Option<IpAddr>,
}

/// One peer's sessions and the decisions between them and the RIB.
pub struct Peer {
    session: Session,
    /// The primary session's connection.
    conn: Option<Conn>,
    /// Who opened `conn`.
    initiator: Initiator,
    /// An outgoing attempt is in progress.
    connecting: bool,
    /// The second connection of a collision, in a session of its own.
    second: Option<(Session, Conn)>,
    /// What the second session did before the collision was resolved:
    /// announced if it wins (it may be Established already: OPEN and
    /// KEEPALIVE can arrive in one read), dropped if it loses.
    second_events: Vec<SessionEvent>,
    next_conn: u32,
    local_id: Ipv4Addr,
    /// When to start again after a max-prefix teardown.
    restart_at: Option<Instant>,
    /// RFC 5882 §4.2: BFD saw the path fail; down until BFD is up again.
    bfd_hold: bool,
    /// The N bit (RFC 8538) was exchanged on the session last Established.
    graceful_notification: bool,
    established: bool,
    tx: VecDeque<(ConnId, Bytes)>,
    events: VecDeque<PeerEvent>,
}

impl Peer {
    /// A peer whose session starts at once (ManualStart).
    pub fn new(cfg: SessionConfig, now: Instant) -> Result<Peer, ConfigError> {
        let local_id = cfg.bgp_id;
        let mut session = Session::new(cfg)?;
        session.handle_manual_start(now);
        let mut p = Peer {
            session,
            conn: None,
            initiator: Initiator::Local,
            connecting: false,
            second: None,
            second_events: Vec::new(),
            next_conn: 0,
            local_id,
            restart_at: None,
            bfd_hold: false,
            graceful_notification: false,
            established: false,
            tx: VecDeque::new(),
            events: VecDeque::new(),
        };
        p.pump(now);
        Ok(p)
    }

    /// The primary session's state.
    pub fn state(&self) -> State {
        self.session.state()
    }

    /// The session (its configuration, negotiated parameters, counters).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session's counters.
    pub fn stats(&self) -> &SessionStats {
        self.session.stats()
    }

    /// The primary connection and this speaker's address on it.
    pub fn connection(&self) -> Option<(ConnId, Option<IpAddr>)> {
        self.conn.as_ref().map(|c| (c.id, c.local))
    }

    /// Held down by BFD.
    pub fn bfd_held(&self) -> bool {
        self.bfd_hold
    }

    /// Events waiting in the primary session (decoded UPDATEs not taken yet).
    pub fn pending_events(&self) -> usize {
        self.session.pending_events() + self.events.len()
    }

    fn new_conn(&mut self, local: Option<IpAddr>) -> Conn {
        self.next_conn = self.next_conn.wrapping_add(1);
        Conn { id: ConnId(self.next_conn), local }
    }

    // ----- inputs -----

    /// A connection came up: ours (`Initiator::Local`, after
    /// [`PeerEvent::Connect`]) or the peer's. Returns its id when the peer
    /// takes it: as the session's connection when the session waits for
    /// one, or as the second connection of a collision while the session's
    /// own is past the handshake but not Established. `None`: refused, the
    /// driver closes it.
    pub fn handle_connected(&mut self, by: Initiator, local: Option<IpAddr>, now: Instant) -> Option<ConnId> {
        if by == Initiator::Local && !std::mem::take(&mut self.connecting) {
            return None;
        }
        let id = match self.session.state() {
            State::Active | State::Connect if self.conn.is_none() => {
                if by == Initiator::Remote && std::mem::take(&mut self.connecting) {
                    self.events.push_back(PeerEvent::CancelConnect { unanswered: false });
                }
                let c = self.new_conn(local);
                let id = c.id;
                self.conn = Some(c);
                self.initiator = by;
                self.session.handle_connected(now);
                Some(id)
            }
            State::OpenSent | State::OpenConfirm if by == Initiator::Remote && self.second.is_none() => {
                let Ok(mut s2) = Session::new(self.session.config().clone()) else { return None };
                s2.handle_manual_start(now);
                // The second session answers this connection; it opens none of its own.
                while s2.poll_event().is_some() {}
                s2.handle_connected(now);
                let c = self.new_conn(local);
                let id = c.id;
                self.second_events.clear();
                self.second = Some((s2, c));
                Some(id)
            }
            _ => None,
        };
        self.pump(now);
        id
    }

    /// Our connection attempt failed (refused, unreachable, timed out).
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if std::mem::take(&mut self.connecting) {
            self.session.handle_connection_failed(now);
            self.pump(now);
        }
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        if self.conn.as_ref().is_some_and(|c| c.id == conn) {
            self.session.handle_bytes(now, bytes);
        } else if let Some((s2, _)) = self.second.as_mut().filter(|(_, c)| c.id == conn) {
            s2.handle_bytes(now, bytes);
        }
        self.pump(now);
    }

    /// A connection closed or failed (read or write error, send hold timer).
    pub fn handle_connection_lost(&mut self, conn: ConnId, now: Instant) {
        if self.conn.as_ref().is_some_and(|c| c.id == conn) {
            self.conn = None;
            self.session.handle_connection_failed(now);
        } else if self.second.as_ref().is_some_and(|(_, c)| c.id == conn) {
            self.second = None;
        }
        self.pump(now);
    }

    /// Time passed: session timers, the restart after a max-prefix teardown.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if !self.bfd_hold {
                self.session.handle_manual_start(now);
            }
        }
        self.session.handle_timeout(now);
        if let Some((s2, _)) = self.second.as_mut() {
            s2.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Stop with Cease and `subcode` (and a shutdown communication); the
    /// session does not start again.
    pub fn handle_stop(&mut self, subcode: u8, message: Option<&str>, now: Instant) {
        let n = match message {
            Some(m) => Notification::cease_with_message(subcode, m),
            None => Notification::new(code::CEASE, subcode, []),
        };
        self.session.handle_stop(now, n);
        self.restart_at = None;
        self.drop_second();
        self.pump(now);
    }

    /// Stop because this speaker restarts: the peer keeps our routes as
    /// graceful restart helper (no NOTIFICATION, or Administrative Reset
    /// with the N bit).
    pub fn handle_restart_stop(&mut self, message: &str, now: Instant) {
        self.session.handle_restart_stop(now, message);
        self.restart_at = None;
        self.drop_second();
        self.pump(now);
    }

    /// The RIB asks for a teardown (max-prefix): Cease with `subcode`, then
    /// the session starts again after [`MAX_PREFIX_RESTART`].
    pub fn handle_teardown(&mut self, subcode: u8, reason: &str, now: Instant) {
        self.handle_stop(subcode, Some(reason), now);
        self.restart_at = Some(now + MAX_PREFIX_RESTART);
    }

    /// BFD says the path is up or down. Down by a failure (not AdminDown):
    /// the session ends at once with Cease / BFD Down (RFC 9384) and stays
    /// down until BFD is up again (RFC 5882 §4.2).
    pub fn handle_bfd(&mut self, up: bool, failure: bool, now: Instant) {
        if !up && failure {
            self.connecting_cancelled();
            self.handle_stop(code::cease::BFD_DOWN, None, now);
            self.bfd_hold = true;
        } else if up && std::mem::take(&mut self.bfd_hold) {
            self.session.handle_manual_start(now);
            self.pump(now);
        }
    }

    fn connecting_cancelled(&mut self) {
        if std::mem::take(&mut self.connecting) {
            self.events.push_back(PeerEvent::CancelConnect { unanswered: false });
        }
    }

    fn drop_second(&mut self) {
        self.second_events.clear();
        if let Some((_, c)) = self.second.take() {
            self.events.push_back(PeerEvent::Close(c.id));
        }
    }

    /// Queues encoded UPDATEs (from the RIB) on the session.
    pub fn send_updates(&mut self, messages: impl IntoIterator<Item = Bytes>) {
        for m in messages {
            let _ = self.session.send_encoded(m, MessageType::UPDATE);
        }
        self.take_transmit();
    }

    /// Queues a message (End-of-RIB, ROUTE-REFRESH, BoRR/EoRR).
    pub fn send(&mut self, m: &Message) -> Result<(), SendError> {
        let r = self.session.send(m);
        self.take_transmit();
        r
    }

    // ----- outputs -----

    /// Bytes to write on a connection.
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Bytes)> {
        self.tx.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.session.poll_timeout(), self.second.as_ref().and_then(|(s, _)| s.poll_timeout()), self.restart_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// What to do, or what happened.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn take_transmit(&mut self) {
        match self.conn.as_ref() {
            Some(c) => {
                while let Some(b) = self.session.poll_transmit() {
                    self.tx.push_back((c.id, b));
                }
            }
            None => while self.session.poll_transmit().is_some() {},
        }
        if let Some((s2, c)) = self.second.as_mut() {
            while let Some(b) = s2.poll_transmit() {
                self.tx.push_back((c.id, b));
            }
        }
    }

    /// Turns what the sessions did into events, resolves a collision, and
    /// queues what they send.
    fn pump(&mut self, now: Instant) {
        loop {
            self.take_transmit();
            while let Some(ev) = self.session.poll_event() {
                self.translate(ev);
            }
            if let Some((s2, _)) = self.second.as_mut() {
                // The second session is announced only if it wins.
                while let Some(ev) = s2.poll_event() {
                    self.second_events.push(ev);
                }
            }
            self.take_transmit();
            if !self.resolve(now) {
                break;
            }
        }
    }

    fn translate(&mut self, ev: SessionEvent) {
        let out = match ev {
            SessionEvent::Connect => {
                if std::mem::replace(&mut self.connecting, true) {
                    // The previous attempt got no answer within ConnectRetry.
                    self.events.push_back(PeerEvent::CancelConnect { unanswered: true });
                }
                if let Some(c) = self.conn.take() {
                    self.events.push_back(PeerEvent::Close(c.id));
                }
                PeerEvent::Connect
            }
            SessionEvent::Disconnect => {
                if std::mem::take(&mut self.connecting) {
                    // ConnectRetry expired in Connect: the attempt got no answer.
                    self.events.push_back(PeerEvent::CancelConnect { unanswered: true });
                }
                match self.conn.take() {
                    Some(c) => {
                        // What the session queued before closing goes first.
                        while let Some(b) = self.session.poll_transmit() {
                            self.tx.push_back((c.id, b));
                        }
                        PeerEvent::Close(c.id)
                    }
                    None => return,
                }
            }
            SessionEvent::StateChanged { from, to } => PeerEvent::StateChanged { from, to },
            SessionEvent::Established(n) => {
                self.graceful_notification = n.graceful_notification;
                self.established = true;
                let conn = self.conn.as_ref().map_or(ConnId(0), |c| c.id);
                PeerEvent::Established { conn, negotiated: n }
            }
            SessionEvent::Down(reason) => {
                let graceful = retains_routes(&reason, self.graceful_notification);
                let was_established = std::mem::take(&mut self.established);
                PeerEvent::Down { reason, graceful, was_established }
            }
            SessionEvent::Update { update, issues } => {
                let treat_as_withdraw = issues.iter().any(|i| i.action == ErrorAction::TreatAsWithdraw);
                PeerEvent::Update { update: Box::new(update), issues, treat_as_withdraw }
            }
            SessionEvent::RouteRefresh(rr) => PeerEvent::Refresh(match rr.subtype {
                RefreshSubtype::BORR => Refresh::Begin(rr.family),
                RefreshSubtype::EORR => Refresh::End(rr.family),
                _ => Refresh::Request(rr.family),
            }),
        };
        self.events.push_back(out);
    }

    /// Resolves a collision once an OPEN tells the peer's BGP identifier:
    /// the losing connection gets Cease / Connection Collision Resolution,
    /// the winning one becomes the session's. True when the primary changed.
    fn resolve(&mut self, now: Instant) -> bool {
        let Some((s2, _)) = self.second.as_ref() else { return false };
        if s2.state() == State::Idle {
            self.drop_second();
            return false;
        }
        let Some(remote_id) = self.session.negotiated().or(s2.negotiated()).map(|n| n.peer_id) else {
            return false;
        };
        // An Established session always keeps its connection (RFC 4271 §6.8).
        let primary_wins = self.session.state() == State::Established
            || match resolve_collision(self.local_id, remote_id) {
                CollisionWinner::Outgoing => self.initiator == Initiator::Local,
                CollisionWinner::Incoming => self.initiator == Initiator::Remote,
            };
        let Some((mut s2, c2)) = self.second.take() else { return false };
        let second_events = std::mem::take(&mut self.second_events);
        if primary_wins {
            s2.handle_collision_dump(now);
            while let Some(b) = s2.poll_transmit() {
                self.tx.push_back((c2.id, b));
            }
            self.events.push_back(PeerEvent::Close(c2.id));
            self.events.push_back(PeerEvent::Collision { kept: self.initiator });
            false
        } else {
            self.session.handle_collision_dump(now);
            let from = self.session.state();
            if let Some(c) = self.conn.take() {
                while let Some(b) = self.session.poll_transmit() {
                    self.tx.push_back((c.id, b));
                }
                self.events.push_back(PeerEvent::Close(c.id));
            }
            // The losing session's own events (down from OpenSent or
            // OpenConfirm, never Established) concern nobody.
            while self.session.poll_event().is_some() {}
            self.session = s2;
            self.conn = Some(c2);
            self.initiator = match self.initiator {
                Initiator::Local => Initiator::Remote,
                Initiator::Remote => Initiator::Local,
            };
            self.events.push_back(PeerEvent::Collision { kept: self.initiator });
            // What the winner did meanwhile is the session's now: its state
            // changes, and Established if it got that far (else the RIB
            // would never hear of the session).
            let to = self.session.state();
            if !second_events.iter().any(|e| matches!(e, SessionEvent::StateChanged { .. })) {
                self.events.push_back(PeerEvent::StateChanged { from, to });
            }
            for ev in second_events {
                self.translate(ev);
            }
            true
        }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("state", &self.session.state())
            .field("conn", &self.conn.as_ref().map(|c| c.id))
            .field("second", &self.second.as_ref().map(|(s, c)| (s.state(), c.id)))
            .field("restart_at", &self.restart_at)
            .field("bfd_hold", &self.bfd_hold)
            .finish()
    }
}
