//! The BGP session state machine of RFC 4271 §8, sans-IO.
//!
//! A [`Session`] is fed with `handle_*(…, now)` calls — the session's
//! connection came up or failed, bytes arrived, a deadline passed, the
//! operator started or stopped it — and drained with `poll_*()` calls: bytes
//! to send, the next deadline, and [`SessionEvent`]s (connect, disconnect,
//! established, routes received, down). It starts no timer and opens no
//! socket: the driver does, when told. Events are named as RFC 4271 §8.1
//! names them.

mod config;
mod negotiate;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use config::{ConfigError, GracefulRestartConfig, SessionConfig, MAX_LONG_LIVED_STALE_TIME};
pub use negotiate::{build_open, negotiate, Negotiated};

use crate::error::{code, EncodeError, UpdateIssue};
use crate::wire::{Message, Notification, Open, RouteRefresh, Update, WireContext};

/// The session states of RFC 4271 §8.2.2 (named as the RFC names them,
/// also when serialized).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// Refuses connections; waits for a start event.
    Idle,
    /// Waiting for the outgoing TCP connection to complete.
    Connect,
    /// Waiting for the peer to connect (or for the ConnectRetry timer).
    Active,
    /// OPEN sent; waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged; waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Exchanging UPDATEs.
    Established,
}

impl State {
    /// BGP4-MIB's `bgpPeerState` number (RFC 4273): Idle 1 … Established 6.
    pub fn mib_code(self) -> u8 {
        match self {
            State::Idle => 1,
            State::Connect => 2,
            State::Active => 3,
            State::OpenSent => 4,
            State::OpenConfirm => 5,
            State::Established => 6,
        }
    }
}

/// Why a session left Established or failed to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (an error found, a timer expired, or a stop).
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The transport connection failed or closed (TcpConnectionFails).
    ConnectionFailed,
    /// Stopped without a NOTIFICATION: no connection was up, or this
    /// speaker closed it for a restart ([`Session::handle_restart_stop`]).
    Stopped,
}

/// What the driver must do, or what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Open a transport connection to the peer.
    Connect,
    /// Close the transport connection once the queued bytes are sent.
    Disconnect,
    /// The session changed state.
    StateChanged {
        /// The state left.
        from: State,
        /// The state entered.
        to: State,
    },
    /// The session reached Established with these negotiated parameters.
    Established(Box<Negotiated>),
    /// The session went down (from any state past Idle).
    Down(DownReason),
    /// An UPDATE arrived; `issues` lists RFC 7606 problems that did not reset
    /// the session (treat-as-withdraw means: withdraw every announced prefix).
    Update {
        /// The UPDATE.
        update: Update,
        /// Non-fatal malformations.
        issues: Vec<UpdateIssue>,
    },
    /// The peer asks for our routes again (or marks a refresh's start or end).
    RouteRefresh(RouteRefresh),
}

/// Message and error counters an operator graphs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages received, by type code (index 1..=5).
    pub received: [u64; 6],
    /// Messages sent, by type code.
    pub sent: [u64; 6],
    /// Times the session left Established.
    pub flaps: u64,
    /// The last NOTIFICATION sent or received.
    pub last_error: Option<LastNotification>,
}

/// The last NOTIFICATION of a session: its error code and subcode (RFC 4271
/// §4.5), and which side sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastNotification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Sent by this speaker (false: received from the peer).
    pub sent: bool,
}

/// Deadlines, one per RFC 4271 timer; `None` when stopped.
#[derive(Clone, Debug, Default)]
struct Timers {
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    delay_open: Option<Instant>,
    idle_hold: Option<Instant>,
}

/// RFC 4271 §8.2.2 suggests a large hold time (4 minutes) while OPEN is pending.
const OPEN_HOLD: Duration = Duration::from_secs(240);

/// One BGP session with one peer over one transport connection at a time.
pub struct Session {
    cfg: SessionConfig,
    state: State,
    timers: Timers,
    /// Present only once OPENs are exchanged (OpenConfirm, Established).
    negotiated: Option<Box<Negotiated>>,
    /// RFC 4271 §8 ConnectRetryCounter.
    connect_retry_counter: u32,
    /// Consecutive failures, for the IdleHold backoff.
    oscillations: u32,
    established_at: Option<Instant>,
    rx: BytesMut,
    tx: VecDeque<Bytes>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
    /// The connection is up (between TcpConnectionConfirmed and a failure or Disconnect).
    connected: bool,
}

impl Session {
    /// A session in Idle. The configuration must be valid.
    pub fn new(cfg: SessionConfig) -> Result<Session, ConfigError> {
        cfg.validate()?;
        Ok(Session {
            cfg,
            state: State::Idle,
            timers: Timers::default(),
            negotiated: None,
            connect_retry_counter: 0,
            oscillations: 0,
            established_at: None,
            rx: BytesMut::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
            connected: false,
        })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What was negotiated, once OPENs are exchanged.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// When the session reached Established, if it is.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// The ConnectRetryCounter of RFC 4271 §8.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    // ----- inputs -----

    /// ManualStart (Event 1), or ManualStart_with_PassiveTcpEstablishment
    /// (Event 4) when the session is configured passive.
    pub fn handle_manual_start(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.oscillations = 0;
            self.timers.idle_hold = None;
            self.start(now);
        }
    }

    /// ManualStop (Event 2): Cease / Administrative Shutdown with an optional
    /// shutdown communication (RFC 9003), then Idle; no automatic restart.
    pub fn handle_manual_stop(&mut self, now: Instant, message: Option<&str>) {
        let n = match message {
            Some(m) => Notification::cease_with_message(code::cease::ADMINISTRATIVE_SHUTDOWN, m),
            None => Notification::new(code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN, []),
        };
        self.handle_stop(now, n);
    }

    /// A stop with a NOTIFICATION of the caller's choice (for example Cease /
    /// Peer De-configured or Other Configuration Change, RFC 4486): sent if a
    /// connection is up, then Idle; no automatic restart.
    ///
    /// RFC 8538 §5.1: once the N bit is exchanged, a Cease that must end the
    /// peer's graceful restart (Administrative Shutdown, Peer De-configured,
    /// Maximum Number of Prefixes, BFD Down) goes inside a Hard Reset.
    pub fn handle_stop(&mut self, _now: Instant, n: Notification) {
        self.timers = Timers::default();
        self.connect_retry_counter = 0;
        let n_bit = self.negotiated.as_ref().is_some_and(|x| x.graceful_notification);
        let n = if n_bit && n.needs_hard_reset() { Notification::hard_reset(&n) } else { n };
        if self.connected && matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
            self.send_notification(n.clone());
            self.go_down(DownReason::NotificationSent(n));
        } else if self.state != State::Idle {
            self.go_down(DownReason::Stopped);
        }
        self.goto(State::Idle);
    }

    /// A stop for a restart of this speaker (RFC 4724 §4): the peer must
    /// keep our routes as a graceful restart helper. Where the N bit was
    /// exchanged, Cease / Administrative Reset with `message` says so (RFC
    /// 8538 §3: a NOTIFICATION other than Hard Reset keeps graceful restart
    /// in force); otherwise the connection is closed without a NOTIFICATION,
    /// which every graceful restart helper takes as a restart. Then Idle; no
    /// automatic restart.
    pub fn handle_restart_stop(&mut self, now: Instant, message: &str) {
        let n_bit = self.negotiated.as_ref().is_some_and(|x| x.graceful_notification);
        if n_bit && self.connected && self.state == State::Established {
            self.handle_stop(now, Notification::cease_with_message(code::cease::ADMINISTRATIVE_RESET, message));
            return;
        }
        self.timers = Timers::default();
        self.connect_retry_counter = 0;
        if self.state != State::Idle {
            self.go_down(DownReason::Stopped);
        }
        self.goto(State::Idle);
    }

    /// OpenCollisionDump (Event 23): this connection lost the collision
    /// resolution of RFC 4271 §6.8: Cease / Connection Collision Resolution,
    /// then Idle. The session does not restart on its own; the connection
    /// that won carries on in another [`Session`].
    pub fn handle_collision_dump(&mut self, _now: Instant) {
        if matches!(self.state, State::OpenSent | State::OpenConfirm) {
            let n = Notification::new(code::CEASE, code::cease::CONNECTION_COLLISION_RESOLUTION, []);
            self.send_notification(n.clone());
            self.go_down(DownReason::NotificationSent(n));
            self.timers = Timers::default();
            self.goto(State::Idle);
        }
    }

    /// Tcp_CR_Acked / TcpConnectionConfirmed (Events 16, 17): the transport
    /// connection is up (ours completed, or the peer's was accepted).
    pub fn handle_connected(&mut self, now: Instant) {
        match self.state {
            State::Connect | State::Active => {
                self.connected = true;
                self.rx.clear();
                if let Some(d) = self.cfg.delay_open {
                    self.timers.connect_retry = None;
                    self.timers.delay_open = Some(now + d);
                } else {
                    self.timers.connect_retry = None;
                    self.send_open(now);
                }
            }
            // A connection in any other state is refused (the driver closes it).
            _ => self.events.push_back(SessionEvent::Disconnect),
        }
    }

    /// TcpConnectionFails (Event 18): the transport connection failed or closed.
    pub fn handle_connection_failed(&mut self, now: Instant) {
        self.connected = false;
        match self.state {
            State::Idle => {}
            State::Connect => {
                // RFC 4271 §8.2.2 sends Connect to Idle here unless DelayOpen
                // runs. Like BIRD and FRR, this FSM goes to Active instead:
                // it keeps accepting the peer's connection and retries after
                // ConnectRetry, so a peer that starts later (or only connects
                // out) is not locked out by the Idle backoff.
                self.timers.delay_open = None;
                self.timers.connect_retry = Some(now + self.cfg.connect_retry);
                self.events.push_back(SessionEvent::Down(DownReason::ConnectionFailed));
                self.goto(State::Active);
            }
            State::Active => {
                self.timers.delay_open = None;
                self.timers.connect_retry = Some(now + self.cfg.connect_retry);
            }
            State::OpenSent => {
                // RFC 4271 §8.2.2: back to Active, listening, ConnectRetry restarted.
                self.timers.hold = None;
                self.timers.connect_retry = Some(now + self.cfg.connect_retry);
                self.events.push_back(SessionEvent::Down(DownReason::ConnectionFailed));
                self.goto(State::Active);
            }
            State::OpenConfirm | State::Established => self.fail(now, DownReason::ConnectionFailed),
        }
    }

    /// Bytes received on the connection. Complete messages are processed at
    /// once; a partial one waits for more bytes.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if !self.connected {
            return;
        }
        self.rx.extend_from_slice(bytes);
        loop {
            let ctx = self.negotiated.as_ref().map_or_else(WireContext::default, |n| n.rx.clone());
            match Message::decode(&self.rx, &ctx) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let _ = self.rx.split_to(frame.len);
                    self.stats.received[usize::from(frame.message.kind().0).min(5)] += 1;
                    self.on_message(now, frame.message, frame.issues);
                }
                Err(e) => {
                    // BGPHeaderErr / BGPOpenMsgErr / UpdateMsgErr (Events 21, 22, 28).
                    self.stats.received[0] += 1;
                    self.rx.clear();
                    self.error(now, Notification::from_error(&e));
                    break;
                }
            }
            if !self.connected {
                break;
            }
        }
        // An idle session keeps no large receive buffer: a burst (the initial
        // table) would otherwise stay allocated for the session's lifetime.
        if self.rx.is_empty() && self.rx.capacity() > 4096 {
            self.rx = BytesMut::new();
        }
    }

    /// Deadlines that have passed fire, in RFC order (§8.1.3 timer events).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timers.idle_hold) {
            // AutomaticStart (Event 3) after DampPeerOscillations' IdleHoldTimer.
            self.timers.idle_hold = None;
            if self.state == State::Idle {
                self.start(now);
            }
        }
        if due(self.timers.hold) {
            // HoldTimer_Expires (Event 10).
            self.timers.hold = None;
            self.error(now, Notification::new(code::HOLD_TIMER_EXPIRED, 0, []));
        }
        if due(self.timers.delay_open) {
            // DelayOpenTimer_Expires (Event 12).
            self.timers.delay_open = None;
            if matches!(self.state, State::Connect | State::Active) && self.connected {
                self.send_open(now);
            }
        }
        if due(self.timers.keepalive) {
            // KeepaliveTimer_Expires (Event 11).
            self.timers.keepalive = None;
            if matches!(self.state, State::OpenConfirm | State::Established) {
                self.queue(&Message::Keepalive);
                self.arm_keepalive(now);
            }
        }
        if due(self.timers.connect_retry) {
            // ConnectRetryTimer_Expires (Event 9).
            self.timers.connect_retry = Some(now + self.cfg.connect_retry);
            match self.state {
                State::Connect => {
                    self.connected = false;
                    self.timers.delay_open = None;
                    self.events.push_back(SessionEvent::Disconnect);
                    self.events.push_back(SessionEvent::Connect);
                }
                State::Active if !self.cfg.passive => {
                    self.events.push_back(SessionEvent::Connect);
                    self.goto(State::Connect);
                }
                State::Active => {}
                _ => {
                    self.timers.connect_retry = None;
                    if self.state != State::Idle {
                        self.fsm_error(now);
                    }
                }
            }
        }
    }

    /// Queues an UPDATE (or any message) for the peer, encoded with the
    /// negotiated context. Only in Established.
    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        let ctx = self.negotiated.as_ref().map_or_else(WireContext::default, |n| n.tx.clone());
        let bytes = message.to_bytes(&ctx).map_err(SendError::Encode)?;
        self.stats.sent[usize::from(message.kind().0).min(5)] += 1;
        self.tx.push_back(bytes.freeze());
        Ok(())
    }

    /// Queues already-encoded messages (built once for an update group).
    pub fn send_encoded(&mut self, bytes: Bytes, kind: crate::MessageType) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        self.stats.sent[usize::from(kind.0).min(5)] += 1;
        self.tx.push_back(bytes);
        Ok(())
    }

    // ----- outputs -----

    /// The next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.tx.pop_front()
    }

    /// The earliest deadline at which [`Session::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timers;
        [t.connect_retry, t.hold, t.keepalive, t.delay_open, t.idle_hold].into_iter().flatten().min()
    }

    /// How many events wait to be taken by [`Session::poll_event`] (a driver
    /// that bounds what it hands on stops reading while many do).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The next event for the driver or the RIB.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    // ----- transitions -----

    fn goto(&mut self, to: State) {
        if to != self.state {
            let from = self.state;
            self.state = to;
            self.events.push_back(SessionEvent::StateChanged { from, to });
        }
    }

    /// Idle → Connect (initiate) or Active (passive), ConnectRetry started.
    fn start(&mut self, now: Instant) {
        self.connect_retry_counter = 0;
        self.timers.connect_retry = Some(now + self.cfg.connect_retry);
        if self.cfg.passive {
            self.goto(State::Active);
        } else {
            self.events.push_back(SessionEvent::Connect);
            self.goto(State::Connect);
        }
    }

    fn send_open(&mut self, now: Instant) {
        let open = build_open(&self.cfg);
        self.queue(&Message::Open(open));
        self.timers.hold = Some(now + OPEN_HOLD);
        self.goto(State::OpenSent);
    }

    fn queue(&mut self, m: &Message) {
        let ctx = self.negotiated.as_ref().map_or_else(WireContext::default, |n| n.tx.clone());
        // Messages the FSM builds itself (OPEN, KEEPALIVE, NOTIFICATION with
        // data cut to fit) always encode; a failure would only drop that message.
        if let Ok(b) = m.to_bytes(&ctx) {
            self.stats.sent[usize::from(m.kind().0).min(5)] += 1;
            self.tx.push_back(b.freeze());
        }
    }

    fn send_notification(&mut self, mut n: Notification) {
        // A NOTIFICATION must fit one message: cut its data if needed.
        n.data.truncate(4096 - 21);
        self.stats.last_error = Some(LastNotification { code: n.code, subcode: n.subcode, sent: true });
        self.queue(&Message::Notification(n));
    }

    fn arm_keepalive(&mut self, now: Instant) {
        self.timers.keepalive = self.negotiated.as_ref().and_then(|n| n.keepalive).map(|k| now + k);
    }

    fn arm_hold(&mut self, now: Instant) {
        self.timers.hold = self
            .negotiated
            .as_ref()
            .filter(|n| n.hold_time > 0)
            .map(|n| now + Duration::from_secs(u64::from(n.hold_time)));
    }

    /// Tears the connection down, reports why, and goes to Idle with the
    /// IdleHold backoff when restarting automatically.
    fn fail(&mut self, now: Instant, reason: DownReason) {
        self.connect_retry_counter += 1;
        self.go_down(reason);
        self.timers = Timers::default();
        if self.cfg.auto_restart {
            // RFC 4271 §8.1.1 DampPeerOscillations: exponential IdleHold.
            let stable = self.established_at.is_some_and(|t| now.duration_since(t) >= self.cfg.idle_hold_max);
            self.oscillations = if stable { 1 } else { self.oscillations.saturating_add(1) };
            let factor = 1u32 << (self.oscillations - 1).min(16);
            let delay = self.cfg.idle_hold.saturating_mul(factor).min(self.cfg.idle_hold_max);
            self.timers.idle_hold = Some(now + delay);
        }
        self.goto(State::Idle);
    }

    fn go_down(&mut self, reason: DownReason) {
        if self.state == State::Established {
            self.stats.flaps += 1;
        }
        self.established_at = None;
        self.negotiated = None;
        self.rx.clear();
        if self.connected {
            self.connected = false;
            self.events.push_back(SessionEvent::Disconnect);
        }
        self.events.push_back(SessionEvent::Down(reason));
    }

    /// Sends `n`, then fails the session.
    fn error(&mut self, now: Instant, n: Notification) {
        if self.state == State::Idle {
            return;
        }
        if self.connected
            && matches!(
                self.state,
                State::OpenSent | State::OpenConfirm | State::Established | State::Connect | State::Active
            )
        {
            self.send_notification(n.clone());
        }
        self.fail(now, DownReason::NotificationSent(n));
    }

    /// An event not valid in the current state: FSM Error (RFC 6608 subcodes).
    fn fsm_error(&mut self, now: Instant) {
        let sub = match self.state {
            State::OpenSent => code::fsm::UNEXPECTED_IN_OPEN_SENT,
            State::OpenConfirm => code::fsm::UNEXPECTED_IN_OPEN_CONFIRM,
            State::Established => code::fsm::UNEXPECTED_IN_ESTABLISHED,
            _ => code::fsm::UNSPECIFIED,
        };
        self.error(now, Notification::new(code::FSM, sub, []));
    }

    fn on_message(&mut self, now: Instant, m: Message, issues: Vec<UpdateIssue>) {
        if let Message::Notification(n) = &m {
            // NotifMsg (Event 25), in any state: the peer closes.
            self.stats.last_error = Some(LastNotification { code: n.code, subcode: n.subcode, sent: false });
            let n = n.clone();
            self.fail(now, DownReason::NotificationReceived(n));
            return;
        }
        match (self.state, m) {
            (State::Connect | State::Active, Message::Open(open)) if self.timers.delay_open.is_some() => {
                // BGPOpen with DelayOpenTimer running (Event 20).
                self.timers.delay_open = None;
                self.queue(&Message::Open(build_open(&self.cfg)));
                self.accept_open(now, &open);
            }
            (State::OpenSent, Message::Open(open)) => self.accept_open(now, &open),
            (State::OpenConfirm, Message::Keepalive) => {
                // KeepAliveMsg (Event 26): Established.
                self.arm_hold(now);
                self.established_at = Some(now);
                self.goto(State::Established);
                if let Some(n) = &self.negotiated {
                    self.events.push_back(SessionEvent::Established(n.clone()));
                }
            }
            (State::Established, Message::Keepalive) => self.arm_hold(now),
            (State::Established, Message::Update(update)) => {
                self.arm_hold(now);
                self.events.push_back(SessionEvent::Update { update, issues });
            }
            (State::Established, Message::RouteRefresh(r)) => {
                self.arm_hold(now);
                if self.negotiated.as_ref().is_some_and(|n| n.route_refresh || n.enhanced_route_refresh) {
                    self.events.push_back(SessionEvent::RouteRefresh(r));
                }
            }
            _ => self.fsm_error(now),
        }
    }

    fn accept_open(&mut self, now: Instant, open: &Open) {
        match negotiate(&self.cfg, open) {
            Ok(n) => {
                self.timers.connect_retry = None;
                self.negotiated = Some(Box::new(n));
                self.queue(&Message::Keepalive);
                self.arm_keepalive(now);
                self.arm_hold(now);
                self.goto(State::OpenConfirm);
            }
            Err(e) => self.error(now, Notification::from_error(&e)),
        }
    }
}

/// Whether the routes of a peer whose session ended for `reason` are kept
/// as stale (this speaker is its graceful restart helper), given that the
/// peer sent the graceful restart capability. RFC 4724 §4.2: a lost
/// connection keeps them, a NOTIFICATION does not. RFC 8538 §4: where the N
/// bit was exchanged (`graceful_notification`), every NOTIFICATION sent or
/// received keeps them too, except a Hard Reset. `Stopped` (this speaker
/// stopped the session without a NOTIFICATION) keeps them: it is a restart
/// of this speaker, whose RIB goes with it.
pub fn retains_routes(reason: &DownReason, graceful_notification: bool) -> bool {
    match reason {
        DownReason::ConnectionFailed | DownReason::Stopped => true,
        DownReason::NotificationSent(n) | DownReason::NotificationReceived(n) => {
            graceful_notification && !n.is_hard_reset()
        }
    }
}

/// Which of two connections to one peer survives a collision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollisionWinner {
    /// The connection this speaker initiated.
    Outgoing,
    /// The connection the peer initiated.
    Incoming,
}

/// RFC 4271 §6.8: when the local BGP identifier is lower than the peer's,
/// the connection initiated by the local system is closed; otherwise the one
/// initiated by the peer is.
pub fn resolve_collision(local_id: std::net::Ipv4Addr, remote_id: std::net::Ipv4Addr) -> CollisionWinner {
    if u32::from(local_id) < u32::from(remote_id) {
        CollisionWinner::Incoming
    } else {
        CollisionWinner::Outgoing
    }
}

/// Why a message could not be queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Routes are exchanged only in Established.
    #[error("the session is not established")]
    NotEstablished,
    /// The message does not fit the negotiated encoding.
    #[error("cannot encode: {0}")]
    Encode(EncodeError),
}
