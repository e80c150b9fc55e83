//! PROXY protocol listeners over real sockets: the client a v1 or v2 header
//! names is what relay control, rules, the audit trail and the `Received:`
//! header see; a connection from an untrusted address, or with a bad, late
//! or missing header, is closed without a greeting; the header comes before
//! the TLS handshake of an implicit-TLS listener.

mod common;

use common::certs::Pki;
use common::tls_client::TlsClient;
use common::{audit_records, message, rules_dir, rules_line, Client, Gateway, MockOptions};
use common::{MockUpstream, WireReply};
use smtpgate::proto::proxy::{encode_v1, encode_v2, Addresses};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The client `ip:port` a proxy on `gate` would name.
fn addresses(client: &str, gate: SocketAddr) -> Addresses {
    Addresses {
        source: client.parse().unwrap(),
        destination: gate,
    }
}

/// Connects, sends `header`, and reads the greeting.
fn proxied(gate: SocketAddr, header: &[u8]) -> Client {
    let mut c = Client::connect(gate);
    c.send_bytes(header);
    c.expect(220);
    c
}

/// Everything the server sends on a connection that starts with `bytes`,
/// until it closes (or 10 s pass).
fn answer_to(gate: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(gate).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).unwrap();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (got, started.elapsed())
}

/// A gateway with one PROXY listener trusting `trusted`, relaying to `mock`.
fn gateway(mock: &MockUpstream, trusted: &str, extra: &str) -> Gateway {
    Gateway::with_upstream(
        mock,
        &format!(
            "listen:\n  - {{ addr: \"127.0.0.1:0\", proxy_protocol: true }}\n\
             proxy_protocol: {{ trusted_proxies: [\"{trusted}\"], timeout_s: 1 }}\n\
             relay: {{ local_domains: [example.com] }}\n{extra}"
        ),
    )
}

#[test]
fn the_client_named_by_the_header_is_what_everything_sees() {
    let mock = MockUpstream::start(MockOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gate = gateway(
        &mock,
        "127.0.0.1",
        &format!("audit: {{ path: \"{}\" }}\n", audit.display()),
    );
    // v2 with a TLV behind the addresses, then v1: both name 192.0.2.7.
    let headers = [
        encode_v2(
            Some(&addresses("192.0.2.7:40001", gate.addr)),
            b"\x05\x00\x04abcd",
        ),
        encode_v1(Some(&addresses("192.0.2.7:40002", gate.addr))),
    ];
    for (i, header) in headers.iter().enumerate() {
        let mut c = proxied(gate.addr, header);
        c.cmd("EHLO client.example", 250);
        let r = c.send_message(
            "a@example.net",
            &["b@example.com"],
            &message(&format!("proxied-{i}"), "hello\r\n"),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
        c.cmd("QUIT", 221);
    }
    let delivered = mock.wait_for(2);
    assert_eq!(delivered.len(), 2);
    for d in &delivered {
        let text = String::from_utf8_lossy(&d.data);
        assert!(
            text.starts_with("Received: from client.example ([192.0.2.7])"),
            "{text}"
        );
    }
    let records = audit_records(&audit, 2);
    let ports: Vec<_> = records
        .iter()
        .map(|r| {
            assert_eq!(r["client"]["ip"], "192.0.2.7", "{r}");
            r["client"]["port"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ports, vec![40001, 40002]);
}

#[test]
fn relay_control_and_rules_judge_the_real_client() {
    let mock = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[(
        "00-connect.yaml",
        "rules:\n  - name: blocked-net\n    stage: connect\n    when: { client_ip: { cidrs: [203.0.113.0/24] } }\n    action: reject\n",
    )]);
    // The default trusted_networks is loopback: the proxy's own address.
    let gate = gateway(&mock, "127.0.0.1/8", &rules_line(rules.path()));
    let relay = |client: &str| -> WireReply {
        let header = encode_v2(Some(&addresses(client, gate.addr)), &[]);
        let mut c = proxied(gate.addr, &header);
        c.cmd("EHLO client.example", 250);
        c.cmd("MAIL FROM:<a@example.net>", 250);
        c.send("RCPT TO:<someone@elsewhere.test>\r\n");
        c.reply()
    };
    // A loopback client may relay; a remote one behind the same proxy may not.
    assert_eq!(relay("127.0.0.9:1000").code, 250);
    let denied = relay("192.0.2.7:1000");
    assert_eq!(denied.code, 554, "{}", denied.raw);
    assert!(denied.raw.contains("Relay access denied"), "{}", denied.raw);
    // A connect rule sees the real client too: refused instead of greeted.
    let header = encode_v1(Some(&addresses("203.0.113.5:2000", gate.addr)));
    let (answer, _) = answer_to(gate.addr, &header);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("554 5.7.1"), "{answer}");
}

#[test]
fn a_local_header_keeps_the_proxy_as_the_client() {
    let mock = MockUpstream::start(MockOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gate = gateway(
        &mock,
        "127.0.0.1",
        &format!("audit: {{ path: \"{}\" }}\n", audit.display()),
    );
    for header in [encode_v2(None, &[]), encode_v1(None)] {
        let mut c = proxied(gate.addr, &header);
        c.cmd("EHLO lb-check", 250);
        c.cmd("QUIT", 221);
    }
    let records = audit_records(&audit, 2);
    assert_eq!(records.len(), 2);
    for r in records {
        assert_eq!(r["type"], "session");
        assert_eq!(r["client"]["ip"], "127.0.0.1", "{r}");
    }
}

#[test]
fn untrusted_bad_slow_and_missing_headers_get_no_greeting() {
    let mock = MockUpstream::start(MockOptions::default());
    let good = encode_v2(
        Some(&addresses("192.0.2.7:1", "127.0.0.1:25".parse().unwrap())),
        &[],
    );

    // The proxy is not trusted: closed at once, though its header is fine.
    let untrusted = gateway(&mock, "192.0.2.1", "");
    let (answer, took) = answer_to(untrusted.addr, &good);
    assert!(answer.is_empty(), "{answer:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    let gate = gateway(&mock, "127.0.0.1", "");
    let malformed: [&[u8]; 4] = [
        b"EHLO client.example\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c000000000000",
    ];
    for bytes in malformed {
        let (answer, took) = answer_to(gate.addr, bytes);
        assert!(answer.is_empty(), "{bytes:?} got {answer:?}");
        assert!(took < Duration::from_secs(1), "{bytes:?} took {took:?}");
    }
    // No header at all, or half of one: closed after timeout_s (1 s).
    for bytes in [&b""[..], &good[..20]] {
        let (answer, took) = answer_to(gate.addr, bytes);
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
    // The gateway is still fine after all that.
    let mut c = proxied(gate.addr, &good);
    c.cmd("EHLO client.example", 250);
}

#[test]
fn a_header_sent_a_byte_at_a_time_still_works() {
    let mock = MockUpstream::start(MockOptions::default());
    let gate = gateway(&mock, "127.0.0.1", "");
    let header = encode_v1(Some(&addresses("198.51.100.20:3000", gate.addr)));
    let mut c = Client::connect(gate.addr);
    c.stream.set_nodelay(true).unwrap();
    for b in &header {
        c.send_bytes(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    // The client's first command right behind the header is not lost.
    c.send("EHLO client.example\r\n");
    c.expect(220);
    let ehlo = c.expect(250);
    assert!(ehlo.contains("greets client.example"), "{ehlo}");
}

#[test]
fn on_an_implicit_tls_listener_the_header_comes_before_the_handshake() {
    let pki = Pki::new("proxy-tls");
    let mock = MockUpstream::start(MockOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gate = Gateway::with_upstream(
        &mock,
        &format!(
            "listen:\n  - {{ addr: \"127.0.0.1:0\", tls: implicit, proxy_protocol: true }}\n\
             proxy_protocol: {{ trusted_proxies: [127.0.0.1] }}\n\
             relay: {{ local_domains: [example.com] }}\n{}audit: {{ path: \"{}\" }}\n",
            pki.tls_yaml(),
            audit.display()
        ),
    );
    let mut tcp = TcpStream::connect(gate.addr).unwrap();
    tcp.write_all(&encode_v2(
        Some(&addresses("[2001:db8::7]:4465", gate.addr)),
        &[],
    ))
    .unwrap();
    let mut c = TlsClient::handshake(tcp, pki.client_config(), "localhost").expect("handshake");
    c.expect(220);
    c.cmd("EHLO client.example", 250);
    let r = c.send_message(
        "a@example.net",
        &["b@example.com"],
        &message("tls", "x\r\n"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    c.cmd("QUIT", 221);
    let d = mock.wait_for(1);
    let text = String::from_utf8_lossy(&d[0].data);
    assert!(
        text.starts_with("Received: from client.example ([IPv6:2001:db8::7])"),
        "{text}"
    );
    assert!(text.contains("with ESMTPS"), "{text}");
    let records = audit_records(&audit, 1);
    assert_eq!(records[0]["client"]["ip"], "2001:db8::7");
}

#[test]
fn a_plain_listener_of_the_same_gateway_takes_no_header() {
    let mock = MockUpstream::start(MockOptions::default());
    let gate = Gateway::with_upstream(
        &mock,
        "listen:\n  - { addr: \"127.0.0.1:0\", proxy_protocol: true }\n  - { addr: \"127.0.0.1:0\" }\n\
         proxy_protocol: { trusted_proxies: [127.0.0.1] }\n",
    );
    // Greeted at once, and a PROXY line there is just a bad command.
    let mut c = Client::connect(gate.addrs[1]);
    c.expect(220);
    let r = c.cmd("PROXY TCP4 192.0.2.7 127.0.0.1 1 25", 500);
    assert!(r.starts_with("500 5.5.2"), "{r}");
}
