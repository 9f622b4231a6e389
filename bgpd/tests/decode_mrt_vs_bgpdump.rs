//! `bgpd decode-mrt --json` agrees with `bgpdump -m` (Debian package
//! `bgpdump`, an independent decoder) on every capture in the shared data
//! folder: announced (A lines), withdrawn (W lines) and RIB entries (B lines),
//! and every UPDATE and RIB entry survives decode → encode → decode. The
//! shared data folder is `$BGPD_SHARED_DATA`, else `../shared/data`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Counts bgpdump's A, W and B lines.
fn bgpdump_counts(file: &PathBuf) -> BTreeMap<String, u64> {
    let out = Command::new("bgpdump").arg("-m").arg(file).output().expect("run bgpdump");
    assert!(out.status.success(), "bgpdump failed on {}", file.display());
    let mut counts: BTreeMap<String, u64> = ["A", "W", "B"].iter().map(|k| (k.to_string(), 0)).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(kind) = line.split('|').nth(2) {
            if let Some(c) = counts.get_mut(kind) {
                *c += 1;
            }
        }
    }
    counts
}

fn decode_mrt(file: &PathBuf) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd")).arg("decode-mrt").arg("--json").arg(file).output().unwrap();
    assert!(out.status.success(), "decode-mrt failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_shared_capture_agrees_with_bgpdump() {
    const TEST: &str = "every_shared_capture_agrees_with_bgpdump";
    let Some(dir) = testgate::shared_data(TEST, "mrt") else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("shared data folder {} not readable: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "expected the 7 shared MRT captures in {}", dir.display());
    // Without bgpdump (outside CI) every capture is still decoded and round-tripped.
    let bgpdump = testgate::require_cmd(&format!("{TEST} (the comparison with bgpdump)"), "bgpdump");
    for file in &files {
        let ours = decode_mrt(file);
        assert_eq!(ours["roundtrip_mismatches"], 0, "{}: round trip mismatches", file.display());
        assert_eq!(ours["mrt_errors"], 0, "{}: MRT framing errors", file.display());
        if !bgpdump {
            continue;
        }
        let theirs = bgpdump_counts(file);
        assert_eq!(ours["announced"], theirs["A"], "{}: announced vs bgpdump A lines", file.display());
        assert_eq!(ours["withdrawn"], theirs["W"], "{}: withdrawn vs bgpdump W lines", file.display());
        assert_eq!(ours["rib_entries"], theirs["B"], "{}: RIB entries vs bgpdump B lines", file.display());
    }
}

#[test]
fn full_table_capture_counts() {
    // Figures from the shared data README (bgpdump -m counts).
    let Some(file) = testgate::shared_data("full_table_capture_counts", "mrt/updates.et-header.2015.gz") else {
        return;
    };
    let v = decode_mrt(&file);
    assert_eq!(v["updates"], 89_679);
    assert_eq!(v["announced"], 577_737);
    assert_eq!(v["messages"]["UPDATE"], 89_679);
    assert_eq!(v["errors"]["session_reset"], 0);
    let sets = v["attribute_sets"].as_u64().unwrap();
    assert!((85_000..=90_000).contains(&sets), "about 89,600 distinct attribute sets, got {sets}");
}

#[test]
fn trailing_bits_are_masked_and_the_overrun_is_classified() {
    // The only UPDATE of this capture announces 11.13.0.0/13 (bits set past
    // the length) followed by a one-octet fragment of a second prefix.
    let file = "mrt/updates.nlri_mask_trailing_bits.gz";
    let Some(file) = testgate::shared_data("trailing_bits_are_masked_and_the_overrun_is_classified", file) else {
        return;
    };
    let v = decode_mrt(&file);
    assert_eq!(v["announced"], 1);
    assert_eq!(v["errors"]["session_reset"], 1);
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd")).args(["decode-mrt", "/nonexistent/x.mrt"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.mrt"));
}

#[test]
fn garbage_file_is_reported_not_crashed_on() {
    let dir = std::env::temp_dir().join(format!("bgpd-mrt-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("garbage.mrt");
    std::fs::write(&f, b"\x00\x00\x00\x01\x00\x10\x00\x04\x00\x00\xff\xffshort").unwrap();
    let v = decode_mrt(&f);
    assert_eq!(v["mrt_errors"], 1);
    std::fs::remove_dir_all(&dir).ok();
}
