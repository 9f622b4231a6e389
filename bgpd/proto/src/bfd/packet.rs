//! BFD control packets (RFC 5880 §4.1): the 24-octet mandatory section. The
//! checks of RFC 5880 §6.8.6 that need no session are made here, so a packet
//! that decodes is one a session may act on; anything else is an error naming
//! why it is discarded (counted by the caller, never a panic).

use std::fmt;

use crate::types::code_point;

/// The length of the mandatory section (RFC 5880 §4.1).
pub const HEADER_LEN: usize = 24;

/// The BFD protocol version (RFC 5880 §4.1).
pub const VERSION: u8 = 1;

code_point! {
    /// Diagnostic code (RFC 5880 §4.1): why the local system last changed
    /// state.
    Diag(u8) {
        /// No diagnostic.
        NONE = 0 => "No Diagnostic",
        /// The detection time expired.
        CONTROL_DETECTION_TIME_EXPIRED = 1 => "Control Detection Time Expired",
        /// The echo function failed.
        ECHO_FUNCTION_FAILED = 2 => "Echo Function Failed",
        /// The neighbor said its session went down.
        NEIGHBOR_SIGNALED_SESSION_DOWN = 3 => "Neighbor Signaled Session Down",
        /// Forwarding plane reset.
        FORWARDING_PLANE_RESET = 4 => "Forwarding Plane Reset",
        /// Path down.
        PATH_DOWN = 5 => "Path Down",
        /// Concatenated path down.
        CONCATENATED_PATH_DOWN = 6 => "Concatenated Path Down",
        /// Administratively down.
        ADMINISTRATIVELY_DOWN = 7 => "Administratively Down",
        /// Reverse concatenated path down.
        REVERSE_CONCATENATED_PATH_DOWN = 8 => "Reverse Concatenated Path Down",
    }
}

/// Session state (RFC 5880 §4.1, §6.2), named as the RFC names it, also when
/// serialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// Held down administratively.
    AdminDown,
    /// Down (or just created).
    Down,
    /// Talking with the remote, which is Down.
    Init,
    /// Up: both sides see each other.
    Up,
}

impl State {
    /// The `Sta` field's value (RFC 5880 §4.1): AdminDown 0, Down 1, Init 2, Up 3.
    pub fn code(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    fn from_code(c: u8) -> State {
        match c & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// A BFD control packet (its mandatory section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    /// Why the sender last changed state.
    pub diag: Diag,
    /// The sender's state.
    pub state: State,
    /// Poll (P): the sender asks for a Final (a parameter change, §6.5).
    pub poll: bool,
    /// Final (F): the answer to a Poll.
    pub final_: bool,
    /// Control Plane Independent (C): BFD survives the sender's control plane.
    pub control_plane_independent: bool,
    /// Demand (D): the sender wants demand mode (not supported here: only asynchronous mode).
    pub demand: bool,
    /// Detect Mult: the sender's detection time multiplier.
    pub detect_mult: u8,
    /// My Discriminator: the sender's, non-zero.
    pub my_discr: u32,
    /// Your Discriminator: the receiver's, or 0 when not known yet.
    pub your_discr: u32,
    /// Desired Min TX Interval, microseconds.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, microseconds (0: send nothing).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, microseconds (0: no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Discard {
    /// Shorter than the mandatory section, or its Length field says less
    /// than 24 or more than was received.
    #[error("bad length")]
    Length,
    /// The version is not 1.
    #[error("version is not 1")]
    Version,
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    ZeroMultiplier,
    /// The Multipoint (M) bit is set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    /// Your Discriminator is zero while the sender is neither Down nor AdminDown.
    #[error("your discriminator is zero while the sender is not down")]
    ZeroYourDiscriminator,
    /// The Authentication Present (A) bit is set: bgpd does not authenticate.
    #[error("authentication present, none configured")]
    Authentication,
    /// Your Discriminator names no session.
    #[error("your discriminator names no session")]
    UnknownDiscriminator,
    /// No session for the sender's address (a packet with Your Discriminator 0).
    #[error("no session for the sender")]
    UnknownPeer,
    /// Single-hop: the packet did not arrive with TTL 255 (RFC 5881 §5).
    #[error("TTL is not 255")]
    Ttl,
    /// The session is AdminDown.
    #[error("session is administratively down")]
    AdminDown,
}

impl ControlPacket {
    /// Decodes and checks a received packet (RFC 5880 §6.8.6, the checks
    /// that need no session).
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, Discard> {
        let Some(h) = buf.get(..HEADER_LEN) else { return Err(Discard::Length) };
        if h[0] >> 5 != VERSION {
            return Err(Discard::Version);
        }
        let flags = h[1];
        let auth = flags & 0x04 != 0;
        let length = usize::from(h[3]);
        // RFC 5880 §6.8.6: at least 24, at least 26 with authentication,
        // and no more than the payload.
        if length < HEADER_LEN || (auth && length < HEADER_LEN + 2) || length > buf.len() {
            return Err(Discard::Length);
        }
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let p = ControlPacket {
            diag: Diag(h[0] & 0x1f),
            state: State::from_code(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            control_plane_independent: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: h[2],
            my_discr: word(4),
            your_discr: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if p.detect_mult == 0 {
            return Err(Discard::ZeroMultiplier);
        }
        if flags & 0x01 != 0 {
            return Err(Discard::Multipoint);
        }
        if p.my_discr == 0 {
            return Err(Discard::ZeroMyDiscriminator);
        }
        if p.your_discr == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discard::ZeroYourDiscriminator);
        }
        if auth {
            return Err(Discard::Authentication);
        }
        Ok(p)
    }

    /// The packet's 24 octets (no authentication section).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = (VERSION << 5) | (self.diag.0 & 0x1f);
        b[1] = (self.state.code() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.control_plane_independent) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = HEADER_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diag::CONTROL_DETECTION_TIME_EXPIRED,
            state: State::Up,
            poll: true,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 0x0a0b_0c0d,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn encodes_the_mandatory_section_as_rfc_5880_draws_it() {
        // Derived by hand from RFC 5880 §4.1: version 1, diag 1; state Up (3)
        // with P; mult 3; length 24; the discriminators; 300 ms; 300 ms; 0.
        let want: [u8; 24] = [
            0x21, 0xe0, 0x03, 0x18, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x04,
            0x93, 0xe0, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(sample().encode(), want);
        assert_eq!(ControlPacket::decode(&want), Ok(sample()));
    }

    #[test]
    fn every_check_of_6_8_6_discards() {
        let good = sample().encode();
        let with = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = good;
            f(&mut b);
            ControlPacket::decode(&b)
        };
        assert_eq!(ControlPacket::decode(&good[..23]), Err(Discard::Length));
        assert_eq!(with(&|b| b[0] = 0x41), Err(Discard::Version));
        assert_eq!(with(&|b| b[3] = 23), Err(Discard::Length));
        assert_eq!(with(&|b| b[3] = 25), Err(Discard::Length), "longer than received");
        assert_eq!(with(&|b| b[2] = 0), Err(Discard::ZeroMultiplier));
        assert_eq!(with(&|b| b[1] |= 0x01), Err(Discard::Multipoint));
        assert_eq!(with(&|b| b[4..8].copy_from_slice(&[0; 4])), Err(Discard::ZeroMyDiscriminator));
        assert_eq!(with(&|b| b[8..12].copy_from_slice(&[0; 4])), Err(Discard::ZeroYourDiscriminator));
        // Down may not know our discriminator yet.
        let down = with(&|b| {
            b[1] = 1 << 6;
            b[8..12].copy_from_slice(&[0; 4]);
        });
        assert_eq!(down.map(|p| (p.state, p.your_discr)), Ok((State::Down, 0)));
        assert_eq!(with(&|b| b[1] |= 0x04), Err(Discard::Length), "A bit needs 26 octets");
        let mut long = [0u8; 26];
        long[..24].copy_from_slice(&good);
        long[1] |= 0x04;
        long[3] = 26;
        assert_eq!(ControlPacket::decode(&long), Err(Discard::Authentication));
        // A longer datagram than the Length field is fine (the rest is ignored).
        let mut padded = [0u8; 30];
        padded[..24].copy_from_slice(&good);
        assert_eq!(ControlPacket::decode(&padded), Ok(sample()));
    }

    #[test]
    fn unknown_diagnostics_round_trip() {
        let p = ControlPacket { diag: Diag(31), ..sample() };
        assert_eq!(ControlPacket::decode(&p.encode()).map(|p| p.diag), Ok(Diag(31)));
        assert_eq!(Diag(31).to_string(), "Diag(31)");
        assert_eq!(Diag::ADMINISTRATIVELY_DOWN.to_string(), "Administratively Down");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..64 {
            for _ in 0..64 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if let Ok(p) = ControlPacket::decode(&b) {
                    assert_eq!(ControlPacket::decode(&p.encode()), Ok(p), "round trip of a decoded packet");
                }
            }
        }
    }
}
