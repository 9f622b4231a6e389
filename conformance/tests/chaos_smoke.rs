//! Two scenarios of `bench chaos` (`conformance/src/bench/chaos`) at small scale against
//! bgpd, as correctness tests (no timing or memory figure is asserted):
//!
//! - slow reader: peer A stops reading while B sends 2,000,000 routes in 100,000
//!   attribute sets (about 13 MB of UPDATEs for A): bgpd must pause its export to A (8 MiB
//!   queued), C must get every route meanwhile, and once A reads again it must get every
//!   route too (the export resumed from the Loc-RIB);
//! - garbage datastore: random bytes, random text, a 10,000-level nested selector and
//!   YAML, objects missing every required field: each detected and named, sessions and
//!   routes kept, and everything back once the good file returns.

use conformance::bench::chaos::{self, Figures, Options, Val};
use conformance::bench::routeserver::DutKind;
use conformance::lab::bgpd;

fn text(f: &Figures, what: &str) -> String {
    let row = f.rows.iter().find(|(w, _)| w.starts_with(what));
    match row.map(|(_, v)| v) {
        Some(Val::Text(t)) => t.clone(),
        Some(Val::Num(n, _)) => n.to_string(),
        None => panic!("no figure {what:?} in {:#?}", f.rows),
    }
}

#[test]
fn bgpd_pauses_export_to_a_peer_that_does_not_read_and_it_catches_up() {
    let test = "bgpd_pauses_export_to_a_peer_that_does_not_read_and_it_catches_up";
    if !testgate::require_root_and_cmds(test, &["ip", "ss"]) {
        return;
    }
    let o = Options { slow_routes: 2_000_000, slow_sets: 100_000, slow_secs: 30, ..Options::default() };
    let bin = bgpd::binary();
    let f = chaos::slow_reader::run(DutKind::Bgpd, Some(&bin), &o).unwrap_or_else(|e| panic!("{e}"));
    let table = chaos::table(&[(DutKind::Bgpd, f.clone())]);
    eprintln!("{table}");
    assert_eq!(text(&f, "B's routes at C at the end of the window"), "2000000", "{table}");
    assert!(text(&f, "the DUT's export to A at the end of the window").ends_with("export paused"), "{table}");
    let caught_up = text(&f, "A reads again: it held every route of B after");
    assert!(caught_up.ends_with(" s") && !caught_up.contains("not"), "{table}");
    assert_eq!(text(&f, "sessions B and C"), "up throughout", "{table}");
    assert_eq!(text(&f, "DUT process"), "running", "{table}");
}

#[test]
fn bgpd_keeps_its_last_good_state_through_a_garbage_datastore() {
    let test = "bgpd_keeps_its_last_good_state_through_a_garbage_datastore";
    if !testgate::require_root_and_cmds(test, &["ip"]) {
        return;
    }
    let o = Options { routes: 1000, ..Options::default() };
    let bin = bgpd::binary();
    let f = chaos::datastore::run(Some(&bin), &o).unwrap_or_else(|e| panic!("{e}"));
    let table = chaos::table(&[(DutKind::Bgpd, f.clone())]);
    eprintln!("{table}");
    for v in chaos::datastore::Variant::ALL {
        let name = v.name();
        assert!(text(&f, &format!("{name}: detected after")).ends_with(" ms"), "{name}: {table}");
        let says = text(&f, &format!("{name}: `show config` says"));
        assert!(says.contains("new problem") && !says.starts_with("0 "), "{name}: {table}");
        assert_ne!(text(&f, &format!("{name}: log")), "no warning", "{name}: {table}");
        assert_eq!(text(&f, &format!("{name}: sessions and routes 3 s later")), "kept", "{name}: {table}");
        assert_eq!(text(&f, &format!("{name}: state after recovery")), "kept", "{name}: {table}");
    }
}
