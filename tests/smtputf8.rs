//! SMTPUTF8 (RFC 6531) as dialogues over in-memory pipes: offered only
//! once the upstream has been seen to offer it; UTF-8 addresses only with
//! the SMTPUTF8 parameter on MAIL (8-bit commands refused as before
//! otherwise); relay control compares IDN domains in A-label form; the
//! upstream gets the addresses and the parameter as written.

mod common;

use common::dialogue::Memory;
use common::MockOptions;

/// `relay.local_domains` names the IDN `bücher.example` by its A-label.
const YAML: &str =
    "hostname: gate.test\nrelay: { local_domains: [\"xn--bcher-kva.example\", \"example.com\"], trusted_networks: [] }\n";

fn utf8_upstream() -> Memory {
    let options = MockOptions {
        ehlo_extra: vec!["SMTPUTF8".into()],
        ..MockOptions::default()
    };
    let gw = Memory::start(YAML, options);
    // One transaction, so the pool has seen the upstream's EHLO.
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("QUIT").expect("221");
    gw
}

#[test]
fn without_an_smtputf8_upstream_8bit_addresses_are_refused_as_before() {
    let gw = Memory::start(YAML, MockOptions::default());
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RSET").expect("250");
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(!ehlo.contains("SMTPUTF8"), "{ehlo}");
    s.cmd("MAIL FROM:<jöran@bücher.example> SMTPUTF8")
        .expect("500 5.5.2");
    s.cmd("MAIL FROM:<a@example.com> SMTPUTF8")
        .expect("555 5.5.4");
}

#[test]
fn utf8_addresses_need_the_smtputf8_parameter() {
    let gw = utf8_upstream();
    let mut s = gw.session();
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(ehlo.contains("SMTPUTF8"), "{ehlo}");
    s.cmd("MAIL FROM:<jöran@bücher.example>")
        .expect("500 5.5.2");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    // The transaction did not ask for SMTPUTF8: its RCPTs stay ASCII.
    s.cmd("RCPT TO:<jöran@bücher.example>").expect("500 5.5.2");
    s.cmd("RSET").expect("250");
    // Only MAIL and RCPT may carry UTF-8.
    s.cmd("NOOP grüße").expect("500 5.5.2");
    s.cmd("MAIL FROM:<a@example.com> SMTPUTF8=yes")
        .expect("555");
}

#[test]
fn utf8_mail_is_relayed_with_its_addresses_as_written() {
    let gw = utf8_upstream();
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<jöran@bücher.example> SMTPUTF8")
        .expect("250");
    // Relay control: the U-label and mixed-case forms are the local domain.
    s.cmd("RCPT TO:<info@Bücher.Example>").expect("250");
    s.cmd("RCPT TO:<ünïcødé@xn--bcher-kva.example>")
        .expect("250");
    s.cmd("RCPT TO:<用户@例子.测试>").expect("554 5.7.1");
    s.cmd("DATA").expect("354");
    s.send("Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße\r\n.\r\n");
    s.reply().expect("250");
    let delivered = gw.upstream.wait_for(1);
    assert_eq!(delivered[0].from, "jöran@bücher.example");
    // RFC 6531 §4.3: the Received header's protocol says UTF8SMTP.
    let text = String::from_utf8_lossy(&delivered[0].data);
    assert!(text.contains("(smtpgate) with UTF8SMTP id"), "{text}");
    assert_eq!(
        delivered[0].rcpts,
        ["info@Bücher.Example", "ünïcødé@xn--bcher-kva.example"]
    );
    let commands = gw.upstream.commands().concat();
    assert!(
        commands
            .iter()
            .any(|c| c == "MAIL FROM:<jöran@bücher.example> SMTPUTF8"),
        "{commands:?}"
    );
    assert!(!commands.iter().any(|c| c.contains("用户")), "{commands:?}");
}
