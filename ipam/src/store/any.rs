//! Choosing a store from a `--datastore` / CNI `datastore` string.

use std::path::PathBuf;

use super::etcd::EtcdStore;
use super::file::FileStore;
use super::{Key, Object, Scope, Store, StoreError, Versioned, Write};
use crate::design::{Design, DesignError};

/// A parsed datastore location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// `file:PATH`: a YAML file or directory; IPAM state kept beside it.
    File(PathBuf),
    /// `etcd:http://HOST:PORT`: etcd v3.
    Etcd(String),
}

/// Why a datastore could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The string is not `file:PATH` or `etcd:URL`.
    #[error("datastore {0:?}: expected \"file:PATH\" or \"etcd:http://HOST:PORT\"")]
    BadSpec(String),
    /// The design could not be read.
    #[error(transparent)]
    Design(#[from] DesignError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl std::str::FromStr for DatastoreSpec {
    type Err = OpenError;
    fn from_str(s: &str) -> Result<Self, OpenError> {
        if let Some(p) = s.strip_prefix("file:") {
            if !p.is_empty() {
                return Ok(DatastoreSpec::File(PathBuf::from(p)));
            }
        }
        if let Some(u) = s.strip_prefix("etcd:") {
            if u.starts_with("http://") || u.starts_with("https://") {
                return Ok(DatastoreSpec::Etcd(u.to_string()));
            }
        }
        Err(OpenError::BadSpec(s.to_string()))
    }
}

/// Any of the stores, chosen at run time.
pub enum AnyStore {
    /// File store.
    File(FileStore),
    /// etcd store.
    Etcd(Box<EtcdStore>),
}

impl DatastoreSpec {
    /// Opens the store and reads the design from it (the YAML for `file:`,
    /// Calico's v3 resource keys for `etcd:`).
    pub async fn open(&self) -> Result<(AnyStore, Design), OpenError> {
        match self {
            DatastoreSpec::File(p) => {
                let design = Design::load(p)?;
                Ok((AnyStore::File(FileStore::open(p)?), design))
            }
            DatastoreSpec::Etcd(url) => {
                let s = EtcdStore::connect(url).await?;
                let design = s.load_design().await?;
                Ok((AnyStore::Etcd(Box::new(s)), design))
            }
        }
    }
}

impl Store for AnyStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.get(key).await,
            AnyStore::Etcd(s) => s.get(key).await,
        }
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.list(scope).await,
            AnyStore::Etcd(s) => s.list(scope).await,
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self {
            AnyStore::File(s) => s.commit(writes).await,
            AnyStore::Etcd(s) => s.commit(writes).await,
        }
    }
}
