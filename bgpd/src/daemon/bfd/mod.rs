//! The BFD task: this node's BFD sessions (RFC 5880; the state machine is
//! `bgpd_proto::bfd`, sans-IO) on their sockets, one session per BGP peer
//! that runs BFD. Single-hop (RFC 5881): UDP port 3784, sent with TTL 255 and
//! accepted only with TTL 255, from a source port in 49152-65535 of its own per
//! session. Multihop (RFC 5883): UDP port 4784. IPv4 and IPv6.
//!
//! It runs on a thread of its own with its own runtime, so that a BFD packet
//! never waits behind a full-table UPDATE burst of the RIB or a peer task.
//! The daemon gives it the whole set of sessions wanted ([`BfdCmd::Set`],
//! diffed here) and hears back when a session comes up or fails
//! ([`BfdNotice`]).
//!
//! The parts: `select` (which peers run BFD, with which timers), `task` (the sessions,
//! their timer queue and the run loop), `socket` (the sending and listening sockets and
//! reading a datagram with its TTL).

mod select;
mod socket;
mod task;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bgpd_proto::bfd::{BfdConfig, BfdResume};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::status::Shared;
pub use super::status::{BfdStatus, BfdView};
pub use select::{config_of, sessions_for, sessions_on};
use task::run;

/// The single-hop BFD port (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// The multihop BFD port (RFC 5883 §5).
pub const MULTIHOP_PORT: u16 = 4784;

/// One BFD session the daemon wants: with the BGP peer `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdPeer {
    /// The BGP peer's name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// The BGP session's source address, which BFD sends from too (the
    /// remote matches a session by it); the routed source when not set.
    pub local: Option<IpAddr>,
    /// Multihop (RFC 5883) rather than single-hop.
    pub multihop: bool,
    /// Timers.
    pub config: BfdConfig,
    /// The interface the peer is on, when known (for `show bfd`).
    pub interface: Option<String>,
    /// How long a restart of bgpd may keep the session alive at the remote
    /// (the BGP restart time: as long as the peer keeps the routes).
    pub restart_window: Duration,
}

/// A session Up carried across a restart of bgpd (in the restart marker):
/// the remote keeps it Up if the new run resumes it within its detection
/// time, which the old run stretched before stopping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// The BGP peer.
    pub peer: String,
    /// Its address.
    pub addr: IpAddr,
    /// Multihop.
    pub multihop: bool,
    /// The session's state.
    #[serde(flatten)]
    pub session: BfdResume,
}

impl ResumeRecord {
    fn of(peer: &BfdPeer, session: BfdResume) -> ResumeRecord {
        ResumeRecord { peer: peer.name.clone(), addr: peer.addr, multihop: peer.multihop, session }
    }

    /// How long after the old run stopped the remote still holds the session.
    pub fn remote_detection_time(&self) -> Duration {
        self.session.remote_detection_time()
    }
}

/// The transmit interval a session slows down to before a restart; the
/// multiplier makes the remote's detection time the restart window (up to
/// 255 of these).
const RESTART_TX: Duration = Duration::from_secs(1);

/// How long a restart waits for the remotes' Finals to the slow-down.
const RESTART_POLL_WAIT: Duration = Duration::from_secs(1);

/// What the BFD task is told.
#[derive(Debug)]
pub enum BfdCmd {
    /// The sessions wanted now (all of them: the others go).
    Set(Vec<BfdPeer>),
    /// bgpd stops for good (a decommission, a deliberate stop): every
    /// session tells its remote it is AdminDown (RFC 5882 §3.2: not a path
    /// failure); answered once sent.
    AdminDownAll(oneshot::Sender<()>),
    /// bgpd stops for a restart: every session Up slows down (a Poll
    /// sequence to [`RESTART_TX`] and a multiplier that makes the remote's
    /// detection time the restart window), and once the remotes have
    /// answered (or after [`RESTART_POLL_WAIT`]) the sessions are answered
    /// as records for the next run to resume.
    PrepareRestart(oneshot::Sender<Vec<ResumeRecord>>),
    /// The previous run's sessions (a restart): sessions [`BfdCmd::Set`]
    /// creates for the same peer and address resume them, until `deadline`.
    Resume(Vec<ResumeRecord>, Instant),
}

/// A BFD session came up or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdNotice {
    /// The BGP peer.
    pub peer: String,
    /// Up, or down.
    pub up: bool,
    /// Down by a failure of the path (detection time, or the remote saw it
    /// fail), not because the remote said AdminDown (RFC 5882 §3.2).
    pub failure: bool,
    /// Why, for the log.
    pub diag: String,
}

/// Sends to the BFD task.
#[derive(Clone, Debug)]
pub struct BfdHandle(super::progress::Tracked<BfdCmd>);

impl BfdHandle {
    /// Sends a command (the task lives as long as the daemon).
    pub fn send(&self, cmd: BfdCmd) {
        self.0.send(cmd);
    }
}

/// Starts the BFD task on a thread of its own.
pub fn spawn(shared: Shared, notices: mpsc::UnboundedSender<BfdNotice>) -> anyhow::Result<BfdHandle> {
    let (tx, rx, progress) = super::progress::channel("bfd");
    shared.lock().tasks.push(progress.clone());
    std::thread::Builder::new().name("bfd".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                warn!("BFD: cannot start its runtime: {e}");
                return;
            }
        };
        rt.block_on(run(rx, progress, shared, notices));
    })?;
    Ok(BfdHandle(tx))
}

#[cfg(test)]
mod tests;
