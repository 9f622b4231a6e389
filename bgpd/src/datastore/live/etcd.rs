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
//! with the rest. Its blocks and the handles with floating IPs become IPAMBlock and
//! IPAMHandle documents ([`ipam`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bgpd_etcd::{Access, Client, ConnectOptions, KeepAlive, WatchEvent, WatchMessage, WatchSpec};
use tracing::{info, warn};

use super::{Backoff, Publisher};
use crate::datastore::source::{self, Source};

mod ipam;

use ipam::IpamEntries;

/// The key prefix bgpd reads when `?prefix=` is not given.
pub const DEFAULT_PREFIX: &str = "/calico/bgpd/";

/// The key prefix of the IPAM state when `?ipamPrefix=` is not given: Calico's, as
/// `bgpd-ipam` with `etcd:URL` writes it.
pub const DEFAULT_IPAM_PREFIX: &str = ::ipam::store::etcd::DEFAULT_PREFIX;

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
        let probe = Source { path: key.clone().into(), text };
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

/// What the datastore read: the objects under the prefix and the IPAM state.
struct Content {
    prefix: String,
    entries: Entries,
    ipam: IpamEntries,
}

impl Content {
    /// Takes a put of `key` (of either part; other keys are not ours).
    fn put(&mut self, key: String, value: &[u8], old: Option<&Old>) {
        if self.ipam.owns(&key) {
            self.ipam.put(key, value, old.map(|o| &o.ipam));
        } else if key.starts_with(&self.prefix) {
            self.entries.put(key, value, old.map(|o| &o.values));
        }
    }

    fn delete(&mut self, key: &str) {
        if self.ipam.owns(key) {
            self.ipam.delete(key);
        } else {
            self.entries.delete(key);
        }
    }

    /// Starts a full read; returns the values read so far.
    fn begin_resync(&mut self) -> Old {
        self.entries.notes.clear();
        Old { values: std::mem::take(&mut self.entries.values), ipam: self.ipam.begin_resync() }
    }

    /// Publishes the objects, then the IPAM documents.
    fn publish(&mut self, out: &Publisher) {
        let mut sources: Vec<Source> =
            self.entries.values.iter().map(|(k, v)| Source { path: k.into(), text: v.clone() }).collect();
        sources.extend(self.ipam.sources());
        let notes = self.entries.notes.values().chain(self.ipam.notes()).cloned().collect();
        out.content(sources, notes);
    }
}

/// The values before a resync, kept for keys whose new value is bad.
struct Old {
    values: BTreeMap<String, String>,
    ipam: BTreeMap<String, ipam::Value>,
}

pub(super) async fn run(access: Access, prefix: String, ipam_prefix: String, out: Publisher) {
    let mut content =
        Content { prefix: prefix.clone(), entries: Entries::default(), ipam: IpamEntries::new(&ipam_prefix) };
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
        tls: access.tls.clone(),
        credentials: access.credentials.clone(),
        ..ConnectOptions::default()
    };
    let client = timed("connect", Client::connect(&access.endpoints, opts)).await?;
    let snapshot = timed("get", client.get_prefix(prefix, None)).await?;
    let revision = snapshot.revision;
    // The IPAM keys as they were at the same revision: one consistent snapshot.
    let ipam = timed("get of the IPAM keys", client.get_prefix(ipam_prefix, Some(revision))).await?;
    let old = content.begin_resync();
    for kv in snapshot.kvs.iter().chain(&ipam.kvs) {
        content.put(String::from_utf8_lossy(&kv.key).into_owned(), &kv.value, Some(&old));
    }
    info!(keys = content.entries.values.len(), ipam_keys = ipam.kvs.len(), revision, "etcd datastore read");
    content.publish(out);
    *backoff = Backoff::new();

    let (mut stream, _) = timed("watch", client.watch(WatchSpec::prefix(prefix).from_revision(revision + 1))).await?;
    // A second watch on the same stream, unless the first covers the IPAM keys.
    if !ipam_prefix.starts_with(prefix) {
        let spec = WatchSpec::prefix(ipam_prefix).from_revision(revision + 1);
        timed("watch of the IPAM keys", stream.create(spec)).await?;
    }
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            // Stop with the daemon even when nothing changes.
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if out.closed() { return Ok(()) }
                continue;
            }
        };
        let events = match msg {
            Ok(Some(WatchMessage::Events { events, .. })) => events,
            Ok(Some(WatchMessage::Progress { .. })) => continue,
            // Cancelled when its start revision was compacted away: a resync reads
            // everything again.
            Ok(Some(WatchMessage::Cancelled(c))) => return Err(format!("watch: {}", bgpd_etcd::Error::from(c))),
            Ok(None) => return Err("the watch stream ended".into()),
            Err(e) => return Err(format!("watch: {e}")),
        };
        for ev in events {
            match ev {
                WatchEvent::Put(kv) => content.put(String::from_utf8_lossy(&kv.key).into_owned(), &kv.value, None),
                WatchEvent::Delete(kv) => content.delete(&String::from_utf8_lossy(&kv.key)),
            }
        }
        content.publish(out);
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_resync_keeps_the_previous_value_of_a_bad_key() {
        let mut e = Entries::default();
        e.put("/p/a".into(), b"kind: Secret\n", None);
        let old = std::mem::take(&mut e.values);
        e.put("/p/a".into(), b"{", Some(&old));
        assert_eq!(e.values["/p/a"], "kind: Secret\n");
    }
}
