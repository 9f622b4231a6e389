//! RFC 5880 §6.8.6: the BFD session state machine, one test per state and
//! event (`test_<state>_<event>`), timer negotiation with Poll/Final, and
//! two sessions talking to each other over an in-memory link on a virtual
//! clock (the detection time of a silent remote, recovery).

use std::time::{Duration, Instant};

use bgpd_proto::bfd::{BfdConfig, BfdEvent, BfdSession, ControlPacket, Diag, Discard, State};

const MS: Duration = Duration::from_millis(1);

fn cfg() -> BfdConfig {
    BfdConfig::default()
}

/// A packet from the remote (discriminator 77) in `state`, to our discriminator `to`.
fn from_remote(state: State, to: u32) -> ControlPacket {
    ControlPacket {
        diag: Diag::NONE,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discr: 77,
        your_discr: to,
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

struct Fixture {
    s: BfdSession,
    now: Instant,
}

impl Fixture {
    fn new(c: BfdConfig) -> Fixture {
        let now = Instant::now();
        Fixture { s: BfdSession::new(c, 11, 42, now).expect("valid config"), now }
    }
    fn recv(&mut self, p: ControlPacket) -> Result<(), Discard> {
        self.s.handle_packet(self.now, &p)
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }
    fn sent(&mut self) -> Vec<ControlPacket> {
        std::iter::from_fn(|| self.s.poll_transmit(self.now)).collect()
    }
    fn events(&mut self) -> Vec<BfdEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }
    fn to(mut self, state: State) -> Fixture {
        self.sent();
        match state {
            State::Down => {}
            State::Init => self.recv(from_remote(State::Down, 0)).expect("accepted"),
            State::Up => {
                self.recv(from_remote(State::Down, 0)).expect("accepted");
                self.recv(from_remote(State::Up, 11)).expect("accepted");
            }
            State::AdminDown => self.s.set_admin_down(self.now, true),
        }
        assert_eq!(self.s.state(), state);
        self.sent();
        self.events();
        self
    }
}

fn at(state: State) -> Fixture {
    Fixture::new(cfg()).to(state)
}

fn changed(ev: &[BfdEvent]) -> Vec<(State, State, Diag)> {
    ev.iter()
        .map(|e| match *e {
            BfdEvent::StateChanged { from, to, diag, .. } => (from, to, diag),
        })
        .collect()
}

// ----- Down -----

#[test]
fn test_down_start_sends_at_once_at_the_idle_rate() {
    let mut f = Fixture::new(cfg());
    let p = f.sent();
    assert_eq!(p.len(), 1, "the first packet goes at once");
    assert_eq!((p[0].state, p[0].your_discr, p[0].my_discr), (State::Down, 0, 11));
    assert_eq!(p[0].desired_min_tx, 1_000_000, "RFC 5880 §6.8.3: at least 1 s while not Up");
    assert_eq!(p[0].required_min_rx, 300_000);
    let next = f.s.poll_timeout().expect("a next packet");
    assert!(next >= f.now + 750 * MS && next <= f.now + 1000 * MS, "1 s less up to 25 % jitter");
}

#[test]
fn test_down_remote_down() {
    let mut f = at(State::Down);
    f.recv(from_remote(State::Down, 0)).unwrap();
    assert_eq!(f.s.state(), State::Init);
    assert_eq!(changed(&f.events()), vec![(State::Down, State::Init, Diag::NONE)]);
    let p = f.sent();
    assert_eq!((p[0].state, p[0].your_discr), (State::Init, 77), "the change is told at once, to 77");
}

#[test]
fn test_down_remote_init() {
    let mut f = at(State::Down);
    f.recv(from_remote(State::Init, 11)).unwrap();
    assert_eq!(f.s.state(), State::Up);
}

#[test]
fn test_down_remote_up_is_ignored() {
    let mut f = at(State::Down);
    f.recv(from_remote(State::Up, 11)).unwrap();
    assert_eq!(f.s.state(), State::Down);
}

// ----- Init -----

#[test]
fn test_init_remote_init_or_up() {
    for remote in [State::Init, State::Up] {
        let mut f = at(State::Init);
        f.recv(from_remote(remote, 11)).unwrap();
        assert_eq!(f.s.state(), State::Up, "{remote}");
    }
}

#[test]
fn test_init_remote_down_stays() {
    let mut f = at(State::Init);
    f.recv(from_remote(State::Down, 0)).unwrap();
    assert_eq!(f.s.state(), State::Init);
}

#[test]
fn test_init_detection_time_expires() {
    let mut f = at(State::Init);
    // Not Up: the remote's 1 s... here it sends 300 ms x 3: 900 ms.
    f.advance(899 * MS);
    assert_eq!(f.s.state(), State::Init);
    f.advance(MS);
    assert_eq!(f.s.state(), State::Down);
    assert_eq!(changed(&f.events()), vec![(State::Init, State::Down, Diag::CONTROL_DETECTION_TIME_EXPIRED)]);
}

// ----- Up -----

#[test]
fn test_up_remote_down() {
    let mut f = at(State::Up);
    f.recv(from_remote(State::Down, 11)).unwrap();
    assert_eq!(f.s.state(), State::Down);
    let ev = f.events();
    assert_eq!(changed(&ev), vec![(State::Up, State::Down, Diag::NEIGHBOR_SIGNALED_SESSION_DOWN)]);
    assert!(
        matches!(ev[..], [BfdEvent::StateChanged { path_failure: true, .. }]),
        "the remote's session saw the path fail: {ev:?}"
    );
    assert_eq!(f.s.view().stats.flaps, 1);
}

#[test]
fn test_up_remote_new_session_down() {
    // The remote's BFD started over (a new discriminator, Your Discriminator
    // 0, Down): the session goes Down as §6.8.6 says, but its packets arrive.
    let mut f = at(State::Up);
    let renewed = ControlPacket { my_discr: 78, ..from_remote(State::Down, 0) };
    f.recv(renewed).unwrap();
    assert_eq!(f.s.state(), State::Down);
    let ev = f.events();
    assert!(
        matches!(ev[..], [BfdEvent::StateChanged { to: State::Down, path_failure: false, .. }]),
        "not a failure of the path: {ev:?}"
    );
    // The three-way handshake with the new session brings it back.
    f.recv(ControlPacket { my_discr: 78, ..from_remote(State::Down, 0) }).unwrap();
    assert_eq!(f.s.state(), State::Init);
    f.recv(ControlPacket { my_discr: 78, ..from_remote(State::Up, 11) }).unwrap();
    assert_eq!(f.s.state(), State::Up);
}

#[test]
fn test_up_remote_admin_down_is_not_a_failure() {
    let mut f = at(State::Up);
    f.recv(from_remote(State::AdminDown, 11)).unwrap();
    assert_eq!(f.s.state(), State::Down);
    let ev = f.events();
    assert!(
        matches!(ev[..], [BfdEvent::StateChanged { to: State::Down, path_failure: false, .. }]),
        "RFC 5882 §3.2: a client must not take it as a path failure: {ev:?}"
    );
    f.advance(Duration::from_secs(10));
    assert!(f.events().is_empty(), "no detection while the remote is AdminDown");
}

#[test]
fn test_up_detection_time_expires() {
    let mut f = at(State::Up);
    f.advance(900 * MS);
    assert_eq!(f.s.state(), State::Down);
    assert_eq!(changed(&f.events()), vec![(State::Up, State::Down, Diag::CONTROL_DETECTION_TIME_EXPIRED)]);
    let p = f.sent();
    assert_eq!((p[0].state, p[0].diag, p[0].your_discr), (State::Down, Diag::CONTROL_DETECTION_TIME_EXPIRED, 0));
}

#[test]
fn test_up_packets_reset_the_detection_timer() {
    let mut f = at(State::Up);
    for _ in 0..10 {
        f.advance(800 * MS);
        f.recv(from_remote(State::Up, 11)).unwrap();
    }
    assert_eq!(f.s.state(), State::Up);
}

#[test]
fn test_up_poll_is_answered_by_a_final_at_once() {
    let mut f = at(State::Up);
    f.sent();
    let mut p = from_remote(State::Up, 11);
    p.poll = true;
    f.recv(p).unwrap();
    let out = f.sent();
    assert_eq!(out.len(), 1, "at once, whatever the transmit timer");
    assert!(out[0].final_ && !out[0].poll);
}

#[test]
fn test_up_negotiates_the_faster_rate_with_a_poll_sequence() {
    let mut f = Fixture::new(cfg());
    f.sent();
    f.recv(from_remote(State::Init, 11)).unwrap();
    assert_eq!(f.s.state(), State::Up);
    let p = f.sent();
    // §6.8.3: Up: the configured 300 ms, announced with a Poll.
    assert_eq!((p[0].state, p[0].desired_min_tx, p[0].poll), (State::Up, 300_000, true));
    f.advance(300 * MS);
    assert!(f.sent().iter().all(|p| p.poll), "P until the Final");
    let mut fin = from_remote(State::Up, 11);
    fin.final_ = true;
    f.recv(fin).unwrap();
    f.advance(300 * MS);
    assert!(f.sent().iter().all(|p| !p.poll), "the Final ends the Poll sequence");
    assert_eq!(f.s.view().tx_interval, 300 * MS);
    assert_eq!(f.s.view().detection_time, 900 * MS);
}

#[test]
fn test_up_remote_slower_receive_slows_this_side_down() {
    let mut f = at(State::Up);
    let mut p = from_remote(State::Up, 11);
    p.required_min_rx = 1_000_000;
    f.recv(p).unwrap();
    f.sent();
    assert_eq!(f.s.view().tx_interval, Duration::from_secs(1), "§6.8.7: the larger of the two");
    let next = f.s.poll_timeout().unwrap();
    assert!(next > f.now + 700 * MS, "{:?}", next - f.now);
}

#[test]
fn test_up_remote_asks_for_no_packets() {
    let mut f = at(State::Up);
    let mut p = from_remote(State::Up, 11);
    p.required_min_rx = 0;
    f.recv(p).unwrap();
    f.sent();
    f.advance(800 * MS);
    assert!(f.sent().is_empty(), "§6.8.7: Required Min RX 0: nothing is sent");
}

#[test]
fn test_up_config_change_starts_a_poll_and_slower_tx_waits_for_the_final() {
    let mut f = at(State::Up);
    let mut fin = from_remote(State::Up, 11);
    fin.final_ = true;
    f.recv(fin).unwrap();
    let slower = BfdConfig { desired_min_tx: Duration::from_secs(1), ..cfg() };
    f.s.set_config(f.now, slower).unwrap();
    let p = f.sent();
    assert!(p[0].poll && p[0].desired_min_tx == 1_000_000);
    assert_eq!(f.s.view().tx_interval, 300 * MS, "an increase waits for the Final");
    f.recv(fin).unwrap();
    assert_eq!(f.s.view().tx_interval, Duration::from_secs(1));
}

// ----- AdminDown -----

#[test]
fn test_admindown_discards_and_tells_the_remote() {
    let mut f = at(State::Up);
    f.s.set_admin_down(f.now, true);
    let p = f.sent();
    assert_eq!((p[0].state, p[0].diag), (State::AdminDown, Diag::ADMINISTRATIVELY_DOWN));
    assert_eq!(f.recv(from_remote(State::Up, 11)), Err(Discard::AdminDown));
    f.s.set_admin_down(f.now, false);
    assert_eq!(f.s.state(), State::Down);
}

// ----- demultiplexed wrongly, passive -----

#[test]
fn test_any_state_wrong_discriminator_is_discarded() {
    let mut f = at(State::Up);
    assert_eq!(f.recv(from_remote(State::Up, 12)), Err(Discard::UnknownDiscriminator));
}

#[test]
fn test_down_passive_waits_for_the_remote() {
    let mut f = Fixture::new(BfdConfig { passive: true, ..cfg() });
    assert!(f.sent().is_empty());
    assert_eq!(f.s.poll_timeout(), None);
    f.recv(from_remote(State::Down, 0)).unwrap();
    assert_eq!(f.sent().len(), 1);
}

#[test]
fn invalid_configurations_are_refused() {
    let now = Instant::now();
    assert!(BfdSession::new(BfdConfig { detect_mult: 0, ..cfg() }, 1, 1, now).is_err());
    assert!(BfdSession::new(BfdConfig { required_min_rx: Duration::ZERO, ..cfg() }, 1, 1, now).is_err());
    assert!(BfdSession::new(BfdConfig { desired_min_tx: Duration::from_secs(5000), ..cfg() }, 1, 1, now).is_err());
}

// ----- two sessions over an in-memory link -----

/// Two sessions, packets delivered at once unless the link is cut.
struct Pair {
    a: BfdSession,
    b: BfdSession,
    now: Instant,
    link_up: bool,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let c = BfdConfig { idle_tx: Duration::from_secs(1), ..cfg() };
        Pair {
            a: BfdSession::new(c, 100, 1, now).unwrap(),
            b: BfdSession::new(c, 200, 2, now).unwrap(),
            now,
            link_up: true,
        }
    }

    /// Runs the clock to `until`, moving packets and firing timers.
    fn run(&mut self, until: Instant) {
        loop {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            // Deliver until neither side has anything more to say now.
            loop {
                let mut moved = false;
                while let Some(p) = self.a.poll_transmit(self.now) {
                    moved = true;
                    if self.link_up {
                        let _ = self.b.handle_packet(self.now, &p);
                    }
                }
                while let Some(p) = self.b.poll_transmit(self.now) {
                    moved = true;
                    if self.link_up {
                        let _ = self.a.handle_packet(self.now, &p);
                    }
                }
                if !moved {
                    break;
                }
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => self.now = t.max(self.now),
                _ => {
                    self.now = until;
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    return;
                }
            }
        }
    }

    fn for_(&mut self, d: Duration) {
        let until = self.now + d;
        self.run(until);
    }
}

#[test]
fn two_sessions_come_up_negotiate_and_detect_a_silent_path_within_the_detection_time() {
    let mut p = Pair::new();
    p.for_(10 * MS);
    assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up), "up within a round trip");
    p.for_(Duration::from_secs(2));
    let (va, vb) = (p.a.view(), p.b.view());
    assert_eq!((va.tx_interval, va.detection_time), (300 * MS, 900 * MS));
    assert_eq!((vb.remote_discr, va.remote_discr), (100, 200));
    // Sent at 300 ms less jitter: between 3.3 and 4.5 packets a second.
    let sent = va.stats.sent;
    p.for_(Duration::from_secs(10));
    let rate = (p.a.view().stats.sent - sent) as f64 / 10.0;
    assert!((3.3..=4.5).contains(&rate), "{rate} packets/s");
    // The path goes silent: both see it within the detection time.
    p.link_up = false;
    let cut = p.now;
    while p.a.state() == State::Up {
        let next = p.a.poll_timeout().unwrap();
        p.run(next);
    }
    let took = p.now - cut;
    assert!(took <= 900 * MS && took > 500 * MS, "detected after {took:?}");
    assert_eq!(p.a.view().diag, Diag::CONTROL_DETECTION_TIME_EXPIRED);
    // Back: up again at the idle rate's pace (at most 1 s).
    p.link_up = true;
    p.for_(Duration::from_secs(2));
    assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up));
    assert_eq!(p.a.view().stats.flaps, 1);
}

/// One side slows down (a Poll sequence to 1 s x 20: the remote's detection
/// time for it becomes 20 s), snapshots, goes away for 5 s (its driver
/// restarts) and resumes: the other side never leaves Up, and the resumed
/// session is back at 300 ms x 3 after its own Poll sequence.
#[test]
fn a_session_resumed_after_a_restart_shorter_than_the_detection_time_never_goes_down() {
    let mut p = Pair::new();
    p.for_(Duration::from_secs(3));
    assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up));
    let slow = BfdConfig { desired_min_tx: Duration::from_secs(1), detect_mult: 20, ..*p.a.config() };
    p.a.set_config(p.now, slow).unwrap();
    p.for_(10 * MS);
    assert!(!p.a.poll_pending(), "the Final came back");
    let r = p.a.snapshot().expect("Up: a snapshot");
    assert_eq!((r.local_discr, r.remote_discr, r.desired_min_tx, r.detect_mult), (100, 200, 1_000_000, 20));
    assert_eq!(r.remote_detection_time(), Duration::from_secs(20));
    while p.b.poll_event().is_some() {}

    // The driver is gone for 5 s: nothing is sent or received on a's side.
    let gone = p.now + Duration::from_secs(5);
    while p.now < gone {
        while p.b.poll_transmit(p.now).is_some() {}
        p.b.handle_timeout(p.now);
        p.now = p.b.poll_timeout().map_or(gone, |t| t.min(gone)).max(p.now + MS);
    }
    assert_eq!(p.b.state(), State::Up, "b waits up to the 20 s detection time");

    let cfg = BfdConfig { idle_tx: Duration::from_secs(1), ..cfg() };
    p.a = BfdSession::resume(cfg, &r, 9, p.now).unwrap();
    assert_eq!(p.a.state(), State::Up);
    let first = p.a.poll_transmit(p.now).expect("the first packet goes at once");
    assert!(first.poll && first.state == State::Up && first.your_discr == 200 && first.my_discr == 100, "{first:?}");
    p.b.handle_packet(p.now, &first).unwrap();
    p.for_(Duration::from_secs(3));
    assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up));
    assert!(p.b.poll_event().is_none(), "b saw no state change");
    assert!(!p.a.poll_pending());
    let (va, vb) = (p.a.view(), p.b.view());
    assert_eq!((va.tx_interval, vb.detection_time), (300 * MS, 900 * MS), "back to 300 ms x 3");
}

#[test]
fn a_session_resumed_too_late_goes_down_and_comes_back() {
    let mut p = Pair::new();
    p.for_(Duration::from_secs(3));
    let r = p.a.snapshot().unwrap();
    // Gone 2 s at 300 ms x 3: b declared it down long before.
    let gone = p.now + Duration::from_secs(2);
    while p.now < gone {
        while p.b.poll_transmit(p.now).is_some() {}
        p.b.handle_timeout(p.now);
        p.now = p.b.poll_timeout().map_or(gone, |t| t.min(gone)).max(p.now + MS);
    }
    assert_eq!(p.b.state(), State::Down);
    p.a = BfdSession::resume(*p.a.config(), &r, 9, p.now).unwrap();
    p.for_(Duration::from_secs(4));
    assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up), "a three-way handshake again");
    assert_eq!(p.a.view().stats.flaps, 1, "a went down once: b told it so");
}
