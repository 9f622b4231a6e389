//! libFuzzer entry for [`bgpd_fuzz::datastore`] (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bgpd_fuzz::datastore(data));
