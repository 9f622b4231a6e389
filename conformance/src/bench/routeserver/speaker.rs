//! The in-process BGP speakers of the route-server benchmark: testers that send prebuilt
//! UPDATEs (and read, decode and discard what the DUT sends them, as route-server clients
//! do), and the monitor that keeps the table the DUT re-advertises and says when it holds
//! exactly the expected routes.
//!
//! Blocking sockets, one or two threads per session; every read and write waits at most
//! [`IO_TICK`], so every loop notices a stop request, the run's deadline and Ctrl-C.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgpd_proto::error::ErrorAction;
use bgpd_proto::wire::{Capability, Message, Open};
use bgpd_proto::{Family, WireContext};
use bytes::Bytes;
use ipnet::Ipv4Net;

use crate::lab::Ns;

/// Hold time every speaker proposes: long, so that a DUT busy with a million routes for
/// minutes does not lose its sessions; keepalives go every [`KEEPALIVE_EVERY`].
pub const HOLD_TIME: u16 = 240;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// The longest a read or write blocks before its loop looks at the clock and the flags.
pub const IO_TICK: Duration = Duration::from_millis(100);
const KEEPALIVE: [u8; 19] = {
    let mut k = [0xFF; 19];
    k[16] = 0;
    k[17] = 19;
    k[18] = 4;
    k
};

/// What the route must look like at the monitor at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Present, whatever its attributes.
    Any,
    /// Present with this origin AS (the last AS of its AS_PATH).
    OriginAs(u32),
}

/// A prefix as a hash key: address in the high bits, length in the low 8.
pub fn key(p: Ipv4Net) -> u64 {
    (u64::from(u32::from(p.addr())) << 8) | u64::from(p.prefix_len())
}

/// The monitor's expected final table.
pub type Expected = HashMap<u64, Want, foldhash::fast::RandomState>;

/// Shared state of one run: the start gate, the stop flag, and the finish line.
pub struct Control {
    start: Mutex<Option<Instant>>,
    started: Condvar,
    stop: AtomicBool,
    deadline: Instant,
    writers: usize,
    writers_done: AtomicUsize,
    table_complete: AtomicBool,
    done: Mutex<Option<Instant>>,
    finished: Condvar,
    /// Expected routes the monitor holds as expected (DUT mode), or prefix events it
    /// received (generator mode).
    pub progress: AtomicU64,
    /// Routes the monitor holds that it should not (DUT mode).
    pub extra: AtomicU64,
    /// The first error a speaker hit (the run goes on; it is reported).
    pub error: Mutex<Option<String>>,
    /// When the monitor first held a prefix (DUT mode): the first route out of the DUT.
    first_out: Mutex<Option<Instant>>,
    /// The withdrawal phase (scenarios that have one): when it may begin, when a tester
    /// wrote its first withdrawal, when the monitor first held fewer prefixes, and when
    /// it held none.
    withdraw: Mutex<Withdraw>,
    withdraw_started: Condvar,
    interrupted: &'static AtomicBool,
}

impl Control {
    /// A run with `writers` testers that must end by `deadline`; `interrupted` is the
    /// process-wide Ctrl-C flag.
    pub fn new(writers: usize, deadline: Instant, interrupted: &'static AtomicBool) -> Arc<Control> {
        Arc::new(Control {
            start: Mutex::new(None),
            started: Condvar::new(),
            stop: AtomicBool::new(false),
            deadline,
            writers,
            writers_done: AtomicUsize::new(0),
            table_complete: AtomicBool::new(false),
            done: Mutex::new(None),
            finished: Condvar::new(),
            progress: AtomicU64::new(0),
            extra: AtomicU64::new(0),
            error: Mutex::new(None),
            first_out: Mutex::new(None),
            withdraw: Mutex::new(Withdraw::default()),
            withdraw_started: Condvar::new(),
            interrupted,
        })
    }

    /// Whether loops must end: stop requested, deadline passed or Ctrl-C.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.interrupted.load(Ordering::Relaxed) || Instant::now() > self.deadline
    }

    /// Ends every speaker loop (they notice within [`IO_TICK`]).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.started.notify_all();
        self.finished.notify_all();
    }

    /// Opens the start gate: the testers begin writing. Returns the instant.
    pub fn open_gate(&self) -> Instant {
        let t0 = Instant::now();
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) = Some(t0);
        self.started.notify_all();
        t0
    }

    fn wait_gate(&self) -> bool {
        let mut g = self.start.lock().unwrap_or_else(|e| e.into_inner());
        while g.is_none() {
            if self.stopping() {
                return false;
            }
            g = self.started.wait_timeout(g, IO_TICK).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Records the first error; none once the run is stopping (a peer closing its end
    /// then is the stop, not a failure).
    fn fail(&self, what: String) {
        if self.stopping() {
            return;
        }
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some(what);
        }
    }

    /// Records completion when every tester has written its last UPDATE and the
    /// monitor's table is complete; the first call that sees both wins.
    fn try_finish(&self) {
        if self.writers_done.load(Ordering::SeqCst) == self.writers && self.table_complete.load(Ordering::SeqCst) {
            let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if d.is_none() {
                *d = Some(Instant::now());
                self.finished.notify_all();
            }
        }
    }

    fn set_complete(&self, complete: bool) {
        self.table_complete.store(complete, Ordering::SeqCst);
        if complete {
            self.try_finish();
        }
    }

    /// Waits for completion until `until`, the run's deadline, a stop or Ctrl-C; `Some(instant)` when done.
    pub fn wait_done(&self, until: Instant) -> Option<Instant> {
        let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(t) = *d {
                return Some(t);
            }
            if self.stopping() || Instant::now() > until {
                return None;
            }
            d = self.finished.wait_timeout(d, IO_TICK).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Whether the monitor's table is complete right now.
    pub fn complete_now(&self) -> bool {
        self.table_complete.load(Ordering::SeqCst)
    }

    /// When the monitor first held a prefix the DUT sent it (`None`: not yet).
    pub fn first_out(&self) -> Option<Instant> {
        *self.first_out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_first_out(&self, at: Instant) {
        self.first_out.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(at);
    }

    /// The withdrawal phase as far as it went.
    pub fn withdraw(&self) -> Withdraw {
        *self.withdraw.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_withdraw(&self, f: impl FnOnce(&mut Withdraw)) {
        f(&mut self.withdraw.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Opens the withdrawal gate: testers with withdrawals write them.
    pub fn open_withdraw_gate(&self) {
        self.update_withdraw(|w| w.gate = Some(Instant::now()));
        self.withdraw_started.notify_all();
    }

    fn wait_withdraw_gate(&self) -> bool {
        let mut w = self.withdraw.lock().unwrap_or_else(|e| e.into_inner());
        while w.gate.is_none() {
            if self.stopping() {
                return false;
            }
            w = self.withdraw_started.wait_timeout(w, IO_TICK).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Waits until the monitor holds no prefix, until `until`, a stop or Ctrl-C;
    /// `Some(instant)` when it does.
    pub fn wait_all_withdrawn(&self, until: Instant) -> Option<Instant> {
        loop {
            if let Some(t) = self.withdraw().all_out {
                return Some(t);
            }
            if self.stopping() || Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// How many testers have written their last UPDATE.
    pub fn writers_done(&self) -> usize {
        self.writers_done.load(Ordering::SeqCst)
    }
}

/// The instants of a withdrawal phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Withdraw {
    /// The gate opened.
    pub gate: Option<Instant>,
    /// A tester wrote its first withdrawal.
    pub first_write: Option<Instant>,
    /// The monitor first held fewer prefixes than the complete table.
    pub first_out: Option<Instant>,
    /// The monitor held no prefix.
    pub all_out: Option<Instant>,
}

// ----- sessions ------------------------------------------------------------------------------

/// A session whose OPENs and KEEPALIVEs are exchanged.
pub struct Established {
    stream: TcpStream,
    ctx: WireContext,
    /// Bytes read after the peer's KEEPALIVE (its first UPDATEs, perhaps).
    leftover: Vec<u8>,
    /// Who this is, for error messages.
    name: String,
}

fn open_bytes(my_as: u32, id: Ipv4Addr) -> Result<Vec<u8>, String> {
    let caps =
        vec![Capability::Multiprotocol(Family::IPV4_UNICAST), Capability::RouteRefresh, Capability::FourOctetAs(my_as)];
    let my_as16 = u16::try_from(my_as).unwrap_or(bgpd_proto::types::AS_TRANS as u16);
    Message::Open(Open::new(my_as16, HOLD_TIME, id, caps))
        .to_bytes(&WireContext::new(false))
        .map(|b| b.to_vec())
        .map_err(|e| format!("encoding OPEN: {e}"))
}

/// Reads whole messages from a stream into a buffer.
struct Reader {
    buf: Vec<u8>,
    filled: usize,
}

impl Reader {
    fn new(leftover: Vec<u8>) -> Reader {
        let mut buf = vec![0u8; 256 * 1024];
        let filled = leftover.len().min(buf.len());
        buf[..filled].copy_from_slice(&leftover[..filled]);
        Reader { buf, filled }
    }

    /// Reads once (waiting at most the socket's read timeout). `Ok(false)` on EOF.
    fn fill(&mut self, stream: &mut TcpStream) -> Result<bool, String> {
        match stream.read(&mut self.buf[self.filled..]) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.filled += n;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                Ok(true)
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Calls `f` on each whole message in the buffer, then keeps the partial rest.
    fn drain(
        &mut self,
        ctx: &WireContext,
        mut f: impl FnMut(Message, bool) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut at = 0;
        while let Some(frame) =
            Message::decode(&self.buf[at..self.filled], ctx).map_err(|e| format!("decoding a message: {e}"))?
        {
            at += frame.len;
            let withdraw_all = frame.issues.iter().any(|i| i.action == ErrorAction::TreatAsWithdraw);
            f(frame.message, withdraw_all)?;
        }
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        Ok(())
    }
}

/// OPEN / KEEPALIVE exchange on a connected stream (RFC 4271 §8.2.2: OpenSent →
/// OpenConfirm → Established), `active` when we opened the connection.
fn handshake(
    mut stream: TcpStream,
    my_as: u32,
    id: Ipv4Addr,
    name: &str,
    deadline: Instant,
) -> Result<Established, String> {
    stream.set_nodelay(true).map_err(|e| format!("{name}: TCP_NODELAY: {e}"))?;
    stream.set_read_timeout(Some(IO_TICK)).map_err(|e| format!("{name}: read timeout: {e}"))?;
    stream.set_write_timeout(Some(IO_TICK)).map_err(|e| format!("{name}: write timeout: {e}"))?;
    stream.write_all(&open_bytes(my_as, id)?).map_err(|e| format!("{name}: sending OPEN: {e}"))?;
    let plain = WireContext::new(false);
    let mut reader = Reader::new(Vec::new());
    let mut open: Option<Open> = None;
    let mut keepalive = false;
    while !keepalive {
        if Instant::now() > deadline {
            return Err(format!("{name}: no OPEN and KEEPALIVE from the peer in time"));
        }
        if !reader.fill(&mut stream)? {
            return Err(format!("{name}: the peer closed the connection during the OPEN exchange"));
        }
        // Decode one message at a time: the context changes once the OPEN is in.
        loop {
            let ctx = match &open {
                Some(o) => WireContext::new(o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_)))),
                None => plain.clone(),
            };
            let Some(frame) = Message::decode(&reader.buf[..reader.filled], &ctx)
                .map_err(|e| format!("{name}: decoding the peer's message: {e}"))?
            else {
                break;
            };
            reader.buf.copy_within(frame.len..reader.filled, 0);
            reader.filled -= frame.len;
            match frame.message {
                Message::Open(o) if open.is_none() => {
                    if !o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_))) {
                        return Err(format!("{name}: the peer does not support 4-octet AS numbers"));
                    }
                    open = Some(o);
                    stream.write_all(&KEEPALIVE).map_err(|e| format!("{name}: sending KEEPALIVE: {e}"))?;
                }
                Message::Keepalive if open.is_some() => {
                    keepalive = true;
                    break;
                }
                Message::Notification(n) => return Err(format!("{name}: NOTIFICATION from the peer: {n:?}")),
                other => return Err(format!("{name}: unexpected {:?} during the OPEN exchange", other.kind())),
            }
        }
    }
    let leftover = reader.buf[..reader.filled].to_vec();
    Ok(Established { stream, ctx: WireContext::new(true), leftover, name: name.to_string() })
}

fn tcp_connect(local: Ipv4Addr, remote: Ipv4Addr) -> Result<TcpStream, String> {
    // tokio's TcpSocket binds before connecting (std cannot); the stream is then used blocking.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket.bind(SocketAddrV4::new(local, 0).into()).map_err(|e| format!("bind {local}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(2), socket.connect(SocketAddrV4::new(remote, 179).into())).await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("connect {local} → {remote}:179: {e}")),
            Err(_) => Err(format!("connect {local} → {remote}:179: no answer in 2 s")),
        }
    })?;
    let std = stream.into_std().map_err(|e| format!("into_std: {e}"))?;
    std.set_nonblocking(false).map_err(|e| format!("set_nonblocking: {e}"))?;
    Ok(std)
}

/// Connects from `local` (in namespace `ns`) to `remote`:179 and exchanges OPENs, retrying
/// every 250 ms until `deadline` (the DUT may still be starting, or refuse a peer it
/// has not configured yet).
pub fn connect(
    ns: &Ns,
    name: &str,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    my_as: u32,
    deadline: Instant,
    control: &Control,
) -> Result<Established, String> {
    let mut last = String::from("no attempt");
    while Instant::now() < deadline && !control.stopping() {
        let attempt = ns
            .in_ns(|| tcp_connect(local, remote))
            .map_err(|e| format!("entering {}: {e}", ns.name()))
            .and_then(|r| r)
            .and_then(|s| handshake(s, my_as, local, name, deadline));
        match attempt {
            Ok(est) => return Ok(est),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{name}: no session with {remote} ({last})"))
}

/// Writes all of `bytes`, waiting out a full socket buffer in steps of [`IO_TICK`].
fn write_fully(stream: &mut TcpStream, bytes: &[u8], control: &Control) -> Result<(), String> {
    let mut off = 0;
    while off < bytes.len() {
        match stream.write(&bytes[off..]) {
            Ok(0) => return Err("write: connection closed".into()),
            Ok(n) => off += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if control.stopping() {
                    return Err("stopped while writing".into());
                }
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

// ----- testers -------------------------------------------------------------------------------

/// What a tester did.
#[derive(Debug, Default)]
pub struct TesterReport {
    /// When it wrote its first UPDATE.
    pub first_write: Option<Instant>,
    /// When its last UPDATE was written (handed to the kernel).
    pub last_write: Option<Instant>,
    /// Prefixes (announced + withdrawn) it received from the DUT.
    pub received: u64,
}

/// A running tester: a writer and a reader thread on one session.
pub struct Tester {
    writer: JoinHandle<(Option<Instant>, Option<Instant>)>,
    reader: JoinHandle<u64>,
}

impl Tester {
    /// Starts a tester on `est`: it writes `chunks` once the gate opens, then keeps the
    /// session alive; its reader decodes and discards whatever the DUT sends.
    pub fn spawn(est: Established, chunks: Arc<Vec<Bytes>>, control: Arc<Control>) -> Result<Tester, String> {
        Tester::spawn_then(est, chunks, None, control)
    }

    /// [`Tester::spawn`], and once the withdrawal gate opens ([`Control::open_withdraw_gate`])
    /// it writes `withdrawals`.
    pub fn spawn_then(
        est: Established,
        chunks: Arc<Vec<Bytes>>,
        withdrawals: Option<Arc<Vec<Bytes>>>,
        control: Arc<Control>,
    ) -> Result<Tester, String> {
        let name = est.name.clone();
        let mut wstream = est.stream.try_clone().map_err(|e| format!("{name}: {e}"))?;
        let wcontrol = control.clone();
        let wname = name.clone();
        let writer = std::thread::Builder::new()
            .name(format!("{name}-w"))
            .spawn(move || {
                if !wcontrol.wait_gate() {
                    return (None, None);
                }
                let first = Some(Instant::now());
                let mut last_keepalive = Instant::now();
                for chunk in chunks.iter() {
                    if let Err(e) = write_fully(&mut wstream, chunk, &wcontrol) {
                        wcontrol.fail(format!("{wname}: {e}"));
                        return (first, None);
                    }
                    if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
                        let _ = write_fully(&mut wstream, &KEEPALIVE, &wcontrol);
                        last_keepalive = Instant::now();
                    }
                }
                let last = Some(Instant::now());
                wcontrol.writers_done.fetch_add(1, Ordering::SeqCst);
                wcontrol.try_finish();
                if let Some(w) = withdrawals.filter(|_| wcontrol.wait_withdraw_gate()) {
                    let now = Instant::now();
                    wcontrol.update_withdraw(|s| {
                        s.first_write.get_or_insert(now);
                    });
                    for chunk in w.iter() {
                        if let Err(e) = write_fully(&mut wstream, chunk, &wcontrol) {
                            wcontrol.fail(format!("{wname}: {e}"));
                            return (first, last);
                        }
                    }
                }
                keepalives(&mut wstream, &wcontrol, last_keepalive);
                (first, last)
            })
            .map_err(|e| format!("{name}: thread: {e}"))?;
        let reader = std::thread::Builder::new()
            .name(format!("{name}-r"))
            .spawn(move || {
                let Established { mut stream, ctx, leftover, name } = est;
                let mut reader = Reader::new(leftover);
                let mut received = 0u64;
                while !control.stopping() {
                    let r = reader.fill(&mut stream).and_then(|open| {
                        reader.drain(&ctx, |m, _| {
                            match m {
                                Message::Update(u) => received += (u.nlri.len() + u.withdrawn.len()) as u64,
                                Message::Notification(n) => return Err(format!("NOTIFICATION from the DUT: {n:?}")),
                                _ => {}
                            }
                            Ok(())
                        })?;
                        Ok(open)
                    });
                    match r {
                        Ok(true) => {}
                        Ok(false) => {
                            control.fail(format!("{name}: the DUT closed the session"));
                            break;
                        }
                        Err(e) => {
                            control.fail(format!("{name}: {e}"));
                            break;
                        }
                    }
                }
                received
            })
            .map_err(|e| format!("{name}: thread: {e}"))?;
        Ok(Tester { writer, reader })
    }

    /// Waits for both threads (they end once the run is stopping).
    pub fn join(self) -> TesterReport {
        let (first_write, last_write) = self.writer.join().unwrap_or((None, None));
        let received = self.reader.join().unwrap_or(0);
        TesterReport { first_write, last_write, received }
    }
}

/// Sends a KEEPALIVE every [`KEEPALIVE_EVERY`] until the run stops.
fn keepalives(stream: &mut TcpStream, control: &Control, mut last: Instant) {
    while !control.stopping() {
        std::thread::sleep(IO_TICK);
        if last.elapsed() >= KEEPALIVE_EVERY {
            if write_fully(stream, &KEEPALIVE, control).is_err() {
                return;
            }
            last = Instant::now();
        }
    }
}

// ----- the monitor ---------------------------------------------------------------------------

/// The monitor's table and how far it is from the expected one.
pub struct Table {
    routes: HashMap<u64, u32, foldhash::fast::RandomState>,
    matching: usize,
    extra: usize,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table { routes: HashMap::default(), matching: 0, extra: 0 }
    }

    fn contribution(expected: &Expected, key: u64, origin: Option<u32>) -> (usize, usize) {
        match (expected.get(&key), origin) {
            (Some(Want::Any), Some(_)) => (1, 0),
            (Some(Want::OriginAs(want)), Some(got)) if *want == got => (1, 0),
            (None, Some(_)) => (0, 1),
            _ => (0, 0),
        }
    }

    /// Sets the route to `key` (`origin`: its origin AS, 0 if none) or withdraws it (`None`).
    pub fn set(&mut self, expected: &Expected, key: u64, origin: Option<u32>) {
        let old = match origin {
            Some(o) => self.routes.insert(key, o),
            None => self.routes.remove(&key),
        };
        let (m0, e0) = Self::contribution(expected, key, old);
        let (m1, e1) = Self::contribution(expected, key, origin);
        self.matching = self.matching + m1 - m0;
        self.extra = self.extra + e1 - e0;
    }

    /// Routes held as expected.
    pub fn matching(&self) -> usize {
        self.matching
    }

    /// Routes held that are not expected.
    pub fn extra(&self) -> usize {
        self.extra
    }

    /// Whether the table is exactly the expected one.
    pub fn complete(&self, expected: &Expected) -> bool {
        self.matching == expected.len() && self.extra == 0
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

/// Applies one UPDATE to the table.
pub fn apply(table: &mut Table, expected: &Expected, m: &Message, withdraw_all: bool) {
    let Message::Update(u) = m else { return };
    for w in &u.withdrawn {
        table.set(expected, key(w.prefix), None);
    }
    if u.nlri.is_empty() {
        return;
    }
    let origin = if withdraw_all { None } else { Some(u.as_path().and_then(|p| p.origin_asn()).unwrap_or(0)) };
    for n in &u.nlri {
        table.set(expected, key(n.prefix), origin);
    }
}

/// Starts the monitor on its session with the DUT: it applies every UPDATE to its table and
/// tells `control` whether the table is exactly `expected`.
pub fn spawn_monitor(
    est: Established,
    expected: Arc<Expected>,
    control: Arc<Control>,
) -> Result<JoinHandle<Table>, String> {
    let name = est.name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let Established { mut stream, ctx, leftover, name } = est;
            let mut reader = Reader::new(leftover);
            let mut table = Table::new();
            let mut last_keepalive = Instant::now();
            let mut was_complete = false;
            let mut first_seen = false;
            // Settle is read after the run finished, too: keep reading until stopped.
            while !control.stopping() {
                let r = reader.fill(&mut stream).and_then(|open| {
                    reader.drain(&ctx, |m, withdraw_all| {
                        if let Message::Notification(n) = &m {
                            return Err(format!("NOTIFICATION from the DUT: {n:?}"));
                        }
                        apply(&mut table, &expected, &m, withdraw_all);
                        Ok(())
                    })?;
                    Ok(open)
                });
                control.progress.store(table.matching() as u64, Ordering::Relaxed);
                control.extra.store(table.extra() as u64, Ordering::Relaxed);
                // Nothing is sent before the gate opens: the first prefix held is
                // the first route out of the DUT (to within one read).
                let held = table.matching() + table.extra();
                if !first_seen && held > 0 {
                    control.mark_first_out(Instant::now());
                    first_seen = true;
                }
                // The withdrawal phase starts from the complete table.
                if control.withdraw().gate.is_some() && held < expected.len() {
                    let now = Instant::now();
                    control.update_withdraw(|w| {
                        w.first_out.get_or_insert(now);
                        if held == 0 {
                            w.all_out.get_or_insert(now);
                        }
                    });
                }
                let complete = table.complete(&expected);
                if complete != was_complete || complete {
                    control.set_complete(complete);
                    was_complete = complete;
                }
                if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
                    let _ = write_fully(&mut stream, &KEEPALIVE, &control);
                    last_keepalive = Instant::now();
                }
                match r {
                    Ok(true) => {}
                    Ok(false) => {
                        control.fail(format!("{name}: the DUT closed the session"));
                        break;
                    }
                    Err(e) => {
                        control.fail(format!("{name}: {e}"));
                        break;
                    }
                }
            }
            table
        })
        .map_err(|e| format!("{name}: thread: {e}"))
}

/// The generator check's monitor: listens on `addr`:179 in `ns` in the DUT's place, takes
/// `sessions` connections, decodes everything and puts it in one table per session; the
/// table is complete when `events` prefixes (announced + withdrawn) arrived in all.
pub struct Sink {
    threads: Vec<JoinHandle<()>>,
}

impl Sink {
    /// Listens now (before the testers connect); sessions are accepted by a thread.
    pub fn spawn(
        ns: &Ns,
        addr: Ipv4Addr,
        my_as: u32,
        sessions: usize,
        events: u64,
        control: Arc<Control>,
    ) -> Result<Sink, String> {
        let listener = ns
            .in_ns(|| TcpListener::bind(SocketAddrV4::new(addr, 179)))
            .map_err(|e| format!("entering {}: {e}", ns.name()))?
            .map_err(|e| format!("generator sink: bind {addr}:179: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("generator sink: {e}"))?;
        let total = Arc::new(AtomicU64::new(0));
        let acceptor = std::thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || {
                let mut readers = Vec::new();
                let mut n = 0;
                while n < sessions && !control.stopping() {
                    let stream = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        Err(e) => {
                            control.fail(format!("generator sink: accept: {e}"));
                            return;
                        }
                    };
                    n += 1;
                    let _ = stream.set_nonblocking(false);
                    let name = format!("sink-{n}");
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let est = match handshake(stream, my_as, addr, &name, deadline) {
                        Ok(e) => e,
                        Err(e) => {
                            control.fail(e);
                            return;
                        }
                    };
                    let (control, total) = (control.clone(), total.clone());
                    readers.push(std::thread::spawn(move || sink_session(est, events, &control, &total)));
                }
                for r in readers {
                    let _ = r.join();
                }
            })
            .map_err(|e| format!("generator sink: thread: {e}"))?;
        Ok(Sink { threads: vec![acceptor] })
    }

    /// Waits for the sink's threads (they end once the run is stopping).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn sink_session(est: Established, events: u64, control: &Control, total: &AtomicU64) {
    let Established { mut stream, ctx, leftover, name } = est;
    let mut reader = Reader::new(leftover);
    let nothing = Expected::default();
    let mut table = Table::new();
    let mut last_keepalive = Instant::now();
    while !control.stopping() {
        let mut got = 0u64;
        let r = reader.fill(&mut stream).and_then(|open| {
            reader.drain(&ctx, |m, withdraw_all| {
                if let Message::Update(u) = &m {
                    got += (u.nlri.len() + u.withdrawn.len()) as u64;
                }
                apply(&mut table, &nothing, &m, withdraw_all);
                Ok(())
            })?;
            Ok(open)
        });
        if got > 0 {
            let now = total.fetch_add(got, Ordering::SeqCst) + got;
            // Sessions race here: a max, so a slower session's smaller total never
            // overwrites a larger one stored after it.
            control.progress.fetch_max(now, Ordering::SeqCst);
            if now >= events {
                control.set_complete(true);
            }
        }
        if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
            let _ = write_fully(&mut stream, &KEEPALIVE, control);
            last_keepalive = Instant::now();
        }
        match r {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                control.fail(format!("{name}: {e}"));
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> u64 {
        key(s.parse().unwrap())
    }

    #[test]
    fn the_table_counts_matching_and_extra_routes_through_changes() {
        let expected: Expected =
            [(p("10.0.0.0/24"), Want::Any), (p("10.0.1.0/24"), Want::OriginAs(65002))].into_iter().collect();
        let mut t = Table::new();
        t.set(&expected, p("10.0.0.0/24"), Some(7));
        t.set(&expected, p("10.0.1.0/24"), Some(65001));
        assert_eq!((t.matching(), t.extra(), t.complete(&expected)), (1, 0, false));
        t.set(&expected, p("10.0.1.0/24"), Some(65002));
        assert!(t.complete(&expected));
        t.set(&expected, p("10.0.2.0/24"), Some(65002));
        assert_eq!((t.matching(), t.extra(), t.complete(&expected)), (2, 1, false));
        t.set(&expected, p("10.0.2.0/24"), None);
        t.set(&expected, p("10.0.2.0/24"), None);
        assert!(t.complete(&expected));
        t.set(&expected, p("10.0.0.0/24"), None);
        assert_eq!((t.matching(), t.extra()), (1, 0));
        // Same address, other length: another prefix.
        assert_ne!(p("10.0.0.0/24"), p("10.0.0.0/25"));
    }

    #[test]
    fn the_open_offers_ipv4_unicast_and_four_octet_as() {
        let bytes = open_bytes(65001, Ipv4Addr::new(10, 77, 0, 11)).unwrap();
        let frame = Message::decode(&bytes, &WireContext::new(false)).unwrap().unwrap();
        let Message::Open(o) = frame.message else { panic!("not an OPEN") };
        assert_eq!((o.asn(), o.hold_time), (65001, HOLD_TIME));
        assert!(o.capabilities().any(|c| *c == Capability::Multiprotocol(Family::IPV4_UNICAST)));
        assert!(o.capabilities().any(|c| *c == Capability::FourOctetAs(65001)));
        let k = Message::decode(&KEEPALIVE, &WireContext::new(false)).unwrap().unwrap();
        assert_eq!(k.message, Message::Keepalive);
    }

    #[test]
    fn the_gate_and_finish_line_need_every_writer_and_a_complete_table() {
        static NO: AtomicBool = AtomicBool::new(false);
        let c = Control::new(2, Instant::now() + Duration::from_secs(5), &NO);
        c.set_complete(true);
        c.writers_done.fetch_add(1, Ordering::SeqCst);
        c.try_finish();
        assert!(c.wait_done(Instant::now()).is_none());
        c.writers_done.fetch_add(1, Ordering::SeqCst);
        c.try_finish();
        assert!(c.wait_done(Instant::now()).is_some());
        c.request_stop();
        assert!(!c.wait_gate());
    }
}
