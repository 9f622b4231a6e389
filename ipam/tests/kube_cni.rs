//! `bgpd-ipam` (the built binary) with `"datastore": "kubernetes:KUBECONFIG"`
//! against the API-server stand-in of bgpd's Kubernetes datastore tests
//! (`bgpd/src/datastore/live/kubernetes/tests/api_server.rs`, included here: no
//! real API server can run on this machine; what it does not reproduce is
//! listed in `docs/kubernetes.md`). The client comes from a kubeconfig file, as
//! the plugin's on a node; the design (IPPools, the Node with Calico's label
//! annotation, the pod's Namespace and Pod annotations, IPAMConfig) is read from
//! the API; the state is written as Calico's CRDs (`KubeStore`); the metrics
//! text file is written per command (`ipam.metrics_dir`). The stand-in admits
//! every write against Calico's CRD schemas (the shared data's
//! `calico-crds/`), as a real API server does: a write that does not fit is
//! answered `422 Invalid`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../../bgpd/src/datastore/live/kubernetes/tests/api_server.rs"]
mod api_server;

const CRD: &str = "/apis/crd.projectcalico.org/v1";

/// The stand-in serving what `bgpd-ipam` reads and writes, on a runtime of its
/// own, with a kubeconfig file pointing at it.
struct Cluster {
    server: api_server::ApiServer,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The stand-in with admission against Calico's CRDs; `None` (a printed
    /// skip, a failure under CI) without the shared data.
    fn start(test: &str) -> Option<Cluster> {
        let c = Cluster::start_serving(true);
        c.server.admit_calico_crds(test).then_some(c)
    }

    /// The stand-in, serving Calico's IPPool CRD or not.
    fn start_serving(ippools: bool) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = api_server::ApiServer::default();
        for (plural, kind) in [("namespaces", "Namespace"), ("pods", "Pod")] {
            server.serve_resource("v1", plural, kind);
        }
        if ippools {
            server.serve_resource("crd.projectcalico.org/v1", "ippools", "IPPool");
        }
        for (plural, kind) in [
            ("ipamconfigs", "IPAMConfig"),
            ("ipamblocks", "IPAMBlock"),
            ("blockaffinities", "BlockAffinity"),
            ("ipamhandles", "IPAMHandle"),
        ] {
            server.serve_resource("crd.projectcalico.org/v1", plural, kind);
        }
        let url = rt.block_on(server.start_at());
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{url}\"}}\n\
             users:\n- name: bgpd-ipam\n  user: {{token: not-checked}}\ncontexts:\n- name: c\n  context: \
             {{cluster: stand-in, user: bgpd-ipam}}\ncurrent-context: c\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        std::fs::create_dir(dir.path().join("lock")).unwrap();
        Cluster { server, _rt: rt, dir }
    }

    fn conf(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"{{"cniVersion":"1.1.0","name":"podnet","type":"ptp","ipam":{{"type":"bgpd-ipam",
            "datastore":"kubernetes:{d}/kubeconfig","nodename":"n1","lock_dir":"{d}/lock",
            "metrics_dir":"{d}/metrics"}}}}"#
        )
    }

    /// Runs the plugin for pod `ns/pod` in container `container`; returns
    /// (exit ok, stdout as JSON).
    fn call(&self, command: &str, container: &str, ns: &str, pod: &str, conf: &str) -> (bool, Value) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/var/run/netns/none")
            .env("CNI_PATH", "/nonexistent")
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}"));
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start bgpd-ipam");
        child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        (out.status.success(), v)
    }

    fn add(&self, container: &str, ns: &str, pod: &str) -> String {
        let (ok, res) = self.call("ADD", container, ns, pod, &self.conf());
        assert!(ok, "ADD {container} failed: {res}");
        res["ips"][0]["address"].as_str().unwrap().to_string()
    }

    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.server.object(&format!("{CRD}/{plural}"), name)
    }

    /// The metrics text file's samples (series → value).
    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let text = std::fs::read_to_string(self.dir.path().join("metrics/bgpd_ipam.prom")).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(s, v)| (s.to_string(), if v == "+Inf" { f64::INFINITY } else { v.parse().unwrap() }))
            .collect()
    }
}

fn pool(name: &str, cidr: &str, selector: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": name}, "spec": {"cidr": cidr, "blockSize": 28, "nodeSelector": selector},
    })
}

/// The design of a small cluster: the pod pool for node n1 (chosen by a
/// Kubernetes label and a Calico label of its Node), a pool only a namespace's
/// annotation names, and their pods.
fn cluster(test: &str) -> Option<Cluster> {
    let c = Cluster::start(test)?;
    let s = &c.server;
    s.apply(&format!("{CRD}/ippools"), pool("pods", "10.244.0.0/24", "rack == 'r1' && zone == 'z1'"));
    s.apply(&format!("{CRD}/ippools"), pool("team", "10.250.0.0/24", "rack == 'nowhere'"));
    s.apply(
        &format!("{CRD}/ipamconfigs"),
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMConfig", "metadata": {"name": "default"},
               "spec": {"strictAffinity": false, "maxBlocksPerHost": 4}}),
    );
    s.apply(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1", "labels": {"rack": "r1"},
                            "annotations": {"projectcalico.org/labels": "{\"zone\":\"z1\"}"}}}),
    );
    s.apply(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team", "annotations": {"cni.projectcalico.org/ipv4pools": "[\"team\"]"}}}),
    );
    s.apply("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    s.apply(
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api-0", "namespace": "default"}}),
    );
    s.apply(
        "/api/v1/namespaces/team/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "team"}}),
    );
    s.apply(
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "lost", "namespace": "default",
                            "annotations": {"cni.projectcalico.org/ipv4pools": "[\"no-such-pool\"]"}}}),
    );
    Some(c)
}

fn in_net(addr: &str, net: &str) -> bool {
    let a: ipnet::IpNet = addr.parse().unwrap();
    net.parse::<ipnet::IpNet>().unwrap().contains(&a.addr())
}

/// Issue 20 (c): ADD, CHECK, STATUS and DEL on the `kubernetes` datastore, the
/// design read from the API server and the state kept as Calico's CRDs.
#[test]
fn add_and_del_on_the_kubernetes_datastore() {
    let Some(c) = cluster("add_and_del_on_the_kubernetes_datastore") else { return };
    // The node's pool, chosen by its Kubernetes and Calico labels.
    let a = c.add("c1", "default", "api-0");
    assert!(in_net(&a, "10.244.0.0/24"), "{a}");
    let block = c.object("ipamblocks", "10-244-0-0-28").expect("the block claimed as an IPAMBlock");
    assert_eq!(block["spec"]["affinity"], "host:n1");
    let affinity = c.object("blockaffinities", "n1-10-244-0-0-28").expect("its BlockAffinity");
    assert_eq!(affinity["spec"]["state"], "confirmed");
    assert_eq!(affinity["spec"]["deleted"], "false", "the v1 CRD's required string");
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_some(), "the handle as an IPAMHandle");
    // The namespace's annotation names the other pool.
    let b = c.add("c2", "team", "web-0");
    assert!(in_net(&b, "10.250.0.0/24"), "{b}");
    // Idempotent: the same ADD again returns the same address.
    assert_eq!(c.add("c1", "default", "api-0"), a);
    // CHECK with the address ADD returned.
    let with_prev = |addr: &str| {
        let mut v: Value = serde_json::from_str(&c.conf()).unwrap();
        v["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": addr}]});
        v.to_string()
    };
    assert!(c.call("CHECK", "c1", "default", "api-0", &with_prev(&a)).0);
    assert!(!c.call("CHECK", "c1", "default", "api-0", &with_prev(&b)).0);
    // A pod asking for an unknown pool: refused, code 101, naming it.
    let (ok, res) = c.call("ADD", "c3", "default", "lost", &c.conf());
    assert!(!ok);
    assert_eq!(res["code"], 101, "{res}");
    assert!(res["msg"].as_str().unwrap().contains("no-such-pool"), "{res}");
    assert!(c.object("ipamhandles", "podnet.c3.eth0").is_none(), "nothing kept of a refused ADD");
    // DEL releases: the handle and the address are gone.
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0);
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_none());
    let block = c.object("ipamblocks", "10-244-0-0-28").unwrap();
    assert!(block["spec"]["allocations"].as_array().unwrap().iter().all(Value::is_null), "{block}");
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0, "DEL again is fine");
    assert!(c.call("STATUS", "", "default", "", &c.conf()).0, "ready");
    // `bgpd-ipam show` on the same datastore.
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"))
        .args(["show", "--json", "--datastore", &format!("kubernetes:{}/kubeconfig", c.dir.path().display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    let team = usage["pools"].as_array().unwrap().iter().find(|p| p["name"] == "team").expect("pool team");
    assert_eq!((team["blocks_claimed"].as_u64(), team["addresses_used"].as_u64()), (Some(1), Some(1)), "{team}");

    // Issue 20 (d), through the binary: counters across invocations, failures
    // by reason, the gauges of the last command that read the design.
    let m = c.metrics();
    assert_eq!(m["bgpd_ipam_allocations_total"], 3.0, "{m:#?}");
    assert_eq!(m["bgpd_ipam_releases_total"], 2.0);
    assert_eq!(m["bgpd_ipam_commands_total{command=\"ADD\"}"], 4.0);
    assert_eq!(m["bgpd_ipam_failures_total{command=\"ADD\",reason=\"bad_request\"}"], 1.0);
    assert_eq!(m["bgpd_ipam_failures_total{command=\"CHECK\",reason=\"check_failed\"}"], 1.0);
    assert_eq!(m["bgpd_ipam_command_duration_seconds_count{command=\"ADD\"}"], 4.0);
    assert_eq!(m["bgpd_ipam_command_duration_seconds_bucket{command=\"ADD\",le=\"+Inf\"}"], 4.0);
    assert_eq!(m["bgpd_ipam_pool_addresses{pool=\"pods\",cidr=\"10.244.0.0/24\"}"], 256.0);
    assert_eq!(m["bgpd_ipam_pool_free_addresses{pool=\"pods\",cidr=\"10.244.0.0/24\"}"], 256.0, "after the DEL");
    assert_eq!(m["bgpd_ipam_pool_free_addresses{pool=\"team\",cidr=\"10.250.0.0/24\"}"], 255.0);
    assert_eq!(m["bgpd_ipam_block_free_addresses{block=\"10.250.0.0/28\"}"], 15.0);
    assert_eq!(m["bgpd_ipam_block_addresses{block=\"10.250.0.0/28\"}"], 16.0);
    assert_eq!(c.server.warnings(), Vec::<String>::new(), "no field the CRDs do not name");
}

/// Issue 20: an API server shedding load (429 with `Retry-After`, as API
/// priority and fairness answers) makes ADD and DEL answer "try again later"
/// (code 11, which the runtime retries) rather than an I/O failure (74), and
/// STATUS "not available" saying so, with nothing half-written; once it
/// answers again, ADD and DEL complete.
#[test]
fn a_throttled_api_server_is_try_again_later() {
    let Some(c) = cluster("a_throttled_api_server_is_try_again_later") else { return };
    let calico = |plural: &str| format!("{CRD}/{plural}");
    // The design's reads (IPPools) throttled: ADD and STATUS.
    c.server.throttle(Some(&calico("ippools")), 1, 2);
    // STATUS keeps the spec's code for "not available" (50), saying why.
    for (command, code) in [("ADD", 11), ("STATUS", 50)] {
        let (ok, res) = c.call(command, "c1", "default", "api-0", &c.conf());
        assert!(!ok, "{command}");
        assert_eq!(res["code"], code, "{command}: {res}");
        let msg = res["msg"].as_str().unwrap();
        assert!(msg.contains("busy, try again later") && msg.contains("429"), "{command}: {res}");
    }
    // The state's reads and writes (the blocks) throttled: ADD, then nothing
    // of the attempt left behind.
    c.server.throttle(Some(&calico("ipamblocks")), 1, 1);
    let (ok, res) = c.call("ADD", "c1", "default", "api-0", &c.conf());
    assert!(!ok);
    assert_eq!(res["code"], 11, "{res}");
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_none(), "nothing kept of a throttled ADD");
    let a = c.add("c1", "default", "api-0");
    assert!(in_net(&a, "10.244.0.0/24"), "{a}");
    // DEL throttled, then done.
    c.server.throttle(Some(&calico("ipamhandles")), 1, 1);
    let (ok, res) = c.call("DEL", "c1", "default", "api-0", &c.conf());
    assert!(!ok);
    assert_eq!(res["code"], 11, "{res}");
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0);
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_none());
}

/// Bad input on the `kubernetes` datastore: errors that name what is wrong,
/// and nothing written.
#[test]
fn kubernetes_datastore_errors_name_the_problem() {
    let Some(c) = cluster("kubernetes_datastore_errors_name_the_problem") else { return };
    // A kubeconfig that does not exist: I/O failure naming the file.
    let conf =
        c.conf().replace(&format!("kubernetes:{}/kubeconfig", c.dir.path().display()), "kubernetes:/nonexistent/kc");
    let (ok, res) = c.call("ADD", "c1", "default", "api-0", &conf);
    assert!(!ok);
    assert_eq!(res["code"], 5, "{res}");
    assert!(res["msg"].as_str().unwrap().contains("/nonexistent/kc"), "{res}");
    // `kubernetes:` without a path: a bad datastore string.
    let conf = c.conf().replace(&format!("kubernetes:{}/kubeconfig", c.dir.path().display()), "kubernetes:");
    let (_, res) = c.call("ADD", "c1", "default", "api-0", &conf);
    assert_eq!(res["code"], 7, "{res}");
    // Overlapping pools in the API: invalid configuration naming both.
    c.server.apply(&format!("{CRD}/ippools"), pool("overlap", "10.244.0.0/16", "all()"));
    let (ok, res) = c.call("ADD", "c1", "default", "api-0", &c.conf());
    assert!(!ok);
    assert_eq!(res["code"], 7, "{res}");
    let msg = res["msg"].as_str().unwrap();
    assert!(msg.contains("overlap") && msg.contains("pods"), "{res}");
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_none());
    // DEL reads no design: it still works.
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0);
    // Calico's IPPool CRD not served: named (STATUS: not available).
    let bare = Cluster::start_serving(false);
    let (ok, res) = bare.call("STATUS", "", "default", "", &bare.conf());
    assert!(!ok);
    assert_eq!(res["code"], 50, "{res}");
    assert!(res["msg"].as_str().unwrap().contains("ippools"), "{res}");
}

/// Issue 20: every object `KubeStore` writes fits Calico's v1 CRDs, so a real
/// API server takes it: a block claim (IPAMBlock, BlockAffinity pending then
/// confirmed), allocations (the block replaced, IPAMHandles created and
/// replaced), a release (the block replaced, the handle deleted) and the
/// block's release (the affinity `pendingDeletion`, then deleted). Each write
/// is admitted against the schemas (a BlockAffinity without `deleted` was
/// answered `422 Invalid: spec.deleted: Required value`), and none is pruned.
#[test]
fn every_kube_store_write_fits_calicos_crds() {
    use ipam::store::kubernetes::KubeStore;
    use ipam::store::{Scope, Store};
    use ipam::{Allocator, AssignRequest, Design};

    let test = "every_kube_store_write_fits_calicos_crds";
    let server = api_server::ApiServer::default();
    if !server.admit_calico_crds(test) {
        return;
    }
    for (plural, kind) in
        [("ipamblocks", "IPAMBlock"), ("blockaffinities", "BlockAffinity"), ("ipamhandles", "IPAMHandle")]
    {
        server.serve_resource("crd.projectcalico.org/v1", plural, kind);
    }
    let design = Design::parse(&[(
        std::path::Path::new("k.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: kpool}\n\
         spec: {cidr: 10.30.0.0/26, blockSize: 29}\n",
    )])
    .expect("design");
    let req = |h: &str, n: u32| AssignRequest { handle: h.into(), node: "n1".into(), num_v4: n, ..Default::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = KubeStore::new(server.start().await);
        let alloc = Allocator::new(store.clone(), design);
        let a = alloc.auto_assign(&req("pod-a", 1)).await.expect("claim and allocate");
        alloc.auto_assign(&req("pod-b", 2)).await.expect("allocate from the claimed block");
        alloc.auto_assign(&req("pod-a", 1)).await.expect("a second address of a handle");
        let affinity = server.object(&format!("{CRD}/blockaffinities"), "n1-10-30-0-0-29").expect("the affinity");
        assert_eq!(affinity["spec"]["deleted"], "false", "{affinity}");
        assert_eq!(affinity["spec"]["state"], "confirmed", "{affinity}");
        let block = server.object(&format!("{CRD}/ipamblocks"), "10-30-0-0-29").expect("the block");
        assert_eq!(block["spec"]["strictAffinity"], false, "{block}");
        assert!(block["spec"]["attributes"].is_array() && block["spec"]["unallocated"].is_array(), "{block}");
        let handle = server.object(&format!("{CRD}/ipamhandles"), "pod-a").expect("the handle");
        assert_eq!(handle["spec"]["handleID"], "pod-a");
        assert_eq!(handle["spec"]["block"]["10.30.0.0/29"], 2, "{handle}");
        // A floating IP (not one of the pool's blocks) rides in an annotation:
        // the CRD has no field for it, and a real API server would prune one.
        let floating: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        alloc.record_floating_ips("pod-a", "n1", &[floating], &[a[0].ip]).await.expect("record a floating IP");
        let handle = server.object(&format!("{CRD}/ipamhandles"), "pod-a").expect("the handle");
        assert!(handle["spec"].get("floatingIPs").is_none(), "{handle}");
        let note = handle["metadata"]["annotations"][ipam::store::kubernetes::FLOATING_IPS_ANNOTATION].as_str();
        let note: serde_json::Value = serde_json::from_str(note.expect("the annotation")).expect("JSON");
        assert_eq!(note[0]["ip"], "192.0.2.7", "{handle}");
        assert_eq!(note[0]["target"], a[0].ip.to_string(), "{handle}");
        let read = alloc.addresses_of("pod-a").await.expect("read the handle back");
        assert_eq!(read.len(), 2, "{read:?}");
        let handles = store.list(&Scope::Handles).await.expect("list");
        let kept = handles.iter().find_map(|v| match &v.value {
            ipam::store::Object::Handle(h) if h.handle_id == "pod-a" => Some(h.floating_ips.clone()),
            _ => None,
        });
        assert_eq!(kept.expect("pod-a listed").iter().map(|f| f.ip).collect::<Vec<_>>(), [floating]);

        alloc.release_ips(&[a[0].ip]).await.expect("release an address");
        for h in ["pod-a", "pod-b"] {
            alloc.release_handle(h).await.expect("release a handle");
        }
        alloc.release_empty_blocks(None).await.expect("release the block");
        assert!(store.list(&Scope::Blocks).await.expect("list").is_empty());
        assert!(store.list(&Scope::Affinities(None)).await.expect("list").is_empty());
    });
    let writes: Vec<String> = server.requests().into_iter().filter(|r| !r.starts_with('/')).collect();
    for w in
        ["POST /apis/crd.projectcalico.org/v1/blockaffinities", "PUT /apis/crd.projectcalico.org/v1/blockaffinities/"]
    {
        assert!(writes.iter().any(|r| r.starts_with(w)), "no {w}: {writes:#?}");
    }
    for w in ["POST /apis/crd.projectcalico.org/v1/ipamblocks", "PUT /apis/crd.projectcalico.org/v1/ipamblocks/"] {
        assert!(writes.iter().any(|r| r.starts_with(w)), "no {w}: {writes:#?}");
    }
    for w in ["POST /apis/crd.projectcalico.org/v1/ipamhandles", "PUT /apis/crd.projectcalico.org/v1/ipamhandles/"] {
        assert!(writes.iter().any(|r| r.starts_with(w)), "no {w}: {writes:#?}");
    }
    assert_eq!(server.warnings(), Vec::<String>::new(), "no field the CRDs do not name");
}

/// Calico's IPAM objects of node n2, as libcalico-go writes them through its
/// `crd.projectcalico.org/v1` backend (field names from the shared data's
/// `calico-crds/crd.projectcalico.org-v1/`; the labels from libcalico-go's
/// `EnsureBlockAffinityLabels`): a block with one pod address, its affinity
/// and the pod's handle.
fn calicos_objects() -> [(&'static str, Value); 3] {
    let mut allocations = vec![Value::Null; 64];
    allocations[0] = json!(0);
    [
        (
            "ipamblocks",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                   "metadata": {"name": "10-244-1-0-26"},
                   "spec": {"cidr": "10.244.1.0/26", "affinity": "host:n2",
                            "affinityClaimTime": "2026-12-01T10:00:00Z", "allocations": allocations,
                            "unallocated": (1..64).collect::<Vec<u32>>(),
                            "attributes": [{"handle_id": "k8s-pod-network.0a1b2c",
                                            "secondary": {"namespace": "default", "node": "n2", "pod": "calico-0",
                                                          "timestamp": "2026-12-01 10:00:01 +0000 UTC"}}],
                            "strictAffinity": false, "deleted": false,
                            "sequenceNumber": 1, "sequenceNumberForAllocation": {"0": 0}}}),
        ),
        (
            "blockaffinities",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
                   "metadata": {"name": "n2-10-244-1-0-26",
                                "labels": {"projectcalico.org/hostname-hash": "5c3b0f2e",
                                           "projectcalico.org/affinity-type": "host",
                                           "projectcalico.org/ip-version": "4"}},
                   "spec": {"cidr": "10.244.1.0/26", "node": "n2", "type": "host", "state": "confirmed",
                            "deleted": "false"}}),
        ),
        (
            "ipamhandles",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
                   "metadata": {"name": "k8s-pod-network.0a1b2c"},
                   "spec": {"handleID": "k8s-pod-network.0a1b2c", "block": {"10.244.1.0/26": 1}}}),
        ),
    ]
}

/// Issue 20, Build 3: on a store Calico's IPAM uses, every ADD is refused
/// (code 7, naming Calico's block and the sign), STATUS says not ready with
/// the same reason, DEL and GC still release bgpd-ipam's own addresses, and
/// nothing of Calico's is written, modified or deleted. Before the refusal,
/// the ADD succeeded beside Calico's block.
#[test]
fn a_store_calicos_ipam_uses_is_refused() {
    let Some(c) = cluster("a_store_calicos_ipam_uses_is_refused") else { return };
    let a = c.add("c1", "default", "api-0");
    assert!(in_net(&a, "10.244.0.0/24"), "{a}");
    for (plural, name) in
        [("ipamblocks", "10-244-0-0-28"), ("blockaffinities", "n1-10-244-0-0-28"), ("ipamhandles", "podnet.c1.eth0")]
    {
        let o = c.object(plural, name).unwrap_or_else(|| panic!("{plural}/{name}"));
        assert_eq!(o["metadata"]["labels"]["bgpd.io/ipam-owner"], "bgpd-ipam", "bgpd-ipam marks what it writes: {o}");
    }
    for (plural, o) in calicos_objects() {
        c.server.apply(&format!("{CRD}/{plural}"), o);
    }
    let before: Vec<Value> =
        calicos_objects().iter().map(|(p, o)| c.object(p, o["metadata"]["name"].as_str().unwrap()).unwrap()).collect();
    let requests_before = c.server.requests().len();

    let why = "IPAMBlock 10-244-1-0-26 was written by Calico's IPAM (it has sequenceNumberForAllocation); \
               bgpd-ipam and Calico's IPAM cannot share a store: see docs/ipam.md#one-ipam-per-store";
    for (container, pod) in [("c2", "api-0"), ("c1", "api-0")] {
        let (ok, res) = c.call("ADD", container, "default", pod, &c.conf());
        assert!(!ok, "ADD {container} on a shared store: {res}");
        assert_eq!(res["code"], 7, "{res}");
        assert_eq!(res["msg"], why, "{res}");
    }
    assert!(c.object("ipamhandles", "podnet.c2.eth0").is_none());
    let (ok, res) = c.call("STATUS", "", "default", "", &c.conf());
    assert!(!ok);
    assert_eq!((res["code"].as_u64(), res["msg"].as_str()), (Some(50), Some(why)), "{res}");

    // bgpd-ipam's own addresses are still released: by DEL, and by GC.
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0, "DEL of bgpd-ipam's own attachment");
    assert!(c.object("ipamhandles", "podnet.c1.eth0").is_none());
    let own = c.object("ipamblocks", "10-244-0-0-28").unwrap();
    assert!(own["spec"]["allocations"].as_array().unwrap().iter().all(Value::is_null), "{own}");
    let mut gc: Value = serde_json::from_str(&c.conf()).unwrap();
    gc["cni.dev/valid-attachments"] = json!([]);
    let (ok, res) = c.call("GC", "", "default", "", &gc.to_string());
    assert!(ok, "GC leaves Calico's blocks alone and succeeds: {res}");

    let after: Vec<Value> =
        calicos_objects().iter().map(|(p, o)| c.object(p, o["metadata"]["name"].as_str().unwrap()).unwrap()).collect();
    assert_eq!(after, before, "Calico's objects are untouched");
    let calicos: Vec<String> = c.server.requests()[requests_before..]
        .iter()
        .filter(|r| !r.starts_with('/') && (r.contains("10-244-1-0-26") || r.contains("k8s-pod-network")))
        .cloned()
        .collect();
    assert_eq!(calicos, Vec::<String>::new(), "no write to Calico's objects");
}

/// Issue 20, Build 3: a store bgpd-ipam wrote before it marked its objects
/// is not refused; an object it rewrites gets the mark.
#[test]
fn bgpd_ipams_unmarked_objects_are_its_own() {
    let Some(c) = cluster("bgpd_ipams_unmarked_objects_are_its_own") else { return };
    c.add("c1", "default", "api-0");
    for (plural, name) in
        [("ipamblocks", "10-244-0-0-28"), ("blockaffinities", "n1-10-244-0-0-28"), ("ipamhandles", "podnet.c1.eth0")]
    {
        let mut o = c.object(plural, name).unwrap();
        o["metadata"].as_object_mut().unwrap().remove("labels");
        c.server.apply(&format!("{CRD}/{plural}"), o);
    }
    c.add("c2", "default", "api-0");
    assert!(c.call("STATUS", "", "default", "", &c.conf()).0, "ready");
    let block = c.object("ipamblocks", "10-244-0-0-28").unwrap();
    assert_eq!(block["metadata"]["labels"]["bgpd.io/ipam-owner"], "bgpd-ipam", "marked when rewritten: {block}");
}

/// A request to the API server as RBAC sees it: (verb, API group, resource);
/// `None` for discovery.
fn rbac_of(request: &str) -> Option<(String, String, String)> {
    testgate::rbac::access_of(request).map(|a| (a.verb, a.group, a.resource))
}

/// The (verb, API group, resource) the ClusterRole `role` of a manifest
/// grants; its rules may not name resources (`resourceNames`).
fn granted_by(manifest: &str, role: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let grants = testgate::rbac::grants(manifest, &[("ClusterRole", role)]);
    assert!(grants.iter().all(|g| g.names.is_empty()), "{grants:?}");
    grants.into_iter().map(|g| (g.verb, g.group, g.resource)).collect()
}

/// Issue 20, Done when: `templates/kubernetes/bgpd-ipam.yaml` grants the
/// plugin exactly what it requests. Every command runs against the stand-in
/// (ADD by a Node's labels and by a Namespace's annotation, ADD again, CHECK,
/// DEL, GC, STATUS); every request must be granted by the shipped ClusterRole,
/// and every grant must be used by some request or be listed below with the
/// request that needs it, so the role cannot grow unnoticed.
#[test]
fn the_shipped_role_grants_what_the_plugin_requests() {
    let Some(c) = cluster("the_shipped_role_grants_what_the_plugin_requests") else { return };
    let a = c.add("c1", "default", "api-0");
    c.add("c2", "team", "web-0");
    assert_eq!(c.add("c1", "default", "api-0"), a);
    let mut check: Value = serde_json::from_str(&c.conf()).unwrap();
    check["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": a}]});
    assert!(c.call("CHECK", "c1", "default", "api-0", &check.to_string()).0);
    assert!(c.call("DEL", "c1", "default", "api-0", &c.conf()).0);
    let mut gc: Value = serde_json::from_str(&c.conf()).unwrap();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(c.call("GC", "", "default", "", &gc.to_string()).0);
    assert!(c.call("STATUS", "", "default", "", &c.conf()).0);

    let granted = granted_by(include_str!("../../templates/kubernetes/bgpd-ipam.yaml"), "bgpd-ipam");
    let requests = c.server.requests();
    let used: std::collections::BTreeSet<_> = requests.iter().filter_map(|r| rbac_of(r)).collect();
    for r in &requests {
        if let Some(need) = rbac_of(r) {
            assert!(granted.contains(&need), "{r} needs {need:?}, which the ClusterRole does not grant");
        }
    }
    let t = |v: &str, g: &str, r: &str| (v.to_string(), g.to_string(), r.to_string());
    // Granted, and requested only on paths this cycle does not take.
    let needed_elsewhere = [
        // KubeStore::undo: a claim whose later write failed deletes the
        // block and the affinity it created.
        (t("delete", "crd.projectcalico.org", "ipamblocks"), "undo of a failed claim"),
        (t("delete", "crd.projectcalico.org", "blockaffinities"), "undo of a failed claim"),
        // ADD of a pod with cni.projectcalico.org/floatingIPs lists every
        // handle (the floating IPs others hold) and records its own.
        (t("list", "crd.projectcalico.org", "ipamhandles"), "floating IPs"),
        (
            t("update", "crd.projectcalico.org", "ipamhandles"),
            "floating IPs; a release that keeps an invalid block's count",
        ),
    ];
    for (grant, why) in &needed_elsewhere {
        assert!(granted.contains(grant), "{grant:?} is listed as needed ({why}) but not granted");
        assert!(!used.contains(grant), "{grant:?} is requested by the cycle: take it off the list");
    }
    let unexplained: Vec<_> =
        granted.iter().filter(|g| !used.contains(*g) && !needed_elsewhere.iter().any(|(n, _)| n == *g)).collect();
    assert!(unexplained.is_empty(), "granted but never requested: {unexplained:?}\nrequests: {requests:#?}");
}

/// `templates/kubernetes/bgpd-ipam.yaml` installs what the plugin reads: its
/// CNI configuration parses as the plugin parses it and names the kubeconfig
/// the installer writes (mode 0600, from the ServiceAccount's long-lived
/// token Secret), in the namespace of bgpd.yaml.
#[test]
fn the_shipped_install_writes_what_the_plugin_reads() {
    use serde::Deserialize as _;
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(include_str!("../../templates/kubernetes/bgpd-ipam.yaml"))
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
    let doc = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    for d in &docs {
        if d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding" {
            assert_eq!(d["metadata"]["namespace"], "kube-system", "as in bgpd.yaml: {:?}", d["metadata"]);
        }
    }
    let binding = doc("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "bgpd-ipam");
    assert_eq!(binding["subjects"][0]["name"], doc("ServiceAccount")["metadata"]["name"]);
    let token = doc("Secret");
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
    assert_eq!(token["metadata"]["annotations"]["kubernetes.io/service-account.name"], "bgpd-ipam");

    let conflist: Value = serde_json::from_str(doc("ConfigMap")["data"]["10-bgpd.conflist"].as_str().unwrap())
        .expect("the conflist is JSON");
    let mut plugin = conflist["plugins"][0].clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin["name"] = conflist["name"].clone();
    let conf = ipam::cni::NetConf::parse(plugin).expect("the plugin takes its configuration");
    let kubeconfig = conf.ipam.datastore.strip_prefix("kubernetes:").expect("the kubernetes datastore");
    assert_ne!(conflist["name"], "k8s-pod-network", "Calico's network name: its handles would look like Calico's");

    let ds = doc("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let script = pod["initContainers"][0]["args"][0].as_str().unwrap();
    let host_path = |name: &str| {
        let v = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == name).unwrap();
        v["hostPath"]["path"].as_str().unwrap().to_string()
    };
    let (dir, file) = kubeconfig.rsplit_once('/').unwrap();
    assert_eq!(host_path("cni-net"), dir);
    assert!(script.contains(&format!("/host/etc/cni/net.d/{file}")), "the installer writes {kubeconfig}");
    assert!(script.contains("umask 077") && script.contains(&format!("chmod 0600 /host/etc/cni/net.d/.{file}.new")));
    assert!(script.contains("/host/opt/cni/bin/bgpd-ipam") && host_path("cni-bin") == "/opt/cni/bin");
    let token_volume = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == "token").unwrap();
    assert_eq!(token_volume["secret"]["secretName"], token["metadata"]["name"]);
    assert!(script.contains("$KUBERNETES_SERVICE_HOST") && script.contains("$KUBERNETES_SERVICE_PORT"));
    assert_eq!(pod["automountServiceAccountToken"], false, "the installer talks to no API");
}
