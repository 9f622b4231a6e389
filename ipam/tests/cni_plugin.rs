//! `bgpd-ipam` as a CNI IPAM plugin: driven through the real `ptp` plugin
//! (Debian `containernetworking-plugins`) in network namespaces, as a
//! container runtime calls it; and called directly with bad input.

mod common;

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use ipnet::IpNet;
use testgate::testbed::{Netns, Ns};

const PTP: &str = "/usr/lib/cni/ptp";

/// What `ip route show` prints in a pod's namespace.
fn routes(ns: &Ns) -> String {
    ns.ip(&["route", "show"]).unwrap_or_else(|e| panic!("{e}"))
}

/// What `ip -4 addr show dev eth0` prints in a pod's namespace.
fn addrs(ns: &Ns) -> String {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"]).unwrap_or_else(|e| panic!("{e}"))
}

/// The namespace's path, as `CNI_NETNS` takes it.
fn cni_netns(ns: &Ns) -> String {
    ns.path().display().to_string()
}

/// The plugin directory for CNI_PATH: the built bgpd-ipam, then /usr/lib/cni.
struct Env {
    _bin: tempfile::TempDir,
    cni_path: String,
    ds: tempfile::TempDir,
    /// The host lock's directory (not /var/run: tests stay off the host's).
    lock: tempfile::TempDir,
    /// The namespace that plays the node (the "host" side of ptp): plugins
    /// run in it, so their host veths, routes and ip_forward stay out of the
    /// machine's own namespace.
    node: Option<Ns>,
}

impl Env {
    fn new(yaml: &str) -> Env {
        let bin = tempfile::tempdir().expect("tempdir");
        std::fs::copy(env!("CARGO_BIN_EXE_bgpd-ipam"), bin.path().join("bgpd-ipam")).expect("copy bgpd-ipam");
        let cni_path = format!("{}:/usr/lib/cni", bin.path().display());
        Env { _bin: bin, cni_path, ds: datastore_dir(yaml), lock: tempfile::tempdir().expect("tempdir"), node: None }
    }

    fn conf(&self, extra_ipam: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"ptp","ipam":{{"type":"bgpd-ipam","datastore":"file:{}","nodename":"node-1","lock_dir":"{}"{extra_ipam}}}}}"#,
            self.ds.path().display(),
            self.lock.path().display()
        )
    }

    /// Runs `plugin` with CNI_COMMAND etc.; returns (exit ok, stdout JSON).
    fn call(
        &self,
        plugin: &str,
        command: &str,
        container: &str,
        netns: &str,
        pod: &str,
        stdin: &str,
    ) -> (bool, serde_json::Value) {
        let mut cmd = match &self.node {
            Some(ns) => ns.command(plugin),
            None => Command::new(plugin),
        };
        let mut child = cmd
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start plugin");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write config");
        let out = child.wait_with_output().expect("plugin output");
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("plugin printed non-JSON {text:?}: {e}"))
        };
        (out.status.success(), json)
    }

    fn state_file(&self) -> PathBuf {
        self.ds.path().to_path_buf()
    }
}

fn first_address(result: &serde_json::Value) -> IpNet {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"))
}

fn affine_blocks(ds: &Path, node: &str) -> Vec<IpNet> {
    let store = ipam::store::file::FileStore::open(ds).expect("open store");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(ipam::affine_blocks(&store, node))
        .expect("affine blocks")
}

/// A pool of two /30 blocks (the first address of each is the gateway):
/// six pods fit.
fn small_pool(octet: u8) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: small}}\nspec: {{cidr: 10.251.{octet}.0/29, blockSize: 30}}\n"
    )
}

#[test]
fn ptp_add_check_del_distinct_reuse_and_exhaustion() {
    if !testgate::require_root_and_cmds("ptp_add_check_del_distinct_reuse_and_exhaustion", &[PTP, "ip"]) {
        return;
    }
    let octet = (std::process::id() % 200) as u8 + 20;
    let mut env = Env::new(&small_pool(octet));
    let conf = env.conf("");
    let tag = std::process::id();
    let made = |name: String| Netns::add(name).unwrap_or_else(|e| panic!("{e}"));
    let node = made(format!("bgpdipam-{tag}-node"));
    env.node = Some(node.handle());
    let namespaces: Vec<Netns> = (0..7).map(|i| made(format!("bgpdipam-{tag}-{i}"))).collect();

    // ADD six pods: distinct addresses from the node's blocks, default route.
    let mut results = Vec::new();
    for (i, ns) in namespaces.iter().take(6).enumerate() {
        let (ok, res) = env.call(PTP, "ADD", &format!("c{i}"), &cni_netns(ns), &format!("p{i}"), &conf);
        assert!(ok, "ADD {i} failed: {res}");
        let addr = first_address(&res);
        let blocks = affine_blocks(&env.state_file(), "node-1");
        assert!(
            blocks.iter().any(|b| b.contains(&addr.addr())),
            "{addr} is not in a block affine to node-1 ({blocks:?})"
        );
        assert!(addrs(ns).contains(&addr.addr().to_string()), "eth0 lacks {addr}: {}", addrs(ns));
        let pod_routes = routes(ns);
        assert!(pod_routes.contains("default via"), "no default route in pod {i}: {pod_routes}");
        results.push(res);
    }
    let addrs: std::collections::BTreeSet<IpAddr> = results.iter().map(|r| first_address(r).addr()).collect();
    assert_eq!(addrs.len(), 6, "pods got duplicate addresses: {addrs:?}");

    // CHECK with prevResult passes; with another pod's result it fails.
    let with_prev = |prev: &serde_json::Value| {
        let mut c: serde_json::Value = serde_json::from_str(&conf).expect("conf");
        c["prevResult"] = prev.clone();
        c.to_string()
    };
    let (ok, res) = env.call(PTP, "CHECK", "c0", &cni_netns(&namespaces[0]), "p0", &with_prev(&results[0]));
    assert!(ok, "CHECK failed: {res}");
    let mut wrong = results[0].clone();
    wrong["ips"][0]["address"] = results[1]["ips"][0]["address"].clone();
    let (ok, _) = env.call(PTP, "CHECK", "c0", &cni_netns(&namespaces[0]), "p0", &with_prev(&wrong));
    assert!(!ok, "CHECK passed with another pod's address");

    // The pools are now exhausted: a clear CNI error naming the pool.
    let (ok, res) = env.call(PTP, "ADD", "c6", &cni_netns(&namespaces[6]), "p6", &conf);
    assert!(!ok, "seventh ADD succeeded: {res}");
    let msg = res.to_string();
    assert!(msg.contains("exhausted") && msg.contains("small"), "unclear error: {msg}");

    // DEL releases (twice is fine); the released address is reused.
    let released = first_address(&results[2]).addr();
    for _ in 0..2 {
        let (ok, res) = env.call(PTP, "DEL", "c2", &cni_netns(&namespaces[2]), "p2", &conf);
        assert!(ok, "DEL failed: {res}");
    }
    let (ok, res) = env.call(PTP, "ADD", "c6", &cni_netns(&namespaces[6]), "p6", &conf);
    assert!(ok, "ADD after DEL failed: {res}");
    assert_eq!(first_address(&res).addr(), released, "released address not reused");

    for (i, ns) in namespaces.iter().enumerate() {
        let (ok, res) = env.call(PTP, "DEL", &format!("c{i}"), &cni_netns(ns), &format!("p{i}"), &conf);
        assert!(ok, "final DEL {i}: {res}");
    }
    let (problems, allocated) = inspect(&format!("file:{}", env.ds.path().display()));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(allocated.is_empty(), "addresses left after DEL: {allocated:?}");
}

fn plugin() -> &'static str {
    env!("CARGO_BIN_EXE_bgpd-ipam")
}

/// The files of the datastore directory that hold IPAM state (not the lock
/// file, which checking that the directory can be locked creates).
fn state_files(env: &Env) -> usize {
    let entries = std::fs::read_dir(env.ds.path()).into_iter().flatten().flatten();
    entries.filter(|e| e.file_name() != ipam::store::file::LOCK_FILE).count()
}

/// Calls bgpd-ipam directly; asserts failure; returns the error code and
/// message and checks that no IPAM state was written.
fn expect_error(env: &Env, stdin: &str) -> (u64, String) {
    let before = state_files(env);
    let (ok, res) = env.call(plugin(), "ADD", "cx", "/var/run/netns/none", "px", stdin);
    assert!(!ok, "expected an error, got {res}");
    let after = state_files(env);
    assert_eq!(before, after, "state written on error");
    let code = res["code"].as_u64().unwrap_or_else(|| panic!("no code in {res}"));
    let msg = res["msg"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "no msg in {res}");
    (code, msg)
}

#[test]
fn bad_input_gives_clear_errors_and_no_state_change() {
    let env = Env::new(&small_pool(9));
    // Malformed JSON.
    let (code, _) = expect_error(&env, "{not json");
    assert_eq!(code, 6);
    // Unknown field in the ipam section: unsupported (2), named with its value.
    let (code, msg) = expect_error(&env, &env.conf(r#","subnet":"10.0.0.0/8""#));
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("subnet") && msg.contains("10.0.0.0/8"), "{msg}");
    // Unsupported version.
    let (code, _) = expect_error(&env, &env.conf("").replace("1.0.0", "9.9.9"));
    assert_eq!(code, 1);
    // Unknown pool.
    let (code, msg) = expect_error(&env, &env.conf(r#","ipv4_pools":["nope"]"#));
    assert_eq!(code, 101);
    assert!(msg.contains("nope"), "{msg}");
    // Bad datastore string.
    let (code, _) = expect_error(&env, &env.conf("").replace("\"file:", "\"ftp:"));
    assert_eq!(code, 7);

    for (yaml, what) in [
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.2.0/24}\n",
            "overlaps",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/33}\n",
            "cidr",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16, blockSize: 12}\n",
            "blockSize",
        ),
    ] {
        let bad = Env::new(yaml);
        let (code, msg) = expect_error(&bad, &bad.conf(""));
        assert_eq!(code, 7, "{msg}");
        assert!(msg.contains(what), "{what}: {msg}");
    }
}

#[test]
fn direct_add_is_idempotent_and_version_answers() {
    let env = Env::new(&small_pool(10));
    let conf = env.conf("");
    let (ok, first) = env.call(plugin(), "ADD", "cid", "/var/run/netns/none", "p", &conf);
    assert!(ok, "{first}");
    let (ok, again) = env.call(plugin(), "ADD", "cid", "/var/run/netns/none", "p", &conf);
    assert!(ok, "{again}");
    assert_eq!(first["ips"], again["ips"], "retried ADD must return the same address");
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0");
    // Exhaust, then a clear error with the pool named and nothing changed.
    for i in 0..5 {
        let (ok, r) = env.call(plugin(), "ADD", &format!("x{i}"), "/var/run/netns/none", "p", &conf);
        assert!(ok, "{r}");
    }
    let before = std::fs::read_to_string(env.ds.path().join("ipam-journal.0.log")).expect("journal");
    let (code, msg) = {
        let (ok, res) = env.call(plugin(), "ADD", "x9", "/var/run/netns/none", "p", &conf);
        assert!(!ok);
        (res["code"].as_u64(), res["msg"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(code, Some(100));
    assert!(msg.contains("small"), "{msg}");
    let after = std::fs::read_to_string(env.ds.path().join("ipam-journal.0.log")).expect("journal");
    assert_eq!(before, after, "failed ADD changed the state");
    let (ok, v) = env.call(plugin(), "VERSION", "", "", "", "");
    assert!(ok);
    assert!(v["supportedVersions"].as_array().is_some_and(|a| a.iter().any(|x| x == "1.0.0")));
}
