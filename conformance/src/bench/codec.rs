//! Codec benchmark: decode and re-encode every UPDATE of an MRT capture, next to bgpkit-parser.

/// Runs the codec benchmark with the arguments after `codec`.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("the codec benchmark is being built (issue 2)".into())
}
