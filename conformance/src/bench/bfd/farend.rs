//! The far end, inside its namespace (`bench bfd __farend …`): one active BFD session of
//! `bgpd_proto::bfd` per far address, 300 ms x 3, on one tokio thread. Each session sends
//! from its own address and source port (49152-65535) with TTL 255 to the DUT's port 3784
//! and receives on its address's port 3784. It does not check the TTL of what it
//! receives (the crate has no `IP_RECVTTL`; the DUT is the one under test).
//!
//! It reports on stdout and takes commands on stdin ([`super::lines`]): sessions Up, any
//! session leaving Up unasked (a false Down, with its cause), and on `silence I` a
//! detection sample: session I stops sending, and the time from the last packet it sent
//! to the arrival of the DUT's packet saying Down is reported; then it sends again and
//! comes Up as any session does. With `--bgp-peers L` it also answers BGP on the first
//! L addresses, the first of which sends a full table round after round on `load start`
//! ([`super::load`]). It exits when its stdin closes or its lifetime ends.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgpd_proto::bfd::{BfdConfig, BfdEvent, BfdSession, ControlPacket, Diag, State};
use tokio::sync::mpsc;

use super::lines::{Command, DownCause, Report};
use super::{far_addr, BFD_PORT, DETECT_MULT, DUT_ADDR, IDLE_TX, INTERVAL, MAX_SESSIONS};
use crate::bench::args::Flags;

/// How long a detection sample waits for the DUT's Down before it gives up.
const SAMPLE_LIMIT: Duration = Duration::from_secs(10);

/// The far end's arguments.
struct Args {
    sessions: usize,
    lifetime: Duration,
    bgp_peers: usize,
    table_prefixes: usize,
    load_period: Duration,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        sessions: 0,
        lifetime: Duration::from_secs(600),
        bgp_peers: 0,
        table_prefixes: 0,
        load_period: Duration::from_secs(5),
    };
    let far_end = |e: String| format!("far end: {e}");
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--sessions" => a.sessions = flags.number().map_err(far_end)?,
            "--lifetime-secs" => a.lifetime = Duration::from_secs(flags.number().map_err(far_end)?),
            "--bgp-peers" => a.bgp_peers = flags.number().map_err(far_end)?,
            "--table-prefixes" => a.table_prefixes = flags.number().map_err(far_end)?,
            "--load-period-ms" => a.load_period = Duration::from_millis(flags.number().map_err(far_end)?),
            _ => return Err(far_end(flags.unknown())),
        }
    }
    if !(1..=MAX_SESSIONS).contains(&a.sessions) {
        return Err(format!("far end: --sessions must be 1 to {MAX_SESSIONS}"));
    }
    if a.bgp_peers > a.sessions {
        return Err("far end: more BGP peers than sessions".into());
    }
    Ok(a)
}

/// Prints one report on stdout, at once.
pub(super) fn say(r: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{r}");
    let _ = out.flush();
}

/// What the sessions share with the command reader.
#[derive(Default)]
struct Shared {
    up: AtomicUsize,
    received: AtomicU64,
    sent: AtomicU64,
    discarded: AtomicU64,
    /// Per session while Up: (this side's TX interval, the DUT's, this side's detection time), ms.
    views: Mutex<Vec<Option<(u64, u64, u64)>>>,
}

impl Shared {
    fn set_view(&self, i: usize, v: Option<(u64, u64, u64)>) {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = views.get_mut(i) {
            *slot = v;
        }
    }

    fn intervals(&self) -> BTreeMap<(u64, u64, u64), usize> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let mut by = BTreeMap::new();
        for v in views.iter().flatten() {
            *by.entry(*v).or_insert(0) += 1;
        }
        by
    }
}

/// The far end's entry point.
pub(super) fn main(args: &[String]) -> Result<(), String> {
    let args = parse(args)?;
    let lifetime = args.lifetime;
    // Bounded: it ends after its lifetime even if the bench never closes its stdin.
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        std::process::exit(0);
    });
    let load = if args.bgp_peers > 0 {
        Some(super::load::spawn(args.bgp_peers, args.table_prefixes.max(1), args.load_period)?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared { views: Mutex::new(vec![None; args.sessions]), ..Shared::default() });
    let mut silence = Vec::with_capacity(args.sessions);
    rt.block_on(async {
        for i in 0..args.sessions {
            let (rx, tx) = sockets(i)?;
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            silence.push(cmd_tx);
            tokio::spawn(session(i, rx, tx, shared.clone(), cmd_rx));
        }
        Ok::<(), String>(())
    })?;
    say(&Report::Ready);
    let reader_shared = shared.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.parse::<Command>() {
                Ok(Command::Silence(i)) => match silence.get(i) {
                    Some(tx) => {
                        let _ = tx.send(());
                    }
                    None => say(&Report::Error(format!("no session {i}"))),
                },
                Ok(Command::Stats) => say(&Report::Stats {
                    received: reader_shared.received.load(Ordering::Relaxed),
                    sent: reader_shared.sent.load(Ordering::Relaxed),
                    discarded: reader_shared.discarded.load(Ordering::Relaxed),
                }),
                Ok(Command::Intervals) => {
                    for ((tx_ms, rx_ms, detect_ms), count) in reader_shared.intervals() {
                        say(&Report::Intervals { tx_ms, rx_ms, detect_ms, count });
                    }
                    say(&Report::IntervalsEnd);
                }
                Ok(Command::Load(on)) => match &load {
                    Some(l) => {
                        let _ = l.send(on);
                    }
                    None => say(&Report::Error("no load peers (--bgp-peers 0)".into())),
                },
                Err(e) => say(&Report::Error(e)),
            }
        }
        // The bench closed our stdin: it is done with us.
        std::process::exit(0);
    });
    rt.block_on(std::future::pending::<()>());
    Ok(())
}

/// Session `i`'s receiving socket (its address, port 3784) and sending socket (its
/// address, a port of its own in 49152-65535, TTL 255: RFC 5881 §4, §5).
fn sockets(i: usize) -> Result<(tokio::net::UdpSocket, UdpSocket), String> {
    let addr = far_addr(i);
    let rx = UdpSocket::bind((addr, BFD_PORT)).map_err(|e| format!("far end: bind {addr}:{BFD_PORT}: {e}"))?;
    rx.set_nonblocking(true).map_err(|e| format!("far end: {e}"))?;
    let rx = tokio::net::UdpSocket::from_std(rx).map_err(|e| format!("far end: {e}"))?;
    let first = 49152 + (i % 16384) as u16;
    let mut last = String::new();
    for k in 0..64u16 {
        let port = 49152 + (first - 49152 + k) % 16384;
        match UdpSocket::bind((addr, port)) {
            Ok(tx) => {
                tx.set_ttl(255).map_err(|e| format!("far end: TTL 255: {e}"))?;
                tx.set_nonblocking(true).map_err(|e| format!("far end: {e}"))?;
                return Ok((rx, tx));
            }
            Err(e) => last = format!("far end: bind {addr}:{port}: {e}"),
        }
    }
    Err(last)
}

/// The far end's timers: what the DUT is configured with.
fn config() -> BfdConfig {
    BfdConfig {
        desired_min_tx: INTERVAL,
        required_min_rx: INTERVAL,
        detect_mult: DETECT_MULT,
        idle_tx: IDLE_TX,
        passive: false,
    }
}

/// A detection sample under way: the session is silent.
#[derive(Clone, Copy)]
struct Sample {
    /// The last packet sent before the silence: the DUT's detection timer runs from its arrival.
    last_sent: Option<Instant>,
    /// When the DUT's packet saying Down arrived.
    down_at: Option<Instant>,
    give_up: Instant,
}

/// One session: sends what its [`BfdSession`] wants (unless silent), feeds it what arrives.
async fn session(
    i: usize,
    rx: tokio::net::UdpSocket,
    tx: UdpSocket,
    shared: Arc<Shared>,
    mut silence: mpsc::UnboundedReceiver<()>,
) {
    let dut = SocketAddr::from((DUT_ADDR, BFD_PORT));
    // Discriminators 1..=N are unique in this far end; the seed spreads the jitter.
    let discr = u32::try_from(i + 1).unwrap_or(u32::MAX);
    let mut bfd = match BfdSession::new(config(), discr, 0x9E37_79B9_7F4A_7C15 ^ i as u64, Instant::now()) {
        Ok(s) => s,
        Err(e) => {
            say(&Report::Error(format!("session {i}: {e}")));
            return;
        }
    };
    let mut last_sent: Option<Instant> = None;
    let mut sample: Option<Sample> = None;
    // Between a sample's Down and Up again.
    let mut resuming = false;
    let mut remote_state = State::Down;
    let mut buf = [0u8; 128];
    loop {
        let now = Instant::now();
        bfd.handle_timeout(now);
        loop {
            while let Some(p) = bfd.poll_transmit(now) {
                if sample.is_some() {
                    // Silent: the packet is lost on purpose.
                    continue;
                }
                if tx.send_to(&p.encode(), dut).is_ok() {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    last_sent = Some(now);
                }
            }
            let mut any = false;
            while let Some(BfdEvent::StateChanged { from, to, diag, .. }) = bfd.poll_event() {
                any = true;
                if to == State::Up {
                    let k = shared.up.fetch_add(1, Ordering::Relaxed) + 1;
                    say(&Report::Up(k));
                    resuming = false;
                }
                if from == State::Up {
                    let k = shared.up.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                    shared.set_view(i, None);
                    match sample.take() {
                        Some(s) => {
                            let took = s.down_at.zip(s.last_sent).map(|(d, l)| ms(d.saturating_duration_since(l)));
                            say(&Report::Detect {
                                index: i,
                                ms: took.filter(|_| diag != Diag::CONTROL_DETECTION_TIME_EXPIRED),
                            });
                            resuming = true;
                        }
                        None => {
                            let cause = match (diag, remote_state) {
                                (Diag::CONTROL_DETECTION_TIME_EXPIRED, _) => DownCause::Timeout,
                                (_, State::AdminDown) => DownCause::DutAdminDown,
                                _ => DownCause::DutDown,
                            };
                            say(&Report::Down { index: i, cause, up: k });
                        }
                    }
                }
            }
            if !any {
                break;
            }
        }
        let deadline = [bfd.poll_timeout(), sample.map(|s| s.give_up)].into_iter().flatten().min();
        tokio::select! {
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            } } => {
                if sample.is_some_and(|s| Instant::now() >= s.give_up) {
                    // No Down from the DUT in time: the sample failed; send again.
                    sample = None;
                    say(&Report::Detect { index: i, ms: None });
                }
            }
            r = rx.recv_from(&mut buf) => {
                let at = Instant::now();
                let Ok((len, _)) = r else { continue };
                match ControlPacket::decode(&buf[..len]) {
                    Ok(p) => {
                        remote_state = p.state;
                        if let Some(s) = sample.as_mut() {
                            if s.down_at.is_none() && matches!(p.state, State::Down | State::AdminDown) {
                                s.down_at = Some(at);
                            }
                        }
                        match bfd.handle_packet(at, &p) {
                            Ok(()) => {
                                shared.received.fetch_add(1, Ordering::Relaxed);
                                if bfd.state() == State::Up {
                                    let v = bfd.view();
                                    let m = |d: Duration| d.as_millis() as u64;
                                    shared.set_view(i, Some((m(v.tx_interval), m(v.rx_interval), m(v.detection_time))));
                                }
                            }
                            Err(_) => {
                                shared.discarded.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        shared.discarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            c = silence.recv() => match c {
                Some(()) if sample.is_none() && !resuming && bfd.state() == State::Up => {
                    sample = Some(Sample { last_sent, down_at: None, give_up: Instant::now() + SAMPLE_LIMIT });
                }
                Some(()) => {
                    say(&Report::Error(format!("session {i} is {} or mid-sample: no sample", bfd.state())));
                    say(&Report::Detect { index: i, ms: None });
                }
                None => return,
            },
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
