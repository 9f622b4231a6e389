//! The one signal cleanup: what must not outlive the program (namespaces, child
//! processes, scratch directories) is entered in a registry while it exists, and on
//! SIGINT or SIGTERM the registry is cleaned up before the program exits.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// What exists now and must be removed if the program is interrupted.
#[derive(Debug, Default)]
pub struct Registry {
    /// Network namespaces, by name.
    pub namespaces: Vec<String>,
    /// Child processes, by pid.
    pub pids: Vec<u32>,
    /// Scratch directories.
    pub dirs: Vec<PathBuf>,
}

impl Registry {
    /// Kills the processes (SIGKILL), then deletes the namespaces, then the directories,
    /// and empties the registry. Failures are ignored: this is the last thing that runs.
    pub fn clean_up(&mut self) {
        for pid in self.pids.drain(..) {
            let _ = send(pid, rustix::process::Signal::KILL);
        }
        for ns in self.namespaces.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(std::process::Stdio::null()).status();
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { namespaces: Vec::new(), pids: Vec::new(), dirs: Vec::new() });

/// The process's registry.
pub(super) fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves plain lists behind: still usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Enters a child started without [`super::Process`] (its pid), to be killed on a signal.
pub fn track_pid(pid: u32) {
    registry().pids.push(pid);
}

/// Takes a pid out of the registry (the child was reaped).
pub fn forget_pid(pid: u32) {
    registry().pids.retain(|p| *p != pid);
}

pub(super) fn send(pid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("not a pid: {pid}")))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// What a program does on SIGINT or SIGTERM.
#[derive(Clone, Copy, Debug)]
pub enum OnSignal {
    /// Clean up the registry and exit with status 130.
    Exit,
    /// On the first signal, set the flag: the program ends its run and drops what it
    /// made. On the second, clean up the registry and exit with status 130.
    Interrupt(&'static AtomicBool),
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the signal cleanup (once per process; later calls keep the first `then`).
/// `who` starts the messages it prints ("sessions bench: interrupted, cleaning up").
pub fn on_signal(who: &'static str, then: OnSignal) -> Result<(), String> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("{who}: the signal handler's runtime: {e}"))?;
    let mut term = {
        let _g = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("{who}: handling SIGTERM: {e}"))?
    };
    let mut int = {
        let _g = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| format!("{who}: handling SIGINT: {e}"))?
    };
    let (armed_tx, armed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async {
            let _ = armed_tx.send(());
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                match then {
                    OnSignal::Interrupt(flag) if !flag.swap(true, Ordering::SeqCst) => {
                        eprintln!("{who}: interrupted, cleaning up (again to exit at once)");
                    }
                    _ => break,
                }
            }
        });
        eprintln!("{who}: interrupted, deleting what it made and exiting");
        registry().clean_up();
        std::process::exit(130);
    });
    armed_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| format!("{who}: the signal handler did not start"))?;
    let _ = INSTALLED.set(());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_kills_removes_and_empties() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let dir = std::env::temp_dir().join(format!("testgate-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let mut r = Registry {
            // Deleting a namespace that does not exist fails, and is ignored.
            namespaces: vec![format!("testgate-none-{}", std::process::id())],
            pids: vec![child.id()],
            dirs: vec![dir.clone()],
        };
        r.clean_up();
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep was killed: {status}");
        assert!(!dir.exists());
        assert!(r.namespaces.is_empty() && r.pids.is_empty() && r.dirs.is_empty());
    }

    #[test]
    fn tracked_pids_can_be_forgotten() {
        track_pid(u32::MAX - 7);
        assert!(registry().pids.contains(&(u32::MAX - 7)));
        forget_pid(u32::MAX - 7);
        assert!(!registry().pids.contains(&(u32::MAX - 7)));
    }

    /// Only the first signal is sent: the second would clean up and exit the test binary.
    #[test]
    fn first_signal_with_interrupt_sets_the_flag_and_does_not_exit() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        on_signal("testgate test", OnSignal::Interrupt(&FLAG)).unwrap();
        send(std::process::id(), rustix::process::Signal::TERM).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !FLAG.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(FLAG.load(Ordering::SeqCst), "SIGTERM did not set the flag");
        // Installed once: a second call keeps the first handler and succeeds.
        assert!(on_signal("testgate test", OnSignal::Exit).is_ok());
    }

    #[test]
    fn not_a_pid_is_an_error_not_a_signal_to_everyone() {
        assert!(send(0, rustix::process::Signal::KILL).is_err());
        assert!(send(u32::MAX, rustix::process::Signal::KILL).is_err());
    }
}
