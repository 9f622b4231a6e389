//! The file store: IPAM state kept in the datastore directory, beside the YAML.
//!
//! * `DIR/ipam-state.json` is a snapshot of every block, affinity and handle
//!   with its revision. It is only ever replaced whole: written to
//!   `ipam-state.json.tmp`, `fsync`ed, renamed over the old file, and the
//!   directory `fsync`ed, so a reader sees the old or the new snapshot.
//! * `DIR/ipam-journal.R.log` holds the commits made since the snapshot of
//!   revision R, one line each: the commit as JSON (revision, the keys of the
//!   objects written, the objects, the keys deleted), a tab, and an FNV-1a
//!   checksum of the JSON. A line cut short by `kill -9` (or a crash) fails
//!   its checksum or lacks its newline and is ignored, and the next writer
//!   cuts it off before appending. Writing only the commit keeps a commit's
//!   cost independent of how many addresses are allocated.
//! * A commit is appended under the commit lock and acknowledged once it is
//!   on disk: by *group commit* ([`group_commit`]), the writer releases the
//!   lock before it waits, and one `fdatasync` of the journal covers every
//!   commit appended before it started, whichever process appended it.
//! * When the journal grows past [`COMPACT_AFTER`] commits the writer folds it
//!   into a new snapshot (write-rename-fsync) and starts a new journal; the
//!   old journal is removed afterwards, and commits still waiting for a flush
//!   of it are told they are on disk (in the snapshot). Records at or below
//!   the snapshot's revision are skipped, and a writer removes a journal
//!   older than the snapshot (a crash between rename and removal) before it
//!   appends, so a crash at any point of compaction is harmless.
//! * `DIR/ipam-state.lock` is `flock`ed exclusively for each commit, so several
//!   processes on one machine serialise their writes; readers take no lock.
//!   `DIR/ipam-journal.sync` is the flush lock and records how far the
//!   journal is known to be on disk.
//! * The store is node-local: a directory on a network filesystem is refused
//!   when the lock file is first opened ([`FileStore::check_lockable`]),
//!   since readers rely on the local page cache and two nodes sharing the
//!   directory would hand out the same addresses.
//!
//! Each process caches the state and reads only what was appended since,
//! keeping the journal open: while it is still linked no compaction happened,
//! so a read that finds nothing new costs one `fstat`. The objects of another
//! process's commit are decoded when first read (most never are: another
//! node's block, another pod's handle).
//!
//! What a crash can cost, with no acknowledged commit ever lost:
//! * `kill -9` of a writer keeps the page cache: whatever it appended stays
//!   and is flushed by the next writer's flush (or the kernel's writeback);
//!   a half-written line is ignored and cut off. Its commit may be in the
//!   store without having been acknowledged to it (as with any crash after a
//!   commit and before the answer): CNI `DEL` or `GC` releases it.
//! * A power loss loses what was appended and not yet flushed: a suffix of
//!   the journal, none of it acknowledged (a commit is acknowledged only
//!   after a flush that started after its append completed, and the journal
//!   is append-only, so a commit that survives carries every commit it read).
//! * No address is handed out twice: every commit's revisions are checked
//!   under the commit lock against every commit appended before it, flushed
//!   or not, and a commit lost to power loss takes every later commit (which
//!   may have built on it) with it.
//!
//! The calls block on file I/O and on the locks (held only for one commit
//! or one flush); the async interface exists so that the allocator is the
//! same for all stores.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::ops::Bound;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{in_scope, Expect, Key, Object, Revision, Scope, Store, StoreError, Versioned, Write};
use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

mod group_commit;

pub use group_commit::{Durable, Flush, GroupCommit, SYNC_FILE};

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
    /// The journal of `base`, kept open once it exists.
    journal: Option<Journal>,
    /// Journals older than `base` were removed by this process (under the
    /// commit lock) since it read the snapshot: needed before it appends.
    swept: bool,
    objects: BTreeMap<Key, Entry>,
}

/// A stored object in the cache with its revision.
struct Entry {
    revision: Revision,
    slot: Slot,
}

/// An object decoded, or still as the journal line held it. Each process
/// follows every commit but reads few of the objects (its own node's blocks,
/// its own handles); decoding another node's block costs more than the rest
/// of a commit, so a record's objects are decoded when first read. Compare-
/// and-swap needs only the revision.
enum Slot {
    Decoded(Object),
    Encoded(Box<RawValue>),
}

impl Entry {
    /// The object, decoding it in place on first use.
    fn object(&mut self, key: &Key) -> Result<&Object, StoreError> {
        if let Slot::Encoded(raw) = &self.slot {
            let value: Object = serde_json::from_str(raw.get()).map_err(|e| StoreError::Corrupt {
                location: format!("the IPAM journal record of revision {}", self.revision),
                reason: format!("{key:?}: {e}"),
            })?;
            if value.key() != *key {
                return Err(StoreError::Corrupt {
                    location: format!("the IPAM journal record of revision {}", self.revision),
                    reason: format!("listed as {key:?}, holds {:?}", value.key()),
                });
            }
            self.slot = Slot::Decoded(value);
        }
        match &self.slot {
            Slot::Decoded(value) => Ok(value),
            Slot::Encoded(_) => unreachable!("decoded just above"),
        }
    }

    fn versioned(&mut self, key: &Key) -> Result<Versioned<Object>, StoreError> {
        let revision = self.revision;
        Ok(Versioned { value: self.object(key)?.clone(), revision })
    }
}

/// An open journal. Shared with the commit that waits for its flush after
/// the lock is released.
struct Journal {
    file: Arc<File>,
    /// Opened for writing too (a reader without write permission can still follow it).
    writable: bool,
}

/// A commit appended to the journal and not yet known to be on disk.
struct Appended {
    journal: Arc<File>,
    base: Revision,
    /// Where the commit's line ends.
    end: u64,
}

/// One commit as written to the journal. `keys` (the key of each put, in
/// order) lets a reader skip decoding objects it never reads; records
/// written before it was added lack it and are decoded whole.
#[derive(Debug, Serialize)]
struct Record {
    revision: Revision,
    keys: Vec<Key>,
    puts: Vec<Object>,
    deletes: Vec<Key>,
}

/// One journal record as read, borrowing the line.
#[derive(Deserialize)]
struct RecordIn<'a> {
    revision: Revision,
    #[serde(default)]
    keys: Option<Vec<Key>>,
    #[serde(borrow)]
    puts: Vec<&'a RawValue>,
    #[serde(default)]
    deletes: Vec<Key>,
}

/// A journal record ready to apply.
struct Parsed {
    revision: Revision,
    puts: Vec<(Key, Slot)>,
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
    // Boxed: a `FileStore` is a variant of `AnyStore` beside boxed ones.
    cache: Option<Box<State>>,
}

/// IPAM state in a datastore directory (see the module docs).
pub struct FileStore {
    compact_after: u64,
    dir: PathBuf,
    state_path: PathBuf,
    inner: Mutex<Inner>,
    group: GroupCommit,
    stats: FlushStats,
}

/// How this store's commits reached the disk: what an operator would graph
/// to see group commit at work (commits per flush).
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Commits that flushed the journal themselves (one `fdatasync` each).
    pub led: AtomicU64,
    /// Commits covered by another writer's flush (no `fdatasync` of their own).
    pub covered: AtomicU64,
    /// Commits that went into a compacted snapshot (flushed with it).
    pub compacted: AtomicU64,
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
            group: GroupCommit::new(&dir),
            dir,
            inner: Mutex::new(Inner { lock_file: None, cache: None }),
            stats: FlushStats::default(),
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

    /// How this store's commits reached the disk so far.
    pub fn flush_stats(&self) -> &FlushStats {
        &self.stats
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
            objects.insert(value.key(), Entry { revision, slot: Slot::Decoded(value) });
        }
        Ok(State { base: file.revision, revision: file.revision, objects, ..State::default() })
    }

    fn journal_path(&self, base: Revision) -> PathBuf {
        self.dir.join(format!("ipam-journal.{base}.log"))
    }

    /// Opens the journal of snapshot `base`, for writing if permitted
    /// (`None` if it does not exist).
    fn open_journal(&self, base: Revision) -> Result<Option<Journal>, StoreError> {
        let path = self.journal_path(base);
        let ctx = || format!("opening {}", path.display());
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => Ok(Some(Journal { file: Arc::new(f), writable: true })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => match File::open(&path) {
                Ok(f) => Ok(Some(Journal { file: Arc::new(f), writable: false })),
                Err(e) => Err(io_err(ctx())(e)),
            },
            Err(e) => Err(io_err(ctx())(e)),
        }
    }

    /// Opens the journal of snapshot `base` for appending, creating it (and
    /// flushing the directory, so that the new name survives a crash).
    fn create_journal(&self, base: Revision) -> Result<Journal, StoreError> {
        let path = self.journal_path(base);
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(f) => {
                let d = File::open(&self.dir).map_err(io_err(format!("opening {}", self.dir.display())))?;
                d.sync_all().map_err(io_err(format!("fsync of {}", self.dir.display())))?;
                Ok(Journal { file: Arc::new(f), writable: true })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map(|f| Journal { file: Arc::new(f), writable: true })
                .map_err(io_err(format!("opening {}", path.display()))),
            Err(e) => Err(io_err(format!("creating {}", path.display()))(e)),
        }
    }

    /// Removes journals older than the snapshot of `base`: what a writer
    /// killed between renaming its compacted snapshot and removing the old
    /// journal leaves. Called under the commit lock.
    fn remove_stale_journals(&self, base: Revision) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io_err(format!("listing {}", self.dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(old) = name.to_str().and_then(journal_base) else { continue };
            if old < base {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_err(format!("removing {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Brings the cache up to date with the snapshot and journal and returns it.
    ///
    /// While the journal the cache follows is still linked, no commit was
    /// made past it: compaction removes it last, and a writer always checks
    /// the snapshot (`for_write`) and removes journals a crashed compaction
    /// left before it appends to a newer one. So readers skip the snapshot's
    /// header then, and a call that finds nothing new costs one `fstat`.
    fn current<'a>(&self, inner: &'a mut Inner, for_write: bool) -> Result<&'a mut State, StoreError> {
        // The length of the followed journal while it is linked.
        let linked_len = match inner.cache.as_ref().and_then(|c| c.journal.as_ref()) {
            Some(j) => {
                let meta =
                    j.file.metadata().map_err(io_err(format!("stat of the journal in {}", self.dir.display())))?;
                (meta.nlink() > 0).then_some(meta.len())
            }
            None => None,
        };
        let linked = linked_len.is_some();
        let up_to_date = !for_write && linked && linked_len == inner.cache.as_ref().map(|c| c.journal_offset);
        if for_write || !linked {
            let base = self.disk_revision()?;
            let stale = inner.cache.as_ref().is_none_or(|c| c.base != base || (c.journal.is_some() && !linked));
            if stale {
                inner.cache = Some(Box::new(self.read_state()?));
            }
        }
        let state: &mut State = inner.cache.get_or_insert_with(Box::default);
        if for_write && !state.swept {
            // Before anything is appended past a journal, it must be gone:
            // readers that still follow it take its being linked to mean
            // that nothing was.
            self.remove_stale_journals(state.base)?;
            state.swept = true;
        }
        if up_to_date {
            return Ok(state);
        }
        if state.journal.is_none() {
            match self.open_journal(state.base)? {
                Some(j) => state.journal = Some(j),
                // No commit since the snapshot, or compacted away since we read the
                // snapshot header: either way the cache is a consistent state.
                None => return Ok(state),
            }
        }
        let Some(journal) = state.journal.as_ref() else { unreachable!("journal opened just above") };
        let path = || self.journal_path(state.base).display().to_string();
        // Known from the `fstat` above while linked; a guess otherwise.
        let expect = linked_len.map_or(4096, |len| len.saturating_sub(state.journal_offset));
        let tail =
            read_from(&journal.file, state.journal_offset, expect).map_err(io_err(format!("reading {}", path())))?;
        let mut pos = 0;
        while let Some(nl) = find_newline(&tail[pos..]) {
            let line = &tail[pos..pos + nl];
            let Some(record) = parse_record(line) else {
                // A torn or damaged line: nothing after it was acknowledged.
                break;
            };
            if record.revision > state.revision {
                for key in record.deletes {
                    state.objects.remove(&key);
                }
                for (key, slot) in record.puts {
                    state.objects.insert(key, Entry { revision: record.revision, slot });
                }
                state.revision = record.revision;
            }
            pos += nl + 1;
            state.journal_records += 1;
        }
        state.journal_offset += pos as u64;
        Ok(state)
    }

    fn write_state(&self, state: &mut State) -> Result<(), StoreError> {
        let mut file = StateFile { revision: state.revision, format: FORMAT.to_string(), ..StateFile::default() };
        for (key, entry) in state.objects.iter_mut() {
            let revision = entry.revision;
            match entry.object(key)? {
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
        let appended = self.append_locked(writes)?;
        // Group commit: wait for the disk after releasing the commit lock, so
        // that other writers append meanwhile and one flush covers them all
        // (see `group_commit`). The commit is acknowledged only once a flush
        // that started after its append has completed. Other processes may
        // read it before then; a power loss would take it and everything
        // appended after it, none of which is acknowledged yet either.
        let Some(a) = appended else {
            self.stats.compacted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let counter = match self.group.wait_durable(&a.journal, a.base, a.end)? {
            Flush::Led => &self.stats.led,
            Flush::Covered => &self.stats.covered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the commit lock, applies the commit and releases the lock;
    /// returns what is still to be flushed (`None` when the commit went into
    /// a flushed snapshot).
    fn append_locked(&self, writes: Vec<Write>) -> Result<Option<Appended>, StoreError> {
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
        result
    }

    /// Applies a commit under the lock; returns the journal still to be
    /// flushed (`None` when the commit went into a flushed snapshot).
    fn commit_locked(&self, inner: &mut Inner, writes: Vec<Write>) -> Result<Option<Appended>, StoreError> {
        let state = self.current(inner, true)?;
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
        let mut record =
            Record { revision: state.revision + 1, keys: Vec::new(), puts: Vec::new(), deletes: Vec::new() };
        for w in writes {
            match w.value {
                Some(v) => {
                    record.keys.push(v.key());
                    record.puts.push(v);
                }
                None => record.deletes.push(w.key),
            }
        }
        let appended = match self.append_record(state, &record) {
            Ok(a) => a,
            Err(e) => {
                // The journal may hold a partial line; the next writer cuts it off.
                inner.cache = None;
                return Err(e);
            }
        };
        for key in record.deletes {
            state.objects.remove(&key);
        }
        for (key, value) in record.keys.into_iter().zip(record.puts) {
            state.objects.insert(key, Entry { revision: record.revision, slot: Slot::Decoded(value) });
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
            state.journal = None;
            // Readers that still follow the old journal find it unlinked and
            // re-read the snapshot, which contains everything it held. Until
            // it is gone, this process may not append (see `current`).
            state.swept = false;
            std::fs::remove_file(&old_journal).map_err(io_err(format!("removing {}", old_journal.display())))?;
            state.swept = true;
            // Commits still waiting for a flush of the old journal are on
            // disk in the snapshot: tell them.
            self.group.compacted(state.base)?;
            return Ok(None);
        }
        Ok(Some(appended))
    }

    /// Appends a record after the last valid line (cutting off a torn tail).
    fn append_record(&self, state: &mut State, record: &Record) -> Result<Appended, StoreError> {
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            location: self.state_path.display().to_string(),
            reason: format!("serialising a journal record: {e}"),
        })?;
        let mut line = json;
        let sum = fnv1a(&line);
        line.extend_from_slice(format!("\t{sum:016x}\n").as_bytes());
        if !state.journal.as_ref().is_some_and(|j| j.writable) {
            state.journal = Some(self.create_journal(state.base)?);
        }
        let Some(journal) = state.journal.as_ref() else { unreachable!("journal opened just above") };
        let path = self.journal_path(state.base);
        let ctx = |what: &str| format!("{what} {}", path.display());
        let len = journal.file.metadata().map_err(io_err(ctx("stat of")))?.len();
        if len != state.journal_offset {
            self.group.truncate(&journal.file, state.base, state.journal_offset)?;
        }
        journal.file.write_all_at(&line, state.journal_offset).map_err(io_err(ctx("appending to")))?;
        state.journal_offset += line.len() as u64;
        state.journal_records += 1;
        Ok(Appended { journal: Arc::clone(&journal.file), base: state.base, end: state.journal_offset })
    }

    fn get_sync(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let mut inner = self.lock_inner();
        let state = self.current(&mut inner, false)?;
        state.objects.get_mut(key).map(|e| e.versioned(key)).transpose()
    }

    fn list_sync(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        let mut inner = self.lock_inner();
        let state = self.current(&mut inner, false)?;
        let in_range = state.objects.range_mut((Bound::Included(first_key(scope)), Bound::Unbounded));
        in_range.take_while(|(k, _)| in_scope(k, scope)).map(|(k, e)| e.versioned(k)).collect()
    }

    fn list_keys_sync(&self, scope: &Scope) -> Result<Vec<Key>, StoreError> {
        let mut inner = self.lock_inner();
        let state = self.current(&mut inner, false)?;
        let in_range = state.objects.range((Bound::Included(first_key(scope)), Bound::Unbounded));
        Ok(in_range.map(|(k, _)| k).take_while(|k| in_scope(k, scope)).cloned().collect())
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

/// The smallest key of a scope. Keys order by kind (blocks, affinities,
/// handles), affinities by node first, so each scope is one run of keys
/// starting here.
fn first_key(scope: &Scope) -> Key {
    // The smallest network: IPv4 sorts before IPv6, then by address and length.
    let min_net = ipnet::IpNet::V4(ipnet::Ipv4Net::default());
    match scope {
        Scope::Blocks => Key::Block(min_net),
        Scope::Affinities(node) => Key::Affinity { node: node.clone().unwrap_or_default(), cidr: min_net },
        Scope::Handles => Key::Handle(String::new()),
    }
}

/// The snapshot revision in a journal's file name (`ipam-journal.R.log`).
fn journal_base(name: &str) -> Option<Revision> {
    name.strip_prefix("ipam-journal.")?.strip_suffix(".log")?.parse().ok()
}

/// The index of the first `\n` in `bytes`. Every process scans every line
/// any process appends, so this looks at eight bytes at a time: a word XORed
/// with eight newlines has a zero byte exactly where a newline was, which
/// `(w - 0x01…01) & !w & 0x80…80` detects (it can flag a byte above a real
/// zero, never miss one, so the exact position is then found bytewise).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut start = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word) ^ NEWLINES;
        if w.wrapping_sub(ONES) & !w & HIGHS != 0 {
            break;
        }
        start += 8;
    }
    bytes[start..].iter().position(|b| *b == b'\n').map(|i| start + i)
}

/// Reads a file from `offset` to its end, expecting about `expect` bytes.
fn read_from(file: &File, offset: u64, expect: u64) -> std::io::Result<Vec<u8>> {
    // One byte more than expected, so that reaching the end takes no resize.
    let mut buf = vec![0u8; usize::try_from(expect).unwrap_or(usize::MAX).clamp(64, 1 << 20) + 1];
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(n * 2, 0);
        }
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Parses one journal line (without its newline); `None` if torn or damaged.
fn parse_record(line: &[u8]) -> Option<Parsed> {
    let tab = line.iter().rposition(|b| *b == b'\t')?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if fnv1a(json) != sum {
        return None;
    }
    let record: RecordIn = serde_json::from_slice(json).ok()?;
    let puts = match record.keys {
        Some(keys) if keys.len() == record.puts.len() => {
            keys.into_iter().zip(record.puts).map(|(key, raw)| (key, Slot::Encoded(raw.to_owned()))).collect()
        }
        // A record of an older version: decode it now.
        _ => record
            .puts
            .into_iter()
            .map(|raw| {
                let value: Object = serde_json::from_str(raw.get()).ok()?;
                Some((value.key(), Slot::Decoded(value)))
            })
            .collect::<Option<Vec<_>>>()?,
    };
    Some(Parsed { revision: record.revision, puts, deletes: record.deletes })
}

impl Store for FileStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        self.get_sync(key)
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        self.list_sync(scope)
    }

    async fn list_keys(&self, scope: &Scope) -> Result<Vec<Key>, StoreError> {
        self.list_keys_sync(scope)
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

    /// A journal line as `append_record` writes it, for a hand-made record.
    fn line(json: &str) -> String {
        format!("{json}\t{:016x}\n", fnv1a(json.as_bytes()))
    }

    #[test]
    fn test_records_without_keys_from_an_older_version_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"revision":1,"puts":[{"Handle":{"handleID":"h1","block":{"10.0.0.0/26":1}}}],"deletes":[]}"#;
        std::fs::write(dir.path().join("ipam-journal.0.log"), line(old)).unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        assert_eq!(get(&a, "h1").unwrap(), Versioned { value: handle("h1", 1), revision: 1 });
        a.commit_sync(vec![Write::put(Expect::Revision(1), handle("h1", 2))]).unwrap();
        let b = FileStore::open(dir.path()).unwrap();
        assert_eq!(get(&b, "h1").unwrap(), Versioned { value: handle("h1", 2), revision: 2 });
    }

    #[test]
    fn test_object_listed_under_another_key_is_refused_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let lying = r#"{"revision":1,"keys":[{"Handle":"h1"}],"puts":[{"Handle":{"handleID":"h2"}}],"deletes":[]}"#;
        std::fs::write(dir.path().join("ipam-journal.0.log"), line(lying)).unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        let e = a.get_sync(&Key::Handle("h1".into())).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("revision 1"), "{e}");
        assert!(get(&a, "h2").is_none());
    }

    #[test]
    fn test_lists_are_the_scope_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        let aff = |node: &str, cidr: &str| {
            let state = crate::block::AffinityState::Confirmed;
            Object::Affinity(BlockAffinity { node: node.into(), cidr: cidr.parse().unwrap(), state })
        };
        let objects = [aff("n1", "10.0.0.0/26"), aff("n2", "10.0.0.64/26"), aff("n2", "fd00::/122"), handle("h", 1)];
        a.commit_sync(objects.iter().map(|o| Write::put(Expect::Absent, o.clone())).collect()).unwrap();
        let b = FileStore::open(dir.path()).unwrap();
        let keys = |scope: Scope| b.list_keys_sync(&scope).unwrap();
        assert_eq!(keys(Scope::Affinities(Some("n2".into()))), vec![objects[1].key(), objects[2].key()]);
        assert_eq!(keys(Scope::Affinities(None)).len(), 3);
        assert_eq!(keys(Scope::Handles), vec![objects[3].key()]);
        assert!(keys(Scope::Blocks).is_empty());
        assert!(keys(Scope::Affinities(Some("n".into()))).is_empty());
        let listed = b.list_sync(&Scope::Affinities(Some("n1".into()))).unwrap();
        assert_eq!(listed, vec![Versioned { value: objects[0].clone(), revision: 1 }]);
    }

    #[test]
    fn test_journal_left_by_a_crashed_compaction_is_removed_before_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap().with_compact_after(3);
        let b = FileStore::open(dir.path()).unwrap();
        a.commit_sync(vec![Write::put(Expect::Absent, handle("h1", 1))]).unwrap();
        a.commit_sync(vec![Write::put(Expect::Absent, handle("h2", 1))]).unwrap();
        // b follows journal 0.
        assert!(get(&b, "h2").is_some());
        let journal = dir.path().join("ipam-journal.0.log");
        let keep = dir.path().join("keep");
        std::fs::hard_link(&journal, &keep).unwrap();
        a.commit_sync(vec![Write::put(Expect::Absent, handle("h3", 1))]).unwrap();
        assert_eq!(a.flush_stats().compacted.load(Ordering::Relaxed), 1);
        // What a writer killed between renaming the snapshot and removing the
        // old journal leaves: the snapshot of revision 3 and journal 0, still
        // linked, which b follows.
        std::fs::rename(&keep, &journal).unwrap();
        // c reads the new snapshot first, then writes.
        let c = FileStore::open(dir.path()).unwrap();
        assert!(get(&c, "h3").is_some());
        c.commit_sync(vec![Write::put(Expect::Absent, handle("h4", 1))]).unwrap();
        assert!(!journal.exists(), "the stale journal was removed");
        assert!(get(&b, "h3").is_some());
        assert!(get(&b, "h4").is_some(), "b found its journal gone and followed the snapshot");
    }

    #[test]
    fn test_concurrent_writers_every_commit_acknowledged_once_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        // Eight stores on one directory: eight open lock files, as eight
        // processes would have. Compaction every 25 commits.
        let stores: Vec<FileStore> =
            (0..8).map(|_| FileStore::open(dir.path()).unwrap().with_compact_after(25)).collect();
        std::thread::scope(|scope| {
            for (t, s) in stores.iter().enumerate() {
                scope.spawn(move || {
                    for i in 0..40 {
                        s.commit_sync(vec![Write::put(Expect::Absent, handle(&format!("t{t}-{i}"), 1))]).unwrap();
                    }
                });
            }
        });
        for s in &stores {
            let f = s.flush_stats();
            let counted = [&f.led, &f.covered, &f.compacted].map(|c| c.load(Ordering::Relaxed));
            assert_eq!(counted.iter().sum::<u64>(), 40, "each commit acknowledged once: {counted:?}");
        }
        let fresh = FileStore::open(dir.path()).unwrap();
        assert_eq!(fresh.list_sync(&Scope::Handles).unwrap().len(), 320);
        // Every commit was acknowledged, so the watermark covers the journal.
        let mut inner = fresh.lock_inner();
        let state = fresh.current(&mut inner, true).unwrap();
        let durable = fresh.group.durable().unwrap().expect("a watermark was written");
        assert!(
            durable.covers(state.base, state.journal_offset),
            "{durable:?} vs {} {}",
            state.base,
            state.journal_offset
        );
    }

    #[test]
    fn test_find_newline_agrees_with_a_bytewise_scan() {
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..2000 {
            let len = rng.usize(0..80);
            // Mostly bytes next to '\n' (0x0a), where a word-wise test could slip.
            let bytes: Vec<u8> =
                (0..len).map(|_| *rng.choice(&[b'\n', 0x0b, 0x09, 0x8a, 0x00, b'x']).unwrap()).collect();
            assert_eq!(find_newline(&bytes), bytes.iter().position(|b| *b == b'\n'), "{bytes:?}");
        }
    }
}
