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
    let mut st = State { template: file.canonicalize().unwrap_or_else(|_| file.to_path_buf()), ..State::default() };
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
        start_node(&lab, &mut st, &bgpd, &node.name)?;
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
    print!("{}", settled_routes(&lab));
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

fn start_node(lab: &Lab, st: &mut State, bgpd: &Path, node: &str) -> anyhow::Result<()> {
    let argv = node_argv(lab, bgpd, node)?;
    let log = lab.dir.join("nodes").join(node).join("bgpd.log");
    lab.start(st, &format!("{node}/bgpd"), &lab.topo.netns(node), argv, log)
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

/// One check's outcome.
struct Check {
    what: String,
    ok: bool,
    detail: String,
}

/// A probe target and the answers that are right (the pods that may answer).
type Expect = (SocketAddr, Vec<String>);

/// Where probes go from: (source name, its namespace, its targets).
type Source = (String, String, Vec<Expect>);

/// The probes: (source name, its namespace) → (target, what answers are right).
fn probe_plan(lab: &Lab, st: &State) -> Vec<Source> {
    let port = lab.topo.port;
    let up = |p: &&Pod| !st.stopped.contains(&p.node);
    let mut sources: Vec<(String, String)> =
        st.pods.iter().filter(up).map(|p| (p.name.clone(), p.ns.clone())).collect();
    for m in lab.topo.members.values().filter(|m| matches!(m.role, Role::Host { .. })) {
        sources.push((m.name.clone(), lab.topo.netns(&m.name)));
    }
    let mut plan = Vec::new();
    for (src, ns) in sources {
        let mut targets = Vec::new();
        for p in st.pods.iter().filter(up).filter(|p| p.name != src) {
            for a in p.addresses() {
                targets.push((SocketAddr::new(a, port), vec![p.name.clone()]));
            }
        }
        for s in &lab.topo.services {
            let ready: Vec<String> = s
                .endpoints
                .iter()
                .filter(|(n, _)| st.endpoints.get(&endpoint_key(&s.key, n)).copied().unwrap_or(false))
                .filter(|(n, _)| !st.stopped.contains(n))
                .filter_map(|(n, _)| st.pods.iter().find(|p| &p.node == n).map(|p| p.name.clone()))
                .collect();
            if ready.is_empty() {
                continue;
            }
            for a in &s.addresses {
                targets.push((SocketAddr::from((*a, port)), ready.clone()));
            }
        }
        plan.push((src, ns, targets));
    }
    plan
}

fn run_checks(lab: &Lab, st: &State, bgpd: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    // Sessions over a link cut by `lab fail` (every link of a failed router,
    // or every member's link to a cut segment) are expected down.
    let failed: Vec<&spec::Member> = st.faults.iter().filter_map(|f| lab.topo.members.get(f)).collect();
    let mut dead: Vec<IpAddr> = Vec::new();
    for m in &failed {
        for seg in m.segments() {
            dead.extend(m.addresses_on(seg));
        }
    }
    for seg in lab.topo.segments.iter().filter(|s| st.faults.contains(&s.name)) {
        for m in &seg.members {
            dead.extend(lab.topo.members[m].addresses_on(&seg.name));
        }
    }
    // A stopped node is off: every session to it is expected down.
    for m in st.stopped.iter().filter_map(|n| lab.topo.members.get(n)) {
        for seg in m.segments() {
            dead.extend(m.addresses_on(seg));
        }
    }
    let failed_addr = |a: &str| a.parse::<SocketAddr>().is_ok_and(|a| dead.contains(&a.ip()));
    // Sessions, and no bgpd still restarting (selection deferral holds its
    // UPDATEs: it has not got its routes back to its peers yet).
    for r in
        lab.topo.routers().filter(|r| matches!(r.role, Role::Router { implementation: spec::Implementation::Bgpd, .. }))
    {
        if failed.iter().any(|f| f.name == r.name) {
            continue;
        }
        if let Some(v) = ask_peers(&routers::RouterFiles::new(&lab.dir, &r.name).bgpd_sock()) {
            checks.push(restart_check(&r.name, &v));
        }
    }
    for node in lab.topo.nodes().filter(|n| !st.stopped.contains(&n.name)) {
        match ask_peers(&lab.node_socket(&node.name)) {
            None => checks.push(Check {
                what: format!("{}: bgpd answers", node.name),
                ok: false,
                detail: format!(
                    "no answer on its control socket; log tail:\n{}",
                    net::tail(&lab.dir.join("nodes").join(&node.name).join("bgpd.log"), 8)
                ),
            }),
            Some(v) => {
                checks.push(restart_check(&node.name, &v));
                for p in v["peers"].as_array().into_iter().flatten() {
                    if failed_addr(p["address"].as_str().unwrap_or("")) {
                        continue;
                    }
                    let state = p["state"].as_str().unwrap_or("?");
                    checks.push(Check {
                        what: format!(
                            "{}: session {} ({})",
                            node.name,
                            p["name"].as_str().unwrap_or("?"),
                            p["address"].as_str().unwrap_or("?")
                        ),
                        ok: state == "Established",
                        detail: format!("{state} {}", p["last_failure"].as_str().unwrap_or("")),
                    });
                }
            }
        }
    }
    for r in lab.topo.routers().filter(|r| !failed.iter().any(|f| f.name == r.name)) {
        let sessions = lab.topo.router_sessions(r);
        for (s, (peer, up, info)) in sessions.iter().zip(routers::sessions_up(&lab.topo, r, &lab.dir)) {
            if dead.contains(&s.neighbor) || dead.contains(&s.local) {
                continue;
            }
            checks.push(Check { what: format!("{}: session {peer}", r.name), ok: up, detail: info });
        }
    }
    // Reachability.
    let plan = probe_plan(lab, st);
    let results: Vec<(Source, Vec<probe::Outcome>)> = std::thread::scope(|s| {
        let hs: Vec<_> = plan
            .into_iter()
            .map(|(src, ns, targets)| {
                s.spawn(move || {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", &ns]).arg(bgpd).args(["lab", "probe"]);
                    cmd.args(targets.iter().map(|(t, _)| t.to_string()));
                    let out = cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                    let outcomes = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
                    ((src, ns, targets), outcomes)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for ((src, ns, targets), outcomes) in results {
        for (t, want) in targets {
            let got = outcomes.iter().find(|o: &&probe::Outcome| o.target == t).map(|o| o.answer.clone());
            let (ok, detail) = match got {
                Some(Ok(a)) if want.contains(&a) => (true, format!("answered by {a}")),
                Some(Ok(a)) => (false, format!("answered by {a}, expected {}", want.join(" or "))),
                Some(Err(e)) => (false, e),
                None => (false, "the prober did not report".into()),
            };
            let detail = if ok { detail } else { format!("{detail}\n{}", trace(lab, st, &ns, t.ip())) };
            checks.push(Check { what: format!("{src} -> {t} ({})", want.join("|")), ok, detail });
        }
    }
    checks
}

/// The check that a bgpd is not in its selection deferral after a restart.
fn restart_check(name: &str, peers: &serde_json::Value) -> Check {
    let d = &peers["deferral"];
    let waiting: Vec<String> = d["waiting"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| format!("{} ({})", w[0].as_str().unwrap_or("?"), w[1].as_str().unwrap_or("?")))
        .collect();
    Check {
        what: format!("{name}: bgpd ready (no restart deferral)"),
        ok: d.is_null(),
        detail: format!("selection deferral waits for {}", waiting.join(", ")),
    }
}

/// `bgpd show peers --json` of the bgpd on `socket`, if it answers within 3 s.
fn ask_peers(socket: &Path) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let ask = bgpd::daemon::ask(socket, &bgpd::daemon::Request::Peers);
        tokio::time::timeout(Duration::from_secs(3), ask).await.ok().and_then(Result::ok)
    })
}

/// The routes on the path from `ns` to `dst`, hop by hop (`ip route get` in
/// each namespace, following the next hop to the member that owns it).
fn trace(lab: &Lab, st: &State, ns: &str, dst: std::net::IpAddr) -> String {
    let fam = if dst.is_ipv4() { "-4" } else { "-6" };
    let mut out = String::from("    path:");
    let mut here = ns.to_string();
    for _ in 0..8 {
        let route = net::ip_in(&here, &[fam, "route", "get", &dst.to_string()]).unwrap_or_else(|e| format!("{e}"));
        let line = route.lines().next().unwrap_or("").trim().to_string();
        let _ = write!(out, "\n      [{here}] {line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let via = words
            .iter()
            .position(|w| *w == "via")
            .and_then(|i| words.get(i + 1))
            .and_then(|a| a.parse::<IpAddr>().ok());
        let next = match via {
            Some(v) => match lab.topo.owner_of(v) {
                Some(m) => lab.topo.netns(&m.name),
                // A pod's gateway is its node's side of the ptp link.
                None => match st.pods.iter().find(|p| p.ns == here) {
                    Some(p) => lab.topo.netns(&p.node),
                    None => break,
                },
            },
            None => break,
        };
        if next == here {
            break;
        }
        here = next;
    }
    out
}

fn converge(lab: &Lab, st: &State, bgpd: &Path, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        let checks = run_checks(lab, st, bgpd);
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        if failed.is_empty() || start.elapsed() >= limit {
            let mut r = String::new();
            let sessions = checks.iter().filter(|c| c.what.contains(": session")).count();
            let probes = checks.iter().filter(|c| c.what.contains(" -> ")).count();
            let ready = checks.len() - sessions - probes;
            let _ = writeln!(
                r,
                "== checks: {} sessions, {} bgpd ready, {} probes; {} failed (after {:.1} s)",
                sessions,
                ready,
                probes,
                failed.len(),
                start.elapsed().as_secs_f64()
            );
            for c in &failed {
                let _ = writeln!(r, "FAIL {}: {}", c.what, c.detail);
            }
            return (failed.is_empty(), r);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The routes once they have held still for a second (at most 15 s): the
/// checks can pass on the first path while a second (ECMP) path is on its way.
fn settled_routes(lab: &Lab) -> String {
    let start = Instant::now();
    let mut last = routes_report(lab);
    while start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_secs(1));
        let now = routes_report(lab);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Each node's and router's kernel routes (the pods' own /32 links left out).
fn routes_report(lab: &Lab) -> String {
    let mut r = String::new();
    for m in lab.topo.members.values().filter(|m| !matches!(m.role, Role::Host { .. })) {
        let what = match &m.role {
            Role::Node { asn, .. } => format!("node, AS {asn}, bgpd"),
            Role::Router { implementation, asn, .. } => {
                format!("router, AS {asn}, {}", format!("{implementation:?}").to_lowercase())
            }
            Role::Host { .. } => String::new(),
        };
        let _ = writeln!(r, "== {} ({what}) routes", m.name);
        let ns = lab.topo.netns(&m.name);
        let mut table = net::ip_in(&ns, &["-4", "route", "show"]).unwrap_or_else(|e| e.to_string());
        if lab.topo.dual_stack() {
            table.push_str(&net::ip_in(&ns, &["-6", "route", "show"]).unwrap_or_else(|e| e.to_string()));
        }
        // A pod's own /32 on its ptp link is left out (one line per pod says
        // nothing), and so are IPv6 link-local and multicast routes.
        let noise = |l: &str| {
            (l.contains(" dev veth") && !l.contains("via")) || l.starts_with("fe80::") || l.starts_with("multicast ")
        };
        for l in table.lines().filter(|l| !noise(l)) {
            let _ = writeln!(r, "  {l}");
        }
    }
    r
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

/// What a drill acts on.
enum Target {
    Router(String),
    Segment(String),
    Endpoint { service: String, node: String },
}

fn target(lab: &Lab, what: &str) -> anyhow::Result<Target> {
    if let Some((service, node)) = what.split_once('@') {
        let s = lab.topo.services.iter().find(|s| s.key == service || s.name == service);
        let Some(s) = s else { bail!("no lab service {service:?} (spec.services)") };
        if !s.endpoints.iter().any(|(n, _)| n == node) {
            bail!("service {} has no lab endpoint on {node:?}", s.key);
        }
        return Ok(Target::Endpoint { service: s.key.clone(), node: node.into() });
    }
    if lab.topo.segments.iter().any(|s| s.name == what) {
        return Ok(Target::Segment(what.into()));
    }
    match lab.topo.members.get(what).map(|m| &m.role) {
        Some(Role::Router { .. }) => Ok(Target::Router(what.into())),
        _ => bail!("{what:?} is neither a router nor a segment of the lab, nor SERVICE@NODE"),
    }
}

/// `bgpd lab fail FILE TARGET [--silent]` and `bgpd lab recover FILE TARGET`:
/// cut (or restore) every link of a router, or one segment (a link), or turn
/// a service's endpoint on a node unready (or ready), while probing; then the
/// checks, and the probes lost. With `silent`, a router fails without losing
/// carrier: every packet in its namespace is dropped (iptables), as a hung
/// forwarding plane or a reload that keeps the links up would; only BFD (or
/// the hold timer) notices. `recover` undoes whichever failure is in effect.
pub fn fail(file: &Path, what: &str, recover: bool, silent: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let t = target(&lab, what)?;
    if silent && !matches!(t, Target::Router(_)) {
        bail!("--silent fails a router: {what:?} is a segment or an endpoint");
    }
    if !recover && st.faults.iter().any(|f| f == what) {
        bail!("{what} has failed already (`bgpd lab recover {} {what}` first)", file.display());
    }
    let endpoint = matches!(t, Target::Endpoint { .. });
    if recover && !endpoint && !st.faults.iter().any(|f| f == what) {
        bail!("{what} has not failed (`bgpd lab status {}` lists the faults in effect)", file.display());
    }
    let verb = match (recover, silent) {
        (true, _) => "recover",
        (false, true) => "fail (silent)",
        (false, false) => "fail",
    };
    let (ok, _) = drill(&lab, &mut st, &bgpd, &format!("{verb} {what}"), Drill::probing_all(300), |lab, st| {
        match &t {
            Target::Router(r) if st.silent.contains(r) || (silent && !recover) => {
                net::silence(&lab.topo.netns(r), !recover)?;
                st.silent.retain(|x| x != r);
                if !recover {
                    st.silent.push(r.clone());
                }
            }
            Target::Router(r) => {
                let m = &lab.topo.members[r];
                for seg in m.segments() {
                    net::ip_in(&lab.topo.netns(r), &["link", "set", seg, if recover { "up" } else { "down" }])?;
                }
            }
            Target::Segment(seg) => {
                let members = lab.topo.segments.iter().find(|s| s.name == *seg).map(|s| s.members.clone());
                for m in members.unwrap_or_default() {
                    net::ip_in(&lab.topo.netns(&m), &["link", "set", seg, if recover { "up" } else { "down" }])?;
                }
            }
            Target::Endpoint { service, node } => {
                set_endpoint(lab, st, service, node, recover)?;
                write_datastores(lab, st)?;
            }
        }
        st.faults.retain(|f| f != what);
        if !recover {
            st.faults.push(what.to_string());
        }
        Ok(())
    })?;
    Ok(ok)
}

/// The bgpd processes the lab runs: every node's (but stopped ones) and
/// every bgpd router's, by member name.
fn bgpd_members(lab: &Lab, st: &State) -> Vec<String> {
    let nodes = lab.topo.nodes().map(|n| n.name.clone()).filter(|n| !st.stopped.contains(n));
    let routers = lab
        .topo
        .routers()
        .filter(|r| matches!(r.role, Role::Router { implementation: spec::Implementation::Bgpd, .. }))
        .map(|r| r.name.clone());
    nodes.chain(routers).collect()
}

/// Stops `member`'s bgpd (SIGTERM: a graceful restart; with `kill`,
/// SIGKILL: a crash), waits until it is gone (SIGKILL after 10 s), and
/// returns its process record, removed from the state.
fn stop_bgpd(st: &mut State, member: &str, kill: bool) -> anyhow::Result<Proc> {
    let name = format!("{member}/bgpd");
    let i = st.procs.iter().position(|p| p.name == name).with_context(|| format!("{member}'s bgpd is not running"))?;
    let old = st.procs.remove(i);
    net::signal(old.pid, if kill { "KILL" } else { "TERM" });
    let exe = old.argv.first().cloned().unwrap_or_default();
    let t0 = Instant::now();
    while net::alive(old.pid, &exe) {
        if t0.elapsed() > Duration::from_secs(10) {
            net::signal(old.pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(old)
}

/// Starts a bgpd again as it ran before ([`stop_bgpd`]), its old log kept as `.log.1`.
fn start_bgpd(lab: &Lab, st: &mut State, old: &Proc) -> anyhow::Result<()> {
    let _ = std::fs::rename(&old.log, old.log.with_extension("log.1"));
    lab.start(st, &old.name, &old.ns, old.argv.clone(), old.log.clone())
}

/// `bgpd lab restart FILE TARGET… [--signal term|kill]`: stops the bgpd of
/// each node or bgpd router named (SIGTERM by default, as Kubernetes stops a
/// pod; SIGKILL as a crash), all at once, and starts them again. With
/// graceful restart the kernels keep their routes and the peers keep theirs,
/// so no probe may be lost.
pub fn restart(file: &Path, targets: &[String], kill: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let known = bgpd_members(&lab, &st);
    if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
        bail!("{t:?} is not a running node or bgpd router of lab {} ({})", lab.topo.name, known.join(", "));
    }
    let how = if kill { "SIGKILL" } else { "SIGTERM" };
    let what = format!("restart {}'s bgpd ({how})", targets.join(" and "));
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill::probing_all(300), |lab, st| {
        let old: Vec<Proc> = targets.iter().map(|t| stop_bgpd(st, t, kill)).collect::<anyhow::Result<_>>()?;
        old.iter().try_for_each(|p| start_bgpd(lab, st, p))
    })?;
    if lost > 0 {
        println!("restart lost {lost} probes (target: 0)");
    }
    Ok(ok && lost == 0)
}

/// `bgpd lab stop FILE NODE [--crash]`: takes a node down for good. By
/// default as an operator would: its bgpd decommissions (`bgpd stop
/// --withdraw`: routes sent with GRACEFUL_SHUTDOWN, a drain, then Cease);
/// with `crash`, SIGKILL. Then the machine goes off: its links go down, its
/// service endpoints turn unready, and its pods are no longer probed.
pub fn stop(file: &Path, node: &str, crash: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    if !lab.topo.nodes().any(|n| n.name == node) || st.stopped.iter().any(|n| n == node) {
        bail!("{node:?} is not a running node of lab {}", lab.topo.name);
    }
    let what = if crash { format!("{node} fails (SIGKILL, links down)") } else { format!("decommission {node}") };
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill { max_secs: 300, unprobed: Some(node) }, |lab, st| {
        if crash {
            stop_bgpd(st, node, true)?;
        } else {
            let sock = lab.node_socket(node);
            let out = Command::new(&bgpd)
                .args(["stop", "--withdraw", "--drain", &LAB_DRAIN.as_secs().to_string(), "--control-socket"])
                .arg(&sock)
                .output()
                .context("running bgpd stop --withdraw")?;
            if !out.status.success() {
                bail!("bgpd stop --withdraw on {node}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
            // It exits once decommissioned.
            stop_bgpd(st, node, false)?;
        }
        for seg in lab.topo.members[node].segments() {
            net::ip_in(&lab.topo.netns(node), &["link", "set", seg, "down"])?;
        }
        let keys: Vec<String> = lab.topo.services.iter().map(|s| s.key.clone()).collect();
        for k in keys {
            if st.endpoints.contains_key(&endpoint_key(&k, node)) {
                st.endpoints.insert(endpoint_key(&k, node), false);
            }
        }
        st.stopped.push(node.to_string());
        write_datastores(lab, st)
    })?;
    Ok(ok && lost == 0)
}

/// How long `lab stop` lets traffic move away from a decommissioned node.
const LAB_DRAIN: Duration = Duration::from_secs(3);

/// `bgpd lab start FILE NODE`: brings a node taken down by `stop` back: its
/// links up, its bgpd started (a clean start), its endpoints as the
/// template says.
pub fn start(file: &Path, node: &str) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    if !st.stopped.iter().any(|n| n == node) {
        bail!("{node:?} is not a node that `bgpd lab stop` took down");
    }
    let (ok, lost) =
        drill(&lab, &mut st, &bgpd, &format!("start {node} again"), Drill::probing_all(300), |lab, st| {
            for seg in lab.topo.members[node].segments() {
                net::ip_in(&lab.topo.netns(node), &["link", "set", seg, "up"])?;
            }
            st.stopped.retain(|n| n != node);
            for s in lab.topo.services.clone() {
                for (n, ready) in s.endpoints.iter().filter(|(n, _)| n == node) {
                    set_endpoint(lab, st, &s.key, n, *ready)?;
                }
            }
            write_datastores(lab, st)?;
            start_node(lab, st, &bgpd, node)
        })?;
    Ok(ok && lost == 0)
}

/// `bgpd lab upgrade FILE`: every node's and bgpd router's bgpd restarted
/// with SIGTERM, one at a time, each once the checks pass again after the
/// one before (its deferral over: a DaemonSet update with maxUnavailable 1
/// waits for readiness), probing throughout.
pub fn upgrade(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let members = bgpd_members(&lab, &st);
    let budget = 60 + 90 * members.len() as u64;
    let what = format!("upgrade: restart {} one at a time (SIGTERM)", members.join(", "));
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill::probing_all(budget), |lab, st| {
        for m in &members {
            let t0 = Instant::now();
            let old = stop_bgpd(st, m, false)?;
            start_bgpd(lab, st, &old)?;
            lab.save(st)?;
            let (ok, report) = converge(lab, st, &bgpd, CONVERGE);
            if !ok {
                print!("{report}");
                bail!("after restarting {m}'s bgpd the checks did not pass");
            }
            println!("  {m}: restarted and ready again in {:.1} s", t0.elapsed().as_secs_f64());
        }
        Ok(())
    })?;
    if lost > 0 {
        println!("upgrade lost {lost} probes (target: 0)");
    }
    Ok(ok && lost == 0)
}

/// How a drill probes.
struct Drill<'a> {
    /// The probers stop by themselves after this long.
    max_secs: u64,
    /// A node whose pods are not probed (the drill takes it down).
    unprobed: Option<&'a str>,
}

impl Drill<'_> {
    fn probing_all(max_secs: u64) -> Drill<'static> {
        Drill { max_secs, unprobed: None }
    }
}

/// Runs `event` while every source probes every target each 200 ms; waits
/// for the checks to pass again; reports the probes lost. Returns (checks
/// passed, probes lost).
fn drill(
    lab: &Lab,
    st: &mut State,
    bgpd: &Path,
    what: &str,
    drill: Drill<'_>,
    event: impl FnOnce(&Lab, &mut State) -> anyhow::Result<()>,
) -> anyhow::Result<(bool, u64)> {
    let stop = lab.dir.join("probe.stop");
    let _ = std::fs::remove_file(&stop);
    let max_secs = drill.max_secs;
    // The pods of a node the drill takes down are not probed (nor services
    // whose only endpoints are there).
    let mut view = st.clone();
    view.stopped.extend(drill.unprobed.map(str::to_string));
    let plan = probe_plan(lab, &view);
    let mut loops = Vec::new();
    for (src, ns, targets) in &plan {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bgpd).args(["lab", "probe", "--interval-ms", "200", "--stop-file"]);
        cmd.arg(&stop).args(["--max-secs", &max_secs.to_string()]).args(targets.iter().map(|(t, _)| t.to_string()));
        cmd.stdout(std::process::Stdio::piped());
        loops.push((src.clone(), cmd.spawn().context("cannot start a prober")?));
    }
    // The probers stop whatever happens below (they would probe on, to
    // their time limit, after a failed event).
    struct StopProbers<'a>(&'a Path);
    impl Drop for StopProbers<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, b"");
        }
    }
    let stop_guard = StopProbers(&stop);
    std::thread::sleep(Duration::from_secs(2));
    println!("lab {}: {what}", lab.topo.name);
    let t0 = Instant::now();
    let happened = event(lab, st);
    lab.save(st)?;
    happened?;
    let (ok, report) = converge(lab, st, bgpd, CONVERGE);
    let settled = t0.elapsed();
    // Keep probing a while after convergence: stale routes a peer sweeps at
    // End-of-RIB, or a late withdrawal, would show here.
    std::thread::sleep(Duration::from_secs(5));
    drop(stop_guard);
    let mut sent = 0;
    let mut lost = 0;
    let mut lines = String::new();
    // The longest failure window of any probed flow: (ms, source, target).
    let mut outage: Option<(u64, String, SocketAddr)> = None;
    for (src, child) in loops {
        let out = child.wait_with_output()?;
        let Some(c) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<probe::LoopCounts>(l).ok())
        else {
            let _ = writeln!(lines, "  {src}: the prober did not report");
            lost += 1;
            continue;
        };
        sent += c.sent;
        lost += c.failed;
        for (t, e, n) in &c.failures {
            let _ = writeln!(lines, "  {src} -> {t}: {n} lost ({e})");
        }
        for (t, ms) in &c.outages {
            if outage.as_ref().is_none_or(|(m, ..)| ms > m) {
                outage = Some((*ms, src.clone(), *t));
            }
        }
    }
    let _ = std::fs::remove_file(&stop);
    print!("{report}");
    println!(
        "drill {what}: checks {} {:.1} s after the event; {lost} of {sent} probes lost during it",
        if ok { "passed" } else { "FAILED" },
        settled.as_secs_f64()
    );
    if let Some((ms, src, t)) = &outage {
        println!("drill {what}: probes failed for {:.1} s at most ({src} -> {t})", *ms as f64 / 1000.0);
    }
    print!("{lines}");
    Ok((ok, lost))
}

/// `bgpd lab check FILE`: the checks once more (after a drill, say).
pub fn check(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let (ok, report) = converge(&lab, &st, &bgpd, CONVERGE);
    print!("{}", settled_routes(&lab));
    print!("{report}");
    Ok(ok)
}
