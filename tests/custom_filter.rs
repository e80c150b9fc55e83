//! `examples/custom_filter.rs` end to end: its filter and its chain (the
//! filter, then the YAML rules) run by the gateway over real sockets; a
//! reload swaps the rules and keeps the custom filter; a filter that
//! panics fails closed with 451 4.3.0 and the session goes on.

mod common;

#[path = "../examples/custom_filter.rs"]
#[allow(dead_code)]
mod custom_filter;

use common::{rules_dir, rules_line, strip_received, Gateway, MockOptions, MockUpstream};
use custom_filter::{build_chain, RateLimit};
use smtpgate::config::Config;
use smtpgate::filter::{Context, Filter, FilterChain, Verdict};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_example_filter_runs_with_the_rules_and_survives_a_reload() {
    let up = MockUpstream::start(MockOptions::default());
    let dir = rules_dir(&[(
        "r.yaml",
        "rules:
  - { name: no-bulk, stage: mail, when: { sender: { regex: '^bulk@' } }, action: reject }
  - { name: mismatch, stage: data, when: { score: { min: 1 } }, action: add_header, header: { name: X-Score, value: '{score}' } }
",
    )]);
    let config = Config::from_yaml(
        &format!(
            "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}",
            up.addr,
            rules_line(dir.path())
        ),
        "t.yaml",
    )
    .unwrap();
    let chain = build_chain(
        &config,
        Arc::new(RateLimit::new(3, Duration::from_secs(60))),
    )
    .unwrap();
    assert_eq!(chain.len(), 2);
    let gw = Gateway::start_with_chain(config, chain);

    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    // 1: the rules still apply.
    c.cmd("MAIL FROM:<bulk@x.test>", 550);
    // 2: envelope and From differ: the custom filter's header and score,
    // which a YAML rule then sees.
    let msg = "From: Someone <boss@other.test>\r\nSubject: hi\r\n\r\nx\r\n";
    let r = c.send_message("a@x.test", &["b@example.com"], msg);
    assert_eq!(r.code, 250);
    let d = up.wait_for(1);
    let text = String::from_utf8_lossy(strip_received(&d[0].data)).to_string();
    assert!(
        text.starts_with("X-Envelope-Mismatch: x.test != other.test\r\nX-Score: 1\r\n"),
        "{text}"
    );
    // 3: the third transaction is the last one allowed this minute.
    c.cmd("MAIL FROM:<a@x.test>", 250);
    c.cmd("RSET", 250);

    // Reload with new rules: the rate limiter (and its counters) stays.
    std::fs::write(dir.path().join("r.yaml"), "rules: []\n").unwrap();
    smtpgate::reload::reload(&gw.shared).unwrap();
    assert_eq!(gw.shared.filters().len(), 2);
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<bulk@x.test>", 451);
    assert_eq!(
        r,
        "451 4.7.1 Too many messages from your address, slow down\r\n"
    );
}

struct Broken;

impl Filter for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn rcpt(&self, _ctx: &mut Context, rcpt: &smtpgate::proto::Recipient) -> Verdict {
        if rcpt.to_string().starts_with("boom@") {
            panic!("this filter has a bug");
        }
        Verdict::Continue
    }
}

#[test]
fn a_panicking_filter_fails_closed_and_the_session_goes_on() {
    let up = MockUpstream::start(MockOptions::default());
    let config = Config::from_yaml(
        &format!("upstream: {{ addr: \"{}\" }}\n", up.addr),
        "t.yaml",
    )
    .unwrap();
    let mut chain = FilterChain::new();
    chain.push(Arc::new(Broken));
    let gw = Gateway::start_with_chain(config, chain);
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@x.test>", 250);
    let r = c.cmd("RCPT TO:<boom@example.com>", 451);
    assert_eq!(
        r,
        "451 4.3.0 Local error in processing, try again later\r\n"
    );
    c.cmd("RCPT TO:<fine@example.com>", 250);
    c.cmd("DATA", 354);
    c.send("Subject: s\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(up.wait_for(1)[0].rcpts, vec!["fine@example.com"]);
}
