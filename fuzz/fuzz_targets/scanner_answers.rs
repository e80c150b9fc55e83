//! Fuzz target for the scanners' answer parsers (the HTTP response, rspamd's
//! `/checkv2` JSON, clamd's `INSTREAM` reply): the invariants live in
//! `smtpgate::checks::scanners::selfcheck`, shared with the seed replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::checks::scanners::selfcheck(data);
});
