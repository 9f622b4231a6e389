//! Opening the store a datastore string names. The string is parsed by
//! `bgpd_model::DatastoreSpec`, the same grammar as bgpd's `--datastore`.

use super::etcd::EtcdStore;
use super::file::FileStore;
use super::kube_design::{self, Focus};
use super::kubernetes::KubeStore;
use super::owner::CalicoObject;
use super::{Key, Object, Scope, Store, StoreError, Versioned, Write};
use crate::design::{Design, DesignError};

pub use bgpd_model::{DatastoreSpec, SpecError};

/// Why a datastore could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The string is not `file:PATH`, `etcd:URL[?OPTIONS]` or
    /// `kubernetes[:KUBECONFIG]`, or its etcd options are wrong.
    #[error(transparent)]
    BadSpec(#[from] SpecError),
    /// The design could not be read.
    #[error(transparent)]
    Design(#[from] DesignError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Any of the stores, chosen at run time.
pub enum AnyStore {
    /// File store.
    File(FileStore),
    /// etcd store.
    Etcd(Box<EtcdStore>),
    /// Kubernetes store (Calico's CRDs).
    Kube(Box<KubeStore>),
}

/// Opens the store `spec` names and reads the design from it (the YAML for
/// `file:`, Calico's v3 resource keys for `etcd:`, the API for `kubernetes`:
/// every Node, no Pod; see [`open_for`]).
pub async fn open(spec: &DatastoreSpec) -> Result<(AnyStore, Design), OpenError> {
    open_for(spec, &Focus::default()).await
}

/// [`open`], reading from the API server only the Node and the Pod (with its
/// Namespace) of `focus` (a CNI command needs no other). `file:` and `etcd:`
/// read their whole design whatever `focus` says.
///
/// Of an `etcd:` string, `ipamPrefix=` says where the IPAM state is; `prefix=`
/// (bgpd's own objects) is not read here: the design's IPPools and Nodes are
/// Calico's resource keys, which bgpd reads too.
pub async fn open_for(spec: &DatastoreSpec, focus: &Focus) -> Result<(AnyStore, Design), OpenError> {
    match spec {
        DatastoreSpec::Kubernetes { kubeconfig } => {
            let client = kube_design::client(kubeconfig.as_deref()).await?;
            let design = kube_design::load_design(&client, focus).await?;
            Ok((AnyStore::Kube(Box::new(KubeStore::new(client))), design))
        }
        DatastoreSpec::File(p) => {
            let design = Design::load(p)?;
            Ok((AnyStore::File(FileStore::open(p)?), design))
        }
        DatastoreSpec::Etcd { access, ipam_prefix, .. } => {
            let s = EtcdStore::connect_to(access, ipam_prefix).await?;
            let design = s.load_design().await?;
            Ok((AnyStore::Etcd(Box::new(s)), design))
        }
    }
}

/// Opens the store `spec` names alone, without reading the design: what
/// releasing by handle needs (CNI `DEL` and `GC` must work while the design is
/// broken).
pub async fn open_store(spec: &DatastoreSpec) -> Result<AnyStore, OpenError> {
    Ok(match spec {
        DatastoreSpec::File(p) => AnyStore::File(FileStore::open(p)?),
        DatastoreSpec::Etcd { access, ipam_prefix, .. } => {
            AnyStore::Etcd(Box::new(EtcdStore::connect_to(access, ipam_prefix).await?))
        }
        DatastoreSpec::Kubernetes { kubeconfig } => {
            AnyStore::Kube(Box::new(KubeStore::new(kube_design::client(kubeconfig.as_deref()).await?)))
        }
    })
}

impl Store for AnyStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.get(key).await,
            AnyStore::Etcd(s) => s.get(key).await,
            AnyStore::Kube(s) => s.get(key).await,
        }
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.list(scope).await,
            AnyStore::Etcd(s) => s.list(scope).await,
            AnyStore::Kube(s) => s.list(scope).await,
        }
    }

    async fn list_own(&self, scope: &Scope) -> Result<(Vec<Versioned<Object>>, Vec<CalicoObject>), StoreError> {
        match self {
            AnyStore::File(s) => s.list_own(scope).await,
            AnyStore::Etcd(s) => s.list_own(scope).await,
            AnyStore::Kube(s) => s.list_own(scope).await,
        }
    }

    async fn list_keys(&self, scope: &Scope) -> Result<Vec<Key>, StoreError> {
        match self {
            AnyStore::File(s) => s.list_keys(scope).await,
            AnyStore::Etcd(s) => s.list_keys(scope).await,
            AnyStore::Kube(s) => s.list_keys(scope).await,
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self {
            AnyStore::File(s) => s.commit(writes).await,
            AnyStore::Etcd(s) => s.commit(writes).await,
            AnyStore::Kube(s) => s.commit(writes).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let spec = DatastoreSpec::Kubernetes { kubeconfig: Some("/nonexistent/kubeconfig".into()) };
        let Err(e) = open(&spec).await else { panic!("opened") };
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    }
}
