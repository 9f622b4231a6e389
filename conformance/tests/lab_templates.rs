//! Every design template in `templates/` comes up with `bgpd lab up` and
//! passes its session and reachability checks; the drills each template
//! documents pass; `bgpd lab down` leaves no namespace, link or process.
//!
//! Every drill fails (exits non-zero) when a probe is lost, and every
//! template is upgraded (`lab upgrade`: each bgpd restarted with SIGTERM,
//! one at a time, as a DaemonSet rolling update) without a loss.
//!
//! - `flat-mesh`: node-4 is taken down for good (`lab stop`: decommission,
//!   then its links down), node-1 restarts with SIGTERM while node-4 is down
//!   (its deferral does not wait for node-4 to the deadline), node-4 comes
//!   back (`lab start`), node-2 crashes (SIGKILL) and restarts, then the
//!   upgrade.
//! - `route-reflectors`: both reflectors restart at once (SIGTERM), then the
//!   upgrade.
//! - `l3-tor-per-rack` (BFD with the ToRs): `lab restart … node-2` with
//!   SIGTERM (the default) loses no probe, its BFD sessions carried across
//!   the restart, then the upgrade (the bgpd spine too). (A crash is a BFD
//!   failure to the ToRs: see docs/bfd.md; the crash drill runs on
//!   flat-mesh, without BFD.)
//! - `dual-tor-ecmp`: `lab fail … tor-a` cuts every link of a ToR: the
//!   checks pass through the other one; `lab recover` brings it back. Then
//!   `lab fail … b2` cuts one link (node-2 to tor-b), and `recover`. Then
//!   each ToR fails silently (`--silent`: every packet dropped, links up):
//!   BFD (300 ms x 3) must end the probes' failures within 1.5 s.
//! - `anycast-two-clusters`: `lab fail … web@east-2` turns east's endpoint
//!   unready: the service address is answered only by west's endpoint;
//!   `lab recover` brings east back.
//! - `ipv6-only` (no IPv4 address on any link, IPv4 pods): IPv4 routes go
//!   through IPv6 gateways in every kernel (RFC 8950); `lab restart …
//!   node-2`, then the upgrade.
//!
//! - `calico-migration` (three nodes on Calico's BIRD as confd renders it,
//!   one on bgpd, a BIRD ToR): each BIRD node is migrated in turn (`lab
//!   migrate`: BIRD killed, bgpd started with `--take-over bird`), the checks
//!   passing with every split, no probe lost and no route of BIRD's left;
//!   then the upgrade.
//! - `calico-migration-rr` (mesh off, a Calico BIRD and a bgpd route
//!   reflector, BIRD and bgpd clients): the BIRD reflector, then each BIRD
//!   client, migrated the same way.
//!
//! Right after `up`, before the drills, every node's and router's kernel
//! routes must be the ones `bgpd verify` predicts for the template (prefixes
//! and next hops; `lab_templates/agreement.rs`, docs/verify.md), on every
//! template without Calico BIRD nodes (verify models each node as bgpd).
//!
//! The labs run one at a time (each is several daemons on a 2-core machine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use conformance::lab::bgpd::binary;

#[path = "lab_templates/agreement.rs"]
mod agreement;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates").join(format!("{name}.yaml"))
}

/// Runs `bgpd lab ARGS…`; (exit success, stdout + stderr).
fn lab(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).arg("lab").args(args).output().expect("run bgpd lab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// What is left of lab `name`: its namespaces and processes.
fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("bl.{name}.");
    let ns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let mut left: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(|n| format!("namespace {n}"))
        .collect();
    let marker = format!("/run/bgpd-lab/{name}/");
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&marker) {
            left.push(format!("process {}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    if Path::new(&marker).exists() {
        left.push(format!("directory {marker}"));
    }
    left
}

/// Brings a template up, runs `drills` (each must exit 0), brings it down
/// and checks nothing is left. The template's lab is taken down first in
/// case an earlier run was interrupted. Returns the outputs of `up` and of
/// each drill, in order; `None` when a prerequisite is missing (a skip, see
/// `testgate`).
fn run_template(name: &str, lab_name: &str, drills: &[&[&str]], expect: &[&str]) -> Option<Vec<String>> {
    let programs: &[&str] = &[
        "ip",
        "iptables",
        "ip6tables",
        "bird",
        "birdc",
        "vtysh",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bfdd",
        "/usr/lib/cni/ptp",
    ];
    if !testgate::require_root_and_cmds(&format!("lab template {name}"), programs) {
        return None;
    }
    let ipam = binary().with_file_name("bgpd-ipam");
    assert!(ipam.is_file(), "{} missing: `cargo build -p ipam` (cargo test --workspace builds it)", ipam.display());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let file = template(name);
    let f = file.to_str().expect("utf-8 path");
    let _ = lab(&["down", f]);
    let (ok, out) = lab(&["up", f]);
    let mut failure = if !ok {
        Some(format!("`bgpd lab up {f}` failed:\n{out}"))
    } else if let Some(missing) = expect.iter().find(|e| !out.contains(*e)) {
        Some(format!("`bgpd lab up` output lacks {missing:?}:\n{out}"))
    } else if has_calico_bird(&file) {
        // `bgpd verify` models every node as bgpd; Calico's BIRD passes on
        // what it learns from the mesh to eBGP peers with itself as next hop
        // where bgpd keeps the original one, so a ToR's ECMP sets differ.
        None
    } else {
        agrees_with_verify(name, &file).err()
    };
    let mut outputs = vec![out];
    for d in drills {
        if failure.is_some() {
            break;
        }
        let args: Vec<&str> = d.iter().map(|a| if *a == "FILE" { f } else { *a }).collect();
        let (ok, out) = lab(&args);
        if !ok {
            failure = Some(format!("`bgpd lab {}` failed:\n{out}", args.join(" ")));
        }
        outputs.push(out);
    }
    let (down_ok, down_out) = lab(&["down", f]);
    let left = leftovers(lab_name);
    if let Some(f) = failure {
        panic!("{f}");
    }
    assert!(down_ok, "`bgpd lab down` failed: {down_out}");
    assert!(left.is_empty(), "`bgpd lab down` left: {left:#?}");
    for o in &outputs {
        println!("{o}");
    }
    Some(outputs)
}

/// Whether the template runs nodes with Calico's BIRD (`calicoBird`).
fn has_calico_bird(file: &Path) -> bool {
    bgpd_lab::spec::Topology::load(file).is_ok_and(|t| !t.calico_bird.is_empty())
}

/// Whether every node's and router's kernel routes, right after `lab up`,
/// are the ones `bgpd verify` predicts (see `agreement`); the counts are
/// printed as a `NOTE`, the differences are the failure.
fn agrees_with_verify(name: &str, file: &Path) -> Result<(), String> {
    let test = format!("lab template {name} (agreement with bgpd verify)");
    let agreement = agreement::check(file, 5).map_err(|e| format!("{test}: {e}"))?;
    if !agreement.differences.is_empty() {
        return Err(format!("{test}: the kernel routes differ from the prediction:\n{}", agreement.summary()));
    }
    testgate::note(&test, agreement.summary());
    Ok(())
}

/// The longest time probes failed in a drill's output (`probes failed for
/// X s at most`), or 0 when none did.
fn failed_for(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.split_once("probes failed for ").and_then(|(_, r)| r.split(' ').next()?.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn flat_mesh() {
    let _ = run_template(
        "flat-mesh",
        "flatmesh",
        &[
            &["stop", "FILE", "node-4"],
            &["restart", "FILE", "node-1", "--signal", "term"],
            &["start", "FILE", "node-4"],
            &["restart", "FILE", "node-2", "--signal", "kill"],
            &["upgrade", "FILE"],
        ],
        &["all checks passed", "192.0.2.10 via 10.0.0.13"],
    );
}

#[test]
fn calico_migration_moves_every_node_from_bird_to_bgpd_without_loss() {
    // Three nodes on Calico's BIRD and one on bgpd, then 2/2, 1/3 and 0/4:
    // the checks pass with every split, each migration loses no probe and
    // leaves no route of BIRD's, and the all-bgpd cluster upgrades.
    let Some(out) = run_template(
        "calico-migration",
        "migration",
        &[
            &["migrate", "FILE", "node-1"],
            &["migrate", "FILE", "node-2"],
            &["migrate", "FILE", "node-3"],
            &["upgrade", "FILE"],
        ],
        &["all checks passed", "node-1 (node, AS 64512, Calico BIRD)", "10.9.0.0/24 via 10.0.0.1 dev lan proto bird"],
    ) else {
        return;
    };
    for (i, node) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        let o = &out[i + 1];
        assert!(o.contains(&format!("migrate {node}: no route of BIRD's is left")), "{o}");
        assert!(o.contains(" 0 of ") && o.contains("probes lost during it"), "{o}");
    }
}

#[test]
fn calico_migration_with_route_reflectors_moves_every_bird_node_without_loss() {
    // A BIRD and a bgpd reflector; the BIRD reflector is migrated first,
    // then the BIRD clients.
    let Some(out) = run_template(
        "calico-migration-rr",
        "migrationrr",
        &[&["migrate", "FILE", "rr-1"], &["migrate", "FILE", "node-1"], &["migrate", "FILE", "node-3"]],
        &["all checks passed", "rr-1 (node, AS 64512, Calico BIRD)"],
    ) else {
        return;
    };
    for (i, node) in ["rr-1", "node-1", "node-3"].iter().enumerate() {
        let o = &out[i + 1];
        assert!(o.contains(&format!("migrate {node}: no route of BIRD's is left")), "{o}");
        assert!(o.contains(" 0 of ") && o.contains("probes lost during it"), "{o}");
    }
}

#[test]
fn route_reflectors() {
    let _ = run_template(
        "route-reflectors",
        "rrs",
        &[&["restart", "FILE", "rr-1", "rr-2"], &["upgrade", "FILE"]],
        &["all checks passed", "192.0.2.10 via 10.0.0.12"],
    );
}

#[test]
fn l3_tor_per_rack_restart_loses_nothing() {
    let _ = run_template(
        "l3-tor-per-rack",
        "l3tor",
        &[&["restart", "FILE", "node-2"], &["upgrade", "FILE"], &["status", "FILE"]],
        &["all checks passed", "192.0.2.10 nhid"],
    );
}

#[test]
fn dual_tor_ecmp_survives_a_tor() {
    let Some(out) = run_template(
        "dual-tor-ecmp",
        "dualtor",
        &[
            &["fail", "FILE", "tor-a"],
            &["recover", "FILE", "tor-a"],
            &["fail", "FILE", "b2"],
            &["recover", "FILE", "b2"],
            &["fail", "FILE", "tor-a", "--silent"],
            &["recover", "FILE", "tor-a"],
            &["fail", "FILE", "tor-b", "--silent"],
            &["recover", "FILE", "tor-b"],
            &["upgrade", "FILE"],
        ],
        // ECMP on the nodes: a pod block of another node through both ToRs.
        &["all checks passed", "nexthop via 10.1.1.1 dev a1", "nexthop via 10.2.1.1 dev b1"],
    ) else {
        return;
    };
    // A ToR failing silently (links up, every packet dropped): BFD at 300 ms
    // x 3 takes its sessions down in under a second, where the hold timer
    // would take 9 s. Both ToRs: BIRD's BFD and FRR's bfdd.
    for (i, tor) in [(5, "tor-a (BIRD)"), (7, "tor-b (FRR)")] {
        let drill = &out[i];
        let secs = failed_for(drill);
        assert!(secs > 0.0, "a silent {tor} failure loses the probes through it until detected:\n{drill}");
        assert!(secs <= 1.5, "{tor} failed silently: probes failed for {secs} s, more than 1.5 s:\n{drill}");
    }
}

#[test]
fn anycast_moves_to_the_other_cluster() {
    let _ = run_template(
        "anycast-two-clusters",
        "anycast",
        &[
            &["fail", "FILE", "web@east-2"],
            &["check", "FILE"],
            &["recover", "FILE", "web@east-2"],
            &["upgrade", "FILE"],
        ],
        &["all checks passed"],
    );
}

#[test]
fn ipv6_only_carries_ipv4_over_ipv6_next_hops() {
    let _ = run_template(
        "ipv6-only",
        "v6only",
        &[&["restart", "FILE", "node-2"], &["upgrade", "FILE"]],
        // node-1's route to rack 2's IPv4 pods: through the BIRD ToR's IPv6 address.
        &["all checks passed", "via inet6 fd00:0:1::1 dev rack1"],
    );
}

#[test]
fn an_interrupted_up_is_cleaned_by_down() {
    if !testgate::require_root_and_cmds("an_interrupted_up_is_cleaned_by_down", &["ip", "/usr/lib/cni/ptp"]) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let file = template("flat-mesh");
    let f = file.to_str().expect("utf-8 path");
    let _ = lab(&["down", f]);
    let mut up = Command::new(binary())
        .args(["lab", "up", f])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start lab up");
    // Killed once it has started daemons (or after 20 s at most).
    let state = Path::new("/run/bgpd-lab/flatmesh/state.json");
    let started = |s: &str| s.matches("\"pid\"").count() >= 3;
    for _ in 0..200 {
        if std::fs::read_to_string(state).is_ok_and(|s| started(&s)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    up.kill().expect("kill lab up");
    let _ = up.wait();
    assert!(!leftovers("flatmesh").is_empty(), "the interrupted up should have left something to clean");
    let (ok, out) = lab(&["down", f]);
    let left = leftovers("flatmesh");
    assert!(ok, "`bgpd lab down` failed: {out}");
    assert!(left.is_empty(), "`bgpd lab down` after an interrupted up left: {left:#?}");
}

#[test]
fn a_bad_template_is_refused_naming_the_problem() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("bgpd-lab-bad-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = std::fs::read_to_string(template("flat-mesh")).expect("read flat-mesh");
    let cases = [
        (good.replace("{name: node-4}]", "{name: node-9}]"), "segment lan: \"node-9\" is not a Node, router or host"),
        (good.replace("kind: Lab", "kind: Lap"), "no `apiVersion: bgpd.io/v1` `kind: Lab` document"),
        (
            good.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster"),
            "needs externalTrafficPolicy: Local",
        ),
        (good.replace("podsPerNode: 2", "podsPerNode: [2]"), "podsPerNode"),
        ("{{{ not yaml".to_string(), "invalid YAML"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&file, text).expect("write template");
        let out = Command::new(binary()).args(["lab", "up"]).arg(&file).output().expect("run bgpd lab up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "exit status 2 for a template error: {err}");
        assert!(err.contains(want), "the error should say {want:?}: {err}");
        assert!(err.contains(&format!("bad-{i}.yaml")), "the error should name the file: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(leftovers("flatmesh").is_empty(), "a refused template builds nothing");
}
