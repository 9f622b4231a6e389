//! The `--name VALUE` options of the benchmarks, read in order with the same errors in
//! every bench: "--name needs a value", "--name: not a number: x", "--name must be A to B"
//! and "unknown option --x". Each bench keeps its own options and defaults; this only
//! reads them.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::slice;
use std::str::FromStr;

/// A bench's arguments, one option at a time: iterating gives each option's name
/// (`--peers`); [`Flags::value`] and the number readers then take that option's value,
/// for options that have one.
pub(crate) struct Flags<'a> {
    rest: slice::Iter<'a, String>,
    /// The option the iterator gave last.
    name: &'a str,
}

impl<'a> Flags<'a> {
    /// Reads `args` (the arguments after the bench's name).
    pub(crate) fn new(args: &'a [String]) -> Flags<'a> {
        Flags { rest: args.iter(), name: "" }
    }

    /// The current option's value: the next argument.
    pub(crate) fn value(&mut self) -> Result<&'a str, String> {
        self.rest.next().map(String::as_str).ok_or_else(|| format!("{} needs a value", self.name))
    }

    /// The current option's value as a number.
    pub(crate) fn number<T: FromStr>(&mut self) -> Result<T, String> {
        let v = self.value()?;
        self.parse(v)
    }

    /// The current option's value as a number in `range`.
    pub(crate) fn number_in<T>(&mut self, range: RangeInclusive<T>) -> Result<T, String>
    where
        T: FromStr + PartialOrd + Display,
    {
        let v = self.value()?;
        self.in_range(v, range)
    }

    /// `v` (the current option's value, or one item of a list in it) as a number.
    pub(crate) fn parse<T: FromStr>(&self, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{}: not a number: {v}", self.name))
    }

    /// `v` (the current option's value, or one item of a list in it) as a number in `range`.
    pub(crate) fn in_range<T>(&self, v: &str, range: RangeInclusive<T>) -> Result<T, String>
    where
        T: FromStr + PartialOrd + Display,
    {
        let n = self.parse(v)?;
        if !range.contains(&n) {
            return Err(format!("{} must be {} to {}", self.name, range.start(), range.end()));
        }
        Ok(n)
    }

    /// The error for an option the bench does not know: the current one.
    pub(crate) fn unknown(&self) -> String {
        format!("unknown option {}", self.name)
    }
}

impl<'a> Iterator for Flags<'a> {
    type Item = &'a str;

    /// The next option's name, or `None` after the last argument.
    fn next(&mut self) -> Option<&'a str> {
        self.name = self.rest.next()?;
        Some(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_values_and_flags_come_in_order() {
        let a = args(&["--peers", "10", "--load", "--via", "bgp,static", "--secs", "1.5"]);
        let mut f = Flags::new(&a);
        assert_eq!(f.next(), Some("--peers"));
        assert_eq!(f.number_in(1..=50usize), Ok(10));
        assert_eq!(f.next(), Some("--load"));
        assert_eq!(f.next(), Some("--via"));
        assert_eq!(f.value(), Ok("bgp,static"));
        assert_eq!(f.next(), Some("--secs"));
        assert_eq!(f.number_in(0.0..=600.0), Ok(1.5));
        assert_eq!(f.next(), None);
    }

    #[test]
    fn errors_name_the_option() {
        let a = args(&["--peers", "x", "--peers", "0", "--window", "NaN", "--bogus", "--sessions"]);
        let mut f = Flags::new(&a);
        f.next();
        assert_eq!(f.number::<usize>(), Err("--peers: not a number: x".to_string()));
        f.next();
        assert_eq!(f.number_in(1..=50usize), Err("--peers must be 1 to 50".to_string()));
        f.next();
        assert_eq!(f.number_in(0.0..=600.0), Err("--window must be 0 to 600".to_string()));
        f.next();
        assert_eq!(f.unknown(), "unknown option --bogus");
        f.next();
        assert_eq!(f.value(), Err("--sessions needs a value".to_string()));
        assert_eq!(f.in_range("0", 1..=5u32), Err("--sessions must be 1 to 5".to_string()));
    }
}
