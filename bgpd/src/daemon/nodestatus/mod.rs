//! Calico's `CalicoNodeStatus` (`projectcalico.org/v3`): a user creates one per
//! node (`spec.node`, `spec.classes` ⊆ {Agent, BGP, Routes},
//! `spec.updatePeriodSeconds`) and the node writes its `status` every period
//! (0: never), as calico-node's status reporter does for BIRD. bgpd reads the
//! objects from its datastore ([`request`]), renders the status from its own state
//! (peers, their kinds, the RIB's best paths, the kernel's view: [`render`]),
//! writes it back to the datastore ([`writer`]), and prints it as
//! `calicoctl node status` does for `bgpd show status` ([`table`]).
//!
//! Field names and enum values are the CRD's
//! (`caliconodestatuses.projectcalico.org`); the tests check what is written
//! against that schema.

pub mod follow;
pub mod render;
pub mod request;
pub mod sources;
pub mod table;
pub mod writer;

#[cfg(test)]
mod tests;

pub use super::status::PeerType;
use serde::{Deserialize, Serialize};

/// `status` of a CalicoNodeStatus. A section is present when its class was
/// asked for (`None` fields are not written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// When the status was rendered (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Class `Agent`: the BGP daemon (bgpd stands in for both BIRDs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// Class `BGP`: the sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,
    /// Class `Routes`: the routes used and where they came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
}

/// `status.agent`: one entry per address family, as Calico runs one BIRD per
/// family; bgpd is one daemon for both, so both say the same of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// The IPv4 side (present when the node has an IPv4 BGP address).
    #[serde(rename = "birdV4", skip_serializing_if = "Option::is_none")]
    pub bird_v4: Option<AgentDetail>,
    /// The IPv6 side (present when the node has an IPv6 BGP address).
    #[serde(rename = "birdV6", skip_serializing_if = "Option::is_none")]
    pub bird_v6: Option<AgentDetail>,
}

/// `status.agent.birdV4` / `birdV6`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentDetail {
    /// Ready while the daemon runs its sessions; NotReady while it
    /// decommissions or is decommissioned.
    pub state: AgentState,
    /// `bgpd VERSION`.
    pub version: String,
    /// The BGP identifier.
    #[serde(rename = "routerID")]
    pub router_id: String,
    /// When the daemon started (`YYYY-MM-DD HH:MM:SS`, UTC, as BIRD prints it).
    pub last_boot_time: String,
    /// When the configuration was last loaded (same format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconfiguration_time: Option<String>,
}

/// `BGPDaemonState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Running.
    Ready,
    /// Not running its sessions.
    NotReady,
}

/// `status.bgp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bgp {
    /// IPv4 sessions Established.
    #[serde(rename = "numberEstablishedV4")]
    pub number_established_v4: usize,
    /// IPv6 sessions Established.
    #[serde(rename = "numberEstablishedV6")]
    pub number_established_v6: usize,
    /// IPv4 sessions not Established.
    #[serde(rename = "numberNotEstablishedV4")]
    pub number_not_established_v4: usize,
    /// IPv6 sessions not Established.
    #[serde(rename = "numberNotEstablishedV6")]
    pub number_not_established_v6: usize,
    /// The IPv4 sessions (by the peer's address family).
    #[serde(rename = "peersV4", default, skip_serializing_if = "Vec::is_empty")]
    pub peers_v4: Vec<Peer>,
    /// The IPv6 sessions.
    #[serde(rename = "peersV6", default, skip_serializing_if = "Vec::is_empty")]
    pub peers_v6: Vec<Peer>,
}

/// One session in `status.bgp.peersV4` / `peersV6`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The peer's address.
    #[serde(rename = "peerIP")]
    pub peer_ip: String,
    /// Why the session exists.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// The RFC 4271 state.
    pub state: SessionState,
    /// Since when Established (`YYYY-MM-DD HH:MM:SS`, UTC); absent otherwise
    /// (bgpd does not keep when a session that is not up last changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// `BGPSessionState` (RFC 4271 §8.2.2 names; `Close` is BIRD's and never
/// written by bgpd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Idle.
    Idle,
    /// Connect.
    Connect,
    /// Active.
    Active,
    /// OpenSent.
    OpenSent,
    /// OpenConfirm.
    OpenConfirm,
    /// Established.
    Established,
    /// BIRD's closing state.
    Close,
}

impl From<bgpd_proto::session::State> for SessionState {
    fn from(s: bgpd_proto::session::State) -> SessionState {
        use bgpd_proto::session::State;
        match s {
            State::Idle => SessionState::Idle,
            State::Connect => SessionState::Connect,
            State::Active => SessionState::Active,
            State::OpenSent => SessionState::OpenSent,
            State::OpenConfirm => SessionState::OpenConfirm,
            State::Established => SessionState::Established,
        }
    }
}

/// `status.routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// IPv4 routes.
    #[serde(rename = "routesV4", default, skip_serializing_if = "Vec::is_empty")]
    pub routes_v4: Vec<Route>,
    /// IPv6 routes.
    #[serde(rename = "routesV6", default, skip_serializing_if = "Vec::is_empty")]
    pub routes_v6: Vec<Route>,
}

/// One route in `status.routes.routesV4` / `routesV6`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// FIB: in the kernel as bgpd wants it; RIB: selected, not in the kernel
    /// (kernel programming off, the route failing, or a route the node only
    /// advertises).
    #[serde(rename = "type")]
    pub kind: RouteType,
    /// The prefix.
    pub destination: String,
    /// The next hop, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The outgoing interface, when known (`blackhole` for the node's blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Where the route came from.
    pub learned_from: LearnedFrom,
}

/// `CalicoNodeRouteType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteType {
    /// In the kernel.
    #[serde(rename = "FIB")]
    Fib,
    /// In the RIB only.
    #[serde(rename = "RIB")]
    Rib,
}

/// `status.routes.*.learnedFrom`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedFrom {
    /// The kind of source.
    pub source_type: SourceType,
    /// The peer it was learned from, for BGP routes.
    #[serde(rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
}

/// `CalicoNodeRouteSourceType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceType {
    /// From the kernel (not written by bgpd).
    Kernel,
    /// Originated by this node (its blocks, service addresses), as Calico's
    /// BIRD originates them from static routes.
    Static,
    /// A connected route (not written by bgpd).
    Direct,
    /// Learned over the node-to-node mesh.
    NodeMesh,
    /// Learned from a BGPPeer's session.
    #[serde(rename = "BGPPeer")]
    BgpPeer,
}

/// The classes a CalicoNodeStatus asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Classes {
    /// `Agent`.
    pub agent: bool,
    /// `BGP`.
    pub bgp: bool,
    /// `Routes`.
    pub routes: bool,
}

impl Classes {
    /// Every class (what `bgpd show status` renders).
    pub const ALL: Classes = Classes { agent: true, bgp: true, routes: true };
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as BIRD prints times and Calico passes them on.
pub fn bird_time(t: std::time::SystemTime) -> String {
    utc(t).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// RFC 3339 in UTC with whole seconds (`metav1.Time`'s form).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    utc(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn utc(t: std::time::SystemTime) -> k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc> {
    k8s_openapi::chrono::DateTime::<k8s_openapi::chrono::Utc>::from(t)
}
