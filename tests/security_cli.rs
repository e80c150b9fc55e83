//! The real binary with a security configuration: `check` summarises it
//! or names the broken line, and a failed login is logged with the client
//! IP for fail2ban — never with the password.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::certs::Pki;
use common::Client;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

/// Writes a users file with alice/wonderland; returns its path.
fn users_file(pki: &Pki) -> std::path::PathBuf {
    let hash = smtpgate::auth::hash_password("wonderland").unwrap();
    let path = pki.dir.path().join("users.yaml");
    std::fs::write(
        &path,
        format!(
            "users:\n  - name: alice\n    password_hash: \"{hash}\"\n    senders: [alice@example.com]\n"
        ),
    )
    .unwrap();
    path
}

fn check(pki: &Pki, yaml: &str) -> (bool, String) {
    let path = pki.dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_summarises_tls_auth_relay_and_upstream() {
    let pki = Pki::new("gate");
    let users = users_file(&pki);
    let yaml = format!(
        "hostname: mx.example.com\n{}auth: {{ users_file: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:25\" }}\n  - {{ addr: \"127.0.0.1:587\", starttls: required, auth: required }}\n  - {{ addr: \"127.0.0.1:465\", tls: implicit }}\n\
         relay: {{ local_domains: [example.com] }}\n\
         upstream: {{ addr: \"10.0.0.5:25\", fallback: [\"10.0.0.6:25\"], starttls: required, ca_file: \"{}\" }}\n",
        pki.tls_yaml(),
        users.display(),
        pki.ca_path().display()
    );
    let (ok, text) = check(&pki, &yaml);
    assert!(ok, "{text}");
    for want in [
        "listen:    127.0.0.1:25 (starttls optional, auth optional), 127.0.0.1:587 (starttls required, auth required), 127.0.0.1:465 (implicit TLS, auth optional)",
        "upstream+: fallback 10.0.0.6:25 (a failed server is skipped for 60s); starttls required; certificate verified against ",
        "tls:       cert ",
        "auth:      users from ",
        "relay:     local domains example.com; trusted networks 127.0.0.0/8, ::1/128;",
        "configuration OK",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn check_names_the_line_of_a_broken_security_setting() {
    let pki = Pki::new("gate");
    let (ok, text) = check(
        &pki,
        "hostname: mx.example.com\nlisten:\n  - { addr: \"127.0.0.1:587\", starttls: required }\n",
    );
    assert!(!ok);
    assert!(
        text.contains("gateway.yaml:3: listen[0].starttls: STARTTLS needs a certificate"),
        "{text}"
    );

    // A broken users file: the gateway line that names it, then the
    // users file's own line.
    let users = pki.dir.path().join("users.yaml");
    std::fs::write(
        &users,
        "users:\n  - name: alice\n    password_hash: secret\n",
    )
    .unwrap();
    let (ok, text) = check(
        &pki,
        &format!(
            "hostname: mx.example.com\nauth:\n  users_file: \"{}\"\n",
            users.display()
        ),
    );
    assert!(!ok);
    assert!(text.contains("gateway.yaml:3: auth.users_file: "), "{text}");
    assert!(
        text.contains("users.yaml:3: users[0].password_hash: not a password hash"),
        "{text}"
    );

    // A key that does not match the certificate.
    let other = Pki::new("other");
    let (ok, text) = check(
        &pki,
        &format!(
            "hostname: mx.example.com\ntls:\n  cert: \"{}\"\n  key: \"{}\"\n",
            pki.cert_path().display(),
            other.key_path().display()
        ),
    );
    assert!(!ok);
    assert!(text.contains("gateway.yaml:4: tls.key: "), "{text}");
}

/// A free loopback port (bound, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until `addr` accepts connections.
fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("smtpgate exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("smtpgate did not start listening on {addr}");
}

#[test]
fn failed_logins_are_logged_with_the_client_ip_and_without_the_password() {
    let pki = Pki::new("gate");
    let users = users_file(&pki);
    let addr = free_port();
    let config = pki.dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nspool_dir: \"{}\"\nauth: {{ users_file: \"{}\" }}\nlisten:\n  - {{ addr: \"{addr}\", auth: optional, plaintext_auth: true }}\n",
            pki.dir.path().join("spool").display(),
            users.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(addr, &mut child);
    let mut c = Client::connect(addr);
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    let token = STANDARD.encode("\0alice\0Sup3rSecretGuess");
    c.cmd(&format!("AUTH PLAIN {token}"), 535);
    c.cmd("QUIT", 221);
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child.wait().unwrap();
    assert!(
        log.contains("auth failed: client=127.0.0.1 user=\"alice\" mechanism=PLAIN"),
        "{log}"
    );
    assert!(!log.contains("Sup3rSecretGuess"), "{log}");
    assert!(!log.contains(&token), "{log}");
}
