//! IPAM: Calico selectors, the CNI network configuration and `CNI_ARGS`,
//! and the file store's snapshot and journal.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ipam::cni::{parse_cni_args, NetConf};
use ipam::store::any::DatastoreSpec;
use ipam::store::file::{FileStore, STATE_FILE};
use ipam::store::{Expect, Object, Scope, Store, StoreError, Versioned, Write};
use ipam::Selector;

use crate::Input;

/// Label sets a selector is evaluated against.
fn label_sets() -> Vec<BTreeMap<String, String>> {
    let set = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vec![
        set(&[]),
        set(&[("a", "b")]),
        set(&[("rack", "r1"), ("zone", "z-a"), ("kubernetes.io/hostname", "node-1")]),
        set(&[("a", ""), ("b", "a\"b"), ("c", "'")]),
    ]
}

/// A selector in Calico syntax: parsing never panics nor overflows the
/// stack; what parses prints (`Display`) as a selector that parses to the
/// same tree and selects the same label sets.
pub fn selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(sel) = Selector::parse(&text) else { return };
    let printed = sel.to_string();
    let again =
        Selector::parse(&printed).unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, sel, "{text:?} printed as {printed:?}, which parses differently");
    for labels in label_sets() {
        assert_eq!(sel.matches(&labels), again.matches(&labels));
    }
}

/// The CNI network configuration on the plugin's stdin, read as the plugin
/// reads it: JSON into [`NetConf`], then its datastore, flags and routes.
pub fn cni_config(data: &[u8]) {
    let Ok(conf) = serde_json::from_slice::<NetConf>(data) else { return };
    let _ = conf.ipam.datastore.parse::<DatastoreSpec>();
    let _ = conf.ipam.assign_ipv4.map(|f| f.get());
    let _ = conf.ipam.assign_ipv6.map(|f| f.get());
    for r in conf.ipam.routes.iter().flatten() {
        let _ = (r.dst.network(), r.gw);
    }
}

/// `CNI_ARGS`: what parses has keys without `=` and no `;` anywhere, and
/// printed back as `K=V;…` parses to the same map.
pub fn cni_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(args) = parse_cni_args(&text) else { return };
    for (k, v) in &args {
        assert!(!k.contains('=') && !k.contains(';') && !v.contains(';'), "{k:?}={v:?} from {text:?}");
    }
    let printed: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let again = parse_cni_args(&printed.join(";")).expect("printed CNI_ARGS parse");
    assert_eq!(again, args, "CNI_ARGS printed and parsed again");
}

/// Runs a future that never waits: the file store's calls block on file
/// I/O and complete on their first poll.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the file store waited"),
    }
}

/// FNV-1a, the journal's line checksum (`ipam/src/store/file.rs`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Everything a store holds, or why it could not be read.
type Listing = Result<Vec<Versioned<Object>>, String>;

fn list(store: &FileStore) -> Listing {
    let mut all = Vec::new();
    for scope in [Scope::Blocks, Scope::Affinities(None), Scope::Handles] {
        all.extend(now(store.list(&scope)).map_err(|e: StoreError| e.to_string())?);
    }
    Ok(all)
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("journal file");
    f.write_all(bytes).expect("journal write");
}

/// The file store's snapshot (`ipam-state.json`) and journal
/// (`ipam-journal.R.log`) as another process, or a crash, left them.
///
/// Input: a flags byte, a 2-octet length and that much snapshot, a 2-octet
/// cut position, then the journal. A journal line without a tab gets its
/// checksum appended, so that most lines are records the store accepts; a
/// line with one is kept as it is (a damaged record). Checked:
/// - a store that read the journal up to the cut, then the rest, holds what
///   a store that read it at once holds (incremental reading, torn tails);
/// - after a commit through the first store (which cuts a torn tail off
///   first), a fresh store reads exactly what the writer holds.
pub fn ipam_store(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.byte();
    let snapshot_len = usize::from(inp.u16());
    let snapshot = inp.take(snapshot_len);
    let cut = usize::from(inp.u16());
    let mut journal = Vec::new();
    for line in inp.rest().split_inclusive(|b| *b == b'\n') {
        let (body, newline) = match line.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (line, false),
        };
        journal.extend_from_slice(body);
        if !body.contains(&b'\t') {
            journal.extend_from_slice(format!("\t{:x}", fnv1a(body)).as_bytes());
        }
        if newline {
            journal.push(b'\n');
        }
    }
    let cut = cut % (journal.len() + 1);

    let dir = scratch_dir();
    if flags & 1 != 0 {
        std::fs::write(dir.path().join(STATE_FILE), snapshot).expect("snapshot write");
    }
    // The journal continues the snapshot's revision, read as the store reads it.
    let base: u64 = std::str::from_utf8(snapshot)
        .ok()
        .and_then(|t| t.strip_prefix("{\"revision\":"))
        .map(|r| r.chars().take_while(|c| c.is_ascii_digit()).collect::<String>())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let journal_path = dir.path().join(format!("ipam-journal.{base}.log"));
    append(&journal_path, &journal[..cut]);

    let a = FileStore::open(dir.path()).expect("a store in an existing directory");
    let _ = list(&a);
    append(&journal_path, &journal[cut..]);
    let incremental = list(&a);
    let fresh = list(&FileStore::open(dir.path()).expect("store"));
    assert_eq!(incremental, fresh, "journal read in two steps against at once");

    if flags & 2 != 0 && incremental.is_ok() {
        let mut h = ipam::block::IpamHandle { handle_id: "fuzz-handle".into(), ..Default::default() };
        h.block.insert("10.0.0.0/26".into(), 1);
        let existing = now(a.get(&Object::Handle(h.clone()).key())).ok().flatten();
        if now(a.commit(vec![Write::put(Expect::from_read(&existing), Object::Handle(h))])).is_ok() {
            let writer = list(&a);
            let reader = list(&FileStore::open(dir.path()).expect("store"));
            assert_eq!(writer, reader, "after a commit: the writer's view against a fresh reader's");
        }
    }
}

/// A directory for one run, in memory when the machine has `/dev/shm` (the
/// store `fsync`s every commit).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("bgpd-fuzz-").tempdir_in(shm);
    builder.or_else(|_| tempfile::tempdir()).expect("a temporary directory")
}
