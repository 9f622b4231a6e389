//! What the kernel says: answers to writes and lookups, dumps during a
//! resync, and route and link notifications, each turned into the state of
//! the prefixes they concern.

use super::*;

impl Engine {
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
    pub(super) fn take_own_echo(&mut self, nl: &NetlinkBuffer<&[u8]>) -> bool {
        let kind = nl.message_type();
        if (kind != RTM_NEWROUTE && kind != RTM_DELROUTE)
            || nl.port_number() != self.port
            || nl.flags() & NLM_F_MULTI != 0
        {
            return false;
        }
        let Some(InFlight::Write { prefix, metric, op, spec }) = self.in_flight.get_mut(&nl.sequence_number()) else {
            return false;
        };
        let (prefix, metric) = (*prefix, *metric);
        match (op, kind) {
            (Op::Install, RTM_NEWROUTE) => {
                if let Some(spec) = spec.take() {
                    self.hold(prefix, Slot { metric, protocol: self.id.protocol, spec });
                }
            }
            (Op::Remove, RTM_DELROUTE) => {
                self.release(prefix, metric, self.id.protocol);
            }
            // Anything else the kernel says about our write (an IPv6 sibling change, say)
            // is read in full.
            _ => return false,
        }
        true
    }

    pub(super) fn handle_message(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
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

    pub(super) fn is_current_dump(&self, seq: u32) -> bool {
        matches!(self.sync, Sync::Dumping { seq: Some(s), .. } if s == seq)
    }

    pub(super) fn dump_step_done(&mut self) {
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

    pub(super) fn finish_resync(&mut self) {
        self.sync = Sync::Running;
        let mut all: Vec<IpNet> = self.desired.keys().copied().collect();
        all.extend(self.removed.iter().copied());
        if self.swept {
            let protocol = self.id.protocol;
            all.extend(
                self.slots.iter().filter(|(_, held)| held.iter().any(|s| s.protocol == protocol)).map(|(p, _)| *p),
            );
        }
        for p in all {
            self.mark_dirty(p);
        }
        self.refresh_lookups = true;
        self.events.push_back(FibEvent::Resynced);
    }

    /// An `NLMSG_ERROR` (ACK when `errno` is `None`) for request `seq`.
    pub(super) fn handle_answer(&mut self, seq: u32, errno: Option<i32>, text: Option<String>) {
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
                Some(InFlight::Write { prefix, metric, op, .. }) => {
                    self.in_flight_prefixes.remove(&prefix);
                    self.superseded.remove(&prefix);
                    if op == Op::Remove && errno == ESRCH {
                        self.release(prefix, metric, self.id.protocol);
                        self.follow_up(prefix);
                    } else {
                        self.metrics.errors.with_label_values(&[&errno_name(errno)]).inc();
                        self.fail(prefix, RouteErrorKind::Kernel { op, errno, message: text });
                    }
                }
                Some(InFlight::Lookup(gw)) => {
                    let reason = format!("no route ({})", nix::errno::Errno::from_raw(errno).desc());
                    self.set_resolution(gw, Resolution::Failed(reason));
                }
                Some(InFlight::Retire(p)) if errno == ESRCH => self.retired(p),
                Some(InFlight::Retire(p)) => {
                    // Still there as far as we know: it stays counted, nothing else stops.
                    self.metrics.errors.with_label_values(&[&errno_name(errno)]).inc();
                    tracing::warn!(
                        prefix = %p.prefix, protocol = p.protocol, metric = p.metric, errno = %errno_name(errno),
                        message = text.as_deref().unwrap_or(""),
                        "removing a route of the replaced speaker failed"
                    );
                }
                None => {}
            }
        }
        if let Some(batch) = self.batches.remove(&seq) {
            let mut raced = false;
            for s in batch {
                let (prefix, metric, op, spec) = match self.in_flight.remove(&s) {
                    Some(InFlight::Write { prefix, metric, op, spec }) => (prefix, metric, op, spec),
                    Some(InFlight::Retire(p)) => {
                        self.retired(p);
                        continue;
                    }
                    _ => continue,
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
                            self.hold(prefix, Slot { metric, protocol: self.id.protocol, spec });
                        }
                        self.succeed(prefix);
                        self.retire_replaced_at(prefix);
                    }
                    Op::Remove => {
                        self.release(prefix, metric, self.id.protocol);
                    }
                }
                self.follow_up(prefix);
            }
            if raced {
                self.start_resync();
            }
        }
    }

    /// A predecessor's route is gone (removed by us, or already gone): forgotten; if it
    /// held the slot ours wants, that slot is free for our route.
    pub(super) fn retired(&mut self, p: Predecessor) {
        self.forget_predecessor(&p);
        if self.release(p.prefix, p.metric, p.protocol) && self.desired_metric(&p.prefix) == Some(p.metric) {
            self.mark_dirty(p.prefix);
        }
    }

    /// After a write of ours to `prefix` is done: the prefix is planned again while a
    /// route of ours is left at another metric than the wanted one: the old one of a
    /// route moved to a new metric (removed only now that the new one is in: make before
    /// break), or the next of several to remove.
    pub(super) fn follow_up(&mut self, prefix: IpNet) {
        let protocol = self.id.protocol;
        let wanted = self.desired_metric(&prefix);
        let left = self.held(&prefix).iter().any(|s| s.protocol == protocol && Some(s.metric) != wanted);
        if left {
            self.mark_dirty(prefix);
        }
    }

    pub(super) fn forget_predecessor(&mut self, p: &Predecessor) {
        if self.predecessors.remove(p) {
            self.metrics.predecessor_routes.set(self.predecessors.len() as i64);
        }
    }

    pub(super) fn read_lookup(&self, gw: IpAddr, route: Option<TableRoute>) -> Resolution {
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

    pub(super) fn set_resolution(&mut self, gw: IpAddr, res: Resolution) {
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

    pub(super) fn on_route(&mut self, r: TableRoute, deleted: bool, from_dump: bool) {
        if r.table == self.id.table && self.replaces.contains(&r.protocol) {
            // A route of the speaker we take over: recorded, left alone until retired.
            let p = Predecessor { prefix: r.prefix, protocol: r.protocol, metric: r.metric };
            if deleted {
                self.forget_predecessor(&p);
            } else if self.predecessors.insert(p) {
                self.metrics.predecessor_routes.set(self.predecessors.len() as i64);
            }
        }
        let direct = matches!(&r.spec.target, KernelTarget::Unicast(h) if h.iter().all(|h| h.gateway.is_none()));
        if r.table == self.id.table && r.protocol == crate::kernel::RTPROT_KERNEL && direct {
            let changed = if deleted { self.connected.remove(&r.prefix) } else { self.connected.insert(r.prefix) };
            if changed && self.desired.contains_key(&r.prefix) && !from_dump {
                self.mark_dirty(r.prefix);
            }
        }
        // Ours: our protocol in our table, at any metric.
        let ours = r.protocol == self.id.protocol;
        let in_table = r.table == self.id.table;
        if !in_table || !ours {
            // A route that is not ours changed: next hops may resolve differently now.
            if !from_dump {
                self.refresh_lookups = true;
            }
            if !in_table {
                return;
            }
        }
        let (prefix, metric) = (r.prefix, r.metric);
        if deleted {
            self.release(prefix, metric, r.protocol);
        } else {
            self.hold(prefix, Slot { metric, protocol: r.protocol, spec: r.spec });
        }
        if from_dump || self.sync != Sync::Running {
            return;
        }
        if !ours && self.desired_metric(&prefix) != Some(metric) {
            // Another's route beside the slot ours wants: no concern of ours.
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

    /// Records `slot` as what occupies its metric's slot of `prefix`.
    pub(super) fn hold(&mut self, prefix: IpNet, slot: Slot) {
        let protocol = self.id.protocol;
        let is_ours = slot.protocol == protocol;
        let held = self.slots.entry(prefix).or_default();
        let was_ours = match held.iter_mut().find(|s| s.metric == slot.metric) {
            Some(s) => std::mem::replace(s, slot).protocol == protocol,
            None => {
                held.push(slot);
                false
            }
        };
        self.count_ours(prefix, was_ours, is_ours);
    }

    /// Forgets the route of `protocol` at `metric` for `prefix`, if that is what the slot
    /// holds; true if it did.
    pub(super) fn release(&mut self, prefix: IpNet, metric: u32, protocol: u8) -> bool {
        let Some(held) = self.slots.get_mut(&prefix) else {
            return false;
        };
        let Some(i) = held.iter().position(|s| s.metric == metric && s.protocol == protocol) else {
            return false;
        };
        held.swap_remove(i);
        if held.is_empty() {
            self.slots.remove(&prefix);
        }
        self.count_ours(prefix, protocol == self.id.protocol, false);
        true
    }

    /// Keeps `fib_routes_installed` (our routes, each metric counted) up to date.
    fn count_ours(&self, prefix: IpNet, was_ours: bool, is_ours: bool) {
        let gauge = if prefix.addr().is_ipv4() { &self.counters.installed_v4 } else { &self.counters.installed_v6 };
        match (was_ours, is_ours) {
            (false, true) => gauge.inc(),
            (true, false) => gauge.dec(),
            _ => {}
        }
    }

    pub(super) fn on_link(&mut self, link: LinkState, deleted: bool, from_dump: bool) {
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

    pub(super) fn plan(&mut self, prefix: IpNet) -> Plan {
        // Decide with shared borrows (one lookup in each map), then act.
        let protocol = self.id.protocol;
        let wanted = self.desired.get(&prefix).map(|r| self.metric_of(r));
        let held = self.slots.get(&prefix).map_or(&[][..], |h| h.as_slice());
        let mut ours = held.iter().filter(|s| s.protocol == protocol).map(|s| s.metric);
        let any_ours = ours.next();
        let more = ours.next().is_some();
        // A failing route of ours goes from the wanted slot first: the rest are then at
        // other metrics, which `follow_up` sees to.
        let failing_ours = match wanted {
            Some(m) if held.iter().any(|s| s.protocol == protocol && s.metric == m) => Some(m),
            _ => any_ours,
        };
        let decision = match (self.desired.get(&prefix), wanted) {
            (Some(route), Some(metric)) => {
                if matches!(route.target, Target::Unicast(_)) && self.connected.contains(&prefix) {
                    Decision::Fail { kind: RouteErrorKind::Connected, ours: failing_ours }
                } else {
                    let mut ctx = EvalContext {
                        resolutions: &mut self.resolutions,
                        lookup_queue: &mut self.lookup_queue,
                        links: &self.links,
                        link_by_name: &self.link_by_name,
                    };
                    match ctx.evaluate(route) {
                        Eval::Wait => Decision::Wait,
                        Eval::Fail(kind) => Decision::Fail { kind, ours: failing_ours },
                        Eval::Ready(spec) => match held.iter().find(|s| s.metric == metric) {
                            Some(s) if s.protocol != protocol => Decision::Conflict { protocol: s.protocol },
                            Some(s) if s.spec == spec => Decision::Same {
                                stale: held
                                    .iter()
                                    .find(|s| s.protocol == protocol && s.metric != metric)
                                    .map(|s| s.metric),
                            },
                            _ => Decision::Install(spec, metric),
                        },
                    }
                }
            }
            _ => Decision::NotDesired { ours: any_ours, more },
        };
        match decision {
            Decision::NotDesired { ours, more } => {
                let explicit = self.removed.contains(&prefix);
                self.failures.remove(&prefix);
                match ours {
                    Some(metric) if explicit || self.swept => {
                        // An explicit removal is remembered until the last of ours goes.
                        if !more {
                            self.removed.remove(&prefix);
                        }
                        Plan::Remove(metric)
                    }
                    _ => {
                        self.removed.remove(&prefix);
                        Plan::Nothing
                    }
                }
            }
            Decision::Wait => Plan::Wait,
            Decision::Fail { kind, ours } => {
                self.fail(prefix, kind);
                match ours {
                    Some(metric) => Plan::Remove(metric),
                    None => Plan::Nothing,
                }
            }
            Decision::Conflict { protocol } => {
                // Ours at another metric (the one it is moving from) keeps forwarding.
                self.fail(prefix, RouteErrorKind::Conflict { protocol });
                // A predecessor's route in our slot goes if retiring has begun.
                self.retire_replaced_at(prefix);
                Plan::Nothing
            }
            Decision::Same { stale } => {
                self.succeed(prefix);
                self.retire_replaced_at(prefix);
                // Ours is in at the wanted metric: one at another metric can go.
                match stale {
                    Some(metric) => Plan::Remove(metric),
                    None => Plan::Nothing,
                }
            }
            Decision::Install(spec, metric) => Plan::Install(spec, metric),
        }
    }

    // ----- helpers -----------------------------------------------------------------------

    pub(super) fn mark_dirty(&mut self, prefix: IpNet) {
        self.dirty.insert(prefix);
    }

    pub(super) fn forget_gateways(&mut self, route: &Route) {
        for gw in recursive_gateways(route) {
            if let Some(n) = self.gateway_refs.get_mut(&gw) {
                *n = n.saturating_sub(1);
            }
        }
    }

    pub(super) fn succeed(&mut self, prefix: IpNet) {
        if self.failures.remove(&prefix).is_some() {
            self.events.push_back(FibEvent::Recovered(prefix));
        }
    }

    pub(super) fn fail(&mut self, prefix: IpNet, kind: RouteErrorKind) {
        let err = RouteError { prefix, kind };
        if self.failures.get(&prefix) != Some(&err) {
            tracing::debug!(error = %err, "route failed");
            self.failures.insert(prefix, err.clone());
            self.events.push_back(FibEvent::Failed(err));
        }
    }

    /// Sequence numbers of writes and dumps: 1 to 2^31 - 1, wrapping.
    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & !LOOKUP_SEQ;
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sequence numbers of next-hop lookups carry [`LOOKUP_SEQ`], so that the socket filter
    /// (see `netns.rs`) lets their answers through while it drops our writes' echoes.
    pub(super) fn next_lookup_seq(&mut self) -> u32 {
        self.lookup_seq = (self.lookup_seq + 1) & !LOOKUP_SEQ;
        self.lookup_seq | LOOKUP_SEQ
    }
}
