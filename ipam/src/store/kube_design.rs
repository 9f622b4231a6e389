//! The `kubernetes` datastore of `bgpd-ipam`: a client of the API server (from
//! a kubeconfig, else the pod's service account) and the design read from it.
//!
//! The design is what Calico's CNI plugin reads with its Kubernetes datastore:
//! `crd.projectcalico.org/v1` `IPPool`s, the `IPAMConfig` named `default`
//! (Calico's v1 name of `IPAMConfiguration`) and `IPReservation`s, the core
//! `v1` Node of the node being served (its labels, for pools' `nodeSelector`),
//! and the pod's `v1` Pod and `v1` Namespace (their annotations and the
//! namespace's labels). Each object is handed to [`Design::parse`] as the
//! document a file of the file datastore would hold, named
//! `kubernetes:PLURAL/[NAMESPACE/]NAME` in errors, so validation is the same
//! on every datastore. The IPAM state itself is [`super::kubernetes::KubeStore`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};

use super::any::OpenError;
use super::kubernetes::api_error;
use super::StoreError;
use crate::design::Design;

/// What the design must hold besides the pools: the node served and the pod
/// being added. `None` reads all Nodes (`bgpd-ipam show`) or no Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Focus {
    /// The node whose Node object is read; `None`: every Node.
    pub node: Option<String>,
    /// The pod (namespace, name) whose Pod and Namespace are read.
    pub pod: Option<(String, String)>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend { backend: "kubernetes", reason: e.to_string() }
}

/// A client of the API server: from the kubeconfig at `kubeconfig` when given
/// (what `kubernetes:PATH` says; the CNI plugin runs on the host, outside any
/// pod, so this is its usual form), else as kube infers it: `KUBECONFIG` or
/// `~/.kube/config`, else the in-cluster service account
/// (`KUBERNETES_SERVICE_HOST` / `_PORT` and the mounted token and CA).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, StoreError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| backend(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| backend(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            backend(format!(
                "no client configuration (KUBECONFIG, ~/.kube/config or the in-cluster service account): {e}"
            ))
        })?,
    };
    kube::Client::try_from(config).map_err(|e| backend(format!("client: {e}")))
}

/// A kind read for the design.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

impl Kind {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }
}

const IPPOOLS: Kind = Kind { group: super::kubernetes::GROUP, version: "v1", kind: "IPPool", plural: "ippools" };
const IPAMCONFIGS: Kind =
    Kind { group: super::kubernetes::GROUP, version: "v1", kind: "IPAMConfig", plural: "ipamconfigs" };
const IPRESERVATIONS: Kind =
    Kind { group: super::kubernetes::GROUP, version: "v1", kind: "IPReservation", plural: "ipreservations" };
const NODES: Kind = Kind { group: "", version: "v1", kind: "Node", plural: "nodes" };
const NAMESPACES: Kind = Kind { group: "", version: "v1", kind: "Namespace", plural: "namespaces" };
const PODS: Kind = Kind { group: "", version: "v1", kind: "Pod", plural: "pods" };

/// One object as the design reads it: kind and apiVersion filled in (list
/// items may come without them), name, namespace, labels, annotations and spec.
fn document(k: &Kind, o: &DynamicObject) -> (PathBuf, String) {
    let name = o.metadata.name.clone().unwrap_or_default();
    let mut meta = json!({ "name": name });
    if let Some(ns) = &o.metadata.namespace {
        meta["namespace"] = ns.clone().into();
    }
    let labels = if k.plural == NODES.plural { node_labels(o) } else { o.metadata.labels.clone().unwrap_or_default() };
    meta["labels"] = json!(labels);
    if let Some(m) = &o.metadata.annotations {
        meta["annotations"] = json!(m);
    }
    let api_version = if k.group.is_empty() { k.version.to_string() } else { format!("{}/{}", k.group, k.version) };
    let mut doc = json!({ "apiVersion": api_version, "kind": k.kind, "metadata": meta });
    if let Some(spec) = o.data.get("spec") {
        doc["spec"] = spec.clone();
    }
    let key = match &o.metadata.namespace {
        Some(ns) => format!("kubernetes:{}/{ns}/{name}", k.plural),
        None => format!("kubernetes:{}/{name}", k.plural),
    };
    (PathBuf::from(key), doc.to_string())
}

/// Every object of `k`; `Ok(None)` when the API server does not serve the kind
/// (404: its CRD is not installed).
async fn list(client: &kube::Client, k: &Kind) -> Result<Option<Vec<DynamicObject>>, StoreError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.resource());
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(Some(l.items)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(api_error(&format!("list of {}", k.plural), &e)),
    }
}

/// One object of `k` by name (in `namespace`), if it exists.
async fn get(
    client: &kube::Client,
    k: &Kind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<DynamicObject>, StoreError> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &k.resource()),
        None => Api::all_with(client.clone(), &k.resource()),
    };
    api.get_opt(name).await.map_err(|e| api_error(&format!("get of {} {name:?}", k.plural), &e))
}

/// Reads the design from the API server (see the module's documentation). The
/// IPPool CRD not served is an error naming it; no IPAMConfig or IPReservation
/// CRD means the defaults and no reservations; a missing Node, Pod or
/// Namespace means no labels or annotations (as in the file datastore).
/// A design that does not validate is [`OpenError::Design`] (as for the other
/// datastores), an API server that cannot be read [`OpenError::Store`].
pub async fn load_design(client: &kube::Client, focus: &Focus) -> Result<Design, OpenError> {
    let mut docs: Vec<(PathBuf, String)> = Vec::new();
    let pools = list(client, &IPPOOLS).await?.ok_or_else(|| {
        backend(format!(
            "{}/{} {} is not served: Calico's CRDs are not installed",
            IPPOOLS.group, IPPOOLS.version, IPPOOLS.plural
        ))
    })?;
    docs.extend(pools.iter().map(|o| document(&IPPOOLS, o)));
    let configs = list(client, &IPAMCONFIGS).await?.unwrap_or_default();
    // Calico reads only the one named `default`.
    docs.extend(
        configs.iter().filter(|o| o.metadata.name.as_deref() == Some("default")).map(|o| document(&IPAMCONFIGS, o)),
    );
    docs.extend(list(client, &IPRESERVATIONS).await?.unwrap_or_default().iter().map(|o| document(&IPRESERVATIONS, o)));
    match &focus.node {
        Some(node) => docs.extend(get(client, &NODES, None, node).await?.map(|o| document(&NODES, &o))),
        None => docs.extend(list(client, &NODES).await?.unwrap_or_default().iter().map(|o| document(&NODES, o))),
    }
    if let Some((ns, pod)) = &focus.pod {
        docs.extend(get(client, &NAMESPACES, None, ns).await?.map(|o| document(&NAMESPACES, &o)));
        docs.extend(get(client, &PODS, Some(ns), pod).await?.map(|o| document(&PODS, &o)));
    }
    let sources: Vec<(&Path, &str)> = docs.iter().map(|(p, t)| (p.as_path(), t.as_str())).collect();
    Ok(Design::parse(&sources)?)
}

/// The labels of a core Node merged as Calico merges them: the Calico labels
/// of its `projectcalico.org/labels` annotation (JSON), overridden by its
/// Kubernetes labels (as `calicoctl` and Calico's API server keep a Calico
/// Node's labels on the core Node). One that is not JSON is ignored, as Calico
/// ignores it.
fn node_labels(o: &DynamicObject) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = o
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("projectcalico.org/labels"))
        .and_then(|t| serde_json::from_str::<BTreeMap<String, Value>>(t).ok())
        .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    labels.extend(o.metadata.labels.clone().unwrap_or_default());
    labels
}
