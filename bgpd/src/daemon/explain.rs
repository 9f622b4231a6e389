//! `bgpd explain PREFIX`: the RIB's typed [`Explanation`] put into the words
//! a network engineer uses, with what only the daemon knows added: why this
//! node originates the prefix (which Calico object) and what the kernel task
//! says about it. [`view`] builds the answer (JSON for `--json`, each line
//! with a reason code and its sentence); [`render`] prints it. The design
//! simulator can build the same view from its own `Rib`.

use std::net::IpAddr;

use bgpd_proto::rib::attrs::PathAttrs;
use bgpd_proto::rib::checks::Ignored;
use bgpd_proto::rib::core::{
    Explanation, Export, Forwarding, Import, PathExport, PathSource, PathStatus, PeerDrops, PeerKind, PolicyStep,
    Rejection,
};
use bgpd_proto::rib::policy::{
    Action, CommunityValue, Direction, ExportRange, MatchOperator, PeerType, RangeSource, Rule, Source,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::originate::Origination;

/// The answer to `bgpd explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainView {
    /// The prefix asked about.
    pub prefix: IpNet,
    /// Why this node originates it, when it does (the Calico objects).
    pub originated: Option<String>,
    /// Facts about the prefix as a whole (selection deferral, the ranges
    /// Calico's default export knows for it).
    pub notes: Vec<String>,
    /// Every path, best first.
    pub paths: Vec<PathLine>,
    /// Whether and how it is in the kernel.
    pub kernel: Line,
    /// Per peer.
    pub peers: Vec<PeerLines>,
}

/// One path to the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathLine {
    /// `local` or the peer's name.
    pub from: String,
    /// Next hop, AS path (as received).
    pub route: String,
    /// `best`, `multipath`, `ecmp_full`, `lost`.
    pub status: String,
    /// Why it is not used, in words.
    pub text: String,
}

/// A reason code and its sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// A stable code for scripts (`sent`, `rejected_by_rule`, `as_path_loop`, …).
    pub code: String,
    /// The sentence.
    pub text: String,
}

/// One peer and the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLines {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: IpAddr,
    /// `eBGP`, `iBGP`, `iBGP route reflector client`.
    pub kind: String,
    /// What it sent of the prefix.
    pub received: Line,
    /// What it is sent: one line per path, or one line for the peer.
    pub advertised: Vec<Line>,
}

fn line(code: &str, text: impl Into<String>) -> Line {
    Line { code: code.into(), text: text.into() }
}

/// The answer for `e`; `originations`: what this node originates and why;
/// `kernel_failing`: the kernel task's reason when the prefix is not in the
/// kernel as wanted; `peer`: only that peer.
pub fn view(
    e: &Explanation,
    originations: &[Origination],
    kernel_failing: Option<&str>,
    peer: Option<&str>,
) -> ExplainView {
    let originated = originations.iter().find(|o| o.prefix == e.prefix).map(|o| o.cause.clone());
    let mut notes = Vec::new();
    if e.deferring {
        notes.push(
            "this node restarted and defers selection (RFC 4724 §4.1): nothing is advertised or installed until \
             its peers sent End-of-RIB; below is what will be sent then"
                .to_string(),
        );
    }
    if originated.is_none() {
        match e.export_ranges.iter().rev().find(|r| !r.source.exported()) {
            Some(r) => notes.push(format!(
                "inside {}: this node does not advertise its blocks there, nor pass on learned routes inside it",
                range_name(r)
            )),
            None if e.paths.is_empty() => notes.push(format!("this node does not originate {}", e.prefix)),
            None => {}
        }
    }
    let paths = e.paths.iter().map(path_line).collect();
    let blackhole = originations.iter().any(|o| o.prefix == e.prefix && o.blackhole);
    let kernel = kernel_line(e, kernel_failing, blackhole);
    let peers = e
        .peers
        .iter()
        .filter(|p| peer.is_none_or(|n| n == p.name))
        .map(|p| PeerLines {
            name: p.name.clone(),
            address: p.addr,
            kind: kind_name(p.kind).to_string(),
            received: import_line(&p.import),
            advertised: export_lines(e, &p.export),
        })
        .collect();
    ExplainView { prefix: e.prefix, originated, notes, paths, kernel, peers }
}

fn kind_name(k: PeerKind) -> &'static str {
    match k {
        PeerKind::Ebgp => "eBGP",
        PeerKind::Ibgp => "iBGP",
        PeerKind::IbgpClient => "iBGP route reflector client",
    }
}

fn route_of(a: &PathAttrs) -> String {
    let nh = a.next_hop.map_or_else(|| "-".to_string(), |n| n.to_string());
    let path = a.as_path_ref().map(|p| p.to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "(empty)".into());
    format!("via {nh}, AS path {path}")
}

fn from_name(s: &PathSource) -> String {
    match s {
        PathSource::Originated => "local".to_string(),
        PathSource::Peer { name, .. } => name.clone(),
    }
}

fn path_line(p: &bgpd_proto::rib::core::PathExplanation) -> PathLine {
    let stale = if p.stale { " (stale: its peer is restarting or refreshing)" } else { "" };
    let (status, text) = match p.status {
        PathStatus::Best => ("best", format!("best path{stale}")),
        PathStatus::Multipath => ("multipath", format!("used: equal to the best, shares the traffic (ECMP){stale}")),
        PathStatus::EcmpFull { max_paths } => {
            ("ecmp_full", format!("equal to the best, but the ECMP set is full (bgpd.io/max-paths {max_paths}){stale}"))
        }
        PathStatus::Lost(r) => ("lost", format!("not used: {}{stale}", r.describe())),
    };
    let route = match &p.source {
        PathSource::Originated => "originated by this node".to_string(),
        PathSource::Peer { .. } => route_of(&p.attrs),
    };
    PathLine { from: from_name(&p.source), route, status: status.into(), text }
}

fn kernel_line(e: &Explanation, failing: Option<&str>, blackhole: bool) -> Line {
    if let Some(why) = failing {
        return line("not_installed", format!("wanted in the kernel but not there: {why}"));
    }
    if e.deferring {
        return line("deferred", "held back until the selection deferral ends; the kernel keeps what it had");
    }
    match &e.forwarding {
        Forwarding::Originated if blackhole => line(
            "originated",
            "originated here, a block of this node's pods: a blackhole route for it (addresses without a pod \
             are dropped here), each pod its own route",
        ),
        Forwarding::Originated => line("originated", "originated here: no learned route for it in the kernel"),
        Forwarding::Learned(hops) if !e.fib => line(
            "not_programmed",
            format!(
                "best via {}, but this bgpd does not program the kernel (--no-kernel)",
                hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        ),
        Forwarding::Learned(hops) if hops.len() > 1 => line(
            "installed_ecmp",
            format!("installed through {} (ECMP)", hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        ),
        Forwarding::Learned(hops) => {
            line("installed", format!("installed through {}", hops.first().map_or("-".into(), |h| h.to_string())))
        }
        Forwarding::NoUsablePath => line("unusable", "not installed: no path is usable, every next hop is unreachable"),
        Forwarding::NoRoute => line("no_route", "not installed: no path to it in the RIB"),
    }
}

fn import_line(i: &Import) -> Line {
    match i {
        Import::InRib(1) => line("in_rib", "sent it; its path is in the RIB (see the paths)"),
        Import::InRib(n) => line("in_rib", format!("sent it; its {n} paths are in the RIB (ADD-PATH)")),
        Import::NoSession => line("no_session", "no session: nothing received"),
        Import::FamilyNotNegotiated => {
            line("family_not_negotiated", "the session did not negotiate this address family")
        }
        Import::NotReceived => line("not_received", "did not send it (the copy kept before import policy has nothing)"),
        Import::NotInRib { unrecorded: false } => {
            line("not_in_rib", "not in the RIB: not received from it (no import rejection recorded)")
        }
        Import::NotInRib { unrecorded: true } => line(
            "not_in_rib",
            "not in the RIB: not received, or rejected on import (it had more rejected routes than are recorded)",
        ),
        Import::Rejected(r) => rejection_line(r),
    }
}

fn rejection_line(r: &Rejection) -> Line {
    match r {
        Rejection::TreatAsWithdraw => {
            line("malformed", "sent it in a malformed UPDATE, treated as a withdrawal (RFC 7606)")
        }
        Rejection::AsPathLoop { asn, allowed } => line(
            "as_path_loop",
            format!(
                "sent it and it was dropped: AS {asn} is in the AS path (an AS-path loop{})",
                if *allowed > 0 { format!(", more than the {allowed} times allowed") } else { String::new() }
            ),
        ),
        Rejection::OriginatorIsSelf => {
            line("originator_loop", "sent it and it was dropped: its ORIGINATOR_ID is this node (RFC 4456)")
        }
        Rejection::ClusterLoop => {
            line("cluster_loop", "sent it and it was dropped: its CLUSTER_LIST holds this node's cluster ID (RFC 4456)")
        }
        Rejection::ConfedFromExternal => line(
            "confed_from_external",
            "sent it with confederation segments over eBGP, treated as a withdrawal (RFC 5065)",
        ),
        Rejection::NextHop { kind, addr } => {
            let why = match kind {
                Ignored::OwnNextHop => "it is this node's own address",
                Ignored::MartianNextHop => "no neighbour can have that address",
                Ignored::Ipv6NextHopWithoutExtendedNextHop => {
                    "an IPv6 next hop for IPv4 without the extended next hop capability"
                }
                _ => "it is unusable",
            };
            line("bad_next_hop", format!("sent it with next hop {addr}, dropped: {why} (RFC 4271 §6.3)"))
        }
        Rejection::Policy(step) => {
            line("rejected_on_import", format!("sent it and import policy rejected it: {}", step_text(step)))
        }
    }
}

fn export_lines(e: &Explanation, x: &Export) -> Vec<Line> {
    let (paths, paused, held) = match x {
        Export::NoSession => return vec![line("no_session", "no session: nothing sent")],
        Export::FamilyNotNegotiated => {
            return vec![line("family_not_negotiated", "the session did not negotiate this address family")]
        }
        Export::Paths { paths, paused, held_until } => (paths, *paused, held_until.is_some()),
    };
    let mut out = Vec::new();
    if paths.is_empty() {
        out.push(line("no_route", "nothing sent: no route to advertise"));
    }
    for (p, outcome) in e.paths.iter().zip(paths) {
        let from = match &p.source {
            PathSource::Originated => "the local route".to_string(),
            PathSource::Peer { name, .. } => format!("the path from {name}"),
        };
        out.push(match outcome {
            PathExport::Sent { attrs, by, dropped_by_peer, path_id } => {
                let id = path_id.map_or_else(String::new, |i| format!(" as path ID {i}"));
                let mut text = format!("{from}: sent{id} ({}), {}", route_of(attrs), step_text(by));
                let code = match dropped_by_peer {
                    Some(PeerDrops::AsPathLoop(asn)) => {
                        text.push_str(&format!(
                            "; but the peer drops it: its own AS {asn} is in the AS path (an AS-path loop; it \
                             needs allowas-in, or this node another AS)"
                        ));
                        "sent_but_as_path_loop"
                    }
                    Some(PeerDrops::OriginatorIsPeer) => {
                        text.push_str("; but the peer drops it: the ORIGINATOR_ID is its own (RFC 4456)");
                        "sent_but_originator_loop"
                    }
                    None => "sent",
                };
                line(code, text)
            }
            PathExport::NotUsed => line("not_used", format!("{from}: not sent, it is not used here (see the paths)")),
            PathExport::OnlyBestWithoutAddPath => {
                line("not_best", format!("{from}: not sent, without ADD-PATH only the best path is advertised"))
            }
            PathExport::AddPathLimit(n) => line(
                "add_path_limit",
                format!("{from}: not sent, ADD-PATH sends the first {n} (bgpd.io/add-path-send-count)"),
            ),
            PathExport::FromThisPeer => line(
                "split_horizon",
                format!("{from}: not sent back to the peer it came from (this withdraws the prefix there)"),
            ),
            PathExport::IbgpSplitHorizon { reflector: false } => line(
                "ibgp_split_horizon",
                format!(
                    "{from}: not sent, learned over iBGP and this node is no route reflector (iBGP routes are \
                     not passed to iBGP peers; set routeReflectorClusterID or use a full mesh)"
                ),
            ),
            PathExport::IbgpSplitHorizon { reflector: true } => line(
                "ibgp_split_horizon",
                format!(
                    "{from}: not sent, learned from an iBGP peer that is not a client and the peer is not a client \
                     either (RFC 4456 reflects only to and from clients)"
                ),
            ),
            PathExport::LongLivedStale => line(
                "llgr_stale",
                format!("{from}: not sent, it is long-lived stale and the peer did not offer LLGR (RFC 9494)"),
            ),
            PathExport::Rejected(step) => line(
                match step {
                    PolicyStep::Rule { .. } => "rejected_by_rule",
                    PolicyStep::ExportDisabled(_) => "export_disabled",
                    _ => "not_exportable",
                },
                format!("{from}: not sent, {}", step_text(step)),
            ),
            PathExport::NoNextHop => line(
                "no_next_hop",
                format!("{from}: not sent, the session has no address of this family to use as next hop"),
            ),
        });
    }
    if paused {
        out.push(line(
            "paused",
            "export to this peer is paused (it does not read what it is sent); it gets this once it catches up",
        ));
    }
    if held {
        out.push(line("mrai", "a change of it waits for the MRAI interval of the peer's update group"));
    }
    out
}

fn range_name(r: &ExportRange) -> String {
    match &r.source {
        RangeSource::IpPool(n) => format!("IPPool {n} ({})", r.cidr),
        RangeSource::IpPoolExportDisabled(n) => format!("IPPool {n} ({}, disableBGPExport)", r.cidr),
        RangeSource::IpamBlock(n) => format!("IPAMBlock {n} ({})", r.cidr),
        RangeSource::ServiceClusterIps => format!("serviceClusterIPs {}", r.cidr),
        RangeSource::ServiceExternalIps => format!("serviceExternalIPs {}", r.cidr),
        RangeSource::ServiceLoadBalancerIps => format!("serviceLoadBalancerIPs {}", r.cidr),
    }
}

/// The policy step, as a clause.
fn step_text(s: &PolicyStep) -> String {
    match s {
        PolicyStep::Rule { filter, direction, v6, index } => {
            let list = match (direction, v6) {
                (Direction::Import, false) => "importV4",
                (Direction::Import, true) => "importV6",
                (Direction::Export, false) => "exportV4",
                (Direction::Export, true) => "exportV6",
            };
            let rule = s.rule().map_or_else(String::new, |r| format!(": {}", rule_text(r)));
            format!("BGPFilter {} {list} rule {}{rule}", filter.name, index + 1)
        }
        PolicyStep::ImportDefault => "no filter rule matched, imported by default".into(),
        PolicyStep::ExportAll => "no filter rule matched, everything is exported to this peer".into(),
        PolicyStep::OwnRoute => "Calico's default export (this node's own route)".into(),
        PolicyStep::InRange(r) => format!("Calico's default export (a learned route inside {})", range_name(r)),
        PolicyStep::ExportDisabled(r) => {
            format!("Calico's default export holds back learned routes inside {}", range_name(r))
        }
        PolicyStep::NotExportable => "Calico's default export passes on learned routes only inside an IP pool or a \
                                      service range, and this one is outside every one (the node is no transit)"
            .into(),
    }
}

/// A rule as its YAML reads: conditions, then the action.
fn rule_text(r: &Rule) -> String {
    let mut c = Vec::new();
    if let Some(m) = &r.cidr {
        let op = match m.op {
            MatchOperator::Equal => "Equal",
            MatchOperator::NotEqual => "NotEqual",
            MatchOperator::In => "In",
            MatchOperator::NotIn => "NotIn",
        };
        let len = match (m.min_len, m.max_len) {
            (None, None) => String::new(),
            (lo, hi) => format!(
                " prefixLength {}..{}",
                lo.map_or(String::new(), |x| x.to_string()),
                hi.map_or(String::new(), |x| x.to_string())
            ),
        };
        c.push(format!("cidr {op} {}{len}", m.cidr));
    }
    if r.source == Some(Source::RemotePeers) {
        c.push("source RemotePeers".into());
    }
    if let Some(i) = &r.interface {
        c.push(format!("interface {i}"));
    }
    match r.peer_type {
        Some(PeerType::Ebgp) => c.push("peerType eBGP".into()),
        Some(PeerType::Ibgp) => c.push("peerType iBGP".into()),
        None => {}
    }
    match &r.community {
        Some(CommunityValue::Standard(x)) => c.push(format!("community {}:{}", x.0 >> 16, x.0 & 0xffff)),
        Some(CommunityValue::Large(x)) => c.push(format!("community {}:{}:{}", x.global, x.local1, x.local2)),
        None => {}
    }
    if let Some(p) = r.as_path_prefix.as_ref().filter(|p| !p.is_empty()) {
        c.push(format!("asPathPrefix {}", p.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")));
    }
    if let Some(p) = r.priority {
        c.push(format!("priority {p}"));
    }
    let action = match r.action {
        Action::Accept => "Accept",
        Action::Reject => "Reject",
    };
    if c.is_empty() {
        format!("every route, {action}")
    } else {
        format!("{}, {action}", c.join(", "))
    }
}

/// The answer as text, as `bgpd explain` prints it.
pub fn render(v: &ExplainView) -> String {
    let mut out = format!("{}\n", v.prefix);
    if let Some(o) = &v.originated {
        out.push_str(&format!("  originated here: {o}\n"));
    }
    for n in &v.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    if v.paths.is_empty() {
        out.push_str("  paths: none\n");
    } else {
        out.push_str("  paths:\n");
    }
    for p in &v.paths {
        out.push_str(&format!("    {:<16} {}: {}\n", p.from, p.route, p.text));
    }
    out.push_str(&format!("  kernel: {}\n", v.kernel.text));
    for p in &v.peers {
        out.push_str(&format!("  peer {} ({}, {}):\n", p.name, p.address, p.kind));
        out.push_str(&format!("    received:   {}\n", p.received.text));
        for (i, l) in p.advertised.iter().enumerate() {
            let head = if i == 0 { "advertised:" } else { "" };
            out.push_str(&format!("    {head:<11} {}\n", l.text));
        }
    }
    out
}
