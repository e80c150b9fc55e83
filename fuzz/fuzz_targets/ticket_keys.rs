//! Fuzz target for the TLS ticket key file reader: the invariants live in
//! `smtpgate::tls::tickets::selfcheck`, shared with the seed replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::tls::tickets::selfcheck(data);
});
