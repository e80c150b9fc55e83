//! Fuzz target for the DSN parameter checks (RFC 3461 xtext, RET, ENVID,
//! NOTIFY, ORCPT): the invariants live in `smtpgate::proto::dsn::selfcheck`,
//! shared with the seed replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpgate::proto::dsn::selfcheck(data);
});
