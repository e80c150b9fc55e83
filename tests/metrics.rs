//! The metrics and health listener, scraped over real sockets: counters
//! after mail went through the gateway, `/healthz` before and during
//! shutdown, and the HTTP edge cases.

mod common;

use common::{message, rules_dir, rules_line, Gateway, MockOptions, MockUpstream};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends raw bytes as an HTTP request; returns (status code, whole response).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("a response, then close");
    let code = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
    (code, out)
}

/// `GET path`; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, raw) = http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

/// The value of one sample line (exact name and labels) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (up to 5 s) until `cond` holds.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

const RULES: &str = "rules:
  - name: no-spam
    stage: mail
    when: { sender: { regex: '^spam@' } }
    action: reject
  - name: tag-hello
    stage: data
    when: { header: { name: Subject, regex: 'hello' } }
    action: score
    score: 1
";

#[test]
fn a_scrape_after_mail_shows_exact_counts() {
    let up = MockUpstream::start(MockOptions::default());
    let dir = rules_dir(&[("10-test.yaml", RULES)]);
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\nmetrics: {{ addr: \"127.0.0.1:0\" }}\n{}",
        up.addr,
        rules_line(dir.path())
    ));
    let metrics = gw.metrics_addr.expect("metrics listener");

    // Session 1: two messages delivered.
    let bodies = [message("hello", "one\r\n"), message("other", "two\r\n")];
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    for body in &bodies {
        let r = c.send_message("a@example.com", &["b@example.com"], body);
        assert_eq!(r.code, 250, "{}", r.raw);
    }
    c.cmd("QUIT", 221);
    // Session 2: a sender the rules refuse.
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<spam@example.com>", 550);
    c.cmd("QUIT", 221);

    let (code, text) = get(metrics, "/metrics");
    assert_eq!(code, 200);
    let at =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        at("smtpgate_transactions_total{verdict=\"delivered\"}"),
        2.0
    );
    assert_eq!(at("smtpgate_transactions_total{verdict=\"rejected\"}"), 1.0);
    assert_eq!(at("smtpgate_transactions_total{verdict=\"aborted\"}"), 0.0);
    assert_eq!(
        at(&format!(
            "smtpgate_connections_total{{listener=\"{}\"}}",
            gw.addr
        )),
        2.0
    );
    // 220, EHLO, (MAIL, RCPT, final 250) x 2, 221 | 220, EHLO, 221
    assert_eq!(at("smtpgate_replies_total{class=\"2xx\"}"), 12.0);
    assert_eq!(at("smtpgate_replies_total{class=\"3xx\"}"), 2.0);
    assert_eq!(at("smtpgate_replies_total{class=\"4xx\"}"), 0.0);
    assert_eq!(at("smtpgate_replies_total{class=\"5xx\"}"), 1.0);
    assert_eq!(
        at("smtpgate_rule_hits_total{action=\"reject\",rule=\"no-spam\"}"),
        1.0
    );
    assert_eq!(
        at("smtpgate_rule_hits_total{action=\"score\",rule=\"tag-hello\"}"),
        1.0
    );
    let size: usize = bodies.iter().map(String::len).sum();
    assert_eq!(
        at("smtpgate_message_bytes_total{direction=\"received\"}"),
        size as f64
    );
    assert_eq!(
        at("smtpgate_message_bytes_total{direction=\"delivered\"}"),
        size as f64
    );
    // One upstream connection for both sessions' transactions.
    assert_eq!(
        at("smtpgate_upstream_latency_seconds_count{phase=\"connect\"}"),
        1.0
    );
    assert_eq!(
        at("smtpgate_upstream_latency_seconds_count{phase=\"mail\"}"),
        2.0
    );
    assert_eq!(
        at("smtpgate_upstream_latency_seconds_count{phase=\"data\"}"),
        2.0
    );
    assert_eq!(
        at("smtpgate_upstream_latency_seconds_bucket{phase=\"data\",le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(at("smtpgate_upstream_errors_total{kind=\"connect\"}"), 0.0);
    // The probe at start opened it and left it idle: the first session
    // took it from the pool.
    assert_eq!(at("smtpgate_upstream_pool_misses_total"), 0.0);
    assert_eq!(at("smtpgate_upstream_pool_hits_total"), 1.0);
    assert!(text.contains("# TYPE smtpgate_upstream_latency_seconds histogram\n"));
    assert!(text.contains("# HELP smtpgate_transactions_total "));
    assert!(eventually(|| sample(
        &get(metrics, "/metrics").1,
        "smtpgate_sessions"
    ) == Some(0.0)));
}

#[test]
fn upstream_failures_are_counted_by_kind() {
    let dead = common::mock_upstream::dead_addr();
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{dead}\" }}\nmetrics: {{ addr: \"127.0.0.1:0\" }}\n"
    ));
    let connect_errors = || {
        let (_, text) = get(gw.metrics_addr.unwrap(), "/metrics");
        sample(&text, "smtpgate_upstream_errors_total{kind=\"connect\"}").unwrap_or(0.0)
    };
    // The probe at start failed to connect (and may try again meanwhile).
    let before = connect_errors();
    assert!(before >= 1.0, "{before}");
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 451);
    c.cmd("QUIT", 221);
    let after = connect_errors();
    assert!(after >= before + 1.0, "{before} then {after}");
    let (_, text) = get(gw.metrics_addr.unwrap(), "/metrics");
    assert_eq!(
        sample(&text, "smtpgate_transactions_total{verdict=\"tempfailed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "smtpgate_replies_total{class=\"4xx\"}"),
        Some(1.0)
    );
}

#[test]
fn healthz_says_ok_then_503_while_the_gateway_drains() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\nmetrics: {{ addr: \"127.0.0.1:0\" }}\n",
        up.addr
    ));
    let metrics = gw.metrics_addr.unwrap();
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    // A transaction in flight keeps the gateway draining after shutdown.
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    gw.shutdown();
    assert_eq!(
        get(metrics, "/healthz"),
        (503, "shutting down\n".to_string())
    );
    // The load balancer may still scrape while the gateway drains.
    assert_eq!(get(metrics, "/metrics").0, 200);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
    c.send(&message("x", "x\r\n"));
    c.send(".\r\n");
    assert_eq!(c.reply().code, 250, "the transaction in flight finishes");
    assert!(gw.wait_stopped(Duration::from_secs(10)));
    assert!(
        TcpStream::connect(metrics).is_err(),
        "the listener is closed once the gateway stopped"
    );
}

#[test]
fn only_get_and_head_of_two_paths_are_answered() {
    let gw = Gateway::start("metrics: { addr: \"127.0.0.1:0\" }\n");
    let m = gw.metrics_addr.unwrap();
    assert_eq!(get(m, "/nothing").0, 404);
    assert_eq!(get(m, "/healthz?probe=1").0, 200);
    let (code, raw) = http(m, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 405);
    assert!(raw.contains("\r\nAllow: GET, HEAD\r\n"), "{raw}");
    let (code, raw) = http(m, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200);
    assert!(raw.ends_with("\r\n\r\n"), "no body for HEAD: {raw}");
    assert!(
        raw.contains("Content-Type: text/plain; version=0.0.4"),
        "{raw}"
    );
    assert_eq!(http(m, b"nonsense\r\n\r\n").0, 400);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http(m, &huge).0, 431);
}

#[test]
fn tls_handshakes_and_logins_are_counted() {
    use base64::Engine as _;
    let pki = common::certs::Pki::new("gate");
    let users = pki.dir.path().join("users.yaml");
    let hash = bcrypt::hash("builder", 4).unwrap();
    std::fs::write(
        &users,
        format!(
            "users:\n  - {{ name: bob, password_hash: \"{hash}\", senders: [bob@example.com] }}\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "hostname: gate.test\n{}auth: {{ users_file: \"{}\" }}\nmetrics: {{ addr: \"127.0.0.1:0\" }}\n",
        pki.tls_yaml(),
        users.display()
    ));
    // A handshake that fails: not TLS at all after the 220.
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("STARTTLS", 220);
    c.send("this is not a TLS ClientHello\r\n\r\n");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(
        !rest.starts_with(b"2"),
        "no SMTP reply after a bad handshake"
    );
    // One that works, then a bad and a good login.
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let mut t = common::tls_client::TlsClient::starttls(c, pki.client_config());
    t.cmd("EHLO client.test", 250);
    let token = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0bob\0{password}"))
    };
    t.cmd(&format!("AUTH PLAIN {}", token("wrong")), 535);
    t.cmd(&format!("AUTH PLAIN {}", token("builder")), 235);
    t.cmd("QUIT", 221);
    let (_, text) = get(gw.metrics_addr.unwrap(), "/metrics");
    for (series, want) in [
        ("smtpgate_tls_handshakes_total{result=\"ok\"}", 1.0),
        ("smtpgate_tls_handshakes_total{result=\"failed\"}", 1.0),
        ("smtpgate_auth_total{result=\"success\"}", 1.0),
        ("smtpgate_auth_total{result=\"failure\"}", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
}
