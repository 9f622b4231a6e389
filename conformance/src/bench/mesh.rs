//! Mesh-scale benchmark (issue 16, target 3): one node joins a full node-to-node mesh of N
//! nodes, with its kernel FIB on, as bgpd and as Calico's BIRD.
//!
//! `bench mesh [--nodes N] [--contenders bgpd,bird] [--budget-secs B] [--bgpd PATH]`
//!
//! Per contender, two fresh namespaces joined by a veth (the `sessions` bench's test bed):
//! the node under test (the DUT) at 10.250.99.254/16, and the N-1 other nodes simulated by
//! the `sessions` far end in `--mesh` role (`bgpd_proto::session`, one tokio thread): each
//! is a Calico node of the DUT's AS at 10.250.(1+i/250).(i%250+1) that, once Established,
//! announces its /26 block of 10.200.0.0/16 (next hop itself) and End-of-RIB. The DUT's
//! address is the higher one *as text* for every far end, so, by Calico's rule, the DUT
//! connects and the far ends wait, for both contenders.
//!
//! The DUT is configured as its users would: bgpd with plain Calico resources (the default
//! BGPConfiguration with the mesh on, a Node per node, the IPPool), BIRD as Calico's confd
//! renders the mesh (one `protocol bgp` per node: connect delay 2 s, connect retry 5 s,
//! error wait 5-30 s, graceful restart, ADD-PATH, import all; a kernel protocol that
//! exports with `merge paths on`). Both program the namespace's kernel table.
//!
//! Measured: seconds from starting the DUT until the far ends see every session
//! Established, and until every one of the N-1 blocks is in the DUT's kernel table (its
//! protocol's routes in 10.200.0.0/16, polled every 50 ms, the first one checked for its
//! next hop); the DUT's CPU seconds until then (utime+stime and the threads' schedstat);
//! its VmRSS and VmHWM then. One line per contender, then `ratio=bgpd/bird …`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::args::Flags;
use super::sessions::dut::Dut;
use super::sessions::farend::{mesh_block, FarEnd, Role};
use super::sessions::{
    bgpd_and_bird, each_contender, far_addr, install_signal_cleanup, Contender, ScratchDir, Testbed, DUT_AS,
};
use testgate::testbed::bird::{BirdChannel, BirdConfig, BirdKernel, BirdSession};
use testgate::testbed::Af;

/// The node under test: text-greater than every far end's 10.250.1.x … 10.250.9.x.
const MESH_DUT: Ipv4Addr = Ipv4Addr::new(10, 250, 99, 254);
/// The pool the blocks come from.
const POOL: &str = "10.200.0.0/16";
/// Nodes at most (the pool has 1,024 blocks of /26; the far ends then stay below 10.250.10.0).
const MAX_NODES: usize = 1025;

struct Options {
    nodes: usize,
    contenders: Vec<Contender>,
    budget: Duration,
    bgpd: Option<PathBuf>,
}

const USAGE: &str = "usage: mesh [--nodes N] [--contenders bgpd,bird] [--budget-secs B] [--bgpd PATH]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        nodes: 100,
        contenders: vec![Contender::Bgpd, Contender::Bird],
        budget: Duration::from_secs(300),
        bgpd: None,
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--nodes" => opts.nodes = flags.number_in(2..=MAX_NODES)?,
            "--budget-secs" => opts.budget = Duration::from_secs(flags.number_in(1..=3600)?),
            "--bgpd" => opts.bgpd = Some(PathBuf::from(flags.value()?)),
            "--contenders" => opts.contenders = Contender::list(flags.value()?)?,
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    Ok(opts)
}

/// bgpd's datastore: what a Calico cluster of `nodes` nodes holds.
fn bgpd_datastore(nodes: usize) -> String {
    let mut s = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{asNumber: {DUT_AS}, nodeToNodeMeshEnabled: true}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\n\
         spec: {{cidr: {POOL}, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: true}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-1}}\n\
         spec: {{bgp: {{ipv4Address: {MESH_DUT}/16}}}}\n"
    );
    for i in 0..nodes - 1 {
        let _ = write!(
            s,
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: far-{i}}}\n\
             spec: {{bgp: {{ipv4Address: {}/16}}}}\n",
            far_addr(i)
        );
    }
    s
}

/// BIRD as Calico's confd renders a mesh node: one session per other node with Calico's
/// template, and a kernel protocol that installs what is learned (ECMP merged).
fn bird_config(nodes: usize, log: &std::path::Path) -> String {
    let session = |i: usize| BirdSession {
        connect_retry: Some(5),
        error_wait: Some((5, 30)),
        connect_delay: Some(2),
        graceful_restart: true,
        channels: vec![BirdChannel {
            export: "none".into(),
            add_paths: Some("on".into()),
            ..BirdChannel::all(Af::Ipv4)
        }],
        ..BirdSession::plain(
            &format!("Mesh_{}", far_addr(i).to_string().replace('.', "_")),
            &MESH_DUT.to_string(),
            DUT_AS,
            &far_addr(i).to_string(),
            DUT_AS,
        )
    };
    BirdConfig {
        router_id: MESH_DUT.to_string(),
        log: format!("\"{}\" all", log.display()),
        device_scan: Some(2),
        kernel: vec![BirdKernel { name: None, af: Af::Ipv4, import: None, export: "all".into(), merge_paths: true }],
        sessions: (0..nodes - 1).map(session).collect(),
        ..BirdConfig::default()
    }
    .render()
}

/// The routes of the DUT's protocol in the pool, in the DUT's kernel table: how many, and
/// whether the first block's goes via its node.
fn installed(ns: &testgate::testbed::Netns, c: Contender) -> Result<(usize, bool), String> {
    let proto = match c {
        Contender::Bgpd => "bgp",
        Contender::Bird => "bird",
    };
    let out = ns.ip(&["-4", "-o", "route", "show", "root", POOL, "proto", proto]).map_err(|e| e.to_string())?;
    let first = format!("{} via {} ", mesh_block(0), far_addr(0));
    Ok((out.lines().count(), out.lines().any(|l| l.starts_with(&first))))
}

struct Outcome {
    contender: Contender,
    nodes: usize,
    established: usize,
    installed: usize,
    seconds_established: Option<f64>,
    seconds_installed: Option<f64>,
    cpu_stat: f64,
    cpu_sched: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Outcome {
    fn line(&self) -> String {
        let secs = |s: Option<f64>| s.map_or("none".to_string(), |s| format!("{s:.3}"));
        format!(
            "contender={} nodes={} established={} installed={} seconds_to_establish={} seconds_to_install={} \
             cpu_s={:.3} cpu_s_sched={:.3} rss_kib={} hwm_kib={}",
            self.contender.name(),
            self.nodes,
            self.established,
            self.installed,
            secs(self.seconds_established),
            secs(self.seconds_installed),
            self.cpu_stat,
            self.cpu_sched,
            self.rss_kib,
            self.hwm_kib,
        )
    }
}

fn bench_one(c: Contender, opts: &Options, bgpd: Option<&std::path::Path>) -> Result<Outcome, String> {
    let others = opts.nodes - 1;
    let far: Vec<Ipv4Addr> = (0..others).map(far_addr).collect();
    let bed = Testbed::new("mesh", c.name(), MESH_DUT, &far)?;
    let files = ScratchDir::new(&format!("bgpd-bench-mesh-{}", c.name()))?;
    let config = match c {
        Contender::Bgpd => bgpd_datastore(opts.nodes),
        Contender::Bird => bird_config(opts.nodes, &files.path().join("bird-mesh.birdlog")),
    };
    let mut far_end = FarEnd::spawn(&bed.far, others, opts.budget + Duration::from_secs(60), Role::Mesh)?;
    let t0 = Instant::now();
    let deadline = t0 + opts.budget;
    let dut = Dut::launch(c, &bed.dut, &files, &format!("mesh-{}", opts.nodes), &config, true, bgpd)?;
    let established_at = far_end.wait_up(others, deadline);
    let mut installed_at = None;
    let mut count = 0;
    while Instant::now() < deadline {
        let (n, first_ok) = installed(&bed.dut, c)?;
        count = n;
        if n == others {
            if !first_ok {
                return Err(format!("{} installed {n} blocks but not {} via {}", c.name(), mesh_block(0), far_addr(0)));
            }
            installed_at = Some(Instant::now());
            break;
        }
        far_end.pump_until(Instant::now() + Duration::from_millis(50));
    }
    let (cpu_stat, cpu_sched) = dut.cpu()?;
    let (rss_kib, hwm_kib) = dut.memory()?;
    let established = far_end.up;
    drop(dut);
    drop(far_end);
    Ok(Outcome {
        contender: c,
        nodes: opts.nodes,
        established,
        installed: count,
        seconds_established: established_at.map(|t| t.duration_since(t0).as_secs_f64()),
        seconds_installed: installed_at.map(|t| t.duration_since(t0).as_secs_f64()),
        cpu_stat,
        cpu_sched,
        rss_kib,
        hwm_kib,
    })
}

/// Runs the mesh benchmark with the arguments after `mesh`.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    install_signal_cleanup("mesh bench")?;
    let bgpd = if opts.contenders.contains(&Contender::Bgpd) {
        Some(testgate::testbed::bgpd_binary(opts.bgpd.clone())?)
    } else {
        None
    };
    println!(
        "# mesh benchmark: one node joins a full mesh of {} nodes ({} far ends, one /26 each), kernel FIB on, \
         {} CPUs",
        opts.nodes,
        opts.nodes - 1,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let results = each_contender(&opts.contenders, |c| bench_one(c, &opts, bgpd.as_deref()), Outcome::line);
    if let Some((b, r)) = bgpd_and_bird(&results) {
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.3}", x / y),
            _ => "n/a".to_string(),
        };
        println!(
            "ratio=bgpd/bird seconds_to_establish={} seconds_to_install={} cpu_s={} hwm_kib={}",
            ratio(b.seconds_established, r.seconds_established),
            ratio(b.seconds_installed, r.seconds_installed),
            ratio(Some(b.cpu_sched), Some(r.cpu_sched)),
            ratio(Some(b.hwm_kib as f64), Some(r.hwm_kib as f64)),
        );
        let speedup = match (b.seconds_installed, r.seconds_installed) {
            (Some(x), Some(y)) if x > 0.0 => y / x,
            _ => 0.0,
        };
        println!("target faster_than_bird_5x={}", if speedup >= 5.0 { "met" } else { "missed" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dut_connects_to_every_far_end_by_calicos_rule() {
        // The lower address as text waits: every far end, never the DUT.
        for i in 0..MAX_NODES - 1 {
            assert!(far_addr(i).to_string() < MESH_DUT.to_string(), "{}", far_addr(i));
        }
    }

    #[test]
    fn blocks_are_distinct_and_in_the_pool() {
        let pool: ipnet::Ipv4Net = POOL.parse().unwrap();
        let blocks: std::collections::HashSet<_> = (0..MAX_NODES - 1).map(mesh_block).collect();
        assert_eq!(blocks.len(), MAX_NODES - 1);
        assert!(blocks.iter().all(|b| pool.contains(b) && b.prefix_len() == 26));
    }

    #[test]
    fn both_contenders_know_every_node() {
        let store = bgpd_datastore(4);
        assert_eq!(store.matches("kind: Node\n").count(), 4);
        assert!(store.contains("nodeToNodeMeshEnabled: true"));
        let bird = bird_config(4, std::path::Path::new("/tmp/x.log"));
        assert_eq!(bird.matches("protocol bgp Mesh_").count(), 3, "{bird}");
        assert!(bird.contains("connect delay time 2;") && bird.contains("add paths on;"), "{bird}");
        assert!(bird.contains("protocol kernel"), "{bird}");
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["--nodes", "500"])).unwrap().nodes, 500);
        assert!(parse_args(&args(&["--nodes", "1"])).is_err());
        assert!(parse_args(&args(&["--nodes", "5000"])).is_err());
        assert!(parse_args(&args(&["--contenders", "frr"])).is_err());
    }
}
