//! On the Kubernetes datastore, the CalicoNodeStatus objects are read here, not
//! by the datastore task: they are not part of the routing model, and a status
//! written by a node must not wake up every node's model reload. One list and
//! watch of `caliconodestatuses` (kube's watcher, with its backoff), in the
//! group that serves it (`crd.projectcalico.org/v1`, else
//! `projectcalico.org/v3`), each object parsed as it changes ([`Keeper`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::request::Keeper;
use super::sources::{log, publish, Requests};

/// The group versions that may serve CalicoNodeStatus, preferred first (as the
/// datastore prefers them).
pub const APIS: [&str; 2] = ["crd.projectcalico.org/v1", "projectcalico.org/v3"];

/// The resource of CalicoNodeStatus in `api` (`GROUP/VERSION`).
pub fn resource(api: &str) -> ApiResource {
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, "CalicoNodeStatus"), "caliconodestatuses")
}

/// The first of [`APIS`] that serves `caliconodestatuses`, asked every 30 s
/// until one does.
async fn discover(client: &kube::Client) -> &'static str {
    let mut said = false;
    loop {
        for api in APIS {
            if let Ok(list) = client.list_api_group_resources(api).await {
                if list.resources.iter().any(|r| r.name == "caliconodestatuses") {
                    return api;
                }
            }
        }
        if !said {
            info!("node status: no CalicoNodeStatus CRD is served; asking again every 30 s");
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Follows the CalicoNodeStatus objects through `client`; publishes node
/// `node`'s requests after each complete list and each change.
pub fn spawn(node: &str, client: kube::Client) -> Requests {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let mut keeper = Keeper::new(node);
    tokio::spawn(async move {
        let api = discover(&client).await;
        info!("node status: reading CalicoNodeStatus objects as {api}");
        let objects: Api<DynamicObject> = Api::all_with(client, &resource(api));
        let mut events = std::pin::pin!(watcher(objects, watcher::Config::default()).default_backoff());
        let mut listing: Option<Keeper> = None;
        let mut failed = false;
        let key = |o: &DynamicObject| {
            format!("kubernetes:caliconodestatuses/{}", o.metadata.name.clone().unwrap_or_default())
        };
        let text = |o: &DynamicObject| {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            // Bookkeeping the writer does not need.
            if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.retain(|k, _| k == "name" || k == "labels" || k == "annotations");
            }
            v["apiVersion"] = serde_json::json!(api);
            v["kind"] = serde_json::json!("CalicoNodeStatus");
            v.to_string()
        };
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(watcher::Event::Init) => {
                    listing = Some(Keeper::new(keeper.node()));
                    false
                }
                Ok(watcher::Event::InitApply(o)) => {
                    let list = listing.get_or_insert_with(|| Keeper::new(keeper.node()));
                    log(list.put(&key(&o), &text(&o)));
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(list) = listing.take() {
                        keeper = list;
                    }
                    true
                }
                Ok(watcher::Event::Apply(o)) => {
                    log(keeper.put(&key(&o), &text(&o)));
                    true
                }
                Ok(watcher::Event::Delete(o)) => {
                    keeper.delete(&key(&o));
                    true
                }
                Err(e) => {
                    if !failed {
                        warn!("node status: watching CalicoNodeStatus objects: {e}; retrying");
                    }
                    failed = true;
                    false
                }
            };
            if changed {
                failed = false;
                publish(&tx, &keeper);
                if tx.is_closed() {
                    return;
                }
            }
        }
    });
    rx
}
