//! What has been read of each watched collection, and what to publish from it.
//! Plain data driven by [`Update`]s: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use serde_json::Value;

use super::convert::{convert, routing_reads, with_floating_ips, Converted};
use super::follow::{Failure, Update};
use super::kinds::{optional, Watched, SECRET};
use super::Slot;
use crate::datastore::SourceText;

/// One object as the model will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    text: String,
    note: Option<String>,
}

/// One watched collection.
#[derive(Debug, Default)]
pub(super) struct KindState {
    /// The objects by key, as last listed and watched; `None` until the first
    /// list. Kept through every error: only a list replaces them.
    objects: Option<BTreeMap<String, Held>>,
    /// Why the collection cannot be read now; cleared when a list succeeds or a
    /// watch is established again.
    error: Option<String>,
    /// Why the collection counts as empty without being read.
    note: Option<String>,
}

/// An object's key and what the model reads of it; `None` as the latter when
/// routing reads nothing of it ([`routing_reads`]: it is not held, and an update
/// that makes it so removes it).
fn held(w: &Watched, obj: &DynamicObject) -> Option<(String, Option<Held>)> {
    let v = with_floating_ips(w, serde_json::to_value(obj).ok()?);
    let Converted { key, object, note } = convert(w, &v)?;
    Some((key, routing_reads(w, &v).then(|| Held { text: object.to_string(), note })))
}

impl KindState {
    /// A kind the cluster does not serve and bgpd can do without: no objects.
    pub(super) fn absent(note: String) -> KindState {
        KindState { objects: Some(BTreeMap::new()), error: None, note: Some(note) }
    }

    /// A kind bgpd does not read now (nothing needs it): no objects.
    pub(super) fn unread() -> KindState {
        KindState { objects: Some(BTreeMap::new()), error: None, note: None }
    }

    /// Takes one update of the collection of `w` (the Secret `secret` of
    /// namespace `ns` for a Secret's watch); returns whether the objects changed.
    pub(super) fn update(&mut self, w: &Watched, secret: Option<(&str, &str)>, u: Update) -> bool {
        match u {
            Update::Listed(list) => {
                self.error = None;
                self.note = None;
                let objects: BTreeMap<String, Held> =
                    list.iter().filter_map(|o| held(w, o)).filter_map(|(k, h)| Some((k, h?))).collect();
                let changed = self.objects.as_ref() != Some(&objects);
                self.objects = Some(objects);
                changed
            }
            Update::Watching => {
                self.error = None;
                false
            }
            Update::Applied(o) => {
                self.error = None;
                match (self.objects.as_mut(), held(w, &o)) {
                    (Some(m), Some((k, Some(h)))) => m.insert(k, h.clone()).as_ref() != Some(&h),
                    (Some(m), Some((k, None))) => m.remove(&k).is_some(),
                    _ => false,
                }
            }
            Update::Deleted(o) => {
                self.error = None;
                match (self.objects.as_mut(), held(w, &o)) {
                    (Some(m), Some((k, _))) => m.remove(&k).is_some(),
                    _ => false,
                }
            }
            Update::Failed(f) => self.failed(w, secret, &f),
        }
    }

    /// A failed list or watch. The objects stay, whatever the failure (a 404 too:
    /// after an API server restart a served kind can answer 404 for a while,
    /// kubernetes/kubernetes #71218), and the kind is in error until it is read
    /// again. Only a 403 on an optional kind or on a Secret means "none", with a
    /// note: the ClusterRole predates the kind, or the Role does not name the
    /// Secret (the peer that needs it reports its password as not found).
    fn failed(&mut self, w: &Watched, secret: Option<(&str, &str)>, f: &Failure) -> bool {
        if f.code == Some(403) && (optional(w) || secret.is_some()) {
            let was_empty = self.objects.as_ref().is_some_and(BTreeMap::is_empty);
            self.objects = Some(BTreeMap::new());
            self.error = None;
            self.note = Some(match secret {
                Some((ns, name)) => format!(
                    "Secret {ns}/{name} is not granted to bgpd (add {name:?} to the resourceNames of its Role in \
                     {ns}); its passwords cannot be read"
                ),
                None => format!("{} is not granted to bgpd's ClusterRole; none read", w.name()),
            });
            return !was_empty;
        }
        let kept = match &self.objects {
            Some(m) => format!("; keeping the {} objects last read", m.len()),
            None => String::new(),
        };
        self.error = Some(format!("{}: {}{kept}", w.name(), f.message));
        false
    }
}

/// The text of an IPAMBlock marked `deleted` when its affinity is in
/// `releasing` (its node's release has begun: withdrawn now, as on the file and
/// etcd datastores); `None` when it is not.
fn released(text: &str, releasing: &BTreeSet<(String, String)>) -> Option<String> {
    let mut v: Value = serde_json::from_str(text).ok()?;
    let node = v["spec"]["affinity"].as_str()?.strip_prefix("host:")?.to_string();
    let cidr = v["spec"]["cidr"].as_str()?.to_string();
    if !releasing.contains(&(node, cidr)) {
        return None;
    }
    v["spec"]["deleted"] = Value::Bool(true);
    Some(v.to_string())
}

/// What can be published.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum View {
    /// A collection has not been listed yet; the error, if one is failing.
    Waiting(Option<String>),
    /// Everything listed: the content, the notes, and the error of a collection
    /// that cannot be read now (its last objects are in the content).
    Ready { sources: Vec<SourceText>, notes: Vec<String>, error: Option<String> },
}

/// Every watched collection: the kinds, and the Secrets referenced for passwords.
#[derive(Debug)]
pub(super) struct Store {
    kinds: Vec<(Watched, KindState)>,
    secrets: BTreeMap<String, KindState>,
    secrets_namespace: String,
}

impl Store {
    pub(super) fn new(kinds: &[Watched], secrets_namespace: &str) -> Store {
        Store {
            kinds: kinds.iter().map(|w| (*w, KindState::default())).collect(),
            secrets: BTreeMap::new(),
            secrets_namespace: secrets_namespace.into(),
        }
    }

    /// The kind at `i`.
    pub(super) fn kind(&self, i: usize) -> &Watched {
        &self.kinds[i].0
    }

    /// Replaces the state of the kind at `i` (one that is not watched).
    pub(super) fn set(&mut self, i: usize, state: KindState) {
        self.kinds[i].1 = state;
    }

    /// Whether the kind at `i` has been listed.
    pub(super) fn listed(&self, i: usize) -> bool {
        self.kinds[i].1.objects.is_some()
    }

    /// Whether a BGPConfiguration advertises Service addresses
    /// (`serviceClusterIPs`, `serviceExternalIPs` or `serviceLoadBalancerIPs`):
    /// only then are Services and EndpointSlices read.
    pub(super) fn advertises_services(&self) -> bool {
        let configurations = self.kinds.iter().filter(|(w, _)| w.is_calico() && w.kind == "BGPConfiguration");
        configurations.flat_map(|(_, k)| k.objects.iter().flat_map(BTreeMap::values)).any(|h| {
            let Ok(v) = serde_json::from_str::<Value>(&h.text) else { return false };
            ["serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"]
                .iter()
                .any(|field| v["spec"][field].as_array().is_some_and(|a| !a.is_empty()))
        })
    }

    /// Whether a BGPPeer has `localWorkloadSelector`: only then are this
    /// node's Pods read.
    pub(super) fn peers_local_workloads(&self) -> bool {
        let peers = self.kinds.iter().filter(|(w, _)| w.is_calico() && w.kind == "BGPPeer");
        peers.flat_map(|(_, k)| k.objects.iter().flat_map(BTreeMap::values)).any(|h| {
            let Ok(v) = serde_json::from_str::<Value>(&h.text) else { return false };
            v["spec"]["localWorkloadSelector"].as_str().is_some_and(|s| !s.is_empty())
        })
    }

    /// Takes an update from `slot`; returns whether the content changed. Updates
    /// of a Secret no longer watched are ignored.
    pub(super) fn update(&mut self, slot: &Slot, u: Update) -> bool {
        match slot {
            Slot::Kind(i) => {
                let (w, state) = &mut self.kinds[*i];
                state.update(w, None, u)
            }
            Slot::Secret(name) => match self.secrets.get_mut(name) {
                Some(state) => state.update(&SECRET, Some((&self.secrets_namespace, name)), u),
                None => false,
            },
        }
    }

    fn all(&self) -> impl Iterator<Item = &KindState> {
        self.kinds.iter().map(|(_, k)| k).chain(self.secrets.values())
    }

    /// Whether every collection has been listed.
    pub(super) fn complete(&self) -> bool {
        self.all().all(|k| k.objects.is_some())
    }

    /// The first error of a collection that cannot be read now.
    pub(super) fn error(&self) -> Option<String> {
        self.all().find_map(|k| k.error.clone())
    }

    pub(super) fn view(&self) -> View {
        if !self.complete() {
            return View::Waiting(self.error());
        }
        let releasing = self.releasing();
        let mut sources = Vec::new();
        let mut notes = Vec::new();
        for (w, k) in self.kinds.iter().map(|(w, k)| (Some(w), k)).chain(self.secrets.values().map(|k| (None, k))) {
            notes.extend(k.note.clone());
            // Affinities are not objects of the model: they mark blocks.
            if w.is_some_and(|w| w.is_calico() && w.kind == "BlockAffinity") {
                continue;
            }
            let blocks = w.is_some_and(|w| w.is_calico() && w.kind == "IPAMBlock");
            for (key, h) in k.objects.iter().flatten() {
                let text = match blocks && !releasing.is_empty() {
                    true => released(&h.text, &releasing).unwrap_or_else(|| h.text.clone()),
                    false => h.text.clone(),
                };
                sources.push(SourceText { path: key.into(), text });
                notes.extend(h.note.clone());
            }
        }
        View::Ready { sources, notes, error: self.error() }
    }

    /// (node, CIDR) of every BlockAffinity held (those in state
    /// `pendingDeletion`: a release in progress).
    fn releasing(&self) -> BTreeSet<(String, String)> {
        let affinities = self.kinds.iter().filter(|(w, _)| w.is_calico() && w.kind == "BlockAffinity");
        affinities
            .flat_map(|(_, k)| k.objects.iter().flat_map(BTreeMap::values))
            .filter_map(|h| {
                let v: Value = serde_json::from_str(&h.text).ok()?;
                Some((v["spec"]["node"].as_str()?.to_string(), v["spec"]["cidr"].as_str()?.to_string()))
            })
            .collect()
    }

    /// The names of the Secrets that BGPPeers (`spec.password`) and BGPConfigurations
    /// (`spec.nodeMeshPassword`) refer to, read from their converted objects.
    pub(super) fn referenced_secrets(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (w, k) in &self.kinds {
            let field = match (w.is_calico(), w.kind) {
                (true, "BGPPeer") => "password",
                (true, "BGPConfiguration") => "nodeMeshPassword",
                _ => continue,
            };
            for h in k.objects.iter().flat_map(BTreeMap::values) {
                let Ok(v) = serde_json::from_str::<Value>(&h.text) else { continue };
                if let Some(name) = v["spec"][field]["secretKeyRef"]["name"].as_str() {
                    names.insert(name.to_string());
                }
            }
        }
        names
    }

    /// Makes the watched Secrets `wanted`: returns the names to start watching and
    /// those to stop watching (forgotten here already).
    pub(super) fn sync_secrets(&mut self, wanted: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let gone: Vec<String> = self.secrets.keys().filter(|n| !wanted.contains(*n)).cloned().collect();
        for name in &gone {
            self.secrets.remove(name);
        }
        let new: Vec<String> = wanted.iter().filter(|n| !self.secrets.contains_key(*n)).cloned().collect();
        for name in &new {
            self.secrets.insert(name.clone(), KindState::default());
        }
        (new, gone)
    }
}
