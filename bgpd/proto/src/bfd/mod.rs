//! Bidirectional Forwarding Detection (RFC 5880), asynchronous mode, sans-IO.
//!
//! A [`BfdSession`] is one session with one remote system: it is fed the
//! control packets the driver demultiplexed to it ([`BfdSession::handle_packet`])
//! and the time ([`BfdSession::handle_timeout`]), and drained of packets to
//! send ([`BfdSession::poll_transmit`]), its next deadline
//! ([`BfdSession::poll_timeout`]) and state changes ([`BfdSession::poll_event`]).
//! The driver owns the sockets (RFC 5881 single-hop, RFC 5883 multihop), the
//! discriminators and the demultiplexing by discriminator or address.
//!
//! A session Up can be carried across a restart of its driver
//! ([`BfdSession::snapshot`] before, [`BfdSession::resume`] after): the
//! remote sees nothing but a gap in the packets, which the driver makes
//! shorter than the remote's detection time by slowing the session down
//! first (a Poll sequence). See `docs/bfd.md`.
//!
//! Not built: echo mode and demand mode (RFC 5880 §6.4, §6.6: optional),
//! authentication (§6.7: optional; a packet with the A bit is discarded).

pub mod packet;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use packet::{ControlPacket, Diag, Discard, State};

/// RFC 5880 §6.8.3: while not Up, Desired Min TX Interval is at least one second.
pub const MIN_IDLE_TX: Duration = Duration::from_secs(1);

/// What a session is configured to do (RFC 5880 §6.8.1's operator-set variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdConfig {
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval: the fastest rate this side accepts.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
    /// The Desired Min TX Interval while not Up (Calico's
    /// `idleSendInterval`), at least [`MIN_IDLE_TX`].
    pub idle_tx: Duration,
    /// Passive role (§6.1): send nothing until the remote has sent.
    pub passive: bool,
}

impl Default for BfdConfig {
    /// 300 ms both ways, multiplier 3, 1 s while not Up, active.
    fn default() -> BfdConfig {
        BfdConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            idle_tx: MIN_IDLE_TX,
            passive: false,
        }
    }
}

/// A configuration that cannot make a valid session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// RFC 5880 §6.8.6: a multiplier of zero is invalid.
    #[error("the detection multiplier is zero")]
    ZeroMultiplier,
    /// An interval is zero, or does not fit the 32-bit microsecond field.
    #[error("an interval is zero or longer than 4294 s")]
    Interval,
}

impl BfdConfig {
    /// Checks what RFC 5880 forbids.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.detect_mult == 0 {
            return Err(ConfigError::ZeroMultiplier);
        }
        for d in [self.desired_min_tx, self.required_min_rx, self.idle_tx] {
            if d.is_zero() || d.as_micros() > u128::from(u32::MAX) {
                return Err(ConfigError::Interval);
            }
        }
        Ok(())
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Something the driver should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdEvent {
    /// The session changed state.
    StateChanged {
        /// The state left.
        from: State,
        /// The state entered.
        to: State,
        /// The local diagnostic (why).
        diag: Diag,
        /// Down because the path failed: the detection time expired, or the
        /// remote's session (the same one) went down. Not when the remote said
        /// AdminDown (RFC 5882 §3.2), nor when a new session of the remote (a
        /// new discriminator: its BFD restarted or was reconfigured) starts in
        /// Down: its packets arrive, the path works. A client tears its own
        /// session down only for a failure.
        path_failure: bool,
    },
}

/// What a session Up carries across a restart of its driver: what the remote
/// knows of it and what it knows of the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BfdResume {
    /// bfd.LocalDiscr (the remote's Your Discriminator).
    pub local_discr: u32,
    /// bfd.RemoteDiscr.
    pub remote_discr: u32,
    /// The remote's Required Min RX Interval, µs.
    pub remote_min_rx: u32,
    /// The remote's Desired Min TX Interval, µs.
    pub remote_desired_min_tx: u32,
    /// The remote's Detect Mult.
    pub remote_detect_mult: u8,
    /// The Desired Min TX Interval the remote last heard from this side, µs.
    pub desired_min_tx: u32,
    /// The Detect Mult the remote last heard from this side.
    pub detect_mult: u8,
}

impl BfdResume {
    /// How long the remote waits without a packet before it declares the
    /// session down (§6.8.4, as the remote computes it).
    pub fn remote_detection_time(&self) -> Duration {
        let per = u64::from(self.remote_min_rx.max(self.desired_min_tx));
        Duration::from_micros(per.saturating_mul(u64::from(self.detect_mult)))
    }
}

/// Counters and the negotiated values, for `show bfd` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BfdStats {
    /// Control packets received and accepted by this session.
    pub received: u64,
    /// Control packets sent.
    pub sent: u64,
    /// Packets discarded by this session (it was AdminDown).
    pub discarded: u64,
    /// Times the session left Up.
    pub flaps: u64,
}

/// One BFD session (RFC 5880 §6.8), asynchronous mode.
#[derive(Debug)]
pub struct BfdSession {
    cfg: BfdConfig,
    state: State,
    /// bfd.LocalDiag.
    diag: Diag,
    local_discr: u32,
    /// bfd.RemoteDiscr (0: not known).
    remote_discr: u32,
    remote_state: State,
    remote_diag: Diag,
    /// bfd.RemoteMinRxInterval, µs (1 until the remote says).
    remote_min_rx: u32,
    /// The remote's Desired Min TX Interval, µs.
    remote_desired_min_tx: u32,
    remote_detect_mult: u8,
    /// The remote's C bit.
    remote_control_plane_independent: bool,
    /// Desired Min TX Interval as advertised now, µs.
    tx_desired: u32,
    /// Required Min RX Interval as advertised now, µs.
    rx_required: u32,
    /// Desired Min TX Interval that paces this side now (an increase waits for the Final, §6.8.3).
    tx_in_effect: u32,
    /// Required Min RX Interval the detection time uses now (a decrease waits for the Final, §6.8.3).
    rx_in_effect: u32,
    /// A Poll sequence is under way (§6.5): periodic packets carry P.
    polling: bool,
    /// A Poll was received: the next packet carries F, at once.
    send_final: bool,
    /// Send a packet at once (a state change).
    send_now: bool,
    next_tx: Option<Instant>,
    /// When the last packet was sent (a change of the interval reschedules from it).
    last_tx: Option<Instant>,
    detect_at: Option<Instant>,
    up_since: Option<Instant>,
    /// The latest time an input brought (a packet due at once is due then).
    now: Instant,
    rng: u64,
    stats: BfdStats,
    events: VecDeque<BfdEvent>,
}

/// What `show bfd` reports of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdView {
    /// The state.
    pub state: State,
    /// The remote's last state.
    pub remote_state: State,
    /// bfd.LocalDiscr.
    pub local_discr: u32,
    /// bfd.RemoteDiscr (0: not known).
    pub remote_discr: u32,
    /// The interval this side sends at (before jitter).
    pub tx_interval: Duration,
    /// The interval the remote sends at, as negotiated.
    pub rx_interval: Duration,
    /// The detection time: how long without a packet before Down.
    pub detection_time: Duration,
    /// Since when Up.
    pub up_since: Option<Instant>,
    /// Why the session last went down (or `NONE`).
    pub diag: Diag,
    /// The remote's diagnostic.
    pub remote_diag: Diag,
    /// The remote's C bit.
    pub remote_control_plane_independent: bool,
    /// Counters.
    pub stats: BfdStats,
}

impl BfdSession {
    /// A session in Down with `local_discr` (non-zero, unique on this system:
    /// the driver's), its first packet due at once (unless passive). `seed`
    /// drives the transmit jitter.
    pub fn new(cfg: BfdConfig, local_discr: u32, seed: u64, now: Instant) -> Result<BfdSession, ConfigError> {
        cfg.validate()?;
        let idle = micros(cfg.idle_tx.max(MIN_IDLE_TX));
        let rx = micros(cfg.required_min_rx);
        Ok(BfdSession {
            cfg,
            state: State::Down,
            diag: Diag::NONE,
            local_discr,
            remote_discr: 0,
            remote_state: State::Down,
            remote_diag: Diag::NONE,
            remote_min_rx: 1,
            remote_desired_min_tx: 0,
            remote_detect_mult: 0,
            remote_control_plane_independent: false,
            tx_desired: idle,
            rx_required: rx,
            tx_in_effect: idle,
            rx_in_effect: rx,
            polling: false,
            send_final: false,
            send_now: false,
            next_tx: (!cfg.passive).then_some(now),
            last_tx: None,
            detect_at: None,
            up_since: None,
            now,
            rng: seed | 1,
            stats: BfdStats::default(),
            events: VecDeque::new(),
        })
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// A session Up resumed after a restart of its driver from `r` (the
    /// previous run's [`BfdSession::snapshot`]): Up at once with the same
    /// discriminators, its first packet due at once with a Poll sequence back
    /// to `cfg`'s intervals; the remote's detection timer starts now.
    pub fn resume(cfg: BfdConfig, r: &BfdResume, seed: u64, now: Instant) -> Result<BfdSession, ConfigError> {
        let mut s = BfdSession::new(cfg, r.local_discr, seed, now)?;
        s.state = State::Up;
        s.remote_state = State::Up;
        s.remote_discr = r.remote_discr;
        s.remote_min_rx = r.remote_min_rx;
        s.remote_desired_min_tx = r.remote_desired_min_tx;
        s.remote_detect_mult = r.remote_detect_mult;
        s.up_since = Some(now);
        // What the remote last heard from this side, then the change back.
        s.tx_desired = r.desired_min_tx;
        s.tx_in_effect = r.desired_min_tx;
        let (tx, rx) = s.wanted_intervals();
        s.change_intervals(now, tx, rx);
        s.send_now = true;
        s.detect_at = Some(now + s.detection_time());
        Ok(s)
    }

    /// What [`BfdSession::resume`] needs, when Up and the remote is known.
    pub fn snapshot(&self) -> Option<BfdResume> {
        (self.state == State::Up && self.remote_discr != 0).then_some(BfdResume {
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            remote_min_rx: self.remote_min_rx,
            remote_desired_min_tx: self.remote_desired_min_tx,
            remote_detect_mult: self.remote_detect_mult,
            desired_min_tx: self.tx_desired,
            detect_mult: self.cfg.detect_mult,
        })
    }

    /// A Poll sequence is under way (its Final not received yet).
    pub fn poll_pending(&self) -> bool {
        self.polling
    }

    /// This side's discriminator.
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    /// The configuration.
    pub fn config(&self) -> &BfdConfig {
        &self.cfg
    }

    /// A packet for this session (the driver demultiplexed it, RFC 5880
    /// §6.8.6: by Your Discriminator, or by address when it is zero).
    pub fn handle_packet(&mut self, now: Instant, p: &ControlPacket) -> Result<(), Discard> {
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            return Err(Discard::UnknownDiscriminator);
        }
        self.now = self.now.max(now);
        if self.state == State::AdminDown {
            self.stats.discarded += 1;
            return Err(Discard::AdminDown);
        }
        self.stats.received += 1;
        let before = self.tx_interval();
        // The remote started over with a new session (§6.8.6 demultiplexed it
        // here by address): it lost the old one's state, not the path.
        let renewed = self.remote_discr != 0 && p.my_discr != self.remote_discr;
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        self.remote_control_plane_independent = p.control_plane_independent;
        if p.final_ && self.polling {
            // §6.5: the Poll sequence is over; the new values apply.
            self.polling = false;
            self.tx_in_effect = self.tx_desired;
            self.rx_in_effect = self.rx_required;
        }
        match (self.state, p.state) {
            (s, State::AdminDown) if s != State::Down => {
                self.go(now, State::Down, Diag::NEIGHBOR_SIGNALED_SESSION_DOWN, false)
            }
            (_, State::AdminDown) => {}
            (State::Down, State::Down) => self.go(now, State::Init, Diag::NONE, false),
            (State::Down, State::Init) => self.go(now, State::Up, Diag::NONE, false),
            (State::Init, State::Init | State::Up) => self.go(now, State::Up, Diag::NONE, false),
            (State::Up, State::Down) => self.go(now, State::Down, Diag::NEIGHBOR_SIGNALED_SESSION_DOWN, !renewed),
            _ => {}
        }
        if p.poll {
            // §6.8.6: a Final at once, whatever the transmit timer.
            self.send_final = true;
        }
        if self.tx_interval() != before {
            self.reschedule(now);
        } else if self.next_tx.is_none() && self.may_send() {
            self.next_tx = Some(now);
        }
        self.detect_at = (self.remote_state != State::AdminDown).then(|| now + self.detection_time());
        Ok(())
    }

    /// Deadlines that passed fire: the detection time (Init or Up → Down,
    /// Control Detection Time Expired).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.detect_at.is_some_and(|t| t <= now) {
            self.detect_at = None;
            if matches!(self.state, State::Init | State::Up) {
                self.go(now, State::Down, Diag::CONTROL_DETECTION_TIME_EXPIRED, true);
            }
            // §6.8.1: the remote's discriminator is forgotten when the detection time expires.
            self.remote_discr = 0;
            self.remote_min_rx = 1;
        }
    }

    /// The next packet to send, if one is due at `now` (periodic, a Final, or
    /// a state change). Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ControlPacket> {
        if !self.may_send() {
            return None;
        }
        let due = self.next_tx.is_some_and(|t| t <= now);
        if !(due || self.send_final || self.send_now) {
            return None;
        }
        let final_ = std::mem::take(&mut self.send_final);
        self.send_now = false;
        let p = ControlPacket {
            diag: self.diag,
            state: self.state,
            // §6.5: P and F never together; a Final answers at once.
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.tx_desired,
            required_min_rx: self.rx_required,
            required_min_echo_rx: 0,
        };
        self.stats.sent += 1;
        self.last_tx = Some(now);
        self.next_tx = self.tx_interval().map(|i| now + self.jitter(i));
        Some(p)
    }

    /// When [`BfdSession::handle_timeout`] or [`BfdSession::poll_transmit`]
    /// want to run next (the time of the latest input when a packet is due
    /// at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = match self.may_send() {
            true if self.send_now || self.send_final => Some(self.now),
            true => self.next_tx,
            false => None,
        };
        [tx, self.detect_at].into_iter().flatten().min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<BfdEvent> {
        self.events.pop_front()
    }

    /// New settings: while Up, a change of the intervals starts a Poll
    /// sequence (§6.8.3); the multiplier applies at once.
    pub fn set_config(&mut self, now: Instant, cfg: BfdConfig) -> Result<(), ConfigError> {
        cfg.validate()?;
        self.cfg = cfg;
        let (tx, rx) = self.wanted_intervals();
        self.change_intervals(now, tx, rx);
        Ok(())
    }

    /// AdminDown (`down`) or back to Down (RFC 5880 §6.8.16): the remote is
    /// told (state AdminDown, diag Administratively Down) and does not count
    /// it as a failure.
    pub fn set_admin_down(&mut self, now: Instant, down: bool) {
        match (self.state, down) {
            (State::AdminDown, false) => self.go(now, State::Down, Diag::NONE, false),
            (s, true) if s != State::AdminDown => {
                self.go(now, State::AdminDown, Diag::ADMINISTRATIVELY_DOWN, false);
                self.detect_at = None;
            }
            _ => {}
        }
    }

    /// What `show bfd` reports.
    pub fn view(&self) -> BfdView {
        let us = |v: u32| Duration::from_micros(u64::from(v));
        BfdView {
            state: self.state,
            remote_state: self.remote_state,
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            tx_interval: us(self.tx_in_effect.max(self.remote_min_rx)),
            rx_interval: us(self.rx_in_effect.max(self.remote_desired_min_tx)),
            detection_time: self.detection_time(),
            up_since: self.up_since,
            diag: self.diag,
            remote_diag: self.remote_diag,
            remote_control_plane_independent: self.remote_control_plane_independent,
            stats: self.stats.clone(),
        }
    }

    // ----- internals -----

    /// Whether this side sends: not when passive and the remote has not
    /// spoken, nor when the remote asks for no packets (Required Min RX 0, §6.8.7).
    fn may_send(&self) -> bool {
        !(self.cfg.passive && self.remote_discr == 0) && self.remote_min_rx != 0
    }

    /// The periodic interval: the larger of what this side wants and what
    /// the remote accepts (§6.8.7).
    fn tx_interval(&self) -> Option<Duration> {
        (self.remote_min_rx != 0).then(|| Duration::from_micros(u64::from(self.tx_in_effect.max(self.remote_min_rx))))
    }

    /// §6.8.4: the remote's multiplier times the larger of our Required Min
    /// RX and its Desired Min TX.
    fn detection_time(&self) -> Duration {
        let per = u64::from(self.rx_in_effect.max(self.remote_desired_min_tx));
        Duration::from_micros(per.saturating_mul(u64::from(self.remote_detect_mult.max(1))))
    }

    /// §6.8.7: each interval is reduced by a random 0-25 % (10-25 % when the
    /// multiplier is 1).
    fn jitter(&mut self, i: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, span) = if self.cfg.detect_mult == 1 { (75, 15) } else { (75, 25) };
        let pct = lo + (self.rng % (span + 1));
        i * u32::try_from(pct).unwrap_or(100) / 100
    }

    /// The intervals to advertise in the current state: the configured ones
    /// when Up, the idle transmit interval otherwise (§6.8.3).
    fn wanted_intervals(&self) -> (u32, u32) {
        let rx = micros(self.cfg.required_min_rx);
        if self.state == State::Up {
            (micros(self.cfg.desired_min_tx), rx)
        } else {
            (micros(self.cfg.idle_tx.max(MIN_IDLE_TX)), rx)
        }
    }

    /// §6.8.3: advertised at once; while Up a Poll sequence tells the remote,
    /// and an increase of TX (decrease of RX) takes effect at its Final.
    fn change_intervals(&mut self, now: Instant, tx: u32, rx: u32) {
        if tx == self.tx_desired && rx == self.rx_required {
            return;
        }
        let up = self.state == State::Up;
        self.tx_desired = tx;
        self.rx_required = rx;
        if !up || tx < self.tx_in_effect {
            self.tx_in_effect = tx;
        }
        if !up || rx > self.rx_in_effect {
            self.rx_in_effect = rx;
        }
        if up {
            self.polling = true;
            self.send_now = true;
        }
        self.reschedule(now);
    }

    /// The transmit interval changed: the next periodic packet is due one
    /// new interval after the last one (at once if that has passed), so a
    /// slower rate the remote asks for is kept from the next packet on.
    fn reschedule(&mut self, now: Instant) {
        let Some(i) = self.tx_interval() else { return };
        let i = self.jitter(i);
        self.next_tx = Some(self.last_tx.map_or(now, |t| (t + i).max(now)));
    }

    /// Enters state `to` for `diag`; `path_failure` as the event says.
    fn go(&mut self, now: Instant, to: State, diag: Diag, path_failure: bool) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        if diag != Diag::NONE || to == State::Up {
            self.diag = diag;
        }
        if from == State::Up {
            self.stats.flaps += 1;
            self.up_since = None;
        }
        if to == State::Up {
            self.up_since = Some(now);
        }
        if to != State::Up {
            // A Poll sequence does not outlive the Up state.
            self.polling = false;
        }
        let path_failure = path_failure && from == State::Up && to == State::Down;
        self.events.push_back(BfdEvent::StateChanged { from, to, diag, path_failure });
        // Tell the remote at once.
        self.send_now = true;
        let (tx, rx) = self.wanted_intervals();
        self.change_intervals(now, tx, rx);
    }
}
