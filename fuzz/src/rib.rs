//! The RIB driven by several peers' UPDATE sequences, checked against a
//! reference model and against a RIB rebuilt from scratch.
//!
//! Three eBGP source peers (AS 65011–65013, router IDs 10.0.0.11–13, each
//! with graceful restart, restart time 120 s) announce and withdraw prefixes
//! from a pool of six, with AS_PATHs of 1–4 ASes and an optional MED; they
//! send UPDATEs marked treat-as-withdraw (RFC 7606), End-of-RIB, and go down
//! (gracefully or not) and up again; time passes; the RIB is flushed. Two
//! monitor peers (one with ADD-PATH send) receive what the RIB exports.
//! Every UPDATE goes through the codec first, as from a socket.
//!
//! The model is written from the RFCs and shares no code with the RIB (the
//! same model as the property test in `bgpd/proto/tests/rib_core.rs`):
//! RFC 4271 §9.1.2.2 over the attributes varied here (shortest AS_PATH, then
//! lowest BGP identifier; MED is never compared, each peer being its own
//! neighbouring AS), RFC 4724 §4.2 for stale paths. After every event:
//! - the RIB holds exactly the model's paths, with their stale flags;
//! - each prefix's best path and ECMP set (`multipath_relax`, up to
//!   `max_paths`) are the model's: so the best path is one of the current
//!   candidates, and a prefix withdrawn by every peer has none.
//!
//! After every flush, in addition:
//! - the monitor holds the best path of every prefix (our AS prepended), the
//!   ADD-PATH monitor every used path, and each source peer the best paths
//!   that are not its own;
//! - a RIB built from scratch with only the current paths selects the same
//!   best paths and ECMP sets as the RIB that saw the whole history.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bgpd_proto::nlri::Nlri;
use bgpd_proto::rib::core::{Output, PeerConfig, PeerRestart, Rib, RibConfig, SessionInfo, STALE_PATH_TIME};
use bgpd_proto::rib::decision::DecisionOptions;
use bgpd_proto::rib::table::PeerId;
use bgpd_proto::wire::{AsPath, Attr, Message, MpNlri, MpReach, MpUnreach, NextHop, Origin, PathAttribute, Update};
use bgpd_proto::{Family, FamilySet, WireContext};
use ipnet::IpNet;

use crate::Input;

const LOCAL_AS: u32 = 65000;
const PEERS: usize = 3;
const PEER_AS: [u32; PEERS] = [65011, 65012, 65013];
const PREFIXES: [&str; 6] =
    ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24", "2001:db8:1::/48", "2001:db8:2::/48"];
const RESTART_TIME: u16 = 120;
const MAX_EVENTS: usize = 200;
const V4: Family = Family::IPV4_UNICAST;
const V6: Family = Family::IPV6_UNICAST;

fn prefix(k: usize) -> IpNet {
    PREFIXES[k].parse().expect("pool prefix")
}

fn router_id(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 11 + i as u8)
}

fn flat(p: &AsPath) -> Vec<u32> {
    p.segments.iter().flat_map(|s| s.asns.iter().copied()).collect()
}

/// An UPDATE from source peer `i` announcing pool prefix `k`.
fn announce(i: usize, k: usize, path: &[u32], med: Option<u32>) -> Update {
    let mut u = Update::default();
    let mut attributes = vec![
        PathAttribute::new(Attr::Origin(Origin::Igp)),
        PathAttribute::new(Attr::AsPath(AsPath::sequence(path.iter().copied()))),
    ];
    match prefix(k) {
        IpNet::V4(p) => {
            attributes.push(PathAttribute::new(Attr::NextHop(router_id(i))));
            u.nlri = vec![Nlri::new(p)];
        }
        IpNet::V6(p) => attributes.insert(
            0,
            PathAttribute::new(Attr::MpReach(Box::new(MpReach {
                family: V6,
                next_hop: NextHop::V6 {
                    global: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 11 + i as u16),
                    link_local: None,
                },
                nlri: MpNlri::V6(vec![Nlri::new(p)]),
            }))),
        ),
    }
    attributes.extend(med.map(|m| PathAttribute::new(Attr::Med(m))));
    u.attributes = attributes;
    u
}

fn withdraw(k: usize) -> Update {
    let mut u = Update::default();
    match prefix(k) {
        IpNet::V4(p) => u.withdrawn.push(Nlri::new(p)),
        IpNet::V6(p) => u
            .attributes
            .push(PathAttribute::new(Attr::MpUnreach(MpUnreach { family: V6, nlri: MpNlri::V6(vec![Nlri::new(p)]) }))),
    }
    u
}

/// Through the codec, as the session would hand it over.
fn via_codec(u: Update) -> Update {
    let ctx = WireContext::new(true);
    let bytes = Message::Update(u).to_bytes(&ctx).expect("a pool UPDATE encodes");
    let frame = Message::decode(&bytes, &ctx).expect("a pool UPDATE decodes").expect("whole");
    assert!(frame.issues.is_empty(), "a pool UPDATE has RFC 7606 issues: {:?}", frame.issues);
    match frame.message {
        Message::Update(u) => u,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

/// The reference model (see the module docs).
#[derive(Clone, Default)]
struct Model {
    now: u64,
    up: [bool; PEERS],
    /// Per source peer: pool prefix → (AS_PATH, stale).
    paths: [BTreeMap<usize, (Vec<u32>, bool)>; PEERS],
    /// Per source peer: when its stale paths go.
    stale_until: [Option<u64>; PEERS],
}

impl Model {
    /// RFC 4724 §4.2: a graceful loss keeps the paths, stale, for the restart
    /// time; any other loss withdraws them.
    fn down(&mut self, i: usize, graceful: bool) {
        self.up[i] = false;
        if graceful {
            self.paths[i].values_mut().for_each(|(_, stale)| *stale = true);
            self.stale_until[i] = Some(self.now + u64::from(RESTART_TIME));
        } else {
            self.paths[i].clear();
            self.stale_until[i] = None;
        }
    }

    /// Back within the restart time: stale paths wait for End-of-RIB, at most
    /// the stale-path time.
    fn up(&mut self, i: usize) {
        self.up[i] = true;
        if self.stale_until[i].is_some() {
            self.stale_until[i] = Some(self.now + STALE_PATH_TIME.as_secs());
        }
    }

    /// End-of-RIB (both families) removes what is still stale.
    fn end_of_rib(&mut self, i: usize) {
        self.paths[i].retain(|_, (_, stale)| !*stale);
        self.stale_until[i] = None;
    }

    fn advance(&mut self, secs: u64) {
        self.now += secs;
        for i in 0..PEERS {
            if self.stale_until[i].is_some_and(|t| t <= self.now) {
                self.end_of_rib(i);
            }
        }
    }

    /// RFC 4271 §9.1.2.2 for pool prefix `k`: (best, used) source peers.
    fn select(&self, k: usize, max_paths: usize) -> Option<(usize, Vec<usize>)> {
        let mut candidates: Vec<(usize, usize)> =
            (0..PEERS).filter_map(|i| self.paths[i].get(&k).map(|(path, _)| (path.len(), i))).collect();
        candidates.sort();
        let &(best_len, best) = candidates.first()?;
        let used = candidates.iter().filter(|(len, _)| *len == best_len).map(|(_, i)| *i).take(max_paths).collect();
        Some((best, used))
    }
}

/// A peer's Adj-RIB-In from us: (prefix, path id) → AS_PATH.
type Received = BTreeMap<(IpNet, u32), Vec<u32>>;

struct Sim {
    rib: Rib,
    now: Instant,
    sources: Vec<PeerId>,
    monitor: PeerId,
    addpath_monitor: PeerId,
    /// What each peer was sent and still holds (by peer id).
    held: BTreeMap<PeerId, Received>,
    /// The session context each up peer decodes with.
    tx: BTreeMap<PeerId, WireContext>,
}

fn peer_config(name: String, addr: Ipv4Addr, asn: u32) -> PeerConfig {
    PeerConfig::new(name, IpAddr::V4(addr), LOCAL_AS, asn)
}

fn session(id: Ipv4Addr, tx: WireContext, graceful: bool) -> SessionInfo {
    SessionInfo {
        peer_id: id,
        families: FamilySet::of(&[V4, V6]),
        tx,
        local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_v6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        shared_v4: None,
        shared_v6: None,
        route_refresh: true,
        enhanced_refresh: false,
        graceful_restart: graceful.then(|| PeerRestart::new(RESTART_TIME, FamilySet::of(&[V4, V6]))),
        long_lived: false,
    }
}

impl Sim {
    fn new(max_paths: usize) -> Sim {
        let cfg = RibConfig {
            router_id: Ipv4Addr::new(10, 255, 0, 1),
            local_as: LOCAL_AS,
            cluster_id: None,
            decision: DecisionOptions { multipath_relax: true, ..DecisionOptions::default() },
            max_paths,
            defer: None,
            defer_peer_wait: Duration::from_secs(10),
            fib: false,
        };
        let t0 = Instant::now();
        let mut rib = Rib::new(cfg, t0);
        let sources = (0..PEERS)
            .map(|i| rib.add_peer(peer_config(format!("peer{}", 11 + i), router_id(i), PEER_AS[i])))
            .collect();
        let monitor = rib.add_peer(peer_config("monitor".into(), Ipv4Addr::new(10, 0, 0, 20), 65020));
        let addpath_monitor = rib.add_peer(peer_config("addpath".into(), Ipv4Addr::new(10, 0, 0, 21), 65021));
        let mut sim =
            Sim { rib, now: t0, sources, monitor, addpath_monitor, held: BTreeMap::new(), tx: BTreeMap::new() };
        sim.up_peer(monitor, Ipv4Addr::new(10, 0, 0, 20), WireContext::new(true), false);
        let addpath = WireContext::new(true).with_add_path(FamilySet::of(&[V4, V6]));
        sim.up_peer(addpath_monitor, Ipv4Addr::new(10, 0, 0, 21), addpath, false);
        for i in 0..PEERS {
            sim.up_source(i);
        }
        sim
    }

    fn up_peer(&mut self, id: PeerId, rid: Ipv4Addr, tx: WireContext, graceful: bool) {
        self.held.insert(id, Received::new());
        self.tx.insert(id, tx.clone());
        self.rib.peer_up(id, session(rid, tx, graceful), self.now);
        self.drain();
    }

    fn up_source(&mut self, i: usize) {
        self.up_peer(self.sources[i], router_id(i), WireContext::new(true), true);
    }

    fn down_source(&mut self, i: usize, graceful: bool) {
        let id = self.sources[i];
        self.held.remove(&id);
        self.tx.remove(&id);
        self.rib.peer_down(id, graceful, self.now);
        self.drain();
    }

    fn update(&mut self, i: usize, u: Update, treat_as_withdraw: bool) {
        self.rib.update(self.sources[i], &via_codec(u), treat_as_withdraw, self.now);
        self.drain();
    }

    fn flush(&mut self) {
        self.rib.flush(self.now);
        self.drain();
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.rib.handle_timeout(self.now);
        self.drain();
    }

    /// Applies what the RIB sends to the receiving peers' Adj-RIBs-In.
    fn drain(&mut self) {
        while let Some(o) = self.rib.poll_output() {
            match o {
                Output::Send { peers, messages } => {
                    assert!(!peers.is_empty(), "Send to nobody");
                    for id in peers {
                        let tx = self.tx.get(&id).unwrap_or_else(|| panic!("Send to {id:?}, whose session is down"));
                        let held = self.held.get_mut(&id).expect("an up peer");
                        for m in &messages {
                            let frame = Message::decode(m, tx).expect("RIB output decodes").expect("whole message");
                            assert_eq!(frame.len, m.len(), "one message per buffer");
                            assert!(frame.issues.is_empty(), "RIB output has RFC 7606 issues: {:?}", frame.issues);
                            let Message::Update(u) = frame.message else { panic!("Send carries a non-UPDATE") };
                            apply(held, &u);
                        }
                    }
                }
                Output::Message(id, m) => {
                    let tx = self.tx.get(&id).unwrap_or_else(|| panic!("Message to {id:?}, whose session is down"));
                    let bytes = m.to_bytes(tx).expect("RIB message encodes");
                    let frame = Message::decode(&bytes, tx).expect("decodes").expect("whole");
                    if let Message::Update(u) = frame.message {
                        apply(self.held.get_mut(&id).expect("an up peer"), &u);
                    }
                }
                Output::Teardown { peer, .. } => panic!("teardown of {peer:?} without a prefix limit"),
                Output::Warning(..) | Output::DeferralDone | Output::Fib(_) => {}
            }
        }
    }
}

/// A peer applies an UPDATE to what it holds from us.
fn apply(held: &mut Received, u: &Update) {
    if u.end_of_rib_family().is_some() {
        return;
    }
    let key = |p: IpNet, id: Option<u32>| (p, id.unwrap_or(0));
    for n in &u.withdrawn {
        held.remove(&key(IpNet::V4(n.prefix), n.path_id));
    }
    if let Some(un) = u.mp_unreach() {
        match &un.nlri {
            MpNlri::V4(v) => v.iter().for_each(|n| drop(held.remove(&key(IpNet::V4(n.prefix), n.path_id)))),
            MpNlri::V6(v) => v.iter().for_each(|n| drop(held.remove(&key(IpNet::V6(n.prefix), n.path_id)))),
            MpNlri::Other(_) => panic!("an MP_UNREACH of a family not negotiated"),
        }
    }
    let path = u.as_path().map(flat).unwrap_or_default();
    for n in &u.nlri {
        held.insert(key(IpNet::V4(n.prefix), n.path_id), path.clone());
    }
    if let Some(r) = u.mp_reach() {
        match &r.nlri {
            MpNlri::V4(v) => {
                v.iter().for_each(|n| drop(held.insert(key(IpNet::V4(n.prefix), n.path_id), path.clone())))
            }
            MpNlri::V6(v) => {
                v.iter().for_each(|n| drop(held.insert(key(IpNet::V6(n.prefix), n.path_id), path.clone())))
            }
            MpNlri::Other(_) => panic!("an MP_REACH of a family not negotiated"),
        }
    }
}

/// The RIB's paths: (prefix, peer name) → (AS_PATH, stale).
type Paths = BTreeMap<(IpNet, String), (Vec<u32>, bool)>;
/// The RIB's selection: prefix → (best peer, used peers sorted).
type Selection = BTreeMap<IpNet, (String, Vec<String>)>;

fn view(rib: &Rib) -> (Paths, Selection) {
    let routes = rib.routes(None);
    let mut paths = Paths::new();
    let mut selection = Selection::new();
    for (p, views) in &routes {
        for v in views {
            let name = v.peer.clone().expect("no path is originated here");
            let old = paths.insert((*p, name), (flat(&v.attrs.as_path()), v.stale));
            assert!(old.is_none(), "two paths from one peer without ADD-PATH");
        }
        let best: Vec<&String> = views.iter().filter(|v| v.best).filter_map(|v| v.peer.as_ref()).collect();
        assert!(best.len() <= 1, "{p}: several best paths");
        let mut used: Vec<String> = views.iter().filter(|v| v.used).filter_map(|v| v.peer.clone()).collect();
        used.sort();
        if let Some(b) = best.first() {
            assert!(used.contains(b), "{p}: the best path is not used");
            selection.insert(*p, ((*b).clone(), used));
        } else {
            assert!(used.is_empty(), "{p}: used paths without a best one");
        }
    }
    (paths, selection)
}

fn name(i: usize) -> String {
    format!("peer{}", 11 + i)
}

fn with_us(p: &[u32]) -> Vec<u32> {
    [&[LOCAL_AS], p].concat()
}

/// The RIB against the model (after every event).
fn check_rib(sim: &Sim, model: &Model, max_paths: usize) {
    let mut want_paths = Paths::new();
    for (i, paths) in model.paths.iter().enumerate() {
        for (k, (path, stale)) in paths {
            want_paths.insert((prefix(*k), name(i)), (path.clone(), *stale));
        }
    }
    let mut want_selection = Selection::new();
    for k in 0..PREFIXES.len() {
        if let Some((best, used)) = model.select(k, max_paths) {
            let mut used: Vec<String> = used.into_iter().map(name).collect();
            used.sort();
            want_selection.insert(prefix(k), (name(best), used));
        }
    }
    let (paths, selection) = view(&sim.rib);
    assert_eq!(paths, want_paths, "the RIB's paths (AS_PATH, stale)");
    assert_eq!(selection, want_selection, "the RIB's best path and ECMP set");
}

/// What the peers hold against the model (after a flush).
fn check_exports(sim: &Sim, model: &Model, max_paths: usize) {
    let mut want_monitor = BTreeMap::new();
    let mut want_addpath: BTreeMap<IpNet, Vec<Vec<u32>>> = BTreeMap::new();
    let mut want_source: [BTreeMap<IpNet, Vec<u32>>; PEERS] = Default::default();
    for k in 0..PREFIXES.len() {
        let Some((best, used)) = model.select(k, max_paths) else { continue };
        let path = |i: usize| with_us(&model.paths[i][&k].0);
        want_monitor.insert(prefix(k), path(best));
        let mut all: Vec<Vec<u32>> = used.iter().map(|i| path(*i)).collect();
        all.sort();
        want_addpath.insert(prefix(k), all);
        for (i, w) in want_source.iter_mut().enumerate() {
            if i != best {
                w.insert(prefix(k), path(best));
            }
        }
    }
    let by_prefix =
        |r: &Received| -> BTreeMap<IpNet, Vec<u32>> { r.iter().map(|((p, _), a)| (*p, a.clone())).collect() };
    assert_eq!(by_prefix(&sim.held[&sim.monitor]), want_monitor, "monitor: the best paths");
    let mut got_addpath: BTreeMap<IpNet, Vec<Vec<u32>>> = BTreeMap::new();
    for ((p, _), a) in &sim.held[&sim.addpath_monitor] {
        got_addpath.entry(*p).or_default().push(a.clone());
    }
    got_addpath.values_mut().for_each(|v| v.sort());
    assert_eq!(got_addpath, want_addpath, "ADD-PATH monitor: every used path");
    for (i, want) in want_source.iter().enumerate() {
        if model.up[i] {
            assert_eq!(&by_prefix(&sim.held[&sim.sources[i]]), want, "peer {i}: the best paths not its own");
        }
    }
}

/// A RIB that sees only the current paths selects as the one that saw the history.
fn check_from_scratch(sim: &Sim, model: &Model, max_paths: usize) {
    let mut fresh = Sim::new(max_paths);
    for i in 0..PEERS {
        let (stale, live): (Vec<_>, Vec<_>) = model.paths[i].iter().partition(|(_, (_, s))| *s);
        for (k, (path, _)) in &stale {
            fresh.update(i, announce(i, **k, path, None), false);
        }
        if !stale.is_empty() || !model.up[i] {
            fresh.down_source(i, true);
            if model.up[i] {
                fresh.up_source(i);
            }
        }
        for (k, (path, _)) in &live {
            fresh.update(i, announce(i, **k, path, None), false);
        }
    }
    fresh.flush();
    let (paths, selection) = view(&sim.rib);
    let (fresh_paths, fresh_selection) = view(&fresh.rib);
    assert_eq!(paths, fresh_paths, "paths: incremental against from scratch");
    assert_eq!(selection, fresh_selection, "selection: incremental against from scratch");
}

/// See the module docs.
pub fn rib(data: &[u8]) {
    let mut inp = Input::new(data);
    let max_paths = if inp.bool() { 4 } else { 1 };
    let mut sim = Sim::new(max_paths);
    let mut model = Model { up: [true; PEERS], ..Model::default() };
    for _ in 0..MAX_EVENTS {
        if inp.is_empty() {
            break;
        }
        let i = inp.below(PEERS);
        match inp.below(16) {
            0..=6 if model.up[i] => {
                let k = inp.below(PREFIXES.len());
                let len = 1 + inp.below(4);
                let med = inp.bool().then(|| u32::from(inp.byte() % 3));
                let mut path = vec![PEER_AS[i]];
                path.extend((1..len).map(|n| 64700 + n as u32));
                sim.update(i, announce(i, k, &path, med), false);
                model.paths[i].insert(k, (path, false));
            }
            7..=9 if model.up[i] => {
                let k = inp.below(PREFIXES.len());
                sim.update(i, withdraw(k), false);
                model.paths[i].remove(&k);
            }
            10 if model.up[i] => {
                // RFC 7606 treat-as-withdraw: an announcement that withdraws.
                let k = inp.below(PREFIXES.len());
                sim.update(i, announce(i, k, &[PEER_AS[i]], None), true);
                model.paths[i].remove(&k);
            }
            11 if model.up[i] => {
                let graceful = inp.bool();
                sim.down_source(i, graceful);
                model.down(i, graceful);
            }
            11 => {
                sim.up_source(i);
                model.up(i);
            }
            12 if model.up[i] => {
                sim.update(i, Update::end_of_rib(V4), false);
                sim.update(i, Update::end_of_rib(V6), false);
                model.end_of_rib(i);
            }
            13 | 14 => {
                sim.flush();
                check_exports(&sim, &model, max_paths);
            }
            15 => {
                let secs = [1, 60, 119, 120, 150, 361][inp.below(6)];
                sim.advance(secs);
                model.advance(secs);
            }
            _ => {}
        }
        check_rib(&sim, &model, max_paths);
    }
    sim.flush();
    check_rib(&sim, &model, max_paths);
    check_exports(&sim, &model, max_paths);
    check_from_scratch(&sim, &model, max_paths);
}
