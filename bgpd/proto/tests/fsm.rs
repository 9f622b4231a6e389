//! RFC 4271 §8.2.2: one test per state and event, named `test_<state>_<event>`,
//! driving a [`Session`] with bytes a peer would send, on a virtual clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpd_proto::error::code;
use bgpd_proto::session::{DownReason, LastNotification, Session, SessionConfig, SessionEvent, State};
use bgpd_proto::wire::{Capability, Message, Notification, Open, RouteRefresh, Update};
use bgpd_proto::{Family, WireContext};

fn cfg() -> SessionConfig {
    let mut c = SessionConfig::new(65001, 65002, Ipv4Addr::new(10, 0, 0, 1));
    c.hold_time = 9;
    c
}

fn peer_open(asn: u16, hold: u16) -> Vec<u8> {
    let caps = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::RouteRefresh,
        Capability::FourOctetAs(u32::from(asn)),
    ];
    msg(&Message::Open(Open::new(asn, hold, Ipv4Addr::new(10, 0, 0, 2), caps)))
}

fn msg(m: &Message) -> Vec<u8> {
    m.to_bytes(&WireContext::new(true)).unwrap().to_vec()
}

struct Fixture {
    s: Session,
    t0: Instant,
    now: Instant,
}

impl Fixture {
    fn new(c: SessionConfig) -> Fixture {
        let t0 = Instant::now();
        Fixture { s: Session::new(c).unwrap(), t0, now: t0 }
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }
    fn feed(&mut self, bytes: &[u8]) {
        self.s.handle_bytes(self.now, bytes);
    }
    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }
    fn sent(&mut self) -> Vec<Message> {
        let ctx = self.s.negotiated().map_or_else(|| WireContext::new(true), |n| n.tx.clone());
        std::iter::from_fn(|| self.s.poll_transmit())
            .map(|b| Message::decode(&b, &ctx).unwrap().unwrap().message)
            .collect()
    }
    fn notification_sent(&mut self) -> Option<Notification> {
        self.sent().into_iter().find_map(|m| match m {
            Message::Notification(n) => Some(n),
            _ => None,
        })
    }
    /// Drives the session to `state` the way a peer would.
    fn to(mut self, state: State) -> Fixture {
        self.s.handle_manual_start(self.now);
        if state == State::Connect {
            return self.drained();
        }
        if state == State::Active {
            // A failed connection attempt with DelayOpen running returns to Active;
            // simplest: a passive session starts in Active.
            let mut c = self.s.config().clone();
            c.passive = true;
            let mut f = Fixture::new(c);
            f.s.handle_manual_start(f.now);
            return f.drained();
        }
        self.s.handle_connected(self.now);
        if state == State::OpenSent {
            return self.drained();
        }
        self.feed(&peer_open(65002, 90));
        if state == State::OpenConfirm {
            return self.drained();
        }
        self.feed(&msg(&Message::Keepalive));
        assert_eq!(self.s.state(), State::Established);
        self.drained()
    }
    fn drained(mut self) -> Fixture {
        self.events();
        self.sent();
        self
    }
}

fn at(state: State) -> Fixture {
    Fixture::new(cfg()).to(state)
}

fn assert_down_with(f: &mut Fixture, code: u8, subcode: u8) {
    let n = f.notification_sent().expect("a NOTIFICATION is sent");
    assert_eq!((n.code, n.subcode), (code, subcode), "{n:?}");
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.events().contains(&SessionEvent::Disconnect));
}

// ----- Idle -----

#[test]
fn test_idle_manual_start() {
    let mut f = Fixture::new(cfg());
    f.s.handle_manual_start(f.now);
    assert_eq!(f.s.state(), State::Connect);
    assert!(f.events().contains(&SessionEvent::Connect));
    assert_eq!(f.s.poll_timeout(), Some(f.now + cfg().connect_retry));
}

#[test]
fn test_idle_manual_start_with_passive_tcp_establishment() {
    let mut c = cfg();
    c.passive = true;
    let mut f = Fixture::new(c);
    f.s.handle_manual_start(f.now);
    assert_eq!(f.s.state(), State::Active);
    assert!(!f.events().contains(&SessionEvent::Connect));
}

#[test]
fn test_idle_tcp_connection_confirmed_is_refused() {
    let mut f = Fixture::new(cfg());
    f.s.handle_connected(f.now);
    assert_eq!(f.s.state(), State::Idle);
    assert_eq!(f.events(), vec![SessionEvent::Disconnect]);
}

#[test]
fn test_idle_bytes_are_ignored() {
    let mut f = Fixture::new(cfg());
    f.feed(&peer_open(65002, 90));
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.sent().is_empty());
}

// ----- Connect -----

#[test]
fn test_connect_tcp_cr_acked_sends_open() {
    let mut f = at(State::Connect);
    f.s.handle_connected(f.now);
    assert_eq!(f.s.state(), State::OpenSent);
    let sent = f.sent();
    let Message::Open(o) = &sent[0] else { panic!("OPEN expected, got {sent:?}") };
    assert_eq!((o.my_as, o.hold_time, o.asn()), (65001, 9, 65001));
    // RFC 4271 §8.2.2: the hold timer is set to a large value while OPEN is pending.
    assert_eq!(f.s.poll_timeout(), Some(f.now + Duration::from_secs(240)));
}

#[test]
fn test_connect_connect_retry_timer_expires() {
    let mut f = at(State::Connect);
    f.advance(cfg().connect_retry);
    assert_eq!(f.s.state(), State::Connect);
    assert_eq!(f.events(), vec![SessionEvent::Disconnect, SessionEvent::Connect]);
}

#[test]
fn test_connect_tcp_connection_fails() {
    // Deliberately Active rather than RFC 4271's Idle (see the FSM): the
    // session keeps listening and retries after ConnectRetry, no backoff.
    let mut f = at(State::Connect);
    f.s.handle_connection_failed(f.now);
    assert_eq!(f.s.state(), State::Active);
    assert!(f.events().contains(&SessionEvent::Down(DownReason::ConnectionFailed)));
    f.s.handle_connected(f.now);
    assert_eq!(f.s.state(), State::OpenSent, "the peer's connection is taken");
    let mut f = at(State::Connect);
    f.s.handle_connection_failed(f.now);
    f.advance(cfg().connect_retry);
    assert_eq!(f.s.state(), State::Connect, "and it connects again after ConnectRetry");
}

#[test]
fn test_connect_manual_stop() {
    let mut f = at(State::Connect);
    f.s.handle_manual_stop(f.now, None);
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.events().contains(&SessionEvent::Down(DownReason::Stopped)));
    assert_eq!(f.s.poll_timeout(), None, "a manual stop does not restart");
}

#[test]
fn test_connect_delay_open_timer_expires() {
    let mut c = cfg();
    c.delay_open = Some(Duration::from_secs(2));
    let mut f = Fixture::new(c).to(State::Connect);
    f.s.handle_connected(f.now);
    assert_eq!(f.s.state(), State::Connect);
    assert!(f.sent().is_empty(), "OPEN waits for DelayOpen");
    f.advance(Duration::from_secs(2));
    assert_eq!(f.s.state(), State::OpenSent);
    assert!(matches!(f.sent()[0], Message::Open(_)));
}

#[test]
fn test_connect_bgp_open_with_delay_open_timer_running() {
    let mut c = cfg();
    c.delay_open = Some(Duration::from_secs(2));
    let mut f = Fixture::new(c).to(State::Connect);
    f.s.handle_connected(f.now);
    f.feed(&peer_open(65002, 90));
    assert_eq!(f.s.state(), State::OpenConfirm);
    let sent = f.sent();
    assert!(matches!(sent[0], Message::Open(_)) && sent[1] == Message::Keepalive, "{sent:?}");
}

// ----- Active -----

#[test]
fn test_active_tcp_connection_confirmed() {
    let mut f = at(State::Active);
    f.s.handle_connected(f.now);
    assert_eq!(f.s.state(), State::OpenSent);
}

#[test]
fn test_active_connect_retry_timer_expires_passive_stays() {
    let mut f = at(State::Active);
    f.advance(cfg().connect_retry);
    assert_eq!(f.s.state(), State::Active, "a passive session never initiates");
    assert!(!f.events().contains(&SessionEvent::Connect));
}

#[test]
fn test_active_connect_retry_timer_expires_active_connects() {
    // Reach Active from OpenSent by a failed connection, on an active session.
    let mut f = at(State::OpenSent);
    f.s.handle_connection_failed(f.now);
    assert_eq!(f.s.state(), State::Active);
    f.events();
    f.advance(cfg().connect_retry);
    assert_eq!(f.s.state(), State::Connect);
    assert!(f.events().contains(&SessionEvent::Connect));
}

#[test]
fn test_active_manual_stop() {
    let mut f = at(State::Active);
    f.s.handle_manual_stop(f.now, None);
    assert_eq!(f.s.state(), State::Idle);
}

// ----- OpenSent -----

#[test]
fn test_opensent_bgp_open() {
    let mut f = at(State::OpenSent);
    f.feed(&peer_open(65002, 30));
    assert_eq!(f.s.state(), State::OpenConfirm);
    assert_eq!(f.sent(), vec![Message::Keepalive]);
    let n = f.s.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (9, Some(Duration::from_secs(3))));
    assert!(n.four_octet_as && n.route_refresh);
}

#[test]
fn test_opensent_bgp_open_msg_err_bad_peer_as() {
    let mut f = at(State::OpenSent);
    f.feed(&peer_open(65003, 90));
    assert_down_with(&mut f, code::OPEN_MESSAGE, code::open::BAD_PEER_AS);
}

#[test]
fn test_opensent_bgp_open_msg_err_unacceptable_hold_time() {
    let mut f = at(State::OpenSent);
    f.feed(&peer_open(65002, 2));
    assert_down_with(&mut f, code::OPEN_MESSAGE, code::open::UNACCEPTABLE_HOLD_TIME);
}

#[test]
fn test_opensent_bgp_header_err() {
    let mut f = at(State::OpenSent);
    let mut bad = msg(&Message::Keepalive);
    bad[0] = 0;
    f.feed(&bad);
    assert_down_with(&mut f, code::MESSAGE_HEADER, code::header::CONNECTION_NOT_SYNCHRONIZED);
}

#[test]
fn test_opensent_hold_timer_expires() {
    let mut f = at(State::OpenSent);
    f.advance(Duration::from_secs(240));
    assert_down_with(&mut f, code::HOLD_TIMER_EXPIRED, 0);
}

#[test]
fn test_opensent_tcp_connection_fails() {
    let mut f = at(State::OpenSent);
    f.s.handle_connection_failed(f.now);
    assert_eq!(f.s.state(), State::Active);
    assert_eq!(f.s.poll_timeout(), Some(f.now + cfg().connect_retry));
}

#[test]
fn test_opensent_keepalive_msg_is_an_fsm_error() {
    let mut f = at(State::OpenSent);
    f.feed(&msg(&Message::Keepalive));
    assert_down_with(&mut f, code::FSM, code::fsm::UNEXPECTED_IN_OPEN_SENT);
}

#[test]
fn test_opensent_update_msg_is_an_fsm_error() {
    let mut f = at(State::OpenSent);
    f.feed(&msg(&Message::Update(Update::default())));
    assert_down_with(&mut f, code::FSM, code::fsm::UNEXPECTED_IN_OPEN_SENT);
}

#[test]
fn test_opensent_notif_msg() {
    let mut f = at(State::OpenSent);
    let n = Notification::new(code::OPEN_MESSAGE, code::open::BAD_PEER_AS, [0xfd, 0xe9]);
    f.feed(&msg(&Message::Notification(n.clone())));
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.sent().is_empty(), "no NOTIFICATION in reply to one");
    assert!(f.events().contains(&SessionEvent::Down(DownReason::NotificationReceived(n))));
    assert_eq!(f.s.stats().last_error, Some(LastNotification { code: 2, subcode: 2, sent: false }));
}

#[test]
fn test_opensent_manual_stop() {
    let mut f = at(State::OpenSent);
    f.s.handle_manual_stop(f.now, None);
    assert_down_with(&mut f, code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN);
}

// ----- OpenConfirm -----

#[test]
fn test_openconfirm_keepalive_msg() {
    let mut f = at(State::OpenConfirm);
    f.feed(&msg(&Message::Keepalive));
    assert_eq!(f.s.state(), State::Established);
    let ev = f.events();
    assert!(ev.iter().any(|e| matches!(e, SessionEvent::Established(n) if n.peer_as == 65002)), "{ev:?}");
    assert_eq!(f.s.established_at(), Some(f.now));
}

#[test]
fn test_openconfirm_keepalive_timer_expires() {
    let mut f = at(State::OpenConfirm);
    f.advance(Duration::from_secs(3));
    assert_eq!(f.sent(), vec![Message::Keepalive]);
    assert_eq!(f.s.state(), State::OpenConfirm);
}

#[test]
fn test_openconfirm_hold_timer_expires() {
    let mut f = at(State::OpenConfirm);
    f.advance(Duration::from_secs(9));
    let sent = f.sent();
    assert!(sent.contains(&Message::Notification(Notification::new(code::HOLD_TIMER_EXPIRED, 0, []))), "{sent:?}");
    assert_eq!(f.s.state(), State::Idle);
}

#[test]
fn test_openconfirm_update_msg_is_an_fsm_error() {
    let mut f = at(State::OpenConfirm);
    f.feed(&msg(&Message::Update(Update::default())));
    assert_down_with(&mut f, code::FSM, code::fsm::UNEXPECTED_IN_OPEN_CONFIRM);
}

#[test]
fn test_openconfirm_tcp_connection_fails() {
    let mut f = at(State::OpenConfirm);
    f.s.handle_connection_failed(f.now);
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.s.negotiated().is_none(), "negotiated state exists only while OPENs hold");
}

#[test]
fn test_openconfirm_notif_msg() {
    let mut f = at(State::OpenConfirm);
    f.feed(&msg(&Message::Notification(Notification::new(code::CEASE, 2, []))));
    assert_eq!(f.s.state(), State::Idle);
}

#[test]
fn test_openconfirm_manual_stop() {
    let mut f = at(State::OpenConfirm);
    f.s.handle_manual_stop(f.now, None);
    assert_down_with(&mut f, code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN);
}

// ----- Established -----

#[test]
fn test_established_update_msg() {
    let mut f = at(State::Established);
    let u = Update { withdrawn: vec![bgpd_proto::Nlri::new("10.0.0.0/8".parse().unwrap())], ..Update::default() };
    f.advance(Duration::from_secs(8));
    f.feed(&msg(&Message::Update(u.clone())));
    let ev = f.events();
    assert!(ev.contains(&SessionEvent::Update { update: u, issues: vec![] }), "{ev:?}");
    // The hold timer was restarted: 8 more seconds keep the session up.
    f.advance(Duration::from_secs(8));
    assert_eq!(f.s.state(), State::Established);
}

#[test]
fn test_established_update_msg_err() {
    let mut f = at(State::Established);
    // An UPDATE whose Total Attribute Length overruns the message.
    let mut m = msg(&Message::Update(Update::default()));
    m[22] = 9;
    f.feed(&m);
    assert_down_with(&mut f, code::UPDATE_MESSAGE, code::update::MALFORMED_ATTRIBUTE_LIST);
    assert_eq!(f.s.stats().flaps, 1);
}

#[test]
fn test_established_keepalive_msg_restarts_hold_timer() {
    let mut f = at(State::Established);
    for _ in 0..5 {
        f.now += Duration::from_secs(8);
        f.feed(&msg(&Message::Keepalive));
        f.s.handle_timeout(f.now);
    }
    assert_eq!(f.s.state(), State::Established);
}

#[test]
fn test_established_keepalive_timer_expires() {
    let mut f = at(State::Established);
    f.feed(&msg(&Message::Keepalive));
    f.advance(Duration::from_secs(3));
    assert_eq!(f.sent(), vec![Message::Keepalive]);
}

#[test]
fn test_established_hold_timer_expires() {
    let mut f = at(State::Established);
    f.advance(Duration::from_secs(9));
    assert_down_with(&mut f, code::HOLD_TIMER_EXPIRED, 0);
}

#[test]
fn test_established_bgp_open_is_an_fsm_error() {
    let mut f = at(State::Established);
    f.feed(&peer_open(65002, 90));
    assert_down_with(&mut f, code::FSM, code::fsm::UNEXPECTED_IN_ESTABLISHED);
}

#[test]
fn test_established_notif_msg() {
    let mut f = at(State::Established);
    let n = Notification::cease_with_message(code::cease::ADMINISTRATIVE_SHUTDOWN, "maintenance");
    f.feed(&msg(&Message::Notification(n.clone())));
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.events().contains(&SessionEvent::Down(DownReason::NotificationReceived(n))));
    assert_eq!(f.s.stats().flaps, 1);
}

#[test]
fn test_established_tcp_connection_fails() {
    let mut f = at(State::Established);
    f.s.handle_connection_failed(f.now);
    assert_eq!(f.s.state(), State::Idle);
    assert!(f.events().contains(&SessionEvent::Down(DownReason::ConnectionFailed)));
}

#[test]
fn test_established_manual_stop_with_shutdown_communication() {
    let mut f = at(State::Established);
    f.s.handle_manual_stop(f.now, Some("node drained"));
    let n = f.notification_sent().unwrap();
    assert_eq!(n.shutdown_message(), Some("node drained"));
    assert_eq!(f.s.state(), State::Idle);
    assert_eq!(f.s.poll_timeout(), None);
}

#[test]
fn test_established_route_refresh() {
    let mut f = at(State::Established);
    let r = RouteRefresh::request(Family::IPV4_UNICAST);
    f.feed(&msg(&Message::RouteRefresh(r.clone())));
    assert!(f.events().contains(&SessionEvent::RouteRefresh(r)));
}

#[test]
fn test_established_bytes_in_pieces() {
    let mut f = at(State::Established);
    let m = msg(&Message::Update(Update::default()));
    for b in &m {
        f.feed(std::slice::from_ref(b));
    }
    assert!(f.events().iter().any(|e| matches!(e, SessionEvent::Update { .. })));
}

// ----- across states -----

#[test]
fn idle_hold_backs_off_exponentially_for_an_oscillating_peer() {
    // A peer that accepts the connection and then fails it, again and again.
    let mut f = Fixture::new(cfg());
    f.s.handle_manual_start(f.now);
    let mut delays = Vec::new();
    for _ in 0..6 {
        f.s.handle_connected(f.now);
        assert_eq!(f.s.state(), State::OpenSent);
        f.feed(&peer_open(65002, 90));
        f.s.handle_connection_failed(f.now);
        assert_eq!(f.s.state(), State::Idle);
        let wake = f.s.poll_timeout().unwrap();
        delays.push(wake - f.now);
        f.now = wake;
        f.s.handle_timeout(f.now);
        assert_eq!(f.s.state(), State::Connect);
    }
    let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 32]);
    let _ = f.t0;
}

#[test]
fn send_is_refused_before_established() {
    let mut f = at(State::OpenConfirm);
    assert!(f.s.send(&Message::Update(Update::default())).is_err());
    let mut f = at(State::Established);
    f.s.send(&Message::Update(Update::default())).unwrap();
    assert_eq!(f.sent(), vec![Message::Update(Update::default())]);
}

// ----- collisions (RFC 4271 §6.8) -----

#[test]
fn test_openconfirm_open_collision_dump() {
    let mut f = at(State::OpenConfirm);
    f.s.handle_collision_dump(f.now);
    assert_down_with(&mut f, code::CEASE, code::cease::CONNECTION_COLLISION_RESOLUTION);
    assert_eq!(f.s.poll_timeout(), None, "the winning connection carries on elsewhere");
}

#[test]
fn test_opensent_open_collision_dump() {
    let mut f = at(State::OpenSent);
    f.s.handle_collision_dump(f.now);
    assert_down_with(&mut f, code::CEASE, code::cease::CONNECTION_COLLISION_RESOLUTION);
}

#[test]
fn test_established_open_collision_dump_is_ignored() {
    let mut f = at(State::Established);
    f.s.handle_collision_dump(f.now);
    assert_eq!(f.s.state(), State::Established);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    use bgpd_proto::session::{resolve_collision, CollisionWinner};
    let (lo, hi) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(resolve_collision(lo, hi), CollisionWinner::Incoming);
    assert_eq!(resolve_collision(hi, lo), CollisionWinner::Outgoing);
    // Both sides agree on the same TCP connection: lo's incoming is hi's outgoing.
}

// ----- graceful restart stops (RFC 4724, RFC 8538) -----

/// A session with graceful restart (N bit as `n_bit`), Established with a
/// peer whose graceful restart capability has the N bit as `peer_n_bit`.
fn established_gr(n_bit: bool, peer_n_bit: bool) -> Fixture {
    use bgpd_proto::session::GracefulRestartConfig;
    use bgpd_proto::wire::{GrFamily, GracefulRestart};
    let mut c = cfg();
    c.graceful_restart = Some(GracefulRestartConfig { notification: n_bit, ..GracefulRestartConfig::new(120) });
    let mut f = Fixture::new(c);
    f.s.handle_manual_start(f.now);
    f.s.handle_connected(f.now);
    let gr = GracefulRestart {
        flags: if peer_n_bit { GracefulRestart::NOTIFICATION } else { 0 },
        time: 120,
        families: vec![GrFamily { family: Family::IPV4_UNICAST, flags: GrFamily::FORWARDING }],
    };
    let caps = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::FourOctetAs(65002),
        Capability::GracefulRestart(gr),
    ];
    f.feed(&msg(&Message::Open(Open::new(65002, 90, Ipv4Addr::new(10, 0, 0, 2), caps))));
    f.feed(&msg(&Message::Keepalive));
    assert_eq!(f.s.state(), State::Established);
    assert_eq!(f.s.negotiated().map(|n| n.graceful_notification), Some(n_bit && peer_n_bit));
    f.drained()
}

#[test]
fn test_established_restart_stop_closes_without_a_notification() {
    // Without the N bit, a NOTIFICATION would end the peer's graceful restart.
    let mut f = established_gr(true, false);
    f.s.handle_restart_stop(f.now, "bgpd restarting");
    assert_eq!(f.notification_sent(), None);
    assert_eq!(f.s.state(), State::Idle);
    let ev = f.events();
    assert!(ev.contains(&SessionEvent::Disconnect));
    assert!(ev.contains(&SessionEvent::Down(DownReason::Stopped)));
    assert_eq!(f.s.poll_timeout(), None, "no automatic restart");
}

#[test]
fn test_established_restart_stop_with_n_bit_sends_administrative_reset() {
    let mut f = established_gr(true, true);
    f.s.handle_restart_stop(f.now, "bgpd restarting");
    let n = f.notification_sent().expect("a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (code::CEASE, code::cease::ADMINISTRATIVE_RESET));
    assert_eq!(n.shutdown_message(), Some("bgpd restarting"));
    assert!(!n.is_hard_reset(), "RFC 8538: graceful restart stays in force at the peer");
    assert_eq!(f.s.state(), State::Idle);
}

#[test]
fn test_established_manual_stop_with_n_bit_is_a_hard_reset() {
    // RFC 8538 §5.1: Administrative Shutdown goes inside a Hard Reset.
    let mut f = established_gr(true, true);
    f.s.handle_manual_stop(f.now, Some("decommissioned"));
    let n = f.notification_sent().expect("a NOTIFICATION");
    assert!(n.is_hard_reset(), "{n:?}");
    let inner = n.hard_reset_inner().expect("carries the Cease it ends with");
    assert_eq!((inner.code, inner.subcode), (code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN));
    assert_eq!(inner.shutdown_message(), Some("decommissioned"));
    assert!(n.describe().contains("Hard Reset") && n.describe().contains("decommissioned"), "{}", n.describe());
}

#[test]
fn test_established_manual_stop_without_n_bit_is_a_plain_cease() {
    let mut f = established_gr(false, true);
    f.s.handle_manual_stop(f.now, None);
    assert_down_with(&mut f, code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN);
}

#[test]
fn test_established_other_configuration_change_with_n_bit_is_not_a_hard_reset() {
    let mut f = established_gr(true, true);
    f.s.handle_stop(f.now, Notification::new(code::CEASE, code::cease::OTHER_CONFIGURATION_CHANGE, []));
    assert_down_with(&mut f, code::CEASE, code::cease::OTHER_CONFIGURATION_CHANGE);
}

#[test]
fn routes_are_retained_after_a_lost_connection_and_with_the_n_bit_after_a_notification() {
    use bgpd_proto::session::retains_routes;
    let hold = Notification::new(code::HOLD_TIMER_EXPIRED, 0, []);
    let admin = Notification::new(code::CEASE, code::cease::ADMINISTRATIVE_SHUTDOWN, []);
    let hard = Notification::hard_reset(&admin);
    // RFC 4724 §4.2: a lost connection keeps them, a NOTIFICATION does not.
    assert!(retains_routes(&DownReason::ConnectionFailed, false));
    assert!(!retains_routes(&DownReason::NotificationSent(hold.clone()), false));
    assert!(!retains_routes(&DownReason::NotificationReceived(admin.clone()), false));
    // RFC 8538 §4: with the N bit, every NOTIFICATION but a Hard Reset keeps them.
    assert!(retains_routes(&DownReason::NotificationSent(hold), true));
    assert!(retains_routes(&DownReason::NotificationReceived(admin), true));
    assert!(!retains_routes(&DownReason::NotificationReceived(hard.clone()), true));
    assert!(!retains_routes(&DownReason::NotificationSent(hard), true));
}
