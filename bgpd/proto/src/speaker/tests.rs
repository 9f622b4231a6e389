//! Deterministic `Speaker` tests on a virtual clock: two speakers joined by
//! hand-driven pipes (collisions, graceful restart, max-prefix, refresh),
//! and whole fabrics in [`sim::Fabric`] (mesh, reflectors, ToRs).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipnet::IpNet;

use super::sim::Fabric;
use super::*;
use crate::rib::core::{MaxPrefix, RibConfig};
use crate::rib::decision::DecisionOptions;
use crate::wire::{AsPath, Attr, Message, Origin, PathAttribute, RouteRefresh, WireContext};

fn rib_cfg(id: Ipv4Addr, asn: u32) -> RibConfig {
    RibConfig {
        router_id: id,
        local_as: asn,
        cluster_id: None,
        decision: DecisionOptions { always_compare_med: false, multipath_relax: true },
        max_paths: 16,
        defer: None,
        defer_peer_wait: Duration::from_secs(10),
        fib: true,
    }
}

fn own_attrs() -> PathAttrs {
    PathAttrs {
        attributes: vec![
            PathAttribute::new(Attr::Origin(Origin::Igp)),
            PathAttribute::new(Attr::AsPath(AsPath::default())),
        ],
        next_hop: None,
        link_local: None,
        priority: None,
    }
}

fn setup(name: &str, addr: IpAddr, id: Ipv4Addr, local_as: u32, peer_as: u32) -> PeerSetup {
    let mut session = SessionConfig::new(local_as, peer_as, id);
    session.graceful_restart = Some(crate::session::GracefulRestartConfig::new(120));
    PeerSetup {
        session,
        rib: PeerConfig::new(name, addr, local_as, peer_as),
        password: None,
        local: LocalAddrs { ipv4: None, ipv6: None, subnets: vec!["10.0.0.0/24".parse().unwrap()] },
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two speakers A (10.0.0.1) and B (10.0.0.2) and the connections between
/// them, moved by hand.
struct Pair {
    now: Instant,
    sp: [Speaker; 2],
    key: [PeerKey; 2],
    /// Open connections: (A's conn, B's conn).
    conns: Vec<(ConnId, ConnId)>,
    events: [Vec<Event>; 2],
}

const ADDR: [&str; 2] = ["10.0.0.1", "10.0.0.2"];

impl Pair {
    fn new(ids: [&str; 2], ases: [u32; 2], tweak: impl Fn(usize, &mut PeerSetup)) -> Pair {
        let now = Instant::now();
        let mut sp = [0, 1].map(|i| Speaker::new(rib_cfg(ids[i].parse().unwrap(), ases[i]), now));
        let key = [0, 1].map(|i| {
            let mut s = setup(&format!("peer-{i}"), ip(ADDR[1 - i]), ids[i].parse().unwrap(), ases[i], ases[1 - i]);
            tweak(i, &mut s);
            sp[i].add_peer(s, now).unwrap()
        });
        Pair { now, sp, key, conns: Vec::new(), events: [Vec::new(), Vec::new()] }
    }

    /// Collects events; a closed connection reaches the other end (after
    /// the bytes already moved).
    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(e) = self.sp[i].poll_event() {
                if let Event::Close(_, c) = &e {
                    if let Some(pos) = self.conns.iter().position(|(a, b)| [a, b][i] == c) {
                        let (a, b) = self.conns.remove(pos);
                        let now = self.now;
                        self.sp[1 - i].handle_connection_lost(self.key[1 - i], [a, b][1 - i], now);
                    }
                }
                self.events[i].push(e);
            }
        }
    }

    /// `from` connects to the other: returns whether both took the connection.
    fn connect(&mut self, from: usize) -> bool {
        let to = 1 - from;
        let now = self.now;
        let Some(c_to) = self.sp[to].handle_connected(self.key[to], Initiator::Remote, Some(ip(ADDR[to])), now) else {
            return false;
        };
        let c_from = self.sp[from].handle_connected(self.key[from], Initiator::Local, Some(ip(ADDR[from])), now);
        let Some(c_from) = c_from else { return false };
        self.conns.push(if from == 0 { (c_from, c_to) } else { (c_to, c_from) });
        true
    }

    /// Moves bytes both ways until none are left, then what closed.
    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(t) = self.sp[i].poll_transmit() {
                    moved = true;
                    let Some(&(a, b)) = self.conns.iter().find(|(a, b)| [a, b][i] == &t.conn) else { continue };
                    let other = [a, b][1 - i];
                    let now = self.now;
                    self.sp[1 - i].handle_bytes(self.key[1 - i], other, &t.bytes, now);
                }
            }
            let before = self.events[0].len() + self.events[1].len();
            self.collect();
            if !moved && before == self.events[0].len() + self.events[1].len() {
                return;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self.sp.iter().filter_map(Speaker::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for s in &mut self.sp {
                        s.handle_timeout(now);
                    }
                    self.shuttle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn state(&self, i: usize) -> State {
        self.sp[i].peer(self.key[i]).unwrap().0.state()
    }

    fn established(&mut self) {
        assert!(self.connect(0), "B takes A's connection");
        self.shuttle();
        assert_eq!((self.state(0), self.state(1)), (State::Established, State::Established));
    }
}

fn collisions(events: &[Event]) -> Vec<Initiator> {
    events.iter().filter_map(|e| if let Event::Collision { kept, .. } = e { Some(*kept) } else { None }).collect()
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier_on_both_sides() {
    for (ids, winner) in [(["10.9.9.1", "10.9.9.2"], 1usize), (["10.9.9.2", "10.9.9.1"], 0)] {
        let mut p = Pair::new(ids, [65001, 65002], |_, _| {});
        // Both connect at once: each side's own attempt completes first,
        // then the other's arrives while its OPEN is pending.
        let now = p.now;
        let (k0, k1) = (p.key[0], p.key[1]);
        let a_out = p.sp[0].handle_connected(k0, Initiator::Local, Some(ip(ADDR[0])), now).unwrap();
        let b_out = p.sp[1].handle_connected(k1, Initiator::Local, Some(ip(ADDR[1])), now).unwrap();
        let b_in = p.sp[1].handle_connected(k1, Initiator::Remote, Some(ip(ADDR[1])), now);
        let a_in = p.sp[0].handle_connected(k0, Initiator::Remote, Some(ip(ADDR[0])), now);
        let (Some(b_in), Some(a_in)) = (b_in, a_in) else {
            panic!("the second connection runs beside the first while OPENs are pending")
        };
        p.conns = vec![(a_out, b_in), (a_in, b_out)];
        p.shuttle();
        assert_eq!((p.state(0), p.state(1)), (State::Established, State::Established), "ids {ids:?}");
        assert_eq!(p.conns.len(), 1, "the losing connection is closed on both sides");
        // RFC 4271 §6.8: the connection opened by the higher identifier survives.
        let kept_at_winner = collisions(&p.events[winner]);
        let kept_at_loser = collisions(&p.events[1 - winner]);
        assert_eq!(kept_at_winner, vec![Initiator::Local], "ids {ids:?}");
        assert_eq!(kept_at_loser, vec![Initiator::Remote], "ids {ids:?}");
        let established = |i: usize| p.events[i].iter().filter(|e| matches!(e, Event::Established { .. })).count();
        assert_eq!((established(0), established(1)), (1, 1), "one session each");
        let (a, b) = p.conns[0];
        let kept = [a, b][winner];
        assert_eq!(p.sp[winner].peer(p.key[winner]).unwrap().0.connection().map(|c| c.0), Some(kept));
    }
}

#[test]
fn a_winning_second_connection_that_is_established_in_one_read_reaches_the_rib() {
    // A (10.9.9.1) and B (10.9.9.2) connect at once; B's connection wins.
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |_, _| {});
    let now = p.now;
    let (k0, k1) = (p.key[0], p.key[1]);
    let a_out = p.sp[0].handle_connected(k0, Initiator::Local, Some(ip(ADDR[0])), now).unwrap();
    let b_out = p.sp[1].handle_connected(k1, Initiator::Local, Some(ip(ADDR[1])), now).unwrap();
    let b_in = p.sp[1].handle_connected(k1, Initiator::Remote, Some(ip(ADDR[1])), now).unwrap();
    let a_in = p.sp[0].handle_connected(k0, Initiator::Remote, Some(ip(ADDR[0])), now).unwrap();
    // A's OPENs reach B; B keeps its own connection and answers on it with
    // KEEPALIVE, after the OPEN it sent when it connected.
    while let Some(t) = p.sp[0].poll_transmit() {
        let to = if t.conn == a_out { b_in } else { b_out };
        p.sp[1].handle_bytes(k1, to, &t.bytes, now);
    }
    let mut to_a_in = Vec::new();
    while let Some(t) = p.sp[1].poll_transmit() {
        if t.conn == b_out {
            to_a_in.extend_from_slice(&t.bytes);
        }
    }
    // A reads B's OPEN and KEEPALIVE in one read on the connection that wins.
    p.sp[0].handle_bytes(k0, a_in, &to_a_in, now);
    p.collect();
    assert_eq!(collisions(&p.events[0]), vec![Initiator::Remote]);
    assert_eq!(p.state(0), State::Established);
    assert!(
        p.events[0].iter().any(|e| matches!(e, Event::Established { .. })),
        "the session is announced (and so up in the RIB): {:?}",
        p.events[0]
    );
    assert!(p.sp[0].peer(k0).unwrap().0.connection().is_some_and(|(c, _)| c == a_in));
}

#[test]
fn an_established_session_keeps_its_connection_against_a_late_one() {
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |_, _| {});
    p.established();
    // B (higher id) connects again: refused, the session stays.
    assert!(!p.connect(1), "a connection to an Established session is refused");
    p.shuttle();
    assert_eq!((p.state(0), p.state(1)), (State::Established, State::Established));
}

fn routes_of(sp: &Speaker) -> Vec<IpNet> {
    sp.rib().routes(None).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn graceful_restart_helper_keeps_routes_after_a_lost_connection_not_after_a_notification() {
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |_, _| {});
    p.established();
    let now = p.now;
    p.sp[0].originate(net("10.244.1.0/26"), Some(own_attrs()), now);
    p.shuttle();
    assert_eq!(routes_of(&p.sp[1]), vec![net("10.244.1.0/26")]);
    // The connection is lost (A's bgpd restarts): B keeps A's routes.
    let (_, b) = p.conns.remove(0);
    let now = p.now;
    p.sp[1].handle_connection_lost(p.key[1], b, now);
    p.collect();
    let down = p.events[1].iter().rev().find_map(|e| match e {
        Event::Down { reason, graceful, .. } => Some((reason.clone(), *graceful)),
        _ => None,
    });
    assert_eq!(down, Some((DownReason::ConnectionFailed, true)));
    assert_eq!(routes_of(&p.sp[1]), vec![net("10.244.1.0/26")], "kept as stale while A restarts");

    // The same with a NOTIFICATION (no N bit): the routes go at once.
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |_, _| {});
    p.established();
    let now = p.now;
    p.sp[0].originate(net("10.244.1.0/26"), Some(own_attrs()), now);
    p.shuttle();
    let now = p.now;
    p.sp[0].handle_stop(p.key[0], crate::error::code::cease::ADMINISTRATIVE_SHUTDOWN, None, now);
    p.shuttle();
    let graceful = p.events[1].iter().find_map(|e| match e {
        Event::Down { reason: DownReason::NotificationReceived(_), graceful, .. } => Some(*graceful),
        _ => None,
    });
    assert_eq!(graceful, Some(false));
    assert!(routes_of(&p.sp[1]).is_empty(), "a NOTIFICATION ends graceful restart: routes withdrawn");
}

#[test]
fn max_prefix_teardown_starts_again_after_the_restart_delay() {
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |i, s| {
        if i == 1 {
            s.rib.max_prefix = Some(MaxPrefix { limit: 1, teardown: true });
        }
    });
    p.established();
    let now = p.now;
    p.sp[0].originate(net("10.244.1.0/26"), Some(own_attrs()), now);
    p.sp[0].originate(net("10.244.2.0/26"), Some(own_attrs()), now);
    p.shuttle();
    assert!(p.events[1]
        .iter()
        .any(|e| matches!(e, Event::Teardown { restart_in, .. } if *restart_in == MAX_PREFIX_RESTART)));
    assert_eq!(p.state(1), State::Idle);
    p.events[1].clear();
    // Nothing before the delay, a connection attempt after it.
    p.advance(MAX_PREFIX_RESTART - Duration::from_secs(1));
    assert!(!p.events[1].iter().any(|e| matches!(e, Event::Connect(_))), "{:?}", p.events[1]);
    p.advance(Duration::from_secs(2));
    assert!(p.events[1].iter().any(|e| matches!(e, Event::Connect(_))), "{:?}", p.events[1]);
}

#[test]
fn route_refresh_request_sends_the_table_again() {
    let mut p = Pair::new(["10.9.9.1", "10.9.9.2"], [65001, 65002], |_, _| {});
    p.established();
    let now = p.now;
    p.sp[0].originate(net("10.244.1.0/26"), Some(own_attrs()), now);
    p.shuttle();
    // B asks A for its IPv4 routes again.
    let mut buf = BytesMut::new();
    let rr = RouteRefresh::request(crate::Family::IPV4_UNICAST);
    Message::RouteRefresh(rr).encode(&WireContext::default(), &mut buf).unwrap();
    let (a, _) = p.conns[0];
    let now = p.now;
    p.sp[0].handle_bytes(p.key[0], a, &buf, now);
    let mut updates = 0;
    while let Some(t) = p.sp[0].poll_transmit() {
        updates += usize::from(t.bytes.get(18) == Some(&2));
    }
    assert!(updates >= 1, "the route goes out again (and End-of-RIB)");
}

#[test]
fn next_hop_reachability_moves_the_best_path() {
    // B between A (10.0.0.1) and C (10.0.1.1), both originating one prefix.
    let mut f = Fabric::new(7);
    let now = f.now();
    let id = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut a = Speaker::new(rib_cfg(id("1.1.1.1"), 65001), now);
    a.add_peer(setup("b", ip("10.0.0.2"), id("1.1.1.1"), 65001, 65002), now).unwrap();
    a.originate(net("192.0.2.0/24"), Some(own_attrs()), now);
    let mut c = Speaker::new(rib_cfg(id("3.3.3.3"), 65003), now);
    c.add_peer(setup("b", ip("10.0.1.2"), id("3.3.3.3"), 65003, 65002), now).unwrap();
    c.originate(net("192.0.2.0/24"), Some(own_attrs()), now);
    let mut b = Speaker::new(rib_cfg(id("2.2.2.2"), 65002), now);
    b.add_peer(setup("a", ip("10.0.0.1"), id("2.2.2.2"), 65002, 65001), now).unwrap();
    b.add_peer(setup("c", ip("10.0.1.1"), id("2.2.2.2"), 65002, 65003), now).unwrap();
    f.add_member("a", Some(a), vec![("ab".into(), net("10.0.0.1/24"))]);
    f.add_member("c", Some(c), vec![("cb".into(), net("10.0.1.1/24"))]);
    f.add_member("b", Some(b), vec![("ab".into(), net("10.0.0.2/24")), ("cb".into(), net("10.0.1.2/24"))]);
    assert!(f.run(Duration::from_secs(600)));
    let fib = f.fib("b");
    assert_eq!(fib.get(&net("192.0.2.0/24")), Some(&vec![ip("10.0.0.1"), ip("10.0.1.1")]), "ECMP over both");
    // A's next hop stops resolving: only C's path is used.
    let now = f.now();
    let reach = Reachability::Networks(vec![(net("10.0.1.0/24"), 0)]);
    f.speaker_mut("b").unwrap().handle_reachability(reach, now);
    assert!(f.run(Duration::from_secs(600)));
    assert_eq!(f.fib("b").get(&net("192.0.2.0/24")), Some(&vec![ip("10.0.1.1")]));
    // Both again.
    let now = f.now();
    let reach = Reachability::Networks(vec![(net("10.0.0.0/24"), 0), (net("10.0.1.0/24"), 0)]);
    f.speaker_mut("b").unwrap().handle_reachability(reach, now);
    assert!(f.run(Duration::from_secs(600)));
    assert_eq!(f.fib("b").get(&net("192.0.2.0/24")).map(Vec::len), Some(2));
}

/// A node of a fabric test: name, id, AS, address, its peers (name, address, AS).
struct NodeDef {
    name: &'static str,
    asn: u32,
    addr: &'static str,
    peers: Vec<(&'static str, &'static str, u32)>,
    originate: Option<&'static str>,
    rr_clients: bool,
    allow_local_as: u32,
}

/// The speaker of the `i`th member `d`, on a clock at `now`.
fn node_speaker(i: usize, d: &NodeDef, segment_of: &impl Fn(&str) -> Vec<(String, IpNet)>, now: Instant) -> Speaker {
    let id = Ipv4Addr::new(10, 255, 0, i as u8 + 1);
    let mut cfg = rib_cfg(id, d.asn);
    if d.rr_clients {
        cfg.cluster_id = Some(id);
    }
    let mut sp = Speaker::new(cfg, now);
    for (name, addr, asn) in &d.peers {
        let mut s = setup(name, ip(addr), id, d.asn, *asn);
        s.local.subnets = segment_of(d.name).into_iter().map(|(_, n)| n.trunc()).collect();
        s.rib.rr_client = d.rr_clients && *asn == d.asn;
        s.rib.allow_local_as = d.allow_local_as;
        sp.add_peer(s, now).unwrap();
    }
    if let Some(p) = d.originate {
        sp.originate(net(p), Some(own_attrs()), now);
    }
    sp
}

fn fabric(seed: u64, segment_of: impl Fn(&str) -> Vec<(String, IpNet)>, defs: &[NodeDef]) -> Fabric {
    let mut f = Fabric::new(seed);
    let now = f.now();
    for (i, d) in defs.iter().enumerate() {
        let _ = d.addr;
        f.add_member(d.name, Some(node_speaker(i, d, &segment_of, now)), segment_of(d.name));
    }
    f
}

fn mesh_defs() -> Vec<NodeDef> {
    let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
    let names = ["n1", "n2", "n3", "n4"];
    let blocks = ["10.244.0.0/26", "10.244.0.64/26", "10.244.0.128/26", "10.244.0.192/26"];
    (0..4)
        .map(|i| NodeDef {
            name: names[i],
            asn: 64512,
            addr: addrs[i],
            peers: (0..4).filter(|j| *j != i).map(|j| (names[j], addrs[j], 64512)).collect(),
            originate: Some(blocks[i]),
            rr_clients: false,
            allow_local_as: 0,
        })
        .collect()
}

fn lan(name: &str) -> Vec<(String, IpNet)> {
    let i: u8 = name[1..].parse().unwrap();
    vec![("lan".into(), IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 24).unwrap())]
}

#[test]
fn full_mesh_converges_to_the_same_tables_whatever_the_interleaving() {
    let mut first = None;
    for seed in 1..=5 {
        let mut f = fabric(seed, lan, &mesh_defs());
        assert!(f.run(Duration::from_secs(600)), "seed {seed}");
        for n in ["n1", "n2", "n3", "n4"] {
            assert!(f.sessions(n).iter().all(|s| s.established), "seed {seed} {n}: {:?}", f.sessions(n));
            assert_eq!(f.fib(n).len(), 3, "seed {seed} {n}: the three other blocks");
        }
        let tables: Vec<_> = ["n1", "n2", "n3", "n4"].iter().map(|n| f.fib(n)).collect();
        match &first {
            None => first = Some(tables),
            Some(t) => assert_eq!(t, &tables, "seed {seed}"),
        }
    }
}

#[test]
fn a_mesh_node_failure_withdraws_its_block_and_nothing_else() {
    let mut f = fabric(3, lan, &mesh_defs());
    assert!(f.run(Duration::from_secs(600)));
    f.fail_member("n4");
    assert!(f.run(Duration::from_secs(600)));
    for n in ["n1", "n2", "n3"] {
        let fib = f.fib(n);
        assert_eq!(fib.len(), 2, "{n}: {fib:?}");
        assert!(!fib.contains_key(&net("10.244.0.192/26")));
    }
}

#[test]
fn journals_name_the_routes_and_paths_a_failure_moved() {
    let defs = mesh_defs();
    let mut f = fabric(3, lan, &defs);
    assert!(f.run(Duration::from_secs(600)));
    assert_eq!(f.take_fib_changes("n1"), None, "no journal until asked for");
    f.track_fib_changes();
    for n in ["n1", "n2", "n3", "n4"] {
        f.speaker_mut(n).unwrap().rib_mut().track_changes(true);
    }
    assert_eq!(f.take_fib_changes("n1"), Some(Vec::new()));
    f.fail_member("n4");
    assert!(f.run(Duration::from_secs(600)));
    let gone = net("10.244.0.192/26");
    for n in ["n1", "n2", "n3"] {
        assert_eq!(f.take_fib_changes(n), Some(vec![gone]), "{n}: only n4's block left its table");
        assert_eq!(f.speaker_mut(n).unwrap().rib_mut().take_changes(), vec![gone], "{n}: only n4's paths went");
    }
    assert_eq!(f.take_fib_changes("n4"), None, "a failed member's table was cleared: anything may have changed");
    assert_eq!(f.take_fib_changes("n4"), Some(Vec::new()), "and is journalled again");
    assert_eq!(f.take_fib_changes("n1"), Some(Vec::new()), "taken");
}

#[test]
fn a_failed_member_restarted_brings_the_tables_back_to_where_they_were() {
    let defs = mesh_defs();
    let mut f = fabric(3, lan, &defs);
    assert!(f.run(Duration::from_secs(600)));
    let before: Vec<_> = ["n1", "n2", "n3", "n4"].iter().map(|n| f.fib(n)).collect();
    f.fail_member("n2");
    assert!(f.run(Duration::from_secs(600)));
    assert!(!f.fib("n1").contains_key(&net("10.244.0.64/26")));
    let now = f.now();
    f.restart_member("n2", Some(node_speaker(1, &defs[1], &lan, now)));
    assert!(f.alive("n2"));
    assert!(f.run(Duration::from_secs(600)));
    let after: Vec<_> = ["n1", "n2", "n3", "n4"].iter().map(|n| f.fib(n)).collect();
    assert_eq!(before, after);
    assert!(f.sessions("n2").iter().all(|s| s.established), "{:?}", f.sessions("n2"));
}

#[test]
fn route_reflector_clients_learn_each_other_through_the_reflector() {
    let defs = vec![
        NodeDef {
            name: "n1",
            asn: 64512,
            addr: "10.0.0.1",
            peers: vec![("n2", "10.0.0.2", 64512), ("n3", "10.0.0.3", 64512)],
            originate: None,
            rr_clients: true,
            allow_local_as: 0,
        },
        NodeDef {
            name: "n2",
            asn: 64512,
            addr: "10.0.0.2",
            peers: vec![("rr", "10.0.0.1", 64512)],
            originate: Some("10.244.1.0/26"),
            rr_clients: false,
            allow_local_as: 0,
        },
        NodeDef {
            name: "n3",
            asn: 64512,
            addr: "10.0.0.3",
            peers: vec![("rr", "10.0.0.1", 64512)],
            originate: Some("10.244.2.0/26"),
            rr_clients: false,
            allow_local_as: 0,
        },
    ];
    let mut f = fabric(11, lan, &defs);
    assert!(f.run(Duration::from_secs(600)));
    // The reflector keeps the next hop: n3 forwards straight to n2.
    assert_eq!(f.fib("n3").get(&net("10.244.1.0/26")), Some(&vec![ip("10.0.0.2")]));
    assert_eq!(f.fib("n2").get(&net("10.244.2.0/26")), Some(&vec![ip("10.0.0.3")]));
}

#[test]
fn tor_design_needs_allow_local_as_for_nodes_of_one_rack_sharing_an_as() {
    // n1 and n2 share AS 65101 behind ToR t (AS 65001) on one rack segment.
    let rack = |name: &str| -> Vec<(String, IpNet)> {
        let a = match name {
            "t" => "10.0.1.1/24",
            "n1" => "10.0.1.11/24",
            _ => "10.0.1.12/24",
        };
        vec![("rack".into(), net(a))]
    };
    for (allow, learned) in [(0, false), (1, true)] {
        let node = |name: &'static str, block: &'static str| NodeDef {
            name,
            asn: 65101,
            addr: "",
            peers: vec![("t", "10.0.1.1", 65001)],
            originate: Some(block),
            rr_clients: false,
            allow_local_as: allow,
        };
        let defs = vec![
            NodeDef {
                name: "t",
                asn: 65001,
                addr: "10.0.1.1",
                peers: vec![("n1", "10.0.1.11", 65101), ("n2", "10.0.1.12", 65101)],
                originate: None,
                rr_clients: false,
                allow_local_as: 0,
            },
            node("n1", "10.244.1.0/26"),
            node("n2", "10.244.1.64/26"),
        ];
        let mut f = fabric(5, rack, &defs);
        assert!(f.run(Duration::from_secs(600)));
        assert_eq!(f.fib("t").len(), 2, "the ToR learns both blocks");
        assert_eq!(f.fib("n1").contains_key(&net("10.244.1.64/26")), learned, "allow-local-as {allow}");
    }
}

#[test]
fn a_failed_segment_takes_its_sessions_and_routes_down() {
    let mut f = fabric(2, lan, &mesh_defs());
    assert!(f.run(Duration::from_secs(600)));
    f.fail_segment("lan");
    assert!(f.run(Duration::from_secs(600)));
    for n in ["n1", "n2", "n3", "n4"] {
        assert!(f.fib(n).is_empty(), "{n}");
        assert!(f.sessions(n).iter().all(|s| !s.established && s.last_failure.is_some()), "{:?}", f.sessions(n));
    }
    f.restore_segment("lan");
    assert!(f.segment_alive("lan"));
    assert!(f.run(Duration::from_secs(600)));
    for n in ["n1", "n2", "n3", "n4"] {
        assert_eq!(f.fib(n).len(), 3, "{n}: the three other blocks again");
        assert!(f.sessions(n).iter().all(|s| s.established), "{:?}", f.sessions(n));
    }
}

#[test]
fn sessions_that_cannot_come_up_say_why() {
    // n2 expects AS 65000 for n1; n3 has no session for n1 at all.
    let mut defs = mesh_defs();
    defs.truncate(3);
    defs[1].peers = vec![("n1", "10.0.0.1", 65000)];
    defs[2].peers = vec![];
    defs[0].peers = vec![("n2", "10.0.0.2", 64512), ("n3", "10.0.0.3", 64512)];
    let mut f = fabric(4, lan, &defs);
    f.run(Duration::from_secs(300));
    let s = f.sessions("n1");
    assert!(s.iter().all(|s| !s.established));
    let to_n2 = &s[0];
    assert!(
        matches!(&to_n2.last_down, Some(DownReason::NotificationReceived(n)) if n.code == crate::error::code::OPEN_MESSAGE),
        "n2 rejects n1's OPEN (bad peer AS): {to_n2:?}"
    );
    let to_n3 = &s[1];
    assert!(to_n3.last_failure.as_deref().is_some_and(|f| f.contains("refused")), "{to_n3:?}");
}

#[test]
fn a_connection_finds_its_peer_on_the_second_of_two_segments_with_one_subnet() {
    // a is on two segments that share 10.0.0.0/24; b is only on the second.
    let mut f = Fabric::new(3);
    let now = f.now();
    let id = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut a = Speaker::new(rib_cfg(id("1.1.1.1"), 65001), now);
    a.add_peer(setup("b", ip("10.0.0.2"), id("1.1.1.1"), 65001, 65002), now).unwrap();
    let mut b = Speaker::new(rib_cfg(id("2.2.2.2"), 65002), now);
    // b only waits: a's connection must find it.
    let mut waits = setup("a", ip("10.0.0.1"), id("2.2.2.2"), 65002, 65001);
    waits.session.passive = true;
    b.add_peer(waits, now).unwrap();
    b.originate(net("192.0.2.0/24"), Some(own_attrs()), now);
    f.add_member("a", Some(a), vec![("s1".into(), net("10.0.0.1/24")), ("s2".into(), net("10.0.0.1/24"))]);
    f.add_member("b", Some(b), vec![("s2".into(), net("10.0.0.2/24"))]);
    assert!(f.run(Duration::from_secs(600)));
    assert!(f.sessions("a").iter().all(|s| s.established), "{:?}", f.sessions("a"));
    assert_eq!(f.fib("a").get(&net("192.0.2.0/24")), Some(&vec![ip("10.0.0.2")]));
}

#[test]
fn long_lived_stale_routes_of_a_failed_peer_age_out_without_an_hour_of_keepalives() {
    let mut f = Fabric::new(9);
    let now = f.now();
    let id = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let llgr = |mut s: PeerSetup| {
        s.session.graceful_restart = Some(crate::session::GracefulRestartConfig {
            long_lived_stale_time: Some(3600),
            ..crate::session::GracefulRestartConfig::new(120)
        });
        s
    };
    let mut a = Speaker::new(rib_cfg(id("1.1.1.1"), 65001), now);
    a.add_peer(llgr(setup("b", ip("10.0.0.2"), id("1.1.1.1"), 65001, 65002)), now).unwrap();
    let mut b = Speaker::new(rib_cfg(id("2.2.2.2"), 65002), now);
    b.add_peer(llgr(setup("a", ip("10.0.0.1"), id("2.2.2.2"), 65002, 65001)), now).unwrap();
    b.originate(net("192.0.2.0/24"), Some(own_attrs()), now);
    f.add_member("a", Some(a), vec![("s".into(), net("10.0.0.1/24"))]);
    f.add_member("b", Some(b), vec![("s".into(), net("10.0.0.2/24"))]);
    assert!(f.run(Duration::from_secs(600)));
    assert!(f.fib("a").contains_key(&net("192.0.2.0/24")));
    let (t0, d0) = (f.elapsed(), f.deliveries());
    f.fail_member("b");
    assert!(f.run(Duration::from_secs(4200)), "converges once the long-lived stale route is gone");
    assert!(f.fib("a").is_empty(), "{:?}", f.fib("a"));
    assert!(f.elapsed() - t0 > Duration::from_secs(3600), "the stale route lived its hour: {:?}", f.elapsed() - t0);
    assert!(f.skipped() > Duration::from_secs(3000), "skipped {:?}", f.skipped());
    assert!(f.deliveries() - d0 < 200, "{} deliveries for an hour of one idle peer", f.deliveries() - d0);
}

/// A full mesh of `n` nodes on one LAN (`lan`), each originating a block.
fn wide_mesh(n: usize) -> Vec<NodeDef> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let names: Vec<&'static str> = (1..=n).map(|i| leak(format!("n{i}"))).collect();
    let addrs: Vec<&'static str> = (1..=n).map(|i| leak(format!("10.0.0.{i}"))).collect();
    (0..n)
        .map(|i| NodeDef {
            name: names[i],
            asn: 64512,
            addr: addrs[i],
            peers: (0..n).filter(|j| *j != i).map(|j| (names[j], addrs[j], 64512)).collect(),
            originate: Some(leak(format!("10.244.{i}.0/26"))),
            rr_clients: false,
            allow_local_as: 0,
        })
        .collect()
}

#[test]
fn the_outcome_does_not_depend_on_the_threads_a_window_runs_on() {
    let defs = wide_mesh(12);
    let names: Vec<&str> = defs.iter().map(|d| d.name).collect();
    let outcome = |threads: usize| {
        let mut f = fabric(11, lan, &defs);
        f.set_threads(threads);
        f.always_parallel();
        let snapshot = |f: &Fabric| {
            let tables: Vec<_> = names.iter().map(|n| (f.fib(n), f.sessions(n))).collect();
            (f.elapsed(), f.deliveries(), tables)
        };
        let mut seen = Vec::new();
        assert!(f.run(Duration::from_secs(600)), "{threads} threads");
        seen.push(snapshot(&f));
        f.fail_member("n3");
        assert!(f.run(Duration::from_secs(600)), "{threads} threads, n3 failed");
        seen.push(snapshot(&f));
        // Its peers reconnect as their timers fire, in windows.
        let now = f.now();
        f.restart_member("n3", Some(node_speaker(2, &defs[2], &lan, now)));
        assert!(f.run(Duration::from_secs(600)), "{threads} threads, n3 back");
        seen.push(snapshot(&f));
        seen
    };
    let one = outcome(1);
    let (_, _, tables) = &one[0];
    assert!(tables.iter().all(|(fib, sessions)| fib.len() == 11 && sessions.iter().all(|s| s.established)));
    let (_, _, tables) = &one[1];
    assert!(tables.iter().enumerate().all(|(i, (fib, _))| i == 2 || fib.len() == 10), "{tables:?}");
    let fibs = |i: usize| one[i].2.iter().map(|(fib, _)| fib.clone()).collect::<Vec<_>>();
    assert!(fibs(2) == fibs(0), "back to where it was");
    assert!(one == outcome(2), "1 and 2 threads differ");
    assert!(one == outcome(3), "1 and 3 threads differ");
}
