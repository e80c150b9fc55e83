//! Fuzz target for DKIM signing: the From-domain search and signing of
//! arbitrary messages; the invariants live in `smtpgate::dkim::selfcheck`,
//! shared with the seed replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::dkim::selfcheck::check_signing(data);
});
