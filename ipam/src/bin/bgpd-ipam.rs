//! `bgpd-ipam`: a CNI IPAM plugin (CNI specification 1.1.0) on the bgpd IPAM,
//! and `bgpd-ipam show` for utilisation.
//!
//! As a plugin it is run by an interface plugin (ptp, bridge, …) with
//! `CNI_COMMAND` = ADD | DEL | CHECK | STATUS | GC | VERSION, the network
//! configuration on stdin and the pod in `CNI_ARGS` (`K8S_POD_NAMESPACE`,
//! `K8S_POD_NAME`). Addresses belong to the handle
//! `NETWORK.CONTAINERID.IFNAME` (see [`ipam::cni::handle_id`]).
//!
//! Every command runs within a deadline (`ipam.timeout_seconds`), and the
//! commands that write take a host-wide `flock` first (`ipam.lock_dir`), so
//! that the plugins of one node queue on the host instead of racing in the
//! datastore.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipam::allocator::{Allocator, AssignRequest, AssignedIp, Attachment, IpamError};
use ipam::annotations::{PodIpam, FLOATING_IPS};
use ipam::cni::{
    code, handle_id, has_status_and_gc, legacy_handle_id, legacy_result, node_name, parse_cni_args, request_version,
    stale_handles, CniError, Command, IpConfig, IpamResult, Limits, NetConf, ReleaseConf, Route, LATEST_VERSION,
    SUPPORTED_VERSIONS,
};
use ipam::metrics::{Gauges, Invocation};
use ipam::model::IpFamily;
use ipam::store::any::{self, AnyStore, DatastoreSpec, OpenError, SpecError};
use ipam::store::kube_design::Focus;
use ipam::store::{Object, Scope, Store, StoreError};
use ipnet::IpNet;

const USAGE: &str = "usage: bgpd-ipam                      (as a CNI plugin: CNI_COMMAND etc. in the environment)
       bgpd-ipam show --datastore file:DIR|etcd:URL|kubernetes[:KUBECONFIG] [--json]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("show") {
        return match runtime() {
            Ok(rt) => rt.block_on(show(&args[2..])),
            Err(e) => {
                eprintln!("bgpd-ipam: cannot start runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(command) = std::env::var_os("CNI_COMMAND") else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let command = command.to_string_lossy();
    let outcome = match Command::parse(&command) {
        None => Err(CniError::new(
            LATEST_VERSION,
            code::INVALID_ENV,
            format!("CNI_COMMAND {command:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"),
            "",
        )),
        // VERSION needs no stdin (the spec gives it only `cniVersion`).
        Some(Command::Version) => Ok(Some(version_answer())),
        Some(command) => {
            let started = Instant::now();
            let (outcome, metrics_dir, gauges) = read_and_run(command);
            if let Some(dir) = metrics_dir {
                let inv = Invocation {
                    command: Some(command),
                    seconds: started.elapsed().as_secs_f64(),
                    failure: outcome.as_ref().err().map(|e| e.code),
                    gauges,
                };
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                // The command's answer stands whatever happens to its metrics.
                if let Err(e) = ipam::metrics::write(&dir, &inv, now) {
                    eprintln!("bgpd-ipam: {e}");
                }
            }
            outcome
        }
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            // Serialising a struct of strings and integers cannot fail.
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn version_answer() -> String {
    serde_json::json!({"cniVersion": LATEST_VERSION, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The gauges a command saw (when metrics are written), set by the worker.
type GaugeSink = Mutex<Option<Gauges>>;

/// Records the gauges of `alloc` for `node` in `sink` (when metrics are on).
async fn see_gauges(sink: Option<&GaugeSink>, alloc: &Allocator<AnyStore>, node: &str) {
    let Some(sink) = sink else { return };
    if let Ok(u) = ipam::usage::usage(alloc.store(), alloc.design()).await {
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(Gauges::of(&u, node));
    }
}

/// Reads stdin and runs the command on a worker thread within its deadline;
/// returns its outcome, with where its metrics go (`ipam.metrics_dir`, when
/// the configuration could be read) and the gauges it saw.
fn read_and_run(command: Command) -> (Result<Option<String>, CniError>, Option<std::path::PathBuf>, Option<Gauges>) {
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
        let msg = "cannot read network configuration from stdin";
        return (Err(CniError::new(LATEST_VERSION, code::IO_FAILURE, msg, e.to_string())), None, None);
    }
    let value: serde_json::Value = match serde_json::from_str(&stdin) {
        Ok(v) => v,
        Err(e) => {
            let msg = "network configuration is not JSON";
            return (Err(CniError::new(LATEST_VERSION, code::DECODE, msg, e.to_string())), None, None);
        }
    };
    let limits = Limits::of(&value);
    let sink: Option<Arc<GaugeSink>> = limits.metrics_dir.as_ref().map(|_| Arc::new(Mutex::new(None)));
    let outcome = run_in_time(command, value, &limits, sink.clone());
    let gauges = sink.and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).take());
    (outcome, limits.metrics_dir.clone(), gauges)
}

/// Runs the command on a worker thread within its deadline.
fn run_in_time(
    command: Command,
    value: serde_json::Value,
    limits: &Limits,
    sink: Option<Arc<GaugeSink>>,
) -> Result<Option<String>, CniError> {
    let version = request_version(&value);
    // What the worker is doing, for the message if time runs out.
    let phase = Arc::new(Mutex::new("starting"));
    let (tx, rx) = mpsc::channel();
    let worker_phase = phase.clone();
    let worker_limits = limits.clone();
    std::thread::spawn(move || {
        let outcome = match runtime() {
            Ok(rt) => rt.block_on(run(command, value, &worker_limits, &worker_phase, sink.as_deref())),
            Err(e) => {
                Err(CniError::new(&request_version(&value), code::IO_FAILURE, "cannot start runtime", e.to_string()))
            }
        };
        // The receiver is gone only after the deadline, when nobody listens.
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(limits.timeout) {
        Ok(outcome) => outcome,
        // Returning ends the process and with it the worker, its locks and
        // connections. Every datastore commit is atomic, so what it leaves is
        // a state a retried command completes (ADD) or finishes (DEL, GC).
        Err(_) => {
            let doing = *phase.lock().unwrap_or_else(|p| p.into_inner());
            Err(CniError::new(
                &version,
                code::TRY_AGAIN,
                format!("timed out after {}s {doing}", limits.timeout.as_secs()),
                "ipam.timeout_seconds sets the time allowed",
            ))
        }
    }
}

fn set_phase(phase: &Mutex<&'static str>, now: &'static str) {
    *phase.lock().unwrap_or_else(|p| p.into_inner()) = now;
}

/// Parses the configuration the command needs, takes the host lock if it
/// writes, and runs it.
async fn run(
    command: Command,
    value: serde_json::Value,
    limits: &Limits,
    phase: &Mutex<&'static str>,
    sink: Option<&GaugeSink>,
) -> Result<Option<String>, CniError> {
    let version = request_version(&value);
    let attachment_env = |network: &str| -> Result<Attachment, CniError> {
        let container_id = env(&version, "CNI_CONTAINERID")?;
        let ifname = env(&version, "CNI_IFNAME")?;
        ipam::cni::check_container_id(&container_id).map_err(|e| CniError::new(&version, code::INVALID_ENV, e, ""))?;
        ipam::cni::check_ifname(&ifname).map_err(|e| CniError::new(&version, code::INVALID_ENV, e, ""))?;
        Ok(Attachment { network: network.to_string(), container_id, ifname })
    };
    match command {
        Command::Add | Command::Check | Command::Status => {
            let conf = NetConf::parse(value)?;
            if command == Command::Status && !has_status_and_gc(&conf.cni_version) {
                return Err(too_old(&conf.cni_version, "STATUS"));
            }
            let attachment = if command.per_attachment() { Some(attachment_env(&conf.name)?) } else { None };
            let _lock = if command.writes() { Some(host_lock(&conf.cni_version, limits, phase)?) } else { None };
            set_phase(phase, "waiting for the datastore");
            let node = node_of(conf.ipam.nodename.as_deref(), conf.ipam.nodename_file.as_deref());
            match (command, attachment) {
                (Command::Add, Some(a)) => add(&conf, &a, node, sink).await.map(Some),
                (Command::Check, Some(a)) => check(&conf, &a, &node).await.map(|()| None),
                _ => status(&conf, &node, sink).await.map(|()| None),
            }
        }
        Command::Del | Command::Gc => {
            let conf = ReleaseConf::parse(&value)?;
            if command == Command::Gc && !has_status_and_gc(&version) {
                return Err(too_old(&version, "GC"));
            }
            let attachment = if command.per_attachment() { Some(attachment_env(&conf.name)?) } else { None };
            let _lock = host_lock(&version, limits, phase)?;
            set_phase(phase, "waiting for the datastore");
            match attachment {
                Some(a) => del(&version, &conf, &a).await.map(|()| None),
                None => gc(&version, &conf).await.map(|()| None),
            }
        }
        Command::Version => Ok(Some(version_answer())),
    }
}

fn too_old(version: &str, command: &str) -> CniError {
    CniError::new(
        version,
        code::INCOMPATIBLE_VERSION,
        format!("{command} needs cniVersion 1.1.0 or later; the configuration says {version}"),
        "",
    )
}

fn env(version: &str, name: &str) -> Result<String, CniError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(CniError::new(version, code::INVALID_ENV, format!("{name} is not set"), "")),
    }
}

fn node_of(nodename: Option<&str>, nodename_file: Option<&std::path::Path>) -> String {
    node_name(
        nodename,
        nodename_file,
        |p| std::fs::read_to_string(p).ok(),
        || rustix::system::uname().nodename().to_string_lossy().into_owned(),
    )
}

/// Takes the host-wide lock (blocking; the deadline bounds the wait). Held
/// until the returned file is dropped or the process ends.
fn host_lock(version: &str, limits: &Limits, phase: &Mutex<&'static str>) -> Result<File, CniError> {
    let path = &limits.lock_file;
    let fail = |what: &str, e: std::io::Error| {
        CniError::new(version, code::IO_FAILURE, format!("host lock {}: {what}", path.display()), e.to_string())
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| fail("cannot open", e))?;
    set_phase(phase, "waiting for the host lock (another bgpd-ipam holds it)");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| fail("cannot lock", e.into()))?;
    Ok(f)
}

fn ipam_error(version: &str, e: IpamError) -> CniError {
    let code = match &e {
        IpamError::PoolsExhausted { .. } | IpamError::NoEligiblePool { .. } => code::NO_ADDRESS,
        IpamError::TooManyConflicts(_) => code::TRY_AGAIN,
        IpamError::Store(StoreError::Conflict(_) | StoreError::Busy { .. }) => code::TRY_AGAIN,
        // The network configuration names a store Calico's IPAM uses.
        IpamError::Store(StoreError::Calico(_)) => code::INVALID_CONFIG,
        // The datastore holds something unusable: as for corrupt data.
        IpamError::Store(_) | IpamError::InvalidBlock(_) => code::IO_FAILURE,
        _ => code::BAD_REQUEST,
    };
    CniError::new(version, code, e.to_string(), "")
}

fn open_error(version: &str, e: OpenError) -> CniError {
    let code = match &e {
        OpenError::BadSpec(_) | OpenError::Design(_) | OpenError::Store(StoreError::Calico(_)) => code::INVALID_CONFIG,
        OpenError::Store(StoreError::Busy { .. }) => code::TRY_AGAIN,
        OpenError::Store(_) => code::IO_FAILURE,
    };
    CniError::new(version, code, e.to_string(), "")
}

fn store_error(version: &str, e: StoreError) -> CniError {
    let code = match e {
        StoreError::Calico(_) => code::INVALID_CONFIG,
        StoreError::Busy { .. } => code::TRY_AGAIN,
        _ => code::IO_FAILURE,
    };
    CniError::new(version, code, e.to_string(), "")
}

/// Refuses a store Calico's IPAM uses (code 7: the network configuration
/// names a datastore bgpd-ipam cannot use), reading every block once.
async fn refuse_shared(version: &str, store: &AnyStore) -> Result<(), CniError> {
    ipam::store::owner::refuse_shared(store).await.map_err(|e| store_error(version, e))
}

/// The `file:` store refuses a directory it cannot lock (or one on a
/// network filesystem) before anything is read or written.
fn check_writable(version: &str, store: &AnyStore) -> Result<(), CniError> {
    match store {
        AnyStore::File(f) => f.check_lockable().map_err(|e| store_error(version, e)),
        AnyStore::Etcd(_) | AnyStore::Kube(_) => Ok(()),
    }
}

/// An allocator over the datastore with its design; of the cluster's Nodes and
/// Pods, a `kubernetes` datastore reads only those of `focus`.
async fn open_all(conf: &NetConf, focus: &Focus) -> Result<Allocator<AnyStore>, CniError> {
    let v = conf.cni_version.as_str();
    let spec: DatastoreSpec = conf.ipam.datastore.parse().map_err(|e: SpecError| open_error(v, e.into()))?;
    let (store, design) = any::open_for(&spec, focus).await.map_err(|e| open_error(v, e))?;
    Ok(Allocator::new(store, design))
}

async fn add(
    conf: &NetConf,
    attachment: &Attachment,
    node: String,
    sink: Option<&GaugeSink>,
) -> Result<String, CniError> {
    let v = conf.cni_version.as_str();
    let args = parse_cni_args(&std::env::var("CNI_ARGS").unwrap_or_default())
        .map_err(|e| CniError::new(v, code::INVALID_ENV, e, ""))?;
    let namespace = args.get("K8S_POD_NAMESPACE").cloned();
    let pod = args.get("K8S_POD_NAME").cloned();
    let focus = Focus { node: Some(node.clone()), pod: namespace.clone().zip(pod.clone()) };
    let alloc = open_all(conf, &focus).await?;
    check_writable(v, alloc.store())?;
    refuse_shared(v, alloc.store()).await?;
    let handle = handle_id(attachment);
    let design = alloc.design();
    let empty = BTreeMap::new();
    let pod_anns = match (&namespace, &pod) {
        (Some(ns), Some(p)) => design.pods.get(&(ns.clone(), p.clone())).map(|p| &p.annotations).unwrap_or(&empty),
        _ => &empty,
    };
    let ns_anns = namespace.as_ref().and_then(|ns| design.namespaces.get(ns)).map(|n| &n.annotations).unwrap_or(&empty);
    // As Calico: a pod asking for floating IPs is refused unless the network
    // configuration enables them (whatever the annotation's value holds).
    let wants_floating = pod_anns.get(FLOATING_IPS).is_some_and(|a| !a.is_empty());
    if wants_floating && !conf.feature_control.floating_ips {
        // Release what an earlier attempt of this ADD may have assigned; if
        // that fails too, say so after the refusal.
        let released = alloc.release_handle(&handle).await;
        return Err(CniError::new(
            v,
            code::BAD_REQUEST,
            format!(
                "requested feature is not enabled: floating_ips (pod {}/{} has the annotation {FLOATING_IPS}; \
                 the network configuration needs \"feature_control\": {{\"floating_ips\": true}})",
                namespace.as_deref().unwrap_or_default(),
                pod.as_deref().unwrap_or_default()
            ),
            released.err().map(|e| format!("releasing handle {handle}: {e}")).unwrap_or_default(),
        ));
    }
    let choices = PodIpam::from_annotations(pod_anns, ns_anns)
        .map_err(|e| CniError::new(v, code::BAD_REQUEST, e.to_string(), ""))?;
    let req = AssignRequest {
        handle: handle.clone(),
        node,
        namespace,
        pod,
        num_v4: u32::from(conf.ipam.assign_ipv4.is_none_or(|f| f.get())),
        num_v6: u32::from(conf.ipam.assign_ipv6.is_some_and(|f| f.get())),
        ipv4_pools: choices.ipv4_pools.clone().unwrap_or(conf.ipam.ipv4_pools.clone()),
        ipv6_pools: choices.ipv6_pools.clone().unwrap_or(conf.ipam.ipv6_pools.clone()),
        skip_first_address: true,
        attachment: Some(attachment.clone()),
    };
    // Idempotent: an ADD retried after a crash (or repeated) completes what
    // the handle lacks and returns everything it holds, or fails and releases.
    let assigned = alloc.assign_handle(&req, &choices.ip_addrs, &choices.floating_ips).await;
    see_gauges(sink, &alloc, &req.node).await;
    let assigned = assigned.map_err(|e| ipam_error(v, e))?;
    let result = result_for(conf, &assigned);
    serde_json::to_string(&result)
        .map_err(|e| CniError::new(v, code::IO_FAILURE, "cannot encode result", e.to_string()))
}

fn result_for(conf: &NetConf, assigned: &[AssignedIp]) -> IpamResult {
    let legacy = legacy_result(&conf.cni_version);
    let ips = assigned
        .iter()
        .map(|a| {
            let fam = IpFamily::of(a.ip);
            IpConfig {
                // The block's prefix length: interface plugins such as ptp
                // route the prefix via the gateway (a /32 would leave them
                // without an on-link route to it).
                address: IpNet::new(a.ip, a.block.prefix_len()).unwrap_or(IpNet::from(a.ip)),
                gateway: Some(
                    match fam {
                        IpFamily::V4 => conf.ipam.gateway_ipv4,
                        IpFamily::V6 => conf.ipam.gateway_ipv6,
                    }
                    .unwrap_or(a.block.network()),
                ),
                version: legacy.then(|| if fam == IpFamily::V4 { "4" } else { "6" }.to_string()),
            }
        })
        .collect();
    let routes = conf.ipam.routes.clone().unwrap_or_else(|| {
        let mut r = Vec::new();
        if assigned.iter().any(|a| a.ip.is_ipv4()) {
            r.push(Route { dst: "0.0.0.0/0".parse().unwrap_or_default(), gw: None });
        }
        if assigned.iter().any(|a| a.ip.is_ipv6()) {
            r.push(Route { dst: "::/0".parse().unwrap_or_default(), gw: None });
        }
        r
    });
    IpamResult { cni_version: conf.cni_version.clone(), ips, routes, dns: serde_json::json!({}) }
}

/// An allocator over `datastore` that can release and nothing more: the
/// store opened without reading the design (releasing needs none, and a
/// broken one must not stop a DEL or GC). `None` when a `file:` datastore
/// does not exist: nothing was ever assigned from it here.
async fn releaser(version: &str, datastore: &str) -> Result<Option<Allocator<AnyStore>>, CniError> {
    let spec: DatastoreSpec = datastore.parse().map_err(|e: SpecError| open_error(version, e.into()))?;
    if let DatastoreSpec::File(path) = &spec {
        if !path.exists() {
            return Ok(None);
        }
    }
    let store = any::open_store(&spec).await.map_err(|e| open_error(version, e))?;
    check_writable(version, &store)?;
    Ok(Some(Allocator::new(store, ipam::Design::default())))
}

/// DEL: releases the attachment's handle, and the container's handle of
/// before attachments had their own ([`legacy_handle_id`]), reading nothing
/// but the store. Nothing to release (no handle, no datastore directory) is
/// success.
async fn del(version: &str, conf: &ReleaseConf, attachment: &Attachment) -> Result<(), CniError> {
    let Some(alloc) = releaser(version, &conf.datastore).await? else { return Ok(()) };
    let mut handles = vec![handle_id(attachment)];
    handles.extend(legacy_handle_id(&attachment.network, &attachment.container_id));
    let mut first_error = None;
    for h in handles {
        if let Err(e) = alloc.release_handle(&h).await {
            first_error.get_or_insert(ipam_error(version, e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// GC: releases every handle of this network on this node whose attachment is
/// not in `cni.dev/valid-attachments` ([`stale_handles`]), as many as it can,
/// then reports the first failure. Of a store Calico's IPAM shares, only
/// bgpd-ipam's own blocks are read: GC still frees what bgpd-ipam leaked
/// (ADD and STATUS refuse such a store).
async fn gc(version: &str, conf: &ReleaseConf) -> Result<(), CniError> {
    let node = node_of(conf.nodename.as_deref(), conf.nodename_file.as_deref());
    let Some(alloc) = releaser(version, &conf.datastore).await? else { return Ok(()) };
    // Only bgpd-ipam's own blocks: Calico's are never read, let alone released.
    let (blocks, calico) = alloc.store().list_own(&Scope::Blocks).await.map_err(|e| store_error(version, e))?;
    for c in &calico {
        eprintln!("bgpd-ipam GC: left alone: {c}");
    }
    let blocks: Vec<_> = blocks
        .into_iter()
        .filter_map(|v| match v.value {
            // An invalid block is left for an operator, as the allocator's
            // release and GC leave it.
            Object::Block(b) if alloc.validate_block(&b).is_ok() => Some(b),
            _ => None,
        })
        .collect();
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let stale = stale_handles(&conf.name, &node, &valid, blocks.iter().flat_map(|b| b.allocated().map(|(_, a)| a)));
    let mut first_error = None;
    for h in &stale {
        match alloc.release_handle(h).await {
            Ok(freed) => eprintln!("bgpd-ipam GC: released handle {h} ({freed:?})"),
            Err(e) => {
                first_error.get_or_insert(ipam_error(version, e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn check(conf: &NetConf, attachment: &Attachment, node: &str) -> Result<(), CniError> {
    let v = conf.cni_version.as_str();
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(v, code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let mut want: Vec<IpAddr> = Vec::new();
    for ip in prev.get("ips").and_then(|i| i.as_array()).into_iter().flatten() {
        let addr =
            ip.get("address").and_then(|a| a.as_str()).and_then(|a| a.parse::<IpNet>().ok()).ok_or_else(|| {
                CniError::new(v, code::DECODE, "prevResult.ips[].address is not a CIDR", ip.to_string())
            })?;
        want.push(addr.addr());
    }
    let alloc = open_all(conf, &Focus { node: Some(node.to_string()), pod: None }).await?;
    // A pod created before attachments had handles of their own holds its
    // addresses under the container's handle.
    let mut handle = handle_id(attachment);
    let mut have = alloc.addresses_of(&handle).await.map_err(|e| ipam_error(v, e))?;
    if let (true, Some(legacy)) = (have.is_empty(), legacy_handle_id(&attachment.network, &attachment.container_id)) {
        have = alloc.addresses_of(&legacy).await.map_err(|e| ipam_error(v, e))?;
        handle = legacy;
    }
    let mut have: Vec<IpAddr> = have.into_iter().map(|a| a.ip).collect();
    want.sort();
    have.sort();
    if want.is_empty() || want != have {
        return Err(CniError::new(
            v,
            code::CHECK_FAILED,
            format!("handle {handle} holds {have:?} but prevResult lists {want:?}"),
            "",
        ));
    }
    Ok(())
}

/// STATUS (CNI 1.1): success when the datastore answers and, for each family
/// the configuration assigns, a pool this node may use has room (see
/// [`room`]); code 50 otherwise, saying why.
async fn status(conf: &NetConf, node: &str, sink: Option<&GaugeSink>) -> Result<(), CniError> {
    let v = conf.cni_version.as_str();
    let unavailable = |msg: String, details: String| CniError::new(v, code::NOT_AVAILABLE, msg, details);
    let alloc = open_all(conf, &Focus { node: Some(node.to_string()), pod: None })
        .await
        .map_err(|e| unavailable(format!("the datastore cannot be used: {}", e.msg), e.details))?;
    check_writable(v, alloc.store())
        .map_err(|e| unavailable(format!("the datastore cannot be written: {}", e.msg), e.details))?;
    refuse_shared(v, alloc.store()).await.map_err(|e| unavailable(e.msg, e.details))?;
    let usage = ipam::usage::usage(alloc.store(), alloc.design())
        .await
        .map_err(|e| unavailable(format!("the datastore does not answer: {e}"), String::new()))?;
    if let Some(sink) = sink {
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(Gauges::of(&usage, node));
    }
    let families = [
        (IpFamily::V4, conf.ipam.assign_ipv4.is_none_or(|f| f.get()), &conf.ipam.ipv4_pools),
        (IpFamily::V6, conf.ipam.assign_ipv6.is_some_and(|f| f.get()), &conf.ipam.ipv6_pools),
    ];
    for (family, wanted, requested) in families {
        if !wanted {
            continue;
        }
        let pools = alloc
            .eligible_pools(family, requested, node, None)
            .map_err(|e| unavailable(format!("node {node:?} cannot be served: {e}"), String::new()))?;
        if !pools.iter().any(|p| room(&usage, alloc.design(), p, node)) {
            let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            return Err(unavailable(
                format!("no room for an {family} address on node {node:?}: pools {} are full", names.join(", ")),
                String::new(),
            ));
        }
    }
    Ok(())
}

/// Whether `pool` can give `node` an address, as assignment would find one: a
/// free address (other than the block's first, the gateway) in a block of
/// the node, or in another node's block when borrowing is allowed; or a
/// block the node may still claim.
fn room(usage: &ipam::usage::Usage, design: &ipam::Design, pool: &ipam::model::IpPool, node: &str) -> bool {
    let strict = design.config.strict_affinity;
    let free_block = usage
        .blocks
        .iter()
        .any(|b| pool.cidr.contains(&b.cidr) && b.used + 1 < b.total && (!strict || b.node.as_deref() == Some(node)));
    let node_blocks = usage.nodes.iter().find(|n| n.node == node).map_or(0, |n| n.blocks);
    let may_claim = design.config.auto_allocate_blocks
        && design.config.max_blocks_per_host.is_none_or(|max| node_blocks < max as usize)
        && usage.pools.iter().any(|p| p.name == pool.name && p.blocks_claimed < p.blocks_total);
    free_block || may_claim
}

async fn show(args: &[String]) -> ExitCode {
    let mut datastore = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--datastore" => datastore = it.next().cloned(),
            "--json" => json = true,
            s if s.starts_with("--datastore=") => datastore = s.strip_prefix("--datastore=").map(str::to_string),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(ds) = datastore else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let spec: DatastoreSpec = match ds.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bgpd-ipam: {e}");
            return ExitCode::from(2);
        }
    };
    let (store, design) = match any::open(&spec).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bgpd-ipam: {e}");
            return ExitCode::FAILURE;
        }
    };
    match ipam::usage::usage(&store, &design).await {
        Ok(u) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&u).unwrap_or_default());
            } else {
                print!("{}", u.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bgpd-ipam: {e}");
            ExitCode::FAILURE
        }
    }
}
