//! Where the writer learns this node's CalicoNodeStatus requests, per datastore:
//! the file datastore's feed; on etcd a get and watch of their own of
//! `<prefix>caliconodestatuses/` (which the datastore task leaves out, so that
//! the statuses every node writes neither reach the routing model nor make it
//! reload) and of Calico's own key for the v3 resource,
//! `/calico/resources/v3/projectcalico.org/caliconodestatuses/` (where
//! `calicoctl` with an etcd datastore keeps them); on Kubernetes [`super::follow`]. Each publishes the requests of this
//! node only, parsed one changed object at a time ([`Keeper`]).

use std::sync::Arc;
use std::time::Duration;

use bgpd_etcd::{Access, Client, ConnectOptions, WatchEvent, WatchSpec};
use tokio::sync::watch;
use tracing::{info, warn};

use super::request::{Keeper, Request};
use crate::datastore::live::{next_events, Backoff, Feed};

/// The key directory, under the etcd datastore's prefix, of CalicoNodeStatus
/// objects (Calico's plural, as the other kinds' recommended keys).
pub const ETCD_DIR: &str = "caliconodestatuses/";

/// Whether etcd key `key` under datastore prefix `prefix` is a CalicoNodeStatus
/// object's: read by the node status, not the datastore.
pub fn etcd_owns(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(ETCD_DIR))
}

/// What the writer reads.
pub type Requests = watch::Receiver<Arc<Vec<Request>>>;

/// Publishes `keeper`'s requests when they changed, and logs new problems.
pub(super) fn publish(tx: &watch::Sender<Arc<Vec<Request>>>, keeper: &Keeper) {
    let now = keeper.requests();
    tx.send_if_modified(|r| {
        let changed = **r != now;
        if changed {
            *r = Arc::new(now);
        }
        changed
    });
}

pub(super) fn log(problems: Vec<String>) {
    for p in problems {
        warn!("node status: {p}; not written");
    }
}

/// From the datastore's feed (the file datastore: small, read whole on each
/// change).
pub fn from_feed(node: &str, mut feed: watch::Receiver<Feed>) -> Requests {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let mut keeper = Keeper::new(node);
    tokio::spawn(async move {
        loop {
            let sources = feed.borrow_and_update().sources.clone();
            if let Some(sources) = sources {
                keeper.clear();
                for s in sources.iter() {
                    log(keeper.put(&s.path.to_string_lossy(), &s.text));
                }
                publish(&tx, &keeper);
            }
            if feed.changed().await.is_err() || tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The key directories of CalicoNodeStatus objects on etcd for datastore
/// prefix `prefix`: bgpd's layout, and Calico's.
pub fn etcd_dirs(prefix: &str) -> Vec<String> {
    let mut dirs = vec![format!("{prefix}{ETCD_DIR}")];
    let calico = format!("{}{ETCD_DIR}", ::ipam::store::etcd::RESOURCES_PREFIX);
    if !calico.starts_with(&dirs[0]) && !dirs[0].starts_with(&calico) {
        dirs.push(calico);
    }
    dirs
}

/// From etcd: [`etcd_dirs`], read at one revision and watched, read again
/// after any error.
pub fn from_etcd(node: &str, access: Access, prefix: &str) -> Requests {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let dirs = etcd_dirs(prefix);
    let mut keeper = Keeper::new(node);
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        while !tx.is_closed() {
            let Err(e) = follow_etcd(&access, &dirs, &mut keeper, &tx, &mut backoff).await else { return };
            let delay = backoff.next();
            warn!("node status: reading {} from etcd: {e}; retrying in {delay:?}", dirs.join(" and "));
            tokio::time::sleep(delay).await;
        }
    });
    rx
}

async fn follow_etcd(
    access: &Access,
    dirs: &[String],
    keeper: &mut Keeper,
    tx: &watch::Sender<Arc<Vec<Request>>>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..access.connect_options()
    };
    let client = Client::connect(&access.endpoints, opts).await.map_err(|e| format!("connect: {e}"))?;
    let mut revision = None;
    let mut kvs = Vec::new();
    for dir in dirs {
        // One revision for all: a consistent read.
        let snapshot = client.get_prefix(dir.as_str(), revision).await.map_err(|e| format!("get of {dir}: {e}"))?;
        revision = Some(snapshot.revision);
        kvs.extend(snapshot.kvs);
    }
    let revision = revision.unwrap_or_default();
    keeper.clear();
    for kv in &kvs {
        log(keeper.put(&String::from_utf8_lossy(&kv.key), &String::from_utf8_lossy(&kv.value)));
    }
    publish(tx, keeper);
    info!(objects = kvs.len(), revision, "node status: CalicoNodeStatus objects read from etcd");
    *backoff = Backoff::new();
    let (first, rest) = dirs.split_first().ok_or("no key directory")?;
    let spec = WatchSpec::prefix(first.as_str()).from_revision(revision + 1);
    let (mut stream, _) = client.watch(spec).await.map_err(|e| format!("watch: {e}"))?;
    for dir in rest {
        let spec = WatchSpec::prefix(dir.as_str()).from_revision(revision + 1);
        stream.create(spec).await.map_err(|e| format!("watch of {dir}: {e}"))?;
    }
    while let Some(events) = next_events(&mut stream, || tx.is_closed()).await? {
        for ev in events {
            match ev {
                WatchEvent::Put(kv) => {
                    log(keeper.put(&String::from_utf8_lossy(&kv.key), &String::from_utf8_lossy(&kv.value)))
                }
                WatchEvent::Delete(kv) => keeper.delete(&String::from_utf8_lossy(&kv.key)),
            }
        }
        publish(tx, keeper);
    }
    Ok(())
}
