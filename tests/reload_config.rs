//! SIGHUP re-reads the whole configuration file of the real binary:
//! listeners added and removed, limits and the upstream changed for new
//! sessions while sessions in flight keep theirs, a broken file refused
//! whole (the log names file and line, the failure is counted), and a
//! setting that needs a restart named in a warning.

mod common;

use common::binary::Binary;
use common::unbound::free_port;
use common::{message, rules_line, Client, MockOptions, MockUpstream};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A loopback address with a free port.
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Writes the gateway's configuration: the listeners, then `extra`.
fn write_config(dir: &Path, listen: &[SocketAddr], extra: &str) {
    let listen: Vec<String> = listen
        .iter()
        .map(|a| format!("{{ addr: \"{a}\" }}"))
        .collect();
    std::fs::write(
        dir.join("gateway.yaml"),
        format!(
            "hostname: gate.test\nlisten: [{}]\nspool_dir: \"{}\"\n{}{extra}",
            listen.join(", "),
            dir.join("spool").display(),
            rules_line(&dir.join("rules"))
        ),
    )
    .unwrap();
}

/// A temporary directory with an empty rules directory.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    dir
}

/// Sends SIGHUP and waits until the `n`th log line containing `text`.
fn hup_until(gw: &Binary, text: &str, n: usize) {
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.log_text().matches(text).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {n}th {text:?} in log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const RELOADED: &str = "reload: configuration reloaded from";
const REFUSED: &str = "reload: the new configuration is refused";

/// A session on `addr`, greeted and past EHLO.
fn session(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    c
}

/// The body of `GET /metrics` on `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// How many recipients a new MAIL transaction on `c` gets accepted, trying
/// `tries` of them (RSET after).
fn recipients_accepted(c: &mut Client, tries: usize) -> usize {
    c.cmd("MAIL FROM:<a@x.test>", 250);
    let mut ok = 0;
    for i in 0..tries {
        c.send(&format!("RCPT TO:<r{i}@example.com>\r\n"));
        if c.reply().code == 250 {
            ok += 1;
        }
    }
    c.cmd("RSET", 250);
    ok
}

#[test]
fn sighup_adds_a_listener_and_removes_one_whose_session_finishes() {
    let dir = workdir();
    let gw = Binary::start(dir.path(), "");
    let first = gw.addr;
    let second = free_addr();

    write_config(dir.path(), &[first, second], "");
    hup_until(&gw, RELOADED, 1);
    let mut c = session(second);
    let r = c.send_message("a@x.test", &["b@example.com"], &message("new", "x\r\n"));
    assert_eq!(r.code, 250, "the added listener answers SMTP");
    c.cmd("QUIT", 221);
    session(first).cmd("QUIT", 221);

    // A transaction open on the listener about to be removed.
    let mut open = session(first);
    open.cmd("MAIL FROM:<a@x.test>", 250);
    open.cmd("RCPT TO:<b@example.com>", 250);
    write_config(dir.path(), &[second], "");
    hup_until(&gw, RELOADED, 2);
    gw.wait_log(&format!("reload: stopped listening on {first}"));
    assert!(
        TcpStream::connect(first).is_err(),
        "a removed listener refuses new connections"
    );
    open.cmd("DATA", 354);
    open.send(&message("in flight", "x\r\n"));
    open.send(".\r\n");
    assert_eq!(open.reply().code, 250, "the session in flight finishes");
    open.cmd("QUIT", 221);
    session(second).cmd("QUIT", 221);
}

#[test]
fn a_changed_limit_applies_to_new_sessions_while_open_ones_keep_theirs() {
    let dir = workdir();
    let gw = Binary::start(dir.path(), "limits: { max_recipients: 3 }\n");
    let mut old = gw.client();
    assert_eq!(recipients_accepted(&mut old, 4), 3);

    write_config(dir.path(), &[gw.addr], "limits: { max_recipients: 1 }\n");
    hup_until(&gw, RELOADED, 1);
    let mut new = gw.client();
    assert_eq!(
        recipients_accepted(&mut new, 4),
        1,
        "new session: new limit"
    );
    assert_eq!(
        recipients_accepted(&mut old, 4),
        3,
        "open session: the limit it started with"
    );
}

#[test]
fn a_broken_configuration_is_refused_whole_and_counted() {
    let dir = workdir();
    let metrics = free_addr();
    let good = format!("metrics: {{ addr: \"{metrics}\" }}\nlimits: {{ max_recipients: 1 }}\n");
    let gw = Binary::start(dir.path(), &good);
    let file = dir.path().join("gateway.yaml").display().to_string();

    // Bad YAML on line 6 (after hostname, listen, spool, rules, metrics).
    write_config(
        dir.path(),
        &[gw.addr],
        &format!("metrics: {{ addr: \"{metrics}\" }}\nlimits: max_recipients: 7\n"),
    );
    hup_until(&gw, REFUSED, 1);
    let log = gw.log_text();
    assert!(log.contains(&format!("{file}:6: ")), "{log}");
    let text = scrape(metrics);
    assert!(
        text.contains("smtpgate_config_reload_failures_total{reason=\"invalid\"} 1\n"),
        "{text}"
    );
    assert_eq!(recipients_accepted(&mut gw.client(), 2), 1, "old config");

    // An invalid value: the line and the reason.
    write_config(
        dir.path(),
        &[gw.addr],
        &format!("metrics: {{ addr: \"{metrics}\" }}\nlimits:\n  max_recipients: 0\n"),
    );
    hup_until(&gw, REFUSED, 2);
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "{file}:7: limits.max_recipients: must be at least 1"
        )),
        "{log}"
    );
    assert!(
        scrape(metrics).contains("smtpgate_config_reload_failures_total{reason=\"invalid\"} 2\n")
    );
    assert_eq!(recipients_accepted(&mut gw.client(), 2), 1, "old config");

    // A listener that cannot be bound refuses the whole file too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    write_config(
        dir.path(),
        &[gw.addr, busy],
        &format!("metrics: {{ addr: \"{metrics}\" }}\nlimits: {{ max_recipients: 2 }}\n"),
    );
    hup_until(&gw, REFUSED, 3);
    assert!(
        gw.log_text().contains(&format!("cannot listen on {busy}")),
        "{}",
        gw.log_text()
    );
    assert_eq!(recipients_accepted(&mut gw.client(), 2), 1, "old config");

    // Fixed, it applies and is counted as a reload.
    write_config(
        dir.path(),
        &[gw.addr],
        &format!("metrics: {{ addr: \"{metrics}\" }}\nlimits: {{ max_recipients: 2 }}\n"),
    );
    hup_until(&gw, RELOADED, 1);
    assert_eq!(recipients_accepted(&mut gw.client(), 3), 2, "new config");
    let text = scrape(metrics);
    assert!(text.contains("smtpgate_config_reloads_total 1\n"), "{text}");
    assert!(text.contains("smtpgate_config_reload_failures_total{reason=\"invalid\"} 3\n"));
}

#[test]
fn a_setting_that_needs_a_restart_is_named_and_the_rest_applies() {
    let dir = workdir();
    let metrics = free_addr();
    let gw = Binary::start(
        dir.path(),
        &format!("metrics: {{ addr: \"{metrics}\" }}\nlimits: {{ max_recipients: 1 }}\n"),
    );
    let moved = free_addr();
    write_config(
        dir.path(),
        &[gw.addr],
        &format!("metrics: {{ addr: \"{moved}\" }}\nlimits: {{ max_recipients: 2 }}\nlog: {{ level: debug }}\n"),
    );
    hup_until(&gw, RELOADED, 1);
    let log = gw.log_text();
    let warned = |setting: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(setting) && l.contains("needs a restart"))
    };
    assert!(
        warned(&format!("metrics changed ({metrics} -> {moved})")),
        "{log}"
    );
    assert!(warned("log.level changed (info -> debug)"), "{log}");
    assert!(scrape(metrics).contains("smtpgate_config_reloads_total 1\n"));
    assert_eq!(
        recipients_accepted(&mut gw.client(), 3),
        2,
        "the rest applied"
    );
}

#[test]
fn a_changed_upstream_takes_the_new_sessions() {
    let dir = workdir();
    let one = MockUpstream::start(MockOptions::default());
    let two = MockUpstream::start(MockOptions::default());
    let upstream = |m: &MockUpstream| format!("upstream: {{ addr: \"{}\" }}\n", m.addr);
    let gw = Binary::start(dir.path(), &upstream(&one));
    let mut c = gw.client();
    let r = c.send_message("a@x.test", &["b@example.com"], &message("first", "x\r\n"));
    assert_eq!(r.code, 250);
    assert_eq!(one.wait_for(1).len(), 1);
    // Open across the reload: stays with the upstream it started with.
    let mut old = gw.client();

    write_config(dir.path(), &[gw.addr], &upstream(&two));
    hup_until(&gw, RELOADED, 1);
    let mut c = gw.client();
    let r = c.send_message("a@x.test", &["b@example.com"], &message("second", "x\r\n"));
    assert_eq!(r.code, 250);
    let at_two = two.wait_for(1);
    assert!(String::from_utf8_lossy(&at_two[0].data).contains("Subject: second"));

    let r = old.send_message("a@x.test", &["b@example.com"], &message("old", "x\r\n"));
    assert_eq!(r.code, 250);
    let at_one = one.wait_for(2);
    assert!(String::from_utf8_lossy(&at_one[1].data).contains("Subject: old"));
    assert_eq!(two.delivered().len(), 1);
}

#[test]
fn a_changed_per_ip_limit_counts_the_connections_open_across_the_reload() {
    let dir = workdir();
    let protection = |max: u32| {
        format!("protection: {{ exempt_networks: [], max_connections_per_ip: {max} }}\n")
    };
    let gw = Binary::start(dir.path(), &protection(2));
    // The start-up probe's connection may still count for a moment.
    let greeted = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = Client::connect(gw.addr);
            if c.reply().code == 220 {
                return c;
            }
            assert!(Instant::now() < deadline, "never admitted");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let _one = greeted();
    let _two = greeted();
    let mut third = Client::connect(gw.addr);
    assert_eq!(third.reply().code, 421, "over the limit of 2");

    write_config(dir.path(), &[gw.addr], &protection(3));
    hup_until(&gw, RELOADED, 1);
    let mut three = Client::connect(gw.addr);
    assert_eq!(three.reply().code, 220, "the new limit of 3");
    // The two sessions open since before the reload still count.
    let mut fourth = Client::connect(gw.addr);
    let r = fourth.reply();
    assert_eq!(r.code, 421, "{}", r.raw);
}

#[test]
fn a_kept_listener_greets_new_sessions_with_the_new_settings() {
    let dir = workdir();
    let gw = Binary::start(dir.path(), "");
    let mut old = Client::connect(gw.addr);
    assert!(old.reply().raw.starts_with("220 gate.test "));

    let text = std::fs::read_to_string(dir.path().join("gateway.yaml")).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        text.replace("hostname: gate.test", "hostname: renamed.test"),
    )
    .unwrap();
    hup_until(&gw, RELOADED, 1);
    let mut new = Client::connect(gw.addr);
    assert!(new.reply().raw.starts_with("220 renamed.test "));
    assert!(old.cmd("EHLO c.test", 250).starts_with("250-gate.test"));
    assert!(new.cmd("EHLO c.test", 250).starts_with("250-renamed.test"));
}
