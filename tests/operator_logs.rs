//! The log an operator reads during an outage, from the real binary: an
//! upstream's state changes are logged once each, with a count, not one
//! line per refused session; with a single server nothing is "skipped";
//! the session line counts transactions as the audit trail does.

mod common;

use common::binary::Binary;
use common::mock_upstream::dead_addr;
use common::{audit_records, MockOptions, MockUpstream};
use std::collections::HashMap;

fn occurrences(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

#[test]
fn an_upstream_outage_is_logged_when_it_starts_and_ends_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let upstream = dead_addr();
    let gw = Binary::start(
        dir.path(),
        &format!("upstream: {{ addr: \"{upstream}\", retry_after_s: 60 }}\n"),
    );
    for _ in 0..5 {
        let mut c = gw.client();
        c.cmd("MAIL FROM:<a@example.com>", 451);
        c.cmd("QUIT", 221);
    }
    gw.wait_log("is down");
    let log = gw.log_text();
    assert_eq!(occurrences(&log, "is down"), 1, "{log}");
    assert!(log.contains("it is the only server"), "{log}");
    assert!(!log.contains("skipping"), "{log}");
    assert_eq!(occurrences(&log, "upstream unavailable"), 0, "{log}");
    // The other warning is the probe's at start: what the upstream offers
    // is not known yet.
    assert_eq!(occurrences(&log, "extensions not known yet"), 1, "{log}");
    assert_eq!(occurrences(&log, "WARN"), 2, "{log}");

    // It comes back where it was (after the probe's first try failed):
    // one line, with what failed meanwhile.
    gw.wait_log("extensions not known yet");
    let _up = MockUpstream::start_on(upstream, MockOptions::default());
    let mut c = gw.client();
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("QUIT", 221);
    gw.wait_log("is back");
    let log = gw.log_text();
    assert_eq!(occurrences(&log, "is back"), 1, "{log}");
    // The five sessions' connections, and the probe's (it tries again
    // with a growing pause while the server is down).
    let failed: u64 = log
        .split(" connection(s) to it failed")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of failed connections in\n{log}"));
    assert!(failed >= 6, "{failed}:\n{log}");
}

#[test]
fn the_session_line_counts_transactions_as_the_audit_trail_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let up = MockUpstream::start(MockOptions {
        rcpt_replies: HashMap::from([(
            "nobody@example.com".to_string(),
            "550 5.1.1 No such user".to_string(),
        )]),
        ..MockOptions::default()
    });
    let audit = dir.path().join("audit.jsonl");
    let gw = Binary::start(
        dir.path(),
        &format!(
            "upstream: {{ addr: \"{}\" }}\naudit: {{ path: \"{}\" }}\n",
            up.addr,
            audit.display()
        ),
    );
    let mut c = gw.client();
    // The only recipient is refused by the upstream: no message, but a
    // transaction all the same.
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<nobody@example.com>", 550);
    c.cmd("DATA", 554);
    c.cmd("QUIT", 221);
    gw.wait_log("transactions=");
    // The start-up probe's connection is the first record.
    let records = audit_records(&audit, 2);
    let transactions = records.iter().filter(|r| r["type"] == "transaction");
    assert_eq!(transactions.count(), 1, "{records:?}");
    let log = gw.log_text();
    assert!(log.contains("transactions=1 "), "{log}");
}
