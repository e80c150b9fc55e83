//! DSN (RFC 3461) as dialogues over in-memory pipes: offered to clients
//! only once the upstream has been seen to offer it, its parameters
//! checked (xtext) and passed through as written; refused as unknown
//! otherwise.

mod common;

use common::dialogue::Memory;
use common::MockOptions;

const YAML: &str = "hostname: gate.test\n";

fn dsn_upstream() -> Memory {
    let options = MockOptions {
        ehlo_extra: vec!["DSN".into()],
        ..MockOptions::default()
    };
    Memory::start(YAML, options)
}

/// One transaction, so the pool has connected to the upstream once.
fn connect_once(gw: &Memory) {
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("QUIT").expect("221");
}

#[test]
fn without_dsn_upstream_it_is_not_offered_and_its_parameters_are_refused() {
    let gw = Memory::start(YAML, MockOptions::default());
    connect_once(&gw);
    let mut s = gw.session();
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(!ehlo.contains("DSN"), "{ehlo}");
    s.cmd("MAIL FROM:<a@example.com> RET=FULL")
        .expect("555 5.5.4");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER")
        .expect("555 5.5.4");
}

#[test]
fn dsn_is_offered_once_the_upstream_has_offered_it() {
    let gw = dsn_upstream();
    let mut s = gw.session();
    // Nothing known of the upstream yet: nothing promised on its behalf.
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(!ehlo.contains("DSN"), "{ehlo}");
    s.cmd("MAIL FROM:<a@example.com> RET=FULL").expect("555");
    connect_once(&gw);
    let mut s = gw.session();
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(
        ehlo.contains("250-DSN\r\n") || ehlo.contains("250 DSN\r\n"),
        "{ehlo}"
    );
}

#[test]
fn dsn_parameters_pass_through_as_written() {
    let gw = dsn_upstream();
    connect_once(&gw);
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ314159+2Bx")
        .expect("250");
    s.cmd("RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.com")
        .expect("250");
    s.cmd("RCPT TO:<c@example.com> NOTIFY=NEVER").expect("250");
    s.cmd("DATA").expect("354");
    s.send("Subject: dsn\r\n\r\nbody\r\n.\r\n");
    s.reply().expect("250");
    let commands = gw.upstream.commands().concat();
    for wanted in [
        "MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ314159+2Bx",
        "RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.com",
        "RCPT TO:<c@example.com> NOTIFY=NEVER",
    ] {
        assert!(
            commands.iter().any(|c| c == wanted),
            "{wanted} not in {commands:?}"
        );
    }
}

#[test]
fn malformed_dsn_parameters_get_501_and_never_reach_the_upstream() {
    let gw = dsn_upstream();
    connect_once(&gw);
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com> RET=ALL")
        .expect("501 5.5.4");
    s.cmd("MAIL FROM:<a@example.com> ENVID=a+2")
        .expect("501 5.5.4");
    s.cmd("MAIL FROM:<a@example.com> ENVID=a=b")
        .expect("501 5.5.4");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS")
        .expect("501 5.5.4");
    s.cmd("RCPT TO:<b@example.com> NOTIFY=SOMETIMES")
        .expect("501 5.5.4");
    s.cmd("RCPT TO:<b@example.com> ORCPT=b@example.com")
        .expect("501 5.5.4");
    s.cmd("RCPT TO:<b@example.com> ORCPT=rfc822;")
        .expect("501 5.5.4");
    let commands = gw.upstream.commands().concat();
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("RET=") || c.contains("NOTIFY=") || c.contains("ORCPT=")),
        "{commands:?}"
    );
}
