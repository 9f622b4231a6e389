//! What bgpd reads from the API server: the core kinds, Calico's kinds in whichever
//! API group the cluster serves them (found by discovery), and the referenced Secrets.

use std::collections::BTreeSet;

use kube::api::ApiResource;
use kube::core::GroupVersionKind;

/// Where a kind is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// Cluster-scoped, or every namespace.
    All,
    /// Only bgpd's Secrets namespace.
    SecretsNamespace,
    /// Every namespace, only the objects of this node (a field selector
    /// `spec.nodeName=NODE`): the API server sends no other node's.
    ThisNode,
}

/// What of a kind's objects the API server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// Whole objects.
    Objects,
    /// Their metadata only: lists and watches ask for `PartialObjectMetadata`
    /// (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`,
    /// `as=PartialObjectMetadata` for a watch), for a kind of which bgpd reads
    /// nothing else. Needs the same `list` and `watch` verbs as whole objects.
    Metadata,
}

/// A kind bgpd watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Watched {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) kind: &'static str,
    pub(super) plural: &'static str,
    pub(super) scope: Scope,
    pub(super) read: Read,
}

impl Watched {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(super) fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }

    /// One of Calico's kinds (whichever group serves it).
    pub(super) fn is_calico(&self) -> bool {
        CalicoApi::ALL.iter().any(|api| api.group() == self.group)
    }

    /// `PLURAL.GROUP/VERSION`, as messages name a resource.
    pub(super) fn name(&self) -> String {
        if self.group.is_empty() {
            format!("{}/{}", self.plural, self.version)
        } else {
            format!("{}.{}/{}", self.plural, self.group, self.version)
        }
    }
}

/// The two API groups Calico's kinds can be served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CalicoApi {
    /// `crd.projectcalico.org/v1`: the CRDs of Calico's Kubernetes datastore, as
    /// most clusters run it (Calico's own components read these). With Calico's
    /// aggregated API server installed, `projectcalico.org/v3` is a view of them.
    CrdV1,
    /// `projectcalico.org/v3` CRDs, which newer Calico releases install directly.
    V3,
}

impl CalicoApi {
    /// In the order discovery prefers them.
    pub(super) const ALL: [CalicoApi; 2] = [CalicoApi::CrdV1, CalicoApi::V3];

    pub(super) fn group(self) -> &'static str {
        match self {
            CalicoApi::CrdV1 => "crd.projectcalico.org",
            CalicoApi::V3 => "projectcalico.org",
        }
    }

    pub(super) fn version(self) -> &'static str {
        match self {
            CalicoApi::CrdV1 => "v1",
            CalicoApi::V3 => "v3",
        }
    }

    pub(super) fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }
}

/// The core kinds. Nodes are read as metadata only: bgpd reads their name,
/// labels and annotations (`convert::node_object`), and a Node's spec and status
/// (a kubelet posts the status every few minutes; its images alone can be
/// kilobytes) would be most of every Node event's bytes.
pub(super) const CORE: &[Watched] = &[
    Watched { group: "", version: "v1", kind: "Node", plural: "nodes", scope: Scope::All, read: Read::Metadata },
    Watched { group: "", version: "v1", kind: "Service", plural: "services", scope: Scope::All, read: Read::Objects },
    Watched {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        scope: Scope::All,
        read: Read::Objects,
    },
    POD,
];

/// Pods, read as the workload endpoints a BGPPeer with `localWorkloadSelector`
/// peers with: only this node's, and only while such a BGPPeer exists
/// (`Followers::sync_pods`); the rest of a Pod is dropped on reading
/// (`convert::pod_object`), so that only a change of what routing reads is a
/// change of the model.
pub(super) const POD: Watched =
    Watched { group: "", version: "v1", kind: "Pod", plural: "pods", scope: Scope::ThisNode, read: Read::Objects };

/// Calico's kinds bgpd reads: (kind, plural, required). A required kind the
/// cluster does not serve is an error; an optional one means "none".
pub(super) const CALICO: &[(&str, &str, bool)] = &[
    ("BGPConfiguration", "bgpconfigurations", true),
    ("BGPPeer", "bgppeers", true),
    ("BGPFilter", "bgpfilters", true),
    ("IPPool", "ippools", true),
    ("IPAMBlock", "ipamblocks", true),
    // One per pod interface; read for the floating IPs `bgpd-ipam` records on them
    // (only those handles are kept, see `convert::routing_reads`). Optional: a
    // cluster or ClusterRole without them has no floating IPs, and no peer or
    // block is lost for it.
    ("IPAMHandle", "ipamhandles", false),
    // Read for releases in progress only: a block whose affinity `bgpd-ipam` (or
    // Calico) marked `pendingDeletion` is withdrawn at once, as on the file and
    // etcd datastores (`store::View` marks it deleted). Only those affinities are
    // kept (`convert::routing_reads`). Optional, as IPAMHandle.
    ("BlockAffinity", "blockaffinities", false),
    // Calico Enterprise's kind: a cluster without it (Calico open source), or a
    // ClusterRole from before bgpd read it, has no BFD.
    ("BFDConfiguration", "bfdconfigurations", false),
];

/// Secrets are watched one by one, each by name (a field selector on
/// `metadata.name`), in bgpd's namespace, and only those a BGPPeer or the
/// BGPConfiguration refers to for a password: bgpd never lists the namespace's
/// Secrets, never holds one that no peer uses, and its Role can grant exactly the
/// referenced names (`resourceNames`), as Calico's does for calico-node.
pub(super) const SECRET: Watched = Watched {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    scope: Scope::SecretsNamespace,
    read: Read::Objects,
};

/// Every kind bgpd watches when Calico's kinds are served by `api`: the core
/// kinds, then Calico's.
pub(super) fn watched(api: CalicoApi) -> Vec<Watched> {
    let calico = CALICO.iter().map(|(kind, plural, _)| Watched {
        group: api.group(),
        version: api.version(),
        kind,
        plural,
        scope: Scope::All,
        read: Read::Objects,
    });
    CORE.iter().copied().chain(calico).collect()
}

/// Whether a kind may be missing from the cluster, or not granted (it then
/// has no objects): Calico's optional kinds, and Pods (a ClusterRole from
/// before bgpd read them costs the local workload peerings only).
pub(super) fn optional(w: &Watched) -> bool {
    *w == POD || CALICO.iter().any(|(kind, _, required)| *kind == w.kind && !required)
}

/// What discovery found at one Calico group version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// Served, with these resources (plurals).
    Served(BTreeSet<String>),
    /// Not served (404).
    Absent,
    /// Discovery failed otherwise (the API server unreachable, 5xx, 403…).
    Failed(String),
}

/// Which Calico API bgpd reads, and which of its optional kinds are missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Discovered {
    pub(super) api: CalicoApi,
    /// The optional kinds' plurals the group does not serve.
    pub(super) missing_optional: BTreeSet<&'static str>,
}

/// Chooses the Calico API from what discovery found (`probes` in the order of
/// [`CalicoApi::ALL`]): the first served one, which must serve every required
/// kind. An error when one cannot be chosen: never "no objects".
pub(super) fn choose(probes: &[(CalicoApi, Probe)]) -> Result<Discovered, String> {
    for (api, probe) in probes {
        match probe {
            Probe::Served(resources) => {
                let missing = |required: bool| {
                    CALICO
                        .iter()
                        .filter(move |(_, plural, r)| *r == required && !resources.contains(*plural))
                        .map(|(_, plural, _)| *plural)
                };
                let required: Vec<&str> = missing(true).collect();
                if !required.is_empty() {
                    return Err(format!(
                        "{} is served without {}: Calico's CRDs are incomplete (install them, or \
                         templates/kubernetes/crds.yaml)",
                        api.api_version(),
                        required.join(", ")
                    ));
                }
                return Ok(Discovered { api: *api, missing_optional: missing(false).collect() });
            }
            Probe::Absent => {}
            // Without knowing whether the preferred group is served, reading the
            // other one could read the wrong objects.
            Probe::Failed(e) => return Err(format!("API discovery of {}: {e}", api.api_version())),
        }
    }
    let names: Vec<String> = probes.iter().map(|(api, _)| api.api_version()).collect();
    Err(format!(
        "the API server serves none of {}: Calico's CRDs are not installed (install Calico, or \
         templates/kubernetes/crds.yaml)",
        names.join(" and ")
    ))
}

/// Asks the API server which Calico group version it serves (preferred first,
/// stopping at the first one served).
pub(super) async fn discover(client: &kube::Client) -> Result<Discovered, String> {
    let mut probes = Vec::new();
    for api in CalicoApi::ALL {
        let probe = match client.list_api_group_resources(&api.api_version()).await {
            Ok(list) => Probe::Served(list.resources.into_iter().map(|r| r.name).collect()),
            Err(kube::Error::Api(e)) if e.code == 404 => Probe::Absent,
            Err(e) => Probe::Failed(e.to_string()),
        };
        let served = matches!(probe, Probe::Served(_));
        probes.push((api, probe));
        if served {
            break;
        }
    }
    choose(&probes)
}

/// Every (group, plural) bgpd may read, whichever Calico API it finds: what its
/// ClusterRole grants (Secrets aside, see [`SECRET`]).
pub(super) fn granted() -> BTreeSet<(String, String)> {
    CalicoApi::ALL.iter().flat_map(|api| watched(*api)).map(|w| (w.group.to_string(), w.plural.to_string())).collect()
}
