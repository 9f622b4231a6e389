//! `projectcalico.org/v3` `BGPConfiguration` named `default`: cluster-wide BGP
//! settings, with Calico's defaults when the object or a field is absent.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::fields::{as_str, as_u64, quoted, Fields, Findings};
use super::secret::Secrets;
use super::values::{duration_from_value, parse_network, AsNumber, ConfiguredCommunity, Md5Key};

/// Cluster-wide BGP settings (the `default` BGPConfiguration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpConfiguration {
    /// `asNumber`: the cluster AS, used by nodes without their own. Default 64512.
    pub as_number: AsNumber,
    /// `listenPort`: the TCP port bgpd listens on and dials node peers on. Default 179.
    pub listen_port: u16,
    /// `bindMode`: whether to listen on all addresses or only the node's IP.
    pub bind_mode: BindMode,
    /// `logSeverityScreen`: BGP log level. Default Info.
    pub log_severity_screen: LogSeverity,
    /// `nodeToNodeMeshEnabled`: full iBGP mesh between all nodes. Default true.
    pub node_to_node_mesh_enabled: bool,
    /// `nodeMeshPassword`: TCP MD5 key for the mesh sessions.
    pub node_mesh_password: Option<Md5Key>,
    /// `nodeMeshPassword` is set but its Secret does not resolve: the mesh
    /// is held (no mesh session runs) until it does, rather than run without
    /// the password it is configured with.
    pub node_mesh_password_unresolved: bool,
    /// `nodeMeshMaxRestartTime`: graceful-restart time for mesh sessions. Default 120s.
    pub node_mesh_max_restart_time: Duration,
    /// `serviceClusterIPs[].cidr`: Service cluster IP ranges to advertise.
    pub service_cluster_ips: Vec<IpNet>,
    /// `serviceExternalIPs[].cidr`: Service external IP ranges to advertise.
    pub service_external_ips: Vec<IpNet>,
    /// `serviceLoadBalancerIPs[].cidr`: LoadBalancer ingress ranges to advertise.
    pub service_load_balancer_ips: Vec<IpNet>,
    /// `serviceLoadBalancerAggregation`: `Enabled` (default, `true`) advertises the
    /// `serviceLoadBalancerIPs` ranges from every node; `Disabled` advertises only
    /// each Service's own LoadBalancer addresses.
    pub service_load_balancer_aggregation: bool,
    /// `communities[]`: named community values that `prefixAdvertisements` may use.
    pub communities: BTreeMap<String, ConfiguredCommunity>,
    /// `prefixAdvertisements[]`: communities to attach to prefixes, names resolved.
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// `ignoredInterfaces`: interface names (globs allowed, `*`) whose routes bgpd
    /// leaves alone.
    pub ignored_interfaces: Vec<String>,
    /// Annotation `bgpd.io/max-paths`: the ECMP width, 1 to 64 (default 16).
    pub max_paths: u8,
    /// Annotation `bgpd.io/always-compare-med`: compare MED across neighbouring
    /// ASes too (default false, as in BIRD and FRR).
    pub always_compare_med: bool,
    /// Annotation `bgpd.io/node-mesh-long-lived-stale-time`: the long-lived
    /// stale time (RFC 9494) of the node-to-node mesh sessions, seconds.
    pub node_mesh_long_lived_stale_time: Option<u32>,
    /// Annotations `bgpd.io/max-prefix` and `bgpd.io/max-prefix-action`: the
    /// prefix limit of every peer that has none of its own, node-to-node mesh
    /// peers included, and whether exceeding it closes the session (default:
    /// warn only). Unset: the built-in default (100,000, warn).
    pub default_max_prefix: Option<(u32, bool)>,
    /// `localWorkloadPeeringIPV4`: this node's end of its sessions with its
    /// own workloads over IPv4 (BGPPeer `localWorkloadSelector`).
    pub local_workload_peering_ipv4: Option<std::net::Ipv4Addr>,
    /// `localWorkloadPeeringIPV6`: the same over IPv6.
    pub local_workload_peering_ipv6: Option<std::net::Ipv6Addr>,
    /// `programClusterRoutes`: the IP pools whose learned routes bgpd
    /// installs in the kernel; Felix installs the others.
    pub program_cluster_routes: ClusterRoutes,
}

/// `programClusterRoutes`: which classes of IP pool the BGP daemon (Calico's
/// BIRD; here bgpd) programs the cluster routes of, the routes to other
/// nodes' blocks; Felix programs the rest (its own `programClusterRoutes`
/// must be the complement). VXLAN pools are always Felix's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterRoutes {
    /// Pools with `ipipMode` `Always` or `CrossSubnet` (`Enabled`, `EnabledIPIPOnly`).
    pub ipip: bool,
    /// Pools with `ipipMode` and `vxlanMode` both `Never` (`Enabled`, `EnabledNoEncapOnly`).
    pub no_encap: bool,
}

impl ClusterRoutes {
    /// Calico's default, for the field absent or a value it does not know:
    /// `EnabledNoEncapOnly` (Calico 3.33; Felix programs IPIP pools' routes).
    pub const CALICO_DEFAULT: ClusterRoutes = ClusterRoutes { ipip: false, no_encap: true };

    /// The value of `programClusterRoutes`, if it is one of Calico's four.
    pub fn from_name(s: &str) -> Option<ClusterRoutes> {
        let (ipip, no_encap) = match s {
            "Enabled" => (true, true),
            "Disabled" => (false, false),
            "EnabledIPIPOnly" => (true, false),
            "EnabledNoEncapOnly" => (false, true),
            _ => return None,
        };
        Some(ClusterRoutes { ipip, no_encap })
    }
}

impl Default for ClusterRoutes {
    fn default() -> Self {
        ClusterRoutes::CALICO_DEFAULT
    }
}

/// The ECMP width when `bgpd.io/max-paths` is not set.
pub const DEFAULT_MAX_PATHS: u8 = 16;

impl Default for BgpConfiguration {
    /// Calico's defaults, used when there is no `default` BGPConfiguration.
    fn default() -> Self {
        BgpConfiguration {
            as_number: AsNumber::CALICO_DEFAULT,
            listen_port: 179,
            bind_mode: BindMode::None,
            log_severity_screen: LogSeverity::Info,
            node_to_node_mesh_enabled: true,
            node_mesh_password: None,
            node_mesh_password_unresolved: false,
            node_mesh_max_restart_time: Duration::from_secs(120),
            service_cluster_ips: Vec::new(),
            service_external_ips: Vec::new(),
            service_load_balancer_ips: Vec::new(),
            service_load_balancer_aggregation: true,
            communities: BTreeMap::new(),
            prefix_advertisements: Vec::new(),
            ignored_interfaces: Vec::new(),
            max_paths: DEFAULT_MAX_PATHS,
            always_compare_med: false,
            node_mesh_long_lived_stale_time: Some(super::bgp_peer::DEFAULT_LONG_LIVED_STALE_TIME),
            default_max_prefix: None,
            local_workload_peering_ipv4: None,
            local_workload_peering_ipv6: None,
            program_cluster_routes: ClusterRoutes::default(),
        }
    }
}

/// bgpd's own settings, as annotations on the `default` BGPConfiguration
/// (Calico has no fields for them): (max paths, always compare MED, the mesh's
/// long-lived stale time).
fn decision_annotations(root: &Fields, f: &mut Findings) -> (u8, bool, Option<u32>) {
    let ll_default = Some(super::bgp_peer::DEFAULT_LONG_LIVED_STALE_TIME);
    let Ok(meta) = root.child("metadata") else { return (DEFAULT_MAX_PATHS, false, ll_default) };
    let a = f.take(meta.string_map("annotations")).unwrap_or_default();
    let path = |k: &str| format!("metadata.annotations[{k:?}]");
    let max_paths = a.get("bgpd.io/max-paths").map_or(DEFAULT_MAX_PATHS, |v| match v.parse::<u8>() {
        Ok(n @ 1..=64) => n,
        _ => {
            f.error(path("bgpd.io/max-paths"), format!("{v:?} is not a number of paths from 1 to 64"));
            DEFAULT_MAX_PATHS
        }
    });
    let always = match a.get("bgpd.io/always-compare-med").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            f.error(path("bgpd.io/always-compare-med"), format!("{other:?} is not true or false"));
            false
        }
    };
    let mesh_ll = super::bgp_peer::long_lived_stale_time(&a, "bgpd.io/node-mesh-long-lived-stale-time", f);
    (max_paths, always, mesh_ll)
}

/// `bindMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// Listen on every address (Calico's default).
    #[default]
    None,
    /// Listen only on the node's `ipv4Address` / `ipv6Address`.
    NodeIp,
}

/// `logSeverityScreen` (case-insensitive in the file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogSeverity {
    /// Debug and above.
    Debug,
    /// Info and above (default).
    #[default]
    Info,
    /// Warnings and errors.
    Warning,
    /// Errors only.
    Error,
    /// Fatal errors only.
    Fatal,
}

impl FromStr for LogSeverity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => LogSeverity::Debug,
            "info" => LogSeverity::Info,
            "warning" => LogSeverity::Warning,
            "error" => LogSeverity::Error,
            "fatal" => LogSeverity::Fatal,
            _ => return Err(format!("{} is not one of Debug, Info, Warning, Error, Fatal", quoted(s))),
        })
    }
}

/// One `prefixAdvertisements` entry: attach these communities to routes for `cidr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixAdvertisement {
    /// The prefix (routes within it get the communities).
    pub cidr: IpNet,
    /// Community values; names from `communities` are already replaced by values.
    pub communities: Vec<ConfiguredCommunity>,
}

/// A per-node BGPConfiguration (`node.NAME`): the fields Calico lets one
/// node override (its documentation: "Only prefixAdvertisements, listenPort,
/// and logSeverityScreen can be overridden this way"); `None`: the `default`
/// BGPConfiguration's value applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeBgpConfiguration {
    /// `listenPort`: the port this node listens on, and that other nodes dial
    /// it on (mesh, `peerSelector` peers, BGPPeers whose `peerIP` is this node).
    pub listen_port: Option<u16>,
    /// `logSeverityScreen`: this node's log level.
    pub log_severity_screen: Option<LogSeverity>,
    /// `prefixAdvertisements`, names resolved against this object's own
    /// `communities`: when given, it replaces the default's list for this node.
    pub prefix_advertisements: Option<Vec<PrefixAdvertisement>>,
}

/// The fields of a `node.NAME` BGPConfiguration that apply to the node.
const NODE_FIELDS: &[&str] = &["listenPort", "logSeverityScreen", "prefixAdvertisements", "communities"];

/// Reads a per-node BGPConfiguration (`node.NAME`). The fields Calico only
/// reads from `default` are warned about and ignored, as Calico ignores them.
pub(crate) fn parse_node(root: &Fields, f: &mut Findings) -> Option<NodeBgpConfiguration> {
    let spec = f.take(root.child("spec"))?;
    for other in spec.unknown_keys(NODE_FIELDS) {
        f.warn(
            other,
            "only listenPort, logSeverityScreen and prefixAdvertisements (with its communities) apply per node, \
             as in Calico; ignored here (set it in the BGPConfiguration named \"default\")",
        );
    }
    let listen_port = f.opt(spec.get("listenPort", port));
    let log_severity_screen = f.opt(spec.parse_str("logSeverityScreen", str::parse));
    let named = communities(&spec, f);
    let prefix_advertisements = spec.has("prefixAdvertisements").then(|| prefix_advertisements(&spec, &named, f));
    f.errors.is_empty().then_some(NodeBgpConfiguration { listen_port, log_severity_screen, prefix_advertisements })
}

/// `programClusterRoutes`. A value Calico does not know is read as Calico
/// reads it, as the default (so that bgpd and Felix agree), with a warning.
fn program_cluster_routes(spec: &Fields, f: &mut Findings) -> ClusterRoutes {
    let value = f.opt(spec.parse_str("programClusterRoutes", |s| Ok::<String, String>(s.to_string())));
    match value {
        None => ClusterRoutes::default(),
        Some(v) => ClusterRoutes::from_name(&v).unwrap_or_else(|| {
            f.warn(
                spec.path_of("programClusterRoutes"),
                format!(
                    "{} is not one of Enabled, Disabled, EnabledIPIPOnly, EnabledNoEncapOnly: read as \
                     EnabledNoEncapOnly, Calico's default",
                    quoted(&v)
                ),
            );
            ClusterRoutes::default()
        }),
    }
}

/// Fields of Calico's BGPConfiguration that bgpd refuses, and why.
fn refused_fields(spec: &Fields, f: &mut Findings) {
    for key in ["ipv4NormalRoutePriority", "ipv6NormalRoutePriority"] {
        if spec.has(key) {
            f.warn(
                spec.path_of(key),
                "not supported: Felix's metric for workload routes, which Calico's BIRD uses in KubeVirt live \
                 migration; bgpd installs the routes it learns at metric 20 and takes no part in live migration; ignored",
            );
        }
    }
}

const FIELDS: &[&str] = &[
    "programClusterRoutes",
    "localWorkloadPeeringIPV4",
    "localWorkloadPeeringIPV6",
    "ipv4NormalRoutePriority",
    "ipv6NormalRoutePriority",
    "asNumber",
    "listenPort",
    "bindMode",
    "logSeverityScreen",
    "nodeToNodeMeshEnabled",
    "nodeMeshPassword",
    "nodeMeshMaxRestartTime",
    "serviceClusterIPs",
    "serviceExternalIPs",
    "serviceLoadBalancerIPs",
    "serviceLoadBalancerAggregation",
    "communities",
    "prefixAdvertisements",
    "ignoredInterfaces",
];

/// Reads the `default` BGPConfiguration.
pub(crate) fn parse(root: &Fields, secrets: &Secrets, f: &mut Findings) -> Option<BgpConfiguration> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let program_cluster_routes = program_cluster_routes(&spec, f);
    refused_fields(&spec, f);
    let d = BgpConfiguration::default();
    let as_number = f.opt(spec.get("asNumber", AsNumber::from_value)).unwrap_or(d.as_number);
    let listen_port = f.opt(spec.get("listenPort", port)).unwrap_or(d.listen_port);
    let bind_mode = f
        .opt(spec.parse_str("bindMode", |s| match s {
            "None" => Ok(BindMode::None),
            "NodeIP" => Ok(BindMode::NodeIp),
            _ => Err(format!("{} is not one of None, NodeIP", quoted(s))),
        }))
        .unwrap_or(d.bind_mode);
    let log_severity_screen = f.opt(spec.parse_str("logSeverityScreen", str::parse)).unwrap_or(d.log_severity_screen);
    let node_to_node_mesh_enabled = f.opt(spec.bool("nodeToNodeMeshEnabled")).unwrap_or(d.node_to_node_mesh_enabled);
    // A nodeMeshPassword whose Secret does not resolve holds the mesh and
    // keeps the rest of the object: dropping the object would fall back to
    // the defaults, which run the mesh without any password.
    let mut pf = Findings::default();
    let node_mesh_password = secrets.password(&spec, "nodeMeshPassword", &mut pf);
    let node_mesh_password_unresolved = !pf.errors.is_empty();
    for mut e in pf.errors {
        e.reason.push_str(
            ": the node-to-node mesh is held (no mesh session runs) until the password resolves \
             (bgpd never runs the mesh without the password it is configured with; Calico would)",
        );
        f.warnings.push(e);
    }
    f.warnings.extend(pf.warnings);
    let node_mesh_max_restart_time =
        f.opt(spec.get("nodeMeshMaxRestartTime", duration_from_value)).unwrap_or(d.node_mesh_max_restart_time);
    let service_cluster_ips = cidr_list(&spec, "serviceClusterIPs", f);
    let service_external_ips = cidr_list(&spec, "serviceExternalIPs", f);
    let service_load_balancer_ips = cidr_list(&spec, "serviceLoadBalancerIPs", f);
    let service_load_balancer_aggregation = f
        .opt(spec.parse_str("serviceLoadBalancerAggregation", |s| match s {
            "Enabled" => Ok(true),
            "Disabled" => Ok(false),
            _ => Err(format!("{} is not one of Enabled, Disabled", quoted(s))),
        }))
        .unwrap_or(d.service_load_balancer_aggregation);
    let communities = communities(&spec, f);
    let prefix_advertisements = prefix_advertisements(&spec, &communities, f);
    let ignored_interfaces = string_list(&spec, "ignoredInterfaces", f);
    let (max_paths, always_compare_med, node_mesh_long_lived_stale_time) = decision_annotations(root, f);
    let default_max_prefix = match root.child("metadata") {
        Ok(meta) => {
            super::bgp_peer::prefix_limit(&f.take(meta.string_map("annotations")).unwrap_or_default(), false, f)
        }
        Err(_) => None,
    };
    let local_workload_peering_ipv4 = f.opt(spec.parse_str("localWorkloadPeeringIPV4", |s| {
        std::net::Ipv4Addr::from_str(s).map_err(|_| format!("{} is not an IPv4 address", quoted(s)))
    }));
    let local_workload_peering_ipv6 = f.opt(spec.parse_str("localWorkloadPeeringIPV6", |s| {
        std::net::Ipv6Addr::from_str(s).map_err(|_| format!("{} is not an IPv6 address", quoted(s)))
    }));
    f.errors.is_empty().then_some(BgpConfiguration {
        as_number,
        listen_port,
        bind_mode,
        log_severity_screen,
        node_to_node_mesh_enabled,
        node_mesh_password,
        node_mesh_password_unresolved,
        node_mesh_max_restart_time,
        service_cluster_ips,
        service_external_ips,
        service_load_balancer_ips,
        service_load_balancer_aggregation,
        communities,
        prefix_advertisements,
        ignored_interfaces,
        max_paths,
        always_compare_med,
        node_mesh_long_lived_stale_time,
        default_max_prefix,
        local_workload_peering_ipv4,
        local_workload_peering_ipv6,
        program_cluster_routes,
    })
}

/// A TCP port, 1..=65535.
pub(crate) fn port(v: &serde_yaml::Value) -> Result<u16, String> {
    match as_u64(v)? {
        n @ 1..=65535 => Ok(n as u16),
        n => Err(format!("port {n} is out of range 1..=65535")),
    }
}

/// A list of `{cidr: …}` entries.
fn cidr_list(spec: &Fields, key: &str, f: &mut Findings) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list(key)).unwrap_or_default() {
        let Some(entry) = f.take(Fields::at(Some(item), &path)) else { continue };
        // An entry without a CIDR (`{}`, `{cidr: ""}`) is skipped, as Calico does,
        // rather than dropping the whole BGPConfiguration.
        if matches!(entry.str("cidr"), Ok(None)) {
            f.warn(entry.path_of("cidr"), "missing: the entry is skipped (as Calico does)");
            continue;
        }
        if let Some(Some(net)) = f.take(entry.parse_str("cidr", parse_network)) {
            out.push(net);
        }
    }
    out
}

fn string_list(spec: &Fields, key: &str, f: &mut Findings) -> Vec<String> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list(key)).unwrap_or_default() {
        match as_str(item) {
            Ok(s) if !s.is_empty() => out.push(s.to_string()),
            Ok(_) => f.error(path, "empty"),
            Err(reason) => f.error(path, reason),
        }
    }
    out
}

fn communities(spec: &Fields, f: &mut Findings) -> BTreeMap<String, ConfiguredCommunity> {
    let mut out = BTreeMap::new();
    for (path, item) in f.take(spec.list("communities")).unwrap_or_default() {
        let Some(entry) = f.take(Fields::at(Some(item), &path)) else { continue };
        let name = f.opt(entry.str("name"));
        let value = f.opt(entry.parse_str("value", str::parse::<ConfiguredCommunity>));
        match (name, value) {
            (Some(name), Some(_)) if out.contains_key(name) => {
                f.error(entry.path_of("name"), format!("community name {} is defined twice", quoted(name)));
            }
            (Some(name), Some(value)) => {
                out.insert(name.to_string(), value);
            }
            (None, _) if !entry.has("name") => f.error(entry.path_of("name"), "missing"),
            (_, None) if !entry.has("value") => f.error(entry.path_of("value"), "missing"),
            _ => {}
        }
    }
    out
}

fn prefix_advertisements(
    spec: &Fields,
    named: &BTreeMap<String, ConfiguredCommunity>,
    f: &mut Findings,
) -> Vec<PrefixAdvertisement> {
    let mut out = Vec::new();
    for (path, item) in f.take(spec.list("prefixAdvertisements")).unwrap_or_default() {
        let Some(entry) = f.take(Fields::at(Some(item), &path)) else { continue };
        let cidr = f.opt(entry.parse_str("cidr", parse_network));
        if cidr.is_none() && !entry.has("cidr") {
            f.error(entry.path_of("cidr"), "missing");
        }
        let mut communities = Vec::new();
        for (cpath, c) in f.take(entry.list("communities")).unwrap_or_default() {
            let resolved = as_str(c).and_then(|s| match named.get(s) {
                Some(v) => Ok(*v),
                None => s.parse::<ConfiguredCommunity>().map_err(|_| {
                    format!(
                        "{} is neither a name from spec.communities nor a community value (aa:nn or aa:nn:mm)",
                        quoted(s)
                    )
                }),
            });
            match resolved {
                Ok(v) => communities.push(v),
                Err(reason) => f.error(cpath, reason),
            }
        }
        if let Some(cidr) = cidr {
            out.push(PrefixAdvertisement { cidr, communities });
        }
    }
    out
}
