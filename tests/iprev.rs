//! The iprev check end to end: a live gateway whose rules read `iprev`
//! looks the client up through its resolver, against a private unbound
//! the test starts, and the rules, the audit record and the metrics see
//! the result. A dead DNS server gives `temperror`, never a pass.

mod common;

use common::unbound::{free_port, Unbound};
use common::{
    audit_records, message, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream,
};

const RULES: &str = "rules:
  - { name: no-iprev, stage: mail, when: { fact: { name: iprev, is: fail } }, action: reject,
      reply: { code: 550, enhanced: 5.7.25, text: Reverse DNS does not match } }
  - { name: dns-trouble, stage: mail, when: { fact: { name: iprev, is: temperror } }, action: tempfail }
  - { name: tag-ptr, stage: data, when: { fact: { name: iprev, is: pass } }, action: add_header,
      header: { name: X-Client-Checked, value: iprev } }
";

struct Setup {
    up: MockUpstream,
    gw: Gateway,
    audit: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A gateway whose resolver is `dns_server`, relaying to a mock upstream.
fn setup(dns_server: &str, extra: &str) -> Setup {
    let up = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[("r.yaml", RULES)]);
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}audit: {{ path: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", proxy_protocol: true }}\n\
         proxy_protocol: {{ trusted_proxies: [127.0.0.1] }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
         dns: {{ servers: [\"{dns_server}\"], timeout_ms: 500, attempts: 1 }}\n{extra}",
        up.addr,
        rules_line(rules.path()),
        audit.display()
    ));
    Setup {
        up,
        gw,
        audit,
        _dirs: (rules, adir),
    }
}

/// unbound answering for 192.0.2.7 with `ptr`, whose name resolves to `a`.
fn dns(ptr: &str, a: &str) -> Unbound {
    Unbound::start(&[
        r#"local-zone: "example.test." static"#.to_string(),
        r#"local-zone: "2.0.192.in-addr.arpa." static"#.to_string(),
        format!(r#"local-data: "7.2.0.192.in-addr.arpa. 300 IN PTR {ptr}""#),
        format!(r#"local-data: "{ptr} 300 IN A {a}""#),
    ])
}

/// A client at 192.0.2.7, as a trusted proxy in front announces it: the
/// resolver answers loopback addresses itself, so the tests use another.
fn client(gw: &Gateway) -> Client {
    let mut c = Client::connect(gw.addr);
    c.send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n");
    c.expect(220);
    c
}

#[test]
fn a_client_whose_name_resolves_back_passes_and_rules_see_it() {
    let u = dns("client.example.test.", "192.0.2.7");
    let s = setup(&u.server(), "");
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    let r = c.send_message("a@example.com", &["b@example.com"], &message("p", "x\r\n"));
    assert_eq!(r.code, 250, "{}", r.raw);
    let got = s.up.wait_for(1);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("\r\nX-Client-Checked: iprev\r\n"), "{text}");
    let recs = audit_records(&s.audit, 1);
    let tx = recs.iter().find(|r| r["type"] == "transaction").unwrap();
    assert_eq!(tx["facts"]["iprev"], "pass", "{tx}");
    assert_eq!(tx["facts"]["client.ptr"], "client.example.test", "{tx}");
    assert_eq!(tx["checks"][0]["check"], "iprev", "{tx}");
    assert_eq!(tx["checks"][0]["stage"], "mail", "{tx}");
    assert_eq!(tx["checks"][0]["outcome"], "ok", "{tx}");
}

#[test]
fn a_name_that_resolves_elsewhere_fails_and_is_refused_before_the_upstream_sees_it() {
    let u = dns("elsewhere.example.test.", "192.0.2.99");
    let s = setup(&u.server(), "");
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>", 550),
        "550 5.7.25 Reverse DNS does not match\r\n"
    );
    let rec = s.up.recorded.lock().unwrap();
    assert!(rec.delivered.is_empty());
    assert!(
        !rec.commands.iter().flatten().any(|c| c.starts_with("MAIL")),
        "{:?}",
        rec.commands
    );
}

#[test]
fn a_dead_dns_server_gives_temperror_and_the_rules_tempfail() {
    let s = setup(&format!("127.0.0.1:{}", free_port()), "");
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451 4.7.1 "), "{r}");
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 1);
    let facts = recs.iter().find_map(|r| r.get("facts")).unwrap();
    assert_eq!(facts["iprev"], "temperror", "{recs:?}");
}

#[test]
fn on_error_tempfail_refuses_the_stage_itself() {
    let s = setup(
        &format!("127.0.0.1:{}", free_port()),
        "checks: { iprev: { timeout_ms: 3000, on_error: tempfail } }\n",
    );
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>", 451),
        "451 4.7.1 Temporary failure of the iprev check, try again later\r\n"
    );
}

#[test]
fn one_lookup_serves_every_transaction_of_the_connection() {
    let u = dns("client.example.test.", "192.0.2.7");
    let s = setup(&u.server(), "");
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    for i in 0..3 {
        let r = c.send_message(
            "a@example.com",
            &["b@example.com"],
            &message(&format!("m{i}"), "x\r\n"),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
    }
    s.up.wait_for(3);
    let text = s.gw.shared.metrics().render();
    assert!(
        text.contains("smtpgate_checks_total{check=\"iprev\",outcome=\"ok\"} 1\n"),
        "{text}"
    );
}

#[test]
fn a_result_is_kept_for_the_next_connection_no_longer_than_its_answers_live() {
    // TTLs of 2 s: the second connection, with the server gone, still
    // passes on what was learnt; once the answers have expired, the
    // gateway asks again and finds no server (temperror, never a pass).
    let mut u = Unbound::start(&[
        r#"local-zone: "example.test." static"#.to_string(),
        r#"local-zone: "2.0.192.in-addr.arpa." static"#.to_string(),
        r#"local-data: "7.2.0.192.in-addr.arpa. 2 IN PTR client.example.test.""#.to_string(),
        r#"local-data: "client.example.test. 2 IN A 192.0.2.7""#.to_string(),
    ]);
    let s = setup(&u.server(), "");
    let deliver = |n: &str| {
        let mut c = client(&s.gw);
        c.cmd("EHLO client.example.test", 250);
        c.send_message("a@example.com", &["b@example.com"], &message(n, "x\r\n"))
    };
    assert_eq!(deliver("1").code, 250);
    u.stop();
    assert_eq!(
        deliver("2").code,
        250,
        "the kept result serves the next connection"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut c = client(&s.gw);
    c.cmd("EHLO client.example.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451"), "{r}");
    let records = audit_records(&s.audit, 3);
    assert_eq!(
        records[2]["facts"]["iprev"], "temperror",
        "{:?}",
        records[2]
    );
}
