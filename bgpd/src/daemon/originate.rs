//! What a node advertises, by Calico's rules: its affine IPAM blocks, the addresses
//! its pods borrowed from other nodes' blocks (as /32, /128), the floating IPs
//! mapped to its pods (as /32, /128), the service
//! ranges of the BGPConfiguration, and the single addresses of Services that this
//! node must attract traffic for (`externalTrafficPolicy: Local` with a ready local
//! endpoint, and the cases where Calico advertises single addresses from every node).
//!
//! [`originations`] is a pure function of the model: the daemon runs it on every
//! datastore change and hands the result to the RIB. `docs/configuration.md`
//! ("What a node advertises") is the user-facing description.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::datastore::{Affinity, ConfiguredCommunity, EndpointSlice, Model, Service, ServiceType, TrafficPolicy};

/// The Node label that keeps service addresses off a node (as Calico honours it).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// One prefix the node originates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origination {
    /// The prefix.
    pub prefix: IpNet,
    /// Why, in words (several reasons joined by `; `).
    pub cause: String,
    /// COMMUNITIES / LARGE_COMMUNITY values from the `prefixAdvertisements` entries
    /// whose CIDR contains the prefix, in configuration order, without repeats.
    pub communities: Vec<ConfiguredCommunity>,
    /// A block of this node's own pods: the daemon installs a blackhole route for
    /// it, so that addresses of the block without a pod are dropped here.
    pub blackhole: bool,
}

/// The prefixes node `node` originates, in prefix order, each once.
pub fn originations(model: &Model, node: &str) -> Vec<Origination> {
    let mut out: BTreeMap<IpNet, (Vec<String>, bool)> = BTreeMap::new();
    let mut add = |prefix: IpNet, cause: String, blackhole: bool| {
        let e = out.entry(prefix).or_default();
        if !e.0.contains(&cause) {
            e.0.push(cause);
        }
        e.1 |= blackhole;
    };

    for b in model.blocks_for_node(node) {
        let cause = match model.pool_containing(&b.cidr) {
            Some(p) if p.disable_bgp_export => continue,
            Some(p) => format!("IPAMBlock {} (affinity host:{node}, IPPool {})", b.name, p.name),
            None => format!("IPAMBlock {} (affinity host:{node}, in no IPPool)", b.name),
        };
        add(b.cidr, cause, true);
    }

    // Calico: a pod's address from another node's block is advertised by the pod's
    // node as a single address (the block's owner still advertises the block; the
    // longer prefix draws the traffic here).
    for (b, a) in model.borrowed_by_node(node) {
        let pool = match model.pool_containing(&b.cidr) {
            Some(p) if p.disable_bgp_export => continue,
            Some(p) => format!("IPPool {}", p.name),
            None => "in no IPPool".to_string(),
        };
        let owner = match &b.affinity {
            Some(Affinity::Host(h)) => format!("affinity host:{h}"),
            Some(Affinity::Virtual(v)) => format!("affinity virtual:{v}"),
            None => "no affinity".to_string(),
        };
        let handle = a.handle.as_deref().map_or_else(|| "no handle".to_string(), |h| format!("handle {h}"));
        let cause = format!("borrowed from IPAMBlock {} ({owner}, {pool}) by {handle} on this node", b.name);
        add(host(a.ip), cause, false);
    }

    // Calico: a floating IP is advertised as a single address by the node that hosts
    // the pod it maps to, and only from inside an IPPool (Calico's IPAM hands
    // floating IPs out of pools; `bgpd-ipam` records whatever the annotation says,
    // so the pool is checked here). Like pod addresses, it is not a Service address:
    // the exclude label does not hold it back.
    for (h, f) in model.floating_ips_for_node(node) {
        let pool = match model.pool_containing(&host(f.ip)) {
            Some(p) if p.disable_bgp_export => continue,
            Some(p) => p,
            None => continue,
        };
        let cause = format!(
            "floating IP of handle {} \u{2192} pod address {} (IPPool {}) on this node",
            h.handle_id, f.target, pool.name
        );
        add(host(f.ip), cause, false);
    }

    let excluded = model.nodes.get(node).is_some_and(|n| n.labels.get(EXCLUDE_LABEL).is_some_and(|v| v == "true"));
    if !excluded {
        services(model, node, &mut add);
    }

    let adverts = model.prefix_advertisements_for(node);
    out.into_iter()
        .map(|(prefix, (causes, blackhole))| {
            let mut communities = Vec::new();
            for c in adverts.iter().filter(|a| a.cidr.contains(&prefix)).flat_map(|a| &a.communities) {
                if !communities.contains(c) {
                    communities.push(*c);
                }
            }
            Origination { prefix, cause: causes.join("; "), communities, blackhole }
        })
        .collect()
}

/// A range of a list that is a single address (`/32`, `/128`). Calico leaves such
/// entries of `serviceExternalIPs` and `serviceLoadBalancerIPs` to the per-Service
/// rules instead of advertising them from every node.
fn single(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn within(ranges: &[IpNet], ip: &IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

fn services(model: &Model, node: &str, add: &mut impl FnMut(IpNet, String, bool)) {
    let cfg = &model.bgp_configuration;
    for r in &cfg.service_cluster_ips {
        add(*r, "BGPConfiguration serviceClusterIPs".into(), false);
    }
    for r in cfg.service_external_ips.iter().filter(|r| !single(r)) {
        add(*r, "BGPConfiguration serviceExternalIPs".into(), false);
    }
    if cfg.service_load_balancer_aggregation {
        for r in cfg.service_load_balancer_ips.iter().filter(|r| !single(r)) {
            add(*r, "BGPConfiguration serviceLoadBalancerIPs".into(), false);
        }
    }
    // The slices of each Service, found in one pass (not one pass per Service).
    let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in model.endpoint_slices.values() {
        if let Some(svc) = s.service.as_deref() {
            slices.entry((s.namespace.as_str(), svc)).or_default().push(s);
        }
    }
    for svc in model.services.values() {
        let own = slices.get(&(svc.namespace.as_str(), svc.name.as_str())).map_or(&[][..], Vec::as_slice);
        let Some(why) = advertise_service(model, node, svc, own) else { continue };
        let who = format!("Service {}", svc.key());
        for ip in svc.cluster_ips.iter().filter(|ip| within(&cfg.service_cluster_ips, ip)) {
            add(host(*ip), format!("{who} cluster IP: {why}"), false);
        }
        for ip in svc.external_ips.iter().filter(|ip| within(&cfg.service_external_ips, ip)) {
            add(host(*ip), format!("{who} external IP: {why}"), false);
        }
        for ip in svc.load_balancer_ingress.iter().filter(|ip| within(&cfg.service_load_balancer_ips, ip)) {
            add(host(*ip), format!("{who} LoadBalancer IP: {why}"), false);
        }
    }
}

/// Whether this node advertises the single addresses of `svc`, and why (Calico's
/// route generator, with EndpointSlice readiness taken into account); `slices`
/// are the Service's EndpointSlices (as [`Model::slices_of`] gives them).
fn advertise_service(model: &Model, node: &str, svc: &Service, slices: &[&EndpointSlice]) -> Option<String> {
    if svc.service_type == ServiceType::ExternalName || svc.cluster_ips.is_empty() {
        return None;
    }
    let cfg = &model.bgp_configuration;
    let local = svc.external_traffic_policy == TrafficPolicy::Local;
    if !local {
        let single_lb = |ip: &IpAddr| cfg.service_load_balancer_ips.iter().any(|r| single(r) && r.contains(ip));
        let single_ext = |ip: &IpAddr| cfg.service_external_ips.iter().any(|r| single(r) && r.contains(ip));
        if svc.service_type == ServiceType::LoadBalancer
            && svc.load_balancer_ip.iter().chain(&svc.load_balancer_ingress).any(single_lb)
        {
            return Some(
                "externalTrafficPolicy=Cluster, its LoadBalancer IP is a single-address serviceLoadBalancerIPs entry"
                    .into(),
            );
        }
        if svc.external_ips.iter().any(single_ext) {
            return Some(
                "externalTrafficPolicy=Cluster, an external IP is a single-address serviceExternalIPs entry".into(),
            );
        }
        if cfg.service_load_balancer_aggregation {
            return None;
        }
    }
    let mut ready = slices
        .iter()
        .filter(|s| s.address_type.is_some_and(|f| svc.ip_families.contains(&f)))
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.ready);
    if local {
        ready
            .any(|e| e.node_name.as_deref() == Some(node))
            .then(|| "externalTrafficPolicy=Local, ready endpoint on this node".into())
    } else {
        ready.next().map(|_| {
            "externalTrafficPolicy=Cluster, serviceLoadBalancerAggregation=Disabled, ready endpoint in the cluster"
                .into()
        })
    }
}

#[cfg(test)]
mod tests;
