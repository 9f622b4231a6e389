//! `bgpd-ipam` ADD as a container runtime calls it (the built binary, the
//! network configuration on stdin, the pod in `CNI_ARGS`), over a file
//! datastore: a retry after a crash between the IPv4 and IPv6 commits, the
//! `feature_control` gate on floating IPs, floating IPs that would take another
//! pod's traffic, and a malformed block in the store. No network namespace is
//! needed: IPAM plugins only read and write the datastore.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipam::allocator::{allocated_addresses, floating_ips, AssignRequest};
use ipam::store::file::FileStore;
use ipam::store::{Expect, Key, Object, Store, Versioned, Write};
use ipam::{Allocator, Design};
use ipnet::IpNet;

/// Dual-stack pod pools, a pool of floating IPs pods never get automatically,
/// and the pods with their annotations.
const DESIGN: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v4}
spec: {cidr: 10.253.0.0/24, blockSize: 28}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v6}
spec: {cidr: "fd00:253::/120", blockSize: 124}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: floating}
spec: {cidr: 10.254.0.0/24, blockSize: 28, assignmentMode: Manual}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, annotations: {cni.projectcalico.org/floatingIPs: '["10.254.0.9"]'}}
---
apiVersion: v1
kind: Pod
metadata: {name: copycat, namespace: default, annotations: {cni.projectcalico.org/floatingIPs: '["10.254.0.9"]'}}
"#;

struct Datastore {
    dir: tempfile::TempDir,
}

impl Datastore {
    fn new(yaml: &str) -> Datastore {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("design.yaml"), yaml).expect("write design");
        Datastore { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The network configuration: dual stack; `extra` goes at the top level.
    fn conf(&self, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"ptp",{extra}"ipam":{{"type":"bgpd-ipam","datastore":"file:{}","nodename":"node-1","assign_ipv6":"true"}}}}"#,
            self.path().display()
        )
    }

    /// Runs the plugin; returns (exit ok, stdout as JSON).
    fn call(&self, command: &str, container: &str, pod: &str, stdin: &str) -> (bool, serde_json::Value) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", "/var/run/netns/none")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start bgpd-ipam");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write config");
        let out = child.wait_with_output().expect("bgpd-ipam output");
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bgpd-ipam printed non-JSON {text:?}: {e}"))
        };
        (out.status.success(), json)
    }

    fn add(&self, container: &str, pod: &str, conf: &str) -> serde_json::Value {
        let (ok, res) = self.call("ADD", container, pod, conf);
        assert!(ok, "ADD {container} failed: {res}");
        res
    }

    /// An ADD that must fail: its code and message.
    fn add_err(&self, container: &str, pod: &str, conf: &str) -> (u64, String) {
        let (ok, res) = self.call("ADD", container, pod, conf);
        assert!(!ok, "ADD {container} succeeded: {res}");
        let code = res["code"].as_u64().unwrap_or_else(|| panic!("no code in {res}"));
        (code, res["msg"].as_str().unwrap_or_default().to_string())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
    }

    /// The library's allocator over this datastore, as the plugin opens it.
    fn allocator(&self) -> Allocator<FileStore> {
        Allocator::new(FileStore::open(self.path()).expect("store"), Design::load(self.path()).expect("design"))
    }

    fn allocated(&self) -> Vec<(IpAddr, String)> {
        let a = self.allocator();
        Self::rt().block_on(allocated_addresses(a.store())).expect("allocated")
    }

    fn floating(&self) -> Vec<(IpAddr, IpAddr)> {
        let a = self.allocator();
        Self::rt().block_on(floating_ips(a.store())).expect("floating").into_iter().map(|f| (f.ip, f.target)).collect()
    }
}

fn addresses(result: &serde_json::Value) -> Vec<IpAddr> {
    let ips = result["ips"].as_array().unwrap_or_else(|| panic!("no ips in {result}"));
    ips.iter()
        .map(|i| i["address"].as_str().and_then(|a| a.parse::<IpNet>().ok()).expect("an address").addr())
        .collect()
}

const FLOATING_ON: &str = r#""feature_control":{"floating_ips":true},"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

#[test]
fn add_retried_after_a_crash_between_the_families_completes_them() {
    let ds = Datastore::new(DESIGN);
    let conf = ds.conf(FLOATING_ON);
    // What the first ADD of container c1 (pod web) committed before it died:
    // its IPv4 address. Its IPv6 address and floating IP never were.
    let a = ds.allocator();
    let req = AssignRequest {
        handle: "podnet.c1".into(),
        node: "node-1".into(),
        namespace: Some("default".into()),
        pod: Some("web".into()),
        num_v4: 1,
        skip_first_address: true,
        ..AssignRequest::default()
    };
    let v4 = Datastore::rt().block_on(a.auto_assign(&req)).expect("the first family's commit")[0].ip;
    drop(a);

    let res = ds.add("c1", "web", &conf);
    let ips = addresses(&res);
    assert_eq!(ips.len(), 2, "dual stack must be complete: {res}");
    assert_eq!(ips[0], v4, "the IPv4 address already held is the pod's");
    assert!(ips[1].is_ipv6(), "{res}");
    assert_eq!(ds.floating(), [(ip("10.254.0.9"), v4)], "the floating IP is recorded");

    // Retried again: the same result, and nothing written.
    let journal = std::fs::read(ds.path().join("ipam-journal.0.log")).expect("journal");
    assert_eq!(ds.add("c1", "web", &conf)["ips"], res["ips"]);
    assert_eq!(std::fs::read(ds.path().join("ipam-journal.0.log")).expect("journal"), journal);

    let (ok, res) = ds.call("DEL", "c1", "web", &conf);
    assert!(ok, "{res}");
    assert!(ds.allocated().is_empty() && ds.floating().is_empty());
}

#[test]
fn add_retry_that_cannot_complete_fails_and_releases() {
    // No IPv6 pool: the retry cannot add the IPv6 address the config asks for.
    let ds = Datastore::new(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.252.0.0/24}\n",
    );
    let a = ds.allocator();
    let req =
        AssignRequest { handle: "podnet.c1".into(), node: "node-1".into(), num_v4: 1, ..AssignRequest::default() };
    Datastore::rt().block_on(a.auto_assign(&req)).expect("the first family's commit");
    drop(a);
    let (code, msg) = ds.add_err("c1", "p", &ds.conf(""));
    assert_eq!(code, 100, "{msg}");
    assert!(msg.contains("IPv6"), "{msg}");
    assert!(ds.allocated().is_empty(), "the partial assignment was released: {:?}", ds.allocated());
}

#[test]
fn floating_ips_need_feature_control_as_in_calico() {
    let ds = Datastore::new(DESIGN);
    let (code, msg) = ds.add_err("c1", "web", &ds.conf(""));
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("requested feature is not enabled: floating_ips"), "{msg}");
    assert!(msg.contains("default/web") && msg.contains("feature_control"), "{msg}");
    assert!(!ds.path().join("ipam-journal.0.log").exists(), "refused before anything was written");
    // Explicitly off is off too.
    let (code, _) = ds.add_err("c1", "web", &ds.conf(r#""feature_control":{"floating_ips":false},"#));
    assert_eq!(code, 101);
    // A pod without the annotation needs no feature.
    assert_eq!(addresses(&ds.add("c2", "plain", &ds.conf(""))).len(), 2);
    assert_eq!(addresses(&ds.add("c1", "web", &ds.conf(FLOATING_ON))).len(), 2);
    assert_eq!(ds.floating().len(), 1);
}

#[test]
fn floating_ip_that_would_take_another_pods_traffic_is_refused() {
    let ds = Datastore::new(DESIGN);
    let conf = ds.conf(FLOATING_ON);
    // Pod "thief" asks for pod "victim"'s address as its floating IP.
    let victim = addresses(&ds.add("c0", "victim", &conf))[0];
    let thief = format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: thief, namespace: default, \
         annotations: {{cni.projectcalico.org/floatingIPs: '[\"{victim}\"]'}}}}\n"
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(ds.path().join("design.yaml")).expect("design");
    f.write_all(thief.as_bytes()).expect("add the pod");
    let (code, msg) = ds.add_err("c1", "thief", &conf);
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains(&victim.to_string()) && msg.contains("podnet.c0"), "names the address and its owner: {msg}");
    // web takes 10.254.0.9; copycat may not take it as well.
    ds.add("c2", "web", &conf);
    let (code, msg) = ds.add_err("c3", "copycat", &conf);
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("10.254.0.9") && msg.contains("podnet.c2"), "{msg}");
    // The refused pods hold nothing; the others are untouched.
    let mut handles: Vec<String> = ds.allocated().into_iter().map(|(_, h)| h).collect();
    handles.sort();
    handles.dedup();
    assert_eq!(handles, ["podnet.c0", "podnet.c2"]);
    assert_eq!(ds.floating().len(), 1);
}

#[test]
fn malformed_block_in_the_store_is_named_not_crashed_on() {
    let ds = Datastore::new(DESIGN);
    let conf = ds.conf("");
    let first = addresses(&ds.add("c0", "p0", &conf));
    // Damage node-1's IPv4 block: an out-of-range free ordinal (an index
    // out of range for bgpd-ipam before blocks were validated).
    let block: IpNet = IpNet::new(first[0], 28).expect("block").trunc();
    let a = ds.allocator();
    Datastore::rt().block_on(async {
        let Some(Versioned { value: Object::Block(mut b), revision }) =
            a.store().get(&Key::Block(block)).await.unwrap()
        else {
            panic!("no block {block}")
        };
        b.unallocated.push(4000);
        a.store().commit(vec![Write::put(Expect::Revision(revision), Object::Block(b))]).await.unwrap();
    });
    drop(a);
    // A new pod: served from another block.
    let other = addresses(&ds.add("c1", "p1", &conf));
    assert!(!block.contains(&other[0]), "{other:?} from the invalid block {block}");
    // The damaged pod's CHECK and DEL: an error naming the block and the problem.
    for command in ["DEL", "CHECK"] {
        let mut c: serde_json::Value = serde_json::from_str(&conf).expect("conf");
        c["prevResult"] = serde_json::json!({"ips": [{"address": format!("{}/28", first[0])}]});
        let (ok, res) = ds.call(command, "c0", "p0", &c.to_string());
        assert!(!ok, "{command}: {res}");
        let msg = res["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(&block.to_string()) && msg.contains("4000"), "{command}: {msg}");
    }
    // `bgpd-ipam show` still reports.
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"))
        .args(["show", "--datastore", &format!("file:{}", ds.path().display())])
        .output()
        .expect("run show");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
