//! Session logic as dialogues, over in-memory pipes: command hygiene,
//! sequencing, limits, and what the session does with its upstream
//! connection (RSET after an abandoned transaction, a dead kept
//! connection replaced, one reply for every upstream failure). The
//! session, rules and upstream client are the real ones; only the byte
//! streams are in memory. What needs real sockets is in `protocol.rs`.

mod common;

use common::dialogue::Memory;
use common::MockOptions;

fn gateway() -> Memory {
    Memory::start("hostname: gate.test\n", MockOptions::default())
}

#[test]
fn greeting_names_the_host_and_ehlo_advertises_only_what_we_honour() {
    let gw = gateway();
    let mut s = gw.session();
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert_eq!(
        ehlo,
        "250-gate.test greets client.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
    );
    assert_eq!(s.cmd("HELO client.test").expect("250"), "250 gate.test\r\n");
}

#[test]
fn small_commands_answer_as_rfc_5321_says() {
    let gw = gateway();
    let mut s = gw.session();
    assert!(s.cmd("HELP").raw.starts_with("214-2.0.0 "));
    s.cmd("VRFY root").expect("252 2.5.0");
    s.cmd("EXPN staff").expect("502 5.5.1");
    s.cmd("NOOP").expect("250 2.0.0");
    s.cmd("RSET").expect("250 2.0.0");
    s.cmd("QUIT").expect("221 2.0.0");
    assert!(s.is_closed());
}

#[test]
fn out_of_sequence_commands_get_503_and_the_session_goes_on() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("MAIL FROM:<a@example.com>").expect("503 5.5.1");
    s.cmd("EHLO client.test").expect("250");
    s.cmd("RCPT TO:<b@example.com>").expect("503");
    s.cmd("DATA").expect("503");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("503");
    // DATA with no accepted recipient.
    s.cmd("DATA").expect("554 5.5.1");
    s.cmd("RCPT TO:<b@example.com>").expect("250");
    s.cmd("DATA").expect("354");
}

#[test]
fn syntax_errors_and_unknown_commands_get_5xx_and_the_session_goes_on() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("FOO bar").expect("500 5.5.2");
    s.cmd("EHLO").expect("501 5.5.4");
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:a@example.com").expect("501 5.5.4");
    s.cmd("MAIL FROM:<a@example.com> FOO=BAR")
        .expect("555 5.5.4");
    s.cmd("MAIL FROM:<a@example.com> SIZE=abc")
        .expect("501 5.5.4");
    s.send("NOOP \0\r\n");
    s.reply().expect("500 5.5.2");
    s.send("MAIL FROM:<m\u{fc}ller@example.com>\r\n");
    s.reply().expect("500 5.5.2");
    // A bare CR is never a line end: this is one bad line, not two commands.
    s.send("NOOP\rNOOP\r\n");
    s.reply().expect("501");
    // A bare LF is accepted as a line end for lenient clients.
    s.send("NOOP\n");
    s.reply().expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER")
        .expect("555 5.5.4");
}

#[test]
fn too_many_errors_end_the_session_with_421() {
    let gw = gateway();
    let mut s = gw.session();
    for _ in 0..19 {
        s.cmd("BOGUS").expect("500");
    }
    s.cmd("BOGUS").expect("500");
    s.reply().expect("421 4.7.0");
    assert!(s.is_closed());
}

#[test]
fn command_line_over_the_limit_gets_500_and_the_session_goes_on() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd(&format!("NOOP {}", "x".repeat(600)))
        .expect("500 5.5.6");
    // A huge line without an end is discarded as it arrives.
    s.send(&"y".repeat(200_000));
    s.send("\r\nNOOP\r\n");
    s.reply().expect("500");
    s.reply().expect("250");
}

#[test]
fn text_line_over_the_limit_is_refused_with_500() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    let body = format!("Subject: long\r\n\r\n{}\r\n", "z".repeat(1200));
    s.send_message("a@example.com", &["b@example.com"], &body)
        .expect("500 5.5.6");
    assert!(gw.upstream.delivered().is_empty());
    s.cmd("NOOP").expect("250");
}

#[test]
fn declared_size_over_the_limit_is_refused_at_mail() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com> SIZE=26214401")
        .expect("552 5.3.4");
    s.cmd("MAIL FROM:<a@example.com> SIZE=26214400")
        .expect("250");
}

#[test]
fn body_over_the_limit_is_refused_and_nothing_is_forwarded() {
    let gw = Memory::start(
        "hostname: gate.test\nlimits: { max_message_bytes: 4096 }\n",
        MockOptions::default(),
    );
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    let body = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(1000)
    );
    s.send_message("a@example.com", &["b@example.com"], &body)
        .expect("552 5.3.4");
    // The session goes on, and the next message fits.
    s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: small\r\n\r\nok\r\n",
    )
    .expect("250");
    let d = gw.upstream.wait_for(1);
    assert_eq!(d.len(), 1);
    assert!(String::from_utf8_lossy(&d[0].data).contains("Subject: small"));
    // The abandoned transaction was reset upstream before the next one.
    assert!(gw.upstream.commands()[0].iter().any(|c| c == "RSET"));
}

#[test]
fn recipients_over_the_limit_get_452() {
    let gw = Memory::start(
        "hostname: gate.test\nlimits: { max_recipients: 3 }\n",
        MockOptions::default(),
    );
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    for i in 0..3 {
        s.cmd(&format!("RCPT TO:<r{i}@example.com>")).expect("250");
    }
    s.cmd("RCPT TO:<r3@example.com>").expect("452 4.5.3");
    s.cmd("DATA").expect("354");
    s.send("Subject: x\r\n\r\ny\r\n.\r\n");
    s.reply().expect("250");
    assert_eq!(gw.upstream.wait_for(1)[0].rcpts.len(), 3);
}

/// The commands the upstream saw on its first connection.
fn upstream_commands(gw: &Memory) -> Vec<String> {
    gw.upstream.commands().first().cloned().unwrap_or_default()
}

#[test]
fn an_abandoned_transaction_is_reset_upstream_once_before_the_next_mail() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RCPT TO:<b@example.com>").expect("250");
    // The client gives up on it without RSET: a new EHLO ends it.
    s.cmd("EHLO client.test").expect("250");
    s.send_message(
        "a@example.com",
        &["c@example.com"],
        "Subject: 2\r\n\r\n2\r\n",
    )
    .expect("250");
    let seen = upstream_commands(&gw);
    let mails: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("MAIL FROM"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(mails.len(), 2, "{seen:?}");
    let between = &seen[mails[0]..mails[1]];
    assert_eq!(
        between.iter().filter(|c| *c == "RSET").count(),
        1,
        "exactly one RSET before the second MAIL: {seen:?}"
    );
    let d = gw.upstream.wait_for(1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].rcpts, vec!["c@example.com".to_string()]);
}

#[test]
fn a_client_rset_after_a_finished_transaction_costs_the_upstream_nothing() {
    let gw = gateway();
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: 1\r\n\r\n1\r\n",
    )
    .expect("250");
    s.cmd("RSET").expect("250 2.0.0");
    s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: 2\r\n\r\n2\r\n",
    )
    .expect("250");
    let seen = upstream_commands(&gw);
    assert!(!seen.iter().any(|c| c == "RSET"), "{seen:?}");
    assert_eq!(gw.upstream.wait_for(2).len(), 2);
}

#[test]
fn a_kept_connection_that_died_is_replaced_before_the_client_sees_it() {
    // The upstream drops the connection when the second MAIL arrives on
    // it: the session must open a new one and the client never knows.
    let gw = Memory::start(
        "hostname: gate.test\n",
        MockOptions {
            close_at_mail: Some(2),
            ..MockOptions::default()
        },
    );
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: 1\r\n\r\n1\r\n",
    )
    .expect("250");
    s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: 2\r\n\r\n2\r\n",
    )
    .expect("250");
    let d = gw.upstream.wait_for(2);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].connection, 0);
    assert_eq!(
        d[1].connection, 1,
        "the second went over a fresh connection"
    );
}

#[test]
fn an_upstream_that_hangs_up_during_the_body_is_a_451_and_the_session_goes_on() {
    let gw = Memory::start(
        "hostname: gate.test\n",
        MockOptions {
            close_after_body_bytes: Some(10),
            ..MockOptions::default()
        },
    );
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    let body = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(100));
    // The upstream hangs up during the body: temporary, the client keeps it.
    s.send_message("a@example.com", &["b@example.com"], &body)
        .expect("451 4.4.1");
    assert!(gw.upstream.delivered().is_empty());
    // The session goes on with a new connection.
    s.cmd("NOOP").expect("250");
}

#[test]
fn an_upstream_refusing_the_greeting_is_a_temporary_failure_for_the_client() {
    let gw = Memory::start(
        "hostname: gate.test\n",
        MockOptions {
            greeting: "554 5.3.2 not now".to_string(),
            ..MockOptions::default()
        },
    );
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("451 4.4.1");
    // Still a session: the client may try again.
    s.cmd("NOOP").expect("250");
}
