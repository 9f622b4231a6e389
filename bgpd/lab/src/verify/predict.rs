//! The forwarding tables `verify` predicts: per node and router, the routes
//! its speaker installs once the design has converged with nothing failed
//! (learned prefixes and their ECMP next hops, except a prefix the member
//! is connected to, as in the kernel) and the blackholes a node
//! installs for its own blocks. This is what `bgpd lab up` should find in
//! the kernels; `conformance/tests/lab_templates.rs` compares the two
//! (docs/verify.md, "Agreement with the lab").

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::spec::Topology;

use super::model::{self, Local};
use super::report::Kind;
use super::sim::{self, Scenario};

/// One member's predicted forwarding state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// Node or router.
    pub kind: Kind,
    /// Learned routes: prefix → ECMP next hops, sorted.
    pub learned: BTreeMap<IpNet, Vec<IpAddr>>,
    /// Blackhole routes for the member's own blocks (addresses without a pod).
    pub blackholes: BTreeSet<IpNet>,
}

/// Why there is no prediction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PredictError {
    /// The simulation was still moving routes after [`sim::LIMIT`] of
    /// virtual time: the routes oscillate, so no table is "the" answer.
    #[error("the design did not converge within {limit:?} of simulated time")]
    NotConverged {
        /// The virtual time allowed.
        limit: std::time::Duration,
    },
}

/// The forwarding table of every node and router of `topo` after
/// convergence with no failure, by member name, as the same simulation
/// `verify` runs computes it.
pub fn predict(topo: &Topology) -> Result<BTreeMap<String, Forwarding>, PredictError> {
    let design = model::build(topo.clone());
    let none = Scenario::none();
    let run = sim::simulate(&design, &none);
    if !run.converged {
        return Err(PredictError::NotConverged { limit: sim::LIMIT });
    }
    let members = design.members.values().filter(|m| matches!(m.kind, Kind::Node | Kind::Router));
    Ok(members
        .map(|m| {
            // Connected beats learned: the kernel's connected route for a
            // subnet of the member's own stays, and none of bgpd's FIB, BIRD
            // (direct routes win on preference) or FRR's zebra (distance 0)
            // installs a learned route for the same prefix.
            let connected: BTreeSet<IpNet> = m.interfaces.iter().map(|(_, a)| a.trunc()).collect();
            let learned = run
                .fabric
                .fib(&m.name)
                .into_iter()
                .filter(|(net, _)| !connected.contains(net))
                .map(|(net, mut hops)| {
                    hops.sort();
                    hops.dedup();
                    (net, hops)
                })
                .collect();
            let blackholes =
                m.local.iter().filter(|(_, l)| matches!(l, Local::Blackhole(_))).map(|(net, _)| *net).collect();
            (m.name.clone(), Forwarding { kind: m.kind, learned, blackholes })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates").join(name);
        Topology::load(&path).expect("a shipped template loads")
    }

    #[test]
    fn dual_tor_node_learns_other_blocks_through_both_tors() {
        let p = predict(&shipped("dual-tor-ecmp.yaml")).expect("converges");
        let node1 = &p["node-1"];
        assert_eq!(node1.kind, Kind::Node);
        assert!(!node1.blackholes.is_empty(), "node-1 blackholes its own block");
        // Another node's block: one next hop per ToR, none of them node-1's own.
        let other = p["node-2"].blackholes.iter().next().expect("node-2 has a block");
        let hops = node1.learned.get(other).expect("node-1 learns node-2's block");
        assert_eq!(hops.len(), 2, "through tor-a and tor-b: {hops:?}");
        assert!(!node1.learned.keys().any(|n| node1.blackholes.contains(n)), "its own block is not learned");
        // Its links to the ToRs are connected, though the ToRs advertise them.
        let links: Vec<IpNet> = ["10.1.1.0/30", "10.2.1.0/30"].iter().map(|n| n.parse().unwrap()).collect();
        assert!(links.iter().all(|l| !node1.learned.contains_key(l)), "{:?}", node1.learned.keys());
        assert!(p["node-2"].learned.contains_key(&links[0]), "node-2 learns node-1's link to tor-a");
        assert!(p.values().all(|f| f.kind != Kind::Host));
    }
}
