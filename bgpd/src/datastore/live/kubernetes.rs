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

mod convert;
mod follow;
mod kinds;
mod pacer;
mod store;

use std::collections::BTreeMap;
use std::time::Instant;

use kube::api::{Api, DynamicObject};
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

/// Publishes what `store` holds: the content once everything is listed (with the
/// unreachable mark while a collection fails), else only the mark.
fn publish(store: &Store, out: &Publisher) {
    match store.view() {
        View::Waiting(Some(error)) => out.unreachable(error),
        View::Waiting(None) => {}
        View::Ready { sources, notes, error: None } => out.content(sources, notes),
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

/// The collection of `w` through `client`.
fn api(client: &kube::Client, w: &Watched, secrets_namespace: &str) -> Api<DynamicObject> {
    match w.scope {
        Scope::All => Api::all_with(client.clone(), &w.resource()),
        Scope::SecretsNamespace => Api::namespaced_with(client.clone(), secrets_namespace, &w.resource()),
    }
}

/// Watches every kind bgpd reads and the referenced Secrets through `client`, and
/// publishes the content until `out` is closed.
async fn watch(client: kube::Client, secrets_namespace: String, out: Publisher) {
    let Some(found) = discover(&client, &out).await else { return };
    let watched = kinds::watched(found.api);
    info!(
        namespace = %secrets_namespace,
        "kubernetes datastore: reading Calico's kinds as {}; watching {} kinds",
        found.api.api_version(),
        watched.len()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Dropping the set (returning) stops every task.
    let mut tasks = JoinSet::new();
    let mut store = Store::new(&watched, &secrets_namespace);
    // Services and EndpointSlices are read only while a BGPConfiguration
    // advertises Service addresses: decided once BGPConfigurations are listed
    // (until then the store waits for them too).
    let service_kinds: Vec<usize> =
        watched.iter().enumerate().filter(|(_, w)| SERVICE_KINDS.contains(&w.plural)).map(|(i, _)| i).collect();
    let configurations = watched.iter().position(|w| w.is_calico() && w.kind == "BGPConfiguration");
    let mut service_tasks: Option<Vec<AbortHandle>> = None;
    let mut services_decided = false;
    for (i, w) in watched.iter().enumerate() {
        if found.missing_optional.contains(w.plural) {
            store.set(i, KindState::absent(format!("{} is not installed; none read", w.name())));
            continue;
        }
        if service_kinds.contains(&i) {
            continue;
        }
        tasks.spawn(follow(api(&client, w, &secrets_namespace), None, Slot::Kind(i), tx.clone()));
    }
    let mut secret_tasks: BTreeMap<String, AbortHandle> = BTreeMap::new();
    let mut pacer = Pacer::default();
    let mut alive = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let due = pacer.due().map(tokio::time::Instant::from_std);
        let never = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(due.unwrap_or(never)), if due.is_some() => {
                publish(&store, &out);
                pacer.published();
            }
            received = rx.recv() => {
                // `tx` is held here: the channel never closes.
                let Some((slot, update)) = received else { return };
                if matches!(slot, Slot::Kind(i) if service_kinds.contains(&i)) && service_tasks.is_none() {
                    // From a watch stopped a moment ago.
                    continue;
                }
                let before = (store.complete(), store.error());
                if let Update::Failed(f) = &update {
                    warn!("kubernetes datastore: {slot:?}: {}; keeping the last good objects", f.message);
                }
                let mut changed = store.update(&slot, update);
                let refers = matches!(slot, Slot::Kind(i) if matches!(store.kind(i).kind, "BGPPeer" | "BGPConfiguration"));
                if changed && refers {
                    let (new, gone) = store.sync_secrets(&store.referenced_secrets());
                    for name in gone {
                        if let Some(task) = secret_tasks.remove(&name) {
                            task.abort();
                        }
                        changed = true;
                    }
                    for name in new {
                        let follower = follow(
                            api(&client, &SECRET, &secrets_namespace),
                            Some(name.clone()),
                            Slot::Secret(name.clone()),
                            tx.clone(),
                        );
                        secret_tasks.insert(name, tasks.spawn(follower));
                    }
                }
                let decide = configurations.is_some_and(|c| slot == Slot::Kind(c) && store.listed(c));
                if decide && (changed || !services_decided) {
                    let wanted = store.advertises_services();
                    if !services_decided || wanted != service_tasks.is_some() {
                        info!("kubernetes datastore: Service advertisement {}: {} Services and EndpointSlices",
                            if wanted { "configured" } else { "not configured" },
                            if wanted { "watching" } else { "not watching" });
                        for task in service_tasks.take().into_iter().flatten() {
                            task.abort();
                        }
                        for &i in &service_kinds {
                            store.set(i, if wanted { KindState::default() } else { KindState::unread() });
                        }
                        if wanted {
                            let follow_kind = |i: usize| {
                                follow(api(&client, store.kind(i), &secrets_namespace), None, Slot::Kind(i), tx.clone())
                            };
                            service_tasks = Some(service_kinds.iter().map(|&i| tasks.spawn(follow_kind(i))).collect());
                        }
                        services_decided = true;
                        changed = true;
                    }
                }
                if changed {
                    pacer.changed(Instant::now());
                }
                // The first complete read, and every change of health (an error,
                // a recovery), are published at once.
                let after = (store.complete(), store.error());
                if after != before {
                    publish(&store, &out);
                    pacer.published();
                }
            }
            _ = alive.tick() => {
                if out.closed() {
                    return;
                }
                // Forget the tasks of Secrets no longer watched.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
