//! Following one collection: list it (in pages), then watch it from the list's
//! resourceVersion, for as long as the task runs. What happens is reported as
//! [`Update`]s, including what kube's `watcher` does not say: that a watch is
//! established again after a failure (so a quiet kind is known to be healthy).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use tokio::sync::mpsc;
use tracing::debug;

use super::super::Backoff;
use super::Slot;

/// Objects per list page (the API server's default limit is unbounded; kube's
/// watcher uses 500).
pub(super) const PAGE: u32 = 500;

/// A watch that ends sooner than this, having delivered nothing, counts as a
/// failure for the backoff (a server that accepts watches and drops them at once
/// is not asked again in a tight loop).
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// How long a watch has to refuse before it counts as established (a refusal
/// comes with the response, in the same packet or the next).
const ACCEPTED: Duration = Duration::from_millis(250);

/// Why a collection could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Failure {
    /// The API's status code, when the API server answered.
    pub(super) code: Option<u16>,
    pub(super) message: String,
}

impl Failure {
    fn from_kube(e: &kube::Error) -> Failure {
        match e {
            kube::Error::Api(s) => Failure { code: Some(s.code), message: e.to_string() },
            _ => Failure { code: None, message: e.to_string() },
        }
    }
}

/// What happened to a collection.
#[derive(Debug)]
pub(super) enum Update {
    /// A complete list: every object there is now.
    Listed(Vec<DynamicObject>),
    /// A watch is established from the last list or event: nothing was missed.
    Watching,
    Applied(DynamicObject),
    Deleted(DynamicObject),
    /// A list or a watch could not be made; it is retried after a backoff.
    Failed(Failure),
}

/// Every object of the collection (of the one named `name`, if given) and the
/// resourceVersion the list was read at.
async fn list(api: &Api<DynamicObject>, name: Option<&str>) -> Result<(Vec<DynamicObject>, String), Failure> {
    let mut params = ListParams::default().limit(PAGE);
    if let Some(name) = name {
        params = params.fields(&format!("metadata.name={name}"));
    }
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| Failure::from_kube(&e))?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => {
                let version = page.metadata.resource_version.filter(|v| !v.is_empty());
                let version = version
                    .ok_or_else(|| Failure { code: None, message: "the list came without a resourceVersion".into() })?;
                return Ok((items, version));
            }
        }
    }
}

/// Moves `version` to `o`'s, if it has one.
fn seen(o: &DynamicObject, version: &mut String) {
    if let Some(v) = o.metadata.resource_version.as_ref().filter(|v| !v.is_empty()) {
        v.clone_into(version);
    }
}

/// How a watch ended.
enum Ended {
    /// Its resourceVersion is gone (410): list again.
    Gone,
    /// It ended (a timeout, a connection reset, an error event): watch again
    /// from the last version seen. `delivered`: whether anything came.
    Again { delivered: bool },
    /// Nobody listens any more.
    Closed,
}

/// Lists and watches the collection of `api` (the object `name` only, if given)
/// until the receiving side of `tx` is gone, sending what happens as `slot`.
pub(super) async fn follow(
    api: Api<DynamicObject>,
    name: Option<String>,
    slot: Slot,
    tx: mpsc::UnboundedSender<(Slot, Update)>,
) {
    let send = |u: Update| tx.send((slot.clone(), u)).is_ok();
    let mut backoff = Backoff::new();
    'list: loop {
        let (objects, mut version) = match list(&api, name.as_deref()).await {
            Ok(listed) => listed,
            Err(f) => {
                if !send(Update::Failed(f)) {
                    return;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        if !send(Update::Listed(objects)) {
            return;
        }
        backoff = Backoff::new();
        loop {
            let mut params = WatchParams::default();
            if let Some(name) = &name {
                params = params.fields(&format!("metadata.name={name}"));
            }
            let started = Instant::now();
            let mut stream = match api.watch(&params, &version).await {
                Ok(s) => s.boxed(),
                Err(kube::Error::Api(s)) if s.code == 410 => continue 'list,
                Err(e) => {
                    if !send(Update::Failed(Failure::from_kube(&e))) {
                        return;
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            // kube hands a refused watch over as a stream whose first item is the
            // refusal (the response's status is not checked): the watch counts as
            // established once something else comes, or nothing within ACCEPTED.
            let first = match tokio::time::timeout(ACCEPTED, stream.next()).await {
                Ok(Some(Err(kube::Error::Api(s)))) if s.code == 410 => continue 'list,
                Ok(Some(Err(e))) => {
                    if !send(Update::Failed(Failure::from_kube(&e))) {
                        return;
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
                Ok(None) => {
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
                Ok(Some(Ok(event))) => Some(Ok(event)),
                Err(_) => None,
            };
            if !send(Update::Watching) {
                return;
            }
            let stream = futures::stream::iter(first).chain(stream).boxed();
            match watch(stream, &mut version, &send).await {
                Ended::Gone => continue 'list,
                Ended::Closed => return,
                Ended::Again { delivered } if delivered || started.elapsed() >= SHORT_WATCH => {
                    backoff = Backoff::new();
                }
                Ended::Again { .. } => tokio::time::sleep(backoff.next()).await,
            }
        }
    }
}

/// Reads one watch to its end, keeping `version` at the last one seen (events
/// and bookmarks).
async fn watch(
    mut stream: futures::stream::BoxStream<'_, kube::Result<WatchEvent<DynamicObject>>>,
    version: &mut String,
    send: &impl Fn(Update) -> bool,
) -> Ended {
    let mut delivered = false;
    while let Some(event) = stream.next().await {
        let sent = match event {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                seen(&o, version);
                send(Update::Applied(o))
            }
            Ok(WatchEvent::Deleted(o)) => {
                seen(&o, version);
                send(Update::Deleted(o))
            }
            Ok(WatchEvent::Bookmark(b)) => {
                *version = b.metadata.resource_version;
                true
            }
            // The version is compacted away, or the API server's watch cache
            // lost it: kube/kubernetes API conventions say list again.
            Ok(WatchEvent::Error(e)) if e.code == 410 => return Ended::Gone,
            Ok(WatchEvent::Error(e)) => {
                let failure = Failure { code: Some(e.code), message: format!("watch: {}", e.message) };
                return if send(Update::Failed(failure)) { Ended::Again { delivered } } else { Ended::Closed };
            }
            Err(kube::Error::Api(e)) if e.code == 410 => return Ended::Gone,
            Err(kube::Error::Api(e)) => {
                let failure = Failure { code: Some(e.code), message: format!("watch: {}", e.message) };
                return if send(Update::Failed(failure)) { Ended::Again { delivered } } else { Ended::Closed };
            }
            Err(e) => {
                // A connection reset or a body cut short: watch again from the
                // last version; only a refused watch is a failure.
                debug!("kubernetes datastore: watch ended: {e}");
                return Ended::Again { delivered };
            }
        };
        if !sent {
            return Ended::Closed;
        }
        delivered = true;
    }
    Ended::Again { delivered }
}
