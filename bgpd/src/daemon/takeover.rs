//! `bgpd run --take-over PROTOCOL`: bgpd replaces another speaker on this node (Calico's
//! BIRD, protocol 12) whose kernel routes were left in place (BIRD's `persist`) and whose
//! peers keep this node's routes as graceful-restart helpers (it was killed without a
//! NOTIFICATION).
//!
//! - At start, the kernel table is read: routes of PROTOCOL there make this start a
//!   restart that claims forwarding state (R bit, F bits, selection deferral) even without
//!   a restart marker; none make it a normal start (after the first run, bgpd's own
//!   restart marker governs, so the flag can stay in a DaemonSet).
//! - The predecessor's routes keep forwarding until the selection deferral ends and
//!   bgpd's own routes are in. Then the kernel task removes those that a route of bgpd
//!   stands in for, and each other one as soon as bgpd's route for its prefix goes in: a
//!   peer that is not back by the end of the deferral keeps its prefixes reachable
//!   through the predecessor's routes. What is still left after [`TakeOver::hold`] (a
//!   prefix nobody advertises any more) goes too (`fib`'s `retire_predecessors`).

use std::path::Path;
use std::time::Duration;

use super::marker::{Assessment, Restart};

/// The protocol whose routes are taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// Its number in the kernel (`rtm_protocol`).
    pub protocol: u8,
    /// Its name, for logs and `show fib` (`bird`), or the number when it has none.
    pub name: String,
    /// How long after the selection deferral its routes that bgpd has not replaced
    /// stay (`--take-over-hold`, default [`DEFAULT_HOLD`]).
    pub hold: Duration,
}

/// The default [`TakeOver::hold`]: 120 s, Calico's default `maxRestartTime` and BIRD's
/// default graceful restart time, so as long as a helper keeps the routes of a peer
/// that restarts.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(120);

/// iproute2's own names (`ip route` knows them without `/etc/iproute2/rt_protos`).
const BUILT_IN: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

/// Where iproute2 keeps protocol names.
pub const RT_PROTOS: &str = "/etc/iproute2/rt_protos";

/// The `NUMBER NAME` lines of an `rt_protos` file (comments and junk skipped).
fn read_table(text: &str) -> Vec<(u8, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("");
            let mut words = l.split_whitespace();
            let number = words.next()?.parse::<u8>().ok()?;
            Some((number, words.next()?.to_string()))
        })
        .collect()
}

/// Reads `--take-over`'s value: a number (0 to 255) or a name from `rt_protos` (the file's
/// text, if there is one; iproute2's built-in names otherwise, `bird` among them).
/// Protocols 0 to 4 (the kernel's own, `static` among them) and bgpd's own (186) are
/// refused.
pub fn parse(value: &str, rt_protos: Option<&str>) -> Result<TakeOver, String> {
    let mut table: Vec<(u8, String)> = rt_protos.map(read_table).unwrap_or_default();
    table.extend(BUILT_IN.iter().map(|(n, s)| (*n, (*s).to_string())));
    let protocol = match value.parse::<u8>() {
        Ok(n) => n,
        Err(_) if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() => {
            return Err(format!("--take-over {value}: a protocol number is 0 to 255"))
        }
        Err(_) => match table.iter().find(|(_, name)| name == value) {
            Some((n, _)) => *n,
            None => {
                return Err(format!(
                    "--take-over {value}: no routing protocol of that name (neither in {RT_PROTOS} nor among \
                     iproute2's names such as bird); give its number instead"
                ))
            }
        },
    };
    if protocol <= 4 {
        return Err(format!(
            "--take-over {value}: protocol {protocol} is the kernel's own (0 to 4: kernel, boot, static, …), \
             not a speaker's"
        ));
    }
    if protocol == fib::RTPROT_BGP {
        return Err(format!("--take-over {value}: protocol {protocol} is bgpd's own"));
    }
    let name = table.iter().find(|(n, _)| *n == protocol).map_or_else(|| protocol.to_string(), |(_, s)| s.clone());
    Ok(TakeOver { protocol, name, hold: DEFAULT_HOLD })
}

/// [`parse`] with the system's `rt_protos`, if it has one.
pub fn parse_with_system_names(value: &str) -> Result<TakeOver, String> {
    let text = std::fs::read_to_string(Path::new(RT_PROTOS)).ok();
    parse(value, text.as_deref())
}

/// Adjusts the start's assessment to the `found` routes of the predecessor in `table`:
/// some, on a start that is not a restart already, make it one that claims forwarding
/// state; a restart stays as the marker says (a crash loop still claims nothing).
pub fn assess(assessed: &mut Assessment, take: &TakeOver, table: u32, found: usize) {
    let what = format!("protocol {} ({})", take.name, take.protocol);
    if found == 0 {
        assessed.why.push_str(&format!("; no routes of {what} in table {table}: nothing to take over"));
    } else if !assessed.restart.restarting {
        assessed.restart = Restart { restarting: true, forwarding: true };
        assessed.why = format!(
            "taking over {found} routes of {what} in table {table}: a restart that claims forwarding state \
             (they forward until the selection deferral ends and bgpd's routes for their prefixes are in, \
             then they are removed)"
        );
    } else {
        assessed.why.push_str(&format!(
            "; {found} routes of {what} in table {table} are removed as bgpd's routes replace them after the \
             selection deferral"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_refusals() {
        let t = |protocol, name: &str| Ok(TakeOver { protocol, name: name.into(), hold: DEFAULT_HOLD });
        assert_eq!(parse("bird", None), t(12, "bird"));
        assert_eq!(parse("12", None), t(12, "bird"));
        assert_eq!(parse("201", None), t(201, "201"));
        let file = "# local\n201\tcalico-bird  # ours\nnonsense line\n300 toolarge\n";
        assert_eq!(parse("calico-bird", Some(file)), t(201, "calico-bird"));
        assert_eq!(parse("201", Some(file)).unwrap().name, "calico-bird");
        let e = parse("quagga", Some(file)).unwrap_err();
        assert!(e.contains("quagga") && e.contains("rt_protos"), "{e}");
        assert!(parse("static", None).unwrap_err().contains("kernel's own"));
        assert!(parse("3", None).unwrap_err().contains("kernel's own"));
        assert!(parse("bgp", None).unwrap_err().contains("bgpd's own"));
        assert!(parse("256", None).unwrap_err().contains("0 to 255"));
    }

    fn clean() -> Assessment {
        Assessment {
            restart: Restart::default(),
            quick_restarts: 0,
            why: "no restart marker: a clean start".into(),
            bfd: vec![],
        }
    }

    #[test]
    fn routes_of_the_predecessor_make_a_start_a_restart_with_forwarding_state() {
        let bird = TakeOver { protocol: 12, name: "bird".into(), hold: DEFAULT_HOLD };
        let mut a = clean();
        assess(&mut a, &bird, 254, 0);
        assert_eq!(a.restart, Restart::default(), "nothing to take over: a normal start");
        assert!(a.why.contains("nothing to take over"), "{}", a.why);

        let mut a = clean();
        assess(&mut a, &bird, 254, 7);
        assert_eq!(a.restart, Restart { restarting: true, forwarding: true });
        assert!(a.why.contains("taking over 7 routes of protocol bird (12)"), "{}", a.why);

        // bgpd's own marker governs a restart, crash-loop guard included.
        let mut a = Assessment { restart: Restart { restarting: true, forwarding: false }, ..clean() };
        assess(&mut a, &bird, 254, 7);
        assert_eq!(a.restart, Restart { restarting: true, forwarding: false });
        assert!(a.why.contains("7 routes"), "{}", a.why);
    }
}
