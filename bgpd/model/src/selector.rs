//! Calico label selectors: parser and evaluator.
//!
//! The grammar is Calico's (libcalico-go `selector` package, as documented for
//! `nodeSelector` and `namespaceSelector` of an `IPPool`):
//!
//! ```text
//! expr    := or
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" expr ")" | term
//! term    := "all()" | "global()" | "has(" label ")"
//!          | label "==" string | label "!=" string
//!          | label "in" set | label "not" "in" set
//!          | label "contains" string | label "starts" "with" string
//!          | label "ends" "with" string
//! set     := "{" [ string ( "," string )* ] "}"
//! string  := '"' chars '"' | "'" chars "'"
//! ```
//!
//! An empty selector selects everything, as in Calico. `!has(k)` is `!` applied
//! to `has(k)`. `k != "v"` and `k not in {…}` also match when the label is absent,
//! as in Calico.
//!
//! Selectors come from files and from the API, so nesting is bounded: a
//! selector whose parentheses nest deeper than [`MAX_DEPTH`], or whose parsed
//! tree is deeper than that, is an error ("selector nested deeper than 64
//! levels"), never a stack overflow. A run of `&&` (or `||`) operands becomes a
//! balanced tree, so a long flat conjunction stays shallow. Every recursive walk
//! of a parsed selector (evaluation, `Display`, `Clone`, `Drop`) is therefore at
//! most [`MAX_DEPTH`] deep.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A parsed Calico selector expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `all()` (and the empty selector): matches every label set.
    All,
    /// `global()`: matches every label set (Calico uses it for non-namespaced
    /// resources; for IPAM it behaves like `all()`).
    Global,
    /// `has(k)`: the label is present.
    Has(String),
    /// `k == "v"`.
    Eq(String, String),
    /// `k != "v"` (true when the label is absent).
    Ne(String, String),
    /// `k in {"a", "b"}`.
    In(String, BTreeSet<String>),
    /// `k not in {"a", "b"}` (true when the label is absent).
    NotIn(String, BTreeSet<String>),
    /// `k contains "s"`.
    Contains(String, String),
    /// `k starts with "s"`.
    StartsWith(String, String),
    /// `k ends with "s"`.
    EndsWith(String, String),
    /// `!e`.
    Not(Box<Selector>),
    /// `a && b`.
    And(Box<Selector>, Box<Selector>),
    /// `a || b`.
    Or(Box<Selector>, Box<Selector>),
}

/// The deepest nesting a selector may have: parentheses open at once, and levels
/// of the parsed tree (each `!`, `&&` and `||` node is one level). Calico's own
/// selectors are a few levels deep; 64 leaves room for generated ones while
/// keeping every recursive walk far from the end of a thread's stack.
pub const MAX_DEPTH: usize = 64;

/// Why a selector string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?} at byte {offset}: {reason}")]
pub struct SelectorError {
    /// The selector text as given.
    pub input: String,
    /// Byte offset where parsing failed.
    pub offset: usize,
    /// What was expected or found.
    pub reason: String,
}

impl Selector {
    /// Parses a selector in Calico syntax. The empty (or all-blank) string is `all()`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { input, pos: 0, open: 0 };
        p.skip_ws();
        if p.at_end() {
            return Ok(Selector::All);
        }
        let (e, _depth) = p.parse_or()?;
        p.skip_ws();
        if !p.at_end() {
            return Err(p.error("unexpected trailing input"));
        }
        Ok(e)
    }

    /// Evaluates the selector against a label set.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All | Selector::Global => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => labels.get(k) == Some(v),
            Selector::Ne(k, v) => labels.get(k) != Some(v),
            Selector::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
            Selector::Contains(k, s) => labels.get(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => labels.get(k).is_some_and(|v| v.starts_with(s.as_str())),
            Selector::EndsWith(k, s) => labels.get(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(e) => !e.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn quote(s: &str) -> String {
    // Calico strings cannot contain escapes; pick the quote the value lacks.
    if s.contains('"') {
        format!("'{s}'")
    } else {
        format!("\"{s}\"")
    }
}

fn fmt_set(set: &BTreeSet<String>) -> String {
    let items: Vec<String> = set.iter().map(|s| quote(s)).collect();
    format!("{{{}}}", items.join(", "))
}

impl fmt::Display for Selector {
    /// Canonical text: fully parenthesised binary operators, so that
    /// `parse(display(s)) == s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => write!(f, "all()"),
            Selector::Global => write!(f, "global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => write!(f, "{k} == {}", quote(v)),
            Selector::Ne(k, v) => write!(f, "{k} != {}", quote(v)),
            Selector::In(k, s) => write!(f, "{k} in {}", fmt_set(s)),
            Selector::NotIn(k, s) => write!(f, "{k} not in {}", fmt_set(s)),
            Selector::Contains(k, v) => write!(f, "{k} contains {}", quote(v)),
            Selector::StartsWith(k, v) => write!(f, "{k} starts with {}", quote(v)),
            Selector::EndsWith(k, v) => write!(f, "{k} ends with {}", quote(v)),
            Selector::Not(e) => write!(f, "!({e})"),
            Selector::And(a, b) => write!(f, "({a} && {b})"),
            Selector::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    /// Parentheses open at `pos` (bounds the parser's own recursion).
    open: usize,
}

/// A parsed expression with the depth of its tree (1 for a term).
type Node = (Selector, usize);

fn too_deep() -> String {
    format!("selector nested deeper than {MAX_DEPTH} levels")
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &str) -> SelectorError {
        SelectorError { input: self.input.to_string(), offset: self.pos, reason: reason.to_string() }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    /// Consumes `tok` (after whitespace) if present.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    /// Consumes a keyword that must not be followed by a label character.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(word) && !rest[word.len()..].starts_with(is_label_char) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {tok:?}")))
        }
    }

    fn parse_or(&mut self) -> Result<Node, SelectorError> {
        let mut operands = vec![self.parse_and()?];
        while self.eat("||") {
            operands.push(self.parse_and()?);
        }
        self.balanced(operands, Selector::Or)
    }

    fn parse_and(&mut self) -> Result<Node, SelectorError> {
        let mut operands = vec![self.parse_unary()?];
        while self.eat("&&") {
            operands.push(self.parse_unary()?);
        }
        self.balanced(operands, Selector::And)
    }

    /// Joins a run of operands of one operator, in order, into a balanced tree
    /// (`&&` and `||` are associative, and evaluation still goes left to right),
    /// so that its depth grows with the logarithm of the run's length.
    fn balanced(
        &self,
        mut operands: Vec<Node>,
        join: fn(Box<Selector>, Box<Selector>) -> Selector,
    ) -> Result<Node, SelectorError> {
        while operands.len() > 1 {
            let mut next = Vec::with_capacity(operands.len().div_ceil(2));
            let mut it = operands.into_iter();
            while let Some((a, da)) = it.next() {
                match it.next() {
                    Some((b, db)) => next.push((join(Box::new(a), Box::new(b)), 1 + da.max(db))),
                    None => next.push((a, da)),
                }
            }
            operands = next;
        }
        let node = operands.pop().ok_or_else(|| self.error("expected an expression"))?;
        self.check_depth(node)
    }

    fn check_depth(&self, node: Node) -> Result<Node, SelectorError> {
        if node.1 > MAX_DEPTH {
            return Err(self.error(&too_deep()));
        }
        Ok(node)
    }

    fn parse_unary(&mut self) -> Result<Node, SelectorError> {
        // A run of `!` is counted here rather than recursed into, so that no
        // input can make the parser recurse deeper than its open parentheses.
        let mut nots = 0usize;
        loop {
            self.skip_ws();
            if self.rest().starts_with("!=") {
                return Err(self.error("unexpected \"!=\""));
            }
            if !self.eat("!") {
                break;
            }
            nots += 1;
            if nots > MAX_DEPTH {
                return Err(self.error(&too_deep()));
            }
        }
        let (mut e, mut depth) = if self.eat("(") {
            self.open += 1;
            if self.open > MAX_DEPTH {
                return Err(self.error(&too_deep()));
            }
            let e = self.parse_or()?;
            self.expect(")")?;
            self.open -= 1;
            e
        } else {
            (self.parse_term()?, 1)
        };
        for _ in 0..nots {
            e = Selector::Not(Box::new(e));
            depth += 1;
        }
        self.check_depth((e, depth))
    }

    fn parse_label(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest.find(|c| !is_label_char(c)).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a label name"));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn parse_string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let rest = self.rest();
        let q = match rest.chars().next() {
            Some(c @ ('"' | '\'')) => c,
            _ => return Err(self.error("expected a quoted string")),
        };
        match rest[1..].find(q) {
            Some(end) => {
                let s = rest[1..1 + end].to_string();
                self.pos += end + 2;
                Ok(s)
            }
            None => Err(self.error("unterminated string")),
        }
    }

    fn parse_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect("{")?;
        let mut set = BTreeSet::new();
        if self.eat("}") {
            return Ok(set);
        }
        loop {
            set.insert(self.parse_string()?);
            if self.eat("}") {
                return Ok(set);
            }
            self.expect(",")?;
        }
    }

    fn parse_term(&mut self) -> Result<Selector, SelectorError> {
        self.skip_ws();
        for (word, sel) in [("all", Selector::All), ("global", Selector::Global)] {
            let save = self.pos;
            if self.eat_word(word) {
                if self.eat("(") {
                    self.expect(")")?;
                    return Ok(sel);
                }
                self.pos = save;
            }
        }
        let save = self.pos;
        if self.eat_word("has") {
            if self.eat("(") {
                let label = self.parse_label()?;
                self.expect(")")?;
                return Ok(Selector::Has(label));
            }
            self.pos = save;
        }
        let label = self.parse_label()?;
        if self.eat("==") {
            return Ok(Selector::Eq(label, self.parse_string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::Ne(label, self.parse_string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(label, self.parse_set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected \"in\" after \"not\""));
            }
            return Ok(Selector::NotIn(label, self.parse_set()?));
        }
        if self.eat_word("contains") {
            return Ok(Selector::Contains(label, self.parse_string()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                return Err(self.error("expected \"with\" after \"starts\""));
            }
            return Ok(Selector::StartsWith(label, self.parse_string()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                return Err(self.error("expected \"with\" after \"ends\""));
            }
            return Ok(Selector::EndsWith(label, self.parse_string()?));
        }
        Err(self.error(&format!(
            "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label {label:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn test_calico_examples() {
        let l = labels(&[("rack", "r1"), ("zone", "a"), ("kubernetes.io/os", "linux")]);
        let cases = [
            ("", true),
            ("all()", true),
            ("rack == 'r1'", true),
            ("rack == \"r2\"", false),
            ("rack != 'r2'", true),
            ("missing != 'x'", true),
            ("rack in {'r1', 'r3'}", true),
            ("rack not in {'r1'}", false),
            ("missing not in {'r1'}", true),
            ("has(rack)", true),
            ("!has(rack)", false),
            ("!has(missing)", true),
            ("has(rack) && zone == 'b'", false),
            ("has(rack) && zone == 'b' || zone == 'a'", true),
            ("has(rack) && (zone == 'b' || zone == 'a')", true),
            ("!(rack == 'r1')", false),
            ("kubernetes.io/os == 'linux'", true),
            ("rack starts with 'r'", true),
            ("rack ends with '2'", false),
            ("zone contains 'a'", true),
            ("rack in {}", false),
            ("global()", true),
        ];
        for (s, want) in cases {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&l), want, "selector {s:?}");
        }
    }

    #[test]
    fn test_precedence_and_binds_tighter_than_or() {
        let s = Selector::parse("a == '1' || b == '2' && c == '3'").unwrap();
        assert!(matches!(s, Selector::Or(_, _)));
    }

    #[test]
    fn test_bad_selectors_name_position() {
        for bad in [
            "rack ==",
            "rack = 'x'",
            "has(rack",
            "(rack == 'a'",
            "rack in {'a' 'b'}",
            "rack == 'a' extra",
            "&& x",
            "rack not 'a'",
            "rack == 'unterminated",
            "!= 'a'",
        ] {
            let err = Selector::parse(bad).expect_err(bad);
            assert_eq!(err.input, bad);
            assert!(err.offset <= bad.len());
        }
    }

    fn assert_too_deep(text: &str) {
        let err = Selector::parse(text).expect_err("a selector nested too deep");
        assert!(err.reason.contains("nested deeper than 64 levels"), "{}", err.reason);
        assert!(err.offset <= text.len());
    }

    #[test]
    fn test_ten_thousand_levels_are_an_error_not_a_stack_overflow() {
        // Runs on the test harness's ordinary thread (2 MiB stack): before the
        // limit each of these overflowed it.
        let n = 10_000;
        let term = "rack == 'r1'";
        assert_too_deep(&format!("{}{term}{}", "!(".repeat(n), ")".repeat(n)));
        assert_too_deep(&format!("{}{term}{}", "(".repeat(n), ")".repeat(n)));
        assert_too_deep(&format!("{}{term}", "!".repeat(n)));
        assert_too_deep(&format!("{}{term}{}", format!("({term} && ").repeat(n), ")".repeat(n)));
        assert_too_deep(&format!("{}{term}{}", format!("({term} || !").repeat(n), ")".repeat(n)));
        // Unbalanced too: the limit is met before the missing ")" is.
        assert_too_deep(&"(".repeat(n));
    }

    #[test]
    fn test_depth_limit_boundary_and_round_trip() {
        let l = labels(&[("rack", "r1")]);
        // 63 negations over a term: 64 levels, accepted; one more is refused.
        let ok = format!("{}has(rack)", "!".repeat(MAX_DEPTH - 1));
        let sel = Selector::parse(&ok).unwrap();
        assert!(!sel.matches(&l), "an odd number of negations of a true term");
        assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel, "Display of the deepest selector parses back");
        assert_too_deep(&format!("!{ok}"));
        // 64 open parentheses are accepted; 65 are not.
        let parens = |n: usize| format!("{}has(rack){}", "(".repeat(n), ")".repeat(n));
        assert_eq!(Selector::parse(&parens(MAX_DEPTH)).unwrap(), Selector::Has("rack".into()));
        assert_too_deep(&parens(MAX_DEPTH + 1));
    }

    #[test]
    fn test_long_flat_chain_is_a_shallow_balanced_tree() {
        fn depth(s: &Selector) -> usize {
            match s {
                Selector::Not(e) => 1 + depth(e),
                Selector::And(a, b) | Selector::Or(a, b) => 1 + depth(a).max(depth(b)),
                _ => 1,
            }
        }
        let n = 10_000;
        let all: Vec<String> = (0..n).map(|i| format!("k{i} == 'v'")).collect();
        let conj = Selector::parse(&all.join(" && ")).unwrap();
        assert!(depth(&conj) <= 1 + 14, "depth {}", depth(&conj));
        let mut l: BTreeMap<String, String> = (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(conj.matches(&l));
        l.insert(format!("k{}", n - 1), "w".into());
        assert!(!conj.matches(&l), "the last operand still counts");
        let disj = Selector::parse(&all.join(" || ")).unwrap();
        assert!(disj.matches(&labels(&[("k9999", "v")])));
        assert!(!disj.matches(&labels(&[])));
        assert_eq!(Selector::parse(&conj.to_string()).unwrap(), conj);
        // Precedence is unchanged: `&&` runs inside an `||` run.
        let s = Selector::parse("a == '1' && b == '2' || c == '3' && d == '4' || e == '5'").unwrap();
        assert!(s.matches(&labels(&[("e", "5")])));
        assert!(s.matches(&labels(&[("c", "3"), ("d", "4")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("d", "4")])));
    }

    fn arb_label() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9./_-]{0,6}".prop_filter("keywords", |s| {
            !matches!(s.as_str(), "all" | "global" | "has" | "in" | "not" | "contains" | "starts" | "ends" | "with")
        })
    }

    fn arb_value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _.-]{0,5}"
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        let leaf = prop_oneof![
            Just(Selector::All),
            arb_label().prop_map(Selector::Has),
            (arb_label(), arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (arb_label(), arb_value()).prop_map(|(k, v)| Selector::Ne(k, v)),
            (arb_label(), prop::collection::btree_set(arb_value(), 0..3)).prop_map(|(k, s)| Selector::In(k, s)),
            (arb_label(), prop::collection::btree_set(arb_value(), 0..3)).prop_map(|(k, s)| Selector::NotIn(k, s)),
            (arb_label(), arb_value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Selector::Not(Box::new(e))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn prop_display_parse_round_trip(sel in arb_selector()) {
            let text = sel.to_string();
            let back = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, sel);
        }

        #[test]
        fn prop_parser_never_panics(s in "\\PC{0,40}") {
            let _ = Selector::parse(&s);
        }
    }
}
