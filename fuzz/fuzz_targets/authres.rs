//! Fuzz target for the Authentication-Results parser (authserv-id, header
//! removal) and writer: the invariants live in `smtpgate::authres::selfcheck`,
//! shared with the seed replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::authres::selfcheck(data);
});
