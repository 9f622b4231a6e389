//! IPAM state objects with Calico's `crd.projectcalico.org/v1` field names:
//! `IPAMBlock` (an [`AllocationBlock`]), `BlockAffinity`, `IPAMHandle`.
//!
//! They are defined and validated once, in `bgpd-model` (`calico::ipam_block`,
//! `calico::block_affinity`, `calico::ipam_handle`), where bgpd reads them too;
//! re-exported here, where the allocator, the stores and the tools name them.
//! The allocator's operations on a block (`allocate`, `release_where`, …) came
//! along as inherent methods.

pub use bgpd_model::calico::{
    addr_from, addr_value, block_len, host_affinity, net_base, AffinityState, AllocationAttribute, AllocationBlock,
    BlockAffinity, BlockProblem, FloatingIp, InvalidBlock, IpamHandle, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD,
};
