//! Where the model comes from while the daemon runs: a file (watched with inotify), etcd v3
//! (get, then watch) or the Kubernetes API (watchers). Each backend is a task that
//! publishes a [`Feed`] on a `tokio::sync::watch` channel: the datastore's whole
//! content as [`SourceText`]s (and an IPAM store's objects, typed) whenever it
//! changed, and whether the datastore is reachable. The daemon builds its model with
//! [`super::parse_input_memo`]; while the
//! datastore is unreachable the feed keeps the last content read, so the daemon keeps
//! running on its last good model.

mod etcd;
mod file;
mod kubernetes;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{IpamObjects, SourceText};

pub(crate) use etcd::next_events;
pub(crate) use kubernetes::client as kube_client;

/// The `--datastore` argument, parsed: one grammar with `bgpd-ipam`'s
/// (`file:PATH`, `etcd:URL[,URL…][?OPTIONS]`, `kubernetes[:KUBECONFIG]`).
pub use bgpd_model::{DatastoreSpec, SpecError};

/// The namespace a Kubernetes datastore reads BGP passwords' Secrets in:
/// `pod_namespace` (the daemon's `POD_NAMESPACE`) unless empty, else
/// `kube-system`. Not part of the datastore string: only bgpd reads Secrets.
pub fn secrets_namespace(pod_namespace: Option<&str>) -> String {
    pod_namespace.filter(|n| !n.is_empty()).unwrap_or("kube-system").to_string()
}

/// What a datastore task publishes.
#[derive(Clone, Debug, Default)]
pub struct Feed {
    /// The datastore's content as last read completely; `None` until the first
    /// complete read. Replaced (a new `Arc`) only when the content changed.
    pub sources: Option<Arc<Vec<SourceText>>>,
    /// The IPAM store's objects, typed, read with the sources (the file store
    /// beside a file datastore, etcd's IPAM keys; none from Kubernetes, whose
    /// IPAMBlocks are objects among the sources).
    pub ipam: Arc<IpamObjects>,
    /// Per-entry faults the backend dealt with itself (an etcd value that is not
    /// YAML keeps its previous value), for `bgpd show config`.
    pub notes: Vec<String>,
    /// Set while the datastore cannot be read.
    pub unreachable: Option<Unreachable>,
}

/// The datastore cannot be read: since when and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// When the datastore was first found unreachable (this outage).
    pub since: SystemTime,
    /// The last error.
    pub reason: String,
}

/// Publishing side, shared by the backends: changes the feed only when something
/// changed, so the daemon wakes up for real changes only.
pub(crate) struct Publisher {
    tx: watch::Sender<Feed>,
}

impl Publisher {
    /// Publishes new content (and marks the datastore reachable). Content equal to
    /// the last published one only clears the unreachable mark.
    pub(crate) fn content(&self, sources: Vec<SourceText>, ipam: IpamObjects, notes: Vec<String>) {
        self.tx.send_if_modified(|f| {
            let same = f.sources.as_deref() == Some(&sources) && *f.ipam == ipam && f.notes == notes;
            let was_down = f.unreachable.take().is_some();
            if !same {
                // A new `Arc` of sources also when only the IPAM objects changed:
                // the daemon reloads when the sources' `Arc` is new.
                f.sources = Some(Arc::new(sources));
                f.ipam = Arc::new(ipam);
                f.notes = notes;
            }
            !same || was_down
        });
    }

    /// Marks the datastore reachable without new content (e.g. a resync that found
    /// nothing changed is reported through [`Publisher::content`] instead).
    pub(crate) fn reachable(&self) {
        self.tx.send_if_modified(|f| f.unreachable.take().is_some());
    }

    /// Marks the datastore unreachable; the content stays.
    pub(crate) fn unreachable(&self, reason: String) {
        self.tx.send_if_modified(|f| mark_unreachable(f, reason));
    }

    /// Publishes new content read while part of the datastore cannot be read (a
    /// Kubernetes kind whose watch fails, the others still read): the content is
    /// replaced and the datastore marked unreachable at once, in one change.
    pub(crate) fn partial_content(&self, sources: Vec<SourceText>, notes: Vec<String>, reason: String) {
        self.tx.send_if_modified(|f| {
            let same = f.sources.as_deref() == Some(&sources) && f.notes == notes;
            if !same {
                f.sources = Some(Arc::new(sources));
                f.notes = notes;
            }
            mark_unreachable(f, reason) || !same
        });
    }

    /// Whether the daemon has gone (the task can stop).
    pub(crate) fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Marks `f` unreachable for `reason` (keeping when the outage began); returns
/// whether that changed anything.
fn mark_unreachable(f: &mut Feed, reason: String) -> bool {
    match &mut f.unreachable {
        Some(u) if u.reason == reason => false,
        Some(u) => {
            u.reason = reason;
            true
        }
        None => {
            f.unreachable = Some(Unreachable { since: SystemTime::now(), reason });
            true
        }
    }
}

/// Retry delays after a failure: 0.5 s doubling up to 10 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(500))
    }

    /// The next delay.
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
        d
    }
}

/// Starts the datastore task for `spec` and returns the feed it publishes; a
/// Kubernetes datastore reads Secrets in `secrets_namespace`, and the Pods of
/// node `node` (for BGPPeers with localWorkloadSelector), an etcd datastore
/// `node`'s WorkloadEndpoints of Calico's keys. Must be called
/// inside a tokio runtime.
pub fn spawn(spec: &DatastoreSpec, secrets_namespace: &str, node: &str) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed::default());
    let publisher = Publisher { tx };
    match spec.clone() {
        DatastoreSpec::File(path) => {
            tokio::spawn(file::run(path, publisher));
        }
        DatastoreSpec::Etcd { access, prefix, ipam_prefix } => {
            tokio::spawn(etcd::run(access, prefix, ipam_prefix, node.to_string(), publisher));
        }
        DatastoreSpec::Kubernetes { kubeconfig } => {
            let node = Some(node.to_string()).filter(|n| !n.is_empty());
            tokio::spawn(kubernetes::run(kubeconfig, secrets_namespace.to_string(), node, publisher));
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_in_the_pods_namespace_else_kube_system() {
        assert_eq!(secrets_namespace(Some("calico-system")), "calico-system");
        assert_eq!(secrets_namespace(None), "kube-system");
        assert_eq!(secrets_namespace(Some("")), "kube-system");
    }

    #[test]
    fn the_feed_changes_only_on_real_changes() {
        let (tx, mut rx) = watch::channel(Feed::default());
        let p = Publisher { tx };
        let src = || vec![SourceText { path: "a".into(), text: "x: 1".into() }];
        p.content(src(), IpamObjects::default(), vec![]);
        assert!(rx.has_changed().unwrap());
        let first = rx.borrow_and_update().sources.clone().unwrap();
        p.content(src(), IpamObjects::default(), vec![]);
        assert!(!rx.has_changed().unwrap(), "same content is no change");
        p.unreachable("down".into());
        assert!(rx.has_changed().unwrap());
        let since = rx.borrow_and_update().unreachable.clone().unwrap().since;
        p.unreachable("down".into());
        assert!(!rx.has_changed().unwrap(), "the same reason again is no change");
        p.unreachable("still down".into());
        assert_eq!(rx.borrow_and_update().unreachable.clone().unwrap().since, since, "since the outage began");
        p.content(src(), IpamObjects::default(), vec![]);
        let f = rx.borrow_and_update().clone();
        assert!(f.unreachable.is_none());
        assert!(Arc::ptr_eq(&first, f.sources.as_ref().unwrap()), "content kept, not replaced");
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }
}
