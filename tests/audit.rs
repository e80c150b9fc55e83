//! The JSON audit trail over real sockets: one record per transaction with
//! every field, and a record for sessions that had no transaction.

mod common;

use common::{audit_records, message, rules_dir, rules_line, Gateway, MockOptions, MockUpstream};
use serde_json::Value;
use std::collections::HashMap;

const RULES: &str = "rules:
  - { name: blocked-net, stage: connect, when: { client_ip: { cidrs: [192.0.2.0/24] } }, action: reject }
  - { name: shady, stage: mail, when: { sender: { domains: [shady.test] } }, action: score, score: 2 }
  - { name: bulk, stage: mail, when: { sender: { regex: '^bulk@' } }, action: reject }
  - { name: sink, stage: mail, when: { sender: { domains: [sink.test] } }, action: discard }
  - name: gone
    stage: rcpt
    when: { recipient: { addresses: [gone@example.com] } }
    action: reject
    reply: { code: 550, enhanced: 5.1.1, text: Mailbox disabled }
  - { name: lottery, stage: data, when: { header: { name: Subject, regex: '(?i)lottery' } }, action: score, score: 6 }
  - { name: try-me, stage: data, when: { body: { regex: 'unsubscribe' } }, action: warn }
scoring: { tag_at: 5 }
";

struct Setup {
    gw: Gateway,
    up: MockUpstream,
    audit: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(rules: &str, mock: MockOptions) -> Setup {
    let up = MockUpstream::start(mock);
    let rdir = rules_dir(&[("r.yaml", rules)]);
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let gw = Gateway::with_upstream(
        &up,
        &format!(
            "{}audit: {{ path: \"{}\" }}\n",
            rules_line(rdir.path()),
            audit.display()
        ),
    );
    Setup {
        gw,
        up,
        audit,
        _dirs: (rdir, adir),
    }
}

fn by_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

#[test]
fn a_delivered_transaction_has_every_field() {
    let mock = MockOptions {
        rcpt_replies: HashMap::from([(
            "nobody@example.com".to_string(),
            "550 5.1.1 No such user".to_string(),
        )]),
        ..MockOptions::default()
    };
    let s = setup(RULES, mock);
    let mut c = s.gw.client();
    let local = c.stream.local_addr().unwrap();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<alice@shady.test> SIZE=300", 250);
    c.cmd("RCPT TO:<gone@example.com>", 550);
    c.cmd("RCPT TO:<nobody@example.com>", 550);
    c.cmd("RCPT TO:<bob@example.com>", 250);
    c.cmd("DATA", 354);
    let long_subject = format!("You won the LOTTERY {}", "x".repeat(300));
    c.send(&message(&long_subject, "click unsubscribe\r\n"));
    c.send(".\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250);
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let t = &recs[0];
    assert_eq!(t["type"], "transaction");
    let session = t["session"].as_str().unwrap();
    assert!(t["transaction"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{session}.")));
    assert!(t["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(t["client"]["ip"], "127.0.0.1");
    assert_eq!(t["client"]["port"], local.port());
    assert_eq!(t["helo"], "client.test");
    assert_eq!(t["tls"], Value::Null);
    assert_eq!(t["auth_user"], Value::Null);
    assert_eq!(t["mail_from"], "alice@shady.test");
    assert_eq!(t["mail_params"], serde_json::json!(["SIZE=300"]));
    assert_eq!(
        t["rcpts"],
        serde_json::json!([
            {"address": "gone@example.com", "reply": "550 5.1.1 Mailbox disabled", "by": "gone"},
            {"address": "nobody@example.com", "reply": "550 5.1.1 No such user", "by": "upstream"},
            {"address": "bob@example.com", "reply": "250 2.1.5 Ok", "by": "upstream"},
        ])
    );
    let delivered = s.up.wait_for(1);
    assert!(t["size"].as_u64().unwrap() > 300);
    assert!(
        t["size"].as_u64().unwrap() < delivered[0].data.len() as u64,
        "without the added headers"
    );
    assert!(t["message_id"]
        .as_str()
        .unwrap()
        .starts_with("<You won the LOTTERY"));
    assert_eq!(
        t["subject"].as_str().unwrap().chars().count(),
        200,
        "truncated"
    );
    assert_eq!(t["score"], 8.0);
    let rules: Vec<(String, String)> = t["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["rule"].as_str().unwrap().to_string(),
                h["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("shady", "score"),
        ("gone", "reject"),
        ("lottery", "score"),
        ("try-me", "warn"),
        ("scoring:tag_at", "add_header"),
    ];
    assert_eq!(
        rules,
        want.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(t["rules"][0]["stage"], "mail");
    assert_eq!(t["rules"][0]["score"], 2.0);
    assert_eq!(t["verdict"], "delivered");
    assert_eq!(t["stage"], "data");
    assert_eq!(t["reply"], "250 2.0.0 Ok: queued as MOCK");
    assert_eq!(t["decided_by"], "upstream");
    assert_eq!(t["upstream_reply"], "250 2.0.0 Ok: queued as MOCK");
    let d = &t["durations_ms"];
    assert!(d["total"].as_f64().unwrap() >= d["rules"].as_f64().unwrap());
    assert!(d["delivery"].as_f64().unwrap() > 0.0);
}

#[test]
fn refusals_discards_and_aborts_are_audited() {
    let s = setup(RULES, MockOptions::default());
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<bulk@spam.test>", 550);
    let r = c.send_message("x@sink.test", &["b@example.com"], &message("s", "x\r\n"));
    assert_eq!(r.code, 250);
    c.cmd("MAIL FROM:<a@fine.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@fine.test>", 250);
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 4);
    let tx = by_type(&recs, "transaction");
    assert_eq!(tx.len(), 4, "{recs:#?}");
    assert!(
        by_type(&recs, "session").is_empty(),
        "sessions with transactions get none"
    );

    assert_eq!(tx[0]["verdict"], "rejected");
    assert_eq!(tx[0]["stage"], "mail");
    assert_eq!(tx[0]["reply"], "550 5.7.1 Rejected by policy");
    assert_eq!(tx[0]["decided_by"], "bulk");
    assert_eq!(tx[0]["mail_from"], "bulk@spam.test");

    assert_eq!(tx[1]["verdict"], "discarded");
    assert_eq!(tx[1]["decided_by"], "sink");
    assert_eq!(tx[1]["rcpts"][0]["by"], "gateway");
    assert_eq!(tx[1]["upstream_reply"], Value::Null);
    assert!(s.up.delivered().is_empty());

    assert_eq!(tx[2]["verdict"], "aborted");
    assert_eq!(tx[2]["stage"], "rcpt");
    assert_eq!(tx[2]["reply"], Value::Null);
    assert_eq!(tx[3]["verdict"], "aborted");
    assert_eq!(tx[3]["stage"], "mail");
    let ids: Vec<&str> = tx
        .iter()
        .map(|t| t["transaction"].as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "{ids:?}");
}

#[test]
fn sessions_without_a_transaction_get_a_session_record() {
    // Refused at connect: the loopback client is "blocked" here.
    let rules = RULES.replace("192.0.2.0/24", "127.0.0.0/8");
    let s = setup(&rules, MockOptions::default());
    let mut c = common::Client::connect(s.gw.addr);
    c.expect(554);
    assert!(c.is_closed());
    let recs = audit_records(&s.audit, 1);
    let r = &recs[0];
    assert_eq!(r["type"], "session");
    assert_eq!(r["end"], "refused at connect");
    assert_eq!(r["reply"], "554 5.7.1 Connection refused by policy");
    assert_eq!(r["decided_by"], "blocked-net");
    assert_eq!(r["rules"][0]["rule"], "blocked-net");
    assert_eq!(r["rules"][0]["stage"], "connect");
    assert_eq!(r["auth_failures"], 0);
    assert_eq!(r["helo"], Value::Null);

    // A client that only says EHLO and QUIT.
    let s = setup(RULES, MockOptions::default());
    let mut c = s.gw.client();
    c.cmd("EHLO quiet.test", 250);
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 1);
    assert_eq!(recs[0]["type"], "session");
    assert_eq!(recs[0]["end"], "closed");
    assert_eq!(recs[0]["helo"], "quiet.test");
    assert_eq!(recs[0]["reply"], Value::Null);
}

#[test]
fn an_upstream_refusal_is_audited_with_its_reply() {
    let mock = MockOptions {
        data_reply: "554 5.7.1 Upstream says no".to_string(),
        ..MockOptions::default()
    };
    let s = setup("rules: []\n", mock);
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message("a@x.test", &["b@example.com"], &message("s", "x\r\n"));
    assert_eq!(r.code, 554);
    let recs = audit_records(&s.audit, 1);
    assert_eq!(recs[0]["verdict"], "rejected");
    assert_eq!(recs[0]["decided_by"], "upstream");
    assert_eq!(recs[0]["upstream_reply"], "554 5.7.1 Upstream says no");
    assert_eq!(recs[0]["score"], 0.0);
    assert_eq!(recs[0]["rules"], serde_json::json!([]));
}

#[test]
fn an_unwritable_audit_file_never_blocks_mail() {
    let s = setup("rules: []\n", MockOptions::default());
    // Replace the file by a directory: every write now fails (and is logged).
    std::fs::remove_file(&s.audit).unwrap();
    std::fs::create_dir(&s.audit).unwrap();
    s.gw.shared.audit().unwrap().reopen();
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    for i in 0..3 {
        let r = c.send_message(
            "a@x.test",
            &["b@example.com"],
            &message(&format!("m{i}"), "x\r\n"),
        );
        assert_eq!(r.code, 250);
    }
    assert_eq!(s.up.wait_for(3).len(), 3);
}
