//! Packets through the simulated design: per member a forwarding table (its
//! connected subnets, its own addresses, its pods, its blackholes and
//! service endpoints, the routes its speaker installed, a host's default
//! gateway), and traces hop by hop by longest prefix match, following every
//! ECMP branch, with the reason a branch ends.
//!
//! A design of a thousand nodes traces millions of flows, so the tables are
//! indexed once per scenario (learned routes by prefix length, neighbours by
//! segment and address) and where a packet for a destination ends from a
//! member is worked out once: every flow through that member reuses it.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;

use super::fx::FxMap;
use super::model::{Design, Local, MemberModel};
use super::sim::Scenario;

/// One member's learned routes: prefix → ECMP next hops (what the simulator installed).
pub type Fib = BTreeMap<IpNet, Vec<IpAddr>>;

/// Every member's learned routes, by member name.
pub type Fibs<'a> = HashMap<&'a str, &'a Fib>;

/// Prefix → its number: looked up for every route of every member.
type Numbers = FxMap<IpNet, u32>;

/// The prefixes the members learned, numbered (a member's routes are
/// indexed by these numbers). Numbered once, it serves every thread
/// tracing a scenario, and a failure scenario numbers only the prefixes
/// its tables added to the design's.
#[derive(Clone, Debug, Default)]
pub struct Numbering {
    prefixes: Vec<IpNet>,
    numbers: Numbers,
    /// The lengths of `prefixes`, longest first: IPv4, IPv6.
    lengths: [Vec<u8>; 2],
    /// Whether a prefix with host bits set was seen (and left unnumbered).
    host_bits: bool,
}

impl Numbering {
    /// The prefixes of `nets` (those without host bits set), numbered.
    pub fn of<'n>(nets: impl IntoIterator<Item = &'n IpNet>) -> Numbering {
        let mut n = Numbering::default();
        n.extend(nets);
        n
    }

    /// Numbers the prefixes of `nets` not numbered yet.
    pub fn extend<'n>(&mut self, nets: impl IntoIterator<Item = &'n IpNet>) {
        let (prefixes, lengths, host_bits) = (&mut self.prefixes, &mut self.lengths, &mut self.host_bits);
        for net in nets.into_iter().filter(|n| {
            let whole = **n == n.trunc();
            *host_bits |= !whole;
            whole
        }) {
            self.numbers.entry(*net).or_insert_with(|| {
                prefixes.push(*net);
                let l = &mut lengths[usize::from(net.addr().is_ipv6())];
                if let Err(at) = l.binary_search_by(|x| net.prefix_len().cmp(x)) {
                    l.insert(at, net.prefix_len());
                }
                (prefixes.len() - 1) as u32
            });
        }
    }

    /// How many prefixes are numbered.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// Why a branch of a trace stops short of its destination.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drop {
    /// No route covers the destination.
    NoRoute,
    /// A blackhole route covers it (why).
    Blackhole(String),
    /// The route's next hop is on no live connected subnet, or nobody answers for it.
    Unresolvable(IpAddr),
    /// The destination is on a connected subnet, but no live member has it.
    NoHost(String),
}

/// Where one branch of a trace ends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// Delivered at a member, to what (`own address`, a pod, a service endpoint).
    Delivered(String, String),
    /// Dropped at a member.
    Dropped(String, Drop),
    /// The packet came back to a member it had passed: the members of the loop.
    Loop(Vec<String>),
}

/// The members a packet passes (by number), shared by the flows that pass
/// the same member for the same destination.
pub type Passes = Rc<BTreeSet<usize>>;

/// Every way a packet can end, shared by the flows that reach the same
/// member for the same destination.
pub type Ends = Rc<BTreeSet<End>>;

/// What a member does with a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action<'a> {
    Deliver(&'a str),
    /// On a connected subnet: the segment's number ([`Live::seg`]) and name.
    Connected(u32, &'a str),
    Via(&'a [IpAddr]),
    Blackhole(&'a str),
}

/// Paths longer than this many hops count as a loop (a guard: loops are
/// caught when a member comes round again).
const MAX_HOPS: usize = 64;

/// An interface on a segment that is up.
struct Live<'a> {
    /// The segment, numbered in the scenario.
    seg: u32,
    name: &'a str,
    net: IpNet,
}

/// One member's forwarding state in the scenario.
struct Table<'a> {
    member: &'a MemberModel,
    up: bool,
    /// Its interfaces on segments that are up.
    live: Vec<Live<'a>>,
    /// Next hops resolved so far ([`Network::resolve`]): a member has a
    /// few, asked for every destination.
    resolved: RefCell<Vec<(IpAddr, Option<usize>)>>,
    fib: Option<&'a Fib>,
    /// Its learned routes by prefix number ([`Network::prefixes`]), built
    /// the first time it is asked (a failure scenario asks few members);
    /// `None` when a prefix of its has host bits set (then `fib` is
    /// searched linearly).
    routes: OnceCell<Option<Vec<Option<&'a [IpAddr]>>>>,
    /// Lookups answered before `routes` was built.
    asked: Cell<u32>,
}

/// A member's routes are indexed after this many lookups: one that is asked
/// a few times (a failure scenario weighs a few prefixes of every node)
/// looks in its table instead.
const INDEX_AFTER: u32 = 32;

impl<'a> Table<'a> {
    /// The learned route with the longest prefix covering the destination
    /// whose covering prefixes, longest first, are `chain`.
    fn longest_match(&self, dst: IpAddr, chain: &[u32], numbering: &Numbering) -> Option<(IpNet, &'a [IpAddr])> {
        let fib = self.fib?;
        let Numbering { prefixes, numbers, host_bits, .. } = numbering;
        if self.routes.get().is_none() && !host_bits && self.asked.get() < INDEX_AFTER {
            self.asked.set(self.asked.get() + 1);
            return chain.iter().find_map(|id| {
                let net = prefixes[*id as usize];
                fib.get(&net).map(|hops| (net, hops.as_slice()))
            });
        }
        let routes = self.routes.get_or_init(|| {
            let mut routes = vec![None; prefixes.len()];
            for (net, hops) in fib {
                routes[*numbers.get(net)? as usize] = Some(hops.as_slice());
            }
            Some(routes)
        });
        let Some(routes) = routes else {
            // The first of the longest, in prefix order.
            let mut best: Option<(IpNet, &'a [IpAddr])> = None;
            for (net, hops) in fib.iter().filter(|(n, _)| n.contains(&dst)) {
                if best.is_none_or(|(b, _)| net.prefix_len() > b.prefix_len()) {
                    best = Some((*net, hops.as_slice()));
                }
            }
            return best;
        };
        chain.iter().find_map(|id| routes[*id as usize].map(|hops| (prefixes[*id as usize], hops)))
    }
}

/// Where a member's packets for a destination end, and how many hops deep
/// the trace went to find out.
#[derive(Clone)]
struct Known {
    ends: Ends,
    depth: usize,
}

/// What is worked out once per destination (numbered in the scenario).
struct Destination {
    /// The numbers of the learned prefixes that cover it, longest first.
    chain: Rc<[u32]>,
    /// Per member: where its packets for it end (only results without a
    /// loop, which do not depend on the path that led there).
    known: Vec<Option<Known>>,
}

/// The forwarding state of the whole design in one scenario.
pub struct Network<'a> {
    tables: Vec<Table<'a>>,
    index: FxMap<&'a str, usize>,
    /// (segment, address) → the first live member (in name order) that has it there.
    hosts: FxMap<(u32, IpAddr), usize>,
    /// The learned prefixes, numbered.
    numbering: Cow<'a, Numbering>,
    /// Destination → its number in `known`.
    destinations: RefCell<FxMap<IpAddr, u32>>,
    known: RefCell<Vec<Destination>>,
    /// (member, destination) → the members its packets pass ([`Network::through`]).
    through: RefCell<FxMap<(usize, IpAddr), Passes>>,
}

impl<'a> Network<'a> {
    /// The design's members, with `failed` down and `fib` giving each
    /// member's installed routes.
    pub fn new(design: &'a Design, failed: &'a Scenario, fib: impl Fn(&str) -> Option<&'a Fib>) -> Network<'a> {
        let fibs: Vec<Option<&'a Fib>> = design.members.values().map(|m| fib(&m.name)).collect();
        let numbering = Numbering::of(fibs.iter().flatten().flat_map(|f| f.keys()));
        Network::build(design, failed, fibs, Cow::Owned(numbering))
    }

    /// [`Network::new`] with the prefixes numbered already: `numbering`
    /// must hold every prefix of the tables (it may hold more).
    pub fn numbered(
        design: &'a Design,
        failed: &'a Scenario,
        fib: impl Fn(&str) -> Option<&'a Fib>,
        numbering: &'a Numbering,
    ) -> Network<'a> {
        let fibs = design.members.values().map(|m| fib(&m.name)).collect();
        Network::build(design, failed, fibs, Cow::Borrowed(numbering))
    }

    fn build(
        design: &'a Design,
        failed: &'a Scenario,
        fibs: Vec<Option<&'a Fib>>,
        numbering: Cow<'a, Numbering>,
    ) -> Network<'a> {
        let mut segments: FxMap<&'a str, u32> = FxMap::default();
        let mut number = |seg: &'a str| {
            let next = segments.len() as u32;
            *segments.entry(seg).or_insert(next)
        };
        let tables: Vec<Table<'a>> = design
            .members
            .values()
            .zip(fibs)
            .map(|(m, fib)| {
                let live = m
                    .interfaces
                    .iter()
                    .filter(|(s, _)| !failed.segments.contains(s))
                    .map(|(s, net)| Live { seg: number(s), name: s, net: *net })
                    .collect();
                Table {
                    member: m,
                    up: !failed.down(&m.name),
                    live,
                    resolved: RefCell::new(Vec::new()),
                    fib,
                    routes: OnceCell::new(),
                    asked: Cell::new(0),
                }
            })
            .collect();
        let index = tables.iter().enumerate().map(|(i, t)| (t.member.name.as_str(), i)).collect();
        let mut hosts = FxMap::default();
        for (i, t) in tables.iter().enumerate().filter(|(_, t)| t.up) {
            // A down segment numbered too: nothing resolves over it, but
            // its members still answer for their addresses on it.
            for (seg, a) in &t.member.interfaces {
                hosts.entry((number(seg), a.addr())).or_insert(i);
            }
        }
        Network {
            tables,
            index,
            hosts,
            numbering,
            destinations: RefCell::new(FxMap::default()),
            known: RefCell::new(Vec::new()),
            through: RefCell::new(FxMap::default()),
        }
    }

    /// The number of `dst` in `known`, and the numbers of the learned
    /// prefixes covering it, longest first.
    fn destination(&self, dst: IpAddr) -> (u32, Rc<[u32]>) {
        if let Some(d) = self.destinations.borrow().get(&dst) {
            return (*d, self.known.borrow()[*d as usize].chain.clone());
        }
        let chain = self.covering(dst);
        let mut known = self.known.borrow_mut();
        let d = known.len() as u32;
        known.push(Destination { chain: chain.clone(), known: vec![None; self.tables.len()] });
        self.destinations.borrow_mut().insert(dst, d);
        (d, chain)
    }

    /// The numbers of the learned prefixes covering `dst`, longest first.
    fn chain(&self, dst: IpAddr) -> Rc<[u32]> {
        self.destination(dst).1
    }

    /// The numbers of the learned prefixes covering `dst`, longest first,
    /// worked out (not remembered).
    fn covering(&self, dst: IpAddr) -> Rc<[u32]> {
        let n = &*self.numbering;
        n.lengths[usize::from(dst.is_ipv6())]
            .iter()
            .filter_map(|len| n.numbers.get(&IpNet::new(dst, *len).ok()?.trunc()).copied())
            .collect()
    }

    /// The members member number `i` (its place in the design) hands a
    /// packet for `dst` to: none when it delivers, drops or is down.
    pub fn next_members(&self, i: usize, dst: IpAddr) -> Vec<usize> {
        let t = &self.tables[i];
        if !t.up {
            return Vec::new();
        }
        match self.lookup(t, dst, &self.covering(dst)) {
            Some((_, Action::Connected(seg, _))) => self.hosts.get(&(seg, dst)).copied().into_iter().collect(),
            Some((_, Action::Via(hops))) => hops.iter().filter_map(|h| self.resolve(t, *h)).collect(),
            _ => Vec::new(),
        }
    }

    /// The route a member uses for `dst`: longest prefix wins; on equal
    /// prefixes, its own (connected, local) beat learned ones, as the
    /// kernel's connected routes and bgpd's lower-metric service routes do.
    fn lookup(&self, t: &Table<'a>, dst: IpAddr, chain: &[u32]) -> Option<(IpNet, Action<'a>)> {
        if t.live.iter().any(|l| l.net.addr() == dst) {
            return Some((IpNet::from(dst), Action::Deliver("its own address")));
        }
        let mut best: Option<(IpNet, u8, Action<'a>)> = None;
        let mut offer = |net: IpNet, rank: u8, action: Action<'a>| {
            if !net.contains(&dst) {
                return;
            }
            let better = match &best {
                None => true,
                Some((b, r, _)) => (net.prefix_len(), rank) > (b.prefix_len(), *r),
            };
            if better {
                best = Some((net, rank, action));
            }
        };
        let m = t.member;
        for (net, local) in &m.local {
            let action = match local {
                Local::Deliver(what) => Action::Deliver(what),
                Local::Blackhole(why) => Action::Blackhole(why),
            };
            offer(*net, 2, action);
        }
        for l in &t.live {
            offer(l.net.trunc(), 2, Action::Connected(l.seg, l.name));
        }
        // Of the learned routes only the longest match can win: every other
        // one covering `dst` is shorter.
        if let Some((net, hops)) = t.longest_match(dst, chain, &self.numbering) {
            offer(net, 1, Action::Via(hops));
        }
        for g in &m.gateways {
            let default = if g.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
            offer(default, 0, Action::Via(std::slice::from_ref(g)));
        }
        best.map(|(n, _, a)| (n, a))
    }

    /// Where a next hop leads from a member: the member that answers for it.
    fn resolve(&self, t: &Table<'a>, nh: IpAddr) -> Option<usize> {
        if let Some((_, n)) = t.resolved.borrow().iter().find(|(h, _)| *h == nh) {
            return *n;
        }
        let n = t.live.iter().find(|l| l.net.contains(&nh)).and_then(|l| self.hosts.get(&(l.seg, nh)).copied());
        t.resolved.borrow_mut().push((nh, n));
        n
    }

    /// Every way a packet for `dst` can end, starting at `from`.
    pub fn trace(&self, from: &str, dst: IpAddr) -> Ends {
        match self.index.get(from) {
            Some(&i) => {
                let (d, chain) = self.destination(dst);
                self.ends(i, (d, dst, &chain), &mut Vec::new()).0
            }
            None => Rc::new(BTreeSet::from([End::Dropped(from.to_string(), Drop::NoRoute)])),
        }
    }

    /// Where packets for a destination (its number, address and chain)
    /// end from member `i`, reached through `stack`, and how deep the trace
    /// went from `i`.
    fn ends(&self, i: usize, dst: (u32, IpAddr, &[u32]), stack: &mut Vec<usize>) -> (Ends, usize) {
        let t = &self.tables[i];
        let name = &t.member.name;
        let one = |e: End| (Rc::new(BTreeSet::from([e])), 0);
        if let Some(p) = stack.iter().position(|s| *s == i) {
            let mut members: Vec<String> = stack[p..].iter().map(|s| self.tables[*s].member.name.clone()).collect();
            members.push(name.clone());
            return one(End::Loop(members));
        }
        if !t.up {
            return one(End::Dropped(name.clone(), Drop::NoRoute));
        }
        if stack.len() > MAX_HOPS {
            return one(End::Loop(stack.iter().map(|s| self.tables[*s].member.name.clone()).collect()));
        }
        // A result without a loop holds wherever the packet came from, as
        // long as this path's length leaves room for its depth.
        let known = self.known.borrow()[dst.0 as usize].known[i].clone();
        if let Some(k) = known.filter(|k| stack.len() + k.depth <= MAX_HOPS) {
            return (k.ends, k.depth);
        }
        let (ends, depth) = self.walk(t, i, dst, stack);
        if !ends.iter().any(|e| matches!(e, End::Loop(_))) {
            self.known.borrow_mut()[dst.0 as usize].known[i] = Some(Known { ends: ends.clone(), depth });
        }
        (ends, depth)
    }

    /// One hop from member `i` and every branch on from there.
    fn walk(&self, t: &Table<'a>, i: usize, dst: (u32, IpAddr, &[u32]), stack: &mut Vec<usize>) -> (Ends, usize) {
        let name = &t.member.name;
        let here = |d: Drop| (Rc::new(BTreeSet::from([End::Dropped(name.clone(), d)])), 0);
        let Some((_, action)) = self.lookup(t, dst.1, dst.2) else { return here(Drop::NoRoute) };
        let hops = match action {
            Action::Deliver(what) => {
                return (Rc::new(BTreeSet::from([End::Delivered(name.clone(), what.to_string())])), 0)
            }
            Action::Blackhole(why) => return here(Drop::Blackhole(why.to_string())),
            Action::Connected(seg, seg_name) => match self.hosts.get(&(seg, dst.1)) {
                Some(n) => Err(*n),
                None => return here(Drop::NoHost(seg_name.to_string())),
            },
            Action::Via(hops) => Ok(hops),
        };
        // The members the packet goes on to, or where a next hop ends it here.
        let next = |k: usize| match hops {
            Err(n) => (k == 0).then_some(Ok(n)),
            Ok(hops) => hops.get(k).map(|nh| self.resolve(t, *nh).ok_or(Drop::Unresolvable(*nh))),
        };
        stack.push(i);
        let mut first: Option<Ends> = None;
        let mut alike = true;
        let mut here_ends = BTreeSet::new();
        let mut branches: Vec<Ends> = Vec::new();
        let mut depth = 0;
        for n in (0..).map_while(next) {
            match n {
                Ok(n) => {
                    let (e, d) = self.ends(n, dst, stack);
                    depth = depth.max(d + 1);
                    // ECMP branches that end alike (the common case) share their result.
                    match &first {
                        None => first = Some(e),
                        Some(f) if alike && (Rc::ptr_eq(f, &e) || *f == e) => {}
                        Some(_) => {
                            alike = false;
                            branches.push(e);
                        }
                    }
                }
                Err(d) => {
                    here_ends.insert(End::Dropped(name.clone(), d));
                }
            }
        }
        stack.pop();
        let Some(first) = first else { return (Rc::new(here_ends), depth) };
        if here_ends.is_empty() && alike {
            return (first, depth);
        }
        for b in std::iter::once(&first).chain(&branches) {
            here_ends.extend(b.iter().cloned());
        }
        (Rc::new(here_ends), depth)
    }

    /// The members packets for `dst` from `from` pass, every ECMP branch,
    /// `from` and where they end included (for a path without loops: what
    /// [`Network::trace`] delivers everywhere).
    pub fn through(&self, from: &str, dst: IpAddr) -> Passes {
        match self.index.get(from) {
            Some(&i) => self.passes(i, dst, 0),
            None => Rc::new(BTreeSet::new()),
        }
    }

    fn passes(&self, i: usize, dst: IpAddr, depth: usize) -> Passes {
        if let Some(known) = self.through.borrow().get(&(i, dst)) {
            return known.clone();
        }
        let mut set = BTreeSet::from([i]);
        if depth <= MAX_HOPS {
            for n in self.next_members(i, dst) {
                set.extend(self.passes(n, dst, depth + 1).iter().copied());
            }
        }
        let set = Rc::new(set);
        self.through.borrow_mut().insert((i, dst), set.clone());
        set
    }

    /// A member's name by its number.
    pub fn name(&self, i: usize) -> &'a str {
        &self.tables[i].member.name
    }

    /// The source address a member's own packets for `dst` carry: its
    /// address on the interface they leave by, as the kernel picks it.
    pub fn source_address(&self, member: &str, dst: IpAddr) -> Option<IpAddr> {
        let t = &self.tables[*self.index.get(member)?];
        let on = |seg: u32| {
            t.live.iter().find(|l| l.seg == seg && l.net.addr().is_ipv4() == dst.is_ipv4()).map(|l| l.net.addr())
        };
        let out = match self.lookup(t, dst, &self.chain(dst)) {
            Some((_, Action::Connected(seg, _))) => on(seg),
            Some((_, Action::Via(hops))) => {
                hops.iter().find_map(|h| on(t.live.iter().find(|l| l.net.contains(h))?.seg))
            }
            _ => None,
        };
        out.or_else(|| t.live.iter().map(|l| l.net.addr()).find(|a| a.is_ipv4() == dst.is_ipv4()))
    }

    /// The distinct next-hop members `member` uses for `dst` (its ECMP set).
    pub fn used_neighbours(&self, member: &str, dst: IpAddr) -> BTreeSet<&'a str> {
        let Some(t) = self.index.get(member).map(|i| &self.tables[*i]) else { return BTreeSet::new() };
        match self.lookup(t, dst, &self.covering(dst)) {
            Some((_, Action::Via(hops))) => hops.iter().filter_map(|h| self.neighbour_of(member, *h)).collect(),
            _ => BTreeSet::new(),
        }
    }

    /// How many distinct next-hop members `member` uses for `dst` (its ECMP width).
    pub fn width(&self, member: &str, dst: IpAddr) -> usize {
        self.used_neighbours(member, dst).len()
    }

    /// The member a next hop of `member` leads to.
    pub fn neighbour_of(&self, member: &str, nh: IpAddr) -> Option<&'a str> {
        let t = &self.tables[*self.index.get(member)?];
        self.resolve(t, nh).map(|n| self.tables[n].member.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn numbering_keeps_lengths_longest_first_and_leaves_host_bits_out() {
        let mut n = Numbering::of(&nets(&["10.0.0.0/24", "10.0.0.0/26", "10.0.0.0/16", "fd00::/64"]));
        assert_eq!((n.len(), n.lengths.clone(), n.host_bits), (4, [vec![26, 24, 16], vec![64]], false));
        n.extend(&nets(&["10.0.0.0/26", "10.1.0.0/20", "10.0.0.1/24"]));
        assert_eq!(n.len(), 5, "numbered once each; a prefix with host bits set is not numbered");
        assert_eq!(n.lengths[0], vec![26, 24, 20, 16]);
        assert!(n.host_bits, "and is remembered: lookups then search the whole table");
        assert_eq!(n.numbers[&"10.1.0.0/20".parse().unwrap()], 4);
    }
}
