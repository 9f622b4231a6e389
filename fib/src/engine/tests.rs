use super::*;
use crate::route::NextHop;
use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkHeader};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use std::num::NonZeroI32;

const PORT: u32 = 4242;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn serialize(msg: NetlinkMessage<RouteNetlinkMessage>) -> Vec<u8> {
    let mut msg = msg;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn header(seq: u32, flags: u16) -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.sequence_number = seq;
    h.port_number = PORT;
    h.flags = flags;
    h
}

fn done(seq: u32) -> Vec<u8> {
    serialize(NetlinkMessage::new(header(seq, NLM_F_MULTI), NetlinkPayload::Done(DoneMessage::default())))
}

fn answer(seq: u32, errno: i32) -> Vec<u8> {
    let mut e = ErrorMessage::default();
    e.code = NonZeroI32::new(-errno);
    e.header = vec![0; 16];
    serialize(NetlinkMessage::new(header(seq, 0), NetlinkPayload::Error(e)))
}

fn link(seq: u32, index: u32, name: &str, up: bool) -> Vec<u8> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
    }
    m.attributes.push(LinkAttribute::IfName(name.into()));
    serialize(NetlinkMessage::new(
        header(seq, NLM_F_MULTI),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)),
    ))
}

/// Sequence numbers and ACK flags of the messages in one transmitted batch.
fn messages(buf: &[u8]) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let nl = NetlinkBuffer::new_checked(rest).unwrap();
        out.push((nl.sequence_number(), nl.flags() & NLM_F_ACK != 0));
        rest = &rest[nl.length() as usize..];
    }
    out
}

/// An engine past its start-up dumps: link 3 "eth0" up, an empty table.
fn running() -> Engine {
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let mut e = Engine::new(&config, FibMetrics::unregistered(), PORT);
    let mut buf = Vec::new();
    for step in 0..3 {
        assert!(e.poll_transmit(&mut buf));
        let seq = messages(&buf)[0].0;
        if step == 0 {
            e.handle_datagram(&link(seq, 3, "eth0", true));
        }
        e.handle_datagram(&done(seq));
    }
    assert_eq!(e.poll_event(), Some(FibEvent::Resynced));
    e
}

fn via_eth0(prefix: &str, gw: &str) -> RouteChange {
    RouteChange::Upsert(Route::unicast(net(prefix), vec![NextHop::via_dev(gw.parse().unwrap(), "eth0")]))
}

#[test]
fn repeated_changes_of_one_prefix_are_written_once() {
    let mut e = running();
    for i in 1..=5 {
        e.apply(via_eth0("10.0.0.0/24", &format!("192.0.2.{i}")));
    }
    assert_eq!(e.queue_len(), 1);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(messages(&buf).len(), 1);
    assert!(!e.poll_transmit(&mut buf));
}

#[test]
fn only_the_last_message_of_a_batch_asks_for_an_ack() {
    let mut e = running();
    for i in 0..6 {
        e.apply(via_eth0(&format!("10.0.{i}.0/24"), "192.0.2.2"));
    }
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let first = messages(&buf);
    assert_eq!(first.len(), 4, "batch_size is 4");
    assert_eq!(first.iter().map(|m| m.1).collect::<Vec<_>>(), vec![false, false, false, true]);
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(messages(&buf).len(), 2);
    assert!(!e.is_settled());
}

#[test]
fn an_error_names_its_route_and_the_ack_settles_the_rest() {
    let mut e = running();
    for i in 0..4 {
        e.apply(via_eth0(&format!("10.0.{i}.0/24"), "192.0.2.2"));
    }
    let mut buf = Vec::new();
    e.poll_transmit(&mut buf);
    let seqs: Vec<u32> = messages(&buf).iter().map(|m| m.0).collect();
    // Written in descending order: 10.0.3, 10.0.2, 10.0.1, 10.0.0. The second message
    // fails (ENETUNREACH = 101); the ACK of the last follows.
    e.handle_datagram(&answer(seqs[1], 101));
    e.handle_datagram(&answer(seqs[3], 0));
    assert!(e.is_settled());
    let failures = e.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].prefix, net("10.0.2.0/24"));
    assert!(matches!(failures[0].kind, RouteErrorKind::Kernel { op: Op::Install, errno: 101, .. }), "{failures:?}");
    assert!(failures[0].to_string().contains("ENETUNREACH"));
    assert!(matches!(e.poll_event(), Some(FibEvent::Failed(_))));
}

#[test]
fn unknown_device_fails_without_a_write() {
    let mut e = running();
    e.apply(RouteChange::Upsert(Route::unicast(net("10.9.0.0/24"), vec![NextHop::dev("nope0")])));
    let mut buf = Vec::new();
    assert!(!e.poll_transmit(&mut buf));
    assert!(e.is_settled());
    assert_eq!(e.failures()[0].kind, RouteErrorKind::NoSuchDevice { device: "nope0".into() });
}

#[test]
fn overrun_forgets_outstanding_writes_and_dumps_again() {
    let mut e = running();
    e.apply(via_eth0("10.0.0.0/24", "192.0.2.2"));
    let mut buf = Vec::new();
    e.poll_transmit(&mut buf);
    e.handle_overrun();
    assert!(!e.is_settled());
    // The next transmission is the link dump, not a write.
    assert!(e.poll_transmit(&mut buf));
    let nl = NetlinkBuffer::new_checked(&buf[..]).unwrap();
    assert_eq!(nl.message_type(), 18, "RTM_GETLINK");
    assert_eq!(e.metrics.resyncs.get(), 2);
}

fn written(e: &Engine, buf: &[u8]) -> Vec<IpNet> {
    messages(buf)
        .iter()
        .filter_map(|(seq, _)| match e.in_flight.get(seq) {
            Some(InFlight::Write { prefix, .. }) => Some(*prefix),
            _ => None,
        })
        .collect()
}

#[test]
fn queue_is_served_in_descending_passes() {
    let mut e = running();
    for i in [1, 4, 2, 6, 3, 5] {
        e.apply(via_eth0(&format!("10.0.{i}.0/24"), "192.0.2.2"));
    }
    let mut buf = Vec::new();
    e.poll_transmit(&mut buf);
    let first = written(&e, &buf);
    assert_eq!(first, ["10.0.6.0/24", "10.0.5.0/24", "10.0.4.0/24", "10.0.3.0/24"].map(net));
    // A prefix above the cursor waits for the next pass; the lower ones go first.
    e.apply(via_eth0("10.0.9.0/24", "192.0.2.2"));
    e.poll_transmit(&mut buf);
    assert_eq!(written(&e, &buf), [net("10.0.2.0/24"), net("10.0.1.0/24"), net("10.0.9.0/24")]);
}

fn lookup_answer(seq: u32, dst: &str, oif: u32) -> Vec<u8> {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType};
    let prefix = net(dst);
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = 254;
    m.header.protocol = RouteProtocol::Kernel;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(prefix.network().into()));
    m.attributes.push(RouteAttribute::Oif(oif));
    serialize(NetlinkMessage::new(header(seq, 0), NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))))
}

#[test]
fn recursive_gateway_is_looked_up_once_then_routes_are_written() {
    let mut e = running();
    for i in 0..3 {
        e.apply(RouteChange::Upsert(Route::unicast(
            net(&format!("10.0.{i}.0/24")),
            vec![NextHop::via("192.0.2.2".parse().unwrap())],
        )));
    }
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let sent = messages(&buf);
    assert_eq!(sent.len(), 1, "one lookup, no write yet: {sent:x?}");
    assert_ne!(sent[0].0 & LOOKUP_SEQ, 0);
    assert!(!e.poll_transmit(&mut buf), "nothing to do until the answer");
    // The kernel answers: 192.0.2.0/24 is connected on link 3.
    e.handle_datagram(&lookup_answer(sent[0].0, "192.0.2.0/24", 3));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(written(&e, &buf).len(), 3);
    assert_eq!(e.counters.lookups.get(), 1);
}

// ----- encapsulation: device and onlink are part of what a route is --------------------

const ETH0: u32 = 3;
const TUNL0: u32 = 5;

/// An engine whose start-up dump shows eth0 and tunl0 up and the given IPv4 routes in
/// table 100; `desired` is applied before the dump ends.
fn started_with(table: Vec<Vec<u8>>, desired: Vec<RouteChange>) -> Engine {
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    start(&config, &[(ETH0, "eth0"), (TUNL0, "tunl0")], table, desired)
}

/// An engine of `config` whose start-up dump shows `links` up and `table` (every route
/// in the IPv4 step: the engine does not mind); `desired` is applied before the dump ends.
fn start(config: &FibConfig, links: &[(u32, &str)], table: Vec<Vec<u8>>, desired: Vec<RouteChange>) -> Engine {
    let mut e = Engine::new(config, FibMetrics::unregistered(), PORT);
    for c in desired {
        e.apply(c);
    }
    let mut buf = Vec::new();
    for step in 0..3 {
        assert!(e.poll_transmit(&mut buf));
        let seq = messages(&buf)[0].0;
        if step == 0 {
            for (index, name) in links {
                e.handle_datagram(&link(seq, *index, name, true));
            }
        }
        if step == 1 {
            for msg in &table {
                // Dump parts carry the dump's sequence number.
                let mut m = msg.clone();
                NetlinkBuffer::new(&mut m[..]).set_sequence_number(seq);
                e.handle_datagram(&m);
            }
        }
        e.handle_datagram(&done(seq));
    }
    assert_eq!(e.poll_event(), Some(FibEvent::Resynced));
    e
}

/// A route of ours (protocol 186, table 100, metric 20) as the kernel dumps it: one hop
/// in the header and `RTA_OIF`/`RTA_GATEWAY` (onlink in `rtm_flags`), several in
/// `RTA_MULTIPATH` (onlink in each `rtnh_flags`). `flags` is the netlink header's.
fn kernel_route(flags: u16, prefix: &str, hops: &[(&str, u32, bool)]) -> Vec<u8> {
    use netlink_packet_route::route::{
        RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags, RouteProtocol, RouteType,
    };
    let prefix = net(prefix);
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = 100;
    m.header.protocol = RouteProtocol::from(crate::RTPROT_BGP);
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(100));
    m.attributes.push(RouteAttribute::Destination(prefix.network().into()));
    m.attributes.push(RouteAttribute::Priority(20));
    if let [(gw, oif, onlink)] = hops {
        let gw: IpAddr = gw.parse().unwrap();
        m.attributes.push(RouteAttribute::Gateway(gw.into()));
        m.attributes.push(RouteAttribute::Oif(*oif));
        if *onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
    } else {
        let nhs = hops
            .iter()
            .map(|(gw, oif, onlink)| {
                let gw: IpAddr = gw.parse().unwrap();
                let mut nh = RouteNextHop::default();
                nh.interface_index = *oif;
                if *onlink {
                    nh.flags |= RouteNextHopFlags::Onlink;
                }
                nh.attributes.push(RouteAttribute::Gateway(gw.into()));
                nh
            })
            .collect();
        m.attributes.push(RouteAttribute::MultiPath(nhs));
    }
    let mut h = header(0, flags);
    h.port_number = 0;
    serialize(NetlinkMessage::new(h, NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))))
}

/// The kernel's connected route for an interface's subnet (protocol kernel, no gateway).
fn connected_route(flags: u16, prefix: &str, oif: u32) -> Vec<u8> {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
    let prefix = net(prefix);
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = 100;
    m.header.protocol = RouteProtocol::Kernel;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(100));
    m.attributes.push(RouteAttribute::Destination(prefix.network().into()));
    m.attributes.push(RouteAttribute::Priority(256));
    m.attributes.push(RouteAttribute::Oif(oif));
    let mut h = header(0, flags);
    h.port_number = 0;
    serialize(NetlinkMessage::new(h, NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))))
}

#[test]
fn a_connected_subnet_is_left_to_the_kernel() {
    let subnet = "fd00:0:1::/64";
    let mut e = started_with(vec![connected_route(NLM_F_MULTI, subnet, ETH0)], vec![]);
    let mut buf = Vec::new();
    e.apply(via_eth0(subnet, "fd00:0:1::1"));
    assert!(!e.poll_transmit(&mut buf), "no route of ours may compete with a connected one");
    let failures = e.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].kind, RouteErrorKind::Connected);
    // Another prefix through the same gateway is installed.
    e.apply(via_eth0("fd00:244::/122", "fd00:0:1::1"));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(written(&e, &buf), [net("fd00:244::/122")]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    // The interface's address goes away: the learned route is installed.
    let mut gone = connected_route(0, subnet, ETH0);
    NetlinkBuffer::new(&mut gone[..]).set_message_type(RTM_DELROUTE);
    e.handle_datagram(&gone);
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(written(&e, &buf), [net(subnet)]);
}

fn via_tunl0(prefix: &str, gws: &[&str]) -> RouteChange {
    RouteChange::Upsert(Route::unicast(
        net(prefix),
        gws.iter().map(|gw| NextHop::via_dev(gw.parse().unwrap(), "tunl0").onlink()).collect(),
    ))
}

/// The one route write in `buf`, read back as the kernel would.
fn written_route(buf: &[u8]) -> TableRoute {
    let msgs = messages(buf);
    assert_eq!(msgs.len(), 1, "one write expected: {msgs:?}");
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf).unwrap().payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => decode_route(&m).unwrap(),
        other => panic!("not a route install: {other:?}"),
    }
}

fn hops_of(r: &TableRoute) -> Vec<KernelHop> {
    match &r.spec.target {
        KernelTarget::Unicast(h) => h.clone(),
        other => panic!("not unicast: {other:?}"),
    }
}

fn khop(gw: &str, oif: u32, onlink: bool) -> KernelHop {
    KernelHop { gateway: Some(gw.parse().unwrap()), oif, weight: 1, onlink }
}

#[test]
fn a_change_of_encapsulation_rewrites_the_route_and_back() {
    let mut e = started_with(vec![], vec![]);
    let mut buf = Vec::new();
    e.apply(via_eth0("10.244.1.0/26", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(hops_of(&written_route(&buf)), vec![khop("192.0.2.2", ETH0, false)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    // Unchanged: nothing to write.
    e.apply(via_eth0("10.244.1.0/26", "192.0.2.2"));
    assert!(!e.poll_transmit(&mut buf));
    // Same gateway, now through the tunnel, onlink: a replace.
    e.apply(via_tunl0("10.244.1.0/26", &["192.0.2.2"]));
    assert!(e.poll_transmit(&mut buf));
    let r = written_route(&buf);
    assert_eq!(hops_of(&r), vec![khop("192.0.2.2", TUNL0, true)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    e.apply(via_tunl0("10.244.1.0/26", &["192.0.2.2"]));
    assert!(!e.poll_transmit(&mut buf), "tunnel route already installed");
    // And back to plain.
    e.apply(via_eth0("10.244.1.0/26", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(hops_of(&written_route(&buf)), vec![khop("192.0.2.2", ETH0, false)]);
    assert!(e.failures().is_empty());
}

#[test]
fn an_ecmp_set_changes_encapsulation_as_a_whole() {
    let mut e = started_with(vec![], vec![]);
    let mut buf = Vec::new();
    e.apply(RouteChange::Upsert(Route::unicast(
        net("10.244.2.0/26"),
        vec![NextHop::via_dev(ip("192.0.2.2"), "eth0"), NextHop::via_dev(ip("192.0.2.3"), "eth0")],
    )));
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    e.apply(via_tunl0("10.244.2.0/26", &["192.0.2.2", "192.0.2.3"]));
    assert!(e.poll_transmit(&mut buf));
    let r = written_route(&buf);
    assert_eq!(hops_of(&r), vec![khop("192.0.2.2", TUNL0, true), khop("192.0.2.3", TUNL0, true)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    // One hop of the set leaves the tunnel (CrossSubnet, a next hop on our subnet).
    e.apply(RouteChange::Upsert(Route::unicast(
        net("10.244.2.0/26"),
        vec![NextHop::via_dev(ip("192.0.2.2"), "eth0"), NextHop::via_dev(ip("192.0.2.3"), "tunl0").onlink()],
    )));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(hops_of(&written_route(&buf)), vec![khop("192.0.2.2", ETH0, false), khop("192.0.2.3", TUNL0, true)]);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn tunnel_routes_found_at_start_as_wanted_are_not_rewritten() {
    let table = vec![
        kernel_route(NLM_F_MULTI, "10.244.1.0/26", &[("192.0.2.2", TUNL0, true)]),
        kernel_route(NLM_F_MULTI, "10.244.2.0/26", &[("192.0.2.2", TUNL0, true), ("192.0.2.3", TUNL0, true)]),
    ];
    let desired =
        vec![via_tunl0("10.244.1.0/26", &["192.0.2.2"]), via_tunl0("10.244.2.0/26", &["192.0.2.3", "192.0.2.2"])];
    let mut e = started_with(table, desired);
    let mut buf = Vec::new();
    assert!(!e.poll_transmit(&mut buf), "both already right");
    assert!(e.is_settled());
}

#[test]
fn routes_found_at_start_with_other_encapsulation_are_replaced() {
    let table = vec![
        // Plain, wanted through the tunnel.
        kernel_route(NLM_F_MULTI, "10.244.1.0/26", &[("192.0.2.2", ETH0, false)]),
        // Through the tunnel without onlink, wanted onlink.
        kernel_route(NLM_F_MULTI, "10.244.2.0/26", &[("192.0.2.3", TUNL0, false)]),
        // Through the tunnel, wanted plain.
        kernel_route(NLM_F_MULTI, "10.244.3.0/26", &[("192.0.2.4", TUNL0, true)]),
    ];
    let desired = vec![
        via_tunl0("10.244.1.0/26", &["192.0.2.2"]),
        via_tunl0("10.244.2.0/26", &["192.0.2.3"]),
        via_eth0("10.244.3.0/26", "192.0.2.4"),
    ];
    let mut e = started_with(table, desired);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let mut got = written(&e, &buf);
    got.sort();
    assert_eq!(got, ["10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"].map(net));
}

#[test]
fn a_foreign_change_that_drops_onlink_is_repaired() {
    let mut e = started_with(vec![], vec![via_tunl0("10.244.1.0/26", &["192.0.2.2"])]);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf));
    // Someone replaces it with the same gateway and device but without onlink.
    e.handle_datagram(&kernel_route(0, "10.244.1.0/26", &[("192.0.2.2", TUNL0, false)]));
    assert!(e.poll_transmit(&mut buf), "repair expected");
    assert_eq!(hops_of(&written_route(&buf)), vec![khop("192.0.2.2", TUNL0, true)]);
    assert_eq!(e.metrics.repairs.get(), 1);
}

// ----- taking over from another speaker (FibConfig::replaces) ---------------------------

/// BIRD's protocol number, the predecessor in these tests.
const BIRD: u8 = 12;

/// A route of `protocol` at `metric` in table 100: a blackhole, or through `gw` on eth0.
fn foreign_route(flags: u16, prefix: &str, protocol: u8, metric: u32, gw: Option<&str>) -> Vec<u8> {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType};
    let prefix = net(prefix);
    let mut m = RouteMessage::default();
    m.header.address_family = if prefix.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.destination_prefix_length = prefix.prefix_len();
    m.header.table = 100;
    m.header.protocol = RouteProtocol::from(protocol);
    m.attributes.push(RouteAttribute::Table(100));
    m.attributes.push(RouteAttribute::Destination(prefix.network().into()));
    m.attributes.push(RouteAttribute::Priority(metric));
    match gw {
        Some(gw) => {
            m.header.kind = RouteType::Unicast;
            m.attributes.push(RouteAttribute::Gateway(ip(gw).into()));
            m.attributes.push(RouteAttribute::Oif(ETH0));
        }
        None => m.header.kind = RouteType::BlackHole,
    }
    let mut h = header(0, flags);
    h.port_number = 0;
    serialize(NetlinkMessage::new(h, NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))))
}

fn deleted(mut msg: Vec<u8>) -> Vec<u8> {
    NetlinkBuffer::new(&mut msg[..]).set_message_type(RTM_DELROUTE);
    msg
}

/// An engine replacing protocol 12 whose start-up dump shows eth0 up and `table`.
fn replacing(table: Vec<Vec<u8>>, desired: Vec<RouteChange>) -> Engine {
    let config = FibConfig { table: 100, batch_size: 4, replaces: vec![BIRD], ..FibConfig::default() };
    start(&config, &[(ETH0, "eth0")], table, desired)
}

/// Each message of `buf` as (message type, the route it names).
fn sent_routes(buf: &[u8]) -> Vec<(u16, TableRoute)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let nl = NetlinkBuffer::new_checked(rest).unwrap();
        let len = nl.length() as usize;
        let kind = nl.message_type();
        let route = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]).unwrap().payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m)) => {
                decode_route(&m).unwrap()
            }
            other => panic!("not a route message: {other:?}"),
        };
        out.push((kind, route));
        rest = &rest[len..];
    }
    out
}

fn pred(prefix: &str, metric: u32) -> Predecessor {
    Predecessor { prefix: net(prefix), protocol: BIRD, metric }
}

/// BIRD's blackhole for a block and its route to another node's block, at BIRD 2's
/// default metric 32, and one IPv6 route; plus a static route, which is nobody's to take.
fn bird_table() -> Vec<Vec<u8>> {
    vec![
        foreign_route(NLM_F_MULTI, "10.244.1.0/26", BIRD, 32, None),
        foreign_route(NLM_F_MULTI, "10.244.2.0/26", BIRD, 32, Some("192.0.2.2")),
        foreign_route(NLM_F_MULTI, "fd00:244::/122", BIRD, 1024, Some("fe80::2")),
        foreign_route(NLM_F_MULTI, "10.9.0.0/24", 4, 32, Some("192.0.2.9")),
    ]
}

#[test]
fn predecessor_routes_are_recorded_from_the_dump_and_left_alone() {
    let desired =
        vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26"))), via_eth0("10.244.2.0/26", "192.0.2.2")];
    let mut e = replacing(bird_table(), desired);
    let mut want: Vec<Predecessor> =
        vec![pred("10.244.1.0/26", 32), pred("10.244.2.0/26", 32), pred("fd00:244::/122", 1024)];
    want.sort();
    let mut got: Vec<Predecessor> = e.predecessors.iter().copied().collect();
    got.sort();
    assert_eq!(got, want, "protocol 12 recorded whatever its metric; the static route is not");
    assert_eq!(e.metrics.predecessor_routes.get(), 3);
    // Our routes for the same prefixes go in beside them (another metric: another slot);
    // nothing of protocol 12 is touched before retire.
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(kind, r)| *kind == RTM_NEWROUTE && r.protocol == crate::RTPROT_BGP && r.metric == 20));
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert!(e.is_settled());
    assert!(e.failures().is_empty(), "{:?}", e.failures());
    assert!(!e.poll_transmit(&mut buf));
    // A sweep of our stale routes does not touch them either.
    e.sweep();
    assert!(!e.poll_transmit(&mut buf));
    assert_eq!(e.predecessors.len(), 3);
}

#[test]
fn a_predecessor_route_deleted_by_someone_else_is_forgotten() {
    let mut e = replacing(bird_table(), vec![]);
    e.handle_datagram(&deleted(foreign_route(0, "10.244.2.0/26", BIRD, 32, Some("192.0.2.2"))));
    assert_eq!(e.predecessors.len(), 2);
    assert_eq!(e.metrics.predecessor_routes.get(), 2);
    // One that appears later (a notification) is recorded.
    e.handle_datagram(&foreign_route(0, "10.244.3.0/26", BIRD, 32, None));
    assert!(e.predecessors.contains(&pred("10.244.3.0/26", 32)));
    // A resync reads them again from the dump.
    e.start_resync();
    assert_eq!(e.metrics.predecessor_routes.get(), 0);
    let mut buf = Vec::new();
    for step in 0..3 {
        assert!(e.poll_transmit(&mut buf));
        let seq = messages(&buf)[0].0;
        if step == 1 {
            let mut m = foreign_route(NLM_F_MULTI, "10.244.1.0/26", BIRD, 32, None);
            NetlinkBuffer::new(&mut m[..]).set_sequence_number(seq);
            e.handle_datagram(&m);
        }
        e.handle_datagram(&done(seq));
    }
    assert_eq!(e.predecessors.iter().copied().collect::<Vec<_>>(), vec![pred("10.244.1.0/26", 32)]);
}

#[test]
fn retire_removes_exactly_the_predecessor_routes_with_their_metric() {
    let desired =
        vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26"))), via_eth0("10.244.2.0/26", "192.0.2.2")];
    let mut e = replacing(bird_table(), desired);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert!(e.is_settled());
    let installed = e.counters.installed_v4.get();
    assert_eq!(installed, 2);

    assert_eq!(e.retire_predecessors(Retire::All), 3);
    assert_eq!(e.retire_predecessors(Retire::All), 0, "queued already");
    assert!(!e.is_settled());
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    let mut got: Vec<(IpNet, u8, u32, u32)> = sent
        .iter()
        .map(|(kind, r)| {
            assert_eq!(*kind, RTM_DELROUTE);
            (r.prefix, r.protocol, r.metric, r.table)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (net("10.244.1.0/26"), BIRD, 32, 100),
            (net("10.244.2.0/26"), BIRD, 32, 100),
            (net("fd00:244::/122"), BIRD, 1024, 100)
        ]
    );
    let acks: Vec<bool> = messages(&buf).iter().map(|m| m.1).collect();
    assert_eq!(acks, vec![false, false, true], "one batch, the last asks for the ACK");
    // The first is gone already (ESRCH: fine), the ACK covers the others.
    let seqs: Vec<u32> = messages(&buf).iter().map(|m| m.0).collect();
    e.handle_datagram(&answer(seqs[0], ESRCH));
    e.handle_datagram(&answer(seqs[2], 0));
    assert!(e.is_settled());
    assert!(e.predecessors.is_empty());
    assert_eq!(e.metrics.predecessor_routes.get(), 0);
    assert_eq!(e.counters.retires.get(), 3);
    // Ours are as they were: nothing rewritten, nothing failing.
    assert_eq!(e.counters.installed_v4.get(), installed);
    assert!(!e.poll_transmit(&mut buf));
    assert!(e.failures().is_empty());
}

#[test]
fn a_failed_retire_is_counted_and_stops_nothing() {
    let mut e = replacing(bird_table(), vec![]);
    assert_eq!(e.retire_predecessors(Retire::All), 3);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let seqs: Vec<u32> = messages(&buf).iter().map(|m| m.0).collect();
    // EPERM on one; the others succeed.
    e.handle_datagram(&answer(seqs[1], 1));
    e.handle_datagram(&answer(seqs[2], 0));
    assert!(e.is_settled());
    assert_eq!(e.predecessors.len(), 1, "the failed one is still there");
    assert_eq!(e.metrics.predecessor_routes.get(), 1);
    assert_eq!(e.metrics.errors.with_label_values(&["EPERM"]).get(), 1);
    // Our routes still go in.
    e.apply(via_eth0("10.244.5.0/26", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    // Another retire tries the one left again.
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert_eq!(e.retire_predecessors(Retire::All), 1);
}

#[test]
fn a_predecessor_route_in_our_slot_gives_way_to_ours_when_retired() {
    // Same metric as ours: our route conflicts until the predecessor's goes.
    let table = vec![foreign_route(NLM_F_MULTI, "10.244.1.0/26", BIRD, 20, None)];
    let mut e = replacing(table, vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26")))]);
    let mut buf = Vec::new();
    assert!(!e.poll_transmit(&mut buf), "the slot is the predecessor's for now");
    assert_eq!(e.failures()[0].kind, RouteErrorKind::Conflict { protocol: BIRD });
    assert_eq!(e.retire_predecessors(Retire::All), 1);
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!((sent[0].0, sent[0].1.protocol, sent[0].1.metric), (RTM_DELROUTE, BIRD, 20));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf), "ours goes in");
    let sent = sent_routes(&buf);
    assert_eq!((sent[0].0, sent[0].1.protocol), (RTM_NEWROUTE, crate::RTPROT_BGP));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.failures().is_empty());
    assert!(matches!(e.poll_event(), Some(FibEvent::Failed(_))));
    assert_eq!(e.poll_event(), Some(FibEvent::Recovered(net("10.244.1.0/26"))));
}

#[test]
fn retiring_the_replaced_keeps_the_rest_until_ours_go_in() {
    // Ours for two of BIRD's three prefixes; nothing yet for the IPv6 one (its peer is
    // not back).
    let desired =
        vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26"))), via_eth0("10.244.2.0/26", "192.0.2.2")];
    let mut e = replacing(bird_table(), desired);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert!(e.is_settled());

    assert_eq!(e.retire_predecessors(Retire::Replaced), 2);
    assert!(e.poll_transmit(&mut buf));
    let mut got: Vec<IpNet> = sent_routes(&buf).iter().map(|(_, r)| r.prefix).collect();
    got.sort();
    assert_eq!(got, vec![net("10.244.1.0/26"), net("10.244.2.0/26")]);
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert_eq!(e.predecessors.iter().map(|p| p.prefix).collect::<Vec<_>>(), vec![net("fd00:244::/122")]);
    assert!(!e.poll_transmit(&mut buf), "the IPv6 route of BIRD still forwards");

    // Ours for it arrives: once it is in, BIRD's goes.
    e.apply(RouteChange::Upsert(Route::unicast(
        net("fd00:244::/122"),
        vec![NextHop::via_dev("fe80::2".parse().unwrap(), "eth0")],
    )));
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!((sent.len(), sent[0].0), (1, RTM_NEWROUTE), "ours first, BIRD's still there");
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(
        (sent[0].0, sent[0].1.prefix, sent[0].1.protocol, sent[0].1.metric),
        (RTM_DELROUTE, net("fd00:244::/122"), BIRD, 1024)
    );
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.predecessors.is_empty());
    assert_eq!(e.retire_predecessors(Retire::All), 0);
}

#[test]
fn retiring_all_takes_the_routes_no_route_of_ours_replaced() {
    let mut e = replacing(bird_table(), vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26")))]);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert_eq!(e.retire_predecessors(Retire::Replaced), 1);
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf).last().unwrap().0, 0));
    assert_eq!(e.retire_predecessors(Retire::Replaced), 0, "nothing else is ours");
    assert_eq!(e.retire_predecessors(Retire::All), 2, "the hold is over: the rest go");
}

#[test]
fn after_retiring_began_a_predecessor_in_our_slot_gives_way_at_once() {
    // BIRD's route sits in our slot (same metric); ours for it comes only after retiring began.
    let table = vec![foreign_route(NLM_F_MULTI, "10.244.1.0/26", BIRD, 20, None)];
    let mut e = replacing(table, vec![]);
    assert_eq!(e.retire_predecessors(Retire::Replaced), 0);
    e.apply(RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26"))));
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!((sent[0].0, sent[0].1.protocol, sent[0].1.metric), (RTM_DELROUTE, BIRD, 20));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf), "ours goes in");
    assert_eq!(sent_routes(&buf)[0].0, RTM_NEWROUTE);
}

// ----- per-route metrics (Route::metric) ---------------------------------------------

fn at_metric(change: RouteChange, metric: u32) -> RouteChange {
    match change {
        RouteChange::Upsert(r) => RouteChange::Upsert(Route { metric: Some(metric), ..r }),
        remove => remove,
    }
}

/// Each message of `buf` as (message type, protocol, metric).
fn sent_slots(buf: &[u8]) -> Vec<(u16, u8, u32)> {
    sent_routes(buf).into_iter().map(|(kind, r)| (kind, r.protocol, r.metric)).collect()
}

const OURS: u8 = crate::RTPROT_BGP;

#[test]
fn a_new_metric_installs_the_route_there_before_removing_the_old_one() {
    let mut e = running();
    let mut buf = Vec::new();
    e.apply(via_eth0("10.0.0.0/24", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_NEWROUTE, OURS, 20)], "no metric of its own: the FIB's");
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));

    e.apply(at_metric(via_eth0("10.0.0.0/24", "192.0.2.2"), 512));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_NEWROUTE, OURS, 512)], "the new one first");
    let install = messages(&buf)[0].0;
    assert!(!e.poll_transmit(&mut buf), "the old one stays until the kernel took the new one");
    e.handle_datagram(&answer(install, 0));
    assert_eq!(e.counters.installed_v4.get(), 2, "both in for now");
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_DELROUTE, OURS, 20)], "then the old one goes");
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf));
    assert!(e.is_settled());
    assert_eq!(e.counters.installed_v4.get(), 1);
    assert!(e.failures().is_empty());
    // Back to the default: the same dance the other way.
    e.apply(via_eth0("10.0.0.0/24", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_NEWROUTE, OURS, 20)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_DELROUTE, OURS, 512)]);
}

#[test]
fn a_failed_install_at_the_new_metric_keeps_the_old_route() {
    let mut e = running();
    let mut buf = Vec::new();
    e.apply(via_eth0("10.0.0.0/24", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    e.apply(at_metric(via_eth0("10.0.0.0/24", "192.0.2.2"), 512));
    assert!(e.poll_transmit(&mut buf));
    // ENOMEM (12): the new one is not in, the old one must stay.
    e.handle_datagram(&answer(messages(&buf)[0].0, 12));
    assert!(!e.poll_transmit(&mut buf), "nothing removed");
    assert_eq!(e.counters.installed_v4.get(), 1);
    assert!(matches!(e.failures()[0].kind, RouteErrorKind::Kernel { op: Op::Install, errno: 12, .. }));
}

#[test]
fn ipv6_metric_zero_is_1024() {
    let table = vec![foreign_route(NLM_F_MULTI, "fd00:1::/64", OURS, 1024, Some("fd00::2"))];
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let desired =
        vec![at_metric(via_eth0("fd00:1::/64", "fd00::2"), 0), at_metric(via_eth0("fd00:2::/64", "fd00::2"), 0)];
    let mut e = start(&config, &[(ETH0, "eth0")], table, desired);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(sent.len(), 1, "the one found at 1024 is as wanted: {sent:?}");
    assert_eq!((sent[0].0, sent[0].1.prefix, sent[0].1.metric), (RTM_NEWROUTE, net("fd00:2::/64"), 1024));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf), "nothing at another metric to remove");
}

#[test]
fn ours_found_at_start_at_an_old_metric_moves_and_the_undesired_wait_for_the_sweep() {
    let table = vec![
        // Moved to the default since the last run.
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 512, Some("192.0.2.2")),
        // Still wanted at 512.
        foreign_route(NLM_F_MULTI, "10.2.0.0/24", OURS, 512, Some("192.0.2.2")),
        // Not wanted (yet): a stale route of the last run.
        foreign_route(NLM_F_MULTI, "10.3.0.0/24", OURS, 512, Some("192.0.2.2")),
    ];
    let desired = vec![via_eth0("10.1.0.0/24", "192.0.2.2"), at_metric(via_eth0("10.2.0.0/24", "192.0.2.2"), 512)];
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let mut e = start(&config, &[(ETH0, "eth0")], table, desired);
    assert_eq!(e.counters.installed_v4.get(), 3, "ours at any metric are ours");
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].0, sent[0].1.prefix, sent[0].1.metric), (RTM_NEWROUTE, net("10.1.0.0/24"), 20));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(
        (sent.len(), sent[0].0, sent[0].1.prefix, sent[0].1.protocol, sent[0].1.metric),
        (1, RTM_DELROUTE, net("10.1.0.0/24"), OURS, 512)
    );
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf), "the stale 10.3.0.0/24 stays until the sweep");
    e.sweep();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!((sent.len(), sent[0].0, sent[0].1.prefix, sent[0].1.metric), (1, RTM_DELROUTE, net("10.3.0.0/24"), 512));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.is_settled());
    assert_eq!(e.counters.installed_v4.get(), 2);
}

#[test]
fn a_restart_rewrites_nothing_and_keeps_ours_at_every_metric_until_the_sweep() {
    let table = vec![
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 512, Some("192.0.2.2")),
        foreign_route(NLM_F_MULTI, "10.2.0.0/24", OURS, 20, Some("192.0.2.2")),
        foreign_route(NLM_F_MULTI, "10.3.0.0/24", OURS, 300, None),
    ];
    let config = FibConfig { table: 100, batch_size: 4, graceful_restart: true, ..FibConfig::default() };
    let mut e = start(&config, &[(ETH0, "eth0")], table, vec![]);
    let mut buf = Vec::new();
    assert!(!e.poll_transmit(&mut buf), "nothing desired yet: everything stays");
    // The RIB converges: the first as it was, the second gone, the third moved.
    e.apply(at_metric(via_eth0("10.1.0.0/24", "192.0.2.2"), 512));
    e.apply(at_metric(RouteChange::Upsert(Route::blackhole(net("10.3.0.0/24"))), 20));
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!(sent.len(), 1, "only the moved one is written: {sent:?}");
    assert_eq!((sent[0].0, sent[0].1.prefix, sent[0].1.metric), (RTM_NEWROUTE, net("10.3.0.0/24"), 20));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_DELROUTE, OURS, 300)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf), "10.2.0.0/24 waits for the sweep");
    e.sweep();
    assert!(e.poll_transmit(&mut buf));
    let sent = sent_routes(&buf);
    assert_eq!((sent.len(), sent[0].0, sent[0].1.prefix, sent[0].1.metric), (1, RTM_DELROUTE, net("10.2.0.0/24"), 20));
}

#[test]
fn a_foreign_route_conflicts_only_at_the_metric_ours_wants() {
    // A static route (protocol 4) at 512.
    let table = vec![foreign_route(NLM_F_MULTI, "10.1.0.0/24", 4, 512, Some("192.0.2.9"))];
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let mut e = start(&config, &[(ETH0, "eth0")], table, vec![via_eth0("10.1.0.0/24", "192.0.2.2")]);
    let mut buf = Vec::new();
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_NEWROUTE, OURS, 20)], "beside it at 20: no conflict");
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.failures().is_empty());
    // Moved to 512, where the static route is: a conflict, and ours stays at 20.
    e.apply(at_metric(via_eth0("10.1.0.0/24", "192.0.2.2"), 512));
    assert!(!e.poll_transmit(&mut buf), "neither overwritten nor ours removed");
    assert_eq!(e.failures()[0].kind, RouteErrorKind::Conflict { protocol: 4 });
    // A static route appearing at another metric changes nothing.
    e.handle_datagram(&foreign_route(0, "10.1.0.0/24", 4, 700, Some("192.0.2.9")));
    assert!(!e.poll_transmit(&mut buf));
    // The one at 512 goes: ours moves in, then leaves 20.
    e.handle_datagram(&deleted(foreign_route(0, "10.1.0.0/24", 4, 512, Some("192.0.2.9"))));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_NEWROUTE, OURS, 512)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_DELROUTE, OURS, 20)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(e.failures().is_empty());
    assert!(e.is_settled());
}

#[test]
fn a_route_of_ours_added_by_someone_at_another_metric_is_removed() {
    let mut e = running();
    let mut buf = Vec::new();
    e.apply(via_eth0("10.0.0.0/24", "192.0.2.2"));
    assert!(e.poll_transmit(&mut buf));
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    // `ip route add 10.0.0.0/24 via 192.0.2.7 proto bgp metric 99 table 100`
    e.handle_datagram(&foreign_route(0, "10.0.0.0/24", OURS, 99, Some("192.0.2.7")));
    assert!(e.poll_transmit(&mut buf));
    assert_eq!(sent_slots(&buf), [(RTM_DELROUTE, OURS, 99)]);
    e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    assert!(!e.poll_transmit(&mut buf), "ours at 20 untouched");
}

#[test]
fn removing_a_prefix_removes_ours_at_every_metric() {
    let table = vec![
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 512, Some("192.0.2.2")),
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 20, Some("192.0.2.2")),
    ];
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let mut e = start(&config, &[(ETH0, "eth0")], table, vec![]);
    e.apply(RouteChange::Remove(net("10.1.0.0/24")));
    let mut buf = Vec::new();
    let mut metrics = Vec::new();
    while e.poll_transmit(&mut buf) {
        let sent = sent_slots(&buf);
        assert_eq!(sent.len(), 1, "one write per prefix at a time");
        assert_eq!((sent[0].0, sent[0].1), (RTM_DELROUTE, OURS));
        metrics.push(sent[0].2);
        e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    }
    metrics.sort();
    assert_eq!(metrics, [20, 512]);
    assert!(e.is_settled());
    assert_eq!(e.counters.installed_v4.get(), 0);
    assert!(e.removed.is_empty());
}

#[test]
fn a_failing_route_is_withdrawn_at_every_metric() {
    let table = vec![
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 512, Some("192.0.2.2")),
        foreign_route(NLM_F_MULTI, "10.1.0.0/24", OURS, 20, Some("192.0.2.2")),
    ];
    let config = FibConfig { table: 100, batch_size: 4, ..FibConfig::default() };
    let gone = RouteChange::Upsert(Route::unicast(net("10.1.0.0/24"), vec![NextHop::dev("nope0")]));
    let mut e = start(&config, &[(ETH0, "eth0")], table, vec![gone]);
    let mut buf = Vec::new();
    let mut metrics = Vec::new();
    while e.poll_transmit(&mut buf) {
        let sent = sent_slots(&buf);
        assert_eq!((sent.len(), sent[0].0), (1, RTM_DELROUTE));
        metrics.push(sent[0].2);
        e.handle_datagram(&answer(messages(&buf)[0].0, 0));
    }
    assert_eq!(metrics, [20, 512], "the wanted slot first, then the other");
    assert_eq!(e.failures()[0].kind, RouteErrorKind::NoSuchDevice { device: "nope0".into() });
    assert_eq!(e.counters.installed_v4.get(), 0);
}
