//! The simulator answers as a live session does: the same cases run
//! through `smtpgate test-rules` and through a live gateway with the same
//! configuration give the same replies, relay control and limits included.

mod common;

use common::{message, Gateway};
use std::path::Path;
use std::process::Command;

const RULES: &str = "rules:
  - { name: blocked, stage: rcpt, when: { recipient: { regex: '^blocked@' } }, action: reject,
      reply: { code: 550, enhanced: 5.7.1, text: Recipient blocked } }
  - { name: no-lottery, stage: data, when: { header: { name: Subject, regex: '(?i)lottery' } }, action: reject }
";

/// A spool-mode configuration that trusts no network: only example.com
/// may be sent to by an unauthenticated client.
fn config(dir: &Path) -> String {
    format!(
        "hostname: gate.test\nspool_dir: \"{}\"\nrules_dir: \"{}\"\n\
         relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
         limits: {{ max_recipients: 2 }}\n",
        dir.join("spool").display(),
        dir.join("rules").display()
    )
}

/// The reply lines (`-> ...`) the simulator shows for each RCPT, and its
/// final reply.
fn simulated(cfg: &Path, to: &[&str], msg: &Path) -> (Vec<String>, String) {
    let mut args = vec![
        "test-rules".to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--client-ip".into(),
        "127.0.0.1".into(),
        "--helo".into(),
        "client.test".into(),
        "--from".into(),
        "a@example.net".into(),
    ];
    for t in to {
        args.push("--to".into());
        args.push(t.to_string());
    }
    args.push(msg.display().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut rcpts = Vec::new();
    let mut in_rcpt = false;
    for line in text.lines() {
        if line.starts_with("rcpt ") {
            in_rcpt = true;
        } else if !line.starts_with(' ') {
            in_rcpt = false;
        }
        if let Some(reply) = line.trim().strip_prefix("-> ") {
            if in_rcpt {
                rcpts.push(reply.to_string());
            }
        }
    }
    let last = text
        .lines()
        .find_map(|l| {
            l.split_once("the client gets: ")
                .map(|(_, r)| r.to_string())
        })
        .unwrap_or_else(|| panic!("no final reply in\n{text}"));
    (rcpts, last)
}

/// The same transaction through a live gateway: the RCPT replies and the
/// reply that ended it (to DATA's end, or the one refusing the last step).
fn live(gw: &Gateway, to: &[&str], body: &str) -> (Vec<String>, String) {
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.net>", 250);
    let mut rcpts = Vec::new();
    let mut accepted = 0;
    for t in to {
        c.send(&format!("RCPT TO:<{t}>\r\n"));
        let r = c.reply();
        if r.code == 250 {
            accepted += 1;
        }
        rcpts.push(r.raw.trim_end().to_string());
    }
    if accepted == 0 {
        c.send("DATA\r\n");
        let r = c.reply();
        return (rcpts, r.raw.trim_end().to_string());
    }
    c.cmd("DATA", 354);
    c.send(&format!("{body}\r\n.\r\n"));
    let r = c.reply();
    (rcpts, r.raw.trim_end().to_string())
}

/// `queued as <id>` differs from run to run: compare without the id.
fn without_id(reply: &str) -> String {
    match reply.find("queued as ") {
        Some(i) => reply[..i].to_string(),
        None => reply.to_string(),
    }
}

#[test]
fn the_simulator_and_a_live_session_give_the_same_replies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/r.yaml"), RULES).unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let gw = Gateway::start(&config(dir.path()));
    let clean = message("hello", "hi\r\n");
    let spam = message("You won the LOTTERY", "hi\r\n");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("relay denied", vec!["bob@example.org"], &clean),
        ("local domain", vec!["bob@example.com"], &clean),
        (
            "rule at rcpt",
            vec!["blocked@example.com", "bob@example.com"],
            &clean,
        ),
        (
            "too many recipients",
            vec!["a@example.com", "b@example.com", "c@example.com"],
            &clean,
        ),
        ("rule at data", vec!["bob@example.com"], &spam),
    ];
    for (name, to, body) in cases {
        let msg = dir.path().join("msg.eml");
        std::fs::write(&msg, body).unwrap();
        let (sim_rcpts, sim_last) = simulated(&cfg, &to, &msg);
        let (live_rcpts, live_last) = live(&gw, &to, body);
        assert_eq!(sim_rcpts, live_rcpts, "{name}: RCPT replies");
        assert_eq!(
            without_id(&sim_last),
            without_id(&live_last),
            "{name}: final reply"
        );
    }
}
