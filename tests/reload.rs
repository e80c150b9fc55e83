//! Reloading rules: in process through `reload::reload`, and with a real
//! SIGHUP sent to the `smtpgate` binary. Sessions in flight keep the rules
//! they started with; invalid new rules leave the old ones in place. Also
//! SIGUSR1, which reopens the audit file after rotation.

mod common;

use common::binary::Binary;
use common::{audit_records, message, rules_dir, rules_line, Client, Gateway};
use std::time::{Duration, Instant};

/// Rejects senders of one domain at MAIL.
fn block(domain: &str) -> String {
    format!(
        "rules:\n  - {{ name: block-{d}, stage: mail, when: {{ sender: {{ domains: [{domain}] }} }}, action: reject }}\n",
        d = domain.replace('.', "-")
    )
}

/// The reply code a fresh MAIL FROM <a@domain> gets on `c`, RSET after.
fn mail_code(c: &mut Client, domain: &str) -> u16 {
    c.send(&format!("MAIL FROM:<a@{domain}>\r\n"));
    let code = c.reply().code;
    if code == 250 {
        c.cmd("RSET", 250);
    }
    code
}

#[test]
fn in_process_reload_swaps_rules_for_new_sessions_only() {
    let dir = rules_dir(&[("r.yaml", &block("one.test"))]);
    let gw = Gateway::start(&rules_line(dir.path()));
    let mut old = gw.client();
    old.cmd("EHLO old.test", 250);
    assert_eq!(mail_code(&mut old, "one.test"), 550);

    std::fs::write(dir.path().join("r.yaml"), block("two.test")).unwrap();
    smtpgate::reload::reload(&gw.shared).unwrap();

    let mut new = gw.client();
    new.cmd("EHLO new.test", 250);
    assert_eq!(mail_code(&mut new, "one.test"), 250);
    assert_eq!(mail_code(&mut new, "two.test"), 550);
    // The session that started before the reload keeps its rules.
    assert_eq!(mail_code(&mut old, "one.test"), 550);
    assert_eq!(mail_code(&mut old, "two.test"), 250);

    // Invalid new rules: the error is reported, the rules in force stay.
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: x\n    stage: mail\n    action: jump\n",
    )
    .unwrap();
    let e = smtpgate::reload::reload(&gw.shared).unwrap_err();
    assert!(e.to_string().contains("r.yaml:4"), "{e}");
    let mut after = gw.client();
    after.cmd("EHLO after.test", 250);
    assert_eq!(mail_code(&mut after, "two.test"), 550);
    assert_eq!(mail_code(&mut after, "one.test"), 250);

    // A new list file entry is picked up too.
    std::fs::write(dir.path().join("domains.txt"), "three.test\n").unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - { name: listed, stage: mail, when: { sender: { domains_file: domains.txt } }, action: reject }\n",
    )
    .unwrap();
    smtpgate::reload::reload(&gw.shared).unwrap();
    let mut c = gw.client();
    c.cmd("EHLO c.test", 250);
    assert_eq!(mail_code(&mut c, "three.test"), 550);
    std::fs::write(dir.path().join("domains.txt"), "four.test\n").unwrap();
    smtpgate::reload::reload(&gw.shared).unwrap();
    let mut c = gw.client();
    c.cmd("EHLO c.test", 250);
    assert_eq!(mail_code(&mut c, "three.test"), 250);
    assert_eq!(mail_code(&mut c, "four.test"), 550);
}

#[test]
fn sighup_reloads_the_real_binary_and_keeps_old_rules_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let rules = dir.path().join("rules/r.yaml");
    std::fs::write(&rules, block("one.test")).unwrap();
    let gw = Binary::start(dir.path(), "");
    let mut in_flight = gw.client();
    assert_eq!(mail_code(&mut in_flight, "one.test"), 550);

    std::fs::write(&rules, block("two.test")).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: 1 rules loaded");
    let mut c = gw.client();
    assert_eq!(mail_code(&mut c, "two.test"), 550);
    assert_eq!(mail_code(&mut c, "one.test"), 250);
    assert_eq!(
        mail_code(&mut in_flight, "one.test"),
        550,
        "in flight: old rules"
    );

    std::fs::write(&rules, "rules:\n  - name: broken\n    stage: mail\n    when: { sender: { regex: '[' } }\n    action: reject\n").unwrap();
    gw.signal("HUP");
    gw.wait_log("keeping the old ones");
    assert!(
        gw.log_text().contains("r.yaml:4: rule \"broken\""),
        "{}",
        gw.log_text()
    );
    let mut c = gw.client();
    assert_eq!(
        mail_code(&mut c, "two.test"),
        550,
        "old rules still in force"
    );
    let r = c.send_message("a@fine.test", &["b@example.com"], &message("ok", "x\r\n"));
    assert_eq!(r.code, 250);
    c.cmd("QUIT", 221);
    in_flight.cmd("QUIT", 221);

    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut child = gw;
    loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr1_reopens_the_audit_file_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Binary::start(
        dir.path(),
        &format!("audit: {{ path: \"{}\" }}\n", audit.display()),
    );
    let mut c = gw.client();
    let r = c.send_message("a@x.test", &["b@example.com"], &message("before", "x\r\n"));
    assert_eq!(r.code, 250);
    // The start-up probe's connection left a session record first.
    let before = audit_records(&audit, 2);
    assert_eq!(before.len(), 2);
    assert_eq!(before[0]["type"], "session");
    assert_eq!(before[1]["type"], "transaction");
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).unwrap();
    gw.signal("USR1");
    gw.wait_log("reopened");
    let r = c.send_message("a@x.test", &["b@example.com"], &message("after", "x\r\n"));
    assert_eq!(r.code, 250);
    let new = audit_records(&audit, 1);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["subject"], "after");
    assert_eq!(audit_records(&rotated, 2)[1]["subject"], "before");
}
