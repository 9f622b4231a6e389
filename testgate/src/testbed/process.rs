//! Child processes stopped and reaped on drop, and scratch directories removed on drop;
//! both entered in the cleanup registry while they exist.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::cleanup::{self, forget_pid, track_pid};
use super::command::{command_line, run, CommandError};
use super::netns::unique_name;

/// A child process stopped on drop: SIGCONT (a stopped process must run to act on
/// SIGTERM) and SIGTERM, then SIGKILL if it has not exited after the grace period (none:
/// SIGKILL at once); always reaped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    grace: Duration,
}

impl Process {
    /// The grace period [`Process::spawn`] and [`Process::adopt`] give.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

    /// Starts `cmd` (with the stdio it was given) as `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Process, CommandError> {
        let child = cmd
            .spawn()
            .map_err(|e| CommandError { command: command_line(cmd), detail: format!("cannot start {name}: {e}") })?;
        Ok(Process::adopt(name, child))
    }

    /// Takes charge of a child started elsewhere.
    pub fn adopt(name: &str, child: Child) -> Process {
        track_pid(child.id());
        Process { name: name.to_string(), child, grace: Process::DEFAULT_GRACE }
    }

    /// Sets how long the process has to exit after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Process {
        self.grace = grace;
        self
    }

    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether it is still running (not yet exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` by name (`"STOP"`, `"CONT"`, `"TERM"`, …) with `kill -s`.
    pub fn signal(&self, signal: &str) -> Result<(), CommandError> {
        run(Command::new("kill").args(["-s", signal, &self.pid().to_string()])).map(|_| ())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() && !self.grace.is_zero() {
            let _ = cleanup::send(self.pid(), rustix::process::Signal::CONT);
            let _ = cleanup::send(self.pid(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline && self.running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_pid(self.child.id());
    }
}

/// Gives a child that was asked to stop (its stdin closed, a command sent) `grace` to
/// exit by itself, kills it otherwise, reaps it and takes it out of the cleanup registry.
pub fn reap(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    forget_pid(child.id());
}

/// A scratch directory (configuration files, logs, control sockets) under the system's
/// temporary directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<tmp>/`[`unique_name`]`(prefix)`.
    pub fn new(prefix: &str) -> Result<ScratchDir, String> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        cleanup::registry().dirs.push(path.clone());
        Ok(ScratchDir { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        cleanup::registry().dirs.retain(|d| d != &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_process_is_stopped_reaped_and_forgotten() {
        let p = Process::spawn("sleeper", Command::new("sleep").arg("30")).unwrap();
        let pid = p.pid();
        assert!(cleanup::registry().pids.contains(&pid));
        drop(p);
        assert!(!cleanup::registry().pids.contains(&pid));
        // Reaped: no zombie left under that pid for us.
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || !is_our_zombie(pid));
    }

    fn is_our_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }

    #[test]
    fn a_process_that_cannot_start_names_the_command() {
        let e = Process::spawn("ghost", &mut Command::new("/nonexistent/testgate-ghost")).unwrap_err();
        assert!(e.command.contains("testgate-ghost") && e.detail.contains("cannot start ghost"), "{e}");
    }

    #[test]
    fn scratch_dir_is_registered_and_removed() {
        let d = ScratchDir::new("testgate-scratch").unwrap();
        let path = d.path().to_path_buf();
        assert!(path.is_dir() && cleanup::registry().dirs.contains(&path));
        drop(d);
        assert!(!path.exists() && !cleanup::registry().dirs.contains(&path));
    }
}
