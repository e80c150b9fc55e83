//! Fuzz target for the Prometheus text exposition reader `smtpgate rules
//! stats` uses: the invariants live in
//! `smtpgate::metrics::exposition::selfcheck`, shared with the seed replay
//! test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::metrics::exposition::selfcheck(data);
});
