//! `projectcalico.org/v3` `BFDConfiguration` (as Calico Enterprise defines it):
//! which nodes run BFD with their BGP peers, and with which timers, per
//! interface the peer is reached through.

use std::time::Duration;

use bgpd_model::Selector;

use super::fields::{as_str, as_u64, Fields, Findings};
use super::values::duration_from_value;

/// A validated BFDConfiguration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdConfiguration {
    /// `metadata.name`.
    pub name: String,
    /// `spec.nodeSelector`: the nodes it applies to (all when absent).
    pub node_selector: Selector,
    /// `spec.interfaces`, in order: the first whose pattern matches wins.
    pub interfaces: Vec<BfdInterface>,
}

/// One `spec.interfaces[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdInterface {
    /// `matchPattern`: an interface name, a prefix ending in `*`, or `*`.
    pub match_pattern: String,
    /// `minimumRecvInterval` (Calico's default 10ms): the fastest this node receives.
    pub minimum_recv_interval: Duration,
    /// `minimumSendInterval` (default 100ms): the fastest this node sends.
    pub minimum_send_interval: Duration,
    /// `idleSendInterval` (default 1m): the send interval while the session is not up.
    pub idle_send_interval: Duration,
    /// `multiplier` (default 5): intervals without a packet before the session is down.
    pub multiplier: u8,
}

impl BfdInterface {
    /// Whether `pattern` matches interface `name`: exactly, by prefix
    /// (`eth*`), or `*` (any, a peer reached through no known interface too).
    pub fn matches(&self, name: Option<&str>) -> bool {
        let p = self.match_pattern.as_str();
        match (p.strip_suffix('*'), name) {
            (Some(""), _) => true,
            (Some(prefix), Some(n)) => n.starts_with(prefix),
            (None, Some(n)) => n == p,
            (_, None) => false,
        }
    }

    /// The entry of `list` for interface `name`: the most specific pattern that
    /// matches (the exact name, then the longest prefix, then `*`), the first of
    /// equally specific ones.
    pub fn best<'a>(list: &'a [BfdInterface], name: Option<&str>) -> Option<&'a BfdInterface> {
        let specificity = |i: &BfdInterface| match i.match_pattern.strip_suffix('*') {
            None => usize::MAX,
            Some(prefix) => prefix.len(),
        };
        let mut best: Option<&BfdInterface> = None;
        for i in list.iter().filter(|i| i.matches(name)) {
            if best.is_none_or(|b| specificity(i) > specificity(b)) {
                best = Some(i);
            }
        }
        best
    }
}

const SPEC_FIELDS: &[&str] = &["nodeSelector", "interfaces"];
const INTERFACE_FIELDS: &[&str] =
    &["matchPattern", "minimumRecvInterval", "minimumSendInterval", "idleSendInterval", "multiplier"];

/// A whole, positive number of milliseconds (Calico's rule for the intervals).
fn interval(v: &serde_yaml::Value) -> Result<Duration, String> {
    let d = duration_from_value(v)?;
    if d.is_zero() || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{d:?} is not a whole number of milliseconds greater than 0"));
    }
    if d.as_micros() > u128::from(u32::MAX) {
        return Err(format!("{d:?} is longer than BFD's 32-bit microsecond fields allow"));
    }
    Ok(d)
}

/// Calico writes `multiplier` as a number; a string of digits is read too.
fn multiplier(v: &serde_yaml::Value) -> Result<u8, String> {
    let n = match as_u64(v) {
        Ok(n) => n,
        Err(e) => as_str(v).ok().and_then(|s| s.parse().ok()).ok_or(e)?,
    };
    match n {
        1..=255 => Ok(n as u8),
        _ => Err(format!("{n} is not a multiplier from 1 to 255")),
    }
}

/// Reads a BFDConfiguration (name already checked by the caller).
pub(crate) fn parse(name: &str, root: &Fields, f: &mut Findings) -> Option<BfdConfiguration> {
    let spec = f.take(root.child("spec"))?;
    for unknown in spec.unknown_keys(SPEC_FIELDS) {
        f.warn(unknown, "not supported by bgpd; ignored");
    }
    let node_selector = f
        .take(spec.parse_str("nodeSelector", |s| Selector::parse(s).map_err(|e| e.to_string())))
        .flatten()
        .unwrap_or(Selector::All);
    let mut interfaces = Vec::new();
    for (path, v) in f.take(spec.list("interfaces")).unwrap_or_default() {
        let Some(i) = f.take(Fields::at(Some(v), &path)) else { continue };
        for unknown in i.unknown_keys(INTERFACE_FIELDS) {
            f.warn(unknown, "not supported by bgpd; ignored");
        }
        let Some(Some(pattern)) = f.take(i.str("matchPattern")) else {
            f.error(i.path_of("matchPattern"), "missing: an interface name, a prefix such as \"eth*\", or \"*\"");
            continue;
        };
        if pattern.strip_suffix('*').unwrap_or(pattern).contains('*') {
            f.error(i.path_of("matchPattern"), format!("{pattern:?}: only a trailing \"*\" is supported"));
            continue;
        }
        let recv = f.take(i.get("minimumRecvInterval", interval)).flatten();
        let send = f.take(i.get("minimumSendInterval", interval)).flatten();
        let idle = f.take(i.get("idleSendInterval", interval)).flatten();
        let mult = f.take(i.get("multiplier", multiplier)).flatten();
        interfaces.push(BfdInterface {
            match_pattern: pattern.to_string(),
            minimum_recv_interval: recv.unwrap_or(Duration::from_millis(10)),
            minimum_send_interval: send.unwrap_or(Duration::from_millis(100)),
            idle_send_interval: idle.unwrap_or(Duration::from_secs(60)),
            multiplier: mult.unwrap_or(5),
        });
    }
    f.errors.is_empty().then(|| BfdConfiguration { name: name.to_string(), node_selector, interfaces })
}
