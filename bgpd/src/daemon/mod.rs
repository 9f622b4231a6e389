//! `bgpd run`: the daemon. It reads the datastore, runs a task per peer
//! (each owning a sans-IO [`bgpd_proto::session::Session`]), accepts
//! connections for them, serves the control socket and metrics, and applies
//! datastore edits without a restart: only the sessions an edit concerns
//! are reset. SIGTERM is a restart, taking the node out is a decommission
//! ([`lifecycle`]).

pub mod bfd;
mod control;
pub mod explain;
mod kernel;
mod lifecycle;
mod marker;
mod metrics;
pub mod nodestatus;
pub mod originate;
pub mod peer;
pub mod plan;
mod progress;
pub mod rib;
pub mod router_id;
mod sockopt;
pub mod spec;
pub mod status;
mod takeover;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bgpd_proto::error::code::cease;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use control::{ask, render, Request, StopHow};
pub use lifecycle::DEFAULT_DRAIN;
pub use takeover::{parse_with_system_names as parse_take_over, TakeOver, DEFAULT_HOLD as DEFAULT_TAKE_OVER_HOLD};

use crate::datastore::live::{self, DatastoreSpec, Feed};
use crate::datastore::{Model, ObjectKind, ObjectRef, Problem, ResourceKind, Severity, SourceText};
use peer::PeerCmd;
use spec::{NodeSpec, PeerSpec};
use status::Shared;

/// Options of `bgpd run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the model comes from (file, etcd, Kubernetes).
    pub datastore: DatastoreSpec,
    /// Where a Kubernetes datastore reads the Secrets of BGP passwords
    /// ([`live::secrets_namespace`]).
    pub secrets_namespace: String,
    /// This node's name.
    pub node: String,
    /// Where to serve the control socket.
    pub control_socket: PathBuf,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The kernel table to install learned routes and blackholes into;
    /// `None`: no kernel programming (`--no-kernel`).
    pub kernel_table: Option<u32>,
    /// How long a decommission lets traffic move before the sessions close
    /// (when the Node leaves the datastore, or `bgpd stop --withdraw`
    /// without `--drain`).
    pub drain: Duration,
    /// `--take-over`: the protocol of the speaker bgpd replaces (BIRD: 12), whose routes
    /// in the kernel table make the start a restart with forwarding state and are removed
    /// once bgpd's are in (needs the kernel table).
    pub take_over: Option<TakeOver>,
}

/// The daemon's tasks, as the main loop and its lifecycle steps reach them.
struct Tasks {
    rib: rib::RibHandle,
    kernel: Option<kernel::KernelHandle>,
    bfd: bfd::BfdHandle,
}

struct Running {
    spec: PeerSpec,
    cmds: mpsc::Sender<Box<PeerCmd>>,
    rib_key: u64,
}

/// On a reload, an object that is now invalid keeps its last good version
/// instead of disappearing: a typo in one BGPPeer must not tear its session
/// down, nor one in BGPConfiguration reset every session to defaults.
fn keep_last_good(model: &mut Model, problems: &[Problem], last: &Model) {
    for p in problems.iter().filter(|p| p.severity == Severity::Error) {
        let Some(ObjectRef { kind, name: Some(name) }) = &p.object else { continue };
        let ObjectKind::Read(kind) = kind else { continue };
        match kind {
            ResourceKind::BgpPeer => {
                // A BGPPeer is a peer or, with localWorkloadSelector, a local workload
                // peer: the last good version comes back as what it was.
                let now = model.peers.contains_key(name) || model.local_workload_peers.contains_key(name);
                if let (Some(old), false) = (last.peers.get(name), now) {
                    model.peers.insert(name.clone(), old.clone());
                }
                if let (Some(old), false) = (last.local_workload_peers.get(name), now) {
                    model.local_workload_peers.insert(name.clone(), old.clone());
                }
            }
            ResourceKind::Node => {
                if let Some(old) = last.nodes.get(name) {
                    model.nodes.entry(name.clone()).or_insert_with(|| old.clone());
                }
            }
            ResourceKind::IpamBlock => {
                if let Some(old) = last.ipam_blocks.get(name) {
                    model.ipam_blocks.entry(name.clone()).or_insert_with(|| old.clone());
                }
            }
            ResourceKind::BgpConfiguration if name == "default" => {
                model.bgp_configuration = last.bgp_configuration.clone()
            }
            _ => {}
        }
    }
}

/// Builds the model from the datastore's content and plans this node. A
/// content that cannot be parsed at all (a YAML syntax error) fails, and the
/// daemon keeps what it runs.
fn load(
    feed: &Feed,
    opts: &RunOptions,
    shared: &Shared,
    last: &mut Option<Model>,
) -> anyhow::Result<(NodeSpec, Vec<PeerSpec>)> {
    let sources = feed.sources.as_deref().map_or(&[][..], Vec::as_slice);
    let t0 = std::time::Instant::now();
    let loaded = crate::datastore::parse_input_memo(sources, &feed.ipam);
    let parsed = t0.elapsed();
    let mut s = shared.lock();
    let (mut model, problems) = match loaded {
        Ok(x) => x,
        Err(e) => {
            s.config_problems = vec![format!("the datastore content cannot be read, the last good model is kept: {e}")];
            return Err(e).context("reading the datastore");
        }
    };
    s.config_loaded_at = Some(SystemTime::now());
    s.config_problems = feed.notes.clone();
    s.config_problems.extend(problems.iter().map(|p| p.to_string()));
    for p in &problems {
        // Objects bgpd does not read (a Pod, say) are noted at debug level:
        // a warning on every reload would drown the real ones.
        match p.severity {
            Severity::Debug => tracing::debug!("datastore: {p}"),
            _ => warn!("datastore: {p}"),
        }
    }
    if let Some(last) = last.as_ref() {
        keep_last_good(&mut model, &problems, last);
    }
    let t1 = std::time::Instant::now();
    let (node, peers) = plan::plan(&model, &opts.node)?;
    tracing::debug!(
        parse_us = parsed.as_micros() as u64,
        plan_us = t1.elapsed().as_micros() as u64,
        "datastore model built"
    );
    s.node_status.update(&model, &node, &peers, SystemTime::now());
    *last = Some(model);
    s.originations.clone_from(&node.originations);
    Ok((node, peers))
}

/// Records whether the datastore is reachable, and since when it is not.
fn note_reachability(feed: &Feed, shared: &Shared) {
    let mut s = shared.lock();
    s.datastore_ok = feed.unreachable.is_none();
    s.datastore_unreachable = feed.unreachable.as_ref().map(|u| (u.since, u.reason.clone()));
}

/// Waits for the datastore's first complete content and loads it. A file
/// datastore must be readable at start; etcd and Kubernetes are waited for.
async fn first_load(
    feed: &mut watch::Receiver<Feed>,
    opts: &RunOptions,
    shared: &Shared,
    last: &mut Option<Model>,
) -> anyhow::Result<(NodeSpec, Vec<PeerSpec>, Arc<Vec<SourceText>>)> {
    let mut said = None;
    loop {
        let f = feed.borrow_and_update().clone();
        note_reachability(&f, shared);
        if let Some(sources) = &f.sources {
            let (node, peers) = load(&f, opts, shared, last)?;
            return Ok((node, peers, sources.clone()));
        }
        if let Some(u) = &f.unreachable {
            if let DatastoreSpec::File(path) = &opts.datastore {
                anyhow::bail!("reading the datastore {}: {}", path.display(), u.reason);
            }
            if said.as_ref() != Some(&u.reason) {
                warn!("waiting for the datastore: {}", u.reason);
                said = Some(u.reason.clone());
            }
        }
        feed.changed().await.map_err(|_| anyhow::anyhow!("the datastore task stopped"))?;
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        // Separate IPv4 and IPv6 listeners: the IPv6 one takes IPv6 only.
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    let l = socket.listen(128)?;
    // Keep each SYN, so GTSM can be checked per peer on accept.
    sockopt::set_save_syn(&l)?;
    Ok(l)
}

/// Sets each peer's TCP MD5 key on the listeners of its family, and
/// removes the keys of addresses that no longer have one (a peer gone, or
/// its password removed). Returns the peers' addresses whose key could not
/// be set: their connections are refused rather than accepted unsigned.
fn set_listener_keys(listeners: &[(SocketAddr, TcpListener)], peers: &[PeerSpec], old: &[PeerSpec]) -> Vec<IpAddr> {
    let mut failed = Vec::new();
    for (addr, l) in listeners {
        let keyed = |ip: IpAddr| peers.iter().any(|n| n.addr.ip() == ip && n.password.is_some());
        for p in old.iter().filter(|p| p.password.is_some() && !keyed(p.addr.ip())) {
            if p.addr.is_ipv6() == addr.is_ipv6() {
                if let Err(e) = sockopt::set_md5(l, p.addr.ip(), &[]) {
                    warn!(peer = %p.name, "cannot remove the TCP MD5 key of {} from {addr}: {e}", p.addr.ip());
                }
            }
        }
        for p in peers.iter().filter(|p| p.addr.is_ipv6() == addr.is_ipv6()) {
            if let Some(key) = &p.password {
                if let Err(e) = sockopt::set_md5(l, p.addr.ip(), key) {
                    warn!(peer = %p.name, "cannot set the TCP MD5 key on {addr}: {e}; its connections are refused");
                    failed.push(canonical(p.addr.ip()));
                }
            }
        }
    }
    failed
}

/// The log of connections refused because they come from no configured peer:
/// the first one, then at most one line per [`Refusals::EVERY`] with how many
/// there were (10,000 a second must not write 10,000 lines, `bench chaos`).
#[derive(Debug, Default)]
struct Refusals {
    /// Since when refusals are counted and not logged; how many, the last one.
    quiet: Option<(std::time::Instant, u64, SocketAddr)>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, from: SocketAddr) {
        let now = std::time::Instant::now();
        match &mut self.quiet {
            Some((since, n, last)) if now.duration_since(*since) < Self::EVERY => {
                *n += 1;
                *last = from;
            }
            Some((since, n, last)) => {
                info!(
                    "{} more connections refused in the last {} s: not from a configured peer (the last from {last})",
                    *n + 1,
                    now.duration_since(*since).as_secs()
                );
                self.quiet = Some((now, 0, from));
            }
            None => {
                info!("connection from {from} refused: not a configured peer");
                self.quiet = Some((now, 0, from));
            }
        }
    }
}

/// Whether a connection from `ip` may be handed to `peer`: refused when the
/// peer has a TCP MD5 key that could not be set on the listener (the
/// connection would otherwise be accepted unsigned).
fn md5_check(peer: &PeerSpec, ip: IpAddr, unkeyed: &[IpAddr]) -> Result<(), String> {
    if peer.password.is_some() && unkeyed.contains(&ip) {
        Err("its TCP MD5 key could not be set on the listener: an unsigned connection is not accepted".into())
    } else {
        Ok(())
    }
}

fn spawn_peer(node: &NodeSpec, spec: PeerSpec, shared: &Shared, rib: &rib::RibHandle) -> Running {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Boxed commands keep the channel's first block small (it holds 32
    // slots whatever the bound): a few hundred bytes per idle peer.
    let (tx, rx) = mpsc::channel(8);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let queue = Arc::new(rib::OutQueue::default());
    rib.send(rib::RibCmd::AddPeer { key, spec: Box::new(spec.clone()), tx: out_tx, queue: queue.clone() });
    let links = peer::Links { cmds: rx, rib: rib.clone(), key, from_rib: out_rx, queue };
    tokio::spawn(peer::run(node.clone(), spec.clone(), links, shared.clone()));
    Running { spec, cmds: tx, rib_key: key }
}

/// Where bgpd notes that it runs on this node (refreshed every tick), to
/// know after a start whether this is a restart (graceful restart).
fn marker_path(opts: &RunOptions) -> PathBuf {
    let dir = opts.control_socket.parent().map_or_else(|| PathBuf::from("/run/bgpd"), Path::to_path_buf);
    dir.join(format!("{}.running", opts.node))
}

/// How long after the last run was alive a start is still a restart: as
/// long as some peer may keep this node's routes, its restart time plus its
/// long-lived stale time (RFC 9494) at the longest. (A reboot clears the
/// marker: `/run` is a tmpfs, and the kernel lost its routes too.)
fn restart_window(peers: &[PeerSpec]) -> Duration {
    let longest = peers
        .iter()
        .filter_map(|p| p.restart_time.map(|t| u64::from(t) + u64::from(p.long_lived_stale_time.unwrap_or(0))))
        .max();
    Duration::from_secs(longest.unwrap_or(120))
}

/// Whether a load failed because this node no longer runs BGP: its Node is
/// gone from the datastore, or has no BGP address any more.
fn node_left(e: &anyhow::Error) -> bool {
    e.downcast_ref::<plan::PlanError>().is_some()
}

/// Runs the daemon until SIGINT or SIGTERM (a restart), or until `bgpd
/// stop` (a restart, or with `--withdraw` a decommission).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    progress::exit_on_panic();
    let shared = Shared::default();
    let mut last_model = None;
    let mut feed = live::spawn(&opts.datastore, &opts.secrets_namespace, &opts.node);
    let (mut node, peers, mut loaded) = first_load(&mut feed, &opts, &shared, &mut last_model).await?;
    let marker_at = marker_path(&opts);
    let window = restart_window(&peers);
    let kernel_on = opts.kernel_table.is_some();
    let mut assessed = marker::assess(&marker_at, SystemTime::now(), window, kernel_on);
    if let (Some(take), Some(table)) = (&opts.take_over, opts.kernel_table) {
        let found = fib::count_routes(table, take.protocol, None).with_context(|| {
            format!("--take-over {}: reading the routes of protocol {} in table {table}", take.name, take.protocol)
        })?;
        takeover::assess(&mut assessed, take, table, found);
    }
    node.restart = assessed.restart;
    let mut marker = marker::Marker::create(&marker_at, SystemTime::now(), kernel_on, assessed.quick_restarts)
        .with_context(|| format!("writing the restart marker {}", marker_at.display()))?;
    info!(
        node = %node.name, router_id = %node.router_id, router_id_from = node.router_id_source.as_str(),
        asn = node.asn, peers = peers.len(),
        restarting = node.restart.restarting, forwarding = node.restart.forwarding, "starting: {}", assessed.why
    );
    let kernel = match opts.kernel_table {
        // The previous run's routes are kept (until deferral ends) only when its forwarding state is claimed.
        Some(table) => {
            let opts = kernel::KernelOptions { table, take_over: opts.take_over.clone() };
            Some(kernel::spawn(&opts, node.restart.forwarding, shared.clone())?)
        }
        None => None,
    };
    // The kernel task follows the IP pools' encapsulation (ipipMode) itself.
    let kernel_handle = kernel.clone();
    kernel::send_encap(kernel_handle.as_ref(), last_model.as_ref(), &opts.node);
    let rib = rib::spawn(&node, node.restart.restarting, shared.clone(), kernel);
    rib.send(rib::RibCmd::Node(Box::new(node.clone())));
    let (bfd_notices_tx, mut bfd_notices) = mpsc::unbounded_channel();
    let tasks = Tasks {
        rib: rib.clone(),
        kernel: kernel_handle.clone(),
        bfd: bfd::spawn(shared.clone(), bfd_notices_tx).context("starting the BFD task")?,
    };
    if !assessed.bfd.is_empty() {
        // The remotes hold these sessions Up for their detection time from the
        // previous run's stop: resumed if their peers are configured by then.
        let left = assessed.bfd.iter().map(bfd::ResumeRecord::remote_detection_time).max().unwrap_or_default();
        info!(sessions = assessed.bfd.len(), "BFD: resuming the previous run's sessions");
        tasks.bfd.send(bfd::BfdCmd::Resume(assessed.bfd.clone(), std::time::Instant::now() + left));
    }
    let (life_tx, mut life_rx) = mpsc::unbounded_channel();

    // Metrics first, bound here and handed over: once the control socket
    // answers, `/readyz` answers too.
    if let Some(addr) = opts.metrics {
        let m = shared.clone();
        let l = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, m).await {
                warn!("metrics {addr}: {e}");
            }
        });
    }
    let control_path = opts.control_socket.clone();
    let ctl = control::Control { shared: shared.clone(), rib: Some(rib.clone()), lifecycle: Some(life_tx) };
    tokio::spawn(async move {
        if let Err(e) = control::serve(&control_path, ctl).await {
            warn!("control socket {}: {e}", control_path.display());
        }
    });

    let mut listeners = Vec::new();
    for a in &node.listen {
        match listen(*a) {
            Ok(l) => listeners.push((*a, l)),
            Err(e) => warn!("cannot listen on {a}: {e}"),
        }
    }
    anyhow::ensure!(!listeners.is_empty(), "no listening address could be bound ({:?})", node.listen);
    let mut unkeyed = set_listener_keys(&listeners, &peers, &[]);
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr)>(64);
    let listeners = std::sync::Arc::new(listeners);
    for i in 0..listeners.len() {
        let ls = listeners.clone();
        let tx = accepted_tx.clone();
        tokio::spawn(async move {
            loop {
                match ls[i].1.accept().await {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // E.g. out of descriptors: retry shortly instead of spinning.
                        warn!("accept on {}: {e}", ls[i].0);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    nodestatus::writer::spawn(&opts.datastore, opts.node.clone(), shared.clone(), Some(rib.clone()), feed.clone());

    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for p in peers {
        running.insert(p.name.clone(), spawn_peer(&node, p, &shared, &rib));
    }
    set_bfd(&tasks, &node, &running);
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut phase = lifecycle::Phase::Running;
    // `bgpd stop` without --withdraw: answered once stopped.
    let mut restart_reply: Option<tokio::sync::oneshot::Sender<serde_json::Value>> = None;
    let mut refusals = Refusals::default();
    loop {
        let drain_until = match &phase {
            lifecycle::Phase::Draining { until, .. } => Some(*until),
            _ => None,
        };
        tokio::select! {
            Some((stream, from)) = accepted.recv() => {
                let ip = canonical(from.ip());
                match running.values().find(|r| canonical(r.spec.addr.ip()) == ip) {
                    Some(r) => match md5_check(&r.spec, ip, &unkeyed).and_then(|()| gtsm_check(&stream, &r.spec)) {
                        Ok(()) => { let _ = r.cmds.send(Box::new(PeerCmd::Accepted(stream))).await; }
                        Err(why) => {
                            warn!(peer = %r.spec.name, "connection from {from} refused: {why}");
                            shared.note_failure(&r.spec.name, format!("incoming connection refused: {why}"));
                        }
                    },
                    None => {
                        shared.lock().refused_unconfigured += 1;
                        refusals.note(from);
                    }
                }
            }
            _ = tick.tick() => {
                shared.lock().heartbeat = Some(std::time::Instant::now());
                if !matches!(phase, lifecycle::Phase::Decommissioned) {
                    marker.touch();
                }
                ticks += 1;
                // Interfaces come and go: which peers get BFD is checked again every 5 s.
                if ticks % 10 == 0 {
                    set_bfd(&tasks, &node, &running);
                }
            }
            Some(n) = bfd_notices.recv() => {
                if let Some(r) = running.get(&n.peer) {
                    let _ = r.cmds.send(Box::new(PeerCmd::Bfd { up: n.up, failure: n.failure })).await;
                }
            }
            changed = feed.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the datastore task stopped");
                }
                let f = feed.borrow_and_update().clone();
                note_reachability(&f, &shared);
                let Some(sources) = f.sources.as_ref() else { continue };
                if Arc::ptr_eq(sources, &loaded) {
                    continue;
                }
                loaded = sources.clone();
                match (load(&f, &opts, &shared, &mut last_model), &mut phase) {
                    (Err(e), lifecycle::Phase::Running) if node_left(&e) => {
                        phase = lifecycle::start_drain(&rib, &shared, opts.drain, format!("{e:#}"), false);
                    }
                    (Err(e), _) if node_left(&e) => {}
                    (Err(e), _) => warn!("datastore reload failed, keeping the last good configuration: {e:#}"),
                    (Ok((mut new_node, new_peers)), current) => {
                        match current {
                            lifecycle::Phase::Draining { exit: false, .. } => {
                                lifecycle::cancel_drain(&rib, &shared);
                                phase = lifecycle::Phase::Running;
                            }
                            lifecycle::Phase::Decommissioned => {
                                info!("the Node is back in the datastore: starting again (a clean start)");
                                marker = marker::Marker::create(&marker_at, SystemTime::now(), kernel_on, 0)
                                    .with_context(|| format!("writing the restart marker {}", marker_at.display()))?;
                                node.restart = marker::Restart::default();
                                shared.lock().lifecycle = status::Lifecycle::Running;
                                phase = lifecycle::Phase::Running;
                            }
                            _ => {}
                        }
                        let old: Vec<PeerSpec> = running.values().map(|r| r.spec.clone()).collect();
                        unkeyed = set_listener_keys(&listeners, &new_peers, &old);
                        new_node.restart = node.restart;
                        let t = std::time::Instant::now();
                        apply(&mut running, &mut node, new_node, new_peers, &shared, &rib).await;
                        set_bfd(&tasks, &node, &running);
                        tracing::debug!(apply_us = t.elapsed().as_micros() as u64, "datastore change applied");
                        kernel::send_encap(kernel_handle.as_ref(), last_model.as_ref(), &opts.node);
                    }
                }
            }
            Some(cmd) = life_rx.recv() => match cmd {
                control::LifecycleCmd::Stop { how: StopHow::Restart, reply, .. } => {
                    if let lifecycle::Phase::Draining { .. } = phase {
                        let _ = reply.send(serde_json::json!({ "error": "decommissioning already: the daemon stops when it is done" }));
                        continue;
                    }
                    restart_reply = Some(reply);
                    break;
                }
                control::LifecycleCmd::Stop { how: StopHow::Stop, reply, .. } => {
                    // A deliberate stop: the decommission without its drain.
                    let why = "bgpd stop".to_string();
                    phase = match std::mem::replace(&mut phase, lifecycle::Phase::Running) {
                        lifecycle::Phase::Draining { why, mut replies, .. } => {
                            replies.push(reply);
                            lifecycle::Phase::Draining { until: tokio::time::Instant::now(), why, exit: true, replies }
                        }
                        _ => lifecycle::Phase::Draining { until: tokio::time::Instant::now(), why, exit: true, replies: vec![reply] },
                    };
                    finish_drain(&mut phase, &mut running, &mut node, &tasks, &marker, &shared).await;
                    return stopped(&opts).await;
                }
                control::LifecycleCmd::Stop { how: StopHow::Withdraw, drain, reply } => match &mut phase {
                    lifecycle::Phase::Draining { replies, exit, .. } => {
                        *exit = true;
                        replies.push(reply);
                    }
                    lifecycle::Phase::Decommissioned => {
                        let _ = reply.send(serde_json::json!({ "stopped": "decommissioned already; bgpd exits" }));
                        return stopped(&opts).await;
                    }
                    lifecycle::Phase::Running => {
                        let why = "bgpd stop --withdraw".to_string();
                        phase = lifecycle::start_drain(&rib, &shared, drain.unwrap_or(opts.drain), why, true);
                        if let lifecycle::Phase::Draining { replies, .. } = &mut phase {
                            replies.push(reply);
                        }
                    }
                },
            },
            _ = async { match drain_until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                if let Some(exit) = finish_drain(&mut phase, &mut running, &mut node, &tasks, &marker, &shared).await {
                    if exit {
                        return stopped(&opts).await;
                    }
                }
            }
            // SIGINT or SIGTERM: a restart, but during a decommission the
            // decommission ends at once and the daemon exits.
            _ = async { tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} } } => {
                if let lifecycle::Phase::Draining { .. } = phase {
                    info!("signal during the decommission: the sessions close now");
                    finish_drain(&mut phase, &mut running, &mut node, &tasks, &marker, &shared).await;
                }
                if !matches!(phase, lifecycle::Phase::Running) {
                    return stopped(&opts).await;
                }
                break;
            }
        }
    }
    lifecycle::stop_for_restart(&running, &tasks, &mut marker).await;
    if let Some(r) = restart_reply {
        let _ = r.send(serde_json::json!({ "stopped": "stopped for a restart: peers keep this node's routes as graceful restart helpers" }));
    }
    stopped(&opts).await
}

/// The drain time is over: decommissions. Returns whether the daemon exits
/// (`None` when it was not draining).
async fn finish_drain(
    phase: &mut lifecycle::Phase,
    running: &mut BTreeMap<String, Running>,
    node: &mut NodeSpec,
    tasks: &Tasks,
    marker: &marker::Marker,
    shared: &Shared,
) -> Option<bool> {
    let lifecycle::Phase::Draining { why, exit, replies, .. } =
        std::mem::replace(phase, lifecycle::Phase::Decommissioned)
    else {
        return None;
    };
    lifecycle::decommission(running, node, tasks, marker, &why).await;
    shared.lock().lifecycle = status::Lifecycle::Decommissioned { why: why.clone() };
    for r in replies {
        let _ = r.send(serde_json::json!({ "stopped": format!("decommissioned ({why}): sessions closed with Cease, kernel routes removed") }));
    }
    if !exit {
        info!("decommissioned ({why}); waiting for the Node to come back");
    }
    Some(exit)
}

/// Tells the BFD task which sessions the running peers need.
fn set_bfd(tasks: &Tasks, node: &NodeSpec, running: &BTreeMap<String, Running>) {
    tasks.bfd.send(bfd::BfdCmd::Set(bfd::sessions_for(node, running.values().map(|r| &r.spec))));
}

/// The last words of a stopping daemon: the answers to `bgpd stop` get
/// written, the control socket goes.
async fn stopped(opts: &RunOptions) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::fs::remove_file(&opts.control_socket);
    Ok(())
}

/// GTSM (RFC 5082) for an incoming connection: the peer's SYN must have
/// arrived with a TTL of at least 256 − hops.
fn gtsm_check(stream: &TcpStream, peer: &PeerSpec) -> Result<(), String> {
    let Some(hops) = peer.ttl_security else { return Ok(()) };
    let need = sockopt::gtsm_min_ttl(hops);
    match sockopt::syn_ttl(stream) {
        Ok(ttl) if ttl >= need => Ok(()),
        Ok(ttl) => Err(format!("GTSM: the SYN arrived with TTL {ttl}, ttlSecurity {hops} needs at least {need}")),
        Err(e) => Err(format!("GTSM: cannot read the SYN's TTL ({e})")),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Applies a new plan: peers whose session settings changed or that are
/// gone are stopped (Cease), new ones started; the others keep their
/// sessions, and a change of their routing settings (filters, next-hop
/// mode, …) or of the originations goes to the RIB alone.
async fn apply(
    running: &mut BTreeMap<String, Running>,
    node: &mut NodeSpec,
    new_node: NodeSpec,
    new_peers: Vec<PeerSpec>,
    shared: &Shared,
    rib: &rib::RibHandle,
) {
    let node_changed = new_node.router_id != node.router_id || new_node.asn != node.asn || new_node.name != node.name;
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        let keep = !node_changed
            && new_peers.iter().any(|p| p.name == name && running.get(&name).is_some_and(|r| r.spec.same_session(p)));
        if !keep {
            if let Some(r) = running.remove(&name) {
                let sub = if new_peers.iter().any(|p| p.name == name) {
                    cease::OTHER_CONFIGURATION_CHANGE
                } else {
                    cease::PEER_DECONFIGURED
                };
                info!(peer = %name, "configuration changed: resetting this session");
                let _ = r.cmds.send(Box::new(PeerCmd::Stop(sub, None))).await;
            }
        }
    }
    let node_routing_changed = new_node.originations != node.originations
        || new_node.exportable != node.exportable
        || new_node.statics != node.statics;
    *node = new_node;
    if node_routing_changed {
        rib.send(rib::RibCmd::Node(Box::new(node.clone())));
    }
    for p in new_peers {
        match running.get_mut(&p.name) {
            Some(r) if r.spec != p => {
                rib.send(rib::RibCmd::SetPeer(r.rib_key, Box::new(p.clone())));
                r.spec = p;
            }
            Some(_) => {}
            None => {
                info!(peer = %p.name, addr = %p.addr, "new peer");
                running.insert(p.name.clone(), spawn_peer(node, p, shared, rib));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_counted_not_each_logged() {
        let mut r = Refusals::default();
        let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        for _ in 0..10_000 {
            r.note(from);
        }
        let (_, quiet, last) = r.quiet.expect("counting");
        assert_eq!((quiet, last), (9_999, from), "one line for the first, the rest counted");
    }
    use crate::datastore::{parse_sources, SourceText};

    fn model(yaml: &str) -> (Model, Vec<Problem>) {
        parse_sources(&[SourceText { path: "ds.yaml".into(), text: yaml.into() }]).unwrap()
    }

    const NODE: &str =
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n";

    #[test]
    fn an_invalid_edit_keeps_the_last_good_object() {
        let good = format!("{NODE}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec: {{peerIP: 10.0.0.2, asNumber: 65010}}\n");
        let bad = format!("{NODE}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec: {{peerIP: 10.0.0.300, asNumber: 65010}}\n");
        let (last, _) = model(&good);
        let (mut m, problems) = model(&bad);
        assert!(!m.peers.contains_key("tor"), "the invalid peer is skipped by the loader");
        keep_last_good(&mut m, &problems, &last);
        assert_eq!(m.peers.get("tor"), last.peers.get("tor"));
        let (_, peers) = plan::plan(&m, "n1").unwrap();
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_good_local_workload_peer() {
        let peer = |selector: &str| {
            format!(
                "{NODE}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: vms}}\n\
                 spec: {{localWorkloadSelector: \"{selector}\", asNumber: 65010}}\n"
            )
        };
        let (last, _) = model(&peer("kubevirt.io == 'virt-launcher'"));
        assert!(last.local_workload_peers.contains_key("vms"));
        let (mut m, problems) = model(&peer("kubevirt.io == "));
        assert!(!m.local_workload_peers.contains_key("vms"), "the invalid selector drops it in the loader");
        keep_last_good(&mut m, &problems, &last);
        assert_eq!(m.local_workload_peers.get("vms"), last.local_workload_peers.get("vms"));
        assert!(!m.peers.contains_key("vms"), "it comes back as what it was");
    }

    #[test]
    fn a_start_is_a_restart_as_long_as_a_peer_may_keep_the_routes() {
        let (m, _) = model(&format!("{NODE}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor, annotations: {{bgpd.io/long-lived-stale-time: '600'}}}}\nspec: {{peerIP: 10.0.0.2, asNumber: 65010, maxRestartTime: 60s}}\n"));
        let (_, peers) = plan::plan(&m, "n1").unwrap();
        assert_eq!(restart_window(&peers), Duration::from_secs(660));
        assert_eq!(restart_window(&[]), Duration::from_secs(120), "no peer: Calico's restart time");
    }

    #[test]
    fn a_removed_object_is_removed() {
        let good = format!("{NODE}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec: {{peerIP: 10.0.0.2, asNumber: 65010}}\n");
        let (last, _) = model(&good);
        let (mut m, problems) = model(NODE);
        keep_last_good(&mut m, &problems, &last);
        assert!(m.peers.is_empty());
    }

    #[tokio::test]
    async fn a_removed_password_leaves_the_listener_and_an_unset_key_refuses_the_peer() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = vec![(addr, listen(addr).unwrap())];
        let mut with_key = crate::daemon::peer::tests::spec();
        with_key.addr = "127.0.0.2:179".parse().unwrap();
        with_key.password = Some(spec::Password(b"s3cret".to_vec()));
        assert!(set_listener_keys(&listeners, std::slice::from_ref(&with_key), &[]).is_empty());
        // The same peer without a password: its key goes from the listener
        // (removing a key that is not there fails: it was there, and is gone).
        let mut without = with_key.clone();
        without.password = None;
        assert!(
            set_listener_keys(&listeners, std::slice::from_ref(&without), std::slice::from_ref(&with_key)).is_empty()
        );
        assert!(sockopt::set_md5(&listeners[0].1, with_key.addr.ip(), &[]).is_err(), "the key was removed");
        // A key that cannot be set (longer than 80 octets): that peer's
        // connections are refused, not accepted unsigned.
        let mut bad = with_key.clone();
        bad.password = Some(spec::Password(vec![b'k'; 81]));
        let unkeyed = set_listener_keys(&listeners, std::slice::from_ref(&bad), &[]);
        assert_eq!(unkeyed, vec![bad.addr.ip()]);
        assert!(md5_check(&bad, bad.addr.ip(), &unkeyed).is_err());
        assert!(md5_check(&without, without.addr.ip(), &unkeyed).is_ok(), "no key asked: nothing to refuse");
    }
}
