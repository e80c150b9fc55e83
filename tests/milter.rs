//! Milters end to end: a live gateway between a raw SMTP client and a
//! mock upstream, talking the milter protocol to daemons the tests start:
//! OpenDKIM signing (the relayed signature verifies with dkimpy) and a
//! pymilter (libmilter) milter that rejects, tempfails, discards,
//! quarantines and changes headers, body and envelope.

mod common;

use common::dkim::{dkimpy_verify, opendkim_genkey, TestKey};
use common::milters::{dead_socket, opendkim, pymilter, Milter};
use common::{audit_records, Gateway, MockOptions, MockUpstream};
use std::sync::OnceLock;

/// One OpenDKIM and two pymilter milters per test binary.
struct Daemons {
    dkim_key: TestKey,
    opendkim: Milter,
    a: Milter,
    b: Milter,
    _keys: tempfile::TempDir,
}

fn daemons() -> &'static Daemons {
    static D: OnceLock<Daemons> = OnceLock::new();
    D.get_or_init(|| {
        let keys = tempfile::tempdir().unwrap();
        let dkim_key = opendkim_genkey(keys.path(), "example.com", "sel1");
        Daemons {
            opendkim: opendkim("example.com", "sel1", &dkim_key),
            dkim_key,
            a: pymilter("A"),
            b: pymilter("B"),
            _keys: keys,
        }
    })
}

/// One `milters:` item.
fn item(name: &str, socket: &str, default_action: &str) -> String {
    format!(
        "  - {{ name: {name}, socket: \"{socket}\", connect_timeout_s: 5, command_timeout_s: 10, eom_timeout_s: 20, default_action: {default_action} }}\n"
    )
}

/// A gateway relaying to a fresh mock upstream through `milters` items.
fn gateway(milters: &[String], extra: &str) -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(
        &up,
        &format!(
            "relay: {{ local_domains: [example.org] }}\n{extra}milters:\n{}",
            milters.concat()
        ),
    );
    (up, gw)
}

fn message(subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: {subject}\r\n\
         Date: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n{extra}\r\n{body}"
    )
}

/// The header section of `data`, as text.
fn head(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

fn body(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn opendkim_signs_and_dkimpy_verifies() {
    let d = daemons();
    let (up, gw) = gateway(&[item("opendkim", &d.opendkim.socket, "tempfail")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("signed", "", "Hello from the milter test.\r\n"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = up.wait_for(1);
    let data = &got[0].data;
    assert!(
        head(data).contains("DKIM-Signature:"),
        "no signature: {}",
        head(data)
    );
    let records = [(
        "sel1._domainkey.example.com".to_string(),
        d.dkim_key.record.clone(),
    )];
    assert_eq!(dkimpy_verify(data, &records), vec!["pass".to_string()]);
}

#[test]
fn rejects_at_rcpt_and_at_end_of_message_reach_the_client() {
    let d = daemons();
    let (up, gw) = gateway(&[item("a", &d.a.socket, "tempfail")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    let text = c.cmd("RCPT TO:<blocked@example.org>", 550);
    assert!(text.contains("5.7.1 Recipient refused by A"), "{text}");
    c.cmd("RCPT TO:<b@example.org>", 250);
    c.cmd("DATA", 354);
    c.send(&message("reject-me", "", "x\r\n"));
    c.send(".\r\n");
    let text = c.expect(554);
    assert!(text.contains("5.7.1 Message refused by A"), "{text}");
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<b@example.org>", 250);
    c.cmd("DATA", 354);
    c.send(&message("tempfail-me", "", "x\r\n"));
    c.send(".\r\n");
    c.expect(451);
    c.cmd("QUIT", 221);
    assert!(up.delivered().is_empty());
}

#[test]
fn header_and_body_changes_arrive_upstream() {
    let d = daemons();
    let (up, gw) = gateway(&[item("a", &d.a.socket, "tempfail")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message(
            "change-me",
            "X-Remove: gone\r\n",
            "line one\r\nREPLACE-ME\r\n",
        ),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = up.wait_for(1);
    let h = head(&got[0].data);
    assert!(h.contains("Subject: changed by A"), "{h}");
    assert!(!h.contains("X-Remove"), "{h}");
    assert!(!h.contains("Subject: change-me"), "{h}");
    assert!(h.contains("X-Milter-A: saw []"), "{h}");
    // Inserted at the top of the message as the milter saw it: right
    // after the gateway's own Received field.
    let after_received = common::strip_received(&got[0].data);
    assert!(
        after_received.starts_with(b"X-Top: inserted\r\n"),
        "{}",
        String::from_utf8_lossy(after_received)
    );
    assert_eq!(body(&got[0].data), "line one\r\nreplaced by A\r\n");
}

#[test]
fn several_milters_run_in_order_each_seeing_the_one_before() {
    let d = daemons();
    let (up, gw) = gateway(
        &[
            item("a", &d.a.socket, "tempfail"),
            item("b", &d.b.socket, "tempfail"),
        ],
        "",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("order", "", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let h = head(&up.wait_for(1)[0].data);
    assert!(h.contains("X-Milter-A: saw []"), "{h}");
    assert!(h.contains("X-Milter-B: saw [X-Milter-A]"), "{h}");
    let text = gw.shared.metrics().render();
    for name in ["a", "b"] {
        let line =
            format!("smtpgate_milter_verdicts_total{{milter=\"{name}\",verdict=\"accept\"}} 1");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

#[test]
fn envelope_changes_reach_the_upstream() {
    let d = daemons();
    let (up, gw) = gateway(&[item("a", &d.a.socket, "tempfail")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("redirect-me", "", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = up.wait_for(1);
    assert_eq!(got[0].from, "bounce@example.org");
    assert_eq!(got[0].rcpts, vec!["c@example.org".to_string()]);
}

#[test]
fn discard_and_quarantine_deliver_nothing() {
    let d = daemons();
    let qdir = tempfile::tempdir().unwrap();
    let (up, gw) = gateway(
        &[item("a", &d.a.socket, "tempfail")],
        &format!("quarantine_dir: \"{}\"\n", qdir.path().display()),
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    for subject in ["discard-me", "quarantine-me"] {
        let reply = c.send_message(
            "a@example.com",
            &["b@example.org"],
            &message(subject, "", "x\r\n"),
        );
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    c.cmd("QUIT", 221);
    assert!(up.delivered().is_empty());
    // Each held message is an .eml with its .json sidecar, which names
    // the milter and the reason it gave.
    let held: Vec<_> = std::fs::read_dir(qdir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("eml".as_ref()))
        .collect();
    assert_eq!(held.len(), 1, "one quarantined message");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(held[0].with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["held"]["stage"], "data", "{sidecar}");
    assert_eq!(sidecar["held"]["by"], "milter:a", "{sidecar}");
    assert!(
        sidecar["held"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("held by"),
        "{sidecar}"
    );
}

#[test]
fn a_milter_that_is_down_gets_its_default_action() {
    let dead = dead_socket();
    let (_up, gw) = gateway(&[item("gone", &dead, "tempfail")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let text = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(text.contains("4.7.1"), "{text}");
    drop(c);

    let (_up, gw) = gateway(&[item("gone", &dead, "reject")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 550);
    drop(c);

    let (up, gw) = gateway(&[item("gone", &dead, "accept")], "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("through", "", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(up.wait_for(1).len(), 1);
}

#[test]
fn verdicts_are_facts_in_the_audit_record() {
    let d = daemons();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (_up, gw) = gateway(
        &[item("a", &d.a.socket, "tempfail")],
        &format!("audit: {{ path: \"{}\" }}\n", audit.display()),
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("reject-me", "", "x\r\n"),
    );
    assert_eq!(reply.code, 554, "{reply:?}");
    c.cmd("QUIT", 221);
    let records = audit_records(&audit, 1);
    let tx = records
        .iter()
        .find(|r| r["type"] == "transaction")
        .unwrap_or_else(|| panic!("no transaction record: {records:?}"));
    assert_eq!(tx["facts"]["milter.a"], "reject", "{tx}");
    assert_eq!(tx["decided_by"], "milter:a", "{tx}");
    assert_eq!(tx["reply"], "554 5.7.1 Message refused by A", "{tx}");
}

#[test]
fn rules_read_a_milters_verdict() {
    let d = daemons();
    let rules = common::rules_dir(&[(
        "m.yaml",
        "rules:\n  - name: milter-ok\n    stage: data\n    when: { fact: { name: milter.a, is: accept } }\n    action: add_header\n    header: { name: X-Milter-Verdict, value: accepted }\n",
    )]);
    let (up, gw) = gateway(
        &[item("a", &d.a.socket, "tempfail")],
        &common::rules_line(rules.path()),
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(
        "a@example.com",
        &["b@example.org"],
        &message("ruled", "", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let h = head(&up.wait_for(1)[0].data);
    assert!(h.contains("X-Milter-Verdict: accepted"), "{h}");
}

#[test]
fn a_bad_milter_socket_is_a_config_error_with_its_line() {
    let yaml = "hostname: gate.test\nmilters:\n  - name: x\n    socket: \"tcp:somewhere\"\n";
    let err = smtpgate::config::Config::from_yaml(yaml, "gateway.yaml").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("gateway.yaml:4"), "{text}");
    assert!(text.contains("milters[0].socket"), "{text}");
}

#[test]
fn test_rules_takes_a_milters_verdict_from_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("m.yaml"),
        "rules:\n  - { name: spam-down, stage: data, when: { fact: { name: milter.spamass, is: temperror } }, action: tempfail,\n      reply: { code: 451, enhanced: 4.7.1, text: Spam filter unavailable } }\n",
    )
    .unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "rules_dir: \"{}\"\nrelay: {{ local_domains: [example.com] }}\nmilters:\n  - {{ name: spamass, socket: \"{}\" }}\n",
            rules.display(),
            dead_socket()
        ),
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, message("simulated", "", "x\r\n")).unwrap();
    let run = |fact: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpgate"))
            .arg("test-rules")
            .arg("--config")
            .arg(&cfg)
            .args(["--from", "a@example.net", "--to", "bob@example.com"])
            .args(["--client-ip", "192.0.2.1", "--fact", fact])
            .arg(&msg)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run("milter.spamass=temperror");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("451 4.7.1 Spam filter unavailable"), "{out}");
    let (code, out) = run("milter.spamass=accept");
    assert_eq!(code, Some(0), "{out}");
}

/// A peer on loopback that accepts milter connections and, per
/// connection, writes `answer` (nothing: it stays silent) and holds the
/// connection open until the gateway closes it.
fn broken_peer(answer: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                if conn.read(&mut buf).unwrap_or(0) > 0 {
                    let _ = conn.write_all(answer);
                }
                while conn.read(&mut buf).unwrap_or(0) > 0 {}
            });
        }
    });
    format!("inet:127.0.0.1:{port}")
}

#[test]
fn a_silent_or_garbled_milter_gets_its_default_action() {
    for (answer, action, code) in [
        (&b""[..], "tempfail", 451),
        (&b"\x00\x00\x00\x02Zx"[..], "reject", 550),
        (&b"\xff\xff\xff\xff"[..], "tempfail", 451),
    ] {
        let socket = broken_peer(answer);
        let milter = format!(
            "  - {{ name: broken, socket: \"{socket}\", command_timeout_s: 1, default_action: {action} }}\n"
        );
        let (_up, gw) = gateway(&[milter], "");
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        c.cmd("MAIL FROM:<a@example.com>", code);
    }
}
