//! Which peers run BFD with which timers, and the task's checks on what it
//! receives (spoofed and malformed packets), without sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bgpd_proto::bfd::{ControlPacket, State};

use super::socket::Datagram;
use super::task::Task;
use super::*;
use crate::daemon::plan::plan;
use crate::datastore::{parse_sources, SourceText};

const NODES: &str = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1, labels: {rack: r1}}\n\
                     spec: {bgp: {ipv4Address: 10.0.0.1/24, ipv6Address: 'fd00::1/64'}}\n\
                     ---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                     spec: {nodeToNodeMeshEnabled: false}\n";

fn peer(name: &str, ip: &str, annotation: Option<&str>) -> String {
    let ann = annotation.map(|a| format!("annotations: {{bgpd.io/bfd: '{a}'}}, ")).unwrap_or_default();
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{{ann}name: '{name}'}}\n\
         spec: {{peerIP: '{ip}', asNumber: 65000}}\n"
    )
}

fn bfd_configuration(interfaces: &str) -> String {
    format!("---\napiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: b}}\nspec: {{interfaces: [{interfaces}]}}\n")
}

/// The sessions n1 runs, on a host whose connected networks are given.
fn sessions(yaml: &str, networks: &[(&str, &str)]) -> Vec<BfdPeer> {
    let (model, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text: yaml.into() }]).unwrap();
    assert!(problems.iter().all(|p| p.severity < crate::datastore::Severity::Warning), "{problems:?}");
    let (node, peers) = plan(&model, "n1").unwrap();
    let networks: Vec<(String, ipnet::IpNet)> =
        networks.iter().map(|(i, n)| (i.to_string(), n.parse().unwrap())).collect();
    sessions_on(&node, peers.iter(), &networks)
}

const HOST: &[(&str, &str)] = &[("eth0", "10.0.0.1/24"), ("eth0", "fd00::1/64"), ("ens3", "192.168.7.5/24")];

#[test]
fn a_bfd_configuration_runs_bfd_with_the_peers_on_its_interfaces() {
    let yaml = format!(
        "{NODES}{}{}{}{}",
        peer("tor", "10.0.0.254", None),
        peer("tor6", "fd00::fe", None),
        peer("mgmt", "192.168.7.1", None),
        bfd_configuration(
            "{matchPattern: eth*, minimumRecvInterval: 300ms, minimumSendInterval: 200ms, multiplier: 3}"
        )
    );
    let s = sessions(&yaml, HOST);
    let names: Vec<&str> = s.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["tor", "tor6"], "ens3 is not selected");
    let tor = &s[0];
    assert_eq!((tor.multihop, tor.interface.as_deref()), (false, Some("eth0")));
    assert_eq!(tor.config.required_min_rx, Duration::from_millis(300));
    assert_eq!(tor.config.desired_min_tx, Duration::from_millis(200));
    assert_eq!(tor.config.detect_mult, 3);
    assert_eq!(tor.config.idle_tx, Duration::from_secs(60), "Calico Enterprise's idleSendInterval default");
    assert_eq!(tor.local, Some("10.0.0.1".parse().unwrap()), "sent from the BGP session's source");
    assert_eq!(s[1].local, Some("fd00::1".parse().unwrap()));
}

#[test]
fn without_a_configuration_or_annotation_there_is_no_bfd() {
    let yaml = format!("{NODES}{}", peer("tor", "10.0.0.254", None));
    assert!(sessions(&yaml, HOST).is_empty());
}

#[test]
fn the_annotation_overrides_the_configuration_for_one_peer() {
    let yaml = format!(
        "{NODES}{}{}{}{}{}",
        peer("off", "10.0.0.253", Some("false")),
        peer("on", "10.0.0.252", Some("true")),
        peer("far", "172.16.0.1", Some("multihop")),
        peer("far-on", "172.16.0.2", Some("true")),
        bfd_configuration("{matchPattern: eth0, multiplier: 4}")
    );
    let s = sessions(&yaml, HOST);
    let got: Vec<(&str, bool, u8)> = s.iter().map(|p| (p.name.as_str(), p.multihop, p.config.detect_mult)).collect();
    // A multihop or explicitly asked peer off any configured interface gets
    // the default timers (300 ms x 3).
    assert_eq!(got, [("far", true, 3), ("far-on", false, 3), ("on", false, 4)]);
    assert_eq!(s[0].interface, None);
    assert_eq!(s[0].local, Some("10.0.0.1".parse().unwrap()), "multihop: from the BGP session's source");
    // Single-hop on another interface than the node IP's: from that interface's address.
    let yaml = format!("{NODES}{}", peer("mgmt", "192.168.7.1", Some("true")));
    assert_eq!(sessions(&yaml, HOST)[0].local, Some("192.168.7.5".parse().unwrap()));
    let yaml = format!("{NODES}{}", peer("on", "10.0.0.252", Some("true")));
    assert_eq!(sessions(&yaml, HOST)[0].config, BfdConfig::default());
}

#[test]
fn the_most_specific_pattern_and_the_longest_network_win() {
    let yaml = format!(
        "{NODES}{}{}",
        peer("tor", "10.0.0.254", None),
        bfd_configuration("{matchPattern: '*', multiplier: 9}, {matchPattern: eth*, multiplier: 7}, {matchPattern: eth0.100, multiplier: 5}")
    );
    assert_eq!(sessions(&yaml, HOST)[0].config.detect_mult, 7);
    // The peer is in 10.0.0.0/24 of eth0 and 10.0.0.0/25 of the VLAN: the VLAN is the way.
    let host = [("eth0", "10.0.0.1/24"), ("eth0.100", "10.0.0.129/25")];
    assert_eq!(sessions(&yaml, &host)[0].config.detect_mult, 5);
    assert_eq!(sessions(&yaml, &host)[0].interface.as_deref(), Some("eth0.100"));
    assert_eq!(sessions(&yaml, &host)[0].local, Some("10.0.0.129".parse().unwrap()), "that interface's address");
    let lo = [("lo0", "127.0.0.1/8")];
    assert!(sessions(&yaml, &lo).is_empty(), "not on a connected network: no single-hop session");
}

fn task() -> (Task, mpsc::UnboundedReceiver<BfdNotice>) {
    let (notices, rx) = mpsc::unbounded_channel();
    let mut t = Task::new(notices);
    // No listener is opened: the packets are handed in directly.
    t.listening = [((false, false), ()), ((true, false), ()), ((false, true), ())].into();
    (t, rx)
}

fn add(t: &mut Task, name: &str, addr: &str, multihop: bool) -> u32 {
    t.set(vec![bfd_peer(name, addr, multihop)]);
    t.sessions[name].bfd.local_discr()
}

fn bfd_peer(name: &str, addr: &str, multihop: bool) -> BfdPeer {
    BfdPeer {
        name: name.into(),
        addr: addr.parse().unwrap(),
        local: Some(if addr.contains(':') { "::1" } else { "127.0.0.1" }.parse().unwrap()),
        multihop,
        config: BfdConfig::default(),
        interface: None,
        restart_window: Duration::from_secs(120),
    }
}

fn datagram(p: &ControlPacket, from: &str, ttl: u8, multihop: bool) -> Datagram {
    let mut bytes = [0u8; 64];
    let enc = p.encode();
    bytes[..enc.len()].copy_from_slice(&enc);
    Datagram { bytes, len: enc.len(), from: SocketAddr::new(from.parse().unwrap(), 49152), ttl: Some(ttl), multihop }
}

fn hello(your_discr: u32, state: State) -> ControlPacket {
    ControlPacket {
        diag: bgpd_proto::bfd::Diag::NONE,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discr: 0x5eed,
        your_discr,
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

#[test]
fn spoofed_and_malformed_packets_are_counted_and_dropped() {
    let (mut t, _notices) = task();
    let discr = add(&mut t, "tor", "127.0.0.2", false);
    let good = hello(0, State::Down);

    t.receive(&datagram(&good, "127.0.0.2", 254, false));
    t.receive(&datagram(&good, "127.0.0.2", 1, false));
    t.receive(&datagram(&hello(discr ^ 1, State::Down), "127.0.0.2", 255, false));
    t.receive(&datagram(&good, "127.0.0.9", 255, false));
    t.receive(&datagram(&hello(discr, State::Down), "127.0.0.9", 255, false));
    let mut short = datagram(&good, "127.0.0.2", 255, false);
    short.len = 23;
    t.receive(&short);
    let mut long = datagram(&good, "127.0.0.2", 255, false);
    long.bytes[3] = 40; // Length says 40, 24 received.
    t.receive(&long);
    let mut v2 = datagram(&good, "127.0.0.2", 255, false);
    v2.bytes[0] = (2 << 5) | (v2.bytes[0] & 0x1f);
    t.receive(&v2);
    let want: BTreeMap<String, u64> = [
        ("TTL is not 255", 2),
        ("your discriminator names no session", 1),
        ("no session for the sender", 2),
        ("bad length", 2),
        ("version is not 1", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(t.discarded, want);
    assert_eq!(t.sessions["tor"].bfd.state(), State::Down, "nothing spoofed moved the session");

    // The real peer's packet, with TTL 255, does.
    t.receive(&datagram(&good, "127.0.0.2", 255, false));
    assert_eq!(t.sessions["tor"].bfd.state(), State::Init);
}

#[test]
fn multihop_packets_need_no_ttl_255_but_a_multihop_session() {
    let (mut t, _notices) = task();
    add(&mut t, "far", "127.0.0.3", true);
    // A single-hop packet from the multihop peer's address finds no single-hop session.
    t.receive(&datagram(&hello(0, State::Down), "127.0.0.3", 255, false));
    assert_eq!(t.discarded.get("no session for the sender"), Some(&1));
    t.receive(&datagram(&hello(0, State::Down), "127.0.0.3", 250, true));
    assert_eq!(t.sessions["far"].bfd.state(), State::Init);
}

#[test]
fn the_session_comes_up_and_a_silent_remote_is_a_failure_notice() {
    let (mut t, mut notices) = task();
    let discr = add(&mut t, "tor", "127.0.0.2", false);
    t.receive(&datagram(&hello(0, State::Down), "127.0.0.2", 255, false));
    t.receive(&datagram(&hello(discr, State::Up), "127.0.0.2", 255, false));
    let now = Instant::now();
    t.drive(now);
    let up = notices.try_recv().expect("an Up notice");
    assert!(up.up && up.peer == "tor");
    // Nothing more is heard: after the detection time (3 x 300 ms) the session fails.
    t.drive(now + Duration::from_millis(1000));
    let down = notices.try_recv().expect("a Down notice");
    assert!(!down.up && down.failure, "{down:?}");
    assert_eq!(down.diag, "Control Detection Time Expired");
}

#[test]
fn the_remote_s_admin_down_is_not_a_failure() {
    let (mut t, mut notices) = task();
    let discr = add(&mut t, "tor", "127.0.0.2", false);
    t.receive(&datagram(&hello(discr, State::Init), "127.0.0.2", 255, false));
    t.drive(Instant::now());
    assert!(notices.try_recv().unwrap().up);
    t.receive(&datagram(&hello(discr, State::AdminDown), "127.0.0.2", 255, false));
    t.drive(Instant::now());
    let down = notices.try_recv().unwrap();
    assert!(!down.up && !down.failure, "RFC 5882 §3.2: AdminDown is not a path failure: {down:?}");
}

#[test]
fn a_timer_edit_keeps_the_session_and_a_gone_peer_ends_it() {
    let (mut t, _notices) = task();
    let discr = add(&mut t, "tor", "127.0.0.2", false);
    let mut p = t.sessions["tor"].peer.clone();
    p.config.detect_mult = 5;
    t.set(vec![p]);
    assert_eq!(t.sessions["tor"].bfd.local_discr(), discr, "same session, new timers (a Poll sequence)");
    assert_eq!(t.sessions["tor"].bfd.config().detect_mult, 5);
    t.set(Vec::new());
    assert!(t.sessions.is_empty() && t.by_discr.is_empty());
}

#[test]
fn a_restart_slows_the_sessions_down_and_the_next_run_resumes_them() {
    let (mut t, _notices) = task();
    let discr = add(&mut t, "tor", "127.0.0.2", false);
    t.receive(&datagram(&hello(discr, State::Init), "127.0.0.2", 255, false));
    t.drive(Instant::now());
    assert_eq!(t.sessions["tor"].bfd.state(), State::Up);
    let (tx, mut rx) = oneshot::channel();
    t.prepare_restart(tx);
    assert!(rx.try_recv().is_err(), "waits for the remote's Final");
    assert_eq!(t.sessions["tor"].bfd.config().detect_mult, 120, "1 s x 120: the 120 s restart time");
    let fin = ControlPacket { final_: true, ..hello(discr, State::Up) };
    t.receive(&datagram(&fin, "127.0.0.2", 255, false));
    t.restart_ready(Instant::now());
    let records = rx.try_recv().expect("answered once the Final came");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].session.local_discr, records[0].session.remote_discr), (discr, 0x5eed));
    assert_eq!(records[0].remote_detection_time(), Duration::from_secs(120));

    // The next run: the same peer resumes Up with the same discriminators.
    let (mut next, mut notices) = task();
    next.resume = records.into_iter().map(|r| (r.peer.clone(), r)).collect();
    next.resume_until = Some(Instant::now() + Duration::from_secs(60));
    assert_eq!(add(&mut next, "tor", "127.0.0.2", false), discr);
    assert_eq!(next.sessions["tor"].bfd.state(), State::Up);
    next.drive(Instant::now());
    assert!(notices.try_recv().is_err(), "no state change to report: it never went down");
    // A peer at another address does not take the record.
    let (mut other, _) = task();
    other.resume = next.resume.clone();
    other.resume.insert("tor".into(), ResumeRecord { addr: "127.0.0.9".parse().unwrap(), ..rec(discr) });
    other.resume_until = Some(Instant::now() + Duration::from_secs(60));
    assert_ne!(add(&mut other, "tor", "127.0.0.2", false), discr);
    assert_eq!(other.sessions["tor"].bfd.state(), State::Down);
}

fn rec(discr: u32) -> ResumeRecord {
    ResumeRecord {
        peer: "tor".into(),
        addr: "127.0.0.2".parse().unwrap(),
        multihop: false,
        session: bgpd_proto::bfd::BfdResume {
            local_discr: discr,
            remote_discr: 0x5eed,
            remote_min_rx: 300_000,
            remote_desired_min_tx: 300_000,
            remote_detect_mult: 3,
            desired_min_tx: 1_000_000,
            detect_mult: 120,
        },
    }
}

#[test]
fn the_timer_queue_wakes_only_the_session_that_is_due() {
    let (mut t, mut notices) = task();
    t.set(vec![bfd_peer("a", "127.0.0.2", false), bfd_peer("b", "127.0.0.3", false)]);
    let (a, b) = (t.sessions["a"].bfd.local_discr(), t.sessions["b"].bfd.local_discr());
    t.receive(&datagram(&hello(a, State::Init), "127.0.0.2", 255, false));
    t.receive(&datagram(&hello(b, State::Init), "127.0.0.3", 255, false));
    let start = Instant::now();
    t.drive(start);
    assert!(notices.try_recv().unwrap().up && notices.try_recv().unwrap().up);
    let first = t.next_deadline().expect("a deadline while sessions run");
    assert!(first > start && first <= start + Duration::from_millis(1000), "the next transmit or detection");
    // `b` keeps being heard; `a` is silent past its detection time (900 ms).
    for step in 1..=12 {
        let now = start + Duration::from_millis(100 * step);
        t.receive_at(&datagram(&hello(b, State::Up), "127.0.0.3", 255, false), now);
        t.drive(now);
    }
    let down = notices.try_recv().expect("a's Down");
    assert_eq!((down.peer.as_str(), down.up, down.failure), ("a", false, true));
    assert!(notices.try_recv().is_err(), "b stays up");
    assert_eq!(t.sessions["b"].bfd.state(), State::Up);
    // Stale queue entries are skipped: every session keeps exactly one live deadline.
    let live = t.timers.iter().filter(|e| t.sessions.get(&e.0 .1).is_some_and(|s| s.scheduled == Some(e.0 .0)));
    assert_eq!(live.count(), 2);
}
