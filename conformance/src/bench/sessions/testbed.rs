//! What the benches share to set up and tear down: two network namespaces joined by a veth
//! (the test bed's `Netns`, `veth` and signal cleanup, `testgate::testbed`), the far end's
//! process, and the few commands run against them (`bgpd show … --json`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testgate::testbed::{track_pid, veth, OnSignal};
pub(crate) use testgate::testbed::{Netns, ScratchDir};

/// On SIGINT or SIGTERM: kill the children, delete the namespaces and files, exit 130.
pub(crate) fn install_signal_cleanup(bench: &'static str) -> Result<(), String> {
    testgate::testbed::on_signal(bench, OnSignal::Exit)
}

/// The DUT's namespace and the far ends' namespace, joined by a veth (`dut0`, `far0`):
/// the DUT's address on one side, the far ends' addresses on the other, all in one /16.
pub(crate) struct Testbed {
    pub dut: Netns,
    pub far: Netns,
}

impl Testbed {
    /// `bench` names the namespaces (with this process and `tag`).
    pub fn new(bench: &str, tag: &str, dut_addr: Ipv4Addr, far: &[Ipv4Addr]) -> Result<Testbed, String> {
        let base = format!("bgpdbench-{bench}-{}-{tag}", std::process::id());
        let dut = Netns::add(format!("{base}-dut"))?;
        let far_ns = Netns::add(format!("{base}-far"))?;
        veth(Some(&dut), "dut0", Some(&far_ns), "far0")?;
        dut.ip_batch(&format!("addr add {dut_addr}/16 dev dut0\nlink set dut0 up\n"))?;
        let mut cmds = String::new();
        for a in far {
            let _ = writeln!(cmds, "addr add {a}/16 dev far0");
        }
        cmds.push_str("link set far0 up\n");
        far_ns.ip_batch(&cmds)?;
        // Permanent neighbour entries both ways: no ARP for N addresses (nor the kernel's
        // table-wide limit on resolved entries, gc_thresh3, 1024 by default), and no ARP
        // probe in the middle of a measurement window.
        let far_mac = far_ns.link_mac("far0")?;
        let mut neigh = String::new();
        for a in far {
            let _ = writeln!(neigh, "neigh replace {a} lladdr {far_mac} dev dut0 nud permanent");
        }
        dut.ip_batch(&neigh)?;
        let dut_mac = dut.link_mac("dut0")?;
        far_ns.ip_batch(&format!("neigh replace {dut_addr} lladdr {dut_mac} dev far0 nud permanent\n"))?;
        Ok(Testbed { dut, far: far_ns })
    }
}

/// Starts a far end (this bench binary, run again in a namespace by `cmd`) with its
/// stdin held open (it exits when that closes) and its stdout read line by line.
pub(crate) fn spawn_far_end(mut cmd: Command) -> Result<(Child, Option<ChildStdin>, mpsc::Receiver<String>), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the far end: {e}"))?;
    track_pid(child.id());
    let stdout = child.stdout.take().ok_or("far end: no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    Ok((child, stdin, lines))
}

/// `bgpd show WHAT --json` against the DUT's control socket.
pub(crate) fn bgpd_show_json(bin: &Path, control: &Path, what: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(bin)
        .args(["show", what, "--json", "--control-socket"])
        .arg(control)
        .output()
        .map_err(|e| format!("bgpd show {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("bgpd show {what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bgpd show {what} --json: {e}"))
}

/// Gives a child asked to stop 3 s to exit, kills it otherwise, and takes it
/// off the list of processes to kill on Ctrl-C.
pub(crate) fn reap(child: &mut Child) {
    testgate::testbed::reap(child, Duration::from_secs(3));
}
