//! Inbound TLS over real sockets: STARTTLS and implicit TLS with an
//! independent client (lettre on rustls), the STARTTLS injection case
//! (CVE-2011-0411), the session reset after the handshake, failed
//! handshakes, `starttls: required`, and certificate reload.

mod common;

use common::certs::Pki;
use common::tls_client::TlsClient;
use common::{message, Client, Gateway, MockOptions, MockUpstream};
use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::version::TLS12;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Address, SmtpTransport, Transport};
use smtpgate::config::Config;
use smtpgate::filter::{Context, Filter, FilterChain, Message, Verdict};
use std::io::{Read, Write};
use std::sync::Arc;

/// A gateway relaying to `up`, with the test certificate and `listen` YAML.
fn gateway(pki: &Pki, up: &MockUpstream, listen: &str) -> Gateway {
    Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}listen:\n{listen}",
        up.addr,
        pki.tls_yaml()
    ))
}

/// lettre's TLS parameters trusting only the test CA.
fn lettre_tls(pki: &Pki) -> TlsParameters {
    TlsParameters::builder("localhost".to_string())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(
        Some(from.parse::<Address>().unwrap()),
        vec![to.parse::<Address>().unwrap()],
    )
    .unwrap()
}

#[test]
fn lettre_delivers_over_starttls() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: required }\n",
    );
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(gw.addr.port())
        .tls(Tls::Required(lettre_tls(&pki)))
        .build();
    let raw = message("over starttls", "hello\r\n");
    let response = transport
        .send_raw(
            &envelope("alice@example.com", "bob@example.net"),
            raw.as_bytes(),
        )
        .expect("lettre send over STARTTLS");
    assert_eq!(response.code().to_string(), "250");
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    let text = String::from_utf8_lossy(&d[0].data).to_string();
    assert!(text.contains("with ESMTPS id"), "{text}");
}

#[test]
fn lettre_delivers_over_implicit_tls() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&pki, &up, "  - { addr: \"127.0.0.1:0\", tls: implicit }\n");
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(gw.addr.port())
        .tls(Tls::Wrapper(lettre_tls(&pki)))
        .build();
    let raw = message("implicit", "hello\r\n");
    transport
        .send_raw(
            &envelope("alice@example.com", "bob@example.net"),
            raw.as_bytes(),
        )
        .expect("lettre send over implicit TLS");
    assert_eq!(up.wait_for(1).len(), 1);

    // A plain-text client on the implicit port gets no greeting and is
    // dropped when its bytes fail the handshake.
    let mut plain = Client::connect(gw.addr);
    plain.send("EHLO plain.test\r\n");
    let rest = until_closed(&mut plain.stream);
    assert!(
        !rest.starts_with(b"2"),
        "no SMTP reply on port 465: {rest:?}"
    );
}

/// Reads until the server closes; what it sent (a TLS alert, maybe).
fn until_closed(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("the server closes the connection");
    all
}

#[test]
fn starttls_is_advertised_only_where_configured_and_not_twice() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: none }\n  - { addr: \"127.0.0.1:0\" }\n",
    );
    // starttls: none.
    let mut c = gw.client();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", 502);

    // With `tls` configured a listener offers STARTTLS by default.
    let mut c = Client::connect(gw.addrs[1]);
    c.expect(220);
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(ehlo.contains("STARTTLS\r\n"), "{ehlo}");
    let mut t = TlsClient::starttls(c, pki.client_config());
    let ehlo = t.cmd("EHLO client.test", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    let again = t.cmd("STARTTLS", 503);
    assert!(again.contains("5.5.1"), "{again}");
    // Optional: mail goes through in plain text too.
    let mut c = Client::connect(gw.addrs[1]);
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
}

#[test]
fn required_listener_refuses_mail_before_starttls() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: required }\n",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 530);
    assert_eq!(r, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    let mut t = TlsClient::starttls(c, pki.client_config());
    t.cmd("EHLO client.test", 250);
    let reply = t.send_message(
        "a@example.com",
        &["b@example.net"],
        &message("req", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{}", reply.raw);
    assert_eq!(up.wait_for(1).len(), 1);
    assert!(up.commands()[0].iter().all(|c| !c.contains("evil")));
}

/// CVE-2011-0411: commands pipelined behind STARTTLS in plain text must be
/// thrown away, not run inside the TLS session.
#[test]
fn commands_injected_after_starttls_are_discarded() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: optional }\n",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.send_bytes(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.net>\r\n");
    c.expect(220);
    let mut t = TlsClient::handshake(c.stream, pki.client_config(), "localhost").unwrap();
    // The session starts over: MAIL before a new EHLO is out of sequence,
    // and the first reply under TLS answers our own command.
    let r = t.cmd("MAIL FROM:<good@example.com>", 503);
    assert!(r.contains("send HELO/EHLO first"), "{r}");
    t.cmd("EHLO client.test", 250);
    // No transaction survived: a MAIL now is not "nested".
    let reply = t.send_message(
        "good@example.com",
        &["friend@example.net"],
        &message("clean", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{}", reply.raw);
    let d = up.wait_for(1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].from, "good@example.com");
    assert_eq!(d[0].rcpts, vec!["friend@example.net"]);
    for session in up.commands() {
        for line in session {
            assert!(!line.contains("evil") && !line.contains("victim"), "{line}");
        }
    }
}

#[test]
fn starttls_during_a_transaction_is_refused() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: optional }\n",
    );
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@example.com>", 250);
    let r = c.cmd("STARTTLS", 503);
    assert!(r.contains("transaction in progress"), "{r}");
}

#[test]
fn a_failed_handshake_ends_only_that_connection() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(
        &pki,
        &up,
        "  - { addr: \"127.0.0.1:0\", starttls: optional }\n  - { addr: \"127.0.0.1:0\", tls: implicit }\n",
    );
    // Garbage instead of a ClientHello after STARTTLS.
    let mut bad = gw.client();
    bad.cmd("EHLO client.test", 250);
    bad.cmd("STARTTLS", 220);
    bad.stream
        .write_all(b"this is not a TLS record\r\n\r\n")
        .unwrap();
    let rest = until_closed(&mut bad.stream);
    assert!(
        !rest.starts_with(b"2"),
        "no SMTP reply after a bad handshake: {rest:?}"
    );

    // A client that does not trust the certificate aborts its handshake.
    let untrusting = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    );
    let tcp = std::net::TcpStream::connect(gw.addrs[1]).unwrap();
    assert!(TlsClient::handshake(tcp, untrusting, "localhost").is_err());

    // Others are served as usual, on both listeners.
    let mut good = TlsClient::starttls(
        {
            let mut c = gw.client();
            c.cmd("EHLO client.test", 250);
            c
        },
        pki.client_config(),
    );
    good.cmd("EHLO client.test", 250);
    good.cmd("NOOP", 250);
    let mut implicit = TlsClient::implicit(gw.addrs[1], pki.client_config());
    implicit.cmd("EHLO client.test", 250);
}

#[test]
fn tls_1_2_clients_are_served() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&pki, &up, "  - { addr: \"127.0.0.1:0\", tls: implicit }\n");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls12 = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut c = TlsClient::implicit(gw.addr, tls12);
    assert_eq!(c.version(), "TLSv1_2");
    c.cmd("EHLO client.test", 250);
    let mut c = TlsClient::implicit(gw.addr, pki.client_config());
    assert_eq!(c.version(), "TLSv1_3");
    c.cmd("QUIT", 221);
}

/// A client whose suites are ring's defaults, AES-256-GCM-SHA384 first, as
/// OpenSSL's are; over TLS 1.3 or 1.2.
fn client_preferring_aes256(pki: &Pki, tls12: bool) -> Arc<ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let first = format!("{:?}", provider.cipher_suites[0].suite());
    assert_eq!(first, "TLS13_AES_256_GCM_SHA384");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if tls12 {
        builder.with_protocol_versions(&[&TLS12]).unwrap()
    } else {
        builder.with_safe_default_protocol_versions().unwrap()
    };
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

#[test]
fn the_server_chooses_aes_128_gcm_over_the_clients_first_choice() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&pki, &up, "  - { addr: \"127.0.0.1:0\", tls: implicit }\n");
    let mut c = TlsClient::implicit(gw.addr, client_preferring_aes256(&pki, false));
    assert_eq!(c.version(), "TLSv1_3");
    assert_eq!(c.suite(), "TLS13_AES_128_GCM_SHA256");
    c.cmd("EHLO client.test", 250);

    let mut c = TlsClient::implicit(gw.addr, client_preferring_aes256(&pki, true));
    assert_eq!(c.version(), "TLSv1_2");
    assert!(
        c.suite().ends_with("_WITH_AES_128_GCM_SHA256"),
        "{}",
        c.suite()
    );
    c.cmd("EHLO client.test", 250);
}

#[test]
fn reloaded_certificates_are_seen_by_new_connections() {
    let mut pki = Pki::new("first");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(&pki, &up, "  - { addr: \"127.0.0.1:0\", tls: implicit }\n");
    let first = CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap();
    let mut old = TlsClient::implicit(gw.addr, pki.client_config());
    assert_eq!(old.peer_certificate(), first);

    pki.reissue("second");
    let second = CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap();
    assert_ne!(first, second);
    assert_eq!(gw.shared.tls().map(|t| t.reload()), Some(Ok(())));
    let mut new = TlsClient::implicit(gw.addr, pki.client_config());
    assert_eq!(new.peer_certificate(), second);
    new.cmd("NOOP", 250);
    // The session that started before the reload goes on.
    old.cmd("NOOP", 250);

    // A broken file is refused and the current certificate stays.
    std::fs::write(pki.key_path(), "garbage").unwrap();
    assert!(gw.shared.tls().map(|t| t.reload()).unwrap().is_err());
    assert!(!smtpgate::reload::reload_security(&gw.shared));
    let mut after = TlsClient::implicit(gw.addr, pki.client_config());
    assert_eq!(after.peer_certificate(), second);
    after.cmd("NOOP", 250);
}

/// Filters see the TLS facts of the session.
struct TlsHeader;

impl Filter for TlsHeader {
    fn name(&self) -> &str {
        "tls-header"
    }
    fn data(&self, ctx: &mut Context, _message: &mut Message<'_>) -> Verdict {
        let value = match &ctx.tls {
            Some(t) => format!("{} {}", t.version, t.cipher),
            None => "none".to_string(),
        };
        ctx.add_headers.push(("X-Test-TLS".into(), value));
        Verdict::Continue
    }
}

#[test]
fn filters_see_the_tls_session() {
    let pki = Pki::new("gate");
    let up = MockUpstream::start(MockOptions::default());
    let config = Config::from_yaml(
        &format!(
            "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}message: {{ received_header: false }}\n",
            up.addr,
            pki.tls_yaml()
        ),
        "test.yaml",
    )
    .unwrap();
    let mut chain = FilterChain::new();
    chain.push(Arc::new(TlsHeader));
    let gw = Gateway::start_with_filters(config, chain);
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "a@example.com",
        &["b@example.net"],
        &message("plain", "x\r\n"),
    );
    assert_eq!(r.code, 250);
    let mut t = TlsClient::starttls(c, pki.client_config());
    t.cmd("EHLO client.test", 250);
    let r = t.send_message(
        "a@example.com",
        &["b@example.net"],
        &message("tls", "x\r\n"),
    );
    assert_eq!(r.code, 250);
    let d = up.wait_for(2);
    assert!(d[0].data.starts_with(b"X-Test-TLS: none\r\n"));
    let second = String::from_utf8_lossy(&d[1].data).to_string();
    assert!(second.starts_with("X-Test-TLS: TLSv1.3 TLS13_"), "{second}");
}
