//! The Kubernetes datastore: API discovery finds the group Calico's kinds are
//! served in (`crd.projectcalico.org/v1`, else `projectcalico.org/v3`); then one
//! task per collection lists it (in pages) and watches it from the list's
//! resourceVersion ([`follow`]), on dynamic objects (no CRD Rust types); each
//! object is turned into the same value a file of the file datastore holds
//! ([`convert`]) and kept in the [`store`].
//!
//! With Calico's Kubernetes datastore the node's BGP settings are annotations of the
//! core `v1` Node (`projectcalico.org/IPv4Address`, `…/IPv6Address`, `…/ASNumber`,
//! `…/RouteReflectorClusterID`); such a Node becomes the `projectcalico.org/v3`
//! Node the model reads.
//!
//! What the datastore guarantees (see `docs/kubernetes.md`):
//! - content is first published once every collection is listed;
//! - a change is published once changes settle ([`pacer::QUIET`]) and at most
//!   [`pacer::MAX_DELAY`] after it arrived, however many changes follow;
//! - the last objects read of a collection stay through every error (a 404 too):
//!   only a successful list replaces them; the datastore is marked unreachable
//!   while a collection cannot be read, and reachable again as soon as its list
//!   or watch succeeds, whether or not an object changed meanwhile;
//! - a Calico kind the cluster does not serve is an error, never "no objects"
//!   (BFDConfiguration, Calico Enterprise's, aside).
//!
//! Pods are read only while a BGPPeer has `localWorkloadSelector`, and only
//! this node's (a `spec.nodeName` field selector: no node holds the cluster's
//! pods); the node's name is the daemon's `--node` (see [`super::spawn`]).

mod convert;
mod follow;
mod kinds;
mod pacer;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::Api;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use super::{Backoff, Publisher};
use follow::{follow, Update};
use kinds::{Scope, Watched, SECRET};
use pacer::Pacer;
use store::{KindState, Store, View};

/// The kinds read only for Service advertisement.
const SERVICE_KINDS: [&str; 2] = ["services", "endpointslices"];

/// Where an update comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// The kind at this index of the [`Store`].
    Kind(usize),
    /// The watch of one Secret, by name.
    Secret(String),
}

pub(super) async fn run(kubeconfig: Option<PathBuf>, secrets_namespace: String, node: Option<String>, out: Publisher) {
    let client = client("kubernetes datastore", kubeconfig.as_deref(), |e| {
        out.unreachable(format!("no Kubernetes client configuration: {e}"))
    })
    .await;
    watch(client, secrets_namespace, node, out).await
}

/// A client of the API server configured by the kubeconfig file `kubeconfig`
/// (`--datastore kubernetes:KUBECONFIG`), else as kube infers it (in-cluster
/// service account, `KUBECONFIG`, `~/.kube/config`); tried again with backoff
/// until there is one (a kubeconfig file may be mounted late); each failure is
/// logged for `who` and handed to `failed`.
pub(crate) async fn client(who: &str, kubeconfig: Option<&Path>, mut failed: impl FnMut(&str)) -> kube::Client {
    let mut backoff = Backoff::new();
    loop {
        match try_client(kubeconfig).await {
            Ok(c) => return c,
            Err(e) => {
                let delay = backoff.next();
                warn!("{who}: no Kubernetes client ({e}); retrying in {delay:?}");
                failed(&e);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One attempt of [`client`]; the error names the kubeconfig file.
async fn try_client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let Some(path) = kubeconfig else { return kube::Client::try_default().await.map_err(|e| e.to_string()) };
    let named = |e: &dyn std::fmt::Display| format!("kubeconfig {}: {e}", path.display());
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| named(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| named(&e))?;
    kube::Client::try_from(config).map_err(|e| named(&e))
}

/// Publishes what `store` holds: the content once everything is listed (with the
/// unreachable mark while a collection fails), else only the mark.
fn publish(store: &Store, out: &Publisher) {
    match store.view() {
        View::Waiting(Some(error)) => out.unreachable(error),
        View::Waiting(None) => {}
        View::Ready { sources, notes, error: None } => out.content(sources, Default::default(), notes),
        View::Ready { sources, notes, error: Some(error) } => out.partial_content(sources, notes, error),
    }
}

/// Discovers the Calico API, retrying (and marking the datastore unreachable,
/// with why) until one is served with every kind bgpd needs.
async fn discover(client: &kube::Client, out: &Publisher) -> Option<kinds::Discovered> {
    let mut backoff = Backoff::new();
    loop {
        match kinds::discover(client).await {
            Ok(d) => return Some(d),
            Err(e) => {
                let delay = backoff.next();
                warn!("kubernetes datastore: {e}; retrying in {delay:?}");
                out.unreachable(e);
                if out.closed() {
                    return None;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The running list-and-watch tasks, and what starts and stops them.
struct Followers {
    client: kube::Client,
    secrets_namespace: String,
    /// This node's name, whose Pods are read; `None`: not known, none read.
    node: Option<String>,
    tx: mpsc::UnboundedSender<(Slot, Update)>,
    /// Every task; dropping the set stops them all.
    tasks: JoinSet<()>,
    /// The watches of the referenced Secrets, by name.
    secrets: BTreeMap<String, AbortHandle>,
    /// The indexes of [`SERVICE_KINDS`] in the store.
    service_kinds: Vec<usize>,
    /// Their watches while Service advertisement is configured; `None` while it
    /// is not, or not known yet.
    services: Option<Vec<AbortHandle>>,
    /// Whether the BGPConfigurations have been read to decide.
    services_decided: bool,
    /// The index of [`kinds::POD`] in the store.
    pod_kind: Option<usize>,
    /// Its watch while a BGPPeer has `localWorkloadSelector`.
    pods: Option<AbortHandle>,
    /// Whether the BGPPeers have been read to decide.
    pods_decided: bool,
    /// What was decided: whether a BGPPeer has `localWorkloadSelector`.
    pods_wanted: bool,
}

impl Followers {
    /// Starts following the collection of `w` (the object `name` only, if given;
    /// this node's objects only, for [`Scope::ThisNode`]).
    fn start(&mut self, w: &Watched, name: Option<String>, slot: Slot) -> AbortHandle {
        let mut fields = name.map(|n| format!("metadata.name={n}"));
        let api = match w.scope {
            Scope::All => Api::all_with(self.client.clone(), &w.resource()),
            Scope::ThisNode => {
                fields = Some(format!("spec.nodeName={}", self.node.as_deref().unwrap_or_default()));
                Api::all_with(self.client.clone(), &w.resource())
            }
            Scope::SecretsNamespace => {
                Api::namespaced_with(self.client.clone(), &self.secrets_namespace, &w.resource())
            }
        };
        self.tasks.spawn(follow(api, w.read, fields, slot, self.tx.clone()))
    }

    /// Whether an update comes from a watch stopped a moment ago.
    fn stale(&self, slot: &Slot) -> bool {
        let services = matches!(slot, Slot::Kind(i) if self.service_kinds.contains(i)) && self.services.is_none();
        services || (matches!(slot, Slot::Kind(i) if Some(*i) == self.pod_kind) && self.pods.is_none())
    }

    /// Watches this node's Pods exactly while a BGPPeer has
    /// `localWorkloadSelector` (and this node's name is known); returns whether
    /// the content changed.
    fn sync_pods(&mut self, store: &mut Store) -> bool {
        let Some(i) = self.pod_kind else { return false };
        let wanted = store.peers_local_workloads();
        if self.pods_decided && wanted == self.pods_wanted {
            return false;
        }
        if let Some(task) = self.pods.take() {
            task.abort();
        }
        self.pods_decided = true;
        self.pods_wanted = wanted;
        match (wanted, self.node.clone()) {
            (false, _) => {
                info!("kubernetes datastore: no BGPPeer has localWorkloadSelector: not watching Pods");
                store.set(i, KindState::unread());
            }
            (true, None) => {
                warn!("kubernetes datastore: a BGPPeer has localWorkloadSelector, but no node name was given: Pods not read");
                let note = "no node name given: this node's Pods are not read, and BGPPeers with \
                            localWorkloadSelector have no sessions";
                store.set(i, KindState::absent(note.into()));
            }
            (true, Some(node)) => {
                info!("kubernetes datastore: a BGPPeer has localWorkloadSelector: watching the Pods of node {node}");
                store.set(i, KindState::default());
                let w = *store.kind(i);
                self.pods = Some(self.start(&w, None, Slot::Kind(i)));
            }
        }
        true
    }

    /// Watches exactly the Secrets the store's objects refer to; returns whether
    /// the content changed (a Secret forgotten).
    fn sync_secrets(&mut self, store: &mut Store) -> bool {
        let (new, gone) = store.sync_secrets(&store.referenced_secrets());
        for name in &gone {
            if let Some(task) = self.secrets.remove(name) {
                task.abort();
            }
        }
        for name in new {
            let task = self.start(&SECRET, Some(name.clone()), Slot::Secret(name.clone()));
            self.secrets.insert(name, task);
        }
        !gone.is_empty()
    }

    /// Watches Services and EndpointSlices exactly while a BGPConfiguration
    /// advertises Service addresses; returns whether the content changed.
    fn sync_services(&mut self, store: &mut Store) -> bool {
        let wanted = store.advertises_services();
        if self.services_decided && wanted == self.services.is_some() {
            return false;
        }
        info!(
            "kubernetes datastore: Service advertisement {}configured: {}watching Services and EndpointSlices",
            if wanted { "" } else { "not " },
            if wanted { "" } else { "not " }
        );
        for task in self.services.take().into_iter().flatten() {
            task.abort();
        }
        for i in self.service_kinds.clone() {
            store.set(i, if wanted { KindState::default() } else { KindState::unread() });
        }
        if wanted {
            let kinds: Vec<(usize, Watched)> = self.service_kinds.iter().map(|&i| (i, *store.kind(i))).collect();
            self.services = Some(kinds.into_iter().map(|(i, w)| self.start(&w, None, Slot::Kind(i))).collect());
        }
        self.services_decided = true;
        true
    }

    /// Takes one update into `store`, starting and stopping the watches it calls
    /// for; returns whether the content changed.
    fn take(&mut self, store: &mut Store, slot: &Slot, update: Update) -> bool {
        if let Update::Failed(f) = &update {
            warn!("kubernetes datastore: {slot:?}: {}; keeping the last good objects", f.message);
        }
        let mut changed = store.update(slot, update);
        let Slot::Kind(i) = *slot else { return changed };
        let kind = store.kind(i);
        if kind.is_calico() && matches!(kind.kind, "BGPPeer" | "BGPConfiguration") && changed {
            changed |= self.sync_secrets(store);
        }
        let kind = store.kind(i);
        let configurations = kind.is_calico() && kind.kind == "BGPConfiguration" && store.listed(i);
        if configurations && (changed || !self.services_decided) {
            changed |= self.sync_services(store);
        }
        let kind = store.kind(i);
        let peers = kind.is_calico() && kind.kind == "BGPPeer" && store.listed(i);
        if peers && (changed || !self.pods_decided) {
            changed |= self.sync_pods(store);
        }
        changed
    }
}

/// Watches every kind bgpd reads and the referenced Secrets through `client`, and
/// publishes the content until `out` is closed.
async fn watch(client: kube::Client, secrets_namespace: String, node: Option<String>, out: Publisher) {
    let Some(found) = discover(&client, &out).await else { return };
    let watched = kinds::watched(found.api);
    info!(
        namespace = %secrets_namespace,
        "kubernetes datastore: reading Calico's kinds as {}; watching {} kinds",
        found.api.api_version(),
        watched.len()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut store = Store::new(&watched, &secrets_namespace);
    let mut followers = Followers {
        client,
        secrets_namespace,
        node,
        tx,
        tasks: JoinSet::new(),
        secrets: BTreeMap::new(),
        // Read only while a BGPConfiguration advertises Service addresses:
        // decided once BGPConfigurations are listed (the store waits for them).
        service_kinds: (0..watched.len()).filter(|&i| SERVICE_KINDS.contains(&watched[i].plural)).collect(),
        services: None,
        services_decided: false,
        // Read only while a BGPPeer has localWorkloadSelector: decided once
        // BGPPeers are listed.
        pod_kind: watched.iter().position(|w| *w == kinds::POD),
        pods: None,
        pods_decided: false,
        pods_wanted: false,
    };
    for (i, w) in watched.iter().enumerate() {
        if found.missing_optional.contains(w.plural) {
            store.set(i, KindState::absent(format!("{} is not installed; none read", w.name())));
        } else if !followers.service_kinds.contains(&i) && Some(i) != followers.pod_kind {
            followers.start(w, None, Slot::Kind(i));
        }
    }
    let mut pacer = Pacer::default();
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        let due = pacer.due().map(tokio::time::Instant::from_std);
        let never = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(due.unwrap_or(never)), if due.is_some() => {
                publish(&store, &out);
                pacer.published();
            }
            received = rx.recv() => {
                // `followers` holds a sender: the channel never closes.
                let Some((slot, update)) = received else { return };
                if followers.stale(&slot) {
                    continue;
                }
                let before = (store.complete(), store.error());
                if followers.take(&mut store, &slot, update) {
                    pacer.changed(Instant::now());
                }
                // The first complete read, and every change of health (an error,
                // a recovery), are published at once.
                if (store.complete(), store.error()) != before {
                    publish(&store, &out);
                    pacer.published();
                }
            }
            _ = alive.tick() => {
                if out.closed() {
                    return;
                }
                // Forget the tasks of watches stopped.
                while followers.tasks.try_join_next().is_some() {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
