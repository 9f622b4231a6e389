//! Stores for IPAM state, behind one compare-and-swap interface.
//!
//! Every object carries a revision. A [`Write`] names the revision it expects
//! (or that the object must be absent); [`Store::commit`] applies a batch of
//! writes only if every expectation holds, else returns
//! [`StoreError::Conflict`] and changes nothing. The file and etcd stores apply
//! a batch atomically. The allocator re-reads and retries on conflict.

use std::future::Future;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

pub mod any;
pub mod etcd;
pub mod file;
pub mod kube_design;
pub mod kubernetes;
pub mod owner;

/// The identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// An `IPAMBlock`, by CIDR.
    Block(IpNet),
    /// A `BlockAffinity`, by node and block CIDR.
    Affinity {
        /// The node.
        node: String,
        /// The block.
        cidr: IpNet,
    },
    /// An `IPAMHandle`, by handle ID.
    Handle(String),
}

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    /// An allocation block.
    Block(AllocationBlock),
    /// A block affinity.
    Affinity(BlockAffinity),
    /// A handle.
    Handle(IpamHandle),
}

impl Object {
    /// The key this object is stored under.
    pub fn key(&self) -> Key {
        match self {
            Object::Block(b) => Key::Block(b.cidr),
            Object::Affinity(a) => Key::Affinity { node: a.node.clone(), cidr: a.cidr },
            Object::Handle(h) => Key::Handle(h.handle_id.clone()),
        }
    }
}

/// A revision number; a store's revisions only grow.
pub type Revision = u64;

/// An object with the revision at which it was last written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// The object.
    pub value: T,
    /// Its modification revision.
    pub revision: Revision,
}

/// What a write expects of the object's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist.
    Absent,
    /// The object must exist at exactly this revision.
    Revision(Revision),
}

impl Expect {
    /// `Revision(r)` for a read object, `Absent` for none.
    pub fn from_read<T>(v: &Option<Versioned<T>>) -> Expect {
        match v {
            Some(v) => Expect::Revision(v.revision),
            None => Expect::Absent,
        }
    }
}

/// One conditional write: put (`value: Some`) or delete (`None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The object written.
    pub key: Key,
    /// The required current state.
    pub expect: Expect,
    /// New value, or `None` to delete.
    pub value: Option<Object>,
}

impl Write {
    /// Puts `value` if the current state matches `expect`.
    pub fn put(expect: Expect, value: Object) -> Write {
        Write { key: value.key(), expect, value: Some(value) }
    }

    /// Deletes `key` if it is at revision `rev`.
    pub fn delete(key: Key, rev: Revision) -> Write {
        Write { key, expect: Expect::Revision(rev), value: None }
    }
}

/// Which objects to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// All blocks.
    Blocks,
    /// Affinities, of one node or of all.
    Affinities(Option<String>),
    /// All handles.
    Handles,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An expectation did not hold; nothing was written.
    #[error("conflict on {0:?}: it changed since it was read")]
    Conflict(Key),
    /// The backing file or directory could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Stored data is unreadable.
    #[error("corrupt store data at {location}: {reason}")]
    Corrupt {
        /// File or key.
        location: String,
        /// Why.
        reason: String,
    },
    /// The object was written by Calico's IPAM: the store is shared, and
    /// bgpd-ipam uses none of it ([`owner`]).
    #[error("{0}")]
    Calico(owner::CalicoObject),
    /// The remote store is overloaded or briefly unavailable (the Kubernetes
    /// API server's 429, 503 or 504): the same request may succeed later, and
    /// the CNI plugin answers "try again later" (code 11).
    #[error("{backend} is busy, try again later: {reason}")]
    Busy {
        /// Which store.
        backend: &'static str,
        /// Its message.
        reason: String,
    },
    /// The remote store failed (etcd, Kubernetes API).
    #[error("{backend}: {reason}")]
    Backend {
        /// Which store.
        backend: &'static str,
        /// Its message.
        reason: String,
    },
}

/// Compare-and-swap storage of IPAM objects.
pub trait Store: Send + Sync {
    /// Reads one object.
    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Versioned<Object>>, StoreError>> + Send;

    /// Lists objects in a scope.
    fn list(&self, scope: &Scope) -> impl Future<Output = Result<Vec<Versioned<Object>>, StoreError>> + Send;

    /// Lists the objects of a scope that bgpd-ipam wrote, with those Calico's
    /// IPAM wrote set apart (where [`Store::list`] refuses them all): what
    /// releasing bgpd-ipam's own addresses needs on a shared store. Stores
    /// that never hold Calico's objects (the file store) list everything.
    fn list_own(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<(Vec<Versioned<Object>>, Vec<owner::CalicoObject>), StoreError>> + Send {
        async move { Ok((self.list(scope).await?, Vec::new())) }
    }

    /// The keys of the objects in a scope: what [`Store::list`] lists, with
    /// the same refusals, without the objects. Claiming a block needs only
    /// the blocks' ranges; a store that holds its objects in memory answers
    /// without copying them.
    fn list_keys(&self, scope: &Scope) -> impl Future<Output = Result<Vec<Key>, StoreError>> + Send {
        async move { Ok(self.list(scope).await?.into_iter().map(|v| v.value.key()).collect()) }
    }

    /// Applies all writes if every expectation holds, else none
    /// ([`StoreError::Conflict`]).
    fn commit(&self, writes: Vec<Write>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Whether a key falls in a scope.
pub fn in_scope(key: &Key, scope: &Scope) -> bool {
    match (scope, key) {
        (Scope::Blocks, Key::Block(_)) => true,
        (Scope::Affinities(None), Key::Affinity { .. }) => true,
        (Scope::Affinities(Some(n)), Key::Affinity { node, .. }) => n == node,
        (Scope::Handles, Key::Handle(_)) => true,
        _ => false,
    }
}
