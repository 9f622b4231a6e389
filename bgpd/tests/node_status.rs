//! CalicoNodeStatus end to end: two `bgpd run` nodes (n1 on 127.0.0.1, n2 on
//! 127.0.0.2, node-to-node mesh on loopback ports, no kernel programming, so
//! no root) read CalicoNodeStatus objects from their datastore and write the
//! status of their own: on the file datastore into
//! `calico-node-status/NAME.yaml` beside it (the datastore's file untouched), on
//! a real etcd (Debian `etcd-server`) back into the object's key. What is written
//! is checked against Calico's CRD schema, and `bgpd show status` against it.
//! The Kubernetes datastore is tested through the API-server stand-in in
//! `bgpd/src/daemon/nodestatus/tests.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{crd_schema, free_port, Proc};
use serde_json::{json, Value};

/// Polls `f` every 100 ms until it gives a value; fails after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The design both datastores hold: n1 and n2 in a mesh on their own ports,
/// a block each, and CalicoNodeStatus objects: for n1 every class each second,
/// for n1 never (period 0), for n2 BGP only.
fn design(p1: u16, p2: u16) -> Vec<Value> {
    let node = |name: &str, ip: &str| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
               "spec": {"bgp": {"ipv4Address": format!("{ip}/8")}}})
    };
    let per_node = |name: &str, port: u16| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
               "metadata": {"name": format!("node.{name}")}, "spec": {"listenPort": port}})
    };
    let block = |cidr: &str, node: &str| {
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
               "metadata": {"name": cidr.replace(['.', '/'], "-")},
               "spec": {"cidr": cidr, "affinity": format!("host:{node}"), "deleted": false}})
    };
    let status = |name: &str, node: &str, classes: &[&str], period: u32| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "CalicoNodeStatus", "metadata": {"name": name},
               "spec": {"node": node, "classes": classes, "updatePeriodSeconds": period}})
    };
    vec![
        node("n1", "127.0.0.1"),
        node("n2", "127.0.0.2"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
               "spec": {"nodeToNodeMeshEnabled": true, "bindMode": "NodeIP", "asNumber": 64512}}),
        per_node("n1", p1),
        per_node("n2", p2),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "pods"},
               "spec": {"cidr": "10.244.0.0/16"}}),
        block("10.244.1.0/26", "n1"),
        block("10.244.2.0/26", "n2"),
        status("n1-all", "n1", &["Agent", "BGP", "Routes"], 1),
        status("n1-never", "n1", &["BGP"], 0),
        status("n2-bgp", "n2", &["BGP"], 1),
    ]
}

/// `bgpd run --node NODE --no-kernel` on `datastore`; its control socket.
fn start_bgpd(tmp: &Path, node: &str, datastore: &str) -> (Proc, PathBuf) {
    let dir = tmp.join(node);
    std::fs::create_dir_all(&dir).expect("a directory per node");
    let socket = dir.join("bgpd.sock");
    let log = std::fs::File::create(dir.join("bgpd.log")).expect("bgpd log");
    let child = Command::new(env!("CARGO_BIN_EXE_bgpd"))
        .args(["run", "--node", node, "--no-kernel", "--datastore", datastore, "--control-socket"])
        .arg(&socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start bgpd");
    (Proc(child), socket)
}

fn show(socket: &Path, json: bool) -> Option<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bgpd"));
    cmd.args(["show", "status", "--control-socket"]).arg(socket);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The v3 CRD's schema, if the shared data is there.
fn schema(test: &str) -> Option<Value> {
    let path = testgate::shared_data(test, "calico-crds/projectcalico.org-v3/caliconodestatuses.yaml")?;
    Some(crd_schema::load(&path, "v3"))
}

/// Checks n1's written object: valid, every class, the mesh session up, its
/// own block; and `bgpd show status` saying the same.
fn check_n1(object: &Value, schema: &Value, socket: &Path) {
    assert_eq!(crd_schema::check(schema, object), Vec::<String>::new(), "{object:#}");
    assert_eq!(object["spec"]["node"], "n1", "the spec is kept");
    let status = &object["status"];
    assert_eq!(status["agent"]["birdV4"]["state"], "Ready");
    assert_eq!(status["agent"]["birdV4"]["routerID"], "127.0.0.1");
    assert!(status["agent"]["birdV6"].is_null(), "n1 has no IPv6 address");
    assert_eq!(status["bgp"]["numberEstablishedV4"], 1);
    assert_eq!(status["bgp"]["numberNotEstablishedV4"], 0);
    let peer = &status["bgp"]["peersV4"][0];
    assert_eq!(
        (peer["peerIP"].as_str(), peer["type"].as_str(), peer["state"].as_str()),
        (Some("127.0.0.2"), Some("NodeMesh"), Some("Established"))
    );
    // Routes learned over loopback are dropped (a martian next hop, RFC 7606
    // §7.3): only the node's own block is there; learned ones are unit-tested.
    let routes = status["routes"]["routesV4"].as_array().expect("routesV4");
    let own = routes.iter().find(|r| r["destination"] == "10.244.1.0/26").expect("n1's block");
    assert_eq!(own["interface"], "blackhole");
    assert_eq!(own["type"], "RIB", "no kernel programming: in the RIB only");
    assert_eq!(own["learnedFrom"]["sourceType"], "Static");

    let shown: Value = serde_json::from_str(&show(socket, true).expect("show status --json")).expect("JSON");
    assert_eq!(shown["bgp"], status["bgp"], "show status --json is the written status");
    assert_eq!(shown["agent"]["birdV4"]["routerID"], "127.0.0.1");
    let table = show(socket, false).expect("show status");
    assert!(table.starts_with("Calico process is running.\n\nIPv4 BGP status\n"), "{table}");
    assert!(table.contains("| 127.0.0.2    | node-to-node mesh | up    |"), "{table}");
    assert!(table.contains("| Established |"), "{table}");
    assert!(table.contains("No IPv6 peers found."), "{table}");
}

#[test]
fn file_datastore_writes_the_status_beside_it() {
    let test = "file_datastore_writes_the_status_beside_it";
    let Some(schema) = schema(test) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds = tmp.path().join("cluster");
    std::fs::create_dir_all(&ds).unwrap();
    let design: Vec<String> =
        design(free_port(), free_port()).iter().map(|o| serde_yaml::to_string(o).expect("YAML")).collect();
    let file = ds.join("design.yaml");
    let text = design.join("---\n");
    std::fs::write(&file, &text).unwrap();
    let datastore = format!("file:{}", ds.display());
    let (_n1, s1) = start_bgpd(tmp.path(), "n1", &datastore);
    let (_n2, _s2) = start_bgpd(tmp.path(), "n2", &datastore);

    let status_dir = ds.join("calico-node-status");
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(status_dir.join(format!("{name}.yaml"))).ok()?;
        serde_yaml::from_str(&text).ok()
    };
    let limit = Duration::from_secs(30);
    let n1 = wait_for("n1's status with the mesh session up", limit, || {
        read("n1-all").filter(|o| o["status"]["bgp"]["numberEstablishedV4"] == 1 && o["status"]["routes"].is_object())
    });
    check_n1(&n1, &schema, &s1);
    // Written again every second: lastUpdated moves on.
    let first = n1["status"]["lastUpdated"].clone();
    wait_for("a later write", Duration::from_secs(10), || {
        read("n1-all").filter(|o| o["status"]["lastUpdated"] != first)
    });
    // n2 writes its own (BGP only); nobody writes the one with period 0.
    let n2 =
        wait_for("n2's status", limit, || read("n2-bgp").filter(|o| o["status"]["bgp"]["numberEstablishedV4"] == 1));
    assert_eq!(crd_schema::check(&schema, &n2), Vec::<String>::new());
    assert!(n2["status"]["agent"].is_null() && n2["status"]["routes"].is_null(), "BGP only: {n2:#}");
    assert!(read("n1-never").is_none(), "updatePeriodSeconds 0: never written");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the user's file is never written");

    // The object removed from the datastore: its status file goes.
    let kept: Vec<&String> = design.iter().filter(|d| !d.contains("n1-all")).collect();
    std::fs::write(&file, kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("---\n")).unwrap();
    wait_for("the status file of a removed object to go", limit, || {
        (!status_dir.join("n1-all.yaml").exists()).then_some(())
    });
}

/// etcd from the test bed (`testgate::testbed::Etcd`: loopback ports, a scratch
/// data directory, gone on drop).
struct Etcd {
    url: String,
    _etcd: testgate::testbed::Etcd,
}

impl Etcd {
    fn start() -> Etcd {
        let config = testgate::testbed::EtcdConfig::loopback("bgpd-test").expect("free loopback ports");
        let etcd = testgate::testbed::Etcd::start(config).unwrap_or_else(|e| panic!("{e}"));
        Etcd { url: etcd.url().to_string(), _etcd: etcd }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    async fn client(&self) -> Result<bgpd_etcd::Client, bgpd_etcd::Error> {
        bgpd_etcd::Client::connect(std::slice::from_ref(&self.url), bgpd_etcd::ConnectOptions::default()).await
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, bgpd_etcd::Error> {
        Self::rt().block_on(async { self.client().await?.get(key).await.map(|kv| kv.map(|kv| kv.value)) })
    }

    fn put(&self, key: &str, value: &str) {
        Self::rt().block_on(async { self.client().await?.put(key, value).await }).expect("etcd put");
    }
}

#[test]
fn etcd_datastore_writes_the_status_into_the_objects_key() {
    let test = "etcd_datastore_writes_the_status_into_the_objects_key";
    if !testgate::require_cmd(test, "etcd") {
        return;
    }
    let Some(schema) = schema(test) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start();
    const PREFIX: &str = "/bgpd-test/";
    let plural = |kind: &str| format!("{}s", kind.to_lowercase()).replace("statuss", "statuses");
    for o in design(free_port(), free_port()) {
        let key =
            format!("{PREFIX}{}/{}", plural(o["kind"].as_str().unwrap()), o["metadata"]["name"].as_str().unwrap());
        // Stored as YAML, as a user may: bgpd writes it back as JSON.
        etcd.put(&key, &serde_yaml::to_string(&o).unwrap());
    }
    // One more at Calico's own key for the v3 resource (calicoctl's layout).
    let calico_key = "/calico/resources/v3/projectcalico.org/caliconodestatuses/n2-calico";
    let n2_calico = json!({"apiVersion": "projectcalico.org/v3", "kind": "CalicoNodeStatus",
                           "metadata": {"name": "n2-calico"},
                           "spec": {"node": "n2", "classes": ["Agent"], "updatePeriodSeconds": 1}});
    etcd.put(calico_key, &n2_calico.to_string());
    let datastore = format!("etcd:{}?prefix={PREFIX}", etcd.url);
    let (_n1, s1) = start_bgpd(tmp.path(), "n1", &datastore);
    let (_n2, _s2) = start_bgpd(tmp.path(), "n2", &datastore);
    let read = |name: &str| -> Option<Value> {
        let value = etcd.get(&format!("{PREFIX}caliconodestatuses/{name}")).ok()??;
        serde_json::from_slice(&value).ok()
    };
    let limit = Duration::from_secs(30);
    let n1 = wait_for("n1's status with the mesh session up", limit, || {
        read("n1-all").filter(|o| o["status"]["bgp"]["numberEstablishedV4"] == 1 && o["status"]["routes"].is_object())
    });
    check_n1(&n1, &schema, &s1);
    let n2 =
        wait_for("n2's status", limit, || read("n2-bgp").filter(|o| o["status"]["bgp"]["numberEstablishedV4"] == 1));
    assert_eq!(crd_schema::check(&schema, &n2), Vec::<String>::new());
    let at_calicos_key = wait_for("n2's status at Calico's key", limit, || {
        let value = etcd.get(calico_key).ok()??;
        serde_json::from_slice::<Value>(&value)
            .ok()
            .filter(|o| o["status"]["agent"]["birdV4"]["routerID"] == "127.0.0.2")
    });
    assert_eq!(crd_schema::check(&schema, &at_calicos_key), Vec::<String>::new());
    let never = etcd.get(&format!("{PREFIX}caliconodestatuses/n1-never")).unwrap().expect("the object");
    assert!(
        serde_yaml::from_slice::<Value>(&never).unwrap()["status"].is_null(),
        "updatePeriodSeconds 0: never written"
    );

    // A user's edit of the spec is kept (the write holds only on the revision
    // read), and the status follows it: BGP only from now on.
    let mut edited = n1.clone();
    edited["spec"]["classes"] = json!(["BGP"]);
    edited.as_object_mut().unwrap().remove("status");
    etcd.put(&format!("{PREFIX}caliconodestatuses/n1-all"), &edited.to_string());
    let n1 = wait_for("n1's status of BGP only", limit, || {
        read("n1-all").filter(|o| o["status"].is_object() && o["status"]["agent"].is_null())
    });
    assert_eq!(n1["spec"]["classes"], json!(["BGP"]));
    assert_eq!(n1["status"]["bgp"]["numberEstablishedV4"], 1);
    assert!(n1["status"]["routes"].is_null());
}
