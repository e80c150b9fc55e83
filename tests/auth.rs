//! SMTP AUTH over real sockets: PLAIN and LOGIN with and without initial
//! response, bad credentials, cancel, unknown and weak mechanisms, sequence
//! errors, the failure limit, AUTH only under TLS, `auth: required`, the
//! sender/login check, lettre with credentials, and `hash-password`.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::certs::Pki;
use common::tls_client::TlsClient;
use common::{message, Client, Gateway, MockOptions, MockUpstream};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Address, SmtpTransport, Transport};
use smtpgate::config::Config;
use smtpgate::filter::{Context, Filter, FilterChain, Verdict};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Listener indexes in [`Setup::config`].
const SUBMISSION: usize = 0;
const IMPLICIT: usize = 1;
const OPTIONAL: usize = 2;
const LOOPBACK_PLAIN: usize = 3;

/// A gateway with users alice (argon2, senders alice@example.com and
/// @alice.test) and bob (bcrypt, sender bob@example.com); nobody trusted.
struct Setup {
    pki: Pki,
    up: MockUpstream,
    gw: Gateway,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_filters(FilterChain::new())
    }

    fn with_filters(filters: FilterChain) -> Setup {
        let pki = Pki::new("gate");
        let alice = smtpgate::auth::hash_password("wonderland").unwrap();
        let bob = bcrypt::hash("builder", 4).unwrap();
        let users = pki.dir.path().join("users.yaml");
        std::fs::write(
            &users,
            format!(
                "users:\n  - name: alice\n    password_hash: \"{alice}\"\n    senders: [alice@example.com, \"@alice.test\"]\n  - {{ name: bob, password_hash: \"{bob}\", senders: [bob@example.com] }}\n"
            ),
        )
        .unwrap();
        let up = MockUpstream::start(MockOptions::default());
        let yaml = format!(
            "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}auth: {{ users_file: \"{}\" }}\n\
             relay: {{ local_domains: [local.test], trusted_networks: [] }}\n\
             listen:\n\
             \x20 - {{ addr: \"127.0.0.1:0\", starttls: required, auth: required }}\n\
             \x20 - {{ addr: \"127.0.0.1:0\", tls: implicit }}\n\
             \x20 - {{ addr: \"127.0.0.1:0\", starttls: optional }}\n\
             \x20 - {{ addr: \"127.0.0.1:0\", starttls: none, auth: optional, plaintext_auth: true }}\n",
            up.addr,
            pki.tls_yaml(),
            users.display()
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let gw = Gateway::start_with_filters(config, filters);
        Setup { pki, up, gw }
    }

    /// A TLS session on the implicit-TLS listener, after EHLO.
    fn tls(&self) -> TlsClient {
        let mut t = TlsClient::implicit(self.gw.addrs[IMPLICIT], self.pki.client_config());
        t.cmd("EHLO client.test", 250);
        t
    }

    /// A plain session on listener `i`, after EHLO.
    fn plain(&self, i: usize) -> (Client, String) {
        let mut c = Client::connect(self.gw.addrs[i]);
        c.expect(220);
        let ehlo = c.cmd("EHLO client.test", 250);
        (c, ehlo)
    }
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

fn plain_token(user: &str, pass: &str) -> String {
    b64(&format!("\0{user}\0{pass}"))
}

#[test]
fn plain_with_initial_response_then_relay_anywhere() {
    let s = Setup::new();
    let mut t = s.tls();
    let r = t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
    assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
    // Authenticated: relaying to a foreign domain is allowed.
    let reply = t.send_message(
        "alice@example.com",
        &["someone@far.test"],
        &message("authed", "hi\r\n"),
    );
    assert_eq!(reply.code, 250, "{}", reply.raw);
    let d = s.up.wait_for(1);
    let text = String::from_utf8_lossy(&d[0].data).to_string();
    assert!(text.contains("with ESMTPSA id"), "{text}");
    // The Received header does not reveal the login.
    let received = &text[..text.find("\r\nFrom: ").unwrap()];
    assert!(!received.contains("alice"), "{received}");
}

#[test]
fn plain_without_initial_response() {
    let s = Setup::new();
    let mut t = s.tls();
    let challenge = t.cmd("AUTH PLAIN", 334);
    assert_eq!(challenge, "334 \r\n");
    t.cmd(&plain_token("alice", "wonderland"), 235);
}

#[test]
fn login_with_and_without_initial_response() {
    let s = Setup::new();
    let mut t = s.tls();
    assert_eq!(t.cmd("AUTH LOGIN", 334), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(t.cmd(&b64("bob"), 334), "334 UGFzc3dvcmQ6\r\n");
    t.cmd(&b64("builder"), 235);

    let mut t = s.tls();
    assert_eq!(
        t.cmd(&format!("AUTH LOGIN {}", b64("alice")), 334),
        "334 UGFzc3dvcmQ6\r\n"
    );
    t.cmd(&b64("wonderland"), 235);
}

#[test]
fn long_sasl_responses_fit_after_a_challenge() {
    let s = Setup::new();
    let mut t = s.tls();
    // 3000 characters of password: past the 512-octet command line, within
    // the 12288 octets RFC 4954 asks for in a response.
    let long = "x".repeat(3000);
    t.cmd("AUTH LOGIN", 334);
    t.cmd(&b64("alice"), 334);
    t.cmd(&b64(&long), 535);
    t.cmd("AUTH PLAIN", 334);
    t.cmd(&plain_token("alice", &long), 535);
    // Commands are held to the command line limit again.
    let r = t.cmd(&format!("NOOP {}", "y".repeat(600)), 500);
    assert!(r.contains("5.5.6"), "{r}");
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
}

#[test]
fn bad_password_and_unknown_user_get_the_same_535() {
    let s = Setup::new();
    let mut t = s.tls();
    let wrong = t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "looking-glass")),
        535,
    );
    assert_eq!(wrong, "535 5.7.8 Authentication credentials invalid\r\n");
    let unknown = t.cmd(&format!("AUTH PLAIN {}", plain_token("mallory", "x")), 535);
    assert_eq!(unknown, wrong);
    // Still not authenticated: no relaying.
    t.cmd("MAIL FROM:<alice@example.com>", 250);
    let r = t.cmd("RCPT TO:<someone@far.test>", 554);
    assert!(r.contains("5.7.1"), "{r}");
}

#[test]
fn cancel_unknown_and_weak_mechanisms() {
    let s = Setup::new();
    let mut t = s.tls();
    t.cmd("AUTH LOGIN", 334);
    assert_eq!(t.cmd("*", 501), "501 5.7.0 Authentication cancelled\r\n");
    t.cmd("AUTH PLAIN", 334);
    assert_eq!(t.cmd("*", 501), "501 5.7.0 Authentication cancelled\r\n");
    let r = t.cmd("AUTH XOAUTH2 abc", 504);
    assert_eq!(r, "504 5.5.4 Unrecognized authentication type\r\n");
    let r = t.cmd("AUTH CRAM-MD5", 534);
    assert_eq!(r, "534 5.7.9 Authentication mechanism is too weak\r\n");
    let r = t.cmd("AUTH PLAIN !!notbase64!!", 501);
    assert!(r.starts_with("501 5.5.2"), "{r}");
    // None of these counted as a failed login: the right password works.
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
}

#[test]
fn auth_twice_or_in_a_transaction_is_a_bad_sequence() {
    let s = Setup::new();
    let mut t = s.tls();
    t.cmd("MAIL FROM:<x@local.test>", 250);
    let r = t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        503,
    );
    assert!(r.contains("transaction in progress"), "{r}");
    t.cmd("RSET", 250);
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
    let r = t.cmd(
        &format!("AUTH PLAIN {}", plain_token("bob", "builder")),
        503,
    );
    assert!(r.contains("already authenticated"), "{r}");
    // AUTH before EHLO.
    let mut t = TlsClient::implicit(s.gw.addrs[IMPLICIT], s.pki.client_config());
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        503,
    );
}

#[test]
fn three_failures_close_the_session() {
    let s = Setup::new();
    let mut t = s.tls();
    for _ in 0..2 {
        t.cmd(
            &format!("AUTH PLAIN {}", plain_token("alice", "guess")),
            535,
        );
    }
    t.cmd("AUTH LOGIN", 334);
    t.cmd(&b64("alice"), 334);
    t.cmd(&b64("guess"), 535);
    let r = t.expect(421);
    assert!(r.starts_with("421 4.7.0 "), "{r}");
    assert!(t.is_closed());
}

#[test]
fn auth_is_offered_only_under_tls() {
    let s = Setup::new();
    // starttls: optional: no AUTH in plain text, 538 if tried.
    let (mut c, ehlo) = s.plain(OPTIONAL);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = c.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        538,
    );
    assert_eq!(
        r,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    let mut t = TlsClient::starttls(c, s.pki.client_config());
    let ehlo = t.cmd("EHLO client.test", 250);
    assert!(ehlo.contains("AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
    // Once authenticated, AUTH is no longer advertised.
    let ehlo = t.cmd("EHLO client.test", 250);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");

    // starttls: required: 530 before STARTTLS, for AUTH and MAIL alike.
    let (mut c, ehlo) = s.plain(SUBMISSION);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = c.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        530,
    );
    assert_eq!(r, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    let r = c.cmd("MAIL FROM:<alice@example.com>", 530);
    assert_eq!(r, "530 5.7.0 Must issue a STARTTLS command first\r\n");
}

#[test]
fn auth_required_before_mail_on_the_submission_listener() {
    let s = Setup::new();
    let (c, _) = s.plain(SUBMISSION);
    let mut t = TlsClient::starttls(c, s.pki.client_config());
    t.cmd("EHLO client.test", 250);
    let r = t.cmd("MAIL FROM:<alice@example.com>", 530);
    assert_eq!(r, "530 5.7.0 Authentication required\r\n");
    // Even mail to a local domain needs AUTH on this listener.
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
    let reply = t.send_message(
        "alice@example.com",
        &["friend@far.test"],
        &message("submitted", "x\r\n"),
    );
    assert_eq!(reply.code, 250, "{}", reply.raw);
    assert_eq!(s.up.wait_for(1).len(), 1);
}

#[test]
fn plaintext_auth_on_a_loopback_listener() {
    let s = Setup::new();
    let (mut c, ehlo) = s.plain(LOOPBACK_PLAIN);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd(
        &format!("AUTH PLAIN {}", plain_token("bob", "builder")),
        235,
    );
    let reply = c.send_message("bob@example.com", &["x@far.test"], &message("lo", "x\r\n"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    let d = s.up.wait_for(1);
    let text = String::from_utf8_lossy(&d[0].data).to_string();
    assert!(text.contains("with ESMTPA id"), "{text}");
}

#[test]
fn a_logged_in_user_cannot_forge_other_senders() {
    let s = Setup::new();
    let mut t = s.tls();
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
    let r = t.cmd("MAIL FROM:<bob@example.com>", 553);
    assert_eq!(
        r,
        "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice\r\n"
    );
    t.cmd("MAIL FROM:<Alice@EXAMPLE.com>", 250);
    t.cmd("RSET", 250);
    t.cmd("MAIL FROM:<anything@alice.test>", 250);
    t.cmd("RSET", 250);
    let r = t.cmd("MAIL FROM:<x@sub.alice.test>", 553);
    assert!(r.contains("not owned"), "{r}");
    // The null sender names nobody.
    t.cmd("MAIL FROM:<>", 250);
    t.cmd("RSET", 250);
    // AUTH= on MAIL is accepted and not passed on.
    t.cmd("MAIL FROM:<alice@example.com> AUTH=<>", 250);
    t.cmd("RCPT TO:<x@far.test>", 250);
    t.cmd("RSET", 250);
    let mails: Vec<String> = s.up.commands()[0]
        .iter()
        .filter(|l| l.starts_with("MAIL"))
        .cloned()
        .collect();
    assert!(mails.iter().all(|l| !l.contains("AUTH=")), "{mails:?}");
    assert!(mails.iter().all(|l| !l.contains("bob@")), "{mails:?}");
}

/// Rejects user bob at the auth stage; records the user for alice.
struct AuthStage;

impl Filter for AuthStage {
    fn name(&self) -> &str {
        "auth-stage"
    }
    fn auth(&self, ctx: &mut Context) -> Verdict {
        match ctx.auth_user.as_deref() {
            Some("bob") => Verdict::Reject(smtpgate::proto::Reply::new(
                535,
                smtpgate::proto::EnhancedCode::new(5, 7, 8),
                "bob is on holiday",
            )),
            _ => Verdict::Continue,
        }
    }
}

#[test]
fn auth_stage_filters_run_after_a_successful_login() {
    let mut chain = FilterChain::new();
    chain.push(Arc::new(AuthStage));
    let s = Setup::with_filters(chain);
    let mut t = s.tls();
    let r = t.cmd(
        &format!("AUTH PLAIN {}", plain_token("bob", "builder")),
        535,
    );
    assert!(r.contains("bob is on holiday"), "{r}");
    // bob is not logged in: alice can still log in on this session.
    t.cmd(
        &format!("AUTH PLAIN {}", plain_token("alice", "wonderland")),
        235,
    );
}

#[test]
fn lettre_submits_with_credentials() {
    let s = Setup::new();
    let tls = TlsParameters::builder("localhost".to_string())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(s.pki.ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let transport = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(s.gw.addrs[SUBMISSION].port())
            .tls(Tls::Required(tls.clone()))
            .credentials(Credentials::new("alice".into(), "wonderland".into()))
            .authentication(vec![mechanism])
            .build();
        let envelope = Envelope::new(
            Some("alice@example.com".parse::<Address>().unwrap()),
            vec!["bob@far.test".parse::<Address>().unwrap()],
        )
        .unwrap();
        let raw = message("lettre-auth", "x\r\n");
        transport
            .send_raw(&envelope, raw.as_bytes())
            .unwrap_or_else(|e| panic!("{mechanism:?}: {e}"));
    }
    assert_eq!(s.up.wait_for(2).len(), 2);

    let bad = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(s.gw.addrs[SUBMISSION].port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new("alice".into(), "nope".into()))
        .build();
    let envelope = Envelope::new(
        Some("alice@example.com".parse::<Address>().unwrap()),
        vec!["bob@far.test".parse::<Address>().unwrap()],
    )
    .unwrap();
    assert!(bad.send_raw(&envelope, b"Subject: x\r\n\r\nx\r\n").is_err());
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim_end();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let stored = smtpgate::auth::StoredHash::parse(hash).unwrap();
    assert!(stored.verify(b"correct horse battery staple"));
    assert!(!stored.verify(b"correct horse battery staple\n"));

    // An empty password is refused.
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}
