//! TLS session tickets shared by instances: two `smtpgate` processes with
//! the same key file, and one client (`openssl s_client`, which we did not
//! write) that saves its session on the first and resumes it on the
//! second, over STARTTLS, with TLS 1.3 and TLS 1.2. Instances with keys of
//! their own make a full handshake instead; a rotation made with
//! `smtpgate ticket-keys rotate` keeps the previous tickets valid.

mod common;

use common::binary::Binary;
use common::certs::Pki;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `smtpgate ticket-keys rotate --file KEYS`.
fn rotate(keys: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .args(["ticket-keys", "rotate", "--keep", "2", "--file"])
        .arg(keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway in its own directory presenting `pki`'s certificate, with
/// tickets sealed by the keys in `keys`.
fn instance(dir: &Path, pki: &Pki, keys: &Path) -> Binary {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    Binary::start(
        dir,
        &format!(
            "tls: {{ cert: \"{}\", key: \"{}\", session_tickets: {{ key_file: \"{}\" }} }}\n",
            pki.cert_path().display(),
            pki.key_path().display(),
            keys.display()
        ),
    )
}

/// One STARTTLS session with `openssl s_client` to `gw`, reading a saved
/// session from `sess_in` and saving the new one to `sess_out`; returns
/// what s_client printed.
fn s_client(
    gw: &Binary,
    pki: &Pki,
    version: &str,
    sess_in: Option<&Path>,
    sess_out: &Path,
) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20",
        "openssl",
        "s_client",
        "-starttls",
        "smtp",
        "-crlf",
        "-ign_eof",
    ])
    .arg(version)
    .arg("-connect")
    .arg(gw.addr.to_string())
    .arg("-CAfile")
    .arg(pki.ca_path())
    .arg("-verify_return_error")
    .arg("-sess_out")
    .arg(sess_out);
    if let Some(p) = sess_in {
        cmd.arg("-sess_in").arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        // NOOP first: by its answer the server's tickets have arrived.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"NOOP\nQUIT\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("221"), "no 221 from the session:\n{text}");
    text
}

/// "Reused" or "New", from s_client's session line.
fn handshake(text: &str, version: &str) -> &'static str {
    if text.contains(&format!("Reused, {version}")) {
        "Reused"
    } else if text.contains(&format!("New, {version}")) {
        "New"
    } else {
        panic!("no session line for {version}:\n{text}")
    }
}

#[test]
fn a_session_from_one_instance_resumes_on_another_sharing_the_key_file() {
    let pki = Pki::new("shared");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket-keys");
    rotate(&keys);
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = instance(&da, &pki, &keys);
    let b = instance(&db, &pki, &keys);
    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let sess = dir.path().join(format!("sess{flag}"));
        let first = s_client(&a, &pki, flag, None, &sess);
        assert_eq!(handshake(&first, version), "New", "{first}");
        let again = dir.path().join(format!("again{flag}"));
        let second = s_client(&b, &pki, flag, Some(&sess), &again);
        assert_eq!(
            handshake(&second, version),
            "Reused",
            "{version}:\n{second}"
        );
    }

    // After a rotation (made before the instances start, so neither waits
    // for its next look at the file), a ticket sealed with the old key
    // still opens: the old key is second in the file.
    let sess = dir.path().join("before-rotation");
    let first = s_client(&a, &pki, "-tls1_3", None, &sess);
    assert_eq!(handshake(&first, "TLSv1.3"), "New");
    rotate(&keys);
    let dc = dir.path().join("c");
    std::fs::create_dir_all(&dc).unwrap();
    let c = instance(&dc, &pki, &keys);
    let again = dir.path().join("after-rotation");
    let resumed = s_client(&c, &pki, "-tls1_3", Some(&sess), &again);
    assert_eq!(handshake(&resumed, "TLSv1.3"), "Reused", "{resumed}");
}

#[test]
fn instances_with_keys_of_their_own_make_a_full_handshake() {
    let pki = Pki::new("apart");
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (ka, kb) = (da.join("keys"), db.join("keys"));
    rotate(&ka);
    rotate(&kb);
    let a = instance(&da, &pki, &ka);
    let b = instance(&db, &pki, &kb);
    let sess = dir.path().join("sess");
    let first = s_client(&a, &pki, "-tls1_3", None, &sess);
    assert_eq!(handshake(&first, "TLSv1.3"), "New");
    let again = dir.path().join("again");
    let second = s_client(&b, &pki, "-tls1_3", Some(&sess), &again);
    assert_eq!(handshake(&second, "TLSv1.3"), "New", "{second}");
    // The same instance resumes its own session.
    let third = s_client(&a, &pki, "-tls1_3", Some(&sess), &again);
    assert_eq!(handshake(&third, "TLSv1.3"), "Reused", "{third}");
}

#[test]
fn a_bad_key_file_is_refused_at_start_with_its_line() {
    let pki = Pki::new("bad");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket-keys");
    std::fs::write(&keys, "# keys\nnot-a-key\n").unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nlisten: [{{ addr: \"127.0.0.1:0\" }}]\n\
             spool_dir: \"{}\"\n\
             tls: {{ cert: \"{}\", key: \"{}\", session_tickets: {{ key_file: \"{}\" }} }}\n",
            dir.path().join("spool").display(),
            pki.cert_path().display(),
            pki.key_path().display(),
            keys.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("session_tickets"), "{err}");
    assert!(err.contains("line 2: a key is 96 hex digits"), "{err}");
}
