//! Lockstep relaying over real sockets: what the client sends reaches the
//! upstream unchanged, and what the upstream says reaches the client.

mod common;

use common::mock_upstream::dead_addr;
use common::{message, strip_received, Gateway, MockOptions, MockUpstream};
use lettre::address::Envelope;
use lettre::{Address, SmtpTransport, Transport};

fn lettre_transport(gw: &Gateway) -> SmtpTransport {
    SmtpTransport::builder_dangerous(gw.addr.ip().to_string())
        .port(gw.addr.port())
        .build()
}

#[test]
fn lettre_message_arrives_byte_exact_with_received_header() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let email = lettre::Message::builder()
        .from("Alice <alice@example.com>".parse().unwrap())
        .to("Bob <bob@example.net>".parse().unwrap())
        .subject("byte exact")
        .body("Hello Bob,\r\n.leading dot line\r\n..two dots\r\nbye\r\n".to_string())
        .unwrap();
    let raw = email.formatted();
    let envelope = Envelope::new(
        Some("alice@example.com".parse::<Address>().unwrap()),
        vec!["bob@example.net".parse::<Address>().unwrap()],
    )
    .unwrap();
    let response = lettre_transport(&gw)
        .send_raw(&envelope, &raw)
        .expect("lettre send");
    assert_eq!(response.code().to_string(), "250");
    assert!(
        response.message().any(|l| l.contains("queued as MOCK")),
        "upstream's text passes through"
    );
    let delivered = up.wait_for(1);
    assert_eq!(delivered.len(), 1);
    let d = &delivered[0];
    assert_eq!(d.from, "alice@example.com");
    assert_eq!(d.rcpts, vec!["bob@example.net"]);
    // lettre ends DATA with "\r\n.\r\n" after the message, so the CRLF
    // it adds is part of what it sent.
    let mut expected = raw.clone();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(strip_received(&d.data), &expected[..]);
    let received = String::from_utf8_lossy(&d.data[..d.data.len() - expected.len()]).to_string();
    assert!(
        received.contains("by gate.test (smtpgate) with ESMTP id "),
        "{received}"
    );
    assert!(received.contains("for <bob@example.net>"), "{received}");
    assert!(received.contains("[127.0.0.1]"), "{received}");
}

#[test]
fn dot_stuffing_is_undone_inbound_and_redone_outbound() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "message: { received_header: false }\n");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    // On the wire: "..", "...x", "." inside a line, and a lone dot line stuffed as "..".
    let body = "Subject: dots\r\n\r\n..\r\n...x\r\na.b\r\n..\r\nend\r\n";
    let r = c.send_message("a@example.com", &["b@example.com"], body);
    assert_eq!(r.code, 250);
    let d = up.wait_for(1);
    assert_eq!(
        d[0].data,
        b"Subject: dots\r\n\r\n.\r\n..x\r\na.b\r\n.\r\nend\r\n"
    );
    assert_eq!(
        d[0].wire,
        b"Subject: dots\r\n\r\n..\r\n...x\r\na.b\r\n..\r\nend\r\n.\r\n"
    );
}

#[test]
fn received_header_can_be_turned_off() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "message: { received_header: false }\n");
    let mut c = gw.client();
    c.cmd("HELO client.test", 250);
    let body = message("plain", "hi\r\n");
    assert_eq!(
        c.send_message("a@example.com", &["b@example.com"], &body)
            .code,
        250
    );
    assert_eq!(up.wait_for(1)[0].data, body.as_bytes());
}

#[test]
fn pipelined_batch_gets_replies_in_order() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(ehlo.contains("PIPELINING"));
    c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    assert!(c.expect(250).contains("2.1.0"));
    assert!(c.expect(250).contains("2.1.5"));
    assert!(c.expect(250).contains("2.1.5"));
    c.expect(354);
    c.send(&message("pipelined", "body\r\n"));
    c.send(".\r\nQUIT\r\n");
    c.expect(250);
    c.expect(221);
    let d = up.wait_for(1);
    assert_eq!(d[0].rcpts, vec!["b@example.com", "c@example.com"]);
}

#[test]
fn per_recipient_upstream_replies_reach_the_client_unchanged() {
    let mut options = MockOptions::default();
    options.rcpt_replies.insert(
        "nobody@example.com".into(),
        "550 5.1.1 <nobody@example.com>: Recipient address rejected".into(),
    );
    let up = MockUpstream::start(options);
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<real@example.com>\r\nDATA\r\n");
    c.expect(250);
    let rejected = c.expect(550);
    assert_eq!(
        rejected,
        "550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n"
    );
    c.expect(250);
    c.expect(354);
    c.send(&message("one-of-two", "x\r\n"));
    c.send(".\r\n");
    c.expect(250);
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].rcpts, vec!["real@example.com"]);
}

#[test]
fn without_upstream_pipelining_commands_go_one_by_one() {
    let up = MockUpstream::start(MockOptions {
        pipelining: false,
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    c.expect(250);
    c.expect(250);
    c.expect(250);
    c.expect(354);
    c.send("Subject: x\r\n\r\ny\r\n.\r\n");
    c.expect(250);
    assert_eq!(up.wait_for(1)[0].rcpts.len(), 2);
}

#[test]
fn helo_fallback_when_upstream_refuses_ehlo() {
    let up = MockUpstream::start(MockOptions {
        refuse_ehlo: true,
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["b@example.com"],
            "Subject: x\r\n\r\ny\r\n"
        )
        .code,
        250
    );
    let cmds = &up.commands()[0];
    assert!(cmds.iter().any(|c| c.starts_with("HELO ")), "{cmds:?}");
}

#[test]
fn upstream_down_gives_451_at_mail() {
    let gw = Gateway::start(&format!("upstream: {{ addr: \"{}\" }}\n", dead_addr()));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451 4.4.1"), "{r}");
    // The session goes on; no transaction exists.
    c.cmd("RCPT TO:<b@example.com>", 503);
    c.cmd("QUIT", 221);
}

#[test]
fn upstream_closing_mid_data_gives_4xx_never_250() {
    let up = MockUpstream::start(MockOptions {
        close_after_body_bytes: Some(10),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let body = format!("Subject: big\r\n\r\n{}", "line of text\r\n".repeat(2000));
    let r = c.send_message("a@example.com", &["b@example.com"], &body);
    assert_eq!(r.code, 451, "{}", r.raw);
    assert!(r.raw.starts_with("451 4.4.1"));
    assert!(up.delivered().is_empty());
    // The next transaction opens a fresh upstream connection.
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    assert_eq!(up.commands().len(), 2);
}

#[test]
fn upstream_451_at_final_dot_reaches_the_client() {
    let up = MockUpstream::start(MockOptions {
        data_reply: "451 4.3.0 Try again later, queue full".into(),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: x\r\n\r\ny\r\n",
    );
    assert_eq!(r.raw, "451 4.3.0 Try again later, queue full\r\n");
}

#[test]
fn upstream_connection_is_reused_and_rset_is_forwarded() {
    let up = MockUpstream::start(MockOptions::default());
    // Without the idle pool, so the client's QUIT ends the upstream session
    // too (tests/upstream_pool.rs covers keeping it).
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", pool: {{ enabled: false }} }}\n",
        up.addr
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["b@example.com"],
            "Subject: 1\r\n\r\n1\r\n"
        )
        .code,
        250
    );
    assert_eq!(
        c.send_message(
            "a@example.com",
            &["c@example.com"],
            "Subject: 2\r\n\r\n2\r\n"
        )
        .code,
        250
    );
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RSET", 250);
    c.cmd("QUIT", 221);
    let d = up.wait_for(2);
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0].connection, d[1].connection,
        "one upstream connection for both"
    );
    let cmds = up.commands();
    assert_eq!(cmds.len(), 1);
    assert!(cmds[0].iter().any(|c| c == "RSET"), "{:?}", cmds[0]);
    // QUIT closes the upstream session too.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(up.commands()[0].last().map(String::as_str), Some("QUIT"));
}

#[test]
fn many_messages_over_concurrent_connections_are_counted_exactly() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let transport = lettre_transport(&gw);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let transport = transport.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..25 {
                    let email = lettre::Message::builder()
                        .from("load@example.com".parse().unwrap())
                        .to(format!("rcpt{t}@example.com").parse().unwrap())
                        .subject(format!("message {t}/{i}"))
                        .body(format!("body {t} {i}\r\n"))
                        .unwrap();
                    if transport
                        .send(&email)
                        .map(|r| r.is_positive())
                        .unwrap_or(false)
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let delivered = up.wait_for(ok);
    assert_eq!(ok, 200);
    assert_eq!(delivered.len(), ok);
}

#[test]
fn mail_params_are_passed_on_only_when_the_upstream_offers_them() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME", 250);
    c.cmd("RSET", 250);
    let cmds = up.commands();
    assert!(
        cmds[0].contains(&"MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME".to_string()),
        "{cmds:?}"
    );
}

#[test]
fn null_sender_and_postmaster_are_relayed() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message("", &["postmaster"], "Subject: bounce\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let d = up.wait_for(1);
    assert_eq!(d[0].from, "");
    assert_eq!(d[0].rcpts, vec!["postmaster"]);
}

#[test]
fn upstream_refusing_the_session_gives_451() {
    let up = MockUpstream::start(MockOptions {
        greeting: "554 5.3.2 mock.test not accepting mail".into(),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    assert!(c
        .cmd("MAIL FROM:<a@example.com>", 451)
        .starts_with("451 4.4.1"));
}

#[test]
fn upstream_silent_after_the_final_dot_gives_451_never_250() {
    let up = MockUpstream::start(MockOptions {
        stall_after_data: true,
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "timeouts: { upstream_data_end_s: 1 }\n");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: x\r\n\r\ny\r\n",
    );
    assert!(r.raw.starts_with("451 4.4.1"), "{}", r.raw);
    // The session goes on.
    c.cmd("NOOP", 250);
}

#[test]
fn a_large_message_spills_to_disk_and_arrives_intact() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(
        &up,
        "message: { received_header: false }\nlimits: { spill_threshold_bytes: 65536 }\n",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let mut body = String::from("Subject: large\r\n\r\n");
    // Some lines begin with a dot, on both sides of the 64 KiB pieces the
    // body is relayed in: each must be stuffed again exactly once.
    let mut wire = body.clone();
    for i in 0..40_000 {
        let line = format!("{i:06} the quick brown fox jumps over the lazy dog\r\n");
        if i % 997 == 0 {
            body.push('.');
            wire.push_str("..");
        }
        body.push_str(&line);
        wire.push_str(&line);
    }
    let r = c.send_message("a@example.com", &["b@example.com"], &wire);
    assert_eq!(r.code, 250, "{}", r.raw);
    let d = up.wait_for(1);
    assert!(d[0].data.len() > 1_500_000);
    assert!(
        d[0].data == body.as_bytes(),
        "large body changed in transit"
    );
}

#[test]
fn upstream_replies_without_enhanced_codes_get_the_generic_one() {
    let mut options = MockOptions::default();
    options
        .rcpt_replies
        .insert("old@example.com".into(), "550 No such user here".into());
    let up = MockUpstream::start(options);
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    assert_eq!(
        c.cmd("RCPT TO:<old@example.com>", 550),
        "550 5.0.0 No such user here\r\n"
    );
}

#[test]
fn upstream_421_becomes_451_and_our_session_goes_on() {
    let mut options = MockOptions::default();
    options.rcpt_replies.insert(
        "b@example.com".into(),
        "421 4.3.2 mock.test shutting down".into(),
    );
    let up = MockUpstream::start(options);
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    assert_eq!(
        c.cmd("RCPT TO:<b@example.com>", 451),
        "451 4.3.2 mock.test shutting down\r\n"
    );
    // The transaction cannot be delivered any more, but the client may retry.
    assert!(c
        .cmd("RCPT TO:<c@example.com>", 451)
        .starts_with("451 4.4.1"));
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<c@example.com>", 250);
}

#[test]
fn quoted_local_parts_and_source_routes_are_relayed_correctly() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd(
        "MAIL FROM:<@relay.example,@other.example:alice@example.com>",
        250,
    );
    c.cmd("RCPT TO:<\"john doe\"@example.com>", 250);
    c.cmd("RCPT TO:<@hop.example:bob@example.net>", 250);
    c.cmd("RSET", 250);
    let cmds = &up.commands()[0];
    assert!(
        cmds.contains(&"MAIL FROM:<alice@example.com>".to_string()),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&"RCPT TO:<\"john doe\"@example.com>".to_string()),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&"RCPT TO:<bob@example.net>".to_string()),
        "{cmds:?}"
    );
}

#[test]
fn commands_pipelined_behind_a_refused_mail_are_not_counted_as_errors() {
    let gw = Gateway::start(&format!(
        "upstream: {{ addr: \"{}\" }}\nlimits: {{ max_errors: 2 }}\n",
        dead_addr()
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    for _ in 0..2 {
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
        for code in [451, 503, 503, 503] {
            c.expect(code);
        }
    }
    // Not pipelined behind a refused MAIL: these count, and end the session.
    c.cmd("RSET", 250);
    c.cmd("RCPT TO:<b@example.com>", 503);
    c.cmd("RCPT TO:<b@example.com>", 503);
    c.expect(421);
    assert!(c.is_closed());
}
