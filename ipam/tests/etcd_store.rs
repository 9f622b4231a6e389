//! The etcd store against a real etcd (Debian `etcd-server`): 8 allocator
//! processes across 4 nodes, and `kill -9` of an allocator mid-run.

mod common;

use std::time::Duration;

use common::*;

fn etcd_or_skip(test: &str) -> Option<Etcd> {
    if !testgate::require_cmd(test, "etcd") {
        return None;
    }
    let e = Etcd::start();
    e.put_design(&[("pool-a", "10.20.0.0/16", 26)], 0);
    Some(e)
}

#[test]
fn etcd_8_processes_4_nodes_unique_and_released() {
    let Some(etcd) = etcd_or_skip("etcd_8_processes_4_nodes_unique_and_released") else { return };
    let count: u32 = std::env::var("IPAM_ETCD_ASSIGNMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    concurrency_scenario(&format!("etcd:{}", etcd.url), 8, count, Duration::from_secs(280));
}

#[test]
fn etcd_kill_9_leaves_consistent_state_and_gc_reclaims() {
    let Some(etcd) = etcd_or_skip("etcd_kill_9_leaves_consistent_state_and_gc_reclaims") else { return };
    crash_scenario(&format!("etcd:{}", etcd.url), 100, Duration::from_secs(240));
}

/// Calico's IPAM keys of node n2, as libcalico-go's etcdv3 backend writes
/// them (its `model.AllocationBlock`, `BlockAffinity` and `IPAMHandle` values:
/// `deleted` and `sequenceNumberForAllocation` have no `omitempty`; the
/// affinity and the handle carry only what their keys do not say).
fn calicos_keys() -> [(&'static str, String); 3] {
    let mut allocations = vec![serde_json::Value::Null; 64];
    allocations[0] = serde_json::json!(0);
    let block = serde_json::json!({
        "cidr": "10.21.0.0/26", "affinity": "host:n2", "strictAffinity": false,
        "allocations": allocations, "unallocated": (1..64).collect::<Vec<u32>>(),
        "attributes": [{"handle_id": "k8s-pod-network.0a1b2c",
                        "secondary": {"namespace": "default", "node": "n2", "pod": "calico-0"}}],
        "sequenceNumber": 1, "sequenceNumberForAllocation": {"0": 0}, "deleted": false,
    });
    [
        ("/calico/ipam/v2/assignment/ipv4/block/10.21.0.0-26", block.to_string()),
        ("/calico/ipam/v2/host/n2/ipv4/block/10.21.0.0-26", r#"{"state":"confirmed","deleted":false}"#.into()),
        ("/calico/ipam/v2/handle/k8s-pod-network.0a1b2c", r#"{"block":{"10.21.0.0/26":1},"deleted":false}"#.into()),
    ]
}

/// Runs the plugin on etcd at `url` for container `container` of node n1;
/// returns (exit ok, stdout as JSON).
fn cni(
    url: &str,
    lock_dir: &std::path::Path,
    command: &str,
    container: &str,
    extra: &str,
) -> (bool, serde_json::Value) {
    use std::io::Write as _;
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"podnet","type":"ptp"{extra},"ipam":{{"type":"bgpd-ipam",
        "datastore":"etcd:{url}","nodename":"n1","lock_dir":"{}"}}}}"#,
        lock_dir.display()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bgpd-ipam"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_PATH", "/nonexistent")
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start bgpd-ipam");
    child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("write conf");
    let out = child.wait_with_output().expect("bgpd-ipam");
    let text = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        if text.trim().is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).expect("JSON") },
    )
}

/// Issue 20, Build 3, on etcd: with Calico's IPAM keys beside bgpd-ipam's,
/// ADD is refused (code 7, naming Calico's block key and the sign), STATUS
/// says not ready with the same reason, DEL and GC release bgpd-ipam's own
/// address, and Calico's keys are neither modified nor deleted. bgpd-ipam's
/// own values carry its marker.
#[test]
fn etcd_a_store_calicos_ipam_uses_is_refused() {
    let test = "etcd_a_store_calicos_ipam_uses_is_refused";
    let Some(etcd) = etcd_or_skip(test) else { return };
    let lock = tempfile::tempdir().expect("tempdir");
    let (ok, res) = cni(&etcd.url, lock.path(), "ADD", "c1", "");
    assert!(ok, "ADD on bgpd-ipam's own store: {res}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = rt
        .block_on(bgpd_etcd::Client::connect(&[etcd.url.as_str()], bgpd_etcd::ConnectOptions::default()))
        .expect("connect");
    let own = rt.block_on(client.get("/calico/ipam/v2/handle/podnet.c1.eth0")).expect("get").expect("the handle");
    assert!(String::from_utf8_lossy(&own.value).contains(r#""bgpd.io/ipam-owner":"bgpd-ipam""#), "marked");
    for (key, value) in calicos_keys() {
        rt.block_on(client.put(key, value)).expect("put Calico's key");
    }
    let read = |key: &str| rt.block_on(client.get(key)).expect("get").map(|kv| (kv.value, kv.mod_revision));
    let before: Vec<_> = calicos_keys().iter().map(|(k, _)| read(k)).collect();

    let why = "IPAMBlock /calico/ipam/v2/assignment/ipv4/block/10.21.0.0-26 was written by Calico's IPAM (it has \
               sequenceNumberForAllocation); bgpd-ipam and Calico's IPAM cannot share a store: see \
               docs/ipam.md#one-ipam-per-store";
    let (ok, res) = cni(&etcd.url, lock.path(), "ADD", "c2", "");
    assert!(!ok, "{res}");
    assert_eq!((res["code"].as_u64(), res["msg"].as_str()), (Some(7), Some(why)), "{res}");
    let (ok, res) = cni(&etcd.url, lock.path(), "STATUS", "", "");
    assert!(!ok, "{res}");
    assert_eq!((res["code"].as_u64(), res["msg"].as_str()), (Some(50), Some(why)), "{res}");
    let (ok, res) = cni(&etcd.url, lock.path(), "DEL", "c1", "");
    assert!(ok, "DEL of bgpd-ipam's own attachment: {res}");
    assert!(read("/calico/ipam/v2/handle/podnet.c1.eth0").is_none(), "released");
    let (ok, res) = cni(&etcd.url, lock.path(), "GC", "", r#","cni.dev/valid-attachments":[]"#);
    assert!(ok, "GC leaves Calico's keys alone and succeeds: {res}");
    let after: Vec<_> = calicos_keys().iter().map(|(k, _)| read(k)).collect();
    assert_eq!(after, before, "Calico's keys untouched");
}

/// `ipamPrefix=` of the datastore string (the grammar bgpd's `--datastore`
/// shares) is where bgpd-ipam keeps its state: the handle goes under it, not
/// under Calico's `/calico/ipam/v2/`, and DEL finds it there.
#[test]
fn etcd_the_ipam_prefix_of_the_datastore_string_is_used() {
    let test = "etcd_the_ipam_prefix_of_the_datastore_string_is_used";
    let Some(etcd) = etcd_or_skip(test) else { return };
    let lock = tempfile::tempdir().expect("tempdir");
    let url = format!("{}?prefix=/t/bgpd/&ipamPrefix=/t/ipam", etcd.url);
    let (ok, res) = cni(&url, lock.path(), "ADD", "c1", "");
    assert!(ok, "ADD: {res}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = rt
        .block_on(bgpd_etcd::Client::connect(&[etcd.url.as_str()], bgpd_etcd::ConnectOptions::default()))
        .expect("connect");
    let read = |key: &str| rt.block_on(client.get(key)).expect("get");
    assert!(read("/t/ipam/handle/podnet.c1.eth0").is_some(), "the handle under ipamPrefix");
    assert!(read("/calico/ipam/v2/handle/podnet.c1.eth0").is_none(), "nothing under the default prefix");
    let (ok, res) = cni(&url, lock.path(), "DEL", "c1", "");
    assert!(ok, "DEL: {res}");
    assert!(read("/t/ipam/handle/podnet.c1.eth0").is_none(), "released");
}
