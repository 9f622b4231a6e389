//! The Kubernetes store: Calico's `crd.projectcalico.org/v1` `IPAMBlock`,
//! `BlockAffinity` and `IPAMHandle` objects through the API server, with
//! `resourceVersion` as the revision.
//!
//! The API server has no multi-object transaction, so [`Store::commit`] of
//! several writes is made safe the way Calico's own IPAM does it: every
//! object is read first and its revision checked; the writes are then applied
//! one by one, each conditional on its `resourceVersion` (`create` for absent
//! objects, `replace` with the revision, `delete` with a `resourceVersion`
//! precondition); if one fails, the ones already applied are undone (in
//! reverse order) and the failure is returned. An undo that itself loses a
//! race is logged; what it leaves is a handle count out of step with its
//! blocks, which `Allocator::gc` and `release_handle` tolerate — never an
//! address given twice, since every address is handed out by a conditional
//! write of its block.
//!
//! Object names follow Calico: a block `10.0.0.0/26` is `10-0-0-0-26`, its
//! affinity for node `n1` is `n1-10-0-0-0-26`, a handle is named by its ID.
//! The store assumes numeric `resourceVersion`s (true of every API server
//! backed by etcd) and reports anything else as corrupt.
//!
//! Every object written fits its CRD's schema (Calico's
//! `libcalico-go/config/crd/crd.projectcalico.org_*.yaml`): an IPAMBlock with
//! its required `allocations`, `attributes`, `cidr`, `strictAffinity` and
//! `unallocated`; a BlockAffinity with its required `cidr`, `node`, `state`
//! and `deleted`, the last a string (`"false"`) in this version; an
//! IPAMHandle with `handleID` and `block`. The API-server stand-in of the
//! tests checks each write against those schemas. A handle's floating IPs (a
//! bgpd extension, `floatingIPs` in the etcd and file stores) are no field of
//! the IPAMHandle CRD, which a real API server would prune: here they are the
//! annotation [`FLOATING_IPS_ANNOTATION`] (the same JSON list), which bgpd's
//! Kubernetes datastore reads.
//!
//! Every object written has the label `bgpd.io/ipam-owner: bgpd-ipam`, and
//! every object read is judged ([`super::owner`]): one Calico's IPAM wrote is
//! refused ([`StoreError::Calico`]), never decoded, so never written back.

use ipnet::IpNet;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::core::GroupVersionKind;

use super::owner::{calico_sign, CalicoObject, ObjectKind, OWNER, OWNER_KEY};
use super::{in_scope, Expect, Key, Object, Revision, Scope, Store, StoreError, Versioned, Write};
use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

/// The annotation of an IPAMHandle holding its floating IPs: the JSON list the
/// other stores keep as `floatingIPs` in the handle.
pub const FLOATING_IPS_ANNOTATION: &str = "bgpd.io/floating-ips";

/// Calico's CRD group.
pub const GROUP: &str = "crd.projectcalico.org";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// IPAM state as Calico CRDs in a Kubernetes API server.
#[derive(Clone)]
pub struct KubeStore {
    blocks: Api<DynamicObject>,
    affinities: Api<DynamicObject>,
    handles: Api<DynamicObject>,
}

fn kind_of(key: &Key) -> ObjectKind {
    match key {
        Key::Block(_) => ObjectKind::Block,
        Key::Affinity { .. } => ObjectKind::Affinity,
        Key::Handle(_) => ObjectKind::Handle,
    }
}

/// `10.0.0.0/26` → `10-0-0-0-26`; `fd00::/122` → `fd00--122` (Calico's form).
pub fn cidr_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// The object name of a key.
pub fn object_name(key: &Key) -> String {
    match key {
        Key::Block(c) => cidr_name(c),
        Key::Affinity { node, cidr } => format!("{node}-{}", cidr_name(cidr)),
        Key::Handle(h) => h.clone(),
    }
}

/// A BlockAffinity's spec as the v1 CRD requires it: with `deleted`, a
/// string in this version ("a string for compatibility with older releases",
/// says the CRD), always `"false"` since the allocator deletes an affinity
/// outright rather than marking it. Without it the API server answers
/// `422 Invalid: spec.deleted: Required value`.
fn affinity_spec(a: &BlockAffinity) -> Result<serde_json::Value, serde_json::Error> {
    let mut spec = serde_json::to_value(a)?;
    spec["deleted"] = serde_json::Value::from("false");
    Ok(spec)
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend { backend: "kubernetes", reason: e.to_string() }
}

/// An API error as a store error, `what` naming the request: 429 (API
/// priority and fairness shed it), 503 and 504 mean the API server is
/// overloaded or briefly unavailable ([`StoreError::Busy`]); anything else
/// fails the store.
pub(crate) fn api_error(what: &str, e: &kube::Error) -> StoreError {
    let reason = if what.is_empty() { e.to_string() } else { format!("{what}: {e}") };
    match e {
        kube::Error::Api(resp) if matches!(resp.code, 429 | 503 | 504) => {
            StoreError::Busy { backend: "kubernetes", reason }
        }
        _ => StoreError::Backend { backend: "kubernetes", reason },
    }
}

/// Maps API errors: 409 (conflict, already exists) and 404 (gone) on a
/// conditional write mean "changed since read".
fn write_error(key: &Key, e: kube::Error) -> StoreError {
    match &e {
        kube::Error::Api(resp) if resp.code == 409 || resp.code == 404 => StoreError::Conflict(key.clone()),
        _ => api_error("", &e),
    }
}

impl KubeStore {
    /// A store using `client` (cluster-scoped CRDs).
    pub fn new(client: kube::Client) -> KubeStore {
        KubeStore {
            blocks: Api::all_with(client.clone(), &resource("IPAMBlock", "ipamblocks")),
            affinities: Api::all_with(client.clone(), &resource("BlockAffinity", "blockaffinities")),
            handles: Api::all_with(client, &resource("IPAMHandle", "ipamhandles")),
        }
    }

    fn api(&self, kind: ObjectKind) -> &Api<DynamicObject> {
        match kind {
            ObjectKind::Block => &self.blocks,
            ObjectKind::Affinity => &self.affinities,
            ObjectKind::Handle => &self.handles,
        }
    }

    fn encode(key: &Key, value: &Object, revision: Option<Revision>) -> Result<DynamicObject, StoreError> {
        let (ar, spec) = match value {
            Object::Block(b) => (resource("IPAMBlock", "ipamblocks"), serde_json::to_value(b)),
            Object::Affinity(a) => (resource("BlockAffinity", "blockaffinities"), affinity_spec(a)),
            Object::Handle(h) => (resource("IPAMHandle", "ipamhandles"), serde_json::to_value(h)),
        };
        let mut o = DynamicObject::new(&object_name(key), &ar);
        o.metadata.labels = Some([(OWNER_KEY.to_string(), OWNER.to_string())].into());
        let mut spec = spec.map_err(backend)?;
        // Floating IPs go into an annotation: the CRD has no field for them.
        if let Some(floating) = spec.as_object_mut().and_then(|m| m.remove("floatingIPs")) {
            o.metadata.annotations = Some([(FLOATING_IPS_ANNOTATION.to_string(), floating.to_string())].into());
        }
        o.data = serde_json::json!({ "spec": spec });
        o.metadata.resource_version = revision.map(|r| r.to_string());
        Ok(o)
    }

    fn decode(kind: ObjectKind, o: DynamicObject) -> Result<Versioned<Object>, StoreError> {
        let name = o.metadata.name.clone().unwrap_or_default();
        let corrupt = |reason: String| StoreError::Corrupt { location: format!("{GROUP} object {name:?}"), reason };
        let revision = o
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<Revision>().ok())
            .ok_or_else(|| corrupt(format!("resourceVersion {:?} is not numeric", o.metadata.resource_version)))?;
        let mut spec = o.data.get("spec").cloned().unwrap_or(serde_json::Value::Null);
        // The v1 CRD's required `deleted` of an affinity, as bgpd-ipam writes
        // it, is no sign of Calico's.
        let mut judged = spec.clone();
        if let (ObjectKind::Affinity, Some(m)) = (kind, judged.as_object_mut()) {
            if m.get("deleted").and_then(serde_json::Value::as_str) == Some("false") {
                m.remove("deleted");
            }
        }
        if let Some(sign) = calico_sign(kind, &judged, o.metadata.labels.as_ref().unwrap_or(&Default::default())) {
            return Err(StoreError::Calico(CalicoObject { kind, name: name.clone(), sign }));
        }
        let floating = o.metadata.annotations.as_ref().and_then(|a| a.get(FLOATING_IPS_ANNOTATION));
        if let (ObjectKind::Handle, Some(text), Some(m)) = (kind, floating, spec.as_object_mut()) {
            let list: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| corrupt(format!("annotation {FLOATING_IPS_ANNOTATION}: {e}")))?;
            m.insert("floatingIPs".into(), list);
        }
        let value = match kind {
            ObjectKind::Block => serde_json::from_value::<AllocationBlock>(spec).map(Object::Block),
            ObjectKind::Affinity => serde_json::from_value::<BlockAffinity>(spec).map(Object::Affinity),
            ObjectKind::Handle => serde_json::from_value::<IpamHandle>(spec).map(Object::Handle),
        }
        .map_err(|e| corrupt(format!("spec: {e}")))?;
        Ok(Versioned { value, revision })
    }

    /// Applies one write; returns the new revision (`None` after a delete).
    async fn apply(&self, key: &Key, expect: Expect, value: Option<&Object>) -> Result<Option<Revision>, StoreError> {
        let api = self.api(kind_of(key));
        let name = object_name(key);
        let done = match (value, expect) {
            (Some(v), Expect::Absent) => {
                let o = api.create(&PostParams::default(), &KubeStore::encode(key, v, None)?).await;
                Some(o.map_err(|e| write_error(key, e))?)
            }
            (Some(v), Expect::Revision(r)) => {
                let o = api.replace(&name, &PostParams::default(), &KubeStore::encode(key, v, Some(r))?).await;
                Some(o.map_err(|e| write_error(key, e))?)
            }
            (None, Expect::Revision(r)) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { resource_version: Some(r.to_string()), uid: None }),
                    ..DeleteParams::default()
                };
                api.delete(&name, &dp).await.map_err(|e| write_error(key, e))?;
                None
            }
            (None, Expect::Absent) => None,
        };
        match done {
            Some(o) => Ok(Some(KubeStore::decode(kind_of(key), o)?.revision)),
            None => Ok(None),
        }
    }
}

impl Store for KubeStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let kind = kind_of(key);
        match self.api(kind).get_opt(&object_name(key)).await.map_err(|e| api_error("", &e))? {
            Some(o) => Ok(Some(KubeStore::decode(kind, o)?)),
            None => Ok(None),
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
        let kind = match scope {
            Scope::Blocks => ObjectKind::Block,
            Scope::Affinities(_) => ObjectKind::Affinity,
            Scope::Handles => ObjectKind::Handle,
        };
        let list = self.api(kind).list(&ListParams::default()).await.map_err(|e| api_error("", &e))?;
        let (mut own, mut calico) = (Vec::new(), Vec::new());
        for o in list.items {
            match KubeStore::decode(kind, o) {
                Ok(v) if in_scope(&v.value.key(), scope) => own.push(v),
                Ok(_) => {}
                Err(StoreError::Calico(c)) => calico.push(c),
                Err(e) => return Err(e),
            }
        }
        Ok((own, calico))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        // Read and check everything first: most conflicts stop here, before
        // anything is written.
        let mut before = Vec::with_capacity(writes.len());
        for w in &writes {
            let cur = self.get(&w.key).await?;
            let ok = match (w.expect, &cur) {
                (Expect::Absent, None) => true,
                (Expect::Revision(r), Some(v)) => v.revision == r,
                _ => false,
            };
            if !ok {
                return Err(StoreError::Conflict(w.key.clone()));
            }
            before.push(cur);
        }
        let mut applied: Vec<(usize, Option<Revision>)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            match self.apply(&w.key, w.expect, w.value.as_ref()).await {
                Ok(rev) => applied.push((i, rev)),
                Err(e) => {
                    self.undo(&writes, &before, &applied).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl KubeStore {
    /// Reverts applied writes, newest first, each conditional on the
    /// revision it produced.
    async fn undo(
        &self,
        writes: &[Write],
        before: &[Option<Versioned<Object>>],
        applied: &[(usize, Option<Revision>)],
    ) {
        for (i, new_rev) in applied.iter().rev() {
            let key = &writes[*i].key;
            let result = match (&before[*i], new_rev) {
                // Created: delete it again.
                (None, Some(rev)) => self.apply(key, Expect::Revision(*rev), None).await,
                // Replaced: put the old value back.
                (Some(old), Some(rev)) => self.apply(key, Expect::Revision(*rev), Some(&old.value)).await,
                // Deleted: recreate it.
                (Some(old), None) => self.apply(key, Expect::Absent, Some(&old.value)).await,
                (None, None) => Ok(None),
            };
            if let Err(e) = result {
                tracing::error!(?key, error = %e, "could not undo a partly applied IPAM commit; GC repairs handle counts");
            }
        }
    }
}
