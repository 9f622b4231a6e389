//! On the Kubernetes datastore, the CalicoNodeStatus objects are read here, not
//! by the datastore task: they are not part of the routing model, and a status
//! written by a node must not wake up every node's model reload. One list and
//! watch of `caliconodestatuses` (kube's watcher, with its backoff), in the
//! group that serves it (`crd.projectcalico.org/v1`, else
//! `projectcalico.org/v3`), published as [`Source`]s in the form the file and
//! etcd datastores give the writer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::datastore::live::Feed;
use crate::datastore::Source;

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

/// Follows the CalicoNodeStatus objects through `client`; the receiver gets
/// them as sources (`kubernetes:caliconodestatuses/NAME`, the object as JSON)
/// after each complete list and each change.
pub fn spawn(client: kube::Client) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed::default());
    tokio::spawn(async move {
        let api = discover(&client).await;
        info!("node status: reading CalicoNodeStatus objects as {api}");
        let objects: Api<DynamicObject> = Api::all_with(client, &resource(api));
        let mut events = std::pin::pin!(watcher(objects, watcher::Config::default()).default_backoff());
        let mut current: BTreeMap<String, String> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, String>> = None;
        let mut failed = false;
        let text = |o: &DynamicObject| {
            let name = o.metadata.name.clone().unwrap_or_default();
            let mut v = serde_json::to_value(o).unwrap_or_default();
            // Bookkeeping the writer does not need.
            if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.retain(|k, _| k == "name" || k == "labels" || k == "annotations");
            }
            v["apiVersion"] = serde_json::json!(api);
            v["kind"] = serde_json::json!("CalicoNodeStatus");
            (name, v.to_string())
        };
        while let Some(event) = events.next().await {
            let publish = match event {
                Ok(watcher::Event::Init) => {
                    listing = Some(BTreeMap::new());
                    false
                }
                Ok(watcher::Event::InitApply(o)) => {
                    let (name, t) = text(&o);
                    listing.get_or_insert_with(BTreeMap::new).insert(name, t);
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    current = listing.take().unwrap_or_default();
                    true
                }
                Ok(watcher::Event::Apply(o)) => {
                    let (name, t) = text(&o);
                    current.insert(name, t);
                    true
                }
                Ok(watcher::Event::Delete(o)) => {
                    current.remove(&o.metadata.name.unwrap_or_default());
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
            if publish {
                failed = false;
                let sources = current
                    .iter()
                    .map(|(name, t)| Source {
                        path: format!("kubernetes:caliconodestatuses/{name}").into(),
                        text: t.clone(),
                    })
                    .collect();
                let feed = Feed { sources: Some(Arc::new(sources)), notes: Vec::new(), unreachable: None };
                if tx.send(feed).is_err() {
                    return;
                }
            }
        }
    });
    rx
}
