//! How the daemon stops: for a restart (SIGTERM, SIGINT, `bgpd stop`), its
//! peers keep its routes as graceful restart helpers and the kernel keeps
//! its routes; for good (`bgpd stop --withdraw`, or its Node gone from the
//! datastore), it decommissions: every route goes out again with
//! GRACEFUL_SHUTDOWN (RFC 8326), traffic gets the drain time to move, then
//! Cease to every peer, the kernel routes and the restart marker go.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bgpd_proto::error::code::cease;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::bfd::BfdCmd;
use super::kernel::KernelCmd;
use super::marker::Marker;
use super::peer::PeerCmd;
use super::rib::{RibCmd, RibHandle};
use super::spec::NodeSpec;
use super::status::{Lifecycle, Shared};
use super::{Running, Tasks};

/// The drain time of a decommission when none is asked for.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// How long the peer tasks get to write their last bytes and close.
const CLOSE_TIME: Duration = Duration::from_millis(300);

/// Where the node is in its life (the main loop's view of [`Lifecycle`]).
#[derive(Debug)]
pub enum Phase {
    /// Running.
    Running,
    /// Routes go out with GRACEFUL_SHUTDOWN; at `until` the sessions close.
    Draining {
        /// When the sessions close.
        until: tokio::time::Instant,
        /// Why.
        why: String,
        /// `bgpd stop --withdraw`: the daemon exits once decommissioned
        /// (otherwise the Node left the datastore and may come back).
        exit: bool,
        /// Who asked, to be answered when it is done.
        replies: Vec<oneshot::Sender<serde_json::Value>>,
    },
    /// No sessions, no routes: the Node left the datastore.
    Decommissioned,
}

/// Starts decommissioning: GRACEFUL_SHUTDOWN on every route, for `drain`.
pub fn start_drain(rib: &RibHandle, shared: &Shared, drain: Duration, why: String, exit: bool) -> Phase {
    info!("decommissioning ({why}): routes go out with GRACEFUL_SHUTDOWN; the sessions close in {} s", drain.as_secs());
    rib.send(RibCmd::GracefulShutdown(true));
    shared.lock().lifecycle = Lifecycle::Draining { why: why.clone(), until: SystemTime::now() + drain };
    Phase::Draining { until: tokio::time::Instant::now() + drain, why, exit, replies: Vec::new() }
}

/// Undoes [`start_drain`]: the Node is back.
pub fn cancel_drain(rib: &RibHandle, shared: &Shared) {
    info!("decommission cancelled: the Node is back in the datastore");
    rib.send(RibCmd::GracefulShutdown(false));
    shared.lock().lifecycle = Lifecycle::Running;
}

/// Tells every BFD remote this node is AdminDown (RFC 5882 §3.2: not a
/// failure, so its BGP does not drop the session for it).
async fn bfd_admin_down(tasks: &Tasks) {
    let (tx, rx) = oneshot::channel();
    tasks.bfd.send(BfdCmd::AdminDownAll(tx));
    let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
}

/// Stops for a restart: the RIB and the kernel go quiet first (so that no
/// peer hears of another's routes going, and no kernel route is removed),
/// BFD sessions slow down so that their remotes hold them Up through the
/// restart (the next run resumes them), then every session closes the
/// graceful way (no NOTIFICATION, or with the N bit an Administrative
/// Reset), and the marker notes a clean stop and the BFD sessions.
pub async fn stop_for_restart(running: &BTreeMap<String, Running>, tasks: &Tasks, marker: &mut Marker) {
    info!("stopping for a restart: peers keep this node's routes (graceful restart), the kernel keeps its routes");
    let (tx, rx) = oneshot::channel();
    tasks.rib.send(RibCmd::Quiesce(tx));
    let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
    let (tx, rx) = oneshot::channel();
    tasks.bfd.send(BfdCmd::PrepareRestart(tx));
    let bfd = tokio::time::timeout(Duration::from_secs(2), rx).await.ok().and_then(Result::ok).unwrap_or_default();
    if let Some(k) = &tasks.kernel {
        let (tx, rx) = oneshot::channel();
        k.send(KernelCmd::Freeze(tx));
        let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
    }
    for r in running.values() {
        let _ = r.cmds.send(Box::new(PeerCmd::Restart)).await;
    }
    tokio::time::sleep(CLOSE_TIME).await;
    if let Err(e) = marker.clean_stop(bfd) {
        warn!("cannot update the restart marker {}: {e}", marker.path().display());
    }
}

/// Decommissions: Cease / Administrative Shutdown to every peer (inside a
/// Hard Reset where the N bit was exchanged), this node's originations
/// withdrawn, every kernel route of bgpd's removed, the marker removed.
/// `node` keeps its identity but loses its originations.
pub async fn decommission(
    running: &mut BTreeMap<String, Running>,
    node: &mut NodeSpec,
    tasks: &Tasks,
    marker: &Marker,
    why: &str,
) {
    info!("decommissioning ({why}): Cease to every peer, kernel routes removed");
    bfd_admin_down(tasks).await;
    let rib = &tasks.rib;
    let message = format!("bgpd: node {} decommissioned ({why})", node.name);
    for (_, r) in std::mem::take(running) {
        let _ = r.cmds.send(Box::new(PeerCmd::Stop(cease::ADMINISTRATIVE_SHUTDOWN, Some(message.clone())))).await;
    }
    node.originations.clear();
    node.statics.clear();
    rib.send(RibCmd::Node(Box::new(node.clone())));
    rib.send(RibCmd::GracefulShutdown(false));
    tokio::time::sleep(CLOSE_TIME).await;
    if let Some(k) = &tasks.kernel {
        let (tx, rx) = oneshot::channel();
        k.send(KernelCmd::Flush(tx));
        if tokio::time::timeout(Duration::from_secs(10), rx).await.is_err() {
            warn!("kernel table: removing bgpd's routes did not finish in 10 s");
        }
    }
    if let Err(e) = marker.remove() {
        warn!("cannot remove the restart marker {}: {e}", marker.path().display());
    }
}
