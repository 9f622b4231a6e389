//! OPEN: what this speaker offers, how a received OPEN is checked (RFC 4271
//! §6.2, RFC 6286, RFC 6793, RFC 9234), and what two OPENs negotiate.

use std::time::Duration;

use super::config::SessionConfig;
use crate::error::{code, DecodeError};
use crate::types::{Afi, Family, FamilySet, AS_TRANS};
use crate::wire::{AddPathMode, Capability, GrFamily, GracefulRestart, LlgrFamily, Open, OptParam, Role, WireContext};

/// The OPEN this speaker sends for `cfg`.
pub fn build_open(cfg: &SessionConfig) -> Open {
    let mut caps: Vec<Capability> = cfg.families.iter().map(|f| Capability::Multiprotocol(*f)).collect();
    if cfg.route_refresh {
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
    }
    if cfg.extended_next_hop && cfg.families.contains(&Family::IPV4_UNICAST) {
        caps.push(Capability::ExtendedNextHop(vec![(Family::IPV4_UNICAST, Afi::IPV6)]));
    }
    if cfg.extended_message {
        caps.push(Capability::ExtendedMessage);
    }
    if let Some(role) = cfg.role {
        caps.push(Capability::Role(role));
    }
    if let Some(gr) = &cfg.graceful_restart {
        let mut flags = if gr.restarting { GracefulRestart::RESTART } else { 0 };
        if gr.notification {
            flags |= GracefulRestart::NOTIFICATION;
        }
        let forwarding = |f: &Family| if gr.forwarding_preserved.contains(f) { GrFamily::FORWARDING } else { 0 };
        caps.push(Capability::GracefulRestart(GracefulRestart {
            flags,
            time: gr.restart_time.min(4095),
            families: cfg.families.iter().map(|f| GrFamily { family: *f, flags: forwarding(f) }).collect(),
        }));
        // RFC 9494 §3: advertised together with the graceful restart capability.
        if let Some(stale_time) = gr.long_lived_stale_time {
            caps.push(Capability::LongLivedGr(
                cfg.families
                    .iter()
                    .map(|f| LlgrFamily {
                        family: *f,
                        flags: forwarding(f),
                        stale_time: stale_time.min(super::config::MAX_LONG_LIVED_STALE_TIME),
                    })
                    .collect(),
            ));
        }
    }
    caps.push(Capability::FourOctetAs(cfg.local_as));
    if !cfg.add_path.is_empty() {
        caps.push(Capability::AddPath(cfg.add_path.clone()));
    }
    if let Some(h) = &cfg.hostname {
        caps.push(Capability::Fqdn { hostname: h.chars().take(64).collect(), domain: String::new() });
    }
    // RFC 6793 §4.1: an AS that does not fit two octets is sent as AS_TRANS.
    let my_as = u16::try_from(cfg.local_as).unwrap_or(AS_TRANS as u16);
    Open::new(my_as, cfg.hold_time, cfg.bgp_id, caps)
}

/// What both OPENs agreed on; exists only once the peer's OPEN is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS (from the 4-octet AS capability when present).
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_id: std::net::Ipv4Addr,
    /// Negotiated hold time in seconds (the smaller of the two; 0 = none).
    pub hold_time: u16,
    /// Keepalive interval (`None` when the hold time is 0).
    pub keepalive: Option<Duration>,
    /// Families both sides offered (IPv4 unicast when the peer offered none, RFC 4760 §8).
    pub families: Vec<Family>,
    /// Both sides support 4-octet AS numbers.
    pub four_octet_as: bool,
    /// Families where the peer sends us path identifiers.
    pub add_path_rx: FamilySet,
    /// Families where we send path identifiers.
    pub add_path_tx: FamilySet,
    /// The peer accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// Both sides support enhanced route refresh.
    pub enhanced_route_refresh: bool,
    /// Both sides support extended messages.
    pub extended_message: bool,
    /// IPv4 unicast may carry IPv6 next hops (both sides offered it).
    pub extended_next_hop: bool,
    /// The peer's graceful restart capability.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// The peer's long-lived graceful restart families (RFC 9494 §3: only
    /// when it also sent the graceful restart capability).
    pub peer_llgr: Option<Vec<LlgrFamily>>,
    /// Both sides sent the N bit (RFC 8538 §2): only a Hard Reset ends
    /// graceful restart; other NOTIFICATIONs keep the routes.
    pub graceful_notification: bool,
    /// The peer's BGP role.
    pub peer_role: Option<Role>,
    /// The peer's host name (FQDN capability).
    pub peer_hostname: Option<String>,
    /// How to decode what the peer sends.
    pub rx: WireContext,
    /// How to encode what we send.
    pub tx: WireContext,
}

fn open_error(subcode: u8, data: Vec<u8>, reason: &'static str) -> DecodeError {
    DecodeError::new(code::OPEN_MESSAGE, subcode, data, reason)
}

/// RFC 9234 §4.2: the role pairs that may peer.
fn roles_match(ours: Role, theirs: Role) -> bool {
    matches!(
        (ours, theirs),
        (Role::PROVIDER, Role::CUSTOMER)
            | (Role::CUSTOMER, Role::PROVIDER)
            | (Role::RS, Role::RS_CLIENT)
            | (Role::RS_CLIENT, Role::RS)
            | (Role::PEER, Role::PEER)
    )
}

/// Checks the peer's OPEN against `cfg` and negotiates; an error carries the
/// NOTIFICATION to send.
pub fn negotiate(cfg: &SessionConfig, peer: &Open) -> Result<Negotiated, DecodeError> {
    // RFC 4271 §6.2: optional parameters other than capabilities are unsupported.
    if let Some(OptParam::Unknown { kind, .. }) = peer.params.iter().find(|p| matches!(p, OptParam::Unknown { .. })) {
        return Err(open_error(
            code::open::UNSUPPORTED_OPTIONAL_PARAMETER,
            vec![*kind],
            "unsupported optional parameter",
        ));
    }
    let peer_as = peer.asn();
    // RFC 6793 §4.2.1 / RFC 4271 §6.2: the AS must be the one configured.
    if peer_as != cfg.peer_as {
        return Err(open_error(
            code::open::BAD_PEER_AS,
            peer.my_as.to_be_bytes().to_vec(),
            "peer AS differs from the configured one",
        ));
    }
    // RFC 4271 §6.2: hold time 1 or 2 is unacceptable.
    if peer.hold_time == 1 || peer.hold_time == 2 {
        return Err(open_error(code::open::UNACCEPTABLE_HOLD_TIME, Vec::new(), "hold time of 1 or 2 seconds"));
    }
    // RFC 6286 §2.2: a non-zero identifier, distinct from ours within an AS.
    if peer.bgp_id.is_unspecified() || (cfg.is_ibgp() && peer.bgp_id == cfg.bgp_id) {
        return Err(open_error(
            code::open::BAD_BGP_IDENTIFIER,
            peer.bgp_id.octets().to_vec(),
            "invalid BGP identifier",
        ));
    }
    let mut peer_families = Vec::new();
    let mut four = false;
    let mut peer_add_path: Vec<(Family, AddPathMode)> = Vec::new();
    let (mut rr, mut err, mut ext_msg, mut ext_nh) = (false, false, false, false);
    let (mut gr, mut llgr, mut role, mut hostname) = (None, None, None, None);
    for c in peer.capabilities() {
        match c {
            Capability::Multiprotocol(f) => peer_families.push(*f),
            Capability::FourOctetAs(_) => four = true,
            Capability::AddPath(v) => peer_add_path.extend(v.iter().copied()),
            Capability::RouteRefresh => rr = true,
            Capability::EnhancedRouteRefresh => err = true,
            Capability::ExtendedMessage => ext_msg = true,
            Capability::ExtendedNextHop(v) => {
                ext_nh |= v.iter().any(|(f, nh)| *f == Family::IPV4_UNICAST && *nh == Afi::IPV6)
            }
            Capability::GracefulRestart(g) => gr = Some(g.clone()),
            Capability::LongLivedGr(v) => llgr = Some(v.clone()),
            Capability::Role(r) => role = Some(*r),
            Capability::Fqdn { hostname: h, .. } => hostname = Some(h.clone()),
            Capability::Unknown { .. } => {}
        }
    }
    // RFC 9234 §4.2: both roles present and not a valid pair → Role Mismatch.
    if let (Some(ours), Some(theirs)) = (cfg.role, role) {
        if !roles_match(ours, theirs) {
            return Err(open_error(code::open::ROLE_MISMATCH, Vec::new(), "BGP roles do not match"));
        }
    }
    if peer_families.is_empty() {
        // RFC 4760 §8: a peer without the capability speaks IPv4 unicast only.
        peer_families.push(Family::IPV4_UNICAST);
    }
    let families: Vec<Family> = cfg.families.iter().copied().filter(|f| peer_families.contains(f)).collect();
    let mode = |list: &[(Family, AddPathMode)], f: Family| list.iter().find(|(x, _)| *x == f).map(|(_, m)| *m);
    let (mut add_path_rx, mut add_path_tx) = (FamilySet::EMPTY, FamilySet::EMPTY);
    for f in &families {
        // RFC 7911 §4: receive where we can receive and the peer can send, and vice versa.
        if let (Some(ours), Some(theirs)) = (mode(&cfg.add_path, *f), mode(&peer_add_path, *f)) {
            if ours.receive() && theirs.send() {
                add_path_rx.insert(*f);
            }
            if ours.send() && theirs.receive() {
                add_path_tx.insert(*f);
            }
        }
    }
    let hold_time = cfg.hold_time.min(peer.hold_time);
    let keepalive = (hold_time > 0).then(|| {
        let third = Duration::from_secs(u64::from(hold_time) / 3).max(Duration::from_secs(1));
        cfg.keepalive_time.map_or(third, |k| k.min(third))
    });
    let four_octet_as = four;
    let extended_message = ext_msg && cfg.extended_message;
    // RFC 8950 §4: IPv4 unicast NLRI may carry IPv6 next hops once both sides offered it.
    let extended_next_hop =
        if ext_nh && cfg.extended_next_hop { FamilySet::of(&[Family::IPV4_UNICAST]) } else { FamilySet::EMPTY };
    // RFC 9494 §3: an LLGR capability without the graceful restart one is disregarded.
    let llgr = llgr.filter(|_| gr.is_some());
    let graceful_notification = cfg.graceful_restart.as_ref().is_some_and(|g| g.notification)
        && gr.as_ref().is_some_and(|g: &GracefulRestart| g.flags & GracefulRestart::NOTIFICATION != 0);
    Ok(Negotiated {
        peer_as,
        peer_id: peer.bgp_id,
        hold_time,
        keepalive,
        families,
        four_octet_as,
        add_path_rx,
        add_path_tx,
        route_refresh: rr || err,
        enhanced_route_refresh: err && cfg.route_refresh,
        extended_message,
        extended_next_hop: ext_nh && cfg.extended_next_hop,
        peer_graceful_restart: gr,
        peer_llgr: llgr,
        graceful_notification,
        peer_role: role,
        peer_hostname: hostname,
        rx: WireContext::new(four_octet_as)
            .with_add_path(add_path_rx)
            .with_extended_message(extended_message)
            .with_extended_next_hop(extended_next_hop),
        tx: WireContext::new(four_octet_as)
            .with_add_path(add_path_tx)
            .with_extended_message(extended_message)
            .with_extended_next_hop(extended_next_hop),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn cfg() -> SessionConfig {
        SessionConfig::new(65001, 65002, Ipv4Addr::new(10, 0, 0, 1))
    }

    fn peer_open(asn: u32, caps: Vec<Capability>) -> Open {
        Open::new(u16::try_from(asn).unwrap_or(AS_TRANS as u16), 90, Ipv4Addr::new(10, 0, 0, 2), caps)
    }

    #[test]
    fn four_octet_peer_as_is_checked_through_the_capability() {
        let mut c = cfg();
        c.peer_as = 4_200_000_002;
        let ok = peer_open(4_200_000_002, vec![Capability::FourOctetAs(4_200_000_002)]);
        let n = negotiate(&c, &ok).unwrap();
        assert!(n.four_octet_as);
        assert_eq!(n.peer_as, 4_200_000_002);
        let bad = peer_open(4_200_000_003, vec![Capability::FourOctetAs(4_200_000_003)]);
        let e = negotiate(&c, &bad).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 2));
        assert_eq!(e.data, (AS_TRANS as u16).to_be_bytes());
    }

    #[test]
    fn hold_time_and_keepalive() {
        let mut o = peer_open(65002, vec![]);
        o.hold_time = 30;
        let n = negotiate(&cfg(), &o).unwrap();
        assert_eq!(n.hold_time, 30);
        assert_eq!(n.keepalive, Some(Duration::from_secs(10)));
        o.hold_time = 0;
        assert_eq!(negotiate(&cfg(), &o).unwrap().keepalive, None);
        o.hold_time = 2;
        assert_eq!(negotiate(&cfg(), &o).unwrap_err().subcode, code::open::UNACCEPTABLE_HOLD_TIME);
    }

    #[test]
    fn bgp_identifier_rules() {
        let mut o = peer_open(65002, vec![]);
        o.bgp_id = Ipv4Addr::UNSPECIFIED;
        assert_eq!(negotiate(&cfg(), &o).unwrap_err().subcode, code::open::BAD_BGP_IDENTIFIER);
        // RFC 6286 §2.2: the same identifier is fine across ASes, not within one.
        o.bgp_id = Ipv4Addr::new(10, 0, 0, 1);
        assert!(negotiate(&cfg(), &o).is_ok());
        let mut ibgp = cfg();
        ibgp.peer_as = 65001;
        let mut o2 = peer_open(65001, vec![]);
        o2.bgp_id = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(negotiate(&ibgp, &o2).unwrap_err().subcode, code::open::BAD_BGP_IDENTIFIER);
    }

    #[test]
    fn families_and_add_path_per_direction() {
        let mut c = cfg();
        c.add_path = vec![(Family::IPV4_UNICAST, AddPathMode::BOTH), (Family::IPV6_UNICAST, AddPathMode::RECEIVE)];
        let o = peer_open(
            65002,
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::Multiprotocol(Family::IPV6_UNICAST),
                Capability::AddPath(vec![
                    (Family::IPV4_UNICAST, AddPathMode::SEND),
                    (Family::IPV6_UNICAST, AddPathMode::BOTH),
                ]),
            ],
        );
        let n = negotiate(&c, &o).unwrap();
        assert_eq!(n.families, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
        assert!(n.add_path_rx.contains(Family::IPV4_UNICAST) && n.add_path_rx.contains(Family::IPV6_UNICAST));
        assert!(!n.add_path_tx.contains(Family::IPV4_UNICAST) && !n.add_path_tx.contains(Family::IPV6_UNICAST));
        // No multiprotocol capability: IPv4 unicast only.
        assert_eq!(negotiate(&c, &peer_open(65002, vec![])).unwrap().families, vec![Family::IPV4_UNICAST]);
    }

    #[test]
    fn extended_next_hop_reaches_both_wire_contexts_only_when_both_offer_it() {
        let offer = || Capability::ExtendedNextHop(vec![(Family::IPV4_UNICAST, Afi::IPV6)]);
        let mut c = cfg();
        c.extended_next_hop = true;
        let n = negotiate(&c, &peer_open(65002, vec![offer()])).unwrap();
        assert!(n.extended_next_hop);
        for ctx in [&n.rx, &n.tx] {
            assert!(ctx.extended_next_hop.contains(Family::IPV4_UNICAST), "{ctx:?}");
        }
        // Offered by one side only: not negotiated, IPv6 next hops are not allowed for IPv4.
        let n = negotiate(&c, &peer_open(65002, vec![])).unwrap();
        assert!(!n.extended_next_hop && !n.rx.extended_next_hop.contains(Family::IPV4_UNICAST));
        c.extended_next_hop = false;
        let n = negotiate(&c, &peer_open(65002, vec![offer()])).unwrap();
        assert!(!n.rx.extended_next_hop.contains(Family::IPV4_UNICAST));
    }

    #[test]
    fn unknown_optional_parameter_and_role_mismatch() {
        let mut o = peer_open(65002, vec![]);
        o.params.push(OptParam::Unknown { kind: 9, data: vec![] });
        let e = negotiate(&cfg(), &o).unwrap_err();
        assert_eq!((e.subcode, e.data.as_slice()), (code::open::UNSUPPORTED_OPTIONAL_PARAMETER, &[9u8][..]));
        let mut c = cfg();
        c.role = Some(Role::PROVIDER);
        let o = peer_open(65002, vec![Capability::Role(Role::PROVIDER)]);
        assert_eq!(negotiate(&c, &o).unwrap_err().subcode, code::open::ROLE_MISMATCH);
        let o = peer_open(65002, vec![Capability::Role(Role::CUSTOMER)]);
        assert_eq!(negotiate(&c, &o).unwrap().peer_role, Some(Role::CUSTOMER));
    }

    #[test]
    fn our_open_offers_what_is_configured() {
        let mut c = cfg();
        c.local_as = 4_200_000_001;
        c.graceful_restart = Some(super::super::config::GracefulRestartConfig {
            restarting: true,
            forwarding_preserved: vec![Family::IPV4_UNICAST],
            ..super::super::config::GracefulRestartConfig::new(120)
        });
        let o = build_open(&c);
        assert_eq!(o.my_as, AS_TRANS as u16);
        assert_eq!(o.asn(), 4_200_000_001);
        let gr = o.capabilities().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        });
        let gr = gr.unwrap();
        assert!(gr.restarting());
        assert!(gr.families[0].forwarding() && !gr.families[1].forwarding());
    }

    #[test]
    fn n_bit_and_long_lived_capability() {
        use super::super::config::GracefulRestartConfig;
        let mut c = cfg();
        c.graceful_restart = Some(GracefulRestartConfig {
            forwarding_preserved: vec![Family::IPV6_UNICAST],
            notification: true,
            long_lived_stale_time: Some(3600),
            ..GracefulRestartConfig::new(120)
        });
        let o = build_open(&c);
        let gr = o.capabilities().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        });
        assert_eq!(gr.map(|g| g.flags), Some(GracefulRestart::NOTIFICATION), "N bit, no R bit");
        let ll = o.capabilities().find_map(|c| match c {
            Capability::LongLivedGr(v) => Some(v.clone()),
            _ => None,
        });
        let ll = ll.expect("LLGR capability offered");
        assert_eq!(
            ll.iter().map(|f| (f.family, f.flags, f.stale_time)).collect::<Vec<_>>(),
            vec![(Family::IPV4_UNICAST, 0, 3600), (Family::IPV6_UNICAST, GrFamily::FORWARDING, 3600)]
        );
        // The N bit counts only when both sides send it.
        let peer_gr = |flags| Capability::GracefulRestart(GracefulRestart { flags, time: 90, families: vec![] });
        assert!(
            negotiate(&c, &peer_open(65002, vec![peer_gr(GracefulRestart::NOTIFICATION)]))
                .unwrap()
                .graceful_notification
        );
        assert!(!negotiate(&c, &peer_open(65002, vec![peer_gr(0)])).unwrap().graceful_notification);
        let mut without = c.clone();
        if let Some(g) = without.graceful_restart.as_mut() {
            g.notification = false;
        }
        assert!(
            !negotiate(&without, &peer_open(65002, vec![peer_gr(GracefulRestart::NOTIFICATION)]))
                .unwrap()
                .graceful_notification
        );
        // RFC 9494 §3: LLGR without the graceful restart capability is disregarded.
        let llgr = Capability::LongLivedGr(vec![LlgrFamily { family: Family::IPV4_UNICAST, flags: 0, stale_time: 60 }]);
        assert_eq!(negotiate(&c, &peer_open(65002, vec![llgr.clone()])).unwrap().peer_llgr, None);
        assert!(negotiate(&c, &peer_open(65002, vec![peer_gr(0), llgr])).unwrap().peer_llgr.is_some());
    }
}
