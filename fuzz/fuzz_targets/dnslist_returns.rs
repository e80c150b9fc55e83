//! Fuzz target for the DNS list return-code filter syntax
//! (`127.0.0.[2..11]`, `127.0.0.2&0.0.0.4`): the invariants live in
//! `smtpgate::config::returns::selfcheck`, shared with the seed replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::config::returns::selfcheck(data);
});
