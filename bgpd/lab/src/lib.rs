//! `bgpd-lab`: the design tools, in a crate of their own so that the node
//! daemon's binary holds none of them. `bgpd lab …` and `bgpd verify …` run
//! the `bgpd-lab` binary installed beside `bgpd`.
//!
//! `bgpd lab` brings a planned network design up on one machine, in network
//! namespaces, and proves it reachable; [`verify`] checks a design offline.
//!
//! A template ([`spec`]) holds the cluster's Calico and Kubernetes resources
//! and a `Lab` document (routers, L2 segments, hosts, pods, endpoints). `up`
//! builds it: a namespace per node, router, host and pod; a bridge per
//! segment (a plain veth for a two-member segment, so cutting one end is
//! seen by the other); BIRD or FRR on the routers; `bgpd run` on each node
//! on a file datastore per cluster; pods attached by the real CNI `ptp`
//! plugin with `bgpd-ipam`; a listener in every pod. It then waits until
//! every session is Established and every probe gets the right answer.
//! Everything it makes is named `bl.LAB.*` and recorded under
//! `/run/bgpd-lab/LAB`, so `down` finds it also after an interrupted `up`.

pub mod calico_bird;
mod checks;
mod drills;
pub mod net;
pub mod probe;
pub mod routers;
pub mod spec;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use checks::*;
pub use drills::{check, fail, migrate, restart, start, stop, upgrade};
use spec::{Role, Topology};

/// Where labs keep their state.
const STATE_ROOT: &str = "/run/bgpd-lab";
/// How long `up` (and a drill) waits for every check to pass.
const CONVERGE: Duration = Duration::from_secs(120);
/// The CNI plugins' directory of Debian's containernetworking-plugins.
const CNI_DIR: &str = "/usr/lib/cni";
/// The metric of the lab's service-address routes on a node: below bgpd's (20).
const SERVICE_ROUTE_METRIC: &str = "10";

/// What `lab up` started and allocated: read by the other subcommands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    template: PathBuf,
    /// (name, namespace, pid, argv, log).
    procs: Vec<Proc>,
    /// Pods and their addresses.
    pods: Vec<Pod>,
    /// (service key, node) → ready.
    endpoints: BTreeMap<String, bool>,
    /// Faults in effect (`lab fail`).
    faults: Vec<String>,
    /// Nodes taken down for good (`lab stop`): not checked, their pods not probed.
    #[serde(default)]
    stopped: Vec<String>,
    /// Routers of `faults` that failed silently (`lab fail --silent`: every
    /// packet dropped, links up) rather than losing their links.
    #[serde(default)]
    silent: Vec<String>,
    /// Nodes that run Calico's BIRD (not yet migrated to bgpd).
    #[serde(default)]
    bird: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Proc {
    name: String,
    ns: String,
    pid: u32,
    argv: Vec<String>,
    log: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pod {
    name: String,
    node: String,
    ns: String,
    ip: Ipv4Addr,
    /// Its IPv6 address, in a dual-stack lab.
    #[serde(default)]
    ip6: Option<Ipv6Addr>,
}

impl Pod {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(IpAddr::V4(self.ip)).chain(self.ip6.map(IpAddr::V6))
    }

    /// Its address of `addr`'s family.
    fn address_like(&self, addr: &IpAddr) -> Option<IpAddr> {
        self.addresses().find(|a| a.is_ipv4() == addr.is_ipv4())
    }
}

/// A lab loaded for a subcommand: the topology and its state directory.
struct Lab {
    topo: Topology,
    dir: PathBuf,
}

impl Lab {
    fn load(file: &Path) -> anyhow::Result<Lab> {
        let topo = Topology::load(file)?;
        let dir = Path::new(STATE_ROOT).join(&topo.name);
        Ok(Lab { topo, dir })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn read_state(&self) -> anyhow::Result<State> {
        let p = self.state_path();
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("lab {} is not up (no {}): run `bgpd lab up` first", self.topo.name, p.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", p.display()))
    }

    fn save(&self, st: &State) -> anyhow::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(st)?)?;
        std::fs::rename(&tmp, self.state_path())?;
        Ok(())
    }

    fn prefix(&self) -> String {
        self.topo.netns("")
    }

    fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join("clusters").join(cluster)
    }

    fn node_socket(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node).join("bgpd.sock")
    }

    /// The control socket of a node's Calico BIRD.
    fn bird_socket(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node).join("bird.ctl")
    }

    fn start(&self, st: &mut State, name: &str, ns: &str, argv: Vec<String>, log: PathBuf) -> anyhow::Result<()> {
        let pid = net::spawn(ns, &argv, &log)?;
        st.procs.push(Proc { name: name.into(), ns: ns.into(), pid, argv, log });
        self.save(st)
    }
}

/// Whether this process runs as root (effective UID 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The `bgpd` binary beside this `bgpd-lab` (nodes run it; the pods'
/// listeners and the probes run as `bgpd lab serve` / `bgpd lab probe`, which
/// comes back here), and the `bgpd-ipam` beside it.
fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe().context("cannot find the bgpd-lab binary")?;
    let build = "build them together, e.g. `cargo build --release -p bgpd -p bgpd-lab -p ipam`";
    let bgpd = me.with_file_name("bgpd");
    if !bgpd.is_file() {
        bail!("bgpd (the node daemon) is not beside {}: {build}", me.display());
    }
    let ipam = me.with_file_name("bgpd-ipam");
    if !ipam.is_file() {
        bail!("bgpd-ipam (the CNI IPAM plugin) is not beside {}: {build}", me.display());
    }
    Ok((bgpd, ipam))
}

fn need_program(path: &str, package: &str) -> anyhow::Result<()> {
    let found = if path.contains('/') {
        Path::new(path).is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(path).is_file()))
    };
    if !found {
        bail!("{path} not found: install the Debian package {package} (`bash .ci/install-deps` installs all)");
    }
    Ok(())
}

fn preflight(topo: &Topology) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the lab needs root (network namespaces, veth, routes)");
    }
    need_program("ip", "iproute2")?;
    need_program(&format!("{CNI_DIR}/ptp"), "containernetworking-plugins")?;
    if !topo.calico_bird.is_empty() {
        need_program("bird", "bird2")?;
    }
    for r in topo.routers() {
        match &r.role {
            Role::Router { implementation: spec::Implementation::Bird, .. } => need_program("bird", "bird2")?,
            Role::Router { implementation: spec::Implementation::Bgpd, .. } => {}
            Role::Router { implementation: spec::Implementation::Frr, .. } => {
                need_program("/usr/lib/frr/zebra", "frr")?
            }
            _ => {}
        }
    }
    Ok(())
}

/// `bgpd lab up FILE`.
pub fn up(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    preflight(&lab.topo)?;
    let (bgpd, _) = binaries()?;
    if lab.dir.exists() || !net::namespaces(&lab.prefix()).is_empty() {
        bail!("lab {} is already up (or left over): run `bgpd lab down {}` first", lab.topo.name, file.display());
    }
    std::fs::create_dir_all(&lab.dir)?;
    let mut st = State {
        template: file.canonicalize().unwrap_or_else(|_| file.to_path_buf()),
        bird: lab.topo.calico_bird.iter().cloned().collect(),
        ..State::default()
    };
    lab.save(&st)?;
    let t0 = Instant::now();
    println!("lab {}: building in network namespaces {}*", lab.topo.name, lab.prefix());
    build_network(&lab)?;
    write_datastores(&lab, &st)?;
    for r in lab.topo.routers() {
        let ns = lab.topo.netns(&r.name);
        for (name, pid, argv, log) in routers::start(&lab.topo, r, &lab.dir, &bgpd)? {
            st.procs.push(Proc { name, ns: ns.clone(), pid, argv, log });
        }
        lab.save(&st)?;
    }
    attach_pods(&lab, &mut st, &bgpd)?;
    write_datastores(&lab, &st)?;
    for node in lab.topo.nodes() {
        if st.bird.contains(&node.name) {
            start_calico_bird(&lab, &mut st, &node.name)?;
        } else {
            start_node(&lab, &mut st, &bgpd, &node.name, &[])?;
        }
    }
    for s in lab.topo.services.clone() {
        for (node, ready) in &s.endpoints {
            set_endpoint(&lab, &mut st, &s.key, node, *ready)?;
        }
    }
    write_datastores(&lab, &st)?;
    lab.save(&st)?;
    println!(
        "lab {}: {} nodes, {} routers, {} pods up in {:.1} s; waiting for BGP and reachability",
        lab.topo.name,
        lab.topo.nodes().count(),
        lab.topo.routers().count(),
        st.pods.len(),
        t0.elapsed().as_secs_f64()
    );
    let (ok, report) = converge(&lab, &st, &bgpd, CONVERGE);
    print!("{}", settled_routes(&lab, &st));
    print!("{report}");
    if ok {
        println!("lab {}: all checks passed in {:.1} s", lab.topo.name, t0.elapsed().as_secs_f64());
    } else {
        println!(
            "lab {}: checks FAILED (the lab stays up for inspection; `bgpd lab down {}`)",
            lab.topo.name,
            file.display()
        );
    }
    Ok(ok)
}

fn build_network(lab: &Lab) -> anyhow::Result<()> {
    let t = &lab.topo;
    for m in t.members.values() {
        net::add_namespace(&t.netns(&m.name))?;
    }
    for seg in &t.segments {
        let addr_of = |name: &str| t.members[name].links.iter().find(|(s, _)| *s == seg.name).map(|(_, a)| *a);
        if seg.members.len() == 2 {
            // A point-to-point link: a plain veth, so a cut end is seen as
            // lost carrier on the other.
            let (a, b) = (&seg.members[0], &seg.members[1]);
            net::veth(&t.netns(a), &seg.name, &t.netns(b), &seg.name)?;
        } else {
            let sw = t.netns(&format!("seg-{}", seg.name));
            net::add_namespace(&sw)?;
            net::ip_in(&sw, &["link", "add", "br0", "type", "bridge"])?;
            net::ip_in(&sw, &["link", "set", "br0", "up"])?;
            for (i, m) in seg.members.iter().enumerate() {
                let port = format!("m{i}");
                net::veth(&t.netns(m), &seg.name, &sw, &port)?;
                net::ip_in(&sw, &["link", "set", &port, "master", "br0"])?;
            }
        }
        for m in &seg.members {
            if let Some(a) = addr_of(m) {
                net::ip_in(&t.netns(m), &["addr", "add", &a.to_string(), "dev", &seg.name])?;
            }
            for (_, a) in t.members[m].links6.iter().filter(|(s, _)| *s == seg.name) {
                net::ip_in(&t.netns(m), &["-6", "addr", "add", &a.to_string(), "dev", &seg.name, "nodad"])?;
            }
        }
    }
    for m in t.members.values() {
        if let Role::Host { gateway, gateway6 } = m.role {
            net::ip_in(&t.netns(&m.name), &["route", "add", "default", "via", &gateway.to_string()])?;
            if let Some(g6) = gateway6 {
                net::ip_in(&t.netns(&m.name), &["-6", "route", "add", "default", "via", &g6.to_string()])?;
            }
        }
    }
    Ok(())
}

/// Writes each cluster's datastore directory: the template's resources and
/// the lab's EndpointSlices (one per service and node, on the node's first pod).
fn write_datastores(lab: &Lab, st: &State) -> anyhow::Result<()> {
    for (cluster, yaml) in &lab.topo.clusters {
        let dir = lab.cluster_dir(cluster);
        std::fs::create_dir_all(&dir)?;
        let res = dir.join("resources.yaml");
        if !res.exists() {
            std::fs::write(&res, yaml)?;
        }
        let mut eps = String::new();
        for s in lab.topo.services.iter().filter(|s| s.clusters.contains(cluster)) {
            for (node, _) in &s.endpoints {
                let Some(pod) = st.pods.iter().find(|p| &p.node == node) else { continue };
                if !matches!(&lab.topo.members[node].role, Role::Node { cluster: c, .. } if c == cluster) {
                    continue;
                }
                let ready = st.endpoints.get(&endpoint_key(&s.key, node)).copied().unwrap_or(false);
                // One slice per address family, as Kubernetes has for a dual-stack service.
                for ip in pod.addresses() {
                    let (family, suffix) = if ip.is_ipv4() { ("IPv4", "") } else { ("IPv6", "-v6") };
                    let _ = write!(
                        eps,
                        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-lab-{node}{suffix}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nendpoints:\n- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions: {{ready: {ready}}}\nports:\n- {{name: probe, port: {port}, protocol: TCP}}\n",
                        name = s.name,
                        ns = s.namespace,
                        port = lab.topo.port,
                    );
                }
            }
        }
        let tmp = dir.join(".endpoints.yaml.tmp");
        std::fs::write(&tmp, eps)?;
        std::fs::rename(&tmp, dir.join("endpoints.yaml"))?;
    }
    Ok(())
}

fn endpoint_key(service: &str, node: &str) -> String {
    format!("{service}@{node}")
}

/// Creates each node's pods: a namespace attached by `ptp` with `bgpd-ipam`,
/// and a listener in it.
fn attach_pods(lab: &Lab, st: &mut State, bgpd: &Path) -> anyhow::Result<()> {
    let exe_dir = bgpd.parent().map(Path::to_path_buf).unwrap_or_default();
    let cni_path = format!("{}:{CNI_DIR}", exe_dir.display());
    let dual = lab.topo.dual_stack();
    for node in lab.topo.nodes() {
        let Role::Node { cluster, .. } = &node.role else { continue };
        let node_ns = lab.topo.netns(&node.name);
        for pod in lab.topo.pods(node) {
            let ns = lab.topo.netns(&pod);
            net::ip(&["netns", "add", &ns])?;
            net::ip_in(&ns, &["link", "set", "lo", "up"])?;
            if dual {
                // No duplicate address detection: ptp would wait for it.
                net::sysctls(&ns, &["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"])?;
            }
            let conf = serde_json::json!({
                "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp",
                "ipam": {
                    "type": "bgpd-ipam", "datastore": format!("file:{}", lab.cluster_dir(cluster).display()),
                    "nodename": node.name, "assign_ipv6": if dual { "true" } else { "false" },
                },
            });
            let out = cni(&node_ns, &ns, &pod, &cni_path, &conf.to_string())
                .with_context(|| format!("attaching pod {pod} on {} (ptp + bgpd-ipam)", node.name))?;
            let ips: Vec<IpAddr> = out["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
                .collect();
            let ip = ips.iter().find_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            });
            let ip = ip.with_context(|| format!("ptp gave pod {pod} no IPv4 address: {out}"))?;
            let ip6 = ips.iter().find_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            });
            if dual && ip6.is_none() {
                bail!(
                    "ptp gave pod {pod} no IPv6 address in a dual-stack lab (an IPv6 IPPool for {}?): {out}",
                    node.name
                );
            }
            st.pods.push(Pod { name: pod.clone(), node: node.name.clone(), ns: ns.clone(), ip, ip6 });
            let argv = vec![
                bgpd.display().to_string(),
                "lab".into(),
                "serve".into(),
                "--name".into(),
                pod.clone(),
                "--port".into(),
                lab.topo.port.to_string(),
            ];
            let log = lab.dir.join("pods").join(format!("{pod}.log"));
            std::fs::create_dir_all(log.parent().unwrap_or(&lab.dir))?;
            lab.start(st, &format!("{pod}/listener"), &ns, argv, log)?;
            let six = ip6.map(|a| format!(" {a}")).unwrap_or_default();
            println!("  pod {pod} on {}: {ip}{six}", node.name);
        }
    }
    Ok(())
}

/// Runs the ptp plugin (ADD) in the node's namespace for a pod.
fn cni(node_ns: &str, pod_ns: &str, pod: &str, cni_path: &str, conf: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns, &format!("{CNI_DIR}/ptp")])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", pod)
        .env("CNI_NETNS", format!("/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
        .env("CNI_PATH", cni_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run the ptp plugin")?;
    child.stdin.take().context("ptp stdin")?.write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("ptp failed: {} {}", text.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_str(&text).with_context(|| format!("ptp printed no JSON: {text}"))
}

fn node_argv(lab: &Lab, bgpd: &Path, node: &str) -> anyhow::Result<Vec<String>> {
    let Some(Role::Node { cluster, .. }) = lab.topo.members.get(node).map(|m| &m.role) else {
        bail!("{node} is not a node of lab {}", lab.topo.name)
    };
    let sock = lab.node_socket(node);
    std::fs::create_dir_all(sock.parent().unwrap_or(&lab.dir))?;
    Ok(vec![
        bgpd.display().to_string(),
        "run".into(),
        "--datastore".into(),
        format!("file:{}", lab.cluster_dir(cluster).display()),
        "--node".into(),
        node.into(),
        "--control-socket".into(),
        sock.display().to_string(),
        "--kernel-table".into(),
        "254".into(),
    ])
}

/// Starts a node's bgpd, with `extra` arguments for `bgpd run`.
fn start_node(lab: &Lab, st: &mut State, bgpd: &Path, node: &str, extra: &[&str]) -> anyhow::Result<()> {
    let mut argv = node_argv(lab, bgpd, node)?;
    argv.extend(extra.iter().map(|a| a.to_string()));
    let log = lab.dir.join("nodes").join(node).join("bgpd.log");
    lab.start(st, &format!("{node}/bgpd"), &lab.topo.netns(node), argv, log)
}

/// The datastore of a node's cluster, as the node reads it (with its IPAM blocks).
fn cluster_model(lab: &Lab, node: &str) -> anyhow::Result<bgpd::datastore::Model> {
    let Some(Role::Node { cluster, .. }) = lab.topo.members.get(node).map(|m| &m.role) else {
        bail!("{node} is not a node of lab {}", lab.topo.name)
    };
    let dir = lab.cluster_dir(cluster);
    let (model, _) = bgpd::datastore::load(&dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(model)
}

/// Starts Calico's BIRD on a node, configured as confd renders it from the
/// cluster's resources and the node's IPAM blocks ([`calico_bird`]).
fn start_calico_bird(lab: &Lab, st: &mut State, node: &str) -> anyhow::Result<()> {
    let conf = calico_bird::render(&cluster_model(lab, node)?, node)?;
    let dir = lab.dir.join("nodes").join(node);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bird.conf");
    std::fs::write(&path, conf)?;
    let s = |p: &Path| p.display().to_string();
    let argv = ["bird", "-f", "-c", &s(&path), "-s", &s(&lab.bird_socket(node)), "-P", &s(&dir.join("bird.pid"))];
    let argv: Vec<String> = argv.iter().map(|x| x.to_string()).collect();
    lab.start(st, &format!("{node}/bird"), &lab.topo.netns(node), argv, dir.join("bird.log"))
}

/// Marks one endpoint ready or not: the pod owns the service addresses (on
/// its loopback) and its node routes them to it while it is ready, as a
/// DSR-style stand-in for kube-proxy; the EndpointSlice says the same to bgpd.
fn set_endpoint(lab: &Lab, st: &mut State, service: &str, node: &str, ready: bool) -> anyhow::Result<()> {
    let s = lab.topo.services.iter().find(|s| s.key == service || s.name == service).context("no such lab service")?;
    let pod = st.pods.iter().find(|p| p.node == node).cloned().with_context(|| format!("{node} has no pod"))?;
    let node_ns = lab.topo.netns(node);
    for a in &s.addresses {
        let Some(via) = pod.address_like(a) else { continue };
        let addr = if a.is_ipv4() { format!("{a}/32") } else { format!("{a}/128") };
        let fam = if a.is_ipv4() { "-4" } else { "-6" };
        if ready {
            let _ = net::ip_in(&pod.ns, &[fam, "addr", "add", &addr, "dev", "lo"]);
            let route = [fam, "route", "replace", &addr, "via", &via.to_string(), "metric", SERVICE_ROUTE_METRIC];
            net::ip_in(&node_ns, &route)?;
        } else {
            let _ = net::ip_in(&node_ns, &[fam, "route", "del", &addr, "metric", SERVICE_ROUTE_METRIC]);
            let _ = net::ip_in(&pod.ns, &[fam, "addr", "del", &addr, "dev", "lo"]);
        }
    }
    st.endpoints.insert(endpoint_key(&s.key, node), ready);
    Ok(())
}

/// `bgpd lab down FILE`: stops every process in the lab's namespaces,
/// deletes the namespaces (and with them every link) and the state directory.
pub fn down(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    if !is_root() {
        bail!("the lab needs root");
    }
    let namespaces = net::namespaces(&lab.prefix());
    let mut stopped = 0;
    let mut pids: Vec<u32> = namespaces.iter().flat_map(|ns| net::pids_in(ns)).collect();
    if let Ok(st) = lab.read_state() {
        pids.extend(
            st.procs.iter().filter(|p| net::alive(p.pid, p.argv.first().map_or("", String::as_str))).map(|p| p.pid),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    std::thread::scope(|s| {
        for pid in &pids {
            s.spawn(move || net::stop(*pid));
        }
    });
    stopped += pids.len();
    for ns in &namespaces {
        let _ = net::ip(&["netns", "del", ns]);
    }
    let _ = std::fs::remove_dir_all(&lab.dir);
    let left = net::namespaces(&lab.prefix());
    println!(
        "lab {}: stopped {stopped} processes, removed {} namespaces{}",
        lab.topo.name,
        namespaces.len() - left.len(),
        if left.is_empty() { String::new() } else { format!("; LEFT: {}", left.join(" ")) }
    );
    Ok(left.is_empty())
}

/// `bgpd lab status FILE`.
pub fn status(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    println!("lab {} ({}), state in {}", lab.topo.name, st.template.display(), lab.dir.display());
    for p in &st.procs {
        let up = p.argv.first().map_or_else(|| net::pids_in(&p.ns).contains(&p.pid), |a| net::alive(p.pid, a));
        println!("  {:<24} pid {:<8} {}", p.name, p.pid, if up { "running" } else { "NOT RUNNING" });
    }
    for f in &st.faults {
        let how = if st.silent.contains(f) { " (silent)" } else { "" };
        println!("  fault in effect: {f}{how} (`bgpd lab recover {} {f}`)", file.display());
    }
    for n in &st.stopped {
        println!("  node down: {n} (`bgpd lab start {} {n}`)", file.display());
    }
    let (ok, report) = converge(&lab, &st, &bgpd, Duration::ZERO);
    print!("{report}");
    Ok(ok)
}
