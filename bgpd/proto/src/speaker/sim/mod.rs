//! Many [`Speaker`]s on a virtual clock, their connections in-memory pipes:
//! a whole fabric simulated deterministically (a seed picks each link's
//! latency, and so the order in which things race).
//!
//! Members have interfaces on named segments (L2 networks). A TCP
//! connection to a peer address succeeds when a live member owns the
//! address on a live segment the source is on too, and that member has a
//! session configured for the source's address with the same TCP MD5 key;
//! it is refused when the member exists without such a session (or runs no
//! speaker), and gets no answer otherwise (as with a key that differs: the
//! kernel drops the segments). Next hops resolve when they are on a live
//! segment of the member. A failed member or segment takes its connections
//! down at once (as a link-down would; a silent failure would wait for the
//! hold timer or BFD, and converge to the same state).
//!
//! A member reads what arrives at once when it is idle; a read keeps it busy
//! for [`READ_TIME`], and what arrives meanwhile is read together when it is
//! done, one read per connection, as a daemon's event loop reads every
//! socket that became ready while it worked. So a member that hears from
//! many peers at once passes their routes on in a few UPDATEs rather than
//! one per prefix, as a real speaker under load does; a design of a
//! thousand nodes then converges in a few hundred thousand deliveries
//! instead of millions.

mod member;
mod window;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Initiator, PeerKey, Reachability, Speaker};
use crate::session::{DownReason, State};
use member::{Concerns, Delivery, Effects, End, Link, Member, Out};

/// How long a fabric must be quiet (no session up or down, no route
/// change) to count as converged.
pub const QUIET: Duration = Duration::from_secs(120);

/// How long a fabric with nothing to do but keepalives and timers is
/// simulated before [`Fabric::run`] skips the rest of the [`QUIET`] wait
/// (see `skip_to`): a timer that falls due in the skipped stretch fires at
/// its end, which moves when things happen but not where the fabric
/// converges to.
pub const IDLE: Duration = Duration::from_secs(10);

/// How long a member is busy after reading: bytes that arrive meanwhile
/// wait, and are read together when it is done.
pub const READ_TIME: Duration = Duration::from_millis(5);

/// The shortest latency of a link: what a member does reaches another
/// no sooner (see `Fabric::window`).
const MIN_LATENCY: Duration = Duration::from_micros(500);

/// A window with fewer deliveries than this is handled on one thread.
const PARALLEL_MIN: usize = 256;

/// One session as the simulation saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionReport {
    /// The peer's name (its `PeerConfig` name).
    pub peer: String,
    /// Its address.
    pub remote: IpAddr,
    /// The session's state now.
    pub state: State,
    /// Established now.
    pub established: bool,
    /// Why it last went down, if it did.
    pub last_down: Option<DownReason>,
    /// Why the last connection attempt failed, if it did.
    pub last_failure: Option<String>,
}

/// A simulated fabric.
pub struct Fabric {
    start: Instant,
    now: Instant,
    rng: u64,
    seq: u64,
    attempts: u64,
    members: Vec<Member>,
    /// Member name → index in `members` (the first of a name).
    names: HashMap<String, usize>,
    segments: Vec<(String, bool)>,
    links: Vec<Option<Link>>,
    /// What is due, in order: when (nanoseconds since `start`, high 64 bits)
    /// and the sequence number (low 64 bits) in one key, with the slot in
    /// `waiting` of the delivery. The heap moves its entries on every push
    /// and pop; a key and a slot are half the size of a delivery, and
    /// compare as one number.
    queue: BinaryHeap<Reverse<(u128, u32)>>,
    waiting: Vec<Option<Delivery>>,
    /// Slots of `waiting` free for reuse.
    free: Vec<u32>,
    last_activity: Instant,
    skipped: Duration,
    deliveries: u64,
    /// Threads a window's deliveries are handled on.
    threads: usize,
    /// A window with fewer deliveries is handled on one thread.
    parallel_min: usize,
}

impl Fabric {
    /// An empty fabric; `seed` picks the latencies. Its clock starts at the
    /// instant [`Fabric::now`] returns: build the speakers with it.
    pub fn new(seed: u64) -> Fabric {
        let start = Instant::now();
        Fabric {
            start,
            now: start,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            seq: 0,
            attempts: 0,
            members: Vec::new(),
            names: HashMap::new(),
            segments: Vec::new(),
            links: Vec::new(),
            queue: BinaryHeap::new(),
            waiting: Vec::new(),
            free: Vec::new(),
            last_activity: start,
            skipped: Duration::ZERO,
            deliveries: 0,

            threads: std::thread::available_parallelism().map_or(1, |n| n.get()).min(8),
            parallel_min: PARALLEL_MIN,
        }
    }

    /// Handles each window's deliveries on at most `threads` threads (at
    /// least one; the machine's cores, at most 8, unless told). The
    /// outcome is the same whatever the number.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Hands even the smallest windows to the threads (tests of small
    /// fabrics).
    #[cfg(test)]
    pub(crate) fn always_parallel(&mut self) {
        self.parallel_min = 0;
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the fabric was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn segment(&mut self, name: &str) -> usize {
        match self.segments.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.segments.push((name.to_string(), true));
                self.segments.len() - 1
            }
        }
    }

    /// Adds a member with its interfaces (segment, address with the
    /// subnet's length); `speaker`: `None` for a host that runs no BGP.
    /// Its speaker's next hops resolve on its segments from now on.
    pub fn add_member(&mut self, name: &str, speaker: Option<Speaker>, interfaces: Vec<(String, IpNet)>) {
        let interfaces = interfaces.into_iter().map(|(s, a)| (self.segment(&s), a)).collect();
        self.members.push(Member {
            name: name.to_string(),
            speaker,
            interfaces,
            alive: true,
            fib: BTreeMap::new(),
            fib_journal: None,
            tracks: BTreeMap::new(),
            conns: BTreeMap::new(),
            timer: None,
            busy_until: None,
            unread: Vec::new(),
        });
        let m = self.members.len() - 1;
        self.names.entry(name.to_string()).or_insert(m);
        self.set_reachability(m);
        self.drain(m);
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// The members' names, in the order they were added.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// A member's speaker.
    pub fn speaker(&self, name: &str) -> Option<&Speaker> {
        self.index(name).and_then(|i| self.members[i].speaker.as_ref())
    }

    /// A member's speaker, to change it (call [`Fabric::run`] afterwards).
    pub fn speaker_mut(&mut self, name: &str) -> Option<&mut Speaker> {
        let i = self.index(name)?;
        self.members[i].speaker.as_mut()
    }

    /// Whether the member is up.
    pub fn alive(&self, name: &str) -> bool {
        self.index(name).is_some_and(|i| self.members[i].alive)
    }

    /// Whether the segment is up.
    pub fn segment_alive(&self, name: &str) -> bool {
        self.segments.iter().any(|(n, up)| n == name && *up)
    }

    /// The learned routes in the member's forwarding table: prefix → ECMP next hops.
    pub fn fib(&self, name: &str) -> BTreeMap<IpNet, Vec<IpAddr>> {
        self.fib_ref(name).cloned().unwrap_or_default()
    }

    /// The member's forwarding table as [`Fabric::fib`] gives it, without a copy.
    pub fn fib_ref(&self, name: &str) -> Option<&BTreeMap<IpNet, Vec<IpAddr>>> {
        self.index(name).map(|i| &self.members[i].fib)
    }

    /// Starts keeping, for every member, a journal of the prefixes of its
    /// forwarding table that change: a caller that kept a copy of the
    /// tables compares only what moved ([`Fabric::take_fib_changes`]).
    pub fn track_fib_changes(&mut self) {
        for m in &mut self.members {
            m.fib_journal.get_or_insert(Some(Vec::new()));
        }
    }

    /// The prefixes of the member's forwarding table that changed since
    /// this was last asked (sorted, each once; a prefix may have changed
    /// back). `None` when any may have: the table was cleared (the member
    /// failed or restarted), or no journal is kept.
    pub fn take_fib_changes(&mut self, name: &str) -> Option<Vec<IpNet>> {
        let i = self.index(name)?;
        let journal = self.members[i].fib_journal.as_mut()?;
        let mut out = journal.replace(Vec::new())?;
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// The member's sessions, in the order its peers were added.
    pub fn sessions(&self, name: &str) -> Vec<SessionReport> {
        let Some(m) = self.index(name).map(|i| &self.members[i]) else { return Vec::new() };
        let Some(sp) = m.speaker.as_ref() else { return Vec::new() };
        sp.peers()
            .map(|(key, peer, setup)| {
                let t = m.tracks.get(&key).cloned().unwrap_or_default();
                SessionReport {
                    peer: setup.rib.name.clone(),
                    remote: setup.rib.addr,
                    state: peer.state(),
                    established: peer.state() == State::Established,
                    last_down: t.last_down,
                    last_failure: t.last_failure,
                }
            })
            .collect()
    }

    /// Takes a member down: its connections close at once, it answers nothing.
    pub fn fail_member(&mut self, name: &str) {
        let Some(i) = self.index(name) else { return };
        self.members[i].alive = false;
        let links: Vec<usize> = self.members[i].conns.values().copied().collect();
        for l in links {
            self.cut(l);
        }
        self.members[i].fib.clear();
        if let Some(j) = &mut self.members[i].fib_journal {
            *j = None;
        }
    }

    /// Takes a segment down: connections over it close at once, its
    /// subnets stop resolving next hops.
    pub fn fail_segment(&mut self, name: &str) {
        let Some(s) = self.segments.iter().position(|(n, _)| n == name) else { return };
        self.segments[s].1 = false;
        let links: Vec<usize> =
            (0..self.links.len()).filter(|l| self.links[*l].as_ref().is_some_and(|k| k.segment == s)).collect();
        for l in links {
            self.cut(l);
        }
        for m in 0..self.members.len() {
            if self.members[m].interfaces.iter().any(|(seg, _)| *seg == s) {
                self.set_reachability(m);
                self.drain(m);
            }
        }
    }

    /// Brings a failed member back as a fresh start: `speaker` (built on
    /// this fabric's clock, [`Fabric::now`]) replaces the one it had, with
    /// no sessions, routes or connections; its peers reconnect as their
    /// retry timers fire. A member that is up is left as it is.
    pub fn restart_member(&mut self, name: &str, speaker: Option<Speaker>) {
        let Some(i) = self.index(name) else { return };
        let m = &mut self.members[i];
        if m.alive {
            return;
        }
        m.speaker = speaker;
        m.alive = true;
        m.fib.clear();
        if let Some(j) = &mut m.fib_journal {
            *j = None;
        }
        m.tracks.clear();
        m.conns.clear();
        m.timer = None;
        m.busy_until = None;
        m.unread.clear();
        self.last_activity = self.now;
        self.set_reachability(i);
        self.drain(i);
    }

    /// Brings a failed segment back: its subnets resolve next hops again
    /// and sessions over it reconnect as their retry timers fire.
    pub fn restore_segment(&mut self, name: &str) {
        let Some(s) = self.segments.iter().position(|(n, _)| n == name) else { return };
        if self.segments[s].1 {
            return;
        }
        self.segments[s].1 = true;
        self.last_activity = self.now;
        for m in 0..self.members.len() {
            if self.members[m].alive && self.members[m].interfaces.iter().any(|(seg, _)| *seg == s) {
                self.set_reachability(m);
                self.drain(m);
            }
        }
    }

    /// Closes both ends of a link now.
    fn cut(&mut self, l: usize) {
        let Some(link) = self.links[l].take() else { return };
        for end in link.ends {
            let m = &mut self.members[end.member];
            m.conns.remove(&(end.peer, end.conn));
            if m.alive {
                if let Some(sp) = m.speaker.as_mut() {
                    sp.handle_connection_lost(end.peer, end.conn, self.now);
                }
                if let Some(t) = m.tracks.get_mut(&end.peer) {
                    t.last_failure = Some(format!("connection lost: {} failed", self.segments[link.segment].0));
                }
                self.drain(end.member);
            }
        }
    }

    fn set_reachability(&mut self, m: usize) {
        let nets: Vec<(IpNet, u32)> = self.members[m]
            .interfaces
            .iter()
            .filter(|(s, _)| self.segments[*s].1)
            .map(|(_, a)| (a.trunc(), 0))
            .collect();
        let now = self.now;
        if let Some(sp) = self.members[m].speaker.as_mut() {
            sp.handle_reachability(Reachability::Networks(nets), now);
        }
    }

    fn push(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        let due = at.saturating_duration_since(self.start).as_nanos() as u64;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.waiting[slot as usize] = Some(d);
                slot
            }
            None => {
                self.waiting.push(Some(d));
                u32::try_from(self.waiting.len() - 1).expect("fewer than 2^32 deliveries waiting at once")
            }
        };
        self.queue.push(Reverse((u128::from(due) << 64 | u128::from(self.seq), slot)));
    }

    /// When the next delivery is due.
    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((key, _))| self.start + Duration::from_nanos((key >> 64) as u64))
    }

    /// The next delivery and when it is due.
    fn pop_due(&mut self) -> Option<(Instant, Delivery)> {
        let Reverse((key, slot)) = self.queue.pop()?;
        let d = self.waiting[slot as usize].take().expect("a queued slot holds its delivery");
        self.free.push(slot);
        Some((self.start + Duration::from_nanos((key >> 64) as u64), d))
    }

    fn latency(&mut self) -> Duration {
        MIN_LATENCY + Duration::from_micros(self.random() % 4_500)
    }

    /// Takes what member `m`'s speaker wants done and schedules it.
    fn drain(&mut self, m: usize) {
        let mut fx = Effects::default();
        self.members[m].drain(m, self.now, &mut fx);
        self.apply(m, fx);
    }

    /// Does what member `m`'s handling left for the fabric, in order.
    fn apply(&mut self, m: usize, fx: Effects) {
        if let Some(a) = fx.activity {
            self.last_activity = self.last_activity.max(a);
        }
        for o in fx.out {
            match o {
                Out::Transmit { link, peer, bytes, now } => {
                    let Some(link_ref) = self.links[link].as_mut() else { continue };
                    let dir = link_ref.direction_from(m, peer);
                    let at = (now + link_ref.latency).max(link_ref.last[dir]);
                    link_ref.last[dir] = at;
                    if bytes.get(18) == Some(&2) {
                        // An UPDATE is routing activity.
                        self.last_activity = self.last_activity.max(now);
                    }
                    self.push(at, Delivery::Bytes { link, to: (1 - dir) as u8, bytes });
                }
                Out::Close { link, peer, now } => {
                    let Some(link_ref) = self.links[link].as_mut() else { continue };
                    let dir = link_ref.direction_from(m, peer);
                    let at = (now + link_ref.latency).max(link_ref.last[dir]);
                    link_ref.last[dir] = at;
                    self.push(at, Delivery::Closed { link, to: (1 - dir) as u8 });
                }
                Out::Connect { peer, now } => {
                    self.attempts += 1;
                    let attempt = self.attempts;
                    self.members[m].tracks.entry(peer).or_default().attempt = Some(attempt);
                    let lat = self.latency();
                    self.push(now + lat * 2, Delivery::Connect { member: m, peer, attempt });
                }
                Out::Later { at, d } => self.push(at, d),
            }
        }
    }

    /// Where a connection from member `m` to `addr` lands: (segment, the
    /// member that owns the address, its address, our address).
    fn route(&self, m: usize, addr: IpAddr) -> Option<(usize, usize, IpAddr)> {
        for (seg, net) in &self.members[m].interfaces {
            if !self.segments[*seg].1 || !net.contains(&addr) {
                continue;
            }
            // Nobody has the address on this segment: another segment of the
            // same subnet may still lead to it.
            let owner = self
                .members
                .iter()
                .position(|o| o.alive && o.interfaces.iter().any(|(s, a)| s == seg && a.addr() == addr));
            if let Some(owner) = owner {
                return Some((*seg, owner, net.addr()));
            }
        }
        None
    }

    fn connect(&mut self, m: usize, peer: PeerKey, attempt: u64) {
        if !self.members[m].alive || self.members[m].tracks.get(&peer).and_then(|t| t.attempt) != Some(attempt) {
            return;
        }
        let now = self.now;
        let Some((_, setup)) = self.members[m].speaker.as_ref().and_then(|s| s.peer(peer)) else { return };
        let (addr, password) = (setup.rib.addr, setup.password.clone());
        let fail = |f: &mut Fabric, why: String, refused: bool| {
            if let Some(t) = f.members[m].tracks.get_mut(&peer) {
                t.last_failure = Some(why);
            }
            if refused {
                f.push(now, Delivery::Refused { member: m, peer, attempt });
            }
        };
        let Some((seg, owner, local)) = self.route(m, addr) else {
            // No answer: the attempt is abandoned when ConnectRetry expires.
            return fail(
                self,
                format!("no answer: {addr} is on no segment of {} that is up", self.members[m].name),
                false,
            );
        };
        let remote_key = self.members[owner]
            .speaker
            .as_ref()
            .and_then(|s| s.peers().find(|(_, _, st)| st.rib.addr == local).map(|(k, _, st)| (k, st.password.clone())));
        let Some((rk, remote_password)) = remote_key else {
            let why = format!("connection refused: {} has no session for {local}", self.members[owner].name);
            return fail(self, why, true);
        };
        if remote_password != password {
            return fail(self, "no answer: TCP MD5 keys differ (the kernel drops the segments)".into(), false);
        }
        let Some(rconn) = self.members[owner]
            .speaker
            .as_mut()
            .and_then(|s| s.handle_connected(rk, Initiator::Remote, Some(addr), now))
        else {
            self.drain(owner);
            let why = format!(
                "connection refused: {} is not accepting (its session is busy or stopped)",
                self.members[owner].name
            );
            return fail(self, why, true);
        };
        self.members[m].tracks.entry(peer).or_default().attempt = None;
        let lconn =
            self.members[m].speaker.as_mut().and_then(|s| s.handle_connected(peer, Initiator::Local, Some(local), now));
        let latency = self.latency();
        match lconn {
            Some(lconn) => {
                let l = self.links.len();
                self.links.push(Some(Link {
                    ends: [End { member: m, peer, conn: lconn }, End { member: owner, peer: rk, conn: rconn }],
                    segment: seg,
                    latency,
                    last: [now; 2],
                }));
                self.members[m].conns.insert((peer, lconn), l);
                self.members[owner].conns.insert((rk, rconn), l);
            }
            None => {
                if let Some(s) = self.members[owner].speaker.as_mut() {
                    s.handle_connection_lost(rk, rconn, now);
                }
            }
        }
        self.drain(m);
        self.drain(owner);
    }

    /// Handles a delivery that concerns the fabric ([`Concerns::Fabric`]):
    /// a connection made, refused or closed.
    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Bytes { .. } | Delivery::Timer { .. } | Delivery::Read { .. } => {
                unreachable!("a window handles the deliveries that concern one member")
            }
            Delivery::Closed { link, to } => {
                let Some(end) = self.links[link].as_ref().map(|l| l.ends[usize::from(to)]) else { return };
                // What arrived before the close is read first.
                let m = &mut self.members[end.member];
                if let Some(i) = m.unread.iter().position(|(l, t, _)| *l == link && *t == to) {
                    let (_, _, bytes) = m.unread.remove(i);
                    m.read(&self.links, link, to, &bytes, now);
                    self.drain(end.member);
                }
                self.links[link] = None;
                let m = &mut self.members[end.member];
                if m.conns.remove(&(end.peer, end.conn)).is_some() && m.alive {
                    if let Some(sp) = m.speaker.as_mut() {
                        sp.handle_connection_lost(end.peer, end.conn, now);
                    }
                    self.drain(end.member);
                }
            }
            Delivery::Connect { member, peer, attempt } => self.connect(member, peer, attempt),
            Delivery::Refused { member, peer, attempt } => {
                let t = self.members[member].tracks.entry(peer).or_default();
                if t.attempt == Some(attempt) {
                    t.attempt = None;
                    if let Some(sp) = self.members[member].speaker.as_mut() {
                        sp.handle_connect_failed(peer, now);
                    }
                    self.drain(member);
                }
            }
        }
    }

    /// Skips a quiet stretch of the clock to `to`: every established
    /// session hears a KEEPALIVE at `to`, as it would have every few
    /// seconds since, and the timers that fell due meanwhile fire at `to`.
    /// A long wait for a RIB deadline (long-lived graceful restart keeps a
    /// lost peer's routes an hour) then costs one round of messages rather
    /// than an hour of keepalives.
    fn skip_to(&mut self, to: Instant) {
        let mut keepalive = [0xff_u8; 19];
        keepalive[16..].copy_from_slice(&[0, 19, 4]);
        for l in 0..self.links.len() {
            let Some(ends) = self.links[l].as_ref().map(|k| k.ends) else { continue };
            for end in ends {
                let m = &mut self.members[end.member];
                let Some(sp) = m.speaker.as_mut().filter(|_| m.alive) else { continue };
                let established = sp.peer(end.peer).is_some_and(|(p, _)| {
                    p.state() == State::Established && p.connection().is_some_and(|(c, _)| c == end.conn)
                });
                if established {
                    sp.handle_bytes(end.peer, end.conn, &keepalive, to);
                }
            }
        }
        self.skipped += to.saturating_duration_since(self.now);
        self.now = self.now.max(to);
        for m in 0..self.members.len() {
            self.drain(m);
        }
    }

    /// Virtual time skipped as quiet (see [`Fabric::run`]).
    pub fn skipped(&self) -> Duration {
        self.skipped
    }

    /// Deliveries made so far (bytes, closes, connection outcomes, timers).
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Runs until the fabric is quiet for [`QUIET`] (converged: true) or
    /// `limit` of virtual time has passed (false). After [`IDLE`] with
    /// nothing but timers, the rest of the quiet wait is skipped with one
    /// keepalive per session (see `skip_to`). Quiet with a RIB deadline
    /// still to come (stale routes of a peer that went away, MRAI,
    /// deferral), it goes on to that deadline, skipping a stretch longer
    /// than [`QUIET`] the same way.
    pub fn run(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        for m in 0..self.members.len() {
            self.drain(m);
        }
        self.last_activity = self.now;
        while let Some(at) = self.next_due() {
            let idle_until = (self.last_activity + QUIET).min(end);
            if at >= self.last_activity + IDLE && at < idle_until && self.now < idle_until {
                // Nothing but timers for IDLE: the rest of the quiet wait is
                // skipped (what falls due meanwhile fires at its end).
                self.skip_to(idle_until);
                continue;
            }
            if at >= self.last_activity + QUIET {
                // Quiet, unless a RIB still has a deadline that changes
                // routes (stale routes of a peer that went away, MRAI,
                // deferral): quiet counts again from there.
                let rib_next = self
                    .members
                    .iter()
                    .filter(|m| m.alive)
                    .filter_map(|m| m.speaker.as_ref().and_then(|s| s.rib().poll_timeout()))
                    .min();
                match rib_next {
                    Some(t) if t < end && t > self.last_activity => {
                        if t > self.now + QUIET {
                            // Nothing but keepalives until then.
                            self.skip_to(t);
                        }
                        self.last_activity = t;
                        continue;
                    }
                    // Due already: its timer is queued; go on.
                    Some(t) if t < end => {}
                    _ => {
                        self.now = self.now.max(self.last_activity + QUIET).min(end);
                        return rib_next.is_none();
                    }
                }
            }
            if at > end {
                self.now = end;
                return false;
            }
            let Some((at, d)) = self.pop_due() else { break };
            self.now = self.now.max(at);
            if matches!(d.concerns(&self.links), Concerns::Fabric) {
                self.deliveries += 1;
                self.deliver(d);
            } else {
                self.window(at, d, end);
            }
        }
        true
    }
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("elapsed", &self.elapsed())
            .field("members", &self.members.len())
            .field("links", &self.links.iter().flatten().count())
            .finish()
    }
}
