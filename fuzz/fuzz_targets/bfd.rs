//! libFuzzer entry for [`bgpd_fuzz::bfd`] (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bgpd_fuzz::bfd(data));
