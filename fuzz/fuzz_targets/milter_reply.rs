//! Fuzz target for the milter reply parser and the message editor: the
//! invariants live in `smtpgate::milter::selfcheck`, shared with the seed
//! replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::milter::selfcheck::check(data);
});
