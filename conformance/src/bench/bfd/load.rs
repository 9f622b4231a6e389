//! The far end's BGP load (`--load`): passive BGP sessions (`bgpd_proto::session`) on
//! the first L far addresses, the same peers that run BFD with the DUT. Once the bench
//! says `load start`, the first of them sends a full table of /24s to the DUT as fast as
//! TCP takes it, then, one period after the round began, the same prefixes again with
//! another MED (every round replaces every route), until `load stop`. The period keeps
//! the load a burst per round rather than an endless stream a DUT without backpressure
//! would queue without bound. The others hold their sessions and take whatever the DUT
//! sends them. They run on a thread and runtime of their own, beside the BFD sessions.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgpd_proto::nlri::Nlri;
use bgpd_proto::session::{Session, SessionConfig, SessionEvent, State};
use bgpd_proto::wire::{pack_announcements, Announcement, AsPath, Attr, NextHop, Origin, PathAttribute};
use bgpd_proto::{Family, WireContext};
use bytes::Bytes;
use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::farend::say;
use super::lines::Report;
use super::{far_addr, DUT_AS, FAR_AS};
use crate::bench::routeserver::scenario::prefix24;

/// Hold time of the load sessions (the DUT's default keepalive keeps them up).
const HOLD_SECS: u16 = 90;
/// The most /24s the table may hold ([`prefix24`] counts them from 16.0.0.0).
pub(super) const MAX_TABLE: usize = 2_000_000;

/// The table in two versions that differ in MED: sent alternately, each round replaces
/// every route the previous one left.
struct Table {
    rounds: [Vec<Bytes>; 2],
}

/// Builds the UPDATEs of a table of `prefixes` /24s from load peer 0.
fn table(prefixes: usize) -> Result<Table, String> {
    let prefixes = prefixes.min(MAX_TABLE);
    let nlri: Vec<Nlri<Ipv4Net>> = (0..prefixes).map(|i| Nlri::new(prefix24(i))).collect();
    let ctx = WireContext::new(true);
    let next_hop = far_addr(0);
    let round = |med: u32| -> Result<Vec<Bytes>, String> {
        let attrs = [
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::sequence([FAR_AS]))),
            PathAttribute::new(Attr::NextHop(next_hop)),
            PathAttribute::new(Attr::Med(med)),
        ];
        let msgs =
            pack_announcements(Family::IPV4_UNICAST, &attrs, &NextHop::V4(next_hop), Announcement::V4(&nlri), &ctx)
                .map_err(|e| format!("far end: packing the table: {e}"))?;
        Ok(msgs.into_iter().map(|m| m.freeze()).collect())
    };
    Ok(Table { rounds: [round(0)?, round(1)?] })
}

/// Binds port 179 on the first `peers` far addresses, builds the table of `prefixes`
/// /24s and starts the load peers on a thread of their own. The returned sender
/// starts and stops the table.
pub(super) fn spawn(peers: usize, prefixes: usize, period: Duration) -> Result<watch::Sender<bool>, String> {
    let listeners: Vec<TcpListener> = (0..peers)
        .map(|i| {
            let a = far_addr(i);
            let l = TcpListener::bind((a, 179)).map_err(|e| format!("far end: bind {a}:179: {e}"))?;
            l.set_nonblocking(true).map_err(|e| format!("far end: {e}"))?;
            Ok(l)
        })
        .collect::<Result<_, String>>()?;
    let table = Arc::new(table(prefixes)?);
    let (load_tx, load_rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (i, l) in listeners.into_iter().enumerate() {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            let t = (i == 0).then(|| table.clone());
                            tasks.push(tokio::spawn(peer(i, l, t, period, load_rx.clone())));
                        }
                        Err(e) => say(&Report::Error(format!("load peer {i}: {e}"))),
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
        .map_err(|e| format!("far end: load thread: {e}"))?;
    Ok(load_tx)
}

/// A connection of a load peer: its read half, and the writer task that owns the write
/// half (whole messages go through its channel, so the table's UPDATEs and the
/// session's KEEPALIVEs never interleave mid-message).
struct Conn {
    rd: OwnedReadHalf,
    wr: mpsc::Sender<Bytes>,
    writer: JoinHandle<()>,
    feed: Option<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.writer.abort();
        if let Some(f) = &self.feed {
            f.abort();
        }
    }
}

/// One passive load peer.
async fn peer(
    i: usize,
    listener: tokio::net::TcpListener,
    table: Option<Arc<Table>>,
    period: Duration,
    load: watch::Receiver<bool>,
) {
    let addr: Ipv4Addr = far_addr(i);
    let mut cfg = SessionConfig::new(FAR_AS, DUT_AS, addr);
    cfg.passive = true;
    cfg.hold_time = HOLD_SECS;
    cfg.keepalive_time = Some(Duration::from_secs(u64::from(HOLD_SECS / 3)));
    let mut session = match Session::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            say(&Report::Error(format!("load peer {i}: {e}")));
            return;
        }
    };
    let mut conn: Option<Conn> = None;
    let mut buf = vec![0u8; 64 * 1024];
    session.handle_manual_start(Instant::now());
    loop {
        loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Some(c) = conn.as_ref() {
                    if c.wr.send(bytes).await.is_err() {
                        conn = None;
                        session.handle_connection_failed(Instant::now());
                    }
                }
            }
            let mut any = false;
            while let Some(ev) = session.poll_event() {
                any = true;
                match ev {
                    SessionEvent::Disconnect => conn = None,
                    SessionEvent::StateChanged { to: State::Established, .. } => {
                        say(&Report::Bgp { index: i, up: true });
                        if let (Some(c), Some(t)) = (conn.as_mut(), table.as_ref()) {
                            c.feed = Some(tokio::spawn(feed(c.wr.clone(), t.clone(), period, load.clone())));
                        }
                    }
                    SessionEvent::StateChanged { from: State::Established, .. } => {
                        say(&Report::Bgp { index: i, up: false });
                        if let Some(f) = conn.as_mut().and_then(|c| c.feed.take()) {
                            f.abort();
                        }
                    }
                    _ => {}
                }
            }
            if !any {
                break;
            }
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                session.handle_timeout(Instant::now());
            }
            r = async { match conn.as_mut() { Some(c) => c.rd.read(&mut buf).await, None => std::future::pending().await } } => {
                match r {
                    Ok(0) | Err(_) => {
                        conn = None;
                        session.handle_connection_failed(Instant::now());
                    }
                    Ok(k) => session.handle_bytes(Instant::now(), &buf[..k]),
                }
            }
            a = listener.accept() => match a {
                Ok((stream, _)) if conn.is_none() && matches!(session.state(), State::Active | State::Connect) => {
                    let _ = stream.set_nodelay(true);
                    let (rd, mut wh) = stream.into_split();
                    let (wr, mut queue) = mpsc::channel::<Bytes>(16);
                    let writer = tokio::spawn(async move {
                        while let Some(b) = queue.recv().await {
                            if wh.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                    });
                    conn = Some(Conn { rd, wr, writer, feed: None });
                    session.handle_connected(Instant::now());
                }
                Ok(refused) => drop(refused),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Sends the table round after round while the load is on, a round every `period` (at
/// once when the previous one took longer).
async fn feed(wr: mpsc::Sender<Bytes>, table: Arc<Table>, period: Duration, mut load: watch::Receiver<bool>) {
    let mut rounds = 0u64;
    loop {
        if !*load.borrow_and_update() {
            if load.changed().await.is_err() {
                return;
            }
            continue;
        }
        let t0 = Instant::now();
        let msgs = &table.rounds[(rounds % 2) as usize];
        for m in msgs {
            if !*load.borrow() {
                break;
            }
            if wr.send(m.clone()).await.is_err() {
                return;
            }
        }
        if *load.borrow() {
            rounds += 1;
            say(&Report::Round { rounds, secs: t0.elapsed().as_secs_f64() });
            let next = tokio::time::Instant::from_std(t0 + period);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = load.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_rounds_carry_the_same_prefixes_with_another_med() {
        let t = table(10_000).unwrap();
        let ctx = WireContext::new(true);
        let mut seen = [Vec::new(), Vec::new()];
        for (r, msgs) in t.rounds.iter().enumerate() {
            for m in msgs {
                let frame = bgpd_proto::Message::decode(m, &ctx).unwrap().unwrap();
                let bgpd_proto::Message::Update(u) = frame.message else { panic!("not an UPDATE") };
                assert!(u.attributes.iter().any(|a| a.value == Attr::Med(r as u32)));
                seen[r].extend(u.nlri.iter().map(|n| n.prefix));
            }
        }
        assert_eq!(seen[0].len(), 10_000);
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0][0], prefix24(0));
        // Each round fits into whole messages of at most 4,096 octets.
        assert!(t.rounds[0].iter().all(|m| m.len() <= 4096));
    }
}
