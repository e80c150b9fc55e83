//! AUTH against a real Dovecot auth service (`auth.backends: [dovecot]`),
//! through the real binary: right and wrong passwords with PLAIN and
//! LOGIN, from swaks, Python's smtplib and a raw client; the senders a
//! Dovecot user may use; three failures end the session with `421` and
//! the fail2ban line is written; Dovecot down gives `454`, never `535`,
//! and once it is back logins work again on the same gateway; the login
//! cache answers for a remembered login while Dovecot is down, and a
//! reload flushes it. Dovecot hears `lip=` (listener or PROXY header) and
//! EHLO lists only the mechanisms it offers. LDAP against a real slapd:
//! by DN template, or by a search as a service account (escaped filter,
//! ambiguous and refused searches are `454`); `check` wants one of them.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::dovecot::{Dovecot, Options};
use common::slapd::Slapd;
use common::{Client, MockOptions, MockUpstream};
use std::net::{IpAddr, Ipv4Addr};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

/// Dovecot's users: alice logs in with her address.
const USERS: &[(&str, &str)] = &[("alice@example.com", "wonderland"), ("bob", "builder")];

/// The Dovecot most tests share, started once per test binary.
fn dovecot() -> &'static Dovecot {
    static D: OnceLock<Dovecot> = OnceLock::new();
    D.get_or_init(|| Dovecot::start(USERS))
}

/// The slapd the LDAP tests share, started once per test binary.
fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(Slapd::start)
}

/// The `ldap:` backend line for the shared slapd, over LDAPS or StartTLS.
fn ldap_backend(starttls: bool, ca: &Path) -> String {
    let s = slapd();
    let url = if starttls {
        format!("ldap://127.0.0.1:{}", s.ldap_port)
    } else {
        format!("ldaps://127.0.0.1:{}", s.ldaps_port)
    };
    format!(
        "    - ldap: {{ url: \"{url}\", starttls: {starttls}, ca_file: \"{}\", \
         bind_dn: \"uid=%u,ou=people,dc=example,dc=com\", \
         sender_attributes: [mail, mailAlternateAddress], timeout_ms: 10000 }}\n",
        ca.display()
    )
}

/// A loopback address no other login of this binary came from: Dovecot
/// delays every answer to an IP that failed before (its auth penalty).
fn fresh_ip() -> IpAddr {
    static NEXT: AtomicU8 = AtomicU8::new(10);
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

/// The real binary, with its log in a temp dir; killed by PID on drop.
struct Smtpgate {
    child: Child,
    addr: SocketAddr,
    /// A listener behind a (pretend) balancer: PROXY headers from loopback.
    proxy_addr: SocketAddr,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
    _upstream: MockUpstream,
}

impl Smtpgate {
    /// A gateway whose only AUTH backend is the Dovecot at `socket`, on a
    /// loopback listener that allows plaintext AUTH.
    fn start(socket: &Path) -> Smtpgate {
        Smtpgate::start_with(socket, "")
    }

    /// Like [`start`](Self::start), with more lines under `auth:`.
    fn start_with(socket: &Path, auth_extra: &str) -> Smtpgate {
        let target = format!("socket: \"{}\"", socket.display());
        Smtpgate::start_backend(&target, auth_extra)
    }

    /// A gateway whose Dovecot backend is at `target` (`socket: ...` or
    /// `addr: ...`), with more lines under `auth:`.
    fn start_backend(target: &str, auth_extra: &str) -> Smtpgate {
        Smtpgate::start_raw(
            &format!(
                "    - dovecot: {{ {target}, timeout_ms: 30000, senders: [\"@alice.test\"] }}\n"
            ),
            auth_extra,
        )
    }

    /// A gateway with these `auth.backends` lines and more `auth:` lines.
    fn start_raw(backends: &str, auth_extra: &str) -> Smtpgate {
        Smtpgate::start_on(backends, auth_extra, Ipv4Addr::LOCALHOST.into())
    }

    /// Like [`start_raw`](Self::start_raw), its main listener on `ip`.
    fn start_on(backends: &str, auth_extra: &str, ip: IpAddr) -> Smtpgate {
        let dir = tempfile::tempdir().unwrap();
        let upstream = MockUpstream::start(MockOptions::default());
        let free_port = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let addr = SocketAddr::new(ip, free_port());
        let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                "hostname: gate.test\nmetrics: {{ addr: \"{metrics}\" }}\nspool_dir: \"{}\"\nupstream: {{ addr: \"{}\" }}\n\
                 auth:\n  backends:\n{backends}{auth_extra}\
                 relay: {{ local_domains: [local.test], trusted_networks: [] }}\n\
                 proxy_protocol: {{ trusted_proxies: [127.0.0.0/8] }}\n\
                 listen:\n  - {{ addr: \"{addr}\", auth: optional, plaintext_auth: true }}\n\
                 \x20 - {{ addr: \"{proxy_addr}\", auth: optional, plaintext_auth: true, proxy_protocol: true }}\n",
                dir.path().join("spool").display(),
                upstream.addr,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("smtpgate.log")).unwrap();
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Smtpgate {
            child,
            addr,
            proxy_addr,
            metrics,
            dir,
            _upstream: upstream,
        };
        gw.wait_listening();
        gw
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("smtpgate exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "smtpgate did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The metrics page.
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    }

    /// What the gateway logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtpgate.log")).unwrap_or_default()
    }

    /// A session from a fresh IP after EHLO; and that IP.
    fn client(&self) -> Client {
        self.client_from(fresh_ip())
    }

    /// A session from `ip` after EHLO.
    fn client_from(&self, ip: IpAddr) -> Client {
        let mut c = Client::connect_from(ip, self.addr);
        c.expect(220);
        c.cmd("EHLO client.test", 250);
        c
    }

    /// Runs swaks with AUTH; its exit status and output.
    fn swaks(&self, mechanism: &str, user: &str, password: &str) -> (bool, String) {
        let out = Command::new("swaks")
            .args(["--server", &self.addr.to_string()])
            .args(["--local-interface", &fresh_ip().to_string()])
            .args(["--from", "alice@example.com", "--to", "someone@local.test"])
            .args([
                "--auth",
                mechanism,
                "--auth-user",
                user,
                "--auth-password",
                password,
            ])
            .args(["--helo", "client.test", "--quit-after", "AUTH"])
            .output()
            .expect("swaks runs (scripts/install-test-deps.sh installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Logs in with Python's smtplib; the reply code it got.
    fn smtplib(&self, mechanism: &str, user: &str, password: &str) -> String {
        let script = format!(
            "import smtplib, sys\n\
             s = smtplib.SMTP('127.0.0.1', {port}, source_address=('{ip}', 0))\n\
             s.ehlo('client.test')\n\
             s.user, s.password = sys.argv[1], sys.argv[2]\n\
             try:\n\
             \x20   code, _ = s.auth('{mechanism}', getattr(s, 'auth_{lower}'), initial_response_ok={initial})\n\
             except smtplib.SMTPAuthenticationError as e:\n\
             \x20   code = e.smtp_code\n\
             print(code)\n\
             s.quit()\n",
            port = self.addr.port(),
            ip = fresh_ip(),
            lower = mechanism.to_lowercase(),
            initial = if mechanism == "PLAIN" { "True" } else { "False" },
        );
        let out = Command::new("python3")
            .args(["-c", &script, user, password])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn swaks_logs_in_through_dovecot_with_plain_and_login() {
    let gw = Smtpgate::start(&dovecot().socket());
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, text) = gw.swaks(mechanism, "alice@example.com", "wonderland");
        assert!(ok, "{mechanism}: {text}\n{}", gw.log());
        assert!(text.contains("<-  235 "), "{mechanism}: {text}");
        let (ok, text) = gw.swaks(mechanism, "alice@example.com", "wrong");
        assert!(!ok, "{mechanism}: {text}");
        assert!(text.contains("<** 535 5.7.8"), "{mechanism}: {text}");
    }
    // Dovecot heard the client's IP (rip=), for its log and penalty.
    let log = dovecot().log();
    assert!(
        log.contains("passwd-file(alice@example.com,127.0.0.") && log.contains("Password mismatch"),
        "{log}"
    );
}

#[test]
fn smtplib_logs_in_through_dovecot_with_plain_and_login() {
    let gw = Smtpgate::start(&dovecot().socket());
    for mechanism in ["PLAIN", "LOGIN"] {
        assert_eq!(
            gw.smtplib(mechanism, "bob", "builder"),
            "235",
            "{mechanism}"
        );
        assert_eq!(gw.smtplib(mechanism, "bob", "wrong"), "535", "{mechanism}");
        assert_eq!(
            gw.smtplib(mechanism, "nobody", "builder"),
            "535",
            "{mechanism}"
        );
    }
}

#[test]
fn a_dovecot_user_may_send_as_their_login_address_and_the_configured_senders() {
    let gw = Smtpgate::start(&dovecot().socket());
    let mut c = gw.client();
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice@example.com", "wonderland")),
        235,
    );
    c.cmd("MAIL FROM:<alice@example.com>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<anyone@alice.test>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<carol@example.com>", 553);
    // bob's login is no address: only the configured senders.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    c.cmd("MAIL FROM:<bob@example.com>", 553);
    c.cmd("MAIL FROM:<bob@alice.test>", 250);
}

#[test]
fn three_failures_through_dovecot_end_the_session_and_are_logged_for_fail2ban() {
    let gw = Smtpgate::start(&dovecot().socket());
    let ip = fresh_ip();
    let mut c = gw.client_from(ip);
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice@example.com", "guess1")),
        535,
    );
    c.cmd("AUTH LOGIN", 334);
    c.cmd(&STANDARD.encode("alice@example.com"), 334);
    c.cmd(&STANDARD.encode("guess2"), 535);
    c.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("alice@example.com", "guess3")
    ));
    c.expect(535);
    c.expect(421);
    assert!(c.is_closed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("closed after 3 failed attempts") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = gw.log();
    assert!(
        log.contains(&format!(
            "auth failed: client={ip} user=\"alice@example.com\" mechanism=PLAIN"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "auth failed: client={ip} user=\"alice@example.com\" mechanism=LOGIN"
        )),
        "{log}"
    );
    assert!(!log.contains("guess1"), "{log}");
}

#[test]
fn dovecot_down_is_a_temporary_failure_and_logins_work_again_once_it_is_back() {
    // A Dovecot of its own: the shared one must stay up for the others.
    let mut dv = Dovecot::start(USERS);
    let gw = Smtpgate::start(&dv.socket());
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    dv.stop();
    // The kept connection is gone and no new one can be made: 454, never
    // 535, and not counted as a failed login.
    for _ in 0..3 {
        let mut c = gw.client();
        let reply = c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 454);
        assert!(reply.contains("4.7.0"), "{reply}");
        c.cmd("QUIT", 221);
    }
    let mut c = gw.client();
    for _ in 0..4 {
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "wrong")), 454);
    }
    assert!(gw.log().contains("backend=dovecot"), "{}", gw.log());
    let page = gw.metrics();
    assert!(
        page.contains("smtpgate_auth_backend_total{backend=\"dovecot\",result=\"unavailable\"} 7"),
        "{page}"
    );
    assert!(
        page.contains("smtpgate_auth_backend_total{backend=\"dovecot\",result=\"accepted\"} 1"),
        "{page}"
    );
    assert!(!gw.log().contains("auth failed:"), "{}", gw.log());
    dv.restart();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
}

#[test]
fn the_login_cache_remembers_a_successful_login_until_reload() {
    let mut dv = Dovecot::start(USERS);
    let gw = Smtpgate::start_with(&dv.socket(), "  cache: { ttl_s: 600, max_entries: 100 }\n");
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    dv.stop();
    // Remembered: no backend needed. Another password is not.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder2")), 454);
    // A reload forgets every login: the backends are built again, with an
    // empty cache.
    let status = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("reload: configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 454);
}

#[test]
fn dovecot_over_tcp_works_the_same() {
    let target = format!("addr: \"{}\"", dovecot().addr());
    let gw = Smtpgate::start_backend(&target, "");
    assert_eq!(gw.smtplib("PLAIN", "bob", "builder"), "235");
    assert_eq!(gw.smtplib("LOGIN", "bob", "builder"), "235");
    assert_eq!(gw.smtplib("PLAIN", "bob", "wrong"), "535");
}

#[test]
fn ldap_over_ldaps_with_swaks_and_smtplib() {
    let gw = Smtpgate::start_raw(&ldap_backend(false, &slapd().pki.ca_path()), "");
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, text) = gw.swaks(mechanism, "carol", "sesame-carol");
        assert!(
            ok && text.contains("<-  235 "),
            "{mechanism}: {text}\n{}",
            gw.log()
        );
        let (ok, text) = gw.swaks(mechanism, "carol", "wrong");
        assert!(!ok && text.contains("<** 535 5.7.8"), "{mechanism}: {text}");
        assert_eq!(
            gw.smtplib(mechanism, "dave", "sesame-dave"),
            "235",
            "{mechanism}"
        );
        assert_eq!(gw.smtplib(mechanism, "dave", "wrong"), "535", "{mechanism}");
        assert_eq!(gw.smtplib(mechanism, "nobody", "x"), "535", "{mechanism}");
    }
}

#[test]
fn ldap_with_starttls() {
    let gw = Smtpgate::start_raw(&ldap_backend(true, &slapd().pki.ca_path()), "");
    assert_eq!(
        gw.smtplib("PLAIN", "dave", "sesame-dave"),
        "235",
        "{}",
        gw.log()
    );
    assert_eq!(gw.smtplib("LOGIN", "dave", "sesame-dave"), "235");
    assert_eq!(gw.smtplib("PLAIN", "dave", "wrong"), "535");
}

#[test]
fn ldap_addresses_replace_the_senders_list() {
    let gw = Smtpgate::start_raw(&ldap_backend(false, &slapd().pki.ca_path()), "");
    let mut c = gw.client();
    c.cmd(
        &format!("AUTH PLAIN {}", plain("carol", "sesame-carol")),
        235,
    );
    for allowed in [
        "carol@example.com",
        "sales@example.com",
        "carol@example.org",
    ] {
        c.cmd(&format!("MAIL FROM:<{allowed}>"), 250);
        c.cmd("RSET", 250);
    }
    c.cmd("MAIL FROM:<ceo@example.com>", 553);
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("dave", "sesame-dave")), 235);
    c.cmd("MAIL FROM:<sales@example.com>", 553);
    c.cmd("MAIL FROM:<dave@example.com>", 250);
}

#[test]
fn ldap_never_binds_with_an_empty_password_and_verifies_the_certificate() {
    let gw = Smtpgate::start_raw(&ldap_backend(false, &slapd().pki.ca_path()), "");
    // An empty password would be an unauthenticated bind, which succeeds.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("carol", "")), 535);
    // A directory whose certificate our CA did not sign is not trusted
    // with passwords: a temporary failure, never 235 nor 535.
    let other = common::certs::Pki::new("other");
    let gw = Smtpgate::start_raw(&ldap_backend(false, &other.ca_path()), "");
    let mut c = gw.client();
    c.cmd(
        &format!("AUTH PLAIN {}", plain("carol", "sesame-carol")),
        454,
    );
    assert!(gw.log().contains("backend=ldap"), "{}", gw.log());
}

#[test]
fn three_failures_through_ldap_end_the_session() {
    let gw = Smtpgate::start_raw(&ldap_backend(false, &slapd().pki.ca_path()), "");
    let ip = fresh_ip();
    let mut c = gw.client_from(ip);
    c.cmd(&format!("AUTH PLAIN {}", plain("carol", "g1")), 535);
    c.cmd(&format!("AUTH PLAIN {}", plain("carol", "g2")), 535);
    c.send(&format!("AUTH PLAIN {}\r\n", plain("carol", "g3")));
    c.expect(535);
    c.expect(421);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains(&format!(
        "auth failed: client={ip} user=\"carol\" mechanism=PLAIN"
    )) {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dovecot_hears_the_local_address_from_the_listener_or_the_proxy_header() {
    // Dovecot picks the passwd-file by lip=: bob's password depends on
    // the address the client connected to, so a wrong or missing lip=
    // fails the login.
    let dv = Dovecot::start_with(
        &[],
        &Options {
            passwd: "passwd-%{lip}",
            ..Options::default()
        },
    );
    dv.write_passwd("passwd-127.0.0.2", &[("bob", "direct")]);
    dv.write_passwd("passwd-192.0.2.25", &[("bob", "proxied")]);
    let target = format!("socket: \"{}\"", dv.socket().display());
    let backend = format!("    - dovecot: {{ {target}, timeout_ms: 30000 }}\n");
    let gw = Smtpgate::start_on(&backend, "", "127.0.0.2".parse().unwrap());
    let ip = fresh_ip();
    let mut c = gw.client_from(ip);
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "direct")), 235);
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "proxied")), 535);
    // Behind the balancer: the header's destination is our address.
    let proxied = |source: &str, password: &str, code: u16| {
        let mut c = Client::connect_from(fresh_ip(), gw.proxy_addr);
        c.send(&format!("PROXY TCP4 {source} 192.0.2.25 40077 2525\r\n"));
        c.expect(220);
        c.cmd("EHLO client.test", 250);
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", password)), code);
    };
    proxied("192.0.2.77", "proxied", 235);
    proxied("192.0.2.78", "direct", 535);
    // ... and the ports came along (lport=, rport=).
    let log = dv.log();
    assert!(
        log.contains(&format!(
            "lip=127.0.0.2\trip={ip}\tlport={}\trport=",
            gw.addr.port()
        )),
        "{log}"
    );
    assert!(
        log.contains("lip=192.0.2.25\trip=192.0.2.77\tlport=2525\trport=40077"),
        "{log}"
    );
}

/// The `AUTH ...` keyword of a fresh session's EHLO, from a fresh IP.
fn ehlo_auth_line(gw: &Smtpgate) -> String {
    let mut c = Client::connect_from(fresh_ip(), gw.addr);
    c.expect(220);
    let ehlo = c.cmd("EHLO client.test", 250);
    ehlo.lines()
        .map(|l| l[4..].trim())
        .find(|l| l.starts_with("AUTH"))
        .unwrap_or_else(|| panic!("no AUTH in {ehlo}"))
        .to_string()
}

#[test]
fn ehlo_lists_only_the_mechanisms_dovecot_offers() {
    let dv = Dovecot::start_with(
        USERS,
        &Options {
            mechanisms: "plain",
            ..Options::default()
        },
    );
    let gw = Smtpgate::start(&dv.socket());
    // A login reaches Dovecot and so learns what it offers.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    assert_eq!(ehlo_auth_line(&gw), "AUTH PLAIN");
    let mut c = gw.client();
    let reply = c.cmd("AUTH LOGIN", 504);
    assert!(reply.starts_with("504 5.5.4"), "{reply}");
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    // The shared Dovecot offers both.
    let gw = Smtpgate::start(&dovecot().socket());
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    assert_eq!(ehlo_auth_line(&gw), "AUTH PLAIN LOGIN");
}

#[test]
fn another_backend_that_takes_login_keeps_it_on_the_ehlo() {
    let dv = Dovecot::start_with(
        USERS,
        &Options {
            mechanisms: "plain",
            ..Options::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    let hash = smtpgate::auth::hash_password("kitchen").unwrap();
    std::fs::write(
        &users,
        format!("users:\n  - {{ name: frank, password_hash: \"{hash}\" }}\n"),
    )
    .unwrap();
    let backends = format!(
        "    - dovecot: {{ socket: \"{}\", timeout_ms: 30000 }}\n    - users_file\n",
        dv.socket().display()
    );
    let gw = Smtpgate::start_raw(
        &backends,
        &format!("  users_file: \"{}\"\n", users.display()),
    );
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 235);
    // Dovecot takes PLAIN only, the users file LOGIN too: both are listed,
    // and a LOGIN for a Dovecot user is carried to Dovecot as PLAIN.
    assert_eq!(ehlo_auth_line(&gw), "AUTH PLAIN LOGIN");
    for (user, password) in [("bob", "builder"), ("frank", "kitchen")] {
        let mut c = gw.client();
        c.cmd("AUTH LOGIN", 334);
        c.cmd(&STANDARD.encode(user), 334);
        c.cmd(&STANDARD.encode(password), 235);
    }
}

#[test]
fn with_dovecot_unreachable_ehlo_offers_what_smtpgate_carries_and_auth_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Smtpgate::start(&dir.path().join("no-such-socket"));
    for _ in 0..2 {
        assert_eq!(ehlo_auth_line(&gw), "AUTH PLAIN LOGIN");
    }
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "builder")), 454);
    c.cmd("AUTH LOGIN", 334);
    c.cmd(&STANDARD.encode("bob"), 334);
    c.cmd(&STANDARD.encode("builder"), 454);
}

/// The `ldap:` backend line for the shared slapd (LDAPS) that finds the
/// DN by a search from the top as the service account, whose password
/// is written to a file in `dir`.
fn ldap_search_backend(dir: &Path, service_password: &str) -> String {
    let file = dir.join("ldap-password");
    std::fs::write(&file, format!("{service_password}\n")).unwrap();
    format!(
        "    - ldap:\n        url: \"ldaps://127.0.0.1:{}\"\n        ca_file: \"{}\"\n        \
         search: {{ base: \"dc=example,dc=com\", filter: \"(uid=%u)\", scope: sub, \
         bind_dn: \"{}\", bind_password_file: \"{}\" }}\n        \
         sender_attributes: [mail, mailAlternateAddress]\n        timeout_ms: 10000\n",
        slapd().ldaps_port,
        slapd().pki.ca_path().display(),
        common::slapd::SERVICE_DN,
        file.display()
    )
}

#[test]
fn ldap_finds_the_dn_by_a_search_as_the_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Smtpgate::start_raw(
        &ldap_search_backend(dir.path(), common::slapd::SERVICE_PASSWORD),
        "",
    );
    assert_eq!(gw.smtplib("PLAIN", "carol", "sesame-carol"), "235");
    assert_eq!(gw.smtplib("LOGIN", "carol", "wrong"), "535");
    assert_eq!(gw.smtplib("PLAIN", "nobody", "sesame-carol"), "535");
    // erin is under ou=staff: no template could name her; her addresses
    // come from the entry the search found.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("erin", "sesame-erin")), 235);
    for allowed in ["erin@example.com", "help@example.com"] {
        c.cmd(&format!("MAIL FROM:<{allowed}>"), 250);
        c.cmd("RSET", 250);
    }
    c.cmd("MAIL FROM:<carol@example.com>", 553);
    // Filter metacharacters in the login name are escaped (RFC 4515): no
    // wildcard match, so no such user (unescaped, `*` would match them all).
    for injected in ["*", "*)(uid=*", "carol)(|(uid=*"] {
        let mut c = gw.client();
        c.cmd(
            &format!("AUTH PLAIN {}", plain(injected, "sesame-carol")),
            535,
        );
    }
    // Two entries match `twin`: which one logged in cannot be told.
    let mut c = gw.client();
    c.cmd(&format!("AUTH PLAIN {}", plain("twin", "sesame-twin")), 454);
    let log = gw.log();
    assert!(
        log.contains("backend=ldap") && log.contains("ambiguous: more than one entry"),
        "{log}"
    );
    assert!(!log.contains("sesame"), "{log}");
}

#[test]
fn ldap_search_with_a_refused_service_account_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Smtpgate::start_raw(&ldap_search_backend(dir.path(), "not-the-password"), "");
    let mut c = gw.client();
    c.cmd(
        &format!("AUTH PLAIN {}", plain("carol", "sesame-carol")),
        454,
    );
    assert!(gw.log().contains("service account bind"), "{}", gw.log());
    assert!(!gw.log().contains("auth failed:"), "{}", gw.log());
}

/// `smtpgate check` on a config with these `auth.backends` lines; its
/// exit code and stderr.
fn check(dir: &Path, backends: &str) -> (Option<i32>, String) {
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nupstream: {{ addr: \"127.0.0.1:2\" }}\n\
             auth:\n  backends:\n{backends}\
             listen:\n  - {{ addr: \"127.0.0.1:2525\", auth: optional, plaintext_auth: true }}\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_wants_exactly_one_of_a_dn_template_and_a_search() {
    let dir = tempfile::tempdir().unwrap();
    let search = "search: { base: \"dc=example,dc=com\", filter: \"(uid=%u)\", \
                  bind_dn: \"cn=svc,dc=example,dc=com\", bind_password_file: /nonexistent/pw }";
    let (code, err) = check(
        dir.path(),
        &format!("    - ldap: {{ url: \"ldaps://d\", bind_dn: \"uid=%u\", {search} }}\n"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("gateway.yaml:5:") && err.contains("exactly one of `bind_dn`"),
        "{err}"
    );
    let (code, err) = check(dir.path(), "    - ldap: { url: \"ldaps://d\" }\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("gateway.yaml:5:") && err.contains("exactly one of `bind_dn`"),
        "{err}"
    );
    // A search whose service password cannot be read is refused too.
    let (code, err) = check(
        dir.path(),
        &format!("    - ldap: {{ url: \"ldaps://d\", {search} }}\n"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bind_password_file") && err.contains("/nonexistent/pw"),
        "{err}"
    );
}
