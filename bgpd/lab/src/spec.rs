//! The lab template: the Calico and Kubernetes resources the nodes' datastore
//! gets, plus one `bgpd.io/v1` `Lab` document for what only the lab needs
//! (routers, L2 segments, hosts, pods per node, which endpoints are ready).
//! [`Topology::load`] reads a template and derives everything the lab builds:
//! namespaces, addresses, the routers' BGP sessions and the probes' targets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_yaml::Value;

/// The listener port every pod (and service address) answers on.
pub const DEFAULT_PORT: u16 = 7070;
/// The annotation that puts a resource (and a Node) into one cluster only.
pub const CLUSTER_ANNOTATION: &str = "lab.bgpd.io/cluster";
/// The cluster of resources without the annotation, when the lab has one cluster.
pub const DEFAULT_CLUSTER: &str = "cluster";

/// A template error: what was wrong, where.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {msg}")]
pub struct TemplateError {
    file: String,
    msg: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Meta,
    spec: LabSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabSpec {
    #[serde(default)]
    routers: Vec<RouterSpec>,
    #[serde(default)]
    hosts: Vec<HostSpec>,
    segments: Vec<SegmentSpec>,
    #[serde(default = "one")]
    pods_per_node: u32,
    #[serde(default)]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
    #[serde(default)]
    port: Option<u16>,
    /// Answers must come back through the members the requests went
    /// through (stateful firewalls, NAT): `bgpd verify` checks it.
    #[serde(default)]
    symmetric: bool,
    /// Nodes that run Calico's BIRD, configured as Calico's confd renders
    /// it, instead of bgpd (a cluster being migrated; `bgpd lab migrate`).
    #[serde(default)]
    calico_bird: Vec<String>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RouterSpec {
    name: String,
    #[serde(default)]
    implementation: Implementation,
    as_number: u32,
    /// `routerID`, as docs/lab.md spells it (Calico's spelling); `routerId` too.
    #[serde(default, alias = "routerID")]
    router_id: Option<Ipv4Addr>,
    /// Only these neighbours (names); default: every node and router on its segments.
    #[serde(default)]
    peers: Option<Vec<String>>,
}

/// What runs a router.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Implementation {
    /// bgpd itself, in a router role: a datastore of its own with a BGPPeer per
    /// session and an accept-all BGPFilter (transit).
    #[default]
    Bgpd,
    /// BIRD 2 (Debian `bird2`).
    Bird,
    /// FRR (Debian `frr`): zebra and bgpd.
    Frr,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HostSpec {
    name: String,
    gateway: Ipv4Addr,
    #[serde(default)]
    gateway6: Option<Ipv6Addr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SegmentSpec {
    name: String,
    members: Vec<MemberSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MemberSpec {
    name: String,
    #[serde(default)]
    address: Option<Ipv4Net>,
    #[serde(default)]
    address6: Option<Ipv6Net>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeSpec {
    name: String,
    pods: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    endpoints: Vec<EndpointSpec>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointSpec {
    node: String,
    #[serde(default = "yes")]
    ready: bool,
}

fn yes() -> bool {
    true
}

/// What a lab member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A Kubernetes node running `bgpd run`.
    Node {
        /// Its cluster (datastore).
        cluster: String,
        /// Its AS (Node `spec.bgp.asNumber`, else the cluster's default, else 64512).
        asn: u32,
        /// Pods attached to it.
        pods: u32,
    },
    /// A ToR, spine or fabric router.
    Router {
        /// BIRD or FRR.
        implementation: Implementation,
        /// Its AS.
        asn: u32,
        /// Its router ID.
        router_id: Ipv4Addr,
        /// Only these neighbours, when given.
        peers: Option<Vec<String>>,
    },
    /// A plain host (a client outside the clusters), default route via `gateway`.
    Host {
        /// Its default gateway.
        gateway: Ipv4Addr,
        /// Its IPv6 default gateway, if it has IPv6.
        gateway6: Option<Ipv6Addr>,
    },
}

/// A node, router or host: one network namespace.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its name in the template.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its IPv4 addresses: (segment, address), on segments where it has one
    /// (an IPv6-only member has none).
    pub links: Vec<(String, Ipv4Net)>,
    /// Its IPv6 addresses: (segment, address), on segments where it has one.
    pub links6: Vec<(String, Ipv6Net)>,
}

impl Member {
    /// Whether `addr` is one of its addresses.
    pub fn has(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.links.iter().any(|(_, n)| n.addr() == a),
            IpAddr::V6(a) => self.links6.iter().any(|(_, n)| n.addr() == a),
        }
    }

    /// The segments it is on (it has an interface on each), in template order.
    pub fn segments(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (s, _) in &self.links {
            out.push(s);
        }
        for (s, _) in &self.links6 {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }

    /// Its addresses on `segment`.
    pub fn addresses_on(&self, segment: &str) -> Vec<IpAddr> {
        let v4 = self.links.iter().filter(|(s, _)| s == segment).map(|(_, a)| IpAddr::V4(a.addr()));
        v4.chain(self.links6.iter().filter(|(s, _)| s == segment).map(|(_, a)| IpAddr::V6(a.addr()))).collect()
    }
}

impl Member {
    /// Its AS, for a node or router.
    pub fn asn(&self) -> Option<u32> {
        match self.role {
            Role::Node { asn, .. } | Role::Router { asn, .. } => Some(asn),
            Role::Host { .. } => None,
        }
    }
}

/// One L2 segment (a bridge).
#[derive(Clone, Debug)]
pub struct Segment {
    /// Its name (also the interface name in each member's namespace).
    pub name: String,
    /// Members, in template order.
    pub members: Vec<String>,
}

/// One BGP session a router is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterSession {
    /// The neighbour's name.
    pub peer: String,
    /// The router's address on the shared segment (one session per family).
    pub local: IpAddr,
    /// The neighbour's address.
    pub neighbor: IpAddr,
    /// The neighbour's AS.
    pub peer_as: u32,
    /// BFD with the neighbour, with these timers: a node runs BFD with the
    /// router here (its BFDConfiguration or `bgpd.io/bfd` annotation says so),
    /// and the router mirrors it.
    pub bfd: Option<bgpd_proto::bfd::BfdConfig>,
    /// An IPv6 session where the two have no IPv4 session on the segment:
    /// it carries IPv4 unicast too, with IPv6 next hops (RFC 8950), as bgpd
    /// plans it for IPv6-only nodes.
    pub extended_next_hop: bool,
}

/// A service the lab gives endpoints to.
#[derive(Clone, Debug)]
pub struct LabService {
    /// `namespace/name`.
    pub key: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its cluster(s): the clusters whose datastore holds it.
    pub clusters: Vec<String>,
    /// The addresses traffic from outside reaches it on: `externalIPs`, LoadBalancer ingress IPs.
    pub addresses: Vec<IpAddr>,
    /// (node, ready): one endpoint on the node's first pod.
    pub endpoints: Vec<(String, bool)>,
}

/// Everything derived from a template.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The lab's name (`metadata.name` of the Lab document).
    pub name: String,
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Segments, in template order.
    pub segments: Vec<Segment>,
    /// The clusters, each with the YAML its datastore gets.
    pub clusters: BTreeMap<String, String>,
    /// Services with lab endpoints.
    pub services: Vec<LabService>,
    /// The port pods answer on.
    pub port: u16,
    /// The BFD sessions the nodes run with routers: (node, router address) →
    /// the node's timers.
    pub bfd: BTreeMap<(String, IpAddr), bgpd_proto::bfd::BfdConfig>,
    /// The template declares symmetric paths (`spec.symmetric`): every
    /// answer passes the members its request passed.
    pub symmetric: bool,
    /// The nodes that start with Calico's BIRD rather than bgpd (`spec.calicoBird`).
    pub calico_bird: BTreeSet<String>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

impl Topology {
    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Topology, TemplateError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TemplateError { file: file.clone(), msg: format!("cannot read: {e}") })?;
        Topology::parse(&text).map_err(|msg| TemplateError { file, msg })
    }

    /// Parses a template's text.
    pub fn parse(text: &str) -> Result<Topology, String> {
        let mut lab: Option<LabDoc> = None;
        let mut resources: Vec<Value> = Vec::new();
        // Read as the nodes' datastore reads it (YAML 1.1 words, lists of
        // resources), so that what is re-serialised for it means the same.
        for (i, doc) in ipam::yaml::documents(text).enumerate() {
            let v = doc.map_err(|e| format!("document {}: invalid YAML: {e}", i + 1))?;
            if v.is_null() {
                continue;
            }
            if get_str(&v, &["kind"]) == Some("Lab") {
                if get_str(&v, &["apiVersion"]) != Some("bgpd.io/v1") {
                    return Err(format!("document {}: a Lab needs apiVersion bgpd.io/v1", i + 1));
                }
                if lab.is_some() {
                    return Err(format!("document {}: a second Lab document", i + 1));
                }
                // Read again from the text, not the value: serde_yaml then names
                // the field and the line of a mistake.
                let doc = serde_yaml::Deserializer::from_str(text).nth(i).ok_or("the Lab document vanished")?;
                lab = Some(LabDoc::deserialize(doc).map_err(|e| format!("document {} (Lab): {e}", i + 1))?);
            } else {
                let listed = ipam::yaml::resources(v).map_err(|e| format!("document {}: {e}", i + 1))?;
                resources.extend(listed.into_iter().map(|r| r.value));
            }
        }
        let lab = lab.ok_or("no `apiVersion: bgpd.io/v1` `kind: Lab` document")?;
        build(lab, resources)
    }

    /// The nodes, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| matches!(m.role, Role::Node { .. }))
    }

    /// The routers, in name order.
    pub fn routers(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| matches!(m.role, Role::Router { .. }))
    }

    /// The network namespace of a member, a segment's bridge or a pod.
    pub fn netns(&self, what: &str) -> String {
        format!("bl.{}.{what}", self.name)
    }

    /// The pods of a node: (pod name, its namespace).
    pub fn pods(&self, node: &Member) -> Vec<String> {
        match node.role {
            Role::Node { pods, .. } => (1..=pods).map(|i| format!("{}-p{i}", node.name)).collect(),
            _ => Vec::new(),
        }
    }

    /// The sessions a router is configured with: every node and router that
    /// shares a segment with it (or only its `peers`).
    pub fn router_sessions(&self, router: &Member) -> Vec<RouterSession> {
        let Role::Router { peers, .. } = &router.role else { return Vec::new() };
        let mut out = Vec::new();
        let v4 = router.links.iter().map(|(s, a)| (s, IpAddr::V4(a.addr())));
        let v6 = router.links6.iter().map(|(s, a)| (s, IpAddr::V6(a.addr())));
        for (seg, local) in v4.chain(v6) {
            let Some(s) = self.segments.iter().find(|s| &s.name == seg) else { continue };
            for other in s.members.iter().filter(|m| **m != router.name) {
                if peers.as_ref().is_some_and(|p| !p.contains(other)) {
                    continue;
                }
                let m = &self.members[other];
                let addr = m.addresses_on(seg).into_iter().find(|a| a.is_ipv4() == local.is_ipv4());
                let (Some(peer_as), Some(neighbor)) = (m.asn(), addr) else { continue };
                let bfd = self.bfd.get(&(other.clone(), local)).copied();
                let ipv4_session = router.links.iter().any(|(s, _)| s == seg) && m.links.iter().any(|(s, _)| s == seg);
                let extended_next_hop = local.is_ipv6() && !ipv4_session;
                out.push(RouterSession { peer: other.clone(), local, neighbor, peer_as, bfd, extended_next_hop });
            }
        }
        out
    }

    /// Which member owns an address (for following a path hop by hop).
    pub fn owner_of(&self, addr: IpAddr) -> Option<&Member> {
        self.members.values().find(|m| m.has(addr))
    }

    /// Whether the lab has IPv6 (some member has an IPv6 address).
    pub fn dual_stack(&self) -> bool {
        self.members.values().any(|m| !m.links6.is_empty())
    }
}

fn build(lab: LabDoc, resources: Vec<Value>) -> Result<Topology, String> {
    let name = lab.metadata.name;
    if !is_name(&name) || name.len() > 12 {
        return Err(format!("Lab metadata.name {name:?}: lowercase letters, digits and '-', at most 12"));
    }
    let spec = lab.spec;
    let port = spec.port.unwrap_or(DEFAULT_PORT);
    let symmetric = spec.symmetric;
    let cluster_of = |v: &Value| get_str(v, &["metadata", "annotations", CLUSTER_ANNOTATION]).map(str::to_string);
    // Which cluster each resource belongs to is the lab's own annotation; what a
    // resource means is read by bgpd's loader below, the reader the nodes run.
    let node_docs: Vec<&Value> = resources.iter().filter(|v| get_str(v, &["kind"]) == Some("Node")).collect();
    if node_docs.is_empty() {
        return Err("no Node resources: the lab runs one bgpd per Node".into());
    }
    // A cluster's name becomes a directory under the lab's state directory:
    // a name only, never a path that could lead out of it.
    for v in &resources {
        if let Some(c) = cluster_of(v) {
            if !is_name(&c) {
                let what = get_str(v, &["metadata", "name"]).unwrap_or("?");
                return Err(format!(
                    "{what}: annotation {CLUSTER_ANNOTATION} {c:?}: a cluster name is lowercase letters, digits and '-'"
                ));
            }
        }
    }
    let mut clusters: BTreeSet<String> = BTreeSet::new();
    for n in &node_docs {
        clusters.insert(cluster_of(n).unwrap_or_else(|| DEFAULT_CLUSTER.into()));
    }
    let in_cluster = |v: &Value, c: &str| cluster_of(v).is_none_or(|x| x == c);
    let mut cluster_yaml = BTreeMap::new();
    for c in &clusters {
        let mut text = String::new();
        for v in resources.iter().filter(|v| in_cluster(v, c)) {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(v).map_err(|e| format!("cannot re-serialise a resource: {e}"))?);
        }
        cluster_yaml.insert(c.clone(), text);
    }
    let models = cluster_models(&cluster_yaml)?;
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut node_addr: BTreeMap<String, Option<Ipv4Net>> = BTreeMap::new();
    let mut node_addr6: BTreeMap<String, Option<Ipv6Net>> = BTreeMap::new();
    for (cluster, model) in &models {
        for (nname, n) in &model.nodes {
            if !is_name(nname) {
                return Err(format!(
                    "Node {nname:?}: lab node names are lowercase letters, digits and '-', at most 15"
                ));
            }
            let asn = model.node_as_number(nname).get();
            let pods = spec.nodes.iter().find(|x| &x.name == nname).map_or(spec.pods_per_node, |x| x.pods);
            node_addr.insert(nname.clone(), n.bgp.as_ref().and_then(|b| b.ipv4_address));
            node_addr6.insert(nname.clone(), n.bgp.as_ref().and_then(|b| b.ipv6_address));
            let m = Member {
                name: nname.clone(),
                role: Role::Node { cluster: cluster.clone(), asn, pods },
                links: Vec::new(),
                links6: Vec::new(),
            };
            if members.insert(nname.clone(), m).is_some() {
                return Err(format!("Node {nname} appears twice"));
            }
        }
    }
    for x in &spec.nodes {
        if !members.contains_key(&x.name) {
            return Err(format!("Lab spec.nodes: {:?} is not a Node resource", x.name));
        }
    }
    for r in spec.routers {
        if !is_name(&r.name) {
            return Err(format!("router {:?}: names are lowercase letters, digits and '-', at most 15", r.name));
        }
        let m = Member {
            name: r.name.clone(),
            role: Role::Router {
                implementation: r.implementation,
                asn: r.as_number,
                router_id: r.router_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
                peers: r.peers,
            },
            links: Vec::new(),
            links6: Vec::new(),
        };
        if members.insert(r.name.clone(), m).is_some() {
            return Err(format!("{} is both a router and another member", r.name));
        }
    }
    for h in spec.hosts {
        if !is_name(&h.name) {
            return Err(format!("host {:?}: names are lowercase letters, digits and '-', at most 15", h.name));
        }
        let m = Member {
            name: h.name.clone(),
            role: Role::Host { gateway: h.gateway, gateway6: h.gateway6 },
            links: Vec::new(),
            links6: Vec::new(),
        };
        if members.insert(h.name.clone(), m).is_some() {
            return Err(format!("{} is both a host and another member", h.name));
        }
    }
    let mut segments = Vec::new();
    let mut used: BTreeMap<IpAddr, String> = BTreeMap::new();
    for s in spec.segments {
        if !is_name(&s.name) || s.name.len() > 12 {
            return Err(format!("segment {:?}: lowercase letters, digits and '-', at most 12", s.name));
        }
        if segments.iter().any(|x: &Segment| x.name == s.name) {
            return Err(format!("segment {} appears twice", s.name));
        }
        let mut names = Vec::new();
        for m in s.members {
            let Some(member) = members.get_mut(&m.name) else {
                return Err(format!("segment {}: {:?} is not a Node, router or host", s.name, m.name));
            };
            let addr = m.address.or_else(|| node_addr.get(&m.name).copied().flatten());
            // A node's IPv6 address defaults to its Node's on the segment that
            // also carries its Node IPv4 address; an IPv6-only node (no Node
            // IPv4 address) has it on a segment where it is given no address.
            let addr6 = m.address6.or_else(|| {
                let default4 = node_addr.get(&m.name).copied().flatten();
                let only6 = default4.is_none() && m.address.is_none();
                (m.address.is_none() && default4.is_some() || only6)
                    .then(|| node_addr6.get(&m.name).copied().flatten())
                    .flatten()
            });
            if addr.is_none() && addr6.is_none() {
                return Err(format!("segment {}: member {} needs an address", s.name, m.name));
            }
            for a in addr.map(|a| IpAddr::V4(a.addr())).into_iter().chain(addr6.map(|a| IpAddr::V6(a.addr()))) {
                if let Some(other) = used.insert(a, m.name.clone()) {
                    return Err(format!("segment {}: address {a} of {} is already {other}'s", s.name, m.name));
                }
            }
            if member.segments().contains(&s.name.as_str()) {
                return Err(format!("segment {}: {} is a member twice", s.name, m.name));
            }
            if let Some(a) = addr {
                member.links.push((s.name.clone(), a));
            }
            if let Some(a6) = addr6 {
                member.links6.push((s.name.clone(), a6));
            }
            names.push(m.name);
        }
        segments.push(Segment { name: s.name, members: names });
    }
    for m in members.values_mut() {
        if m.segments().is_empty() {
            return Err(format!("{} is on no segment", m.name));
        }
        if let Role::Router { router_id, .. } = &mut m.role {
            if router_id.is_unspecified() {
                *router_id = match m.links.first() {
                    Some((_, a)) => a.addr(),
                    None => return Err(format!("router {}: routerID is needed (it has no IPv4 address)", m.name)),
                };
            }
        }
        if let Role::Host { gateway, gateway6 } = m.role {
            if !m.links.iter().any(|(_, a)| a.contains(&gateway)) {
                return Err(format!("host {}: gateway {gateway} is on none of its segments", m.name));
            }
            if let Some(g6) = gateway6 {
                if !m.links6.iter().any(|(_, a)| a.contains(&g6)) {
                    return Err(format!("host {}: gateway6 {g6} is on none of its segments", m.name));
                }
            }
        }
    }
    for r in members.values() {
        if let Role::Router { peers: Some(p), .. } = &r.role {
            if let Some(bad) = p.iter().find(|x| !members.contains_key(*x)) {
                return Err(format!("router {}: peer {bad:?} is not a member of the lab", r.name));
            }
        }
    }
    // Services.
    let mut services = Vec::new();
    for s in spec.services {
        let key = format!("{}/{}", s.namespace, s.name);
        let found: Vec<(&String, &bgpd::datastore::Service)> =
            models.iter().filter_map(|(c, m)| m.services.get(&key).map(|svc| (c, svc))).collect();
        let Some((_, svc)) = found.first() else {
            return Err(format!("Lab spec.services: no Service {key} among the resources"));
        };
        if svc.external_traffic_policy != bgpd::datastore::TrafficPolicy::Local {
            return Err(format!(
                "Lab spec.services: Service {key} needs externalTrafficPolicy: Local (the lab has no kube-proxy: \
                 an endpoint pod owns the service address, so only nodes with a ready endpoint may attract it)"
            ));
        }
        if svc.cluster_ips.is_empty() {
            return Err(format!(
                "Lab spec.services: Service {key} needs a spec.clusterIP: bgpd, like Calico, advertises no address of a \
                 headless service"
            ));
        }
        let mut addresses = Vec::new();
        for (_, svc) in &found {
            for ip in svc.external_ips.iter().chain(&svc.load_balancer_ingress) {
                if !addresses.contains(ip) {
                    addresses.push(*ip);
                }
            }
        }
        if addresses.is_empty() {
            return Err(format!("Lab spec.services: Service {key} has no externalIPs or LoadBalancer ingress IP"));
        }
        let clusters: Vec<String> = found.iter().map(|(c, _)| (*c).clone()).collect();
        let mut endpoints = Vec::new();
        for e in s.endpoints {
            match members.get(&e.node).map(|m| &m.role) {
                Some(Role::Node { cluster, pods, .. }) => {
                    if !clusters.contains(cluster) {
                        return Err(format!(
                            "Lab spec.services {key}: node {} is not in a cluster of the Service",
                            e.node
                        ));
                    }
                    if *pods == 0 {
                        return Err(format!("Lab spec.services {key}: node {} has no pods for an endpoint", e.node));
                    }
                }
                _ => return Err(format!("Lab spec.services {key}: endpoint node {:?} is not a Node", e.node)),
            }
            endpoints.push((e.node, e.ready));
        }
        services.push(LabService { key, namespace: s.namespace, name: s.name, clusters, addresses, endpoints });
    }
    let bfd = node_bfd(&members, &models);
    let mut calico_bird = BTreeSet::new();
    for n in spec.calico_bird {
        if !matches!(members.get(&n).map(|m| &m.role), Some(Role::Node { .. })) {
            return Err(format!("Lab spec.calicoBird: {n:?} is not a Node resource"));
        }
        calico_bird.insert(n);
    }
    Ok(Topology { name, members, segments, clusters: cluster_yaml, services, port, bfd, symmetric, calico_bird })
}

/// Each cluster's resources read by bgpd's own loader: the lab builds from the
/// Nodes, AS numbers and Services exactly as the nodes' bgpd will read them. A
/// Node or Service the loader refuses is an error of the template, naming the
/// problem.
fn cluster_models(clusters: &BTreeMap<String, String>) -> Result<BTreeMap<String, bgpd::datastore::Model>, String> {
    use bgpd::datastore::{ObjectKind, ObjectRef, ResourceKind, Severity};
    let mut out = BTreeMap::new();
    for (c, text) in clusters {
        let src = bgpd::datastore::SourceText { path: format!("cluster {c}").into(), text: text.clone() };
        let (model, problems) = bgpd::datastore::parse_sources(&[src]).map_err(|e| format!("cluster {c}: {e}"))?;
        let refused = problems.iter().find(|p| {
            p.severity == Severity::Error
                && matches!(
                    p.object,
                    Some(ObjectRef { kind: ObjectKind::Read(ResourceKind::Node | ResourceKind::Service), .. })
                )
        });
        if let Some(p) = refused {
            return Err(format!("cluster {c}: {p}"));
        }
        out.insert(c.clone(), model);
    }
    Ok(out)
}

/// The BFD sessions each node's bgpd will run, as it decides them: its plan
/// from its cluster's resources, its interfaces being the lab's segments.
fn node_bfd(
    members: &BTreeMap<String, Member>,
    models: &BTreeMap<String, bgpd::datastore::Model>,
) -> BTreeMap<(String, IpAddr), bgpd_proto::bfd::BfdConfig> {
    let mut out = BTreeMap::new();
    for m in members.values() {
        let Role::Node { cluster, .. } = &m.role else { continue };
        let Some(model) = models.get(cluster) else { continue };
        let Ok((node, peers)) = bgpd::daemon::plan::plan(model, &m.name) else { continue };
        let v4 = m.links.iter().map(|(s, a)| (s.clone(), ipnet::IpNet::V4(*a)));
        let networks: Vec<(String, ipnet::IpNet)> =
            v4.chain(m.links6.iter().map(|(s, a)| (s.clone(), ipnet::IpNet::V6(*a)))).collect();
        for b in bgpd::daemon::bfd::sessions_on(&node, peers.iter(), &networks) {
            out.insert((m.name.clone(), b.addr), b.config);
        }
    }
    out
}

#[cfg(test)]
mod tests;
