//! Two speakers over an in-memory link on a virtual clock: establishment,
//! keepalive cadence, hold expiry when one side goes silent, reconnection.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpd_proto::session::{DownReason, Session, SessionConfig, SessionEvent, State};
use bgpd_proto::wire::{Message, NextHop};
use bgpd_proto::Family;

struct Net {
    a: Session,
    b: Session,
    now: Instant,
    /// The link carries bytes (false: a partition, everything is lost).
    up: bool,
    /// Set while a transport connection exists between the two.
    connected: bool,
    /// Bytes each side sent, for cadence checks: (time, from_a, message).
    log: Vec<(Duration, bool, Message)>,
    t0: Instant,
    events_a: Vec<SessionEvent>,
    events_b: Vec<SessionEvent>,
}

impl Net {
    fn new(mut ca: SessionConfig, mut cb: SessionConfig) -> Net {
        ca.hold_time = 9;
        cb.hold_time = 30;
        cb.passive = true;
        let t0 = Instant::now();
        let mut n = Net {
            a: Session::new(ca).unwrap(),
            b: Session::new(cb).unwrap(),
            now: t0,
            up: true,
            connected: false,
            log: Vec::new(),
            t0,
            events_a: Vec::new(),
            events_b: Vec::new(),
        };
        n.a.handle_manual_start(t0);
        n.b.handle_manual_start(t0);
        n
    }

    /// Delivers bytes and connection events until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(e) = self.a.poll_event() {
                moved = true;
                match e {
                    SessionEvent::Connect if self.up && !self.connected => {
                        self.connected = true;
                        self.a.handle_connected(self.now);
                        self.b.handle_connected(self.now);
                    }
                    SessionEvent::Disconnect if self.connected => {
                        self.connected = false;
                        self.b.handle_connection_failed(self.now);
                    }
                    _ => {}
                }
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                moved = true;
                if e == SessionEvent::Disconnect && self.connected {
                    self.connected = false;
                    self.a.handle_connection_failed(self.now);
                }
                self.events_b.push(e);
            }
            while let Some(bytes) = self.a.poll_transmit() {
                moved = true;
                self.record(&bytes, true);
                if self.up && self.connected {
                    self.b.handle_bytes(self.now, &bytes);
                }
            }
            while let Some(bytes) = self.b.poll_transmit() {
                moved = true;
                self.record(&bytes, false);
                if self.up && self.connected {
                    self.a.handle_bytes(self.now, &bytes);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn record(&mut self, bytes: &[u8], from_a: bool) {
        let ctx = bgpd_proto::WireContext::new(true).with_extended_message(true);
        if let Ok(Some(f)) = Message::decode(bytes, &ctx) {
            self.log.push((self.now - self.t0, from_a, f.message));
        }
    }

    /// Runs the virtual clock until `until` (from the start), firing timers in order.
    fn run_until(&mut self, until: Duration) {
        self.settle();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= self.t0 + until => {
                    self.now = t.max(self.now);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = self.t0 + until;
    }
}

fn configs() -> (SessionConfig, SessionConfig) {
    (
        SessionConfig::new(65001, 65002, Ipv4Addr::new(10, 0, 0, 1)),
        SessionConfig::new(65002, 65001, Ipv4Addr::new(10, 0, 0, 2)),
    )
}

#[test]
fn two_speakers_establish_and_keep_the_session_up() {
    let (ca, cb) = configs();
    let mut net = Net::new(ca, cb);
    net.run_until(Duration::from_secs(1));
    assert_eq!((net.a.state(), net.b.state()), (State::Established, State::Established));
    // Hold time negotiates to the smaller (9 s), keepalives every 3 s.
    assert_eq!(net.a.negotiated().unwrap().hold_time, 9);
    net.run_until(Duration::from_secs(600));
    assert_eq!((net.a.state(), net.b.state()), (State::Established, State::Established));
    for from_a in [true, false] {
        let times: Vec<Duration> = net
            .log
            .iter()
            .filter(|(t, a, m)| *a == from_a && *m == Message::Keepalive && *t > Duration::from_secs(1))
            .map(|(t, _, _)| *t)
            .collect();
        assert!(times.len() >= 190, "about 200 keepalives in 10 minutes, got {}", times.len());
        assert!(times.windows(2).all(|w| w[1] - w[0] == Duration::from_secs(3)), "steady 3 s cadence");
    }
    assert_eq!(net.a.stats().flaps, 0);
}

#[test]
fn silence_expires_the_hold_timer_and_the_session_comes_back() {
    let (ca, cb) = configs();
    let mut net = Net::new(ca, cb);
    net.run_until(Duration::from_secs(10));
    assert_eq!(net.a.state(), State::Established);
    // Partition: nothing crosses; A's hold timer (9 s) expires.
    net.up = false;
    net.run_until(Duration::from_secs(20));
    assert!(net.events_a.iter().any(|e| matches!(
        e,
        SessionEvent::Down(DownReason::NotificationSent(n)) if n.code == bgpd_proto::error::code::HOLD_TIMER_EXPIRED
    )));
    assert_eq!(net.a.stats().flaps, 1);
    // Heal: A restarts after its IdleHold and re-establishes.
    net.up = true;
    net.connected = false;
    net.b.handle_connection_failed(net.now);
    net.run_until(Duration::from_secs(40));
    assert_eq!((net.a.state(), net.b.state()), (State::Established, State::Established));
}

#[test]
fn routes_cross_the_link_in_packed_updates() {
    let (ca, cb) = configs();
    let mut net = Net::new(ca, cb);
    net.run_until(Duration::from_secs(1));
    let prefixes: Vec<bgpd_proto::Nlri<ipnet::Ipv4Net>> = (0..2000u32)
        .map(|i| bgpd_proto::Nlri::new(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0A00_0000 + (i << 8)), 24).unwrap()))
        .collect();
    let nh = Ipv4Addr::new(10, 0, 0, 1);
    let attrs = vec![
        bgpd_proto::wire::PathAttribute::new(bgpd_proto::wire::Attr::Origin(bgpd_proto::wire::Origin::Igp)),
        bgpd_proto::wire::PathAttribute::new(bgpd_proto::wire::Attr::AsPath(bgpd_proto::wire::AsPath::sequence([
            65001,
        ]))),
        bgpd_proto::wire::PathAttribute::new(bgpd_proto::wire::Attr::NextHop(nh)),
    ];
    let tx = net.a.negotiated().unwrap().tx.clone();
    for m in bgpd_proto::wire::pack_announcements(
        Family::IPV4_UNICAST,
        &attrs,
        &NextHop::V4(nh),
        bgpd_proto::wire::Announcement::V4(&prefixes),
        &tx,
    )
    .unwrap()
    {
        net.a.send_encoded(m.freeze(), bgpd_proto::MessageType::UPDATE).unwrap();
    }
    net.settle();
    let mut got = 0;
    for e in &net.events_b {
        if let SessionEvent::Update { update, issues } = e {
            assert!(issues.is_empty());
            got += update.nlri.len();
        }
    }
    assert_eq!(got, 2000);
}
