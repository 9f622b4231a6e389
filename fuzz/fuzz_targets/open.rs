//! libFuzzer entry for [`bgpd_fuzz::open`] (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bgpd_fuzz::open(data));
