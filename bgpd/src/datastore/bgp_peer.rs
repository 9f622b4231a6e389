//! `projectcalico.org/v3` `BGPPeer`: a BGP session that some nodes open to a remote
//! speaker (a ToR, a route reflector, other nodes).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU8};
use std::time::Duration;

use bgpd_model::Selector;

use super::fields::{as_str, as_u64, quoted, Fields, Findings};
use super::secret::Secrets;
use super::values::{check_name, duration_from_value, parse_ip, AsNumber, Md5Key, PeerAddress};

/// A validated BGPPeer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    /// `metadata.name`.
    pub name: String,
    /// Which nodes open this session (`node`, `nodeSelector`, or all).
    pub scope: PeerScope,
    /// Whom they open it to (`peerIP` + `asNumber`, or `peerSelector`).
    pub remote: PeerRemote,
    /// `localASNumber`: the AS bgpd presents on this session instead of the node's.
    pub local_as_number: Option<AsNumber>,
    /// `password.secretKeyRef`, resolved: the TCP MD5 key (RFC 2385).
    pub password: Option<Md5Key>,
    /// `keepaliveTime`: the KEEPALIVE interval (hold time is 3×). `None`: bgpd's default.
    pub keepalive_time: Option<Duration>,
    /// `maxRestartTime`: graceful-restart time advertised to this peer. `None`: default.
    pub max_restart_time: Option<Duration>,
    /// `ttlSecurity`: GTSM (RFC 5082) hop count; `None` when absent or 0 (off).
    pub ttl_security: Option<NonZeroU8>,
    /// `sourceAddress`: whether the session is bound to the node's IP.
    pub source_address: SourceAddress,
    /// `filters`: names of BGPFilter resources applied to this peer, in order.
    pub filters: Vec<String>,
    /// `nextHopMode`, with `keepOriginalNextHop: true` folded in as `Keep`.
    pub next_hop_mode: ConfiguredNextHopMode,
    /// `numAllowedLocalASNumbers`: how often the local AS may appear in a received
    /// AS_PATH (allowas-in); `None` when absent or 0 (loops rejected, RFC 4271 §9.1.2).
    pub num_allowed_local_as_numbers: Option<NonZeroU32>,
    /// `reachableBy`: a gateway through which bgpd adds a static route to the peer.
    pub reachable_by: Option<IpAddr>,
    /// Annotations `bgpd.io/max-prefix` and `bgpd.io/max-prefix-action`
    /// (`teardown`, the default, or `warn`): (limit, teardown).
    pub max_prefix: Option<(u32, bool)>,
    /// Annotation `bgpd.io/add-path`: `receive`, `send` or `both` (RFC 7911).
    pub add_path: AddPathConfig,
    /// Annotation `bgpd.io/add-path-send-count`: paths sent per prefix (0: the whole ECMP set).
    pub add_path_send_count: u8,
    /// Annotation `bgpd.io/mrai`: MinRouteAdvertisementInterval in seconds (0, the default: none).
    pub mrai: std::time::Duration,
    /// Annotation `bgpd.io/keep-received: "true"`: keep the peer's routes
    /// before import policy (soft reconfiguration inbound).
    pub keep_received: bool,
    /// Annotation `bgpd.io/long-lived-stale-time`: the long-lived stale time
    /// (RFC 9494) advertised to the peer, seconds (default
    /// [`DEFAULT_LONG_LIVED_STALE_TIME`]; 0: the capability without a time).
    pub long_lived_stale_time: Option<u32>,
    /// Annotation `bgpd.io/graceful-notification: "true"`: offer the N bit
    /// (RFC 8538): NOTIFICATIONs other than Hard Reset keep graceful restart
    /// in force (Hold Timer Expired included). Default false.
    pub graceful_notification: bool,
    /// Annotation `bgpd.io/bfd`: BFD with this peer.
    pub bfd: BfdMode,
    /// `reversePeering`: whether the nodes this peer's remote side selects
    /// (`peerSelector`, or a `peerIP` that is a Calico node) peer back on
    /// their own (`Auto`, the default) or only through a BGPPeer of their own.
    pub reverse_peering: ReversePeering,
}

/// `reversePeering` of a BGPPeer between Calico nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReversePeering {
    /// The remote nodes get the reverse session from this BGPPeer (Calico's default).
    #[default]
    Auto,
    /// They do not: another BGPPeer must select them for it.
    Manual,
}

/// Whether a BGP peer runs BFD (BGPPeer annotation `bgpd.io/bfd`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BfdMode {
    /// No annotation: single-hop BFD when a BFDConfiguration selects the node
    /// and an interface pattern matches the interface the peer is on.
    #[default]
    Auto,
    /// `"true"`: single-hop BFD, with the BFDConfiguration's timers when one
    /// matches, else bgpd's defaults.
    On,
    /// `"false"`: no BFD.
    Off,
    /// `"multihop"`: multihop BFD (RFC 5883), for a peer not on a connected network.
    Multihop,
}

/// The long-lived stale time bgpd advertises by default (RFC 9494), as
/// BIRD's default: peers keep a restarting node's routes, depreferenced, an
/// hour past the restart time.
pub const DEFAULT_LONG_LIVED_STALE_TIME: u32 = 3600;

/// bgpd's own BGPPeer settings read from annotations.
struct Annotations {
    max_prefix: Option<(u32, bool)>,
    add_path: AddPathConfig,
    add_path_send_count: u8,
    mrai: std::time::Duration,
    keep_received: bool,
    long_lived_stale_time: Option<u32>,
    graceful_notification: bool,
    bfd: BfdMode,
}

/// Reads `bgpd.io/long-lived-stale-time` (seconds, 0 to 2^24 − 1) from annotations `a`.
pub(crate) fn long_lived_stale_time(
    a: &std::collections::BTreeMap<String, String>,
    key: &str,
    f: &mut Findings,
) -> Option<u32> {
    match a.get(key).map(|v| (v, v.parse::<u32>())) {
        None => Some(DEFAULT_LONG_LIVED_STALE_TIME),
        Some((_, Ok(n))) if n <= bgpd_proto::session::MAX_LONG_LIVED_STALE_TIME => Some(n),
        Some((v, _)) => {
            f.error(
                format!("metadata.annotations[{key:?}]"),
                format!("{v:?} is not a number of seconds from 0 to 16777215"),
            );
            Some(DEFAULT_LONG_LIVED_STALE_TIME)
        }
    }
}

/// ADD-PATH directions asked for on a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddPathConfig {
    /// Accept several paths per prefix from the peer.
    pub receive: bool,
    /// Send several paths per prefix to the peer.
    pub send: bool,
}

/// bgpd's own BGPPeer settings, as annotations (Calico has no fields for them).
fn annotations(root: &Fields, f: &mut Findings) -> Annotations {
    let none = std::time::Duration::ZERO;
    let Ok(meta) = root.child("metadata") else {
        return Annotations {
            max_prefix: None,
            add_path: AddPathConfig::default(),
            add_path_send_count: 0,
            mrai: none,
            keep_received: false,
            long_lived_stale_time: Some(DEFAULT_LONG_LIVED_STALE_TIME),
            graceful_notification: false,
            bfd: BfdMode::Auto,
        };
    };
    let a = f.take(meta.string_map("annotations")).unwrap_or_default();
    let path = |k: &str| format!("metadata.annotations[{k:?}]");
    let max_prefix = prefix_limit(&a, true, f);
    let add_path = match a.get("bgpd.io/add-path").map(String::as_str) {
        None => AddPathConfig::default(),
        Some("receive") => AddPathConfig { receive: true, send: false },
        Some("send") => AddPathConfig { receive: false, send: true },
        Some("both") => AddPathConfig { receive: true, send: true },
        Some(other) => {
            f.error(path("bgpd.io/add-path"), format!("{other:?} is not receive, send or both"));
            AddPathConfig::default()
        }
    };
    let count = a.get("bgpd.io/add-path-send-count").map_or(0, |v| match v.parse::<u8>() {
        Ok(n) => n,
        Err(_) => {
            f.error(path("bgpd.io/add-path-send-count"), format!("{v:?} is not a number from 0 to 255"));
            0
        }
    });
    let mrai = a.get("bgpd.io/mrai").map_or(none, |v| match v.parse::<u64>() {
        Ok(n @ 0..=600) => std::time::Duration::from_secs(n),
        _ => {
            f.error(path("bgpd.io/mrai"), format!("{v:?} is not a number of seconds from 0 to 600"));
            none
        }
    });
    let keep_received = match a.get("bgpd.io/keep-received").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            f.error(path("bgpd.io/keep-received"), format!("{other:?} is not true or false"));
            false
        }
    };
    let long_lived_stale_time = long_lived_stale_time(&a, "bgpd.io/long-lived-stale-time", f);
    let graceful_notification = match a.get("bgpd.io/graceful-notification").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            f.error(path("bgpd.io/graceful-notification"), format!("{other:?} is not true or false"));
            false
        }
    };
    let bfd = match a.get("bgpd.io/bfd").map(String::as_str) {
        None => BfdMode::Auto,
        Some("true") => BfdMode::On,
        Some("false") => BfdMode::Off,
        Some("multihop") => BfdMode::Multihop,
        Some(other) => {
            f.error(path("bgpd.io/bfd"), format!("{other:?} is not true, false or multihop"));
            BfdMode::Auto
        }
    };
    Annotations {
        bfd,
        max_prefix,
        add_path,
        add_path_send_count: count,
        mrai,
        keep_received,
        long_lived_stale_time,
        graceful_notification,
    }
}

/// Annotations `bgpd.io/max-prefix` (a positive number of prefixes) and
/// `bgpd.io/max-prefix-action` (`teardown` or `warn`; `teardown_by_default` when
/// absent): the limit and whether exceeding it closes the session.
pub(crate) fn prefix_limit(
    a: &BTreeMap<String, String>,
    teardown_by_default: bool,
    f: &mut Findings,
) -> Option<(u32, bool)> {
    let path = |k: &str| format!("metadata.annotations[{k:?}]");
    let limit = a.get("bgpd.io/max-prefix").and_then(|v| match v.parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            f.error(path("bgpd.io/max-prefix"), format!("{v:?} is not a positive number of prefixes"));
            None
        }
    });
    let teardown = match a.get("bgpd.io/max-prefix-action").map(String::as_str) {
        None => teardown_by_default,
        Some("teardown") => true,
        Some("warn") => false,
        Some(other) => {
            f.error(path("bgpd.io/max-prefix-action"), format!("{other:?} is not teardown or warn"));
            teardown_by_default
        }
    };
    limit.map(|l| (l, teardown))
}

/// Which nodes a BGPPeer applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerScope {
    /// `spec.node`: this one node.
    Node(String),
    /// `spec.nodeSelector`: nodes whose labels match.
    NodeSelector(Selector),
    /// Neither: every node.
    Global,
}

/// The remote end of a BGPPeer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRemote {
    /// `peerIP` and `asNumber`: one external speaker.
    Address {
        /// The peer's IP and optional port (`ip:port`, `[v6]:port`).
        address: PeerAddress,
        /// The peer's AS.
        as_number: AsNumber,
    },
    /// `peerSelector`: every Calico node whose labels match (e.g. route reflectors);
    /// their addresses and AS numbers come from their Node objects.
    Nodes(Selector),
    /// `peerIP` without `asNumber`: the Calico node with that address, with its
    /// AS (as Calico reads it); no session while no Node has the address.
    Node {
        /// The node's IP and optional port.
        address: PeerAddress,
    },
}

/// A BGPPeer with `localWorkloadSelector`: its nodes peer with their own
/// workloads that the selector matches, at the default BGPConfiguration's
/// `localWorkloadPeeringIPV4` / `localWorkloadPeeringIPV6`. Kept apart from
/// [`super::Model::peers`] (in [`super::Model::local_workload_peers`]): its
/// remote side is no address and no node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWorkloadPeer {
    /// `localWorkloadSelector`: which workload endpoints (Calico's labels included).
    pub selector: Selector,
    /// `asNumber`: the workloads' AS (required).
    pub as_number: AsNumber,
    /// The BGPPeer's name, scope and session settings, read as for any
    /// BGPPeer. Its `remote` means nothing (it is `Nodes` of `selector`, which
    /// no code reads for such a peer).
    pub peer: BgpPeer,
}

/// A valid BGPPeer, by the kind of its remote side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedPeer {
    /// `peerIP` or `peerSelector`.
    Remote(BgpPeer),
    /// `localWorkloadSelector`.
    LocalWorkloads(LocalWorkloadPeer),
}

/// The remote side of a BGPPeer as read.
enum Remote {
    Peer(PeerRemote),
    LocalWorkloads { selector: Selector, as_number: AsNumber },
}

/// `sourceAddress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceAddress {
    /// Bind the session to the node's own IP (Calico's default).
    #[default]
    UseNodeIp,
    /// Let the kernel pick the source address.
    None,
}

/// `nextHopMode`: what next hop to send for routes to this peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConfiguredNextHopMode {
    /// BGP's usual rule: self for eBGP, unchanged for iBGP (Calico's default).
    #[default]
    Auto,
    /// Always this node's address (next-hop-self).
    Self_,
    /// Never change the next hop (what `keepOriginalNextHop: true` means).
    Keep,
}

const FIELDS: &[&str] = &[
    "node",
    "peerIP",
    "asNumber",
    "localASNumber",
    "nodeSelector",
    "peerSelector",
    "password",
    "keepaliveTime",
    "maxRestartTime",
    "ttlSecurity",
    "sourceAddress",
    "filters",
    "keepOriginalNextHop",
    "nextHopMode",
    "numAllowedLocalASNumbers",
    "reachableBy",
    "reversePeering",
    "localWorkloadSelector",
];

/// Reads a BGPPeer (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, secrets: &Secrets, f: &mut Findings) -> Option<ParsedPeer> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let scope = scope(&spec, f);
    let remote = remote(&spec, f);
    let reverse_peering = f
        .opt(spec.parse_str("reversePeering", |s| match s {
            "Auto" => Ok(ReversePeering::Auto),
            "Manual" => Ok(ReversePeering::Manual),
            _ => Err(format!("{} is not one of Auto, Manual", quoted(s))),
        }))
        .unwrap_or_default();
    let local_as_number = f.opt(spec.get("localASNumber", AsNumber::from_value));
    let password = secrets.peer_password(&spec, f);
    let keepalive_time = f.opt(spec.get("keepaliveTime", duration_from_value));
    if keepalive_time == Some(Duration::ZERO) {
        f.error(spec.path_of("keepaliveTime"), "must be more than 0 (leave it out for the default)");
    }
    let max_restart_time = f.opt(spec.get("maxRestartTime", duration_from_value));
    let ttl_security = f
        .opt(spec.get("ttlSecurity", |v| match as_u64(v)? {
            n @ 0..=255 => Ok(n as u8),
            n => Err(format!("{n} hops is out of range 0..=255")),
        }))
        .and_then(NonZeroU8::new);
    let source_address = f
        .opt(spec.parse_str("sourceAddress", |s| match s {
            "UseNodeIP" => Ok(SourceAddress::UseNodeIp),
            "None" => Ok(SourceAddress::None),
            _ => Err(format!("{} is not one of UseNodeIP, None", quoted(s))),
        }))
        .unwrap_or_default();
    let filters = filters(&spec, f);
    let next_hop_mode = next_hop_mode(&spec, f);
    let num_allowed_local_as_numbers = f
        .opt(spec.get("numAllowedLocalASNumbers", |v| {
            u32::try_from(as_u64(v)?).map_err(|_| "out of range 0..=4294967295".to_string())
        }))
        .and_then(NonZeroU32::new);
    let reachable_by = f.opt(spec.parse_str("reachableBy", parse_ip));
    if let (Some(gw), Some(Remote::Peer(PeerRemote::Address { address, .. } | PeerRemote::Node { address }))) =
        (reachable_by, &remote)
    {
        if gw.is_ipv4() != address.ip.is_ipv4() {
            f.error(spec.path_of("reachableBy"), format!("{gw} is not of the same IP family as peerIP {}", address.ip));
        }
    }
    let Annotations {
        max_prefix,
        add_path,
        add_path_send_count,
        mrai,
        keep_received,
        long_lived_stale_time,
        graceful_notification,
        bfd,
    } = annotations(root, f);
    let (Some(scope), Some(remote)) = (scope, remote) else { return None };
    let (peer_remote, workloads) = match remote {
        Remote::Peer(r) => (r, None),
        Remote::LocalWorkloads { selector, as_number } => {
            (PeerRemote::Nodes(selector.clone()), Some((selector, as_number)))
        }
    };
    let peer = f.errors.is_empty().then(|| BgpPeer {
        name: name.to_string(),
        scope,
        remote: peer_remote,
        local_as_number,
        password,
        keepalive_time,
        max_restart_time,
        ttl_security,
        source_address,
        filters,
        next_hop_mode,
        num_allowed_local_as_numbers,
        reachable_by,
        max_prefix,
        add_path,
        add_path_send_count,
        mrai,
        keep_received,
        long_lived_stale_time,
        graceful_notification,
        bfd,
        reverse_peering,
    })?;
    Some(match workloads {
        None => ParsedPeer::Remote(peer),
        Some((selector, as_number)) => ParsedPeer::LocalWorkloads(LocalWorkloadPeer { selector, as_number, peer }),
    })
}

fn selector(s: &str) -> Result<Selector, String> {
    Selector::parse(s).map_err(|e| e.to_string())
}

fn scope(spec: &Fields, f: &mut Findings) -> Option<PeerScope> {
    let node = f.take(spec.parse_str("node", |s| check_name(s).map(|()| s.to_string())));
    let node_selector = f.take(spec.parse_str("nodeSelector", selector));
    match (node?, node_selector?) {
        (Some(_), Some(_)) => {
            f.error(spec.path_of("nodeSelector"), "cannot be used together with node");
            None
        }
        (Some(node), None) => Some(PeerScope::Node(node)),
        (None, Some(sel)) => Some(PeerScope::NodeSelector(sel)),
        (None, None) => Some(PeerScope::Global),
    }
}

fn remote(spec: &Fields, f: &mut Findings) -> Option<Remote> {
    let address = f.take(spec.parse_str("peerIP", str::parse::<PeerAddress>));
    let as_number = f.take(spec.get("asNumber", AsNumber::from_value));
    let peer_selector = f.take(spec.parse_str("peerSelector", selector));
    let workloads = f.take(spec.parse_str("localWorkloadSelector", selector));
    let (address, as_number, peer_selector, workloads) = (address?, as_number?, peer_selector?, workloads?);
    if let Some(selector) = workloads {
        // Calico's validation: exclusive with peerIP and peerSelector, and
        // asNumber is required.
        for (set, other) in [(address.is_some(), "peerIP"), (peer_selector.is_some(), "peerSelector")] {
            if set {
                f.error(spec.path_of("localWorkloadSelector"), format!("cannot be used together with {other}"));
            }
        }
        let Some(as_number) = as_number else {
            f.error(spec.path_of("asNumber"), "missing: required with localWorkloadSelector (the workloads' AS)");
            return None;
        };
        return f.errors.is_empty().then_some(Remote::LocalWorkloads { selector, as_number });
    }
    let remote = match (address, as_number, peer_selector) {
        (Some(address), Some(as_number), None) => Some(PeerRemote::Address { address, as_number }),
        // Calico peers with the node at that address, with its AS.
        (Some(address), None, None) => Some(PeerRemote::Node { address }),
        (None, _, None) => {
            f.error(spec.path_of("peerIP"), "missing (a BGPPeer needs peerIP or peerSelector)");
            None
        }
        (Some(_), _, Some(_)) => {
            f.error(spec.path_of("peerSelector"), "cannot be used together with peerIP");
            None
        }
        (None, Some(_), Some(_)) => {
            f.error(
                spec.path_of("asNumber"),
                "cannot be used with peerSelector (the selected nodes' AS numbers are used)",
            );
            None
        }
        (None, None, Some(sel)) => Some(PeerRemote::Nodes(sel)),
    };
    remote.map(Remote::Peer)
}

fn filters(spec: &Fields, f: &mut Findings) -> Vec<String> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list("filters")).unwrap_or_default() {
        match as_str(item).and_then(|s| check_name(s).map(|()| s)) {
            Ok(s) => out.push(s.to_string()),
            Err(reason) => f.error(path, reason),
        }
    }
    out
}

fn next_hop_mode(spec: &Fields, f: &mut Findings) -> ConfiguredNextHopMode {
    let keep = f.opt(spec.bool("keepOriginalNextHop")).unwrap_or(false);
    let mode = f.opt(spec.parse_str("nextHopMode", |s| match s {
        "Auto" => Ok(ConfiguredNextHopMode::Auto),
        "Self" => Ok(ConfiguredNextHopMode::Self_),
        "Keep" => Ok(ConfiguredNextHopMode::Keep),
        _ => Err(format!("{} is not one of Auto, Self, Keep", quoted(s))),
    }));
    match (keep, mode) {
        (true, Some(ConfiguredNextHopMode::Auto | ConfiguredNextHopMode::Self_)) => {
            f.error(spec.path_of("keepOriginalNextHop"), "contradicts nextHopMode (use nextHopMode: Keep alone)");
            ConfiguredNextHopMode::Auto
        }
        (true, _) => ConfiguredNextHopMode::Keep,
        (false, mode) => mode.unwrap_or_default(),
    }
}
