//! The scanners end to end: a live gateway asks a real clamd (with only
//! the test's signatures) and a real rspamd (in a network namespace of its
//! own, over its Unix socket; over TCP through a forwarded port) at the
//! end of DATA. A virus is refused with 554, GTUBE with 550, a clean message is
//! relayed with rspamd's headers (and without the ones rspamd asks to
//! remove), a stopped clamd gives 451, and a rule
//! overrides a scanner's default action. `smtpgate test-rules` applies
//! the same default actions to facts from fixtures.

mod common;

use common::scanners::{
    Clamd, Rspamd, EICAR, EICAR_NAME, GTUBE, GTUBE_REWRITE_SUBJECT, MARKER, MARKER_NAME,
};
use common::{audit_records, message, rules_dir, rules_line, Gateway, MockOptions, MockUpstream};

/// A gateway with `scanners` (YAML flow mapping) relaying to a mock upstream.
struct Setup {
    up: MockUpstream,
    gw: Gateway,
    audit: std::path::PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

fn setup(scanners: &str, rules: Option<&str>) -> Setup {
    let up = MockUpstream::start(MockOptions::default());
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let mut dirs = vec![adir];
    let rules_yaml = match rules {
        Some(r) => {
            let d = rules_dir(&[("r.yaml", r)]);
            let line = rules_line(d.path());
            dirs.push(d);
            line
        }
        None => String::new(),
    };
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{rules_yaml}audit: {{ path: \"{}\" }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
         quarantine_dir: \"{}\"\nscanners: {scanners}\n",
        up.addr,
        audit.display(),
        dirs[0].path().join("quarantine").display(),
    ));
    Setup {
        up,
        gw,
        audit,
        _dirs: dirs,
    }
}

/// Sends one message; returns the final reply's code and text.
fn send(gw: &Gateway, body: &str) -> (u16, String) {
    let mut c = gw.client();
    c.cmd("EHLO client.example.test", 250);
    let r = c.send_message("a@example.com", &["b@example.com"], body);
    (r.code, r.raw)
}

#[test]
fn clamd_finds_eicar_and_the_message_is_refused_with_554() {
    let clamd = Clamd::shared();
    let s = setup(
        &format!("{{ clamav: {{ addr: \"{}\" }} }}", clamd.addr()),
        None,
    );
    let (code, text) = send(&s.gw, &message("eicar", &format!("{EICAR}\r\n")));
    assert_eq!(code, 554, "{text}");
    assert!(
        text.contains(&format!("5.7.1 Virus found: {EICAR_NAME}")),
        "{text}"
    );
    let rec = &audit_records(&s.audit, 1)[0];
    assert_eq!(rec["facts"]["clamav.virus"], EICAR_NAME, "{rec}");
    assert_eq!(rec["decided_by"], "scanners:clamav", "{rec}");
    assert!(s.up.delivered().is_empty(), "nothing may be relayed");
}

#[test]
fn the_unix_socket_and_small_chunks_find_the_test_signature() {
    let clamd = Clamd::shared();
    let s = setup(
        &format!(
            "{{ clamav: {{ addr: \"{}\", chunk_size: 7 }} }}",
            clamd.socket.display()
        ),
        None,
    );
    let body = format!("{}\r\nsee {MARKER} here\r\n", "padding line\r\n".repeat(50));
    let (code, text) = send(&s.gw, &message("marker", &body));
    assert_eq!(code, 554, "{text}");
    assert!(text.contains(MARKER_NAME), "{text}");
}

#[test]
fn a_clean_message_passes_both_scanners_with_rspamds_headers() {
    let clamd = Clamd::shared();
    let rspamd = Rspamd::shared();
    let s = setup(
        &format!(
            "{{ clamav: {{ addr: \"{}\" }}, rspamd: {{ url: \"{}\" }} }}",
            clamd.addr(),
            rspamd.url()
        ),
        None,
    );
    // A client's own spam verdict is removed, as rspamd asks.
    let forged = format!(
        "X-Spam-Status: No, forged\r\nX-Spamd-Result: forged\r\n\tby the client\r\n{}",
        message("clean", "hello there\r\n")
    );
    let (code, text) = send(&s.gw, &forged);
    assert_eq!(code, 250, "{text}");
    let got = s.up.wait_for(1);
    let relayed = String::from_utf8_lossy(&got[0].data).to_string();
    assert!(
        !relayed.contains("forged") && !relayed.contains("X-Spam: Yes"),
        "{relayed}"
    );
    assert!(relayed.contains("\r\nSubject: clean\r\n"), "{relayed}");
    assert!(
        relayed.contains("X-Spamd-Result: default: False"),
        "{relayed}"
    );
    assert!(relayed.contains("X-Rspamd-Action: no action"), "{relayed}");
    assert!(relayed.contains("X-Rspamd-Score: "), "{relayed}");
    let rec = &audit_records(&s.audit, 1)[0];
    assert_eq!(rec["facts"]["clamav.virus"], "none", "{rec}");
    assert_eq!(rec["facts"]["rspamd.action"], "no action", "{rec}");
    assert!(rec["facts"]["rspamd.score"].is_number(), "{rec}");
    // rspamd logs the queue id it was given with the transaction's.
    let qid = format!("qid: <{}>", rec["transaction"].as_str().unwrap());
    let mut log = rspamd.log();
    for _ in 0..100 {
        if log.contains(&qid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = rspamd.log();
    }
    assert!(log.contains(&qid), "{qid} not in rspamd's log:\n{log}");
}

#[test]
fn rspamd_rejects_gtube_with_550() {
    let rspamd = Rspamd::shared();
    let s = setup(
        &format!("{{ rspamd: {{ url: \"{}\" }} }}", rspamd.url()),
        None,
    );
    let (code, text) = send(&s.gw, &message("gtube", &format!("{GTUBE}\r\n")));
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.1"), "{text}");
    let rec = &audit_records(&s.audit, 1)[0];
    assert_eq!(rec["facts"]["rspamd.action"], "reject", "{rec}");
    assert!(
        rec["facts"]["rspamd.symbols"].to_string().contains("GTUBE"),
        "{rec}"
    );
    assert!(s.up.delivered().is_empty());
}

/// The relayed message's Subject fields (raw, continuation lines included)
/// and its Subject as a mail reader decodes it.
fn subjects(relayed: &[u8]) -> (Vec<String>, String) {
    let text = String::from_utf8_lossy(relayed);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut().filter(|f| f.starts_with("Subject:")) {
                last.push_str("\r\n");
                last.push_str(line);
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields.retain(|f| f.to_ascii_lowercase().starts_with("subject:"));
    let decoded = mail_parser::MessageParser::default()
        .parse(relayed)
        .and_then(|m| m.subject().map(String::from))
        .unwrap_or_default();
    (fields, decoded)
}

#[test]
fn rspamds_rewrite_subject_rewrites_the_relayed_subject_encoded() {
    let rspamd = Rspamd::shared();
    let s = setup(
        &format!("{{ rspamd: {{ url: \"{}\" }} }}", rspamd.url()),
        None,
    );
    // A folded, encoded Subject ("Grüße" and a continuation line), and
    // a second Subject field: one Subject goes on, rspamd's.
    let msg = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\taus Koeln\r\n\
         Message-ID: <rewrite@example.com>\r\nsubject: second\r\n\r\n{GTUBE_REWRITE_SUBJECT}\r\n"
    );
    let (code, text) = send(&s.gw, &msg);
    assert_eq!(code, 250, "{text}");
    let got = s.up.wait_for(1);
    let (fields, decoded) = subjects(&got[0].data);
    let relayed = String::from_utf8_lossy(&got[0].data).to_string();
    assert_eq!(fields.len(), 1, "{relayed}");
    assert!(fields[0].starts_with("Subject: =?UTF-8?B?"), "{relayed}");
    assert!(fields[0].is_ascii(), "{relayed}");
    assert_eq!(decoded, "*** SPAM *** Grüße aus Koeln", "{relayed}");
    assert!(!relayed.contains("second"), "{relayed}");
    assert!(
        relayed.contains("X-Rspamd-Action: rewrite subject"),
        "{relayed}"
    );
    assert!(relayed.contains("X-Spam: Yes"), "{relayed}");
    let rec = &audit_records(&s.audit, 1)[0];
    assert_eq!(rec["facts"]["rspamd.action"], "rewrite subject", "{rec}");
    assert_eq!(
        rec["facts"]["rspamd.subject"], "*** SPAM *** Grüße aus Koeln",
        "{rec}"
    );
    // A clean message keeps its Subject, byte for byte.
    let (code, text) = send(&s.gw, &message("untouched", "hello\r\n"));
    assert_eq!(code, 250, "{text}");
    let got = s.up.wait_for(2);
    let (fields, _) = subjects(&got[1].data);
    assert_eq!(fields, ["Subject: untouched"]);
}

#[test]
fn rewrite_subject_adds_a_subject_to_a_message_without_one() {
    let rspamd = Rspamd::shared();
    let s = setup(
        &format!("{{ rspamd: {{ url: \"{}\" }} }}", rspamd.url()),
        None,
    );
    let msg = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <nosubject@example.com>\r\n\r\n{GTUBE_REWRITE_SUBJECT}\r\n"
    );
    let (code, text) = send(&s.gw, &msg);
    assert_eq!(code, 250, "{text}");
    let got = s.up.wait_for(1);
    let (fields, decoded) = subjects(&got[0].data);
    let relayed = String::from_utf8_lossy(&got[0].data).to_string();
    assert_eq!(fields.len(), 1, "{relayed}");
    assert!(decoded.starts_with("*** SPAM ***"), "{relayed}");
    assert!(
        relayed.ends_with(&format!("\r\n\r\n{GTUBE_REWRITE_SUBJECT}\r\n")),
        "{relayed}"
    );
}

#[test]
fn rspamd_runs_in_a_network_namespace_with_only_its_loopback() {
    let rspamd = Rspamd::shared();
    let pid = rspamd.pid();
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "rspamd shares our network"
    );
    // Its namespace's interfaces, as the kernel lists them for it.
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{dev}");
}

#[test]
fn the_tcp_url_reaches_rspamd_too() {
    let rspamd = Rspamd::shared();
    let s = setup(
        &format!("{{ rspamd: {{ url: \"{}\" }} }}", rspamd.tcp_url()),
        None,
    );
    let (code, text) = send(&s.gw, &message("gtube", &format!("{GTUBE}\r\n")));
    assert_eq!(code, 550, "{text}");
    let (code, text) = send(&s.gw, &message("clean", "hello there\r\n"));
    assert_eq!(code, 250, "{text}");
    let relayed = String::from_utf8_lossy(&s.up.wait_for(1)[0].data).to_string();
    assert!(
        relayed.contains("X-Spamd-Result: default: False"),
        "{relayed}"
    );
    let recs = audit_records(&s.audit, 2);
    assert_eq!(recs[0]["facts"]["rspamd.action"], "reject", "{}", recs[0]);
    assert_eq!(
        recs[1]["facts"]["rspamd.action"], "no action",
        "{}",
        recs[1]
    );
}

#[test]
fn a_rule_overrides_rspamds_reject_and_can_quarantine_instead() {
    let rspamd = Rspamd::shared();
    let rules = "rules:\n  - { name: keep-spam, stage: data, when: { fact: { name: rspamd.action, is: reject } }, action: quarantine }\n";
    let s = setup(
        &format!("{{ rspamd: {{ url: \"{}\" }} }}", rspamd.url()),
        Some(rules),
    );
    let (code, text) = send(&s.gw, &message("gtube", &format!("{GTUBE}\r\n")));
    assert_eq!(code, 250, "{text}");
    let rec = &audit_records(&s.audit, 1)[0];
    assert_eq!(rec["verdict"], "quarantined", "{rec}");
    assert_eq!(rec["decided_by"], "keep-spam", "{rec}");
}

#[test]
fn a_stopped_clamd_gives_451_and_a_message_too_large_is_skipped() {
    let mut clamd = Clamd::start();
    let s = setup(
        &format!(
            "{{ clamav: {{ addr: \"{}\", max_size: 2000 }} }}",
            clamd.addr()
        ),
        None,
    );
    let (code, text) = send(&s.gw, &message("before", "clean\r\n"));
    assert_eq!(code, 250, "{text}");
    let (code, text) = send(
        &s.gw,
        &message(
            "big",
            &format!("{EICAR}\r\n{}", "padding line\r\n".repeat(200)),
        ),
    );
    assert_eq!(code, 250, "a message over max_size is not scanned: {text}");
    clamd.stop();
    let (code, text) = send(&s.gw, &message("after", "clean\r\n"));
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.7.1"), "{text}");
    let recs = audit_records(&s.audit, 3);
    assert_eq!(recs[1]["facts"]["clamav.virus"], "skipped", "{}", recs[1]);
    assert_eq!(recs[2]["facts"]["clamav.virus"], "temperror", "{}", recs[2]);
    assert_eq!(s.up.wait_for(2).len(), 2);
}

#[test]
fn a_dead_rspamd_fails_open_unless_told_to_tempfail() {
    let port = common::unbound::free_port();
    let open = setup(
        &format!("{{ rspamd: {{ url: \"http://127.0.0.1:{port}\" }} }}"),
        None,
    );
    let (code, text) = send(&open.gw, &message("open", "hi\r\n"));
    assert_eq!(code, 250, "{text}");
    assert_eq!(
        audit_records(&open.audit, 1)[0]["facts"]["rspamd.action"],
        "temperror"
    );
    let closed = setup(
        &format!("{{ rspamd: {{ url: \"http://127.0.0.1:{port}\", on_error: tempfail }} }}"),
        None,
    );
    let (code, text) = send(&closed.gw, &message("closed", "hi\r\n"));
    assert_eq!(code, 451, "{text}");
}

/// `smtpgate test-rules` with the scanners configured and their facts
/// given: the default actions apply, no scanner is asked.
fn simulate(facts: &[&str]) -> (i32, String) {
    simulate_with(facts, "", None)
}

/// [`simulate`] with more rspamd settings (`, key: value` flow entries)
/// and, when given, a rules file.
fn simulate_with(facts: &[&str], rspamd_extra: &str, rules: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = rules.map(|r| rules_dir(&[("rules.yaml", r)]));
    let rules_yaml = rules_dir
        .as_ref()
        .map(|d| rules_line(d.path()))
        .unwrap_or_default();
    let cfg = dir.path().join("gateway.yaml");
    // Nothing listens at these addresses: a scan would fail, not pass.
    let port = common::unbound::free_port();
    std::fs::write(
        &cfg,
        format!(
            "{rules_yaml}relay: {{ local_domains: [example.com] }}\nscanners:\n  rspamd: {{ url: \"http://127.0.0.1:{port}\"{rspamd_extra} }}\n  clamav: {{ addr: \"127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, message("sim", "hello\r\n")).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_smtpgate"));
    cmd.arg("test-rules").arg("--config").arg(&cfg);
    cmd.args([
        "--from",
        "a@example.net",
        "--to",
        "b@example.com",
        "--client-ip",
        "192.0.2.7",
    ]);
    for f in facts {
        cmd.arg("--fact").arg(f);
    }
    let out = cmd.arg(&msg).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_simulator_applies_the_default_actions_to_fixtures() {
    let (code, out) = simulate(&["clamav.virus=Eicar-Test", "rspamd.action=no action"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("554 5.7.1 Virus found: Eicar-Test"), "{out}");
    let (code, out) = simulate(&[
        "clamav.virus=none",
        "rspamd.action=reject",
        "rspamd.score=16",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("550 5.7.1"), "{out}");
    let (code, out) = simulate(&["clamav.virus=none", "rspamd.action=soft reject"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("451 4.7.1"), "{out}");
    let (code, out) = simulate(&["clamav.virus=none", "rspamd.action=add header"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("X-Spam"), "{out}");
    assert!(!out.contains("subject rewritten"), "{out}");
}

#[test]
fn the_simulator_shows_the_rewritten_subject() {
    // rspamd gave no subject: the default template, on the old Subject.
    let (code, out) = simulate(&["clamav.virus=none", "rspamd.action=rewrite subject"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("subject rewritten: \"*** SPAM *** sim\""),
        "{out}"
    );
    assert!(out.contains("X-Spam: Yes"), "{out}");
    // The configured template, with the score.
    let (code, out) = simulate_with(
        &[
            "clamav.virus=none",
            "rspamd.action=rewrite subject",
            "rspamd.score=6.5",
        ],
        ", subject_template: \"[SPAM %d] %s\"",
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("subject rewritten: \"[SPAM 6.50] sim\""),
        "{out}"
    );
    // rspamd's own subject wins over the template.
    let (code, out) = simulate(&[
        "clamav.virus=none",
        "rspamd.action=rewrite subject",
        "rspamd.subject=*** SPAM *** from rspamd",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("subject rewritten: \"*** SPAM *** from rspamd\""),
        "{out}"
    );
    // apply_action off: the rules decide, the Subject stays.
    let (code, out) = simulate_with(
        &["clamav.virus=none", "rspamd.action=rewrite subject"],
        ", apply_action: false",
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("subject rewritten"), "{out}");
}

#[test]
fn the_example_scanner_rules_read_every_scanner_fact_from_fixtures() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/scanners.yaml"),
    )
    .unwrap();
    let run = |facts: &[&str]| simulate_with(facts, "", Some(&rules));
    // clamav.virus: a heuristic detection is quarantined by the rule, not
    // refused by the default action.
    let (code, out) = run(&[
        "clamav.virus=Heuristics.Phishing.Email.SpoofedDomain",
        "rspamd.action=no action",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("matched virus-heuristic (quarantine)"),
        "{out}"
    );
    assert!(out.contains("verdict: quarantined"), "{out}");
    // A signature still gets the default 554.
    let (code, out) = run(&["clamav.virus=Eicar-Signature", "rspamd.action=no action"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("554 5.7.1 Virus found: Eicar-Signature"),
        "{out}"
    );
    // rspamd.symbols, a list.
    let (code, out) = run(&[
        "clamav.virus=none",
        "rspamd.action=add header",
        "rspamd.score=6",
        "rspamd.symbols=R_DUMMY,PHISHING",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("550 5.7.1 Phishing message rejected"), "{out}");
    // rspamd.score, a number, below rspamd's own reject.
    let (code, out) = run(&[
        "clamav.virus=none",
        "rspamd.action=add header",
        "rspamd.score=13.5",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("550 5.7.1 Spam score too high"), "{out}");
    // rspamd.action: temperror held back by the rule.
    let (code, out) = run(&["clamav.virus=none", "rspamd.action=temperror"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("451 4.7.1 Spam filter unavailable"), "{out}");
    // A middling score is marked, and rspamd's rewrite subject applies.
    let (code, out) = run(&[
        "clamav.virus=none",
        "rspamd.action=rewrite subject",
        "rspamd.score=7",
        "rspamd.subject=*** SPAM *** sim",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("X-Spam-Suspect: yes"), "{out}");
    assert!(
        out.contains("subject rewritten: \"*** SPAM *** sim\""),
        "{out}"
    );
    assert!(out.contains("rspamd.subject = *** SPAM *** sim"), "{out}");
    // A clean message: no rule, no default action.
    let (code, out) = run(&[
        "clamav.virus=none",
        "rspamd.action=no action",
        "rspamd.score=0.5",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("X-Spam-Suspect"), "{out}");
    assert!(
        out.contains("verdict: relayed") || out.contains("verdict: delivered"),
        "{out}"
    );
}

/// `smtpgate check -c FILE` with `yaml`: (exit code, stdout + stderr).
fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_names_the_scanners_and_a_bad_setting_its_line() {
    let (code, out) = check(
        "relay: { local_domains: [example.com] }\nscanners:\n  rspamd: { url: \"http://127.0.0.1:11333\" }\n  clamav: { addr: /run/clamav/clamd.ctl, action: quarantine }\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("scanners:  rspamd at http://127.0.0.1:11333"),
        "{out}"
    );
    assert!(out.contains("clamd at /run/clamav/clamd.ctl"), "{out}");
    assert!(out.contains("virus: quarantine"), "{out}");
    let (code, out) = check("scanners:\n  clamav:\n    addr: nowhere\n");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("gateway.yaml:3:") && out.contains("scanners.clamav.addr"),
        "{out}"
    );
    let (code, out) = check(
        "relay: { local_domains: [example.com] }\nscanners:\n  rspamd: { url: \"unix:/run/rspamd/normal.sock\" }\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("scanners:  rspamd at unix:/run/rspamd/normal.sock"),
        "{out}"
    );
    let (code, out) = check("scanners:\n  rspamd:\n    url: \"unix:rspamd.sock\"\n");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("gateway.yaml:3:") && out.contains("absolute path"),
        "{out}"
    );
    let (code, out) = check("scanners:\n  rspamd:\n    subject_template: \"a\\nb\"\n");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("gateway.yaml:3:") && out.contains("scanners.rspamd.subject_template"),
        "{out}"
    );
    let (code, out) = check("scanners:\n  rspamd:\n    url: \"https://rspamd.example\"\n");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("gateway.yaml:3:") && out.contains("https is not supported"),
        "{out}"
    );
}
