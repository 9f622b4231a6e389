//! Why a member has no usable route to a prefix, neighbour by neighbour, in
//! the words a network engineer uses: the session is down, the neighbour has
//! no route either, it does not pass the route on (iBGP split horizon, a
//! BGPFilter rule, Calico's default export), the member rejects it (an
//! AS-path loop, an import rule), or it has the path and does not use it.
//!
//! Worked out from the configuration and the neighbours' RIBs after the
//! simulation, by the rules the RIB applies.

use std::net::IpAddr;

use bgpd_proto::rib::policy::{DecidedBy, DefaultExport, Direction, PeerPolicy, RangeSource};
use bgpd_proto::Family;
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

fn from_peer(design: &Design, sim: &Simulation, m: &MemberModel, p: &PeerModel, prefix: IpNet) -> String {
    let Some(n) = owner(design, p.remote) else { return format!("no member has {}", p.remote) };
    let mine = sim.fabric.speaker(&m.name).map(|s| s.rib().routes(Some(prefix))).unwrap_or_default();
    if let Some((_, paths)) = mine.iter().find(|(q, _)| *q == prefix) {
        if let Some(path) = paths.iter().find(|v| v.peer.as_deref() == Some(p.name.as_str())) {
            return match path.reason {
                Some(r) => format!("received from {}, not used: {}", n.name, r.describe()),
                None if path.used => "received and used".to_string(),
                None => format!("received from {}, not used", n.name),
            };
        }
    }
    // RFC 4760: a session carries only the families both ends offered.
    let family = if prefix.addr().is_ipv4() { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST };
    let theirs_back = super::checks::session_back(n, m, p);
    let offered =
        p.session.families.contains(&family) && theirs_back.is_none_or(|b| b.session.families.contains(&family));
    if !offered {
        return format!("the session does not carry {family} routes (not offered by both ends)");
    }
    let theirs = sim.fabric.speaker(&n.name).map(|s| s.rib().routes(Some(prefix))).unwrap_or_default();
    let Some(best) = theirs.iter().find(|(q, _)| *q == prefix).and_then(|(_, paths)| paths.iter().find(|v| v.best))
    else {
        return format!("{} has no route to {prefix} either", n.name);
    };
    let Some(back) = super::checks::session_back(n, m, p) else {
        return format!("{} has no session back to {}", n.name, m.name);
    };
    let learned = best.peer.is_some();
    // RFC 4271 §9.2: iBGP-learned routes go to no other iBGP peer, unless reflected (RFC 4456).
    if let Some(from) = best.peer.as_deref() {
        let ibgp = |q: &PeerModel| q.session.local_as == q.session.peer_as;
        let source = n.speaker.as_ref().and_then(|s| s.peers.iter().find(|q| q.name == from));
        if let Some(src) = source {
            if ibgp(src) && ibgp(back) && !src.rib.rr_client && !back.rib.rr_client {
                return format!(
                    "{} learned it over iBGP from {from} and passes iBGP routes to no other iBGP peer \
                     (no route reflection between them)",
                    n.name
                );
            }
        }
    }
    let d = back.rib.policy.export(prefix, &best.attrs, learned);
    if !d.accept {
        return format!("{} does not send it: {}", n.name, decided(&back.rib.policy, d.by, Direction::Export, prefix));
    }
    // The AS_PATH as it arrives: the sender's AS in front on eBGP.
    let mut path = best.attrs.as_path();
    if back.session.local_as != back.session.peer_as {
        path.prepend(back.session.local_as, 1);
    }
    for asn in [p.rib.local_as, sim_local_as(m)] {
        let n_times = path.count(asn);
        if n_times > p.rib.allow_local_as as usize {
            return format!(
                "rejected as an AS-path loop: AS_PATH {path} holds {}'s AS {asn} {n_times} time(s); {} allows it {} \
                 time(s) (numAllowedLocalASNumbers)",
                m.name, p.object, p.rib.allow_local_as
            );
        }
    }
    let d = p.rib.policy.import(prefix, &best.attrs);
    if !d.accept {
        return format!("{} rejects it on import: {}", m.name, decided(&p.rib.policy, d.by, Direction::Import, prefix));
    }
    format!("{} has it but {} did not receive it", n.name, m.name)
}

fn sim_local_as(m: &MemberModel) -> u32 {
    m.speaker.as_ref().map_or(0, |s| s.rib.local_as)
}

fn direction_list(dir: Direction, v6: bool) -> &'static str {
    match (dir, v6) {
        (Direction::Import, false) => "importV4",
        (Direction::Import, true) => "importV6",
        (Direction::Export, false) => "exportV4",
        (Direction::Export, true) => "exportV6",
    }
}

/// The step of a peer's policy that decided, in words.
fn decided(policy: &PeerPolicy, by: DecidedBy, dir: Direction, prefix: IpNet) -> String {
    let ranges = match &policy.default_export {
        DefaultExport::Calico(r) => r.as_slice(),
        DefaultExport::All => &[],
    };
    match by {
        DecidedBy::Rule { filter, rule } => format!(
            "BGPFilter {} rule {} of {}",
            policy.filters.get(filter).map_or("?", |f| f.name.as_str()),
            rule + 1,
            direction_list(dir, prefix.addr().is_ipv6())
        ),
        DecidedBy::ExportDisabled(i) => match ranges.get(i).map(|r| &r.source) {
            Some(RangeSource::IpPoolExportDisabled(pool)) => format!("IPPool {pool} has disableBGPExport"),
            _ => "its IPPool has disableBGPExport".into(),
        },
        DecidedBy::NotExportable => {
            "Calico's default export passes on learned routes only inside its IP pools and service ranges".into()
        }
        DecidedBy::ImportDefault | DecidedBy::ExportAll | DecidedBy::OwnRoute | DecidedBy::InRange(_) => {
            "accepted".into()
        }
    }
}
