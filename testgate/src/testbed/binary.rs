//! The one rule for finding the bgpd binary a test or a benchmark runs.

use std::path::{Path, PathBuf};

/// The environment variable that names the bgpd binary.
pub const BGPD_BIN: &str = "BGPD_BIN";

/// The bgpd binary: `given` (a benchmark's `--bgpd PATH`), else `$BGPD_BIN`,
/// else `bgpd` in the target directory of the running program: beside it
/// (`target/release/bench` → `target/release/bgpd`) or one level up for a
/// test (`target/debug/deps/<test>` → `target/debug/bgpd`). Nothing is built:
/// the error says what to build.
pub fn bgpd_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let env = std::env::var_os(BGPD_BIN).filter(|v| !v.is_empty()).map(PathBuf::from);
    let exe = std::env::current_exe().map_err(|e| format!("locating the running program: {e}"))?;
    locate(given, env, &exe, Path::is_file)
}

/// [`bgpd_binary`] with its inputs given: the flag, the variable, the running
/// program and what counts as a file.
fn locate(
    given: Option<PathBuf>,
    env: Option<PathBuf>,
    exe: &Path,
    is_file: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if is_file(&p) { Ok(p) } else { Err(format!("--bgpd {}: no such file", p.display())) };
    }
    if let Some(p) = env {
        return if is_file(&p) { Ok(p) } else { Err(format!("{BGPD_BIN}={}: no such file", p.display())) };
    }
    let dir = exe.parent().ok_or_else(|| format!("{} has no directory", exe.display()))?;
    let beside = dir.join("bgpd");
    let up = dir.file_name().is_some_and(|f| f == "deps").then(|| dir.parent().map(|d| d.join("bgpd"))).flatten();
    let candidates: Vec<PathBuf> = std::iter::once(beside).chain(up).collect();
    candidates.iter().find(|p| is_file(p)).cloned().ok_or_else(|| {
        format!(
            "no bgpd at {}: build it into the same target directory (`cargo build -p bgpd`, \
             `--release` for a release benchmark), or set {BGPD_BIN} (a benchmark: --bgpd PATH)",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(files: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p| files.iter().any(|f| Path::new(f) == p)
    }

    #[test]
    fn a_flag_wins_over_the_variable_and_must_exist() {
        let exe = Path::new("/t/release/bench");
        let got = locate(Some("/a/bgpd".into()), Some("/b/bgpd".into()), exe, only(&["/a/bgpd", "/b/bgpd"]));
        assert_eq!(got, Ok(PathBuf::from("/a/bgpd")));
        let err = locate(Some("/a/bgpd".into()), None, exe, only(&["/t/release/bgpd"])).unwrap_err();
        assert_eq!(err, "--bgpd /a/bgpd: no such file");
        let err = locate(None, Some("/b/bgpd".into()), exe, only(&["/t/release/bgpd"])).unwrap_err();
        assert_eq!(err, "BGPD_BIN=/b/bgpd: no such file");
    }

    #[test]
    fn a_benchmark_finds_it_beside_itself_and_a_test_one_level_up() {
        let got = locate(None, None, Path::new("/t/release/bench"), only(&["/t/release/bgpd"]));
        assert_eq!(got, Ok(PathBuf::from("/t/release/bgpd")));
        let got = locate(None, None, Path::new("/t/debug/deps/md5-1234"), only(&["/t/debug/bgpd"]));
        assert_eq!(got, Ok(PathBuf::from("/t/debug/bgpd")));
        let err = locate(None, None, Path::new("/t/debug/deps/md5-1234"), only(&[])).unwrap_err();
        assert!(err.starts_with("no bgpd at /t/debug/deps/bgpd or /t/debug/bgpd: build it"), "{err}");
    }
}
