//! A new greeting starts from what the connect stage left: the helo-stage
//! rules of a client that sends EHLO, STARTTLS, EHLO (every TLS client)
//! count once, and so do those of a client that greets twice.

mod common;

use common::certs::Pki;
use common::tls_client::TlsClient;
use common::{message, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream};

const RULES: &str = "rules:
  - { name: connect-point, stage: connect, action: score, score: 1 }
  - { name: helo-points, stage: helo, when: { helo: { regex: 'client' } }, action: score, score: 3 }
scoring: { tag_at: 1 }
";

struct Setup {
    pki: Pki,
    up: MockUpstream,
    gw: Gateway,
    _rules: tempfile::TempDir,
}

fn setup() -> Setup {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[("r.yaml", RULES)]);
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}{}\
         listen:\n  - {{ addr: \"127.0.0.1:0\", starttls: optional }}\n",
        up.addr,
        pki.tls_yaml(),
        rules_line(rules.path()),
    ));
    Setup {
        pki,
        up,
        gw,
        _rules: rules,
    }
}

/// The `X-Spam-Score` header of the message the upstream received.
fn score_header(up: &MockUpstream) -> String {
    let got = up.wait_for(1);
    let text = String::from_utf8_lossy(&got[0].data).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("X-Spam-Score: "))
        .unwrap_or_else(|| panic!("no X-Spam-Score in {text}"))
        .to_string()
}

#[test]
fn a_helo_score_counts_once_for_ehlo_starttls_ehlo() {
    let s = setup();
    let mut c = Client::connect(s.gw.addr);
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    let mut t = TlsClient::starttls(c, s.pki.client_config());
    t.cmd("EHLO client.test", 250);
    let r = t.send_message("a@example.com", &["b@example.com"], &message("s", "x\r\n"));
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(score_header(&s.up), "4");
}

#[test]
fn a_helo_score_counts_once_for_a_client_that_greets_twice() {
    let s = setup();
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("EHLO client.test", 250);
    let r = c.send_message("a@example.com", &["b@example.com"], &message("s", "x\r\n"));
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(score_header(&s.up), "4");
}

#[test]
fn a_greeting_that_no_longer_matches_takes_its_points_away() {
    let s = setup();
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("EHLO other.test", 250);
    let r = c.send_message("a@example.com", &["b@example.com"], &message("s", "x\r\n"));
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(score_header(&s.up), "1");
}
