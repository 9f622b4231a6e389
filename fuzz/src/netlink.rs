//! The FIB engine (`fib`) fed with netlink replies: link, address and route
//! dumps and notifications, ACKs and errors, next-hop lookup answers.
//!
//! The input interleaves desired-route changes (from a small pool of
//! prefixes, gateways and devices), kernel datagrams, overruns and the
//! end of the start-up grace. A datagram can have the sequence number of a
//! request the engine sent (and the engine's port) written into each of its
//! headers, so that it answers that request: the fuzzer need not guess
//! sequence numbers. Checked: the engine never panics, and every request it
//! sends is a whole, aligned netlink message that decodes as an rtnetlink
//! message.

use std::net::IpAddr;

use fib::fuzzing::FuzzEngine;
use fib::{FibConfig, NextHop, Route, RouteChange};
use ipnet::IpNet;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

use crate::Input;

/// The engine's netlink port ID.
pub const PORT: u32 = 0x4242;
const MAX_EVENTS: usize = 128;
const PREFIXES: [&str; 6] =
    ["10.244.0.0/26", "10.244.0.64/26", "192.0.2.0/24", "0.0.0.0/0", "2001:db8:1::/64", "fd00::/8"];
const GATEWAYS: [&str; 4] = ["192.0.2.1", "10.0.0.2", "fe80::1", "2001:db8::1"];
const DEVICES: [&str; 3] = ["eth0", "tunl0", "lo"];

fn route(inp: &mut Input) -> RouteChange {
    let prefix: IpNet = PREFIXES[inp.below(PREFIXES.len())].parse().expect("pool prefix");
    match inp.below(8) {
        0 => RouteChange::Remove(prefix),
        1 => RouteChange::Upsert(Route::blackhole(prefix)),
        2 => RouteChange::Upsert(Route::unreachable(prefix)),
        _ => {
            let hops = (0..1 + inp.below(3))
                .map(|_| {
                    let gw: IpAddr = GATEWAYS[inp.below(GATEWAYS.len())].parse().expect("pool gateway");
                    let dev = DEVICES[inp.below(DEVICES.len())];
                    let hop = match inp.below(3) {
                        0 => NextHop::via(gw),
                        1 => NextHop::dev(dev),
                        _ => NextHop::via_dev(gw, dev),
                    };
                    if inp.bool() {
                        hop.onlink()
                    } else {
                        hop
                    }
                })
                .collect();
            // A route's own metric (BGPFilter `setPriority`), the FIB's, or 0 (IPv6: 1024):
            // a change of it moves the route.
            let metric = [None, Some(20), Some(512), Some(0)][inp.below(4)];
            RouteChange::Upsert(Route { metric, ..Route::unicast(prefix, hops) })
        }
    }
}

/// Walks the netlink headers of `buf`: (offset, length) of each message.
fn headers(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 16 {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 octets")) as usize;
        out.push((at, len));
        if len < 16 {
            break;
        }
        at += (len + 3) & !3;
    }
    out
}

/// Checks one batch of requests and records their sequence numbers.
fn check_requests(buf: &[u8], seqs: &mut Vec<u32>) {
    assert!(!buf.is_empty(), "an empty batch");
    let mut at = 0;
    for (offset, len) in headers(buf) {
        assert_eq!(offset, at, "messages are back to back");
        assert!(len >= 16 && offset + len <= buf.len(), "message length {len} at {offset} of {}", buf.len());
        let msg = &buf[offset..offset + len];
        NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg)
            .unwrap_or_else(|e| panic!("the engine sent an undecodable request: {e}"));
        seqs.push(u32::from_ne_bytes(msg[8..12].try_into().expect("4 octets")));
        at = offset + ((len + 3) & !3);
    }
    assert!(at >= buf.len(), "trailing bytes after the last request");
}

/// See the module docs.
pub fn netlink(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = FibConfig { batch_size: 1 + inp.below(8), ..FibConfig::default() };
    let mut e = FuzzEngine::new(&cfg, PORT);
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..MAX_EVENTS {
        if inp.is_empty() {
            break;
        }
        match inp.below(8) {
            0 | 1 => e.apply(route(&mut inp)),
            2..=5 => {
                let patch = inp.byte();
                let pick = inp.byte();
                let len = usize::from(inp.u16() % 8192);
                let mut datagram = inp.take(len).to_vec();
                if patch & 1 != 0 && !seqs.is_empty() {
                    let seq: u32 = seqs[usize::from(pick) % seqs.len()];
                    for (offset, _) in headers(&datagram) {
                        datagram[offset + 8..offset + 12].copy_from_slice(&seq.to_ne_bytes());
                        if patch & 2 != 0 {
                            datagram[offset + 12..offset + 16].copy_from_slice(&PORT.to_ne_bytes());
                        }
                    }
                }
                e.handle_datagram(&datagram);
            }
            6 => {
                if inp.bool() {
                    e.handle_overrun();
                } else {
                    e.sweep();
                }
            }
            _ => {}
        }
        let mut batches = 0;
        while e.poll_transmit(&mut buf) {
            check_requests(&buf, &mut seqs);
            batches += 1;
            if batches >= 64 {
                break;
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        while e.poll_event().is_some() {}
        let _ = (e.is_settled(), e.failures());
    }
}
