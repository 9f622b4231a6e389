//! Packets through the simulated design: per member a forwarding table (its
//! connected subnets, its own addresses, its pods, its blackholes and
//! service endpoints, the routes its speaker installed, a host's default
//! gateway), and traces hop by hop by longest prefix match, following every
//! ECMP branch, with the reason a branch ends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{Design, Local, MemberModel};
use super::sim::Scenario;

/// Learned routes per member: prefix → ECMP next hops (what the simulator installed).
pub type Fibs = BTreeMap<String, BTreeMap<IpNet, Vec<IpAddr>>>;

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

/// What a member does with a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Deliver(String),
    Connected(String),
    Via(Vec<IpAddr>),
    Blackhole(String),
}

/// The forwarding state of the whole design in one scenario.
pub struct Network<'a> {
    design: &'a Design,
    failed: &'a Scenario,
    fibs: &'a Fibs,
}

impl<'a> Network<'a> {
    /// The design's members, with `failed` down and `fibs` installed.
    pub fn new(design: &'a Design, failed: &'a Scenario, fibs: &'a Fibs) -> Network<'a> {
        Network { design, failed, fibs }
    }

    fn live_interfaces<'m>(&self, m: &'m MemberModel) -> impl Iterator<Item = &'m (String, IpNet)> + 'm {
        let failed = self.failed.segments.clone();
        m.interfaces.iter().filter(move |(s, _)| !failed.contains(s))
    }

    /// The route `member` uses for `dst`: longest prefix wins; on equal
    /// prefixes, its own (connected, local) beat learned ones, as the
    /// kernel's connected routes and bgpd's lower-metric service routes do.
    fn lookup(&self, m: &MemberModel, dst: IpAddr) -> Option<(IpNet, Action)> {
        if self.live_interfaces(m).any(|(_, a)| a.addr() == dst) {
            return Some((IpNet::from(dst), Action::Deliver("its own address".into())));
        }
        let mut best: Option<(IpNet, u8, Action)> = None;
        let mut offer = |net: IpNet, rank: u8, action: Action| {
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
        for (net, local) in &m.local {
            let action = match local {
                Local::Deliver(what) => Action::Deliver(what.clone()),
                Local::Blackhole(why) => Action::Blackhole(why.clone()),
            };
            offer(*net, 2, action);
        }
        for (seg, a) in self.live_interfaces(m) {
            offer(a.trunc(), 2, Action::Connected(seg.clone()));
        }
        if let Some(fib) = self.fibs.get(&m.name) {
            for (net, hops) in fib {
                offer(*net, 1, Action::Via(hops.clone()));
            }
        }
        for g in &m.gateways {
            let default = if g.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
            offer(default, 0, Action::Via(vec![*g]));
        }
        best.map(|(n, _, a)| (n, a))
    }

    /// The live member that has `addr` on segment `seg`.
    fn neighbour(&self, seg: &str, addr: IpAddr) -> Option<&'a MemberModel> {
        self.design
            .members
            .values()
            .filter(|m| !self.failed.down(&m.name))
            .find(|m| m.interfaces.iter().any(|(s, a)| s == seg && a.addr() == addr))
    }

    /// Where a next hop leads from `m`: the member that answers for it.
    fn resolve(&self, m: &MemberModel, nh: IpAddr) -> Option<&'a MemberModel> {
        let (seg, _) = self.live_interfaces(m).find(|(_, a)| a.contains(&nh))?;
        self.neighbour(seg, nh)
    }

    /// Every way a packet for `dst` can end, starting at `from`.
    pub fn trace(&self, from: &str, dst: IpAddr) -> BTreeSet<End> {
        let mut stack = Vec::new();
        self.ends(from, dst, &mut stack)
    }

    fn ends(&self, name: &str, dst: IpAddr, stack: &mut Vec<String>) -> BTreeSet<End> {
        if let Some(i) = stack.iter().position(|s| s == name) {
            let mut members: Vec<String> = stack[i..].to_vec();
            members.push(name.to_string());
            return BTreeSet::from([End::Loop(members)]);
        }
        let Some(m) = self.design.members.get(name).filter(|_| !self.failed.down(name)) else {
            return BTreeSet::from([End::Dropped(name.to_string(), Drop::NoRoute)]);
        };
        // Longer than any sane path: a guard, loops are caught above.
        if stack.len() > 64 {
            return BTreeSet::from([End::Loop(stack.clone())]);
        }
        let here = |d: Drop| BTreeSet::from([End::Dropped(name.to_string(), d)]);
        let Some((_, action)) = self.lookup(m, dst) else { return here(Drop::NoRoute) };
        let next: Vec<Result<&MemberModel, Drop>> = match action {
            Action::Deliver(what) => return BTreeSet::from([End::Delivered(name.to_string(), what)]),
            Action::Blackhole(why) => return here(Drop::Blackhole(why)),
            Action::Connected(seg) => match self.neighbour(&seg, dst) {
                Some(n) => vec![Ok(n)],
                None => vec![Err(Drop::NoHost(seg))],
            },
            Action::Via(hops) => hops.iter().map(|nh| self.resolve(m, *nh).ok_or(Drop::Unresolvable(*nh))).collect(),
        };
        let mut out = BTreeSet::new();
        stack.push(name.to_string());
        for n in next {
            match n {
                Ok(n) => out.extend(self.ends(&n.name, dst, stack)),
                Err(d) => {
                    out.insert(End::Dropped(name.to_string(), d));
                }
            }
        }
        stack.pop();
        out
    }

    /// The source address a member's own packets for `dst` carry: its
    /// address on the interface they leave by, as the kernel picks it.
    pub fn source_address(&self, member: &str, dst: IpAddr) -> Option<IpAddr> {
        let m = self.design.members.get(member)?;
        let on = |seg: &str| {
            self.live_interfaces(m)
                .find(|(s, a)| s == seg && a.addr().is_ipv4() == dst.is_ipv4())
                .map(|(_, a)| a.addr())
        };
        let out = match self.lookup(m, dst) {
            Some((_, Action::Connected(seg))) => on(&seg),
            Some((_, Action::Via(hops))) => hops.iter().find_map(|h| {
                let (seg, _) = self.live_interfaces(m).find(|(_, a)| a.contains(h))?;
                on(seg)
            }),
            _ => None,
        };
        out.or_else(|| self.live_interfaces(m).map(|(_, a)| a.addr()).find(|a| a.is_ipv4() == dst.is_ipv4()))
    }

    /// How many distinct next-hop members `member` uses for `dst` (its ECMP width).
    pub fn width(&self, member: &str, dst: IpAddr) -> usize {
        let Some(m) = self.design.members.get(member) else { return 0 };
        match self.lookup(m, dst) {
            Some((_, Action::Via(hops))) => {
                hops.iter().filter_map(|h| self.resolve(m, *h)).map(|n| &n.name).collect::<BTreeSet<_>>().len()
            }
            _ => 0,
        }
    }
}
