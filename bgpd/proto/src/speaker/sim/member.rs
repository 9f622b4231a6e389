//! One member of a [`Fabric`](super::Fabric), and what it does with the
//! deliveries that concern it alone: bytes that arrive, the end of a read,
//! its timer. That part touches nothing but the member (the links are only
//! read), so the fabric hands a window's deliveries to their members on
//! several threads at once; what a member leaves for the fabric (bytes to
//! send over a link, a connection to make or close, a delivery later) comes
//! back as [`Out`], in the order it was produced, and the fabric applies it
//! member by member in a fixed order.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use ipnet::IpNet;

use super::READ_TIME;
use crate::session::DownReason;
use crate::speaker::{ConnId, Event, PeerKey, Speaker};

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct End {
    pub(super) member: usize,
    pub(super) peer: PeerKey,
    pub(super) conn: ConnId,
}

#[derive(Clone, Debug)]
pub(super) struct Link {
    pub(super) ends: [End; 2],
    pub(super) segment: usize,
    pub(super) latency: std::time::Duration,
    /// When the last delivery in each direction is due (deliveries keep their order).
    pub(super) last: [Instant; 2],
}

impl Link {
    /// The direction (0 or 1) of what `member`'s session `peer` sends.
    pub(super) fn direction_from(&self, member: usize, peer: PeerKey) -> usize {
        usize::from(self.ends[0].member != member || self.ends[0].peer != peer)
    }
}

/// What the queue delivers: bytes or a close over a link, a connection
/// attempt's outcome, a member's timer, or the end of a member's read (it
/// reads what waits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Delivery {
    Bytes { link: usize, to: u8, bytes: Bytes },
    Closed { link: usize, to: u8 },
    Connect { member: usize, peer: PeerKey, attempt: u64 },
    Refused { member: usize, peer: PeerKey, attempt: u64 },
    Timer { member: usize },
    Read { member: usize },
}

/// Whom a delivery concerns.
pub(super) enum Concerns {
    /// One member alone ([`Member::deliver`]).
    Member(usize),
    /// Nobody: bytes over a link that has gone.
    Nobody,
    /// The fabric: connections made, refused or closed involve both ends.
    Fabric,
}

impl Delivery {
    pub(super) fn concerns(&self, links: &[Option<Link>]) -> Concerns {
        match self {
            Delivery::Bytes { link, to, .. } => match &links[*link] {
                Some(l) => Concerns::Member(l.ends[usize::from(*to)].member),
                None => Concerns::Nobody,
            },
            Delivery::Timer { member } | Delivery::Read { member } => Concerns::Member(*member),
            Delivery::Closed { .. } | Delivery::Connect { .. } | Delivery::Refused { .. } => Concerns::Fabric,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Track {
    pub(super) established: bool,
    pub(super) last_down: Option<DownReason>,
    pub(super) last_failure: Option<String>,
    pub(super) attempt: Option<u64>,
}

/// What a member leaves for the fabric to do, in the order it was produced.
#[derive(Debug)]
pub(super) enum Out {
    /// Bytes the member's session `peer` sent at `now` over `link`.
    Transmit { link: usize, peer: PeerKey, bytes: Bytes, now: Instant },
    /// The member's session `peer` closed its connection over `link` at `now`.
    Close { link: usize, peer: PeerKey, now: Instant },
    /// The member's session `peer` asks for a connection at `now`.
    Connect { peer: PeerKey, now: Instant },
    /// A delivery to the member itself at `at` (its timer, the end of a read).
    Later { at: Instant, d: Delivery },
}

/// What a member's handling produced: [`Out`]s in order, and the last time
/// it did something that counts as routing activity.
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub(super) out: Vec<Out>,
    pub(super) activity: Option<Instant>,
}

impl Effects {
    fn active(&mut self, now: Instant) {
        self.activity = Some(self.activity.map_or(now, |a| a.max(now)));
    }
}

pub(super) struct Member {
    pub(super) name: String,
    pub(super) speaker: Option<Speaker>,
    pub(super) interfaces: Vec<(usize, IpNet)>,
    pub(super) alive: bool,
    pub(super) fib: BTreeMap<IpNet, Vec<IpAddr>>,
    /// When kept (`Fabric::track_fib_changes`): the prefixes of `fib`
    /// that changed since it was last taken; `None` inside when the whole
    /// table was cleared.
    pub(super) fib_journal: Option<Option<Vec<IpNet>>>,
    pub(super) tracks: BTreeMap<PeerKey, Track>,
    /// Open connections: (peer, conn) → link.
    pub(super) conns: BTreeMap<(PeerKey, ConnId), usize>,
    pub(super) timer: Option<Instant>,
    /// Busy reading until then: what arrives before waits in `unread`.
    pub(super) busy_until: Option<Instant>,
    /// Bytes that arrived while it was busy: (link, end), what, in the
    /// order they arrived (one entry per link, appended to).
    pub(super) unread: Vec<(usize, u8, Vec<u8>)>,
}

impl Member {
    /// Takes what the speaker wants done (member `m` is this one).
    pub(super) fn drain(&mut self, m: usize, now: Instant, fx: &mut Effects) {
        if !self.alive {
            return;
        }
        loop {
            let Some(sp) = self.speaker.as_mut() else { return };
            if let Some(t) = sp.poll_transmit() {
                if let Some(&link) = self.conns.get(&(t.peer, t.conn)) {
                    fx.out.push(Out::Transmit { link, peer: t.peer, bytes: t.bytes, now });
                }
                continue;
            }
            let Some(ev) = sp.poll_event() else { break };
            self.event(ev, now, fx);
        }
        // The member's next deadline.
        let next = self.speaker.as_ref().and_then(Speaker::poll_timeout);
        if let Some(t) = next {
            if self.timer.is_none_or(|s| t < s || s < now) {
                self.timer = Some(t);
                fx.out.push(Out::Later { at: t.max(now), d: Delivery::Timer { member: m } });
            }
        }
    }

    fn event(&mut self, ev: Event, now: Instant, fx: &mut Effects) {
        match ev {
            Event::Connect(peer) => fx.out.push(Out::Connect { peer, now }),
            Event::CancelConnect { peer, unanswered } => {
                let t = self.tracks.entry(peer).or_default();
                t.attempt = None;
                if unanswered && t.last_failure.is_none() {
                    t.last_failure = Some("no answer".into());
                }
            }
            Event::Close(peer, conn) => {
                if let Some(link) = self.conns.remove(&(peer, conn)) {
                    fx.out.push(Out::Close { link, peer, now });
                }
            }
            Event::Established { peer, .. } => {
                let t = self.tracks.entry(peer).or_default();
                t.established = true;
                t.last_failure = None;
                fx.active(now);
            }
            Event::Down { peer, reason, .. } => {
                let t = self.tracks.entry(peer).or_default();
                if std::mem::take(&mut t.established) {
                    fx.active(now);
                }
                if reason != DownReason::ConnectionFailed || t.last_down.is_none() {
                    t.last_down = Some(reason);
                }
            }
            Event::Fib(routes) => {
                for r in routes {
                    if let Some(Some(j)) = &mut self.fib_journal {
                        j.push(r.prefix);
                    }
                    if r.next_hops.is_empty() {
                        self.fib.remove(&r.prefix);
                    } else {
                        self.fib.insert(r.prefix, r.next_hops);
                    }
                }
                fx.active(now);
            }
            Event::Teardown { peer, reason, .. } => {
                self.tracks.entry(peer).or_default().last_failure = Some(reason);
            }
            Event::StateChanged { .. }
            | Event::UpdateIssues { .. }
            | Event::Collision { .. }
            | Event::Warning { .. }
            | Event::DeferralDone => {}
        }
    }

    /// Hands bytes that waited to the speaker at the link's end `to` (if the link still stands).
    pub(super) fn read(&mut self, links: &[Option<Link>], link: usize, to: u8, bytes: &[u8], now: Instant) {
        let Some(end) = links[link].as_ref().map(|l| l.ends[usize::from(to)]) else { return };
        if let (true, Some(sp)) = (self.alive, self.speaker.as_mut()) {
            sp.handle_bytes(end.peer, end.conn, bytes, now);
        }
    }

    /// A delivery that concerns this member (`m`) alone
    /// ([`Concerns::Member`]): bytes, the end of a read, its timer.
    pub(super) fn deliver(&mut self, m: usize, links: &[Option<Link>], now: Instant, d: Delivery, fx: &mut Effects) {
        match d {
            Delivery::Bytes { link, to, bytes } => {
                let Some(end) = links[link].as_ref().map(|l| l.ends[usize::from(to)]) else { return };
                if !self.alive {
                    return;
                }
                if !self.unread.is_empty() || self.busy_until.is_some_and(|b| b > now) {
                    // Busy (or bytes wait already, to be read first): read
                    // with whatever else arrives, when it is done.
                    if self.unread.is_empty() {
                        let at = self.busy_until.unwrap_or(now);
                        fx.out.push(Out::Later { at, d: Delivery::Read { member: m } });
                    }
                    match self.unread.iter_mut().find(|(l, t, _)| *l == link && *t == to) {
                        Some((_, _, waiting)) => waiting.extend_from_slice(&bytes),
                        None => self.unread.push((link, to, bytes.to_vec())),
                    }
                    return;
                }
                self.busy_until = Some(now + READ_TIME);
                if let Some(sp) = self.speaker.as_mut() {
                    sp.handle_bytes(end.peer, end.conn, &bytes, now);
                }
                self.drain(m, now, fx);
            }
            Delivery::Read { .. } => {
                let unread = std::mem::take(&mut self.unread);
                if unread.is_empty() || !self.alive {
                    return;
                }
                self.busy_until = Some(now + READ_TIME);
                for (link, to, bytes) in unread {
                    self.read(links, link, to, &bytes, now);
                }
                self.drain(m, now, fx);
            }
            Delivery::Timer { .. } => {
                if self.timer.is_some_and(|t| t <= now) {
                    self.timer = None;
                }
                if self.alive {
                    if let Some(sp) = self.speaker.as_mut() {
                        if sp.poll_timeout().is_some_and(|t| t <= now) {
                            sp.handle_timeout(now);
                        }
                    }
                    self.drain(m, now, fx);
                }
            }
            Delivery::Closed { .. } | Delivery::Connect { .. } | Delivery::Refused { .. } => {
                unreachable!("the fabric handles connections made, refused and closed")
            }
        }
    }

    /// Handles member `m`'s deliveries of one window, in order, on the
    /// virtual clock from `now`: what it schedules for itself before
    /// `until` is handled here too, in its place; the rest is left in the
    /// effects. Returns the effects, the time of the last delivery handled
    /// and how many were.
    pub(super) fn window(
        &mut self,
        m: usize,
        links: &[Option<Link>],
        now: Instant,
        until: Instant,
        deliveries: Vec<(Instant, Delivery)>,
    ) -> (Effects, Instant, u64) {
        let mut queue: VecDeque<(Instant, Delivery)> = deliveries.into();
        let (mut fx, mut now, mut count) = (Effects::default(), now, 0);
        while let Some((at, d)) = queue.pop_front() {
            now = now.max(at);
            count += 1;
            let from = fx.out.len();
            self.deliver(m, links, now, d, &mut fx);
            // What it scheduled for itself inside the window joins the
            // queue, after what is due at the same time already.
            let mut i = from;
            while i < fx.out.len() {
                match &fx.out[i] {
                    Out::Later { at, .. } if *at < until => {
                        let Out::Later { at, d } = fx.out.remove(i) else { unreachable!() };
                        let pos = queue.partition_point(|(t, _)| *t <= at);
                        queue.insert(pos, (at, d));
                    }
                    _ => i += 1,
                }
            }
        }
        (fx, now, count)
    }
}
