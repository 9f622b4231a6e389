//! Codec benchmark: decode and re-encode every UPDATE of an MRT capture
//! with bgpd-proto, next to bgpkit-parser parsing the same messages in the
//! same run.
//!
//! `cargo run --release -p conformance --bin bench -- codec [--file F] [--rounds N]`
//!
//! Both contenders get the same input: every BGP UPDATE of the file, already
//! decompressed and cut out of its MRT record (MRT framing is not timed).
//! Each round times each contender once, in turn; the report gives the
//! median round. Single-threaded, so the rates are per core.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bgpd_proto::mrt::{Entry, Records};
use bgpd_proto::wire::Message;
use bgpd_proto::WireContext;
use bytes::{Bytes, BytesMut};
use stats_alloc::{Region, INSTRUMENTED_SYSTEM};

use super::args::Flags;

struct Input {
    /// The whole decompressed file, so each message is a cheap slice of it.
    data: Bytes,
    /// Offset and length of each UPDATE in `data`, with its wire context.
    updates: Vec<(usize, usize, WireContext)>,
}

fn default_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mrt/updates.et-header.2015.gz")
}

fn load(path: &PathBuf) -> Result<Input, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut data = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut data)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        data = raw;
    }
    let base = data.as_ptr() as usize;
    let mut updates = Vec::new();
    for rec in Records::new(&data) {
        let rec = rec.map_err(|e| e.to_string())?;
        if let Ok(Entry::Message(m)) = rec.entry() {
            if m.message.get(18) == Some(&2) {
                updates.push((m.message.as_ptr() as usize - base, m.message.len(), m.context));
            }
        }
    }
    Ok(Input { data: Bytes::from(data), updates })
}

#[derive(Clone, Copy)]
struct Round {
    secs: f64,
    prefixes: u64,
    alloc_bytes: u64,
}

fn bgpd_decode(input: &Input) -> Round {
    let region = Region::new(&INSTRUMENTED_SYSTEM);
    let t = Instant::now();
    let mut prefixes = 0u64;
    for (off, len, ctx) in &input.updates {
        if let Ok(Some(f)) = Message::decode(&input.data[*off..*off + *len], ctx) {
            if let Message::Update(u) = &f.message {
                prefixes += u.announced_count() as u64 + u.withdrawn_count() as u64;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Round { secs, prefixes, alloc_bytes: region.change().bytes_allocated as u64 }
}

fn bgpd_encode(decoded: &[(Message, WireContext)]) -> Round {
    let mut out = BytesMut::with_capacity(8192);
    let region = Region::new(&INSTRUMENTED_SYSTEM);
    let t = Instant::now();
    let mut bytes = 0u64;
    for (m, ctx) in decoded {
        out.clear();
        if m.encode(ctx, &mut out).is_ok() {
            bytes += out.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Round { secs, prefixes: bytes, alloc_bytes: region.change().bytes_allocated as u64 }
}

fn bgpkit_decode(input: &Input) -> Round {
    use bgpkit_parser::models::{AsnLength, BgpMessage};
    let region = Region::new(&INSTRUMENTED_SYSTEM);
    let t = Instant::now();
    let mut prefixes = 0u64;
    for (off, len, ctx) in &input.updates {
        let mut b = input.data.slice(*off..*off + *len);
        let asn = if ctx.four_octet_as { AsnLength::Bits32 } else { AsnLength::Bits16 };
        if let Ok(BgpMessage::Update(u)) = bgpkit_parser::parser::bgp::messages::parse_bgp_message(&mut b, false, &asn)
        {
            let mp = u.attributes.get_reachable_nlri().map_or(0, |n| n.prefixes.len())
                + u.attributes.get_unreachable_nlri().map_or(0, |n| n.prefixes.len());
            prefixes += (u.announced_prefixes.len() + u.withdrawn_prefixes.len() + mp) as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Round { secs, prefixes, alloc_bytes: region.change().bytes_allocated as u64 }
}

fn bgpkit_encode(decoded: &[(bgpkit_parser::models::BgpMessage, bgpkit_parser::models::AsnLength)]) -> Round {
    let region = Region::new(&INSTRUMENTED_SYSTEM);
    let t = Instant::now();
    let mut bytes = 0u64;
    for (m, asn) in decoded {
        bytes += m.encode(*asn).map_or(0, |b| b.len() as u64);
    }
    let secs = t.elapsed().as_secs_f64();
    Round { secs, prefixes: bytes, alloc_bytes: region.change().bytes_allocated as u64 }
}

fn median(mut v: Vec<Round>) -> Round {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

fn report(contender: &str, op: &str, updates: usize, r: Round, unit_prefixes: bool) {
    let per_s = |n: f64| n / r.secs;
    if unit_prefixes {
        println!(
            "contender={contender} op={op} updates={updates} prefixes={} seconds={:.4} updates_per_s={:.0} prefixes_per_s={:.0} alloc_bytes_per_prefix={:.1}",
            r.prefixes,
            r.secs,
            per_s(updates as f64),
            per_s(r.prefixes as f64),
            r.alloc_bytes as f64 / r.prefixes.max(1) as f64
        );
    } else {
        println!(
            "contender={contender} op={op} updates={updates} bytes={} seconds={:.4} updates_per_s={:.0} alloc_bytes_per_update={:.1}",
            r.prefixes,
            r.secs,
            per_s(updates as f64),
            r.alloc_bytes as f64 / updates.max(1) as f64
        );
    }
}

/// Runs the codec benchmark with the arguments after `codec`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut file = default_file();
    let mut rounds = 7usize;
    let mut profile: Option<String> = None;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--file" => file = flags.value()?.into(),
            "--rounds" => rounds = flags.number()?,
            // Runs one contender's decoder only, for a profiler or callgrind.
            "--profile" => profile = Some(flags.value()?.to_string()),
            _ => {
                return Err(format!(
                    "{}; usage: codec [--file F] [--rounds N] [--profile bgpd|bgpkit-parser]",
                    flags.unknown()
                ))
            }
        }
    }
    let rounds = rounds.max(1);
    let input = load(&file)?;
    let n = input.updates.len();
    println!("file={} updates={n} rounds={rounds}", file.display());
    if let Some(who) = profile {
        let decode = match who.as_str() {
            "bgpd" => bgpd_decode,
            "bgpkit-parser" => bgpkit_decode,
            other => return Err(format!("--profile {other:?}: expected bgpd or bgpkit-parser")),
        };
        let r = median((0..rounds).map(|_| decode(&input)).collect());
        report(&who, "decode", n, r, true);
        return Ok(());
    }

    let decoded: Vec<(Message, WireContext)> = input
        .updates
        .iter()
        .filter_map(|(o, l, c)| {
            Message::decode(&input.data[*o..*o + *l], c).ok().flatten().map(|f| (f.message, c.clone()))
        })
        .collect();
    let kit_decoded: Vec<_> = input
        .updates
        .iter()
        .filter_map(|(o, l, c)| {
            let asn = if c.four_octet_as {
                bgpkit_parser::models::AsnLength::Bits32
            } else {
                bgpkit_parser::models::AsnLength::Bits16
            };
            let mut b = input.data.slice(*o..*o + *l);
            bgpkit_parser::parser::bgp::messages::parse_bgp_message(&mut b, false, &asn).ok().map(|m| (m, asn))
        })
        .collect();

    let (mut bd, mut be, mut kd, mut ke) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(300);
    for _ in 0..rounds {
        bd.push(bgpd_decode(&input));
        kd.push(bgpkit_decode(&input));
        be.push(bgpd_encode(&decoded));
        ke.push(bgpkit_encode(&kit_decoded));
        if Instant::now() > deadline {
            break;
        }
    }
    let (bd, kd, be, ke) = (median(bd), median(kd), median(be), median(ke));
    if bd.prefixes != kd.prefixes {
        println!("note: prefix counts differ: bgpd {} vs bgpkit-parser {}", bd.prefixes, kd.prefixes);
    }
    report("bgpd", "decode", n, bd, true);
    report("bgpkit-parser", "decode", n, kd, true);
    report("bgpd", "encode", n, be, false);
    report("bgpkit-parser", "encode", n, ke, false);
    println!("ratio op=decode bgpd_over_bgpkit={:.2}", kd.secs / bd.secs);
    println!("ratio op=encode bgpd_over_bgpkit={:.2}", ke.secs / be.secs);
    Ok(())
}
