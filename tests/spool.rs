//! Local spool mode (no upstream): one synced file per 250, none otherwise.

mod common;

use common::Gateway;
use std::fs;

fn eml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn spool_mode_writes_exactly_one_file_per_250() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nspool_dir: \"{}\"\nlimits: {{ max_message_bytes: 2048 }}\n",
        dir.path().display()
    ));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let mut accepted = Vec::new();
    for i in 0..3 {
        let r = c.send_message(
            "a@example.com",
            &["b@example.com"],
            &format!("Subject: m{i}\r\n\r\n..dot {i}\r\n"),
        );
        assert_eq!(r.code, 250);
        let id = r.last_text().rsplit(' ').next().unwrap().to_string();
        accepted.push(id);
    }
    // Rejected (too big): no file.
    let big = format!("Subject: big\r\n\r\n{}", "0123456789\r\n".repeat(300));
    let r = c.send_message("a@example.com", &["b@example.com"], &big);
    assert_eq!(r.code, 552);
    let files = eml_files(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    for (i, id) in accepted.iter().enumerate() {
        let path = dir.path().join(format!("{id}.eml"));
        let content = fs::read_to_string(&path).unwrap();
        assert!(
            content.starts_with("Received: from client.test ([127.0.0.1])"),
            "{content}"
        );
        assert!(
            content.ends_with(&format!("Subject: m{i}\r\n\r\n.dot {i}\r\n")),
            "{content}"
        );
    }
}

#[test]
fn spool_mode_accepts_many_recipients_and_the_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!("spool_dir: \"{}\"\n", dir.path().display()));
    let mut c = gw.client();
    c.cmd("EHLO client.test", 250);
    let r = c.send_message(
        "",
        &["a@example.com", "b@example.org", "postmaster"],
        "Subject: x\r\n\r\ny\r\n",
    );
    assert_eq!(r.code, 250);
    assert_eq!(eml_files(dir.path()).len(), 1);
}
