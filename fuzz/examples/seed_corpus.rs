//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/TARGET/seed-*`).
//!
//! ```sh
//! cargo run -p bgpd-fuzz --example seed_corpus            # shared data from $BGPD_SHARED_DATA or ../shared/data
//! ```
//!
//! Deterministic: the same repository, shared data and kernel give the same
//! files (except `netlink`, whose seeds are this machine's own link and route
//! dumps). Old `seed-*` files are removed first; `regression-*` files (inputs
//! that once failed) are kept. Where the seeds come from:
//!
//! - BGP messages, path attributes and OPENs: messages and RIB entries cut
//!   out of the shared MRT captures (`mrt/*.gz`: RIPE RIS and RouteViews
//!   dumps, see their README), and the capture vectors of
//!   `bgpd/proto/tests/vectors/` (BIRD, FRR and GoBGP talking to each other);
//! - MRT: the first records and a window from the middle of each capture;
//! - session FSM: scripted sessions that reach Established and carry the
//!   captures' UPDATEs; RIB and BFD: scripted scenarios and seeded random
//!   event sequences (every input decodes to some scenario);
//! - datastore: the repository's `templates/` and the datastore's testdata;
//!   selectors: every selector in those files, plus the grammar's forms;
//!   CNI: the configuration of docs/ipam.md and the tests' variants;
//! - IPAM store: snapshots and journals written by the real allocator and
//!   file store (`ipam`), from the flat-mesh template's pools;
//! - netlink: this machine's link and route dumps, read through the FIB
//!   engine's own dump requests (read-only; any user).

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bgpd_proto::mrt::{Entry, Records};

/// MRT record types (RFC 6396 §4).
const TABLE_DUMP: u16 = 12;
const TABLE_DUMP_V2: u16 = 13;
const BGP4MP: u16 = 16;
const BGP4MP_ET: u16 = 17;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn shared_data() -> PathBuf {
    std::env::var_os("BGPD_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"))
}

struct Corpus {
    dir: PathBuf,
    n: usize,
    seen: BTreeSet<Vec<u8>>,
}

impl Corpus {
    fn new(target: &str) -> Corpus {
        let dir = repo().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for e in std::fs::read_dir(&dir).expect("corpus directory") {
            let p = e.expect("entry").path();
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")) {
                std::fs::remove_file(&p).expect("old seed removed");
            }
        }
        Corpus { dir, n: 0, seen: BTreeSet::new() }
    }

    /// Adds a seed named after what it is (duplicates skipped).
    fn add(&mut self, what: &str, bytes: &[u8]) {
        if !self.seen.insert(bytes.to_vec()) {
            return;
        }
        let what: String = what.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
        std::fs::write(self.dir.join(format!("seed-{:03}-{what}", self.n)), bytes).expect("seed written");
        self.n += 1;
    }
}

impl Drop for Corpus {
    fn drop(&mut self) {
        println!("{}: {} seeds", self.dir.display(), self.n);
    }
}

/// One MRT record, whole, with its type and subtype.
struct RawRecord {
    kind: u16,
    subtype: u16,
    bytes: Vec<u8>,
}

/// The first `limit` bytes of a gzipped MRT capture, cut into records.
fn mrt_records(path: &Path, limit: u64) -> Vec<RawRecord> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut data = Vec::new();
    flate2::read::MultiGzDecoder::new(f).take(limit).read_to_end(&mut data).expect("a gzip capture");
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() >= at + 12 {
        let len = 12 + u32::from_be_bytes(data[at + 8..at + 12].try_into().expect("4 octets")) as usize;
        if data.len() < at + len {
            break;
        }
        let kind = u16::from_be_bytes([data[at + 4], data[at + 5]]);
        let subtype = u16::from_be_bytes([data[at + 6], data[at + 7]]);
        out.push(RawRecord { kind, subtype, bytes: data[at..at + len].to_vec() });
        at += len;
    }
    out
}

fn mrt_files() -> Vec<PathBuf> {
    let dir = shared_data().join("mrt");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set BGPD_SHARED_DATA)", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz"))
        .collect();
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("x").trim_end_matches(".gz").to_string()
}

/// A BGP message of a BGP4MP record and its context flags (the `message`
/// target's first byte: 1 four-octet AS, 2 ADD-PATH).
fn bgp4mp_message(r: &RawRecord) -> Option<(u8, Vec<u8>)> {
    if r.kind != BGP4MP && r.kind != BGP4MP_ET {
        return None;
    }
    let Ok(Entry::Message(m)) = Records::new(&r.bytes).next()?.ok()?.entry() else { return None };
    let flags =
        u8::from(m.context.four_octet_as) | if m.context.add_path == bgpd_proto::FamilySet::EMPTY { 0 } else { 2 };
    Some((flags, m.message.to_vec()))
}

/// The Path Attributes field of an UPDATE message (header included).
fn update_attributes(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(19..)?;
    let wlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let rest = body.get(2 + wlen..)?;
    let alen = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2..2 + alen)
}

/// The capture vectors: (file stem, message bytes).
fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("bgpd/proto/tests/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the capture vectors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a vector");
            let hex: String = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(|l| l.chars())
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            let bytes =
                (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
            (p.file_stem().and_then(|s| s.to_str()).unwrap_or("v").to_string(), bytes)
        })
        .collect()
}

/// Evenly spaced picks of at most `n` items.
fn spread<T>(v: Vec<T>, n: usize) -> Vec<T> {
    let len = v.len();
    if len <= n {
        return v;
    }
    v.into_iter().enumerate().filter(|(i, _)| i * n / len != (i + 1) * n / len).map(|(_, x)| x).collect()
}

fn bgp_seeds() {
    let files = mrt_files();
    let mut messages = Corpus::new("message");
    let mut attributes = Corpus::new("path_attributes");
    let mut opens = Corpus::new("open");
    let mut mrt = Corpus::new("mrt");
    let mut updates_for_fsm = Vec::new();
    for f in &files {
        let name = name_of(f);
        let records = mrt_records(f, 4 << 20);
        // MRT: the first three records and three from the middle.
        let mid = records.len() / 2;
        for (at, what) in [(0, "start"), (mid, "middle")] {
            let window: Vec<u8> = records.iter().skip(at).take(3).flat_map(|r| r.bytes.iter().copied()).collect();
            if window.len() <= 16 * 1024 {
                mrt.add(&format!("{name}-{what}"), &window);
            } else if let Some(r) = records.get(at) {
                mrt.add(&format!("{name}-{what}"), &r.bytes[..r.bytes.len().min(16 * 1024)]);
            }
        }
        // BGP messages of every type, spread over the capture.
        let msgs: Vec<(u8, Vec<u8>)> = records.iter().filter_map(bgp4mp_message).collect();
        for (flags, m) in msgs.iter().filter(|(_, m)| m.get(18) == Some(&1)).take(2) {
            opens.add(&format!("{name}-open"), &m[19..]);
            messages.add(&format!("{name}-open"), &[&[*flags], &m[..]].concat());
        }
        for (flags, m) in spread(msgs.iter().filter(|(_, m)| m.get(18) == Some(&2)).collect(), 6) {
            messages.add(&format!("{name}-update"), &[&[*flags], &m[..]].concat());
            if let Some(a) = update_attributes(m) {
                attributes.add(&format!("{name}-update-attrs"), &[&[*flags], a].concat());
            }
            if m.len() - 19 <= 255 && *flags & 2 == 0 {
                updates_for_fsm.push(m[19..].to_vec());
            }
        }
        // RIB entries' attributes (TABLE_DUMP_V2, TABLE_DUMP).
        let ribs: Vec<(u8, Vec<u8>)> = records
            .iter()
            .filter(|r| r.kind == TABLE_DUMP || (r.kind == TABLE_DUMP_V2 && r.subtype != 1))
            .filter_map(|r| {
                let Ok(Entry::Rib { family, four_octet_as, entries, .. }) =
                    Records::new(&r.bytes).next()?.ok()?.entry()
                else {
                    return None;
                };
                let flags = u8::from(four_octet_as) | if family == bgpd_proto::Family::IPV4_UNICAST { 8 } else { 0 };
                Some((flags, entries.first()?.attributes.to_vec()))
            })
            .collect();
        for (flags, a) in spread(ribs, 5) {
            attributes.add(&format!("{name}-rib-attrs"), &[&[flags], &a[..]].concat());
        }
    }
    // The capture vectors: one of each kind of message per sender and session.
    for (stem, m) in vectors() {
        if m.len() < 19 {
            continue;
        }
        let four_octet = 1;
        let add_path = if stem.contains("addpath") { 2 } else { 0 };
        if m[18] == 1 {
            opens.add(&stem, &m[19..]);
        }
        if messages.n < 70 || m[18] != 2 {
            messages.add(&stem, &[&[four_octet | add_path], &m[..]].concat());
        }
        if m[18] == 2 && attributes.n < 45 {
            if let Some(a) = update_attributes(&m) {
                attributes.add(&format!("{stem}-attrs"), &[&[four_octet | add_path], a].concat());
            }
        }
    }
    drop((messages, attributes, opens, mrt));
    session_seeds(&spread(updates_for_fsm, 12));
}

// ----- session FSM -----

/// Builds `session_fsm` inputs: the event codes are `session.rs`'s.
struct Script(Vec<u8>);

impl Script {
    /// Configuration bytes: 4-octet local AS or not, peer AS choice, hold,
    /// keepalive, passive, DelayOpen, auto restart, ConnectRetry, families,
    /// extended messages, graceful restart.
    fn new(config: &[u8]) -> Script {
        Script(config.to_vec())
    }
    fn op(mut self, code: u8, args: &[u8]) -> Script {
        self.0.push(code);
        self.0.extend_from_slice(args);
        self
    }
    fn start(self) -> Script {
        self.op(0, &[])
    }
    fn connected(self) -> Script {
        self.op(3, &[])
    }
    /// The peer's OPEN: AS ok, id ok, hold choice, families, ext msg, RR, GR, cut, 4-octet kept.
    fn peer_open(self, hold: u8) -> Script {
        self.op(7, &[1, 1, hold, 3, 0, 1, 0, 1, 0])
    }
    fn keepalive(self) -> Script {
        self.op(9, &[])
    }
    fn update(self, body: &[u8]) -> Script {
        let mut args = vec![body.len() as u8];
        args.extend_from_slice(body);
        self.op(10, &args)
    }
    /// Time passes (punctual driver), `ms` × 8.
    fn wait(self, ms8: u16) -> Script {
        let [a, b] = ms8.to_be_bytes();
        self.op(15, &[a, b, 0])
    }
}

fn session_seeds(updates: &[Vec<u8>]) {
    let mut c = Corpus::new("session_fsm");
    // eBGP 65001 → 65002, hold 90, active, no DelayOpen, auto restart.
    let ebgp: &[u8] = &[1, 1, 3, 0, 0, 0, 1, 1, 2, 0, 0];
    let up = |cfg: &[u8]| Script::new(cfg).start().connected().peer_open(6).keepalive();
    c.add("ebgp-established", &up(ebgp).0);
    c.add("ebgp-established-keepalives", &up(ebgp).wait(4000).keepalive().wait(4000).0);
    c.add("ebgp-hold-timer-expires", &up(ebgp).wait(20000).0);
    c.add("ebgp-send-update", &up(ebgp).op(13, &[]).0);
    c.add("ebgp-peer-notification", &up(ebgp).op(11, &[6, 2, 0]).0);
    c.add("ebgp-route-refresh", &up(ebgp).op(12, &[1, 0]).0);
    c.add("ebgp-manual-stop", &up(ebgp).op(2, &[4, b'b', b'y', b'e', b'!']).0);
    c.add("ebgp-connection-lost-and-restart", &up(ebgp).op(5, &[]).wait(2000).connected().0);
    c.add("ebgp-collision-dump", &Script::new(ebgp).start().connected().op(14, &[0]).0);
    c.add("ebgp-bad-hold-time", &Script::new(ebgp).start().connected().peer_open(1).0);
    // iBGP, hold 9, passive, DelayOpen 1 s, graceful restart with the N bit.
    let ibgp: &[u8] = &[0, 0, 2, 2, 1, 2, 1, 0, 2, 1, 1, 1];
    c.add("ibgp-delay-open", &Script::new(ibgp).start().connected().wait(200).peer_open(3).keepalive().0);
    c.add("ibgp-open-during-delay", &Script::new(ibgp).start().connected().peer_open(3).keepalive().wait(2000).0);
    c.add("ibgp-restart-stop", &Script::new(ibgp).start().connected().peer_open(3).keepalive().op(14, &[1]).0);
    for (i, u) in updates.iter().enumerate() {
        c.add(&format!("ebgp-captured-update-{i}"), &up(ebgp).update(u).wait(100).0);
    }
}

// ----- RIB and BFD -----

fn random_inputs(c: &mut Corpus, what: &str, seed: u64, count: usize, len: std::ops::Range<usize>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..count {
        let n = rng.usize(len.clone());
        let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(n).collect();
        c.add(&format!("{what}-{i}"), &bytes);
    }
}

fn rib_seeds() {
    let mut c = Corpus::new("rib");
    // max_paths 4; announcements by every peer, a flush, a graceful down,
    // the peer back, End-of-RIB, a flush (event codes of rib.rs).
    let mut s = vec![1];
    for (peer, prefix, len) in [(0, 0, 1), (1, 0, 1), (2, 0, 2), (0, 4, 2), (1, 4, 1), (2, 1, 3)] {
        s.extend_from_slice(&[peer, 0, prefix, len, 0]);
    }
    s.extend_from_slice(&[0, 13, 0, 11, 1, 0, 13, 0, 11, 0, 12, 0, 13]);
    c.add("ecmp-graceful-restart", &s);
    let mut w = vec![0];
    for (peer, prefix) in [(0, 0), (1, 0), (2, 0)] {
        w.extend_from_slice(&[peer, 0, prefix, 0, 0]);
    }
    w.extend_from_slice(&[0, 13, 0, 7, 0, 1, 7, 0, 2, 7, 0, 0, 13, 1, 10, 0, 0, 15, 3, 0, 13]);
    c.add("withdrawn-everywhere", &w);
    random_inputs(&mut c, "random", 0x7115, 24, 40..400);
}

fn bfd_seeds() {
    let mut c = Corpus::new("bfd");
    // Config: 300 ms / 300 ms, multiplier 3, idle 1 s, active; jitter seed.
    let cfg = [2, 2, 2, 0, 0, 0, 7];
    // A remote packet (event 1): flags (state in the low bits), diag, mult,
    // my discr choice, your discr choice, desired tx, required rx, no mutation.
    let remote = |state: u8, yours: u8| vec![1, state, 0, 2, 1, yours, 0, 200, 0, 200, 1];
    let mut handshake = cfg.to_vec();
    handshake.extend(remote(1, 0)); // Down, Your Discriminator 0
    handshake.extend([4, 0x01, 0x00, 0]); // 256 ms, punctual
    handshake.extend(remote(3, 2)); // Up, our discriminator
    handshake.extend([4, 0x10, 0x00, 0]);
    c.add("handshake-up", &handshake);
    let mut down = handshake.clone();
    down.extend([4, 0x40, 0x00, 0]); // silence: the detection time expires
    c.add("handshake-then-detection-timeout", &down);
    let mut admin = handshake.clone();
    admin.extend(remote(0, 2)); // the remote goes AdminDown
    admin.extend([6, 1, 6, 0]); // we go AdminDown, then back
    c.add("handshake-then-admin-down", &admin);
    let mut poll = handshake;
    poll.extend([7, 0, 4, 2, 0, 0]); // new intervals: a Poll sequence
    poll.extend(remote(0x13, 2)); // Up with Final
    c.add("handshake-then-poll", &poll);
    // Raw packets (event 0): a valid Down packet as BIRD sends it first.
    let p = bgpd_proto::bfd::ControlPacket {
        diag: bgpd_proto::bfd::Diag(0),
        state: bgpd_proto::bfd::State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discr: 0x2222,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    };
    let mut raw = cfg.to_vec();
    raw.extend([0, 24]);
    raw.extend(p.encode());
    c.add("raw-down-packet", &raw);
    random_inputs(&mut c, "random", 0xbfd, 20, 20..300);
}

// ----- datastore, selectors, CNI -----

fn datastore_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["templates", "templates/kubernetes", "bgpd/src/datastore/testdata", "bgpd/src/datastore/testdata/dir"] {
        let dir = repo().join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("a directory of the repository")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
            .collect();
        files.sort();
        v.extend(files);
    }
    v
}

fn datastore_seeds() -> Vec<String> {
    let mut c = Corpus::new("datastore");
    let mut selectors = Vec::new();
    for f in datastore_files() {
        let text = std::fs::read_to_string(&f).expect("a datastore file");
        let cut = (text.len() / 2) as u16;
        c.add(&name_of(&f), &[&cut.to_be_bytes()[..], text.as_bytes()].concat());
        for line in text.lines() {
            let l = line.trim_start().trim_start_matches("- ");
            for key in ["nodeSelector:", "peerSelector:", "namespaceSelector:"] {
                if let Some(v) = l.strip_prefix(key) {
                    let v = v.split(" #").next().unwrap_or("").trim();
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                    let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
                    selectors.push(v.to_string());
                }
            }
        }
    }
    selectors
}

fn selector_seeds(from_files: Vec<String>) {
    let mut c = Corpus::new("selector");
    let grammar = [
        "",
        "all()",
        "global()",
        "has(rack)",
        "!has(route-reflector)",
        "rack == 'r1'",
        "zone != \"a\"",
        "zone in {'a', 'b'}",
        "zone not in {\"a\"}",
        "kubernetes.io/hostname contains 'node'",
        "name starts with 'node-'",
        "name ends with '-1'",
        "has(a) && (b == 'x' || !(c in {'1','2'}))",
        "a == 'x' && b == 'y' && c == 'z' && d == 'w'",
        "((((((((has(x))))))))",
        "!!!has(x)",
        "a == '\"'",
    ];
    for (i, s) in from_files.iter().chain(grammar.iter().map(|s| s.to_string()).collect::<Vec<_>>().iter()).enumerate()
    {
        c.add(&format!("selector-{i}"), s.as_bytes());
    }
}

fn cni_seeds() {
    let mut c = Corpus::new("cni_config");
    // docs/ipam.md's configuration, then the fields it lists as optional.
    let base = r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp","ipam":{"type":"bgpd-ipam","datastore":"file:/etc/bgpd/datastore","nodename":"node-1","ipv4_pools":["default-ipv4-ippool"],"ipv6_pools":[],"assign_ipv4":"true","assign_ipv6":"false"}}"#;
    c.add("docs-ipam", base.as_bytes());
    let with = |extra_ipam: &str, top: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podnet","type":"ptp",{top}"ipam":{{"type":"bgpd-ipam","datastore":"file:/var/lib/bgpd","nodename":"node-1"{extra_ipam}}}}}"#
        )
    };
    c.add("minimal", with("", "").as_bytes());
    c.add("dual-stack", with(r#","assign_ipv6":"true","assign_ipv4":true"#, "").as_bytes());
    c.add("routes", with(r#","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.0.0.0/8","gw":"10.0.0.1"}]"#, "").as_bytes());
    c.add("gateways", with(r#","gateway_ipv4":"10.244.0.1","gateway_ipv6":"fd00::1""#, "").as_bytes());
    c.add("floating-ips", with("", r#""feature_control":{"floating_ips":true},"#).as_bytes());
    c.add("etcd", with("", "").replace("file:/var/lib/bgpd", "etcd:http://127.0.0.1:2379").as_bytes());
    c.add("prev-result", with("", r#""prevResult":{"ips":[{"address":"10.244.0.5/26"}]},"#).as_bytes());
    c.add("old-version", base.replace("1.0.0", "0.3.1").as_bytes());
    c.add("unknown-field", with(r#","subnet":"10.0.0.0/8""#, "").as_bytes());

    let mut a = Corpus::new("cni_args");
    for (i, s) in [
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a=b",
        "",
        ";;",
        "novalue",
        "=empty-key",
        "K=V;K=W",
    ]
    .iter()
    .enumerate()
    {
        a.add(&format!("args-{i}"), s.as_bytes());
    }
}

// ----- IPAM store -----

/// Polls a future that never waits (the file store's) to completion.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The `ipam_store` input for a directory's snapshot and journal.
fn store_input(dir: &Path, flags: u8, cut: u16, strip_checksums: bool) -> Vec<u8> {
    let snapshot = std::fs::read(dir.join("ipam-state.json")).unwrap_or_default();
    let mut journal = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("store directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ipam-journal.")))
        .collect();
    names.sort();
    for p in names {
        journal.extend(std::fs::read(p).expect("journal"));
    }
    if strip_checksums {
        // The harness signs lines without a tab itself.
        let text = String::from_utf8(journal).expect("a JSON journal");
        journal = text
            .lines()
            .map(|l| l.rsplit_once('\t').map_or(l, |(j, _)| j))
            .flat_map(|l| [l, "\n"])
            .collect::<String>()
            .into_bytes();
    }
    let mut v = vec![flags | u8::from(!snapshot.is_empty())];
    v.extend_from_slice(&(snapshot.len() as u16).to_be_bytes());
    v.extend_from_slice(&snapshot);
    v.extend_from_slice(&cut.to_be_bytes());
    v.extend_from_slice(&journal);
    v
}

fn ipam_store_seeds() {
    use ipam::store::file::FileStore;
    use ipam::{Allocator, AssignRequest, Design};
    let mut c = Corpus::new("ipam_store");
    let template = repo().join("templates/flat-mesh.yaml");
    let text = std::fs::read_to_string(&template).expect("the flat-mesh template");
    for (compact, pods) in [(1000, 1), (1000, 3), (1000, 6), (4, 6), (2, 3)] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let design = Design::parse(&[(template.as_path(), text.as_str())]).expect("the template's design");
        let alloc = Allocator::new(FileStore::open(dir.path()).expect("store").with_compact_after(compact), design);
        for i in 0..pods {
            let req = AssignRequest {
                handle: format!("k8s-pod-network.c{i}"),
                node: format!("node-{}", 1 + i % 2),
                namespace: Some("default".into()),
                pod: Some(format!("pod-{i}")),
                num_v4: 1,
                num_v6: (i % 2) as u32,
                ipv4_pools: Vec::new(),
                ipv6_pools: Vec::new(),
                skip_first_address: true,
                attachment: None,
            };
            now(alloc.auto_assign(&req)).expect("an address");
        }
        if pods > 2 {
            now(alloc.release_handle("k8s-pod-network.c1")).expect("released");
        }
        let len = store_input(dir.path(), 0, 0, false).len() as u16;
        c.add(&format!("compact{compact}-pods{pods}"), &store_input(dir.path(), 2, 0, false));
        c.add(&format!("compact{compact}-pods{pods}-unsigned"), &store_input(dir.path(), 0, len / 3, true));
        // A torn tail: the last line cut short.
        let mut torn = store_input(dir.path(), 2, len / 2, false);
        if torn.len() > 40 {
            torn.truncate(torn.len() - 7);
        }
        c.add(&format!("compact{compact}-pods{pods}-torn"), &torn);
    }
}

// ----- netlink -----

fn netlink_seeds() {
    use fib::fuzzing::FuzzEngine;
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
    const PORT: u32 = bgpd_fuzz::NETLINK_PORT;
    let mut c = Corpus::new("netlink");
    let mut sock = Socket::new(NETLINK_ROUTE).expect("a netlink socket");
    sock.bind_auto().expect("bound");
    sock.connect(&SocketAddr::new(0, 0)).expect("connected");
    let mut engine = FuzzEngine::new(&fib::FibConfig::default(), PORT);
    let mut input = vec![0u8]; // batch size 1
    let mut buf = Vec::new();
    let mut dumps = 0;
    while engine.poll_transmit(&mut buf) && dumps < 3 {
        dumps += 1;
        sock.send(&buf, 0).expect("dump request sent");
        'dump: loop {
            let (mut datagram, _) = sock.recv_from_full().expect("dump answer");
            // Answers name our socket's port; the harness's engine has PORT.
            let mut at = 0;
            let mut done = false;
            while datagram.len() >= at + 16 {
                let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 octets")) as usize;
                datagram[at + 12..at + 16].copy_from_slice(&PORT.to_ne_bytes());
                done |= matches!(u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]), 2 | 3);
                if len < 16 {
                    break;
                }
                at += (len + 3) & !3;
            }
            engine.handle_datagram(&datagram);
            // Datagram events: event code 2, no patch, length, bytes (cut to
            // whole messages of at most 8191 bytes).
            for piece in pieces(&datagram, 8191) {
                input.extend_from_slice(&[2, 0, 0]);
                input.extend_from_slice(&(piece.len() as u16).to_be_bytes());
                input.extend_from_slice(piece);
            }
            if done {
                break 'dump;
            }
        }
        c.add(&format!("kernel-dumps-{dumps}"), &input);
    }
    // Desired routes before the dumps end, then the same dumps.
    let mut with_routes = vec![0u8, 0, 0, 3, 0, 0, 0, 4, 0, 1, 4, 2];
    with_routes.extend_from_slice(&input[1..]);
    c.add("routes-then-kernel-dumps", &with_routes);
    let mut overrun = input.clone();
    overrun.extend_from_slice(&[6, 1]);
    overrun.extend_from_slice(&input[1..]);
    c.add("kernel-dumps-overrun-again", &overrun);
}

/// Cuts a datagram into runs of whole messages of at most `max` bytes.
fn pieces(d: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut at) = (0, 0);
    while d.len() >= at + 16 {
        let len = u32::from_ne_bytes(d[at..at + 4].try_into().expect("4 octets")) as usize;
        let next = (at + ((len + 3) & !3)).min(d.len());
        if len < 16 {
            break;
        }
        if next - start > max && at > start {
            out.push(&d[start..at]);
            start = at;
        }
        at = next;
    }
    if start < d.len() {
        out.push(&d[start..d.len().min(start + max)]);
    }
    out
}

fn main() {
    bgp_seeds();
    rib_seeds();
    bfd_seeds();
    let selectors = datastore_seeds();
    selector_seeds(selectors);
    cni_seeds();
    ipam_store_seeds();
    netlink_seeds();
}
