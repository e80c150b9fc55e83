//! Which rules fire: the `smtpgate` binary with three rules (one that
//! never matches, one that matches every test message and accepts, one
//! after that terminal verdict), mail through it to a mock upstream, then
//! the per-rule counters on `/metrics`, `smtpgate rules stats` (table,
//! `--never`, `--json`) reading them, and a SIGHUP that renames one rule
//! while the others keep their counts.

mod common;

use common::binary::{free_addr, scrape, Binary};
use common::{message, MockOptions, MockUpstream};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The rules: at MAIL, `never-matches` is asked first and matches no
/// test sender, `accept-example` accepts every test sender (ending the
/// stage), so `after-accept` — which would reject them — is never reached.
fn rules(first: &str) -> String {
    format!(
        "rules:
  - name: {first}
    stage: mail
    when: {{ sender: {{ domains: [nowhere.invalid] }} }}
    action: reject
  - name: accept-example
    stage: mail
    when: {{ sender: {{ domains: [example.com] }} }}
    action: accept
  - name: after-accept
    stage: mail
    when: {{ sender: {{ domains: [example.com] }} }}
    action: reject
"
    )
}

/// The value of one series (exact name and labels) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn evaluations(scrape: &str, rule: &str) -> Option<f64> {
    sample(
        scrape,
        &format!("smtpgate_rule_evaluations_total{{rule=\"{rule}\"}}"),
    )
}

fn hits(scrape: &str, rule: &str, action: &str) -> Option<f64> {
    sample(
        scrape,
        &format!("smtpgate_rule_hits_total{{action=\"{action}\",rule=\"{rule}\"}}"),
    )
}

fn last_hit(scrape: &str, rule: &str) -> Option<f64> {
    sample(
        scrape,
        &format!("smtpgate_rule_last_hit_timestamp_seconds{{rule=\"{rule}\"}}"),
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

/// Runs `smtpgate --config CONFIG rules stats ARGS`; (exit code, stdout,
/// stderr).
fn stats(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(config)
        .args(["rules", "stats"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The table's rows: rule → (evaluations, hits, last hit column); the
/// errors column is 0 for these rules.
fn rows(table: &str) -> Vec<(String, u64, u64, String)> {
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["RULE", "EVALUATIONS", "HITS", "ERRORS", "LAST", "HIT"]
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                {
                    assert_eq!(f[3], "0", "{l}");
                    f[4..].join(" ")
                },
            )
        })
        .collect()
}

#[test]
fn rule_counters_show_what_fires_and_survive_a_reload() {
    let upstream = MockUpstream::start(MockOptions::default());
    let metrics = free_addr();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let rules_file = dir.path().join("rules/r.yaml");
    std::fs::write(&rules_file, rules("never-matches")).unwrap();
    let gw = Binary::start(
        dir.path(),
        &format!(
            "upstream: {{ addr: \"{}\" }}\nmetrics: {{ addr: \"{metrics}\" }}\n",
            upstream.addr
        ),
    );
    let config = dir.path().join("gateway.yaml");

    // Before any mail: every loaded rule is listed, at 0.
    let before = scrape(metrics);
    for rule in ["never-matches", "accept-example", "after-accept"] {
        assert_eq!(evaluations(&before, rule), Some(0.0), "{rule}\n{before}");
        assert_eq!(last_hit(&before, rule), Some(0.0), "{rule}");
    }
    assert_eq!(hits(&before, "never-matches", "reject"), Some(0.0));
    assert_eq!(hits(&before, "accept-example", "accept"), Some(0.0));
    assert_eq!(hits(&before, "after-accept", "reject"), Some(0.0));
    let (code, out, err) = stats(&config, &["--never"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows(&out).len(), 3, "{out}");

    let started = now();
    let mut c = gw.client();
    for i in 0..3 {
        let r = c.send_message(
            "a@example.com",
            &["b@example.com"],
            &message(&format!("m{i}"), "x\r\n"),
        );
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(upstream.wait_for(3).len(), 3);
    let ended = now();

    let after = scrape(metrics);
    assert_eq!(evaluations(&after, "never-matches"), Some(3.0));
    assert_eq!(hits(&after, "never-matches", "reject"), Some(0.0));
    assert_eq!(last_hit(&after, "never-matches"), Some(0.0));
    assert_eq!(evaluations(&after, "accept-example"), Some(3.0));
    assert_eq!(hits(&after, "accept-example", "accept"), Some(3.0));
    let t = last_hit(&after, "accept-example").unwrap();
    assert!(started <= t && t <= ended, "{started} <= {t} <= {ended}");
    assert_eq!(evaluations(&after, "after-accept"), Some(0.0));
    assert_eq!(hits(&after, "after-accept", "reject"), Some(0.0));

    // The CLI reads the same counters, from the config's metrics listener.
    let (code, out, err) = stats(&config, &[]);
    assert_eq!(code, 0, "{err}");
    let table = rows(&out);
    assert_eq!(table.len(), 3, "{out}");
    let row = |name: &str| table.iter().find(|r| r.0 == name).unwrap().clone();
    let (_, evals, hit, last) = row("accept-example");
    assert_eq!((evals, hit), (3, 3), "{out}");
    assert!(last.ends_with("s ago") || last.ends_with("m ago"), "{out}");
    assert_eq!((row("never-matches").1, row("never-matches").2), (3, 0));
    assert_eq!(row("never-matches").3, "never");
    assert_eq!((row("after-accept").1, row("after-accept").2), (0, 0));
    assert_eq!(row("after-accept").3, "never");

    let (code, out, err) = stats(&config, &["--never"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = rows(&out).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["after-accept", "never-matches"], "{out}");
    // accept-example hit within the last hour, so it is not listed.
    let (code, out, err) = stats(&config, &["--never", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = rows(&out).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["after-accept", "never-matches"], "{out}");
    let (code, _, err) = stats(&config, &["--since", "1h"]);
    assert_ne!(code, 0, "--since without --never is refused");
    assert!(err.contains("--never"), "{err}");
    let (code, _, err) = stats(&config, &["--never", "--since", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("soon"), "{err}");

    let url = format!("http://{metrics}/metrics");
    let (code, out, err) = stats(&config, &["--metrics", &url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let accept = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "accept-example")
        .unwrap();
    assert_eq!(accept["evaluations"], 3);
    assert_eq!(accept["hits"], 3);
    assert_eq!(accept["last_hit"].as_f64(), Some(t));

    // A reload renames the first rule: the kept ones keep their counts,
    // the renamed one starts at 0 and the old name is gone.
    std::fs::write(&rules_file, rules("never-matches-2")).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: 3 rules loaded");
    let reloaded = scrape(metrics);
    assert_eq!(evaluations(&reloaded, "accept-example"), Some(3.0));
    assert_eq!(hits(&reloaded, "accept-example", "accept"), Some(3.0));
    assert_eq!(last_hit(&reloaded, "accept-example"), Some(t));
    assert_eq!(evaluations(&reloaded, "never-matches-2"), Some(0.0));
    assert!(
        !reloaded.contains("rule=\"never-matches\""),
        "the removed rule is still listed:\n{reloaded}"
    );
    let mut c = gw.client();
    let r = c.send_message("a@example.com", &["b@example.com"], &message("m3", "x\r\n"));
    assert_eq!(r.code, 250);
    let last = scrape(metrics);
    assert_eq!(evaluations(&last, "accept-example"), Some(4.0));
    assert_eq!(hits(&last, "accept-example", "accept"), Some(4.0));
    assert_eq!(evaluations(&last, "never-matches-2"), Some(1.0));
    let (code, out, err) = stats(&config, &["--never"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = rows(&out).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["after-accept", "never-matches-2"], "{out}");
}

#[test]
fn stats_without_a_reachable_listener_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, "hostname: gate.test\n").unwrap();
    let (code, out, err) = stats(&config, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("no metrics listener"), "{err}");

    let dead = free_addr();
    let (code, _, err) = stats(&config, &["--metrics", &format!("http://{dead}")]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("cannot connect to {dead}")), "{err}");

    // Something that answers HTTP but is not a smtpgate /metrics.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = other.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
            .unwrap();
    });
    let (code, _, err) = stats(&config, &["--metrics", &format!("http://{addr}/")]);
    server.join().unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("line 1: no value"), "{err}");
}
