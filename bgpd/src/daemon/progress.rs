//! Whether the daemon's long-lived tasks keep up. Each (the RIB, the
//! kernel, BFD) counts the commands handed to it and the commands it
//! finished; one that has commands waiting and has finished none for
//! [`STALL_LIMIT`] is stuck, and `/healthz` says so, so that the kubelet
//! restarts bgpd (gracefully: the kernel routes and the peers' graceful
//! restart keep forwarding) instead of leaving a node that holds its
//! sessions and stale routes while it processes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// How long a task may have work waiting without finishing any before it
/// counts as stuck: far above the longest batch (a full table into the RIB
/// or the kernel takes seconds), far below what a user would wait.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The work counters of one task.
#[derive(Debug)]
pub struct Progress {
    name: &'static str,
    queued: AtomicU64,
    done: AtomicU64,
    /// Milliseconds since [`epoch`] of the last finished command, or of
    /// the moment work arrived at an idle task.
    since: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

impl Progress {
    /// Counters for the task `name`.
    pub fn new(name: &'static str) -> Arc<Progress> {
        Arc::new(Progress {
            name,
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            since: AtomicU64::new(millis(Instant::now())),
        })
    }

    /// A command was handed to the task.
    pub fn queued(&self) {
        self.queued_at(Instant::now());
    }

    fn queued_at(&self, now: Instant) {
        if self.queued.fetch_add(1, Ordering::AcqRel) == self.done.load(Ordering::Acquire) {
            // An idle task: the wait starts now, not at its last command.
            self.since.store(millis(now), Ordering::Release);
        }
    }

    /// The task finished `n` commands.
    pub fn done(&self, n: u64) {
        self.done_at(n, Instant::now());
    }

    fn done_at(&self, n: u64, now: Instant) {
        self.done.fetch_add(n, Ordering::AcqRel);
        self.since.store(millis(now), Ordering::Release);
    }

    /// Commands handed to the task and not finished yet.
    pub fn waiting(&self) -> u64 {
        self.queued.load(Ordering::Acquire).saturating_sub(self.done.load(Ordering::Acquire))
    }

    /// Why the task is stuck, if it is: work waiting and none finished for
    /// at least `limit`.
    pub fn stuck(&self, now: Instant, limit: Duration) -> Option<String> {
        let waiting = self.waiting();
        let idle = Duration::from_millis(millis(now).saturating_sub(self.since.load(Ordering::Acquire)));
        (waiting > 0 && idle >= limit).then(|| {
            format!("{} task stuck: {waiting} commands waiting, none finished for {} s", self.name, idle.as_secs())
        })
    }
}

/// The sending side of a task's command channel, counting what it sends.
pub struct Tracked<T> {
    tx: mpsc::UnboundedSender<T>,
    progress: Arc<Progress>,
}

impl<T> std::fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracked({}, {} waiting)", self.progress.name, self.progress.waiting())
    }
}

impl<T> Clone for Tracked<T> {
    fn clone(&self) -> Self {
        Tracked { tx: self.tx.clone(), progress: self.progress.clone() }
    }
}

impl<T> Tracked<T> {
    /// Sends a command (dropped if the task has ended).
    pub fn send(&self, cmd: T) {
        if self.tx.send(cmd).is_ok() {
            self.progress.queued();
        }
    }
}

/// A command channel for the task `name`: the sender, the receiver, and
/// the counters the task reports its finished commands to.
pub fn channel<T>(name: &'static str) -> (Tracked<T>, mpsc::UnboundedReceiver<T>, Arc<Progress>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Progress::new(name);
    (Tracked { tx, progress: progress.clone() }, rx, progress)
}

/// Ends the process on a panic in any thread or task: tokio would otherwise
/// keep the process (and its sessions, and its kernel routes) alive with the
/// panicked task gone. The exit is a crash to the peers and the kubelet: the
/// routes stay in the kernel and with graceful restart at the peers, and the
/// next run resumes as after any crash.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("panic: {info}; exiting so that bgpd is restarted");
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

/// The exit code after a panic (EX_SOFTWARE).
pub const PANIC_EXIT_CODE: i32 = 70;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_task_is_not_stuck_and_a_busy_one_is_only_after_the_limit() {
        let p = Progress::new("rib");
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        assert_eq!(p.stuck(t0 + Duration::from_secs(3600), limit), None, "nothing waiting: idle, not stuck");
        // Work arrives after a long idle time: the wait counts from then.
        p.queued_at(t0 + Duration::from_secs(3600));
        p.queued_at(t0 + Duration::from_secs(3600));
        assert_eq!(p.stuck(t0 + Duration::from_secs(3610), limit), None);
        let why = p.stuck(t0 + Duration::from_secs(3631), limit).expect("stuck after 31 s with 2 waiting");
        assert!(why.contains("rib task stuck: 2 commands waiting"), "{why}");
        // It finishes one: progress, not stuck, though one is still waiting.
        p.done_at(1, t0 + Duration::from_secs(3632));
        assert_eq!(p.waiting(), 1);
        assert_eq!(p.stuck(t0 + Duration::from_secs(3640), limit), None);
        assert!(p.stuck(t0 + Duration::from_secs(3663), limit).is_some());
        p.done_at(1, t0 + Duration::from_secs(3664));
        assert_eq!(p.stuck(t0 + Duration::from_secs(9999), limit), None, "all done");
    }

    #[test]
    fn a_panic_in_a_task_ends_the_process() {
        const CHILD: &str = "BGPD_TEST_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // In the child: a task panics while the runtime carries on.
            exit_on_panic();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                tokio::spawn(async { panic!("a bug in a task") });
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "daemon::progress::tests::a_panic_in_a_task_ends_the_process", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(PANIC_EXIT_CODE), "the process ends at once: {stderr}");
        assert!(stderr.contains("a bug in a task"), "{stderr}");
    }
}
