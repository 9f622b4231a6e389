//! Daemons run by a lab: output to a log file, stopped on `Drop` (`testgate::testbed::Process`).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use testgate::testbed::Process;

/// Names a process started by [`super::Lab::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(pub(super) usize);

/// A daemon and its log; stopped on drop (SIGTERM, then SIGKILL after 5 s) by the test
/// bed's [`Process`].
pub(super) struct Proc {
    process: Process,
    log: PathBuf,
}

impl Proc {
    pub(super) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> io::Result<Proc> {
        // Append: a restarted daemon keeps one log.
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let process = Process::spawn(name, cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)))?
            .with_grace(Duration::from_secs(5));
        Ok(Proc { process, log })
    }

    pub(super) fn name(&self) -> &str {
        self.process.name()
    }

    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(super) fn signal(&self, signal: &str) -> io::Result<()> {
        Ok(self.process.signal(signal)?)
    }

    pub(super) fn running(&mut self) -> bool {
        self.process.running()
    }

    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
