//! Raw-socket dialogues: command hygiene, sequencing, limits, SMTP
//! smuggling, timeouts, connection limits and graceful shutdown.

mod common;

use common::{Client, Gateway, MockOptions, MockUpstream};
use std::io::Write;
use std::time::Duration;

fn gateway() -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    (up, gw)
}

#[test]
fn greeting_names_the_host_and_ehlo_advertises_only_what_we_honour() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr);
    let greeting = c.expect(220);
    assert!(greeting.starts_with("220 gate.test "), "{greeting}");
    let ehlo = c.cmd("EHLO client.test", 250);
    assert_eq!(
        ehlo,
        "250-gate.test greets client.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
    );
    assert_eq!(c.cmd("HELO client.test", 250), "250 gate.test\r\n");
}

#[test]
fn small_commands_answer_as_rfc_5321_says() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    assert!(c.cmd("HELP", 214).starts_with("214-2.0.0 "));
    assert!(c.cmd("VRFY root", 252).starts_with("252 2.5.0"));
    assert!(c.cmd("EXPN staff", 502).starts_with("502 5.5.1"));
    assert!(c.cmd("NOOP", 250).starts_with("250 2.0.0"));
    assert!(c.cmd("RSET", 250).starts_with("250 2.0.0"));
    assert!(c.cmd("QUIT", 221).starts_with("221 2.0.0"));
    assert!(c.is_closed());
}

#[test]
fn out_of_sequence_commands_get_503_and_the_session_goes_on() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    assert!(c
        .cmd("MAIL FROM:<a@example.com>", 503)
        .starts_with("503 5.5.1"));
    c.cmd("EHLO client.test", 250);
    c.cmd("RCPT TO:<b@example.com>", 503);
    c.cmd("DATA", 503);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("MAIL FROM:<a@example.com>", 503);
    // DATA with no accepted recipient.
    assert!(c.cmd("DATA", 554).starts_with("554 5.5.1"));
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
}

#[test]
fn syntax_errors_and_unknown_commands_get_5xx_and_the_session_goes_on() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    assert!(c.cmd("FOO bar", 500).starts_with("500 5.5.2"));
    assert!(c.cmd("EHLO", 501).starts_with("501 5.5.4"));
    c.cmd("EHLO client.test", 250);
    assert!(c
        .cmd("MAIL FROM:a@example.com", 501)
        .starts_with("501 5.5.4"));
    assert!(c
        .cmd("MAIL FROM:<a@example.com> FOO=BAR", 555)
        .starts_with("555 5.5.4"));
    assert!(c
        .cmd("MAIL FROM:<a@example.com> SIZE=abc", 501)
        .starts_with("501 5.5.4"));
    c.send_bytes(b"NOOP \0\r\n");
    assert!(c.expect(500).starts_with("500 5.5.2"));
    c.send_bytes(b"MAIL FROM:<m\xc3\xbcller@example.com>\r\n");
    assert!(c.expect(500).starts_with("500 5.5.2"));
    // A bare CR is never a line end: this is one bad line, not two commands.
    c.send_bytes(b"NOOP\rNOOP\r\n");
    c.expect(501);
    // A bare LF is accepted as a line end for lenient clients.
    c.send_bytes(b"NOOP\n");
    c.expect(250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    assert!(c
        .cmd("RCPT TO:<b@example.com> NOTIFY=NEVER", 555)
        .starts_with("555 5.5.4"));
}

#[test]
fn a_command_sent_one_byte_at_a_time_works() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    for b in b"EHLO slow.client.test\r\n" {
        c.stream.write_all(&[*b]).unwrap();
        c.stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(c.expect(250).contains("greets slow.client.test"));
}

#[test]
fn too_many_errors_end_the_session_with_421() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    for _ in 0..19 {
        c.cmd("BOGUS", 500);
    }
    c.send("BOGUS\r\n");
    c.expect(500);
    let last = c.reply();
    assert_eq!(last.code, 421);
    assert!(last.raw.starts_with("421 4.7.0"));
    assert!(c.is_closed());
}

#[test]
fn command_line_over_the_limit_gets_500_and_the_session_goes_on() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    c.send(&long);
    assert!(c.expect(500).starts_with("500 5.5.6"));
    // A huge line without an end is discarded as it arrives.
    c.send(&"y".repeat(200_000));
    c.send("\r\nNOOP\r\n");
    c.expect(500);
    c.expect(250);
}

#[test]
fn text_line_over_the_limit_is_refused_with_500() {
    let (up, gw) = gateway();
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let body = format!("Subject: long\r\n\r\n{}\r\n", "z".repeat(1200));
    let r = c.send_message("a@example.com", &["b@example.com"], &body);
    assert!(r.raw.starts_with("500 5.5.6"), "{}", r.raw);
    assert!(up.delivered().is_empty());
    c.cmd("NOOP", 250);
}

#[test]
fn declared_size_over_the_limit_is_refused_at_mail() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com> SIZE=26214401", 552);
    assert!(r.starts_with("552 5.3.4"));
    c.cmd("MAIL FROM:<a@example.com> SIZE=26214400", 250);
}

#[test]
fn body_over_the_limit_is_refused_and_nothing_is_forwarded() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "limits: { max_message_bytes: 4096 }\n");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let body = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(1000)
    );
    let r = c.send_message("a@example.com", &["b@example.com"], &body);
    assert!(r.raw.starts_with("552 5.3.4"), "{}", r.raw);
    // The session goes on, and the next message fits.
    let r = c.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: small\r\n\r\nok\r\n",
    );
    assert_eq!(r.code, 250);
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    assert!(String::from_utf8_lossy(&d[0].data).contains("Subject: small"));
    // The abandoned transaction was reset upstream before the next one.
    assert!(up.commands()[0].iter().any(|c| c == "RSET"));
}

#[test]
fn recipients_over_the_limit_get_452() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "limits: { max_recipients: 3 }\n");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<r{i}@example.com>"), 250);
    }
    assert!(c
        .cmd("RCPT TO:<r3@example.com>", 452)
        .starts_with("452 4.5.3"));
    c.cmd("DATA", 354);
    c.send("Subject: x\r\n\r\ny\r\n.\r\n");
    c.expect(250);
    assert_eq!(up.wait_for(1)[0].rcpts.len(), 3);
}

/// Each smuggling sequence, followed by a second transaction a naive
/// proxy would pass through as a separate message.
const SMUGGLING: &[&[u8]] = &[
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n", b"\r.\r\n",
];

fn smuggle(c: &mut Client, seq: &[u8]) -> common::WireReply {
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
    let mut body = b"Subject: hello\r\n\r\nhello".to_vec();
    body.extend_from_slice(seq);
    body.extend_from_slice(b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
    c.send_bytes(&body);
    c.reply()
}

#[test]
fn smuggling_sequences_are_rejected_and_never_start_a_second_transaction() {
    for seq in SMUGGLING {
        let (up, gw) = gateway();
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        let r = smuggle(&mut c, seq);
        assert!(r.raw.starts_with("554 5.6.0"), "{seq:?}: {}", r.raw);
        // The smuggled commands were message text, not commands: the next
        // thing the session reads is our NOOP.
        c.cmd("NOOP", 250);
        std::thread::sleep(Duration::from_millis(50));
        assert!(up.delivered().is_empty(), "{seq:?}");
        let mails: usize = up
            .commands()
            .iter()
            .flatten()
            .filter(|l| l.starts_with("MAIL"))
            .count();
        assert!(mails <= 1, "{seq:?}: upstream saw {mails} MAIL commands");
    }
}

#[test]
fn smuggling_sequences_normalised_make_exactly_one_upstream_transaction() {
    for seq in SMUGGLING {
        let up = MockUpstream::start(MockOptions::default());
        let gw = Gateway::with_upstream(&up, "message: { bare_line_endings: normalize }\n");
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        let r = smuggle(&mut c, seq);
        assert_eq!(r.code, 250, "{seq:?}: {}", r.raw);
        c.cmd("NOOP", 250);
        let d = up.wait_for(1);
        assert_eq!(d.len(), 1, "{seq:?}");
        assert_eq!(d[0].rcpts, vec!["b@example.com"]);
        let text = String::from_utf8_lossy(&d[0].data);
        assert!(
            text.contains("MAIL FROM:<admin@example.com>"),
            "smuggled text stays content"
        );
        // What went upstream is canonical: every CR is followed by LF and
        // every LF preceded by CR.
        let wire = &d[0].wire;
        for (i, b) in wire.iter().enumerate() {
            if *b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "{seq:?}");
            }
            if *b == b'\n' {
                assert_eq!(wire[i - 1], b'\r', "{seq:?}");
            }
        }
        let mails = up
            .commands()
            .iter()
            .flatten()
            .filter(|l| l.starts_with("MAIL"))
            .count();
        assert_eq!(mails, 1, "{seq:?}");
    }
}

#[test]
fn idle_client_times_out_with_421() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "timeouts: { command_s: 1 }\n");
    let mut c = gw.client();
    let r = c.reply();
    assert!(r.raw.starts_with("421 4.4.2"), "{}", r.raw);
    assert!(c.is_closed());
}

#[test]
fn connections_over_the_limit_get_421_at_once() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "limits: { max_connections: 2 }\n");
    let _a = gw.client();
    let _b = gw.client();
    let mut c = Client::connect(gw.addr);
    let r = c.reply();
    assert!(r.raw.starts_with("421 4.7.0"), "{}", r.raw);
    assert!(c.is_closed());
    drop(_a);
    // A slot frees up once a session ends.
    let mut ok = false;
    for _ in 0..100 {
        let mut d = Client::connect(gw.addr);
        if d.reply().code == 220 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok);
}

#[test]
fn shutdown_tells_idle_sessions_421_and_lets_transactions_finish() {
    let (up, gw) = gateway();
    let mut idle = gw.client();
    idle.cmd("EHLO idle.test", 250);
    let mut busy = gw.client();
    busy.cmd("EHLO busy.test", 250);
    busy.cmd("MAIL FROM:<a@example.com>", 250);
    busy.cmd("RCPT TO:<b@example.com>", 250);
    gw.shutdown();
    let r = idle.reply();
    assert!(r.raw.starts_with("421 4.3.2"), "{}", r.raw);
    assert!(idle.is_closed());
    // New connections are no longer accepted once the listener is closed.
    busy.cmd("DATA", 354);
    busy.send("Subject: in flight\r\n\r\nfinish me\r\n.\r\n");
    busy.expect(250);
    let r = busy.reply();
    assert!(r.raw.starts_with("421 4.3.2"), "{}", r.raw);
    assert_eq!(up.wait_for(1).len(), 1);
    assert!(gw.wait_stopped(Duration::from_secs(10)));
}
