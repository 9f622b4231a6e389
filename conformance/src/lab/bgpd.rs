//! bgpd, the implementation under test: its datastore file, the daemon, and
//! `bgpd show … --json` read back as JSON.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::{Lab, Ns, ProcId};

/// The bgpd binary ([`testgate::testbed::bgpd_binary`]: `$BGPD_BIN`, else
/// `target/<profile>/bgpd`, which `cargo test --workspace` builds). Panics
/// with what to do when it is missing.
pub fn binary() -> PathBuf {
    testgate::testbed::bgpd_binary(None).unwrap_or_else(|e| panic!("{e}"))
}

/// A BGPPeer of bgpd's datastore.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// `metadata.name`, also the name `bgpd show peers` reports.
    pub name: String,
    /// `spec.peerIP`: `10.0.0.1`, `10.0.0.1:1790`, `[fd00::1]:179`.
    pub peer_ip: String,
    /// `spec.asNumber`.
    pub asn: u32,
    /// `spec.localASNumber`.
    pub local_as: Option<u32>,
    /// TCP MD5 password (put in a Secret and referenced).
    pub password: Option<String>,
    /// `spec.keepaliveTime` (hold time is three times it).
    pub keepalive: Option<String>,
    /// `spec.ttlSecurity`.
    pub ttl_security: Option<u8>,
}

impl Peer {
    /// An eBGP or iBGP peer with keepalive 3 s (hold time 9 s).
    pub fn new(name: &str, peer_ip: &str, asn: u32) -> Peer {
        Peer { name: name.into(), peer_ip: peer_ip.into(), asn, keepalive: Some("3s".into()), ..Peer::default() }
    }
}

/// bgpd's datastore: one node with its addresses, AS, peers and IPAM blocks.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's name (`--node`).
    pub node: String,
    /// The cluster AS (`BGPConfiguration.spec.asNumber`).
    pub asn: u32,
    /// `Node.spec.bgp.ipv4Address` (`10.255.1.1/24`).
    pub ipv4: String,
    /// `Node.spec.bgp.ipv6Address`.
    pub ipv6: Option<String>,
    /// BGPPeers.
    pub peers: Vec<Peer>,
    /// CIDRs of IPAMBlocks affine to the node.
    pub blocks: Vec<String>,
}

impl Config {
    /// Node `node-1` (AS 64512) on link `n` of [`super::Lab::pair`]:
    /// 10.255.n.1/24 and fd00:255:n::1/64, advertising 10.244.n.0/26 and
    /// fd00:244:n::/122.
    pub fn on_link(n: u8, peers: Vec<Peer>) -> Config {
        Config {
            node: "node-1".into(),
            asn: 64512,
            ipv4: format!("10.255.{n}.1/24"),
            ipv6: Some(format!("fd00:255:{n}::1/64")),
            peers,
            blocks: vec![format!("10.244.{n}.0/26"), format!("fd00:244:{n}::/122")],
        }
    }

    /// Renders the datastore as a YAML stream.
    pub fn render(&self) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: {}, nodeToNodeMeshEnabled: false}}\n",
            self.asn
        );
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}}}\nspec: {{bgp: {{ipv4Address: {}",
            self.node, self.ipv4
        );
        if let Some(v6) = &self.ipv6 {
            let _ = write!(y, ", ipv6Address: \"{v6}\"");
        }
        y.push_str("}}\n");
        let secrets: Vec<&Peer> = self.peers.iter().filter(|p| p.password.is_some()).collect();
        if !secrets.is_empty() {
            y.push_str("---\napiVersion: v1\nkind: Secret\nmetadata: {name: bgp-secrets, namespace: kube-system}\nstringData:\n");
            for p in &secrets {
                let _ = writeln!(y, "  {}: {:?}", p.name, p.password.as_deref().unwrap_or_default());
            }
        }
        for p in &self.peers {
            let _ = write!(
                y,
                "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {}}}\nspec:\n  peerIP: \"{}\"\n  asNumber: {}\n",
                p.name, p.peer_ip, p.asn
            );
            if let Some(a) = p.local_as {
                let _ = writeln!(y, "  localASNumber: {a}");
            }
            if p.password.is_some() {
                let _ = writeln!(y, "  password: {{secretKeyRef: {{name: bgp-secrets, key: {}}}}}", p.name);
            }
            if let Some(k) = &p.keepalive {
                let _ = writeln!(y, "  keepaliveTime: \"{k}\"");
            }
            if let Some(t) = p.ttl_security {
                let _ = writeln!(y, "  ttlSecurity: {t}");
            }
        }
        for b in &self.blocks {
            let _ = write!(
                y,
                "---\napiVersion: crd.projectcalico.org/v1\nkind: IPAMBlock\nmetadata: {{name: {}}}\nspec: {{cidr: \"{b}\", affinity: \"host:{}\"}}\n",
                b.replace(['.', ':', '/'], "-").trim_matches('-'),
                self.node
            );
        }
        y
    }
}

/// A running bgpd.
pub struct Bgpd {
    /// Its process in the lab.
    pub proc: ProcId,
    sock: PathBuf,
    datastore: PathBuf,
    /// `--datastore` when it is not `file:` + `datastore` (see [`Bgpd::start_datastore`]).
    datastore_arg: Option<String>,
    /// More `bgpd run` arguments (see [`Bgpd::start_yaml_args`]).
    extra_args: Vec<String>,
    ns: Ns,
    node: String,
    tag: String,
}

impl Bgpd {
    /// Writes the datastore and starts `bgpd run` in `ns` (RUST_LOG=debug).
    pub fn start(lab: &Lab, ns: &Ns, tag: &str, cfg: &Config) -> io::Result<Bgpd> {
        Bgpd::start_yaml(lab, ns, tag, &cfg.node, &cfg.render())
    }

    fn spawn(&self, lab: &Lab) -> io::Result<ProcId> {
        let mut cmd = self.ns.command(&binary().to_string_lossy());
        let datastore = self.datastore_arg.clone().unwrap_or_else(|| format!("file:{}", self.datastore.display()));
        cmd.args(["run", "--datastore", &datastore])
            .args(["--node", &self.node, "--control-socket"])
            .arg(&self.sock)
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", std::env::var("BGPDC_LOG").unwrap_or_else(|_| "debug".into()));
        let proc = lab.spawn(&format!("{}-bgpd", self.tag), cmd)?;
        super::wait_for("bgpd's control socket", std::time::Duration::from_secs(10), || self.peers().map(|_| ()))
            .map_err(io::Error::other)?;
        Ok(proc)
    }

    /// Stops bgpd (SIGTERM) and starts it again with the same datastore.
    pub fn restart(&mut self, lab: &Lab) -> io::Result<()> {
        lab.stop(self.proc);
        self.proc = self.spawn(lab)?;
        Ok(())
    }

    /// Rewrites the datastore (bgpd re-reads it within a second).
    pub fn reconfigure(&self, cfg: &Config) -> io::Result<()> {
        // Write then rename, so bgpd never reads half a file.
        let tmp = self.datastore.with_extension("yaml.tmp");
        std::fs::write(&tmp, cfg.render())?;
        std::fs::rename(&tmp, &self.datastore)
    }

    fn show(&self, what: &[&str]) -> Result<Value, String> {
        let out = Command::new(binary())
            .arg("show")
            .args(what)
            .arg("--control-socket")
            .arg(&self.sock)
            .arg("--json")
            .output()
            .map_err(|e| format!("bgpd show: {e}"))?;
        if !out.status.success() {
            return Err(format!("bgpd show {what:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bgpd show {what:?}: not JSON: {e}"))
    }

    /// `bgpd show peers --json`, the `peers` array.
    pub fn peers(&self) -> Result<Vec<Value>, String> {
        let v = self.show(&["peers"])?;
        v.get("peers").and_then(Value::as_array).cloned().ok_or_else(|| format!("no \"peers\" array in {v}"))
    }

    /// One peer's status by name.
    pub fn peer(&self, name: &str) -> Result<Value, String> {
        self.peers()?.into_iter().find(|p| p["name"] == name).ok_or_else(|| format!("bgpd shows no peer {name:?}"))
    }

    /// `Ok` while the peer is not Established (for [`super::holds_for`]).
    pub fn not_established(&self, name: &str) -> Result<(), String> {
        let p = self.peer(name)?;
        if p["state"] == "Established" {
            Err(format!("peer {name} is Established"))
        } else {
            Ok(())
        }
    }

    /// The peer's status once it is Established (for [`super::wait_for`]).
    pub fn established(&self, name: &str) -> Result<Value, String> {
        let p = self.peer(name)?;
        if p["state"] == "Established" {
            Ok(p)
        } else {
            Err(format!(
                "peer {name} is {} (last_error {}, last_failure {})",
                p["state"], p["last_error"], p["last_failure"]
            ))
        }
    }

    /// `bgpd show routes --json`, the `routes` array.
    pub fn routes(&self) -> Result<Vec<Value>, String> {
        let v = self.show(&["routes"])?;
        v.get("routes").and_then(Value::as_array).cloned().ok_or_else(|| format!("no \"routes\" array in {v}"))
    }

    /// Whether bgpd has learned `prefix` from `peer` (for [`super::wait_for`]).
    pub fn has_route(&self, peer: &str, prefix: &str) -> Result<Value, String> {
        let routes = self.routes()?;
        routes
            .iter()
            .find(|r| r["peer"] == peer && r["prefix"] == prefix)
            .cloned()
            .ok_or_else(|| format!("no route {prefix} from {peer} among {} routes", routes.len()))
    }
}

impl Bgpd {
    /// Starts bgpd on a datastore the caller wrote as YAML (for objects
    /// [`Config`] does not render: BGPFilters, annotations, route reflector
    /// Nodes, peer selectors). `node` is the `--node` name.
    pub fn start_yaml(lab: &Lab, ns: &Ns, tag: &str, node: &str, yaml: &str) -> io::Result<Bgpd> {
        Bgpd::start_yaml_args(lab, ns, tag, node, yaml, &[])
    }

    /// [`Bgpd::start_yaml`] with more `bgpd run` arguments (`--take-over bird`), kept for
    /// every later start of this bgpd.
    pub fn start_yaml_args(lab: &Lab, ns: &Ns, tag: &str, node: &str, yaml: &str, args: &[&str]) -> io::Result<Bgpd> {
        let datastore = lab.dir().join(format!("{tag}-bgpd.yaml"));
        std::fs::write(&datastore, yaml)?;
        let mut b = Bgpd {
            proc: ProcId(usize::MAX),
            sock: lab.dir().join(format!("{tag}-bgpd.sock")),
            datastore,
            datastore_arg: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ns: ns.clone(),
            node: node.into(),
            tag: tag.into(),
        };
        b.proc = b.spawn(lab)?;
        Ok(b)
    }

    /// Starts bgpd on any `--datastore` (`etcd:URL`, …); [`Bgpd::reconfigure`]
    /// and [`Bgpd::reconfigure_yaml`] then write a file bgpd does not read.
    pub fn start_datastore(lab: &Lab, ns: &Ns, tag: &str, node: &str, datastore_arg: &str) -> io::Result<Bgpd> {
        let mut b = Bgpd {
            proc: ProcId(usize::MAX),
            sock: lab.dir().join(format!("{tag}-bgpd.sock")),
            datastore: lab.dir().join(format!("{tag}-bgpd.yaml")),
            datastore_arg: Some(datastore_arg.to_string()),
            extra_args: Vec::new(),
            ns: ns.clone(),
            node: node.into(),
            tag: tag.into(),
        };
        b.proc = b.spawn(lab)?;
        Ok(b)
    }

    /// Rewrites the datastore with `yaml` (write, then rename).
    pub fn reconfigure_yaml(&self, yaml: &str) -> io::Result<()> {
        let tmp = self.datastore.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.datastore)
    }

    /// Kills bgpd with SIGKILL (no NOTIFICATION, no clean-up: a crash) and
    /// starts it again at once with the same datastore and control socket.
    pub fn kill_and_restart(&mut self, lab: &Lab) -> io::Result<()> {
        self.kill(lab)?;
        self.start_again(lab)
    }

    /// Kills bgpd with SIGKILL (a crash) and waits until it is gone.
    pub fn kill(&self, lab: &Lab) -> io::Result<()> {
        lab.signal(self.proc, "KILL")?;
        super::wait_for("bgpd to die after SIGKILL", std::time::Duration::from_secs(5), || {
            if lab.running(self.proc) {
                Err("still running".into())
            } else {
                Ok(())
            }
        })
        .map_err(io::Error::other)?;
        lab.stop(self.proc);
        Ok(())
    }

    /// Starts bgpd again (after [`Bgpd::kill`]) with the same datastore,
    /// control socket and log.
    pub fn start_again(&mut self, lab: &Lab) -> io::Result<()> {
        self.proc = self.spawn(lab)?;
        Ok(())
    }

    /// `bgpd show routes PREFIX --json`, the `routes` array (every path of
    /// the prefixes within or containing `prefix`).
    pub fn routes_for(&self, prefix: &str) -> Result<Vec<Value>, String> {
        let v = self.show(&["routes", prefix])?;
        v.get("routes").and_then(Value::as_array).cloned().ok_or_else(|| format!("no \"routes\" array in {v}"))
    }

    /// `bgpd show bfd --json`, the `bfd` object (sessions by peer name, discards).
    pub fn bfd(&self) -> Result<Value, String> {
        let v = self.show(&["bfd"])?;
        v.get("bfd").cloned().ok_or_else(|| format!("no \"bfd\" object in {v}"))
    }

    /// `bgpd show peers --json` whole: the peers, the RIB line, the
    /// selection deferral (`deferral`, null when none) and the lifecycle.
    pub fn peers_view(&self) -> Result<Value, String> {
        self.show(&["peers"])
    }

    /// `bgpd stop --withdraw --drain SECS`: decommissions this node; returns
    /// what it printed once the daemon answered (it exits then).
    pub fn stop_withdraw(&self, drain_secs: u64) -> Result<String, String> {
        self.stop(&["--withdraw", "--drain", &drain_secs.to_string()])
    }

    /// `bgpd stop ARGS…`; returns what it printed once the daemon answered.
    pub fn stop(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(binary())
            .arg("stop")
            .args(args)
            .arg("--control-socket")
            .arg(&self.sock)
            .output()
            .map_err(|e| format!("bgpd stop: {e}"))?;
        if !out.status.success() {
            return Err(format!("bgpd stop {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The restart marker beside the control socket (`<node>.running`).
    pub fn marker(&self) -> PathBuf {
        self.sock.with_file_name(format!("{}.running", self.node))
    }

    /// `bgpd show WHAT…` as text (for failure messages); the error text
    /// instead when it fails.
    pub fn show_text(&self, what: &[&str]) -> String {
        match Command::new(binary()).arg("show").args(what).arg("--control-socket").arg(&self.sock).output() {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("bgpd show {what:?}: {e}"),
        }
    }

    /// The whole log of this bgpd (all its runs: the log is appended to).
    pub fn log(&self, lab: &Lab) -> String {
        std::fs::read_to_string(lab.dir().join(format!("{}-bgpd.log", self.tag))).unwrap_or_default()
    }
}

/// YAML documents for [`Bgpd::start_yaml`], each ending in a newline; join
/// them with [`doc::stream`].
pub mod doc {
    use std::fmt::Write as _;

    /// Joins documents into one YAML stream.
    pub fn stream(docs: &[String]) -> String {
        docs.join("---\n")
    }

    /// The default BGPConfiguration: cluster AS `asn`, no node-to-node mesh.
    pub fn bgp_configuration(asn: u32) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: {asn}, nodeToNodeMeshEnabled: false}}\n"
        )
    }

    /// A Node with `spec.bgp.ipv4Address` (`10.255.1.1/24`), labels, and
    /// optionally `routeReflectorClusterID`.
    pub fn node(name: &str, ipv4: &str, labels: &[(&str, &str)], cluster_id: Option<&str>) -> String {
        let mut y = format!("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n");
        if !labels.is_empty() {
            y.push_str("  labels:\n");
            for (k, v) in labels {
                let _ = writeln!(y, "    {k}: {v:?}");
            }
        }
        let _ = writeln!(y, "spec:\n  bgp:\n    ipv4Address: {ipv4}");
        if let Some(c) = cluster_id {
            let _ = writeln!(y, "    routeReflectorClusterID: {c}");
        }
        y
    }

    /// A BGPPeer with annotations and `spec` given as YAML lines (each
    /// indented by two spaces, e.g. `"  peerIP: 10.255.1.2\n  asNumber: 65001\n"`).
    pub fn peer(name: &str, annotations: &[(&str, &str)], spec: &str) -> String {
        let mut y = format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\n");
        if !annotations.is_empty() {
            y.push_str("  annotations:\n");
            for (k, v) in annotations {
                let _ = writeln!(y, "    {k}: {v:?}");
            }
        }
        let _ = write!(y, "spec:\n{spec}");
        y
    }

    /// A BGPFilter with `spec` given as YAML lines (indented by two spaces).
    pub fn filter(name: &str, spec: &str) -> String {
        format!("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: {name}\nspec:\n{spec}")
    }

    /// An IPAMBlock `cidr` affine to `node`.
    pub fn ipam_block(cidr: &str, node: &str) -> String {
        format!(
            "apiVersion: crd.projectcalico.org/v1\nkind: IPAMBlock\nmetadata: {{name: {}}}\nspec: {{cidr: \"{cidr}\", affinity: \"host:{node}\"}}\n",
            cidr.replace(['.', ':', '/'], "-").trim_matches('-')
        )
    }
    /// The default BGPConfiguration: cluster AS `asn`, no node-to-node mesh,
    /// and one `serviceClusterIPs` range.
    pub fn bgp_configuration_services(asn: u32, cluster_ips: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec:\n  asNumber: {asn}\n  nodeToNodeMeshEnabled: false\n  serviceClusterIPs: [{{cidr: {cluster_ips}}}]\n"
        )
    }

    /// A Node with `spec.bgp.ipv4Address` and its own `spec.bgp.asNumber`.
    pub fn node_with_as(name: &str, ipv4: &str, asn: u32) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n  bgp:\n    ipv4Address: {ipv4}\n    asNumber: {asn}\n"
        )
    }

    /// An IPPool `cidr` of /26 blocks.
    pub fn ip_pool(name: &str, cidr: &str) -> String {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, blockSize: 26}}\n")
    }

    /// A Service `default/NAME` of type ClusterIP with one cluster IP and
    /// `externalTrafficPolicy: Local`.
    pub fn service_local(name: &str, cluster_ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: ClusterIP\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  externalTrafficPolicy: Local\n"
        )
    }

    /// The EndpointSlice `default/SERVICE-1` of Service `default/SERVICE`: one
    /// IPv4 endpoint `address` on `node`, ready or not.
    pub fn endpoint_slice(service: &str, address: &str, node: &str, ready: bool) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nendpoints:\n- addresses: [{address}]\n  nodeName: {node}\n  conditions: {{ready: {ready}}}\n"
        )
    }
}
