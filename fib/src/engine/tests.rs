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
    let mut e = Engine::new(&config, FibMetrics::unregistered(), PORT);
    for c in desired {
        e.apply(c);
    }
    let mut buf = Vec::new();
    for step in 0..3 {
        assert!(e.poll_transmit(&mut buf));
        let seq = messages(&buf)[0].0;
        if step == 0 {
            e.handle_datagram(&link(seq, ETH0, "eth0", true));
            e.handle_datagram(&link(seq, TUNL0, "tunl0", true));
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
