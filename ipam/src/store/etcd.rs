//! The etcd v3 store: one key per object, Calico's etcdv3 key layout, and
//! compare-and-swap on each key's `mod_revision` inside one etcd transaction.
//!
//! Keys (under a prefix, by default Calico's `/calico/ipam/v2/`):
//!
//! * `assignment/ipv4/block/10.0.0.0-26` → `IPAMBlock` spec (JSON)
//! * `host/NODE/ipv4/block/10.0.0.0-26` → `BlockAffinity` spec
//! * `handle/HANDLE` → `IPAMHandle` spec
//!
//! Every value written has the field `"bgpd.io/ipam-owner": "bgpd-ipam"`
//! (Calico's Go decoder ignores it), and every value read is judged
//! ([`super::owner`]): one Calico's IPAM wrote is refused
//! ([`StoreError::Calico`]), never decoded, so never written back.

use std::time::Duration;

use bgpd_etcd::{Access, Client, Compare, CompareResult, ConnectOptions, RequestOp};
use ipnet::IpNet;

use super::owner::{self, CalicoObject, ObjectKind};
use super::{Expect, Key, Object, Scope, Store, StoreError, Versioned, Write};
use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

/// Calico's key prefix for IPAM state in etcd.
pub const DEFAULT_PREFIX: &str = bgpd_model::datastore::DEFAULT_IPAM_PREFIX;

/// IPAM state in etcd v3.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend { backend: "etcd", reason: e.to_string() }
}

fn family_dir(cidr: &IpNet) -> &'static str {
    match cidr {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    }
}

/// `10.0.0.0/26` → `10.0.0.0-26`, as Calico writes CIDRs in keys.
fn cidr_segment(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.addr(), cidr.prefix_len())
}

impl EtcdStore {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:2379`) using Calico's prefix.
    pub async fn connect(endpoint: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with_prefix(endpoint, DEFAULT_PREFIX).await
    }

    /// Connects using a custom key prefix (tests use one per run).
    pub async fn connect_with_prefix(endpoint: &str, prefix: &str) -> Result<EtcdStore, StoreError> {
        let access = Access { endpoints: vec![endpoint.to_string()], tls: None, credentials: None };
        EtcdStore::connect_to(&access, prefix).await
    }

    /// Connects to `access`'s endpoints, over TLS and as the etcd user when it
    /// says so, using the key prefix `prefix`.
    pub async fn connect_to(access: &Access, prefix: &str) -> Result<EtcdStore, StoreError> {
        let opts = ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ..access.connect_options()
        };
        let client = Client::connect(&access.endpoints, opts).await.map_err(backend)?;
        Ok(EtcdStore { client, prefix: prefix.to_string() })
    }

    /// The etcd key of an object.
    pub fn key_path(&self, key: &Key) -> String {
        match key {
            Key::Block(cidr) => format!("{}assignment/{}/block/{}", self.prefix, family_dir(cidr), cidr_segment(cidr)),
            Key::Affinity { node, cidr } => {
                format!("{}host/{node}/{}/block/{}", self.prefix, family_dir(cidr), cidr_segment(cidr))
            }
            Key::Handle(h) => format!("{}handle/{h}", self.prefix),
        }
    }

    fn scope_prefix(&self, scope: &Scope) -> String {
        match scope {
            Scope::Blocks => format!("{}assignment/", self.prefix),
            Scope::Affinities(Some(node)) => format!("{}host/{node}/", self.prefix),
            Scope::Affinities(None) => format!("{}host/", self.prefix),
            Scope::Handles => format!("{}handle/", self.prefix),
        }
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Object, StoreError> {
        let key = String::from_utf8_lossy(key);
        let rest = key.strip_prefix(&self.prefix).unwrap_or(&key);
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt { location: format!("etcd key {key}"), reason: e.to_string() };
        let kind = if rest.starts_with("assignment/") {
            ObjectKind::Block
        } else if rest.starts_with("host/") {
            ObjectKind::Affinity
        } else {
            ObjectKind::Handle
        };
        let mut value: serde_json::Value = serde_json::from_slice(value).map_err(corrupt)?;
        owner::take_marker(&mut value);
        if let Some(sign) = owner::calico_sign(kind, &value, &Default::default()) {
            return Err(StoreError::Calico(CalicoObject { kind, name: key.to_string(), sign }));
        }
        match kind {
            ObjectKind::Block => serde_json::from_value::<AllocationBlock>(value).map(Object::Block),
            ObjectKind::Affinity => serde_json::from_value::<BlockAffinity>(value).map(Object::Affinity),
            ObjectKind::Handle => serde_json::from_value::<IpamHandle>(value).map(Object::Handle),
        }
        .map_err(corrupt)
    }

    /// The JSON value of an object, with bgpd-ipam's marker (a field
    /// Calico's Go decoder ignores).
    fn encode(value: &Object) -> Result<Vec<u8>, StoreError> {
        let mut v = match value {
            Object::Block(b) => serde_json::to_value(b),
            Object::Affinity(a) => serde_json::to_value(a),
            Object::Handle(h) => serde_json::to_value(h),
        }
        .map_err(backend)?;
        if let Some(m) = v.as_object_mut() {
            m.insert(owner::OWNER_KEY.into(), owner::OWNER.into());
        }
        serde_json::to_vec(&v).map_err(backend)
    }
}

fn revision(r: i64) -> u64 {
    // etcd revisions are positive int64 values.
    u64::try_from(r).unwrap_or(0)
}

impl Store for EtcdStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        match self.client.get(self.key_path(key)).await.map_err(backend)? {
            None => Ok(None),
            Some(kv) => {
                Ok(Some(Versioned { value: self.decode(&kv.key, &kv.value)?, revision: revision(kv.mod_revision) }))
            }
        }
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        let (own, calico) = self.list_own(scope).await?;
        match calico.into_iter().next() {
            Some(c) => Err(StoreError::Calico(c)),
            None => Ok(own),
        }
    }

    async fn list_own(&self, scope: &Scope) -> Result<(Vec<Versioned<Object>>, Vec<CalicoObject>), StoreError> {
        let snapshot = self.client.get_prefix(self.scope_prefix(scope), None).await.map_err(backend)?;
        let (mut own, mut calico) = (Vec::new(), Vec::new());
        for kv in &snapshot.kvs {
            match self.decode(&kv.key, &kv.value) {
                Ok(value) => own.push(Versioned { value, revision: revision(kv.mod_revision) }),
                Err(StoreError::Calico(c)) => calico.push(c),
                Err(e) => return Err(e),
            }
        }
        Ok((own, calico))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut compares = Vec::with_capacity(writes.len());
        let mut ops = Vec::with_capacity(writes.len());
        for w in &writes {
            let path = self.key_path(&w.key);
            compares.push(match w.expect {
                // A key that does not exist has create_revision 0.
                Expect::Absent => Compare::create_revision(path.clone(), CompareResult::Equal, 0),
                Expect::Revision(r) => {
                    Compare::mod_revision(path.clone(), CompareResult::Equal, i64::try_from(r).map_err(backend)?)
                }
            });
            ops.push(match &w.value {
                Some(v) => RequestOp::put(path, EtcdStore::encode(v)?),
                None => RequestOp::delete(path),
            });
        }
        let resp = self.client.txn(compares, ops, Vec::new()).await.map_err(backend)?;
        if resp.succeeded {
            Ok(())
        } else {
            // etcd does not say which compare failed; name the first key.
            Err(StoreError::Conflict(writes.first().map(|w| w.key.clone()).unwrap_or(Key::Handle(String::new()))))
        }
    }
}

/// Calico's etcd prefix for `projectcalico.org/v3` resources.
pub const RESOURCES_PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

impl EtcdStore {
    /// Reads the network design (IPPools, IPAMConfiguration, IPReservations,
    /// Nodes) from Calico's v3 resource keys
    /// (`/calico/resources/v3/projectcalico.org/ippools/NAME`, …), where each
    /// value is the resource as JSON.
    pub async fn load_design(&self) -> Result<crate::design::Design, StoreError> {
        let snapshot = self.client.get_prefix(RESOURCES_PREFIX, None).await.map_err(backend)?;
        let mut docs = Vec::new();
        for kv in &snapshot.kvs {
            let key = String::from_utf8_lossy(&kv.key).to_string();
            let text = String::from_utf8_lossy(&kv.value).to_string();
            docs.push((std::path::PathBuf::from(key), text));
        }
        let refs: Vec<(&std::path::Path, &str)> = docs.iter().map(|(p, t)| (p.as_path(), t.as_str())).collect();
        crate::design::Design::parse(&refs)
            .map_err(|e| StoreError::Corrupt { location: "etcd resources".into(), reason: e.to_string() })
    }

    /// Writes a `projectcalico.org/v3` resource as Calico keeps it in etcd
    /// (`plural` is e.g. `ippools`, `nodes`, `ipamconfigurations`).
    pub async fn put_resource(&self, plural: &str, name: &str, resource: &serde_json::Value) -> Result<(), StoreError> {
        self.client.put(format!("{RESOURCES_PREFIX}{plural}/{name}"), resource.to_string()).await.map_err(backend)?;
        Ok(())
    }
}
