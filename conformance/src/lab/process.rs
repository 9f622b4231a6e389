//! Daemons run by a lab: output to a log file, stopped on `Drop`.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Names a process started by [`super::Lab::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(pub(super) usize);

pub(super) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub(super) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> io::Result<Proc> {
        // Append: a restarted daemon keeps one log.
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name} ({cmd:?}): {e}")))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn signal(&self, signal: &str) -> io::Result<()> {
        super::netns::run(Command::new("kill").args(["-s", signal, &self.child.id().to_string()])).map(|_| ())
    }

    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        // A stopped process must be continued to act on SIGTERM.
        let _ = self.signal("CONT");
        let _ = self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
