//! XFORWARD and XCLIENT towards the upstream, checked on the exact command
//! lines a recording mock upstream receives: sent only when offered, with
//! only the offered attributes, before each MAIL (XFORWARD) or once per
//! client session followed by a new EHLO (XCLIENT); the client behind a
//! PROXY header is the one announced; an XCLIENT refusal is the client's
//! answer.

mod common;

use common::{audit_records, message, Client, Gateway, MockOptions, MockUpstream};
use smtpgate::proto::proxy::{encode_v2, Addresses};

const ALL_XFORWARD: &str = "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT";

fn mock(ehlo_extra: &[&str], pipelining: bool) -> MockUpstream {
    MockUpstream::start(MockOptions {
        ehlo_extra: ehlo_extra.iter().map(|s| s.to_string()).collect(),
        pipelining,
        ..MockOptions::default()
    })
}

/// Sends one message over `c` (already greeted with EHLO client.example).
fn send(c: &mut Client, subject: &str) {
    let r = c.send_message(
        "a@example.net",
        &["b@example.com"],
        &message(subject, "hi\r\n"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
}

/// The command lines the mock received on one connection (message
/// lines are not recorded).
fn commands(up: &MockUpstream, connection: usize) -> Vec<String> {
    up.commands()[connection].clone()
}

#[test]
fn xforward_names_the_client_before_each_mail() {
    let up = mock(&[ALL_XFORWARD], true);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gate = Gateway::with_upstream(
        &up,
        &format!(
            "relay: {{ local_domains: [example.com] }}\naudit: {{ path: \"{}\" }}\n",
            audit.display()
        ),
    );
    let mut c = gate.client();
    let port = c.stream.local_addr().unwrap().port();
    c.cmd("EHLO client.example", 250);
    send(&mut c, "one");
    send(&mut c, "two");
    c.cmd("QUIT", 221);
    assert_eq!(up.wait_for(2).len(), 2);
    let records = audit_records(&audit, 2);
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["transaction"].as_str().unwrap())
        .collect();
    let cmds = commands(&up, 0);
    let expected = |id: &str| {
        format!(
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.1 PORT={port} PROTO=ESMTP \
             HELO=client.example IDENT={id} SOURCE=REMOTE"
        )
    };
    let xforwards: Vec<&String> = cmds.iter().filter(|c| c.starts_with("XFORWARD")).collect();
    assert_eq!(
        xforwards,
        vec![&expected(ids[0]), &expected(ids[1])],
        "{cmds:?}"
    );
    // Each right before its MAIL.
    for id in &ids {
        let at = cmds.iter().position(|c| *c == expected(id)).unwrap();
        assert!(cmds[at + 1].starts_with("MAIL FROM:"), "{cmds:?}");
    }
}

#[test]
fn only_offered_attributes_and_the_client_behind_a_proxy() {
    let up = mock(&["XFORWARD NAME ADDR PROTO HELO"], true);
    let gate = Gateway::with_upstream(
        &up,
        "listen:\n  - { addr: \"127.0.0.1:0\", proxy_protocol: true }\n\
         proxy_protocol: { trusted_proxies: [127.0.0.1] }\n\
         relay: { local_domains: [example.com] }\n",
    );
    let mut c = Client::connect(gate.addr);
    c.send_bytes(&encode_v2(
        Some(&Addresses {
            source: "[2001:db8::7]:4444".parse().unwrap(),
            destination: gate.addr,
        }),
        &[],
    ));
    c.expect(220);
    c.cmd("HELO [IPv6:2001:db8::7]", 250);
    send(&mut c, "proxied");
    up.wait_for(1);
    let cmds = commands(&up, 0);
    assert!(
        cmds.contains(
            &"XFORWARD NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::7 PROTO=SMTP HELO=[IPv6:2001:db8::7]"
                .to_string()
        ),
        "{cmds:?}"
    );
}

#[test]
fn nothing_is_sent_unless_offered_and_wanted() {
    // Not offered.
    let plain = mock(&[], true);
    // Offered, but the gateway is told not to.
    let offered = mock(&[ALL_XFORWARD], true);
    for (up, extra) in [
        (&plain, ""),
        (
            &offered,
            "upstream: { addr: \"ADDR\", forward_client: none }\n",
        ),
    ] {
        let yaml = if extra.is_empty() {
            format!(
                "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\nrelay: {{ local_domains: [example.com] }}\n",
                up.addr
            )
        } else {
            format!(
                "hostname: gate.test\n{}relay: {{ local_domains: [example.com] }}\n",
                extra.replace("ADDR", &up.addr.to_string())
            )
        };
        let gate = Gateway::start(&yaml);
        let mut c = gate.client();
        c.cmd("EHLO client.example", 250);
        send(&mut c, "quiet");
        up.wait_for(1);
        let cmds = commands(up, 0);
        assert!(
            cmds.iter()
                .all(|c| !c.starts_with("XFORWARD") && !c.starts_with("XCLIENT")),
            "{cmds:?}"
        );
        assert!(cmds.iter().any(|c| c.starts_with("MAIL FROM:")), "{cmds:?}");
    }
}

#[test]
fn xforward_without_pipelining_goes_one_command_at_a_time() {
    let up = mock(&["XFORWARD ADDR"], false);
    let gate = Gateway::with_upstream(&up, "relay: { local_domains: [example.com] }\n");
    let mut c = gate.client();
    c.cmd("EHLO client.example", 250);
    send(&mut c, "lockstep");
    up.wait_for(1);
    let cmds = commands(&up, 0);
    let at = cmds
        .iter()
        .position(|c| c == "XFORWARD ADDR=127.0.0.1")
        .unwrap_or_else(|| panic!("{cmds:?}"));
    assert!(cmds[at + 1].starts_with("MAIL FROM:"), "{cmds:?}");
}

#[test]
fn xclient_restarts_the_upstream_session_as_the_client_once() {
    let up = mock(
        &["XCLIENT NAME ADDR PORT PROTO HELO LOGIN", ALL_XFORWARD],
        true,
    );
    let gate = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", forward_client: xclient }}\n\
         relay: {{ local_domains: [example.com] }}\n",
        up.addr
    ));
    let mut c = gate.client();
    let port = c.stream.local_addr().unwrap().port();
    c.cmd("EHLO client.example", 250);
    send(&mut c, "first");
    send(&mut c, "second");
    c.cmd("QUIT", 221);
    up.wait_for(2);
    let cmds = commands(&up, 0);
    let head: Vec<&str> = cmds.iter().take(4).map(String::as_str).collect();
    assert_eq!(
        head,
        vec![
            "EHLO gate.test",
            &*format!(
                "XCLIENT HELO=client.example PROTO=ESMTP LOGIN=[UNAVAILABLE] \
                 NAME=[UNAVAILABLE] PORT={port} ADDR=127.0.0.1"
            ),
            "EHLO client.example",
            "MAIL FROM:<a@example.net>",
        ],
        "{cmds:?}"
    );
    // Once per session, and no XFORWARD on top of it.
    assert_eq!(cmds.iter().filter(|c| c.starts_with("XCLIENT")).count(), 1);
    assert!(!cmds.iter().any(|c| c.starts_with("XFORWARD")), "{cmds:?}");
    assert_eq!(cmds.iter().filter(|c| c.starts_with("MAIL")).count(), 2);
}

#[test]
fn a_connection_restarted_with_xclient_never_serves_another_client() {
    let up = mock(&["XCLIENT NAME ADDR PORT PROTO HELO LOGIN"], true);
    let gate = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", forward_client: xclient }}\n\
         relay: {{ local_domains: [example.com] }}\n",
        up.addr
    ));
    for subject in ["first client", "second client"] {
        let mut c = gate.client();
        c.cmd("EHLO client.example", 250);
        send(&mut c, subject);
        c.cmd("QUIT", 221);
        // The first session's connection is released before the next one.
        assert!(c.is_closed());
    }
    up.wait_for(2);
    // With the pool on (the default), an XFORWARD connection would be
    // reused here; an XCLIENT one belongs to its client and is closed.
    let cmds = up.commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    for conn in &cmds {
        assert_eq!(
            conn.iter().filter(|c| c.starts_with("XCLIENT")).count(),
            1,
            "{conn:?}"
        );
        assert_eq!(
            conn.iter().filter(|c| c.starts_with("MAIL")).count(),
            1,
            "{conn:?}"
        );
    }
}

#[test]
fn xclient_falls_back_to_xforward_when_only_that_is_offered() {
    let up = mock(&["XFORWARD ADDR HELO"], true);
    let gate = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", forward_client: xclient }}\n\
         relay: {{ local_domains: [example.com] }}\n",
        up.addr
    ));
    let mut c = gate.client();
    c.cmd("EHLO client.example", 250);
    send(&mut c, "fallback");
    up.wait_for(1);
    let cmds = commands(&up, 0);
    assert!(
        cmds.contains(&"XFORWARD ADDR=127.0.0.1 HELO=client.example".to_string()),
        "{cmds:?}"
    );
}

#[test]
fn an_xclient_refusal_is_the_clients_answer() {
    let up = MockUpstream::start(MockOptions {
        ehlo_extra: vec!["XCLIENT ADDR HELO".to_string()],
        xclient_reply: "554 5.7.1 Client host rejected: listed".to_string(),
        ..MockOptions::default()
    });
    let gate = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\", forward_client: xclient }}\n\
         relay: {{ local_domains: [example.com] }}\n",
        up.addr
    ));
    let mut c = gate.client();
    c.cmd("EHLO client.example", 250);
    let refused = c.cmd("MAIL FROM:<a@example.net>", 554);
    assert!(
        refused.contains("Client host rejected: listed"),
        "{refused}"
    );
    // The refused connection is not reused: the next MAIL opens a new one.
    c.cmd("MAIL FROM:<a@example.net>", 554);
    let cmds = up.commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    for conn in &cmds {
        assert!(!conn.iter().any(|c| c.starts_with("MAIL")), "{conn:?}");
    }
    assert!(up.delivered().is_empty());
}
