//! The file datastore, watched with inotify: the directory of the file (or the
//! datastore directory) is watched, so that an edit in place, a file renamed over
//! the datastore (what editors and `kubectl`-style tools do) and a file deleted and
//! created again are all seen. A notification is acted on at once when it says that
//! a file is whole (`IN_CLOSE_WRITE`: its writer closed it; `IN_MOVED_TO`: renamed
//! into place); a file written to but not closed yet (`IN_MODIFY`), created, removed
//! or renamed away is read once it has been left alone for [`SETTLE`], so that a
//! file caught half written is not taken for the whole. A file that cannot be read
//! marks the datastore unreachable.
//!
//! A poll stays as a fallback: every [`SLOW_POLL`] while inotify watches the
//! directories (for filesystems that send no notifications, such as NFS edits made
//! on another host, and for what the notifications cannot show, such as a symlink's
//! target edited in a directory not watched), every [`POLL`] while it cannot (no
//! inotify, a directory that does not exist yet). The poll compares each file's
//! length, modification time and inode with the last read, and reads the files once
//! they differ and have stayed the same for one more poll.
//!
//! The `bgpd-ipam` file store in the same directory (`ipam-state.json` and its
//! journal, see [`ipam_store`]) is read at once on any notification about its
//! files: its snapshot is only ever replaced whole (rename), and its reader ignores
//! a journal line not yet complete, so there is nothing half written to wait out. A
//! store that cannot be read keeps the blocks last read and says why in the feed's
//! notes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipam::store::file::{FileStore, LOCK_FILE};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Publisher;
use crate::datastore::{ipam_store, source, IpamObjects, SourceText};

/// How long a file written to, and not closed, must be left alone before it is read.
pub(crate) const SETTLE: Duration = Duration::from_millis(20);
/// The fallback poll while inotify watches every directory.
const SLOW_POLL: Duration = Duration::from_millis(500);
/// The poll while inotify cannot watch (the only way changes are seen then).
const POLL: Duration = Duration::from_millis(20);

/// A file's (path, length, modification time, inode).
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

/// Fingerprint of the datastore files, to notice edits when polling. The IPAM
/// store's files are not part of it ([`IpamWatch`] has its own).
fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.modified().ok(), m.ino()));
        }
    };
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            let mut v: Vec<PathBuf> =
                rd.flatten().filter(|e| !ipam_store::is_store_file(&e.file_name())).map(|e| e.path()).collect();
            v.sort();
            v.into_iter().for_each(&mut add);
        }
    } else {
        add(path.to_path_buf());
    }
    out
}

/// What a notification says about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Closed after writing, or renamed into place: whole.
    Whole,
    /// Written to and still open, created, removed, renamed away: perhaps not
    /// whole yet (or about to come back).
    Unsettled,
}

impl Change {
    /// The change an inotify event reports, if it is one that matters.
    fn of(flags: ReadFlags) -> Option<Change> {
        if flags.intersects(ReadFlags::CLOSE_WRITE | ReadFlags::MOVED_TO) {
            Some(Change::Whole)
        } else if flags.intersects(
            ReadFlags::MODIFY | ReadFlags::CREATE | ReadFlags::DELETE | ReadFlags::MOVED_FROM | ReadFlags::ATTRIB,
        ) {
            Some(Change::Unsettled)
        } else {
            None
        }
    }
}

/// When to read the YAML after notifications (a pure state machine on the time
/// it is given): at once when every file it was told about is whole, else once
/// the last one touched has been left alone for [`SETTLE`].
#[derive(Debug)]
struct Settle {
    /// How long a file not known to be whole must be left alone ([`SETTLE`]).
    settle: Duration,
    /// A read is wanted (since then).
    wanted: Option<Instant>,
    /// Files not known to be whole, with when each was last touched.
    unsettled: HashMap<OsString, Instant>,
}

impl Settle {
    fn new(settle: Duration) -> Settle {
        Settle { settle, wanted: None, unsettled: HashMap::new() }
    }

    /// Takes note of a change to file `name`.
    fn note(&mut self, name: &OsStr, change: Change, now: Instant) {
        match change {
            Change::Whole => {
                self.unsettled.remove(name);
            }
            Change::Unsettled => {
                self.unsettled.insert(name.to_owned(), now);
            }
        }
        self.wanted.get_or_insert(now);
    }

    /// `name` was renamed to another name of the datastore: nothing is half
    /// written under the old one.
    fn renamed_away(&mut self, name: &OsStr) {
        self.unsettled.remove(name);
    }

    /// When the wanted read is due, if one is wanted.
    fn due(&self) -> Option<Instant> {
        let wanted = self.wanted?;
        Some(self.unsettled.values().map(|t| *t + self.settle).fold(wanted, Instant::max))
    }

    /// Whether the read is due at `now`; if so, it is no longer wanted.
    fn take(&mut self, now: Instant) -> bool {
        if self.due().is_some_and(|d| d <= now) {
            self.wanted = None;
            self.unsettled.clear();
            true
        } else {
            false
        }
    }
}

/// One directory inotify watches, and which of its files matter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dir {
    path: PathBuf,
    /// The datastore file's name in it; `None`: the datastore is this
    /// directory, and each file that [`source::read`] reads matters.
    file: Option<OsString>,
    /// Whether the IPAM file store is here.
    ipam: bool,
}

impl Dir {
    /// Whether a notification about `name` may concern the YAML. Names that start
    /// with `..` always do: a Kubernetes ConfigMap volume publishes an update by
    /// renaming a `..data` symlink.
    fn yaml(&self, name: &OsStr) -> bool {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"..") {
            return true;
        }
        match &self.file {
            Some(f) => f == name,
            None => {
                !bytes.starts_with(b".")
                    && [&b".yaml"[..], b".yml", b".json"].iter().any(|ext| bytes.ends_with(ext))
                    && !ipam_store::is_store_file(name)
            }
        }
    }

    /// Whether a notification about `name` concerns the IPAM file store (its
    /// snapshot or a journal; not its lock nor the snapshot being written).
    fn ipam(&self, name: &OsStr) -> bool {
        self.ipam
            && ipam_store::is_store_file(name)
            && name != OsStr::new(LOCK_FILE)
            && !name.as_bytes().ends_with(b".tmp")
    }
}

/// The directories to watch for the datastore at `path`: the directory of the
/// file (or the datastore directory), where the IPAM store is too, and for a
/// file that is a symlink the directory of its target.
fn dirs(path: &Path) -> Vec<Dir> {
    let store = ipam_store::store_dir(path);
    if path.is_dir() {
        return vec![Dir { path: store, file: None, ipam: true }];
    }
    let mut out = vec![Dir { path: store.clone(), file: path.file_name().map(OsStr::to_owned), ipam: true }];
    if let Ok(target) = std::fs::canonicalize(path) {
        let same = std::fs::canonicalize(&store).is_ok_and(|s| target.parent() == Some(s.as_path()));
        if let (false, Some(parent)) = (same, target.parent()) {
            out.push(Dir { path: parent.to_path_buf(), file: target.file_name().map(OsStr::to_owned), ipam: false });
        }
    }
    out
}

/// An inotify event, owned.
#[derive(Debug)]
struct Event {
    wd: i32,
    flags: ReadFlags,
    cookie: u32,
    name: Option<OsString>,
}

/// The inotify instance and its watches.
struct Notify {
    fd: AsyncFd<OwnedFd>,
    watches: HashMap<i32, Dir>,
}

impl Notify {
    fn new() -> std::io::Result<Notify> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        // Deprecated in tokio 1.54 for an `AsRawFd` that may hand out a descriptor
        // it does not own (tokio #8587); its replacement `register` is unsafe for
        // that reason. An `OwnedFd` owned by the `AsyncFd` is the sound case.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Notify { fd, watches: HashMap::new() })
    }

    /// Watches exactly `wanted` (adding and removing watches); returns whether
    /// every one is watched, and whether one was added.
    fn refresh(&mut self, wanted: &[Dir]) -> (bool, bool) {
        let stale: Vec<i32> = self.watches.iter().filter(|(_, d)| !wanted.contains(d)).map(|(wd, _)| *wd).collect();
        for wd in stale {
            self.watches.remove(&wd);
            let _ = inotify::remove_watch(self.fd.get_ref(), wd);
        }
        let flags = WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        let (mut all, mut added) = (true, false);
        let missing: Vec<&Dir> = wanted.iter().filter(|d| !self.watches.values().any(|w| w == *d)).collect();
        for d in missing {
            match inotify::add_watch(self.fd.get_ref(), &d.path, flags) {
                Ok(wd) => {
                    debug!(dir = %d.path.display(), "watching the datastore directory");
                    self.watches.insert(wd, d.clone());
                    added = true;
                }
                Err(e) => {
                    debug!(dir = %d.path.display(), error = %e, "cannot watch the datastore directory yet");
                    all = false;
                }
            }
        }
        (all, added)
    }

    /// Waits for notifications and returns those queued.
    async fn events(&self) -> std::io::Result<Vec<Event>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut out = Vec::new();
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            let drained = {
                let mut reader = inotify::Reader::new(guard.get_ref().get_ref(), &mut buf);
                loop {
                    match reader.next() {
                        Ok(e) => out.push(Event {
                            wd: e.wd(),
                            flags: e.events(),
                            cookie: e.cookie(),
                            name: e.file_name().map(|n| OsStr::from_bytes(n.to_bytes()).to_owned()),
                        }),
                        Err(rustix::io::Errno::AGAIN) => break true,
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if drained {
                guard.clear_ready();
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The IPAM file store beside the YAML, as last read.
struct IpamWatch {
    dir: PathBuf,
    /// Opened on first sight of a store; keeps its cache, so a new journal line
    /// costs reading that line.
    store: Option<FileStore>,
    last: Option<Vec<(PathBuf, u64, Option<SystemTime>)>>,
    /// The objects last read; `None` while the directory holds no store.
    objects: Option<IpamObjects>,
    /// Why the last read failed, if it did.
    note: Option<String>,
}

impl IpamWatch {
    fn new(datastore: &Path) -> IpamWatch {
        IpamWatch { dir: ipam_store::store_dir(datastore), store: None, last: None, objects: None, note: None }
    }

    /// Reads the store again if its files changed (or, with `force`, whatever the
    /// fingerprint says: a notification came); returns whether the source or the
    /// note changed.
    fn poll(&mut self, force: bool) -> bool {
        let now = ipam_store::fingerprint(&self.dir);
        if !force && self.last.as_ref() == Some(&now) {
            return false;
        }
        let gone = now.is_empty();
        self.last = Some(now);
        if gone {
            self.store = None;
            let had = self.objects.take().is_some() | self.note.take().is_some();
            return had;
        }
        let read = match &self.store {
            Some(store) => ipam_store::read(store, &self.dir),
            None => FileStore::open(&self.dir).and_then(|store| {
                let s = ipam_store::read(&store, &self.dir);
                self.store = Some(store);
                s
            }),
        };
        let before = (self.objects.clone(), self.note.clone());
        match read {
            Ok(objects) => {
                self.objects = Some(objects);
                self.note = None;
            }
            Err(e) => {
                // Read again once the files change; the last blocks read stay.
                warn!(dir = %self.dir.display(), error = %e, "IPAM file store unreadable");
                self.note = Some(format!(
                    "IPAM file store in {}: {e}; the blocks last read from it are kept",
                    self.dir.display()
                ));
            }
        }
        (self.objects.clone(), self.note.clone()) != before
    }
}

/// The YAML as last read.
struct YamlWatch {
    path: PathBuf,
    /// The fingerprint at the last complete read; `None` after a failed one.
    last: Option<Fingerprint>,
    /// A fingerprint that differed from `last` at the last poll.
    seen: Option<Fingerprint>,
    /// The sources last read completely.
    sources: Option<Vec<SourceText>>,
    /// The last read error logged (logged once until it changes or a read works).
    said: Option<String>,
}

impl YamlWatch {
    /// Reads the files; returns whether they were read.
    fn read(&mut self, out: &Publisher) -> bool {
        // Taken before reading: a change during the read is seen by the next poll.
        let now = fingerprint(&self.path);
        let t = std::time::Instant::now();
        match source::read(&self.path) {
            Ok(sources) => {
                let age = now.iter().filter_map(|f| f.2).max().and_then(|m| m.elapsed().ok());
                debug!(
                    read_us = t.elapsed().as_micros() as u64,
                    since_mtime_us = age.map(|a| a.as_micros() as u64),
                    "datastore files read"
                );
                self.last = Some(now);
                self.seen = None;
                self.sources = Some(sources);
                self.said = None;
                true
            }
            Err(e) => {
                // Read again on the next notification or poll, whatever the fingerprint says.
                self.last = None;
                let reason = e.to_string();
                if self.said.as_ref() != Some(&reason) {
                    warn!("datastore: {reason}; keeping the last good model");
                    self.said = Some(reason.clone());
                }
                out.unreachable(reason);
                false
            }
        }
    }

    /// The poll: whether the files changed and held still since the last poll.
    fn poll_due(&mut self) -> bool {
        let now = fingerprint(&self.path);
        if self.last.as_ref() == Some(&now) {
            self.seen = None;
            return false;
        }
        if self.seen.as_ref() == Some(&now) {
            return true;
        }
        self.seen = Some(now);
        false
    }
}

/// Waits for notifications, or forever without inotify.
async fn notifications(notify: Option<&Notify>) -> std::io::Result<Vec<Event>> {
    match notify {
        Some(n) => n.events().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn run(path: PathBuf, out: Publisher) {
    run_with(path, out, SETTLE).await;
}

/// [`run`] with another settle time (tests).
async fn run_with(path: PathBuf, out: Publisher, settle_time: Duration) {
    let mut notify = match Notify::new() {
        Ok(n) => Some(n),
        Err(e) => {
            warn!(error = %e, "no inotify: the file datastore is polled every {} ms", POLL.as_millis());
            None
        }
    };
    let mut watched = notify.as_mut().is_some_and(|n| n.refresh(&dirs(&path)).0);
    let mut yaml = YamlWatch { path: path.clone(), last: None, seen: None, sources: None, said: None };
    let mut ipam = IpamWatch::new(&path);
    let mut settle = Settle::new(settle_time);
    // The first read at once: the directories are watched already, so a file
    // being written now is read again when its writer is done.
    settle.note(OsStr::new(""), Change::Whole, Instant::now());
    let mut ipam_now = true;
    let mut next_poll = Instant::now() + POLL;
    // The last IN_MOVED_FROM of a datastore file (cookie, name), to pair with
    // its IN_MOVED_TO.
    let mut moved_from: Option<(u32, OsString)> = None;
    while !out.closed() {
        let due = settle.due();
        let mut poll_read = false;
        let mut changed = false;
        tokio::select! {
            events = notifications(notify.as_ref()) => match events {
                Ok(events) => {
                    let now = Instant::now();
                    for e in events {
                        let Some(n) = notify.as_mut() else { break };
                        handle(n, e, now, &mut settle, &mut ipam_now, &mut moved_from, &mut watched);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "inotify failed: the file datastore is polled every {} ms", POLL.as_millis());
                    notify = None;
                    watched = false;
                }
            },
            () = tokio::time::sleep_until(due.unwrap_or(next_poll)), if due.is_some() => {}
            () = tokio::time::sleep_until(next_poll) => {
                if let Some(n) = notify.as_mut() {
                    let (all, added) = n.refresh(&dirs(&path));
                    if added {
                        // A directory watched again: what changed meanwhile is read.
                        settle.note(OsStr::new(""), Change::Unsettled, Instant::now());
                        ipam_now = true;
                    }
                    watched = all;
                }
                // While a read is due anyway, the poll has nothing to add.
                poll_read = settle.due().is_none() && yaml.poll_due();
                changed |= ipam.poll(false);
                next_poll = Instant::now() + if watched { SLOW_POLL } else { POLL };
            }
        }
        let now = Instant::now();
        if std::mem::take(&mut ipam_now) {
            // A notification: read whatever the fingerprint says.
            changed |= ipam.poll(true);
        }
        if settle.take(now) || poll_read {
            changed |= yaml.read(&out);
            if let Some(n) = notify.as_mut() {
                // A symlink may point elsewhere now.
                watched = n.refresh(&dirs(&path)).0;
            }
        }
        // Published only while the YAML was read completely last time.
        if let (true, Some(sources), Some(_)) = (changed, &yaml.sources, &yaml.last) {
            let objects = ipam.objects.clone().unwrap_or_default();
            out.content(sources.clone(), objects, ipam.note.iter().cloned().collect());
        }
    }
}

/// Takes note of one inotify event.
fn handle(
    notify: &mut Notify,
    e: Event,
    now: Instant,
    settle: &mut Settle,
    ipam_now: &mut bool,
    moved_from: &mut Option<(u32, OsString)>,
    watched: &mut bool,
) {
    if e.flags.contains(ReadFlags::QUEUE_OVERFLOW) {
        // Events were lost: read everything.
        settle.note(OsStr::new(""), Change::Unsettled, now);
        *ipam_now = true;
        return;
    }
    if e.flags.intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF) {
        // The directory went (or moved): watched again by the next poll.
        if let Some(d) = notify.watches.remove(&e.wd) {
            let _ = inotify::remove_watch(notify.fd.get_ref(), e.wd);
            debug!(dir = %d.path.display(), "the datastore directory is gone");
        }
        *watched = false;
        settle.note(OsStr::new(""), Change::Unsettled, now);
        *ipam_now = true;
        return;
    }
    let (Some(dir), Some(name)) = (notify.watches.get(&e.wd), e.name.as_deref()) else { return };
    if e.flags.contains(ReadFlags::ISDIR) {
        return;
    }
    if dir.ipam(name) {
        *ipam_now = true;
    }
    if !dir.yaml(name) {
        return;
    }
    let Some(change) = Change::of(e.flags) else { return };
    if e.flags.contains(ReadFlags::MOVED_FROM) {
        *moved_from = Some((e.cookie, name.to_owned()));
    } else if e.flags.contains(ReadFlags::MOVED_TO) {
        if let Some((_, old)) = moved_from.take().filter(|(c, _)| *c == e.cookie) {
            settle.renamed_away(&old);
        }
    }
    settle.note(name, change, now);
}

#[cfg(test)]
mod tests;
