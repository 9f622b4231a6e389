//! Reading the file datastore: one YAML/JSON file, or a directory whose `*.yaml`,
//! `*.yml` and `*.json` files are read in name order; each file a stream of
//! `---`-separated documents, read by [`ipam::yaml`] as Calico reads them: a
//! document that is a YAML sequence, or a `kind: List` (or `kind: FooList`)
//! document, stands for its resources; plain YAML 1.1 words (`yes`, `off`) are
//! booleans.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::fields::{describe, Fields};
use super::problem::{LoadError, Location, Problem, Severity};

/// The text of one source (a file, an etcd key, a Kubernetes object), named by
/// its path or key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceText {
    /// Where the text came from (used in every message).
    pub path: PathBuf,
    /// The YAML (or JSON) text.
    pub text: String,
}

/// One Kubernetes-style object found in a source, before validation.
#[derive(Clone, Debug)]
pub(crate) struct RawObject {
    pub location: Location,
    pub api_version: String,
    pub kind: String,
    pub value: Value,
}

/// Reads `path`: a file, or a directory's `*.yaml`, `*.yml` and `*.json` files in
/// name order (not recursive; hidden files and the IPAM file store's
/// `ipam-state.json` are skipped).
pub fn read(path: &Path) -> Result<Vec<SourceText>, LoadError> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
        move |source| LoadError::Io { path: path.to_path_buf(), source }
    }
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // The IPAM file store's snapshot is JSON too, but read by `ipam_store`.
            let wanted = !name.starts_with('.')
                && [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext))
                && !super::ipam_store::is_store_file(&entry.file_name());
            // `is_file` follows symlinks, as a ConfigMap volume's files are symlinks.
            if wanted && p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                let why = format!("not UTF-8 text (the byte at offset {at} is not): a datastore file is YAML or JSON");
                io(&p)(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
            })?;
            Ok(SourceText { path: p, text })
        })
        .collect()
}

/// Splits a source into objects. A YAML syntax error anywhere fails the whole file;
/// a document that is not an object is a [`Problem`] and the rest goes on.
pub(crate) fn objects(
    source: &SourceText,
    out: &mut Vec<RawObject>,
    problems: &mut Vec<Problem>,
) -> Result<(), LoadError> {
    objects_numbered(source, 1, out, problems).map(|_| ())
}

/// [`objects`] for a part of a file whose first document is document `first`
/// of the file; returns how many documents the part holds.
pub(crate) fn objects_numbered(
    source: &SourceText,
    first: usize,
    out: &mut Vec<RawObject>,
    problems: &mut Vec<Problem>,
) -> Result<usize, LoadError> {
    too_deep(source)?;
    let mut n = 0;
    // Read as Calico's loader reads YAML: plain YAML 1.1 words (`yes`, `off`)
    // are booleans, and a document may be a list of resources.
    for (i, doc) in ipam::yaml::documents(&source.text).enumerate() {
        let value = doc.map_err(|e| syntax_error(&source.path, &e))?;
        let location = Location { file: source.path.clone(), document: first + i, item: None };
        n = i + 1;
        // Empty documents (a leading `---`, a file of comments) stand for nothing.
        match ipam::yaml::resources(value) {
            Ok(resources) => {
                for r in resources {
                    object(r.value, Location { item: r.item.map(|i| i + 1), ..location.clone() }, out, problems);
                }
            }
            Err(e) => problems.push(Problem {
                severity: Severity::Error,
                object: None,
                field: e.field,
                reason: e.reason,
                location,
            }),
        }
    }
    Ok(n)
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before the
/// YAML parser sees them: the parser refuses more than 128 levels anyway, but
/// only after reading the whole document, which for 10,000 levels took over a
/// second (quadratic in the depth); a datastore never nests so deep.
const MAX_FLOW_DEPTH: usize = 256;

/// A syntax error for a source whose flow collections nest deeper than
/// [`MAX_FLOW_DEPTH`] (outside quoted scalars and comments).
fn too_deep(source: &SourceText) -> Result<(), LoadError> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut single, mut double, mut escaped, mut comment) = (false, false, false, false);
    let mut prev = '\n';
    for c in source.text.chars() {
        column += 1;
        if c == '\n' {
            (line, column, comment) = (line + 1, 0, false);
            prev = c;
            continue;
        }
        match c {
            _ if comment => {}
            _ if escaped => escaped = false,
            '\\' if double => escaped = true,
            '"' if !single => double = !double,
            '\'' if !double => single = !single,
            _ if single || double => {}
            '#' if prev.is_whitespace() => comment = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(LoadError::Syntax {
                        path: source.path.clone(),
                        line: Some(line),
                        column: Some(column),
                        reason: format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
                    });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    Ok(())
}

/// Splits a YAML stream into parts at its document markers (a line that is
/// `---`, or starts with `---` and a space or tab), each part starting with
/// its marker. In YAML a line at column 0 starting so is always a document
/// marker (block scalar content is indented).
pub(crate) fn split_documents(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker && at > start {
            parts.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    if start < text.len() || parts.is_empty() {
        parts.push(&text[start..]);
    }
    parts
}

fn syntax_error(path: &Path, e: &serde_yaml::Error) -> LoadError {
    let loc = e.location();
    LoadError::Syntax {
        path: path.to_path_buf(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        // The position is in `line` and `column`; keep the message free of it.
        reason: match &loc {
            Some(l) => e.to_string().replace(&format!(" at line {} column {}", l.line(), l.column()), ""),
            None => e.to_string(),
        },
    }
}

/// Classifies one resource (a document, or an element of a list).
fn object(value: Value, location: Location, out: &mut Vec<RawObject>, problems: &mut Vec<Problem>) {
    let problem = |field: &str, reason: String| Problem {
        severity: Severity::Error,
        object: None,
        field: field.to_string(),
        reason,
        location: location.clone(),
    };
    let fields = match Fields::at(Some(&value), "") {
        Ok(f) if !matches!(value, Value::Null) => f,
        _ => {
            problems.push(problem(
                "",
                format!(
                    "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                    describe(&value)
                ),
            ));
            return;
        }
    };
    // The error is boxed: a Problem is large and this is the rare path.
    let field = |key: &str| match fields.str(key) {
        Ok(Some(s)) => Ok(s.to_string()),
        Ok(None) => Err(Box::new(problem(key, "missing".into()))),
        Err(e) => Err(Box::new(problem(&e.field, e.reason))),
    };
    let kind = match field("kind") {
        Ok(k) => k,
        Err(p) => return problems.push(*p),
    };
    let api_version = match field("apiVersion") {
        Ok(v) => v,
        Err(p) => return problems.push(*p),
    };
    out.push(RawObject { location, api_version, kind, value });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (Vec<RawObject>, Vec<Problem>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let source = SourceText { path: "t.yaml".into(), text: text.into() };
        objects(&source, &mut out, &mut problems).unwrap();
        (out, problems)
    }

    #[test]
    fn stream_of_documents_with_empty_ones() {
        let (objs, problems) =
            split("---\n# only a comment\n---\napiVersion: v1\nkind: Secret\n---\n---\napiVersion: v1\nkind: Secret\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].location.document, 4);
    }

    #[test]
    fn list_items_are_objects() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret"},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer"}]}"#;
        let (objs, problems) = split(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(objs.iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(), ["Secret", "BGPPeer"]);
        assert_eq!(objs[1].location.item, Some(2));
    }

    /// `calicoctl apply -f` takes a document that is a YAML sequence of resources.
    #[test]
    fn a_sequence_document_is_its_resources() {
        let (objs, problems) = split(
            "apiVersion: v1\nkind: Secret\n---\n- apiVersion: projectcalico.org/v3\n  kind: BGPPeer\n- {apiVersion: v1, kind: Secret}\n- 7\n",
        );
        assert_eq!(objs.iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(), ["Secret", "BGPPeer", "Secret"]);
        assert_eq!((objs[1].location.document, objs[1].location.item), (2, Some(1)));
        assert_eq!(objs[2].location.item, Some(2));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].location.item, Some(3), "the element that is no object is named");
    }

    #[test]
    fn list_items_that_are_not_a_list_are_a_problem() {
        let (objs, problems) = split("apiVersion: v1\nkind: List\nitems: {a: 1}\n");
        assert!(objs.is_empty());
        assert_eq!((problems[0].field.as_str(), problems[0].location.document), ("items", 1));
    }

    /// A plain YAML 1.1 word is a boolean, as Calico's loader reads it; quoted it is text.
    #[test]
    fn yaml11_words_are_booleans_quoted_ones_text() {
        let (objs, _) = split("apiVersion: v1\nkind: Node\nmetadata: {labels: {a: yes, b: 'yes', c: Off}}\n");
        let labels = &objs[0].value["metadata"]["labels"];
        assert_eq!(
            (labels["a"].as_bool(), labels["b"].as_str(), labels["c"].as_bool()),
            (Some(true), Some("yes"), Some(false))
        );
    }

    #[test]
    fn typed_lists_lend_kind_and_api_version() {
        let (objs, _) = split("apiVersion: projectcalico.org/v3\nkind: BGPPeerList\nitems:\n- metadata: {name: a}\n");
        assert_eq!((objs[0].kind.as_str(), objs[0].api_version.as_str()), ("BGPPeer", "projectcalico.org/v3"));
    }

    #[test]
    fn non_objects_are_problems_not_failures() {
        let (objs, problems) = split(
            "just a string\n---\n[1, 2]\n---\nkind: Secret\n---\napiVersion: v1\n---\napiVersion: v1\nkind: Secret\n",
        );
        assert_eq!(objs.len(), 1);
        // `[1, 2]` is a list of two resources, neither an object.
        assert_eq!(problems.len(), 5);
        assert_eq!((problems[1].location.item, problems[2].location.item), (Some(1), Some(2)));
        assert_eq!(problems[3].field, "apiVersion");
        assert_eq!(problems[4].field, "kind");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let source = SourceText { path: "bad.yaml".into(), text: "a: 1\nb: [1, 2\nc: 3\n".into() };
        let err = objects(&source, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        let LoadError::Syntax { path, line, .. } = &err else { panic!("{err:?}") };
        assert_eq!(path, Path::new("bad.yaml"));
        assert!(line.is_some());
        assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
    }
}
