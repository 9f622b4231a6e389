//! Whether a desired route can be written now: its devices and gateways
//! checked against the links and lookups the engine knows.

use super::*;

/// The parts of the engine that deciding a route's kernel form reads (and, for gateways not
/// yet looked up, writes), borrowed apart from the desired routes.
pub(super) struct EvalContext<'a> {
    pub(super) resolutions: &'a mut HashMap<IpAddr, Resolution>,
    pub(super) lookup_queue: &'a mut VecDeque<IpAddr>,
    pub(super) links: &'a HashMap<u32, LinkState>,
    pub(super) link_by_name: &'a HashMap<String, u32>,
}

impl EvalContext<'_> {
    /// What the kernel should hold for `route` given current links and resolutions.
    pub(super) fn evaluate(&mut self, route: &Route) -> Eval {
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

    pub(super) fn link_usable(&self, index: u32) -> bool {
        // A link we have not heard of cannot be judged; the kernel will.
        self.links.get(&index).is_none_or(|l| l.usable)
    }
}

pub(super) fn recursive_gateways(route: &Route) -> impl Iterator<Item = IpAddr> + '_ {
    let hops: &[crate::route::NextHop] = match &route.target {
        Target::Unicast(h) => h,
        _ => &[],
    };
    hops.iter().filter(|h| h.is_recursive()).filter_map(|h| h.gateway)
}

/// The kernel's extended-ack text in an error message's payload (after the error code).
pub(super) fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
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
