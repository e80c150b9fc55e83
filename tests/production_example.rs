//! The production examples: `examples/production-mx.yaml` and the Debian
//! package's `packaging/gateway.yaml` pass `smtpgate check` (the real
//! binary: configuration, the files it names and the rules), the former as
//! it is and in its commented PROXY protocol variant; and the unit
//! `packaging/smtpgate.service` agrees with both (stop timeout longer than
//! the shutdown grace, writable paths where the config writes, the config
//! path it runs with).
//!
//! The examples name files under /etc, /var/lib and /var/log that a test
//! machine does not have; the test writes real ones (a certificate, a users
//! file) into a temp dir and points the same text there, changing nothing
//! else. The rules are the repository's own `rules/`.

mod common;

use common::certs::Pki;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_smtpgate");

fn example(name: &str) -> String {
    repo_file(&format!("examples/{name}"))
}

/// A file of the repository, by its path from the top.
fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example text with its paths moved into `dir`, which gets the TLS
/// files and the users file it names.
fn relocated(text: &str, dir: &Path) -> String {
    let pki = Pki::new("mx.example.com");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/fullchain.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls/privkey.pem"), &pki.key_pem).unwrap();
    let hash = smtpgate::auth::hash_password("example-password").unwrap();
    std::fs::write(
        dir.join("users.yaml"),
        format!(
            "users:\n  - {{ name: alice, password_hash: \"{hash}\", senders: [alice@example.com] }}\n"
        ),
    )
    .unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let d = dir.display().to_string();
    text.replace("/etc/smtpgate/rules", &rules.display().to_string())
        .replace("/etc/smtpgate", &d)
        .replace("/var/lib/smtpgate", &d)
        .replace("/var/log/smtpgate", &d)
}

/// Runs `smtpgate check` on `text`; returns its standard output.
fn check(text: &str, dir: &Path) -> String {
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "smtpgate check failed:\n{}\n{stdout}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    stdout
}

#[test]
fn production_mx_passes_smtpgate_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = relocated(&example("production-mx.yaml"), dir.path());
    let out = check(&text, dir.path());
    for want in [
        "hostname:  mx.example.com",
        "0.0.0.0:25 (starttls optional)",
        "[::]:25 (starttls optional)",
        "0.0.0.0:587 (starttls required, auth required)",
        "0.0.0.0:465 (implicit TLS, auth required)",
        "upstream:  10.0.0.5:25",
        "fallback 10.0.0.6:25",
        "trusted networks none",
        "XFORWARD when offered",
        "message 52428800 B (50 MiB)",
        "block-bulk-senders",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("PROXY protocol"), "{out}");
}

/// The example with its PROXY protocol variant switched on, as its comment
/// says: the public listeners out, the commented block in.
fn proxy_variant(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_public_listen = false;
    let mut in_variant = false;
    for line in text.lines() {
        if line == "listen:" {
            in_public_listen = true;
            continue;
        }
        if in_public_listen {
            if line.is_empty() {
                in_public_listen = false;
            }
            continue;
        }
        if line == "#listen:" {
            in_variant = true;
        }
        if in_variant {
            match line.strip_prefix('#') {
                Some(rest) => {
                    out.push(rest.to_string());
                    continue;
                }
                None => in_variant = false,
            }
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

#[test]
fn its_proxy_protocol_variant_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let text = proxy_variant(&relocated(&example("production-mx.yaml"), dir.path()));
    assert!(text.contains("\nproxy_protocol:\n"), "{text}");
    let out = check(&text, dir.path());
    for want in [
        "10.0.0.21:25 (starttls optional, PROXY protocol)",
        "10.0.0.21:587 (starttls required, auth required, PROXY protocol)",
        "10.0.0.21:465 (implicit TLS, auth required, PROXY protocol)",
        "PROXY protocol v1/v2 accepted from 10.0.0.10/32, 10.0.0.11/32 (header within 5s)",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("0.0.0.0:25"), "{out}");
}

/// `Key=value` settings of a unit file (comments skipped), in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_packaged_config_passes_smtpgate_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = relocated(&repo_file("packaging/gateway.yaml"), dir.path());
    let out = check(&text, dir.path());
    for want in [
        "listen:    127.0.0.1:2525",
        "upstream:  none; accepted mail is stored in",
        "/spool\n",
        "audit.jsonl\n",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
}

#[test]
fn the_systemd_unit_fits_the_packaged_config() {
    the_unit_fits(&repo_file("packaging/gateway.yaml"));
}

#[test]
fn the_systemd_unit_fits_the_production_config() {
    the_unit_fits(&example("production-mx.yaml"));
}

/// The unit runs `config` as a non-root user with the one capability,
/// stops later than its grace period, and lets it write where it writes.
fn the_unit_fits(config: &str) {
    let unit = unit_settings(&repo_file("packaging/smtpgate.service"));
    let get = |key: &str| -> Vec<&str> {
        unit.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let config: smtpgate::config::Config = serde_yaml::from_str(config).unwrap();

    // A non-root user that can bind ports below 1024 and nothing more.
    assert_eq!(get("User"), vec!["smtpgate"]);
    assert_eq!(get("AmbientCapabilities"), vec!["CAP_NET_BIND_SERVICE"]);
    assert_eq!(get("CapabilityBoundingSet"), vec!["CAP_NET_BIND_SERVICE"]);
    assert_eq!(get("NoNewPrivileges"), vec!["yes"]);
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(key), vec![value], "{key}");
    }
    assert_eq!(get("ExecReload"), vec!["/bin/kill -HUP $MAINPID"]);
    for exec in get("ExecStart").iter().chain(get("ExecStartPre").iter()) {
        assert!(
            exec.ends_with("--config /etc/smtpgate/gateway.yaml"),
            "{exec}"
        );
    }

    // systemd waits longer than the gateway's own grace period.
    let stop: u64 = get("TimeoutStopSec")[0].parse().unwrap();
    assert!(
        stop > config.shutdown_grace_s,
        "TimeoutStopSec={stop} is not above shutdown_grace_s={}",
        config.shutdown_grace_s
    );

    // Everything the configuration writes is under a ReadWritePaths entry.
    let writable: Vec<PathBuf> = get("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(PathBuf::from)
        .collect();
    let audit = config.audit.as_ref().unwrap().path.clone();
    for path in [&config.spool_dir, &config.quarantine_dir, &audit] {
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "{} is not writable under ReadWritePaths={writable:?}",
            path.display()
        );
    }
}
