//! Rule files that carry their own tests, through the real binary:
//! `smtpgate check` runs the cases and fails on a broken one with its file,
//! line, name, what it expected and what happened; `smtpgate test-rules
//! --run-tests` runs only them; the shipped `rules/` pass their own; and a
//! running gateway refuses a SIGHUP whose new rules fail their cases — the
//! old rules go on serving new sessions, the log names the case, and
//! `/metrics` counts the refusal.

mod common;

use common::binary::{free_addr, scrape, Binary};
use common::Client;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Rejects senders of `domain` at MAIL, with a case for each side: a
/// sender of `domain` is refused, one of `other` goes through.
fn rules(domain: &str, other: &str) -> String {
    format!(
        "rules:
  - name: block
    stage: mail
    when: {{ sender: {{ domains: [{domain}] }} }}
    action: reject
    reply: {{ code: 550, enhanced: 5.7.1, text: Blocked }}
tests:
  - name: {domain} is refused
    from: a@{domain}
    to: [b@example.com]
    client_ip: 127.0.0.1
    expect: {{ verdict: reject, code: 550, enhanced: 5.7.1, stage: mail, matched: [block] }}
  - name: {other} goes through
    from: a@{other}
    to: [b@example.com]
    client_ip: 127.0.0.1
    helo: mx.{other}
    expect: {{ verdict: accept, score: 0, stage: data, not_matched: [block] }}
"
    )
}

/// Runs the binary with `args` in `dir`; (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A directory with `gateway.yaml` (spool in it) and `rules/r.yaml`.
fn setup(rules_text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/r.yaml"), rules_text).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "hostname: gate.test\nspool_dir: spool\nrules_dir: rules\n",
    )
    .unwrap();
    dir
}

#[test]
fn check_runs_the_cases_and_counts_them() {
    let dir = setup(&rules("bad.test", "good.test"));
    let (code, out, err) = run(dir.path(), &["--config", "gateway.yaml", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tests:     2 rule tests passed\n"), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn check_fails_on_a_broken_case_with_file_line_name_expected_and_actual() {
    // The rule blocks good.test now, so both cases fail.
    let text =
        rules("bad.test", "good.test").replace("domains: [bad.test]", "domains: [good.test]");
    let dir = setup(&text);
    let (code, out, err) = run(dir.path(), &["--config", "gateway.yaml", "check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(
        out.contains(
            "FAILED rules/r.yaml:8: test \"bad.test is refused\": expected reject 550 5.7.1 at mail, \
             matching block, got delivered 250 2.0.0 score 0 at data, no rule matched\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "FAILED rules/r.yaml:13: test \"good.test goes through\": expected accept score 0 at data, \
             not matching block, got rejected 550 5.7.1 score 0 at mail, matched block"
        ),
        "{out}"
    );
    assert!(
        out.contains("tests:     0 of 2 rule tests passed, 2 failed"),
        "{out}"
    );
    assert!(
        err.contains("smtpgate: 0 of 2 rule tests passed, 2 failed"),
        "{err}"
    );
}

#[test]
fn a_malformed_case_is_a_config_error_with_file_and_line() {
    let text = format!(
        "{}  - name: twice\n    from: a@x.test\n    to: [b@example.com]\n    client_ip: 127.0.0.1\n    message: hi\n    message_file: m.eml\n    expect: {{ verdict: accept }}\n",
        rules("bad.test", "good.test")
    );
    let dir = setup(&text);
    let (code, out, err) = run(dir.path(), &["--config", "gateway.yaml", "check"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("rules/r.yaml:24: test \"twice\": give message or message_file, not both"),
        "{err}"
    );
}

#[test]
fn test_rules_run_tests_runs_only_the_cases() {
    let dir = setup(&rules("bad.test", "good.test"));
    let (code, out, err) = run(
        dir.path(),
        &["--config", "gateway.yaml", "test-rules", "--run-tests"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 rule tests passed"), "{out}");
    std::fs::write(
        dir.path().join("rules/r.yaml"),
        rules("bad.test", "good.test").replace("verdict: accept", "verdict: quarantine"),
    )
    .unwrap();
    let (code, out, _) = run(
        dir.path(),
        &["--config", "gateway.yaml", "test-rules", "--run-tests"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("test \"good.test goes through\": expected quarantine score 0 at data"),
        "{out}"
    );
    assert!(out.contains("1 of 2 rule tests passed, 1 failed"), "{out}");
    // The per-message arguments are for a single transaction only.
    let (code, _, err) = run(
        dir.path(),
        &[
            "--config",
            "gateway.yaml",
            "test-rules",
            "--run-tests",
            "--from",
            "a@x.test",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    // Without --run-tests they are still required.
    let (code, _, err) = run(dir.path(), &["--config", "gateway.yaml", "test-rules"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from"), "{err}");
}

#[test]
fn the_shipped_rules_pass_their_own_cases() {
    // With the embedded default (no local domain, this machine trusted) and
    // with example.com as a local domain and nobody trusted, as in
    // examples/production-mx.yaml.
    let (code, out, err) = run(root(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    let passed = |out: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with("tests:"))
            .unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(passed(&out) >= 30, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "rules_dir: \"{}\"\nrelay: {{ local_domains: [example.com, .example.com], trusted_networks: [] }}\nupstream: {{ addr: \"127.0.0.1:9\" }}\n",
            root().join("rules").display()
        ),
    )
    .unwrap();
    let (code, out2, err) = run(
        root(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "test-rules",
            "--run-tests",
        ],
    );
    assert_eq!(code, 0, "{out2}{err}");
    assert!(
        out2.contains(&format!("{} rule tests passed", passed(&out))),
        "{out2}"
    );
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
fn a_reload_whose_rules_fail_their_cases_keeps_the_old_rules() {
    let metrics = free_addr();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let file = dir.path().join("rules/r.yaml");
    std::fs::write(&file, rules("one.test", "two.test")).unwrap();
    let gw = Binary::start(dir.path(), &format!("metrics: {{ addr: \"{metrics}\" }}\n"));
    let series = "smtpgate_config_reload_failures_total{reason=\"rule_tests\"}";
    assert!(
        scrape(metrics).contains(&format!("{series} 0\n")),
        "at 0 from the start"
    );

    // New rules that block two.test, with the old cases: both fail.
    let broken =
        rules("one.test", "two.test").replace("domains: [one.test]", "domains: [two.test]");
    std::fs::write(&file, broken).unwrap();
    gw.signal("HUP");
    gw.wait_log("the new rules are not loaded, keeping the old ones");
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "reload: rule test failed: {}:8: test \"one.test is refused\": expected reject 550 5.7.1",
            file.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("test \"two.test goes through\": expected accept"),
        "{log}"
    );
    assert!(!log.contains("rules loaded from"), "{log}");

    // A new session still gets the old rules.
    let mut c = gw.client();
    assert_eq!(mail_code(&mut c, "one.test"), 550, "old rules in force");
    assert_eq!(mail_code(&mut c, "two.test"), 250);
    c.cmd("QUIT", 221);
    assert!(
        scrape(metrics).contains(&format!("{series} 1\n")),
        "{}",
        scrape(metrics)
    );

    // Fixed cases: the reload goes through.
    let fixed = rules("two.test", "one.test");
    std::fs::write(&file, fixed).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: 1 rules loaded");
    let mut c = gw.client();
    assert_eq!(mail_code(&mut c, "two.test"), 550);
    assert_eq!(mail_code(&mut c, "one.test"), 250);
    c.cmd("QUIT", 221);
    assert!(scrape(metrics).contains(&format!("{series} 1\n")));
}

#[test]
fn the_example_rule_files_pass_their_own_cases() {
    // Each with the checks its facts come from configured; nothing answers
    // at these addresses, and no case asks.
    for (file, extra, cases) in [
        ("sender-auth.yaml", "", 8),
        (
            "scanners.yaml",
            "scanners:\n  rspamd: { url: \"http://127.0.0.1:9\" }\n  clamav: { addr: \"127.0.0.1:9\" }\n",
            6,
        ),
        (
            "reputation.yaml",
            "reputation:\n  dnsbl: { zones: [ { name: zen, zone: bl.test, weight: 3 } ] }\n  rhsbl: { zones: [ { name: dbl, zone: dbl.test } ] }\n",
            6,
        ),
    ] {
        let text = std::fs::read_to_string(root().join("examples/rules").join(file)).unwrap();
        let dir = setup(&text);
        std::fs::write(
            dir.path().join("gateway.yaml"),
            format!("hostname: gate.test\nspool_dir: spool\nrules_dir: rules\n{extra}"),
        )
        .unwrap();
        let (code, out, err) = run(dir.path(), &["--config", "gateway.yaml", "check"]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(
            out.contains(&format!("tests:     {cases} rule tests passed\n")),
            "{file}: {out}"
        );
    }
}
