//! The FIB's logic without sockets or clocks: desired routes in, netlink messages out;
//! kernel messages in, per-route results and repairs out. The driver moves the bytes.
//!
//! Writes go out in batches; only the last message of a batch asks for an ACK. rtnetlink
//! handles the messages of one `sendmsg` in order, so an error names the failed message by
//! its sequence number and the final ACK says every other message of the batch succeeded.
//! The same socket listens to route and link notifications, so our own changes and foreign
//! ones arrive in the kernel's order.

use std::collections::VecDeque;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use smallvec::SmallVec;

use crate::config::FibConfig;
use crate::error::{errno_name, Op, RouteError, RouteErrorKind};
use crate::kernel::{
    decode_link, decode_route, encode_install, encode_lookup, encode_remove, encode_route_dump, frame, kernel_metric,
    Identity, KernelHop, KernelSpec, KernelTarget, LinkState, Request, TableRoute,
};
use crate::metrics::FibMetrics;
use crate::queue::WriteQueue;
use crate::route::{Route, RouteChange, Target};

mod eval;
mod input;

use eval::{extack_message, recursive_gateways, EvalContext};

/// Hash maps keyed by prefixes from peers: a fast hasher with a per-process random seed.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// `RTM_NEWROUTE`, `RTM_DELROUTE`.
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
/// The sequence-number bit that marks next-hop lookups.
pub(crate) const LOOKUP_SEQ: u32 = 0x8000_0000;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
/// `NLM_F_MULTI`: part of a dump.
const NLM_F_MULTI: u16 = 2;
/// `NLMSGERR_ATTR_MSG`: the extended-ack error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_CAPPED` on an error message: the original request is cut to its header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` on an error message: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Dump attempts before a failing dump step is given up on.
const DUMP_ATTEMPTS: u8 = 3;

/// Something the caller should know about, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibEvent {
    /// A route is not in the kernel as wanted; it stays desired and is retried when links,
    /// addresses or routes change.
    Failed(RouteError),
    /// A route that had failed is now installed as wanted.
    Recovered(IpNet),
    /// A full dump-and-diff of the table finished.
    Resynced,
    /// A dump kept failing; the FIB keeps working from what it knows.
    DumpFailed {
        /// What was being dumped.
        what: &'static str,
        /// The kernel's errno.
        errno: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolution {
    Pending,
    /// Directly connected (gateway, output interface) pairs.
    Resolved(Vec<(IpAddr, u32)>),
    Failed(String),
}

#[derive(Debug, Clone)]
enum InFlight {
    /// A route write at `metric`; `spec` is what an install wrote, taken when its
    /// notification arrives.
    Write {
        prefix: IpNet,
        metric: u32,
        op: Op,
        spec: Option<KernelSpec>,
    },
    Lookup(IpAddr),
    /// Removing a route of a replaced protocol (a predecessor's).
    Retire(Predecessor),
}

/// Which routes of a replaced protocol [`Engine::retire_predecessors`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Those of prefixes we have a route for ourselves, now and as ours go in later.
    Replaced,
    /// All of them.
    All,
}

/// A route of a replaced protocol in our table: its prefix, protocol and metric, which
/// are what a delete must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Predecessor {
    pub prefix: IpNet,
    pub protocol: u8,
    pub metric: u32,
}

/// Metric children looked up once: label lookups cost a hash and a lock each.
struct Counters {
    installed_v4: prometheus::IntGauge,
    installed_v6: prometheus::IntGauge,
    installs: prometheus::IntCounter,
    removes: prometheus::IntCounter,
    lookups: prometheus::IntCounter,
    retires: prometheus::IntCounter,
}

impl Counters {
    fn new(m: &FibMetrics) -> Self {
        Counters {
            installed_v4: m.routes_installed.with_label_values(&["ipv4"]),
            installed_v6: m.routes_installed.with_label_values(&["ipv6"]),
            installs: m.operations.with_label_values(&["install"]),
            removes: m.operations.with_label_values(&["remove"]),
            lookups: m.operations.with_label_values(&["lookup"]),
            retires: m.operations.with_label_values(&["retire"]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DumpStep {
    Links,
    Routes4,
    Routes6,
}

impl DumpStep {
    fn name(self) -> &'static str {
        match self {
            DumpStep::Links => "links",
            DumpStep::Routes4 => "IPv4 routes",
            DumpStep::Routes6 => "IPv6 routes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Running,
    Dumping { step: DumpStep, seq: Option<u32>, attempts: u8 },
}

/// What occupies one slot (table, prefix, metric) of our table in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    metric: u32,
    protocol: u8,
    spec: KernelSpec,
}

/// The occupied slots of one prefix in our table, one per metric: normally just our
/// route; ours at two metrics while a route moves to a new metric (or one found from a
/// previous run); others' routes (connected, static, a replaced speaker's) wherever they
/// are, since a new metric of ours may be where one of them sits.
type Slots = SmallVec<[Slot; 1]>;

enum Plan {
    Nothing,
    /// A gateway lookup is outstanding.
    Wait,
    /// Install at this metric.
    Install(KernelSpec, u32),
    /// Remove ours at this metric.
    Remove(u32),
}

enum Decision {
    /// `ours`: a metric a route of ours is at; `more`: it is not the only one.
    NotDesired {
        ours: Option<u32>,
        more: bool,
    },
    Wait,
    Fail {
        kind: RouteErrorKind,
        ours: Option<u32>,
    },
    Conflict {
        protocol: u8,
    },
    /// Ours is in the wanted slot as wanted; `stale`: a metric another of ours is at.
    Same {
        stale: Option<u32>,
    },
    Install(KernelSpec, u32),
}

enum Eval {
    Ready(KernelSpec),
    Wait,
    Fail(RouteErrorKind),
}

/// The sans-IO FIB state machine.
pub(crate) struct Engine {
    id: Identity,
    batch_size: usize,
    port: u32,
    desired: HashMap<IpNet, Route>,
    removed: HashSet<IpNet>,
    /// What the kernel holds in our table, by prefix.
    slots: HashMap<IpNet, Slots>,
    /// The kernel's connected routes in our table (an interface's subnet):
    /// preferred over any learned route of the same prefix.
    connected: HashSet<IpNet>,
    links: HashMap<u32, LinkState>,
    link_by_name: HashMap<String, u32>,
    resolutions: HashMap<IpAddr, Resolution>,
    /// How many desired routes use each recursive gateway (few distinct gateways, so the
    /// routes of one are found by a scan when its resolution changes, which is rare).
    gateway_refs: HashMap<IpAddr, usize>,
    lookup_queue: VecDeque<IpAddr>,
    refresh_lookups: bool,
    /// Prefixes to (re)write, coalesced, in descending passes.
    dirty: WriteQueue,
    repair_candidates: HashSet<IpNet>,
    in_flight: HashMap<u32, InFlight>,
    in_flight_prefixes: HashSet<IpNet>,
    batches: HashMap<u32, Vec<u32>>,
    failures: HashMap<IpNet, RouteError>,
    events: VecDeque<FibEvent>,
    seq: u32,
    lookup_seq: u32,
    /// In-flight prefixes someone else changed before our answer came.
    superseded: HashSet<IpNet>,
    sync: Sync,
    swept: bool,
    /// Protocols whose routes in our table we take over (`FibConfig::replaces`).
    replaces: Vec<u8>,
    /// Their routes in our table, as the kernel last said.
    predecessors: HashSet<Predecessor>,
    /// Predecessor routes to remove, not yet sent.
    retire_queue: VecDeque<Predecessor>,
    /// Set by [`Retire::Replaced`]: each predecessor route our own install stands in
    /// for is removed as it happens.
    retire_on_install: bool,
    metrics: FibMetrics,
    counters: Counters,
}

impl Engine {
    /// A new engine that starts with a full dump of links and our table.
    pub fn new(config: &FibConfig, metrics: FibMetrics, port: u32) -> Self {
        let mut engine = Engine {
            id: Identity { table: config.table, protocol: config.protocol, metric: config.metric },
            batch_size: config.batch_size,
            port,
            desired: HashMap::default(),
            removed: HashSet::default(),
            slots: HashMap::default(),
            connected: HashSet::default(),
            links: HashMap::default(),
            link_by_name: HashMap::default(),
            resolutions: HashMap::default(),
            gateway_refs: HashMap::default(),
            lookup_queue: VecDeque::new(),
            refresh_lookups: false,
            dirty: WriteQueue::default(),
            repair_candidates: HashSet::default(),
            in_flight: HashMap::default(),
            in_flight_prefixes: HashSet::default(),
            batches: HashMap::default(),
            failures: HashMap::default(),
            events: VecDeque::new(),
            seq: 0,
            lookup_seq: 0,
            superseded: HashSet::default(),
            sync: Sync::Running,
            swept: false,
            replaces: config.replaces.clone(),
            predecessors: HashSet::default(),
            retire_queue: VecDeque::new(),
            retire_on_install: false,
            counters: Counters::new(&metrics),
            metrics,
        };
        engine.start_resync();
        engine
    }

    // ----- caller inputs -------------------------------------------------------------

    /// Takes one change of the desired routes. Invalid routes are reported and ignored.
    pub fn apply(&mut self, change: RouteChange) {
        match change {
            RouteChange::Upsert(route) => {
                if let Err(e) = route.validate() {
                    self.fail(e.prefix, e.kind);
                    return;
                }
                let prefix = route.prefix;
                self.removed.remove(&prefix);
                if let Some(old) = self.desired.insert(prefix, route) {
                    self.forget_gateways(&old);
                }
                if let Some(route) = self.desired.get(&prefix) {
                    for gw in recursive_gateways(route) {
                        *self.gateway_refs.entry(gw).or_default() += 1;
                    }
                }
                self.mark_dirty(prefix);
            }
            RouteChange::Remove(prefix) => {
                if let Some(old) = self.desired.remove(&prefix) {
                    self.forget_gateways(&old);
                }
                self.removed.insert(prefix);
                self.mark_dirty(prefix);
            }
        }
    }

    /// Makes room for `additional` more desired routes at once (a bulk `apply`).
    pub fn reserve(&mut self, additional: usize) {
        self.desired.reserve(additional);
        self.dirty.reserve(additional);
    }

    /// Ends the start-up grace: from now on, routes of ours that are not desired are removed
    /// (mark and sweep against what the kernel had at start).
    pub fn sweep(&mut self) {
        self.swept = true;
        let protocol = self.id.protocol;
        let stale: Vec<IpNet> = self
            .slots
            .iter()
            .filter(|(p, held)| held.iter().any(|s| s.protocol == protocol) && !self.desired.contains_key(*p))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.mark_dirty(p);
        }
    }

    /// Removes routes of a replaced protocol the kernel has in our table now (recorded
    /// from the start-up dump and notifications). Returns how many removals were queued.
    ///
    /// [`Retire::Replaced`] takes only the routes of prefixes we have a route for
    /// ourselves (installed, or waiting for the predecessor's route in our slot to go),
    /// and from then on each route of a prefix we install later: the predecessor keeps
    /// forwarding to the prefixes we have not learned yet. [`Retire::All`] takes every
    /// one. Routes that appear later are recorded but left alone until the next call.
    pub fn retire_predecessors(&mut self, scope: Retire) -> usize {
        let queued = self.retiring();
        let mut new: Vec<Predecessor> = self
            .predecessors
            .iter()
            .filter(|p| !queued.contains(p) && (scope == Retire::All || self.replaced(p)))
            .copied()
            .collect();
        new.sort();
        let n = new.len();
        self.retire_queue.extend(new);
        if scope == Retire::Replaced {
            self.retire_on_install = true;
        }
        n
    }

    /// Predecessor routes queued or in flight for removal.
    fn retiring(&self) -> HashSet<Predecessor> {
        self.retire_queue
            .iter()
            .copied()
            .chain(self.in_flight.values().filter_map(|f| match f {
                InFlight::Retire(p) => Some(*p),
                _ => None,
            }))
            .collect()
    }

    /// Whether a route of ours stands in for predecessor route `p`: its prefix is
    /// desired and a route of ours for it is in the table, or `p` itself holds the slot
    /// ours wants (ours waits for it).
    fn replaced(&self, p: &Predecessor) -> bool {
        let Some(metric) = self.desired_metric(&p.prefix) else {
            return false;
        };
        self.held(&p.prefix).iter().any(|s| {
            s.protocol == self.id.protocol || (s.protocol == p.protocol && s.metric == p.metric && p.metric == metric)
        })
    }

    /// The metric of a desired route as the kernel reports it: its own, or the FIB's.
    fn metric_of(&self, route: &Route) -> u32 {
        kernel_metric(&route.prefix, route.metric.unwrap_or(self.id.metric))
    }

    /// The metric `prefix` is wanted at; `None` when it is not desired.
    fn desired_metric(&self, prefix: &IpNet) -> Option<u32> {
        self.desired.get(prefix).map(|r| self.metric_of(r))
    }

    /// The occupied slots of `prefix` in our table.
    fn held(&self, prefix: &IpNet) -> &[Slot] {
        self.slots.get(prefix).map_or(&[], |h| h.as_slice())
    }

    /// After [`Retire::Replaced`]: queues the predecessor routes of `prefix` now that a
    /// route of ours stands in for them. The predecessors left are few by then (those
    /// of prefixes we had not learned), so a scan of them is cheap.
    pub(super) fn retire_replaced_at(&mut self, prefix: IpNet) {
        if !self.retire_on_install || self.predecessors.is_empty() {
            return;
        }
        let mut new: Vec<Predecessor> =
            self.predecessors.iter().filter(|p| p.prefix == prefix && self.replaced(p)).copied().collect();
        if new.is_empty() {
            return;
        }
        let queued = self.retiring();
        new.retain(|p| !queued.contains(p));
        new.sort();
        self.retire_queue.extend(new);
    }

    /// Forgets every desired route and removes all of ours from the table.
    pub fn flush(&mut self) {
        let prefixes: Vec<IpNet> = self.desired.keys().copied().collect();
        for p in prefixes {
            self.apply(RouteChange::Remove(p));
        }
        self.sweep();
    }

    /// Starts a full dump and re-diff of links and our table.
    pub fn start_resync(&mut self) {
        self.metrics.resyncs.inc();
        self.sync = Sync::Dumping { step: DumpStep::Links, seq: None, attempts: 0 };
        self.slots.clear();
        self.predecessors.clear();
        self.metrics.predecessor_routes.set(0);
        self.links.clear();
        self.link_by_name.clear();
        self.counters.installed_v4.set(0);
        self.counters.installed_v6.set(0);
        // Answers may have been lost in an overrun: forget what is outstanding; every
        // route is re-evaluated when the dump ends.
        self.in_flight.clear();
        self.in_flight_prefixes.clear();
        self.superseded.clear();
        self.batches.clear();
        self.lookup_queue.clear();
        self.resolutions.retain(|_, r| *r != Resolution::Pending);
    }

    /// The socket's receive queue overflowed (`ENOBUFS`): what we know may be wrong.
    pub fn handle_overrun(&mut self) {
        tracing::warn!("netlink receive buffer overrun; starting a full resync");
        self.start_resync();
    }

    // ----- state queries ---------------------------------------------------------------

    /// Prefixes waiting to be written (the backpressure measure).
    pub fn queue_len(&self) -> usize {
        self.dirty.len()
    }

    /// True when nothing is queued, outstanding, being resolved or being dumped.
    pub fn is_settled(&self) -> bool {
        self.sync == Sync::Running
            && self.dirty.is_empty()
            && self.in_flight.is_empty()
            && self.lookup_queue.is_empty()
            && self.retire_queue.is_empty()
            && !self.refresh_lookups
    }

    /// Routes currently failing.
    pub fn failures(&self) -> Vec<RouteError> {
        let mut v: Vec<RouteError> = self.failures.values().cloned().collect();
        v.sort_by_key(|e| e.prefix);
        v
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<FibEvent> {
        self.events.pop_front()
    }

    // ----- output ----------------------------------------------------------------------

    /// Fills `buf` with the next batch of messages for one `sendmsg`. False if nothing to send.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        match self.sync {
            Sync::Dumping { seq: Some(_), .. } => return false,
            Sync::Dumping { step, seq: None, attempts } => {
                let seq = self.next_seq();
                let request = match step {
                    DumpStep::Links => Request::DumpLinks,
                    DumpStep::Routes4 => Request::DumpRoutes(encode_route_dump(AddressFamily::Inet, self.id.table)),
                    DumpStep::Routes6 => Request::DumpRoutes(encode_route_dump(AddressFamily::Inet6, self.id.table)),
                };
                frame(buf, request, seq, false);
                self.sync = Sync::Dumping { step, seq: Some(seq), attempts };
                return true;
            }
            Sync::Running => {}
        }
        if self.refresh_lookups {
            self.refresh_lookups = false;
            let queued: HashSet<IpAddr> = self.lookup_queue.iter().copied().collect();
            let outstanding: HashSet<IpAddr> = self
                .in_flight
                .values()
                .filter_map(|f| match f {
                    InFlight::Lookup(gw) => Some(*gw),
                    InFlight::Write { .. } | InFlight::Retire(_) => None,
                })
                .collect();
            self.gateway_refs.retain(|_, n| *n > 0);
            let used: HashSet<IpAddr> = self.gateway_refs.keys().copied().collect();
            self.resolutions.retain(|gw, _| used.contains(gw));
            for gw in used {
                if !queued.contains(&gw) && !outstanding.contains(&gw) {
                    // Known answers stay in use until the new ones arrive.
                    self.resolutions.entry(gw).or_insert(Resolution::Pending);
                    self.lookup_queue.push_back(gw);
                }
            }
        }
        let mut count = 0;
        self.frame_lookups(buf, &mut count);
        let mut batch = Vec::new();
        let mut last_offset = 0;
        let mut budget = self.dirty.len();
        while count < self.batch_size && budget > 0 {
            budget -= 1;
            let Some(prefix) = self.dirty.next() else {
                break;
            };
            if self.in_flight_prefixes.contains(&prefix) {
                // One write per prefix at a time; this one goes on a later pass.
                self.dirty.defer(prefix);
                continue;
            }
            self.dirty.done(&prefix);
            let repair = self.repair_candidates.remove(&prefix);
            let (request, op, spec, metric) = match self.plan(prefix) {
                Plan::Nothing => continue,
                Plan::Wait => {
                    // Routes through a gateway being looked up wait for the answer (well
                    // under a millisecond) instead of each being evaluated in vain.
                    self.dirty.insert(prefix);
                    self.dirty.retry_first(prefix);
                    break;
                }
                Plan::Install(spec, metric) => {
                    self.counters.installs.inc();
                    let request = Request::Install(encode_install(&prefix, &spec, &self.id.at(metric)));
                    (request, Op::Install, Some(spec), metric)
                }
                Plan::Remove(metric) => {
                    self.counters.removes.inc();
                    (Request::Remove(encode_remove(&prefix, &self.id.at(metric))), Op::Remove, None, metric)
                }
            };
            if repair {
                self.metrics.repairs.inc();
                tracing::debug!(%prefix, "repairing a route changed by someone else");
            }
            let seq = self.next_seq();
            last_offset = buf.len();
            frame(buf, request, seq, false);
            self.in_flight.insert(seq, InFlight::Write { prefix, metric, op, spec });
            self.in_flight_prefixes.insert(prefix);
            batch.push(seq);
            count += 1;
        }
        // Lookups the planning above asked for go out in the same sendmsg.
        self.frame_lookups(buf, &mut count);
        // A predecessor's routes go after our own writes, in the same batches.
        while count < self.batch_size {
            let Some(p) = self.retire_queue.pop_front() else {
                break;
            };
            let id = Identity { protocol: p.protocol, ..self.id.at(p.metric) };
            let seq = self.next_seq();
            last_offset = buf.len();
            frame(buf, Request::Remove(encode_remove(&p.prefix, &id)), seq, false);
            self.in_flight.insert(seq, InFlight::Retire(p));
            self.counters.retires.inc();
            batch.push(seq);
            count += 1;
        }
        if let Some(&last) = batch.last() {
            let mut nl = NetlinkBuffer::new(&mut buf[last_offset..]);
            let flags = nl.flags();
            nl.set_flags(flags | NLM_F_ACK);
            self.batches.insert(last, batch);
        }
        self.metrics.queue_depth.set(self.dirty.len() as i64);
        !buf.is_empty()
    }

    /// Frames queued gateway lookups while the batch has room.
    fn frame_lookups(&mut self, buf: &mut Vec<u8>, count: &mut usize) {
        while *count < self.batch_size {
            let Some(gw) = self.lookup_queue.pop_front() else {
                break;
            };
            let seq = self.next_lookup_seq();
            frame(buf, Request::Lookup(encode_lookup(gw)), seq, false);
            self.in_flight.insert(seq, InFlight::Lookup(gw));
            self.counters.lookups.inc();
            *count += 1;
        }
    }

    // ----- kernel input ----------------------------------------------------------------
}

#[cfg(test)]
mod tests;
