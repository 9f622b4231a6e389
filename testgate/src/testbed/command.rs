//! Running a program and saying what failed: the command line, its exit status and stderr.

use std::fmt;
use std::process::Command;

/// A command that could not be started or exited non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command line, as `program arg arg…`.
    pub command: String,
    /// Why: "cannot start: …", or the exit status with stderr (and stdout, if any).
    pub detail: String,
}

impl CommandError {
    /// Whether the detail contains `text` (e.g. "table does not exist", "File exists").
    pub fn mentions(&self, text: &str) -> bool {
        self.detail.contains(text)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.command, self.detail)
    }
}

impl std::error::Error for CommandError {}

impl From<CommandError> for String {
    fn from(e: CommandError) -> String {
        e.to_string()
    }
}

impl From<CommandError> for std::io::Error {
    fn from(e: CommandError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// The command line of `cmd` as a shell user would type it (program and arguments,
/// space-separated; no quoting).
pub fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its stdout; an error names the command and
/// carries its exit status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, CommandError> {
    let command = command_line(cmd);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => return Err(CommandError { command, detail: format!("cannot start: {e}") }),
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut detail = format!("{}: {}", out.status, stderr.trim());
    if !stdout.trim().is_empty() {
        detail.push_str(&format!(" (stdout: {})", stdout.trim()));
    }
    Err(CommandError { command, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_joins_program_and_args() {
        let mut c = Command::new("ip");
        c.args(["-n", "x", "link", "set", "lo", "up"]);
        assert_eq!(command_line(&c), "ip -n x link set lo up");
    }

    #[test]
    fn run_returns_stdout() {
        assert_eq!(run(Command::new("sh").args(["-c", "echo hi"])).unwrap(), "hi\n");
    }

    #[test]
    fn run_failure_names_command_status_and_stderr() {
        let e = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert_eq!(e.command, "sh -c echo oops >&2; exit 3");
        assert!(e.detail.contains("exit status: 3") && e.mentions("oops"), "{e}");
    }

    #[test]
    fn run_of_a_missing_program_says_it_could_not_start() {
        let e = run(&mut Command::new("/nonexistent/testgate-no-such-program")).unwrap_err();
        assert!(e.detail.starts_with("cannot start: "), "{e}");
        let io: std::io::Error = e.clone().into();
        assert_eq!(io.to_string(), e.to_string());
    }
}
