//! The session FSM (RFC 4271 §8) driven by a decoded sequence of events.
//!
//! The input picks a configuration, then events: the operator's start and
//! stop, the transport's connect and close, bytes from the peer (raw, or a
//! well-formed OPEN, KEEPALIVE, UPDATE, NOTIFICATION or ROUTE-REFRESH built
//! from the input, so that the fuzzer reaches Established), UPDATEs this
//! speaker tries to send, and virtual time passing. Time passes two ways: a
//! punctual driver that calls `handle_timeout` at every deadline
//! `poll_timeout` names, and a late one that jumps past them.
//!
//! After every event the harness checks what the FSM promises:
//! - `StateChanged` events form a chain from Idle that ends in `state()`;
//!   `Update` and `Established` events come only in Established;
//! - negotiated parameters exist exactly in OpenConfirm and Established, and
//!   the hold time is the smaller of the two offers, never 1 or 2 (RFC 4271
//!   §4.2), with a keepalive interval exactly when it is not 0;
//! - every buffer to send is one whole message, at most 4096 octets unless
//!   extended messages were negotiated; it is sent only while a transport
//!   connection is up; an UPDATE only when this speaker queued one in
//!   Established; an OPEN only on the way to OpenSent or OpenConfirm; a
//!   KEEPALIVE only in OpenConfirm or Established; a NOTIFICATION only
//!   with the `Down(NotificationSent)` event that reports it;
//! - `send` succeeds exactly in Established;
//! - hold timer (§6.5): in OpenConfirm and Established with a hold time,
//!   less than the hold time has passed since the last message from the
//!   peer; keepalive: less than the keepalive interval since the last
//!   KEEPALIVE sent;
//! - no deadline is left at or before the time `handle_timeout` was called
//!   with, and Connect, Active and OpenSent always have one (a session never
//!   waits forever before Established).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpd_proto::error::code;
use bgpd_proto::session::{build_open, DownReason, SendError, Session, SessionConfig, SessionEvent, State};
use bgpd_proto::wire::{Capability, Message, Notification, RefreshSubtype, RouteRefresh, Update};
use bgpd_proto::{Family, WireContext};

use crate::Input;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Events per input: enough to go up and down several times.
const MAX_EVENTS: usize = 256;

fn config(inp: &mut Input) -> SessionConfig {
    let local_as = if inp.bool() { 65001 } else { 4_200_000_001 };
    let peer_as = match inp.below(3) {
        0 => local_as,
        1 => 65002,
        _ => 4_200_000_002,
    };
    let mut c = SessionConfig::new(local_as, peer_as, LOCAL_ID);
    c.hold_time = [0, 3, 9, 90][inp.below(4)];
    c.keepalive_time = [None, None, Some(Duration::from_secs(1)), Some(Duration::from_secs(30))][inp.below(4)];
    c.passive = inp.bool();
    c.delay_open = [None, None, Some(Duration::from_secs(1)), Some(Duration::from_secs(5))][inp.below(4)];
    c.auto_restart = inp.bool();
    c.connect_retry = Duration::from_secs([1, 5, 120][inp.below(3)]);
    c.families = match inp.below(3) {
        0 => vec![Family::IPV4_UNICAST],
        1 => vec![Family::IPV6_UNICAST],
        _ => vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
    };
    c.extended_message = inp.bool();
    if inp.bool() {
        let mut gr = bgpd_proto::session::GracefulRestartConfig::new(120);
        gr.notification = inp.bool();
        c.graceful_restart = Some(gr);
    }
    c
}

/// The peer's OPEN, built from its own configuration (the mirror of ours,
/// with deviations the input picks). Returns the bytes and the hold time offered.
fn peer_open(inp: &mut Input, ours: &SessionConfig) -> (Vec<u8>, u16) {
    let asn = if inp.below(16) == 0 { 64999 } else { ours.peer_as };
    let id = if inp.below(16) == 0 { LOCAL_ID } else { PEER_ID };
    let mut c = SessionConfig::new(asn, ours.local_as, id);
    let hold = match inp.below(8) {
        0 => 0,
        1 => 1,
        2 => 3,
        3 => 9,
        4 => 240,
        5 => inp.u16(),
        _ => 90,
    };
    c.families = match inp.below(4) {
        0 => vec![Family::IPV4_UNICAST],
        1 => vec![Family::IPV6_UNICAST],
        _ => vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
    };
    c.extended_message = inp.bool();
    c.route_refresh = inp.bool();
    if inp.bool() {
        let mut gr = bgpd_proto::session::GracefulRestartConfig::new(inp.u16() % 4096);
        gr.notification = inp.bool();
        c.graceful_restart = Some(gr);
    }
    let mut open = build_open(&c);
    open.hold_time = hold;
    if inp.below(4) == 0 {
        // A 2-octet-only speaker (RFC 6793 §4.2.1 "old BGP speaker").
        for p in &mut open.params {
            if let bgpd_proto::wire::OptParam::Capabilities(caps) = p {
                caps.retain(|c| !matches!(c, Capability::FourOctetAs(_)));
            }
        }
    }
    let bytes = Message::Open(open).to_bytes(&WireContext::new(true)).map(|b| b.to_vec()).unwrap_or_default();
    (bytes, hold)
}

/// A message of type `kind` with `body`, framed by hand (whatever the body).
fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// What one event did, for the checks.
#[derive(Default)]
struct Step {
    /// States the session was in during the event (the one before included).
    visited: Vec<State>,
    /// NOTIFICATIONs reported by `Down(NotificationSent)`.
    notifications_reported: Vec<Notification>,
    /// UPDATEs this speaker queued successfully.
    updates_queued: usize,
    /// The transport was up at some point of the event.
    transport_seen: bool,
    /// The hold time of the OPEN the peer sent in this event, if it sent one.
    peer_hold: Option<u16>,
    /// Bytes from the peer arrived in Connect or Active: with DelayOpen
    /// running, its OPEN is answered with ours (RFC 4271 §8.2.2, Event 20)
    /// even if a NOTIFICATION follows.
    open_reply: bool,
    /// A connection was offered in a state that refuses it: the
    /// `Disconnect` it causes closes that connection, not the session's.
    refused: bool,
}

struct Harness {
    s: Session,
    now: Instant,
    /// The state as the `StateChanged` events tell it.
    tracked: State,
    /// The transport connection, as the driver sees it.
    transport_up: bool,
    /// When the peer was last heard from (a message received).
    last_heard: Instant,
    /// When this speaker last sent a KEEPALIVE.
    last_keepalive: Instant,
    received: u64,
}

impl Harness {
    fn received_total(&self) -> u64 {
        self.s.stats().received.iter().sum()
    }

    /// Drains events and transmissions after an event and checks them.
    fn settle(&mut self, mut step: Step) {
        let cfg = self.s.config().clone();
        while let Some(e) = self.s.poll_event() {
            match e {
                SessionEvent::StateChanged { from, to } => {
                    assert_eq!(from, self.tracked, "StateChanged from a state the session was not in");
                    assert_ne!(from, to, "StateChanged to the same state");
                    self.tracked = to;
                    step.visited.push(to);
                }
                SessionEvent::Established(_) => {
                    assert_eq!(self.tracked, State::Established, "Established event outside Established");
                }
                SessionEvent::Update { .. } | SessionEvent::RouteRefresh(_) => {
                    assert_eq!(self.tracked, State::Established, "routes or a refresh outside Established");
                }
                SessionEvent::Down(DownReason::NotificationSent(n)) => step.notifications_reported.push(n),
                SessionEvent::Down(_) => {}
                SessionEvent::Disconnect if step.refused => step.refused = false,
                SessionEvent::Disconnect => self.transport_up = false,
                SessionEvent::Connect => {}
            }
        }
        assert_eq!(self.tracked, self.s.state(), "StateChanged events do not end in the current state");

        let state = self.s.state();
        let negotiated = self.s.negotiated().cloned();
        assert_eq!(
            negotiated.is_some(),
            matches!(state, State::OpenConfirm | State::Established),
            "negotiated parameters exist exactly in OpenConfirm and Established (state {state:?})"
        );
        if let Some(n) = &negotiated {
            assert!(n.hold_time == 0 || n.hold_time >= 3, "RFC 4271 §4.2: negotiated hold time {}", n.hold_time);
            assert_eq!(n.keepalive.is_some(), n.hold_time > 0, "a keepalive interval exactly with a hold time");
            if let Some(peer_hold) = step.peer_hold.filter(|_| step.visited.contains(&State::OpenConfirm)) {
                assert_eq!(n.hold_time, cfg.hold_time.min(peer_hold), "the hold time is the smaller offer");
            }
        }

        let extended = negotiated.as_ref().is_some_and(|n| n.extended_message);
        let ctx = negotiated.as_ref().map_or_else(WireContext::default, |n| n.tx.clone()).with_extended_message(true);
        let mut updates = 0;
        while let Some(buf) = self.s.poll_transmit() {
            assert!(step.transport_seen, "bytes to send while no transport connection was up");
            assert!(extended || buf.len() <= 4096, "a {}-octet message without extended messages", buf.len());
            let frame = Message::decode(&buf, &ctx)
                .unwrap_or_else(|e| panic!("this speaker sent an undecodable message: {e:?}"))
                .expect("a whole message");
            assert_eq!(frame.len, buf.len(), "one message per buffer");
            match frame.message {
                Message::Update(_) => updates += 1,
                Message::Open(_) => assert!(
                    step.open_reply || step.visited.iter().any(|s| matches!(s, State::OpenSent | State::OpenConfirm)),
                    "an OPEN sent without going to OpenSent or OpenConfirm ({:?})",
                    step.visited
                ),
                Message::Keepalive => {
                    assert!(
                        step.visited.iter().any(|s| matches!(s, State::OpenConfirm | State::Established)),
                        "a KEEPALIVE sent outside OpenConfirm and Established ({:?})",
                        step.visited
                    );
                    self.last_keepalive = self.now;
                }
                Message::Notification(n) => assert!(
                    step.notifications_reported.iter().any(|r| r.code == n.code && r.subcode == n.subcode),
                    "NOTIFICATION {}/{} sent but not reported",
                    n.code,
                    n.subcode
                ),
                Message::RouteRefresh(_) => panic!("the FSM sent a ROUTE-REFRESH of its own"),
            }
        }
        assert!(updates <= step.updates_queued, "an UPDATE this speaker did not queue");

        let received = self.received_total();
        if received != self.received {
            self.received = received;
            self.last_heard = self.now;
        }
        if let Some(n) = &negotiated {
            if n.hold_time > 0 {
                let hold = Duration::from_secs(u64::from(n.hold_time));
                assert!(
                    self.now < self.last_heard + hold,
                    "{state:?} after the hold time ({hold:?}) without a message from the peer"
                );
            }
            if let Some(k) = n.keepalive {
                assert!(self.now < self.last_keepalive + k, "{state:?}: no KEEPALIVE for {k:?}");
            }
        }
        if matches!(state, State::Connect | State::Active | State::OpenSent) {
            assert!(self.s.poll_timeout().is_some(), "{state:?} with no deadline: it would wait forever");
        }
    }

    /// One `handle_timeout` at the current time, checked.
    fn timeout(&mut self) {
        let step = self.begin();
        self.s.handle_timeout(self.now);
        if let Some(t) = self.s.poll_timeout() {
            assert!(t > self.now, "a deadline at or before the time handle_timeout ran ({:?})", self.now);
        }
        self.settle(step);
    }

    fn begin(&self) -> Step {
        Step { visited: vec![self.s.state()], transport_seen: self.transport_up, ..Step::default() }
    }

    /// Bytes from the peer, checked.
    fn bytes(&mut self, bytes: &[u8], peer_hold: Option<u16>) {
        let mut step = self.begin();
        step.peer_hold = peer_hold;
        step.open_reply = matches!(self.s.state(), State::Connect | State::Active);
        self.s.handle_bytes(self.now, bytes);
        self.settle(step);
    }
}

/// See the module docs.
pub fn session_fsm(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = config(&mut inp);
    let Ok(s) = Session::new(cfg.clone()) else { return };
    let t0 = Instant::now();
    let mut h = Harness {
        s,
        now: t0,
        tracked: State::Idle,
        transport_up: false,
        last_heard: t0,
        last_keepalive: t0,
        received: 0,
    };
    for _ in 0..MAX_EVENTS {
        if inp.is_empty() {
            break;
        }
        match inp.below(16) {
            0 | 1 => {
                let step = h.begin();
                h.s.handle_manual_start(h.now);
                h.settle(step);
            }
            2 => {
                let step = h.begin();
                let text = String::from_utf8_lossy(inp.chunk()).into_owned();
                h.s.handle_manual_stop(h.now, if text.is_empty() { None } else { Some(&text) });
                h.settle(step);
            }
            3 | 4 => {
                // Tcp_CR_Acked / TcpConnectionConfirmed: the driver only
                // connects when asked, or accepts the peer's connection.
                let mut step = h.begin();
                let accepted = matches!(h.s.state(), State::Connect | State::Active);
                h.s.handle_connected(h.now);
                if accepted {
                    h.transport_up = true;
                    step.transport_seen = true;
                } else {
                    step.refused = true;
                }
                h.settle(step);
            }
            5 => {
                let step = h.begin();
                h.transport_up = false;
                h.s.handle_connection_failed(h.now);
                h.settle(step);
            }
            6 => {
                let raw = inp.chunk().to_vec();
                h.bytes(&raw, None);
            }
            7 | 8 => {
                let (open, hold) = peer_open(&mut inp, &cfg);
                // Sometimes in two pieces: "not enough bytes yet" is not an error.
                let cut = inp.below(open.len().max(1)).min(open.len());
                h.bytes(&open[..cut], None);
                h.bytes(&open[cut..], Some(hold));
            }
            9 => h.bytes(&framed(4, &[]), None),
            10 => {
                let body = inp.chunk().to_vec();
                h.bytes(&framed(2, &body), None);
            }
            11 => {
                let n = Notification::new(inp.byte(), inp.byte(), inp.chunk().to_vec());
                h.bytes(&Message::Notification(n).to_bytes(&WireContext::default()).expect("fits"), None);
            }
            12 => {
                let family = if inp.bool() { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST };
                let r = RouteRefresh { family, subtype: RefreshSubtype(inp.below(3) as u8), orf: Vec::new() };
                h.bytes(&Message::RouteRefresh(r).to_bytes(&WireContext::default()).expect("fits"), None);
            }
            13 => {
                let mut step = h.begin();
                let established = h.s.state() == State::Established;
                let r = h.s.send(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)));
                match r {
                    Ok(()) => {
                        assert!(established, "send succeeded outside Established");
                        step.updates_queued = 1;
                    }
                    Err(SendError::NotEstablished) => assert!(!established, "send refused in Established"),
                    Err(SendError::Encode(e)) => panic!("End-of-RIB does not encode: {e:?}"),
                }
                h.settle(step);
            }
            14 => {
                let step = h.begin();
                match inp.below(3) {
                    0 => h.s.handle_collision_dump(h.now),
                    1 => h.s.handle_restart_stop(h.now, "restart"),
                    _ => h.s.handle_stop(h.now, Notification::new(code::CEASE, inp.byte() % 11, [])),
                }
                h.settle(step);
            }
            _ => {
                let d = Duration::from_millis(u64::from(inp.u16()) * 8);
                let target = h.now + d;
                if inp.bool() {
                    // A late driver: one call, at the end.
                    h.now = target;
                    h.timeout();
                } else {
                    // A punctual driver: every deadline on time.
                    while let Some(t) = h.s.poll_timeout().filter(|t| *t <= target) {
                        h.now = h.now.max(t);
                        h.timeout();
                    }
                    h.now = target;
                }
            }
        }
    }
}
