//! The cluster model that `bgpd run --datastore file:PATH --node NAME` reads: Calico
//! resources (Node, BGPConfiguration, BGPPeer, BGPFilter, IPPool, IPAMBlock, IPAMHandle
//! for its floating IPs, WorkloadEndpoints, and the Secrets that hold BGP passwords) and the Kubernetes
//! Services and EndpointSlices whose addresses a node advertises and Pods (the workloads
//! a node may peer with), loaded from a YAML stream, validated once into typed
//! values.
//!
//! [`load`] never fails because of one bad object: each invalid object is reported as
//! a [`Problem`] naming its kind, name, field and the reason, and skipped; only an
//! unreadable file or a YAML syntax error fails the whole load ([`LoadError`]).
//! [`Model`] holds no file positions and no raw text, so two snapshots compare equal
//! exactly when the configuration is the same (what a file watcher diffs).
//!
//! Field names and defaults are Calico's; `docs/configuration.md` is the reference.

mod bfd_configuration;
mod bgp_configuration;
mod bgp_filter;
mod bgp_peer;
mod endpoint_slice;
mod fields;
mod ip_pool;
mod ipam_block;
mod ipam_handle;
pub mod ipam_store;
pub mod live;
mod node;
mod problem;
mod secret;
mod service;
pub(crate) mod source;
mod values;
mod workload_endpoint;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bgpd_model::Selector;

// The module's API: the daemon, the peering plan and `bgpd show config` use these;
// in a binary crate, re-exports not used yet would warn.
#[allow(unused_imports)]
pub use bfd_configuration::{BfdConfiguration, BfdInterface};
#[allow(unused_imports)]
pub use bgp_configuration::{
    BgpConfiguration, BindMode, ClusterRoutes, LogSeverity, NodeBgpConfiguration, PrefixAdvertisement,
};
pub use bgp_filter::BgpFilter;
#[allow(unused_imports)]
pub use bgp_peer::{
    AddPathConfig, BfdMode, BgpPeer, ConfiguredNextHopMode, LocalWorkloadPeer, PeerRemote, PeerScope, ReversePeering,
    SourceAddress,
};
#[allow(unused_imports)]
pub use endpoint_slice::{Endpoint, EndpointSlice, SERVICE_NAME_LABEL};
#[allow(unused_imports)]
pub use ip_pool::IpPool;
#[allow(unused_imports)]
pub use ipam_block::{Affinity, BorrowedAddress, IpamBlock};
#[allow(unused_imports)]
pub use ipam_handle::{FloatingIp, HandleFloatingIps};
#[allow(unused_imports)]
pub use ipam_store::{IpamObjects, StoredBlock, StoredHandle};
#[allow(unused_imports)]
pub use node::{usable_router_id, Node, NodeBgp, RouterIdSetting};
#[allow(unused_imports)]
pub use problem::{LoadError, Location, ObjectKind, ObjectRef, Problem, ResourceKind, Severity};
#[allow(unused_imports)]
pub use service::{IpFamily, Service, ServiceType, TrafficPolicy};
#[allow(unused_imports)]
pub use source::SourceText;
#[allow(unused_imports)]
pub use values::{parse_duration, AsNumber, ConfiguredCommunity, Md5Key, PeerAddress};
#[allow(unused_imports)]
pub use workload_endpoint::WorkloadEndpoint;

use fields::{Fields, Findings};
use source::RawObject;

/// A validated snapshot of the datastore, as far as routing is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// The `default` BGPConfiguration, or Calico's defaults when there is none (or
    /// when it was invalid: see the load's problems).
    pub bgp_configuration: BgpConfiguration,
    /// The per-node BGPConfigurations (`node.NAME`), by node name.
    pub node_bgp_configurations: BTreeMap<String, NodeBgpConfiguration>,
    /// Calico Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// BGPPeers by name (those with `peerIP` or `peerSelector`).
    pub peers: BTreeMap<String, BgpPeer>,
    /// BGPPeers with `localWorkloadSelector` by name: the node peers with its
    /// own workloads.
    pub local_workload_peers: BTreeMap<String, LocalWorkloadPeer>,
    /// Valid BGPFilters by name (peers refer to them in `spec.filters`).
    pub filters: BTreeMap<String, BgpFilter>,
    /// IPAM blocks by name.
    pub ipam_blocks: BTreeMap<String, IpamBlock>,
    /// IPAM handles by name (only those with floating IPs come from the IPAM stores).
    pub ipam_handles: BTreeMap<String, HandleFloatingIps>,
    /// IP pools by name.
    pub ip_pools: BTreeMap<String, IpPool>,
    /// Kubernetes Services by `namespace/name`.
    pub services: BTreeMap<String, Service>,
    /// EndpointSlices by `namespace/name`.
    pub endpoint_slices: BTreeMap<String, EndpointSlice>,
    /// BFDConfigurations by name.
    pub bfd_configurations: BTreeMap<String, BfdConfiguration>,
    /// Workload endpoints (Calico WorkloadEndpoints, and Pods read as such) by
    /// `namespace/name` of their object.
    pub workload_endpoints: BTreeMap<String, WorkloadEndpoint>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Model {
    /// The BGPPeers that node `node` opens sessions for: those with `spec.node == node`,
    /// the global ones (no `node`, no `nodeSelector`), and those whose `nodeSelector`
    /// matches the node's labels (a node without a Node object has no labels). In name
    /// order.
    pub fn peers_for_node(&self, node: &str) -> Vec<&BgpPeer> {
        self.peers.values().filter(|p| self.scope_includes(&p.scope, node)).collect()
    }

    /// The BGPPeers with `localWorkloadSelector` that apply to node `node`
    /// (as [`Model::peers_for_node`] decides), in name order.
    pub fn local_workload_peers_for_node(&self, node: &str) -> Vec<&LocalWorkloadPeer> {
        self.local_workload_peers.values().filter(|p| self.scope_includes(&p.peer.scope, node)).collect()
    }

    /// Whether a BGPPeer of scope `scope` applies to node `node`.
    fn scope_includes(&self, scope: &PeerScope, node: &str) -> bool {
        let labels = self.nodes.get(node).map_or(&NO_LABELS, |n| &n.labels);
        match scope {
            PeerScope::Node(n) => n == node,
            PeerScope::NodeSelector(sel) => sel.matches(labels),
            PeerScope::Global => true,
        }
    }

    /// The IPAM blocks affine to `node` (`host:NODE`) and not being deleted: the pod
    /// blocks this node advertises. In name order.
    pub fn blocks_for_node(&self, node: &str) -> Vec<&IpamBlock> {
        self.ipam_blocks
            .values()
            .filter(|b| !b.deleted && matches!(&b.affinity, Some(Affinity::Host(h)) if h == node))
            .collect()
    }

    /// The addresses that pods on `node` hold in blocks affine to another node (or to
    /// none): `node` advertises each as a /32 (/128), as Calico does for borrowed
    /// addresses. In block name, then address order.
    pub fn borrowed_by_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a IpamBlock, &'a BorrowedAddress)> + 'a {
        self.ipam_blocks
            .values()
            .flat_map(move |b| b.borrowed.iter().filter(move |a| a.node == node).map(move |a| (b, a)))
    }

    /// The floating IPs that node `node` advertises (each entry of a handle's
    /// `floatingIPs` whose `node` is `node`), in handle name, then list order.
    pub fn floating_ips_for_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a HandleFloatingIps, &'a FloatingIp)> + 'a {
        self.ipam_handles
            .values()
            .flat_map(move |h| h.floating_ips.iter().filter(move |f| f.node == node).map(move |f| (h, f)))
    }

    /// The IP pool that contains `net` (a block, an address), if any; the most specific
    /// one should pools nest (Calico rejects overlapping pools).
    pub fn pool_containing(&self, net: &ipnet::IpNet) -> Option<&IpPool> {
        self.ip_pools.values().filter(|p| p.cidr.contains(net)).max_by_key(|p| p.cidr.prefix_len())
    }

    /// The EndpointSlices of Service `namespace/name`, in name order.
    pub fn slices_of<'a>(&'a self, service: &'a Service) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.endpoint_slices
            .values()
            .filter(move |s| s.namespace == service.namespace && s.service.as_deref() == Some(service.name.as_str()))
    }

    /// The workload endpoints on node `node`, in key order.
    pub fn workloads_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a WorkloadEndpoint> + 'a {
        self.workload_endpoints.values().filter(move |w| w.node == node)
    }

    /// The Nodes whose labels match `selector` (for a `peerSelector`), in name order.
    pub fn nodes_matching<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.values().filter(move |n| selector.matches(&n.labels))
    }

    /// The port node `node` listens on, and that other nodes dial it on: its
    /// per-node BGPConfiguration's `listenPort`, else the default's (179 unless set).
    pub fn listen_port_of(&self, node: &str) -> u16 {
        self.node_bgp_configurations.get(node).and_then(|c| c.listen_port).unwrap_or(self.bgp_configuration.listen_port)
    }

    /// The log level of node `node`: its per-node `logSeverityScreen`, else the default's.
    pub fn log_severity_of(&self, node: &str) -> LogSeverity {
        self.node_bgp_configurations
            .get(node)
            .and_then(|c| c.log_severity_screen)
            .unwrap_or(self.bgp_configuration.log_severity_screen)
    }

    /// The `prefixAdvertisements` that apply to node `node`: its per-node
    /// BGPConfiguration's when that sets the field (it replaces the default's
    /// list, as in Calico), else the default's.
    pub fn prefix_advertisements_for(&self, node: &str) -> &[PrefixAdvertisement] {
        self.node_bgp_configurations
            .get(node)
            .and_then(|c| c.prefix_advertisements.as_deref())
            .unwrap_or(&self.bgp_configuration.prefix_advertisements)
    }

    /// The Node whose `ipv4Address` or `ipv6Address` is `ip` (the first in name
    /// order should two claim it).
    pub fn node_with_address(&self, ip: std::net::IpAddr) -> Option<&Node> {
        self.nodes.values().find(|n| {
            n.bgp.as_ref().is_some_and(|b| match ip {
                std::net::IpAddr::V4(a) => b.ipv4_address.is_some_and(|x| x.addr() == a),
                std::net::IpAddr::V6(a) => b.ipv6_address.is_some_and(|x| x.addr() == a),
            })
        })
    }

    /// The AS number node `node` speaks: its own `spec.bgp.asNumber`, else the
    /// cluster's.
    pub fn node_as_number(&self, node: &str) -> AsNumber {
        self.nodes
            .get(node)
            .and_then(|n| n.bgp.as_ref())
            .and_then(|b| b.as_number)
            .unwrap_or(self.bgp_configuration.as_number)
    }
}

/// Loads the file datastore at `path` (a file, or a directory of `*.yaml`, `*.yml`,
/// `*.json` read in name order), with the blocks of the `bgpd-ipam` file store in
/// its directory if there is one ([`ipam_store`]). Invalid objects are skipped and
/// reported in the returned problems; see the module docs.
pub fn load(path: &Path) -> Result<(Model, Vec<Problem>), LoadError> {
    let sources = source::read(path)?;
    let ipam = match ipam_store::read_beside(path) {
        Ok(ipam) => ipam.unwrap_or_default(),
        Err(e) => {
            let dir = ipam_store::store_dir(path);
            return Err(LoadError::Ipam { path: dir, reason: e.to_string() });
        }
    };
    parse_input(&sources, &ipam)
}

/// Builds the model from texts already read, in order (what [`load`] does after
/// reading; also the entry point for tests and other datastores' file-like input).
pub fn parse_sources(sources: &[SourceText]) -> Result<(Model, Vec<Problem>), LoadError> {
    parse_input(sources, &IpamObjects::default())
}

/// [`parse_sources`], and the typed objects of an IPAM store read after them.
pub fn parse_input(sources: &[SourceText], ipam: &IpamObjects) -> Result<(Model, Vec<Problem>), LoadError> {
    let mut parsed = Vec::with_capacity(sources.len());
    for s in sources {
        parsed.push((std::sync::Arc::new(parse_one(s)?), 0));
    }
    Ok(build(&parsed, ipam))
}

/// [`parse_input_memo`] without an IPAM store.
pub fn parse_sources_memo(sources: &[SourceText]) -> Result<(Model, Vec<Problem>), LoadError> {
    parse_input_memo(sources, &IpamObjects::default())
}

/// [`parse_input`] for a daemon that reads the whole datastore again on
/// every change: a document (a `---`-separated part of a source) whose text
/// is the same as in the last call is neither parsed nor validated again,
/// wherever it moved in its file. YAML parsing and validation are most of the
/// cost of a change when the datastore holds thousands of objects. Any syntax
/// error: the source is parsed whole, for the exact error.
pub fn parse_input_memo(sources: &[SourceText], ipam: &IpamObjects) -> Result<(Model, Vec<Problem>), LoadError> {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    // Per file: (text length, text hash) → the part parsed (its documents
    // numbered from 1), its document count.
    type Memo = HashMap<PathBuf, HashMap<(usize, u64), (Arc<Parsed>, usize)>>;
    static MEMO: Mutex<Option<Memo>> = Mutex::new(None);
    let mut guard = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut old = guard.take().unwrap_or_default();
    let mut memo = Memo::new();
    let mut parsed = Vec::new();
    for s in sources {
        let old = old.remove(&s.path).unwrap_or_default();
        let mut mine = HashMap::new();
        let mut first = 1;
        let mut parts = Vec::new();
        let mut failed = false;
        for (i, part) in source::split_documents(&s.text).into_iter().enumerate() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            part.hash(&mut h);
            let key = (part.len(), h.finish());
            let (p, docs) = match old.get(&key).or_else(|| mine.get(&key)) {
                Some((p, docs)) => (p.clone(), *docs),
                None => {
                    let mut objects = Vec::new();
                    let mut problems = Vec::new();
                    let piece = SourceText { path: s.path.clone(), text: part.to_string() };
                    match source::objects_numbered(&piece, 1, &mut objects, &mut problems) {
                        Ok(docs) => (Arc::new(Parsed::new(objects, problems)), docs),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
            };
            mine.insert(key, (p.clone(), docs));
            parts.push((p, first - 1));
            // Comments before the first `---` are no document in the whole
            // file, though alone they parse as an empty one (found by the
            // `datastore` fuzz target: the documents after them were
            // numbered one too high).
            let preamble = i == 0
                && part.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                && part.len() < s.text.len();
            first += if preamble { 0 } else { docs };
        }
        if failed {
            // Reports the error with its line and column in the whole file.
            parsed.push((Arc::new(parse_one(s)?), 0));
        } else {
            parsed.extend(parts);
        }
        memo.insert(s.path.clone(), mine);
    }
    // Only what this call used is remembered; the rest is dropped after the
    // lock is released.
    *guard = Some(memo);
    drop(guard);
    let built = build(&parsed, ipam);
    drop(old);
    Ok(built)
}

/// One source's (or one document's) objects, the problems found reading them,
/// and what validating each object alone found.
struct Parsed {
    objects: Vec<RawObject>,
    problems: Vec<Problem>,
    /// Per object, for the kinds whose validation needs no other object (all
    /// but BGPPeer and BGPConfiguration, which read Secrets): the outcome,
    /// computed once and reused while the text is unchanged.
    checked: Vec<Option<Checked>>,
}

impl Parsed {
    fn new(objects: Vec<RawObject>, problems: Vec<Problem>) -> Parsed {
        let none = secret::Secrets::default();
        let checked =
            objects.iter().map(|o| classify(o).filter(|k| k.standalone()).map(|kind| check(o, kind, &none))).collect();
        Parsed { objects, problems, checked }
    }
}

fn parse_one(s: &SourceText) -> Result<Parsed, LoadError> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    source::objects(s, &mut objects, &mut problems)?;
    Ok(Parsed::new(objects, problems))
}

/// `location` with its document number moved by `by` (the documents of a part
/// of a file are numbered from 1).
fn shifted(location: &Location, by: usize) -> Location {
    Location { document: location.document + by, ..location.clone() }
}

/// Builds the model from parsed parts, each with the number of documents of its
/// file before it, and the objects of an IPAM store.
fn build(parsed: &[(std::sync::Arc<Parsed>, usize)], ipam: &IpamObjects) -> (Model, Vec<Problem>) {
    let problems: Vec<Problem> = parsed
        .iter()
        .flat_map(|(p, by)| {
            p.problems.iter().map(move |x| Problem { location: shifted(&x.location, *by), ..x.clone() })
        })
        .collect();
    // (object, what validating it alone found, its location)
    type Item<'a> = (&'a RawObject, Option<&'a Checked>, Location);
    let raw: Vec<Item> = parsed
        .iter()
        .flat_map(|(p, by)| {
            p.objects.iter().zip(&p.checked).map(move |(o, c)| (o, c.as_ref(), shifted(&o.location, *by)))
        })
        .collect();
    let mut b = Builder { model: Model::default(), problems, seen: BTreeMap::new(), secrets: Default::default() };
    // Secrets first: a peer may come before the Secret it refers to.
    for (o, c, loc) in raw.iter().filter(|(o, ..)| classify(o) == Some(ResourceKind::Secret)) {
        b.object(o, ResourceKind::Secret, *c, loc);
    }
    // Every BGPFilter named in the input, valid or not, to tell a peer's reference to
    // an invalid filter from one to a filter that does not exist.
    let filters: BTreeSet<String> =
        raw.iter().filter(|(o, ..)| o.kind == "BGPFilter").filter_map(|(o, ..)| object_name(o)).collect();
    for (o, c, loc) in &raw {
        match classify(o) {
            Some(ResourceKind::Secret) => {}
            Some(kind) => b.object(o, kind, *c, loc),
            None => b.ignored(o, loc),
        }
    }
    // The IPAM store after the YAML: a block the YAML defines too is the YAML's.
    for h in &ipam.handles {
        b.stored_handle(h);
    }
    for s in &ipam.blocks {
        b.stored_block(s);
    }
    b.check_filters(&filters);
    b.check_node_peers();
    b.check_local_workload_peers();
    (b.model, b.problems)
}

impl ResourceKind {
    /// Whether objects of the kind live in a namespace (their key is `namespace/name`).
    fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::Service | ResourceKind::EndpointSlice | ResourceKind::WorkloadEndpoint | ResourceKind::Pod
        )
    }

    /// Whether an object of the kind is validated without looking at other
    /// objects (BGPPeer and BGPConfiguration read Secrets).
    fn standalone(self) -> bool {
        !matches!(self, ResourceKind::BgpPeer | ResourceKind::BgpConfiguration)
    }
}

/// An object's validated value.
#[derive(Clone, Debug)]
enum Typed {
    Secret(secret::SecretData),
    Node(Node),
    BgpPeer(bgp_peer::ParsedPeer),
    BgpFilter(BgpFilter),
    IpamBlock(IpamBlock),
    IpamHandle(HandleFloatingIps),
    IpPool(IpPool),
    Service(Service),
    EndpointSlice(EndpointSlice),
    BgpConfiguration(BgpConfiguration),
    /// A `node.NAME` BGPConfiguration, with the node's name.
    NodeBgpConfiguration(String, NodeBgpConfiguration),
    BfdConfiguration(BfdConfiguration),
    /// A WorkloadEndpoint, or a Pod (`None`: a pod that is no workload
    /// endpoint, e.g. on the host's network; skipped without a problem).
    WorkloadEndpoint(Option<WorkloadEndpoint>),
}

/// What validating one object found, before it joins the model.
#[derive(Clone, Debug)]
struct Checked {
    /// The name shown in its problems (`namespace/name` for namespaced kinds).
    name: Option<String>,
    /// Its key among the objects of its kind, once its metadata is valid
    /// (`None` also for what is only warned about and skipped).
    key: Option<(ResourceKind, String)>,
    /// The value that joins the model.
    value: Option<Typed>,
    errors: Vec<fields::FieldError>,
    warnings: Vec<fields::FieldError>,
}

/// Validates one object of kind `kind`; `secrets` are the Secrets read (only
/// BGPPeer and BGPConfiguration look at them).
fn check(o: &RawObject, kind: ResourceKind, secrets: &secret::Secrets) -> Checked {
    let mut f = Findings::default();
    let done = |f: Findings, name: Option<&str>, key, value| Checked {
        name: name.map(str::to_string),
        key,
        value,
        errors: f.errors,
        warnings: f.warnings,
    };
    let root = match Fields::at(Some(&o.value), "") {
        Ok(root) => root,
        Err(e) => {
            f.errors.push(e);
            return done(f, None, None, None);
        }
    };
    let meta = f.take(root.child("metadata"));
    let name = meta.as_ref().and_then(|m| f.take(m.str("name")));
    let Some(Some(name)) = name else {
        if f.errors.is_empty() {
            f.error("metadata.name", "missing");
        }
        return done(f, None, None, None);
    };
    if let Err(reason) = values::check_name(name) {
        f.error("metadata.name", reason);
        return done(f, Some(name), None, None);
    }
    let namespace = if kind.namespaced() {
        match meta.as_ref().and_then(|m| f.take(m.str("namespace"))) {
            Some(Some(ns)) => match values::check_name(ns) {
                Ok(()) => ns.to_string(),
                Err(reason) => {
                    f.error("metadata.namespace", reason);
                    return done(f, Some(name), None, None);
                }
            },
            Some(None) => "default".to_string(),
            None => return done(f, Some(name), None, None),
        }
    } else {
        String::new()
    };
    let key = if kind.namespaced() { (kind, format!("{namespace}/{name}")) } else { (kind, name.to_string()) };
    let value = match kind {
        ResourceKind::Secret => secret::parse(&root, &mut f).map(Typed::Secret),
        ResourceKind::Node => {
            let labels = meta.as_ref().and_then(|m| f.take(m.string_map("labels"))).unwrap_or_default();
            node::parse(name, labels, &root, &mut f).map(Typed::Node)
        }
        ResourceKind::BgpPeer => bgp_peer::parse(name, &root, secrets, &mut f).map(Typed::BgpPeer),
        ResourceKind::BgpFilter => bgp_filter::parse(name, &root, &mut f).map(Typed::BgpFilter),
        ResourceKind::BfdConfiguration => bfd_configuration::parse(name, &root, &mut f).map(Typed::BfdConfiguration),
        ResourceKind::IpamBlock => ipam_block::parse(name, &root, &mut f).map(Typed::IpamBlock),
        ResourceKind::IpamHandle => ipam_handle::parse(name, &root, &mut f).map(Typed::IpamHandle),
        ResourceKind::IpPool => ip_pool::parse(name, &root, &mut f).map(Typed::IpPool),
        ResourceKind::Service => service::parse(&namespace, name, &root, &mut f).map(Typed::Service),
        ResourceKind::EndpointSlice => {
            let labels = meta.as_ref().and_then(|m| f.take(m.string_map("labels"))).unwrap_or_default();
            endpoint_slice::parse(&namespace, name, &labels, &root, &mut f).map(Typed::EndpointSlice)
        }
        ResourceKind::WorkloadEndpoint => {
            let labels = meta.as_ref().and_then(|m| f.take(m.string_map("labels"))).unwrap_or_default();
            workload_endpoint::parse_wep(&namespace, name, labels, &root, &mut f)
                .map(|w| Typed::WorkloadEndpoint(Some(w)))
        }
        ResourceKind::Pod => {
            let labels = meta.as_ref().and_then(|m| f.take(m.string_map("labels"))).unwrap_or_default();
            workload_endpoint::parse_pod(&namespace, name, labels, &root, &mut f).map(Typed::WorkloadEndpoint)
        }
        ResourceKind::BgpConfiguration if name == "default" => {
            bgp_configuration::parse(&root, secrets, &mut f).map(Typed::BgpConfiguration)
        }
        ResourceKind::BgpConfiguration => match name.strip_prefix("node.").filter(|n| !n.is_empty()) {
            Some(node) => {
                bgp_configuration::parse_node(&root, &mut f).map(|c| Typed::NodeBgpConfiguration(node.to_string(), c))
            }
            None => {
                f.error(
                    "metadata.name",
                    "a BGPConfiguration is named \"default\" (the cluster's) or \"node.NAME\" (one node's)",
                );
                None
            }
        },
    };
    if value.is_none() && f.errors.is_empty() {
        // Every None above comes with an error; keep that true if code changes.
        f.error("", "invalid");
    }
    let shown = key.1.clone();
    done(f, Some(&shown), Some(key), value)
}

const CALICO_V3: &str = "projectcalico.org/v3";
const CALICO_CRD: &str = "crd.projectcalico.org/v1";

/// The kinds bgpd reads, by apiVersion and kind. BGPConfiguration, BGPPeer,
/// BGPFilter and IPPool are also accepted in their CRD form (what `kubectl get -o yaml` shows on a cluster
/// with the Kubernetes datastore); the spec is the same.
fn classify(o: &RawObject) -> Option<ResourceKind> {
    match (o.api_version.as_str(), o.kind.as_str()) {
        (CALICO_V3, "Node") => Some(ResourceKind::Node),
        (CALICO_V3 | CALICO_CRD, "BGPConfiguration") => Some(ResourceKind::BgpConfiguration),
        (CALICO_V3 | CALICO_CRD, "BGPPeer") => Some(ResourceKind::BgpPeer),
        (CALICO_V3 | CALICO_CRD, "BGPFilter") => Some(ResourceKind::BgpFilter),
        (CALICO_V3 | CALICO_CRD, "BFDConfiguration") => Some(ResourceKind::BfdConfiguration),
        ("v1", "Secret") => Some(ResourceKind::Secret),
        (CALICO_CRD, "IPAMBlock") => Some(ResourceKind::IpamBlock),
        (CALICO_CRD, "IPAMHandle") => Some(ResourceKind::IpamHandle),
        (CALICO_V3 | CALICO_CRD, "IPPool") => Some(ResourceKind::IpPool),
        ("v1", "Service") => Some(ResourceKind::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => Some(ResourceKind::EndpointSlice),
        (CALICO_V3, "WorkloadEndpoint") => Some(ResourceKind::WorkloadEndpoint),
        ("v1", "Pod") => Some(ResourceKind::Pod),
        _ => None,
    }
}

fn object_name(o: &RawObject) -> Option<String> {
    let root = Fields::at(Some(&o.value), "").ok()?;
    let meta = root.child("metadata").ok()?;
    meta.str("name").ok().flatten().map(str::to_string)
}

struct Builder {
    model: Model,
    problems: Vec<Problem>,
    /// Where each accepted object came from, for duplicate and filter messages.
    seen: BTreeMap<(ResourceKind, String), problem::Location>,
    secrets: secret::Secrets,
}

impl Builder {
    fn problem(
        &mut self,
        severity: Severity,
        kind: ObjectKind,
        name: Option<&str>,
        field: String,
        reason: String,
        location: &Location,
    ) {
        self.problems.push(Problem {
            severity,
            object: Some(ObjectRef { kind, name: name.map(str::to_string) }),
            field,
            reason,
            location: location.clone(),
        });
    }

    fn ignored(&mut self, o: &RawObject, location: &Location) {
        let name = object_name(o);
        let reason = match o.kind.as_str() {
            "BGPPeer" | "BGPConfiguration" | "BGPFilter" | "IPAMBlock" | "IPAMHandle" | "IPPool" | "EndpointSlice"
            | "BFDConfiguration" | "WorkloadEndpoint" => {
                let sev = Severity::Error;
                let reason = format!("{:?} is not an apiVersion bgpd reads for {}", o.api_version, o.kind);
                return self.problem(
                    sev,
                    ObjectKind::named(&o.kind),
                    name.as_deref(),
                    "apiVersion".into(),
                    reason,
                    location,
                );
            }
            _ => format!("{} {} is not read by bgpd's routing model; ignored", o.api_version, o.kind),
        };
        self.problem(Severity::Debug, ObjectKind::named(&o.kind), name.as_deref(), String::new(), reason, location);
    }

    /// Adds object `o` of kind `kind` to the model, validated now unless
    /// `checked` holds the outcome already.
    fn object(&mut self, o: &RawObject, kind: ResourceKind, checked: Option<&Checked>, location: &Location) {
        let c = match checked {
            Some(c) => c.clone(),
            None => check(o, kind, &self.secrets),
        };
        let mut f = Findings { errors: c.errors, warnings: c.warnings };
        let accepted = c.value.is_some();
        // A value comes only with a key (see `check`).
        let key = c.key.as_ref().map(|k| k.1.clone()).unwrap_or_default();
        match c.value {
            None => {}
            Some(Typed::Secret(data)) => {
                self.secrets.by_name.insert(key, data);
            }
            Some(Typed::Node(n)) => {
                self.model.nodes.insert(key, n);
            }
            Some(Typed::BgpPeer(bgp_peer::ParsedPeer::Remote(p))) => {
                self.model.peers.insert(key, p);
            }
            Some(Typed::BgpPeer(bgp_peer::ParsedPeer::LocalWorkloads(p))) => {
                self.model.local_workload_peers.insert(key, p);
            }
            Some(Typed::BgpFilter(x)) => {
                self.model.filters.insert(key, x);
            }
            Some(Typed::IpamBlock(b)) => {
                self.model.ipam_blocks.insert(key, b);
            }
            Some(Typed::IpamHandle(h)) => {
                self.model.ipam_handles.insert(key, h);
            }
            Some(Typed::IpPool(p)) => {
                self.model.ip_pools.insert(key, p);
            }
            Some(Typed::Service(s)) => {
                self.model.services.insert(key, s);
            }
            Some(Typed::EndpointSlice(s)) => {
                self.model.endpoint_slices.insert(key, s);
            }
            Some(Typed::BgpConfiguration(x)) => self.model.bgp_configuration = x,
            Some(Typed::NodeBgpConfiguration(node, x)) => {
                self.model.node_bgp_configurations.insert(node, x);
            }
            Some(Typed::BfdConfiguration(x)) => {
                self.model.bfd_configurations.insert(key, x);
            }
            Some(Typed::WorkloadEndpoint(w)) => {
                self.model.workload_endpoints.extend(w.map(|w| (key, w)));
            }
        }
        if let (Some(key), true) = (c.key, accepted) {
            self.accepted(key, location, &mut f);
        }
        self.report(kind, c.name.as_deref(), f, location);
    }

    /// A handle of an IPAM store, with floating IPs: as one of the YAML's (a
    /// later definition of a name replaces an earlier one).
    fn stored_handle(&mut self, h: &ipam_store::StoredHandle) {
        let mut f = Findings::default();
        let name = h.handle.handle_id.clone();
        if let Some(value) = ipam_handle::from_store(&h.handle, &mut f) {
            self.model.ipam_handles.insert(name.clone(), value);
            self.accepted((ResourceKind::IpamHandle, name.clone()), &h.location, &mut f);
        }
        self.report(ResourceKind::IpamHandle, Some(&name), f, &h.location);
    }

    /// A block of an IPAM store: taken unless the YAML defines a block of the
    /// same name or CIDR, which wins (a warning when the two differ).
    fn stored_block(&mut self, s: &ipam_store::StoredBlock) {
        let mut f = Findings::default();
        let name = ipam_store::block_name(&s.block.cidr);
        let Some(block) = ipam_block::from_store(&s.block, s.deleted, &mut f) else {
            return self.report(ResourceKind::IpamBlock, Some(&name), f, &s.location);
        };
        let yaml = self.model.ipam_blocks.values().find(|y| y.name == block.name || y.cidr == block.cidr);
        match yaml {
            None => {
                self.model.ipam_blocks.insert(name.clone(), block);
                self.accepted((ResourceKind::IpamBlock, name.clone()), &s.location, &mut f);
                self.report(ResourceKind::IpamBlock, Some(&name), f, &s.location);
            }
            Some(y) if y.cidr == block.cidr && y.affinity == block.affinity && y.deleted == block.deleted => {}
            Some(y) => {
                let reason = format!(
                    "the YAML's IPAMBlock {:?} ({}) defines this block too and is used instead",
                    y.name, y.cidr
                );
                self.problem(
                    Severity::Warning,
                    ResourceKind::IpamBlock.into(),
                    Some(&name),
                    String::new(),
                    reason,
                    &s.location,
                );
            }
        }
    }

    /// Notes where the object `key` accepted without error came from, and warns
    /// when it replaces an earlier definition.
    fn accepted(&mut self, key: (ResourceKind, String), location: &Location, f: &mut Findings) {
        if !f.errors.is_empty() {
            return;
        }
        if let Some(previous) = self.seen.insert(key, location.clone()) {
            f.warn("", format!("defined again; this definition replaces the one at {previous}"));
        }
    }

    fn report(&mut self, kind: ResourceKind, name: Option<&str>, f: Findings, location: &Location) {
        for e in f.errors {
            self.problem(Severity::Error, kind.into(), name, e.field, e.reason, location);
        }
        for w in f.warnings {
            self.problem(Severity::Warning, kind.into(), name, w.field, w.reason, location);
        }
    }

    /// Warns about BGPPeers without `asNumber` whose `peerIP` is no Node's
    /// address: Calico takes the AS of the node at that address, so without one
    /// there is no session.
    fn check_node_peers(&mut self) {
        let orphans: Vec<(String, std::net::IpAddr, Location)> = self
            .model
            .peers
            .values()
            .filter_map(|p| match &p.remote {
                PeerRemote::Node { address } if self.model.node_with_address(address.ip).is_none() => {
                    let loc = self.seen.get(&(ResourceKind::BgpPeer, p.name.clone()))?;
                    Some((p.name.clone(), address.ip, loc.clone()))
                }
                _ => None,
            })
            .collect();
        for (peer, ip, loc) in orphans {
            let reason = format!(
                "missing, and {ip} is no Node's address (without asNumber the peer must be a Calico node, \
                 whose AS it takes): no session until such a Node exists"
            );
            self.problem(
                Severity::Warning,
                ResourceKind::BgpPeer.into(),
                Some(&peer),
                "spec.asNumber".into(),
                reason,
                &loc,
            );
        }
    }

    /// Warns about BGPPeers with `localWorkloadSelector` while the default
    /// BGPConfiguration sets no `localWorkloadPeeringIPV4/V6`: the node has no
    /// address of its own to peer with its workloads from, so no session.
    fn check_local_workload_peers(&mut self) {
        let cfg = &self.model.bgp_configuration;
        if cfg.local_workload_peering_ipv4.is_some() || cfg.local_workload_peering_ipv6.is_some() {
            return;
        }
        let lonely: Vec<(String, Location)> = self
            .model
            .local_workload_peers
            .keys()
            .filter_map(|name| Some((name.clone(), self.seen.get(&(ResourceKind::BgpPeer, name.clone()))?.clone())))
            .collect();
        for (peer, loc) in lonely {
            let reason = "no session: the default BGPConfiguration sets neither spec.localWorkloadPeeringIPV4 nor \
                          spec.localWorkloadPeeringIPV6 (the node's end of its sessions with its workloads)";
            self.problem(
                Severity::Warning,
                ResourceKind::BgpPeer.into(),
                Some(&peer),
                "spec.localWorkloadSelector".into(),
                reason.into(),
                &loc,
            );
        }
    }

    /// Warns about BGPPeer filters that name no valid BGPFilter: `declared` holds the
    /// names of all BGPFilter objects read, valid or not. The peer is kept and the
    /// missing filter skipped, as Calico does (confd renders only the filters it finds).
    fn check_filters(&mut self, declared: &BTreeSet<String>) {
        let missing: Vec<(String, String, Location)> = self
            .model
            .peers
            .values()
            .chain(self.model.local_workload_peers.values().map(|l| &l.peer))
            .flat_map(|p| p.filters.iter().map(move |f| (p, f)))
            .filter(|(_, f)| !self.model.filters.contains_key(*f))
            .filter_map(|(p, f)| {
                let loc = self.seen.get(&(ResourceKind::BgpPeer, p.name.clone()))?;
                Some((p.name.clone(), f.clone(), loc.clone()))
            })
            .collect();
        for (peer, filter, loc) in missing {
            let reason = if declared.contains(&filter) {
                format!("BGPFilter {filter:?} is invalid (see its errors); the peer runs without it")
            } else {
                format!("BGPFilter {filter:?} is not in the datastore; the peer runs without it")
            };
            self.problem(
                Severity::Warning,
                ResourceKind::BgpPeer.into(),
                Some(&peer),
                "spec.filters".into(),
                reason,
                &loc,
            );
        }
    }
}

#[cfg(test)]
mod crd_fields_tests;
#[cfg(test)]
mod tests;
