//! The upstream connection pool, over real sockets: idle upstream
//! connections are reused across client sessions, never by two sessions at
//! once, expire, are capped, are replaced unseen when dead, and are closed
//! with QUIT at shutdown.

mod common;

use common::{message, Client, Gateway, MockOptions, MockUpstream};
use std::time::{Duration, Instant};

/// A gateway relaying to `up` with `pool` as its `upstream.pool` settings.
fn gateway(up: &MockUpstream, pool: &str) -> Gateway {
    Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", pool: {{ {pool} }} }}\n",
        up.addr
    ))
}

/// Waits (up to 5 s) until `cond` holds; false if it never did.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Idle connections the gateway keeps now.
fn idle(gw: &Gateway) -> usize {
    gw.shared.upstreams().expect("upstream").idle_count()
}

/// One client session: EHLO, one message from `from`, QUIT.
fn one_session(gw: &Gateway, from: &str) {
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let reply = c.send_message(from, &["rcpt@example.com"], &message(from, "hello\r\n"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    c.cmd("QUIT", 221);
}

/// The value of a metric line (exact name and labels) in a scrape.
fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = gw.shared.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn two_sessions_in_a_row_share_one_upstream_connection() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    one_session(&gw, "first@example.com");
    assert!(eventually(|| idle(&gw) == 1), "connection kept idle");
    one_session(&gw, "second@example.com");
    let d = up.wait_for(2);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].from, "first@example.com");
    assert_eq!(d[1].from, "second@example.com");
    let cmds = up.commands();
    assert_eq!(cmds.len(), 1, "one upstream connection: {cmds:?}");
    let verbs: Vec<&str> = cmds[0].iter().map(|c| &c[..4]).collect();
    assert_eq!(
        verbs,
        ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"],
        "no second greeting, no QUIT between the sessions"
    );
    // The connection is the one the probe at start opened and left idle:
    // both sessions took it from the pool.
    assert_eq!(metric(&gw, "smtpgate_upstream_pool_hits_total"), 2.0);
    assert_eq!(metric(&gw, "smtpgate_upstream_pool_misses_total"), 0.0);
    assert!(eventually(
        || metric(&gw, "smtpgate_upstream_pool_idle") == 1.0
    ));
    // At shutdown the idle connection is closed politely.
    gw.shutdown();
    assert!(gw.wait_stopped(Duration::from_secs(10)));
    assert!(
        eventually(|| up.commands()[0].last().map(String::as_str) == Some("QUIT")),
        "{:?}",
        up.commands()
    );
}

#[test]
fn without_the_pool_each_session_opens_and_quits_its_own() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&up, "enabled: false");
    one_session(&gw, "first@example.com");
    one_session(&gw, "second@example.com");
    assert_eq!(up.wait_for(2).len(), 2);
    assert!(eventually(|| up.commands().len() == 2
        && up
            .commands()
            .iter()
            .all(|c| c.last().map(String::as_str) == Some("QUIT"))));
    assert_eq!(idle(&gw), 0);
}

#[test]
fn an_idle_connection_past_its_age_is_closed_and_the_next_session_connects_anew() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&up, "max_idle_age_s: 1");
    one_session(&gw, "first@example.com");
    assert!(eventually(|| idle(&gw) == 1));
    // The upkeep task closes it with QUIT once a second has passed.
    assert!(
        eventually(|| up.commands()[0].last().map(String::as_str) == Some("QUIT")),
        "{:?}",
        up.commands()
    );
    assert_eq!(idle(&gw), 0);
    one_session(&gw, "second@example.com");
    let d = up.wait_for(2);
    assert_eq!(d.len(), 2);
    assert_eq!((d[0].connection, d[1].connection), (0, 1));
    assert_eq!(
        metric(
            &gw,
            "smtpgate_upstream_pool_closed_total{reason=\"idle_age\"}"
        ),
        1.0
    );
}

#[test]
fn an_abandoned_transaction_is_reset_before_the_connection_is_kept() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<left@example.com>", 250);
    c.cmd("RCPT TO:<rcpt@example.com>", 250);
    c.cmd("QUIT", 221);
    assert!(eventually(|| idle(&gw) == 1));
    one_session(&gw, "second@example.com");
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].from, "second@example.com");
    assert_eq!(d[0].rcpts, ["rcpt@example.com"]);
    let cmds = up.commands();
    assert_eq!(cmds.len(), 1);
    let verbs: Vec<&str> = cmds[0].iter().map(|c| &c[..4]).collect();
    assert_eq!(
        verbs,
        ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA"]
    );
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced_before_the_client_notices() {
    // Like Postfix on its idle timeout: "421 4.4.2 ... timeout exceeded", close.
    let up = MockUpstream::start(MockOptions {
        idle_close: Some(Duration::from_millis(300)),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    one_session(&gw, "first@example.com");
    assert!(eventually(|| idle(&gw) == 1));
    std::thread::sleep(Duration::from_millis(700));
    one_session(&gw, "second@example.com");
    let d = up.wait_for(2);
    assert_eq!(d.len(), 2, "each message delivered once");
    assert_eq!((d[0].connection, d[1].connection), (0, 1));
    assert_eq!(metric(&gw, "smtpgate_upstream_pool_stale_total"), 1.0);
    // The dead connection got nothing after its last transaction.
    assert_eq!(up.commands()[0].last().map(|c| &c[..4]), Some("DATA"));
}

#[test]
fn a_pooled_connection_that_dies_at_mail_is_replaced_and_the_message_delivered_once() {
    // The connection looks fine when taken, then closes on the next MAIL
    // without a reply: the gateway must reconnect and send MAIL again.
    let up = MockUpstream::start(MockOptions {
        close_at_mail: Some(2),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    one_session(&gw, "first@example.com");
    assert!(eventually(|| idle(&gw) == 1));
    one_session(&gw, "second@example.com");
    let d = up.wait_for(2);
    std::thread::sleep(Duration::from_millis(100));
    let d2 = up.delivered();
    assert_eq!(d2.len(), 2, "no duplicate: {d2:?}");
    assert_eq!(d[1].from, "second@example.com");
    assert_eq!((d[0].connection, d[1].connection), (0, 1));
    assert_eq!(metric(&gw, "smtpgate_upstream_pool_stale_total"), 1.0);
}

#[test]
fn a_connection_that_said_421_is_never_kept() {
    let up = MockUpstream::start(MockOptions {
        data_reply: "421 4.3.2 mock.test shutting down".to_string(),
        ..MockOptions::default()
    });
    let gw = Gateway::with_upstream(&up, "");
    for from in ["first@example.com", "second@example.com"] {
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        let reply = c.send_message(from, &["rcpt@example.com"], &message("x", "x\r\n"));
        assert_eq!(reply.code, 451, "{}", reply.raw);
        c.cmd("QUIT", 221);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(idle(&gw), 0);
    }
    assert_eq!(up.commands().len(), 2, "a new connection each time");
}

#[test]
fn no_more_than_max_idle_connections_are_kept_per_server() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&up, "max_idle: 1");
    // Two sessions at once hold two upstream connections.
    let mut a = gw.client();
    let mut b = gw.client();
    for (c, from) in [(&mut a, "a@example.com"), (&mut b, "b@example.com")] {
        c.cmd("EHLO client.test", 250);
        let reply = c.send_message(from, &["rcpt@example.com"], &message("x", "x\r\n"));
        assert_eq!(reply.code, 250);
    }
    a.cmd("QUIT", 221);
    b.cmd("QUIT", 221);
    assert!(eventually(|| up
        .commands()
        .iter()
        .filter(|c| c.last().map(String::as_str) == Some("QUIT"))
        .count()
        == 1));
    assert_eq!(up.commands().len(), 2);
    assert_eq!(idle(&gw), 1);
    assert_eq!(
        metric(&gw, "smtpgate_upstream_pool_closed_total{reason=\"full\"}"),
        1.0
    );
}

/// Checks that one upstream connection's commands form a valid SMTP
/// dialogue: one EHLO, then transactions one after another (MAIL, RCPT...,
/// DATA or RSET), QUIT last. Two sessions on one connection at once would
/// interleave their transactions and break this.
fn assert_one_dialogue(cmds: &[String]) {
    assert!(cmds[0].starts_with("EHLO"), "{cmds:?}");
    let mut in_tx = false;
    for (i, c) in cmds.iter().enumerate().skip(1) {
        match &c[..4] {
            "MAIL" => {
                assert!(!in_tx, "MAIL inside a transaction at {i}: {cmds:?}");
                in_tx = true;
            }
            "RCPT" => assert!(in_tx, "RCPT outside a transaction at {i}: {cmds:?}"),
            "DATA" | "RSET" => in_tx = false,
            "QUIT" => assert_eq!(i, cmds.len() - 1, "{cmds:?}"),
            other => panic!("unexpected {other} at {i}: {cmds:?}"),
        }
    }
}

#[test]
fn concurrent_sessions_never_share_an_upstream_connection() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let addr = gw.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..5 {
                    let mut c = Client::connect(addr);
                    c.expect(220);
                    c.cmd("EHLO client.test", 250);
                    let from = format!("t{t}m{i}@example.com");
                    let reply =
                        c.send_message(&from, &["rcpt@example.com"], &message(&from, "x\r\n"));
                    assert_eq!(reply.code, 250, "{}", reply.raw);
                    c.cmd("QUIT", 221);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let d = up.wait_for(40);
    assert_eq!(d.len(), 40);
    let mut senders: Vec<&str> = d.iter().map(|m| m.from.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    assert_eq!(senders.len(), 40, "each message exactly once");
    let cmds = up.commands();
    for c in &cmds {
        assert_one_dialogue(c);
    }
    assert!(
        cmds.len() <= 20,
        "connections were reused: {} for 40 sessions",
        cmds.len()
    );
}
