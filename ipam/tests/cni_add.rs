//! `bgpd-ipam` as a container runtime calls it (the built binary, the
//! network configuration on stdin, the pod in `CNI_ARGS`), over a file
//! datastore. ADD: a retry after a crash between the IPv4 and IPv6 commits,
//! the `feature_control` gate on floating IPs, floating IPs that would take
//! another pod's traffic, a malformed block in the store. CNI 1.1: version
//! 1.1.0, STATUS, GC, one allocation per (container, interface), DEL with a
//! broken design, the spec's error codes, the host lock and the deadline, the
//! node name as Calico finds it. No network namespace is needed: IPAM plugins
//! only read and write the datastore.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipam::allocator::{allocated_addresses, floating_ips, AssignRequest, Attachment};
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
    /// The host lock's directory (not /var/run: tests stay off the host's).
    lock: tempfile::TempDir,
}

impl Datastore {
    fn new(yaml: &str) -> Datastore {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("design.yaml"), yaml).expect("write design");
        Datastore { dir, lock: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The network configuration: dual stack; `extra` goes at the top level.
    fn conf(&self, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"ptp",{extra}"ipam":{{"type":"bgpd-ipam","datastore":"file:{}","nodename":"node-1","assign_ipv6":"true","lock_dir":"{}"}}}}"#,
            self.path().display(),
            self.lock.path().display()
        )
    }

    /// Runs the plugin; returns (exit ok, stdout as JSON).
    fn call(&self, command: &str, container: &str, pod: &str, stdin: &str) -> (bool, serde_json::Value) {
        self.call_with(command, &[("CNI_CONTAINERID", container), ("K8S_POD_NAME", pod)], stdin)
    }

    /// Runs the plugin with `CNI_COMMAND` and the variables in `vars`
    /// (`CNI_CONTAINERID`, `CNI_IFNAME` (default `eth0`), `K8S_POD_NAME` (put
    /// in `CNI_ARGS`); a variable given as `""` is left unset); returns (exit
    /// ok, stdout as JSON).
    fn call_with(&self, command: &str, vars: &[(&str, &str)], stdin: &str) -> (bool, serde_json::Value) {
        let var = |name: &str, default: &str| {
            vars.iter().find(|(n, _)| *n == name).map_or(default.to_string(), |(_, v)| v.to_string())
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"));
        cmd.env_clear().env("CNI_COMMAND", command).env("CNI_NETNS", "/var/run/netns/none");
        cmd.env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}", var("K8S_POD_NAME", "p")),
        );
        cmd.env("CNI_PATH", "/nonexistent");
        for (name, default) in [("CNI_CONTAINERID", ""), ("CNI_IFNAME", "eth0")] {
            let v = var(name, default);
            if !v.is_empty() {
                cmd.env(name, v);
            }
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start bgpd-ipam");
        // A plugin that rejects its environment may exit before it reads
        // the configuration: the write then finds the pipe closed.
        if let Err(e) = child.stdin.take().expect("stdin").write_all(stdin.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write config: {e}");
        }
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

    /// Runs ADD for `container` (pod `p`); returns (exit ok, stdout as JSON).
    fn add_or_not(&self, container: &str, conf: &str) -> (bool, serde_json::Value) {
        self.call("ADD", container, "p", conf)
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

    /// Every allocated address with its handle (read from the store alone:
    /// the design may be broken on purpose).
    fn allocated(&self) -> Vec<(IpAddr, String)> {
        let store = FileStore::open(self.path()).expect("store");
        Self::rt().block_on(allocated_addresses(&store)).expect("allocated")
    }

    /// The handles holding addresses, sorted, once each.
    fn handles(&self) -> Vec<String> {
        let mut handles: Vec<String> = self.allocated().into_iter().map(|(_, h)| h).collect();
        handles.sort();
        handles.dedup();
        handles
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

/// Attachment `(c, ifname)` of network `podnet`.
fn attachment(container: &str, ifname: &str) -> Attachment {
    Attachment { network: "podnet".into(), container_id: container.into(), ifname: ifname.into() }
}

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
        handle: "podnet.c1.eth0".into(),
        node: "node-1".into(),
        namespace: Some("default".into()),
        pod: Some("web".into()),
        num_v4: 1,
        skip_first_address: true,
        attachment: Some(attachment("c1", "eth0")),
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
    let req = AssignRequest {
        handle: "podnet.c1.eth0".into(),
        node: "node-1".into(),
        num_v4: 1,
        attachment: Some(attachment("c1", "eth0")),
        ..AssignRequest::default()
    };
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
    assert!(
        msg.contains(&victim.to_string()) && msg.contains("podnet.c0.eth0"),
        "names the address and its owner: {msg}"
    );
    // web takes 10.254.0.9; copycat may not take it as well.
    ds.add("c2", "web", &conf);
    let (code, msg) = ds.add_err("c3", "copycat", &conf);
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("10.254.0.9") && msg.contains("podnet.c2.eth0"), "{msg}");
    // The refused pods hold nothing; the others are untouched.
    assert_eq!(ds.handles(), ["podnet.c0.eth0", "podnet.c2.eth0"]);
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

/// `conf` with `cniVersion` set to `v`.
fn at_version(conf: &str, v: &str) -> String {
    conf.replace(r#""cniVersion":"1.0.0""#, &format!(r#""cniVersion":"{v}""#))
}

/// A pod pool of two /30 blocks: six IPv4 pods fit (each block's first
/// address is the gateway).
const SMALL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: small}\n\
                     spec: {cidr: 10.250.0.0/29, blockSize: 30}\n";

/// `ds.conf("")` for IPv4 only, at CNI 1.1.0.
fn v4_conf(ds: &Datastore) -> String {
    at_version(&ds.conf(""), "1.1.0").replace(r#""assign_ipv6":"true""#, r#""assign_ipv6":"false""#)
}

/// An error's code and message.
fn code_msg(res: &serde_json::Value) -> (u64, String) {
    let code = res["code"].as_u64().unwrap_or_else(|| panic!("no code in {res}"));
    (code, res["msg"].as_str().unwrap_or_default().to_string())
}

#[test]
fn cni_1_1_0_add_succeeds_and_version_lists_every_version() {
    let ds = Datastore::new(DESIGN);
    let res = ds.add("c1", "plain", &at_version(&ds.conf(""), "1.1.0"));
    assert_eq!(res["cniVersion"], "1.1.0");
    assert_eq!(addresses(&res).len(), 2, "{res}");
    // Results of 1.0.0 and later carry no ips[].version; 0.4.0's do.
    assert!(res["ips"].as_array().unwrap().iter().all(|i| i.get("version").is_none()), "{res}");
    let old = ds.add("c2", "plain", &at_version(&ds.conf(""), "0.4.0"));
    assert_eq!(old["ips"][0]["version"], "4", "{old}");
    let (ok, v) = ds.call("VERSION", "", "", "");
    assert!(ok);
    assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn status_ready_while_a_pool_has_room_and_the_datastore_answers() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    let (ok, res) = ds.call("STATUS", "", "", &conf);
    assert!(ok && res.is_null(), "ready on an empty store, printing nothing: {res}");
    for i in 0..6 {
        ds.add(&format!("c{i}"), "p", &conf);
    }
    let (ok, res) = ds.call("STATUS", "", "", &conf);
    assert!(!ok);
    let (code, msg) = code_msg(&res);
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("no room") && msg.contains("small") && msg.contains("node-1"), "{msg}");
    let (ok, res) = ds.call("DEL", "c3", "p", &conf);
    assert!(ok, "{res}");
    assert!(ds.call("STATUS", "", "", &conf).0, "room again after a DEL");
    // STATUS exists from CNI 1.1.0 on.
    let (ok, res) = ds.call("STATUS", "", "", &at_version(&conf, "1.0.0").replace("1.1.0", "1.0.0"));
    assert!(!ok);
    assert_eq!(code_msg(&res).0, 1, "{res}");
    // A design that does not load: the plugin cannot serve ADD.
    std::fs::write(ds.path().join("design.yaml"), SMALL.replace("/29", "/33")).expect("break the design");
    let (ok, res) = ds.call("STATUS", "", "", &conf);
    assert!(!ok);
    let (code, msg) = code_msg(&res);
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("datastore"), "{msg}");
}

#[test]
fn two_attachments_of_one_network_get_an_address_each() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    let add = |ifname: &str| {
        let (ok, res) = ds.call_with("ADD", &[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", ifname)], &conf);
        assert!(ok, "ADD {ifname}: {res}");
        res
    };
    let eth0 = add("eth0");
    let net1 = add("net1");
    assert_ne!(addresses(&eth0), addresses(&net1), "a second attachment (as Multus makes) shares no address");
    assert_eq!(ds.handles(), ["podnet.c1.eth0", "podnet.c1.net1"]);
    // DEL of one attachment leaves the other's address.
    let (ok, res) = ds.call_with("DEL", &[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "net1")], &conf);
    assert!(ok, "{res}");
    assert_eq!(ds.handles(), ["podnet.c1.eth0"]);
    let mut check: serde_json::Value = serde_json::from_str(&conf).expect("conf");
    check["prevResult"] = eth0.clone();
    let (ok, res) = ds.call_with("CHECK", &[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")], &check.to_string());
    assert!(ok, "{res}");
}

/// Assigns an IPv4 address as a bgpd-ipam older than attachment handles did:
/// handle `NETWORK.CONTAINERID`, no attachment attributes.
fn legacy_assign(ds: &Datastore, handle: &str, node: &str) -> IpAddr {
    let a = ds.allocator();
    let req = AssignRequest {
        handle: handle.into(),
        node: node.into(),
        num_v4: 1,
        skip_first_address: true,
        ..AssignRequest::default()
    };
    Datastore::rt().block_on(a.auto_assign(&req)).expect("legacy assignment")[0].ip
}

#[test]
fn pods_from_before_the_upgrade_are_checked_and_released_by_their_old_handle() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    let old = legacy_assign(&ds, "podnet.c9", "node-1");
    let mut check: serde_json::Value = serde_json::from_str(&conf).expect("conf");
    check["prevResult"] = serde_json::json!({"ips": [{"address": format!("{old}/30")}]});
    let (ok, res) = ds.call("CHECK", "c9", "p", &check.to_string());
    assert!(ok, "{res}");
    let (ok, res) = ds.call("DEL", "c9", "p", &conf);
    assert!(ok, "{res}");
    assert!(ds.allocated().is_empty(), "{:?}", ds.allocated());
}

#[test]
fn del_completes_with_a_broken_design_and_when_nothing_is_held() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    ds.add("c1", "p", &conf);
    // A typo elsewhere: an invalid pool in the design, an unknown ipam field.
    std::fs::write(ds.path().join("design.yaml"), SMALL.replace("blockSize: 30", "blockSize: 12"))
        .expect("break the design");
    let typo = conf.replace(r#""lock_dir""#, r#""subnet":"10.0.0.0/8","lock_dir""#);
    let (ok, res) = ds.add_or_not("c1", &typo);
    assert!(!ok, "ADD refuses the broken configuration: {res}");
    let (ok, res) = ds.call("DEL", "c1", "p", &typo);
    assert!(ok, "DEL must complete: {res}");
    assert!(ds.allocated().is_empty(), "{:?}", ds.allocated());
    // Nothing held: DEL again, a container never added, no datastore at all.
    for c in ["c1", "never"] {
        let (ok, res) = ds.call("DEL", c, "p", &typo);
        assert!(ok, "DEL {c}: {res}");
    }
    let gone = typo.replace(&ds.path().display().to_string(), "/nonexistent/bgpd-ipam-datastore");
    let (ok, res) = ds.call("DEL", "c1", "p", &gone);
    assert!(ok, "DEL with no datastore: {res}");
}

#[test]
fn gc_releases_every_attachment_of_this_network_and_node_not_listed() {
    let ds = Datastore::new(DESIGN);
    let conf = at_version(&ds.conf(""), "1.1.0");
    let add = |conf: &str, container: &str, ifname: &str| {
        let (ok, res) = ds.call_with("ADD", &[("CNI_CONTAINERID", container), ("CNI_IFNAME", ifname)], conf);
        assert!(ok, "ADD {container}/{ifname}: {res}");
    };
    add(&conf, "c1", "eth0");
    add(&conf, "c1", "net1");
    add(&conf, "c2", "eth0");
    add(&conf.replace(r#""nodename":"node-1""#, r#""nodename":"node-2""#), "c3", "eth0");
    add(&conf.replace(r#""name":"podnet""#, r#""name":"podnet.x""#), "c4", "eth0");
    legacy_assign(&ds, "podnet.c5", "node-1");
    legacy_assign(&ds, "podnet.c6", "node-1");
    let mut gc: serde_json::Value = serde_json::from_str(&conf).expect("conf");
    gc["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c5", "ifname": "eth0"}]);
    for _ in 0..2 {
        let (ok, res) = ds.call_with("GC", &[("CNI_IFNAME", "")], &gc.to_string());
        assert!(ok && res.is_null(), "{res}");
        assert_eq!(
            ds.handles(),
            ["podnet.c1.eth0", "podnet.c3.eth0", "podnet.c5", "podnet.x.c4.eth0"],
            "this network's and this node's stale attachments are released; others are not"
        );
    }
    // GC exists from CNI 1.1.0 on.
    let (ok, res) = ds.call_with("GC", &[], &at_version(&gc.to_string(), "1.0.0").replace("1.1.0", "1.0.0"));
    assert!(!ok);
    assert_eq!(code_msg(&res).0, 1, "{res}");
}

#[test]
fn errors_carry_the_codes_the_cni_spec_defines() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    let fails = |vars: &[(&str, &str)], command: &str, stdin: &str| {
        let (ok, res) = ds.call_with(command, vars, stdin);
        assert!(!ok, "{command} {vars:?} succeeded: {res}");
        code_msg(&res)
    };
    let c1 = ("CNI_CONTAINERID", "c1");
    // 2: an unsupported field, named with its value.
    let (code, msg) = fails(&[c1], "ADD", &conf.replace(r#""lock_dir""#, r#""subnet":"10.9.0.0/16","lock_dir""#));
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("subnet") && msg.contains("10.9.0.0/16"), "{msg}");
    // 4: invalid environment variables, named.
    for (vars, name) in [
        (vec![c1, ("CNI_IFNAME", "a/b")], "CNI_IFNAME"),
        (vec![c1, ("CNI_IFNAME", "")], "CNI_IFNAME"),
        (vec![("CNI_CONTAINERID", "")], "CNI_CONTAINERID"),
        (vec![("CNI_CONTAINERID", "-bad")], "CNI_CONTAINERID"),
    ] {
        let (code, msg) = fails(&vars, "ADD", &conf);
        assert_eq!(code, 4, "{vars:?}: {msg}");
        assert!(msg.contains(name), "{msg}");
    }
    let (code, msg) = fails(&[c1], "FROB", &conf);
    assert_eq!(code, 4, "{msg}");
    assert!(msg.contains("CNI_COMMAND"), "{msg}");
    // 6: not JSON; 7: JSON that is no valid configuration.
    assert_eq!(fails(&[c1], "ADD", "{").0, 6);
    let (code, msg) = fails(&[c1], "ADD", &conf.replace(r#""datastore""#, r#""datastorE""#));
    assert_eq!(code, 7, "a required field missing: {msg}");
    assert!(msg.contains("datastore"), "{msg}");
    assert_eq!(fails(&[c1], "DEL", r#"{"cniVersion":"1.1.0","name":"podnet","ipam":{}}"#).0, 7);
    assert!(ds.allocated().is_empty(), "no error assigned anything");
}

#[test]
fn a_held_host_lock_makes_writers_try_again_later() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds).replace(r#""lock_dir""#, r#""timeout_seconds":1,"lock_dir""#);
    let lock = std::fs::File::create(ds.lock.path().join("ipam.lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("hold the host lock");
    let (ok, res) = ds.call("ADD", "c1", "p", &conf);
    assert!(!ok, "{res}");
    let (code, msg) = code_msg(&res);
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("host lock") && msg.contains("timed out"), "{msg}");
    assert!(ds.allocated().is_empty());
    // Readers take no host lock.
    assert!(ds.call("STATUS", "", "", &conf).0);
    drop(lock);
    ds.add("c1", "p", &conf);
}

#[test]
fn node_name_from_the_nodename_file_when_the_configuration_has_none() {
    let ds = Datastore::new(SMALL);
    let file = ds.lock.path().join("nodename");
    std::fs::write(&file, "Calico-Node-7\n").expect("nodename file");
    let conf = v4_conf(&ds).replace(r#""nodename":"node-1""#, &format!(r#""nodename_file":"{}""#, file.display()));
    ds.add("c1", "p", &conf);
    let store = FileStore::open(ds.path()).expect("store");
    let blocks = Datastore::rt().block_on(ipam::affine_blocks(&store, "Calico-Node-7")).expect("blocks");
    assert_eq!(blocks.len(), 1, "the file's name, as written (Calico does not lowercase it)");
}

#[test]
fn node_name_falls_back_to_the_lowercased_host_name() {
    if !testgate::require_root_and_cmds("node_name_falls_back_to_the_lowercased_host_name", &["unshare", "hostname"]) {
        return;
    }
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds).replace(r#""nodename":"node-1""#, r#""nodename_file":"/nonexistent/nodename""#);
    // A UTS namespace of its own, so the host's name is left alone.
    let script = format!("hostname Mixed-Case-Node && exec {}", env!("CARGO_BIN_EXE_bgpd-ipam"));
    let mut child = Command::new("unshare")
        .args(["--uts", "sh", "-c", &script])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare");
    child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("config");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let store = FileStore::open(ds.path()).expect("store");
    let blocks = Datastore::rt().block_on(ipam::affine_blocks(&store, "mixed-case-node")).expect("blocks");
    assert_eq!(blocks.len(), 1, "the host name, lowercased as the kubelet names the node");
}

#[test]
fn a_datastore_directory_that_cannot_be_locked_is_refused() {
    let ds = Datastore::new(SMALL);
    let conf = v4_conf(&ds);
    std::fs::create_dir(ds.path().join("ipam-state.lock")).expect("a lock file that cannot be opened");
    let (ok, res) = ds.call("ADD", "c1", "p", &conf);
    assert!(!ok);
    let (code, msg) = code_msg(&res);
    assert_eq!(code, 5, "{msg}");
    assert!(msg.contains("ipam-state.lock"), "{msg}");
    assert!(!ds.path().join("ipam-journal.0.log").exists(), "nothing written");
    let (ok, res) = ds.call("STATUS", "", "", &conf);
    assert!(!ok);
    assert_eq!(code_msg(&res).0, 50, "{res}");
}
