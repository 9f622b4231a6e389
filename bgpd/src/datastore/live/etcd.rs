//! The etcd v3 datastore: every key under the prefix holds one object (or a
//! `---`-separated stream of them) as YAML or JSON, exactly as a file of the file
//! datastore would. The recommended layout is `<prefix><kind>/<name>` for
//! cluster-wide objects and `<prefix><kind>/<namespace>/<name>` for namespaced ones
//! (`/calico/bgpd/bgppeers/tor-1`, `/calico/bgpd/secrets/kube-system/bgp-password`);
//! bgpd reads the kind and name from the value, the key only orders the objects
//! (byte order, as in a directory) and names them in messages.
//!
//! One full read (`get` of the prefix), then a watch from the revision after it;
//! on any error (etcd down, watch cancelled or compacted) the datastore is marked
//! unreachable, the content read so far stays, and after a backoff the client
//! connects again and reads everything again (a resync), then watches again.
//! Each connection reads the TLS files again and authenticates again (the
//! `access` of the `--datastore` string and Calico's `ETCD_*` variables), so
//! renewed certificates are used from the next reconnection on.
//!
//! A value that is not well-formed YAML keeps the key's previous value (if any),
//! with a note in `bgpd show config`: one bad write must not take objects away.
//!
//! The IPAM state that `bgpd-ipam` (or Calico) keeps in the same etcd, under
//! Calico's `/calico/ipam/v2/` (`?ipamPrefix=` to change it), is read by the same
//! client in the same way: its keys are fetched at the revision of the first read
//! and watched from the same revision on, on the same watch stream, and resynced
//! with the rest. Its blocks and the handles with floating IPs are handed on typed,
//! as decoded ([`ipam`]).
//!
//! Calico's own resource keys for the kinds both bgpd and `bgpd-ipam` read
//! ([`CALICO_KINDS`]: IPPools and Nodes, under
//! `/calico/resources/v3/projectcalico.org/`, e.g. `…/ippools/NAME`) are read and
//! watched the same way, so that one write (by `calicoctl` with an etcd datastore,
//! or by hand) serves both programs. An object defined under both bgpd's prefix and
//! Calico's path is taken from Calico's path (it is what `bgpd-ipam` allocates
//! from), and `bgpd show config` warns of the copy under bgpd's prefix: Calico's
//! sources are published after bgpd's, and a later definition replaces an earlier
//! one (`datastore::Builder::object`). Designs kept only under bgpd's prefix read
//! as before.
//!
//! Calico's WorkloadEndpoints (`…/workloadendpoints/NAMESPACE/NAME`, which Calico's
//! CNI plugin writes with an etcd datastore) are read and watched too, for BGPPeers
//! with `localWorkloadSelector`, but only those of this node (`spec.node`) are kept:
//! the others are looked at once and dropped, so a node holds its own pods, not the
//! cluster's, and another node's pod churn publishes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bgpd_etcd::{Access, Client, ConnectOptions, KeepAlive, WatchEvent, WatchMessage, WatchSpec};
use tracing::{info, warn};

use super::{Backoff, Publisher};
use crate::datastore::source::{self, SourceText};

mod ipam;

use ipam::IpamEntries;

/// Calico's key prefix of its `projectcalico.org/v3` resources in etcd, where
/// `calicoctl` and `bgpd-ipam` read them.
pub const CALICO_RESOURCES_PREFIX: &str = ::ipam::store::etcd::RESOURCES_PREFIX;

/// The kinds (plurals) read from Calico's resource keys: those `bgpd-ipam` reads
/// too (pools to allocate from, Nodes for pools' `nodeSelector`), so one write
/// serves both. bgpd's other kinds stay under its own prefix.
pub const CALICO_KINDS: [&str; 2] = ["ippools", "nodes"];

/// Calico's kind (plural) whose keys are read for this node's objects only.
pub const CALICO_WORKLOADS: &str = "workloadendpoints";

/// How long a connect or a full read may take before etcd counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The accepted value per key, and the notes about rejected ones.
#[derive(Default)]
struct Entries {
    values: BTreeMap<String, String>,
    notes: BTreeMap<String, String>,
}

impl Entries {
    /// Takes `value` for `key` if it is well-formed YAML; otherwise keeps the old
    /// value and notes why.
    fn put(&mut self, key: String, value: &[u8], old: Option<&BTreeMap<String, String>>) {
        let text = match std::str::from_utf8(value) {
            Ok(t) => t.to_string(),
            Err(e) => return self.reject(key, format!("not UTF-8 text ({e})"), old),
        };
        let probe = SourceText { path: key.clone().into(), text };
        match source::objects(&probe, &mut Vec::new(), &mut Vec::new()) {
            Ok(()) => {
                self.notes.remove(&key);
                self.values.insert(key, probe.text);
            }
            Err(e) => self.reject(key, e.to_string(), old),
        }
    }

    fn reject(&mut self, key: String, reason: String, old: Option<&BTreeMap<String, String>>) {
        let kept = old.unwrap_or(&self.values).get(&key).cloned();
        let what = if kept.is_some() { "its previous value is kept" } else { "ignored" };
        warn!("etcd key {key}: {reason}; {what}");
        self.notes.insert(key.clone(), format!("etcd key {key}: {reason}; {what}"));
        if let Some(v) = kept {
            self.values.insert(key, v);
        }
    }

    fn delete(&mut self, key: &str) {
        self.values.remove(key);
        self.notes.remove(key);
    }
}

/// What the datastore read: the objects under the prefix, those under Calico's
/// resource keys, and the IPAM state.
struct Content {
    prefix: String,
    entries: Entries,
    /// The keys of [`CALICO_KINDS`] under [`CALICO_RESOURCES_PREFIX`].
    calico: Entries,
    /// This node's keys of [`CALICO_WORKLOADS`] under [`CALICO_RESOURCES_PREFIX`].
    workloads: Entries,
    /// The node whose workload endpoints are kept (empty: none).
    node: String,
    ipam: IpamEntries,
}

/// `…/workloadendpoints/`: Calico's workload endpoint keys.
fn workloads_prefix() -> String {
    format!("{CALICO_RESOURCES_PREFIX}{CALICO_WORKLOADS}/")
}

/// The `spec.node` of a workload endpoint's value (JSON as Calico writes it, or
/// YAML); `None` when unreadable.
fn workload_node(value: &[u8]) -> Option<String> {
    let v: serde_yaml::Value = serde_yaml::from_slice(value).ok()?;
    v.get("spec")?.get("node")?.as_str().map(str::to_string)
}

/// Whether `key` is a resource of one of [`CALICO_KINDS`] under Calico's prefix.
fn is_calico_resource(key: &str) -> bool {
    calico_prefixes().any(|p| key.starts_with(&p))
}

/// `/calico/resources/v3/projectcalico.org/PLURAL/` for each of [`CALICO_KINDS`].
fn calico_prefixes() -> impl Iterator<Item = String> {
    CALICO_KINDS.iter().map(|plural| format!("{CALICO_RESOURCES_PREFIX}{plural}/"))
}

impl Content {
    /// Whether `key` is read by the node status, not the model: its
    /// CalicoNodeStatus objects, which every node writes every few seconds.
    fn not_ours(&self, key: &str) -> bool {
        crate::daemon::nodestatus::sources::etcd_owns(&self.prefix, key)
    }

    /// Takes a put of `key` (of either part; other keys are not ours).
    /// Whether it was one of ours.
    fn put(&mut self, key: String, value: &[u8], old: Option<&Old>) -> bool {
        if self.ipam.owns(&key) {
            self.ipam.put(key, value, old.map(|o| &o.ipam));
        } else if key.starts_with(&workloads_prefix()) {
            // Another node's endpoint is not ours; one that moved away is gone. A
            // value that names no node replaces one of ours as any bad value does
            // (kept with a note, or refused by the model naming the field).
            let ours = match workload_node(value) {
                Some(n) => !self.node.is_empty() && n == self.node,
                // During a resync the values read before are in `old`.
                None => self.workloads.values.contains_key(&key) || old.is_some_and(|o| o.workloads.contains_key(&key)),
            };
            if !ours {
                return self.workloads.values.remove(&key).is_some() | self.workloads.notes.remove(&key).is_some();
            }
            self.workloads.put(key, value, old.map(|o| &o.workloads));
        } else if is_calico_resource(&key) {
            self.calico.put(key, value, old.map(|o| &o.calico));
        } else if key.starts_with(&self.prefix) && !self.not_ours(&key) {
            self.entries.put(key, value, old.map(|o| &o.values));
        } else {
            return false;
        }
        true
    }

    /// Takes a delete of `key`; whether it was one of ours.
    fn delete(&mut self, key: &str) -> bool {
        if self.ipam.owns(key) {
            self.ipam.delete(key);
        } else if key.starts_with(&workloads_prefix()) {
            return self.workloads.values.remove(key).is_some() | self.workloads.notes.remove(key).is_some();
        } else if is_calico_resource(key) {
            self.calico.delete(key);
        } else if !self.not_ours(key) {
            self.entries.delete(key);
        } else {
            return false;
        }
        true
    }

    /// Starts a full read; returns the values read so far.
    fn begin_resync(&mut self) -> Old {
        self.entries.notes.clear();
        self.calico.notes.clear();
        self.workloads.notes.clear();
        Old {
            values: std::mem::take(&mut self.entries.values),
            calico: std::mem::take(&mut self.calico.values),
            workloads: std::mem::take(&mut self.workloads.values),
            ipam: self.ipam.begin_resync(),
        }
    }

    /// The sources in the order the model reads them: bgpd's prefix, then Calico's
    /// resource keys (which thus win over a copy under bgpd's prefix). The IPAM
    /// objects come after them, typed.
    fn sources(&self) -> Vec<SourceText> {
        let text = |(k, v): (&String, &String)| SourceText { path: k.into(), text: v.clone() };
        let mut sources: Vec<SourceText> = self.entries.values.iter().map(text).collect();
        sources.extend(self.calico.values.iter().map(text));
        sources.extend(self.workloads.values.iter().map(text));
        sources
    }

    fn publish(&mut self, out: &Publisher) {
        let notes = self
            .entries
            .notes
            .values()
            .chain(self.calico.notes.values())
            .chain(self.workloads.notes.values())
            .chain(self.ipam.notes())
            .cloned()
            .collect();
        out.content(self.sources(), self.ipam.objects(), notes);
    }
}

/// The values before a resync, kept for keys whose new value is bad.
struct Old {
    values: BTreeMap<String, String>,
    calico: BTreeMap<String, String>,
    workloads: BTreeMap<String, String>,
    ipam: BTreeMap<String, ipam::Value>,
}

/// Reads and follows the datastore; `node`'s workload endpoints are kept of
/// Calico's (empty: none).
pub(super) async fn run(access: Access, prefix: String, ipam_prefix: String, node: String, out: Publisher) {
    let mut content = Content {
        prefix: prefix.clone(),
        entries: Entries::default(),
        calico: Entries::default(),
        workloads: Entries::default(),
        node,
        ipam: IpamEntries::new(&ipam_prefix),
    };
    let mut backoff = Backoff::new();
    while !out.closed() {
        let Err(e) = session(&access, &prefix, &ipam_prefix, &mut content, &out, &mut backoff).await else {
            return;
        };
        let delay = backoff.next();
        warn!("etcd datastore {}: {e}; keeping the last good model, retrying in {delay:?}", access.endpoints.join(","));
        out.unreachable(e);
        tokio::time::sleep(delay).await;
    }
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// Connects (over TLS and as the etcd user when `access` says so), reads
/// everything (the prefix, then the IPAM prefix at the same revision), then
/// follows the watch of both until it fails (`Err`) or the daemon is gone
/// (`Ok`).
async fn session(
    access: &Access,
    prefix: &str,
    ipam_prefix: &str,
    content: &mut Content,
    out: &Publisher,
    backoff: &mut Backoff,
) -> Result<(), String> {
    // HTTP/2 keepalives notice a silently dead connection within ~10 s.
    let opts = ConnectOptions {
        connect_timeout: REQUEST_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        keep_alive: Some(KeepAlive {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            while_idle: true,
        }),
        ..access.connect_options()
    };
    let client = timed("connect", Client::connect(&access.endpoints, opts)).await?;
    let snapshot = timed("get", client.get_prefix(prefix, None)).await?;
    let revision = snapshot.revision;
    // The IPAM keys as they were at the same revision: one consistent snapshot.
    let ipam = timed("get of the IPAM keys", client.get_prefix(ipam_prefix, Some(revision))).await?;
    // Calico's resources of the kinds both programs read, at the same revision.
    let mut calico = Vec::new();
    for p in calico_prefixes().chain([workloads_prefix()]).filter(|p| !p.starts_with(prefix)) {
        calico.extend(timed("get of Calico's resource keys", client.get_prefix(p.as_str(), Some(revision))).await?.kvs);
    }
    let old = content.begin_resync();
    for kv in snapshot.kvs.iter().chain(&ipam.kvs).chain(&calico) {
        content.put(String::from_utf8_lossy(&kv.key).into_owned(), &kv.value, Some(&old));
    }
    info!(
        keys = content.entries.values.len(),
        calico_keys = content.calico.values.len(),
        workload_endpoints = content.workloads.values.len(),
        ipam_keys = ipam.kvs.len(),
        revision,
        "etcd datastore read"
    );
    content.publish(out);
    *backoff = Backoff::new();

    let (mut stream, _) = timed("watch", client.watch(WatchSpec::prefix(prefix).from_revision(revision + 1))).await?;
    // A second watch on the same stream, unless the first covers the IPAM keys.
    if !ipam_prefix.starts_with(prefix) {
        let spec = WatchSpec::prefix(ipam_prefix).from_revision(revision + 1);
        timed("watch of the IPAM keys", stream.create(spec)).await?;
    }
    for p in calico_prefixes().chain([workloads_prefix()]).filter(|p| !p.starts_with(prefix)) {
        let spec = WatchSpec::prefix(p.as_str()).from_revision(revision + 1);
        timed("watch of Calico's resource keys", stream.create(spec)).await?;
    }
    while let Some(events) = next_events(&mut stream, || out.closed()).await? {
        let mut ours = false;
        for ev in events {
            ours |= match ev {
                WatchEvent::Put(kv) => content.put(String::from_utf8_lossy(&kv.key).into_owned(), &kv.value, None),
                WatchEvent::Delete(kv) => content.delete(&String::from_utf8_lossy(&kv.key)),
            };
        }
        // The node statuses every node writes change nothing of the model:
        // nothing to publish (at 1,000 nodes they are 100 writes a second).
        if ours {
            content.publish(out);
        }
    }
    Ok(())
}

/// The next batch of events of a watch; `Ok(None)` once `closed` says nobody
/// reads them any more (asked every second, so that a reader stops with the
/// daemon even when nothing changes). A watch cancelled because its start
/// revision was compacted away is an error: the caller reads everything again.
pub(crate) async fn next_events(
    stream: &mut bgpd_etcd::Watch,
    closed: impl Fn() -> bool,
) -> Result<Option<Vec<WatchEvent>>, String> {
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if closed() { return Ok(None) }
                continue;
            }
        };
        match msg {
            Ok(Some(WatchMessage::Events { events, .. })) => return Ok(Some(events)),
            Ok(Some(WatchMessage::Progress { .. })) => continue,
            Ok(Some(WatchMessage::Cancelled(c))) => return Err(format!("watch: {}", bgpd_etcd::Error::from(c))),
            Ok(None) => return Err("the watch stream ended".into()),
            Err(e) => return Err(format!("watch: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use bgpd_model::datastore::{DEFAULT_IPAM_PREFIX, DEFAULT_PREFIX};

    use super::*;

    #[test]
    fn a_bad_value_keeps_the_previous_one() {
        let mut e = Entries::default();
        e.put("/p/a".into(), b"kind: Secret\n", None);
        e.put("/p/a".into(), b"kind: [Secret\n", None);
        assert_eq!(e.values["/p/a"], "kind: Secret\n");
        assert!(e.notes["/p/a"].contains("previous value is kept"), "{:?}", e.notes);
        e.put("/p/b".into(), &[0xff, 0xfe], None);
        assert!(!e.values.contains_key("/p/b"));
        assert!(e.notes["/p/b"].contains("not UTF-8"));
        e.put("/p/a".into(), b"kind: Node\n", None);
        assert!(!e.notes.contains_key("/p/a"), "a good value clears the note");
        e.delete("/p/b");
        assert!(e.notes.is_empty());
    }

    fn pool(name: &str, cidr: &str) -> String {
        serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": name, "uid": "0b0c", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"cidr": cidr, "blockSize": 26, "ipipMode": "Never", "natOutgoing": true},
        })
        .to_string()
    }

    #[test]
    fn node_status_writes_are_not_the_models() {
        let mut c = content();
        let status = format!("{DEFAULT_PREFIX}caliconodestatuses/n1");
        assert!(!c.put(status.clone(), b"kind: CalicoNodeStatus\n", None), "a status write publishes nothing");
        assert!(!c.delete(&status));
        assert!(c.entries.values.is_empty());
        let peer = format!("{DEFAULT_PREFIX}bgppeers/tor");
        assert!(c.put(peer.clone(), b"kind: BGPPeer\n", None));
        assert!(c.delete(&peer));
        assert!(!c.put("/elsewhere/x".into(), b"kind: Node\n", None), "not under a prefix read");
    }

    /// Workload endpoints (BGPPeer localWorkloadSelector) are read from bgpd's
    /// prefix, as any of its kinds, and from Calico's own keys for this node only:
    /// another node's are dropped at once, and their changes publish nothing.
    #[test]
    fn workload_endpoints_are_this_nodes_of_calicos_keys() {
        let mut c = content();
        let wep = |name: &str, node: &str| {
            serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": name, "namespace": "virt", "labels": {"app": "router"}},
                "spec": {"node": node, "pod": "vm", "ipNetworks": ["10.244.1.7/32"]},
            })
            .to_string()
        };
        let calico = |name: &str| format!("{CALICO_RESOURCES_PREFIX}workloadendpoints/virt/{name}");
        assert!(c.put(format!("{DEFAULT_PREFIX}workloadendpoints/virt/a"), wep("a", "n1").as_bytes(), None));
        assert!(c.put(calico("n1-k8s-vm-eth0"), wep("n1-k8s-vm-eth0", "n1").as_bytes(), None));
        assert!(!c.put(calico("n2-k8s-vm-eth0"), wep("n2-k8s-vm-eth0", "n2").as_bytes(), None), "not ours");
        assert!(!c.delete(&calico("n2-k8s-vm-eth0")), "nothing to publish");
        let (m, problems) = crate::datastore::parse_sources(&c.sources()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        let keys: Vec<&String> = m.workload_endpoints.keys().collect();
        assert_eq!(keys, ["virt/a", "virt/n1-k8s-vm-eth0"]);
        // Rescheduled elsewhere (a new value naming another node): gone from here.
        assert!(c.put(calico("n1-k8s-vm-eth0"), wep("n1-k8s-vm-eth0", "n3").as_bytes(), None));
        assert!(c.workloads.values.is_empty());
        assert!(c.put(calico("n1-k8s-vm-eth0"), wep("n1-k8s-vm-eth0", "n1").as_bytes(), None));
        // A bad write to one of ours keeps the last good value, with a note, also
        // when a resync reads it.
        assert!(c.put(calico("n1-k8s-vm-eth0"), b"{not yaml", None));
        assert_eq!(c.workloads.values.len(), 1);
        assert_eq!(c.workloads.notes.len(), 1);
        let old = c.begin_resync();
        assert!(c.put(calico("n1-k8s-vm-eth0"), b"{not yaml", Some(&old)));
        assert_eq!(c.workloads.values.len(), 1, "kept through the resync");
        assert!(c.delete(&calico("n1-k8s-vm-eth0")));
        assert!(c.workloads.values.is_empty());
        // Without a node (a tool reading the datastore), none are kept.
        c.node.clear();
        assert!(!c.put(calico("n1-k8s-vm-eth0"), wep("n1-k8s-vm-eth0", "n1").as_bytes(), None));
    }

    fn content() -> Content {
        Content {
            prefix: DEFAULT_PREFIX.into(),
            entries: Entries::default(),
            calico: Entries::default(),
            workloads: Entries::default(),
            node: "n1".into(),
            ipam: IpamEntries::new(DEFAULT_IPAM_PREFIX),
        }
    }

    /// Issue 20 (b): Calico's resource keys of IPPools and Nodes are read beside
    /// bgpd's prefix; an object defined in both is Calico's, with a warning.
    #[test]
    fn calicos_resource_keys_are_read_and_win_over_bgpds_prefix() {
        let mut c = content();
        let calico = format!("{CALICO_RESOURCES_PREFIX}ippools/pods");
        c.put(calico.clone(), pool("pods", "10.244.0.0/16").as_bytes(), None);
        c.put(format!("{CALICO_RESOURCES_PREFIX}ippools/other"), pool("other", "10.250.0.0/16").as_bytes(), None);
        // Other Calico kinds (policies…) are not bgpd's, nor a workload endpoint of no node.
        c.put(format!("{CALICO_RESOURCES_PREFIX}workloadendpoints/default/x"), b"kind: WorkloadEndpoint\n", None);
        let (m, problems) = crate::datastore::parse_sources(&c.sources()).unwrap();
        assert!(problems.iter().all(|p| p.severity < crate::datastore::Severity::Warning), "{problems:#?}");
        let cidrs: Vec<String> = m.ip_pools.values().map(|p| p.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.250.0.0/16", "10.244.0.0/16"], "by name: other, pods");

        // The same pool under bgpd's prefix, with another CIDR: Calico's is used.
        c.put(format!("{DEFAULT_PREFIX}ippools/pods"), pool("pods", "10.99.0.0/16").as_bytes(), None);
        let (m, problems) = crate::datastore::parse_sources(&c.sources()).unwrap();
        assert_eq!(m.ip_pools["pods"].cidr.to_string(), "10.244.0.0/16");
        let warning = problems.iter().find(|p| p.severity == crate::datastore::Severity::Warning);
        let text = warning.map(ToString::to_string).unwrap_or_default();
        assert!(text.contains("/calico/bgpd/ippools/pods") && text.contains("replaces"), "{problems:#?}");

        // Calico's deleted: bgpd's copy is used again (backwards compatible).
        c.delete(&calico);
        let (m, _) = crate::datastore::parse_sources(&c.sources()).unwrap();
        assert_eq!(m.ip_pools["pods"].cidr.to_string(), "10.99.0.0/16");
        // A bad value at Calico's key keeps its previous one, with a note.
        c.put(calico.clone(), pool("pods", "10.244.0.0/16").as_bytes(), None);
        c.put(calico.clone(), b"{", None);
        assert!(c.calico.notes[&calico].contains("previous value is kept"));
        // A Node as calico-node writes it in etcd: its other fields are no problem.
        let node = serde_json::json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "n1", "uid": "9f1c", "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"kubernetes.io/hostname": "n1"}},
            "spec": {"bgp": {"ipv4Address": "10.0.0.11/24", "ipv4IPIPTunnelAddr": "10.244.0.1"},
                     "addresses": [{"address": "10.0.0.11", "type": "InternalIP"}],
                     "orchRefs": [{"nodeName": "n1", "orchestrator": "k8s"}]},
            "status": {"podCIDRs": ["10.244.0.0/24"]},
        });
        c.put(format!("{CALICO_RESOURCES_PREFIX}nodes/n1"), node.to_string().as_bytes(), None);
        let (m, problems) = crate::datastore::parse_sources(&c.sources()).unwrap();
        assert!(m.nodes["n1"].bgp.is_some());
        let node_problems: Vec<_> = problems
            .iter()
            .filter(|p| p.severity >= crate::datastore::Severity::Warning && p.to_string().contains("n1"))
            .collect();
        assert!(node_problems.is_empty(), "{node_problems:#?}");
        assert!(is_calico_resource("/calico/resources/v3/projectcalico.org/nodes/n1"));
        assert!(!is_calico_resource("/calico/resources/v3/projectcalico.org/bgppeers/p"));
    }

    /// A real etcd (Debian `etcd-server`) from the test bed, on loopback ports, gone
    /// on drop.
    fn start_etcd() -> testgate::testbed::Etcd {
        let config = testgate::testbed::EtcdConfig::loopback("live-etcd-test").expect("free loopback ports");
        testgate::testbed::Etcd::start(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Issue 20 (b) against a real etcd: an IPPool and a Node written once, where
    /// `bgpd-ipam` reads them (`ipam::store::etcd::EtcdStore::put_resource`), reach
    /// the daemon's model, and so do their changes.
    #[tokio::test]
    async fn one_write_at_calicos_keys_serves_the_daemon_and_bgpd_ipam() {
        if !testgate::require_cmd("one_write_at_calicos_keys_serves_the_daemon_and_bgpd_ipam", "etcd") {
            return;
        }
        let etcd = start_etcd();
        let store = ::ipam::store::etcd::EtcdStore::connect(etcd.url()).await.unwrap();
        let pool_v = |cidr: &str| serde_json::from_str::<serde_json::Value>(&pool("pods", cidr)).unwrap();
        store.put_resource("ippools", "pods", &pool_v("10.244.0.0/16")).await.unwrap();
        let node = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"rack": "r1"}},
            "spec": {"bgp": {"ipv4Address": "10.0.0.11/24"}},
        });
        store.put_resource("nodes", "n1", &node).await.unwrap();
        // What bgpd-ipam reads, from the same keys.
        let design = store.load_design().await.unwrap();
        assert_eq!(design.pools[0].cidr.to_string(), "10.244.0.0/16");

        let (tx, mut rx) = tokio::sync::watch::channel(super::super::Feed::default());
        let access = Access { endpoints: vec![etcd.url().to_string()], tls: None, credentials: None };
        let task =
            tokio::spawn(run(access, DEFAULT_PREFIX.into(), DEFAULT_IPAM_PREFIX.into(), "n1".into(), Publisher { tx }));
        let model = |f: &super::super::Feed| f.sources.as_ref().map(|s| crate::datastore::parse_sources(s).unwrap().0);
        let wait = |rx: &mut tokio::sync::watch::Receiver<super::super::Feed>, cidr: &'static str| {
            let mut rx = rx.clone();
            async move {
                let ok = |f: &super::super::Feed| {
                    model(f).is_some_and(|m| m.ip_pools.get("pods").is_some_and(|p| p.cidr.to_string() == cidr))
                };
                let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(ok)).await.is_ok();
                assert!(waited, "pool {cidr} never published; last: {:?}", rx.borrow().sources);
            }
        };
        wait(&mut rx, "10.244.0.0/16").await;
        let m = model(&rx.borrow()).unwrap();
        assert_eq!(m.nodes["n1"].labels.get("rack").map(String::as_str), Some("r1"));
        assert!(m.nodes["n1"].bgp.is_some());
        // A change at Calico's key is watched.
        store.put_resource("ippools", "pods", &pool_v("10.245.0.0/16")).await.unwrap();
        wait(&mut rx, "10.245.0.0/16").await;
        // Calico's workload endpoints, as its CNI plugin writes them: n1's only.
        let wep = |node: &str| {
            serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": format!("{node}-k8s-vm-eth0"), "namespace": "virt"},
                "spec": {"node": node, "pod": "vm", "ipNetworks": ["10.244.1.7/32"]},
            })
        };
        store.put_resource("workloadendpoints", "virt/n2-k8s-vm-eth0", &wep("n2")).await.unwrap();
        store.put_resource("workloadendpoints", "virt/n1-k8s-vm-eth0", &wep("n1")).await.unwrap();
        let mut rx2 = rx.clone();
        let has = |f: &super::super::Feed| model(f).is_some_and(|m| !m.workload_endpoints.is_empty());
        assert!(tokio::time::timeout(Duration::from_secs(10), rx2.wait_for(has)).await.is_ok(), "n1's endpoint read");
        let m = model(&rx.borrow()).unwrap();
        assert_eq!(m.workload_endpoints.keys().collect::<Vec<_>>(), ["virt/n1-k8s-vm-eth0"]);
        task.abort();
    }

    #[test]
    fn a_resync_keeps_the_previous_value_of_a_bad_key() {
        let mut e = Entries::default();
        e.put("/p/a".into(), b"kind: Secret\n", None);
        let old = std::mem::take(&mut e.values);
        e.put("/p/a".into(), b"{", Some(&old));
        assert_eq!(e.values["/p/a"], "kind: Secret\n");
    }
}
