//! A stand-in Kubernetes API server on loopback, for the datastore's tests. What it
//! reproduces of a real API server, and what it does not, is listed in
//! `docs/kubernetes.md` ("The API-server stand-in"); in short:
//!
//! - discovery (`GET /apis/GROUP/VERSION`): only the groups and resources the test
//!   serves, 404 for the others, and 404 on every request to a collection of a
//!   group or resource that is not served;
//! - lists with paging (`limit`, `continue`), each page from the snapshot of the
//!   first (as the API server serves pages at the first page's resourceVersion);
//! - watches from a `resourceVersion`: the changes after it are replayed, then the
//!   live ones; a version older than the compacted history answers a `410 Gone`
//!   ERROR event; `allowWatchBookmarks` watches get BOOKMARK events on request;
//! - faults on request: the next lists of a collection answered with an error code
//!   (the transient 404 of kubernetes/kubernetes #71218), the next watches refused,
//!   every open watch cut mid-stream (a connection reset) or ended with 410;
//! - a `metadata.name` field selector; Secrets the "Role" does not grant answer 403;
//! - changes at a configurable rate (status churn on a Node);
//! - a watch ends (its chunked body closed) after its `timeoutSeconds`, divided
//!   by [`ApiServer::speed_up`]'s factor when a benchmark runs time faster;
//! - single objects: `GET`, and the writes the IPAM stores make (`POST` to a
//!   collection: 409 AlreadyExists when the name is taken; `PUT` with the
//!   object's `resourceVersion`: 409 Conflict when it is not the current one;
//!   `DELETE` with a `preconditions.resourceVersion`: 409 when it is not), each
//!   write an event to the watches;
//! - the status subresource of resources served with one
//!   ([`ApiServer::serve_status`]): `PATCH …/NAME/status` with a JSON merge patch
//!   (RFC 7386) changes `.status` only (as the API server ignores the rest of a
//!   status write), 404 for a missing object or a resource without one;
//! - admission against CRD schemas, when turned on ([`ApiServer::admit_calico_crds`]):
//!   every object a `POST`, `PUT` or status `PATCH` writes is pruned of the fields its
//!   CRD's schema does not name (the default `fieldValidation=Warn`: dropped, with a
//!   warning, kept in [`ApiServer::warnings`]) and then checked against the schema:
//!   `422 Invalid` with a Status naming each field, as the API server answers; kinds
//!   without a CRD there are not checked;
//! - throttling on request ([`ApiServer::throttle`]): the next requests of a
//!   collection, or of any, answered `429 Too Many Requests` with a `Retry-After`
//!   header and a Status (reason `TooManyRequests`, `details.retryAfterSeconds`),
//!   lists, watches, gets and writes alike;
//! - metadata-only lists and watches, as kube's `list_metadata` and
//!   `watch_metadata` (and client-go's metadata client) ask for them with the
//!   `Accept` header: `as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` on a list
//!   answers a `PartialObjectMetadataList` (`apiVersion: meta.k8s.io/v1`) whose
//!   items are `PartialObjectMetadata` (`apiVersion`, `kind`, the whole
//!   `metadata`); `as=PartialObjectMetadata` on a watch sends every event's object
//!   (bookmarks too) as one; a list asked for as `PartialObjectMetadata` answers
//!   `406 NotAcceptable`, as the API server's `asPartialObjectMetadata` does
//!   (k8s.io/apiserver/pkg/endpoints/handlers/response.go), and so does a watch
//!   asked for as a `PartialObjectMetadataList` (by analogy with
//!   `asPartialObjectMetadataList`; not checked against a real API server). Gets
//!   and writes ignore the header;
//! - a log of every request's method (for writes), path and decoded query, with
//!   when it came and its `Accept` header; counts of requests and of the bytes of
//!   list and watch bodies sent ([`ApiServer::traffic`]).
//!
//! `bgpd-ipam`'s tests use it too (`ipam/tests/kube_cni.rs` includes this file).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testgate::crd_schema::{self, Reason, Schemas, Violation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What an open watch is sent: an event line, or the end of the connection.
enum Push {
    Event(Value),
    /// Cut the connection without ending the chunked body (a reset mid-watch).
    Reset,
}

/// What a request's `Accept` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Whole objects (`application/json`, or no header).
    Objects,
    /// `application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`.
    Metadata,
    /// `application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`.
    MetadataList,
}

impl Form {
    /// The form the first media type of `accept` that names one asks for.
    fn of(accept: Option<&str>) -> Form {
        let Some(accept) = accept else { return Form::Objects };
        for media in accept.split(',') {
            let params: BTreeMap<&str, &str> =
                media.split(';').skip(1).filter_map(|p| p.trim().split_once('=')).collect();
            if params.get("g") != Some(&"meta.k8s.io") {
                continue;
            }
            match params.get("as") {
                Some(&"PartialObjectMetadata") => return Form::Metadata,
                Some(&"PartialObjectMetadataList") => return Form::MetadataList,
                _ => {}
            }
        }
        Form::Objects
    }
}

/// `obj` as a `PartialObjectMetadata`: its metadata alone, all of it (the API
/// server's `meta.AsPartialObjectMetadata`).
fn partial(obj: &Value) -> Value {
    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"] })
}

/// A watch event as a metadata-only watch receives it (an ERROR's Status as is).
fn partial_event(event: Value) -> Value {
    if event["type"] == "ERROR" {
        return event;
    }
    json!({ "type": event["type"], "object": partial(&event["object"]) })
}

/// One request, as logged.
struct Logged {
    at: Instant,
    /// `PATH?QUERY` (query decoded), after the method for a write.
    line: String,
    accept: Option<String>,
}

/// A watch in progress: its collection, its name selector, and where its events go.
struct Watch {
    collection: String,
    name: Option<String>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Push>,
}

/// One change, kept for watches that start from an older resourceVersion.
struct Change {
    version: u64,
    collection: String,
    name: String,
    event: Value,
}

struct State {
    /// Objects by collection path (`/api/v1/nodes`, `/apis/GROUP/VERSION/PLURAL`,
    /// `/api/v1/namespaces/NS/secrets`) and name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// The API group versions served (`v1` for the core group), each with its
    /// resources (plural, kind).
    served: BTreeMap<String, Vec<(String, String)>>,
    /// Secrets (by name) the service account may not read.
    forbidden: BTreeSet<String>,
    /// Resources (plurals) with a status subresource.
    status_subresources: BTreeSet<String>,
    /// Every request, oldest first.
    requests: Vec<Logged>,
    /// Watches end after their `timeoutSeconds` divided by this (at least 1).
    speed_up: u32,
    /// Requests to answer `429`, oldest order first.
    throttles: Vec<Throttle>,
    traffic: Traffic,
    /// Watch events and bytes by collection path.
    sent: BTreeMap<String, Sent>,
    watches: Vec<Watch>,
    /// Every change since the start, oldest first; those at or below `compacted`
    /// are gone (a watch from there gets 410).
    history: Vec<Change>,
    compacted: u64,
    version: u64,
    /// Status codes the next lists of a collection answer, in order.
    failing_lists: BTreeMap<String, VecDeque<u16>>,
    /// Status codes the next watch requests (any collection) answer, in order.
    failing_watches: VecDeque<u16>,
    /// Lists in progress: the rest of each list's snapshot, by continue token.
    pages: BTreeMap<String, (u64, VecDeque<Value>)>,
    next_token: u64,
    /// The CRD schemas writes are admitted against; `None`: no admission.
    admission: Option<Arc<Schemas>>,
    /// The warnings of admitted writes (fields pruned), oldest first.
    warnings: Vec<String>,
}

/// The kinds of a Calico group, as served by its CRDs.
const CALICO_RESOURCES: &[(&str, &str)] = &[
    ("bgpconfigurations", "BGPConfiguration"),
    ("bgppeers", "BGPPeer"),
    ("bgpfilters", "BGPFilter"),
    ("ippools", "IPPool"),
    ("ipamblocks", "IPAMBlock"),
    ("ipamhandles", "IPAMHandle"),
    ("blockaffinities", "BlockAffinity"),
];

impl Default for State {
    fn default() -> State {
        let resources = |list: &[(&str, &str)]| list.iter().map(|(p, k)| (p.to_string(), k.to_string())).collect();
        let served = BTreeMap::from([
            (
                "v1".to_string(),
                resources(&[("nodes", "Node"), ("services", "Service"), ("secrets", "Secret"), ("pods", "Pod")]),
            ),
            ("discovery.k8s.io/v1".to_string(), resources(&[("endpointslices", "EndpointSlice")])),
        ]);
        State {
            objects: BTreeMap::new(),
            served,
            forbidden: BTreeSet::new(),
            status_subresources: BTreeSet::new(),
            requests: Vec::new(),
            throttles: Vec::new(),
            speed_up: 1,
            traffic: Traffic::default(),
            sent: BTreeMap::new(),
            watches: Vec::new(),
            history: Vec::new(),
            compacted: 0,
            version: 1,
            failing_lists: BTreeMap::new(),
            failing_watches: VecDeque::new(),
            pages: BTreeMap::new(),
            next_token: 0,
            admission: None,
            warnings: Vec::new(),
        }
    }
}

#[derive(Clone, Default)]
pub(super) struct ApiServer(Arc<Mutex<State>>);

/// The next `left` requests of `collection` (of any, if `None`) answer `429`
/// with `Retry-After: retry_after` (seconds).
struct Throttle {
    collection: Option<String>,
    retry_after: u32,
    left: usize,
}

/// What the stand-in was asked and sent since it started. Bytes are those of
/// the bodies (JSON), without HTTP heads or chunk framing. Public (as [`Sent`]):
/// `bench kube-api` (the conformance crate, which includes this file) reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Every request, whatever its answer.
    pub requests: u64,
    /// Lists (a `GET` of a collection, each page one).
    pub lists: u64,
    /// Watch requests (`watch=true`), refused ones included.
    pub watches: u64,
    /// Requests answered `429`.
    pub throttled: u64,
    pub list_bytes: u64,
    /// Events sent on watches, and their bytes (one JSON line each).
    pub watch_events: u64,
    pub watch_bytes: u64,
    /// Bytes of every other answer (discovery, gets, writes, refusals).
    pub other_bytes: u64,
}

/// The events and bytes sent on the watches of one collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub events: u64,
    pub bytes: u64,
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().expect("objects have names").to_string()
}

fn decode(query: &str) -> String {
    let mut out = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/apis/G/V/PLURAL`, `/api/v1/PLURAL`, `/api/v1/namespaces/NS/PLURAL` → (`G/V` or
/// `v1`, PLURAL).
fn group_version_resource(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v, "namespaces", _, plural] | ["api", v, plural] => Some((v.to_string(), plural.to_string())),
        ["apis", g, v, "namespaces", _, plural] | ["apis", g, v, plural] => {
            Some((format!("{g}/{v}"), plural.to_string()))
        }
        _ => None,
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// The name of an object, or `""` when it has none.
fn name_of_any(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// The `422 Invalid` Status of a write the schema refuses, as the API server
/// words it: `KIND.GROUP "NAME" is invalid: FIELD: why, …`, one cause a field.
fn invalid(group_version: &str, kind: String, name: &str, violations: &[Violation]) -> Value {
    let group = group_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
    let causes: Vec<Value> = violations
        .iter()
        .map(|v| {
            let reason = match v.reason {
                Reason::Required => "FieldValueRequired",
                Reason::NotSupported { .. } => "FieldValueNotSupported",
                Reason::Unknown | Reason::Type { .. } | Reason::Format { .. } => "FieldValueInvalid",
            };
            let text = v.to_string();
            let message = text.strip_prefix(&format!("{}: ", v.field)).unwrap_or(&text).to_string();
            json!({ "reason": reason, "message": message, "field": v.field })
        })
        .collect();
    let all: Vec<String> = violations.iter().map(ToString::to_string).collect();
    let qualified = if group.is_empty() { kind.clone() } else { format!("{kind}.{group}") };
    let mut s = status(422, "Invalid", &format!("{qualified} {name:?} is invalid: {}", all.join(", ")));
    s["details"] = json!({ "name": name, "group": group, "kind": kind, "causes": causes });
    s
}

fn reason_of(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "BadRequest",
        403 => "Forbidden",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        422 => "Invalid",
        404 => "NotFound",
        406 => "NotAcceptable",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

/// `/api/v1/PLURAL/NAME`, `/api/v1/namespaces/NS/PLURAL/NAME`,
/// `/apis/G/V/PLURAL/NAME`, `/apis/G/V/namespaces/NS/PLURAL/NAME` → (the
/// collection path, NAME).
fn object_path(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (collection, name) = match parts.as_slice() {
        ["api", _, _, name] | ["api", _, "namespaces", _, _, name] => (&parts[..parts.len() - 1], name),
        ["apis", _, _, plural, name] if *plural != "namespaces" => (&parts[..parts.len() - 1], name),
        ["apis", _, _, "namespaces", _, _, name] => (&parts[..parts.len() - 1], name),
        _ => return None,
    };
    Some((format!("/{}", collection.join("/")), name.to_string()))
}

impl ApiServer {
    /// Starts serving on a loopback port; returns a client for it.
    pub(super) async fn start(&self) -> kube::Client {
        let url = self.start_at().await;
        let config = kube::Config::new(url.parse().expect("a URL"));
        kube::Client::try_from(config).expect("a client")
    }

    /// Starts serving on a loopback port; returns its URL (`http://127.0.0.1:PORT`).
    pub(super) async fn start_at(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(me.clone().serve(conn));
            }
        });
        url
    }

    /// Serves the Calico kinds under `group_version` (`crd.projectcalico.org/v1`
    /// or `projectcalico.org/v3`), as the CRDs of a Calico install do.
    pub(super) fn serve_calico(&self, group_version: &str) {
        let resources = CALICO_RESOURCES.iter().map(|(p, k)| (p.to_string(), k.to_string())).collect();
        self.0.lock().unwrap().served.insert(group_version.into(), resources);
    }

    /// Serves one more resource of a group version.
    pub(super) fn serve_resource(&self, group_version: &str, plural: &str, kind: &str) {
        let mut s = self.0.lock().unwrap();
        s.served.entry(group_version.into()).or_default().push((plural.into(), kind.into()));
    }

    /// Turns admission on with Calico's CRDs from the shared data
    /// (`calico-crds/`, through `testgate`): `false` (a printed skip, or a
    /// failure under CI) when they are not there.
    pub(super) fn admit_calico_crds(&self, test: &str) -> bool {
        let Some(dir) = testgate::shared_data(test, "calico-crds") else { return false };
        let schemas = Schemas::load_dir(&dir).unwrap_or_else(|e| panic!("{test}: Calico's CRDs: {e}"));
        assert!(!schemas.is_empty(), "{test}: no CRD in {}", dir.display());
        self.admit_with(schemas);
        true
    }

    /// Turns admission on with `schemas`.
    pub(super) fn admit_with(&self, schemas: Schemas) {
        self.0.lock().unwrap().admission = Some(Arc::new(schemas));
    }

    /// What admission warned of so far: `unknown field "spec.x"` for each field
    /// pruned from a write (as the API server's `Warning` header says).
    pub(super) fn warnings(&self) -> Vec<String> {
        self.0.lock().unwrap().warnings.clone()
    }

    /// Admits `obj` as a write to `collection`: prunes it and checks it
    /// against its CRD's schema (when admission is on and there is one); the
    /// answer of a refused write otherwise.
    fn admit(&self, collection: &str, obj: &mut Value) -> Result<(), (u16, Value)> {
        let Some((gv, plural)) = group_version_resource(collection) else { return Ok(()) };
        let Some(schemas) = self.0.lock().unwrap().admission.clone() else { return Ok(()) };
        let Some(schema) = schemas.get(&gv, &plural) else { return Ok(()) };
        let pruned = crd_schema::prune(schema, obj, "");
        self.0.lock().unwrap().warnings.extend(pruned.iter().map(|f| format!("unknown field {f:?}")));
        let violations = crd_schema::violations(schema, obj);
        if violations.is_empty() {
            return Ok(());
        }
        let kind = self.0.lock().unwrap().served.get(&gv).and_then(|r| r.iter().find(|(p, _)| *p == plural).cloned());
        Err((422, invalid(&gv, kind.map(|(_, k)| k).unwrap_or(plural), &name_of_any(obj), &violations)))
    }

    pub(super) fn forbid_secret(&self, name: &str) {
        self.0.lock().unwrap().forbidden.insert(name.into());
    }

    pub(super) fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().requests.iter().map(|r| r.line.clone()).collect()
    }

    /// Every request so far with its `Accept` header, oldest first.
    pub(super) fn requests_accepting(&self) -> Vec<(String, Option<String>)> {
        self.0.lock().unwrap().requests.iter().map(|r| (r.line.clone(), r.accept.clone())).collect()
    }

    /// Every request so far with when it came, oldest first.
    pub(super) fn timed_requests(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().requests.iter().map(|r| (r.at, r.line.clone())).collect()
    }

    /// The requests made and the bytes sent so far.
    pub(super) fn traffic(&self) -> Traffic {
        self.0.lock().unwrap().traffic
    }

    /// The watch events and bytes sent so far, by collection path.
    pub(super) fn sent(&self) -> BTreeMap<String, Sent> {
        self.0.lock().unwrap().sent.clone()
    }

    /// Ends watches after their `timeoutSeconds` divided by `factor`: a
    /// benchmark that runs the cluster's clock `factor` times faster.
    pub(super) fn speed_up(&self, factor: u32) {
        self.0.lock().unwrap().speed_up = factor.max(1);
    }

    /// The next `times` requests of `collection` (of any collection, discovery
    /// included, if `None`), whatever they are (lists, watches, gets, writes),
    /// answer `429 Too Many Requests` with `Retry-After: retry_after` (seconds),
    /// as the API server does when API priority and fairness rejects a request.
    pub(super) fn throttle(&self, collection: Option<&str>, retry_after: u32, times: usize) {
        let throttle = Throttle { collection: collection.map(str::to_string), retry_after, left: times };
        self.0.lock().unwrap().throttles.push(throttle);
    }

    /// Whether a request to `path` is throttled now (and counts it if so):
    /// the `Retry-After` it answers with.
    fn throttled(&self, path: &str) -> Option<u32> {
        // A collection (lists, watches, creations), else one of its objects.
        let collection = match group_version_resource(path) {
            Some(_) => path.to_string(),
            None => object_path(path.strip_suffix("/status").unwrap_or(path)).map_or(path.to_string(), |(c, _)| c),
        };
        let mut s = self.0.lock().unwrap();
        let t =
            s.throttles.iter_mut().find(|t| t.left > 0 && t.collection.as_ref().is_none_or(|c| *c == collection))?;
        t.left -= 1;
        let retry_after = t.retry_after;
        s.traffic.throttled += 1;
        Some(retry_after)
    }

    /// The next `times` lists of `collection` answer `code` (a transient 404 after
    /// an API server or etcd restart, kubernetes/kubernetes #71218; a 500; …).
    pub(super) fn fail_lists(&self, collection: &str, code: u16, times: usize) {
        let mut s = self.0.lock().unwrap();
        s.failing_lists.entry(collection.into()).or_default().extend(std::iter::repeat_n(code, times));
    }

    /// The next `times` watch requests (of any collection) answer `code`.
    pub(super) fn fail_watches(&self, code: u16, times: usize) {
        self.0.lock().unwrap().failing_watches.extend(std::iter::repeat_n(code, times));
    }

    /// Cuts every open watch connection mid-stream.
    pub(super) fn reset_watches(&self) {
        let mut s = self.0.lock().unwrap();
        for w in s.watches.drain(..) {
            let _ = w.tx.send(Push::Reset);
        }
    }

    /// Forgets the history up to now and ends every open watch with a `410 Gone`
    /// ERROR event: the clients must list again.
    pub(super) fn expire_watches(&self) {
        let mut s = self.0.lock().unwrap();
        s.compacted = s.version;
        let gone = json!({ "type": "ERROR", "object": status(410, "Expired", "too old resource version") });
        for w in s.watches.drain(..) {
            let _ = w.tx.send(Push::Event(gone.clone()));
            let _ = w.tx.send(Push::Reset);
        }
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that asked
    /// for bookmarks; returns how many got one.
    pub(super) fn bookmark(&self) -> usize {
        let mut s = self.0.lock().unwrap();
        let version = s.version.to_string();
        let mut sent = 0;
        let served = s.served.clone();
        s.watches.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let (gv, plural) = group_version_resource(&w.collection).unwrap_or_default();
            let kind = served.get(&gv).and_then(|r| r.iter().find(|(p, _)| *p == plural)).map(|(_, k)| k.clone());
            let event = json!({ "type": "BOOKMARK", "object": {
                "apiVersion": gv, "kind": kind, "metadata": { "resourceVersion": version },
            } });
            let ok = w.tx.send(Push::Event(event)).is_ok();
            sent += usize::from(ok);
            ok
        });
        sent
    }

    /// Forgets the changes up to resourceVersion `to` (etcd's compaction): a
    /// watch from an older version gets 410 Gone; open watches go on.
    pub(super) fn compact(&self, to: u64) {
        let mut s = self.0.lock().unwrap();
        s.compacted = s.compacted.max(to);
        s.history.retain(|c| c.version > to);
    }

    /// The resourceVersion of the last change.
    pub(super) fn version(&self) -> u64 {
        self.0.lock().unwrap().version
    }

    /// The number of watches open now.
    pub(super) fn open_watches(&self) -> usize {
        let mut s = self.0.lock().unwrap();
        s.watches.retain(|w| !w.tx.is_closed());
        s.watches.len()
    }

    /// Adds or replaces an object, and tells the watches that see it.
    pub(super) fn apply(&self, collection: &str, obj: Value) {
        self.change(collection, obj, "MODIFIED");
    }

    pub(super) fn delete(&self, collection: &str, name: &str) {
        let obj = self.0.lock().unwrap().objects.get(collection).and_then(|m| m.get(name).cloned());
        if let Some(obj) = obj {
            self.change(collection, obj, "DELETED");
        }
    }

    /// Modifies `status.heartbeat` of the object `name` of `collection` `per_second`
    /// times a second (in steps every 10 ms), as kubelets' status updates do to
    /// Nodes, until the returned handle is aborted or dropped.
    pub(super) fn churn(&self, collection: &str, name: &str, per_second: u32) -> ChurnGuard {
        let me = self.clone();
        let (collection, name) = (collection.to_string(), name.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut beat = 0u64;
            loop {
                tick.tick().await;
                for _ in 0..per_second.div_ceil(100) {
                    let Some(mut obj) =
                        me.0.lock().unwrap().objects.get(&collection).and_then(|m| m.get(&name).cloned())
                    else {
                        return;
                    };
                    beat += 1;
                    obj["status"]["heartbeat"] = json!(beat);
                    me.apply(&collection, obj);
                }
            }
        });
        ChurnGuard(task)
    }

    fn change(&self, collection: &str, mut obj: Value, kind: &str) {
        let mut s = self.0.lock().unwrap();
        s.version += 1;
        let version = s.version;
        obj["metadata"]["resourceVersion"] = json!(version.to_string());
        let name = name_of(&obj);
        let objects = s.objects.entry(collection.into()).or_default();
        let kind = match (kind, objects.contains_key(&name)) {
            ("DELETED", _) => {
                objects.remove(&name);
                "DELETED"
            }
            (_, false) => {
                objects.insert(name.clone(), obj.clone());
                "ADDED"
            }
            _ => {
                objects.insert(name.clone(), obj.clone());
                "MODIFIED"
            }
        };
        let event = json!({ "type": kind, "object": obj });
        s.history.push(Change { version, collection: collection.into(), name: name.clone(), event: event.clone() });
        s.watches.retain(|w| {
            if w.collection != collection || w.name.as_ref().is_some_and(|n| *n != name) {
                return !w.tx.is_closed();
            }
            w.tx.send(Push::Event(event.clone())).is_ok()
        });
    }

    /// The answer to a request that is not a watch (a list in `form`).
    fn answer(&self, path: &str, params: &BTreeMap<&str, &str>, name: Option<&String>, form: Form) -> (u16, Value) {
        let mut s = self.0.lock().unwrap();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // Discovery of one group version.
        let discovered = match parts.as_slice() {
            ["api", v] => Some(v.to_string()),
            ["apis", g, v] => Some(format!("{g}/{v}")),
            _ => None,
        };
        if let Some(gv) = discovered {
            let Some(resources) = s.served.get(&gv) else {
                return (404, status(404, "NotFound", "the server could not find the requested resource"));
            };
            let list: Vec<Value> = resources
                .iter()
                .map(|(plural, kind)| {
                    json!({
                        "name": plural, "singularName": "", "namespaced": plural != "nodes" && !gv.contains("projectcalico"),
                        "kind": kind, "verbs": ["get", "list", "watch"],
                    })
                })
                .collect();
            return (
                200,
                json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list }),
            );
        }
        let Some((gv, plural)) = group_version_resource(path) else {
            return (404, status(404, "NotFound", "the server could not find the requested resource"));
        };
        if !s.served.get(&gv).is_some_and(|r| r.iter().any(|(p, _)| *p == plural)) {
            return (404, status(404, "NotFound", "the server could not find the requested resource"));
        }
        if let Some(code) = s.failing_lists.get_mut(path).and_then(VecDeque::pop_front) {
            return (code, status(code, reason_of(code), "injected failure"));
        }
        // A page of a list in progress, or a new list (a snapshot of now).
        let (version, mut rest) = match params.get("continue") {
            Some(token) => match s.pages.remove(*token) {
                Some(p) => p,
                None => return (410, status(410, "Expired", "the continue token has expired")),
            },
            None => {
                let items: VecDeque<Value> = s
                    .objects
                    .get(path)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|o| name.is_none_or(|n| name_of(o) == *n))
                    .cloned()
                    .collect();
                (s.version, items)
            }
        };
        let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let page: Vec<Value> = rest.drain(..limit.unwrap_or(usize::MAX).min(rest.len())).collect();
        let mut metadata = json!({ "resourceVersion": version.to_string() });
        if !rest.is_empty() {
            s.next_token += 1;
            let token = format!("page-{}", s.next_token);
            metadata["continue"] = json!(token);
            s.pages.insert(token, (version, rest));
        }
        if form == Form::MetadataList {
            let items: Vec<Value> = page.iter().map(partial).collect();
            let list = json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": metadata, "items": items,
            });
            return (200, list);
        }
        (200, json!({ "apiVersion": "v1", "kind": "List", "metadata": metadata, "items": page }))
    }

    /// Whether the collection at `path` is served.
    fn serves(&self, path: &str) -> bool {
        let s = self.0.lock().unwrap();
        group_version_resource(path)
            .is_some_and(|(gv, plural)| s.served.get(&gv).is_some_and(|r| r.iter().any(|(p, _)| *p == plural)))
    }

    /// The object `name` of `collection`, if any.
    pub(super) fn object(&self, collection: &str, name: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(collection).and_then(|m| m.get(name).cloned())
    }

    /// The answer to a `GET` of one object or a write (`POST`, `PUT`, `DELETE`).
    fn object_answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let not_found = || (404, status(404, "NotFound", "the server could not find the requested resource"));
        if let Some(object) = path.strip_suffix("/status") {
            return self.status_answer(method, object, body);
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return (400, status(400, "BadRequest", &format!("the body is not JSON: {e}"))),
            }
        };
        if method == "POST" {
            if !self.serves(path) {
                return not_found();
            }
            let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                return (422, status(422, "Invalid", "metadata.name: Required value"));
            };
            if self.object(path, &name).is_some() {
                return (409, status(409, "AlreadyExists", &format!("{name:?} already exists")));
            }
            let mut body = body;
            if let Err(refused) = self.admit(path, &mut body) {
                return refused;
            }
            self.change(path, body, "ADDED");
            return (201, self.object(path, &name).unwrap_or_default());
        }
        let Some((collection, name)) = object_path(path) else { return not_found() };
        if !self.serves(&collection) {
            return not_found();
        }
        let Some(current) = self.object(&collection, &name) else { return not_found() };
        let version = current["metadata"]["resourceVersion"].clone();
        let conflict = || {
            let message = format!("Operation cannot be fulfilled on {name:?}: the object has been modified");
            (409, status(409, "Conflict", &message))
        };
        match method {
            "GET" => (200, current),
            "PUT" => {
                let given = &body["metadata"]["resourceVersion"];
                if !given.is_null() && *given != version {
                    return conflict();
                }
                let mut body = body;
                if let Err(refused) = self.admit(&collection, &mut body) {
                    return refused;
                }
                self.change(&collection, body, "MODIFIED");
                (200, self.object(&collection, &name).unwrap_or_default())
            }
            "DELETE" => {
                let given = &body["preconditions"]["resourceVersion"];
                if !given.is_null() && *given != version {
                    return conflict();
                }
                self.change(&collection, current.clone(), "DELETED");
                (200, current)
            }
            _ => (405, status(405, "MethodNotAllowed", &format!("{method} is not supported"))),
        }
    }

    /// Serves the status subresource of `plural` (a CRD with `subresources: status`).
    pub(super) fn serve_status(&self, plural: &str) {
        self.0.lock().unwrap().status_subresources.insert(plural.into());
    }

    /// A write to the status subresource of the object at `path`: a merge patch
    /// applied to its `.status` alone.
    fn status_answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let not_found = || (404, status(404, "NotFound", "the server could not find the requested resource"));
        let Some((collection, name)) = object_path(path) else { return not_found() };
        let has_status = group_version_resource(&collection)
            .is_some_and(|(_, plural)| self.0.lock().unwrap().status_subresources.contains(&plural));
        if !self.serves(&collection) || !has_status {
            return not_found();
        }
        let Some(mut current) = self.object(&collection, &name) else { return not_found() };
        if method != "PATCH" {
            return (405, status(405, "MethodNotAllowed", &format!("{method} of a status is not supported here")));
        }
        let patch: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return (400, status(400, "BadRequest", &format!("the body is not JSON: {e}"))),
        };
        let mut new_status = current.get("status").cloned().unwrap_or(Value::Null);
        merge_patch(&mut new_status, &patch["status"]);
        match current.as_object_mut() {
            Some(o) if new_status.is_null() => {
                o.remove("status");
            }
            Some(o) => {
                o.insert("status".into(), new_status);
            }
            None => return (500, status(500, "InternalError", "stored object is not an object")),
        }
        if let Err(refused) = self.admit(&collection, &mut current) {
            return refused;
        }
        self.change(&collection, current, "MODIFIED");
        (200, self.object(&collection, &name).unwrap_or_default())
    }

    /// Registers a watch of `collection` from `from` (a resourceVersion); returns
    /// the events to replay first and the channel of the live ones, or the status
    /// code the request answers.
    fn open_watch(
        &self,
        collection: &str,
        name: Option<String>,
        from: Option<u64>,
        bookmarks: bool,
    ) -> Result<(Vec<Value>, mpsc::UnboundedReceiver<Push>), u16> {
        let mut s = self.0.lock().unwrap();
        let served = group_version_resource(collection)
            .is_some_and(|(gv, plural)| s.served.get(&gv).is_some_and(|r| r.iter().any(|(p, _)| *p == plural)));
        if !served {
            return Err(404);
        }
        if let Some(code) = s.failing_watches.pop_front() {
            return Err(code);
        }
        let from = from.unwrap_or(s.version);
        let replay = if from < s.compacted {
            vec![json!({ "type": "ERROR", "object": status(410, "Expired", "too old resource version") })]
        } else {
            s.history
                .iter()
                .filter(|c| c.version > from && c.collection == collection)
                .filter(|c| name.as_ref().is_none_or(|n| *n == c.name))
                .map(|c| c.event.clone())
                .collect()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        if from >= s.compacted {
            s.watches.push(Watch { collection: collection.into(), name, bookmarks, tx });
        }
        Ok((replay, rx))
    }

    async fn serve(self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        loop {
            // One request head, then its body (`Content-Length`; kube sends no
            // chunked request bodies).
            let head = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    break head;
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let header = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            };
            let length = header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            let accept = header("accept");
            let form = Form::of(accept.as_deref());
            while buf.len() < length {
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..length).collect();
            let method = head.split_whitespace().next().unwrap_or("GET").to_string();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let query = decode(query);
            let logged = if method == "GET" { format!("{path}?{query}") } else { format!("{method} {path}?{query}") };
            let params: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
            let is_watch = params.get("watch") == Some(&"true");
            let is_list = !is_watch && method == "GET" && group_version_resource(path).is_some();
            {
                let mut s = self.0.lock().unwrap();
                s.requests.push(Logged { at: Instant::now(), line: logged, accept });
                s.traffic.requests += 1;
                s.traffic.watches += u64::from(is_watch);
                s.traffic.lists += u64::from(is_list);
            }
            if let Some(seconds) = self.throttled(path) {
                // As the API server's priority and fairness filter rejects: 429,
                // `Retry-After` in seconds; the Status says it again.
                let mut body = status(429, "TooManyRequests", "Too many requests, please try again later.");
                body["details"] = json!({ "retryAfterSeconds": seconds });
                let body = body.to_string();
                self.0.lock().unwrap().traffic.other_bytes += body.len() as u64;
                let resp = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: {seconds}\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            let name = params.get("fieldSelector").and_then(|f| f.strip_prefix("metadata.name=")).map(str::to_string);
            let forbidden = path.ends_with("/secrets")
                && name.as_ref().is_none_or(|n| self.0.lock().unwrap().forbidden.contains(n));
            // As the API server's `asPartialObjectMetadata(List)` refuse a list
            // asked for as one object, and one object asked for as a list.
            let not_acceptable = match form {
                Form::Metadata if is_list => {
                    Some("you requested PartialObjectMetadata, but the requested object is a list")
                }
                Form::MetadataList if is_watch => {
                    Some("you requested PartialObjectMetadataList, but the requested object is not a list")
                }
                _ => None,
            };
            let answer = if forbidden {
                let message = format!("secrets {:?} is forbidden", name.clone().unwrap_or_default());
                Some((403, status(403, "Forbidden", &message)))
            } else if let Some(message) = not_acceptable {
                Some((406, status(406, "NotAcceptable", message)))
            } else if is_watch {
                let from = params.get("resourceVersion").and_then(|v| v.parse().ok()).filter(|v| *v > 0);
                let bookmarks = params.get("allowWatchBookmarks") == Some(&"true");
                let timeout = params.get("timeoutSeconds").and_then(|t| t.parse::<f64>().ok()).map(|t| {
                    let factor = self.0.lock().unwrap().speed_up;
                    Instant::now() + Duration::from_secs_f64(t / f64::from(factor))
                });
                match self.open_watch(path, name.clone(), from, bookmarks) {
                    Ok((replay, rx)) => {
                        self.stream(conn, path, form == Form::Metadata, timeout, replay, rx).await;
                        return;
                    }
                    Err(code) => Some((code, status(code, reason_of(code), "injected failure"))),
                }
            } else if method != "GET" || object_path(path).is_some_and(|(c, _)| self.serves(&c)) {
                Some(self.object_answer(&method, path, &body))
            } else {
                None
            };
            let (code, body) = answer.unwrap_or_else(|| self.answer(path, &params, name.as_ref(), form));
            let body = body.to_string();
            {
                let mut s = self.0.lock().unwrap();
                let bytes = body.len() as u64;
                if is_list && code == 200 {
                    s.traffic.list_bytes += bytes;
                } else {
                    s.traffic.other_bytes += bytes;
                }
            }
            let resp = format!(
                "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                reason_of(code),
                body.len()
            );
            if conn.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Streams a watch of `collection`: the replayed events, then the live ones
    /// (their objects as `PartialObjectMetadata` if `metadata`), until the client
    /// goes away, the test cuts the connection, or the `timeout` (the end of the
    /// body then, as the API server ends it).
    async fn stream(
        &self,
        mut conn: TcpStream,
        collection: &str,
        metadata: bool,
        timeout: Option<Instant>,
        replay: Vec<Value>,
        mut rx: mpsc::UnboundedReceiver<Push>,
    ) {
        let never = Instant::now() + Duration::from_secs(365 * 86_400);
        let deadline = tokio::time::Instant::from_std(timeout.unwrap_or(never));
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if conn.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let gone = replay.first().is_some_and(|e| e["type"] == "ERROR");
        let mut pushes = replay.into_iter().map(Push::Event).collect::<VecDeque<_>>();
        if gone {
            pushes.push_back(Push::Reset);
        }
        loop {
            let push = match pushes.pop_front() {
                Some(p) => p,
                None => tokio::select! {
                    received = rx.recv() => match received {
                        Some(p) => p,
                        None => return,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        let _ = conn.write_all(b"0\r\n\r\n").await;
                        return;
                    }
                },
            };
            let Push::Event(event) = push else {
                // Dropping the connection here leaves the chunked body unfinished.
                return;
            };
            let event = if metadata { partial_event(event) } else { event };
            let line = format!("{event}\n");
            {
                let mut s = self.0.lock().unwrap();
                s.traffic.watch_events += 1;
                s.traffic.watch_bytes += line.len() as u64;
                let sent = s.sent.entry(collection.to_string()).or_default();
                sent.events += 1;
                sent.bytes += line.len() as u64;
            }
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            if conn.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Applies a JSON merge patch (RFC 7386 §2) to `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else { return };
    for (k, v) in fields {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Stops a [`ApiServer::churn`] when dropped.
pub(super) struct ChurnGuard(tokio::task::JoinHandle<()>);

impl Drop for ChurnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
