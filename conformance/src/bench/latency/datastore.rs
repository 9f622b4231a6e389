//! The datastore's content as objects (the node, its peers, blocks, Services and their
//! EndpointSlices) and the writer that makes a change: a file renamed into place, or
//! puts and deletes through etcd.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use ipnet::Ipv4Net;

use super::{BIRD_AS, BIRD_IP, CLUSTER_AS, NEW_PEER_IP, NODE, NODE_IP, POOL, RX_AS, RX_IP, SERVICE_RANGE};
use crate::lab::bgpd::doc;
use crate::lab::etcd;

// ----- the datastore ---------------------------------------------------------------------

pub(super) fn block(i: usize) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 240, 0, 0));
    // i < MAX_CHANGES + 1 < 16,384: inside the pool.
    Ipv4Net::new(Ipv4Addr::from(base + (i as u32) * 64), 26).unwrap_or_default()
}

pub(super) fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 16)) + i as u32)
}

fn peer_doc(name: &str, ip: Ipv4Addr, asn: u32) -> String {
    doc::peer(name, &[], &format!("  peerIP: {ip}\n  asNumber: {asn}\n  keepaliveTime: 3s\n"))
}

/// What the datastore holds: each object with the etcd key it is stored under.
pub(super) struct Model {
    pub(super) services: usize,
    pub(super) blocks: usize,
    pub(super) ready: usize,
    pub(super) new_peer: Option<usize>,
}

impl Model {
    pub(super) fn objects(&self) -> Vec<(String, String)> {
        let mut o = vec![
            ("bgpconfigurations/default".into(), doc::bgp_configuration_services(CLUSTER_AS, SERVICE_RANGE)),
            (format!("nodes/{NODE}"), doc::node_with_as(NODE, &format!("{NODE_IP}/24"), CLUSTER_AS)),
            ("ippools/pool-1".into(), doc::ip_pool("pool-1", POOL)),
            ("bgppeers/rx".into(), peer_doc("rx", RX_IP, RX_AS)),
            ("bgppeers/bird".into(), peer_doc("bird", BIRD_IP, BIRD_AS)),
        ];
        for i in 0..=self.blocks {
            o.push(block_object(i));
        }
        for i in 0..self.services {
            o.push(service_object(i));
            o.push(slice_object(i, i < self.ready));
        }
        if let Some(i) = self.new_peer {
            o.push(new_peer_object(i));
        }
        o
    }

    pub(super) fn yaml(&self) -> String {
        let docs: Vec<String> = self.objects().into_iter().map(|(_, v)| v).collect();
        doc::stream(&docs)
    }
}

pub(super) fn block_object(i: usize) -> (String, String) {
    let b = block(i);
    (format!("ipamblocks/{}", b.to_string().replace(['.', '/'], "-")), doc::ipam_block(&b.to_string(), NODE))
}

fn service_object(i: usize) -> (String, String) {
    (format!("services/default/svc-{i}"), doc::service_local(&format!("svc-{i}"), &cluster_ip(i).to_string()))
}

pub(super) fn slice_object(i: usize, ready: bool) -> (String, String) {
    (
        format!("endpointslices/default/svc-{i}-1"),
        doc::endpoint_slice(&format!("svc-{i}"), &format!("10.240.0.{}", 2 + i % 60), NODE, ready),
    )
}

pub(super) fn new_peer_object(i: usize) -> (String, String) {
    (format!("bgppeers/new-{i}"), peer_doc(&format!("new-{i}"), NEW_PEER_IP, RX_AS))
}

/// Writes changes to the datastore bgpd reads.
pub(super) enum Writer {
    File { path: PathBuf },
    Etcd { etcd: etcd::Etcd },
}

impl Writer {
    /// Makes `model` the datastore's content; for etcd only `put` / `delete` go out.
    /// Returns the instant the change was made (the rename, or the put being sent).
    pub(super) fn apply(&self, model: &Model, put: &[(String, String)], delete: &[String]) -> Result<Instant, String> {
        match self {
            Writer::File { path } => {
                let tmp = path.with_extension("yaml.tmp");
                std::fs::write(&tmp, model.yaml()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
                let t0 = Instant::now();
                std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
                Ok(t0)
            }
            Writer::Etcd { etcd } => {
                let t0 = Instant::now();
                for (k, v) in put {
                    etcd.put(k, v)?;
                }
                for k in delete {
                    etcd.delete(k)?;
                }
                Ok(t0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::latency::MAX_CHANGES;

    #[test]
    fn blocks_and_addresses_stay_in_their_ranges() {
        let pool: Ipv4Net = POOL.parse().unwrap();
        let range: Ipv4Net = SERVICE_RANGE.parse().unwrap();
        assert_eq!(block(1).to_string(), "10.240.0.64/26");
        assert!(pool.contains(&block(MAX_CHANGES)));
        assert!(range.contains(&cluster_ip(MAX_CHANGES)));
    }
}
