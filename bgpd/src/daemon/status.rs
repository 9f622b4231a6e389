//! What `bgpd show` and the metrics report: per-peer state and RIB sizes,
//! shared between the peer tasks, the RIB task and the control socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bgpd_proto::session::State;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A route learned from a peer, as shown.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RouteView {
    /// The prefix.
    pub prefix: IpNet,
    /// ADD-PATH identifier, if any.
    pub path_id: Option<u32>,
    /// Peer name.
    pub peer: String,
    /// Next hop.
    pub next_hop: Option<String>,
    /// AS path, as text.
    pub as_path: String,
    /// ORIGIN.
    pub origin: Option<String>,
    /// MED.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// Standard communities, as text.
    pub communities: Vec<String>,
    /// Large communities, as text.
    pub large_communities: Vec<String>,
    /// The best path.
    pub best: bool,
    /// In the ECMP set (the best included).
    pub multipath: bool,
    /// Kept while its peer restarts or refreshes (graceful restart, RFC 7313).
    pub stale: bool,
    /// Why it is not used, when it is not.
    pub lost: Option<String>,
}

/// One peer, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    /// Name (why the peer exists).
    pub name: String,
    /// Address.
    pub address: SocketAddr,
    /// Peer AS.
    pub peer_as: u32,
    /// Local AS.
    pub local_as: u32,
    /// FSM state.
    pub state: State,
    /// Seconds since Established (0 otherwise).
    pub uptime_secs: u64,
    /// Established since (Unix seconds).
    pub established_since: Option<u64>,
    /// Times the session left Established.
    pub flaps: u64,
    /// Messages received by type.
    pub received: BTreeMap<String, u64>,
    /// Messages sent by type.
    pub sent: BTreeMap<String, u64>,
    /// Prefixes received and kept.
    pub routes_received: usize,
    /// Last error, decoded ("Cease / Administrative Shutdown" …), and whether we sent it.
    pub last_error: Option<String>,
    /// Last error code and subcode.
    pub last_error_code: Option<(u8, u8)>,
    /// Why the session is not up, when it is not (connection refused, MD5, …).
    pub last_failure: Option<String>,
    /// Negotiated capabilities, once OPENs were exchanged.
    pub capabilities: Vec<String>,
    /// The peer's BGP identifier.
    pub peer_id: Option<String>,
    /// The peer's host name (FQDN capability).
    pub peer_hostname: Option<String>,
    /// The BFD session's state, when the peer runs BFD.
    pub bfd: Option<bgpd_proto::bfd::State>,
    /// Bytes of UPDATEs queued towards the peer that its socket has not taken.
    #[serde(default)]
    pub queued_bytes: usize,
    /// Export to the peer is paused: it does not take what it is sent (see
    /// `rib::OutQueue`); it is sent the difference once it catches up.
    #[serde(default)]
    pub export_paused: bool,
}

impl PeerView {
    /// A peer that has not connected yet (Idle, nothing counted).
    pub fn new(name: &str, address: SocketAddr, peer_as: u32, local_as: u32) -> PeerView {
        PeerView {
            name: name.into(),
            address,
            peer_as,
            local_as,
            state: State::Idle,
            uptime_secs: 0,
            established_since: None,
            flaps: 0,
            received: Default::default(),
            sent: Default::default(),
            routes_received: 0,
            last_error: None,
            last_error_code: None,
            last_failure: None,
            capabilities: Vec::new(),
            peer_id: None,
            peer_hostname: None,
            bfd: None,
            queued_bytes: 0,
            export_paused: false,
        }
    }

    /// An Established peer `name` at 10.0.0.2 (AS 65010, local AS 64512), for tests.
    #[cfg(test)]
    pub fn example(name: &str) -> PeerView {
        let mut v = PeerView::new(name, "10.0.0.2:179".parse().unwrap(), 65010, 64512);
        v.state = State::Established;
        v
    }
}

/// Per-peer live data.
#[derive(Debug)]
pub struct PeerStatus {
    /// What is shown.
    pub view: PeerView,
    /// When Established was reached (monotonic).
    pub established_at: Option<Instant>,
}

/// Everything shared.
#[derive(Debug, Default)]
pub struct Status {
    /// Peers by name.
    pub peers: BTreeMap<String, PeerStatus>,
    /// The node's originated prefixes, why, and their communities.
    pub originations: Vec<super::originate::Origination>,
    /// When the configuration was last loaded, and its problems.
    pub config_loaded_at: Option<SystemTime>,
    /// Problems of the last load.
    pub config_problems: Vec<String>,
    /// Whether the datastore could be read last time it was tried.
    pub datastore_ok: bool,
    /// While the datastore is unreachable: since when, and the last error.
    pub datastore_unreachable: Option<(SystemTime, String)>,
    /// When the daemon's main loop last went round (it ticks every 500 ms).
    pub heartbeat: Option<Instant>,
    /// The work counters of the RIB, kernel and BFD tasks (`/healthz`).
    pub tasks: Vec<std::sync::Arc<super::progress::Progress>>,
    /// The RIB's sizes.
    pub rib: bgpd_proto::rib::core::RibStats,
    /// Prefixes accepted per peer name.
    pub routes_received: BTreeMap<String, usize>,
    /// Received routes the RIB ignored or withdrew per peer name, by why
    /// (next-hop checks, families not negotiated, AS4_PATH discarded, …).
    pub routes_ignored: BTreeMap<String, bgpd_proto::rib::checks::IgnoredCounts>,
    /// Incoming connections refused because they came from no configured
    /// peer's address (`bgpd_connections_refused_total`).
    pub refused_unconfigured: u64,
    /// The kernel task's state, when it programs the kernel (`show fib`, `fib_*` metrics).
    pub kernel: Option<KernelView>,
    /// Selection deferral after a restart, while it lasts (`show peers`, `/readyz`).
    pub deferral: Option<Deferral>,
    /// Decommissioning or decommissioned (`show peers`, `/readyz`).
    pub lifecycle: Lifecycle,
    /// The BFD sessions (`show bfd`, metrics, `show peers`).
    pub bfd: BfdView,
    /// What `bgpd show status` and CalicoNodeStatus need from the last load.
    pub node_status: Facts,
    /// CalicoNodeStatus writes since start: (written, failed).
    pub node_status_writes: (u64, u64),
}

/// Selection deferral in progress (RFC 4724 §4.1), as `show peers` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deferral {
    /// When it ends at the latest.
    #[serde(serialize_with = "unix_secs")]
    pub until: SystemTime,
    /// The peers it waits for, and for what.
    pub waiting: Vec<(String, String)>,
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Where the node is in its life.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Lifecycle {
    /// Running.
    #[default]
    Running,
    /// Decommissioning: routes sent with GRACEFUL_SHUTDOWN; the sessions close then.
    Draining {
        /// Why (the request, or the Node's deletion).
        why: String,
        /// When the sessions close.
        #[serde(serialize_with = "unix_secs")]
        until: SystemTime,
    },
    /// Decommissioned: no sessions, no routes; waiting for the Node to come back.
    Decommissioned {
        /// Why.
        why: String,
    },
}

/// A cheaply cloned handle.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<Status>>);

impl Shared {
    /// Locks the status. A poisoned lock (a panicking task) still yields
    /// the data: the status is only counters and views.
    pub fn lock(&self) -> MutexGuard<'_, Status> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer views with uptimes brought up to date.
    pub fn peers(&self) -> Vec<PeerView> {
        let s = self.lock();
        s.peers
            .values()
            .map(|p| {
                let mut v = p.view.clone();
                v.uptime_secs = p.established_at.map_or(0, |t| t.elapsed().as_secs());
                v.routes_received = s.routes_received.get(&v.name).copied().unwrap_or(0);
                v.bfd = s.bfd.sessions.get(&v.name).map(|b| b.state);
                v
            })
            .collect()
    }

    /// Records why a peer (by its configured name) is not up.
    pub fn note_failure(&self, name: &str, why: String) {
        if let Some(p) = self.lock().peers.values_mut().find(|p| p.view.name == name) {
            p.view.last_failure = Some(why);
        }
    }
}

/// The name of a state as shown.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "Idle",
        State::Connect => "Connect",
        State::Active => "Active",
        State::OpenSent => "OpenSent",
        State::OpenConfirm => "OpenConfirm",
        State::Established => "Established",
    }
}

/// What `bgpd show fib` and the metrics report about the kernel task.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelView {
    /// The kernel table programmed.
    pub table: u32,
    /// The protocol number our routes carry.
    pub protocol: u8,
    /// The metric our routes carry, unless the best path has a priority
    /// (BGPFilter `setPriority`), which is then the route's metric.
    pub metric: u32,
    /// Whether the routes of a previous run were swept yet.
    pub swept: bool,
    /// Learned prefixes wanted in the kernel (with a next hop).
    pub learned: usize,
    /// Blackholes wanted (this node's blocks).
    pub blackholes: usize,
    /// Learned routes wanted through `tunl0` (IPIP pools).
    pub ipip: usize,
    /// Learned routes left to Felix (VXLAN pools, and those `programClusterRoutes`
    /// leaves to it), not installed.
    pub vxlan_skipped: usize,
    /// Whether `tunl0` exists (checked at start, on link changes and when a
    /// route through it fails).
    pub tunl0_present: bool,
    /// Routes that are not in the kernel as wanted, and why.
    pub failing: BTreeMap<IpNet, String>,
    /// The speaker taken over (`--take-over`), if any.
    pub take_over: Option<TakeOverView>,
    /// The FIB's metrics (`fib_*`), rendered with the daemon's.
    #[serde(skip)]
    pub registry: prometheus::Registry,
}

/// `bgpd run --take-over`: the predecessor's routes in the kernel table.
/// Where the removal of a taken-over speaker's routes stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeOverPhase {
    /// Until the selection deferral ends and bgpd's routes are in: all of them forward.
    #[default]
    Waiting,
    /// Those bgpd replaced are gone; each other one goes when bgpd's route for its
    /// prefix goes in, all of them at the end of the hold.
    Replacing,
    /// All removed (or failed, with errors logged).
    Done,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TakeOverView {
    /// Its protocol number.
    pub protocol: u8,
    /// Its name (`bird`).
    pub name: String,
    /// Its routes still in the table.
    pub left: usize,
    /// Where their removal stands.
    pub phase: TakeOverPhase,
    /// Seconds after the selection deferral that the routes not replaced are kept.
    pub hold_seconds: u64,
    /// `fib_predecessor_routes`, which `left` is read from.
    #[serde(skip)]
    pub gauge: Option<prometheus::IntGauge>,
}

// ----- the data other tasks publish here (status holds data; the tasks import it) -----

/// `show bfd`: one session.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BfdStatus {
    /// The BGP peer.
    pub peer: String,
    /// Its address.
    pub address: std::net::IpAddr,
    /// `single-hop` or `multihop`.
    pub kind: &'static str,
    /// The interface it is on, when known.
    pub interface: Option<String>,
    /// The session's state.
    pub state: bgpd_proto::bfd::State,
    /// The remote's state.
    pub remote_state: bgpd_proto::bfd::State,
    /// Local discriminator.
    pub local_discr: u32,
    /// Remote discriminator (0: not known).
    pub remote_discr: u32,
    /// The negotiated transmit interval, ms.
    pub tx_interval_ms: u64,
    /// The negotiated receive interval, ms.
    pub rx_interval_ms: u64,
    /// The detection time, ms.
    pub detection_time_ms: u64,
    /// The multiplier this side sends.
    pub multiplier: u8,
    /// Since when Up (Unix seconds).
    pub up_since: Option<u64>,
    /// The last local diagnostic.
    pub diag: String,
    /// The remote's diagnostic.
    pub remote_diag: String,
    /// Times it left Up.
    pub flaps: u64,
    /// Packets received, sent.
    pub received: u64,
    /// Packets sent.
    pub sent: u64,
    /// A problem with its sockets, if any.
    pub error: Option<String>,
}

#[cfg(test)]
impl BfdStatus {
    /// An Up single-hop session with `peer` at 10.0.0.2, for tests.
    pub fn example(peer: &str) -> BfdStatus {
        BfdStatus {
            peer: peer.into(),
            address: "10.0.0.2".parse().unwrap(),
            kind: "single-hop",
            interface: Some("eth0".into()),
            state: bgpd_proto::bfd::State::Up,
            remote_state: bgpd_proto::bfd::State::Up,
            local_discr: 1,
            remote_discr: 2,
            tx_interval_ms: 300,
            rx_interval_ms: 300,
            detection_time_ms: 900,
            multiplier: 3,
            up_since: None,
            diag: "None".into(),
            remote_diag: "None".into(),
            flaps: 1,
            received: 10,
            sent: 10,
            error: None,
        }
    }
}

/// `show bfd`: every session and the packets discarded before reaching one.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BfdView {
    /// Sessions by peer name.
    pub sessions: BTreeMap<String, BfdStatus>,
    /// Packets discarded, by why (RFC 5880 §6.8.6, RFC 5881 §5).
    pub discarded: BTreeMap<String, u64>,
    /// Listening sockets that could not be opened.
    pub errors: Vec<String>,
}

/// What the node status needs from a load of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The BGP identifier.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// The node has an IPv4 / IPv6 BGP address.
    pub families: (bool, bool),
    /// When the daemon first loaded its configuration (its start).
    pub booted_at: Option<SystemTime>,
    /// Each planned peer's kind, by peer name.
    pub peer_types: BTreeMap<String, PeerType>,
}

/// `BGPPeerType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PeerType {
    /// The node-to-node mesh.
    NodeMesh,
    /// A BGPPeer that selects this node (`node`, `nodeSelector`), or the
    /// reverse side of another node's BGPPeer.
    NodePeer,
    /// A global BGPPeer (neither `node` nor `nodeSelector`).
    GlobalPeer,
}

impl PeerType {
    /// The PEER TYPE column of `calicoctl node status`.
    pub fn words(self) -> &'static str {
        match self {
            PeerType::NodeMesh => "node-to-node mesh",
            PeerType::NodePeer => "node specific",
            PeerType::GlobalPeer => "global",
        }
    }
}
