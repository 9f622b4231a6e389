//! `bgpd run --datastore etcd:…` against a real etcd (Debian `etcd-server`) on
//! loopback ports with a temporary data directory: objects put into etcd become
//! originations; etcd stopped → bgpd keeps running on its last good model and says
//! the datastore is unreachable (`show config`, `/readyz` 503); etcd started again
//! on the same data → bgpd resyncs, sees an edit it missed, and is ready again.
//! No BGP peer is configured (the node only listens on a free loopback port), and
//! the kernel is not programmed, so no root is needed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PREFIX: &str = "/bgpd-test/";

fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

fn have_program(p: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(p).is_file()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free loopback port")
}

/// A killed-on-drop child process.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd on fixed loopback ports and a data directory that outlives restarts.
struct Etcd {
    dir: PathBuf,
    client: u16,
    peer: u16,
    proc: Option<Proc>,
}

impl Etcd {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn start(&mut self) {
        let url = self.url();
        let peer_url = format!("http://127.0.0.1:{}", self.peer);
        let log =
            std::fs::File::options().create(true).append(true).open(self.dir.join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=bgpd-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bgpd-test={peer_url}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.proc = Some(Proc(child));
        wait_for("etcd to answer", Duration::from_secs(20), || self.get_probe());
    }

    fn stop(&mut self) {
        self.proc = None;
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    fn get_probe(&self) -> bool {
        Self::rt().block_on(async {
            let Ok(mut c) = etcd_client::Client::connect([self.url()], None).await else { return false };
            c.get("probe", None).await.is_ok()
        })
    }

    fn put(&self, key: &str, value: &Value) {
        Self::rt().block_on(async {
            let mut c = etcd_client::Client::connect([self.url()], None).await.expect("connect to etcd");
            c.put(format!("{PREFIX}{key}"), value.to_string(), None).await.expect("etcd put");
        });
    }

    fn delete(&self, key: &str) {
        Self::rt().block_on(async {
            let mut c = etcd_client::Client::connect([self.url()], None).await.expect("connect to etcd");
            c.delete(format!("{PREFIX}{key}"), None).await.expect("etcd delete");
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
    let Some(v) = show(socket, "originations") else { return Vec::new() };
    let mut p: Vec<String> = v["originations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["prefix"].as_str().map(str::to_string))
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

#[test]
fn etcd_datastore_watch_outage_and_resync() {
    if !require(have_program("etcd"), "etcd (Debian package etcd-server) is not installed") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut etcd = Etcd { dir: tmp.path().to_path_buf(), client: free_port(), peer: free_port(), proc: None };
    etcd.start();
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
    etcd.put("ipamblocks/10-244-1-0-26", &block("10.244.1.0/26", "n1"));
    etcd.put("ipamblocks/10-244-9-0-26", &block("10.244.9.0/26", "other-node"));

    let socket = tmp.path().join("bgpd.sock");
    let metrics = free_port();
    let log = std::fs::File::create(tmp.path().join("bgpd.log")).expect("bgpd log");
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
    wait_for("the resync to show the edits", limit, || originations(&socket) == ["10.244.2.0/26", "10.244.3.0/26"]);
    wait_for("readiness again", limit, || http_get(metrics, "/readyz").is_some_and(|r| r.0 == 200));
    let config = show(&socket, "config").expect("show config");
    assert_eq!(config["datastore_ok"], true, "{config}");
    assert!(config["unreachable_since"].is_null(), "{config}");
    drop(bgpd);
}
