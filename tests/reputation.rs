//! The reputation checks end to end: live gateways whose resolver is a
//! private unbound forwarding the list zones to a real rbldnsd (see
//! `common/dnslists.rs`), clients announced by PROXY protocol headers.
//! DNSBL/DNSWL weights and threshold, return-code filters, error answers,
//! a zone that never answers, URIBL on base64 and quoted-printable
//! bodies, and the HELO and sender-domain facts.

mod common;

use common::dnslists::Lists;
use common::{audit_records, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream};
use serde_json::Value;

struct Setup {
    gw: Gateway,
    audit: std::path::PathBuf,
    _up: MockUpstream,
    _dirs: Vec<tempfile::TempDir>,
}

/// A gateway asking the shared lists, with `reputation` (YAML under the
/// `reputation:` key) and `rules` (a rule file's text, or empty).
fn setup(reputation: &str, rules: &str) -> Setup {
    let lists = Lists::shared();
    let up = MockUpstream::start(MockOptions::default());
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let mut dirs = vec![adir];
    let mut rules_key = String::new();
    if !rules.is_empty() {
        let r = rules_dir(&[("r.yaml", rules)]);
        rules_key = rules_line(r.path());
        dirs.push(r);
    }
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{rules_key}audit: {{ path: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", proxy_protocol: true }}\n\
         proxy_protocol: {{ trusted_proxies: [127.0.0.1] }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
         dns: {{ servers: [\"{}\"], timeout_ms: 2000, attempts: 1 }}\n\
         reputation:\n{reputation}",
        up.addr,
        audit.display(),
        lists.server,
    ));
    Setup {
        gw,
        audit,
        _up: up,
        _dirs: dirs,
    }
}

/// A client the trusted proxy announces as `ip`.
fn client(gw: &Gateway, ip: &str) -> Client {
    let mut c = Client::connect(gw.addr);
    if ip.contains(':') {
        c.send(&format!("PROXY TCP6 {ip} ::1 40000 25\r\n"));
    } else {
        c.send(&format!("PROXY TCP4 {ip} 127.0.0.1 40000 25\r\n"));
    }
    c
}

/// The facts of the first record that has any.
fn facts(s: &Setup) -> Value {
    let recs = audit_records(&s.audit, 1);
    recs.iter()
        .find_map(|r| r.get("facts").cloned())
        .unwrap_or_else(|| panic!("no facts in {recs:?}"))
}

/// EHLO, MAIL, RCPT: the RCPT reply.
fn rcpt(c: &mut Client, helo: &str, from: &str) -> String {
    c.cmd(&format!("EHLO {helo}"), 250);
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.send("RCPT TO:<b@example.com>\r\n");
    c.reply().raw
}

const ZEN: &str = "  dnsbl:\n    action: reject\n    threshold: 1\n    zones:\n\
                   \x20     - { name: bl, zone: bl.test, weight: 1 }\n";

#[test]
fn a_listed_ipv4_client_is_refused_naming_the_zone() {
    let s = setup(ZEN, "");
    let mut c = client(&s.gw, "192.0.2.1");
    c.expect(220);
    assert_eq!(
        rcpt(&mut c, "good-helo.test", "a@mx.test"),
        "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test\r\n"
    );
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 1);
    let tx = recs.iter().find(|r| r["type"] == "transaction").unwrap();
    assert_eq!(tx["rcpts"][0]["by"], "reputation", "{tx}");
    let f = facts(&s);
    assert_eq!(f["dnsbl.bl"], serde_json::json!(["127.0.0.2"]), "{f}");
    assert_eq!(f["dnsbl.score"], 1.0, "{f}");
    assert_eq!(f["dnsbl.listed"], serde_json::json!(["bl"]), "{f}");
}

#[test]
fn a_listed_ipv6_client_is_refused_with_the_zones_own_text() {
    let s = setup(
        "  dnsbl:\n    action: reject\n    zones:\n\
         \x20     - { name: bl, zone: bl.test, reply: \"{client} is listed in {name}, see https://bl.test/\" }\n",
        "",
    );
    let mut c = client(&s.gw, "2001:db8::7");
    c.expect(220);
    assert_eq!(
        rcpt(&mut c, "good-helo.test", "a@mx.test"),
        "550 5.7.1 2001:db8::7 is listed in bl, see https://bl.test/\r\n"
    );
    // An unlisted client of the same zone goes through.
    let mut ok = client(&s.gw, "2001:db8::8");
    ok.expect(220);
    assert!(rcpt(&mut ok, "good-helo.test", "a@mx.test").starts_with("250"));
}

#[test]
fn tempfail_defers_every_recipient() {
    let s = setup(
        "  dnsbl:\n    action: tempfail\n    zones:\n      - { name: bl, zone: bl.test }\n",
        "",
    );
    let mut c = client(&s.gw, "192.0.2.1");
    c.expect(220);
    assert_eq!(
        rcpt(&mut c, "good-helo.test", "a@mx.test"),
        "451 4.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test\r\n"
    );
}

#[test]
fn score_adds_the_weight_for_the_rules() {
    let rules =
        "rules:\n  - { name: high, stage: rcpt, when: { score: { min: 4 } }, action: reject }\n";
    let s = setup(
        "  dnsbl:\n    action: score\n    zones:\n      - { name: bl, zone: bl.test, weight: 4 }\n",
        rules,
    );
    let mut listed = client(&s.gw, "192.0.2.1");
    listed.expect(220);
    assert!(rcpt(&mut listed, "good-helo.test", "a@mx.test").starts_with("550"));
    let mut clean = client(&s.gw, "192.0.2.99");
    clean.expect(220);
    assert!(rcpt(&mut clean, "good-helo.test", "a@mx.test").starts_with("250"));
}

#[test]
fn drop_refuses_the_greeting() {
    let s = setup(
        "  dnsbl:\n    action: drop\n    zones:\n      - { name: bl, zone: bl.test }\n",
        "",
    );
    let mut c = client(&s.gw, "192.0.2.1");
    assert_eq!(
        c.expect(554),
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test\r\n"
    );
    drop(c);
    let recs = audit_records(&s.audit, 1);
    assert_eq!(recs[0]["decided_by"], "reputation", "{recs:?}");
}

#[test]
fn an_error_answer_is_no_listing_and_is_counted() {
    let s = setup(
        "  dnsbl:\n    action: reject\n    zones:\n      - { name: err, zone: err.test, weight: 5 }\n",
        "",
    );
    let mut c = client(&s.gw, "192.0.2.1");
    c.expect(220);
    assert!(rcpt(&mut c, "good-helo.test", "a@mx.test").starts_with("250"));
    c.cmd("QUIT", 221);
    let f = facts(&s);
    assert_eq!(f["dnsbl.err"], "error", "{f}");
    assert_eq!(f["dnsbl.score"], 0.0, "{f}");
    let scrape = s.gw.shared.metrics().render();
    assert!(
        scrape.contains("smtpgate_dns_list_errors_total{zone=\"err.test\"} 1"),
        "{scrape}"
    );
}

const WEIGHTS: &str = "  dnsbl:\n    action: reject\n    threshold: 2\n    zones:\n\
                       \x20     - { name: bl, zone: bl.test, weight: 1 }\n\
                       \x20     - { name: two, zone: two.test, weight: 1, returns: [\"127.0.0.[2..3]\"] }\n\
                       \x20     - { name: wl, zone: wl.test, weight: -2, returns: [\"127.0.10.2&0.0.0.2\"] }\n";

#[test]
fn weights_of_two_zones_add_up_to_the_threshold() {
    let s = setup(WEIGHTS, "");
    let mut both = client(&s.gw, "192.0.2.10");
    both.expect(220);
    assert!(rcpt(&mut both, "good-helo.test", "a@mx.test")
        .starts_with("550 5.7.1 Service unavailable; client [192.0.2.10] blocked using "),);
    // One zone alone is below the threshold.
    let mut one = client(&s.gw, "192.0.2.1");
    one.expect(220);
    assert!(rcpt(&mut one, "good-helo.test", "a@mx.test").starts_with("250"));
    // A code the filter leaves out is no listing.
    let mut other = client(&s.gw, "192.0.2.20");
    other.expect(220);
    assert!(rcpt(&mut other, "good-helo.test", "a@mx.test").starts_with("250"));
    for c in [&mut both, &mut one, &mut other] {
        c.cmd("QUIT", 221);
    }
    let recs = audit_records(&s.audit, 3);
    let of = |ip: &str| {
        recs.iter()
            .find(|r| r["client"]["ip"] == ip && r.get("facts").is_some())
            .map(|r| r["facts"].clone())
            .unwrap_or_else(|| panic!("no record of {ip}: {recs:?}"))
    };
    assert_eq!(of("192.0.2.10")["dnsbl.score"], 2.0);
    assert_eq!(of("192.0.2.1")["dnsbl.score"], 1.0);
    assert_eq!(of("192.0.2.20")["dnsbl.two"], "none");
}

#[test]
fn an_allowlist_weight_brings_a_client_back_under() {
    let s = setup(WEIGHTS, "");
    // Listed in bl (1) and wl (-2): -1, under the threshold.
    let mut c = client(&s.gw, "192.0.2.11");
    c.expect(220);
    assert!(rcpt(&mut c, "good-helo.test", "a@mx.test").starts_with("250"));
    c.cmd("QUIT", 221);
    let f = facts(&s);
    assert_eq!(f["dnsbl.score"], -1.0, "{f}");
    assert_eq!(f["dnsbl.wl"], serde_json::json!(["127.0.10.2"]), "{f}");
}

#[test]
fn an_allowlisted_client_skips_later_checks_and_rules_as_configured() {
    let rules = "rules:\n  - { name: no-one, stage: rcpt, when: { fact: { name: sender.domain, present: true } }, action: reject }\n";
    let s = setup(
        &format!("  exempt_networks: [198.51.100.0/24]\n{WEIGHTS}    allowlist_threshold: -1\n    allowlisted_skip: checks\n"),
        rules,
    );
    for ip in ["192.0.2.11", "198.51.100.5"] {
        let mut c = client(&s.gw, ip);
        c.expect(220);
        assert!(
            rcpt(&mut c, "good-helo.test", "a@mx.test").starts_with("250"),
            "{ip}"
        );
    }
    // Anyone else meets the rule.
    let mut c = client(&s.gw, "192.0.2.99");
    c.expect(220);
    assert!(rcpt(&mut c, "good-helo.test", "a@mx.test").starts_with("550"));
}

#[test]
fn a_zone_that_never_answers_gives_temperror_and_holds_no_one() {
    let s = setup(
        "  dnsbl:\n    action: reject\n    zones:\n\
         \x20     - { name: slow, zone: slow.test, timeout_ms: 300 }\n\
         \x20     - { name: bl, zone: bl.test }\n",
        "",
    );
    let mut c = client(&s.gw, "192.0.2.1");
    c.expect(220);
    assert!(rcpt(&mut c, "good-helo.test", "a@mx.test").starts_with("550 5.7.1 "));
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 1);
    let rec = recs.iter().find(|r| r.get("facts").is_some()).unwrap();
    assert_eq!(rec["facts"]["dnsbl.slow"], "temperror", "{rec}");
    // The zone's own timeout ended it, not the check's.
    let run = &rec["checks"][0];
    assert_eq!(run["check"], "dnsbl", "{rec}");
    assert_eq!(run["outcome"], "ok", "{rec}");
}

const URIBL: &str = "  rhsbl:\n    zones:\n      - { name: dbl, zone: dbl.test, weight: 3 }\n";
const URIBL_RULES: &str = "rules:\n  - { name: uribl, stage: data, when: { fact: { name: uribl.score, min: 1 } }, action: reject,\n      reply: { code: 550, enhanced: 5.7.1, text: a URL in the message is listed } }\n";

/// Sends a message with `headers` and `body`; the final reply.
fn send(s: &Setup, headers: &str, body: &str) -> String {
    let mut c = client(&s.gw, "192.0.2.99");
    c.expect(220);
    c.cmd("EHLO good-helo.test", 250);
    c.cmd("MAIL FROM:<a@mx.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
    c.send(&format!(
        "From: a@mx.test\r\nTo: b@example.com\r\nSubject: t\r\nMessage-ID: <t@x>\r\n{headers}\r\n{body}\r\n.\r\n"
    ));
    let r = c.reply().raw;
    c.cmd("QUIT", 221);
    r
}

#[test]
fn a_listed_url_domain_in_a_base64_body_is_found() {
    let s = setup(URIBL, URIBL_RULES);
    // "buy at https://www.b64-spam.test/now" in base64.
    let r = send(
        &s,
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n",
        "YnV5IGF0IGh0dHBzOi8vd3d3LmI2NC1zcGFtLnRlc3Qvbm93",
    );
    assert_eq!(r, "550 5.7.1 a URL in the message is listed\r\n");
    let f = facts(&s);
    assert_eq!(f["uribl.dbl"], serde_json::json!(["b64-spam.test"]), "{f}");
}

#[test]
fn a_listed_url_domain_in_a_quoted_printable_body_is_found() {
    let s = setup(URIBL, URIBL_RULES);
    let r = send(
        &s,
        "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n",
        "<a href=3D\"http://qp-sp=\r\nam.test/x\">click</a>",
    );
    assert_eq!(r, "550 5.7.1 a URL in the message is listed\r\n");
    // A clean URL passes.
    let clean = send(&s, "", "see https://clean.test/");
    assert!(clean.starts_with("250"), "{clean}");
}

const DOMAIN_RULES: &str = "rules:
  - { name: null-mx, stage: mail, when: { fact: { name: sender.domain, is: [null_mx, unknown] } }, action: reject,
      reply: { code: 550, enhanced: 5.1.8, text: Sender domain accepts no mail } }
  - { name: listed-helo, stage: mail, when: { fact: { name: rhsbl.helo.score, min: 1 } }, action: reject,
      reply: { code: 550, enhanced: 5.7.1, text: HELO name is listed } }
  - { name: helo-facts, stage: rcpt, when: { fact: { name: helo.fqdn, present: true } }, action: warn }
  - { name: listed-sender, stage: rcpt, when: { fact: { name: rhsbl.sender.score, min: 1 } }, action: reject }
";

#[test]
fn sender_domains_with_a_null_mx_or_no_records_are_refused() {
    let s = setup(URIBL, DOMAIN_RULES);
    let mut c = client(&s.gw, "192.0.2.99");
    c.expect(220);
    c.cmd("EHLO good-helo.test", 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@nullmx.test>", 550),
        "550 5.1.8 Sender domain accepts no mail\r\n"
    );
    c.cmd("MAIL FROM:<a@nodomain.test>", 550);
    c.cmd("MAIL FROM:<a@aonly.test>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@mx.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@spam-sender.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 550);
    c.cmd("QUIT", 221);
    let recs = audit_records(&s.audit, 5);
    let domain = |i: usize| recs[i]["facts"]["sender.domain"].clone();
    assert_eq!(domain(0), "null_mx", "{recs:?}");
    assert_eq!(domain(1), "unknown", "{recs:?}");
    assert_eq!(domain(2), "address", "{recs:?}");
    assert_eq!(domain(3), "mx", "{recs:?}");
}

#[test]
fn helo_names_give_their_facts() {
    let s = setup(URIBL, DOMAIN_RULES);
    let cases = [
        ("good-helo.test", "yes", "none", "yes", "no"),
        ("localhost", "no", "none", "no", "no"),
        ("nxhelo.test", "yes", "none", "no", "no"),
        ("[192.0.2.99]", "literal", "match", "literal", "no"),
        ("[192.0.2.98]", "literal", "mismatch", "literal", "no"),
        ("gate.test", "yes", "none", "no", "yes"),
    ];
    for (helo, ..) in cases {
        let mut c = client(&s.gw, "192.0.2.99");
        c.expect(220);
        assert!(rcpt(&mut c, helo, "a@mx.test").starts_with("250"), "{helo}");
        c.cmd("QUIT", 221);
    }
    let recs = audit_records(&s.audit, cases.len());
    let tx: Vec<&Value> = recs.iter().filter(|r| r["type"] == "transaction").collect();
    assert_eq!(tx.len(), cases.len(), "{recs:?}");
    for (rec, (helo, fqdn, literal, resolves, ours)) in tx.iter().zip(cases) {
        let f = &rec["facts"];
        assert_eq!(f["helo.fqdn"], fqdn, "{helo}: {f}");
        assert_eq!(f["helo.literal"], literal, "{helo}: {f}");
        assert_eq!(f["helo.resolves"], resolves, "{helo}: {f}");
        assert_eq!(f["helo.ours"], ours, "{helo}: {f}");
    }
    // A listed HELO name.
    let mut c = client(&s.gw, "192.0.2.99");
    c.expect(220);
    c.cmd("EHLO spammy-helo.test", 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@mx.test>", 550),
        "550 5.7.1 HELO name is listed\r\n"
    );
}

#[test]
fn the_example_rules_load_and_act() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rules/reputation.yaml"
    ))
    .unwrap();
    let s = setup(
        "  dnsbl:\n    zones:\n      - { name: zen, zone: bl.test, weight: 3 }\n\
         \x20     - { name: barracuda, zone: two.test, weight: 2 }\n\
         \x20     - { name: dnswl, zone: wl.test, weight: -5 }\n\
         \x20 rhsbl:\n    zones:\n      - { name: dbl, zone: dbl.test, weight: 3 }\n",
        &text,
    );
    let mut c = client(&s.gw, "192.0.2.1");
    c.expect(220);
    let r = rcpt(&mut c, "good-helo.test", "a@mx.test");
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    let mut ok = client(&s.gw, "192.0.2.99");
    ok.expect(220);
    assert!(rcpt(&mut ok, "good-helo.test", "a@mx.test").starts_with("250"));
}
