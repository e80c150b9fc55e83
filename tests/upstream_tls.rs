//! The gateway's client side: STARTTLS (none, opportunistic, required) and
//! implicit TLS towards the upstream, certificate verification, AUTH at a
//! smarthost, injection after the upstream's STARTTLS, and failover.

mod common;

use common::certs::{self, Pki};
use common::mock_upstream::dead_addr;
use common::tls_upstream::{TlsMock, TlsMockOptions};
use common::{message, Gateway, MockOptions, MockUpstream};
use std::net::SocketAddr;
use std::time::Duration;

/// A gateway relaying to `addr` with `upstream_extra` inside the upstream
/// mapping (e.g. `starttls: required, ca_file: "..."`).
fn gateway(addr: SocketAddr, upstream_extra: &str) -> Gateway {
    Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{addr}\", {upstream_extra} }}\n"
    ))
}

/// `ca_file: "<the test CA>"`.
fn ca(pki: &Pki) -> String {
    format!("ca_file: \"{}\"", pki.ca_path().display())
}

/// Sends one message; returns the reply to MAIL, and to the final dot
/// when MAIL was accepted.
fn send(gw: &Gateway) -> (u16, Option<u16>) {
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.send("MAIL FROM:<a@example.com>\r\n");
    let mail = c.reply();
    if mail.code != 250 {
        return (mail.code, None);
    }
    c.cmd("RCPT TO:<b@example.net>", 250);
    c.cmd("DATA", 354);
    c.send(&message("upstream tls", "x\r\n"));
    c.send(".\r\n");
    (250, Some(c.reply().code))
}

/// The verbs the upstream saw in clear, over all connections.
fn clear_verbs(mock: &TlsMock) -> Vec<String> {
    mock.commands()
        .into_iter()
        .flatten()
        .filter(|(_, tls)| !tls)
        .map(|(l, _)| l.split(' ').next().unwrap_or("").to_ascii_uppercase())
        .collect()
}

#[test]
fn required_starttls_against_an_upstream_without_it_sends_nothing_in_clear() {
    let pki = Pki::new("up");
    let up = MockUpstream::start(MockOptions::default());
    let gw = gateway(up.addr, &format!("starttls: required, {}", ca(&pki)));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451 4.4.1 "), "{r}");
    assert!(up.delivered().is_empty());
    for session in up.commands() {
        for line in session {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            assert!(verb == "EHLO" || verb == "QUIT", "sent in clear: {line}");
        }
    }
}

#[test]
fn required_starttls_delivers_under_tls_and_greets_again() {
    let pki = Pki::new("up");
    let mock = TlsMock::start(TlsMockOptions {
        starttls: Some(pki.server_config()),
        ..TlsMockOptions::default()
    });
    let gw = gateway(mock.addr, &format!("starttls: required, {}", ca(&pki)));
    assert_eq!(send(&gw), (250, Some(250)));
    let d = mock.delivered();
    assert_eq!(d.len(), 1);
    assert!(d[0].tls);
    assert_eq!(clear_verbs(&mock), vec!["EHLO", "STARTTLS"]);
    let under_tls: Vec<String> = mock.commands()[0]
        .iter()
        .filter(|(_, tls)| *tls)
        .map(|(l, _)| l.clone())
        .collect();
    assert!(under_tls[0].starts_with("EHLO "), "{under_tls:?}");
}

#[test]
fn opportunistic_starttls_uses_tls_when_offered_and_plain_otherwise() {
    let pki = Pki::new("up");
    let mock = TlsMock::start(TlsMockOptions {
        starttls: Some(pki.server_config()),
        ..TlsMockOptions::default()
    });
    let gw = gateway(mock.addr, &format!("starttls: opportunistic, {}", ca(&pki)));
    assert_eq!(send(&gw), (250, Some(250)));
    assert!(mock.delivered()[0].tls);

    let plain = TlsMock::start(TlsMockOptions::default());
    let gw = gateway(
        plain.addr,
        &format!("starttls: opportunistic, {}", ca(&pki)),
    );
    assert_eq!(send(&gw), (250, Some(250)));
    assert!(!plain.delivered()[0].tls);
}

#[test]
fn a_bad_certificate_is_refused_unless_verification_is_disabled() {
    let pki = Pki::new("up");
    // Self-signed: valid names, untrusted issuer.
    let mock = TlsMock::start(TlsMockOptions {
        starttls: Some(certs::self_signed_config()),
        ..TlsMockOptions::default()
    });
    for mode in ["required", "opportunistic"] {
        let gw = gateway(mock.addr, &format!("starttls: {mode}, {}", ca(&pki)));
        assert_eq!(send(&gw).0, 451, "{mode}");
    }
    assert!(mock.delivered().is_empty());
    assert!(!clear_verbs(&mock).contains(&"MAIL".to_string()));

    // The right CA but the wrong name.
    let good = TlsMock::start(TlsMockOptions {
        starttls: Some(pki.server_config()),
        ..TlsMockOptions::default()
    });
    let gw = gateway(
        good.addr,
        &format!("starttls: required, {}, server_name: wrong.test", ca(&pki)),
    );
    assert_eq!(send(&gw).0, 451);
    assert!(good.delivered().is_empty());
    // ...and the right name.
    let gw = gateway(
        good.addr,
        &format!("starttls: required, {}, server_name: mock.test", ca(&pki)),
    );
    assert_eq!(send(&gw), (250, Some(250)));

    // The explicit opt-out delivers, still under TLS.
    let gw = gateway(mock.addr, "starttls: required, tls_verify: false");
    assert_eq!(send(&gw), (250, Some(250)));
    let d = mock.delivered();
    assert_eq!(d.len(), 1);
    assert!(d[0].tls);
}

#[test]
fn implicit_tls_upstream() {
    let pki = Pki::new("up");
    let mock = TlsMock::start(TlsMockOptions {
        implicit: Some(pki.server_config()),
        ..TlsMockOptions::default()
    });
    let gw = gateway(mock.addr, &format!("tls: implicit, {}", ca(&pki)));
    assert_eq!(send(&gw), (250, Some(250)));
    assert!(mock.delivered()[0].tls);
    assert!(clear_verbs(&mock).is_empty());
}

#[test]
fn upstream_auth_plain_and_login() {
    let pki = Pki::new("up");
    for mechs in ["PLAIN LOGIN", "LOGIN"] {
        let mock = TlsMock::start(TlsMockOptions {
            starttls: Some(pki.server_config()),
            auth: Some(("relay-user".into(), "s3cret pass".into())),
            auth_mechanisms: Some(mechs.into()),
            ..TlsMockOptions::default()
        });
        let gw = gateway(
            mock.addr,
            &format!(
                "starttls: required, {}, auth: {{ user: relay-user, password: \"s3cret pass\" }}",
                ca(&pki)
            ),
        );
        assert_eq!(send(&gw), (250, Some(250)), "{mechs}");
        let d = mock.delivered();
        assert_eq!(d[0].auth_user.as_deref(), Some("relay-user"), "{mechs}");
        assert!(!clear_verbs(&mock).contains(&"AUTH".to_string()));
    }

    // The password may come from a file; a wrong one fails the session.
    let mock = TlsMock::start(TlsMockOptions {
        starttls: Some(pki.server_config()),
        auth: Some(("relay-user".into(), "right".into())),
        ..TlsMockOptions::default()
    });
    let file = pki.dir.path().join("password");
    std::fs::write(&file, "wrong\n").unwrap();
    let gw = gateway(
        mock.addr,
        &format!(
            "starttls: required, {}, auth: {{ user: relay-user, password_file: \"{}\" }}",
            ca(&pki),
            file.display()
        ),
    );
    assert_eq!(send(&gw).0, 451);
    assert!(mock.delivered().is_empty());
}

#[test]
fn bytes_injected_after_the_upstreams_starttls_are_ignored() {
    let pki = Pki::new("up");
    let mock = TlsMock::start(TlsMockOptions {
        starttls: Some(pki.server_config()),
        inject_after_starttls: Some("554 5.7.1 injected\r\n250 2.0.0 injected too\r\n".into()),
        ..TlsMockOptions::default()
    });
    let gw = gateway(mock.addr, &format!("starttls: required, {}", ca(&pki)));
    assert_eq!(send(&gw), (250, Some(250)));
    let d = mock.delivered();
    assert_eq!(d.len(), 1);
    assert!(d[0].tls);
    // Had the injected 554 been read as the EHLO reply, the client would
    // have fallen back to HELO.
    let verbs: Vec<String> = mock.commands()[0]
        .iter()
        .map(|(l, _)| l.split(' ').next().unwrap_or("").to_ascii_uppercase())
        .collect();
    assert!(!verbs.contains(&"HELO".to_string()), "{verbs:?}");
}

#[test]
fn failover_delivers_exactly_once_to_the_next_upstream() {
    let second = MockUpstream::start(MockOptions::default());
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", fallback: [\"{}\"] }}\n",
        dead_addr(),
        second.addr
    ));
    for _ in 0..3 {
        assert_eq!(send(&gw), (250, Some(250)));
    }
    let d = second.wait_for(3);
    assert_eq!(d.len(), 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(second.delivered().len(), 3, "each message exactly once");
}

#[test]
fn a_failed_upstream_is_skipped_for_a_while_then_probed_again() {
    // The first server accepts connections but refuses to serve.
    let busy = TlsMock::start(TlsMockOptions {
        greeting: Some("421 4.3.2 busy".into()),
        ..TlsMockOptions::default()
    });
    let good = MockUpstream::start(MockOptions::default());
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", fallback: [\"localhost:{}\"], retry_after_s: 1 }}\n",
        busy.addr,
        good.addr.port()
    ));
    assert_eq!(send(&gw), (250, Some(250)));
    assert_eq!(busy.connections(), 1);
    // Within retry_after_s the failed server is not tried.
    assert_eq!(send(&gw), (250, Some(250)));
    assert_eq!(busy.connections(), 1);
    // After it, it is probed again (and fails over again).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(send(&gw), (250, Some(250)));
    assert_eq!(busy.connections(), 2);
    assert_eq!(good.wait_for(3).len(), 3);
    assert!(busy.delivered().is_empty());
}

#[test]
fn every_upstream_down_is_a_temporary_failure() {
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", fallback: [\"{}\"] }}\n",
        dead_addr(),
        dead_addr()
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451 4.4.1"), "{r}");
    // Both are now marked down; the next session still tries them rather
    // than fail without trying.
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert!(r.starts_with("451 4.4.1"), "{r}");
}
