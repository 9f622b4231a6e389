//! The tokio driver: one task owns the netlink socket and the [`Engine`]; callers talk to
//! it through a [`FibHandle`] over a bounded channel.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::FibConfig;
use crate::engine::{Engine, FibEvent, Retire};
use crate::error::{FibError, RouteError};
use crate::metrics::FibMetrics;
use crate::netns::open_route_socket;
use crate::route::RouteChange;

/// Commands in flight between a [`FibHandle`] and the task; few, since each carries a batch.
const COMMAND_CHANNEL: usize = 16;
/// Largest datagram we read; dumps come in ~32 KiB pieces, notifications one per datagram.
const RECV_BUFFER: usize = 1 << 20;

enum Command {
    Apply(Vec<RouteChange>),
    Settled(oneshot::Sender<Vec<RouteError>>),
    Sweep,
    Retire(Retire, oneshot::Sender<usize>),
    Flush,
    Resync,
    Stop { remove_routes: bool, done: oneshot::Sender<()> },
}

/// The daemon's side of a running FIB: submit desired-route changes, learn per-route
/// errors, trigger the stale sweep, flush, shut down. Cheap to clone.
#[derive(Clone)]
pub struct FibHandle {
    commands: mpsc::Sender<Command>,
    graceful_restart: bool,
}

/// The task of a running FIB and its event stream.
pub struct Fib {
    /// Submit changes here.
    pub handle: FibHandle,
    /// Per-route failures and recoveries, resyncs. Drain it or drop it.
    pub events: mpsc::UnboundedReceiver<FibEvent>,
    /// The task; it ends after [`FibHandle::shutdown`] or when every handle is dropped.
    pub task: JoinHandle<Result<(), FibError>>,
}

impl Fib {
    /// Opens the socket (in `config.netns` if set), starts the task on the current tokio
    /// runtime and begins with a dump of links and of the table, so that routes already
    /// installed as wanted (say, kept through a restart) are not rewritten.
    pub fn spawn(config: FibConfig, metrics: FibMetrics) -> Result<Fib, FibError> {
        config.validate()?;
        let (socket, port) = open_route_socket(config.netns.as_deref(), config.receive_buffer)?;
        let (tx, rx) = mpsc::channel(COMMAND_CHANNEL);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let engine = Engine::new(&config, metrics.clone(), port);
        let task = tokio::spawn(run(socket, engine, rx, ev_tx, metrics, config.queue_capacity));
        Ok(Fib { handle: FibHandle { commands: tx, graceful_restart: config.graceful_restart }, events: ev_rx, task })
    }
}

impl FibHandle {
    async fn send(&self, cmd: Command) -> Result<(), FibError> {
        self.commands.send(cmd).await.map_err(|_| FibError::Stopped)
    }

    /// Submits changes; waits while the FIB's queue is full (backpressure). Changes to one
    /// prefix that are still queued are coalesced into one write.
    pub async fn apply(&self, changes: Vec<RouteChange>) -> Result<(), FibError> {
        self.send(Command::Apply(changes)).await
    }

    /// [`FibHandle::apply`] for callers outside the runtime.
    pub fn blocking_apply(&self, changes: Vec<RouteChange>) -> Result<(), FibError> {
        self.commands.blocking_send(Command::Apply(changes)).map_err(|_| FibError::Stopped)
    }

    /// Waits until everything submitted before is written and answered by the kernel (or
    /// failed), and returns the routes currently failing.
    pub async fn settled(&self) -> Result<Vec<RouteError>, FibError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Settled(tx)).await?;
        rx.await.map_err(|_| FibError::Stopped)
    }

    /// Ends the start-up grace: routes of ours the kernel had that are not desired now are
    /// removed (call once the routing protocol has converged, e.g. after End-of-RIB).
    pub async fn sweep_stale(&self) -> Result<(), FibError> {
        self.send(Command::Sweep).await
    }

    /// Removes the routes of the replaced protocols (`FibConfig::replaces`) that the table
    /// holds now, whatever their metric: the predecessor's routes go once ours are in (call
    /// after [`FibHandle::settled`]). [`Retire::Replaced`] removes only those of prefixes
    /// we have a route for, and then each one as ours for its prefix goes in;
    /// [`Retire::All`] removes all. Returns how many removals were queued; failures are
    /// logged and counted (`fib_errors_total`), a route already gone is fine, and what is
    /// left shows in `fib_predecessor_routes`.
    pub async fn retire_predecessors(&self, scope: Retire) -> Result<usize, FibError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Retire(scope, tx)).await?;
        rx.await.map_err(|_| FibError::Stopped)
    }

    /// Forgets every desired route and removes all routes of ours from the table.
    pub async fn flush(&self) -> Result<(), FibError> {
        self.send(Command::Flush).await
    }

    /// Re-reads links and the table and repairs any difference.
    pub async fn resync(&self) -> Result<(), FibError> {
        self.send(Command::Resync).await
    }

    /// Stops the task. With graceful restart configured our routes stay in the kernel;
    /// otherwise they are removed first.
    pub async fn shutdown(&self) -> Result<(), FibError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stop { remove_routes: !self.graceful_restart, done: tx }).await?;
        rx.await.map_err(|_| FibError::Stopped)
    }
}

async fn run(
    socket: TokioSocket,
    mut engine: Engine,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<FibEvent>,
    metrics: FibMetrics,
    queue_capacity: usize,
) -> Result<(), FibError> {
    let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
    // `socket.recv` appends: every use starts from an empty buffer.
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut waiters: Vec<oneshot::Sender<Vec<RouteError>>> = Vec::new();
    let mut stopping: Option<oneshot::Sender<()>> = None;
    let mut closed = false;
    loop {
        let mut progress = read_available(&socket, &mut rbuf, &mut engine)?;
        while !closed && stopping.is_none() && engine.queue_len() < queue_capacity {
            match commands.try_recv() {
                Ok(cmd) => {
                    progress = true;
                    handle_command(cmd, &mut engine, &mut waiters, &mut stopping);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        if engine.poll_transmit(&mut wbuf) {
            progress = true;
            send_all(&socket, &wbuf).await?;
        }
        while let Some(ev) = engine.poll_event() {
            if matches!(ev, FibEvent::Resynced) {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                metrics.last_reconcile.set(now);
            }
            // A dropped receiver only means nobody listens.
            let _ = events.send(ev);
        }
        if engine.is_settled() {
            for w in waiters.drain(..) {
                let _ = w.send(engine.failures());
            }
            if let Some(done) = stopping.take() {
                let _ = done.send(());
                return Ok(());
            }
            if closed {
                return Ok(());
            }
        }
        if progress {
            continue;
        }
        rbuf.clear();
        let accept = !closed && stopping.is_none() && engine.queue_len() < queue_capacity;
        tokio::select! {
            read = socket.recv(&mut rbuf) => match read {
                Ok(()) if rbuf.len() >= rbuf.capacity() => engine.handle_overrun(),
                Ok(()) => engine.handle_datagram(&rbuf),
                Err(e) if e.raw_os_error() == Some(libc_flags::ENOBUFS) => engine.handle_overrun(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(FibError::Socket { what: "recv", source }),
            },
            cmd = commands.recv(), if accept => match cmd {
                Some(cmd) => handle_command(cmd, &mut engine, &mut waiters, &mut stopping),
                None => closed = true,
            },
        }
    }
}

fn handle_command(
    cmd: Command,
    engine: &mut Engine,
    waiters: &mut Vec<oneshot::Sender<Vec<RouteError>>>,
    stopping: &mut Option<oneshot::Sender<()>>,
) {
    match cmd {
        Command::Apply(changes) => {
            engine.reserve(changes.len());
            for c in changes {
                engine.apply(c);
            }
        }
        Command::Settled(w) => waiters.push(w),
        Command::Sweep => engine.sweep(),
        Command::Retire(scope, tx) => {
            let _ = tx.send(engine.retire_predecessors(scope));
        }
        Command::Flush => engine.flush(),
        Command::Resync => engine.start_resync(),
        Command::Stop { remove_routes, done } => {
            if remove_routes {
                engine.flush();
            }
            *stopping = Some(done);
        }
    }
}

/// Reads every datagram waiting on the socket into the engine. True if any was read.
fn read_available(socket: &TokioSocket, rbuf: &mut Vec<u8>, engine: &mut Engine) -> Result<bool, FibError> {
    let mut any = false;
    loop {
        rbuf.clear();
        match socket.socket_ref().recv(rbuf, libc_flags::MSG_DONTWAIT | libc_flags::MSG_TRUNC) {
            Ok(n) if n > rbuf.capacity() => {
                tracing::warn!(len = n, "netlink datagram larger than the read buffer");
                engine.handle_overrun();
                any = true;
            }
            Ok(n) => {
                engine.handle_datagram(&rbuf[..n]);
                any = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
            Err(e) if e.raw_os_error() == Some(libc_flags::ENOBUFS) => {
                engine.handle_overrun();
                any = true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(FibError::Socket { what: "recv", source }),
        }
    }
}

async fn send_all(socket: &TokioSocket, buf: &[u8]) -> Result<(), FibError> {
    loop {
        match socket.send(buf).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(FibError::Socket { what: "send", source }),
        }
    }
}

/// The few libc constants used here, via nix's re-export.
mod libc_flags {
    pub const MSG_DONTWAIT: i32 = nix::libc::MSG_DONTWAIT;
    pub const MSG_TRUNC: i32 = nix::libc::MSG_TRUNC;
    pub const ENOBUFS: i32 = nix::libc::ENOBUFS;
}
