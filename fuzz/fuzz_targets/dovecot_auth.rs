//! Fuzz target for the Dovecot auth protocol codec (line splitting,
//! server lines, tab-escaping): the invariants live in
//! `smtpgate::auth::dovecot::codec::selfcheck`, shared with the corpus
//! replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::auth::dovecot::codec::selfcheck(data);
});
