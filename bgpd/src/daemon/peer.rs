//! One task per peer: it owns the peer's [`Session`], its connection and
//! its timers, and reports to the shared status. A slow or stuck peer only
//! ever blocks its own task: writes go through a writer task of their own.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bgpd_proto::session::{DownReason, GracefulRestartConfig, Negotiated, Session, SessionConfig};
use bgpd_proto::speaker::{ConnId, Initiator, Peer, PeerEvent};
use bgpd_proto::wire::AddPathMode;
use bytes::{Buf, Bytes};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::rib::{session_info, RibCmd, RibHandle, RibOut};
use super::sockopt;
use super::spec::{NodeSpec, PeerSpec};
use super::status::{state_name, PeerStatus, PeerView, Shared};

/// What the daemon tells a peer task.
#[derive(Debug)]
pub enum PeerCmd {
    /// The listener accepted a connection from this peer.
    Accepted(TcpStream),
    /// Stop: send Cease with this subcode (and shutdown communication) and end the task.
    Stop(u8, Option<String>),
    /// Stop because bgpd restarts: the peer must keep our routes as a
    /// graceful restart helper (no NOTIFICATION, or with the N bit an
    /// Administrative Reset); end the task.
    Restart,
    /// The BFD session with the peer came up, or went down (`failure`: by a
    /// failure of the path, not because the remote said AdminDown).
    Bfd {
        /// Up.
        up: bool,
        /// Down by a failure.
        failure: bool,
    },
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// UPDATEs of one peer handed to the RIB and not applied yet, at most.
/// The socket is read only while fewer are (and a drain of the socket stops
/// there too), so a peer that sends faster than the RIB applies is slowed
/// down by TCP instead of growing bgpd's memory.
pub const MAX_UPDATES_IN_FLIGHT: usize = 2048;

/// UPDATEs of all peers together handed to the RIB and not applied yet, at
/// most: a hundred peers flooding at once must not queue a hundred times the
/// per-peer limit (`bench chaos`, malformed flood: 703 MiB before this bound).
pub const MAX_UPDATES_IN_FLIGHT_ALL: usize = 16_384;

/// While the node-wide limit is reached, how often a peer task looks again.
const ALL_FULL_RETRY: Duration = Duration::from_millis(10);

/// The node's UPDATEs in flight to the RIB (see [`MAX_UPDATES_IN_FLIGHT_ALL`]);
/// one per RIB, shared by every peer's [`Credit`].
#[derive(Debug, Default)]
pub struct Budget {
    in_flight: AtomicUsize,
}

impl Budget {
    fn room(&self) -> usize {
        MAX_UPDATES_IN_FLIGHT_ALL.saturating_sub(self.in_flight.load(Ordering::Acquire))
    }
}

/// The peer's UPDATEs in flight to the RIB (see [`MAX_UPDATES_IN_FLIGHT`]).
#[derive(Debug)]
pub struct Credit {
    in_flight: AtomicUsize,
    resumed: tokio::sync::Notify,
    all: Arc<Budget>,
}

impl Credit {
    fn new(all: Arc<Budget>) -> Credit {
        Credit { in_flight: AtomicUsize::new(0), resumed: tokio::sync::Notify::new(), all }
    }

    /// How many more UPDATEs may be decoded now: the smaller of what is left
    /// of the peer's limit and of the node's.
    fn room(&self) -> usize {
        MAX_UPDATES_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Acquire)).min(self.all.room())
    }

    /// Whether the socket may be read now.
    fn open(&self) -> bool {
        self.room() > 0
    }

    /// Whether the peer's own limit is what keeps its socket unread (it is
    /// woken at half); otherwise the node's is (it looks again shortly).
    fn own_limit(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= MAX_UPDATES_IN_FLIGHT
    }

    /// One more UPDATE in flight, until the returned guard is dropped.
    fn take(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.all.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// An UPDATE in flight to the RIB: dropped once the RIB applied it.
#[derive(Debug)]
pub struct InFlight(Arc<Credit>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.all.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Reading resumes when half the limit is applied (no wakeup per UPDATE).
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == MAX_UPDATES_IN_FLIGHT / 2 + 1 {
            self.0.resumed.notify_one();
        }
    }
}

/// A connection to the peer. Writes go straight from the peer task; what
/// the socket cannot take yet waits in `pending` until it is writable. A
/// peer that stops reading keeps the session alive with its own keepalives,
/// so its hold timer never fires: the send hold timer (RFC 9687) closes the
/// connection when nothing could be written for [`send_hold_time`].
struct Conn {
    stream: TcpStream,
    pending: VecDeque<Bytes>,
    /// The bytes in `pending`.
    pending_bytes: usize,
    local: SocketAddr,
    /// Since when the socket has taken nothing of what is pending.
    blocked_since: Option<Instant>,
}

impl Conn {
    /// Closes the connection in the background: what is queued is written,
    /// the write side is shut down, and what the peer still sends is read
    /// and dropped until it closes (at most 2 s). Closing a socket with
    /// unread data makes the kernel answer with a reset, which can destroy
    /// a NOTIFICATION the peer has not read yet.
    fn linger(self) {
        let Conn { mut stream, mut pending, .. } = self;
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                for b in pending.drain(..) {
                    if stream.write_all(&b).await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }

    /// Writes what the socket takes now, up to 128 messages per system call
    /// (a table of small UPDATEs would otherwise cost a `send` each);
    /// `Err` when the connection failed.
    fn write_pending(&mut self) -> io::Result<()> {
        const BATCH: usize = 128;
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        while !self.pending.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); BATCH];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(self.pending.iter()) {
                *slot = io::IoSlice::new(b);
                count += 1;
            }
            match self.stream.try_write_vectored(&slices[..count]) {
                Ok(mut n) => {
                    if n > 0 {
                        self.blocked_since = None;
                    }
                    while n > 0 {
                        let Some(front) = self.pending.front_mut() else { break };
                        if n >= front.len() {
                            n -= front.len();
                            self.pending_bytes -= front.len();
                            self.pending.pop_front();
                        } else {
                            front.advance(n);
                            self.pending_bytes -= n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.blocked_since = None;
        Ok(())
    }
}

/// RFC 9687's SendHoldTime: 8 minutes or twice the negotiated hold time,
/// whichever is longer (the RFC's recommended value).
fn send_hold_time(session: &Session) -> Duration {
    let hold = session.negotiated().map_or(0, |n| u64::from(n.hold_time));
    Duration::from_secs(hold * 2).max(Duration::from_secs(8 * 60))
}

/// Builds the session configuration for `peer` on `node`.
pub fn session_config(node: &NodeSpec, peer: &PeerSpec) -> SessionConfig {
    let mut c = SessionConfig::new(peer.local_as, peer.peer_as, node.router_id);
    c.hold_time = peer.hold_time;
    c.keepalive_time = peer.keepalive;
    c.passive = peer.passive;
    c.hostname = Some(node.name.clone());
    c.families = peer.families.clone();
    c.extended_next_hop = peer.extended_next_hop;
    // After a restart of bgpd, the R bit; forwarding is preserved for both
    // families when the kernel kept it (what bgpd originates is forwarded by
    // the kernel without it), see marker.rs.
    c.graceful_restart = peer.restart_time.map(|t| GracefulRestartConfig {
        restart_time: t.min(4095),
        restarting: node.restart.restarting,
        forwarding_preserved: if node.restart.forwarding { peer.families.clone() } else { Vec::new() },
        notification: peer.graceful_notification,
        long_lived_stale_time: peer.long_lived_stale_time,
    });
    let mode = match peer.add_path {
        (true, true) => Some(AddPathMode::BOTH),
        (true, false) => Some(AddPathMode::RECEIVE),
        (false, true) => Some(AddPathMode::SEND),
        (false, false) => None,
    };
    if let Some(m) = mode {
        c.add_path = peer.families.iter().map(|f| (*f, m)).collect();
    }
    c
}

/// The peer task's channels: commands from the daemon, the RIB's handle and
/// what the RIB sends this peer.
pub struct Links {
    /// Commands from the daemon.
    pub cmds: mpsc::Receiver<Box<PeerCmd>>,
    /// The RIB task.
    pub rib: RibHandle,
    /// This peer's key at the RIB.
    pub key: u64,
    /// What the RIB sends this peer.
    pub from_rib: mpsc::UnboundedReceiver<RibOut>,
    /// What waits towards the peer (shared with the RIB task).
    pub queue: Arc<super::rib::OutQueue>,
}

/// The peer task's connections: at most two at a time (the session's, and
/// the second one of a collision), each named by the [`Peer`] that took it.
#[derive(Default)]
struct Conns(Vec<(ConnId, Conn)>);

impl Conns {
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.0.iter_mut().find(|(i, _)| *i == id).map(|(_, c)| c)
    }

    fn at(&self, i: usize) -> Option<&(ConnId, Conn)> {
        self.0.get(i)
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let pos = self.0.iter().position(|(i, _)| *i == id)?;
        Some(self.0.remove(pos).1)
    }

    /// When the send hold timer of the connection blocked longest expires.
    fn send_hold_deadline(&self, peer: &Peer) -> Option<(ConnId, Instant)> {
        let hold = send_hold_time(peer.session());
        self.0.iter().filter_map(|(id, c)| c.blocked_since.map(|t| (*id, t + hold))).min_by_key(|(_, t)| *t)
    }
}

/// Queues what the peer has to send on its connections and writes what
/// the sockets take; returns the connections whose write failed.
fn flush(peer: &mut Peer, conns: &mut Conns) -> Vec<ConnId> {
    while let Some((id, b)) = peer.poll_transmit() {
        if let Some(c) = conns.get_mut(id) {
            c.pending_bytes += b.len();
            c.pending.push_back(b);
        }
    }
    let mut failed = Vec::new();
    for (id, c) in &mut conns.0 {
        if c.write_pending().is_err() {
            failed.push(*id);
        }
    }
    failed
}

/// Runs the peer until it is stopped: a driver over [`Peer`], which owns
/// the session (and the second one of a collision), the restart after a
/// max-prefix teardown and the BFD hold-down; this task moves bytes and
/// time, opens and closes connections, and reports to the RIB and the status.
pub async fn run(node: NodeSpec, peer: PeerSpec, links: Links, shared: Shared) {
    let Links { mut cmds, rib, key: rib_key, mut from_rib, queue } = links;
    let cfg = session_config(&node, &peer);
    let mut p = match Peer::new(cfg, Instant::now()) {
        Ok(p) => p,
        Err(e) => {
            warn!(peer = %peer.name, "invalid session configuration: {e}");
            return;
        }
    };
    let key = register(&shared, &peer);
    let credit = Arc::new(Credit::new(rib.budget()));
    let mut conns = Conns::default();
    let mut connecting: Option<Connecting> = None;
    // When the attempt in `connecting` started.
    let mut connect_since = Instant::now();
    loop {
        // What the peer has to send goes first: a Close below comes after it.
        for id in flush(&mut p, &mut conns) {
            failure(&shared, &key, "connection lost: write failed".into());
            conns.remove(id);
            p.handle_connection_lost(id, Instant::now());
        }
        let mut acted = false;
        while let Some(ev) = p.poll_event() {
            acted = true;
            match ev {
                PeerEvent::Connect => {
                    connecting = Some(Box::pin(connect(peer.clone(), p.session().config().connect_retry)));
                    connect_since = Instant::now();
                }
                PeerEvent::CancelConnect { unanswered } => {
                    if connecting.take().is_some() && unanswered {
                        // ConnectRetry expired first; the attempt's own timeout,
                        // as long, would have said so had it fired first.
                        let secs = connect_since.elapsed().as_secs_f64().round() as u64;
                        failure(&shared, &key, format!("connect to {}: {}", peer.addr, no_answer(&peer, secs)));
                    }
                }
                PeerEvent::Close(id) => {
                    if let Some(c) = conns.remove(id) {
                        c.linger();
                    }
                }
                PeerEvent::StateChanged { from, to } => {
                    debug!(peer = %peer.name, "state {} -> {}", state_name(from), state_name(to));
                    set_state(&shared, &key, &p);
                }
                PeerEvent::Established { negotiated: n, .. } => {
                    info!(peer = %peer.name, addr = %peer.addr, "established (hold {} s)", n.hold_time);
                    established(&shared, &key, &n);
                    let local = p.connection().and_then(|(_, l)| l);
                    rib.send(RibCmd::Up(rib_key, Box::new(session_info(&n, local, peer.addr.ip(), &node))));
                }
                PeerEvent::Down { reason, graceful, .. } => {
                    down(&shared, &key, &reason);
                    rib.send(RibCmd::Down(rib_key, graceful));
                }
                PeerEvent::Update { update, issues, treat_as_withdraw } => {
                    if !issues.is_empty() {
                        warn!(peer = %peer.name, "UPDATE with RFC 7606 issues: {issues:?}");
                    }
                    rib.send(RibCmd::Update(rib_key, update, treat_as_withdraw, credit.take()));
                }
                PeerEvent::Refresh(r) => rib.send(RibCmd::Refresh(rib_key, r)),
                PeerEvent::Collision { kept } => {
                    let whose = if kept == Initiator::Remote { "the peer" } else { "this node" };
                    info!(peer = %peer.name, "connection collision: keeping the connection {whose} opened");
                    set_state(&shared, &key, &p);
                }
            }
        }
        if acted {
            continue;
        }
        record_stats(&shared, &key, &p, &queue);
        queue.set_buffered(conns.0.iter().map(|(_, c)| c.pending_bytes).sum());
        if queue.should_resume() {
            rib.send(RibCmd::Resume(rib_key));
        }

        let deadline = p.poll_timeout().map(tokio::time::Instant::from_std);
        let send_hold = conns.send_hold_deadline(&p);
        let read = |i: usize| {
            let c = conns.at(i).map(|(id, c)| (*id, &c.stream));
            async move {
                match c {
                    Some((id, s)) => (id, s.readable().await),
                    None => std::future::pending().await,
                }
            }
        };
        let write = |i: usize| {
            let c = conns.at(i).filter(|(_, c)| !c.pending.is_empty()).map(|(id, c)| (*id, &c.stream));
            async move {
                match c {
                    Some((id, s)) => (id, s.writable().await),
                    None => std::future::pending().await,
                }
            }
        };
        enum Wake {
            Timer,
            Rib(Option<RibOut>),
            Connected(io::Result<TcpStream>),
            SendHold(ConnId),
            Writable(ConnId, io::Result<()>),
            Readable(ConnId, io::Result<()>),
            Cmd(Option<PeerCmd>),
            Nothing,
        }
        let wake = tokio::select! {
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => Wake::Timer,
            out = from_rib.recv() => Wake::Rib(out),
            r = async { match connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => Wake::Connected(r),
            id = async { match send_hold {
                Some((id, t)) => { tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await; id }
                None => std::future::pending().await,
            } } => Wake::SendHold(id),
            (id, r) = write(0) => Wake::Writable(id, r),
            (id, r) = write(1) => Wake::Writable(id, r),
            _ = credit.resumed.notified(), if credit.own_limit() => Wake::Nothing,
            _ = tokio::time::sleep(ALL_FULL_RETRY), if !credit.open() && !credit.own_limit() => Wake::Nothing,
            (id, r) = read(0), if credit.open() => Wake::Readable(id, r),
            (id, r) = read(1), if credit.open() => Wake::Readable(id, r),
            cmd = cmds.recv() => Wake::Cmd(cmd.map(|c| *c)),
        };
        let now = Instant::now();
        match wake {
            Wake::Nothing => {}
            Wake::Timer => p.handle_timeout(now),
            Wake::Rib(Some(RibOut::Send(messages))) => {
                queue.taken(messages.iter().map(Bytes::len).sum());
                p.send_updates(messages);
            }
            Wake::Rib(Some(RibOut::Message(m))) => {
                let _ = p.send(&m);
            }
            Wake::Rib(Some(RibOut::Teardown(sub, reason))) => p.handle_teardown(sub, &reason, now),
            Wake::Rib(None) => {}
            Wake::Connected(r) => {
                connecting = None;
                match r {
                    Ok(stream) => {
                        let c = split(stream, &peer);
                        // Not taken (the peer's own connection was meanwhile): dropped.
                        if let Some(id) = p.handle_connected(Initiator::Local, Some(c.local.ip()), now) {
                            conns.0.push((id, c));
                        }
                    }
                    Err(e) => {
                        failure(&shared, &key, format!("connect to {}: {e}", peer.addr));
                        p.handle_connect_failed(now);
                    }
                }
            }
            Wake::SendHold(id) => {
                // RFC 9687: the peer has read nothing for the send hold time.
                // A NOTIFICATION could not be delivered either: the
                // connection is closed and the session fails.
                let secs = send_hold_time(p.session()).as_secs();
                warn!(peer = %peer.name, "send hold timer expired: the peer read nothing for {secs} s; closing (RFC 9687)");
                failure(
                    &shared,
                    &key,
                    format!("send hold timer expired: the peer read nothing for {secs} s (RFC 9687)"),
                );
                conns.remove(id);
                p.handle_connection_lost(id, now);
            }
            Wake::Writable(id, r) => {
                // The socket takes more of what a slow reader left pending.
                let failed = match (r, conns.get_mut(id)) {
                    (Ok(()), Some(c)) => c.write_pending().is_err(),
                    (Err(_), _) => true,
                    (Ok(()), None) => false,
                };
                if failed {
                    failure(&shared, &key, "connection lost: write failed".into());
                    conns.remove(id);
                    p.handle_connection_lost(id, now);
                }
            }
            Wake::Readable(id, r) => {
                // Drain what the socket holds through one buffer per worker
                // thread: an idle session keeps no read buffer of its own.
                let outcome = match r {
                    Err(e) => Err(e.to_string()),
                    Ok(()) => match conns.0.iter().find(|(i, _)| *i == id) {
                        Some((_, c)) => drain(c, id, &mut p, &credit),
                        None => Ok(()),
                    },
                };
                if let Err(why) = outcome {
                    // A second connection that fails is not the session's failure.
                    if p.connection().is_some_and(|(c, _)| c == id) {
                        debug!(peer = %peer.name, "connection lost: {why}");
                        failure(&shared, &key, format!("connection lost: {why}"));
                    }
                    conns.remove(id);
                    p.handle_connection_lost(id, now);
                }
            }
            Wake::Cmd(Some(PeerCmd::Accepted(stream))) => {
                let c = split(stream, &peer);
                match p.handle_connected(Initiator::Remote, Some(c.local.ip()), now) {
                    Some(id) => conns.0.push((id, c)),
                    None => debug!(peer = %peer.name, state = state_name(p.state()), "incoming connection refused"),
                }
            }
            Wake::Cmd(Some(PeerCmd::Stop(sub, msg))) => {
                p.handle_stop(sub, msg.as_deref(), now);
                break;
            }
            Wake::Cmd(Some(PeerCmd::Restart)) => {
                p.handle_restart_stop("bgpd restarting (graceful restart)", now);
                break;
            }
            Wake::Cmd(Some(PeerCmd::Bfd { up: false, failure: true })) => {
                // RFC 5882 §4.2: the path failed; the session goes at
                // once (Cease / BFD Down, RFC 9384) and its routes with it.
                warn!(peer = %peer.name, "BFD down: closing the BGP session until BFD is up again");
                failure(&shared, &key, "BFD down: held down until BFD is up again".into());
                p.handle_bfd(false, true, now);
            }
            Wake::Cmd(Some(PeerCmd::Bfd { up: true, .. })) => {
                if p.bfd_held() {
                    info!(peer = %peer.name, "BFD up: starting the BGP session again");
                }
                p.handle_bfd(true, false, now);
            }
            Wake::Cmd(Some(PeerCmd::Bfd { .. })) => {}
            Wake::Cmd(None) => {
                p.handle_stop(bgpd_proto::error::code::cease::PEER_DECONFIGURED, None, now);
                break;
            }
        }
    }
    // What the stop queued (a NOTIFICATION) is written before the connections close.
    let _ = flush(&mut p, &mut conns);
    while let Some(ev) = p.poll_event() {
        if let PeerEvent::Down { reason, .. } = ev {
            down(&shared, &key, &reason);
        }
    }
    for (_, c) in conns.0.drain(..) {
        c.linger();
    }
    rib.send(RibCmd::RemovePeer(rib_key));
    shared.lock().peers.remove(&key);
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
}

/// Reads everything the socket has without blocking and feeds the peer.
/// `Err` when the connection is closed or failed.
fn drain(c: &Conn, id: ConnId, peer: &mut Peer, credit: &Credit) -> Result<(), String> {
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        // At most 16 reads per wake-up, so one busy peer cannot hold the task;
        // and none once the UPDATEs decoded but not handed on yet fill what
        // the RIB may be sent (small UPDATEs: a read holds a thousand).
        for _ in 0..16 {
            if peer.pending_events() >= credit.room() {
                return Ok(());
            }
            match c.stream.try_read(&mut buf) {
                Ok(0) => return Err("closed by the peer".into()),
                Ok(n) => peer.handle_bytes(id, &buf[..n], Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
}

/// Why a connection attempt may have gone unanswered.
fn no_answer(peer: &PeerSpec, secs: u64) -> String {
    if peer.password.is_some() {
        format!("no answer in {secs} s (peer down, unreachable, or TCP MD5 keys differ: the kernel drops segments with a wrong or missing signature)")
    } else {
        format!("no answer in {secs} s (peer down or unreachable)")
    }
}

/// Opens the connection to the peer with its socket options: MD5 key,
/// GTSM, source address, then `TCP_NODELAY` and DSCP CS6.
async fn connect(peer: PeerSpec, timeout: Duration) -> io::Result<TcpStream> {
    let v6 = sockopt::is_v6(&peer.addr);
    let socket = if v6 { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
    if let Some(key) = &peer.password {
        sockopt::set_md5(&socket, peer.addr.ip(), key)?;
    }
    if let Some(h) = peer.ttl_security {
        sockopt::set_gtsm(&socket, v6, h)?;
    }
    if let Some(src) = peer.source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    match tokio::time::timeout(timeout, socket.connect(peer.addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, no_answer(&peer, timeout.as_secs()))),
    }
}

/// Sets the options of an established connection and starts its writer.
fn split(stream: TcpStream, peer: &PeerSpec) -> Conn {
    let _ = stream.set_nodelay(true);
    let v6 = sockopt::is_v6(&peer.addr);
    let _ = sockopt::set_cs6(&stream, v6);
    if let Some(h) = peer.ttl_security {
        let _ = sockopt::set_gtsm(&stream, v6, h);
    }
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
    Conn { stream, pending: VecDeque::new(), pending_bytes: 0, local, blocked_since: None }
}

// ----- status -----

/// Adds the peer to the shared status under a key of its own (a peer whose
/// configuration changed runs as a new task while the old one stops).
fn register(shared: &Shared, peer: &PeerSpec) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = format!("{}#{}", peer.name, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let view = PeerView::new(&peer.name, peer.addr, peer.peer_as, peer.local_as);
    shared.lock().peers.insert(key.clone(), PeerStatus { view, established_at: None });
    key
}

fn with_peer(shared: &Shared, name: &str, f: impl FnOnce(&mut PeerStatus)) {
    if let Some(p) = shared.lock().peers.get_mut(name) {
        f(p);
    }
}

fn set_state(shared: &Shared, name: &str, peer: &Peer) {
    with_peer(shared, name, |p| p.view.state = peer.state());
}

fn failure(shared: &Shared, key: &str, why: String) {
    debug!(peer = %key, "{why}");
    with_peer(shared, key, |p| p.view.last_failure = Some(why));
}

fn established(shared: &Shared, name: &str, n: &Negotiated) {
    with_peer(shared, name, |p| {
        p.established_at = Some(Instant::now());
        p.view.established_since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        p.view.last_failure = None;
        p.view.peer_id = Some(n.peer_id.to_string());
        p.view.peer_hostname.clone_from(&n.peer_hostname);
        let mut caps: Vec<String> = n.families.iter().map(|f| format!("multiprotocol {f}")).collect();
        if n.four_octet_as {
            caps.push("4-octet-as".into());
        }
        if n.route_refresh {
            caps.push("route-refresh".into());
        }
        if n.enhanced_route_refresh {
            caps.push("enhanced-route-refresh".into());
        }
        if n.extended_message {
            caps.push("extended-message".into());
        }
        if n.extended_next_hop {
            // RFC 8950: IPv4 unicast routes may carry IPv6 next hops.
            caps.push("extended-next-hop ipv4/unicast".into());
        }
        if let Some(gr) = &n.peer_graceful_restart {
            let r = if gr.restarting() { ", restarting" } else { "" };
            caps.push(format!("graceful-restart (peer, {} s{r})", gr.time));
        }
        if let Some(ll) = &n.peer_llgr {
            let times: Vec<String> = ll.iter().map(|f| format!("{} {} s", f.family, f.stale_time)).collect();
            let times = if times.is_empty() { "aware, no family".to_string() } else { times.join(", ") };
            caps.push(format!("long-lived-graceful-restart (peer: {times})"));
        }
        if n.graceful_notification {
            caps.push("graceful-notification (N bit)".into());
        }
        caps.push(format!("hold-time {}", n.hold_time));
        p.view.capabilities = caps;
    });
}

fn down(shared: &Shared, name: &str, reason: &DownReason) {
    let (text, code) = match reason {
        DownReason::NotificationSent(n) => (Some(format!("sent: {}", n.describe())), Some((n.code, n.subcode))),
        DownReason::NotificationReceived(n) => (Some(format!("received: {}", n.describe())), Some((n.code, n.subcode))),
        DownReason::ConnectionFailed | DownReason::Stopped => (None, None),
    };
    if let Some(t) = &text {
        info!(peer = %name, "session down, NOTIFICATION {t}");
    }
    with_peer(shared, name, |p| {
        p.established_at = None;
        p.view.established_since = None;
        p.view.capabilities.clear();
        if text.is_some() {
            p.view.last_error = text;
            p.view.last_error_code = code;
        }
    });
}

fn record_stats(shared: &Shared, name: &str, peer: &Peer, queue: &super::rib::OutQueue) {
    let st = peer.stats();
    let names = ["error", "OPEN", "UPDATE", "NOTIFICATION", "KEEPALIVE", "ROUTE-REFRESH"];
    with_peer(shared, name, |p| {
        p.view.flaps = st.flaps;
        p.view.queued_bytes = queue.bytes();
        p.view.export_paused = queue.paused();
        for (i, n) in names.iter().enumerate() {
            p.view.received.insert((*n).into(), st.received[i]);
            p.view.sent.insert((*n).into(), st.sent[i]);
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bgpd_proto::Family;

    pub(crate) fn spec() -> PeerSpec {
        PeerSpec {
            name: "tor".into(),
            addr: "10.0.0.2:179".parse().unwrap(),
            local_as: 64512,
            peer_as: 65010,
            password: None,
            hold_time: 90,
            keepalive: None,
            ttl_security: None,
            source: None,
            passive: false,
            restart_time: Some(120),
            long_lived_stale_time: Some(3600),
            graceful_notification: false,
            bfd: Default::default(),
            add_path: (false, true),
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            extended_next_hop: false,
            routing: Default::default(),
        }
    }

    pub(crate) fn node() -> NodeSpec {
        NodeSpec {
            name: "node-1".into(),
            router_id: "10.0.0.1".parse().unwrap(),
            router_id_source: crate::daemon::router_id::RouterIdSource::Ipv4Address,
            asn: 64512,
            listen: vec![],
            ipv4: Some("10.0.0.1".parse().unwrap()),
            ipv6: None,
            subnets: Vec::new(),
            max_paths: 16,
            always_compare_med: false,
            originations: vec![],
            cluster_id: None,
            exportable: vec![],
            statics: vec![],
            restart: Default::default(),
            bfd_interfaces: Vec::new(),
        }
    }

    #[test]
    fn session_configuration_from_the_spec() {
        let node = node();
        let c = session_config(&node, &spec());
        assert_eq!((c.local_as, c.peer_as, c.hold_time), (64512, 65010, 90));
        assert_eq!(c.graceful_restart.as_ref().map(|g| g.restart_time), Some(120));
        assert_eq!(c.hostname.as_deref(), Some("node-1"));
        assert_eq!(
            c.add_path,
            vec![(Family::IPV4_UNICAST, AddPathMode::SEND), (Family::IPV6_UNICAST, AddPathMode::SEND)]
        );
        assert!(!c.graceful_restart.as_ref().unwrap().restarting);
        assert_eq!(c.graceful_restart.as_ref().and_then(|g| g.long_lived_stale_time), Some(3600));
        let restart = crate::daemon::marker::Restart { restarting: true, forwarding: true };
        let after_restart = session_config(&NodeSpec { restart, ..node.clone() }, &spec());
        let gr = after_restart.graceful_restart.unwrap();
        assert!(gr.restarting && gr.forwarding_preserved.len() == 2, "R bit and F bits after a restart");
        let restart = crate::daemon::marker::Restart { restarting: true, forwarding: false };
        let gr = session_config(&NodeSpec { restart, ..node }, &spec()).graceful_restart.unwrap();
        assert!(gr.restarting && gr.forwarding_preserved.is_empty(), "R bit without F bits");
    }

    #[tokio::test]
    async fn a_peer_that_reads_nothing_starts_the_send_hold_wait_and_reading_ends_it() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        let (mut reader, _) = server.unwrap();
        let client = client.unwrap();
        let local = client.local_addr().unwrap();
        let mut c = Conn { stream: client, pending: VecDeque::new(), pending_bytes: 0, local, blocked_since: None };
        // The peer reads nothing: queue more than the socket buffers can hold.
        for _ in 0..4096 {
            c.pending_bytes += 4096;
            c.pending.push_back(Bytes::from(vec![0u8; 4096]));
        }
        c.write_pending().unwrap();
        assert!(!c.pending.is_empty(), "16 MiB do not fit the socket buffers");
        let since = c.blocked_since.expect("blocked: the send hold wait runs");
        c.write_pending().unwrap();
        assert_eq!(c.blocked_since, Some(since), "still blocked: the wait keeps its start");
        // The peer reads again: the socket takes more, the wait ends.
        let mut buf = vec![0u8; 1 << 20];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while c.blocked_since.is_some() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), reader.read(&mut buf)).await;
            c.write_pending().unwrap();
        }
        assert_eq!(c.blocked_since, None, "progress resets the send hold timer");
    }

    #[test]
    fn the_send_hold_time_is_eight_minutes_or_twice_the_hold_time() {
        let session = Session::new(session_config(&node(), &spec())).unwrap();
        assert_eq!(send_hold_time(&session), Duration::from_secs(480), "not negotiated yet: 8 minutes");
    }

    #[tokio::test]
    async fn the_socket_is_not_read_while_the_rib_has_the_limit_of_updates_and_resumes_at_half() {
        let credit = Arc::new(Credit::new(Arc::default()));
        let mut in_flight: Vec<InFlight> = (0..MAX_UPDATES_IN_FLIGHT - 1).map(|_| credit.take()).collect();
        assert!(credit.open());
        in_flight.push(credit.take());
        assert!(!credit.open(), "at the limit: the socket is left unread, TCP slows the peer");
        // The RIB applies UPDATEs: no wakeup until half of them are done.
        in_flight.truncate(MAX_UPDATES_IN_FLIGHT / 2 + 1);
        let early = tokio::time::timeout(Duration::from_millis(50), credit.resumed.notified()).await;
        assert!(early.is_err(), "no wakeup per UPDATE");
        in_flight.pop();
        tokio::time::timeout(Duration::from_secs(1), credit.resumed.notified()).await.expect("woken at half");
        assert!(credit.open());
        drop(in_flight);
        assert_eq!(credit.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_node_wide_limit_closes_every_peer_and_reopens_as_the_rib_applies() {
        let all = Arc::new(Budget::default());
        let peers: Vec<Arc<Credit>> = (0..10).map(|_| Arc::new(Credit::new(all.clone()))).collect();
        // Each peer below its own limit, together at the node's.
        let per = MAX_UPDATES_IN_FLIGHT_ALL / peers.len();
        let mut in_flight: Vec<InFlight> = peers.iter().flat_map(|c| (0..per).map(|_| c.take())).collect();
        in_flight.extend((0..MAX_UPDATES_IN_FLIGHT_ALL - per * peers.len()).map(|_| peers[0].take()));
        let idle = Arc::new(Credit::new(all.clone()));
        assert!(!idle.open(), "a peer with nothing in flight waits too");
        assert!(!idle.own_limit(), "for the node's limit: it looks again, no wakeup from its own");
        assert_eq!(idle.room(), 0);
        in_flight.truncate(in_flight.len() - 100);
        assert_eq!(idle.room(), 100, "room for 100: a drain stops there");
        assert!(peers.iter().all(|c| c.open()));
        drop(in_flight);
        assert_eq!(all.in_flight.load(Ordering::Acquire), 0);
    }
}
