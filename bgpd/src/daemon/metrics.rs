//! Prometheus metrics at `/metrics`, liveness at `/healthz` (200 only while the
//! daemon's main loop keeps ticking, so a stuck loop fails it) and readiness at
//! `/readyz` (the datastore was read and is reachable, no selection deferral
//! after a restart is under way, and the node is not decommissioning: a
//! DaemonSet rolling update moves to the next node only once this one has
//! its routes back).

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

use super::progress::STALL_LIMIT;
use super::status::Shared;

/// Renders the current metrics in the Prometheus text format.
pub fn render(shared: &Shared) -> String {
    let reg = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric names and labels are constants");
        reg.register(Box::new(g.clone())).expect("each metric is registered once");
        g
    };
    let state = gauge(
        "bgpd_peer_state",
        "Session state: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established",
        &["peer", "address"],
    );
    let up = gauge("bgpd_peer_uptime_seconds", "Seconds since the session reached Established", &["peer"]);
    let routes = gauge("bgpd_peer_routes_received", "Prefixes received and kept", &["peer"]);
    let queued = gauge("bgpd_peer_queued_bytes", "Bytes of UPDATEs queued towards the peer, not taken yet", &["peer"]);
    let paused = gauge(
        "bgpd_peer_export_paused",
        "1 while export to the peer is paused: it does not take what it is sent",
        &["peer"],
    );
    let rib_prefixes = gauge("bgpd_rib_prefixes", "Prefixes in the Loc-RIB", &["family"]);
    let rib_paths = gauge("bgpd_rib_paths", "Paths in the RIB, all peers", &[]);
    let rib_sets = gauge("bgpd_rib_attribute_sets", "Distinct path attribute sets", &[]);
    let rib_bytes = gauge("bgpd_rib_bytes", "Bytes the RIB tables and attribute sets take", &[]);
    let rib_per_path = gauge("bgpd_rib_bytes_per_path", "RIB bytes per path", &[]);
    let groups = gauge("bgpd_update_groups", "Update groups (peers sharing one encoded stream)", &[]);
    let err = gauge("bgpd_peer_last_error", "Last NOTIFICATION code*256+subcode (0: none)", &["peer"]);
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names and labels are constants");
        reg.register(Box::new(c.clone())).expect("each metric is registered once");
        c
    };
    // Counts since the daemon started, exported as counters (rate() and
    // increase() need them so); the registry is built per scrape, so each is
    // set with inc_by from zero.
    let flaps = counter("bgpd_peer_flaps_total", "Times the session left Established", &["peer"]);
    let rx = counter("bgpd_peer_messages_received_total", "Messages received by type", &["peer", "type"]);
    let tx = counter("bgpd_peer_messages_sent_total", "Messages sent by type", &["peer", "type"]);
    let bfd_state =
        gauge("bgpd_bfd_session_state", "BFD session state: 0 AdminDown, 1 Down, 2 Init, 3 Up", &["peer", "address"]);
    let bfd_detect = gauge("bgpd_bfd_detection_time_milliseconds", "BFD detection time, milliseconds", &["peer"]);
    let ignored = counter(
        "bgpd_peer_routes_ignored_total",
        "Received routes ignored or withdrawn on receipt, by why (RFC 7606 checks, next hop, family)",
        &["peer", "reason"],
    );
    let bfd_flaps = counter("bgpd_bfd_flaps_total", "Times the BFD session left Up", &["peer"]);
    let bfd_rx = counter("bgpd_bfd_packets_received_total", "BFD control packets accepted", &["peer"]);
    let bfd_tx = counter("bgpd_bfd_packets_sent_total", "BFD control packets sent", &["peer"]);
    let bfd_discarded =
        counter("bgpd_bfd_packets_discarded_total", "BFD control packets discarded, by why", &["reason"]);
    let cfg_ok = gauge(
        "bgpd_datastore_ok",
        "1 while the datastore is reachable (0 before the first read and during outages)",
        &[],
    );
    for p in shared.peers() {
        state.with_label_values(&[&p.name, &p.address.to_string()]).set(i64::from(p.state.mib_code()));
        up.with_label_values(&[&p.name]).set(p.uptime_secs as i64);
        flaps.with_label_values(&[&p.name]).inc_by(p.flaps);
        for (t, n) in &p.received {
            rx.with_label_values(&[&p.name, t]).inc_by(*n);
        }
        for (t, n) in &p.sent {
            tx.with_label_values(&[&p.name, t]).inc_by(*n);
        }
        routes.with_label_values(&[&p.name]).set(p.routes_received as i64);
        queued.with_label_values(&[&p.name]).set(p.queued_bytes as i64);
        paused.with_label_values(&[&p.name]).set(i64::from(p.export_paused));
        err.with_label_values(&[&p.name]).set(p.last_error_code.map_or(0, |(c, s)| i64::from(c) * 256 + i64::from(s)));
    }
    let refused = counter(
        "bgpd_connections_refused_total",
        "Incoming BGP connections refused because they came from no configured peer",
        &[],
    );
    let (ok, rib, bfd, ignored_by_peer, refused_unconfigured) = {
        let s = shared.lock();
        (s.datastore_ok, s.rib, s.bfd.clone(), s.routes_ignored.clone(), s.refused_unconfigured)
    };
    refused.with_label_values::<&str>(&[]).inc_by(refused_unconfigured);
    let status_writes = counter(
        "bgpd_node_status_writes_total",
        "CalicoNodeStatus status writes into the datastore, by result (written, failed)",
        &["result"],
    );
    let (written, failed) = shared.lock().node_status_writes;
    status_writes.with_label_values(&["written"]).inc_by(written);
    status_writes.with_label_values(&["failed"]).inc_by(failed);
    for (peer, counts) in &ignored_by_peer {
        for (why, n) in counts.iter().filter(|(_, n)| *n > 0) {
            ignored.with_label_values(&[peer, why.name()]).inc_by(n);
        }
    }
    for b in bfd.sessions.values() {
        bfd_state.with_label_values(&[&b.peer, &b.address.to_string()]).set(i64::from(b.state.code()));
        bfd_detect.with_label_values(&[&b.peer]).set(b.detection_time_ms as i64);
        bfd_flaps.with_label_values(&[&b.peer]).inc_by(b.flaps);
        bfd_rx.with_label_values(&[&b.peer]).inc_by(b.received);
        bfd_tx.with_label_values(&[&b.peer]).inc_by(b.sent);
    }
    for (why, n) in &bfd.discarded {
        bfd_discarded.with_label_values(&[why]).inc_by(*n);
    }
    cfg_ok.with_label_values::<&str>(&[]).set(i64::from(ok));
    rib_prefixes.with_label_values(&["ipv4"]).set(rib.prefixes[0] as i64);
    rib_prefixes.with_label_values(&["ipv6"]).set(rib.prefixes[1] as i64);
    rib_paths.with_label_values::<&str>(&[]).set(rib.paths as i64);
    rib_sets.with_label_values::<&str>(&[]).set(rib.attr_sets as i64);
    rib_bytes.with_label_values::<&str>(&[]).set(rib.bytes as i64);
    rib_per_path.with_label_values::<&str>(&[]).set(rib.bytes.checked_div(rib.paths).unwrap_or(0) as i64);
    groups.with_label_values::<&str>(&[]).set(rib.groups as i64);
    let mut families = reg.gather();
    // The FIB writer's own metrics (`fib_*`), when the kernel is programmed.
    if let Some(k) = shared.lock().kernel.as_ref() {
        families.extend(k.registry.gather());
    }
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&families, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// `/healthz`: healthy while the daemon's main loop went round in the last
/// 5 s (it ticks every 500 ms) and no task is stuck (work waiting, none
/// finished for [`STALL_LIMIT`]); the body says what is wrong.
fn liveness(shared: &Shared) -> (&'static str, String) {
    let s = shared.lock();
    if s.heartbeat.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(5)) {
        return ("503 Service Unavailable", "main loop not responding\n".into());
    }
    let now = std::time::Instant::now();
    let stuck: Vec<String> = s.tasks.iter().filter_map(|t| t.stuck(now, STALL_LIMIT)).collect();
    if stuck.is_empty() {
        ("200 OK", "ok\n".into())
    } else {
        ("503 Service Unavailable", stuck.join("\n") + "\n")
    }
}

/// `/readyz`: ready once the datastore was read and while it is reachable,
/// once selection deferral after a restart is over, and unless the node is
/// decommissioning; the body says why not.
fn readiness(shared: &Shared) -> (&'static str, String) {
    use super::status::Lifecycle;
    let s = shared.lock();
    let unavailable = "503 Service Unavailable";
    match (&s.datastore_unreachable, s.datastore_ok, &s.deferral, &s.lifecycle) {
        (Some((_, why)), _, _, _) => (unavailable, format!("datastore unreachable: {why}\n")),
        (None, false, _, _) => (unavailable, "datastore not read yet\n".to_string()),
        (_, _, _, Lifecycle::Draining { why, .. }) => (unavailable, format!("decommissioning: {why}\n")),
        (_, _, _, Lifecycle::Decommissioned { why }) => (unavailable, format!("decommissioned: {why}\n")),
        (_, _, Some(d), _) => {
            let waiting: Vec<String> = d.waiting.iter().map(|(p, w)| format!("{p} ({w})")).collect();
            (unavailable, format!("restarting: selection deferral waits for {}\n", waiting.join(", ")))
        }
        (None, true, None, Lifecycle::Running) => ("200 OK", "ready\n".to_string()),
    }
}

/// Serves HTTP GET `/metrics`, `/healthz`, `/readyz` on `listener` (bound by
/// the caller, so that the address answers from the moment the daemon says so).
pub async fn serve(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            // The request head may come in several segments: read up to its end.
            let mut buf = [0u8; 2048];
            let head = async {
                let mut n = 0;
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[n..]).await? {
                        0 => break,
                        m => n += m,
                    }
                }
                Ok::<usize, std::io::Error>(n)
            };
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), head).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", render(&shared)),
                "/healthz" => liveness(&shared),
                "/readyz" => readiness(&shared),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(resp.as_bytes()).await {
                warn!("metrics client: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_per_peer_series_and_liveness_follows_the_loop() {
        let shared = Shared::default();
        assert_eq!(liveness(&shared).0, "503 Service Unavailable", "no tick yet");
        shared.lock().heartbeat = Some(std::time::Instant::now());
        assert_eq!(liveness(&shared).0, "200 OK");
        // A task with work waiting that finishes nothing for the limit makes it unhealthy.
        let (tx, _rx, progress) = crate::daemon::progress::channel::<u32>("kernel");
        shared.lock().tasks.push(progress);
        tx.send(1);
        assert_eq!(liveness(&shared).0, "200 OK", "waiting, but not for long");
        let text = render(&shared);
        assert!(text.contains("bgpd_datastore_ok 0"), "{text}");
        assert!(!text.contains("bgpd_peer_routes_ignored_total{"), "nothing ignored: no series");
        let mut counts = bgpd_proto::rib::checks::IgnoredCounts::default();
        let kind = bgpd_proto::rib::checks::Ignored::ALL[0];
        counts.add(kind);
        counts.add(kind);
        shared.lock().routes_ignored.insert("tor".into(), counts);
        let text = render(&shared);
        let line = format!("bgpd_peer_routes_ignored_total{{peer=\"tor\",reason=\"{}\"}} 2", kind.name());
        assert!(text.contains(&line), "{line} in {text}");
    }

    /// A node with one of everything, so that every metric family has a series.
    fn everything() -> Shared {
        use crate::daemon::status::{PeerStatus, PeerView};
        let shared = Shared::default();
        let mut view = PeerView::example("tor");
        view.received.insert("UPDATE".into(), 3);
        view.sent.insert("UPDATE".into(), 2);
        shared.lock().peers.insert("tor".into(), PeerStatus { view, established_at: None });
        let mut counts = bgpd_proto::rib::checks::IgnoredCounts::default();
        counts.add(bgpd_proto::rib::checks::Ignored::ALL[0]);
        shared.lock().routes_ignored.insert("tor".into(), counts);
        shared.lock().refused_unconfigured = 3;
        let mut bfd = shared.lock().bfd.clone();
        bfd.sessions.insert("tor".into(), crate::daemon::bfd::BfdStatus::example("tor"));
        bfd.discarded.insert("ttl".into(), 1);
        shared.lock().bfd = bfd;
        let registry = prometheus::Registry::new();
        let fib = fib::FibMetrics::register(&registry).unwrap();
        fib.routes_installed.with_label_values(&["ipv4"]).set(1);
        fib.operations.with_label_values(&["install"]).inc();
        fib.errors.with_label_values(&["ENETUNREACH"]).inc();
        shared.lock().kernel = Some(crate::daemon::status::KernelView { registry, ..Default::default() });
        shared
    }

    /// `# TYPE name kind` of a rendering.
    fn types(text: &str) -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect()
    }

    /// The families of `bgpd-ipam`'s text file (`ipam::metrics`), which the
    /// dashboard and alerts use too: a histogram's `_bucket`, `_sum` and
    /// `_count` series are counters to PromQL.
    fn ipam_types() -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for (name, kind) in types(&ipam::metrics::State::default().render()) {
            if kind == "histogram" {
                for series in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{series}"), "counter".to_string());
                }
            } else {
                out.insert(name, kind);
            }
        }
        out
    }

    #[test]
    fn counts_are_counters_and_every_total_is_one() {
        let types = types(&render(&everything()));
        for name in ["bgpd_peer_flaps_total", "bgpd_peer_messages_received_total", "bgpd_connections_refused_total"] {
            assert_eq!(types.get(name).map(String::as_str), Some("counter"), "{name}");
        }
        for (name, kind) in &types {
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name} is a {kind}");
        }
        let ipam = self::types(&ipam::metrics::State::default().render());
        for name in ["bgpd_ipam_allocations_total", "bgpd_ipam_releases_total", "bgpd_ipam_failures_total"] {
            assert_eq!(ipam.get(name).map(String::as_str), Some("counter"), "{name}");
        }
        for (name, kind) in &ipam {
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name} is a {kind}");
        }
    }

    /// The metric names an expression uses: identifiers starting bgpd_ or fib_,
    /// each with whether it stands inside rate( or increase( directly.
    fn used(expr: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut rest = expr;
        let mut prev = "";
        while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let word = &tail[..end];
            if word.starts_with("bgpd_") || word.starts_with("fib_") {
                let over_time = matches!(prev, "rate" | "irate" | "increase") && rest[..i].trim() == "(";
                out.push((word.to_string(), over_time));
            }
            prev = word;
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn the_dashboard_and_alerts_use_metrics_that_exist() {
        let mut types = types(&render(&everything()));
        types.extend(ipam_types());
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../templates/kubernetes/grafana-dashboard.json")).unwrap();
        let mut exprs: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().iter())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect();
        exprs.push(dashboard["templating"]["list"][1]["query"].as_str().unwrap().to_string());
        let alerts: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../templates/kubernetes/alerts.yaml")).unwrap();
        let groups = alerts["spec"]["groups"].as_sequence().unwrap();
        let rules: Vec<&serde_yaml::Value> =
            groups.iter().flat_map(|g| g["rules"].as_sequence().unwrap().iter()).collect();
        assert!(rules.len() >= 10);
        exprs.extend(rules.iter().map(|r| r["expr"].as_str().unwrap().to_string()));
        let mut seen = 0;
        for e in &exprs {
            for (name, over_time) in used(e) {
                seen += 1;
                let kind = types.get(&name).unwrap_or_else(|| panic!("{name} (in {e:?}) is not exported"));
                if over_time {
                    assert_eq!(kind, "counter", "rate()/increase() of {name}, a {kind}, in {e:?}");
                } else {
                    assert_eq!(kind, "gauge", "{name}, a {kind}, used without rate() in {e:?}");
                }
            }
        }
        assert!(seen >= 25, "{seen} metric uses found");
        assert!(exprs.iter().filter(|e| e.contains("bgpd_ipam_")).count() >= 10, "bgpd-ipam's metrics are used");
    }

    #[test]
    fn readiness_says_why_not() {
        let shared = Shared::default();
        assert_eq!(readiness(&shared), ("503 Service Unavailable", "datastore not read yet\n".to_string()));
        shared.lock().datastore_ok = true;
        assert_eq!(readiness(&shared).0, "200 OK");
        {
            let mut s = shared.lock();
            s.datastore_ok = false;
            s.datastore_unreachable = Some((std::time::SystemTime::now(), "etcd get: connection refused".into()));
        }
        let (status, body) = readiness(&shared);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("connection refused"), "{body}");
    }

    #[test]
    fn not_ready_during_a_restart_deferral_or_a_decommission() {
        use crate::daemon::status::{Deferral, Lifecycle};
        let shared = Shared::default();
        shared.lock().datastore_ok = true;
        shared.lock().deferral = Some(Deferral {
            until: std::time::SystemTime::now(),
            waiting: vec![("tor".into(), "End-of-RIB for ipv4/unicast".into())],
        });
        let (status, body) = readiness(&shared);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("selection deferral waits for tor (End-of-RIB"), "{body}");
        shared.lock().deferral = None;
        assert_eq!(readiness(&shared).0, "200 OK");
        shared.lock().lifecycle = Lifecycle::Decommissioned { why: "Node gone".into() };
        assert_eq!(readiness(&shared), ("503 Service Unavailable", "decommissioned: Node gone\n".to_string()));
    }
}
