//! Group commit: one `fdatasync` of the journal acknowledges every commit
//! appended before it started, in whichever process it was appended.
//!
//! A writer appends its record under the commit lock (`ipam-state.lock`),
//! releases that lock, and only then waits for the disk here, so that other
//! writers append meanwhile. Waiting takes a second lock, the flush lock
//! (`ipam-journal.sync`), whose file also holds the *watermark*: how far the
//! journal is known to be on disk (snapshot revision and byte offset,
//! checksummed). Holding the flush lock, a writer whose record ends below the
//! watermark is done: a flush that started after its append has completed.
//! Otherwise it becomes the leader: it reads the journal's length, flushes the
//! journal (`fdatasync` covers every byte of the file, whoever wrote it) and
//! raises the watermark to that length. Writers that queued on the flush lock
//! meanwhile find themselves covered, so with N writers waiting one flush
//! acknowledges up to N commits.
//!
//! Why the watermark can be trusted:
//! * It is raised only to a length read before a flush that then succeeded,
//!   so every byte below it reached the disk. The journal is append-only, so
//!   a later flush covers every earlier append.
//! * The one rewrite of journal bytes, cutting off a torn tail left by a
//!   writer killed mid-append, happens under both locks and first lowers the
//!   watermark to the cut ([`GroupCommit::truncate`]); the bytes written
//!   there afterwards are covered only by a later flush.
//! * Compaction folds the journal into a snapshot that is flushed before the
//!   journal is removed, so it raises the watermark to the new snapshot's
//!   revision ([`GroupCommit::compacted`]): every commit of an older journal
//!   is on disk in the snapshot.
//! * The watermark file itself is never flushed. After a power loss it holds
//!   some value once written (each only after its flush), a torn value (the
//!   checksum fails: nothing is covered), or nothing; none claims a byte that
//!   is not on disk.
//!
//! The flush lock is never requested while the commit lock is wanted: a
//! writer takes it after releasing the commit lock, or (truncation,
//! compaction) while holding the commit lock, never the other way round.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{fnv1a, io_err};
use crate::store::{Revision, StoreError};

/// Name of the flush lock and watermark file inside a datastore directory.
pub const SYNC_FILE: &str = "ipam-journal.sync";

/// How far the journal is known to be on disk: the journal that continues
/// the snapshot of revision `base`, up to byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Revision of the snapshot the journal continues.
    pub base: Revision,
    /// Bytes of that journal on disk.
    pub offset: u64,
}

impl Durable {
    /// Bytes of the encoded watermark: base, offset and checksum, little-endian.
    const LEN: usize = 24;

    /// Whether a commit that ends at byte `end` of the journal of `base` is on
    /// disk: it is below the watermark, or its journal was folded into a
    /// newer (flushed) snapshot.
    pub fn covers(&self, base: Revision, end: u64) -> bool {
        self.base > base || (self.base == base && self.offset >= end)
    }

    fn encode(&self) -> [u8; Durable::LEN] {
        let mut out = [0u8; Durable::LEN];
        out[..8].copy_from_slice(&self.base.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        let sum = fnv1a(&out[..16]);
        out[16..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// `None` for a missing, short or damaged watermark: nothing is covered.
    fn decode(bytes: &[u8]) -> Option<Durable> {
        let bytes: &[u8; Durable::LEN] = bytes.get(..Durable::LEN)?.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        (fnv1a(&bytes[..16]) == word(16)).then(|| Durable { base: word(0), offset: word(8) })
    }
}

/// How a commit came to be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// This writer flushed the journal (and with it every commit appended so far).
    Led,
    /// A flush by another writer (in this process or another) covered it.
    Covered,
}

/// The flush lock and watermark of one datastore directory.
pub struct GroupCommit {
    path: PathBuf,
    /// The lock file, opened on first use. The mutex serialises this
    /// process's threads: `flock` is held per open file, so threads sharing
    /// the file would not exclude each other.
    file: Mutex<Option<File>>,
}

/// The flush lock, held until dropped.
struct Held<'a> {
    guard: MutexGuard<'a, Option<File>>,
}

impl Held<'_> {
    fn file(&self) -> &File {
        // Invariant: `GroupCommit::lock` opens the file before handing out `Held`.
        self.guard.as_ref().expect("flush lock file is open while held")
    }

    fn read(&self) -> Option<Durable> {
        let mut buf = [0u8; Durable::LEN];
        let n = self.file().read_at(&mut buf, 0).ok()?;
        Durable::decode(&buf[..n])
    }

    fn write(&self, durable: Durable) {
        // The watermark only saves flushes: when it cannot be written, the
        // next writer flushes again, which is slower but as safe.
        if let Err(e) = self.file().write_all_at(&durable.encode(), 0) {
            tracing::warn!(error = %e, "cannot record how far the IPAM journal is flushed");
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.guard.as_ref() {
            // Unlocking a valid descriptor cannot meaningfully fail; closing
            // it (or the process ending) would release the lock anyway.
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
        }
    }
}

impl GroupCommit {
    /// The flush lock of the datastore directory `dir`.
    pub fn new(dir: &Path) -> GroupCommit {
        GroupCommit { path: dir.join(SYNC_FILE), file: Mutex::new(None) }
    }

    fn lock(&self) -> Result<Held<'_>, StoreError> {
        // A panic while holding the mutex leaves nothing half-done here: the
        // watermark is written in one call and re-validated on every read.
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(io_err(format!("opening {}", self.path.display())))?;
            *guard = Some(f);
        }
        let held = Held { guard };
        rustix::fs::flock(held.file(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| StoreError::Io { context: format!("flock {}", self.path.display()), source: e.into() })?;
        Ok(held)
    }

    /// The watermark as last recorded (`None`: nothing known to be on disk).
    pub fn durable(&self) -> Result<Option<Durable>, StoreError> {
        Ok(self.lock()?.read())
    }

    /// Returns once the commit that ends at byte `end` of `journal` (the
    /// journal of snapshot `base`) is on disk, flushing the journal unless a
    /// flush that started after the append already covered it.
    pub fn wait_durable(&self, journal: &File, base: Revision, end: u64) -> Result<Flush, StoreError> {
        let held = self.lock()?;
        if held.read().is_some_and(|d| d.covers(base, end)) {
            return Ok(Flush::Covered);
        }
        let ctx = || format!("fdatasync of the IPAM journal ({})", self.path.display());
        // Every byte below `len` was written before the flush starts.
        let len = journal.metadata().map_err(io_err(ctx()))?.len();
        journal.sync_data().map_err(io_err(ctx()))?;
        held.write(Durable { base, offset: len.max(end) });
        Ok(Flush::Led)
    }

    /// Cuts `journal` (of snapshot `base`) to `len` bytes, first lowering the
    /// watermark to the cut so that what is written there next is flushed
    /// again. Called under the commit lock.
    pub fn truncate(&self, journal: &File, base: Revision, len: u64) -> Result<(), StoreError> {
        let held = self.lock()?;
        if let Some(d) = held.read().filter(|d| d.base == base && d.offset > len) {
            held.write(Durable { offset: len, ..d });
        }
        journal.set_len(len).map_err(io_err(format!("truncating the torn tail of the IPAM journal ({})", base)))
    }

    /// Records that the journals before snapshot `base` were folded into that
    /// snapshot, which is on disk. Called under the commit lock.
    pub fn compacted(&self, base: Revision) -> Result<(), StoreError> {
        let held = self.lock()?;
        if held.read().is_none_or(|d| d.base < base) {
            held.write(Durable { base, offset: 0 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(dir: &Path, bytes: &[u8]) -> File {
        let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join("j")).unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(bytes, len).unwrap();
        f
    }

    #[test]
    fn test_durable_covers_its_journal_prefix_and_older_journals() {
        let d = Durable { base: 5, offset: 100 };
        assert!(d.covers(5, 100));
        assert!(d.covers(5, 1));
        assert!(!d.covers(5, 101), "bytes past the watermark");
        assert!(d.covers(4, u64::MAX), "an older journal was folded into snapshot 5");
        assert!(!d.covers(6, 1), "a newer journal is not covered by an older one's flush");
    }

    #[test]
    fn test_durable_round_trip_and_damage_covers_nothing() {
        let d = Durable { base: 7, offset: 4096 };
        assert_eq!(Durable::decode(&d.encode()), Some(d));
        let mut torn = d.encode();
        torn[9] ^= 1;
        assert_eq!(Durable::decode(&torn), None);
        assert_eq!(Durable::decode(&d.encode()[..20]), None);
        assert_eq!(Durable::decode(&[]), None);
    }

    #[test]
    fn test_wait_durable_leads_then_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(dir.path());
        assert_eq!(g.durable().unwrap(), None);
        let j = journal(dir.path(), &[b'a'; 100]);
        assert_eq!(g.wait_durable(&j, 0, 100).unwrap(), Flush::Led);
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 0, offset: 100 }));
        // An earlier commit (ending at 60) is covered by that flush.
        assert_eq!(g.wait_durable(&j, 0, 60).unwrap(), Flush::Covered);
        // Two more appends; the first waiter's flush covers both.
        let j = journal(dir.path(), &[b'b'; 50]);
        let j2 = journal(dir.path(), &[b'c'; 30]);
        assert_eq!(g.wait_durable(&j, 0, 150).unwrap(), Flush::Led);
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 0, offset: 180 }));
        assert_eq!(g.wait_durable(&j2, 0, 180).unwrap(), Flush::Covered);
        // A second handle (another process) sees the same watermark.
        let other = GroupCommit::new(dir.path());
        assert_eq!(other.wait_durable(&j2, 0, 180).unwrap(), Flush::Covered);
    }

    #[test]
    fn test_truncate_lowers_the_watermark_to_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(dir.path());
        // A writer killed mid-append left 40 torn bytes, flushed by a leader.
        let j = journal(dir.path(), &[b'a'; 140]);
        assert_eq!(g.wait_durable(&j, 0, 100).unwrap(), Flush::Led);
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 0, offset: 140 }));
        // The next writer cuts them off and appends a shorter record there:
        // it is not covered by the flush of the torn bytes.
        g.truncate(&j, 0, 100).unwrap();
        assert_eq!(j.metadata().unwrap().len(), 100);
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 0, offset: 100 }));
        let j = journal(dir.path(), &[b'b'; 20]);
        assert_eq!(g.wait_durable(&j, 0, 120).unwrap(), Flush::Led);
        // A cut above the watermark leaves it alone.
        g.truncate(&j, 0, 130).unwrap();
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 0, offset: 120 }));
    }

    #[test]
    fn test_compaction_covers_every_older_journal() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(dir.path());
        let j = journal(dir.path(), &[b'a'; 10]);
        assert_eq!(g.wait_durable(&j, 0, 10).unwrap(), Flush::Led);
        g.compacted(2000).unwrap();
        assert_eq!(g.wait_durable(&j, 0, 999).unwrap(), Flush::Covered, "folded into snapshot 2000");
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 2000, offset: 0 }));
        // An older compaction reported late does not lower it.
        g.compacted(1000).unwrap();
        assert_eq!(g.durable().unwrap(), Some(Durable { base: 2000, offset: 0 }));
    }

    #[test]
    fn test_damaged_watermark_file_means_flush_again() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(dir.path());
        let j = journal(dir.path(), &[b'a'; 10]);
        assert_eq!(g.wait_durable(&j, 0, 10).unwrap(), Flush::Led);
        // What a power loss may leave of a watermark written but never flushed.
        std::fs::write(dir.path().join(SYNC_FILE), [0xffu8; 24]).unwrap();
        let g = GroupCommit::new(dir.path());
        assert_eq!(g.durable().unwrap(), None);
        assert_eq!(g.wait_durable(&j, 0, 10).unwrap(), Flush::Led);
    }
}
