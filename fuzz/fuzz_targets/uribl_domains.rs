//! Fuzz target for the URL-domain extraction of the URIBL check (MIME
//! decoding, URL scanning, the From domain): the invariants live in
//! `smtpgate::checks::urls::selfcheck`, shared with the seed replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::checks::urls::selfcheck(data);
});
