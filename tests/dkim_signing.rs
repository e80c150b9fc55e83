//! DKIM signing end to end: a live gateway signs what authenticated users
//! (and configured networks) submit, the mock upstream receives it, and
//! implementations we did not write verify the signature as received:
//! dkimpy, and opendkim-testmsg against a private unbound. Keys come from
//! opendkim-genkey and openssl, or from `smtpgate dkim-keygen`.

mod common;

use common::dkim::{
    dkimpy_verify, opendkim_genkey, opendkim_verify, openssl_ed25519, signature_count,
    signature_tag, TestKey,
};
use common::{rules_dir, rules_line, Gateway, MockOptions, MockUpstream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The keys every test shares, made once per test binary.
struct Keys {
    _dir: tempfile::TempDir,
    rsa: TestKey,
    ed: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rsa = opendkim_genkey(dir.path(), "example.com", "rsa1");
        let ed = openssl_ed25519(dir.path(), "ed1");
        Keys { _dir: dir, rsa, ed }
    })
}

/// A data-stage rule adding a header the signature lists.
const RULES: &str = "rules:
  - { name: tag, stage: data, action: add_header, header: { name: X-Rule-Tag, value: checked } }
";

/// The headers signed in these tests: the rule's among them.
const HEADERS: &str = "headers: [From, To, Subject, Date, Message-ID, MIME-Version, X-Rule-Tag]";

struct Setup {
    up: MockUpstream,
    gw: Gateway,
    _dirs: Vec<tempfile::TempDir>,
}

fn users_file(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let path = dir.join("users.yaml");
    std::fs::write(
        &path,
        format!(
            "users:\n  - {{ name: alice, password_hash: \"{hash}\", senders: [\"@example.com\", \"@ed.test\", \"@sub.parent.test\", \"@sub.example.com\", \"@keygen.test\"] }}\n"
        ),
    )
    .unwrap();
    path
}

/// A gateway relaying to a mock upstream, AUTH on its plain-text loopback
/// listener, `example.org` local, the tag rule, and `dkim_signing` given
/// as YAML lines (indented two spaces).
fn setup(dkim: &str) -> Setup {
    let up = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[("r.yaml", RULES)]);
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}auth: {{ users_file: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", auth: optional, plaintext_auth: true }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.org] }}\n\
         dkim_signing:\n{dkim}",
        up.addr,
        rules_line(rules.path()),
        users.display()
    ));
    Setup {
        up,
        gw,
        _dirs: vec![rules, dir],
    }
}

/// The usual keys: RSA for example.com (and, for subdomains, parent.test),
/// Ed25519 for ed.test.
fn standard_setup(extra: &str) -> Setup {
    let k = keys();
    setup(&format!(
        "  keys:\n\
         \x20   - {{ domain: example.com, selector: rsa1, key_file: \"{}\" }}\n\
         \x20   - {{ domain: ed.test, selector: ed1, algorithm: ed25519-sha256, key_file: \"{}\" }}\n\
         \x20   - {{ domain: parent.test, selector: rsa1, key_file: \"{}\", subdomains: true }}\n\
         \x20 {HEADERS}\n{extra}",
        k.rsa.path.display(),
        k.ed.path.display(),
        k.rsa.path.display(),
    ))
}

fn records() -> Vec<(String, String)> {
    let k = keys();
    vec![
        ("rsa1._domainkey.example.com".into(), k.rsa.record.clone()),
        ("ed1._domainkey.ed.test".into(), k.ed.record.clone()),
        ("rsa1._domainkey.parent.test".into(), k.rsa.record.clone()),
    ]
}

fn mail(from: &str, subject: &str) -> String {
    format!(
        "From: Alice <{from}>\r\nTo: Bob <bob@example.org>\r\nSubject: {subject}\r\n\
         Date: Wed, 02 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello Bob,\r\n\r\n  spaces  and\ttabs, trailing   \r\n..a dot-stuffed line\r\n\r\n\r\n"
    )
}

/// Sends `body` as alice (authenticated) or anonymously; returns what the
/// upstream received.
fn submit(s: &Setup, auth: bool, from: &str, body: &str) -> Vec<u8> {
    let before = s.up.delivered().len();
    let mut c = s.gw.client();
    c.cmd("EHLO client.test", 250);
    if auth {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode("\0alice\0secret");
        c.cmd(&format!("AUTH PLAIN {token}"), 235);
    }
    let r = c.send_message(from, &["bob@example.org"], body);
    assert_eq!(r.code, 250, "{}", r.raw);
    c.cmd("QUIT", 221);
    s.up.wait_for(before + 1)[before].data.clone()
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

#[test]
fn an_rsa_signature_verifies_with_dkimpy_and_opendkim_and_covers_the_rule_header() {
    let s = standard_setup("");
    let got = submit(
        &s,
        true,
        "alice@example.com",
        &mail("alice@example.com", "rsa"),
    );
    assert!(
        got.starts_with(b"DKIM-Signature: "),
        "signature first:\n{}",
        text(&got)
    );
    assert_eq!(signature_count(&got), 1, "{}", text(&got));
    assert_eq!(signature_tag(&got, "d").as_deref(), Some("example.com"));
    assert_eq!(signature_tag(&got, "s").as_deref(), Some("rsa1"));
    assert_eq!(signature_tag(&got, "a").as_deref(), Some("rsa-sha256"));
    assert_eq!(signature_tag(&got, "c").as_deref(), Some("relaxed/relaxed"));
    assert_eq!(signature_tag(&got, "l"), None, "the whole body is signed");
    let h = signature_tag(&got, "h").unwrap().to_ascii_lowercase();
    let signed: Vec<&str> = h.split(':').collect();
    assert!(signed.contains(&"x-rule-tag"), "{h}");
    assert_eq!(
        signed.iter().filter(|n| **n == "from").count(),
        2,
        "From oversigned: {h}"
    );
    assert!(text(&got).contains("\r\nX-Rule-Tag: checked\r\n"));

    assert_eq!(dkimpy_verify(&got, &records()), ["pass"], "{}", text(&got));
    opendkim_verify(&got, &records()).unwrap_or_else(|e| panic!("opendkim: {e}\n{}", text(&got)));

    // The rule's header is covered: changing it breaks the signature, for
    // both verifiers.
    let forged = text(&got).replace("X-Rule-Tag: checked", "X-Rule-Tag: forged");
    let verdict = dkimpy_verify(forged.as_bytes(), &records());
    assert!(verdict[0].starts_with("fail"), "{verdict:?}");
    assert!(opendkim_verify(forged.as_bytes(), &records()).is_err());
    // And so is the body.
    let forged = text(&got).replace("Hello Bob", "Hello Eve");
    assert!(dkimpy_verify(forged.as_bytes(), &records())[0].starts_with("fail"));

    let metrics = s.gw.shared.metrics().render();
    assert!(
        metrics.contains("smtpgate_dkim_signed_total{domain=\"example.com\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("smtpgate_dkim_sign_failures_total{domain=\"example.com\"} 0\n"));
}

#[test]
fn an_ed25519_signature_verifies_with_dkimpy() {
    let s = standard_setup("");
    let got = submit(&s, true, "alice@ed.test", &mail("alice@ed.test", "ed"));
    assert_eq!(signature_count(&got), 1, "{}", text(&got));
    assert_eq!(signature_tag(&got, "a").as_deref(), Some("ed25519-sha256"));
    assert_eq!(signature_tag(&got, "d").as_deref(), Some("ed.test"));
    assert_eq!(dkimpy_verify(&got, &records()), ["pass"], "{}", text(&got));
}

#[test]
fn unauthenticated_mail_from_outside_is_never_signed() {
    let s = standard_setup("");
    // From says example.com, which has a key; the client did not log in.
    let got = submit(
        &s,
        false,
        "alice@example.com",
        &mail("alice@example.com", "anon"),
    );
    assert_eq!(signature_count(&got), 0, "{}", text(&got));
    let metrics = s.gw.shared.metrics().render();
    assert!(metrics.contains("smtpgate_dkim_signed_total{domain=\"example.com\"} 0\n"));
}

#[test]
fn a_configured_network_is_signed_without_auth_when_users_are_not() {
    let s = standard_setup("  authenticated: false\n  networks: [127.0.0.1]\n");
    let got = submit(
        &s,
        false,
        "alice@example.com",
        &mail("alice@example.com", "net"),
    );
    assert_eq!(signature_count(&got), 1, "{}", text(&got));
    assert_eq!(dkimpy_verify(&got, &records()), ["pass"]);

    let s = standard_setup("  authenticated: false\n  networks: [192.0.2.0/24]\n");
    let got = submit(
        &s,
        true,
        "alice@example.com",
        &mail("alice@example.com", "nope"),
    );
    assert_eq!(signature_count(&got), 0, "{}", text(&got));
}

#[test]
fn subdomains_use_a_parent_key_only_when_it_allows_them() {
    let s = standard_setup("");
    let got = submit(
        &s,
        true,
        "alice@sub.parent.test",
        &mail("alice@sub.parent.test", "sub"),
    );
    assert_eq!(signature_tag(&got, "d").as_deref(), Some("parent.test"));
    assert_eq!(dkimpy_verify(&got, &records()), ["pass"]);

    let got = submit(
        &s,
        true,
        "alice@sub.example.com",
        &mail("alice@sub.example.com", "nosub"),
    );
    assert_eq!(signature_count(&got), 0, "{}", text(&got));
    let metrics = s.gw.shared.metrics().render();
    assert!(
        metrics.contains("smtpgate_dkim_unsigned_total{reason=\"no_key\"} 1\n"),
        "{metrics}"
    );
}

fn smtpgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_bad_key_file_stops_check_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let ed = keys().ed.path.display().to_string();
    let small = dir.path().join("small.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&small)
        .output()
        .unwrap();
    assert!(made.status.success());
    let cases = [
        (
            garbage.display().to_string(),
            "rsa-sha256",
            "not a usable RSA key",
        ),
        (ed.clone(), "rsa-sha256", "not a usable RSA key"),
        (
            keys().rsa.path.display().to_string(),
            "ed25519-sha256",
            "not a usable Ed25519 key",
        ),
        (
            dir.path().join("missing.pem").display().to_string(),
            "rsa-sha256",
            "cannot read",
        ),
        (
            small.display().to_string(),
            "rsa-sha256",
            "shorter than 2048 bits",
        ),
    ];
    for (file, algorithm, want) in cases {
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                "hostname: gate.test\n\
                 dkim_signing:\n\
                 \x20 keys:\n\
                 \x20   - domain: example.com\n\
                 \x20     selector: s1\n\
                 \x20     algorithm: {algorithm}\n\
                 \x20     key_file: \"{file}\"\n"
            ),
        )
        .unwrap();
        let out = smtpgate(&["--config", config.to_str().unwrap(), "check"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        let at = format!("{}:7: dkim_signing.keys[0].key_file: ", config.display());
        assert!(err.contains(&at), "{file}: {err}");
        assert!(err.contains(&file) && err.contains(want), "{file}: {err}");
    }
}

#[test]
fn reload_picks_up_a_new_key_and_keeps_the_old_one_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.pem");
    let first = opendkim_genkey(dir.path(), "example.com", "first");
    let second = opendkim_genkey(dir.path(), "example.com", "second");
    std::fs::copy(&first.path, &live).unwrap();
    let s = setup(&format!(
        "  keys:\n    - {{ domain: example.com, selector: rot, key_file: \"{}\" }}\n",
        live.display()
    ));
    let with = |key: &TestKey| vec![("rot._domainkey.example.com".to_string(), key.record.clone())];

    let got = submit(
        &s,
        true,
        "alice@example.com",
        &mail("alice@example.com", "one"),
    );
    assert_eq!(dkimpy_verify(&got, &with(&first)), ["pass"]);

    std::fs::copy(&second.path, &live).unwrap();
    smtpgate::reload::reload(&s.gw.shared).unwrap();
    let got = submit(
        &s,
        true,
        "alice@example.com",
        &mail("alice@example.com", "two"),
    );
    assert_eq!(dkimpy_verify(&got, &with(&second)), ["pass"]);
    assert!(dkimpy_verify(&got, &with(&first))[0].starts_with("fail"));

    // A damaged file is refused; the key loaded before keeps signing.
    std::fs::write(&live, "not a key\n").unwrap();
    assert!(!smtpgate::reload::reload_dkim(&s.gw.shared));
    let got = submit(
        &s,
        true,
        "alice@example.com",
        &mail("alice@example.com", "three"),
    );
    assert_eq!(dkimpy_verify(&got, &with(&second)), ["pass"]);
}

/// The record `dkim-keygen` printed, as one text (its strings joined).
fn printed_record(stdout: &str, name: &str) -> String {
    let line = stdout.lines().next().unwrap();
    let prefix = format!("{name}. IN TXT ");
    assert!(line.starts_with(&prefix), "{line}");
    let strings: Vec<&str> = line[prefix.len()..].split('"').skip(1).step_by(2).collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "{line}");
    strings.concat()
}

#[test]
fn dkim_keygen_records_verify_signatures_made_with_its_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let mut made = Vec::new();
    for (sel, alg, k) in [("kr", "rsa", "rsa"), ("ke", "ed25519", "ed25519")] {
        let out = smtpgate(&[
            "dkim-keygen",
            "--domain",
            "keygen.test",
            "--selector",
            sel,
            "--algorithm",
            alg,
            "--out",
            out_dir,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let name = format!("{sel}._domainkey.keygen.test");
        let record = printed_record(&stdout, &name);
        assert!(
            record.starts_with(&format!("v=DKIM1; k={k}; p=")),
            "{record}"
        );
        let key = dir.path().join(format!("keygen.test.{sel}.pem"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "PKCS#8: {pem}"
        );
        made.push((name, record, key));
    }
    // Running it again never overwrites a key.
    let again = smtpgate(&[
        "dkim-keygen",
        "--domain",
        "keygen.test",
        "--selector",
        "kr",
        "--out",
        out_dir,
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let records: Vec<(String, String)> = made
        .iter()
        .map(|(n, r, _)| (n.clone(), r.clone()))
        .collect();

    // OpenDKIM signs with the RSA private key; dkimpy checks it against
    // the printed record.
    let msg = "From: a@keygen.test\nTo: b@example.org\nSubject: k\nDate: Wed, 02 Dec 2026 05:00:00 +0000\nMessage-ID: <k@keygen.test>\n\nbody\n";
    let signed = {
        use std::io::Write;
        let mut child = Command::new("opendkim-testmsg")
            .args(["-C", "-d", "keygen.test", "-s", "kr", "-k"])
            .arg(&made[0].2)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("opendkim-testmsg (scripts/install-test-deps.sh installs opendkim-tools)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(msg.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let signed = text(&signed).replace("\r\n", "\n").replace('\n', "\r\n");
    assert_eq!(
        dkimpy_verify(signed.as_bytes(), &records),
        ["pass"],
        "{signed}"
    );

    // The gateway signs with both: two signatures, both verify.
    let s = setup(&format!(
        "  keys:\n\
         \x20   - {{ domain: keygen.test, selector: kr, key_file: \"{}\" }}\n\
         \x20   - {{ domain: keygen.test, selector: ke, algorithm: ed25519-sha256, key_file: \"{}\" }}\n",
        made[0].2.display(),
        made[1].2.display()
    ));
    let got = submit(
        &s,
        true,
        "alice@keygen.test",
        &mail("alice@keygen.test", "both"),
    );
    assert_eq!(signature_count(&got), 2, "{}", text(&got));
    assert_eq!(
        dkimpy_verify(&got, &records),
        ["pass", "pass"],
        "{}",
        text(&got)
    );
}

#[test]
fn spooled_mail_with_a_body_on_disk_is_signed_too() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let spool = dir.path().join("spool");
    // Every body spills to a temporary file: signing reads it back.
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nspool_dir: \"{}\"\nauth: {{ users_file: \"{}\" }}\n\
         limits: {{ spill_threshold_bytes: 0 }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", auth: optional, plaintext_auth: true }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.org] }}\n\
         dkim_signing:\n  keys:\n    - {{ domain: example.com, selector: rsa1, key_file: \"{}\" }}\n",
        spool.display(),
        users.display(),
        k.rsa.path.display()
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("\0alice\0secret");
    c.cmd(&format!("AUTH PLAIN {token}"), 235);
    let line = "a long line of body text that repeats, ".repeat(20);
    let body = format!(
        "{}{}\r\n",
        mail("alice@example.com", "spool"),
        [line.as_str(); 300].join("\r\n")
    );
    let r = c.send_message("alice@example.com", &["bob@example.org"], &body);
    assert_eq!(r.code, 250, "{}", r.raw);
    let files: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read(&files[0]).unwrap();
    assert_eq!(signature_count(&stored), 1);
    assert_eq!(dkimpy_verify(&stored, &records()), ["pass"]);
    opendkim_verify(&stored, &records()).unwrap();
}

#[test]
fn check_names_the_keys_and_whose_mail_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\ndkim_signing:\n  networks: [10.1.0.0/16]\n  keys:\n    - {{ domain: example.com, selector: rsa1, key_file: \"{}\" }}\n    - {{ domain: ed.test, selector: ed1, algorithm: ed25519-sha256, key_file: \"{}\" }}\n",
            keys().rsa.path.display(),
            keys().ed.path.display()
        ),
    )
    .unwrap();
    let out = smtpgate(&["--config", config.to_str().unwrap(), "check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "dkim:      signs mail of authenticated users and 10.1.0.0/16 with \
             rsa1._domainkey.example.com (rsa-sha256), ed1._domainkey.ed.test (ed25519-sha256)\n"
        ),
        "{stdout}"
    );
}

/// The `smtpgate` binary running a config, killed by PID on drop.
struct Running {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 20 s) until the log holds `text` `n` times.
    fn wait_log(&self, text: &str, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.log_text().matches(text).count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} in log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Sends one message anonymously (the client's network is signed);
    /// returns the spooled file.
    fn send(&self, spool: &Path, subject: &str) -> Vec<u8> {
        let mut c = common::Client::connect(self.addr);
        c.expect(220);
        c.cmd("EHLO client.test", 250);
        let r = c.send_message(
            "alice@example.com",
            &["bob@example.org"],
            &mail("alice@example.com", subject),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
        c.cmd("QUIT", 221);
        let id = r.raw.split_whitespace().last().unwrap().to_string();
        let found = std::fs::read_dir(spool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(&id))
            .unwrap_or_else(|| panic!("no spool file for {}", r.raw));
        std::fs::read(found).unwrap()
    }
}

#[test]
fn sighup_makes_the_running_binary_sign_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = opendkim_genkey(dir.path(), "example.com", "first");
    let second = opendkim_genkey(dir.path(), "example.com", "second");
    let live = dir.path().join("live.pem");
    let spool = dir.path().join("spool");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nlisten: [{{ addr: \"{addr}\" }}]\nspool_dir: \"{}\"\n\
             relay: {{ trusted_networks: [], local_domains: [example.org] }}\n\
             dkim_signing:\n  networks: [127.0.0.1]\n  keys:\n\
             \x20   - {{ domain: example.com, selector: rot, key_file: \"{}\" }}\n",
            spool.display(),
            live.display()
        ),
    )
    .unwrap();

    // A key file that does not parse stops start-up, with file and line.
    std::fs::write(&live, "not a key\n").unwrap();
    let out = smtpgate(&["--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}:8: dkim_signing.keys[0].key_file: ",
            config.display()
        )),
        "{err}"
    );

    std::fs::copy(&first.path, &live).unwrap();
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let gw = Running { child, addr, log };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let with = |key: &TestKey| vec![("rot._domainkey.example.com".to_string(), key.record.clone())];

    let got = gw.send(&spool, "before");
    assert_eq!(dkimpy_verify(&got, &with(&first)), ["pass"]);

    std::fs::copy(&second.path, &live).unwrap();
    gw.hup();
    gw.wait_log("reload: DKIM signing keys reloaded (1 keys)", 1);
    let got = gw.send(&spool, "after");
    assert_eq!(dkimpy_verify(&got, &with(&second)), ["pass"]);

    // A key that does not parse: the whole new configuration is refused,
    // with the line that names the key, and the old key keeps signing.
    std::fs::write(&live, "not a key\n").unwrap();
    gw.hup();
    gw.wait_log("reload: the new configuration is refused", 1);
    assert!(
        gw.log_text().contains(&format!(
            "{}:8: dkim_signing.keys[0].key_file: ",
            config.display()
        )),
        "{}",
        gw.log_text()
    );
    let got = gw.send(&spool, "kept");
    assert_eq!(dkimpy_verify(&got, &with(&second)), ["pass"]);
}
