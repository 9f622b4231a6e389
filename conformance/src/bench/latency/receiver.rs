//! The in-process BGP receiver: it accepts bgpd's sessions and notes when each comes up,
//! when its first UPDATE arrives and when each prefix first arrives on the wire; with
//! the kernel monitor it shares what was seen and a condition variable to wait on.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgpd_proto::wire::{Capability, Message, Open};
use bgpd_proto::{Family, WireContext};
use ipnet::Ipv4Net;

use super::RX_AS;
use crate::lab::Ns;

const KEEPALIVE: [u8; 19] = {
    let mut k = [0xFF; 19];
    k[16] = 0;
    k[17] = 19;
    k[18] = 4;
    k
};

/// One session bgpd opened to the receiver.
#[derive(Clone, Debug)]
pub(super) struct SessionLog {
    pub(super) local: Ipv4Addr,
    pub(super) established: Option<Instant>,
    pub(super) first_update: Option<Instant>,
    pub(super) closed: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Seen {
    /// Prefix → when it first arrived announced (any session).
    pub(super) announced: HashMap<Ipv4Net, Instant>,
    pub(super) sessions: Vec<SessionLog>,
}

/// What the receiver and the kernel monitor saw, and a condition variable to wait on.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) seen: Mutex<Seen>,
    pub(super) kernel: Mutex<HashMap<Ipv4Net, Instant>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    pub(super) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits until `f` gives `Some` (re-checked on every change and every 20 ms), at most
    /// until `deadline`.
    pub(super) fn wait<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&Seen, &HashMap<Ipv4Net, Instant>) -> Option<T>,
    ) -> Option<T> {
        loop {
            {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                let kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = f(&seen, &kernel) {
                    return Some(v);
                }
            }
            if Instant::now() >= deadline || crate::bench::routeserver::INTERRUPTED.load(Ordering::Relaxed) {
                return None;
            }
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.changed.wait_timeout(seen, Duration::from_millis(20));
        }
    }
}

/// The receiver's listener and sessions, stopped on `Drop`.
pub(super) struct Receiver {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    pub(super) fn start(ns: &Ns, shared: Arc<Shared>) -> Result<Receiver, String> {
        let listener = ns
            .in_ns(|| TcpListener::bind("0.0.0.0:179"))
            .map_err(|e| format!("entering {}: {e}", ns.name()))?
            .map_err(|e| format!("receiver: bind :179: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("receiver: {e}"))?;
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("latency-accept".into())
            .spawn(move || {
                let mut sessions = Vec::new();
                while !sh.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let sh = sh.clone();
                            if let Ok(h) = std::thread::Builder::new().name("latency-session".into()).spawn(move || {
                                if let Err(e) = session(stream, &sh) {
                                    eprintln!("receiver session: {e}");
                                }
                            }) {
                                sessions.push(h);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                        Err(e) => {
                            eprintln!("receiver: accept: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                for h in sessions {
                    let _ = h.join();
                }
            })
            .map_err(|e| format!("receiver thread: {e}"))?;
        Ok(Receiver { shared, accept: Some(accept) })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One session: OPEN, KEEPALIVE, then every UPDATE noted until the peer closes, a
/// NOTIFICATION arrives, or the receiver stops.
fn session(mut stream: TcpStream, sh: &Shared) -> Result<(), String> {
    let local = match stream.local_addr() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        other => return Err(format!("not IPv4: {other:?}")),
    };
    let idx = {
        let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.sessions.push(SessionLog { local, established: None, first_update: None, closed: None });
        seen.sessions.len() - 1
    };
    let r = session_loop(&mut stream, sh, idx, local);
    sh.seen.lock().unwrap_or_else(|e| e.into_inner()).sessions[idx].closed = Some(Instant::now());
    sh.notify();
    r
}

fn session_loop(stream: &mut TcpStream, sh: &Shared, idx: usize, local: Ipv4Addr) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| e.to_string())?;
    let caps =
        vec![Capability::Multiprotocol(Family::IPV4_UNICAST), Capability::RouteRefresh, Capability::FourOctetAs(RX_AS)];
    let open = Message::Open(Open::new(RX_AS as u16, 90, local, caps))
        .to_bytes(&WireContext::new(false))
        .map_err(|e| format!("encoding OPEN: {e}"))?;
    stream.write_all(&open).map_err(|e| format!("sending OPEN: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut ctx = WireContext::new(false);
    let mut got_open = false;
    let mut last_keepalive = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        if last_keepalive.elapsed() >= Duration::from_secs(1) {
            stream.write_all(&KEEPALIVE).map_err(|e| format!("sending KEEPALIVE: {e}"))?;
            last_keepalive = Instant::now();
        }
        if filled == buf.len() {
            return Err("a message larger than the buffer".into());
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        let now = Instant::now();
        let mut at = 0;
        // One message at a time: the context changes once the OPEN is in.
        while let Some(frame) = Message::decode(&buf[at..filled], &ctx).map_err(|e| format!("decoding: {e}"))? {
            at += frame.len;
            match frame.message {
                Message::Open(o) => {
                    got_open = true;
                    ctx = WireContext::new(o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_))));
                    stream.write_all(&KEEPALIVE).map_err(|e| format!("sending KEEPALIVE: {e}"))?;
                }
                Message::Keepalive if got_open => {
                    let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
                    let s = &mut seen.sessions[idx];
                    s.established.get_or_insert(now);
                }
                Message::Update(u) => {
                    let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.sessions[idx].first_update.get_or_insert(now);
                    if !frame.issues.iter().any(|i| i.action == bgpd_proto::error::ErrorAction::TreatAsWithdraw) {
                        for n in &u.nlri {
                            seen.announced.entry(n.prefix).or_insert(now);
                        }
                    }
                    for w in &u.withdrawn {
                        seen.announced.remove(&w.prefix);
                    }
                }
                Message::Notification(_) => {
                    sh.notify();
                    return Ok(());
                }
                _ => {}
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        sh.notify();
    }
    Ok(())
}
