//! The one gate for tests that need what a machine may lack: root, a program
//! (a daemon such as BIRD or etcd), the shared data folder, a kernel feature.
//!
//! The project's rule: a missing prerequisite fails the test under CI (`CI`
//! set to any non-empty value; `.ci/run` sets `CI=true`), and is a skip that
//! `cargo test` shows everywhere else. libtest captures what a passing test
//! prints with `print!`/`eprint!`, so a skip announced with `eprintln!` is
//! never seen; this crate writes the skip straight to the process's stderr
//! instead, counts it, and prints one summary line (`testgate: 2 tests
//! skipped: …`) after libtest's own result line when the test binary exits.
//!
//! ```no_run
//! #[test]
//! fn md5_right_password_up() {
//!     if !testgate::require_root_and_cmds("md5_right_password_up", &["ip", "bird", "birdc"]) {
//!         return;
//!     }
//!     // … the test proper
//! }
//! ```
//!
//! See `docs/testing.md`.

pub mod crd_schema;
pub mod rbac;
pub mod testbed;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, TryLockError};

/// The environment variable that marks a CI run.
pub const CI_VAR: &str = "CI";

/// The environment variable naming the shared data folder (default:
/// `../shared/data` beside the checkout).
pub const SHARED_DATA_VAR: &str = "BGPD_SHARED_DATA";

/// Whether this is a CI run: `CI` is set to any non-empty value (`true`,
/// `1`, `yes`; even `false` counts, so that no spelling turns the gate off).
pub fn in_ci() -> bool {
    ci_value().is_some()
}

fn ci_value() -> Option<String> {
    std::env::var_os(CI_VAR).filter(|v| !v.is_empty()).map(|v| v.to_string_lossy().into_owned())
}

/// Whether `test` may go on: `true` when `ok`; otherwise `missing` (what the
/// test needs, e.g. "the ipip module") fails the test under CI and is a
/// printed, counted skip (`false`) elsewhere.
#[track_caller]
pub fn require(test: &str, ok: bool, missing: impl Display) -> bool {
    ok || gate(test, &[missing.to_string()])
}

/// Whether `test` may go on: it runs as root (network namespaces, netlink
/// route writes, TCP MD5 keys need it). See [`require`].
#[track_caller]
pub fn require_root(test: &str) -> bool {
    check(test, true, &[])
}

/// Whether `test` may go on: `program` is on `PATH` (or, given as a path,
/// exists). See [`require`].
#[track_caller]
pub fn require_cmd(test: &str, program: &str) -> bool {
    check(test, false, &[program])
}

/// Whether `test` may go on: every one of `programs` is there; the skip or
/// failure names all that are missing. See [`require_cmd`].
#[track_caller]
pub fn require_cmds(test: &str, programs: &[&str]) -> bool {
    check(test, false, programs)
}

/// [`require_root`] and [`require_cmds`] at once, with one message naming
/// everything missing: what a network-namespace test needs.
#[track_caller]
pub fn require_root_and_cmds(test: &str, programs: &[&str]) -> bool {
    check(test, true, programs)
}

/// `relative` inside the shared data folder (`$BGPD_SHARED_DATA`, else
/// `../shared/data` beside the checkout), if it exists; otherwise gated as
/// [`require`] does: a failure under CI, a printed skip (`None`) elsewhere.
#[track_caller]
pub fn shared_data(test: &str, relative: impl AsRef<Path>) -> Option<PathBuf> {
    let path = shared_data_dir().join(relative);
    let why = format!("{} (the shared data folder: ${SHARED_DATA_VAR}, else ../shared/data)", path.display());
    require(test, path.exists(), why).then_some(path)
}

/// The shared data folder: `$BGPD_SHARED_DATA` when set and non-empty, else
/// `../shared/data` beside the workspace.
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os(SHARED_DATA_VAR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `program` is a file on `PATH`, or, when it contains a `/`, exists.
pub fn have_cmd(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Prints `NOTE <test>: <text>` where `cargo test` shows it (not captured):
/// for what a test does differently on this machine without skipping
/// anything, e.g. which device stands in for a missing kernel module.
pub fn note(test: &str, text: impl Display) {
    write_stderr(&format!("NOTE {test}: {text}"));
}

#[track_caller]
fn check(test: &str, root: bool, programs: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root".to_string());
    }
    missing.extend(programs.iter().filter(|p| !have_cmd(p)).map(|p| format!("program {p}")));
    missing.is_empty() || gate(test, &missing)
}

/// What a missing prerequisite leads to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Outside CI: the line to print.
    Skip(String),
    /// Under CI: the panic message.
    Fail(String),
}

/// The decision itself, without I/O: `ci` is the value of `CI` when set and non-empty.
fn decide(test: &str, missing: &[String], ci: Option<&str>) -> Outcome {
    let needs = missing.join(", ");
    match ci {
        Some(v) => Outcome::Fail(format!(
            "{test}: needs {needs}: with CI set (CI={v:?}) a missing prerequisite fails the test instead \
             of skipping it (.ci/install-deps installs the programs; CI runs as root; see docs/testing.md)"
        )),
        None => Outcome::Skip(format!("SKIPPED {test}: needs {needs} (CI is unset; with CI set this fails)")),
    }
}

/// Panics under CI; otherwise prints and counts the skip. Always `false`.
#[track_caller]
fn gate(test: &str, missing: &[String]) -> bool {
    match decide(test, missing, ci_value().as_deref()) {
        Outcome::Fail(message) => panic!("{message}"),
        Outcome::Skip(line) => {
            record(test);
            write_stderr(&line);
            false
        }
    }
}

/// The tests skipped so far in this process, in order.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn record(test: &str) {
    SKIPPED.lock().unwrap_or_else(|e| e.into_inner()).push(test.to_string());
    AT_EXIT.call_once(at_exit::register);
}

/// `testgate: N tests skipped: a, b (…)`, or `None` when nothing was skipped.
fn summary(skipped: &[String]) -> Option<String> {
    let (n, noun, verb) = match skipped.len() {
        0 => return None,
        1 => (1, "test", "it fails"),
        n => (n, "tests", "they fail"),
    };
    Some(format!(
        "testgate: {n} {noun} skipped: {} (a prerequisite is missing and CI is unset; with CI set, {verb})",
        skipped.join(", ")
    ))
}

/// Called once at process exit (after libtest printed its result).
extern "C" fn print_summary() {
    let skipped = match SKIPPED.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        // A test thread is still inside `record`: print nothing rather than hang.
        Err(TryLockError::WouldBlock) => return,
    };
    if let Some(line) = summary(&skipped) {
        write_stderr(&line);
    }
}

/// One line straight to file descriptor 2: libtest's capture covers only the
/// `print!`/`eprint!` macros, so this is shown for passing tests too.
fn write_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[allow(unsafe_code)]
mod at_exit {
    /// Registers [`super::print_summary`] to run when the process exits:
    /// libtest's `main` returns (all passed) or calls `process::exit`
    /// (failures); both run the C library's exit handlers.
    pub(super) fn register() {
        // SAFETY: `atexit` only stores the function pointer; `print_summary`
        // is an `extern "C" fn()` that cannot unwind (it neither panics nor
        // calls anything that may: a poisoned or held lock is handled) and
        // touches only a static `Mutex` and stderr, both valid until exit.
        let rc = unsafe { libc::atexit(super::print_summary) };
        if rc != 0 {
            super::write_stderr("testgate: cannot register the exit summary (atexit failed)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn outside_ci_a_missing_prerequisite_is_a_skip_naming_all_of_it() {
        let o = decide("md5", &missing(&["root", "program bird"]), None);
        assert_eq!(
            o,
            Outcome::Skip("SKIPPED md5: needs root, program bird (CI is unset; with CI set this fails)".into())
        );
    }

    #[test]
    fn under_ci_any_value_makes_it_a_failure() {
        for v in ["true", "1", "yes", "false"] {
            let Outcome::Fail(m) = decide("md5", &missing(&["program bird"]), Some(v)) else {
                panic!("CI={v} must fail")
            };
            assert!(m.starts_with("md5: needs program bird: with CI set"), "{m}");
            assert!(m.contains(&format!("CI={v:?}")), "{m}");
        }
    }

    #[test]
    fn the_summary_counts_and_names_the_skipped_tests() {
        assert_eq!(summary(&[]), None);
        let one = summary(&missing(&["a"])).unwrap();
        assert!(one.starts_with("testgate: 1 test skipped: a ("), "{one}");
        let two = summary(&missing(&["a", "b"])).unwrap();
        assert!(two.starts_with("testgate: 2 tests skipped: a, b ("), "{two}");
    }

    #[test]
    fn programs_are_found_on_path_or_by_path() {
        assert!(have_cmd("/"));
        assert!(!have_cmd("/nonexistent/testgate-no-such-program"));
        assert!(!have_cmd("testgate-no-such-program"));
    }
}
