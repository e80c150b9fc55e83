//! Fuzz target for the DMARC `pct=` tag reader: the invariants live in
//! `smtpgate::checks::dmarc_pct::selfcheck`, shared with the seed replay
//! test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::checks::dmarc_pct::selfcheck(data);
});
