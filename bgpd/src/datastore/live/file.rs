//! The file datastore, polled: every 20 ms the files' lengths and modification
//! times are compared with the last read (a `stat` per file: negligible work), and
//! the files are read again once they differ and have stayed the same for one more
//! poll (so a file caught half written is not taken for the whole). A file that
//! cannot be read marks the datastore unreachable.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Publisher;
use crate::datastore::source;

/// Fingerprint of the datastore files (path, length, modification time), to notice edits.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.modified().ok()));
        }
    };
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            v.into_iter().for_each(&mut add);
        }
    } else {
        add(path.to_path_buf());
    }
    out
}

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(20);

pub(super) async fn run(path: PathBuf, out: Publisher) {
    let mut tick = tokio::time::interval(POLL);
    let mut last = None;
    let mut seen = None;
    while !out.closed() {
        tick.tick().await;
        let now = fingerprint(&path);
        if last.as_ref() == Some(&now) {
            continue;
        }
        // Changed: read once it holds still for one poll.
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            continue;
        }
        match source::read(&path) {
            Ok(sources) => {
                last = Some(now);
                out.content(sources, Vec::new());
            }
            Err(e) => {
                // Read again next time, whatever the fingerprint says.
                last = None;
                out.unreachable(e.to_string());
            }
        }
    }
}
