//! The BFD task's state and run loop: the sessions by peer, demultiplexing (RFC 5880
//! §6.8.6), the timer queue, what is reported to the daemon and to `show bfd`, and the
//! slow-down before a restart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bgpd_proto::bfd::{BfdConfig, BfdEvent, BfdSession, ControlPacket, Discard, State};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::socket::{rx_socket, tx_socket, Datagram, Listener};
use super::{
    BfdCmd, BfdNotice, BfdPeer, BfdStatus, BfdView, ResumeRecord, MULTIHOP_PORT, RESTART_POLL_WAIT, RESTART_TX,
    SINGLE_HOP_PORT,
};
use crate::daemon::progress::Progress;
use crate::daemon::status::Shared;

pub(super) struct Sess {
    pub(super) peer: BfdPeer,
    pub(super) bfd: BfdSession,
    socket: Option<std::net::UdpSocket>,
    error: Option<String>,
    /// The deadline this session has in the timer queue, if any.
    pub(super) scheduled: Option<Instant>,
}

pub(super) struct Task {
    /// Records of the previous run to resume, until the deadline.
    pub(super) resume: BTreeMap<String, ResumeRecord>,
    pub(super) resume_until: Option<Instant>,
    /// A restart being prepared: answered when the Poll sequences are done.
    restart: Option<(oneshot::Sender<Vec<ResumeRecord>>, Instant)>,
    pub(super) sessions: BTreeMap<String, Sess>,
    pub(super) by_discr: HashMap<u32, String>,
    /// Every session's next deadline (entries that no longer match the
    /// session's `scheduled` are stale and skipped): a wakeup touches only
    /// the sessions that are due, not all of them.
    pub(super) timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Sessions touched since the last drive (a packet, a configuration).
    dirty: Vec<String>,
    /// Listeners opened, by (IPv6, multihop).
    pub(super) listening: HashMap<(bool, bool), ()>,
    /// Listeners opened since the run loop last took them.
    new_listeners: Vec<Listener>,
    notices: mpsc::UnboundedSender<BfdNotice>,
    pub(super) discarded: BTreeMap<String, u64>,
    errors: Vec<String>,
}

pub(super) async fn run(
    mut cmds: mpsc::UnboundedReceiver<BfdCmd>,
    progress: std::sync::Arc<Progress>,
    shared: Shared,
    notices: mpsc::UnboundedSender<BfdNotice>,
) {
    let mut t = Task::new(notices);
    // The listeners are read here, in the task's own wakeup: no hop through
    // another task per packet.
    let mut listeners: Vec<Listener> = Vec::new();
    let mut published = Instant::now();
    loop {
        let restart = t.restart.as_ref().map(|(_, d)| *d);
        let deadline = t.next_deadline().into_iter().chain(restart).min();
        listeners.append(&mut t.new_listeners);
        let readable = std::future::poll_fn(|cx| {
            // Every listener's readiness is polled so that each registers its waker.
            let ready = listeners.iter().filter(|l| l.sock.poll_recv_ready(cx).is_ready()).count();
            if ready > 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        tokio::select! {
            cmd = cmds.recv() => match cmd.inspect(|_| progress.done(1)) {
                None => break,
                Some(BfdCmd::Set(peers)) => t.set(peers),
                Some(BfdCmd::AdminDownAll(done)) => {
                    let now = Instant::now();
                    for (name, s) in t.sessions.iter_mut() {
                        s.bfd.set_admin_down(now, true);
                        t.dirty.push(name.clone());
                    }
                    t.drive(now);
                    let _ = done.send(());
                }
                Some(BfdCmd::PrepareRestart(reply)) => t.prepare_restart(reply),
                Some(BfdCmd::Resume(records, deadline)) => {
                    t.resume = records.into_iter().map(|r| (r.peer.clone(), r)).collect();
                    t.resume_until = Some(deadline);
                }
            },
            _ = readable => {
                // Everything already waiting, in this one wakeup.
                for l in &listeners {
                    l.drain(|d| t.receive(d));
                }
            }
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            } } => {}
        }
        let changed = t.drive(Instant::now());
        t.restart_ready(Instant::now());
        if changed || published.elapsed() >= Duration::from_millis(500) {
            t.publish(&shared);
            published = Instant::now();
        }
    }
}

impl Task {
    pub(super) fn new(notices: mpsc::UnboundedSender<BfdNotice>) -> Task {
        Task {
            resume: BTreeMap::new(),
            resume_until: None,
            restart: None,
            sessions: BTreeMap::new(),
            by_discr: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            listening: HashMap::new(),
            new_listeners: Vec::new(),
            notices,
            discarded: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Applies the wanted set: new sessions, changed timers (a Poll
    /// sequence, no reset), gone sessions (AdminDown sent first).
    pub(super) fn set(&mut self, peers: Vec<BfdPeer>) {
        let now = Instant::now();
        let gone: Vec<String> =
            self.sessions.keys().filter(|n| !peers.iter().any(|p| &p.name == *n)).cloned().collect();
        for name in gone {
            if let Some(mut s) = self.sessions.remove(&name) {
                s.bfd.set_admin_down(now, true);
                send_all(&mut s, now);
                self.by_discr.remove(&s.bfd.local_discr());
                info!(peer = %name, "BFD session removed");
            }
        }
        for p in peers {
            match self.sessions.get_mut(&p.name) {
                Some(s) if s.peer.addr == p.addr && s.peer.multihop == p.multihop && s.peer.local == p.local => {
                    if s.peer.config != p.config {
                        if let Err(e) = s.bfd.set_config(now, p.config) {
                            warn!(peer = %p.name, "BFD: invalid timers: {e}");
                        }
                        self.dirty.push(p.name.clone());
                    }
                    s.peer = p;
                }
                _ => {
                    if let Some(mut old) = self.sessions.remove(&p.name) {
                        old.bfd.set_admin_down(now, true);
                        send_all(&mut old, now);
                        self.by_discr.remove(&old.bfd.local_discr());
                    }
                    self.listen(p.addr.is_ipv6(), p.multihop);
                    let resumed = self.resumable(&p, now);
                    let discr = resumed.as_ref().map_or_else(|| self.new_discriminator(), |r| r.session.local_discr);
                    let session = match &resumed {
                        Some(r) => {
                            info!(peer = %p.name, "BFD session resumed from the previous run (Up, same discriminators)");
                            BfdSession::resume(p.config, &r.session, fastrand::u64(..), now)
                        }
                        None => BfdSession::new(p.config, discr, fastrand::u64(..), now),
                    };
                    match session {
                        Ok(bfd) => {
                            let (socket, error) = match tx_socket(p.addr, p.local) {
                                Ok(s) => (Some(s), None),
                                Err(e) => (None, Some(format!("cannot open the sending socket: {e}"))),
                            };
                            info!(peer = %p.name, addr = %p.addr, multihop = p.multihop, "BFD session added");
                            self.by_discr.insert(discr, p.name.clone());
                            self.dirty.push(p.name.clone());
                            let sess = Sess { peer: p, bfd, socket, error, scheduled: None };
                            self.sessions.insert(sess.peer.name.clone(), sess);
                        }
                        Err(e) => warn!(peer = %p.name, "BFD: invalid timers: {e}"),
                    }
                }
            }
        }
    }

    /// Slows every session Up down for a restart (see [`BfdCmd::PrepareRestart`]).
    pub(super) fn prepare_restart(&mut self, reply: oneshot::Sender<Vec<ResumeRecord>>) {
        let now = Instant::now();
        for (name, s) in self.sessions.iter_mut().filter(|(_, s)| s.bfd.state() == State::Up) {
            self.dirty.push(name.clone());
            let mult = (s.peer.restart_window.as_secs() / RESTART_TX.as_secs()).clamp(3, 255) as u8;
            let slow = BfdConfig { desired_min_tx: RESTART_TX, detect_mult: mult, ..*s.bfd.config() };
            if let Err(e) = s.bfd.set_config(now, slow) {
                warn!(peer = %s.peer.name, "BFD: cannot slow down for the restart: {e}");
            }
        }
        self.restart = Some((reply, now + RESTART_POLL_WAIT));
        self.restart_ready(now);
    }

    /// Answers a restart being prepared once no Poll is pending (or at its deadline).
    pub(super) fn restart_ready(&mut self, now: Instant) {
        let Some((_, deadline)) = &self.restart else { return };
        let pending = self.sessions.values().any(|s| s.bfd.state() == State::Up && s.bfd.poll_pending());
        if pending && now < *deadline {
            return;
        }
        let Some((reply, _)) = self.restart.take() else { return };
        // A session whose Final did not come may still have been heard: kept too.
        let records: Vec<ResumeRecord> =
            self.sessions.values().filter_map(|s| s.bfd.snapshot().map(|r| ResumeRecord::of(&s.peer, r))).collect();
        info!("BFD: {} of {} sessions slowed down to be resumed after the restart", records.len(), self.sessions.len());
        let _ = reply.send(records);
    }

    /// The previous run's session for `p`, if it may be resumed now.
    fn resumable(&mut self, p: &BfdPeer, now: Instant) -> Option<ResumeRecord> {
        if self.resume_until.is_none_or(|d| now > d) {
            self.resume.clear();
            return None;
        }
        let r = self.resume.remove(&p.name)?;
        let same = r.addr == p.addr && r.multihop == p.multihop && !self.by_discr.contains_key(&r.session.local_discr);
        same.then_some(r)
    }

    fn new_discriminator(&self) -> u32 {
        loop {
            let d = fastrand::u32(1..);
            if !self.by_discr.contains_key(&d) {
                return d;
            }
        }
    }

    /// Opens the listener for (family, kind) once.
    fn listen(&mut self, v6: bool, multihop: bool) {
        if self.listening.contains_key(&(v6, multihop)) {
            return;
        }
        self.listening.insert((v6, multihop), ());
        let port = if multihop { MULTIHOP_PORT } else { SINGLE_HOP_PORT };
        match rx_socket(v6, port) {
            Ok(sock) => self.new_listeners.push(Listener { sock, multihop }),
            Err(e) => {
                let what = format!("cannot listen on UDP {port} ({}): {e}", if v6 { "IPv6" } else { "IPv4" });
                warn!("BFD: {what}");
                self.errors.push(what);
            }
        }
    }

    /// A datagram from a listener: checked, demultiplexed (RFC 5880
    /// §6.8.6: by Your Discriminator, else by the sender's address) and given
    /// to its session.
    pub(super) fn receive(&mut self, d: &Datagram) {
        self.receive_at(d, Instant::now());
    }

    pub(super) fn receive_at(&mut self, d: &Datagram, now: Instant) {
        let outcome = ControlPacket::decode(&d.bytes[..d.len]).and_then(|p| {
            // RFC 5881 §5: single-hop packets only with TTL 255 (GTSM).
            if !d.multihop && d.ttl != Some(255) {
                return Err(Discard::Ttl);
            }
            let from = canonical(d.from.ip());
            let name = if p.your_discr != 0 {
                self.by_discr.get(&p.your_discr).cloned().ok_or(Discard::UnknownDiscriminator)?
            } else {
                self.sessions
                    .iter()
                    .find(|(_, s)| s.peer.addr == from && s.peer.multihop == d.multihop)
                    .map(|(n, _)| n.clone())
                    .ok_or(Discard::UnknownPeer)?
            };
            let s = self.sessions.get_mut(&name).ok_or(Discard::UnknownPeer)?;
            if s.peer.addr != from || s.peer.multihop != d.multihop {
                return Err(Discard::UnknownPeer);
            }
            s.bfd.handle_packet(now, &p)?;
            self.dirty.push(name);
            Ok(())
        });
        if let Err(why) = outcome {
            debug!(from = %d.from, "BFD packet discarded: {why}");
            *self.discarded.entry(why.to_string()).or_default() += 1;
        }
    }

    /// The earliest deadline in the timer queue (stale entries dropped);
    /// now when a session was touched since the last drive.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(Instant::now());
        }
        while let Some(Reverse((at, name))) = self.timers.peek() {
            if self.sessions.get(name).is_some_and(|s| s.scheduled == Some(*at)) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs the timers of the sessions that are due or were touched, sends
    /// what they have due, reports their state changes and queues their next
    /// deadlines; true when a state changed.
    pub(super) fn drive(&mut self, now: Instant) -> bool {
        let mut due = std::mem::take(&mut self.dirty);
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, name))) = self.timers.pop() else { break };
            if let Some(s) = self.sessions.get_mut(&name).filter(|s| s.scheduled == Some(at)) {
                s.scheduled = None;
                due.push(name);
            }
        }
        due.sort_unstable();
        due.dedup();
        let mut changed = false;
        for name in due {
            let Some(s) = self.sessions.get_mut(&name) else { continue };
            s.bfd.handle_timeout(now);
            send_all(s, now);
            while let Some(BfdEvent::StateChanged { from, to, diag, path_failure }) = s.bfd.poll_event() {
                changed = true;
                info!(peer = %s.peer.name, addr = %s.peer.addr, "BFD {from} -> {to} ({diag})");
                let notice = match (from, to) {
                    (_, State::Up) => {
                        Some(BfdNotice { peer: s.peer.name.clone(), up: true, failure: false, diag: diag.to_string() })
                    }
                    (State::Up, State::Down) => Some(BfdNotice {
                        peer: s.peer.name.clone(),
                        up: false,
                        failure: path_failure,
                        diag: diag.to_string(),
                    }),
                    _ => None,
                };
                if let Some(n) = notice {
                    let _ = self.notices.send(n);
                }
            }
            let next = s.bfd.poll_timeout();
            if next != s.scheduled {
                s.scheduled = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, name)));
                }
            }
        }
        changed
    }

    fn publish(&self, shared: &Shared) {
        let now = Instant::now();
        let sessions = self
            .sessions
            .iter()
            .map(|(name, s)| {
                let v = s.bfd.view();
                let up_since = v.up_since.map(|t| {
                    let at = SystemTime::now() - now.saturating_duration_since(t);
                    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                });
                let status = BfdStatus {
                    peer: name.clone(),
                    address: s.peer.addr,
                    kind: if s.peer.multihop { "multihop" } else { "single-hop" },
                    interface: s.peer.interface.clone(),
                    state: v.state,
                    remote_state: v.remote_state,
                    local_discr: v.local_discr,
                    remote_discr: v.remote_discr,
                    tx_interval_ms: v.tx_interval.as_millis() as u64,
                    rx_interval_ms: v.rx_interval.as_millis() as u64,
                    detection_time_ms: v.detection_time.as_millis() as u64,
                    multiplier: s.bfd.config().detect_mult,
                    up_since,
                    diag: v.diag.to_string(),
                    remote_diag: v.remote_diag.to_string(),
                    flaps: v.stats.flaps,
                    received: v.stats.received,
                    sent: v.stats.sent,
                    error: s.error.clone(),
                };
                (name.clone(), status)
            })
            .collect();
        shared.lock().bfd = BfdView { sessions, discarded: self.discarded.clone(), errors: self.errors.clone() };
    }
}

/// Sends every packet the session has due; a socket that cannot take one
/// now drops it (BFD tolerates a lost packet; the next one follows).
fn send_all(s: &mut Sess, now: Instant) {
    let port = if s.peer.multihop { MULTIHOP_PORT } else { SINGLE_HOP_PORT };
    let to = SocketAddr::new(s.peer.addr, port);
    while let Some(p) = s.bfd.poll_transmit(now) {
        let Some(sock) = &s.socket else { continue };
        match sock.send_to(&p.encode(), to) {
            Ok(_) => s.error = None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => s.error = Some(format!("send to {to}: {e}")),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
