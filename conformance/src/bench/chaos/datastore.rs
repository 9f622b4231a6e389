//! Garbage datastore (bgpd only): bgpd runs on its file datastore with the good tester
//! (holding `--routes` /24s) and the monitor Established; the file is then replaced (a
//! temporary file renamed over it, as an editor does) by each of [`Variant::ALL`] in turn,
//! and after each by the good file again.
//!
//! Per variant: the time from the rename until `bgpd show config --json` lists problems
//! other than the good file's (detection), the first problem named there and whether a
//! warning appeared in bgpd's log, whether bgpd still runs [`HOLD`] later with both
//! sessions Established (its view and the speakers') and every route at the monitor (the
//! last good state kept); then the time from renaming the good file back until the problem
//! list is the good file's again (recovery), and the same checks.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::bench::routeserver::dut::{self, DutKind};
use crate::bench::sessions::bgpd_show_json;

use super::{
    dut_peer_state, good_load, good_peer, load_good_table, monitor_peer, Bed, Figures, Options, Speakers, QUIET,
};

/// How long each state is held before it is checked.
const HOLD: Duration = Duration::from_secs(3);
/// The longest wait for bgpd to notice a change.
const NOTICE: Duration = Duration::from_secs(10);
/// Nesting depth of the deep variants.
const DEPTH: usize = 10_000;

/// A broken datastore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// 64 KiB of pseudo-random bytes (not UTF-8, not YAML).
    Garbage,
    /// 64 KiB of pseudo-random printable ASCII, YAML's punctuation included (UTF-8, not YAML).
    GarbageText,
    /// The good file plus a BGPPeer whose `nodeSelector` nests 10,000 parentheses.
    DeepSelector,
    /// The good file plus a document nesting 10,000 YAML flow sequences.
    DeepYaml,
    /// Every object of the good file with its kind and name but no `spec`, plus documents
    /// with no name, no kind, nothing.
    MissingFields,
}

impl Variant {
    /// Every variant, in the order they run.
    pub const ALL: [Variant; 5] =
        [Variant::Garbage, Variant::GarbageText, Variant::DeepSelector, Variant::DeepYaml, Variant::MissingFields];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Garbage => "garbage bytes",
            Variant::GarbageText => "garbage text",
            Variant::DeepSelector => "10,000-level nested selector",
            Variant::DeepYaml => "10,000-level nested YAML",
            Variant::MissingFields => "objects missing every required field",
        }
    }

    /// The file's bytes, given the good file.
    pub fn bytes(self, good: &str) -> Vec<u8> {
        match self {
            Variant::Garbage => garbage().collect(),
            // Printable ASCII: 0x20 to 0x7E.
            Variant::GarbageText => garbage().map(|b| 0x20 + b % 95).collect(),
            Variant::DeepSelector => format!(
                "{good}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: deep\nspec:\n  \
                 peerIP: 10.77.0.99\n  asNumber: 65099\n  nodeSelector: \"{}all(){}\"\n",
                "(".repeat(DEPTH),
                ")".repeat(DEPTH)
            )
            .into_bytes(),
            Variant::DeepYaml => format!(
                "{good}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: deep-yaml\nspec:\n  \
                 peerIP: {}{}\n",
                "[".repeat(DEPTH),
                "]".repeat(DEPTH)
            )
            .into_bytes(),
            Variant::MissingFields => {
                let mut out = String::new();
                for doc in good.split("---\n").filter(|d| !d.trim().is_empty()) {
                    let keep: Vec<&str> = doc.lines().take_while(|l| !l.starts_with("spec:")).collect();
                    out.push_str("---\n");
                    out.push_str(&keep.join("\n"));
                    out.push('\n');
                }
                out.push_str("---\nkind: BGPPeer\n---\napiVersion: projectcalico.org/v3\n---\nmetadata: {}\n---\n{}\n");
                out.into_bytes()
            }
        }
    }
}

/// 64 KiB of pseudo-random bytes: xorshift64 with a fixed seed, the same every run.
fn garbage() -> impl Iterator<Item = u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..64 * 1024).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    })
}

/// Replaces `path` by a file holding `bytes` (written beside it, then renamed over it).
fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("chaos.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.sync_all().map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

/// What `bgpd show config --json` reports as wrong: its problem list, and the reason the
/// datastore is unreachable when it says so (a file that cannot be read).
fn problems(bin: &Path, sock: &Path) -> Result<Vec<String>, String> {
    let v = bgpd_show_json(bin, sock, "config")?;
    let mut out: Vec<String> =
        v["problems"].as_array().into_iter().flatten().map(|p| p.as_str().unwrap_or("?").to_string()).collect();
    if v["datastore_ok"] == false {
        out.push(format!("datastore unreachable: {}", v["unreachable_reason"].as_str().unwrap_or("?")));
    }
    Ok(out)
}

/// Polls the problem list every 10 ms until `done` holds for it, at most [`NOTICE`]; the
/// seconds it took and the last list.
fn wait_problems(bin: &Path, sock: &Path, done: impl Fn(&[String]) -> bool) -> (Option<f64>, Vec<String>) {
    let t0 = Instant::now();
    let mut last = Vec::new();
    while t0.elapsed() < NOTICE {
        if let Ok(p) = problems(bin, sock) {
            if done(&p) {
                return (Some(t0.elapsed().as_secs_f64()), p);
            }
            last = p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (None, last)
}

/// The state that must not change: bgpd runs, both sessions Established in its view and
/// the speakers', every route at the monitor. "kept" or what differs.
fn state(bed: &Bed, bgpd: &Path, routes: usize) -> String {
    let mut bad = Vec::new();
    if !bed.alive() {
        bad.push("bgpd exited".to_string());
    }
    for name in ["t1", "monitor"] {
        let s = dut_peer_state(bed, DutKind::Bgpd, Some(bgpd), name);
        if s != "Established" {
            bad.push(format!("{name} {s}"));
        }
    }
    let held = bed.control.progress.load(Ordering::Relaxed);
    if held != routes as u64 {
        bad.push(format!("{held} of {routes} routes at the monitor"));
    }
    if let Some(e) = bed.speaker_error() {
        bad.push(e);
    }
    if bad.is_empty() {
        "kept".into()
    } else {
        bad.join("; ")
    }
}

fn cut(s: &str, n: usize) -> String {
    let s = s.replace('|', "/");
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Runs the scenario (bgpd only).
pub fn run(bgpd: Option<&Path>, o: &Options) -> Result<Figures, String> {
    let bin = bgpd.ok_or("the datastore scenario needs bgpd")?;
    let load = good_load(o.routes, (o.routes / 1000).max(1))?;
    let peers = [good_peer(), monitor_peer()];
    let bed = Bed::new("datastore", DutKind::Bgpd, &peers, &[], bgpd, Duration::from_secs(300))?;
    let speakers = Speakers::connect(&bed, &load)?;
    std::thread::sleep(QUIET);
    load_good_table(&bed.control, o.routes)?;
    let dir = bed.lab.dir().to_path_buf();
    let (store, sock, log) = (dir.join("bgpd.yaml"), dir.join("bgpd.sock"), dir.join("bgpd.log"));
    let good = dut::bgpd_datastore(&peers);
    let baseline = problems(bin, &sock)?;
    let mut f = Figures::default();
    f.text("good file's problems", if baseline.is_empty() { "none".into() } else { cut(&baseline.join("; "), 120) });
    for v in Variant::ALL {
        let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        replace(&store, &v.bytes(&good))?;
        let (detected, named) = wait_problems(bin, &sock, |p| p != baseline.as_slice());
        std::thread::sleep(HOLD);
        let kept = state(&bed, bin, o.routes);
        let logged = std::fs::read(&log)
            .ok()
            .and_then(|b| b.get(log_from as usize..).map(|b| String::from_utf8_lossy(b).into_owned()))
            .and_then(|t| {
                let warns: Vec<&str> = t.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
                // As for `show config`: the first line naming an object, else the first.
                warns
                    .iter()
                    .find(|l| l.contains("BGPPeer") || l.contains("Node"))
                    .or(warns.first())
                    .map(|l| l.to_string())
            });
        replace(&store, good.as_bytes())?;
        let (recovered, _) = wait_problems(bin, &sock, |p| p == baseline.as_slice());
        std::thread::sleep(HOLD);
        let after = state(&bed, bin, o.routes);
        let n = v.name();
        f.text(
            format!("{n}: detected after"),
            detected.map_or_else(|| format!("not within {} s", NOTICE.as_secs()), |s| format!("{:.0} ms", s * 1000.0)),
        );
        let new: Vec<&String> = named.iter().filter(|p| !baseline.contains(p)).collect();
        // The first problem that names an object, else the first.
        let first = new.iter().find(|p| p.contains('"')).or(new.first()).map_or("—".to_string(), |p| p.to_string());
        f.text(format!("{n}: `show config` says"), format!("{} new problem(s), e.g. {}", new.len(), cut(&first, 140)));
        f.text(format!("{n}: log"), logged.map_or_else(|| "no warning".into(), |l| cut(l.trim(), 140)));
        f.text(format!("{n}: sessions and routes {} s later", HOLD.as_secs()), kept);
        f.text(
            format!("{n}: good file back, recovered after"),
            recovered.map_or_else(|| format!("not within {} s", NOTICE.as_secs()), |s| format!("{:.0} ms", s * 1000.0)),
        );
        f.text(format!("{n}: state after recovery"), after);
    }
    speakers.finish(&bed.control);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::routeserver::peers;

    #[test]
    fn the_variants_break_the_file_as_named() {
        let good = dut::bgpd_datastore(&peers(1));
        let g = Variant::Garbage.bytes(&good);
        assert_eq!(g, Variant::Garbage.bytes(&good), "seeded");
        assert!(std::str::from_utf8(&g).is_err());
        let t = Variant::GarbageText.bytes(&good);
        assert!(t.len() == 64 * 1024 && t.iter().all(|b| (0x20..0x7F).contains(b)));
        let s = String::from_utf8(Variant::DeepSelector.bytes(&good)).unwrap();
        assert!(s.starts_with(&good) && s.contains(&format!("\"{}all()", "(".repeat(DEPTH))));
        let m = String::from_utf8(Variant::MissingFields.bytes(&good)).unwrap();
        assert!(!m.contains("spec:") && !m.contains("peerIP"), "{m}");
        assert_eq!(m.matches("kind: BGPPeer").count(), good.matches("kind: BGPPeer").count() + 1);
        assert!(m.contains("  name: monitor\n"));
    }
}
