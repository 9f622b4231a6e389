//! A smoke run of every fuzz target on stable Rust, in `cargo test --workspace`.
//!
//! For each target: every file of `corpus/TARGET/` (the seeds, and the
//! inputs that once failed, as regressions), then random mutations of them
//! from a fixed seed (bit flips, byte changes, inserts, deletions, splices of
//! two corpus files), at most `MUTATIONS` inputs and at most `BUDGET` of wall
//! time per target, whichever comes first. The time bound only cuts the
//! mutations short on a slow machine; no assertion depends on it.
//!
//! This is not fuzzing: nothing is coverage-guided and the mutations are the
//! same on every run. It proves that every target builds, that the corpora
//! still pass, and that the targets' checks hold around them. The campaign is
//! `cargo fuzz` (docs/fuzzing.md).
//!
//! `BGPD_FUZZ_SMOKE_MUTATIONS=N` changes the count (e.g. 0: corpora only);
//! `BGPD_FUZZ_SMOKE_SEED=N` the seed; `BGPD_FUZZ_SMOKE_SECONDS=N` the time bound. A failure prints the target, the seed,
//! the input number and the input in hex, to be saved as a corpus file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MUTATIONS: usize = 3000;
const BUDGET: Duration = Duration::from_secs(2);
const SEED: u64 = 0x00b6_bd00;
/// The longest mutated input.
const MAX_LEN: usize = 16 * 1024;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("a corpus file"))).collect()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// One mutation of a corpus entry, libFuzzer-style.
fn mutate(rng: &mut fastrand::Rng, inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = inputs[rng.usize(..inputs.len())].clone();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(..6) {
            0 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] ^= 1 << rng.u8(..8);
            }
            1 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] = [0, 0xff, 0x7f, 0x80, 1, rng.u8(..)][rng.usize(..6)];
            }
            2 => {
                let i = rng.usize(..=v.len());
                let n = rng.usize(1..=8);
                v.splice(i..i, std::iter::repeat_with(|| rng.u8(..)).take(n));
            }
            3 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                let n = rng.usize(1..=(v.len() - i).min(16));
                v.drain(i..i + n);
            }
            4 => {
                // Splice: a piece of another entry in place of a piece of this one.
                let other = &inputs[rng.usize(..inputs.len())];
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let n = rng.usize(1..=other.len() - from);
                    let at = rng.usize(..=v.len());
                    v.truncate(at);
                    v.extend_from_slice(&other[from..from + n]);
                }
            }
            _ if !v.is_empty() => {
                // Duplicate a piece (repeated messages, repeated documents).
                let i = rng.usize(..v.len());
                let n = rng.usize(1..=(v.len() - i).min(64));
                let piece = v[i..i + n].to_vec();
                let at = rng.usize(..=v.len());
                v.splice(at..at, piece);
            }
            _ => v.push(rng.u8(..)),
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` on `input`; on a panic, says which input it was, saves it, and fails.
fn run(name: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if let Err(e) = std::panic::catch_unwind(|| f(input)) {
        let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        let saved = std::env::temp_dir().join(format!("bgpd-fuzz-{name}-failure"));
        let saved = match std::fs::write(&saved, input) {
            Ok(()) => format!("saved as {}", saved.display()),
            Err(e) => format!("not saved ({e}); hex: {}", hex(input)),
        };
        panic!(
            "fuzz target {name} failed on {what}: {}\ninput: {} bytes, {saved}\n\
             (after the fix, add it as fuzz/corpus/{name}/regression-NAME; docs/fuzzing.md)",
            msg.unwrap_or_default(),
            input.len(),
        );
    }
}

fn smoke(name: &str) {
    let f = bgpd_fuzz::TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).expect("a target of that name");
    let files = corpus(name);
    assert!(!files.is_empty(), "corpus/{name}/ is empty");
    for (path, input) in &files {
        run(name, &path.display().to_string(), f, input);
    }
    let inputs: Vec<Vec<u8>> = files.into_iter().map(|(_, v)| v).collect();
    let seed = env_number("BGPD_FUZZ_SMOKE_SEED").unwrap_or(SEED);
    let count = env_number("BGPD_FUZZ_SMOKE_MUTATIONS").map_or(MUTATIONS, |n| n as usize);
    let mut rng = fastrand::Rng::with_seed(seed ^ name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)));
    let budget = env_number("BGPD_FUZZ_SMOKE_SECONDS").map_or(BUDGET, Duration::from_secs);
    let start = Instant::now();
    for i in 0..count {
        if start.elapsed() > budget {
            break;
        }
        let input = mutate(&mut rng, &inputs);
        run(name, &format!("mutation {i} (seed {seed})"), f, &input);
    }
}

macro_rules! smoke_tests {
    ($($name:ident)*) => {
        /// The targets smoke-tested here.
        const SMOKED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                smoke(stringify!($name));
            }
        )*
    };
}

smoke_tests! {
    message path_attributes open mrt session_fsm rib bfd datastore selector cni_config cni_args ipam_store netlink
}

#[test]
fn every_target_has_a_smoke_test_and_a_libfuzzer_binary() {
    let names: Vec<&str> = bgpd_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, SMOKED, "bgpd_fuzz::TARGETS and the smoke tests");
    for n in names {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets").join(format!("{n}.rs"));
        assert!(bin.is_file(), "no libFuzzer binary {}", bin.display());
    }
}
