//! Rate limits with the in-memory store, over real sockets: connections
//! per minute, messages and recipients per hour, per client IP and per
//! authenticated user, the exemption of trusted networks, and the audit
//! trail of each refusal. (The Redis store: `rate_limits_redis.rs`.)

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{audit_records, Client, Gateway};
use std::time::Duration;

/// A spool-mode gateway with an audit file and a loopback listener that
/// allows AUTH PLAIN in clear, users alice and bob (password "pw").
struct Setup {
    dir: tempfile::TempDir,
    gw: Gateway,
}

impl Setup {
    fn new(protection: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let hash = smtpgate::auth::hash_password("pw").unwrap();
        let users = dir.path().join("users.yaml");
        std::fs::write(
            &users,
            format!(
                "users:\n  - {{ name: alice, password_hash: \"{hash}\", senders: [\"*\"] }}\n  \
                 - {{ name: bob, password_hash: \"{hash}\", senders: [\"*\"] }}\n"
            ),
        )
        .unwrap();
        let yaml = format!(
            "hostname: gate.test\nspool_dir: \"{}\"\naudit: {{ path: \"{}\" }}\n\
             auth: {{ users_file: \"{}\" }}\n\
             listen: [{{ addr: \"127.0.0.1:0\", auth: optional, plaintext_auth: true }}]\n\
             {protection}",
            dir.path().join("spool").display(),
            dir.path().join("audit.jsonl").display(),
            users.display(),
        );
        let gw = Gateway::start(&yaml);
        Setup { dir, gw }
    }

    /// A client after EHLO.
    fn client(&self) -> Client {
        let mut c = self.gw.client();
        c.cmd("EHLO a.test", 250);
        c
    }

    /// A client logged in as `user`, after EHLO.
    fn login(&self, user: &str) -> Client {
        let mut c = self.client();
        let token = STANDARD.encode(format!("\0{user}\0pw"));
        c.cmd(&format!("AUTH PLAIN {token}"), 235);
        c
    }

    /// The first audit record matching `pick`, waiting for it.
    fn record(&self, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let path = self.dir.path().join("audit.jsonl");
        for _ in 0..500 {
            if let Some(r) = audit_records(&path, 0).into_iter().find(&pick) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no such audit record in {:?}", audit_records(&path, 0));
    }
}

const NOT_EXEMPT: &str = "  exempt_networks: []\n";

/// Sends one whole message; returns the final reply code.
fn deliver(c: &mut Client, i: usize) -> u16 {
    c.send_message(
        "a@x.test",
        &["b@y.test"],
        &common::message(&format!("m{i}"), "hi\r\n"),
    )
    .code
}

#[test]
fn messages_per_hour_per_ip_refuse_the_mail_over_the_limit_with_450() {
    let s = Setup::new(&format!(
        "protection:\n{NOT_EXEMPT}  rate_limits: {{ per_ip: {{ messages_per_hour: 2 }} }}\n"
    ));
    let mut c = s.client();
    assert_eq!(deliver(&mut c, 1), 250);
    // A second session from the same IP shares the count.
    let mut c2 = s.client();
    assert_eq!(deliver(&mut c2, 2), 250);
    let raw = c2.cmd("MAIL FROM:<a@x.test>", 450);
    assert!(raw.starts_with("450 4.7.1 "), "{raw}");
    // The session goes on; the client may come back later.
    c2.cmd("NOOP", 250);
    c2.cmd("MAIL FROM:<a@x.test>", 450);

    let rec = s.record(|r| r["decided_by"] == "rate_limits:per_ip.messages_per_hour");
    assert_eq!(rec["type"], "transaction");
    assert_eq!(rec["verdict"], "tempfailed");
    assert_eq!(rec["stage"], "mail");
    assert!(rec["reply"].as_str().unwrap().starts_with("450 4.7.1"));
}

#[test]
fn recipients_per_hour_per_ip_refuse_each_rcpt_over_the_limit() {
    let s = Setup::new(&format!(
        "protection:\n{NOT_EXEMPT}  rate_limits: {{ per_ip: {{ recipients_per_hour: 3 }} }}\n"
    ));
    let mut c = s.client();
    c.cmd("MAIL FROM:<a@x.test>", 250);
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<r{i}@y.test>"), 250);
    }
    let raw = c.cmd("RCPT TO:<r3@y.test>", 450);
    assert!(raw.starts_with("450 4.7.1 "), "{raw}");
    // The message goes to the recipients that were accepted.
    c.cmd("DATA", 354);
    c.send(&common::message("x", "hi\r\n"));
    c.send(".\r\n");
    c.expect(250);
    c.cmd("QUIT", 221);
    let rec = s.record(|r| r["verdict"] == "delivered");
    let rcpts = rec["rcpts"].as_array().unwrap();
    assert_eq!(rcpts.len(), 4);
    assert_eq!(rcpts[3]["address"], "r3@y.test");
    assert_eq!(rcpts[3]["by"], "rate_limits:per_ip.recipients_per_hour");
    assert!(rcpts[3]["reply"].as_str().unwrap().starts_with("450 4.7.1"));
}

#[test]
fn pipelined_recipients_over_the_rate_get_their_450_in_order() {
    let s = Setup::new(&format!(
        "protection:\n{NOT_EXEMPT}  rate_limits: {{ per_ip: {{ recipients_per_hour: 2 }} }}\n"
    ));
    let mut c = s.client();
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nNOOP\r\n");
    for code in [250, 250, 250, 450, 250] {
        c.expect(code);
    }
}

#[test]
fn connections_per_minute_per_ip_refuse_the_connection_over_the_limit() {
    let s = Setup::new(&format!(
        "protection:\n{NOT_EXEMPT}  rate_limits: {{ per_ip: {{ connections_per_minute: 2 }} }}\n"
    ));
    let mut a = s.client();
    a.cmd("QUIT", 221);
    let _b = s.client();
    let mut c = Client::connect(s.gw.addr);
    let r = c.reply();
    assert_eq!(r.code, 421, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("421 4.7.0 gate.test Error: connection rate limit exceeded"),
        "{}",
        r.raw
    );
    assert!(c.is_closed());
    let rec = s.record(|r| r["decided_by"] == "rate_limits:per_ip.connections_per_minute");
    assert_eq!(rec["type"], "session");
    assert_eq!(rec["end"], "connection rate limit");
}

#[test]
fn per_user_limits_follow_the_login_and_apply_to_exempt_clients_too() {
    // Loopback is exempt from the per-IP limit (trusted by default), not
    // from the per-user one.
    let s = Setup::new(
        "protection:\n  rate_limits:\n    per_ip: { messages_per_hour: 1 }\n    \
         per_user: { messages_per_hour: 2 }\n",
    );
    let mut a1 = s.login("alice");
    assert_eq!(deliver(&mut a1, 1), 250);
    let mut a2 = s.login("ALICE");
    assert_eq!(deliver(&mut a2, 2), 250);
    let raw = a2.cmd("MAIL FROM:<a@x.test>", 450);
    assert!(raw.starts_with("450 4.7.1 "), "{raw}");
    // Another user, and clients without a login, are not affected.
    let mut b = s.login("bob");
    assert_eq!(deliver(&mut b, 3), 250);
    let mut anon = s.client();
    for i in 0..3 {
        assert_eq!(deliver(&mut anon, 10 + i), 250);
    }
    let rec = s.record(|r| r["decided_by"] == "rate_limits:per_user.messages_per_hour");
    assert_eq!(rec["auth_user"], "alice");
}

#[test]
fn per_user_recipients_and_logins_per_minute() {
    let s = Setup::new(
        "protection:\n  rate_limits:\n    \
         per_user: { recipients_per_hour: 1, connections_per_minute: 2 }\n",
    );
    let mut a = s.login("alice");
    a.cmd("MAIL FROM:<a@x.test>", 250);
    a.cmd("RCPT TO:<one@y.test>", 250);
    a.cmd("RCPT TO:<two@y.test>", 450);
    let _second = s.login("alice");
    // The third login within the minute: refused and closed, before 235.
    let mut third = s.client();
    let token = STANDARD.encode("\0alice\0pw");
    let raw = third.cmd(&format!("AUTH PLAIN {token}"), 421);
    assert!(
        raw.starts_with("421 4.7.0 gate.test Error: connection rate limit exceeded"),
        "{raw}"
    );
    assert!(third.is_closed());
    // A wrong password is not a login: it is not counted, and gets 535.
    let mut wrong = s.client();
    let token = STANDARD.encode("\0alice\0nope");
    wrong.cmd(&format!("AUTH PLAIN {token}"), 535);
    let rec = s.record(|r| r["decided_by"] == "rate_limits:per_user.connections_per_minute");
    assert_eq!(rec["type"], "session");
    assert!(rec["reply"].as_str().unwrap().starts_with("421 4.7.0"));
}

#[test]
fn relayed_pipelined_recipients_over_the_rate_never_reach_the_upstream() {
    let up = common::MockUpstream::start(common::MockOptions::default());
    let gw = Gateway::with_upstream(
        &up,
        "protection:\n  exempt_networks: []\n  rate_limits: { per_ip: { recipients_per_hour: 2 } }\n",
    );
    let mut c = gw.client();
    c.cmd("EHLO a.test", 250);
    c.send(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\n\
         RCPT TO:<c@y.test>\r\nRCPT TO:<d@y.test>\r\nNOOP\r\n",
    );
    // In command order: the upstream's answers and ours interleaved right.
    for code in [250, 250, 250, 450, 450, 250] {
        c.expect(code);
    }
    c.cmd("DATA", 354);
    c.send(&common::message("relayed", "hi\r\n"));
    c.send(".\r\n");
    c.expect(250);
    let delivered = up.wait_for(1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpts, ["a@y.test", "b@y.test"]);
}
