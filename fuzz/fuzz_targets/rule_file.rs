//! Fuzz target for the rule file reader, `tests:` cases included: the
//! invariants live in `smtpgate::rules::selfcheck`, shared with the seed
//! replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::rules::selfcheck::check(data);
});
