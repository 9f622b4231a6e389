//! The peer task's connections: opening one with its socket options, writing what the
//! socket takes (and the RFC 9687 send hold timer when it takes nothing), reading what it
//! has through one buffer per worker thread, and closing it without losing a NOTIFICATION.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bgpd_proto::session::Session;
use bgpd_proto::speaker::{ConnId, Peer};
use bytes::{Buf, Bytes};
use tokio::net::{TcpSocket, TcpStream};

use super::credit::Credit;
use crate::daemon::sockopt;
use crate::daemon::spec::PeerSpec;

/// A connection to the peer. Writes go straight from the peer task; what
/// the socket cannot take yet waits in `pending` until it is writable. A
/// peer that stops reading keeps the session alive with its own keepalives,
/// so its hold timer never fires: the send hold timer (RFC 9687) closes the
/// connection when nothing could be written for [`send_hold_time`].
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) pending: VecDeque<Bytes>,
    /// The bytes in `pending`.
    pub(super) pending_bytes: usize,
    pub(super) local: SocketAddr,
    /// Since when the socket has taken nothing of what is pending.
    blocked_since: Option<Instant>,
}

impl Conn {
    /// Closes the connection in the background: what is queued is written,
    /// the write side is shut down, and what the peer still sends is read
    /// and dropped until it closes (at most 2 s). Closing a socket with
    /// unread data makes the kernel answer with a reset, which can destroy
    /// a NOTIFICATION the peer has not read yet.
    pub(super) fn linger(self) {
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
    pub(super) fn write_pending(&mut self) -> io::Result<()> {
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
pub(super) fn send_hold_time(session: &Session) -> Duration {
    let hold = session.negotiated().map_or(0, |n| u64::from(n.hold_time));
    Duration::from_secs(hold * 2).max(Duration::from_secs(8 * 60))
}

/// The peer task's connections: at most two at a time (the session's, and
/// the second one of a collision), each named by the [`Peer`] that took it.
#[derive(Default)]
pub(super) struct Conns(pub(super) Vec<(ConnId, Conn)>);

impl Conns {
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.0.iter_mut().find(|(i, _)| *i == id).map(|(_, c)| c)
    }

    pub(super) fn at(&self, i: usize) -> Option<&(ConnId, Conn)> {
        self.0.get(i)
    }

    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let pos = self.0.iter().position(|(i, _)| *i == id)?;
        Some(self.0.remove(pos).1)
    }

    /// When the send hold timer of the connection blocked longest expires.
    pub(super) fn send_hold_deadline(&self, peer: &Peer) -> Option<(ConnId, Instant)> {
        let hold = send_hold_time(peer.session());
        self.0.iter().filter_map(|(id, c)| c.blocked_since.map(|t| (*id, t + hold))).min_by_key(|(_, t)| *t)
    }
}

/// Queues what the peer has to send on its connections and writes what
/// the sockets take; returns the connections whose write failed.
pub(super) fn flush(peer: &mut Peer, conns: &mut Conns) -> Vec<ConnId> {
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

/// Decoded UPDATEs at which a drain of the socket stops to hand them to the
/// RIB (one read's worth of full-size UPDATEs: about 16,000 IPv4 prefixes).
const HAND_OFF: usize = 16;

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
}

/// Reads everything the socket has without blocking and feeds the peer.
/// `Err` when the connection is closed or failed.
pub(super) fn drain(c: &Conn, id: ConnId, peer: &mut Peer, credit: &Credit) -> Result<(), String> {
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        // At most 16 reads per wake-up, so one busy peer cannot hold the task;
        // and none once the UPDATEs decoded but not handed on yet fill what
        // the RIB may be sent (small UPDATEs: a read holds a thousand), or
        // reach HAND_OFF: a full table streaming in goes to the RIB in
        // pieces, not a megabyte decoded at a time.
        for _ in 0..16 {
            if peer.pending_events() >= credit.room().min(HAND_OFF) {
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
pub(super) fn no_answer(peer: &PeerSpec, secs: u64) -> String {
    if peer.password.is_some() {
        format!("no answer in {secs} s (peer down, unreachable, or TCP MD5 keys differ: the kernel drops segments with a wrong or missing signature)")
    } else {
        format!("no answer in {secs} s (peer down or unreachable)")
    }
}

/// Opens the connection to the peer with its socket options: MD5 key,
/// GTSM, source address, then `TCP_NODELAY` and DSCP CS6.
pub(super) async fn connect(peer: PeerSpec, timeout: Duration) -> io::Result<TcpStream> {
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
pub(super) fn split(stream: TcpStream, peer: &PeerSpec) -> Conn {
    let _ = stream.set_nodelay(true);
    let v6 = sockopt::is_v6(&peer.addr);
    let _ = sockopt::set_cs6(&stream, v6);
    if let Some(h) = peer.ttl_security {
        let _ = sockopt::set_gtsm(&stream, v6, h);
    }
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
    Conn { stream, pending: VecDeque::new(), pending_bytes: 0, local, blocked_since: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::peer::session_config;
    use crate::daemon::peer::tests::{node, spec};

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
}
