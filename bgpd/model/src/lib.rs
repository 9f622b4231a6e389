//! One typed model of what bgpd, its IPAM (`bgpd-ipam`) and its tools read from
//! a cluster, parsed and validated once, in one place: today Calico's label
//! selector language ([`selector`]) and the datastore a program reads
//! ([`datastore::DatastoreSpec`], the one grammar of `bgpd --datastore` and of
//! `bgpd-ipam`'s `datastore`). The typed Calico and Kubernetes objects and
//! their `Problem`s are still to move here (docs/design.md).
//!
//! No I/O but reading a password file named by a datastore string, no tokio, no
//! Kubernetes client: a program parses here and connects elsewhere.

pub mod datastore;
pub mod selector;

pub use datastore::{DatastoreSpec, SpecError};
pub use selector::Selector;
