//! etcd's bidirectional Watch stream: the client sends create, cancel and
//! progress requests; etcd answers each create, then sends events, progress and
//! cancellations of the stream's watches, each tagged with its watch ID.
//!
//! [`Watch::create`] waits for etcd's answer to its create request (creates are
//! answered in order on a stream, so the next `created` answer is its own, and
//! etcd assigns the ID); messages about other watches that arrive meanwhile are
//! kept for [`Watch::next`].

use std::collections::VecDeque;
use std::fmt;

use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic_prost::ProstCodec;

use crate::client::{with_token, Client};
use crate::error::{chain, Call, Error};
use crate::prefix::prefix_range;
use crate::wire::{
    event::EventType, watch_request::RequestUnion, Event, KeyValue, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};

/// What to watch: every key under a prefix, from a revision on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// The key prefix (see [`crate::prefix_range`]).
    pub prefix: Vec<u8>,
    /// The first revision whose changes are sent (inclusive); `None`: the
    /// changes from now on.
    pub start_revision: Option<i64>,
    /// Have etcd send [`WatchMessage::Progress`] now and then while nothing
    /// changes.
    pub progress_notify: bool,
}

impl WatchSpec {
    /// Every key under `prefix`, from now on.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> WatchSpec {
        WatchSpec { prefix: prefix.into(), start_revision: None, progress_notify: false }
    }

    /// The same watch from `revision` on (inclusive).
    pub fn from_revision(self, revision: i64) -> WatchSpec {
        WatchSpec { start_revision: Some(revision), ..self }
    }

    fn request(&self) -> WatchRequest {
        let (key, range_end) = prefix_range(self.prefix.clone());
        let create = WatchCreateRequest {
            key,
            range_end,
            start_revision: self.start_revision.unwrap_or(0),
            progress_notify: self.progress_notify,
            prev_kv: false,
        };
        WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }
    }
}

/// The ID etcd gave a watch of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub i64);

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch {}", self.0)
    }
}

/// One change of a watched key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written: its new value and revisions.
    Put(KeyValue),
    /// The key was deleted: the key and the delete's revision (`mod_revision`).
    Delete(KeyValue),
}

impl WatchEvent {
    /// The key-value of the event.
    pub fn kv(&self) -> &KeyValue {
        match self {
            WatchEvent::Put(kv) | WatchEvent::Delete(kv) => kv,
        }
    }
}

/// What a Watch stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes of one watch's keys, in revision order (when a watch catches up
    /// from an old start revision, one message may hold the changes of many).
    Events {
        /// The watch.
        watch_id: WatchId,
        /// The store's revision when etcd sent them (each change's own revision
        /// is its key-value's `mod_revision`).
        revision: i64,
        /// The changes, in order.
        events: Vec<WatchEvent>,
    },
    /// Nothing changed up to `revision` (an answer to
    /// [`Watch::request_progress`], or a [`WatchSpec::progress_notify`]).
    Progress {
        /// The watch, or `None` for the whole stream.
        watch_id: Option<WatchId>,
        /// The revision every change before which was sent.
        revision: i64,
    },
    /// etcd cancelled a watch: no more messages come for it.
    Cancelled(Cancellation),
}

/// Why a watch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancellation {
    /// The watch.
    pub watch_id: WatchId,
    /// Set when the watch's start revision is older than the history etcd keeps:
    /// the revision it was compacted at (start again from a fresh read).
    pub compact_revision: Option<i64>,
    /// etcd's reason, when it gives one.
    pub reason: Option<String>,
}

impl Cancellation {
    fn of(resp: &WatchResponse) -> Cancellation {
        Cancellation {
            watch_id: WatchId(resp.watch_id),
            compact_revision: (resp.compact_revision != 0).then_some(resp.compact_revision),
            reason: (!resp.cancel_reason.is_empty()).then(|| resp.cancel_reason.clone()),
        }
    }
}

impl fmt::Display for Cancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cancelled", self.watch_id)?;
        match (&self.compact_revision, &self.reason) {
            (Some(c), Some(r)) => write!(f, ": history compacted at revision {c} ({r})"),
            (Some(c), None) => write!(f, ": history compacted at revision {c}"),
            (None, Some(r)) => write!(f, ": {r}"),
            (None, None) => Ok(()),
        }
    }
}

/// An open Watch stream: create watches on it, read their messages. Dropping it
/// closes the stream, which ends its watches.
pub struct Watch {
    client: Client,
    /// The endpoint the stream goes to: its index (for failover) and URL.
    index: usize,
    endpoint: String,
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
    /// Messages that arrived while [`Watch::create`] waited for its answer.
    pending: VecDeque<WatchMessage>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.endpoint)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Opens a stream on the client's current endpoint with `first` as its
    /// first watch, sending `token` (etcd checks it at each create).
    pub(crate) async fn open(
        client: Client,
        first: WatchSpec,
        token: Option<AsciiMetadataValue>,
    ) -> Result<(Watch, WatchId), Error> {
        let (index, endpoint) = client.endpoint();
        let url = endpoint.url.clone();
        let mut grpc = client.grpc(endpoint);
        // etcd answers (and so sends its response headers) only once it has a
        // request: the first create goes out with the stream.
        let (requests, rx) = mpsc::channel(16);
        let closed = |_| Error::Transport { call: Call::Watch, endpoint: url.clone(), reason: "stream closed".into() };
        requests.send(first.request()).await.map_err(closed)?;
        let limit = client.request_timeout();
        let opened = tokio::time::timeout(limit, async {
            grpc.ready().await.map_err(|e| Error::Transport {
                call: Call::Watch,
                endpoint: url.clone(),
                reason: chain(&e),
            })?;
            // Every call has a path; "/" is never sent.
            let path = PathAndQuery::from_static(Call::Watch.path().unwrap_or("/"));
            let codec = ProstCodec::<WatchRequest, WatchResponse>::default();
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            with_token(request.metadata_mut(), token.as_ref());
            grpc.streaming(request, path, codec).await.map_err(|s| Error::from_status(Call::Watch, &url, &s))
        })
        .await;
        let responses = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => return Err(client.failed(index, e)),
            Err(_) => {
                return Err(client.failed(index, Error::Timeout { call: Call::Watch, endpoint: url, after: limit }))
            }
        };
        let mut watch = Watch { client, index, endpoint: url, requests, responses, pending: VecDeque::new() };
        let id = watch.created().await?;
        Ok((watch, id))
    }

    /// Creates another watch on the stream; waits (at most the request timeout)
    /// for etcd's answer. Fails with [`Error::WatchCancelled`] when etcd refuses
    /// the watch.
    pub async fn create(&mut self, spec: WatchSpec) -> Result<WatchId, Error> {
        self.send(spec.request()).await?;
        self.created().await
    }

    /// Asks etcd to cancel `watch`; its [`WatchMessage::Cancelled`] follows.
    pub async fn cancel(&mut self, watch: WatchId) -> Result<(), Error> {
        let cancel = WatchCancelRequest { watch_id: watch.0 };
        self.send(WatchRequest { request_union: Some(RequestUnion::CancelRequest(cancel)) }).await
    }

    /// Asks etcd for the revision the stream's watches have reached; a
    /// [`WatchMessage::Progress`] follows (etcd ≥ 3.4).
    pub async fn request_progress(&mut self) -> Result<(), Error> {
        let progress = WatchProgressRequest {};
        self.send(WatchRequest { request_union: Some(RequestUnion::ProgressRequest(progress)) }).await
    }

    /// The next message of the stream; `None` once etcd closed it. Cancel-safe:
    /// dropping the future (in a `select!`) loses no message.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, Error> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        loop {
            let resp = match self.responses.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Ok(None),
                Err(s) => return Err(self.failed(Error::from_status(Call::Watch, &self.endpoint, &s))),
            };
            if let Some(m) = self.message(resp)? {
                return Ok(Some(m));
            }
        }
    }

    async fn send(&mut self, request: WatchRequest) -> Result<(), Error> {
        if self.requests.send(request).await.is_err() {
            let e =
                Error::Transport { call: Call::Watch, endpoint: self.endpoint.clone(), reason: "stream closed".into() };
            return Err(self.failed(e));
        }
        Ok(())
    }

    /// Waits for etcd's answer to the create request just sent.
    async fn created(&mut self) -> Result<WatchId, Error> {
        let limit = self.client.request_timeout();
        let deadline = Instant::now() + limit;
        loop {
            let resp = match tokio::time::timeout_at(deadline, self.responses.message()).await {
                Ok(Ok(Some(resp))) => resp,
                Ok(Ok(None)) => {
                    let reason = "etcd closed the stream before it created the watch".into();
                    return Err(self.failed(Error::Transport {
                        call: Call::Watch,
                        endpoint: self.endpoint.clone(),
                        reason,
                    }));
                }
                Ok(Err(s)) => return Err(self.failed(Error::from_status(Call::Watch, &self.endpoint, &s))),
                Err(_) => {
                    let e = Error::Timeout { call: Call::Watch, endpoint: self.endpoint.clone(), after: limit };
                    return Err(self.failed(e));
                }
            };
            if resp.created {
                if resp.canceled {
                    return Err(Error::WatchCancelled(Cancellation::of(&resp)));
                }
                return Ok(WatchId(resp.watch_id));
            }
            if let Some(m) = self.message(resp)? {
                self.pending.push_back(m);
            }
        }
    }

    fn message(&self, resp: WatchResponse) -> Result<Option<WatchMessage>, Error> {
        message(resp).map_err(|what| Error::Malformed { call: Call::Watch, endpoint: self.endpoint.clone(), what })
    }

    fn failed(&self, e: Error) -> Error {
        self.client.failed(self.index, e)
    }
}

/// What an answer on the stream means; `None` for an answer to a create that
/// [`Watch::create`] stopped waiting for.
fn message(resp: WatchResponse) -> Result<Option<WatchMessage>, String> {
    if resp.canceled || resp.compact_revision != 0 {
        return Ok(Some(WatchMessage::Cancelled(Cancellation::of(&resp))));
    }
    if resp.created {
        return Ok(None);
    }
    let revision = resp.header.map(|h| h.revision).ok_or("no response header")?;
    if resp.events.is_empty() {
        // etcd answers a progress request of the whole stream with ID -1.
        let watch_id = (resp.watch_id >= 0).then_some(WatchId(resp.watch_id));
        return Ok(Some(WatchMessage::Progress { watch_id, revision }));
    }
    let events = resp.events.into_iter().map(event).collect::<Result<_, _>>()?;
    Ok(Some(WatchMessage::Events { watch_id: WatchId(resp.watch_id), revision, events }))
}

fn event(e: Event) -> Result<WatchEvent, String> {
    let kv = e.kv.ok_or("an event without its key")?;
    match EventType::try_from(e.r#type) {
        Ok(EventType::Put) => Ok(WatchEvent::Put(kv)),
        Ok(EventType::Delete) => Ok(WatchEvent::Delete(kv)),
        Err(prost::UnknownEnumValue(n)) => Err(format!("an event of unknown type {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ResponseHeader;

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..ResponseHeader::default() })
    }

    fn kv(key: &str, rev: i64) -> KeyValue {
        KeyValue { key: key.into(), mod_revision: rev, ..KeyValue::default() }
    }

    #[test]
    fn events_are_typed() {
        let resp = WatchResponse {
            header: header(9),
            watch_id: 1,
            events: vec![
                Event { r#type: EventType::Put.into(), kv: Some(kv("/a", 9)), prev_kv: None },
                Event { r#type: EventType::Delete.into(), kv: Some(kv("/b", 9)), prev_kv: None },
            ],
            ..WatchResponse::default()
        };
        assert_eq!(
            message(resp),
            Ok(Some(WatchMessage::Events {
                watch_id: WatchId(1),
                revision: 9,
                events: vec![WatchEvent::Put(kv("/a", 9)), WatchEvent::Delete(kv("/b", 9))],
            }))
        );
    }

    #[test]
    fn a_compacted_watch_is_cancelled_with_the_compact_revision() {
        // etcd 3.4 sends `canceled` with the compact revision and no reason.
        let resp = WatchResponse {
            header: header(20),
            watch_id: 3,
            canceled: true,
            compact_revision: 12,
            ..Default::default()
        };
        let Ok(Some(WatchMessage::Cancelled(c))) = message(resp) else { panic!("not a cancellation") };
        assert_eq!(c, Cancellation { watch_id: WatchId(3), compact_revision: Some(12), reason: None });
        assert_eq!(c.to_string(), "watch 3 cancelled: history compacted at revision 12");
        assert_eq!(Error::from(c).to_string(), "etcd watch 3 cancelled: history compacted at revision 12");
        let resp =
            WatchResponse { watch_id: 0, canceled: true, cancel_reason: "no leader".into(), ..Default::default() };
        let Ok(Some(WatchMessage::Cancelled(c))) = message(resp) else { panic!("not a cancellation") };
        assert_eq!(c.to_string(), "watch 0 cancelled: no leader");
    }

    #[test]
    fn an_answer_without_events_is_progress() {
        let resp = WatchResponse { header: header(7), watch_id: -1, ..Default::default() };
        assert_eq!(message(resp), Ok(Some(WatchMessage::Progress { watch_id: None, revision: 7 })));
        let resp = WatchResponse { header: header(7), watch_id: 2, ..Default::default() };
        assert_eq!(message(resp), Ok(Some(WatchMessage::Progress { watch_id: Some(WatchId(2)), revision: 7 })));
    }

    #[test]
    fn a_late_created_answer_is_skipped() {
        let resp = WatchResponse { header: header(7), watch_id: 4, created: true, ..Default::default() };
        assert_eq!(message(resp), Ok(None));
    }

    #[test]
    fn malformed_answers_are_errors() {
        let resp = WatchResponse { watch_id: 1, ..Default::default() };
        assert_eq!(message(resp), Err("no response header".into()));
        let no_kv = Event { r#type: 0, kv: None, prev_kv: None };
        let resp = WatchResponse { header: header(1), events: vec![no_kv], ..Default::default() };
        assert_eq!(message(resp), Err("an event without its key".into()));
        let unknown = Event { r#type: 7, kv: Some(kv("/a", 1)), prev_kv: None };
        let resp = WatchResponse { header: header(1), events: vec![unknown], ..Default::default() };
        assert_eq!(message(resp), Err("an event of unknown type 7".into()));
    }

    #[test]
    fn a_spec_watches_the_prefix_range() {
        let r = WatchSpec::prefix("/p/").from_revision(5).request();
        let create = WatchCreateRequest {
            key: b"/p/".to_vec(),
            range_end: b"/p0".to_vec(),
            start_revision: 5,
            progress_notify: false,
            prev_kv: false,
        };
        assert_eq!(r, WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) });
    }
}
