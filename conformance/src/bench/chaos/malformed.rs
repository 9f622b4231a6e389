//! Malformed flood: `--flooders` peers (10.77.0.101…, AS 65201…) each write, as fast as the
//! DUT takes them for `--flood-secs`, pairs of UPDATEs: a valid one announcing one of its
//! 64 /24s, then the same prefix in an UPDATE malformed in one RFC 7606 way ([`Class`];
//! flooder `i` sends class `i mod 7`). A flooder whose session is reset connects again
//! (every 200 ms while refused) and goes on. Meanwhile the good tester (10.77.0.11) holds
//! `--routes` /24s, sent and seen complete at the monitor before the flood starts.
//!
//! Measured: the good tester's routes at the monitor (the fewest sampled during the flood
//! and at the end: none may be lost), the sessions of the good tester and the monitor (must
//! stay up), per class the sessions the DUT reset out of those established and how each
//! ended (the NOTIFICATION it sent, or the socket error when the DUT's RST purged the
//! NOTIFICATION before the flooder read it), against what RFC 7606 prescribes
//! (attribute-discard and treat-as-withdraw never reset; session-reset classes reset every
//! session, but a flooder's last one may still be up when the flood ends), the DUT's CPU
//! seconds and peak RSS over the flood.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, Shutdown};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::routeserver::dut::{self, DutKind};
use crate::bench::routeserver::scenario::prefix24;
use crate::bench::routeserver::{DUT_ADDR, INTERRUPTED};
use crate::lab::Ns;

use super::{
    good_load, good_peer, load_good_table, mib, monitor_peer, peer, sampled, Bed, Figures, Options, Speakers, QUIET,
};

/// The most flooders (10.77.0.101 to 10.77.0.200).
pub const MAX_FLOODERS: usize = 100;
/// Prefixes each flooder cycles through.
const PREFIXES_PER_FLOODER: usize = 64;
/// Flooder prefixes are numbered from here (above any good tester's, which take at most 1 M).
const FLOOD_PREFIX_BASE: usize = 1_000_000;
/// How long to wait after the flood for the DUT to settle before the final count.
const SETTLE: Duration = Duration::from_secs(3);

/// Flooder `i`'s address (0-based).
pub fn flooder_addr(i: usize) -> Ipv4Addr {
    // MAX_FLOODERS keeps 101 + i ≤ 200.
    Ipv4Addr::new(10, 77, 0, 101 + i as u8)
}

/// Flooder `i`'s AS.
pub fn flooder_as(i: usize) -> u32 {
    65201 + i as u32
}

/// What RFC 7606 prescribes for a malformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prescribed {
    /// The attribute is dropped, the route kept (§2 "attribute discard").
    AttributeDiscard,
    /// The announced prefixes are withdrawn, the session stays (§2 "treat-as-withdraw").
    TreatAsWithdraw,
    /// NOTIFICATION and session reset (§2 "session reset").
    SessionReset,
}

impl Prescribed {
    fn name(self) -> &'static str {
        match self {
            Prescribed::AttributeDiscard => "attribute-discard",
            Prescribed::TreatAsWithdraw => "treat-as-withdraw",
            Prescribed::SessionReset => "session reset",
        }
    }
}

/// One way of malforming an UPDATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// AGGREGATOR of 6 octets on a 4-octet-AS session (wants 8).
    AggregatorLength,
    /// ORIGIN with the undefined value 7.
    OriginValue,
    /// AS_PATH with a segment of the undefined type 9.
    AsPathSegment,
    /// NEXT_HOP of 5 octets.
    NextHopLength,
    /// ORIGIN (well-known) flagged optional.
    AttributeFlags,
    /// MP_REACH_NLRI for IPv4 unicast whose next-hop length says 3.
    MpReachNextHopLength,
    /// An NLRI prefix of length 33.
    NlriPrefixLength,
}

impl Class {
    /// Every class, in the order flooders take them.
    pub const ALL: [Class; 7] = [
        Class::AggregatorLength,
        Class::OriginValue,
        Class::AsPathSegment,
        Class::NextHopLength,
        Class::AttributeFlags,
        Class::MpReachNextHopLength,
        Class::NlriPrefixLength,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Class::AggregatorLength => "AGGREGATOR length 6",
            Class::OriginValue => "ORIGIN value 7",
            Class::AsPathSegment => "AS_PATH segment type 9",
            Class::NextHopLength => "NEXT_HOP length 5",
            Class::AttributeFlags => "ORIGIN flagged optional",
            Class::MpReachNextHopLength => "MP_REACH next-hop length 3",
            Class::NlriPrefixLength => "NLRI prefix length 33",
        }
    }

    /// The rule and what it prescribes.
    pub fn rule(self) -> (&'static str, Prescribed) {
        match self {
            // RFC 7606 §7.7: a malformed AGGREGATOR is discarded.
            Class::AggregatorLength => ("RFC 7606 §7.7", Prescribed::AttributeDiscard),
            // RFC 7606 §7.1: an undefined ORIGIN value → treat-as-withdraw.
            Class::OriginValue => ("RFC 7606 §7.1", Prescribed::TreatAsWithdraw),
            // RFC 7606 §7.2: a malformed AS_PATH (unrecognized segment type) → treat-as-withdraw.
            Class::AsPathSegment => ("RFC 7606 §7.2", Prescribed::TreatAsWithdraw),
            // RFC 7606 §7.3: a NEXT_HOP length other than 4 → treat-as-withdraw.
            Class::NextHopLength => ("RFC 7606 §7.3", Prescribed::TreatAsWithdraw),
            // RFC 7606 §3 (c): Optional/Transitive bits in conflict → treat-as-withdraw.
            Class::AttributeFlags => ("RFC 7606 §3 (c)", Prescribed::TreatAsWithdraw),
            // RFC 7606 §7.11: an inconsistent next-hop length hides the NLRI → session reset
            // (or AFI/SAFI disable).
            Class::MpReachNextHopLength => ("RFC 7606 §7.11", Prescribed::SessionReset),
            // RFC 7606 §5.3: an NLRI field syntax error → session reset (or AFI/SAFI disable).
            Class::NlriPrefixLength => ("RFC 7606 §5.3", Prescribed::SessionReset),
        }
    }

    /// The malformed UPDATE announcing `prefix` from `asn` with next hop `nh`.
    pub fn update(self, asn: u32, nh: Ipv4Addr, prefix: [u8; 3]) -> Vec<u8> {
        let origin = attr(0x40, 1, &[0]);
        let path = attr(0x40, 2, &as_path(2, asn));
        let next_hop = attr(0x40, 3, &nh.octets());
        let nlri = [24, prefix[0], prefix[1], prefix[2]];
        let cat = |parts: &[&[u8]]| parts.concat();
        match self {
            Class::AggregatorLength => {
                let mut agg = (asn as u16).to_be_bytes().to_vec();
                agg.extend_from_slice(&nh.octets());
                update(&cat(&[&origin, &path, &next_hop, &attr(0xC0, 7, &agg)]), &nlri)
            }
            Class::OriginValue => update(&cat(&[&attr(0x40, 1, &[7]), &path, &next_hop]), &nlri),
            Class::AsPathSegment => update(&cat(&[&origin, &attr(0x40, 2, &as_path(9, asn)), &next_hop]), &nlri),
            Class::NextHopLength => {
                let mut nh5 = nh.octets().to_vec();
                nh5.push(0);
                update(&cat(&[&origin, &path, &attr(0x40, 3, &nh5)]), &nlri)
            }
            Class::AttributeFlags => update(&cat(&[&attr(0xC0, 1, &[0]), &path, &next_hop]), &nlri),
            Class::MpReachNextHopLength => {
                let o = nh.octets();
                let mp = [&[0, 1, 1, 3, o[0], o[1], o[2], 0][..], &nlri[..]].concat();
                update(&cat(&[&origin, &path, &attr(0x80, 14, &mp)]), &[])
            }
            Class::NlriPrefixLength => update(&cat(&[&origin, &path, &next_hop]), &[33, 10, 0, 0, 0, 0]),
        }
    }
}

/// A valid UPDATE announcing `prefix` from `asn` with next hop `nh` (4-octet AS session).
pub fn valid_update(asn: u32, nh: Ipv4Addr, prefix: [u8; 3]) -> Vec<u8> {
    let attrs = [attr(0x40, 1, &[0]), attr(0x40, 2, &as_path(2, asn)), attr(0x40, 3, &nh.octets())].concat();
    update(&attrs, &[24, prefix[0], prefix[1], prefix[2]])
}

/// An AS_PATH of one segment of `seg_type` holding `asn` (4 octets).
fn as_path(seg_type: u8, asn: u32) -> Vec<u8> {
    [&[seg_type, 1][..], &asn.to_be_bytes()[..]].concat()
}

/// A path attribute with a one-octet length (`data` is short).
fn attr(flags: u8, code: u8, data: &[u8]) -> Vec<u8> {
    [&[flags, code, data.len() as u8][..], data].concat()
}

/// An UPDATE message (RFC 4271 §4.3) with no withdrawals.
fn update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let len = 19 + 2 + 2 + attrs.len() + nlri.len();
    let mut m = vec![0xFF; 16];
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(attrs);
    m.extend_from_slice(nlri);
    m
}

/// The first three octets of flooder `i`'s prefix `k`.
fn flood_prefix(i: usize, k: usize) -> [u8; 3] {
    let o = prefix24(FLOOD_PREFIX_BASE + i * PREFIXES_PER_FLOODER + k).addr().octets();
    [o[0], o[1], o[2]]
}

/// Flooder `i`'s bytes: (valid, malformed) pairs over its prefixes, repeated to about 64 KiB.
fn flood_chunk(i: usize, class: Class) -> (Vec<u8>, u64) {
    let (asn, nh) = (flooder_as(i), flooder_addr(i));
    let mut one = Vec::new();
    for k in 0..PREFIXES_PER_FLOODER {
        one.extend(valid_update(asn, nh, flood_prefix(i, k)));
        one.extend(class.update(asn, nh, flood_prefix(i, k)));
    }
    let reps = (64 * 1024 / one.len()).max(1);
    (one.repeat(reps), (reps * PREFIXES_PER_FLOODER) as u64)
}

/// What one flooder did.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Sessions it established.
    pub sessions: u64,
    /// Sessions the DUT ended before the flood did, by how they ended: `NOTIFICATION c/s`,
    /// or closed without one (and what the socket said).
    pub resets: BTreeMap<String, u64>,
    /// Sessions still up when the flood ended.
    pub open_at_end: u64,
    /// Connection or OPEN exchange attempts that failed (refused while the DUT waits).
    pub failed_attempts: u64,
    /// (valid, malformed) pairs written whole.
    pub pairs: u64,
}

impl FloodReport {
    /// Sessions the DUT ended.
    pub fn reset_count(&self) -> u64 {
        self.resets.values().sum()
    }
}

fn flooder(ns: &Ns, i: usize, class: Class, end: Instant) -> FloodReport {
    let (addr, asn) = (flooder_addr(i), flooder_as(i));
    let (chunk, pairs_per_chunk) = flood_chunk(i, class);
    let mut r = FloodReport::default();
    let go = || Instant::now() < end && !INTERRUPTED.load(Ordering::Relaxed);
    while go() {
        let attempt = peer::connect_from(ns, addr, DUT_ADDR, Duration::from_secs(1)).and_then(|mut s| {
            let deadline = end.min(Instant::now() + Duration::from_secs(5));
            peer::handshake(&mut s, asn, addr, deadline).map(|()| s)
        });
        let mut stream = match attempt {
            Ok(s) => s,
            Err(_) => {
                r.failed_attempts += 1;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        r.sessions += 1;
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = stream.try_clone().ok().map(|mut rs| {
            let (closed, stop) = (closed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut scan = peer::Scanner::default();
                let mut buf = vec![0u8; 64 * 1024];
                let mut why = None;
                while !stop.load(Ordering::Relaxed) {
                    match rs.read(&mut buf) {
                        Ok(0) => {
                            why = Some("EOF".to_string());
                            break;
                        }
                        Ok(n) => scan.feed(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            why = Some(format!("read: {e}"));
                            break;
                        }
                    }
                }
                closed.store(true, Ordering::Relaxed);
                (scan.notification, why)
            })
        });
        let mut write_error = None;
        while go() && !closed.load(Ordering::Relaxed) {
            match peer::write_while(&mut stream, &chunk, || go() && !closed.load(Ordering::Relaxed)) {
                Ok(true) => r.pairs += pairs_per_chunk,
                Ok(false) => break,
                Err(e) => {
                    write_error = Some(format!("write: {e}"));
                    // Give the reader a moment to see the DUT's NOTIFICATION and the close.
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
            }
        }
        let dut_closed = (closed.load(Ordering::Relaxed) || write_error.is_some()) && Instant::now() < end;
        stop.store(true, Ordering::Relaxed);
        let _ = stream.shutdown(Shutdown::Both);
        let (notification, why) = reader.and_then(|h| h.join().ok()).unwrap_or((None, None));
        if dut_closed {
            let how = match notification {
                Some((c, s)) => format!("NOTIFICATION {c}/{s}"),
                None => format!("closed without NOTIFICATION ({})", write_error.or(why).unwrap_or_else(|| "?".into())),
            };
            *r.resets.entry(how).or_default() += 1;
        } else {
            r.open_at_end += 1;
        }
    }
    r
}

/// Runs the scenario against `kind`.
pub fn run(kind: DutKind, bgpd: Option<&Path>, o: &Options) -> Result<Figures, String> {
    let load = good_load(o.routes, (o.routes / 1000).max(1))?;
    let n = o.flooders.min(MAX_FLOODERS);
    let mut peers = vec![good_peer(), monitor_peer()];
    peers.extend((0..n).map(|i| dut::Peer { name: format!("f{}", i + 1), addr: flooder_addr(i), asn: flooder_as(i) }));
    let flood = Duration::from_secs(o.flood_secs);
    let bed = Bed::new("malformed", kind, &peers, &[], bgpd, flood + Duration::from_secs(120))?;
    let speakers = Speakers::connect(&bed, &load)?;
    std::thread::sleep(QUIET);
    let control = &bed.control;
    let loaded = load_good_table(control, o.routes)?;
    let dut = bed.dut()?;
    let cpu_before = dut.cpu_seconds()?;
    let (rss_before, _) = dut.memory_kib()?;
    let ns = &bed.peers_ns;
    let (reports, samples) = sampled(dut, control, || {
        let end = Instant::now() + flood;
        std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..n).map(|i| s.spawn(move || flooder(ns, i, Class::ALL[i % Class::ALL.len()], end))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or_default()).collect::<Vec<FloodReport>>()
        })
    });
    let cpu = dut.cpu_seconds()? - cpu_before;
    let (_, hwm) = dut.memory_kib()?;
    std::thread::sleep(SETTLE);
    let held = control.progress.load(Ordering::Relaxed);
    let speaker_error = bed.speaker_error();
    let alive = bed.alive();
    speakers.finish(control);

    let mut f = Figures::default();
    f.num("flooders", n as f64, 0);
    f.num("good routes", o.routes as f64, 0);
    f.num("seconds until the monitor held them (before the flood)", loaded, 3);
    let pairs: u64 = reports.iter().map(|r| r.pairs).sum();
    f.num("UPDATEs written by the flooders (valid + malformed)", (2 * pairs) as f64, 0);
    f.num("UPDATEs/s written", (2 * pairs) as f64 / flood.as_secs_f64(), 0);
    f.num("good routes at the monitor: fewest during the flood", samples.min_progress.min(held) as f64, 0);
    f.num(format!("good routes at the monitor {} s after", SETTLE.as_secs()), held as f64, 0);
    f.text("good tester and monitor sessions", speaker_error.unwrap_or_else(|| "up throughout".into()));
    for class in Class::ALL {
        let rs: Vec<&FloodReport> = reports
            .iter()
            .enumerate()
            .filter(|(i, _)| Class::ALL[i % Class::ALL.len()] == class)
            .map(|(_, r)| r)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let sessions = rs.iter().map(|r| r.sessions).sum::<u64>();
        let resets = rs.iter().map(|r| r.reset_count()).sum::<u64>();
        let open = rs.iter().map(|r| r.open_at_end).sum::<u64>();
        let mut how: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, n) in rs.iter().flat_map(|r| r.resets.iter()) {
            *how.entry(k.as_str()).or_default() += n;
        }
        let how: Vec<String> = how.iter().map(|(k, n)| format!("{n}× {k}")).collect();
        let (rule, want) = class.rule();
        let ok = match want {
            // A flooder's last session may still be up when the flood ends: the DUT had
            // not read its first malformed UPDATE yet.
            // Whether the NOTIFICATION is seen is not part of the verdict: when the DUT's
            // RST (to the flooder's writes after its close) arrives before the flooder read
            // the NOTIFICATION, the kernel drops the unread bytes.
            Prescribed::SessionReset => resets > 0 && open <= rs.len() as u64,
            _ => resets == 0,
        };
        f.text(
            format!("{} ({rule}: {}): sessions reset / established", class.name(), want.name()),
            format!(
                "{resets} / {sessions}{}{}{}",
                if how.is_empty() { String::new() } else { format!(" ({})", how.join(", ")) },
                if open > 0 && want == Prescribed::SessionReset {
                    format!(", {open} still up at the end")
                } else {
                    String::new()
                },
                if ok { ": as prescribed" } else { ": **not as prescribed**" }
            ),
        );
    }
    f.num(
        "failed connection attempts (refused while the DUT waits)",
        reports.iter().map(|r| r.failed_attempts).sum::<u64>() as f64,
        0,
    );
    f.num("DUT CPU s over the flood", cpu, 2);
    f.num("DUT CPU-s/s over the flood", cpu / flood.as_secs_f64(), 2);
    f.num("DUT RSS before the flood, MiB", mib(rss_before), 1);
    f.num("DUT peak RSS (VmHWM), MiB", mib(hwm.max(samples.peak_rss_kib)), 1);
    f.text("DUT process", if alive { "running" } else { "exited" });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgpd_proto::error::ErrorAction;
    use bgpd_proto::wire::Message;
    use bgpd_proto::WireContext;

    /// Cross-checks the crafted bytes with `bgpd_proto`'s decoder: each class is the
    /// malformation it claims to be (the DUT's verdict is what the bench measures).
    #[test]
    fn every_class_is_the_malformation_it_names() {
        let ctx = WireContext::new(true);
        let nh = Ipv4Addr::new(10, 77, 0, 101);
        let valid = valid_update(65201, nh, [31, 0, 0]);
        let ok = Message::decode(&valid, &ctx).unwrap().unwrap();
        assert!(ok.issues.is_empty(), "{:?}", ok.issues);
        for class in Class::ALL {
            let bytes = class.update(65201, nh, [31, 0, 0]);
            let got = Message::decode(&bytes, &ctx);
            match class.rule().1 {
                Prescribed::SessionReset => assert!(got.is_err(), "{class:?}: {got:?}"),
                Prescribed::TreatAsWithdraw => {
                    let f = got.unwrap().unwrap();
                    assert!(f.issues.iter().any(|i| i.action == ErrorAction::TreatAsWithdraw), "{class:?}: {f:?}");
                }
                Prescribed::AttributeDiscard => {
                    let f = got.unwrap().unwrap();
                    assert!(f.issues.iter().all(|i| i.action == ErrorAction::AttributeDiscard), "{class:?}");
                    assert_eq!(f.issues.len(), 1, "{class:?}");
                }
            }
        }
    }

    #[test]
    fn flooders_have_their_own_addresses_and_prefixes() {
        assert_eq!(flooder_addr(MAX_FLOODERS - 1), Ipv4Addr::new(10, 77, 0, 200));
        assert_ne!(flood_prefix(0, PREFIXES_PER_FLOODER - 1), flood_prefix(1, 0));
        let (chunk, pairs) = flood_chunk(3, Class::OriginValue);
        assert!(chunk.len() >= 32 * 1024 && pairs % PREFIXES_PER_FLOODER as u64 == 0);
    }
}
