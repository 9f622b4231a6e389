//! Following one collection: list it (in pages), then watch it from the list's
//! resourceVersion, for as long as the task runs. What happens is reported as
//! [`Update`]s, including what kube's `watcher` does not say: that a watch is
//! established again after a failure (so a quiet kind is known to be healthy).
//!
//! A request refused with `429 Too Many Requests` (API priority and fairness
//! shedding load) is not made again before the API server's `Retry-After`, nor
//! before the backoff. kube 2.0.1 hands neither the header nor the Status's
//! `details.retryAfterSeconds` over (`kube::Error::Api` keeps the code and the
//! message only) and retries nothing itself, so lists are sent here through
//! `Client::send` to read them; a refused watch (whose answer kube reads as the
//! first item of the stream) waits at least [`THROTTLED`] and the backoff.
//!
//! A kind read as metadata only ([`Read::Metadata`]) is listed and watched as
//! `PartialObjectMetadata`, through the same requests kube's `list_metadata` and
//! `watch_metadata` make: its objects then come as their `metadata` alone, which
//! is all the conversion of such a kind reads.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, ObjectList, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::super::Backoff;
use super::kinds::Read;
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

/// How long a request refused with 429 waits at least when the API server's
/// `Retry-After` is not known (a refused watch): the least the API server's
/// priority and fairness filter asks for.
const THROTTLED: Duration = Duration::from_secs(1);

/// The longest `Retry-After` taken as given; a longer one (a misconfigured
/// proxy) waits this long, so a kind is never left unread for hours.
const MOST_RETRY_AFTER: Duration = Duration::from_secs(60);

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

    fn local(message: String) -> Failure {
        Failure { code: None, message }
    }

    /// How long to wait before the next request, given the `backoff`'s turn
    /// and what the API server asked (`Retry-After`, RFC 9110 §10.2.3), if it
    /// said: the longer of them; at least [`THROTTLED`] after a 429 that did not.
    fn wait(&self, retry_after: Option<Duration>, backoff: &mut Backoff) -> Duration {
        let asked = match (retry_after, self.code) {
            (Some(asked), _) => asked.min(MOST_RETRY_AFTER),
            (None, Some(429)) => THROTTLED,
            (None, _) => Duration::ZERO,
        };
        backoff.next().max(asked)
    }
}

/// A refused list: why, and the wait the API server asked for, if it did.
struct Refused {
    failure: Failure,
    retry_after: Option<Duration>,
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Refused {
        Refused { failure, retry_after: None }
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

/// One page of a list, as `Api::list` (`Api::list_metadata` for `read`
/// [`Read::Metadata`]) asks for it, with what kube does not keep of a refusal:
/// the `Retry-After` header (delay-seconds), else the Status's
/// `details.retryAfterSeconds`.
async fn list_page(
    api: &Api<DynamicObject>,
    read: Read,
    params: &ListParams,
) -> Result<ObjectList<DynamicObject>, Refused> {
    let request = kube::core::Request::new(api.resource_url());
    let request = match read {
        Read::Objects => request.list(params),
        Read::Metadata => request.list_metadata(params),
    };
    let request = request.map_err(|e| Failure::local(format!("a list request: {e}")))?;
    let client = api.clone().into_client();
    let response = client.send(request.map(kube::client::Body::from)).await.map_err(|e| Failure::from_kube(&e))?;
    let code = response.status().as_u16();
    let header =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let body = response.into_body().collect_bytes().await.map_err(|e| Failure::from_kube(&e))?;
    if (200..300).contains(&code) {
        return serde_json::from_slice(&body).map_err(|e| Failure::local(format!("a list: {e}")).into());
    }
    let status: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |f: &str| status.as_ref().and_then(|s| s[f].as_str()).unwrap_or_default().to_string();
    let seconds = header.or_else(|| status.as_ref().and_then(|s| s["details"]["retryAfterSeconds"].as_u64()));
    let message = match field("message") {
        m if m.is_empty() => format!("{code}: {}", String::from_utf8_lossy(&body).trim()),
        m => format!("{m}: {}", field("reason")),
    };
    Err(Refused { failure: Failure { code: Some(code), message }, retry_after: seconds.map(Duration::from_secs) })
}

/// Every object of the collection (those the field selector `fields` selects,
/// if given) and the resourceVersion the list was read at.
async fn list(
    api: &Api<DynamicObject>,
    read: Read,
    fields: Option<&str>,
) -> Result<(Vec<DynamicObject>, String), Refused> {
    let mut params = ListParams::default().limit(PAGE);
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let mut items = Vec::new();
    loop {
        let page = list_page(api, read, &params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => {
                let version = page.metadata.resource_version.filter(|v| !v.is_empty());
                let version =
                    version.ok_or_else(|| Failure::local("the list came without a resourceVersion".into()))?;
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

/// A watch of the collection of `api` from `version`, as `Api::watch` (or
/// `Api::watch_metadata`, for `read` [`Read::Metadata`]) makes it.
async fn watch_request(
    api: &Api<DynamicObject>,
    read: Read,
    params: &WatchParams,
    version: &str,
) -> kube::Result<futures::stream::BoxStream<'static, kube::Result<WatchEvent<DynamicObject>>>> {
    let request = kube::core::Request::new(api.resource_url());
    let request = match read {
        Read::Objects => request.watch(params, version),
        Read::Metadata => request.watch_metadata(params, version),
    };
    let request = request.map_err(kube::Error::BuildRequest)?;
    // A `PartialObjectMetadata` reads as a `DynamicObject` without its data.
    let events = api.clone().into_client().request_events::<DynamicObject>(request).await?;
    Ok(events.boxed())
}

/// Reports `failure` and waits before the next attempt, as [`Failure::wait`]
/// says; false when nobody receives updates any more.
async fn failed(
    send: &impl Fn(Update) -> bool,
    failure: Failure,
    retry_after: Option<Duration>,
    backoff: &mut Backoff,
) -> bool {
    let delay = failure.wait(retry_after, backoff);
    if !send(Update::Failed(failure)) {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

/// Lists and watches the collection of `api` (the objects the field selector
/// `fields` selects only, if given: `metadata.name=NAME`, `spec.nodeName=NODE`;
/// as `read` says) until the receiving side of `tx` is gone, sending what
/// happens as `slot`.
pub(super) async fn follow(
    api: Api<DynamicObject>,
    read: Read,
    fields: Option<String>,
    slot: Slot,
    tx: mpsc::UnboundedSender<(Slot, Update)>,
) {
    let send = |u: Update| tx.send((slot.clone(), u)).is_ok();
    let mut backoff = Backoff::new();
    'list: loop {
        let (objects, mut version) = match list(&api, read, fields.as_deref()).await {
            Ok(listed) => listed,
            Err(Refused { failure, retry_after }) => {
                if !failed(&send, failure, retry_after, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        if !send(Update::Listed(objects)) {
            return;
        }
        backoff = Backoff::new();
        loop {
            let mut params = WatchParams::default();
            if let Some(fields) = &fields {
                params = params.fields(fields);
            }
            let started = Instant::now();
            let mut stream = match watch_request(&api, read, &params, &version).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 410 => continue 'list,
                Err(e) => {
                    if !failed(&send, Failure::from_kube(&e), None, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            // kube hands a refused watch over as a stream whose first item is the
            // refusal (the response's status is not checked): the watch counts as
            // established once something else comes, or nothing within ACCEPTED.
            let first = match tokio::time::timeout(ACCEPTED, stream.next()).await {
                Ok(Some(Err(kube::Error::Api(s)))) if s.code == 410 => continue 'list,
                Ok(Some(Err(e))) => {
                    if !failed(&send, Failure::from_kube(&e), None, &mut backoff).await {
                        return;
                    }
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
