//! The BFD task: this node's BFD sessions (RFC 5880; the state machine is
//! `bgpd_proto::bfd`, sans-IO) on their sockets, one session per BGP peer
//! that runs BFD. Single-hop (RFC 5881): UDP port 3784, sent with TTL 255 and
//! accepted only with TTL 255, from a source port in 49152-65535 of its own per
//! session. Multihop (RFC 5883): UDP port 4784. IPv4 and IPv6.
//!
//! It runs on a thread of its own with its own runtime, so that a BFD packet
//! never waits behind a full-table UPDATE burst of the RIB or a peer task.
//! The daemon gives it the whole set of sessions wanted ([`BfdCmd::Set`],
//! diffed here) and hears back when a session comes up or fails
//! ([`BfdNotice`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use bgpd_proto::bfd::{BfdConfig, BfdEvent, BfdResume, BfdSession, ControlPacket, Discard, State};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::spec::{NodeSpec, PeerSpec};
use super::status::Shared;
use crate::datastore::{BfdInterface, BfdMode};

/// The single-hop BFD port (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// The multihop BFD port (RFC 5883 §5).
pub const MULTIHOP_PORT: u16 = 4784;
/// Datagrams read from one listener in one wakeup at most.
const MAX_READS_PER_WAKEUP: usize = 256;

/// One BFD session the daemon wants: with the BGP peer `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdPeer {
    /// The BGP peer's name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// The BGP session's source address, which BFD sends from too (the
    /// remote matches a session by it); the routed source when not set.
    pub local: Option<IpAddr>,
    /// Multihop (RFC 5883) rather than single-hop.
    pub multihop: bool,
    /// Timers.
    pub config: BfdConfig,
    /// The interface the peer is on, when known (for `show bfd`).
    pub interface: Option<String>,
    /// How long a restart of bgpd may keep the session alive at the remote
    /// (the BGP restart time: as long as the peer keeps the routes).
    pub restart_window: Duration,
}

/// A session Up carried across a restart of bgpd (in the restart marker):
/// the remote keeps it Up if the new run resumes it within its detection
/// time, which the old run stretched before stopping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// The BGP peer.
    pub peer: String,
    /// Its address.
    pub addr: IpAddr,
    /// Multihop.
    pub multihop: bool,
    /// The session's state.
    #[serde(flatten)]
    pub session: BfdResume,
}

impl ResumeRecord {
    fn of(peer: &BfdPeer, session: BfdResume) -> ResumeRecord {
        ResumeRecord { peer: peer.name.clone(), addr: peer.addr, multihop: peer.multihop, session }
    }

    /// How long after the old run stopped the remote still holds the session.
    pub fn remote_detection_time(&self) -> Duration {
        self.session.remote_detection_time()
    }
}

/// The transmit interval a session slows down to before a restart; the
/// multiplier makes the remote's detection time the restart window (up to
/// 255 of these).
const RESTART_TX: Duration = Duration::from_secs(1);

/// How long a restart waits for the remotes' Finals to the slow-down.
const RESTART_POLL_WAIT: Duration = Duration::from_secs(1);

/// What the BFD task is told.
#[derive(Debug)]
pub enum BfdCmd {
    /// The sessions wanted now (all of them: the others go).
    Set(Vec<BfdPeer>),
    /// bgpd stops for good (a decommission, a deliberate stop): every
    /// session tells its remote it is AdminDown (RFC 5882 §3.2: not a path
    /// failure); answered once sent.
    AdminDownAll(oneshot::Sender<()>),
    /// bgpd stops for a restart: every session Up slows down (a Poll
    /// sequence to [`RESTART_TX`] and a multiplier that makes the remote's
    /// detection time the restart window), and once the remotes have
    /// answered (or after [`RESTART_POLL_WAIT`]) the sessions are answered
    /// as records for the next run to resume.
    PrepareRestart(oneshot::Sender<Vec<ResumeRecord>>),
    /// The previous run's sessions (a restart): sessions [`BfdCmd::Set`]
    /// creates for the same peer and address resume them, until `deadline`.
    Resume(Vec<ResumeRecord>, Instant),
}

/// A BFD session came up or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdNotice {
    /// The BGP peer.
    pub peer: String,
    /// Up, or down.
    pub up: bool,
    /// Down by a failure of the path (detection time, or the remote saw it
    /// fail), not because the remote said AdminDown (RFC 5882 §3.2).
    pub failure: bool,
    /// Why, for the log.
    pub diag: String,
}

/// Sends to the BFD task.
#[derive(Clone, Debug)]
pub struct BfdHandle(super::progress::Tracked<BfdCmd>);

impl BfdHandle {
    /// Sends a command (the task lives as long as the daemon).
    pub fn send(&self, cmd: BfdCmd) {
        self.0.send(cmd);
    }
}

/// `show bfd`: one session.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BfdStatus {
    /// The BGP peer.
    pub peer: String,
    /// Its address.
    pub address: IpAddr,
    /// `single-hop` or `multihop`.
    pub kind: &'static str,
    /// The interface it is on, when known.
    pub interface: Option<String>,
    /// The session's state.
    pub state: String,
    /// The remote's state.
    pub remote_state: String,
    /// Local discriminator.
    pub local_discr: u32,
    /// Remote discriminator (0: not known).
    pub remote_discr: u32,
    /// The negotiated transmit interval, ms.
    pub tx_interval_ms: u64,
    /// The negotiated receive interval, ms.
    pub rx_interval_ms: u64,
    /// The detection time, ms.
    pub detection_time_ms: u64,
    /// The multiplier this side sends.
    pub multiplier: u8,
    /// Since when Up (Unix seconds).
    pub up_since: Option<u64>,
    /// The last local diagnostic.
    pub diag: String,
    /// The remote's diagnostic.
    pub remote_diag: String,
    /// Times it left Up.
    pub flaps: u64,
    /// Packets received, sent.
    pub received: u64,
    /// Packets sent.
    pub sent: u64,
    /// A problem with its sockets, if any.
    pub error: Option<String>,
}

#[cfg(test)]
impl BfdStatus {
    /// An Up single-hop session with `peer` at 10.0.0.2, for tests.
    pub fn example(peer: &str) -> BfdStatus {
        BfdStatus {
            peer: peer.into(),
            address: "10.0.0.2".parse().unwrap(),
            kind: "single-hop",
            interface: Some("eth0".into()),
            state: "Up".into(),
            remote_state: "Up".into(),
            local_discr: 1,
            remote_discr: 2,
            tx_interval_ms: 300,
            rx_interval_ms: 300,
            detection_time_ms: 900,
            multiplier: 3,
            up_since: None,
            diag: "None".into(),
            remote_diag: "None".into(),
            flaps: 1,
            received: 10,
            sent: 10,
            error: None,
        }
    }
}

/// `show bfd`: every session and the packets discarded before reaching one.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BfdView {
    /// Sessions by peer name.
    pub sessions: BTreeMap<String, BfdStatus>,
    /// Packets discarded, by why (RFC 5880 §6.8.6, RFC 5881 §5).
    pub discarded: BTreeMap<String, u64>,
    /// Listening sockets that could not be opened.
    pub errors: Vec<String>,
}

/// The sessions `node` runs for `peers`: each peer whose `bgpd.io/bfd`
/// asks for BFD, or (no annotation) whose interface a BFDConfiguration
/// pattern of the node matches, with that pattern's timers.
pub fn sessions_for<'a>(node: &NodeSpec, peers: impl Iterator<Item = &'a PeerSpec>) -> Vec<BfdPeer> {
    sessions_on(node, peers, &connected_networks())
}

/// [`sessions_for`] with the host's connected networks given: (interface,
/// this host's address with the network's prefix length).
pub fn sessions_on<'a>(
    node: &NodeSpec,
    peers: impl Iterator<Item = &'a PeerSpec>,
    networks: &[(String, ipnet::IpNet)],
) -> Vec<BfdPeer> {
    let mut out = Vec::new();
    for p in peers {
        let addr = p.addr.ip();
        // The interface the peer is reached through: the longest connected network holding it.
        let connected = networks.iter().filter(|(_, net)| net.contains(&addr)).max_by_key(|(_, net)| net.prefix_len());
        let interface = connected.map(|(name, _)| name.clone());
        let matched = BfdInterface::best(&node.bfd_interfaces, interface.as_deref());
        let (multihop, config) = match (p.bfd, matched) {
            (BfdMode::Off, _) => continue,
            // Single-hop only for a peer on a connected network.
            (BfdMode::Auto, Some(i)) if interface.is_some() => (false, config_of(i)),
            (BfdMode::Auto, _) => continue,
            (BfdMode::On, i) => (false, i.map_or_else(BfdConfig::default, config_of)),
            (BfdMode::Multihop, i) => (true, i.map_or_else(BfdConfig::default, config_of)),
        };
        // Single-hop: from this host's address on the shared network (RFC
        // 5881 sessions are between the two interfaces; the remote knows us by
        // that address, even where BGP runs from the node's IP). Multihop: from
        // the BGP session's source.
        let local = match (multihop, connected) {
            (false, Some((_, net))) => Some(net.addr()),
            _ => p.source.filter(|l| l.is_ipv4() == addr.is_ipv4()),
        };
        let restart_window = Duration::from_secs(u64::from(p.restart_time.unwrap_or(120)));
        out.push(BfdPeer { name: p.name.clone(), addr, local, multihop, config, interface, restart_window });
    }
    out
}

/// A BFDConfiguration interface's timers as a session's configuration.
pub fn config_of(i: &BfdInterface) -> BfdConfig {
    BfdConfig {
        desired_min_tx: i.minimum_send_interval,
        required_min_rx: i.minimum_recv_interval,
        detect_mult: i.multiplier,
        idle_tx: i.idle_send_interval.max(bgpd_proto::bfd::MIN_IDLE_TX),
        passive: false,
    }
}

/// This host's interface addresses with their prefix lengths: (interface, address/len).
fn connected_networks() -> Vec<(String, ipnet::IpNet)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else { continue };
        let net = match (addr.as_sockaddr_in(), mask.as_sockaddr_in(), addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (Some(a), Some(m), _, _) => {
                let len = u32::from(m.ip()).leading_ones() as u8;
                ipnet::Ipv4Net::new(a.ip(), len).ok().map(ipnet::IpNet::V4)
            }
            (_, _, Some(a), Some(m)) => {
                let len = u128::from(m.ip()).leading_ones() as u8;
                ipnet::Ipv6Net::new(a.ip(), len).ok().map(ipnet::IpNet::V6)
            }
            _ => None,
        };
        if let Some(net) = net.filter(|n| n.prefix_len() > 0) {
            out.push((a.interface_name, net));
        }
    }
    out
}

/// Starts the BFD task on a thread of its own.
pub fn spawn(shared: Shared, notices: mpsc::UnboundedSender<BfdNotice>) -> anyhow::Result<BfdHandle> {
    let (tx, rx, progress) = super::progress::channel("bfd");
    shared.lock().tasks.push(progress.clone());
    std::thread::Builder::new().name("bfd".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                warn!("BFD: cannot start its runtime: {e}");
                return;
            }
        };
        rt.block_on(run(rx, progress, shared, notices));
    })?;
    Ok(BfdHandle(tx))
}

/// A received datagram: its bytes, sender, TTL or hop limit, and on which port.
struct Datagram {
    bytes: [u8; 64],
    len: usize,
    from: SocketAddr,
    ttl: Option<u8>,
    multihop: bool,
}

struct Sess {
    peer: BfdPeer,
    bfd: BfdSession,
    socket: Option<std::net::UdpSocket>,
    error: Option<String>,
    /// The deadline this session has in the timer queue, if any.
    scheduled: Option<Instant>,
}

struct Task {
    /// Records of the previous run to resume, until the deadline.
    resume: BTreeMap<String, ResumeRecord>,
    resume_until: Option<Instant>,
    /// A restart being prepared: answered when the Poll sequences are done.
    restart: Option<(oneshot::Sender<Vec<ResumeRecord>>, Instant)>,
    sessions: BTreeMap<String, Sess>,
    by_discr: HashMap<u32, String>,
    /// Every session's next deadline (entries that no longer match the
    /// session's `scheduled` are stale and skipped): a wakeup touches only
    /// the sessions that are due, not all of them.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Sessions touched since the last drive (a packet, a configuration).
    dirty: Vec<String>,
    /// Listeners opened, by (IPv6, multihop).
    listening: HashMap<(bool, bool), ()>,
    /// Listeners opened since the run loop last took them.
    new_listeners: Vec<Listener>,
    notices: mpsc::UnboundedSender<BfdNotice>,
    discarded: BTreeMap<String, u64>,
    errors: Vec<String>,
}

async fn run(
    mut cmds: mpsc::UnboundedReceiver<BfdCmd>,
    progress: std::sync::Arc<super::progress::Progress>,
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
    fn new(notices: mpsc::UnboundedSender<BfdNotice>) -> Task {
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
    fn set(&mut self, peers: Vec<BfdPeer>) {
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
    fn prepare_restart(&mut self, reply: oneshot::Sender<Vec<ResumeRecord>>) {
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
    fn restart_ready(&mut self, now: Instant) {
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
    fn receive(&mut self, d: &Datagram) {
        self.receive_at(d, Instant::now());
    }

    fn receive_at(&mut self, d: &Datagram, now: Instant) {
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
    fn next_deadline(&mut self) -> Option<Instant> {
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
    fn drive(&mut self, now: Instant) -> bool {
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
                    state: v.state.to_string(),
                    remote_state: v.remote_state.to_string(),
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

/// A session's sending socket: its own source port in 49152-65535 (RFC
/// 5881 §4), TTL / hop limit 255, from `local` when given.
fn tx_socket(peer: IpAddr, local: Option<IpAddr>) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = peer.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let unspecified: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    let any = local.unwrap_or(unspecified);
    let start = fastrand::u16(49152..=65535);
    let mut last = io::Error::other("no free source port in 49152-65535");
    for i in 0..16384u16 {
        let port = 49152 + (start - 49152 + i) % 16384;
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            s.set_only_v6(true)?;
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
        match s.bind(&SocketAddr::new(any, port).into()) {
            Ok(()) => {
                s.set_nonblocking(true)?;
                return Ok(s.into());
            }
            // The session's source address is not (or no longer) on this host:
            // the routed source, as the BGP session would have.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && local.is_some() => return tx_socket(peer, None),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A listening socket on `port` that reports each datagram's TTL / hop limit.
fn rx_socket(v6: bool, port: u16) -> io::Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    let any: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    if v6 {
        s.set_only_v6(true)?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    } else {
        setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    }
    s.bind(&SocketAddr::new(any, port).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A listening socket (RFC 5881 single-hop or RFC 5883 multihop port).
struct Listener {
    sock: tokio::net::UdpSocket,
    multihop: bool,
}

impl Listener {
    /// Reads every datagram waiting, with its TTL (a bounded number per
    /// wakeup, so that timers are never starved by a flood).
    fn drain(&self, mut each: impl FnMut(&Datagram)) {
        for _ in 0..MAX_READS_PER_WAKEUP {
            match self.sock.try_io(tokio::io::Interest::READABLE, || recv_with_ttl(&self.sock)) {
                Ok(mut d) => {
                    d.multihop = self.multihop;
                    each(&d);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("BFD receive: {e}");
                    return;
                }
            }
        }
    }
}

fn recv_with_ttl(sock: &tokio::net::UdpSocket) -> io::Result<Datagram> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut bytes = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let (len, ttl, from) = {
        let mut iov = [io::IoSliceMut::new(&mut bytes)];
        let msg = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let mut ttl = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).ok(),
                    _ => {}
                }
            }
        }
        let from = msg.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port())))
        });
        (msg.bytes, ttl, from)
    };
    let from = from.ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    Ok(Datagram { bytes, len: len.min(64), from, ttl, multihop: false })
}

#[cfg(test)]
mod tests;
