//! Fuzz target for the greylisting triplet (sender normalisation, client
//! networks): the invariants live in `smtpgate::protection::check_triplet`,
//! shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::protection::check_triplet(data);
});
