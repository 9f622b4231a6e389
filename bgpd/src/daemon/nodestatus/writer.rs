//! The task that writes the status of this node's CalicoNodeStatus objects:
//! each one every `updatePeriodSeconds` (at once when it appears or its spec
//! changes; never for 0), into the datastore it was read from:
//!
//! - Kubernetes: a merge patch of the status subresource
//!   (`PATCH …/caliconodestatuses/NAME/status`, the CRD has `subresources:
//!   status`), in whichever of `crd.projectcalico.org/v1` and
//!   `projectcalico.org/v3` serves it; sections of classes no longer asked for
//!   are removed (`null`);
//! - etcd: the object with its new status, as JSON, back to the key it was read
//!   from, in a transaction that holds only if the key was not modified since it
//!   was read (a user's edit is never overwritten; the write is tried again a
//!   second later);
//! - the file datastore: `calico-node-status/NAME.yaml` in the datastore's
//!   directory (the directory itself, or the file's), the object with its
//!   status; the user's files are never written. The subdirectory is not read
//!   by the file datastore.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::render::{render, Snapshot};
use super::request::Request;
use super::sources::Requests;
use super::{Classes, NodeStatus};
use crate::daemon::rib::RibHandle;
use crate::daemon::status::Shared;
use crate::datastore::live::{DatastoreSpec, Feed};

/// The directory, beside a file datastore, that gets the status files.
pub const FILE_DIR: &str = "calico-node-status";

/// How soon a write that failed is tried again (at most: the period when
/// shorter).
const RETRY: Duration = Duration::from_secs(1);

/// Where the status goes.
pub enum Target {
    /// `DIR/calico-node-status/NAME.yaml`.
    File {
        /// The datastore's directory.
        dir: PathBuf,
    },
    /// Back to the key each object was read from.
    Etcd {
        /// How to reach etcd.
        access: bgpd_etcd::Access,
        /// The client, once connected.
        client: Option<bgpd_etcd::Client>,
    },
    /// The status subresource.
    Kubernetes {
        /// The client, once made (from the kubeconfig or the environment, as the
        /// datastore's).
        client: Option<kube::Client>,
        /// The group version found serving CalicoNodeStatus.
        api: Option<&'static str>,
    },
}

impl Target {
    /// The target for a `--datastore`.
    pub fn for_datastore(spec: &DatastoreSpec) -> Target {
        match spec {
            DatastoreSpec::File(path) => {
                let dir =
                    if path.is_dir() { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
                Target::File { dir }
            }
            DatastoreSpec::Etcd { access, .. } => Target::Etcd { access: access.clone(), client: None },
            DatastoreSpec::Kubernetes { .. } => Target::Kubernetes { client: None, api: None },
        }
    }

    /// Writes `status` for `req`; returns the bytes sent (the value or body).
    /// `Ok(None)`: not written, and rightly so (the object is gone, or was
    /// modified since it was read: the next try reads it again).
    pub async fn write(&mut self, req: &Request, status: &NodeStatus) -> Result<Option<usize>, String> {
        match self {
            Target::File { dir } => write_file(dir, req, status).map(Some),
            Target::Etcd { access, client } => {
                if client.is_none() {
                    let opts = bgpd_etcd::ConnectOptions {
                        connect_timeout: Duration::from_secs(5),
                        request_timeout: Duration::from_secs(5),
                        ..access.connect_options()
                    };
                    let c = bgpd_etcd::Client::connect(&access.endpoints, opts)
                        .await
                        .map_err(|e| format!("connecting to etcd: {e}"))?;
                    *client = Some(c);
                }
                let Some(c) = client.as_ref() else { return Err("no etcd client".into()) };
                let written = write_etcd(c, req, status).await;
                if written.is_err() {
                    // Connect again next time (the connection may be the fault).
                    *client = None;
                }
                written
            }
            Target::Kubernetes { client, api } => {
                if client.is_none() {
                    let c = kube::Client::try_default().await.map_err(|e| format!("no Kubernetes client: {e}"))?;
                    *client = Some(c);
                }
                let Some(c) = client.clone() else { return Err("no Kubernetes client".into()) };
                write_kubernetes(&c, api, req, status).await
            }
        }
    }
}

/// The path of the status file of `name` for a file datastore in `dir`.
pub fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(FILE_DIR).join(format!("{name}.yaml"))
}

/// The object `req` read, with `status`.
fn with_status(req: &Request, status: &NodeStatus) -> Result<Value, String> {
    let mut object = req.object.clone();
    let status = serde_json::to_value(status).map_err(|e| format!("encoding the status: {e}"))?;
    match object.as_object_mut() {
        Some(o) => {
            o.insert("status".into(), status);
            Ok(object)
        }
        None => Err(format!("{}: the object is not a mapping", req.name)),
    }
}

fn write_file(dir: &Path, req: &Request, status: &NodeStatus) -> Result<usize, String> {
    let path = file_path(dir, &req.name);
    let mut object = with_status(req, status)?;
    // The form a reader of the file expects, whichever group the user wrote.
    object["apiVersion"] = json!("projectcalico.org/v3");
    let text = serde_yaml::to_string(&object).map_err(|e| format!("encoding {}: {e}", path.display()))?;
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    // Written whole, then renamed into place: a reader never sees half a file.
    let tmp = parent.join(format!(".{}.tmp", req.name));
    std::fs::write(&tmp, &text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))?;
    Ok(text.len())
}

async fn write_etcd(c: &bgpd_etcd::Client, req: &Request, status: &NodeStatus) -> Result<Option<usize>, String> {
    let key = req.source.to_string_lossy().into_owned();
    let Some(kv) = c.get(key.as_str()).await.map_err(|e| format!("etcd get {key}: {e}"))? else {
        return Ok(None);
    };
    // The value as stored now (YAML or JSON), its status replaced.
    // JSON once bgpd wrote it (fast), else YAML as a user may have put it.
    let parsed = serde_json::from_slice(&kv.value).or_else(|_| serde_yaml::from_slice(&kv.value));
    let mut stored: Value = parsed.map_err(|e| format!("etcd key {key}: {e}"))?;
    if stored["kind"] != "CalicoNodeStatus" || stored["spec"] != req.object["spec"] {
        return Ok(None);
    }
    let status = serde_json::to_value(status).map_err(|e| format!("encoding the status: {e}"))?;
    let Some(o) = stored.as_object_mut() else { return Ok(None) };
    o.insert("status".into(), status);
    let value = stored.to_string();
    let len = value.len();
    let compare = bgpd_etcd::Compare::mod_revision(key.as_str(), bgpd_etcd::CompareResult::Equal, kv.mod_revision);
    let put = bgpd_etcd::RequestOp::put(key.as_str(), value);
    let txn = c.txn(vec![compare], vec![put], vec![]).await.map_err(|e| format!("etcd txn on {key}: {e}"))?;
    Ok(txn.succeeded.then_some(len))
}

async fn write_kubernetes(
    client: &kube::Client,
    found: &mut Option<&'static str>,
    req: &Request,
    status: &NodeStatus,
) -> Result<Option<usize>, String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let mut body = serde_json::to_value(status).map_err(|e| format!("encoding the status: {e}"))?;
    // A merge patch keeps what it does not name: sections no longer asked for go.
    if let Some(o) = body.as_object_mut() {
        for section in ["agent", "bgp", "routes"] {
            o.entry(section).or_insert(Value::Null);
        }
    }
    let patch = json!({ "status": body });
    let len = patch.to_string().len();
    let apis: Vec<&'static str> = match found {
        Some(api) => vec![*api],
        None => super::follow::APIS.to_vec(),
    };
    let mut last = String::new();
    for api in apis {
        let objects: Api<DynamicObject> = Api::all_with(client.clone(), &super::follow::resource(api));
        match objects.patch_status(&req.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                *found = Some(api);
                return Ok(Some(len));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                last = format!("{api}: {}", e.message);
                *found = None;
            }
            Err(e) => return Err(format!("patching the status of caliconodestatuses/{} in {api}: {e}", req.name)),
        }
    }
    // The object is gone (or its kind not served): nothing to write to.
    debug!("caliconodestatuses/{}: not found ({last})", req.name);
    Ok(None)
}

/// One request being served.
struct Entry {
    req: Request,
    /// When it is written next; `None`: never (period 0).
    next: Option<Instant>,
    /// The last error, logged once until it changes.
    error: Option<String>,
}

/// Starts the writer of node `node` for the datastore `spec`; `feed` is the
/// datastore's (read for the file datastore; etcd and Kubernetes are read
/// apart, [`super::sources`]).
pub fn spawn(spec: &DatastoreSpec, node: String, shared: Shared, rib: Option<RibHandle>, feed: watch::Receiver<Feed>) {
    let target = Target::for_datastore(spec);
    match spec {
        DatastoreSpec::File(_) => {
            tokio::spawn(run(target, shared, rib, super::sources::from_feed(&node, feed)));
        }
        DatastoreSpec::Etcd { access, prefix, .. } => {
            let reqs = super::sources::from_etcd(&node, access.clone(), prefix);
            tokio::spawn(run(target, shared, rib, reqs));
        }
        DatastoreSpec::Kubernetes { kubeconfig } => {
            let kubeconfig = kubeconfig.clone();
            tokio::spawn(async move {
                let client = crate::datastore::live::kube_client("node status", kubeconfig.as_deref(), |_| {}).await;
                let reqs = super::follow::spawn(&node, client.clone());
                run(Target::Kubernetes { client: Some(client), api: None }, shared, rib, reqs).await;
            });
        }
    }
}

/// Runs until `reqs` closes: writes the status of each request into `target`,
/// from `shared` and `rib`.
pub async fn run(mut target: Target, shared: Shared, rib: Option<RibHandle>, mut reqs: Requests) {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut read: Option<Arc<Vec<Request>>> = None;
    loop {
        let current = reqs.borrow_and_update().clone();
        if read.as_ref().is_none_or(|r| !Arc::ptr_eq(r, &current)) {
            let now = Instant::now();
            read = Some(current.clone());
            let names: BTreeSet<&String> = current.iter().map(|r| &r.name).collect();
            for gone in entries.keys().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>() {
                info!("node status: CalicoNodeStatus {gone} is gone; no longer written");
                entries.remove(&gone);
                if let Target::File { dir } = &target {
                    let _ = std::fs::remove_file(file_path(dir, &gone));
                }
            }
            for req in current.iter() {
                match entries.get_mut(&req.name) {
                    Some(e) if e.req.same_ask(req) => e.req = req.clone(),
                    _ => {
                        info!(
                            "node status: CalicoNodeStatus {}: {}",
                            req.name,
                            match req.period {
                                Some(p) => format!("writing every {} s", p.as_secs()),
                                None => "updatePeriodSeconds is 0: not written".into(),
                            }
                        );
                        let next = req.period.map(|_| now);
                        entries.insert(req.name.clone(), Entry { req: req.clone(), next, error: None });
                    }
                }
            }
        }
        let due = entries.values().filter_map(|e| e.next).min();
        tokio::select! {
            changed = reqs.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if due.is_some() => {
                write_due(&mut target, &mut entries, &shared, rib.as_ref()).await;
            }
        }
    }
}

/// Writes every entry that is due.
async fn write_due(
    target: &mut Target,
    entries: &mut BTreeMap<String, Entry>,
    shared: &Shared,
    rib: Option<&RibHandle>,
) {
    let now = Instant::now();
    let due: Vec<String> =
        entries.iter().filter(|(_, e)| e.next.is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect();
    if due.is_empty() {
        return;
    }
    let routes = due.iter().any(|n| entries[n].req.classes.routes);
    let snap = Snapshot::gather(shared, rib, routes).await;
    let wall = SystemTime::now();
    for name in due {
        let Some(e) = entries.get_mut(&name) else { continue };
        let Some(period) = e.req.period else { continue };
        let status = render(&snap, e.req.classes, wall);
        match target.write(&e.req, &status).await {
            Ok(Some(bytes)) => {
                debug!(bytes, "node status: CalicoNodeStatus {name} written");
                shared.lock().node_status_writes.0 += 1;
                if e.error.take().is_some() {
                    info!("node status: CalicoNodeStatus {name} written again");
                }
                e.next = Some(now + period);
            }
            Ok(None) => e.next = Some(now + RETRY.min(period)),
            Err(why) => {
                shared.lock().node_status_writes.1 += 1;
                if e.error.as_ref() != Some(&why) {
                    warn!("node status: CalicoNodeStatus {name}: {why}; trying again");
                }
                e.error = Some(why);
                e.next = Some(now + RETRY.min(period));
            }
        }
    }
}

/// The status `bgpd show status` prints: every class, now.
pub async fn current(shared: &Shared, rib: Option<&RibHandle>) -> NodeStatus {
    let snap = Snapshot::gather(shared, rib, true).await;
    render(&snap, Classes::ALL, SystemTime::now())
}
