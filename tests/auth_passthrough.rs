//! AUTH passthrough (`auth.backends: [upstream]`) against a real Postfix
//! whose SASL is a real Dovecot auth service, through the real binary:
//! the right password gets `235` and the mail goes out over the very
//! upstream session that logged in (Postfix logs `sasl_username=` and
//! stamps "Authenticated sender"), with a raw client (PLAIN) and swaks
//! (LOGIN); a wrong password gets `535` and the fail2ban line; Postfix
//! stopped, or its Dovecot stopped, gets `454`, never `535`, and a log
//! line naming the backend;
//! once the logged-in connection is gone the next MAIL gets `451` even
//! though Postfix is back, since a new connection would not be logged in;
//! and `smtpgate check` refuses the backend with a plaintext upstream.
//!
//! Each test runs its own Dovecot and Postfix: Postfix tells Dovecot the
//! gateway's address, and Dovecot delays answers to an address that
//! failed before.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::certs::Pki;
use common::dovecot::Dovecot;
use common::postfix::Postfix;
use common::Client;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

/// The one SASL user, known to Dovecot only (the gateway has no users file).
const USER: &str = "alice@example.com";
const PASSWORD: &str = "wonderland";

/// Dovecot, Postfix behind it, and the gateway in front.
struct Stack {
    gate: Smtpgate,
    postfix: Postfix,
    dovecot: Dovecot,
    _pki: Pki,
}

impl Stack {
    fn start() -> Stack {
        let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
        let pki = Pki::new("postfix.pf.test");
        let postfix = Postfix::start(
            &dovecot.socket(),
            &pki.cert_path(),
            &pki.key_path(),
            &["alice", "bob"],
        );
        let upstream = format!(
            "upstream: {{ addr: \"{}\", starttls: required, ca_file: \"{}\", server_name: localhost }}\n",
            postfix.addr(),
            pki.ca_path().display()
        );
        let gate = Smtpgate::start(&upstream);
        Stack {
            gate,
            postfix,
            dovecot,
            _pki: pki,
        }
    }
}

/// The real binary, with its log in a temp dir; killed by PID on drop.
struct Smtpgate {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Smtpgate {
    /// A gateway whose only AUTH backend is the upstream, with this
    /// `upstream:` line, on a loopback listener that allows plaintext AUTH.
    /// No domain is local: only a logged-in client may relay.
    fn start(upstream: &str) -> Smtpgate {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, gateway_yaml(dir.path(), addr, upstream)).unwrap();
        let log = std::fs::File::create(dir.path().join("smtpgate.log")).unwrap();
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Smtpgate { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(gw.addr).is_err() {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("smtpgate exited with {status}: {}", gw.log());
            }
            assert!(Instant::now() < deadline, "smtpgate did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    /// What the gateway logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtpgate.log")).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the log has a line with every one of `words`.
    fn wait_log_line(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no smtpgate log line with {words:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A session after EHLO.
    fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.expect(220);
        c.cmd("EHLO client.test", 250);
        c
    }
}

impl Drop for Smtpgate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("smtpgate log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's config: no users file, the upstream backend only.
fn gateway_yaml(dir: &Path, addr: SocketAddr, upstream: &str) -> String {
    format!(
        "hostname: gate.test\nspool_dir: \"{}\"\n{upstream}\
         auth:\n  backends:\n    - upstream: {{ timeout_ms: 20000 }}\n\
         relay: {{ local_domains: [], trusted_networks: [] }}\n\
         listen:\n  - {{ addr: \"{addr}\", auth: optional, plaintext_auth: true }}\n",
        dir.join("spool").display(),
    )
}

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

/// A message with a subject to find it by.
fn message(subject: &str) -> String {
    format!(
        "From: <{USER}>\r\nTo: <alice@pf.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@client.test>\r\n\r\nHello through the logged-in session.\r\n"
    )
}

#[test]
fn the_right_password_logs_in_at_postfix_and_the_mail_goes_over_that_session() {
    let s = Stack::start();
    let mut c = s.gate.client();
    // Not logged in: no relaying to a domain that is not local.
    c.cmd(&format!("MAIL FROM:<{USER}>"), 250);
    let refused = c.cmd("RCPT TO:<alice@pf.test>", 554);
    assert!(refused.contains("5.7.1"), "{refused}");
    c.cmd("RSET", 250);
    c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235);
    s.gate
        .wait_log_line(&["logged in as", USER, &s.postfix.addr()]);
    let reply = c.send_message(USER, &["alice@pf.test"], &message("passthrough-plain"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    // Postfix took the mail on the session that logged in as the user.
    let line = s
        .postfix
        .wait_log_line(&["sasl_method=PLAIN", &format!("sasl_username={USER}")]);
    assert!(line.contains("client="), "{line}");
    let delivered = s.postfix.wait_delivered("alice", "passthrough-plain");
    assert!(
        delivered.contains(&format!("(Authenticated sender: {USER})")),
        "{delivered}"
    );
    // A second transaction goes over the same logged-in session.
    let reply = c.send_message(USER, &["bob@pf.test"], &message("passthrough-second"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    let delivered = s.postfix.wait_delivered("bob", "passthrough-second");
    assert!(
        delivered.contains(&format!("(Authenticated sender: {USER})")),
        "{delivered}"
    );
    c.cmd("QUIT", 221);
    // Both came in on one Postfix session: the same smtpd process.
    let log = s.postfix.log();
    let smtpds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sasl_username="))
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("postfix/smtpd["))
        })
        .collect();
    assert_eq!(smtpds.len(), 2, "{log}");
    assert_eq!(smtpds[0], smtpds[1], "{log}");

    // swaks, with LOGIN this time: the whole message through the gateway.
    let out = Command::new("swaks")
        .args(["--server", &s.gate.addr.to_string()])
        .args(["--from", USER, "--to", "bob@pf.test"])
        .args(["--auth", "LOGIN", "--auth-user", USER])
        .args(["--auth-password", PASSWORD])
        .args([
            "--helo",
            "client.test",
            "--header",
            "Subject: passthrough-swaks",
        ])
        .output()
        .expect("swaks runs (scripts/install-test-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("<-  235"), "{text}");
    s.postfix
        .wait_log_line(&["sasl_method=LOGIN", &format!("sasl_username={USER}")]);
    let delivered = s.postfix.wait_delivered("bob", "passthrough-swaks");
    assert!(
        delivered.contains(&format!("(Authenticated sender: {USER})")),
        "{delivered}"
    );
}

#[test]
fn a_wrong_password_gets_535_and_counts_as_a_failure() {
    let s = Stack::start();
    let mut c = s.gate.client();
    let reply = c.cmd(&format!("AUTH PLAIN {}", plain(USER, "wrong")), 535);
    assert!(reply.contains("5.7.8"), "{reply}");
    s.gate
        .wait_log_line(&["auth failed: client=127.0.0.1", USER, "failures=1"]);
    // The upstream's refusal: Postfix saw the login fail.
    s.postfix.wait_log_line(&["authentication failed"]);
    // The session may try again, and the right password works.
    c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235);
    let reply = c.send_message(USER, &["alice@pf.test"], &message("after-a-failure"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    s.postfix.wait_delivered("alice", "after-a-failure");
}

#[test]
fn postfix_stopped_gets_454_never_535() {
    let mut s = Stack::start();
    s.postfix.stop();
    let mut c = s.gate.client();
    let reply = c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 454);
    assert!(reply.contains("4.7.0"), "{reply}");
    let line = s
        .gate
        .wait_log_line(&["auth backend unavailable", "backend=upstream"]);
    assert!(line.contains("reason="), "{line}");
    s.gate
        .wait_log_line(&["auth unavailable", USER, "backend=upstream"]);
    assert!(!s.gate.log().contains("auth failed"), "{}", s.gate.log());
}

#[test]
fn postfix_without_its_sasl_backend_gets_454_never_535() {
    let mut s = Stack::start();
    // Postfix cannot check passwords: its smtpd gives up on the session
    // (Postfix 3.7 resets it), or says 4xx to AUTH, or offers none. Either
    // way the client hears 454.
    s.dovecot.stop();
    let mut c = s.gate.client();
    let reply = c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 454);
    assert!(reply.contains("4.7.0"), "{reply}");
    s.gate
        .wait_log_line(&["auth backend unavailable", "backend=upstream"]);
    assert!(!s.gate.log().contains("auth failed"), "{}", s.gate.log());
    // The session goes on, not logged in.
    c.cmd("NOOP", 250);
}

#[test]
fn once_the_logged_in_connection_is_gone_mail_gets_451_not_a_new_connection() {
    let mut s = Stack::start();
    let mut c = s.gate.client();
    c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235);
    let reply = c.send_message(USER, &["alice@pf.test"], &message("before-the-restart"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    s.postfix.wait_delivered("alice", "before-the-restart");
    // Postfix is back on the same port at once: a connection opened now
    // would work, but it would not be logged in as the user.
    s.postfix.restart();
    let reply = c.cmd(&format!("MAIL FROM:<{USER}>"), 451);
    assert!(reply.contains("4.4.1"), "{reply}");
    s.gate
        .wait_log_line(&["logged in for this client", "is gone"]);
    // It stays so for the session; a new session logs in afresh.
    c.cmd(&format!("MAIL FROM:<{USER}>"), 451);
    let mut again = s.gate.client();
    again.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235);
    let reply = again.send_message(USER, &["alice@pf.test"], &message("after-the-restart"));
    assert_eq!(reply.code, 250, "{}", reply.raw);
    s.postfix.wait_delivered("alice", "after-the-restart");
}

#[test]
fn check_refuses_the_upstream_backend_with_a_plaintext_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let run = |upstream: &str| {
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, gateway_yaml(dir.path(), addr, upstream)).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for upstream in [
        "upstream: { addr: \"127.0.0.1:25\" }\n",
        "upstream: { addr: \"127.0.0.1:25\", starttls: opportunistic }\n",
    ] {
        let (ok, text) = run(upstream);
        assert!(!ok, "{upstream}: {text}");
        assert!(
            text.contains("auth.backends[0].upstream")
                && text.contains("`upstream.starttls: required`")
                && text.contains("in the clear"),
            "{upstream}: {text}"
        );
    }
    for upstream in [
        "upstream: { addr: \"127.0.0.1:25\", starttls: required }\n",
        "upstream: { addr: \"127.0.0.1:465\", tls: implicit }\n",
    ] {
        let (ok, text) = run(upstream);
        assert!(
            ok && text.contains("configuration OK"),
            "{upstream}: {text}"
        );
    }
}
