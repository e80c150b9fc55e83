//! Rules and the audit trail see what TLS and AUTH established: a rule on
//! `tls`, `authenticated` and `auth_user` decides on a live session, an
//! auth-stage rule can refuse a login, and the audit record carries the TLS
//! version, cipher and the user.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::certs::Pki;
use common::tls_client::TlsClient;
use common::{
    audit_records, message, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream,
};
use serde_json::Value;

const RULES: &str = "rules:
  - { name: no-clear-text, stage: mail, when: { tls: false }, action: reject,
      reply: { code: 530, enhanced: 5.7.0, text: Use STARTTLS } }
  - { name: blocked-user, stage: auth, when: { auth_user: { names: [mallory] } }, action: reject,
      reply: { code: 535, enhanced: 5.7.8, text: Account disabled } }
  - { name: tag-users, stage: mail, when: { authenticated: true }, action: add_header,
      header: { name: X-Submitted-By, value: '{auth_user}' } }
";

struct Setup {
    pki: Pki,
    up: MockUpstream,
    gw: Gateway,
    audit: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup() -> Setup {
    let pki = Pki::new("gate");
    let users = pki.dir.path().join("users.yaml");
    let mut entries = String::from("users:\n");
    for name in ["alice", "mallory"] {
        let hash = bcrypt::hash("secret", 4).unwrap();
        entries.push_str(&format!(
            "  - {{ name: {name}, password_hash: \"{hash}\", senders: [\"*\"] }}\n"
        ));
    }
    std::fs::write(&users, entries).unwrap();
    let up = MockUpstream::start(MockOptions::default());
    let rdir = rules_dir(&[("r.yaml", RULES)]);
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}auth: {{ users_file: \"{}\" }}\n{}audit: {{ path: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", starttls: optional, auth: optional }}\n",
        up.addr,
        pki.tls_yaml(),
        users.display(),
        rules_line(rdir.path()),
        audit.display()
    ));
    Setup {
        pki,
        up,
        gw,
        audit,
        _dirs: (rdir, adir),
    }
}

fn starttls(s: &Setup) -> TlsClient {
    let mut c = Client::connect(s.gw.addr);
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    let mut t = TlsClient::starttls(c, s.pki.client_config());
    t.cmd("EHLO client.test", 250);
    t
}

fn plain_login(user: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{user}\0secret"))
    )
}

#[test]
fn a_tls_rule_refuses_clear_text_and_passes_tls() {
    let s = setup();
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>", 530),
        "530 5.7.0 Use STARTTLS\r\n"
    );

    let mut t = starttls(&s);
    let r = t.send_message(
        "a@example.com",
        &["b@example.com"],
        &message("tls", "x\r\n"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(s.up.wait_for(1).len(), 1);
}

#[test]
fn an_auth_stage_rule_refuses_a_login_and_user_rules_see_the_user() {
    let s = setup();
    let mut t = starttls(&s);
    assert_eq!(
        t.cmd(&plain_login("mallory"), 535),
        "535 5.7.8 Account disabled\r\n"
    );
    t.cmd(&plain_login("alice"), 235);
    let r = t.send_message(
        "alice@example.com",
        &["b@example.org"],
        &message("auth", "x\r\n"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    let d = s.up.wait_for(1);
    let text = String::from_utf8_lossy(&d[0].data);
    assert!(text.contains("\r\nX-Submitted-By: alice\r\n"), "{text}");

    let recs = audit_records(&s.audit, 1);
    let tx: Vec<&Value> = recs.iter().filter(|r| r["type"] == "transaction").collect();
    assert_eq!(tx.len(), 1, "{recs:?}");
    assert_eq!(tx[0]["auth_user"], "alice");
    let tls = &tx[0]["tls"];
    assert!(
        tls["version"].as_str().unwrap().starts_with("TLSv1."),
        "{tls}"
    );
    assert!(!tls["cipher"].as_str().unwrap().is_empty(), "{tls}");
    let rules: Vec<&str> = tx[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"tag-users"), "{rules:?}");
}
