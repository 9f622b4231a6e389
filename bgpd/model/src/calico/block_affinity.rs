//! `BlockAffinity` (`crd.projectcalico.org/v1`): a node's claim on a block, as
//! `ipam`'s stores keep it. bgpd reads of it only a release in progress
//! ([`AffinityState::PendingDeletion`]), which withdraws the block.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// State of a block affinity (Calico `BlockAffinityState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claim in progress: the block may not exist yet.
    Pending,
    /// The block is the node's.
    Confirmed,
    /// Release in progress.
    PendingDeletion,
}

/// A node's affinity to a block (Calico `BlockAffinity` spec). Calico's
/// `deleted` (a string `"true"`/`"false"` in `crd.projectcalico.org/v1`, a
/// boolean elsewhere) is not kept: the allocator never marks an affinity
/// deleted, and the Kubernetes store writes the `"false"` its CRD requires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAffinity {
    /// The node.
    pub node: String,
    /// The block CIDR.
    pub cidr: IpNet,
    /// Claim state.
    pub state: AffinityState,
}
