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

use crate::config::FibConfig;
use crate::error::{errno_name, Op, RouteError, RouteErrorKind};
use crate::kernel::{
    decode_link, decode_route, encode_install, encode_lookup, encode_remove, encode_route_dump, frame, Identity,
    KernelHop, KernelSpec, KernelTarget, LinkState, Request, TableRoute,
};
use crate::metrics::FibMetrics;
use crate::queue::WriteQueue;
use crate::route::{Route, RouteChange, Target};

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
    /// A route write; `spec` is what an install wrote, taken when its notification arrives.
    Write {
        prefix: IpNet,
        op: Op,
        spec: Option<KernelSpec>,
    },
    Lookup(IpAddr),
}

/// Metric children looked up once: label lookups cost a hash and a lock each.
struct Counters {
    installed_v4: prometheus::IntGauge,
    installed_v6: prometheus::IntGauge,
    installs: prometheus::IntCounter,
    removes: prometheus::IntCounter,
    lookups: prometheus::IntCounter,
}

impl Counters {
    fn new(m: &FibMetrics) -> Self {
        Counters {
            installed_v4: m.routes_installed.with_label_values(&["ipv4"]),
            installed_v6: m.routes_installed.with_label_values(&["ipv6"]),
            installs: m.operations.with_label_values(&["install"]),
            removes: m.operations.with_label_values(&["remove"]),
            lookups: m.operations.with_label_values(&["lookup"]),
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

/// What occupies our table slot (table, prefix, our metric) in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    protocol: u8,
    spec: KernelSpec,
}

enum Plan {
    Nothing,
    /// A gateway lookup is outstanding.
    Wait,
    Install(KernelSpec),
    Remove,
}

enum Decision {
    NotDesired { ours: bool },
    Wait,
    Fail { kind: RouteErrorKind, ours: bool },
    Conflict { protocol: u8 },
    Same,
    Install(KernelSpec),
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
    slots: HashMap<IpNet, Slot>,
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
        let stale: Vec<IpNet> = self
            .slots
            .iter()
            .filter(|(p, s)| s.protocol == self.id.protocol && !self.desired.contains_key(*p))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.mark_dirty(p);
        }
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
                    InFlight::Write { .. } => None,
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
            let (request, op, spec) = match self.plan(prefix) {
                Plan::Nothing => continue,
                Plan::Wait => {
                    // Routes through a gateway being looked up wait for the answer (well
                    // under a millisecond) instead of each being evaluated in vain.
                    self.dirty.insert(prefix);
                    self.dirty.retry_first(prefix);
                    break;
                }
                Plan::Install(spec) => {
                    self.counters.installs.inc();
                    (Request::Install(encode_install(&prefix, &spec, &self.id)), Op::Install, Some(spec))
                }
                Plan::Remove => {
                    self.counters.removes.inc();
                    (Request::Remove(encode_remove(&prefix, &self.id)), Op::Remove, None)
                }
            };
            if repair {
                self.metrics.repairs.inc();
                tracing::debug!(%prefix, "repairing a route changed by someone else");
            }
            let seq = self.next_seq();
            last_offset = buf.len();
            frame(buf, request, seq, false);
            self.in_flight.insert(seq, InFlight::Write { prefix, op, spec });
            self.in_flight_prefixes.insert(prefix);
            batch.push(seq);
            count += 1;
        }
        // Lookups the planning above asked for go out in the same sendmsg.
        self.frame_lookups(buf, &mut count);
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

    /// Takes one datagram read from the netlink socket.
    pub fn handle_datagram(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Ok(nl) = NetlinkBuffer::new_checked(bytes) else {
                tracing::warn!(len = bytes.len(), "truncated netlink message ignored");
                return;
            };
            let len = (nl.length() as usize).min(bytes.len());
            let aligned = ((len + 3) & !3).min(bytes.len());
            let (msg, rest) = bytes.split_at(aligned);
            bytes = rest;
            if self.take_own_echo(&nl) {
                continue;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&msg[..len]) {
                Ok(m) => self.handle_message(m),
                Err(e) => tracing::debug!(error = %e, "undecodable netlink message ignored"),
            }
        }
    }

    /// The notification of our own write, recognised by port and sequence number, updates
    /// the table view from what we wrote without decoding it. Order is kept: it arrives on
    /// the same socket as every other change, before the write's ACK.
    fn take_own_echo(&mut self, nl: &NetlinkBuffer<&[u8]>) -> bool {
        let kind = nl.message_type();
        if (kind != RTM_NEWROUTE && kind != RTM_DELROUTE)
            || nl.port_number() != self.port
            || nl.flags() & NLM_F_MULTI != 0
        {
            return false;
        }
        let Some(InFlight::Write { prefix, op, spec }) = self.in_flight.get_mut(&nl.sequence_number()) else {
            return false;
        };
        let prefix = *prefix;
        match (op, kind) {
            (Op::Install, RTM_NEWROUTE) => {
                if let Some(spec) = spec.take() {
                    self.set_slot(prefix, Some(Slot { protocol: self.id.protocol, spec }));
                }
            }
            (Op::Remove, RTM_DELROUTE) => self.set_slot(prefix, None),
            // Anything else the kernel says about our write (an IPv6 sibling change, say)
            // is read in full.
            _ => return false,
        }
        true
    }

    fn handle_message(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        let header = msg.header;
        let seq = header.sequence_number;
        let from_dump = header.flags & NLM_F_MULTI != 0;
        // More notifications of our own writes than the one `take_own_echo` consumed (the
        // ACK path records what we wrote).
        let own_echo = !from_dump && header.port_number == self.port && seq & LOOKUP_SEQ == 0;
        if from_dump && !self.is_current_dump(seq) {
            return;
        }
        match msg.payload {
            NetlinkPayload::Done(_) if self.is_current_dump(seq) => self.dump_step_done(),
            NetlinkPayload::Done(_) => {}
            NetlinkPayload::Error(e) => {
                let errno = e.code.map(|c| c.get().saturating_abs());
                let text = errno.and_then(|_| extack_message(header.flags, &e.header));
                self.handle_answer(seq, errno, text);
            }
            NetlinkPayload::InnerMessage(inner) => match inner {
                RouteNetlinkMessage::NewRoute(m) => {
                    if !from_dump && header.port_number == self.port {
                        if let Some(&InFlight::Lookup(gw)) = self.in_flight.get(&seq) {
                            self.in_flight.remove(&seq);
                            let res = self.read_lookup(gw, decode_route(&m));
                            self.set_resolution(gw, res);
                            return;
                        }
                    }
                    if own_echo {
                        return;
                    }
                    if let Some(r) = decode_route(&m) {
                        self.on_route(r, false, from_dump);
                    }
                }
                RouteNetlinkMessage::DelRoute(m) => {
                    if own_echo {
                        return;
                    }
                    if let Some(r) = decode_route(&m) {
                        self.on_route(r, true, from_dump);
                    }
                }
                RouteNetlinkMessage::NewLink(m) => self.on_link(decode_link(&m), false, from_dump),
                RouteNetlinkMessage::DelLink(m) => self.on_link(decode_link(&m), true, from_dump),
                RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => {
                    // Connected routes come and go with addresses: next hops may now
                    // resolve differently.
                    self.refresh_lookups = true;
                }
                _ => {}
            },
            NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
            _ => {}
        }
    }

    fn is_current_dump(&self, seq: u32) -> bool {
        matches!(self.sync, Sync::Dumping { seq: Some(s), .. } if s == seq)
    }

    fn dump_step_done(&mut self) {
        let Sync::Dumping { step, .. } = self.sync else {
            return;
        };
        let next = match step {
            DumpStep::Links => Some(DumpStep::Routes4),
            DumpStep::Routes4 => Some(DumpStep::Routes6),
            DumpStep::Routes6 => None,
        };
        match next {
            Some(step) => self.sync = Sync::Dumping { step, seq: None, attempts: 0 },
            None => self.finish_resync(),
        }
    }

    fn finish_resync(&mut self) {
        self.sync = Sync::Running;
        let mut all: Vec<IpNet> = self.desired.keys().copied().collect();
        all.extend(self.removed.iter().copied());
        if self.swept {
            all.extend(self.slots.iter().filter(|(_, s)| s.protocol == self.id.protocol).map(|(p, _)| *p));
        }
        for p in all {
            self.mark_dirty(p);
        }
        self.refresh_lookups = true;
        self.events.push_back(FibEvent::Resynced);
    }

    /// An `NLMSG_ERROR` (ACK when `errno` is `None`) for request `seq`.
    fn handle_answer(&mut self, seq: u32, errno: Option<i32>, text: Option<String>) {
        if let Sync::Dumping { step, seq: Some(s), attempts } = self.sync {
            if s == seq {
                let errno = errno.unwrap_or(0);
                if errno == ENOENT && step != DumpStep::Links {
                    // The family has no such table yet: it is empty.
                    self.dump_step_done();
                    return;
                }
                tracing::warn!(what = step.name(), errno = %errno_name(errno), "dump failed");
                if attempts + 1 >= DUMP_ATTEMPTS {
                    self.events.push_back(FibEvent::DumpFailed { what: step.name(), errno });
                    self.dump_step_done();
                } else {
                    self.sync = Sync::Dumping { step, seq: None, attempts: attempts + 1 };
                }
                return;
            }
        }
        if let Some(errno) = errno {
            match self.in_flight.remove(&seq) {
                Some(InFlight::Write { prefix, op, .. }) => {
                    self.in_flight_prefixes.remove(&prefix);
                    self.superseded.remove(&prefix);
                    if op == Op::Remove && errno == ESRCH {
                        self.set_slot(prefix, None);
                    } else {
                        self.metrics.errors.with_label_values(&[&errno_name(errno)]).inc();
                        self.fail(prefix, RouteErrorKind::Kernel { op, errno, message: text });
                    }
                }
                Some(InFlight::Lookup(gw)) => {
                    let reason = format!("no route ({})", nix::errno::Errno::from_raw(errno).desc());
                    self.set_resolution(gw, Resolution::Failed(reason));
                }
                None => {}
            }
        }
        if let Some(batch) = self.batches.remove(&seq) {
            let mut raced = false;
            for s in batch {
                let Some(InFlight::Write { prefix, op, spec }) = self.in_flight.remove(&s) else {
                    continue;
                };
                self.in_flight_prefixes.remove(&prefix);
                if self.superseded.remove(&prefix) {
                    // Someone else changed this prefix while our write was out: which came
                    // first is unknown, so read the table again.
                    raced = true;
                    continue;
                }
                match op {
                    Op::Install => {
                        if let Some(spec) = spec {
                            self.set_slot(prefix, Some(Slot { protocol: self.id.protocol, spec }));
                        }
                        self.succeed(prefix);
                    }
                    Op::Remove => self.set_slot(prefix, None),
                }
            }
            if raced {
                self.start_resync();
            }
        }
    }

    fn read_lookup(&self, gw: IpAddr, route: Option<TableRoute>) -> Resolution {
        let Some(r) = route else {
            return Resolution::Failed("unreadable lookup answer".into());
        };
        if r.protocol == self.id.protocol && r.table == self.id.table {
            return Resolution::Failed(format!("only covered by our own route {}", r.prefix));
        }
        match r.spec.target {
            KernelTarget::Unicast(hops) => {
                Resolution::Resolved(hops.iter().map(|h| (h.gateway.unwrap_or(gw), h.oif)).collect())
            }
            KernelTarget::Blackhole => Resolution::Failed(format!("covered by blackhole route {}", r.prefix)),
            KernelTarget::Unreachable => Resolution::Failed(format!("covered by unreachable route {}", r.prefix)),
            // RTN_LOCAL
            KernelTarget::Other(2) => Resolution::Failed("is a local address".into()),
            KernelTarget::Other(t) => Resolution::Failed(format!("covered by route {} of type {t}", r.prefix)),
        }
    }

    fn set_resolution(&mut self, gw: IpAddr, res: Resolution) {
        let old = self.resolutions.insert(gw, res.clone());
        if old.as_ref() != Some(&res) {
            tracing::debug!(%gw, ?res, "next hop resolution changed");
            let users: Vec<IpNet> =
                self.desired.iter().filter(|(_, r)| recursive_gateways(r).any(|g| g == gw)).map(|(p, _)| *p).collect();
            for p in users {
                self.mark_dirty(p);
            }
        }
    }

    fn on_route(&mut self, r: TableRoute, deleted: bool, from_dump: bool) {
        let direct = matches!(&r.spec.target, KernelTarget::Unicast(h) if h.iter().all(|h| h.gateway.is_none()));
        if r.table == self.id.table && r.protocol == crate::kernel::RTPROT_KERNEL && direct {
            let changed = if deleted { self.connected.remove(&r.prefix) } else { self.connected.insert(r.prefix) };
            if changed && self.desired.contains_key(&r.prefix) && !from_dump {
                self.mark_dirty(r.prefix);
            }
        }
        let ours = r.protocol == self.id.protocol;
        let in_slot = r.table == self.id.table && r.metric == self.id.metric_for(&r.prefix);
        if !in_slot || !ours {
            // A route that is not ours changed: next hops may resolve differently now.
            if !from_dump {
                self.refresh_lookups = true;
            }
            if !in_slot {
                return;
            }
        }
        let prefix = r.prefix;
        if deleted {
            if self.slots.get(&prefix).map(|s| s.protocol) == Some(r.protocol) {
                self.set_slot(prefix, None);
            }
        } else {
            self.set_slot(prefix, Some(Slot { protocol: r.protocol, spec: r.spec }));
        }
        if from_dump || self.sync != Sync::Running {
            return;
        }
        if self.in_flight_prefixes.contains(&prefix) {
            self.superseded.insert(prefix);
            return;
        }
        if self.dirty.contains(&prefix) {
            // A write is about to happen anyway.
            return;
        }
        let wanted = self.desired.contains_key(&prefix);
        if ours && (wanted || self.swept) {
            // Someone changed or deleted a route of ours: re-evaluate; the planner
            // writes only if the kernel now differs from what we want.
            self.repair_candidates.insert(prefix);
            self.mark_dirty(prefix);
        } else if !ours && wanted {
            // Another owner appeared in or left our slot.
            self.mark_dirty(prefix);
        }
    }

    fn set_slot(&mut self, prefix: IpNet, slot: Option<Slot>) {
        let protocol = self.id.protocol;
        let is_ours = slot.as_ref().is_some_and(|s| s.protocol == protocol);
        let old = match slot {
            Some(s) => self.slots.insert(prefix, s),
            None => self.slots.remove(&prefix),
        };
        let was_ours = old.is_some_and(|s| s.protocol == protocol);
        let gauge = if prefix.addr().is_ipv4() { &self.counters.installed_v4 } else { &self.counters.installed_v6 };
        match (was_ours, is_ours) {
            (false, true) => gauge.inc(),
            (true, false) => gauge.dec(),
            _ => {}
        }
    }

    fn on_link(&mut self, link: LinkState, deleted: bool, from_dump: bool) {
        let old = self.links.remove(&link.index);
        if let Some(name) = old.as_ref().and_then(|l| l.name.as_ref()) {
            self.link_by_name.remove(name);
        }
        if !deleted {
            if let Some(name) = &link.name {
                self.link_by_name.insert(name.clone(), link.index);
            }
            self.links.insert(link.index, link.clone());
        }
        if from_dump || self.sync != Sync::Running {
            return;
        }
        let changed = match &old {
            None => !deleted,
            Some(o) => deleted || o.usable != link.usable || o.name != link.name,
        };
        if changed {
            // The kernel drops IPv4 routes through a downed link without telling anyone:
            // re-read the table, then re-evaluate every route against the new link set.
            tracing::info!(index = link.index, name = ?link.name, usable = link.usable && !deleted, "link changed; resyncing");
            self.start_resync();
        }
    }

    // ----- planning ----------------------------------------------------------------------

    fn plan(&mut self, prefix: IpNet) -> Plan {
        // Decide with shared borrows (one lookup in each map), then act.
        let protocol = self.id.protocol;
        let slot = self.slots.get(&prefix);
        let ours = slot.is_some_and(|s| s.protocol == protocol);
        let decision = match self.desired.get(&prefix) {
            None => Decision::NotDesired { ours },
            Some(route) if matches!(route.target, Target::Unicast(_)) && self.connected.contains(&prefix) => {
                Decision::Fail { kind: RouteErrorKind::Connected, ours }
            }
            Some(route) => {
                let mut ctx = EvalContext {
                    resolutions: &mut self.resolutions,
                    lookup_queue: &mut self.lookup_queue,
                    links: &self.links,
                    link_by_name: &self.link_by_name,
                };
                match ctx.evaluate(route) {
                    Eval::Wait => Decision::Wait,
                    Eval::Fail(kind) => Decision::Fail { kind, ours },
                    Eval::Ready(spec) => match slot {
                        Some(s) if s.protocol != protocol => Decision::Conflict { protocol: s.protocol },
                        Some(s) if s.spec == spec => Decision::Same,
                        _ => Decision::Install(spec),
                    },
                }
            }
        };
        match decision {
            Decision::NotDesired { ours } => {
                let explicit = self.removed.remove(&prefix);
                self.failures.remove(&prefix);
                if ours && (explicit || self.swept) {
                    Plan::Remove
                } else {
                    Plan::Nothing
                }
            }
            Decision::Wait => Plan::Wait,
            Decision::Fail { kind, ours } => {
                self.fail(prefix, kind);
                if ours {
                    Plan::Remove
                } else {
                    Plan::Nothing
                }
            }
            Decision::Conflict { protocol } => {
                self.fail(prefix, RouteErrorKind::Conflict { protocol });
                Plan::Nothing
            }
            Decision::Same => {
                self.succeed(prefix);
                Plan::Nothing
            }
            Decision::Install(spec) => Plan::Install(spec),
        }
    }

    // ----- helpers -----------------------------------------------------------------------

    fn mark_dirty(&mut self, prefix: IpNet) {
        self.dirty.insert(prefix);
    }

    fn forget_gateways(&mut self, route: &Route) {
        for gw in recursive_gateways(route) {
            if let Some(n) = self.gateway_refs.get_mut(&gw) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn succeed(&mut self, prefix: IpNet) {
        if self.failures.remove(&prefix).is_some() {
            self.events.push_back(FibEvent::Recovered(prefix));
        }
    }

    fn fail(&mut self, prefix: IpNet, kind: RouteErrorKind) {
        let err = RouteError { prefix, kind };
        if self.failures.get(&prefix) != Some(&err) {
            tracing::debug!(error = %err, "route failed");
            self.failures.insert(prefix, err.clone());
            self.events.push_back(FibEvent::Failed(err));
        }
    }

    /// Sequence numbers of writes and dumps: 1 to 2^31 - 1, wrapping.
    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & !LOOKUP_SEQ;
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sequence numbers of next-hop lookups carry [`LOOKUP_SEQ`], so that the socket filter
    /// (see `netns.rs`) lets their answers through while it drops our writes' echoes.
    fn next_lookup_seq(&mut self) -> u32 {
        self.lookup_seq = (self.lookup_seq + 1) & !LOOKUP_SEQ;
        self.lookup_seq | LOOKUP_SEQ
    }
}

/// The parts of the engine that deciding a route's kernel form reads (and, for gateways not
/// yet looked up, writes), borrowed apart from the desired routes.
struct EvalContext<'a> {
    resolutions: &'a mut HashMap<IpAddr, Resolution>,
    lookup_queue: &'a mut VecDeque<IpAddr>,
    links: &'a HashMap<u32, LinkState>,
    link_by_name: &'a HashMap<String, u32>,
}

impl EvalContext<'_> {
    /// What the kernel should hold for `route` given current links and resolutions.
    fn evaluate(&mut self, route: &Route) -> Eval {
        let hops = match &route.target {
            Target::Blackhole => {
                return Eval::Ready(KernelSpec { target: KernelTarget::Blackhole, pref_src: route.pref_src })
            }
            Target::Unreachable => {
                return Eval::Ready(KernelSpec { target: KernelTarget::Unreachable, pref_src: route.pref_src })
            }
            Target::Unicast(hops) => hops,
        };
        let mut out = Vec::new();
        let mut first_error = None;
        let mut wait = false;
        for hop in hops {
            let weight = hop.weight.get();
            if let (true, Some(gw)) = (hop.is_recursive(), hop.gateway) {
                match self.resolutions.get(&gw) {
                    None => {
                        self.resolutions.insert(gw, Resolution::Pending);
                        self.lookup_queue.push_back(gw);
                        wait = true;
                    }
                    Some(Resolution::Pending) => wait = true,
                    Some(Resolution::Failed(reason)) => {
                        first_error
                            .get_or_insert(RouteErrorKind::NextHopUnreachable { gateway: gw, reason: reason.clone() });
                    }
                    Some(Resolution::Resolved(paths)) => {
                        for &(via, oif) in paths {
                            if self.link_usable(oif) {
                                out.push(KernelHop { gateway: Some(via), oif, weight, onlink: false });
                            } else {
                                first_error.get_or_insert(RouteErrorKind::AllLinksDown);
                            }
                        }
                    }
                }
                continue;
            }
            let Some(device) = &hop.device else {
                // validate() guarantees a device when the hop is not recursive.
                continue;
            };
            let Some(&oif) = self.link_by_name.get(device) else {
                first_error.get_or_insert(RouteErrorKind::NoSuchDevice { device: device.clone() });
                continue;
            };
            if !self.link_usable(oif) {
                first_error.get_or_insert(RouteErrorKind::AllLinksDown);
                continue;
            }
            out.push(KernelHop { gateway: hop.gateway, oif, weight, onlink: hop.onlink });
        }
        if wait {
            return Eval::Wait;
        }
        if out.is_empty() {
            return Eval::Fail(first_error.unwrap_or(RouteErrorKind::AllLinksDown));
        }
        Eval::Ready(KernelSpec::unicast(out, route.pref_src))
    }

    fn link_usable(&self, index: u32) -> bool {
        // A link we have not heard of cannot be judged; the kernel will.
        self.links.get(&index).is_none_or(|l| l.usable)
    }
}

fn recursive_gateways(route: &Route) -> impl Iterator<Item = IpAddr> + '_ {
    let hops: &[crate::route::NextHop] = match &route.target {
        Target::Unicast(h) => h,
        _ => &[],
    };
    hops.iter().filter(|h| h.is_recursive()).filter_map(|h| h.gateway)
}

/// The kernel's extended-ack text in an error message's payload (after the error code).
fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let orig_len = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let nl = NetlinkBuffer::new_checked(payload).ok()?;
        nl.length() as usize
    };
    let tlvs = payload.get((orig_len + 3) & !3..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
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
}
