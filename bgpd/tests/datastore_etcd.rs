//! `bgpd run --datastore etcd:…` against a real etcd (Debian `etcd-server`) on
//! loopback ports with a temporary data directory: objects put into etcd become
//! originations; etcd stopped → bgpd keeps running on its last good model and says
//! the datastore is unreachable (`show config`, `/readyz` 503); etcd started again
//! on the same data → bgpd resyncs, sees an edit it missed, and is ready again.
//! And the IPAM state that `bgpd-ipam` keeps in etcd (the `ipam` crate's allocator
//! over its `EtcdStore`, Calico's `/calico/ipam/v2/` layout): the node's affine
//! blocks, its pods' borrowed addresses and the floating IPs mapped to its pods are
//! originated as they are allocated, and withdrawn as they are released.
//! No BGP peer is configured (the node only listens on a free loopback port), and
//! the kernel is not programmed, so no root is needed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Proc};
use serde_json::{json, Value};

const PREFIX: &str = "/bgpd-test/";

/// etcd from the test bed (`testgate::testbed::Etcd`): loopback ports and a data
/// directory that stay over a stop and a start.
struct Etcd {
    etcd: testgate::testbed::Etcd,
}

impl Etcd {
    fn url(&self) -> String {
        self.etcd.url().to_string()
    }

    /// Starts it again on the same data and ports, and waits until it is ready.
    fn start(&mut self) {
        self.etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills it (SIGKILL), keeping its data.
    fn stop(&mut self) {
        self.etcd.kill();
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    /// A client of the etcd at `url`.
    async fn client(url: String) -> Result<bgpd_etcd::Client, bgpd_etcd::Error> {
        bgpd_etcd::Client::connect(&[url], bgpd_etcd::ConnectOptions::default()).await
    }

    fn put(&self, key: &str, value: &Value) {
        Self::rt().block_on(async {
            let c = Self::client(self.url()).await.expect("connect to etcd");
            c.put(format!("{PREFIX}{key}"), value.to_string()).await.expect("etcd put");
        });
    }

    /// Puts `value` at `key` (a whole key, outside [`PREFIX`]).
    fn put_key(&self, key: &str, value: &str) {
        Self::rt().block_on(async {
            let c = Self::client(self.url()).await.expect("connect to etcd");
            c.put(key, value).await.expect("etcd put");
        });
    }

    fn delete(&self, key: &str) {
        Self::rt().block_on(async {
            let c = Self::client(self.url()).await.expect("connect to etcd");
            c.delete(format!("{PREFIX}{key}")).await.expect("etcd delete");
        });
    }
}

/// Polls `f` every 100 ms until it holds; fails after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn show(socket: &Path, what: &str) -> Option<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd"))
        .args(["show", what, "--json", "--control-socket"])
        .arg(socket)
        .output()
        .ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn originations(socket: &Path) -> Vec<String> {
    originations_with_causes(socket).into_iter().map(|(p, _)| p).collect()
}

/// (prefix, cause) of each origination, in prefix text order.
fn originations_with_causes(socket: &Path) -> Vec<(String, String)> {
    let Some(v) = show(socket, "originations") else { return Vec::new() };
    let mut p: Vec<(String, String)> = v["originations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["prefix"].as_str()?.to_string(), o["cause"].as_str().unwrap_or("").to_string())))
        .collect();
    p.sort();
    p
}

/// `GET path` on the metrics address: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

fn block(cidr: &str, node: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": {"name": cidr.replace(['.', '/'], "-")},
        "spec": {"cidr": cidr, "affinity": format!("host:{node}"), "deleted": false}
    })
}

/// A started etcd holding Node n1 and a BGPConfiguration under [`PREFIX`].
fn etcd_with_node() -> Etcd {
    let config = testgate::testbed::EtcdConfig::loopback("bgpd-test").expect("free loopback ports");
    let etcd = Etcd { etcd: testgate::testbed::Etcd::start(config).unwrap_or_else(|e| panic!("{e}")) };
    let bgp_port = free_port();
    etcd.put(
        "nodes/n1",
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n1"},
                "spec": {"bgp": {"ipv4Address": "127.0.0.1/8"}}}),
    );
    etcd.put(
        "bgpconfigurations/default",
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
                "spec": {"nodeToNodeMeshEnabled": false, "listenPort": bgp_port, "bindMode": "NodeIP", "asNumber": 64512}}),
    );
    etcd
}

/// `bgpd run --node n1 --no-kernel` on `etcd`, with its control socket and metrics
/// port.
fn start_bgpd(tmp: &Path, etcd: &Etcd) -> (Proc, PathBuf, u16) {
    let socket = tmp.join("bgpd.sock");
    let metrics = free_port();
    let log = std::fs::File::create(tmp.join("bgpd.log")).expect("bgpd log");
    let bgpd = Proc(
        Command::new(env!("CARGO_BIN_EXE_bgpd"))
            .args(["run", "--node", "n1", "--no-kernel", "--datastore"])
            .arg(format!("etcd:{}?prefix={PREFIX}", etcd.url()))
            .arg("--control-socket")
            .arg(&socket)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bgpd"),
    );
    (bgpd, socket, metrics)
}

#[test]
fn etcd_datastore_watch_outage_and_resync() {
    if !testgate::require_cmd("etcd_datastore_watch_outage_and_resync", "etcd") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut etcd = etcd_with_node();
    etcd.put("ipamblocks/10-244-1-0-26", &block("10.244.1.0/26", "n1"));
    etcd.put("ipamblocks/10-244-9-0-26", &block("10.244.9.0/26", "other-node"));
    let (bgpd, socket, metrics) = start_bgpd(tmp.path(), &etcd);
    let limit = Duration::from_secs(30);
    wait_for("the first block to be originated", limit, || originations(&socket) == ["10.244.1.0/26"]);
    assert_eq!(http_get(metrics, "/readyz").map(|r| r.0), Some(200));

    // A watched change.
    etcd.put("ipamblocks/10-244-2-0-26", &block("10.244.2.0/26", "n1"));
    wait_for("the second block", limit, || originations(&socket) == ["10.244.1.0/26", "10.244.2.0/26"]);

    // etcd down: bgpd runs on, on the last good model, and says so.
    etcd.stop();
    wait_for("show config to report the datastore unreachable", limit, || {
        show(&socket, "config").is_some_and(|c| c["datastore_ok"] == false && c["unreachable_since"].is_u64())
    });
    let config = show(&socket, "config").expect("show config");
    assert!(config["unreachable_reason"].as_str().is_some_and(|r| !r.is_empty()), "{config}");
    assert_eq!(originations(&socket), ["10.244.1.0/26", "10.244.2.0/26"], "the last good model is kept");
    let (code, body) = http_get(metrics, "/readyz").expect("readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("datastore unreachable"), "{body}");
    let (_, text) = http_get(metrics, "/metrics").expect("metrics answer");
    assert!(text.contains("bgpd_datastore_ok 0"), "{text}");

    // etcd back on the same data, with edits bgpd's watch did not see.
    etcd.start();
    etcd.delete("ipamblocks/10-244-1-0-26");
    etcd.put("ipamblocks/10-244-3-0-26", &block("10.244.3.0/26", "n1"));
    // … and in the IPAM keys (Calico's layout, as `bgpd-ipam` writes them).
    let ipam_block = ipam::block::AllocationBlock::new("10.244.4.0/26".parse().expect("a CIDR"), Some("n1"), false);
    let value = serde_json::to_string(&ipam_block).expect("a block as JSON");
    etcd.put_key("/calico/ipam/v2/assignment/ipv4/block/10.244.4.0-26", &value);
    wait_for("the resync to show the edits", limit, || {
        originations(&socket) == ["10.244.2.0/26", "10.244.3.0/26", "10.244.4.0/26"]
    });
    wait_for("readiness again", limit, || http_get(metrics, "/readyz").is_some_and(|r| r.0 == 200));
    let config = show(&socket, "config").expect("show config");
    assert_eq!(config["datastore_ok"], true, "{config}");
    assert!(config["unreachable_since"].is_null(), "{config}");
    drop(bgpd);
}

fn request(node: &str, handle: &str) -> ipam::AssignRequest {
    ipam::AssignRequest { node: node.into(), handle: handle.into(), num_v4: 1, ..ipam::AssignRequest::default() }
}

#[test]
fn etcd_datastore_advertises_what_bgpd_ipam_allocates_in_etcd() {
    if !testgate::require_cmd("etcd_datastore_advertises_what_bgpd_ipam_allocates_in_etcd", "etcd") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = etcd_with_node();
    // Two /26 blocks; bgpd reads the pool from its prefix, the allocator from its design.
    let pool = json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "pods"},
                      "spec": {"cidr": "10.244.0.0/25", "blockSize": 26}});
    etcd.put("ippools/pods", &pool);
    // Floating IPs come from a pool of their own (bgpd advertises none outside a pool).
    etcd.put(
        "ippools/floating",
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "floating"},
                "spec": {"cidr": "10.250.0.0/24"}}),
    );
    let design = ipam::Design::parse(&[(Path::new("pools.json"), &pool.to_string())]).expect("design");
    let rt = Etcd::rt();
    let store = rt.block_on(ipam::store::etcd::EtcdStore::connect(&etcd.url())).expect("connect the IPAM store");
    let alloc = ipam::Allocator::new(store, design);

    // A block allocated before bgpd starts: read by the first get.
    let a = rt.block_on(alloc.auto_assign(&request("n1", "pod-a"))).expect("assign pod-a");
    let block_a = a[0].block.to_string();
    let (bgpd, socket, _) = start_bgpd(tmp.path(), &etcd);
    let limit = Duration::from_secs(30);
    wait_for("n1's block from etcd's IPAM keys", limit, || originations(&socket) == [block_a.clone()]);

    // Another node's block is not n1's; an address n1's pod borrows from it is.
    let b = rt.block_on(alloc.auto_assign(&request("n2", "pod-b"))).expect("assign pod-b");
    let block_b = b[0].block;
    assert_ne!(block_b.to_string(), block_a);
    let wanted = block_b.hosts().nth(10).expect("an address of n2's block");
    let c = rt.block_on(alloc.assign_ip(wanted, &request("n1", "pod-c"))).expect("assign pod-c");
    assert!(c.borrowed, "{c:?}");
    let borrowed = format!("{wanted}/32");
    wait_for("the borrowed /32 (watched)", limit, || {
        let mut want = vec![block_a.clone(), borrowed.clone()];
        want.sort();
        originations(&socket) == want
    });
    let o = originations_with_causes(&socket);
    let cause = &o.iter().find(|(p, _)| *p == borrowed).expect("the borrowed /32").1;
    assert!(cause.contains("borrowed from IPAMBlock") && cause.contains("handle pod-c"), "{cause}");

    // A floating IP mapped to pod-a (as `bgpd-ipam` records the pod's
    // cni.projectcalico.org/floatingIPs on its handle): originated by n1.
    let floating: std::net::IpAddr = "10.250.0.7".parse().expect("an address");
    rt.block_on(alloc.record_floating_ips("pod-a", "n1", &[floating], &[a[0].ip])).expect("record the floating IP");
    wait_for("the floating IP's /32", limit, || originations(&socket).contains(&"10.250.0.7/32".to_string()));
    let o = originations_with_causes(&socket);
    let cause = &o.iter().find(|(p, _)| p == "10.250.0.7/32").expect("the floating /32").1;
    assert_eq!(
        cause,
        &format!("floating IP of handle pod-a \u{2192} pod address {} (IPPool floating) on this node", a[0].ip)
    );

    // pod-c gone: its /32 is withdrawn. pod-a gone and its empty block released
    // (affinity pendingDeletion, then block deleted in etcd): the block is withdrawn.
    rt.block_on(alloc.release_handle("pod-c")).expect("release pod-c");
    wait_for("the borrowed /32 to be withdrawn", limit, || {
        originations(&socket) == [block_a.clone(), "10.250.0.7/32".to_string()]
    });
    rt.block_on(alloc.release_handle("pod-a")).expect("release pod-a");
    wait_for("the floating IP to go with pod-a's handle", limit, || originations(&socket) == [block_a.clone()]);
    let released = rt.block_on(alloc.release_empty_blocks(Some("n1"))).expect("release n1's empty blocks");
    assert_eq!(released, [a[0].block]);
    wait_for("the released block to be withdrawn", limit, || originations(&socket).is_empty());
    let config = show(&socket, "config").expect("show config");
    assert_eq!(config["datastore_ok"], true, "{config}");
    drop(bgpd);
}

/// A BFDConfiguration in etcd selects the node's interface towards a peer:
/// the BFD session appears, follows an edit of its timers, and goes when
/// the configuration is deleted. (The peer is 127.0.0.2 on loopback: bgpd's
/// BFD packets go there and nobody answers, so the session stays Down.)
#[test]
fn etcd_datastore_bfd_configuration_follows_edits() {
    if !testgate::require_cmd("etcd_datastore_bfd_configuration_follows_edits", "etcd") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = etcd_with_node();
    etcd.put(
        "bgppeers/p",
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "p"},
                "spec": {"node": "n1", "peerIP": "127.0.0.2", "asNumber": 65000}}),
    );
    let bfd = |mult: u32| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "BFDConfiguration", "metadata": {"name": "default"},
               "spec": {"interfaces": [{"matchPattern": "lo", "minimumRecvInterval": "300ms",
                                        "minimumSendInterval": "300ms", "idleSendInterval": "1s", "multiplier": mult}]}})
    };
    etcd.put("bfdconfigurations/default", &bfd(3));
    let (bgpd, socket, _) = start_bgpd(tmp.path(), &etcd);
    let limit = Duration::from_secs(30);
    let session = |socket: &Path| show(socket, "bfd").map(|v| v["bfd"]["sessions"]["p"].clone()).unwrap_or_default();
    wait_for("the BFD session with p", limit, || session(&socket)["kind"] == "single-hop");
    let s = session(&socket);
    assert_eq!((s["interface"].as_str(), s["multiplier"].as_u64()), (Some("lo"), Some(3)), "{s}");
    assert!(s["local_discr"].as_u64().is_some_and(|d| d != 0), "{s}");

    etcd.put("bfdconfigurations/default", &bfd(7));
    wait_for("the new multiplier", limit, || session(&socket)["multiplier"] == 7);
    assert_eq!(session(&socket)["local_discr"], s["local_discr"], "the same session, new timers");

    etcd.delete("bfdconfigurations/default");
    wait_for("the session to go", limit, || {
        show(&socket, "bfd").is_some_and(|v| v["bfd"]["sessions"].as_object().is_some_and(|m| m.is_empty()))
    });
    drop(bgpd);
}
