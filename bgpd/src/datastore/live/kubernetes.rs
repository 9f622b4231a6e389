//! The Kubernetes datastore: one `kube::runtime` watcher per kind bgpd reads, on
//! dynamic objects (no CRD Rust types), each object turned into the same YAML value
//! a file of the file datastore holds.
//!
//! With Calico's Kubernetes datastore the node's BGP settings are annotations of the
//! core `v1` Node (`projectcalico.org/IPv4Address`, `…/IPv6Address`, `…/ASNumber`,
//! `…/RouteReflectorClusterID`); [`node_object`] turns such a Node into the
//! `projectcalico.org/v3` Node the model reads. The Calico kinds are read as their
//! `crd.projectcalico.org/v1` CRDs, which have the same spec.
//!
//! Content is published once every watcher has listed its kind, and then after
//! each burst of changes. A watcher error marks the datastore unreachable (the
//! content stays) until that watcher delivers again; kube's watcher retries with
//! backoff and lists again after a lost watch. A CRD that is not installed (404 on
//! the list) counts as an empty kind, with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::AbortHandle;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::{Backoff, Publisher};
use crate::datastore::Source;

/// Where a kind is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Cluster-scoped, or every namespace.
    All,
    /// Only bgpd's Secrets namespace.
    SecretsNamespace,
}

/// A kind bgpd watches.
#[derive(Clone, Copy, Debug)]
struct Watched {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
}

const CRD: &str = "crd.projectcalico.org";

/// Everything bgpd lists and watches in full (and therefore what its ClusterRole
/// grants: get, list, watch on these and nothing else). Secrets are not among them:
/// see [`SECRET`].
const WATCHED: &[Watched] = &[
    Watched { group: "", version: "v1", kind: "Node", plural: "nodes", scope: Scope::All },
    Watched { group: "", version: "v1", kind: "Service", plural: "services", scope: Scope::All },
    Watched {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        scope: Scope::All,
    },
    Watched { group: CRD, version: "v1", kind: "BGPConfiguration", plural: "bgpconfigurations", scope: Scope::All },
    Watched { group: CRD, version: "v1", kind: "BGPPeer", plural: "bgppeers", scope: Scope::All },
    Watched { group: CRD, version: "v1", kind: "BGPFilter", plural: "bgpfilters", scope: Scope::All },
    Watched { group: CRD, version: "v1", kind: "IPPool", plural: "ippools", scope: Scope::All },
    Watched { group: CRD, version: "v1", kind: "IPAMBlock", plural: "ipamblocks", scope: Scope::All },
    // Calico Enterprise's kind: a cluster without its CRD (Calico open source) or
    // with a ClusterRole from before bgpd read it simply has no BFD.
    Watched { group: CRD, version: "v1", kind: "BFDConfiguration", plural: "bfdconfigurations", scope: Scope::All },
];

/// Secrets are watched one by one, each by name (a field selector on
/// `metadata.name`), in bgpd's namespace, and only those a BGPPeer or the
/// BGPConfiguration refers to for a password: bgpd never lists the namespace's
/// Secrets, never holds one that no peer uses, and its Role can grant exactly the
/// referenced names (`resourceNames`), as Calico's does for calico-node.
const SECRET: Watched =
    Watched { group: "", version: "v1", kind: "Secret", plural: "secrets", scope: Scope::SecretsNamespace };

/// Kinds whose absence, or a ClusterRole that does not grant them, means "none".
const OPTIONAL: &[&str] = &["BFDConfiguration"];

impl Watched {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }
}

/// Calico's annotations on a core Node in its Kubernetes datastore.
const ANN_IPV4: &str = "projectcalico.org/IPv4Address";
const ANN_IPV6: &str = "projectcalico.org/IPv6Address";
const ANN_ASN: &str = "projectcalico.org/ASNumber";
const ANN_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";
const ANN_IPIP: &str = "projectcalico.org/IPv4IPIPTunnelAddr";

/// A core `v1` Node (as the API returns it) → the `projectcalico.org/v3` Node the
/// model reads: its labels, and `spec.bgp` from Calico's annotations (none when it
/// has neither address annotation: the node does not run BGP).
fn node_object(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let ann = |k: &str| meta["annotations"].get(k).cloned();
    let mut bgp = Map::new();
    for (field, key) in [
        ("ipv4Address", ANN_IPV4),
        ("ipv6Address", ANN_IPV6),
        ("asNumber", ANN_ASN),
        ("routeReflectorClusterID", ANN_CLUSTER_ID),
        ("ipv4IPIPTunnelAddr", ANN_IPIP),
    ] {
        if let Some(v) = ann(key) {
            bgp.insert(field.into(), v);
        }
    }
    let runs_bgp = bgp.contains_key("ipv4Address") || bgp.contains_key("ipv6Address");
    let spec = if runs_bgp { json!({ "bgp": bgp }) } else { json!({}) };
    json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": { "name": meta["name"], "labels": meta.get("labels").cloned().unwrap_or(json!({})) },
        "spec": spec,
    })
}

/// An object as the API returns it → the object the model reads, and its key
/// (`kubernetes:PLURAL/[NAMESPACE/]NAME`, used in messages and for ordering).
/// `None` for an object without a name (the API never sends one).
fn convert(w: &Watched, obj: &Value) -> Option<(String, Value)> {
    let meta = obj.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta.get("namespace").and_then(Value::as_str);
    let key = match ns {
        Some(ns) => format!("kubernetes:{}/{ns}/{name}", w.plural),
        None => format!("kubernetes:{}/{name}", w.plural),
    };
    if w.group.is_empty() && w.kind == "Node" {
        return Some((key, node_object(obj)));
    }
    // Keep what the model reads (everything but bookkeeping metadata): list items
    // may come without apiVersion and kind, so those come from the watched kind.
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(w.api_version()));
    out.insert("kind".into(), Value::String(w.kind.into()));
    let mut m = Map::new();
    for field in ["name", "namespace", "labels"] {
        if let Some(v) = meta.get(field) {
            m.insert(field.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(m));
    if let Some(fields) = obj.as_object() {
        for (k, v) in fields.iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
            out.insert(k.clone(), v.clone());
        }
    }
    Some((key, Value::Object(out)))
}

/// One watched kind's objects, as source texts by key.
#[derive(Default)]
struct KindState {
    /// Complete once the first list is done.
    objects: Option<BTreeMap<String, String>>,
    /// Objects of a list in progress.
    listing: Option<BTreeMap<String, String>>,
    /// The last error, until the watcher delivers again.
    error: Option<String>,
    /// Why the kind counts as empty (its CRD is not installed).
    note: Option<String>,
}

fn text(w: &Watched, obj: &DynamicObject) -> Option<(String, String)> {
    let v = serde_json::to_value(obj).ok()?;
    let (key, o) = convert(w, &v)?;
    Some((key, o.to_string()))
}

impl KindState {
    /// Takes one watcher event; returns whether the content may have changed.
    fn event(&mut self, w: &Watched, ev: Event<DynamicObject>) -> bool {
        self.error = None;
        match ev {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let (Some(l), Some((k, t))) = (self.listing.as_mut(), text(w, &o)) {
                    l.insert(k, t);
                }
                false
            }
            Event::InitDone => {
                self.objects = Some(self.listing.take().unwrap_or_default());
                self.note = None;
                true
            }
            Event::Apply(o) => match (self.objects.as_mut(), text(w, &o)) {
                (Some(m), Some((k, t))) => m.insert(k, t.clone()).as_ref() != Some(&t),
                _ => false,
            },
            Event::Delete(o) => match (self.objects.as_mut(), text(w, &o)) {
                (Some(m), Some((k, _))) => m.remove(&k).is_some(),
                _ => false,
            },
        }
    }

    fn error(&mut self, w: &Watched, e: &watcher::Error) -> bool {
        self.error_for(w, None, e)
    }

    /// As [`KindState::error`], for the watch of one Secret by `name`: a Secret the
    /// Role does not grant (403) counts as absent, with a note that says so, rather
    /// than making the whole datastore unreachable (the peer that needs it reports
    /// its password as not found).
    fn error_for(&mut self, w: &Watched, secret: Option<(&str, &str)>, e: &watcher::Error) -> bool {
        if let watcher::Error::InitialListFailed(kube::Error::Api(resp)) = e {
            let forbidden = resp.code == 403 && (OPTIONAL.contains(&w.kind) || secret.is_some());
            if (resp.code == 404 && !w.group.is_empty()) || forbidden {
                // The CRD is not installed (or, for an optional kind, not granted):
                // nothing of this kind exists.
                let was_empty = self.objects.as_ref().is_some_and(BTreeMap::is_empty);
                self.objects = Some(BTreeMap::new());
                self.note = Some(match secret {
                    Some((ns, name)) => format!(
                        "Secret {ns}/{name} is not granted to bgpd (add {name:?} to the resourceNames of its Role \
                         in {ns}); its passwords cannot be read"
                    ),
                    None if forbidden => {
                        format!("{}/{} is not granted to bgpd's ClusterRole; none read", w.plural, w.group)
                    }
                    None => format!("{}/{} is not installed; none read", w.plural, w.group),
                });
                self.error = None;
                return !was_empty;
            }
        }
        self.error = Some(format!("{} {}: {e}", w.api_version(), w.plural));
        false
    }
}

/// Publishes the content once every kind and every referenced Secret is listed and
/// none is in error; marks the datastore unreachable while one is in error.
fn publish(kinds: &[KindState], secrets: &SecretWatches, out: &Publisher) {
    let all = || kinds.iter().chain(secrets.by_name.values().map(|(state, _)| state));
    if let Some(err) = all().find_map(|k| k.error.clone()) {
        out.unreachable(err);
    }
    if all().any(|k| k.objects.is_none()) {
        return;
    }
    let mut sources = Vec::new();
    for k in all() {
        for (key, t) in k.objects.iter().flatten() {
            sources.push(Source { path: key.into(), text: t.clone() });
        }
    }
    let notes = all().filter_map(|k| k.note.clone()).collect();
    if all().all(|k| k.error.is_none()) {
        out.content(sources, notes);
    }
}

/// The names of the Secrets that BGPPeers (`spec.password`) and BGPConfigurations
/// (`spec.nodeMeshPassword`) refer to, read from their converted objects.
fn referenced_secrets(kinds: &[KindState]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (w, k) in WATCHED.iter().zip(kinds) {
        let field = match (w.group, w.kind) {
            (CRD, "BGPPeer") => "password",
            (CRD, "BGPConfiguration") => "nodeMeshPassword",
            _ => continue,
        };
        for text in k.objects.iter().flat_map(BTreeMap::values) {
            let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
            if let Some(name) = v["spec"][field]["secretKeyRef"]["name"].as_str() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Where a watcher event comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// `WATCHED[i]`.
    Kind(usize),
    /// The watch of one Secret, by name.
    Secret(String),
}

type Events = futures::stream::SelectAll<
    futures::stream::BoxStream<'static, (Slot, Result<Event<DynamicObject>, watcher::Error>)>,
>;

/// The watches of the referenced Secrets: each one's state, and the handle that
/// stops its watcher when no object refers to it any more.
#[derive(Default)]
struct SecretWatches {
    by_name: BTreeMap<String, (KindState, AbortHandle)>,
}

impl SecretWatches {
    /// Starts a watch for every newly referenced name and stops (and forgets) the
    /// ones no longer referenced. Returns whether the set changed.
    fn sync(&mut self, wanted: &BTreeSet<String>, api: &Api<DynamicObject>, events: &mut Events) -> bool {
        let before = self.by_name.len();
        self.by_name.retain(|name, (_, handle)| {
            let keep = wanted.contains(name);
            if !keep {
                handle.abort();
            }
            keep
        });
        let removed = before != self.by_name.len();
        let new: Vec<&String> = wanted.iter().filter(|n| !self.by_name.contains_key(*n)).collect();
        let added = !new.is_empty();
        for name in new {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let slot = Slot::Secret(name.clone());
            let (stream, handle) = futures::stream::abortable(watcher::watcher(api.clone(), config).default_backoff());
            events.push(stream.map(move |e| (slot.clone(), e)).boxed());
            self.by_name.insert(name.clone(), (KindState::default(), handle));
        }
        removed || added
    }
}

pub(super) async fn run(secrets_namespace: String, out: Publisher) {
    let mut backoff = Backoff::new();
    let client = loop {
        match kube::Client::try_default().await {
            Ok(c) => break c,
            Err(e) => {
                let delay = backoff.next();
                warn!("kubernetes datastore: no client ({e}); retrying in {delay:?}");
                out.unreachable(format!("no Kubernetes client configuration: {e}"));
                tokio::time::sleep(delay).await;
            }
        }
    };
    watch(client, secrets_namespace, out).await
}

/// Watches every kind of [`WATCHED`] and the referenced Secrets through `client`,
/// and publishes the content until `out` is closed.
async fn watch(client: kube::Client, secrets_namespace: String, out: Publisher) {
    let streams = WATCHED.iter().enumerate().map(|(i, w)| {
        let ar = w.resource();
        let api: Api<DynamicObject> = match w.scope {
            Scope::All => Api::all_with(client.clone(), &ar),
            Scope::SecretsNamespace => Api::namespaced_with(client.clone(), &secrets_namespace, &ar),
        };
        watcher::watcher(api, watcher::Config::default()).default_backoff().map(move |e| (Slot::Kind(i), e)).boxed()
    });
    let secrets_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &secrets_namespace, &SECRET.resource());
    let mut events: Events = futures::stream::select_all(streams);
    let mut kinds: Vec<KindState> = WATCHED.iter().map(|_| KindState::default()).collect();
    let mut secrets = SecretWatches::default();
    let mut dirty = false;
    info!(namespace = %secrets_namespace, "kubernetes datastore: watching {} kinds", WATCHED.len());
    while !out.closed() {
        // Changes come in bursts (a list, a rollout): publish once things settle.
        let next = tokio::time::timeout(Duration::from_millis(100), events.next()).await;
        match next {
            Ok(Some((Slot::Kind(i), Ok(ev)))) => {
                // A kind that failed and delivers again may make the datastore reachable.
                let recovered = kinds[i].error.is_some();
                let changed = kinds[i].event(&WATCHED[i], ev);
                if changed && matches!(WATCHED[i].kind, "BGPPeer" | "BGPConfiguration") {
                    dirty |= secrets.sync(&referenced_secrets(&kinds), &secrets_api, &mut events);
                }
                dirty |= changed || recovered;
            }
            Ok(Some((Slot::Secret(name), Ok(ev)))) => {
                // Events of a watch stopped a moment ago have no state any more.
                if let Some((state, _)) = secrets.by_name.get_mut(&name) {
                    let recovered = state.error.is_some();
                    dirty |= state.event(&SECRET, ev) || recovered;
                }
            }
            Ok(Some((slot, Err(e)))) => {
                warn!("kubernetes datastore: {e}; keeping the last good model");
                dirty |= match &slot {
                    Slot::Kind(i) => kinds[*i].error(&WATCHED[*i], &e),
                    Slot::Secret(name) => match secrets.by_name.get_mut(name) {
                        Some((state, _)) => state.error_for(&SECRET, Some((&secrets_namespace, name)), &e),
                        None => false,
                    },
                };
                publish(&kinds, &secrets, &out);
            }
            Ok(None) => return,
            Err(_) if dirty => {
                dirty = false;
                publish(&kinds, &secrets, &out);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
