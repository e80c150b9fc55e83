//! The quarantine an admin can act on: the real `smtpgate` binary holds a
//! message a rule quarantines (with its sidecar), then `smtpgate
//! quarantine list / show / release / delete / purge` act on it; a
//! release reaches a mock upstream with the original envelope, or fails
//! and leaves the entry when the upstream is down.

mod common;

use common::binary::Binary;
use common::mock_upstream::dead_addr;
use common::{audit_records, message, MockOptions, MockUpstream};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The rule that holds every message whose Subject says "hold".
const RULES: &str = "rules:
  - name: hold-for-review
    stage: data
    when: { header: { name: Subject, regex: '(?i)hold' } }
    action: quarantine
";

/// A gateway relaying to `upstream`, with the rule above, a quarantine
/// directory and an audit file in `dir`.
fn gateway(dir: &Path, upstream: &MockUpstream) -> Binary {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/hold.yaml"), RULES).unwrap();
    Binary::start(
        dir,
        &format!(
            "upstream: {{ addr: \"{}\" }}\nquarantine_dir: \"{}\"\naudit: {{ path: \"{}\" }}\n",
            upstream.addr,
            dir.join("quarantine").display(),
            dir.join("audit.jsonl").display()
        ),
    )
}

/// Runs `smtpgate --config CONFIG quarantine ARGS`: (exit code, stdout, stderr).
fn quarantine(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(config)
        .arg("quarantine")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `quarantine list --json ARGS`, parsed.
fn list(config: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = quarantine(config, &all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .as_array()
        .unwrap()
        .clone()
}

/// A mock upstream that offers DSN, so RCPT parameters go through.
fn mock() -> MockUpstream {
    MockUpstream::start(MockOptions {
        ehlo_extra: vec!["DSN".to_string()],
        ..MockOptions::default()
    })
}

/// Sends one message that the rule holds; its transaction id.
fn hold(gw: &Binary, from: &str, subject: &str) -> String {
    // A first MAIL connects to the upstream: from then on the gateway
    // knows it offers DSN and takes NOTIFY.
    let mut c = gw.client();
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd("QUIT", 221);
    let mut c = gw.client();
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER", 250);
    c.cmd("RCPT TO:<c@example.com>", 250);
    c.cmd("DATA", 354);
    c.send(&format!("{}.\r\n", message(subject, "held text\r\n")));
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT", 221);
    r.last_text().rsplit(' ').next().unwrap().to_string()
}

fn files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("quarantine/{id}.eml")),
        dir.join(format!("quarantine/{id}.json")),
    )
}

/// The gateway's config with the upstream moved to an address nothing
/// listens on.
fn config_with_dead_upstream(dir: &Path, live: &MockUpstream) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("gateway.yaml")).unwrap();
    let dead = text.replace(&live.addr.to_string(), &dead_addr().to_string());
    let path = dir.join("dead-upstream.yaml");
    std::fs::write(&path, dead).unwrap();
    path
}

#[test]
fn a_held_message_is_listed_shown_and_released_with_its_envelope() {
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &upstream);
    let config = dir.path().join("gateway.yaml");
    let id = hold(&gw, "sender@example.org", "please hold me");
    assert!(upstream.delivered().is_empty(), "held, not relayed");
    let (eml, json) = files(dir.path(), &id);
    let stored = std::fs::read(&eml).unwrap();
    assert!(json.is_file());

    let listed = list(&config, &[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let s = &listed[0]["sidecar"];
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(s["version"], 1);
    assert_eq!(s["held"]["by"], "hold-for-review");
    assert_eq!(s["held"]["stage"], "data");
    assert_eq!(s["rules"][0]["name"], "hold-for-review");
    assert_eq!(s["rules"][0]["verdict"], "quarantine");
    assert_eq!(s["envelope"]["mail_from"], "sender@example.org");
    assert_eq!(s["envelope"]["rcpts"][0]["address"], "b@example.com");
    assert_eq!(s["envelope"]["rcpts"][0]["params"][0], "NOTIFY=NEVER");
    assert_eq!(s["envelope"]["rcpts"][1]["address"], "c@example.com");
    assert_eq!(s["client"]["ip"], "127.0.0.1");
    assert_eq!(s["client"]["helo"], "client.test");
    assert_eq!(s["size"], stored.len() as u64);

    // Filters: by rule, by sender, by age.
    assert_eq!(list(&config, &["--rule", "hold-for-review"]).len(), 1);
    assert_eq!(list(&config, &["--rule", "other"]).len(), 0);
    assert_eq!(list(&config, &["--from", "EXAMPLE.org"]).len(), 1);
    assert_eq!(list(&config, &["--from", "nobody"]).len(), 0);
    assert_eq!(list(&config, &["--since", "1h"]).len(), 1);
    let (code, table, _) = quarantine(&config, &["list"]);
    assert_eq!(code, 0);
    assert!(
        table.contains(&id) && table.contains("hold-for-review"),
        "{table}"
    );

    let (code, out, err) = quarantine(&config, &["show", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"hold-for-review\""), "{out}");
    assert!(out.contains("Subject: please hold me\r\n"), "{out}");
    assert!(!out.contains("held text"), "headers only: {out}");

    // Release: the upstream gets the stored bytes with the original envelope.
    let (code, out, err) = quarantine(&config, &["release", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let delivered = upstream.wait_for(1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].from, "sender@example.org");
    assert_eq!(delivered[0].rcpts, ["b@example.com", "c@example.com"]);
    assert_eq!(delivered[0].data, stored);
    let commands = upstream.commands().concat();
    assert!(
        commands
            .iter()
            .any(|c| c == "RCPT TO:<b@example.com> NOTIFY=NEVER"),
        "{commands:?}"
    );
    assert!(!eml.exists() && !json.exists(), "removed after the 250");
    assert!(list(&config, &[]).is_empty());

    let audit = dir.path().join("audit.jsonl");
    let records = audit_records(&audit, 2);
    let released: Vec<_> = records.iter().filter(|r| r["type"] == "released").collect();
    assert_eq!(released.len(), 1, "{records:?}");
    assert_eq!(released[0]["transaction"], id.as_str());
    assert_eq!(released[0]["held_by"], "hold-for-review");
    assert_eq!(released[0]["by"], "cli");
    assert!(released[0]["upstream_reply"]
        .as_str()
        .unwrap()
        .starts_with("250"));

    // Released again: it is gone, and that is an error.
    let (code, _, err) = quarantine(&config, &["release", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("no quarantined message"), "{err}");
    drop(gw);
}

#[test]
fn release_to_other_recipients_and_a_failed_release_keeps_the_files() {
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &upstream);
    let config = dir.path().join("gateway.yaml");
    let id = hold(&gw, "s@example.org", "hold this");
    let (eml, json) = files(dir.path(), &id);

    // The upstream is down: the entry stays, the exit status says so.
    let dead = config_with_dead_upstream(dir.path(), &upstream);
    let (code, _, err) = quarantine(&dead, &["release", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not released") && err.contains("upstream unavailable"),
        "{err}"
    );
    assert!(eml.exists() && json.exists());

    // The upstream refuses the recipient: the entry stays too.
    let refusing = MockUpstream::start(MockOptions {
        rcpt_replies: [(
            "x@example.net".to_string(),
            "550 5.1.1 No such user".to_string(),
        )]
        .into(),
        ..MockOptions::default()
    });
    let text = std::fs::read_to_string(&config).unwrap();
    let other = dir.path().join("refusing.yaml");
    std::fs::write(
        &other,
        text.replace(&upstream.addr.to_string(), &refusing.addr.to_string()),
    )
    .unwrap();
    let (code, _, err) = quarantine(&other, &["release", &id, "--to", "x@example.net"]);
    assert_eq!(code, 1);
    assert!(err.contains("550 5.1.1"), "{err}");
    assert!(eml.exists() && json.exists());
    assert!(refusing.delivered().is_empty());

    // With --to, only the recipients given.
    let (code, out, err) = quarantine(&config, &["release", &id, "--to", "admin@example.com"]);
    assert_eq!(code, 0, "{out}{err}");
    let delivered = upstream.wait_for(1);
    assert_eq!(delivered[0].rcpts, ["admin@example.com"]);
    assert!(!eml.exists() && !json.exists());
    drop(gw);
}

#[test]
fn delete_and_purge_remove_entries_and_ids_cannot_be_paths() {
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &upstream);
    let config = dir.path().join("gateway.yaml");
    let first = hold(&gw, "a@example.org", "hold one");
    let second = hold(&gw, "a@example.org", "hold two");
    assert_eq!(list(&config, &[]).len(), 2);

    for verb in ["show", "release", "delete"] {
        let (code, _, err) = quarantine(&config, &[verb, "../x"]);
        assert_eq!(code, 2, "{verb}");
        assert!(
            err.contains("invalid quarantine id \"../x\""),
            "{verb}: {err}"
        );
    }

    let (code, _, err) = quarantine(&config, &["delete", &first]);
    assert_eq!(code, 0, "{err}");
    let (eml, json) = files(dir.path(), &first);
    assert!(!eml.exists() && !json.exists());
    let left = list(&config, &[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], second.as_str());

    // Nothing is 30 days old yet; everything is older than zero seconds.
    let (code, out, _) = quarantine(&config, &["purge", "--older-than", "30d"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 entries purged"), "{out}");
    assert_eq!(list(&config, &[]).len(), 1);
    let (code, _, err) = quarantine(&config, &["purge", "--older-than", "soon"]);
    assert_eq!(code, 2, "a bad age is a usage error");
    assert!(err.contains("soon"), "{err}");
    let (code, out, _) = quarantine(&config, &["purge", "--older-than", "0s"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 entry purged"), "{out}");
    assert!(list(&config, &[]).is_empty());
    assert!(upstream.delivered().is_empty());
    drop(gw);
}

/// Sends one raw HTTP request; (status, body).
fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{addr}: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap_or_else(|_| panic!("{out}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

fn request(method: &str, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n")
}

#[test]
fn the_api_wants_the_token_then_lists_shows_releases_and_deletes() {
    const TOKEN: &str = "0123456789abcdef-test-token";
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.token"), format!("{TOKEN}\n")).unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/hold.yaml"), RULES).unwrap();
    let gw = Binary::start(
        dir.path(),
        &format!(
            "upstream: {{ addr: \"{}\" }}\nquarantine_dir: \"{}\"\naudit: {{ path: \"{}\" }}\n\
             metrics:\n  addr: \"{metrics}\"\n  quarantine_api: {{ token_file: \"{}\" }}\n",
            upstream.addr,
            dir.path().join("quarantine").display(),
            dir.path().join("audit.jsonl").display(),
            dir.path().join("api.token").display(),
        ),
    );
    let first = hold(&gw, "a@example.org", "hold one");
    let second = hold(&gw, "b@example.org", "hold two");

    assert_eq!(http(metrics, &request("GET", "/quarantine", None)).0, 401);
    assert_eq!(
        http(
            metrics,
            &request("GET", "/quarantine", Some("0123456789abcdef-test-tokeN"))
        )
        .0,
        401
    );
    assert_eq!(
        http(
            metrics,
            &request("DELETE", &format!("/quarantine/{first}"), None)
        )
        .0,
        401
    );
    assert_eq!(
        http(metrics, &request("GET", "/healthz", None)).0,
        200,
        "health stays open"
    );

    let (code, body) = http(metrics, &request("GET", "/quarantine", Some(TOKEN)));
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(listed[0]["sidecar"]["held"]["by"], "hold-for-review");
    let (code, body) = http(
        metrics,
        &request("GET", "/quarantine?from=B%40example", Some(TOKEN)),
    );
    assert_eq!(code, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(listed[0]["id"], second.as_str());
    assert_eq!(
        http(
            metrics,
            &request("GET", "/quarantine?since=soon", Some(TOKEN))
        )
        .0,
        400
    );

    let (code, body) = http(
        metrics,
        &request("GET", &format!("/quarantine/{first}"), Some(TOKEN)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Subject: hold one"), "{body}");
    assert_eq!(
        http(metrics, &request("GET", "/quarantine/..%2Fx", Some(TOKEN))).0,
        400
    );
    assert_eq!(
        http(metrics, &request("GET", "/quarantine/nope.1", Some(TOKEN))).0,
        404
    );

    let (code, body) = http(
        metrics,
        &request("POST", &format!("/quarantine/{first}/release"), Some(TOKEN)),
    );
    assert_eq!(code, 200, "{body}");
    let delivered = upstream.wait_for(1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].from, "a@example.org");
    assert!(!files(dir.path(), &first).0.exists());
    let (code, _) = http(
        metrics,
        &request("DELETE", &format!("/quarantine/{second}"), Some(TOKEN)),
    );
    assert_eq!(code, 200);
    assert!(!files(dir.path(), &second).0.exists());
    let (code, body) = http(metrics, &request("GET", "/quarantine", Some(TOKEN)));
    assert_eq!((code, body.trim()), (200, "[]"));
    let records = audit_records(&dir.path().join("audit.jsonl"), 5);
    let released: Vec<_> = records.iter().filter(|r| r["type"] == "released").collect();
    assert_eq!(released.len(), 1, "{records:?}");
    assert_eq!(released[0]["by"], "api");
    drop(gw);
}

#[test]
fn the_api_is_off_by_default() {
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let gw = Binary::start(
        dir.path(),
        &format!(
            "upstream: {{ addr: \"{}\" }}\nmetrics: {{ addr: \"{metrics}\" }}\n",
            upstream.addr
        ),
    );
    assert_eq!(
        http(metrics, &request("GET", "/quarantine", Some("x"))).0,
        404
    );
    drop(gw);

    // Turned on with a token file that is not there: start-up stops, at
    // the line of the key.
    let config = dir.path().join("missing-token.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ addr: \"127.0.0.1:0\" }}]\nmetrics:\n  addr: \"127.0.0.1:0\"\n  quarantine_api:\n    token_file: \"{}\"\n",
            dir.path().join("nope.token").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing-token.yaml:5: metrics.quarantine_api.token_file: cannot read"),
        "{err}"
    );
}

#[test]
fn a_quarantine_at_connect_or_mail_names_its_rule_and_stage() {
    let upstream = mock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/early.yaml"),
        "rules:
  - name: hold-this-network
    stage: connect
    when: { client_ip: { cidrs: [127.0.0.2/32] } }
    action: quarantine
  - name: hold-this-sender
    stage: mail
    when: { sender: { domains: [held.example] } }
    action: quarantine
",
    )
    .unwrap();
    let gw = Binary::start(
        dir.path(),
        &format!(
            "upstream: {{ addr: \"{}\" }}\nquarantine_dir: \"{}\"\n",
            upstream.addr,
            dir.path().join("quarantine").display()
        ),
    );
    let config = dir.path().join("gateway.yaml");
    let mut c = gw.client();
    let r = c.send_message("x@held.example", &["b@example.com"], &message("m", "x\r\n"));
    assert_eq!(r.code, 250, "{r:?}");
    let mail_id = r.last_text().rsplit(' ').next().unwrap().to_string();
    c.cmd("QUIT", 221);
    let mut c = common::Client::connect_from("127.0.0.2".parse().unwrap(), gw.addr);
    c.expect(220);
    c.cmd("EHLO other.test", 250);
    let r = c.send_message("y@example.org", &["b@example.com"], &message("c", "x\r\n"));
    assert_eq!(r.code, 250, "{r:?}");
    let connect_id = r.last_text().rsplit(' ').next().unwrap().to_string();
    c.cmd("QUIT", 221);
    assert!(upstream.delivered().is_empty());

    let listed = list(&config, &[]);
    let held = |id: &str| {
        let e = listed
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {listed:?}"));
        e["sidecar"]["held"].clone()
    };
    assert_eq!(
        held(&mail_id),
        serde_json::json!({ "by": "hold-this-sender", "stage": "mail", "reason": null })
    );
    assert_eq!(
        held(&connect_id),
        serde_json::json!({ "by": "hold-this-network", "stage": "connect", "reason": null })
    );
    drop(gw);
}
