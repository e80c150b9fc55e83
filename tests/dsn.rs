//! DSN (RFC 3461): offered to clients only once the upstream has been seen
//! to offer it, its parameters checked (xtext) and passed through as
//! written, refused as unknown otherwise (dialogues over in-memory pipes);
//! and a 4xx when failover reaches a server without it (over sockets).

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

/// A server that offers DSN for one connection and is gone after it (its
/// listener closed): the next connection fails over.
fn one_shot_dsn_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let mut w = &stream;
        let mut r = BufReader::new(&stream);
        let _ = w.write_all(b"220 primary.test ESMTP\r\n");
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                Some("EHLO") => b"250-primary.test\r\n250-PIPELINING\r\n250 DSN\r\n",
                Some("QUIT") => b"221 2.0.0 Bye\r\n",
                _ => b"250 2.0.0 Ok\r\n",
            };
            let _ = w.write_all(reply);
            line.clear();
        }
    });
    addr
}

#[test]
fn failover_to_a_server_without_dsn_refuses_dsn_transactions_with_4xx() {
    let primary = one_shot_dsn_server();
    let fallback = common::MockUpstream::start(MockOptions::default());
    let gw = common::Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{primary}\", fallback: [\"{}\"], pool: {{ enabled: false }} }}\n",
        fallback.addr
    ));
    // The probe at start reached the primary, which offered DSN, so the
    // first client is offered it...
    let mut c = gw.client();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(ehlo.contains("DSN"), "{ehlo}");
    // ...but the primary is gone and the fallback lacks it: 4xx, not a
    // MAIL without the client's RET.
    let reply = c.cmd("MAIL FROM:<a@example.com> RET=HDRS", 451);
    assert!(reply.contains("4.3.3"), "{reply}");
    // Without DSN parameters the transaction goes on through the fallback.
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER", 451);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("QUIT", 221);
    assert!(!fallback
        .commands()
        .concat()
        .iter()
        .any(|l| l.contains("RET=") || l.contains("NOTIFY=")));
    // Clients greeted from now on are not offered DSN.
    let mut c = gw.client();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(!ehlo.contains("DSN"), "{ehlo}");
}
