//! The control socket: `bgpd show …` asks the running daemon over a Unix
//! socket (one JSON request line, one JSON answer), the role `birdc` and
//! `calicoctl node status` play for BIRD.

use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use super::status::Shared;

/// A request to the daemon.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// Peers and their sessions.
    Peers,
    /// Learned routes, optionally those matching a prefix.
    Routes {
        /// Only routes within (or containing) this prefix.
        prefix: Option<IpNet>,
    },
    /// What this node originates and why.
    Originations,
    /// Why a prefix is or is not advertised to each peer and in the kernel.
    Explain {
        /// The prefix (exactly; host bits are cleared).
        prefix: IpNet,
        /// Only this peer (by name).
        peer: Option<String>,
    },
    /// The configuration as loaded, with its problems.
    Config,
    /// The kernel table bgpd programs: what it wants there and what fails.
    Fib,
    /// The BFD sessions.
    Bfd,
    /// The node's status as `calicoctl node status` shows it; the answer is
    /// the `status` a CalicoNodeStatus gets, every class.
    Status,
    /// Stop the daemon ([`StopHow`]); answered when done.
    Stop {
        /// A restart, a deliberate stop, or a decommission.
        how: StopHow,
        /// With [`StopHow::Withdraw`]: how long to let traffic move before
        /// the sessions close (the daemon's `--drain-time` when absent).
        drain_secs: Option<u64>,
    },
}

/// How `bgpd stop` stops the daemon.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StopHow {
    /// As SIGTERM: a restart. Peers keep the routes as graceful restart
    /// helpers, the kernel keeps its routes, the restart marker stays.
    Restart,
    /// A deliberate stop, not a restart: Cease to every peer at once (they
    /// drop the routes), the kernel routes and the restart marker removed,
    /// so the next start is a clean one.
    Stop,
    /// Decommission: routes sent again with GRACEFUL_SHUTDOWN, a drain for
    /// traffic to move, then as [`StopHow::Stop`].
    Withdraw,
}

/// What the control socket asks of the daemon's main loop.
#[derive(Debug)]
pub enum LifecycleCmd {
    /// `bgpd stop`, answered on `reply` when done.
    Stop {
        /// How.
        how: StopHow,
        /// Drain time for a decommission.
        drain: Option<std::time::Duration>,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<serde_json::Value>,
    },
}

/// What the control socket answers from: the shared status (data only) and
/// the tasks it asks (the RIB task for routes and explanations, the main
/// loop for `bgpd stop`), absent until the daemon has started them.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// The daemon's status.
    pub shared: Shared,
    /// The RIB task.
    pub rib: Option<super::rib::RibHandle>,
    /// The main loop.
    pub lifecycle: Option<tokio::sync::mpsc::UnboundedSender<LifecycleCmd>>,
}

/// Answers one request from the shared status (routes: from the RIB task).
pub async fn answer(ctl: &Control, req: &Request) -> serde_json::Value {
    let shared = &ctl.shared;
    match req {
        Request::Stop { how, drain_secs } => {
            let tx = ctl.lifecycle.clone();
            let Some(tx) = tx else { return serde_json::json!({ "error": "the daemon is not running yet" }) };
            let (reply, rx) = tokio::sync::oneshot::channel();
            let drain = drain_secs.map(std::time::Duration::from_secs);
            if tx.send(LifecycleCmd::Stop { how: *how, drain, reply }).is_err() {
                return serde_json::json!({ "error": "the daemon is stopping already" });
            }
            rx.await.unwrap_or_else(|_| serde_json::json!({ "error": "the daemon stopped without answering" }))
        }
        Request::Peers => {
            let s = shared.lock();
            let rib = s.rib;
            let deferral = s.deferral.clone();
            let lifecycle = s.lifecycle.clone();
            drop(s);
            let per_route = rib.bytes.checked_div(rib.paths).unwrap_or(0);
            serde_json::json!({
                "deferral": deferral,
                "lifecycle": lifecycle,
                "peers": shared.peers(),
                "rib": {
                    "ipv4_prefixes": rib.prefixes[0],
                    "ipv6_prefixes": rib.prefixes[1],
                    "paths": rib.paths,
                    "attribute_sets": rib.attr_sets,
                    "update_groups": rib.groups,
                    "bytes": rib.bytes,
                    "bytes_per_path": per_route,
                },
            })
        }
        Request::Routes { prefix } => {
            let handle = ctl.rib.clone();
            let routes = match handle {
                Some(h) => h.routes(*prefix).await,
                None => Vec::new(),
            };
            serde_json::json!({ "routes": routes })
        }
        Request::Explain { prefix, peer } => {
            let handle = ctl.rib.clone();
            let Some(e) = (match handle {
                Some(h) => h.explain(*prefix).await,
                None => None,
            }) else {
                return serde_json::json!({ "error": "the RIB is not running" });
            };
            if let Some(name) = peer.as_deref().filter(|n| !e.peers.iter().any(|p| p.name == *n)) {
                return serde_json::json!({ "error": format!("no peer named {name:?}") });
            }
            let s = shared.lock();
            let failing = s.kernel.as_ref().and_then(|k| k.failing.get(&e.prefix)).map(String::as_str);
            let view = super::explain::view(&e, &s.originations, failing, peer.as_deref());
            serde_json::json!({ "explain": view })
        }
        Request::Originations => {
            let s = shared.lock();
            let o: Vec<_> = s
                .originations
                .iter()
                .map(|o| {
                    let communities: Vec<String> = o.communities.iter().map(ToString::to_string).collect();
                    serde_json::json!({"prefix": o.prefix, "cause": o.cause, "communities": communities})
                })
                .collect();
            serde_json::json!({ "originations": o })
        }
        Request::Bfd => {
            let s = shared.lock();
            serde_json::json!({ "bfd": s.bfd })
        }
        Request::Status => {
            let status = super::nodestatus::writer::current(shared, ctl.rib.as_ref()).await;
            serde_json::to_value(status).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        }
        Request::Fib => {
            let s = shared.lock();
            match &s.kernel {
                Some(k) => serde_json::json!({ "kernel": k }),
                None => serde_json::json!({ "kernel": null }),
            }
        }
        Request::Config => {
            let s = shared.lock();
            serde_json::json!({
                "datastore_ok": s.datastore_ok,
                "unreachable_since": s.datastore_unreachable.as_ref().and_then(|(t, _)| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                "unreachable_reason": s.datastore_unreachable.as_ref().map(|(_, why)| why.clone()),
                "problems": s.config_problems,
                "loaded_at": s.config_loaded_at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
            })
        }
    }
}

/// Serves the control socket at `path` until the task is dropped.
pub async fn serve(path: &Path, ctl: Control) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Only root (bgpd's user) may talk to the daemon, whatever the umask:
    // the socket can stop it and decommission the node.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the server carries on.
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctl = ctl.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &ctl).await {
                warn!("control socket client: {e}");
            }
        });
    }
}

/// The longest request line a client may send.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn handle(stream: UnixStream, ctl: &Control) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::Error::other("no request within 10 s")),
    };
    if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
        let reply = serde_json::json!({ "error": format!("request longer than {MAX_REQUEST} bytes") });
        w.write_all(reply.to_string().as_bytes()).await?;
        w.write_all(b"\n").await?;
        return w.shutdown().await;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(ctl, &req).await,
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    w.write_all(reply.to_string().as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.shutdown().await
}

/// Sends `req` to the daemon at `path` and returns its answer.
pub async fn ask(path: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to the control socket {} (is bgpd running?)", path.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(serde_json::to_string(req)?.as_bytes()).await?;
    w.write_all(b"\n").await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: serde_json::Value = serde_json::from_str(&line).context("reading the daemon's answer")?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("daemon: {e}");
    }
    Ok(v)
}

/// Renders an answer as a table for people.
pub fn render(req: &Request, v: &serde_json::Value) -> String {
    let mut out = String::new();
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    match req {
        Request::Peers => {
            out.push_str(&format!(
                "{:<20} {:<28} {:>10} {:<12} {:>9} {:>8}  {}\n",
                "NAME", "ADDRESS", "AS", "STATE", "UPTIME", "PREFIXES", "INFO"
            ));
            for p in v["peers"].as_array().into_iter().flatten() {
                let mut info = if p["state"] == "Established" { s(&p["peer_hostname"]) } else { s(&p["last_failure"]) };
                if let Some(b) = p["bfd"].as_str() {
                    info.push_str(&format!(" (BFD {b})"));
                }
                let err = if p["last_error"].is_null() {
                    String::new()
                } else {
                    format!(" last error {}", s(&p["last_error"]))
                };
                out.push_str(&format!(
                    "{:<20} {:<28} {:>10} {:<12} {:>8}s {:>8}  {}{}\n",
                    s(&p["name"]),
                    s(&p["address"]),
                    s(&p["peer_as"]),
                    s(&p["state"]),
                    s(&p["uptime_secs"]),
                    s(&p["routes_received"]),
                    info,
                    err
                ));
            }
            if let Some(d) = v["deferral"].as_object() {
                let until = d.get("until").and_then(serde_json::Value::as_u64).unwrap_or(0);
                let left = until.saturating_sub(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs()),
                );
                out.push_str(&format!(
                    "restarting: selection deferral (RFC 4724) holds every UPDATE and the kernel sweep until {until} (unix time, {left} s from now) at the latest\n"
                ));
                for w in d.get("waiting").and_then(serde_json::Value::as_array).into_iter().flatten() {
                    out.push_str(&format!("  waiting for {}: {}\n", s(&w[0]), s(&w[1])));
                }
            }
            match v["lifecycle"]["state"].as_str() {
                Some("draining") => out.push_str(&format!(
                    "decommissioning ({}): routes sent with GRACEFUL_SHUTDOWN; the sessions close at {} (unix time)\n",
                    s(&v["lifecycle"]["why"]),
                    s(&v["lifecycle"]["until"])
                )),
                Some("decommissioned") => out.push_str(&format!(
                    "decommissioned ({}): no sessions, no routes; waiting for the Node to come back\n",
                    s(&v["lifecycle"]["why"])
                )),
                _ => {}
            }
            let r = &v["rib"];
            if !r.is_null() {
                out.push_str(&format!(
                    "RIB: {} IPv4 and {} IPv6 prefixes, {} paths, {} attribute sets, {} update groups, {} bytes ({} per path)\n",
                    s(&r["ipv4_prefixes"]),
                    s(&r["ipv6_prefixes"]),
                    s(&r["paths"]),
                    s(&r["attribute_sets"]),
                    s(&r["update_groups"]),
                    s(&r["bytes"]),
                    s(&r["bytes_per_path"])
                ));
            }
        }
        Request::Routes { .. } => {
            out.push_str(&format!(
                "{:<3}{:<24} {:<16} {:<32} {:<20} {}\n",
                "", "PREFIX", "PEER", "NEXT HOP", "AS PATH", "COMMUNITIES / WHY NOT USED"
            ));
            for r in v["routes"].as_array().into_iter().flatten() {
                let comms: Vec<String> = r["communities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(r["large_communities"].as_array().into_iter().flatten())
                    .map(s)
                    .chain(r["lost"].as_str().map(|l| format!("({l})")))
                    .collect();
                let mark = match (r["best"].as_bool(), r["multipath"].as_bool(), r["stale"].as_bool()) {
                    (_, _, Some(true)) => "s",
                    (Some(true), _, _) => "*>",
                    (_, Some(true), _) => "*=",
                    _ => "",
                };
                out.push_str(&format!(
                    "{:<3}{:<24} {:<16} {:<32} {:<20} {}\n",
                    mark,
                    s(&r["prefix"]),
                    s(&r["peer"]),
                    s(&r["next_hop"]),
                    s(&r["as_path"]),
                    comms.join(" ")
                ));
            }
        }
        Request::Originations => {
            out.push_str(&format!("{:<24} {:<28} {}\n", "PREFIX", "COMMUNITIES", "CAUSE"));
            for o in v["originations"].as_array().into_iter().flatten() {
                let comms: Vec<&str> =
                    o["communities"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
                out.push_str(&format!("{:<24} {:<28} {}\n", s(&o["prefix"]), comms.join(" "), s(&o["cause"])));
            }
        }
        Request::Fib => {
            let k = &v["kernel"];
            if k.is_null() {
                out.push_str("kernel programming is off (--no-kernel)\n");
            } else {
                out.push_str(&format!(
                    "table {} protocol {} metric {}: {} learned routes, {} blackholes; previous run's routes {}\n",
                    s(&k["table"]),
                    s(&k["protocol"]),
                    s(&k["metric"]),
                    s(&k["learned"]),
                    s(&k["blackholes"]),
                    if k["swept"] == true { "swept" } else { "kept until the selection deferral ends" }
                ));
                let t = &k["take_over"];
                if !t.is_null() {
                    let phase = match t["phase"].as_str() {
                        Some("done") => ", removal done".to_string(),
                        Some("replacing") => format!(
                            ", each removed as bgpd's route for its prefix goes in, the rest {} s after the \
                             selection deferral",
                            s(&t["hold_seconds"])
                        ),
                        _ => ", removed as bgpd's routes replace them once the selection deferral ends".to_string(),
                    };
                    out.push_str(&format!(
                        "taking over from protocol {} ({}): {} of its routes left{phase}\n",
                        s(&t["name"]),
                        s(&t["protocol"]),
                        s(&t["left"]),
                    ));
                }
                for (prefix, why) in k["failing"].as_object().into_iter().flatten() {
                    out.push_str(&format!("not installed: {prefix}: {}\n", s(why)));
                }
            }
        }
        Request::Stop { .. } => {
            out.push_str(&format!("{}\n", s(&v["stopped"])));
        }
        Request::Status => match serde_json::from_value::<super::nodestatus::NodeStatus>(v.clone()) {
            Ok(status) => {
                let today = super::nodestatus::bird_time(std::time::SystemTime::now());
                out.push_str(&super::nodestatus::table::render(&status, &today[..10]));
            }
            Err(e) => out.push_str(&format!("cannot read the daemon's answer: {e}\n")),
        },
        Request::Explain { .. } => match serde_json::from_value(v["explain"].clone()) {
            Ok(view) => out.push_str(&super::explain::render(&view)),
            Err(e) => out.push_str(&format!("cannot read the daemon's answer: {e}\n")),
        },
        Request::Bfd => {
            let b = &v["bfd"];
            let row = |c: [&str; 13]| {
                format!(
                    "{:<20} {:<26} {:<10} {:<10} {:<7} {:>10} {:>10} {:>6} {:>6} {:>9} {:>9} {:>5}  {}\n",
                    c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12]
                )
            };
            out.push_str(&row([
                "PEER",
                "ADDRESS",
                "TYPE",
                "INTERFACE",
                "STATE",
                "LOCAL",
                "REMOTE",
                "TX ms",
                "RX ms",
                "DETECT ms",
                "UP",
                "FLAPS",
                "DIAGNOSTIC",
            ]));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            for x in b["sessions"].as_object().into_iter().flat_map(|m| m.values()) {
                let up = x["up_since"].as_u64().map_or_else(|| "-".to_string(), |t| ago(now.saturating_sub(t)));
                let mut diag = s(&x["diag"]);
                if x["remote_diag"].as_str().is_some_and(|d| d != "No Diagnostic") {
                    diag.push_str(&format!(" (remote: {})", s(&x["remote_diag"])));
                }
                if let Some(e) = x["error"].as_str() {
                    diag.push_str(&format!("  ERROR {e}"));
                }
                out.push_str(&row([
                    &s(&x["peer"]),
                    &s(&x["address"]),
                    &s(&x["kind"]),
                    x["interface"].as_str().unwrap_or("-"),
                    &s(&x["state"]),
                    &s(&x["local_discr"]),
                    &s(&x["remote_discr"]),
                    &s(&x["tx_interval_ms"]),
                    &s(&x["rx_interval_ms"]),
                    &s(&x["detection_time_ms"]),
                    &up,
                    &s(&x["flaps"]),
                    &diag,
                ]));
            }
            for (why, n) in b["discarded"].as_object().into_iter().flatten() {
                out.push_str(&format!("discarded: {n} packets: {why}\n"));
            }
            for e in b["errors"].as_array().into_iter().flatten() {
                out.push_str(&format!("error: {}\n", s(e)));
            }
        }
        Request::Config => {
            out.push_str(&format!("datastore reachable: {}\n", s(&v["datastore_ok"])));
            if let Some(since) = v["unreachable_since"].as_u64() {
                let ago = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |now| now.as_secs().saturating_sub(since));
                out.push_str(&format!(
                    "datastore unreachable since: {since} (unix time, {ago} s ago), running on the last good model\n"
                ));
                out.push_str(&format!("datastore error: {}\n", s(&v["unreachable_reason"])));
            }
            for p in v["problems"].as_array().into_iter().flatten() {
                out.push_str(&format!("problem: {}\n", s(p)));
            }
        }
    }
    out
}
/// A duration in seconds as `show` prints an uptime: `45s`, `12m03s`, `5h02m`, `3d04h`.
fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests;
