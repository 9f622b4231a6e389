//! One task per peer: it owns the peer's [`Session`](bgpd_proto::session::Session),
//! its connection and its timers, and reports to the shared status. A slow or stuck
//! peer only ever blocks its own task: what its socket cannot take yet waits in the
//! connection's queue.
//!
//! The parts: `credit` (how many UPDATEs of a peer, and of all peers, may wait for the
//! RIB), `conn` (a connection: opening it, writing what the socket takes, reading it
//! through one buffer per worker thread, the send hold timer), `report` (what the task
//! writes into the shared status).

mod conn;
mod credit;
mod report;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bgpd_proto::session::{GracefulRestartConfig, SessionConfig};
use bgpd_proto::speaker::{ConnId, Initiator, Peer, PeerEvent};
use bgpd_proto::wire::AddPathMode;
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::rib::{session_info, RibCmd, RibHandle, RibOut};
use super::spec::{NodeSpec, PeerSpec};
use super::status::{state_name, Shared};
use conn::{connect, drain, flush, no_answer, send_hold_time, split, Conns};
use credit::ALL_FULL_RETRY;
pub use credit::{Budget, Credit, InFlight, MAX_UPDATES_IN_FLIGHT, MAX_UPDATES_IN_FLIGHT_ALL};
use report::{down, established, failure, record_stats, register, set_state};

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
}
