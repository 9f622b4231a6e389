//! The file datastore's YAML/JSON documents (Calico resources, Kubernetes
//! Services and EndpointSlices, BFD configurations), parsed and validated.
//!
//! The input is a file's text (invalid UTF-8 replaced), cut in two at a
//! point the first two bytes pick. Checked:
//! - parsing never panics: a syntax error is a `LoadError`, an invalid object
//!   a `Problem`;
//! - the memoised parser the daemon uses on every change
//!   (`parse_sources_memo`) gives exactly what the plain one gives, from an
//!   empty memo and from a memo of an earlier version of the file (its first
//!   part), so reusing unchanged documents never changes the model nor the
//!   problems reported.

use std::path::PathBuf;

use bgpd::datastore::{parse_sources, parse_sources_memo, LoadError, Model, Problem, SourceText};

type Loaded = Result<(Model, Vec<Problem>), LoadError>;

fn same(a: &Loaded, b: &Loaded, what: &str) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert!(a == b, "{what}: {}", first_difference(&format!("{a:#?}"), &format!("{b:#?}"))),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}: different errors"),
        (a, b) => panic!("{what}: {:?} against {:?}", a.as_ref().err(), b.as_ref().err()),
    }
}

/// The first lines where two `Debug` renderings differ, with some context.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(12);
    format!(
        "plain parse, from line {from}:\n{}\nmemoised parse:\n{}",
        a[from..a.len().min(at + 30)].join("\n"),
        b[from..b.len().min(at + 30)].join("\n")
    )
}

/// See the module docs.
pub fn datastore(data: &[u8]) {
    let Some((cut, text)) = data.split_first_chunk::<2>() else { return };
    let text = String::from_utf8_lossy(text).into_owned();
    let mut cut = usize::from(u16::from_be_bytes(*cut)) % (text.len() + 1);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let path = PathBuf::from("/fuzz/datastore.yaml");
    let whole = [SourceText { path: path.clone(), text: text.clone() }];
    let before = [SourceText { path, text: text[..cut].to_string() }];

    let plain = parse_sources(&whole);
    // An empty memo, then the whole file.
    let _ = parse_sources_memo(&[]);
    same(&plain, &parse_sources_memo(&whole), "memoised parse from an empty memo");
    // A memo of the file's first part, then the whole file.
    let _ = parse_sources_memo(&[]);
    let _ = parse_sources_memo(&before);
    same(&plain, &parse_sources_memo(&whole), "memoised parse after an earlier version");
    let _ = parse_sources_memo(&[]);
}
