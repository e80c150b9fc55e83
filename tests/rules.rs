//! Every rule action over real sockets: the exact reply the client gets,
//! and what the upstream did or did not receive. Also: the shipped example
//! rules and configuration always load, and `smtpgate check` prints rules.

mod common;

use common::{message, rules_dir, rules_line, strip_received, Gateway, MockOptions, MockUpstream};
use smtpgate::config::Config;
use smtpgate::rules::{RuleOptions, RuleSet};
use std::path::Path;
use std::process::Command;

/// A gateway relaying to a fresh mock, with one rule file.
fn gateway(rules: &str, extra: &str) -> (Gateway, MockUpstream, tempfile::TempDir) {
    let up = MockUpstream::start(MockOptions::default());
    let dir = rules_dir(&[("rules.yaml", rules)]);
    let gw = Gateway::with_upstream(&up, &format!("{}{extra}", rules_line(dir.path())));
    (gw, up, dir)
}

/// Commands the upstream saw, all connections together.
fn upstream_saw(up: &MockUpstream, prefix: &str) -> bool {
    up.commands()
        .iter()
        .flatten()
        .any(|c| c.to_ascii_uppercase().starts_with(prefix))
}

#[test]
fn reject_at_connect_replaces_the_greeting_and_closes() {
    let (gw, up, _d) = gateway(
        "rules:\n  - { name: no-loopback, stage: connect, when: { client_ip: { cidrs: [127.0.0.0/8] } }, action: reject }\n",
        "",
    );
    let mut c = common::Client::connect(gw.addr);
    let r = c.expect(554);
    assert_eq!(r, "554 5.7.1 Connection refused by policy\r\n");
    assert!(c.is_closed());
    assert!(up.commands().is_empty(), "the upstream was never contacted");
}

#[test]
fn disconnect_at_helo_says_421_and_closes() {
    let (gw, _up, _d) = gateway(
        "rules:\n  - { name: bad-helo, stage: helo, when: { helo: { regex: '^evil' } }, action: disconnect }\n",
        "",
    );
    let mut c = gw.client();
    let r = c.cmd("EHLO evil.example", 421);
    assert_eq!(r, "421 4.7.0 Closing connection by policy\r\n");
    assert!(c.is_closed());
    // Another name is fine.
    let mut c = gw.client();
    c.cmd("EHLO good.example", 250);
}

#[test]
fn reject_and_tempfail_at_mail_never_reach_the_upstream() {
    let (gw, up, _d) = gateway(
        "rules:
  - name: bulk
    stage: mail
    when: { sender: { regex: '^(bulk|promo)@' } }
    action: reject
    reply: { code: 550, enhanced: 5.7.1, text: Sender blocked by policy }
  - { name: slow-down, stage: mail, when: { sender: { domains: [busy.test] } }, action: tempfail }
",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<promo@shop.test>", 550);
    assert_eq!(r, "550 5.7.1 Sender blocked by policy\r\n");
    let r = c.cmd("MAIL FROM:<a@busy.test>", 451);
    assert_eq!(
        r,
        "451 4.7.1 Temporarily rejected by policy, try again later\r\n"
    );
    // The session goes on: a clean sender is relayed.
    let r = c.send_message("a@fine.test", &["b@example.com"], &message("ok", "hi\r\n"));
    assert_eq!(r.code, 250);
    assert_eq!(up.wait_for(1).len(), 1);
    assert!(!up
        .commands()
        .iter()
        .flatten()
        .any(|l| l.contains("promo@") || l.contains("busy.test")));
}

#[test]
fn a_rcpt_reject_refuses_one_recipient_and_the_other_is_delivered() {
    let (gw, up, _d) = gateway(
        "rules:
  - name: gone
    stage: rcpt
    when: { recipient: { addresses: [gone@example.com] } }
    action: reject
    reply: { code: 550, enhanced: 5.1.1, text: Mailbox disabled }
",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.net>", 250);
    let r = c.cmd("RCPT TO:<gone@example.com>", 550);
    assert_eq!(r, "550 5.1.1 Mailbox disabled\r\n");
    c.cmd("RCPT TO:<here@example.com>", 250);
    c.cmd("DATA", 354);
    c.send(&message("two", "hi\r\n"));
    c.send(".\r\n");
    assert_eq!(c.reply().code, 250);
    let d = up.wait_for(1);
    assert_eq!(d[0].rcpts, vec!["here@example.com"]);
    assert!(!upstream_saw(&up, "RCPT TO:<GONE@"));
}

#[test]
fn discard_answers_250_and_forwards_nothing() {
    // At the mail stage: the upstream never hears of it.
    let (gw, up, _d) = gateway(
        "rules:\n  - { name: sink, stage: mail, when: { sender: { domains: [sink.test] } }, action: discard }\n",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message("a@sink.test", &["b@example.com"], &message("x", "y\r\n"));
    assert_eq!(r.code, 250, "{}", r.raw);
    assert!(up.delivered().is_empty());
    assert!(!upstream_saw(&up, "MAIL"));

    // At the data stage: MAIL and RCPT reached the upstream, the message does not.
    let (gw, up, _d) = gateway(
        "rules:\n  - { name: sink, stage: data, when: { body: { regex: '^DROP ME$' } }, action: discard }\n",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message("a@x.test", &["b@example.com"], &message("x", "DROP ME\r\n"));
    assert_eq!(r.code, 250);
    // The next message on the same session is delivered normally.
    let r = c.send_message("a@x.test", &["b@example.com"], &message("keep", "fine\r\n"));
    assert_eq!(r.code, 250);
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    assert!(String::from_utf8_lossy(&d[0].data).contains("Subject: keep"));
}

#[test]
fn quarantine_stores_the_message_instead_of_forwarding_it() {
    let q = tempfile::tempdir().unwrap();
    let (gw, up, _d) = gateway(
        "rules:\n  - { name: review, stage: data, when: { header: { name: Subject, regex: '(?i)invoice' } }, action: quarantine }\n",
        &format!("quarantine_dir: \"{}\"\n", q.path().display()),
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@x.test",
        &["b@example.com"],
        &message("Your INVOICE", "pay\r\n"),
    );
    assert_eq!(r.code, 250);
    let id = r.last_text().rsplit(' ').next().unwrap().to_string();
    let file = q.path().join(format!("{id}.eml"));
    let stored = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    assert!(stored.starts_with("Received: from client.test"), "{stored}");
    assert!(stored.contains("Subject: Your INVOICE\r\n"));
    assert!(up.delivered().is_empty());
}

#[test]
fn add_header_goes_after_received_and_accept_transaction_skips_later_rules() {
    let (gw, up, _d) = gateway(
        "rules:
  - name: vip
    stage: mail
    when: { sender: { domains: [vip.test] } }
    action: accept_transaction
  - { name: no-ceo, stage: rcpt, when: { recipient: { regex: '^ceo@' } }, action: reject }
  - name: tag
    stage: data
    action: add_header
    header: { name: X-Checked, value: 'by {rule} for {sender}, score {score}' }
",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@other.test>", 250);
    c.cmd("RCPT TO:<ceo@example.com>", 550);
    c.cmd("RSET", 250);
    // accept_transaction: neither the rcpt rule nor the header rule applies.
    let r = c.send_message(
        "boss@vip.test",
        &["ceo@example.com"],
        &message("vip", "hi\r\n"),
    );
    assert_eq!(r.code, 250);
    // The next transaction is filtered again.
    let r = c.send_message(
        "a@other.test",
        &["x@example.com"],
        &message("plain", "hi\r\n"),
    );
    assert_eq!(r.code, 250);
    let d = up.wait_for(2);
    assert_eq!(d.len(), 2);
    assert!(!String::from_utf8_lossy(&d[0].data).contains("X-Checked"));
    let rest = strip_received(&d[1].data);
    assert!(
        rest.starts_with(b"X-Checked: by tag for a@other.test, score 0\r\nFrom: "),
        "{}",
        String::from_utf8_lossy(rest)
    );
}

#[test]
fn scores_tag_then_reject_and_nothing_is_forwarded_on_reject() {
    let (gw, up, _d) = gateway(
        "rules:
  - { name: lottery, stage: data, when: { header: { name: Subject, regex: '(?i)lottery' } }, action: score, score: 6 }
  - { name: pills, stage: data, when: { body: { regex: '(?i)cheap pills' } }, action: score, score: 5 }
  - { name: shady, stage: mail, when: { sender: { domains: [shady.test] } }, action: score, score: 1.5 }
scoring: { tag_at: 5, reject_at: 12 }
",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@shady.test",
        &["b@example.com"],
        &message("Lottery", "hi\r\n"),
    );
    assert_eq!(r.code, 250);
    let r = c.send_message(
        "a@shady.test",
        &["b@example.com"],
        &message("Lottery", "cheap pills\r\n"),
    );
    assert_eq!(r.raw, "550 5.7.1 Message rejected as spam by policy\r\n");
    assert!(!r.raw.contains("lottery") && !r.raw.contains("pills"));
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    let text = String::from_utf8_lossy(strip_received(&d[0].data)).to_string();
    assert!(
        text.starts_with("X-Spam-Flag: YES\r\nX-Spam-Score: 7.5\r\nFrom: "),
        "{text}"
    );
}

#[test]
fn body_and_attachment_rules_reject_after_the_final_dot() {
    let (gw, up, _d) = gateway(
        "rules:
  - name: exe
    stage: data
    when: { attachment: { extensions: [exe] } }
    action: reject
    reply: { code: 550, enhanced: 5.7.1, text: Executable attachments are not accepted }
  - name: wire-fraud
    stage: data
    when: { body: { regex: '(?i)wire the money', decoded: true } }
    action: reject
",
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let mime = "From: a@x.test\r\nSubject: docs\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\nContent-Disposition: attachment; filename=\"run.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n";
    let r = c.send_message("a@x.test", &["b@example.com"], mime);
    assert_eq!(
        r.raw,
        "550 5.7.1 Executable attachments are not accepted\r\n"
    );
    // Quoted-printable soft line break: only the decoded text says it.
    let qp = "From: a@x.test\r\nSubject: urgent\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nPlease wire the mo=\r\nney today\r\n";
    let r = c.send_message("a@x.test", &["b@example.com"], qp);
    assert_eq!(r.raw, "550 5.7.1 Rejected by policy\r\n");
    let r = c.send_message(
        "a@x.test",
        &["b@example.com"],
        &message("fine", "hello\r\n"),
    );
    assert_eq!(r.code, 250);
    assert_eq!(up.wait_for(1).len(), 1);
}

#[test]
fn rules_work_in_spool_mode_too() {
    let spool = tempfile::tempdir().unwrap();
    let dir = rules_dir(&[(
        "r.yaml",
        "rules:\n  - { name: no-bob, stage: rcpt, when: { recipient: { regex: '^bob@' } }, action: reject }\n",
    )]);
    let gw = Gateway::start(&format!(
        "spool_dir: \"{}\"\n{}",
        spool.path().display(),
        rules_line(dir.path())
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@x.test>", 250);
    c.cmd("RCPT TO:<bob@x.test>", 550);
    c.cmd("RCPT TO:<carol@x.test>", 250);
    c.cmd("DATA", 354);
    c.send("Subject: s\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 1);
}

#[test]
fn a_bad_rules_dir_stops_start_up() {
    // The configuration names the file and line that set it.
    let e = Config::from_yaml(
        "hostname: mx.test\nrules_dir: /nonexistent/rules\n",
        "t.yaml",
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().starts_with(
            "t.yaml:2: rules_dir: cannot read the rules directory /nonexistent/rules: "
        ),
        "{e}"
    );
    // A directory removed after start-up fails the rule load (a reload).
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(&rules_line(dir.path()), "t.yaml").unwrap();
    drop(dir);
    let e = smtpgate::rules::chain_for(&config).err().unwrap();
    assert!(
        e.to_string().contains("cannot read the rules directory"),
        "{e}"
    );
}

#[test]
fn shipped_rules_and_examples_always_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = RuleSet::load_dir(&root.join("rules"), RuleOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(set.len() >= 15, "{}", set.summary());
    let mut configs = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        // It names certificates and a users file under /etc, which
        // tests/production_example.rs provides before checking it.
        if path.ends_with("production-mx.yaml") {
            continue;
        }
        if path.extension().is_some_and(|x| x == "yaml") {
            let mut config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            if let Some(dir) = config.rules_dir.take() {
                // Relative to the top of the repository, where it is meant to run.
                config.rules_dir = Some(root.join(dir));
            }
            smtpgate::rules::chain_for(&config)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            configs += 1;
        }
    }
    assert!(configs >= 1);
}

#[test]
fn the_example_rules_let_a_plain_test_message_through() {
    // What a newcomer does first: `cargo run`, then swaks from this machine.
    let up = MockUpstream::start(MockOptions::default());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gw = Gateway::with_upstream(&up, &rules_line(&root.join("rules")));
    let mut c = gw.client();
    c.cmd("EHLO vm.example", 250);
    let swaks = "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nTo: user@example.org\r\nFrom: user@vm.example\r\n\
Subject: test Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-Id: <20240101@vm.example>\r\nX-Mailer: swaks\r\n\r\nThis is a test mailing\r\n\r\n";
    let r = c.send_message("user@vm.example", &["user@example.org"], swaks);
    assert_eq!(r.code, 250, "{}", r.raw);
    let d = up.wait_for(1);
    assert!(String::from_utf8_lossy(&d[0].data).contains("X-Smtpgate-Checked: score=0"));
}

#[test]
fn check_prints_rules_per_stage_and_stops_on_errors() {
    let bin = env!("CARGO_BIN_EXE_smtpgate");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bin)
        .arg("check")
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "  connect:\n",
        "  rcpt:\n",
        "  data:\n",
        "block-bulk-senders",
        "scoring: tag at 5, reject at 12",
        "configuration OK",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let dir = rules_dir(&[(
        "bad.yaml",
        "rules:\n  - name: broken\n    stage: mail\n    when:\n      sender: { regex: '(' }\n    action: reject\n",
    )]);
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, rules_line(dir.path())).unwrap();
    let out = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5: rule \"broken\": when.sender.regex: bad regex \"(\""),
        "{err}"
    );
    // Start-up stops on the same error.
    let out = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:5"));
}
