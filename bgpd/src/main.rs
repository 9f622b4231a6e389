//! The `bgpd` command.
fn main() {}
