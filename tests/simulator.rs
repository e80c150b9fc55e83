//! `smtpgate test-rules` on the example rules in `rules/`: what it prints
//! stage by stage, the final reply, and its exit status (0 accepted,
//! 1 rejected or tempfailed, 2 error).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

/// Runs `smtpgate test-rules ARGS` from the top of the repository, with
/// the example rules and example.com as a local domain unless ARGS name a
/// configuration; returns (exit code, stdout, stderr).
fn sim(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "rules_dir: \"{}\"\nrelay: {{ local_domains: [example.com] }}\n",
            root().join("rules").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_smtpgate"));
    command.arg("test-rules");
    if !args.contains(&"--config") {
        command.arg("--config").arg(&cfg);
    }
    let out = command.args(args).current_dir(root()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn has(out: &str, want: &str) {
    assert!(out.contains(want), "missing {want:?} in\n{out}");
}

#[test]
fn a_clean_message_is_accepted() {
    let msg = data("clean.eml");
    let (code, out, err) = sim(&[
        "--from",
        "alice@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        "--helo",
        "mail.example.net",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    has(
        &out,
        &format!("rules from {}\n", root().join("rules").display()),
    );
    has(&out, "connect  203.0.113.9\n         no rule matched");
    has(&out, "helo     mail.example.net");
    has(&out, "mail     <alice@example.net> SIZE=");
    has(&out, "data     ");
    has(&out, "Subject \"Lunch on Friday?\"");
    has(&out, "matched checked-by (add_header)");
    has(&out, "X-Smtpgate-Checked: score=0");
    has(&out, "verdict: delivered at data (score 0, 1 of 1 recipients accepted, stored in spool); the client gets: 250 2.0.0 OK: queued as SIMULATED");
}

#[test]
fn spam_is_quarantined_or_rejected_by_score() {
    let msg = data("spam.eml");
    let (code, out, _) = sim(&[
        "--from",
        "desk@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        "--helo",
        "mail.example.net",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    has(&out, "Subject \"You have won the lottery!\"");
    has(&out, "matched lottery-subject (score +6)");
    has(&out, "matched pharma-words (score +4)");
    has(&out, "matched quarantine-doubtful (quarantine)");
    has(&out, "verdict: quarantined at data (score 10,");

    // Pretending to be one of us without authenticating adds 3: over reject_at.
    let (code, out, _) = sim(&[
        "--from",
        "desk@example.com",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        "--helo",
        "mail.example.net",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    has(&out, "matched our-domain-unauthenticated (score +3)");
    has(&out, "matched scoring:reject_at (reject)");
    has(&out, "-> 550 5.7.1 Message rejected as spam by policy");
    has(&out, "verdict: rejected at data (score 13,");

    // The same sender, authenticated: back to quarantine.
    let (code, out, _) = sim(&[
        "--from",
        "desk@example.com",
        "--to",
        "bob@example.com",
        "--auth-user",
        "desk",
        "--tls",
        "--client-ip",
        "203.0.113.9",
        "--helo",
        "mail.example.net",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    has(&out, "auth     desk");
    has(&out, "-> 235 2.7.0 Authentication successful");
    has(&out, "verdict: quarantined");
}

#[test]
fn an_executable_attachment_is_rejected() {
    let msg = data("exe-attachment.eml");
    let (code, out, _) = sim(&[
        "--from",
        "acct@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    has(&out, "helo     [203.0.113.9]");
    has(&out, "matched helo-ip-literal (score +1.5)");
    has(&out, "matched executable-attachments (reject)");
    has(&out, "decided by executable-attachments");
    has(
        &out,
        "the client gets: 550 5.7.1 Executable attachments are not accepted",
    );
    // From a trusted network nothing is checked at all.
    let (code, out, _) = sim(&[
        "--from",
        "acct@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "192.0.2.5",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    has(&out, "matched trusted-networks (accept_transaction)");
}

#[test]
fn connect_and_recipient_refusals() {
    let msg = data("clean.eml");
    let m = msg.to_str().unwrap();
    let (code, out, _) = sim(&[
        "--from",
        "a@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "198.51.100.7",
        m,
    ]);
    assert_eq!(code, 1, "{out}");
    has(&out, "matched blocked-networks (reject)");
    has(&out, "verdict: rejected at connect (score 0, 0 of 0 recipients accepted, nothing forwarded); the client gets: 554 5.7.1 Client host blocked by policy");

    let (code, out, _) = sim(&[
        "--from",
        "a@example.net",
        "--to",
        "former.employee@example.com",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        "--helo",
        "mx.example.net",
        m,
    ]);
    assert_eq!(code, 0, "{out}");
    has(
        &out,
        "rcpt     <former.employee@example.com>\n         matched disabled-mailboxes (reject)",
    );
    has(&out, "-> 550 5.1.1 Mailbox disabled");
    has(&out, "1 of 2 recipients accepted");

    let (code, out, _) = sim(&[
        "--from",
        "a@example.net",
        "--to",
        "former.employee@example.com",
        "--client-ip",
        "203.0.113.9",
        m,
    ]);
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        "the client gets: 554 5.5.1 Error: no valid recipients",
    );

    // The null sender to two recipients: the second one is refused.
    let (code, out, _) = sim(&[
        "--from",
        "",
        "--to",
        "a@example.com",
        "--to",
        "b@example.com",
        "--client-ip",
        "203.0.113.9",
        m,
    ]);
    assert_eq!(code, 0, "{out}");
    has(&out, "matched bounce-to-many (reject)");
}

#[test]
fn with_an_upstream_the_reply_is_the_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream: {{ addr: \"10.0.0.5:25\" }}\nrelay: {{ local_domains: [example.com] }}\nrules_dir: \"{}\"\n",
            root().join("rules").display()
        ),
    )
    .unwrap();
    let msg = data("clean.eml");
    let (code, out, err) = sim(&[
        "--config",
        cfg.to_str().unwrap(),
        "--from",
        "a@example.net",
        "--to",
        "bob@example.com",
        "--client-ip",
        "203.0.113.9",
        msg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    has(&out, "-> (the upstream's reply)");
    has(&out, "verdict: relayed at data (score 1.5, 1 of 1 recipients accepted, relayed to the upstream 10.0.0.5:25)");
}

#[test]
fn errors_exit_2() {
    let msg = data("clean.eml");
    let m = msg.to_str().unwrap();
    let (code, _, err) = sim(&[
        "--from",
        "a@x.test",
        "--to",
        "b@y.test",
        "--client-ip",
        "203.0.113.9",
        "/nonexistent.eml",
    ]);
    assert_eq!(code, 2);
    has(&err, "cannot read /nonexistent.eml");
    let (code, _, err) = sim(&[
        "--from",
        "a@x.test",
        "--to",
        "not an address",
        "--client-ip",
        "203.0.113.9",
        m,
    ]);
    assert_eq!(code, 2);
    has(&err, "is not a valid address");
    let (code, _, _) = sim(&[
        "--from",
        "a@x.test",
        "--to",
        "b@y.test",
        "--client-ip",
        "nope",
        m,
    ]);
    assert_eq!(code, 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "rules:\n  - { name: x, stage: mail, action: reject, reply: { code: 451 } }\n",
    )
    .unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, format!("rules_dir: \"{}\"\n", dir.path().display())).unwrap();
    let (code, _, err) = sim(&[
        "--config",
        cfg.to_str().unwrap(),
        "--from",
        "a@x.test",
        "--to",
        "b@y.test",
        "--client-ip",
        "203.0.113.9",
        m,
    ]);
    assert_eq!(code, 2);
    has(
        &err,
        "bad.yaml:2: rule \"x\": reply.code: 451 does not fit this action",
    );
}

#[test]
fn a_rule_that_reads_a_fact_is_tried_offline_with_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - { name: no-iprev, stage: mail, when: { fact: { name: iprev, is: fail } }, action: reject,\n      reply: { code: 550, enhanced: 5.7.25, text: Reverse DNS required } }\n",
    )
    .unwrap();
    let cdir = tempfile::tempdir().unwrap();
    let cfg = cdir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "rules_dir: \"{}\"\nrelay: {{ local_domains: [example.com] }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let msg = data("clean.eml");
    let run = |fact: &str| {
        sim(&[
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            "a@example.net",
            "--to",
            "bob@example.com",
            "--client-ip",
            "192.0.2.1",
            "--fact",
            fact,
            msg.to_str().unwrap(),
        ])
    };
    let (code, out, err) = run("iprev=fail");
    assert_eq!(code, 1, "{out}{err}");
    has(&out, "matched no-iprev (reject)");
    has(&out, "-> 550 5.7.25 Reverse DNS required");
    has(&out, "iprev = fail");
    let (code, out, err) = run("iprev=pass");
    assert_eq!(code, 0, "{out}{err}");
    has(&out, "iprev = pass");
    let (code, _, err) = run("no-equals-sign");
    assert_eq!(code, 2);
    assert!(err.contains("give NAME=VALUE"), "{err}");
}
