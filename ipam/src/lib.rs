//! Calico-style block IPAM for bgpd.
//!
//! Pools ([`model::IpPool`]) are cut into blocks ([`block::AllocationBlock`]);
//! each block is affine to one node, so a node advertises a few aggregates
//! ([`allocator::affine_blocks`]) instead of a route per pod. The
//! [`allocator::Allocator`] hands out addresses through any [`store::Store`]
//! (file, etcd, Kubernetes) with compare-and-swap writes, so an address is never given
//! out twice. The `bgpd-ipam` binary is a CNI IPAM plugin on top.

pub mod allocator;
pub mod annotations;
pub mod block;
pub mod cni;
pub mod design;
pub mod metrics;
pub mod model;
/// Calico's selector language, now in `bgpd-model`; re-exported so that
/// `ipam::selector` keeps working.
pub use bgpd_model::selector;
pub mod store;
pub mod usage;
pub mod yaml;

pub use allocator::{affine_blocks, Allocator, AssignRequest, AssignedIp, IpamError};
pub use design::Design;
pub use selector::Selector;
