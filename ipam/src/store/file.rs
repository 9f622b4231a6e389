//! The file store: IPAM state kept in the datastore directory, beside the YAML.
//!
//! * `DIR/ipam-state.json` is a snapshot of every block, affinity and handle
//!   with its revision. It is only ever replaced whole: written to
//!   `ipam-state.json.tmp`, `fsync`ed, renamed over the old file, and the
//!   directory `fsync`ed, so a reader sees the old or the new snapshot.
//! * `DIR/ipam-journal.R.log` holds the commits made since the snapshot of
//!   revision R, one line each: the commit as JSON, a tab, and an FNV-1a
//!   checksum of the JSON. A commit is appended and `fdatasync`ed before it is
//!   acknowledged. A line cut short by `kill -9` (or a crash) fails its
//!   checksum or lacks its newline and is ignored, and the next writer cuts
//!   it off before appending. Writing only the commit keeps a commit's cost
//!   independent of how many addresses are allocated.
//! * When the journal grows past [`COMPACT_AFTER`] commits the writer folds it
//!   into a new snapshot (write-rename-fsync) and starts a new journal; the
//!   old journal is removed afterwards. Records at or below the snapshot's
//!   revision are skipped, so a crash at any point of compaction is harmless.
//! * `DIR/ipam-state.lock` is `flock`ed exclusively for each commit, so several
//!   processes on one machine serialise their writes; readers take no lock.
//! * The store is node-local: a directory on a network filesystem is refused
//!   when the lock file is first opened ([`FileStore::check_lockable`]),
//!   since readers rely on the local page cache and two nodes sharing the
//!   directory would hand out the same addresses.
//!   Each process caches the state and reads only what was appended since.
//!
//! The calls block on file I/O and on the lock (held only for one commit);
//! the async interface exists so that the allocator is the same for all stores.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{in_scope, Expect, Key, Object, Revision, Scope, Store, StoreError, Versioned, Write};
use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

/// Name of the state file inside a datastore directory.
pub const STATE_FILE: &str = "ipam-state.json";
/// Name of the lock file inside a datastore directory.
pub const LOCK_FILE: &str = "ipam-state.lock";
/// Commits after which the journal is folded into a new snapshot.
pub const COMPACT_AFTER: u64 = 2000;
/// Format marker written in the state file.
pub const FORMAT: &str = "bgpd-ipam/v1";

/// On-disk layout of the state file. `revision` comes first so a reader can
/// tell from the file's first bytes whether its cache is current.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    revision: Revision,
    format: String,
    blocks: Vec<Versioned<AllocationBlock>>,
    affinities: Vec<Versioned<BlockAffinity>>,
    handles: Vec<Versioned<IpamHandle>>,
}

#[derive(Default)]
struct State {
    /// Revision of the snapshot the journal continues.
    base: Revision,
    /// Latest revision applied.
    revision: Revision,
    /// Bytes of the journal applied so far (all complete, valid lines).
    journal_offset: u64,
    /// Journal records applied so far.
    journal_records: u64,
    objects: BTreeMap<Key, Versioned<Object>>,
}

/// One commit as written to the journal.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    revision: Revision,
    puts: Vec<Object>,
    deletes: Vec<Key>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

struct Inner {
    lock_file: Option<File>,
    cache: Option<State>,
}

/// IPAM state in a datastore directory (see the module docs).
pub struct FileStore {
    compact_after: u64,
    dir: PathBuf,
    state_path: PathBuf,
    inner: Mutex<Inner>,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl FileStore {
    /// Opens the store of a datastore given as a directory (state kept in
    /// `DIR/ipam-state.json`) or as a YAML file (state kept beside it).
    pub fn open(datastore: &Path) -> Result<FileStore, StoreError> {
        let dir = if datastore.is_dir() {
            datastore.to_path_buf()
        } else {
            match datastore.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if !dir.is_dir() {
            return Err(StoreError::Io {
                context: format!("opening datastore directory {}", dir.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(FileStore {
            compact_after: COMPACT_AFTER,
            state_path: dir.join(STATE_FILE),
            dir,
            inner: Mutex::new(Inner { lock_file: None, cache: None }),
        })
    }

    /// Sets after how many journal records the journal is compacted.
    pub fn with_compact_after(mut self, records: u64) -> FileStore {
        self.compact_after = records.max(1);
        self
    }

    /// Path of the state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the cache possibly stale; the
        // cache is validated against the file's revision on every use anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the revision from the first bytes of the state file (0 if absent).
    fn disk_revision(&self) -> Result<Revision, StoreError> {
        let mut f = match File::open(&self.state_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(format!("opening {}", self.state_path.display()))(e)),
        };
        let mut head = [0u8; 48];
        let mut n = 0;
        while n < head.len() {
            let r = f.read(&mut head[n..]).map_err(io_err(format!("reading {}", self.state_path.display())))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let text = std::str::from_utf8(&head[..n]).unwrap_or("");
        let corrupt = || StoreError::Corrupt {
            location: self.state_path.display().to_string(),
            reason: "file does not start with {\"revision\":N".into(),
        };
        let rest = text.strip_prefix("{\"revision\":").ok_or_else(corrupt)?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().map_err(|_| corrupt())
    }

    fn read_state(&self) -> Result<State, StoreError> {
        let text = match std::fs::read(&self.state_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io_err(format!("reading {}", self.state_path.display()))(e)),
        };
        let file: StateFile = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            location: self.state_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut objects = BTreeMap::new();
        let blocks = file.blocks.into_iter().map(|v| (v.revision, Object::Block(v.value)));
        let affs = file.affinities.into_iter().map(|v| (v.revision, Object::Affinity(v.value)));
        let handles = file.handles.into_iter().map(|v| (v.revision, Object::Handle(v.value)));
        for (revision, value) in blocks.chain(affs).chain(handles) {
            objects.insert(value.key(), Versioned { value, revision });
        }
        Ok(State { base: file.revision, revision: file.revision, journal_offset: 0, journal_records: 0, objects })
    }

    fn journal_path(&self, base: Revision) -> PathBuf {
        self.dir.join(format!("ipam-journal.{base}.log"))
    }

    /// Brings the cache up to date with the snapshot and journal and returns it.
    fn current<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut State, StoreError> {
        let base = self.disk_revision()?;
        if inner.cache.as_ref().is_none_or(|c| c.base != base) {
            inner.cache = Some(self.read_state()?);
        }
        let state = inner.cache.get_or_insert_with(State::default);
        let path = self.journal_path(state.base);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            // No commit since the snapshot, or compacted away since we read the
            // snapshot header: either way the cache is a consistent state.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
        };
        f.seek(SeekFrom::Start(state.journal_offset)).map_err(io_err(format!("seeking in {}", path.display())))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).map_err(io_err(format!("reading {}", path.display())))?;
        let mut pos = 0;
        while let Some(nl) = tail[pos..].iter().position(|b| *b == b'\n') {
            let line = &tail[pos..pos + nl];
            let Some(record) = parse_record(line) else {
                // A torn or damaged line: nothing after it was acknowledged.
                break;
            };
            if record.revision > state.revision {
                for key in record.deletes {
                    state.objects.remove(&key);
                }
                for value in record.puts {
                    let revision = record.revision;
                    state.objects.insert(value.key(), Versioned { value, revision });
                }
                state.revision = record.revision;
            }
            pos += nl + 1;
            state.journal_records += 1;
        }
        state.journal_offset += pos as u64;
        Ok(state)
    }

    fn write_state(&self, state: &State) -> Result<(), StoreError> {
        let mut file = StateFile { revision: state.revision, format: FORMAT.to_string(), ..StateFile::default() };
        for v in state.objects.values() {
            let revision = v.revision;
            match &v.value {
                Object::Block(b) => file.blocks.push(Versioned { value: b.clone(), revision }),
                Object::Affinity(a) => file.affinities.push(Versioned { value: a.clone(), revision }),
                Object::Handle(h) => file.handles.push(Versioned { value: h.clone(), revision }),
            }
        }
        let bytes = serde_json::to_vec(&file).map_err(|e| StoreError::Corrupt {
            location: self.state_path.display().to_string(),
            reason: format!("serialising: {e}"),
        })?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        let mut f = File::create(&tmp).map_err(io_err(ctx("creating")))?;
        f.write_all(&bytes).map_err(io_err(ctx("writing")))?;
        f.sync_all().map_err(io_err(ctx("fsync of")))?;
        drop(f);
        std::fs::rename(&tmp, &self.state_path)
            .map_err(io_err(format!("renaming to {}", self.state_path.display())))?;
        let d = File::open(&self.dir).map_err(io_err(format!("opening {}", self.dir.display())))?;
        d.sync_all().map_err(io_err(format!("fsync of {}", self.dir.display())))?;
        Ok(())
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Checks that this directory can hold a writable store: it is on a
    /// local filesystem and its lock file can be opened and `flock`ed.
    ///
    /// The file store is node-local: its readers take no lock and follow the
    /// journal by offset, which relies on the local page cache showing every
    /// append at once. On a network filesystem (NFS, SMB, CephFS, 9p, AFS)
    /// that does not hold, and two nodes sharing the directory would hand out
    /// the same addresses; such a directory is refused, whatever its locks do.
    pub fn check_lockable(&self) -> Result<(), StoreError> {
        let f = self.open_lock_file()?;
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
            // Taken: let it go at once (closing `f` would too).
            Ok(()) => {
                let _ = rustix::fs::flock(&f, rustix::fs::FlockOperation::Unlock);
                Ok(())
            }
            // Held exclusively by a writer right now: locking works.
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(()),
            Err(e) => Err(StoreError::Io {
                context: format!("flock {} (the file: datastore needs working locks)", self.lock_path().display()),
                source: e.into(),
            }),
        }
    }

    /// Opens (creating) the lock file, after refusing a network filesystem.
    fn open_lock_file(&self) -> Result<File, StoreError> {
        let st = rustix::fs::statfs(&self.dir)
            .map_err(|e| StoreError::Io { context: format!("statfs {}", self.dir.display()), source: e.into() })?;
        // `f_type` is a filesystem magic number (linux/magic.h); it is
        // compared as 32 bits, as the kernel defines the constants.
        if let Some(fs) = network_filesystem(st.f_type as u32) {
            return Err(StoreError::Io {
                context: format!(
                    "{} is on {fs}, a filesystem other nodes may share: the file: datastore is node-local \
                     (use etcd: for more than one node)",
                    self.dir.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .map_err(io_err(format!("opening {}", self.lock_path().display())))
    }

    fn commit_sync(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut inner = self.lock_inner();
        if inner.lock_file.is_none() {
            inner.lock_file = Some(self.open_lock_file()?);
        }
        let Some(lock_file) = inner.lock_file.as_ref() else { unreachable!("lock file opened just above") };
        rustix::fs::flock(lock_file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| StoreError::Io {
            context: format!("flock {}", self.lock_path().display()),
            source: e.into(),
        })?;
        let result = self.commit_locked(&mut inner, writes);
        if let Some(lock_file) = inner.lock_file.as_ref() {
            // Unlocking cannot meaningfully fail for a valid descriptor; closing
            // the process would release it anyway.
            let _ = rustix::fs::flock(lock_file, rustix::fs::FlockOperation::Unlock);
        }
        drop(inner);
        // Group commit: wait for the disk after releasing the lock, so that
        // other writers append meanwhile and one flush covers several
        // commits. The journal is append-only, so a commit that reaches the
        // disk carries every commit before it; a commit is acknowledged only
        // once its own flush returned. (Other processes may read it before
        // then; a power loss would take it and everything after it.)
        if let Some(journal) = result? {
            journal.sync_data().map_err(io_err(format!("fdatasync of the journal in {}", self.dir.display())))?;
        }
        Ok(())
    }

    /// Applies a commit under the lock; returns the journal file still to be
    /// flushed (`None` when the commit went into a flushed snapshot).
    fn commit_locked(&self, inner: &mut Inner, writes: Vec<Write>) -> Result<Option<File>, StoreError> {
        let state = self.current(inner)?;
        for w in &writes {
            let ok = match (w.expect, state.objects.get(&w.key)) {
                (Expect::Absent, None) => true,
                (Expect::Revision(r), Some(v)) => v.revision == r,
                _ => false,
            };
            if !ok {
                return Err(StoreError::Conflict(w.key.clone()));
            }
        }
        let mut record = Record { revision: state.revision + 1, puts: Vec::new(), deletes: Vec::new() };
        for w in writes {
            match w.value {
                Some(v) => record.puts.push(v),
                None => record.deletes.push(w.key),
            }
        }
        let journal = match self.append_record(state, &record) {
            Ok(f) => f,
            Err(e) => {
                // The journal may hold a partial line; the next writer cuts it off.
                inner.cache = None;
                return Err(e);
            }
        };
        for key in record.deletes {
            state.objects.remove(&key);
        }
        for value in record.puts {
            let revision = record.revision;
            state.objects.insert(value.key(), Versioned { value, revision });
        }
        state.revision = record.revision;
        if state.journal_records >= self.compact_after {
            let old_journal = self.journal_path(state.base);
            let written = self.write_state(state);
            if let Err(e) = written {
                inner.cache = None;
                return Err(e);
            }
            state.base = state.revision;
            state.journal_offset = 0;
            state.journal_records = 0;
            // Readers that still look for the old journal find it gone and
            // re-read the snapshot, which contains everything it held.
            std::fs::remove_file(&old_journal).map_err(io_err(format!("removing {}", old_journal.display())))?;
            // The snapshot was flushed: nothing left to wait for.
            return Ok(None);
        }
        Ok(Some(journal))
    }

    /// Appends a record after the last valid line (cutting off a torn tail);
    /// returns the journal file for the caller to flush.
    fn append_record(&self, state: &mut State, record: &Record) -> Result<File, StoreError> {
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            location: self.state_path.display().to_string(),
            reason: format!("serialising a journal record: {e}"),
        })?;
        let mut line = json;
        let sum = fnv1a(&line);
        line.extend_from_slice(format!("\t{sum:016x}\n").as_bytes());
        let path = self.journal_path(state.base);
        let ctx = |what: &str| format!("{what} {}", path.display());
        let existed = path.exists();
        let mut f =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(ctx("opening")))?;
        let len = f.metadata().map_err(io_err(ctx("stat of")))?.len();
        if len != state.journal_offset {
            f.set_len(state.journal_offset).map_err(io_err(ctx("truncating torn tail of")))?;
        }
        f.seek(SeekFrom::Start(state.journal_offset)).map_err(io_err(ctx("seeking in")))?;
        f.write_all(&line).map_err(io_err(ctx("appending to")))?;
        if !existed {
            let d = File::open(&self.dir).map_err(io_err(format!("opening {}", self.dir.display())))?;
            d.sync_all().map_err(io_err(format!("fsync of {}", self.dir.display())))?;
        }
        state.journal_offset += line.len() as u64;
        state.journal_records += 1;
        Ok(f)
    }

    fn get_sync(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let mut inner = self.lock_inner();
        Ok(self.current(&mut inner)?.objects.get(key).cloned())
    }

    fn list_sync(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        let mut inner = self.lock_inner();
        let state = self.current(&mut inner)?;
        Ok(state.objects.iter().filter(|(k, _)| in_scope(k, scope)).map(|(_, v)| v.clone()).collect())
    }
}

/// The name of a network filesystem by its magic number (linux/magic.h), or
/// `None` for any other (local) filesystem.
pub fn network_filesystem(magic: u32) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "NFS",
        0x517b => "SMB",
        0xff53_4d42 => "CIFS",
        0xfe53_4d42 => "SMB2",
        0x00c3_6400 => "CephFS",
        0x0102_1997 => "9p",
        0x5346_414f => "AFS",
        0x7375_7245 => "Coda",
        _ => return None,
    })
}

/// Parses one journal line (without its newline); `None` if torn or damaged.
fn parse_record(line: &[u8]) -> Option<Record> {
    let tab = line.iter().rposition(|b| *b == b'\t')?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if fnv1a(json) != sum {
        return None;
    }
    serde_json::from_slice(json).ok()
}

impl Store for FileStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        self.get_sync(key)
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        self.list_sync(scope)
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit_sync(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::IpamHandle;

    fn handle(name: &str, n: u32) -> Object {
        let mut h = IpamHandle { handle_id: name.into(), ..IpamHandle::default() };
        h.block.insert("10.0.0.0/26".into(), n);
        Object::Handle(h)
    }

    fn get(s: &FileStore, name: &str) -> Option<Versioned<Object>> {
        s.get_sync(&Key::Handle(name.into())).unwrap()
    }

    #[test]
    fn test_cas_compaction_and_second_reader() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap().with_compact_after(4);
        let b = FileStore::open(dir.path()).unwrap();
        a.commit_sync(vec![Write::put(Expect::Absent, handle("h", 1))]).unwrap();
        // Creating an existing object is a conflict and changes nothing.
        let err = a.commit_sync(vec![Write::put(Expect::Absent, handle("h", 9))]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        for i in 2..=11 {
            let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let cur = get(writer, "h").unwrap();
            writer.commit_sync(vec![Write::put(Expect::Revision(cur.revision), handle("h", i))]).unwrap();
            let seen = get(reader, "h").unwrap();
            assert_eq!(seen.value, handle("h", i), "reader sees commit {i}");
        }
        // A stale revision is a conflict.
        let err = a.commit_sync(vec![Write::put(Expect::Revision(1), handle("h", 0))]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        // a compacted the journal into a snapshot.
        assert!(dir.path().join(STATE_FILE).exists());
        let c = FileStore::open(dir.path()).unwrap();
        assert_eq!(get(&c, "h").unwrap().value, handle("h", 11));
    }

    #[test]
    fn test_network_filesystems_are_named_local_ones_not() {
        // NFS_SUPER_MAGIC, CIFS_MAGIC_NUMBER, CEPH_SUPER_MAGIC (linux/magic.h).
        assert_eq!(network_filesystem(0x6969), Some("NFS"));
        assert_eq!(network_filesystem(0xff53_4d42), Some("CIFS"));
        assert_eq!(network_filesystem(0x00c3_6400), Some("CephFS"));
        // EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC.
        for local in [0xef53, 0x0102_1994, 0x5846_5342, 0x9123_683e] {
            assert_eq!(network_filesystem(local), None, "{local:#x}");
        }
    }

    #[test]
    fn test_directory_that_cannot_be_locked_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        s.check_lockable().expect("a temporary directory can be locked");
        // The lock file cannot be opened: the store is refused, by name,
        // before anything is written.
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
        let e = s.check_lockable().unwrap_err().to_string();
        assert!(e.contains(LOCK_FILE), "{e}");
        assert!(s.commit_sync(vec![Write::put(Expect::Absent, handle("h", 1))]).is_err());
        assert!(!dir.path().join("ipam-journal.0.log").exists());
    }

    #[test]
    fn test_torn_journal_tail_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        a.commit_sync(vec![Write::put(Expect::Absent, handle("h1", 1))]).unwrap();
        let journal = dir.path().join("ipam-journal.0.log");
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        // What a writer killed mid-append leaves: a partial line.
        f.write_all(b"{\"revision\":2,\"puts\":[{\"Handle\":{\"handleID\":\"h2\"").unwrap();
        drop(f);
        let b = FileStore::open(dir.path()).unwrap();
        assert!(get(&b, "h1").is_some());
        assert!(get(&b, "h2").is_none());
        b.commit_sync(vec![Write::put(Expect::Absent, handle("h3", 1))]).unwrap();
        let c = FileStore::open(dir.path()).unwrap();
        assert!(get(&c, "h3").is_some());
        assert!(get(&c, "h2").is_none());
        // A damaged checksum hides the line and everything after it.
        let text = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(text.lines().count(), 2, "torn tail was cut before appending");
        std::fs::write(&journal, text.replacen("h1", "h9", 1)).unwrap();
        let d = FileStore::open(dir.path()).unwrap();
        assert!(get(&d, "h1").is_none());
    }
}
