//! The `smtpgate` binary itself: config checking with precise errors, the
//! embedded default, SIGTERM, and an SMTP client we did not write (Python's
//! smtplib) talking to it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the real binary in `dir` with `args`; killed on drop. Its log
/// (stderr) goes to `smtpgate.log` in `dir`.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, args: &[&str], port: u16) -> Running {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("smtpgate.log")).expect("log file"))
        .spawn()
        .expect("start smtpgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "smtpgate did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Running(child)
}

#[test]
fn check_reports_file_line_and_reason_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "hostname: mx.example.com\nlimits:\n  max_recipients: 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3:"), "{err}");
    assert!(err.contains("max_recipients"), "{err}");

    std::fs::write(
        &path,
        "hostname: mx.example.com\nlisten:\n  - { addr: \"127.0.0.1:25\", bogus: 1 }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:3:") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn check_prints_a_summary_of_a_good_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("127.0.0.1:2525"), "{text}");
}

#[test]
fn running_with_a_bad_config_stops_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "upstream: { addr: \"no-port\" }\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.yaml:1:"));
}

#[test]
fn a_broken_rule_stops_startup_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/bad.yaml"),
        "rules:\n  - name: broken\n    stage: mail\n    when:\n      sender: { regex: '(' }\n    action: reject\n",
    )
    .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "listen: [{ addr: \"127.0.0.1:0\" }]\nrules_dir: rules\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("bad regex").count(), 1, "{err}");
    assert!(
        err.contains("smtpgate: rules/bad.yaml:5: rule \"broken\": when.sender.regex: bad regex"),
        "{err}"
    );
}

#[test]
fn a_missing_rules_dir_names_the_config_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "hostname: mx.example.com\nrules_dir: no-such-rules\n",
    )
    .unwrap();
    for args in [
        &["--config", "gateway.yaml"][..],
        &["--config", "gateway.yaml", "check"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "smtpgate: gateway.yaml:2: rules_dir: cannot read the rules directory no-such-rules: "
            ),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn python_smtplib_delivers_into_the_spool_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nlisten: [{{ addr: \"127.0.0.1:{port}\" }}]\nspool_dir: spool\n"
        ),
    )
    .unwrap();
    let mut gw = start(dir.path(), &["--config", config.to_str().unwrap()], port);
    let script = format!(
        r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "alice@example.com"
m["To"] = "bob@example.net, carol@example.org"
m["Subject"] = "hello from smtplib"
m.set_content("Hi Bob,\n.a line with a leading dot\nbye\n")
with smtplib.SMTP("127.0.0.1", {port}) as s:
    code, text = s.ehlo("python.test")
    assert code == 250 and b"PIPELINING" in text, (code, text)
    refused = s.send_message(m)
    assert refused == {{}}, refused
    print("sent")
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let content = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        content.starts_with("Received: from python.test ([127.0.0.1])"),
        "{content}"
    );
    assert!(
        content.contains("Subject: hello from smtplib\r\n"),
        "{content}"
    );
    assert!(
        content.contains("\r\n.a line with a leading dot\r\n"),
        "{content}"
    );

    // An idle session is told 421 4.3.2 on SIGTERM and the process exits 0.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 "));
    idle.write_all(b"EHLO idle.test\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("250 ") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("421 4.3.2"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = gw.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "smtpgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The transaction's log line says where the message went: the spool.
    let log = std::fs::read_to_string(dir.path().join("smtpgate.log")).unwrap();
    let tx = log
        .lines()
        .find(|l| l.contains(" tx ") && l.contains("from=<alice@example.com>"))
        .unwrap_or_else(|| panic!("no transaction line in\n{log}"));
    assert!(tx.contains(" disposition=spool "), "{tx}");
}
