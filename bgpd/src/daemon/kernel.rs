//! The kernel task: installs what the RIB forwards to into a kernel routing
//! table through the `fib` crate, and a blackhole for each of this node's
//! own blocks.
//!
//! - The RIB (with `RibConfig::fib`) sends, per changed prefix, the next hops
//!   of its used learned paths (ECMP, best first; none: remove). Each becomes
//!   a unicast route whose gateways the FIB resolves recursively through the
//!   kernel's own routes; a gateway that does not resolve leaves the route
//!   out (logged, shown by `bgpd show fib`) until it does. The best path's
//!   priority (BGPFilter `setPriority`) is the route's metric; without one
//!   the FIB's (20). A new metric moves the route, make before break.
//! - This node's blocks become blackhole routes, so traffic to a block's
//!   unallocated addresses is dropped here instead of following a default
//!   route out. A block wins over a learned route for the same prefix.
//! - Routes are kept through a restart (`graceful_restart` in the FIB): after
//!   a restart the routes of the previous run stay until the RIB's selection
//!   deferral ends (`DeferralDone`, when every peer sent End-of-RIB or 60 s
//!   passed), then the table is refreshed from the RIB and what is left of
//!   the previous run is swept. A start that is not a restart sweeps at once:
//!   routes from a run too long ago are not trusted.
//! - Taking over (`--take-over PROTOCOL`): the routes of the speaker bgpd
//!   replaces (BIRD's, protocol 12, any metric) stay and forward until the
//!   deferral ends and bgpd's routes are in, then they are removed
//!   (`FibHandle::retire_predecessors`); `show fib` counts what is left.
//! - Encapsulation per IP pool, as Calico's BIRD does it (its
//!   `calico_kernel_programming` filter setting `krt_tunnel`): a learned
//!   route into an IPv4 pool with `ipipMode: Always` goes `via NEXT_HOP dev
//!   tunl0 onlink`; with `CrossSubnet` only next hops outside this node's
//!   subnet (the network of the Node's `spec.bgp.ipv4Address`) do, the others
//!   stay plain. An IPv6 next hop of an IPv4 route (RFC 8950) is never
//!   tunnelled (`tunl0` is IPv4 in IPv4): the FIB writes it with `RTA_VIA`. Routes into a `vxlanMode` pool are not installed: Felix
//!   programs those through `vxlan.calico`. bgpd never creates `tunl0` (Felix
//!   owns it); while it is missing the routes go plain and an error says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use bgpd_proto::rib::core::FibRoute;
use fib::{Fib, FibConfig, FibEvent, FibHandle, FibMetrics, NextHop, Retire, Route, RouteChange, RouteErrorKind};
use ipam::model::EncapMode;
use ipnet::{IpNet, Ipv4Net};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::progress::Tracked;
use super::spec::NodeSpec;
use super::status::{KernelView, Shared, TakeOverPhase, TakeOverView};
use super::takeover::TakeOver;
use crate::datastore::Model;

/// The IPIP tunnel device of Calico's IPIP pools. Felix creates it (with
/// the node's tunnel address); bgpd only routes through it.
pub const IPIP_DEVICE: &str = "tunl0";

/// What the kernel task is told.
#[derive(Debug)]
pub enum KernelCmd {
    /// Forwarding changes from the RIB.
    Forwarding(Vec<FibRoute>),
    /// The RIB's selection deferral after a restart ended: what it forwards
    /// to is complete, stale routes can go.
    DeferralDone,
    /// This node's blocks (all of them, replacing the last set).
    Blackholes(Vec<IpNet>),
    /// Routes to peers through a gateway (Calico `reachableBy`; all of
    /// them, replacing the last set).
    Statics(Vec<(IpNet, IpAddr)>),
    /// The IP pools' encapsulation and this node's subnet (replacing the
    /// last; routes whose form changes are rewritten).
    Encap(Encap),
    /// bgpd stops for a restart: the routes stay in the kernel as they are,
    /// nothing is programmed any more; answered once the task stopped.
    Freeze(tokio::sync::oneshot::Sender<()>),
    /// Decommission: every route of bgpd's is removed from the table and
    /// nothing is programmed until the next command; answered once the
    /// kernel confirmed the removals.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Sends to the kernel task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KernelHandle(Tracked<KernelCmd>);

impl KernelHandle {
    /// Sends a command (the task lives as long as the daemon).
    pub fn send(&self, cmd: KernelCmd) {
        self.0.send(cmd);
    }
}

/// The prefixes of `node` that get a blackhole route: its IPAM blocks (the
/// originations marked `blackhole`; service addresses are not).
pub fn blackholes(node: &NodeSpec) -> Vec<IpNet> {
    node.originations.iter().filter(|o| o.blackhole).map(|o| o.prefix).collect()
}

/// How one IP pool's learned routes go into the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolForm {
    /// `ipipMode` `Never` and `vxlanMode` `Never`: plain routes. Kept so a
    /// plain pool inside an encapsulated one wins by longest match.
    Plain,
    /// `ipipMode: Always`: every next hop through `tunl0`.
    IpipAlways,
    /// `ipipMode: CrossSubnet`: next hops outside this node's subnet
    /// through `tunl0`.
    IpipCrossSubnet,
    /// Felix programs these routes: `vxlanMode` `Always` or `CrossSubnet`
    /// (through `vxlan.calico`) always, and IPIP or unencapsulated pools
    /// that `programClusterRoutes` leaves to it. Calico's BIRD rejects them
    /// for the kernel, and so does bgpd.
    Felix,
}

/// The pools' encapsulation and owner, and this node's subnet: what Calico's
/// confd renders into BIRD's `calico_kernel_programming` filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encap {
    /// Pools, longest prefix first (the longest match wins).
    pools: Vec<(IpNet, PoolForm)>,
    /// The network of this node's `spec.bgp.ipv4Address` (`CrossSubnet`'s
    /// "same subnet").
    subnet: Option<Ipv4Net>,
}

/// What the pools say about one learned route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Treatment {
    /// Install, each next hop plain (`false`) or through `tunl0` (`true`).
    Install(Vec<(IpAddr, bool)>),
    /// Leave it out: Felix programs it.
    Felix,
}

/// The encapsulation of learned routes for node `node` from the model's
/// IPPools, BGPConfiguration `programClusterRoutes` and the Node's
/// `spec.bgp.ipv4Address`. As in Calico's template, which writes the IPv4
/// pool rules only when the node has an IPv4 network, a node without an
/// IPv4 address installs every IPv4 route plain. IPIP carries IPv4 only
/// (the datastore rejects `ipipMode` on an IPv6 pool).
pub fn encap(model: &Model, node: &str) -> Encap {
    let subnet = model.nodes.get(node).and_then(|n| n.bgp.as_ref()).and_then(|b| b.ipv4_address).map(|a| a.trunc());
    let owned = model.bgp_configuration.program_cluster_routes;
    let mut pools: Vec<(IpNet, PoolForm)> = model
        .ip_pools
        .values()
        .filter(|p| p.cidr.addr().is_ipv6() || subnet.is_some())
        .map(|p| {
            let form = match (p.ipip_mode, p.vxlan_mode) {
                (_, EncapMode::Always | EncapMode::CrossSubnet) => PoolForm::Felix,
                (EncapMode::Always | EncapMode::CrossSubnet, EncapMode::Never) if !owned.ipip => PoolForm::Felix,
                (EncapMode::Always, EncapMode::Never) => PoolForm::IpipAlways,
                (EncapMode::CrossSubnet, EncapMode::Never) => PoolForm::IpipCrossSubnet,
                (EncapMode::Never, EncapMode::Never) if !owned.no_encap => PoolForm::Felix,
                (EncapMode::Never, EncapMode::Never) => PoolForm::Plain,
            };
            (p.cidr.trunc(), form)
        })
        .collect();
    pools.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
    pools.dedup_by_key(|p| p.0);
    Encap { pools, subnet }
}

impl Encap {
    /// How the pools have a learned route to `prefix` over `hops` installed
    /// (the pool that contains `prefix` with the longest prefix decides).
    fn treat(&self, prefix: IpNet, hops: &[IpAddr]) -> Treatment {
        let plain = || Treatment::Install(hops.iter().map(|h| (*h, false)).collect());
        let Some(&(_, form)) = self.pools.iter().find(|(cidr, _)| cidr.contains(&prefix)) else { return plain() };
        match form {
            PoolForm::Plain => plain(),
            PoolForm::Felix => Treatment::Felix,
            // tunl0 carries IPv4 in IPv4: a next hop that is IPv6 (RFC 8950)
            // is reached directly.
            PoolForm::IpipAlways => Treatment::Install(hops.iter().map(|h| (*h, h.is_ipv4())).collect()),
            // Per next hop: of an ECMP set, the peers on our subnet are
            // reached directly, the others through the tunnel.
            PoolForm::IpipCrossSubnet => Treatment::Install(
                hops.iter()
                    .map(|h| {
                        let tunnel = match (h, self.subnet) {
                            (IpAddr::V4(a), Some(net)) => !net.contains(a),
                            (IpAddr::V4(_), None) => true,
                            (IpAddr::V6(_), _) => false,
                        };
                        (*h, tunnel)
                    })
                    .collect(),
            ),
        }
    }
}

/// What the RIB forwards a prefix to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Learned {
    /// Next hops, best path's first.
    hops: Vec<IpAddr>,
    /// The best path's priority (BGPFilter `setPriority`): the route's
    /// metric; `None`: the FIB's default (20).
    priority: Option<u32>,
}

/// The routes wanted in the kernel: learned next hops and own blocks,
/// turned into FIB changes. Pure, so the rules are tested without a kernel.
#[derive(Debug, Default)]
struct Desired {
    learned: HashMap<IpNet, Learned>,
    blackholes: BTreeSet<IpNet>,
    statics: BTreeMap<IpNet, IpAddr>,
    encap: Encap,
    /// Whether `tunl0` exists; without it, IPIP routes go plain.
    tunnel: bool,
    /// Learned prefixes wanted through `tunl0` (whether it exists or not).
    ipip: HashSet<IpNet>,
    /// Learned prefixes in pools whose routes Felix programs (VXLAN pools,
    /// and those `programClusterRoutes` leaves to it).
    felix: HashSet<IpNet>,
}

impl Desired {
    /// What `prefix` should be in the kernel now.
    fn change(&self, prefix: IpNet) -> RouteChange {
        self.change_with(&self.encap, self.tunnel, prefix)
    }

    /// What `prefix` should be in the kernel with this encapsulation and
    /// `tunl0` present or not.
    fn change_with(&self, encap: &Encap, tunnel: bool, prefix: IpNet) -> RouteChange {
        if self.blackholes.contains(&prefix) {
            return RouteChange::Upsert(Route::blackhole(prefix));
        }
        // A peer's own address: the configured gateway, not what BGP says.
        if let Some(gw) = self.statics.get(&prefix) {
            return RouteChange::Upsert(Route::unicast(prefix, vec![NextHop::via(*gw)]));
        }
        let Some(learned) = self.learned.get(&prefix) else { return RouteChange::Remove(prefix) };
        match encap.treat(prefix, &learned.hops) {
            Treatment::Felix => RouteChange::Remove(prefix),
            Treatment::Install(hops) => {
                let hops = hops
                    .into_iter()
                    .map(|(gw, ipip)| match ipip && tunnel {
                        true => NextHop::via_dev(gw, IPIP_DEVICE).onlink(),
                        false => NextHop::via(gw),
                    })
                    .collect();
                RouteChange::Upsert(Route { metric: learned.priority, ..Route::unicast(prefix, hops) })
            }
        }
    }

    /// Updates the IPIP and VXLAN bookkeeping of a learned `prefix`.
    fn classify(&mut self, prefix: IpNet) {
        let treatment = match self.learned.get(&prefix) {
            Some(learned) if !self.blackholes.contains(&prefix) && !self.statics.contains_key(&prefix) => {
                Some(self.encap.treat(prefix, &learned.hops))
            }
            _ => None,
        };
        let ipip = matches!(&treatment, Some(Treatment::Install(h)) if h.iter().any(|(_, t)| *t));
        let felix = matches!(treatment, Some(Treatment::Felix));
        if ipip {
            self.ipip.insert(prefix);
        } else {
            self.ipip.remove(&prefix);
        }
        if felix {
            self.felix.insert(prefix);
        } else {
            self.felix.remove(&prefix);
        }
    }

    /// True when a learned route wants `tunl0` and it is missing.
    fn tunnel_wanted_but_missing(&self) -> bool {
        !self.tunnel && !self.ipip.is_empty()
    }

    /// Replaces the pools' encapsulation; returns the changes of the
    /// learned routes whose kernel form it changes.
    fn set_encap(&mut self, encap: Encap) -> Vec<RouteChange> {
        if encap == self.encap {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.encap, encap);
        let mut prefixes: Vec<IpNet> = self.learned.keys().copied().collect();
        prefixes.sort();
        let mut out = Vec::new();
        for p in prefixes {
            self.classify(p);
            let new = self.change(p);
            if new != self.change_with(&old, self.tunnel, p) {
                out.push(new);
            }
        }
        out
    }

    /// Records whether `tunl0` exists; returns the changes of the routes
    /// that go through it (or would).
    fn set_tunnel(&mut self, present: bool) -> Vec<RouteChange> {
        if present == self.tunnel {
            return Vec::new();
        }
        self.tunnel = present;
        let mut prefixes: Vec<IpNet> = self.ipip.iter().copied().collect();
        prefixes.sort();
        prefixes.into_iter().map(|p| self.change(p)).collect()
    }

    /// Takes the RIB's forwarding changes; returns the FIB changes they make.
    fn forwarding(&mut self, routes: Vec<FibRoute>) -> Vec<RouteChange> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            // An IPv4 prefix may go through an IPv6 next hop (RFC 8950; the
            // FIB writes RTA_VIA); an IPv6 prefix never through an IPv4 one.
            let hops: Vec<IpAddr> =
                r.next_hops.into_iter().filter(|h| h.is_ipv6() || r.prefix.addr().is_ipv4()).collect();
            if hops.is_empty() {
                self.learned.remove(&r.prefix);
            } else {
                self.learned.insert(r.prefix, Learned { hops, priority: r.priority });
            }
            self.classify(r.prefix);
            if !self.blackholes.contains(&r.prefix) && !self.statics.contains_key(&r.prefix) {
                out.push(self.change(r.prefix));
            }
        }
        out
    }

    /// Replaces the static routes to peers; returns the FIB changes they make.
    fn set_statics(&mut self, wanted: Vec<(IpNet, IpAddr)>) -> Vec<RouteChange> {
        let wanted: BTreeMap<IpNet, IpAddr> = wanted.into_iter().map(|(p, gw)| (p.trunc(), gw)).collect();
        let touched: BTreeSet<IpNet> = self.statics.keys().chain(wanted.keys()).copied().collect();
        let before = std::mem::replace(&mut self.statics, wanted);
        let changed: Vec<IpNet> = touched.into_iter().filter(|p| before.get(p) != self.statics.get(p)).collect();
        changed.iter().for_each(|p| self.classify(*p));
        changed.into_iter().map(|p| self.change(p)).collect()
    }

    /// Replaces the set of blocks; returns the FIB changes it makes.
    fn set_blackholes(&mut self, wanted: Vec<IpNet>) -> Vec<RouteChange> {
        let wanted: BTreeSet<IpNet> = wanted.into_iter().map(|p| p.trunc()).collect();
        let gone: Vec<IpNet> = self.blackholes.difference(&wanted).copied().collect();
        let new: Vec<IpNet> = wanted.difference(&self.blackholes).copied().collect();
        self.blackholes = wanted;
        let changed: Vec<IpNet> = gone.into_iter().chain(new).collect();
        changed.iter().for_each(|p| self.classify(*p));
        changed.into_iter().map(|p| self.change(p)).collect()
    }
}

/// Sends the kernel task the encapsulation that `model` gives node `node`
/// (at start and after every datastore change; an unchanged one rewrites
/// nothing).
pub fn send_encap(kernel: Option<&KernelHandle>, model: Option<&Model>, node: &str) {
    if let (Some(k), Some(m)) = (kernel, model) {
        k.send(KernelCmd::Encap(encap(m, node)));
    }
}

/// Settings of the kernel task.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// The kernel table to program (254: main).
    pub table: u32,
    /// The speaker whose routes in the table are taken over (`--take-over`).
    pub take_over: Option<TakeOver>,
}

/// Starts the kernel task; `restarted`: bgpd ran here within the restart
/// time and claims its forwarding state, so the previous run's routes stay
/// until the RIB's deferral ends.
pub fn spawn(opts: &KernelOptions, restarted: bool, shared: Shared) -> anyhow::Result<KernelHandle> {
    let replaces = opts.take_over.iter().map(|t| t.protocol).collect();
    let config = FibConfig { table: opts.table, graceful_restart: true, replaces, ..FibConfig::default() };
    let registry = prometheus::Registry::new();
    let metrics = FibMetrics::register(&registry)?;
    let predecessors = metrics.predecessor_routes.clone();
    let fib = Fib::spawn(config.clone(), metrics)
        .map_err(|e| anyhow::anyhow!("kernel table {}: cannot start programming it: {e}", opts.table))?;
    shared.lock().kernel = Some(KernelView {
        table: config.table,
        protocol: config.protocol,
        metric: config.metric,
        swept: false,
        learned: 0,
        blackholes: 0,
        ipip: 0,
        vxlan_skipped: 0,
        tunl0_present: false,
        failing: BTreeMap::new(),
        take_over: opts.take_over.as_ref().map(|t| TakeOverView {
            protocol: t.protocol,
            name: t.name.clone(),
            left: 0,
            phase: TakeOverPhase::Waiting,
            hold_seconds: t.hold.as_secs(),
            gauge: Some(predecessors),
        }),
        registry,
    });
    let (tx, rx, progress) = super::progress::channel("kernel");
    shared.lock().tasks.push(progress.clone());
    info!(table = config.table, protocol = config.protocol, restarted, "programming the kernel table");
    let retire = opts.take_over.clone().map(|t| (t, config.table));
    tokio::spawn(run(fib, rx, progress, restarted, retire, shared));
    Ok(KernelHandle(tx))
}

async fn run(
    mut fib: Fib,
    mut rx: mpsc::UnboundedReceiver<KernelCmd>,
    progress: std::sync::Arc<super::progress::Progress>,
    restarted: bool,
    mut retire: Option<(TakeOver, u32)>,
    shared: Shared,
) {
    let mut desired = Desired::default();
    let mut tunnel_said = false;
    // Before any route: whether tunl0 exists decides their first form.
    refresh_tunnel(&mut desired);
    let mut swept = false;
    if !restarted {
        // Not a restart: nothing of a previous run is worth keeping.
        swept = sweep(&fib.handle, "not a restart").await;
    }
    let mut events_open = true;
    // A command taken while coalescing forwarding changes, handled next.
    let mut carried: Option<KernelCmd> = None;
    loop {
        tokio::select! {
            cmd = async { match carried.take() { Some(c) => Some(c), None => rx.recv().await } } => {
                let Some(cmd) = cmd else { break };
                // Counted as finished when taken: what follows awaits the
                // kernel, and a kernel that never answers leaves the next
                // command waiting, which is what counts as stuck.
                progress.done(1);
                let changes = match cmd {
                    KernelCmd::Forwarding(routes) => {
                        // What the RIB queued while the kernel took the last
                        // batch goes into this one, one change per prefix: a
                        // slow kernel costs one entry per changed prefix, and
                        // a route that flapped meanwhile is written once.
                        let mut changes = desired.forwarding(routes);
                        while let Ok(next) = rx.try_recv() {
                            match next {
                                KernelCmd::Forwarding(more) => {
                                    progress.done(1);
                                    changes.extend(desired.forwarding(more));
                                }
                                other => {
                                    carried = Some(other);
                                    break;
                                }
                            }
                        }
                        coalesce(changes)
                    }
                    KernelCmd::Blackholes(p) => desired.set_blackholes(p),
                    KernelCmd::Statics(s) => desired.set_statics(s),
                    KernelCmd::Encap(e) => {
                        let mut changes = refresh_tunnel(&mut desired);
                        changes.extend(desired.set_encap(e));
                        if !changes.is_empty() {
                            info!(routes = changes.len(), "IP pool encapsulation changed: rewriting the routes it concerns");
                        }
                        changes
                    }
                    KernelCmd::DeferralDone => {
                        if !swept {
                            swept = sweep(&fib.handle, "selection deferral over").await;
                        }
                        if let Some((take, table)) = retire.take() {
                            // The RIB sent its whole table before this: once the
                            // FIB has written it, the predecessor's routes go.
                            tokio::spawn(retire_predecessors(fib.handle.clone(), take, table, shared.clone()));
                        }
                        Vec::new()
                    }
                    KernelCmd::Freeze(done) => {
                        // Graceful restart is configured in the FIB: shutting
                        // it down leaves our routes in the kernel.
                        let _ = fib.handle.shutdown().await;
                        info!("kernel table: left as it is for the next run (graceful restart)");
                        let _ = done.send(());
                        return;
                    }
                    KernelCmd::Flush(done) => {
                        desired = Desired { tunnel: desired.tunnel, encap: desired.encap.clone(), ..Desired::default() };
                        match fib.handle.flush().await {
                            Ok(()) => {
                                let _ = fib.handle.settled().await;
                                info!("kernel table: every route of bgpd's removed (decommission)");
                            }
                            Err(e) => warn!("kernel table: removing bgpd's routes failed: {e}"),
                        }
                        swept = true;
                        publish(&shared, &desired, swept, None);
                        let _ = done.send(());
                        continue;
                    }
                };
                say_tunnel_missing(&desired, &mut tunnel_said);
                if !push(&fib.handle, changes).await {
                    break;
                }
                publish(&shared, &desired, swept, None);
            }
            ev = fib.events.recv(), if events_open => match ev {
                Some(ev) => {
                    // A link came or went (the FIB resyncs on every link
                    // change), or a route through tunl0 found no tunl0.
                    let recheck = match &ev {
                        FibEvent::Resynced => true,
                        FibEvent::Failed(e) => {
                            matches!(&e.kind, RouteErrorKind::NoSuchDevice { device } if device == IPIP_DEVICE)
                        }
                        _ => false,
                    };
                    publish(&shared, &desired, swept, Some(ev));
                    if recheck {
                        let changes = refresh_tunnel(&mut desired);
                        say_tunnel_missing(&desired, &mut tunnel_said);
                        if !push(&fib.handle, changes).await {
                            break;
                        }
                        publish(&shared, &desired, swept, None);
                    }
                }
                None => events_open = false,
            },
        }
    }
}

/// The last change of each prefix, in the order of their last changes.
fn coalesce(changes: Vec<RouteChange>) -> Vec<RouteChange> {
    let mut seen = std::collections::HashSet::with_capacity(changes.len());
    let mut out: Vec<RouteChange> = changes.into_iter().rev().filter(|c| seen.insert(c.prefix())).collect();
    out.reverse();
    out
}

/// Hands changes to the FIB; false when it has stopped.
async fn push(fib: &FibHandle, changes: Vec<RouteChange>) -> bool {
    if changes.is_empty() {
        return true;
    }
    debug!(changes = changes.len(), "kernel routes");
    match fib.apply(changes).await {
        Ok(()) => true,
        Err(e) => {
            warn!("kernel table: {e}; routes are no longer programmed");
            false
        }
    }
}

/// Looks whether `tunl0` exists (in bgpd's own network namespace, the one
/// the FIB programs); returns the route changes if that changed.
fn refresh_tunnel(desired: &mut Desired) -> Vec<RouteChange> {
    match fib::netns::link_index(None, IPIP_DEVICE) {
        Ok(index) => {
            let present = index.is_some();
            if present && !desired.tunnel {
                info!("{IPIP_DEVICE} exists: routes into IPIP pools go through it");
            }
            desired.set_tunnel(present)
        }
        Err(e) => {
            warn!("cannot tell whether {IPIP_DEVICE} exists, assuming it is unchanged: {e}");
            Vec::new()
        }
    }
}

/// Logs once (until `tunl0` appears) that IPIP routes go unencapsulated.
fn say_tunnel_missing(desired: &Desired, said: &mut bool) {
    if desired.tunnel {
        *said = false;
    } else if desired.tunnel_wanted_but_missing() && !*said {
        *said = true;
        error!(
            routes = desired.ipip.len(),
            "routes into IPIP pools need the tunnel device {IPIP_DEVICE}, which does not exist: they are \
             installed without encapsulation until it appears. bgpd does not create tunnels; in Calico, \
             Felix creates {IPIP_DEVICE} when an IP pool uses ipipMode"
        );
    }
}

async fn sweep(fib: &FibHandle, why: &str) -> bool {
    match fib.sweep_stale().await {
        Ok(()) => {
            info!("kernel table: removing routes of a previous run that are not wanted ({why})");
            true
        }
        Err(e) => {
            warn!("kernel table: sweep failed: {e}");
            false
        }
    }
}

/// Once bgpd's routes are in (everything handed to the FIB written and answered),
/// removes the routes of the speaker taken over that bgpd's stand in for, then each
/// other one as bgpd's route for its prefix goes in (the FIB does that), and what is
/// left after the hold.
async fn retire_predecessors(fib: FibHandle, take: TakeOver, table: u32, shared: Shared) {
    let what = format!("protocol {} ({})", take.name, take.protocol);
    let left = |shared: &Shared| {
        let s = shared.lock();
        let gauge = s.kernel.as_ref().and_then(|k| k.take_over.as_ref()).and_then(|v| v.gauge.clone());
        gauge.map_or(0, |g| g.get().max(0) as usize)
    };
    let set_phase = |shared: &Shared, phase| {
        let mut s = shared.lock();
        if let Some(view) = s.kernel.as_mut().and_then(|k| k.take_over.as_mut()) {
            view.phase = phase;
            view.left = view.gauge.as_ref().map_or(0, |g| g.get().max(0) as usize);
        }
    };
    if fib.settled().await.is_err() {
        return;
    }
    let replaced = match fib.retire_predecessors(Retire::Replaced).await {
        Ok(n) => n,
        Err(e) => {
            warn!("kernel table: removing the routes of {what} failed: {e}");
            return;
        }
    };
    let _ = fib.settled().await;
    set_phase(&shared, TakeOverPhase::Replacing);
    let rest = left(&shared);
    if rest == 0 {
        set_phase(&shared, TakeOverPhase::Done);
        match replaced {
            0 => info!("kernel table {table}: no routes of {what} left to remove"),
            n => info!(
                routes = n,
                "kernel table {table}: bgpd's routes are in; the {n} routes of {what} it took over are removed"
            ),
        }
        return;
    }
    info!(
        removed = replaced,
        left = rest,
        hold = take.hold.as_secs(),
        "kernel table {table}: bgpd's routes are in and replaced {replaced} routes of {what}; the {rest} others \
         (prefixes bgpd has no route for yet) keep forwarding and go as bgpd's routes for them come in, \
         the rest after the hold"
    );
    // The FIB removes them as ours go in; wait for that or the end of the hold.
    let deadline = tokio::time::Instant::now() + take.hold;
    while left(&shared) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(take.hold)).await;
    }
    let rest = left(&shared);
    let queued = if rest > 0 {
        match fib.retire_predecessors(Retire::All).await {
            Ok(n) => n,
            Err(e) => {
                warn!("kernel table: removing the routes of {what} failed: {e}");
                return;
            }
        }
    } else {
        0
    };
    let _ = fib.settled().await;
    set_phase(&shared, TakeOverPhase::Done);
    match left(&shared) {
        0 if queued == 0 => info!("kernel table {table}: every route of {what} was replaced by bgpd's"),
        0 => info!(
            routes = queued,
            "kernel table {table}: the hold is over; the {queued} routes of {what} bgpd had not replaced are removed"
        ),
        n => warn!(
            left = n,
            "kernel table {table}: {n} of the routes of {what} could not be removed (see the errors above)"
        ),
    }
}

/// Records the state (and one FIB event) for `show fib`, logging failures.
fn publish(shared: &Shared, desired: &Desired, swept: bool, event: Option<FibEvent>) {
    match &event {
        Some(FibEvent::Failed(e)) => match &e.kind {
            RouteErrorKind::NextHopUnreachable { .. } => warn!("kernel route skipped: {e}"),
            RouteErrorKind::Connected => info!("kernel route skipped: {e}"),
            _ => warn!("kernel route failed: {e}"),
        },
        Some(FibEvent::Recovered(p)) => info!("kernel route {p} installed after an earlier failure"),
        Some(FibEvent::DumpFailed { what, errno }) => {
            warn!("kernel table: dumping {what} failed: {}", fib::errno_name(*errno))
        }
        Some(FibEvent::Resynced) | None => {}
    }
    let mut s = shared.lock();
    let Some(view) = s.kernel.as_mut() else { return };
    view.swept = swept;
    view.learned =
        desired.learned.keys().filter(|p| !desired.blackholes.contains(p) && !desired.felix.contains(p)).count();
    view.blackholes = desired.blackholes.len();
    view.ipip = desired.ipip.len();
    view.vxlan_skipped = desired.felix.len();
    view.tunl0_present = desired.tunnel;
    if let Some(t) = view.take_over.as_mut() {
        t.left = t.gauge.as_ref().map_or(0, |g| g.get().max(0) as usize);
    }
    match event {
        Some(FibEvent::Failed(e)) => {
            view.failing.insert(e.prefix, e.kind.to_string());
        }
        Some(FibEvent::Recovered(p)) => {
            view.failing.remove(&p);
        }
        _ => {}
    }
    // A route no longer wanted is no longer failing.
    view.failing.retain(|p, _| desired.blackholes.contains(p) || desired.learned.contains_key(p));
}

#[cfg(test)]
mod tests;
