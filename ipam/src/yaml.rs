//! Reading a datastore's YAML as Calico's loader reads it, for bgpd and
//! `bgpd-ipam` alike (one reader, so both see the same objects).
//!
//! Two things differ from plain YAML 1.2 (what `serde_yaml` reads):
//!
//! - **YAML 1.1 booleans.** Calico decodes resources with a YAML 1.1 parser
//!   (go-yaml v2 under `calicoctl`'s ghodss-style YAML-to-JSON step), which
//!   resolves the plain (unquoted, untagged) words `y Y yes Yes YES on On ON`
//!   to true and `n N no No NO off Off OFF` to false, exactly these spellings
//!   (`yEs` stays a string). The JSON step then writes a boolean into a string
//!   field as `"true"` / `"false"`, so `route-reflector: yes` is the label
//!   `"true"`. [`documents`] resolves these words to `Value::Bool` (a quoted
//!   `'yes'` stays the string `yes`, as in Calico); readers that want text (labels,
//!   annotations) write a boolean as `true` / `false`. Mapping keys are kept
//!   as written.
//! - **Lists of resources.** `calicoctl apply` takes a document that is a YAML
//!   sequence of resources, and a `kind: List` (or typed `kind: BGPPeerList`)
//!   document with `items`; [`resources`] turns a document into the resources
//!   it stands for.

use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// The documents of a YAML stream, each as a [`Value`] with plain YAML 1.1
/// boolean words resolved to booleans (see the module docs). An empty document
/// is `Value::Null`.
///
/// The words can only be told from quoted strings because the values are read
/// in place from `text` (plain and quoted scalars alike are borrowed from it,
/// and a quoted one has its quote just before it).
pub fn documents(text: &str) -> impl Iterator<Item = Result<Value, serde_yaml::Error>> + '_ {
    serde_yaml::Deserializer::from_str(text).map(move |doc| Calico11 { text, tagged: false }.deserialize(doc))
}

/// YAML 1.1's boolean words (go-yaml v2's resolve table), other than the
/// `true` / `false` spellings YAML 1.2 has too.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A seed that builds a [`Value`] as `Value::deserialize` does, resolving
/// plain YAML 1.1 boolean words found in `text`.
#[derive(Clone, Copy)]
struct Calico11<'t> {
    text: &'t str,
    /// Directly under a local tag (`!Foo yes`): YAML 1.1 resolves nothing there.
    tagged: bool,
}

impl Calico11<'_> {
    /// Whether `s`, read from the input, was a plain scalar: it lies inside
    /// `text`, no quote is right before it and no tag (`!!str`) is the token
    /// before it. A string not borrowed from `text` (escapes, block scalars,
    /// folded lines) is never a plain one-word scalar.
    fn is_plain(&self, s: &str) -> bool {
        let start = (s.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        if start > self.text.len() || self.tagged {
            return false;
        }
        let before = &self.text[..start];
        if before.ends_with(['\'', '"']) {
            return false;
        }
        let token = before.trim_end().rsplit(|c: char| c.is_whitespace() || "[{,".contains(c)).next();
        !token.is_some_and(|t| t.starts_with('!'))
    }
}

impl<'de> DeserializeSeed<'de> for Calico11<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Calico11<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Value, E> {
        match yaml11_bool(s) {
            Some(b) if self.is_plain(s) => Ok(Value::Bool(b)),
            _ => Ok(Value::String(s.to_owned())),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = Calico11 { tagged: false, ..self };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = Calico11 { tagged: false, ..self };
        let mut out = Mapping::new();
        while let Some(key) = map.next_key::<Value>()? {
            if out.contains_key(&key) {
                // The message serde_yaml gives for `Value`.
                let which = match &key {
                    Value::String(s) => format!("with key {s:?}"),
                    Value::Bool(b) => format!("with key `{b}`"),
                    Value::Number(n) => format!("with key {n}"),
                    Value::Null => "with null key".to_string(),
                    _ => "in YAML map".to_string(),
                };
                return Err(de::Error::custom(format!("duplicate entry {which}")));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(Calico11 { tagged: true, ..self })?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

/// One resource of a document: the document itself, or an element of a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its 0-based position in the list, or `None` for a document that is one
    /// resource.
    pub item: Option<usize>,
    /// The resource; an item of a typed list (`kind: BGPPeerList`) that omits
    /// `apiVersion` or `kind` has them filled in from the list.
    pub value: Value,
}

/// Why a document's list of resources cannot be read: the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError {
    /// The field (`items`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The resources a document stands for, as `calicoctl apply` and `kubectl apply`
/// read them: a YAML sequence is its elements; a `kind: List` document, or a
/// `kind: FooList` document with `items`, is its `items` (a typed list lends its
/// `apiVersion` and `Foo` to items that omit them); any other document is one
/// resource. Lists are not nested: an element that is itself a list is returned
/// as it is. An empty document (null) stands for nothing.
pub fn resources(doc: Value) -> Result<Vec<Resource>, ListError> {
    let listed = |items: Vec<Value>, lend: Option<(Value, String)>| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, mut value)| {
                if let (Some((api_version, kind)), Value::Mapping(m)) = (&lend, &mut value) {
                    if m.get("apiVersion").is_none_or(Value::is_null) {
                        m.insert("apiVersion".into(), api_version.clone());
                    }
                    if m.get("kind").is_none_or(Value::is_null) {
                        m.insert("kind".into(), Value::String(kind.clone()));
                    }
                }
                Resource { item: Some(i), value }
            })
            .collect()
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let is_list = kind == "List" || (kind.ends_with("List") && doc.get("items").is_some_and(|v| !v.is_null()));
    match doc {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => Ok(listed(items, None)),
        Value::Mapping(mut m) if is_list => {
            let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty()).map(str::to_string);
            let lend = item_kind.and_then(|k| m.get("apiVersion").filter(|v| !v.is_null()).map(|v| (v.clone(), k)));
            match m.remove("items") {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Sequence(items)) => Ok(listed(items, lend)),
                Some(other) => Err(ListError {
                    field: "items".into(),
                    reason: format!("expected a list of resources, found {}", short(&other)),
                }),
            }
        }
        doc => Ok(vec![Resource { item: None, value: doc }]),
    }
}

/// A value's kind, for messages.
fn short(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn one(text: &str) -> Value {
        documents(text).next().unwrap().unwrap()
    }

    #[test]
    fn plain_yaml11_words_are_booleans_as_in_calico() {
        let v = one("{a: yes, b: No, c: ON, d: off, e: y, f: N, g: true, h: FALSE}");
        let got: Vec<Option<bool>> = ["a", "b", "c", "d", "e", "f", "g", "h"].iter().map(|k| v[k].as_bool()).collect();
        let want = [true, false, true, false, true, false, true, false].map(Some);
        assert_eq!(got, want);
    }

    #[test]
    fn quoted_tagged_and_other_spellings_stay_strings() {
        let text =
            "a: 'yes'\nb: \"on\"\nc: !!str no\nd: yEs\ne: |\n  yes\nf: yesterday\ng: \"y\\x65s\"\nh: !Custom yes\n";
        let v = one(text);
        for k in ["a", "b", "c", "d", "f", "g"] {
            assert!(v[k].is_string(), "{k}: {:?}", v[k]);
        }
        assert_eq!(v["e"].as_str(), Some("yes\n"), "a block scalar is text");
        let Value::Tagged(t) = &v["h"] else { panic!("{:?}", v["h"]) };
        assert_eq!(t.value.as_str(), Some("yes"), "a local tag resolves nothing");
    }

    #[test]
    fn words_are_resolved_at_any_depth_and_in_block_style() {
        let text =
            "metadata:\n  labels:\n    route-reflector: yes\n    rack: [on, 'off']\nspec:\n  - n\n  - &x Y\n  - *x\n";
        let v = one(text);
        assert_eq!(v["metadata"]["labels"]["route-reflector"], Value::Bool(true));
        assert_eq!(v["metadata"]["labels"]["rack"], serde_yaml::from_str::<Value>("[true, 'off']").unwrap());
        assert_eq!(v["spec"], serde_yaml::from_str::<Value>("[false, true, true]").unwrap());
    }

    #[test]
    fn keys_are_kept_as_written() {
        let v = one("{yes: 1, on: 2}");
        assert_eq!(v.get("yes"), Some(&Value::Number(1.into())));
        assert_eq!(v.get("on"), Some(&Value::Number(2.into())));
    }

    #[test]
    fn everything_else_reads_as_serde_yaml_reads_it() {
        let text = "a: 1\nb: -2\nc: 1.5\nd: null\ne: ~\nf: x y\ng: [1, {h: i}]\nj: !Tag {k: 1}\n---\n---\n[1]\n";
        let ours: Vec<Value> = documents(text).map(Result::unwrap).collect();
        let theirs: Vec<Value> =
            serde_yaml::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn errors_are_serde_yaml_errors_with_their_position() {
        let err = documents("a: 1\na: 2\n").next().unwrap().unwrap_err();
        assert!(err.to_string().contains("duplicate entry with key \"a\""), "{err}");
        assert!(err.location().is_some(), "{err}");
        assert!(documents("a: [1\n").next().unwrap().is_err());
    }

    #[test]
    fn a_sequence_document_is_its_resources() {
        let doc = one("- {apiVersion: projectcalico.org/v3, kind: BGPPeer, metadata: {name: a}}\n- {apiVersion: v1, kind: Secret}\n");
        let r = resources(doc).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].item, r[1].item), (Some(0), Some(1)));
        assert_eq!(r[1].value["kind"].as_str(), Some("Secret"));
    }

    #[test]
    fn typed_lists_lend_api_version_and_kind_generic_lists_do_not() {
        let doc = one("apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- metadata: {name: a}\n- {kind: Other, metadata: {name: b}}\n");
        let r = resources(doc).unwrap();
        assert_eq!(r[0].value["kind"].as_str(), Some("IPPool"));
        assert_eq!(r[0].value["apiVersion"].as_str(), Some("projectcalico.org/v3"));
        assert_eq!(r[1].value["kind"].as_str(), Some("Other"), "an item's own kind wins");
        let doc = one("apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n");
        let r = resources(doc).unwrap();
        assert!(r[0].value.get("kind").is_none() && r[0].value.get("apiVersion").is_none());
    }

    #[test]
    fn other_documents_are_one_resource_and_bad_items_an_error() {
        let doc = one("apiVersion: v1\nkind: ConfigMapList\n");
        assert_eq!(resources(doc.clone()).unwrap(), vec![Resource { item: None, value: doc }], "no items: an object");
        assert_eq!(resources(Value::Null).unwrap(), vec![]);
        let err = resources(one("{apiVersion: v1, kind: List, items: {a: 1}}")).unwrap_err();
        assert_eq!(err.to_string(), "items: expected a list of resources, found a mapping");
    }
}
