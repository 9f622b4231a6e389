//! What a peer task reports to the shared status (`bgpd show peers`, `/metrics`): its
//! state, the negotiated capabilities, why it last failed or went down, its counters.

use std::time::{Instant, SystemTime};

use bgpd_proto::session::{DownReason, Negotiated};
use bgpd_proto::speaker::Peer;
use tracing::{debug, info};

use crate::daemon::rib::OutQueue;
use crate::daemon::spec::PeerSpec;
use crate::daemon::status::{PeerStatus, PeerView, Shared};

/// Adds the peer to the shared status under a key of its own (a peer whose
/// configuration changed runs as a new task while the old one stops).
pub(super) fn register(shared: &Shared, peer: &PeerSpec) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = format!("{}#{}", peer.name, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let view = PeerView::new(&peer.name, peer.addr, peer.peer_as, peer.local_as);
    shared.lock().peers.insert(key.clone(), PeerStatus { view, established_at: None });
    key
}

fn with_peer(shared: &Shared, name: &str, f: impl FnOnce(&mut PeerStatus)) {
    if let Some(p) = shared.lock().peers.get_mut(name) {
        f(p);
    }
}

pub(super) fn set_state(shared: &Shared, name: &str, peer: &Peer) {
    with_peer(shared, name, |p| p.view.state = peer.state());
}

pub(super) fn failure(shared: &Shared, key: &str, why: String) {
    debug!(peer = %key, "{why}");
    with_peer(shared, key, |p| p.view.last_failure = Some(why));
}

pub(super) fn established(shared: &Shared, name: &str, n: &Negotiated) {
    with_peer(shared, name, |p| {
        p.established_at = Some(Instant::now());
        p.view.established_since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        p.view.last_failure = None;
        p.view.peer_id = Some(n.peer_id.to_string());
        p.view.peer_hostname.clone_from(&n.peer_hostname);
        let mut caps: Vec<String> = n.families.iter().map(|f| format!("multiprotocol {f}")).collect();
        if n.four_octet_as {
            caps.push("4-octet-as".into());
        }
        if n.route_refresh {
            caps.push("route-refresh".into());
        }
        if n.enhanced_route_refresh {
            caps.push("enhanced-route-refresh".into());
        }
        if n.extended_message {
            caps.push("extended-message".into());
        }
        if n.extended_next_hop {
            // RFC 8950: IPv4 unicast routes may carry IPv6 next hops.
            caps.push("extended-next-hop ipv4/unicast".into());
        }
        if let Some(gr) = &n.peer_graceful_restart {
            let r = if gr.restarting() { ", restarting" } else { "" };
            caps.push(format!("graceful-restart (peer, {} s{r})", gr.time));
        }
        if let Some(ll) = &n.peer_llgr {
            let times: Vec<String> = ll.iter().map(|f| format!("{} {} s", f.family, f.stale_time)).collect();
            let times = if times.is_empty() { "aware, no family".to_string() } else { times.join(", ") };
            caps.push(format!("long-lived-graceful-restart (peer: {times})"));
        }
        if n.graceful_notification {
            caps.push("graceful-notification (N bit)".into());
        }
        caps.push(format!("hold-time {}", n.hold_time));
        p.view.capabilities = caps;
    });
}

pub(super) fn down(shared: &Shared, name: &str, reason: &DownReason) {
    let (text, code) = match reason {
        DownReason::NotificationSent(n) => (Some(format!("sent: {}", n.describe())), Some((n.code, n.subcode))),
        DownReason::NotificationReceived(n) => (Some(format!("received: {}", n.describe())), Some((n.code, n.subcode))),
        DownReason::ConnectionFailed | DownReason::Stopped => (None, None),
    };
    if let Some(t) = &text {
        info!(peer = %name, "session down, NOTIFICATION {t}");
    }
    with_peer(shared, name, |p| {
        p.established_at = None;
        p.view.established_since = None;
        p.view.capabilities.clear();
        if text.is_some() {
            p.view.last_error = text;
            p.view.last_error_code = code;
        }
    });
}

pub(super) fn record_stats(shared: &Shared, name: &str, peer: &Peer, queue: &OutQueue) {
    let st = peer.stats();
    let names = ["error", "OPEN", "UPDATE", "NOTIFICATION", "KEEPALIVE", "ROUTE-REFRESH"];
    with_peer(shared, name, |p| {
        p.view.flaps = st.flaps;
        p.view.queued_bytes = queue.bytes();
        p.view.export_paused = queue.paused();
        for (i, n) in names.iter().enumerate() {
            p.view.received.insert((*n).into(), st.received[i]);
            p.view.sent.insert((*n).into(), st.sent[i]);
        }
    });
}
