//! The kernel task: installs what the RIB forwards to into a kernel routing
//! table through the `fib` crate, and a blackhole for each of this node's
//! own blocks.
//!
//! - The RIB (with `RibConfig::fib`) sends, per changed prefix, the next hops
//!   of its used learned paths (ECMP, best first; none: remove). Each becomes
//!   a unicast route whose gateways the FIB resolves recursively through the
//!   kernel's own routes; a gateway that does not resolve leaves the route
//!   out (logged, shown by `bgpd show fib`) until it does.
//! - This node's blocks become blackhole routes, so traffic to a block's
//!   unallocated addresses is dropped here instead of following a default
//!   route out. A block wins over a learned route for the same prefix.
//! - Routes are kept through a restart (`graceful_restart` in the FIB): after
//!   a restart the routes of the previous run stay until the RIB's selection
//!   deferral ends (`DeferralDone`, when every peer sent End-of-RIB or 60 s
//!   passed), then the table is refreshed from the RIB and what is left of
//!   the previous run is swept. A start that is not a restart sweeps at once:
//!   routes from a run too long ago are not trusted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use bgpd_proto::rib::core::FibRoute;
use fib::{Fib, FibConfig, FibEvent, FibHandle, FibMetrics, NextHop, Route, RouteChange, RouteErrorKind};
use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::spec::NodeSpec;
use super::status::Shared;

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
}

/// Sends to the kernel task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KernelHandle(mpsc::UnboundedSender<KernelCmd>);

impl KernelHandle {
    /// Sends a command (the task lives as long as the daemon).
    pub fn send(&self, cmd: KernelCmd) {
        let _ = self.0.send(cmd);
    }
}

/// What `bgpd show fib` and the metrics report about the kernel task.
#[derive(Debug, Clone, Serialize)]
pub struct KernelView {
    /// The kernel table programmed.
    pub table: u32,
    /// The protocol number our routes carry.
    pub protocol: u8,
    /// The metric our routes carry.
    pub metric: u32,
    /// Whether the routes of a previous run were swept yet.
    pub swept: bool,
    /// Learned prefixes wanted in the kernel (with a next hop).
    pub learned: usize,
    /// Blackholes wanted (this node's blocks).
    pub blackholes: usize,
    /// Routes that are not in the kernel as wanted, and why.
    pub failing: BTreeMap<IpNet, String>,
    /// The FIB's metrics (`fib_*`), rendered with the daemon's.
    #[serde(skip)]
    pub registry: prometheus::Registry,
}

/// The prefixes of `node` that get a blackhole route: its IPAM blocks (the
/// originations marked `blackhole`; service addresses are not).
pub fn blackholes(node: &NodeSpec) -> Vec<IpNet> {
    node.originations.iter().filter(|o| o.blackhole).map(|o| o.prefix).collect()
}

/// The routes wanted in the kernel: learned next hops and own blocks,
/// turned into FIB changes. Pure, so the rules are tested without a kernel.
#[derive(Debug, Default)]
struct Desired {
    learned: HashMap<IpNet, Vec<IpAddr>>,
    blackholes: BTreeSet<IpNet>,
    statics: BTreeMap<IpNet, IpAddr>,
}

impl Desired {
    /// What `prefix` should be in the kernel now.
    fn change(&self, prefix: IpNet) -> RouteChange {
        if self.blackholes.contains(&prefix) {
            return RouteChange::Upsert(Route::blackhole(prefix));
        }
        // A peer's own address: the configured gateway, not what BGP says.
        if let Some(gw) = self.statics.get(&prefix) {
            return RouteChange::Upsert(Route::unicast(prefix, vec![NextHop::via(*gw)]));
        }
        match self.learned.get(&prefix) {
            Some(hops) => RouteChange::Upsert(Route::unicast(prefix, hops.iter().map(|h| NextHop::via(*h)).collect())),
            None => RouteChange::Remove(prefix),
        }
    }

    /// Takes the RIB's forwarding changes; returns the FIB changes they make.
    fn forwarding(&mut self, routes: Vec<FibRoute>) -> Vec<RouteChange> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            // A gateway of the other family cannot be used (an IPv4 prefix
            // over an IPv6 next hop needs RTA_VIA, which the FIB lacks).
            let hops: Vec<IpAddr> =
                r.next_hops.into_iter().filter(|h| h.is_ipv4() == r.prefix.addr().is_ipv4()).collect();
            if hops.is_empty() {
                self.learned.remove(&r.prefix);
            } else {
                self.learned.insert(r.prefix, hops);
            }
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
        touched.into_iter().filter(|p| before.get(p) != self.statics.get(p)).map(|p| self.change(p)).collect()
    }

    /// Replaces the set of blocks; returns the FIB changes it makes.
    fn set_blackholes(&mut self, wanted: Vec<IpNet>) -> Vec<RouteChange> {
        let wanted: BTreeSet<IpNet> = wanted.into_iter().map(|p| p.trunc()).collect();
        let gone: Vec<IpNet> = self.blackholes.difference(&wanted).copied().collect();
        let new: Vec<IpNet> = wanted.difference(&self.blackholes).copied().collect();
        self.blackholes = wanted;
        gone.into_iter().chain(new).map(|p| self.change(p)).collect()
    }
}

/// Settings of the kernel task.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// The kernel table to program (254: main).
    pub table: u32,
}

/// Starts the kernel task; `restarted`: bgpd ran here within the restart
/// time, so the previous run's routes stay until the RIB's deferral ends.
pub fn spawn(opts: &KernelOptions, restarted: bool, shared: Shared) -> anyhow::Result<KernelHandle> {
    let config = FibConfig { table: opts.table, graceful_restart: true, ..FibConfig::default() };
    let registry = prometheus::Registry::new();
    let metrics = FibMetrics::register(&registry)?;
    let fib = Fib::spawn(config.clone(), metrics)
        .map_err(|e| anyhow::anyhow!("kernel table {}: cannot start programming it: {e}", opts.table))?;
    shared.lock().kernel = Some(KernelView {
        table: config.table,
        protocol: config.protocol,
        metric: config.metric,
        swept: false,
        learned: 0,
        blackholes: 0,
        failing: BTreeMap::new(),
        registry,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    info!(table = config.table, protocol = config.protocol, restarted, "programming the kernel table");
    tokio::spawn(run(fib, rx, restarted, shared));
    Ok(KernelHandle(tx))
}

async fn run(mut fib: Fib, mut rx: mpsc::UnboundedReceiver<KernelCmd>, restarted: bool, shared: Shared) {
    let mut desired = Desired::default();
    let mut swept = false;
    if !restarted {
        // Not a restart: nothing of a previous run is worth keeping.
        swept = sweep(&fib.handle, "not a restart").await;
    }
    let mut events_open = true;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let changes = match cmd {
                    KernelCmd::Forwarding(routes) => desired.forwarding(routes),
                    KernelCmd::Blackholes(p) => desired.set_blackholes(p),
                    KernelCmd::Statics(s) => desired.set_statics(s),
                    KernelCmd::DeferralDone => {
                        if !swept {
                            swept = sweep(&fib.handle, "selection deferral over").await;
                        }
                        Vec::new()
                    }
                };
                if !changes.is_empty() {
                    debug!(changes = changes.len(), "kernel routes");
                    if let Err(e) = fib.handle.apply(changes).await {
                        warn!("kernel table: {e}; routes are no longer programmed");
                        break;
                    }
                }
                publish(&shared, &desired, swept, None);
            }
            ev = fib.events.recv(), if events_open => match ev {
                Some(ev) => publish(&shared, &desired, swept, Some(ev)),
                None => events_open = false,
            },
        }
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

/// Records the state (and one FIB event) for `show fib`, logging failures.
fn publish(shared: &Shared, desired: &Desired, swept: bool, event: Option<FibEvent>) {
    match &event {
        Some(FibEvent::Failed(e)) => match &e.kind {
            RouteErrorKind::NextHopUnreachable { .. } => warn!("kernel route skipped: {e}"),
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
    view.learned = desired.learned.keys().filter(|p| !desired.blackholes.contains(p)).count();
    view.blackholes = desired.blackholes.len();
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
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fr(prefix: &str, hops: &[&str]) -> FibRoute {
        FibRoute { prefix: net(prefix), next_hops: hops.iter().map(|h| ip(h)).collect() }
    }

    fn unicast(prefix: &str, hops: &[&str]) -> RouteChange {
        RouteChange::Upsert(Route::unicast(net(prefix), hops.iter().map(|h| NextHop::via(ip(h))).collect()))
    }

    #[test]
    fn learned_routes_become_unicast_with_every_next_hop_and_leave_when_empty() {
        let mut d = Desired::default();
        let c = d.forwarding(vec![fr("10.1.0.0/24", &["10.0.0.2", "10.0.0.3"]), fr("fd00:1::/64", &["fd00::2"])]);
        assert_eq!(c, vec![unicast("10.1.0.0/24", &["10.0.0.2", "10.0.0.3"]), unicast("fd00:1::/64", &["fd00::2"])]);
        let c = d.forwarding(vec![fr("10.1.0.0/24", &[])]);
        assert_eq!(c, vec![RouteChange::Remove(net("10.1.0.0/24"))]);
        assert!(!d.learned.contains_key(&net("10.1.0.0/24")));
    }

    #[test]
    fn next_hops_of_the_other_family_are_dropped() {
        let mut d = Desired::default();
        let c = d.forwarding(vec![fr("10.1.0.0/24", &["fd00::2"])]);
        assert_eq!(c, vec![RouteChange::Remove(net("10.1.0.0/24"))]);
        let c = d.forwarding(vec![fr("10.2.0.0/24", &["fd00::2", "10.0.0.2"])]);
        assert_eq!(c, vec![unicast("10.2.0.0/24", &["10.0.0.2"])]);
    }

    #[test]
    fn a_block_is_a_blackhole_and_wins_over_a_learned_route() {
        let mut d = Desired::default();
        let c = d.set_blackholes(vec![net("10.244.0.0/26")]);
        assert_eq!(c, vec![RouteChange::Upsert(Route::blackhole(net("10.244.0.0/26")))]);
        // Learned for the block's prefix: remembered, not installed.
        assert!(d.forwarding(vec![fr("10.244.0.0/26", &["10.0.0.2"])]).is_empty());
        // The block goes: the learned route takes its place.
        let c = d.set_blackholes(vec![net("10.244.1.0/26")]);
        assert_eq!(
            c,
            vec![unicast("10.244.0.0/26", &["10.0.0.2"]), RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26")))]
        );
        // A block that goes without a learned route is removed; an unchanged set changes nothing.
        assert_eq!(d.set_blackholes(vec![]), vec![RouteChange::Remove(net("10.244.1.0/26"))]);
        assert!(d.set_blackholes(vec![]).is_empty());
    }

    #[test]
    fn block_prefixes_are_truncated_to_their_network() {
        let mut d = Desired::default();
        let c = d.set_blackholes(vec![net("10.244.0.5/26")]);
        assert_eq!(c, vec![RouteChange::Upsert(Route::blackhole(net("10.244.0.0/26")))]);
    }

    #[test]
    fn a_peer_reached_by_a_gateway_gets_a_static_route_that_bgp_does_not_override() {
        let mut d = Desired::default();
        let c = d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.254"))]);
        assert_eq!(c, vec![unicast("192.0.2.1/32", &["10.0.0.254"])]);
        // The peer's address learned over BGP does not replace the static route.
        assert!(d.forwarding(vec![fr("192.0.2.1/32", &["10.0.0.9"])]).is_empty());
        assert!(d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.254"))]).is_empty(), "unchanged");
        // Gateway changed, then the peer's reachableBy removed: the learned route takes over.
        assert_eq!(
            d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.253"))]),
            vec![unicast("192.0.2.1/32", &["10.0.0.253"])]
        );
        assert_eq!(d.set_statics(vec![]), vec![unicast("192.0.2.1/32", &["10.0.0.9"])]);
    }
}
