//! Relay control over real sockets, for a client that is NOT trusted
//! (`trusted_networks: []`): only local domains are accepted, and every
//! address trick that could open a relay — percent hack, source route, bang
//! path, quoted '@', trailing dots, case — is judged by the real
//! destination.

mod common;

use common::{message, Client, Gateway, MockOptions, MockUpstream};

const UNTRUSTED: &str = "relay: { local_domains: [local.test], trusted_networks: [] }\n";

fn untrusted() -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, UNTRUSTED);
    (up, gw)
}

fn in_transaction(gw: &Gateway) -> Client {
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<sender@example.org>", 250);
    c
}

/// Every RCPT line the upstream saw.
fn upstream_rcpts(up: &MockUpstream) -> Vec<String> {
    up.commands()
        .into_iter()
        .flatten()
        .filter(|l| l.to_ascii_uppercase().starts_with("RCPT"))
        .collect()
}

#[test]
fn foreign_domains_are_denied_and_never_reach_the_upstream() {
    let (up, gw) = untrusted();
    let mut c = in_transaction(&gw);
    let r = c.cmd("RCPT TO:<user@other.test>", 554);
    assert_eq!(r, "554 5.7.1 <user@other.test>: Relay access denied\r\n");
    c.cmd("RCPT TO:<user@local.test>", 250);
    c.cmd("DATA", 354);
    c.send(&message("local only", "x\r\n"));
    c.send(".\r\n");
    c.expect(250);
    let d = up.wait_for(1);
    assert_eq!(d[0].rcpts, vec!["user@local.test"]);
    assert_eq!(upstream_rcpts(&up), vec!["RCPT TO:<user@local.test>"]);
}

#[test]
fn address_tricks_do_not_open_a_relay() {
    let (up, gw) = untrusted();
    let denied = [
        "user%other.test@local.test",
        "user%other.test@LOCAL.TEST",
        "@local.test:user@other.test",
        "@local.test,@local.test:user@other.test",
        "other.test!user@local.test",
        "\"user@other.test\"@local.test",
        "\"user%other.test\"@local.test",
        "\"other.test!user\"@local.test",
        "user@other.test.",
        "user@Other.Test",
        "user@local.test.other.test",
        "user@[127.0.0.1]",
    ];
    for rcpt in denied {
        let mut c = in_transaction(&gw);
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"), 554);
        assert!(r.starts_with("554 5.7.1 "), "{rcpt}: {r}");
        assert!(r.contains("Relay access denied"), "{rcpt}: {r}");
    }
    assert!(upstream_rcpts(&up).is_empty(), "{:?}", upstream_rcpts(&up));

    // What really leads to a local domain is accepted; a source route is
    // dropped and only the final mailbox goes upstream.
    let accepted = [
        ("user@local.test", "user@local.test"),
        ("user@LOCAL.Test", "user@LOCAL.Test"),
        ("user@local.test.", "user@local.test."),
        ("@other.test:user@local.test", "user@local.test"),
        ("\"first last\"@local.test", "\"first last\"@local.test"),
        ("postmaster", "postmaster"),
    ];
    for (rcpt, _) in accepted {
        let mut c = in_transaction(&gw);
        c.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    // Sessions may share pooled upstream connections, so compare the
    // recipients seen, not the order of connections.
    let mut seen = upstream_rcpts(&up);
    let mut want: Vec<String> = accepted
        .iter()
        .map(|(_, fwd)| format!("RCPT TO:<{fwd}>"))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn relay_probes_count_as_errors() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, &format!("{UNTRUSTED}limits: {{ max_errors: 3 }}\n"));
    let mut c = in_transaction(&gw);
    c.cmd("RCPT TO:<a@one.test>", 554);
    c.cmd("RCPT TO:<a@two.test>", 554);
    c.cmd("RCPT TO:<a@three.test>", 554);
    c.expect(421);
    assert!(c.is_closed());
}

#[test]
fn trusted_networks_relay_anywhere() {
    // The default trusts loopback only...
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    let mut c = in_transaction(&gw);
    c.cmd("RCPT TO:<user@anywhere.test>", 250);
    // ...and so does an explicit network list containing the client.
    let gw = Gateway::with_upstream(
        &up,
        "relay: { local_domains: [local.test], trusted_networks: [\"10.0.0.0/8\", 127.0.0.1] }\n",
    );
    let mut c = in_transaction(&gw);
    c.cmd("RCPT TO:<user@anywhere.test>", 250);
    // A list without it does not.
    let gw = Gateway::with_upstream(
        &up,
        "relay: { trusted_networks: [\"10.0.0.0/8\", \"::1/128\"] }\n",
    );
    let mut c = in_transaction(&gw);
    c.cmd("RCPT TO:<user@anywhere.test>", 554);
}

#[test]
fn spool_mode_is_deny_by_default_too() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "spool_dir: \"{}\"\n{UNTRUSTED}",
        dir.path().display()
    ));
    let mut c = in_transaction(&gw);
    c.cmd("RCPT TO:<user@other.test>", 554);
    c.cmd("RCPT TO:<user@local.test>", 250);
}
