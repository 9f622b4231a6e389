//! BGPPeer `localWorkloadSelector` end to end: a node peers with a BGP speaker
//! running in one of its own pods (a KubeVirt VM, an in-cluster router), wired
//! as Calico wires a pod:
//!
//! - the pod's namespace has a veth `eth0` with its address `10.244.1.7/32`, a
//!   route to the peering address through it and nothing else; the node's end
//!   `cali1` has no subnet, a `/32` route to the pod (Felix's) and the peering
//!   address `169.254.0.179` (`localWorkloadPeeringIPV4`);
//! - the pod runs BIRD (AS 65010) announcing `10.100.60.0/24`, peering with
//!   `169.254.0.179` multihop; its WorkloadEndpoint is labelled `app: router`
//!   and a BGPPeer selects it;
//! - bgpd connects from the peering address to the pod: the session
//!   `local/vms/virt/vm` is Established, the route is learned from it and lands
//!   in the node's kernel via the pod's address on `cali1`;
//! - the WorkloadEndpoint goes (the pod is deleted): the session and the route
//!   go with it; a WorkloadEndpoint of the same labels on another node never
//!   makes a session here.

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, run_parallel, setup, wait_for, Lab, Ns};

const UP: Duration = Duration::from_secs(60);
const POD: &str = "10.244.1.7";
const PEERING: &str = "169.254.0.179";
const LEARNED: &str = "10.100.60.0/24";
const SESSION: &str = "local/vms/virt/vm";

fn wep(name: &str, node: &str, pod: &str, ip: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: virt\n  \
         labels: {{app: router}}\nspec:\n  node: {node}\n  pod: {pod}\n  orchestrator: k8s\n  ipNetworks: [{ip}/32]\n"
    )
}

fn datastore(with_pod: bool) -> String {
    let mut docs = vec![
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
             spec: {{asNumber: 64512, nodeToNodeMeshEnabled: false, localWorkloadPeeringIPV4: {PEERING}}}\n"
        ),
        doc::node("n1", "10.255.61.1/24", &[], None),
        doc::node("n2", "10.255.61.2/24", &[], None),
        doc::peer("vms", &[], "  localWorkloadSelector: app == 'router'\n  asNumber: 65010\n  keepaliveTime: 3s\n"),
        // Same labels, another node: never a session on n1.
        wep("n2-k8s-other-eth0", "n2", "other", "10.244.1.9"),
    ];
    if with_pod {
        docs.push(wep("n1-k8s-vm-eth0", "n1", "vm", POD));
    }
    doc::stream(&docs)
}

/// The node's kernel route to `prefix`, as `ip route` prints it.
fn kernel_route(ns: &Ns, prefix: &str) -> Result<String, String> {
    ns.ip(&["route", "show", prefix]).map(|s| s.trim().to_string()).map_err(|e| e.to_string())
}

fn local_workload(lab: &Lab) -> Result<(), String> {
    let node = setup(lab.netns("node"))?;
    let vm = setup(lab.netns("vm"))?;
    setup(node.add_addr("lo", "10.255.61.1/24"))?;
    setup(lab.veth(&node, "cali1", &[], &vm, "eth0", &[&format!("{POD}/32")]))?;
    for args in [
        vec!["addr", "add", &format!("{PEERING}/32"), "dev", "cali1"][..].to_vec(),
        vec!["route", "add", &format!("{POD}/32"), "dev", "cali1", "scope", "link"],
    ] {
        setup(node.ip(&args))?;
    }
    setup(vm.ip(&["route", "add", &format!("{PEERING}/32"), "dev", "eth0", "scope", "link"]))?;

    let conf = bird::BirdConfig {
        router_id: POD.into(),
        routes4: vec![LEARNED.into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "node".into(),
            local: POD.into(),
            local_as: 65010,
            neighbor: PEERING.into(),
            peer_as: 64512,
            multihop: Some(2),
            ..Default::default()
        }],
        ..Default::default()
    }
    .render();
    setup(bird::Bird::start_conf(lab, &vm, "vm", &conf))?;
    let b = setup(bgpd::Bgpd::start_yaml(lab, &node, "lw", "n1", &datastore(true)))?;

    let peer = wait_for("bgpd: the session with the pod Established", UP, || b.established(SESSION))?;
    let peers = b.peers()?;
    if peers.len() != 1 {
        return Err(format!("only the pod on n1 is a peer; bgpd has: {peers:?}"));
    }
    let text = peer.to_string();
    if !text.contains(POD) || !text.contains("65010") {
        return Err(format!("the session should be with {POD}, AS 65010: {peer}"));
    }
    wait_for("bgpd: the pod's route learned", UP, || b.has_route(SESSION, LEARNED))?;
    wait_for("the pod's route in the node's kernel", UP, || {
        let r = kernel_route(&node, LEARNED)?;
        if r.contains(&format!("via {POD}")) && r.contains("dev cali1") && r.contains("proto bgp") {
            Ok(())
        } else {
            Err(format!("ip route show {LEARNED}: {r:?}"))
        }
    })?;

    // The pod is deleted: its WorkloadEndpoint goes, and the session with it.
    setup(b.reconfigure_yaml(&datastore(false)))?;
    wait_for("bgpd: the session with the deleted pod gone", UP, || match b.peers()?.len() {
        0 => Ok(()),
        n => Err(format!("{n} peers left")),
    })?;
    wait_for("the pod's route gone from the kernel", UP, || {
        let r = kernel_route(&node, LEARNED)?;
        if r.is_empty() {
            Ok(())
        } else {
            Err(format!("ip route show {LEARNED}: {r:?}"))
        }
    })?;
    Ok(())
}

#[test]
fn a_node_peers_with_the_bgp_speaker_in_its_own_pod() {
    if !testgate::require_root_and_cmds("a_node_peers_with_the_bgp_speaker_in_its_own_pod", &["ip", "bird", "birdc"]) {
        return;
    }
    run_parallel(vec![("local workload".into(), Box::new(local_workload))]);
}
