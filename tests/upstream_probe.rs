//! What the upstream offers is learned before the first message: a probe
//! at start (and when a reload builds a new upstream pool) connects, reads
//! its EHLO and QUITs, so the very first clients are offered DSN and
//! SMTPUTF8 exactly when the upstream offers them — and an upstream down
//! at start is probed again until it answers.

mod common;

use common::binary::Binary;
use common::mock_upstream::dead_addr;
use common::{Client, Gateway, MockOptions, MockUpstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A mock upstream that offers `extra` in its EHLO reply.
fn offering(extra: &[&str]) -> MockOptions {
    MockOptions {
        ehlo_extra: extra.iter().map(|e| e.to_string()).collect(),
        ..MockOptions::default()
    }
}

/// The keywords of an EHLO reply (every line after the first).
fn keywords(ehlo: &str) -> Vec<String> {
    ehlo.lines()
        .skip(1)
        .filter_map(|l| l.get(4..))
        .map(|k| k.split(' ').next().unwrap_or("").to_string())
        .collect()
}

/// What a new client of `addr` is offered in EHLO.
fn offered(addr: SocketAddr) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.expect(220);
    let ehlo = c.cmd("EHLO client.test", 250);
    c.cmd("QUIT", 221);
    keywords(&ehlo)
}

/// Whether any connection to `mock` carried a MAIL command.
fn mail_seen(mock: &MockUpstream) -> bool {
    mock.all_commands()
        .concat()
        .iter()
        .any(|c| c.to_ascii_uppercase().starts_with("MAIL"))
}

/// Waits (up to 60 s, the longest pause between probes) until `done`.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_first_client_is_offered_dsn_and_smtputf8_when_the_upstream_offers_them() {
    let up = MockUpstream::start(offering(&["DSN", "SMTPUTF8"]));
    let gw = Gateway::with_upstream(&up, "");
    let words = offered(gw.addr);
    assert!(words.iter().any(|w| w == "DSN"), "{words:?}");
    assert!(words.iter().any(|w| w == "SMTPUTF8"), "{words:?}");
    assert!(!mail_seen(&up), "no mail was needed to learn it");
    // The probe's connection greeted and left; no client's is counted.
    assert!(up.commands().is_empty(), "{:?}", up.all_commands());
    let probe = &up.all_commands()[0];
    assert!(probe[0].starts_with("EHLO gate.test"), "{probe:?}");
}

#[test]
fn the_first_client_is_not_offered_them_when_the_upstream_does_not() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let words = offered(gw.addr);
    assert!(!words.iter().any(|w| w == "DSN"), "{words:?}");
    assert!(!words.iter().any(|w| w == "SMTPUTF8"), "{words:?}");
    // Not for want of asking: the upstream was probed.
    assert!(!up.all_commands().is_empty());
    assert!(!mail_seen(&up));
}

#[test]
fn an_idle_pool_keeps_the_probes_connection_for_the_first_message() {
    let up = MockUpstream::start(offering(&["DSN"]));
    let gw = Gateway::with_upstream(&up, "");
    assert_eq!(gw.shared.upstreams().unwrap().idle_count(), 1);
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@example.com",
        &["b@example.com"],
        &common::message("kept", "x\r\n"),
    );
    assert_eq!(r.code, 250);
    assert_eq!(up.wait_for(1).len(), 1);
    assert_eq!(up.all_commands().len(), 1, "one connection for both");
}

#[test]
fn an_upstream_down_at_start_is_probed_until_it_answers() {
    let addr = dead_addr();
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{addr}\", pool: {{ enabled: false }} }}\n"
    ));
    let words = offered(gw.addr);
    assert!(!words.iter().any(|w| w == "DSN"), "{words:?}");
    let up = MockUpstream::start_on(addr, offering(&["DSN", "SMTPUTF8"]));
    assert!(
        eventually(|| offered(gw.addr).iter().any(|w| w == "DSN")),
        "the upstream was not probed again"
    );
    assert!(offered(gw.addr).iter().any(|w| w == "SMTPUTF8"));
    assert!(!mail_seen(&up), "no mail was needed to learn it");
}

/// The binary's configuration: `upstream` at `addr`, no idle pool.
fn upstream_at(addr: SocketAddr) -> String {
    format!("upstream: {{ addr: \"{addr}\", pool: {{ enabled: false }} }}\n")
}

#[test]
fn the_binary_warns_once_while_the_upstream_is_down_and_logs_what_it_learns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let addr = dead_addr();
    let gw = Binary::start(dir.path(), &upstream_at(addr));
    gw.wait_log("extensions not known yet");
    let _up = MockUpstream::start_on(addr, offering(&["DSN", "SMTPUTF8"]));
    gw.wait_log(&format!("upstream {addr} offers: DSN SMTPUTF8 8BITMIME"));
    let log = gw.log_text();
    assert_eq!(log.matches("extensions not known yet").count(), 1, "{log}");
    assert!(
        log.contains("DSN and SMTPUTF8 are not offered until a connection succeeds"),
        "{log}"
    );
    assert!(offered(gw.addr).iter().any(|w| w == "DSN"));
}

#[test]
fn after_sighup_to_an_upstream_without_dsn_new_clients_are_not_offered_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let with = MockUpstream::start(offering(&["DSN"]));
    let without = MockUpstream::start(MockOptions::default());
    let gw = Binary::start(dir.path(), &upstream_at(with.addr));
    gw.wait_log(&format!("upstream {} offers: DSN", with.addr));
    assert!(offered(gw.addr).iter().any(|w| w == "DSN"));
    assert_eq!(with.all_commands().len(), 1, "the probe's connection");

    // A reload that keeps the upstream settings keeps the pool and what
    // it knows: no new probe.
    gw.signal("HUP");
    gw.wait_log("reload: configuration reloaded from");
    assert!(offered(gw.addr).iter().any(|w| w == "DSN"));

    let config = dir.path().join("gateway.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace(&with.addr.to_string(), &without.addr.to_string());
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    gw.signal("HUP");
    gw.wait_log(&format!("upstream {} offers: ", without.addr));
    assert!(!offered(gw.addr).iter().any(|w| w == "DSN"));
    assert!(!mail_seen(&without), "no mail was needed to learn it");
    assert_eq!(with.all_commands().len(), 1, "probed once, at start");
    let log = gw.log_text();
    assert_eq!(
        log.matches(&format!("upstream {} offers:", with.addr))
            .count(),
        1,
        "{log}"
    );
}
