//! Fuzz target for the quarantine sidecar reader that `smtpgate quarantine`
//! and the quarantine API use on the files they read back: the invariants
//! live in `smtpgate::quarantine::selfcheck`, shared with the seed replay
//! test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::quarantine::selfcheck(data);
});
