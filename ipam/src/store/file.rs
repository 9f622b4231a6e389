//! The file store: IPAM state in one JSON file inside the datastore directory.
//!
//! * `DIR/ipam-state.json` holds every block, affinity and handle with its
//!   revision. It is only ever replaced whole: written to
//!   `ipam-state.json.tmp`, `fsync`ed, renamed over the old file, and the
//!   directory `fsync`ed. A reader sees the old or the new state, never a mix,
//!   and a process killed at any point leaves one of the two.
//! * `DIR/ipam-state.lock` is `flock`ed exclusively for each commit, so several
//!   processes on one machine serialise their writes; readers take no lock.
//! * Each process caches the parsed state and re-reads the file only when its
//!   revision (the first field of the file) has changed.
//!
//! The calls block on file I/O and on the lock (held only for one commit);
//! the async interface exists so that the allocator is the same for all stores.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{in_scope, Expect, Key, Object, Revision, Scope, Store, StoreError, Versioned, Write};
use crate::block::{AllocationBlock, BlockAffinity, IpamHandle};

/// Name of the state file inside a datastore directory.
pub const STATE_FILE: &str = "ipam-state.json";
/// Name of the lock file inside a datastore directory.
pub const LOCK_FILE: &str = "ipam-state.lock";
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
    revision: Revision,
    objects: BTreeMap<Key, Versioned<Object>>,
}

struct Inner {
    lock_file: Option<File>,
    cache: Option<State>,
}

/// IPAM state in a datastore directory (see the module docs).
pub struct FileStore {
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
            state_path: dir.join(STATE_FILE),
            dir,
            inner: Mutex::new(Inner { lock_file: None, cache: None }),
        })
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
        Ok(State { revision: file.revision, objects })
    }

    /// Brings the cache up to date with the file and returns it.
    fn current<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut State, StoreError> {
        let rev = self.disk_revision()?;
        let stale = inner.cache.as_ref().is_none_or(|c| c.revision != rev);
        if stale {
            inner.cache = Some(self.read_state()?);
        }
        Ok(inner.cache.get_or_insert_with(State::default))
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

    fn commit_sync(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut inner = self.lock_inner();
        if inner.lock_file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.lock_path())
                .map_err(io_err(format!("opening {}", self.lock_path().display())))?;
            inner.lock_file = Some(f);
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

    fn commit_locked(&self, inner: &mut Inner, writes: Vec<Write>) -> Result<(), StoreError> {
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
        state.revision += 1;
        for w in writes {
            match w.value {
                Some(value) => {
                    let revision = state.revision;
                    state.objects.insert(w.key, Versioned { value, revision });
                }
                None => {
                    state.objects.remove(&w.key);
                }
            }
        }
        let written = self.write_state(state);
        if written.is_err() {
            // The cache now holds a state that may not be on disk: drop it so
            // the next call re-reads the file.
            inner.cache = None;
        }
        written
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
