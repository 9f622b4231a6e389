//! One typed model of what bgpd, its IPAM (`bgpd-ipam`) and its tools read from
//! a cluster, parsed and validated once, in one place: today Calico's label
//! selector language ([`selector`]) and the datastore a program reads
//! ([`datastore::DatastoreSpec`], the one grammar of `bgpd --datastore` and of
//! `bgpd-ipam`'s `datastore`), and typed Calico objects validated once for
//! both programs ([`calico`]: IPPool, IPReservation, Node's IPAM fields and the IPAM
//! state, IPAMBlock, BlockAffinity and IPAMHandle, so far; refusals as
//! [`InvalidResource`], a stored block's as `calico::InvalidBlock`).
//! The other Calico and Kubernetes kinds are still parsed by each program
//! (docs/design.md).
//!
//! No I/O but reading a password file named by a datastore string, no tokio, no
//! Kubernetes client: a program parses here and connects elsewhere.

pub mod calico;
pub mod datastore;
pub mod selector;

pub use calico::InvalidResource;
pub use datastore::{DatastoreSpec, SpecError};
pub use selector::Selector;
