//! The far end: N passive sessions of `bgpd_proto::session` in the far namespace, seen
//! from the bench (`FarEnd`, following what it reports on its stdout) and inside its
//! namespace (`farend_main`, this binary run again as `bench sessions __farend …`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bgpd_proto::nlri::Nlri;
use bgpd_proto::session::{Session, SessionConfig, SessionEvent, State};
use bgpd_proto::wire::{AsPath, Attr, Message, Origin, PathAttribute, Update};
use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::testbed::{reap, spawn_far_end, Netns};
use super::{far_addr, DUT_AS, FAR_AS, HOLD_SECS, KEEPALIVE, MAX_PEERS};

/// The block far end `i` announces as a mesh node (`bench mesh`): the `i`-th /26 of
/// 10.200.0.0/16 (1,024 of them).
pub(crate) fn mesh_block(i: usize) -> Ipv4Net {
    let b = (i % 1024) as u32 * 64;
    Ipv4Net::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + b), 26).expect("a /26")
}

/// How the far ends behave: idle eBGP peers (`bench sessions`), or Calico mesh
/// nodes of the DUT's AS that each announce their block (`bench mesh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Idle,
    Mesh,
}
use crate::bench::args::Flags;

// ----- the far end, seen from the bench ---------------------------------------------------------

/// The far-end process: N sessions in the far namespace, reporting on its stdout.
pub(crate) struct FarEnd {
    child: Child,
    /// Held open: the far end exits when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Sessions Established now, as the far end last said.
    pub(crate) up: usize,
    /// Sessions that left Established so far.
    pub(crate) downs: usize,
}

impl FarEnd {
    pub(crate) fn spawn(ns: &Netns, n: usize, lifetime: Duration, role: Role) -> Result<FarEnd, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()])
            .arg(exe)
            .args(["sessions", "__farend", "--peers", &n.to_string(), "--lifetime-secs"])
            .arg(lifetime.as_secs().to_string());
        if role == Role::Mesh {
            cmd.arg("--mesh");
        }
        let (child, stdin, lines) = spawn_far_end(cmd)?;
        let far = FarEnd { child, stdin, lines, up: 0, downs: 0 };
        match far.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l == "ready" => Ok(far),
            Ok(l) => Err(format!("far end said {l:?} instead of ready")),
            Err(_) => Err("far end not ready in 30 s".into()),
        }
    }

    fn take(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("up"), Some(k), None) => self.up = k.parse().unwrap_or(self.up),
            (Some("down"), Some(name), Some(k)) => {
                self.downs += 1;
                self.up = k.parse().unwrap_or(self.up);
                // The first few by name; a mass drop is visible in `dropped=` anyway.
                if self.downs <= 5 {
                    println!("# far end: session {name} left Established");
                }
            }
            _ => println!("# far end: {line}"),
        }
    }

    /// Follows the far end until `n` sessions are up; when, or `None` at the deadline.
    pub(crate) fn wait_up(&mut self, n: usize, deadline: Instant) -> Option<Instant> {
        while self.up < n {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => self.take(&l),
                Err(_) => return None,
            }
        }
        Some(Instant::now())
    }

    /// Follows the far end until `until`.
    pub(crate) fn pump_until(&mut self, until: Instant) {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => self.take(&l),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        reap(&mut self.child);
    }
}

// ----- the far end, inside its namespace --------------------------------------------------------

pub(super) fn farend_main(args: &[String]) -> Result<(), String> {
    let mut peers = 0usize;
    let mut lifetime = Duration::from_secs(300);
    let mut role = Role::Idle;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--peers" => peers = flags.number()?,
            "--mesh" => role = Role::Mesh,
            "--lifetime-secs" => lifetime = Duration::from_secs(flags.number()?),
            _ => return Err(format!("far end: {}", flags.unknown())),
        }
    }
    if !(1..=MAX_PEERS).contains(&peers) {
        return Err(format!("far end: --peers must be 1 to {MAX_PEERS}"));
    }
    // Bounded: it stops when the bench closes its stdin, or after its lifetime.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(farend(peers, lifetime, role))
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn farend(n: usize, lifetime: Duration, role: Role) -> Result<(), String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("far end socket: {e}"))?;
    socket.set_reuseaddr(true).map_err(|e| format!("far end SO_REUSEADDR: {e}"))?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179))).map_err(|e| format!("far end bind :179: {e}"))?;
    let listener = socket.listen(4096).map_err(|e| format!("far end listen: {e}"))?;
    let up = Arc::new(AtomicUsize::new(0));
    let mut sessions: HashMap<Ipv4Addr, tokio::sync::mpsc::Sender<TcpStream>> = HashMap::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(far_session(i, rx, up.clone(), role));
        sessions.insert(far_addr(i), tx);
    }
    say(format_args!("ready"));
    let end = tokio::time::sleep(lifetime);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => return Ok(()),
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let to = match stream.local_addr() {
                        Ok(SocketAddr::V4(a)) => sessions.get(a.ip()),
                        _ => None,
                    };
                    if let Some(tx) = to {
                        let _ = tx.try_send(stream);
                    }
                }
                Err(e) => {
                    eprintln!("far end: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// What a mesh node announces once Established: its block (ORIGIN IGP, an empty
/// AS_PATH, itself as next hop, LOCAL_PREF 100), then End-of-RIB.
fn mesh_announcement(i: usize) -> [Message; 2] {
    let attributes = vec![
        PathAttribute::new(Attr::Origin(Origin::Igp)),
        PathAttribute::new(Attr::AsPath(AsPath::sequence(std::iter::empty()))),
        PathAttribute::new(Attr::NextHop(far_addr(i))),
        PathAttribute::new(Attr::LocalPref(100)),
    ];
    let block = Update { withdrawn: Vec::new(), attributes, nlri: vec![Nlri::new(mesh_block(i))] };
    [
        Message::Update(block),
        Message::Update(Update { withdrawn: Vec::new(), attributes: Vec::new(), nlri: Vec::new() }),
    ]
}

/// One passive session of the far end: takes the connections the listener hands it.
async fn far_session(i: usize, mut accepted: tokio::sync::mpsc::Receiver<TcpStream>, up: Arc<AtomicUsize>, role: Role) {
    // A mesh node is in the DUT's AS (iBGP); an idle peer in its own.
    let local_as = if role == Role::Mesh { DUT_AS } else { FAR_AS };
    let mut cfg = SessionConfig::new(local_as, DUT_AS, far_addr(i));
    cfg.passive = true;
    cfg.hold_time = HOLD_SECS;
    cfg.keepalive_time = Some(KEEPALIVE);
    let mut session = match Session::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("far end p{i}: {e}");
            return;
        }
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    session.handle_manual_start(Instant::now());
    loop {
        // Send what the session queued, then act on its events, until both are drained.
        loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Some(c) = conn.as_mut() {
                    if c.write_all(&bytes).await.is_err() {
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
                        let k = up.fetch_add(1, Ordering::Relaxed) + 1;
                        say(format_args!("up {k}"));
                        if role == Role::Mesh {
                            for m in mesh_announcement(i) {
                                if let Err(e) = session.send(&m) {
                                    eprintln!("far end p{i}: sending its block: {e:?}");
                                }
                            }
                        }
                    }
                    SessionEvent::StateChanged { from: State::Established, .. } => {
                        let k = up.fetch_sub(1, Ordering::Relaxed) - 1;
                        say(format_args!("down p{i} {k}"));
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
            r = async { match conn.as_mut() { Some(c) => c.read(&mut buf).await, None => std::future::pending().await } } => {
                match r {
                    Ok(0) | Err(_) => {
                        conn = None;
                        session.handle_connection_failed(Instant::now());
                    }
                    Ok(k) => session.handle_bytes(Instant::now(), &buf[..k]),
                }
            }
            s = accepted.recv() => match s {
                Some(stream) if conn.is_none() && matches!(session.state(), State::Active | State::Connect) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(stream);
                    session.handle_connected(Instant::now());
                }
                Some(refused) => drop(refused),
                None => return,
            },
        }
    }
}
