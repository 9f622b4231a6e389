//! `bgpd decode-mrt`: decode an MRT file with the project's codec and count
//! what it holds, as `bgpdump -m` would (one A/W per NLRI, one B per RIB entry).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use bgpd_proto::error::ErrorClass;
use bgpd_proto::mrt::{self, Entry, Records};
use bgpd_proto::wire::{decode_path_attributes, encode_path_attributes, Attr, Message, PathAttribute, Update};
use bgpd_proto::WireContext;
use serde_json::json;

/// What a file held.
#[derive(Debug, Default)]
pub struct Stats {
    /// MRT records read.
    pub records: u64,
    /// MRT records that could not be interpreted.
    pub mrt_errors: u64,
    /// BGP messages by type name.
    pub messages: BTreeMap<String, u64>,
    /// UPDATE messages.
    pub updates: u64,
    /// Announced NLRI (IPv4 field + MP_REACH_NLRI), each counted once.
    pub announced: u64,
    /// Withdrawn NLRI (IPv4 field + MP_UNREACH_NLRI), each counted once.
    pub withdrawn: u64,
    /// End-of-RIB markers.
    pub end_of_rib: u64,
    /// TABLE_DUMP / TABLE_DUMP_V2 RIB entries.
    pub rib_entries: u64,
    /// Distinct attribute sets (announcing UPDATEs and RIB entries).
    attribute_sets: HashSet<Vec<PathAttribute>>,
    /// Errors by RFC 7606 class (an UPDATE or RIB entry counts once per class).
    pub errors: BTreeMap<ErrorClass, u64>,
    /// Values that decode → encode → decode did not reproduce.
    pub roundtrip_mismatches: u64,
    /// BGP4MP state changes.
    pub state_changes: u64,
}

impl Stats {
    /// The number of distinct attribute sets seen.
    pub fn attribute_sets(&self) -> usize {
        self.attribute_sets.len()
    }

    fn count_error(&mut self, class: ErrorClass) {
        *self.errors.entry(class).or_default() += 1;
    }

    fn count_issues(&mut self, issues: &[bgpd_proto::UpdateIssue]) {
        let mut classes: Vec<ErrorClass> = issues.iter().map(|i| i.action.into()).collect();
        classes.sort();
        classes.dedup();
        for c in classes {
            self.count_error(c);
        }
    }

    /// Records the attribute set of an announcement, without its NLRI.
    fn add_attribute_set(&mut self, attrs: &[PathAttribute]) {
        let set: Vec<PathAttribute> = attrs
            .iter()
            .filter(|a| !matches!(a.value, Attr::MpUnreach(_)))
            .map(|a| match &a.value {
                Attr::MpReach(r) => {
                    let mut r = r.clone();
                    r.nlri = match r.nlri {
                        bgpd_proto::wire::MpNlri::V4(_) => bgpd_proto::wire::MpNlri::V4(Vec::new()),
                        bgpd_proto::wire::MpNlri::V6(_) => bgpd_proto::wire::MpNlri::V6(Vec::new()),
                        bgpd_proto::wire::MpNlri::Other(_) => bgpd_proto::wire::MpNlri::Other(Vec::new()),
                    };
                    PathAttribute { flags: a.flags, value: Attr::MpReach(r) }
                }
                _ => a.clone(),
            })
            .collect();
        self.attribute_sets.insert(set);
    }

    /// Decodes one BGP message and counts it.
    fn message(&mut self, bytes: &[u8], ctx: &WireContext) {
        match Message::decode(bytes, ctx) {
            Ok(Some(frame)) => {
                let name = frame.message.kind().to_string();
                *self.messages.entry(name).or_default() += 1;
                if let Message::Update(u) = &frame.message {
                    self.update(u, ctx);
                    self.count_issues(&frame.issues);
                }
            }
            Ok(None) => {
                *self.messages.entry("truncated".into()).or_default() += 1;
                self.mrt_errors += 1;
            }
            Err(_) => self.decode_error(bytes, ctx),
        }
    }

    /// A message that resets the session. For an UPDATE, the IPv4 prefixes
    /// that can be located before the error are still counted, as
    /// `bgpdump -m` prints them.
    fn decode_error(&mut self, bytes: &[u8], ctx: &WireContext) {
        let kind = bytes.get(18).map_or("truncated".to_string(), |t| bgpd_proto::MessageType(*t).to_string());
        *self.messages.entry(kind).or_default() += 1;
        if bytes.get(18) == Some(&2) {
            self.updates += 1;
            let (w, a) = salvage_ipv4_nlri(
                bytes.get(19..).unwrap_or_default(),
                ctx.add_path.contains(bgpd_proto::Family::IPV4_UNICAST),
            );
            self.withdrawn += w;
            self.announced += a;
        }
        self.count_error(ErrorClass::SessionReset);
    }

    fn update(&mut self, u: &Update, ctx: &WireContext) {
        self.updates += 1;
        self.announced += u.announced_count() as u64;
        self.withdrawn += u.withdrawn_count() as u64;
        if u.end_of_rib_family().is_some() {
            self.end_of_rib += 1;
        }
        if u.announced_count() > 0 {
            self.add_attribute_set(&u.attributes);
        }
        let again = Message::Update(u.clone())
            .to_bytes(ctx)
            .ok()
            .and_then(|b| Message::decode(&b, ctx).ok().flatten())
            .map(|f| f.message);
        if again.as_ref() != Some(&Message::Update(u.clone())) {
            self.roundtrip_mismatches += 1;
        }
    }

    fn rib(&mut self, family: bgpd_proto::Family, four_octet_as: bool, attributes: &[u8]) {
        self.rib_entries += 1;
        let ctx = mrt::rib_context(family, four_octet_as);
        match decode_path_attributes(attributes, &ctx) {
            Ok((attrs, issues)) => {
                self.count_issues(&issues);
                let mut buf = Vec::new();
                let same = encode_path_attributes(&attrs, &ctx, &mut buf).is_ok()
                    && decode_path_attributes(&buf, &ctx).map(|(a, _)| a == attrs).unwrap_or(false);
                if !same {
                    self.roundtrip_mismatches += 1;
                }
                self.add_attribute_set(&attrs);
            }
            Err(_) => self.count_error(ErrorClass::SessionReset),
        }
    }

    /// Reads every record of an uncompressed MRT stream.
    pub fn read(&mut self, data: &[u8]) {
        for rec in Records::new(data) {
            let rec = match rec {
                Ok(r) => r,
                Err(_) => {
                    self.mrt_errors += 1;
                    break;
                }
            };
            self.records += 1;
            match rec.entry() {
                Ok(Entry::Message(m)) => self.message(m.message, &m.context),
                Ok(Entry::StateChange { .. }) => self.state_changes += 1,
                Ok(Entry::Rib { family, four_octet_as, entries, .. }) => {
                    for e in &entries {
                        self.rib(family, four_octet_as, e.attributes);
                    }
                }
                Ok(Entry::PeerIndex(_)) | Ok(Entry::Other) => {}
                Err(_) => self.mrt_errors += 1,
            }
        }
    }

    /// The `--json` object.
    pub fn to_json(&self) -> serde_json::Value {
        let errors: BTreeMap<&str, u64> = [
            ("session_reset", ErrorClass::SessionReset),
            ("treat_as_withdraw", ErrorClass::TreatAsWithdraw),
            ("attribute_discard", ErrorClass::AttributeDiscard),
        ]
        .into_iter()
        .map(|(k, c)| (k, self.errors.get(&c).copied().unwrap_or(0)))
        .collect();
        json!({
            "records": self.records,
            "mrt_errors": self.mrt_errors,
            "messages": self.messages,
            "updates": self.updates,
            "announced": self.announced,
            "withdrawn": self.withdrawn,
            "end_of_rib": self.end_of_rib,
            "rib_entries": self.rib_entries,
            "attribute_sets": self.attribute_sets(),
            "state_changes": self.state_changes,
            "errors": errors,
            "roundtrip_mismatches": self.roundtrip_mismatches,
        })
    }
}

/// Counts the prefixes of the Withdrawn Routes and NLRI fields of an UPDATE
/// body that decode before the first error in each field.
fn salvage_ipv4_nlri(body: &[u8], add_path: bool) -> (u64, u64) {
    let count = |field: &[u8]| {
        let mut v: Vec<bgpd_proto::Nlri<ipnet::Ipv4Net>> = Vec::new();
        let _ = bgpd_proto::nlri::decode_nlri(field, add_path, &mut v);
        v.len() as u64
    };
    let Some(wlen) = body.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return (0, 0) };
    let wfield = body.get(2..(2 + wlen).min(body.len())).unwrap_or_default();
    let withdrawn = count(wfield);
    let rest = body.get(2 + wlen..).unwrap_or_default();
    let Some(alen) = rest.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return (withdrawn, 0);
    };
    let announced = rest.get(2 + alen..).map_or(0, count);
    (withdrawn, announced)
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Runs `bgpd decode-mrt`.
pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let data = read_file(path)?;
    let mut stats = Stats::default();
    stats.read(&data);
    if json {
        println!("{}", stats.to_json());
    } else {
        print_table(path, &stats);
    }
    Ok(())
}

fn print_table(path: &Path, s: &Stats) {
    println!("file                  {}", path.display());
    println!("records               {}", s.records);
    for (k, v) in &s.messages {
        println!("messages {k:<13} {v}");
    }
    println!("updates               {}", s.updates);
    println!("announced             {}", s.announced);
    println!("withdrawn             {}", s.withdrawn);
    println!("end_of_rib            {}", s.end_of_rib);
    println!("rib_entries           {}", s.rib_entries);
    println!("attribute_sets        {}", s.attribute_sets());
    println!("state_changes         {}", s.state_changes);
    for (k, v) in &s.errors {
        println!("errors {:<15} {v}", format!("{k:?}"));
    }
    println!("roundtrip_mismatches  {}", s.roundtrip_mismatches);
    println!("mrt_errors            {}", s.mrt_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TABLE_DUMP_V2 RIB_IPV6_UNICAST record (RFC 6396 §4.3.2, no ADD-PATH)
    /// for 2001:db8::/32 with one entry per attribute field in `entries`.
    fn rib_ipv6_unicast(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 7, 32, 0x20, 0x01, 0x0d, 0xb8];
        body.extend_from_slice(&(entries.len() as u16).to_be_bytes());
        for (i, attrs) in entries.iter().enumerate() {
            body.extend_from_slice(&(i as u16).to_be_bytes());
            body.extend_from_slice(&1_452_169_448u32.to_be_bytes());
            body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
            body.extend_from_slice(attrs);
        }
        let mut rec = vec![0x56, 0x8f, 0x4a, 0xe8, 0, 13, 0, 4];
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    /// ORIGIN IGP, AS_PATH 65017 65018 (4-octet), MP_REACH_NLRI with `mp` as its value.
    fn attributes(mp: &[u8]) -> Vec<u8> {
        let mut a =
            vec![0x40, 1, 1, 0, 0x40, 2, 10, 2, 2, 0, 0, 0xfd, 0xf9, 0, 0, 0xfd, 0xfa, 0x80, 14, mp.len() as u8];
        a.extend_from_slice(mp);
        a
    }

    #[test]
    fn ipv6_rib_entries_round_trip_with_either_mp_reach_form() {
        let global = [0x20u8, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let link_local = [0xfeu8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        // RFC 6396 §4.3.4: next hop length and next hop only.
        let short = [[16u8].as_slice(), &global].concat();
        // RIPE RIS (Quagga's dump code): the whole attribute, AFI/SAFI and the
        // entry's prefix included, with a global and a link-local next hop.
        let full = [[0u8, 2, 1, 32].as_slice(), &global, &link_local, &[0, 32, 0x20, 0x01, 0x0d, 0xb8]].concat();
        let data = rib_ipv6_unicast(&[attributes(&short), attributes(&full), attributes(&full)]);
        let mut stats = Stats::default();
        stats.read(&data);
        assert_eq!((stats.records, stats.mrt_errors, stats.rib_entries), (1, 0, 3));
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(stats.roundtrip_mismatches, 0);
        assert_eq!(stats.attribute_sets(), 2, "the two next hops make two attribute sets");
    }
}
