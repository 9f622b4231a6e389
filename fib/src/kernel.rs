//! The kernel's view of a route, normalised so that what we want and what a dump or a
//! notification shows compare equal exactly when no write is needed; and the netlink
//! messages (netlink-packet-route types) that carry it.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop, RouteNextHopFlags,
    RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// `RT_TABLE_MAIN`.
pub const RT_TABLE_MAIN: u32 = 254;
/// `RTPROT_BGP`.
pub const RTPROT_BGP: u8 = 186;
/// `RTPROT_KERNEL`: routes the kernel adds itself, such as an interface's subnet.
pub const RTPROT_KERNEL: u8 = 2;

/// One next hop as the kernel holds it: output interface index instead of a name, and the
/// gateway (if any) already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct KernelHop {
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub weight: u8,
    pub onlink: bool,
}

/// What a route in the kernel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KernelTarget {
    /// Sorted, deduplicated next hops; weight 1 when there is only one.
    Unicast(Vec<KernelHop>),
    Blackhole,
    Unreachable,
    /// Any other `rtm_type` (local, prohibit, throw, …): never ours, kept for comparison.
    Other(u8),
}

/// A route's content in the kernel, compared against what we want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelSpec {
    pub target: KernelTarget,
    pub pref_src: Option<IpAddr>,
}

impl KernelSpec {
    /// Builds a unicast spec in canonical form.
    pub fn unicast(mut hops: Vec<KernelHop>, pref_src: Option<IpAddr>) -> Self {
        hops.sort();
        hops.dedup_by(|a, b| a.gateway == b.gateway && a.oif == b.oif);
        if hops.len() == 1 {
            hops[0].weight = 1;
        }
        KernelSpec { target: KernelTarget::Unicast(hops), pref_src }
    }
}

/// A route read from a dump, a notification or a lookup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRoute {
    pub prefix: IpNet,
    pub table: u32,
    pub protocol: u8,
    pub metric: u32,
    pub spec: KernelSpec,
}

/// Where and as whom we write: the FIB's table, protocol number and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub table: u32,
    pub protocol: u8,
    pub metric: u32,
}

impl Identity {
    /// The metric the kernel reports for our routes of this family: IPv6 turns 0 into 1024.
    pub fn metric_for(&self, prefix: &IpNet) -> u32 {
        kernel_metric(prefix, self.metric)
    }

    /// The same identity at another metric (a route's own, a replaced speaker's).
    pub fn at(&self, metric: u32) -> Identity {
        Identity { metric, ..*self }
    }
}

/// `metric` as the kernel reports it for a route to `prefix`: IPv6 turns 0 into 1024.
pub(crate) fn kernel_metric(prefix: &IpNet, metric: u32) -> u32 {
    match prefix {
        IpNet::V6(_) if metric == 0 => 1024,
        _ => metric,
    }
}

fn family_of(prefix: &IpNet) -> AddressFamily {
    match prefix {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The gateway an attribute names: `RTA_GATEWAY`, or `RTA_VIA` (a gateway of
/// the other family: an IPv4 route through an IPv6 next hop, RFC 8950).
fn gateway_of(attr: &RouteAttribute) -> Option<IpAddr> {
    match attr {
        RouteAttribute::Gateway(a) => ip_of(a),
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The attribute that carries gateway `gw` of a route to `prefix`: the
/// kernel takes a gateway of the prefix's own family as `RTA_GATEWAY` and
/// one of the other family only as `RTA_VIA` (Linux 5.2 and later).
fn gateway_attribute(prefix: &IpNet, gw: IpAddr) -> RouteAttribute {
    match (prefix, gw) {
        (IpNet::V4(_), IpAddr::V6(a)) => RouteAttribute::Via(RouteVia::Inet6(a)),
        (IpNet::V6(_), IpAddr::V4(a)) => RouteAttribute::Via(RouteVia::Inet(a)),
        _ => RouteAttribute::Gateway(gw.into()),
    }
}

/// Reads a route message. `None` for families other than IPv4/IPv6 and malformed prefixes.
pub(crate) fn decode_route(msg: &RouteMessage) -> Option<TableRoute> {
    let h = &msg.header;
    let full = match h.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if h.destination_prefix_length > full {
        return None;
    }
    let mut dst = None;
    let mut table = u32::from(h.table);
    let mut metric = 0;
    let mut gateway = None;
    let mut oif = 0;
    let mut pref_src = None;
    let mut multipath: Option<&Vec<RouteNextHop>> = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = gateway_of(attr),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::PrefSource(a) => pref_src = ip_of(a),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match h.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    let prefix = IpNet::new(dst, h.destination_prefix_length).ok()?;
    let target = match h.kind {
        RouteType::Unicast => {
            let hops = match multipath {
                Some(hops) => hops
                    .iter()
                    .map(|nh| KernelHop {
                        gateway: nh.attributes.iter().find_map(gateway_of),
                        oif: nh.interface_index,
                        weight: nh.hops.saturating_add(1),
                        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                    })
                    .collect(),
                None => vec![KernelHop { gateway, oif, weight: 1, onlink: h.flags.contains(RouteFlags::Onlink) }],
            };
            return Some(TableRoute {
                prefix,
                table,
                protocol: h.protocol.into(),
                metric,
                spec: KernelSpec::unicast(hops, pref_src),
            });
        }
        RouteType::BlackHole => KernelTarget::Blackhole,
        RouteType::Unreachable => KernelTarget::Unreachable,
        other => KernelTarget::Other(other.into()),
    };
    Some(TableRoute { prefix, table, protocol: h.protocol.into(), metric, spec: KernelSpec { target, pref_src } })
}

fn base_header(prefix: &IpNet, id: &Identity) -> RouteHeader {
    RouteHeader {
        address_family: family_of(prefix),
        destination_prefix_length: prefix.prefix_len(),
        // Tables above 255 go in RTA_TABLE only.
        table: u8::try_from(id.table).unwrap_or(0),
        protocol: RouteProtocol::from(id.protocol),
        ..RouteHeader::default()
    }
}

fn base_attributes(prefix: &IpNet, id: &Identity) -> Vec<RouteAttribute> {
    vec![
        RouteAttribute::Table(id.table),
        RouteAttribute::Destination(prefix.network().into()),
        RouteAttribute::Priority(id.metric_for(prefix)),
    ]
}

/// `RTM_NEWROUTE` for our route with this content.
pub(crate) fn encode_install(prefix: &IpNet, spec: &KernelSpec, id: &Identity) -> RouteMessage {
    let mut header = base_header(prefix, id);
    let mut attributes = base_attributes(prefix, id);
    header.scope = RouteScope::Universe;
    match &spec.target {
        KernelTarget::Unicast(hops) => {
            header.kind = RouteType::Unicast;
            if let [hop] = hops.as_slice() {
                if let Some(gw) = hop.gateway {
                    attributes.push(gateway_attribute(prefix, gw));
                } else if prefix.addr().is_ipv4() {
                    header.scope = RouteScope::Link;
                }
                attributes.push(RouteAttribute::Oif(hop.oif));
                if hop.onlink {
                    header.flags |= RouteFlags::Onlink;
                }
            } else {
                let nhs = hops
                    .iter()
                    .map(|hop| {
                        let mut nh = RouteNextHop::default();
                        nh.interface_index = hop.oif;
                        nh.hops = hop.weight.saturating_sub(1);
                        if hop.onlink {
                            nh.flags |= RouteNextHopFlags::Onlink;
                        }
                        if let Some(gw) = hop.gateway {
                            nh.attributes.push(gateway_attribute(prefix, gw));
                        }
                        nh
                    })
                    .collect();
                attributes.push(RouteAttribute::MultiPath(nhs));
            }
        }
        KernelTarget::Blackhole => header.kind = RouteType::BlackHole,
        KernelTarget::Unreachable => header.kind = RouteType::Unreachable,
        KernelTarget::Other(t) => header.kind = RouteType::from(*t),
    }
    if let Some(src) = spec.pref_src {
        attributes.push(RouteAttribute::PrefSource(src.into()));
    }
    let mut msg = RouteMessage::default();
    msg.header = header;
    msg.attributes = attributes;
    msg
}

/// `RTM_DELROUTE` matching only our protocol, table and metric for this prefix.
pub(crate) fn encode_remove(prefix: &IpNet, id: &Identity) -> RouteMessage {
    let mut header = base_header(prefix, id);
    // As `ip route del` does: scope NOWHERE and type UNSPEC match any route of the key.
    header.scope = RouteScope::NoWhere;
    header.kind = RouteType::Unspec;
    let mut msg = RouteMessage::default();
    msg.header = header;
    msg.attributes = base_attributes(prefix, id);
    msg
}

/// `RTM_GETROUTE` with `RTM_F_FIB_MATCH`: which FIB entry forwards to `addr`.
pub(crate) fn encode_lookup(addr: IpAddr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    msg.header.flags = RouteFlags::FibMatch;
    msg.attributes.push(RouteAttribute::Destination(addr.into()));
    msg
}

/// A route dump request of one family, filtered to one table (needs strict checking).
pub(crate) fn encode_route_dump(family: AddressFamily, table: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.table = u8::try_from(table).unwrap_or(0);
    msg.attributes.push(RouteAttribute::Table(table));
    msg
}

/// Kinds of request we put on the wire, for framing.
pub(crate) enum Request {
    Install(RouteMessage),
    Remove(RouteMessage),
    Lookup(RouteMessage),
    DumpRoutes(RouteMessage),
    DumpLinks,
}

/// Appends one framed netlink message to `buf`.
pub(crate) fn frame(buf: &mut Vec<u8>, request: Request, seq: u32, ack: bool) {
    let (inner, flags) = match request {
        Request::Install(m) => (RouteNetlinkMessage::NewRoute(m), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE),
        Request::Remove(m) => (RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST),
        Request::Lookup(m) => (RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST),
        Request::DumpRoutes(m) => (RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST | NLM_F_DUMP),
        Request::DumpLinks => (RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_REQUEST | NLM_F_DUMP),
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags | if ack { NLM_F_ACK } else { 0 };
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    msg.finalize();
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

/// A link's name and whether it can forward (administratively up with carrier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub index: u32,
    pub name: Option<String>,
    pub usable: bool,
}

/// Reads a link message.
pub(crate) fn decode_link(msg: &LinkMessage) -> LinkState {
    let flags = msg.header.flags;
    LinkState {
        index: msg.header.index,
        name: msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }),
        usable: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity { table: 100, protocol: RTPROT_BGP, metric: 20 };

    fn roundtrip(msg: &RouteMessage) -> RouteMessage {
        let mut buf = Vec::new();
        frame(&mut buf, Request::Install(msg.clone()), 1, false);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap().payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn hop(gw: &str, oif: u32, weight: u8) -> KernelHop {
        KernelHop { gateway: Some(gw.parse().unwrap()), oif, weight, onlink: false }
    }

    #[test]
    fn install_roundtrips_to_the_same_spec() {
        let cases = [
            ("10.0.0.0/24", KernelSpec::unicast(vec![hop("192.0.2.2", 3, 1)], None)),
            (
                "10.0.0.0/24",
                KernelSpec::unicast(
                    vec![hop("192.0.2.2", 3, 5), hop("198.51.100.2", 4, 1)],
                    Some("192.0.2.1".parse().unwrap()),
                ),
            ),
            ("2001:db8::/64", KernelSpec::unicast(vec![hop("fe80::1", 3, 2), hop("fe80::2", 4, 3)], None)),
            // RFC 8950: IPv4 through IPv6 gateways (RTA_VIA), alone and in ECMP.
            ("10.8.0.0/26", KernelSpec::unicast(vec![hop("fd00::12", 3, 1)], None)),
            ("10.8.1.0/26", KernelSpec::unicast(vec![hop("fd00::12", 3, 1), hop("fd00:1::13", 4, 1)], None)),
            ("10.9.0.0/26", KernelSpec { target: KernelTarget::Blackhole, pref_src: None }),
            (
                "10.9.0.0/26",
                KernelSpec::unicast(
                    vec![KernelHop { gateway: Some("172.16.0.9".parse().unwrap()), oif: 7, weight: 1, onlink: true }],
                    None,
                ),
            ),
            // ECMP through a tunnel: onlink per next hop (rtnh_flags), mixed with a plain hop.
            (
                "10.9.1.0/26",
                KernelSpec::unicast(
                    vec![
                        KernelHop { gateway: Some("172.16.0.9".parse().unwrap()), oif: 7, weight: 1, onlink: true },
                        KernelHop { gateway: Some("172.16.1.9".parse().unwrap()), oif: 7, weight: 1, onlink: true },
                        hop("192.0.2.2", 3, 1),
                    ],
                    None,
                ),
            ),
        ];
        for (prefix, spec) in cases {
            let prefix: IpNet = prefix.parse().unwrap();
            let msg = roundtrip(&encode_install(&prefix, &spec, &ID));
            let got = decode_route(&msg).unwrap();
            assert_eq!(got.prefix, prefix);
            assert_eq!(got.table, 100);
            assert_eq!(got.protocol, RTPROT_BGP);
            assert_eq!(got.metric, 20);
            assert_eq!(got.spec, spec, "{prefix}");
        }
    }

    #[test]
    fn an_ipv6_gateway_of_an_ipv4_route_is_written_as_rta_via() {
        let prefix: IpNet = "10.8.0.0/26".parse().unwrap();
        let msg = encode_install(&prefix, &KernelSpec::unicast(vec![hop("fd00::12", 3, 1)], None), &ID);
        let via = RouteAttribute::Via(RouteVia::Inet6("fd00::12".parse().unwrap()));
        assert!(msg.attributes.contains(&via), "{:?}", msg.attributes);
        assert!(!msg.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_))));
    }

    #[test]
    fn single_hop_weight_is_normalised() {
        let a = KernelSpec::unicast(vec![hop("192.0.2.2", 3, 9)], None);
        let b = KernelSpec::unicast(vec![hop("192.0.2.2", 3, 1)], None);
        assert_eq!(a, b);
    }

    #[test]
    fn ipv6_metric_zero_reads_back_as_1024() {
        let id = Identity { metric: 0, ..ID };
        assert_eq!(id.metric_for(&"2001:db8::/64".parse().unwrap()), 1024);
        assert_eq!(id.metric_for(&"10.0.0.0/8".parse().unwrap()), 0);
    }

    #[test]
    fn remove_matches_only_our_protocol() {
        let prefix: IpNet = "10.0.0.0/24".parse().unwrap();
        let msg = encode_remove(&prefix, &ID);
        assert_eq!(u8::from(msg.header.protocol), RTPROT_BGP);
        assert_eq!(msg.header.scope, RouteScope::NoWhere);
    }

    #[test]
    fn frame_sets_ack_only_when_asked() {
        let mut buf = Vec::new();
        let prefix: IpNet = "10.0.0.0/24".parse().unwrap();
        frame(&mut buf, Request::Remove(encode_remove(&prefix, &ID)), 7, false);
        let first = buf.len();
        frame(&mut buf, Request::Remove(encode_remove(&prefix, &ID)), 8, true);
        let a = netlink_packet_core::NetlinkBuffer::new_checked(&buf[..first]).unwrap();
        let b = netlink_packet_core::NetlinkBuffer::new_checked(&buf[first..]).unwrap();
        assert_eq!(a.flags() & NLM_F_ACK, 0);
        assert_eq!(b.flags() & NLM_F_ACK, NLM_F_ACK);
        assert_eq!(b.sequence_number(), 8);
    }
}
