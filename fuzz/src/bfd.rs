//! BFD (RFC 5880): control packet decoding and the session state machine.
//!
//! The input picks a configuration, then events: raw datagrams, packets
//! built from fields the input picks (so that the session gets past Down),
//! time passing, AdminDown and back, new intervals. Checked:
//! - a packet that decodes re-encodes to a packet that decodes to itself;
//! - every packet this side sends passes a receiver's checks (RFC 5880
//!   §6.8.6: non-zero My Discriminator and multiplier, Your Discriminator
//!   once past Down, no authentication) and never has Poll and Final together
//!   (§6.5);
//! - `StateChanged` events form a chain that ends in `state()`;
//! - Up and Init are reached only on a packet from the remote;
//! - once everything due at `now` is sent, no deadline is left at or before
//!   `now` (a driver never spins).

use std::time::{Duration, Instant};

use bgpd_proto::bfd::{BfdConfig, BfdEvent, BfdSession, ControlPacket, Diag, State};

use crate::Input;

const LOCAL_DISCR: u32 = 0x1111;
const MAX_EVENTS: usize = 256;

fn interval(inp: &mut Input) -> Duration {
    Duration::from_millis([10, 50, 300, 1000, 2500][inp.below(5)])
}

fn config(inp: &mut Input) -> BfdConfig {
    BfdConfig {
        desired_min_tx: interval(inp),
        required_min_rx: interval(inp),
        detect_mult: 1 + inp.below(5) as u8,
        idle_tx: Duration::from_secs(1 + inp.below(2) as u64),
        passive: inp.bool(),
    }
}

fn state(b: u8) -> State {
    [State::AdminDown, State::Down, State::Init, State::Up][usize::from(b & 3)]
}

/// Decodes `bytes`; what decodes must round-trip.
fn decode(bytes: &[u8]) -> Option<ControlPacket> {
    let p = ControlPacket::decode(bytes).ok()?;
    let again = ControlPacket::decode(&p.encode()).expect("a re-encoded packet decodes");
    assert_eq!(again, p, "decode, encode, decode: the same packet");
    Some(p)
}

/// A packet from the remote, from fields the input picks.
fn remote_packet(inp: &mut Input) -> Vec<u8> {
    let flags = inp.byte();
    let p = ControlPacket {
        diag: Diag(inp.byte() & 0x1f),
        state: state(flags),
        poll: flags & 0x20 != 0,
        final_: flags & 0x10 != 0,
        control_plane_independent: flags & 0x08 != 0,
        demand: flags & 0x04 != 0,
        detect_mult: 1 + inp.below(4) as u8,
        my_discr: if inp.below(8) == 0 { inp.u32() } else { 0x2222 },
        your_discr: match inp.below(4) {
            0 => 0,
            1 => inp.u32(),
            _ => LOCAL_DISCR,
        },
        desired_min_tx: 1000 * u32::from(inp.u16()),
        required_min_rx: 1000 * u32::from(inp.u16()),
        required_min_echo_rx: 0,
    };
    p.encode().to_vec()
}

struct Harness {
    s: BfdSession,
    now: Instant,
    tracked: State,
}

impl Harness {
    fn settle(&mut self, from_remote: bool) {
        while let Some(BfdEvent::StateChanged { from, to, .. }) = self.s.poll_event() {
            assert_eq!(from, self.tracked, "StateChanged from a state the session was not in");
            if matches!(to, State::Init | State::Up) && from != to {
                assert!(from_remote, "{to:?} entered without a packet from the remote");
            }
            self.tracked = to;
        }
        assert_eq!(self.tracked, self.s.state(), "StateChanged events do not end in the current state");
        let mut sent = 0;
        while let Some(p) = self.s.poll_transmit(self.now) {
            sent += 1;
            assert!(sent < 16, "more than 16 packets due at one instant");
            assert!(!(p.poll && p.final_), "RFC 5880 §6.5: Poll and Final together");
            let bytes = p.encode();
            let got = ControlPacket::decode(&bytes)
                .unwrap_or_else(|why| panic!("this side sent a packet a receiver discards ({why}): {p:?}"));
            assert_eq!(got, p, "a sent packet round-trips");
            assert_eq!(p.my_discr, LOCAL_DISCR, "My Discriminator is ours");
        }
        if let Some(t) = self.s.poll_timeout() {
            assert!(t > self.now, "a deadline at or before now once everything due was sent");
        }
    }
}

/// See the module docs.
pub fn bfd(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = config(&mut inp);
    let t0 = Instant::now();
    let Ok(s) = BfdSession::new(cfg, LOCAL_DISCR, u64::from(inp.u16()), t0) else { return };
    let mut h = Harness { s, now: t0, tracked: State::Down };
    h.settle(false);
    for _ in 0..MAX_EVENTS {
        if inp.is_empty() {
            break;
        }
        match inp.below(8) {
            0 => {
                let raw = inp.chunk();
                if let Some(p) = decode(raw) {
                    let _ = h.s.handle_packet(h.now, &p);
                }
                h.settle(true);
            }
            1..=3 => {
                let mut raw = remote_packet(&mut inp);
                if inp.below(8) == 0 {
                    let at = inp.below(raw.len());
                    raw[at] ^= inp.byte();
                }
                if let Some(p) = decode(&raw) {
                    let _ = h.s.handle_packet(h.now, &p);
                }
                h.settle(true);
            }
            4 | 5 => {
                let target = h.now + Duration::from_millis(u64::from(inp.u16() % 5000));
                if inp.bool() {
                    h.now = target;
                    h.s.handle_timeout(h.now);
                    h.settle(false);
                } else {
                    while let Some(t) = h.s.poll_timeout().filter(|t| *t <= target) {
                        h.now = h.now.max(t);
                        h.s.handle_timeout(h.now);
                        h.settle(false);
                    }
                    h.now = target;
                }
            }
            6 => {
                h.s.set_admin_down(h.now, inp.bool());
                h.settle(false);
            }
            _ => {
                let c = config(&mut inp);
                h.s.set_config(h.now, c).expect("a valid configuration");
                h.settle(false);
            }
        }
    }
}
