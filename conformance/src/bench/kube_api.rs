//! `bench kube-api`: what one node's bgpd costs the Kubernetes API server: the
//! requests it makes and the bytes of the watch bodies it receives, per hour, in
//! a cluster of `--nodes` (default 1,000) whose kubelets update their Node
//! status as kubelets do.
//!
//! The API server is the stand-in of bgpd's datastore tests
//! (`bgpd/src/datastore/live/kubernetes/tests/api_server.rs`, included below: no
//! real API server runs on this machine), on loopback. It holds what a Calico
//! cluster of that size holds: a Node per node (Calico's BGP annotations, and
//! the status a kubelet reports: conditions, addresses, node info, the 50 images
//! `nodeStatusMaxImages` allows), a BGPConfiguration, two ToR BGPPeers per rack
//! of 40 nodes, two IPPools, an IPAMBlock and a BlockAffinity per node, an
//! IPAMHandle per pod (`--pods-per-node`, default 30) and, with `--services N`,
//! N Services and EndpointSlices with Service advertisement configured.
//!
//! One bgpd datastore runs against it, the daemon's own code path
//! (`bgpd::datastore::live::spawn` with the Kubernetes datastore; its client
//! reads a kubeconfig file, as on a node). Once its first content is published,
//! the cluster's clock runs `--speed-up` times faster (default 60) for
//! `--seconds` of wall clock (default 60: one hour of the cluster):
//!
//! - every kubelet posts its Node status every 5 minutes although nothing
//!   changed (`nodeStatusReportFrequency`, default 5m; it computes the status
//!   every `nodeStatusUpdateFrequency`, 10 s, and posts at once only when
//!   something changed: `--status-changes` such posts per node per hour,
//!   default 0), each a new `lastHeartbeatTime` on every condition;
//! - `--pod-churn` pods per node per hour start and stop (default 0): each
//!   start and each stop rewrites the node's IPAMBlock and creates or deletes
//!   an IPAMHandle;
//! - the stand-in ends each watch after its `timeoutSeconds` (kube asks for
//!   290 s) and sends a BOOKMARK to every watch each minute, both on the sped-up
//!   clock; history older than a few seconds is compacted, as etcd's is.
//!
//! The kubelets' Leases (`coordination.k8s.io`, renewed every 10 s) are a
//! separate resource bgpd does not watch: they cost bgpd nothing.
//!
//! The figures are measured at the stand-in: requests, and the bytes of list
//! and watch bodies (JSON; no HTTP heads, chunk framing or TLS), divided back to
//! one hour of the cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../../../bgpd/src/datastore/live/kubernetes/tests/api_server.rs"]
mod api_server;

use api_server::{ApiServer, Sent, Traffic};

const NODES: &str = "/api/v1/nodes";
const CRD: &str = "/apis/crd.projectcalico.org/v1";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// Nodes per rack (two ToR BGPPeers each).
const RACK: usize = 40;
/// A kubelet posts an unchanged Node status this often (`nodeStatusReportFrequency`).
const REPORT_SECONDS: f64 = 300.0;
/// The API server's watch cache sends each watch a BOOKMARK about this often.
const BOOKMARK_SECONDS: f64 = 60.0;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    /// Wall-clock seconds of measurement.
    pub seconds: u64,
    /// How many times faster than real time the cluster's clock runs.
    pub speed_up: u32,
    pub pods_per_node: usize,
    pub services: usize,
    /// Node status posts per node per hour beyond the 5-minute report.
    pub status_changes: u32,
    /// Pod starts (and as many stops) per node per hour.
    pub pod_churn: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 1000,
            seconds: 60,
            speed_up: 60,
            pods_per_node: 30,
            services: 0,
            status_changes: 0,
            pod_churn: 0,
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name} {v:?}: not a whole number"))
        };
        match a.as_str() {
            "--nodes" => o.nodes = value("--nodes")? as usize,
            "--seconds" => o.seconds = value("--seconds")?,
            "--speed-up" => o.speed_up = value("--speed-up")? as u32,
            "--pods-per-node" => o.pods_per_node = value("--pods-per-node")? as usize,
            "--services" => o.services = value("--services")? as usize,
            "--status-changes" => o.status_changes = value("--status-changes")? as u32,
            "--pod-churn" => o.pod_churn = value("--pod-churn")? as u32,
            other => {
                return Err(format!(
                    "unknown argument {other:?}: bench kube-api [--nodes N] [--seconds S] [--speed-up F] \
                     [--pods-per-node P] [--services N] [--status-changes PER_NODE_HOUR] [--pod-churn PER_NODE_HOUR]"
                ))
            }
        }
    }
    if !(2..=5000).contains(&o.nodes) || !(1..=100).contains(&o.seconds) || !(1..=600).contains(&o.speed_up) {
        return Err("--nodes is 2 to 5,000, --seconds 1 to 100, --speed-up 1 to 600".into());
    }
    if o.pods_per_node > 60 || o.services > 10_000 {
        return Err("--pods-per-node is at most 60 (a /26 block), --services at most 10,000".into());
    }
    Ok(o)
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// An RFC 3339 time `seconds` after 2026-01-01T00:00:00Z.
fn time(seconds: u64) -> String {
    let (d, s) = (seconds / 86_400, seconds % 86_400);
    let (month, day) = (1 + d / 28 % 12, 1 + d % 28);
    format!("2026-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// The Node of node `i` as a kubelet and calico-node leave it, its conditions'
/// heartbeats at `now` (seconds on the cluster's clock).
fn node(i: usize, now: u64) -> Value {
    let name = node_name(i);
    let ip = format!("10.1.{}.{}", i / 250, 1 + i % 250);
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({ "type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": time(now), "lastTransitionTime": time(0) })
    };
    let images: Vec<Value> = (0..50)
        .map(|k| {
            json!({ "names": [
                format!("registry.example.com/team-{}/service-{k}@sha256:{:064x}", k % 7, (i * 50 + k) as u128 * 0x9e37_79b9),
                format!("registry.example.com/team-{}/service-{k}:v1.{}.{}", k % 7, k % 13, i % 5),
            ], "sizeBytes": 10_000_000 + k * 1_234_567 })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
            "creationTimestamp": time(0),
            // As the API server keeps them (watch events carry them too): who
            // set which fields, the kubelet's status entry renewed with each post.
            "managedFields": [
                { "manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time(0),
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:annotations": {
                      ".": {}, "f:node.alpha.kubernetes.io/ttl": {},
                      "f:volumes.kubernetes.io/controller-managed-attach-detach": {} },
                      "f:labels": { ".": {}, "f:beta.kubernetes.io/arch": {}, "f:beta.kubernetes.io/os": {},
                                    "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {}, "f:kubernetes.io/os": {} } },
                      "f:spec": { "f:providerID": {} } } },
                { "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": time(0),
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:podCIDR": {}, "f:podCIDRs": { ".": {}, "v:\"10.244.0.0/24\"": {} } } } },
                { "manager": "calico-node", "operation": "Update", "apiVersion": "v1", "time": time(0),
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:annotations": {
                      "f:projectcalico.org/ASNumber": {}, "f:projectcalico.org/IPv4Address": {} } },
                      "f:status": { "f:conditions": { "k:{\"type\":\"NetworkUnavailable\"}": {
                          ".": {}, "f:lastHeartbeatTime": {}, "f:lastTransitionTime": {}, "f:message": {}, "f:reason": {},
                          "f:status": {}, "f:type": {} } } } },
                  "subresource": "status" },
                { "manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time(now),
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:status": {
                      "f:allocatable": { "f:ephemeral-storage": {}, "f:memory": {} },
                      "f:capacity": { "f:ephemeral-storage": {}, "f:memory": {} },
                      "f:conditions": {
                          "k:{\"type\":\"DiskPressure\"}": { "f:lastHeartbeatTime": {} },
                          "k:{\"type\":\"MemoryPressure\"}": { "f:lastHeartbeatTime": {} },
                          "k:{\"type\":\"PIDPressure\"}": { "f:lastHeartbeatTime": {} },
                          "k:{\"type\":\"Ready\"}": { "f:lastHeartbeatTime": {}, "f:lastTransitionTime": {},
                                                        "f:message": {}, "f:reason": {}, "f:status": {} } },
                      "f:images": {}, "f:nodeInfo": { "f:bootID": {}, "f:kernelVersion": {} } } },
                  "subresource": "status" },
            ],
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m6i.2xlarge",
                "topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": format!("eu-west-1{}", ["a", "b", "c"][i % 3]),
                "rack": format!("r{}", i / RACK),
            },
            "annotations": {
                "projectcalico.org/IPv4Address": format!("{ip}/16"),
                "projectcalico.org/ASNumber": (64512 + i / RACK).to_string(),
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
            },
        },
        "spec": { "podCIDR": format!("10.244.{}.0/24", i % 256), "podCIDRs": [format!("10.244.{}.0/24", i % 256)],
                  "providerID": format!("aws:///eu-west-1a/i-{:017x}", i) },
        "status": {
            "capacity": { "cpu": "8", "ephemeral-storage": "104845292Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                          "memory": "32386544Ki", "pods": "110" },
            "allocatable": { "cpu": "7910m", "ephemeral-storage": "95551679124", "hugepages-1Gi": "0",
                             "hugepages-2Mi": "0", "memory": "31369712Ki", "pods": "110" },
            "conditions": [
                condition("NetworkUnavailable", "False", "CalicoIsUp", "Calico is running on this node"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{ "type": "InternalIP", "address": ip }, { "type": "Hostname", "address": name }],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "nodeInfo": {
                "architecture": "amd64", "bootID": format!("{:032x}", i * 7919),
                "containerRuntimeVersion": "containerd://1.7.27", "kernelVersion": "6.1.0-37-cloud-amd64",
                "kubeProxyVersion": "", "kubeletVersion": "v1.33.2", "machineID": format!("{:032x}", i * 104_729),
                "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": format!("ec2{:05x}-0000-0000-0000-{:012x}", i, i),
            },
            "images": images,
        },
    })
}

fn block_cidr(i: usize) -> String {
    format!("10.{}.{}.{}/26", 128 + i / 1024, i / 4 % 256, i % 4 * 64)
}

fn handle_id(node: usize, pod: u64) -> String {
    format!("k8s-pod-network.{:064x}", (node as u128) << 64 | pod as u128)
}

/// Node `i`'s IPAMBlock holding `pods` (the handle serials of its pods).
fn ipam_block(i: usize, pods: &[u64]) -> Value {
    let mut allocations = vec![Value::Null; 64];
    let attributes: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(k, pod)| {
            allocations[k] = json!(k);
            json!({ "handle_id": handle_id(i, *pod), "secondary": {
                "namespace": format!("team-{}", pod % 7), "node": node_name(i),
                "pod": format!("service-{}-{:05x}", pod % 50, pod), "timestamp": "2026-01-01 00:00:00 +0000 UTC" } })
        })
        .collect();
    let unallocated: Vec<usize> = (pods.len()..64).collect();
    let cidr = block_cidr(i);
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": { "name": cidr.replace(['.', '/'], "-") },
        "spec": { "cidr": cidr, "affinity": format!("host:{}", node_name(i)), "allocations": allocations,
                  "unallocated": unallocated, "attributes": attributes, "deleted": false,
                  "sequenceNumber": 1, "sequenceNumberForAllocation": {}, "strictAffinity": false },
    })
}

fn ipam_handle(i: usize, pod: u64) -> Value {
    let id = handle_id(i, pod);
    json!({ "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle", "metadata": { "name": id },
            "spec": { "handleID": id, "block": { block_cidr(i): 1 }, "deleted": false } })
}

fn calico(kind: &str, name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "crd.projectcalico.org/v1", "kind": kind, "metadata": { "name": name }, "spec": spec })
}

/// The cluster as it stands before bgpd starts; returns each node's pods.
fn load(server: &ApiServer, o: &Options) -> Vec<Vec<u64>> {
    server.serve_calico("crd.projectcalico.org/v1");
    let mut configuration = json!({ "asNumber": 64512, "nodeToNodeMeshEnabled": false, "logSeverityScreen": "Info" });
    if o.services > 0 {
        configuration["serviceClusterIPs"] = json!([{ "cidr": "10.96.0.0/12" }]);
    }
    server.apply(&format!("{CRD}/bgpconfigurations"), calico("BGPConfiguration", "default", configuration));
    for rack in 0..o.nodes.div_ceil(RACK) {
        for tor in ["a", "b"] {
            let spec = json!({ "nodeSelector": format!("rack == 'r{rack}'"), "asNumber": 65000 + rack,
                               "peerIP": format!("10.1.{rack}.25{}", if tor == "a" { 3 } else { 4 }) });
            server.apply(&format!("{CRD}/bgppeers"), calico("BGPPeer", &format!("r{rack}-tor-{tor}"), spec));
        }
    }
    for (name, cidr) in [("default-ipv4-ippool", "10.128.0.0/10"), ("infra", "10.200.0.0/16")] {
        let spec = json!({ "cidr": cidr, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                           "natOutgoing": true, "nodeSelector": "all()" });
        server.apply(&format!("{CRD}/ippools"), calico("IPPool", name, spec));
    }
    let mut pods = Vec::with_capacity(o.nodes);
    for i in 0..o.nodes {
        server.apply(NODES, node(i, 0));
        let mine: Vec<u64> = (0..o.pods_per_node as u64).collect();
        server.apply(&format!("{CRD}/ipamblocks"), ipam_block(i, &mine));
        let cidr = block_cidr(i);
        let affinity = json!({ "node": node_name(i), "cidr": cidr, "state": "confirmed", "deleted": "false" });
        let name = format!("{}-{}", node_name(i), cidr.replace(['.', '/'], "-"));
        server.apply(&format!("{CRD}/blockaffinities"), calico("BlockAffinity", &name, affinity));
        for pod in &mine {
            server.apply(&format!("{CRD}/ipamhandles"), ipam_handle(i, *pod));
        }
        pods.push(mine);
    }
    for k in 0..o.services {
        let (name, ns) = (format!("service-{k}"), format!("team-{}", k % 7));
        let ip = format!("10.96.{}.{}", k / 250, 1 + k % 250);
        server.apply(
            SERVICES,
            json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name, "namespace": ns },
                    "spec": { "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                              "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
                              "internalTrafficPolicy": "Cluster" } }),
        );
        let endpoints: Vec<Value> = (0..3)
            .map(|e| {
                let n = (k * 3 + e) % o.nodes;
                json!({ "addresses": [format!("10.{}.{}.{}", 128 + n / 1024, n / 4 % 256, n % 4 * 64 + 1 + e)],
                        "conditions": { "ready": true }, "nodeName": node_name(n) })
            })
            .collect();
        server.apply(
            SLICES,
            json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": { "name": format!("{name}-abcde"), "namespace": ns,
                                  "labels": { "kubernetes.io/service-name": name } },
                    "endpoints": endpoints, "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }] }),
        );
    }
    pods
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Requests and bytes from bgpd's start to its first published content.
    pub start: Traffic,
    /// During the measurement.
    pub window: Traffic,
    /// Watch events and bytes during the measurement, by collection path.
    pub sent: BTreeMap<String, Sent>,
    /// Node status posts and pod starts and stops made during the measurement.
    pub node_updates: u64,
    pub pod_changes: u64,
    /// The cluster's seconds the measurement stood for.
    pub cluster_seconds: f64,
    /// The size of one Node object, and of its metadata alone (JSON bytes).
    pub node_bytes: usize,
    pub node_metadata_bytes: usize,
    /// Watches open at the end.
    pub open_watches: usize,
    /// How many times the datastore published new content during the measurement.
    pub publications: u64,
    pub objects: usize,
}

fn minus(a: Traffic, b: Traffic) -> Traffic {
    Traffic {
        requests: a.requests - b.requests,
        lists: a.lists - b.lists,
        watches: a.watches - b.watches,
        throttled: a.throttled - b.throttled,
        list_bytes: a.list_bytes - b.list_bytes,
        watch_events: a.watch_events - b.watch_events,
        watch_bytes: a.watch_bytes - b.watch_bytes,
        other_bytes: a.other_bytes - b.other_bytes,
    }
}

/// Runs the cluster and one bgpd datastore against it; what it cost.
pub fn measure(o: &Options) -> Result<Figures, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server = ApiServer::default();
    let mut pods = load(&server, o);
    server.speed_up(o.speed_up);
    server.compact(server.version());
    let objects = o.nodes * (3 + o.pods_per_node) + 2 * o.services;
    let url = rt.block_on(server.start_at());
    let dir = std::env::temp_dir().join(format!("bench-kube-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{url}\"}}\n\
         users:\n- name: bgpd\n  user: {{token: not-checked}}\ncontexts:\n- name: c\n  context: \
         {{cluster: stand-in, user: bgpd}}\ncurrent-context: c\n"
    );
    std::fs::write(&kubeconfig, text).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let spec = bgpd::datastore::live::DatastoreSpec::Kubernetes { kubeconfig: Some(kubeconfig.clone()) };
    let figures = rt.block_on(async {
        let mut feed = bgpd::datastore::live::spawn(&spec, "kube-system", "node-1");
        let first = tokio::time::timeout(Duration::from_secs(60), feed.wait_for(|f| f.sources.is_some())).await;
        if !first.map(|r| r.is_ok()).unwrap_or(false) {
            return Err(format!("bgpd published no content within 60 s; requests: {:?}", server.traffic()));
        }
        // The watches open after the first content: not part of the window.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = server.traffic();
        let sent_before = server.sent();
        let speed = f64::from(o.speed_up);
        let node_rate = o.nodes as f64 * (3600.0 / REPORT_SECONDS + f64::from(o.status_changes)) / 3600.0 * speed;
        let pod_rate = o.nodes as f64 * f64::from(o.pod_churn) * 2.0 / 3600.0 * speed;
        let began = Instant::now();
        let end = began + Duration::from_secs(o.seconds);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut node_updates, mut pod_changes, mut next_node, mut next_pod) = (0u64, 0u64, 0usize, 0u64);
        let mut last_bookmark = began;
        let mut last_compaction = (began, server.version());
        let mut publications = 0u64;
        let mut content = feed.borrow_and_update().sources.clone();
        // The churn is made up to this point of the window (a busy machine
        // makes the last tick late): the hour is scaled from it.
        let mut made_until = 0.0f64;
        while Instant::now() < end {
            tick.tick().await;
            let elapsed = began.elapsed().as_secs_f64();
            made_until = elapsed;
            let cluster_now = (elapsed * speed) as u64 + 3600;
            // Each kubelet in turn: node k posts at k / rate, so each node
            // once per report period.
            while (node_updates as f64) < elapsed * node_rate {
                server.apply(NODES, node(next_node % o.nodes, cluster_now));
                next_node += 1;
                node_updates += 1;
            }
            while (pod_changes as f64) < elapsed * pod_rate && o.pods_per_node > 0 {
                // A pod stops and another starts on the next node in turn.
                let i = (next_pod as usize) % o.nodes;
                next_pod += 1;
                let mine = &mut pods[i];
                let gone = mine.remove(0);
                server.delete(&format!("{CRD}/ipamhandles"), &handle_id(i, gone));
                server.apply(&format!("{CRD}/ipamblocks"), ipam_block(i, mine));
                let new = mine.last().map_or(0, |p| p + 1);
                mine.push(new);
                server.apply(&format!("{CRD}/ipamhandles"), ipam_handle(i, new));
                server.apply(&format!("{CRD}/ipamblocks"), ipam_block(i, mine));
                pod_changes += 2;
            }
            if last_bookmark.elapsed().as_secs_f64() * speed >= BOOKMARK_SECONDS {
                last_bookmark = Instant::now();
                server.bookmark();
            }
            // etcd's compaction: keep 10 s of history (of wall clock: more
            // than the API server's watch cache holds on the sped-up clock)
            // for watches that start again from their last event or bookmark.
            if last_compaction.0.elapsed() >= Duration::from_secs(10) {
                server.compact(last_compaction.1);
                last_compaction = (Instant::now(), server.version());
            }
            if feed.has_changed().unwrap_or(false) {
                let now = feed.borrow_and_update().sources.clone();
                if now.as_ref().map(std::sync::Arc::as_ptr) != content.as_ref().map(std::sync::Arc::as_ptr) {
                    publications += 1;
                    content = now;
                }
            }
        }
        let cluster_seconds = made_until * speed;
        // What was made in the window is counted as sent once bgpd has read
        // it (a slow build falls behind; the socket holds the rest back).
        let nodes_sent = |server: &ApiServer| {
            let before = sent_before.get(NODES).copied().unwrap_or_default().events;
            server.sent().get(NODES).map_or(0, |s| s.events - before)
        };
        let drained = Instant::now() + Duration::from_secs(30);
        while nodes_sent(&server) < node_updates && Instant::now() < drained {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let window = minus(server.traffic(), start);
        let mut sent = server.sent();
        for (collection, s) in &mut sent {
            let b = sent_before.get(collection).copied().unwrap_or_default();
            *s = Sent { events: s.events - b.events, bytes: s.bytes - b.bytes };
        }
        Ok(Figures {
            start,
            window,
            sent,
            node_updates,
            pod_changes,
            cluster_seconds,
            node_bytes: node(0, 0).to_string().len(),
            node_metadata_bytes: node(0, 0)["metadata"].to_string().len(),
            open_watches: server.open_watches(),
            publications,
            objects,
        })
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    println!(
        "bench kube-api: {} nodes ({} pods each, {} Services), one bgpd datastore watching; {} s of wall clock at {}x = {:.0} min of the cluster",
        o.nodes,
        o.pods_per_node,
        o.services,
        o.seconds,
        o.speed_up,
        o.seconds as f64 * f64::from(o.speed_up) / 60.0
    );
    println!(
        "  churn per node per hour: {} Node status posts (the 5-minute report{}), {} pod starts and stops",
        3600.0 / REPORT_SECONDS + f64::from(o.status_changes),
        if o.status_changes > 0 { format!(" + {} changes", o.status_changes) } else { String::new() },
        o.pod_churn
    );
    let f = measure(&o)?;
    report(&f, &o);
    Ok(())
}

fn report(f: &Figures, o: &Options) {
    let hour = 3600.0 / f.cluster_seconds;
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "at start: {} requests ({} lists, {} watches), {:.1} MB of lists for {} objects (a Node is {} bytes, its metadata {})",
        f.start.requests,
        f.start.lists,
        f.start.watches,
        mb(f.start.list_bytes),
        f.objects,
        f.node_bytes,
        f.node_metadata_bytes
    );
    let w = &f.window;
    println!(
        "measured: {} Node status posts and {} IPAM changes made; bgpd made {} requests ({} lists, {} watches), received {} watch events, {:.1} MB; published {} times",
        f.node_updates, f.pod_changes, w.requests, w.lists, w.watches, w.watch_events, mb(w.watch_bytes), f.publications
    );
    for (collection, s) in &f.sent {
        if s.events > 0 {
            println!("  {collection}: {:.0} events/h, {:.2} MB/h", s.events as f64 * hour, mb(s.bytes) * hour);
        }
    }
    println!(
        "per node per hour: {:.0} requests ({:.0} watches, {:.0} lists), {:.0} watch events, {:.1} MB of watch bodies",
        w.requests as f64 * hour,
        w.watches as f64 * hour,
        w.lists as f64 * hour,
        w.watch_events as f64 * hour,
        mb(w.watch_bytes) * hour
    );
    let n = o.nodes as f64;
    println!(
        "cluster of {} bgpds per hour: {:.0} requests ({:.1}/s), {:.0} MB of watch bodies ({:.2} MB/s) sent by the API server, {} watches open",
        o.nodes,
        w.requests as f64 * hour * n,
        w.requests as f64 * hour * n / 3600.0,
        mb(w.watch_bytes) * hour * n,
        mb(w.watch_bytes) * hour * n / 3600.0,
        f.open_watches * o.nodes
    );
}
