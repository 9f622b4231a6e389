//! `bgpd-ipam`: a CNI IPAM plugin (CNI specification 1.0.0) on the bgpd IPAM,
//! and `bgpd-ipam show` for utilisation.
//!
//! As a plugin it is run by an interface plugin (ptp, bridge, …) with
//! `CNI_COMMAND` = ADD | DEL | CHECK | VERSION, the network configuration on
//! stdin and the pod in `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`).
//! Addresses belong to the handle `NETWORK.CONTAINERID`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::IpAddr;
use std::process::ExitCode;

use ipam::allocator::{Allocator, AssignRequest, AssignedIp, IpamError};
use ipam::annotations::{PodIpam, FLOATING_IPS};
use ipam::cni::{code, parse_cni_args, CniError, IpConfig, IpamResult, NetConf, Route, SUPPORTED_VERSIONS};
use ipam::model::Family;
use ipam::store::any::{AnyStore, DatastoreSpec, OpenError};
use ipam::store::StoreError;
use ipnet::IpNet;

const USAGE: &str = "usage: bgpd-ipam                      (as a CNI plugin: CNI_COMMAND etc. in the environment)
       bgpd-ipam show --datastore file:DIR|etcd:URL [--json]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bgpd-ipam: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.get(1).map(String::as_str) == Some("show") {
        return rt.block_on(show(&args[2..]));
    }
    if std::env::var_os("CNI_COMMAND").is_none() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut stdin = String::new();
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let read = if command == "VERSION" { Ok(0) } else { std::io::stdin().read_to_string(&mut stdin) };
    let outcome = match read {
        Err(e) => Err(CniError {
            cni_version: latest(),
            code: code::IO_FAILURE,
            msg: "cannot read network configuration from stdin".into(),
            details: e.to_string(),
        }),
        Ok(_) => rt.block_on(cni(&command, &stdin)),
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

fn latest() -> String {
    "1.0.0".to_string()
}

fn err(version: &str, code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError { cni_version: version.to_string(), code, msg: msg.into(), details: details.into() }
}

fn ipam_error(version: &str, e: IpamError) -> CniError {
    let code = match &e {
        IpamError::PoolsExhausted { .. } | IpamError::NoEligiblePool { .. } => code::NO_ADDRESS,
        IpamError::TooManyConflicts(_) => code::TRY_AGAIN,
        IpamError::Store(StoreError::Conflict(_)) => code::TRY_AGAIN,
        // The datastore holds something unusable: as for corrupt data.
        IpamError::Store(_) | IpamError::InvalidBlock(_) => code::IO_FAILURE,
        _ => code::BAD_REQUEST,
    };
    err(version, code, e.to_string(), "")
}

fn open_error(version: &str, e: OpenError) -> CniError {
    let code = match &e {
        OpenError::BadSpec(_) | OpenError::Design(_) => code::INVALID_CONFIG,
        OpenError::Store(_) => code::IO_FAILURE,
    };
    err(version, code, e.to_string(), "")
}

fn env(version: &str, name: &str) -> Result<String, CniError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(err(version, code::INVALID_ENV, format!("{name} is not set"), "")),
    }
}

/// Runs one CNI command; `Ok(Some(json))` is printed on stdout.
async fn cni(command: &str, stdin: &str) -> Result<Option<String>, CniError> {
    if command == "VERSION" {
        let v = serde_json::json!({"cniVersion": latest(), "supportedVersions": SUPPORTED_VERSIONS});
        return Ok(Some(v.to_string()));
    }
    let conf: NetConf = serde_json::from_str(stdin)
        .map_err(|e| err(&latest(), code::DECODE, "malformed network configuration", e.to_string()))?;
    let v = conf.cni_version.clone();
    if !SUPPORTED_VERSIONS.contains(&v.as_str()) {
        return Err(err(
            &latest(),
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {v:?} is not supported"),
            format!("supported: {SUPPORTED_VERSIONS:?}"),
        ));
    }
    if conf.ipam.kind != "bgpd-ipam" {
        return Err(err(
            &v,
            code::INVALID_CONFIG,
            format!("ipam.type is {:?}, expected \"bgpd-ipam\"", conf.ipam.kind),
            "",
        ));
    }
    let container = env(&v, "CNI_CONTAINERID")?;
    let handle = format!("{}.{container}", conf.name);
    let spec: DatastoreSpec = conf.ipam.datastore.parse().map_err(|e| open_error(&v, e))?;
    let (store, design) = spec.open().await.map_err(|e| open_error(&v, e))?;
    let alloc = Allocator::new(store, design);
    match command {
        "ADD" => add(&conf, &alloc, &handle).await.map(Some),
        "DEL" => {
            alloc.release_handle(&handle).await.map_err(|e| ipam_error(&v, e))?;
            Ok(None)
        }
        "CHECK" => check(&conf, &alloc, &handle).await.map(|()| None),
        other => {
            Err(err(&v, code::INVALID_ENV, format!("CNI_COMMAND {other:?} is not ADD, DEL, CHECK or VERSION"), ""))
        }
    }
}

fn node_name(conf: &NetConf) -> String {
    conf.ipam.nodename.clone().unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned())
}

async fn add(conf: &NetConf, alloc: &Allocator<AnyStore>, handle: &str) -> Result<String, CniError> {
    let v = conf.cni_version.as_str();
    let args =
        parse_cni_args(&std::env::var("CNI_ARGS").unwrap_or_default()).map_err(|e| err(v, code::INVALID_ENV, e, ""))?;
    let namespace = args.get("K8S_POD_NAMESPACE").cloned();
    let pod = args.get("K8S_POD_NAME").cloned();
    let node = node_name(conf);
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
        let released = alloc.release_handle(handle).await;
        return Err(err(
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
    let choices =
        PodIpam::from_annotations(pod_anns, ns_anns).map_err(|e| err(v, code::BAD_REQUEST, e.to_string(), ""))?;
    let req = AssignRequest {
        handle: handle.to_string(),
        node,
        namespace,
        pod,
        num_v4: u32::from(conf.ipam.assign_ipv4.is_none_or(|f| f.get())),
        num_v6: u32::from(conf.ipam.assign_ipv6.is_some_and(|f| f.get())),
        ipv4_pools: choices.ipv4_pools.clone().unwrap_or(conf.ipam.ipv4_pools.clone()),
        ipv6_pools: choices.ipv6_pools.clone().unwrap_or(conf.ipam.ipv6_pools.clone()),
        skip_first_address: true,
    };
    // Idempotent: an ADD retried after a crash (or repeated) completes what
    // the handle lacks and returns everything it holds, or fails and releases.
    let assigned =
        alloc.assign_handle(&req, &choices.ip_addrs, &choices.floating_ips).await.map_err(|e| ipam_error(v, e))?;
    let result = result_for(conf, &assigned);
    serde_json::to_string(&result).map_err(|e| err(v, code::IO_FAILURE, "cannot encode result", e.to_string()))
}

fn result_for(conf: &NetConf, assigned: &[AssignedIp]) -> IpamResult {
    let legacy = conf.cni_version != "1.0.0";
    let ips = assigned
        .iter()
        .map(|a| {
            let fam = Family::of(a.ip);
            IpConfig {
                // The block's prefix length: interface plugins such as ptp
                // route the prefix via the gateway (a /32 would leave them
                // without an on-link route to it).
                address: IpNet::new(a.ip, a.block.prefix_len()).unwrap_or(IpNet::from(a.ip)),
                gateway: Some(
                    match fam {
                        Family::V4 => conf.ipam.gateway_ipv4,
                        Family::V6 => conf.ipam.gateway_ipv6,
                    }
                    .unwrap_or(a.block.network()),
                ),
                version: legacy.then(|| if fam == Family::V4 { "4" } else { "6" }.to_string()),
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

async fn check(conf: &NetConf, alloc: &Allocator<AnyStore>, handle: &str) -> Result<(), CniError> {
    let v = conf.cni_version.as_str();
    let prev = conf.prev_result.as_ref().ok_or_else(|| err(v, code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let mut want: Vec<IpAddr> = Vec::new();
    for ip in prev.get("ips").and_then(|i| i.as_array()).into_iter().flatten() {
        let addr = ip
            .get("address")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse::<IpNet>().ok())
            .ok_or_else(|| err(v, code::DECODE, "prevResult.ips[].address is not a CIDR", ip.to_string()))?;
        want.push(addr.addr());
    }
    let have: Vec<IpAddr> =
        alloc.addresses_of(handle).await.map_err(|e| ipam_error(v, e))?.into_iter().map(|a| a.ip).collect();
    want.sort();
    let mut have_sorted = have.clone();
    have_sorted.sort();
    if want.is_empty() || want != have_sorted {
        return Err(err(
            v,
            code::CHECK_FAILED,
            format!("handle {handle} holds {have_sorted:?} but prevResult lists {want:?}"),
            "",
        ));
    }
    Ok(())
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
    let (store, design) = match spec.open().await {
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
