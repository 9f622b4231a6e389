//! Why a member has no usable route to a prefix, neighbour by neighbour, in
//! the words a network engineer uses: the session is down, the neighbour has
//! no route either, it does not pass the route on (iBGP split horizon, a
//! BGPFilter rule, Calico's default export), the member rejects it (an
//! AS-path loop, an import rule), or it has the path and does not use it.
//!
//! Read from the RIBs after the simulation (`Rib::explain` on the member
//! and on the neighbour): what the member recorded of each peer's routes,
//! and what the neighbour's export decided, step by step.

use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{Design, MemberModel, PeerModel};
use super::sim::{Scenario, Simulation};

/// Why `member` has no used route to `prefix` (one line per configured peer).
pub fn missing(design: &Design, sim: &Simulation, failed: &Scenario, member: &str, prefix: IpNet) -> Vec<String> {
    let Some(m) = design.members.get(member) else { return vec![format!("{member} is not a member")] };
    let Some(sp) = &m.speaker else {
        return vec![format!("{member} runs no BGP: only its connected subnets and default gateway")];
    };
    if !originated(design, failed, prefix) {
        return vec![format!("never advertised: no member that is up originates {prefix}")];
    }
    if let Some((p, _, cause)) = sp.originations.iter().find(|(p, _, _)| p.contains(&prefix)) {
        return vec![format!(
            "{member} originates {p} itself ({cause}) and so uses no path from its peers, but delivers nothing \
             there: the addresses inside need a more specific route"
        )];
    }
    if sp.peers.is_empty() {
        return vec![format!("{member} has no BGP session configured")];
    }
    let reports = sim.fabric.sessions(member);
    sp.peers
        .iter()
        .map(|p| {
            let up = reports.iter().find(|r| r.peer == p.name && r.remote == p.remote);
            let why = match up {
                Some(r) if r.established => from_peer(design, sim, m, p, prefix),
                Some(r) => format!(
                    "the session is down ({})",
                    r.last_failure.clone().unwrap_or_else(|| format!("{:?}", r.state))
                ),
                None => "the session was not configured".to_string(),
            };
            format!("via {} ({} {}): {why}", p.name, p.object, p.remote)
        })
        .collect()
}

/// Whether a live member originates `prefix` or a prefix covering it.
fn originated(design: &Design, failed: &Scenario, prefix: IpNet) -> bool {
    design
        .members
        .values()
        .filter(|m| !failed.down(&m.name))
        .any(|m| m.speaker.as_ref().is_some_and(|s| s.originations.iter().any(|(p, _, _)| p.contains(&prefix))))
}

/// The member that has `addr`.
fn owner(design: &Design, addr: IpAddr) -> Option<&MemberModel> {
    design.members.values().find(|m| m.owns(addr))
}

/// What the member's RIB and the neighbour's RIB say about `prefix` on
/// this session: the member's import side (received, used or not, rejected
/// and why, as the RIB recorded it), else the neighbour's export side
/// (`Rib::explain`, the same steps the RIB takes to send).
fn from_peer(design: &Design, sim: &Simulation, m: &MemberModel, p: &PeerModel, prefix: IpNet) -> String {
    let Some(n) = owner(design, p.remote) else { return format!("no member has {}", p.remote) };
    let Some(mine) = sim.fabric.speaker(&m.name).map(|s| s.rib().explain(prefix)) else {
        return format!("{} runs no BGP", m.name);
    };
    let view = bgpd::daemon::explain::view(&mine, &[], None, None);
    let received = view.peers.iter().find(|l| l.address == p.remote && l.name == p.name);
    match received.map(|l| l.received.code.as_str()) {
        Some("in_rib") => {
            let path = view.paths.iter().find(|l| l.from == p.name);
            return match path {
                Some(l) if l.status == "lost" => format!("received from {}, {}", n.name, l.text),
                Some(l) => format!("received from {} and used ({})", n.name, l.text),
                None => format!("received from {}", n.name),
            };
        }
        Some("not_in_rib" | "not_received" | "no_session") | None => {}
        Some("family_not_negotiated") => {
            let family = if prefix.addr().is_ipv4() { "IPv4" } else { "IPv6" };
            return format!("the session carries no {family} routes (the family was not negotiated by both ends)");
        }
        Some(_) => {
            let text = received.map_or_else(String::new, |l| l.received.text.clone());
            return format!("{} {text}", n.name);
        }
    }
    let Some(back) = super::checks::session_back(n, m, p) else {
        return format!("{} has no session back to {}", n.name, m.name);
    };
    let Some(theirs) = sim.fabric.speaker(&n.name).map(|s| s.rib().explain(prefix)) else {
        return format!("{} runs no BGP", n.name);
    };
    if theirs.paths.is_empty() {
        return format!("{} has no route to {prefix} either", n.name);
    }
    let view = bgpd::daemon::explain::view(&theirs, &[], None, None);
    let Some(sent) = view.peers.iter().find(|l| l.address == back.remote && l.name == back.name) else {
        return format!("{} has no session back to {}", n.name, m.name);
    };
    let lines: Vec<&str> = sent.advertised.iter().map(|l| l.text.as_str()).collect();
    if sent.advertised.iter().any(|l| l.code == "sent") {
        // Sent and not rejected on arrival: the member has not received it yet.
        return format!("{} sends it ({}), not received yet", n.name, lines.join("; "));
    }
    format!("{} to {}: {}", n.name, m.name, lines.join("; "))
}
