//! The restart marker: a file beside the control socket (`<node>.running`)
//! that bgpd refreshes while it runs, so that the next start knows whether
//! it is a restart and what it may claim about it to its peers (RFC 4724 §3:
//! the Restart State bit, the Forwarding State bits, selection deferral).
//!
//! - A start finds no marker, or one older than the window (as long as a peer
//!   may keep the node's routes: restart time plus long-lived stale time): a
//!   clean start (no R bit, no F bits, no deferral, stale kernel routes swept).
//! - A start finds a fresh one: a restart (R bit, deferral). The F bits are
//!   claimed only when the kernel was programmed before and is now (never
//!   with `--no-kernel`), and not in a crash loop: after
//!   [`MAX_QUICK_RESTARTS`] crashes in a row of runs shorter than
//!   [`STABLE_RUN`], bgpd stops claiming forwarding state, so its peers drop
//!   its stale routes instead of keeping them through restart after restart.
//! - A stop by SIGTERM (a restart on purpose) keeps the marker and notes the
//!   clean stop, with the BFD sessions the next run resumes; a decommission
//!   removes it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A run at least this long is not part of a crash loop.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// Crashes in a row of short runs after which forwarding state is no longer claimed.
pub const MAX_QUICK_RESTARTS: u32 = 3;

/// What this start says about the run before it (graceful restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restart {
    /// bgpd ran here within the restart time: the R bit, selection deferral.
    pub restarting: bool,
    /// The kernel kept forwarding for the previous run and this one programs
    /// it too: the F bits, and the previous run's kernel routes are kept
    /// until selection deferral ends.
    pub forwarding: bool,
}

/// What the marker holds (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The process.
    pid: u32,
    /// When it started, Unix seconds.
    started: u64,
    /// It programmed the kernel (its routes stay there when it stops).
    kernel: bool,
    /// Crashes in a row of short runs before this one.
    quick_restarts: u32,
    /// It stopped on purpose (SIGTERM: a restart), not by a crash.
    #[serde(default)]
    clean_stop: bool,
    /// The BFD sessions it left Up for the next run to resume (a clean stop).
    #[serde(default)]
    bfd: Vec<super::bfd::ResumeRecord>,
}

/// The marker of this run.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
    record: Record,
}

/// The assessment of a start: the restart, and how many quick crashes led to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// What to claim.
    pub restart: Restart,
    /// Crashes in a row of short runs up to this start.
    pub quick_restarts: u32,
    /// Why, for the log.
    pub why: String,
    /// The previous run's BFD sessions that the remotes still hold Up (their
    /// detection time since the stop has not passed): to resume.
    pub bfd: Vec<super::bfd::ResumeRecord>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Judges a start at `now` from the marker at `path` (its content and its
/// modification time, the last moment the previous run was alive).
/// `window`: how long a peer may keep this node's routes (its restart time
/// plus its long-lived stale time, the longest of the peers); `kernel`: this
/// run programs the kernel.
pub fn assess(path: &Path, now: SystemTime, window: Duration, kernel: bool) -> Assessment {
    let clean = |why: String| Assessment { restart: Restart::default(), quick_restarts: 0, why, bfd: Vec::new() };
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return clean("no restart marker: a clean start".into());
    };
    let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
    if age > window {
        return clean(format!(
            "the restart marker is {} s old, more than the restart time: a clean start",
            age.as_secs()
        ));
    }
    // A marker of an older bgpd holds only a process ID: it ran with the kernel, and did not say how it stopped.
    let prev: Record = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Record { kernel: true, ..Record::default() });
    let ran = Duration::from_secs(unix(modified).saturating_sub(prev.started));
    let crashed_short = !prev.clean_stop && prev.started > 0 && ran < STABLE_RUN;
    let quick_restarts = if crashed_short { prev.quick_restarts + 1 } else { 0 };
    let forwarding = kernel && prev.kernel && quick_restarts < MAX_QUICK_RESTARTS;
    let why = match (kernel, prev.kernel, quick_restarts >= MAX_QUICK_RESTARTS) {
        (_, _, true) => format!(
            "a restart after {quick_restarts} crashes in a row within {} s of starting: forwarding state is not claimed \
             (peers drop this node's stale routes)",
            STABLE_RUN.as_secs()
        ),
        (false, _, _) => "a restart; the kernel is not programmed (--no-kernel): forwarding state is not claimed".into(),
        (true, false, _) => "a restart after a run that did not program the kernel: forwarding state is not claimed".into(),
        (true, true, false) => format!(
            "a restart (the previous run was alive {} s ago{}): forwarding state preserved",
            age.as_secs(),
            if prev.clean_stop { ", stopped on purpose" } else { ", it did not stop cleanly" }
        ),
    };
    let bfd = if prev.clean_stop {
        prev.bfd.into_iter().filter(|r| r.remote_detection_time() > age).collect()
    } else {
        Vec::new()
    };
    Assessment { restart: Restart { restarting: true, forwarding }, quick_restarts, why, bfd }
}

impl Marker {
    /// Writes the marker of this run (process `pid`, started `now`).
    pub fn create(path: &Path, now: SystemTime, kernel: bool, quick_restarts: u32) -> std::io::Result<Marker> {
        let record = Record {
            pid: std::process::id(),
            started: unix(now),
            kernel,
            quick_restarts,
            clean_stop: false,
            bfd: Vec::new(),
        };
        let m = Marker { path: path.to_path_buf(), record };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        m.write()?;
        Ok(m)
    }

    fn write(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("running.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.record).unwrap_or_default())?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Notes that this run is alive (the modification time).
    pub fn touch(&self) {
        if let Ok(f) = std::fs::File::options().write(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// This run stops on purpose for a restart: the marker stays, fresh,
    /// with the BFD sessions to resume.
    pub fn clean_stop(&mut self, bfd: Vec<super::bfd::ResumeRecord>) -> std::io::Result<()> {
        self.record.clean_stop = true;
        self.record.bfd = bfd;
        self.write()
    }

    /// This node is decommissioned: the next start is a clean one.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    /// A marker whose run started `ran` before it was last touched, `age` ago.
    fn marker(dir: &Path, record: &Record, ran: u64, age: u64) -> (PathBuf, SystemTime) {
        let now = SystemTime::now();
        let touched = now - Duration::from_secs(age);
        let path = dir.join("n1.running");
        let r = Record { started: unix(touched) - ran, ..record.clone() };
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(touched).unwrap();
        (path, now)
    }

    #[test]
    fn no_marker_or_an_old_one_is_a_clean_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = assess(&dir.path().join("n1.running"), SystemTime::now(), WINDOW, true);
        assert_eq!(a.restart, Restart::default());
        let (path, now) = marker(dir.path(), &Record { kernel: true, ..Record::default() }, 3600, 121);
        assert_eq!(assess(&path, now, WINDOW, true).restart, Restart::default());
    }

    #[test]
    fn a_fresh_marker_is_a_restart_with_forwarding_state() {
        let dir = tempfile::tempdir().unwrap();
        let (path, now) = marker(dir.path(), &Record { kernel: true, clean_stop: true, ..Record::default() }, 3600, 2);
        let a = assess(&path, now, WINDOW, true);
        assert_eq!(a.restart, Restart { restarting: true, forwarding: true });
        assert_eq!(a.quick_restarts, 0);
    }

    #[test]
    fn no_kernel_never_claims_forwarding_state() {
        let dir = tempfile::tempdir().unwrap();
        let (path, now) = marker(dir.path(), &Record { kernel: true, ..Record::default() }, 3600, 2);
        assert_eq!(assess(&path, now, WINDOW, false).restart, Restart { restarting: true, forwarding: false });
        let (path, now) = marker(dir.path(), &Record { kernel: false, ..Record::default() }, 3600, 2);
        assert_eq!(assess(&path, now, WINDOW, true).restart, Restart { restarting: true, forwarding: false });
    }

    #[test]
    fn a_crash_loop_stops_claiming_forwarding_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut quick = 0;
        for i in 1..=MAX_QUICK_RESTARTS {
            let (path, now) =
                marker(dir.path(), &Record { kernel: true, quick_restarts: quick, ..Record::default() }, 5, 1);
            let a = assess(&path, now, WINDOW, true);
            assert_eq!(a.quick_restarts, i);
            assert_eq!(a.restart.forwarding, i < MAX_QUICK_RESTARTS, "crash {i}: {}", a.why);
            assert!(a.restart.restarting);
            quick = a.quick_restarts;
        }
        // A run that lasted, or a stop on purpose, ends the count.
        let (path, now) =
            marker(dir.path(), &Record { kernel: true, quick_restarts: quick, ..Record::default() }, 600, 1);
        assert_eq!(assess(&path, now, WINDOW, true).quick_restarts, 0);
        let r = Record { kernel: true, quick_restarts: quick, clean_stop: true, ..Record::default() };
        let (path, now) = marker(dir.path(), &r, 5, 1);
        assert!(assess(&path, now, WINDOW, true).restart.forwarding);
    }

    /// A BFD session slowed down to 1 s x `mult` before the stop.
    fn bfd_record(mult: u8) -> super::super::bfd::ResumeRecord {
        super::super::bfd::ResumeRecord {
            peer: "tor".into(),
            addr: "10.0.0.1".parse().unwrap(),
            multihop: false,
            session: bgpd_proto::bfd::BfdResume {
                local_discr: 7,
                remote_discr: 9,
                remote_min_rx: 300_000,
                remote_desired_min_tx: 300_000,
                remote_detect_mult: 3,
                desired_min_tx: 1_000_000,
                detect_mult: mult,
            },
        }
    }

    #[test]
    fn bfd_sessions_are_resumed_after_a_clean_stop_within_their_detection_time() {
        let dir = tempfile::tempdir().unwrap();
        let clean =
            Record { kernel: true, clean_stop: true, bfd: vec![bfd_record(60), bfd_record(5)], ..Record::default() };
        let (path, now) = marker(dir.path(), &clean, 3600, 10);
        let a = assess(&path, now, WINDOW, true);
        assert_eq!(a.bfd, [bfd_record(60)], "the remote held the 5 s session only 5 s: gone");
        // A crash leaves nothing to resume (the sessions were never slowed down).
        let crashed = Record { clean_stop: false, ..clean };
        let (path, now) = marker(dir.path(), &crashed, 3600, 1);
        assert!(assess(&path, now, WINDOW, true).bfd.is_empty());
    }

    #[test]
    fn an_older_marker_holding_only_a_pid_is_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.running");
        std::fs::write(&path, "4242").unwrap();
        let a = assess(&path, SystemTime::now(), WINDOW, true);
        assert_eq!(a.restart, Restart { restarting: true, forwarding: true });
    }

    #[test]
    fn create_clean_stop_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/n1.running");
        let mut m = Marker::create(&path, SystemTime::now(), true, 2).unwrap();
        let r: Record = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((r.kernel, r.quick_restarts, r.clean_stop), (true, 2, false));
        m.touch();
        m.clean_stop(vec![bfd_record(60)]).unwrap();
        let r: Record = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(r.clean_stop);
        assert_eq!(r.bfd, [bfd_record(60)]);
        m.remove().unwrap();
        assert!(!path.exists());
        m.remove().unwrap();
    }
}
