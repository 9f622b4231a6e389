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

use bgpd_proto::session::{
    retains_routes, DownReason, GracefulRestartConfig, Negotiated, Session, SessionConfig, SessionEvent,
};
use bgpd_proto::wire::{AddPathMode, Notification};
use bgpd_proto::{Family, MessageType};
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
    // After a restart of bgpd, the R bit; forwarding is preserved for both
    // families when the kernel kept it (what bgpd originates is forwarded by
    // the kernel without it), see marker.rs.
    c.graceful_restart = peer.restart_time.map(|t| GracefulRestartConfig {
        restart_time: t.min(4095),
        restarting: node.restart.restarting,
        forwarding_preserved: if node.restart.forwarding {
            vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        } else {
            Vec::new()
        },
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
        c.add_path = vec![(Family::IPV4_UNICAST, m), (Family::IPV6_UNICAST, m)];
    }
    c
}

/// How long a session torn down for too many prefixes waits before it starts again.
const MAX_PREFIX_RESTART: Duration = Duration::from_secs(30);

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

/// Runs the peer until it is stopped.
pub async fn run(node: NodeSpec, peer: PeerSpec, links: Links, shared: Shared) {
    let Links { mut cmds, rib, key: rib_key, mut from_rib, queue } = links;
    let cfg = session_config(&node, &peer);
    let mut session = match Session::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            warn!(peer = %peer.name, "invalid session configuration: {e}");
            return;
        }
    };
    let key = register(&shared, &peer);
    let credit = Arc::new(Credit::new(rib.budget()));
    let mut restart_at: Option<tokio::time::Instant> = None;
    // RFC 5882 §4.2: BFD saw the path fail: the session is down and stays
    // down until BFD is up again.
    let mut bfd_hold = false;
    let mut conn: Option<Conn> = None;
    let mut connecting: Option<Connecting> = None;
    // When the attempt in `connecting` started.
    let mut connect_since = Instant::now();
    // RFC 4271 §6.8: while OPENs are pending, a second connection (the one
    // the peer initiated) runs in a session of its own until the collision is
    // resolved. `outgoing` tells who initiated the primary connection.
    let mut second: Option<(Session, Conn)> = None;
    let mut outgoing = false;
    // Whether the N bit (RFC 8538) was exchanged on the session last Established.
    let mut graceful_notification = false;
    session.handle_manual_start(Instant::now());
    loop {
        // Act on what the session asked for.
        while let Some(ev) = session.poll_event() {
            match ev {
                SessionEvent::Connect => {
                    if connecting.is_some() {
                        // The previous attempt got no answer within ConnectRetry.
                        let t = cfg_timeout(&session).as_secs();
                        failure(&shared, &key, format!("connect to {}: {}", peer.addr, no_answer(&peer, t)));
                    }
                    conn = None;
                    connecting = Some(Box::pin(connect(peer.clone(), cfg_timeout(&session))));
                    connect_since = Instant::now();
                }
                SessionEvent::Disconnect => {
                    let _ = flush(&mut session, conn.as_mut());
                    if let Some(c) = conn.take() {
                        c.linger();
                    }
                    if connecting.take().is_some() {
                        // ConnectRetry expired in Connect (the FSM drops the attempt,
                        // then starts another): the attempt got no answer. The
                        // attempt's own timeout, as long, would have said so had it
                        // fired first; whichever does must leave the explanation.
                        let secs = connect_since.elapsed().as_secs_f64().round() as u64;
                        failure(&shared, &key, format!("connect to {}: {}", peer.addr, no_answer(&peer, secs)));
                    }
                }
                SessionEvent::StateChanged { from, to } => {
                    debug!(peer = %peer.name, "state {} -> {}", state_name(from), state_name(to));
                    set_state(&shared, &key, &session);
                }
                SessionEvent::Established(n) => {
                    info!(peer = %peer.name, addr = %peer.addr, "established (hold {} s)", n.hold_time);
                    graceful_notification = n.graceful_notification;
                    established(&shared, &key, &n);
                    let local = conn.as_ref().map(|c| c.local.ip());
                    rib.send(RibCmd::Up(rib_key, Box::new(session_info(&n, local, peer.addr.ip(), &node))));
                }
                SessionEvent::Down(reason) => {
                    down(&shared, &key, &reason);
                    rib.send(RibCmd::Down(rib_key, retains_routes(&reason, graceful_notification)));
                }
                SessionEvent::Update { update, issues } => {
                    let withdraw_all = issues.iter().any(|i| i.action == bgpd_proto::ErrorAction::TreatAsWithdraw);
                    if !issues.is_empty() {
                        warn!(peer = %peer.name, "UPDATE with RFC 7606 issues: {issues:?}");
                    }
                    rib.send(RibCmd::Update(rib_key, Box::new(update), withdraw_all, credit.take()));
                }
                SessionEvent::RouteRefresh(rr) => rib.send(RibCmd::Refresh(rib_key, rr)),
            }
        }
        if flush(&mut session, conn.as_mut()).is_err() {
            failure(&shared, &key, "connection lost: write failed".into());
            conn = None;
            session.handle_connection_failed(Instant::now());
            continue;
        }
        record_stats(&shared, &key, &session, &queue);
        queue.set_buffered(conn.as_ref().map_or(0, |c| c.pending_bytes));
        if queue.should_resume() {
            rib.send(RibCmd::Resume(rib_key));
        }

        if let Some((s2, c2)) = second.as_mut() {
            while s2.poll_event().is_some() {}
            if flush(s2, Some(c2)).is_err() {
                second = None;
            }
        }
        if resolve(&mut session, &mut conn, &mut second, &mut outgoing, node.router_id, &peer) {
            set_state(&shared, &key, &session);
            continue;
        }
        let deadline = [session.poll_timeout(), second.as_ref().and_then(|(s2, _)| s2.poll_timeout())]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = async { match restart_at { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                restart_at = None;
                if !bfd_hold {
                    info!(peer = %peer.name, "starting again after the max-prefix teardown");
                    session.handle_manual_start(Instant::now());
                }
            }
            out = from_rib.recv() => match out {
                Some(RibOut::Send(messages)) => {
                    queue.taken(messages.iter().map(Bytes::len).sum());
                    for m in messages {
                        let _ = session.send_encoded(m, MessageType::UPDATE);
                    }
                }
                Some(RibOut::Message(m)) => {
                    let _ = session.send(&m);
                }
                Some(RibOut::Teardown(sub, reason)) => {
                    stop(&mut session, conn.as_mut(), sub, Some(&reason));
                    restart_at = Some(tokio::time::Instant::now() + MAX_PREFIX_RESTART);
                }
                None => {}
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                session.handle_timeout(Instant::now());
                if let Some((s2, _)) = second.as_mut() {
                    s2.handle_timeout(Instant::now());
                }
            }
            r = async { match second.as_ref() { Some((_, c2)) => c2.stream.readable().await, None => std::future::pending().await } } => {
                let lost = match (r, second.as_mut()) {
                    (Ok(()), Some((s2, c2))) => drain(c2, s2, &credit).is_err(),
                    _ => true,
                };
                if lost {
                    second = None;
                }
            }
            r = async { match connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                connecting = None;
                match r {
                    Ok(stream) => {
                        conn = Some(split(stream, &peer));
                        outgoing = true;
                        session.handle_connected(Instant::now());
                    }
                    Err(e) => {
                        failure(&shared, &key, format!("connect to {}: {e}", peer.addr));
                        session.handle_connection_failed(Instant::now());
                    }
                }
            }
            _ = async { match conn.as_ref().and_then(|c| c.blocked_since) {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t + send_hold_time(&session))).await,
                None => std::future::pending().await,
            } } => {
                // RFC 9687: the peer has read nothing for the send hold time.
                // A NOTIFICATION could not be delivered either: the
                // connection is closed and the session fails.
                let secs = send_hold_time(&session).as_secs();
                warn!(peer = %peer.name, "send hold timer expired: the peer read nothing for {secs} s; closing (RFC 9687)");
                failure(&shared, &key, format!("send hold timer expired: the peer read nothing for {secs} s (RFC 9687)"));
                conn = None;
                session.handle_connection_failed(Instant::now());
            }
            r = async { match conn.as_ref() { Some(c) if !c.pending.is_empty() => c.stream.writable().await, _ => std::future::pending().await } } => {
                // The socket takes more of what a slow reader left pending.
                let failed = match (r, conn.as_mut()) {
                    (Ok(()), Some(c)) => c.write_pending().is_err(),
                    (Err(_), _) => true,
                    (Ok(()), None) => false,
                };
                if failed {
                    failure(&shared, &key, "connection lost: write failed".into());
                    conn = None;
                    session.handle_connection_failed(Instant::now());
                }
            }
            _ = credit.resumed.notified(), if credit.own_limit() => {}
            _ = tokio::time::sleep(ALL_FULL_RETRY), if !credit.open() && !credit.own_limit() => {}
            r = async { match conn.as_ref() { Some(c) => c.stream.readable().await, None => std::future::pending().await } }, if credit.open() => {
                // Drain what the socket holds through one buffer per worker
                // thread: an idle session keeps no read buffer of its own.
                let outcome = match (r, conn.as_ref()) {
                    (Err(e), _) => Err(e.to_string()),
                    (Ok(()), Some(c)) => drain(c, &mut session, &credit),
                    (Ok(()), None) => Ok(()),
                };
                if let Err(why) = outcome {
                    debug!(peer = %peer.name, "connection lost: {why}");
                    failure(&shared, &key, format!("connection lost: {why}"));
                    conn = None;
                    session.handle_connection_failed(Instant::now());
                }
            }
            cmd = cmds.recv() => match cmd.map(|c| *c) {
                Some(PeerCmd::Accepted(stream)) => {
                    if accept(&mut session, &mut conn, &mut connecting, &mut second, stream, &peer) {
                        outgoing = false;
                    }
                }
                Some(PeerCmd::Stop(sub, msg)) => {
                    stop(&mut session, conn.as_mut(), sub, msg.as_deref());
                    break;
                }
                Some(PeerCmd::Restart) => {
                    session.handle_restart_stop(Instant::now(), "bgpd restarting (graceful restart)");
                    let _ = flush(&mut session, conn.as_mut());
                    break;
                }
                Some(PeerCmd::Bfd { up: false, failure: true }) => {
                    // RFC 5882 §4.2: the path failed; the session goes at
                    // once (Cease / BFD Down, RFC 9384) and its routes with it.
                    warn!(peer = %peer.name, "BFD down: closing the BGP session until BFD is up again");
                    failure(&shared, &key, "BFD down: held down until BFD is up again".into());
                    stop(&mut session, conn.as_mut(), bgpd_proto::error::code::cease::BFD_DOWN, None);
                    if let Some(c) = conn.take() {
                        c.linger();
                    }
                    connecting = None;
                    second = None;
                    bfd_hold = true;
                }
                Some(PeerCmd::Bfd { up: true, .. }) => {
                    if std::mem::take(&mut bfd_hold) {
                        info!(peer = %peer.name, "BFD up: starting the BGP session again");
                        session.handle_manual_start(Instant::now());
                    }
                }
                Some(PeerCmd::Bfd { .. }) => {}
                None => {
                    stop(&mut session, conn.as_mut(), bgpd_proto::error::code::cease::PEER_DECONFIGURED, None);
                    break;
                }
            },
        }
    }
    while session.poll_event().is_some() {}
    let _ = flush(&mut session, conn.as_mut());
    if let Some(c) = conn.take() {
        c.linger();
    }
    rib.send(RibCmd::RemovePeer(rib_key));
    shared.lock().peers.remove(&key);
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
}

/// Reads everything the socket has without blocking and feeds the session.
/// `Err` when the connection is closed or failed.
fn drain(c: &Conn, session: &mut Session, credit: &Credit) -> Result<(), String> {
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        // At most 16 reads per wake-up, so one busy peer cannot hold the task;
        // and none once the UPDATEs decoded but not handed on yet fill what
        // the RIB may be sent (small UPDATEs: a read holds a thousand).
        for _ in 0..16 {
            if session.pending_events() >= credit.room() {
                return Ok(());
            }
            match c.stream.try_read(&mut buf) {
                Ok(0) => return Err("closed by the peer".into()),
                Ok(n) => session.handle_bytes(Instant::now(), &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
}

fn stop(session: &mut Session, conn: Option<&mut Conn>, subcode: u8, message: Option<&str>) {
    let n = match message {
        Some(m) => Notification::cease_with_message(subcode, m),
        None => Notification::new(bgpd_proto::error::code::CEASE, subcode, []),
    };
    session.handle_stop(Instant::now(), n);
    let _ = flush(session, conn);
}

/// How long an outgoing connection attempt may take: the ConnectRetry time.
fn cfg_timeout(session: &Session) -> Duration {
    session.config().connect_retry
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

/// An incoming connection for this peer. Taken as the session's connection
/// when the session waits for one (Active, or Connect before its own attempt
/// completed): returns true then. While the session's own connection is past
/// the TCP handshake but not Established, the new one runs in a second
/// session until the collision is resolved (RFC 4271 §6.8). Otherwise it is
/// refused.
fn accept(
    session: &mut Session,
    conn: &mut Option<Conn>,
    connecting: &mut Option<Connecting>,
    second: &mut Option<(Session, Conn)>,
    stream: TcpStream,
    peer: &PeerSpec,
) -> bool {
    use bgpd_proto::session::State;
    match session.state() {
        State::Active | State::Connect if conn.is_none() => {
            *connecting = None;
            *conn = Some(split(stream, peer));
            session.handle_connected(Instant::now());
            true
        }
        State::OpenSent | State::OpenConfirm if second.is_none() => {
            let Ok(mut s2) = Session::new(session.config().clone()) else { return false };
            let now = Instant::now();
            s2.handle_manual_start(now);
            // The second session answers this connection; it opens none of its own.
            while s2.poll_event().is_some() {}
            s2.handle_connected(now);
            *second = Some((s2, split(stream, peer)));
            false
        }
        state => {
            debug!(peer = %peer.name, state = state_name(state), "incoming connection refused");
            false
        }
    }
}

/// Resolves a collision once a peer's OPEN tells its BGP identifier:
/// the losing connection gets Cease / Connection Collision Resolution, the
/// winning one becomes the session's. Returns true when the primary changed.
fn resolve(
    session: &mut Session,
    conn: &mut Option<Conn>,
    second: &mut Option<(Session, Conn)>,
    outgoing: &mut bool,
    local_id: std::net::Ipv4Addr,
    peer: &PeerSpec,
) -> bool {
    use bgpd_proto::session::{resolve_collision, CollisionWinner, State};
    let Some((s2, _)) = second.as_ref() else { return false };
    if s2.state() == State::Idle {
        *second = None;
        return false;
    }
    let Some(remote_id) = session.negotiated().or(s2.negotiated()).map(|n| n.peer_id) else { return false };
    // An Established session always keeps its connection (RFC 4271 §6.8).
    let primary_wins = session.state() == State::Established
        || match resolve_collision(local_id, remote_id) {
            CollisionWinner::Outgoing => *outgoing,
            CollisionWinner::Incoming => !*outgoing,
        };
    let now = Instant::now();
    let Some((mut s2, mut c2)) = second.take() else { return false };
    if primary_wins {
        s2.handle_collision_dump(now);
        let _ = flush(&mut s2, Some(&mut c2));
        false
    } else {
        info!(peer = %peer.name, "connection collision: keeping the connection the peer opened");
        session.handle_collision_dump(now);
        let _ = flush(session, conn.as_mut());
        while session.poll_event().is_some() {}
        *session = s2;
        *conn = Some(c2);
        *outgoing = !*outgoing;
        true
    }
}

fn flush(session: &mut Session, conn: Option<&mut Conn>) -> io::Result<()> {
    match conn {
        Some(c) => {
            while let Some(b) = session.poll_transmit() {
                c.pending_bytes += b.len();
                c.pending.push_back(b);
            }
            c.write_pending()
        }
        None => {
            while session.poll_transmit().is_some() {}
            Ok(())
        }
    }
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

fn set_state(shared: &Shared, name: &str, session: &Session) {
    with_peer(shared, name, |p| p.view.state = state_name(session.state()).into());
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

fn record_stats(shared: &Shared, name: &str, session: &Session, queue: &super::rib::OutQueue) {
    let st = session.stats();
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
            routing: Default::default(),
        }
    }

    fn node() -> NodeSpec {
        NodeSpec {
            name: "node-1".into(),
            router_id: "10.0.0.1".parse().unwrap(),
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
