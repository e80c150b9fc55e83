//! Fuzz target for the BDAT receiver: the invariants live in
//! `smtpgate::proto::selfcheck`, shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::proto::selfcheck::check_bdat(data);
});
